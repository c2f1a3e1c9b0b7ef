//! Configuration loading: every documented shape, the merge rule, and each class of error.

use provisioner_core::config::{self, ConfigError, ConfigSources, FsType, Source};
use provisioner_core::{Duration, ResourceClass, Secret};

fn class(name: &str) -> ResourceClass {
    ResourceClass::parse(name).expect("valid class name")
}

fn config_only(name: &str, text: &str) -> Result<config::Config, ConfigError> {
    config::load(&ConfigSources {
        config: Some(Source { name, text }),
        ..ConfigSources::default()
    })
}

fn pair(config: &str, secrets: &str, require_tokens: bool) -> Result<config::Config, ConfigError> {
    config::load(&ConfigSources {
        config: Some(Source {
            name: "config.yaml",
            text: config,
        }),
        secrets: Some(Source {
            name: "secrets.yaml",
            text: secrets,
        }),
        circle_token: None,
        require_tokens,
    })
}

/// The one error whose path is `path`; fails listing all errors otherwise.
fn error_at<'a>(err: &'a ConfigError, path: &str) -> &'a config::FieldError {
    let found: Vec<_> = err.errors.iter().filter(|e| e.path == path).collect();
    assert_eq!(found.len(), 1, "expected one error at {path}, got:\n{err}");
    found[0]
}

fn expect_err(result: Result<config::Config, ConfigError>) -> ConfigError {
    match result {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => e,
    }
}

// The seed's documented config.yaml (the existingSecret form), verbatim.
const SEED_SECRET_CONFIG: &str = r#"resourceClass:
  "my-org/my-runner":
    token: "your-runner-token"
    idleTimeout: "10m"   # optional
    spec:
      domain:
        resources:
          requests:
            memory: "2Gi"
            cpu: "1"
        devices:
          disks:
            - name: disk
              disk:
                bus: virtio
      volumes:
        - name: disk
          containerDisk:
            image: "quay.io/containerdisks/ubuntu:22.04"
"#;

// The seed's documented my-values.yaml, verbatim.
const SEED_VALUES: &str = r#"provisioner:
  # CircleCI API token for querying unclaimed/running tasks
  circleToken: "your-circle-api-token"

  resourceClass:
    # Resource class in the format "namespace/name"
    name: "my-org/my-runner"
    # Runner token for this resource class
    token: "your-runner-token"

    # Scaling bounds
    minReplicas: 3
    maxReplicas: 10

    # Optional: idle timeout before a waiting VM shuts itself down (e.g. "10m")
    # idleTimeout: ""

    # KubeVirt VirtualMachineInstanceSpec for each runner VM
    spec:
      domain:
        resources:
          requests:
            memory: "2Gi"
            cpu: "1"
        devices:
          disks:
            - name: disk
              disk:
                bus: virtio
      volumes:
        - name: disk
          containerDisk:
            image: "quay.io/containerdisks/ubuntu:22.04"
"#;

// The seed's CircleCI Server example, verbatim, plus the chart's other top-level keys.
const SEED_SERVER_VALUES: &str = r#"image:
  repository: circleci/runner-provisioner
  tag: 0.1.0
imagePullSecrets:
  - name: regcred
replicaCount: 1
provisioner:
  circleciAPIAddr: "https://your-server-hostname"
  circleToken: "your-circle-api-token"
  resourceClass:
    name: "my-org/my-runner"
    token: "your-runner-token"
"#;

