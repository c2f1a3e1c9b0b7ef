//! The crate's one error enum. Every message names the class and what was asked for, never the
//! token: server-supplied text is scrubbed of it before it is stored.

use provisioner_core::{Duration, ErrorKind, PortError, ResourceClass};

use crate::options::Endpoint;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CircleCiError {
    #[error("CircleCI API address {addr:?} is invalid: {reason}")]
    InvalidApiAddr { addr: String, reason: String },

    #[error("the CircleCI API token is empty (set circleToken / CIRCLE_TOKEN)")]
    MissingToken,

    #[error("the CircleCI API token contains characters that cannot be sent in an HTTP header")]
    InvalidToken,

    #[error("{field} is invalid: {reason}")]
    InvalidOption { field: &'static str, reason: String },

    #[error("{0}")]
    InvalidClass(String),

    #[error("could not set up the HTTP client: {0}")]
    HttpClient(String),

    #[error(
        "the API token is invalid or cannot read runner tasks for {class} (HTTP {status} from {url}{})",
        server_says(message)
    )]
    Unauthorized {
        class: ResourceClass,
        status: u16,
        url: String,
        message: Option<String>,
    },

    #[error(
        "{} for {class}: HTTP 404 from {url}: unknown resource class or wrong API address (circleciAPIAddr){}",
        endpoint.what(),
        server_says(message)
    )]
    NotFound {
        class: ResourceClass,
        endpoint: Endpoint,
        url: String,
        message: Option<String>,
    },

    #[error(
        "{} for {class}: rate limited by CircleCI (HTTP 429), retrying after {retry_after}{}",
        endpoint.what(),
        server_says(message)
    )]
    RateLimited {
        class: ResourceClass,
        endpoint: Endpoint,
        retry_after: Duration,
        message: Option<String>,
    },

    #[error("{} for {class}: HTTP {status} from {url}{}", endpoint.what(), server_says(message))]
    Server {
        class: ResourceClass,
        endpoint: Endpoint,
        status: u16,
        url: String,
        message: Option<String>,
    },

    #[error("{} for {class}: unexpected HTTP {status} from {url}{}", endpoint.what(), server_says(message))]
    UnexpectedStatus {
        class: ResourceClass,
        endpoint: Endpoint,
        status: u16,
        url: String,
        message: Option<String>,
    },

    #[error(
        "{} for {class}: {url} redirected away from it ({location}: another host, another port or plain http); the token is not sent there, set circleciAPIAddr to the final address",
        endpoint.what()
    )]
    Redirected {
        class: ResourceClass,
        endpoint: Endpoint,
        url: String,
        location: String,
    },

    #[error("{} for {class}: no response from {url} within {after}", endpoint.what())]
    Timeout {
        class: ResourceClass,
        endpoint: Endpoint,
        url: String,
        after: Duration,
    },

    #[error("{} for {class}: could not reach {url}: {cause}", endpoint.what())]
    Network {
        class: ResourceClass,
        endpoint: Endpoint,
        url: String,
        cause: String,
    },

    #[error(
        "{} for {class}: HTTP {status} from {url} is not a runner API answer: {problem} (is circleciAPIAddr the runner API?)",
        endpoint.what()
    )]
    InvalidBody {
        class: ResourceClass,
        endpoint: Endpoint,
        status: u16,
        url: String,
        problem: String,
    },

    /// A call refused without a request because an earlier one failed; `cause` is that failure.
    #[error("{class}: not calling CircleCI for another {remaining}, backing off after: {cause}")]
    BackingOff {
        class: ResourceClass,
        remaining: Duration,
        cause_kind: ErrorKind,
        cause: String,
    },
}

fn server_says(message: &Option<String>) -> String {
    message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

impl CircleCiError {
    /// Whether retrying can help: bad tokens, unknown classes and wrong addresses need a person.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidApiAddr { .. }
            | Self::MissingToken
            | Self::InvalidToken
            | Self::InvalidOption { .. }
            | Self::InvalidClass(_)
            | Self::HttpClient(_)
            | Self::Unauthorized { .. }
            | Self::NotFound { .. }
            | Self::Redirected { .. } => ErrorKind::Permanent,
            Self::UnexpectedStatus { status, .. } => {
                if matches!(status, 408 | 409 | 425) {
                    ErrorKind::Transient
                } else {
                    ErrorKind::Permanent
                }
            }
            Self::RateLimited { .. }
            | Self::Server { .. }
            | Self::Timeout { .. }
            | Self::Network { .. }
            | Self::InvalidBody { .. } => ErrorKind::Transient,
            Self::BackingOff { cause_kind, .. } => *cause_kind,
        }
    }

    /// How long the caller should leave the class alone, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            Self::BackingOff { remaining, .. } => Some(*remaining),
            _ => None,
        }
    }
}

impl From<CircleCiError> for PortError {
    fn from(error: CircleCiError) -> Self {
        let port = PortError {
            kind: error.kind(),
            message: error.to_string(),
            retry_after: None,
        };
        match error.retry_after() {
            Some(after) => port.with_retry_after(after),
            None => port,
        }
    }
}
