//! Accounting and audits: VM time per state, the time series, the invariant checks and the
//! books a finished run hands to its report.

use provisioner_core::{ResourceClass, VmPhase};

use super::WorldState;
use crate::report::{ClusterCounts, FaultCounts, Sample};

/// Per class: time spent by VMs in each state, in milliseconds, and what happened to jobs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Accounts {
    pub boot_ms: i64,
    pub idle_ms: i64,
    pub busy_ms: i64,
    pub stopped_ms: i64,
    pub vms_created: u64,
    pub peak_on: u32,
    pub completed: u64,
}

/// How many VMs of a class are in each state right now (not counting ones being deleted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Census {
    pub booting: u32,
    pub idle: u32,
    pub busy: u32,
    pub finished: u32,
}

impl Census {
    pub fn on(&self) -> u32 {
        self.booting + self.idle + self.busy
    }
}

/// What a finished run leaves for its report.
#[derive(Debug)]
pub(crate) struct Books {
    /// Per job: when it was claimed (-1: never).
    pub claimed_at: Vec<i64>,
    pub classes: Vec<ClassBooks>,
    /// Most VMs powered on at once, all classes together.
    pub peak_on_total: u32,
    pub events: u64,
    pub fault_counts: FaultCounts,
    pub violations: Vec<String>,
    /// Powered-on stretches `(from, until, class)`, when kept for per-phase figures.
    pub on_log: Vec<(i64, i64, u16)>,
    pub cluster: Option<ClusterCounts>,
    pub outages: Vec<super::OutageLog>,
}

/// One class's name and accounts at the end of a run.
#[derive(Debug)]
pub(crate) struct ClassBooks {
    pub name: ResourceClass,
    pub acc: Accounts,
}

impl WorldState {
    /// The world at `t_s` seconds, all classes together, for the report's time series.
    pub fn sample(&self, t_s: f64) -> Sample {
        let mut s = Sample {
            t_s,
            unclaimed: 0,
            running_jobs: 0,
            vms_booting: 0,
            vms_idle: 0,
            vms_busy: 0,
            vms_stopped: 0,
            target_replicas: 0,
        };
        for c in &self.classes {
            s.unclaimed += c.queue.len() as u32;
            s.running_jobs += c.census.busy;
            s.vms_booting += c.census.booting;
            s.vms_idle += c.census.idle;
            s.vms_busy += c.census.busy;
            s.vms_stopped += c.census.finished;
            s.target_replicas += c.replicas.unwrap_or(0);
        }
        s
    }

    /// After a plan: the pool holds no more than `maxReplicas`, except VMs still running (the
    /// live count the plan was made with).
    pub fn check_pool_cap(&mut self, class: usize, max_replicas: u32, live_at_decision: u32) {
        let cw = &self.classes[class];
        let pool = cw.census.on() + cw.census.finished;
        let cap = max_replicas.max(live_at_decision);
        if pool > cap || cw.replicas.is_some_and(|r| r > cap) {
            self.violations.push(format!(
                "pool {} holds {pool} VMs (replicas {}), more than maxReplicas {max_replicas} plus VMs still running",
                cw.name,
                cw.replicas.unwrap_or(0)
            ));
        }
    }

    /// At the end: every job completed exactly once (twice is caught as it happens), and busy
    /// VM time equals the time jobs ran.
    pub fn final_checks(&mut self, end: i64) {
        let never = self.completions.iter().filter(|c| **c == 0).count();
        if never > 0 {
            self.violations.push(format!(
                "{never} of {} jobs never completed (no VM took them before the run ended)",
                self.jobs.len()
            ));
        }
        let expected: i64 = self
            .jobs
            .iter()
            .zip(&self.claimed_at)
            .filter(|(_, c)| **c >= 0)
            .map(|(j, c)| {
                let limit = self.classes[j.class as usize]
                    .max_run_ms
                    .unwrap_or(i64::MAX);
                j.duration_ms.min(limit).min(end - c)
            })
            .sum();
        let busy: i64 = self.classes.iter().map(|c| c.acc.busy_ms).sum();
        if busy != expected {
            self.violations.push(format!(
                "busy VM time {:.3}h differs from the time jobs ran {:.3}h",
                busy as f64 / 3.6e6,
                expected as f64 / 3.6e6
            ));
        }
    }

    /// The run ended at `end`: close the books, run the final checks and hand over what the
    /// report needs.
    pub fn close(mut self, end: i64) -> Books {
        self.close_books(end);
        self.final_checks(end);
        Books {
            claimed_at: self.claimed_at,
            classes: self
                .classes
                .into_iter()
                .map(|c| ClassBooks {
                    name: c.name,
                    acc: c.acc,
                })
                .collect(),
            peak_on_total: self.peak_on_total,
            events: self.events,
            fault_counts: self.fault_counts,
            violations: self.violations,
            on_log: self.on_log.unwrap_or_default(),
            cluster: self.cluster.as_ref().map(|c| c.counts()),
            outages: self.outage_log,
        }
    }

    /// Close every open interval at `end` (VM-hours up to the end of the run).
    pub fn close_books(&mut self, end: i64) {
        if let Some(log) = &mut self.on_log {
            log.extend(
                self.vms
                    .iter()
                    .filter(|v| !v.gone && matches!(v.phase, VmPhase::Starting | VmPhase::Running))
                    .map(|v| (v.on_from, end, v.class)),
            );
        }
        for v in &mut self.vms {
            if v.gone {
                continue;
            }
            let acc = &mut self.classes[v.class as usize].acc;
            let span = end - v.since;
            match (v.phase, v.job.is_some()) {
                (VmPhase::Starting, _) => acc.boot_ms += span,
                (VmPhase::Running, true) => acc.busy_ms += span,
                (VmPhase::Running, false) => acc.idle_ms += span,
                _ => acc.stopped_ms += span,
            }
            v.since = end;
        }
    }
}
