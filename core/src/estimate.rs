//! What users felt, estimated from what a controller sees: how long jobs waited, how many found a
//! warm VM, how long VMs took to boot and how VM time splits into starting, idle, busy and
//! stopped. The controller sees only counts (unclaimed and running tasks) and its pool, a few
//! seconds apart; the simulator, which knows every job, runs this same code to show how close
//! the estimate comes.
//!
//! The model, per class, between two observations at `t0` and `t1`:
//! - every count holds from one observation to the next (so the waiting job-seconds are the
//!   unclaimed count integrated over time, and idle VM-seconds the idle count likewise);
//! - a VM runs at most one job, so jobs started up to now are the running count's rise since the
//!   first observation plus the jobs seen ending (VMs that left `Running` other than by idling
//!   out); kept as a running maximum, so a job end seen one cycle after its task left the
//!   running count is not counted as a missing start;
//! - a VM's boot runs from its creation to the `ready_at` it reports (between the two looks
//!   that saw it starting, then up, when it reports none);
//! - a VM that stops about `idle_timeout` after it became ready idled out instead;
//! - the queue is first in, first out: claims take the oldest waiting jobs first, then jobs that
//!   arrived since `t0`; those find a warm VM while VMs idle at `t0` are left.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use crate::domain::{Duration, Timestamp};
use crate::ports::{Demand, Vm, VmId, VmPhase};

/// Waiting jobs are kept in at most this many arrival cohorts (a backlog older than that many
/// cycles folds its newest arrivals into the last cohort).
const MAX_COHORTS: usize = 4096;

/// What the estimator needs to know about a class besides what it observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EstimateSettings {
    /// The runner's idle timeout: a VM stopping this long after it became ready idled out.
    /// `None`: VMs never idle out, every stop ends a job.
    pub idle_timeout: Option<Duration>,
    /// How much later than `idle_timeout` an idled-out VM may still be seen stopping (the agent
    /// starts after the guest is ready, and shutting down takes a while).
    pub idle_out_slack: Duration,
    /// How long a ready VM may stay idle while tasks wait before it counts as not registered
    /// (its runner agent never came up, or claims for another class).
    pub register_grace: Duration,
}

impl EstimateSettings {
    pub const DEFAULT_IDLE_OUT_SLACK: Duration = Duration::from_secs(60);
    pub const DEFAULT_REGISTER_GRACE: Duration = Duration::from_secs(300);

    pub fn new(idle_timeout: Option<Duration>) -> Self {
        Self {
            idle_timeout,
            idle_out_slack: Self::DEFAULT_IDLE_OUT_SLACK,
            register_grace: Self::DEFAULT_REGISTER_GRACE,
        }
    }
}

/// VM-seconds by what the VMs were doing. `idle` and `busy` split the VMs in `Running` by the
/// running task count (the fleet cannot tell which VM runs a job, only how many do).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VmSeconds {
    pub starting: f64,
    pub idle: f64,
    pub busy: f64,
    /// Powered off (finished or failed to start), waiting to be deleted.
    pub stopped: f64,
}

impl VmSeconds {
    fn add(&mut self, other: &Self) {
        self.starting += other.starting;
        self.idle += other.idle;
        self.busy += other.busy;
        self.stopped += other.stopped;
    }

    /// Powered-on time: what a VM costs in CPU and memory.
    pub fn powered_on(&self) -> f64 {
        self.starting + self.idle + self.busy
    }
}

/// What one observation added.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Step {
    /// Unclaimed tasks integrated over the time since the last observation.
    pub waiting_job_seconds: f64,
    pub jobs_started: u64,
    /// Jobs started that found a VM idle and waiting for them.
    pub warm_jobs: u64,
    /// The estimated wait of each job started, as `(seconds, jobs)`.
    pub waits: Vec<(f64, u32)>,
    /// Created-to-ready durations of VMs seen becoming ready, in seconds.
    pub boot_seconds: Vec<f64>,
    pub vm_seconds: VmSeconds,
    /// VMs seen entering `FailedToStart`.
    pub failed_starts: u32,
    /// VMs seen stopping after a job.
    pub job_ends: u32,
    /// VMs seen stopping after idling for `idle_timeout`.
    pub idle_outs: u32,
    /// Ready VMs idle past `register_grace` while tasks wait (a lower bound), now.
    pub unregistered: u32,
}

