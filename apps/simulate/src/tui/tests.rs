//! The TUI without a terminal: state changes from actions, and rendering snapshots at 80x24
//! and 160x48 on ratatui's `TestBackend`. A one-day synthetic trace keeps these fast and the
//! seeds keep them stable; nothing here reads the wall clock.

use clap::Parser;
use provisioner_core::{Duration, Scaling};
use provisioner_sim::{BootTime, PolicyChoice, Scalings};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use super::app::{Action, App, SPEEDS, View, busiest_hour};
use crate::cli::Args;
use crate::controls::{Control, values};
use crate::setup::{setup, trace};

pub(super) fn app_with(flags: &[&str]) -> App {
    let mut argv = vec!["simulate", "--days", "1", "--rate", "30", "--seed", "3"];
    argv.extend_from_slice(flags);
    let args = Args::try_parse_from(argv).expect("valid flags");
    let (trace, what) = trace(&args).expect("synthetic trace");
    let setup = setup(&args).expect("setup");
    App::new(trace, what, setup).expect("the first run")
}

fn app() -> App {
    app_with(&[])
}

fn select(app: &mut App, control: Control) {
    while app.selected_control() != control {
        app.handle(Action::NextControl);
    }
}

pub(super) fn screen(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    terminal
        .draw(|frame| app.render(frame))
        .expect("draw on the test backend");
    terminal.backend().to_string()
}

#[test]
fn a_key_changes_the_policy_and_the_rerun_keeps_the_previous_result() {
    let mut app = app();
    assert!(app.previous.is_none());
    assert!(!app.pending());
    let first = app.current.report.clone();
    select(&mut app, Control::MinReplicas);
    app.handle(Action::Increase);
    assert_eq!(app.setup.params.min_replicas, 4);
    assert!(app.pending(), "a policy change asks for a re-run");
    assert_eq!(app.current.report, first, "nothing re-runs before refresh");
    app.refresh();
    assert!(!app.pending());
    let previous = app.previous.as_ref().expect("the run before the change");
    assert_eq!(previous.report, first);
    assert_eq!(previous.values[1], "3");
    assert_eq!(app.current.values[1], "4");
    assert_ne!(
        app.current.report.vm_hours, first.vm_hours,
        "one more VM kept warm changes the VM-hours"
    );
    assert!(app.status.starts_with("re-ran"), "{}", app.status);
}

#[test]
fn every_listed_control_moves_and_reruns() {
    for (control, expect_up) in [
        (Control::MinReplicas, "4"),
        (Control::MaxReplicas, "11"),
        (Control::IdleTimeout, "never"),
        (Control::Headroom, "1"),
        (Control::MaxSurge, "1"),
        (Control::ScaleDownDelay, "15s"),
        (Control::IdleBuffer, "1"),
        (Control::ServiceLevel, "50%"),
        (Control::ScaleFactor, "0.1"),
        (Control::BootMin, "2m30s"),
        (Control::BootMax, "5m30s"),
        (Control::Policy, "predictive"),
        (Control::Cluster, "mro-eks"),
    ] {
        let mut app = app();
        select(&mut app, control);
        let index = app.selected;
        if control == Control::IdleTimeout {
            // Default is "never", the top; step down first.
            app.handle(Action::Decrease);
            assert_eq!(app.values()[index], "8h", "{control:?} down");
        }
        app.handle(Action::Increase);
        assert_eq!(app.values()[index], expect_up, "{control:?} up");
        app.refresh();
        assert_eq!(app.current.values[index], expect_up, "{control:?} ran");
        assert!(
            app.previous.is_some(),
            "{control:?}: the change re-ran the trace"
        );
    }
}

