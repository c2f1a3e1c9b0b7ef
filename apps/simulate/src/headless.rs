//! The headless mode: one run, a sweep, or the benchmark, printed as JSON or a table.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use provisioner_core::config::{ConfigSources, Source, load};
use provisioner_core::{Duration, ResourceClass};
use provisioner_sim::{
    BootTime, Faults, PolicyChoice, PolicyParams, SimError, SimOptions, SimReport,
    SyntheticOptions, Trace, run,
};
use serde::Serialize;

use crate::cli::{Args, Format};

/// Print a line to stdout. A closed pipe (`simulate ... | head`) ends the output quietly
/// instead of panicking as `println!` would.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// The real four-week trace, beside the repository.
const SHARED_TRACE: &str = "../shared/traces/travis-2020-02.csv";

/// Why the headless mode stopped before reporting.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error("--sweep {spec:?}: {message}")]
    Sweep { spec: String, message: String },
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot write the report: {0}")]
    Output(String),
}

pub fn main(args: &Args) -> ExitCode {
    let outcome = if args.bench {
        bench(args)
    } else if args.sweep.is_empty() {
        single(args)
    } else {
        sweep_cmd(args)
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// One simulation's inputs, resolved from the flags.
#[derive(Debug, Clone)]
pub struct Setup {
    pub options: SimOptions,
    pub params: PolicyParams,
    pub policy_name: String,
    /// Set when a config replaces the policy flags.
    pub config_policy: Option<PolicyChoice>,
    pub config_name: Option<String>,
}

impl Setup {
    /// The policy's name for reports: the reference name, or the config file.
    pub fn label(&self) -> String {
        match (&self.config_policy, &self.config_name) {
            (Some(_), Some(name)) => format!("config {name}"),
            _ => self.policy_name.clone(),
        }
    }

    pub fn policy(&self) -> Result<PolicyChoice, SimError> {
        match &self.config_policy {
            Some(p) => Ok(p.clone()),
            None => PolicyChoice::reference(&self.policy_name, &self.params),
        }
    }
}

pub fn setup(args: &Args) -> Result<Setup, CliError> {
    let mut options = SimOptions {
        boot_time: BootTime::parse(&args.boot_time)?,
        api_latency: args.api_latency,
        seed: args.seed,
        faults: args
            .faults
            .as_deref()
            .map(Faults::parse)
            .transpose()?
            .unwrap_or_default(),
        sample_every: args.sample_every,
        worst_waits: args.worst,
        ..SimOptions::default()
    };
    let params = PolicyParams {
        min_replicas: args.min_replicas,
        max_replicas: args.max_replicas,
        idle_timeout: args.idle_timeout,
        headroom: args.headroom,
        max_surge: args.max_surge,
        scale_down_delay: args.scale_down_delay,
        idle_buffer: args.idle_buffer,
        scale_factor: args.scale_factor,
    };
    let mut config_policy = None;
    let mut config_name = None;
    if let Some(path) = &args.config {
        let config = load_config(path)?;
        let name = path.display().to_string();
        options.poll_interval = config.poll_interval;
        config_policy = Some(PolicyChoice::from_config(&config));
        config_name = Some(name);
    }
    if let Some(poll) = args.poll_interval {
        options.poll_interval = poll;
    }
    Ok(Setup {
        options,
        params,
        policy_name: args.policy.clone(),
        config_policy,
        config_name,
    })
}

/// A provisioner config, validated as the controller would (tokens not required).
fn load_config(path: &Path) -> Result<provisioner_core::Config, CliError> {
    let text = read(path)?;
    let name = path.display().to_string();
    let sources = ConfigSources {
        config: Some(Source {
            name: &name,
            text: &text,
        }),
        require_tokens: false,
        ..ConfigSources::default()
    };
    Ok(load(&sources).map_err(SimError::from)?)
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The trace the flags name, or the synthetic workload; and a line saying which.
pub fn trace(args: &Args) -> Result<(Trace, String), CliError> {
    let (trace, what) = match &args.trace {
        Some(path) => (Trace::load_csv(path)?, format!("trace {}", path.display())),
        None => {
            // With a config, the synthetic jobs spread over the classes it defines.
            let classes = match &args.config {
                Some(path) => load_config(path)?
                    .classes
                    .into_iter()
                    .map(|c| c.name)
                    .collect(),
                None => SyntheticOptions::default().classes,
            };
            let opts = SyntheticOptions {
                jobs_per_hour: args.rate,
                days: args.days,
                seed: args.seed,
                classes,
                ..SyntheticOptions::default()
            };
            (
                Trace::synthetic(&opts)?,
                format!(
                    "synthetic workload: {} jobs/hour for {} days, seed {}",
                    args.rate, args.days, args.seed
                ),
            )
        }
    };
    let trace = match &args.class_as {
        Some(name) => trace.with_single_class(
            ResourceClass::parse(name).map_err(|e| SimError::Option(format!("--class-as: {e}")))?,
        ),
        None => trace,
    };
    Ok((trace, what))
}

fn single(args: &Args) -> Result<ExitCode, CliError> {
    let (trace, what) = trace(args)?;
    let setup = setup(args)?;
    let mut report = run(&trace, &setup.options, &setup.policy()?)?;
    report.policy = setup.label();
    let mut out = String::new();
    match args.format {
        Format::Json => {
            out = serde_json::to_string_pretty(&report)
                .map_err(|e| CliError::Output(e.to_string()))?
        }
        Format::Table => {
            out.push_str(&format!("{what}\n"));
            table(&report, &mut out);
        }
    }
    say!("{out}");
    Ok(verdict(&report))
}

fn verdict(report: &SimReport) -> ExitCode {
    if report.is_ok() {
        return ExitCode::SUCCESS;
    }
    for v in &report.invariant_violations {
        eprintln!("invariant broken: {v}");
    }
    ExitCode::from(1)
}

/// The report for people.
pub fn table(r: &SimReport, out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(out, "policy            {}", r.policy);
    let _ = writeln!(
        out,
        "jobs              {} ({} completed)",
        r.jobs, r.jobs_completed
    );
    let _ = writeln!(
        out,
        "wait              mean {:.1}s  p50 {:.1}s  p95 {:.1}s  p99 {:.1}s  max {:.1}s",
        r.wait_mean_s, r.wait_p50_s, r.wait_p95_s, r.wait_p99_s, r.wait_max_s
    );
    let _ = writeln!(
        out,
        "VM-hours          {:.1} (busy {:.1}, idle {:.1}, boot {:.1}); stopped {:.1}",
        r.vm_hours, r.busy_vm_hours, r.idle_vm_hours, r.boot_vm_hours, r.stopped_vm_hours
    );
    let _ = writeln!(
        out,
        "VMs               {} created, peak {} on",
        r.vms_created, r.peak_vms
    );
    let _ = writeln!(
        out,
        "simulated         {:.1} days, {} events, {} controller cycles, {:.3}s wall",
        r.sim_seconds / 86_400.0,
        r.events,
        r.controller_cycles,
        r.wall_seconds
    );
    let f = &r.faults;
    let _ = writeln!(
        out,
        "faults            api errors {}, api timeouts {}, k8s errors {}, start failures {}, restarts {}",
        f.api_errors, f.api_timeouts, f.k8s_errors, f.start_failures, f.controller_restarts
    );
    let _ = writeln!(
        out,
        "invariants        {}",
        if r.is_ok() {
            "all held".to_owned()
        } else {
            format!("{} BROKEN", r.invariant_violations.len())
        }
    );
    let _ = writeln!(
        out,
        "\n{:<28} {:>7} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6}",
        "class", "jobs", "p50 s", "p95 s", "max s", "VM-h", "idle VM-h", "peak"
    );
    for c in &r.classes {
        let _ = writeln!(
            out,
            "{:<28} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>8.1} {:>6}",
            c.class,
            c.jobs,
            c.wait_p50_s,
            c.wait_p95_s,
            c.wait_max_s,
            c.vm_hours,
            c.idle_vm_hours,
            c.peak_vms
        );
    }
    if !r.worst_waits.is_empty() {
        let _ = writeln!(out, "\nlongest waits");
        for w in &r.worst_waits {
            let _ = writeln!(
                out,
                "  {:>8.1}s  {} job at {:.0}s ({:.0}s long)",
                w.wait_s, w.class, w.arrival_s, w.duration_s
            );
        }
    }
}

/// One grid axis: a flag name and its values.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub key: String,
    pub values: Vec<String>,
}

const SWEEP_KEYS: [&str; 11] = [
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
pub fn set(setup: &mut Setup, key: &str, value: &str) -> Result<(), String> {
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
        other => return Err(format!("unknown key {other:?}")),
    }
    Ok(())
}

/// A grid point: its `key=value` labels and the setup they give.
pub type Labeled = (Vec<(String, String)>, Setup);

/// One point of a sweep and its result.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub params: Vec<(String, String)>,
    pub jobs: u64,
    pub jobs_completed: u64,
    pub wait_p50_s: f64,
    pub wait_p95_s: f64,
    pub wait_p99_s: f64,
    pub wait_max_s: f64,
    pub vm_hours: f64,
    pub idle_vm_hours: f64,
    pub vms_created: u64,
    pub peak_vms: u32,
    pub invariant_violations: usize,
    pub pareto: bool,
}

impl Point {
    /// The point a run gave, not yet marked for the Pareto front.
    pub fn of(params: Vec<(String, String)>, report: &SimReport) -> Self {
        Self {
            params,
            jobs: report.jobs,
            jobs_completed: report.jobs_completed,
            wait_p50_s: report.wait_p50_s,
            wait_p95_s: report.wait_p95_s,
            wait_p99_s: report.wait_p99_s,
            wait_max_s: report.wait_max_s,
            vm_hours: report.vm_hours,
            idle_vm_hours: report.idle_vm_hours,
            vms_created: report.vms_created,
            peak_vms: report.peak_vms,
            invariant_violations: report.invariant_violations.len(),
            pareto: false,
        }
    }
}

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

/// Points no other point beats on both VM-hours and p95 wait (ties count as not beaten).
pub fn mark_pareto(points: &mut [Point]) {
    let keys: Vec<(f64, f64)> = points.iter().map(|p| (p.vm_hours, p.wait_p95_s)).collect();
    for (i, p) in points.iter_mut().enumerate() {
        let (c, w) = keys[i];
        p.pareto = p.invariant_violations == 0
            && !keys
                .iter()
                .enumerate()
                .any(|(j, (c2, w2))| j != i && *c2 <= c && *w2 <= w && (*c2 < c || *w2 < w));
    }
}

fn threads(args: &Args) -> usize {
    args.threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1)
}

fn sweep_cmd(args: &Args) -> Result<ExitCode, CliError> {
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

fn bench(args: &Args) -> Result<ExitCode, CliError> {
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

    #[test]
    fn pareto_front_keeps_undominated_points() {
        let point = |vm: f64, wait: f64| Point {
            params: Vec::new(),
            jobs: 1,
            jobs_completed: 1,
            wait_p50_s: 0.0,
            wait_p95_s: wait,
            wait_p99_s: 0.0,
            wait_max_s: 0.0,
            vm_hours: vm,
            idle_vm_hours: 0.0,
            vms_created: 0,
            peak_vms: 0,
            invariant_violations: 0,
            pareto: false,
        };
        let mut pts = vec![
            point(10.0, 5.0),
            point(20.0, 1.0),
            point(20.0, 6.0),
            point(5.0, 50.0),
        ];
        mark_pareto(&mut pts);
        assert_eq!(
            pts.iter().map(|p| p.pareto).collect::<Vec<_>>(),
            [true, true, false, true]
        );
    }
}
