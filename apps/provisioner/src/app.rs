//! Wiring: the shared [`Context`], the `run` command's supervisor (one worker per class,
//! reconciled against every new config and every change of leadership), and the one-shot
//! commands.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use provisioner_circleci::{CircleCiClient, ClientOptions, Endpoint, StatusClass};
use provisioner_core::{ClassConfig, Config, DemandSource, ResourceClass, Secret};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::Error;
use crate::cli::{Output, RenderArgs, RunArgs, ScaleToZeroArgs, TasksArgs, ValidateArgs};
use crate::events::{EventKind, Events};
use crate::health::Health;
use crate::http::{self, Ports};
use crate::leader::Leadership;
use crate::logging::LogHandle;
use crate::metrics::Metrics;
use crate::reload::{self, ReloadSource};
use crate::sources::{self, Overrides};
use crate::worker::{Pool, Worker, WorkerSettings};

/// What every part of a running provisioner shares.
#[derive(Debug)]
pub struct Context {
    pub metrics: Metrics,
    pub health: Health,
    /// `None` in shadow mode: events are writes.
    pub events: Option<Events>,
    /// Not ready, and a warning event, once a class has failed this long.
    pub unready_after: StdDuration,
    /// CircleCI's shared request budget, requests per second.
    pub requests_per_second: f64,
}

impl Context {
    pub fn new(unready_after: StdDuration, events: Option<Events>) -> Self {
        Self {
            metrics: Metrics::new(),
            health: Health::new(unready_after),
            events,
            unready_after,
            requests_per_second: provisioner_circleci::DEFAULT_REQUESTS_PER_SECOND,
        }
    }

    pub async fn publish(&self, class: &ResourceClass, kind: EventKind, note: String) {
        if let Some(events) = &self.events {
            events.publish(class, kind, note).await;
        }
    }
}

/// A loop in progress.
#[derive(Debug)]
struct Running {
    settings: watch::Sender<WorkerSettings>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Where pools come from for this process.
enum PoolSource {
    /// A cluster. The fleet writes the CircleCI address into VMs, so it is re-made when
    /// `circleciAPIAddr` changes.
    Cluster {
        client: kube::Client,
        namespace: String,
        writes: bool,
        current: Option<(String, Pool)>,
    },
    /// Shadow mode without a cluster: one modelled pool for every class.
    Modelled(Pool),
}

impl PoolSource {
    async fn pool_for(&mut self, api_addr: &str) -> Result<Pool, Error> {
        match self {
            Self::Modelled(pool) => Ok(pool.clone()),
            Self::Cluster {
                client,
                namespace,
                writes,
                current,
            } => {
                if let Some((addr, pool)) = current
                    && addr == api_addr
                {
                    return Ok(pool.clone());
                }
                let fleet = kubevirt_fleet(client.clone(), namespace, api_addr).await?;
                let pool = Pool {
                    fleet: Arc::new(fleet),
                    writes: *writes,
                    model: None,
                };
                *current = Some((api_addr.to_owned(), pool.clone()));
                Ok(pool)
            }
        }
    }
}

/// Starts, updates and stops the per-class workers.
struct Supervisor {
    ctx: Arc<Context>,
    pools: PoolSource,
    workers: BTreeMap<ResourceClass, Running>,
    /// Loops told to stop that may still be finishing a cycle.
    stopping: Vec<(ResourceClass, JoinHandle<()>)>,
    /// The CircleCI client, re-made only when the address or token changes (its back-off and
    /// request budget carry over otherwise).
    demand: Option<(String, Secret, Arc<dyn DemandSource>)>,
    /// How long stopping loops may take to finish their cycle ([`STOP_TIMEOUT`]).
    stop_timeout: StdDuration,
}

/// How long shutdown waits for loops to finish their cycle: within the chart's 30 s grace
/// period, leaving time to release the lease.
const STOP_TIMEOUT: StdDuration = StdDuration::from_secs(20);

impl Supervisor {
    fn new(ctx: Arc<Context>, pools: PoolSource) -> Self {
        Self {
            ctx,
            pools,
            workers: BTreeMap::new(),
            stopping: Vec::new(),
            demand: None,
            stop_timeout: STOP_TIMEOUT,
        }
    }

