//! Logs on stderr: JSON by default (preview 0.1.0's fields at the top level of each line), text on
//! request. The level can change at runtime when a reloaded config changes `logLevel`.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

/// Changes the level after start-up. `RUST_LOG` and `--log-level` pin it; otherwise the
/// config's `logLevel` applies.
#[derive(Debug, Clone)]
pub struct LogHandle {
    handle: reload::Handle<EnvFilter, Registry>,
    pinned: bool,
}

impl LogHandle {
    /// Apply the config's `logLevel` unless the environment or a flag pinned the level.
    pub fn set_config_level(&self, level: Option<&str>) {
        if self.pinned {
            return;
        }
        let filter = filter_for(level.unwrap_or("info"));
        if let Err(e) = self.handle.reload(filter) {
            tracing::warn!(error = %e, "cannot change the log level");
        }
    }
}

fn filter_for(level: &str) -> EnvFilter {
    EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"))
}

pub fn init(format: LogFormat, flag_level: Option<&str>) -> LogHandle {
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let pinned = rust_log.is_some() || flag_level.is_some();
    let directives = rust_log.as_deref().or(flag_level).unwrap_or("info");
    let bad_directives = EnvFilter::try_new(directives).is_err();
    let (filter, handle) = reload::Layer::new(filter_for(directives));
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
    if bad_directives {
        tracing::warn!(level = directives, "unknown log level; using info");
    }
    LogHandle { handle, pinned }
}
