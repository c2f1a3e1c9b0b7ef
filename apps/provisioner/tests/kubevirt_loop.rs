//! The per-class loop with the real adapters: KubeVirt's against a local fake Kubernetes API
//! server (axum) and CircleCI's against wiremock. A cycle with nothing to change makes no write;
//! a Kubernetes error leaves the pool untouched; a CircleCI error keeps it (degraded mode:
//! created on a cold start, finished VMs replaced, no scale-in); Events say what happened.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use provisioner::context::Context;
use provisioner::events::Events;
use provisioner::metrics::Operation;
use provisioner::worker::{CycleOutcome, Pool, Worker, WorkerSettings, wall_clock};
use provisioner_circleci::{CircleCiClient, ClientOptions};
use provisioner_core::config::{ClassConfig, RunnerOptions};
use provisioner_core::{Reclaim, ResourceClass, Scaling, Secret};
use provisioner_kubevirt::{
    FleetOptions, KubeVirtFleet, MANAGED_BY_LABEL, MANAGER, POOL_LABEL, pool_name,
};
use provisioner_testkit::{FakeKube, NS, pool_owner};
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
            "finalizers": ["pool.kubevirt.io/finalizer"],
            "ownerReferences": [pool_owner(pool)]
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
    // A short client back-off, so a test can have CircleCI answer again within milliseconds.
    let options = ClientOptions {
        backoff_initial: StdDuration::from_millis(1),
        backoff_max: StdDuration::from_millis(1),
        ..ClientOptions::new(circleci.uri(), Secret::new("api-token"))
    };
    let demand = CircleCiClient::new(options).expect("client");
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

fn replicas(k8s: &FakeKube, pool: &str) -> Option<Value> {
    k8s.lock()
        .pools
        .get(pool)
        .map(|p| p["spec"]["replicas"].clone())
}

