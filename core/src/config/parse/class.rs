//! A class's blocks, read across its layers: `scaling` (with 0.1.0's flat keys and the
//! schedules), `runner` and `emptyDiskMounts`.

use std::collections::HashMap;

use super::super::{EmptyDiskMount, FsType, RunnerOptions};
use super::errors::Errors;
use super::keys::{
    CLASS, FLAT_SCALING, HEALING_KEYS, MOUNT_KEYS, SCALING, SCALING_BLOCK, SCHEDULE, allows, keys,
};
use super::read::{
    Field, MapRef, as_list, as_map, boolean, duration, first, join, percent, replicas, required,
    service_level, string, string_list,
};
use super::yaml::Value;
use crate::cron::Cron;
use crate::domain::{Duration, Replicas, ResourceClass};
use crate::forecast::Predictive;
use crate::healing::{DEFAULT_MAX_RUN_TIME, Healing};
use crate::policy::{Overrides, Scaling, Schedule, Timezone};

/// A scaling setting as the class sees it: from an entry's `scaling`, its 0.1.0-style flat key,
/// or the defaults'.
pub(super) fn scaling_field<'a>(
    maps: &[ScalingLayer<'a>],
    key: &str,
    errs: &mut Errors,
) -> Option<Field<'a>> {
    for layer in maps {
        let nested = layer.nested.as_ref().and_then(|m| m.get(key));
        let flat = if allows(CLASS, FLAT_SCALING, key) {
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

pub(super) struct ScalingLayer<'a> {
    pub(super) flat: MapRef<'a>,
    pub(super) nested: Option<MapRef<'a>>,
}

pub(super) fn scaling<'a>(
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
                n.check_keys(&keys(SCALING_BLOCK, SCALING), errs, |_| None);
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
    let predictive = predictive(&maps, errs);
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
        predictive,
        schedules: Vec::new(),
        healing: Healing::default(),
    };
    if let Some(field) = scaling_field(&maps, "schedules", errs) {
        scaling.schedules = schedules(&field, &scaling, class, errs);
    }
    (errs.list.len() == before).then_some(scaling)
}

