//! The bulk path of a first start (`actors::bootstrap`): a secret it creates ends in the
//! state its rotation actor would have reached by itself (journal, labels, history, apart
//! from timestamps), and its actor resumes from there writing nothing; a batch that fails
//! leaves whole batches and nothing else, and the next start finishes the rest; the
//! `rotor_first_versions_pending` gauge counts down batch by batch; the trait's default
//! (what the Vault store uses) writes the same as the embedded store's one transaction.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use rotor::actors::bootstrap::{self, FirstVersions};
use rotor::actors::managed::ManagedSecrets;
use rotor::actors::tree::{self, TreeOptions};
use rotor::clock::Clock;
use rotor::config::Config;
use rotor::domain::{HistoryRecord, Label, RotationId, SecretRef, VersionMeta, VersionNo};
use rotor::generator::SecretValue;
use rotor::machine::{Phase, SecretState};
use rotor::metrics::{Metrics, RotationLabels};
use rotor::store::{Commit, ReadValue, Record, Rev, Store, StoreError};
use rotor::target::none::NoneTarget;
use rotor::target::{Target, ValueReader};

use crate::common::embedded::{open_store, tree_config};
use crate::common::wait::eventually;

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap()
}

/// `n` secrets `tenant{i}/api_keys` under an hourly policy, with no target (store-only).
fn config(dir: &Path, n: usize) -> Config {
    let mut text = String::from(
        r#"
[policies.fast]
interval = "1h"
grace = "10m"
generator = { type = "token", bytes = 32 }
max_attempts = 3
"#,
    );
    for i in 0..n {
        text.push_str(&format!(
            "\n[[secrets]]\ntenant = \"tenant{i}\"\nkey = \"api_keys\"\npolicy = \"fast\"\n"
        ));
    }
    tree_config(dir, &text)
}

fn specs(cfg: &Config, options: &TreeOptions, store: Arc<dyn Store>) -> ManagedSecrets {
    let reader: ValueReader = store;
    ManagedSecrets::new(cfg, options, reader)
}

fn secret(i: usize) -> SecretRef {
    SecretRef::new(&format!("tenant{i}"), "api_keys").unwrap()
}

/// What must be the same whichever path made the first version: the state with its times
/// replaced by how far each is from the promotion, the versions without times and
/// fingerprints, the history without times.
#[derive(Debug, PartialEq)]
struct EndState {
    state: SecretState,
    next_due_after_promotion: Option<chrono::TimeDelta>,
    versions: Vec<(VersionNo, RotationId, Vec<Label>, bool, bool)>,
    history: Vec<HistoryRecord>,
}

async fn end_state(store: &dyn Store, s: &SecretRef) -> EndState {
    let journal = store.journal(s).await.unwrap().expect("a journal");
    let mut state: SecretState = serde_json::from_slice(&journal).unwrap();
    let promoted = state.last_rotated_at.expect("promoted");
    let next_due_after_promotion = match &mut state.phase {
        Phase::Idle { next_due, .. } => next_due.take().map(|d| d - promoted),
        other => panic!("{s} is {} after its first rotation, not idle", other.name()),
    };
    state.last_rotated_at = None;
    let versions = store
        .versions(s)
        .await
        .unwrap()
        .into_iter()
        .map(|v: VersionMeta| {
            assert_eq!(
                v.promoted_at,
                Some(promoted),
                "{s} promoted when its state says"
            );
            (
                v.version,
                v.rotation,
                v.labels,
                v.promoted_at.is_some(),
                v.expired_at.is_some(),
            )
        })
        .collect();
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    let history = store
        .history(s, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|mut r| {
            assert!(r.started_at <= r.finished_at);
            r.started_at = epoch;
            r.finished_at = epoch;
            r
        })
        .collect();
    EndState {
        state,
        next_due_after_promotion,
        versions,
        history,
    }
}

fn succeeded(metrics: &Metrics) -> u64 {
    metrics
        .rotation_total
        .get_or_create(&RotationLabels {
            policy: "fast".to_owned(),
            outcome: "succeeded".to_owned(),
        })
        .get()
}

