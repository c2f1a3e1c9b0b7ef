//! The token proxy against a fake CircleCI (wiremock speaking the runner API's wire format):
//! the class token goes only onto the claim, other calls keep the runner's credentials, and
//! upstream errors, timeouts, huge bodies, strangers and shutdown are handled without the token
//! ever leaving the proxy.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use provisioner::sidecar::proxy::{CLAIM_PATH, ProxyConfig, ProxyLimits, serve};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const CLASS_TOKEN: &str = "class-token-4f1d9a";
const TASK_TOKEN: &str = "task-scoped-token-77";
const PLACEHOLDER: &str = "replaced-by-the-token-proxy";

struct Proxy {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Proxy {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A claim as the runner sends it, when its body does not matter.
    async fn claim(&self) -> reqwest::Response {
        client()
            .post(self.url(CLAIM_PATH))
            .send()
            .await
            .expect("claim")
    }

    async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.done.await.expect("proxy task")
    }
}

fn secret_dir(upstream: &str, allow: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("token"), format!("{CLASS_TOKEN}\n")).expect("token");
    std::fs::write(dir.path().join("url"), upstream).expect("url");
    std::fs::write(dir.path().join("allow-from"), allow).expect("allow-from");
    dir
}

fn fast_limits() -> ProxyLimits {
    ProxyLimits {
        max_request_body: 4096,
        max_response_body: 64 * 1024,
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(500),
        retries: 2,
        retry_delay: Duration::from_millis(10),
    }
}

async fn start_with(upstream: &str, allow: &str, limits: ProxyLimits) -> Proxy {
    let dir = secret_dir(upstream, allow);
    let mut config = ProxyConfig::load(dir.path()).expect("config");
    config.limits = limits;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(serve(listener, config, async {
        let _ = stopped.await;
    }));
    Proxy {
        addr,
        dir,
        stop: Some(stop),
        done,
    }
}

async fn start(upstream: &str) -> Proxy {
    start_with(upstream, "127.0.0.0/8", fast_limits()).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().build().expect("client")
}

fn claim_body() -> serde_json::Value {
    serde_json::json!({ "resource_class": "my-org/linux-small", "runner_name": "vm-0" })
}

#[tokio::test]
async fn the_claim_reaches_circleci_with_the_class_token_and_the_guest_never_sends_it() {
    let circleci = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CLAIM_PATH))
        .and(header(
            "authorization",
            format!("Bearer {CLASS_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "task_token": TASK_TOKEN, "task_id": "t-1"
        })))
        .expect(2)
        .mount(&circleci)
        .await;
    let proxy = start(&circleci.uri()).await;

    // The guest's runner sends its placeholder, or nothing at all.
    for auth in [Some(format!("Bearer {PLACEHOLDER}")), None] {
        let mut request = client()
            .post(proxy.url(CLAIM_PATH))
            .header("content-type", "application/json")
            .body(claim_body().to_string());
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.expect("claim");
        assert_eq!(response.status(), 200);
        let body: serde_json::Value =
            serde_json::from_slice(&response.bytes().await.expect("body")).expect("json");
        assert_eq!(
            body["task_token"], TASK_TOKEN,
            "the claim response passes through"
        );
    }
    let received = circleci.received_requests().await.expect("recorded");
    for r in &received {
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&r.body).expect("json body"),
            claim_body()
        );
        assert_eq!(r.headers.get_all("authorization").iter().count(), 1);
    }
    proxy.stop().await.expect("clean stop");
}

