//! The production `VmFleet`: each CircleCI resource class becomes a KubeVirt
//! `VirtualMachinePool` of one-job VMs plus a Secret holding their cloud-init start-up script.
//!
//! Rendering (`render`, `render_objects`) is pure, so the `render` command shows exactly what
//! `ensure` applies without a cluster. `KubeVirtFleet` carries plans out over the Kubernetes API
//! and never deletes a VM that is not finished when re-read.

mod error;
mod fleet;
mod inject;
mod names;
mod options;
mod render;
mod status;
mod userdata;

pub use error::KubeVirtError;
pub use fleet::{
    DEFAULT_FIELD_MANAGER, DRAIN_ANNOTATION, FleetOptions, KubeVirtFleet, POOL_FINALIZER,
};
pub use inject::{InjectorOptions, PROXY_CONTAINER, PROXY_SECRET_DIR, review};
pub use names::{CLASS_ANNOTATION, MANAGED_BY_LABEL, MANAGER, POOL_LABEL, pool_name, secret_name};
pub use options::{
    BUNDLE_VOLUME, BundleDisk, PROXY_ALLOW_KEY, PROXY_PLACEHOLDER_TOKEN, PROXY_PORT,
    PROXY_TOKEN_KEY, PROXY_URL_KEY, SIDECAR_LABEL, VmOptions, proxy_secret_name,
};
pub use render::{
    CLOUD_INIT_VOLUME, PoolVersion, USERDATA_KEY, render, render_class, render_class_with,
    render_objects, render_objects_with, render_with,
};
pub use status::vm_phase;
pub use userdata::{
    DEFAULT_COMMAND_PREFIX, DEFAULT_TASK_AGENT_DIRECTORY, DEFAULT_WORKING_DIRECTORY, user_data,
    user_data_with,
};

/// The start-up script held by a rendered Secret (its `stringData.userdata`).
pub fn secret_user_data(secret: &serde_json::Value) -> Option<String> {
    Some(
        secret
            .get("stringData")?
            .get(USERDATA_KEY)?
            .as_str()?
            .to_owned(),
    )
}