#[test]
fn seed_secret_config_yaml_loads() {
    let circle_token = Secret::new("from-the-secret-key");
    let config = config::load(&ConfigSources {
        config: Some(Source {
            name: "config.yaml",
            text: SEED_SECRET_CONFIG,
        }),
        secrets: None,
        circle_token: Some(&circle_token),
        require_tokens: true,
    })
    .expect("the seed's documented config.yaml is valid");
    assert_eq!(config.circleci_api_addr, config::DEFAULT_API_ADDR);
    assert_eq!(config.poll_interval, config::DEFAULT_POLL_INTERVAL);
    assert_eq!(
        config.circle_token.as_ref().map(Secret::expose),
        Some("from-the-secret-key")
    );
    assert_eq!(config.classes.len(), 1);
    let c = config.class(&class("my-org/my-runner")).expect("the class");
    assert_eq!(c.token.expose(), "your-runner-token");
    assert_eq!(c.scaling.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(
        (c.scaling.min_replicas.get(), c.scaling.max_replicas.get()),
        (3, 10)
    );
    assert_eq!(c.spec, config::default_spec());
    assert!(c.empty_disk_mounts.is_empty());
}

#[test]
fn seed_values_file_loads() {
    let config =
        config_only("my-values.yaml", SEED_VALUES).expect("the seed's my-values.yaml is valid");
    assert_eq!(
        config.circle_token.as_ref().map(Secret::expose),
        Some("your-circle-api-token")
    );
    let c = config.class(&class("my-org/my-runner")).expect("the class");
    assert_eq!(c.token.expose(), "your-runner-token");
    assert_eq!(
        (c.scaling.min_replicas.get(), c.scaling.max_replicas.get()),
        (3, 10)
    );
    assert_eq!(c.scaling.idle_timeout, None);
    assert_eq!(c.spec, config::default_spec());
}

#[test]
fn seed_server_values_keep_the_address_and_ignore_chart_keys() {
    let config = config_only("my-values.yaml", SEED_SERVER_VALUES).expect("valid");
    assert_eq!(config.circleci_api_addr, "https://your-server-hostname");
    let c = config.class(&class("my-org/my-runner")).expect("the class");
    assert_eq!(
        c.spec,
        config::default_spec(),
        "a missing spec is the documented default VM"
    );
}

const FULL_CONFIG: &str = r#"
circleciAPIAddr: "https://circleci.example.com/"
pollInterval: 5s
logLevel: info,kube=warn
resourceClassDefaults:
  scaling:
    maxReplicas: 20
    scaleDownDelay: 2m
    idleTimeout: 10m
    schedules:
      - name: workday
        start: "0 8 * * 1-5"
        end: "0 18 * * 1-5"
        timezone: Europe/Berlin
        minReplicas: 6
  runner:
    commandPrefix: ["sudo", "-niHu", "circleci", "--"]
    maxRunTime: 3h
  emptyDiskMounts:
    - serial: scratch1
      path: /var/scratch
  spec:
    domain:
      devices:
        disks:
          - name: disk
            disk: {bus: virtio}
          - name: scratch
            serial: scratch1
            disk: {bus: virtio}
    volumes:
      - name: disk
        containerDisk: {image: "quay.io/containerdisks/ubuntu:22.04"}
      - name: scratch
        emptyDisk: {capacity: 10Gi}
resourceClasses:
  "acme/large":
    scaling:
      minReplicas: 1
      headroom: 2
    runner:
      workingDirectory: /var/opt/circleci/workdir
  "acme/gpu":
    minReplicas: 0
    maxReplicas: 2
    scaling:
      schedules: []
    emptyDiskMounts: []
    spec:
      domain:
        resources:
          requests: {memory: 8Gi, cpu: "4"}
"#;

const FULL_SECRETS: &str = r#"
circleToken: api-token-1234
resourceClasses:
  "acme/large":
    token: large-token-5678
    userData: |
      #!/bin/bash
      echo hello
  "acme/gpu":
    token: gpu-token-9012
"#;

#[test]
fn full_0_1_2_pair_loads_and_merges_defaults_field_by_field() {
    let config =
        pair(FULL_CONFIG, FULL_SECRETS, true).unwrap_or_else(|e| panic!("valid pair: {e}"));
    assert_eq!(
        config.circleci_api_addr, "https://circleci.example.com/",
        "kept as given"
    );
    assert_eq!(config.poll_interval, Duration::from_secs(5));
    assert_eq!(config.log_level.as_deref(), Some("info,kube=warn"));
    assert_eq!(
        config.circle_token.as_ref().map(Secret::expose),
        Some("api-token-1234")
    );
    let names: Vec<&str> = config.classes.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["acme/gpu", "acme/large"], "sorted by name");

    let large = config.class(&class("acme/large")).expect("acme/large");
    assert_eq!(large.token.expose(), "large-token-5678");
    assert_eq!(
        large.user_data.as_ref().map(Secret::expose),
        Some("#!/bin/bash\necho hello\n")
    );
    // Mappings merge key by key: min and headroom from the entry, the rest from the defaults.
    assert_eq!(large.scaling.min_replicas.get(), 1);
    assert_eq!(large.scaling.headroom.get(), 2);
    assert_eq!(large.scaling.max_replicas.get(), 20);
    assert_eq!(large.scaling.scale_down_delay, Duration::from_secs(120));
    assert_eq!(large.scaling.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(large.scaling.schedules.len(), 1);
    let workday = &large.scaling.schedules[0];
    assert_eq!(
        (workday.name.as_str(), workday.timezone.name()),
        ("workday", "Europe/Berlin")
    );
    assert_eq!(workday.overrides.min_replicas.map(|r| r.get()), Some(6));
    assert_eq!(workday.start.as_str(), "0 8 * * 1-5");
    assert_eq!(
        large.runner.working_directory.as_deref(),
        Some("/var/opt/circleci/workdir")
    );
    assert_eq!(
        large.runner.command_prefix.as_deref(),
        Some(&["sudo", "-niHu", "circleci", "--"].map(str::to_owned)[..])
    );
    assert_eq!(
        large.runner.max_run_time,
        Some(Duration::from_secs(3 * 3600))
    );
    assert_eq!(large.empty_disk_mounts.len(), 1);
    assert_eq!(
        large.empty_disk_mounts[0].fs_type,
        FsType::Ext4,
        "ext4 by default"
    );
    assert_eq!(large.spec["volumes"][1]["emptyDisk"]["capacity"], "10Gi");

    let gpu = config.class(&class("acme/gpu")).expect("acme/gpu");
    assert_eq!(gpu.token.expose(), "gpu-token-9012");
    assert_eq!(gpu.user_data, None);
    // Seed-style flat keys on an entry.
    assert_eq!(
        (
            gpu.scaling.min_replicas.get(),
            gpu.scaling.max_replicas.get()
        ),
        (0, 2)
    );
    // Lists and spec are taken whole: the entry's empty list and spec replace the defaults'.
    assert!(gpu.empty_disk_mounts.is_empty());
    assert_eq!(gpu.spec["domain"]["resources"]["requests"]["memory"], "8Gi");
    assert!(
        gpu.spec.get("volumes").is_none(),
        "spec is not merged with the defaults' spec"
    );
    assert!(
        gpu.scaling.schedules.is_empty(),
        "the entry's empty schedule list wins"
    );
}

#[test]
fn a_schedule_from_the_defaults_is_checked_against_each_class() {
    // acme/gpu's max is 2 but the defaults' workday schedule raises min to 6.
    let err = expect_err(pair(
        &FULL_CONFIG.replace("      schedules: []\n", ""),
        FULL_SECRETS,
        true,
    ));
    let e = error_at(&err, "resourceClassDefaults.scaling.schedules[0]");
    assert_eq!(e.file, "config.yaml");
    assert!(
        e.message.contains("\"workday\"") && e.message.contains("minReplicas 6"),
        "{e}"
    );
    assert!(e.message.contains("acme/gpu"), "names the class: {e}");
    assert!(e.message.contains("maxReplicas 2"), "{e}");
}

#[test]
fn classes_may_be_split_across_the_two_files() {
    let config = pair(
        "resourceClasses:\n  \"acme/only-config\":\n    scaling: {minReplicas: 0}\n",
        "circleToken: t-api\nresourceClasses:\n  \"acme/only-config\": {token: t-1}\n  \"acme/only-secrets\": {token: t-2}\n",
        true,
    )
    .unwrap_or_else(|e| panic!("valid: {e}"));
    let only_secrets = config
        .class(&class("acme/only-secrets"))
        .expect("the union of both files");
    assert_eq!(only_secrets.token.expose(), "t-2");
    assert_eq!(only_secrets.scaling, provisioner_core::Scaling::default());
    assert_eq!(
        config
            .class(&class("acme/only-config"))
            .map(|c| c.scaling.min_replicas.get()),
        Some(0)
    );
}

#[test]
fn values_file_with_0_1_2_keys_loads() {
    let values = r#"
logLevel: debug
image: {repository: x, tag: y}
tokenProxy: {enabled: false}
provisioner:
  namespace: runners
  circleToken: api
  resourceClassDefaults:
    scaling: {maxReplicas: 4}
  resourceClasses:
    "acme/small": {token: t, scaling: {minReplicas: 1}}
"#;
    let config = config_only("values.yaml", values).unwrap_or_else(|e| panic!("valid: {e}"));
    assert_eq!(config.log_level.as_deref(), Some("debug"));
    let small = config.class(&class("acme/small")).expect("class");
    assert_eq!(
        (
            small.scaling.min_replicas.get(),
            small.scaling.max_replicas.get()
        ),
        (1, 4)
    );
}

#[test]
fn values_file_errors_are_prefixed_with_provisioner() {
    let err = expect_err(config_only(
        "values.yaml",
        "provisioner:\n  resourceClass:\n    name: my-org/x\n    minReplica: 2\n",
    ));
    let e = error_at(&err, "provisioner.resourceClass.minReplica");
    assert!(e.message.contains("did you mean \"minReplicas\"?"), "{e}");
    assert_eq!(e.file, "values.yaml");
}

#[test]
fn env_token_overrides_the_file_and_tokens_can_be_required() {
    let env = Secret::new("from-env");
    let config = config::load(&ConfigSources {
        config: Some(Source {
            name: "config.yaml",
            text: "resourceClasses: {\"a/b\": {}}\n",
        }),
        secrets: Some(Source {
            name: "secrets.yaml",
            text: "circleToken: from-file\nresourceClasses: {\"a/b\": {token: x}}\n",
        }),
        circle_token: Some(&env),
        require_tokens: true,
    })
    .expect("valid");
    assert_eq!(
        config.circle_token.as_ref().map(Secret::expose),
        Some("from-env")
    );

    let err = expect_err(pair(
        "resourceClasses: {\"a/b\": {}}\n",
        "resourceClasses: {}\n",
        true,
    ));
    let api = error_at(&err, "circleToken");
    assert_eq!(api.file, "secrets.yaml");
    let token = error_at(&err, "resourceClasses.\"a/b\".token");
    assert_eq!(token.file, "secrets.yaml");
    assert!(token.message.contains("required"), "{token}");

    let seed = expect_err(config::load(&ConfigSources {
        config: Some(Source {
            name: "my-values.yaml",
            text: "provisioner:\n  resourceClass:\n    name: a/b\n",
        }),
        require_tokens: true,
        ..ConfigSources::default()
    }));
    assert_eq!(
        error_at(&seed, "provisioner.circleToken").file,
        "my-values.yaml"
    );
    error_at(&seed, "provisioner.resourceClass.token");

    // Not required (simulator, render): missing tokens are empty.
    let config = pair("resourceClasses: {\"a/b\": {}}\n", "", false).expect("tokens optional");
    assert!(config.classes[0].token.is_empty());
    assert_eq!(config.circle_token, None);
}

#[test]
fn min_above_max_is_refused_with_file_path_and_values() {
    let err = expect_err(config_only(
        "c.yaml",
        "resourceClasses:\n  \"a/b\":\n    scaling:\n      minReplicas: 5\n      maxReplicas: 3\n",
    ));
    let e = error_at(&err, "resourceClasses.\"a/b\".scaling.minReplicas");
    assert_eq!(
        (e.file.as_str(), e.line, e.column),
        ("c.yaml", Some(4), Some(20))
    );
    assert!(
        e.message.contains("minReplicas 5") && e.message.contains("maxReplicas 3"),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "c.yaml:4:20: resourceClasses.\"a/b\".scaling.minReplicas: {}",
            e.message
        )
    );

    // The default minReplicas (3) above a given maxReplicas.
    let err = expect_err(config_only(
        "c.yaml",
        "resourceClasses: {\"a/b\": {maxReplicas: 2}}\n",
    ));
    let e = error_at(&err, "resourceClasses.\"a/b\".maxReplicas");
    assert!(e.message.contains("minReplicas 3 (the default)"), "{e}");

    // Min from the defaults, max from the entry: reported at the entry, naming the default.
    let text = "resourceClassDefaults: {scaling: {minReplicas: 4}}\nresourceClasses: {\"a/b\": {scaling: {maxReplicas: 2}}}\n";
    let err = expect_err(config_only("c.yaml", text));
    let e = error_at(&err, "resourceClasses.\"a/b\".scaling.maxReplicas");
    assert!(
        e.message
            .contains("resourceClassDefaults.scaling.minReplicas"),
        "{e}"
    );
}

