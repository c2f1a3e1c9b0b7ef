//! Command-line flags. Policy flags mirror the provisioner's config names.

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::{Parser, ValueEnum};
use provisioner_core::Duration;
use provisioner_core::forecast::{Percent, ServiceLevel};
use provisioner_sim::cluster::{ClusterFlags, PRESETS};
use provisioner_sim::scenarios::SCENARIO_NAMES;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Table,
}

/// Replay a CI job trace (or a synthetic workload) against the provisioner's scaling policy and
/// report job waits and VM-hours.
#[derive(Debug, Clone, Parser)]
#[command(name = "simulate", version)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Print a report instead of opening the interactive TUI.
    #[arg(long)]
    pub headless: bool,
    /// Write the charts and the summary table as one self-contained file (`.html` or `.svg`)
    /// instead of opening the TUI.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["sweep", "bench"])]
    pub report: Option<PathBuf>,
    /// Job trace CSV: `submitted_at_s,duration_s[,resource_class]`. Default: a synthetic workload.
    #[arg(long, global = true, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Run every job of the trace as this one resource class (e.g. the class a --config defines).
    #[arg(long, global = true, value_name = "CLASS")]
    pub class_as: Option<String>,
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub format: Format,
    /// A provisioner config file (the controller's format): simulate exactly what you deploy.
    /// Replaces the policy flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["policy", "min_replicas", "max_replicas", "idle_timeout", "headroom", "max_surge", "scale_down_delay", "idle_buffer", "service_level", "forecast_lookahead", "forecast_window", "forecast_recent_weight"])]
    pub config: Option<PathBuf>,
    /// A config written by `simulate advise --write-config`: the compare view and --report show
    /// its policy as the "advised" row, replayed as `--config FILE` replays it (on the same
    /// trace; the file's policy, not the flags').
    #[arg(long, value_name = "FILE", conflicts_with = "scenario")]
    pub advised: Option<PathBuf>,
    /// provisioner (every flag), seed (CircleCI's Runner Provisioner preview 0.1.0),
    /// circleci-0.1.2 (its 0.1.2 preview), arc (GitHub ARC), gitlab (GitLab's autoscaler) or
    /// oracle (knows every arrival in advance: a bound).
    #[arg(long, default_value = "provisioner")]
    pub policy: String,
    #[arg(long, default_value_t = 3)]
    pub min_replicas: u32,
    #[arg(long, global = true, default_value_t = 10)]
    pub max_replicas: u32,
    /// A VM powers itself off after this long without a job (e.g. 10m). Default: never.
    #[arg(long)]
    pub idle_timeout: Option<Duration>,
    #[arg(long, default_value_t = 0)]
    pub headroom: u32,
    #[arg(long, default_value_t = 0)]
    pub max_surge: u32,
    #[arg(long, default_value = "0s")]
    pub scale_down_delay: Duration,
    /// Idle VMs kept on top of demand (also GitLab's idle_count).
    #[arg(long, default_value_t = 0)]
    pub idle_buffer: u32,
    /// The predictive warm pool: keep warm the VMs that cover the arrivals expected within a
    /// boot in this share of cases (e.g. 95%). Turns it on for `--policy provisioner`;
    /// `--policy predictive` uses 90% unless set.
    #[arg(long, value_name = "LEVEL")]
    pub service_level: Option<ServiceLevel>,
    /// How far ahead the warm VMs cover arrivals. Default: the boot time seen.
    #[arg(long)]
    pub forecast_lookahead: Option<Duration>,
    /// Time constant of the recent arrival rate the forecast follows.
    #[arg(long, default_value = "5m")]
    pub forecast_window: Duration,
    /// Weight of the recent rate against the hour-of-week profile, in percent.
    #[arg(long, default_value = "50")]
    pub forecast_recent_weight: Percent,
    /// GitLab's scale_factor (idle VMs as a share of busy ones).
    #[arg(long, default_value_t = 0.0)]
    pub scale_factor: f64,
    /// VM boot time: `2m..5m` (uniform), `90s` (fixed), `empirical:90s,2m,4m` or
    /// `empirical:@FILE` (measured samples, one per line; plain numbers are seconds).
    #[arg(long, global = true, default_value = "2m..5m")]
    pub boot_time: String,
    /// How often the controller polls (default 1s, or the config's pollInterval).
    #[arg(long, global = true)]
    pub poll_interval: Option<Duration>,
    /// How long a Kubernetes write takes to land.
    #[arg(long, default_value = "0s")]
    pub api_latency: Duration,
    /// Seed of every random draw (boot times, faults, the synthetic workload).
    #[arg(long, global = true, default_value_t = 1)]
    pub seed: u64,
    /// Inject faults, e.g. `api=0.01,k8s=0.01,start=0.02,restart=0.001` (probabilities), and
    /// `outage=2h/7d` (CircleCI down 2h a week), `lost-node=1/7d`, `restart=1/1h`,
    /// `stuck-start=0.01`, `unschedulable=0.01`, `never-connects=0.01` (per VM created).
    #[arg(long, value_name = "RATES")]
    pub faults: Option<String>,
    /// Synthetic workload: average jobs per hour.
    #[arg(long, global = true, default_value_t = 20.0)]
    pub rate: f64,
    /// Synthetic workload: days to generate.
    #[arg(long, global = true, default_value_t = 7.0)]
    pub days: f64,
    /// Sweep a grid, e.g. `--sweep min-replicas=0..10 --sweep idle-timeout=0s,5m,10m`.
    #[arg(long, value_name = "KEY=VALUES")]
    pub sweep: Vec<String>,
    /// Sweep threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Add samples of the world every this much simulated time to the JSON (e.g. 60s).
    #[arg(long)]
    pub sample_every: Option<Duration>,
    /// How many of the longest waits to list.
    #[arg(long, default_value_t = 10)]
    pub worst: usize,
    /// Benchmark: replay the four-week trace, report wall time, events/s and peak memory,
    /// then time a 100-point sweep.
    #[arg(long)]
    pub bench: bool,
    /// Cut the report into windows of trace time at these, e.g. `10m,20m,30m` or `21d`.
    #[arg(long, value_name = "CUTS")]
    pub phases: Option<String>,
    /// Model the cluster the VMs land on with a named preset (any cluster flag turns the model
    /// on; unset knobs come from the preset, `mro-eks` by default).
    #[arg(long, value_name = "NAME", value_parser = preset_names())]
    pub preset: Option<String>,
    /// Cluster nodes: `6` (fixed) or `2..6` (a cluster autoscaler's range).
    #[arg(long, value_name = "N|MIN..MAX")]
    pub nodes: Option<String>,
    /// What one node offers VMs, CPU/MEMORY (e.g. `48/96Gi`).
    #[arg(long, value_name = "CPU/MEMORY")]
    pub node_size: Option<String>,
    /// How long an added node takes to take VMs.
    #[arg(long, value_name = "DURATION")]
    pub node_startup: Option<Duration>,
    /// virt-controller creates one VMI per this.
    #[arg(long, value_name = "DURATION")]
    pub create_interval: Option<Duration>,
    /// ContainerDisk pull on a node without the image (a `--boot-time` form).
    #[arg(long, value_name = "TIME")]
    pub image_pull: Option<String>,
    /// Guest boot (a `--boot-time` form).
    #[arg(long, value_name = "TIME")]
    pub guest_boot: Option<String>,
    /// From the guest up to the runner claiming (a `--boot-time` form).
    #[arg(long, value_name = "TIME")]
    pub runner_start: Option<String>,
    /// How long a job waits for an idle runner to claim it (the agent's poll for work).
    #[arg(long, value_name = "DURATION")]
    pub claim_delay: Option<Duration>,
    /// VM size for the cluster model: `CPU/MEMORY` for every class or `CLASS=CPU/MEMORY`
    /// (repeatable; wins over a --config class spec).
    #[arg(long, value_name = "[CLASS=]CPU/MEMORY")]
    pub vm_size: Vec<String>,
    /// Run one of CircleCI's published benchmark scenarios (trace, classes, scaling, phases)
    /// on the cluster model, beside the published figures.
    #[arg(long, value_name = "NAME", value_parser = scenario_names(), conflicts_with_all = ["trace", "config", "class_as", "policy", "min_replicas", "max_replicas", "idle_timeout", "headroom", "max_surge", "scale_down_delay", "idle_buffer", "service_level", "forecast_lookahead", "forecast_window", "forecast_recent_weight", "vm_size", "sweep"])]
    pub scenario: Option<String>,
    /// Print the calibration table: every published benchmark figure beside the simulator's
    /// (on `--preset` and the cluster flags), as in adapters/sim/README.md.
    #[arg(long)]
    pub calibration: bool,
}

