//! End to end, as a user runs it: the built binary in `--dry-run` (no cluster: the pool is
//! modelled) against a local fake CircleCI (wiremock). Asserts the per-cycle JSON log lines,
//! `/ready`, `/live`, `/metrics`, hot reload through a Kubernetes-style symlink swap, SIGTERM
//! shutdown, and that broken configs exit non-zero naming the field, without leaking a token.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{
    BIN, WAIT, addr, cycle_for, fake_circleci, get, message, output_text, spawn, wait_status,
    write_class_config, write_kubeconfig,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const API_TOKEN: &str = "api-token-e2e-5b1f";
const RUNNER_TOKEN: &str = "runner-token-e2e-9c2d";

/// Write the files the way the kubelet updates a mounted ConfigMap: into a fresh timestamped
/// directory, then an atomic rename of the `..data` symlink; `config.yaml` links through it.
fn kube_atomic_write(dir: &Path, files: &[(&str, &str)], generation: u32) {
    let target = dir.join(format!("..2026_01_01_{generation:04}"));
    std::fs::create_dir_all(&target).expect("mkdir");
    for (name, text) in files {
        std::fs::write(target.join(name), text).expect("write");
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target.file_name().expect("name"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).expect("link file");
        }
    }
}

const CLASS_A: &str = "  \"org/a\":\n    scaling:\n      minReplicas: 3\n      maxReplicas: 10\n";
const CLASS_B: &str = "  \"org/b\":\n    token: \"runner-token-e2e-9c2d\"\n    scaling:\n      minReplicas: 2\n      maxReplicas: 4\n";

fn config_one() -> String {
    format!("resourceClasses:\n{CLASS_A}")
}

fn config_two() -> String {
    format!("resourceClasses:\n{CLASS_A}{CLASS_B}")
}

