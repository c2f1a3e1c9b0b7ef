//! Properties of the predictive warm pool over random observation histories: it stays bounded,
//! asks for more warm VMs at a higher service level, asks for none when it has learned nothing
//! (a restart), and the plans built on it never name a live VM.

use std::sync::Arc;

use proptest::prelude::*;
use provisioner_core::forecast::{Forecaster, Percent, Predictive, ServiceLevel, warm_quantile};
use provisioner_core::{Demand, Duration, FleetState, Timestamp, Vm, VmId, VmPhase, plan_for};

const START_MS: i64 = 1_580_688_000_000;

/// One cycle as the controller sees it: time since the last, the two counts, the fleet.
#[derive(Debug, Clone)]
struct Cycle {
    after_ms: i64,
    demand: Demand,
    fleet: FleetState,
}

fn phase() -> impl Strategy<Value = VmPhase> {
    prop::sample::select(VmPhase::ALL.to_vec())
}

fn fleet() -> impl Strategy<Value = FleetState> {
    // Ids from a small range, so that the same VM is seen again in later cycles; unique within
    // one fleet, as a pool's UIDs are.
    prop::collection::btree_map(0u8..12, (phase(), 0i64..600_000, any::<bool>()), 0..12).prop_map(
        |vms| FleetState {
            spec_replicas: Some(vms.len() as u32),
            vms: vms
                .into_iter()
                .map(|(id, (phase, age, deleting))| Vm {
                    id: VmId::new(format!("uid-{id}")),
                    name: Arc::from(format!("pool-{id}")),
                    created_at: Timestamp::from_unix_millis(START_MS - age),
                    phase,
                    deleting: deleting && id % 5 == 0,
                    failing: None,
                    ready_at: None,
                    registered: None,
                })
                .collect(),
        },
    )
}

fn cycle() -> impl Strategy<Value = Cycle> {
    (
        prop_oneof![0i64..2_000, 0i64..120_000, 0i64..7_200_000],
        0u32..80,
        0u32..80,
        fleet(),
    )
        .prop_map(|(after_ms, unclaimed, running, fleet)| Cycle {
            after_ms,
            demand: Demand { unclaimed, running },
            fleet,
        })
}

fn settings() -> impl Strategy<Value = Predictive> {
    (
        100u16..=9990,
        prop::option::of(1u64..900),
        1u64..3_600,
        0u8..=100,
    )
        .prop_map(|(bp, lookahead, window, weight)| Predictive {
            service_level: ServiceLevel::from_fraction(f64::from(bp) / 10_000.0).expect("in range"),
            lookahead: lookahead.map(Duration::from_secs),
            recent_window: Duration::from_secs(window),
            recent_weight: Percent::new(weight),
        })
}

