//! The two ports: where demand comes from and where VMs live. The controller plugs CircleCI and
//! KubeVirt in; the simulator plugs in its modelled queue and pool.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::config::ClassConfig;
use crate::domain::{Duration, ResourceClass, Timestamp};
use crate::healing::Reclaim;
use crate::planner::Plan;

/// Whether retrying can help. Used as a metric label, so the set is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A timeout, a 5xx, a 429, a conflict: the next cycle may succeed.
    Transient,
    /// Misconfiguration (a bad token, a missing permission, an unknown class): retrying the same
    /// request will not help until someone changes something.
    Permanent,
}

impl ErrorKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Permanent => "permanent",
        }
    }
}

/// An error crossing a port. Adapters keep their own error enums and convert into this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PortError {
    pub kind: ErrorKind,
    pub message: String,
    /// When the far side said how long to wait (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl PortError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

/// Task counts for one resource class at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Demand {
    /// Tasks queued and not yet claimed by a runner.
    pub unclaimed: u32,
    /// Tasks claimed and running on a runner.
    pub running: u32,
}

impl Demand {
    pub fn total(self) -> u32 {
        self.unclaimed.saturating_add(self.running)
    }
}

/// Where demand comes from. Two calls, as CircleCI's API has two endpoints, so that a failure
/// says which count is missing (`failed to get unclaimed tasks` / `failed to get running tasks`).
#[async_trait]
pub trait DemandSource: Send + Sync {
    async fn unclaimed_tasks(&self, class: &ResourceClass) -> Result<u32, PortError>;
    async fn running_tasks(&self, class: &ResourceClass) -> Result<u32, PortError>;

    /// The names of the runners of `class` that have connected (a VM names its runner after
    /// itself), for the registration check. `None`: this source cannot tell, which turns the
    /// check off (the default).
    async fn connected_runners(
        &self,
        _class: &ResourceClass,
    ) -> Result<Option<Vec<String>>, PortError> {
        Ok(None)
    }
}

/// A VM's stable identity: the Kubernetes UID. A pool re-uses names (a deleted VM comes back
/// under the same name with a new UID), so state is keyed on this, never on the name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VmId(Arc<str>);

impl VmId {
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VmId({})", self.0)
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a VM is in its one-job life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VmPhase {
    /// Created, scheduling or booting: not yet able to take a job.
    Starting,
    /// The guest is up (idle or running a job: the fleet cannot tell which). Never deleted.
    Running,
    /// The guest powered itself off: its job is done, or it idled out. Safe to delete.
    Stopped,
    /// It failed to start for good (the fleet knows it will not recover). Safe to delete. A VM
    /// in a status that may clear (unschedulable, image pull) stays `Starting` with
    /// [`Vm::failing`] set, and the planner judges it against the class's grace period.
    FailedToStart,
}

impl VmPhase {
    pub const ALL: [VmPhase; 4] = [
        Self::Starting,
        Self::Running,
        Self::Stopped,
        Self::FailedToStart,
    ];

    /// Used as a metric label, so the set is fixed.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::FailedToStart => "failed_to_start",
        }
    }

    /// A VM the planner may delete: nothing can be running on it.
    pub const fn is_finished(self) -> bool {
        matches!(self, Self::Stopped | Self::FailedToStart)
    }
}

/// One VM of a pool as the fleet observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub id: VmId,
    pub name: Arc<str>,
    pub created_at: Timestamp,
    /// When the guest became ready to take a job (the VM's `Ready` condition), once it has:
    /// with `created_at`, the VM's boot time.
    pub ready_at: Option<Timestamp>,
    pub phase: VmPhase,
    /// Deletion already requested (Kubernetes `deletionTimestamp`): on its way out.
    pub deleting: bool,
    /// The failure status a starting VM is in now, and since when.
    pub failing: Option<Failing>,
    /// Whether the VM's runner has ever registered with CircleCI; `None` when unknown (no API
    /// token to list runners with), which turns the registration check off.
    pub registered: Option<bool>,
}

impl Vm {
    /// A VM with no failure status, readiness time or registration known.
    pub fn new(id: VmId, name: Arc<str>, created_at: Timestamp, phase: VmPhase) -> Self {
        Self {
            id,
            name,
            created_at,
            phase,
            deleting: false,
            failing: None,
            ready_at: None,
            registered: None,
        }
    }
}

/// Which failure status a starting VM is in: whether it may clear by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailingKind {
    /// `ErrorUnschedulable`, `ErrImagePull`, `ImagePullBackOff`, `ErrorPvcNotFound`,
    /// `DataVolumeError`: a full cluster or a slow registry may yet let it start.
    Waiting,
    /// `CrashLoopBackOff`: it started and keeps failing; no point waiting.
    CrashLoop,
}

/// A starting VM's current failure status and when it began (the condition's transition time,
/// or when the fleet first saw it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Failing {
    pub kind: FailingKind,
    pub since: Timestamp,
}

/// A class's pool as observed: what it was asked to hold and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FleetState {
    /// The pool's `spec.replicas`; `None` when the pool does not exist yet.
    pub spec_replicas: Option<u32>,
    pub vms: Vec<Vm>,
}

/// What carrying out a plan did, for logs, metrics and events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApplyReport {
    /// `(from, to)` when the pool's replicas changed.
    pub scaled: Option<(u32, u32)>,
    pub retired: u32,
    pub recycled: u32,
    /// Deletes refused because the VM was no longer finished when re-read.
    pub refused: u32,
    /// The deleted VMs (counted in `retired` or `recycled`) that had not stopped by themselves,
    /// by name, with why they were reclaimed.
    pub reclaimed: Vec<(Arc<str>, Reclaim)>,
}

impl ApplyReport {
    pub fn is_noop(&self) -> bool {
        self.scaled.is_none() && self.retired == 0 && self.recycled == 0
    }
}

/// Where VMs live: observe a class's pool and carry out plans for it.
#[async_trait]
pub trait VmFleet: Send + Sync {
    /// Create or update whatever the class needs before it can be scaled (the KubeVirt pool and
    /// its cloud-init Secret). Idempotent; a no-op for fleets with nothing to set up.
    async fn ensure(&self, _class: &ClassConfig) -> Result<(), PortError> {
        Ok(())
    }

    async fn observe(&self, class: &ResourceClass) -> Result<FleetState, PortError>;

    /// Carry out `plan`. Must never delete a VM that is not finished when re-read, whatever the
    /// plan says.
    async fn apply(&self, class: &ResourceClass, plan: &Plan) -> Result<ApplyReport, PortError>;
}
