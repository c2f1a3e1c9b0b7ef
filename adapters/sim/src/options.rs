//! What a run is asked to simulate: the world's knobs, the faults and the policy.

use std::collections::BTreeMap;

use provisioner_core::{Duration, ResourceClass, Scaling};

use crate::SimError;
use crate::cluster::ClusterModel;
use crate::rng::SplitMix64;

/// A duration in milliseconds of trace time; one too long for an `i64` saturates well below
/// `i64::MAX`, so adding it to a time cannot overflow.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// How long a VM takes from creation until its runner can claim a job.
#[derive(Debug, Clone, PartialEq)]
pub enum BootTime {
    /// Uniform between the two (inclusive): the boot time the 0.1.0 provisioner preview (the
    /// product this project implements) documents, "two to five minutes".
    Uniform {
        min: Duration,
        max: Duration,
    },
    Fixed(Duration),
    /// Drawn from measured samples.
    Empirical(Vec<Duration>),
}

impl Default for BootTime {
    fn default() -> Self {
        Self::Uniform {
            min: Duration::from_secs(120),
            max: Duration::from_secs(300),
        }
    }
}

impl BootTime {
    /// `2m..5m` (uniform), `90s` (fixed), `empirical:90s,2m,3m30s` or `empirical:@FILE` (one
    /// sample per line or comma; plain numbers are seconds).
    pub fn parse(text: &str) -> Result<Self, SimError> {
        let bad = |e: provisioner_core::InvalidValue| {
            SimError::Option(format!("boot time {text:?}: {e}"))
        };
        if let Some(list) = text.strip_prefix("empirical:") {
            if let Some(path) = list.strip_prefix('@') {
                let content = std::fs::read_to_string(path).map_err(|e| SimError::Io {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?;
                return Self::empirical_samples(&content, path);
            }
            return Self::empirical_samples(list, text);
        }
        match text.split_once("..") {
            Some((lo, hi)) => {
                let (min, max) = (
                    Duration::parse(lo).map_err(bad)?,
                    Duration::parse(hi).map_err(bad)?,
                );
                if min > max {
                    return Err(SimError::Option(format!(
                        "boot time {text:?}: the lower bound is above the upper bound"
                    )));
                }
                Ok(Self::Uniform { min, max })
            }
            None => Ok(Self::Fixed(Duration::parse(text).map_err(bad)?)),
        }
    }

    /// Samples separated by commas, spaces or lines: Go durations (`2m30s`) or plain seconds.
    fn empirical_samples(text: &str, source: &str) -> Result<Self, SimError> {
        let samples = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(|s| match s.parse::<f64>() {
                Ok(secs) if secs.is_finite() && (0.0..1e9).contains(&secs) => {
                    Ok(Duration::from_millis((secs * 1000.0).round() as u64))
                }
                _ => Duration::parse(s)
                    .map_err(|e| SimError::Option(format!("boot time samples in {source:?}: {e}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if samples.is_empty() {
            return Err(SimError::Option(format!(
                "boot time {source:?} has no samples"
            )));
        }
        Self::empirical(samples)
    }

    pub fn empirical(samples: Vec<Duration>) -> Result<Self, SimError> {
        if samples.is_empty() {
            return Err(SimError::Option(
                "an empirical boot time needs at least one sample".to_owned(),
            ));
        }
        Ok(Self::Empirical(samples))
    }

    pub(crate) fn draw_ms(&self, rng: &mut SplitMix64) -> i64 {
        match self {
            Self::Uniform { min, max } => rng.range_i64(millis(*min), millis(*max)),
            Self::Fixed(d) => millis(*d),
            Self::Empirical(samples) => samples
                .get((rng.next_u64() % samples.len().max(1) as u64) as usize)
                .map_or(0, |d| millis(*d)),
        }
    }

    /// The longest boot this distribution can produce (what the oracle plans with).
    pub fn max_ms(&self) -> i64 {
        match self {
            Self::Uniform { max, .. } => millis(*max),
            Self::Fixed(d) => millis(*d),
            Self::Empirical(samples) => samples.iter().map(|d| millis(*d)).max().unwrap_or(0),
        }
    }
}

impl std::fmt::Display for BootTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Uniform { min, max } => write!(f, "{min}..{max}"),
            Self::Fixed(d) => write!(f, "{d}"),
            Self::Empirical(s) => write!(f, "empirical({} samples)", s.len()),
        }
    }
}

/// `N/PERIOD`: something happening `N` times per `PERIOD`, or for `DURATION` per `PERIOD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Every {
    /// How many times (`lost-node`, `restart`), or 1 for a window.
    pub count: u32,
    /// How long each lasts (windows only: `outage=2h/7d`), zero for an instant.
    pub lasting: Duration,
    pub period: Duration,
}

impl Every {
    /// `text` is `COUNT/PERIOD` (or `DURATION/PERIOD` when `window`).
    fn parse(key: &str, text: &str, window: bool) -> Result<Self, SimError> {
        let form = if window {
            "DURATION/PERIOD, e.g. 2h/7d"
        } else {
            "COUNT/PERIOD, e.g. 1/7d"
        };
        let bad = |why: String| {
            SimError::Option(format!("faults: {key}={text:?}: {why} (expected {form})"))
        };
        let (what, period) = text
            .split_once('/')
            .ok_or_else(|| bad("no '/'".to_owned()))?;
        let period = Duration::parse(period).map_err(|e| bad(e.to_string()))?;
        if period.is_zero() {
            return Err(bad("the period is zero".to_owned()));
        }
        let every = if window {
            let lasting = Duration::parse(what).map_err(|e| bad(e.to_string()))?;
            if lasting.is_zero() || lasting >= period {
                return Err(bad(
                    "the window must be longer than 0s and shorter than the period".to_owned(),
                ));
            }
            Self {
                count: 1,
                lasting,
                period,
            }
        } else {
            let count: u32 = what
                .trim()
                .parse()
                .map_err(|_| bad(format!("{what:?} is not a whole number")))?;
            if count == 0 || millis(period) / i64::from(count) < 1000 {
                return Err(bad(
                    "the count must be at least 1 and at most one a second".to_owned()
                ));
            }
            Self {
                count,
                lasting: Duration::ZERO,
                period,
            }
        };
        Ok(every)
    }
}

/// The faults of a run: rates, each a probability per request (per controller cycle for
/// `restart`, per VM created for the VM faults), and timed events.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// A CircleCI API request fails (half of these as errors, half as timeouts).
    pub api: f64,
    /// A Kubernetes scale or delete request fails.
    pub k8s: f64,
    /// A VM fails to start (ends in failed-to-start instead of running).
    pub start: f64,
    /// The controller restarts before a cycle, losing the planner's state.
    pub restart: f64,
    /// CircleCI is down from..until (trace time): every request fails.
    pub api_outage: Option<(Duration, Duration)>,
    /// CircleCI outage windows (`outage=2h/7d`): in each period one window at a random offset.
    pub outage: Option<Every>,
    /// Nodes lost (`lost-node=1/7d`): each time a random share of the powered-on VMs keep
    /// showing Running but are gone (jobs on them are re-run by CircleCI).
    pub lost_node: Option<Every>,
    /// Controller restarts at a rate (`restart=1/1h`), evenly spaced from a random phase.
    pub restart_every: Option<Every>,
    /// A VM stays starting forever with no failure status (deleted Secret, quota).
    pub stuck_start: f64,
    /// A VM stays unschedulable (`ErrorUnschedulable`) from its creation on.
    pub unschedulable: f64,
    /// A VM boots but its runner never connects to CircleCI (a wrong token, no route).
    pub never_connects: f64,
}

const FAULT_KEYS: &str = "api, k8s, start, restart, api-outage, outage, lost-node, stuck-start, unschedulable, never-connects";

impl Faults {
    /// `api=0.01,k8s=0.01,start=0.02,restart=0.001,api-outage=1h..2h,outage=2h/7d,
    /// lost-node=1/7d,restart=1/1h,stuck-start=0.01,unschedulable=0.01,never-connects=0.01`
    /// (any subset).
    pub fn parse(text: &str) -> Result<Self, SimError> {
        let mut faults = Self::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some(window) = part.strip_prefix("api-outage=") {
                let bad = |e: String| {
                    SimError::Option(format!(
                        "faults: api-outage={window:?}: {e} (expected FROM..UNTIL, e.g. 1h..1h30m)"
                    ))
                };
                let (from, until) = window
                    .split_once("..")
                    .ok_or_else(|| bad("no '..'".to_owned()))?;
                let from = Duration::parse(from).map_err(|e| bad(e.to_string()))?;
                let until = Duration::parse(until).map_err(|e| bad(e.to_string()))?;
                if from >= until {
                    return Err(bad("the window is empty".to_owned()));
                }
                faults.api_outage = Some((from, until));
                continue;
            }
            let Some((key, value)) = part.split_once('=') else {
                return Err(SimError::Option(format!(
                    "faults: {part:?} is not key=rate (keys: {FAULT_KEYS})"
                )));
            };
            let key = key.trim();
            match key {
                "outage" => {
                    faults.outage = Some(Every::parse(key, value, true)?);
                    continue;
                }
                "lost-node" => {
                    faults.lost_node = Some(Every::parse(key, value, false)?);
                    continue;
                }
                "restart" if value.contains('/') => {
                    faults.restart_every = Some(Every::parse(key, value, false)?);
                    continue;
                }
                _ => {}
            }
            let rate: f64 = value.trim().parse().map_err(|_| {
                SimError::Option(format!("faults: {key}={value:?} is not a number"))
            })?;
            if !(0.0..=1.0).contains(&rate) {
                return Err(SimError::Option(format!(
                    "faults: {key}={rate} is not a probability in [0, 1]"
                )));
            }
            match key {
                "api" => faults.api = rate,
                "k8s" => faults.k8s = rate,
                "start" => faults.start = rate,
                "restart" => faults.restart = rate,
                "stuck-start" => faults.stuck_start = rate,
                "unschedulable" => faults.unschedulable = rate,
                "never-connects" => faults.never_connects = rate,
                other => {
                    return Err(SimError::Option(format!(
                        "faults: unknown fault {other:?} (keys: {FAULT_KEYS})"
                    )));
                }
            }
        }
        Ok(faults)
    }
}

