//! Raw configuration: the TOML file as written, before any meaning is checked.
//!
//! Every field is optional and spanned: whether a key is required, and whether its value
//! makes sense, is decided in stage two ([`super::validate`]), which needs the span to say
//! where a bad value is. Numbers are `i64` so that a negative count gets a clear message
//! instead of a serde type error. `deny_unknown_fields` is a second line of defence; the
//! schema walk ([`super::schema`]) reports unknown keys first, all of them.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::sets::RawSecretSet;
use crate::notify::config::RawNotify;
use crate::publish::config::RawPublish;
use crate::store::embedded::config::RawEmbedded;
use crate::store::vault::config::RawVault;
use crate::target::config::RawTarget;
use crate::watch::reload::config::RawReload;

type S<T> = Spanned<T>;

/// Deserializes the document checked by the schema walk.
///
/// A table whose `type` picks its keys (the store, each secret's target) is taken out of
/// the document first and deserialized on its own into the raw struct of that type, owned
/// by the integration: serde's own tagged enums buffer their input and lose the spans
/// every message needs.
pub(super) fn parse(mut doc: Spanned<DeTable<'_>>) -> Result<RawConfig, toml::de::Error> {
    let root = doc.get_mut();
    let store = take_typed(root, "store");
    let targets = take_targets(root, "secrets");
    let set_targets = take_targets(root, "secret_sets");
    let mut raw = RawConfig::deserialize(toml::Deserializer::from(doc))?;
    if let Some((kind, keys)) = store {
        raw.store = Some(typed(keys, |de| RawStore::deserialize(&kind, de))?);
    }
    for (i, (kind, keys)) in targets {
        if let Some(secret) = raw.secrets.get_mut(i) {
            secret.get_mut().target = Some(typed(keys, |de| RawTarget::deserialize(&kind, de))?);
        }
    }
    for (i, (kind, keys)) in set_targets {
        if let Some(set) = raw.secret_sets.get_mut(i) {
            set.get_mut().target = Some(typed(keys, |de| RawTarget::deserialize(&kind, de))?);
        }
    }
    Ok(raw)
}

/// The raw target of a `[[secrets]]` entry the fast path took (`super::fast`), from its
/// inline table as the schema walk left it; `None` when it has no `type` (reported).
pub(super) fn typed_target(
    mut value: Spanned<DeValue<'_>>,
) -> Result<Option<S<RawTarget>>, toml::de::Error> {
    let DeValue::Table(keys) = value.get_mut() else {
        return Ok(None);
    };
    let Some(kind) = keys
        .remove("type")
        .and_then(|t| t.get_ref().as_str().map(str::to_owned))
    else {
        return Ok(None);
    };
    typed(value, |de| RawTarget::deserialize(&kind, de)).map(Some)
}

/// Takes the typed `target` table out of every entry of the array of tables at `list`
/// (`secrets`, `secret_sets`), with the entry's index.
fn take_targets<'i>(
    root: &mut DeTable<'i>,
    list: &str,
) -> Vec<(usize, (String, Spanned<DeValue<'i>>))> {
    let mut targets = Vec::new();
    if let Some(DeValue::Array(entries)) = root.get_mut(list).map(|s| s.get_mut()) {
        for (i, entry) in entries.iter_mut().enumerate() {
            if let DeValue::Table(entry) = entry.get_mut()
                && let Some(target) = take_typed(entry, "target")
            {
                targets.push((i, target));
            }
        }
    }
    targets
}

/// Removes the table at `key` from `table` and its `type` from it: the type's name and
/// the remaining keys. `None` when absent (or dropped by the schema walk).
fn take_typed<'i>(table: &mut DeTable<'i>, key: &str) -> Option<(String, Spanned<DeValue<'i>>)> {
    let mut value = table.remove(key)?;
    let DeValue::Table(keys) = value.get_mut() else {
        return None;
    };
    let kind = keys.remove("type")?.get_ref().as_str()?.to_owned();
    Some((kind, value))
}

