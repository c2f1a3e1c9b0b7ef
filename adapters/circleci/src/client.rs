//! The production `DemandSource`: one HTTP client per process, a shared request budget, and
//! per-class back-off state.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use provisioner_core::{ApiUrl, DemandSource, PortError, ResourceClass, Secret};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::Serialize;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::budget::RequestBudget;
use crate::error::CircleCiError;
use crate::options::{ClientOptions, Endpoint, Observer, StatusClass, WaitObserver};
use crate::parse;

/// Error bodies beyond this are cut; the runner API's answers are a few dozen bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// One class's pair of calls may go together before the budget spaces requests out.
const BURST: u32 = 2;

const USER_AGENT: &str = concat!(
    "runner-provisioner/",
    env!("CARGO_PKG_VERSION"),
    " (+https://github.com/runner-provisioner/runner-provisioner)"
);

/// Both counts for a class, as `provisioner tasks` prints them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TasksReport {
    pub resource_class: ResourceClass,
    pub unclaimed_tasks: u32,
    pub running_tasks: u32,
}

/// Client of CircleCI's runner API. Cheap to clone: clones share the HTTP connection pool, the
/// request budget and the back-off state.
#[derive(Clone)]
pub struct CircleCiClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    unclaimed_url: Url,
    running_url: Url,
    runners_url: Url,
    /// Swapped in place by [`CircleCiClient::set_token`] (a rotated Secret file): the budget,
    /// back-off and connections carry over.
    token: RwLock<Token>,
    request_timeout: Duration,
    connect_timeout: Duration,
    requests_per_second: f64,
    budget: RequestBudget,
    backoff: Backoff,
    observer: Option<Observer>,
    wait_observer: Option<WaitObserver>,
}

/// The API token as sent, and as scrubbed from anything the server or the transport says.
struct Token {
    header: HeaderValue,
    secret: Secret,
}

impl Token {
    fn new(token: &Secret) -> Result<Self, CircleCiError> {
        let secret = Secret::new(token.expose().trim());
        if secret.is_empty() {
            return Err(CircleCiError::MissingToken);
        }
        let mut header =
            HeaderValue::from_str(secret.expose()).map_err(|_| CircleCiError::InvalidToken)?;
        header.set_sensitive(true);
        Ok(Self { header, secret })
    }
}

