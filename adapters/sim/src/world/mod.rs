//! The simulated world: CircleCI's queue per class and a KubeVirt VirtualMachinePool per class,
//! on a virtual clock. It implements the core's two ports, so the controller's decision code
//! drives it exactly as it drives the real APIs.
//!
//! The pool follows KubeVirt's VirtualMachinePool controller (`pool.go`, as read for KubeVirt
//! v1.8 in the project's API notes, `../shared/reference/kubevirt.md` beside the repository)
//! under `scaleInStrategy.opportunistic`:
//! `diff = owned VMs (deleting ones included) - replicas`; at `diff < 0` the pool creates VMs at
//! the lowest free index (same name, new UID); at `diff == 0` it removes its finalizer from VMs
//! being deleted (they go); at `diff > 0` it does nothing. Powered-off VMs are never replaced.
//!
//! This module holds the state, the clock and its events and the ports; `queue` the CircleCI
//! side, `pool` the KubeVirt side, `audit` the accounting, invariant checks and final books.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use provisioner_core::{
    ApplyReport, DemandSource, FleetState, Plan, PortError, ResourceClass, Timestamp, VmFleet,
    VmId, VmPhase,
};

use crate::cluster::{Cluster, Outcome};
use crate::options::{BootTime, Faults, millis};
use crate::report::FaultCounts;
use crate::rng::SplitMix64;
use crate::trace::Job;

mod audit;
mod placement;
mod pool;
mod queue;

pub(crate) use audit::{Accounts, Books, Census};
pub(crate) use pool::pool_name;

/// A timed world event. Ordered by time, then by the order they were scheduled in, so runs are
/// deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Event {
    pub at: i64,
    pub seq: u64,
    pub kind: EventKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum EventKind {
    /// Each names a VM slot and the generation of the VM in it (slots are re-used).
    BootDone(u32, u32),
    /// A VM drawn to fail its start: its launcher or domain fails (`start=`).
    StartFailed(u32, u32),
    /// A VM on a lost node shows not ready from now on.
    NodeUnready(u32, u32),
    JobDone(u32, u32),
    IdleOff(u32, u32),
    /// The idle runners of a class poll CircleCI and claim what waits (cluster model only).
    Claim(u16),
    /// Timed faults (`Faults::outage`, `lost_node`, `restart_every`).
    OutageStart,
    OutageEnd,
    NodeLost,
    Restart,
}

/// A class's runner timers (ms): idle power-off and the job time limit.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RunnerTimes {
    pub idle_ms: Option<i64>,
    pub max_run_ms: Option<i64>,
}

/// What is wrong with a VM, by a drawn fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trouble {
    None,
    /// Never becomes ready, with no failure status.
    StuckStart,
    /// Shows `ErrorUnschedulable` from its creation on, never starts.
    Unschedulable,
    /// Boots, but its runner never connects: never claims a job, never idles out.
    NeverConnects,
    /// Its node is gone: it keeps showing its last phase and does nothing more.
    NodeLost,
}

#[derive(Debug, Clone)]
pub(crate) struct SimVm {
    pub class: u16,
    pub index: u32,
    /// Bumped each time the slot is re-used, so stale events and ids miss.
    pub generation: u32,
    pub id: VmId,
    pub name: Arc<str>,
    pub created_at: i64,
    pub phase: VmPhase,
    pub deleting: bool,
    pub gone: bool,
    pub job: Option<u32>,
    /// When the current phase (or idle/busy stretch) began, for VM-hour accounting.
    pub since: i64,
    /// When it last powered on (created, or placed after waiting unschedulable).
    pub on_from: i64,
    /// When it was last placed after waiting unschedulable (`i64::MIN`: never).
    pub placed_late_at: i64,
    /// Since when it has waited unschedulable for room on the cluster (`i64::MIN`: it is not
    /// waiting). Booked as failed to start, observed as starting with `ErrorUnschedulable`.
    pub waiting_since: i64,
    /// When it became ready (-1: not yet).
    pub ready_at: i64,
    pub trouble: Trouble,
    /// Drawn to fail its start (`start=`): it ends failed-to-start once its launcher has run.
    pub fails_start: bool,
    /// From when its `Ready` condition shows False although it still runs (its node was lost;
    /// `i64::MAX`: never).
    pub unready_from: i64,
}

