//! The `none` target: store-only secrets. Nothing checks them, so every step succeeds.
//!
//! With the `test-util` cargo feature, tests can tell it to fail a step (`NoneTarget::fail`):
//! that is how a rotation failure is produced without a real system behind it. The
//! configuration then has the same hook for tests that drive the real binary:
//! `target = { type = "none", fail = ["apply"], fail_file = "/tmp/fail" }` fails `apply`
//! while `/tmp/fail` exists, so a running rotor is broken and healed by creating and
//! removing a file. A release build has no such keys; a demo of a failing rotation uses an
//! `exec` target whose command fails.

pub mod config;

use std::sync::{Arc, Mutex};

use super::{Target, TargetError};
use crate::domain::{SecretRef, VersionNo};
use crate::generator::SecretValue;

/// Store-only target.
#[derive(Debug)]
pub struct NoneTarget {
    /// The secret this target serves.
    secret: SecretRef,
    /// Operations that fail on purpose (`"apply"`, `"test"`, `"revoke"`), for tests.
    failing: Arc<Mutex<Vec<&'static str>>>,
    /// How long every step takes (a simulated slow target).
    delay: std::time::Duration,
    /// Steps that fail by configuration (test/demo hook), while `fail_file` exists if set.
    configured: Vec<String>,
    fail_file: Option<std::path::PathBuf>,
}

impl NoneTarget {
    pub fn new(secret: SecretRef) -> Self {
        Self::with_delay(secret, std::time::Duration::ZERO)
    }

    /// A target whose every step takes `delay`.
    pub fn with_delay(secret: SecretRef, delay: std::time::Duration) -> Self {
        NoneTarget {
            secret,
            failing: Arc::default(),
            delay,
            configured: Vec::new(),
            fail_file: None,
        }
    }

    /// A target for `secret` that takes as long as this one and fails and heals with it:
    /// one switch for a test tree whose secrets each get their own target.
    #[cfg(feature = "test-util")]
    pub fn sharing_failures(&self, secret: SecretRef) -> Self {
        NoneTarget {
            secret,
            failing: self.failing.clone(),
            delay: self.delay,
            configured: self.configured.clone(),
            fail_file: self.fail_file.clone(),
        }
    }

    /// The configured target: every step takes `delay`; the steps in `fail` fail, only
    /// while `fail_file` exists when one is given (checked at every step).
    #[cfg(feature = "test-util")]
    pub fn with_failures(
        secret: SecretRef,
        delay: std::time::Duration,
        fail: &[String],
        fail_file: Option<std::path::PathBuf>,
    ) -> Self {
        NoneTarget {
            configured: fail.to_vec(),
            fail_file,
            ..Self::with_delay(secret, delay)
        }
    }

    /// Makes `operation` fail until [`NoneTarget::heal`] is called.
    #[cfg(feature = "test-util")]
    pub fn fail(&self, operation: &'static str) {
        if let Ok(mut f) = self.failing.lock() {
            f.push(operation);
        }
    }

    #[cfg(feature = "test-util")]
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

    fn check(&self, operation: &'static str, version: VersionNo) -> Result<(), TargetError> {
        let failing = self
            .failing
            .lock()
            .map(|f| f.contains(&operation))
            .unwrap_or(false)
            || (self.configured.iter().any(|c| c == operation)
                && self.fail_file.as_ref().is_none_or(|f| f.exists()));
        if failing {
            return Err(TargetError::new(
                "none",
                operation,
                &self.secret,
                version,
                "failure injected for testing",
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Target for NoneTarget {
    fn type_name(&self) -> &'static str {
        "none"
    }

    /// A store-only target holds nothing; with a simulated delay (tests of concurrency)
    /// its steps take time like a real target's and go the ordinary way.
    fn steps_in_memory(&self) -> bool {
        self.delay.is_zero()
    }

    /// Every step succeeds at once, unless a step is set to fail (now or while a file
    /// exists) or to take time: such a target is a test's, and its steps must run.
    fn store_only(&self) -> bool {
        self.delay.is_zero()
            && self.configured.is_empty()
            && self.failing.lock().map(|f| f.is_empty()).unwrap_or(false)
    }

    async fn apply(&self, version: VersionNo, _value: &SecretValue) -> Result<(), TargetError> {
        self.pause().await;
        self.check("apply", version)
    }

    async fn test(&self, version: VersionNo, _value: &SecretValue) -> Result<(), TargetError> {
        self.pause().await;
        self.check("test", version)
    }

    async fn promote(
        &self,
        version: VersionNo,
        _previous: Option<VersionNo>,
    ) -> Result<(), TargetError> {
        self.pause().await;
        self.check("promote", version)
    }

    async fn revoke(&self, version: VersionNo) -> Result<(), TargetError> {
        self.pause().await;
        self.check("revoke", version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ErrorKind;

    #[cfg(feature = "test-util")]
    #[tokio::test]
    async fn fails_while_the_fail_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("fail");
        let t = NoneTarget::with_failures(
            SecretRef::new("t", "k").expect("valid"),
            std::time::Duration::ZERO,
            &["apply".to_owned()],
            Some(flag.clone()),
        );
        let v = SecretValue::from_bytes(b"x".to_vec());
        assert!(t.apply(1, &v).await.is_ok());
        std::fs::write(&flag, b"").unwrap();
        let e = t.apply(1, &v).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Apply);
        assert!(t.test(1, &v).await.is_ok(), "only the named step fails");
        std::fs::remove_file(&flag).unwrap();
        assert!(t.apply(1, &v).await.is_ok());
    }
}
