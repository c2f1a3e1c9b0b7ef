//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager). Only the leader
//! polls and writes; standbys wait. A released lease is taken over at its expiry, so within
//! `LEASE_SECONDS` of a leader's loss.

use std::time::Duration;

use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::Error;

/// Lease validity after the last renewal.
const LEASE_SECONDS: u64 = 10;
/// The holder renews this long before expiry.
const GRACE_SECONDS: u64 = 3;

#[derive(Debug)]
pub struct Leadership {
    changes: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
    lease: String,
}

impl Leadership {
    pub async fn start(
        client: kube::Client,
        namespace: &str,
        lease: &str,
        identity: &str,
    ) -> Result<Self, Error> {
        let manager = LeaseManagerBuilder::new(client, lease)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(LEASE_SECONDS)
            .with_grace(GRACE_SECONDS)
            .build()
            .await
            .map_err(|e| Error::Lease {
                lease: lease.to_owned(),
                message: e.to_string(),
            })?;
        let (changes, task) = manager.watch().await;
        info!(lease, identity, namespace, "leader election started");
        Ok(Self {
            changes,
            task,
            lease: lease.to_owned(),
        })
    }

    pub fn is_leader(&self) -> bool {
        *self.changes.borrow()
    }

    /// Wait for the next change of leadership.
    pub async fn changed(&mut self) -> Result<bool, Error> {
        self.changes.changed().await.map_err(|_| Error::Lease {
            lease: self.lease.clone(),
            message: "the lease manager stopped".to_owned(),
        })?;
        Ok(*self.changes.borrow_and_update())
    }

    /// Give the lease up so a standby can take over, waiting a bounded time for it.
    pub async fn release(self) {
        let Self {
            changes,
            task,
            lease,
        } = self;
        drop(changes);
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Ok(_))) => info!(lease, "lease released"),
            Ok(Ok(Err(e))) => {
                warn!(lease, error = %e, "could not release the lease; it expires by itself")
            }
            Ok(Err(e)) => warn!(lease, error = %e, "lease task failed"),
            Err(_) => warn!(lease, "releasing the lease timed out; it expires by itself"),
        }
    }
}
