//! Parsing and validation of configuration text.
//!
//! Shapes read from the config file:
//! - CircleCI's Runner Provisioner 0.1.0 preview docs' `config.yaml`: `resourceClass:` keyed by class name
//!   (`resourceClass: {"my-org/my-runner": {token, idleTimeout, ...}}`), or the single-class form
//!   `resourceClass: {name, token, minReplicas, ...}` (told apart by its `name` key);
//! - the 0.1.2 preview's `config.yaml`: `circleciAPIAddr`, `pollInterval`, `logLevel`,
//!   `resourceClassDefaults` and `resourceClasses` keyed by class name;
//! - a Helm values file: when the root holds a `provisioner:` mapping, settings are read from it
//!   and the chart's other top-level keys are ignored (except `logLevel`).
//!
//! The secrets file (0.1.2's `secrets.yaml`) holds `circleToken` and
//! `resourceClasses.<name>.{token, userData}`.
//!
//! Merge rule: a class's settings come from its entry first, then from `resourceClassDefaults`.
//! Mappings (`scaling`, `runner`) merge key by key, so an entry's `scaling.minReplicas` and the
//! defaults' `scaling.maxReplicas` both apply; lists (`schedules`, `emptyDiskMounts`,
//! `commandPrefix`) and `spec` are taken whole from whichever sets them. Null and `""` mean
//! unset everywhere (0.1.0's documented values use `""` for "not set"), so they are filled from defaults.

mod class;
mod errors;
mod keys;
mod merge;
mod read;
mod shapes;
mod suggest;
mod yaml;

pub use errors::{ConfigError, FieldError};
use yaml::Node;

use super::{Config, ConfigSources, DEFAULT_API_ADDR, DEFAULT_POLL_INTERVAL, Source};
use crate::domain::Secret;
use errors::Errors;
use merge::resolve_classes;
use read::{api_addr, join, log_level, pick_token, poll_interval};
use shapes::{Doc, Kind, read_doc};

/// Reads and validates every source; all problems are reported together.
pub fn load(sources: &ConfigSources<'_>) -> Result<Config, ConfigError> {
    let mut errs = Errors::new(
        sources
            .circle_token
            .map(|t| t.expose().to_owned())
            .into_iter()
            .collect(),
        [sources.config, sources.secrets]
            .into_iter()
            .flatten()
            .map(|s| s.name.to_owned())
            .collect(),
    );
    if sources.config.is_none() && sources.secrets.is_none() {
        errs.push(FieldError {
            file: String::new(),
            path: String::new(),
            message: "no configuration was given (neither a config file nor a secrets file)"
                .to_owned(),
            line: None,
            column: None,
        });
        return Err(errs.finish());
    }
    let config_root = sources.config.and_then(|s| parse_source(s, &mut errs));
    let secrets_root = sources.secrets.and_then(|s| parse_source(s, &mut errs));
    if !errs.list.is_empty() {
        return Err(errs.finish());
    }
    let config_doc = sources.config.map(|s| {
        read_doc(
            s.name,
            config_root.as_ref().and_then(Option::as_ref),
            Kind::Config,
            &mut errs,
        )
    });
    let secrets_doc = sources.secrets.map(|s| {
        read_doc(
            s.name,
            secrets_root.as_ref().and_then(Option::as_ref),
            Kind::Secrets,
            &mut errs,
        )
    });

    let circleci_api_addr = config_doc
        .as_ref()
        .and_then(|d| d.api_addr.as_ref())
        .and_then(|f| api_addr(f, &mut errs))
        .unwrap_or_else(|| DEFAULT_API_ADDR.to_owned());
    let poll_interval = config_doc
        .as_ref()
        .and_then(|d| d.poll_interval.as_ref())
        .and_then(|f| poll_interval(f, &mut errs))
        .unwrap_or(DEFAULT_POLL_INTERVAL);
    let log_level = config_doc
        .as_ref()
        .and_then(|d| d.log_level.as_ref())
        .and_then(|f| log_level(f, &mut errs));
    let circle_token = resolve_circle_token(
        sources,
        config_doc.as_ref(),
        secrets_doc.as_ref(),
        &mut errs,
    );

    let sidecar = config_doc
        .as_ref()
        .and_then(|d| d.sidecar.as_ref())
        .map_or(Some(true), |f| read::sidecar(f, &mut errs));
    let runner_bundle = config_doc
        .as_ref()
        .and_then(|d| d.runner_bundle.as_ref())
        .map_or(Ok(None), |f| read::runner_bundle(f, &mut errs))
        .unwrap_or(None);

    let classes = resolve_classes(
        sources,
        config_doc.as_ref(),
        secrets_doc.as_ref(),
        // An unreadable sidecar setting is already an error; do not add grantSudo's to it.
        sidecar.unwrap_or(true),
        &mut errs,
    );
    if !errs.list.is_empty() {
        return Err(errs.finish());
    }
    Ok(Config {
        circleci_api_addr,
        poll_interval,
        log_level,
        circle_token,
        classes,
        sidecar: sidecar.unwrap_or(true),
        runner_bundle,
    })
}

/// Parses one file; `Some(None)` for an empty document, `None` after a syntax error.
fn parse_source(source: Source<'_>, errs: &mut Errors) -> Option<Option<Node>> {
    match yaml::parse(source.text) {
        Ok(root) => Some(root),
        Err(e) => {
            errs.push(FieldError {
                file: source.name.to_owned(),
                path: String::new(),
                message: e.message,
                line: e.line,
                column: e.column,
            });
            None
        }
    }
}

fn resolve_circle_token(
    sources: &ConfigSources<'_>,
    config: Option<&Doc<'_>>,
    secrets: Option<&Doc<'_>>,
    errs: &mut Errors,
) -> Option<Secret> {
    let fields = [
        config.and_then(|d| d.circle_token.clone()),
        secrets.and_then(|d| d.circle_token.clone()),
    ];
    let (from_files, missing) = pick_token(&fields, "circleToken", errs);
    if let Some(token) = sources.circle_token.filter(|t| !t.is_empty()) {
        return Some(token.clone());
    }
    if missing && sources.require_tokens {
        let (file, path) = match (secrets, config) {
            (Some(doc), _) => (doc.file, "circleToken".to_owned()),
            (None, Some(doc)) => (doc.file, join(&doc.prefix, "circleToken")),
            (None, None) => ("", "circleToken".to_owned()),
        };
        errs.at(
            file,
            &path,
            None,
            "the CircleCI API token is required (for polling tasks): set circleToken or the circle-token Secret key. CircleCI's newer task-count endpoint for resource-class tokens (/api/v3/runner/scale) is not publicly documented, so the provisioner polls /tasks and /tasks/running with this token",
        );
    }
    from_files
}
