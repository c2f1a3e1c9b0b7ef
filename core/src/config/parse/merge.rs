//! Class merging: each class's entries from both files and the `resourceClassDefaults` of both,
//! layered by the merge rule (see the parent module), into one `ClassConfig`.

use std::collections::BTreeMap;

use super::super::{ClassConfig, ConfigSources, default_spec};
use super::class::{empty_disk_mounts, healing, runner, scaling};
use super::errors::Errors;
use super::read::{Field, MapRef, describe, first, join, pick_secret, pick_token, to_json};
use super::shapes::{Doc, Entry, Kind};
use super::yaml::Value;
use crate::domain::ResourceClass;
use crate::policy::Scaling;

/// `sidecar`: whether the token proxy runs (`runner.grantSudo` needs it).
pub(super) fn resolve_classes(
    sources: &ConfigSources<'_>,
    config: Option<&Doc<'_>>,
    secrets: Option<&Doc<'_>>,
    sidecar: bool,
    errs: &mut Errors,
) -> Vec<ClassConfig> {
    let mut by_name: BTreeMap<ResourceClass, (Option<&Entry<'_>>, Option<&Entry<'_>>)> =
        BTreeMap::new();
    for doc in config.iter().chain(secrets.iter()) {
        for entry in &doc.classes {
            let slot = by_name.entry(entry.name.clone()).or_default();
            let place = if doc.kind == Kind::Config {
                &mut slot.0
            } else {
                &mut slot.1
            };
            match place {
                Some(first) => errs.key(
                    doc.file,
                    &entry.path,
                    entry.key,
                    format!(
                        "resource class {:?} is configured twice (also at {})",
                        entry.name.as_str(),
                        first.path
                    ),
                ),
                None => *place = Some(entry),
            }
        }
    }
    if by_name.is_empty() {
        report_no_classes(config, secrets, errs);
        return Vec::new();
    }
    let config_defaults = config.and_then(|d| d.defaults.as_ref());
    let secret_defaults = secrets.and_then(|d| d.defaults.as_ref());
    let mut classes = Vec::new();
    for (name, (config_entry, secrets_entry)) in by_name {
        let token_at = match (secrets, config_entry) {
            (Some(doc), _) => (
                doc.file,
                secrets_entry.map_or_else(
                    || class_path("resourceClasses", &name, "token"),
                    |e| join(&e.path, "token"),
                ),
            ),
            (None, Some(entry)) => (entry.map.file, join(&entry.path, "token")),
            (None, None) => ("", class_path("resourceClasses", &name, "token")),
        };
        let layers = ClassLayers {
            config: config_entry
                .map(|e| &e.map)
                .into_iter()
                .chain(config_defaults)
                .collect(),
            secret_entries: [config_entry, secrets_entry]
                .into_iter()
                .flatten()
                .map(|e| &e.map)
                .collect(),
            secret_defaults: [config_defaults, secret_defaults]
                .into_iter()
                .flatten()
                .collect(),
        };
        if let Some(class) = class_config(
            name,
            &layers,
            sources.require_tokens,
            sidecar,
            token_at,
            errs,
        ) {
            classes.push(class);
        }
    }
    classes
}

pub(super) fn report_no_classes(
    config: Option<&Doc<'_>>,
    secrets: Option<&Doc<'_>>,
    errs: &mut Errors,
) {
    if config.iter().chain(secrets.iter()).any(|d| d.class_refused) {
        return;
    }
    let Some(doc) = config.or(secrets) else {
        return;
    };
    let mut message =
        "no resource classes are configured: add at least one under resourceClasses (\"<namespace>/<name>\": {...})"
            .to_owned();
    if doc.existing_secret {
        message.push_str(
            "; this values file names an existingSecret, so the classes live in that Secret's config.yaml: read that file instead",
        );
    }
    match &doc.class_map {
        Some(field) => errs.field(field, message),
        None => errs.at(
            doc.file,
            &join(&doc.prefix, "resourceClasses"),
            None,
            message,
        ),
    }
}

pub(super) fn class_path(map: &str, name: &ResourceClass, field: &str) -> String {
    join(&join(map, name.as_str()), field)
}

/// Where a class's settings come from, highest priority first.
pub(super) struct ClassLayers<'d, 'a> {
    /// Non-secret settings: the config entry, then the config defaults.
    pub(super) config: Vec<&'d MapRef<'a>>,
    /// Entries that may hold the token and userData: config entry, then secrets entry.
    pub(super) secret_entries: Vec<&'d MapRef<'a>>,
    /// Defaults that may hold userData: config defaults, then secrets defaults.
    pub(super) secret_defaults: Vec<&'d MapRef<'a>>,
}

pub(super) fn class_config(
    name: ResourceClass,
    layers: &ClassLayers<'_, '_>,
    require_tokens: bool,
    sidecar: bool,
    token_at: (&str, String),
    errs: &mut Errors,
) -> Option<ClassConfig> {
    let before = errs.list.len();
    let token_fields: Vec<Option<Field<'_>>> = layers
        .secret_entries
        .iter()
        .map(|m| m.get("token"))
        .collect();
    let (token, missing) = pick_token(&token_fields, "token", errs);
    if missing && require_tokens {
        errs.at(
            token_at.0,
            &token_at.1,
            None,
            format!(
                "the resource class token for {:?} is required (the runner token CircleCI issued for this class)",
                name.as_str()
            ),
        );
    }
    let user_data_fields: Vec<Option<Field<'_>>> = layers
        .secret_entries
        .iter()
        .map(|m| m.get("userData"))
        .collect();
    let user_data = pick_secret(&user_data_fields, "userData", errs).or_else(|| {
        let defaults: Vec<Option<Field<'_>>> = layers
            .secret_defaults
            .iter()
            .map(|m| m.get("userData"))
            .collect();
        pick_secret(&defaults, "userData", errs)
    });
    let runner = runner(&layers.config, sidecar, errs);
    let healing = healing(&layers.config, runner.max_run_time, errs);
    let scaling = scaling(&layers.config, &name, errs).map(|s| Scaling { healing, ..s });
    let spec_field = first(&layers.config, "spec");
    let spec = match &spec_field {
        None => default_spec(),
        Some(field) => match &field.node.value {
            Value::Map(_) => to_json(field.node),
            other => {
                errs.field(
                    field,
                    format!(
                        "expected a mapping (a KubeVirt VirtualMachineInstanceSpec), got {}",
                        describe(other)
                    ),
                );
                serde_json::Value::Null
            }
        },
    };
    let empty_disk_mounts = first(&layers.config, "emptyDiskMounts")
        .map(|f| empty_disk_mounts(&f, &spec, errs))
        .unwrap_or_default();
    if errs.list.len() > before {
        return None;
    }
    Some(ClassConfig {
        name,
        token: token.unwrap_or_default(),
        user_data,
        scaling: scaling?,
        runner,
        empty_disk_mounts,
        spec,
    })
}
