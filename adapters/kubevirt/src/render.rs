//! The objects applied for each class: a Secret with the start-up script and a
//! VirtualMachinePool. Pure, so `render` shows exactly what `ensure` applies.

use provisioner_core::{ClassConfig, Config};
use serde_json::{Map, Value, json};

use crate::error::KubeVirtError;
use crate::names::{
    CLASS_ANNOTATION, MANAGED_BY_LABEL, MANAGER, POOL_LABEL, is_dns_label, pool_name, secret_name,
};
use crate::options::{
    BUNDLE_VOLUME, DEFAULT_VM_NETWORK_CIDR, PROXY_ALLOW_KEY, PROXY_PORT, PROXY_TOKEN_KEY,
    PROXY_URL_KEY, SIDECAR_LABEL, VmOptions, proxy_secret_name,
};
use crate::userdata;

/// The Secret key KubeVirt reads user data from (it tries `userdata`, then `userData`).
pub(crate) const USERDATA_KEY: &str = "userdata";
/// The disk and volume the provisioner appends to every spec.
pub const CLOUD_INIT_VOLUME: &str = "cloudinitdisk";
/// Kubernetes refuses Secrets over 1 MiB.
const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// The VirtualMachinePool API the provisioner writes: KubeVirt >= 1.7. Older pools (`v1alpha1`,
/// KubeVirt 1.5/1.6) lack opportunistic scale-in and the VM finalizer this adapter relies on.
pub const POOL_API_VERSION: &str = "pool.kubevirt.io/v1beta1";

/// Every object for every class of `config`, in the order applied (each class's Secret, then
/// its pool), for KubeVirt >= 1.7 (`pool.kubevirt.io/v1beta1`), with the config's sidecar and runner bundle. A
/// new pool is created with `replicas: 0`; after that the provisioner re-applies the pool with
/// its live `replicas` and changes replicas only through `/scale`. Tokens and user data read
/// `<redacted>` unless `show_secrets`.
pub fn render_objects(
    config: &Config,
    namespace: &str,
    show_secrets: bool,
) -> Result<Vec<Value>, KubeVirtError> {
    render_objects_with(
        config,
        namespace,
        show_secrets,
        &VmOptions::from_config(config),
    )
}

/// `render_objects` for VMs built with `opts`; with the sidecar each class also gets its proxy
/// Secret (before its pool).
pub fn render_objects_with(
    config: &Config,
    namespace: &str,
    show_secrets: bool,
    opts: &VmOptions,
) -> Result<Vec<Value>, KubeVirtError> {
    let mut out = Vec::with_capacity(config.classes.len() * 3);
    for class in &config.classes {
        let mut objects = render_class_with(
            class,
            namespace,
            &config.circleci_api_addr,
            show_secrets,
            opts,
        )?;
        if let Some(pool) = objects.last_mut() {
            set_replicas(pool, 0);
        }
        out.append(&mut objects);
    }
    Ok(out)
}

/// `render_objects` as multi-document YAML.
pub fn render(
    config: &Config,
    namespace: &str,
    show_secrets: bool,
) -> Result<String, KubeVirtError> {
    render_with(
        config,
        namespace,
        show_secrets,
        &VmOptions::from_config(config),
    )
}

/// `render_objects_with` as multi-document YAML.
pub fn render_with(
    config: &Config,
    namespace: &str,
    show_secrets: bool,
    opts: &VmOptions,
) -> Result<String, KubeVirtError> {
    let objects = render_objects_with(config, namespace, show_secrets, opts)?;
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
    show_secrets: bool,
) -> Result<[Value; 2], KubeVirtError> {
    let objects = class_objects(
        class,
        namespace,
        api_addr,
        show_secrets,
        &VmOptions::default(),
    )?;
    Ok([objects.secret, objects.pool])
}

/// What one class renders to.
pub(crate) struct ClassObjects {
    pub(crate) secret: Value,
    pub(crate) proxy_secret: Option<Value>,
    pub(crate) pool: Value,
}

/// One class's objects for VMs built with `opts`: the user-data Secret, with the sidecar the
/// proxy Secret (the only object holding the class token), then the pool, the pool without
/// `spec.replicas`.
pub fn render_class_with(
    class: &ClassConfig,
    namespace: &str,
    api_addr: &str,
    show_secrets: bool,
    opts: &VmOptions,
) -> Result<Vec<Value>, KubeVirtError> {
    let objects = class_objects(class, namespace, api_addr, show_secrets, opts)?;
    Ok([
        Some(objects.secret),
        objects.proxy_secret,
        Some(objects.pool),
    ]
    .into_iter()
    .flatten()
    .collect())
}

