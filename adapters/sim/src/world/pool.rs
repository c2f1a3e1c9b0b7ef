//! The KubeVirt side: a VirtualMachinePool per class, creating VMs at the lowest free name
//! index, deleting and releasing them as the KubeVirt adapter's plans ask.

use std::sync::Arc;

use provisioner_core::{
    ApplyReport, Failing, FailingKind, FleetState, Plan, PortError, ResourceClass, Vm, VmId,
    VmPhase, vm_name,
};

use super::{EventKind, SimVm, Trouble, WorldState};

const VM_ID_PREFIX: &str = "sim-vm-";

/// From the start of a VM's boot until its launcher has started the domain: a VMI that fails
/// does so by then, before the guest boots and the runner starts. Scheduling and virt-launcher
/// take seconds and the container-disk pull none (cached) to tens of seconds (cold): 20 s is
/// an assumption within that range, not a measurement.
pub(super) const LAUNCH_MS: i64 = 20_000;

/// The most VMs one simulated pool holds: far above a real fleet, low enough that a
/// `minReplicas` of millions does not exhaust memory.
const MAX_POOL_VMS: usize = 50_000;

/// The simulated pool of a class: `<namespace>-<name>`, lowercase, with the characters a
/// resource class allows and a Kubernetes name does not (`:`, `+`, `_`) as `-`. (The KubeVirt
/// adapter adds a hash to keep names unique; a simulated run only needs them readable.)
pub(crate) fn pool_name(class: &ResourceClass) -> String {
    format!("{}-{}", class.namespace(), class.name())
        .to_lowercase()
        .replace([':', '+', '_'], "-")
}

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

impl WorldState {
    pub(super) fn create_vm(&mut self, class: usize) {
        let now = self.now;
        let trouble = self.draw_trouble();
        let boots = matches!(trouble, Trouble::None | Trouble::NeverConnects);
        let fails_start = boots && self.start_rng.chance(self.faults.start);
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
                .push(Arc::from(vm_name(&cw.pool_name, index as u32)));
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
            on_from: now,
            placed_late_at: i64::MIN,
            waiting_since: i64::MIN,
            ready_at: -1,
            trouble,
            fails_start,
            unready_from: i64::MAX,
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
        self.fleet_changed(class);
        // A VM that will never start (no launcher pod: a quota, a missing Secret, no room for
        // it) takes no room on a node.
        if boots && self.place(slot, generation, class) {
            return;
        }
        let boot = self.boot.draw_ms(&mut self.boot_rng);
        if boots {
            self.schedule_boot(slot, generation, now, now + boot);
        }
    }

    /// The VM in `slot` started booting at `from` (created, or placed on a node) and would be
    /// ready at `ready_at`. One drawn to fail its start fails once its launcher has run.
    pub(super) fn schedule_boot(&mut self, slot: u32, generation: u32, from: i64, ready_at: i64) {
        if self.vms[slot as usize].fails_start {
            let at = ready_at.min(from + LAUNCH_MS);
            self.schedule(at, EventKind::StartFailed(slot, generation));
        } else {
            self.schedule(ready_at, EventKind::BootDone(slot, generation));
        }
    }

    /// What goes wrong with a new VM, by the VM fault rates (none drawn when all are zero, so
    /// fault-free runs draw exactly as before).
    fn draw_trouble(&mut self) -> Trouble {
        let f = self.faults;
        if f.stuck_start + f.unschedulable + f.never_connects <= 0.0 {
            return Trouble::None;
        }
        let draw = self.trouble_rng.next_f64();
        let counts = &mut self.fault_counts;
        if draw < f.stuck_start {
            counts.stuck_starts += 1;
            Trouble::StuckStart
        } else if draw < f.stuck_start + f.unschedulable {
            counts.unschedulable_vms += 1;
            Trouble::Unschedulable
        } else if draw < f.stuck_start + f.unschedulable + f.never_connects {
            counts.never_connecting_vms += 1;
            Trouble::NeverConnects
        } else {
            Trouble::None
        }
    }

    /// A VM the controller reclaims stops where it is: booked as stopped from now on. Its job,
    /// if it had one, would be lost: that is a violation, and the delete is refused.
    fn halt_for_reclaim(&mut self, vm: u32) -> bool {
        let now = self.now;
        let v = &mut self.vms[vm as usize];
        if v.job.is_some() {
            self.violations.push(format!(
                "the plan reclaimed VM {} while it was running a job",
                v.name
            ));
            return false;
        }
        let cw = &mut self.classes[v.class as usize];
        match v.phase {
            VmPhase::Starting => {
                cw.acc.boot_ms += now - v.since;
                cw.census.booting -= 1;
                v.phase = VmPhase::FailedToStart;
            }
            VmPhase::Running => {
                cw.acc.idle_ms += now - v.since;
                cw.census.idle -= 1;
                v.phase = VmPhase::Stopped;
            }
            VmPhase::FailedToStart if v.waiting_since != i64::MIN => {
                // Waiting for room: already booked as failed to start.
                self.fault_counts.vms_reclaimed += 1;
                return true;
            }
            VmPhase::Stopped | VmPhase::FailedToStart => return true,
        }
        v.since = now;
        cw.census.finished += 1;
        cw.finished_version += 1;
        self.fault_counts.vms_reclaimed += 1;
        true
    }

