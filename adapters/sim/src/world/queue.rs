//! The CircleCI side: a FIFO queue of jobs per class, claimed by idle VMs, and the API's
//! simulated faults.

use provisioner_core::{PortError, VmPhase};

use super::{EventKind, Trouble, WorldState};
use crate::options::millis;

impl WorldState {
    /// FIFO: the oldest waiting job goes to the VM idle longest.
    pub(super) fn try_claim(&mut self, class: usize) {
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
                || v.trouble != Trouble::None
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
            // The runner cancels a job at `maxRunTime`; the VM is done with it then.
            let runs_ms = cw
                .max_run_ms
                .map_or(j.duration_ms, |m| j.duration_ms.min(m));
            let wait = now - j.arrival_ms;
            if wait < 0 {
                self.violations.push(format!(
                    "job {job} was claimed {}s before it arrived",
                    -wait as f64 / 1000.0
                ));
            }
            self.claimed_at[job as usize] = now;
            self.last_progress_at = now;
            let generation = v.generation;
            self.schedule(now + runs_ms, EventKind::JobDone(vm, generation));
        }
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

    pub(super) fn circleci_request(&mut self, what: &str) -> Result<(), PortError> {
        let in_window = self
            .faults
            .api_outage
            .is_some_and(|(from, until)| (millis(from)..millis(until)).contains(&self.now));
        if in_window || self.outage_active {
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
}
