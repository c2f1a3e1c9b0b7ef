//! A VirtualMachine's life as the planner sees it.
//!
//! The pool's VMs run with `runStrategy: Once`: the guest powers off after its one job (or its
//! idle timeout) and the VMI stays in its final phase, never restarted. The mapping from
//! `status.printableStatus`:
//!
//! | printableStatus | phase | why |
//! |---|---|---|
//! | `Running`, `Paused`, `Migrating`, `Stopping`, `Terminating` | Running | a guest exists and may hold a job |
//! | `Stopped`, `Succeeded` with `status.created` (the VMI exists, in a final phase) | Stopped | the guest powered itself off |
//! | `Stopped` without `status.created`, older than 10 minutes | Stopped | no VMI, so no guest: nothing can run on it |
//! | `Stopped` without `status.created`, younger | Starting | may be a VM about to create its VMI: unsure, so not finished |
//! | `CrashLoopBackOff` | FailedToStart | the launcher keeps crashing: no guest will boot |
//! | `ErrorUnschedulable`, `ErrImagePull`, `ImagePullBackOff`, `ErrorPvcNotFound`, `DataVolumeError` | Starting, with `failing_since` | often passing (a full cluster, a slow registry): the core's grace rules decide, from how long it has been failing |
//! | `Provisioning`, `Starting`, `WaitingFor*`, `Unknown`, absent, anything new | Starting | not able to take a job yet |
//!
//! How long a VM has been failing is read from its own status, as KubeVirt's pool auto-healing
//! does: the `Ready` condition's `lastTransitionTime` while it is False (else the `Failure`
//! condition's, else the VM's creation). A VM is only ever deleted after `apply` re-reads it
//! and the same reading still says it may go, with the delete conditioned on its UID and
//! resourceVersion.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::DynamicObject;
use provisioner_core::{Failing, FailingKind, Reclaim, Timestamp, Vm, VmId, VmPhase};
use serde_json::Value;

/// How long a VM may show `Stopped` without ever having had a VMI before it counts as finished.
const STOPPED_WITHOUT_VMI_GRACE_MS: i64 = 10 * 60 * 1000;

/// The phase of a `kubevirt.io/v1` VirtualMachine, read at `now`.
pub(crate) fn vm_phase(vm: &DynamicObject, now: Timestamp) -> VmPhase {
    let status = vm.data.get("status");
    let field = |name: &str| status.and_then(|s| s.get(name));
    let printable = field("printableStatus")
        .and_then(Value::as_str)
        .unwrap_or("");
    match printable {
        "Running" | "Paused" | "Migrating" | "Stopping" | "Terminating" => VmPhase::Running,
        "Stopped" | "Succeeded" => {
            let has_vmi = field("created").and_then(Value::as_bool).unwrap_or(false);
            let age_ms = created_at(vm).map_or(0, |created| {
                now.unix_millis().saturating_sub(created.unix_millis())
            });
            if has_vmi || age_ms >= STOPPED_WITHOUT_VMI_GRACE_MS {
                VmPhase::Stopped
            } else {
                VmPhase::Starting
            }
        }
        "CrashLoopBackOff" => VmPhase::FailedToStart,
        _ => VmPhase::Starting,
    }
}

/// The core's view of a `kubevirt.io/v1` VirtualMachine read at `now`; `None` without a UID.
/// Registration is left unknown: the controller fills it from CircleCI.
pub(crate) fn observed_vm(vm: &DynamicObject, now: Timestamp) -> Option<Vm> {
    let uid = vm.metadata.uid.as_deref()?;
    let mut observed = Vm::new(
        VmId::new(uid),
        Arc::from(vm.name_any()),
        created_at(vm).unwrap_or_default(),
        vm_phase(vm, now),
    );
    observed.deleting = vm.metadata.deletion_timestamp.is_some();
    observed.failing = failing_since(vm).map(|since| Failing {
        kind: if waiting_failure(vm).is_some() {
            FailingKind::Waiting
        } else {
            FailingKind::CrashLoop
        },
        since,
    });
    observed.ready_at = ready_since(vm);
    Some(observed)
}

