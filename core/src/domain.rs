//! Domain newtypes. Each is built through a validating constructor, so a value that exists is
//! valid: a resource class always has both parts, a duration is never negative.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// Why a domain value was refused. The message names the value; callers add the field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// A CircleCI resource class, `<namespace>/<name>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceClass(String);

impl ResourceClass {
    /// The namespace part: lowercase letters, digits, `_`, `-`. The name part may also hold
    /// uppercase letters, `:` and `+` (CircleCI's documented alphabet).
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let invalid = |why: &str| {
            InvalidValue(format!(
                "resource class {value:?} is invalid: {why} (expected \"<namespace>/<name>\", e.g. \"my-org/my-runner\")"
            ))
        };
        let Some((namespace, name)) = value.split_once('/') else {
            return Err(invalid("it has no '/'"));
        };
        if namespace.is_empty() {
            return Err(invalid("the namespace part is empty"));
        }
        if name.is_empty() {
            return Err(invalid("the name part is empty"));
        }
        if let Some(c) = namespace
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
        {
            return Err(invalid(&format!(
                "the namespace may hold only lowercase letters, digits, '_' and '-', not {c:?}"
            )));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(*c, '_' | '-' | ':' | '+')))
        {
            return Err(invalid(&format!(
                "the name may hold only letters, digits, '_', '-', ':' and '+', not {c:?}"
            )));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn namespace(&self) -> &str {
        self.0.split_once('/').map_or("", |(ns, _)| ns)
    }

    pub fn name(&self) -> &str {
        self.0.split_once('/').map_or("", |(_, n)| n)
    }
}

impl fmt::Display for ResourceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ResourceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceClass({:?})", self.0)
    }
}

impl FromStr for ResourceClass {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ResourceClass {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// CircleCI's cloud runner API, the address used when none is configured.
pub const DEFAULT_API_ADDR: &str = "https://runner.circleci.com";

/// The CircleCI runner API address: an http(s) URL with a host and an optional path prefix, and
/// no credentials (the token travels in a header), query, fragment or white space. The config
/// file, the command line and the CircleCI adapter all validate it here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiUrl(String);

impl ApiUrl {
    /// Surrounding white space is dropped (a pasted value often brings a newline); the rest is
    /// kept as written.
    pub fn parse(value: &str) -> Result<Self, InvalidApiUrl> {
        let text = value.trim();
        match Self::problem(text) {
            None => Ok(Self(text.to_owned())),
            Some(reason) => Err(InvalidApiUrl {
                addr: Self::redact(text),
                reason,
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The address with any `user:password@` replaced, for messages and Debug output.
    pub fn redact(addr: &str) -> String {
        let Some((scheme, rest)) = addr.split_once("://") else {
            return addr.to_owned();
        };
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        match rest[..authority_end].rfind('@') {
            Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
            None => addr.to_owned(),
        }
    }

    fn problem(text: &str) -> Option<&'static str> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Some("it has no scheme (expected e.g. \"https://runner.circleci.com\")");
        };
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Some("the scheme must be http or https");
        }
        if text.contains(char::is_whitespace) {
            return Some("it contains white space");
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return Some(
                "it must not hold credentials; the token comes from circleToken / CIRCLE_TOKEN",
            );
        }
        if rest.contains(['?', '#']) {
            return Some("it must not have a query or fragment");
        }
        // An IPv6 host is bracketed (`[::1]:8080`), so its colons are not the port's.
        let (host, port) = match authority.strip_prefix('[') {
            Some(bracketed) => match bracketed.split_once(']') {
                Some((host, after)) => (host, after.strip_prefix(':')),
                None => ("", None),
            },
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Some("it has no host");
        }
        if port.is_some_and(|p| !p.is_empty() && p.parse::<u16>().is_err()) {
            return Some("its port is not a number from 0 to 65535");
        }
        None
    }
}

impl Default for ApiUrl {
    fn default() -> Self {
        Self(DEFAULT_API_ADDR.to_owned())
    }
}

impl fmt::Display for ApiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why an API address was refused; `addr` has any credentials redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{addr:?} is not an http(s) URL: {reason}")]
pub struct InvalidApiUrl {
    pub addr: String,
    pub reason: &'static str,
}

/// A number of VMs. KubeVirt's `replicas` is an int32, so counts stop at `i32::MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Replicas(u32);

impl Replicas {
    pub const MAX: u32 = i32::MAX as u32;
    pub const ZERO: Self = Self(0);

