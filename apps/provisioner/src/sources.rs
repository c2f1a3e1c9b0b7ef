//! Reading the configuration files. Both documented shapes are accepted: preview 0.1.0's Secret
//! (`config.yaml` holding class, token and spec, with `circle-token` beside it or in
//! `CIRCLE_TOKEN`) and 0.1.2's mounted ConfigMap `config.yaml` plus Secret `secrets.yaml`.
//!
//! The API token's precedence: a `circle-token` file (beside `secrets.yaml`, then beside
//! `config.yaml`), then `CIRCLE_TOKEN`, then `circleToken` in the files. The mounted file wins
//! because it is the one the kubelet updates on a rotation; the variable, read once at start,
//! stays for local runs without the file.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use provisioner_core::config::{ConfigSources, Source};
use provisioner_core::{Config, Duration, Secret};

use crate::Error;

/// Where the configuration lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigPaths {
    pub config: PathBuf,
    pub secrets: PathBuf,
    /// A secrets file named on the command line must exist; the default one may be absent.
    pub secrets_required: bool,
}

impl ConfigPaths {
    pub fn new(config: PathBuf, secrets: Option<PathBuf>, default_secrets: &str) -> Self {
        match secrets {
            Some(secrets) => Self {
                config,
                secrets,
                secrets_required: true,
            },
            None => Self {
                config,
                secrets: PathBuf::from(default_secrets),
                secrets_required: false,
            },
        }
    }

    /// Where a `circle-token` file may be: 0.1.2's `existingSecret` mounts it beside
    /// `secrets.yaml`; 0.1.0's Secret holds it beside its `config.yaml`.
    pub fn token_files(&self) -> [PathBuf; 2] {
        let beside = |p: &Path| {
            p.parent()
                .unwrap_or_else(|| Path::new("."))
                .join("circle-token")
        };
        [beside(&self.secrets), beside(&self.config)]
    }

    /// Directories to watch for changes (Kubernetes swaps a `..data` symlink inside them).
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = [&self.config, &self.secrets]
            .iter()
            .map(|p| {
                p.parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
            })
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p
                }
            })
            .collect();
        dirs.dedup();
        dirs
    }

    /// Read every file as it is now. `env_token` is `CIRCLE_TOKEN`, read once at start, used
    /// only when no `circle-token` file holds a token.
    pub fn read(&self, env_token: Option<&Secret>) -> Result<RawSources, Error> {
        let config = read_optional(&self.config)?.ok_or_else(|| Error::Read {
            path: self.config.display().to_string(),
            source: std::io::Error::new(
                ErrorKind::NotFound,
                "no such file (set --config or PROVISIONER_CONFIG)",
            ),
        })?;
        let secrets = match read_optional(&self.secrets)? {
            Some(text) => Some(text),
            None if self.secrets_required => {
                return Err(Error::Read {
                    path: self.secrets.display().to_string(),
                    source: std::io::Error::new(ErrorKind::NotFound, "no such file"),
                });
            }
            None => None,
        };
        let mut token = None;
        for file in self.token_files() {
            token = read_optional(&file)?
                .map(|t| Secret::new(t.trim()))
                .filter(|t| !t.is_empty());
            if token.is_some() {
                break;
            }
        }
        let token = token.or_else(|| env_token.cloned());
        Ok(RawSources {
            config_name: self.config.display().to_string(),
            config,
            secrets_name: self.secrets.display().to_string(),
            secrets,
            token,
        })
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// The texts read, before parsing.
#[derive(Clone)]
pub struct RawSources {
    config_name: String,
    config: String,
    secrets_name: String,
    secrets: Option<String>,
    token: Option<Secret>,
}

impl std::fmt::Debug for RawSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSources")
            .field("config", &self.config_name)
            .field(
                "secrets",
                &self.secrets.as_ref().map(|_| &self.secrets_name),
            )
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl RawSources {
    /// Changes when any input changes; compared to decide whether to reload.
    pub fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.config.hash(&mut h);
        self.secrets.hash(&mut h);
        self.token.as_ref().map(Secret::expose).hash(&mut h);
        h.finish()
    }

    pub fn load(&self, require_tokens: bool) -> Result<Config, Error> {
        let sources = ConfigSources {
            config: Some(Source {
                name: &self.config_name,
                text: &self.config,
            }),
            secrets: self.secrets.as_deref().map(|text| Source {
                name: &self.secrets_name,
                text,
            }),
            circle_token: self.token.as_ref(),
            require_tokens,
        };
        Ok(provisioner_core::config::load(&sources)?)
    }
}

