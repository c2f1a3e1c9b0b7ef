//! Readiness and liveness. Ready: the config is loaded and, while leading, every class has had
//! a good cycle and none has been failing longer than the threshold. Live: no loop has stalled
//! (a cycle that never ends), so Kubernetes restarts a wedged process.
//!
//! A loop's deadline is pushed back by what it is known to wait for: its planned sleep (the
//! poll interval, a back-off, a `Retry-After`) when a cycle ends, and its slot of the shared
//! CircleCI request budget when a call queues for one. Only a loop that overruns both (a call
//! that never returns) fails liveness: a restart would reset the budget and back-off and help
//! nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use provisioner_core::ResourceClass;

#[derive(Debug)]
struct ClassHealth {
    succeeded_once: bool,
    failing_since: Option<Instant>,
    /// A cycle must have finished (or a known wait begun) by then, or the loop is stalled.
    live_until: Instant,
    /// How long past a known wait the loop may go without news.
    stall_after: Duration,
}

#[derive(Debug)]
pub struct Health {
    config_loaded: AtomicBool,
    classes: Mutex<BTreeMap<ResourceClass, ClassHealth>>,
    unready_after: Duration,
    min_stall: Duration,
}

/// The shortest stall threshold in production.
const MIN_STALL: Duration = Duration::from_secs(30);

impl Health {
    pub fn new(unready_after: Duration) -> Self {
        Self {
            config_loaded: AtomicBool::new(false),
            classes: Mutex::new(BTreeMap::new()),
            unready_after,
            min_stall: MIN_STALL,
        }
    }

    /// A shorter floor for the stall threshold than 30 s (tests).
    #[must_use]
    pub fn with_min_stall(mut self, min_stall: Duration) -> Self {
        self.min_stall = min_stall;
        self
    }

