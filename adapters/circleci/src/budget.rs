//! The request budget shared by every class of one client: a token bucket kept as a "next free
//! slot" (GCRA). Slots are handed out in call order, so waiters are served first come, first
//! served and a busy class cannot push the others back.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::CircleCiError;

/// At a high configured rate, requests may go this far ahead of the sustained pace (a burst of
/// `rate x 100 ms`): many classes' polls that happen to coincide then go at once instead of
/// queueing behind each other for a few ms each, while over any window the rate still holds
/// to within that burst. At the default 10 per second it is the plain pair.
const BURST_WINDOW: Duration = Duration::from_millis(100);

/// The slowest pace a server's advertised limit can impose. Below it the exhausted-window
/// pause takes over, so a bogus header cannot make a poll wait for hours.
const SLOWEST_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct RequestBudget {
    /// Time between two requests at the configured rate.
    configured: Duration,
    /// Requests that may go at once after a quiet spell, at a pace set by CircleCI.
    burst: u32,
    /// The same at the configured pace: at least `burst`, and [`BURST_WINDOW`]'s worth.
    configured_burst: u32,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Time between two requests now: the configured one, or longer when CircleCI advertises
    /// a lower limit.
    interval: Duration,
    /// When the next request would go if requests went exactly at the sustained rate.
    theoretical_next: Option<Instant>,
}

impl RequestBudget {
    /// `burst` requests may go at once after a quiet spell; after that, one per `1/rate` s.
    pub(crate) fn new(requests_per_second: f64, burst: u32) -> Result<Self, CircleCiError> {
        if !requests_per_second.is_finite() || requests_per_second <= 0.0 {
            return Err(CircleCiError::InvalidOption {
                field: "requests_per_second",
                reason: format!("{requests_per_second} is not a positive number"),
            });
        }
        let configured = Duration::from_secs_f64((1.0 / requests_per_second).min(3600.0));
        let burst = burst.max(1);
        let window_burst = (BURST_WINDOW.as_secs_f64() * requests_per_second).floor();
        Ok(Self {
            configured,
            burst,
            configured_burst: burst.max(window_burst.min(f64::from(u32::MAX)) as u32),
            state: Mutex::new(State {
                interval: configured,
                theoretical_next: None,
            }),
        })
    }

    /// Paces requests to the lower of the configured rate and `server_limit` (requests per
    /// second CircleCI advertises for this token), but never slower than one per 10 s.
    pub(crate) fn limit_to(&self, server_limit: f64) {
        let server_interval = if server_limit > 0.0 && server_limit.is_finite() {
            Duration::from_secs_f64((1.0 / server_limit).min(SLOWEST_INTERVAL.as_secs_f64()))
        } else {
            SLOWEST_INTERVAL
        };
        let interval = self.configured.max(server_interval);
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .interval = interval;
    }

    pub(crate) fn interval(&self) -> Duration {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .interval
    }

    /// Books the next slot and returns when it starts. Booking order is call order.
    pub(crate) fn reserve(&self, now: Instant) -> Instant {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        // A limit CircleCI advertises is kept to the plain burst.
        let burst = if state.interval == self.configured {
            self.configured_burst
        } else {
            self.burst
        };
        let tolerance = state.interval.saturating_mul(burst - 1);
        let tat = state.theoretical_next.unwrap_or(now).max(now);
        let start = tat
            .checked_sub(tolerance)
            .map_or(now, |earliest| earliest.max(now));
        state.theoretical_next = Some(tat + state.interval);
        start
    }

