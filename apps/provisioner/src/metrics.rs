//! Prometheus metrics. Labels have fixed cardinality: `resource_class` (bounded by the config),
//! `phase`, `kind`, `operation`, `endpoint`, `status` and `reason` (fixed sets); never error
//! text. Every help text names its unit.
//!
//! Besides what the controller decided, what users felt, estimated per class from the polled
//! counts and the observed pool (`provisioner_core::estimate`): job wait, warm starts, VM boot
//! time and VM-seconds by phase.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use provisioner_circleci::{Endpoint, StatusClass};
use provisioner_core::estimate::Step;
use provisioner_core::{ErrorKind, FleetCounts, Reclaim, ResourceClass};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub resource_class: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub resource_class: String,
    pub phase: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub resource_class: String,
    pub operation: &'static str,
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub resource_class: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
    pub status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

/// The calls a cycle makes, as `operation`/`endpoint` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    UnclaimedTasks,
    RunningTasks,
    Ensure,
    Observe,
    Apply,
    /// The runner list of the registration check (its failure does not fail the cycle).
    ConnectedRunners,
}

impl Operation {
    pub const ALL: [Operation; 6] = [
        Self::UnclaimedTasks,
        Self::RunningTasks,
        Self::Ensure,
        Self::Observe,
        Self::Apply,
        Self::ConnectedRunners,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnclaimedTasks => "unclaimed_tasks",
            Self::RunningTasks => "running_tasks",
            Self::Ensure => "ensure",
            Self::Observe => "observe",
            Self::Apply => "apply",
            Self::ConnectedRunners => "connected_runners",
        }
    }
}

/// `reclaimable` (starting or running, but unable to hold a job) and `deleting` pseudo-phases
/// join the core's four, so every VM is counted once.
const PHASES: [&str; 6] = [
    "starting",
    "running",
    "stopped",
    "failed_to_start",
    "reclaimable",
    "deleting",
];

/// What VM time is split into (`provisioner_vm_seconds_total{phase}`).
const VM_TIME_PHASES: [&str; 4] = ["starting", "idle", "busy", "stopped"];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    unclaimed: Family<ClassLabels, Gauge>,
    running: Family<ClassLabels, Gauge>,
    desired: Family<ClassLabels, Gauge>,
    pool_replicas: Family<ClassLabels, Gauge>,
    vms: Family<PhaseLabels, Gauge>,
    retired: Family<ClassLabels, Counter>,
    recycled: Family<ClassLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    circleci_latency: HistogramFamily<EndpointLabels>,
    kubernetes_latency: HistogramFamily<OperationLabels>,
    cycle: Histogram,
    leader: Gauge,
    classes: Gauge,
    reloads: Counter,
    reload_failures: Counter,
    config_loaded_at: Gauge<f64, AtomicU64>,
    max_replicas: Family<ClassLabels, Gauge>,
    last_poll: Family<ClassLabels, FloatGauge>,
    last_error: Family<ErrorLabels, FloatGauge>,
    waiting: Family<ClassLabels, FloatCounter>,
    jobs_started: Family<ClassLabels, Counter>,
    jobs_warm: Family<ClassLabels, Counter>,
    job_wait: HistogramFamily<ClassLabels>,
    vm_boot: HistogramFamily<ClassLabels>,
    vm_seconds: Family<PhaseLabels, FloatCounter>,
    failed_starts: Family<ClassLabels, Counter>,
    idle_outs: Family<ClassLabels, Counter>,
    unregistered: Family<ClassLabels, Gauge>,
    reclaimed: Family<ReasonLabels, Counter>,
    breaker_open: Family<ClassLabels, Gauge>,
    breaker_strikes: Family<ClassLabels, Gauge>,
    warm: Family<ClassLabels, Gauge>,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms to ~13 s in steps of 1.5x, fine enough to read p50/p99 of millisecond cycles.
    Histogram::new(exponential_buckets(0.0001, 1.5, 30))
}

/// 0 holds the jobs that found a warm VM; then up to an hour.
fn wait_histogram() -> Histogram {
    Histogram::new([
        0.0, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 180.0, 240.0, 300.0, 450.0, 600.0, 900.0, 1800.0,
        3600.0,
    ])
}