impl Args {
    /// The cluster flags as given.
    pub fn cluster_flags(&self) -> ClusterFlags {
        ClusterFlags {
            preset: self.preset.clone(),
            nodes: self.nodes.clone(),
            node_size: self.node_size.clone(),
            node_startup: self.node_startup,
            create_interval: self.create_interval,
            image_pull: self.image_pull.clone(),
            guest_boot: self.guest_boot.clone(),
            runner_start: self.runner_start.clone(),
            claim_delay: self.claim_delay,
            vm_sizes: self.vm_size.clone(),
        }
    }
}

/// The presets, each with what it stands for (so `--help` lists them).
fn preset_names() -> PossibleValuesParser {
    PossibleValuesParser::new(PRESETS.map(|(name, help)| PossibleValue::new(name).help(help)))
}

fn scenario_names() -> PossibleValuesParser {
    PossibleValuesParser::new(SCENARIO_NAMES)
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Search the controls for the cheapest policy meeting a wait target: fitted on the first
    /// part of the trace, measured on the rest. Takes --trace (or the synthetic workload),
    /// --class-as, --max-replicas, --boot-time, --poll-interval, --seed and --format too.
    /// Exits 1 when no policy tried meets the target.
    Advise(AdviseArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct AdviseArgs {
    /// The wait target: p50, p90, p95 or p99, e.g. `p95=60s`.
    #[arg(long)]
    pub target: String,
    /// Where the measured part starts (trace time, e.g. 21d). Default: the last quarter.
    #[arg(long)]
    pub test_from: Option<Duration>,
    /// Write the advised policy as a provisioner config file (`simulate --config` replays it).
    #[arg(long, value_name = "FILE")]
    pub write_config: Option<PathBuf>,
    /// Write the advised policy as Helm values for the chart (tokens left empty to fill in).
    #[arg(long, value_name = "FILE")]
    pub write_values: Option<PathBuf>,
    /// The IANA time zone of your working day (e.g. Europe/Berlin): the busy hours are found
    /// and the schedules written in it. The trace's times are UTC.
    #[arg(long, default_value = "UTC")]
    pub timezone: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_flags_parse() {
        let a = Args::try_parse_from([
            "simulate",
            "--headless",
            "--min-replicas",
            "0",
            "--idle-timeout",
            "10m",
            "--scale-down-delay",
            "90s",
            "--max-surge",
            "4",
            "--policy",
            "arc",
        ])
        .expect("valid flags");
        assert_eq!(
            (a.min_replicas, a.max_surge, a.policy.as_str()),
            (0, 4, "arc")
        );
        assert_eq!(a.idle_timeout, Some(Duration::from_secs(600)));
        assert_eq!(a.scale_down_delay, Duration::from_secs(90));
        assert!(Args::try_parse_from(["simulate", "--idle-timeout", "ten"]).is_err());
        assert!(Args::try_parse_from(["simulate", "--min-replicas", "-1"]).is_err());
        assert!(
            Args::try_parse_from(["simulate", "--config", "c.yaml", "--min-replicas", "2"])
                .is_err()
        );
    }
}
