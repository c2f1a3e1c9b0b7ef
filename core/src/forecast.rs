//! The predictive warm pool: how many idle VMs to keep above demand so that the jobs arriving
//! within the next boot time find one ready.
//!
//! It learns only from what the controller sees each cycle, so the controller and the simulator
//! run it on the same inputs:
//! - arrivals: a rise in `unclaimed + running` between two polls (a job that arrives and one that
//!   finishes within the same poll cancel out, so it errs low);
//! - the boot time: VMs seen starting and later seen running;
//! - the wall clock: which hour of the week it is.
//!
//! The arrival rate blends the recent rate (an exponentially weighted average over
//! `recentWindow`: CI work comes in bursts that cluster, so the last minutes say much about the
//! next ones) with the rate seen in the same hour of past weeks. The count arriving within the
//! lookahead is compound: a build fans out into several jobs at once, so its variance is the
//! mean times `E[S²]/E[S]` of the batch sizes seen. The warm count is the `serviceLevel`
//! quantile of that count (a gamma distribution with its mean and variance).
//!
//! All of it lives in the planner's state: a restart forgets it and the class falls back to its
//! configured floor and buffer until it has learned again.

use std::collections::{HashMap, VecDeque};
use std::fmt;

use crate::domain::{Duration, InvalidValue, Timestamp};
use crate::ports::{Demand, FleetState, VmId, VmPhase};

/// The lookahead before any boot has been seen: the middle of the seed's "two to five minutes".
pub const DEFAULT_LOOKAHEAD: Duration = Duration::from_secs(210);

/// Hours in a week: the profile's buckets.
const WEEK_HOURS: usize = 168;

/// What a profile bucket keeps of the weeks before, per week: a half-life of four weeks.
const WEEKLY_KEEP: f64 = 0.840_896_415_253_714_6;

/// A bucket is trusted once it has seen this much time; before that the recent rate stands in.
const PROFILE_MIN_EXPOSURE_S: f64 = 1800.0;

/// Boot times remembered (the newest ones).
const BOOT_SAMPLES: usize = 64;

/// Batch statistics forget with this half-life, in batches seen.
const BATCH_HALF_LIFE: f64 = 5000.0;

/// Below this many expected arrivals within the lookahead, no VM is kept warm.
const NEGLIGIBLE: f64 = 1e-3;

/// A share of cases, in basis points so that controls stay comparable and hashable.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceLevel(u16);

impl ServiceLevel {
    /// The lowest and highest levels accepted: below 1 % the control does nothing useful, at
    /// 100 % it would ask for an unbounded pool.
    pub const MIN: Self = Self(100);
    pub const MAX: Self = Self(9990);

    /// `"95%"`, `"99.5%"` or `"0.95"`.
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        let trimmed = text.trim();
        let (number, scale) = match trimmed.strip_suffix('%') {
            Some(percent) => (percent.trim(), 100.0),
            None => (trimmed, 10_000.0),
        };
        let value: f64 = number.parse().map_err(|_| {
            InvalidValue(format!(
                "service level {text:?} is not a number (expected e.g. \"95%\" or \"0.95\")"
            ))
        })?;
        Self::from_basis_points(value * scale).ok_or_else(|| {
            InvalidValue(format!(
                "service level {text:?} is outside 1%..99.9% (a share of cases, e.g. \"95%\")"
            ))
        })
    }

    /// The level as a fraction (0.95 for 95 %), when within the accepted range.
    pub fn from_fraction(fraction: f64) -> Option<Self> {
        Self::from_basis_points(fraction * 10_000.0)
    }

    fn from_basis_points(bp: f64) -> Option<Self> {
        let bp = bp.round();
        (bp.is_finite() && (f64::from(Self::MIN.0)..=f64::from(Self::MAX.0)).contains(&bp))
            .then_some(Self(bp as u16))
    }

    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }
}

impl std::str::FromStr for ServiceLevel {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ServiceLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let percent = f64::from(self.0) / 100.0;
        write!(f, "{percent}%")
    }
}

