//! Self-healing: which VMs that did not stop by themselves the planner may still delete, judged
//! from the VM's own timestamps and statuses against a class's grace settings.
//!
//! Every rule names a VM that cannot hold a job: one that never became ready, one whose runner
//! never registered (it cannot have claimed anything), or one that has been up longer than
//! `idleTimeout` plus `maxRunTime` allow a runner to live. A ready VM whose runner may have
//! registered is never reclaimed before that bound.
//!
//! One more verdict deletes nothing: a running VM that is not ready although its start timeout
//! has passed (its node was lost: Kubernetes marks the pods of an unreachable node not ready,
//! and KubeVirt copies that to the VM's `Ready` condition) is not counted as capacity, so the
//! planner starts a replacement; it may still hold a job (a partitioned node), so it stays.

use crate::domain::{Duration, Timestamp};
use crate::ports::{FailingKind, Vm, VmPhase};

/// CircleCI's runner agent cancels a job after `max_run_time`; this is its documented default.
pub const DEFAULT_MAX_RUN_TIME: Duration = Duration::from_secs(5 * 3600);

/// A class's grace settings (the `healing` block), plus the runner's `maxRunTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Healing {
    /// How long a VM may sit in an unschedulable or image-pull failure status before it counts
    /// as failed to start. KubeVirt's pool auto-healing waits `minFailingToStartDuration`, 5m.
    pub failing_timeout: Duration,
    /// How long a VM may stay starting (not ready) without any failure status.
    pub start_timeout: Duration,
    /// How long after it became ready a VM's runner has to register with CircleCI (checked
    /// only when registration is known, i.e. with an API token).
    pub registration_timeout: Duration,
    /// After this many VMs in a row reclaimed as unregistered, the class scales out no further
    /// than its floor until one registers. 0 turns the breaker off.
    pub breaker_threshold: u32,
    /// `runner.maxRunTime`, or the agent's default: the longest a job can hold a VM.
    pub max_run_time: Duration,
}

impl Default for Healing {
    fn default() -> Self {
        Self {
            failing_timeout: Duration::from_secs(5 * 60),
            start_timeout: Duration::from_secs(15 * 60),
            registration_timeout: Duration::from_secs(10 * 60),
            breaker_threshold: 3,
            max_run_time: DEFAULT_MAX_RUN_TIME,
        }
    }
}

/// Why a VM that did not stop by itself is deleted. Used as a metric label: the set is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reclaim {
    /// Crash looping, or in an unschedulable / image-pull status for `failingTimeout`.
    FailedToStart,
    /// Not ready after `startTimeout`, without any failure status (a deleted Secret, a quota).
    StartTimeout,
    /// Up longer than `registrationTimeout + idleTimeout + maxRunTime` since it became ready: its
    /// runner has exited, the VM did not power off (a lost node, a hung shutdown).
    Overran,
    /// Ready for `registrationTimeout` and its runner never registered (a wrong token, an
    /// unreachable CircleCI address).
    Unregistered,
}

impl Reclaim {
    pub const ALL: [Reclaim; 4] = [
        Self::FailedToStart,
        Self::StartTimeout,
        Self::Overran,
        Self::Unregistered,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FailedToStart => "failed_to_start",
            Self::StartTimeout => "start_timeout",
            Self::Overran => "overran",
            Self::Unregistered => "unregistered",
        }
    }

    /// What an operator should check, for the Warning Event.
    pub const fn hint(self) -> &'static str {
        match self {
            Self::FailedToStart => {
                "the VM could not be scheduled or its image pulled: check cluster capacity, quotas and the image"
            }
            Self::StartTimeout => {
                "the VM never became ready: check its virt-launcher pod, the userdata Secret and ResourceQuotas"
            }
            Self::Overran => {
                "the VM outlived idleTimeout plus maxRunTime without powering off: check its node and the guest's shutdown"
            }
            Self::Unregistered => {
                "the VM's runner never registered with CircleCI: check the resource-class token and that the guest reaches the CircleCI address"
            }
        }
    }
}

/// What the planner makes of one VM (not being deleted) at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Starting or running, and may be (about to be) running a job: never deleted.
    Live,
    /// Stopped by itself or failed to start for sure: safe to delete.
    Finished,
    /// Did not stop, but cannot hold a job: safe to delete.
    Reclaim(Reclaim),
    /// Running but not ready past its start timeout: not capacity, never deleted.
    Unready,
}

