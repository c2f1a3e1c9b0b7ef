//! The one-shot subcommands as a user runs them: `tasks` against a fake CircleCI, `render`
//! without a cluster, and `scale-to-zero` refusing to guess when no cluster is reachable.

mod common;

use std::process::{Command, Output};

use provisioner_core::config::{ClassConfig, RunnerOptions, default_spec};
use provisioner_core::{ResourceClass, Scaling, Secret};
use provisioner_kubevirt::{pool_name, render_class};
use provisioner_testkit::{FakeKube, NS};

use serde_json::Value;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::process::{BIN, output_text, write_class_config};
const API_TOKEN: &str = "api-token-cmd-7e3a";
const RUNNER_TOKEN: &str = "runner-token-cmd-4f81";

fn run(args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("CIRCLECI_API_ADDR")
        .env_remove("PROVISIONER_SECRETS")
        .env_remove("RUST_LOG");
    match token {
        Some(t) => cmd.env("CIRCLE_TOKEN", t),
        None => cmd.env_remove("CIRCLE_TOKEN"),
    };
    cmd.output().expect("run the binary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_prints_the_counts_as_text_or_one_json_line_or_the_classified_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/tasks"))
        .and(query_param("resource-class", "my-org/my-runner"))
        .and(header("Circle-Token", API_TOKEN))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "unclaimed_task_count": 4 })),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/tasks/running"))
        .and(header("Circle-Token", API_TOKEN))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "running_runner_tasks": 2 })),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(serde_json::json!({ "message": "Invalid token provided." })),
        )
        .mount(&server)
        .await;
    let uri = server.uri();
    let api = tokio::task::spawn_blocking(move || {
        let text = run(
            &[
                "tasks",
                "--resource-class",
                "my-org/my-runner",
                "--api-addr",
                &uri,
            ],
            Some(API_TOKEN),
        );
        assert!(text.status.success(), "{}", output_text(&text));
        assert_eq!(
            String::from_utf8_lossy(&text.stdout),
            "my-org/my-runner: 4 unclaimed, 2 running\n"
        );
        let ok = run(
            &[
                "tasks",
                "--resource-class",
                "my-org/my-runner",
                "--api-addr",
                &uri,
                "--output",
                "json",
            ],
            Some(API_TOKEN),
        );
        let bad = run(
            &[
                "tasks",
                "--resource-class",
                "my-org/my-runner",
                "--api-addr",
                &uri,
            ],
            Some("wrong-token-123"),
        );
        let none = run(
            &[
                "tasks",
                "--resource-class",
                "my-org/my-runner",
                "--api-addr",
                &uri,
            ],
            None,
        );
        (ok, bad, none)
    })
    .await
    .expect("commands ran");
    let (ok, bad, none) = api;
    assert!(ok.status.success(), "{}", output_text(&ok));
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let line: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(
        line,
        serde_json::json!({ "resource_class": "my-org/my-runner", "unclaimed_tasks": 4, "running_tasks": 2 })
    );

    assert!(!bad.status.success());
    assert!(output_text(&bad).contains("401"), "{}", output_text(&bad));
    assert!(
        !output_text(&bad).contains("wrong-token-123"),
        "{}",
        output_text(&bad)
    );
    assert!(!none.status.success());
    assert!(
        output_text(&none).contains("CIRCLE_TOKEN"),
        "{}",
        output_text(&none)
    );
}

#[test]
fn render_prints_the_objects_with_tokens_redacted_unless_asked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_class_config(dir.path(), "org/a", RUNNER_TOKEN);
    let config = config.to_str().expect("utf-8");
    let out = run(&["render", "--config", config, "--namespace", "ci"], None);
    assert!(out.status.success(), "{}", output_text(&out));
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(yaml.contains("kind: VirtualMachinePool"), "{yaml}");
    assert!(yaml.contains("namespace: ci"), "{yaml}");
    assert!(
        !yaml.contains(RUNNER_TOKEN),
        "render leaked the token without --show-secrets"
    );
    let shown = run(
        &[
            "render",
            "--config",
            config,
            "--namespace",
            "ci",
            "--show-secrets",
        ],
        None,
    );
    assert!(shown.status.success(), "{}", output_text(&shown));
    assert!(String::from_utf8_lossy(&shown.stdout).contains(RUNNER_TOKEN));
}

/// `render`'s YAML documents, each with its text.
fn documents(yaml: &str) -> Vec<(String, Value)> {
    yaml.split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            let value: Value = serde_saphyr::from_str(d).expect("a YAML document");
            (d.to_owned(), value)
        })
        .collect()
}

fn render_out(config: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "render",
        "--config",
        config,
        "--namespace",
        "ci",
        "--show-secrets",
    ];
    args.extend_from_slice(extra);
    run(&args, None)
}

