//! The headless CLI as a user runs it.

use std::process::{Command, Output};

fn simulate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(args)
        .output()
        .expect("run simulate")
}

fn json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn json_report_has_every_documented_field() {
    let v = json(&simulate(&[
        "--headless",
        "--format",
        "json",
        "--days",
        "0.5",
        "--rate",
        "30",
    ]));
    for field in [
        "jobs",
        "jobs_completed",
        "wait_p50_s",
        "wait_p95_s",
        "wait_p99_s",
        "wait_max_s",
        "vm_hours",
        "busy_vm_hours",
        "idle_vm_hours",
        "boot_vm_hours",
        "vms_created",
        "peak_vms",
        "events",
        "sim_seconds",
        "wall_seconds",
        "classes",
        "faults",
        "invariant_violations",
        "worst_waits",
    ] {
        assert!(v.get(field).is_some(), "missing {field}: {v}");
    }
    assert!(v["jobs"].as_u64().expect("jobs") > 0);
    assert_eq!(v["jobs"], v["jobs_completed"]);
    assert_eq!(v["classes"][0]["class"], "trace/default");
    assert_eq!(v["invariant_violations"].as_array().map(Vec::len), Some(0));
}

#[test]
fn table_report_and_faults() {
    let out = simulate(&[
        "--headless",
        "--days",
        "0.5",
        "--rate",
        "30",
        "--faults",
        "api=0.05,k8s=0.05,start=0.1,restart=0.02",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("wait") && text.contains("VM-hours") && text.contains("all held"),
        "{text}"
    );
    let v = json(&simulate(&[
        "--headless",
        "--format",
        "json",
        "--days",
        "0.5",
        "--rate",
        "30",
        "--faults",
        "api=0.05,k8s=0.05,start=0.1,restart=0.02",
    ]));
    for kind in [
        "api_errors",
        "api_timeouts",
        "k8s_errors",
        "start_failures",
        "controller_restarts",
    ] {
        assert!(
            v["faults"][kind].as_u64().expect(kind) > 0,
            "{kind}: {}",
            v["faults"]
        );
    }
}

#[test]
fn bad_trace_rows_are_named_and_exit_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, "submitted_at_s,duration_s\n0,10\n5,ten\n").expect("write");
    let out = simulate(&["--headless", "--trace", path.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3, column 2") && err.contains("\"ten\""),
        "{err}"
    );
}

#[test]
fn unsorted_trace_is_replayed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("jobs.csv");
    std::fs::write(&path, "submitted_at_s,duration_s,resource_class\n600,60,acme/large\n0,30,acme/small\n300,30,acme/small\n").expect("write");
    let v = json(&simulate(&[
        "--headless",
        "--format",
        "json",
        "--trace",
        path.to_str().expect("utf-8 path"),
        "--boot-time",
        "1m",
    ]));
    assert_eq!(v["jobs_completed"], 3);
    assert_eq!(v["classes"].as_array().map(Vec::len), Some(2));
}

#[test]
fn bad_flags_name_the_flag() {
    for (args, needle) in [
        (vec!["--headless", "--boot-time", "5m..2m"], "5m..2m"),
        (vec!["--headless", "--faults", "disk=0.1"], "disk"),
        (vec!["--headless", "--policy", "karpenter"], "karpenter"),
        (vec!["--headless", "--min-replicas", "20"], "min-replicas"),
        (vec!["--headless", "--sweep", "speed=1,2"], "speed"),
        (vec!["--headless", "--idle-timeout", "soon"], "soon"),
    ] {
        let out = simulate(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn sweep_prints_every_point_and_a_pareto_front() {
    let v = json(&simulate(&[
        "--headless",
        "--format",
        "json",
        "--days",
        "0.5",
        "--rate",
        "30",
        "--sweep",
        "min-replicas=0..2",
        "--sweep",
        "idle-timeout=none,5m",
    ]));
    let points = v["points"].as_array().expect("points");
    assert_eq!(points.len(), 6);
    let front = v["pareto"].as_array().expect("pareto");
    assert!(!front.is_empty() && front.len() <= 6);
    for p in points {
        assert_eq!(p["invariant_violations"], 0);
    }
}

#[test]
fn reference_policies_run() {
    for policy in ["seed", "circleci-0.1.2", "arc", "gitlab", "oracle"] {
        let v = json(&simulate(&[
            "--headless",
            "--format",
            "json",
            "--days",
            "0.25",
            "--rate",
            "30",
            "--policy",
            policy,
            "--idle-buffer",
            "2",
            "--headroom",
            "1",
        ]));
        assert_eq!(v["policy"], policy);
        assert_eq!(v["jobs"], v["jobs_completed"], "{policy}");
    }
}

#[test]
fn a_config_file_is_simulated_class_by_class() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "pollInterval: 2s\nresourceClassDefaults:\n  scaling:\n    idleTimeout: 10m\nresourceClasses:\n  \"acme/small\":\n    scaling: {minReplicas: 1, maxReplicas: 4}\n  \"acme/large\":\n    scaling:\n      minReplicas: 0\n      maxReplicas: 6\n      schedules:\n        - {name: workday, start: \"0 8 * * 1-5\", end: \"0 18 * * 1-5\", minReplicas: 2}\n",
    )
    .expect("write");
    let path = config.to_str().expect("utf-8 path");
    let v = json(&simulate(&[
        "--headless",
        "--format",
        "json",
        "--config",
        path,
        "--days",
        "1",
        "--rate",
        "20",
    ]));
    let classes: Vec<&str> = v["classes"]
        .as_array()
        .expect("classes")
        .iter()
        .map(|c| c["class"].as_str().expect("name"))
        .collect();
    assert_eq!(classes, ["acme/large", "acme/small"]);
    assert_eq!(v["jobs"], v["jobs_completed"]);
    assert!(
        v["policy"]
            .as_str()
            .expect("policy")
            .contains("config.yaml")
    );
    // A trace whose classes the config does not define is refused by name.
    let trace = dir.path().join("jobs.csv");
    std::fs::write(
        &trace,
        "submitted_at_s,duration_s,resource_class\n0,10,python\n",
    )
    .expect("write");
    let out = simulate(&[
        "--headless",
        "--config",
        path,
        "--trace",
        trace.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("trace/python") && err.contains("--class-as"),
        "{err}"
    );
    let v = json(&simulate(&[
        "--headless",
        "--format",
        "json",
        "--config",
        path,
        "--trace",
        trace.to_str().expect("utf-8 path"),
        "--class-as",
        "acme/small",
    ]));
    assert_eq!(v["jobs_completed"], 1);
    // A config error names the field.
    std::fs::write(
        &config,
        "resourceClasses:\n  \"acme/small\":\n    scaling: {minReplicas: -1}\n",
    )
    .expect("write");
    let out = simulate(&["--headless", "--config", path]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("minReplicas"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
