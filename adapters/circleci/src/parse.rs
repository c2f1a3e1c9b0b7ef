//! Pure parsing of what the runner API sends back: counts, error bodies, `Retry-After` and
//! rate-limit headers, plus the API address. No I/O, so every odd input can be tested directly.

use std::time::Duration;

use provisioner_core::{ApiUrl, InvalidValue, Secret};
use reqwest::Url;

use crate::error::CircleCiError;
use crate::options::Endpoint;

/// Above this a count is a bug somewhere, not demand to buy a million VMs for.
pub const MAX_COUNT: u32 = 1_000_000;

/// Longest server text kept in an error message.
const MAX_MESSAGE_CHARS: usize = 200;

/// The count in a 200 body, e.g. `{"unclaimed_task_count": 42}`. Refuses anything that is not
/// a whole number from 0 to [`MAX_COUNT`]: scaling on a wrong number costs money or jobs.
pub fn parse_count(body: &[u8], endpoint: Endpoint) -> Result<u32, InvalidValue> {
    let field = endpoint.field();
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        if looks_like_html(body) {
            InvalidValue("the body is HTML, not JSON".to_owned())
        } else if body.iter().all(u8::is_ascii_whitespace) {
            InvalidValue("the body is empty".to_owned())
        } else {
            InvalidValue(format!("the body is not JSON ({e})"))
        }
    })?;
    let serde_json::Value::Object(object) = value else {
        return Err(InvalidValue(format!(
            "the body is not a JSON object with {field:?}"
        )));
    };
    let Some(count) = object.get(field) else {
        return Err(InvalidValue(format!("the body has no {field:?} field")));
    };
    let serde_json::Value::Number(number) = count else {
        return Err(InvalidValue(format!(
            "{field:?} is not a number but {}",
            json_type(count)
        )));
    };
    let whole = if let Some(n) = number.as_u64() {
        n
    } else if number.as_i64().is_some() {
        return Err(InvalidValue(format!("{field:?} is negative ({number})")));
    } else {
        let float = number.as_f64().unwrap_or(f64::NAN);
        if float < 0.0 {
            return Err(InvalidValue(format!("{field:?} is negative ({number})")));
        }
        if float.fract() != 0.0 || !float.is_finite() {
            return Err(InvalidValue(format!(
                "{field:?} is not a whole number ({number})"
            )));
        }
        if float > f64::from(MAX_COUNT) {
            u64::MAX
        } else {
            float as u64
        }
    };
    match u32::try_from(whole) {
        Ok(n) if n <= MAX_COUNT => Ok(n),
        _ => Err(InvalidValue(format!(
            "{field:?} is {number}, more than {MAX_COUNT}; refusing to scale on it"
        ))),
    }
}

fn json_type(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn looks_like_html(body: &[u8]) -> bool {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let head = &body[start..body.len().min(start + 64)];
    head.first() == Some(&b'<')
}

/// What an error response says, for the error message: CircleCI's `{"message": ...}`, or a
/// short note on what else came back. Scrubbed of the token and of control characters.
pub fn error_message(body: &[u8], token: &Secret) -> Option<String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    if let Ok(serde_json::Value::Object(object)) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(serde_json::Value::String(message)) = object.get("message")
    {
        return Some(clean(message, token));
    }
    if looks_like_html(body) {
        return Some(
            "the body is HTML, not CircleCI's JSON (a proxy or the wrong address?)".to_owned(),
        );
    }
    let text = String::from_utf8_lossy(body);
    Some(format!("unexpected body {:?}", clean(&text, token)))
}

/// Server or transport text made safe for an error message: no token, no control characters,
/// bounded length.
pub(crate) fn clean(text: &str, token: &Secret) -> String {
    let secret = token.expose().trim();
    let scrubbed = if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, "<redacted>")
    };
    let mut out: String = scrubbed
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if scrubbed.chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out.trim().to_owned()
}

/// `Retry-After`: delay seconds, or an HTTP date (RFC 9110 IMF-fixdate, which RFC 2822 parses).
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Some(delay) = parse_seconds(value) {
        return Some(delay);
    }
    static PARSER: jiff::fmt::rfc2822::DateTimeParser = jiff::fmt::rfc2822::DateTimeParser::new();
    let at = PARSER.parse_timestamp(value).ok()?;
    Some(until(at.as_millisecond(), now))
}

fn parse_seconds(value: &str) -> Option<Duration> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let secs: f64 = value.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e15)))
}

fn until(at_millis: i64, now: jiff::Timestamp) -> Duration {
    Duration::from_millis(
        u64::try_from(at_millis.saturating_sub(now.as_millisecond())).unwrap_or(0),
    )
}

/// A reset value: delta seconds, or (above a billion, as some gateways send) a Unix time.
fn parse_reset(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let delay = parse_seconds(value.trim())?;
    if delay.as_secs() >= 1_000_000_000 {
        Some(until(
            i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
            now,
        ))
    } else {
        Some(delay)
    }
}

/// The rate-limit windows CircleCI may report, with the window length used when an exhausted
/// window gives no reset time.
const WINDOWS: [(&str, &str, Duration); 6] = [
    (
        "ratelimit-remaining",
        "ratelimit-reset",
        Duration::from_secs(1),
    ),
    (
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        Duration::from_secs(1),
    ),
    (
        "x-ratelimit-remaining-second",
        "x-ratelimit-reset-second",
        Duration::from_secs(1),
    ),
    (
        "x-ratelimit-remaining-minute",
        "x-ratelimit-reset-minute",
        Duration::from_secs(60),
    ),
    (
        "x-ratelimit-remaining-hour",
        "x-ratelimit-reset-hour",
        Duration::from_secs(3600),
    ),
    (
        "x-ratelimit-remaining-day",
        "x-ratelimit-reset-day",
        Duration::from_secs(86_400),
    ),
];

