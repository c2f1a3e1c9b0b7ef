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

use crate::options::{BootTime, Faults};
use crate::report::FaultCounts;
use crate::rng::SplitMix64;
use crate::trace::Job;

mod audit;
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
    /// When its boot finished and it could take a job (never, for a failed start).
    pub ready_at: Option<i64>,
    pub phase: VmPhase,
    pub deleting: bool,
    pub gone: bool,
    pub job: Option<u32>,
    /// When the current phase (or idle/busy stretch) began, for VM-hour accounting.
    pub since: i64,
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
    census: Census,
    /// Bumped whenever the set of finished VMs changes (the ones a plan may name).
    finished_version: u64,
    acc: Accounts,
    /// Something changed since the controller last looked.
    dirty: bool,
    /// Bumped whenever what `observe` returns changes.
    fleet_version: u64,
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
                .map(|(name, idle)| ClassState {
                    pool_name: pool_name(name),
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
                    dirty: true,
                    fleet_version: 0,
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
        }
    }

    /// The world's clock (ms of trace time).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// Move the clock to `t` (the caller has processed every event before it).
    pub fn set_now(&mut self, t: i64) {
        self.now = t;
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
        let restart = self.faults.restart > 0.0 && {
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
            self.classes[class].dirty = true;
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
        cw.dirty = true;
        cw.fleet_version += 1;
        if failed {
            v.phase = VmPhase::FailedToStart;
            cw.census.finished += 1;
            cw.finished_version += 1;
            self.fault_counts.start_failures += 1;
            return;
        }
        v.phase = VmPhase::Running;
        v.ready_at = Some(now);
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
