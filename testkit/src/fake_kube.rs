//! The fake Kubernetes API server.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

/// The namespace the tests work in.
pub const NS: &str = "ci";

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: String,
    /// The JSON body, `null` when empty or not JSON.
    pub body: Value,
}

impl Recorded {
    pub fn is_watch(&self) -> bool {
        self.query.contains("watch=true")
    }

    /// A list (or watch) of VirtualMachines: the adapter's cache, not a decision.
    pub fn is_vm_list(&self) -> bool {
        self.method == Method::GET && is_vm_list_path(&self.path)
    }
}

fn is_vm_list_path(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    Target::of(&parts).is_some_and(|t| t.resource == "virtualmachines" && t.name.is_none())
}

/// What the server holds; tests read and change it through [`FakeKube::lock`].
#[derive(Debug, Default)]
pub struct State {
    /// Every request, watches and VM lists included ([`FakeKube::requests`] leaves those out).
    pub log: Vec<Recorded>,
    /// The `pool.kubevirt.io` versions discovery reports; none: the group is not served (404).
    pub served: Vec<&'static str>,
    pub pools: BTreeMap<String, Value>,
    pub secrets: BTreeMap<String, Value>,
    pub vms: BTreeMap<String, Value>,
    pub events: Vec<Value>,
    pub lease: Option<Value>,
    rv: u64,
    /// One-shot failures: (method, path suffix, status).
    pub failures: Vec<(Method, String, u16)>,
    /// Every request but watches and VM lists fails with this status while set.
    pub fail_with: Option<u16>,
    /// What the next VM watch returns.
    pub watch_events: VecDeque<Value>,
    /// Simulates an old KubeVirt whose schema lacks scaleInStrategy (the server prunes it).
    pub prune_scale_in: bool,
    /// Served (once each) instead of the stored pool: what a reader saw before a change.
    pub stale_pool_reads: Vec<Value>,
    /// VM lists are refused with a 403, as RBAC without `list` would.
    pub forbid_vm_watch: bool,
}

impl State {
    /// The next resourceVersion, as a write would take it.
    pub fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    /// Stores a VM under a new resourceVersion and queues the watch event `kind` for it.
    fn store_vm(&mut self, kind: &str, mut vm: Value) -> Value {
        let name = vm["metadata"]["name"].as_str().expect("vm name").to_owned();
        vm["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.watch_events
            .push_back(json!({ "type": kind, "object": vm.clone() }));
        self.vms.insert(name, vm.clone());
        vm
    }
}

/// What a namespaced path names: `/api/v1/namespaces/NS/RESOURCE[/NAME[/SUB]]` or
/// `/apis/GROUP/VERSION/namespaces/NS/RESOURCE[/NAME[/SUB]]`.
struct Target<'a> {
    version: &'a str,
    resource: &'a str,
    name: Option<&'a str>,
    sub: Option<&'a str>,
}

