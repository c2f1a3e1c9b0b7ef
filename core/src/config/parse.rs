//! Parsing and validation of configuration text.
//!
//! Shapes read from the config file:
//! - the seed's (0.1.0) `config.yaml`: `resourceClass:` keyed by class name
//!   (`resourceClass: {"my-org/my-runner": {token, idleTimeout, ...}}`), or the single-class form
//!   `resourceClass: {name, token, minReplicas, ...}` (told apart by its `name` key);
//! - 0.1.2's `config.yaml`: `circleciAPIAddr`, `pollInterval`, `logLevel`,
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
//! unset everywhere (the seed's values use `""` for "not set"), so they are filled from defaults.

mod suggest;
mod yaml;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

pub use suggest::did_you_mean;
use yaml::{Key, Node, Value};

use super::{
    ClassConfig, Config, ConfigSources, DEFAULT_API_ADDR, DEFAULT_POLL_INTERVAL, EmptyDiskMount,
    FsType, RunnerOptions, Source, default_spec,
};
use crate::cron::Cron;
use crate::domain::{Duration, Replicas, ResourceClass, Secret};
use crate::policy::{Overrides, Scaling, Schedule, Timezone};

/// One problem, located: the file, the field path (`resourceClasses."a/b".scaling.minReplicas`),
/// what is wrong with the value, and the line and column when known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldError {
    pub file: String,
    pub path: String,
    pub message: String,
    pub line: Option<u64>,
    pub column: Option<u64>,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found, not just the first.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration")?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

const TOP_KEYS: &[&str] = &[
    "circleciAPIAddr",
    "pollInterval",
    "logLevel",
    "circleToken",
    "resourceClass",
    "resourceClasses",
    "resourceClassDefaults",
];
/// Chart values under `provisioner:` that configure the chart, not the controller.
const VALUES_ONLY_KEYS: &[&str] = &["namespace", "existingSecret", "existingConfigMap"];
const SECRETS_TOP_KEYS: &[&str] = &["circleToken", "resourceClasses", "resourceClassDefaults"];
const ENTRY_KEYS: &[&str] = &[
    "token",
    "userData",
    "scaling",
    "runner",
    "emptyDiskMounts",
    "spec",
    "minReplicas",
    "maxReplicas",
    "idleTimeout",
];
const SEED_ENTRY_KEYS: &[&str] = &[
    "name",
    "token",
    "userData",
    "scaling",
    "runner",
    "emptyDiskMounts",
    "spec",
    "minReplicas",
    "maxReplicas",
    "idleTimeout",
];
const DEFAULTS_KEYS: &[&str] = &[
    "userData",
    "scaling",
    "runner",
    "emptyDiskMounts",
    "spec",
    "minReplicas",
    "maxReplicas",
    "idleTimeout",
];
const SECRET_ENTRY_KEYS: &[&str] = &["token", "userData"];
const SECRET_DEFAULTS_KEYS: &[&str] = &["userData"];
/// Seed-style scaling keys an entry may carry outside `scaling`.
const FLAT_SCALING_KEYS: &[&str] = &["minReplicas", "maxReplicas", "idleTimeout"];
const SCALING_KEYS: &[&str] = &[
    "minReplicas",
    "maxReplicas",
    "headroom",
    "maxSurge",
    "scaleDownDelay",
    "idleTimeout",
    "idleBuffer",
    "schedules",
];
const SCHEDULE_KEYS: &[&str] = &[
    "name",
    "start",
    "end",
    "timezone",
    "minReplicas",
    "maxReplicas",
    "headroom",
    "maxSurge",
    "scaleDownDelay",
    "idleBuffer",
];
const RUNNER_KEYS: &[&str] = &[
    "workingDirectory",
    "taskAgentDirectory",
    "commandPrefix",
    "useHomeSSHDirForCheckoutKeys",
    "maxRunTime",
    "grantSudo",
];
const MOUNT_KEYS: &[&str] = &["serial", "path", "fsType"];
const LOG_LEVELS: &[&str] = &["trace", "debug", "info", "warn", "warning", "error", "off"];
/// Polling slower than this would leave jobs queued for minutes.
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(600);
/// More problems than this are summarised: nobody reads the ten-thousandth.
const MAX_REPORTED_ERRORS: usize = 100;
/// Secrets shorter than this are not scrubbed from messages: they would match ordinary words.
const MIN_SCRUBBED_SECRET_LEN: usize = 4;

/// Reads and validates every source; all problems are reported together.
pub fn load(sources: &ConfigSources<'_>) -> Result<Config, ConfigError> {
    let mut errs = Errors {
        list: Vec::new(),
        seen: HashSet::new(),
        secrets: sources
            .circle_token
            .map(|t| t.expose().to_owned())
            .into_iter()
            .collect(),
        files: [sources.config, sources.secrets]
            .into_iter()
            .flatten()
            .map(|s| s.name.to_owned())
            .collect(),
    };
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

    let classes = resolve_classes(
        sources,
        config_doc.as_ref(),
        secrets_doc.as_ref(),
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
            "the CircleCI API token is required (for polling tasks): set circleToken or the circle-token Secret key",
        );
    }
    from_files
}

