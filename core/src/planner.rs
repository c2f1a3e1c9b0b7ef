//! The planner: demand and fleet state in, a plan out. Pure, so the controller and the
//! simulator run the very same decisions.
//!
//! Never killing a job comes down to one rule kept here: only VMs that cannot hold a job appear
//! in a plan for deletion: finished ones (stopped or failed to start) and the ones the healing
//! rules reclaim (`healing::judge`). Scale-in happens by retiring such VMs, never by picking a
//! live one.
//!
//! When demand is unknown (CircleCI unreachable, a bad token, a long 429 pause) the planner runs
//! degraded: it keeps the pool at its current size (at least the floor) and replaces finished
//! VMs, so capacity survives an outage of any length; runners still claim jobs meanwhile.
//!
//! A long outage with jobs still arriving would leave every job beyond the kept pool waiting
//! until CircleCI answers, so the degraded pool follows what the fleet shows of demand: a VM
//! that powers off before its idle timeout could fire took a job (the queue reached it), and is
//! replaced by two; one that idled out found no job, and is not replaced while the pool is above
//! its size when the outage began. This starts once demand has been unknown for
//! `GROW_AFTER`: a failed poll or two keep the pool as it is. (`Degraded`)
//!
//! Running VMs that are not ready past their start timeout (`Verdict::Unready`: a lost node)
//! are kept but not counted as capacity: the pool grows by one for each, up to `maxReplicas`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::domain::{Duration, Timestamp};
use crate::forecast::Forecaster;
use crate::healing::{Breaker, Reclaim, Verdict, judge};
use crate::policy::{Controls, DelayWindow, Scaling, Schedule};
use crate::ports::{Demand, FleetState, Vm, VmId, VmPhase};

/// A VM named in a plan: its UID (the identity checked before deleting), its name, and why it
/// may go although it did not stop by itself (`None`: it did stop, or failed to start for sure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRef {
    pub id: VmId,
    pub name: Arc<str>,
    pub reclaim: Option<Reclaim>,
}

impl From<&Vm> for VmRef {
    fn from(vm: &Vm) -> Self {
        Self {
            id: vm.id.clone(),
            name: vm.name.clone(),
            reclaim: None,
        }
    }
}

/// What to do to a class's pool.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The pool's `replicas` after the plan.
    pub target_replicas: u32,
    /// VMs that cannot hold a job to delete without replacement (the pool shrinks by one each).
    pub retire: Vec<VmRef>,
    /// VMs that cannot hold a job to delete and have the pool replace with fresh ones.
    pub recycle: Vec<VmRef>,
}

impl Plan {
    /// Nothing to do against this fleet.
    pub fn is_noop(&self, fleet: &FleetState) -> bool {
        fleet.spec_replicas == Some(self.target_replicas)
            && self.retire.is_empty()
            && self.recycle.is_empty()
    }

    /// The VMs the plan deletes although they did not stop by themselves.
    pub fn reclaims(&self) -> impl Iterator<Item = (&VmRef, Reclaim)> {
        self.retire
            .iter()
            .chain(&self.recycle)
            .filter_map(|r| r.reclaim.map(|why| (r, why)))
    }
}

/// The planner's memory between cycles. Losing it (a restart) is always safe: the scale-down
/// hold, the breaker's count and what the predictive control learned are forgotten (the class
/// falls back to its floor and buffer until it learns again), and none ever lets a live VM be
/// deleted.
#[derive(Debug, Clone, Default)]
pub struct PlannerState {
    delay: DelayWindow,
    forecast: Forecaster,
    /// Schedules change only on minute boundaries; which one is active is cached per minute.
    schedule_cache: Option<ScheduleCache>,
    breaker: Breaker,
    /// Set while demand is unknown.
    degraded: Option<Degraded>,
}

/// How long demand must have been unknown before the degraded pool follows the fleet: longer
/// than a failed poll or two (a 10 s timeout, a short 429 pause).
const GROW_AFTER: Duration = Duration::from_secs(60);

