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

use crate::context::Context;
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
    fingerprint: u64,
    tx: watch::Sender<Arc<Config>>,
    ctx: Arc<Context>,
    log: Option<LogHandle>,
    stop: watch::Receiver<bool>,
) {
    let (notice_tx, notices) = mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = notice_tx.send(());
        }
    });
    let _watcher = match watcher {
        Ok(mut w) => {
            // A directory that does not exist (the default secrets mount of a 0.1.0-shaped
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
    reload_loop(source, fingerprint, tx, ctx, log, stop, notices).await;
}

/// Re-read on each of the watcher's `notices` and every poll interval. Once the notices end
/// (no watcher) only the periodic check is left.
async fn reload_loop(
    source: ReloadSource,
    mut fingerprint: u64,
    tx: watch::Sender<Arc<Config>>,
    ctx: Arc<Context>,
    log: Option<LogHandle>,
    mut stop: watch::Receiver<bool>,
    mut notices: mpsc::UnboundedReceiver<()>,
) {
    let mut watching = true;
    let mut last_read_error: Option<String> = None;
    loop {
        let interval = tx.borrow().poll_interval.as_std();
        tokio::select! {
            notice = notices.recv(), if watching => {
                if notice.is_some() {
                    tokio::time::sleep(SETTLE).await;
                    while notices.try_recv().is_ok() {}
                } else {
                    watching = false;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::ConfigPaths;

    /// CPU time this thread has used (Linux).
    #[cfg(target_os = "linux")]
    fn thread_cpu() -> Duration {
        let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
        let nanos: u64 = text
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("cpu time");
        Duration::from_nanos(nanos)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn without_a_watcher_the_loop_idles_until_the_periodic_check() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, "x: 1").expect("write config");
        let source = ReloadSource {
            paths: ConfigPaths::new(config, None, "/nonexistent/secrets.yaml"),
            env_token: None,
            overrides: Overrides::default(),
            require_tokens: false,
        };
        let fingerprint = source.paths.read(None).expect("read").fingerprint();
        let (tx, _rx) = watch::channel(Arc::new(Config {
            circleci_api_addr: "http://127.0.0.1:9".to_owned(),
            poll_interval: provisioner_core::Duration::parse("1h").expect("duration"),
            log_level: None,
            circle_token: None,
            classes: Vec::new(),
            sidecar: false,
            runner_bundle: None,
        }));
        let ctx = Arc::new(Context::new(Duration::from_secs(60), None));
        let (stop_tx, stop) = watch::channel(false);
        // The watcher could not be made: its notices end at once.
        let (_, notices) = mpsc::unbounded_channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let before = thread_cpu();
        runtime.block_on(async {
            let stopper = async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                stop_tx.send_replace(true);
            };
            tokio::join!(
                reload_loop(source, fingerprint, tx, ctx, None, stop, notices),
                stopper
            );
        });
        let used = thread_cpu().saturating_sub(before);
        assert!(
            used < Duration::from_millis(50),
            "the loop spun for {used:?} of CPU in 500ms"
        );
    }
}