#[test]
fn the_cluster_control_turns_the_model_on_and_the_node_range_moves() {
    let mut app = app();
    assert!(app.current.report.cluster.is_none(), "off by default");
    select(&mut app, Control::NodesMax);
    app.handle(Action::Increase);
    assert!(!app.pending());
    assert!(
        app.status.contains("needs the cluster model"),
        "{}",
        app.status
    );

    select(&mut app, Control::Cluster);
    app.handle(Action::Increase);
    assert_eq!(app.values()[app.selected], "mro-eks");
    app.refresh();
    let counts = app.current.report.cluster.expect("the model ran");
    assert!(counts.peak_nodes >= 2, "{counts:?}");
    assert!(app.status.contains("cluster: peak"), "{}", app.status);
    // The trace's classes set no spec: they boot the controller's default VM (1 CPU, 2 GiB).
    let model = app.setup.options.cluster.as_ref().expect("on");
    assert_eq!(
        model.default_size.map(|s| s.to_string()).as_deref(),
        Some("1/2Gi")
    );

    let index = |c| Control::ALL.iter().position(|x| *x == c).expect("listed");
    assert_eq!(app.values()[index(Control::NodesMin)], "2");
    assert_eq!(app.values()[index(Control::NodesMax)], "6");
    select(&mut app, Control::NodesMax);
    assert!(
        screen(&app, 80, 24).contains("▸nodes max"),
        "a short terminal scrolls the controls to the selection"
    );
    app.handle(Action::Decrease);
    assert_eq!(app.values()[index(Control::NodesMax)], "5");
    select(&mut app, Control::NodesMin);
    app.handle(Action::IncreaseMore);
    assert_eq!(
        app.values()[index(Control::NodesMin)],
        "5",
        "min stops at max"
    );
    assert!(
        app.status.contains("minimum is above the maximum"),
        "{}",
        app.status
    );
    app.refresh();
    assert_eq!(
        app.current.report.cluster.expect("on").peak_nodes,
        5,
        "a fixed 5-node cluster"
    );

    select(&mut app, Control::Cluster);
    app.handle(Action::Increase);
    assert_eq!(app.values()[app.selected], "kind");
    assert_eq!(
        app.values()[index(Control::NodesMax)],
        "1",
        "the preset's nodes"
    );
    app.handle(Action::Increase);
    assert_eq!(app.values()[app.selected], "off");
    assert_eq!(app.values()[index(Control::NodesMin)], "-");
    app.refresh();
    assert!(app.current.report.cluster.is_none());
    let text = screen(&app, 160, 48);
    assert!(text.contains("cluster        off"), "{text}");
}

#[test]
fn a_scenario_keeps_its_vm_sizes_when_the_cluster_goes_off_and_on() {
    let args =
        Args::try_parse_from(["simulate", "--scenario", "mro-burst-large"]).expect("valid flags");
    let (trace, what) = trace(&args).expect("scenario trace");
    let mut app = App::new(trace, what, setup(&args).expect("setup")).expect("first run");
    select(&mut app, Control::Cluster);
    assert_eq!(app.values()[app.selected], "mro-eks");
    app.handle(Action::Decrease);
    assert_eq!(app.values()[app.selected], "off");
    app.refresh();
    assert!(app.current.report.cluster.is_none());
    app.handle(Action::Increase);
    app.refresh();
    let model = app
        .current
        .setup
        .options
        .cluster
        .as_ref()
        .expect("on again");
    assert_eq!(
        model
            .sizes
            .values()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["8/32Gi"]
    );
    assert!(app.current.report.cluster.is_some());
}

#[test]
fn bad_values_are_refused_with_the_reason() {
    let mut app = app_with(&["--min-replicas", "10"]);
    select(&mut app, Control::MinReplicas);
    app.handle(Action::Increase);
    assert_eq!(app.setup.params.min_replicas, 10);
    assert!(!app.pending());
    assert!(
        app.status
            .contains("min-replicas 11 is above max-replicas 10"),
        "{}",
        app.status
    );

    let mut app = app_with(&["--idle-timeout", "1m", "--scale-down-delay", "1m"]);
    select(&mut app, Control::IdleTimeout);
    app.handle(Action::Decrease);
    assert_eq!(app.setup.params.idle_timeout, Some(Duration::from_secs(60)));
    assert!(app.status.contains("scale-down-delay"), "{}", app.status);

    let mut app = app_with(&["--boot-time", "2m..2m"]);
    select(&mut app, Control::BootMin);
    app.handle(Action::Increase);
    assert!(app.status.contains("boot time min"), "{}", app.status);
    assert_eq!(
        app.setup.options.boot_time,
        BootTime::parse("2m..2m").expect("range")
    );
    select(&mut app, Control::MinReplicas);
    for _ in 0..3 {
        app.handle(Action::Decrease);
    }
    assert_eq!(app.setup.params.min_replicas, 0);
    app.handle(Action::Decrease);
    assert!(app.status.contains("lowest"), "{}", app.status);
    assert!(!app.pending() || app.setup.params.min_replicas == 0);
}

#[test]
fn reset_returns_to_the_command_line_policy() {
    let mut app = app();
    let initial = values(&app.setup);
    select(&mut app, Control::MaxReplicas);
    app.handle(Action::Decrease);
    app.handle(Action::Decrease);
    app.refresh();
    assert_ne!(app.current.values, initial);
    app.handle(Action::Reset);
    assert!(app.pending());
    app.refresh();
    assert_eq!(app.current.values, initial);
    app.handle(Action::Reset);
    assert!(!app.pending(), "nothing to reset");
}

