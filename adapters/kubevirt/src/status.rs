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
//! | `CrashLoopBackOff`, `ErrorUnschedulable`, `ErrImagePull`, `ImagePullBackOff`, `ErrorPvcNotFound`, `DataVolumeError` | FailedToStart | no guest ever booted |
//! | `Provisioning`, `Starting`, `WaitingFor*`, `Unknown`, absent, anything new | Starting | not able to take a job yet, and never deleted |
//!
//! A VM is only ever deleted after `apply` re-reads it and this mapping still says finished,
//! with the delete conditioned on its UID and resourceVersion.

use kube::api::DynamicObject;
use provisioner_core::{Timestamp, VmPhase};
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
        "CrashLoopBackOff" | "ErrorUnschedulable" | "ErrImagePull" | "ImagePullBackOff"
        | "ErrorPvcNotFound" | "DataVolumeError" => VmPhase::FailedToStart,
        _ => VmPhase::Starting,
    }
}

/// When the VM became ready: its `Ready` condition's `lastTransitionTime` while that condition
/// is `True`. `None` before, and again once the guest powers off (the condition turns `False`).
pub(crate) fn ready_at(vm: &DynamicObject) -> Option<Timestamp> {
    let conditions = vm.data.get("status")?.get("conditions")?.as_array()?;
    let ready = conditions.iter().find(|c| {
        c.get("type").and_then(Value::as_str) == Some("Ready")
            && c.get("status").and_then(Value::as_str) == Some("True")
    })?;
    let at: k8s_openapi::jiff::Timestamp = ready
        .get("lastTransitionTime")
        .and_then(Value::as_str)?
        .parse()
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
            ready_at(&vm(NOW, ready)),
            Some(Timestamp::from_unix_millis(expected))
        );
        let not_ready = serde_json::json!({"printableStatus": "Starting", "conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        ]});
        assert_eq!(ready_at(&vm(NOW, not_ready)), None);
        assert_eq!(ready_at(&vm(NOW, serde_json::json!({}))), None);
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
            ("ErrorUnschedulable", VmPhase::FailedToStart),
            ("ErrImagePull", VmPhase::FailedToStart),
            ("ImagePullBackOff", VmPhase::FailedToStart),
            ("ErrorPvcNotFound", VmPhase::FailedToStart),
            ("DataVolumeError", VmPhase::FailedToStart),
        ] {
            let status = serde_json::json!({"printableStatus": printable, "created": true});
            assert_eq!(vm_phase(&vm(NOW, status), now), phase, "{printable}");
        }
        assert_eq!(vm_phase(&vm(NOW, Value::Null), now), VmPhase::Starting);
    }
}
