//! The crate's one error type. Messages name the file, field or address at fault and never
//! carry a token (the adapters' errors redact theirs).

use std::net::SocketAddr;

use provisioner_circleci::CircleCiError;
use provisioner_core::config::ConfigError;
use provisioner_kubevirt::KubeVirtError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no Kubernetes cluster reachable: {0}")]
    Cluster(String),
    #[error("leader election on Lease {lease}: {message}")]
    Lease { lease: String, message: String },
    #[error("CircleCI: {0}")]
    CircleCi(#[from] CircleCiError),
    #[error("KubeVirt: {0}")]
    KubeVirt(#[from] KubeVirtError),
    /// The token proxy or the sidecar webhook cannot start: its Secret, certificate or flags.
    #[error("{what}: {source}")]
    Sidecar {
        what: &'static str,
        source: std::io::Error,
    },
    /// `tasks` could not write its report as JSON.
    #[error("cannot write the task counts as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// `status` could not get or read the controller's metrics.
    #[error("cannot read the controller's metrics from {source_name}: {message}")]
    Metrics {
        source_name: String,
        message: String,
    },
}

impl Error {
    /// The log message a failed command ends with; the error itself goes in its `error` field.
    pub fn headline(&self) -> &'static str {
        match self {
            Self::Config(_) | Self::Read { .. } => "invalid configuration",
            Self::Listen { .. } => "cannot serve health and metrics",
            Self::Cluster(_) | Self::KubeVirt(_) => "kubernetes error",
            Self::Lease { .. } => "leader election failed",
            Self::CircleCi(_) | Self::Json(_) => "failed to get tasks",
            Self::Metrics { .. } => "cannot read status",
            Self::Sidecar { .. } => "cannot run the token-proxy sidecar",
        }
    }
}