#[test]
fn idle_timeout_shorter_than_scale_down_delay_is_refused() {
    let err = expect_err(config_only(
        "c.yaml",
        "resourceClasses:\n  \"a/b\":\n    scaling: {idleTimeout: 1m, scaleDownDelay: 5m}\n",
    ));
    let e = error_at(&err, "resourceClasses.\"a/b\".scaling.idleTimeout");
    assert!(e.message.contains("1m") && e.message.contains("5m"), "{e}");

    // The delay from the defaults, the timeout from the class: reported at the class.
    let text = "resourceClassDefaults: {scaling: {scaleDownDelay: 5m}}\nresourceClasses: {\"a/b\": {idleTimeout: 2m}}\n";
    let err = expect_err(config_only("c.yaml", text));
    let e = error_at(&err, "resourceClasses.\"a/b\".idleTimeout");
    assert!(
        e.message
            .contains("(set at c.yaml: resourceClassDefaults.scaling.scaleDownDelay)"),
        "{e}"
    );

    let schedule = r#"
resourceClasses:
  "a/b":
    scaling:
      idleTimeout: 10m
      schedules:
        - {name: busy, start: "0 8 * * *", end: "0 9 * * *", scaleDownDelay: 15m}
"#;
    let err = expect_err(config_only("c.yaml", schedule));
    let e = error_at(
        &err,
        "resourceClasses.\"a/b\".scaling.schedules[0].scaleDownDelay",
    );
    assert!(
        e.message.contains("\"busy\"") && e.message.contains("15m") && e.message.contains("10m"),
        "{e}"
    );
}

