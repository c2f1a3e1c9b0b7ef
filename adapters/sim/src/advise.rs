//! The advisor: search the controls for the cheapest policy that meets a wait target, fitted on
//! the first part of a trace and measured on the rest, so the figure shown is one the choice
//! did not see.
//!
//! Every candidate replays the whole trace (the predictive control learns online, as a deployed
//! controller would); the run is cut at `test_from` and the choice is made on the first window
//! only. The search is a fixed grid (the predictive control's service level and the idle
//! timeout, plus the reference controls a user can set today), then a bisection of the service
//! level where the target is crossed (both idle timeouts in step), then time-of-day schedules:
//! the hours of the fit part busier than average, in the user's time zone, get a higher level
//! than the rest (or, when an idle buffer is the cheapest way to the target, keep the buffer
//! and the rest get less). Runs go two at a time; results are kept in the order they were
//! asked for, so the advice is the same for the same seed.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

use provisioner_core::cron::Cron;
use provisioner_core::forecast::{Predictive, ServiceLevel};
use provisioner_core::policy::{Overrides, Schedule, Timezone};
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
    /// The zone the time-of-day schedules are found and written in (the user's working day).
    pub timezone: Timezone,
    /// Everything else about the runs (boot time, poll, seed...). Its `phases` are replaced.
    pub sim: SimOptions,
}

/// Hours of a week busier than the fit part's average, in the user's time zone: where the
/// schedules the advisor tries raise the service level. Days with the same hours share one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BusyWindow {
    /// Days of the week it starts on, as cron counts them (0 Sunday .. 6 Saturday).
    pub days: Vec<u8>,
    pub start_hour: u8,
    /// The hour it ends at (exclusive), on the day `days_long` after it starts.
    pub end_hour: u8,
    pub days_long: u8,
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
    /// The time zone of the schedules' cron expressions.
    pub timezone: String,
    /// The busy hours the schedules tried cover (empty: no schedules were tried).
    pub busy_hours: Vec<BusyWindow>,
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

    let target = options.target;
    let max = options.max_replicas;
    let mut tried = runner.run_all(grid(max))?;
    // Bisect the service level where the target is crossed, every idle timeout in step (so two
    // runs go at once). A bracket whose missing end already costs as much as the cheapest
    // policy meeting the target is dropped: a higher level costs more, so nothing in it wins.
    let mut brackets: Vec<_> = IDLE_TIMEOUTS
        .iter()
        .map(|idle| (*idle, bracket(&tried, target, *idle)))
        .collect();
    for _ in 0..REFINE_STEPS {
        let mut steps = Vec::new();
        let best = cheapest_meeting(&tried, target);
        for (i, (idle, b)) in brackets.iter_mut().enumerate() {
            let Some((below, above)) = *b else {
                continue;
            };
            if plain_cost(&tried, *idle, below).is_some_and(|c| c >= best) {
                *b = None;
                continue;
            }
            let mid = (below.fraction() + above.fraction()) / 2.0;
            match ServiceLevel::from_fraction(mid).filter(|l| *l != below && *l != above) {
                Some(level) => steps.push((i, below, level, above)),
                None => *b = None,
            }
        }
        if steps.is_empty() {
            break;
        }
        let runs = runner.run_all(
            steps
                .iter()
                .map(|(i, _, level, _)| predictive(max, *level, brackets[*i].0))
                .collect(),
        )?;
        for ((i, below, level, above), run) in steps.into_iter().zip(&runs) {
            brackets[i].1 = Some(if target.met_by(&run.fit) {
                (below, level)
            } else {
                (level, above)
            });
        }
        tried.extend(runs);
    }
    let busy = busy_windows(trace, cut_ms, sim.start_at_ms, &options.timezone)?;
    let schedules = busy_schedules(&busy, &options.timezone)?;
    if let Some(base) = best_predictive(&tried, target).cloned()
        && !schedules.is_empty()
    {
        let found = search_schedules(&runner, &base, &schedules, target)?;
        tried.extend(found);
    }
    // When an idle buffer is the cheapest way to the target, the same buffer in busy hours
    // only, with less of it off hours.
    let cheapest = tried
        .iter()
        .filter(|c| target.met_by(&c.fit))
        .min_by(|a, b| a.fit.vm_hours.total_cmp(&b.fit.vm_hours));
    if let Some(base) = cheapest
        && base.scaling.predictive.is_none()
        && base.scaling.schedules.is_empty()
    {
        let candidates = buffer_schedules(base, &schedules);
        tried.extend(runner.run_all(candidates)?);
    }
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
        timezone: options.timezone.name().to_owned(),
        busy_hours: busy,
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