fn resolve_classes(
    sources: &ConfigSources<'_>,
    config: Option<&Doc<'_>>,
    secrets: Option<&Doc<'_>>,
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
        if let Some(class) = class_config(name, &layers, sources.require_tokens, token_at, errs) {
            classes.push(class);
        }
    }
    classes
}

fn report_no_classes(config: Option<&Doc<'_>>, secrets: Option<&Doc<'_>>, errs: &mut Errors) {
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

fn class_path(map: &str, name: &ResourceClass, field: &str) -> String {
    join(&join(map, name.as_str()), field)
}

/// Where a class's settings come from, highest priority first.
struct ClassLayers<'d, 'a> {
    /// Non-secret settings: the config entry, then the config defaults.
    config: Vec<&'d MapRef<'a>>,
    /// Entries that may hold the token and userData: config entry, then secrets entry.
    secret_entries: Vec<&'d MapRef<'a>>,
    /// Defaults that may hold userData: config defaults, then secrets defaults.
    secret_defaults: Vec<&'d MapRef<'a>>,
}

fn class_config(
    name: ResourceClass,
    layers: &ClassLayers<'_, '_>,
    require_tokens: bool,
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
    let scaling = scaling(&layers.config, &name, errs);
    let runner = runner(&layers.config, errs);
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

/// A scaling setting as the class sees it: from an entry's `scaling`, its seed-style flat key,
/// or the defaults'.
fn scaling_field<'a>(maps: &[ScalingLayer<'a>], key: &str, errs: &mut Errors) -> Option<Field<'a>> {
    for layer in maps {
        let nested = layer.nested.as_ref().and_then(|m| m.get(key));
        let flat = if FLAT_SCALING_KEYS.contains(&key) {
            layer.flat.get(key)
        } else {
            None
        };
        match (nested, flat) {
            (Some(nested), Some(flat)) => {
                errs.field(
                    &flat,
                    format!("{key} is also set at {}; set it in one place", nested.path),
                );
                return Some(nested);
            }
            (Some(found), None) | (None, Some(found)) => return Some(found),
            (None, None) => {}
        }
    }
    None
}

struct ScalingLayer<'a> {
    flat: MapRef<'a>,
    nested: Option<MapRef<'a>>,
}

fn scaling<'a>(
    layers: &[&MapRef<'a>],
    class: &ResourceClass,
    errs: &mut Errors,
) -> Option<Scaling> {
    let before = errs.list.len();
    let maps: Vec<ScalingLayer<'a>> = layers
        .iter()
        .map(|l| {
            let nested = l
                .get("scaling")
                .and_then(|f| as_map(&f, "a mapping (the scaling settings)", errs));
            if let Some(n) = &nested {
                n.check_keys(SCALING_KEYS, errs, |_| None);
            }
            ScalingLayer {
                flat: (*l).clone(),
                nested,
            }
        })
        .collect();
    let defaults = Scaling::default();
    let count = |key: &str, default: Replicas, errs: &mut Errors| {
        let field = scaling_field(&maps, key, errs);
        let value = field
            .as_ref()
            .and_then(|f| replicas(f, errs))
            .unwrap_or(default);
        (value, field)
    };
    let (min_replicas, min_field) = count("minReplicas", defaults.min_replicas, errs);
    let (max_replicas, max_field) = count("maxReplicas", defaults.max_replicas, errs);
    let (headroom, _) = count("headroom", defaults.headroom, errs);
    let (max_surge, _) = count("maxSurge", defaults.max_surge, errs);
    let (idle_buffer, _) = count("idleBuffer", defaults.idle_buffer, errs);
    let delay_field = scaling_field(&maps, "scaleDownDelay", errs);
    let scale_down_delay = delay_field
        .as_ref()
        .and_then(|f| duration(f, errs))
        .unwrap_or(defaults.scale_down_delay);
    let idle_field = scaling_field(&maps, "idleTimeout", errs);
    let idle_timeout = idle_field.as_ref().and_then(|f| duration(f, errs));
    if errs.list.len() > before {
        return None;
    }
    // A conflict between two settings is reported at the class's own one when the other comes
    // from the defaults, so the message is about that class.
    let pick = |a: Option<&Field<'a>>, b: Option<&Field<'a>>| {
        [a, b]
            .into_iter()
            .flatten()
            .find(|f| !f.path.contains("resourceClassDefaults"))
            .or(a)
            .or(b)
            .cloned()
    };
    let source = |field: &Option<Field<'_>>, at: &Field<'_>| match field {
        None => " (the default)".to_owned(),
        Some(f) if f.path != at.path => format!(" (set at {}: {})", f.file, f.path),
        Some(_) => String::new(),
    };
    if min_replicas > max_replicas
        && let Some(at) = &pick(min_field.as_ref(), max_field.as_ref())
    {
        let (min_source, max_source) = (source(&min_field, at), source(&max_field, at));
        errs.field(
            at,
            format!("minReplicas {min_replicas}{min_source} is greater than maxReplicas {max_replicas}{max_source}"),
        );
    }
    if let Some(idle) = idle_timeout
        && idle < scale_down_delay
        && let Some(at) = &pick(idle_field.as_ref(), delay_field.as_ref())
    {
        let (idle_source, delay_source) = (source(&idle_field, at), source(&delay_field, at));
        errs.field(
            at,
            format!(
                "idleTimeout {idle}{idle_source} is shorter than scaleDownDelay {scale_down_delay}{delay_source}: VMs would power off while the pool still holds them"
            ),
        );
    }
    let mut scaling = Scaling {
        min_replicas,
        max_replicas,
        headroom,
        max_surge,
        scale_down_delay,
        idle_timeout,
        idle_buffer,
        schedules: Vec::new(),
    };
    if let Some(field) = scaling_field(&maps, "schedules", errs) {
        scaling.schedules = schedules(&field, &scaling, class, errs);
    }
    (errs.list.len() == before).then_some(scaling)
}

