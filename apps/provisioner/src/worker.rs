//! One loop per resource class: demand -> observe -> plan -> apply, every poll interval.
//!
//! Fail static: when any step fails the cycle stops there, so missing data never scales a pool
//! in and a half-known state is never acted on. The planner's state lives here and survives
//! config updates (scaling changes arrive through a watch channel).

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};
use std::time::{Duration as StdDuration, Instant, SystemTime, UNIX_EPOCH};

use provisioner_core::estimate::{EstimateSettings, Estimator};
use provisioner_core::{
    ApplyReport, ClassConfig, Decision, Demand, DemandSource, PlannerState, PortError,
    ResourceClass, Timestamp, VmFleet, decide,
};
use tokio::sync::watch;
use tracing::{Instrument, debug, error, info};

use crate::context::Context;
use crate::events::EventKind;
use crate::metrics::Operation;

/// What a class's loop needs from the current configuration.
#[derive(Clone)]
pub struct WorkerSettings {
    pub class: Arc<ClassConfig>,
    pub demand: Arc<dyn DemandSource>,
    pub pool: Pool,
    pub poll_interval: StdDuration,
}

impl fmt::Debug for WorkerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerSettings")
            .field("class", &self.class.name)
            .field("pool", &self.pool)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

/// Where a class's VMs live for this process.
#[derive(Clone)]
pub struct Pool {
    pub fleet: Arc<dyn VmFleet>,
    /// False in shadow mode against a real cluster: observe, never write.
    pub writes: bool,
    /// The modelled pool of shadow mode without a cluster: advanced on wall-clock time each
    /// cycle before it is observed.
    pub model: Option<Arc<provisioner_sim::ShadowFleet>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("writes", &self.writes)
            .field("modelled", &self.model.is_some())
            .finish()
    }
}

/// How a cycle ended.
#[derive(Debug)]
pub enum CycleOutcome {
    /// Planned; `report` is `None` when nothing needed doing or writes are off.
    Done {
        /// Boxed: a decision is large next to a failure.
        decision: Box<Decision>,
        report: Option<ApplyReport>,
    },
    Failed {
        operation: Operation,
        error: PortError,
    },
}

#[derive(Debug)]
pub struct Worker {
    class: ResourceClass,
    settings: watch::Receiver<WorkerSettings>,
    ctx: Arc<Context>,
    planner: PlannerState,
    /// The class config last set up, and the fleet it was set up in; `ensure` runs again when
    /// either changes. Weak: it does not keep an old fleet alive, yet keeps its address from
    /// being reused by a new one.
    ensured: Option<(Arc<ClassConfig>, Weak<dyn VmFleet>)>,
    failures: u32,
    warned_persistent: bool,
    /// What users felt, estimated from this loop's observations (lives as long as the loop).
    estimator: Estimator,
}

/// The cap on the back-off between failing cycles (unless the server asks for longer).
const MAX_BACKOFF: StdDuration = StdDuration::from_secs(30);
/// The most a `Retry-After` may delay the next cycle.
const MAX_RETRY_AFTER: StdDuration = StdDuration::from_secs(600);

/// A class's start offset: a stable fraction of the poll interval derived from its name.
pub fn stagger(class: &ResourceClass, poll: StdDuration) -> StdDuration {
    let mut h = DefaultHasher::new();
    class.as_str().hash(&mut h);
    poll.mul_f64((h.finish() % 1000) as f64 / 1000.0)
}

fn unix_seconds(t: Timestamp) -> f64 {
    t.unix_millis() as f64 / 1000.0
}

pub fn wall_clock() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp::from_unix_millis(millis)
}

impl Worker {
    pub fn new(settings: watch::Receiver<WorkerSettings>, ctx: Arc<Context>) -> Self {
        let class = settings.borrow().class.name.clone();
        let idle_timeout = settings.borrow().class.scaling.idle_timeout;
        Self {
            class,
            settings,
            ctx,
            planner: PlannerState::default(),
            ensured: None,
            failures: 0,
            warned_persistent: false,
            estimator: Estimator::new(EstimateSettings::new(idle_timeout)),
        }
    }

    pub fn class(&self) -> &ResourceClass {
        &self.class
    }