#[tokio::test]
async fn other_calls_leave_with_what_the_runner_sent() {
    let circleci = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v3/runner/tasks/t-1/events"))
        .respond_with(ResponseTemplate::new(202))
        .mount(&circleci)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/tasks/t-1"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"state\":\"running\"}"))
        .mount(&circleci)
        .await;
    let proxy = start(&circleci.uri()).await;

    let posted = client()
        .post(proxy.url("/api/v3/runner/tasks/t-1/events"))
        .header("authorization", format!("Bearer {TASK_TOKEN}"))
        .header("x-runner-version", "3.0.19")
        .body("{\"event\":\"step\"}")
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), 202);
    let got = client()
        .get(proxy.url("/api/v3/runner/tasks/t-1?verbose=true"))
        .header("circle-token", TASK_TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.expect("body"), "{\"state\":\"running\"}");
    // A GET of the claim path is not a claim either.
    let _ = client()
        .get(proxy.url(CLAIM_PATH))
        .send()
        .await
        .expect("get claim");

    let received = circleci.received_requests().await.expect("recorded");
    assert_eq!(received.len(), 3);
    let auth = |i: usize| {
        received[i]
            .headers
            .get("authorization")
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    assert_eq!(auth(0), Some(format!("Bearer {TASK_TOKEN}")));
    assert_eq!(
        received[0].headers.get("x-runner-version").expect("kept"),
        "3.0.19"
    );
    assert_eq!(received[0].body, b"{\"event\":\"step\"}");
    assert_eq!(auth(1), None);
    assert_eq!(
        received[1].headers.get("circle-token").expect("kept"),
        TASK_TOKEN
    );
    assert_eq!(received[1].url.query(), Some("verbose=true"));
    assert_eq!(auth(2), None, "the class token went onto a GET");
    for r in &received {
        for (_, value) in r.headers.iter() {
            assert!(
                !value.to_str().unwrap_or_default().contains(CLASS_TOKEN),
                "class token on {}",
                r.url
            );
        }
    }
    proxy.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_rotated_token_is_used_on_the_next_claim() {
    let circleci = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CLAIM_PATH))
        .and(header("authorization", "Bearer rotated-token"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&circleci)
        .await;
    let proxy = start(&circleci.uri()).await;
    std::fs::write(proxy.dir.path().join("token"), "rotated-token").expect("rotate");
    let response = proxy.claim().await;
    assert_eq!(response.status(), 200);
    // An unreadable token: the claim fails with 503 and says so, without a token.
    std::fs::remove_file(proxy.dir.path().join("token")).expect("remove");
    let response = proxy.claim().await;
    assert_eq!(response.status(), 503);
    assert!(response.text().await.expect("body").contains("class token"));
    proxy.stop().await.expect("clean stop");
}

#[tokio::test]
async fn upstream_errors_pass_through_and_only_idempotent_calls_are_retried() {
    let circleci = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/flaky"))
        .respond_with(ResponseTemplate::new(503).set_body_string("{\"message\":\"busy\"}"))
        .expect(3)
        .mount(&circleci)
        .await;
    Mock::given(method("POST"))
        .and(path(CLAIM_PATH))
        .respond_with(ResponseTemplate::new(503).set_body_string("{\"message\":\"busy\"}"))
        .expect(1)
        .mount(&circleci)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v3/runner/tasks/x/fail"))
        .respond_with(ResponseTemplate::new(401).set_body_string("{\"message\":\"bad token\"}"))
        .expect(1)
        .mount(&circleci)
        .await;
    let proxy = start(&circleci.uri()).await;

    let r = client()
        .get(proxy.url("/api/v3/runner/flaky"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 503, "after 1 + 2 retries");
    assert_eq!(r.text().await.expect("body"), "{\"message\":\"busy\"}");
    let r = proxy.claim().await;
    assert_eq!(
        r.status(),
        503,
        "a claim is never retried: it could claim twice"
    );
    let r = client()
        .post(proxy.url("/api/v3/runner/tasks/x/fail"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    assert_eq!(r.text().await.expect("body"), "{\"message\":\"bad token\"}");
    proxy.stop().await.expect("clean stop");
    circleci.verify().await;
}

#[tokio::test]
async fn a_slow_upstream_times_out_with_504_and_a_claim_is_tried_once() {
    let circleci = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CLAIM_PATH))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&circleci)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&circleci)
        .await;
    let proxy = start(&circleci.uri()).await;
    let r = proxy.claim().await;
    assert_eq!(r.status(), 504);
    let text = r.text().await.expect("body");
    assert!(text.contains("did not answer"), "{text}");
    assert!(!text.contains(CLASS_TOKEN));
    let r = client()
        .get(proxy.url("/api/v3/runner/slow"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 504);
    let received = circleci.received_requests().await.expect("recorded");
    let claims = received
        .iter()
        .filter(|r| r.url.path() == CLAIM_PATH)
        .count();
    let gets = received.len() - claims;
    assert_eq!(
        claims, 1,
        "a timed-out claim may have claimed: never resent"
    );
    assert_eq!(gets, 3, "a timed-out GET is retried twice");
    proxy.stop().await.expect("clean stop");
}