pub(crate) fn class_objects(
    class: &ClassConfig,
    namespace: &str,
    api_addr: &str,
    show_secrets: bool,
    opts: &VmOptions,
) -> Result<ClassObjects, KubeVirtError> {
    if !is_dns_label(namespace) {
        return Err(KubeVirtError::InvalidNamespace(namespace.to_owned()));
    }
    let pool = pool_name(&class.name);
    let secret = secret_name(&class.name);
    let labels = json!({ MANAGED_BY_LABEL: MANAGER, POOL_LABEL: pool });
    let annotations = json!({ CLASS_ANNOTATION: class.name.as_str() });
    let mut template_labels = labels.clone();
    if opts.sidecar {
        template_labels[SIDECAR_LABEL] = json!("true");
    }

    let script = userdata::script(class, api_addr, opts, show_secrets)?;
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

    let mut proxy_secret = None;
    if opts.sidecar {
        let token = if show_secrets {
            class.token.expose()
        } else {
            userdata::REDACTED
        };
        proxy_secret = Some(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": proxy_secret_name(&class.name),
                "namespace": namespace,
                "labels": labels,
                "annotations": annotations,
            },
            "type": "Opaque",
            "stringData": {
                PROXY_TOKEN_KEY: token,
                PROXY_URL_KEY: api_addr,
                PROXY_ALLOW_KEY: vm_network_cidr(class)?,
            },
        }));
    }

    let vmi_spec = vmi_spec(class, &secret, opts)?;
    let pool_object = json!({
        "apiVersion": POOL_API_VERSION,
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
                "metadata": { "labels": template_labels, "annotations": annotations },
                "spec": {
                    // One job per VM: a guest that powers off stays off until deleted.
                    "runStrategy": "Once",
                    "template": {
                        // KubeVirt copies these onto the virt-launcher pod, where the
                        // webhook selects on them.
                        "metadata": { "labels": template_labels },
                        "spec": vmi_spec,
                    },
                },
            },
        },
    });
    Ok(ClassObjects {
        secret: secret_object,
        proxy_secret,
        pool: pool_object,
    })
}

pub(crate) fn set_replicas(pool: &mut Value, replicas: u32) {
    if let Some(spec) = pool.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("replicas".to_owned(), json!(replicas));
    }
}

/// The pod network of `spec` and whether its interface uses masquerade: `None` when the spec
/// sets no interfaces and no networks (the provisioner then adds masquerade on the pod network).
fn pod_network(spec: &Value) -> Option<(Option<&Value>, Option<&Value>)> {
    let networks = spec.get("networks");
    let interfaces = spec.pointer("/domain/devices/interfaces");
    if networks.is_none() && interfaces.is_none() {
        return None;
    }
    let network = networks
        .and_then(Value::as_array)
        .and_then(|n| n.iter().find(|n| n.get("pod").is_some()));
    let interface = network.and_then(|n| n.get("name")).and_then(|name| {
        interfaces
            .and_then(Value::as_array)
            .and_then(|i| i.iter().find(|i| i.get("name") == Some(name)))
    });
    Some((network, interface))
}

/// The guest-side network of the masquerade binding, which the proxy accepts connections from.
fn vm_network_cidr(class: &ClassConfig) -> Result<String, KubeVirtError> {
    let invalid = |path: &str, message: String| KubeVirtError::InvalidSpec {
        class: class.name.to_string(),
        path: path.to_owned(),
        message,
    };
    let network = match pod_network(&class.spec) {
        None => None,
        Some((Some(network), Some(interface))) if interface.get("masquerade").is_some() => {
            Some(network)
        }
        Some((None, _)) => {
            return Err(invalid(
                ".networks",
                "has no pod network; the sidecar needs the guest on the pod network with the masquerade binding (or set sidecar.enabled: false)".to_owned(),
            ));
        }
        Some((Some(network), interface)) => {
            let name = network.get("name").and_then(Value::as_str).unwrap_or("");
            let binding = interface
                .and_then(Value::as_object)
                .and_then(|i| {
                    ["bridge", "sriov", "slirp", "passt", "binding", "macvtap"]
                        .into_iter()
                        .find(|b| i.contains_key(*b))
                })
                .unwrap_or("no interface");
            return Err(invalid(
                ".domain.devices.interfaces",
                format!(
                    "the pod network {name:?} uses {binding}; with it the guest cannot reach the token-proxy sidecar in its pod. Use masquerade: {{}} (or set sidecar.enabled: false)"
                ),
            ));
        }
    };
    let cidr = network
        .and_then(|n| n.pointer("/pod/vmNetworkCIDR"))
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_VM_NETWORK_CIDR);
    match parse_v4_cidr(cidr) {
        Some(_) => Ok(cidr.to_owned()),
        None => Err(invalid(
            ".networks[].pod.vmNetworkCIDR",
            format!("{cidr:?} is not an IPv4 network like 10.0.2.0/24"),
        )),
    }
}