/// What one HTTP exchange produced, before it is judged.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl CircleCiClient {
    pub fn new(options: ClientOptions) -> Result<Self, CircleCiError> {
        let base = parse::base_url(&options.api_addr)?;
        let endpoint_url = |endpoint: Endpoint| {
            base.join(endpoint.path())
                .map_err(|e| CircleCiError::InvalidApiAddr {
                    addr: base.to_string(),
                    reason: e.to_string(),
                })
        };
        let (unclaimed_url, running_url, runners_url) = (
            endpoint_url(Endpoint::Unclaimed)?,
            endpoint_url(Endpoint::Running)?,
            endpoint_url(Endpoint::Runners)?,
        );
        let token = Token::new(&options.token)?;
        let secret = token.secret.clone();
        for (field, value) in [
            ("request_timeout", options.request_timeout),
            ("connect_timeout", options.connect_timeout),
        ] {
            if value.is_zero() {
                return Err(CircleCiError::InvalidOption {
                    field,
                    reason: "it must be more than 0s".to_owned(),
                });
            }
        }
        if options.backoff_initial.is_zero() {
            return Err(CircleCiError::InvalidOption {
                field: "backoff_initial",
                reason: "it must be more than 0s".to_owned(),
            });
        }
        let budget = RequestBudget::new(options.requests_per_second, BURST)?;
        let mut default_headers = HeaderMap::new();
        default_headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .default_headers(default_headers)
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .gzip(true)
            .redirect(same_server_redirects())
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| CircleCiError::HttpClient(parse::clean(&error_chain(&e), &secret)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                unclaimed_url,
                running_url,
                runners_url,
                token: RwLock::new(token),
                request_timeout: options.request_timeout,
                connect_timeout: options.connect_timeout,
                requests_per_second: options.requests_per_second,
                budget,
                backoff: Backoff::new(options.backoff_initial, options.backoff_max),
                observer: options.observer,
                wait_observer: options.wait_observer,
            }),
        })
    }

    /// Sends `token` from the next request on. A changed token also ends the back-off that
    /// the old one's refusals (401/403) caused, so a rotation takes effect on the next cycle
    /// without a restart. Returns whether the token changed.
    pub fn set_token(&self, token: &Secret) -> Result<bool, CircleCiError> {
        let new = Token::new(token)?;
        let mut current = self
            .inner
            .token
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if current.secret == new.secret {
            return Ok(false);
        }
        *current = new;
        drop(current);
        self.inner.backoff.forget_permanent();
        tracing::info!("CircleCI API token changed; the next calls use the new one");
        Ok(true)
    }

    fn secret(&self) -> Secret {
        self.inner
            .token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .secret
            .clone()
    }

    /// The API base address requests go to, always ending in `/`.
    pub fn api_addr(&self) -> &str {
        self.inner.base.as_str()
    }

    /// Both counts for `class`, fetched concurrently. Used by `provisioner tasks`.
    pub async fn tasks_report(&self, class: &ResourceClass) -> Result<TasksReport, CircleCiError> {
        let (unclaimed_tasks, running_tasks) = tokio::try_join!(
            self.count(class, Endpoint::Unclaimed),
            self.count(class, Endpoint::Running)
        )?;
        Ok(TasksReport {
            resource_class: class.clone(),
            unclaimed_tasks,
            running_tasks,
        })
    }

    /// One count for `class`. Refused without a request while the class (or, after a 429, the
    /// whole client) is backing off; otherwise waits for a slot of the shared budget.
    pub async fn count(
        &self,
        class: &ResourceClass,
        endpoint: Endpoint,
    ) -> Result<u32, CircleCiError> {
        self.get(class, endpoint, |body| parse::parse_count(body, endpoint))
            .await
    }

    /// The names of the runners connected for `class` (`GET /api/v3/runner?resource-class=`);
    /// the provisioner's VMs name their runner after the VM. It shares the request budget and
    /// honours a 429 pause, but its failures do not pause the class's task counts: scaling
    /// must not stop because this check cannot be made.
    pub async fn connected_runners(
        &self,
        class: &ResourceClass,
    ) -> Result<Vec<String>, CircleCiError> {
        self.get(class, Endpoint::Runners, parse::parse_runners)
            .await
    }

    async fn get<T>(
        &self,
        class: &ResourceClass,
        endpoint: Endpoint,
        parse: impl Fn(&[u8]) -> Result<T, provisioner_core::InvalidValue>,
    ) -> Result<T, CircleCiError> {
        let inner = &*self.inner;
        // Only the task counts decide whether a class is scaled, so only they pause it.
        let per_class = endpoint != Endpoint::Runners;
        if let Some(refusal) = inner.backoff.check(class, Instant::now()) {
            return Err(refusal);
        }
        inner
            .budget
            .acquire(|start| {
                if let Some(observer) = &inner.wait_observer {
                    observer(class, start.into_std());
                }
            })
            .await;
        // A pause may have begun while this call waited for its slot.
        if let Some(refusal) = inner.backoff.check(class, Instant::now()) {
            return Err(refusal);
        }
        let url = self.url(class, endpoint);
        let started = Instant::now();
        let answer = self.send(&url).await;
        let elapsed = started.elapsed();
        let status_class = match &answer {
            Ok(answer) => StatusClass::of_status(answer.status.as_u16()),
            Err(e) if e.is_timeout() => StatusClass::Timeout,
            Err(_) => StatusClass::Network,
        };
        if let Some(observer) = &inner.observer {
            observer(endpoint, status_class, elapsed);
        }
        tracing::debug!(
            resource_class = %class,
            endpoint = endpoint.as_str(),
            status = status_class.as_str(),
            latency_ms = elapsed.as_millis() as u64,
            "runner API call"
        );
        let now = Instant::now();
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                let error = self.transport_error(class, endpoint, &url, &e);
                if per_class {
                    inner.backoff.failed(class, &error, None, now);
                }
                return Err(error);
            }
        };
        let wall_now = jiff::Timestamp::now();
        let header = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok());
        if let Some(rate) = parse::advertised_rate(header) {
            inner.budget.limit_to(rate);
        }
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            let hint = header("retry-after")
                .and_then(|v| parse::parse_retry_after(v, wall_now))
                .or_else(|| parse::rate_limit_pause(header, wall_now));
            let message = parse::error_message(&answer.body, &self.secret());
            let error = inner.backoff.throttled(
                |retry_after| CircleCiError::RateLimited {
                    class: class.clone(),
                    endpoint,
                    retry_after,
                    message,
                },
                hint,
                now,
            );
            tracing::debug!(resource_class = %class, error = %error, "CircleCI is rate limiting the API token");
            return Err(error);
        }
        inner.backoff.not_throttled();
        if let Some(pause) = parse::rate_limit_pause(header, wall_now) {
            inner.backoff.quota_exhausted(pause, now);
        }
        match self.judge(class, endpoint, &url, &answer, parse) {
            Ok(value) => {
                if per_class {
                    inner.backoff.succeeded(class);
                }
                Ok(value)
            }
            Err(error) if !per_class => Err(error),
            Err(error) => {
                let hint = if answer.status.is_server_error() {
                    header("retry-after").and_then(|v| parse::parse_retry_after(v, wall_now))
                } else {
                    None
                };
                inner.backoff.failed(class, &error, hint, now);
                Err(error)
            }
        }
    }

    fn url(&self, class: &ResourceClass, endpoint: Endpoint) -> Url {
        let mut url = match endpoint {
            Endpoint::Unclaimed => self.inner.unclaimed_url.clone(),
            Endpoint::Running => self.inner.running_url.clone(),
            Endpoint::Runners => self.inner.runners_url.clone(),
        };
        url.query_pairs_mut()
            .append_pair("resource-class", class.as_str());
        url
    }

    async fn send(&self, url: &Url) -> Result<Answer, reqwest::Error> {
        let token = self
            .inner
            .token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .header
            .clone();
        let mut response = self
            .inner
            .http
            .get(url.clone())
            .header("Circle-Token", token)
            .send()
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            let room = MAX_BODY_BYTES - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= MAX_BODY_BYTES {
                break;
            }
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// Maps an answer other than a 429 to a parsed body or an error.
    fn judge<T>(
        &self,
        class: &ResourceClass,
        endpoint: Endpoint,
        url: &Url,
        answer: &Answer,
        parse: impl Fn(&[u8]) -> Result<T, provisioner_core::InvalidValue>,
    ) -> Result<T, CircleCiError> {
        let secret = self.secret();
        let status = answer.status.as_u16();
        let url = url.to_string();
        let class = class.clone();
        let message = || parse::error_message(&answer.body, &secret);
        match status {
            200..=299 => parse(&answer.body).map_err(|problem| CircleCiError::InvalidBody {
                class,
                endpoint,
                status,
                url,
                problem: parse::clean(&problem.0, &secret),
            }),
            401 | 403 => Err(CircleCiError::Unauthorized {
                class,
                status,
                url,
                message: message(),
            }),
            404 => Err(CircleCiError::NotFound {
                class,
                endpoint,
                url,
                message: message(),
            }),
            300..=399 => {
                let location = answer
                    .headers
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map_or_else(
                        || "no Location header".to_owned(),
                        |l| parse::clean(&ApiUrl::redact(l), &secret),
                    );
                Err(CircleCiError::Redirected {
                    class,
                    endpoint,
                    url,
                    location,
                })
            }
            500..=599 => Err(CircleCiError::Server {
                class,
                endpoint,
                status,
                url,
                message: message(),
            }),
            _ => Err(CircleCiError::UnexpectedStatus {
                class,
                endpoint,
                status,
                url,
                message: message(),
            }),
        }
    }

    fn transport_error(
        &self,
        class: &ResourceClass,
        endpoint: Endpoint,
        url: &Url,
        e: &reqwest::Error,
    ) -> CircleCiError {
        let inner = &*self.inner;
        let (class, url) = (class.clone(), url.to_string());
        if e.is_timeout() {
            let after = if e.is_connect() {
                inner.connect_timeout
            } else {
                inner.request_timeout
            };
            return CircleCiError::Timeout {
                class,
                endpoint,
                url,
                after: after.into(),
            };
        }
        CircleCiError::Network {
            class,
            endpoint,
            url,
            cause: parse::clean(&error_chain(e), &self.secret()),
        }
    }
}

