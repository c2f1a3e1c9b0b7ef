//! The compare view's "advised" row: the policy of a config the advisor wrote (`--advised
//! FILE`), replayed as `--config FILE` would replay it, beside the reference policies.

use std::path::{Path, PathBuf};

use clap::Parser;
use provisioner_core::policy::Timezone;
use provisioner_sim::advise::{AdviseOptions, Target, advise, config_yaml};

use super::app::{Action, View};
use super::tests::{app_with, screen};
use crate::cli::Args;
use crate::compare::{ADVISED, REFERENCE_POLICIES};
use crate::setup::{setup, simulate, trace};

/// The one-day workload the TUI tests replay.
const WORKLOAD: [&str; 6] = ["--days", "1", "--rate", "30", "--seed", "3"];

fn args(extra: &[&str]) -> Args {
    let mut argv = vec!["simulate"];
    argv.extend_from_slice(&WORKLOAD);
    argv.extend_from_slice(extra);
    Args::try_parse_from(argv).expect("valid flags")
}

/// What `simulate advise --target p95=5m --max-replicas 30 --write-config FILE` writes for
/// the test workload (the advisor's own search, fitted on the first 18 hours).
fn advised_config(dir: &Path) -> PathBuf {
    let flags = args(&["--max-replicas", "30"]);
    let (trace, _) = trace(&flags).expect("synthetic trace");
    let base = setup(&flags).expect("setup");
    let advice = advise(
        &trace,
        &AdviseOptions {
            target: Target::parse("p95=5m").expect("target"),
            test_from: None,
            max_replicas: 30,
            timezone: Timezone::utc(),
            sim: base.options,
        },
    )
    .expect("advice");
    let path = dir.join("advised.yaml");
    std::fs::write(&path, config_yaml(&trace, &advice)).expect("write the advised config");
    path
}

#[test]
fn the_advised_row_is_a_replay_of_the_advised_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = advised_config(dir.path());
    let file = config.to_str().expect("utf-8 path");
    let mut app = app_with(&["--advised", file]);
    app.handle(Action::ToggleCompare);
    app.refresh();
    assert_eq!(app.view, View::Compare);
    let rows = app.compare.as_ref().expect("compare rows");
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    let mut expected = vec!["current (provisioner)"];
    expected.extend(REFERENCE_POLICIES);
    expected.push(ADVISED);
    assert_eq!(
        names, expected,
        "the advised row comes after the references"
    );
    // The same figures as running the file with --config.
    let as_config = args(&["--config", file]);
    let (t, _) = trace(&as_config).expect("trace");
    let headless = simulate(&t, &setup(&as_config).expect("setup")).expect("run the config");
    let advised = rows.last().expect("advised row");
    assert!(!advised.is_current);
    assert_eq!(
        (advised.report.wait_p95_s, advised.report.vm_hours),
        (headless.wait_p95_s, headless.vm_hours)
    );
    assert_eq!(advised.report.jobs, headless.jobs);
    // A change of the flags' policy re-runs the comparison; the advised row stays the file's.
    app.handle(Action::Increase);
    app.refresh();
    let rows = app.compare.as_ref().expect("re-run compare rows");
    assert_eq!(
        rows.last().map(|r| r.point.vm_hours),
        Some(headless.vm_hours)
    );
}

#[test]
fn a_config_without_the_traces_classes_is_named_in_the_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("other.yaml");
    std::fs::write(
        &path,
        "resourceClasses:\n  \"other/class\":\n    scaling:\n      minReplicas: 0\n      maxReplicas: 5\n",
    )
    .expect("write");
    let mut app = app_with(&["--advised", path.to_str().expect("utf-8 path")]);
    app.handle(Action::ToggleCompare);
    app.refresh();
    assert!(app.compare.is_none());
    assert!(
        app.status.contains("--advised") && app.status.contains("other.yaml"),
        "{}",
        app.status
    );
}

#[test]
fn compare_with_advised_80x24_and_160x48() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = advised_config(dir.path());
    let mut app = app_with(&["--advised", config.to_str().expect("utf-8 path")]);
    app.handle(Action::End);
    app.handle(Action::ToggleCompare);
    app.refresh();
    insta::assert_snapshot!("compare_advised_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("compare_advised_160x48", screen(&app, 160, 48));
}