    /// The VM leaves the pool for good (its finalizer is gone).
    pub(super) fn remove_vm(&mut self, vm: u32) {
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
        let was_on = matches!(v.phase, VmPhase::Starting | VmPhase::Running);
        v.gone = true;
        v.since = now;
        cw.index_used[v.index as usize] = false;
        cw.owned.retain(|o| *o != vm);
        self.free_slots.push(vm);
        self.fleet_changed(class);
        if was_on {
            self.powered_off(vm);
        } else {
            self.release(vm);
        }
    }

    pub(super) fn mark_deleting(&mut self, vm: u32) {
        let v = &mut self.vms[vm as usize];
        if !v.deleting && v.phase.is_finished() {
            self.classes[v.class as usize].census.finished -= 1;
            self.classes[v.class as usize].finished_version += 1;
        }
        v.deleting = true;
        // Its VMI goes with the delete (a VM waiting for room stops waiting).
        self.release(vm);
    }

    /// The pool controller's pass (opportunistic scale-in).
    pub(super) fn reconcile(&mut self, class: usize) {
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

    pub fn observe(&self, class: usize) -> FleetState {
        let cw = &self.classes[class];
        FleetState {
            spec_replicas: cw.replicas,
            vms: cw
                .owned
                .iter()
                .map(|v| {
                    let vm = &self.vms[*v as usize];
                    let created_at = self.timestamp(vm.created_at);
                    // A VM waiting for room shows as the KubeVirt adapter maps
                    // `ErrorUnschedulable`: starting, failing since it was found unschedulable.
                    let waiting = vm.waiting_since != i64::MIN && !vm.deleting;
                    let failing_since = if waiting {
                        Some(self.timestamp(vm.waiting_since))
                    } else {
                        (vm.trouble == Trouble::Unschedulable).then_some(created_at)
                    };
                    Vm {
                        id: vm.id.clone(),
                        name: vm.name.clone(),
                        created_at,
                        phase: if waiting { VmPhase::Starting } else { vm.phase },
                        deleting: vm.deleting,
                        failing: failing_since.map(|since| Failing {
                            kind: FailingKind::Waiting,
                            since,
                        }),
                        ready_at: (vm.ready_at >= 0 && self.now < vm.unready_from)
                            .then(|| self.timestamp(vm.ready_at)),
                        // The simulated controller has an API token: registration is known.
                        registered: Some(vm.ready_at >= 0 && vm.trouble != Trouble::NeverConnects),
                    }
                })
                .collect(),
        }
    }

    /// Carry out a plan the way the KubeVirt adapter does: lower (or raise) replicas first,
    /// then delete retired VMs and remove the pool finalizer from them, then delete recycled
    /// VMs for the pool to replace. A VM that is not finished is never deleted.
    ///
    /// A plan carried out in full leaves the class as clean as it was: deciding again on the
    /// same demand gives a no-op plan, so only a failed or partly refused plan asks for another
    /// look.
    pub fn apply(&mut self, class: usize, plan: &Plan) -> Result<ApplyReport, PortError> {
        let was_dirty = self.classes[class].dirty;
        let outcome = self.apply_steps(class, plan);
        self.fleet_changed(class);
        if matches!(&outcome, Ok(report) if report.refused == 0) {
            self.classes[class].dirty = was_dirty;
        }
        outcome
    }

    pub(super) fn apply_steps(
        &mut self,
        class: usize,
        plan: &Plan,
    ) -> Result<ApplyReport, PortError> {
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
            // A VM that waited unschedulable and was placed after the controller looked is
            // refused as the KubeVirt adapter refuses it (re-read, no longer failing or
            // finished): the plan was right when made.
            let placed_since = v.placed_late_at > self.classes[class].observed_at;
            if v.deleting || (placed_since && v.job.is_none() && vm_ref.reclaim.is_some()) {
                report.refused += 1;
                continue;
            }
            if vm_ref.reclaim.is_some() && !self.halt_for_reclaim(vm) {
                report.refused += 1;
                continue;
            }
            let v = &self.vms[vm as usize];
            if !v.phase.is_finished() || v.job.is_some() {
                if placed_since && v.job.is_none() {
                    report.refused += 1;
                    continue;
                }
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

    pub(super) fn lookup(&self, class: usize, id: &VmId) -> Option<u32> {
        let (slot, generation) = id.as_str().strip_prefix(VM_ID_PREFIX)?.split_once('-')?;
        let (slot, generation): (u32, u32) = (slot.parse().ok()?, generation.parse().ok()?);
        let v = self.vms.get(slot as usize)?;
        (!v.gone && v.generation == generation && v.class as usize == class).then_some(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_ids_round_trip() {
        for (slot, generation) in [(0, 0), (7, 12), (10, 0), (123_456, 9), (u32::MAX, u32::MAX)] {
            let id = vm_id(slot, generation);
            assert_eq!(id.as_str(), format!("sim-vm-{slot}-{generation}"));
        }
    }
}