#[tokio::test]
async fn huge_bodies_are_refused_both_ways() {
    let circleci = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/huge"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b'x'; 200 * 1024]))
        .mount(&circleci)
        .await;
    let proxy = start(&circleci.uri()).await;
    let r = client()
        .post(proxy.url(CLAIM_PATH))
        .body(vec![b'y'; 10 * 1024])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 413);
    let r = client()
        .get(proxy.url("/api/v3/runner/huge"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 502);
    assert!(r.text().await.expect("body").contains("over 65536 bytes"));
    let received = circleci.received_requests().await.expect("recorded");
    assert!(
        received.iter().all(|r| r.url.path() != CLAIM_PATH),
        "an oversized request reached CircleCI"
    );
    proxy.stop().await.expect("clean stop");
}

#[tokio::test]
async fn an_unreachable_circleci_is_a_502_without_the_token() {
    // A port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = closed.local_addr().expect("addr");
    drop(closed);
    let proxy = start(&format!("http://{addr}")).await;
    let r = proxy.claim().await;
    assert_eq!(r.status(), 502);
    let text = r.text().await.expect("body");
    assert!(text.contains("cannot reach CircleCI"), "{text}");
    assert!(!text.contains(CLASS_TOKEN), "{text}");
    proxy.stop().await.expect("clean stop");
}

#[tokio::test]
async fn peers_outside_the_vm_network_are_refused() {
    let circleci = MockServer::start().await;
    let proxy = start_with(&circleci.uri(), "10.0.2.0/24", fast_limits()).await;
    let r = proxy.claim().await;
    assert_eq!(r.status(), 403);
    assert!(
        circleci
            .received_requests()
            .await
            .expect("recorded")
            .is_empty()
    );
    proxy.stop().await.expect("clean stop");
}

#[tokio::test]
async fn shutdown_finishes_the_call_in_flight_then_stops_listening() {
    let circleci = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CLAIM_PATH))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(300)))
        .mount(&circleci)
        .await;
    let mut proxy = start(&circleci.uri()).await;
    let url = proxy.url(CLAIM_PATH);
    let in_flight = tokio::spawn(async move { client().post(url).send().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = proxy.stop.take().expect("stop").send(());
    let response = in_flight.await.expect("task").expect("in-flight call");
    assert_eq!(response.status(), 200);
    let addr = proxy.addr;
    proxy.done.await.expect("task").expect("clean stop");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
}

/// A writer that keeps what the proxy logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_token_never_appears_in_logs_or_errors() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let circleci = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(CLAIM_PATH))
        .respond_with(ResponseTemplate::new(500))
        .mount(&circleci)
        .await;
    let proxy = start(&circleci.uri()).await;
    let r = proxy.claim().await;
    assert_eq!(r.status(), 500);
    let config = ProxyConfig::load(proxy.dir.path()).expect("config");
    let debug = format!("{config:?}");
    proxy.stop().await.expect("clean stop");

    let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(logs.contains("proxied"), "the proxy logs each call: {logs}");
    assert!(!logs.contains(CLASS_TOKEN), "{logs}");
    assert!(!debug.contains(CLASS_TOKEN), "{debug}");
}

#[test]
fn a_bad_secret_directory_is_refused_naming_the_file_not_the_token() {
    let check = |dir: &Path, needle: &str| {
        let err = ProxyConfig::load(dir).expect_err("refused").to_string();
        assert!(err.contains(needle), "{err}");
        assert!(!err.contains(CLASS_TOKEN), "{err}");
    };
    let dir = secret_dir("ftp://example.com", "10.0.2.0/24");
    check(dir.path(), "is not an http(s) URL");
    let dir = secret_dir("https://runner.circleci.com", "10.0.2.0/99");
    check(dir.path(), "allow-from");
    let dir = secret_dir("https://runner.circleci.com", "10.0.2.0/24");
    std::fs::write(dir.path().join("token"), "  \n").expect("empty token");
    check(dir.path(), "is empty");
    std::fs::remove_file(dir.path().join("url")).expect("remove");
    check(dir.path(), "url");
    // Without allow-from the masquerade network is assumed.
    let dir = secret_dir("https://runner.circleci.com/", "");
    std::fs::remove_file(dir.path().join("allow-from")).expect("remove");
    let config = ProxyConfig::load(dir.path()).expect("config");
    assert_eq!(config.upstream, "https://runner.circleci.com");
    assert_eq!(config.allow, ("10.0.2.0".parse().expect("ip"), 24));
}
