//! CircleCI's runner API as the provisioner's `DemandSource`: how many tasks of a resource class
//! are queued (`unclaimed_task_count`) and running (`running_runner_tasks`).
//!
//! One [`CircleCiClient`] serves every class of a process: it holds the HTTP connection pool,
//! a request budget shared by all classes (so many classes do not hammer CircleCI), and
//! back-off state, so a failing class is refused quickly instead of being retried every poll.

mod backoff;
mod budget;
mod client;
mod error;
mod options;
pub mod parse;

pub use client::{CircleCiClient, TasksReport, tasks_command};
pub use error::CircleCiError;
pub use options::{
    ClientOptions, DEFAULT_API_ADDR, DEFAULT_REQUESTS_PER_SECOND, Endpoint, Observer, StatusClass,
    WaitObserver,
};
pub use parse::{MAX_COUNT, parse_count};
