//! Self-healing through the simulator: outages, lost nodes, restarts and VMs that never start or
//! never connect, with the core's healing rules deciding. No busy VM is deleted, no job is lost,
//! capacity survives every outage.

use provisioner_core::Duration;
use provisioner_sim::{
    Faults, PolicyChoice, PolicyParams, SimOptions, SimReport, SyntheticOptions, Trace, run,
};

fn week(seed: u64) -> Trace {
    Trace::synthetic(&SyntheticOptions {
        jobs_per_hour: 40.0,
        days: 7.0,
        seed,
        ..SyntheticOptions::default()
    })
    .expect("synthetic")
}

fn policy(min_replicas: u32) -> PolicyChoice {
    PolicyChoice::reference(
        "provisioner",
        &PolicyParams {
            min_replicas,
            max_replicas: 40,
            idle_timeout: Some(Duration::from_secs(600)),
            ..PolicyParams::default()
        },
    )
    .expect("policy")
}

fn with_faults(text: &str) -> SimOptions {
    SimOptions {
        faults: Faults::parse(text).expect("faults"),
        ..SimOptions::default()
    }
}

/// No invariant broken: no busy VM deleted or reclaimed, every job completed exactly once.
fn ok(r: &SimReport) {
    assert!(r.is_ok(), "invariants broken: {:?}", r.invariant_violations);
    assert_eq!(r.jobs, r.jobs_completed);
}

#[test]
fn the_goal_faults_lose_no_job_delete_no_busy_vm_and_keep_the_pool_through_outages() {
    let t = week(3);
    let clean = run(&t, &SimOptions::default(), &policy(3)).expect("fault-free run");
    ok(&clean);
    let faults = "api=0.1,k8s=0.05,start=0.05,outage=2h/2d,lost-node=1/1d,restart=1/1h";
    let r = run(&t, &with_faults(faults), &policy(3)).expect("faulty run");
    ok(&r);
    let f = r.faults;
    assert!(f.outages >= 3, "{f:?}");
    assert_eq!(f.outages_pool_kept, f.outages, "{f:?}");
    // Each outage on record, its pool back at (at least) its size one poll after it ended.
    assert_eq!(r.outages.len() as u64, f.outages);
    for o in &r.outages {
        let after = o.replicas_after.as_ref().expect("ended within the run");
        assert!(o.end_s.is_some_and(|e| e > o.start_s), "{o:?}");
        assert_eq!(after.len(), o.replicas_before.len());
        assert!(o.pool_back, "{o:?}");
    }
    assert!(
        f.lost_nodes >= 6 && f.vms_on_lost_nodes >= f.lost_nodes,
        "{f:?}"
    );
    assert!(f.controller_restarts >= 7 * 24, "{f:?}");
    assert!(
        f.api_errors > 0 && f.k8s_errors > 0 && f.start_failures > 0,
        "{f:?}"
    );
    // VMs on lost nodes show Running forever: reclaimed once they cannot hold a job any more.
    assert!(f.vms_reclaimed > 0, "{f:?}");
    println!(
        "p95 wait: fault-free {:.1}s, with {faults}: {:.1}s",
        clean.wait_p95_s, r.wait_p95_s
    );
}

#[test]
fn restarts_and_lost_nodes_alone_keep_p95_within_ten_percent() {
    let t = week(4);
    let clean = run(&t, &SimOptions::default(), &policy(3)).expect("fault-free run");
    let r = run(&t, &with_faults("lost-node=1/1d,restart=1/1h"), &policy(3)).expect("faulty run");
    ok(&r);
    assert!(
        r.wait_p95_s <= clean.wait_p95_s * 1.1,
        "p95 {:.1}s vs fault-free {:.1}s",
        r.wait_p95_s,
        clean.wait_p95_s
    );
}

#[test]
fn default_boot_times_trigger_no_reclaim() {
    let r = run(&week(5), &SimOptions::default(), &policy(3)).expect("run");
    ok(&r);
    assert_eq!(r.faults.vms_reclaimed, 0);
}

#[test]
fn vms_that_never_start_or_never_connect_are_reclaimed_and_jobs_still_run() {
    let r = run(
        &week(6),
        &with_faults("stuck-start=0.05,unschedulable=0.05,never-connects=0.02"),
        &policy(3),
    )
    .expect("run");
    ok(&r);
    let f = r.faults;
    assert!(
        f.stuck_starts > 0 && f.unschedulable_vms > 0 && f.never_connecting_vms > 0,
        "{f:?}"
    );
    // Each bad VM is reclaimed once its grace ran out (a few may still be in grace at the end).
    let bad = f.stuck_starts + f.unschedulable_vms + f.never_connecting_vms;
    assert!(
        f.vms_reclaimed + 10 >= bad && f.vms_reclaimed <= bad,
        "{f:?}"
    );
}

#[test]
fn runners_that_never_connect_trip_the_breaker_and_hold_the_class_at_its_floor() {
    let t = Trace::synthetic(&SyntheticOptions {
        jobs_per_hour: 20.0,
        days: 0.5,
        seed: 7,
        ..SyntheticOptions::default()
    })
    .expect("synthetic");
    let options = SimOptions {
        sample_every: Some(Duration::from_secs(600)),
        ..with_faults("never-connects=1")
    };
    let r = run(&t, &options, &policy(2)).expect("run");
    // No runner ever takes a job: they are all left waiting, and nothing else breaks.
    assert_eq!(r.jobs_completed, 0);
    assert!(
        r.invariant_violations
            .iter()
            .all(|v| v.contains("never completed")),
        "{:?}",
        r.invariant_violations
    );
    // After the first hour the pool never asks for more than its floor.
    let late = r.samples.iter().filter(|s| s.t_s > 3600.0);
    let most = late.map(|s| s.target_replicas).max().unwrap_or(0);
    assert!(most <= 2, "target up to {most} with the breaker open");
    assert!(r.faults.vms_reclaimed > 3, "{:?}", r.faults);
}