/// Whether `vm`, re-read just before its delete, still shows what made the planner reclaim it:
/// a VM that started, became ready or recovered since is left alone.
pub(crate) fn reclaim_still_holds(why: Reclaim, vm: &Vm) -> bool {
    match why {
        Reclaim::FailedToStart => {
            vm.phase == VmPhase::FailedToStart
                || (vm.phase == VmPhase::Starting && vm.failing.is_some())
        }
        Reclaim::StartTimeout => vm.phase == VmPhase::Starting && vm.ready_at.is_none(),
        // Same UID (checked by the caller), still up, and not restarted since.
        Reclaim::Overran | Reclaim::Unregistered => vm.phase == VmPhase::Running,
    }
}

/// The statuses of a VM that cannot start now but may later (room frees up, the image arrives).
pub(crate) const WAITING_FAILURES: [&str; 5] = [
    "ErrorUnschedulable",
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrorPvcNotFound",
    "DataVolumeError",
];

/// `status.printableStatus`, when it is one of [`WAITING_FAILURES`].
pub(crate) fn waiting_failure(vm: &DynamicObject) -> Option<&'static str> {
    let printable = vm.data.pointer("/status/printableStatus")?.as_str()?;
    WAITING_FAILURES.iter().copied().find(|f| *f == printable)
}

/// Since when the VM has been failing to start, when its status says it is: the `Ready`
/// condition's last transition to False, else the `Failure` condition's, else its creation.
pub(crate) fn failing_since(vm: &DynamicObject) -> Option<Timestamp> {
    let printable = vm.data.pointer("/status/printableStatus")?.as_str()?;
    if waiting_failure(vm).is_none() && printable != "CrashLoopBackOff" {
        return None;
    }
    condition_since(vm, "Ready", "False")
        .or_else(|| condition_since(vm, "Failure", "True"))
        .or_else(|| created_at(vm))
}

/// When the VM's `Ready` condition last became True (the guest is up), if it is True now.
/// A VM that says it is ready without dating it (`status.ready`, or a `Ready` condition
/// without `lastTransitionTime`, both allowed by the schema) counts as ready since its
/// creation: read as not ready, a healthy running VM would stop counting as capacity after the
/// start timeout and the pool would grow a replacement for it.
pub(crate) fn ready_since(vm: &DynamicObject) -> Option<Timestamp> {
    if let Some(at) = condition_since(vm, "Ready", "True") {
        return Some(at);
    }
    let ready = match condition(vm, "Ready").and_then(|c| c.get("status")?.as_str()) {
        Some(status) => status == "True",
        None => vm.data.pointer("/status/ready").and_then(Value::as_bool) == Some(true),
    };
    if ready { created_at(vm) } else { None }
}

/// The status condition of type `kind`.
fn condition<'a>(vm: &'a DynamicObject, kind: &str) -> Option<&'a Value> {
    vm.data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

/// The `lastTransitionTime` of condition `kind` when its status is `status`.
fn condition_since(vm: &DynamicObject, kind: &str, status: &str) -> Option<Timestamp> {
    let condition =
        condition(vm, kind).filter(|c| c.get("status").and_then(Value::as_str) == Some(status))?;
    let at = condition
        .get("lastTransitionTime")?
        .as_str()?
        .parse::<k8s_openapi::jiff::Timestamp>()
        .ok()?;
    Some(Timestamp::from_unix_millis(at.as_millisecond()))
}

