//! The `none` target: store-only secrets. Nothing checks them, so every step succeeds.
//!
//! For tests and demos it can be told to fail a step ([`NoneTarget::fail`]): that is how a
//! rotation failure is produced without a real system behind it.

use std::sync::Mutex;

use futures::future::BoxFuture;

use super::{Target, TargetError};
use crate::domain::{ErrorKind, SecretRef, VersionNo};
use crate::generator::SecretValue;

/// Store-only target.
#[derive(Debug, Default)]
pub struct NoneTarget {
    /// Operations that fail on purpose (`"apply"`, `"test"`, `"revoke"`), for tests.
    failing: Mutex<Vec<&'static str>>,
    /// How long every step takes (a simulated slow target).
    delay: std::time::Duration,
}

impl NoneTarget {
    pub fn new() -> Self {
        Self::default()
    }

    /// A target whose every step takes `delay`.
    pub fn with_delay(delay: std::time::Duration) -> Self {
        NoneTarget {
            delay,
            ..Self::default()
        }
    }

    /// Makes `operation` fail until [`NoneTarget::heal`] is called.
    pub fn fail(&self, operation: &'static str) {
        if let Ok(mut f) = self.failing.lock() {
            f.push(operation);
        }
    }

    pub fn heal(&self) {
        if let Ok(mut f) = self.failing.lock() {
            f.clear();
        }
    }

    async fn pause(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }

    fn check(
        &self,
        operation: &'static str,
        secret: &SecretRef,
        version: VersionNo,
        kind: ErrorKind,
    ) -> Result<(), TargetError> {
        let failing = self
            .failing
            .lock()
            .map(|f| f.contains(&operation))
            .unwrap_or(false);
        if failing {
            return Err(TargetError {
                target: "none",
                operation,
                secret: secret.to_string(),
                version,
                message: "failure injected for testing".into(),
                kind,
            });
        }
        Ok(())
    }
}

impl Target for NoneTarget {
    fn kind(&self) -> &'static str {
        "none"
    }

    fn apply<'a>(
        &'a self,
        secret: &'a SecretRef,
        version: VersionNo,
        _value: &'a SecretValue,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            self.pause().await;
            self.check("apply", secret, version, ErrorKind::Apply)
        })
    }

    fn test<'a>(
        &'a self,
        secret: &'a SecretRef,
        version: VersionNo,
        _value: &'a SecretValue,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            self.pause().await;
            self.check("test", secret, version, ErrorKind::Test)
        })
    }

    fn promote<'a>(
        &'a self,
        secret: &'a SecretRef,
        version: VersionNo,
        _previous: Option<VersionNo>,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            self.pause().await;
            self.check("promote", secret, version, ErrorKind::Internal)
        })
    }

    fn revoke<'a>(
        &'a self,
        secret: &'a SecretRef,
        version: VersionNo,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            self.pause().await;
            self.check("revoke", secret, version, ErrorKind::Revoke)
        })
    }
}