    fn demand_for(&mut self, config: &Config) -> Result<Arc<dyn DemandSource>, Error> {
        let token = config.circle_token.clone().unwrap_or_default();
        if let Some((addr, tok, client)) = &self.demand
            && *addr == config.circleci_api_addr
            && *tok == token
        {
            return Ok(client.clone());
        }
        let client: Arc<dyn DemandSource> = Arc::new(circleci_client(
            &config.circleci_api_addr,
            token.clone(),
            &self.ctx,
        )?);
        self.demand = Some((config.circleci_api_addr.clone(), token, client.clone()));
        Ok(client)
    }

    /// Bring the running loops in line with `config`.
    async fn reconcile(&mut self, config: &Config) -> Result<(), Error> {
        let demand = self.demand_for(config)?;
        let needed =
            config.classes.len() as f64 * 2.0 / config.poll_interval.as_secs_f64().max(0.001);
        if needed > self.ctx.requests_per_second {
            warn!(
                classes = config.classes.len(),
                poll_interval = %config.poll_interval,
                needed_requests_per_second = needed,
                requests_per_second = self.ctx.requests_per_second,
                "the CircleCI request budget is below what the classes need at this poll interval: \
                 polls will queue and each class will be polled less often (raise --api-requests-per-second \
                 or pollInterval)"
            );
        }
        let pool = self.pools.pool_for(&config.circleci_api_addr).await?;
        let poll_interval = config.poll_interval.as_std();
        let wanted: BTreeMap<&ResourceClass, &ClassConfig> =
            config.classes.iter().map(|c| (&c.name, c)).collect();
        let removed: Vec<ResourceClass> = self
            .workers
            .keys()
            .filter(|c| !wanted.contains_key(c))
            .cloned()
            .collect();
        for class in removed {
            if let Some(running) = self.workers.remove(&class) {
                running.stop.send_replace(true);
                info!(resource_class = %class, "resource class removed from the configuration: its loop stops and its pool is left as it is");
                self.stopping.push((class, running.task));
            }
        }
        for (class, class_config) in wanted {
            let settings = WorkerSettings {
                class: Arc::new(class_config.clone()),
                demand: demand.clone(),
                pool: pool.clone(),
                poll_interval,
            };
            if let Some(running) = self.workers.get(class) {
                let changed = {
                    let current = running.settings.borrow();
                    *current.class != *class_config
                        || current.poll_interval != poll_interval
                        || !same(&current.demand, &demand)
                        || !same(&current.pool.fleet, &pool.fleet)
                };
                if changed {
                    running.settings.send_replace(settings);
                    info!(resource_class = %class, "resource class configuration updated");
                }
                continue;
            }
            // A loop of the same class still finishing its last cycle would, on ending, drop
            // the new loop's health and metrics: let it end first.
            let old: Vec<_> = self.stopping.extract_if(.., |(c, _)| c == class).collect();
            self.finish(old).await;
            let (settings_tx, settings_rx) = watch::channel(settings);
            let (stop_tx, stop_rx) = watch::channel(false);
            let worker = Worker::new(settings_rx, self.ctx.clone());
            let task = tokio::spawn(worker.run(stop_rx));
            info!(resource_class = %class, "resource class loop started");
            self.workers.insert(
                class.clone(),
                Running {
                    settings: settings_tx,
                    stop: stop_tx,
                    task,
                },
            );
        }
        self.reap();
        Ok(())
    }

    /// Drop the handles of removed classes' loops that have ended.
    fn reap(&mut self) {
        self.stopping.retain(|(_, task)| !task.is_finished());
    }

    /// Stop every loop, letting each finish its cycle (bounded by `stop_timeout`).
    async fn stop_all(&mut self) {
        for running in self.workers.values() {
            running.stop.send_replace(true);
        }
        let mut tasks: Vec<(ResourceClass, JoinHandle<()>)> = std::mem::take(&mut self.workers)
            .into_iter()
            .map(|(c, r)| (c, r.task))
            .collect();
        tasks.append(&mut self.stopping);
        self.finish(tasks).await;
    }

