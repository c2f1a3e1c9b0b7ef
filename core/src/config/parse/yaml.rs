//! YAML text to a located tree. Values keep their line and column so validation errors can
//! point at them; keys are kept as the text the user wrote (`y` stays `"y"`, not `true`).

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A YAML value. Null stands for "unset" everywhere in the configuration.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Node {
    pub value: Value,
    pub line: u64,
    pub column: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Key {
    pub text: String,
    pub line: u64,
    pub column: u64,
}

/// A YAML error: a message (never the document's text) and where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SyntaxError {
    pub message: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
}

/// Limits far above any real configuration, far below what could exhaust memory or stack:
/// a config is a few hundred nodes; alias bombs and deep nesting stop here. Booleans are
/// YAML 1.2's (`true`/`false`), so a schedule named `n` or an image tag `no` stays a string.
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(16 * 1024 * 1024),
            max_events: 200_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_depth: 48,
            max_documents: 1,
            max_nodes: 100_000,
            max_total_scalar_bytes: 16 * 1024 * 1024,
            max_merge_keys: 1_000,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 100_000,
            max_replay_stack_depth: 16,
        },
        with_snippet: false,
        strict_booleans: true,
    }
}

/// Parses one document; `None` for an empty one (only comments or whitespace).
pub(super) fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    serde_saphyr::from_str_with_options::<Option<Node>>(text, options()).map_err(|e| {
        let location = e.location().filter(|l| l.line() > 0);
        SyntaxError {
            message: describe_error(&e.to_string()),
            line: location.map(|l| l.line()),
            column: location.map(|l| l.column()),
        }
    })
}

/// saphyr's message without its location suffix (reported separately) and without hints meant
/// for the programmer calling it rather than for the user writing the file.
fn describe_error(raw: &str) -> String {
    let message = raw.split(" at line ").next().unwrap_or(raw).trim();
    if message.starts_with("multiple YAML documents")
        || message.starts_with("budget breached: Documents")
    {
        return "the file holds more than one YAML document ('---'); put everything in one"
            .to_owned();
    }
    if message.contains("recursion limit") {
        return "the document is too deeply nested for a configuration file".to_owned();
    }
    if let Some(rest) = message.strip_prefix("budget breached: ") {
        return format!(
            "the document is too large, too deeply nested or uses too many aliases for a configuration file ({rest})"
        );
    }
    let message = message
        .split(", set DuplicateKeyPolicy")
        .next()
        .unwrap_or(message);
    format!("invalid YAML: {message}")
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<Value>::deserialize(d)?;
        Ok(Self {
            value: spanned.value,
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
        })
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<String>::deserialize(d)?;
        Ok(Self {
            text: spanned.value,
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
        Ok(i128::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Value, E> {
        String::from_utf8(v.to_vec())
            .map(Value::Str)
            .map_err(|_| E::custom("binary data that is not UTF-8 text"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Key, Node>()? {
            entries.push(entry);
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_keys(node: &Node) -> Vec<&str> {
        match &node.value {
            Value::Map(entries) => entries.iter().map(|(k, _)| k.text.as_str()).collect(),
            other => panic!("expected a map, got {other:?}"),
        }
    }

    #[test]
    fn keys_keep_their_text_and_values_their_place() {
        let node = parse("y: 1\nn: [2, x]\n")
            .expect("valid")
            .expect("not empty");
        assert_eq!(map_keys(&node), ["y", "n"]);
        let Value::Map(entries) = &node.value else {
            panic!("map")
        };
        assert_eq!((entries[1].1.line, entries[1].1.column), (2, 4));
        assert_eq!(entries[0].1.value, Value::Int(1));
    }

    #[test]
    fn empty_documents_are_none() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("# nothing\n"), Ok(None));
    }

    #[test]
    fn syntax_errors_have_a_location_and_no_source_text() {
        let err = parse("a: [1, 2\nb: secret-token-xyz\n").expect_err("unclosed");
        assert_eq!(err.line, Some(2));
        assert!(!err.message.contains("secret-token-xyz"), "{}", err.message);
        assert!(!err.message.contains(" at line "), "{}", err.message);
    }

    #[test]
    fn budgets_stop_deep_nesting_and_alias_bombs() {
        let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
        let err = parse(&deep).expect_err("deep");
        assert!(err.message.contains("too deeply nested"), "{}", err.message);
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let p = i - 1;
            bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        assert!(parse(&bomb).is_err());
    }

    #[test]
    fn duplicate_keys_are_refused_without_programmer_hints() {
        let err = parse("a: 1\na: 2\n").expect_err("duplicate");
        assert!(err.message.contains("duplicate"), "{}", err.message);
        assert!(
            !err.message.contains("DuplicateKeyPolicy"),
            "{}",
            err.message
        );
    }
}
