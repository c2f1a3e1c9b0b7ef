//! Configuration: both documented shapes (0.1.0's single `resourceClass`, 0.1.2's
//! `resourceClasses` map with `resourceClassDefaults`), parsed from text the caller read, into
//! validated types. Parsing and validation live in `parse`; this module holds the result.

mod parse;

use std::fmt;

use serde::Serialize;

use crate::domain::{Duration, ResourceClass, Secret};
use crate::policy::Scaling;

pub use crate::domain::DEFAULT_API_ADDR;
pub use parse::{ConfigError, FieldError, load};

/// Runner Provisioner 0.1.0 (CircleCI's preview docs) polls every second.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// One configuration text and where it came from (a path, for error messages).
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

/// The text may hold tokens, so `Debug` shows only its name and size.
impl fmt::Debug for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .finish()
    }
}

/// Everything `load` reads. Each part is optional: Runner Provisioner 0.1.0 keeps everything in one
/// `config.yaml`; 0.1.2 splits non-secret `config.yaml` from `secrets.yaml`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConfigSources<'a> {
    pub config: Option<Source<'a>>,
    pub secrets: Option<Source<'a>>,
    /// The API token from `CIRCLE_TOKEN` or the Secret's `circle-token` key; overrides one in
    /// the files.
    pub circle_token: Option<&'a Secret>,
    /// The controller needs every token; the simulator and `render` do not.
    pub require_tokens: bool,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub circleci_api_addr: String,
    pub poll_interval: Duration,
    pub log_level: Option<String>,
    /// The API token for polling tasks (`circleToken`).
    pub circle_token: Option<Secret>,
    /// Sorted by name, names unique.
    pub classes: Vec<ClassConfig>,
    /// `sidecar.enabled` (default true): a token proxy next to each VM holds the class token,
    /// so nothing the guest can read does.
    pub sidecar: bool,
    /// `runnerBundle`: the containerDisk with the `circleci-runner` packages, when set.
    pub runner_bundle: Option<RunnerBundle>,
}

/// `runnerBundle`: a containerDisk attached to every VM so it installs the runner offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerBundle {
    /// `repository:tag` or `repository@sha256:...`.
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    pub pull_policy: Option<String>,
    /// A Secret in the VM namespace to pull the image with.
    pub pull_secret: Option<String>,
}

impl Config {
    pub fn class(&self, name: &ResourceClass) -> Option<&ClassConfig> {
        self.classes.iter().find(|c| &c.name == name)
    }
}

/// One resource class after defaults were merged.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassConfig {
    pub name: ResourceClass,
    /// The resource-class token the runner agent claims tasks with. Empty when tokens were not
    /// required and none was given.
    pub token: Secret,
    /// A Bash script run by cloud-init before the runner is installed.
    pub user_data: Option<Secret>,
    pub scaling: Scaling,
    pub runner: RunnerOptions,
    pub empty_disk_mounts: Vec<EmptyDiskMount>,
    /// The VirtualMachineInstanceSpec, opaque here; the KubeVirt adapter appends cloud-init.
    pub spec: serde_json::Value,
}

/// 0.1.2's `runner` block: options written into the runner agent's config.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunnerOptions {
    pub working_directory: Option<String>,
    pub task_agent_directory: Option<String>,
    /// Wraps the task agent; default steps jobs down to the unprivileged `circleci` user.
    pub command_prefix: Option<Vec<String>>,
    pub use_home_ssh_dir_for_checkout_keys: Option<bool>,
    pub max_run_time: Option<Duration>,
    pub grant_sudo: bool,
}

/// Filesystems KubeVirt emptyDisks may be formatted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Ext2,
    Ext3,
    Ext4,
    Xfs,
}

impl FsType {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ext2 => "ext2",
            Self::Ext3 => "ext3",
            Self::Ext4 => "ext4",
            Self::Xfs => "xfs",
        }
    }
}

/// An emptyDisk of the spec to format and mount at boot, found by its virtio serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDiskMount {
    /// Alphanumeric, at most 20 characters (virtio's limit).
    pub serial: String,
    /// Absolute path.
    pub path: String,
    pub fs_type: FsType,
}

/// The default VM documented for Runner Provisioner 0.1.0 (CircleCI's preview docs): Ubuntu 22.04 container disk, 2Gi, 1 CPU, virtio disk.
pub fn default_spec() -> serde_json::Value {
    serde_json::json!({
        "domain": {
            "resources": { "requests": { "memory": "2Gi", "cpu": "1" } },
            "devices": { "disks": [ { "name": "disk", "disk": { "bus": "virtio" } } ] }
        },
        "volumes": [
            { "name": "disk", "containerDisk": { "image": "quay.io/containerdisks/ubuntu:22.04" } }
        ]
    })
}