/// The degraded pool's memory: its size when demand went unknown (never gone below), its size
/// now, when the running VMs became ready (the KubeVirt adapter reports a stopped VM's readiness
/// no more) and the stopped VMs already counted (a delete may fail and leave one for the next
/// cycle). Lost on a restart like the rest: the pool then starts from its size at that moment.
#[derive(Debug, Clone)]
struct Degraded {
    since: Timestamp,
    floor: u32,
    size: u32,
    ready: HashMap<VmId, Timestamp>,
    counted: HashSet<VmId>,
}

impl Degraded {
    fn new(size: u32, since: Timestamp) -> Self {
        Self {
            since,
            floor: size,
            size,
            ready: HashMap::new(),
            counted: HashSet::new(),
        }
    }

    /// Follow this cycle's fleet: +1 for each VM seen to stop before its idle timeout could
    /// fire (it ran a job), -1 for each seen to stop after it (it idled out), never below the
    /// floor nor above `cap`; the pool size to keep.
    fn observe<'a>(
        &mut self,
        judged: impl Iterator<Item = (&'a Vm, Verdict)> + Clone,
        idle_timeout: Duration,
        now: Timestamp,
        cap: u32,
    ) -> u32 {
        for (vm, verdict) in judged.clone() {
            if vm.phase == VmPhase::Running
                && verdict == Verdict::Live
                && let Some(at) = vm.ready_at
            {
                self.ready.entry(vm.id.clone()).or_insert(at);
            }
            if vm.deleting || vm.phase != VmPhase::Stopped || self.counted.contains(&vm.id) {
                continue;
            }
            let Some(&ready) = self.ready.get(&vm.id) else {
                continue;
            };
            self.counted.insert(vm.id.clone());
            if now.since(self.since) < GROW_AFTER {
                continue;
            }
            if now.since(ready) < idle_timeout {
                self.size = self.size.saturating_add(1);
            } else {
                self.size = self.size.saturating_sub(1);
            }
        }
        self.size = self.size.clamp(self.floor.min(cap), cap.max(self.floor));
        let present: HashSet<&VmId> = judged.map(|(vm, _)| &vm.id).collect();
        self.ready.retain(|id, _| present.contains(id));
        self.counted.retain(|id| present.contains(id));
        self.size
    }
}

impl PlannerState {
    /// A fresh state with a breaker the controller kept across a restart.
    pub fn with_breaker(breaker: Breaker) -> Self {
        Self {
            breaker,
            ..Self::default()
        }
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}

/// The schedule active during one minute, for the schedules it was found among (a reload may
/// change them mid-minute).
#[derive(Debug, Clone)]
struct ScheduleCache {
    minute: i64,
    schedules: Vec<Schedule>,
    active: Option<usize>,
}

/// VMs of a fleet by phase, leaving out the ones already being deleted. Starting and running
/// count only live VMs; the ones the healing rules reclaim count in `reclaimable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FleetCounts {
    pub starting: u32,
    pub running: u32,
    pub stopped: u32,
    pub failed_to_start: u32,
    pub deleting: u32,
    /// Starting or running VMs that cannot hold a job (`healing::Reclaim`).
    pub reclaimable: u32,
    /// Running VMs not ready past their start timeout (`Verdict::Unready`): kept, not capacity.
    pub unready: u32,
}

impl FleetCounts {
    /// By phase alone, with no VM judged reclaimable.
    pub fn of(fleet: &FleetState) -> Self {
        Self::judged(fleet.vms.iter().map(|vm| {
            let verdict = if vm.phase.is_finished() {
                Verdict::Finished
            } else {
                Verdict::Live
            };
            (vm, verdict)
        }))
    }

