//! Helpers for the target tests: a cached store in a temporary directory, one rotation's
//! value generated and stored the way the rotation actor does it, random names, and the
//! rule for real services (skip locally with a reason, fail loudly under `CI=true`).

use std::sync::Arc;

use chrono::Utc;
use rand::Rng as _;
use rotor::domain::{Label, RotationId, SecretRef, VersionNo};
use rotor::generator::{self, GeneratorSpec, SecretValue};
use rotor::metrics::Metrics;
use rotor::store::cache::{CacheOptions, CachedStore};
use rotor::store::embedded::EmbeddedStore;
use rotor::store::{Commit, Store};
use rotor::target::Target;

pub struct Env {
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(
            EmbeddedStore::open(
                &dir.path().join("rotor.redb"),
                &dir.path().join("master.key"),
            )
            .unwrap(),
        );
        let metrics = Metrics::new();
        let store: Arc<dyn Store> = Arc::new(CachedStore::new(
            inner,
            CacheOptions::default(),
            metrics.clone(),
        ));
        Env {
            store,
            metrics,
            dir,
        }
    }

    /// Generates, shapes (through the target) and stores `version`, as the Generate step
    /// does; returns the stored value.
    pub async fn generate(
        &self,
        target: &dyn Target,
        secret: &SecretRef,
        version: VersionNo,
        spec: &GeneratorSpec,
    ) -> SecretValue {
        let value = target
            .shape_value(version, generator::generate(spec))
            .await
            .expect("value shaped");
        self.store
            .put_version(secret, version, RotationId(version), &value, Utc::now())
            .await
            .unwrap();
        value
    }

    /// One rotation of `secret` to `version` on `target` as far as promotion: generate and
    /// store the value, apply, test, label it `current` and the version that was current
    /// `previous` (as the rotation actor's commit does before the promote step), promote
    /// (keeping the previous version valid); returns the stored value.
    pub async fn rotate(
        &self,
        target: &dyn Target,
        secret: &SecretRef,
        version: VersionNo,
        spec: &GeneratorSpec,
    ) -> SecretValue {
        let previous = self
            .store
            .current_version(secret)
            .await
            .unwrap()
            .filter(|v| *v != version);
        let value = self.generate(target, secret, version, spec).await;
        target.apply(version, &value).await.expect("apply");
        target.test(version, &value).await.expect("test");
        let mut labels = vec![(version, Label::Current)];
        labels.extend(previous.map(|p| (p, Label::Previous)));
        self.store
            .commit(
                secret,
                Commit {
                    journal: b"target test",
                    labels: &labels,
                    history: None,
                    now: Utc::now(),
                },
            )
            .await
            .unwrap();
        target.promote(version, previous).await.expect("promote");
        value
    }
}

pub fn password_spec() -> GeneratorSpec {
    GeneratorSpec::Password {
        length: 32,
        classes: rotor::generator::CharClasses {
            lower: true,
            upper: true,
            digits: true,
            symbols: true,
        },
    }
}

/// `prefix_` followed by 8 random hex digits: names that parallel runs do not share.
pub fn random_name(prefix: &str) -> String {
    format!("{prefix}_{:08x}", rand::thread_rng().r#gen::<u32>())
}

pub fn secret(key: &str) -> SecretRef {
    SecretRef::new("tenant1", key).unwrap()
}

/// A real service is unreachable: under CI that fails the test (CI must start it); locally
/// the test is skipped with the reason printed. Returns `false` to skip.
pub fn service_or_skip(service: &str, reachable: Result<(), String>) -> bool {
    match reachable {
        Ok(()) => true,
        Err(e) => {
            super::ci::skip_or_fail(service, &format!("unreachable: {e}"));
            false
        }
    }
}
