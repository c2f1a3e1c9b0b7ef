//! The advisor: search the controls for the cheapest policy that meets a wait target, fitted on
//! the first part of a trace and measured on the rest, so the figure shown is one the choice
//! did not see.
//!
//! Every candidate replays the whole trace (the predictive control learns online, as a deployed
//! controller would); the run is cut at `test_from` and the choice is made on the first window
//! only. The search is a fixed grid (the predictive control's service level and the idle
//! timeout, plus the reference controls a user can set today), then a bisection of the service
//! level where the target is crossed. Runs go two at a time; results are kept in grid order, so
//! the advice is the same for the same seed.

use std::fmt;

use provisioner_core::forecast::{Predictive, ServiceLevel};
use provisioner_core::{Duration, Replicas, Scaling};
use serde::Serialize;

use crate::SimError;
use crate::options::{PolicyChoice, Scalings, SimOptions};
use crate::phases::PhaseReport;
use crate::trace::Trace;

/// Which wait quantile a target bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Quantile {
    P50,
    P90,
    P95,
    P99,
}

impl Quantile {
    pub fn of(self, phase: &PhaseReport) -> f64 {
        match self {
            Self::P50 => phase.wait_p50_s,
            Self::P90 => phase.wait_p90_s,
            Self::P95 => phase.wait_p95_s,
            Self::P99 => phase.wait_p99_s,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::P50 => "p50",
            Self::P90 => "p90",
            Self::P95 => "p95",
            Self::P99 => "p99",
        }
    }
}

/// `p95=60s`: the 95th percentile of waits at most 60 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Target {
    pub quantile: Quantile,
    #[serde(serialize_with = "seconds")]
    pub wait: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Target {
    pub fn parse(text: &str) -> Result<Self, SimError> {
        let bad = |why: String| {
            SimError::Option(format!(
                "target {text:?}: {why} (expected QUANTILE=WAIT, e.g. p95=60s; quantiles p50, p90, p95, p99)"
            ))
        };
        let (q, wait) = text
            .split_once('=')
            .ok_or_else(|| bad("no '='".to_owned()))?;
        let quantile = match q.trim().to_ascii_lowercase().as_str() {
            "p50" => Quantile::P50,
            "p90" => Quantile::P90,
            "p95" => Quantile::P95,
            "p99" => Quantile::P99,
            other => return Err(bad(format!("unknown quantile {other:?}"))),
        };
        let wait = Duration::parse(wait.trim()).map_err(|e| bad(e.to_string()))?;
        Ok(Self { quantile, wait })
    }

    fn met_by(&self, phase: &PhaseReport) -> bool {
        self.quantile.of(phase) <= self.wait.as_secs_f64()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.quantile.name(), self.wait)
    }
}

/// What the advisor is asked.
#[derive(Debug, Clone)]
pub struct AdviseOptions {
    pub target: Target,
    /// Where the measured part starts (trace time); `None`: the last quarter.
    pub test_from: Option<Duration>,
    pub max_replicas: u32,
    /// Everything else about the runs (boot time, poll, seed...). Its `phases` are replaced.
    pub sim: SimOptions,
}

/// One policy tried, with its figures on both parts.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub name: String,
    #[serde(skip)]
    pub scaling: Scaling,
    pub fit: PhaseReport,
    pub test: PhaseReport,
}

/// The advisor's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Advice {
    pub target: Target,
    pub test_from_s: f64,
    /// Index into `tried` of the cheapest candidate meeting the target on the fit part, or,
    /// when none does, of the one that came closest.
    pub chosen: usize,
    /// Whether `chosen` meets the target on the fit part.
    pub reachable: bool,
    /// Indices into `tried` of the cost/wait Pareto front on the fit part, cheapest first.
    pub front: Vec<usize>,
    pub tried: Vec<Candidate>,
}

impl Advice {
    pub fn chosen(&self) -> &Candidate {
        &self.tried[self.chosen]
    }
}

