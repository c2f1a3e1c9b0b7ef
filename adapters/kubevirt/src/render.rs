//! The objects applied for each class: a Secret with the start-up script and a
//! VirtualMachinePool. Pure, so `render` shows exactly what `ensure` applies.

use provisioner_core::{ClassConfig, Config};
use serde_json::{Map, Value, json};

use crate::error::KubeVirtError;
use crate::names::{
    CLASS_ANNOTATION, MANAGED_BY_LABEL, MANAGER, POOL_LABEL, is_dns_label, pool_name, secret_name,
};
use crate::userdata;

/// The Secret key KubeVirt reads user data from (it tries `userdata`, then `userData`).
pub(crate) const USERDATA_KEY: &str = "userdata";
/// The disk and volume the provisioner appends to every spec.
pub const CLOUD_INIT_VOLUME: &str = "cloudinitdisk";
/// Kubernetes refuses Secrets over 1 MiB.
const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// The `pool.kubevirt.io` version a cluster serves: `v1beta1` from KubeVirt 1.7, only
/// `v1alpha1` before. The pool spec is the same in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolVersion {
    V1beta1,
    V1alpha1,
}

impl PoolVersion {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V1beta1 => "v1beta1",
            Self::V1alpha1 => "v1alpha1",
        }
    }

    pub fn api_version(self) -> String {
        format!("pool.kubevirt.io/{}", self.as_str())
    }
}

/// Every object for every class of `config`, in the order applied (each class's Secret, then
/// its pool), for KubeVirt >= 1.7 (`v1beta1`). A new pool is created with `replicas: 0`; after
/// that the provisioner re-applies the pool with its live `replicas` and changes replicas only
/// through `/scale`. Tokens and user data read `<redacted>` unless `show_secrets`.
pub fn render_objects(
    config: &Config,
    namespace: &str,
    show_secrets: bool,
) -> Result<Vec<Value>, KubeVirtError> {
    let mut out = Vec::with_capacity(config.classes.len() * 2);
    for class in &config.classes {
        let [secret, mut pool] = render_class(
            class,
            namespace,
            &config.circleci_api_addr,
            PoolVersion::V1beta1,
            show_secrets,
        )?;
        set_replicas(&mut pool, 0);
        out.push(secret);
        out.push(pool);
    }
    Ok(out)
}

/// `render_objects` as multi-document YAML.
pub fn render(
    config: &Config,
    namespace: &str,
    show_secrets: bool,
) -> Result<String, KubeVirtError> {
    let objects = render_objects(config, namespace, show_secrets)?;
    let mut out = String::new();
    for object in &objects {
        out.push_str("---\n");
        out.push_str(
            &serde_saphyr::to_string(object).map_err(|e| KubeVirtError::Yaml(e.to_string()))?,
        );
    }
    Ok(out)
}

/// One class's `[Secret, VirtualMachinePool]`, the pool without `spec.replicas` (the fleet adds
/// the live value, `render_objects` the initial 0).
pub fn render_class(
    class: &ClassConfig,
    namespace: &str,
    api_addr: &str,
    version: PoolVersion,
    show_secrets: bool,
) -> Result<[Value; 2], KubeVirtError> {
    if !is_dns_label(namespace) {
        return Err(KubeVirtError::InvalidNamespace(namespace.to_owned()));
    }
    let pool = pool_name(&class.name);
    let secret = secret_name(&class.name);
    let labels = json!({ MANAGED_BY_LABEL: MANAGER, POOL_LABEL: pool });
    let annotations = json!({ CLASS_ANNOTATION: class.name.as_str() });

    let script = userdata::script(class, api_addr, show_secrets)?;
    if script.len() > MAX_SECRET_BYTES {
        return Err(KubeVirtError::InvalidValue {
            class: class.name.to_string(),
            field: "userData".to_owned(),
            message: format!(
                "the start-up script is {} bytes; a Secret holds at most 1 MiB",
                script.len()
            ),
        });
    }
    let secret_object = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": secret, "namespace": namespace, "labels": labels, "annotations": annotations },
        "type": "Opaque",
        // `stringData` keeps `render` readable for reviewers. Server-side apply tracks it as its
        // own field (the API server folds it into `data`), which only misbehaves when a key is
        // removed or renamed; this Secret has one fixed key.
        "stringData": { USERDATA_KEY: script },
    });

    let vmi_spec = vmi_spec(class, &secret)?;
    let pool_object = json!({
        "apiVersion": version.api_version(),
        "kind": "VirtualMachinePool",
        "metadata": { "name": pool, "namespace": namespace, "labels": labels, "annotations": annotations },
        "spec": {
            "selector": { "matchLabels": labels },
            // Lowering replicas never makes KubeVirt delete a VM: the provisioner deletes only
            // VMs that powered off by themselves.
            "scaleInStrategy": { "opportunistic": { "statePreservation": "Disabled" } },
            // A changed template reaches new VMs only; running ones are never restarted.
            "updateStrategy": { "opportunistic": {} },
            "virtualMachineTemplate": {
                "metadata": { "labels": labels, "annotations": annotations },
                "spec": {
                    // One job per VM: a guest that powers off stays off until deleted.
                    "runStrategy": "Once",
                    "template": {
                        "metadata": { "labels": labels },
                        "spec": vmi_spec,
                    },
                },
            },
        },
    });
    Ok([secret_object, pool_object])
}