    /// Wait for loops told to stop to finish their cycle; abort those still running after
    /// `stop_timeout`, clearing what they would have cleared on the way out.
    async fn finish(&self, tasks: Vec<(ResourceClass, JoinHandle<()>)>) {
        let deadline = tokio::time::Instant::now() + self.stop_timeout;
        for (class, mut task) in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                warn!(resource_class = %class, "loop did not finish its cycle in time; aborting it");
                task.abort();
                // Ended (cancelled) once any poll in progress returns: nothing of it runs later.
                let _ = task.await;
                self.ctx.health.stop_class(&class);
                self.ctx.metrics.forget(&class);
            }
        }
    }
}

/// The same object behind two trait objects (addresses only; vtables may differ).
fn same<T: ?Sized>(a: &Arc<T>, b: &Arc<T>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

fn circleci_client(addr: &str, token: Secret, ctx: &Arc<Context>) -> Result<CircleCiClient, Error> {
    let observer_ctx = Arc::downgrade(ctx);
    let mut options = ClientOptions::new(addr, token).with_observer(Arc::new(
        move |endpoint: Endpoint, status: StatusClass, took: StdDuration| {
            if let Some(ctx) = observer_ctx.upgrade() {
                ctx.metrics
                    .circleci_latency(endpoint, status, took.as_secs_f64());
            }
        },
    ));
    options.requests_per_second = ctx.requests_per_second;
    CircleCiClient::new(options).map_err(|e| Error::CircleCi(e.to_string()))
}

/// A cluster client, or why there is none. In shadow mode no cluster is fine.
async fn connect() -> Result<kube::Client, String> {
    let attempt = async {
        let client = kube::Client::try_default()
            .await
            .map_err(|e| e.to_string())?;
        client
            .apiserver_version()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(client)
    };
    match tokio::time::timeout(StdDuration::from_secs(5), attempt).await {
        Ok(result) => result,
        Err(_) => Err("the API server did not answer within 5s".to_owned()),
    }
}

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
fn shutdown_signal() -> impl Future<Output = ()> {
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

    let (pools, client) = if args.dry_run {
        (
            shadow_pools(&namespace, &config.circleci_api_addr).await,
            None,
        )
    } else {
        let client = connect().await.map_err(Error::Cluster)?;
        (
            PoolSource::Cluster {
                client: client.clone(),
                namespace: namespace.clone(),
                writes: true,
                current: None,
            },
            Some(client),
        )
    };

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

    let mut leadership = match (&client, args.leader_election) {
        (Some(client), true) => {
            Some(Leadership::start(client.clone(), &namespace, &args.lease_name, &identity).await?)
        }
        (None, true) => {
            info!("dry run: leader election is off, this replica polls");
            None
        }
        _ => None,
    };
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
    let _ = reloader.await;
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    info!("stopped");
    result
}

/// Dry run: observe the cluster's pools when there is a cluster with KubeVirt's pool API, else
/// model them.
async fn shadow_pools(namespace: &str, api_addr: &str) -> PoolSource {
    let client = match connect().await {
        Ok(client) => client,
        Err(reason) => {
            info!(reason = %reason, "no cluster reachable; modelling the pool");
            return modelled();
        }
    };
    match kubevirt_fleet(client.clone(), namespace, api_addr).await {
        Ok(fleet) => {
            info!("dry run: observing the cluster's pools, writing nothing");
            let pool = Pool {
                fleet: Arc::new(fleet),
                writes: false,
                model: None,
            };
            PoolSource::Cluster {
                client,
                namespace: namespace.to_owned(),
                writes: false,
                current: Some((api_addr.to_owned(), pool)),
            }
        }
        Err(e) => {
            info!(reason = %e, "no KubeVirt pool API in the cluster; modelling the pool");
            modelled()
        }
    }
}

/// Shadow mode's in-memory pool (the simulator's pool model on the wall clock).
fn modelled() -> PoolSource {
    let model = Arc::new(provisioner_sim::ShadowFleet::new(
        provisioner_sim::BootTime::default(),
        1,
    ));
    PoolSource::Modelled(Pool {
        fleet: model.clone(),
        writes: true,
        model: Some(model),
    })
}

async fn kubevirt_fleet(
    client: kube::Client,
    namespace: &str,
    api_addr: &str,
) -> Result<provisioner_kubevirt::KubeVirtFleet, Error> {
    provisioner_kubevirt::KubeVirtFleet::connect(
        client,
        provisioner_kubevirt::FleetOptions::new(namespace, api_addr),
    )
    .await
    .map_err(|e| Error::KubeVirt(e.to_string()))
}

/// `provisioner validate`: 0 and a summary on stdout, or every error.
pub fn validate(args: &ValidateArgs) -> Result<(), Error> {
    let raw = args.config.paths().read(sources::env_token().as_ref())?;
    let config = raw.load(true)?;
    let names: Vec<&str> = config.classes.iter().map(|c| c.name.as_str()).collect();
    match args.output {
        Output::Text => println!(
            "configuration is valid: {} resource class(es): {}",
            names.len(),
            names.join(", ")
        ),
        Output::Json => println!(
            "{}",
            serde_json::json!({ "valid": true, "resource_classes": names })
        ),
    }
    Ok(())
}

/// `provisioner tasks`: both counts, as a line of text or one JSON line.
pub async fn tasks(args: &TasksArgs) -> Result<(), Error> {
    let report = provisioner_circleci::tasks_command(
        args.resource_class.as_str(),
        Some(&args.api_addr),
        sources::env_token(),
    )
    .await
    .map_err(|e| Error::CircleCi(e.to_string()))?;
    match args.output {
        Output::Text => println!(
            "{}: {} unclaimed, {} running",
            report.resource_class, report.unclaimed_tasks, report.running_tasks
        ),
        Output::Json => {
            let line =
                serde_json::to_string(&report).map_err(|e| Error::CircleCi(e.to_string()))?;
            println!("{line}");
        }
    }
    Ok(())
}

/// `provisioner render`: the YAML the provisioner would apply; no cluster needed.
pub fn render(args: &RenderArgs) -> Result<(), Error> {
    let raw = args.config.paths().read(sources::env_token().as_ref())?;
    let config = raw.load(false)?;
    let namespace = crate::cli::resolve_namespace(args.namespace.as_deref());
    let yaml = provisioner_kubevirt::render(&config, &namespace, args.show_secrets)
        .map_err(|e| Error::KubeVirt(e.to_string()))?;
    print!("{yaml}");
    Ok(())
}

/// `provisioner scale-to-zero`: the Helm pre-delete hook.
pub async fn scale_to_zero(args: &ScaleToZeroArgs) -> Result<(), Error> {
    // Uninstall must not be blocked by a broken config: the pools are found by label.
    let api_addr = match args
        .config
        .paths()
        .read(None)
        .and_then(|raw| raw.load(false))
    {
        Ok(config) => config.circleci_api_addr,
        Err(e) => {
            warn!(error = %e, "configuration unreadable; scaling every managed pool to zero anyway");
            provisioner_core::config::DEFAULT_API_ADDR.to_owned()
        }
    };
    let namespace = crate::cli::resolve_namespace(args.namespace.as_deref());
    let client = connect().await.map_err(Error::Cluster)?;
    let fleet = kubevirt_fleet(client, &namespace, &api_addr).await?;
    // Every pool the provisioner manages, including classes since removed from the config.
    let reports = fleet
        .scale_all_to_zero()
        .await
        .map_err(|e| Error::KubeVirt(e.to_string()))?;
    for (class, report) in &reports {
        info!(
            resource_class = %class,
            scaled_from = report.scaled.map(|s| s.0),
            retired = report.retired,
            refused = report.refused,
            "pool scaled to zero; running VMs are left to finish their job"
        );
    }
    info!(pools = reports.len(), "scale-to-zero done");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;
    use provisioner_core::config::{RunnerOptions, default_spec};
    use provisioner_core::{Duration, PortError, Scaling};
    use tokio::sync::Notify;

    use super::*;

    const API: &str = "http://127.0.0.1:9";

    /// The first poll hangs until `release`; every later one fails.
    #[derive(Default)]
    struct GatedDemand {
        calls: AtomicU32,
        release: Notify,
    }

    #[async_trait]
    impl DemandSource for GatedDemand {
        async fn unclaimed_tasks(&self, _: &ResourceClass) -> Result<u32, PortError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                self.release.notified().await;
                return Ok(0);
            }
            Err(PortError::transient("CircleCI is down"))
        }
        async fn running_tasks(&self, _: &ResourceClass) -> Result<u32, PortError> {
            Ok(0)
        }
    }

    fn config(classes: &[&str]) -> Config {
        Config {
            circleci_api_addr: API.to_owned(),
            poll_interval: Duration::parse("50ms").expect("valid duration"),
            log_level: None,
            circle_token: Some(Secret::new("api-token")),
            classes: classes
                .iter()
                .map(|name| ClassConfig {
                    name: ResourceClass::parse(name).expect("valid class"),
                    token: Secret::new("runner-token"),
                    user_data: None,
                    scaling: Scaling::default(),
                    runner: RunnerOptions::default(),
                    empty_disk_mounts: Vec::new(),
                    spec: default_spec(),
                })
                .collect(),
        }
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + StdDuration::from_secs(5);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "never {what}");
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_class_re_added_while_its_old_loop_finishes_keeps_its_health() {
        let ctx = Arc::new(Context::new(StdDuration::from_millis(10), None));
        ctx.health.set_config_loaded();
        let demand = Arc::new(GatedDemand::default());
        let mut supervisor = Supervisor::new(ctx.clone(), modelled());
        supervisor.demand = Some((
            API.to_owned(),
            Secret::new("api-token"),
            demand.clone() as Arc<dyn DemandSource>,
        ));

        supervisor
            .reconcile(&config(&["org/a"]))
            .await
            .expect("start");
        until("polled", || demand.calls.load(Ordering::SeqCst) == 1).await;
        // Removed mid-cycle, then restored before that cycle ends.
        supervisor.reconcile(&config(&[])).await.expect("remove");
        let release = {
            let demand = demand.clone();
            tokio::spawn(async move {
                tokio::time::sleep(StdDuration::from_millis(100)).await;
                demand.release.notify_one();
            })
        };
        supervisor
            .reconcile(&config(&["org/a"]))
            .await
            .expect("re-add");
        release.await.expect("release");
        until("old loop ended", || {
            supervisor.stopping.iter().all(|(_, t)| t.is_finished())
        })
        .await;
        until("new loop polled", || {
            demand.calls.load(Ordering::SeqCst) > 1
        })
        .await;

        // The new loop only fails: its class must count against readiness.
        let readiness = ctx.health.readiness(std::time::Instant::now());
        assert!(
            readiness.as_ref().is_err_and(|why| why.contains("org/a")),
            "{readiness:?}"
        );
        supervisor.stop_all().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_loop_aborted_at_the_stop_deadline_leaves_no_health_behind() {
        let ctx = Arc::new(Context::new(StdDuration::from_secs(60), None));
        ctx.health.set_config_loaded();
        let demand = Arc::new(GatedDemand::default());
        let mut supervisor = Supervisor::new(ctx.clone(), modelled());
        supervisor.stop_timeout = StdDuration::from_millis(200);
        supervisor.demand = Some((
            API.to_owned(),
            Secret::new("api-token"),
            demand.clone() as Arc<dyn DemandSource>,
        ));
        supervisor
            .reconcile(&config(&["org/a"]))
            .await
            .expect("start");
        until("polled", || demand.calls.load(Ordering::SeqCst) == 1).await;
        // Its first poll never returns: the loop is aborted (as on losing the lease).
        supervisor.stop_all().await;

        // A standby runs no loop: nothing may count against its readiness or liveness.
        let now = std::time::Instant::now();
        assert_eq!(ctx.health.readiness(now), Ok(()));
        assert_eq!(
            ctx.health.liveness(now + StdDuration::from_secs(3600)),
            Ok(())
        );
    }
}