/// The fit-part VM-hours of the cheapest candidate meeting the target (infinite when none does).
fn cheapest_meeting(tried: &[Candidate], target: Target) -> f64 {
    tried
        .iter()
        .filter(|c| target.met_by(&c.fit))
        .map(|c| c.fit.vm_hours)
        .fold(f64::INFINITY, f64::min)
}

/// The fit-part VM-hours of the plain predictive candidate at `level` and `idle`, if tried.
fn plain_cost(tried: &[Candidate], idle: Duration, level: ServiceLevel) -> Option<f64> {
    tried
        .iter()
        .find(|c| {
            c.scaling.idle_timeout == Some(idle)
                && c.scaling.schedules.is_empty()
                && c.scaling.predictive.map(|p| p.service_level) == Some(level)
        })
        .map(|c| c.fit.vm_hours)
}

/// The predictive candidate without schedules the schedules start from: the cheapest meeting
/// the target on the fit part, or the one closest to it.
fn best_predictive(tried: &[Candidate], target: Target) -> Option<&Candidate> {
    let plain = || {
        tried
            .iter()
            .filter(|c| c.scaling.predictive.is_some() && c.scaling.schedules.is_empty())
    };
    plain()
        .filter(|c| target.met_by(&c.fit))
        .min_by(|a, b| a.fit.vm_hours.total_cmp(&b.fit.vm_hours))
        .or_else(|| {
            plain().min_by(|a, b| {
                target
                    .quantile
                    .of(&a.fit)
                    .total_cmp(&target.quantile.of(&b.fit))
            })
        })
}

/// How far the schedules lower the level outside busy hours from the base candidate's
/// (percentage points), and the most they raise it in busy hours.
const OFF_HOURS_DROPS: [f64; 3] = [2.0, 5.0, 10.0];
const MAX_BUSY_RAISE: f64 = 2.0;
/// Bisection steps of the busy hours' level: to a quarter of a point of `MAX_BUSY_RAISE`.
const BUSY_STEPS: usize = 3;

