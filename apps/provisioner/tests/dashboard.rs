//! The chart's Grafana dashboard and alerts read only metrics this binary exports: every
//! `provisioner_*` name in their queries is a sample name of the exposition, with every family
//! given a value first. And every family's help text names its unit.

use std::collections::BTreeSet;
use std::path::PathBuf;

use provisioner::metrics::{Metrics, Operation};
use provisioner_circleci::{Endpoint, StatusClass};
use provisioner_core::estimate::{Step, VmSeconds};
use provisioner_core::{ErrorKind, FleetCounts, Reclaim, ResourceClass};

fn chart_file(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../chart")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Every family with a series: what a leading controller with one class exports.
fn exposition() -> String {
    let m = Metrics::new();
    let class = ResourceClass::parse("org/a").expect("class");
    m.demand(&class, 1, 1);
    m.decision(&class, 2, Some(2), &FleetCounts::default());
    m.max_replicas(&class, 10);
    m.applied(&class, Some(2), 1, 1);
    m.error(&class, Operation::Observe, ErrorKind::Transient, 1.0);
    m.polled(&class, 1.0);
    m.healing(&class, true, 3, 1);
    m.reclaimed(&class, Reclaim::Unregistered, 1);
    m.estimate(
        &class,
        &Step {
            waiting_job_seconds: 1.0,
            jobs_started: 1,
            warm_jobs: 1,
            waits: vec![(0.0, 1)],
            boot_seconds: vec![60.0],
            vm_seconds: VmSeconds {
                starting: 1.0,
                idle: 1.0,
                busy: 1.0,
                stopped: 1.0,
            },
            failed_starts: 1,
            job_ends: 1,
            idle_outs: 1,
            unregistered: 1,
        },
    );
    m.circleci_latency(Endpoint::Unclaimed, StatusClass::Success, 0.01);
    m.kubernetes_latency(Operation::Observe, 0.01);
    m.cycle(0.01);
    m.set_leader(true);
    m.config_applied(1, 1.0, true);
    m.reload_failed();
    m.encode()
}

/// The sample names of an exposition (`provisioner_x_total`, `provisioner_y_bucket`, ...).
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// `provisioner_*` identifiers in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("provisioner_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.insert(tail[..len].to_owned());
        }
        rest = &tail[len..];
    }
    names
}

#[test]
fn the_dashboard_and_alerts_query_only_exported_metrics() {
    let exported = sample_names(&exposition());
    let dashboard = chart_file("dashboards/runner-provisioner.json");
    let dashboard_json: serde_json::Value = serde_json::from_str(&dashboard).expect("JSON");
    let mut queries = String::new();
    for panel in dashboard_json["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push_str(target["expr"].as_str().expect("expr"));
            queries.push('\n');
        }
    }
    queries.push_str(
        dashboard_json["templating"]["list"][1]["definition"]
            .as_str()
            .expect("class variable"),
    );
    let rules = chart_file("templates/prometheusrule.yaml");
    for (what, text) in [("dashboard", &queries), ("alerts", &rules)] {
        let used = metric_names(text);
        assert!(used.len() >= 5, "{what} reads only {used:?}");
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{what} queries metrics the binary does not export: {unknown:?}\nexported: {exported:?}"
        );
    }
    // The estimate's families are what the dashboard is for; the healing ones show why VMs went.
    let used = metric_names(&queries);
    for name in [
        "provisioner_waiting_job_seconds_total",
        "provisioner_jobs_started_total",
        "provisioner_jobs_warm_total",
        "provisioner_job_wait_seconds_bucket",
        "provisioner_vm_seconds_total",
        "provisioner_vm_boot_seconds_bucket",
        "provisioner_vms_reclaimed_total",
        "provisioner_registration_breaker_open",
        "provisioner_warm_vms",
    ] {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }
}

#[test]
fn a_misspelt_metric_would_be_caught() {
    let exported = sample_names(&exposition());
    let used = metric_names("rate(provisioner_jobs_startd_total[5m]) / provisioner_leader");
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert_eq!(unknown, [&"provisioner_jobs_startd_total".to_owned()]);
}

#[test]
fn every_family_has_help_with_its_unit() {
    let text = exposition();
    let helps: Vec<&str> = text.lines().filter(|l| l.starts_with("# HELP ")).collect();
    assert!(helps.len() >= 28, "{} families", helps.len());
    for help in helps {
        let unit = help.rsplit_once('(').map(|(_, u)| u);
        assert!(
            unit.is_some_and(|u| u.ends_with(").") || u.ends_with(')')),
            "no unit in {help:?}"
        );
    }
}
