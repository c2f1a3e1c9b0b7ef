//! "Do not call again until T" state. The control loop polls every few seconds; instead of
//! sleeping inside a poll, a failing class is refused quickly until its back-off ends. Rate
//! limits apply to the token, so a 429 pauses every class; other failures pause only their own.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use provisioner_core::{ErrorKind, ResourceClass};
use tokio::time::Instant;

use crate::error::CircleCiError;

/// Longest pause a server can order (`Retry-After`, a rate-limit reset), so that a broken proxy
/// cannot stop scaling for days.
pub(crate) const MAX_SERVER_PAUSE: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Pause {
    until: Instant,
    /// Consecutive failures, for the exponent.
    failures: u32,
    cause: String,
    kind: ErrorKind,
}

#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    classes: Mutex<HashMap<ResourceClass, Pause>>,
    global: Mutex<Option<Pause>>,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            classes: Mutex::new(HashMap::new()),
            global: Mutex::new(None),
        }
    }

    pub(crate) fn max(&self) -> Duration {
        self.max
    }

    /// The refusal to return instead of calling, if `class` or the whole client is paused.
    pub(crate) fn check(&self, class: &ResourceClass, now: Instant) -> Option<CircleCiError> {
        let refuse = |pause: &Pause| {
            (pause.until > now).then(|| CircleCiError::BackingOff {
                class: class.clone(),
                remaining: round_up(pause.until - now),
                cause_kind: pause.kind,
                cause: pause.cause.clone(),
            })
        };
        let global = self.global.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(refusal) = global.as_ref().and_then(refuse) {
            return Some(refusal);
        }
        drop(global);
        let classes = self.classes.lock().unwrap_or_else(PoisonError::into_inner);
        classes.get(class).and_then(refuse)
    }

    /// A call for `class` succeeded: its next failure starts the back-off from the beginning.
    pub(crate) fn succeeded(&self, class: &ResourceClass) {
        self.classes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(class);
    }

    /// The token changed: pauses caused by the old one refusing (401/403 and other permanent
    /// errors) end now, so the next cycle tries the new token instead of waiting them out.
    pub(crate) fn forget_permanent(&self) {
        self.classes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, pause| pause.kind != ErrorKind::Permanent);
        let mut global = self.global.lock().unwrap_or_else(PoisonError::into_inner);
        if global
            .as_ref()
            .is_some_and(|p| p.kind == ErrorKind::Permanent)
        {
            *global = None;
        }
    }

    /// A call for `class` failed: pause it exponentially (with jitter), or for `at_least` when
    /// the server said so. Returns the pause.
    pub(crate) fn failed(
        &self,
        class: &ResourceClass,
        error: &CircleCiError,
        at_least: Option<Duration>,
        now: Instant,
    ) -> Duration {
        let mut classes = self.classes.lock().unwrap_or_else(PoisonError::into_inner);
        let failures = classes
            .get(class)
            .map_or(0, |p| p.failures)
            .saturating_add(1);
        let delay = self.delay(failures, at_least);
        classes.insert(
            class.clone(),
            Pause {
                until: now + delay,
                failures,
                cause: error.to_string(),
                kind: error.kind(),
            },
        );
        delay
    }

    /// CircleCI throttled the token: pause every class. With no hint from the server the pause
    /// grows with each consecutive 429.
    pub(crate) fn throttled(
        &self,
        cause: impl FnOnce(provisioner_core::Duration) -> CircleCiError,
        hint: Option<Duration>,
        now: Instant,
    ) -> CircleCiError {
        let mut global = self.global.lock().unwrap_or_else(PoisonError::into_inner);
        let failures = global.as_ref().map_or(0, |p| p.failures).saturating_add(1);
        let delay = self.delay(failures, hint);
        let error = cause(round_up(delay));
        *global = Some(Pause {
            until: now + delay,
            failures,
            cause: error.to_string(),
            kind: error.kind(),
        });
        error
    }

    /// A rate-limit window is used up although the call succeeded: pause every class until it
    /// resets, without counting it as a failure.
    pub(crate) fn quota_exhausted(&self, pause: Duration, now: Instant) {
        let pause = pause.min(MAX_SERVER_PAUSE);
        let mut global = self.global.lock().unwrap_or_else(PoisonError::into_inner);
        if global.as_ref().is_some_and(|p| p.until >= now + pause) {
            return;
        }
        *global = Some(Pause {
            until: now + pause,
            failures: 0,
            cause: "CircleCI's rate limit for this token is used up until the window resets"
                .to_owned(),
            kind: ErrorKind::Transient,
        });
    }

    /// Any answer other than a 429: the token is not being throttled any more.
    pub(crate) fn not_throttled(&self) {
        let mut global = self.global.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(pause) = global.as_mut() {
            pause.failures = 0;
        }
    }

    /// The server's hint when given (capped at an hour), else `initial * 2^(failures-1)` capped
    /// at `max`, with
    /// "equal jitter": between half and all of it, so many controllers do not retry in step.
    fn delay(&self, failures: u32, hint: Option<Duration>) -> Duration {
        if let Some(hint) = hint {
            return hint.min(MAX_SERVER_PAUSE);
        }
        let exponent = failures.saturating_sub(1).min(30);
        let full = self.initial.saturating_mul(1 << exponent).min(self.max);
        full / 2 + full.mul_f64(random_fraction() / 2.0)
    }
}