/// The predictive control: on when `serviceLevel` is set; the `forecast*` keys tune it.
fn predictive(maps: &[ScalingLayer<'_>], errs: &mut Errors) -> Option<Predictive> {
    let level = scaling_field(maps, "serviceLevel", errs);
    let service_level = level.as_ref().and_then(|f| service_level(f, errs));
    let defaults = Predictive::default();
    let mut tuning = Vec::new();
    let mut window_of = |key: &str, errs: &mut Errors| {
        let field = scaling_field(maps, key, errs)?;
        tuning.push(field.clone());
        let value = duration(&field, errs)?;
        if value == Duration::ZERO {
            errs.field(&field, format!("{key} must be longer than 0s"));
            return None;
        }
        Some(value)
    };
    let lookahead = window_of("forecastLookahead", errs);
    let recent_window = window_of("forecastWindow", errs);
    let weight = scaling_field(maps, "forecastRecentWeight", errs);
    let recent_weight = weight.as_ref().and_then(|f| percent(f, errs));
    tuning.extend(weight);
    if level.is_none() {
        for field in &tuning {
            errs.field(
                field,
                "the forecast settings tune the predictive control, which serviceLevel turns on; set serviceLevel too (e.g. \"95%\")".to_owned(),
            );
        }
    }
    Some(Predictive {
        service_level: service_level?,
        lookahead,
        recent_window: recent_window.unwrap_or(defaults.recent_window),
        recent_weight: recent_weight.unwrap_or(defaults.recent_weight),
    })
}

pub(super) fn schedules(
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
        map.check_keys(&keys(SCALING_BLOCK, SCHEDULE), errs, |k| {
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
            service_level: map.get("serviceLevel").and_then(|f| {
                if base.predictive.is_none() {
                    errs.field(&f, "serviceLevel in a schedule changes the predictive control's level; turn the control on with serviceLevel under scaling".to_owned());
                }
                service_level(&f, errs)
            }),
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

/// Reads one key of the `runner` block into the options.
type RunnerReader = fn(&mut RunnerOptions, &Field<'_>, &mut Errors);

/// The `runner` block: one row per key, its name and how it is read. The allowed-keys check uses
/// the names, so adding a row is all a new runner option needs here.
const RUNNER: &[(&str, RunnerReader)] = &[
    ("workingDirectory", |o, f, errs| {
        o.working_directory = string(f, errs);
    }),
    ("taskAgentDirectory", |o, f, errs| {
        o.task_agent_directory = string(f, errs);
    }),
    ("commandPrefix", |o, f, errs| {
        o.command_prefix = string_list(f, errs);
    }),
    ("useHomeSSHDirForCheckoutKeys", |o, f, errs| {
        o.use_home_ssh_dir_for_checkout_keys = boolean(f, errs);
    }),
    ("maxRunTime", |o, f, errs| {
        o.max_run_time = duration(f, errs).filter(|d| {
            if d.is_zero() {
                errs.field(
                    f,
                    "maxRunTime must be longer than 0s: every job would be cancelled at once",
                );
            }
            !d.is_zero()
        });
    }),
    ("grantSudo", |o, f, errs| {
        o.grant_sudo = boolean(f, errs).unwrap_or(false);
    }),
];

/// The `runner` block, merged key by key across the layers. `grantSudo` is refused without the
/// sidecar: root in a VM that holds the class token could read it.
pub(super) fn runner(layers: &[&MapRef<'_>], sidecar: bool, errs: &mut Errors) -> RunnerOptions {
    let maps: Vec<MapRef<'_>> = layers
        .iter()
        .filter_map(|l| {
            l.get("runner")
                .and_then(|f| as_map(&f, "a mapping (the runner agent's settings)", errs))
        })
        .collect();
    let allowed: Vec<&str> = RUNNER.iter().map(|(key, _)| *key).collect();
    for m in &maps {
        m.check_keys(&allowed, errs, |_| None);
    }
    let refs: Vec<&MapRef<'_>> = maps.iter().collect();
    let mut options = RunnerOptions::default();
    for (key, read) in RUNNER {
        if let Some(field) = first(&refs, key) {
            read(&mut options, &field, errs);
        }
    }
    if options.grant_sudo
        && !sidecar
        && let Some(field) = first(&refs, "grantSudo")
    {
        errs.field(
            &field,
            "grantSudo: true needs the sidecar (sidecar.enabled: true): without it the class token is in the VM, where a job with root could read it",
        );
        options.grant_sudo = false;
    }
    options
}

/// The `healing` block, merged key by key across the layers; `max_run_time` is the class's
/// `runner.maxRunTime` (the agent's default when unset), which bounds how long a job holds a VM.
pub(super) fn healing(
    layers: &[&MapRef<'_>],
    max_run_time: Option<Duration>,
    errs: &mut Errors,
) -> Healing {
    let maps: Vec<MapRef<'_>> = layers
        .iter()
        .filter_map(|l| {
            l.get("healing")
                .and_then(|f| as_map(&f, "a mapping (the self-healing grace settings)", errs))
        })
        .collect();
    for m in &maps {
        m.check_keys(HEALING_KEYS, errs, |_| None);
    }
    let refs: Vec<&MapRef<'_>> = maps.iter().collect();
    let defaults = Healing::default();
    // A zero failing timeout means "at once" (the 0.1.0 behaviour); a zero start or
    // registration timeout would reclaim every VM before it could boot.
    let grace = |key: &str, default: Duration, zero_ok: bool, errs: &mut Errors| {
        let Some(field) = first(&refs, key) else {
            return default;
        };
        match duration(&field, errs) {
            Some(d) if d.is_zero() && !zero_ok => {
                errs.field(
                    &field,
                    format!(
                        "{key} must be longer than 0s: every VM would be reclaimed while it boots"
                    ),
                );
                default
            }
            Some(d) => d,
            None => default,
        }
    };
    Healing {
        failing_timeout: grace("failingTimeout", defaults.failing_timeout, true, errs),
        start_timeout: grace("startTimeout", defaults.start_timeout, false, errs),
        registration_timeout: grace(
            "registrationTimeout",
            defaults.registration_timeout,
            false,
            errs,
        ),
        breaker_threshold: first(&refs, "breakerThreshold")
            .and_then(|f| replicas(&f, errs))
            .map_or(defaults.breaker_threshold, Replicas::get),
        max_run_time: max_run_time.unwrap_or(DEFAULT_MAX_RUN_TIME),
    }
}

pub(super) fn empty_disk_mounts(
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
pub(super) fn spec_has_empty_disk(spec: &serde_json::Value, serial: &str) -> bool {
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
