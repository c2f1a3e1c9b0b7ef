//! `simulate advise` as a user runs it: advice on a short synthetic workload, a config it
//! writes that `simulate --config` replays, an unreachable target, and traces too poor to fit on.

use std::process::{Command, Output};

fn simulate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(args)
        .output()
        .expect("run simulate")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn temp(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("advise-{}-{name}", std::process::id()))
}

#[test]
fn advice_is_deterministic_and_its_config_replays() {
    let config = temp("config.yaml");
    let values = temp("values.yaml");
    let path = config.to_str().expect("utf-8");
    let args = [
        "advise",
        "--target",
        "p95=3m",
        "--max-replicas",
        "30",
        "--days",
        "1",
        "--rate",
        "20",
        "--format",
        "json",
        "--seed",
        "7",
    ];
    let mut with_files = args.to_vec();
    with_files.extend(["--write-config", path, "--write-values"]);
    with_files.push(values.to_str().expect("utf-8"));
    let out = simulate(&with_files);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["reachable"], true);
    let chosen = v["chosen"].as_u64().expect("chosen") as usize;
    let tried = v["tried"].as_array().expect("tried");
    assert!(tried.len() > 10);
    assert!(tried[chosen]["fit"]["wait_p95_s"].as_f64().expect("p95") <= 180.0);
    let front = v["front"].as_array().expect("front");
    assert!(front.iter().any(|i| i.as_u64() == Some(chosen as u64)));
    // The same seed gives the same advice.
    let again = simulate(&args);
    let w: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(v["tried"], w["tried"]);
    // The written config replays as is.
    let replay = simulate(&[
        "--headless",
        "--config",
        path,
        "--days",
        "1",
        "--rate",
        "20",
        "--seed",
        "7",
    ]);
    assert!(replay.status.success(), "{}", stderr(&replay));
    let helm = std::fs::read_to_string(&values).expect("values written");
    assert!(
        helm.starts_with("# Written by") && helm.contains("provisioner:\n"),
        "{helm}"
    );
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_file(&values);
}

#[test]
fn an_unreachable_target_says_so_and_exits_1() {
    let out = simulate(&[
        "advise",
        "--target",
        "p99=0s",
        "--max-replicas",
        "5",
        "--days",
        "1",
        "--rate",
        "40",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not reached"), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("closest"));
}

#[test]
fn traces_too_poor_to_fit_on_and_bad_targets_are_named() {
    let empty = temp("empty.csv");
    std::fs::write(&empty, "submitted_at_s,duration_s\n").expect("write");
    let out = simulate(&[
        "advise",
        "--target",
        "p95=60s",
        "--trace",
        empty.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no jobs"), "{}", stderr(&out));
    let short = temp("short.csv");
    std::fs::write(&short, "submitted_at_s,duration_s\n0,60\n600,60\n").expect("write");
    let out = simulate(&[
        "advise",
        "--target",
        "p95=60s",
        "--trace",
        short.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("spans 10m"), "{}", stderr(&out));
    let out = simulate(&["advise", "--target", "p42=1s", "--days", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("p42"), "{}", stderr(&out));
    let out = simulate(&[
        "advise",
        "--target",
        "p95=60s",
        "--days",
        "1",
        "--test-from",
        "30d",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("nothing left to measure"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_file(&empty);
    let _ = std::fs::remove_file(&short);
}

#[test]
fn a_bad_time_zone_is_named() {
    let out = simulate(&[
        "advise",
        "--target",
        "p95=60s",
        "--days",
        "1",
        "--timezone",
        "Mars/Olympus_Mons",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("--timezone") && err.contains("\"Mars/Olympus_Mons\"") && err.contains("IANA"),
        "{err}"
    );
}