#[test]
fn render_with_the_sidecar_keeps_the_token_out_of_everything_the_guest_reads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_class_config(dir.path(), "org/a", RUNNER_TOKEN);
    let config = config.to_str().expect("utf-8");
    // No sidecar key in the config: on, as the chart's default; --sidecar says the same.
    for extra in [&[][..], &["--sidecar"], &["--no-sidecar", "--sidecar"]] {
        let out = render_out(config, extra);
        assert!(out.status.success(), "{}", output_text(&out));
        let docs = documents(&String::from_utf8_lossy(&out.stdout));
        let kinds: Vec<&str> = docs
            .iter()
            .map(|(_, d)| d["kind"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            kinds,
            ["Secret", "Secret", "VirtualMachinePool"],
            "{extra:?}"
        );
        // The user-data Secret (what the guest mounts) and the pool: no token, even shown.
        for (text, doc) in [&docs[0], &docs[2]] {
            assert!(
                !text.contains(RUNNER_TOKEN),
                "{extra:?}: the class token is in {} {}",
                doc["kind"],
                doc["metadata"]["name"]
            );
        }
        let script = docs[0].1["stringData"]["userdata"]
            .as_str()
            .expect("script");
        assert!(script.contains("http://10.0.2.1:8484"), "{script}");
        // Only the proxy's Secret holds it, which only the injected proxy container mounts.
        let proxy = &docs[1].1;
        assert!(
            proxy["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-proxy"))
        );
        assert_eq!(proxy["stringData"]["token"], RUNNER_TOKEN);
        assert_eq!(
            docs[2].1["spec"]["virtualMachineTemplate"]["spec"]["template"]["metadata"]["labels"]["runner-provisioner/token-proxy"],
            "true"
        );
    }

    // Without the sidecar: the token where the runner needs it, no proxy Secret.
    let out = render_out(config, &["--no-sidecar"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let docs = documents(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(docs.len(), 2);
    let script = docs[0].1["stringData"]["userdata"]
        .as_str()
        .expect("script");
    assert!(script.contains(RUNNER_TOKEN), "{script}");
    assert!(!docs[1].0.contains("runner-provisioner/token-proxy"));

    // The config's switch is the default; the flag wins.
    std::fs::write(
        dir.path().join("off.yaml"),
        format!("sidecar: {{enabled: false}}\nresourceClass:\n  \"org/a\":\n    token: \"{RUNNER_TOKEN}\"\n"),
    )
    .expect("write");
    let off = dir.path().join("off.yaml");
    let off = off.to_str().expect("utf-8");
    assert_eq!(
        documents(&String::from_utf8_lossy(&render_out(off, &[]).stdout)).len(),
        2
    );
    assert_eq!(
        documents(&String::from_utf8_lossy(
            &render_out(off, &["--sidecar"]).stdout
        ))
        .len(),
        3
    );

    // grantSudo with the sidecar forced off: refused, naming the field.
    std::fs::write(
        dir.path().join("sudo.yaml"),
        "resourceClasses:\n  \"org/a\":\n    token: t\n    runner: {grantSudo: true}\n",
    )
    .expect("write");
    let sudo = dir.path().join("sudo.yaml");
    let out = render_out(sudo.to_str().expect("utf-8"), &["--no-sidecar"]);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("runner.grantSudo"),
        "{}",
        output_text(&out)
    );
    assert!(
        render_out(sudo.to_str().expect("utf-8"), &[])
            .status
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_to_zero_lowers_every_managed_pool_even_with_a_broken_config() {
    let (k8s, url, _client) = FakeKube::start().await;
    let class = ResourceClass::parse("org/gone").expect("valid class");
    let pool = pool_name(&class);
    // The pool as the provisioner created it, since scaled to 3.
    let class_config = ClassConfig {
        name: class,
        token: Secret::new(RUNNER_TOKEN),
        user_data: None,
        scaling: Scaling::default(),
        runner: RunnerOptions::default(),
        empty_disk_mounts: Vec::new(),
        spec: default_spec(),
    };
    let [_, mut pool_object] =
        render_class(&class_config, NS, "https://runner.circleci.com", false)
            .expect("render the pool");
    pool_object["metadata"]["uid"] = serde_json::json!("pool-uid");
    pool_object["metadata"]["resourceVersion"] = serde_json::json!("1");
    pool_object["spec"]["replicas"] = serde_json::json!(3);
    k8s.lock().pools.insert(pool.clone(), pool_object);
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: f\n  cluster:\n    server: {url}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: f\n  context:\n    cluster: f\n    user: u\ncurrent-context: f\n"),
    )
    .expect("write kubeconfig");
    let kubeconfig = kubeconfig.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args([
                "scale-to-zero",
                "--config",
                "/nonexistent/config.yaml",
                "--namespace",
                NS,
            ])
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("RUST_LOG")
            .output()
            .expect("run scale-to-zero")
    })
    .await
    .expect("command ran");
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("pool scaled to zero"),
        "{}",
        output_text(&out)
    );
    assert_eq!(
        k8s.lock()
            .pools
            .get(&pool)
            .map(|p| p["spec"]["replicas"].clone()),
        Some(serde_json::json!(0))
    );
    assert!(
        !k8s.writes().iter().any(|(m, _)| m == "DELETE"),
        "{:?}",
        k8s.writes()
    );
}