    /// Waits for this caller's slot; `on_wait` learns when it starts, before a wait (not
    /// called when the slot is free now), so a caller's liveness can allow for the queue.
    pub(crate) async fn acquire(&self, on_wait: impl FnOnce(Instant)) {
        let now = Instant::now();
        let start = self.reserve(now);
        if start > now {
            on_wait(start);
            tokio::time::sleep_until(start).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_positive_rates() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = RequestBudget::new(bad, 2).expect_err("a bad rate");
            assert!(err.to_string().contains("requests_per_second"), "{err}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_then_spaces_requests_at_the_rate() {
        let budget = RequestBudget::new(10.0, 2).expect("valid rate");
        let t0 = Instant::now();
        let starts: Vec<Duration> = (0..6).map(|_| budget.reserve(t0) - t0).collect();
        let ms: Vec<u128> = starts.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, vec![0, 0, 100, 200, 300, 400]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_high_rate_lets_100_ms_worth_go_at_once_but_not_under_a_server_limit() {
        let budget = RequestBudget::new(220.0, 2).expect("valid rate");
        let t0 = Instant::now();
        let starts: Vec<Duration> = (0..30).map(|_| budget.reserve(t0) - t0).collect();
        assert!(starts[..22].iter().all(Duration::is_zero), "{starts:?}");
        assert!(starts[22] > Duration::ZERO, "{starts:?}");
        // Past the burst, the sustained pace: 30 requests in 30 intervals less the burst.
        let interval = Duration::from_secs_f64(1.0 / 220.0);
        assert!(starts[29] >= interval * 7, "{starts:?}");
        assert!(starts[29] <= interval * 8, "{starts:?}");
        // CircleCI advertises 100 per second: its pace, in pairs.
        let limited = RequestBudget::new(220.0, 2).expect("valid rate");
        limited.limit_to(100.0);
        let ms: Vec<u128> = (0..4)
            .map(|_| (limited.reserve(t0) - t0).as_millis())
            .collect();
        assert_eq!(ms, vec![0, 0, 10, 20]);
    }

    #[tokio::test(start_paused = true)]
    async fn refills_after_a_quiet_spell() {
        let budget = RequestBudget::new(10.0, 2).expect("valid rate");
        let t0 = Instant::now();
        for _ in 0..4 {
            budget.reserve(t0);
        }
        let later = t0 + Duration::from_secs(10);
        assert_eq!(budget.reserve(later), later);
        assert_eq!(budget.reserve(later), later);
        assert_eq!(budget.reserve(later) - later, Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn an_advertised_lower_limit_slows_the_pace_within_bounds() {
        let budget = RequestBudget::new(10.0, 1).expect("valid rate");
        budget.limit_to(2.0);
        assert_eq!(budget.interval(), Duration::from_millis(500));
        budget.limit_to(50.0);
        assert_eq!(
            budget.interval(),
            Duration::from_millis(100),
            "never faster than configured"
        );
        budget.limit_to(1.0 / 86_400.0);
        assert_eq!(
            budget.interval(),
            SLOWEST_INTERVAL,
            "never slower than one per 10 s"
        );
        budget.limit_to(0.0);
        assert_eq!(budget.interval(), SLOWEST_INTERVAL);
        budget.limit_to(2.0);
        let t0 = Instant::now();
        let starts: Vec<u128> = (0..3)
            .map(|_| (budget.reserve(t0) - t0).as_millis())
            .collect();
        assert_eq!(starts, vec![0, 500, 1000]);
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_arrival_order() {
        let budget = std::sync::Arc::new(RequestBudget::new(5.0, 1).expect("valid rate"));
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (budget, order) = (budget.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                budget.acquire(|_| {}).await;
                order
                    .lock()
                    .expect("not poisoned")
                    .push((i, Instant::now()));
            }));
            tokio::task::yield_now().await;
        }
        let t0 = Instant::now();
        for task in tasks {
            task.await.expect("task finished");
        }
        let order = order.lock().expect("not poisoned").clone();
        let ids: Vec<i32> = order.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, vec![0, 1, 2, 3, 4]);
        let last = order.last().map(|(_, at)| *at - t0).expect("five entries");
        assert_eq!(
            last,
            Duration::from_millis(800),
            "5 requests at 5/s take 0.8 s"
        );
    }
}
