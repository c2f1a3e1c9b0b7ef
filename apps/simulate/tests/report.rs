//! `--report FILE`: the file parses as XML (HTML written as XHTML, or SVG) and holds the
//! figures of the headless JSON run with the same flags and seed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

const FLAGS: [&str; 8] = [
    "--days",
    "1",
    "--rate",
    "30",
    "--seed",
    "7",
    "--min-replicas",
    "2",
];

fn simulate(extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(FLAGS)
        .args(extra)
        .output()
        .expect("the simulate binary runs")
}

/// The headless JSON, parsed and as text (parsing may round a float's last digit, so the
/// exact figures are read from the text).
fn headless_json() -> (serde_json::Value, String) {
    let out = simulate(&["--headless", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    (serde_json::from_str(&text).expect("headless JSON"), text)
}

/// A top-level field's number exactly as written (top-level fields come before `classes`,
/// whose entries repeat some names).
fn raw_number<'a>(text: &'a str, key: &str) -> &'a str {
    let needle = format!("\n  \"{key}\": ");
    let start = text
        .find(&needle)
        .unwrap_or_else(|| panic!("headless JSON has no top-level {key}"))
        + needle.len();
    let rest = &text[start..];
    let end = rest.find([',', '\n']).unwrap_or(rest.len());
    &rest[..end]
}

/// The report parsed as XML (the HTML is written as XHTML, with a doctype).
fn xml(text: &str) -> Result<roxmltree::Document<'_>, roxmltree::Error> {
    roxmltree::Document::parse_with_options(
        text,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..roxmltree::ParsingOptions::default()
        },
    )
}

/// `data-key` -> (`data-value`, the text shown) of every element carrying one.
fn figures(doc: &roxmltree::Document<'_>) -> BTreeMap<String, (String, String)> {
    doc.descendants()
        .filter_map(|n| {
            let key = n.attribute("data-key")?;
            let value = n.attribute("data-value")?;
            let text: String = n
                .descendants()
                .filter(|d| d.is_text())
                .filter_map(|d| d.text())
                .collect();
            Some((key.to_owned(), (value.to_owned(), text)))
        })
        .collect()
}