impl fmt::Debug for ServiceLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceLevel({self})")
    }
}

/// A weight in whole percent (0..=100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Percent(u8);

impl Percent {
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        let trimmed = text.trim();
        let number = trimmed.strip_suffix('%').unwrap_or(trimmed).trim();
        match number.parse::<u8>() {
            Ok(value) if value <= 100 => Ok(Self(value)),
            _ => Err(InvalidValue(format!(
                "{text:?} is not a whole percentage between 0% and 100%"
            ))),
        }
    }

    /// For values valid by construction; above 100 saturates.
    pub const fn new(value: u8) -> Self {
        Self(if value > 100 { 100 } else { value })
    }

    pub const fn get(self) -> u8 {
        self.0
    }

    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl std::str::FromStr for Percent {
    type Err = InvalidValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

/// The predictive control's settings for a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Predictive {
    /// How often the warm VMs should cover the arrivals of the next lookahead.
    pub service_level: ServiceLevel,
    /// How far ahead to cover; `None`: the boot time seen (mean of the recent boots).
    pub lookahead: Option<Duration>,
    /// Time constant of the recent arrival rate.
    pub recent_window: Duration,
    /// Weight of the recent rate against the hour-of-week profile.
    pub recent_weight: Percent,
}

impl Default for Predictive {
    fn default() -> Self {
        Self {
            service_level: ServiceLevel(9000),
            lookahead: None,
            recent_window: Duration::from_secs(300),
            recent_weight: Percent(50),
        }
    }
}

/// One hour of the week: arrivals and observed time. This week's are whole numbers, so they
/// do not depend on how often anyone looked; older weeks fade by [`WEEKLY_KEEP`] a week.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Bucket {
    week: i64,
    arrivals: u64,
    millis: u64,
    past_arrivals: f64,
    past_seconds: f64,
}

impl Bucket {
    fn add(&mut self, week: i64, arrivals: u64, millis: u64) {
        if week != self.week {
            let weeks = week.saturating_sub(self.week).clamp(1, 64);
            let keep = WEEKLY_KEEP.powi(weeks as i32 - 1);
            self.past_arrivals = (self.past_arrivals * WEEKLY_KEEP + self.arrivals as f64) * keep;
            self.past_seconds =
                (self.past_seconds * WEEKLY_KEEP + self.millis as f64 / 1000.0) * keep;
            self.week = week;
            self.arrivals = 0;
            self.millis = 0;
        }
        self.arrivals = self.arrivals.saturating_add(arrivals);
        self.millis = self.millis.saturating_add(millis);
    }

    /// Observed milliseconds as of `now`, counting the time since `seen_until` (in this hour).
    fn seconds_by(&self, now: Timestamp, seen_until: i64) -> f64 {
        let (week, _) = week_and_hour(now);
        let mut bucket = *self;
        bucket.add(
            week,
            0,
            u64::try_from(now.unix_millis() - seen_until).unwrap_or(0),
        );
        bucket.past_seconds * 1000.0 + bucket.millis as f64
    }

    fn rate(&self) -> Option<f64> {
        let seconds = self.past_seconds + self.millis as f64 / 1000.0;
        (seconds >= PROFILE_MIN_EXPOSURE_S)
            .then(|| (self.past_arrivals + self.arrivals as f64) / seconds)
    }
}

/// What the forecaster saw at its last observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    at: Timestamp,
    tasks: u32,
    starting: u32,
    running: u32,
}

/// What the predictive control has learned about a class. Starts empty (a restart).
#[derive(Debug, Clone, Default)]
pub struct Forecaster {
    last: Option<Seen>,
    /// Arrivals per second, exponentially weighted, as of the last arrival (decayed from there
    /// when read, so that looking more often changes nothing).
    recent: Option<(Timestamp, f64)>,
    profile: Vec<Bucket>,
    /// Decayed sums of batch sizes and their squares (a batch: the arrivals of one poll).
    batch_sum: f64,
    batch_square_sum: f64,
    /// VMs seen starting, with their creation time, to learn how long boots take.
    starting: HashMap<VmId, Timestamp>,
    boots_ms: VecDeque<u64>,
    boots_total_ms: u64,
}

