//! Properties of the planner over random policies, demands and fleets: the rules that keep jobs
//! alive and pools sized, checked far beyond the hand-written examples.

use std::collections::HashSet;
use std::sync::Arc;

use proptest::prelude::*;
use provisioner_core::forecast::{Predictive, ServiceLevel};
use provisioner_core::{
    Demand, Duration, FleetState, Plan, PlannerState, Replicas, Scaling, Timestamp, Vm, VmId,
    VmPhase, decide,
};

fn scaling() -> impl Strategy<Value = Scaling> {
    (0u32..8, 0u32..30, 0u32..4, 0u32..4, 0u64..600, 0u32..4).prop_map(
        |(min, span, headroom, surge, delay, buffer)| Scaling {
            min_replicas: Replicas::new(min),
            max_replicas: Replicas::new(min + span),
            headroom: Replicas::new(headroom),
            max_surge: Replicas::new(surge),
            scale_down_delay: Duration::from_secs(delay),
            idle_buffer: Replicas::new(buffer),
            ..Scaling::default()
        },
    )
}

fn demand() -> impl Strategy<Value = Demand> {
    (0u32..60, 0u32..60).prop_map(|(unclaimed, running)| Demand { unclaimed, running })
}

fn phase() -> impl Strategy<Value = VmPhase> {
    prop::sample::select(VmPhase::ALL.to_vec())
}

fn fleet() -> impl Strategy<Value = FleetState> {
    (
        prop::collection::vec((phase(), any::<bool>(), 0i64..1_000), 0..40),
        prop::option::of(0u32..50),
    )
        .prop_map(|(vms, spec_replicas)| FleetState {
            spec_replicas,
            vms: vms
                .into_iter()
                .enumerate()
                .map(|(i, (phase, deleting, created))| Vm {
                    id: VmId::new(format!("uid-{i}")),
                    name: Arc::from(format!("pool-{i}")),
                    created_at: Timestamp::from_unix_millis(created),
                    ready_at: None,
                    phase,
                    // Most VMs are not being deleted.
                    deleting: deleting && i % 4 == 0,
                    failing: None,
                    registered: None,
                })
                .collect(),
        })
}

fn live(fleet: &FleetState) -> u32 {
    fleet
        .vms
        .iter()
        .filter(|vm| !vm.deleting && !vm.phase.is_finished())
        .count() as u32
}

fn ready(fleet: &FleetState) -> u32 {
    fleet
        .vms
        .iter()
        .filter(|vm| !vm.deleting && vm.phase == VmPhase::Running)
        .count() as u32
}

/// The fleet after a plan was carried out: deleted VMs gone, the pool at `target_replicas`
/// live VMs with fresh ones starting.
fn apply(fleet: &FleetState, plan: &Plan) -> FleetState {
    let deleted: HashSet<&str> = plan
        .retire
        .iter()
        .chain(&plan.recycle)
        .map(|r| r.id.as_str())
        .collect();
    let mut vms: Vec<Vm> = fleet
        .vms
        .iter()
        .filter(|vm| !deleted.contains(vm.id.as_str()))
        .cloned()
        .collect();
    let present = vms.iter().filter(|vm| !vm.deleting).count() as u32;
    for i in present..plan.target_replicas {
        vms.push(Vm {
            id: VmId::new(format!("new-{i}")),
            name: Arc::from(format!("pool-new-{i}")),
            created_at: Timestamp::from_unix_millis(5_000),
            ready_at: None,
            phase: VmPhase::Starting,
            deleting: false,
            failing: None,
            registered: None,
        });
    }
    FleetState {
        spec_replicas: Some(plan.target_replicas),
        vms,
    }
}