/// Deserializes `keys` with `f`, keeping the table's span.
fn typed<'i, T>(
    keys: Spanned<DeValue<'i>>,
    f: impl FnOnce(ValueDeserializer<'i>) -> Result<T, toml::de::Error>,
) -> Result<S<T>, toml::de::Error> {
    let span = keys.span();
    f(ValueDeserializer::from(keys)).map(|t| Spanned::new(span, t))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub server: Option<S<RawServer>>,
    /// Taken out of the document and deserialized by its `type` ([`parse`]).
    #[serde(skip)]
    pub store: Option<S<RawStore>>,
    pub runtime: Option<S<RawRuntime>>,
    pub watch: Option<S<RawWatch>>,
    #[serde(default)]
    pub mounts: Vec<S<RawMount>>,
    #[serde(default)]
    pub publish: Vec<S<RawPublish>>,
    #[serde(default)]
    pub policies: BTreeMap<String, S<RawPolicy>>,
    #[serde(default)]
    pub secrets: Vec<S<RawSecret>>,
    #[serde(default)]
    pub secret_sets: Vec<S<RawSecretSet>>,
    #[serde(default)]
    pub notify: Vec<S<RawNotify>>,
    pub metrics: Option<S<RawMetrics>>,
    pub cache: Option<S<RawCache>>,
    pub consumers: Option<S<RawConsumers>>,
    pub ha: Option<S<RawHa>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHa {
    pub enabled: Option<S<bool>>,
    pub id: Option<S<String>>,
    pub advertise_url: Option<S<String>>,
    pub lease_duration: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsumers {
    pub ttl: Option<S<String>>,
    pub max_concurrent_reloads: Option<S<i64>>,
    pub permit_timeout: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub ttl: Option<S<String>>,
    pub max_entries: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub per_secret: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Option<S<String>>,
    pub admin_token_file: Option<S<String>>,
    pub consumer_token_file: Option<S<String>>,
    pub max_connections: Option<S<i64>>,
}

/// `[store]`, split by its `type`. Boxed: the Vault keys are many next to the embedded two.
#[derive(Debug)]
pub(super) enum RawStore {
    Embedded(RawEmbedded),
    Vault(Box<RawVault>),
}

impl RawStore {
    fn deserialize<'de, D: serde::Deserializer<'de>>(
        kind: &str,
        keys: D,
    ) -> Result<Self, D::Error> {
        match kind {
            "embedded" => Ok(RawStore::Embedded(Deserialize::deserialize(keys)?)),
            "vault" => Ok(RawStore::Vault(Deserialize::deserialize(keys)?)),
            other => Err(serde::de::Error::custom(format!(
                "unknown store type {other}"
            ))),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRuntime {
    pub max_concurrent_rotations: Option<S<i64>>,
    pub shutdown_timeout: Option<S<String>>,
    pub retry_backoff: Option<S<String>>,
    pub retry_backoff_max: Option<S<String>>,
    pub first_versions_in_bulk: Option<S<bool>>,
    pub hibernate_after: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWatch {
    pub enabled: Option<S<bool>>,
    pub max_reloads_per_minute: Option<S<i64>>,
    /// Bytes; a larger visible file is skipped, not read.
    pub max_file_size: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMount {
    pub path: Option<S<String>>,
    pub debounce: Option<S<String>>,
    pub poll_interval: Option<S<String>>,
    pub health_check_interval: Option<S<String>>,
    pub critical: Option<S<Vec<S<String>>>>,
    pub reload: Option<S<RawReload>>,
    /// Visible file name to `tenant/key`.
    pub files: Option<S<BTreeMap<String, S<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub interval: Option<S<String>>,
    pub cron: Option<S<String>>,
    pub timezone: Option<S<String>>,
    pub manual: Option<S<bool>>,
    pub grace: Option<S<String>>,
    pub jitter: Option<S<String>>,
    pub window: Option<S<RawWindow>>,
    pub generator: Option<S<RawGenerator>>,
    pub max_attempts: Option<S<i64>>,
    pub expire_after: Option<S<String>>,
    pub max_grace_extension: Option<S<String>>,
    pub verify_interval: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindow {
    pub cron: Option<S<String>>,
    pub duration: Option<S<String>>,
    pub timezone: Option<S<String>>,
}

/// All generator keys of all types in one struct: the schema walk has already checked
/// that only the keys of the named type are present.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGenerator {
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
    pub length: Option<S<i64>>,
    pub lower: Option<S<bool>>,
    pub upper: Option<S<bool>>,
    pub digits: Option<S<bool>>,
    pub symbols: Option<S<bool>>,
    pub bytes: Option<S<i64>>,
    pub prefix: Option<S<String>>,
    pub encoding: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecret {
    pub tenant: Option<S<String>>,
    pub key: Option<S<String>>,
    pub policy: Option<S<String>>,
    /// Taken out of the document and deserialized by its `type` ([`parse`]).
    #[serde(skip)]
    pub target: Option<S<RawTarget>>,
}