/// A forecast, with what went into it (for logs and the simulator's views).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Forecast {
    /// Arrivals per second expected now.
    pub rate: f64,
    pub lookahead: Duration,
    /// Arrivals expected within the lookahead.
    pub expected: f64,
    /// VMs to keep warm above demand.
    pub warm: u32,
}

impl Forecaster {
    /// Learn from one cycle's observation. Call it every cycle the class is decided, with the
    /// same clock the schedules use.
    pub fn observe(
        &mut self,
        now: Timestamp,
        demand: Demand,
        fleet: &FleetState,
        window: Duration,
    ) {
        let (starting, running) =
            fleet
                .vms
                .iter()
                .filter(|vm| !vm.deleting)
                .fold((0u32, 0u32), |(s, r), vm| match vm.phase {
                    VmPhase::Starting => (s + 1, r),
                    VmPhase::Running => (s, r + 1),
                    _ => (s, r),
                });
        let seen = Seen {
            at: now,
            tasks: demand.total(),
            starting,
            running,
        };
        let Some(last) = self.last.replace(seen) else {
            self.track_starting(now, fleet);
            return;
        };
        if now < last.at {
            // The clock went back: start the rate over rather than learn from a negative span.
            self.recent = None;
            return;
        }
        let arrivals = seen.tasks.saturating_sub(last.tasks);
        if arrivals > 0 {
            let a = f64::from(arrivals);
            let before = self
                .recent
                .map_or(0.0, |(at, rate)| decayed(rate, now.since(at), window));
            self.recent = Some((now, before + a / window.as_secs_f64().max(1.0)));
            let keep = (-std::f64::consts::LN_2 / BATCH_HALF_LIFE).exp();
            self.batch_sum = self.batch_sum * keep + a;
            self.batch_square_sum = self.batch_square_sum * keep + a * a;
        }
        self.add_to_profile(last.at, now, u64::from(arrivals));
        if (starting, running) != (last.starting, last.running) {
            self.track_starting(now, fleet);
        }
    }

    /// The warm VMs `settings` asks for at `now`, from what was learned so far.
    pub fn forecast(&self, now: Timestamp, settings: &Predictive) -> Forecast {
        let lookahead = settings.lookahead.unwrap_or_else(|| self.boot_time());
        let rate = self.rate_at(now, settings);
        let expected = rate * lookahead.as_secs_f64();
        Forecast {
            rate,
            lookahead,
            expected,
            warm: warm_quantile(expected, self.dispersion(), settings.service_level),
        }
    }

    /// When the forecast should be looked at again although nothing happened: at the next hour,
    /// when the profile may ask for more. (Between arrivals the forecast only decays, and a
    /// lower target changes no plan: VMs already up stay until they power off.)
    pub fn revisit_at(&self, now: Timestamp, settings: &Predictive) -> Option<Timestamp> {
        let last = self.last?;
        if settings.recent_weight.get() >= 100 || self.profile.is_empty() {
            return None;
        }
        let next_hour =
            Timestamp::from_unix_millis((now.unix_millis().div_euclid(HOUR_MS) + 1) * HOUR_MS);
        // This hour's bucket, not yet trusted, becomes so once it has seen enough time.
        let (_, hour) = week_and_hour(now);
        let hour_start = now.unix_millis().div_euclid(HOUR_MS) * HOUR_MS;
        let seen_ms = self.profile[hour].seconds_by(now, last.at.unix_millis().max(hour_start));
        let trusted_at = (seen_ms < PROFILE_MIN_EXPOSURE_S * 1000.0).then(|| {
            now.saturating_add(Duration::from_millis(
                (PROFILE_MIN_EXPOSURE_S * 1000.0 - seen_ms).ceil() as u64,
            ))
        });
        Some(trusted_at.map_or(next_hour, |t| t.min(next_hour)))
    }