    /// How long a loop may go without finishing a cycle beyond what it is known to wait for:
    /// max(30 s, 10 x poll interval).
    pub fn stall_after(&self, poll_interval: Duration) -> Duration {
        (poll_interval * 10).max(self.min_stall)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ResourceClass, ClassHealth>> {
        self.classes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn set_config_loaded(&self) {
        self.config_loaded.store(true, Ordering::Release);
    }

    pub fn start_class(&self, class: &ResourceClass, now: Instant, stall_after: Duration) {
        self.lock().insert(
            class.clone(),
            ClassHealth {
                succeeded_once: false,
                failing_since: None,
                live_until: now + stall_after,
                stall_after,
            },
        );
    }

    /// The class's loop waits until `until` for something known to end then (its slot of the
    /// shared request budget): it is not stalled before `until` plus its threshold.
    pub fn waiting(&self, class: &ResourceClass, until: Instant) {
        if let Some(h) = self.lock().get_mut(class) {
            h.live_until = h.live_until.max(until + h.stall_after);
        }
    }

    pub fn stop_class(&self, class: &ResourceClass) {
        self.lock().remove(class);
    }

    /// A cycle ended; the next one starts after `sleep`.
    pub fn cycle_done(
        &self,
        class: &ResourceClass,
        ok: bool,
        now: Instant,
        sleep: Duration,
        stall_after: Duration,
    ) {
        if let Some(h) = self.lock().get_mut(class) {
            h.live_until = now + sleep + stall_after;
            h.stall_after = stall_after;
            if ok {
                h.succeeded_once = true;
                h.failing_since = None;
            } else if h.failing_since.is_none() {
                h.failing_since = Some(now);
            }
        }
    }

    /// How long the class has been failing, if it is.
    pub fn failing_for(&self, class: &ResourceClass, now: Instant) -> Option<Duration> {
        self.lock()
            .get(class)
            .and_then(|h| h.failing_since)
            .map(|since| now.saturating_duration_since(since))
    }

    pub fn readiness(&self, now: Instant) -> Result<(), String> {
        if !self.config_loaded.load(Ordering::Acquire) {
            return Err("configuration not loaded".to_owned());
        }
        let mut problems = Vec::new();
        for (class, h) in self.lock().iter() {
            if !h.succeeded_once {
                problems.push(format!("{class}: no successful cycle yet"));
            } else if let Some(since) = h.failing_since
                && now.saturating_duration_since(since) > self.unready_after
            {
                problems.push(format!(
                    "{class}: failing for {}s",
                    now.saturating_duration_since(since).as_secs()
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    }

    pub fn liveness(&self, now: Instant) -> Result<(), String> {
        let stalled: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, h)| now > h.live_until)
            .map(|(class, h)| {
                format!(
                    "{class}: loop stalled (no cycle ended and no known wait for {}s past its deadline)",
                    now.saturating_duration_since(h.live_until).as_secs()
                )
            })
            .collect();
        if stalled.is_empty() {
            Ok(())
        } else {
            Err(stalled.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class() -> ResourceClass {
        ResourceClass::parse("org/a").expect("valid class")
    }

    #[test]
    fn ready_after_config_and_first_good_cycle_unready_when_failing_too_long() {
        let h = Health::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(h.readiness(t0).is_err());
        h.set_config_loaded();
        h.start_class(&class(), t0, Duration::from_secs(30));
        assert!(h.readiness(t0).expect_err("no cycle yet").contains("org/a"));
        h.cycle_done(
            &class(),
            true,
            t0,
            Duration::from_secs(1),
            Duration::from_secs(30),
        );
        assert!(h.readiness(t0).is_ok());
        h.cycle_done(
            &class(),
            false,
            t0,
            Duration::from_secs(1),
            Duration::from_secs(30),
        );
        assert!(
            h.readiness(t0 + Duration::from_secs(59)).is_ok(),
            "still within the threshold"
        );
        assert!(h.readiness(t0 + Duration::from_secs(61)).is_err());
        h.cycle_done(
            &class(),
            true,
            t0 + Duration::from_secs(62),
            Duration::from_secs(1),
            Duration::from_secs(30),
        );
        assert!(h.readiness(t0 + Duration::from_secs(62)).is_ok());
    }

    #[test]
    fn live_unless_a_loop_misses_its_deadline() {
        let h = Health::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let stall = h.stall_after(Duration::from_secs(1));
        assert_eq!(stall, Duration::from_secs(30));
        assert_eq!(
            h.stall_after(Duration::from_secs(5)),
            Duration::from_secs(50)
        );
        assert_eq!(
            Health::new(Duration::from_secs(60))
                .with_min_stall(Duration::from_secs(1))
                .stall_after(Duration::from_millis(50)),
            Duration::from_secs(1)
        );
        h.start_class(&class(), t0, stall);
        assert!(h.liveness(t0 + Duration::from_secs(29)).is_ok());
        assert!(h.liveness(t0 + Duration::from_secs(31)).is_err());
        // A long planned sleep (Retry-After) is not a stall.
        h.cycle_done(&class(), false, t0, Duration::from_secs(300), stall);
        assert!(h.liveness(t0 + Duration::from_secs(320)).is_ok());
        assert!(h.liveness(t0 + Duration::from_secs(331)).is_err());
        // A known wait (a queued request's budget slot) pushes the deadline back, never forward.
        h.waiting(&class(), t0 + Duration::from_secs(400));
        assert!(h.liveness(t0 + Duration::from_secs(429)).is_ok());
        h.waiting(&class(), t0 + Duration::from_secs(10));
        assert!(h.liveness(t0 + Duration::from_secs(429)).is_ok());
        let stalled = h
            .liveness(t0 + Duration::from_secs(431))
            .expect_err("past the wait plus the threshold");
        assert!(stalled.contains("org/a: loop stalled"), "{stalled}");
        h.stop_class(&class());
        assert!(h.liveness(t0 + Duration::from_secs(10_000)).is_ok());
    }
}
