//! The rendered objects: shape, safety fields, redaction, refusals, and every pool validated
//! against KubeVirt 1.8.4's VirtualMachinePool schema in strict mode (when ../shared is there).

mod common;

use std::path::PathBuf;

use common::{EVIL, class, config, full_class};
use provisioner_core::Secret;
use provisioner_core::config::RunnerBundle;
use provisioner_kubevirt::{
    BUNDLE_VOLUME, CLOUD_INIT_VOLUME, KubeVirtError, SIDECAR_LABEL, VmOptions, pool_name,
    proxy_secret_name, render, render_objects, render_objects_with, render_with, secret_name,
    secret_user_data,
};
use serde_json::{Value, json};

fn schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/schemas/kubevirt-v1.8.4/virtualmachinepool.json")
}

/// A strict structural-schema check: types, required, enums, and unknown fields rejected in
/// every object schema that lists properties (unless it preserves unknown fields).
fn validate(value: &Value, schema: &Value, path: &str, errors: &mut Vec<String>) {
    if value.is_null() && schema.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            errors.push(format!("{path}: expected int or string, got {value}"));
        }
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {options:?}"));
    }
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(object) = value.as_object() else {
                errors.push(format!("{path}: expected an object, got {value}"));
                return;
            };
            for key in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !object.contains_key(key) {
                    errors.push(format!("{path}: required field {key} is missing"));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            for (key, child) in object {
                let child_path = format!("{path}.{key}");
                if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
                    validate(child, child_schema, &child_path, errors);
                } else if let Some(extra) =
                    schema.get("additionalProperties").filter(|a| a.is_object())
                {
                    validate(child, extra, &child_path, errors);
                } else if properties.is_some() && !preserve {
                    errors.push(format!("{child_path}: unknown field"));
                }
            }
        }
        Some("array") => match value.as_array() {
            Some(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        validate(item, item_schema, &format!("{path}[{i}]"), errors);
                    }
                }
            }
            None => errors.push(format!("{path}: expected an array, got {value}")),
        },
        Some("string") if !value.is_string() => {
            errors.push(format!("{path}: expected a string, got {value}"))
        }
        Some("integer") if !(value.is_i64() || value.is_u64()) => {
            errors.push(format!("{path}: expected an integer, got {value}"))
        }
        Some("number") if !value.is_number() => {
            errors.push(format!("{path}: expected a number, got {value}"))
        }
        Some("boolean") if !value.is_boolean() => {
            errors.push(format!("{path}: expected a boolean, got {value}"))
        }
        _ => {}
    }
}

fn pools(objects: &[Value]) -> Vec<&Value> {
    objects
        .iter()
        .filter(|o| o["kind"] == "VirtualMachinePool")
        .collect()
}

fn sample_config() -> provisioner_core::Config {
    let mut bridged = class("acme_corp/Large-GPU:arm64");
    bridged.spec = json!({
        "domain": { "devices": { "interfaces": [ { "name": "br", "bridge": {} } ] } },
        "networks": [ { "name": "br", "multus": { "networkName": "ci-net" } } ],
        "volumes": [ { "name": "disk", "containerDisk": { "image": "example/img" } } ],
    });
    bridged.user_data = Some(Secret::new("apt-get install -y jq"));
    let mut hostile = full_class("my-org/hostile");
    hostile.token = Secret::new(EVIL);
    config(vec![
        class("my-org/default"),
        full_class("my-org/full"),
        bridged,
        hostile,
    ])
}

