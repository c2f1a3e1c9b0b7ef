//! The request budget shared by every class of one client: a token bucket kept as a "next free
//! slot" (GCRA). Slots are handed out in call order, so waiters are served first come, first
//! served and a busy class cannot push the others back.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::CircleCiError;

#[derive(Debug)]
pub(crate) struct RequestBudget {
    /// Time between two requests at the sustained rate.
    interval: Duration,
    /// How far ahead of the sustained rate a burst may run.
    tolerance: Duration,
    /// When the next request would go if requests went exactly at the sustained rate.
    theoretical_next: Mutex<Option<Instant>>,
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
        let interval = Duration::from_secs_f64((1.0 / requests_per_second).min(3600.0));
        Ok(Self {
            interval,
            tolerance: interval.saturating_mul(burst.max(1) - 1),
            theoretical_next: Mutex::new(None),
        })
    }

    /// Books the next slot and returns when it starts. Booking order is call order.
    pub(crate) fn reserve(&self, now: Instant) -> Instant {
        let mut next = self
            .theoretical_next
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let tat = next.unwrap_or(now).max(now);
        let start = tat
            .checked_sub(self.tolerance)
            .map_or(now, |earliest| earliest.max(now));
        *next = Some(tat + self.interval);
        start
    }

    /// Waits for this caller's slot.
    pub(crate) async fn acquire(&self) {
        let start = self.reserve(Instant::now());
        tokio::time::sleep_until(start).await;
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
    async fn waiters_are_served_in_arrival_order() {
        let budget = std::sync::Arc::new(RequestBudget::new(5.0, 1).expect("valid rate"));
        let order = std::sync::Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let (budget, order) = (budget.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                budget.acquire().await;
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