/// Shown durations in whole milliseconds, rounded up so "0s" never means "still waiting".
fn round_up(d: Duration) -> provisioner_core::Duration {
    let millis = d.as_nanos().div_ceil(1_000_000);
    provisioner_core::Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// A number in [0, 1) from the standard library's randomly keyed hasher: jitter needs no
/// cryptographic quality, only different values across processes and calls.
fn random_fraction() -> f64 {
    let bits = RandomState::new().hash_one(std::time::SystemTime::now());
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str) -> ResourceClass {
        ResourceClass::parse(name).expect("a valid class")
    }

    fn server_error(c: &ResourceClass) -> CircleCiError {
        CircleCiError::Server {
            class: c.clone(),
            endpoint: crate::Endpoint::Unclaimed,
            status: 502,
            url: "http://x/".to_owned(),
            message: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_with_jitter_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let a = class("ns/a");
        let now = Instant::now();
        let mut previous_full = Duration::ZERO;
        for failure in 1..=10u32 {
            let delay = backoff.failed(&a, &server_error(&a), None, now);
            let full = Duration::from_secs(1u64 << (failure - 1)).min(Duration::from_secs(60));
            assert!(
                delay >= full / 2 && delay <= full,
                "failure {failure}: {delay:?} not in [{:?}, {full:?}]",
                full / 2
            );
            assert!(full >= previous_full);
            previous_full = full;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_class_is_refused_until_its_pause_ends_and_others_are_not() {
        let backoff = Backoff::new(Duration::from_secs(4), Duration::from_secs(60));
        let (a, b) = (class("ns/a"), class("ns/b"));
        let now = Instant::now();
        let delay = backoff.failed(&a, &server_error(&a), None, now);
        let refusal = backoff.check(&a, now).expect("a is paused");
        assert_eq!(refusal.kind(), ErrorKind::Transient);
        assert!(refusal.to_string().contains("HTTP 502"), "{refusal}");
        assert!(refusal.to_string().contains("backing off"), "{refusal}");
        assert!(backoff.check(&b, now).is_none(), "b is not paused");
        assert!(
            backoff.check(&a, now + delay).is_none(),
            "a's pause is over"
        );
        backoff.succeeded(&a);
        let again = backoff.failed(&a, &server_error(&a), None, now);
        assert!(
            again <= Duration::from_secs(4),
            "a success restarts the exponent: {again:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_pauses_every_class_for_the_hint_capped() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(600));
        let (a, b) = (class("ns/a"), class("ns/b"));
        let now = Instant::now();
        let cause = |after| CircleCiError::RateLimited {
            class: a.clone(),
            endpoint: crate::Endpoint::Running,
            retry_after: after,
            message: None,
        };
        let error = backoff.throttled(cause, Some(Duration::from_secs(30)), now);
        assert_eq!(
            error.retry_after(),
            Some(provisioner_core::Duration::from_secs(30))
        );
        for c in [&a, &b] {
            let refusal = backoff
                .check(c, now + Duration::from_secs(29))
                .expect("paused");
            assert_eq!(
                refusal.retry_after(),
                Some(provisioner_core::Duration::from_secs(1))
            );
        }
        assert!(backoff.check(&b, now + Duration::from_secs(30)).is_none());
        let capped = backoff.throttled(cause, Some(Duration::from_secs(99_999)), now);
        assert_eq!(
            capped.retry_after(),
            Some(provisioner_core::Duration::from_secs(3600))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_exhausted_quota_pauses_without_shortening_a_longer_pause() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(600));
        let a = class("ns/a");
        let now = Instant::now();
        backoff.quota_exhausted(Duration::from_secs(20), now);
        backoff.quota_exhausted(Duration::from_secs(5), now);
        let refusal = backoff
            .check(&a, now + Duration::from_secs(10))
            .expect("paused");
        assert!(refusal.to_string().contains("rate limit"), "{refusal}");
        assert!(backoff.check(&a, now + Duration::from_secs(20)).is_none());
    }

    #[test]
    fn jitter_is_in_range_and_varies() {
        let samples: Vec<f64> = (0..64).map(|_| random_fraction()).collect();
        assert!(samples.iter().all(|f| (0.0..1.0).contains(f)));
        assert!(
            samples.iter().any(|f| (f - samples[0]).abs() > 1e-9),
            "jitter never varies"
        );
    }
}
