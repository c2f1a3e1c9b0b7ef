//! The sidecar injector over HTTPS, as the API server calls it: TLS with a certificate for the
//! webhook Service's name, AdmissionReview in and out, malformed reviews refused with 400, and
//! a renewed certificate picked up without a restart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use provisioner_kubevirt::{InjectorOptions, PROXY_CONTAINER};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use provisioner::sidecar::webhook::{CertReloader, WEBHOOK_PATH, serve};

const HOST: &str = "runner-provisioner-sidecar-injector.runner-provisioner.svc";
const POD: &str = include_str!("../../../adapters/kubevirt/tests/fixtures/virt-launcher-pod.json");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/webhook")
        .join(name)
}

/// A cert directory holding certificate pair `n` (1 or 2) as tls.crt / tls.key.
fn install_pair(dir: &Path, n: u8) {
    for (from, to) in [
        (format!("tls{n}.crt"), "tls.crt"),
        (format!("tls{n}.key"), "tls.key"),
    ] {
        let tmp = dir.join(format!("{to}.tmp"));
        std::fs::copy(fixture(&from), &tmp).expect("copy");
        std::fs::rename(&tmp, dir.join(to)).expect("rename");
    }
}

fn client_trusting(ca: u8, addr: SocketAddr) -> reqwest::Client {
    let pem = std::fs::read(fixture(&format!("ca{ca}.crt"))).expect("ca");
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("pem")])
        .resolve(HOST, addr)
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

fn opts() -> Arc<InjectorOptions> {
    Arc::new(InjectorOptions {
        image: "ghcr.io/runner-provisioner/runner-provisioner:0.2.0".to_owned(),
        pull_policy: None,
        namespaces: vec!["runners".to_owned()],
    })
}

fn review_body() -> serde_json::Value {
    let pod: serde_json::Value = serde_json::from_str(POD).expect("fixture");
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "b6f4c9f8-0000-4000-8000-000000000001",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "runners",
            "operation": "CREATE",
            "object": pod,
        }
    })
}

struct Server {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    install_pair(dir.path(), 1);
    let certs = Arc::new(CertReloader::new(dir.path()).expect("certificate"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(serve(listener, certs, opts(), async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        dir,
        stop,
        done,
    }
}

fn url(server: &Server) -> String {
    format!("https://{HOST}:{}{WEBHOOK_PATH}", server.addr.port())
}

#[tokio::test]
async fn the_api_server_gets_a_patch_over_tls() {
    let server = start().await;
    let response = client_trusting(1, server.addr)
        .post(url(&server))
        .header("content-type", "application/json")
        .body(review_body().to_string())
        .send()
        .await
        .expect("review over TLS");
    assert_eq!(response.status(), 200);
    let review: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.expect("body")).expect("json");
    assert_eq!(review["kind"], "AdmissionReview");
    assert_eq!(
        review["response"]["uid"],
        "b6f4c9f8-0000-4000-8000-000000000001"
    );
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(review["response"]["patchType"], "JSONPatch");
    let patch = review["response"]["patch"].as_str().expect("patch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("base64");
    let patch: serde_json::Value = serde_json::from_slice(&patch).expect("JSONPatch");
    assert_eq!(patch[0]["value"]["name"], PROXY_CONTAINER, "{patch}");

    // Malformed: 400 with the reason; a GET is not served.
    let client = client_trusting(1, server.addr);
    let bad = client
        .post(url(&server))
        .body("{\"kind\":\"Pod\"}")
        .send()
        .await
        .expect("post");
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.expect("body").contains("AdmissionReview"));
    let get = client.get(url(&server)).send().await.expect("get");
    assert_eq!(get.status(), 405);

    // A client that does not trust our CA cannot talk to it.
    assert!(
        client_trusting(2, server.addr)
            .post(url(&server))
            .header("content-type", "application/json")
            .body(review_body().to_string())
            .send()
            .await
            .is_err()
    );
    let _ = server.stop.send(());
    server.done.await.expect("task").expect("clean stop");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let server = start().await;
    // Some file systems keep one-second modification times.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    install_pair(server.dir.path(), 2);
    let response = client_trusting(2, server.addr)
        .post(url(&server))
        .header("content-type", "application/json")
        .body(review_body().to_string())
        .send()
        .await
        .expect("the renewed certificate (PKCS#1 key, as Helm writes it) is served");
    assert_eq!(response.status(), 200);

    // A broken renewal keeps the last good certificate.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(server.dir.path().join("tls.crt"), "not a certificate").expect("break");
    let response = client_trusting(2, server.addr)
        .post(url(&server))
        .header("content-type", "application/json")
        .body(review_body().to_string())
        .send()
        .await
        .expect("still served");
    assert_eq!(response.status(), 200);
    let _ = server.stop.send(());
    server.done.await.expect("task").expect("clean stop");
}

#[test]
fn a_missing_or_broken_certificate_fails_at_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert!(CertReloader::new(dir.path()).is_err());
    std::fs::write(dir.path().join("tls.crt"), "garbage").expect("write");
    std::fs::copy(fixture("tls1.key"), dir.path().join("tls.key")).expect("key");
    let err = CertReloader::new(dir.path()).expect_err("broken");
    assert!(err.to_string().contains("tls.crt"), "{err}");
}
