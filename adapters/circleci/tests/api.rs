//! The client against a local fake runner API (wiremock): request shape, answers, every error
//! class, rate limits, back-off and the token never leaking.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provisioner_circleci::{
    CircleCiClient, CircleCiError, ClientOptions, Endpoint, StatusClass, tasks_command,
};
use provisioner_core::{DemandSource, ErrorKind, PortError, ResourceClass, Secret};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TOKEN: &str = "CCIPAT_s3cr3t-token-value";
const UNCLAIMED: &str = "/api/v3/runner/tasks";
const RUNNING: &str = "/api/v3/runner/tasks/running";

fn class(name: &str) -> ResourceClass {
    ResourceClass::parse(name).expect("a valid class name")
}

fn options(addr: &str) -> ClientOptions {
    let mut options = ClientOptions::new(addr, Secret::new(TOKEN));
    options.request_timeout = Duration::from_secs(5);
    options.requests_per_second = 1000.0;
    options
}

fn client(server: &MockServer) -> CircleCiClient {
    client_for(&server.uri())
}

fn client_for(addr: &str) -> CircleCiClient {
    CircleCiClient::new(options(addr)).expect("valid options")
}

fn json(status: u16, body: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.as_bytes().to_vec(), "application/json")
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server
        .received_requests()
        .await
        .expect("request recording is on")
}

/// Every error must be free of the token, in every form a caller might print it.
fn assert_no_token(error: &CircleCiError) {
    let port = PortError::from(error.clone());
    for text in [
        error.to_string(),
        format!("{error:?}"),
        port.to_string(),
        format!("{port:?}"),
    ] {
        assert!(!text.contains(TOKEN), "token leaked: {text}");
        assert!(!text.contains("s3cr3t"), "part of the token leaked: {text}");
    }
}