/// VM boots take tens of seconds to several minutes.
fn boot_histogram() -> Histogram {
    Histogram::new([
        10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 150.0, 180.0, 240.0, 300.0, 420.0, 600.0, 900.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("provisioner");
        let m = Self {
            unclaimed: Family::default(),
            running: Family::default(),
            desired: Family::default(),
            pool_replicas: Family::default(),
            vms: Family::default(),
            retired: Family::default(),
            recycled: Family::default(),
            errors: Family::default(),
            circleci_latency: Family::new_with_constructor(latency_histogram),
            kubernetes_latency: Family::new_with_constructor(latency_histogram),
            cycle: latency_histogram(),
            leader: Gauge::default(),
            classes: Gauge::default(),
            reloads: Counter::default(),
            reload_failures: Counter::default(),
            config_loaded_at: Gauge::default(),
            max_replicas: Family::default(),
            last_poll: Family::default(),
            last_error: Family::default(),
            waiting: Family::default(),
            jobs_started: Family::default(),
            jobs_warm: Family::default(),
            job_wait: Family::new_with_constructor(wait_histogram),
            vm_boot: Family::new_with_constructor(boot_histogram),
            vm_seconds: Family::default(),
            failed_starts: Family::default(),
            idle_outs: Family::default(),
            unregistered: Family::default(),
            reclaimed: Family::default(),
            breaker_open: Family::default(),
            breaker_strikes: Family::default(),
            warm: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "unclaimed_tasks",
            "Tasks queued and not yet claimed, per class (tasks)",
            m.unclaimed.clone(),
        );
        registry.register(
            "running_tasks",
            "Tasks running on a runner, per class (tasks)",
            m.running.clone(),
        );
        registry.register(
            "desired_vms",
            "VMs the scaler wants, per class (VMs)",
            m.desired.clone(),
        );
        registry.register(
            "pool_replicas",
            "The pool's spec.replicas, per class (VMs)",
            m.pool_replicas.clone(),
        );
        registry.register("vms", "VMs of the pool by phase (VMs)", m.vms.clone());
        registry.register(
            "vms_retired",
            "Finished VMs deleted without replacement (VMs)",
            m.retired.clone(),
        );
        registry.register(
            "vms_recycled",
            "Finished VMs deleted for the pool to replace (VMs)",
            m.recycled.clone(),
        );
        registry.register(
            "poll_errors",
            "Failed calls by operation and kind, transient or permanent (calls)",
            m.errors.clone(),
        );
        registry.register(
            "circleci_request_duration_seconds",
            "Latency of HTTP requests to CircleCI's runner API by endpoint and status class (seconds)",
            m.circleci_latency.clone(),
        );
        registry.register(
            "kubernetes_request_duration_seconds",
            "Latency of pool operations against Kubernetes: ensure, observe, apply (seconds)",
            m.kubernetes_latency.clone(),
        );
        registry.register(
            "cycle_duration_seconds",
            "Duration of one class's poll cycle (seconds)",
            m.cycle.clone(),
        );
        registry.register(
            "leader",
            "1 when this replica leads and polls, 0 on standby (boolean)",
            m.leader.clone(),
        );
        registry.register(
            "resource_classes",
            "Resource classes in the loaded configuration (classes)",
            m.classes.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads applied (reloads)",
            m.reloads.clone(),
        );
        registry.register(
            "config_reload_failures",
            "Configuration changes rejected as invalid (reloads)",
            m.reload_failures.clone(),
        );
        registry.register(
            "config_last_reload_timestamp_seconds",
            "Unix time of the last configuration applied (seconds)",
            m.config_loaded_at.clone(),
        );
        registry.register(
            "max_replicas",
            "maxReplicas in force, schedules applied, per class (VMs)",
            m.max_replicas.clone(),
        );
        registry.register(
            "last_poll_timestamp_seconds",
            "Unix time of the last cycle that got both task counts from CircleCI, per class; 0 while a class has never got them (seconds)",
            m.last_poll.clone(),
        );
        registry.register(
            "last_error_timestamp_seconds",
            "Unix time of the last failed call by class, operation and kind (seconds)",
            m.last_error.clone(),
        );
        registry.register(
            "waiting_job_seconds",
            "Unclaimed tasks integrated over time, per class; over jobs_started, the mean wait (job-seconds)",
            m.waiting.clone(),
        );
        registry.register(
            "jobs_started",
            "Jobs started, estimated from the running count and the VMs seen finishing a job, per class (jobs)",
            m.jobs_started.clone(),
        );
        registry.register(
            "jobs_warm",
            "Jobs started that found a VM idle and waiting for them, estimated, per class (jobs)",
            m.jobs_warm.clone(),
        );
        registry.register(
            "job_wait_seconds",
            "Estimated queue time of each job started, first-in-first-out from the unclaimed count, per class (seconds)",
            m.job_wait.clone(),
        );
        registry.register(
            "vm_boot_seconds",
            "VM boot time, created to ready, per class (seconds)",
            m.vm_boot.clone(),
        );
        registry.register(
            "vm_seconds",
            "VM time by phase: starting, idle, busy (powered on) and stopped, per class (VM-seconds)",
            m.vm_seconds.clone(),
        );
        registry.register(
            "vm_failed_starts",
            "VMs seen failing to start, per class (VMs)",
            m.failed_starts.clone(),
        );
        registry.register(
            "vm_idle_outs",
            "VMs that powered off after their idle timeout without a job, estimated, per class (VMs)",
            m.idle_outs.clone(),
        );
        registry.register(
            "vms_unregistered",
            "Ready VMs left idle past the registration grace while tasks wait, a lower bound, per class (VMs)",
            m.unregistered.clone(),
        );
        registry.register(
            "vms_reclaimed",
            "VMs deleted that had not stopped but could not hold a job, by reason: failed_to_start, start_timeout, overran, unregistered (VMs)",
            m.reclaimed.clone(),
        );
        registry.register(
            "registration_breaker_open",
            "1 while the class scales out no further than its floor because runners of several VMs in a row never registered (boolean)",
            m.breaker_open.clone(),
        );
        registry.register(
            "registration_breaker_strikes",
            "VMs reclaimed in a row because their runner never registered, per class (VMs)",
            m.breaker_strikes.clone(),
        );
        registry.register(
            "warm_vms",
            "VMs the predictive control keeps warm above demand, 0 when it is off, per class (VMs)",
            m.warm.clone(),
        );
        Self { registry, ..m }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn class(class: &ResourceClass) -> ClassLabels {
        ClassLabels {
            resource_class: class.as_str().to_owned(),
        }
    }

    pub fn demand(&self, class: &ResourceClass, unclaimed: u32, running: u32) {
        let l = Self::class(class);
        self.unclaimed.get_or_create(&l).set(i64::from(unclaimed));
        self.running.get_or_create(&l).set(i64::from(running));
    }

    pub fn decision(
        &self,
        class: &ResourceClass,
        desired: u32,
        spec_replicas: Option<u32>,
        counts: &FleetCounts,
    ) {
        let l = Self::class(class);
        self.desired.get_or_create(&l).set(i64::from(desired));
        self.pool_replicas
            .get_or_create(&l)
            .set(spec_replicas.map_or(0, i64::from));
        let by_phase = [
            counts.starting,
            counts.running,
            counts.stopped,
            counts.failed_to_start,
            counts.reclaimable,
            counts.deleting,
        ];
        for (phase, n) in PHASES.iter().zip(by_phase) {
            self.vms
                .get_or_create(&PhaseLabels {
                    resource_class: l.resource_class.clone(),
                    phase,
                })
                .set(i64::from(n));
        }
    }

    pub fn applied(
        &self,
        class: &ResourceClass,
        replicas: Option<u32>,
        retired: u32,
        recycled: u32,
    ) {
        let l = Self::class(class);
        if let Some(replicas) = replicas {
            self.pool_replicas
                .get_or_create(&l)
                .set(i64::from(replicas));
        }
        self.retired.get_or_create(&l).inc_by(u64::from(retired));
        self.recycled.get_or_create(&l).inc_by(u64::from(recycled));
    }

    pub fn error(
        &self,
        class: &ResourceClass,
        operation: Operation,
        kind: ErrorKind,
        unix_seconds: f64,
    ) {
        let labels = ErrorLabels {
            resource_class: class.as_str().to_owned(),
            operation: operation.as_str(),
            kind: kind.as_str(),
        };
        self.errors.get_or_create(&labels).inc();
        self.last_error.get_or_create(&labels).set(unix_seconds);
    }

    /// Both task counts came back at `unix_seconds`.
    pub fn polled(&self, class: &ResourceClass, unix_seconds: f64) {
        self.last_poll
            .get_or_create(&Self::class(class))
            .set(unix_seconds);
    }

    /// The task counts could not be polled: the last poll's time stays, or 0 if there was none,
    /// so staleness alerts see a class that never got its counts too.
    pub fn not_polled(&self, class: &ResourceClass) {
        drop(self.last_poll.get_or_create(&Self::class(class)));
    }

    /// The registration breaker's state and the predictive control's warm VMs, from a decision.
    pub fn healing(&self, class: &ResourceClass, breaker_open: bool, strikes: u32, warm: u32) {
        let l = Self::class(class);
        self.breaker_open
            .get_or_create(&l)
            .set(i64::from(breaker_open));
        self.breaker_strikes
            .get_or_create(&l)
            .set(i64::from(strikes));
        self.warm.get_or_create(&l).set(i64::from(warm));
    }

    /// VMs deleted although they had not stopped.
    pub fn reclaimed(&self, class: &ResourceClass, reason: Reclaim, vms: u32) {
        self.reclaimed
            .get_or_create(&ReasonLabels {
                resource_class: class.as_str().to_owned(),
                reason: reason.as_str(),
            })
            .inc_by(u64::from(vms));
    }

    pub fn max_replicas(&self, class: &ResourceClass, max: u32) {
        self.max_replicas
            .get_or_create(&Self::class(class))
            .set(i64::from(max));
    }

    /// What one observation added to the class's estimate.
    pub fn estimate(&self, class: &ResourceClass, step: &Step) {
        let l = Self::class(class);
        self.waiting
            .get_or_create(&l)
            .inc_by(step.waiting_job_seconds);
        self.jobs_started
            .get_or_create(&l)
            .inc_by(step.jobs_started);
        self.jobs_warm.get_or_create(&l).inc_by(step.warm_jobs);
        let waits = self.job_wait.get_or_create(&l);
        for &(seconds, jobs) in &step.waits {
            for _ in 0..jobs {
                waits.observe(seconds);
            }
        }
        drop(waits);
        let boots = self.vm_boot.get_or_create(&l);
        for &seconds in &step.boot_seconds {
            boots.observe(seconds);
        }
        drop(boots);
        let t = &step.vm_seconds;
        for (phase, seconds) in VM_TIME_PHASES
            .into_iter()
            .zip([t.starting, t.idle, t.busy, t.stopped])
        {
            self.vm_seconds
                .get_or_create(&PhaseLabels {
                    resource_class: l.resource_class.clone(),
                    phase,
                })
                .inc_by(seconds);
        }
        self.failed_starts
            .get_or_create(&l)
            .inc_by(u64::from(step.failed_starts));
        self.idle_outs
            .get_or_create(&l)
            .inc_by(u64::from(step.idle_outs));
        self.unregistered
            .get_or_create(&l)
            .set(i64::from(step.unregistered));
    }

    pub fn circleci_latency(&self, endpoint: Endpoint, status: StatusClass, seconds: f64) {
        self.circleci_latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
                status: status.as_str(),
            })
            .observe(seconds);
    }

    pub fn kubernetes_latency(&self, operation: Operation, seconds: f64) {
        self.kubernetes_latency
            .get_or_create(&OperationLabels {
                operation: operation.as_str(),
            })
            .observe(seconds);
    }

    pub fn cycle(&self, seconds: f64) {
        self.cycle.observe(seconds);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn config_applied(&self, classes: usize, unix_seconds: f64, reload: bool) {
        self.classes.set(i64::try_from(classes).unwrap_or(i64::MAX));
        self.config_loaded_at.set(unix_seconds);
        if reload {
            self.reloads.inc();
        }
    }

    pub fn reload_failed(&self) {
        self.reload_failures.inc();
    }

    /// A removed class's series go with it, so a class renamed many times does not pile up.
    pub fn forget(&self, class: &ResourceClass) {
        let l = Self::class(class);
        for family in [
            &self.unclaimed,
            &self.running,
            &self.desired,
            &self.pool_replicas,
        ] {
            family.remove(&l);
        }
        self.retired.remove(&l);
        self.recycled.remove(&l);
        self.max_replicas.remove(&l);
        self.last_poll.remove(&l);
        self.waiting.remove(&l);
        for family in [
            &self.jobs_started,
            &self.jobs_warm,
            &self.failed_starts,
            &self.idle_outs,
        ] {
            family.remove(&l);
        }
        self.job_wait.remove(&l);
        self.vm_boot.remove(&l);
        for family in [
            &self.unregistered,
            &self.breaker_open,
            &self.breaker_strikes,
            &self.warm,
        ] {
            family.remove(&l);
        }
        for reason in Reclaim::ALL {
            self.reclaimed.remove(&ReasonLabels {
                resource_class: l.resource_class.clone(),
                reason: reason.as_str(),
            });
        }
        for phase in VM_TIME_PHASES {
            self.vm_seconds.remove(&PhaseLabels {
                resource_class: l.resource_class.clone(),
                phase,
            });
        }
        for phase in PHASES {
            self.vms.remove(&PhaseLabels {
                resource_class: l.resource_class.clone(),
                phase,
            });
        }
        for operation in Operation::ALL {
            for kind in [ErrorKind::Transient, ErrorKind::Permanent] {
                let labels = ErrorLabels {
                    resource_class: l.resource_class.clone(),
                    operation: operation.as_str(),
                    kind: kind.as_str(),
                };
                self.errors.remove(&labels);
                self.last_error.remove(&labels);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family_and_forgets_removed_classes() {
        let m = Metrics::new();
        let class = ResourceClass::parse("org/a").expect("valid class");
        m.demand(&class, 4, 2);
        m.decision(
            &class,
            6,
            Some(5),
            &FleetCounts {
                starting: 1,
                running: 4,
                ..FleetCounts::default()
            },
        );
        m.applied(&class, None, 1, 2);
        m.error(&class, Operation::UnclaimedTasks, ErrorKind::Transient, 1.0);
        m.error(
            &class,
            Operation::ConnectedRunners,
            ErrorKind::Permanent,
            1.0,
        );
        m.reclaimed(&class, Reclaim::Unregistered, 2);
        m.healing(&class, true, 3, 1);
        let never = ResourceClass::parse("org/never").expect("valid class");
        m.not_polled(&never);
        m.kubernetes_latency(Operation::Observe, 0.01);
        m.circleci_latency(Endpoint::Unclaimed, StatusClass::Success, 0.003);
        m.cycle(0.02);
        m.set_leader(true);
        m.config_applied(1, 1.0, true);
        let text = m.encode();
        for needle in [
            "provisioner_unclaimed_tasks{resource_class=\"org/a\"} 4",
            "provisioner_running_tasks{resource_class=\"org/a\"} 2",
            "provisioner_desired_vms{resource_class=\"org/a\"} 6",
            "provisioner_pool_replicas{resource_class=\"org/a\"} 5",
            "provisioner_vms{resource_class=\"org/a\",phase=\"running\"} 4",
            "provisioner_vms_retired_total{resource_class=\"org/a\"} 1",
            "provisioner_vms_recycled_total{resource_class=\"org/a\"} 2",
            "provisioner_poll_errors_total{resource_class=\"org/a\",operation=\"unclaimed_tasks\",kind=\"transient\"} 1",
            "provisioner_poll_errors_total{resource_class=\"org/a\",operation=\"connected_runners\",kind=\"permanent\"} 1",
            "provisioner_vms_reclaimed_total{resource_class=\"org/a\",reason=\"unregistered\"} 2",
            "provisioner_registration_breaker_open{resource_class=\"org/a\"} 1",
            "provisioner_registration_breaker_strikes{resource_class=\"org/a\"} 3",
            "provisioner_warm_vms{resource_class=\"org/a\"} 1",
            "provisioner_last_poll_timestamp_seconds{resource_class=\"org/never\"} 0.0",
            "provisioner_kubernetes_request_duration_seconds_count{operation=\"observe\"} 1",
            "provisioner_circleci_request_duration_seconds_count{endpoint=\"unclaimed\",status=\"2xx\"} 1",
            "provisioner_cycle_duration_seconds_count 1",
            "provisioner_leader 1",
            "provisioner_config_reloads_total 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        m.forget(&class);
        assert!(!m.encode().contains("org/a"));
        m.forget(&never);
        assert!(!m.encode().contains("org/never"));
    }
}