/// The least a trace must hold to fit on.
const MIN_FIT_JOBS: u64 = 100;
/// The least span a trace must cover (a fit part shorter than a few hours fits noise).
const MIN_SPAN_MS: i64 = 4 * 3_600_000;
/// Bisection steps of the service level once the target is bracketed.
const REFINE_STEPS: usize = 4;

/// Search the controls for `trace`.
pub fn advise(trace: &Trace, options: &AdviseOptions) -> Result<Advice, SimError> {
    let span_ms = trace.jobs.last().map_or(0, |j| j.arrival_ms);
    if trace.jobs.is_empty() {
        return Err(SimError::Option(
            "the trace has no jobs: nothing to fit a policy on".to_owned(),
        ));
    }
    if span_ms < MIN_SPAN_MS {
        return Err(SimError::Option(format!(
            "the trace spans {}; the advisor needs at least {} of arrivals to fit on one part and measure on the rest",
            Duration::from_millis(span_ms.max(0) as u64),
            Duration::from_millis(MIN_SPAN_MS as u64)
        )));
    }
    let test_from = options
        .test_from
        .unwrap_or(Duration::from_millis((span_ms as u64 / 4) * 3));
    let cut_ms = test_from.as_millis();
    if cut_ms >= span_ms as u64 {
        return Err(SimError::Option(format!(
            "--test-from {test_from} is at or after the trace's last arrival ({}): nothing left to measure on",
            Duration::from_millis(span_ms as u64)
        )));
    }
    let fit_jobs = trace
        .jobs
        .partition_point(|j| (j.arrival_ms as u64) < cut_ms) as u64;
    if fit_jobs < MIN_FIT_JOBS {
        return Err(SimError::Option(format!(
            "only {fit_jobs} jobs arrive before --test-from {test_from}; the advisor needs at least {MIN_FIT_JOBS} to fit on"
        )));
    }
    let mut sim = options.sim.clone();
    sim.phases = vec![test_from];
    sim.sample_every = None;
    let runner = Runner { trace, sim: &sim };

    let mut tried = runner.run_all(grid(options.max_replicas))?;
    // Bisect the service level where the target is crossed, for each idle timeout tried.
    for idle in IDLE_TIMEOUTS {
        let mut bracket = bracket(&tried, options.target, idle);
        for _ in 0..REFINE_STEPS {
            let Some((below, above)) = bracket else {
                break;
            };
            let mid = (below.fraction() + above.fraction()) / 2.0;
            let Some(level) =
                ServiceLevel::from_fraction(mid).filter(|l| *l != below && *l != above)
            else {
                break;
            };
            let candidate = runner.run_all(vec![predictive(options.max_replicas, level, idle)])?;
            let met = options.target.met_by(&candidate[0].fit);
            tried.extend(candidate);
            bracket = Some(if met { (below, level) } else { (level, above) });
        }
    }
    let target = options.target;
    let meeting = tried
        .iter()
        .enumerate()
        .filter(|(_, c)| target.met_by(&c.fit))
        .min_by(|(_, a), (_, b)| a.fit.vm_hours.total_cmp(&b.fit.vm_hours));
    let (chosen, reachable) = match meeting {
        Some((i, _)) => (i, true),
        None => {
            let closest = tried
                .iter()
                .enumerate()
                .min_by(|(_, a), (_, b)| {
                    target
                        .quantile
                        .of(&a.fit)
                        .total_cmp(&target.quantile.of(&b.fit))
                        .then(a.fit.vm_hours.total_cmp(&b.fit.vm_hours))
                })
                .map_or(0, |(i, _)| i);
            (closest, false)
        }
    };
    let front = pareto(&tried, target.quantile);
    Ok(Advice {
        target,
        test_from_s: test_from.as_secs_f64(),
        chosen,
        reachable,
        front,
        tried,
    })
}

/// Idle timeouts tried with the predictive control.
const IDLE_TIMEOUTS: [Duration; 2] = [Duration::from_secs(600), Duration::from_secs(1800)];
/// Service levels of the grid, in percent.
const LEVELS: [f64; 10] = [50.0, 70.0, 80.0, 85.0, 90.0, 93.0, 95.0, 97.0, 98.0, 99.0];

