//! The reference policies a user compares against, built from one set of knobs.

use provisioner_core::forecast::Predictive;
use provisioner_core::{Config, Duration, Healing, Replicas, Scaling};

use crate::SimError;
use crate::options::{PolicyChoice, Scalings};

/// The names `PolicyChoice::reference` accepts.
pub const POLICY_NAMES: [&str; 7] = [
    "provisioner",
    "predictive",
    "seed",
    "circleci-0.1.2",
    "arc",
    "gitlab",
    "oracle",
];

/// The scaling knobs, named as in the provisioner's config.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyParams {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub idle_timeout: Option<Duration>,
    pub headroom: u32,
    pub max_surge: u32,
    pub scale_down_delay: Duration,
    /// Idle VMs on top of demand (ARC's `minRunners`, GitLab's `idle_count`).
    pub idle_buffer: u32,
    /// GitLab's `scale_factor`: idle VMs as a share of busy ones.
    pub scale_factor: f64,
    /// The predictive warm pool (`--service-level` turns it on).
    pub predictive: Option<Predictive>,
}

impl Default for PolicyParams {
    fn default() -> Self {
        let s = Scaling::default();
        Self {
            min_replicas: s.min_replicas.get(),
            max_replicas: s.max_replicas.get(),
            idle_timeout: None,
            headroom: 0,
            max_surge: 0,
            scale_down_delay: Duration::ZERO,
            idle_buffer: 0,
            scale_factor: 0.0,
            predictive: None,
        }
    }
}

impl PolicyParams {
    fn validate(&self) -> Result<(), SimError> {
        for (name, v) in [
            ("min-replicas", self.min_replicas),
            ("max-replicas", self.max_replicas),
            ("headroom", self.headroom),
            ("max-surge", self.max_surge),
            ("idle-buffer", self.idle_buffer),
        ] {
            Replicas::parse(i64::from(v)).map_err(|e| SimError::Option(format!("{name}: {e}")))?;
        }
        if self.min_replicas > self.max_replicas {
            return Err(SimError::Option(format!(
                "min-replicas {} is above max-replicas {}",
                self.min_replicas, self.max_replicas
            )));
        }
        if let Some(idle) = self.idle_timeout
            && idle < self.scale_down_delay
        {
            return Err(SimError::Option(format!(
                "idle-timeout {idle} must be at least scale-down-delay {}",
                self.scale_down_delay
            )));
        }
        if !(self.scale_factor.is_finite() && self.scale_factor >= 0.0) {
            return Err(SimError::Option(format!(
                "scale-factor {} must be a non-negative number",
                self.scale_factor
            )));
        }
        Ok(())
    }

    /// Every control as given: the provisioner as a user would configure it.
    pub fn scaling(&self) -> Scaling {
        Scaling {
            min_replicas: Replicas::new(self.min_replicas),
            max_replicas: Replicas::new(self.max_replicas),
            headroom: Replicas::new(self.headroom),
            max_surge: Replicas::new(self.max_surge),
            scale_down_delay: self.scale_down_delay,
            idle_timeout: self.idle_timeout,
            idle_buffer: Replicas::new(self.idle_buffer),
            predictive: self.predictive,
            schedules: Vec::new(),
            healing: Healing::default(),
        }
    }
}

