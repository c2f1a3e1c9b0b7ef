//! `GET /api/v3/runner` (connected runners) and in-place token rotation, against wiremock.

use provisioner_circleci::{CircleCiClient, CircleCiError, ClientOptions, Endpoint};
use provisioner_core::{DemandSource, ResourceClass, Secret};
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn class() -> ResourceClass {
    ResourceClass::parse("my-org/big").expect("class")
}

fn client(server: &MockServer, token: &str) -> CircleCiClient {
    CircleCiClient::new(ClientOptions::new(server.uri(), Secret::new(token))).expect("client")
}

#[tokio::test]
async fn connected_runners_lists_names_with_the_documented_request() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner"))
        .and(query_param("resource-class", "my-org/big"))
        .and(header("Circle-Token", "api-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"items": [
            {"resource_class": "my-org/big", "hostname": "p-0", "name": "p-0",
             "first_connected": "2026-01-01T00:00:00Z", "last_connected": "2026-01-01T00:01:00Z",
             "last_used": "2026-01-01T00:01:00Z", "version": "3.0.0"},
            {"resource_class": "my-org/big", "hostname": "p-1", "name": "p-1"}
        ]})))
        .expect(1)
        .mount(&server)
        .await;
    let names = client(&server, "api-token")
        .connected_runners(&class())
        .await
        .expect("runners");
    assert_eq!(names, vec!["p-0".to_owned(), "p-1".to_owned()]);
}

#[tokio::test]
async fn a_failed_runner_list_is_an_error_that_does_not_pause_the_task_counts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"message": "boom"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/tasks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"unclaimed_task_count": 3})))
        .mount(&server)
        .await;
    let c = client(&server, "api-token");
    let err = c.connected_runners(&class()).await.expect_err("500");
    assert!(
        matches!(err, CircleCiError::Server { status: 500, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("connected runners"), "{err}");
    assert_eq!(
        c.count(&class(), Endpoint::Unclaimed).await.expect("count"),
        3
    );
}

#[tokio::test]
async fn a_rotated_token_is_used_by_the_next_call_without_waiting_out_the_401_backoff() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/tasks"))
        .and(header("Circle-Token", "old"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"message": "unauthorized"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/tasks"))
        .and(header("Circle-Token", "new"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"unclaimed_task_count": 5})))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server, "old");
    let err = c
        .count(&class(), Endpoint::Unclaimed)
        .await
        .expect_err("401");
    assert!(matches!(err, CircleCiError::Unauthorized { .. }), "{err}");
    // Backing off: no second 401 is sent (the mock expects exactly one).
    assert!(c.count(&class(), Endpoint::Unclaimed).await.is_err());
    assert!(c.set_token(&Secret::new("new")).expect("valid token"));
    assert!(!c.set_token(&Secret::new("new")).expect("same token"));
    assert_eq!(
        c.count(&class(), Endpoint::Unclaimed).await.expect("count"),
        5
    );
    assert!(!format!("{c:?}").contains("new\""));
}

#[tokio::test]
async fn as_a_demand_source_the_client_knows_connected_runners_and_reports_failures() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner"))
        .and(query_param("resource-class", "my-org/big"))
        .and(header("Circle-Token", "api-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"items": [{"name": "p-0"}]})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let source: &dyn DemandSource = &client(&server, "api-token");
    assert_eq!(
        source.connected_runners(&class()).await.expect("runners"),
        Some(vec!["p-0".to_owned()])
    );
    let err = source
        .connected_runners(&class())
        .await
        .expect_err("503 is an error, not an empty list");
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn a_runner_list_slower_than_the_timeout_is_a_transient_error_without_the_token() {
    let token = "api-token-slow-4f2e";
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"items": []}))
                .set_delay(std::time::Duration::from_secs(5)),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v3/runner/tasks"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"unclaimed_task_count": 2})))
        .mount(&server)
        .await;
    let c = CircleCiClient::new(ClientOptions {
        request_timeout: std::time::Duration::from_millis(300),
        ..ClientOptions::new(server.uri(), Secret::new(token))
    })
    .expect("client");
    let started = std::time::Instant::now();
    let err = c.connected_runners(&class()).await.expect_err("too slow");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "the client waited {:?}, past its 300 ms timeout",
        started.elapsed()
    );
    assert!(
        matches!(
            err,
            CircleCiError::Timeout {
                endpoint: Endpoint::Runners,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), provisioner_core::ErrorKind::Transient, "{err}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("connected runners"), "{text}");
    assert!(!text.contains(token), "the token leaked: {text}");
    // Like any runner-list failure, it does not pause the class's task counts.
    assert_eq!(
        c.count(&class(), Endpoint::Unclaimed).await.expect("count"),
        2
    );
}