pub(crate) fn created_at(vm: &DynamicObject) -> Option<Timestamp> {
    vm.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| Timestamp::from_unix_millis(t.0.as_millisecond()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(created_ms: i64, status: Value) -> DynamicObject {
        let created =
            k8s_openapi::jiff::Timestamp::from_millisecond(created_ms).expect("valid time");
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "p-0", "uid": "u", "creationTimestamp": created.to_string()},
            "status": status,
        }))
        .expect("valid VM")
    }

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn stopped_counts_as_finished_only_with_evidence_the_guest_ran() {
        let now = Timestamp::from_unix_millis(NOW);
        let fresh = NOW - 1_000;
        let old = NOW - STOPPED_WITHOUT_VMI_GRACE_MS;
        let stopped_vmi = serde_json::json!({"printableStatus": "Stopped", "created": true});
        let stopped_no_vmi = serde_json::json!({"printableStatus": "Stopped"});
        assert_eq!(vm_phase(&vm(fresh, stopped_vmi), now), VmPhase::Stopped);
        assert_eq!(
            vm_phase(&vm(fresh, stopped_no_vmi.clone()), now),
            VmPhase::Starting
        );
        assert_eq!(vm_phase(&vm(old, stopped_no_vmi), now), VmPhase::Stopped);
    }

    #[test]
    fn ready_time_comes_from_the_ready_condition() {
        let ready = serde_json::json!({"printableStatus": "Running", "conditions": [
            {"type": "Paused", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:02:30Z"},
        ]});
        let expected = "2026-01-01T00:02:30Z"
            .parse::<k8s_openapi::jiff::Timestamp>()
            .expect("time")
            .as_millisecond();
        assert_eq!(
            ready_since(&vm(NOW, ready)),
            Some(Timestamp::from_unix_millis(expected))
        );
        let not_ready = serde_json::json!({"printableStatus": "Starting", "conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ]});
        assert_eq!(ready_since(&vm(NOW, not_ready)), None);
        assert_eq!(ready_since(&vm(NOW, serde_json::json!({}))), None);
        // Ready without a date: ready since its creation; a False condition wins over
        // `status.ready`.
        let created = vm(
            NOW,
            serde_json::json!({"printableStatus": "Running", "ready": true}),
        );
        assert_eq!(ready_since(&created), created_at(&created));
        assert!(ready_since(&created).is_some());
        let undated = vm(
            NOW,
            serde_json::json!({"ready": true, "conditions": [
            {"type": "Ready", "status": "True"}]}),
        );
        assert_eq!(ready_since(&undated), created_at(&undated));
        let lost = vm(
            NOW,
            serde_json::json!({"ready": true, "conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
        );
        assert_eq!(ready_since(&lost), None);
    }

    #[test]
    fn every_documented_status_maps() {
        let now = Timestamp::from_unix_millis(NOW);
        for (printable, phase) in [
            ("Running", VmPhase::Running),
            ("Stopping", VmPhase::Running),
            ("Paused", VmPhase::Running),
            ("Migrating", VmPhase::Running),
            ("Terminating", VmPhase::Running),
            ("Provisioning", VmPhase::Starting),
            ("Starting", VmPhase::Starting),
            ("WaitingForVolumeBinding", VmPhase::Starting),
            ("WaitingForReceiver", VmPhase::Starting),
            ("Unknown", VmPhase::Starting),
            ("SomethingNew", VmPhase::Starting),
            ("CrashLoopBackOff", VmPhase::FailedToStart),
            ("ErrorUnschedulable", VmPhase::Starting),
            ("ErrImagePull", VmPhase::Starting),
            ("ImagePullBackOff", VmPhase::Starting),
            ("ErrorPvcNotFound", VmPhase::Starting),
            ("DataVolumeError", VmPhase::Starting),
        ] {
            let status = serde_json::json!({"printableStatus": printable, "created": true});
            assert_eq!(vm_phase(&vm(NOW, status), now), phase, "{printable}");
        }
        assert_eq!(vm_phase(&vm(NOW, Value::Null), now), VmPhase::Starting);
    }

    #[test]
    fn failure_time_comes_from_the_conditions_and_ready_time_from_ready() {
        let failing = serde_json::json!({
            "printableStatus": "ErrorUnschedulable",
            "conditions": [
                {"type": "Failure", "status": "True", "lastTransitionTime": "2026-01-01T00:02:00Z"},
                {"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:01:00Z"},
            ],
        });
        let created = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        let v = vm(created, failing);
        assert_eq!(waiting_failure(&v), Some("ErrorUnschedulable"));
        assert_eq!(
            failing_since(&v),
            Some(Timestamp::from_unix_millis(created + 60_000))
        );
        assert_eq!(ready_since(&v), None);
        // No conditions: failing since it was created, the only time the VM itself states.
        let bare = vm(
            created,
            serde_json::json!({"printableStatus": "ImagePullBackOff"}),
        );
        assert_eq!(
            failing_since(&bare),
            Some(Timestamp::from_unix_millis(created))
        );
        let running = vm(
            created,
            serde_json::json!({"printableStatus": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:03:00Z"}]}),
        );
        assert_eq!(failing_since(&running), None);
        assert_eq!(waiting_failure(&running), None);
        assert_eq!(
            ready_since(&running),
            Some(Timestamp::from_unix_millis(created + 180_000))
        );
    }
}