/// Follows redirects that stay with the configured server only (e.g. a moved path, or http to
/// https), so the token never travels to another host, another port or over plain http.
fn same_server_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let safe = attempt
            .previous()
            .first()
            .is_none_or(|configured| token_may_follow(configured, attempt.url()));
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if safe {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// Whether a redirect from the configured address to `to` may carry the `Circle-Token` header:
/// the same origin, or the same host upgraded from http to https. reqwest strips only standard
/// credential headers on a cross-origin redirect, never a custom one like `Circle-Token`.
fn token_may_follow(configured: &Url, to: &Url) -> bool {
    let same_origin = configured.scheme() == to.scheme()
        && configured.port_or_known_default() == to.port_or_known_default();
    let upgrade = configured.scheme() == "http" && to.scheme() == "https";
    configured.host_str() == to.host_str() && (same_origin || upgrade)
}

/// A transport error with its causes ("connection refused", "dns error"), without the URL,
/// which the caller shows once itself.
fn error_chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text
            .replace(&format!(" ({url})"), "")
            .replace(url.as_str(), "<url>");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl fmt::Debug for CircleCiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircleCiClient")
            .field("api_addr", &self.inner.base.as_str())
            .field("token", &self.secret())
            .field("request_timeout", &self.inner.request_timeout)
            .field("connect_timeout", &self.inner.connect_timeout)
            .field("requests_per_second", &self.inner.requests_per_second)
            .field("request_interval", &self.inner.budget.interval())
            .field("backoff_max", &self.inner.backoff.max())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl DemandSource for CircleCiClient {
    async fn unclaimed_tasks(&self, class: &ResourceClass) -> Result<u32, PortError> {
        self.count(class, Endpoint::Unclaimed)
            .await
            .map_err(PortError::from)
    }

    async fn running_tasks(&self, class: &ResourceClass) -> Result<u32, PortError> {
        self.count(class, Endpoint::Running)
            .await
            .map_err(PortError::from)
    }

    /// Always known: a client exists only with an API token, which `GET /api/v3/runner` takes.
    async fn connected_runners(
        &self,
        class: &ResourceClass,
    ) -> Result<Option<Vec<String>>, PortError> {
        CircleCiClient::connected_runners(self, class)
            .await
            .map(Some)
            .map_err(PortError::from)
    }
}

/// `provisioner tasks`: both counts for one class, from the command line's raw values. The
/// caller prints the report as one JSON line, or the error and exits non-zero.
pub async fn tasks_command(
    resource_class: &str,
    api_addr: Option<&str>,
    token: Option<Secret>,
) -> Result<TasksReport, CircleCiError> {
    let token = token.filter(|t| !t.is_empty());
    // A token pasted into the wrong flag must not be echoed back.
    let class = ResourceClass::parse(resource_class).map_err(|e| {
        CircleCiError::InvalidClass(parse::clean(
            &e.0,
            token.as_ref().unwrap_or(&Secret::default()),
        ))
    })?;
    let token = token.ok_or(CircleCiError::MissingToken)?;
    let client = CircleCiClient::new(ClientOptions::new(api_addr.unwrap_or_default(), token))?;
    client.tasks_report(&class).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).expect("a valid URL")
    }

    #[test]
    fn the_token_follows_redirects_only_within_the_configured_server() {
        let configured = url("http://ci.example.com/api/v3/runner/tasks");
        for (to, allowed) in [
            ("http://ci.example.com/new/api", true),
            ("http://ci.example.com:80/new/api", true),
            ("https://ci.example.com/api", true),
            ("https://ci.example.com:8443/api", true),
            ("http://ci.example.com:8080/api", false),
            ("http://other.example.com/api", false),
            ("https://other.example.com/api", false),
        ] {
            assert_eq!(token_may_follow(&configured, &url(to)), allowed, "{to}");
        }
        let secure = url("https://ci.example.com/api/v3/runner/tasks");
        for (to, allowed) in [
            ("https://ci.example.com/new/api", true),
            ("http://ci.example.com/api", false),
            ("http://ci.example.com:443/api", false),
            ("https://ci.example.com:8443/api", false),
        ] {
            assert_eq!(token_may_follow(&secure, &url(to)), allowed, "{to}");
        }
    }
}
