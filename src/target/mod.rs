//! Targets: the systems that check a secret (a database role, a Redis ACL user, a hook).
//!
//! A [`Target`] makes a new version valid alongside the current one (`apply`), checks it
//! works (`test`), is told when it becomes current (`promote`), and makes an old version
//! invalid (`revoke`, `restore`). Every operation is idempotent: after a crash the same
//! call may arrive twice. Targets never log or return secret values.

use futures::future::BoxFuture;

use crate::domain::{ErrorKind, SecretRef, VersionNo};
use crate::generator::SecretValue;

pub mod none;

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
}

/// A system that checks a secret.
pub trait Target: Send + Sync + 'static {
    /// Short name for logs and metrics (`none`, `postgres`, ...).
    fn kind(&self) -> &'static str;

    /// Makes `version` valid on the target while the current version stays valid.
    fn apply<'a>(
        &'a self,
        secret: &'a SecretRef,
        version: VersionNo,
        value: &'a SecretValue,
    ) -> BoxFuture<'a, Result<(), TargetError>>;

    /// Proves `version` works (e.g. logs in with it).
    fn test<'a>(
        &'a self,
        secret: &'a SecretRef,
        version: VersionNo,
        value: &'a SecretValue,
    ) -> BoxFuture<'a, Result<(), TargetError>>;

    /// `version` is now current (labels already moved); `previous` is still valid.
    fn promote<'a>(
        &'a self,
        secret: &'a SecretRef,
        version: VersionNo,
        previous: Option<VersionNo>,
    ) -> BoxFuture<'a, Result<(), TargetError>>;

    /// Makes `version` invalid. Revoking an unknown or already revoked version succeeds.
    fn revoke<'a>(
        &'a self,
        secret: &'a SecretRef,
        version: VersionNo,
    ) -> BoxFuture<'a, Result<(), TargetError>>;

    /// Rollback during grace: `restore` is the valid, handed-out version again and
    /// `revoke` is made invalid.
    fn restore<'a>(
        &'a self,
        secret: &'a SecretRef,
        restore: VersionNo,
        revoke: VersionNo,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        let _ = restore;
        self.revoke(secret, revoke)
    }
}
