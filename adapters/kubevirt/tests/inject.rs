//! The sidecar injector on AdmissionReview v1 requests carrying a real-shaped `virt-launcher`
//! pod (tests/fixtures/virt-launcher-pod.json, a KubeVirt 1.8 launcher pod of one of our pools).

use base64::Engine as _;
use provisioner_kubevirt::{InjectorOptions, PROXY_CONTAINER, PROXY_PORT, review};
use serde_json::{Value, json};

const POD: &str = include_str!("fixtures/virt-launcher-pod.json");

fn opts() -> InjectorOptions {
    InjectorOptions {
        image: "ghcr.io/runner-provisioner/runner-provisioner:0.2.0".to_owned(),
        pull_policy: Some("IfNotPresent".to_owned()),
        namespaces: vec!["runners".to_owned()],
    }
}

fn pod() -> Value {
    serde_json::from_str(POD).expect("fixture")
}

fn admission(pod: &Value, namespace: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "requestKind": { "group": "", "version": "v1", "kind": "Pod" },
            "requestResource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": { "username": "system:serviceaccount:kubevirt:kubevirt-controller" },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions" }
        }
    }))
    .expect("json")
}

/// The response, checked for the fields every answer must carry.
fn respond(body: &[u8]) -> Value {
    let out = review(body, &opts()).expect("a review to answer");
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    assert_eq!(
        out["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002",
        "{out}"
    );
    out["response"].clone()
}

/// The pod after the response's patch, as the API server would store it.
fn patched(original: &Value, response: &Value) -> Value {
    let Some(patch) = response.get("patch").and_then(Value::as_str) else {
        return original.clone();
    };
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .expect("base64 patch");
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSONPatch");
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &patch).expect("patch applies");
    doc
}

#[test]
fn our_pools_launcher_pod_gets_the_proxy_container_its_secret_volume_and_nothing_else() {
    let original = pod();
    let response = respond(&admission(&original, "runners"));
    assert_eq!(response["allowed"], true);
    let after = patched(&original, &response);

    // Exactly one container and one volume more; everything else byte-for-byte the same.
    let mut without = after.clone();
    let init = without["spec"]["initContainers"]
        .as_array_mut()
        .expect("initContainers");
    let proxy = init.pop().expect("the injected container");
    let volumes = without["spec"]["volumes"].as_array_mut().expect("volumes");
    let volume = volumes.pop().expect("the injected volume");
    assert_eq!(without, original, "the patch changed more than it adds");

    assert_eq!(proxy["name"], PROXY_CONTAINER);
    assert_eq!(
        proxy["image"],
        "ghcr.io/runner-provisioner/runner-provisioner:0.2.0"
    );
    assert_eq!(proxy["imagePullPolicy"], "IfNotPresent");
    assert_eq!(proxy["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(proxy["args"][0], "proxy");
    let args: Vec<&str> = proxy["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--listen", &format!("0.0.0.0:{PROXY_PORT}")]),
        "{args:?}"
    );
    let sc = &proxy["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(proxy["volumeMounts"][0]["name"], volume["name"]);
    assert_eq!(proxy["volumeMounts"][0]["readOnly"], true);
    assert_eq!(
        volume["secret"]["secretName"],
        "my-org-linux-small-1acd84b9-proxy"
    );
    // The VM's own containers do not see the Secret.
    for c in after["spec"]["containers"].as_array().expect("containers") {
        let mounts = c["volumeMounts"].as_array().expect("mounts");
        assert!(
            mounts.iter().all(|m| m["name"] != volume["name"]),
            "{} mounts the proxy Secret",
            c["name"]
        );
    }

    // A reinvocation of the webhook adds nothing more.
    let again = respond(&admission(&after, "runners"));
    assert_eq!(again["allowed"], true);
    assert!(again.get("patch").is_none(), "{again}");
}

#[test]
fn a_pod_without_init_containers_or_volumes_gets_the_lists_created() {
    let mut original = pod();
    let spec = original["spec"].as_object_mut().expect("spec");
    spec.remove("initContainers");
    spec.remove("volumes");
    let after = patched(&original, &respond(&admission(&original, "runners")));
    assert_eq!(after["spec"]["initContainers"][0]["name"], PROXY_CONTAINER);
    assert_eq!(after["spec"]["volumes"][0]["name"], PROXY_CONTAINER);
    assert_eq!(after["spec"]["volumes"].as_array().map(Vec::len), Some(1));
}

#[test]
fn pods_of_other_pools_namespaces_or_kinds_are_untouched() {
    let untouched = |pod: &Value, namespace: &str, why: &str| {
        let response = respond(&admission(pod, namespace));
        assert_eq!(response["allowed"], true, "{why}: {response}");
        assert!(response.get("patch").is_none(), "{why}: {response}");
    };
    untouched(&pod(), "other-team", "a namespace we do not manage");

    let mut p = pod();
    p["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("someone-else");
    untouched(&p, "runners", "another manager's pool");

    let mut p = pod();
    p["metadata"]["labels"]
        .as_object_mut()
        .expect("labels")
        .remove("runner-provisioner/token-proxy");
    untouched(&p, "runners", "a pool rendered without the sidecar");

    let mut p = pod();
    p["metadata"]["labels"]["kubevirt.io"] = json!("virt-handler");
    untouched(&p, "runners", "not a virt-launcher pod");

    let mut p = pod();
    p["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("labels");
    untouched(&p, "runners", "an unlabelled pod");

    // An UPDATE of our pod is left alone too.
    let mut body: Value = serde_json::from_slice(&admission(&pod(), "runners")).expect("json");
    body["request"]["operation"] = json!("UPDATE");
    let response = respond(&serde_json::to_vec(&body).expect("json"));
    assert!(response.get("patch").is_none(), "{response}");
}

#[test]
fn malformed_reviews_get_error_responses_never_a_panic() {
    for body in [
        &b""[..],
        b"not json",
        b"[]",
        b"{}",
        br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}"#,
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#,
    ] {
        let err = review(body, &opts()).expect_err("malformed");
        assert!(
            err.to_string().contains("AdmissionReview"),
            "{}: {err}",
            String::from_utf8_lossy(body)
        );
    }

    // A review we can answer, about one of our pods we cannot read: refused with a reason.
    let mut bad = pod();
    bad["spec"]["volumes"] = json!("not a list");
    let response = respond(&admission(&bad, "runners"));
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 400);
    assert!(
        response["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.volumes")),
        "{response}"
    );
    let mut bad = pod();
    bad["metadata"]["labels"]["runner-provisioner/pool"] = json!("../../etc");
    let response = respond(&admission(&bad, "runners"));
    assert_eq!(response["allowed"], false, "{response}");
    let mut bad = pod();
    bad["metadata"]["labels"] = json!(["x"]);
    assert_eq!(respond(&admission(&bad, "runners"))["allowed"], false);
}