    /// The mean of the boots seen, or [`DEFAULT_LOOKAHEAD`] before any.
    pub fn boot_time(&self) -> Duration {
        match self.boots_ms.len() as u64 {
            0 => DEFAULT_LOOKAHEAD,
            n => Duration::from_millis(self.boots_total_ms / n),
        }
    }

    fn rate_at(&self, now: Timestamp, settings: &Predictive) -> f64 {
        let Some(last) = self.last else {
            return 0.0;
        };
        let recent = self.recent.map_or(0.0, |(at, rate)| {
            decayed(rate, now.since(at), settings.recent_window)
        });
        let (week, hour) = week_and_hour(now);
        let usual = self
            .profile
            .get(hour)
            .and_then(|bucket| {
                // The time since the last look counts as seen, as it would had anyone looked.
                let hour_start = now.unix_millis().div_euclid(HOUR_MS) * HOUR_MS;
                let unseen = now.unix_millis() - last.at.unix_millis().max(hour_start);
                let mut bucket = *bucket;
                bucket.add(week, 0, u64::try_from(unseen).unwrap_or(0));
                bucket.rate()
            })
            .unwrap_or(recent);
        let w = settings.recent_weight.fraction();
        (w * recent + (1.0 - w) * usual).max(0.0)
    }

    /// `E[S²]/E[S]` of the batch sizes: how much more the count varies than a Poisson count.
    fn dispersion(&self) -> f64 {
        if self.batch_sum > 0.0 {
            (self.batch_square_sum / self.batch_sum).max(1.0)
        } else {
            1.0
        }
    }

    fn add_to_profile(&mut self, from: Timestamp, to: Timestamp, arrivals: u64) {
        if self.profile.is_empty() {
            self.profile = vec![Bucket::default(); WEEK_HOURS];
        }
        let end = to.unix_millis();
        // Of a gap longer than a week, only the last week counts: at most 169 steps.
        let mut at = from.unix_millis().max(end - WEEK_HOURS as i64 * HOUR_MS);
        if at >= end {
            let (week, hour) = week_and_hour(to);
            self.profile[hour].add(week, arrivals, 0);
            return;
        }
        while at < end {
            let until = ((at.div_euclid(HOUR_MS) + 1) * HOUR_MS).min(end);
            // Arrivals are seen at the end of the span: they count toward its last hour.
            let arrivals_here = if until == end { arrivals } else { 0 };
            let (week, hour) = week_and_hour(Timestamp::from_unix_millis(at));
            self.profile[hour].add(week, arrivals_here, (until - at) as u64);
            at = until;
        }
    }

    /// Record the boots of VMs seen starting before and running now, and remember the ones
    /// starting now.
    fn track_starting(&mut self, now: Timestamp, fleet: &FleetState) {
        let mut still_starting = HashMap::with_capacity(self.starting.len());
        for vm in fleet.vms.iter().filter(|vm| !vm.deleting) {
            match vm.phase {
                VmPhase::Starting => {
                    still_starting.insert(vm.id.clone(), vm.created_at);
                }
                VmPhase::Running => {
                    if let Some(created) = self.starting.get(&vm.id) {
                        self.record_boot(now.since(*created));
                    }
                }
                VmPhase::Stopped | VmPhase::FailedToStart => {}
            }
        }
        self.starting = still_starting;
    }

    fn record_boot(&mut self, boot: Duration) {
        let ms = boot.as_millis();
        self.boots_ms.push_back(ms);
        self.boots_total_ms = self.boots_total_ms.saturating_add(ms);
        if self.boots_ms.len() > BOOT_SAMPLES
            && let Some(old) = self.boots_ms.pop_front()
        {
            self.boots_total_ms -= old;
        }
    }
}

const HOUR_MS: i64 = 3_600_000;

fn decayed(rate: f64, elapsed: Duration, window: Duration) -> f64 {
    rate * (-elapsed.as_secs_f64() / window.as_secs_f64().max(1.0)).exp()
}

