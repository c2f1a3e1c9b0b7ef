//! Property tests: `load` never panics, whatever the bytes, and what it accepts is consistent.

use proptest::prelude::*;
use provisioner_core::config::{self, ConfigSources, Source};
use provisioner_core::{Scaling, Secret};

/// A tree rendered as YAML text; keys and scalars are drawn from the configuration's own
/// vocabulary so generated documents get deep into validation rather than failing at the top.
#[derive(Debug, Clone)]
enum Tree {
    Scalar(String),
    Secret(String),
    Map(Vec<(String, Tree)>),
    List(Vec<Tree>),
}

const SECRET_MARK: &str = "SeCrEt";
const SECRET_KEYS: &[&str] = &["token", "circleToken", "userData"];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "provisioner", "resourceClass", "resourceClasses", "resourceClassDefaults", "circleciAPIAddr",
            "pollInterval", "logLevel", "circleToken", "name", "token", "userData", "scaling", "runner",
            "emptyDiskMounts", "spec", "minReplicas", "maxReplicas", "idleTimeout", "headroom", "maxSurge",
            "scaleDownDelay", "idleBuffer", "schedules", "start", "end", "timezone", "workingDirectory",
            "commandPrefix", "maxRunTime", "grantSudo", "serial", "path", "fsType", "\"acme/a\"", "\"acme/b\"",
            "\"Bad/x\"", "domain", "devices", "disks", "volumes", "emptyDisk",
        ])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z]{1,10}",
    ]
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "~",
            "\"\"",
            "2.5",
            "-1",
            "0",
            "1",
            "3",
            "10",
            "99999999999999999999",
            "true",
            "false",
            "10m",
            "0s",
            "\"0 8 * * 1-5\"",
            "\"0 18 * * *\"",
            "\"61 * * * *\"",
            "Europe/Berlin",
            "Mars/Olympus",
            "[]",
            "{}",
            "/data",
            "relative",
            "ext4",
            "xfs",
            "ntfs",
            "https://x.example",
            "info",
            "\"a/b\"",
            "abc123",
            "[sudo, --]",
            "1e999",
            ".nan",
            "0x1F",
            "\"3\"",
            "yes",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = scalar().prop_map(Tree::Scalar);
    leaf.prop_recursive(5, 48, 5, |inner| {
        prop_oneof![
            3 => prop::collection::vec((key(), inner.clone(), any::<bool>(), "[a-z0-9]{4,10}"), 0..5).prop_map(|entries| {
                Tree::Map(
                    entries
                        .into_iter()
                        .map(|(k, v, wrong_type, secret)| {
                            if SECRET_KEYS.contains(&k.as_str()) && !wrong_type {
                                (k, Tree::Secret(format!("{SECRET_MARK}-{secret}")))
                            } else {
                                (k, v)
                            }
                        })
                        .collect(),
                )
            }),
            1 => prop::collection::vec(inner, 0..4).prop_map(Tree::List),
        ]
    })
}

/// Either a free-form document or one class entry generated inside a valid frame, so that
/// accepted configurations are generated too.
fn config_tree() -> impl Strategy<Value = Tree> {
    prop_oneof![
        tree(),
        tree().prop_map(|entry| {
            let entry = match entry {
                Tree::Map(_) => entry,
                _ => Tree::Map(Vec::new()),
            };
            Tree::Map(vec![(
                "resourceClasses".to_owned(),
                Tree::Map(vec![("\"acme/a\"".to_owned(), entry)]),
            )])
        }),
    ]
}

fn render(tree: &Tree, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match tree {
        Tree::Scalar(s) | Tree::Secret(s) => {
            out.push(' ');
            out.push_str(s);
            out.push('\n');
        }
        Tree::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Tree::List(items) if items.is_empty() => out.push_str(" []\n"),
        Tree::Map(entries) => {
            out.push('\n');
            for (k, v) in entries {
                out.push_str(&format!("{pad}{k}:"));
                render(v, indent + 2, out);
            }
        }
        Tree::List(items) => {
            out.push('\n');
            for item in items {
                out.push_str(&format!("{pad}-"));
                render(item, indent + 2, out);
            }
        }
    }
}

fn document(tree: &Tree) -> String {
    let mut out = String::new();
    render(tree, 0, &mut out);
    out.trim_start_matches([' ', '\n']).to_owned()
}

