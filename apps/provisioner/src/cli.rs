//! Command line: `run` (the default), `validate`, `tasks`, `render`, `scale-to-zero`, `status`. Every flag
//! can also be set through the environment variable `--help` names, as the chart does.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use provisioner_core::{Duration, ResourceClass};

use crate::logging::LogFormat;
use crate::sources::ConfigPaths;

pub const DEFAULT_CONFIG: &str = "/etc/runner-provisioner/config.yaml";
pub const DEFAULT_SECRETS: &str = "/etc/runner-provisioner-secrets/secrets.yaml";
pub const DEFAULT_NAMESPACE: &str = "runner-provisioner";

const ENV_HELP: &str = "\
Environment:
  CIRCLE_TOKEN   CircleCI API token for task polling (never pass it as a flag), for local runs.
                 A `circle-token` file beside secrets.yaml (else beside config.yaml) wins over
                 it: that file is re-read on change, so a rotated Secret takes effect without
                 a restart; CIRCLE_TOKEN is read once at start. Without either, `circleToken`
                 in the files.
  POD_NAME       This replica's identity for leader election and events (default: hostname).
  POD_NAMESPACE  Default for --namespace.
  RUST_LOG       Full log filter directives; overrides --log-level and the config's logLevel.
  KUBECONFIG     Cluster access outside a pod (in a pod the service account is used).";

/// Autoscales CircleCI self-hosted runner VMs on KubeVirt.
#[derive(Debug, Parser)]
#[command(name = "provisioner", version, about, after_help = ENV_HELP, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `run`'s flags, so that `provisioner` alone runs the controller.
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (the default).
    #[command(after_help = ENV_HELP)]
    Run(RunArgs),
    /// Check the configuration and exit: 0 when valid, else every error with its file and field.
    Validate(ValidateArgs),
    /// Print one class's task counts as CircleCI reports them, as one JSON line.
    Tasks(TasksArgs),
    /// Print the YAML the provisioner would apply to the cluster; needs no cluster.
    Render(RenderArgs),
    /// Lower every managed pool's replicas to 0 and delete only stopped VMs (Helm pre-delete hook).
    ScaleToZero(ScaleToZeroArgs),
    /// Per class: demand, pool size, VM phases, the estimated job wait and warm share, and the
    /// last error, from a running controller's metrics.
    Status(StatusArgs),
    /// Run the token proxy: the sidecar the webhook puts next to each VM (not run by hand).
    Proxy(ProxyArgs),
}

/// How a one-shot command prints its result and its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// For a person: plain text, errors one per line (`file:line:col: field: message`).
    Text,
    /// For a program: JSON on stdout, errors as JSON log lines.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The controller's metrics endpoint (port-forward it, or run this in the pod).
    #[arg(
        long = "metrics-url",
        env = "PROVISIONER_METRICS_URL",
        default_value = "http://localhost:9090/metrics",
        value_parser = parse_api_addr_keep_path
    )]
    pub metrics_url: String,
    /// Read the metrics through the Kubernetes API server's service proxy (KUBECONFIG, else
    /// the pod's service account) instead of --metrics-url; needs `get` on `services/proxy`.
    #[arg(long = "from-cluster", default_value_t = false)]
    pub from_cluster: bool,
    /// Namespace of the controller's metrics Service (with --from-cluster); default: the
    /// kubeconfig context's namespace, or the pod's own in a cluster.
    #[arg(long = "namespace", env = "PROVISIONER_NAMESPACE")]
    pub namespace: Option<String>,
    /// The controller's metrics Service (with --from-cluster); the chart names it
    /// `<release>-metrics`.
    #[arg(long = "service", default_value = "runner-provisioner-metrics")]
    pub service: String,
    #[arg(long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Configuration file: 0.1.2's ConfigMap `config.yaml`, or 0.1.0's Secret `config.yaml`.
    #[arg(long = "config", env = "PROVISIONER_CONFIG", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Secrets file (0.1.2's `secrets.yaml`). May be absent at its default path when the config
    /// carries its own tokens (0.1.0's shape).
    #[arg(long = "secrets", env = "PROVISIONER_SECRETS")]
    pub secrets: Option<PathBuf>,
}