#[test]
fn schedule_errors_name_the_schedule_field() {
    let text = r#"
resourceClasses:
  "a/b":
    scaling:
      maxReplicas: 10
      schedules:
        - {name: night, start: "0 25 * * *", end: "0 6 * * *", timezone: Mars/Olympus}
        - {name: night, start: "0 1 * * *", end: "0 6 * * *", idleTimeout: 5m}
        - {name: peak, start: "0 8 * * *", end: "0 9 * * *", minReplicas: 12}
        - {start: "0 8 * * *"}
"#;
    let err = expect_err(config_only("c.yaml", text));
    let base = "resourceClasses.\"a/b\".scaling.schedules";
    assert!(
        error_at(&err, &format!("{base}[0].start"))
            .message
            .contains("\"0 25 * * *\"")
    );
    assert!(
        error_at(&err, &format!("{base}[0].timezone"))
            .message
            .contains("Mars/Olympus")
    );
    assert!(
        error_at(&err, &format!("{base}[1].name"))
            .message
            .contains("used twice")
    );
    assert!(
        error_at(&err, &format!("{base}[1].idleTimeout"))
            .message
            .contains("idleTimeout cannot be scheduled")
    );
    let peak = error_at(&err, &format!("{base}[2]"));
    assert!(
        peak.message.contains("minReplicas 12") && peak.message.contains("maxReplicas 10"),
        "{peak}"
    );
    assert!(
        error_at(&err, &format!("{base}[3].name"))
            .message
            .contains("required")
    );
    assert!(
        error_at(&err, &format!("{base}[3].end"))
            .message
            .contains("required")
    );
}

#[test]
fn bad_class_names_and_empty_class_maps_are_refused() {
    let err = expect_err(config_only(
        "c.yaml",
        "resourceClasses:\n  \"My-Org/x\": {}\n  noslash: {}\n",
    ));
    assert!(
        error_at(&err, "resourceClasses.\"My-Org/x\"")
            .message
            .contains("\"My-Org/x\"")
    );
    assert!(
        error_at(&err, "resourceClasses.noslash")
            .message
            .contains("no '/'")
    );

    let err = expect_err(config_only("c.yaml", "resourceClasses: {}\n"));
    assert!(
        error_at(&err, "resourceClasses")
            .message
            .contains("no resource classes")
    );
    let err = expect_err(config_only("c.yaml", ""));
    assert!(
        error_at(&err, "resourceClasses")
            .message
            .contains("no resource classes")
    );
    let err = expect_err(config_only(
        "values.yaml",
        "provisioner:\n  existingSecret: my-secret\n",
    ));
    assert!(
        error_at(&err, "provisioner.resourceClasses")
            .message
            .contains("existingSecret")
    );
    let err = expect_err(config_only(
        "c.yaml",
        "resourceClass:\n  name: \"\"\n  token: t\n",
    ));
    assert!(
        error_at(&err, "resourceClass.name")
            .message
            .contains("required")
    );
}

#[test]
fn unknown_keys_get_a_did_you_mean_hint() {
    let text = r#"
circleciApiAddr: https://x
resourceClasess: {}
resourceClasses:
  "a/b":
    scaling: {minReplica: 1, scaleDownDely: 1m}
    runner: {workingDir: /x}
    tokn: abc
    totallyUnrelated: 1
"#;
    let err = expect_err(config_only("c.yaml", text));
    for (path, hint) in [
        ("circleciApiAddr", "circleciAPIAddr"),
        ("resourceClasess", "resourceClasses"),
        ("resourceClasses.\"a/b\".scaling.minReplica", "minReplicas"),
        (
            "resourceClasses.\"a/b\".scaling.scaleDownDely",
            "scaleDownDelay",
        ),
        ("resourceClasses.\"a/b\".tokn", "token"),
    ] {
        let e = error_at(&err, path);
        assert!(
            e.message.contains(&format!("did you mean {hint:?}?")),
            "{e}"
        );
        assert_eq!(e.file, "c.yaml");
    }
    let e = error_at(&err, "resourceClasses.\"a/b\".totallyUnrelated");
    assert!(
        e.message.contains("expected one of") && e.message.contains("scaling"),
        "{e}"
    );
    let e = error_at(&err, "resourceClasses.\"a/b\".runner.workingDir");
    assert!(e.message.contains("unknown key \"workingDir\""), "{e}");
}

#[test]
fn numbers_must_be_whole_non_negative_and_in_range() {
    let text = r#"
resourceClasses:
  "a/b":
    scaling:
      minReplicas: -1
      maxReplicas: 2.5
      headroom: "3"
      maxSurge: 99999999999
      idleBuffer: 123456789012345678901234567890
"#;
    let err = expect_err(config_only("c.yaml", text));
    let at = |k: &str| {
        error_at(&err, &format!("resourceClasses.\"a/b\".scaling.{k}"))
            .message
            .clone()
    };
    assert!(
        at("minReplicas").contains("-1 is negative"),
        "{}",
        at("minReplicas")
    );
    assert!(
        at("maxReplicas").contains("2.5 is not a whole number"),
        "{}",
        at("maxReplicas")
    );
    assert!(
        at("headroom").contains("the string \"3\""),
        "{}",
        at("headroom")
    );
    assert!(
        at("maxSurge").contains("99999999999 is larger than 2147483647"),
        "{}",
        at("maxSurge")
    );
    assert!(
        at("idleBuffer").contains("larger than 2147483647"),
        "{}",
        at("idleBuffer")
    );
    assert_eq!(err.errors.len(), 5, "all errors, not the first: {err}");
}

