//! What every part of a running provisioner shares: metrics, health, events and the CircleCI
//! request budget. Depends on nothing that uses it.

use std::time::Duration as StdDuration;

use provisioner_core::ResourceClass;

use crate::events::{EventKind, Events};
use crate::health::Health;
use crate::metrics::Metrics;

/// What every part of a running provisioner shares.
#[derive(Debug)]
pub struct Context {
    pub metrics: Metrics,
    pub health: Health,
    /// `None` in shadow mode: events are writes.
    pub events: Option<Events>,
    /// Not ready, and a warning event, once a class has failed this long.
    pub unready_after: StdDuration,
    /// A `DemandStale` warning event once a class has had no task counts this long (it runs
    /// degraded meanwhile): three times `unready_after`, 3 minutes by default.
    pub demand_stale_after: StdDuration,
    /// CircleCI's shared request budget, requests per second.
    pub requests_per_second: f64,
}

impl Context {
    pub fn new(unready_after: StdDuration, events: Option<Events>) -> Self {
        Self {
            metrics: Metrics::new(),
            health: Health::new(unready_after),
            events,
            unready_after,
            demand_stale_after: unready_after.saturating_mul(3),
            requests_per_second: provisioner_circleci::DEFAULT_REQUESTS_PER_SECOND,
        }
    }

    pub async fn publish(&self, class: &ResourceClass, kind: EventKind, note: String) {
        if let Some(events) = &self.events {
            events.publish(class, kind, note).await;
        }
    }
}
