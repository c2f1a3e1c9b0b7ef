//! The engine through its public API: claims, boots, idle timeouts, determinism, the fast path,
//! faults and the invariants.

use provisioner_core::cron::Cron;
use provisioner_core::forecast::{Percent, Predictive};
use provisioner_core::policy::{Overrides, Schedule, Timezone};
use provisioner_core::{Duration, Replicas, Scaling};
use provisioner_sim::{
    BootTime, Faults, PolicyChoice, PolicyParams, Scalings, SimOptions, SimReport,
    SyntheticOptions, Trace, run,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn trace(rows: &str) -> Trace {
    Trace::parse_csv(&format!("submitted_at_s,duration_s\n{rows}")).expect("test trace")
}

fn fixed_boot(s: u64) -> SimOptions {
    SimOptions {
        boot_time: BootTime::Fixed(secs(s)),
        ..SimOptions::default()
    }
}

fn policy(params: PolicyParams) -> PolicyChoice {
    PolicyChoice::reference("provisioner", &params).expect("valid policy")
}

fn ok(report: &SimReport) {
    assert!(
        report.is_ok(),
        "invariants broken: {:?}",
        report.invariant_violations
    );
    assert_eq!(report.jobs, report.jobs_completed);
}

/// The claim time of every job, in arrival order.
fn claims(report: &SimReport) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, f64)> = report
        .worst_waits
        .iter()
        .map(|w| (w.arrival_s, w.arrival_s + w.wait_s))
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v
}

#[test]
fn one_vm_serves_jobs_in_arrival_order() {
    let t = trace("0,10\n1,20\n2,5\n");
    let opts = SimOptions {
        worst_waits: 10,
        ..fixed_boot(60)
    };
    let r = run(
        &t,
        &opts,
        &policy(PolicyParams {
            min_replicas: 0,
            max_replicas: 1,
            ..PolicyParams::default()
        }),
    )
    .expect("run");
    ok(&r);
    let c = claims(&r);
    // First VM created at the poll at 0, ready at 60; each next VM is created when the previous
    // one stops (the poll at that second) and boots 60 s.
    assert_eq!(c, [(0.0, 60.0), (1.0, 130.0), (2.0, 210.0)]);
    assert_eq!(r.vms_created, 3);
    assert_eq!(r.wait_max_s, 208.0);
    assert!((r.busy_vm_hours - 35.0 / 3600.0).abs() < 1e-9);
    assert!((r.boot_vm_hours - 180.0 / 3600.0).abs() < 1e-9);
}

#[test]
fn waits_follow_the_boot_time_distribution() {
    let rows: String = (0..200).map(|i| format!("{},30\n", i * 1000)).collect();
    let t = trace(&rows);
    let min0 = PolicyParams {
        min_replicas: 0,
        ..PolicyParams::default()
    };
    let r = run(&t, &fixed_boot(90), &policy(min0.clone())).expect("run");
    ok(&r);
    assert_eq!((r.wait_p50_s, r.wait_max_s), (90.0, 90.0));
    let r = run(&t, &SimOptions::default(), &policy(min0)).expect("run");
    ok(&r);
    // Uniform 2m..5m: every wait inside, and the spread is used.
    let lo = r
        .worst_waits
        .iter()
        .map(|w| w.wait_s)
        .fold(f64::MAX, f64::min);
    assert!(
        r.wait_max_s <= 300.0 && r.wait_max_s > 270.0,
        "max {}",
        r.wait_max_s
    );
    assert!(
        r.wait_p50_s >= 120.0 && r.wait_p50_s <= 300.0,
        "p50 {}",
        r.wait_p50_s
    );
    assert!(lo >= 120.0, "{lo}");
}

#[test]
fn idle_vms_power_off_after_idle_timeout_and_are_recycled() {
    let t = trace("3630,10\n");
    let params = PolicyParams {
        min_replicas: 1,
        max_replicas: 1,
        idle_timeout: Some(secs(300)),
        ..PolicyParams::default()
    };
    let r = run(&t, &fixed_boot(60), &policy(params)).expect("run");
    ok(&r);
    // A VM every 360 s (60 s boot + 300 s idle): ten before the job, the eleventh takes it.
    assert_eq!(r.vms_created, 11);
    assert_eq!(r.wait_max_s, 30.0);
    assert!(
        (r.idle_vm_hours - 3000.0 / 3600.0).abs() < 1e-9,
        "{}",
        r.idle_vm_hours
    );
    assert!(
        (r.boot_vm_hours - 660.0 / 3600.0).abs() < 1e-9,
        "{}",
        r.boot_vm_hours
    );
    let never = PolicyParams {
        min_replicas: 1,
        max_replicas: 1,
        ..PolicyParams::default()
    };
    let r = run(&t, &fixed_boot(60), &policy(never)).expect("run");
    ok(&r);
    assert_eq!((r.vms_created, r.wait_max_s), (1, 0.0));
}

