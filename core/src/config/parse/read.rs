//! Typed readers: located values (`Field`, `MapRef`) and the readers that turn one into a domain
//! value or report, at its place, why not. Wrong-typed secrets are described by type only.

use super::super::RunnerBundle;
use super::errors::Errors;
use super::shapes::Kind;
use super::suggest::did_you_mean;
use super::yaml::{Key, Node, Value};
use crate::domain::{ApiUrl, Duration, InvalidValue, Replicas, Secret};
use crate::forecast::{Percent, ServiceLevel};

pub(super) const LOG_LEVELS: &[&str] =
    &["trace", "debug", "info", "warn", "warning", "error", "off"];
/// Polling slower than this would leave jobs queued for minutes.
pub(super) const MAX_POLL_INTERVAL: Duration = Duration::from_secs(600);

/// A set value (not null, not `""`), with where it is.
#[derive(Clone)]
pub(super) struct Field<'a> {
    pub(super) node: &'a Node,
    pub(super) file: &'a str,
    pub(super) path: String,
}

/// A mapping, with where it is.
#[derive(Clone)]
pub(super) struct MapRef<'a> {
    pub(super) entries: &'a [(Key, Node)],
    pub(super) file: &'a str,
    pub(super) path: String,
    pub(super) line: u64,
    pub(super) column: u64,
}

impl<'a> MapRef<'a> {
    /// The value of `key` when it is set: null and `""` count as unset.
    pub(super) fn get(&self, key: &str) -> Option<Field<'a>> {
        self.entries
            .iter()
            .find(|(k, _)| k.text == key)
            .filter(|(_, v)| {
                !matches!(&v.value, Value::Null)
                    && !matches!(&v.value, Value::Str(s) if s.is_empty())
            })
            .map(|(k, v)| Field {
                node: v,
                file: self.file,
                path: join(&self.path, &k.text),
            })
    }

    /// Reports every key not in `allowed`; `special` may explain a known mistake better than the
    /// generic hint does.
    pub(super) fn check_keys(
        &self,
        allowed: &[&str],
        errs: &mut Errors,
        special: impl Fn(&str) -> Option<String>,
    ) {
        for (key, _) in self.entries {
            if allowed.contains(&key.text.as_str()) {
                continue;
            }
            let message =
                special(&key.text).unwrap_or_else(|| match did_you_mean(&key.text, allowed) {
                    Some(hint) => format!("unknown key {:?}; did you mean {hint:?}?", key.text),
                    None => format!(
                        "unknown key {:?} (expected one of: {})",
                        key.text,
                        allowed.join(", ")
                    ),
                });
            errs.key(self.file, &join(&self.path, &key.text), Some(key), message);
        }
    }
}

/// The first set value of `key` across layers, highest priority first.
pub(super) fn first<'a>(layers: &[&MapRef<'a>], key: &str) -> Option<Field<'a>> {
    layers.iter().find_map(|m| m.get(key))
}

pub(super) fn as_map<'a>(
    field: &Field<'a>,
    expected: &str,
    errs: &mut Errors,
) -> Option<MapRef<'a>> {
    as_map_in(Kind::Config, field, expected, errs)
}

/// `as_map` for a value of a file of `kind`: in the secrets file any string may be a token, so a
/// wrong-typed value is described by its type only.
pub(super) fn as_map_in<'a>(
    kind: Kind,
    field: &Field<'a>,
    expected: &str,
    errs: &mut Errors,
) -> Option<MapRef<'a>> {
    match &field.node.value {
        Value::Map(entries) => Some(MapRef {
            entries,
            file: field.file,
            path: field.path.clone(),
            line: field.node.line,
            column: field.node.column,
        }),
        other => {
            let found = match kind {
                Kind::Config => describe(other),
                Kind::Secrets => describe_kind(other),
            };
            errs.field(field, format!("expected {expected}, got {found}"));
            None
        }
    }
}

pub(super) fn as_list<'a>(
    field: &Field<'a>,
    expected: &str,
    errs: &mut Errors,
) -> Option<Vec<Field<'a>>> {
    match &field.node.value {
        Value::Seq(items) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, node)| Field {
                    node,
                    file: field.file,
                    path: format!("{}[{i}]", field.path),
                })
                .collect(),
        ),
        other => {
            errs.field(
                field,
                format!("expected {expected}, got {}", describe(other)),
            );
            None
        }
    }
}

