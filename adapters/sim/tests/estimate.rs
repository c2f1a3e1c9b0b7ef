//! The controller's wait and cost estimator, fed what the controller would see each poll,
//! against the simulator's truth: on the four-week trace (../shared/traces/travis-2020-02.csv)
//! its mean wait and warm share come within 10 % of the real ones.

use provisioner_core::Duration;
use provisioner_sim::{
    ClassEstimate, PolicyChoice, PolicyParams, SimOptions, SimReport, SyntheticOptions, Trace, run,
};

const TRACE: &str = "../../../shared/traces/travis-2020-02.csv";

fn estimated(
    trace: &Trace,
    options: &SimOptions,
    params: PolicyParams,
) -> (SimReport, Vec<ClassEstimate>) {
    let policy = PolicyChoice::reference("provisioner", &params).expect("valid policy");
    let report = run(
        trace,
        &SimOptions {
            estimate: true,
            ..options.clone()
        },
        &policy,
    )
    .expect("run");
    assert!(report.is_ok(), "{:?}", report.invariant_violations);
    let estimate = report.estimate.clone().expect("estimate asked for");
    assert_eq!(estimate.len(), trace.classes.len());
    for e in &estimate {
        println!(
            "{}: jobs {} (actual {}), mean wait {:.1}s ({:.1}s), p95 {:.0}s ({:.0}s), warm {:.2}% ({:.2}%)",
            e.class,
            e.jobs_started,
            e.jobs_started_actual,
            e.wait_mean_s,
            e.wait_mean_s_actual,
            e.wait_p95_s,
            e.wait_p95_s_actual,
            e.warm_share * 100.0,
            e.warm_share_actual * 100.0
        );
    }
    (report, estimate)
}

/// Every class's estimate and the one of all classes together within `share` of the truth:
/// mean wait, warm share and jobs started.
fn all_within(estimates: &[ClassEstimate], share: f64) {
    let total = |f: fn(&ClassEstimate) -> f64| estimates.iter().map(f).sum::<f64>();
    let started = total(|e| e.jobs_started as f64);
    let actual = total(|e| e.jobs_started_actual as f64);
    let overall = ClassEstimate {
        class: "all".to_owned(),
        jobs_started: started as u64,
        jobs_started_actual: actual as u64,
        wait_mean_s: total(|e| e.wait_mean_s * e.jobs_started as f64) / started,
        wait_mean_s_actual: total(|e| e.wait_mean_s_actual * e.jobs_started_actual as f64) / actual,
        warm_share: total(|e| e.warm_share * e.jobs_started as f64) / started,
        warm_share_actual: total(|e| e.warm_share_actual * e.jobs_started_actual as f64) / actual,
        ..estimates[0].clone()
    };
    println!(
        "all: jobs {} ({}), mean wait {:.1}s ({:.1}s), warm {:.2}% ({:.2}%)",
        overall.jobs_started,
        overall.jobs_started_actual,
        overall.wait_mean_s,
        overall.wait_mean_s_actual,
        overall.warm_share * 100.0,
        overall.warm_share_actual * 100.0
    );
    for e in estimates.iter().chain([&overall]) {
        let what = |m: &str| format!("{}: {m}", e.class);
        within(
            e.wait_mean_s,
            e.wait_mean_s_actual,
            share,
            &what("mean wait"),
        );
        within(
            e.warm_share,
            e.warm_share_actual,
            share,
            &what("warm share"),
        );
        within(
            e.jobs_started as f64,
            e.jobs_started_actual as f64,
            share,
            &what("jobs started"),
        );
    }
}

fn within(estimate: f64, actual: f64, share: f64, what: &str) {
    assert!(
        (estimate - actual).abs() <= share * actual.abs(),
        "{what}: estimated {estimate}, actual {actual} (more than {}% apart)",
        share * 100.0
    );
}

/// A warm pool (minReplicas 3, VMs idling out after 10 minutes) under the real four-week
/// trace: many jobs find a warm VM, many wait for a boot.
#[test]
fn estimate_within_ten_percent_on_the_four_week_trace() {
    let path = std::path::Path::new(TRACE);
    let (trace, weeks) = if path.exists() {
        println!("replaying ../shared/traces/travis-2020-02.csv");
        (Trace::load_csv(path).expect("real trace"), 4)
    } else {
        println!(
            "../shared/traces/travis-2020-02.csv is absent; checking a synthetic week instead"
        );
        (
            Trace::synthetic(&SyntheticOptions::default()).expect("synthetic trace"),
            1,
        )
    };
    let params = PolicyParams {
        min_replicas: 3,
        max_replicas: 60,
        idle_timeout: Some(Duration::from_secs(600)),
        ..PolicyParams::default()
    };
    let (report, estimates) = estimated(&trace, &SimOptions::default(), params);
    assert!(report.sim_seconds > f64::from(weeks) * 6.0 * 86_400.0);
    let started: u64 = estimates.iter().map(|e| e.jobs_started_actual).sum();
    assert_eq!(started, report.jobs);
    // Neither side is degenerate: in every class jobs both waited and found warm VMs.
    for e in &estimates {
        assert!(e.wait_mean_s_actual > 10.0, "{e:?}");
        assert!(e.warm_share_actual > 0.01, "{e:?}");
    }
    all_within(&estimates, 0.10);
}

/// Polling every 10 s instead of every second, the estimate still tracks the truth on a
/// synthetic week (sampling blurs each wait by up to a poll interval).
#[test]
fn estimate_holds_at_a_ten_second_poll() {
    let trace = Trace::synthetic(&SyntheticOptions::default()).expect("synthetic trace");
    let options = SimOptions {
        poll_interval: Duration::from_secs(10),
        ..SimOptions::default()
    };
    let params = PolicyParams {
        min_replicas: 2,
        max_replicas: 40,
        idle_timeout: Some(Duration::from_secs(600)),
        ..PolicyParams::default()
    };
    let (_, estimates) = estimated(&trace, &options, params);
    all_within(&estimates, 0.10);
}

/// Off by default: the report (and the headless JSON) carries no estimate.
#[test]
fn no_estimate_unless_asked() {
    let trace = Trace::synthetic(&SyntheticOptions {
        days: 1.0,
        ..SyntheticOptions::default()
    })
    .expect("synthetic trace");
    let policy = PolicyChoice::reference("provisioner", &PolicyParams::default()).expect("policy");
    let report = run(&trace, &SimOptions::default(), &policy).expect("run");
    assert!(report.estimate.is_none());
    let json = serde_json::to_string(&report).expect("json");
    assert!(!json.contains("\"estimate\""));
}
