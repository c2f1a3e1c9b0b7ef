//! The provisioner's core: domain types, the two ports, the scaling policy, the planner and the
//! configuration. No I/O and no async runtime: deciding is pure, adapters carry plans out.

pub mod config;
pub mod cron;
pub mod domain;
pub mod estimate;
pub mod forecast;
pub mod healing;
pub mod naming;
pub mod planner;
pub mod policy;
pub mod ports;

pub use config::{ClassConfig, Config};
pub use domain::{ApiUrl, Duration, InvalidValue, Replicas, ResourceClass, Secret, Timestamp};
pub use healing::{Breaker, Healing, Reclaim, Verdict, judge};
pub use naming::vm_name;
pub use planner::{Decision, FleetCounts, Plan, PlannerState, VmRef, decide, plan_for};
pub use policy::{Controls, Scaling};
pub use ports::{
    ApplyReport, Demand, DemandSource, ErrorKind, Failing, FailingKind, FleetState, PortError, Vm,
    VmFleet, VmId, VmPhase,
};