#[tokio::test(start_paused = true)]
async fn the_bulk_path_ends_where_the_actor_path_does() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 2);
    let store = open_store(dir.path());
    let clock = Clock::tokio(base());
    let options = TreeOptions {
        clock,
        namespace: format!("{}/", dir.path().display()),
        // tenant0's target is store-only; tenant1's takes a millisecond per step, so its
        // first version is its actor's.
        target_override: Some(Arc::new(|s: &SecretRef| {
            let delay = if s.tenant() == "tenant0" { 0 } else { 1 };
            Arc::new(NoneTarget::with_delay(
                s.clone(),
                Duration::from_millis(delay),
            )) as Arc<dyn Target>
        })),
        ..TreeOptions::default()
    };
    let specs = specs(&cfg, &options, store.clone());

    // The bulk path alone first: it takes tenant0 and leaves tenant1.
    let metrics = Metrics::new();
    let dyn_store: Arc<dyn Store> = store.clone();
    let done = bootstrap::run(&specs, &dyn_store, &metrics, clock, bootstrap::BATCH).await;
    assert_eq!((done.created, done.left_to_actors), (1, 1));
    assert!(done.failed.is_none());
    assert_eq!(store.secrets().await.unwrap(), [secret(0)]);
    assert_eq!(
        succeeded(&metrics),
        1,
        "counted as the actor counts a promotion"
    );
    assert_eq!(metrics.first_versions_pending.get(), 0);

    // Then the tree: tenant1's actor rotates it; tenant0's resumes and writes nothing.
    let tree_metrics = Metrics::new();
    let tree = tree::start(&cfg, store.clone(), tree_metrics.clone(), options)
        .await
        .expect("tree starts");
    eventually(
        Duration::from_secs(10),
        "both ready, tenant1 rotated",
        async || {
            tree.ready()
                && store.versions(&secret(1)).await.unwrap().len() == 1
                && matches!(
                    store
                        .journal(&secret(1))
                        .await
                        .unwrap()
                        .map(|j| serde_json::from_slice::<SecretState>(&j).unwrap().phase),
                    Some(Phase::Idle { .. })
                )
        },
    )
    .await;
    assert_eq!(
        succeeded(&tree_metrics),
        1,
        "only tenant1 rotated in the tree"
    );
    let bulk = end_state(store.as_ref(), &secret(0)).await;
    let actor = end_state(store.as_ref(), &secret(1)).await;
    assert_eq!(bulk, actor);
    assert_eq!(
        bulk.next_due_after_promotion,
        Some(chrono::TimeDelta::hours(1))
    );
    assert_eq!(bulk.history.len(), 1);
    assert_eq!(
        tree.context.board.get(&secret(0)).map(|s| s.phase),
        Some("idle")
    );
    drop(tree);
}

/// Secrets that have a journal, sorted.
async fn with_state(store: &dyn Store) -> Vec<SecretRef> {
    store.secrets().await.unwrap()
}

#[tokio::test]
async fn a_failed_batch_leaves_whole_batches_and_the_next_start_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 25);
    let store = open_store(dir.path());
    let options = TreeOptions::default();
    let specs = specs(&cfg, &options, store.clone());
    let dyn_store: Arc<dyn Store> = store.clone();
    let metrics = Metrics::new();

    // The first batch of ten commits; the second fails before its commit.
    store.fail_writes_after(1);
    let done: FirstVersions = bootstrap::run(&specs, &dyn_store, &metrics, Clock::System, 10).await;
    assert!(
        matches!(done.failed, Some(StoreError::Injected)),
        "{:?}",
        done.failed
    );
    assert_eq!((done.created, done.left_to_actors), (10, 15));
    assert_eq!(metrics.first_versions_pending.get(), 0);
    let written = with_state(store.as_ref()).await;
    assert_eq!(written.len(), 10);
    for s in specs
        .iter()
        .map(|(s, _)| s)
        .filter(|s| !written.contains(s))
    {
        assert!(
            store.versions(s).await.unwrap().is_empty(),
            "{s} has a version"
        );
        assert!(
            store.history(s, 10).await.unwrap().is_empty(),
            "{s} has history"
        );
    }

    // A restart: the rest, and nothing twice.
    store.clear_faults();
    let done = bootstrap::run(&specs, &dyn_store, &metrics, Clock::System, 10).await;
    assert!(done.failed.is_none());
    assert_eq!((done.created, done.left_to_actors), (15, 0));
    assert_eq!(with_state(store.as_ref()).await.len(), 25);
    let first = end_state(store.as_ref(), &secret(0)).await;
    for s in specs.iter().map(|(s, _)| s) {
        assert_eq!(end_state(store.as_ref(), s).await, first, "{s}");
    }
    assert_eq!(succeeded(&metrics), 25);
    // Nothing left: a third start writes nothing.
    let done = bootstrap::run(&specs, &dyn_store, &metrics, Clock::System, 10).await;
    assert_eq!((done.created, done.left_to_actors), (0, 0));
}