#[test]
fn scale_to_zero_without_a_cluster_fails_clearly() {
    let out = run(
        &[
            "scale-to-zero",
            "--config",
            "/nonexistent/config.yaml",
            "--namespace",
            "ci",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("no Kubernetes cluster reachable"),
        "{}",
        output_text(&out)
    );
}

#[test]
fn text_logs_on_request_and_a_bad_log_level_is_refused() {
    let out = run(
        &[
            "validate",
            "--log-format",
            "text",
            "--config",
            "/nonexistent/config.yaml",
        ],
        None,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: invalid configuration: /nonexistent/config.yaml"),
        "{stderr}"
    );
    assert!(
        serde_json::from_str::<Value>(stderr.lines().next().unwrap_or_default()).is_err(),
        "not text: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a non-terminal: {stderr}"
    );

    let out = Command::new(BIN)
        .args(["validate", "--config", "/nonexistent/config.yaml"])
        .env("LOG_LEVEL", "verbose")
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("\"verbose\" is not a log level"),
        "{}",
        output_text(&out)
    );
}

/// As a new user meets them: a broken file's errors one per line, `file:line:col: field:
/// message`, nothing else; JSON (one log line) only when asked for.
#[test]
fn validate_prints_plain_errors_one_per_line_unless_json_is_asked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("c1.yaml");
    std::fs::write(
        &config,
        "resourceClasses:\n  \"org/a\":\n    token: \"runner-token-c1\"\n    scaling:\n      minReplicas: -1\n      idleTimeout: \"ten minutes\"\n",
    )
    .expect("write");
    let config = config.to_str().expect("utf-8 path");
    let out = run(&["validate", "--config", config], Some(API_TOKEN));
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].ends_with(
            "c1.yaml:5:20: resourceClasses.\"org/a\".scaling.minReplicas: -1 is negative; a VM count is 0 or more"
        ),
        "{stderr}"
    );
    assert!(
        lines[1].contains(
            "c1.yaml:6:20: resourceClasses.\"org/a\".scaling.idleTimeout: duration \"ten minutes\""
        ),
        "{stderr}"
    );
    assert!(!stderr.contains('{') && !stderr.contains("\\n"), "{stderr}");

    let out = run(
        &["validate", "--config", config, "--output", "json"],
        Some(API_TOKEN),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line: Value = serde_json::from_str(stderr.trim()).expect("one JSON log line");
    assert_eq!(line["message"], "invalid configuration", "{line}");
    assert!(
        line["error"]
            .as_str()
            .is_some_and(|e| e.contains("c1.yaml:5:20")),
        "{line}"
    );

    let ok_config = dir.path().join("ok.yaml");
    std::fs::write(
        &ok_config,
        "resourceClasses:\n  \"org/a\":\n    token: \"runner-token-c1\"\n",
    )
    .expect("write");
    let ok_config = ok_config.to_str().expect("utf-8 path");
    let out = run(
        &["validate", "--config", ok_config, "--output", "json"],
        Some(API_TOKEN),
    );
    assert!(out.status.success(), "{}", output_text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(
        summary,
        serde_json::json!({ "valid": true, "resource_classes": ["org/a"] })
    );
}

/// `status --from-cluster` through the API server's service proxy, with the kubeconfig's
/// server (here wiremock speaking the two calls it makes: `/version`, then the proxy path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_from_cluster_reads_the_metrics_through_the_service_proxy() {
    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/version"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "major": "1", "minor": "31", "gitVersion": "v1.31.0", "gitCommit": "", "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23", "compiler": "gc", "platform": "linux/amd64"
        })))
        .mount(&api)
        .await;
    let metrics = "provisioner_leader 1\n\
        provisioner_unclaimed_tasks{resource_class=\"org/a\"} 4\n\
        provisioner_running_tasks{resource_class=\"org/a\"} 2\n\
        provisioner_registration_breaker_open{resource_class=\"org/a\"} 1\n";
    Mock::given(method("GET"))
        .and(path(format!(
            "/api/v1/namespaces/{NS}/services/rp-metrics:metrics/proxy/metrics"
        )))
        .respond_with(ResponseTemplate::new(200).set_body_string(metrics))
        .mount(&api)
        .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = common::process::write_kubeconfig(dir.path(), &api.uri(), NS);
    let status = |service: &str| {
        Command::new(BIN)
            .args(["status", "--from-cluster", "--service", service])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("PROVISIONER_NAMESPACE")
            .env_remove("RUST_LOG")
            .output()
            .expect("run the binary")
    };
    let out = status("rp-metrics");
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("controller at service {NS}/rp-metrics: leading")),
        "{text}"
    );
    assert!(
        text.contains("demand       4 unclaimed, 2 running"),
        "{text}"
    );
    assert!(text.contains("registration breaker OPEN"), "{text}");
    // A Service that is not there: a non-zero exit naming the path asked for.
    let out = status("missing");
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("services/missing:metrics/proxy/metrics"),
        "{text}"
    );
    assert!(text.contains("HTTP 404: no such Service"), "{text}");
}
