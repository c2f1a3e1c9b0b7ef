//! Liveness judges a loop against what it is known to wait for: many classes queued on the
//! shared CircleCI request budget behind a 120 s `Retry-After` stay live; a loop stuck in a
//! call that never returns fails `/live`. Real time, with a 1 s stall threshold instead of 30 s.

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use async_trait::async_trait;
use provisioner::context::Context;
use provisioner::health::Health;
use provisioner::supervisor::circleci_client;
use provisioner::worker::{Pool, Worker, WorkerSettings};
use provisioner_core::config::{ClassConfig, RunnerOptions};
use provisioner_core::{
    ApplyReport, DemandSource, FleetState, Plan, PortError, ResourceClass, Scaling, Secret, VmFleet,
};
use tokio::sync::watch;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const STALL: StdDuration = StdDuration::from_secs(1);
const POLL: StdDuration = StdDuration::from_millis(100);

fn class_config(name: &str) -> ClassConfig {
    ClassConfig {
        name: ResourceClass::parse(name).expect("valid class"),
        token: Secret::new("runner-token"),
        user_data: None,
        scaling: Scaling::default(),
        runner: RunnerOptions::default(),
        empty_disk_mounts: Vec::new(),
        spec: provisioner_core::config::default_spec(),
    }
}

fn context(requests_per_second: f64) -> Arc<Context> {
    let mut ctx = Context::new(StdDuration::from_secs(60), None);
    ctx.health = Health::new(StdDuration::from_secs(60)).with_min_stall(STALL);
    ctx.health.set_config_loaded();
    ctx.requests_per_second = requests_per_second;
    Arc::new(ctx)
}

/// The shadow mode's modelled pool: answers at once.
fn modelled_pool() -> Pool {
    let model = Arc::new(provisioner_sim::ShadowFleet::new(
        provisioner_sim::BootTime::default(),
        1,
    ));
    Pool {
        fleet: model.clone(),
        writes: true,
        model: Some(model),
    }
}

/// Starts one loop per class; the senders keep their settings channels open.
fn start(
    ctx: &Arc<Context>,
    classes: &[String],
    demand: &Arc<dyn DemandSource>,
    pool: &Pool,
    stop: &watch::Receiver<bool>,
) -> Vec<(watch::Sender<WorkerSettings>, tokio::task::JoinHandle<()>)> {
    classes
        .iter()
        .map(|name| {
            let (tx, rx) = watch::channel(WorkerSettings {
                class: Arc::new(class_config(name)),
                demand: demand.clone(),
                pool: pool.clone(),
                poll_interval: POLL,
            });
            let task = tokio::spawn(Worker::new(rx, ctx.clone()).run(stop.clone()));
            (tx, task)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_classes_queued_behind_a_120s_retry_after_stay_live() {
    let circleci = MockServer::start().await;
    // Slow to answer, so all 20 classes book a budget slot before the first 429 pauses the
    // token: at 4 requests per second the last slot starts ~4.5 s out, 4.5x the threshold.
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "120")
                .set_delay(StdDuration::from_millis(800)),
        )
        .mount(&circleci)
        .await;
    let ctx = context(4.0);
    let client =
        circleci_client(&circleci.uri(), Secret::new("api-token-live"), &ctx).expect("client");
    let demand: Arc<dyn DemandSource> = Arc::new(client);
    let classes: Vec<String> = (0..20).map(|i| format!("org/class-{i:02}")).collect();
    let (stop_tx, stop) = watch::channel(false);
    let loops = start(&ctx, &classes, &demand, &modelled_pool(), &stop);

    let started = Instant::now();
    let mut checks = 0;
    while started.elapsed() < STALL * 7 {
        if let Err(stalled) = ctx.health.liveness(Instant::now()) {
            panic!(
                "not live after {:?} of waiting on the budget and Retry-After:\n{stalled}",
                started.elapsed()
            );
        }
        checks += 1;
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert!(checks > 100, "liveness checked only {checks} times");
    // Every class really did wait: none has finished a good cycle, each failed on the 429
    // pause, and the pause was honoured (no class asked twice).
    let not_ready = ctx
        .health
        .readiness(Instant::now())
        .expect_err("no class has had a good cycle");
    for class in &classes {
        assert!(not_ready.contains(class.as_str()), "{not_ready}");
    }
    let requests = circleci
        .received_requests()
        .await
        .expect("recording requests");
    assert!(
        !requests.is_empty() && requests.len() <= classes.len(),
        "{} requests for {} classes",
        requests.len(),
        classes.len()
    );

    stop_tx.send_replace(true);
    for (_, task) in loops {
        task.abort();
    }
}

/// Observes forever: a Kubernetes call that never returns.
struct HungFleet;

#[async_trait]
impl VmFleet for HungFleet {
    async fn ensure(&self, _: &ClassConfig) -> Result<(), PortError> {
        Ok(())
    }
    async fn observe(&self, _: &ResourceClass) -> Result<FleetState, PortError> {
        std::future::pending().await
    }
    async fn apply(&self, _: &ResourceClass, _: &Plan) -> Result<ApplyReport, PortError> {
        Ok(ApplyReport::default())
    }
}

struct NoDemand;

#[async_trait]
impl DemandSource for NoDemand {
    async fn unclaimed_tasks(&self, _: &ResourceClass) -> Result<u32, PortError> {
        Ok(0)
    }
    async fn running_tasks(&self, _: &ResourceClass) -> Result<u32, PortError> {
        Ok(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_stuck_in_a_fleet_call_fails_liveness() {
    let ctx = context(10.0);
    let demand: Arc<dyn DemandSource> = Arc::new(NoDemand);
    let pool = Pool {
        fleet: Arc::new(HungFleet),
        writes: true,
        model: None,
    };
    let (stop_tx, stop) = watch::channel(false);
    let loops = start(&ctx, &["org/stuck".to_owned()], &demand, &pool, &stop);
    let started = Instant::now();
    tokio::time::sleep(STALL / 2).await;
    assert_eq!(
        ctx.health.liveness(Instant::now()),
        Ok(()),
        "within the threshold"
    );
    let stalled = loop {
        if let Err(stalled) = ctx.health.liveness(Instant::now()) {
            break stalled;
        }
        assert!(
            started.elapsed() < STALL * 5,
            "a loop stuck in observe stayed live"
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    };
    assert!(started.elapsed() >= STALL, "failed before the threshold");
    assert!(stalled.contains("org/stuck: loop stalled"), "{stalled}");
    stop_tx.send_replace(true);
    for (_, task) in loops {
        task.abort();
    }
}