#[test]
fn wrong_types_name_what_was_expected_and_found() {
    let text = r#"
pollInterval: true
logLevel: loud
sidecar: {enabled: false}
resourceClasses:
  "a/b":
    scaling: 5
    runner: {commandPrefix: sudo, useHomeSSHDirForCheckoutKeys: "yes please", grantSudo: true}
    spec: [not, a, mapping]
  "a/c": "just a string"
"#;
    let err = expect_err(config_only("c.yaml", text));
    assert!(error_at(&err, "pollInterval").message.contains("got true"));
    assert!(error_at(&err, "logLevel").message.contains("\"loud\""));
    assert!(
        error_at(&err, "resourceClasses.\"a/b\".scaling")
            .message
            .contains("expected a mapping")
    );
    assert!(
        error_at(&err, "resourceClasses.\"a/b\".scaling")
            .message
            .contains("the number 5")
    );
    assert!(
        error_at(&err, "resourceClasses.\"a/b\".runner.commandPrefix")
            .message
            .contains("list of strings")
    );
    assert!(
        error_at(
            &err,
            "resourceClasses.\"a/b\".runner.useHomeSSHDirForCheckoutKeys"
        )
        .message
        .contains("true or false")
    );
    assert!(
        error_at(&err, "resourceClasses.\"a/b\".runner.grantSudo")
            .message
            .contains("needs the sidecar (sidecar.enabled: true)")
    );
    assert!(
        error_at(&err, "resourceClasses.\"a/b\".spec")
            .message
            .contains("VirtualMachineInstanceSpec")
    );
    assert!(
        error_at(&err, "resourceClasses.\"a/c\"")
            .message
            .contains("expected a mapping")
    );
}

#[test]
fn top_level_settings_are_validated() {
    for (text, path, needle) in [
        (
            "circleciAPIAddr: runner.circleci.com\n",
            "circleciAPIAddr",
            "not an http(s) URL",
        ),
        (
            "circleciAPIAddr: \"https://\"\n",
            "circleciAPIAddr",
            "not an http(s) URL",
        ),
        ("pollInterval: 0s\n", "pollInterval", "longer than 0s"),
        (
            "pollInterval: 11m\n",
            "pollInterval",
            "11m is longer than 10m",
        ),
        ("pollInterval: 5\n", "pollInterval", "no unit"),
        ("provisioner: nope\n", "provisioner", "expected a mapping"),
    ] {
        let text = format!("{text}resourceClasses: {{\"a/b\": {{}}}}\n");
        let err = expect_err(config_only("c.yaml", &text));
        let e = error_at(&err, path);
        assert!(e.message.contains(needle), "{text}: {e}");
    }
    let err = expect_err(config_only("c.yaml", "- a\n- b\n"));
    assert!(
        error_at(&err, "")
            .message
            .contains("expected a mapping at the top level, got a list"),
        "{err}"
    );
    let ok = config_only("c.yaml", "circleciAPIAddr: http://localhost:8080\npollInterval: 0.5s\nresourceClasses: {\"a/b\": {}}\n")
        .expect("valid");
    assert_eq!(ok.poll_interval, Duration::from_millis(500));
}

#[test]
fn empty_disk_mounts_are_validated_against_the_spec() {
    let text = r#"
resourceClasses:
  "a/b":
    emptyDiskMounts:
      - {serial: "has space", path: relative/dir}
      - {serial: abcdefghijklmnopqrstuvwxyz, path: /data, fsType: ntfs}
      - {serial: data1, path: /data}
      - {serial: data1, path: /data2}
"#;
    let err = expect_err(config_only("c.yaml", text));
    let base = "resourceClasses.\"a/b\".emptyDiskMounts";
    assert!(
        error_at(&err, &format!("{base}[0].serial"))
            .message
            .contains("\"has space\"")
    );
    assert!(
        error_at(&err, &format!("{base}[0].path"))
            .message
            .contains("\"relative/dir\"")
    );
    assert!(
        error_at(&err, &format!("{base}[1].serial"))
            .message
            .contains("20")
    );
    assert!(
        error_at(&err, &format!("{base}[1].fsType"))
            .message
            .contains("\"ntfs\"")
    );
    assert!(
        error_at(&err, &format!("{base}[2].path"))
            .message
            .contains("used twice")
    );
    // data1 appears twice, and the default spec has no emptyDisk with that serial.
    let dup = &err
        .errors
        .iter()
        .filter(|e| e.path == format!("{base}[3].serial"))
        .count();
    assert_eq!(*dup, 2, "{err}");
}

#[test]
fn flat_and_nested_scaling_keys_conflict() {
    let err = expect_err(config_only(
        "c.yaml",
        "resourceClasses:\n  \"a/b\":\n    minReplicas: 1\n    scaling: {minReplicas: 2}\n",
    ));
    let e = error_at(&err, "resourceClasses.\"a/b\".minReplicas");
    assert!(
        e.message
            .contains("resourceClasses.\"a/b\".scaling.minReplicas"),
        "{e}"
    );
}

#[test]
fn secrets_file_holds_only_secrets_and_defaults_hold_no_token() {
    let err = expect_err(pair(
        "resourceClassDefaults: {token: t}\nresourceClasses: {\"a/b\": {}}\n",
        "pollInterval: 5s\nresourceClasses:\n  \"a/b\": {token: t, scaling: {minReplicas: 1}}\n",
        false,
    ));
    assert!(
        error_at(&err, "resourceClassDefaults.token")
            .message
            .contains("cannot be defaulted")
    );
    let e = error_at(&err, "pollInterval");
    assert_eq!(e.file, "secrets.yaml");
    assert!(e.message.contains("put it in the config file"), "{e}");
    assert!(
        error_at(&err, "resourceClasses.\"a/b\".scaling")
            .message
            .contains("not read from the secrets file")
    );
}

#[test]
fn yaml_syntax_errors_have_line_and_column() {
    let err = expect_err(config_only(
        "broken.yaml",
        "resourceClasses:\n  \"a/b\": {token: x\n  other: 1\n",
    ));
    assert_eq!(err.errors.len(), 1, "{err}");
    let e = &err.errors[0];
    assert_eq!(e.file, "broken.yaml");
    assert!(e.line.is_some() && e.column.is_some(), "{e}");
    assert!(e.message.starts_with("invalid YAML"), "{e}");

    let err = expect_err(config_only(
        "dup.yaml",
        "resourceClasses: {}\nresourceClasses: {}\n",
    ));
    assert!(err.errors[0].message.contains("duplicate"), "{err}");
    assert_eq!(err.errors[0].line, Some(2));
    let err = expect_err(config_only("two.yaml", "a: 1\n---\nb: 2\n"));
    assert!(
        err.errors[0]
            .message
            .contains("more than one YAML document"),
        "{err}"
    );
}

