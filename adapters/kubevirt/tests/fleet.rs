//! API conversations of `KubeVirtFleet` against a local fake Kubernetes API server: verbs,
//! paths, query parameters, content types and bodies, for install, no-op, scale out, retire,
//! recycle, a VM that starts between decision and delete, conflicts, 403s and watch restarts.

mod common;

use std::time::Duration;

use common::{class, config};
use http::Method;
use provisioner_core::{
    ErrorKind, FleetState, Plan, ResourceClass, VmFleet, VmPhase, VmRef, plan_for,
};
use provisioner_kubevirt::{
    DRAIN_ANNOTATION, FleetOptions, KubeVirtError, KubeVirtFleet, VmOptions, pool_name,
    proxy_secret_name, render_objects, secret_name,
};
use provisioner_testkit::{FakeKube, NS, Recorded, pool_owner};
use serde_json::{Value, json};

const POOL_FINALIZER: &str = "pool.kubevirt.io/finalizer";
const VM_FINALIZER: &str = "kubevirt.io/virtualMachineControllerFinalize";

fn opts() -> FleetOptions {
    FleetOptions::new(NS, "https://runner.circleci.com")
}

fn rc(name: &str) -> ResourceClass {
    ResourceClass::parse(name).expect("class")
}

/// A VM as KubeVirt's pool controller creates it: labelled from the template and controlled
/// by the pool (the fake gives pool `p` the UID `pool-p`).
fn vm(name: &str, uid: &str, pool: &str, printable: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": name, "namespace": NS, "uid": uid,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": { "app.kubernetes.io/managed-by": "runner-provisioner", "runner-provisioner/pool": pool },
            "finalizers": [POOL_FINALIZER, VM_FINALIZER],
            "ownerReferences": [pool_owner(pool)],
        },
        "status": { "printableStatus": printable, "created": true },
    })
}

/// A fleet whose class already has a pool at `replicas`, with the given VMs.
async fn with_pool(
    class_name: &str,
    replicas: u32,
    vms: &[(&str, &str, &str)],
) -> (FakeKube, KubeVirtFleet, ResourceClass) {
    let (fake, _, client) = FakeKube::serving(&["v1beta1"]).await;
    let class = rc(class_name);
    let pool = pool_name(&class);
    let fleet = KubeVirtFleet::new(client, opts());
    fleet
        .ensure(&common::class(class_name))
        .await
        .expect("ensure");
    if replicas > 0 {
        fleet
            .apply(
                &class,
                &Plan {
                    target_replicas: replicas,
                    ..Plan::default()
                },
            )
            .await
            .expect("scale");
    }
    for (i, (name, uid, printable)) in vms.iter().enumerate() {
        let _ = i;
        fake.upsert_vm(vm(name, uid, &pool, printable));
    }
    wait_for(&fleet, &class, |f| f.vms.len() == vms.len()).await;
    fake.clear_log();
    (fake, fleet, class)
}