fn schedules(
    field: &Field<'_>,
    base: &Scaling,
    class: &ResourceClass,
    errs: &mut Errors,
) -> Vec<Schedule> {
    let Some(items) = as_list(field, "a list of schedules", errs) else {
        return Vec::new();
    };
    let mut names: HashMap<String, String> = HashMap::new();
    let mut result = Vec::new();
    for item in items {
        let Some(map) = as_map(&item, "a mapping (a schedule: name, start, end, ...)", errs) else {
            continue;
        };
        map.check_keys(SCHEDULE_KEYS, errs, |k| {
            (k == "idleTimeout").then(|| {
                "idleTimeout cannot be scheduled: it is written into each VM when it boots; set it under scaling".to_owned()
            })
        });
        let before = errs.list.len();
        let name =
            required(&map, "name", "the schedule's name", errs).and_then(|f| string(&f, errs));
        if let Some(name) = &name {
            if let Some(first) = names.get(name) {
                errs.at(
                    map.file,
                    &join(&map.path, "name"),
                    map.get("name").map(|f| (f.node.line, f.node.column)),
                    format!("schedule name {name:?} is used twice (also at {first})"),
                );
            } else {
                names.insert(name.clone(), map.path.clone());
            }
        }
        let cron = |key: &str, errs: &mut Errors| {
            let field = required(&map, key, "a 5-field cron expression", errs)?;
            let text = string(&field, errs)?;
            Cron::parse(&text).map_err(|e| errs.field(&field, e.0)).ok()
        };
        let start = cron("start", errs);
        let end = cron("end", errs);
        let timezone = match map.get("timezone") {
            None => Some(Timezone::utc()),
            Some(f) => string(&f, errs)
                .and_then(|t| Timezone::parse(&t).map_err(|e| errs.field(&f, e.0)).ok()),
        };
        let count = |key: &str, errs: &mut Errors| map.get(key).and_then(|f| replicas(&f, errs));
        let overrides = Overrides {
            min_replicas: count("minReplicas", errs),
            max_replicas: count("maxReplicas", errs),
            headroom: count("headroom", errs),
            max_surge: count("maxSurge", errs),
            scale_down_delay: map.get("scaleDownDelay").and_then(|f| duration(&f, errs)),
            idle_buffer: count("idleBuffer", errs),
        };
        let (Some(name), Some(start), Some(end), Some(timezone)) = (name, start, end, timezone)
        else {
            continue;
        };
        if errs.list.len() > before {
            continue;
        }
        let controls = overrides.apply(base.base_controls());
        if controls.min_replicas > controls.max_replicas {
            errs.at(
                map.file,
                &map.path,
                Some((map.line, map.column)),
                format!(
                    "while schedule {name:?} is active for {class}, minReplicas {} is greater than maxReplicas {}",
                    controls.min_replicas, controls.max_replicas
                ),
            );
        }
        if let Some(idle) = base.idle_timeout
            && idle < controls.scale_down_delay
        {
            errs.at(
                map.file,
                &join(&map.path, "scaleDownDelay"),
                map.get("scaleDownDelay").map(|f| (f.node.line, f.node.column)),
                format!(
                    "while schedule {name:?} is active for {class}, scaleDownDelay {} is longer than idleTimeout {idle}: VMs would power off while the pool still holds them",
                    controls.scale_down_delay
                ),
            );
        }
        result.push(Schedule {
            name,
            start,
            end,
            timezone,
            overrides,
        });
    }
    result
}

