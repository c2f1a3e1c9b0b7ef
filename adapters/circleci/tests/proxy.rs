//! The client honours the proxy environment users set (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`).
//! Environment variables are process-wide, so each case runs this test binary again as a child
//! with its own environment; the child's assertions decide its exit status.

use std::process::Command;

use provisioner_circleci::{CircleCiClient, CircleCiError, ClientOptions, Endpoint};
use provisioner_core::{ResourceClass, Secret};
use wiremock::matchers::path;
use wiremock::{Mock, MockServer, ResponseTemplate};

const CHILD_MODE: &str = "CIRCLECI_PROXY_TEST_CHILD";
const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

#[test]
fn the_proxy_environment_is_honoured() {
    if let Ok(mode) = std::env::var(CHILD_MODE) {
        child(&mode);
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let proxy = MockServer::start().await;
        Mock::given(path("/api/v3/runner/tasks"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(
                br#"{"unclaimed_task_count": 11}"#.to_vec(),
                "application/json",
            ))
            .mount(&proxy)
            .await;

        run_child("via-proxy", &[("HTTP_PROXY", proxy.uri())]);
        let received = proxy.received_requests().await.expect("recording on");
        assert_eq!(received.len(), 1, "the request went through the proxy");
        let host = received[0]
            .headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert_eq!(
            host, "runner.example.invalid",
            "proxied for the configured host"
        );

        run_child(
            "bypass",
            &[
                ("HTTP_PROXY", proxy.uri()),
                ("NO_PROXY", "localhost,.example.invalid".to_owned()),
            ],
        );
        let received = proxy.received_requests().await.expect("recording on");
        assert_eq!(
            received.len(),
            1,
            "NO_PROXY kept the second request away from the proxy"
        );
    });
}

fn run_child(mode: &str, env: &[(&str, String)]) {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new(exe);
    command
        .args([
            "the_proxy_environment_is_honoured",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD_MODE, mode);
    for var in PROXY_VARS {
        command.env_remove(var);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().expect("the child ran");
    assert!(
        output.status.success(),
        "child {mode} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn child(mode: &str) {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let client = CircleCiClient::new(ClientOptions::new(
            "http://runner.example.invalid",
            Secret::new("tok"),
        ))
        .expect("valid options");
        let class = ResourceClass::parse("ns/x").expect("a valid class");
        let result = client.count(&class, Endpoint::Unclaimed).await;
        match mode {
            "via-proxy" => assert_eq!(result, Ok(11)),
            "bypass" => assert!(
                matches!(result, Err(CircleCiError::Network { .. })),
                "{result:?}"
            ),
            other => panic!("unknown child mode {other}"),
        }
    });
}