fn predictive(max: u32, level: ServiceLevel, idle: Duration) -> (String, Scaling) {
    (
        format!("predictive {level}, idle {idle}"),
        Scaling {
            min_replicas: Replicas::ZERO,
            max_replicas: Replicas::new(max),
            idle_timeout: Some(idle),
            predictive: Some(Predictive {
                service_level: level,
                ..Predictive::default()
            }),
            ..Scaling::default()
        },
    )
}

/// The grid: the predictive control at each level and idle timeout, and the controls a user
/// can set today (an idle buffer as ARC and GitLab keep, headroom as 0.1.2, a floor as 0.1.0).
fn grid(max: u32) -> Vec<(String, Scaling)> {
    let mut grid = Vec::new();
    for idle in IDLE_TIMEOUTS {
        for percent in LEVELS {
            if let Some(level) = ServiceLevel::from_fraction(percent / 100.0) {
                grid.push(predictive(max, level, idle));
            }
        }
    }
    let plain = |name: String, min: u32, headroom: u32, buffer: u32| {
        (
            name,
            Scaling {
                min_replicas: Replicas::new(min.min(max)),
                max_replicas: Replicas::new(max),
                headroom: Replicas::new(headroom),
                idle_buffer: Replicas::new(buffer),
                idle_timeout: Some(Duration::from_secs(600)),
                ..Scaling::default()
            },
        )
    };
    for buffer in [5, 10, 20, 40, 60] {
        grid.push(plain(format!("idle buffer {buffer}"), 0, 0, buffer));
    }
    for headroom in [5, 15, 30] {
        grid.push(plain(format!("headroom {headroom}"), 0, headroom, 0));
    }
    grid.push(plain("floor 3".to_owned(), 3, 0, 0));
    grid
}

/// The highest level tried that misses the target and the lowest that meets it, when the
/// first is below the second.
fn bracket(
    tried: &[Candidate],
    target: Target,
    idle: Duration,
) -> Option<(ServiceLevel, ServiceLevel)> {
    let mut below: Option<ServiceLevel> = None;
    let mut above: Option<ServiceLevel> = None;
    for c in tried {
        let Some(p) = c.scaling.predictive else {
            continue;
        };
        if c.scaling.idle_timeout != Some(idle) {
            continue;
        }
        let level = p.service_level;
        if target.met_by(&c.fit) {
            above = Some(above.map_or(level, |a| a.min(level)));
        } else {
            below = Some(below.map_or(level, |b| b.max(level)));
        }
    }
    match (below, above) {
        (Some(b), Some(a)) if b < a => Some((b, a)),
        _ => None,
    }
}

/// Candidates no other beats on both wait and cost on the fit part, cheapest first.
fn pareto(tried: &[Candidate], quantile: Quantile) -> Vec<usize> {
    let mut order: Vec<usize> = (0..tried.len()).collect();
    order.sort_by(|a, b| {
        let (a, b) = (&tried[*a].fit, &tried[*b].fit);
        a.vm_hours
            .total_cmp(&b.vm_hours)
            .then(quantile.of(a).total_cmp(&quantile.of(b)))
    });
    let mut front = Vec::new();
    let mut best_wait = f64::INFINITY;
    for i in order {
        let wait = quantile.of(&tried[i].fit);
        if wait < best_wait {
            best_wait = wait;
            front.push(i);
        }
    }
    front
}

struct Runner<'a> {
    trace: &'a Trace,
    sim: &'a SimOptions,
}

