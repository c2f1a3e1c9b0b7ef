//! The per-class loop with the real adapters: KubeVirt's against a local fake Kubernetes API
//! server (axum) and CircleCI's against wiremock. A cycle with nothing to change makes no write;
//! an API error (CircleCI or Kubernetes) leaves the pool untouched.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use provisioner::context::Context;
use provisioner::events::Events;
use provisioner::metrics::Operation;
use provisioner::worker::{CycleOutcome, Pool, Worker, WorkerSettings, wall_clock};
use provisioner_circleci::{CircleCiClient, ClientOptions};
use provisioner_core::config::{ClassConfig, RunnerOptions};
use provisioner_core::{ResourceClass, Scaling, Secret};
use provisioner_kubevirt::{
    FleetOptions, KubeVirtFleet, MANAGED_BY_LABEL, MANAGER, POOL_LABEL, pool_name,
};
use provisioner_testkit::{FakeKube, NS};
use serde_json::{Value, json};
use tokio::sync::watch;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn fake_kubernetes() -> (FakeKube, kube::Client) {
    let (fake, _, client) = FakeKube::start().await;
    (fake, client)
}

async fn fake_circleci(unclaimed: u32, running: u32) -> MockServer {
    let server = MockServer::start().await;
    mount_counts(&server, unclaimed, running).await;
    server
}

async fn mount_counts(server: &MockServer, unclaimed: u32, running: u32) {
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/tasks"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "unclaimed_task_count": unclaimed })),
        )
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/tasks/running"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "running_runner_tasks": running })),
        )
        .mount(server)
        .await;
}

fn running_vm(pool: &str, i: u32) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {
            "name": format!("{pool}-{i}"), "namespace": NS, "uid": format!("uid-{i}"), "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": { MANAGED_BY_LABEL: MANAGER, POOL_LABEL: pool },
            "finalizers": ["pool.kubevirt.io/finalizer"]
        },
        "spec": { "runStrategy": "Once" },
        "status": { "printableStatus": "Running", "created": true, "ready": true }
    })
}

fn class() -> ClassConfig {
    ClassConfig {
        name: ResourceClass::parse("org/runner").expect("valid class"),
        token: Secret::new("runner-token"),
        user_data: None,
        scaling: Scaling::default(),
        runner: RunnerOptions::default(),
        empty_disk_mounts: Vec::new(),
        spec: provisioner_core::config::default_spec(),
    }
}

async fn worker(circleci: &MockServer, client: kube::Client) -> (Worker, Arc<Context>) {
    worker_with(
        circleci,
        client,
        StdDuration::from_secs(60),
        StdDuration::from_secs(1),
    )
    .await
}