    pub fn parse(value: i64) -> Result<Self, InvalidValue> {
        if value < 0 {
            return Err(InvalidValue(format!(
                "{value} is negative; a VM count is 0 or more"
            )));
        }
        if value > i64::from(Self::MAX) {
            return Err(InvalidValue(format!(
                "{value} is larger than {} (KubeVirt's replicas is an int32)",
                Self::MAX
            )));
        }
        Ok(Self(value as u32))
    }

    /// For counts that are valid by construction (small literals, sums of other counts).
    pub const fn new(value: u32) -> Self {
        Self(if value > Self::MAX { Self::MAX } else { value })
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A non-negative span of time, written as Go writes durations (`90s`, `10m`, `1h30m`, `500ms`),
/// the format the CircleCI runner agent reads for `idle_timeout` and `max_run_time`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const ZERO: Self = Self(std::time::Duration::ZERO);

    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }

    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let invalid = |why: &str| {
            InvalidValue(format!(
                "duration {value:?} is invalid: {why} (expected e.g. \"30s\", \"10m\", \"1h30m\")"
            ))
        };
        let text = value.trim();
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        if text.starts_with('-') {
            return Err(invalid("it is negative"));
        }
        if text == "0" {
            return Ok(Self::ZERO);
        }
        let mut total_nanos: u128 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if number_len == 0 {
                return Err(invalid("a unit is not preceded by a number"));
            }
            let number: f64 = rest[..number_len]
                .parse()
                .map_err(|_| invalid("a number is malformed"))?;
            rest = &rest[number_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit_nanos: f64 = match &rest[..unit_len] {
                "ns" => 1.0,
                "us" | "µs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                "d" => 86_400e9,
                "" => return Err(invalid("a number has no unit (ns, us, ms, s, m, h, d)")),
                other => return Err(invalid(&format!("unknown unit {other:?}"))),
            };
            rest = &rest[unit_len..];
            let nanos = number * unit_nanos;
            if !nanos.is_finite() || nanos > 1e20 {
                return Err(invalid("it is too large"));
            }
            total_nanos += nanos.round() as u128;
        }
        let nanos = u64::try_from(total_nanos).map_err(|_| invalid("it is too large"))?;
        Ok(Self(std::time::Duration::from_nanos(nanos)))
    }

    pub const fn as_std(self) -> std::time::Duration {
        self.0
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0.as_secs_f64()
    }

    pub fn as_millis(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<std::time::Duration> for Duration {
    fn from(value: std::time::Duration) -> Self {
        Self(value)
    }
}

impl fmt::Display for Duration {
    /// Go's compact form without zero parts: `1h30m`, `45s`, `250ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.subsec_nanos().is_multiple_of(1_000_000) {
            return write!(f, "{}ns", self.0.as_nanos());
        }
        let total_ms = self.0.as_millis();
        if total_ms == 0 {
            return f.write_str("0s");
        }
        if !total_ms.is_multiple_of(1000) {
            return if total_ms < 1000 {
                write!(f, "{total_ms}ms")
            } else {
                write!(f, "{}s", self.0.as_secs_f64())
            };
        }
        let secs = total_ms / 1000;
        let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({self})")
    }
}

impl FromStr for Duration {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A point in time, in milliseconds since the Unix epoch. The controller passes the wall clock,
/// the simulator its virtual clock; the core never reads a clock itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// Time from `earlier` to `self`, zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// A secret string (an API or runner token, a user-data script). `Debug` and `Display` never
/// show it; only `expose` does, at the one place that must send it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_url_takes_http_and_https_with_a_host_and_a_path_prefix() {
        for (text, kept) in [
            ("https://runner.circleci.com", "https://runner.circleci.com"),
            (
                " https://ci.example.com/runner/ \n",
                "https://ci.example.com/runner/",
            ),
            ("http://10.0.0.5:8080", "http://10.0.0.5:8080"),
            ("HTTPS://Runner.CircleCI.com", "HTTPS://Runner.CircleCI.com"),
            ("http://[::1]:8080/", "http://[::1]:8080/"),
        ] {
            assert_eq!(
                ApiUrl::parse(text).map(|u| u.to_string()),
                Ok(kept.to_owned())
            );
        }
        assert_eq!(ApiUrl::default().as_str(), DEFAULT_API_ADDR);
    }

