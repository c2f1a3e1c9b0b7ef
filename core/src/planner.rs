//! The planner: demand and fleet state in, a plan out. Pure, so the controller and the
//! simulator run the very same decisions.
//!
//! Never killing a job comes down to one rule kept here: only finished VMs (stopped or failed to
//! start) ever appear in a plan for deletion. Scale-in happens by retiring VMs that stopped by
//! themselves, never by picking a live one.

use std::sync::Arc;

use crate::domain::Timestamp;
use crate::policy::{Controls, DelayWindow, Scaling, Schedule};
use crate::ports::{Demand, FleetState, Vm, VmId, VmPhase};

/// A VM named in a plan: its UID (the identity checked before deleting) and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRef {
    pub id: VmId,
    pub name: Arc<str>,
}

impl From<&Vm> for VmRef {
    fn from(vm: &Vm) -> Self {
        Self {
            id: vm.id.clone(),
            name: vm.name.clone(),
        }
    }
}

/// What to do to a class's pool.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The pool's `replicas` after the plan.
    pub target_replicas: u32,
    /// Finished VMs to delete without replacement (the pool shrinks by one each).
    pub retire: Vec<VmRef>,
    /// Finished VMs to delete and have the pool replace with fresh ones.
    pub recycle: Vec<VmRef>,
}

impl Plan {
    /// Nothing to do against this fleet.
    pub fn is_noop(&self, fleet: &FleetState) -> bool {
        fleet.spec_replicas == Some(self.target_replicas)
            && self.retire.is_empty()
            && self.recycle.is_empty()
    }
}

/// The planner's memory between cycles. Losing it (a restart) is always safe: only the
/// scale-down hold is forgotten, and scale-in never touches a live VM anyway.
#[derive(Debug, Clone, Default)]
pub struct PlannerState {
    delay: DelayWindow,
    /// Schedules change only on minute boundaries; which one is active is cached per minute.
    schedule_cache: Option<ScheduleCache>,
}

/// The schedule active during one minute, for the schedules it was found among (a reload may
/// change them mid-minute).
#[derive(Debug, Clone)]
struct ScheduleCache {
    minute: i64,
    schedules: Vec<Schedule>,
    active: Option<usize>,
}

/// VMs of a fleet by phase, leaving out the ones already being deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FleetCounts {
    pub starting: u32,
    pub running: u32,
    pub stopped: u32,
    pub failed_to_start: u32,
    pub deleting: u32,
}

impl FleetCounts {
    pub fn of(fleet: &FleetState) -> Self {
        let mut c = Self::default();
        for vm in &fleet.vms {
            let slot = if vm.deleting {
                &mut c.deleting
            } else {
                match vm.phase {
                    VmPhase::Starting => &mut c.starting,
                    VmPhase::Running => &mut c.running,
                    VmPhase::Stopped => &mut c.stopped,
                    VmPhase::FailedToStart => &mut c.failed_to_start,
                }
            };
            *slot += 1;
        }
        c
    }

    /// VMs that exist and may be running a job or about to: never deleted.
    pub fn live(&self) -> u32 {
        self.starting + self.running
    }

    pub fn finished(&self) -> u32 {
        self.stopped + self.failed_to_start
    }
}

/// One cycle's decision, with what went into it (for the log line and the metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub demand: Demand,
    pub controls: Controls,
    /// The schedule whose overrides are in force.
    pub schedule: Option<String>,
    /// The rule's result before `scaleDownDelay` (Runner Provisioner 0.1.0's documented `desired_vms` when no extras).
    pub desired_now: u32,
    /// The number the plan aims for (`desired_vms` in the log).
    pub desired: u32,
    pub counts: FleetCounts,
    pub plan: Plan,
    /// When the same inputs could give a different decision (a scale-down hold ending, a
    /// schedule boundary). Until then, with no change in demand or fleet, the plan stands.
    pub revisit_at: Option<Timestamp>,
}

