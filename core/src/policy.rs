//! The scaling rule: how many VMs a class should have, given its demand.
//!
//! `desired = unclaimed + running (+ headroom when there is a task) (+ idleBuffer, or the
//! predictive control's warm VMs when more)`, clamped to
//! `[minReplicas, maxReplicas]`, then, when `maxSurge > 0`, capped at ready VMs + `maxSurge`;
//! `scaleDownDelay` then holds the highest desired of the last `scaleDownDelay`. With none of the
//! extras it is exactly the 0.1.0 rule.

use std::collections::VecDeque;
use std::fmt;

use jiff::tz::TimeZone;

use crate::cron::Cron;
use crate::domain::{Duration, InvalidValue, Replicas, Timestamp};
use crate::forecast::{Predictive, ServiceLevel};
use crate::healing::Healing;
use crate::ports::Demand;

/// The controls in force at one moment (after schedules are applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Controls {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub headroom: u32,
    pub max_surge: u32,
    pub scale_down_delay: Duration,
    pub idle_buffer: u32,
    /// Keep warm the VMs a forecast of arrivals asks for (when more than `idle_buffer`).
    pub predictive: Option<Predictive>,
}

impl Default for Controls {
    fn default() -> Self {
        Self {
            min_replicas: 3,
            max_replicas: 10,
            headroom: 0,
            max_surge: 0,
            scale_down_delay: Duration::ZERO,
            idle_buffer: 0,
            predictive: None,
        }
    }
}

impl Controls {
    /// The rule before `scaleDownDelay`: demand, headroom and buffer (or the `warm` VMs the
    /// predictive control asks for, when more), clamped, then surge-capped.
    pub fn desired(&self, demand: Demand, ready_vms: u32, warm: u32) -> u32 {
        let tasks = demand.total();
        let headroom = if tasks > 0 { self.headroom } else { 0 };
        let wanted = tasks
            .saturating_add(headroom)
            .saturating_add(self.idle_buffer.max(warm));
        let clamped = wanted.clamp(self.min_replicas, self.max_replicas.max(self.min_replicas));
        if self.max_surge > 0 {
            clamped.min(ready_vms.saturating_add(self.max_surge))
        } else {
            clamped
        }
    }
}

/// A schedule's overrides; unset fields keep the class's own value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overrides {
    pub min_replicas: Option<Replicas>,
    pub max_replicas: Option<Replicas>,
    pub headroom: Option<Replicas>,
    pub max_surge: Option<Replicas>,
    pub scale_down_delay: Option<Duration>,
    pub idle_buffer: Option<Replicas>,
    /// Applies only to a class with the predictive control on.
    pub service_level: Option<ServiceLevel>,
}

impl Overrides {
    pub fn apply(&self, base: Controls) -> Controls {
        Controls {
            min_replicas: self.min_replicas.map_or(base.min_replicas, Replicas::get),
            max_replicas: self.max_replicas.map_or(base.max_replicas, Replicas::get),
            headroom: self.headroom.map_or(base.headroom, Replicas::get),
            max_surge: self.max_surge.map_or(base.max_surge, Replicas::get),
            scale_down_delay: self.scale_down_delay.unwrap_or(base.scale_down_delay),
            idle_buffer: self.idle_buffer.map_or(base.idle_buffer, Replicas::get),
            predictive: base.predictive.map(|p| Predictive {
                service_level: self.service_level.unwrap_or(p.service_level),
                ..p
            }),
        }
    }
}

/// An IANA time zone, kept with the name the user wrote.
#[derive(Clone)]
pub struct Timezone {
    name: String,
    zone: TimeZone,
}

impl Timezone {
    pub fn parse(name: &str) -> Result<Self, InvalidValue> {
        let zone = TimeZone::get(name).map_err(|_| {
            InvalidValue(format!(
                "time zone {name:?} is not an IANA time zone name (e.g. \"UTC\", \"Europe/Berlin\")"
            ))
        })?;
        Ok(Self {
            name: name.to_owned(),
            zone,
        })
    }