/// Everything added since the estimator started.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Totals {
    pub waiting_job_seconds: f64,
    pub jobs_started: u64,
    pub warm_jobs: u64,
    pub boots: u64,
    pub boot_seconds: f64,
    pub vm_seconds: VmSeconds,
    pub failed_starts: u64,
    pub job_ends: u64,
    pub idle_outs: u64,
}

impl Totals {
    fn add(&mut self, step: &Step) {
        self.waiting_job_seconds += step.waiting_job_seconds;
        self.jobs_started += step.jobs_started;
        self.warm_jobs += step.warm_jobs;
        self.boots += step.boot_seconds.len() as u64;
        self.boot_seconds += step.boot_seconds.iter().sum::<f64>();
        self.vm_seconds.add(&step.vm_seconds);
        self.failed_starts += u64::from(step.failed_starts);
        self.job_ends += u64::from(step.job_ends);
        self.idle_outs += u64::from(step.idle_outs);
    }

    /// Mean queue time of the jobs started: waiting job-seconds per job. `None` before any.
    pub fn mean_wait_seconds(&self) -> Option<f64> {
        (self.jobs_started > 0).then(|| self.waiting_job_seconds / self.jobs_started as f64)
    }

    /// Share of the jobs started that found a warm VM, 0 to 1. `None` before any.
    pub fn warm_share(&self) -> Option<f64> {
        (self.jobs_started > 0).then(|| self.warm_jobs as f64 / self.jobs_started as f64)
    }
}

/// The counts one observation holds until the next.
#[derive(Debug, Clone, Copy)]
struct Held {
    at: i64,
    demand: Demand,
    starting: u32,
    /// VMs in `Running`: idle or busy.
    up: u32,
    stopped: u32,
}

impl Held {
    fn busy(&self) -> u32 {
        self.demand.running.min(self.up)
    }

    fn idle(&self) -> u32 {
        self.up - self.busy()
    }
}

/// A VM as last seen.
#[derive(Debug, Clone)]
struct Tracked {
    created_at: i64,
    phase: VmPhase,
    /// When it became ready, and how uncertain that is (ms): the gap between the observations
    /// it was inferred from, 0 when the VM's status said.
    ready: Option<(i64, i64)>,
    /// The observation that last listed it.
    seen: u64,
}

/// Jobs that arrived together (within one cycle) and still wait.
#[derive(Debug, Clone, Copy)]
struct Cohort {
    arrived_at: f64,
    jobs: u32,
}

/// One class's estimator. Feed it every observation, in time order.
#[derive(Debug, Clone)]
pub struct Estimator {
    settings: EstimateSettings,
    held: Option<Held>,
    vms: HashMap<VmId, Tracked>,
    observation: u64,
    backlog: VecDeque<Cohort>,
    /// The running count at the first observation (those jobs started before we looked).
    first_running: u32,
    totals: Totals,
}

impl Estimator {
    pub fn new(settings: EstimateSettings) -> Self {
        Self {
            settings,
            held: None,
            vms: HashMap::new(),
            observation: 0,
            backlog: VecDeque::new(),
            first_running: 0,
            totals: Totals::default(),
        }
    }

    pub fn settings(&self) -> EstimateSettings {
        self.settings
    }

    /// A configuration reload may change the idle timeout; what was learnt so far stays.
    pub fn set_settings(&mut self, settings: EstimateSettings) {
        self.settings = settings;
    }

    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Nothing changed until `at`: extend the last observation's counts (for a caller that
    /// knows so without looking, as the simulator skipping idle polls).
    pub fn hold(&mut self, at: Timestamp) -> Step {
        let mut step = Step::default();
        if let Some(held) = &mut self.held {
            let at = at.unix_millis();
            if at > held.at {
                integrate(&mut step, held, at);
                held.at = at;
            }
        }
        self.totals.add(&step);
        step
    }

    /// One observation: the class's counts and its pool's VMs at `at`. An observation older
    /// than the last one is ignored (an empty step).
    pub fn observe(&mut self, at: Timestamp, demand: Demand, vms: &[Vm]) -> Step {
        let t1 = at.unix_millis();
        let mut step = Step::default();
        let previous = self.held;
        if previous.is_some_and(|p| t1 < p.at) {
            return step;
        }
        self.observation += 1;
        let t0 = previous.map_or(t1, |p| {
            integrate(&mut step, &p, t1);
            p.at
        });
        let mut now = Held {
            at: t1,
            demand,
            starting: 0,
            up: 0,
            stopped: 0,
        };
        let first = previous.is_none();
        for vm in vms {
            match vm.phase {
                VmPhase::Starting => now.starting += 1,
                VmPhase::Running => now.up += 1,
                VmPhase::Stopped | VmPhase::FailedToStart => now.stopped += 1,
            }
            self.track(vm, t0, t1, first, &mut step);
        }
        self.forget_gone(t0, t1, &mut step);

        if first {
            self.first_running = demand.running;
            if demand.unclaimed > 0 {
                self.backlog.push_back(Cohort {
                    arrived_at: t1 as f64,
                    jobs: demand.unclaimed,
                });
            }
        } else if let Some(p) = previous {
            self.count_claims(&p, &now, &mut step);
        }
        step.unregistered = self.unregistered(&now);
        self.held = Some(now);
        self.totals.add(&step);
        step
    }