/// The provisioner's scaling per class: one default and per-class overrides (from a config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalings {
    /// For classes not listed; `None` makes an unlisted class an error (a config was given).
    pub default: Option<Scaling>,
    pub classes: BTreeMap<ResourceClass, Scaling>,
}

impl Scalings {
    pub fn one(scaling: Scaling) -> Self {
        Self {
            default: Some(scaling),
            classes: BTreeMap::new(),
        }
    }

    pub fn for_class(&self, class: &ResourceClass) -> Option<&Scaling> {
        self.classes.get(class).or(self.default.as_ref())
    }
}

/// The policy to run. All go through the core's planner and the fleet port; they differ in how
/// many VMs they want.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyChoice {
    /// The provisioner's own rule (`decide`): the 0.1.0 preview's, the 0.1.2 preview's or
    /// ARC-like (Actions Runner Controller), by the scaling given.
    Provisioner(Scalings),
    /// GitLab's autoscaler: `min(max, busy + max(idle_count, ceil(busy * scale_factor)))`, where
    /// busy counts running and waiting jobs.
    Gitlab {
        idle_count: u32,
        scale_factor: f64,
        max_replicas: u32,
        idle_timeout: Option<Duration>,
    },
    /// Knows the future: wants one VM per job arriving within the longest boot time (plus one
    /// poll), on top of current demand, so each job finds a VM that booted just in time. VMs
    /// power off when idle for that long.
    Oracle { max_replicas: u32 },
}