const NOW: Timestamp = Timestamp::from_unix_millis(10_000);

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_plan_deletes_a_live_vm(s in scaling(), d in demand(), f in fleet()) {
        let decision = decide(&s, Some(d), &f, NOW, &mut PlannerState::default());
        let mut seen = HashSet::new();
        for r in decision.plan.retire.iter().chain(&decision.plan.recycle) {
            let vm = f.vms.iter().find(|vm| vm.id == r.id).expect("planned VM exists");
            prop_assert!(vm.phase.is_finished(), "plan deletes {:?} in phase {:?}", vm.id, vm.phase);
            prop_assert!(!vm.deleting, "plan deletes {:?} twice", vm.id);
            prop_assert!(seen.insert(r.id.clone()), "{:?} planned twice", r.id);
        }
    }

    #[test]
    fn target_stays_within_bounds_unless_live_vms_hold_it(s in scaling(), d in demand(), f in fleet()) {
        let decision = decide(&s, Some(d), &f, NOW, &mut PlannerState::default());
        let target = decision.plan.target_replicas;
        let (min, max) = (s.min_replicas.get(), s.max_replicas.get());
        prop_assert!(target <= max.max(live(&f)), "target {target} above max {max} and live {}", live(&f));
        let floor = if s.max_surge.get() > 0 { min.min(ready(&f) + s.max_surge.get()) } else { min };
        prop_assert!(target >= floor, "target {target} below {floor}");
        prop_assert!(target >= live(&f), "target {target} below live {}", live(&f));
    }

    #[test]
    fn target_is_monotone_in_demand(s in scaling(), d in demand(), extra in demand(), f in fleet()) {
        let more = Demand { unclaimed: d.unclaimed + extra.unclaimed, running: d.running + extra.running };
        let low = decide(&s, Some(d), &f, NOW, &mut PlannerState::default()).plan.target_replicas;
        let high = decide(&s, Some(more), &f, NOW, &mut PlannerState::default()).plan.target_replicas;
        prop_assert!(low <= high, "demand {d:?} -> {low}, more demand {more:?} -> {high}");
    }

    #[test]
    fn planning_again_on_the_result_changes_nothing(s in scaling(), d in demand(), f in fleet()) {
        let mut state = PlannerState::default();
        let first = decide(&s, Some(d), &f, NOW, &mut state);
        let after = apply(&f, &first.plan);
        let second = decide(&s, Some(d), &after, NOW, &mut state);
        prop_assert!(second.plan.is_noop(&after), "first {:?}, then {:?}", first.plan, second.plan);
    }

    /// With the predictive control learning over a history of cycles: every plan stays within
    /// maxReplicas (unless live VMs hold it) and names no live VM; after a restart (fresh
    /// state) the decision is the one without the control: the floor and buffer.
    #[test]
    fn the_predictive_control_is_bounded_and_restart_safe(
        s in scaling(),
        bp in 100u16..=9990,
        window in 1u64..1800,
        history in prop::collection::vec((0i64..600_000, demand(), fleet()), 1..25),
    ) {
        let predictive = Predictive {
            service_level: ServiceLevel::from_fraction(f64::from(bp) / 10_000.0).expect("level"),
            recent_window: Duration::from_secs(window),
            ..Predictive::default()
        };
        let on = Scaling { predictive: Some(predictive), ..s.clone() };
        let mut state = PlannerState::default();
        let mut now = NOW.unix_millis();
        for (after, d, f) in &history {
            now += after;
            let decision = decide(&on, Some(*d), f, Timestamp::from_unix_millis(now), &mut state);
            let target = decision.plan.target_replicas;
            prop_assert!(target <= s.max_replicas.get().max(live(f)), "target {target} above max and live");
            for r in decision.plan.retire.iter().chain(&decision.plan.recycle) {
                let vm = f.vms.iter().find(|vm| vm.id == r.id).expect("planned VM exists");
                // A VM the healing rules reclaim (stuck starting, outlived its runner) is judged
                // by their own properties; the forecast must never add any other live VM.
                prop_assert!(vm.phase.is_finished() || r.reclaim.is_some(), "plan deletes live {:?}", vm.id);
            }
        }
        let (_, d, f) = history.last().expect("one cycle");
        let at = Timestamp::from_unix_millis(now);
        let restarted = decide(&on, Some(*d), f, at, &mut PlannerState::default());
        let without = decide(&s, Some(*d), f, at, &mut PlannerState::default());
        prop_assert_eq!(restarted.plan, without.plan);
        prop_assert_eq!(restarted.warm, 0);
    }

    #[test]
    fn an_idle_stopped_pool_comes_back_to_min(min in 0u32..8, span in 0u32..20, stopped in 0usize..30) {
        let s = Scaling { min_replicas: Replicas::new(min), max_replicas: Replicas::new(min + span), ..Scaling::default() };
        let f = FleetState {
            spec_replicas: Some(stopped as u32),
            vms: (0..stopped)
                .map(|i| Vm {
                    id: VmId::new(format!("uid-{i}")),
                    name: Arc::from(format!("pool-{i}")),
                    created_at: Timestamp::from_unix_millis(i as i64),
                    ready_at: None,
                    phase: VmPhase::Stopped,
                    deleting: false,
                    failing: None,
                    registered: None,
                })
                .collect(),
        };
        let decision = decide(&s, Some(Demand::default()), &f, NOW, &mut PlannerState::default());
        prop_assert_eq!(decision.plan.target_replicas, min);
        prop_assert_eq!(decision.plan.retire.len() + decision.plan.recycle.len(), stopped);
        prop_assert_eq!(decision.plan.recycle.len(), stopped.min(min as usize));
    }

    #[test]
    fn a_lowered_max_follows_running_vms_down(running in 1u32..20, new_max in 0u32..20, stop in 0u32..20) {
        let s = Scaling { min_replicas: Replicas::ZERO, max_replicas: Replicas::new(new_max), ..Scaling::default() };
        let stop = stop.min(running);
        let f = FleetState {
            spec_replicas: Some(running),
            vms: (0..running)
                .map(|i| Vm {
                    id: VmId::new(format!("uid-{i}")),
                    name: Arc::from(format!("pool-{i}")),
                    created_at: Timestamp::from_unix_millis(0),
                    ready_at: None,
                    phase: if i < stop { VmPhase::Stopped } else { VmPhase::Running },
                    deleting: false,
                    failing: None,
                    registered: None,
                })
                .collect(),
        };
        let busy = Demand { unclaimed: 0, running: running - stop };
        let plan = decide(&s, Some(busy), &f, NOW, &mut PlannerState::default()).plan;
        // Never below the VMs still running, never above what max or those VMs need.
        prop_assert_eq!(plan.target_replicas, new_max.min(running - stop).max(running - stop));
        prop_assert!(plan.recycle.is_empty());
        prop_assert_eq!(plan.retire.len() as u32, stop);
    }
}

