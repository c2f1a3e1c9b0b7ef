//! Properties of the self-healing rules: degraded mode, grace periods, reclaims and the circuit
//! breaker, against VMs whose hidden truth (whether they hold a job) the test knows.

use std::sync::Arc;

use proptest::prelude::*;
use provisioner_core::{
    Breaker, Demand, Duration, Failing, FailingKind, FleetState, Healing, PlannerState, Reclaim,
    Replicas, Scaling, Timestamp, Verdict, Vm, VmId, VmPhase, decide, judge,
};

const MIN: i64 = 60_000;
const NOW: i64 = 1_000 * 24 * 60 * MIN;

fn vm(i: usize, phase: VmPhase, created: i64) -> Vm {
    Vm::new(
        VmId::new(format!("uid-{i}")),
        Arc::from(format!("pool-{i}")),
        Timestamp::from_unix_millis(created),
        phase,
    )
}

fn healing() -> impl Strategy<Value = Healing> {
    (0i64..10, 6i64..30, 1i64..20, 0u32..5, 30i64..400).prop_map(
        |(failing, start, register, threshold, max_run)| Healing {
            failing_timeout: Duration::from_secs(failing as u64 * 60),
            start_timeout: Duration::from_secs(start as u64 * 60),
            registration_timeout: Duration::from_secs(register as u64 * 60),
            breaker_threshold: threshold,
            max_run_time: Duration::from_secs(max_run as u64 * 60),
        },
    )
}

fn scaling() -> impl Strategy<Value = Scaling> {
    (
        0u32..6,
        0u32..20,
        prop::option::of(1i64..60),
        healing(),
        0u32..3,
    )
        .prop_map(|(min, span, idle, healing, surge)| Scaling {
            min_replicas: Replicas::new(min),
            max_replicas: Replicas::new(min + span),
            idle_timeout: idle.map(|m| Duration::from_secs(m as u64 * 60)),
            max_surge: Replicas::new(surge),
            healing,
            ..Scaling::default()
        })
}

/// A VM that holds a job, consistent with the runner's own limits: it became ready, its runner
/// registered (within the registration timeout), claimed the job before idling out and the job
/// has run for less than `maxRunTime`. Registration is known (true) or unknown.
fn busy_vm(
    i: usize,
    s: &Scaling,
    boot: i64,
    register: f64,
    claim: f64,
    ran: f64,
    known: bool,
) -> Vm {
    let reg_ms = s.healing.registration_timeout.as_millis() as f64;
    let idle_ms = s.idle_timeout.map_or(1e12, |d| d.as_millis() as f64);
    let run_ms = s.healing.max_run_time.as_millis() as f64;
    let since_ready = (register * reg_ms + claim * idle_ms.min(1e10) + ran * run_ms) as i64;
    let ready = NOW - since_ready;
    let mut v = vm(i, VmPhase::Running, ready - boot);
    v.ready_at = Some(Timestamp::from_unix_millis(ready));
    v.registered = known.then_some(true);
    v
}

/// A VM's phase, age, failure status (crash loop?, for how long), ready age and registration.
type VmSpec = (VmPhase, i64, Option<(bool, i64)>, Option<i64>, Option<bool>);

/// Any VM at all: any phase, failure status, readiness and registration.
fn any_vm() -> impl Strategy<Value = VmSpec> {
    (
        prop::sample::select(VmPhase::ALL.to_vec()),
        0i64..(600 * MIN),
        prop::option::of((any::<bool>(), 0i64..(60 * MIN))),
        prop::option::of(0i64..(600 * MIN)),
        prop::option::of(any::<bool>()),
    )
}

