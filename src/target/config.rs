//! `secrets[i].target`: which system checks a secret, one variant per target type. Each
//! type's keys, checks and construction live in the `config` module beside its
//! implementation (`postgres/config.rs` beside `postgres.rs`); this enum only picks one,
//! by the table's `type`, and hands over to it.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::exec::config::{ExecConfig, RawExec};
use super::jwks::config::{JwksConfig, RawJwks};
use super::none::config::{NoneConfig, RawNone};
use super::postgres::config::{PostgresConfig, RawPostgres};
use super::redis::config::{RawRedis, RedisConfig};
use super::webhook::config::{RawWebhook, WebhookConfig};
use super::{Target, ValueReader};
use crate::config::{Field, Policy, Validator, join};
use crate::domain::SecretRef;

/// Longest a step of an `exec` or `webhook` target may take unless `timeout` says.
pub(crate) const DEFAULT_TARGET_TIMEOUT: Duration = Duration::from_secs(30);

/// The target types and the keys each takes besides `type`, for the schema walk.
pub(crate) const TYPES: &[(&str, &[Field])] = &[
    ("none", super::none::config::FIELDS),
    ("postgres", super::postgres::config::FIELDS),
    ("redis", super::redis::config::FIELDS),
    ("jwks", super::jwks::config::FIELDS),
    ("exec", super::exec::config::FIELDS),
    ("webhook", super::webhook::config::FIELDS),
];

/// The system that checks a secret's value, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetConfig {
    /// Store only: nothing outside rotor checks the value.
    None(NoneConfig),
    /// PostgreSQL login roles.
    Postgres(PostgresConfig),
    /// A Redis ACL user.
    Redis(RedisConfig),
    /// A JWKS file holding the current and, during grace, the previous key.
    Jwks(JwksConfig),
    /// A user's commands per step.
    Exec(ExecConfig),
    /// A user's HTTP endpoint per step, HMAC-signed.
    Webhook(WebhookConfig),
}

/// A target table as written, already split by its `type`.
#[derive(Debug)]
pub(crate) enum RawTarget {
    None(RawNone),
    Postgres(RawPostgres),
    Redis(RawRedis),
    Jwks(RawJwks),
    Exec(RawExec),
    Webhook(RawWebhook),
}

impl RawTarget {
    /// Deserializes the keys of a target whose `type` is `kind` (the schema walk has
    /// checked that it is one of [`TYPES`] and that only its keys are present).
    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        kind: &str,
        keys: D,
    ) -> Result<RawTarget, D::Error> {
        Ok(match kind {
            "none" => RawTarget::None(Deserialize::deserialize(keys)?),
            "postgres" => RawTarget::Postgres(Deserialize::deserialize(keys)?),
            "redis" => RawTarget::Redis(Deserialize::deserialize(keys)?),
            "jwks" => RawTarget::Jwks(Deserialize::deserialize(keys)?),
            "exec" => RawTarget::Exec(Deserialize::deserialize(keys)?),
            "webhook" => RawTarget::Webhook(Deserialize::deserialize(keys)?),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "unknown target type {other}"
                )));
            }
        })
    }
}

impl Default for TargetConfig {
    /// No `target` key: store only.
    fn default() -> Self {
        TargetConfig::None(NoneConfig::default())
    }
}

impl TargetConfig {
    /// The validated target of the secret at `secret_path`, or `None` when something was
    /// reported. `policy` is the secret's policy when it resolved, for cross-field checks
    /// (grace, generator).
    pub(crate) fn validate(
        v: &mut Validator<'_, '_>,
        secret_path: &str,
        raw: Option<&Spanned<RawTarget>>,
        policy: Option<&Policy>,
    ) -> Option<TargetConfig> {
        let Some(raw) = raw else {
            return Some(TargetConfig::default());
        };
        let path = join(secret_path, "target");
        let before = v.diag.len();
        let span = raw.span();
        let target = match raw.get_ref() {
            RawTarget::None(t) => TargetConfig::None(NoneConfig::validate(v, &path, t)),
            RawTarget::Postgres(t) => {
                TargetConfig::Postgres(PostgresConfig::validate(v, &path, span, t, policy))
            }
            RawTarget::Redis(t) => TargetConfig::Redis(RedisConfig::validate(v, &path, span, t)),
            RawTarget::Jwks(t) => {
                TargetConfig::Jwks(JwksConfig::validate(v, &path, span, t, policy))
            }
            RawTarget::Exec(t) => TargetConfig::Exec(ExecConfig::validate(v, &path, span, t)),
            RawTarget::Webhook(t) => {
                TargetConfig::Webhook(WebhookConfig::validate(v, &path, span, t)?)
            }
        };
        (v.diag.len() == before).then_some(target)
    }

    /// Builds the target of `secret` (one target per secret); `reader` is how it reads
    /// older values (through the secret cache). Everything was checked by validation:
    /// nothing here parses or fails.
    pub fn build(&self, secret: &SecretRef, reader: &ValueReader) -> Arc<dyn Target> {
        match self {
            TargetConfig::None(c) => c.build(secret, reader),
            TargetConfig::Postgres(c) => c.build(secret, reader),
            TargetConfig::Redis(c) => c.build(secret, reader),
            TargetConfig::Jwks(c) => c.build(secret, reader),
            TargetConfig::Exec(c) => c.build(secret, reader),
            TargetConfig::Webhook(c) => c.build(secret, reader),
        }
    }
}