#[test]
fn scale_down_delay_holds_the_pool_after_demand_drops() {
    let s = Scaling {
        scale_down_delay: Duration::from_secs(300),
        ..Scaling::default()
    };
    let mut state = PlannerState::default();
    let stopped = |n: usize| FleetState {
        spec_replicas: Some(8),
        vms: (0..n)
            .map(|i| Vm {
                id: VmId::new(format!("uid-{i}")),
                name: Arc::from(format!("pool-{i}")),
                created_at: Timestamp::from_unix_millis(0),
                ready_at: None,
                phase: VmPhase::Stopped,
                deleting: false,
                failing: None,
                registered: None,
            })
            .collect(),
    };
    let t = |s: i64| Timestamp::from_unix_millis(s * 1000);
    let busy = decide(
        &s,
        Some(Demand {
            unclaimed: 8,
            running: 0,
        }),
        &FleetState::default(),
        t(0),
        &mut state,
    );
    assert_eq!(busy.desired, 8);
    let calm = decide(&s, Some(Demand::default()), &stopped(8), t(60), &mut state);
    assert_eq!((calm.desired_now, calm.desired), (3, 8));
    assert_eq!(
        calm.plan.recycle.len(),
        8,
        "finished VMs are replaced while the hold lasts"
    );
    assert_eq!(calm.revisit_at, Some(t(360)));
    let later = decide(&s, Some(Demand::default()), &stopped(8), t(360), &mut state);
    assert_eq!(later.desired, 3);
    assert_eq!((later.plan.recycle.len(), later.plan.retire.len()), (3, 5));
}