/// One class: its CircleCI queue, its pool and the VMs' accounting.
#[derive(Debug)]
pub(crate) struct ClassState {
    name: ResourceClass,
    pool_name: String,
    queue: VecDeque<u32>,
    /// Idle VMs (slot, generation) in the order they became idle; stale entries are skipped.
    idle: VecDeque<(u32, u32)>,
    replicas: Option<u32>,
    owned: Vec<u32>,
    /// Per name index: whether a VM of the pool holds it; and the names, built once.
    index_used: Vec<bool>,
    names: Vec<Arc<str>>,
    idle_timeout_ms: Option<i64>,
    /// The runner's `maxRunTime`: it cancels a job that runs longer (ms).
    max_run_ms: Option<i64>,
    census: Census,
    /// Bumped whenever the set of finished VMs changes (the ones a plan may name).
    finished_version: u64,
    acc: Accounts,
    /// Something changed since the controller last looked.
    dirty: bool,
    /// Bumped whenever what `observe` returns changes.
    fleet_version: u64,
    /// When the controller last observed the pool.
    observed_at: i64,
    /// Bumped when a VM's readiness or health changes (what the healing rules read).
    health_version: u64,
    /// The pool's replicas when the current CircleCI outage began.
    replicas_before_outage: u32,
}

/// A CircleCI outage window (ms) and each class's replicas when it began and one poll after
/// it ended.
#[derive(Debug, Clone)]
pub(crate) struct OutageLog {
    pub start: i64,
    pub end: Option<i64>,
    pub before: Vec<u32>,
    pub after: Option<Vec<u32>>,
}

/// Everything a decision reads from the world, as numbers: when these are unchanged (and no
/// revisit is due), deciding again gives the same plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DecisionInputs {
    tasks: u32,
    /// Running VMs, only when the policy caps by ready VMs (`maxSurge`).
    ready: Option<u32>,
    live: u32,
    finished_version: u64,
    health_version: u64,
    replicas: Option<u32>,
}

impl DecisionInputs {
    /// VMs starting or running: the ones no plan may delete.
    pub fn live(&self) -> u32 {
        self.live
    }
}

/// The world's state. Held behind a mutex by [`SimWorld`]; the engine locks it between port
/// calls (never across one).
#[derive(Debug)]
pub(crate) struct WorldState {
    now: i64,
    start_at_ms: i64,
    jobs: Vec<Job>,
    next_arrival: usize,
    /// Per job: when it was claimed (-1: not yet) and how often it completed.
    claimed_at: Vec<i64>,
    completions: Vec<u8>,
    completed_total: usize,
    classes: Vec<ClassState>,
    vms: Vec<SimVm>,
    free_slots: Vec<u32>,
    heap: BinaryHeap<Reverse<Event>>,
    seq: u64,
    boot: BootTime,
    boot_rng: SplitMix64,
    fault_rng: SplitMix64,
    start_rng: SplitMix64,
    faults: Faults,
    fault_counts: FaultCounts,
    violations: Vec<String>,
    events: u64,
    /// Most VMs powered on at once, all classes together.
    peak_on_total: u32,
    last_event_at: i64,
    /// A CircleCI request timed out in the current cycle.
    timed_out: bool,
    /// The cluster the VMs land on, when modelled (`placement`).
    cluster: Option<Cluster>,
    cluster_out: Vec<Outcome>,
    /// Powered-on stretches `(from, until, class)` of every VM, kept only for per-phase figures.
    on_log: Option<Vec<(i64, i64, u16)>>,
    /// When a job last arrived, was claimed or finished.
    last_progress_at: i64,
    trouble_rng: SplitMix64,
    /// Inside an `outage=` window: every CircleCI request fails.
    outage_active: bool,
    /// A timed restart is due at the next cycle.
    restart_due: bool,
    outage_log: Vec<OutageLog>,
}

impl WorldState {
    pub fn new(
        jobs: Vec<Job>,
        classes: &[ResourceClass],
        runners: &[RunnerTimes],
        boot: BootTime,
        faults: Faults,
        seed: u64,
        start_at_ms: i64,
    ) -> Self {
        let n = jobs.len();
        Self {
            now: 0,
            start_at_ms,
            jobs,
            next_arrival: 0,
            claimed_at: vec![-1; n],
            completions: vec![0; n],
            completed_total: 0,
            classes: classes
                .iter()
                .zip(runners)
                .map(|(name, runner)| ClassState {
                    pool_name: pool_name(name),
                    name: name.clone(),
                    queue: VecDeque::new(),
                    idle: VecDeque::new(),
                    // The pool exists from the start, empty (the chart creates it).
                    replicas: Some(0),
                    owned: Vec::new(),
                    index_used: Vec::new(),
                    names: Vec::new(),
                    idle_timeout_ms: runner.idle_ms,
                    max_run_ms: runner.max_run_ms,
                    census: Census::default(),
                    finished_version: 0,
                    acc: Accounts::default(),
                    dirty: true,
                    fleet_version: 0,
                    observed_at: 0,
                    health_version: 0,
                    replicas_before_outage: 0,
                })
                .collect(),
            vms: Vec::new(),
            free_slots: Vec::new(),
            heap: BinaryHeap::new(),
            seq: 0,
            boot,
            boot_rng: SplitMix64::stream(seed, 1),
            fault_rng: SplitMix64::stream(seed, 2),
            start_rng: SplitMix64::stream(seed, 3),
            faults,
            fault_counts: FaultCounts::default(),
            violations: Vec::new(),
            events: 0,
            peak_on_total: 0,
            last_event_at: 0,
            timed_out: false,
            cluster: None,
            cluster_out: Vec::new(),
            on_log: None,
            last_progress_at: 0,
            trouble_rng: SplitMix64::stream(seed, 4),
            outage_active: false,
            restart_due: false,
            outage_log: Vec::new(),
        }
        .with_timed_faults(seed)
    }

