//! Stage one: walk the spanned TOML document against the shape of a rotor config, report
//! every unknown key and every value of the wrong type, and prune them.
//!
//! serde stops at its first error; this walk does not, so one run reports all of them.
//! What survives the walk deserializes into the raw structs ([`super::raw`]) without
//! error, and the pruned key paths are remembered so that stage two does not also report
//! them as missing.
//!
//! The shape of the keys every integration owns (a target's, a store's, a notifier
//! channel's, a reload action's, a publish destination's) is declared beside
//! that integration's raw struct (`FIELDS` or `TYPES` in its `config` module) and only
//! named here.
//! The shape and the raw structs describe the same keys twice; the test
//! `every_schema_key_deserializes` in `super` keeps them in step.

use std::collections::HashSet;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::Diagnostics;

/// The type a key must have.
pub(crate) enum Ty {
    Str,
    /// A humane duration string; the type error gives an example.
    Duration,
    Int,
    Bool,
    StrList,
    /// A table of string values under names chosen by the user (`files = { a = "t/k" }`).
    StrMap,
    /// Either an array of strings or a table of strings (`[[publish]] secrets`).
    StrListOrMap,
    Table(&'static [Field]),
    /// A table whose `type` key selects which other keys are allowed.
    Tagged {
        what: &'static str,
        variants: &'static [(&'static str, &'static [Field])],
    },
    /// `[[name]]`: an array of tables.
    TableList(&'static [Field]),
    /// `[[name]]`: an array of tables, each with a `type` key ([`Ty::Tagged`]).
    TaggedList {
        what: &'static str,
        variants: &'static [(&'static str, &'static [Field])],
    },
    /// A table whose keys are names chosen by the user (policies).
    NamedTables(&'static [Field]),
}

pub(crate) struct Field {
    pub name: &'static str,
    pub ty: Ty,
}

pub(crate) const fn f(name: &'static str, ty: Ty) -> Field {
    Field { name, ty }
}

const SERVER: &[Field] = &[
    f("listen", Ty::Str),
    f("admin_token_file", Ty::Str),
    f("consumer_token_file", Ty::Str),
    f("max_connections", Ty::Int),
];

const HA: &[Field] = &[
    f("enabled", Ty::Bool),
    f("id", Ty::Str),
    f("advertise_url", Ty::Str),
    f("lease_duration", Ty::Duration),
];

const CONSUMERS: &[Field] = &[
    f("ttl", Ty::Duration),
    f("max_concurrent_reloads", Ty::Int),
    f("permit_timeout", Ty::Duration),
];

const RUNTIME: &[Field] = &[
    f("max_concurrent_rotations", Ty::Int),
    f("shutdown_timeout", Ty::Duration),
    f("retry_backoff", Ty::Duration),
    f("retry_backoff_max", Ty::Duration),
    f("first_versions_in_bulk", Ty::Bool),
    f("hibernate_after", Ty::Duration),
];

pub(super) const WATCH: &[Field] = &[
    f("enabled", Ty::Bool),
    f("max_reloads_per_minute", Ty::Int),
    f("max_file_size", Ty::Int),
];

pub(super) const MOUNT: &[Field] = &[
    f("path", Ty::Str),
    f("debounce", Ty::Duration),
    f("poll_interval", Ty::Duration),
    f("health_check_interval", Ty::Duration),
    f("critical", Ty::StrList),
    f(
        "reload",
        Ty::Tagged {
            what: "reload action",
            variants: crate::watch::reload::config::TYPES,
        },
    ),
    f("files", Ty::StrMap),
];

const WINDOW: &[Field] = &[
    f("cron", Ty::Str),
    f("duration", Ty::Duration),
    f("timezone", Ty::Str),
];

const PASSWORD: &[Field] = &[
    f("length", Ty::Int),
    f("lower", Ty::Bool),
    f("upper", Ty::Bool),
    f("digits", Ty::Bool),
    f("symbols", Ty::Bool),
];
const TOKEN: &[Field] = &[
    f("bytes", Ty::Int),
    f("prefix", Ty::Str),
    f("encoding", Ty::Str),
];
const HMAC: &[Field] = &[f("bytes", Ty::Int)];

pub(super) const GENERATOR_TYPES: &[(&str, &[Field])] = &[
    ("password", PASSWORD),
    ("token", TOKEN),
    ("hmac", HMAC),
    ("ed25519", &[]),
];

const POLICY: &[Field] = &[
    f("interval", Ty::Duration),
    f("cron", Ty::Str),
    f("timezone", Ty::Str),
    f("manual", Ty::Bool),
    f("grace", Ty::Duration),
    f("jitter", Ty::Duration),
    f("window", Ty::Table(WINDOW)),
    f(
        "generator",
        Ty::Tagged {
            what: "generator",
            variants: GENERATOR_TYPES,
        },
    ),
    f("max_attempts", Ty::Int),
    f("expire_after", Ty::Str),
    f("max_grace_extension", Ty::Duration),
    f("verify_interval", Ty::Duration),
];

/// A `[[secrets]]` entry's `target`.
const SECRET_TARGET: Ty = Ty::Tagged {
    what: "target",
    variants: crate::target::config::TYPES,
};

const SECRET: &[Field] = &[
    f("tenant", Ty::Str),
    f("key", Ty::Str),
    f("policy", Ty::Str),
    f("target", SECRET_TARGET),
];

const METRICS: &[Field] = &[f("per_secret", Ty::Bool)];

const CACHE: &[Field] = &[f("ttl", Ty::Duration), f("max_entries", Ty::Int)];

/// The whole document.
pub(super) const ROOT: &[Field] = &[
    f("server", Ty::Table(SERVER)),
    f(
        "store",
        Ty::Tagged {
            what: "store",
            variants: &[
                ("embedded", crate::store::embedded::config::FIELDS),
                ("vault", crate::store::vault::config::FIELDS),
            ],
        },
    ),
    f("runtime", Ty::Table(RUNTIME)),
    f("watch", Ty::Table(WATCH)),
    f("mounts", Ty::TableList(MOUNT)),
    f("publish", Ty::TableList(crate::publish::config::FIELDS)),
    f("policies", Ty::NamedTables(POLICY)),
    f("secrets", Ty::TableList(SECRET)),
    f("secret_sets", Ty::TableList(super::sets::FIELDS)),
    f(
        "notify",
        Ty::TaggedList {
            what: "notify channel",
            variants: crate::notify::config::TYPES,
        },
    ),
    f("metrics", Ty::Table(METRICS)),
    f("cache", Ty::Table(CACHE)),
    f("consumers", Ty::Table(CONSUMERS)),
    f("ha", Ty::Table(HA)),
];

/// Checks `root` against [`ROOT`], reporting and removing what does not fit. Returns the
/// key paths that were removed.
pub(super) fn check_document(
    diag: &mut Diagnostics<'_>,
    root: &mut DeTable<'_>,
) -> HashSet<String> {
    check_document_with(diag, root, ROOT)
}

/// [`check_document`] for a residual document (the fast path's, `super::fast`): its k-th
/// `[[secrets]]` entry is `secrets[secrets_index[k]]` of the whole document, in messages
/// and in the pruned key paths.
pub(super) fn check_residual(
    diag: &mut Diagnostics<'_>,
    root: &mut DeTable<'_>,
    secrets_index: &[u32],
) -> HashSet<String> {
    let mut walk = Walk {
        diag,
        pruned: HashSet::new(),
        secrets_index,
    };
    walk.table("", root, ROOT);
    walk.pruned
}

/// Checks the `target` of the `[[secrets]]` entry whose target's key path is `path`, as
/// the walk of a whole document does: `false` when it must be removed (and reported).
/// Returns that and the key paths removed inside it.
pub(super) fn check_value(
    diag: &mut Diagnostics<'_>,
    path: &str,
    target: &mut Spanned<DeValue<'_>>,
) -> (bool, HashSet<String>) {
    let mut walk = Walk {
        diag,
        pruned: HashSet::new(),
        secrets_index: &[],
    };
    let kept = walk.value(path, target, &SECRET_TARGET);
    (kept, walk.pruned)
}

/// Checks `root` against `fields` (another kind of document: the agent's), reporting and
/// removing what does not fit. Returns the key paths that were removed.
pub(super) fn check_document_with(
    diag: &mut Diagnostics<'_>,
    root: &mut DeTable<'_>,
    fields: &[Field],
) -> HashSet<String> {
    let mut walk = Walk {
        diag,
        pruned: HashSet::new(),
        secrets_index: &[],
    };
    walk.table("", root, fields);
    walk.pruned
}

struct Walk<'d, 's> {
    diag: &'d mut Diagnostics<'s>,
    pruned: HashSet<String>,
    /// Where each `[[secrets]]` entry of the walked document is among all of them; empty
    /// when it is the whole document.
    secrets_index: &'d [u32],
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Walk<'_, '_> {
    /// Checks every key of `table` against `fields`; removes unknown and ill-typed ones.
    fn table(&mut self, path: &str, table: &mut DeTable<'_>, fields: &[Field]) {
        let mut remove = Vec::new();
        for (key, value) in table.iter_mut() {
            let name: &str = key.get_ref();
            let key_path = join(path, name);
            match fields.iter().find(|field| field.name == name) {
                None => {
                    let names: Vec<&str> = fields.iter().map(|field| field.name).collect();
                    self.diag.at(
                        Some(key.span()),
                        &key_path,
                        unknown_key_message(name, &names),
                    );
                    remove.push(name.to_owned());
                }
                Some(field) => {
                    if !self.value(&key_path, value, &field.ty) {
                        remove.push(name.to_owned());
                    }
                }
            }
        }
        for name in remove {
            table.remove(name.as_str());
            self.pruned.insert(join(path, &name));
        }
    }

    /// Checks one value; `false` means the caller must remove it.
    fn value(&mut self, path: &str, value: &mut Spanned<DeValue<'_>>, ty: &Ty) -> bool {
        let span = value.span();
        let found = value.get_ref().type_str();
        match (ty, value.get_mut()) {
            (Ty::Str, DeValue::String(_))
            | (Ty::Duration, DeValue::String(_))
            | (Ty::Int, DeValue::Integer(_))
            | (Ty::Bool, DeValue::Boolean(_)) => true,
            (Ty::StrList | Ty::StrListOrMap, DeValue::Array(items)) => {
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    if !item.get_ref().is_str() {
                        let found = item.get_ref().type_str();
                        self.diag.value(
                            item.span(),
                            &format!("{path}[{i}]"),
                            format!("expected a string, found {}", article(found)),
                        );
                        ok = false;
                    }
                }
                ok
            }
            (Ty::StrMap | Ty::StrListOrMap, DeValue::Table(table)) => {
                let mut ok = true;
                for (key, item) in table.iter() {
                    if !item.get_ref().is_str() {
                        let found = item.get_ref().type_str();
                        self.diag.value(
                            item.span(),
                            &join(path, key.get_ref()),
                            format!("expected a string, found {}", article(found)),
                        );
                        ok = false;
                    }
                }
                ok
            }
            (Ty::Table(fields), DeValue::Table(table)) => {
                self.table(path, table, fields);
                true
            }
            (Ty::Tagged { what, variants }, DeValue::Table(table)) => {
                self.tagged(path, span, table, what, variants)
            }
            (Ty::TableList(fields), DeValue::Array(items)) => {
                let mut ok = true;
                for (i, item) in items.iter_mut().enumerate() {
                    let shown = match self.secrets_index.get(i) {
                        Some(global) if path == "secrets" => *global as usize,
                        _ => i,
                    };
                    let item_path = format!("{path}[{shown}]");
                    let item_span = item.span();
                    let item_found = item.get_ref().type_str();
                    match item.get_mut() {
                        DeValue::Table(table) => self.table(&item_path, table, fields),
                        _ => {
                            self.diag.value(
                                item_span,
                                &item_path,
                                format!("expected a table, found {}", article(item_found)),
                            );
                            ok = false;
                        }
                    }
                }
                ok
            }
            (Ty::TaggedList { what, variants }, DeValue::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    let item_span = item.span();
                    let item_found = item.get_ref().type_str();
                    let keep = match item.get_mut() {
                        DeValue::Table(table) => {
                            self.tagged(&item_path, item_span.clone(), table, what, variants)
                        }
                        _ => {
                            self.diag.value(
                                item_span,
                                &item_path,
                                format!("expected a table, found {}", article(item_found)),
                            );
                            false
                        }
                    };
                    // A bad entry becomes an empty table (no `type`: stage two skips it)
                    // rather than being removed, so the other entries keep their indices
                    // and are still checked.
                    if !keep {
                        *item.get_mut() = DeValue::Table(DeTable::new());
                    }
                }
                true
            }
            (Ty::NamedTables(fields), DeValue::Table(table)) => {
                let mut remove = Vec::new();
                for (key, item) in table.iter_mut() {
                    let name: &str = key.get_ref();
                    let item_path = join(path, name);
                    let item_span = item.span();
                    let item_found = item.get_ref().type_str();
                    match item.get_mut() {
                        DeValue::Table(inner) => self.table(&item_path, inner, fields),
                        _ => {
                            self.diag.value(
                                item_span,
                                &item_path,
                                format!("expected a table, found {}", article(item_found)),
                            );
                            remove.push(name.to_owned());
                        }
                    }
                }
                for name in remove {
                    table.remove(name.as_str());
                    self.pruned.insert(join(path, &name));
                }
                true
            }
            (ty, _) => {
                let mut message = format!("expected {}, found {}", expected(ty), article(found));
                if matches!(ty, Ty::Duration) {
                    message.push_str(
                        "; durations are strings such as \"30s\", \"10m\", \"24h\" or \"90d\"",
                    );
                }
                self.diag.value(span, path, message);
                false
            }
        }
    }

    /// A table whose `type` selects the allowed keys (generator, target, store).
    fn tagged(
        &mut self,
        path: &str,
        span: std::ops::Range<usize>,
        table: &mut DeTable<'_>,
        what: &str,
        variants: &[(&'static str, &'static [Field])],
    ) -> bool {
        let names: Vec<&str> = variants.iter().map(|(name, _)| *name).collect();
        let type_path = join(path, "type");
        let Some(tag) = table.get("type") else {
            self.diag.at(
                Some(span),
                &type_path,
                format!(
                    "missing key `type`; the {what} type is one of: {}",
                    names.join(", ")
                ),
            );
            return false;
        };
        let Some(tag_name) = tag.get_ref().as_str() else {
            self.diag.value(
                tag.span(),
                &type_path,
                format!(
                    "expected a string naming the {what} type ({}), found {}",
                    names.join(", "),
                    article(tag.get_ref().type_str())
                ),
            );
            return false;
        };
        let Some((tag_name, fields)) = variants.iter().find(|(name, _)| *name == tag_name) else {
            self.diag.value(
                tag.span(),
                &type_path,
                format!("unknown {what} type; expected one of: {}", names.join(", ")),
            );
            return false;
        };
        // `type` itself is allowed in every variant; the rest depends on it.
        let mut remove = Vec::new();
        for (key, value) in table.iter_mut() {
            let name: &str = key.get_ref();
            if name == "type" {
                continue;
            }
            let key_path = join(path, name);
            match fields.iter().find(|field| field.name == name) {
                None => {
                    let allowed: Vec<&str> = fields.iter().map(|field| field.name).collect();
                    let message = if allowed.is_empty() {
                        format!("unknown key; a {tag_name} {what} takes no keys besides `type`")
                    } else {
                        format!(
                            "unknown key for a {tag_name} {what}; {}",
                            unknown_key_message(name, &allowed)
                        )
                    };
                    self.diag.at(Some(key.span()), &key_path, message);
                    remove.push(name.to_owned());
                }
                Some(field) => {
                    if !self.value(&key_path, value, &field.ty) {
                        remove.push(name.to_owned());
                    }
                }
            }
        }
        for name in remove {
            table.remove(name.as_str());
            self.pruned.insert(join(path, &name));
        }
        true
    }
}

fn expected(ty: &Ty) -> &'static str {
    match ty {
        Ty::Str => "a string",
        Ty::Duration => "a duration string",
        Ty::Int => "an integer",
        Ty::Bool => "true or false",
        Ty::StrList => "an array of strings",
        Ty::StrMap => "a table of strings",
        Ty::StrListOrMap => "an array of strings or a table of strings",
        Ty::Table(_) | Ty::Tagged { .. } | Ty::NamedTables(_) => "a table",
        Ty::TableList(_) | Ty::TaggedList { .. } => "an array of tables",
    }
}

fn article(type_name: &str) -> String {
    match type_name {
        "integer" | "array" => format!("an {type_name}"),
        other => format!("a {other}"),
    }
}

/// "unknown key; did you mean `grace`? expected one of: ..." (the suggestion only when a
/// known key is a typo away).
fn unknown_key_message(name: &str, known: &[&str]) -> String {
    let closest = known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min();
    let list = known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    match closest {
        Some((_, k)) => format!("unknown key; did you mean `{k}`? (expected one of: {list})"),
        None => format!("unknown key; expected one of: {list}"),
    }
}

/// Levenshtein distance, for typo suggestions on short key names.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("grace", "grace"), 0);
        assert_eq!(edit_distance("grce", "grace"), 1);
        assert_eq!(edit_distance("intervall", "interval"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn suggests_close_keys_only() {
        let msg = unknown_key_message("grase", &["grace", "jitter"]);
        assert!(msg.contains("did you mean `grace`"), "{msg}");
        let msg = unknown_key_message("reload", &["grace", "jitter"]);
        assert!(!msg.contains("did you mean"), "{msg}");
    }
}