fn runner(layers: &[&MapRef<'_>], errs: &mut Errors) -> RunnerOptions {
    let maps: Vec<MapRef<'_>> = layers
        .iter()
        .filter_map(|l| {
            l.get("runner")
                .and_then(|f| as_map(&f, "a mapping (the runner agent's settings)", errs))
        })
        .collect();
    for m in &maps {
        m.check_keys(RUNNER_KEYS, errs, |_| None);
    }
    let refs: Vec<&MapRef<'_>> = maps.iter().collect();
    let get = |key: &str| first(&refs, key);
    let grant_sudo = get("grantSudo").and_then(|f| boolean(&f, errs).map(|v| (v, f)));
    if let Some((true, field)) = &grant_sudo {
        errs.field(field, "grantSudo needs the token proxy, which this provisioner does not run; remove it or set it to false");
    }
    let max_run_time = get("maxRunTime").and_then(|f| {
        let d = duration(&f, errs)?;
        if d.is_zero() {
            errs.field(
                &f,
                "maxRunTime must be longer than 0s: every job would be cancelled at once",
            );
            return None;
        }
        Some(d)
    });
    RunnerOptions {
        working_directory: get("workingDirectory").and_then(|f| string(&f, errs)),
        task_agent_directory: get("taskAgentDirectory").and_then(|f| string(&f, errs)),
        command_prefix: get("commandPrefix").and_then(|f| string_list(&f, errs)),
        use_home_ssh_dir_for_checkout_keys: get("useHomeSSHDirForCheckoutKeys")
            .and_then(|f| boolean(&f, errs)),
        max_run_time,
        grant_sudo: false,
    }
}

fn empty_disk_mounts(
    field: &Field<'_>,
    spec: &serde_json::Value,
    errs: &mut Errors,
) -> Vec<EmptyDiskMount> {
    let Some(items) = as_list(field, "a list of {serial, path, fsType}", errs) else {
        return Vec::new();
    };
    let mut serials: HashMap<String, String> = HashMap::new();
    let mut paths: HashMap<String, String> = HashMap::new();
    let mut mounts = Vec::new();
    for item in items {
        let Some(map) = as_map(&item, "a mapping ({serial, path, fsType})", errs) else {
            continue;
        };
        map.check_keys(MOUNT_KEYS, errs, |_| None);
        let serial = required(&map, "serial", "the virtio serial of an emptyDisk in the spec", errs).and_then(|f| {
            let text = match &f.node.value {
                Value::Int(n) => n.to_string(),
                _ => string(&f, errs)?,
            };
            if text.len() > 20 || !text.chars().all(|c| c.is_ascii_alphanumeric()) {
                errs.field(&f, format!("serial {text:?} must be 1 to 20 letters and digits (virtio's limit)"));
                return None;
            }
            if let Some(first) = serials.insert(text.clone(), f.path.clone()) {
                errs.field(&f, format!("serial {text:?} is used twice (also at {first})"));
            }
            if spec.is_object() && !spec_has_empty_disk(spec, &text) {
                errs.field(
                    &f,
                    format!(
                        "serial {text:?} matches no emptyDisk in spec: give a virtio disk in spec.domain.devices.disks this serial and back it with an emptyDisk volume"
                    ),
                );
            }
            Some(text)
        });
        let path = required(&map, "path", "an absolute mount path", errs).and_then(|f| {
            let text = string(&f, errs)?;
            if !text.starts_with('/')
                || text.trim_end_matches('/').is_empty()
                || text.contains(char::is_whitespace)
            {
                errs.field(
                    &f,
                    format!(
                        "path {text:?} must be an absolute directory other than /, without spaces"
                    ),
                );
                return None;
            }
            if let Some(first) = paths.insert(text.clone(), f.path.clone()) {
                errs.field(&f, format!("path {text:?} is used twice (also at {first})"));
            }
            Some(text)
        });
        let fs_type = match map.get("fsType") {
            None => Some(FsType::Ext4),
            Some(f) => string(&f, errs).and_then(|t| {
                let parsed = [FsType::Ext2, FsType::Ext3, FsType::Ext4, FsType::Xfs]
                    .into_iter()
                    .find(|fs| fs.as_str() == t);
                if parsed.is_none() {
                    errs.field(
                        &f,
                        format!("fsType {t:?} is not supported (expected ext2, ext3, ext4 or xfs)"),
                    );
                }
                parsed
            }),
        };
        if let (Some(serial), Some(path), Some(fs_type)) = (serial, path, fs_type) {
            mounts.push(EmptyDiskMount {
                serial,
                path,
                fs_type,
            });
        }
    }
    mounts
}

/// Whether the spec has a virtio disk with this serial (the guest finds it as
/// `/dev/disk/by-id/virtio-<serial>`) whose volume is an emptyDisk.
fn spec_has_empty_disk(spec: &serde_json::Value, serial: &str) -> bool {
    use serde_json::Value as J;
    let list = |pointer: &str| {
        spec.pointer(pointer)
            .and_then(J::as_array)
            .map_or(&[][..], Vec::as_slice)
    };
    let name_of = |v: &J| v.get("name").and_then(J::as_str).map(str::to_owned);
    let is_virtio = |d: &J| {
        d.pointer("/disk/bus")
            .and_then(J::as_str)
            .is_none_or(|bus| bus == "virtio")
    };
    let Some(disk_name) = list("/domain/devices/disks")
        .iter()
        .find(|d| d.get("serial").and_then(J::as_str) == Some(serial) && is_virtio(d))
        .and_then(name_of)
    else {
        return false;
    };
    list("/volumes")
        .iter()
        .any(|v| name_of(v).as_deref() == Some(disk_name.as_str()) && v.get("emptyDisk").is_some())
}

fn api_addr(field: &Field<'_>, errs: &mut Errors) -> Option<String> {
    let text = string(field, errs)?;
    let lower = text.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
    if host.is_none_or(str::is_empty) || text.contains(char::is_whitespace) {
        errs.field(
            field,
            format!(
                "{text:?} is not an http(s) URL (expected e.g. \"https://runner.circleci.com\")"
            ),
        );
        return None;
    }
    Some(text)
}

fn poll_interval(field: &Field<'_>, errs: &mut Errors) -> Option<Duration> {
    let d = duration(field, errs)?;
    if d.is_zero() {
        errs.field(field, "pollInterval must be longer than 0s");
        return None;
    }
    if d > MAX_POLL_INTERVAL {
        errs.field(field, format!("pollInterval {d} is longer than {MAX_POLL_INTERVAL}: jobs would wait that long for a VM"));
        return None;
    }
    Some(d)
}

/// A level (`info`) or comma-separated `target=level` directives (`info,kube=warn`).
fn log_level(field: &Field<'_>, errs: &mut Errors) -> Option<String> {
    let text = string(field, errs)?;
    if text.split(',').all(|part| part.trim().is_empty()) {
        errs.field(
            field,
            format!(
                "log level {text:?} names no level (expected e.g. \"info\" or \"info,kube=warn\")"
            ),
        );
        return None;
    }
    let bad = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .find(|part| {
            let level = part
                .rsplit_once('=')
                .map_or(*part, |(_, l)| l)
                .to_ascii_lowercase();
            !LOG_LEVELS.contains(&level.as_str())
        });
    if let Some(part) = bad {
        errs.field(
            field,
            format!("log level {part:?} is not one of trace, debug, info, warn, error, off"),
        );
        return None;
    }
    Some(text.trim().to_owned())
}

/// Which file the document is and what it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Config,
    Secrets,
}