    /// Update one VM's record; note boots, failed starts and stops.
    fn track(&mut self, vm: &Vm, t0: i64, t1: i64, first: bool, step: &mut Step) {
        let observation = self.observation;
        let created_at = vm.created_at.unix_millis();
        match self.vms.entry(vm.id.clone()) {
            Entry::Vacant(slot) => {
                // Seen for the first time: it appeared since t0 (or the estimator just started,
                // and what happened before is unknown: no boot to report).
                let since = created_at.clamp(t0, t1);
                let ready = match (vm.phase, vm.ready_at) {
                    (_, Some(at)) => Some((at.unix_millis(), 0)),
                    (VmPhase::Running | VmPhase::Stopped, None) => {
                        Some((midpoint(since, t1), t1 - since))
                    }
                    _ => None,
                };
                if !first && let Some((at, _)) = ready {
                    step.boot_seconds.push(seconds(at - created_at));
                }
                let tracked = slot.insert(Tracked {
                    created_at,
                    phase: vm.phase,
                    ready,
                    seen: observation,
                });
                if !first {
                    match vm.phase {
                        VmPhase::FailedToStart => step.failed_starts += 1,
                        VmPhase::Stopped => classify_stop(tracked, t0, t1, &self.settings, step),
                        VmPhase::Starting | VmPhase::Running => {}
                    }
                }
            }
            Entry::Occupied(mut slot) => {
                let settings = self.settings;
                let tracked = slot.get_mut();
                tracked.seen = observation;
                let was = tracked.phase;
                tracked.phase = vm.phase;
                if was == vm.phase {
                    return;
                }
                if was == VmPhase::Starting
                    && matches!(vm.phase, VmPhase::Running | VmPhase::Stopped)
                {
                    // The VM's own Ready time when it says; else between the two looks.
                    let ready = vm
                        .ready_at
                        .map_or((midpoint(t0, t1), t1 - t0), |at| (at.unix_millis(), 0));
                    step.boot_seconds
                        .push(seconds(ready.0 - tracked.created_at));
                    tracked.ready = Some(ready);
                }
                if vm.phase == VmPhase::FailedToStart {
                    step.failed_starts += 1;
                } else if vm.phase == VmPhase::Stopped {
                    classify_stop(tracked, t0, t1, &settings, step);
                }
            }
        }
    }

    /// VMs no longer listed: one that was up when last seen stopped since (it is never deleted
    /// while up, so it stopped by itself and went).
    fn forget_gone(&mut self, t0: i64, t1: i64, step: &mut Step) {
        let observation = self.observation;
        let settings = self.settings;
        self.vms.retain(|_, tracked| {
            if tracked.seen == observation {
                return true;
            }
            if tracked.phase == VmPhase::Running {
                classify_stop(tracked, t0, t1, &settings, step);
            }
            false
        });
    }

