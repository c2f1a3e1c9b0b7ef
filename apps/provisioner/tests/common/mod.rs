//! A small fake Kubernetes API server for the tests: pool discovery, VirtualMachines (list and
//! an idle watch), Secrets and VirtualMachinePools (server-side apply, `/scale`), Events, one
//! Lease (refusing an apply that would take a held lease, as field ownership does) and
//! `/version`. Records every request except watches and VM lists (the adapter's cache).
#![allow(dead_code)]

pub mod process;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

pub const NS: &str = "ci";

#[derive(Default)]
pub struct State {
    /// `(method, path)` of every request but watches and VM lists.
    pub log: Vec<(Method, String)>,
    pub pools: BTreeMap<String, Value>,
    pub vms: Vec<Value>,
    pub events: Vec<Value>,
    pub lease: Option<Value>,
    rv: u64,
    /// Every request but VM lists fails with this status while set.
    pub fail_with: Option<u16>,
}

#[derive(Clone, Default)]
pub struct FakeKube(Arc<Mutex<State>>);

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

/// Apply `patch.spec` to `obj.spec` field by field; a null removes the field.
fn merge_spec(obj: &mut Value, patch: &Value) {
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    if let Some(fields) = patch["spec"].as_object() {
        for (k, v) in fields {
            if v.is_null() {
                obj["spec"].as_object_mut().map(|s| s.remove(k));
            } else {
                obj["spec"][k] = v.clone();
            }
        }
    }
}