/// One file's settings, located.
struct Doc<'a> {
    file: &'a str,
    kind: Kind,
    /// `provisioner` in a values file: prefixes paths.
    prefix: String,
    api_addr: Option<Field<'a>>,
    poll_interval: Option<Field<'a>>,
    log_level: Option<Field<'a>>,
    circle_token: Option<Field<'a>>,
    defaults: Option<MapRef<'a>>,
    classes: Vec<Entry<'a>>,
    /// The last class map seen, where "no classes" is reported.
    class_map: Option<Field<'a>>,
    /// A class was written but refused (bad name, wrong type): "no classes" would be noise.
    class_refused: bool,
    existing_secret: bool,
}

/// One class as a file writes it.
struct Entry<'a> {
    name: ResourceClass,
    /// The class's key in the file (`resourceClasses."a/b"`, or `resourceClass` for the
    /// single-class form).
    path: String,
    key: Option<&'a Key>,
    map: MapRef<'a>,
}

fn read_doc<'a>(file: &'a str, root: Option<&'a Node>, kind: Kind, errs: &mut Errors) -> Doc<'a> {
    let mut doc = Doc {
        file,
        kind,
        prefix: String::new(),
        api_addr: None,
        poll_interval: None,
        log_level: None,
        circle_token: None,
        defaults: None,
        classes: Vec::new(),
        class_map: None,
        class_refused: false,
        existing_secret: false,
    };
    let Some(root) = root else { return doc };
    let root_field = Field {
        node: root,
        file,
        path: String::new(),
    };
    let Some(root_map) = as_map_in(kind, &root_field, "a mapping at the top level", errs) else {
        return doc;
    };
    let mut top = root_map.clone();
    let mut allowed: Vec<&str> = match kind {
        Kind::Config => TOP_KEYS.to_vec(),
        Kind::Secrets => SECRETS_TOP_KEYS.to_vec(),
    };
    if kind == Kind::Config
        && let Some(provisioner) = root_map.get("provisioner")
        && matches!(provisioner.node.value, Value::Map(_))
        && let Some(map) = as_map(&provisioner, "a mapping", errs)
    {
        doc.prefix = "provisioner".to_owned();
        doc.log_level = root_map.get("logLevel");
        doc.existing_secret = map.get("existingSecret").is_some();
        top = map;
        allowed.extend_from_slice(VALUES_ONLY_KEYS);
    }
    top.check_keys(&allowed, errs, |k| match kind {
        Kind::Config => (k == "provisioner").then(|| "expected a mapping (a Helm values file's provisioner block)".to_owned()),
        Kind::Secrets => TOP_KEYS.contains(&k).then(|| {
            format!("{k} is not read from the secrets file (it holds circleToken and resourceClasses.<name>.token/userData); put it in the config file")
        }),
    });
    doc.circle_token = top.get("circleToken");
    if kind == Kind::Config {
        doc.api_addr = top.get("circleciAPIAddr");
        doc.poll_interval = top.get("pollInterval");
        doc.log_level = top.get("logLevel").or(doc.log_level.take());
        if let Some(field) = top.get("resourceClass") {
            let (before, classes_before) = (errs.list.len(), doc.classes.len());
            read_seed_class(&field, &mut doc, errs);
            doc.class_refused |= errs.list.len() > before && doc.classes.len() == classes_before;
        }
    }
    if let Some(field) = top.get("resourceClasses") {
        let (before, classes_before) = (errs.list.len(), doc.classes.len());
        read_class_map(&field, &mut doc, errs);
        doc.class_refused |= errs.list.len() > before && doc.classes.len() == classes_before;
    }
    if let Some(field) = top.get("resourceClassDefaults")
        && let Some(map) = as_map_in(
            kind,
            &field,
            "a mapping (settings every class inherits)",
            errs,
        )
    {
        let allowed = if kind == Kind::Config {
            DEFAULTS_KEYS
        } else {
            SECRET_DEFAULTS_KEYS
        };
        map.check_keys(allowed, errs, |k| {
            if k == "token" {
                Some("a token cannot be defaulted: each resource class has its own; set resourceClasses.<name>.token".to_owned())
            } else if kind == Kind::Secrets && DEFAULTS_KEYS.contains(&k) {
                Some(format!("{k} is not read from the secrets file; put it in the config file"))
            } else {
                None
            }
        });
        doc.defaults = Some(map);
    }
    doc
}