/// Which week (counted from the one of 1970-01-01) and which hour of it, Monday 00:00 UTC
/// being hour 0.
fn week_and_hour(at: Timestamp) -> (i64, usize) {
    // 1970-01-01 was a Thursday: hour 72 of its week.
    let hours = at.unix_millis().div_euclid(HOUR_MS) + 72;
    (
        hours.div_euclid(WEEK_HOURS as i64),
        hours.rem_euclid(WEEK_HOURS as i64) as usize,
    )
}

/// The `level` quantile of a count with mean `expected` and variance `expected * dispersion`,
/// as a gamma distribution (Wilson–Hilferty), rounded up.
pub fn warm_quantile(expected: f64, dispersion: f64, level: ServiceLevel) -> u32 {
    if !(expected.is_finite() && expected > NEGLIGIBLE) {
        return 0;
    }
    let dispersion = if dispersion.is_finite() {
        dispersion.max(1.0)
    } else {
        1.0
    };
    let shape = expected / dispersion;
    let z = normal_quantile(level.fraction());
    let base = 1.0 - 1.0 / (9.0 * shape) + z / (3.0 * shape.sqrt());
    let quantile = expected * base.max(0.0).powi(3);
    // A count above any pool is as good as the cap it will be clamped to.
    quantile.ceil().min(f64::from(crate::domain::Replicas::MAX)) as u32
}