fn build(i: usize, spec: VmSpec) -> Vm {
    let (phase, age, failing, ready_age, registered) = spec;
    let mut v = vm(i, phase, NOW - age);
    v.failing = failing.map(|(crash, since)| Failing {
        kind: if crash {
            FailingKind::CrashLoop
        } else {
            FailingKind::Waiting
        },
        since: Timestamp::from_unix_millis(NOW - since.min(age)),
    });
    v.ready_at = ready_age.map(|r| Timestamp::from_unix_millis(NOW - r.min(age)));
    v.registered = registered;
    v
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever else the fleet holds and whether demand is known, no plan names a VM that holds
    /// a job, and every VM a plan names is one that cannot.
    #[test]
    fn reclaiming_never_touches_a_vm_that_may_hold_a_job(
        s in scaling(),
        busy in prop::collection::vec((60_000i64..600_000, 0.0f64..0.999, 0.0f64..0.999, 0.0f64..0.999, any::<bool>()), 0..8),
        others in prop::collection::vec(any_vm(), 0..20),
        demand in prop::option::of((0u32..40, 0u32..40)),
        spec in prop::option::of(0u32..30),
    ) {
        let mut vms: Vec<Vm> = busy
            .iter()
            .enumerate()
            .map(|(i, (boot, r, c, d, known))| busy_vm(i, &s, *boot, *r, *c, *d, *known))
            .collect();
        let n = vms.len();
        vms.extend(others.into_iter().enumerate().map(|(i, o)| build(n + i, o)));
        let fleet = FleetState { spec_replicas: spec, vms };
        let demand = demand.map(|(unclaimed, running)| Demand { unclaimed, running });
        let d = decide(&s, demand, &fleet, at(NOW), &mut PlannerState::default());
        for r in d.plan.retire.iter().chain(&d.plan.recycle) {
            let index = fleet.vms.iter().position(|v| v.id == r.id).expect("planned VM exists");
            prop_assert!(index >= n, "plan deletes busy VM {:?} ({:?})", r.id, r.reclaim);
            let v = &fleet.vms[index];
            let (verdict, _) = judge(v, &s.healing, s.idle_timeout, at(NOW));
            prop_assert!(matches!(verdict, Verdict::Finished | Verdict::Reclaim(_)), "{verdict:?}");
            prop_assert_eq!(r.reclaim.is_some(), !v.phase.is_finished());
        }
    }

    /// Demand unknown: the pool keeps its size (never below the floor), finished and
    /// reclaimable VMs are replaced up to it, nothing live is deleted, and deciding again on
    /// the pool it left changes nothing (no growth cycle after cycle, unready VMs or not).
    #[test]
    fn degraded_mode_keeps_the_pool_and_replaces_finished_vms(
        s in scaling(),
        others in prop::collection::vec(any_vm(), 0..20),
        spec in prop::option::of(0u32..30),
    ) {
        let vms: Vec<Vm> = others.into_iter().enumerate().map(|(i, o)| build(i, o)).collect();
        let mut fleet = FleetState { spec_replicas: spec, vms };
        let d = decide(&s, None, &fleet, at(NOW), &mut PlannerState::default());
        let keep = spec.unwrap_or(0).max(s.min_replicas.get());
        let target = d.plan.target_replicas;
        prop_assert!(d.degraded());
        prop_assert!(target >= keep, "target {target} below {keep}");
        prop_assert!(target >= d.counts.held());
        let replaced = d.plan.recycle.len() as u32;
        prop_assert_eq!(replaced, (target - d.counts.held()).min(d.counts.finished()));
        fleet.spec_replicas = Some(target);
        let again = decide(&s, None, &fleet, at(NOW), &mut PlannerState::default());
        prop_assert_eq!(again.plan.target_replicas, target);
    }

    /// A long outage: the degraded pool grows by one for each VM seen to stop before its idle
    /// timeout could fire (it ran a job), never shrinks below its size when demand went
    /// unknown, stays within `maxReplicas` (or that size), deletes nothing live, and does not
    /// move at all for a blip shorter than a minute.
    #[test]
    fn the_degraded_pool_follows_finished_jobs_within_its_bounds(
        s in scaling(),
        idle_min in 1i64..30,
        n in 1usize..15,
        stopped in 0usize..15,
        later_s in prop::sample::select(vec![30i64, 120]),
    ) {
        let s = Scaling { idle_timeout: Some(Duration::from_secs(idle_min as u64 * 60)), ..s };
        let running = |i: usize| {
            let mut v = vm(i, VmPhase::Running, NOW - 3 * MIN);
            v.ready_at = Some(at(NOW - MIN));
            v
        };
        let mut fleet = FleetState { spec_replicas: Some(n as u32), vms: (0..n).map(running).collect() };
        let mut state = PlannerState::default();
        let first = decide(&s, None, &fleet, at(NOW), &mut state);
        let floor = (n as u32).max(s.min_replicas.get());
        prop_assert_eq!(first.plan.target_replicas, floor);
        let k = stopped.min(n);
        for v in fleet.vms.iter_mut().take(k) {
            v.phase = VmPhase::Stopped;
        }
        fleet.spec_replicas = Some(first.plan.target_replicas);
        let later = NOW + later_s * 1000;
        let d = decide(&s, None, &fleet, at(later), &mut state);
        let ran_jobs = later_s >= 60 && MIN + later_s * 1000 < idle_min * MIN;
        let expected = if ran_jobs {
            (floor + k as u32).min(s.max_replicas.get().max(floor))
        } else {
            floor
        };
        prop_assert_eq!(d.plan.target_replicas, expected);
        for r in d.plan.retire.iter().chain(&d.plan.recycle) {
            let v = fleet.vms.iter().find(|v| v.id == r.id).expect("planned VM exists");
            prop_assert_eq!(v.phase, VmPhase::Stopped);
        }
        // Seen again before the deletes land: counted once.
        fleet.spec_replicas = Some(d.plan.target_replicas);
        let again = decide(&s, None, &fleet, at(later + 1000), &mut state);
        prop_assert_eq!(again.plan.target_replicas, d.plan.target_replicas);
    }

    /// A running VM not ready past its start timeout (a lost node) is never deleted and does
    /// not count as capacity: the pool grows by one for each, within `maxReplicas`.
    #[test]
    fn unready_vms_are_kept_and_replaced_within_max_replicas(
        s in scaling(),
        unready in 0usize..8,
        unclaimed in 0u32..40,
        ready_before in any::<bool>(),
    ) {
        let start = s.healing.start_timeout.as_millis() as i64;
        let vms: Vec<Vm> = (0..unready)
            .map(|i| {
                let mut v = vm(i, VmPhase::Running, NOW - start - i as i64 * MIN);
                // Ready once (the adapter then reports nothing: ready_at is "ready now since").
                v.registered = ready_before.then_some(true);
                v
            })
            .collect();
        let fleet = FleetState { spec_replicas: Some(unready as u32), vms };
        let demand = Some(Demand { unclaimed, running: 0 });
        let d = decide(&s, demand, &fleet, at(NOW), &mut PlannerState::default());
        let u = unready as u32;
        prop_assert_eq!(d.counts.unready, u);
        prop_assert!(d.plan.retire.is_empty() && d.plan.recycle.is_empty());
        let max = s.max_replicas.get();
        let expected = d.desired.saturating_add(u).min(max.max(d.desired)).max(u);
        prop_assert_eq!(d.plan.target_replicas, expected);
    }

    /// The simulator's default boots (2 to 5 minutes), with runners that register, trigger no
    /// reclaim at any moment of a VM's life: starting, idle until `idleTimeout`, or busy.
    #[test]
    fn default_boot_times_never_trigger_a_reclaim(
        boot in 120_000i64..=300_000,
        t in 0.0f64..1.0,
        idle in 1i64..120,
        known in any::<bool>(),
    ) {
        let healing = Healing::default();
        let idle = Duration::from_secs(idle as u64 * 60);
        let life = boot as f64 + idle.as_millis() as f64 + healing.max_run_time.as_millis() as f64;
        let age = (t * life) as i64;
        let phase = if age < boot { VmPhase::Starting } else { VmPhase::Running };
        let mut v = vm(0, phase, NOW - age);
        if phase == VmPhase::Running {
            v.ready_at = Some(at(NOW - age + boot));
            v.registered = known.then_some(true);
        }
        let (verdict, _) = judge(&v, &healing, Some(idle), at(NOW));
        prop_assert_eq!(verdict, Verdict::Live);
        // The VMI runs a little before its Ready condition turns True: still live capacity.
        if phase == VmPhase::Running {
            v.ready_at = None;
            let (verdict, _) = judge(&v, &healing, Some(idle), at(NOW - age + boot));
            prop_assert_eq!(verdict, Verdict::Live);
        }
    }

    /// An unschedulable or image-pull status counts only after the grace; a crash loop at once.
    #[test]
    fn failing_vms_count_after_the_grace_and_crash_loops_at_once(
        h in healing(),
        failing_for in 0i64..(40 * MIN),
        age_extra in 0i64..(40 * MIN),
        crash in any::<bool>(),
    ) {
        let mut v = vm(0, VmPhase::Starting, NOW - failing_for - age_extra);
        v.failing = Some(Failing {
            kind: if crash { FailingKind::CrashLoop } else { FailingKind::Waiting },
            since: at(NOW - failing_for),
        });
        let (verdict, revisit) = judge(&v, &h, None, at(NOW));
        let age = failing_for + age_extra;
        let expected = if crash || failing_for >= h.failing_timeout.as_millis() as i64 {
            Verdict::Reclaim(Reclaim::FailedToStart)
        } else if age >= h.start_timeout.as_millis() as i64 {
            Verdict::Reclaim(Reclaim::StartTimeout)
        } else {
            Verdict::Live
        };
        prop_assert_eq!(verdict, expected);
        if let Some(r) = revisit {
            prop_assert!(r > at(NOW));
            prop_assert_ne!(judge(&v, &h, None, r).0, Verdict::Live);
        }
    }

    /// After `breakerThreshold` unregistered VMs in a row the class holds at its floor (or one
    /// probe VM) whatever the demand, until a newer VM registers; a restored breaker holds too.
    #[test]
    fn the_breaker_trips_after_n_unregistered_and_closes_when_one_registers(
        threshold in 1u32..5,
        min in 0u32..4,
        unclaimed in 10u32..50,
    ) {
        let s = Scaling {
            min_replicas: Replicas::new(min),
            max_replicas: Replicas::new(60),
            healing: Healing { breaker_threshold: threshold, ..Healing::default() },
            ..Scaling::default()
        };
        let demand = Some(Demand { unclaimed, running: 0 });
        let register = s.healing.registration_timeout.as_millis() as i64;
        let mut state = PlannerState::default();
        let mut now = NOW;
        for i in 0..threshold as usize {
            prop_assert!(!state.breaker().is_open(threshold));
            let mut v = vm(i, VmPhase::Running, now - register - 3 * MIN);
            v.ready_at = Some(at(now - register - MIN));
            v.registered = Some(false);
            let fleet = FleetState { spec_replicas: Some(1), vms: vec![v] };
            // Seen twice before its delete lands: counted once.
            for _ in 0..2 {
                let d = decide(&s, demand, &fleet, at(now), &mut state);
                prop_assert_eq!(d.plan.reclaims().count(), 1);
            }
            now += MIN;
        }
        let fleet = FleetState { spec_replicas: Some(0), vms: Vec::new() };
        let d = decide(&s, demand, &fleet, at(now), &mut state);
        prop_assert!(d.breaker_open);
        prop_assert_eq!(d.desired_now, min.max(1));
        let kept = state.breaker().clone();
        let mut restored = PlannerState::with_breaker(Breaker::restore(kept.strikes(), kept.last_strike_created()));
        prop_assert!(decide(&s, demand, &fleet, at(now), &mut restored).breaker_open);
        // A VM created after the last strike registers: closed.
        let mut fixed = vm(99, VmPhase::Running, now);
        fixed.ready_at = Some(at(now + MIN));
        fixed.registered = Some(true);
        let fleet = FleetState { spec_replicas: Some(1), vms: vec![fixed] };
        let d = decide(&s, demand, &fleet, at(now + 2 * MIN), &mut state);
        prop_assert!(!d.breaker_open);
        prop_assert_eq!(d.desired_now, unclaimed.max(min));
    }
}