impl ConfigArgs {
    pub fn paths(&self) -> ConfigPaths {
        ConfigPaths::new(self.config.clone(), self.secrets.clone(), DEFAULT_SECRETS)
    }
}

#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log level (error, warn, info, debug, trace); default: the config's `logLevel`, else info.
    #[arg(long = "log-level", env = "LOG_LEVEL", value_parser = parse_log_level)]
    pub log_level: Option<String>,
    /// Log format on stderr; default: json for `run` and `--output json`, else text.
    #[arg(long = "log-format", env = "LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub log: LogArgs,
    /// Namespace of the pools, their Secrets, the Lease and the Events.
    #[arg(long = "namespace", env = "PROVISIONER_NAMESPACE")]
    pub namespace: Option<String>,
    /// CircleCI runner API address; overrides `circleciAPIAddr`.
    #[arg(long = "api-addr", env = "CIRCLECI_API_ADDR", value_parser = parse_api_addr)]
    pub api_addr: Option<String>,
    /// Time between polls of each class; overrides `pollInterval` (default 1s).
    #[arg(long = "poll-interval", env = "POLL_INTERVAL", value_parser = parse_interval)]
    pub poll_interval: Option<Duration>,
    /// Port of `GET /metrics` (Prometheus); 0 picks a free port.
    #[arg(long = "metrics-port", env = "METRICS_PORT", default_value_t = 9090)]
    pub metrics_port: u16,
    /// Port of `GET /ready`; 0 picks a free port.
    #[arg(long = "ready-port", env = "READY_PORT", default_value_t = 8000)]
    pub ready_port: u16,
    /// Port of `GET /live`; 0 picks a free port.
    #[arg(long = "live-port", env = "LIVE_PORT", default_value_t = 8001)]
    pub live_port: u16,
    /// Address the three HTTP servers bind to.
    #[arg(long = "bind-address", env = "BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: std::net::IpAddr,
    /// CircleCI request budget shared by all classes, in requests per second (each class makes
    /// two requests a cycle).
    #[arg(long = "api-requests-per-second", env = "CIRCLECI_REQUESTS_PER_SECOND", default_value_t = provisioner_circleci::DEFAULT_REQUESTS_PER_SECOND)]
    pub api_requests_per_second: f64,
    /// Not ready once a class's polls have failed for this long.
    #[arg(long = "unready-after", env = "UNREADY_AFTER", default_value = "60s", value_parser = parse_interval)]
    pub unready_after: Duration,
    /// Elect a leader through a coordination.k8s.io Lease; standbys poll nothing.
    #[arg(long = "leader-election", env = "LEADER_ELECTION", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_election: bool,
    /// Name of the leader election Lease.
    #[arg(
        long = "lease-name",
        env = "LEASE_NAME",
        default_value = "runner-provisioner"
    )]
    pub lease_name: String,
    /// Shadow mode: poll real demand, log and export decisions, write nothing to Kubernetes.
    /// Without a reachable cluster the pool is modelled by the simulator's pool model.
    #[arg(long = "dry-run", env = "DRY_RUN", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: bool,
    /// Serve the sidecar injector webhook over HTTPS with `tls.crt` and `tls.key` from this
    /// directory (every replica, leader or not); unset: no webhook.
    #[arg(long = "webhook-cert-dir", env = "WEBHOOK_CERT_DIR")]
    pub webhook_cert_dir: Option<PathBuf>,
    /// Port of the sidecar injector webhook.
    #[arg(long = "webhook-port", env = "WEBHOOK_PORT", default_value_t = 9443)]
    pub webhook_port: u16,
    /// Image of the injected proxy container: this controller's own image.
    #[arg(long = "sidecar-image", env = "SIDECAR_IMAGE")]
    pub sidecar_image: Option<String>,
    /// Pull policy of the injected proxy container.
    #[arg(long = "sidecar-image-pull-policy", env = "SIDECAR_IMAGE_PULL_POLICY")]
    pub sidecar_image_pull_policy: Option<String>,
}

impl RunArgs {
    pub fn namespace(&self) -> String {
        resolve_namespace(self.namespace.as_deref())
    }
}

