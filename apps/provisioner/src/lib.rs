//! The controller: wires CircleCI demand and KubeVirt pools to the core's planner, one loop per
//! resource class, with health, metrics, hot reload and leader election around it.
//!
//! `cli` defines the flags, `run` wires the controller (its `supervisor` keeps one `worker` per
//! class), `commands` holds the one-shot commands; every part shares a `context::Context`.

pub mod cli;
pub mod cluster;
pub mod commands;
pub mod context;
pub mod error;
pub mod events;
pub mod health;
pub mod http;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod reload;
pub mod run;
pub mod sidecar;
pub mod sources;
pub mod status;
pub mod supervisor;
pub mod worker;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Command, Output};
use logging::LogFormat;

pub use error::Error;

/// Parse the command line, run the command, and map failure to a non-zero exit with the error
/// logged (JSON or text, as asked).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run(cli.run));
    // `run` logs JSON for log collectors; the one-shot commands speak to a person unless asked
    // for JSON.
    let (log, output) = match &command {
        Command::Run(a) => (a.log.clone(), Output::Json),
        Command::Validate(a) => (a.log.clone(), a.output),
        Command::Tasks(a) => (a.log.clone(), a.output),
        Command::Render(a) => (a.log.clone(), a.output),
        Command::ScaleToZero(a) => (a.log.clone(), a.output),
        Command::Status(a) => (a.log.clone(), a.output),
        Command::Proxy(a) => (a.log.clone(), Output::Json),
    };
    let format = log.log_format.unwrap_or(match output {
        Output::Json => LogFormat::Json,
        Output::Text => LogFormat::Text,
    });
    let log_handle = logging::init(format, log.log_level.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Run(args) => run::run(args, log_handle).await,
            Command::Validate(args) => commands::validate(&args),
            Command::Tasks(args) => commands::tasks(&args).await,
            Command::Render(args) => commands::render(&args),
            Command::ScaleToZero(args) => commands::scale_to_zero(&args).await,
            Command::Status(args) => status::run(&args).await,
            Command::Proxy(args) => commands::proxy(&args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match output {
                Output::Json => tracing::error!(error = %e, "{}", e.headline()),
                Output::Text => eprint!("{}", plain_error(&e)),
            }
            ExitCode::FAILURE
        }
    }
}

/// An error for a person: a configuration's problems one per line
/// (`file:line:col: field: message`), anything else on one line.
pub fn plain_error(e: &Error) -> String {
    match e {
        Error::Config(config) => config.errors.iter().map(|f| format!("{f}\n")).collect(),
        other => format!("error: {}: {other}\n", other.headline()),
    }
}
