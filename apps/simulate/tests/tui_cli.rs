//! The TUI's entry from the command line, without a terminal (as in CI and pipes).

use std::process::{Command, Stdio};

#[test]
fn without_a_terminal_it_points_to_headless() {
    let out = Command::new(env!("CARGO_BIN_EXE_simulate"))
        .stdin(Stdio::null())
        .output()
        .expect("the simulate binary runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stdout is not a terminal") && err.contains("--headless"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "no escape codes written to a pipe: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn report_flag_does_not_mix_with_sweeps() {
    let out = Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(["--report", "r.html", "--sweep", "min-replicas=0..2"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sweep"));
}