#[test]
fn a_config_policy_is_read_only_but_boot_time_is_not() {
    let mut app = app();
    app.setup.config_policy = Some(PolicyChoice::Provisioner(Scalings::one(Scaling::default())));
    select(&mut app, Control::MinReplicas);
    app.handle(Action::Increase);
    assert!(!app.pending());
    assert!(app.status.contains("--config"), "{}", app.status);
    select(&mut app, Control::BootMax);
    app.handle(Action::Decrease);
    assert!(app.pending());
    app.refresh();
    assert_eq!(app.current.values[app.selected], "4m30s");
    assert_eq!(app.current.values[0], "config");
}

#[test]
fn replay_moves_with_wall_time_and_speed() {
    let mut app = app();
    assert_eq!(app.cursor_s, 0.0);
    assert!(!app.paused);
    app.advance(std::time::Duration::from_secs(1));
    assert_eq!(app.cursor_s, SPEEDS[app.speed].0);
    app.handle(Action::TogglePause);
    app.advance(std::time::Duration::from_secs(1));
    assert_eq!(app.cursor_s, SPEEDS[app.speed].0, "paused");
    app.handle(Action::TogglePause);
    let speed = app.speed;
    app.handle(Action::Faster);
    assert_eq!(app.speed, speed + 1);
    for _ in 0..10 {
        app.handle(Action::Faster);
    }
    assert_eq!(app.speed, SPEEDS.len() - 1, "speed stops at the fastest");
    app.advance(std::time::Duration::from_secs(3600));
    assert_eq!(app.cursor_s, app.end_s(), "the replay stops at the end");
    assert!(app.paused);
    app.handle(Action::TogglePause);
    assert_eq!(app.cursor_s, 0.0, "play at the end starts over");
    app.handle(Action::End);
    assert_eq!(app.cursor_s, app.end_s());
    app.handle(Action::Start);
    assert_eq!(app.cursor_s, 0.0);
}

#[test]
fn busiest_hour_is_the_hour_with_most_arrivals() {
    let mut app = app();
    let args = Args::try_parse_from(["simulate", "--days", "1", "--rate", "30", "--seed", "3"])
        .expect("flags");
    let (trace, _) = trace(&args).expect("trace");
    let mut counts = std::collections::BTreeMap::<i64, usize>::new();
    for j in &trace.jobs {
        *counts.entry(j.arrival_ms / 3_600_000).or_default() += 1;
    }
    let most = counts.values().copied().max().expect("jobs");
    let busiest = busiest_hour(&trace).expect("busiest");
    assert_eq!(busiest.jobs, most);
    assert_eq!(counts[&((busiest.start_s / 3600.0) as i64)], most);
    app.handle(Action::BusiestHour);
    assert!(app.paused);
    assert_eq!(app.cursor_s, busiest.start_s + 3600.0);
    assert!(app.status.contains("busiest hour"), "{}", app.status);
}

#[test]
fn compare_runs_the_reference_policies_and_marks_the_front() {
    let mut app = app();
    app.handle(Action::ToggleCompare);
    assert_eq!(app.view, View::Compare);
    assert!(app.compare.is_none());
    app.refresh();
    let rows = app.compare.as_ref().expect("compare rows");
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "current (provisioner)",
            "seed",
            "circleci-0.1.2",
            "arc",
            "gitlab",
            "predictive",
            "oracle"
        ]
    );
    assert_eq!(rows.iter().filter(|r| r.is_current).count(), 1);
    assert_eq!(rows[0].point.vm_hours, app.current.report.vm_hours);
    for r in rows {
        let dominated = rows.iter().any(|o| {
            o.point.vm_hours <= r.point.vm_hours
                && o.point.wait_p95_s <= r.point.wait_p95_s
                && (o.point.vm_hours < r.point.vm_hours || o.point.wait_p95_s < r.point.wait_p95_s)
        });
        assert_eq!(r.point.pareto, !dominated, "{}", r.name);
    }
    assert!(rows.iter().any(|r| r.point.pareto));
    // A policy change drops the comparison and the open view runs it again.
    select(&mut app, Control::MinReplicas);
    app.handle(Action::Increase);
    app.refresh();
    let rows = app.compare.as_ref().expect("re-run compare rows");
    assert_eq!(rows[0].point.vm_hours, app.current.report.vm_hours);
    app.handle(Action::ToggleHelp);
    assert_eq!(app.view, View::Help);
    app.handle(Action::ToggleHelp);
    assert_eq!(app.view, View::Compare, "help returns where it was opened");
    app.handle(Action::Back);
    assert_eq!(app.view, View::Dashboard);
    app.handle(Action::Quit);
    assert!(app.quit);
}