    /// Schedule the timed faults over the trace (and a day after its last arrival).
    fn with_timed_faults(mut self, seed: u64) -> Self {
        let horizon = self.jobs.last().map_or(0, |j| j.arrival_ms) + 86_400_000;
        let mut rng = SplitMix64::stream(seed, 5);
        let faults = self.faults;
        if let Some(outage) = faults.outage {
            let (period, lasting) = (millis(outage.period), millis(outage.lasting));
            let mut start = 0;
            while start < horizon {
                let at = start + rng.range_i64(0, period - lasting);
                self.schedule(at, EventKind::OutageStart);
                self.schedule(at + lasting, EventKind::OutageEnd);
                start += period;
            }
        }
        if let Some(lost) = faults.lost_node {
            let period = millis(lost.period);
            let mut start = 0;
            while start < horizon {
                for _ in 0..lost.count {
                    let at = start + rng.range_i64(0, period - 1);
                    self.schedule(at, EventKind::NodeLost);
                }
                start += period;
            }
        }
        if let Some(restart) = faults.restart_every {
            let gap = (millis(restart.period) / i64::from(restart.count)).max(1);
            let mut at = rng.range_i64(0, gap - 1);
            while at < horizon {
                self.schedule(at, EventKind::Restart);
                at += gap;
            }
        }
        self
    }

    /// The world's clock (ms of trace time).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Move the clock to `t` (the caller has processed every event before it).
    pub fn set_now(&mut self, t: i64) {
        self.now = t;
    }

    /// When the trace's last job arrives.
    /// Every job has arrived, and none has arrived, started or finished for `limit` before `t`.
    pub fn stalled(&self, t: i64, limit: i64) -> bool {
        self.next_arrival == self.jobs.len() && t > self.last_progress_at + limit
    }

    /// When the last world event happened.
    pub fn last_event_at(&self) -> i64 {
        self.last_event_at
    }

    /// Whether anything changed in any class since the controller last looked.
    pub fn any_dirty(&self) -> bool {
        self.classes.iter().any(|c| c.dirty)
    }

    /// Whether anything changed in class `class` since the controller last looked.
    pub fn is_dirty(&self, class: usize) -> bool {
        self.classes[class].dirty
    }

    /// The controller looked at class `class`.
    pub fn mark_seen(&mut self, class: usize) {
        self.classes[class].dirty = false;
    }

    /// Bumped whenever what `observe` returns for class `class` changes.
    pub fn fleet_version(&self, class: usize) -> u64 {
        self.classes[class].fleet_version
    }

    /// Whether the controller restarts now (a drawn fault); if so it is counted and every class
    /// needs a fresh look.
    pub fn controller_restarts(&mut self) -> bool {
        let restart = std::mem::take(&mut self.restart_due)
            || self.faults.restart > 0.0 && {
                let rate = self.faults.restart;
                self.fault(rate)
            };
        if restart {
            self.fault_counts.controller_restarts += 1;
            self.classes.iter_mut().for_each(|c| c.dirty = true);
        }
        restart
    }

    /// A new cycle begins: no CircleCI request of it timed out yet.
    pub fn clear_timed_out(&mut self) {
        self.timed_out = false;
    }