/// Schedules on the base candidate: for each drop of the level off hours, the least raise in
/// busy hours that still meets the target (the most first, then a bisection), every drop in
/// step. The base is the cheapest plain level meeting the target, so no raise at all misses.
/// A drop whose missing end costs as much as the cheapest policy meeting the target is dropped.
fn search_schedules(
    runner: &Runner<'_>,
    base: &Candidate,
    schedules: &[Schedule],
    target: Target,
) -> Result<Vec<Candidate>, SimError> {
    let Some(p) = base.scaling.predictive else {
        return Ok(Vec::new());
    };
    let level =
        |points: f64| ServiceLevel::from_fraction(p.service_level.fraction() + points / 100.0);
    let candidate = |off: ServiceLevel, busy: ServiceLevel| {
        let idle = base
            .scaling
            .idle_timeout
            .map_or_else(|| "never".to_owned(), |d| d.to_string());
        let schedules = schedules
            .iter()
            .map(|s| Schedule {
                overrides: Overrides {
                    service_level: Some(busy),
                    ..Overrides::default()
                },
                ..s.clone()
            })
            .collect();
        (
            format!("predictive {off}, {busy} in busy hours, idle {idle}"),
            Scaling {
                predictive: Some(Predictive {
                    service_level: off,
                    ..p
                }),
                schedules,
                ..base.scaling.clone()
            },
        )
    };
    // Per drop: the level off hours, the busy level that misses (and its cost, once run) and
    // the one that meets.
    let mut open: Vec<(ServiceLevel, ServiceLevel, Option<f64>, ServiceLevel)> = Vec::new();
    let mut best = if target.met_by(&base.fit) {
        base.fit.vm_hours
    } else {
        f64::INFINITY
    };
    let mut tried = Vec::new();
    let firsts: Vec<(ServiceLevel, ServiceLevel)> = OFF_HOURS_DROPS
        .iter()
        .filter_map(|d| Some((level(-d)?, level(MAX_BUSY_RAISE)?)))
        .collect();
    let runs = runner.run_all(firsts.iter().map(|(o, b)| candidate(*o, *b)).collect())?;
    for ((off, busy), run) in firsts.into_iter().zip(&runs) {
        if target.met_by(&run.fit) {
            best = best.min(run.fit.vm_hours);
            open.push((off, p.service_level, None, busy));
        }
    }
    tried.extend(runs);
    for _ in 0..BUSY_STEPS {
        let steps: Vec<(usize, ServiceLevel)> = open
            .iter()
            .enumerate()
            .filter(|(_, (_, _, miss_cost, _))| miss_cost.is_none_or(|c| c < best))
            .filter_map(|(i, (_, miss, _, meet))| {
                ServiceLevel::from_fraction((miss.fraction() + meet.fraction()) / 2.0)
                    .filter(|l| l != miss && l != meet)
                    .map(|l| (i, l))
            })
            .collect();
        if steps.is_empty() {
            break;
        }
        let runs = runner.run_all(
            steps
                .iter()
                .map(|(i, busy)| candidate(open[*i].0, *busy))
                .collect(),
        )?;
        let mut next = Vec::new();
        for ((i, busy), run) in steps.into_iter().zip(&runs) {
            let (off, miss, miss_cost, meet) = open[i];
            next.push(if target.met_by(&run.fit) {
                best = best.min(run.fit.vm_hours);
                (off, miss, miss_cost, busy)
            } else {
                (off, busy, Some(run.fit.vm_hours), meet)
            });
        }
        open = next;
        tried.extend(runs);
    }
    Ok(tried)
}

/// An idle-buffer candidate with its buffer kept in busy hours only, and a quarter, half or
/// three quarters of it (or none) off hours.
fn buffer_schedules(base: &Candidate, schedules: &[Schedule]) -> Vec<(String, Scaling)> {
    let buffer = base.scaling.idle_buffer.get();
    let mut offs: Vec<u32> = [0, buffer / 4, buffer / 2, buffer * 3 / 4]
        .into_iter()
        .filter(|off| *off < buffer)
        .collect();
    offs.dedup();
    offs.into_iter()
        .map(|off| {
            let schedules = schedules
                .iter()
                .map(|s| Schedule {
                    overrides: Overrides {
                        idle_buffer: Some(Replicas::new(buffer)),
                        ..Overrides::default()
                    },
                    ..s.clone()
                })
                .collect();
            (
                format!("idle buffer {off}, {buffer} in busy hours"),
                Scaling {
                    idle_buffer: Replicas::new(off),
                    schedules,
                    ..base.scaling.clone()
                },
            )
        })
        .collect()
}

