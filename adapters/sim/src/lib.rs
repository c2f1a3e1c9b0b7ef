//! The simulator: a CircleCI queue and a KubeVirt VM pool per resource class on a virtual
//! clock, driven by the provisioner's own planner through the core's ports.
//!
//! ```no_run
//! use provisioner_sim::{PolicyChoice, PolicyParams, SimOptions, SyntheticOptions, Trace, run};
//! let trace = Trace::synthetic(&SyntheticOptions::default())?;
//! let policy = PolicyChoice::reference("circleci-0.1.2", &PolicyParams::default())?;
//! let report = run(&trace, &SimOptions::default(), &policy)?;
//! println!("p95 wait {}s, {} VM-hours", report.wait_p95_s, report.vm_hours);
//! # Ok::<(), provisioner_sim::SimError>(())
//! ```

pub mod advise;
pub mod cluster;
mod engine;
mod estimate;
mod options;
pub mod phases;
mod policies;
mod report;
mod rng;
pub mod scenarios;
mod shadow;
mod trace;
mod world;

pub use engine::run;
pub use estimate::ClassEstimate;
pub use options::{BootTime, Faults, PolicyChoice, Scalings, SimOptions};
pub use policies::{POLICY_NAMES, PolicyParams};
pub use report::{ClassReport, FaultCounts, Sample, SimReport, WorstWait};
pub use shadow::ShadowFleet;
pub use trace::{Job, SyntheticOptions, Trace};

/// Why a simulation could not run. (Broken invariants are not errors: they are in the report.)
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("trace line {line}, column {column}: {message}")]
    Trace {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    /// A bad option or flag value; the message names it.
    #[error("{0}")]
    Option(String),
    #[error(transparent)]
    Config(#[from] provisioner_core::config::ConfigError),
    #[error("simulator bug: {0}")]
    Internal(String),
}
