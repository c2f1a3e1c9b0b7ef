//! The controller's wait and cost estimator (`provisioner_core::estimate`) run inside the
//! simulator, which knows every job's real wait: fed what the controller would see each poll
//! (the class's task counts and its pool), it reports its estimate beside the truth, so a user
//! can see how far to trust the controller's `provisioner_job_wait_seconds` and friends.

use provisioner_core::estimate::{EstimateSettings, Estimator};
use provisioner_core::{Demand, Timestamp};
use serde::Serialize;

/// One class's estimate and what really happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassEstimate {
    pub class: String,
    /// Jobs started, as estimated from the running count and the VMs seen finishing.
    pub jobs_started: u64,
    pub jobs_started_actual: u64,
    /// Waiting job-seconds per job started.
    pub wait_mean_s: f64,
    pub wait_mean_s_actual: f64,
    /// 95th percentile of the per-job waits of the first-in-first-out queue model.
    pub wait_p95_s: f64,
    pub wait_p95_s_actual: f64,
    /// Share of jobs started that found an idle VM.
    pub warm_share: f64,
    /// Share of jobs claimed the instant they arrived.
    pub warm_share_actual: f64,
    pub boot_mean_s: f64,
    pub idle_vm_hours: f64,
    pub busy_vm_hours: f64,
    pub boot_vm_hours: f64,
}

/// Every class's estimator, looked at on the poll grid.
#[derive(Debug)]
pub(crate) struct Estimates {
    estimators: Vec<Estimator>,
    /// Per class: the estimated waits, `(seconds, jobs)`, for the percentile.
    waits: Vec<Vec<(f64, u32)>>,
    poll_ms: i64,
    start_at_ms: i64,
}

impl Estimates {
    pub fn new(idle_timeouts_ms: &[Option<i64>], poll_ms: i64, start_at_ms: i64) -> Self {
        let estimators = idle_timeouts_ms
            .iter()
            .map(|idle| {
                let idle = idle.map(|ms| {
                    provisioner_core::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
                });
                Estimator::new(EstimateSettings::new(idle))
            })
            .collect::<Vec<_>>();
        Self {
            waits: vec![Vec::new(); estimators.len()],
            estimators,
            poll_ms,
            start_at_ms,
        }
    }

    /// A look at `t`, as a controller polling every tick would have had: nothing changed
    /// since the previous look until the tick before `t` (the loop only skips ticks where
    /// nothing happens), then the counts and pool of `t`.
    pub fn look(&mut self, t: i64, class: usize, demand: Demand, vms: &[provisioner_core::Vm]) {
        let (before, now) = (self.at(t - self.poll_ms), self.at(t));
        let e = &mut self.estimators[class];
        e.hold(before);
        let step = e.observe(now, demand, vms);
        self.waits[class].extend(step.waits);
    }

    fn at(&self, t: i64) -> Timestamp {
        Timestamp::from_unix_millis(self.start_at_ms.saturating_add(t))
    }

    /// The report, given per class its name and each job's real wait in ms (`None`: never
    /// claimed).
    pub fn finish(self, actual: Vec<(String, Vec<Option<i64>>)>) -> Vec<ClassEstimate> {
        self.estimators
            .into_iter()
            .zip(self.waits)
            .zip(actual)
            .map(|((e, mut waits), (class, real))| {
                let totals = e.totals();
                let mut claimed: Vec<i64> = real.iter().flatten().copied().collect();
                claimed.sort_unstable();
                let n = claimed.len().max(1) as f64;
                waits.sort_by(|a, b| a.0.total_cmp(&b.0));
                ClassEstimate {
                    class,
                    jobs_started: totals.jobs_started,
                    jobs_started_actual: claimed.len() as u64,
                    wait_mean_s: totals.mean_wait_seconds().unwrap_or(0.0),
                    wait_mean_s_actual: claimed.iter().sum::<i64>() as f64 / n / 1000.0,
                    wait_p95_s: weighted_percentile(&waits, 0.95),
                    wait_p95_s_actual: crate::report::percentile_s(&claimed, 0.95),
                    warm_share: totals.warm_share().unwrap_or(0.0),
                    warm_share_actual: claimed.iter().filter(|w| **w == 0).count() as f64 / n,
                    boot_mean_s: if totals.boots == 0 {
                        0.0
                    } else {
                        totals.boot_seconds / totals.boots as f64
                    },
                    idle_vm_hours: totals.vm_seconds.idle / 3600.0,
                    busy_vm_hours: totals.vm_seconds.busy / 3600.0,
                    boot_vm_hours: totals.vm_seconds.starting / 3600.0,
                }
            })
            .collect()
    }
}

/// Nearest-rank percentile of `(value, weight)` pairs sorted by value.
fn weighted_percentile(sorted: &[(f64, u32)], p: f64) -> f64 {
    let total: u64 = sorted.iter().map(|w| u64::from(w.1)).sum();
    if total == 0 {
        return 0.0;
    }
    let rank = ((p * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0u64;
    for (value, weight) in sorted {
        seen += u64::from(*weight);
        if seen >= rank {
            return *value;
        }
    }
    sorted.last().map_or(0.0, |w| w.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_nearest_rank() {
        let v = [(0.0, 90), (10.0, 5), (20.0, 5)];
        assert_eq!(weighted_percentile(&v, 0.5), 0.0);
        assert_eq!(weighted_percentile(&v, 0.95), 10.0);
        assert_eq!(weighted_percentile(&v, 0.96), 20.0);
        assert_eq!(weighted_percentile(&[], 0.95), 0.0);
    }
}