/// How long to stop calling because a `RateLimit-*` / `X-RateLimit-*` window is used up
/// (remaining 0): the longest reset among exhausted windows. `None` while quota remains.
pub fn rate_limit_pause<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    now: jiff::Timestamp,
) -> Option<Duration> {
    WINDOWS
        .iter()
        .filter(|(remaining, _, _)| {
            header(remaining)
                .and_then(|v| v.trim().parse::<f64>().ok())
                .is_some_and(|v| v <= 0.0)
        })
        .map(|(_, reset, window)| {
            header(reset)
                .and_then(|v| parse_reset(v, now))
                .unwrap_or(*window)
        })
        .max()
}

/// The request rate CircleCI advertises for the token: the strictest of the
/// `X-RateLimit-Limit-{Second,Minute,Hour,Day}` windows, per second. `None` when absent.
pub fn advertised_rate<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<f64> {
    [
        ("x-ratelimit-limit-second", 1.0),
        ("x-ratelimit-limit-minute", 60.0),
        ("x-ratelimit-limit-hour", 3600.0),
        ("x-ratelimit-limit-day", 86_400.0),
    ]
    .iter()
    .filter_map(|(name, window)| {
        let limit: f64 = header(name)?.trim().parse().ok()?;
        (limit.is_finite() && limit >= 0.0).then_some(limit / window)
    })
    .min_by(f64::total_cmp)
}

/// The API address as a base URL ending in `/`, so endpoint paths append to any path prefix.
/// `ApiUrl` validates it; `Url` may still refuse a host it cannot encode.
pub(crate) fn base_url(addr: &str) -> Result<Url, CircleCiError> {
    let checked = ApiUrl::parse(addr).map_err(|e| CircleCiError::InvalidApiAddr {
        addr: e.addr,
        reason: e.reason.to_owned(),
    })?;
    let mut url = Url::parse(checked.as_str()).map_err(|e| CircleCiError::InvalidApiAddr {
        addr: ApiUrl::redact(checked.as_str()),
        reason: e.to_string(),
    })?;
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_700_000_000).expect("a valid timestamp")
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(
            parse_retry_after("120", now()),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(" 7 ", now()),
            Some(Duration::from_secs(7))
        );
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:14:20 GMT", now()),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-5", now()), None);
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("", now()), None);
    }

    #[test]
    fn rate_limit_pause_waits_for_the_longest_exhausted_window() {
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        };
        assert_eq!(
            rate_limit_pause(
                headers(&[("ratelimit-remaining", "3"), ("ratelimit-reset", "9")]),
                now()
            ),
            None
        );
        assert_eq!(
            rate_limit_pause(
                headers(&[("ratelimit-remaining", "0"), ("ratelimit-reset", "9")]),
                now()
            ),
            Some(Duration::from_secs(9))
        );
        assert_eq!(
            rate_limit_pause(
                headers(&[
                    ("x-ratelimit-remaining-second", "0"),
                    ("x-ratelimit-remaining-minute", "0"),
                    ("x-ratelimit-reset-minute", "42"),
                ]),
                now()
            ),
            Some(Duration::from_secs(42))
        );
        assert_eq!(
            rate_limit_pause(headers(&[("x-ratelimit-remaining-minute", "0")]), now()),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            rate_limit_pause(
                headers(&[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1700000030")
                ]),
                now()
            ),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn advertised_rate_is_the_strictest_window() {
        let pairs = [
            ("x-ratelimit-limit-second", "50"),
            ("x-ratelimit-limit-minute", "600"),
            ("x-ratelimit-limit-hour", "bad"),
        ];
        let header = |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        assert_eq!(advertised_rate(header), Some(10.0));
        assert_eq!(advertised_rate(|_| None), None);
    }

    #[test]
    fn base_url_accepts_prefixes_and_trailing_slashes() {
        for (addr, want) in [
            (
                "https://runner.circleci.com",
                "https://runner.circleci.com/",
            ),
            (
                "https://runner.circleci.com/",
                "https://runner.circleci.com/",
            ),
            (
                "https://ci.example.com/runner",
                "https://ci.example.com/runner/",
            ),
            (
                " https://ci.example.com/runner/ ",
                "https://ci.example.com/runner/",
            ),
            ("http://10.0.0.5:8080", "http://10.0.0.5:8080/"),
        ] {
            assert_eq!(
                base_url(addr).map(|u| u.to_string()),
                Ok(want.to_owned()),
                "{addr}"
            );
        }
        let joined = base_url("https://ci.example.com/runner").and_then(|u| {
            u.join(Endpoint::Running.path())
                .map_err(|e| CircleCiError::HttpClient(e.to_string()))
        });
        assert_eq!(
            joined.map(|u| u.to_string()),
            Ok("https://ci.example.com/runner/api/v3/runner/tasks/running".to_owned())
        );
    }

    #[test]
    fn base_url_rejects_bad_addresses_without_showing_credentials() {
        for (addr, why) in [
            ("runner.circleci.com", "scheme"),
            ("ftp://runner.circleci.com", "http or https"),
            ("https://user:hunter2@ci.example.com", "credentials"),
            ("https://ci.example.com/?x=1", "query"),
            ("", "no scheme"),
        ] {
            let err = base_url(addr).expect_err(addr).to_string();
            assert!(err.contains(why), "{addr}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn clean_scrubs_the_token_and_bounds_length() {
        let token = Secret::new("tok-s3cret");
        assert_eq!(
            clean("bad token tok-s3cret\n", &token),
            "bad token <redacted>"
        );
        assert!(clean(&"x".repeat(1000), &token).chars().count() <= MAX_MESSAGE_CHARS + 1);
    }
}