/// A store that takes the `Store` trait's default `create_first_versions` (as the Vault
/// store does) and notes the pending gauge each time the bulk path reads a journal.
struct Observed {
    inner: Arc<dyn Store>,
    metrics: Metrics,
    pending: Mutex<Vec<i64>>,
}

#[async_trait::async_trait]
impl ReadValue for Observed {
    async fn read_value(
        &self,
        secret: &SecretRef,
        version: VersionNo,
    ) -> Result<SecretValue, StoreError> {
        self.inner.read_value(secret, version).await
    }

    async fn current_version(&self, secret: &SecretRef) -> Result<Option<VersionNo>, StoreError> {
        self.inner.current_version(secret).await
    }
}

#[async_trait::async_trait]
impl Store for Observed {
    async fn put_version(
        &self,
        secret: &SecretRef,
        version: VersionNo,
        rotation: RotationId,
        value: &SecretValue,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner
            .put_version(secret, version, rotation, value, now)
            .await
    }

    async fn commit(&self, secret: &SecretRef, commit: Commit<'_>) -> Result<(), StoreError> {
        self.inner.commit(secret, commit).await
    }

    async fn journal(&self, secret: &SecretRef) -> Result<Option<Vec<u8>>, StoreError> {
        self.pending
            .lock()
            .unwrap()
            .push(self.metrics.first_versions_pending.get());
        self.inner.journal(secret).await
    }

    async fn versions(&self, secret: &SecretRef) -> Result<Vec<VersionMeta>, StoreError> {
        self.inner.versions(secret).await
    }

    async fn history(
        &self,
        secret: &SecretRef,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, StoreError> {
        self.inner.history(secret, limit).await
    }

    async fn secrets(&self) -> Result<Vec<SecretRef>, StoreError> {
        self.inner.secrets().await
    }

    async fn record_get(&self, ns: &str, id: &str) -> Result<Option<(Vec<u8>, Rev)>, StoreError> {
        self.inner.record_get(ns, id).await
    }

    async fn record_put(
        &self,
        ns: &str,
        id: &str,
        bytes: &[u8],
        expected: Option<Rev>,
    ) -> Result<Rev, StoreError> {
        self.inner.record_put(ns, id, bytes, expected).await
    }

    async fn record_delete(&self, ns: &str, id: &str, expected: Rev) -> Result<(), StoreError> {
        self.inner.record_delete(ns, id, expected).await
    }

    async fn record_list(&self, ns: &str) -> Result<Vec<Record>, StoreError> {
        self.inner.record_list(ns).await
    }

    fn fingerprint(&self, value: &[u8]) -> String {
        self.inner.fingerprint(value)
    }
}

#[tokio::test]
async fn the_pending_gauge_counts_down_and_the_default_writes_the_same() {
    // The embedded store's one transaction per batch, as the reference.
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = open_store(reference_dir.path());
    let cfg = config(reference_dir.path(), 25);
    let options = TreeOptions::default();
    let reference_specs = specs(&cfg, &options, reference.clone());
    let dyn_reference: Arc<dyn Store> = reference.clone();
    bootstrap::run(
        &reference_specs,
        &dyn_reference,
        &Metrics::new(),
        Clock::System,
        10,
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let metrics = Metrics::new();
    let observed = Arc::new(Observed {
        inner: open_store(dir.path()),
        metrics: metrics.clone(),
        pending: Mutex::default(),
    });
    let cfg = config(dir.path(), 25);
    let specs = specs(&cfg, &options, observed.clone());
    let store: Arc<dyn Store> = observed.clone();
    let done = bootstrap::run(&specs, &store, &metrics, Clock::System, 10).await;
    assert_eq!((done.created, done.left_to_actors), (25, 0));
    let mut seen = observed.pending.lock().unwrap().clone();
    seen.dedup();
    assert_eq!(seen, [25, 15, 5], "the gauge before each batch of ten");
    assert_eq!(metrics.first_versions_pending.get(), 0);
    for s in specs.iter().map(|(s, _)| s) {
        assert_eq!(
            end_state(store.as_ref(), s).await,
            end_state(reference.as_ref(), s).await,
            "{s}"
        );
    }
}
