//! Targets: the systems that check a secret (a database role, a Redis ACL user, a hook).
//!
//! A [`Target`] makes a new version valid alongside the current one (`apply`), checks it
//! works (`test`), is told when it becomes current (`promote`), and makes an old version
//! invalid (`revoke`, `restore`). Every operation is idempotent: after a crash the same
//! call may arrive twice. Targets never log or return secret values.
//!
//! `verify` tells whether the target still holds the current version ([`Verified`]): a
//! Redis restarted without its aclfile or a database restored from a backup forgets it, and
//! the rotation actor then re-applies it (`apply`, then `test`). Only a refusal of the
//! credential itself says "lost"; an unreachable target is an error, never "lost".
//!
//! One module per integration, with its configuration beside it (`postgres.rs` and
//! `postgres/config.rs`: the keys, their checks, and `build()`). [`TargetConfig`] picks one
//! by the table's `type`, and `TargetConfig::build` makes the target:
//!
//! - [`none`]: store only.
//! - [`postgres`]: PostgreSQL roles, `alternating` (two roles) or `single`.
//! - [`redis`]: a Redis ACL user holding the current and previous passwords.
//! - [`jwks`]: a JWKS file with the current and, during grace, the previous key.
//! - [`exec`]: a user's command per step, the value on stdin.
//! - [`webhook`]: a user's HTTP endpoint per step, HMAC-signed.
//!
//! Targets that need the value of an older version (to remove a Redis password, to drop a
//! JWK, to hand a hook the key to revoke), or to know which version is current (the
//! PostgreSQL role consumers log in as), read it through the [`ValueReader`] they were
//! built with: the store behind the secret cache ([`crate::store::cache`]).

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::domain::{ErrorKind, SecretRef, VersionNo};
use crate::generator::SecretValue;
use crate::store::ReadValue;

pub mod config;
mod credentials;
pub mod exec;
pub mod jwks;
pub mod none;
pub mod postgres;
pub mod redis;
mod resp;
pub mod webhook;

pub use config::TargetConfig;

/// How targets read stored values of a secret and which version is current (through the
/// cache in production): reading only, so a target cannot write a version, a label or a
/// journal.
pub type ValueReader = Arc<dyn ReadValue>;

/// A failed target operation. The message names the target and what failed, never a value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{target} {operation} for {secret} v{version}: {message}")]
pub struct TargetError {
    pub target: &'static str,
    pub operation: &'static str,
    pub secret: String,
    pub version: VersionNo,
    pub message: String,
    pub kind: ErrorKind,
    /// The target refused the secret's own credential (PostgreSQL SQLSTATE 28P01 or 28000
    /// at login, Redis `WRONGPASS`), as opposed to being unreachable or failing otherwise:
    /// the sign that the target may have lost a version, so a verify follows.
    pub refused: bool,
}

/// What [`Target::verify`] found out about a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// The version works on the target.
    Holds,
    /// The target refused the version's credential: it lost it (or an operator changed it).
    Lost,
    /// The target has no way to tell (`none`, `jwks`, `exec`, `webhook`).
    Unsupported,
}

