//! Shared test helpers: running the built binary ([`process`]). The fake Kubernetes API server
//! is `provisioner_testkit::FakeKube`, shared with the KubeVirt adapter's tests.
#![allow(dead_code)]

pub mod process;