fn small_synthetic(seed: u64) -> Trace {
    let classes = vec![
        provisioner_core::ResourceClass::parse("acme/small").expect("class"),
        provisioner_core::ResourceClass::parse("acme/large").expect("class"),
    ];
    Trace::synthetic(&SyntheticOptions {
        jobs_per_hour: 30.0,
        days: 1.0,
        seed,
        classes,
        ..SyntheticOptions::default()
    })
    .expect("synthetic")
}

fn comparable(mut r: SimReport) -> SimReport {
    r.wall_seconds = 0.0;
    r.events = 0;
    r.controller_cycles = 0;
    r
}

#[test]
fn a_seed_gives_identical_reports() {
    let t = small_synthetic(3);
    let opts = SimOptions {
        seed: 9,
        faults: Faults {
            api: 0.02,
            k8s: 0.02,
            start: 0.05,
            restart: 0.01,
            ..Faults::default()
        },
        sample_every: Some(secs(60)),
        ..SimOptions::default()
    };
    let p = policy(PolicyParams {
        idle_timeout: Some(secs(600)),
        ..PolicyParams::default()
    });
    let mut a = run(&t, &opts, &p).expect("run");
    let mut b = run(&t, &opts, &p).expect("run");
    a.wall_seconds = 0.0;
    b.wall_seconds = 0.0;
    assert_eq!(
        serde_json::to_string(&a).expect("json"),
        serde_json::to_string(&b).expect("json"),
        "same seed, same bytes"
    );
    let c = run(&t, &SimOptions { seed: 10, ..opts }, &p).expect("run");
    assert_ne!(
        a.wait_p95_s.to_bits() ^ a.vm_hours.to_bits(),
        c.wait_p95_s.to_bits() ^ c.vm_hours.to_bits()
    );
}

fn schedule_scaling() -> Scaling {
    Scaling {
        min_replicas: Replicas::new(1),
        max_replicas: Replicas::new(8),
        headroom: Replicas::new(1),
        max_surge: Replicas::new(2),
        scale_down_delay: secs(180),
        idle_timeout: Some(secs(600)),
        idle_buffer: Replicas::ZERO,
        predictive: None,
        schedules: vec![Schedule {
            name: "workday".to_owned(),
            start: Cron::parse("0 8 * * 1-5").expect("cron"),
            end: Cron::parse("0 17 * * 1-5").expect("cron"),
            timezone: Timezone::utc(),
            overrides: Overrides {
                min_replicas: Some(Replicas::new(4)),
                ..Overrides::default()
            },
        }],
        ..Scaling::default()
    }
}

#[test]
fn fast_path_matches_polling_every_tick() {
    let t = small_synthetic(5);
    let p012 = PolicyParams {
        min_replicas: 1,
        max_replicas: 8,
        headroom: 1,
        max_surge: 2,
        scale_down_delay: secs(180),
        idle_timeout: Some(secs(300)),
        idle_buffer: 1,
        scale_factor: 0.5,
        predictive: None,
    };
    let mut policies: Vec<(String, PolicyChoice)> = [
        "seed",
        "circleci-0.1.2",
        "arc",
        "gitlab",
        "oracle",
        "provisioner",
    ]
    .iter()
    .map(|n| {
        (
            (*n).to_owned(),
            PolicyChoice::reference(n, &p012).expect("policy"),
        )
    })
    .collect();
    policies.push((
        "schedules".to_owned(),
        PolicyChoice::Provisioner(Scalings::one(schedule_scaling())),
    ));
    for latency in [0, 3] {
        for (name, p) in &policies {
            let fast = SimOptions {
                api_latency: secs(latency),
                sample_every: Some(secs(300)),
                ..SimOptions::default()
            };
            let slow = SimOptions {
                fast_path: false,
                ..fast.clone()
            };
            let a = run(&t, &fast, p).expect("fast");
            let b = run(&t, &slow, p).expect("slow");
            ok(&a);
            assert!(
                a.controller_cycles < b.controller_cycles,
                "{name}: the fast path skipped nothing"
            );
            assert_eq!(
                comparable(a),
                comparable(b),
                "{name} with latency {latency}s"
            );
        }
    }
}