impl PolicyChoice {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Provisioner(_) => "provisioner",
            Self::Gitlab { .. } => "gitlab",
            Self::Oracle { .. } => "oracle",
        }
    }
}

/// Everything about a run other than the trace and the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptions {
    pub boot_time: BootTime,
    pub poll_interval: Duration,
    /// Time a Kubernetes write takes to land: the plan decided at `t` is applied at
    /// `t + api_latency`.
    pub api_latency: Duration,
    pub seed: u64,
    pub faults: Faults,
    /// Unix time of the trace's zero (schedules are evaluated in wall-clock terms). The
    /// default is the real trace's start, Monday 2020-02-03 00:00 UTC.
    pub start_at_ms: i64,
    /// Sample the world every this much simulated time (for charts).
    pub sample_every: Option<Duration>,
    /// How many of the longest waits to list.
    pub worst_waits: usize,
    /// Skip polls where nothing can have changed. Off only to check it changes nothing.
    pub fast_path: bool,
    /// How long a CircleCI request waits before it times out (a timed-out cycle takes this long).
    pub api_timeout: Duration,
    /// The cluster the VMs land on; `None`: room without limit, boots drawn from `boot_time`.
    pub cluster: Option<ClusterModel>,
    /// Cut the report into windows of trace time at these (`phases` in the report).
    pub phases: Vec<Duration>,
    /// Run the controller's wait and cost estimator beside the truth (`SimReport::estimate`).
    pub estimate: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            boot_time: BootTime::default(),
            poll_interval: Duration::from_secs(1),
            api_latency: Duration::ZERO,
            seed: 1,
            faults: Faults::default(),
            start_at_ms: 1_580_688_000_000,
            sample_every: None,
            worst_waits: 10,
            fast_path: true,
            api_timeout: Duration::from_secs(10),
            cluster: None,
            phases: Vec::new(),
            estimate: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_forms() {
        assert_eq!(
            BootTime::parse("2m..5m").expect("range"),
            BootTime::default()
        );
        assert_eq!(
            BootTime::parse("90s").expect("fixed"),
            BootTime::Fixed(Duration::from_secs(90))
        );
        assert_eq!(
            BootTime::parse("empirical:1m,2m").expect("emp").max_ms(),
            120_000
        );
        let file = std::env::temp_dir().join(format!("sim-boot-{}.txt", std::process::id()));
        std::fs::write(&file, "95\n2m\n130.5\n").expect("write samples");
        let from_file = BootTime::parse(&format!("empirical:@{}", file.display())).expect("file");
        let _ = std::fs::remove_file(&file);
        assert_eq!(
            from_file,
            BootTime::Empirical(vec![
                Duration::from_secs(95),
                Duration::from_secs(120),
                Duration::from_millis(130_500)
            ])
        );
        assert!(
            BootTime::parse("empirical:@/nonexistent/boots.txt")
                .expect_err("missing")
                .to_string()
                .contains("/nonexistent/boots.txt")
        );
        for bad in ["5m..2m", "2m..", "fast", "empirical:", "empirical:2m,soon"] {
            let err = BootTime::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn faults_parse_and_reject() {
        let f = Faults::parse("api=0.01,k8s=0.02,start=0.5,restart=0.001").expect("faults");
        assert_eq!((f.api, f.k8s, f.start, f.restart), (0.01, 0.02, 0.5, 0.001));
        assert!(
            Faults::parse("api=2")
                .expect_err("rate")
                .to_string()
                .contains("api=2")
        );
        assert!(
            Faults::parse("disk=0.1")
                .expect_err("key")
                .to_string()
                .contains("disk")
        );
        assert!(Faults::parse("api").is_err());
        let f = Faults::parse(
            "outage=2h/7d,lost-node=1/7d,restart=1/1h,stuck-start=0.01,unschedulable=0.02,never-connects=0.03",
        )
        .expect("new forms");
        let h = Duration::from_secs(3600);
        assert_eq!(
            f.outage,
            Some(Every {
                count: 1,
                lasting: Duration::from_secs(7200),
                period: Duration::from_secs(7 * 86_400)
            })
        );
        assert_eq!(
            f.lost_node.map(|e| (e.count, e.period)),
            Some((1, Duration::from_secs(7 * 86_400)))
        );
        assert_eq!(f.restart_every.map(|e| (e.count, e.period)), Some((1, h)));
        assert_eq!(
            (f.restart, f.stuck_start, f.unschedulable, f.never_connects),
            (0.0, 0.01, 0.02, 0.03)
        );
        for bad in [
            "outage=8d/7d",
            "outage=2h",
            "lost-node=0/7d",
            "lost-node=x/1d",
            "restart=1/0s",
            "never-connects=2",
        ] {
            let err = Faults::parse(bad).expect_err(bad).to_string();
            let key = bad.split('=').next().unwrap_or(bad);
            assert!(err.contains(key), "{bad}: {err}");
        }
        let outage = Faults::parse("api-outage=1h..90m")
            .expect("outage")
            .api_outage;
        assert_eq!(
            outage,
            Some((Duration::from_secs(3600), Duration::from_secs(5400)))
        );
        assert!(
            Faults::parse("api-outage=2h..1h")
                .expect_err("empty")
                .to_string()
                .contains("api-outage")
        );
    }
}
