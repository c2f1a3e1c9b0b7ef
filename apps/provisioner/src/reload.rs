//! Hot reload: watch the directories holding the config and secrets (Kubernetes updates a
//! mounted ConfigMap or Secret by swapping a `..data` symlink, which some watchers miss on the
//! file itself), and re-check the files' contents every poll interval as a fallback. A valid
//! change is published; an invalid one is logged and counted, and the last good config stays.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use provisioner_core::{Config, Secret};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::app::Context;
use crate::logging::LogHandle;
use crate::sources::{ConfigPaths, Overrides};

/// Everything needed to re-read the configuration.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    pub paths: ConfigPaths,
    pub env_token: Option<Secret>,
    pub overrides: Overrides,
    pub require_tokens: bool,
}

impl ReloadSource {
    /// Read, parse and override. The fingerprint identifies the inputs.
    pub fn load(&self) -> Result<(Config, u64), crate::Error> {
        let raw = self.paths.read(self.env_token.as_ref())?;
        let config = raw.load(self.require_tokens)?;
        Ok((self.overrides.apply(config), raw.fingerprint()))
    }
}

/// Files settle within this time after the first change notice (a symlink swap is several
/// events).
const SETTLE: Duration = Duration::from_millis(100);

/// Watch for changes until `stop` fires; publish each valid new config on `tx`.
pub async fn watch_config(
    source: ReloadSource,
    mut fingerprint: u64,
    tx: watch::Sender<Arc<Config>>,
    ctx: Arc<Context>,
    log: Option<LogHandle>,
    mut stop: watch::Receiver<bool>,
) {
    let (notice_tx, mut notices) = mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = notice_tx.send(());
        }
    });
    let _watcher = match watcher {
        Ok(mut w) => {
            // A directory that does not exist (the default secrets mount of a seed-shaped
            // install) is covered by the periodic check.
            for dir in source.paths.watch_dirs().into_iter().filter(|d| d.is_dir()) {
                if let Err(e) = w.watch(&dir, RecursiveMode::NonRecursive) {
                    warn!(path = %dir.display(), error = %e, "cannot watch for config changes; checking periodically");
                }
            }
            Some(w)
        }
        Err(e) => {
            warn!(error = %e, "no file watcher; checking config files periodically");
            None
        }
    };
    let mut last_read_error: Option<String> = None;
    loop {
        let interval = tx.borrow().poll_interval.as_std();
        tokio::select! {
            notice = notices.recv() => {
                if notice.is_some() {
                    tokio::time::sleep(SETTLE).await;
                    while notices.try_recv().is_ok() {}
                }
            }
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let raw = match source.paths.read(source.env_token.as_ref()) {
            Ok(raw) => raw,
            Err(e) => {
                let text = e.to_string();
                if last_read_error.as_deref() != Some(&text) {
                    error!(error = %text, "cannot read the configuration; keeping the last good one");
                    ctx.metrics.reload_failed();
                    last_read_error = Some(text);
                }
                continue;
            }
        };
        last_read_error = None;
        let new_fingerprint = raw.fingerprint();
        if new_fingerprint == fingerprint {
            continue;
        }
        fingerprint = new_fingerprint;
        match raw.load(source.require_tokens) {
            Ok(config) => {
                let config = source.overrides.apply(config);
                if let Some(log) = &log {
                    log.set_config_level(config.log_level.as_deref());
                }
                ctx.metrics
                    .config_applied(config.classes.len(), unix_seconds(), true);
                info!(
                    classes = config.classes.len(),
                    poll_interval = %config.poll_interval,
                    "configuration reloaded"
                );
                tx.send_replace(Arc::new(config));
            }
            Err(e) => {
                ctx.metrics.reload_failed();
                error!(error = %e, "configuration change rejected; keeping the last good one");
            }
        }
    }
}

pub fn unix_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
