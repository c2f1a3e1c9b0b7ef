//! `provisioner run`: load the config, reach the cluster, serve health and metrics, take the
//! lease, and hand the classes to the supervisor until told to stop.

use std::sync::Arc;

use provisioner_kubevirt::InjectorOptions;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::Error;
use crate::cli::RunArgs;
use crate::context::Context;
use crate::events::Events;
use crate::http::{self, Ports};
use crate::leader::Leadership;
use crate::logging::LogHandle;
use crate::reload::{self, ReloadSource};
use crate::sidecar::webhook::{self, CertReloader};
use crate::sources::{self, Overrides};
use crate::supervisor::{PoolSource, Supervisor};

/// This replica's name for leader election and events.
fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| format!("provisioner-{}", std::process::id()))
}

/// Resolves on SIGTERM or Ctrl-C. Listens from the call on, so a signal during start-up
/// (connecting, taking the lease) is not the default instant exit but an orderly stop once
/// started.
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let listeners = signal(SignalKind::terminate())
            .and_then(|term| Ok((term, signal(SignalKind::interrupt())?)));
        async move {
            match listeners {
                Ok((mut term, mut interrupt)) => tokio::select! {
                    _ = term.recv() => info!(signal = "SIGTERM", "shutting down"),
                    _ = interrupt.recv() => info!(signal = "SIGINT", "shutting down"),
                },
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        info!(signal = "SIGINT", "shutting down");
    }
}

async fn leader_changed(leadership: &mut Option<Leadership>) -> Result<bool, Error> {
    match leadership {
        Some(l) => l.changed().await,
        None => std::future::pending().await,
    }
}

/// Leader election when asked for and there is a cluster; `None`: this replica polls.
async fn join_election(
    client: Option<&kube::Client>,
    args: &RunArgs,
    namespace: &str,
    identity: &str,
) -> Result<Option<Leadership>, Error> {
    Ok(match (client, args.leader_election) {
        (Some(client), true) => {
            Some(Leadership::start(client.clone(), namespace, &args.lease_name, identity).await?)
        }
        (None, true) => {
            info!("dry run: leader election is off, this replica polls");
            None
        }
        _ => None,
    })
}

/// The sidecar injector webhook when `--webhook-cert-dir` is set: the certificate must load and
/// the port bind now, so a broken setup fails the start instead of every VM's pod later.
async fn start_webhook(
    args: &RunArgs,
    namespace: &str,
    mut stopped: watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, Error> {
    let Some(dir) = &args.webhook_cert_dir else {
        return Ok(None);
    };
    let sidecar = |source| Error::Sidecar {
        what: "sidecar webhook",
        source,
    };
    let image = args.sidecar_image.clone().ok_or_else(|| {
        sidecar(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "--sidecar-image (SIDECAR_IMAGE) is required with --webhook-cert-dir: the proxy runs the controller's own image",
        ))
    })?;
    let certs = Arc::new(CertReloader::new(dir).map_err(sidecar)?);
    let addr = std::net::SocketAddr::new(args.bind_address, args.webhook_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    let opts = Arc::new(InjectorOptions {
        image,
        pull_policy: args.sidecar_image_pull_policy.clone(),
        namespaces: vec![namespace.to_owned()],
    });
    let bound = listener.local_addr().unwrap_or(addr);
    info!(webhook_addr = %bound, namespace = %namespace, "serving the sidecar injector webhook");
    Ok(Some(tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = webhook::serve(listener, certs, opts, stop).await {
            error!(error = %e, "the sidecar webhook stopped");
        }
    })))
}

/// `provisioner run`.
pub async fn run(args: RunArgs, log: LogHandle) -> Result<(), Error> {
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let source = ReloadSource {
        paths: args.config.paths(),
        env_token: sources::env_token(),
        overrides: Overrides {
            api_addr: args.api_addr.clone(),
            poll_interval: args.poll_interval,
        },
        require_tokens: true,
    };
    let (config, fingerprint) = source.load()?;
    log.set_config_level(config.log_level.as_deref());
    let namespace = args.namespace();
    info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %source.paths.config.display(),
        classes = config.classes.len(),
        poll_interval = %config.poll_interval,
        circleci_api_addr = %config.circleci_api_addr,
        namespace = %namespace,
        dry_run = args.dry_run,
        "configuration loaded"
    );

    let (pools, client) = PoolSource::start(args.dry_run, &namespace, &config).await?;

    let identity = identity();
    let events = client
        .as_ref()
        .map(|c| Events::new(c.clone(), namespace.clone(), Some(identity.clone())));
    let mut context = Context::new(args.unready_after.as_std(), events);
    context.requests_per_second = args.api_requests_per_second;
    let ctx = Arc::new(context);
    ctx.metrics
        .config_applied(config.classes.len(), reload::unix_seconds(), false);
    ctx.health.set_config_loaded();

    let bound = http::serve(
        ctx.clone(),
        args.bind_address,
        Ports {
            ready: args.ready_port,
            live: args.live_port,
            metrics: args.metrics_port,
        },
    )
    .await?;
    info!(ready_addr = %bound.ready, live_addr = %bound.live, metrics_addr = %bound.metrics, "listening");
    // Every replica serves the sidecar webhook, standbys included: pods are created whoever leads.
    let (webhook_stop, webhook_stopped) = watch::channel(false);
    let webhook = start_webhook(&args, &namespace, webhook_stopped).await?;

    let mut leadership = join_election(client.as_ref(), &args, &namespace, &identity).await?;
    let mut leading = leadership.as_ref().is_none_or(Leadership::is_leader);
    ctx.metrics.set_leader(leading);
    if !leading {
        info!(lease = %args.lease_name, "standby: waiting for the lease");
    }

    let mut supervisor = Supervisor::new(ctx.clone(), pools);
    let (config_tx, mut config_rx) = watch::channel(Arc::new(config));
    let (stop_tx, stop_rx) = watch::channel(false);
    let reloader = tokio::spawn(reload::watch_config(
        source,
        fingerprint,
        config_tx,
        ctx.clone(),
        Some(log),
        stop_rx,
    ));
    if leading {
        let current = config_rx.borrow_and_update().clone();
        supervisor.reconcile(&current).await?;
    }

    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            changed = config_rx.changed() => {
                if changed.is_err() {
                    break Ok(());
                }
                let current = config_rx.borrow_and_update().clone();
                if leading && let Err(e) = supervisor.reconcile(&current).await {
                    error!(error = %e, "cannot apply the new configuration");
                }
            }
            change = leader_changed(&mut leadership) => match change {
                Ok(true) => {
                    leading = true;
                    ctx.metrics.set_leader(true);
                    info!(lease = %args.lease_name, "became leader: starting loops");
                    let current = config_rx.borrow().clone();
                    if let Err(e) = supervisor.reconcile(&current).await {
                        error!(error = %e, "cannot start loops");
                    }
                }
                Ok(false) => {
                    leading = false;
                    ctx.metrics.set_leader(false);
                    warn!(lease = %args.lease_name, "lost leadership: stopping loops");
                    supervisor.stop_all().await;
                }
                Err(e) => break Err(e),
            },
        }
    };
    info!("stopping: letting each loop finish its cycle");
    supervisor.stop_all().await;
    stop_tx.send_replace(true);
    webhook_stop.send_replace(true);
    let _ = reloader.await;
    if let Some(webhook) = webhook {
        let _ = webhook.await;
    }
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    info!("stopped");
    result
}