async fn fail_circleci(circleci: &MockServer) {
    circleci.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .mount(circleci)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_error_leaves_the_pool_untouched_and_a_circleci_error_keeps_it() {
    let (k8s, client) = fake_kubernetes().await;
    let pool = pool_name(&ResourceClass::parse("org/runner").expect("valid class"));
    k8s.lock().vms = (0..3)
        .map(|i| (format!("{pool}-{i}"), running_vm(&pool, i)))
        .collect();
    // 5 tasks: the pool asks for 5 VMs, 3 of which run.
    let circleci = fake_circleci(5, 0).await;
    let (mut w, ctx) = worker(&circleci, client).await;
    assert!(matches!(
        w.cycle(wall_clock()).await,
        CycleOutcome::Done { .. }
    ));
    assert_eq!(replicas(&k8s, &pool), Some(json!(5)));
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

    // CircleCI fails (demand unknown): the pool is kept at 5, where known demand of 0 would
    // scale it in to the 3 VMs that run.
    k8s.lock().fail_with = None;
    fail_circleci(&circleci).await;
    let outcome = w.cycle(wall_clock()).await;
    let CycleOutcome::Degraded {
        operation: Operation::UnclaimedTasks,
        decision,
        report: None,
        ..
    } = outcome
    else {
        panic!("expected a degraded cycle with nothing to do: {outcome:?}")
    };
    assert_eq!(decision.plan.target_replicas, 5);
    assert_eq!(k8s.writes(), before);
    assert_eq!(replicas(&k8s, &pool), Some(json!(5)), "no scale-in");

    // A VM finishes its job during the outage: it is deleted for the pool to replace.
    k8s.set_vm_status(&format!("{pool}-2"), "Stopped");
    let deleted = format!("/virtualmachines/{pool}-2");
    let deadline = tokio::time::Instant::now() + StdDuration::from_secs(10);
    while !k8s
        .writes()
        .iter()
        .any(|(m, p)| m == "DELETE" && p.ends_with(&deleted))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stopped VM was not replaced: {:?}",
            k8s.writes()
        );
        let outcome = w.cycle(wall_clock()).await;
        assert!(
            matches!(outcome, CycleOutcome::Degraded { .. }),
            "{outcome:?}"
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    assert_eq!(
        replicas(&k8s, &pool),
        Some(json!(5)),
        "recycled, not retired"
    );
    let text = ctx.metrics.encode();
    assert!(
        text.contains("operation=\"observe\",kind=\"transient\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("operation=\"unclaimed_tasks\",kind=\"transient\"}"),
        "{text}"
    );
    assert!(
        text.contains("provisioner_vms_recycled_total{resource_class=\"org/runner\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_with_circleci_failing_creates_the_pool_at_its_floor() {
    let (k8s, client) = fake_kubernetes().await;
    let pool = pool_name(&ResourceClass::parse("org/runner").expect("valid class"));
    let circleci = MockServer::start().await;
    fail_circleci(&circleci).await;
    let (mut w, _ctx) = worker(&circleci, client).await;
    let outcome = w.cycle(wall_clock()).await;
    assert!(
        matches!(
            outcome,
            CycleOutcome::Degraded {
                operation: Operation::UnclaimedTasks,
                report: Some(_),
                ..
            }
        ),
        "{outcome:?}"
    );
    let writes = k8s.writes();
    assert!(
        writes
            .iter()
            .any(|(_, p)| p.ends_with(&format!("/secrets/{pool}-userdata"))),
        "{writes:?}"
    );
    assert_eq!(
        replicas(&k8s, &pool),
        Some(json!(Scaling::default().min_replicas.get())),
        "{writes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_demand_is_one_warning_event_per_episode() {
    let (k8s, client) = fake_kubernetes().await;
    let circleci = MockServer::start().await;
    fail_circleci(&circleci).await;
    let (mut w, ctx) = worker(&circleci, client).await;
    // Three times --unready-after (60 s here).
    assert_eq!(ctx.demand_stale_after, StdDuration::from_secs(180));
    let t0 = wall_clock();
    let at = |s: u64| t0.saturating_add(provisioner_core::Duration::from_secs(s));
    let stale = |k8s: &FakeKube| {
        k8s.lock()
            .events
            .iter()
            .filter(|e| e["reason"] == "DemandStale")
            .cloned()
            .collect::<Vec<Value>>()
    };
    let _ = w.cycle(at(0)).await;
    let _ = w.cycle(at(170)).await;
    assert!(stale(&k8s).is_empty(), "{:?}", k8s.lock().events);
    let _ = w.cycle(at(190)).await;
    let _ = w.cycle(at(400)).await;
    tokio::time::sleep(StdDuration::from_millis(5)).await;
    let events = stale(&k8s);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "Warning");
    let note = events[0]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("since the loop started 190s ago")
            && note.contains("unclaimed_tasks failing")
            && note.contains("running degraded"),
        "{note}"
    );
    // CircleCI answers again, then fails anew: a second episode, a second event.
    circleci.reset().await;
    mount_counts(&circleci, 0, 0).await;
    assert!(matches!(w.cycle(at(410)).await, CycleOutcome::Done { .. }));
    fail_circleci(&circleci).await;
    let _ = w.cycle(at(420)).await;
    let _ = w.cycle(at(600)).await;
    // Within minutes of the first, kube's recorder sends it as the next of a series (a PATCH
    // counting it) rather than a new event.
    let repeats: Vec<Value> = k8s
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.contains("/events/"))
        .map(|r| r.body)
        .filter(|b| b["reason"] == "DemandStale")
        .collect();
    assert_eq!(stale(&k8s).len(), 1);
    assert_eq!(repeats.len(), 1, "{repeats:?}");
    assert_eq!(repeats[0]["series"]["count"], 2, "{:?}", repeats[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_vm_is_a_warning_event_that_says_what_to_check() {
    let (k8s, client) = fake_kubernetes().await;
    let pool = pool_name(&ResourceClass::parse("org/runner").expect("valid class"));
    k8s.lock().vms = (0..3)
        .map(|i| {
            let mut vm = running_vm(&pool, i);
            if i == 2 {
                // Created months ago and never ready: past the 15-minute start timeout.
                vm["status"] = json!({ "printableStatus": "Starting", "created": true });
            }
            (format!("{pool}-{i}"), vm)
        })
        .collect();
    let circleci = fake_circleci(0, 0).await;
    let (mut w, ctx) = worker(&circleci, client).await;
    let outcome = w.cycle(wall_clock()).await;
    let CycleOutcome::Done {
        report: Some(report),
        ..
    } = outcome
    else {
        panic!("expected a reclaim: {outcome:?}")
    };
    assert_eq!(
        report.reclaimed,
        [(Arc::from(format!("{pool}-2")), Reclaim::StartTimeout)]
    );
    let events = k8s.lock().events.clone();
    let event = events
        .iter()
        .find(|e| e["reason"] == "ReclaimedStartTimeout")
        .unwrap_or_else(|| panic!("no ReclaimedStartTimeout event: {events:?}"));
    assert_eq!(event["type"], "Warning");
    let note = event["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("start_timeout")
            && note.contains(Reclaim::StartTimeout.hint())
            && note.contains(&format!("{pool}-2")),
        "{note}"
    );
    let text = ctx.metrics.encode();
    assert!(
        text.contains(
            "provisioner_vms_reclaimed_total{resource_class=\"org/runner\",reason=\"start_timeout\"} 1"
        ),
        "{text}"
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
    // Degraded, not idle: the pool was set up although CircleCI never answered.
    assert!(
        k8s.lock().pools.contains_key(&pool_name(
            &ResourceClass::parse("org/runner").expect("valid class")
        )),
        "{:?}",
        k8s.writes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_that_never_register_open_the_breaker_with_events() {
    let (k8s, client) = fake_kubernetes().await;
    let pool = pool_name(&ResourceClass::parse("org/runner").expect("valid class"));
    // Up for months, and CircleCI lists none of their runners.
    k8s.lock().vms = (0..3)
        .map(|i| (format!("{pool}-{i}"), running_vm(&pool, i)))
        .collect();
    let circleci = fake_circleci(6, 0).await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "items": [] })))
        .mount(&circleci)
        .await;
    let (mut w, ctx) = worker(&circleci, client).await;
    let outcome = w.cycle(wall_clock()).await;
    let CycleOutcome::Done {
        decision,
        report: Some(report),
    } = outcome
    else {
        panic!("expected reclaims: {outcome:?}")
    };
    assert!(decision.breaker_open, "{decision:?}");
    assert_eq!(report.reclaimed.len(), 3, "{report:?}");
    assert!(
        report
            .reclaimed
            .iter()
            .all(|(_, why)| *why == Reclaim::Unregistered),
        "{report:?}"
    );
    let events = k8s.lock().events.clone();
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(
        reasons.contains(&"ReclaimedUnregistered") && reasons.contains(&"RegistrationBreakerOpen"),
        "{reasons:?}"
    );
    let breaker = events
        .iter()
        .find(|e| e["reason"] == "RegistrationBreakerOpen")
        .expect("breaker event");
    assert_eq!(breaker["type"], "Warning");
    assert!(
        breaker["note"]
            .as_str()
            .unwrap_or_default()
            .contains("resource-class token"),
        "{breaker}"
    );
    let text = ctx.metrics.encode();
    for needle in [
        "provisioner_registration_breaker_open{resource_class=\"org/runner\"} 1",
        "provisioner_vms_reclaimed_total{resource_class=\"org/runner\",reason=\"unregistered\"} 3",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}