#[test]
fn every_rendered_pool_passes_the_strict_kubevirt_schema() {
    let path = schema_path();
    let objects = render_objects(&sample_config(), "runner-provisioner", true).expect("render");
    assert_eq!(pools(&objects).len(), 4);
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!(
            "skipping schema validation: ../shared not present ({})",
            path.display()
        );
        return;
    };
    println!("validating rendered pools against {}", path.display());
    let file: Value = serde_json::from_str(&text).expect("schema JSON");
    let schema = &file["openAPIV3Schema"];
    assert!(schema.is_object(), "schema file has openAPIV3Schema");
    for pool in pools(&objects) {
        let mut errors = Vec::new();
        validate(pool, schema, "", &mut errors);
        assert!(
            errors.is_empty(),
            "{} fails the schema:\n{}",
            pool["metadata"]["name"],
            errors.join("\n")
        );
    }
    // The validator itself rejects what the API server would silently prune.
    let mut misspelt = pools(&objects)[0].clone();
    misspelt["spec"]["scaleInStrategy"]["oportunistic"] = json!({});
    misspelt["spec"]["virtualMachineTemplate"]["spec"]["runStrategy"] = json!(3);
    let mut errors = Vec::new();
    validate(&misspelt, schema, "", &mut errors);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("scaleInStrategy.oportunistic: unknown field")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("runStrategy: expected a string")),
        "{errors:?}"
    );
}

#[test]
fn pool_template_is_one_job_vms_with_cloud_init_and_safe_scale_in() {
    let objects =
        render_objects(&config(vec![class("my-org/default")]), "ci", true).expect("render");
    let class_name = provisioner_core::ResourceClass::parse("my-org/default").expect("class");
    let (secret, pool) = (&objects[0], &objects[1]);
    let name = pool_name(&class_name);
    let labels = json!({ "app.kubernetes.io/managed-by": "runner-provisioner", "runner-provisioner/pool": name });

    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["metadata"]["name"], secret_name(&class_name));
    assert_eq!(secret["metadata"]["namespace"], "ci");
    assert!(secret_user_data(secret).is_some_and(|s| s.starts_with("#!/bin/bash\n")));

    assert_eq!(pool["apiVersion"], "pool.kubevirt.io/v1beta1");
    assert_eq!(pool["metadata"]["name"], name.as_str());
    assert_eq!(pool["metadata"]["labels"], labels);
    assert_eq!(
        pool["metadata"]["annotations"]["runner-provisioner/resource-class"],
        "my-org/default"
    );
    let spec = &pool["spec"];
    assert_eq!(spec["replicas"], 0, "a new pool starts empty");
    assert_eq!(spec["selector"]["matchLabels"], labels);
    assert_eq!(
        spec["scaleInStrategy"],
        json!({ "opportunistic": { "statePreservation": "Disabled" } })
    );
    assert_eq!(spec["updateStrategy"], json!({ "opportunistic": {} }));
    let vm = &spec["virtualMachineTemplate"];
    assert_eq!(vm["metadata"]["labels"], labels);
    assert_eq!(vm["spec"]["runStrategy"], "Once");
    assert_eq!(vm["spec"]["template"]["metadata"]["labels"], labels);
    let vmi = &vm["spec"]["template"]["spec"];
    assert_eq!(
        vmi["domain"]["resources"]["requests"],
        json!({ "memory": "2Gi", "cpu": "1" })
    );
    assert_eq!(
        vmi["domain"]["devices"]["disks"],
        json!([{ "name": "disk", "disk": { "bus": "virtio" } }, { "name": CLOUD_INIT_VOLUME, "disk": { "bus": "virtio" } }])
    );
    assert_eq!(
        vmi["volumes"][1],
        json!({ "name": CLOUD_INIT_VOLUME, "cloudInitNoCloud": { "secretRef": { "name": secret_name(&class_name) } } })
    );
    assert_eq!(
        vmi["domain"]["devices"]["interfaces"],
        json!([{ "name": "default", "masquerade": {} }])
    );
    assert_eq!(vmi["networks"], json!([{ "name": "default", "pod": {} }]));
}