    /// Jobs started between `p` and `now`, which waiting jobs they were and whether they found
    /// a warm VM.
    fn count_claims(&mut self, p: &Held, now: &Held, step: &mut Step) {
        let started = i64::from(now.demand.running) - i64::from(self.first_running)
            + i64::try_from(self.totals.job_ends + u64::from(step.job_ends)).unwrap_or(i64::MAX);
        let claims = u32::try_from(started - self.totals.jobs_started as i64).unwrap_or(
            if started > self.totals.jobs_started as i64 {
                u32::MAX
            } else {
                0
            },
        );
        step.jobs_started = u64::from(claims);

        // Claims and arrivals happened somewhere between the observations: at the midpoint on
        // average.
        let dt = (now.at - p.at) as f64;
        let mid = p.at as f64 + dt / 2.0;
        let mut from_backlog = 0u32;
        while from_backlog < claims {
            let Some(oldest) = self.backlog.front_mut() else {
                break;
            };
            let take = oldest.jobs.min(claims - from_backlog);
            step.waits
                .push((((mid - oldest.arrived_at) / 1000.0).max(0.0), take));
            from_backlog += take;
            oldest.jobs -= take;
            if oldest.jobs == 0 {
                self.backlog.pop_front();
            }
        }
        // Jobs that arrived since `p` and were claimed: VMs idle at `p` and not taken by the
        // backlog were there for them; the others waited for a VM becoming ready (on average a
        // third of the gap, the expected distance between two ordered uniform instants).
        let fresh = claims - from_backlog;
        let warm = fresh.min(p.idle().saturating_sub(from_backlog));
        step.warm_jobs = u64::from(warm);
        if warm > 0 {
            step.waits.push((0.0, warm));
        }
        if fresh > warm {
            step.waits.push((dt / 3000.0, fresh - warm));
        }
        // Arrivals still waiting join the queue; the queue then holds exactly what CircleCI
        // says (jobs cancelled, or claims counted late, leave from the front).
        let queued: u64 = self.backlog.iter().map(|c| u64::from(c.jobs)).sum();
        let unclaimed = u64::from(now.demand.unclaimed);
        if unclaimed > queued {
            let jobs = u32::try_from(unclaimed - queued).unwrap_or(u32::MAX);
            let full = self.backlog.len() >= MAX_COHORTS;
            match self.backlog.back_mut() {
                Some(last) if full => last.jobs = last.jobs.saturating_add(jobs),
                _ => self.backlog.push_back(Cohort {
                    arrived_at: mid,
                    jobs,
                }),
            }
        } else {
            let mut excess = queued - unclaimed;
            while excess > 0 {
                let Some(oldest) = self.backlog.front_mut() else {
                    break;
                };
                let take = u64::from(oldest.jobs).min(excess);
                oldest.jobs -= take as u32;
                excess -= take;
                if oldest.jobs == 0 {
                    self.backlog.pop_front();
                }
            }
        }
    }

    /// Ready VMs idle while tasks wait, not counting VMs that became ready within the grace
    /// period (their agent may still be starting). A VM up since before the estimator started
    /// has been up at least that long.
    fn unregistered(&self, now: &Held) -> u32 {
        if now.demand.unclaimed == 0 {
            return 0;
        }
        let grace = i64::try_from(self.settings.register_grace.as_millis()).unwrap_or(i64::MAX);
        let recent = self
            .vms
            .values()
            .filter(|t| {
                t.phase == VmPhase::Running
                    && t.ready.is_some_and(|(ready, _)| now.at - ready < grace)
            })
            .count();
        let recent = u32::try_from(recent).unwrap_or(u32::MAX);
        now.idle().saturating_sub(recent).min(now.demand.unclaimed)
    }
}

/// Add `held`'s counts over `[held.at, until)`.
fn integrate(step: &mut Step, held: &Held, until: i64) {
    let dt = seconds(until - held.at);
    step.waiting_job_seconds += f64::from(held.demand.unclaimed) * dt;
    step.vm_seconds.starting += f64::from(held.starting) * dt;
    step.vm_seconds.idle += f64::from(held.idle()) * dt;
    step.vm_seconds.busy += f64::from(held.busy()) * dt;
    step.vm_seconds.stopped += f64::from(held.stopped) * dt;
}

/// A VM up at `t0` and stopped by `t1`: a job end, unless it stopped about `idle_timeout` after
/// it became ready. A VM whose readiness was never seen (up before the estimator started)
/// counts as a job end unless the idle timeout is shorter than what we saw of it.
fn classify_stop(
    tracked: &Tracked,
    t0: i64,
    t1: i64,
    settings: &EstimateSettings,
    step: &mut Step,
) {
    let idled_out = match (settings.idle_timeout, tracked.ready) {
        (Some(timeout), Some((ready, uncertainty))) => {
            let timeout = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
            let slack = i64::try_from(settings.idle_out_slack.as_millis()).unwrap_or(i64::MAX);
            let up_for = midpoint(t0, t1) - ready;
            let tolerance = (t1 - t0).saturating_add(uncertainty);
            up_for >= timeout.saturating_sub(tolerance)
                && up_for <= timeout.saturating_add(tolerance).saturating_add(slack)
        }
        _ => false,
    };
    if idled_out {
        step.idle_outs += 1;
    } else {
        step.job_ends += 1;
    }
}

fn midpoint(a: i64, b: i64) -> i64 {
    a + (b - a) / 2
}

fn seconds(millis: i64) -> f64 {
    millis as f64 / 1000.0
}
