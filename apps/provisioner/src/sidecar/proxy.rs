//! The token proxy: runs next to each runner VM (in its `virt-launcher` pod) and forwards the
//! guest runner's calls to CircleCI. Only the task claim gets the resource-class token; every
//! other call leaves with the credentials the runner sent (the task-scoped token from the claim
//! response). The class token is read from the pod's Secret on each claim, so a rotated token
//! needs no restart, and it never reaches a log, an error or a response.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use provisioner_core::Secret;
use tokio::net::TcpListener;

/// The one call that needs the class token (`circleci-runner` claims tasks with it).
pub const CLAIM_PATH: &str = "/api/v3/runner/claim";
/// File names in the Secret directory (the keys the KubeVirt adapter writes).
const TOKEN_FILE: &str = "token";
const URL_FILE: &str = "url";
const ALLOW_FILE: &str = "allow-from";
/// KubeVirt's masquerade network, for a Secret without `allow-from`.
const DEFAULT_ALLOW: &str = "10.0.2.0/24";

/// Limits and timeouts; the defaults suit the runner API's small JSON bodies (a claim response
/// carries the task's config, so it gets room).
#[derive(Debug, Clone)]
pub struct ProxyLimits {
    pub max_request_body: usize,
    pub max_response_body: usize,
    pub connect_timeout: Duration,
    /// For the whole upstream exchange, per attempt.
    pub request_timeout: Duration,
    /// Extra attempts for idempotent calls (and for any call that never reached upstream).
    pub retries: u32,
    pub retry_delay: Duration,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        Self {
            max_request_body: 1024 * 1024,
            max_response_body: 16 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            retries: 2,
            retry_delay: Duration::from_millis(500),
        }
    }
}

/// What the proxy forwards to and whom it serves, read from its Secret directory.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// CircleCI's runner API (or a CircleCI Server), without a trailing `/`.
    pub upstream: String,
    /// Where the class token is read from on each claim.
    pub token_file: PathBuf,
    /// Only the guest connects: peers outside this IPv4 network get 403.
    pub allow: (Ipv4Addr, u8),
    pub limits: ProxyLimits,
}

impl ProxyConfig {
    /// Reads `url` and `allow-from` from `dir` and checks that `token` is there and not empty.
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        let url_path = dir.join(URL_FILE);
        let upstream = std::fs::read_to_string(&url_path)
            .map_err(|e| invalid(format!("{}: {e}", url_path.display())))?
            .trim()
            .trim_end_matches('/')
            .to_owned();
        if !(upstream.starts_with("https://") || upstream.starts_with("http://"))
            || reqwest::Url::parse(&upstream).is_err()
        {
            return Err(invalid(format!(
                "{}: {upstream:?} is not an http(s) URL",
                url_path.display()
            )));
        }
        let allow_path = dir.join(ALLOW_FILE);
        let allow_text = match std::fs::read_to_string(&allow_path) {
            Ok(text) => text.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DEFAULT_ALLOW.to_owned(),
            Err(e) => return Err(invalid(format!("{}: {e}", allow_path.display()))),
        };
        let allow = parse_cidr(&allow_text).ok_or_else(|| {
            invalid(format!(
                "{}: {allow_text:?} is not an IPv4 network like 10.0.2.0/24",
                allow_path.display()
            ))
        })?;
        let token_file = dir.join(TOKEN_FILE);
        read_token(&token_file)?;
        Ok(Self {
            upstream,
            token_file,
            allow,
            limits: ProxyLimits::default(),
        })
    }
}

fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, len) = text.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    (len <= 32).then_some((addr, len))
}

fn allowed(peer: IpAddr, (net, len): (Ipv4Addr, u8)) -> bool {
    let peer = match peer {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return false,
        },
    };
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(peer) & mask == u32::from(net) & mask
}

/// The class token, trimmed; an empty or unreadable file is an error that names the file only.
fn read_token(path: &Path) -> std::io::Result<Secret> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        std::io::Error::new(e.kind(), format!("class token {}: {e}", path.display()))
    })?;
    let token = Secret::new(text.trim());
    if token.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("class token {} is empty", path.display()),
        ));
    }
    Ok(token)
}

#[derive(Debug)]
struct Shared {
    config: ProxyConfig,
    client: reqwest::Client,
}

