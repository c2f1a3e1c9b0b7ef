//! `--bench`: replay the four-week trace once, then time a 100-point sweep.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use provisioner_sim::cluster::{ClusterModel, ClusterOptions, NodeCount, Resources};
use provisioner_sim::{PolicyChoice, SimOptions, SyntheticOptions, Trace, run};

use crate::cli::Args;
use crate::format::say;
use crate::headless::verdict;
use crate::setup::{CliError, setup, trace};
use crate::sweep::{grid, parse_axis, sweep, threads};

/// The real four-week trace, beside the repository.
const SHARED_TRACE: &str = "../shared/traces/travis-2020-02.csv";

/// CPU time this thread has run, from the scheduler's own accounting (Linux), in seconds: on
/// a shared machine it shows the work apart from the wait for a core.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

/// CPU time of the whole process, all threads (Linux, clock ticks of 10 ms), in seconds.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Peak resident memory of this process so far (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The same run with the cluster model on and off, one after the other: what the model costs.
/// Without cluster flags it is the `mro-eks` preset with 2 vCPU / 8 GiB VMs and room for up
/// to 200 nodes.
fn cluster_cost(
    trace: &Trace,
    options: &SimOptions,
    policy: &PolicyChoice,
) -> Result<(), CliError> {
    let on = match &options.cluster {
        Some(model) => model.clone(),
        None => {
            let mut model = ClusterModel::new(ClusterOptions {
                nodes: NodeCount { min: 2, max: 200 },
                ..ClusterOptions::preset("mro-eks")?
            });
            model.default_size = Some(Resources::new(2_000, 8 << 30));
            model
        }
    };
    let off = SimOptions {
        cluster: None,
        ..options.clone()
    };
    let with = SimOptions {
        cluster: Some(on.clone()),
        ..options.clone()
    };
    let off_report = run(trace, &off, policy)?;
    let on_report = run(trace, &with, policy)?;
    let counts = on_report.cluster.unwrap_or_default();
    say!(
        "cluster model: off {:.3}s wall, on {:.3}s wall ({:.2}x; {} nodes of {}, peak {} nodes, {} unschedulable), p95 wait {:.1}s off / {:.1}s on, invariants {} / {}",
        off_report.wall_seconds,
        on_report.wall_seconds,
        on_report.wall_seconds / off_report.wall_seconds.max(1e-9),
        on.options.nodes,
        on.options.node,
        counts.peak_nodes,
        counts.unschedulable,
        off_report.wait_p95_s,
        on_report.wait_p95_s,
        if off_report.is_ok() { "held" } else { "BROKEN" },
        if on_report.is_ok() { "held" } else { "BROKEN" }
    );
    Ok(())
}

pub fn main(args: &Args) -> Result<ExitCode, CliError> {
    let shared = PathBuf::from(SHARED_TRACE);
    let (trace, what) = if args.trace.is_some() {
        trace(args)?
    } else if shared.exists() {
        (
            Trace::load_csv(&shared)?,
            format!("the real four-week trace {SHARED_TRACE}"),
        )
    } else {
        let opts = SyntheticOptions {
            jobs_per_hour: 161_475.0 / (28.0 * 24.0),
            days: 28.0,
            seed: args.seed,
            ..SyntheticOptions::default()
        };
        (
            Trace::synthetic(&opts)?,
            format!("a synthetic four-week trace of the same size ({SHARED_TRACE} is absent)"),
        )
    };
    let base = setup(args)?;
    let policy = base.policy()?;
    say!(
        "bench on {what}: {} jobs, {} class(es), poll {}",
        trace.jobs.len(),
        trace.classes.len(),
        base.options.poll_interval
    );
    let cpu_before = thread_cpu_seconds();
    let report = run(&trace, &base.options, &policy)?;
    let cpu = thread_cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let rss = peak_rss_mib();
    say!(
        "single run: wall {:.3}s (CPU {}), {} events, {:.2} M events/s, peak RSS {} MiB, simulated {:.1} days, p95 wait {:.1}s, {:.0} VM-hours, invariants {}",
        report.wall_seconds,
        cpu.map_or("unknown".to_owned(), |c| format!("{c:.3}s")),
        report.events,
        report.events as f64 / report.wall_seconds / 1e6,
        rss.map_or("unknown".to_owned(), |m| format!("{m:.1}")),
        report.sim_seconds / 86_400.0,
        report.wait_p95_s,
        report.vm_hours,
        if report.is_ok() { "held" } else { "BROKEN" }
    );
    cluster_cost(&trace, &base.options, &policy)?;
    let axes = [
        parse_axis("min-replicas=0..9")?,
        parse_axis("idle-timeout=none,1m,2m,5m,10m,15m,20m,30m,45m,60m")?,
    ];
    let points = grid(&base, &axes)?;
    let threads = threads(args);
    let started = Instant::now();
    let cpu_before = process_cpu_seconds();
    let results = sweep(&trace, &points, threads)?;
    let wall = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    say!(
        "sweep: {} points (min-replicas 0..9 x idle-timeout 10 values) on {threads} threads in {wall:.2}s wall ({} CPU), {} on the Pareto front, peak RSS {} MiB",
        results.len(),
        cpu.map_or("unknown".to_owned(), |c| format!("{c:.1}s")),
        results.iter().filter(|p| p.pareto).count(),
        peak_rss_mib().map_or("unknown".to_owned(), |m| format!("{m:.1}"))
    );
    Ok(verdict(&report))
}
