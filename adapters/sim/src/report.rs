//! What a run found: the summary (the headless JSON), per class, faults, invariant violations,
//! and optional samples and worst waits for charts.

use serde::Serialize;

use crate::phases::PhaseReport;

/// How many faults of each kind were injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    pub api_errors: u64,
    pub api_timeouts: u64,
    pub k8s_errors: u64,
    pub start_failures: u64,
    pub controller_restarts: u64,
    /// CircleCI outage windows that began (`outage=`).
    #[serde(skip_serializing_if = "is_zero")]
    pub outages: u64,
    /// Of those that ended, how many found the pool's target at least its size when the outage
    /// began (capacity kept through it).
    #[serde(skip_serializing_if = "is_zero")]
    pub outages_pool_kept: u64,
    /// Nodes lost, the VMs on them and the jobs CircleCI re-ran because of it.
    #[serde(skip_serializing_if = "is_zero")]
    pub lost_nodes: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub vms_on_lost_nodes: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub jobs_rerun: u64,
    /// VMs created stuck starting, unschedulable, or with a runner that never connects.
    #[serde(skip_serializing_if = "is_zero")]
    pub stuck_starts: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub unschedulable_vms: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub never_connecting_vms: u64,
    /// VMs the controller's healing rules deleted although they had not stopped.
    #[serde(skip_serializing_if = "is_zero")]
    pub vms_reclaimed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl FaultCounts {
    /// Faults injected (not what the controller did about them).
    pub fn total(&self) -> u64 {
        self.api_errors
            + self.api_timeouts
            + self.k8s_errors
            + self.start_failures
            + self.controller_restarts
            + self.outages
            + self.lost_nodes
            + self.stuck_starts
            + self.unschedulable_vms
            + self.never_connecting_vms
    }
}

/// Waits and VM time of one class (or of all).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassReport {
    pub class: String,
    pub jobs: u64,
    pub jobs_completed: u64,
    pub wait_mean_s: f64,
    pub wait_p50_s: f64,
    pub wait_p95_s: f64,
    pub wait_p99_s: f64,
    pub wait_max_s: f64,
    /// Powered-on VM time: booting + idle + busy.
    pub vm_hours: f64,
    pub busy_vm_hours: f64,
    pub idle_vm_hours: f64,
    pub boot_vm_hours: f64,
    /// Powered-off VMs waiting to be deleted (no CPU or memory, so not in `vm_hours`).
    pub stopped_vm_hours: f64,
    pub vms_created: u64,
    /// Most VMs powered on at once.
    pub peak_vms: u32,
    /// Per window of `SimOptions::phases`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseReport>,
}

/// What the cluster model did (only with it on).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClusterCounts {
    /// VMs found to fit on no node (each time one went pending).
    pub unschedulable: u64,
    pub image_pulls: u64,
    pub nodes_added: u64,
    pub nodes_removed: u64,
    pub peak_nodes: u32,
}

/// One sample of the world (summed over classes), every `SimOptions::sample_every`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub unclaimed: u32,
    pub running_jobs: u32,
    pub vms_booting: u32,
    pub vms_idle: u32,
    pub vms_busy: u32,
    pub vms_stopped: u32,
    pub target_replicas: u32,
}

/// One CircleCI outage window (`outage=`) and each class's pool (`spec.replicas`) when it began
/// and one poll interval after it ended (after the first cycle that could read demand again).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutageReport {
    pub start_s: f64,
    /// `None`: the run ended during the outage.
    pub end_s: Option<f64>,
    /// Per class, in the order of `classes`.
    pub replicas_before: Vec<u32>,
    /// `None`: the run ended within a poll of the outage's end.
    pub replicas_after: Option<Vec<u32>>,
    /// Every class's pool was back at (at least) its size before the outage one poll after it.
    pub pool_back: bool,
}

/// A job that waited long.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorstWait {
    pub class: String,
    pub arrival_s: f64,
    pub wait_s: f64,
    pub duration_s: f64,
}

/// The result of a run. Field names are the headless JSON's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    pub policy: String,
    pub jobs: u64,
    pub jobs_completed: u64,
    pub wait_mean_s: f64,
    pub wait_p50_s: f64,
    pub wait_p95_s: f64,
    pub wait_p99_s: f64,
    pub wait_max_s: f64,
    pub vm_hours: f64,
    pub busy_vm_hours: f64,
    pub idle_vm_hours: f64,
    pub boot_vm_hours: f64,
    pub stopped_vm_hours: f64,
    pub vms_created: u64,
    pub peak_vms: u32,
    /// Discrete events processed: arrivals, boots, job ends, idle power-offs and controller
    /// cycles that ran the planner.
    pub events: u64,
    pub controller_cycles: u64,
    pub sim_seconds: f64,
    /// The only field that differs between two runs with the same seed.
    pub wall_seconds: f64,
    pub faults: FaultCounts,
    /// Each CircleCI outage window and the pool around it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outages: Vec<OutageReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterCounts>,
    pub invariant_violations: Vec<String>,
    pub classes: Vec<ClassReport>,
    /// Per window of `SimOptions::phases`, all classes together.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<Sample>,
    pub worst_waits: Vec<WorstWait>,
    /// The controller's estimate beside the truth, per class (`SimOptions::estimate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Vec<crate::estimate::ClassEstimate>>,
}

impl SimReport {
    pub fn is_ok(&self) -> bool {
        self.invariant_violations.is_empty()
    }
}

/// Nearest-rank percentile of sorted milliseconds, in seconds.
pub(crate) fn percentile_s(sorted_ms: &[i64], p: f64) -> f64 {
    if sorted_ms.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted_ms.len() as f64).ceil() as usize).clamp(1, sorted_ms.len());
    sorted_ms[rank - 1] as f64 / 1000.0
}

pub(crate) fn hours(ms: i64) -> f64 {
    ms as f64 / 3_600_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<i64> = (1..=100).map(|s| s * 1000).collect();
        assert_eq!(percentile_s(&v, 0.5), 50.0);
        assert_eq!(percentile_s(&v, 0.95), 95.0);
        assert_eq!(percentile_s(&v, 1.0), 100.0);
        assert_eq!(percentile_s(&[], 0.5), 0.0);
    }
}
