//! The crate's one error type. Messages name the file, field or address at fault and never
//! carry a token.

use std::net::SocketAddr;

use provisioner_core::config::ConfigError;

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
    CircleCi(String),
    #[error("KubeVirt: {0}")]
    KubeVirt(String),
    #[error("cannot read the controller's metrics from {source_name}: {message}")]
    Metrics {
        source_name: String,
        message: String,
    },
}