    /// Whether a CircleCI request timed out in the current cycle.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    pub fn timestamp(&self, t: i64) -> Timestamp {
        Timestamp::from_unix_millis(self.start_at_ms.saturating_add(t))
    }

    fn schedule(&mut self, at: i64, kind: EventKind) {
        self.seq += 1;
        self.heap.push(Reverse(Event {
            at,
            seq: self.seq,
            kind,
        }));
    }

    /// When the next world event happens, if any.
    pub fn next_event_at(&self) -> Option<i64> {
        let arrival = self.jobs.get(self.next_arrival).map(|j| j.arrival_ms);
        let timer = self.heap.peek().map(|Reverse(e)| e.at);
        let world = match (arrival, timer) {
            (Some(a), Some(t)) => Some(a.min(t)),
            (a, t) => a.or(t),
        };
        match (world, self.cluster_next_event_at()) {
            (Some(w), Some(c)) => Some(w.min(c)),
            (w, c) => w.or(c),
        }
    }

    pub fn all_done(&self) -> bool {
        self.completed_total == self.jobs.len()
    }

    /// Process the next event if it happens at or before `until`; false when there is none.
    /// Arrivals go before timers at the same instant (a job submitted as a VM boots is seen).
    pub fn step(&mut self, until: i64) -> bool {
        let arrival = self.jobs.get(self.next_arrival).map(|j| j.arrival_ms);
        let timer = self.heap.peek().map(|Reverse(e)| e.at);
        // The cluster acts before world events at the same instant only when strictly first.
        if let Some(at) = self.cluster_next_event_at()
            && arrival.is_none_or(|a| at < a)
            && timer.is_none_or(|t| at < t)
        {
            if at > until {
                return false;
            }
            self.now = self.now.max(at);
            self.last_event_at = at;
            self.advance_cluster(at);
            return true;
        }
        let take_arrival = match (arrival, timer) {
            (Some(a), Some(t)) => a <= t,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return false,
        };
        let at = if take_arrival { arrival } else { timer }.unwrap_or(i64::MAX);
        if at > until {
            return false;
        }
        self.now = self.now.max(at);
        self.events += 1;
        self.last_event_at = at;
        if take_arrival {
            let job = self.next_arrival as u32;
            self.next_arrival += 1;
            self.last_progress_at = at;
            let class = self.jobs[job as usize].class as usize;
            self.classes[class].queue.push_back(job);
            self.classes[class].dirty = true;
            // An idle runner finds the job at its next poll for work; a runner that comes up
            // later claims at once (its first poll).
            match self.cluster.as_ref().map_or(0, Cluster::claim_delay_ms) {
                0 => self.try_claim(class),
                delay if !self.classes[class].idle.is_empty() => {
                    self.schedule(at + delay, EventKind::Claim(class as u16));
                }
                _ => {}
            }
        } else if let Some(Reverse(event)) = self.heap.pop() {
            let current = |vm: u32, generation: u32| self.vms[vm as usize].generation == generation;
            match event.kind {
                EventKind::BootDone(vm, g) if current(vm, g) => self.boot_done(vm),
                EventKind::StartFailed(vm, g) if current(vm, g) => self.start_failed(vm),
                EventKind::NodeUnready(vm, g) if current(vm, g) => {
                    let class = self.vms[vm as usize].class as usize;
                    self.classes[class].health_version += 1;
                    self.fleet_changed(class);
                }
                EventKind::JobDone(vm, g) if current(vm, g) => self.job_done(vm),
                EventKind::IdleOff(vm, g) if current(vm, g) => self.idle_off(vm),
                EventKind::BootDone(..)
                | EventKind::StartFailed(..)
                | EventKind::NodeUnready(..)
                | EventKind::JobDone(..)
                | EventKind::IdleOff(..) => {}
                EventKind::Claim(class) => {
                    self.classes[usize::from(class)].dirty = true;
                    self.try_claim(usize::from(class));
                }
                EventKind::OutageStart => self.outage_starts(),
                EventKind::OutageEnd => self.outage_ends(),
                EventKind::NodeLost => self.node_lost(),
                EventKind::Restart => self.restart_due = true,
            }
        }
        true
    }

    fn outage_starts(&mut self) {
        self.outage_active = true;
        self.fault_counts.outages += 1;
        for c in &mut self.classes {
            c.replicas_before_outage = c.replicas.unwrap_or(0);
        }
        self.outage_log.push(OutageLog {
            start: self.now,
            end: None,
            before: self.replicas_now(),
            after: None,
        });
    }

    fn replicas_now(&self) -> Vec<u32> {
        self.classes
            .iter()
            .map(|c| c.replicas.unwrap_or(0))
            .collect()
    }

    /// Note each class's replicas for the outages that ended at least `poll` before `t`, when
    /// every cycle before `t` has been applied.
    pub fn note_pools_after_outages(&mut self, t: i64, poll: i64) {
        let replicas = self.replicas_now();
        for o in &mut self.outage_log {
            if o.after.is_none() && o.end.is_some_and(|end| end + poll <= t) {
                o.after = Some(replicas.clone());
            }
        }
    }

    /// The outage is over: capacity was kept when every pool's target is still at least what
    /// it was when the outage began. Every class is looked at in the next cycle.
    fn outage_ends(&mut self) {
        self.outage_active = false;
        let now = self.now;
        if let Some(o) = self.outage_log.last_mut() {
            o.end = Some(now);
        }
        if self
            .classes
            .iter()
            .all(|c| c.replicas.unwrap_or(0) >= c.replicas_before_outage)
        {
            self.fault_counts.outages_pool_kept += 1;
        }
        self.classes.iter_mut().for_each(|c| c.dirty = true);
    }

    /// A node goes: about one in `LOST_NODE_SHARE` powered-on VMs (at least one) was on it.
    /// They keep showing their last phase (KubeVirt marks their VMIs failed only once their
    /// launcher pods are gone, which an unreachable node's are not: `watch/node/node.go`), but
    /// not ready after `NODE_GRACE_MS` (the node lifecycle controller marks the pods of an
    /// unreachable node not ready, and the VMI's `Ready` condition follows its pod's:
    /// `watch/vmi/lifecycle.go`, `syncReadyConditionFromPod`). Jobs on them go back to the front
    /// of the queue, as CircleCI re-runs a task whose runner stopped sending heartbeats.
    fn node_lost(&mut self) {
        /// Kubernetes' `node-monitor-grace-period`.
        const NODE_GRACE_MS: i64 = 40_000;
        const LOST_NODE_SHARE: u64 = 8;
        let on: Vec<u32> = (0..self.vms.len() as u32)
            .filter(|v| {
                let vm = &self.vms[*v as usize];
                !vm.gone && !vm.phase.is_finished() && vm.trouble == Trouble::None
            })
            .collect();
        if on.is_empty() {
            return;
        }
        self.fault_counts.lost_nodes += 1;
        let first = on[(self.trouble_rng.next_u64() % on.len() as u64) as usize];
        for vm in on {
            if vm != first && !self.trouble_rng.next_u64().is_multiple_of(LOST_NODE_SHARE) {
                continue;
            }
            self.fault_counts.vms_on_lost_nodes += 1;
            let now = self.now;
            let v = &mut self.vms[vm as usize];
            v.trouble = Trouble::NodeLost;
            v.unready_from = now + NODE_GRACE_MS;
            let generation = v.generation;
            let class = v.class as usize;
            if let Some(job) = v.job.take() {
                let cw = &mut self.classes[class];
                // The interrupted run is powered-on time but not a job's time (the job runs
                // again in full), so it is booked as idle.
                cw.acc.idle_ms += now - v.since;
                v.since = now;
                cw.census.busy -= 1;
                cw.census.idle += 1;
                cw.queue.push_front(job);
                self.claimed_at[job as usize] = -1;
                self.fault_counts.jobs_rerun += 1;
            }
            self.schedule(now + NODE_GRACE_MS, EventKind::NodeUnready(vm, generation));
            self.classes[class].health_version += 1;
            self.fleet_changed(class);
            self.try_claim(class);
        }
    }

    /// The VM's launcher or domain failed before the guest ran: KubeVirt shows a VM whose VMI
    /// failed without ever running as `CrashLoopBackOff` (also under `runStrategy: Once`), which
    /// the KubeVirt adapter maps to failed-to-start.
    fn start_failed(&mut self, vm: u32) {
        let Some(class) = self.end_boot(vm) else {
            return;
        };
        self.vms[vm as usize].phase = VmPhase::FailedToStart;
        let cw = &mut self.classes[class];
        cw.census.finished += 1;
        cw.finished_version += 1;
        self.fault_counts.start_failures += 1;
        self.powered_off(vm);
    }

    /// A starting VM's boot ends (ready or failed): its boot time is booked and the controller
    /// sees a change. Its class, or `None` when the VM is not booting any more.
    fn end_boot(&mut self, vm: u32) -> Option<usize> {
        let now = self.now;
        let v = &mut self.vms[vm as usize];
        if v.gone || v.phase != VmPhase::Starting || v.trouble == Trouble::NodeLost {
            return None;
        }
        let class = v.class as usize;
        let cw = &mut self.classes[class];
        cw.acc.boot_ms += now - v.since;
        v.since = now;
        cw.census.booting -= 1;
        cw.health_version += 1;
        self.fleet_changed(class);
        Some(class)
    }

    fn boot_done(&mut self, vm: u32) {
        let now = self.now;
        let Some(class) = self.end_boot(vm) else {
            return;
        };
        let v = &mut self.vms[vm as usize];
        let cw = &mut self.classes[class];
        v.phase = VmPhase::Running;
        v.ready_at = now;
        cw.census.idle += 1;
        if v.trouble == Trouble::NeverConnects {
            return;
        }
        let generation = v.generation;
        cw.idle.push_back((vm, generation));
        if cw.idle.len() > 2 * cw.census.idle as usize + 32 {
            let vms = &self.vms;
            cw.idle.retain(|(slot, g)| {
                let v = &vms[*slot as usize];
                v.generation == *g && !v.gone && v.phase == VmPhase::Running && v.job.is_none()
            });
        }
        let idle_timeout = cw.idle_timeout_ms;
        self.try_claim(class);
        // A VM that took a waiting job at once never idles: no power-off timer for it.
        if let Some(idle) = idle_timeout
            && self.vms[vm as usize].job.is_none()
        {
            self.schedule(now + idle, EventKind::IdleOff(vm, generation));
        }
    }

    fn job_done(&mut self, vm: u32) {
        let now = self.now;
        let v = &mut self.vms[vm as usize];
        if v.trouble == Trouble::NodeLost {
            return;
        }
        let Some(job) = v.job.take() else {
            self.violations
                .push(format!("VM {} finished a job it did not have", v.name));
            return;
        };
        let class = v.class as usize;
        let cw = &mut self.classes[class];
        cw.acc.busy_ms += now - v.since;
        v.since = now;
        v.phase = VmPhase::Stopped;
        cw.census.busy -= 1;
        cw.census.finished += 1;
        cw.finished_version += 1;
        self.fleet_changed(class);
        self.powered_off(vm);
        self.last_progress_at = now;
        self.complete(job);
    }

    fn idle_off(&mut self, vm: u32) {
        let now = self.now;
        let v = &mut self.vms[vm as usize];
        if v.gone || v.phase != VmPhase::Running || v.job.is_some() || v.trouble != Trouble::None {
            return;
        }
        let class = v.class as usize;
        let cw = &mut self.classes[class];
        cw.acc.idle_ms += now - v.since;
        v.since = now;
        v.phase = VmPhase::Stopped;
        cw.census.idle -= 1;
        cw.census.finished += 1;
        cw.finished_version += 1;
        self.fleet_changed(class);
        self.powered_off(vm);
    }

    /// Something the fleet port shows changed: the controller must look again, and a cached
    /// observation is stale.
    fn fleet_changed(&mut self, class: usize) {
        let cw = &mut self.classes[class];
        cw.dirty = true;
        cw.fleet_version += 1;
    }

    pub(crate) fn fault(&mut self, rate: f64) -> bool {
        self.fault_rng.chance(rate)
    }

    pub fn class_index(&self, class: &ResourceClass) -> Result<usize, PortError> {
        self.classes
            .iter()
            .position(|c| &c.name == class)
            .ok_or_else(|| PortError::permanent(format!("resource class {class} is not simulated")))
    }

    /// What a controller polling now would see of a class: its task counts (without the
    /// API's simulated faults) and its pool.
    pub fn controller_view(&self, class: usize) -> (provisioner_core::Demand, FleetState) {
        let cw = &self.classes[class];
        let demand = provisioner_core::Demand {
            unclaimed: cw.queue.len() as u32,
            running: cw.census.busy,
        };
        (demand, self.observe(class))
    }

    pub fn decision_inputs(&self, class: usize, with_ready: bool) -> DecisionInputs {
        let cw = &self.classes[class];
        DecisionInputs {
            tasks: cw.queue.len() as u32 + cw.census.busy,
            ready: with_ready.then_some(cw.census.idle + cw.census.busy),
            live: cw.census.on(),
            finished_version: cw.finished_version,
            health_version: cw.health_version,
            replicas: cw.replicas,
        }
    }
}

