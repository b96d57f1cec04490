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

type S<T> = Spanned<T>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub server: Option<S<RawServer>>,
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
    pub notify: Vec<S<RawNotify>>,
    pub metrics: Option<S<RawMetrics>>,
    pub cache: Option<S<RawCache>>,
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

/// All channel keys of all types in one struct: the schema walk has already checked that
/// only the keys of the named type are present.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
    pub name: Option<S<String>>,
    pub events: Option<S<Vec<S<String>>>>,
    pub min_severity: Option<S<String>>,
    pub url: Option<S<String>>,
    pub url_file: Option<S<String>>,
    pub secret_file: Option<S<String>>,
    /// PEM file of a CA to trust for an `https://` receiver, besides the system's roots.
    pub ca_file: Option<S<String>>,
    pub queue_capacity: Option<S<i64>>,
    pub max_attempts: Option<S<i64>>,
    pub retry_backoff: Option<S<String>>,
    pub retry_backoff_max: Option<S<String>>,
    pub timeout: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Option<S<String>>,
    pub admin_token_file: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
    pub path: Option<S<String>>,
    pub master_key_file: Option<S<String>>,
    // `type = "vault"` (the schema walk checked which keys each type allows).
    pub address: Option<S<String>>,
    pub mount: Option<S<String>>,
    pub path_prefix: Option<S<String>>,
    pub namespace: Option<S<String>>,
    pub ca_file: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub max_attempts: Option<S<i64>>,
    pub retry_backoff: Option<S<String>>,
    pub auth: Option<S<RawVaultAuth>>,
}

/// `[store] auth = { method = "kubernetes" | "token", ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVaultAuth {
    pub method: Option<S<String>>,
    pub role: Option<S<String>>,
    pub token_file: Option<S<String>>,
    pub mount: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRuntime {
    pub max_concurrent_rotations: Option<S<i64>>,
    pub shutdown_timeout: Option<S<String>>,
    pub retry_backoff: Option<S<String>>,
    pub retry_backoff_max: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWatch {
    pub enabled: Option<S<bool>>,
    pub max_reloads_per_minute: Option<S<i64>>,
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

/// All reload keys of all types in one struct (the schema walk checked which keys the
/// named type allows).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReload {
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
    pub url: Option<S<String>>,
    pub method: Option<S<String>>,
    /// `http` over `https://`: a PEM CA bundle trusted besides the system's roots.
    pub ca_file: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub expected_status: Option<S<i64>>,
    pub signal: Option<S<String>>,
    pub pid_file: Option<S<String>>,
    pub command: Option<S<Vec<S<String>>>>,
    pub max_attempts: Option<S<i64>>,
    pub backoff: Option<S<String>>,
}

/// `[[publish]]`: a directory rotor writes the current versions into, kubelet style.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPublish {
    pub path: Option<S<String>>,
    /// An array of `tenant/key` (file name = key) or a table file name -> `tenant/key`.
    pub secrets: Option<S<RawPublishSecrets>>,
    pub interval: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawPublishSecrets {
    List(Vec<String>),
    Map(BTreeMap<String, String>),
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
    pub target: Option<S<RawTarget>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
    /// `none` only: simulated latency of every step (demos and tests).
    pub delay: Option<S<String>>,
    /// `postgres`, `redis`: file holding the admin connection URL.
    pub admin_url_file: Option<S<String>>,
    /// `postgres`: `alternating` or `single`.
    pub strategy: Option<S<String>>,
    /// `postgres`, `single` only: accept that no grace period is possible.
    pub acknowledge_no_grace: Option<S<bool>>,
    /// `postgres`, `alternating` only: end the old role's sessions at expiry.
    pub terminate_sessions: Option<S<bool>>,
    /// `postgres`: the login roles.
    pub roles: Option<S<Vec<S<String>>>>,
    /// `redis`: the ACL user.
    pub user: Option<S<String>>,
    /// `redis`: `auto`, `acl_save` or `none` (whether ACL changes are saved to the aclfile).
    pub persist: Option<S<String>>,
    /// `jwks`: the JWKS file.
    pub path: Option<S<String>>,
    /// `jwks`: `ed25519` or `hs256`.
    pub algorithm: Option<S<String>>,
    /// `exec`: argv of each step.
    pub apply: Option<S<Vec<S<String>>>>,
    pub test: Option<S<Vec<S<String>>>>,
    pub promote: Option<S<Vec<S<String>>>>,
    pub revoke: Option<S<Vec<S<String>>>>,
    pub restore: Option<S<Vec<S<String>>>>,
    /// `exec`, `webhook`: longest a step may take.
    pub timeout: Option<S<String>>,
    /// `webhook`: the endpoint.
    pub url: Option<S<String>>,
    /// `webhook`: file holding the request-signing key.
    pub hmac_key_file: Option<S<String>>,
    /// `webhook`: PEM CA trusted in addition to the system's roots.
    pub ca_file: Option<S<String>>,
    /// `none` only, test/demo hook: steps that fail.
    pub fail: Option<S<Vec<S<String>>>>,
    /// `none` only, test/demo hook: `fail` applies only while this file exists.
    pub fail_file: Option<S<String>>,
}