/// Serves until `shutdown` resolves, then finishes the calls in flight.
pub async fn serve(
    listener: TcpListener,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let client = reqwest::Client::builder()
        .connect_timeout(config.limits.connect_timeout)
        // Redirects go back to the runner, which knows what to send where.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(std::io::Error::other)?;
    let shared = Arc::new(Shared { config, client });
    let app = Router::new().fallback(forward).with_state(shared);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Headers that describe one hop, not the message; never forwarded either way.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn copy_headers(from: &HeaderMap, skip_length: bool) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        let lower = name.as_str();
        if HOP_BY_HOP.contains(&lower)
            || lower == "host"
            || (skip_length && lower == "content-length")
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "message": format!("runner token proxy: {message}") });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn forward(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = forward_inner(&shared, peer, request).await;
    tracing::info!(
        %method,
        path = %path,
        status = response.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "proxied"
    );
    response
}

async fn forward_inner(shared: &Shared, peer: SocketAddr, request: Request) -> Response {
    let config = &shared.config;
    if !allowed(peer.ip(), config.allow) {
        return error(
            StatusCode::FORBIDDEN,
            "only the VM of this pod may use this proxy",
        );
    }
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let url = format!("{}{path_and_query}", config.upstream);
    let body = match axum::body::to_bytes(body, config.limits.max_request_body).await {
        Ok(body) => body,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body over {} bytes", config.limits.max_request_body),
            );
        }
    };
    let mut headers = copy_headers(&parts.headers, true);
    if parts.method == Method::POST && parts.uri.path() == CLAIM_PATH {
        let token = match read_token(&config.token_file) {
            Ok(token) => token,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the class token");
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the class token is not available",
                );
            }
        };
        let mut value = match HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
            Ok(value) => value,
            Err(_) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the class token is not a valid header value",
                );
            }
        };
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }
    send(shared, &parts.method, &url, headers, body).await
}

/// Sends with retries: idempotent methods retry on connect errors, timeouts and 502/503/504;
/// others (the claim is a POST) only when the request never left, so a task is never claimed
/// twice.
async fn send(
    shared: &Shared,
    method: &Method,
    url: &str,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let limits = &shared.config.limits;
    let idempotent = matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    );
    let mut attempt = 0;
    loop {
        let result = shared
            .client
            .request(method.clone(), url)
            .headers(headers.clone())
            .body(body.clone())
            .timeout(limits.request_timeout)
            .send()
            .await;
        let retry = match &result {
            Ok(r) => idempotent && matches!(r.status().as_u16(), 502..=504),
            Err(e) => e.is_connect() || (idempotent && e.is_timeout()),
        };
        if retry && attempt < limits.retries {
            attempt += 1;
            tokio::time::sleep(limits.retry_delay * attempt).await;
            continue;
        }
        return match result {
            Ok(upstream) => relay(upstream, limits.max_response_body).await,
            Err(e) if e.is_timeout() => error(
                StatusCode::GATEWAY_TIMEOUT,
                &format!(
                    "CircleCI did not answer within {}s",
                    limits.request_timeout.as_secs()
                ),
            ),
            // reqwest's message names the host, never a header.
            Err(e) => error(
                StatusCode::BAD_GATEWAY,
                &format!("cannot reach CircleCI: {}", error_chain(&e)),
            ),
        };
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The upstream response, read whole within `max` bytes (a bigger one is a 502, not a
/// truncated body the runner would misread).
async fn relay(mut upstream: reqwest::Response, max: usize) -> Response {
    let status = upstream.status();
    let headers = copy_headers(upstream.headers(), true);
    if upstream
        .content_length()
        .is_some_and(|len| len > max as u64)
    {
        return error(
            StatusCode::BAD_GATEWAY,
            &format!("CircleCI's response is over {max} bytes"),
        );
    }
    let mut body = Vec::new();
    loop {
        match upstream.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return error(
                        StatusCode::BAD_GATEWAY,
                        &format!("CircleCI's response is over {max} bytes"),
                    );
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) if e.is_timeout() => {
                return error(StatusCode::GATEWAY_TIMEOUT, "CircleCI's response stalled");
            }
            Err(e) => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    &format!("CircleCI's response broke off: {}", error_chain(&e)),
                );
            }
        }
    }
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (name, value) in &headers {
        response.headers_mut().append(name.clone(), value.clone());
    }
    response
}