#[test]
fn a_starting_vm_is_reclaimed_after_the_start_timeout_and_an_overrun_one_after_its_bound() {
    let h = Healing::default();
    let idle = Duration::from_secs(600);
    let stuck = vm(0, VmPhase::Starting, NOW - 15 * MIN);
    assert_eq!(
        judge(&stuck, &h, Some(idle), at(NOW)).0,
        Verdict::Reclaim(Reclaim::StartTimeout)
    );
    let (verdict, revisit) = judge(&stuck, &h, Some(idle), at(NOW - 1));
    assert_eq!((verdict, revisit), (Verdict::Live, Some(at(NOW))));
    // Ready at NOW - bound: registration (10m) + idle (10m) + maxRunTime (5h).
    let bound = (10 + 10 + 300) * MIN;
    let mut lost = vm(1, VmPhase::Running, NOW - bound - 3 * MIN);
    lost.ready_at = Some(at(NOW - bound));
    assert_eq!(
        judge(&lost, &h, Some(idle), at(NOW)).0,
        Verdict::Reclaim(Reclaim::Overran)
    );
    assert_eq!(judge(&lost, &h, Some(idle), at(NOW - 1)).0, Verdict::Live);
    // Without an idle timeout a ready VM may idle forever: never overrun.
    assert_eq!(judge(&lost, &h, None, at(NOW)).0, Verdict::Live);
}

#[test]
fn a_cold_start_with_demand_unknown_creates_the_floor() {
    let s = Scaling {
        min_replicas: Replicas::new(4),
        ..Scaling::default()
    };
    let d = decide(
        &s,
        None,
        &FleetState::default(),
        at(NOW),
        &mut PlannerState::default(),
    );
    assert_eq!(d.plan.target_replicas, 4);
}
