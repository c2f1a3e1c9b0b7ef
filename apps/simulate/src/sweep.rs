//! `--sweep`: a grid of setups run over a thread pool, printed with its cost/wait Pareto front.

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use provisioner_core::Duration;
use provisioner_core::forecast::Predictive;
use provisioner_sim::{BootTime, SimError, SimReport, Trace, run};
use serde::Serialize;

use crate::cli::{Args, Format};
use crate::compare::{Point, mark_pareto};
use crate::format::say;
use crate::setup::{CliError, Setup, setup, trace};

/// One grid axis: a flag name and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub key: String,
    pub values: Vec<String>,
}

const SWEEP_KEYS: [&str; 15] = [
    "min-replicas",
    "max-replicas",
    "idle-timeout",
    "headroom",
    "max-surge",
    "scale-down-delay",
    "idle-buffer",
    "scale-factor",
    "boot-time",
    "poll-interval",
    "policy",
    "service-level",
    "forecast-lookahead",
    "forecast-window",
    "forecast-recent-weight",
];

/// `key=a..b` (integers, inclusive) or `key=v1,v2,...`.
pub fn parse_axis(spec: &str) -> Result<Axis, CliError> {
    let bad = |message: String| CliError::Sweep {
        spec: spec.to_owned(),
        message,
    };
    let (key, values) = spec
        .split_once('=')
        .ok_or_else(|| bad("expected KEY=VALUES".to_owned()))?;
    let key = key.trim();
    if !SWEEP_KEYS.contains(&key) {
        return Err(bad(format!(
            "unknown key {key:?} (one of: {})",
            SWEEP_KEYS.join(", ")
        )));
    }
    let values: Vec<String> = match values.split_once("..") {
        Some((lo, hi)) if key != "boot-time" => {
            let lo: u32 = lo
                .trim()
                .parse()
                .map_err(|_| bad(format!("{lo:?} is not a whole number")))?;
            let hi: u32 = hi
                .trim()
                .parse()
                .map_err(|_| bad(format!("{hi:?} is not a whole number")))?;
            if lo > hi || hi - lo > 10_000 {
                return Err(bad(format!("range {lo}..{hi} is empty or too large")));
            }
            (lo..=hi).map(|v| v.to_string()).collect()
        }
        _ => values
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect(),
    };
    if values.is_empty() {
        return Err(bad("no values".to_owned()));
    }
    Ok(Axis {
        key: key.to_owned(),
        values,
    })
}

/// Apply one `key=value` to a setup.
fn set(setup: &mut Setup, key: &str, value: &str) -> Result<(), String> {
    let int = || {
        value
            .parse::<u32>()
            .map_err(|_| format!("{key}={value:?} is not a whole number"))
    };
    let dur = || Duration::parse(value).map_err(|e| format!("{key}: {e}"));
    let p = &mut setup.params;
    match key {
        "min-replicas" => p.min_replicas = int()?,
        "max-replicas" => p.max_replicas = int()?,
        "headroom" => p.headroom = int()?,
        "max-surge" => p.max_surge = int()?,
        "idle-buffer" => p.idle_buffer = int()?,
        "idle-timeout" => p.idle_timeout = if value == "none" { None } else { Some(dur()?) },
        "scale-down-delay" => p.scale_down_delay = dur()?,
        "scale-factor" => {
            p.scale_factor = value
                .parse()
                .map_err(|_| format!("{key}={value:?} is not a number"))?
        }
        "boot-time" => {
            setup.options.boot_time = BootTime::parse(value).map_err(|e| e.to_string())?
        }
        "poll-interval" => setup.options.poll_interval = dur()?,
        "policy" => setup.policy_name = value.to_owned(),
        "service-level" | "forecast-lookahead" | "forecast-window" | "forecast-recent-weight" => {
            let p = p.predictive.get_or_insert_with(Predictive::default);
            match key {
                "service-level" => {
                    p.service_level = value.parse().map_err(|e| format!("{key}: {e}"))?
                }
                "forecast-lookahead" => p.lookahead = Some(dur()?),
                "forecast-window" => p.recent_window = dur()?,
                _ => p.recent_weight = value.parse().map_err(|e| format!("{key}: {e}"))?,
            }
        }
        other => return Err(format!("unknown key {other:?}")),
    }
    Ok(())
}

/// A grid point: its `key=value` labels and the setup they give.
type Labeled = (Vec<(String, String)>, Setup);

/// A sweep's grid holds at most this many points.
const MAX_SWEEP_POINTS: usize = 100_000;

/// The cartesian product of the axes, as setups labelled with their values.
pub fn grid(base: &Setup, axes: &[Axis]) -> Result<Vec<Labeled>, CliError> {
    // Counted before anything is built: a product of a few long axes would not fit in memory.
    let count = axes
        .iter()
        .try_fold(1usize, |n, a| n.checked_mul(a.values.len()))
        .filter(|n| *n <= MAX_SWEEP_POINTS);
    if count.is_none() {
        let sizes: Vec<String> = axes.iter().map(|a| a.values.len().to_string()).collect();
        return Err(CliError::Sweep {
            spec: axes
                .iter()
                .map(|a| a.key.as_str())
                .collect::<Vec<_>>()
                .join(" x "),
            message: format!(
                "{} points is too many (at most {MAX_SWEEP_POINTS})",
                sizes.join(" x ")
            ),
        });
    }
    let mut points: Vec<Labeled> = vec![(Vec::new(), base.clone())];
    for axis in axes {
        let mut next = Vec::with_capacity(points.len() * axis.values.len());
        for (labels, setup) in &points {
            for value in &axis.values {
                let mut s = setup.clone();
                set(&mut s, &axis.key, value).map_err(|message| CliError::Sweep {
                    spec: format!("{}={}", axis.key, axis.values.join(",")),
                    message,
                })?;
                let mut l = labels.clone();
                l.push((axis.key.clone(), value.clone()));
                next.push((l, s));
            }
        }
        points = next;
    }
    Ok(points)
}