/// Decide a class's plan for this cycle.
pub fn decide(
    scaling: &Scaling,
    demand: Demand,
    fleet: &FleetState,
    now: Timestamp,
    state: &mut PlannerState,
) -> Decision {
    let (controls, schedule, schedule_revisit) = controls_at(scaling, now, state);
    let counts = FleetCounts::of(fleet);
    let desired_now = controls.desired(demand, counts.running);
    let (desired, hold_until) = state
        .delay
        .hold(desired_now, now, controls.scale_down_delay);
    let plan = plan_with(desired, fleet, counts);
    let revisit_at = match (hold_until, schedule_revisit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Decision {
        demand,
        controls,
        schedule,
        desired_now,
        desired,
        counts,
        plan,
        revisit_at,
    }
}

fn controls_at(
    scaling: &Scaling,
    now: Timestamp,
    state: &mut PlannerState,
) -> (Controls, Option<String>, Option<Timestamp>) {
    if scaling.schedules.is_empty() {
        return (scaling.base_controls(), None, None);
    }
    let minute = now.unix_millis().div_euclid(60_000);
    let next_minute = Timestamp::from_unix_millis((minute + 1) * 60_000);
    let active = match &state.schedule_cache {
        Some(cache) if cache.minute == minute && cache.schedules == scaling.schedules => {
            cache.active
        }
        _ => {
            let active = scaling.schedules.iter().position(|s| s.is_active(now));
            state.schedule_cache = Some(ScheduleCache {
                minute,
                schedules: scaling.schedules.clone(),
                active,
            });
            active
        }
    };
    let base = scaling.base_controls();
    match active.and_then(|i| scaling.schedules.get(i)) {
        Some(s) => (
            s.overrides.apply(base),
            Some(s.name.clone()),
            Some(next_minute),
        ),
        None => (base, None, Some(next_minute)),
    }
}

/// The plan that brings `fleet` to `desired` live VMs without touching a live one.
///
/// Live VMs (starting, running) stay. When fewer than `desired` are live, finished VMs are
/// recycled (deleted, the pool replaces them) and the pool grows for the rest. Finished VMs not
/// needed are retired (deleted, the pool shrinks). When more than `desired` are live, the target
/// stays at the live count and follows it down as VMs stop by themselves.
pub fn plan_for(desired: u32, fleet: &FleetState) -> Plan {
    plan_with(desired, fleet, FleetCounts::of(fleet))
}

/// `plan_for` with the fleet's counts already taken (`decide` has them).
fn plan_with(desired: u32, fleet: &FleetState, counts: FleetCounts) -> Plan {
    let live = counts.live();
    let target_replicas = desired.max(live);
    if counts.finished() == 0 {
        return Plan {
            target_replicas,
            ..Plan::default()
        };
    }
    let mut finished: Vec<&Vm> = fleet
        .vms
        .iter()
        .filter(|vm| !vm.deleting && vm.phase.is_finished())
        .collect();
    // Recycle stopped VMs before failed ones (a failed start may fail again), oldest first;
    // retire what is left.
    finished.sort_by(|a, b| {
        (a.phase == VmPhase::FailedToStart, a.created_at, &a.id).cmp(&(
            b.phase == VmPhase::FailedToStart,
            b.created_at,
            &b.id,
        ))
    });
    let recycle_count = (desired.saturating_sub(live) as usize).min(finished.len());
    let (recycle, retire) = finished.split_at(recycle_count);
    Plan {
        target_replicas,
        retire: retire.iter().map(|vm| VmRef::from(*vm)).collect(),
        recycle: recycle.iter().map(|vm| VmRef::from(*vm)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(id: &str, phase: VmPhase, created: i64) -> Vm {
        Vm {
            id: VmId::new(id),
            name: Arc::from(format!("pool-{id}")),
            created_at: Timestamp::from_unix_millis(created),
            ready_at: None,
            phase,
            deleting: false,
        }
    }

    fn fleet(replicas: u32, vms: Vec<Vm>) -> FleetState {
        FleetState {
            spec_replicas: Some(replicas),
            vms,
        }
    }

    fn ids(refs: &[VmRef]) -> Vec<&str> {
        refs.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn empty_pool_scales_out_to_min() {
        let d = decide(
            &Scaling::default(),
            Demand::default(),
            &FleetState::default(),
            Timestamp::default(),
            &mut PlannerState::default(),
        );
        assert_eq!(d.desired, 3);
        assert_eq!(
            d.plan,
            Plan {
                target_replicas: 3,
                ..Plan::default()
            }
        );
    }

    #[test]
    fn finished_vms_are_recycled_when_needed_and_retired_otherwise() {
        let f = fleet(
            5,
            vec![
                vm("a", VmPhase::Running, 1),
                vm("b", VmPhase::Stopped, 2),
                vm("c", VmPhase::Stopped, 1),
                vm("d", VmPhase::FailedToStart, 0),
                vm("e", VmPhase::Starting, 3),
            ],
        );
        let p = plan_for(3, &f);
        assert_eq!(p.target_replicas, 3);
        assert_eq!(ids(&p.recycle), ["c"]);
        assert_eq!(ids(&p.retire), ["b", "d"]);
    }

    #[test]
    fn live_vms_hold_the_target_above_desired() {
        let f = fleet(
            6,
            (0..6)
                .map(|i| vm(&i.to_string(), VmPhase::Running, i))
                .collect(),
        );
        let p = plan_for(2, &f);
        assert_eq!(
            p,
            Plan {
                target_replicas: 6,
                ..Plan::default()
            }
        );
    }

    #[test]
    fn a_changed_scaling_applies_at_once_within_a_schedule_minute() {
        use crate::cron::Cron;
        use crate::domain::Replicas;
        use crate::policy::{Overrides, Schedule, Timezone};

        let always = |max: u32| Schedule {
            name: "always".to_owned(),
            start: Cron::parse("* * * * *").expect("cron"),
            end: Cron::parse("0 0 1 1 *").expect("cron"),
            timezone: Timezone::utc(),
            overrides: Overrides {
                max_replicas: Some(Replicas::new(max)),
                ..Overrides::default()
            },
        };
        let scaling = |min: u32, max: u32| Scaling {
            min_replicas: Replicas::new(min),
            schedules: vec![always(max)],
            ..Scaling::default()
        };
        let mut state = PlannerState::default();
        let t = |s: i64| Timestamp::from_unix_millis(1_780_000_020_000 + s * 1000);
        let fleet = FleetState::default();
        let d = decide(&scaling(3, 20), Demand::default(), &fleet, t(0), &mut state);
        assert_eq!((d.desired, d.schedule.as_deref()), (3, Some("always")));
        // A reload seconds later, in the same minute: a new floor, then a new schedule cap.
        let d = decide(&scaling(5, 20), Demand::default(), &fleet, t(1), &mut state);
        assert_eq!(d.desired, 5);
        let busy = Demand {
            unclaimed: 30,
            running: 0,
        };
        let d = decide(&scaling(5, 8), busy, &fleet, t(2), &mut state);
        assert_eq!(d.desired, 8);
    }

    #[test]
    fn deleting_vms_are_left_alone() {
        let mut gone = vm("x", VmPhase::Stopped, 0);
        gone.deleting = true;
        let p = plan_for(1, &fleet(1, vec![gone]));
        assert_eq!(
            p,
            Plan {
                target_replicas: 1,
                ..Plan::default()
            }
        );
    }
}
