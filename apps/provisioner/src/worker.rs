//! One loop per resource class: demand -> observe -> plan -> apply, every poll interval.
//!
//! When the task counts cannot be polled the loop runs degraded: it still ensures and observes
//! the pool and has the planner keep it (at its current size, at least the floor, finished VMs
//! replaced), so capacity survives a CircleCI outage, an expired token or a long 429 pause;
//! runners keep claiming jobs meanwhile. When a Kubernetes step fails the cycle stops there, so
//! a pool not seen is never acted on. The planner's state lives here and survives config
//! updates (scaling changes arrive through a watch channel).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};
use std::time::{Duration as StdDuration, Instant, SystemTime, UNIX_EPOCH};

use provisioner_core::estimate::{EstimateSettings, Estimator};
use provisioner_core::{
    ApplyReport, ClassConfig, Decision, Demand, DemandSource, Duration, FleetState, PlannerState,
    PortError, Reclaim, ResourceClass, Timestamp, VmFleet, VmId, VmPhase, decide,
};
use tokio::sync::watch;
use tracing::{Instrument, debug, error, info, warn};

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
    /// The task counts could not be polled (`operation` failed, this cycle or in the last call
    /// whose back-off still runs), yet the pool was kept: the planner ran degraded
    /// (`decision.degraded()`). Counts as failing for readiness and the persistent-error Event;
    /// the next cycle still comes after one poll interval.
    Degraded {
        operation: Operation,
        error: PortError,
        decision: Box<Decision>,
        report: Option<ApplyReport>,
    },
    /// A step stopped the cycle: the pool could not be set up, observed or changed.
    Failed {
        operation: Operation,
        error: PortError,
    },
}

impl CycleOutcome {
    /// The call that made this cycle count as failing, if one did.
    pub fn failure(&self) -> Option<(Operation, &PortError)> {
        match self {
            Self::Done { .. } => None,
            Self::Degraded {
                operation, error, ..
            }
            | Self::Failed { operation, error } => Some((*operation, error)),
        }
    }
}

/// A failed call, logged and counted already.
type Failure = (Operation, PortError);

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
    /// Failing cycles in a row (the pool could not be set up, observed or changed).
    failures: u32,
    /// Failed task-count polls in a row, and until when the next poll waits (back-off or the
    /// server's `Retry-After`) with the failure that set it: cycles before then run degraded
    /// without calling CircleCI, so the pool keeps being looked after every poll interval
    /// while the API is asked no more often than the back-off allows.
    demand_failures: u32,
    demand_paused: Option<(Timestamp, Failure)>,
    warned_persistent: bool,
    /// What users felt, estimated from this loop's observations (lives as long as the loop).
    estimator: Estimator,
    /// The first cycle's time and the last one that got both task counts: how stale demand is.
    first_cycle: Option<Timestamp>,
    last_polled: Option<Timestamp>,
    warned_stale: bool,
    /// UIDs of the fleet's VMs whose runner has been seen connected. VMs that left the fleet
    /// are forgotten, so it holds at most one pool's worth.
    registered: HashSet<VmId>,
    /// When the runner list was last asked for (at most every [`RUNNERS_EVERY`]).
    runners_asked: Option<Timestamp>,
    /// The registration breaker's state at the last decision, to report its changes.
    breaker_open: bool,
}

/// The cap on the back-off between failing cycles (unless the server asks for longer).
const MAX_BACKOFF: StdDuration = StdDuration::from_secs(30);
/// The most a `Retry-After` may delay the next cycle.
const MAX_RETRY_AFTER: StdDuration = StdDuration::from_secs(600);
/// How often a class's runner list is fetched for the registration check: each call takes a
/// slot of the shared request budget, and the check's grace (`registrationTimeout`, 10 minutes
/// by default) needs no finer clock than this.
pub const RUNNERS_EVERY: Duration = Duration::from_secs(30);