impl Runner<'_> {
    /// Run each candidate over the whole trace, two at a time; results in the given order.
    fn run_all(&self, candidates: Vec<(String, Scaling)>) -> Result<Vec<Candidate>, SimError> {
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 2);
        let chunks: Vec<Vec<(usize, (String, Scaling))>> = {
            let mut chunks: Vec<Vec<_>> = (0..workers).map(|_| Vec::new()).collect();
            for (i, c) in candidates.into_iter().enumerate() {
                chunks[i % workers].push((i, c));
            }
            chunks
        };
        let mut results: Vec<(usize, Result<Candidate, SimError>)> = std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .into_iter()
                            .map(|(i, (name, scaling))| (i, self.run_one(name, scaling)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join())
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(|_| SimError::Internal("an advisor run panicked".to_owned()))?
        .into_iter()
        .flatten()
        .collect();
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }

    fn run_one(&self, name: String, scaling: Scaling) -> Result<Candidate, SimError> {
        let policy = PolicyChoice::Provisioner(Scalings::one(scaling.clone()));
        let report = crate::run(self.trace, self.sim, &policy)?;
        let mut phases = report.phases.into_iter();
        match (phases.next(), phases.next()) {
            (Some(fit), Some(test)) => Ok(Candidate {
                name,
                scaling,
                fit,
                test,
            }),
            _ => Err(SimError::Internal(
                "a run cut in two did not report two phases".to_owned(),
            )),
        }
    }
}

/// The `scaling` block of a class, as YAML lines at `indent`.
fn scaling_yaml(scaling: &Scaling, indent: &str) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: String| {
        out.push_str(&format!("{indent}{key}: {value}\n"));
    };
    line("minReplicas", scaling.min_replicas.to_string());
    line("maxReplicas", scaling.max_replicas.to_string());
    if let Some(idle) = scaling.idle_timeout {
        line("idleTimeout", idle.to_string());
    }
    for (key, value) in [
        ("headroom", scaling.headroom),
        ("maxSurge", scaling.max_surge),
        ("idleBuffer", scaling.idle_buffer),
    ] {
        if value.get() > 0 {
            line(key, value.to_string());
        }
    }
    if !scaling.scale_down_delay.is_zero() {
        line("scaleDownDelay", scaling.scale_down_delay.to_string());
    }
    if let Some(p) = &scaling.predictive {
        line("serviceLevel", format!("\"{}\"", p.service_level));
        if let Some(lookahead) = p.lookahead {
            line("forecastLookahead", lookahead.to_string());
        }
        line("forecastWindow", p.recent_window.to_string());
        line("forecastRecentWeight", p.recent_weight.get().to_string());
    }
    out
}

/// A provisioner config file (the controller's format, `simulate --config` replays it as is):
/// every class of the trace with the advised scaling.
pub fn config_yaml(trace: &Trace, advice: &Advice) -> String {
    let chosen = advice.chosen();
    let mut out = format!(
        "# Written by `simulate advise --target {}`: {} (fit: {} {:.0}s, {:.0} VM-hours; test: {} {:.0}s, {:.0} VM-hours).\nresourceClasses:\n",
        advice.target,
        chosen.name,
        advice.target.quantile.name(),
        advice.target.quantile.of(&chosen.fit),
        chosen.fit.vm_hours,
        advice.target.quantile.name(),
        advice.target.quantile.of(&chosen.test),
        chosen.test.vm_hours,
    );
    for class in &trace.classes {
        out.push_str(&format!("  \"{class}\":\n    scaling:\n"));
        out.push_str(&scaling_yaml(&chosen.scaling, "      "));
    }
    out
}

/// Helm values for the chart (0.1.2 shape): the same classes, tokens left for the user.
pub fn helm_values(trace: &Trace, advice: &Advice) -> String {
    let chosen = advice.chosen();
    let mut out = format!(
        "# Written by `simulate advise --target {}`: {}. Fill in the tokens.\nprovisioner:\n  circleToken: \"\"\n  resourceClasses:\n",
        advice.target, chosen.name
    );
    for class in &trace.classes {
        out.push_str(&format!(
            "    \"{class}\":\n      token: \"\"\n      scaling:\n"
        ));
        out.push_str(&scaling_yaml(&chosen.scaling, "        "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_refuse() {
        let t = Target::parse("p95=60s").expect("target");
        assert_eq!(
            (t.quantile, t.wait),
            (Quantile::P95, Duration::from_secs(60))
        );
        assert_eq!(t.to_string(), "p95=1m");
        for bad in ["p95", "p42=60s", "p95=soon"] {
            let err = Target::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(bad), "{err}");
        }
    }
}