#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// How to print the result and errors: plain text for a person, or JSON.
    #[arg(long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, Args)]
pub struct TasksArgs {
    /// The resource class, `<namespace>/<name>`.
    #[arg(long = "resource-class", value_parser = parse_class)]
    pub resource_class: ResourceClass,
    /// CircleCI runner API address.
    #[arg(long = "api-addr", env = "CIRCLECI_API_ADDR", default_value = provisioner_core::config::DEFAULT_API_ADDR, value_parser = parse_api_addr)]
    pub api_addr: String,
    /// How to print the result and errors: plain text for a person, or JSON.
    #[arg(long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Namespace written into the rendered objects.
    #[arg(long = "namespace", env = "PROVISIONER_NAMESPACE")]
    pub namespace: Option<String>,
    /// Print tokens and user data instead of redacting them.
    #[arg(long = "show-secrets", default_value_t = false)]
    pub show_secrets: bool,
    /// How to print errors (the objects are YAML either way).
    #[arg(long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Render for the token-proxy sidecar (no class token in the VMs); default: the config's
    /// `sidecar.enabled`, which the chart sets.
    #[arg(long = "sidecar", overrides_with = "no_sidecar")]
    pub sidecar: bool,
    /// Render without the sidecar: the class token goes into each VM's runner config.
    #[arg(long = "no-sidecar", overrides_with = "sidecar")]
    pub no_sidecar: bool,
    #[command(flatten)]
    pub log: LogArgs,
}

impl RenderArgs {
    /// `--sidecar` / `--no-sidecar`, the last given winning; `None`: the config decides.
    pub fn sidecar(&self) -> Option<bool> {
        match (self.sidecar, self.no_sidecar) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// The mounted proxy Secret: `token`, `url` and `allow-from`.
    #[arg(long = "secret-dir", env = "PROXY_SECRET_DIR", default_value = provisioner_kubevirt::PROXY_SECRET_DIR)]
    pub secret_dir: PathBuf,
    /// Address to listen on in the VM's pod.
    #[arg(long = "listen", env = "PROXY_LISTEN", default_value = "0.0.0.0:8484")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ScaleToZeroArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Namespace of the pools.
    #[arg(long = "namespace", env = "PROVISIONER_NAMESPACE")]
    pub namespace: Option<String>,
    /// How to print the result and errors: plain text for a person, or JSON.
    #[arg(long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub log: LogArgs,
}

pub fn resolve_namespace(flag: Option<&str>) -> String {
    flag.map(str::to_owned)
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|ns| !ns.trim().is_empty())
        })
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

/// A level (`info`) or comma-separated `target=level` directives (`info,kube=warn`). A bare
/// unknown word would otherwise be read as a target name and silence every log line.
fn parse_log_level(value: &str) -> Result<String, String> {
    const LEVELS: [&str; 7] = ["off", "error", "warn", "warning", "info", "debug", "trace"];
    let is_level = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    let ok = !value.trim().is_empty()
        && value.split(',').all(|part| match part.split_once('=') {
            Some((target, level)) => !target.trim().is_empty() && is_level(level),
            None => is_level(part),
        });
    if ok {
        Ok(value.trim().replace("warning", "warn"))
    } else {
        Err(format!(
            "{value:?} is not a log level (error, warn, info, debug, trace) or target=level list"
        ))
    }
}

fn parse_api_addr(value: &str) -> Result<String, String> {
    let url = provisioner_core::ApiUrl::parse(value).map_err(|e| e.to_string())?;
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// An http(s) URL, path kept.
fn parse_api_addr_keep_path(value: &str) -> Result<String, String> {
    parse_api_addr(value).map(|_| value.trim().to_owned())
}

fn parse_interval(value: &str) -> Result<Duration, String> {
    let d = Duration::parse(value).map_err(|e| e.0)?;
    if d.is_zero() {
        return Err(format!("{value:?} must be longer than zero"));
    }
    Ok(d)
}

fn parse_class(value: &str) -> Result<ResourceClass, String> {
    ResourceClass::parse(value).map_err(|e| e.0)
}
