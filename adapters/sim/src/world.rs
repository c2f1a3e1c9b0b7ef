//! The simulated world: CircleCI's queue per class and a KubeVirt VirtualMachinePool per class,
//! on a virtual clock. It implements the core's two ports, so the controller's decision code
//! drives it exactly as it drives the real APIs.
//!
//! The pool follows `reference/kubevirt.md` under `scaleInStrategy.opportunistic`:
//! `diff = owned VMs (deleting ones included) - replicas`; at `diff < 0` the pool creates VMs at
//! the lowest free index (same name, new UID); at `diff == 0` it removes its finalizer from VMs
//! being deleted (they go); at `diff > 0` it does nothing. Powered-off VMs are never replaced.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use provisioner_core::{
    ApplyReport, DemandSource, FleetState, Plan, PortError, ResourceClass, Timestamp, Vm, VmFleet,
    VmId, VmPhase,
};

use crate::options::{BootTime, Faults, millis};
use crate::report::FaultCounts;
use crate::rng::SplitMix64;
use crate::trace::Job;

const VM_ID_PREFIX: &str = "sim-vm-";

/// The most VMs one simulated pool holds: far above a real fleet, low enough that a
/// `minReplicas` of millions does not exhaust memory.
const MAX_POOL_VMS: usize = 50_000;

/// `sim-vm-<slot>-<generation>`: unique for the run although slots are re-used, built without
/// the formatting machinery (one per VM created).
fn vm_id(slot: u32, generation: u32) -> VmId {
    fn push_digits(out: &mut String, value: u32) {
        let mut digits = [0u8; 10];
        let mut at = digits.len();
        let mut rest = value;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        out.extend(digits[at..].iter().map(|d| char::from(*d)));
    }
    let mut id = String::with_capacity(VM_ID_PREFIX.len() + 21);
    id.push_str(VM_ID_PREFIX);
    push_digits(&mut id, slot);
    id.push('-');
    push_digits(&mut id, generation);
    VmId::new(id)
}

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
    JobDone(u32, u32),
    IdleOff(u32, u32),
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
}

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

#[derive(Debug)]
pub(crate) struct ClassWorld {
    pub name: ResourceClass,
    pool_name: String,
    pub queue: VecDeque<u32>,
    /// Idle VMs (slot, generation) in the order they became idle; stale entries are skipped.
    idle: VecDeque<(u32, u32)>,
    pub replicas: Option<u32>,
    pub owned: Vec<u32>,
    /// Per name index: whether a VM of the pool holds it; and the names, built once.
    index_used: Vec<bool>,
    names: Vec<Arc<str>>,
    pub idle_timeout_ms: Option<i64>,
    pub census: Census,
    /// Bumped whenever the set of finished VMs changes (the ones a plan may name).
    pub finished_version: u64,
    pub acc: Accounts,
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
    pub now: i64,
    pub start_at_ms: i64,
    pub jobs: Vec<Job>,
    pub next_arrival: usize,
    /// Per job: when it was claimed (-1: not yet) and how often it completed.
    pub claimed_at: Vec<i64>,
    pub completions: Vec<u8>,
    pub completed_total: usize,
    pub classes: Vec<ClassWorld>,
    pub vms: Vec<SimVm>,
    free_slots: Vec<u32>,
    heap: BinaryHeap<Reverse<Event>>,
    seq: u64,
    boot: BootTime,
    boot_rng: SplitMix64,
    fault_rng: SplitMix64,
    start_rng: SplitMix64,
    pub faults: Faults,
    pub fault_counts: FaultCounts,
    pub violations: Vec<String>,
    /// Per class: something changed since the controller last looked.
    pub dirty: Vec<bool>,
    /// Per class: bumped whenever what `observe` returns changes.
    pub fleet_version: Vec<u64>,
    pub events: u64,
    /// Most VMs powered on at once, all classes together.
    pub peak_on_total: u32,
    pub last_event_at: i64,
    /// A CircleCI request timed out in the current cycle.
    pub timed_out: bool,
}