    pub fn utc() -> Self {
        Self {
            name: "UTC".to_owned(),
            zone: TimeZone::UTC,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl PartialEq for Timezone {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for Timezone {}

impl fmt::Debug for Timezone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timezone({:?})", self.name)
    }
}

/// A window of time, between a `start` and the next `end`, in which overrides apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub name: String,
    pub start: Cron,
    pub end: Cron,
    pub timezone: Timezone,
    pub overrides: Overrides,
}

impl Schedule {
    /// Active when its latest `start` at or before `now` is later than its latest `end`.
    pub(crate) fn is_active(&self, now: Timestamp) -> bool {
        let Ok(instant) = jiff::Timestamp::from_millisecond(now.unix_millis()) else {
            return false;
        };
        let local = self.timezone.zone.to_datetime(instant);
        match (
            self.start.latest_at_or_before(local),
            self.end.latest_at_or_before(local),
        ) {
            (Some(start), Some(end)) => start > end,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// Every control the planner reads for a class (0.1.2's `scaling`, plus `idleBuffer` and the
/// `healing` grace settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scaling {
    pub min_replicas: Replicas,
    pub max_replicas: Replicas,
    pub headroom: Replicas,
    pub max_surge: Replicas,
    pub scale_down_delay: Duration,
    /// Written into each VM's runner config; the VM powers itself off. Not schedulable.
    pub idle_timeout: Option<Duration>,
    /// Idle VMs kept on top of demand even when there is none (ARC's `minRunners`, GitLab's
    /// `idle_count`); unlike `minReplicas` it is not a floor on the total.
    pub idle_buffer: Replicas,
    /// The predictive warm pool (`serviceLevel` and the `forecast*` keys); off when `None`.
    pub predictive: Option<Predictive>,
    pub schedules: Vec<Schedule>,
    /// When VMs that did not stop by themselves may be deleted (the class's `healing` block).
    pub healing: Healing,
}

impl Default for Scaling {
    fn default() -> Self {
        let c = Controls::default();
        Self {
            min_replicas: Replicas::new(c.min_replicas),
            max_replicas: Replicas::new(c.max_replicas),
            headroom: Replicas::ZERO,
            max_surge: Replicas::ZERO,
            scale_down_delay: Duration::ZERO,
            idle_timeout: None,
            idle_buffer: Replicas::ZERO,
            predictive: None,
            schedules: Vec::new(),
            healing: Healing::default(),
        }
    }
}

impl Scaling {
    pub fn base_controls(&self) -> Controls {
        Controls {
            min_replicas: self.min_replicas.get(),
            max_replicas: self.max_replicas.get(),
            headroom: self.headroom.get(),
            max_surge: self.max_surge.get(),
            scale_down_delay: self.scale_down_delay,
            idle_buffer: self.idle_buffer.get(),
            predictive: self.predictive,
        }
    }

    /// The controls in force at `now` and the schedule that set them (the first active one).
    /// The planner finds the same with a per-minute cache; this uncached form checks the rule.
    #[cfg(test)]
    fn controls_at(&self, now: Timestamp) -> (Controls, Option<&Schedule>) {
        let base = self.base_controls();
        match self.schedules.iter().find(|s| s.is_active(now)) {
            Some(s) => (s.overrides.apply(base), Some(s)),
            None => (base, None),
        }
    }
}

/// Remembers recent desired values so `scaleDownDelay` can hold the highest of them.
///
/// Desired is kept as a step function (a value holds from the poll that computed it until the
/// poll that replaced it), so the result does not depend on how often anyone polls: a value
/// counts until `scaleDownDelay` after it was replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DelayWindow {
    current: Option<u32>,
    /// Replaced values and when they were replaced, values strictly decreasing front to back.
    replaced: VecDeque<(u32, Timestamp)>,
}

impl DelayWindow {
    /// Record `desired` at `now`; return the value to use and, when an older value is holding it
    /// up, the time that hold ends.
    pub fn hold(
        &mut self,
        desired: u32,
        now: Timestamp,
        delay: Duration,
    ) -> (u32, Option<Timestamp>) {
        if let Some(previous) = self.current
            && previous != desired
        {
            while self.replaced.back().is_some_and(|(v, _)| *v <= previous) {
                self.replaced.pop_back();
            }
            self.replaced.push_back((previous, now));
        }
        self.current = Some(desired);
        let horizon = now.saturating_sub(delay);
        while self
            .replaced
            .front()
            .is_some_and(|(_, until)| *until <= horizon || delay.is_zero())
        {
            self.replaced.pop_front();
        }
        while self.replaced.back().is_some_and(|(v, _)| *v <= desired) {
            self.replaced.pop_back();
        }
        match self.replaced.front() {
            Some((held, until)) => (*held, Some(until.saturating_add(delay))),
            None => (desired, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(unclaimed: u32, running: u32) -> Demand {
        Demand { unclaimed, running }
    }

    #[test]
    fn seed_rule_is_unclaimed_plus_running_clamped() {
        let c = Controls::default();
        assert_eq!(c.desired(demand(0, 0), 0, 0), 3);
        assert_eq!(c.desired(demand(4, 2), 0, 0), 6);
        assert_eq!(c.desired(demand(40, 2), 0, 0), 10);
    }

    #[test]
    fn headroom_only_with_tasks_and_counted_toward_max() {
        let c = Controls {
            headroom: 2,
            min_replicas: 0,
            ..Controls::default()
        };
        assert_eq!(c.desired(demand(0, 0), 0, 0), 0);
        assert_eq!(c.desired(demand(1, 0), 0, 0), 3);
        assert_eq!(c.desired(demand(9, 0), 0, 0), 10);
    }

    #[test]
    fn idle_buffer_applies_without_tasks_and_is_not_a_floor() {
        let c = Controls {
            idle_buffer: 2,
            min_replicas: 0,
            ..Controls::default()
        };
        assert_eq!(c.desired(demand(0, 0), 0, 0), 2);
        assert_eq!(c.desired(demand(3, 1), 0, 0), 6);
    }

    #[test]
    fn max_surge_caps_above_ready() {
        let c = Controls {
            max_surge: 2,
            ..Controls::default()
        };
        assert_eq!(c.desired(demand(8, 0), 1, 0), 3);
        assert_eq!(c.desired(demand(8, 0), 7, 0), 8);
    }

    #[test]
    fn delay_holds_highest_of_window_then_lets_go() {
        let d = Duration::from_secs(60);
        let mut w = DelayWindow::default();
        let t = |s: i64| Timestamp::from_unix_millis(s * 1000);
        assert_eq!(w.hold(8, t(0), d), (8, None));
        assert_eq!(w.hold(8, t(10), d), (8, None));
        // Replaced at t=20: holds until 80.
        assert_eq!(w.hold(3, t(20), d), (8, Some(t(80))));
        assert_eq!(w.hold(5, t(30), d), (8, Some(t(80))));
        assert_eq!(w.hold(5, t(79), d), (8, Some(t(80))));
        // 8 has gone; 5 is current.
        assert_eq!(w.hold(5, t(80), d), (5, None));
        assert_eq!(w.hold(3, t(81), d), (5, Some(t(141))));
    }

    #[test]
    fn zero_delay_never_holds() {
        let mut w = DelayWindow::default();
        let t0 = Timestamp::from_unix_millis(0);
        assert_eq!(w.hold(8, t0, Duration::ZERO).0, 8);
        assert_eq!(w.hold(2, t0, Duration::ZERO).0, 2);
    }

    #[test]
    fn schedules_first_active_wins() {
        let sched = |name: &str, start: &str, end: &str, min: u32| Schedule {
            name: name.to_owned(),
            start: Cron::parse(start).expect("cron"),
            end: Cron::parse(end).expect("cron"),
            timezone: Timezone::parse("Europe/Berlin").expect("tz"),
            overrides: Overrides {
                min_replicas: Some(Replicas::new(min)),
                ..Overrides::default()
            },
        };
        let scaling = Scaling {
            schedules: vec![
                sched("workday", "0 8 * * 1-5", "0 18 * * 1-5", 6),
                sched("always-day", "0 7 * * *", "0 20 * * *", 4),
            ],
            ..Scaling::default()
        };
        // 2026-11-30 is a Monday; Berlin is UTC+1 in winter. 09:00 UTC = 10:00 local.
        let at = |iso: &str| {
            let ts: jiff::Timestamp = iso.parse().expect("ts");
            Timestamp::from_unix_millis(ts.as_millisecond())
        };
        let (c, s) = scaling.controls_at(at("2026-11-30T09:00:00Z"));
        assert_eq!(
            (c.min_replicas, s.map(|s| s.name.as_str())),
            (6, Some("workday"))
        );
        let (c, s) = scaling.controls_at(at("2026-11-30T17:30:00Z"));
        assert_eq!(
            (c.min_replicas, s.map(|s| s.name.as_str())),
            (4, Some("always-day"))
        );
        let (c, s) = scaling.controls_at(at("2026-11-30T22:00:00Z"));
        assert_eq!((c.min_replicas, s.is_none()), (3, true));
    }

    #[test]
    fn unknown_timezone_is_refused() {
        let err = Timezone::parse("Mars/Olympus").expect_err("tz");
        assert!(err.0.contains("Mars/Olympus"));
    }
}