/// The predictive control's target decays between events, which polling every tick sees at
/// once and the fast path at the next event: the two runs are not identical, but both keep
/// every invariant, complete every job and agree closely.
#[test]
fn fast_path_stays_close_with_the_predictive_control() {
    let t = small_synthetic(5);
    let params = PolicyParams {
        max_replicas: 8,
        idle_timeout: Some(secs(300)),
        predictive: Some(Predictive {
            recent_weight: Percent::new(30),
            ..Predictive::default()
        }),
        ..PolicyParams::default()
    };
    for name in ["predictive", "provisioner"] {
        let p = PolicyChoice::reference(name, &params).expect("policy");
        let fast = run(&t, &SimOptions::default(), &p).expect("fast");
        let slow = run(
            &t,
            &SimOptions {
                fast_path: false,
                ..SimOptions::default()
            },
            &p,
        )
        .expect("slow");
        ok(&fast);
        ok(&slow);
        assert_eq!(fast.jobs_completed, slow.jobs_completed);
        let close = |a: f64, b: f64| (a - b).abs() <= 0.05 * a.max(b).max(1.0);
        assert!(
            close(fast.vm_hours, slow.vm_hours) && close(fast.wait_mean_s, slow.wait_mean_s),
            "{name}: fast {} VM-h, {}s mean wait; slow {} VM-h, {}s",
            fast.vm_hours,
            fast.wait_mean_s,
            slow.vm_hours,
            slow.wait_mean_s
        );
    }
}

#[test]
fn injected_faults_are_counted_and_invariants_hold() {
    let t = small_synthetic(7);
    let opts = SimOptions {
        faults: Faults {
            api: 0.05,
            k8s: 0.05,
            start: 0.05,
            restart: 0.02,
            ..Faults::default()
        },
        ..SimOptions::default()
    };
    let r = run(
        &t,
        &opts,
        &policy(PolicyParams {
            idle_timeout: Some(secs(600)),
            ..PolicyParams::default()
        }),
    )
    .expect("run");
    ok(&r);
    let f = r.faults;
    assert!(
        f.api_errors > 0
            && f.api_timeouts > 0
            && f.k8s_errors > 0
            && f.start_failures > 0
            && f.controller_restarts > 0,
        "{f:?}"
    );
}

#[test]
fn a_circleci_outage_keeps_the_pool_and_replaces_finished_vms() {
    // Ten long jobs at once; they end during the outage. The controller, blind to demand,
    // neither scales in nor deletes a live VM: it replaces the ten stopped VMs, so the capacity
    // is there when CircleCI answers again.
    let rows: String = (0..10).map(|_| "0,600\n").collect();
    let t = trace(&format!("{rows}3000,10\n"));
    let opts = SimOptions {
        faults: Faults {
            api_outage: Some((secs(500), secs(2000))),
            ..Faults::default()
        },
        sample_every: Some(secs(100)),
        ..fixed_boot(60)
    };
    let r = run(
        &t,
        &opts,
        &policy(PolicyParams {
            min_replicas: 0,
            ..PolicyParams::default()
        }),
    )
    .expect("run");
    ok(&r);
    assert!(r.faults.api_errors > 0);
    let at = |s: f64| r.samples.iter().find(|x| x.t_s == s).expect("sample");
    assert_eq!(at(600.0).target_replicas, 10);
    // Jobs ended at 660; the stopped VMs were replaced at once, the pool held at 10.
    for s in [700.0, 1000.0, 1900.0] {
        let x = at(s);
        assert_eq!(
            (x.target_replicas, x.vms_stopped, x.vms_booting + x.vms_idle),
            (10, 0, 10),
            "at {s}s"
        );
    }
    // After it, the pool is still at its pre-outage size and the late job finds a warm VM.
    assert_eq!(at(2100.0).target_replicas, 10);
}

