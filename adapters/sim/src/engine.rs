//! The discrete-event loop: world events from a binary heap, controller cycles on the poll
//! grid, the core's planner deciding, plans applied through the fleet port.
//!
//! Fast path: a cycle can only decide differently when the world changed since the last one
//! (an arrival, a boot, a job end, an idle power-off, a plan applied) or when the planner said
//! so (`Decision::revisit_at`: a scale-down hold ending, a schedule minute). Otherwise the
//! previous plan stands and was already carried out, so the loop jumps to the first poll tick
//! at or after the next world event or revisit. `SimOptions::fast_path = false` polls every
//! tick; a test checks both give identical reports.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use provisioner_core::{
    Demand, DemandSource, Duration, FleetState, Plan, PlannerState, ResourceClass, Scaling,
    Timestamp, VmFleet, decide, plan_for,
};

use crate::SimError;
use crate::cluster::{Cluster, ClusterModel};
use crate::estimate::Estimates;
use crate::options::{PolicyChoice, SimOptions, millis};
use crate::phases::phase_stats;
use crate::report::{ClassReport, OutageReport, Sample, SimReport, WorstWait, hours, percentile_s};
use crate::trace::Trace;
use crate::world::{Accounts, Books, DecisionInputs, RunnerTimes, SimWorld, WorldState};

/// After the last world event, how long the loop keeps polling (for a schedule that might
/// raise a zero `maxReplicas`) before it declares the remaining jobs stuck.
const STALL_LIMIT_MS: i64 = 8 * 86_400_000;

/// Samples kept at most (a run that overshoots the trace by far stops sampling there).
const MAX_SAMPLES: usize = 5_000_000;

/// Run a ported call whose future is always ready (the simulated ports never wait).
fn ready<F: Future>(future: F) -> Result<F::Output, SimError> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => Ok(value),
        Poll::Pending => Err(SimError::Internal(
            "a simulated port call did not complete at once".to_owned(),
        )),
    }
}

/// A class's policy, resolved for the run.
enum ClassPolicy<'a> {
    Provisioner(&'a Scaling),
    Gitlab {
        idle_count: u32,
        scale_factor: f64,
        max_replicas: u32,
    },
    Oracle {
        max_replicas: u32,
        lead_ms: i64,
        arrivals: Vec<i64>,
    },
}

impl ClassPolicy<'_> {
    /// Whether decisions read the number of running VMs (a `maxSurge` cap, also in schedules).
    fn uses_ready_vms(&self) -> bool {
        match self {
            // The predictive control learns boot times from VMs turning ready.
            Self::Provisioner(s) => {
                s.predictive.is_some()
                    || s.max_surge.get() > 0
                    || s.schedules
                        .iter()
                        .any(|x| x.overrides.max_surge.is_some_and(|m| m.get() > 0))
            }
            Self::Gitlab { .. } | Self::Oracle { .. } => false,
        }
    }

    /// The plan, when to look again regardless of events (ms of trace time), and the
    /// `maxReplicas` in force. `None` demand (CircleCI failed): the provisioner runs degraded
    /// (the core keeps the pool); the other policies fail static (no plan).
    fn evaluate(
        &self,
        demand: Option<Demand>,
        fleet: &FleetState,
        now: i64,
        start_at_ms: i64,
        state: &mut PlannerState,
    ) -> Option<(Plan, Option<i64>, u32)> {
        if demand.is_none() && !matches!(self, Self::Provisioner(_)) {
            return None;
        }
        let demand_known = demand;
        let demand = demand.unwrap_or_default();
        Some(match self {
            Self::Provisioner(scaling) => {
                let d = decide(
                    scaling,
                    demand_known,
                    fleet,
                    Timestamp::from_unix_millis(start_at_ms + now),
                    state,
                );
                (
                    d.plan,
                    d.revisit_at.map(|t| t.unix_millis() - start_at_ms),
                    d.controls.max_replicas,
                )
            }
            Self::Gitlab {
                idle_count,
                scale_factor,
                max_replicas,
            } => {
                let busy = demand.total();
                let extra = (*idle_count).max((f64::from(busy) * scale_factor).ceil() as u32);
                let desired = busy.saturating_add(extra).min(*max_replicas);
                (plan_for(desired, fleet), None, *max_replicas)
            }
            Self::Oracle {
                max_replicas,
                lead_ms,
                arrivals,
            } => {
                let lo = arrivals.partition_point(|a| *a <= now);
                let hi = arrivals.partition_point(|a| *a <= now + lead_ms);
                let desired = demand
                    .total()
                    .saturating_add((hi - lo) as u32)
                    .min(*max_replicas);
                (
                    plan_for(desired, fleet),
                    arrivals.get(hi).map(|a| a - lead_ms),
                    *max_replicas,
                )
            }
        })
    }
}

