//! The token-proxy sidecar: the proxy that runs next to each runner VM, and the admission
//! webhook (served by every replica) that puts it there.

pub mod proxy;
pub mod webhook;