pub(crate) fn set_replicas(pool: &mut Value, replicas: u32) {
    if let Some(spec) = pool.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("replicas".to_owned(), json!(replicas));
    }
}

/// The class's VirtualMachineInstanceSpec with the cloud-init disk and volume appended, and
/// pod networking when the spec sets none.
fn vmi_spec(class: &ClassConfig, secret: &str) -> Result<Value, KubeVirtError> {
    let invalid = |path: &str, message: String| KubeVirtError::InvalidSpec {
        class: class.name.to_string(),
        path: path.to_owned(),
        message,
    };
    let mut spec = class.spec.clone();
    let root = spec.as_object_mut().ok_or_else(|| {
        invalid(
            "",
            "must be a mapping (a VirtualMachineInstanceSpec)".to_owned(),
        )
    })?;

    let volumes = array_at(root, "volumes").map_err(|m| invalid(".volumes", m))?;
    for (i, volume) in volumes.iter().enumerate() {
        for kind in ["cloudInitNoCloud", "cloudInitConfigDrive"] {
            if volume.get(kind).is_some() {
                return Err(invalid(
                    &format!(".volumes[{i}]"),
                    format!(
                        "is a {kind} volume; the provisioner adds its own cloud-init volume, remove this one and put your script in userData"
                    ),
                ));
            }
        }
        if volume.get("name").and_then(Value::as_str) == Some(CLOUD_INIT_VOLUME) {
            return Err(invalid(
                &format!(".volumes[{i}].name"),
                format!(
                    "{CLOUD_INIT_VOLUME:?} is reserved for the provisioner's cloud-init volume"
                ),
            ));
        }
    }
    volumes.push(json!({ "name": CLOUD_INIT_VOLUME, "cloudInitNoCloud": { "secretRef": { "name": secret } } }));
    let volumes_snapshot: Vec<Value> = volumes.clone();

    let domain = object_at(root, "domain").map_err(|m| invalid(".domain", m))?;
    let devices = object_at(domain, "devices").map_err(|m| invalid(".domain.devices", m))?;
    let has_interfaces = devices.get("interfaces").is_some();
    let disks = array_at(devices, "disks").map_err(|m| invalid(".domain.devices.disks", m))?;
    if let Some(i) = disks
        .iter()
        .position(|d| d.get("name").and_then(Value::as_str) == Some(CLOUD_INIT_VOLUME))
    {
        return Err(invalid(
            &format!(".domain.devices.disks[{i}].name"),
            format!("{CLOUD_INIT_VOLUME:?} is reserved for the provisioner's cloud-init disk"),
        ));
    }
    for (i, mount) in class.empty_disk_mounts.iter().enumerate() {
        let disk = disks
            .iter()
            .find(|d| d.get("serial").and_then(Value::as_str) == Some(mount.serial.as_str()));
        let Some(disk) = disk else {
            return Err(invalid(
                ".domain.devices.disks",
                format!(
                    "emptyDiskMounts[{i}] names serial {:?}, but no disk has that serial",
                    mount.serial
                ),
            ));
        };
        let disk_name = disk.get("name").and_then(Value::as_str).unwrap_or("");
        // The guest finds it as /dev/disk/by-id/virtio-<serial>: a virtio disk (the default bus).
        let bus = disk
            .pointer("/disk/bus")
            .and_then(Value::as_str)
            .unwrap_or("virtio");
        if disk.get("disk").is_none() || bus != "virtio" {
            return Err(invalid(
                ".domain.devices.disks",
                format!(
                    "emptyDiskMounts[{i}] (serial {:?}) must name a virtio disk; disk {disk_name:?} is not",
                    mount.serial
                ),
            ));
        }
        let is_empty_disk = volumes_snapshot.iter().any(|v| {
            v.get("name").and_then(Value::as_str) == Some(disk_name) && v.get("emptyDisk").is_some()
        });
        if !is_empty_disk {
            return Err(invalid(
                ".volumes",
                format!(
                    "emptyDiskMounts[{i}] (serial {:?}) must name a disk backed by an emptyDisk volume; disk {disk_name:?} is not",
                    mount.serial
                ),
            ));
        }
    }
    disks.push(json!({ "name": CLOUD_INIT_VOLUME, "disk": { "bus": "virtio" } }));

    if !has_interfaces && root.get("networks").is_none() {
        let devices = object_at(
            object_at(root, "domain").map_err(|m| invalid(".domain", m))?,
            "devices",
        )
        .map_err(|m| invalid(".domain.devices", m))?;
        devices.insert(
            "interfaces".to_owned(),
            json!([{ "name": "default", "masquerade": {} }]),
        );
        root.insert(
            "networks".to_owned(),
            json!([{ "name": "default", "pod": {} }]),
        );
    }
    Ok(spec)
}

fn object_at<'a>(
    parent: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Map<String, Value>, String> {
    parent
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| "must be a mapping".to_owned())
}

fn array_at<'a>(
    parent: &'a mut Map<String, Value>,
    key: &str,
) -> Result<&'a mut Vec<Value>, String> {
    parent
        .entry(key.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| "must be a list".to_owned())
}