/// The hours of the week whose arrival rate in the fit part (before `cut_ms`) is above the
/// part's mean, in `timezone`; on each local day, from its first busy hour to the end of its
/// last. Runs of busy hours that meet at midnight join, and runs with the same hours share one
/// window.
pub fn busy_windows(
    trace: &Trace,
    cut_ms: u64,
    start_at_ms: i64,
    timezone: &Timezone,
) -> Result<Vec<BusyWindow>, SimError> {
    let zone = jiff::tz::TimeZone::get(timezone.name())
        .map_err(|e| SimError::Option(format!("time zone {:?}: {e}", timezone.name())))?;
    let slot_of = |trace_ms: i64| {
        jiff::Timestamp::from_millisecond(start_at_ms.saturating_add(trace_ms))
            .ok()
            .map(|at| {
                let local = zone.to_datetime(at);
                usize::from(local.weekday().to_sunday_zero_offset().unsigned_abs()) * 24
                    + usize::from(local.hour().unsigned_abs())
            })
    };
    let fit = trace
        .jobs
        .partition_point(|j| u64::try_from(j.arrival_ms).map_or(true, |t| t < cut_ms));
    let mut arrivals = [0u64; HOURS_A_WEEK];
    for job in &trace.jobs[..fit] {
        if let Some(slot) = slot_of(job.arrival_ms) {
            arrivals[slot] += 1;
        }
    }
    // How many times each hour of the week occurs in the fit part (a part of whole weeks sees
    // each equally often; a shorter one does not).
    let mut seen = [0u64; HOURS_A_WEEK];
    let hours = cut_ms.div_ceil(3_600_000);
    for h in 0..hours {
        if let Some(slot) = i64::try_from(h * 3_600_000).ok().and_then(slot_of) {
            seen[slot] += 1;
        }
    }
    let mean = fit as f64 / hours.max(1) as f64;
    let busy: Vec<bool> = (0..HOURS_A_WEEK)
        .map(|s| seen[s] > 0 && arrivals[s] as f64 / seen[s] as f64 > mean)
        .collect();
    // Each local day, from its first busy hour to the end of its last.
    let mut filled = [false; HOURS_A_WEEK];
    for day in 0..7 {
        let hours = &busy[day * 24..(day + 1) * 24];
        if let (Some(first), Some(last)) = (
            hours.iter().position(|b| *b),
            hours.iter().rposition(|b| *b),
        ) {
            filled[day * 24 + first..=day * 24 + last].fill(true);
        }
    }
    // Runs of busy hours around the week, each from a quiet hour's end.
    let Some(quiet) = filled.iter().position(|b| !*b) else {
        return Ok(Vec::new());
    };
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    for k in 1..=HOURS_A_WEEK {
        let slot = (quiet + k) % HOURS_A_WEEK;
        match (filled[slot], start) {
            (true, None) => start = Some(k),
            (false, Some(s)) => {
                runs.push(((quiet + s) % HOURS_A_WEEK, k - s));
                start = None;
            }
            _ => {}
        }
    }
    let mut windows: Vec<BusyWindow> = Vec::new();
    for (first, len) in runs {
        let end = first + len;
        let (day, start_hour, end_hour) = (first / 24, first % 24, end % 24);
        let days_long = end / 24 - day;
        let same = windows.iter_mut().find(|w| {
            (
                usize::from(w.start_hour),
                usize::from(w.end_hour),
                usize::from(w.days_long),
            ) == (start_hour, end_hour, days_long)
        });
        let day = u8::try_from(day).unwrap_or(0);
        match same {
            Some(w) => w.days.push(day),
            None => windows.push(BusyWindow {
                days: vec![day],
                start_hour: u8::try_from(start_hour).unwrap_or(0),
                end_hour: u8::try_from(end_hour).unwrap_or(0),
                days_long: u8::try_from(days_long).unwrap_or(0),
            }),
        }
    }
    for w in &mut windows {
        w.days.sort_unstable();
    }
    Ok(windows)
}

const HOURS_A_WEEK: usize = 168;

/// The windows as schedules in `timezone`, without overrides yet.
pub fn busy_schedules(
    windows: &[BusyWindow],
    timezone: &Timezone,
) -> Result<Vec<Schedule>, SimError> {
    windows
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let ends: Vec<u8> = w.days.iter().map(|d| (d + w.days_long) % 7).collect();
            let cron = |hour: u8, days: &[u8]| {
                Cron::parse(&format!("0 {hour} * * {}", day_list(days)))
                    .map_err(|e| SimError::Internal(format!("a busy-hours schedule: {e}")))
            };
            Ok(Schedule {
                name: format!("busy-hours-{}", i + 1),
                start: cron(w.start_hour, &w.days)?,
                end: cron(w.end_hour, &ends)?,
                timezone: timezone.clone(),
                overrides: Overrides::default(),
            })
        })
        .collect()
}

