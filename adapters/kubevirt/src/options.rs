//! Deployment-wide switches for how every VM is built: the token-proxy sidecar and the runner
//! bundle disk. They come from the chart (`sidecar.enabled`, `runnerBundle.*`), not from a class.

use provisioner_core::config::RunnerBundle;
use provisioner_core::{Config, ResourceClass};

use crate::names::pool_name;

/// The port the token proxy listens on inside the `virt-launcher` pod.
pub const PROXY_PORT: u16 = 8484;
/// What the guest's runner config holds instead of the class token when the sidecar is on. The
/// runner needs some `auth_token`; the proxy replaces it on the claim call.
pub const PROXY_PLACEHOLDER_TOKEN: &str = "replaced-by-the-token-proxy";
/// The label on the VM and VMI templates (and so on the `virt-launcher` pod) that asks the
/// admission webhook for a proxy container. Pools rendered without the sidecar lack it.
pub const SIDECAR_LABEL: &str = "runner-provisioner/token-proxy";
/// Keys of the per-pool proxy Secret, which only the proxy container mounts.
pub const PROXY_TOKEN_KEY: &str = "token";
pub const PROXY_URL_KEY: &str = "url";
pub const PROXY_ALLOW_KEY: &str = "allow-from";
/// KubeVirt's masquerade network when the pod network sets no `vmNetworkCIDR`.
pub const DEFAULT_VM_NETWORK_CIDR: &str = "10.0.2.0/24";

/// The disk and volume name of the runner bundle, and the virtio serial the guest finds it by
/// (`/dev/disk/by-id/virtio-runnerbundle`).
pub const BUNDLE_VOLUME: &str = "runnerbundle";

/// How VMs are built beyond each class's own settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmOptions {
    /// The token-proxy sidecar: on, the class token never enters the guest.
    pub sidecar: bool,
    /// The runner bundle containerDisk attached to every VM, when configured.
    pub bundle: Option<RunnerBundle>,
}

impl VmOptions {
    /// What the configuration asks for (`sidecar`, `runnerBundle`).
    pub fn from_config(config: &Config) -> Self {
        Self {
            sidecar: config.sidecar,
            bundle: config.runner_bundle.clone(),
        }
    }
}

/// The per-pool Secret the proxy container mounts: the class token and where to forward.
pub fn proxy_secret_name(class: &ResourceClass) -> String {
    proxy_secret_for_pool(&pool_name(class))
}

/// The same name from a pool name, as the webhook reads it from a pod's pool label.
pub fn proxy_secret_for_pool(pool: &str) -> String {
    format!("{pool}-proxy")
}