pub(super) fn required<'a>(
    map: &MapRef<'a>,
    key: &str,
    what: &str,
    errs: &mut Errors,
) -> Option<Field<'a>> {
    let field = map.get(key);
    if field.is_none() {
        errs.at(
            map.file,
            &join(&map.path, key),
            Some((map.line, map.column)),
            format!("{key} is required ({what})"),
        );
    }
    field
}

pub(super) fn string(field: &Field<'_>, errs: &mut Errors) -> Option<String> {
    match &field.node.value {
        Value::Str(s) => Some(s.clone()),
        other => {
            errs.field(field, format!("expected a string, got {}", describe(other)));
            None
        }
    }
}

pub(super) fn string_list(field: &Field<'_>, errs: &mut Errors) -> Option<Vec<String>> {
    let items = as_list(field, "a list of strings", errs)?;
    let strings: Vec<Option<String>> = items.iter().map(|f| string(f, errs)).collect();
    strings.into_iter().collect()
}

/// A secret string; a wrong-typed value is described by its type only, never echoed.
pub(super) fn secret(field: &Field<'_>, errs: &mut Errors) -> Option<Secret> {
    match &field.node.value {
        Value::Str(s) => {
            errs.secrets.push(s.clone());
            if s.trim() != s && !s.trim().is_empty() {
                errs.secrets.push(s.trim().to_owned());
            }
            Some(Secret::new(s.clone()))
        }
        other => {
            errs.field(
                field,
                format!("expected a string, got {}", describe_kind(other)),
            );
            None
        }
    }
}

