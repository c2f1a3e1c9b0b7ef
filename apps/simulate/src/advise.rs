//! `simulate advise`: the cheapest policy meeting a wait target, fitted on the first part of
//! the trace and measured on the rest, written as a config file and Helm values.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use provisioner_core::policy::Timezone;
use provisioner_sim::SimError;
use provisioner_sim::advise::{Advice, AdviseOptions, Target, advise, config_yaml, helm_values};

use crate::cli::{AdviseArgs, Args, Format};
use crate::format::say;
use crate::setup::{CliError, exit_code, setup, trace};

pub fn main(args: &Args, advise_args: &AdviseArgs) -> ExitCode {
    match run(args, advise_args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        outcome @ Err(_) => exit_code(outcome.map(|_| ExitCode::SUCCESS)),
    }
}

/// Whether the target was reached.
fn run(args: &Args, a: &AdviseArgs) -> Result<bool, CliError> {
    let target = Target::parse(&a.target)?;
    let timezone =
        Timezone::parse(&a.timezone).map_err(|e| SimError::Option(format!("--timezone: {e}")))?;
    let base = setup(args)?;
    let (trace, what) = trace(args)?;
    let started = Instant::now();
    let advice = advise(
        &trace,
        &AdviseOptions {
            target,
            test_from: a.test_from,
            max_replicas: args.max_replicas,
            timezone,
            sim: base.options,
        },
    )?;
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(path) = &a.write_config {
        write(path, &config_yaml(&trace, &advice))?;
    }
    if let Some(path) = &a.write_values {
        write(path, &helm_values(&trace, &advice))?;
    }
    match args.format {
        Format::Json => {
            let json = serde_json::to_string_pretty(&advice)
                .map_err(|e| CliError::Output(e.to_string()))?;
            say!("{json}");
        }
        Format::Table => print_table(&advice, &what, elapsed),
    }
    if !advice.reachable {
        let best = advice.chosen();
        eprintln!(
            "target {} not reached: the closest policy tried, {}, gives {} {:.0}s on the fit part at {:.0} VM-hours ({} {:.0}s, {:.0} VM-hours measured)",
            advice.target,
            best.name,
            advice.target.quantile.name(),
            advice.target.quantile.of(&best.fit),
            best.fit.vm_hours,
            advice.target.quantile.name(),
            advice.target.quantile.of(&best.test),
            best.test.vm_hours,
        );
    }
    Ok(advice.reachable)
}

fn print_table(advice: &Advice, what: &str, elapsed: f64) {
    let q = advice.target.quantile.name();
    say!(
        "advise: {what}; target {}; fit before {:.1}d, measured from there; {} policies tried in {elapsed:.1}s",
        advice.target,
        advice.test_from_s / 86_400.0,
        advice.tried.len()
    );
    if !advice.busy_hours.is_empty() {
        say!(
            "busy hours of the fit part ({}), where schedules raise the level: {}",
            advice.timezone,
            busy_hours(advice)
        );
    }
    say!(
        "{:<52} {:>10} {:>12} {:>10} {:>12}",
        "cost/wait front (fit part)",
        format!("fit {q}"),
        "fit VM-h",
        format!("test {q}"),
        "test VM-h"
    );
    for &i in &advice.front {
        let c = &advice.tried[i];
        let mark = if i == advice.chosen { " <- chosen" } else { "" };
        say!(
            "{:<52} {:>9.0}s {:>12.0} {:>9.0}s {:>12.0}{mark}",
            c.name,
            advice.target.quantile.of(&c.fit),
            c.fit.vm_hours,
            advice.target.quantile.of(&c.test),
            c.test.vm_hours
        );
    }
    let c = advice.chosen();
    say!(
        "{}: {} — measured on the part it did not see: {q} {:.0}s, p50 {:.0}s, p99 {:.0}s, {:.0} VM-hours",
        if advice.reachable {
            "advised"
        } else {
            "closest (target not reached)"
        },
        c.name,
        advice.target.quantile.of(&c.test),
        c.test.wait_p50_s,
        c.test.wait_p99_s,
        c.test.vm_hours
    );
}

/// The busy windows for people: `Mon-Fri 08:00-18:00`, `Tue 06:00-Wed 01:00`.
fn busy_hours(advice: &Advice) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    let day = |d: u8| DAYS[usize::from(d % 7)];
    advice
        .busy_hours
        .iter()
        .map(|w| {
            let days: Vec<&str> = w.days.iter().map(|d| day(*d)).collect();
            let end_day = match (w.days_long, w.days.as_slice()) {
                (0, _) => String::new(),
                (n, [d]) => format!("{} ", day(d + n)),
                (n, _) => format!("+{n}d "),
            };
            format!(
                "{} {:02}:00-{end_day}{:02}:00",
                days.join(","),
                w.start_hour,
                w.end_hour
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn write(path: &Path, text: &str) -> Result<(), CliError> {
    std::fs::write(path, text).map_err(|e| {
        CliError::Sim(SimError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    })
}