#[test]
fn tokens_never_appear_in_error_messages() {
    let env = Secret::new("env-secret-token");
    let config = r#"
resourceClasses:
  "a/b":
    token: config-secret-token
    userData: "user-data-secret"
    minReplicas: config-secret-token
  "a/c":
    token: [not, a, string]
"#;
    let secrets = r#"
circleToken: circle-secret-token
resourceClasses:
  "a/b":
    token: a-different-secret-token
    userData: 12345
"#;
    let err = expect_err(config::load(&ConfigSources {
        config: Some(Source {
            name: "config.yaml",
            text: config,
        }),
        secrets: Some(Source {
            name: "secrets.yaml",
            text: secrets,
        }),
        circle_token: Some(&env),
        require_tokens: true,
    }));
    let shown = format!("{err}\n{err:?}");
    for secret in [
        "config-secret-token",
        "a-different-secret-token",
        "circle-secret-token",
        "env-secret-token",
        "user-data-secret",
        "12345",
        "not, a",
    ] {
        assert!(!shown.contains(secret), "{secret} leaked:\n{shown}");
    }
    // The errors are still there and say what is wrong.
    assert!(
        error_at(&err, "resourceClasses.\"a/b\".token")
            .message
            .contains("different value")
    );
    assert!(
        error_at(&err, "resourceClasses.\"a/c\".token")
            .message
            .contains("got a list")
    );
    assert!(
        error_at(&err, "resourceClasses.\"a/b\".userData")
            .message
            .contains("got a number")
    );
    assert!(
        error_at(&err, "resourceClasses.\"a/b\".minReplicas")
            .message
            .contains("<redacted>")
    );
}

#[test]
fn all_errors_of_both_files_are_reported_together() {
    let err = expect_err(pair(
        "pollInterval: 0s\nresourceClasses: {\"a/b\": {maxReplicas: -2}, \"bad\": {}}\n",
        "circleToken: 7\n",
        true,
    ));
    let paths: Vec<&str> = err.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths.len(), 5, "one error per problem: {err}");
    for expected in [
        "pollInterval",
        "resourceClasses.\"a/b\".maxReplicas",
        "resourceClasses.bad",
        "circleToken",
        "resourceClasses.\"a/b\".token",
    ] {
        assert!(paths.contains(&expected), "missing {expected} in {paths:?}");
    }
    // Ordered by file, then by line, so they read top to bottom.
    let order: Vec<(&str, Option<u64>)> = err
        .errors
        .iter()
        .map(|e| (e.file.as_str(), e.line))
        .collect();
    assert_eq!(
        order,
        [
            ("config.yaml", Some(1)),
            ("config.yaml", Some(2)),
            ("config.yaml", Some(2)),
            ("secrets.yaml", Some(1)),
            ("secrets.yaml", None)
        ]
    );
}

#[test]
fn blank_tokens_count_as_missing_and_a_class_may_not_be_given_twice() {
    let err = expect_err(pair(
        "resourceClass:\n  \"a/b\": {}\nresourceClasses:\n  \"a/b\": {}\n",
        "circleToken: \"   \"\nresourceClasses:\n  \"a/b\": {token: \"  \"}\n",
        true,
    ));
    assert!(
        error_at(&err, "circleToken").message.contains("required"),
        "{err}"
    );
    assert!(
        error_at(&err, "resourceClasses.\"a/b\".token")
            .message
            .contains("required"),
        "{err}"
    );
    let twice = error_at(&err, "resourceClasses.\"a/b\"");
    assert!(
        twice.message.contains("configured twice")
            && twice.message.contains("resourceClass.\"a/b\""),
        "{twice}"
    );
}

#[test]
fn an_empty_disk_mount_needs_a_virtio_empty_disk_with_its_serial() {
    let spec = |bus: &str, volume: &str| {
        format!(
            r#"
resourceClasses:
  "a/b":
    emptyDiskMounts: [{{serial: data1, path: /data, fsType: xfs}}]
    spec:
      domain:
        devices:
          disks: [{{name: d, serial: data1, disk: {{bus: {bus}}}}}]
      volumes: [{{name: d, {volume}}}]
"#
        )
    };
    let ok = config_only("c.yaml", &spec("virtio", "emptyDisk: {capacity: 1Gi}")).expect("valid");
    assert_eq!(ok.classes[0].empty_disk_mounts[0].fs_type, FsType::Xfs);
    for (bus, volume) in [
        ("sata", "emptyDisk: {capacity: 1Gi}"),
        ("virtio", "containerDisk: {image: x}"),
    ] {
        let err = expect_err(config_only("c.yaml", &spec(bus, volume)));
        let e = error_at(&err, "resourceClasses.\"a/b\".emptyDiskMounts[0].serial");
        assert!(e.message.contains("matches no emptyDisk"), "{e}");
    }
}