impl FakeKube {
    /// Serve on a free local port; returns the fake, its URL and a client for it.
    pub async fn start() -> (Self, String, kube::Client) {
        let fake = Self::default();
        let app = axum::Router::new().fallback({
            let fake = fake.clone();
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                fake.clone().handle(method, uri, headers, body)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let config = kube::Config::new(url.parse().expect("url"));
        (
            fake,
            url.clone(),
            kube::Client::try_from(config).expect("client"),
        )
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().expect("fake state")
    }

    pub fn writes(&self) -> Vec<(Method, String)> {
        self.lock()
            .log
            .iter()
            .filter(|(m, _)| *m != Method::GET)
            .cloned()
            .collect()
    }

    pub fn requests(&self) -> usize {
        self.lock().log.len()
    }

    pub fn holder(&self) -> Option<String> {
        self.lock()
            .lease
            .as_ref()
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    }

    async fn handle(self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let path = uri.path().to_owned();
        if uri.query().unwrap_or("").contains("watch=true") {
            // Nothing changes behind the adapter's back here: hold the watch briefly, end it.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(Body::empty())
                .expect("watch");
        }
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut s = self.lock();
        let vm_list = method == Method::GET
            && parts.as_slice()
                == [
                    "apis",
                    "kubevirt.io",
                    "v1",
                    "namespaces",
                    NS,
                    "virtualmachines",
                ];
        if !vm_list {
            s.log.push((method.clone(), path.clone()));
            if let Some(code) = s.fail_with {
                return failure(code, "Injected");
            }
        }
        s.rv += 1;
        let rv = s.rv.to_string();
        match (method, parts.as_slice()) {
            (Method::GET, ["version"]) => respond(
                200,
                json!({ "major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "fake", "gitTreeState": "clean",
                        "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64" }),
            ),
            (Method::GET, ["apis", "pool.kubevirt.io"]) => respond(
                200,
                json!({ "kind": "APIGroup", "apiVersion": "v1", "name": "pool.kubevirt.io",
                        "versions": [{ "groupVersion": "pool.kubevirt.io/v1beta1", "version": "v1beta1" }],
                        "preferredVersion": { "groupVersion": "pool.kubevirt.io/v1beta1", "version": "v1beta1" } }),
            ),
            (
                Method::GET,
                [
                    "apis",
                    "kubevirt.io",
                    "v1",
                    "namespaces",
                    _,
                    "virtualmachines",
                ],
            ) => respond(
                200,
                json!({ "kind": "VirtualMachineList", "apiVersion": "kubevirt.io/v1", "metadata": { "resourceVersion": rv }, "items": s.vms }),
            ),
            (Method::PATCH, ["api", "v1", "namespaces", _, "secrets", name]) => {
                let mut obj = body;
                obj["metadata"]["uid"] = json!(format!("secret-{name}"));
                obj["metadata"]["resourceVersion"] = json!(rv);
                respond(200, obj)
            }
            (
                Method::GET,
                [
                    "apis",
                    "pool.kubevirt.io",
                    version,
                    "namespaces",
                    _,
                    "virtualmachinepools",
                ],
            ) => {
                let items: Vec<Value> = s.pools.values().cloned().collect();
                respond(
                    200,
                    json!({ "kind": "VirtualMachinePoolList", "apiVersion": format!("pool.kubevirt.io/{version}"),
                            "metadata": { "resourceVersion": rv }, "items": items }),
                )
            }
            (
                Method::GET,
                [
                    "apis",
                    "pool.kubevirt.io",
                    _,
                    "namespaces",
                    _,
                    "virtualmachinepools",
                    name,
                ],
            ) => s
                .pools
                .get(*name)
                .map_or_else(|| failure(404, "NotFound"), |p| respond(200, p.clone())),
            (
                Method::PATCH,
                [
                    "apis",
                    "pool.kubevirt.io",
                    _,
                    "namespaces",
                    _,
                    "virtualmachinepools",
                    name,
                ],
            ) => {
                let mut obj = match s.pools.get(*name) {
                    // `scale-to-zero` marks the pool with a merge patch of its annotations.
                    Some(existing) if content_type.starts_with("application/merge-patch") => {
                        let mut merged = existing.clone();
                        if let Some(annotations) = body["metadata"]["annotations"].as_object() {
                            for (k, v) in annotations {
                                merged["metadata"]["annotations"][k] = v.clone();
                            }
                        }
                        merged
                    }
                    _ => body,
                };
                obj["metadata"]["uid"] = json!(format!("pool-{name}"));
                obj["metadata"]["resourceVersion"] = json!(rv);
                s.pools.insert((*name).to_owned(), obj.clone());
                respond(200, obj)
            }
            (
                Method::PATCH | Method::PUT,
                [
                    "apis",
                    "pool.kubevirt.io",
                    _,
                    "namespaces",
                    _,
                    "virtualmachinepools",
                    name,
                    "scale",
                ],
            ) => {
                let replicas = body["spec"]["replicas"].clone();
                let Some(pool) = s.pools.get_mut(*name) else {
                    return failure(404, "NotFound");
                };
                pool["spec"]["replicas"] = replicas.clone();
                pool["metadata"]["resourceVersion"] = json!(rv);
                respond(
                    200,
                    json!({ "kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": { "name": name }, "spec": { "replicas": replicas } }),
                )
            }
            (Method::POST, ["apis", "events.k8s.io", "v1", "namespaces", _, "events"]) => {
                s.events.push(body.clone());
                respond(201, body)
            }
            (
                Method::GET,
                [
                    "apis",
                    "coordination.k8s.io",
                    "v1",
                    "namespaces",
                    _,
                    "leases",
                    _,
                ],
            ) => s
                .lease
                .clone()
                .map_or_else(|| failure(404, "NotFound"), |l| respond(200, l)),
            (
                Method::POST,
                [
                    "apis",
                    "coordination.k8s.io",
                    "v1",
                    "namespaces",
                    _,
                    "leases",
                ],
            ) => {
                if s.lease.is_some() {
                    return failure(409, "AlreadyExists");
                }
                let mut lease = body;
                lease["metadata"]["uid"] = json!("lease-uid");
                lease["metadata"]["resourceVersion"] = json!(rv);
                s.lease = Some(lease.clone());
                respond(201, lease)
            }
            (
                Method::PATCH,
                [
                    "apis",
                    "coordination.k8s.io",
                    "v1",
                    "namespaces",
                    _,
                    "leases",
                    _,
                ],
            ) => {
                let Some(lease) = s.lease.as_mut() else {
                    return failure(404, "NotFound");
                };
                let current = lease["spec"]["holderIdentity"].as_str().map(str::to_owned);
                if content_type.starts_with("application/apply-patch")
                    && let (Some(current), Some(wanted)) =
                        (current.as_deref(), body["spec"]["holderIdentity"].as_str())
                    && current != wanted
                {
                    return failure(409, "Conflict");
                }
                merge_spec(lease, &body);
                lease["metadata"]["resourceVersion"] = json!(rv);
                respond(200, lease.clone())
            }
            _ => failure(404, "NotFound"),
        }
    }
}