/// The world behind the ports. `std::sync::Mutex` keeps it `Send + Sync`; the simulator is the
/// only user, so the lock is never contended.
#[derive(Debug)]
pub(crate) struct SimWorld {
    state: Mutex<WorldState>,
}

impl SimWorld {
    pub(crate) fn new(state: WorldState) -> Self {
        Self {
            state: Mutex::new(state),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, WorldState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn into_state(self) -> WorldState {
        self.state
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl DemandSource for SimWorld {
    async fn unclaimed_tasks(&self, class: &ResourceClass) -> Result<u32, PortError> {
        let mut w = self.lock();
        let c = w.class_index(class)?;
        w.circleci_request("unclaimed tasks")?;
        Ok(w.classes[c].queue.len() as u32)
    }

    async fn running_tasks(&self, class: &ResourceClass) -> Result<u32, PortError> {
        let mut w = self.lock();
        let c = w.class_index(class)?;
        w.circleci_request("running tasks")?;
        Ok(w.classes[c].census.busy)
    }
}

#[async_trait]
impl VmFleet for SimWorld {
    async fn observe(&self, class: &ResourceClass) -> Result<FleetState, PortError> {
        let mut w = self.lock();
        let c = w.class_index(class)?;
        w.classes[c].observed_at = w.now;
        Ok(w.observe(c))
    }

    async fn apply(&self, class: &ResourceClass, plan: &Plan) -> Result<ApplyReport, PortError> {
        let mut w = self.lock();
        let c = w.class_index(class)?;
        w.apply(c, plan)
    }
}

#[cfg(test)]
mod tests {
    use provisioner_core::{Duration, plan_for};

    use super::*;

    fn world(jobs: Vec<Job>, idle_s: Option<i64>) -> WorldState {
        let class = ResourceClass::parse("acme/medium").expect("class");
        WorldState::new(
            jobs,
            &[class],
            &[RunnerTimes {
                idle_ms: idle_s.map(|s| s * 1000),
                max_run_ms: None,
            }],
            BootTime::Fixed(Duration::from_secs(10)),
            Faults::default(),
            1,
            0,
        )
    }

    fn job(arrival_ms: i64, duration_ms: i64) -> Job {
        Job {
            arrival_ms,
            duration_ms,
            class: 0,
        }
    }

    fn run_until(w: &mut WorldState, t: i64) {
        while w.step(t) {}
        w.now = t;
    }

    fn plan(target: u32) -> Plan {
        Plan {
            target_replicas: target,
            ..Plan::default()
        }
    }

    fn faulty_world(faults: &str, boot_s: u64) -> WorldState {
        let class = ResourceClass::parse("acme/medium").expect("class");
        WorldState::new(
            Vec::new(),
            &[class],
            &[RunnerTimes::default()],
            BootTime::Fixed(Duration::from_secs(boot_s)),
            if faults.is_empty() {
                Faults::default()
            } else {
                Faults::parse(faults).expect("faults")
            },
            1,
            0,
        )
    }

    #[test]
    fn a_failed_start_shows_once_the_launcher_has_run_not_after_the_whole_boot() {
        let mut w = faulty_world("start=1", 180);
        w.apply(0, &plan(2)).expect("scale out");
        run_until(&mut w, pool::LAUNCH_MS - 1);
        assert!(
            w.observe(0)
                .vms
                .iter()
                .all(|v| v.phase == VmPhase::Starting)
        );
        run_until(&mut w, pool::LAUNCH_MS);
        let fleet = w.observe(0);
        assert!(
            fleet.vms.iter().all(|v| v.phase == VmPhase::FailedToStart),
            "{fleet:?}"
        );
        assert_eq!(w.fault_counts.start_failures, 2);
        // A boot shorter than the launcher's start fails at its end.
        let mut w = faulty_world("start=1", 5);
        w.apply(0, &plan(1)).expect("scale out");
        run_until(&mut w, 5_000);
        assert_eq!(w.observe(0).vms[0].phase, VmPhase::FailedToStart);
    }

    #[test]
    fn a_lost_nodes_vms_keep_running_and_turn_unready_after_the_grace() {
        let mut w = faulty_world("", 10);
        w.apply(0, &plan(3)).expect("scale out");
        run_until(&mut w, 11_000);
        w.node_lost();
        let lost: Vec<u32> = (0..w.vms.len() as u32)
            .filter(|v| w.vms[*v as usize].trouble == Trouble::NodeLost)
            .collect();
        assert!(!lost.is_empty());
        let seen = |w: &WorldState| {
            let fleet = w.observe(0);
            lost.iter()
                .map(|v| {
                    let vm = &fleet
                        .vms
                        .iter()
                        .find(|x| x.id == w.vms[*v as usize].id)
                        .expect("still there");
                    (vm.phase, vm.ready_at.is_some())
                })
                .collect::<Vec<_>>()
        };
        let version = w.fleet_version(0);
        run_until(&mut w, 11_000 + 39_999);
        assert!(seen(&w).iter().all(|s| *s == (VmPhase::Running, true)));
        run_until(&mut w, 11_000 + 40_000);
        assert!(seen(&w).iter().all(|s| *s == (VmPhase::Running, false)));
        assert!(w.fleet_version(0) > version, "the change is seen");
        run_until(&mut w, 86_400_000);
        assert!(seen(&w).iter().all(|s| *s == (VmPhase::Running, false)));
    }

    #[test]
    fn memory_follows_the_pool_not_simulated_time() {
        // Three VMs idling out every 70 s and recycled, for simulated days, with no jobs.
        let mut w = world(Vec::new(), Some(60));
        let mut t = 0;
        for _ in 0..5_000 {
            let p = plan_for(3, &w.observe(0));
            w.apply(0, &p).expect("apply");
            t += 35_000;
            run_until(&mut w, t);
        }
        assert!(
            w.classes[0].acc.vms_created > 3_000,
            "{}",
            w.classes[0].acc.vms_created
        );
        assert!(w.vms.len() <= 6, "{} VM slots", w.vms.len());
        assert!(w.heap.len() <= 12, "{} pending events", w.heap.len());
        assert!(
            w.classes[0].idle.len() <= 40,
            "{} idle entries",
            w.classes[0].idle.len()
        );
        assert!(w.violations.is_empty(), "{:?}", w.violations);
    }

    #[test]
    fn scale_out_names_by_lowest_free_index_and_recycle_reuses_the_name() {
        let mut w = world(Vec::new(), Some(5));
        w.apply(0, &plan(3)).expect("scale out");
        let fleet = w.observe(0);
        assert_eq!(
            fleet.vms.iter().map(|v| &*v.name).collect::<Vec<_>>(),
            ["acme-medium-0", "acme-medium-1", "acme-medium-2"]
        );
        run_until(&mut w, 15_000);
        let fleet = w.observe(0);
        assert!(
            fleet.vms.iter().all(|v| v.phase == VmPhase::Stopped),
            "{fleet:?}"
        );
        let old = fleet.vms[1].clone();
        let recycle = Plan {
            target_replicas: 3,
            retire: Vec::new(),
            recycle: vec![(&old).into()],
        };
        let report = w.apply(0, &recycle).expect("recycle");
        assert_eq!((report.recycled, report.refused), (1, 0));
        let fleet = w.observe(0);
        assert_eq!(fleet.vms.len(), 3);
        let fresh = fleet
            .vms
            .iter()
            .find(|v| v.phase == VmPhase::Starting)
            .expect("a replacement");
        assert_eq!(fresh.name, old.name);
        assert_ne!(fresh.id, old.id);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
    }

    #[test]
    fn lowering_replicas_deletes_nothing_and_retire_shrinks_the_pool() {
        let mut w = world(Vec::new(), Some(5));
        w.apply(0, &plan(3)).expect("scale out");
        run_until(&mut w, 11_000);
        w.apply(0, &plan(0)).expect("scale in");
        let fleet = w.observe(0);
        assert_eq!((fleet.spec_replicas, fleet.vms.len()), (Some(0), 3));
        assert!(fleet.vms.iter().all(|v| v.phase == VmPhase::Running));
        run_until(&mut w, 15_000);
        let fleet = w.observe(0);
        let p = plan_for(1, &fleet);
        assert_eq!(
            (p.target_replicas, p.recycle.len(), p.retire.len()),
            (1, 1, 2)
        );
        let report = w.apply(0, &p).expect("retire and recycle");
        assert_eq!((report.retired, report.recycled), (2, 1));
        let fleet = w.observe(0);
        assert_eq!((fleet.spec_replicas, fleet.vms.len()), (Some(1), 1));
        assert_eq!(fleet.vms[0].phase, VmPhase::Starting);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
    }

    #[test]
    fn a_plan_deleting_a_live_vm_is_refused_and_reported() {
        let mut w = world(vec![job(0, 60_000)], None);
        w.apply(0, &plan(2)).expect("scale out");
        run_until(&mut w, 11_000);
        let fleet = w.observe(0);
        let busy = Plan {
            target_replicas: 2,
            retire: fleet.vms.iter().map(Into::into).collect(),
            recycle: Vec::new(),
        };
        let report = w.apply(0, &busy).expect("apply");
        assert_eq!((report.refused, report.retired), (2, 0));
        assert_eq!(w.observe(0).vms.len(), 2);
        assert_eq!(w.violations.len(), 2, "{:?}", w.violations);
        assert!(w.violations[0].contains("while it was running"));
    }

    #[test]
    fn deleting_a_busy_vm_behind_the_ports_back_is_caught() {
        let mut w = world(vec![job(0, 60_000)], None);
        w.apply(0, &plan(1)).expect("scale out");
        run_until(&mut w, 11_000);
        let vm = w.classes[0].owned[0];
        w.remove_vm(vm);
        assert!(
            w.violations.iter().any(|v| v.contains("running a job")),
            "{:?}",
            w.violations
        );
    }

    #[test]
    fn a_job_completing_twice_is_caught() {
        let mut w = world(vec![job(0, 1_000)], None);
        w.complete(0);
        assert!(w.violations.is_empty());
        w.complete(0);
        assert!(
            w.violations.iter().any(|v| v.contains("completed 2 times")),
            "{:?}",
            w.violations
        );
    }

    #[test]
    fn a_claim_before_arrival_is_caught() {
        let mut w = world(vec![job(50_000, 1_000)], None);
        w.apply(0, &plan(1)).expect("scale out");
        run_until(&mut w, 11_000);
        // Break the world: queue the job before its arrival time.
        w.classes[0].queue.push_back(0);
        w.try_claim(0);
        assert!(
            w.violations.iter().any(|v| v.contains("before it arrived")),
            "{:?}",
            w.violations
        );
    }

    #[test]
    fn busy_time_not_matching_job_time_is_caught() {
        let mut w = world(vec![job(0, 5_000)], None);
        w.apply(0, &plan(1)).expect("scale out");
        run_until(&mut w, 20_000);
        w.close_books(20_000);
        w.final_checks(20_000);
        assert!(w.violations.is_empty(), "{:?}", w.violations);
        w.classes[0].acc.busy_ms += 1;
        w.final_checks(20_000);
        assert!(
            w.violations.iter().any(|v| v.contains("busy VM time")),
            "{:?}",
            w.violations
        );
    }

    #[test]
    fn unfinished_jobs_and_an_oversized_pool_are_caught() {
        let mut w = world(vec![job(0, 5_000)], None);
        w.final_checks(0);
        assert!(
            w.violations.iter().any(|v| v.contains("never completed")),
            "{:?}",
            w.violations
        );
        w.apply(0, &plan(4)).expect("scale out");
        w.check_pool_cap(0, 4, 0);
        assert_eq!(w.violations.len(), 1);
        w.check_pool_cap(0, 3, 0);
        assert!(
            w.violations
                .iter()
                .any(|v| v.contains("more than maxReplicas 3")),
            "{:?}",
            w.violations
        );
    }
}