/// Replay `cycles`; return the forecaster, the time of the last cycle and the arrivals it can
/// have seen (every rise in the task count).
fn replay(cycles: &[Cycle], window: Duration) -> (Forecaster, Timestamp, u64) {
    let mut f = Forecaster::default();
    let mut now = START_MS;
    let mut rises = 0u64;
    let mut last: Option<u32> = None;
    for c in cycles {
        now += c.after_ms;
        f.observe(Timestamp::from_unix_millis(now), c.demand, &c.fleet, window);
        let total = c.demand.total();
        if let Some(prev) = last {
            rises += u64::from(total.saturating_sub(prev));
        }
        last = Some(total);
    }
    (f, Timestamp::from_unix_millis(now), rises)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn more_service_means_no_fewer_warm_vms(
        cycles in prop::collection::vec(cycle(), 0..40),
        s in settings(),
        other_bp in 100u16..=9990,
        later_ms in 0i64..3_600_000,
    ) {
        let (f, now, _) = replay(&cycles, s.recent_window);
        let other = Predictive {
            service_level: ServiceLevel::from_fraction(f64::from(other_bp) / 10_000.0)
                .expect("in range"),
            ..s
        };
        let (low, high) = if other.service_level <= s.service_level { (other, s) } else { (s, other) };
        for at in [now, Timestamp::from_unix_millis(now.unix_millis() + later_ms)] {
            prop_assert!(f.forecast(at, &low).warm <= f.forecast(at, &high).warm);
        }
    }

    #[test]
    fn the_rate_is_bounded_by_the_arrivals_seen(
        cycles in prop::collection::vec(cycle(), 0..40),
        s in settings(),
        later_ms in 0i64..86_400_000,
    ) {
        let (f, now, rises) = replay(&cycles, s.recent_window);
        let at = Timestamp::from_unix_millis(now.unix_millis() + later_ms);
        let forecast = f.forecast(at, &s);
        // The recent rate is at most all arrivals within one window; an hour's profile rate at
        // most all arrivals within the half hour it needs before it is trusted.
        let shortest = s.recent_window.as_secs_f64().clamp(1.0, 1800.0);
        prop_assert!(forecast.rate.is_finite() && forecast.rate >= 0.0);
        prop_assert!(forecast.rate <= rises as f64 / shortest + 1e-9, "{forecast:?} from {rises} arrivals");
        if rises == 0 {
            prop_assert_eq!(forecast.warm, 0);
        }
    }

    #[test]
    fn a_restart_forgets_and_asks_for_nothing(
        cycles in prop::collection::vec(cycle(), 0..40),
        s in settings(),
        first in cycle(),
    ) {
        let (learned, now, _) = replay(&cycles, s.recent_window);
        drop(learned);
        // The controller restarts: fresh state, then its first observation.
        let mut fresh = Forecaster::default();
        prop_assert_eq!(fresh.forecast(now, &s).warm, 0);
        fresh.observe(now, first.demand, &first.fleet, s.recent_window);
        let forecast = fresh.forecast(now, &s);
        prop_assert_eq!(forecast.warm, 0);
        prop_assert_eq!(fresh.revisit_at(now, &s), None);
    }

    #[test]
    fn plans_sized_by_the_forecast_never_name_a_live_vm(
        cycles in prop::collection::vec(cycle(), 1..40),
        s in settings(),
        max_replicas in 0u32..60,
    ) {
        let (f, now, _) = replay(&cycles, s.recent_window);
        let last = cycles.last().expect("one cycle");
        let warm = f.forecast(now, &s).warm;
        let desired = last.demand.total().saturating_add(warm).min(max_replicas);
        let plan = plan_for(desired, &last.fleet);
        for named in plan.retire.iter().chain(&plan.recycle) {
            let vm = last.fleet.vms.iter().find(|vm| vm.id == named.id).expect("a fleet VM");
            prop_assert!(vm.phase.is_finished(), "{:?} would delete {:?}", plan, vm);
        }
    }

    /// The simulator looks only when something changed, the controller every poll: looking
    /// again in between, with nothing changed, must not change what is learned.
    #[test]
    fn looking_more_often_changes_nothing(
        cycles in prop::collection::vec(cycle(), 1..30),
        s in settings(),
        extra in prop::collection::vec(prop::option::of(1i64..100_000), 30),
        later_ms in 0i64..3_600_000,
    ) {
        let (sparse, now, _) = replay(&cycles, s.recent_window);
        let mut dense = Forecaster::default();
        let mut t = START_MS;
        for (i, (c, gap)) in cycles.iter().zip(&extra).enumerate() {
            t += c.after_ms;
            dense.observe(Timestamp::from_unix_millis(t), c.demand, &c.fleet, s.recent_window);
            let room = cycles.get(i + 1).map_or(later_ms, |next| next.after_ms - 1);
            if let Some(gap) = gap.filter(|g| *g <= room) {
                // A second look at the same world before the next change.
                dense.observe(Timestamp::from_unix_millis(t + gap), c.demand, &c.fleet, s.recent_window);
            }
        }
        let at = Timestamp::from_unix_millis(now.unix_millis() + later_ms);
        prop_assert_eq!(sparse.forecast(at, &s), dense.forecast(at, &s));
    }

    #[test]
    fn the_quantile_is_monotone_and_bounded(
        expected in 0.0f64..5_000.0,
        dispersion in 0.0f64..200.0,
        a in 100u16..=9990,
        b in 100u16..=9990,
    ) {
        let level = |bp: u16| ServiceLevel::from_fraction(f64::from(bp) / 10_000.0).expect("in range");
        let (lo, hi) = (a.min(b), a.max(b));
        let (wl, wh) = (warm_quantile(expected, dispersion, level(lo)), warm_quantile(expected, dispersion, level(hi)));
        prop_assert!(wl <= wh);
        // Even at 99.9 % the count stays within a few standard deviations of the mean.
        let sd = (expected * dispersion.max(1.0)).sqrt();
        prop_assert!(f64::from(wh) <= expected + 8.0 * sd + 10.0, "{wh} for {expected} x {dispersion}");
    }
}