    #[test]
    fn api_url_refusals_say_why_and_never_show_credentials() {
        for (text, why) in [
            ("runner.circleci.com", "no scheme"),
            ("", "no scheme"),
            ("ftp://runner.circleci.com", "http or https"),
            ("https://", "no host"),
            ("https:///path", "no host"),
            ("https://ci.example.com:http/", "port"),
            ("https://ci.exa mple.com", "white space"),
            ("https://user:hunter2@ci.example.com", "credentials"),
            ("https://ci.example.com/?x=1", "query"),
            ("https://ci.example.com/#top", "fragment"),
        ] {
            let err = ApiUrl::parse(text).expect_err(text).to_string();
            assert!(err.contains("is not an http(s) URL"), "{text}: {err}");
            assert!(err.contains(why), "{text}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn resource_class_accepts_documented_examples() {
        for ok in [
            "my-org/medium",
            "acme_corp/large-gpu",
            "dev-team/custom:arm64",
            "a/b+c",
            "x/Y",
        ] {
            let class = ResourceClass::parse(ok).expect(ok);
            assert_eq!(class.as_str(), ok);
        }
        assert_eq!(
            ResourceClass::parse("my-org/medium").map(|c| c.name().to_owned()),
            Ok("medium".to_owned())
        );
    }

    #[test]
    fn resource_class_rejects_bad_names_and_says_why() {
        for (bad, why) in [
            ("noslash", "no '/'"),
            ("/name", "namespace part is empty"),
            ("ns/", "name part is empty"),
            ("My-Org/x", "namespace may hold"),
            ("ns/a b", "name may hold"),
            ("ns/a/b", "name may hold"),
        ] {
            let err = ResourceClass::parse(bad).expect_err(bad);
            assert!(err.0.contains(why), "{bad}: {err}");
            assert!(err.0.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn durations_parse_go_style_and_print_back() {
        for (text, secs, shown) in [
            ("10m", 600, "10m"),
            ("1h30m", 5400, "1h30m"),
            ("90s", 90, "1m30s"),
            ("0s", 0, "0s"),
            ("0", 0, "0s"),
            ("2h", 7200, "2h"),
            ("1.5h", 5400, "1h30m"),
        ] {
            let d = Duration::parse(text).expect(text);
            assert_eq!(d.as_std().as_secs(), secs, "{text}");
            assert_eq!(d.to_string(), shown);
        }
        assert_eq!(
            Duration::parse("500ms").map(|d| d.to_string()),
            Ok("500ms".to_owned())
        );
    }

    #[test]
    fn durations_print_back_exactly() {
        for text in [
            "1500us", "2.0005s", "1.001s", "90.5s", "250ms", "7ns", "1h0m0.5s",
        ] {
            let d = Duration::parse(text).expect(text);
            assert_eq!(
                Duration::parse(&d.to_string()),
                Ok(d),
                "{text} shown as {d}"
            );
        }
    }

    #[test]
    fn durations_reject_bad_text() {
        for bad in ["", "-5m", "10", "m", "10x", "1e400h", "ten minutes"] {
            let err = Duration::parse(bad).expect_err(bad);
            assert!(err.0.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn replicas_reject_negative_and_huge() {
        assert!(Replicas::parse(-1).is_err());
        assert!(Replicas::parse(i64::from(i32::MAX) + 1).is_err());
        assert_eq!(Replicas::parse(7).map(Replicas::get), Ok(7));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("tok-123");
        assert!(!format!("{s:?} {s}").contains("tok-123"));
        assert_eq!(s.expose(), "tok-123");
    }
}
