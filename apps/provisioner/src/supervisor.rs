//! The `run` command's supervisor: one worker per class, reconciled against every new config
//! and every change of leadership, and where their pools come from.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use provisioner_circleci::{CircleCiClient, ClientOptions, Endpoint, StatusClass};
use provisioner_core::{ClassConfig, Config, DemandSource, ResourceClass, Secret};
use provisioner_kubevirt::VmOptions;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::Error;
use crate::cluster::{connect, kubevirt_fleet};
use crate::context::Context;
use crate::worker::{Pool, Worker, WorkerSettings};

/// A loop in progress.
#[derive(Debug)]
struct Running {
    settings: watch::Sender<WorkerSettings>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Where pools come from for this process.
pub(crate) enum PoolSource {
    /// A cluster. The fleet writes the CircleCI address, the sidecar and the runner bundle into
    /// VMs, so it is re-made when one of them changes.
    Cluster {
        client: kube::Client,
        namespace: String,
        writes: bool,
        current: Option<Box<((String, VmOptions), Pool)>>,
    },
    /// Shadow mode without a cluster: one modelled pool for every class.
    Modelled(Pool),
}

impl PoolSource {
    /// `run`'s pools, and the cluster client when there is one: a cluster is required unless
    /// `dry_run`.
    pub(crate) async fn start(
        dry_run: bool,
        namespace: &str,
        config: &Config,
    ) -> Result<(Self, Option<kube::Client>), Error> {
        if dry_run {
            return Ok((shadow_pools(namespace, config).await, None));
        }
        let client = connect().await.map_err(Error::Cluster)?;
        let pools = Self::Cluster {
            client: client.clone(),
            namespace: namespace.to_owned(),
            writes: true,
            current: None,
        };
        Ok((pools, Some(client)))
    }

    async fn pool_for(&mut self, config: &Config) -> Result<Pool, Error> {
        match self {
            Self::Modelled(pool) => Ok(pool.clone()),
            Self::Cluster {
                client,
                namespace,
                writes,
                current,
            } => {
                let key = (
                    config.circleci_api_addr.clone(),
                    VmOptions::from_config(config),
                );
                if let Some(entry) = current
                    && entry.0 == key
                {
                    return Ok(entry.1.clone());
                }
                let fleet = kubevirt_fleet(client.clone(), namespace, &key.0, &key.1).await?;
                let pool = Pool {
                    fleet: Arc::new(fleet),
                    writes: *writes,
                    model: None,
                };
                *current = Some(Box::new((key, pool.clone())));
                Ok(pool)
            }
        }
    }
}

/// The demand source of the current config, and what it was made for.
struct DemandClient {
    addr: String,
    token: Secret,
    /// The client whose token a rotation swaps (`None`: a test's stand-in).
    client: Option<CircleCiClient>,
    source: Arc<dyn DemandSource>,
}

/// Starts, updates and stops the per-class workers.
pub(crate) struct Supervisor {
    ctx: Arc<Context>,
    pools: PoolSource,
    workers: BTreeMap<ResourceClass, Running>,
    /// Loops told to stop that may still be finishing a cycle.
    stopping: Vec<(ResourceClass, JoinHandle<()>)>,
    /// The CircleCI client, re-made only when the address changes: a new API token (a rotated
    /// `circle-token` file) is swapped into it, so its back-off and request budget carry over
    /// and the loops keep their client.
    demand: Option<DemandClient>,
    /// How long stopping loops may take to finish their cycle ([`STOP_TIMEOUT`]).
    stop_timeout: StdDuration,
}

/// How long shutdown waits for loops to finish their cycle: within the chart's 30 s grace
/// period, leaving time to release the lease.
const STOP_TIMEOUT: StdDuration = StdDuration::from_secs(20);

impl Supervisor {
    pub(crate) fn new(ctx: Arc<Context>, pools: PoolSource) -> Self {
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
        if let Some(current) = &mut self.demand
            && current.addr == config.circleci_api_addr
        {
            if current.token != token {
                if let Some(client) = &current.client {
                    client.set_token(&token)?;
                }
                current.token = token;
            }
            return Ok(current.source.clone());
        }
        let client = circleci_client(&config.circleci_api_addr, token.clone(), &self.ctx)?;
        let source: Arc<dyn DemandSource> = Arc::new(client.clone());
        self.demand = Some(DemandClient {
            addr: config.circleci_api_addr.clone(),
            token,
            client: Some(client),
            source: source.clone(),
        });
        Ok(source)
    }

    /// Bring the running loops in line with `config`.
    pub(crate) async fn reconcile(&mut self, config: &Config) -> Result<(), Error> {
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
        let pool = self.pools.pool_for(config).await?;
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
    pub(crate) async fn stop_all(&mut self) {
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

/// The process's CircleCI client: its latencies go to the metrics, and a call queued for a
/// budget slot tells the class's liveness when the slot comes.
pub fn circleci_client(
    addr: &str,
    token: Secret,
    ctx: &Arc<Context>,
) -> Result<CircleCiClient, Error> {
    let observer_ctx = Arc::downgrade(ctx);
    let wait_ctx = Arc::downgrade(ctx);
    let mut options = ClientOptions::new(addr, token)
        .with_observer(Arc::new(
            move |endpoint: Endpoint, status: StatusClass, took: StdDuration| {
                if let Some(ctx) = observer_ctx.upgrade() {
                    ctx.metrics
                        .circleci_latency(endpoint, status, took.as_secs_f64());
                }
            },
        ))
        .with_wait_observer(Arc::new(move |class: &ResourceClass, slot: Instant| {
            if let Some(ctx) = wait_ctx.upgrade() {
                ctx.health.waiting(class, slot);
            }
        }));
    options.requests_per_second = ctx.requests_per_second;
    Ok(CircleCiClient::new(options)?)
}

/// Dry run: observe the cluster's pools when there is a cluster with KubeVirt's pool API, else
/// model them.
async fn shadow_pools(namespace: &str, config: &Config) -> PoolSource {
    let key = (
        config.circleci_api_addr.clone(),
        VmOptions::from_config(config),
    );
    let client = match connect().await {
        Ok(client) => client,
        Err(reason) => {
            info!(reason = %reason, "no cluster reachable; modelling the pool");
            return modelled();
        }
    };
    match kubevirt_fleet(client.clone(), namespace, &key.0, &key.1).await {
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
                current: Some(Box::new((key, pool))),
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
            sidecar: false,
            runner_bundle: None,
        }
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + StdDuration::from_secs(5);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "never {what}");
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
    }

    /// A supervisor of modelled pools whose CircleCI is a [`GatedDemand`].
    fn gated(unready_after: StdDuration) -> (Arc<Context>, Arc<GatedDemand>, Supervisor) {
        let ctx = Arc::new(Context::new(unready_after, None));
        ctx.health.set_config_loaded();
        let demand = Arc::new(GatedDemand::default());
        let mut supervisor = Supervisor::new(ctx.clone(), modelled());
        supervisor.demand = Some(DemandClient {
            addr: API.to_owned(),
            token: Secret::new("api-token"),
            client: None,
            source: demand.clone() as Arc<dyn DemandSource>,
        });
        (ctx, demand, supervisor)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_class_re_added_while_its_old_loop_finishes_keeps_its_health() {
        let (ctx, demand, mut supervisor) = gated(StdDuration::from_millis(10));

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
        let (ctx, demand, mut supervisor) = gated(StdDuration::from_secs(60));
        supervisor.stop_timeout = StdDuration::from_millis(200);
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