/// Run every point over `threads` threads; results in grid order.
pub fn sweep(trace: &Trace, points: &[Labeled], threads: usize) -> Result<Vec<Point>, CliError> {
    // Policies are checked first, so a bad point stops the sweep before anything runs.
    let policies = points
        .iter()
        .map(|(labels, s)| {
            s.policy().map_err(|e| CliError::Sweep {
                spec: format_labels(labels),
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<SimReport, SimError>>>> =
        Mutex::new((0..points.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1).min(points.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((_, setup)) = points.get(i) else {
                        break;
                    };
                    let outcome = run(trace, &setup.options, &policies[i]);
                    results
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(outcome);
                }
            });
        }
    });
    let results = results
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = Vec::with_capacity(points.len());
    for ((labels, _), result) in points.iter().zip(results) {
        let report =
            result.ok_or_else(|| SimError::Internal("a sweep point did not run".to_owned()))??;
        out.push(Point::of(labels.clone(), &report));
    }
    mark_pareto(&mut out);
    Ok(out)
}

fn format_labels(labels: &[(String, String)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sweep threads: `--threads`, or every core.
pub fn threads(args: &Args) -> usize {
    args.threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1)
}

pub fn main(args: &Args) -> Result<ExitCode, CliError> {
    let (trace, what) = trace(args)?;
    let base = setup(args)?;
    if base.config_policy.is_some() {
        return Err(CliError::Sweep {
            spec: args.sweep.join(" "),
            message: "a sweep varies the policy flags; it cannot be combined with --config"
                .to_owned(),
        });
    }
    let axes = args
        .sweep
        .iter()
        .map(|s| parse_axis(s))
        .collect::<Result<Vec<_>, _>>()?;
    let points = grid(&base, &axes)?;
    let started = Instant::now();
    let results = sweep(&trace, &points, threads(args))?;
    let wall = started.elapsed().as_secs_f64();
    match args.format {
        Format::Json => {
            #[derive(Serialize)]
            struct Out<'a> {
                workload: &'a str,
                points: &'a [Point],
                pareto: Vec<usize>,
                wall_seconds: f64,
            }
            let pareto = results
                .iter()
                .enumerate()
                .filter(|(_, p)| p.pareto)
                .map(|(i, _)| i)
                .collect();
            let text = serde_json::to_string_pretty(&Out {
                workload: &what,
                points: &results,
                pareto,
                wall_seconds: wall,
            })
            .map_err(|e| CliError::Output(e.to_string()))?;
            say!("{text}");
        }
        Format::Table => {
            say!("{what}; {} points in {wall:.2}s", results.len());
            say!(
                "{:<40} {:>8} {:>8} {:>8} {:>10} {:>10} {:>6} {:>3}",
                "point",
                "p50 s",
                "p95 s",
                "max s",
                "VM-h",
                "idle VM-h",
                "peak",
                ""
            );
            for p in &results {
                say!(
                    "{:<40} {:>8.1} {:>8.1} {:>8.1} {:>10.1} {:>10.1} {:>6} {:>3}",
                    format_labels(&p.params),
                    p.wait_p50_s,
                    p.wait_p95_s,
                    p.wait_max_s,
                    p.vm_hours,
                    p.idle_vm_hours,
                    p.peak_vms,
                    if p.pareto { "*" } else { "" }
                );
            }
            say!(
                "\n* = on the cost/wait Pareto front (no other point has both fewer VM-hours and a shorter p95 wait)"
            );
            let mut front: Vec<&Point> = results.iter().filter(|p| p.pareto).collect();
            front.sort_by(|a, b| a.vm_hours.total_cmp(&b.vm_hours));
            say!("\nPareto front, cheapest first:");
            for p in front {
                say!(
                    "  {:>10.1} VM-h  p95 {:>8.1}s  {}",
                    p.vm_hours,
                    p.wait_p95_s,
                    format_labels(&p.params)
                );
            }
        }
    }
    let broken = results
        .iter()
        .filter(|p| p.invariant_violations > 0)
        .count();
    if broken > 0 {
        eprintln!("invariants broken at {broken} points");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_parse_ranges_and_lists() {
        assert_eq!(
            parse_axis("min-replicas=0..3").expect("range").values,
            ["0", "1", "2", "3"]
        );
        assert_eq!(
            parse_axis("idle-timeout=0s,5m").expect("list").values,
            ["0s", "5m"]
        );
        assert_eq!(
            parse_axis("boot-time=1m..2m,3m").expect("boot").values,
            ["1m..2m", "3m"]
        );
        for bad in [
            "min-replicas",
            "speed=1",
            "min-replicas=5..1",
            "min-replicas=a..3",
            "headroom=",
        ] {
            assert!(parse_axis(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_grid_too_large_is_refused_before_it_is_built() {
        let args = <Args as clap::Parser>::parse_from(["simulate", "--headless"]);
        let base = setup(&args).expect("setup");
        let axes = [
            parse_axis("min-replicas=0..10000").expect("axis"),
            parse_axis("headroom=0..10000").expect("axis"),
        ];
        let err = grid(&base, &axes).expect_err("too many points");
        assert!(
            err.to_string().contains("10001 x 10001 points is too many"),
            "{err}"
        );
        let axes = [
            parse_axis("min-replicas=0..9").expect("axis"),
            parse_axis("headroom=0..9").expect("axis"),
        ];
        assert_eq!(grid(&base, &axes).expect("100 points").len(), 100);
    }
}