fn secrets(classes: &[&str]) -> String {
    let mut s = format!("circleToken: \"{API_TOKEN}\"\nresourceClasses:\n");
    for c in classes {
        s.push_str(&format!("  \"{c}\":\n    token: \"{RUNNER_TOKEN}\"\n"));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_polls_serves_health_and_metrics_reloads_and_stops_on_sigterm() {
    let circleci = fake_circleci(API_TOKEN, 4, 2).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config_dir = dir.path().join("config");
    let secrets_dir = dir.path().join("secrets");
    std::fs::create_dir_all(&config_dir).expect("mkdir");
    std::fs::create_dir_all(&secrets_dir).expect("mkdir");
    kube_atomic_write(&config_dir, &[("config.yaml", &config_one())], 1);
    kube_atomic_write(&secrets_dir, &[("secrets.yaml", &secrets(&["org/a"]))], 1);
    let config = config_dir.join("config.yaml");
    let secrets_file = secrets_dir.join("secrets.yaml");
    let api = circleci.uri();
    let mut p = spawn(
        &[
            "run",
            "--dry-run",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--secrets",
            secrets_file.to_str().expect("utf-8 path"),
            "--api-addr",
            &api,
            "--poll-interval",
            "300ms",
        ],
        &[],
    );
    p.wait_for("saying no cluster is reachable", |v| {
        message(v) == "no cluster reachable; modelling the pool"
    });
    let listening = p.wait_for("with the bound addresses", |v| message(v) == "listening");
    let (ready, live, metrics) = (
        addr(&listening, "ready_addr"),
        addr(&listening, "live_addr"),
        addr(&listening, "metrics_addr"),
    );

    // Preview 0.1.0's log line, field for field, at the top level, inside the `worker loop scaler` span.
    let line = p.wait_for("for org/a's cycle", cycle_for("org/a"));
    assert_eq!(line["loop_name"], "scaler", "{line}");
    assert_eq!(line["unclaimed_tasks"], 4, "{line}");
    assert_eq!(line["running_tasks"], 2, "{line}");
    assert_eq!(line["desired_vms"], 6, "{line}");
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["span"]["name"], "worker loop scaler", "{line}");

    // The modelled pool carries the plan out: 6 VMs start booting.
    let applied = p.wait_for("for the modelled scale-out", |v| {
        message(v) == "dry run: applied plan to the modelled pool"
    });
    assert_eq!(applied["scaled_to"], 6, "{applied}");
    // The next cycle observes the 6 booting VMs; nothing more to do.
    p.wait_for("for org/a's next cycle", cycle_for("org/a"));

    assert_eq!(wait_status(ready, "/ready", 200), "ok\n");
    assert_eq!(wait_status(live, "/live", 200), "ok\n");
    let text = wait_status(metrics, "/metrics", 200);
    for needle in [
        "provisioner_unclaimed_tasks{resource_class=\"org/a\"} 4",
        "provisioner_running_tasks{resource_class=\"org/a\"} 2",
        "provisioner_desired_vms{resource_class=\"org/a\"} 6",
        "provisioner_pool_replicas{resource_class=\"org/a\"} 6",
        "provisioner_vms{resource_class=\"org/a\",phase=\"starting\"} 6",
        "provisioner_resource_classes 1",
        "provisioner_leader 1",
        "provisioner_circleci_request_duration_seconds_count{endpoint=\"unclaimed\",status=\"2xx\"}",
        "provisioner_cycle_duration_seconds_count",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }

    // `provisioner status` reads the same endpoint: readable, and JSON when asked.
    let url = format!("http://{metrics}/metrics");
    let out = Command::new(BIN)
        .args(["status", "--metrics-url", &url])
        .output()
        .expect("status runs");
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    for needle in [
        "controller at http://",
        ": leading",
        "org/a\n",
        "demand       4 unclaimed, 2 running",
        "pool         6 replicas (desired 6, max ",
        "6 starting",
        "last error   none",
    ] {
        assert!(text.contains(needle), "status lacks {needle:?}:\n{text}");
    }
    let out = Command::new(BIN)
        .args(["status", "--metrics-url", &url, "--output", "json"])
        .output()
        .expect("status runs");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", output_text(&out)));
    assert_eq!(status["leader"], true, "{status}");
    assert_eq!(status["classes"][0]["resource_class"], "org/a", "{status}");
    assert_eq!(status["classes"][0]["unclaimed_tasks"], 4.0, "{status}");
    assert_eq!(status["classes"][0]["vms"]["starting"], 6.0, "{status}");

    // Hot reload through a symlink swap: org/b is added (max 4 caps its desired VMs).
    kube_atomic_write(&config_dir, &[("config.yaml", &config_two())], 2);
    p.wait_for("announcing the reload", |v| {
        message(v) == "configuration reloaded" && v["classes"] == 2
    });
    let b = p.wait_for("for org/b's cycle", cycle_for("org/b"));
    assert_eq!(b["unclaimed_tasks"], 0, "{b}");
    assert_eq!(b["running_tasks"], 2, "{b}");
    assert_eq!(b["desired_vms"], 2, "{b}");

    // An invalid change is rejected and the loops keep going on the last good config.
    kube_atomic_write(
        &config_dir,
        &[(
            "config.yaml",
            "resourceClasses:\n  \"org/a\":\n    scaling:\n      minReplicas: -1\n",
        )],
        3,
    );
    let rejected = p.wait_for("rejecting the bad change", |v| {
        message(v) == "configuration change rejected; keeping the last good one"
    });
    assert!(
        rejected["error"]
            .as_str()
            .unwrap_or_default()
            .contains("minReplicas"),
        "{rejected}"
    );
    p.wait_for("for org/b still polling", cycle_for("org/b"));
    let text = wait_status(metrics, "/metrics", 200);
    assert!(
        text.contains("provisioner_config_reloads_total 1"),
        "{text}"
    );
    assert!(
        text.contains("provisioner_config_reload_failures_total 1"),
        "{text}"
    );

    // Removing org/b stops its loop and leaves its pool alone.
    kube_atomic_write(&config_dir, &[("config.yaml", &config_one())], 4);
    p.wait_for("stopping org/b", |v| {
        message(v).starts_with("resource class removed") && v["resource_class"] == "org/b"
    });
    let deadline = Instant::now() + WAIT;
    while get(metrics, "/metrics").1.contains("org/b") {
        assert!(
            Instant::now() < deadline,
            "org/b's series outlived its loop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // SIGTERM: the loops finish their cycle and the process exits 0.
    p.sigterm();
    p.wait_for("saying it stopped", |v| message(v) == "stopped");
    let exit = p.exit_status();
    assert!(exit.success(), "exit status {exit}");
    p.assert_no_leak(&[API_TOKEN, RUNNER_TOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_logged_with_the_seed_messages_and_fail_readiness_after_the_threshold() {
    let circleci = fake_circleci(API_TOKEN, 1, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_class_config(dir.path(), "org/a", RUNNER_TOKEN);
    let api = circleci.uri();
    let mut p = spawn(
        &[
            "--dry-run",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--api-addr",
            &api,
            "--poll-interval",
            "200ms",
            "--unready-after",
            "1s",
        ],
        &[("CIRCLE_TOKEN", API_TOKEN)],
    );
    let listening = p.wait_for("with the bound addresses", |v| message(v) == "listening");
    let (ready, live, metrics) = (
        addr(&listening, "ready_addr"),
        addr(&listening, "live_addr"),
        addr(&listening, "metrics_addr"),
    );
    p.wait_for("for a good cycle", cycle_for("org/a"));
    wait_status(ready, "/ready", 200);

    // CircleCI starts failing: 0.1.0's error line, then not ready once past the threshold;
    // the loop still cycles, so live.
    circleci.reset().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&circleci)
        .await;
    let error = p.wait_for("with 0.1.0's error message", |v| {
        message(v) == "failed to get unclaimed tasks"
    });
    assert_eq!(error["level"], "ERROR", "{error}");
    assert_eq!(error["resource_class"], "org/a", "{error}");
    assert_eq!(error["loop_name"], "scaler", "{error}");
    assert!(
        error["error"].as_str().unwrap_or_default().contains("503"),
        "{error}"
    );
    let body = wait_status(ready, "/ready", 503);
    assert!(body.contains("org/a: failing for"), "{body}");
    assert_eq!(wait_status(live, "/live", 200), "ok\n");
    let text = wait_status(metrics, "/metrics", 200);
    assert!(
        text.contains("provisioner_poll_errors_total{resource_class=\"org/a\",operation=\"unclaimed_tasks\",kind=\"transient\"}"),
        "{text}"
    );

    // Recovery makes it ready again.
    circleci.reset().await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/tasks"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "unclaimed_task_count": 0 })),
        )
        .mount(&circleci)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/tasks/running"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "running_runner_tasks": 0 })),
        )
        .mount(&circleci)
        .await;
    wait_status(ready, "/ready", 200);
}

/// A broken config must stop `run` (and `validate`) before anything else, naming the problem.
fn assert_rejected(name: &str, config: &str, secrets: Option<&str>, expect: &[&str]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, config).expect("write config");
    let mut args: Vec<String> = vec!["--config".into(), config_path.display().to_string()];
    if let Some(s) = secrets {
        let p = dir.path().join("secrets.yaml");
        std::fs::write(&p, s).expect("write secrets");
        args.extend(["--secrets".into(), p.display().to_string()]);
    }
    for command in ["run", "validate"] {
        let mut full: Vec<String> = vec![command.into()];
        full.extend(args.iter().cloned());
        if command == "run" {
            full.extend(
                [
                    "--dry-run",
                    "--bind-address",
                    "127.0.0.1",
                    "--ready-port",
                    "0",
                    "--live-port",
                    "0",
                    "--metrics-port",
                    "0",
                ]
                .map(String::from),
            );
        }
        let out = Command::new(BIN)
            .args(&full)
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .env_remove("PROVISIONER_SECRETS")
            .env_remove("CIRCLE_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run the binary");
        let text = output_text(&out);
        assert!(
            !out.status.success(),
            "{name}: `{command}` accepted a broken config:\n{text}"
        );
        for want in expect {
            assert!(
                text.contains(want),
                "{name}: `{command}` output lacks {want:?}:\n{text}"
            );
        }
        assert!(
            !text.contains("scaler cycle"),
            "{name}: polled with a broken config:\n{text}"
        );
        for token in [API_TOKEN, RUNNER_TOKEN] {
            assert!(!text.contains(token), "{name}: token leaked:\n{text}");
        }
    }
}

#[test]
fn broken_configs_exit_non_zero_naming_the_field_without_tokens() {
    let secrets_ok = secrets(&["org/a"]);
    assert_rejected("missing file", "", None, &[]);
    assert_rejected(
        "negative minReplicas",
        "resourceClasses:\n  \"org/a\":\n    scaling:\n      minReplicas: -1\n",
        Some(&secrets_ok),
        &["config.yaml", "minReplicas"],
    );
    assert_rejected(
        "bad class name",
        &format!(
            "circleToken: \"{API_TOKEN}\"\nresourceClass:\n  \"NoSlash\":\n    token: \"{RUNNER_TOKEN}\"\n"
        ),
        None,
        &["config.yaml", "NoSlash"],
    );
    assert_rejected(
        "seed shape without a runner token",
        &format!(
            "circleToken: \"{API_TOKEN}\"\nresourceClass:\n  \"org/a\":\n    idleTimeout: \"10m\"\n"
        ),
        None,
        &["config.yaml", "token"],
    );
    assert_rejected(
        "bad duration",
        "resourceClasses:\n  \"org/a\":\n    scaling:\n      idleTimeout: \"ten minutes\"\n",
        Some(&secrets_ok),
        &["config.yaml", "idleTimeout"],
    );
    assert_rejected(
        "no API token anywhere",
        &format!("resourceClass:\n  \"org/a\":\n    token: \"{RUNNER_TOKEN}\"\n"),
        None,
        &["circleToken"],
    );
    assert_rejected(
        "not YAML",
        &format!("circleToken: \"{API_TOKEN}\"\nresourceClasses: [unclosed\n"),
        None,
        &["config.yaml"],
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let out = Command::new(BIN)
        .args([
            "validate",
            "--config",
            "/nonexistent/provisioner/config.yaml",
        ])
        .env_remove("CIRCLE_TOKEN")
        .output()
        .expect("run the binary");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/provisioner/config.yaml"),
        "{stderr}"
    );
}

#[test]
fn help_lists_every_flag_with_its_env_var_and_version_prints() {
    let out = Command::new(BIN)
        .args(["run", "--help"])
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for env in [
        "PROVISIONER_CONFIG",
        "PROVISIONER_SECRETS",
        "PROVISIONER_NAMESPACE",
        "CIRCLECI_API_ADDR",
        "POLL_INTERVAL",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "METRICS_PORT",
        "READY_PORT",
        "LIVE_PORT",
        "LEADER_ELECTION",
        "LEASE_NAME",
        "DRY_RUN",
        "CIRCLE_TOKEN",
        "POD_NAME",
    ] {
        assert!(help.contains(env), "--help lacks {env}:\n{help}");
    }
    let out = Command::new(BIN)
        .arg("--version")
        .output()
        .expect("run --version");
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in ["run", "validate", "tasks", "render", "scale-to-zero"] {
        assert!(help.contains(sub), "--help lacks {sub}:\n{help}");
    }
}

#[test]
fn validate_accepts_both_documented_shapes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, format!("resourceClass:\n  \"my-org/my-runner\":\n    token: \"{RUNNER_TOKEN}\"\n    idleTimeout: \"10m\"\n")).expect("write");
    // Preview 0.1.0's Secret: circle-token beside the config (no secrets.yaml at the default path).
    std::fs::write(dir.path().join("circle-token"), API_TOKEN).expect("write");
    let out = Command::new(BIN)
        .args(["validate", "--config", seed.to_str().expect("utf-8")])
        .env_remove("PROVISIONER_SECRETS")
        .env_remove("CIRCLE_TOKEN")
        .output()
        .expect("run validate");
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("my-org/my-runner"), "{text}");

    let config = dir.path().join("config.yaml");
    std::fs::write(&config, config_two()).expect("write");
    let secrets_path: PathBuf = dir.path().join("secrets.yaml");
    std::fs::write(&secrets_path, secrets(&["org/a", "org/b"])).expect("write");
    let out = Command::new(BIN)
        .args([
            "validate",
            "--config",
            config.to_str().expect("utf-8"),
            "--secrets",
            secrets_path.to_str().expect("utf-8"),
        ])
        .env_remove("CIRCLE_TOKEN")
        .output()
        .expect("run validate");
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("2 resource class(es): org/a, org/b"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_start_up_still_shuts_down_cleanly() {
    let circleci = fake_circleci(API_TOKEN, 0, 0).await;
    // An API server that accepts connections and never answers: start-up waits on it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dir = tempfile::tempdir().expect("temp dir");
    let server = format!("http://{}", silent.local_addr().expect("addr"));
    let kubeconfig = write_kubeconfig(dir.path(), &server, "default");
    let config = write_class_config(dir.path(), "org/a", RUNNER_TOKEN);
    let api = circleci.uri();
    let mut p = spawn(
        &[
            "--dry-run",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--api-addr",
            &api,
        ],
        &[
            ("CIRCLE_TOKEN", API_TOKEN),
            ("KUBECONFIG", kubeconfig.to_str().expect("utf-8 path")),
        ],
    );
    p.wait_for("with the configuration", |v| {
        message(v) == "configuration loaded"
    });
    p.sigterm();
    // Killed by the signal, it would print neither line nor exit 0.
    p.wait_for("shutting down on SIGTERM", |v| {
        message(v) == "shutting down" && v["signal"] == "SIGTERM"
    });
    p.wait_for("saying it stopped", |v| message(v) == "stopped");
    let exit = p.exit_status();
    assert!(exit.success(), "exit status {exit}");
}

#[test]
fn status_without_a_controller_says_where_it_looked() {
    let out = Command::new(BIN)
        .args(["status", "--metrics-url", "http://127.0.0.1:9/metrics"])
        .output()
        .expect("status runs");
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("http://127.0.0.1:9/metrics"), "{text}");
    assert!(text.contains("nothing answers there"), "{text}");
}

/// CircleCI answering both task counts for requests carrying `token`.
async fn answer_for(server: &wiremock::MockServer, token: &str, status: u16, unclaimed: u32) {
    use wiremock::matchers::header;
    let body = |field: &str, n: u32| {
        if status == 200 {
            serde_json::json!({ field: n })
        } else {
            serde_json::json!({ "message": "Invalid token provided." })
        }
    };
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/tasks"))
        .and(header("Circle-Token", token))
        .respond_with(
            ResponseTemplate::new(status).set_body_json(body("unclaimed_task_count", unclaimed)),
        )
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/tasks/running"))
        .and(header("Circle-Token", token))
        .respond_with(ResponseTemplate::new(status).set_body_json(body("running_runner_tasks", 0)))
        .mount(server)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_file_is_used_from_the_next_call_without_a_restart() {
    const ENV_TOKEN: &str = "api-token-env-e2e-77aa";
    const OLD_TOKEN: &str = "api-token-old-e2e-3c4d";
    const NEW_TOKEN: &str = "api-token-new-e2e-8e9f";
    let circleci = wiremock::MockServer::start().await;
    answer_for(&circleci, OLD_TOKEN, 200, 0).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config_dir = dir.path().join("config");
    let secrets_dir = dir.path().join("secrets");
    std::fs::create_dir_all(&config_dir).expect("mkdir");
    std::fs::create_dir_all(&secrets_dir).expect("mkdir");
    kube_atomic_write(&config_dir, &[("config.yaml", &config_one())], 1);
    // 0.1.2's `existingSecret`: secrets.yaml without circleToken, and the key circle-token.
    let class_tokens = format!("resourceClasses:\n  \"org/a\":\n    token: \"{RUNNER_TOKEN}\"\n");
    kube_atomic_write(
        &secrets_dir,
        &[("secrets.yaml", &class_tokens), ("circle-token", OLD_TOKEN)],
        1,
    );
    let config = config_dir.join("config.yaml");
    let secrets_file = secrets_dir.join("secrets.yaml");
    let api = circleci.uri();
    let mut p = spawn(
        &[
            "run",
            "--dry-run",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--secrets",
            secrets_file.to_str().expect("utf-8 path"),
            "--api-addr",
            &api,
            "--poll-interval",
            "1500ms",
        ],
        // A stale variable (say, from an older chart) must not shadow the mounted file.
        &[("CIRCLE_TOKEN", ENV_TOKEN)],
    );
    let first = p.wait_for("for a cycle with the mounted token", cycle_for("org/a"));
    assert_eq!(first["unclaimed_tasks"], 0, "{first}");
    // Between cycles (nothing sent for 300 ms): the rotation lands in the pause, as a kubelet's
    // would, so whatever is sent from now on comes after it.
    let mut seen = usize::MAX;
    loop {
        let now = circleci.received_requests().await.expect("recording").len();
        if now == seen {
            break;
        }
        seen = now;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let before = circleci.received_requests().await.expect("recording");
    assert!(!before.is_empty());
    for request in &before {
        assert_eq!(
            request
                .headers
                .get("Circle-Token")
                .and_then(|v| v.to_str().ok()),
            Some(OLD_TOKEN),
            "before the rotation every call carries the mounted token, not CIRCLE_TOKEN"
        );
    }

    // The rotation: CircleCI revokes the old token, the kubelet swaps the Secret's files.
    circleci.reset().await;
    answer_for(&circleci, OLD_TOKEN, 401, 0).await;
    answer_for(&circleci, NEW_TOKEN, 200, 3).await;
    kube_atomic_write(
        &secrets_dir,
        &[("secrets.yaml", &class_tokens), ("circle-token", NEW_TOKEN)],
        2,
    );
    p.wait_for("swapping the token in", |v| {
        message(v) == "CircleCI API token changed; the next calls use the new one"
    });
    let next = p.wait_for("for the next cycle", cycle_for("org/a"));
    assert_eq!(
        next["unclaimed_tasks"], 3,
        "the next cycle used the new token: {next}"
    );
    p.wait_for("for one more cycle", cycle_for("org/a"));

    let after = circleci.received_requests().await.expect("recording");
    assert!(after.len() >= 4, "two cycles since the rotation: {after:?}");
    for request in &after {
        assert_eq!(
            request
                .headers
                .get("Circle-Token")
                .and_then(|v| v.to_str().ok()),
            Some(NEW_TOKEN),
            "a call after the rotation carried another token"
        );
    }
    assert!(
        !p.seen.iter().any(|l| l.contains("failed to get")),
        "a call failed around the rotation:\n{}",
        p.seen.join("\n")
    );
    assert!(
        p.child.try_wait().expect("wait").is_none(),
        "the process restarted"
    );
    p.sigterm();
    p.wait_for("saying it stopped", |v| message(v) == "stopped");
    p.assert_no_leak(&[ENV_TOKEN, OLD_TOKEN, NEW_TOKEN, RUNNER_TOKEN]);
}
