//! How the client is configured, and the fixed-cardinality labels it reports latency under.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use provisioner_core::{ApiUrl, ResourceClass, Secret};

/// CircleCI cloud's runner API. CircleCI Server users set their server's address instead.
pub use provisioner_core::domain::DEFAULT_API_ADDR;

/// Default shared request budget across all classes of one process.
pub const DEFAULT_REQUESTS_PER_SECOND: f64 = 10.0;

/// Which runner API call a request was. A metric label, so the set is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `GET /api/v3/runner/tasks` -> `unclaimed_task_count`.
    Unclaimed,
    /// `GET /api/v3/runner/tasks/running` -> `running_runner_tasks`.
    Running,
    /// `GET /api/v3/runner` -> `items[].name`: the runners connected for the class.
    Runners,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [Self::Unclaimed, Self::Running, Self::Runners];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unclaimed => "unclaimed",
            Self::Running => "running",
            Self::Runners => "runners",
        }
    }

    /// The path below the API address.
    pub(crate) const fn path(self) -> &'static str {
        match self {
            Self::Unclaimed => "api/v3/runner/tasks",
            Self::Running => "api/v3/runner/tasks/running",
            Self::Runners => "api/v3/runner",
        }
    }

    /// The JSON field holding the count in a 200 body.
    pub const fn field(self) -> &'static str {
        match self {
            Self::Unclaimed => "unclaimed_task_count",
            Self::Running => "running_runner_tasks",
            Self::Runners => "items",
        }
    }

    /// What the count is, in words, for error messages.
    pub(crate) const fn what(self) -> &'static str {
        match self {
            Self::Unclaimed => "unclaimed tasks",
            Self::Running => "running tasks",
            Self::Runners => "connected runners",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a request ended. A metric label, so the set is fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// 2xx.
    Success,
    /// 3xx that was not followed (a redirect away from the configured server).
    Redirect,
    /// 4xx other than 429.
    ClientError,
    /// 429.
    RateLimited,
    /// 5xx.
    ServerError,
    /// No response within the connect or request timeout.
    Timeout,
    /// Connection refused, DNS failure, TLS failure, reset connection.
    Network,
}

impl StatusClass {
    pub const ALL: [StatusClass; 7] = [
        Self::Success,
        Self::Redirect,
        Self::ClientError,
        Self::RateLimited,
        Self::ServerError,
        Self::Timeout,
        Self::Network,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "2xx",
            Self::Redirect => "3xx",
            Self::ClientError => "4xx",
            Self::RateLimited => "429",
            Self::ServerError => "5xx",
            Self::Timeout => "timeout",
            Self::Network => "network",
        }
    }

    pub(crate) fn of_status(status: u16) -> Self {
        match status {
            200..=299 => Self::Success,
            429 => Self::RateLimited,
            500..=599 => Self::ServerError,
            300..=399 => Self::Redirect,
            _ => Self::ClientError,
        }
    }
}

impl fmt::Display for StatusClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Called once per HTTP request actually sent (not for calls refused while backing off), with
/// the request's wall time; the binary records it as a latency histogram.
pub type Observer = Arc<dyn Fn(Endpoint, StatusClass, Duration) + Send + Sync>;

/// Called when a call must wait for its slot of the shared request budget, with the class and
/// when the slot starts: the wait is known, so the caller's liveness can allow for it.
pub type WaitObserver = Arc<dyn Fn(&ResourceClass, Instant) + Send + Sync>;

/// Settings for [`crate::CircleCiClient`]. Build with [`ClientOptions::new`] and adjust fields.
#[derive(Clone)]
pub struct ClientOptions {
    /// The runner API's base address; a CircleCI Server address may carry a path prefix.
    pub api_addr: String,
    /// A personal or project API token that can read runner tasks (sent as `Circle-Token`).
    pub token: Secret,
    /// Whole-request limit (connect, send, read the body).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Requests per second across all classes of this client. Calls beyond it wait their turn
    /// (first come, first served), which spreads many classes' polls over the poll interval.
    pub requests_per_second: f64,
    /// First back-off after a failed call for a class; doubles per consecutive failure.
    pub backoff_initial: Duration,
    /// Back-off cap. Kept short because a class in back-off is not scaled: after an outage,
    /// jobs should not wait minutes for the next poll. A server's `Retry-After` or rate-limit
    /// reset is honoured beyond it (up to an hour).
    pub backoff_max: Duration,
    pub observer: Option<Observer>,
    pub wait_observer: Option<WaitObserver>,
}

impl ClientOptions {
    /// Defaults: 10 s request timeout, 5 s connect timeout, 10 requests per second, back-off
    /// from 1 s doubling to 1 min. An empty `api_addr` means [`DEFAULT_API_ADDR`].
    pub fn new(api_addr: impl Into<String>, token: Secret) -> Self {
        let api_addr = api_addr.into();
        Self {
            api_addr: if api_addr.trim().is_empty() {
                DEFAULT_API_ADDR.to_owned()
            } else {
                api_addr
            },
            token,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            requests_per_second: DEFAULT_REQUESTS_PER_SECOND,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            observer: None,
            wait_observer: None,
        }
    }

    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn with_wait_observer(mut self, observer: WaitObserver) -> Self {
        self.wait_observer = Some(observer);
        self
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            // An address pasted with credentials is refused by the client, but must not be
            // shown by whoever prints the options first.
            .field("api_addr", &ApiUrl::redact(&self.api_addr))
            .field("token", &self.token)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("requests_per_second", &self.requests_per_second)
            .field("backoff_initial", &self.backoff_initial)
            .field("backoff_max", &self.backoff_max)
            .field("observer", &self.observer.as_ref().map(|_| "<fn>"))
            .field(
                "wait_observer",
                &self.wait_observer.as_ref().map(|_| "<fn>"),
            )
            .finish()
    }
}
