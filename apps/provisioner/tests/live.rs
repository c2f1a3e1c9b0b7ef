//! The built binary in its real mode (not a dry run), as it runs in a cluster: against the fake
//! Kubernetes API (through a kubeconfig, as outside a pod) and a fake CircleCI, with leader
//! election on. It takes the lease, creates and scales the class's pool, records an Event,
//! never deletes a VM, and on SIGTERM finishes its cycle, releases the lease and exits 0.

mod common;

use std::time::{Duration, Instant};

use common::process::{
    WAIT, addr, cycle_for, fake_circleci, message, spawn, wait_status, write_class_config,
    write_kubeconfig,
};
use provisioner_core::ResourceClass;
use provisioner_kubevirt::pool_name;
use provisioner_testkit::{FakeKube, NS};

const API_TOKEN: &str = "api-token-live-2c77";
const RUNNER_TOKEN: &str = "runner-token-live-8d10";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leads_scales_the_pool_records_events_and_releases_on_sigterm() {
    let (k8s, url, _client) = FakeKube::start().await;
    let circleci = fake_circleci(API_TOKEN, 4, 2).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = write_kubeconfig(dir.path(), &url, NS);
    let config = write_class_config(dir.path(), "org/a", RUNNER_TOKEN);
    let api = circleci.uri();
    let mut p = spawn(
        &[
            "run",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--namespace",
            NS,
            "--api-addr",
            &api,
            "--poll-interval",
            "300ms",
            "--leader-election",
            "--lease-name",
            "rp-test",
        ],
        &[
            ("KUBECONFIG", kubeconfig.to_str().expect("utf-8 path")),
            ("CIRCLE_TOKEN", API_TOKEN),
            ("POD_NAME", "provisioner-0"),
        ],
    );
    let listening = p.wait_for("with the bound addresses", |v| message(v) == "listening");
    p.wait_for("taking the lease", |v| {
        message(v) == "became leader: starting loops"
    });
    assert_eq!(k8s.holder().as_deref(), Some("provisioner-0"));

    let line = p.wait_for("for org/a's cycle", cycle_for("org/a"));
    assert_eq!(line["desired_vms"], 6, "{line}");
    let applied = p.wait_for("for the scale-out", |v| message(v) == "applied plan");
    assert_eq!(applied["scaled_to"], 6, "{applied}");
    let pool = pool_name(&ResourceClass::parse("org/a").expect("valid class"));
    assert_eq!(
        k8s.lock()
            .pools
            .get(&pool)
            .map(|p| p["spec"]["replicas"].clone()),
        Some(serde_json::json!(6))
    );
    let deadline = Instant::now() + WAIT;
    while !k8s
        .lock()
        .events
        .iter()
        .any(|e| e["reason"] == "ScaledOut" && e["regarding"]["name"] == pool.as_str())
    {
        assert!(
            Instant::now() < deadline,
            "no ScaledOut event: {:?}",
            k8s.lock().events
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_status(addr(&listening, "ready_addr"), "/ready", 200);
    let text = wait_status(addr(&listening, "metrics_addr"), "/metrics", 200);
    assert!(text.contains("provisioner_leader 1"), "{text}");
    assert!(
        text.contains("provisioner_pool_replicas{resource_class=\"org/a\"} 6"),
        "{text}"
    );

    p.sigterm();
    p.wait_for("releasing the lease", |v| message(v) == "lease released");
    p.wait_for("saying it stopped", |v| message(v) == "stopped");
    let exit = p.exit_status();
    assert!(exit.success(), "exit status {exit}");
    assert_eq!(k8s.holder(), None, "lease not released");
    assert!(
        !k8s.writes().iter().any(|(m, _)| m == "DELETE"),
        "a VM was deleted: {:?}",
        k8s.writes()
    );
    p.assert_no_leak(&[API_TOKEN, RUNNER_TOKEN]);
}