    /// Run cycles until `stop` changes (or its sender goes). A cycle in progress always
    /// finishes: stop is only looked at between cycles.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let class = self.class.clone();
        let poll = self.settings.borrow().poll_interval;
        self.ctx
            .health
            .start_class(&class, Instant::now(), self.ctx.health.stall_after(poll));
        // Classes start at a fixed offset within the poll interval, so many classes spread
        // their requests instead of all hitting CircleCI at the same instant every interval.
        tokio::select! {
            () = tokio::time::sleep(stagger(&class, poll)) => {}
            _ = stop.changed() => {
                self.ctx.health.stop_class(&class);
                return;
            }
        }
        loop {
            let started = Instant::now();
            let span = tracing::info_span!("worker loop scaler", loop_name = "scaler", resource_class = %class);
            let outcome = self.cycle(wall_clock()).instrument(span).await;
            let elapsed = started.elapsed();
            self.ctx.metrics.cycle(elapsed.as_secs_f64());
            let poll = self.settings.borrow().poll_interval;
            let sleep = self.next_sleep(&outcome, poll);
            let now = Instant::now();
            self.ctx.health.cycle_done(
                &class,
                matches!(outcome, CycleOutcome::Done { .. }),
                now,
                sleep,
                self.ctx.health.stall_after(poll),
            );
            self.persistent_error_event(&outcome, now).await;
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
        }
        self.ctx.health.stop_class(&class);
        // A stopped loop's gauges would go stale: a removed class, or a replica on standby.
        self.ctx.metrics.forget(&class);
        debug!(resource_class = %class, "loop stopped");
    }

    fn next_sleep(&mut self, outcome: &CycleOutcome, poll: StdDuration) -> StdDuration {
        match outcome {
            CycleOutcome::Done { .. } => {
                self.failures = 0;
                poll
            }
            CycleOutcome::Failed { error, .. } => {
                self.failures = self.failures.saturating_add(1);
                let exponent = self.failures.saturating_sub(1).min(16);
                let backoff = poll
                    .saturating_mul(1 << exponent)
                    .min(MAX_BACKOFF.max(poll));
                let asked = error
                    .retry_after
                    .map_or(StdDuration::ZERO, |d| d.as_std())
                    .min(MAX_RETRY_AFTER);
                backoff.max(asked)
            }
        }
    }

    /// A warning event, once per failing episode, when a class has failed past the threshold.
    async fn persistent_error_event(&mut self, outcome: &CycleOutcome, now: Instant) {
        match outcome {
            CycleOutcome::Done { .. } => self.warned_persistent = false,
            CycleOutcome::Failed { operation, error } => {
                let failing = self
                    .ctx
                    .health
                    .failing_for(&self.class, now)
                    .unwrap_or_default();
                if !self.warned_persistent && failing >= self.ctx.unready_after {
                    self.warned_persistent = true;
                    let note = format!(
                        "{} failing for {}s: {}",
                        operation.as_str(),
                        failing.as_secs(),
                        error.message
                    );
                    self.ctx
                        .publish(&self.class, EventKind::PersistentError, note)
                        .await;
                }
            }
        }
    }

    /// One cycle. Public so tests can drive cycles one at a time.
    pub async fn cycle(&mut self, now: Timestamp) -> CycleOutcome {
        let settings = self.settings.borrow_and_update().clone();
        let pool = &settings.pool;
        let class = &self.class;
        let unclaimed = match settings.demand.unclaimed_tasks(class).await {
            Ok(n) => n,
            Err(e) => {
                return self.failed(
                    Operation::UnclaimedTasks,
                    e,
                    "failed to get unclaimed tasks",
                );
            }
        };
        let running = match settings.demand.running_tasks(class).await {
            Ok(n) => n,
            Err(e) => {
                return self.failed(Operation::RunningTasks, e, "failed to get running tasks");
            }
        };
        let demand = Demand { unclaimed, running };
        self.ctx.metrics.demand(class, unclaimed, running);
        self.ctx.metrics.polled(class, unix_seconds(now));

        let ensured = self.ensured.as_ref().is_some_and(|(c, f)| {
            **c == *settings.class && std::ptr::addr_eq(f.as_ptr(), Arc::as_ptr(&pool.fleet))
        });
        if pool.writes && !ensured {
            match timed(
                &self.ctx,
                Operation::Ensure,
                pool.fleet.ensure(&settings.class),
            )
            .await
            {
                Ok(()) => {
                    self.ensured = Some((settings.class.clone(), Arc::downgrade(&pool.fleet)));
                }
                Err(e) => return self.failed(Operation::Ensure, e, "failed to ensure pool"),
            }
        }
        if let Some(model) = &pool.model {
            model.advance(class, now, demand);
        }
        let fleet = match timed(&self.ctx, Operation::Observe, pool.fleet.observe(class)).await {
            Ok(f) => f,
            Err(e) => return self.failed(Operation::Observe, e, "failed to observe pool"),
        };
        if fleet.spec_replicas.is_none() {
            // The pool is gone (deleted behind our back): set it up again next cycle.
            self.ensured = None;
        }

        let decision = decide(
            &settings.class.scaling,
            Some(demand),
            &fleet,
            now,
            &mut self.planner,
        );
        self.ctx.metrics.decision(
            class,
            decision.desired,
            fleet.spec_replicas,
            &decision.counts,
        );
        self.ctx
            .metrics
            .max_replicas(class, decision.controls.max_replicas);
        let estimate = EstimateSettings::new(settings.class.scaling.idle_timeout);
        if self.estimator.settings() != estimate {
            self.estimator.set_settings(estimate);
        }
        let step = self.estimator.observe(now, demand, &fleet.vms);
        self.ctx.metrics.estimate(class, &step);
        info!(
            loop_name = "scaler",
            resource_class = %class,
            unclaimed_tasks = unclaimed,
            running_tasks = running,
            desired_vms = decision.desired,
            "scaler cycle"
        );
        // A VM still being deleted may need its pool finalizer released (a retire interrupted
        // by a restart); `apply` repairs that, so it runs even for an otherwise empty plan
        // (when writing: a dry run has nothing to report for it).
        let repair = pool.writes && fleet.vms.iter().any(|vm| vm.deleting);
        if decision.plan.is_noop(&fleet) && !repair {
            return CycleOutcome::Done {
                decision: Box::new(decision),
                report: None,
            };
        }
        let plan = &decision.plan;
        if !pool.writes {
            info!(
                resource_class = %class,
                dry_run = true,
                pool_replicas = fleet.spec_replicas,
                target_replicas = plan.target_replicas,
                retire = plan.retire.len(),
                recycle = plan.recycle.len(),
                "dry run: would apply plan"
            );
            return CycleOutcome::Done {
                decision: Box::new(decision),
                report: None,
            };
        }
        let report = match timed(&self.ctx, Operation::Apply, pool.fleet.apply(class, plan)).await {
            Ok(r) => r,
            Err(e) => return self.failed(Operation::Apply, e, "failed to apply plan"),
        };
        self.ctx.metrics.applied(
            class,
            report.scaled.map(|s| s.1),
            report.retired,
            report.recycled,
        );
        if !report.is_noop() || report.refused > 0 {
            info!(
                resource_class = %class,
                dry_run = pool.model.is_some(),
                scaled_from = report.scaled.map(|s| s.0),
                scaled_to = report.scaled.map(|s| s.1),
                retired = report.retired,
                recycled = report.recycled,
                refused = report.refused,
                "{}",
                if pool.model.is_some() { "dry run: applied plan to the modelled pool" } else { "applied plan" }
            );
        }
        self.report_events(&report, demand).await;
        CycleOutcome::Done {
            decision: Box::new(decision),
            report: Some(report),
        }
    }

    fn failed(
        &self,
        operation: Operation,
        error: PortError,
        message: &'static str,
    ) -> CycleOutcome {
        self.ctx.metrics.error(
            &self.class,
            operation,
            error.kind,
            unix_seconds(wall_clock()),
        );
        error!(loop_name = "scaler", resource_class = %self.class, kind = error.kind.as_str(), error = %error, "{message}");
        CycleOutcome::Failed { operation, error }
    }

    /// Events on the pool (none in shadow mode: its context has no `Events`).
    async fn report_events(&self, report: &ApplyReport, demand: Demand) {
        if let Some((from, to)) = report.scaled {
            let kind = if to > from {
                EventKind::ScaledOut
            } else {
                EventKind::ScaledIn
            };
            let note = format!(
                "replicas {from} -> {to} (unclaimed tasks {}, running tasks {})",
                demand.unclaimed, demand.running
            );
            self.ctx.publish(&self.class, kind, note).await;
        }
        if report.retired > 0 {
            self.ctx
                .publish(
                    &self.class,
                    EventKind::Retired,
                    format!(
                        "deleted {} finished VM(s) without replacement",
                        report.retired
                    ),
                )
                .await;
        }
        if report.recycled > 0 {
            self.ctx
                .publish(
                    &self.class,
                    EventKind::Recycled,
                    format!(
                        "deleted {} finished VM(s) for the pool to replace",
                        report.recycled
                    ),
                )
                .await;
        }
    }
}

async fn timed<T>(
    ctx: &Context,
    operation: Operation,
    call: impl Future<Output = Result<T, PortError>>,
) -> Result<T, PortError> {
    let started = Instant::now();
    let result = call.await;
    ctx.metrics
        .kubernetes_latency(operation, started.elapsed().as_secs_f64());
    result
}