struct Sampler {
    every: i64,
    next: i64,
    samples: Vec<Sample>,
}

impl Sampler {
    /// Record the world at every sample time before `t` (the world is constant between events).
    #[inline]
    fn before(&mut self, w: &WorldState, t: i64) {
        if self.every > 0 && self.next < t && self.samples.len() < MAX_SAMPLES {
            self.record(w, t);
        }
    }

    fn record(&mut self, w: &WorldState, t: i64) {
        while self.next < t && self.samples.len() < MAX_SAMPLES {
            self.samples.push(w.sample(self.next as f64 / 1000.0));
            self.next += self.every;
        }
    }
}

/// One class as the controller loop sees it: its policy and what the loop remembers between
/// cycles (the core's planner memory, when to look again, the last no-op decision's inputs and
/// the last observation of the fleet).
struct ClassLoop<'a> {
    class: &'a ResourceClass,
    policy: ClassPolicy<'a>,
    /// The class's runner timers (idle power-off, `maxRunTime`), for the world.
    runner: RunnerTimes,
    planner: PlannerState,
    revisit: Option<i64>,
    /// The inputs of the last decision, when it was a no-op.
    last_noop: Option<DecisionInputs>,
    /// The last observation and the fleet version it was taken at.
    observed: Option<(u64, FleetState)>,
    /// A CircleCI request of this class's cycle timed out: the cycle goes on (observes the
    /// fleet and decides without demand) when the timeout has run out. Each class has its own
    /// loop, as in the controller, so this holds up no other class.
    resume_at: Option<i64>,
}

impl<'a> ClassLoop<'a> {
    fn new(class: &'a ResourceClass, policy: ClassPolicy<'a>, runner: RunnerTimes) -> Self {
        Self {
            class,
            policy,
            runner,
            planner: PlannerState::default(),
            revisit: None,
            last_noop: None,
            observed: None,
            resume_at: None,
        }
    }

    /// A controller restart: the loop's memory is gone.
    fn forget(&mut self) {
        self.planner = PlannerState::default();
        self.revisit = None;
        self.last_noop = None;
        self.resume_at = None;
    }
}

/// A decision that changes the pool, waiting to be applied at the end of the cycle.
struct PendingPlan {
    class: usize,
    plan: Plan,
    /// The `maxReplicas` in force when deciding, and the VMs starting or running then: the pool
    /// cap the plan must respect.
    max_replicas: u32,
    live: u32,
}

