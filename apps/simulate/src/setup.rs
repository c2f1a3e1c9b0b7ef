//! Turning the flags into what every mode runs: the `Setup` (policy and options), the trace
//! (a CSV or the synthetic workload), and the errors that stop a mode before it reports.

use std::path::Path;
use std::process::ExitCode;

use provisioner_core::config::{ConfigSources, Source, default_spec, load};
use provisioner_core::forecast::Predictive;
use provisioner_core::{Duration, ResourceClass};
use provisioner_sim::{
    BootTime, Faults, PolicyChoice, PolicyParams, SimError, SimOptions, SimReport,
    SyntheticOptions, Trace, run,
};

use provisioner_sim::cluster::{ClusterModel, ClusterOptions, image_of_spec, vm_size_from_spec};
use provisioner_sim::phases::parse_cuts;
use provisioner_sim::scenarios::scenario;

use crate::cli::Args;

/// About this many samples per run: enough for a smooth chart, little memory on a long trace.
const TARGET_SAMPLES: i64 = 2000;

/// Why a mode stopped before reporting.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error("--sweep {spec:?}: {message}")]
    Sweep { spec: String, message: String },
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot write the report: {0}")]
    Output(String),
}

/// The exit code of a mode's outcome: an error is printed and exits 2.
pub fn exit_code(outcome: Result<ExitCode, CliError>) -> ExitCode {
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// One simulation's inputs, resolved from the flags.
#[derive(Debug, Clone)]
pub struct Setup {
    pub options: SimOptions,
    pub params: PolicyParams,
    pub policy_name: String,
    /// Set when a config replaces the policy flags.
    pub config_policy: Option<PolicyChoice>,
    pub config_name: Option<String>,
    /// The VM sizes and images the TUI's cluster control turns the model on with: the run's
    /// own model, or else one from the classes' specs (see [`cluster_template`]).
    pub cluster_template: ClusterModel,
    /// `--advised FILE`: the advisor's config, set up as `--config FILE` would be.
    pub advised: Option<Box<Setup>>,
}

impl Setup {
    /// The policy's name for reports: the reference name, or the config file.
    fn label(&self) -> String {
        match (&self.config_policy, &self.config_name) {
            (Some(_), Some(name)) if name.starts_with("scenario ") => name.clone(),
            (Some(_), Some(name)) => format!("config {name}"),
            _ => self.policy_name.clone(),
        }
    }

    pub fn policy(&self) -> Result<PolicyChoice, SimError> {
        match &self.config_policy {
            Some(p) => Ok(p.clone()),
            None => PolicyChoice::reference(&self.policy_name, &self.params),
        }
    }
}

pub fn setup(args: &Args) -> Result<Setup, CliError> {
    let mut options = SimOptions {
        boot_time: BootTime::parse(&args.boot_time)?,
        api_latency: args.api_latency,
        seed: args.seed,
        faults: args
            .faults
            .as_deref()
            .map(Faults::parse)
            .transpose()?
            .unwrap_or_default(),
        sample_every: args.sample_every,
        worst_waits: args.worst,
        ..SimOptions::default()
    };
    let params = PolicyParams {
        min_replicas: args.min_replicas,
        max_replicas: args.max_replicas,
        idle_timeout: args.idle_timeout,
        headroom: args.headroom,
        max_surge: args.max_surge,
        scale_down_delay: args.scale_down_delay,
        idle_buffer: args.idle_buffer,
        scale_factor: args.scale_factor,
        predictive: args
            .service_level
            .or_else(|| (args.policy == "predictive").then(|| Predictive::default().service_level))
            .map(|service_level| Predictive {
                service_level,
                lookahead: args.forecast_lookahead,
                recent_window: args.forecast_window,
                recent_weight: args.forecast_recent_weight,
            }),
    };
    let mut config_policy = None;
    let mut config_name = None;
    let mut specs = Vec::new();
    if let Some(path) = &args.config {
        let config = load_config(path)?;
        let name = path.display().to_string();
        options.poll_interval = config.poll_interval;
        config_policy = Some(PolicyChoice::from_config(&config));
        config_name = Some(name);
        specs = config
            .classes
            .into_iter()
            .map(|c| (c.name, c.spec))
            .collect();
    }
    let flags = args.cluster_flags();
    if let Some(name) = &args.scenario {
        // The scenario brings its classes, scaling, VM sizes, poll and phases; the cluster
        // flags still tune the cluster.
        let s = scenario(name)?;
        let cluster = match flags.model(&[])? {
            Some(model) => model.options,
            None => ClusterOptions::preset("mro-eks")?,
        };
        let scenario_options = s.options(&cluster, args.seed);
        options.poll_interval = scenario_options.poll_interval;
        options.cluster = scenario_options.cluster;
        options.phases = scenario_options.phases;
        config_policy = Some(PolicyChoice::Provisioner(s.scalings));
        config_name = Some(format!("scenario {name}"));
    } else {
        options.cluster = flags.model(&specs)?;
    }
    if let Some(cuts) = &args.phases {
        options.phases = parse_cuts(cuts)?;
    }
    if let Some(poll) = args.poll_interval {
        options.poll_interval = poll;
    }
    let cluster_template = match &options.cluster {
        Some(model) => model.clone(),
        None => cluster_template(&specs)?,
    };
    let advised = match &args.advised {
        Some(path) => {
            let as_config = Args {
                config: Some(path.clone()),
                advised: None,
                ..args.clone()
            };
            Some(Box::new(setup(&as_config)?))
        }
        None => None,
    };
    Ok(Setup {
        options,
        params,
        policy_name: args.policy.clone(),
        config_policy,
        config_name,
        cluster_template,
        advised,
    })
}

/// The cluster model for a run that started without one: the `mro-eks` preset, each class's
/// VM size and image from its `--config` spec, and without a config the size the controller
/// gives a class that sets no spec (`default_spec`: 1 CPU, 2 GiB), since a trace's classes
/// have none. A config spec without a usable size leaves its class unsized, so the run that
/// turns the model on names it (as `--nodes` would), instead of this setup failing.
fn cluster_template(
    specs: &[(ResourceClass, serde_json::Value)],
) -> Result<ClusterModel, SimError> {
    let mut model = ClusterModel::new(ClusterOptions::preset("mro-eks")?);
    for (class, spec) in specs {
        if let Ok(size) = vm_size_from_spec(class.as_str(), spec) {
            model.sizes.insert(class.clone(), size);
        }
        if let Some(image) = image_of_spec(spec) {
            model.images.insert(class.clone(), image);
        }
    }
    if specs.is_empty() {
        model.default_size = vm_size_from_spec("default", &default_spec()).ok();
    }
    Ok(model)
}

/// A provisioner config, validated as the controller would (tokens not required).
fn load_config(path: &Path) -> Result<provisioner_core::Config, CliError> {
    let text = read(path)?;
    let name = path.display().to_string();
    let sources = ConfigSources {
        config: Some(Source {
            name: &name,
            text: &text,
        }),
        require_tokens: false,
        ..ConfigSources::default()
    };
    Ok(load(&sources).map_err(SimError::from)?)
}

fn read(path: &Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The trace the flags name, or the synthetic workload; and a line saying which.
pub fn trace(args: &Args) -> Result<(Trace, String), CliError> {
    if let Some(name) = &args.scenario {
        return Ok((
            scenario(name)?.trace,
            format!("scenario {name} (CircleCI's published MRO benchmark)"),
        ));
    }
    let (trace, what) = match &args.trace {
        Some(path) => (Trace::load_csv(path)?, format!("trace {}", path.display())),
        None => {
            // With a config, the synthetic jobs spread over the classes it defines.
            let classes = match &args.config {
                Some(path) => load_config(path)?
                    .classes
                    .into_iter()
                    .map(|c| c.name)
                    .collect(),
                None => SyntheticOptions::default().classes,
            };
            let opts = SyntheticOptions {
                jobs_per_hour: args.rate,
                days: args.days,
                seed: args.seed,
                classes,
                ..SyntheticOptions::default()
            };
            (
                Trace::synthetic(&opts)?,
                format!(
                    "synthetic workload: {} jobs/hour for {} days, seed {}",
                    args.rate, args.days, args.seed
                ),
            )
        }
    };
    let trace = match &args.class_as {
        Some(name) => trace.with_single_class(
            ResourceClass::parse(name).map_err(|e| SimError::Option(format!("--class-as: {e}")))?,
        ),
        None => trace,
    };
    Ok((trace, what))
}

/// Run the setup's policy on the trace; the report names the policy by the setup's label (the
/// engine knows only its kind: "seed", the rule of CircleCI's Runner Provisioner preview 0.1.0,
/// and "arc" both run as "provisioner").
pub fn simulate(trace: &Trace, setup: &Setup) -> Result<SimReport, SimError> {
    let mut report = run(trace, &setup.options, &setup.policy()?)?;
    report.policy = setup.label();
    Ok(report)
}

/// The sampling interval that gives about `TARGET_SAMPLES` samples over the trace (whole
/// minutes, at least one).
pub fn sample_every(trace: &Trace) -> Duration {
    let span_ms = trace
        .jobs
        .iter()
        .map(|j| j.arrival_ms + j.duration_ms)
        .max()
        .unwrap_or(0);
    let minutes = (span_ms / TARGET_SAMPLES / 60_000).max(1);
    Duration::from_secs(u64::try_from(minutes * 60).unwrap_or(60))
}