/// The standard normal quantile (Acklam's rational approximation, relative error < 1.2e-9).
fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    const LOW: f64 = 0.02425;
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ports::Vm;

    fn at(s: i64) -> Timestamp {
        // 2020-02-03 00:00 UTC, a Monday.
        Timestamp::from_unix_millis(1_580_688_000_000 + s * 1000)
    }

    fn tasks(n: u32) -> Demand {
        Demand {
            unclaimed: n,
            running: 0,
        }
    }

    #[test]
    fn service_levels_parse_and_refuse() {
        assert_eq!(ServiceLevel::parse("95%").expect("pct").fraction(), 0.95);
        assert_eq!(
            ServiceLevel::parse("0.995").expect("frac").to_string(),
            "99.5%"
        );
        for bad in ["100%", "0", "1.5", "ninety", "0.1%"] {
            let err = ServiceLevel::parse(bad).expect_err(bad);
            assert!(err.0.contains(bad), "{err}");
        }
        assert_eq!(Percent::parse("40%").expect("pct").get(), 40);
        assert!(Percent::parse("140").is_err());
    }

    #[test]
    fn normal_quantile_matches_known_values() {
        for (p, z) in [
            (0.5, 0.0),
            (0.9, 1.281_551_6),
            (0.95, 1.644_853_6),
            (0.01, -2.326_347_9),
        ] {
            assert!(
                (normal_quantile(p) - z).abs() < 1e-6,
                "{p}: {}",
                normal_quantile(p)
            );
        }
    }

    #[test]
    fn gamma_quantile_is_near_the_poisson_one() {
        // Poisson(20): the 95 % quantile is 28.
        assert_eq!(
            warm_quantile(20.0, 1.0, ServiceLevel::parse("95%").expect("level")),
            28
        );
        assert_eq!(warm_quantile(0.0, 5.0, ServiceLevel::MAX), 0);
        assert_eq!(warm_quantile(f64::NAN, 1.0, ServiceLevel::MAX), 0);
    }

    #[test]
    fn a_fresh_forecaster_asks_for_nothing() {
        let f = Forecaster::default();
        let forecast = f.forecast(at(0), &Predictive::default());
        assert_eq!((forecast.warm, forecast.lookahead), (0, DEFAULT_LOOKAHEAD));
        assert_eq!(f.revisit_at(at(0), &Predictive::default()), None);
    }

    #[test]
    fn arrivals_raise_the_forecast_which_then_decays() {
        let settings = Predictive {
            recent_weight: Percent::new(100),
            ..Predictive::default()
        };
        let mut f = Forecaster::default();
        let fleet = FleetState::default();
        let window = settings.recent_window;
        f.observe(at(0), tasks(0), &fleet, window);
        for i in 1..=30 {
            f.observe(at(i * 10), tasks(i as u32), &fleet, window);
        }
        let busy = f.forecast(at(300), &settings);
        // One job every 10 s over a 210 s lookahead: about 21 expected (the average lags).
        assert!((10.0..=21.0).contains(&busy.expected), "{busy:?}");
        assert!(busy.warm as f64 > busy.expected, "{busy:?}");
        // Nothing but the recent rate: nothing to look at again for.
        assert_eq!(f.revisit_at(at(300), &settings), None);
        let later = f.forecast(at(300 + 1800), &settings);
        assert!(later.warm < busy.warm / 4, "{later:?}");
    }

    #[test]
    fn the_profile_remembers_the_hour_of_the_week() {
        let settings = Predictive {
            recent_weight: Percent::new(0),
            ..Predictive::default()
        };
        let mut f = Forecaster::default();
        let fleet = FleetState::default();
        let week = 7 * 86_400;
        let mut total = 0;
        // Two weeks: busy (a job a minute) from 09:00 to 10:00 on Mondays, quiet otherwise.
        for w in 0..2 {
            f.observe(at(w * week), tasks(total), &fleet, settings.recent_window);
            for m in 0..60 {
                total += 1;
                f.observe(
                    at(w * week + 9 * 3600 + m * 60),
                    tasks(total),
                    &fleet,
                    settings.recent_window,
                );
            }
            f.observe(
                at(w * week + 10 * 3600),
                tasks(total),
                &fleet,
                settings.recent_window,
            );
            f.observe(
                at(w * week + week - 1),
                tasks(total),
                &fleet,
                settings.recent_window,
            );
        }
        let monday_nine = f.forecast(at(2 * week + 9 * 3600 + 60), &settings);
        let monday_noon = f.forecast(at(2 * week + 12 * 3600), &settings);
        assert!(
            (monday_nine.rate - 1.0 / 60.0).abs() < 0.004,
            "{monday_nine:?}"
        );
        assert!(monday_nine.warm >= 4, "{monday_nine:?}");
        assert_eq!(monday_noon.warm, 0, "{monday_noon:?}");
    }

    #[test]
    fn boots_seen_set_the_lookahead() {
        let vm = |id: &str, created: i64, phase: VmPhase| Vm {
            id: VmId::new(id),
            name: Arc::from(id),
            created_at: at(created),
            phase,
            deleting: false,
            failing: None,
            ready_at: None,
            registered: None,
        };
        let fleet = |vms: Vec<Vm>| FleetState {
            spec_replicas: Some(vms.len() as u32),
            vms,
        };
        let mut f = Forecaster::default();
        let w = Duration::from_secs(300);
        f.observe(
            at(0),
            tasks(0),
            &fleet(vec![vm("a", 0, VmPhase::Starting)]),
            w,
        );
        f.observe(
            at(10),
            tasks(0),
            &fleet(vec![
                vm("a", 0, VmPhase::Starting),
                vm("b", 10, VmPhase::Starting),
            ]),
            w,
        );
        f.observe(
            at(100),
            tasks(0),
            &fleet(vec![
                vm("a", 0, VmPhase::Running),
                vm("b", 10, VmPhase::Starting),
            ]),
            w,
        );
        f.observe(
            at(310),
            tasks(0),
            &fleet(vec![
                vm("a", 0, VmPhase::Stopped),
                vm("b", 10, VmPhase::Running),
            ]),
            w,
        );
        // a: 100 s, b: 300 s.
        assert_eq!(f.boot_time(), Duration::from_secs(200));
    }

    #[test]
    fn hours_of_the_week_start_on_monday() {
        let (week, hour) = week_and_hour(at(0));
        assert_eq!(hour, 0);
        assert_eq!(week_and_hour(at(3600 * 25)), (week, 25));
        assert_eq!(week_and_hour(at(-1)), (week - 1, 167));
    }
}