/// A class's start offset: a stable fraction of the poll interval derived from its name.
pub fn stagger(class: &ResourceClass, poll: StdDuration) -> StdDuration {
    let mut h = DefaultHasher::new();
    class.as_str().hash(&mut h);
    poll.mul_f64((h.finish() % 1000) as f64 / 1000.0)
}

/// The wait after the `failures`-th failure in a row: doubling from the poll interval up to
/// [`MAX_BACKOFF`], or longer when the server asked (`retry_after`, at most [`MAX_RETRY_AFTER`]).
/// A failing pool waits this long for its next cycle; a failing task-count poll waits this
/// long for its next call while degraded cycles keep the pool every poll interval, as the
/// simulator's controller does.
fn failing_sleep(
    failures: u32,
    poll: StdDuration,
    retry_after: Option<StdDuration>,
) -> StdDuration {
    let exponent = failures.saturating_sub(1).min(16);
    let backoff = poll
        .saturating_mul(1 << exponent)
        .min(MAX_BACKOFF.max(poll));
    backoff.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
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
            demand_failures: 0,
            demand_paused: None,
            warned_persistent: false,
            estimator: Estimator::new(EstimateSettings::new(idle_timeout)),
            first_cycle: None,
            last_polled: None,
            warned_stale: false,
            registered: HashSet::new(),
            runners_asked: None,
            breaker_open: false,
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
        let CycleOutcome::Failed { error, .. } = outcome else {
            self.failures = 0;
            return poll;
        };
        self.failures = self.failures.saturating_add(1);
        failing_sleep(self.failures, poll, error.retry_after.map(|d| d.as_std()))
    }

    /// A warning event, once per failing episode, when a class has failed past the threshold.
    async fn persistent_error_event(&mut self, outcome: &CycleOutcome, now: Instant) {
        match outcome.failure() {
            None => self.warned_persistent = false,
            Some((operation, error)) => {
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
        self.first_cycle.get_or_insert(now);
        let (demand, asked) = match &self.demand_paused {
            Some((until, failure)) if now < *until => (Err(failure.clone()), false),
            _ => {
                let demand = self.poll_demand(&*settings.demand).await;
                self.pace_demand(&demand, now, settings.poll_interval);
                (demand, true)
            }
        };
        match &demand {
            Ok(d) => {
                self.ctx.metrics.demand(&self.class, d.unclaimed, d.running);
                self.ctx.metrics.polled(&self.class, unix_seconds(now));
                self.last_polled = Some(now);
                self.warned_stale = false;
            }
            Err(_) => self.ctx.metrics.not_polled(&self.class),
        }

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
        if let (Some(model), Ok(demand)) = (&pool.model, &demand) {
            model.advance(&self.class, now, *demand);
        }
        let mut fleet = match timed(
            &self.ctx,
            Operation::Observe,
            pool.fleet.observe(&self.class),
        )
        .await
        {
            Ok(f) => f,
            Err(e) => return self.failed(Operation::Observe, e, "failed to observe pool"),
        };
        if fleet.spec_replicas.is_none() {
            // The pool is gone (deleted behind our back): set it up again next cycle.
            self.ensured = None;
        }
        // The modelled pool's VMs have no runners to list; with demand unknown, the runner
        // list is not worth a request either.
        let ask = pool.model.is_none() && demand.is_ok();
        self.check_registration(&*settings.demand, &mut fleet, now, ask)
            .await;

        let decision = decide(
            &settings.class.scaling,
            demand.as_ref().ok().copied(),
            &fleet,
            now,
            &mut self.planner,
        );
        self.ctx.metrics.decision(
            &self.class,
            decision.desired,
            fleet.spec_replicas,
            &decision.counts,
        );
        self.ctx
            .metrics
            .max_replicas(&self.class, decision.controls.max_replicas);
        self.ctx.metrics.healing(
            &self.class,
            decision.breaker_open,
            decision.breaker_strikes,
            decision.warm,
        );
        self.breaker_changes(&decision).await;
        match &demand {
            Ok(demand) => {
                let estimate = EstimateSettings::new(settings.class.scaling.idle_timeout);
                if self.estimator.settings() != estimate {
                    self.estimator.set_settings(estimate);
                }
                let step = self.estimator.observe(now, *demand, &fleet.vms);
                self.ctx.metrics.estimate(&self.class, &step);
                info!(
                    loop_name = "scaler",
                    resource_class = %self.class,
                    unclaimed_tasks = demand.unclaimed,
                    running_tasks = demand.running,
                    desired_vms = decision.desired,
                    warm_vms = decision.warm,
                    "scaler cycle"
                );
            }
            Err(failure) => self.degraded(failure, asked, &decision, &fleet, now).await,
        }
        let report = match self.carry_out(pool, &fleet, &decision).await {
            Ok(report) => report,
            Err((operation, error)) => return CycleOutcome::Failed { operation, error },
        };
        let decision = Box::new(decision);
        match demand {
            Ok(_) => CycleOutcome::Done { decision, report },
            Err((operation, error)) => CycleOutcome::Degraded {
                operation,
                error,
                decision,
                report,
            },
        }
    }

    /// Both task counts, or the first call that failed (logged with the seed's message).
    async fn poll_demand(&self, source: &dyn DemandSource) -> Result<Demand, Failure> {
        let unclaimed = source.unclaimed_tasks(&self.class).await.map_err(|e| {
            self.failed_call(
                Operation::UnclaimedTasks,
                e,
                "failed to get unclaimed tasks",
            )
        })?;
        let running = source.running_tasks(&self.class).await.map_err(|e| {
            self.failed_call(Operation::RunningTasks, e, "failed to get running tasks")
        })?;
        Ok(Demand { unclaimed, running })
    }

    /// After a poll: back to polling every cycle on success; on failure, no call before the
    /// back-off (or the server's `Retry-After`) has run out.
    fn pace_demand(&mut self, demand: &Result<Demand, Failure>, now: Timestamp, poll: StdDuration) {
        match demand {
            Ok(_) => {
                self.demand_failures = 0;
                self.demand_paused = None;
            }
            Err(failure) => {
                self.demand_failures = self.demand_failures.saturating_add(1);
                let wait = failing_sleep(
                    self.demand_failures,
                    poll,
                    failure.1.retry_after.map(|d| d.as_std()),
                );
                // A hair short of the wait, so the cycle due at its end polls again.
                let until =
                    now.saturating_add(wait.saturating_sub(StdDuration::from_millis(50)).into());
                self.demand_paused = Some((until, failure.clone()));
            }
        }
    }

    /// Say that the class runs degraded (a warning when this cycle's poll failed, a debug line
    /// while the back-off holds the next poll), and once per episode of stale demand, an Event.
    async fn degraded(
        &mut self,
        (operation, error): &Failure,
        asked: bool,
        decision: &Decision,
        fleet: &FleetState,
        now: Timestamp,
    ) {
        let since = self.last_polled.or(self.first_cycle).unwrap_or(now);
        let stale_for = now.since(since).as_std();
        if !asked {
            debug!(
                resource_class = %self.class,
                stale_for_seconds = stale_for.as_secs(),
                desired_vms = decision.desired,
                "demand unknown: task counts not polled until the back-off ends; keeping the pool"
            );
        } else {
            warn!(
                loop_name = "scaler",
                resource_class = %self.class,
                stale_for_seconds = stale_for.as_secs(),
                pool_replicas = fleet.spec_replicas,
                desired_vms = decision.desired,
                "demand unknown: running degraded, keeping the pool and replacing finished VMs"
            );
        }
        if self.warned_stale || stale_for < self.ctx.demand_stale_after {
            return;
        }
        self.warned_stale = true;
        let polled = match self.last_polled {
            Some(_) => format!("for {}s", stale_for.as_secs()),
            None => format!("since the loop started {}s ago", stale_for.as_secs()),
        };
        let note = format!(
            "no task counts from CircleCI {polled} ({} failing: {}); running degraded: keeping the pool at {} VMs (minReplicas {}) and replacing finished VMs",
            operation.as_str(),
            error.message,
            decision.desired,
            decision.controls.min_replicas,
        );
        self.ctx
            .publish(&self.class, EventKind::DemandStale, note)
            .await;
    }

    /// Mark each VM registered (its runner seen connected, now or before), unregistered (a
    /// runner list fetched this cycle lacks it) or unknown. A VM is judged unregistered only
    /// on a list fetched in the same cycle as the decision, never on an older one, so a runner
    /// that connected since cannot have its VM reclaimed on stale news.
    async fn check_registration(
        &mut self,
        source: &dyn DemandSource,
        fleet: &mut FleetState,
        now: Timestamp,
        ask: bool,
    ) {
        let present: HashSet<&VmId> = fleet.vms.iter().map(|vm| &vm.id).collect();
        self.registered.retain(|id| present.contains(id));
        let waiting = fleet.vms.iter().any(|vm| {
            vm.phase == VmPhase::Running && !vm.deleting && !self.registered.contains(&vm.id)
        });
        let due = self
            .runners_asked
            .is_none_or(|at| now < at || now.since(at) >= RUNNERS_EVERY);
        let mut fresh = false;
        if ask && waiting && due {
            self.runners_asked = Some(now);
            match source.connected_runners(&self.class).await {
                Ok(Some(names)) => {
                    let names: HashSet<&str> = names.iter().map(String::as_str).collect();
                    for vm in &fleet.vms {
                        if names.contains(vm.name.as_ref()) {
                            self.registered.insert(vm.id.clone());
                        }
                    }
                    fresh = true;
                }
                Ok(None) => {}
                Err(e) => {
                    self.record_error(Operation::ConnectedRunners, &e);
                    warn!(loop_name = "scaler", resource_class = %self.class, kind = e.kind.as_str(), error = %e, "failed to list connected runners; the registration check waits for the next list");
                }
            }
        }
        for vm in &mut fleet.vms {
            vm.registered = if self.registered.contains(&vm.id) {
                Some(true)
            } else if fresh {
                Some(false)
            } else {
                None
            };
        }
    }

    /// An Event and a log line when the registration breaker opens or closes.
    async fn breaker_changes(&mut self, decision: &Decision) {
        if decision.breaker_open == self.breaker_open {
            return;
        }
        self.breaker_open = decision.breaker_open;
        let floor = decision.controls.min_replicas;
        let (kind, note) = if decision.breaker_open {
            warn!(
                loop_name = "scaler",
                resource_class = %self.class,
                breaker_strikes = decision.breaker_strikes,
                min_replicas = floor,
                "registration breaker open: scaling out no further than the floor until a runner registers"
            );
            (
                EventKind::BreakerOpened,
                format!(
                    "the runners of {} VMs in a row never registered: scaling out no further than minReplicas ({floor}, at least 1) until one does; {}",
                    decision.breaker_strikes,
                    Reclaim::Unregistered.hint()
                ),
            )
        } else {
            info!(
                loop_name = "scaler",
                resource_class = %self.class,
                "registration breaker closed: a runner registered, scaling follows demand again"
            );
            (
                EventKind::BreakerClosed,
                "a new VM's runner registered: scaling follows demand again".to_owned(),
            )
        };
        self.ctx.publish(&self.class, kind, note).await;
    }

    /// Apply the plan when there is something to do and writes are on; `None` when not.
    async fn carry_out(
        &self,
        pool: &Pool,
        fleet: &FleetState,
        decision: &Decision,
    ) -> Result<Option<ApplyReport>, Failure> {
        let class = &self.class;
        // A VM still being deleted may need its pool finalizer released (a retire interrupted
        // by a restart); `apply` repairs that, so it runs even for an otherwise empty plan
        // (when writing: a dry run has nothing to report for it).
        let repair = pool.writes && fleet.vms.iter().any(|vm| vm.deleting);
        if decision.plan.is_noop(fleet) && !repair {
            return Ok(None);
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
            return Ok(None);
        }
        let report = timed(&self.ctx, Operation::Apply, pool.fleet.apply(class, plan))
            .await
            .map_err(|e| self.failed_call(Operation::Apply, e, "failed to apply plan"))?;
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
                reclaimed = report.reclaimed.len(),
                refused = report.refused,
                "{}",
                if pool.model.is_some() { "dry run: applied plan to the modelled pool" } else { "applied plan" }
            );
        }
        self.report_events(&report, decision.demand).await;
        Ok(Some(report))
    }

    fn failed(
        &self,
        operation: Operation,
        error: PortError,
        message: &'static str,
    ) -> CycleOutcome {
        let (operation, error) = self.failed_call(operation, error, message);
        CycleOutcome::Failed { operation, error }
    }

    /// Count and log a failed call with the seed's message.
    fn failed_call(
        &self,
        operation: Operation,
        error: PortError,
        message: &'static str,
    ) -> Failure {
        self.record_error(operation, &error);
        error!(loop_name = "scaler", resource_class = %self.class, kind = error.kind.as_str(), error = %error, "{message}");
        (operation, error)
    }

    fn record_error(&self, operation: Operation, error: &PortError) {
        self.ctx.metrics.error(
            &self.class,
            operation,
            error.kind,
            unix_seconds(wall_clock()),
        );
    }

    /// Events on the pool (none in shadow mode: its context has no `Events`), and the
    /// reclaimed VMs counted by reason.
    async fn report_events(&self, report: &ApplyReport, demand: Option<Demand>) {
        if let Some((from, to)) = report.scaled {
            let kind = if to > from {
                EventKind::ScaledOut
            } else {
                EventKind::ScaledIn
            };
            let note = match demand {
                Some(demand) => format!(
                    "replicas {from} -> {to} (unclaimed tasks {}, running tasks {})",
                    demand.unclaimed, demand.running
                ),
                None => format!(
                    "replicas {from} -> {to} (demand unknown: keeping the pool, at least minReplicas)"
                ),
            };
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
        let mut by_reason: BTreeMap<Reclaim, Vec<&str>> = BTreeMap::new();
        for (name, why) in &report.reclaimed {
            by_reason.entry(*why).or_default().push(name);
        }
        for (why, names) in by_reason {
            let count = u32::try_from(names.len()).unwrap_or(u32::MAX);
            self.ctx.metrics.reclaimed(&self.class, why, count);
            // The hint first: a long list of names is what gets cut.
            let note = format!(
                "reclaimed {count} VM(s) that could not hold a job ({}): {}; VMs: {}",
                why.as_str(),
                why.hint(),
                names.join(", ")
            );
            self.ctx
                .publish(&self.class, EventKind::Reclaimed(why), note)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_doubling_to_the_cap_or_as_long_as_the_server_asks() {
        let poll = StdDuration::from_secs(1);
        let secs = |n| StdDuration::from_secs(n);
        assert_eq!(failing_sleep(1, poll, None), secs(1));
        assert_eq!(failing_sleep(3, poll, None), secs(4));
        assert_eq!(failing_sleep(20, poll, None), MAX_BACKOFF);
        assert_eq!(failing_sleep(1, poll, Some(secs(20))), secs(20));
        assert_eq!(failing_sleep(1, poll, Some(secs(900))), MAX_RETRY_AFTER);
        // A poll interval above the cap is the floor.
        assert_eq!(failing_sleep(1, secs(60), None), secs(60));
    }
}