/// A token: the first place that sets it, without the surrounding white space a YAML block
/// scalar or a pasted value brings (`token: |` keeps a newline, which would end up in an HTTP
/// header or the runner's config); and whether it is missing outright. A value of the wrong type
/// was already reported by `secret`, so it does not count as missing too.
pub(super) fn pick_token(
    fields: &[Option<Field<'_>>],
    name: &str,
    errs: &mut Errors,
) -> (Option<Secret>, bool) {
    let token = pick_secret(fields, name, errs).map(|t| Secret::new(t.expose().trim()));
    let wrong_type = fields
        .iter()
        .flatten()
        .any(|f| !matches!(f.node.value, Value::Str(_)));
    let missing = token.is_none() && !wrong_type;
    (token, missing)
}

/// The first of the given places that sets the secret; two places setting different values is
/// an error (which one is meant cannot be guessed), the same value twice is fine.
pub(super) fn pick_secret(
    fields: &[Option<Field<'_>>],
    name: &str,
    errs: &mut Errors,
) -> Option<Secret> {
    let mut chosen: Option<(Secret, &Field<'_>)> = None;
    for field in fields.iter().flatten() {
        let Some(value) = secret(field, errs).filter(|s| !s.is_empty()) else {
            continue;
        };
        match &chosen {
            None => chosen = Some((value, field)),
            Some((first, at)) if *first != value => errs.field(
                field,
                format!(
                    "{name} is also set at {}: {} with a different value; set it in one place",
                    at.file, at.path
                ),
            ),
            Some(_) => {}
        }
    }
    chosen.map(|(s, _)| s)
}

/// `true`/`false`, and the YAML 1.1 spellings (`yes`, `off`, ...) that Go's YAML reads into a
/// bool field: documents are read with YAML 1.2 booleans so that `n` or `no` elsewhere stay
/// strings.
pub(super) fn boolean(field: &Field<'_>, errs: &mut Errors) -> Option<bool> {
    match &field.node.value {
        Value::Bool(b) => Some(*b),
        Value::Str(s) if ["y", "yes", "on"].contains(&s.to_ascii_lowercase().as_str()) => {
            Some(true)
        }
        Value::Str(s) if ["n", "no", "off"].contains(&s.to_ascii_lowercase().as_str()) => {
            Some(false)
        }
        other => {
            errs.field(
                field,
                format!("expected true or false, got {}", describe(other)),
            );
            None
        }
    }
}

pub(super) fn replicas(field: &Field<'_>, errs: &mut Errors) -> Option<Replicas> {
    let result = match &field.node.value {
        Value::Int(n) => i64::try_from(*n)
            .map_err(|_| format!("{n} is larger than {}", Replicas::MAX))
            .and_then(|v| Replicas::parse(v).map_err(|e| e.0)),
        Value::Float(x) if x.fract() != 0.0 => Err(format!(
            "{x} is not a whole number; a VM count is 0, 1, 2, ..."
        )),
        Value::Float(x) if *x < 0.0 => Err(format!("{x} is negative; a VM count is 0 or more")),
        Value::Float(x) if *x > f64::from(Replicas::MAX) => {
            Err(format!("{x} is larger than {}", Replicas::MAX))
        }
        Value::Float(x) => Err(format!(
            "{x} is written as a decimal; write a whole number without a decimal point"
        )),
        other => Err(format!(
            "expected a whole number (a count of VMs), got {}",
            describe(other)
        )),
    };
    result.map_err(|message| errs.field(field, message)).ok()
}

/// A share of cases: `"95%"`, `"99.5%"` or `0.95`.
pub(super) fn service_level(field: &Field<'_>, errs: &mut Errors) -> Option<ServiceLevel> {
    parsed_scalar(
        field,
        errs,
        "a service level such as \"95%\"",
        ServiceLevel::parse,
    )
}

/// A whole percentage: `50` or `"50%"`.
pub(super) fn percent(field: &Field<'_>, errs: &mut Errors) -> Option<Percent> {
    parsed_scalar(
        field,
        errs,
        "a whole percentage such as 50 or \"50%\"",
        Percent::parse,
    )
}

/// A value written as a string or a number, read by the domain type's own parser.
fn parsed_scalar<T>(
    field: &Field<'_>,
    errs: &mut Errors,
    expected: &str,
    parse: fn(&str) -> Result<T, InvalidValue>,
) -> Option<T> {
    let text = match &field.node.value {
        Value::Str(s) => s.clone(),
        Value::Float(x) => x.to_string(),
        Value::Int(n) => n.to_string(),
        other => {
            errs.field(
                field,
                format!("expected {expected}, got {}", describe(other)),
            );
            return None;
        }
    };
    parse(&text).map_err(|e| errs.field(field, e.0)).ok()
}

/// A Go-style duration (`"10m"`); a bare `0` is accepted as Go accepts it.
pub(super) fn duration(field: &Field<'_>, errs: &mut Errors) -> Option<Duration> {
    let text = match &field.node.value {
        Value::Str(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Float(x) => x.to_string(),
        other => {
            errs.field(
                field,
                format!(
                    "expected a duration such as \"30s\" or \"10m\", got {}",
                    describe(other)
                ),
            );
            return None;
        }
    };
    Duration::parse(&text)
        .map_err(|e| errs.field(field, e.0))
        .ok()
}

pub(super) fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(n) => i64::try_from(*n)
            .map(J::from)
            .or_else(|_| u64::try_from(*n).map(J::from))
            .unwrap_or_else(|_| serde_json::Number::from_f64(*n as f64).map_or(J::Null, J::Number)),
        Value::Float(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
        Value::Str(s) => J::String(s.clone()),
        Value::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (k.text.clone(), to_json(v)))
                .collect(),
        ),
    }
}

/// A value for an error message: scalars are shown (shortened), collections by kind.
pub(super) fn describe(value: &Value) -> String {
    const MAX_SHOWN: usize = 60;
    match value {
        Value::Str(s) if s.chars().count() > MAX_SHOWN => {
            let shown: String = s.chars().take(MAX_SHOWN).collect();
            format!("the string {shown:?}...")
        }
        Value::Str(s) => format!("the string {s:?}"),
        Value::Int(n) => format!("the number {n}"),
        Value::Float(x) => format!("the number {x}"),
        Value::Bool(b) => format!("{b}"),
        other => describe_kind(other),
    }
}

/// A value's type only, for values that may be secret.
pub(super) fn describe_kind(value: &Value) -> String {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Int(_) | Value::Float(_) => "a number",
        Value::Str(_) => "a string",
        Value::Seq(_) => "a list",
        Value::Map(_) => "a mapping",
    }
    .to_owned()
}