/// `a.b.c.d/n` as (network address, prefix length), for prefixes that leave room for a gateway
/// and a guest.
fn parse_v4_cidr(cidr: &str) -> Option<(std::net::Ipv4Addr, u8)> {
    let (addr, len) = cidr.split_once('/')?;
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if len > 30 {
        return None;
    }
    let mask = u32::MAX << (32 - u32::from(len));
    Some((std::net::Ipv4Addr::from(u32::from(addr) & mask), len))
}

/// Where the guest reaches the proxy: KubeVirt's masquerade gateway (the first address of the
/// VM network), which is the pod itself. Fails when the binding cannot reach the pod.
pub(crate) fn proxy_url(class: &ClassConfig) -> Result<String, KubeVirtError> {
    let cidr = vm_network_cidr(class)?;
    let gateway = parse_v4_cidr(&cidr)
        .map(|(net, _)| std::net::Ipv4Addr::from(u32::from(net) + 1))
        .unwrap_or(std::net::Ipv4Addr::new(10, 0, 2, 1));
    Ok(format!("http://{gateway}:{PROXY_PORT}"))
}

/// The class's VirtualMachineInstanceSpec with the cloud-init disk and volume (and the bundle
/// disk) appended, and pod networking when the spec sets none.
fn vmi_spec(class: &ClassConfig, secret: &str, opts: &VmOptions) -> Result<Value, KubeVirtError> {
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
        for reserved in [CLOUD_INIT_VOLUME, BUNDLE_VOLUME] {
            if volume.get("name").and_then(Value::as_str) == Some(reserved) {
                return Err(invalid(
                    &format!(".volumes[{i}].name"),
                    format!("{reserved:?} is reserved for a volume the provisioner adds"),
                ));
            }
        }
    }
    volumes.push(json!({ "name": CLOUD_INIT_VOLUME, "cloudInitNoCloud": { "secretRef": { "name": secret } } }));
    if let Some(bundle) = &opts.bundle {
        let mut disk = json!({ "image": bundle.image });
        if let Some(policy) = &bundle.pull_policy {
            disk["imagePullPolicy"] = json!(policy);
        }
        if let Some(pull_secret) = &bundle.pull_secret {
            disk["imagePullSecret"] = json!(pull_secret);
        }
        volumes.push(json!({ "name": BUNDLE_VOLUME, "containerDisk": disk }));
    }
    let volumes_snapshot: Vec<Value> = volumes.clone();

    let domain = object_at(root, "domain").map_err(|m| invalid(".domain", m))?;
    let devices = object_at(domain, "devices").map_err(|m| invalid(".domain.devices", m))?;
    let has_interfaces = devices.get("interfaces").is_some();
    let disks = array_at(devices, "disks").map_err(|m| invalid(".domain.devices.disks", m))?;
    for (i, disk) in disks.iter().enumerate() {
        let name = disk.get("name").and_then(Value::as_str);
        if name == Some(CLOUD_INIT_VOLUME) || name == Some(BUNDLE_VOLUME) {
            return Err(invalid(
                &format!(".domain.devices.disks[{i}].name"),
                format!(
                    "{:?} is reserved for a disk the provisioner adds",
                    name.unwrap_or_default()
                ),
            ));
        }
        if opts.bundle.is_some()
            && disk.get("serial").and_then(Value::as_str) == Some(BUNDLE_VOLUME)
        {
            return Err(invalid(
                &format!(".domain.devices.disks[{i}].serial"),
                format!("{BUNDLE_VOLUME:?} is the runner bundle disk's serial"),
            ));
        }
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
    if opts.bundle.is_some() {
        disks.push(json!({
            "name": BUNDLE_VOLUME,
            "serial": BUNDLE_VOLUME,
            "disk": { "bus": "virtio" },
        }));
    }

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
