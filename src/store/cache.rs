//! The secret cache: a [`Store`] wrapper that keeps recently read values in memory for a
//! short time, so the test step, publishers and targets reading the same versions again do
//! not decrypt them again.
//!
//! Bounded twice: entries live at most `ttl`, and at most `capacity` entries are kept (a
//! full cache evicts the oldest insertion, which under a skewed read load keeps the hot
//! versions because they are re-inserted right after they expire). Every write to a secret
//! (`put_version`, `commit`: each step of a rotation) drops that secret's entries, so a
//! read never outlives the rotation that changed what it means. Values stay
//! [`SecretValue`]s: zeroed when evicted.
//!
//! Every value read is measured here: `secret_access_total`, `secret_access_errors_total`,
//! `secret_access_latency_seconds`, `secret_cache_hits_total`, `secret_cache_misses_total`
//! and `secret_cache_size`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{Commit, FirstVersion, NewVersion, ReadValue, Record, Rev, Store, StoreError};
use crate::domain::{HistoryRecord, RotationId, SecretRef, VersionMeta, VersionNo};
use crate::generator::SecretValue;
use crate::metrics::Metrics;

/// Bounds of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// How long a value is served from memory.
    pub ttl: Duration,
    /// Most values held at once. Zero turns the cache off (reads are still measured).
    pub capacity: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            ttl: Duration::from_secs(60),
            capacity: 10_000,
        }
    }
}

struct Entry {
    value: SecretValue,
    inserted: Instant,
    /// Matches the queue slot that inserted it; a stale slot (the entry was invalidated
    /// and inserted again) is skipped at eviction.
    generation: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<(SecretRef, VersionNo), Entry>,
    /// Insertion order, for eviction when full.
    order: VecDeque<((SecretRef, VersionNo), u64)>,
    next_generation: u64,
}

/// A caching, measuring wrapper around another store.
pub struct CachedStore {
    inner: Arc<dyn Store>,
    options: CacheOptions,
    // A std mutex: held for a map lookup only, never across an await or a store call.
    cache: Mutex<Inner>,
    metrics: Metrics,
}

impl CachedStore {
    pub fn new(inner: Arc<dyn Store>, options: CacheOptions, metrics: Metrics) -> Self {
        CachedStore {
            inner,
            options,
            cache: Mutex::new(Inner::default()),
            metrics,
        }
    }

    /// Values held now.
    pub fn len(&self) -> usize {
        self.cache.lock().map_or(0, |c| c.entries.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every cached value of `secret`.
    pub fn invalidate(&self, secret: &SecretRef) {
        if let Ok(mut c) = self.cache.lock() {
            c.entries.retain(|(s, _), _| s != secret);
            // Queue slots of removed entries are skipped lazily; rebuild when it grows
            // far beyond the entries so it stays bounded.
            if c.order.len() > 2 * c.entries.len() + 64 {
                let Inner { entries, order, .. } = &mut *c;
                order.retain(|(k, g)| entries.get(k).is_some_and(|e| e.generation == *g));
            }
            self.metrics.cache_size.set(c.entries.len() as i64);
        }
    }

    fn lookup(&self, key: &(SecretRef, VersionNo)) -> Option<SecretValue> {
        let mut c = self.cache.lock().ok()?;
        match c.entries.get(key) {
            Some(e) if e.inserted.elapsed() < self.options.ttl => Some(e.value.clone()),
            Some(_) => {
                c.entries.remove(key);
                self.metrics.cache_size.set(c.entries.len() as i64);
                None
            }
            None => None,
        }
    }

    fn insert(&self, key: (SecretRef, VersionNo), value: &SecretValue) {
        if self.options.capacity == 0 {
            return;
        }
        let Ok(mut c) = self.cache.lock() else { return };
        let c = &mut *c;
        while c.entries.len() >= self.options.capacity {
            let Some((old, generation)) = c.order.pop_front() else {
                break;
            };
            if c.entries
                .get(&old)
                .is_some_and(|e| e.generation == generation)
            {
                c.entries.remove(&old);
            }
        }
        let generation = c.next_generation;
        c.next_generation += 1;
        c.order.push_back((key.clone(), generation));
        c.entries.insert(
            key,
            Entry {
                value: value.clone(),
                inserted: Instant::now(),
                generation,
            },
        );
        self.metrics.cache_size.set(c.entries.len() as i64);
    }
}

#[async_trait::async_trait]
impl Store for CachedStore {
    async fn put_version(
        &self,
        secret: &SecretRef,
        version: VersionNo,
        rotation: RotationId,
        value: &SecretValue,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.invalidate(secret);
        self.inner
            .put_version(secret, version, rotation, value, now)
            .await
    }

    async fn commit(&self, secret: &SecretRef, commit: Commit<'_>) -> Result<(), StoreError> {
        self.invalidate(secret);
        self.inner.commit(secret, commit).await
    }

    async fn commit_at_term(
        &self,
        secret: &SecretRef,
        commit: Commit<'_>,
        term: u64,
    ) -> Result<(), StoreError> {
        self.invalidate(secret);
        self.inner.commit_at_term(secret, commit, term).await
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.inner.check_writable()
    }

    async fn put_version_and_commit(
        &self,
        secret: &SecretRef,
        version: NewVersion<'_>,
        commit: Commit<'_>,
    ) -> Result<(), StoreError> {
        self.invalidate(secret);
        self.inner
            .put_version_and_commit(secret, version, commit)
            .await
    }

    async fn journal(&self, secret: &SecretRef) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.journal(secret).await
    }

    fn fingerprint(&self, value: &[u8]) -> String {
        self.inner.fingerprint(value)
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

    async fn create_first_versions(
        &self,
        firsts: &[FirstVersion],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, StoreError> {
        for first in firsts {
            self.invalidate(&first.secret);
        }
        self.inner.create_first_versions(firsts, now).await
    }

    async fn journals(
        &self,
        after: Option<&SecretRef>,
        limit: usize,
    ) -> Result<Vec<(SecretRef, Vec<u8>)>, StoreError> {
        self.inner.journals(after, limit).await
    }

    // Records hold no value: they pass straight through, uncached.
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
}

/// What targets read through: a hit is answered from memory, a miss reads the store
/// behind and keeps the value.
#[async_trait::async_trait]
impl ReadValue for CachedStore {
    async fn read_value(
        &self,
        secret: &SecretRef,
        version: VersionNo,
    ) -> Result<SecretValue, StoreError> {
        let started = Instant::now();
        self.metrics.access_total.inc();
        let key = (secret.clone(), version);
        let result = match self.lookup(&key) {
            Some(value) => {
                self.metrics.cache_hits_total.inc();
                Ok(value)
            }
            None => {
                self.metrics.cache_misses_total.inc();
                let read = self.inner.read_value(secret, version).await;
                if let Ok(value) = &read {
                    self.insert(key, value);
                }
                read
            }
        };
        if result.is_err() {
            self.metrics.access_errors_total.inc();
        }
        self.metrics
            .access_latency_seconds
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Not cached and not counted as a secret access: a label is no value, and every
    /// commit may move it.
    async fn current_version(&self, secret: &SecretRef) -> Result<Option<VersionNo>, StoreError> {
        self.inner.current_version(secret).await
    }
}