/// Each class's policy resolved for the run, with the idle timeout its VMs get.
fn resolve_classes<'a>(
    trace: &'a Trace,
    options: &SimOptions,
    policy: &'a PolicyChoice,
    poll: i64,
    latency: i64,
) -> Result<Vec<ClassLoop<'a>>, SimError> {
    let mut classes = Vec::with_capacity(trace.classes.len());
    for (index, class) in trace.classes.iter().enumerate() {
        let resolved = match policy {
            PolicyChoice::Provisioner(scalings) => {
                let scaling = scalings.for_class(class).ok_or_else(|| {
                    let known: Vec<&str> = scalings.classes.keys().map(|c| c.as_str()).collect();
                    SimError::Option(format!(
                        "the trace has jobs of resource class {class}, which the configuration does not define (it defines: {}); run the trace as one class with --class-as",
                        known.join(", ")
                    ))
                })?;
                ClassLoop::new(
                    class,
                    ClassPolicy::Provisioner(scaling),
                    RunnerTimes {
                        idle_ms: scaling.idle_timeout.map(millis),
                        max_run_ms: Some(millis(scaling.healing.max_run_time)),
                    },
                )
            }
            PolicyChoice::Gitlab {
                idle_count,
                scale_factor,
                max_replicas,
                idle_timeout,
            } => {
                if !(scale_factor.is_finite() && *scale_factor >= 0.0) {
                    return Err(SimError::Option(format!(
                        "scale factor {scale_factor} must be a non-negative number"
                    )));
                }
                ClassLoop::new(
                    class,
                    ClassPolicy::Gitlab {
                        idle_count: *idle_count,
                        scale_factor: *scale_factor,
                        max_replicas: *max_replicas,
                    },
                    RunnerTimes {
                        idle_ms: idle_timeout.map(millis),
                        max_run_ms: None,
                    },
                )
            }
            PolicyChoice::Oracle { max_replicas } => {
                let lead_ms = options.boot_time.max_ms() + poll + latency;
                let arrivals = trace
                    .jobs
                    .iter()
                    .filter(|j| usize::from(j.class) == index)
                    .map(|j| j.arrival_ms)
                    .collect();
                ClassLoop::new(
                    class,
                    ClassPolicy::Oracle {
                        max_replicas: *max_replicas,
                        lead_ms,
                        arrivals,
                    },
                    RunnerTimes {
                        idle_ms: Some(lead_ms + poll),
                        max_run_ms: None,
                    },
                )
            }
        };
        classes.push(resolved);
    }
    Ok(classes)
}

/// Check the options the loop reads; the poll interval in ms.
fn check_options(trace: &Trace, options: &SimOptions) -> Result<i64, SimError> {
    let poll = millis(options.poll_interval);
    if poll <= 0 {
        return Err(SimError::Option(format!(
            "poll interval {} must be at least 1ms",
            options.poll_interval
        )));
    }
    if let Some(every) = options.sample_every {
        let span_ms = trace
            .jobs
            .last()
            .map_or(0, |j| j.arrival_ms + j.duration_ms);
        if millis(every) < 1000 || span_ms / millis(every).max(1) > MAX_SAMPLES as i64 {
            return Err(SimError::Option(format!(
                "sample interval {every} is too fine: samples are at least 1s apart and at most {MAX_SAMPLES} over the trace"
            )));
        }
    }
    Ok(poll)
}

/// Process the world's events up to `until`, sampling before each; true when every job is done.
fn run_events(w: &mut WorldState, sampler: &mut Sampler, until: i64) -> bool {
    while let Some(at) = w.next_event_at().filter(|at| *at <= until) {
        sampler.before(w, at);
        w.step(until);
        if w.all_done() {
            return true;
        }
    }
    false
}

/// The controller loop: its classes, its clock and what it counts.
struct Controller<'a> {
    world: SimWorld,
    classes: Vec<ClassLoop<'a>>,
    options: &'a SimOptions,
    poll: i64,
    latency: i64,
    timeout: i64,
    sampler: Sampler,
    /// The controller's wait and cost estimator beside the truth (`SimOptions::estimate`).
    estimates: Option<Estimates>,
    /// The first poll tick the next cycle may run at.
    next_allowed: i64,
    cycles: u64,
}