/// The seed's `resourceClass`: single-class (`{name, token, ...}`) or keyed by class name.
fn read_seed_class<'a>(field: &Field<'a>, doc: &mut Doc<'a>, errs: &mut Errors) {
    let Some(map) = as_map(field, "a mapping (the resource class)", errs) else {
        return;
    };
    let single = map
        .entries
        .iter()
        .any(|(k, _)| SEED_ENTRY_KEYS.contains(&k.text.as_str()));
    if !single {
        read_class_map(field, doc, errs);
        return;
    }
    map.check_keys(SEED_ENTRY_KEYS, errs, |_| None);
    let name = match map.get("name") {
        None => {
            errs.at(
                map.file,
                &join(&map.path, "name"),
                Some((map.line, map.column)),
                "the resource class name is required (\"<namespace>/<name>\", e.g. \"my-org/my-runner\")",
            );
            return;
        }
        Some(f) => match string(&f, errs).map(|s| ResourceClass::parse(&s)) {
            None => return,
            Some(Err(e)) => {
                errs.field(&f, e.0);
                return;
            }
            Some(Ok(name)) => name,
        },
    };
    doc.classes.push(Entry {
        name,
        path: map.path.clone(),
        key: None,
        map,
    });
}

fn read_class_map<'a>(field: &Field<'a>, doc: &mut Doc<'a>, errs: &mut Errors) {
    doc.class_map = Some(field.clone());
    let Some(map) = as_map_in(
        doc.kind,
        field,
        "a mapping of resource class names (\"<namespace>/<name>\") to settings",
        errs,
    ) else {
        return;
    };
    let kind = doc.kind;
    for (key, node) in map.entries {
        let path = join(&map.path, &key.text);
        let name = match ResourceClass::parse(&key.text) {
            Ok(name) => name,
            Err(e) => {
                errs.key(map.file, &path, Some(key), e.0);
                continue;
            }
        };
        let entry_map = match &node.value {
            Value::Null => MapRef {
                entries: &[],
                file: map.file,
                path: path.clone(),
                line: key.line,
                column: key.column,
            },
            Value::Map(entries) => MapRef {
                entries,
                file: map.file,
                path: path.clone(),
                line: node.line,
                column: node.column,
            },
            other => {
                errs.at(
                    map.file,
                    &path,
                    Some((node.line, node.column)),
                    format!(
                        "expected a mapping (the class's settings), got {}",
                        describe_kind(other)
                    ),
                );
                continue;
            }
        };
        let allowed = if kind == Kind::Config {
            ENTRY_KEYS
        } else {
            SECRET_ENTRY_KEYS
        };
        entry_map.check_keys(allowed, errs, |k| {
            (kind == Kind::Secrets && ENTRY_KEYS.contains(&k))
                .then(|| format!("{k} is not read from the secrets file (it holds token and userData); put it in the config file"))
        });
        doc.classes.push(Entry {
            name,
            path,
            key: Some(key),
            map: entry_map,
        });
    }
}

/// A set value (not null, not `""`), with where it is.
#[derive(Clone)]
struct Field<'a> {
    node: &'a Node,
    file: &'a str,
    path: String,
}

/// A mapping, with where it is.
#[derive(Clone)]
struct MapRef<'a> {
    entries: &'a [(Key, Node)],
    file: &'a str,
    path: String,
    line: u64,
    column: u64,
}

impl<'a> MapRef<'a> {
    /// The value of `key` when it is set: null and `""` count as unset.
    fn get(&self, key: &str) -> Option<Field<'a>> {
        self.entries
            .iter()
            .find(|(k, _)| k.text == key)
            .filter(|(_, v)| {
                !matches!(&v.value, Value::Null)
                    && !matches!(&v.value, Value::Str(s) if s.is_empty())
            })
            .map(|(k, v)| Field {
                node: v,
                file: self.file,
                path: join(&self.path, &k.text),
            })
    }

    /// Reports every key not in `allowed`; `special` may explain a known mistake better than the
    /// generic hint does.
    fn check_keys(
        &self,
        allowed: &[&str],
        errs: &mut Errors,
        special: impl Fn(&str) -> Option<String>,
    ) {
        for (key, _) in self.entries {
            if allowed.contains(&key.text.as_str()) {
                continue;
            }
            let message =
                special(&key.text).unwrap_or_else(|| match did_you_mean(&key.text, allowed) {
                    Some(hint) => format!("unknown key {:?}; did you mean {hint:?}?", key.text),
                    None => format!(
                        "unknown key {:?} (expected one of: {})",
                        key.text,
                        allowed.join(", ")
                    ),
                });
            errs.key(self.file, &join(&self.path, &key.text), Some(key), message);
        }
    }
}

/// The first set value of `key` across layers, highest priority first.
fn first<'a>(layers: &[&MapRef<'a>], key: &str) -> Option<Field<'a>> {
    layers.iter().find_map(|m| m.get(key))
}

fn as_map<'a>(field: &Field<'a>, expected: &str, errs: &mut Errors) -> Option<MapRef<'a>> {
    as_map_in(Kind::Config, field, expected, errs)
}