#[test]
fn yaml_1_1_booleans_stay_strings_except_where_a_bool_is_expected() {
    let text = r#"
resourceClasses:
  "a/b":
    runner: {useHomeSSHDirForCheckoutKeys: yes}
    scaling:
      schedules:
        - {name: n, start: "0 8 * * *", end: "0 9 * * *"}
"#;
    let config = config_only("c.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    let c = &config.classes[0];
    assert_eq!(c.runner.use_home_ssh_dir_for_checkout_keys, Some(true));
    assert_eq!(c.scaling.schedules[0].name, "n");
}

#[test]
fn a_refused_class_does_not_also_report_an_empty_class_map() {
    let err = expect_err(config_only(
        "values.yaml",
        "provisioner:\n  resourceClass:\n    name: \"\"\n    token: t\n",
    ));
    assert_eq!(err.errors.len(), 1, "{err}");
    error_at(&err, "provisioner.resourceClass.name");
}

#[test]
fn a_flood_of_problems_is_summarised() {
    let mut text = String::from("resourceClasses: {\"a/b\": {}}\n");
    for i in 0..500 {
        text.push_str(&format!("unknown{i}: 1\n"));
    }
    let err = expect_err(config_only("c.yaml", &text));
    assert_eq!(err.errors.len(), 101, "100 problems and a summary");
    assert_eq!(err.errors[0].line, Some(2), "top of the file first");
    let last = err.errors.last().expect("summary");
    assert_eq!(last.message, "400 more problems are not shown");
}

#[test]
fn a_secrets_file_of_the_wrong_shape_is_described_without_its_values() {
    for secrets in [
        "bare-secret-token\n",
        "resourceClasses: bare-secret-token\n",
        "resourceClassDefaults: bare-secret-token\nresourceClasses: {\"a/b\": {token: t}}\n",
    ] {
        let err = expect_err(pair("resourceClasses: {\"a/b\": {}}\n", secrets, false));
        let shown = err.to_string();
        assert!(
            !shown.contains("bare-secret-token"),
            "{secrets:?} leaked:\n{shown}"
        );
        assert!(shown.contains("got a string"), "{shown}");
    }
}

#[test]
fn a_blank_log_level_is_refused_not_read_as_no_logging() {
    for text in ["logLevel: \" \"\n", "logLevel: \" , \"\n"] {
        let text = format!("{text}resourceClasses: {{\"a/b\": {{}}}}\n");
        let err = expect_err(config_only("c.yaml", &text));
        let e = error_at(&err, "logLevel");
        assert!(e.message.contains("no level"), "{text}: {e}");
    }
}

#[test]
fn sources_never_show_their_text_in_debug() {
    let token = Secret::new("env-secret-token");
    let sources = ConfigSources {
        config: Some(Source {
            name: "config.yaml",
            text: "resourceClasses: {\"a/b\": {token: file-secret-token}}\n",
        }),
        circle_token: Some(&token),
        ..ConfigSources::default()
    };
    let shown = format!("{sources:?}");
    assert!(shown.contains("config.yaml"), "{shown}");
    assert!(!shown.contains("secret-token"), "{shown}");
}

#[test]
fn tokens_lose_the_newline_a_block_scalar_keeps() {
    let config = "resourceClasses:\n  \"my-org/medium\": {}\n";
    let secrets = "circleToken: |\n  api-token\nresourceClasses:\n  \"my-org/medium\":\n    token: \"  runner-token\\n\"\n";
    let loaded = pair(config, secrets, true).expect("valid");
    assert_eq!(
        loaded.circle_token.as_ref().map(|t| t.expose()),
        Some("api-token")
    );
    let class = loaded.class(&class("my-org/medium")).expect("class");
    assert_eq!(class.token.expose(), "runner-token");
}

#[test]
fn the_predictive_control_is_read_in_both_shapes_and_from_the_defaults() {
    use provisioner_core::forecast::{Percent, ServiceLevel};
    let level = |text: &str| ServiceLevel::parse(text).expect("level");
    let v012 = r#"
resourceClassDefaults:
  scaling: {serviceLevel: "95%", forecastWindow: 10m}
resourceClasses:
  "acme/small":
    scaling:
      forecastLookahead: 4m
      forecastRecentWeight: 70
      schedules:
        - {name: night, start: "0 22 * * *", end: "0 6 * * *", serviceLevel: 0.8}
  "acme/large": {scaling: {serviceLevel: "99.5%"}}
"#;
    let config = config_only("c.yaml", v012).unwrap_or_else(|e| panic!("valid: {e}"));
    let small = &config.class(&class("acme/small")).expect("small").scaling;
    let p = small.predictive.expect("on from the defaults");
    assert_eq!(
        (
            p.service_level,
            p.lookahead,
            p.recent_window,
            p.recent_weight
        ),
        (
            level("95%"),
            Some(Duration::from_secs(240)),
            Duration::from_secs(600),
            Percent::new(70)
        )
    );
    assert_eq!(
        small.schedules[0].overrides.service_level,
        Some(level("80%"))
    );
    let large = &config.class(&class("acme/large")).expect("large").scaling;
    assert_eq!(
        large.predictive.map(|p| p.service_level),
        Some(level("99.5%"))
    );
    // 0.1.0's shape takes the same keys under scaling.
    let seed = "resourceClass:\n  name: my-org/x\n  token: t\n  scaling: {serviceLevel: \"90%\"}\n";
    let config = config_only("c.yaml", seed).unwrap_or_else(|e| panic!("valid: {e}"));
    let x = &config.class(&class("my-org/x")).expect("x").scaling;
    assert_eq!(x.predictive.map(|p| p.service_level), Some(level("90%")));
    // Off unless serviceLevel is set.
    let plain = config_only(
        "c.yaml",
        "resourceClasses:\n  \"a/b\": {scaling: {maxReplicas: 3}}\n",
    )
    .unwrap_or_else(|e| panic!("valid: {e}"));
    assert!(plain.classes[0].scaling.predictive.is_none());
}

#[test]
fn predictive_settings_errors_name_the_field() {
    let text = r#"
resourceClasses:
  "a/b":
    scaling:
      schedules:
        - {name: day, start: "0 8 * * *", end: "0 18 * * *", serviceLevel: "95%"}
  "a/d": {scaling: {forecastWindow: 5m}}
  "a/c": {scaling: {serviceLevel: "100%", forecastRecentWeight: 120, forecastLookahead: 0s}}
"#;
    let err = expect_err(config_only("c.yaml", text));
    let b = "resourceClasses.\"a/b\".scaling";
    assert!(
        error_at(&err, "resourceClasses.\"a/d\".scaling.forecastWindow")
            .message
            .contains("set serviceLevel too")
    );
    assert!(
        error_at(&err, &format!("{b}.schedules[0].serviceLevel"))
            .message
            .contains("turn the control on")
    );
    let c = "resourceClasses.\"a/c\".scaling";
    assert!(
        error_at(&err, &format!("{c}.serviceLevel"))
            .message
            .contains("\"100%\"")
    );
    assert!(
        error_at(&err, &format!("{c}.forecastRecentWeight"))
            .message
            .contains("120")
    );
    assert!(
        error_at(&err, &format!("{c}.forecastLookahead"))
            .message
            .contains("longer than 0s")
    );
}

#[test]
fn sidecar_and_runner_bundle_are_read_in_both_shapes() {
    // 0.1.0's single class, as the chart writes it into its Secret.
    let seed = r#"
resourceClass:
  "my-org/my-runner":
    token: "r"
sidecar: {enabled: false}
runnerBundle:
  image: ghcr.io/runner-provisioner/runner-bundle:0.2.0
  pullPolicy: IfNotPresent
"#;
    let cfg = config_only("config.yaml", seed).expect("seed shape");
    assert!(!cfg.sidecar);
    assert_eq!(
        cfg.runner_bundle,
        Some(config::RunnerBundle {
            image: "ghcr.io/runner-provisioner/runner-bundle:0.2.0".to_owned(),
            pull_policy: Some("IfNotPresent".to_owned()),
            pull_secret: None,
        })
    );
    // 0.1.2's split files, with grantSudo (allowed: the sidecar is on).
    let v012 = r#"
sidecar:
  enabled: true
runnerBundle:
  image: registry.example.com/runner-bundle@sha256:0f3ae2bd5cbbd7d41a0a13e9d4b1d7ab0b3c4e3f6b1a7e2c9d8f0a1b2c3d4e5f
  imagePullSecret: bundle-pull
resourceClassDefaults:
  runner: {grantSudo: true}
resourceClasses:
  "my-org/small": {}
"#;
    let cfg = pair(
        v012,
        "circleToken: c\nresourceClasses:\n  \"my-org/small\": {token: t}\n",
        true,
    )
    .expect("0.1.2 shape");
    assert!(cfg.sidecar);
    assert!(cfg.classes[0].runner.grant_sudo);
    let bundle = cfg.runner_bundle.expect("bundle");
    assert_eq!(bundle.pull_secret.as_deref(), Some("bundle-pull"));
    // Absent keys: the sidecar on (CircleCI's default), no bundle.
    let cfg = config_only("config.yaml", SEED_SECRET_CONFIG).expect("seed");
    assert!(cfg.sidecar);
    assert_eq!(cfg.runner_bundle, None);
    // A disabled bundle is no bundle.
    let cfg = config_only(
        "config.yaml",
        "runnerBundle: {enabled: false}\nresourceClass:\n  \"a/b\": {token: r}\n",
    )
    .expect("disabled bundle");
    assert_eq!(cfg.runner_bundle, None);
}

#[test]
fn bad_sidecar_and_bundle_settings_name_their_field() {
    let text = r#"
sidecar: {enabled: 3, port: 1}
runnerBundle: {pullPolicy: Sometimes, imagePullSecret: "Not_A_Name", imag: x}
resourceClass:
  "a/b": {token: r}
"#;
    let err = expect_err(config_only("config.yaml", text));
    assert!(
        error_at(&err, "sidecar.enabled")
            .message
            .contains("true or false")
    );
    assert!(
        error_at(&err, "sidecar.port")
            .message
            .contains("unknown key")
    );
    assert!(
        error_at(&err, "runnerBundle.image")
            .message
            .contains("image is required")
    );
    assert!(
        error_at(&err, "runnerBundle.imag")
            .message
            .contains("did you mean \"image\"")
    );
    assert!(
        error_at(&err, "runnerBundle.pullPolicy")
            .message
            .contains("Always, IfNotPresent, Never")
    );
    assert!(
        error_at(&err, "runnerBundle.imagePullSecret")
            .message
            .contains("not a Secret name")
    );
    // The secrets file cannot switch the sidecar.
    let err = expect_err(pair(
        "resourceClasses:\n  \"a/b\": {}\n",
        "circleToken: c\nsidecar: {enabled: false}\nresourceClasses:\n  \"a/b\": {token: t}\n",
        true,
    ));
    assert!(error_at(&err, "sidecar").message.contains("config file"));
}

#[test]
fn a_missing_circle_token_says_why_it_is_still_needed() {
    let err = expect_err(config::load(&ConfigSources {
        config: Some(Source {
            name: "config.yaml",
            text: "resourceClasses:\n  \"a/b\": {token: t}\n",
        }),
        require_tokens: true,
        ..ConfigSources::default()
    }));
    let message = &error_at(&err, "circleToken").message;
    assert!(
        message.contains("/api/v3/runner/scale) is not publicly documented"),
        "{message}"
    );
}

#[test]
fn healing_merges_key_by_key_from_the_defaults_and_takes_max_run_time_from_the_runner() {
    let config = config_only(
        "config.yaml",
        r#"resourceClassDefaults:
  healing:
    failingTimeout: 2m
    breakerThreshold: 5
resourceClasses:
  "acme/large":
    runner:
      maxRunTime: 2h
    healing:
      startTimeout: 20m
  "acme/small": {}
"#,
    )
    .expect("config");
    let large = &config
        .class(&class("acme/large"))
        .expect("large")
        .scaling
        .healing;
    assert_eq!(large.failing_timeout, Duration::from_secs(120));
    assert_eq!(large.start_timeout, Duration::from_secs(1200));
    assert_eq!(large.registration_timeout, Duration::from_secs(600));
    assert_eq!(large.breaker_threshold, 5);
    assert_eq!(large.max_run_time, Duration::from_secs(7200));
    let small = &config
        .class(&class("acme/small"))
        .expect("small")
        .scaling
        .healing;
    assert_eq!(small.start_timeout, Duration::from_secs(900));
    assert_eq!(small.max_run_time, Duration::from_secs(5 * 3600));
    // The 0.1.0 single-class shape takes the block too.
    let seed = config_only(
        "config.yaml",
        "resourceClass:\n  name: acme/one\n  token: t\n  healing:\n    registrationTimeout: 3m\n",
    )
    .expect("seed shape");
    assert_eq!(
        seed.classes[0].scaling.healing.registration_timeout,
        Duration::from_secs(180)
    );
}

#[test]
fn healing_refuses_zero_timeouts_and_unknown_keys() {
    let err = expect_err(config_only(
        "config.yaml",
        r#"resourceClasses:
  "acme/large":
    healing:
      startTimeout: 0s
      failingTimeout: 0s
      registerTimeout: 5m
"#,
    ));
    let zero = error_at(&err, "resourceClasses.\"acme/large\".healing.startTimeout");
    assert!(zero.message.contains("longer than 0s"), "{err}");
    let unknown = err
        .errors
        .iter()
        .find(|e| e.message.contains("registerTimeout"))
        .unwrap_or_else(|| panic!("no unknown-key error: {err}"));
    assert!(unknown.message.contains("registrationTimeout"), "{err}");
    assert!(
        err.errors
            .iter()
            .all(|e| !e.path.ends_with("failingTimeout")),
        "{err}"
    );
}