impl Controller<'_> {
    /// The tick of the next cycle: the next one on the grid, or (fast path, nothing changed)
    /// the first one at or after the next world event or revisit. `None`: nothing will ever
    /// happen again.
    fn next_tick(&self, w: &WorldState) -> Option<i64> {
        let poll = self.poll;
        let next_allowed = self.next_allowed;
        if !self.options.fast_path || w.any_dirty() {
            return Some(next_allowed);
        }
        let revisit = self
            .classes
            .iter()
            .flat_map(|c| c.revisit.into_iter().chain(c.resume_at))
            .min();
        let soonest = match (w.next_event_at(), revisit) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(if soonest <= next_allowed {
            next_allowed
        } else {
            next_allowed + (soonest - next_allowed + poll - 1) / poll * poll
        })
    }

    /// Whether class `c` must be looked at in the cycle at `target`.
    fn is_due(&self, w: &WorldState, c: usize, target: i64) -> bool {
        if let Some(resume) = self.classes[c].resume_at {
            return resume <= target;
        }
        !self.options.fast_path
            || w.is_dirty(c)
            || self.classes[c].revisit.is_some_and(|r| r <= target)
    }

    /// One class's cycle: poll demand, observe the fleet, decide (the core). `None`: nothing to
    /// apply (the decision is a no-op, would be one again, the policy fails static without
    /// demand, or a CircleCI request is timing out: the cycle goes on at `resume_at`).
    fn decide(&mut self, c: usize, target: i64) -> Result<Option<PendingPlan>, SimError> {
        let fast_path = self.options.fast_path;
        let start_at_ms = self.options.start_at_ms;
        let timeout = self.timeout;
        let world = &self.world;
        let cl = &mut self.classes[c];
        // The rest of a cycle whose CircleCI request timed out: demand is unknown.
        let resumed = cl.resume_at.take().is_some();
        // Nothing the decision reads changed since a no-op decision: it would be a no-op
        // again (a boot that claims a waiting job moves a task from unclaimed to running
        // and a VM from starting to running; the rule sees neither).
        let (inputs, version) = {
            let mut w = world.lock();
            let inputs = w.decision_inputs(c, cl.policy.uses_ready_vms());
            if !resumed
                && fast_path
                && cl.last_noop == Some(inputs)
                && cl.revisit.is_none_or(|r| r > target)
            {
                w.mark_seen(c);
                return Ok(None);
            }
            (inputs, w.fleet_version(c))
        };
        if !resumed {
            self.cycles += 1;
        }
        // Poll demand. Without both counts the provisioner decides degraded (keeps the pool and
        // replaces finished VMs); the other policies leave the pool as it is.
        let demand = if resumed {
            None
        } else {
            world.lock().clear_timed_out();
            let unclaimed = ready(world.unclaimed_tasks(cl.class))?.ok();
            let running = match unclaimed {
                Some(_) => ready(world.running_tasks(cl.class))?.ok(),
                None => None,
            };
            if timeout > 0 && world.lock().timed_out() {
                cl.resume_at = Some(target + timeout);
                return Ok(None);
            }
            unclaimed
                .zip(running)
                .map(|(unclaimed, running)| Demand { unclaimed, running })
        };
        // Observe the fleet. An observation is re-used while the world says the fleet has not
        // changed (the same value `observe` would return, without cloning every VM again).
        let fleet = match &cl.observed {
            Some((v, fleet)) if *v == version => fleet,
            _ => {
                let fresh =
                    ready(world.observe(cl.class))?.map_err(|e| SimError::Internal(e.message))?;
                &cl.observed.insert((version, fresh)).1
            }
        };
        // Decide.
        let Some((plan, revisit_at, max_replicas)) =
            cl.policy
                .evaluate(demand, fleet, target, start_at_ms, &mut cl.planner)
        else {
            return Ok(None);
        };
        cl.revisit = revisit_at;
        // Without demand the class stays due: the next tick polls again.
        if demand.is_some() {
            world.lock().mark_seen(c);
        }
        let noop = plan.is_noop(fleet);
        // A degraded decision did not read demand: the next one must, whatever else changed.
        cl.last_noop = (noop && demand.is_some()).then_some(inputs);
        Ok((!noop).then_some(PendingPlan {
            class: c,
            plan,
            max_replicas,
            live: inputs.live(),
        }))
    }

    /// Apply the cycle's plans through the fleet port, after the API latency, and audit the
    /// pool cap. `Ok(true)`: every job finished while the plans were in flight.
    fn apply(
        &mut self,
        plans: &[PendingPlan],
        target: i64,
        trace: &Trace,
        cycle_ms: &mut i64,
    ) -> Result<bool, SimError> {
        if self.latency > 0 {
            let mut w = self.world.lock();
            if run_events(&mut w, &mut self.sampler, target + self.latency) {
                return Ok(true);
            }
            w.set_now(target + self.latency);
            *cycle_ms = (*cycle_ms).max(self.latency);
        }
        for pending in plans {
            let outcome = ready(
                self.world
                    .apply(&trace.classes[pending.class], &pending.plan),
            )?;
            let mut w = self.world.lock();
            if let Err(e) = outcome
                && !e.is_transient()
            {
                return Err(SimError::Internal(e.message));
            }
            w.check_pool_cap(pending.class, pending.max_replicas, pending.live);
        }
        Ok(false)
    }

    /// Run cycles until every job is done, or nothing can happen any more; when the run ended.
    fn run(&mut self, trace: &Trace) -> Result<i64, SimError> {
        let n = self.classes.len();
        let mut due: Vec<usize> = Vec::with_capacity(n);
        let mut plans: Vec<PendingPlan> = Vec::new();
        loop {
            let mut w = self.world.lock();
            if w.all_done() {
                return Ok(w.now());
            }
            let Some(target) = self.next_tick(&w) else {
                return Ok(w.now());
            };
            // Nothing left to happen, or jobs left that nothing takes any more (VMs recycled
            // for ever because their runners never connect, or no room on the nodes): give up
            // on them once no job has arrived, started or finished for that long.
            if (w.next_event_at().is_none() && target > w.last_event_at() + STALL_LIMIT_MS)
                || w.stalled(target, STALL_LIMIT_MS)
            {
                return Ok(w.now());
            }
            w.note_pools_after_outages(target, self.poll);
            if run_events(&mut w, &mut self.sampler, target) {
                return Ok(w.now());
            }
            self.sampler.before(&w, target);
            w.set_now(target);
            if let Some(estimates) = &mut self.estimates {
                for c in 0..n {
                    let (demand, fleet) = w.controller_view(c);
                    estimates.look(target, c, demand, &fleet.vms);
                }
            }
            if w.controller_restarts() {
                self.classes.iter_mut().for_each(ClassLoop::forget);
            }
            due.clear();
            due.extend((0..n).filter(|c| self.is_due(&w, *c, target)));
            drop(w);
            plans.clear();
            for &c in &due {
                if let Some(pending) = self.decide(c, target)? {
                    plans.push(pending);
                }
            }
            let mut cycle_ms = self.poll;
            if !plans.is_empty() && self.apply(&plans, target, trace, &mut cycle_ms)? {
                return Ok(self.world.lock().now());
            }
            self.next_allowed = target + cycle_ms;
        }
    }
}

