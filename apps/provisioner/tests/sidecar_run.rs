//! The sidecar as the built binary runs it: `run` serving the injector webhook over TLS (before
//! and whatever leader election decides), refusing to start with a broken certificate, and
//! `provisioner proxy` adding the class token to the claim and stopping on SIGTERM.

mod common;

use std::path::Path;

use base64::Engine as _;
use common::process::{addr, message, spawn, spawn_command, write_class_config};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const API_TOKEN: &str = "api-token-sidecar-51ab";
const RUNNER_TOKEN: &str = "runner-token-sidecar-93cd";
const HOST: &str = "runner-provisioner-sidecar-injector.runner-provisioner.svc";
const POD: &str = include_str!("../../../adapters/kubevirt/tests/fixtures/virt-launcher-pod.json");

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/webhook")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_the_injector_webhook_over_tls_and_stops_with_the_controller() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("mkdir");
    std::fs::copy(fixture("tls1.crt"), certs.join("tls.crt")).expect("crt");
    std::fs::copy(fixture("tls1.key"), certs.join("tls.key")).expect("key");
    let config = write_class_config(dir.path(), "org/a", RUNNER_TOKEN);
    let mut p = spawn(
        &[
            "run",
            "--dry-run",
            "--config",
            config.to_str().expect("utf-8"),
            "--namespace",
            "runners",
            "--api-addr",
            "http://127.0.0.1:9",
            "--webhook-cert-dir",
            certs.to_str().expect("utf-8"),
            "--webhook-port",
            "0",
            "--sidecar-image",
            "registry.example.com/runner-provisioner:1.2.3",
        ],
        &[("CIRCLE_TOKEN", API_TOKEN)],
    );
    let line = p.wait_for("serving the webhook", |v| {
        message(v) == "serving the sidecar injector webhook"
    });
    let webhook = addr(&line, "webhook_addr");
    let ca = std::fs::read(fixture("ca1.crt")).expect("ca");
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("pem")])
        .resolve(HOST, webhook)
        .build()
        .expect("client");
    let pod: serde_json::Value = serde_json::from_str(POD).expect("pod");
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0c4d7a9e-1111-4000-8000-000000000002",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "namespace": "runners",
            "operation": "CREATE",
            "object": pod,
        }
    });
    let response = client
        .post(format!("https://{HOST}:{}/mutate-pods", webhook.port()))
        .header("content-type", "application/json")
        .body(review.to_string())
        .send()
        .await
        .expect("the webhook answers over TLS");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.expect("body")).expect("json");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(body["response"]["patch"].as_str().expect("a patch"))
        .expect("base64");
    let patch: serde_json::Value = serde_json::from_slice(&patch).expect("json patch");
    assert_eq!(
        patch[0]["value"]["image"], "registry.example.com/runner-provisioner:1.2.3",
        "{patch}"
    );

    p.sigterm();
    p.wait_for("saying it stopped", |v| message(v) == "stopped");
    assert!(p.exit_status().success());
    p.assert_no_leak(&[API_TOKEN, RUNNER_TOKEN]);
}

#[test]
fn run_refuses_to_start_with_an_unusable_webhook_setup() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_class_config(dir.path(), "org/a", RUNNER_TOKEN);
    let missing = dir.path().join("no-certs");
    for (extra, needle) in [
        (
            vec!["--sidecar-image", "img"],
            missing.display().to_string(),
        ),
        (vec![], "--sidecar-image".to_owned()),
    ] {
        let mut args = vec![
            "run",
            "--dry-run",
            "--config",
            config.to_str().expect("utf-8"),
            "--api-addr",
            "http://127.0.0.1:9",
            "--webhook-cert-dir",
            missing.to_str().expect("utf-8"),
            "--webhook-port",
            "0",
        ];
        args.extend(extra);
        let mut p = spawn(&args, &[("CIRCLE_TOKEN", API_TOKEN)]);
        let line = p.wait_for("the start-up error", |v| {
            message(v) == "cannot run the token-proxy sidecar"
        });
        assert!(line.to_string().contains(&needle), "{line}");
        assert!(!p.exit_status().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_subcommand_adds_the_class_token_to_the_claim_and_stops_on_sigterm() {
    let circleci = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v3/runner/claim"))
        .and(header(
            "authorization",
            format!("Bearer {RUNNER_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"task\":\"t\"}"))
        .expect(1)
        .mount(&circleci)
        .await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("token"), RUNNER_TOKEN).expect("token");
    std::fs::write(dir.path().join("url"), circleci.uri()).expect("url");
    std::fs::write(dir.path().join("allow-from"), "127.0.0.0/8").expect("allow");
    let mut p = spawn_command(
        &[
            "proxy",
            "--secret-dir",
            dir.path().to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    let line = p.wait_for("listening", |v| message(v) == "token proxy listening");
    let listen = addr(&line, "listen");
    let response = reqwest::Client::new()
        .post(format!("http://{listen}/api/v3/runner/claim"))
        .header("authorization", "Bearer replaced-by-the-token-proxy")
        .send()
        .await
        .expect("claim");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "{\"task\":\"t\"}");
    p.sigterm();
    p.wait_for("stopping", |v| message(v) == "token proxy stopped");
    assert!(p.exit_status().success());
    p.assert_no_leak(&[RUNNER_TOKEN]);
    circleci.verify().await;
}
