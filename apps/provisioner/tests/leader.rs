//! Leader election over a `coordination.k8s.io` Lease, against a local fake API server that
//! keeps one Lease and refuses a server-side apply that would take a held lease (as the real
//! API server's field ownership does). One replica leads; the standby takes over within the
//! lease duration once the leader releases it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use provisioner::leader::Leadership;
use serde_json::{Value, json};

const NS: &str = "ci";
const LEASE: &str = "runner-provisioner";

#[derive(Clone, Default)]
struct FakeLeases {
    lease: Arc<Mutex<Option<Value>>>,
    rv: Arc<Mutex<u64>>,
}

fn respond(code: u16, body: Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("status"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("response")
}

fn failure(code: u16, reason: &str) -> Response {
    respond(
        code,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": reason }),
    )
}

impl FakeLeases {
    fn holder(&self) -> Option<String> {
        self.lease
            .lock()
            .expect("lock")
            .as_ref()
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    }

    fn bump(&self, lease: &mut Value) {
        let mut rv = self.rv.lock().expect("lock");
        *rv += 1;
        lease["metadata"]["resourceVersion"] = json!(rv.to_string());
    }

    async fn handle(self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let collection = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases");
        let item = format!("{collection}/{LEASE}");
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let path = uri.path();
        let mut guard = self.lease.lock().expect("lock");
        match method {
            Method::GET if path == item => guard
                .clone()
                .map_or_else(|| failure(404, "NotFound"), |l| respond(200, l)),
            Method::POST if path == collection => {
                if guard.is_some() {
                    return failure(409, "AlreadyExists");
                }
                let mut lease = body;
                lease["metadata"]["uid"] = json!("lease-uid");
                self.bump(&mut lease);
                *guard = Some(lease.clone());
                respond(201, lease)
            }
            Method::PATCH if path == item => {
                let Some(lease) = guard.as_mut() else {
                    return failure(404, "NotFound");
                };
                let current = lease["spec"]["holderIdentity"].as_str().map(str::to_owned);
                let wanted = body["spec"]["holderIdentity"].as_str();
                if content_type.starts_with("application/apply-patch")
                    && let (Some(current), Some(wanted)) = (current.as_deref(), wanted)
                    && current != wanted
                {
                    return failure(409, "Conflict");
                }
                if !lease["spec"].is_object() {
                    lease["spec"] = json!({});
                }
                if let Some(fields) = body["spec"].as_object() {
                    for (k, v) in fields {
                        if v.is_null() {
                            lease["spec"].as_object_mut().map(|s| s.remove(k));
                        } else {
                            lease["spec"][k] = v.clone();
                        }
                    }
                }
                let mut updated = lease.clone();
                self.bump(&mut updated);
                *lease = updated.clone();
                respond(200, updated)
            }
            _ => failure(404, "NotFound"),
        }
    }
}

async fn fake_api() -> (FakeLeases, kube::Client) {
    let fake = FakeLeases::default();
    let app = axum::Router::new().fallback({
        let fake = fake.clone();
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            fake.clone().handle(method, uri, headers, body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let config = kube::Config::new(format!("http://{addr}").parse().expect("url"));
    (fake, kube::Client::try_from(config).expect("client"))
}

async fn until_leader(l: &mut Leadership, within: Duration) -> Duration {
    let started = Instant::now();
    while !l.is_leader() {
        let left = within
            .checked_sub(started.elapsed())
            .expect("did not become leader in time");
        tokio::time::timeout(left, l.changed())
            .await
            .expect("did not become leader in time")
            .expect("lease manager running");
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_the_standby_takes_over_after_release() {
    let (fake, client) = fake_api().await;
    let mut a = Leadership::start(client.clone(), NS, LEASE, "pod-a")
        .await
        .expect("start a");
    until_leader(&mut a, Duration::from_secs(10)).await;
    assert_eq!(fake.holder().as_deref(), Some("pod-a"));

    let mut b = Leadership::start(client, NS, LEASE, "pod-b")
        .await
        .expect("start b");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!b.is_leader(), "two leaders");
    assert!(a.is_leader());
    assert_eq!(fake.holder().as_deref(), Some("pod-a"));

    // The leader shuts down and releases; the standby takes over within the lease duration.
    a.release().await;
    assert_eq!(fake.holder(), None, "released lease still held");
    let took = until_leader(&mut b, Duration::from_secs(15)).await;
    assert_eq!(fake.holder().as_deref(), Some("pod-b"));
    println!("standby took over {took:?} after the release");
}