/// `as_map` for a value of a file of `kind`: in the secrets file any string may be a token, so a
/// wrong-typed value is described by its type only.
fn as_map_in<'a>(
    kind: Kind,
    field: &Field<'a>,
    expected: &str,
    errs: &mut Errors,
) -> Option<MapRef<'a>> {
    match &field.node.value {
        Value::Map(entries) => Some(MapRef {
            entries,
            file: field.file,
            path: field.path.clone(),
            line: field.node.line,
            column: field.node.column,
        }),
        other => {
            let found = match kind {
                Kind::Config => describe(other),
                Kind::Secrets => describe_kind(other),
            };
            errs.field(field, format!("expected {expected}, got {found}"));
            None
        }
    }
}

fn as_list<'a>(field: &Field<'a>, expected: &str, errs: &mut Errors) -> Option<Vec<Field<'a>>> {
    match &field.node.value {
        Value::Seq(items) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, node)| Field {
                    node,
                    file: field.file,
                    path: format!("{}[{i}]", field.path),
                })
                .collect(),
        ),
        other => {
            errs.field(
                field,
                format!("expected {expected}, got {}", describe(other)),
            );
            None
        }
    }
}

fn required<'a>(map: &MapRef<'a>, key: &str, what: &str, errs: &mut Errors) -> Option<Field<'a>> {
    let field = map.get(key);
    if field.is_none() {
        errs.at(
            map.file,
            &join(&map.path, key),
            Some((map.line, map.column)),
            format!("{key} is required ({what})"),
        );
    }
    field
}

fn string(field: &Field<'_>, errs: &mut Errors) -> Option<String> {
    match &field.node.value {
        Value::Str(s) => Some(s.clone()),
        other => {
            errs.field(field, format!("expected a string, got {}", describe(other)));
            None
        }
    }
}

fn string_list(field: &Field<'_>, errs: &mut Errors) -> Option<Vec<String>> {
    let items = as_list(field, "a list of strings", errs)?;
    let strings: Vec<Option<String>> = items.iter().map(|f| string(f, errs)).collect();
    strings.into_iter().collect()
}

/// A secret string; a wrong-typed value is described by its type only, never echoed.
fn secret(field: &Field<'_>, errs: &mut Errors) -> Option<Secret> {
    match &field.node.value {
        Value::Str(s) => {
            errs.secrets.push(s.clone());
            if s.trim() != s && !s.trim().is_empty() {
                errs.secrets.push(s.trim().to_owned());
            }
            Some(Secret::new(s.clone()))
        }
        other => {
            errs.field(
                field,
                format!("expected a string, got {}", describe_kind(other)),
            );
            None
        }
    }
}

/// A token: the first place that sets it, without the surrounding white space a YAML block
/// scalar or a pasted value brings (`token: |` keeps a newline, which would end up in an HTTP
/// header or the runner's config); and whether it is missing outright. A value of the wrong type
/// was already reported by `secret`, so it does not count as missing too.
fn pick_token(
    fields: &[Option<Field<'_>>],
    name: &str,
    errs: &mut Errors,
) -> (Option<Secret>, bool) {
    let token = pick_secret(fields, name, errs).map(|t| Secret::new(t.expose().trim()));
    let wrong_type = fields
        .iter()
        .flatten()
        .any(|f| !matches!(f.node.value, Value::Str(_)));
    let missing = token.is_none() && !wrong_type;
    (token, missing)
}

/// The first of the given places that sets the secret; two places setting different values is
/// an error (which one is meant cannot be guessed), the same value twice is fine.
fn pick_secret(fields: &[Option<Field<'_>>], name: &str, errs: &mut Errors) -> Option<Secret> {
    let mut chosen: Option<(Secret, &Field<'_>)> = None;
    for field in fields.iter().flatten() {
        let Some(value) = secret(field, errs).filter(|s| !s.is_empty()) else {
            continue;
        };
        match &chosen {
            None => chosen = Some((value, field)),
            Some((first, at)) if *first != value => errs.field(
                field,
                format!(
                    "{name} is also set at {}: {} with a different value; set it in one place",
                    at.file, at.path
                ),
            ),
            Some(_) => {}
        }
    }
    chosen.map(|(s, _)| s)
}

/// `true`/`false`, and the YAML 1.1 spellings (`yes`, `off`, ...) that Go's YAML reads into a
/// bool field: documents are read with YAML 1.2 booleans so that `n` or `no` elsewhere stay
/// strings.
fn boolean(field: &Field<'_>, errs: &mut Errors) -> Option<bool> {
    match &field.node.value {
        Value::Bool(b) => Some(*b),
        Value::Str(s) if ["y", "yes", "on"].contains(&s.to_ascii_lowercase().as_str()) => {
            Some(true)
        }
        Value::Str(s) if ["n", "no", "off"].contains(&s.to_ascii_lowercase().as_str()) => {
            Some(false)
        }
        other => {
            errs.field(
                field,
                format!("expected true or false, got {}", describe(other)),
            );
            None
        }
    }
}

fn replicas(field: &Field<'_>, errs: &mut Errors) -> Option<Replicas> {
    let result = match &field.node.value {
        Value::Int(n) => i64::try_from(*n)
            .map_err(|_| format!("{n} is larger than {}", Replicas::MAX))
            .and_then(|v| Replicas::parse(v).map_err(|e| e.0)),
        Value::Float(x) if x.fract() != 0.0 => Err(format!(
            "{x} is not a whole number; a VM count is 0, 1, 2, ..."
        )),
        Value::Float(x) if *x < 0.0 => Err(format!("{x} is negative; a VM count is 0 or more")),
        Value::Float(x) if *x > f64::from(Replicas::MAX) => {
            Err(format!("{x} is larger than {}", Replicas::MAX))
        }
        Value::Float(x) => Err(format!(
            "{x} is written as a decimal; write a whole number without a decimal point"
        )),
        other => Err(format!(
            "expected a whole number (a count of VMs), got {}",
            describe(other)
        )),
    };
    result.map_err(|message| errs.field(field, message)).ok()
}

/// A Go-style duration (`"10m"`); a bare `0` is accepted as Go accepts it.
fn duration(field: &Field<'_>, errs: &mut Errors) -> Option<Duration> {
    let text = match &field.node.value {
        Value::Str(s) => s.clone(),
        Value::Int(n) => n.to_string(),
        Value::Float(x) => x.to_string(),
        other => {
            errs.field(
                field,
                format!(
                    "expected a duration such as \"30s\" or \"10m\", got {}",
                    describe(other)
                ),
            );
            return None;
        }
    };
    Duration::parse(&text)
        .map_err(|e| errs.field(field, e.0))
        .ok()
}

fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &node.value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(n) => i64::try_from(*n)
            .map(J::from)
            .or_else(|_| u64::try_from(*n).map(J::from))
            .unwrap_or_else(|_| serde_json::Number::from_f64(*n as f64).map_or(J::Null, J::Number)),
        Value::Float(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
        Value::Str(s) => J::String(s.clone()),
        Value::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (k.text.clone(), to_json(v)))
                .collect(),
        ),
    }
}

