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
pub use fleet::{DRAIN_ANNOTATION, FleetOptions, KubeVirtFleet};
pub use inject::{InjectorOptions, PROXY_CONTAINER, PROXY_SECRET_DIR, review};
pub use names::{MANAGED_BY_LABEL, MANAGER, POOL_LABEL, pool_name, secret_name};
pub use options::{
    BUNDLE_VOLUME, PROXY_PLACEHOLDER_TOKEN, PROXY_PORT, SIDECAR_LABEL, VmOptions, proxy_secret_name,
};
pub use render::{
    CLOUD_INIT_VOLUME, POOL_API_VERSION, render, render_class, render_class_with, render_objects,
    render_objects_with, render_with,
};
pub use userdata::{user_data, user_data_with};

use render::USERDATA_KEY;

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