fn check_against_headless(path: &Path, root: &str) {
    let text = std::fs::read_to_string(path).expect("the report was written");
    let doc = xml(&text).unwrap_or_else(|e| panic!("{} is not well-formed: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), root);
    assert!(
        !text.contains("<script") && !text.contains("href=\"http") && !text.contains("src="),
        "the report must be self-contained"
    );
    let svgs = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "svg")
        .count();
    assert!(svgs >= 5, "five charts expected, found {svgs} svg elements");
    assert!(
        doc.descendants().any(|n| n.tag_name().name() == "polyline"),
        "time-series charts draw lines"
    );

    let (json, raw) = headless_json();
    let found = figures(&doc);
    let keys = [
        "jobs",
        "jobs_completed",
        "wait_p50_s",
        "wait_p95_s",
        "wait_p99_s",
        "wait_max_s",
        "wait_mean_s",
        "vm_hours",
        "busy_vm_hours",
        "idle_vm_hours",
        "boot_vm_hours",
        "stopped_vm_hours",
        "vms_created",
        "peak_vms",
        "events",
        "controller_cycles",
        "sim_seconds",
    ];
    for key in keys {
        let expected = &json[key];
        assert!(expected.is_number(), "headless JSON has no number {key}");
        let (value, shown) = found
            .get(key)
            .unwrap_or_else(|| panic!("{} has no figure {key}", path.display()));
        assert_eq!(
            value,
            raw_number(&raw, key),
            "{key}: report vs headless JSON"
        );
        let number = expected.as_f64().expect("a number");
        let people = if expected.is_f64() {
            if key == "sim_seconds" {
                format!("{number:.0}")
            } else {
                format!("{number:.1}")
            }
        } else {
            expected.to_string()
        };
        assert_eq!(shown.trim(), people, "{key} as shown");
    }
    assert!(
        json["jobs"].as_u64().expect("jobs") > 100,
        "the fixture replays a real workload"
    );
    assert!(
        text.contains("oracle") && text.contains("gitlab") && text.contains("Pareto"),
        "the compare chart names the reference policies and the front"
    );
}

#[test]
fn html_report_holds_the_headless_figures() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("review.html");
    let out = simulate(&["--report", path.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrote"));
    check_against_headless(&path, "html");
}

#[test]
fn svg_report_holds_the_headless_figures() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("review.svg");
    let out = simulate(&["--report", path.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_against_headless(&path, "svg");
}

#[test]
fn report_rejects_an_unknown_extension_and_escapes_names() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("review.pdf");
    let out = simulate(&["--report", bad.to_str().expect("utf-8 path")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("review.pdf") && err.contains(".html or .svg"),
        "{err}"
    );
    assert!(!bad.exists());

    // A trace whose path needs escaping still gives a well-formed file.
    let trace = dir.path().join("a&b<c>.csv");
    std::fs::write(
        &trace,
        "submitted_at_s,duration_s\n0,60\n30,120\n90,45\n4000,300\n",
    )
    .expect("write trace");
    let path = dir.path().join("r.html");
    let out = Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(["--trace", trace.to_str().expect("utf-8")])
        .args(["--report", path.to_str().expect("utf-8")])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).expect("written");
    let doc = xml(&text).expect("well-formed despite the file name");
    assert!(
        doc.descendants()
            .any(|n| n.text().is_some_and(|t| t.contains("a&b<c>.csv"))),
        "the trace's name is shown, escaped"
    );
    assert_eq!(figures(&doc)["jobs"].0, "4");
}

#[test]
fn headless_with_report_prints_what_headless_alone_prints() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("r.svg");
    let both = simulate(&[
        "--headless",
        "--format",
        "json",
        "--report",
        path.to_str().expect("utf-8"),
    ]);
    assert!(
        both.status.success(),
        "{}",
        String::from_utf8_lossy(&both.stderr)
    );
    assert!(path.exists());
    let mut with_report: serde_json::Value =
        serde_json::from_slice(&both.stdout).expect("JSON on stdout");
    let (mut alone, _) = headless_json();
    for v in [&mut with_report, &mut alone] {
        v.as_object_mut()
            .expect("an object")
            .remove("wall_seconds")
            .expect("wall_seconds, the one field that differs between runs");
    }
    assert_eq!(with_report, alone);
}

#[test]
fn headless_with_report_names_the_policy_and_prints_the_same_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("r.html");
    let flags = ["--policy", "seed", "--headless", "--format", "table"];
    let both = simulate(&[&flags[..], &["--report", path.to_str().expect("utf-8")]].concat());
    assert!(
        both.status.success(),
        "{}",
        String::from_utf8_lossy(&both.stderr)
    );
    let alone = simulate(&flags);
    // The wall time is the one figure that differs between two runs.
    let lines = |out: &Output| -> Vec<String> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.contains("s wall"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(lines(&both), lines(&alone));
    assert!(
        lines(&both)
            .iter()
            .any(|l| l.starts_with("policy") && l.ends_with(" seed")),
        "{:?}",
        lines(&both)
    );
    let text = std::fs::read_to_string(&path).expect("written");
    assert!(
        text.contains("<h1>Runner provisioner simulation: seed policy</h1>"),
        "the report names the policy it ran"
    );
}

#[test]
fn a_closed_stdout_ends_quietly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("r.svg");
    let mut child = Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(FLAGS)
        .args(["--headless", "--report", path.to_str().expect("utf-8")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the simulate binary runs");
    // As `simulate ... | head -0`: the reader is gone before the first line is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("it exits");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(path.exists());
}

/// The same synthetic workload without the policy flags (a `--config` replaces them).
const WORKLOAD: [&str; 6] = ["--days", "1", "--rate", "30", "--seed", "7"];

#[test]
fn report_shows_the_advised_policy_as_its_config_replays() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("advised.yaml");
    let config_path = config.to_str().expect("utf-8 path");
    let advise = Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(["advise", "--target", "p95=5m", "--max-replicas", "30"])
        .args(WORKLOAD)
        .args(["--write-config", config_path])
        .output()
        .expect("simulate advise runs");
    assert!(
        advise.status.code().is_some_and(|c| c <= 1) && config.exists(),
        "{}",
        String::from_utf8_lossy(&advise.stderr)
    );
    let path = dir.path().join("review.html");
    let out = Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(WORKLOAD)
        .args(["--report", path.to_str().expect("utf-8 path")])
        .args(["--advised", config_path])
        .output()
        .expect("simulate --report runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).expect("the report was written");
    let doc = xml(&text).expect("well-formed");
    let row = doc
        .descendants()
        .find(|n| n.attribute("data-policy") == Some("advised"))
        .expect("an advised row in the compare table");
    let cell = |key: &str| {
        row.descendants()
            .find(|n| n.attribute("data-compare") == Some(key))
            .and_then(|n| n.attribute("data-value"))
            .unwrap_or_else(|| panic!("the advised row has no {key}"))
            .to_owned()
    };
    let headless = Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(WORKLOAD)
        .args(["--headless", "--format", "json", "--config", config_path])
        .output()
        .expect("simulate --config runs");
    let raw = String::from_utf8(headless.stdout).expect("utf-8");
    for key in [
        "wait_p50_s",
        "wait_p95_s",
        "wait_p99_s",
        "vm_hours",
        "idle_vm_hours",
    ] {
        assert_eq!(cell(key), raw_number(&raw, key), "advised {key}");
    }
    assert!(text.contains("advised.yaml"), "the report names the file");
}