impl PolicyChoice {
    /// A named policy from the knobs: `provisioner` (every control), `predictive` (the
    /// predictive warm pool alone: no floor, its service level or 90 %), `seed` (0.1.0: min, max,
    /// idleTimeout), `circleci-0.1.2` (adds headroom, maxSurge, scaleDownDelay), `arc` (idle
    /// buffer over demand, no floor), `gitlab` (idle_count = idle buffer, scale_factor),
    /// `oracle` (knows arrivals; max only).
    pub fn reference(name: &str, p: &PolicyParams) -> Result<Self, SimError> {
        p.validate()?;
        let all = p.scaling();
        let seed = Scaling {
            headroom: Replicas::ZERO,
            max_surge: Replicas::ZERO,
            scale_down_delay: Duration::ZERO,
            idle_buffer: Replicas::ZERO,
            predictive: None,
            ..all.clone()
        };
        Ok(match name {
            "provisioner" => Self::Provisioner(Scalings::one(all)),
            "predictive" => Self::Provisioner(Scalings::one(Scaling {
                min_replicas: Replicas::ZERO,
                predictive: Some(p.predictive.unwrap_or_default()),
                ..seed.clone()
            })),
            "seed" => Self::Provisioner(Scalings::one(seed)),
            "circleci-0.1.2" => Self::Provisioner(Scalings::one(Scaling {
                idle_buffer: Replicas::ZERO,
                predictive: None,
                ..all
            })),
            "arc" => Self::Provisioner(Scalings::one(Scaling {
                min_replicas: Replicas::ZERO,
                idle_buffer: Replicas::new(p.idle_buffer),
                ..seed
            })),
            "gitlab" => Self::Gitlab {
                idle_count: p.idle_buffer,
                scale_factor: p.scale_factor,
                max_replicas: p.max_replicas,
                idle_timeout: p.idle_timeout,
            },
            "oracle" => Self::Oracle {
                max_replicas: p.max_replicas,
            },
            other => {
                return Err(SimError::Option(format!(
                    "unknown policy {other:?} (one of: {})",
                    POLICY_NAMES.join(", ")
                )));
            }
        })
    }

    /// Exactly what a provisioner config deploys, class by class.
    pub fn from_config(config: &Config) -> Self {
        Self::Provisioner(Scalings {
            default: None,
            classes: config
                .classes
                .iter()
                .map(|c| (c.name.clone(), c.scaling.clone()))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_policies_pick_their_controls() {
        let p = PolicyParams {
            headroom: 2,
            max_surge: 3,
            scale_down_delay: Duration::from_secs(60),
            idle_buffer: 4,
            idle_timeout: Some(Duration::from_secs(600)),
            ..PolicyParams::default()
        };
        let scaling = |name: &str| match PolicyChoice::reference(name, &p).expect(name) {
            PolicyChoice::Provisioner(s) => s.default.expect("default scaling"),
            other => panic!("{name} gave {other:?}"),
        };
        let seed = scaling("seed");
        assert_eq!(
            (
                seed.headroom.get(),
                seed.max_surge.get(),
                seed.idle_buffer.get(),
                seed.min_replicas.get()
            ),
            (0, 0, 0, 3)
        );
        assert_eq!(seed.idle_timeout, Some(Duration::from_secs(600)));
        let c012 = scaling("circleci-0.1.2");
        assert_eq!(
            (
                c012.headroom.get(),
                c012.max_surge.get(),
                c012.scale_down_delay,
                c012.idle_buffer.get()
            ),
            (2, 3, Duration::from_secs(60), 0)
        );
        let arc = scaling("arc");
        assert_eq!(
            (
                arc.min_replicas.get(),
                arc.idle_buffer.get(),
                arc.headroom.get()
            ),
            (0, 4, 0)
        );
        assert!(matches!(
            PolicyChoice::reference("gitlab", &p),
            Ok(PolicyChoice::Gitlab {
                idle_count: 4,
                max_replicas: 10,
                ..
            })
        ));
        assert!(matches!(
            PolicyChoice::reference("oracle", &p),
            Ok(PolicyChoice::Oracle { max_replicas: 10 })
        ));
    }

    #[test]
    fn bad_knobs_are_named() {
        let err =
            PolicyChoice::reference("karpenter", &PolicyParams::default()).expect_err("unknown");
        assert!(err.to_string().contains("karpenter"));
        let err = PolicyChoice::reference(
            "seed",
            &PolicyParams {
                min_replicas: 11,
                ..PolicyParams::default()
            },
        )
        .expect_err("min>max");
        assert!(err.to_string().contains("min-replicas 11"));
        let err = PolicyChoice::reference(
            "seed",
            &PolicyParams {
                idle_timeout: Some(Duration::from_secs(1)),
                scale_down_delay: Duration::from_secs(60),
                ..PolicyParams::default()
            },
        )
        .expect_err("idle");
        assert!(err.to_string().contains("idle-timeout"));
    }
}