/// Replay `trace` under `policy`. Invariant violations do not make this fail: they are in the
/// report (`SimReport::is_ok`), for the caller to show and exit non-zero on.
pub fn run(
    trace: &Trace,
    options: &SimOptions,
    policy: &PolicyChoice,
) -> Result<SimReport, SimError> {
    let wall = Instant::now();
    let poll = check_options(trace, options)?;
    let latency = millis(options.api_latency);
    let classes = resolve_classes(trace, options, policy, poll, latency)?;
    let runners: Vec<RunnerTimes> = classes.iter().map(|c| c.runner).collect();
    let idle_timeouts: Vec<Option<i64>> = runners.iter().map(|r| r.idle_ms).collect();
    let mut state = WorldState::new(
        trace.jobs.clone(),
        &trace.classes,
        &runners,
        options.boot_time.clone(),
        options.faults,
        options.seed,
        options.start_at_ms,
    );
    if let Some(model) = &options.cluster {
        state = state.with_cluster(cluster_for(trace, model, options.seed)?);
    }
    if !options.phases.is_empty() {
        state = state.with_on_log();
    }
    let world = SimWorld::new(state);
    let mut controller = Controller {
        world,
        classes,
        options,
        poll,
        latency,
        timeout: millis(options.api_timeout),
        sampler: Sampler {
            every: options.sample_every.map_or(0, millis),
            next: 0,
            samples: Vec::new(),
        },
        estimates: options
            .estimate
            .then(|| Estimates::new(&idle_timeouts, poll, options.start_at_ms)),
        next_allowed: 0,
        cycles: 0,
    };
    let end = controller.run(trace)?;
    let Controller {
        world,
        mut sampler,
        estimates,
        cycles,
        ..
    } = controller;
    let state = world.into_state();
    sampler.before(&state, end + 1);
    let books = state.close(end);
    let finish = Finish {
        end,
        cycles,
        samples: sampler.samples,
        worst_n: options.worst_waits,
        wall,
        estimates,
    };
    Ok(build_report(trace, policy, books, finish, &options.phases))
}