impl<'a> Target<'a> {
    fn of(parts: &[&'a str]) -> Option<Self> {
        let (version, rest) = match parts {
            ["api", version, "namespaces", _, rest @ ..]
            | ["apis", _, version, "namespaces", _, rest @ ..] => (*version, rest),
            _ => return None,
        };
        let (resource, name, sub) = match rest {
            [resource] => (*resource, None, None),
            [resource, name] => (*resource, Some(*name), None),
            [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
            _ => return None,
        };
        Some(Self {
            version,
            resource,
            name,
            sub,
        })
    }
}

/// A fake API server, recording every request; clones share the same server.
#[derive(Debug, Clone, Default)]
pub struct FakeKube {
    state: Arc<Mutex<State>>,
    wake: Arc<tokio::sync::Notify>,
}

fn json_response(code: u16, body: Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("status"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("response")
}

/// A `Status` failure, as the API server writes one.
fn status(code: u16, reason: &str, message: &str) -> Response {
    json_response(
        code,
        json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message }),
    )
}

fn injected(code: u16, method: &Method, path: &str) -> Response {
    status(
        code,
        "Injected",
        &format!("injected {code} for {method} {path}"),
    )
}

fn no_route(method: &Method, path: &str) -> Response {
    status(
        404,
        "NotFound",
        &format!("fake has no route for {method} {path}"),
    )
}

/// RFC 7386 JSON merge patch, as the API server applies `application/merge-patch+json`.
fn merge_patch(mut target: Value, patch: &Value) -> Value {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    let merged = merge_patch(t.remove(k).unwrap_or(Value::Null), v);
                    t.insert(k.clone(), merged);
                }
            }
            target
        }
        _ => patch.clone(),
    }
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
    /// Serve on a free local port, with `pool.kubevirt.io/v1beta1`; returns the fake, its URL
    /// and a client for it.
    pub async fn start() -> (Self, String, kube::Client) {
        Self::serving(&["v1beta1"]).await
    }

    /// [`FakeKube::start`] serving these `pool.kubevirt.io` versions (none: no pool API).
    pub async fn serving(served: &[&'static str]) -> (Self, String, kube::Client) {
        let fake = Self::default();
        fake.lock().served = served.to_vec();
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
        let client = kube::Client::try_from(config).expect("client");
        (fake, url, client)
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake state")
    }

    /// Ends a waiting VM watch now, returning the queued [`State::watch_events`].
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Adds or replaces a VM with a new resourceVersion and the watch event for it.
    pub fn upsert_vm(&self, vm: Value) {
        let mut s = self.lock();
        let name = vm["metadata"]["name"].as_str().expect("vm name");
        let kind = if s.vms.contains_key(name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.store_vm(kind, vm);
        drop(s);
        self.wake();
    }

    /// Changes a VM's status the way KubeVirt would, with a watch event.
    pub fn set_vm_status(&self, name: &str, printable: &str) {
        let mut vm = self.lock().vms.get(name).cloned().expect("vm exists");
        vm["status"]["printableStatus"] = json!(printable);
        self.upsert_vm(vm);
    }

    /// The next `method` request whose path ends with `path_suffix` fails with `code`.
    pub fn fail_next(&self, method: Method, path_suffix: &str, code: u16) {
        self.lock()
            .failures
            .push((method, path_suffix.to_owned(), code));
    }

    /// Every request but watches and VM lists, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock()
            .log
            .iter()
            .filter(|r| !r.is_watch() && !r.is_vm_list())
            .cloned()
            .collect()
    }

    /// `(method, path)` of every request that is not a GET.
    pub fn writes(&self) -> Vec<(Method, String)> {
        self.requests()
            .into_iter()
            .filter(|r| r.method != Method::GET)
            .map(|r| (r.method, r.path))
            .collect()
    }

    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    /// The Lease's `spec.holderIdentity`.
    pub fn holder(&self) -> Option<String> {
        self.lock()
            .lease
            .as_ref()
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    }

    async fn handle(self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let path = uri.path().to_owned();
        let query = uri.query().unwrap_or("").to_owned();
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or(Value::Null)
        };
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let request = Recorded {
            method: method.clone(),
            path: path.clone(),
            query,
            content_type: content_type.clone(),
            body: body.clone(),
        };
        let (watch, vm_list) = (request.is_watch(), request.is_vm_list());
        {
            let mut s = self.lock();
            s.log.push(request);
            if let Some(i) = s
                .failures
                .iter()
                .position(|(m, p, _)| *m == method && path.ends_with(p.as_str()))
            {
                let (_, _, code) = s.failures.remove(i);
                return injected(code, &method, &path);
            }
        }
        if watch {
            return self.watch().await;
        }
        let mut s = self.lock();
        if !vm_list && let Some(code) = s.fail_with {
            return injected(code, &method, &path);
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["version"] if method == Method::GET => {
                return json_response(
                    200,
                    json!({ "major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "fake", "gitTreeState": "clean",
                            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64" }),
                );
            }
            ["apis", "pool.kubevirt.io"] if method == Method::GET => {
                if s.served.is_empty() {
                    return status(
                        404,
                        "NotFound",
                        "the server could not find the requested resource",
                    );
                }
                let versions: Vec<Value> = s.served.iter().map(|v| json!({ "groupVersion": format!("pool.kubevirt.io/{v}"), "version": v })).collect();
                return json_response(
                    200,
                    json!({ "kind": "APIGroup", "apiVersion": "v1", "name": "pool.kubevirt.io", "versions": versions, "preferredVersion": versions[0] }),
                );
            }
            _ => {}
        }
        let Some(target) = Target::of(&parts) else {
            return no_route(&method, &path);
        };
        match (method.clone(), target.resource, target.name, target.sub) {
            (Method::PATCH, "secrets", Some(name), None) => {
                let mut obj = body;
                obj["metadata"]["uid"] = json!(format!("secret-{name}"));
                obj["metadata"]["resourceVersion"] = json!(s.next_rv());
                s.secrets.insert(name.to_owned(), obj.clone());
                json_response(200, obj)
            }
            (Method::GET, "virtualmachinepools", None, None) => {
                let items: Vec<Value> = s.pools.values().cloned().collect();
                json_response(
                    200,
                    json!({ "kind": "VirtualMachinePoolList", "apiVersion": format!("pool.kubevirt.io/{}", target.version),
                            "metadata": { "resourceVersion": s.rv.to_string() }, "items": items }),
                )
            }
            (Method::GET, "virtualmachinepools", Some(name), None) => {
                if !s.stale_pool_reads.is_empty() {
                    return json_response(200, s.stale_pool_reads.remove(0));
                }
                match s.pools.get(name) {
                    Some(pool) => json_response(200, pool.clone()),
                    None => status(404, "NotFound", "virtualmachinepools not found"),
                }
            }
            (Method::PATCH, "virtualmachinepools", Some(name), None) => {
                let merge = content_type.starts_with("application/merge-patch+json");
                let mut obj = match (merge, s.pools.get(name)) {
                    (true, Some(existing)) => merge_patch(existing.clone(), &body),
                    (true, None) => {
                        return status(404, "NotFound", "virtualmachinepools not found");
                    }
                    (false, stored) => {
                        // An apply naming a resourceVersion is conditioned on it.
                        let expected = &body["metadata"]["resourceVersion"];
                        if expected.is_string()
                            && stored.is_some_and(|p| p["metadata"]["resourceVersion"] != *expected)
                        {
                            return status(409, "Conflict", "the object has been modified");
                        }
                        body
                    }
                };
                if s.prune_scale_in
                    && let Some(spec) = obj["spec"].as_object_mut()
                {
                    spec.remove("scaleInStrategy");
                }
                obj["metadata"]["uid"] = json!(format!("pool-{name}"));
                obj["metadata"]["resourceVersion"] = json!(s.next_rv());
                s.pools.insert(name.to_owned(), obj.clone());
                json_response(200, obj)
            }
            (Method::PATCH | Method::PUT, "virtualmachinepools", Some(name), Some("scale")) => {
                let replicas = body["spec"]["replicas"].clone();
                let rv = s.next_rv();
                let Some(pool) = s.pools.get_mut(name) else {
                    return status(404, "NotFound", "virtualmachinepools not found");
                };
                // A CRD's Scale carries the object's resourceVersion; a stale one is a conflict.
                let expected = &body["metadata"]["resourceVersion"];
                if expected.is_string() && *expected != pool["metadata"]["resourceVersion"] {
                    return status(409, "Conflict", "the object has been modified");
                }
                pool["spec"]["replicas"] = replicas.clone();
                pool["metadata"]["resourceVersion"] = json!(rv);
                json_response(
                    200,
                    json!({ "kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": { "name": name }, "spec": { "replicas": replicas }, "status": { "replicas": 0 } }),
                )
            }
            (Method::GET, "virtualmachines", None, None) => {
                if s.forbid_vm_watch {
                    return status(
                        403,
                        "Forbidden",
                        "virtualmachines.kubevirt.io is forbidden: User \"system:serviceaccount:ci:rp\" cannot list resource",
                    );
                }
                let items: Vec<Value> = s.vms.values().cloned().collect();
                json_response(
                    200,
                    json!({ "kind": "VirtualMachineList", "apiVersion": "kubevirt.io/v1", "metadata": { "resourceVersion": s.rv.to_string() }, "items": items }),
                )
            }
            (Method::GET, "virtualmachines", Some(name), None) => match s.vms.get(name) {
                Some(vm) => json_response(200, vm.clone()),
                None => status(404, "NotFound", "virtualmachines not found"),
            },
            (Method::DELETE, "virtualmachines", Some(name), None) => {
                let Some(mut vm) = s.vms.get(name).cloned() else {
                    return status(404, "NotFound", "virtualmachines not found");
                };
                let pre = &body["preconditions"];
                if pre["uid"]
                    .as_str()
                    .is_some_and(|u| Some(u) != vm["metadata"]["uid"].as_str())
                    || pre["resourceVersion"]
                        .as_str()
                        .is_some_and(|rv| Some(rv) != vm["metadata"]["resourceVersion"].as_str())
                {
                    return status(409, "Conflict", "Precondition failed");
                }
                let has_finalizers = vm["metadata"]["finalizers"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty());
                if has_finalizers {
                    vm["metadata"]["deletionTimestamp"] = json!("2026-01-01T01:00:00Z");
                    vm = s.store_vm("MODIFIED", vm);
                } else {
                    s.vms.remove(name);
                    s.watch_events
                        .push_back(json!({ "type": "DELETED", "object": vm.clone() }));
                }
                drop(s);
                self.wake();
                json_response(200, vm)
            }
            (Method::PATCH, "virtualmachines", Some(name), None) => {
                let Some(mut vm) = s.vms.get(name).cloned() else {
                    return status(404, "NotFound", "virtualmachines not found");
                };
                for op in body.as_array().into_iter().flatten() {
                    let pointer = op["path"].as_str().unwrap_or("");
                    match op["op"].as_str() {
                        Some("test") if vm.pointer(pointer) != Some(&op["value"]) => {
                            return status(422, "Invalid", &format!("test failed at {pointer}"));
                        }
                        Some("replace") => match vm.pointer_mut(pointer) {
                            Some(slot) => *slot = op["value"].clone(),
                            None => return status(422, "Invalid", "replace of a missing path"),
                        },
                        _ => {}
                    }
                }
                let vm = s.store_vm("MODIFIED", vm);
                drop(s);
                self.wake();
                json_response(200, vm)
            }
            (Method::POST, "events", None, None) => {
                s.events.push(body.clone());
                json_response(201, body)
            }
            (Method::GET, "leases", Some(_), None) => s.lease.clone().map_or_else(
                || status(404, "NotFound", "leases not found"),
                |l| json_response(200, l),
            ),
            (Method::POST, "leases", None, None) => {
                if s.lease.is_some() {
                    return status(409, "AlreadyExists", "leases already exists");
                }
                let mut lease = body;
                lease["metadata"]["uid"] = json!("lease-uid");
                lease["metadata"]["resourceVersion"] = json!(s.next_rv());
                s.lease = Some(lease.clone());
                json_response(201, lease)
            }
            (Method::PATCH, "leases", Some(_), None) => {
                let rv = s.next_rv();
                let Some(lease) = s.lease.as_mut() else {
                    return status(404, "NotFound", "leases not found");
                };
                // Field ownership: an apply that would take a held lease is refused.
                let current = lease["spec"]["holderIdentity"].as_str().map(str::to_owned);
                if content_type.starts_with("application/apply-patch")
                    && let (Some(current), Some(wanted)) =
                        (current.as_deref(), body["spec"]["holderIdentity"].as_str())
                    && current != wanted
                {
                    return status(
                        409,
                        "Conflict",
                        "Apply failed with 1 conflict: conflict with the holder",
                    );
                }
                merge_spec(lease, &body);
                lease["metadata"]["resourceVersion"] = json!(rv);
                json_response(200, lease.clone())
            }
            _ => no_route(&method, &path),
        }
    }

    /// A long-poll watch: returns the queued events (or waits briefly for some), then ends,
    /// as a server-side watch timeout would.
    async fn watch(self) -> Response {
        if self.lock().watch_events.is_empty() {
            let _ = tokio::time::timeout(Duration::from_millis(300), self.wake.notified()).await;
        }
        let events: Vec<Value> = self.lock().watch_events.drain(..).collect();
        let mut body = String::new();
        for e in events {
            body.push_str(&e.to_string());
            body.push('\n');
        }
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("watch response")
    }
}
