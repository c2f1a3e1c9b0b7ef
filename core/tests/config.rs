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