/// `path.key`, quoting keys that are not plain words (`resourceClasses."my-org/runner"`).
pub(super) fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if plain {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// The API address, validated by `ApiUrl` (the command line and the CircleCI adapter use it too).
pub(super) fn api_addr(field: &Field<'_>, errs: &mut Errors) -> Option<String> {
    let text = string(field, errs)?;
    match ApiUrl::parse(&text) {
        Ok(url) => Some(url.as_str().to_owned()),
        Err(e) => {
            errs.field(field, e.to_string());
            None
        }
    }
}

pub(super) fn poll_interval(field: &Field<'_>, errs: &mut Errors) -> Option<Duration> {
    let d = duration(field, errs)?;
    if d.is_zero() {
        errs.field(field, "pollInterval must be longer than 0s");
        return None;
    }
    if d > MAX_POLL_INTERVAL {
        errs.field(field, format!("pollInterval {d} is longer than {MAX_POLL_INTERVAL}: jobs would wait that long for a VM"));
        return None;
    }
    Some(d)
}

/// `sidecar: {enabled}`; `None` after an error.
pub(super) fn sidecar(field: &Field<'_>, errs: &mut Errors) -> Option<bool> {
    let map = as_map(field, "a mapping ({enabled})", errs)?;
    map.check_keys(&["enabled"], errs, |_| None);
    match map.get("enabled") {
        Some(f) => boolean(&f, errs),
        None => Some(true),
    }
}

const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];

/// `runnerBundle: {enabled, image, pullPolicy, imagePullSecret}`: `Ok(None)` when disabled,
/// `Err(())` after an error (reported).
pub(super) fn runner_bundle(
    field: &Field<'_>,
    errs: &mut Errors,
) -> Result<Option<RunnerBundle>, ()> {
    let map = as_map(
        field,
        "a mapping ({image, pullPolicy, imagePullSecret})",
        errs,
    )
    .ok_or(())?;
    map.check_keys(
        &["enabled", "image", "pullPolicy", "imagePullSecret"],
        errs,
        |_| None,
    );
    if let Some(f) = map.get("enabled")
        && !boolean(&f, errs).ok_or(())?
    {
        return Ok(None);
    }
    let before = errs.list.len();
    let image = required(
        &map,
        "image",
        "the bundle image (repository:tag or repository@sha256:...)",
        errs,
    )
    .and_then(|f| {
        let text = string(&f, errs)?;
        if text.chars().any(char::is_whitespace) {
            errs.field(&f, format!("image {text:?} contains whitespace"));
            return None;
        }
        Some(text)
    });
    let pull_policy = map.get("pullPolicy").and_then(|f| {
        let text = string(&f, errs)?;
        if PULL_POLICIES.contains(&text.as_str()) {
            Some(text)
        } else {
            errs.field(
                &f,
                format!(
                    "pullPolicy {text:?} is not one of {}",
                    PULL_POLICIES.join(", ")
                ),
            );
            None
        }
    });
    let pull_secret = map.get("imagePullSecret").and_then(|f| {
        let text = string(&f, errs)?;
        let valid = text.len() <= 253
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            errs.field(
                &f,
                format!("imagePullSecret {text:?} is not a Secret name (lowercase letters, digits, '-' and '.')"),
            );
            return None;
        }
        Some(text)
    });
    match image {
        Some(image) if errs.list.len() == before => Ok(Some(RunnerBundle {
            image,
            pull_policy,
            pull_secret,
        })),
        _ => Err(()),
    }
}