#[test]
fn a_cold_start_with_circleci_failing_creates_the_floor_and_runners_take_jobs() {
    let t = trace("0,10\n");
    let opts = SimOptions {
        faults: Faults {
            api: 1.0,
            ..Faults::default()
        },
        ..fixed_boot(60)
    };
    let r = run(&t, &opts, &policy(PolicyParams::default())).expect("run");
    ok(&r);
    assert_eq!(r.vms_created, 3, "the default floor");
    assert_eq!(r.jobs_completed, 1);
    assert!(r.faults.api_errors + r.faults.api_timeouts > 0);
}

#[test]
fn zero_capacity_is_reported_not_hung() {
    let t = trace("0,10\n5,10\n");
    let p = policy(PolicyParams {
        min_replicas: 0,
        max_replicas: 0,
        ..PolicyParams::default()
    });
    let r = run(&t, &fixed_boot(60), &p).expect("run");
    assert_eq!(r.jobs_completed, 0);
    assert!(!r.is_ok());
}

#[test]
fn a_config_policy_must_cover_the_trace_classes() {
    let t = trace("0,10\n");
    let p = PolicyChoice::Provisioner(Scalings {
        default: None,
        classes: Default::default(),
    });
    let err = run(&t, &SimOptions::default(), &p).expect_err("unknown class");
    assert!(err.to_string().contains("trace/default"), "{err}");
}

#[test]
fn oracle_waits_no_longer_than_the_provisioner() {
    let t = small_synthetic(11);
    let params = PolicyParams {
        min_replicas: 0,
        max_replicas: 30,
        ..PolicyParams::default()
    };
    let oracle = run(
        &t,
        &SimOptions::default(),
        &PolicyChoice::reference("oracle", &params).expect("oracle"),
    )
    .expect("run");
    let seed = run(
        &t,
        &SimOptions::default(),
        &PolicyChoice::reference("seed", &params).expect("seed"),
    )
    .expect("run");
    ok(&oracle);
    ok(&seed);
    assert!(oracle.wait_p95_s < 5.0, "oracle p95 {}", oracle.wait_p95_s);
    assert!(oracle.wait_p95_s < seed.wait_p95_s);
}

#[test]
fn real_trace_replays_when_present() {
    let path = std::path::Path::new("../../../shared/traces/travis-2020-02.csv");
    if !path.exists() {
        println!(
            "../shared/traces/travis-2020-02.csv is absent; checking a synthetic week instead"
        );
        let r = run(
            &small_synthetic(1),
            &SimOptions::default(),
            &policy(PolicyParams::default()),
        )
        .expect("run");
        ok(&r);
        return;
    }
    println!("replaying ../shared/traces/travis-2020-02.csv");
    let t = Trace::load_csv(path).expect("real trace");
    assert_eq!(t.jobs.len(), 161_475);
    let r = run(
        &t,
        &SimOptions::default(),
        &policy(PolicyParams {
            max_replicas: 60,
            ..PolicyParams::default()
        }),
    )
    .expect("run");
    ok(&r);
    assert!(r.sim_seconds > 27.0 * 86_400.0);
}

#[test]
fn a_burst_larger_than_one_pool_pass_gets_every_vm_it_asked_for() {
    let rows: String = (0..400).map(|_| "0,600\n").collect();
    let r = run(
        &trace(&rows),
        &fixed_boot(60),
        &policy(PolicyParams {
            min_replicas: 0,
            max_replicas: 1000,
            ..PolicyParams::default()
        }),
    )
    .expect("run");
    ok(&r);
    assert_eq!(r.peak_vms, 400);
    assert_eq!(r.wait_max_s, 60.0);
}

/// On the cluster model (nodes coming up, VMs unschedulable within their grace period, delayed
/// claims), the fast path still decides exactly as polling every tick.
#[test]
fn fast_path_matches_polling_every_tick_on_the_cluster_model() {
    let preset = provisioner_sim::cluster::ClusterOptions::preset("mro-eks").expect("preset");
    for name in provisioner_sim::scenarios::SCENARIO_NAMES {
        let s = provisioner_sim::scenarios::scenario(name).expect("scenario");
        let fast = s.options(&preset, 1);
        let slow = SimOptions {
            fast_path: false,
            ..fast.clone()
        };
        let policy = PolicyChoice::Provisioner(s.scalings.clone());
        let a = run(&s.trace, &fast, &policy).expect("fast");
        let b = run(&s.trace, &slow, &policy).expect("slow");
        ok(&a);
        assert!(a.controller_cycles < b.controller_cycles, "{name}");
        assert_eq!(comparable(a), comparable(b), "{name}");
    }
}
