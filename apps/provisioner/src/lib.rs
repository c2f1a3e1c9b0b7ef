//! The controller: wires CircleCI demand and KubeVirt pools to the core's planner, one loop per
//! resource class, with health, metrics, hot reload and leader election around it.

pub mod app;
pub mod cli;
pub mod error;
pub mod events;
pub mod health;
pub mod http;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod sources;
pub mod status;
pub mod worker;

pub use error::Error;