fn sources<'a>(
    config: &'a str,
    secrets: Option<&'a str>,
    token: Option<&'a Secret>,
    require: bool,
) -> ConfigSources<'a> {
    ConfigSources {
        config: Some(Source {
            name: "config.yaml",
            text: config,
        }),
        secrets: secrets.map(|text| Source {
            name: "secrets.yaml",
            text,
        }),
        circle_token: token,
        require_tokens: require,
    }
}

/// What any accepted configuration must satisfy.
fn check_accepted(config: &config::Config) {
    let names: Vec<_> = config.classes.iter().map(|c| c.name.clone()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(names, sorted, "classes sorted and unique");
    assert!(!config.classes.is_empty());
    assert!(!config.poll_interval.is_zero());
    for class in &config.classes {
        let s: &Scaling = &class.scaling;
        assert!(s.min_replicas <= s.max_replicas, "{class:?}");
        if let Some(idle) = s.idle_timeout {
            assert!(idle >= s.scale_down_delay, "{class:?}");
        }
        for schedule in &s.schedules {
            let c = schedule.overrides.apply(s.base_controls());
            assert!(c.min_replicas <= c.max_replicas, "{class:?}");
            if let Some(idle) = s.idle_timeout {
                assert!(idle >= c.scale_down_delay, "{class:?}");
            }
        }
        assert!(class.spec.is_object());
        // Root for jobs only where the token stays out of the VM.
        assert!(config.sidecar || !class.runner.grant_sudo);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), require in any::<bool>()) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = config::load(&sources(&text, None, None, require));
        let _ = config::load(&sources("resourceClasses: {\"a/b\": {}}\n", Some(&text), None, require));
    }

    #[test]
    fn arbitrary_text_with_yaml_punctuation_never_panics(text in "[-:{}\\[\\],&*!|>'\"#%@` \n\ta-z0-9/.]{0,200}") {
        if let Ok(config) = config::load(&sources(&text, None, None, false)) {
            check_accepted(&config);
        }
    }

    #[test]
    fn generated_documents_load_consistently_and_never_leak_secrets(
        config_tree in config_tree(),
        secrets_tree in tree(),
        with_secrets in any::<bool>(),
        require in any::<bool>(),
        env_token in prop::option::of("[a-z0-9]{6,10}"),
    ) {
        let config_text = document(&config_tree);
        let secrets_text = document(&secrets_tree);
        let env = env_token.map(|t| Secret::new(format!("{SECRET_MARK}-{t}")));
        let sources = sources(&config_text, with_secrets.then_some(secrets_text.as_str()), env.as_ref(), require);
        match config::load(&sources) {
            Ok(config) => check_accepted(&config),
            Err(err) => {
                prop_assert!(!err.errors.is_empty());
                let shown = format!("{err}\n{err:?}");
                prop_assert!(!shown.contains(SECRET_MARK), "secret leaked:\n{}\n---\n{}", shown, config_text);
            }
        }
    }

    #[test]
    fn mutated_documents_never_panic(config_tree in config_tree(), at in any::<prop::sample::Index>(), insert in "[-:{}\\[\\]\n #&*\"]") {
        let mut text = document(&config_tree);
        if !text.is_empty() {
            let mut pos = at.index(text.len());
            while !text.is_char_boundary(pos) {
                pos -= 1;
            }
            text.insert_str(pos, &insert);
        }
        if let Ok(config) = config::load(&sources(&text, None, None, false)) {
            check_accepted(&config);
        }
    }
}

#[test]
fn generator_reaches_valid_documents() {
    // Guard against a generator that only ever produces rejected input: a hand-built tree in
    // the generator's vocabulary must load.
    let tree = Tree::Map(vec![(
        "resourceClasses".to_owned(),
        Tree::Map(vec![(
            "\"acme/a\"".to_owned(),
            Tree::Map(vec![
                ("token".to_owned(), Tree::Secret(format!("{SECRET_MARK}-x"))),
                ("minReplicas".to_owned(), Tree::Scalar("1".to_owned())),
            ]),
        )]),
    )]);
    let text = document(&tree);
    let config =
        config::load(&sources(&text, None, None, false)).unwrap_or_else(|e| panic!("{text}\n{e}"));
    check_accepted(&config);
    assert_eq!(config.classes[0].scaling.min_replicas.get(), 1);
}