/// Command-line settings that win over the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub api_addr: Option<String>,
    pub poll_interval: Option<Duration>,
}

impl Overrides {
    pub fn apply(&self, mut config: Config) -> Config {
        if let Some(addr) = &self.api_addr {
            config.circleci_api_addr.clone_from(addr);
        }
        if let Some(interval) = self.poll_interval {
            config.poll_interval = interval;
        }
        config
    }
}

/// `CIRCLE_TOKEN`, when set and not blank.
pub fn env_token() -> Option<Secret> {
    std::env::var("CIRCLE_TOKEN")
        .ok()
        .map(|t| Secret::new(t.trim()))
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_secrets_may_be_missing_but_a_named_one_may_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, "x: 1").expect("write config");
        let missing = dir.path().join("nope/secrets.yaml");
        let default = ConfigPaths::new(config.clone(), None, &missing.display().to_string());
        assert!(default.read(None).is_ok());
        let named = ConfigPaths::new(config, Some(missing.clone()), "unused");
        let err = named.read(None).expect_err("named secrets file is missing");
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_token_file_wins_over_the_env_var_which_stays_for_runs_without_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, "x: 1").expect("write config");
        let paths = ConfigPaths::new(config, Some(dir.path().join("secrets.yaml")), "unused");
        std::fs::write(&paths.secrets, "y: 2").expect("write secrets");
        let env = Secret::new("env-token");
        let token = |raw: &RawSources| raw.token.as_ref().map(|t| t.expose().to_owned());

        // No file: the variable (a local run).
        let from_env = paths.read(Some(&env)).expect("read");
        assert_eq!(token(&from_env).as_deref(), Some("env-token"));
        // A blank file does not hide the variable.
        std::fs::write(dir.path().join("circle-token"), " \n").expect("write token");
        assert_eq!(
            token(&paths.read(Some(&env)).expect("read")).as_deref(),
            Some("env-token")
        );
        // The mounted file wins, trimmed, whether the variable is set or not.
        std::fs::write(dir.path().join("circle-token"), "file-token\n").expect("write token");
        let from_file = paths.read(Some(&env)).expect("read");
        assert_eq!(token(&from_file).as_deref(), Some("file-token"));
        assert_eq!(
            token(&paths.read(None).expect("read")).as_deref(),
            Some("file-token")
        );
        assert_ne!(from_file.fingerprint(), from_env.fingerprint());
        // A rotated file is a new fingerprint: the reload picks it up.
        std::fs::write(dir.path().join("circle-token"), "rotated-token").expect("write token");
        let rotated = paths.read(Some(&env)).expect("read");
        assert_eq!(token(&rotated).as_deref(), Some("rotated-token"));
        assert_ne!(rotated.fingerprint(), from_file.fingerprint());
        for raw in [&from_env, &from_file, &rotated] {
            let debug = format!("{raw:?}");
            for secret in ["env-token", "file-token", "rotated-token"] {
                assert!(!debug.contains(secret), "{debug}");
            }
        }
    }

    #[test]
    fn missing_config_names_the_path() {
        let paths = ConfigPaths::new(
            PathBuf::from("/nonexistent/config.yaml"),
            None,
            "/nonexistent/s.yaml",
        );
        let err = paths.read(None).expect_err("missing");
        assert!(
            err.to_string().contains("/nonexistent/config.yaml"),
            "{err}"
        );
    }
}