#[test]
fn renders_at_any_size_without_panicking() {
    let mut app = app();
    app.handle(Action::End);
    for view in [Action::Back, Action::ToggleCompare, Action::ToggleHelp] {
        app.handle(view);
        app.refresh();
        for (w, h) in [
            (1, 1),
            (20, 5),
            (79, 24),
            (80, 23),
            (80, 24),
            (100, 30),
            (250, 80),
        ] {
            let text = screen(&app, w, h);
            assert_eq!(text.lines().count(), usize::from(h));
        }
    }
}

#[test]
fn too_small_a_terminal_says_so() {
    let text = screen(&app(), 60, 20);
    assert!(text.contains("too small"), "{text}");
    assert!(text.contains("60x20") && text.contains("80x24"), "{text}");
    insta::assert_snapshot!("too_small_60x20", text);
}

#[test]
fn dashboard_80x24() {
    let mut app = app();
    app.handle(Action::End);
    insta::assert_snapshot!("dashboard_80x24", screen(&app, 80, 24));
}

#[test]
fn dashboard_160x48_after_a_change() {
    let mut app = app();
    select(&mut app, Control::MinReplicas);
    app.handle(Action::Increase);
    app.refresh();
    app.handle(Action::BusiestHour);
    let text = screen(&app, 160, 48);
    assert!(text.contains("was 3"), "the previous value is shown");
    insta::assert_snapshot!("dashboard_160x48_after_change", text);
}

#[test]
fn compare_80x24_and_160x48() {
    let mut app = app();
    app.handle(Action::End);
    app.handle(Action::ToggleCompare);
    app.refresh();
    insta::assert_snapshot!("compare_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("compare_160x48", screen(&app, 160, 48));
}

#[test]
fn help_80x24_and_160x48() {
    let mut app = app();
    app.handle(Action::ToggleHelp);
    insta::assert_snapshot!("help_80x24", screen(&app, 80, 24));
    insta::assert_snapshot!("help_160x48", screen(&app, 160, 48));
}

#[test]
fn narrow_help_scrolls_to_every_line() {
    let mut app = app();
    app.handle(Action::ToggleHelp);
    assert!(!screen(&app, 80, 24).contains("knows every arrival"));
    for _ in 0..40 {
        app.handle(Action::NextControl);
    }
    let text = screen(&app, 80, 24);
    assert!(text.contains("knows every arrival"), "{text}");
    assert_eq!(app.selected, 1, "scrolling the help leaves the selection");
    assert!(
        screen(&app, 160, 48).contains("knows every arrival"),
        "a wide terminal shows it all"
    );
}

#[test]
fn big_steps_go_ten_at_a_time_and_stop_at_a_limit() {
    let mut app = app();
    select(&mut app, Control::MaxReplicas);
    app.handle(Action::IncreaseMore);
    assert_eq!(app.setup.params.max_replicas, 20);
    select(&mut app, Control::MinReplicas);
    app.handle(Action::DecreaseMore);
    assert_eq!(app.setup.params.min_replicas, 0, "stops at zero");
    assert!(app.status.contains("stopped there"), "{}", app.status);
    app.handle(Action::IncreaseMore);
    app.handle(Action::IncreaseMore);
    app.handle(Action::IncreaseMore);
    assert_eq!(app.setup.params.min_replicas, 20, "stops at maxReplicas");
    assert!(app.status.contains("above max-replicas"), "{}", app.status);
    app.refresh();
    assert!(
        app.current.report.peak_vms >= 20,
        "a floor of 20 keeps 20 VMs on"
    );
}

#[test]
fn a_short_terminal_swaps_in_vm_hours_and_the_longest_waits() {
    let mut app = app();
    app.handle(Action::End);
    let plain = screen(&app, 80, 24);
    assert!(!plain.contains("longest waits"), "{plain}");
    app.handle(Action::ToggleDetails);
    let text = screen(&app, 80, 24);
    assert!(
        text.contains("longest waits") && text.contains("VM-hours"),
        "{text}"
    );
    let worst = &app.current.report.worst_waits[0];
    assert!(text.contains(&crate::format::secs(worst.wait_s)), "{text}");
    insta::assert_snapshot!("dashboard_80x24_details", text);
    assert!(
        screen(&app, 160, 48).contains("wait p95"),
        "a tall terminal keeps the results"
    );
}