/// A value for an error message: scalars are shown (shortened), collections by kind.
fn describe(value: &Value) -> String {
    const MAX_SHOWN: usize = 60;
    match value {
        Value::Str(s) if s.chars().count() > MAX_SHOWN => {
            let shown: String = s.chars().take(MAX_SHOWN).collect();
            format!("the string {shown:?}...")
        }
        Value::Str(s) => format!("the string {s:?}"),
        Value::Int(n) => format!("the number {n}"),
        Value::Float(x) => format!("the number {x}"),
        Value::Bool(b) => format!("{b}"),
        other => describe_kind(other),
    }
}

/// A value's type only, for values that may be secret.
fn describe_kind(value: &Value) -> String {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Int(_) | Value::Float(_) => "a number",
        Value::Str(_) => "a string",
        Value::Seq(_) => "a list",
        Value::Map(_) => "a mapping",
    }
    .to_owned()
}

/// `path.key`, quoting keys that are not plain words (`resourceClasses."my-org/runner"`).
fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if plain {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// Collects problems; remembers every secret read so a message can never carry one.
struct Errors {
    list: Vec<FieldError>,
    /// What `list` holds, so a problem seen through every class (a bad default) shows once.
    seen: HashSet<FieldError>,
    secrets: Vec<String>,
    /// File names in reading order: errors are listed file by file, top to bottom.
    files: Vec<String>,
}

impl Errors {
    fn push(&mut self, error: FieldError) {
        if self.seen.insert(error.clone()) {
            self.list.push(error);
        }
    }

    fn at(
        &mut self,
        file: &str,
        path: &str,
        location: Option<(u64, u64)>,
        message: impl Into<String>,
    ) {
        self.push(FieldError {
            file: file.to_owned(),
            path: path.to_owned(),
            message: message.into(),
            line: location.filter(|l| l.0 > 0).map(|l| l.0),
            column: location.filter(|l| l.0 > 0).map(|l| l.1),
        });
    }

    fn field(&mut self, field: &Field<'_>, message: impl Into<String>) {
        self.at(
            field.file,
            &field.path,
            Some((field.node.line, field.node.column)),
            message,
        );
    }

    fn key(&mut self, file: &str, path: &str, key: Option<&Key>, message: impl Into<String>) {
        self.at(file, path, key.map(|k| (k.line, k.column)), message);
    }

    /// The errors in file and line order, at most `MAX_REPORTED_ERRORS` of them, with any
    /// secret that slipped into a message replaced.
    fn finish(self) -> ConfigError {
        let Self {
            mut list,
            secrets,
            files,
            ..
        } = self;
        let rank = |file: &str| files.iter().position(|f| f == file).unwrap_or(usize::MAX);
        list.sort_by_key(|e| (rank(&e.file), e.line.is_none(), e.line, e.column));
        if list.len() > MAX_REPORTED_ERRORS {
            let hidden = list.len() - MAX_REPORTED_ERRORS;
            list.truncate(MAX_REPORTED_ERRORS);
            list.push(FieldError {
                file: list.last().map(|e| e.file.clone()).unwrap_or_default(),
                path: String::new(),
                message: format!("{hidden} more problems are not shown"),
                line: None,
                column: None,
            });
        }
        let secrets: Vec<&str> = secrets
            .iter()
            .map(|s| s.trim())
            .filter(|s| s.chars().count() >= MIN_SCRUBBED_SECRET_LEN)
            .collect();
        let scrub = |text: &str| {
            secrets
                .iter()
                .fold(text.to_owned(), |t, s| t.replace(s, "<redacted>"))
        };
        let errors = list
            .into_iter()
            .map(|e| FieldError {
                path: scrub(&e.path),
                message: scrub(&e.message),
                ..e
            })
            .collect();
        ConfigError { errors }
    }
}