#[tokio::test]
async fn sends_one_get_per_count_with_the_token_header_and_parses_the_documented_json() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(UNCLAIMED))
        .and(query_param("resource-class", "dev-team/custom:arm64"))
        .and(header("Circle-Token", TOKEN))
        .respond_with(json(200, r#"{"unclaimed_task_count": 42}"#))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(RUNNING))
        .and(query_param("resource-class", "dev-team/custom:arm64"))
        .and(header("Circle-Token", TOKEN))
        .respond_with(json(200, r#"{"running_runner_tasks": 7}"#))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let report = client
        .tasks_report(&class("dev-team/custom:arm64"))
        .await
        .expect("both counts");
    assert_eq!((report.unclaimed_tasks, report.running_tasks), (42, 7));
    assert_eq!(
        serde_json::to_string(&report).expect("serializable"),
        r#"{"resource_class":"dev-team/custom:arm64","unclaimed_tasks":42,"running_tasks":7}"#
    );
    let received = requests(&server).await;
    assert_eq!(received.len(), 2);
    for request in &received {
        assert_eq!(
            request.url.query(),
            Some("resource-class=dev-team%2Fcustom%3Aarm64"),
            "raw query"
        );
        let agent = request
            .headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            agent.starts_with("runner-provisioner/"),
            "user agent {agent:?}"
        );
        let encodings = request
            .headers
            .get("accept-encoding")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(encodings.contains("gzip"), "accept-encoding {encodings:?}");
    }
}

#[tokio::test]
async fn the_demand_source_port_returns_each_count() {
    let server = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .respond_with(json(200, r#"{"unclaimed_task_count": 3}"#))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(RUNNING))
        .respond_with(json(200, r#"{"running_runner_tasks": 0}"#))
        .expect(1)
        .mount(&server)
        .await;
    let source: Arc<dyn DemandSource> = Arc::new(client(&server));
    let c = class("my-org/medium");
    assert_eq!(source.unclaimed_tasks(&c).await, Ok(3));
    assert_eq!(source.running_tasks(&c).await, Ok(0));
}

#[tokio::test]
async fn plus_and_slash_in_the_class_are_percent_encoded() {
    let server = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .and(query_param("resource-class", "a/b+c"))
        .respond_with(json(200, r#"{"unclaimed_task_count": 1}"#))
        .expect(1)
        .mount(&server)
        .await;
    let count = client(&server)
        .count(&class("a/b+c"), Endpoint::Unclaimed)
        .await;
    assert_eq!(count, Ok(1));
    assert_eq!(
        requests(&server).await[0].url.query(),
        Some("resource-class=a%2Fb%2Bc")
    );
}

#[tokio::test]
async fn a_server_address_works_with_a_trailing_slash_and_a_path_prefix() {
    let server = MockServer::start().await;
    Mock::given(path(RUNNING))
        .respond_with(json(200, r#"{"running_runner_tasks": 2}"#))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(path(format!("/circleci{RUNNING}")))
        .respond_with(json(200, r#"{"running_runner_tasks": 5}"#))
        .expect(2)
        .mount(&server)
        .await;
    let c = class("ns/x");
    for (addr, want) in [
        (format!("{}/", server.uri()), 2),
        (format!("{}/circleci", server.uri()), 5),
        (format!("{}/circleci/", server.uri()), 5),
    ] {
        let client = CircleCiClient::new(options(&addr)).expect("valid address");
        assert_eq!(
            client.count(&c, Endpoint::Running).await,
            Ok(want),
            "{addr}"
        );
    }
}

#[tokio::test]
async fn bad_options_are_refused_with_the_field_named() {
    for (opts, want) in [
        (
            ClientOptions::new("runner.circleci.com", Secret::new(TOKEN)),
            "no scheme",
        ),
        (
            ClientOptions::new("https://runner.circleci.com", Secret::new("  ")),
            "token is empty",
        ),
        (
            ClientOptions::new("https://runner.circleci.com", Secret::new("a\nb")),
            "characters",
        ),
        (
            ClientOptions {
                requests_per_second: 0.0,
                ..options("https://runner.circleci.com")
            },
            "requests_per_second",
        ),
        (
            ClientOptions {
                request_timeout: Duration::ZERO,
                ..options("https://runner.circleci.com")
            },
            "request_timeout",
        ),
    ] {
        let err = CircleCiClient::new(opts).expect_err(want);
        assert!(err.to_string().contains(want), "{err}");
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert_no_token(&err);
    }
    let default =
        CircleCiClient::new(ClientOptions::new("", Secret::new(TOKEN))).expect("default address");
    assert_eq!(default.api_addr(), "https://runner.circleci.com/");
}

#[tokio::test]
async fn unauthorized_and_forbidden_are_permanent_and_say_so() {
    for status in [401, 403] {
        let server = MockServer::start().await;
        Mock::given(path(UNCLAIMED))
            .respond_with(json(status, r#"{"message": "Invalid token provided."}"#))
            .expect(1)
            .mount(&server)
            .await;
        let err = client(&server)
            .count(&class("ns/x"), Endpoint::Unclaimed)
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::Permanent);
        let text = err.to_string();
        assert!(
            text.contains("the API token is invalid or cannot read runner tasks for ns/x"),
            "{text}"
        );
        assert!(text.contains(&format!("HTTP {status}")), "{text}");
        assert!(text.contains("Invalid token provided."), "{text}");
        assert_no_token(&err);
    }
}

#[tokio::test]
async fn not_found_is_permanent_and_points_at_the_class_or_address() {
    let server = MockServer::start().await;
    Mock::given(path(RUNNING))
        .respond_with(json(404, r#"{"message":"Not Found"}"#))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server)
        .count(&class("ns/x"), Endpoint::Running)
        .await
        .expect_err("404");
    assert!(matches!(err, CircleCiError::NotFound { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Permanent);
    let text = err.to_string();
    assert!(
        text.contains("running tasks for ns/x") && text.contains("wrong API address"),
        "{text}"
    );
}

#[tokio::test]
async fn server_errors_are_transient_and_html_bodies_are_described_not_dumped() {
    for (status, body, shows) in [
        (500, r#"{"message":"internal error"}"#, "internal error"),
        (
            502,
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            "HTML",
        ),
        (503, "upstream connect error", "upstream connect error"),
        (504, "", "HTTP 504"),
    ] {
        let server = MockServer::start().await;
        Mock::given(path(UNCLAIMED))
            .respond_with(ResponseTemplate::new(status).set_body_string(body))
            .expect(1)
            .mount(&server)
            .await;
        let err = client(&server)
            .count(&class("ns/x"), Endpoint::Unclaimed)
            .await
            .expect_err("5xx");
        assert_eq!(err.kind(), ErrorKind::Transient, "{status}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("HTTP {status}")) && text.contains(shows),
            "{text}"
        );
        assert!(!text.contains("<h1>"), "{text}");
    }
}

#[tokio::test]
async fn other_client_errors_are_permanent_except_request_timeout() {
    for (status, kind) in [
        (400, ErrorKind::Permanent),
        (418, ErrorKind::Permanent),
        (408, ErrorKind::Transient),
    ] {
        let server = MockServer::start().await;
        Mock::given(path(UNCLAIMED))
            .respond_with(ResponseTemplate::new(status))
            .mount(&server)
            .await;
        let err = client(&server)
            .count(&class("ns/x"), Endpoint::Unclaimed)
            .await
            .expect_err("4xx");
        assert_eq!(err.kind(), kind, "{status}: {err}");
        assert!(err.to_string().contains(&format!("HTTP {status}")), "{err}");
    }
}

#[tokio::test]
async fn garbage_and_wrong_shape_bodies_are_errors_naming_the_problem() {
    for (body, problem) in [
        ("<!DOCTYPE html><html>login</html>", "HTML"),
        ("\u{1}\u{2}garbage", "not JSON"),
        ("", "empty"),
        ("[1,2]", "not a JSON object"),
        (r#"{"other": 1}"#, "no \"unclaimed_task_count\""),
        (r#"{"unclaimed_task_count": -1}"#, "negative"),
        (r#"{"unclaimed_task_count": 2.5}"#, "not a whole number"),
        (r#"{"unclaimed_task_count": 1000001}"#, "more than 1000000"),
        (
            r#"{"unclaimed_task_count": 18446744073709551616}"#,
            "more than 1000000",
        ),
        (r#"{"unclaimed_task_count": "4"}"#, "a string"),
        (r#"{"unclaimed_task_count": null}"#, "null"),
    ] {
        let server = MockServer::start().await;
        Mock::given(path(UNCLAIMED))
            .respond_with(ResponseTemplate::new(200).set_body_string(body))
            .expect(1)
            .mount(&server)
            .await;
        let err = client(&server)
            .count(&class("ns/x"), Endpoint::Unclaimed)
            .await
            .expect_err(body);
        assert!(
            matches!(err, CircleCiError::InvalidBody { status: 200, .. }),
            "{body}: {err:?}"
        );
        assert!(err.to_string().contains(problem), "{body}: {err}");
        assert!(err.to_string().contains("HTTP 200"), "{err}");
    }
}

#[tokio::test]
async fn a_count_of_exactly_the_limit_and_zero_are_accepted() {
    let server = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .respond_with(json(
            200,
            r#"{"unclaimed_task_count": 1000000, "extra": true}"#,
        ))
        .mount(&server)
        .await;
    Mock::given(path(RUNNING))
        .respond_with(json(200, r#"{"running_runner_tasks": 0}"#))
        .mount(&server)
        .await;
    let report = client(&server)
        .tasks_report(&class("ns/x"))
        .await
        .expect("valid counts");
    assert_eq!(
        (report.unclaimed_tasks, report.running_tasks),
        (1_000_000, 0)
    );
}

#[tokio::test]
async fn a_slow_server_times_out_as_a_transient_error() {
    let server = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .respond_with(json(200, r#"{"unclaimed_task_count": 1}"#).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let client = CircleCiClient::new(ClientOptions {
        request_timeout: Duration::from_millis(300),
        ..options(&server.uri()).with_observer(Arc::new(move |_, status, _| {
            sink.lock().expect("not poisoned").push(status);
        }))
    })
    .expect("valid options");
    let started = Instant::now();
    let err = client
        .count(&class("ns/x"), Endpoint::Unclaimed)
        .await
        .expect_err("too slow");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "gave up after {:?}",
        started.elapsed()
    );
    assert!(matches!(err, CircleCiError::Timeout { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.to_string().contains("within 300ms"), "{err}");
    assert_eq!(
        *seen.lock().expect("not poisoned"),
        vec![StatusClass::Timeout]
    );
}

#[tokio::test]
async fn an_unreachable_address_is_a_transient_network_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = listener.local_addr().expect("bound");
    drop(listener);
    let client = CircleCiClient::new(options(&format!("http://{addr}"))).expect("valid options");
    let err = client
        .count(&class("ns/x"), Endpoint::Running)
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, CircleCiError::Network { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
    assert_no_token(&err);
}

#[tokio::test]
async fn a_429_with_retry_after_seconds_pauses_every_class_without_calling() {
    let server = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .respond_with(
            json(429, r#"{"message":"Too many requests"}"#).insert_header("Retry-After", "120"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let err = client
        .count(&class("ns/a"), Endpoint::Unclaimed)
        .await
        .expect_err("throttled");
    assert!(matches!(err, CircleCiError::RateLimited { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(
        err.retry_after(),
        Some(provisioner_core::Duration::from_secs(120))
    );
    assert!(
        err.to_string().contains("Too many requests") && err.to_string().contains("2m"),
        "{err}"
    );
    let port = PortError::from(err);
    assert_eq!(
        port.retry_after,
        Some(provisioner_core::Duration::from_secs(120))
    );
    for (c, endpoint) in [("ns/a", Endpoint::Unclaimed), ("ns/b", Endpoint::Running)] {
        let refusal = client
            .count(&class(c), endpoint)
            .await
            .expect_err("still paused");
        assert!(
            matches!(refusal, CircleCiError::BackingOff { .. }),
            "{refusal:?}"
        );
        assert_eq!(refusal.kind(), ErrorKind::Transient);
        let left = refusal
            .retry_after()
            .expect("a remaining time")
            .as_secs_f64();
        assert!((119.0..=120.0).contains(&left), "{left}");
        assert!(
            refusal.to_string().contains("backing off after"),
            "{refusal}"
        );
    }
    assert_eq!(requests(&server).await.len(), 1, "no request while paused");
}

#[tokio::test]
async fn a_429_with_an_http_date_retry_after_is_honoured() {
    let server = MockServer::start().await;
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(90);
    let date = jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&at)
        .expect("printable");
    Mock::given(path(UNCLAIMED))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", date.as_str()))
        .mount(&server)
        .await;
    let err = client(&server)
        .count(&class("ns/a"), Endpoint::Unclaimed)
        .await
        .expect_err("throttled");
    let after = err.retry_after().expect("a retry time").as_secs_f64();
    assert!((85.0..=90.0).contains(&after), "{date}: {after}");
}

#[tokio::test]
async fn a_429_without_retry_after_backs_off_exponentially_and_uses_ratelimit_reset() {
    let server = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .respond_with(ResponseTemplate::new(429))
        .mount(&server)
        .await;
    Mock::given(path(RUNNING))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("RateLimit-Remaining", "0")
                .insert_header("RateLimit-Reset", "42"),
        )
        .mount(&server)
        .await;
    let mut opts = options(&server.uri());
    opts.backoff_initial = Duration::from_millis(100);
    let client = CircleCiClient::new(opts).expect("valid options");
    let c = class("ns/a");
    let first = client
        .count(&c, Endpoint::Unclaimed)
        .await
        .expect_err("429");
    let first_after = first.retry_after().expect("a pause").as_millis();
    assert!((50..=100).contains(&first_after), "{first_after}");
    tokio::time::sleep(Duration::from_millis(120)).await;
    let second = client
        .count(&c, Endpoint::Unclaimed)
        .await
        .expect_err("429 again");
    let second_after = second.retry_after().expect("a pause").as_millis();
    assert!(
        (100..=200).contains(&second_after),
        "the pause grows: {second_after}"
    );
    tokio::time::sleep(Duration::from_millis(220)).await;
    let reset = client
        .count(&c, Endpoint::Running)
        .await
        .expect_err("429 with reset");
    assert_eq!(
        reset.retry_after(),
        Some(provisioner_core::Duration::from_secs(42))
    );
}

#[tokio::test]
async fn an_exhausted_rate_limit_window_pauses_after_a_successful_call() {
    let server = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .respond_with(
            json(200, r#"{"unclaimed_task_count": 4}"#)
                .insert_header("X-RateLimit-Limit-Minute", "60")
                .insert_header("X-RateLimit-Remaining-Minute", "0")
                .insert_header("X-RateLimit-Reset-Minute", "30"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    assert_eq!(
        client.count(&class("ns/a"), Endpoint::Unclaimed).await,
        Ok(4)
    );
    let refusal = client
        .count(&class("ns/b"), Endpoint::Unclaimed)
        .await
        .expect_err("quota used up");
    assert!(
        matches!(refusal, CircleCiError::BackingOff { .. }),
        "{refusal:?}"
    );
    let left = refusal.retry_after().expect("remaining").as_secs_f64();
    assert!((29.0..=30.0).contains(&left), "{left}");
}

#[tokio::test]
async fn a_failing_class_backs_off_alone_and_recovers() {
    let server = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .and(query_param("resource-class", "ns/bad"))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path(UNCLAIMED))
        .respond_with(json(200, r#"{"unclaimed_task_count": 1}"#))
        .mount(&server)
        .await;
    let mut opts = options(&server.uri());
    opts.backoff_initial = Duration::from_millis(200);
    let client = CircleCiClient::new(opts).expect("valid options");
    let (bad, good) = (class("ns/bad"), class("ns/good"));
    let err = client
        .count(&bad, Endpoint::Unclaimed)
        .await
        .expect_err("502");
    assert!(
        matches!(err, CircleCiError::Server { status: 502, .. }),
        "{err:?}"
    );
    let refusal = client
        .count(&bad, Endpoint::Running)
        .await
        .expect_err("backing off");
    assert!(
        matches!(refusal, CircleCiError::BackingOff { .. }),
        "{refusal:?}"
    );
    assert!(
        refusal.to_string().contains("HTTP 502"),
        "names the cause: {refusal}"
    );
    assert_eq!(
        client.count(&good, Endpoint::Unclaimed).await,
        Ok(1),
        "other classes go on"
    );
    assert_eq!(
        requests(&server).await.len(),
        2,
        "the refused call sent nothing"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        client.count(&bad, Endpoint::Unclaimed).await,
        Ok(1),
        "recovers after the pause"
    );
}

#[tokio::test]
async fn a_permanent_failure_also_backs_off_and_stays_permanent() {
    let server = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let c = class("ns/x");
    client
        .count(&c, Endpoint::Unclaimed)
        .await
        .expect_err("401");
    let refusal = client
        .count(&c, Endpoint::Unclaimed)
        .await
        .expect_err("backing off");
    assert_eq!(refusal.kind(), ErrorKind::Permanent, "{refusal}");
    assert!(
        refusal.to_string().contains("API token is invalid"),
        "{refusal}"
    );
}

#[tokio::test]
async fn the_shared_budget_spaces_requests_across_classes() {
    let server = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .respond_with(json(200, r#"{"unclaimed_task_count": 0}"#))
        .mount(&server)
        .await;
    let client = CircleCiClient::new(ClientOptions {
        requests_per_second: 20.0,
        ..options(&server.uri())
    })
    .expect("valid options");
    let started = Instant::now();
    let calls = (0..6).map(|i| {
        let client = client.clone();
        async move {
            client
                .count(&class(&format!("ns/c{i}")), Endpoint::Unclaimed)
                .await
        }
    });
    let results = spawn_all(calls).await;
    assert!(results.iter().all(|r| *r == Ok(0)), "{results:?}");
    // A burst of 2, then one every 50 ms: the sixth may not start before 200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(195),
        "{:?}",
        started.elapsed()
    );
}

/// Runs the calls as concurrent tasks, as the controller's per-class loops would.
async fn spawn_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.expect("task finished"));
    }
    out
}

#[tokio::test]
async fn redirects_to_another_host_are_not_followed_with_the_token() {
    let elsewhere = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .respond_with(json(200, r#"{"unclaimed_task_count": 9}"#))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let server = MockServer::start().await;
    let location = format!(
        "http://localhost:{}{UNCLAIMED}?resource-class=ns%2Fx",
        elsewhere.address().port()
    );
    Mock::given(path(UNCLAIMED))
        .respond_with(ResponseTemplate::new(302).insert_header("Location", location.as_str()))
        .mount(&server)
        .await;
    let err = client(&server)
        .count(&class("ns/x"), Endpoint::Unclaimed)
        .await
        .expect_err("redirect");
    assert!(matches!(err, CircleCiError::Redirected { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Permanent);
    assert!(err.to_string().contains("localhost"), "{err}");
}

#[tokio::test]
async fn redirects_to_another_port_of_the_same_host_are_not_followed_with_the_token() {
    let elsewhere = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .respond_with(json(200, r#"{"unclaimed_task_count": 9}"#))
        .expect(0)
        .mount(&elsewhere)
        .await;
    let server = MockServer::start().await;
    // Both servers listen on 127.0.0.1: only the port differs.
    let location = format!("{}{UNCLAIMED}?resource-class=ns%2Fx", elsewhere.uri());
    Mock::given(path(UNCLAIMED))
        .respond_with(ResponseTemplate::new(307).insert_header("Location", location.as_str()))
        .mount(&server)
        .await;
    let err = client(&server)
        .count(&class("ns/x"), Endpoint::Unclaimed)
        .await
        .expect_err("redirect");
    assert!(matches!(err, CircleCiError::Redirected { .. }), "{err:?}");
    assert!(
        requests(&elsewhere).await.is_empty(),
        "the token went to another port"
    );
}

#[tokio::test]
async fn redirects_on_the_same_host_are_followed() {
    let server = MockServer::start().await;
    Mock::given(path(format!("/new{UNCLAIMED}")))
        .and(header("Circle-Token", TOKEN))
        .respond_with(json(200, r#"{"unclaimed_task_count": 6}"#))
        .mount(&server)
        .await;
    Mock::given(path(UNCLAIMED))
        .respond_with(
            ResponseTemplate::new(308)
                .insert_header("Location", format!("/new{UNCLAIMED}?resource-class=ns%2Fx")),
        )
        .mount(&server)
        .await;
    assert_eq!(
        client(&server)
            .count(&class("ns/x"), Endpoint::Unclaimed)
            .await,
        Ok(6)
    );
}

#[tokio::test]
async fn the_observer_sees_each_request_with_fixed_labels() {
    let server = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .respond_with(json(200, r#"{"unclaimed_task_count": 1}"#))
        .mount(&server)
        .await;
    Mock::given(path(RUNNING))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let opts = options(&server.uri()).with_observer(Arc::new(move |endpoint, status, latency| {
        sink.lock()
            .expect("not poisoned")
            .push((endpoint, status, latency));
    }));
    let client = CircleCiClient::new(opts).expect("valid options");
    let c = class("ns/x");
    client
        .count(&c, Endpoint::Unclaimed)
        .await
        .expect("a count");
    client.count(&c, Endpoint::Running).await.expect_err("503");
    client
        .count(&c, Endpoint::Running)
        .await
        .expect_err("backing off: not observed");
    let seen = seen.lock().expect("not poisoned").clone();
    let labels: Vec<_> = seen
        .iter()
        .map(|(e, s, _)| (e.as_str(), s.as_str()))
        .collect();
    assert_eq!(labels, vec![("unclaimed", "2xx"), ("running", "5xx")]);
    assert!(
        seen.iter()
            .all(|(_, _, latency)| *latency < Duration::from_secs(5))
    );
    assert_eq!(StatusClass::ALL.len(), 7);
}

#[tokio::test]
async fn the_token_never_appears_in_any_error_or_debug_output() {
    let echo = format!(r#"{{"message": "token {TOKEN} is not allowed"}}"#);
    let mut errors = Vec::new();
    for status in [401, 403, 404, 418, 429, 500] {
        let server = MockServer::start().await;
        Mock::given(path(UNCLAIMED))
            .respond_with(json(status, &echo))
            .mount(&server)
            .await;
        let client = client(&server);
        let c = class("ns/x");
        errors.push(
            client
                .count(&c, Endpoint::Unclaimed)
                .await
                .expect_err("an error status"),
        );
        errors.push(
            client
                .count(&c, Endpoint::Unclaimed)
                .await
                .expect_err("backing off"),
        );
    }
    for body in [
        format!("garbage {TOKEN}"),
        format!("<html>{TOKEN}</html>"),
        format!(r#"{{"unclaimed_task_count": "{TOKEN}"}}"#),
    ] {
        let server = MockServer::start().await;
        Mock::given(path(UNCLAIMED))
            .respond_with(ResponseTemplate::new(200).set_body_string(body))
            .mount(&server)
            .await;
        errors.push(
            client(&server)
                .count(&class("ns/x"), Endpoint::Unclaimed)
                .await
                .expect_err("bad body"),
        );
    }
    let server = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .respond_with(
            ResponseTemplate::new(302)
                .insert_header("Location", format!("http://other.invalid/?t={TOKEN}")),
        )
        .mount(&server)
        .await;
    errors.push(
        client(&server)
            .count(&class("ns/x"), Endpoint::Unclaimed)
            .await
            .expect_err("redirect"),
    );
    let slow = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .mount(&slow)
        .await;
    let timeout_client = CircleCiClient::new(ClientOptions {
        request_timeout: Duration::from_millis(100),
        ..options(&slow.uri())
    })
    .expect("valid options");
    errors.push(
        timeout_client
            .count(&class("ns/x"), Endpoint::Unclaimed)
            .await
            .expect_err("timeout"),
    );
    let with_credentials = options(&format!("https://user:{TOKEN}@example.com"));
    let shown = format!("{with_credentials:?}");
    assert!(!shown.contains("s3cr3t"), "token leaked: {shown}");
    assert!(shown.contains("example.com"), "{shown}");
    errors.push(CircleCiClient::new(with_credentials).expect_err("credentials"));
    let mut bad_token = options("https://runner.circleci.com");
    bad_token.token = Secret::new(format!("{TOKEN}\u{7f}x"));
    errors.push(CircleCiClient::new(bad_token).expect_err("unsendable token"));
    let mut no_rate = options("https://runner.circleci.com");
    no_rate.requests_per_second = -1.0;
    errors.push(CircleCiClient::new(no_rate).expect_err("bad rate"));
    errors.push(
        tasks_command(TOKEN, None, Some(Secret::new(TOKEN)))
            .await
            .expect_err("a token is not a class"),
    );
    errors.push(
        tasks_command("ns/x", None, Some(Secret::new(" ")))
            .await
            .expect_err("blank token"),
    );
    let unreachable = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = unreachable.local_addr().expect("bound");
    drop(unreachable);
    errors.push(
        client_for(&format!("http://{addr}"))
            .count(&class("ns/x"), Endpoint::Unclaimed)
            .await
            .expect_err("nothing listens"),
    );
    let kinds: Vec<_> = errors
        .iter()
        .map(|e| {
            format!("{e:?}")
                .split([' ', '{', '('])
                .next()
                .map(str::to_owned)
        })
        .collect();
    for variant in [
        "Unauthorized",
        "NotFound",
        "UnexpectedStatus",
        "RateLimited",
        "Server",
        "BackingOff",
        "InvalidBody",
        "Redirected",
        "Timeout",
        "InvalidApiAddr",
        "InvalidToken",
        "InvalidOption",
        "InvalidClass",
        "MissingToken",
        "Network",
    ] {
        assert!(
            kinds.iter().any(|k| k.as_deref() == Some(variant)),
            "{variant} not covered: {kinds:?}"
        );
    }
    for error in &errors {
        assert_no_token(error);
    }
    let opts = options("https://runner.circleci.com");
    let client = CircleCiClient::new(opts.clone()).expect("valid options");
    for text in [format!("{opts:?}"), format!("{client:?}")] {
        assert!(!text.contains(TOKEN), "{text}");
        assert!(text.contains("redacted"), "{text}");
    }
}

#[tokio::test]
async fn the_tasks_command_reports_or_explains() {
    let server = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .respond_with(json(200, r#"{"unclaimed_task_count": 4}"#))
        .mount(&server)
        .await;
    Mock::given(path(RUNNING))
        .respond_with(json(200, r#"{"running_runner_tasks": 2}"#))
        .mount(&server)
        .await;
    let report = tasks_command("ns/x", Some(&server.uri()), Some(Secret::new(TOKEN)))
        .await
        .expect("a report");
    assert_eq!(
        serde_json::to_string(&report).expect("serializable"),
        r#"{"resource_class":"ns/x","unclaimed_tasks":4,"running_tasks":2}"#
    );
    let err = tasks_command("no-slash", Some(&server.uri()), Some(Secret::new(TOKEN)))
        .await
        .expect_err("bad class");
    assert!(err.to_string().contains("no-slash"), "{err}");
    let err = tasks_command("ns/x", Some(&server.uri()), None)
        .await
        .expect_err("no token");
    assert!(matches!(err, CircleCiError::MissingToken), "{err:?}");
    assert!(err.to_string().contains("CIRCLE_TOKEN"), "{err}");
}

#[tokio::test]
async fn an_advertised_rate_limit_slows_the_shared_budget_down() {
    let server = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .respond_with(
            json(200, r#"{"unclaimed_task_count": 0}"#)
                .insert_header("X-RateLimit-Limit-Second", "10")
                .insert_header("X-RateLimit-Remaining-Second", "9"),
        )
        .expect(5)
        .mount(&server)
        .await;
    let client = client(&server);
    assert_eq!(
        client.count(&class("ns/first"), Endpoint::Unclaimed).await,
        Ok(0)
    );
    assert!(
        format!("{client:?}").contains("request_interval: 100ms"),
        "{client:?}"
    );
    let started = Instant::now();
    let calls = (0..4).map(|i| {
        let client = client.clone();
        async move {
            client
                .count(&class(&format!("ns/c{i}")), Endpoint::Unclaimed)
                .await
        }
    });
    let results = spawn_all(calls).await;
    assert!(results.iter().all(|r| *r == Ok(0)), "{results:?}");
    // Configured for 1000/s, but CircleCI says 10/s: a burst of 2, then one every 100 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_huge_body_is_cut_and_refused_not_buffered_whole() {
    let server = MockServer::start().await;
    let padding = " ".repeat(2 * 1024 * 1024);
    Mock::given(path(UNCLAIMED))
        .respond_with(json(
            200,
            &format!("{{\"unclaimed_task_count\": 1,{padding}\"x\": 2}}"),
        ))
        .mount(&server)
        .await;
    let err = client(&server)
        .count(&class("ns/x"), Endpoint::Unclaimed)
        .await
        .expect_err("too large");
    assert!(matches!(err, CircleCiError::InvalidBody { .. }), "{err:?}");
}

#[tokio::test]
async fn a_503_with_retry_after_pauses_the_class_for_that_long() {
    let server = MockServer::start().await;
    Mock::given(path(RUNNING))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "90"))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let c = class("ns/x");
    let err = client.count(&c, Endpoint::Running).await.expect_err("503");
    assert_eq!(err.kind(), ErrorKind::Transient);
    let refusal = client
        .count(&c, Endpoint::Running)
        .await
        .expect_err("paused");
    let left = refusal.retry_after().expect("remaining").as_secs_f64();
    assert!(
        (89.0..=90.0).contains(&left),
        "the server's 90 s beats the 1 min cap: {left}"
    );
}

/// A gzip member holding `data` in one stored (uncompressed) deflate block: enough to check
/// that the client decodes `Content-Encoding: gzip` without a compression library.
fn gzip_stored(data: &[u8]) -> Vec<u8> {
    let crc = data.iter().fold(!0u32, |crc, &byte| {
        (0..8).fold(crc ^ u32::from(byte), |c, _| {
            if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            }
        })
    }) ^ !0u32;
    let len = u16::try_from(data.len()).expect("a small body");
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    out.push(1);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(data.len())
            .expect("a small body")
            .to_le_bytes(),
    );
    out
}

#[tokio::test]
async fn gzip_encoded_answers_are_decoded() {
    let server = MockServer::start().await;
    Mock::given(path(UNCLAIMED))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Content-Encoding", "gzip")
                .insert_header("Content-Type", "application/json")
                .set_body_bytes(gzip_stored(br#"{"unclaimed_task_count": 13}"#)),
        )
        .expect(1)
        .mount(&server)
        .await;
    assert_eq!(
        client(&server)
            .count(&class("ns/x"), Endpoint::Unclaimed)
            .await,
        Ok(13)
    );
}
