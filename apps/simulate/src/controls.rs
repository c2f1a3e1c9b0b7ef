//! The policy controls, named as in the provisioner's config, and the cluster model's: which a
//! setup reads, and a setup's values as the TUI and the report show them.

use provisioner_core::forecast::Predictive;
use provisioner_core::{Duration, Scaling};
use provisioner_sim::{BootTime, PolicyChoice};

use crate::setup::Setup;

/// The policy controls shown and tuned, named as in the provisioner's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Policy,
    MinReplicas,
    MaxReplicas,
    IdleTimeout,
    Headroom,
    MaxSurge,
    ScaleDownDelay,
    IdleBuffer,
    ServiceLevel,
    ScaleFactor,
    BootMin,
    BootMax,
    /// The cluster model: off, or a preset (`--preset`).
    Cluster,
    /// The cluster's node range (`--nodes MIN..MAX`; equal bounds: a fixed count).
    NodesMin,
    NodesMax,
}

impl Control {
    pub const ALL: [Self; 15] = [
        Self::Policy,
        Self::MinReplicas,
        Self::MaxReplicas,
        Self::IdleTimeout,
        Self::Headroom,
        Self::MaxSurge,
        Self::ScaleDownDelay,
        Self::IdleBuffer,
        Self::ServiceLevel,
        Self::ScaleFactor,
        Self::BootMin,
        Self::BootMax,
        Self::Cluster,
        Self::NodesMin,
        Self::NodesMax,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::MinReplicas => "minReplicas",
            Self::MaxReplicas => "maxReplicas",
            Self::IdleTimeout => "idleTimeout",
            Self::Headroom => "headroom",
            Self::MaxSurge => "maxSurge",
            Self::ScaleDownDelay => "scaleDownDelay",
            Self::IdleBuffer => "idleBuffer",
            Self::ServiceLevel => "serviceLevel",
            Self::ScaleFactor => "scaleFactor",
            Self::BootMin => "boot time min",
            Self::BootMax => "boot time max",
            Self::Cluster => "cluster",
            Self::NodesMin => "nodes min",
            Self::NodesMax => "nodes max",
        }
    }

    /// Whether the setup's run reads this control (others are shown dimmed): the policy's
    /// controls by the policy (a `--config` reads them all), the node range with the cluster
    /// model on.
    pub fn applies(self, setup: &Setup) -> bool {
        match self {
            Self::Cluster => true,
            Self::NodesMin | Self::NodesMax => setup.options.cluster.is_some(),
            _ => setup.config_policy.is_some() || self.applies_to(shown_policy_name(setup)),
        }
    }

    /// Whether the named policy reads this control.
    fn applies_to(self, policy: &str) -> bool {
        use Control::*;
        match self {
            Policy | BootMin | BootMax | MaxReplicas | Cluster | NodesMin | NodesMax => true,
            MinReplicas => matches!(policy, "provisioner" | "seed" | "circleci-0.1.2"),
            IdleTimeout => policy != "oracle",
            Headroom | MaxSurge | ScaleDownDelay => {
                matches!(policy, "provisioner" | "circleci-0.1.2")
            }
            IdleBuffer => matches!(policy, "provisioner" | "arc" | "gitlab"),
            ServiceLevel => matches!(policy, "provisioner" | "predictive"),
            ScaleFactor => policy == "gitlab",
        }
    }

    /// Controls that belong to the policy (a `--config` fixes these).
    pub fn is_policy(self) -> bool {
        !matches!(
            self,
            Self::BootMin | Self::BootMax | Self::Cluster | Self::NodesMin | Self::NodesMax
        )
    }
}

/// The policy's name as the controls and the compare view show it.
pub fn shown_policy_name(setup: &Setup) -> &str {
    if setup.config_policy.is_some() {
        "config"
    } else {
        &setup.policy_name
    }
}

/// The scaling of a `--config`'s first class: the one the controls show.
pub fn config_scaling(setup: &Setup) -> Option<&Scaling> {
    match &setup.config_policy {
        Some(PolicyChoice::Provisioner(s)) => s.classes.values().next().or(s.default.as_ref()),
        _ => None,
    }
}

/// The boot-time distribution's bounds.
pub fn boot_range(boot: &BootTime) -> (Duration, Duration) {
    match boot {
        BootTime::Uniform { min, max } => (*min, *max),
        BootTime::Fixed(d) => (*d, *d),
        BootTime::Empirical(samples) => (
            samples.iter().min().copied().unwrap_or_default(),
            samples.iter().max().copied().unwrap_or_default(),
        ),
    }
}

/// A setup's control values, in `Control::ALL` order, as the TUI and the report show them.
pub fn values(setup: &Setup) -> Vec<String> {
    let p = &setup.params;
    let policy_scaling = config_scaling(setup);
    let (boot_min, boot_max) = boot_range(&setup.options.boot_time);
    Control::ALL
        .iter()
        .map(|c| {
            if let (Some(s), true) = (policy_scaling, c.is_policy()) {
                return match c {
                    Control::Policy => "config".to_owned(),
                    Control::MinReplicas => s.min_replicas.to_string(),
                    Control::MaxReplicas => s.max_replicas.to_string(),
                    Control::IdleTimeout => idle(s.idle_timeout),
                    Control::Headroom => s.headroom.to_string(),
                    Control::MaxSurge => s.max_surge.to_string(),
                    Control::ScaleDownDelay => s.scale_down_delay.to_string(),
                    Control::IdleBuffer => s.idle_buffer.to_string(),
                    Control::ServiceLevel => level(s.predictive),
                    _ => "-".to_owned(),
                };
            }
            match c {
                Control::Policy => setup.policy_name.clone(),
                Control::MinReplicas => p.min_replicas.to_string(),
                Control::MaxReplicas => p.max_replicas.to_string(),
                Control::IdleTimeout => idle(p.idle_timeout),
                Control::Headroom => p.headroom.to_string(),
                Control::MaxSurge => p.max_surge.to_string(),
                Control::ScaleDownDelay => p.scale_down_delay.to_string(),
                Control::IdleBuffer => p.idle_buffer.to_string(),
                Control::ServiceLevel => level(p.predictive),
                Control::ScaleFactor => format!("{:.1}", p.scale_factor),
                Control::BootMin => boot_min.to_string(),
                Control::BootMax => boot_max.to_string(),
                Control::Cluster => cluster_name(setup).to_owned(),
                Control::NodesMin | Control::NodesMax => match &setup.options.cluster {
                    Some(model) if *c == Control::NodesMin => model.options.nodes.min.to_string(),
                    Some(model) => model.options.nodes.max.to_string(),
                    None => "-".to_owned(),
                },
            }
        })
        .collect()
}

/// The cluster control's value: "off", the preset the cluster is, or "custom" (knobs changed
/// on the command line).
pub fn cluster_name(setup: &Setup) -> &'static str {
    match &setup.options.cluster {
        None => "off",
        Some(model) => model.options.preset_name().unwrap_or("custom"),
    }
}

fn level(p: Option<Predictive>) -> String {
    p.map_or_else(|| "off".to_owned(), |p| p.service_level.to_string())
}

fn idle(d: Option<Duration>) -> String {
    d.map_or_else(|| "never".to_owned(), |d| d.to_string())
}