impl WorldState {
    pub fn new(
        jobs: Vec<Job>,
        classes: &[ResourceClass],
        idle_timeouts: &[Option<i64>],
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
                .zip(idle_timeouts)
                .map(|(name, idle)| ClassWorld {
                    pool_name: format!("{}-{}", name.namespace(), name.name())
                        .to_lowercase()
                        .replace([':', '+', '_'], "-"),
                    name: name.clone(),
                    queue: VecDeque::new(),
                    idle: VecDeque::new(),
                    // The pool exists from the start, empty (the chart creates it).
                    replicas: Some(0),
                    owned: Vec::new(),
                    index_used: Vec::new(),
                    names: Vec::new(),
                    idle_timeout_ms: *idle,
                    census: Census::default(),
                    finished_version: 0,
                    acc: Accounts::default(),
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
            dirty: vec![true; classes.len()],
            fleet_version: vec![0; classes.len()],
            events: 0,
            peak_on_total: 0,
            last_event_at: 0,
            timed_out: false,
        }
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
        match (arrival, timer) {
            (Some(a), Some(t)) => Some(a.min(t)),
            (a, t) => a.or(t),
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
            let class = self.jobs[job as usize].class as usize;
            self.classes[class].queue.push_back(job);
            self.dirty[class] = true;
            self.try_claim(class);
        } else if let Some(Reverse(event)) = self.heap.pop() {
            let (EventKind::BootDone(vm, generation)
            | EventKind::JobDone(vm, generation)
            | EventKind::IdleOff(vm, generation)) = event.kind;
            if self.vms[vm as usize].generation != generation {
                return true;
            }
            match event.kind {
                EventKind::BootDone(..) => self.boot_done(vm),
                EventKind::JobDone(..) => self.job_done(vm),
                EventKind::IdleOff(..) => self.idle_off(vm),
            }
        }
        true
    }

    fn boot_done(&mut self, vm: u32) {
        let now = self.now;
        let failed = self.start_rng.chance(self.faults.start);
        let v = &mut self.vms[vm as usize];
        if v.gone || v.phase != VmPhase::Starting {
            return;
        }
        let class = v.class as usize;
        let cw = &mut self.classes[class];
        cw.acc.boot_ms += now - v.since;
        v.since = now;
        cw.census.booting -= 1;
        self.dirty[class] = true;
        self.fleet_version[class] += 1;
        if failed {
            v.phase = VmPhase::FailedToStart;
            cw.census.finished += 1;
            cw.finished_version += 1;
            self.fault_counts.start_failures += 1;
            return;
        }
        v.phase = VmPhase::Running;
        cw.census.idle += 1;
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

    /// FIFO: the oldest waiting job goes to the VM idle longest.
    fn try_claim(&mut self, class: usize) {
        let now = self.now;
        loop {
            let cw = &mut self.classes[class];
            if cw.queue.is_empty() {
                return;
            }
            let Some((vm, generation)) = cw.idle.pop_front() else {
                return;
            };
            let v = &mut self.vms[vm as usize];
            if v.generation != generation
                || v.gone
                || v.deleting
                || v.phase != VmPhase::Running
                || v.job.is_some()
            {
                continue;
            }
            let Some(job) = cw.queue.pop_front() else {
                return;
            };
            cw.acc.idle_ms += now - v.since;
            v.since = now;
            v.job = Some(job);
            cw.census.idle -= 1;
            cw.census.busy += 1;
            let j = self.jobs[job as usize];
            let wait = now - j.arrival_ms;
            if wait < 0 {
                self.violations.push(format!(
                    "job {job} was claimed {}s before it arrived",
                    -wait as f64 / 1000.0
                ));
            }
            self.claimed_at[job as usize] = now;
            let generation = v.generation;
            self.schedule(now + j.duration_ms, EventKind::JobDone(vm, generation));
        }
    }

    fn job_done(&mut self, vm: u32) {
        let now = self.now;
        let v = &mut self.vms[vm as usize];
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
        self.complete(job);
    }

    pub(crate) fn complete(&mut self, job: u32) {
        let count = &mut self.completions[job as usize];
        *count = count.saturating_add(1);
        if *count == 1 {
            self.completed_total += 1;
            self.classes[self.jobs[job as usize].class as usize]
                .acc
                .completed += 1;
        } else {
            self.violations
                .push(format!("job {job} completed {} times", *count));
        }
    }

    fn idle_off(&mut self, vm: u32) {
        let now = self.now;
        let v = &mut self.vms[vm as usize];
        if v.gone || v.phase != VmPhase::Running || v.job.is_some() {
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
    }

    fn create_vm(&mut self, class: usize) {
        let now = self.now;
        let cw = &mut self.classes[class];
        // The pool names VMs by the lowest free index: a replacement re-uses a name.
        let index = cw
            .index_used
            .iter()
            .position(|u| !u)
            .unwrap_or(cw.index_used.len());
        if index == cw.index_used.len() {
            cw.index_used.push(false);
            cw.names
                .push(Arc::from(format!("{}-{index}", cw.pool_name)));
        }
        cw.index_used[index] = true;
        // Slots of deleted VMs are re-used, so memory follows the pool's size, not time.
        let (slot, generation) = match self.free_slots.pop() {
            Some(slot) => (slot, self.vms[slot as usize].generation + 1),
            None => (self.vms.len() as u32, 0),
        };
        let vm = SimVm {
            class: class as u16,
            index: index as u32,
            generation,
            id: vm_id(slot, generation),
            name: cw.names[index].clone(),
            created_at: now,
            phase: VmPhase::Starting,
            deleting: false,
            gone: false,
            job: None,
            since: now,
        };
        if slot as usize == self.vms.len() {
            self.vms.push(vm);
        } else {
            self.vms[slot as usize] = vm;
        }
        cw.owned.push(slot);
        cw.census.booting += 1;
        cw.acc.vms_created += 1;
        cw.acc.peak_on = cw.acc.peak_on.max(cw.census.on());
        let on_total = self.classes.iter().map(|c| c.census.on()).sum::<u32>();
        self.peak_on_total = self.peak_on_total.max(on_total);
        let boot = self.boot.draw_ms(&mut self.boot_rng);
        self.fleet_changed(class);
        self.schedule(now + boot, EventKind::BootDone(slot, generation));
    }

    /// The VM leaves the pool for good (its finalizer is gone).
    fn remove_vm(&mut self, vm: u32) {
        let now = self.now;
        let v = &mut self.vms[vm as usize];
        if v.gone {
            return;
        }
        let class = v.class as usize;
        let cw = &mut self.classes[class];
        if v.job.is_some() || !v.phase.is_finished() {
            self.violations.push(format!(
                "VM {} was deleted while {}",
                v.name,
                if v.job.is_some() {
                    "running a job"
                } else {
                    v.phase.as_str()
                }
            ));
        }
        match (v.phase, v.job.is_some()) {
            (VmPhase::Starting, _) => {
                cw.acc.boot_ms += now - v.since;
                cw.census.booting -= 1;
            }
            (VmPhase::Running, true) => {
                cw.acc.busy_ms += now - v.since;
                cw.census.busy -= 1;
            }
            (VmPhase::Running, false) => {
                cw.acc.idle_ms += now - v.since;
                cw.census.idle -= 1;
            }
            _ => {
                cw.acc.stopped_ms += now - v.since;
                if !v.deleting {
                    cw.census.finished -= 1;
                    cw.finished_version += 1;
                }
            }
        }
        v.gone = true;
        v.since = now;
        cw.index_used[v.index as usize] = false;
        cw.owned.retain(|o| *o != vm);
        self.free_slots.push(vm);
        self.fleet_changed(class);
    }

    fn mark_deleting(&mut self, vm: u32) {
        let v = &mut self.vms[vm as usize];
        if !v.deleting && v.phase.is_finished() {
            self.classes[v.class as usize].census.finished -= 1;
            self.classes[v.class as usize].finished_version += 1;
        }
        v.deleting = true;
    }

    /// The pool controller's pass (opportunistic scale-in).
    fn reconcile(&mut self, class: usize) {
        let Some(replicas) = self.classes[class].replicas else {
            return;
        };
        let owned = self.classes[class].owned.len() as i64;
        let mut diff = owned - i64::from(replicas);
        if diff == 0
            && self.classes[class]
                .owned
                .iter()
                .any(|v| self.vms[*v as usize].deleting)
        {
            let deleting: Vec<u32> = self.classes[class]
                .owned
                .iter()
                .copied()
                .filter(|v| self.vms[*v as usize].deleting)
                .collect();
            for vm in deleting {
                self.remove_vm(vm);
            }
            diff = self.classes[class].owned.len() as i64 - i64::from(replicas);
        }
        if diff < 0 {
            // KubeVirt creates at most 250 VMs a pass and passes again as they appear, until
            // the pool holds `replicas`: those passes are folded into this one.
            let room = MAX_POOL_VMS.saturating_sub(self.classes[class].owned.len());
            for _ in 0..usize::try_from(-diff).unwrap_or(usize::MAX).min(room) {
                self.create_vm(class);
            }
        }
    }

    /// Something the fleet port shows changed: the controller must look again, and a cached
    /// observation is stale.
    fn fleet_changed(&mut self, class: usize) {
        self.dirty[class] = true;
        self.fleet_version[class] += 1;
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

    fn circleci_request(&mut self, what: &str) -> Result<(), PortError> {
        if let Some((from, until)) = self.faults.api_outage
            && (millis(from)..millis(until)).contains(&self.now)
        {
            self.fault_counts.api_errors += 1;
            return Err(PortError::transient(format!(
                "failed to get {what}: simulated outage (502 Bad Gateway)"
            )));
        }
        if self.fault(self.faults.api) {
            if self.fault_rng.next_u64() & 1 == 0 {
                self.fault_counts.api_errors += 1;
                return Err(PortError::transient(format!(
                    "failed to get {what}: simulated 503 Service Unavailable"
                )));
            }
            self.fault_counts.api_timeouts += 1;
            self.timed_out = true;
            return Err(PortError::transient(format!(
                "failed to get {what}: simulated timeout"
            )));
        }
        Ok(())
    }

    pub fn observe(&self, class: usize) -> FleetState {
        let cw = &self.classes[class];
        FleetState {
            spec_replicas: cw.replicas,
            vms: cw
                .owned
                .iter()
                .map(|v| {
                    let vm = &self.vms[*v as usize];
                    Vm {
                        id: vm.id.clone(),
                        name: vm.name.clone(),
                        created_at: self.timestamp(vm.created_at),
                        phase: vm.phase,
                        deleting: vm.deleting,
                    }
                })
                .collect(),
        }
    }

    /// What a controller polling now would see of a class: its task counts (no faults) and its
    /// pool.
    pub fn controller_view(&self, class: usize) -> (provisioner_core::Demand, FleetState) {
        let cw = &self.classes[class];
        let demand = provisioner_core::Demand {
            unclaimed: cw.queue.len() as u32,
            running: cw.census.busy,
        };
        (demand, self.observe(class))
    }

    /// Carry out a plan the way the KubeVirt adapter does: lower (or raise) replicas first,
    /// then delete retired VMs and remove the pool finalizer from them, then delete recycled
    /// VMs for the pool to replace. A VM that is not finished is never deleted.
    ///
    /// A plan carried out in full leaves the class as clean as it was: deciding again on the
    /// same demand gives a no-op plan, so only a failed or partly refused plan asks for another
    /// look.
    pub fn apply(&mut self, class: usize, plan: &Plan) -> Result<ApplyReport, PortError> {
        let was_dirty = self.dirty[class];
        let outcome = self.apply_steps(class, plan);
        self.fleet_changed(class);
        if matches!(&outcome, Ok(report) if report.refused == 0) {
            self.dirty[class] = was_dirty;
        }
        outcome
    }

    fn apply_steps(&mut self, class: usize, plan: &Plan) -> Result<ApplyReport, PortError> {
        let mut report = ApplyReport::default();
        let cw = &self.classes[class];
        // Repair: VMs still held by the pool finalizer while the pool will not release them.
        if cw.replicas.is_some_and(|r| cw.owned.len() as u32 > r) {
            let stuck: Vec<u32> = cw
                .owned
                .iter()
                .copied()
                .filter(|v| self.vms[*v as usize].deleting)
                .collect();
            for vm in stuck {
                if self.fault(self.faults.k8s) {
                    self.fault_counts.k8s_errors += 1;
                    return Err(PortError::transient(
                        "simulated Kubernetes error removing a pool finalizer",
                    ));
                }
                self.remove_vm(vm);
            }
        }
        let from = self.classes[class].replicas;
        if from != Some(plan.target_replicas) {
            if self.fault(self.faults.k8s) {
                self.fault_counts.k8s_errors += 1;
                return Err(PortError::transient(
                    "simulated Kubernetes error scaling the pool",
                ));
            }
            self.classes[class].replicas = Some(plan.target_replicas);
            report.scaled = Some((from.unwrap_or(0), plan.target_replicas));
            self.reconcile(class);
        }
        for (vm_ref, recycle) in plan
            .retire
            .iter()
            .map(|r| (r, false))
            .chain(plan.recycle.iter().map(|r| (r, true)))
        {
            let Some(vm) = self.lookup(class, &vm_ref.id) else {
                report.refused += 1;
                continue;
            };
            let v = &self.vms[vm as usize];
            if v.deleting {
                report.refused += 1;
                continue;
            }
            if !v.phase.is_finished() || v.job.is_some() {
                self.violations.push(format!(
                    "the plan asked to delete VM {} while it was {}",
                    v.name,
                    v.phase.as_str()
                ));
                report.refused += 1;
                continue;
            }
            if self.fault(self.faults.k8s) {
                self.fault_counts.k8s_errors += 1;
                return Err(PortError::transient(format!(
                    "simulated Kubernetes error deleting VM {}",
                    vm_ref.name
                )));
            }
            self.mark_deleting(vm);
            if recycle {
                report.recycled += 1;
            } else {
                if self.fault(self.faults.k8s) {
                    self.fault_counts.k8s_errors += 1;
                    return Err(PortError::transient(format!(
                        "simulated Kubernetes error removing the pool finalizer of VM {}",
                        vm_ref.name
                    )));
                }
                self.remove_vm(vm);
                report.retired += 1;
            }
            self.reconcile(class);
        }
        Ok(report)
    }

    fn lookup(&self, class: usize, id: &VmId) -> Option<u32> {
        let (slot, generation) = id.as_str().strip_prefix(VM_ID_PREFIX)?.split_once('-')?;
        let (slot, generation): (u32, u32) = (slot.parse().ok()?, generation.parse().ok()?);
        let v = self.vms.get(slot as usize)?;
        (!v.gone && v.generation == generation && v.class as usize == class).then_some(slot)
    }

    pub fn decision_inputs(&self, class: usize, with_ready: bool) -> DecisionInputs {
        let cw = &self.classes[class];
        DecisionInputs {
            tasks: cw.queue.len() as u32 + cw.census.busy,
            ready: with_ready.then_some(cw.census.idle + cw.census.busy),
            live: cw.census.on(),
            finished_version: cw.finished_version,
            replicas: cw.replicas,
        }
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
            .map(|(j, c)| j.duration_ms.min(end - c))
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

    /// Close every open interval at `end` (VM-hours up to the end of the run).
    pub fn close_books(&mut self, end: i64) {
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

/// The world behind the ports. `std::sync::Mutex` keeps it `Send + Sync`; the simulator is the
/// only user, so the lock is never contended.
#[derive(Debug)]
pub struct SimWorld {
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
        let w = self.lock();
        let c = w.class_index(class)?;
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
            &[idle_s.map(|s| s * 1000)],
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

    #[test]
    fn vm_ids_round_trip() {
        for (slot, generation) in [(0, 0), (7, 12), (10, 0), (123_456, 9), (u32::MAX, u32::MAX)] {
            let id = vm_id(slot, generation);
            assert_eq!(id.as_str(), format!("sim-vm-{slot}-{generation}"));
        }
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