/// The cluster for `trace`'s classes: each class's VM size, and its image (classes booting
/// the same one share a node's cache; a class without one has its own).
fn cluster_for(trace: &Trace, model: &ClusterModel, seed: u64) -> Result<Cluster, SimError> {
    let names: Vec<String> = trace.classes.iter().map(ToString::to_string).collect();
    let sizes = trace
        .classes
        .iter()
        .map(|c| model.size_of(c))
        .collect::<Result<Vec<_>, _>>()?;
    let mut known: Vec<String> = Vec::new();
    let images: Vec<u32> = trace
        .classes
        .iter()
        .map(|c| {
            let image = model
                .images
                .get(c)
                .cloned()
                .unwrap_or_else(|| format!("class:{c}"));
            let at = known.iter().position(|k| *k == image).unwrap_or_else(|| {
                known.push(image);
                known.len() - 1
            });
            at as u32
        })
        .collect();
    Cluster::new(model.options.clone(), &names, &sizes, &images, seed)
}

/// How the loop ended, for the report.
struct Finish {
    end: i64,
    cycles: u64,
    samples: Vec<Sample>,
    worst_n: usize,
    wall: Instant,
    estimates: Option<Estimates>,
}

fn build_report(
    trace: &Trace,
    policy: &PolicyChoice,
    w: Books,
    finish: Finish,
    cuts: &[Duration],
) -> SimReport {
    let Finish {
        end,
        cycles,
        samples,
        worst_n,
        wall,
        estimates,
    } = finish;
    let n = trace.classes.len();
    let mut waits: Vec<Vec<i64>> = vec![Vec::new(); n];
    let mut all_waits = Vec::with_capacity(trace.jobs.len());
    for (i, job) in trace.jobs.iter().enumerate() {
        let claimed = w.claimed_at[i];
        // A job never claimed counts as waiting until the end (censored, not dropped).
        let wait = if claimed >= 0 {
            claimed - job.arrival_ms
        } else {
            (end - job.arrival_ms).max(0)
        };
        waits[usize::from(job.class)].push(wait);
        all_waits.push((wait, i));
    }
    // Per window of trace time, for one class or (None) all.
    let phases_of = |class: Option<u16>| {
        if cuts.is_empty() {
            return Vec::new();
        }
        let arrivals_waits: Vec<(i64, i64)> = trace
            .jobs
            .iter()
            .zip(&all_waits)
            .filter(|(j, _)| class.is_none_or(|c| j.class == c))
            .map(|(j, (wait, _))| (j.arrival_ms, *wait))
            .collect();
        let on: Vec<(i64, i64)> = w
            .on_log
            .iter()
            .filter(|(_, _, c)| class.is_none_or(|k| *c == k))
            .map(|(from, until, _)| (*from, *until))
            .collect();
        phase_stats(cuts, end, &arrivals_waits, &on)
    };
    let mut classes = Vec::with_capacity(n);
    for (c, cw) in w.classes.iter().enumerate() {
        let mut v = std::mem::take(&mut waits[c]);
        v.sort_unstable();
        let mut report = class_report(cw.name.as_str(), &v, &cw.acc, v.len() as u64);
        report.phases = phases_of(Some(c as u16));
        classes.push(report);
    }
    let phases = phases_of(None);
    let mut sorted: Vec<i64> = all_waits.iter().map(|(w, _)| *w).collect();
    sorted.sort_unstable();
    let mut total_acc = Accounts::default();
    for cw in &w.classes {
        total_acc.boot_ms += cw.acc.boot_ms;
        total_acc.idle_ms += cw.acc.idle_ms;
        total_acc.busy_ms += cw.acc.busy_ms;
        total_acc.stopped_ms += cw.acc.stopped_ms;
        total_acc.vms_created += cw.acc.vms_created;
        total_acc.completed += cw.acc.completed;
    }
    let total = class_report("all", &sorted, &total_acc, trace.jobs.len() as u64);
    all_waits.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let worst_waits = all_waits
        .iter()
        .take(worst_n)
        .map(|(wait, i)| {
            let job = trace.jobs[*i];
            WorstWait {
                class: trace.classes[usize::from(job.class)].to_string(),
                arrival_s: job.arrival_ms as f64 / 1000.0,
                wait_s: *wait as f64 / 1000.0,
                duration_s: job.duration_ms as f64 / 1000.0,
            }
        })
        .collect();
    let estimate = estimates.map(|e| {
        let mut actual: Vec<(String, Vec<Option<i64>>)> = trace
            .classes
            .iter()
            .map(|c| (c.to_string(), Vec::new()))
            .collect();
        for (i, job) in trace.jobs.iter().enumerate() {
            let claimed = w.claimed_at[i];
            actual[usize::from(job.class)]
                .1
                .push((claimed >= 0).then(|| claimed - job.arrival_ms));
        }
        e.finish(actual)
    });
    let peak_vms = w.peak_on_total;
    SimReport {
        policy: policy.name().to_owned(),
        jobs: total.jobs,
        jobs_completed: total.jobs_completed,
        wait_mean_s: total.wait_mean_s,
        wait_p50_s: total.wait_p50_s,
        wait_p95_s: total.wait_p95_s,
        wait_p99_s: total.wait_p99_s,
        wait_max_s: total.wait_max_s,
        vm_hours: total.vm_hours,
        busy_vm_hours: total.busy_vm_hours,
        idle_vm_hours: total.idle_vm_hours,
        boot_vm_hours: total.boot_vm_hours,
        stopped_vm_hours: total.stopped_vm_hours,
        vms_created: total.vms_created,
        peak_vms,
        events: w.events + cycles,
        controller_cycles: cycles,
        sim_seconds: end as f64 / 1000.0,
        wall_seconds: wall.elapsed().as_secs_f64(),
        faults: w.fault_counts,
        outages: w
            .outages
            .iter()
            .map(|o| {
                let pool_back = o
                    .after
                    .as_ref()
                    .is_some_and(|after| after.iter().zip(&o.before).all(|(a, b)| a >= b));
                OutageReport {
                    start_s: o.start as f64 / 1000.0,
                    end_s: o.end.map(|e| e as f64 / 1000.0),
                    replicas_before: o.before.clone(),
                    replicas_after: o.after.clone(),
                    pool_back,
                }
            })
            .collect(),
        cluster: w.cluster,
        invariant_violations: w.violations,
        classes,
        phases,
        samples,
        worst_waits,
        estimate,
    }
}

fn class_report(name: &str, sorted_waits: &[i64], acc: &Accounts, jobs: u64) -> ClassReport {
    let mean = if sorted_waits.is_empty() {
        0.0
    } else {
        sorted_waits.iter().sum::<i64>() as f64 / sorted_waits.len() as f64 / 1000.0
    };
    ClassReport {
        class: name.to_owned(),
        jobs,
        jobs_completed: acc.completed,
        wait_mean_s: mean,
        wait_p50_s: percentile_s(sorted_waits, 0.50),
        wait_p95_s: percentile_s(sorted_waits, 0.95),
        wait_p99_s: percentile_s(sorted_waits, 0.99),
        wait_max_s: sorted_waits.last().map_or(0.0, |w| *w as f64 / 1000.0),
        vm_hours: hours(acc.boot_ms + acc.idle_ms + acc.busy_ms),
        busy_vm_hours: hours(acc.busy_ms),
        idle_vm_hours: hours(acc.idle_ms),
        boot_vm_hours: hours(acc.boot_ms),
        stopped_vm_hours: hours(acc.stopped_ms),
        vms_created: acc.vms_created,
        peak_vms: acc.peak_on,
        phases: Vec::new(),
    }
}
