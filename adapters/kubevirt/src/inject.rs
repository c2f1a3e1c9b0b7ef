//! The sidecar injector's decision, pure: an AdmissionReview v1 for a Pod in, the review's
//! response out, with a JSONPatch that adds the token-proxy container and its Secret volume to
//! the `virt-launcher` pods of our pools and to nothing else.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::error::KubeVirtError;
use crate::names::{MANAGED_BY_LABEL, MANAGER, POOL_LABEL, is_dns_label};
use crate::options::{PROXY_PORT, SIDECAR_LABEL, proxy_secret_for_pool};

/// The injected container's and volume's name.
pub const PROXY_CONTAINER: &str = "runner-token-proxy";
/// Where the proxy container finds its Secret's keys.
pub const PROXY_SECRET_DIR: &str = "/etc/runner-provisioner-proxy";
/// KubeVirt's label on every `virt-launcher` pod.
const LAUNCHER_LABEL: (&str, &str) = ("kubevirt.io", "virt-launcher");

/// What the injected container runs and where the webhook acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectorOptions {
    /// The controller's own image: the proxy is its `proxy` subcommand.
    pub image: String,
    pub pull_policy: Option<String>,
    /// The namespaces whose pools the provisioner manages; pods elsewhere are never touched.
    pub namespaces: Vec<String>,
}

/// Answers one AdmissionReview: allowed, with a patch for our pools' launcher pods; allowed
/// without a patch for every other pod; refused (400) when the pod object cannot be read. A body
/// with no request UID to answer to is `KubeVirtError::MalformedReview` (the server's HTTP 400).
pub fn review(body: &[u8], opts: &InjectorOptions) -> Result<Value, KubeVirtError> {
    let malformed = |m: String| KubeVirtError::MalformedReview(m);
    let review: Value =
        serde_json::from_slice(body).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
    if review.get("apiVersion").and_then(Value::as_str) != Some("admission.k8s.io/v1")
        || review.get("kind").and_then(Value::as_str) != Some("AdmissionReview")
    {
        return Err(malformed(
            "apiVersion must be admission.k8s.io/v1 and kind AdmissionReview".to_owned(),
        ));
    }
    let request = review
        .get("request")
        .ok_or_else(|| malformed("no request".to_owned()))?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| malformed("request.uid is missing".to_owned()))?;

    let response = match decide(request, opts) {
        Ok(None) => json!({ "uid": uid, "allowed": true }),
        Ok(Some(patch)) => {
            let patch = serde_json::to_vec(&patch).unwrap_or_default();
            json!({
                "uid": uid,
                "allowed": true,
                "patchType": "JSONPatch",
                "patch": base64::engine::general_purpose::STANDARD.encode(patch),
            })
        }
        Err(message) => json!({
            "uid": uid,
            "allowed": false,
            "status": { "code": 400, "message": message },
        }),
    };
    Ok(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    }))
}

/// The patch for this request, `None` when the pod is not ours to change.
fn decide(request: &Value, opts: &InjectorOptions) -> Result<Option<Value>, String> {
    let kind = request.pointer("/kind/kind").and_then(Value::as_str);
    let group = request.pointer("/kind/group").and_then(Value::as_str);
    let operation = request.get("operation").and_then(Value::as_str);
    if kind != Some("Pod") || !matches!(group, Some("") | None) || operation != Some("CREATE") {
        return Ok(None);
    }
    let namespace = request
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !opts.namespaces.iter().any(|n| n == namespace) {
        return Ok(None);
    }
    let pod = request
        .get("object")
        .filter(|o| o.is_object())
        .ok_or("request.object is not a Pod object")?;
    let labels = match pod.pointer("/metadata/labels") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(labels)) => labels,
        Some(_) => return Err("metadata.labels is not a mapping".to_owned()),
    };
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    if label(LAUNCHER_LABEL.0) != Some(LAUNCHER_LABEL.1)
        || label(MANAGED_BY_LABEL) != Some(MANAGER)
        || label(SIDECAR_LABEL) != Some("true")
    {
        return Ok(None);
    }
    let pool = label(POOL_LABEL)
        .filter(|p| is_dns_label(p))
        .ok_or_else(|| format!("label {POOL_LABEL} is missing or not a DNS label"))?;

    let spec = pod
        .get("spec")
        .and_then(Value::as_object)
        .ok_or("spec is not a mapping")?;
    let list = |key: &str| -> Result<Option<&Vec<Value>>, String> {
        match spec.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(format!("spec.{key} is not a list")),
        }
    };
    let init = list("initContainers")?;
    let volumes = list("volumes")?;
    let containers = list("containers")?;
    let named = |items: Option<&Vec<Value>>| {
        items.is_some_and(|items| {
            items
                .iter()
                .any(|i| i.get("name").and_then(Value::as_str) == Some(PROXY_CONTAINER))
        })
    };
    if named(init) || named(containers) {
        // Already injected (a reinvocation): nothing to add.
        return Ok(None);
    }
    if named(volumes) {
        return Err(format!(
            "the pod already has a volume named {PROXY_CONTAINER}"
        ));
    }

    let container = proxy_container(opts);
    let volume = json!({
        "name": PROXY_CONTAINER,
        "secret": { "secretName": proxy_secret_for_pool(pool), "defaultMode": 0o444 },
    });
    Ok(Some(Value::Array(vec![
        append_op("/spec/initContainers", init.is_some(), container),
        append_op("/spec/volumes", volumes.is_some(), volume),
    ])))
}

fn append_op(path: &str, exists: bool, item: Value) -> Value {
    if exists {
        json!({ "op": "add", "path": format!("{path}/-"), "value": item })
    } else {
        json!({ "op": "add", "path": path, "value": [item] })
    }
}

/// A native sidecar (an init container that keeps running): it starts before the VM and the
/// kubelet stops it once the VM's containers exit, so the pod still completes when the guest
/// powers off (Kubernetes >= 1.29).
fn proxy_container(opts: &InjectorOptions) -> Value {
    let mut container = json!({
        "name": PROXY_CONTAINER,
        "image": opts.image,
        "restartPolicy": "Always",
        "args": [
            "proxy",
            "--secret-dir", PROXY_SECRET_DIR,
            "--listen", format!("0.0.0.0:{PROXY_PORT}"),
        ],
        "startupProbe": {
            "tcpSocket": { "port": PROXY_PORT },
            "periodSeconds": 1,
            "failureThreshold": 30,
        },
        "resources": {
            "requests": { "cpu": "10m", "memory": "16Mi" },
            "limits": { "memory": "64Mi" },
        },
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65534,
            "runAsGroup": 65534,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "volumeMounts": [
            { "name": PROXY_CONTAINER, "mountPath": PROXY_SECRET_DIR, "readOnly": true },
        ],
    });
    if let Some(policy) = &opts.pull_policy {
        container["imagePullPolicy"] = json!(policy);
    }
    container
}
