//! Command-line flags. Policy flags mirror the provisioner's config names.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use provisioner_core::Duration;

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
    /// Print a report instead of opening the interactive TUI.
    #[arg(long)]
    pub headless: bool,
    /// Write the charts and the summary table as one self-contained file (`.html` or `.svg`)
    /// instead of opening the TUI.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["sweep", "bench"])]
    pub report: Option<PathBuf>,
    /// Job trace CSV: `submitted_at_s,duration_s[,resource_class]`. Default: a synthetic workload.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Run every job of the trace as this one resource class (e.g. the class a --config defines).
    #[arg(long, value_name = "CLASS")]
    pub class_as: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// A provisioner config file (the controller's format): simulate exactly what you deploy.
    /// Replaces the policy flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["policy", "min_replicas", "max_replicas", "idle_timeout", "headroom", "max_surge", "scale_down_delay", "idle_buffer"])]
    pub config: Option<PathBuf>,
    /// provisioner (every flag), seed (CircleCI's Runner Provisioner preview 0.1.0),
    /// circleci-0.1.2 (its 0.1.2 preview), arc (GitHub ARC), gitlab (GitLab's autoscaler) or
    /// oracle (knows every arrival in advance: a bound).
    #[arg(long, default_value = "provisioner")]
    pub policy: String,
    #[arg(long, default_value_t = 3)]
    pub min_replicas: u32,
    #[arg(long, default_value_t = 10)]
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
    /// GitLab's scale_factor (idle VMs as a share of busy ones).
    #[arg(long, default_value_t = 0.0)]
    pub scale_factor: f64,
    /// VM boot time: `2m..5m` (uniform), `90s` (fixed), `empirical:90s,2m,4m` or
    /// `empirical:@FILE` (measured samples, one per line; plain numbers are seconds).
    #[arg(long, default_value = "2m..5m")]
    pub boot_time: String,
    /// How often the controller polls (default 1s, or the config's pollInterval).
    #[arg(long)]
    pub poll_interval: Option<Duration>,
    /// How long a Kubernetes write takes to land.
    #[arg(long, default_value = "0s")]
    pub api_latency: Duration,
    /// Seed of every random draw (boot times, faults, the synthetic workload).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Inject faults at rates, e.g. `api=0.01,k8s=0.01,start=0.02,restart=0.001`.
    #[arg(long, value_name = "RATES")]
    pub faults: Option<String>,
    /// Synthetic workload: average jobs per hour.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Synthetic workload: days to generate.
    #[arg(long, default_value_t = 7.0)]
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