    fn judged<'a>(vms: impl Iterator<Item = (&'a Vm, Verdict)>) -> Self {
        let mut c = Self::default();
        for (vm, verdict) in vms {
            let slot = if vm.deleting {
                &mut c.deleting
            } else if let Verdict::Reclaim(_) = verdict {
                &mut c.reclaimable
            } else if verdict == Verdict::Unready {
                &mut c.unready
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

    /// VMs that exist and may be running a job or about to, counted as capacity: never deleted.
    pub fn live(&self) -> u32 {
        self.starting + self.running
    }

    /// Every VM no plan may delete: the live ones and the unready ones.
    pub fn held(&self) -> u32 {
        self.live() + self.unready
    }

    /// VMs a plan may delete.
    pub fn finished(&self) -> u32 {
        self.stopped + self.failed_to_start + self.reclaimable
    }
}

/// One cycle's decision, with what went into it (for the log line and the metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `None`: demand is unknown this cycle and the planner ran degraded (kept the pool).
    pub demand: Option<Demand>,
    pub controls: Controls,
    /// The schedule whose overrides are in force.
    pub schedule: Option<String>,
    /// VMs the predictive control asks to keep warm above demand (0 when it is off).
    pub warm: u32,
    /// The rule's result before `scaleDownDelay` (Runner Provisioner 0.1.0's documented `desired_vms` when no extras).
    pub desired_now: u32,
    /// The number the plan aims for (`desired_vms` in the log).
    pub desired: u32,
    pub counts: FleetCounts,
    pub plan: Plan,
    /// VMs reclaimed as unregistered in a row, and whether that holds the class at its floor.
    pub breaker_strikes: u32,
    pub breaker_open: bool,
    /// When the same inputs could give a different decision (a scale-down hold ending, a
    /// schedule boundary, a grace period running out). Until then, with no change in demand or
    /// fleet, the plan stands.
    pub revisit_at: Option<Timestamp>,
}

impl Decision {
    pub fn degraded(&self) -> bool {
        self.demand.is_none()
    }
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Decide a class's plan for this cycle. `demand` is `None` when it could not be polled: the
/// pool is then kept at its current size (never below the floor) and finished VMs replaced.
pub fn decide(
    scaling: &Scaling,
    demand: Option<Demand>,
    fleet: &FleetState,
    now: Timestamp,
    state: &mut PlannerState,
) -> Decision {
    let (controls, schedule, schedule_revisit) = controls_at(scaling, now, state);
    let mut revisit_at = schedule_revisit;
    let verdicts: Vec<Verdict> = fleet
        .vms
        .iter()
        .map(|vm| {
            if vm.deleting {
                return Verdict::Finished;
            }
            let (verdict, changes_at) = judge(vm, &scaling.healing, scaling.idle_timeout, now);
            revisit_at = earliest(revisit_at, changes_at);
            verdict
        })
        .collect();
    let judged = fleet.vms.iter().zip(verdicts.iter().copied());
    let counts = FleetCounts::judged(judged.clone());
    state
        .breaker
        .observe(judged.clone().filter(|(vm, _)| !vm.deleting));
    let breaker_open = state.breaker.is_open(scaling.healing.breaker_threshold);
    let mut warm = 0;
    let (desired_now, desired) = match demand {
        Some(demand) => {
            warm = match &controls.predictive {
                Some(p) => {
                    state.forecast.observe(now, demand, fleet, p.recent_window);
                    revisit_at = earliest(revisit_at, state.forecast.revisit_at(now, p));
                    state.forecast.forecast(now, p).warm
                }
                None => 0,
            };
            let mut wanted = controls.desired(demand, counts.running, warm);
            if breaker_open {
                // Half-open: the floor, or one VM to find out whether runners register again.
                wanted = wanted.min(controls.min_replicas.max(1));
            }
            let (desired, hold_until) = state.delay.hold(wanted, now, controls.scale_down_delay);
            revisit_at = earliest(revisit_at, hold_until);
            (wanted, desired)
        }
        None => {
            // The pool's size already counts a replacement for each unready VM.
            let spec = fleet.spec_replicas.unwrap_or(0);
            let mut keep = spec
                .saturating_sub(counts.unready)
                .max(controls.min_replicas);
            if let Some(idle) = scaling.idle_timeout {
                let cap = controls
                    .max_replicas
                    .saturating_sub(counts.unready)
                    .max(keep);
                keep = state
                    .degraded
                    .get_or_insert_with(|| Degraded::new(keep, now))
                    .observe(judged.clone(), idle, now, cap);
            }
            (keep, keep)
        }
    };
    if demand.is_some() {
        state.degraded = None;
    }
    // Unready VMs are replaced up to `maxReplicas` (or the pool's size, when larger and kept).
    let cap = match demand {
        Some(_) => controls.max_replicas,
        None => controls.max_replicas.max(fleet.spec_replicas.unwrap_or(0)),
    };
    let plan = plan_with(desired, cap, judged, counts);
    Decision {
        demand,
        controls,
        schedule,
        warm,
        desired_now,
        desired,
        counts,
        plan,
        breaker_strikes: state.breaker.strikes(),
        breaker_open,
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

/// The plan that brings `fleet` to `desired` live VMs without touching a live one, judging
/// VMs by phase alone (no healing rules).
///
/// Live VMs (starting, running) stay. When fewer than `desired` are live, finished VMs are
/// recycled (deleted, the pool replaces them) and the pool grows for the rest. Finished VMs not
/// needed are retired (deleted, the pool shrinks). When more than `desired` are live, the target
/// stays at the live count and follows it down as VMs stop by themselves.
pub fn plan_for(desired: u32, fleet: &FleetState) -> Plan {
    let judged = fleet.vms.iter().map(|vm| {
        let verdict = if vm.phase.is_finished() {
            Verdict::Finished
        } else {
            Verdict::Live
        };
        (vm, verdict)
    });
    plan_with(
        desired,
        desired,
        judged.clone(),
        FleetCounts::judged(judged),
    )
}

/// `plan_for` over judged VMs, with their counts already taken (`decide` has them): `desired`
/// VMs of capacity, plus one for each unready VM as long as the pool stays within `cap`.
fn plan_with<'a>(
    desired: u32,
    cap: u32,
    judged: impl Iterator<Item = (&'a Vm, Verdict)>,
    counts: FleetCounts,
) -> Plan {
    let wanted = desired.saturating_add(counts.unready).min(cap.max(desired));
    let held = counts.held();
    let target_replicas = wanted.max(held);
    if counts.finished() == 0 {
        return Plan {
            target_replicas,
            ..Plan::default()
        };
    }
    let mut finished: Vec<(&Vm, Option<Reclaim>)> = judged
        .filter(|(vm, _)| !vm.deleting)
        .filter_map(|(vm, verdict)| match verdict {
            Verdict::Live | Verdict::Unready => None,
            Verdict::Finished => Some((vm, None)),
            Verdict::Reclaim(why) => Some((vm, Some(why))),
        })
        .collect();
    // Recycle stopped VMs before failed or reclaimed ones (those may fail again), oldest first;
    // retire what is left.
    let key = |(vm, why): &(&Vm, Option<Reclaim>)| {
        (
            vm.phase != VmPhase::Stopped || why.is_some(),
            vm.created_at,
            vm.id.clone(),
        )
    };
    finished.sort_by_key(key);
    let recycle_count = (wanted.saturating_sub(held) as usize).min(finished.len());
    let (recycle, retire) = finished.split_at(recycle_count);
    let refs = |list: &[(&Vm, Option<Reclaim>)]| {
        list.iter()
            .map(|(vm, why)| VmRef {
                reclaim: *why,
                ..VmRef::from(*vm)
            })
            .collect()
    };
    Plan {
        target_replicas,
        retire: refs(retire),
        recycle: refs(recycle),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(id: &str, phase: VmPhase, created: i64) -> Vm {
        Vm::new(
            VmId::new(id),
            Arc::from(format!("pool-{id}")),
            Timestamp::from_unix_millis(created),
            phase,
        )
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
            Some(Demand::default()),
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
        let d = decide(
            &scaling(3, 20),
            Some(Demand::default()),
            &fleet,
            t(0),
            &mut state,
        );
        assert_eq!((d.desired, d.schedule.as_deref()), (3, Some("always")));
        // A reload seconds later, in the same minute: a new floor, then a new schedule cap.
        let d = decide(
            &scaling(5, 20),
            Some(Demand::default()),
            &fleet,
            t(1),
            &mut state,
        );
        assert_eq!(d.desired, 5);
        let busy = Demand {
            unclaimed: 30,
            running: 0,
        };
        let d = decide(&scaling(5, 8), Some(busy), &fleet, t(2), &mut state);
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