async fn wait_for(
    fleet: &KubeVirtFleet,
    class: &ResourceClass,
    ready: impl Fn(&FleetState) -> bool,
) -> FleetState {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let state = fleet.observe(class).await.expect("observe");
        if ready(&state) {
            return state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fleet never reached the expected state: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn summary(requests: &[Recorded]) -> Vec<String> {
    requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test]
async fn first_install_applies_secret_and_empty_pool_then_nothing_when_unchanged() {
    let (fake, _, client) = FakeKube::serving(&["v1alpha1", "v1beta1"]).await;
    let fleet = KubeVirtFleet::connect(client, opts())
        .await
        .expect("connect");
    let c = class("my-org/default");
    let pool = pool_name(&c.name);
    fleet.ensure(&c).await.expect("ensure");

    let requests = fake.requests();
    assert_eq!(
        summary(&requests),
        vec![
            "GET /apis/pool.kubevirt.io".to_owned(),
            format!(
                "GET /apis/pool.kubevirt.io/v1beta1/namespaces/{NS}/virtualmachinepools/{pool}"
            ),
            format!(
                "PATCH /api/v1/namespaces/{NS}/secrets/{}",
                secret_name(&c.name)
            ),
            format!(
                "PATCH /apis/pool.kubevirt.io/v1beta1/namespaces/{NS}/virtualmachinepools/{pool}"
            ),
        ]
    );
    // What is applied is exactly what `render` prints.
    let mut cfg = config(vec![c.clone()]);
    cfg.circleci_api_addr = "https://runner.circleci.com".to_owned();
    let rendered = render_objects(&cfg, NS, true).expect("render");
    for (request, expected) in [(&requests[2], &rendered[0]), (&requests[3], &rendered[1])] {
        assert_eq!(request.content_type, "application/apply-patch+yaml");
        assert!(
            request.query.contains("fieldManager=runner-provisioner")
                && request.query.contains("force=true"),
            "{}",
            request.query
        );
        assert_eq!(&request.body, expected);
    }
    assert_eq!(requests[3].body["spec"]["replicas"], 0);

    let state = fleet.observe(&c.name).await.expect("observe");
    assert_eq!(
        state,
        FleetState {
            spec_replicas: Some(0),
            vms: Vec::new()
        }
    );

    fake.clear_log();
    fleet.ensure(&c).await.expect("ensure again");
    assert!(
        fake.requests().is_empty(),
        "unchanged class must cost no request: {:?}",
        summary(&fake.requests())
    );

    // A changed token re-applies, keeping the live replicas.
    fleet
        .apply(
            &c.name,
            &Plan {
                target_replicas: 4,
                ..Plan::default()
            },
        )
        .await
        .expect("scale");
    fake.clear_log();
    let mut changed = c.clone();
    changed.token = provisioner_core::Secret::new("new-token");
    fleet.ensure(&changed).await.expect("ensure changed");
    let requests = fake.requests();
    assert_eq!(requests.len(), 3, "{:?}", summary(&requests));
    assert!(
        provisioner_kubevirt::secret_user_data(&requests[1].body)
            .is_some_and(|s| s.contains("new-token"))
    );
    assert_eq!(
        requests[2].body["spec"]["replicas"], 4,
        "re-apply must not reset replicas"
    );
}

#[tokio::test]
async fn with_the_sidecar_the_proxy_secret_is_applied_before_the_pool_exactly_as_rendered() {
    let (fake, _, client) = FakeKube::serving(&["v1beta1"]).await;
    let mut options = opts();
    options.vm = VmOptions {
        sidecar: true,
        bundle: None,
    };
    let fleet = KubeVirtFleet::connect(client, options.clone())
        .await
        .expect("connect");
    let c = class("my-org/default");
    let pool = pool_name(&c.name);
    fleet.ensure(&c).await.expect("ensure");
    let requests = fake.requests();
    assert_eq!(
        summary(&requests)[2..],
        [
            format!(
                "PATCH /api/v1/namespaces/{NS}/secrets/{}",
                secret_name(&c.name)
            ),
            format!(
                "PATCH /api/v1/namespaces/{NS}/secrets/{}",
                proxy_secret_name(&c.name)
            ),
            format!(
                "PATCH /apis/pool.kubevirt.io/v1beta1/namespaces/{NS}/virtualmachinepools/{pool}"
            ),
        ]
    );
    let mut cfg = config(vec![c.clone()]);
    cfg.sidecar = true;
    let rendered = render_objects(&cfg, NS, true).expect("render");
    for (request, expected) in requests[2..].iter().zip(&rendered) {
        assert_eq!(&request.body, expected);
    }
    let token = c.token.expose();
    assert!(!requests[2].body.to_string().contains(token));
    assert!(!requests[4].body.to_string().contains(token));
    assert_eq!(requests[3].body["stringData"]["token"], token);
}

#[tokio::test]
async fn a_kubevirt_without_v1beta1_pools_is_refused_before_anything_is_written() {
    for served in [&["v1alpha1"][..], &[][..]] {
        let (fake, _, client) = FakeKube::serving(served).await;
        let err = KubeVirtFleet::connect(client, opts())
            .await
            .expect_err("no v1beta1 pool API");
        assert!(matches!(err, KubeVirtError::PoolApiMissing(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("KubeVirt 1.7 or later") && text.contains("nothing was written"),
            "{text}"
        );
        assert!(fake.writes().is_empty(), "{:?}", fake.writes());
    }
}

#[tokio::test]
async fn a_kubevirt_that_drops_opportunistic_scale_in_is_refused() {
    let (fake, _, client) = FakeKube::serving(&["v1beta1"]).await;
    fake.lock().prune_scale_in = true;
    let fleet = KubeVirtFleet::connect(client, opts())
        .await
        .expect("connect");
    let err = fleet
        .ensure(&class("my-org/old"))
        .await
        .expect_err("unsafe pool");
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("scaleInStrategy.opportunistic"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn scale_out_goes_through_the_scale_subresource_only() {
    let (fake, fleet, class) = with_pool("my-org/scale", 0, &[]).await;
    let pool = pool_name(&class);
    let report = fleet
        .apply(
            &class,
            &Plan {
                target_replicas: 3,
                ..Plan::default()
            },
        )
        .await
        .expect("apply");
    assert_eq!(report.scaled, Some((0, 3)));
    let requests = fake.requests();
    assert_eq!(
        summary(&requests),
        vec![
            format!(
                "GET /apis/pool.kubevirt.io/v1beta1/namespaces/{NS}/virtualmachinepools/{pool}"
            ),
            format!(
                "PUT /apis/pool.kubevirt.io/v1beta1/namespaces/{NS}/virtualmachinepools/{pool}/scale"
            ),
        ]
    );
    assert_eq!(requests[1].content_type, "application/json");
    let pool_rv = fake.lock().pools[&pool]["metadata"]["resourceVersion"]
        .as_str()
        .map(str::parse::<u64>);
    assert_eq!(requests[1].body["kind"], "Scale");
    assert_eq!(requests[1].body["metadata"]["name"], pool.as_str());
    assert_eq!(requests[1].body["spec"], json!({ "replicas": 3 }));
    let sent_rv = requests[1].body["metadata"]["resourceVersion"]
        .as_str()
        .map(str::parse::<u64>);
    assert!(
        matches!((sent_rv, pool_rv), (Some(Ok(a)), Some(Ok(b))) if a + 1 == b),
        "the replace is conditioned on the resourceVersion read"
    );
    assert!(
        requests[1]
            .query
            .contains("fieldManager=runner-provisioner"),
        "{}",
        requests[1].query
    );

    fake.clear_log();
    let report = fleet
        .apply(
            &class,
            &Plan {
                target_replicas: 3,
                ..Plan::default()
            },
        )
        .await
        .expect("apply again");
    assert!(report.is_noop());
    assert_eq!(
        fake.requests().len(),
        1,
        "only the pool read: {:?}",
        summary(&fake.requests())
    );
}

#[tokio::test]
async fn retire_lowers_replicas_then_deletes_then_releases_the_pool_finalizer() {
    let (fake, fleet, class) = with_pool(
        "my-org/retire",
        3,
        &[
            ("p-0", "uid-a", "Running"),
            ("p-1", "uid-b", "Stopped"),
            ("p-2", "uid-c", "Running"),
        ],
    )
    .await;
    let state = fleet.observe(&class).await.expect("observe");
    let phases: Vec<VmPhase> = state.vms.iter().map(|v| v.phase).collect();
    assert_eq!(
        phases,
        vec![VmPhase::Running, VmPhase::Stopped, VmPhase::Running]
    );
    let plan = plan_for(2, &state);
    assert_eq!(plan.retire.len(), 1);
    assert_eq!(plan.retire[0].id.as_str(), "uid-b");

    let report = fleet.apply(&class, &plan).await.expect("apply");
    assert_eq!(
        (
            report.scaled,
            report.retired,
            report.recycled,
            report.refused
        ),
        (Some((3, 2)), 1, 0, 0)
    );
    let requests = fake.requests();
    let vm_path = format!("/apis/kubevirt.io/v1/namespaces/{NS}/virtualmachines/p-1");
    let pos = |method: Method, suffix: &str| {
        requests
            .iter()
            .position(|r| r.method == method && r.path.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {method} {suffix}: {:?}", summary(&requests)))
    };
    let (scale, get, delete, release) = (
        pos(Method::PUT, "/scale"),
        pos(Method::GET, "/p-1"),
        pos(Method::DELETE, "/p-1"),
        pos(Method::PATCH, "/p-1"),
    );
    assert!(
        scale < get && get < delete && delete < release,
        "order: {:?}",
        summary(&requests)
    );
    assert_eq!(requests[delete].path, vm_path);
    let rv = fake.lock().vms["p-1"]["metadata"]["resourceVersion"].clone();
    assert_eq!(requests[delete].body["preconditions"]["uid"], "uid-b");
    assert!(requests[delete].body["preconditions"]["resourceVersion"].is_string());
    assert_ne!(
        requests[delete].body["preconditions"]["resourceVersion"], rv,
        "the VM changed after the delete (deletionTimestamp)"
    );
    assert_eq!(
        requests[release].content_type,
        "application/json-patch+json"
    );
    assert_eq!(
        requests[release].body,
        json!([
            { "op": "test", "path": "/metadata/uid", "value": "uid-b" },
            { "op": "test", "path": "/metadata/finalizers", "value": [POOL_FINALIZER, VM_FINALIZER] },
            { "op": "replace", "path": "/metadata/finalizers", "value": [VM_FINALIZER] },
        ])
    );
    assert_eq!(
        fake.lock().vms["p-1"]["metadata"]["finalizers"],
        json!([VM_FINALIZER]),
        "only the pool finalizer is removed"
    );
    // Nothing else was written: the running VMs were not touched.
    assert!(
        requests
            .iter()
            .all(|r| !r.path.ends_with("/p-0") && !r.path.ends_with("/p-2")),
        "{:?}",
        summary(&requests)
    );
}

#[tokio::test]
async fn recycle_deletes_the_finished_vm_and_leaves_replicas_and_finalizers_to_the_pool() {
    let (fake, fleet, class) = with_pool(
        "my-org/recycle",
        2,
        &[("p-0", "uid-a", "Running"), ("p-1", "uid-b", "Stopped")],
    )
    .await;
    let state = fleet.observe(&class).await.expect("observe");
    let plan = plan_for(2, &state);
    assert_eq!(
        (plan.target_replicas, plan.recycle.len(), plan.retire.len()),
        (2, 1, 0)
    );
    fake.clear_log();
    let report = fleet.apply(&class, &plan).await.expect("apply");
    assert_eq!(
        (
            report.scaled,
            report.recycled,
            report.retired,
            report.refused
        ),
        (None, 1, 0, 0)
    );
    let requests = fake.requests();
    assert_eq!(
        summary(&requests),
        vec![
            format!(
                "GET /apis/pool.kubevirt.io/v1beta1/namespaces/{NS}/virtualmachinepools/{}",
                pool_name(&class)
            ),
            format!("GET /apis/kubevirt.io/v1/namespaces/{NS}/virtualmachines/p-1"),
            format!("DELETE /apis/kubevirt.io/v1/namespaces/{NS}/virtualmachines/p-1"),
        ]
    );
    assert_eq!(requests[2].body["preconditions"]["uid"], "uid-b");
}

#[tokio::test]
async fn a_vm_that_starts_running_before_the_delete_is_left_alone() {
    let (fake, fleet, class) = with_pool(
        "my-org/race",
        2,
        &[("p-0", "uid-a", "Running"), ("p-1", "uid-b", "Stopped")],
    )
    .await;
    let plan = plan_for(1, &fleet.observe(&class).await.expect("observe"));
    assert_eq!(plan.retire.len(), 1);
    // Between the decision and the delete the VM is running again (say, a fresh boot).
    fake.set_vm_status("p-1", "Running");
    let report = fleet.apply(&class, &plan).await.expect("apply");
    assert_eq!((report.retired, report.refused), (0, 1));
    assert!(
        fake.requests().iter().all(|r| r.method != Method::DELETE),
        "{:?}",
        summary(&fake.requests())
    );

    // The name now belongs to a new VM (new UID): also refused, even though it is stopped.
    fake.upsert_vm(vm("p-1", "uid-new", &pool_name(&class), "Stopped"));
    fake.clear_log();
    let plan = Plan {
        target_replicas: 1,
        retire: vec![VmRef {
            id: provisioner_core::VmId::new("uid-b"),
            name: "p-1".into(),
            reclaim: None,
        }],
        recycle: Vec::new(),
    };
    let report = fleet.apply(&class, &plan).await.expect("apply");
    assert_eq!((report.retired, report.refused), (0, 1));
    assert!(
        fake.requests().iter().all(|r| r.method != Method::DELETE),
        "{:?}",
        summary(&fake.requests())
    );
}

#[tokio::test]
async fn conflicts_refuse_the_delete_and_fail_the_scale_transiently() {
    let (fake, fleet, class) = with_pool(
        "my-org/conflict",
        2,
        &[("p-0", "uid-a", "Stopped"), ("p-1", "uid-b", "Running")],
    )
    .await;
    let plan = plan_for(1, &fleet.observe(&class).await.expect("observe"));
    assert_eq!(plan.retire.len(), 1);
    fake.fail_next(Method::DELETE, "/virtualmachines/p-0", 409);
    let report = fleet.apply(&class, &plan).await.expect("apply");
    assert_eq!((report.retired, report.refused), (0, 1));
    assert!(
        fake.requests()
            .iter()
            .all(|r| !(r.method == Method::PATCH && r.path.ends_with("/p-0"))),
        "no finalizer patch after a refused delete"
    );

    fake.fail_next(Method::PUT, "/scale", 409);
    let err = fleet
        .apply(
            &class,
            &Plan {
                target_replicas: 5,
                ..Plan::default()
            },
        )
        .await
        .expect_err("conflict");
    assert_eq!(err.kind, ErrorKind::Transient, "{}", err.message);
    assert!(
        err.message.contains("scale VirtualMachinePool"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn forbidden_calls_are_permanent_errors_naming_the_call() {
    let (fake, _, client) = FakeKube::serving(&["v1beta1"]).await;
    let fleet = KubeVirtFleet::new(client, opts());
    let c = class("my-org/rbac");
    fake.fail_next(
        Method::PATCH,
        &format!("/secrets/{}", secret_name(&c.name)),
        403,
    );
    let err = fleet.ensure(&c).await.expect_err("forbidden");
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("apply Secret") && err.message.contains("403"),
        "{}",
        err.message
    );
    assert!(!err.message.contains("tok-plain-123"));
    assert!(
        fake.requests()
            .iter()
            .all(|r| !(r.method == Method::PATCH && r.path.contains("virtualmachinepools"))),
        "nothing applied after the failure"
    );

    let (fake, _, client) = FakeKube::serving(&["v1beta1"]).await;
    fake.lock().forbid_vm_watch = true;
    let fleet = KubeVirtFleet::new(client, opts());
    let err = fleet.observe(&c.name).await.expect_err("watch forbidden");
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("virtualmachines") && err.message.contains("forbidden"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn watch_events_and_restarts_keep_the_cache_current() {
    let (fake, fleet, class) = with_pool("my-org/watch", 2, &[("p-0", "uid-a", "Starting")]).await;
    let pool = pool_name(&class);
    // An ordinary event.
    fake.set_vm_status("p-0", "Running");
    wait_for(&fleet, &class, |f| {
        f.vms.first().is_some_and(|v| v.phase == VmPhase::Running)
    })
    .await;
    // The watch expires (410 Gone) while a VM appeared without an event: the relist finds it.
    fake.clear_log();
    {
        let mut s = fake.lock();
        let mut extra = vm("p-1", "uid-b", &pool, "Stopped");
        extra["metadata"]["resourceVersion"] = json!("999");
        s.vms.insert("p-1".to_owned(), extra);
        s.watch_events.push_back(json!({ "type": "ERROR", "object": { "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired", "message": "too old resource version" } }));
    }
    fake.wake();
    let state = wait_for(&fleet, &class, |f| f.vms.len() == 2).await;
    assert_eq!(state.vms[1].phase, VmPhase::Stopped);
    let lists = fake
        .lock()
        .log
        .iter()
        .filter(|r| r.is_vm_list() && !r.query.contains("watch=true"))
        .count();
    assert!(lists >= 1, "the watcher relisted after 410");
}

#[tokio::test]
async fn an_interrupted_retire_is_repaired_on_the_next_apply() {
    let (fake, fleet, class) = with_pool(
        "my-org/repair",
        2,
        &[("p-0", "uid-a", "Running"), ("p-1", "uid-b", "Running")],
    )
    .await;
    let pool = pool_name(&class);
    // A crash after the delete, before the finalizer patch: deleting, held by the pool, 3 VMs > 2.
    let mut stuck = vm("p-2", "uid-c", &pool, "Stopped");
    stuck["metadata"]["deletionTimestamp"] = json!("2026-01-01T01:00:00Z");
    fake.upsert_vm(stuck);
    let state = wait_for(&fleet, &class, |f| f.vms.len() == 3).await;
    let plan = plan_for(2, &state);
    assert!(
        plan.retire.is_empty() && plan.recycle.is_empty(),
        "the planner leaves deleting VMs alone"
    );
    fake.clear_log();
    fleet.apply(&class, &plan).await.expect("apply");
    let patches: Vec<Recorded> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::PATCH)
        .collect();
    assert_eq!(patches.len(), 1, "{:?}", summary(&fake.requests()));
    assert!(patches[0].path.ends_with("/virtualmachines/p-2"));
    assert_eq!(
        fake.lock().vms["p-2"]["metadata"]["finalizers"],
        json!([VM_FINALIZER])
    );

    // At diff == 0 the pool controller removes the finalizer itself: nothing to do.
    let (fake, fleet, class) = with_pool("my-org/repair2", 2, &[("p-0", "uid-a", "Running")]).await;
    let mut deleting = vm("p-1", "uid-b", &pool_name(&class), "Stopped");
    deleting["metadata"]["deletionTimestamp"] = json!("2026-01-01T01:00:00Z");
    fake.upsert_vm(deleting);
    let state = wait_for(&fleet, &class, |f| f.vms.len() == 2).await;
    fake.clear_log();
    fleet
        .apply(&class, &plan_for(2, &state))
        .await
        .expect("apply");
    assert!(
        fake.requests().iter().all(|r| r.method == Method::GET),
        "{:?}",
        summary(&fake.requests())
    );
}

#[tokio::test]
async fn scale_to_zero_lowers_replicas_and_deletes_only_finished_vms() {
    let (fake, fleet, class) = with_pool(
        "my-org/uninstall",
        3,
        &[
            ("p-0", "uid-a", "Running"),
            ("p-1", "uid-b", "Stopped"),
            ("p-2", "uid-c", "Starting"),
        ],
    )
    .await;
    let reports = fleet.scale_all_to_zero().await.expect("scale to zero");
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].0, class);
    let report = &reports[0].1;
    assert_eq!(
        (report.scaled, report.retired, report.refused),
        (Some((3, 0)), 1, 0)
    );
    let requests = fake.requests();
    let deletes: Vec<&Recorded> = requests
        .iter()
        .filter(|r| r.method == Method::DELETE)
        .collect();
    assert_eq!(deletes.len(), 1);
    assert!(deletes[0].path.ends_with("/p-1"));
    let scale = requests
        .iter()
        .find(|r| r.path.ends_with("/scale"))
        .expect("scale replace");
    assert_eq!(scale.method, Method::PUT);
    assert_eq!(scale.body["spec"], json!({ "replicas": 0 }));
}

#[tokio::test]
async fn after_scale_to_zero_the_controller_leaves_the_pool_alone() {
    let (fake, fleet, class) =
        with_pool("my-org/uninstall", 2, &[("p-0", "uid-a", "Running")]).await;
    fleet.scale_to_zero(&class).await.expect("scale to zero");
    let marked = fake
        .requests()
        .into_iter()
        .find(|r| {
            r.method == Method::PATCH && r.content_type.starts_with("application/merge-patch+json")
        })
        .expect("the pool is marked before it is scaled");
    assert!(marked.body["metadata"]["annotations"][DRAIN_ANNOTATION].is_string());
    // A controller still running during `helm uninstall` must not scale the pool back up.
    let err = VmFleet::observe(&fleet, &class)
        .await
        .expect_err("draining pool is refused");
    assert!(err.message.contains("draining"), "{err}");
    fake.clear_log();
    let plan = Plan {
        target_replicas: 5,
        retire: Vec::new(),
        recycle: Vec::new(),
    };
    VmFleet::apply(&fleet, &class, &plan)
        .await
        .expect_err("no scale-up while draining");
    assert!(
        fake.requests().iter().all(|r| r.method == Method::GET),
        "{:?}",
        summary(&fake.requests())
    );
}

#[tokio::test]
async fn a_controller_that_re_applies_its_class_during_uninstall_never_undoes_the_drain() {
    let (fake, fleet, class) = with_pool("my-org/drain-race", 3, &[]).await;
    let pool = pool_name(&class);
    let before_drain = fake.lock().pools[&pool].clone();
    fleet.scale_to_zero(&class).await.expect("scale to zero");
    let mut changed = common::class("my-org/drain-race");
    changed.token = provisioner_core::Secret::new("rotated-token");

    // The mark is visible: the class is refused before anything is written.
    fake.clear_log();
    let err = fleet.ensure(&changed).await.expect_err("draining pool");
    assert!(err.message.contains("draining"), "{}", err.message);
    assert!(
        fake.requests().iter().all(|r| r.method == Method::GET),
        "{:?}",
        summary(&fake.requests())
    );

    // The read raced the uninstall hook: the apply of the replicas read before the drain fails.
    fake.lock().stale_pool_reads.push(before_drain);
    let err = fleet.ensure(&changed).await.expect_err("conflict");
    assert_eq!(err.kind, ErrorKind::Transient, "{}", err.message);
    let stored = fake.lock().pools[&pool].clone();
    assert_eq!(stored["spec"]["replicas"], 0, "the drain was undone");
    assert!(stored["metadata"]["annotations"][DRAIN_ANNOTATION].is_string());
}

#[tokio::test]
async fn a_foreign_pool_with_our_name_is_not_taken_over() {
    let (fake, _, client) = FakeKube::serving(&["v1beta1"]).await;
    let c = class("my-org/foreign");
    fake.lock().pools.insert(pool_name(&c.name), json!({ "apiVersion": "pool.kubevirt.io/v1beta1", "kind": "VirtualMachinePool", "metadata": { "name": pool_name(&c.name), "labels": {} }, "spec": { "replicas": 5 } }));
    let fleet = KubeVirtFleet::new(client, opts());
    let err = fleet.ensure(&c).await.expect_err("foreign pool");
    assert!(
        err.message.contains("not managed by runner-provisioner"),
        "{}",
        err.message
    );
    assert!(
        fake.requests().iter().all(|r| r.method == Method::GET),
        "a foreign pool means no write at all: {:?}",
        summary(&fake.requests())
    );
}

#[tokio::test]
async fn a_pool_deleted_behind_our_back_is_reapplied_by_the_next_ensure() {
    let (fake, fleet, class) = with_pool("my-org/deleted", 2, &[]).await;
    fake.lock().pools.clear();
    let err = fleet
        .apply(
            &class,
            &Plan {
                target_replicas: 2,
                ..Plan::default()
            },
        )
        .await
        .expect_err("pool gone");
    assert_eq!(err.kind, ErrorKind::Transient, "{}", err.message);
    fake.clear_log();
    fleet
        .ensure(&common::class("my-org/deleted"))
        .await
        .expect("ensure");
    let pool_apply = fake
        .requests()
        .into_iter()
        .find(|r| r.method == Method::PATCH && r.path.contains("virtualmachinepools"))
        .expect("pool re-applied");
    assert_eq!(
        pool_apply.body["spec"]["replicas"], 0,
        "a re-created pool starts empty"
    );
}

#[tokio::test]
async fn a_vm_already_being_deleted_is_not_counted_twice() {
    let (fake, fleet, class) = with_pool("my-org/twice", 1, &[("p-0", "uid-a", "Stopped")]).await;
    let plan = plan_for(0, &fleet.observe(&class).await.expect("observe"));
    assert_eq!(plan.retire.len(), 1);
    let first = fleet.apply(&class, &plan).await.expect("apply");
    assert_eq!(first.retired, 1);
    // The same plan again (as from a cache that has not seen the delete yet).
    fake.clear_log();
    let second = fleet.apply(&class, &plan).await.expect("apply again");
    assert_eq!((second.retired, second.refused), (0, 0));
    assert!(
        fake.requests().iter().all(|r| r.method != Method::DELETE),
        "{:?}",
        summary(&fake.requests())
    );
}

#[tokio::test]
async fn a_pool_changed_since_it_was_read_fails_the_scale_with_a_conflict() {
    let (fake, fleet, class) = with_pool("my-org/stale", 1, &[]).await;
    // Someone else bumps the pool between our read and our replace.
    let pool = pool_name(&class);
    {
        let mut s = fake.lock();
        let stale = s.pools[&pool].clone();
        s.stale_pool_reads.push(stale);
        let rv = s.next_rv();
        s.pools.get_mut(&pool).expect("pool")["metadata"]["resourceVersion"] = json!(rv);
    }
    let err = fleet
        .apply(
            &class,
            &Plan {
                target_replicas: 4,
                ..Plan::default()
            },
        )
        .await
        .expect_err("conflict");
    assert_eq!(err.kind, ErrorKind::Transient, "{}", err.message);
    assert_eq!(
        fake.lock().pools[&pool]["spec"]["replicas"],
        1,
        "nothing changed"
    );
}

#[tokio::test]
async fn membership_is_by_controller_owner_reference_not_by_label() {
    let (fake, fleet, class) = with_pool("my-org/owners", 1, &[("p-0", "uid-a", "Stopped")]).await;
    let pool = pool_name(&class);
    // An orphan of an earlier pool of the same name (another UID), and a labelled VM without
    // any owner: both carry the pool's labels, neither is the pool's.
    let mut orphan = vm("p-1", "uid-b", &pool, "Stopped");
    orphan["metadata"]["ownerReferences"][0]["uid"] = json!("pool-of-yesterday");
    fake.upsert_vm(orphan);
    let mut unowned = vm("p-2", "uid-c", &pool, "Stopped");
    unowned["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("ownerReferences");
    fake.upsert_vm(unowned);
    let mut not_controller = vm("p-3", "uid-d", &pool, "Stopped");
    not_controller["metadata"]["ownerReferences"][0]["controller"] = json!(false);
    fake.upsert_vm(not_controller);
    // Let the cache see all three before asserting they are left out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let state = fleet.observe(&class).await.expect("observe");
    let names: Vec<&str> = state.vms.iter().map(|v| v.name.as_ref()).collect();
    assert_eq!(names, vec!["p-0"]);
}

#[tokio::test]
async fn a_deleted_user_data_secret_is_recreated_without_a_restart() {
    let (fake, _, client) = FakeKube::serving(&["v1beta1"]).await;
    let mut options = opts();
    options.secret_recheck = Duration::ZERO;
    let fleet = KubeVirtFleet::new(client, options);
    let c = class("my-org/secret");
    fleet.ensure(&c).await.expect("ensure");
    let name = secret_name(&c.name);
    let applied = fake.lock().secrets[&name].clone();

    // Present: one GET, no write.
    fake.clear_log();
    fleet.observe(&c.name).await.expect("observe");
    assert_eq!(
        summary(&fake.requests()),
        vec![
            format!(
                "GET /apis/pool.kubevirt.io/v1beta1/namespaces/{NS}/virtualmachinepools/{}",
                pool_name(&c.name)
            ),
            format!("GET /api/v1/namespaces/{NS}/secrets/{name}"),
        ]
    );

    // Deleted by someone: the next observe applies it again, as ensure did.
    fake.lock().secrets.clear();
    fake.clear_log();
    fleet.observe(&c.name).await.expect("observe");
    let writes = fake.writes();
    assert_eq!(
        writes,
        vec![(
            Method::PATCH,
            format!("/api/v1/namespaces/{NS}/secrets/{name}")
        )]
    );
    let recreated = fake.lock().secrets[&name].clone();
    assert_eq!(recreated["stringData"], applied["stringData"]);

    // With the default interval, a second observe right after costs no Secret read.
    let (fake, _, client) = FakeKube::serving(&["v1beta1"]).await;
    let fleet = KubeVirtFleet::new(client, opts());
    fleet.ensure(&c).await.expect("ensure");
    fake.clear_log();
    fleet.observe(&c.name).await.expect("observe");
    assert!(
        fake.requests()
            .iter()
            .all(|r| !r.path.contains("/secrets/")),
        "{:?}",
        summary(&fake.requests())
    );
}

/// An unschedulable VM as KubeVirt shows it: created at `at_ms`, Ready=False since then.
fn unschedulable_vm(name: &str, uid: &str, pool: &str, at_ms: i64) -> Value {
    let at = k8s_openapi::jiff::Timestamp::from_millisecond(at_ms)
        .expect("valid time")
        .to_string();
    let mut v = vm(name, uid, pool, "ErrorUnschedulable");
    v["metadata"]["creationTimestamp"] = json!(at);
    v["status"] = json!({
        "printableStatus": "ErrorUnschedulable",
        "conditions": [
            { "type": "Ready", "status": "False", "lastTransitionTime": at, "reason": "PodNotExists" },
            { "type": "Failure", "status": "True", "lastTransitionTime": at, "reason": "Unschedulable" },
        ],
    });
    v
}

/// Ten minutes of a full cluster, one cycle a second (on a virtual clock the VMs' own
/// timestamps follow): each stuck slot is deleted only once its VM has failed for the class's
/// `failingTimeout` (5 minutes), so at most twice in the ten minutes, never once a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_unschedulable_for_ten_minutes_are_deleted_once_per_failing_timeout() {
    let (fake, fleet, class) = with_pool("my-org/full", 2, &[]).await;
    let pool = pool_name(&class);
    let config = common::class("my-org/full");
    let t0: i64 = 1_800_000_000_000;
    for i in 0..2 {
        fake.upsert_vm(unschedulable_vm(
            &format!("p-{i}"),
            &format!("uid-{i}-0"),
            &pool,
            t0,
        ));
    }
    wait_for(&fleet, &class, |f| f.vms.len() == 2).await;
    fake.clear_log();
    let mut state = provisioner_core::PlannerState::default();
    let demand = provisioner_core::Demand {
        unclaimed: 2,
        running: 0,
    };
    let mut generation = 0;
    let mut deletes_before_timeout = 0;
    for second in 0..=600 {
        let now = provisioner_core::Timestamp::from_unix_millis(t0 + second * 1000);
        let fleet_state = fleet.observe(&class).await.expect("observe");
        let decision =
            provisioner_core::decide(&config.scaling, Some(demand), &fleet_state, now, &mut state);
        if !decision.plan.is_noop(&fleet_state) {
            let before = fake
                .requests()
                .iter()
                .filter(|r| r.method == Method::DELETE)
                .count();
            let report = fleet.apply(&class, &decision.plan).await.expect("apply");
            let after = fake
                .requests()
                .iter()
                .filter(|r| r.method == Method::DELETE)
                .count();
            // Every delete is reported as a reclaim, with the reason the planner gave.
            assert_eq!(report.reclaimed.len(), after - before, "{report:?}");
            assert!(
                report
                    .reclaimed
                    .iter()
                    .all(|(_, why)| *why == provisioner_core::Reclaim::FailedToStart),
                "{report:?}"
            );
            if second < 300 {
                deletes_before_timeout += after - before;
            }
        }
        // The pool controller replaces a deleted VM under the same name, with a new UID, as
        // unschedulable as before.
        let deleted: Vec<String> = fake
            .lock()
            .vms
            .iter()
            .filter(|(_, v)| v["metadata"]["deletionTimestamp"].is_string())
            .map(|(n, _)| n.clone())
            .collect();
        for name in deleted {
            generation += 1;
            fake.lock().vms.remove(&name);
            let uid = format!("uid-{name}-{generation}");
            fake.upsert_vm(unschedulable_vm(&name, &uid, &pool, t0 + second * 1000));
        }
        if generation > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut per_slot = std::collections::BTreeMap::<String, usize>::new();
    for r in fake
        .requests()
        .iter()
        .filter(|r| r.method == Method::DELETE)
    {
        *per_slot
            .entry(r.path.rsplit('/').next().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        deletes_before_timeout, 0,
        "a VM was deleted before failing 5 minutes"
    );
    assert_eq!(
        per_slot.len(),
        2,
        "both stuck slots were reclaimed: {per_slot:?}"
    );
    assert!(
        per_slot.values().all(|&n| n <= 2),
        "at most one delete per slot per 5 minutes of failing: {per_slot:?}"
    );
    println!("deletes per stuck slot over 10 minutes at 1 cycle/s: {per_slot:?}");
}