/// A worker on both real adapters, publishing events.
async fn worker_with(
    circleci: &MockServer,
    client: kube::Client,
    unready_after: StdDuration,
    poll_interval: StdDuration,
) -> (Worker, Arc<Context>) {
    let events = Events::new(
        client.clone(),
        NS.to_owned(),
        Some("provisioner-0".to_owned()),
    );
    let ctx = Arc::new(Context::new(unready_after, Some(events)));
    let demand = CircleCiClient::new(ClientOptions::new(circleci.uri(), Secret::new("api-token")))
        .expect("client");
    let fleet = KubeVirtFleet::connect(client, FleetOptions::new(NS, circleci.uri()))
        .await
        .expect("connect to the fake API server");
    let settings = WorkerSettings {
        class: Arc::new(class()),
        demand: Arc::new(demand),
        pool: Pool {
            fleet: Arc::new(fleet),
            writes: true,
            model: None,
        },
        poll_interval,
    };
    // The sender may go: the worker keeps the last settings.
    let (_, rx) = watch::channel(settings);
    (Worker::new(rx, ctx.clone()), ctx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cycle_with_nothing_to_change_makes_no_write() {
    let (k8s, client) = fake_kubernetes().await;
    let pool = pool_name(&ResourceClass::parse("org/runner").expect("valid class"));
    k8s.lock().vms = (0..3)
        .map(|i| (format!("{pool}-{i}"), running_vm(&pool, i)))
        .collect();
    let circleci = fake_circleci(0, 0).await;
    let (mut w, _ctx) = worker(&circleci, client).await;

    // First cycle: the Secret and pool are created, then scaled to the 3 VMs that run.
    let first = w.cycle(wall_clock()).await;
    assert!(
        matches!(first, CycleOutcome::Done { .. }),
        "{first:?}: {:?}",
        k8s.lock().log
    );
    let setup = k8s.writes();
    assert!(
        setup
            .iter()
            .any(|(_, p)| p.ends_with(&format!("/secrets/{pool}-userdata"))),
        "{setup:?}"
    );
    assert!(
        setup
            .iter()
            .any(|(_, p)| p.ends_with(&format!("/virtualmachinepools/{pool}"))),
        "{setup:?}"
    );

    // Nothing changed: only reads.
    for _ in 0..3 {
        let outcome = w.cycle(wall_clock()).await;
        let CycleOutcome::Done { decision, report } = outcome else {
            panic!("cycle failed: {outcome:?}")
        };
        assert_eq!(decision.desired, 3);
        assert!(report.is_none());
    }
    assert_eq!(k8s.writes(), setup, "a steady pool got writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_leave_the_pool_untouched() {
    let (k8s, client) = fake_kubernetes().await;
    let pool = pool_name(&ResourceClass::parse("org/runner").expect("valid class"));
    k8s.lock().vms = (0..3)
        .map(|i| (format!("{pool}-{i}"), running_vm(&pool, i)))
        .collect();
    let circleci = fake_circleci(0, 0).await;
    let (mut w, ctx) = worker(&circleci, client).await;
    assert!(matches!(
        w.cycle(wall_clock()).await,
        CycleOutcome::Done { .. }
    ));
    let before = k8s.writes();

    // Kubernetes fails while demand rises: no scale-out attempt is made on a pool not seen.
    circleci.reset().await;
    mount_counts(&circleci, 8, 0).await;
    k8s.lock().fail_with = Some(500);
    let outcome = w.cycle(wall_clock()).await;
    assert!(
        matches!(
            outcome,
            CycleOutcome::Failed {
                operation: Operation::Observe,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(k8s.writes(), before);

    // CircleCI fails (demand unknown): Kubernetes is not even asked.
    k8s.lock().fail_with = None;
    circleci.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&circleci)
        .await;
    let requests = k8s.requests().len();
    let outcome = w.cycle(wall_clock()).await;
    assert!(
        matches!(
            outcome,
            CycleOutcome::Failed {
                operation: Operation::UnclaimedTasks,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(
        k8s.requests().len(),
        requests,
        "Kubernetes was called without demand"
    );
    assert_eq!(k8s.writes(), before);
    let text = ctx.metrics.encode();
    assert!(
        text.contains("operation=\"observe\",kind=\"transient\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("operation=\"unclaimed_tasks\",kind=\"transient\"} 1"),
        "{text}"
    );
    assert_eq!(
        k8s.lock()
            .pools
            .get(&pool)
            .map(|p| p["spec"]["replicas"].clone()),
        Some(json!(3)),
        "replicas unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_out_is_recorded_as_an_event_on_the_pool() {
    let (k8s, client) = fake_kubernetes().await;
    let pool = pool_name(&ResourceClass::parse("org/runner").expect("valid class"));
    let circleci = fake_circleci(5, 1).await;
    let (mut w, _ctx) = worker(&circleci, client).await;
    let outcome = w.cycle(wall_clock()).await;
    let CycleOutcome::Done {
        report: Some(report),
        ..
    } = outcome
    else {
        panic!("expected a scale-out: {outcome:?}")
    };
    assert_eq!(report.scaled, Some((0, 6)));
    let events = k8s.lock().events.clone();
    let event = events
        .iter()
        .find(|e| e["reason"] == "ScaledOut")
        .unwrap_or_else(|| panic!("no ScaledOut event: {events:?}"));
    assert_eq!(event["regarding"]["kind"], "VirtualMachinePool");
    assert_eq!(event["regarding"]["name"], pool.as_str());
    // `kubectl describe` selects a pool's events by its UID as well as its name.
    assert_eq!(
        event["regarding"]["uid"],
        k8s.lock().pools[&pool]["metadata"]["uid"],
        "{event}"
    );
    assert_eq!(event["type"], "Normal");
    assert!(
        event["note"]
            .as_str()
            .unwrap_or_default()
            .contains("0 -> 6"),
        "{event}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_error_is_recorded_once_as_a_warning_event() {
    let (k8s, client) = fake_kubernetes().await;
    let circleci = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&circleci)
        .await;
    let (w, _ctx) = worker_with(
        &circleci,
        client,
        StdDuration::from_millis(300),
        StdDuration::from_millis(50),
    )
    .await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(w.run(stop_rx));
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(10);
    while !k8s
        .lock()
        .events
        .iter()
        .any(|e| e["reason"] == "PollFailing")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no PollFailing event: {:?}",
            k8s.lock().events
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    // Once per episode, not once per cycle.
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    stop_tx.send_replace(true);
    tokio::time::timeout(StdDuration::from_secs(5), task)
        .await
        .expect("loop stops")
        .expect("no panic");
    let events = k8s.lock().events.clone();
    let warnings: Vec<&Value> = events
        .iter()
        .filter(|e| e["reason"] == "PollFailing")
        .collect();
    assert_eq!(warnings.len(), 1, "{events:?}");
    assert_eq!(warnings[0]["type"], "Warning");
    assert!(
        warnings[0]["note"]
            .as_str()
            .unwrap_or_default()
            .contains("unclaimed_tasks failing"),
        "{:?}",
        warnings[0]
    );
    assert!(
        k8s.writes().iter().all(|(m, _)| m == "POST"),
        "only events were written: {:?}",
        k8s.writes()
    );
}
