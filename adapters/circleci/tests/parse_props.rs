//! Whatever a server or proxy sends, parsing never panics and never yields a count to scale on
//! that is not the whole number in the body, within the limit.

use proptest::prelude::*;
use provisioner_circleci::parse::{error_message, parse_retry_after, rate_limit_pause};
use provisioner_circleci::{Endpoint, MAX_COUNT, parse_count};
use provisioner_core::Secret;

const TOKEN: &str = "tok-abc123";

/// JSON-ish values: every JSON type, numbers of every shape, nested a little.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        (0u32..2_000_000).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "-?[0-9]{1,30}(\\.[0-9]{0,5})?([eE][+-]?[0-9]{1,4})?",
        "\"[ -~]{0,12}\"",
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec(("[a-z_]{1,24}", inner), 0..4).prop_map(|fields| {
                let body: Vec<String> = fields
                    .into_iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect();
                format!("{{{}}}", body.join(","))
            }),
        ]
    })
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    prop_oneof![Just(Endpoint::Unclaimed), Just(Endpoint::Running)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), endpoint in endpoint()) {
        if let Ok(count) = parse_count(&body, endpoint) {
            prop_assert!(count <= MAX_COUNT);
        }
        if let Some(message) = error_message(&body, &Secret::new(TOKEN)) {
            prop_assert!(message.chars().count() <= 300, "{message}");
            prop_assert!(!message.chars().any(char::is_control), "{message:?}");
        }
    }

    #[test]
    fn a_count_field_holding_anything_parses_only_to_its_own_whole_value(value in json_value(), endpoint in endpoint()) {
        let body = format!("{{\"{}\": {value}}}", endpoint.field());
        match parse_count(body.as_bytes(), endpoint) {
            Ok(count) => {
                prop_assert!(count <= MAX_COUNT);
                let number: f64 = value.parse().expect("only numbers give counts");
                prop_assert_eq!(number, f64::from(count), "{}", body);
            }
            Err(problem) => prop_assert!(!problem.0.is_empty()),
        }
    }

    #[test]
    fn json_ish_bodies_never_panic(body in json_value(), endpoint in endpoint()) {
        let _ = parse_count(body.as_bytes(), endpoint);
        let _ = error_message(body.as_bytes(), &Secret::new(TOKEN));
    }

    #[test]
    fn the_token_never_survives_into_an_error_message(prefix in "[ -~]{0,40}", suffix in "[ -~]{0,40}") {
        let raw = format!("{prefix}{TOKEN}{suffix}");
        let json = serde_json::json!({ "message": raw }).to_string();
        for body in [raw.as_bytes(), json.as_bytes()] {
            if let Some(message) = error_message(body, &Secret::new(TOKEN)) {
                prop_assert!(!message.contains(TOKEN), "{message}");
            }
        }
    }

    #[test]
    fn header_values_never_panic(value in "\\PC{0,40}", reset in "\\PC{0,20}") {
        let now = jiff::Timestamp::now();
        let _ = parse_retry_after(&value, now);
        let header = |name: &str| match name {
            "ratelimit-remaining" => Some(value.as_str()),
            "ratelimit-reset" => Some(reset.as_str()),
            _ => None,
        };
        let _ = rate_limit_pause(header, now);
    }
}