/// Days of the week as a cron field, runs written as ranges: `1-5`, `0,6`.
fn day_list(days: &[u8]) -> String {
    let mut sorted = days.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        parts.push(if j > i {
            format!("{}-{}", sorted[i], sorted[j])
        } else {
            sorted[i].to_string()
        });
        i = j + 1;
    }
    parts.join(",")
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
    /// Run each candidate over the whole trace, two at a time (each thread takes the next one
    /// not yet started, so a slow run does not hold up a queue); results in the given order.
    fn run_all(&self, candidates: Vec<(String, Scaling)>) -> Result<Vec<Candidate>, SimError> {
        let workers = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 2)
            .min(candidates.len().max(1));
        let next = AtomicUsize::new(0);
        let candidates = &candidates;
        let mut results: Vec<(usize, Result<Candidate, SimError>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some((name, scaling)) = candidates.get(i) else {
                                break done;
                            };
                            done.push((i, self.run_one(name.clone(), scaling.clone())));
                        }
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
    if !scaling.schedules.is_empty() {
        out.push_str(&format!("{indent}schedules:\n"));
    }
    for s in &scaling.schedules {
        out.push_str(&format!("{indent}  - name: \"{}\"\n", s.name));
        let mut key = |key: &str, value: String| {
            out.push_str(&format!("{indent}    {key}: {value}\n"));
        };
        key("start", format!("\"{}\"", s.start));
        key("end", format!("\"{}\"", s.end));
        key("timezone", format!("\"{}\"", s.timezone.name()));
        let o = &s.overrides;
        for (name, value) in [
            ("minReplicas", o.min_replicas),
            ("maxReplicas", o.max_replicas),
            ("headroom", o.headroom),
            ("maxSurge", o.max_surge),
            ("idleBuffer", o.idle_buffer),
        ] {
            if let Some(v) = value {
                key(name, v.to_string());
            }
        }
        if let Some(d) = o.scale_down_delay {
            key("scaleDownDelay", d.to_string());
        }
        if let Some(level) = o.service_level {
            key("serviceLevel", format!("\"{level}\""));
        }
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

    fn phase() -> PhaseReport {
        PhaseReport {
            start_s: 0.0,
            end_s: 1.0,
            jobs: 1,
            wait_p50_s: 0.0,
            wait_p90_s: 0.0,
            wait_p95_s: 0.0,
            wait_p99_s: 0.0,
            vm_hours: 1.0,
        }
    }

    #[test]
    fn busy_windows_become_cron_schedules_and_buffers_move_into_them() {
        assert_eq!(day_list(&[5, 1, 2, 3, 4]), "1-5");
        assert_eq!(day_list(&[0, 6, 3]), "0,3,6");
        let windows = [
            BusyWindow {
                days: vec![1, 2, 3, 4, 5],
                start_hour: 8,
                end_hour: 18,
                days_long: 0,
            },
            BusyWindow {
                days: vec![6],
                start_hour: 20,
                end_hour: 2,
                days_long: 1,
            },
        ];
        let zone = Timezone::parse("Europe/Berlin").expect("zone");
        let schedules = busy_schedules(&windows, &zone).expect("schedules");
        let crons: Vec<(String, String)> = schedules
            .iter()
            .map(|s| (s.start.to_string(), s.end.to_string()))
            .collect();
        assert_eq!(
            crons,
            [
                ("0 8 * * 1-5".to_owned(), "0 18 * * 1-5".to_owned()),
                ("0 20 * * 6".to_owned(), "0 2 * * 0".to_owned())
            ]
        );
        assert!(schedules.iter().all(|s| s.timezone == zone));
        let base = Candidate {
            name: "idle buffer 60".to_owned(),
            scaling: Scaling {
                idle_buffer: Replicas::new(60),
                ..Scaling::default()
            },
            fit: phase(),
            test: phase(),
        };
        let tried = buffer_schedules(&base, &schedules);
        let offs: Vec<u32> = tried.iter().map(|(_, s)| s.idle_buffer.get()).collect();
        assert_eq!(offs, [0, 15, 30, 45]);
        for (_, scaling) in &tried {
            assert!(
                scaling
                    .schedules
                    .iter()
                    .all(|s| s.overrides.idle_buffer == Some(Replicas::new(60))
                        && s.overrides.service_level.is_none())
            );
        }
    }

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