/// Judge `vm` at `now`; with the verdict, when it would change if nothing else did (for the
/// planner's `revisit_at`). `idle_timeout` is the class's: without one a ready VM may idle
/// forever, so it is never reclaimed as overrun.
pub fn judge(
    vm: &Vm,
    healing: &Healing,
    idle_timeout: Option<Duration>,
    now: Timestamp,
) -> (Verdict, Option<Timestamp>) {
    match vm.phase {
        VmPhase::Stopped | VmPhase::FailedToStart => (Verdict::Finished, None),
        VmPhase::Starting => {
            let timed_out = vm.created_at.saturating_add(healing.start_timeout);
            let failed = match vm.failing {
                Some(f) if f.kind == FailingKind::CrashLoop => Some(f.since),
                Some(f) => Some(f.since.saturating_add(healing.failing_timeout)),
                None => None,
            };
            if failed.is_some_and(|at| at <= now) {
                return (Verdict::Reclaim(Reclaim::FailedToStart), None);
            }
            if timed_out <= now {
                return (Verdict::Reclaim(Reclaim::StartTimeout), None);
            }
            (
                Verdict::Live,
                Some(failed.map_or(timed_out, |f| f.min(timed_out))),
            )
        }
        VmPhase::Running => {
            let ready = vm.ready_at.unwrap_or(vm.created_at);
            let register_by = ready.saturating_add(healing.registration_timeout);
            let unregistered = (vm.registered == Some(false)).then_some(register_by);
            let overran = idle_timeout.map(|idle| {
                register_by
                    .saturating_add(idle)
                    .saturating_add(healing.max_run_time)
            });
            if unregistered.is_some_and(|at| at <= now) {
                return (Verdict::Reclaim(Reclaim::Unregistered), None);
            }
            if overran.is_some_and(|at| at <= now) {
                return (Verdict::Reclaim(Reclaim::Overran), None);
            }
            let next = match (unregistered, overran) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if vm.ready_at.is_none() {
                let unready_at = vm.created_at.saturating_add(healing.start_timeout);
                if unready_at <= now {
                    return (Verdict::Unready, next);
                }
                return (
                    Verdict::Live,
                    Some(next.map_or(unready_at, |n| n.min(unready_at))),
                );
            }
            (Verdict::Live, next)
        }
    }
}

/// The circuit breaker's memory: VMs reclaimed as unregistered in a row. Small and plain so the
/// controller can keep it across restarts (e.g. in a pool annotation); losing it only lets the
/// class scale out again until the breaker trips anew, never deletes anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Breaker {
    strikes: u32,
    /// Creation time of the last VM counted: a VM created after it that registers closes the
    /// breaker (the cause was fixed); older registered VMs do not.
    last_strike_created: Option<Timestamp>,
    /// VMs already counted (a reclaimed VM stays visible until its delete lands).
    counted: Vec<crate::ports::VmId>,
}

impl Breaker {
    /// A breaker restored from what was kept of it.
    pub fn restore(strikes: u32, last_strike_created: Option<Timestamp>) -> Self {
        Self {
            strikes,
            last_strike_created,
            counted: Vec::new(),
        }
    }

    pub fn strikes(&self) -> u32 {
        self.strikes
    }

    pub fn last_strike_created(&self) -> Option<Timestamp> {
        self.last_strike_created
    }

    pub fn is_open(&self, threshold: u32) -> bool {
        threshold > 0 && self.strikes >= threshold
    }

    /// Count this cycle's unregistered reclaims and close on a newer VM that registered.
    pub(crate) fn observe<'a>(&mut self, judged: impl Iterator<Item = (&'a Vm, Verdict)> + Clone) {
        self.counted
            .retain(|id| judged.clone().any(|(vm, _)| &vm.id == id));
        for (vm, verdict) in judged.clone() {
            if verdict == Verdict::Reclaim(Reclaim::Unregistered) && !self.counted.contains(&vm.id)
            {
                self.counted.push(vm.id.clone());
                self.strikes = self.strikes.saturating_add(1);
                self.last_strike_created = Some(
                    self.last_strike_created
                        .map_or(vm.created_at, |t| t.max(vm.created_at)),
                );
            }
        }
        let fixed = judged.clone().any(|(vm, _)| {
            vm.registered == Some(true)
                && self
                    .last_strike_created
                    .is_none_or(|last| vm.created_at > last)
        });
        if fixed && self.strikes > 0 {
            self.strikes = 0;
            self.last_strike_created = None;
        }
    }
}
