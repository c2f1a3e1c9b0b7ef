//! File shapes: which document a file is (config or secrets; 0.1.0, 0.1.2 or a Helm values
//! file) and where its settings and class entries are. Nothing is validated past the keys here.

use super::errors::Errors;
use super::keys::{
    CLASS, CONFIG_TOP, DEFAULTS, ENTRY, SECRET_DEFAULTS, SECRET_ENTRY, SECRETS_TOP, SEED_ENTRY,
    TOP, VALUES, allows, keys,
};
use super::read::{Field, MapRef, as_map, as_map_in, describe_kind, join, string};
use super::yaml::{Key, Node, Value};
use crate::domain::ResourceClass;

/// Which file the document is and what it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Config,
    Secrets,
}

/// One file's settings, located.
pub(super) struct Doc<'a> {
    pub(super) file: &'a str,
    pub(super) kind: Kind,
    /// `provisioner` in a values file: prefixes paths.
    pub(super) prefix: String,
    pub(super) api_addr: Option<Field<'a>>,
    pub(super) poll_interval: Option<Field<'a>>,
    pub(super) log_level: Option<Field<'a>>,
    pub(super) circle_token: Option<Field<'a>>,
    pub(super) sidecar: Option<Field<'a>>,
    pub(super) runner_bundle: Option<Field<'a>>,
    pub(super) defaults: Option<MapRef<'a>>,
    pub(super) classes: Vec<Entry<'a>>,
    /// The last class map seen, where "no classes" is reported.
    pub(super) class_map: Option<Field<'a>>,
    /// A class was written but refused (bad name, wrong type): "no classes" would be noise.
    pub(super) class_refused: bool,
    pub(super) existing_secret: bool,
}

/// One class as a file writes it.
pub(super) struct Entry<'a> {
    pub(super) name: ResourceClass,
    /// The class's key in the file (`resourceClasses."a/b"`, or `resourceClass` for the
    /// single-class form).
    pub(super) path: String,
    pub(super) key: Option<&'a Key>,
    pub(super) map: MapRef<'a>,
}

pub(super) fn read_doc<'a>(
    file: &'a str,
    root: Option<&'a Node>,
    kind: Kind,
    errs: &mut Errors,
) -> Doc<'a> {
    let mut doc = Doc {
        file,
        kind,
        prefix: String::new(),
        api_addr: None,
        poll_interval: None,
        log_level: None,
        circle_token: None,
        sidecar: None,
        runner_bundle: None,
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
    let mut place = match kind {
        Kind::Config => CONFIG_TOP,
        Kind::Secrets => SECRETS_TOP,
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
        place = VALUES;
    }
    top.check_keys(&keys(TOP, place), errs, |k| match kind {
        Kind::Config => (k == "provisioner").then(|| "expected a mapping (a Helm values file's provisioner block)".to_owned()),
        Kind::Secrets => allows(TOP, CONFIG_TOP, k).then(|| {
            format!("{k} is not read from the secrets file (it holds circleToken and resourceClasses.<name>.token/userData); put it in the config file")
        }),
    });
    doc.circle_token = top.get("circleToken");
    if kind == Kind::Config {
        doc.api_addr = top.get("circleciAPIAddr");
        doc.poll_interval = top.get("pollInterval");
        doc.sidecar = top.get("sidecar");
        doc.runner_bundle = top.get("runnerBundle");
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
        let place = if kind == Kind::Config {
            DEFAULTS
        } else {
            SECRET_DEFAULTS
        };
        map.check_keys(&keys(CLASS, place), errs, |k| {
            if k == "token" {
                Some("a token cannot be defaulted: each resource class has its own; set resourceClasses.<name>.token".to_owned())
            } else if kind == Kind::Secrets && allows(CLASS, DEFAULTS, k) {
                Some(format!("{k} is not read from the secrets file; put it in the config file"))
            } else {
                None
            }
        });
        doc.defaults = Some(map);
    }
    doc
}

/// Runner Provisioner 0.1.0's `resourceClass`: single-class (`{name, token, ...}`) or keyed by class name.
pub(super) fn read_seed_class<'a>(field: &Field<'a>, doc: &mut Doc<'a>, errs: &mut Errors) {
    let Some(map) = as_map(field, "a mapping (the resource class)", errs) else {
        return;
    };
    let single = map
        .entries
        .iter()
        .any(|(k, _)| allows(CLASS, SEED_ENTRY, &k.text));
    if !single {
        read_class_map(field, doc, errs);
        return;
    }
    map.check_keys(&keys(CLASS, SEED_ENTRY), errs, |_| None);
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

pub(super) fn read_class_map<'a>(field: &Field<'a>, doc: &mut Doc<'a>, errs: &mut Errors) {
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
        let place = if kind == Kind::Config {
            ENTRY
        } else {
            SECRET_ENTRY
        };
        entry_map.check_keys(&keys(CLASS, place), errs, |k| {
            (kind == Kind::Secrets && allows(CLASS, ENTRY, k))
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