/// A system that checks one secret: a target is built for the secret it serves, so its
/// steps name only the version.
#[async_trait::async_trait]
pub trait Target: Send + Sync + 'static {
    /// The target's `type` in the configuration (`none`, `postgres`, ...), for logs and
    /// metrics.
    fn type_name(&self) -> &'static str;

    /// Whether every step of this target is work in memory only: no system behind it, no
    /// wait, nothing that can half-happen. The rotation actor then runs such a target's
    /// steps in line and commits the attempt's state once where a crash must be able to
    /// resume, instead of once per step: re-running a step of this target after a crash
    /// changes nothing anywhere. The default is `false`; only the store-only `none` target
    /// without a simulated delay says `true`.
    fn steps_in_memory(&self) -> bool {
        false
    }

    /// Whether every step of this target succeeds at once with nothing to do, so a caller
    /// may take the steps as done without running them (a first start then creates the
    /// first version in bulk). Only `none` says so, and not while a test makes it fail or
    /// wait; the default is `false`.
    fn store_only(&self) -> bool {
        false
    }

    /// Turns a freshly generated value into what is stored for `version` (what consumers
    /// read): e.g. `{"username","password","url"}` for PostgreSQL. Called once per version,
    /// before the value is stored, while the version that was current when the attempt
    /// started is still labelled `current` (PostgreSQL's `alternating` reads it to pick the
    /// other role). The default stores the generated value as it is.
    async fn shape_value(
        &self,
        version: VersionNo,
        generated: SecretValue,
    ) -> Result<SecretValue, TargetError> {
        let _ = version;
        Ok(generated)
    }

    /// Makes `version` valid on the target while the current version stays valid.
    async fn apply(&self, version: VersionNo, value: &SecretValue) -> Result<(), TargetError>;

    /// Proves `version` works (e.g. logs in with it).
    async fn test(&self, version: VersionNo, value: &SecretValue) -> Result<(), TargetError>;

    /// `version` is now current (labels already moved); `previous` is still valid. Most
    /// targets have nothing to do here (both versions already work), hence the default.
    async fn promote(
        &self,
        version: VersionNo,
        previous: Option<VersionNo>,
    ) -> Result<(), TargetError> {
        let _ = (version, previous);
        Ok(())
    }

    /// Makes `version` invalid. Revoking an unknown or already revoked version succeeds.
    async fn revoke(&self, version: VersionNo) -> Result<(), TargetError>;

    /// Rollback during grace: `restore` is the valid, handed-out version again and
    /// `revoke` is made invalid.
    async fn restore(&self, restore: VersionNo, revoke: VersionNo) -> Result<(), TargetError> {
        let _ = restore;
        self.revoke(revoke).await
    }

    /// Whether the target still holds `version` (the current one, while no rotation is in
    /// flight). `Lost` only when the target refused the credential itself; a target that
    /// cannot be reached is an `Err`, so an outage never leads to a re-apply. The default
    /// is `Unsupported`: calling a user's hook or endpoint on a timer would be a surprise,
    /// and a JWKS file rotor writes itself is not "forgotten" by a restart.
    async fn verify(
        &self,
        version: VersionNo,
        value: &SecretValue,
    ) -> Result<Verified, TargetError> {
        let _ = (version, value);
        Ok(Verified::Unsupported)
    }

    /// A document safe to serve to anyone: the public key set a `jwks` target with
    /// `ed25519` publishes. `None` (the default) for every target that holds no such thing,
    /// including `hs256` key sets, which are shared secrets.
    fn public_key_set(&self) -> Option<BoxFuture<'_, Result<Vec<u8>, String>>> {
        None
    }
}

impl TargetError {
    /// The one way a target reports a failure: `target`'s `operation` on `secret`
    /// v`version`. The kind follows from the operation (`apply`, `test`, `revoke` and
    /// `restore` have their own; `generate`, `promote` and anything else are internal), so
    /// every target counts the same step the same way. `message` must not hold a value:
    /// callers build it from server error codes and names only.
    pub fn new(
        target: &'static str,
        operation: &'static str,
        secret: &SecretRef,
        version: VersionNo,
        message: impl Into<String>,
    ) -> Self {
        let kind = match operation {
            "apply" => ErrorKind::Apply,
            // A verify is a test of the current version.
            "test" | "verify" => ErrorKind::Test,
            "revoke" | "restore" => ErrorKind::Revoke,
            _ => ErrorKind::Internal,
        };
        TargetError {
            target,
            operation,
            secret: secret.to_string(),
            version,
            message: message.into(),
            kind,
            refused: false,
        }
    }

    /// Marks the error as the target refusing the secret's credential (see
    /// [`TargetError::refused`]).
    pub fn credential_refused(mut self) -> Self {
        self.refused = true;
        self
    }
}

/// Replaces every occurrence of `secret` in `text` (a server or hook message) so that an
/// error that echoes a value reveals nothing. Empty secrets change nothing.
pub(crate) fn scrub(text: &str, secrets: &[&[u8]]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if let Ok(s) = std::str::from_utf8(s)
            && !s.is_empty()
        {
            out = out.replace(s, "<redacted>");
        }
    }
    out
}

/// Builds a JSON object from string fields into a buffer sized up front, so no partial copy
/// of a value is left behind by a reallocation.
pub(crate) fn json_value(fields: &[(&str, &str)]) -> SecretValue {
    let len: usize = fields
        .iter()
        .map(|(k, v)| 6 * (k.len() + v.len()) + 8)
        .sum();
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(len + 2));
    out.push(b'{');
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // `to_writer` on a `&str` escapes into the pre-sized buffer; writes to a Vec
        // cannot fail.
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, v);
    }
    out.push(b'}');
    SecretValue::from_bytes(std::mem::take(&mut *out))
}
