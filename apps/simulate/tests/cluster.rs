//! The cluster model, the phases and the benchmark scenarios as a user runs them.

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

/// Exit 2 with a message naming `value`.
fn refused(args: &[&str], value: &str) {
    let out = simulate(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(value),
        "{args:?} should name {value}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

const SMALL_RUN: [&str; 6] = ["--headless", "--days", "0.2", "--rate", "30", "--format"];

#[test]
fn phases_cut_the_json_report_into_windows() {
    let mut args = SMALL_RUN.to_vec();
    args.extend(["json", "--phases", "1h,2h"]);
    let v = json(&simulate(&args));
    let phases = v["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 3, "{v}");
    assert_eq!(
        (phases[0]["start_s"].as_f64(), phases[0]["end_s"].as_f64()),
        (Some(0.0), Some(3600.0))
    );
    assert_eq!(phases[1]["start_s"].as_f64(), Some(3600.0));
    for field in [
        "jobs",
        "wait_p50_s",
        "wait_p90_s",
        "wait_p95_s",
        "wait_p99_s",
        "vm_hours",
    ] {
        assert!(
            phases[0].get(field).is_some(),
            "missing {field}: {}",
            phases[0]
        );
    }
    let jobs: u64 = phases
        .iter()
        .map(|p| p["jobs"].as_u64().expect("jobs"))
        .sum();
    assert_eq!(Some(jobs), v["jobs"].as_u64());
    let vm_hours: f64 = phases
        .iter()
        .map(|p| p["vm_hours"].as_f64().expect("vm_hours"))
        .sum();
    let total = v["vm_hours"].as_f64().expect("vm_hours");
    assert!((vm_hours - total).abs() < 1e-6, "{vm_hours} vs {total}");
    assert_eq!(v["classes"][0]["phases"].as_array().map(Vec::len), Some(3));
}

#[test]
fn without_cluster_flags_the_report_has_no_cluster_block() {
    let mut args = SMALL_RUN.to_vec();
    args.push("json");
    let v = json(&simulate(&args));
    assert!(
        v.get("cluster").is_none() && v.get("phases").is_none(),
        "{v}"
    );
}

#[test]
fn a_cluster_too_small_leaves_vms_unschedulable_and_says_so() {
    let mut args = SMALL_RUN.to_vec();
    args.extend([
        "json",
        "--nodes",
        "1",
        "--node-size",
        "4/16Gi",
        "--vm-size",
        "2/7Gi",
        "--max-replicas",
        "10",
    ]);
    let v = json(&simulate(&args));
    let cluster = &v["cluster"];
    assert!(cluster["unschedulable"].as_u64().expect("count") > 0, "{v}");
    assert_eq!(cluster["peak_nodes"].as_u64(), Some(1));
    assert_eq!(v["jobs"], v["jobs_completed"]);
    assert_eq!(
        v["invariant_violations"].as_array().map(Vec::len),
        Some(0),
        "{v}"
    );
}

#[test]
fn bad_cluster_input_is_refused_naming_the_value() {
    refused(&["--headless", "--nodes", "0"], "\"0\"");
    refused(&["--headless", "--nodes", "6..2"], "\"6..2\"");
    refused(&["--headless", "--vm-size", "8/lots"], "\"lots\"");
    refused(&["--headless", "--node-size", "48"], "\"48\"");
    refused(
        &[
            "--headless",
            "--node-size",
            "48/96Gi",
            "--vm-size",
            "8/128Gi",
        ],
        "8/128Gi",
    );
    refused(&["--headless", "--preset", "gke"], "gke");
    refused(&["--headless", "--phases", "2h,1h"], "\"1h\"");
    refused(&["--headless", "--scenario", "mro-steps"], "'mro-steps'");
}

#[test]
fn help_lists_the_presets_and_scenarios() {
    let out = simulate(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for name in provisioner_sim::cluster::PRESETS.map(|(n, _)| n) {
        assert!(help.contains(name), "--help misses preset {name}: {help}");
    }
    for name in provisioner_sim::scenarios::SCENARIO_NAMES {
        assert!(help.contains(name), "--help misses scenario {name}: {help}");
    }
}

#[test]
fn a_scenario_runs_in_one_command_with_its_phases() {
    let v = json(&simulate(&[
        "--headless",
        "--scenario",
        "mro-burst-mixed",
        "--format",
        "json",
    ]));
    assert_eq!(v["phases"].as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(v["classes"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["jobs"].as_u64(), Some(2 + 20 + 15));
    assert!(
        v["cluster"]["nodes_added"].as_u64().expect("nodes") > 0,
        "{v}"
    );
    let table = simulate(&["--headless", "--scenario", "mro-burst-mixed"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("cool-down") && text.contains("p90"), "{text}");
}

#[test]
fn calibration_prints_the_readme_table() {
    let out = simulate(&["--calibration"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../adapters/sim/README.md"
    ))
    .expect("README");
    assert!(readme.contains(table.trim_end()), "{table}");
}
