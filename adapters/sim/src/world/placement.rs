//! Where VMs land when the cluster model is on: the world hands each created VM to the
//! [`Cluster`], which places it (its runner is up after the image pull, the guest boot and the
//! runner's start) or leaves it unschedulable; a VM powering off or going frees its share.
//! Also the powered-on stretches kept for per-phase VM-hours.

use provisioner_core::VmPhase;

use super::WorldState;
use crate::cluster::{Cluster, Outcome};

impl WorldState {
    /// VMs land on this cluster: it decides when they boot, or that they wait unschedulable.
    pub fn with_cluster(mut self, cluster: Cluster) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Keep every VM's powered-on stretches (for per-phase VM-hours).
    pub fn with_on_log(mut self) -> Self {
        self.on_log = Some(Vec::new());
        self
    }

    pub(super) fn cluster_next_event_at(&self) -> Option<i64> {
        self.cluster.as_ref().and_then(Cluster::next_event_at)
    }

    /// Let the cluster carry out what is due at `at` (VMIs created, nodes up, autoscaling).
    pub(super) fn advance_cluster(&mut self, at: i64) {
        if let Some(cluster) = &mut self.cluster {
            cluster.advance(at, &mut self.cluster_out);
        }
        self.cluster_outcomes();
    }

    /// Hand a new VM to the cluster; false when there is none (the VM boots on its own draw).
    pub(super) fn place(&mut self, slot: u32, generation: u32, class: usize) -> bool {
        let now = self.now;
        match &mut self.cluster {
            Some(cluster) => {
                cluster.create(now, slot, generation, class as u16);
                true
            }
            None => false,
        }
    }

    /// The VM stopped being powered on (job done, idle, failed to start, or gone while on).
    pub(super) fn powered_off(&mut self, vm: u32) {
        let v = &self.vms[vm as usize];
        if let Some(log) = &mut self.on_log {
            log.push((v.on_from, self.now, v.class));
        }
        self.release(vm);
    }

    /// The VM's node share is free, and VMs waiting for room may fit.
    pub(super) fn release(&mut self, vm: u32) {
        let now = self.now;
        let generation = self.vms[vm as usize].generation;
        if let Some(cluster) = &mut self.cluster {
            cluster.release(now, vm, generation, &mut self.cluster_out);
            self.cluster_outcomes();
        }
    }

    /// Carry out what the cluster decided: a VM placed boots until its runner is up; a VM that
    /// fits nowhere shows as KubeVirt's `ErrorUnschedulable` until it is placed: the KubeVirt
    /// adapter maps that to starting with a failure status, and the core's `failingTimeout`
    /// decides when to give up on it. It is booked as failed to start (nothing runs).
    fn cluster_outcomes(&mut self) {
        let now = self.now;
        let mut out = std::mem::take(&mut self.cluster_out);
        for outcome in out.drain(..) {
            match outcome {
                Outcome::Placed {
                    slot,
                    generation,
                    ready_at,
                } => {
                    let v = &mut self.vms[slot as usize];
                    if v.generation != generation || v.gone {
                        continue;
                    }
                    if v.phase == VmPhase::FailedToStart {
                        let class = v.class as usize;
                        let cw = &mut self.classes[class];
                        cw.acc.stopped_ms += now - v.since;
                        v.since = now;
                        v.on_from = now;
                        v.placed_late_at = now;
                        v.waiting_since = i64::MIN;
                        v.phase = VmPhase::Starting;
                        if !v.deleting {
                            cw.census.finished -= 1;
                            cw.finished_version += 1;
                        }
                        cw.census.booting += 1;
                        self.fleet_changed(class);
                    }
                    self.schedule_boot(slot, generation, now, ready_at);
                }
                Outcome::Unschedulable { slot, generation } => {
                    let v = &mut self.vms[slot as usize];
                    if v.generation != generation || v.gone || v.phase != VmPhase::Starting {
                        continue;
                    }
                    let class = v.class as usize;
                    let cw = &mut self.classes[class];
                    cw.acc.boot_ms += now - v.since;
                    let from = v.on_from;
                    v.since = now;
                    v.waiting_since = now;
                    v.phase = VmPhase::FailedToStart;
                    cw.census.booting -= 1;
                    cw.census.finished += 1;
                    cw.finished_version += 1;
                    if let Some(log) = &mut self.on_log {
                        log.push((from, now, class as u16));
                    }
                    self.fleet_changed(class);
                }
            }
        }
        self.cluster_out = out;
    }
}