/// A level (`info`) or comma-separated `target=level` directives (`info,kube=warn`).
pub(super) fn log_level(field: &Field<'_>, errs: &mut Errors) -> Option<String> {
    let text = string(field, errs)?;
    if text.split(',').all(|part| part.trim().is_empty()) {
        errs.field(
            field,
            format!(
                "log level {text:?} names no level (expected e.g. \"info\" or \"info,kube=warn\")"
            ),
        );
        return None;
    }
    let bad = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .find(|part| {
            let level = part
                .rsplit_once('=')
                .map_or(*part, |(_, l)| l)
                .to_ascii_lowercase();
            !LOG_LEVELS.contains(&level.as_str())
        });
    if let Some(part) = bad {
        errs.field(
            field,
            format!("log level {part:?} is not one of trace, debug, info, warn, error, off"),
        );
        return None;
    }
    Some(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::super::yaml;
    use super::*;

    fn doc(text: &str) -> Node {
        yaml::parse(text).expect("valid YAML").expect("a document")
    }

    fn entries(root: &Node) -> &[(Key, Node)] {
        match &root.value {
            Value::Map(entries) => entries,
            _ => panic!("a mapping"),
        }
    }

    /// Reads the value of `value: <text>` with `read`: what it read, and the messages reported.
    fn read<T>(
        text: &str,
        read: impl for<'a> FnOnce(&Field<'a>, &mut Errors) -> Option<T>,
    ) -> (Option<T>, Vec<String>) {
        let root = doc(&format!("value: {text}\n"));
        let field = Field {
            node: &entries(&root)[0].1,
            file: "t.yaml",
            path: "value".to_owned(),
        };
        let mut errs = Errors::new(Vec::new(), vec!["t.yaml".to_owned()]);
        let got = read(&field, &mut errs);
        let messages = errs
            .finish()
            .errors
            .into_iter()
            .map(|e| e.message)
            .collect();
        (got, messages)
    }

    fn ok<T: fmt::Debug>(got: (Option<T>, Vec<String>)) -> T {
        assert!(got.1.is_empty(), "{:?}", got.1);
        got.0.expect("a value")
    }

    fn refused<T: fmt::Debug>(got: (Option<T>, Vec<String>)) -> String {
        assert!(got.0.is_none(), "{:?}", got.0);
        assert_eq!(got.1.len(), 1, "{:?}", got.1);
        got.1[0].clone()
    }

    #[test]
    fn string_refuses_other_types_and_shows_them() {
        assert_eq!(ok(read("abc", string)), "abc");
        assert_eq!(
            refused(read("12", string)),
            "expected a string, got the number 12"
        );
        assert_eq!(ok(read("[a, b]", string_list)), ["a", "b"]);
        assert_eq!(
            refused(read("[a, 3]", string_list)),
            "expected a string, got the number 3"
        );
    }

    #[test]
    fn boolean_takes_go_yaml_spellings() {
        for (text, want) in [("true", true), ("yes", true), ("On", true), ("n", false)] {
            assert_eq!(ok(read(text, boolean)), want, "{text}");
        }
        assert_eq!(
            refused(read("maybe", boolean)),
            "expected true or false, got the string \"maybe\""
        );
    }

    #[test]
    fn replicas_are_whole_non_negative_counts() {
        assert_eq!(ok(read("3", replicas)).get(), 3);
        for (text, needle) in [
            ("1.5", "not a whole number"),
            ("-2.0", "negative"),
            ("2.0", "written as a decimal"),
            ("1e12", "larger than"),
            ("many", "expected a whole number"),
        ] {
            let message = refused(read(text, replicas));
            assert!(message.contains(needle), "{text}: {message}");
        }
    }

    #[test]
    fn durations_are_go_style_and_a_bare_zero_is_zero() {
        assert_eq!(ok(read("10m", duration)), Duration::from_secs(600));
        assert!(ok(read("0", duration)).is_zero());
        assert!(refused(read("true", duration)).starts_with("expected a duration"));
    }

    #[test]
    fn secrets_are_remembered_and_never_echoed() {
        let root = doc("a: tok-123456\nb: 987654321\n");
        let entries = entries(&root);
        let field = |i: usize| Field {
            node: &entries[i].1,
            file: "s.yaml",
            path: entries[i].0.text.clone(),
        };
        let mut errs = Errors::new(Vec::new(), vec!["s.yaml".to_owned()]);
        assert_eq!(
            secret(&field(0), &mut errs).map(|s| s.expose().to_owned()),
            Some("tok-123456".to_owned())
        );
        assert!(secret(&field(1), &mut errs).is_none());
        assert!(errs.secrets.contains(&"tok-123456".to_owned()));
        let messages: Vec<String> = errs
            .finish()
            .errors
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(messages, ["expected a string, got a number"]);
    }

    #[test]
    fn pick_token_trims_and_tells_missing_from_wrong_type() {
        let (token, missing) = ok(read("\"  tok-1\\n\"", |f, errs| {
            Some(pick_token(&[None, Some(f.clone())], "token", errs))
        }));
        assert_eq!(
            token.map(|t| t.expose().to_owned()),
            Some("tok-1".to_owned())
        );
        assert!(!missing);
        let (token, missing) = ok(read("x", |_, errs| {
            Some(pick_token(&[None], "token", errs))
        }));
        assert!(token.is_none() && missing);
        let ((token, missing), messages) = {
            let got = read("[1]", |f, errs| {
                Some(pick_token(&[Some(f.clone())], "token", errs))
            });
            (got.0.expect("a pick"), got.1)
        };
        assert!(
            token.is_none() && !missing,
            "a wrong type is not also missing"
        );
        assert_eq!(messages, ["expected a string, got a list"]);
    }

    #[test]
    fn pick_secret_refuses_two_different_values() {
        let root = doc("a: same-1\nb: same-1\nc: other-2\n");
        let entries = entries(&root);
        let fields: Vec<Option<Field<'_>>> = entries
            .iter()
            .map(|(k, v)| {
                Some(Field {
                    node: v,
                    file: "s.yaml",
                    path: k.text.clone(),
                })
            })
            .collect();
        let mut errs = Errors::new(Vec::new(), vec!["s.yaml".to_owned()]);
        let picked = pick_secret(&fields[..2], "userData", &mut errs);
        assert_eq!(
            picked.map(|s| s.expose().to_owned()),
            Some("same-1".to_owned())
        );
        assert!(errs.list.is_empty(), "the same value twice is fine");
        pick_secret(&fields, "userData", &mut errs);
        let err = errs.finish();
        assert_eq!(err.errors.len(), 1);
        assert_eq!(err.errors[0].path, "c");
        assert_eq!(
            err.errors[0].message,
            "userData is also set at s.yaml: a with a different value; set it in one place"
        );
    }

    #[test]
    fn top_level_settings_are_bounded() {
        assert_eq!(ok(read("5s", poll_interval)), Duration::from_secs(5));
        assert_eq!(
            refused(read("0s", poll_interval)),
            "pollInterval must be longer than 0s"
        );
        assert!(
            refused(read("11m", poll_interval)).starts_with("pollInterval 11m is longer than 10m")
        );
        assert_eq!(
            ok(read("\" info,kube=WARN \"", log_level)),
            "info,kube=WARN"
        );
        assert!(refused(read("loud", log_level)).contains("\"loud\" is not one of"));
        assert!(refused(read("\" , \"", log_level)).contains("names no level"));
        assert_eq!(
            ok(read("https://ci.example.com/", api_addr)),
            "https://ci.example.com/"
        );
        assert!(refused(read("ci.example.com", api_addr)).contains("is not an http(s) URL"));
    }

    #[test]
    fn unknown_keys_get_a_hint_or_the_list() {
        let root = doc("minReplica: 1\nimage: x\nok: 2\n");
        let entries = entries(&root);
        let map = MapRef {
            entries,
            file: "c.yaml",
            path: "scaling".to_owned(),
            line: 1,
            column: 1,
        };
        let mut errs = Errors::new(Vec::new(), vec!["c.yaml".to_owned()]);
        map.check_keys(&["minReplicas", "ok"], &mut errs, |k| {
            (k == "image").then(|| "images live in spec".to_owned())
        });
        let messages: Vec<String> = errs
            .finish()
            .errors
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(
            messages,
            [
                "unknown key \"minReplica\"; did you mean \"minReplicas\"?",
                "images live in spec"
            ]
        );
        let mut errs = Errors::new(Vec::new(), vec!["c.yaml".to_owned()]);
        map.check_keys(&["ok"], &mut errs, |_| None);
        assert_eq!(
            errs.finish().errors[0].message,
            "unknown key \"minReplica\" (expected one of: ok)"
        );
    }

    #[test]
    fn values_are_described_without_flooding_messages() {
        assert_eq!(join("", "a"), "a");
        assert_eq!(
            join("resourceClasses", "my-org/r"),
            "resourceClasses.\"my-org/r\""
        );
        let long = "x".repeat(100);
        let shown = describe(&Value::Str(long));
        assert!(shown.ends_with("...") && shown.len() < 80, "{shown}");
        assert_eq!(describe_kind(&Value::Str("tok".into())), "a string");
    }
}
