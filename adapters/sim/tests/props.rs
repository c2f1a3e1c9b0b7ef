//! Random small traces, policies and faults: every invariant holds and every job completes.

use proptest::prelude::*;
use provisioner_core::Duration;
use provisioner_core::forecast::{Predictive, ServiceLevel};
use provisioner_sim::{BootTime, Faults, PolicyChoice, PolicyParams, SimOptions, Trace, run};

fn trace_text(jobs: &[(u32, u32, bool)]) -> String {
    let mut text = String::from("submitted_at_s,duration_s,resource_class\n");
    for (at, dur, large) in jobs {
        text.push_str(&format!(
            "{at},{dur},{}\n",
            if *large { "large" } else { "small" }
        ));
    }
    text
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold(
        jobs in prop::collection::vec((0u32..10_800, 0u32..2_400, any::<bool>()), 1..25),
        policy in prop::sample::select(vec!["provisioner", "predictive", "seed", "circleci-0.1.2", "arc", "gitlab", "oracle"]),
        min in 0u32..3,
        extra in 1u32..6,
        headroom in 0u32..3,
        max_surge in 0u32..4,
        delay_s in 0u64..600,
        idle in prop::option::of(0u64..1_200),
        idle_buffer in 0u32..3,
        boot in (10u64..200, 0u64..200),
        poll_s in 1u64..10,
        latency_s in 0u64..5,
        faulty in any::<bool>(),
        rates in (0.0f64..0.1, 0.0f64..0.1, 0.0f64..0.2, 0.0f64..0.05),
        seed in any::<u64>(),
        level in prop::option::of(100u16..=9990),
    ) {
        let trace = Trace::parse_csv(&trace_text(&jobs)).expect("generated trace");
        let params = PolicyParams {
            min_replicas: min,
            max_replicas: min + extra,
            idle_timeout: idle.map(|s| Duration::from_secs(s + delay_s)),
            headroom,
            max_surge,
            scale_down_delay: Duration::from_secs(delay_s),
            idle_buffer,
            scale_factor: 0.5,
            predictive: level.and_then(|bp| ServiceLevel::from_fraction(f64::from(bp) / 10_000.0)).map(|service_level| Predictive { service_level, ..Predictive::default() }),
        };
        let policy = PolicyChoice::reference(policy, &params).expect("policy");
        let faults = if faulty { Faults { api: rates.0, k8s: rates.1, start: rates.2, restart: rates.3, ..Faults::default() } } else { Faults::default() };
        let options = SimOptions {
            boot_time: BootTime::Uniform { min: Duration::from_secs(boot.0), max: Duration::from_secs(boot.0 + boot.1) },
            poll_interval: Duration::from_secs(poll_s),
            api_latency: Duration::from_secs(latency_s),
            seed,
            faults,
            ..SimOptions::default()
        };
        let report = run(&trace, &options, &policy).expect("run");
        prop_assert!(report.is_ok(), "{:?}", report.invariant_violations);
        prop_assert_eq!(report.jobs_completed, jobs.len() as u64);
        let total: f64 = jobs.iter().map(|j| f64::from(j.1)).sum::<f64>() / 3600.0;
        prop_assert!((report.busy_vm_hours - total).abs() < 1e-6, "busy {} vs {}", report.busy_vm_hours, total);
        prop_assert!(report.wait_p50_s >= 0.0);
        prop_assert!(report.vm_hours + 1e-9 >= report.busy_vm_hours);
    }
}
