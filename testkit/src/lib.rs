//! Test fixtures shared by the KubeVirt adapter's and the controller's test suites (a dev-only
//! crate, never published).
//!
//! [`FakeKube`] is a local HTTP server speaking the Kubernetes API's wire format for what the
//! provisioner touches: pool discovery, VirtualMachinePools (server-side apply, merge patch,
//! `/scale`), their Secrets, VirtualMachines (list, watch, get, delete with preconditions, JSON
//! patch), Events, one Lease and `/version`. It records every request and can inject failures.

mod fake_kube;

pub use fake_kube::{FakeKube, NS, Recorded, State};