#[test]
fn a_spec_with_its_own_networking_is_left_alone() {
    let objects = render_objects(&sample_config(), "ci", true).expect("render");
    let bridged = objects
        .iter()
        .find(|o| {
            o["kind"] == "VirtualMachinePool"
                && o["metadata"]["annotations"]["runner-provisioner/resource-class"]
                    == "acme_corp/Large-GPU:arm64"
        })
        .expect("bridged pool");
    let vmi = &bridged["spec"]["virtualMachineTemplate"]["spec"]["template"]["spec"];
    assert_eq!(
        vmi["domain"]["devices"]["interfaces"],
        json!([{ "name": "br", "bridge": {} }])
    );
    assert_eq!(
        vmi["networks"],
        json!([{ "name": "br", "multus": { "networkName": "ci-net" } }])
    );
    assert_eq!(
        vmi["domain"]["devices"]["disks"],
        json!([{ "name": CLOUD_INIT_VOLUME, "disk": { "bus": "virtio" } }])
    );
}

#[test]
fn cloud_init_in_the_spec_is_refused_with_a_clear_error() {
    for kind in ["cloudInitNoCloud", "cloudInitConfigDrive"] {
        let mut c = class("my-org/own-cloud-init");
        c.spec["volumes"] = json!([
            { "name": "disk", "containerDisk": { "image": "x" } },
            { "name": "ci", kind: { "userData": "#cloud-config" } }
        ]);
        let err = render_objects(&config(vec![c]), "ci", false).expect_err("refused");
        assert!(matches!(err, KubeVirtError::InvalidSpec { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("my-org/own-cloud-init")
                && text.contains("spec.volumes[1]")
                && text.contains(kind),
            "{text}"
        );
    }
    let mut c = class("my-org/not-a-map");
    c.spec = json!(["domain"]);
    let text = render_objects(&config(vec![c]), "ci", false)
        .expect_err("refused")
        .to_string();
    assert!(text.contains("must be a mapping"), "{text}");

    let mut c = full_class("my-org/no-disk");
    c.empty_disk_mounts[0].serial = "other".to_owned();
    let text = render_objects(&config(vec![c]), "ci", false)
        .expect_err("refused")
        .to_string();
    assert!(
        text.contains("emptyDiskMounts[0]") && text.contains("\"other\""),
        "{text}"
    );

    let mut c = full_class("my-org/sata");
    c.spec["domain"]["devices"]["disks"][1]["disk"]["bus"] = json!("sata");
    let text = render_objects(&config(vec![c]), "ci", false)
        .expect_err("refused")
        .to_string();
    assert!(text.contains("must name a virtio disk"), "{text}");

    let text = render_objects(&config(vec![class("a/b")]), "Bad_NS", false)
        .expect_err("refused")
        .to_string();
    assert!(text.contains("Bad_NS"), "{text}");
}

#[test]
fn render_prints_yaml_documents_with_tokens_redacted() {
    let cfg = sample_config();
    let text = render(&cfg, "runner-provisioner", false).expect("render");
    let docs: Vec<Value> =
        serde_saphyr::from_str_multiple(&text).expect("valid multi-document YAML");
    assert_eq!(
        docs,
        render_objects(&cfg, "runner-provisioner", false).expect("render objects")
    );
    assert_eq!(docs.len(), 8);
    let scripts: Vec<String> = docs
        .iter()
        .filter(|d| d["kind"] == "Secret")
        .map(|d| secret_user_data(d).expect("user data"))
        .collect();
    assert_eq!(scripts.len(), 4);
    for script in &scripts {
        assert!(script.contains("auth_token: \"<redacted>\""), "{script}");
    }
    for secret in [
        "tok-plain-123",
        "PWNED1",
        "apt-get install -y jq",
        "circle-api-token-xyz",
    ] {
        assert!(!text.contains(secret), "{secret} leaked into:\n{text}");
        assert!(
            scripts.iter().all(|s| !s.contains(secret)),
            "{secret} leaked into a redacted script"
        );
    }

    let shown = render(&cfg, "runner-provisioner", true).expect("render");
    assert!(
        shown.contains("tok-plain-123"),
        "--show-secrets shows the token"
    );
    let docs: Vec<Value> =
        serde_saphyr::from_str_multiple(&shown).expect("valid multi-document YAML");
    let hostile = docs
        .iter()
        .find(|d| {
            d["kind"] == "Secret"
                && d["metadata"]["annotations"]["runner-provisioner/resource-class"]
                    == "my-org/hostile"
        })
        .expect("hostile secret");
    assert!(
        secret_user_data(hostile).is_some_and(|s| s.contains("touch PWNED1")),
        "the script round-trips through YAML"
    );
}

// --- sidecar and runner bundle ------------------------------------------------------------

fn sidecar_opts() -> VmOptions {
    VmOptions {
        sidecar: true,
        bundle: Some(RunnerBundle {
            image: "registry.example.com/runner-bundle@sha256:0f3ae2bd5cbbd7d41a0a13e9d4b1d7ab0b3c4e3f6b1a7e2c9d8f0a1b2c3d4e5f".to_owned(),
            pull_policy: Some("IfNotPresent".to_owned()),
            pull_secret: Some("bundle-pull".to_owned()),
        }),
    }
}

/// sample_config without its bridged class, which the sidecar refuses.
fn sidecar_config() -> provisioner_core::Config {
    let mut cfg = sample_config();
    cfg.classes
        .retain(|c| c.name.as_str() != "acme_corp/Large-GPU:arm64");
    cfg
}

#[test]
fn with_the_sidecar_the_token_is_only_in_the_proxy_secret_even_with_secrets_shown() {
    let cfg = sidecar_config();
    let objects = render_objects_with(&cfg, "ci", true, &sidecar_opts()).expect("render");
    assert_eq!(objects.len(), cfg.classes.len() * 3);
    for class in &cfg.classes {
        let token = class.token.expose();
        let proxy_name = proxy_secret_name(&class.name);
        let mine: Vec<&Value> = objects
            .iter()
            .filter(|o| {
                o["metadata"]["labels"]["runner-provisioner/pool"] == pool_name(&class.name)
            })
            .collect();
        assert_eq!(mine.len(), 3, "{}", class.name);
        for object in &mine {
            let text = serde_json::to_string(object).expect("json");
            let escaped = serde_json::to_string(token).expect("json");
            let holds = text.contains(token) || text.contains(escaped.trim_matches('"'));
            let is_proxy = object["metadata"]["name"] == proxy_name.as_str();
            assert_eq!(
                holds, is_proxy,
                "{}: token in {} {}",
                class.name, object["kind"], object["metadata"]["name"]
            );
        }
        let proxy = mine
            .iter()
            .find(|o| o["metadata"]["name"] == proxy_name.as_str())
            .expect("proxy Secret");
        assert_eq!(proxy["stringData"]["token"], token);
        assert_eq!(proxy["stringData"]["url"], "https://runner.circleci.com");
        assert_eq!(proxy["stringData"]["allow-from"], "10.0.2.0/24");
        let user_data = secret_user_data(mine[0]).expect("user data");
        assert!(user_data.contains("http://10.0.2.1:8484"), "{}", class.name);
    }

    // The YAML `render` prints, searched as text: the token appears once per class, in the
    // proxy Secret.
    let yaml = render_with(&cfg, "ci", true, &sidecar_opts()).expect("render");
    let plain = "tok-plain-123";
    assert_eq!(
        yaml.matches(plain).count(),
        cfg.classes
            .iter()
            .filter(|c| c.token.expose() == plain)
            .count(),
        "{yaml}"
    );
    // Without the sidecar the token is where the runner needs it: in the start-up script.
    let objects = render_objects(&cfg, "ci", true).expect("render");
    assert_eq!(objects.len(), cfg.classes.len() * 2);
    let script = secret_user_data(&objects[0]).expect("user data");
    assert!(script.contains(plain), "{script}");
}

#[test]
fn with_the_sidecar_the_template_asks_for_the_proxy_and_carries_the_bundle_disk() {
    let objects = render_objects_with(
        &config(vec![class("my-org/default")]),
        "ci",
        false,
        &sidecar_opts(),
    )
    .expect("render");
    let pool = pools(&objects)[0];
    let template = &pool["spec"]["virtualMachineTemplate"];
    assert_eq!(template["metadata"]["labels"][SIDECAR_LABEL], "true");
    assert_eq!(
        template["spec"]["template"]["metadata"]["labels"][SIDECAR_LABEL],
        "true"
    );
    // The selector stays what it always was: an upgrade must not orphan existing VMs.
    assert!(
        pool["spec"]["selector"]["matchLabels"]
            .get(SIDECAR_LABEL)
            .is_none()
    );
    let spec = &template["spec"]["template"]["spec"];
    let volume = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == BUNDLE_VOLUME)
        .expect("bundle volume");
    assert_eq!(
        volume["containerDisk"],
        json!({
            "image": "registry.example.com/runner-bundle@sha256:0f3ae2bd5cbbd7d41a0a13e9d4b1d7ab0b3c4e3f6b1a7e2c9d8f0a1b2c3d4e5f",
            "imagePullPolicy": "IfNotPresent",
            "imagePullSecret": "bundle-pull",
        })
    );
    let disk = spec["domain"]["devices"]["disks"]
        .as_array()
        .expect("disks")
        .iter()
        .find(|d| d["name"] == BUNDLE_VOLUME)
        .expect("bundle disk");
    assert_eq!(disk["serial"], BUNDLE_VOLUME);
    assert_eq!(disk["disk"]["bus"], "virtio");
    // Redacted render: the proxy Secret hides the token too.
    assert_eq!(objects[1]["stringData"]["token"], "<redacted>");

    // Without the sidecar: no label, no proxy Secret.
    let objects =
        render_objects(&config(vec![class("my-org/default")]), "ci", false).expect("render");
    let template = &pools(&objects)[0]["spec"]["virtualMachineTemplate"];
    assert!(template["metadata"]["labels"].get(SIDECAR_LABEL).is_none());
}

#[test]
fn sidecar_pools_pass_the_strict_kubevirt_schema() {
    let Ok(text) = std::fs::read_to_string(schema_path()) else {
        println!("skipping schema validation: ../shared not present");
        return;
    };
    let file: Value = serde_json::from_str(&text).expect("schema JSON");
    let objects =
        render_objects_with(&sidecar_config(), "ci", true, &sidecar_opts()).expect("render");
    for pool in pools(&objects) {
        let mut errors = Vec::new();
        validate(pool, &file["openAPIV3Schema"], "", &mut errors);
        assert!(errors.is_empty(), "{}", errors.join("\n"));
    }
}

#[test]
fn a_binding_that_cannot_reach_the_pod_is_refused_with_the_sidecar_on() {
    let cfg = sample_config();
    let err = render_objects_with(&cfg, "ci", false, &sidecar_opts()).expect_err("bridge");
    let msg = err.to_string();
    assert!(
        msg.contains("acme_corp/Large-GPU:arm64")
            && msg.contains("no pod network")
            && msg.contains("sidecar.enabled: false"),
        "{msg}"
    );
    let mut bridged_pod = class("my-org/bridge");
    bridged_pod.spec["domain"]["devices"]["interfaces"] =
        json!([{ "name": "default", "bridge": {} }]);
    bridged_pod.spec["networks"] = json!([{ "name": "default", "pod": {} }]);
    let err = render_objects_with(
        &config(vec![bridged_pod.clone()]),
        "ci",
        false,
        &sidecar_opts(),
    )
    .expect_err("bridge on the pod network");
    let msg = err.to_string();
    assert!(
        msg.contains("uses bridge") && msg.contains("masquerade"),
        "{msg}"
    );
    // Without the sidecar the same spec is fine.
    render_objects(&config(vec![bridged_pod]), "ci", false).expect("no sidecar");
}

#[test]
fn the_bundle_disk_names_are_reserved() {
    let mut c = class("my-org/clash");
    c.spec["volumes"]
        .as_array_mut()
        .expect("volumes")
        .push(json!({ "name": BUNDLE_VOLUME, "emptyDisk": { "capacity": "1Gi" } }));
    let err =
        render_objects_with(&config(vec![c]), "ci", false, &sidecar_opts()).expect_err("reserved");
    assert!(err.to_string().contains("reserved"), "{err}");
}
