//! Which keys each mapping of the files may hold. Each table has one row per key naming every
//! place the key may be written; the allowed-keys check, its did-you-mean hint and the
//! "not read from the secrets file" explanations all read these rows, so a key is declared once.
//! (The readers in `class` read each key by its name; the runner block's reader is this table.)

/// The places a key may be written, as bits: `ENTRY | DEFAULTS`.
pub(super) type Places = u16;

/// One key and where it may be written.
pub(super) struct Row {
    pub(super) key: &'static str,
    pub(super) places: Places,
}

const fn row(key: &'static str, places: Places) -> Row {
    Row { key, places }
}

/// The keys allowed at `place`, in table order (the order error messages list them in).
pub(super) fn keys(table: &[Row], place: Places) -> Vec<&'static str> {
    table
        .iter()
        .filter(|r| r.places & place != 0)
        .map(|r| r.key)
        .collect()
}

/// Whether `key` may be written at `place`.
pub(super) fn allows(table: &[Row], place: Places, key: &str) -> bool {
    table.iter().any(|r| r.key == key && r.places & place != 0)
}

/// The top level of a `config.yaml` (0.1.0's or 0.1.2's).
pub(super) const CONFIG_TOP: Places = 1;
/// The top level of 0.1.2's `secrets.yaml`.
pub(super) const SECRETS_TOP: Places = 2;
/// The `provisioner:` block of a Helm values file.
pub(super) const VALUES: Places = 4;

pub(super) const TOP: &[Row] = &[
    row("circleciAPIAddr", CONFIG_TOP | VALUES),
    row("pollInterval", CONFIG_TOP | VALUES),
    row("logLevel", CONFIG_TOP | VALUES),
    row("circleToken", CONFIG_TOP | SECRETS_TOP | VALUES),
    row("resourceClass", CONFIG_TOP | VALUES),
    row("resourceClasses", CONFIG_TOP | SECRETS_TOP | VALUES),
    row("resourceClassDefaults", CONFIG_TOP | SECRETS_TOP | VALUES),
    // Deployment-wide switches; in a Helm values file they sit beside `provisioner:`.
    row("sidecar", CONFIG_TOP),
    row("runnerBundle", CONFIG_TOP),
    // Chart values that configure the chart, not the controller.
    row("namespace", VALUES),
    row("existingSecret", VALUES),
    row("existingConfigMap", VALUES),
];

/// A class entry of the config file (`resourceClasses.<name>`, or 0.1.0's keyed form).
pub(super) const ENTRY: Places = 1;
/// 0.1.0's single-class `resourceClass: {name, token, ...}`.
pub(super) const SEED_ENTRY: Places = 2;
/// `resourceClassDefaults` of the config file.
pub(super) const DEFAULTS: Places = 4;
/// A class entry of the secrets file.
pub(super) const SECRET_ENTRY: Places = 8;
/// `resourceClassDefaults` of the secrets file.
pub(super) const SECRET_DEFAULTS: Places = 16;
/// A 0.1.0-style scaling key an entry may carry outside `scaling`.
pub(super) const FLAT_SCALING: Places = 32;

const CLASS_SETTINGS: Places = ENTRY | SEED_ENTRY | DEFAULTS;
const SECRET_SETTINGS: Places = SECRET_ENTRY | SECRET_DEFAULTS;

pub(super) const CLASS: &[Row] = &[
    row("name", SEED_ENTRY),
    row("token", ENTRY | SEED_ENTRY | SECRET_ENTRY),
    row("userData", CLASS_SETTINGS | SECRET_SETTINGS),
    row("scaling", CLASS_SETTINGS),
    row("runner", CLASS_SETTINGS),
    row("healing", CLASS_SETTINGS),
    row("emptyDiskMounts", CLASS_SETTINGS),
    row("spec", CLASS_SETTINGS),
    row("minReplicas", CLASS_SETTINGS | FLAT_SCALING),
    row("maxReplicas", CLASS_SETTINGS | FLAT_SCALING),
    row("idleTimeout", CLASS_SETTINGS | FLAT_SCALING),
];

/// A class's `scaling` block.
pub(super) const SCALING: Places = 1;
/// One of `scaling.schedules`.
pub(super) const SCHEDULE: Places = 2;

pub(super) const SCALING_BLOCK: &[Row] = &[
    row("name", SCHEDULE),
    row("start", SCHEDULE),
    row("end", SCHEDULE),
    row("timezone", SCHEDULE),
    row("minReplicas", SCALING | SCHEDULE),
    row("maxReplicas", SCALING | SCHEDULE),
    row("headroom", SCALING | SCHEDULE),
    row("maxSurge", SCALING | SCHEDULE),
    row("scaleDownDelay", SCALING | SCHEDULE),
    row("idleTimeout", SCALING),
    row("idleBuffer", SCALING | SCHEDULE),
    row("serviceLevel", SCALING | SCHEDULE),
    row("forecastLookahead", SCALING),
    row("forecastWindow", SCALING),
    row("forecastRecentWeight", SCALING),
    row("schedules", SCALING),
];

/// A class's `healing` block (grace settings for VMs that did not stop by themselves).
pub(super) const HEALING_KEYS: &[&str] = &[
    "failingTimeout",
    "startTimeout",
    "registrationTimeout",
    "breakerThreshold",
];

pub(super) const MOUNT_KEYS: &[&str] = &["serial", "path", "fsType"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_list_each_place_s_keys_in_order() {
        assert_eq!(
            keys(TOP, SECRETS_TOP),
            ["circleToken", "resourceClasses", "resourceClassDefaults"]
        );
        // The values file's provisioner block adds three chart keys and lacks the two
        // deployment-wide switches.
        assert_eq!(keys(TOP, VALUES).len(), keys(TOP, CONFIG_TOP).len() + 3 - 2);
        assert!(allows(TOP, CONFIG_TOP, "sidecar") && !allows(TOP, VALUES, "sidecar"));
        assert!(!allows(TOP, SECRETS_TOP, "runnerBundle"));
        assert_eq!(keys(CLASS, SECRET_DEFAULTS), ["userData"]);
        assert_eq!(
            keys(CLASS, FLAT_SCALING),
            ["minReplicas", "maxReplicas", "idleTimeout"]
        );
        assert_eq!(keys(CLASS, SEED_ENTRY)[0], "name");
        assert!(!allows(CLASS, DEFAULTS, "token"));
        assert!(allows(SCALING_BLOCK, SCALING, "schedules"));
        assert!(!allows(SCALING_BLOCK, SCHEDULE, "idleTimeout"));
    }
}
