//! Fencing: what keeps a deposed leader from writing.
//!
//! Two layers. A [`Fence`] is one term of leadership as this replica holds it: the term and
//! the instant, on this replica's own monotonic clock, until which its lease is valid (the
//! start of its last successful renewal plus the lease duration minus a safety margin).
//! [`FencedStore`] wraps the store the leader's actor tree writes through: every write
//! first checks the fence (layer 1, self-fencing: past the deadline nothing is written,
//! even when the store cannot be reached to learn that another replica took over), and a
//! commit carries the term to the store (layer 2, [`Store::commit_at_term`]: the store
//! refuses it when the secret's state was committed at a higher term).
//!
//! The monotonic clock is `tokio::time::Instant` (`CLOCK_MONOTONIC`, which keeps running
//! while a process is stopped by SIGSTOP), so a leader frozen past its lease finds its
//! fence expired the moment it resumes, and tests drive it with paused tokio time.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::domain::{RotationId, SecretRef, VersionNo};
use crate::generator::SecretValue;
use crate::store::{Commit, ReadValue, Record, Rev, Store, StoreError};

/// Until when a fence lets writes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Validity {
    /// A process without HA: never expires, term 0.
    Forever,
    /// Valid strictly before this instant.
    Until(Instant),
    /// Deposed (lost the lease, or stepped down): never valid again.
    Revoked,
}

/// One term of leadership, shared by the election (which extends or revokes it) and
/// every writer of that term (which checks it). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Fence {
    term: u64,
    // A std mutex: held only to copy or replace an `Instant`, never across an await.
    validity: Arc<Mutex<Validity>>,
}

impl Fence {
    /// A process without `[ha]`: term 0, valid for ever. Its commits are plain commits.
    pub fn unfenced() -> Fence {
        Fence {
            term: 0,
            validity: Arc::new(Mutex::new(Validity::Forever)),
        }
    }

    /// Leadership of `term`, valid strictly before `until`.
    pub fn new(term: u64, until: Instant) -> Fence {
        Fence {
            term,
            validity: Arc::new(Mutex::new(Validity::Until(until))),
        }
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    fn validity(&self) -> Validity {
        match self.validity.lock() {
            Ok(v) => *v,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    fn set(&self, next: impl FnOnce(Validity) -> Validity) {
        let mut guard = match self.validity.lock() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = next(*guard);
    }

    /// The instant the fence closes at; `None` when it never does or already did.
    pub fn valid_until(&self) -> Option<Instant> {
        match self.validity() {
            Validity::Until(t) => Some(t),
            Validity::Forever | Validity::Revoked => None,
        }
    }

    /// Whether a write may go out now.
    pub fn is_valid(&self) -> bool {
        match self.validity() {
            Validity::Forever => true,
            Validity::Until(t) => Instant::now() < t,
            Validity::Revoked => false,
        }
    }

    /// `Ok` while the fence lets writes through, else [`StoreError::Fenced`].
    pub fn check(&self) -> Result<(), StoreError> {
        if self.is_valid() {
            Ok(())
        } else {
            Err(StoreError::Fenced { term: self.term })
        }
    }

    /// A renewal succeeded: valid until `until`. Never moves the deadline back, and never
    /// revives a revoked or expired fence (a renewal that lands after the deadline came
    /// too late: the replica already stopped leading).
    pub fn extend(&self, until: Instant) {
        self.set(|v| match v {
            Validity::Until(t) if Instant::now() < t => Validity::Until(t.max(until)),
            Validity::Until(_) => Validity::Revoked,
            other => other,
        });
    }

    /// Deposed or stepping down: nothing more is written under this term.
    pub fn revoke(&self) {
        self.set(|v| match v {
            Validity::Forever => Validity::Forever,
            _ => Validity::Revoked,
        });
    }
}

/// The store a leader's actor tree writes through: every write checks the [`Fence`]
/// first, and commits carry its term (see the module documentation). Reads pass through.
pub struct FencedStore {
    inner: Arc<dyn Store>,
    fence: Fence,
}

impl FencedStore {
    pub fn new(inner: Arc<dyn Store>, fence: Fence) -> Self {
        FencedStore { inner, fence }
    }

    /// What a write that went out says once it returns: a failure after the fence closed
    /// is [`StoreError::Fenced`], whatever the store answered. The replica no longer leads,
    /// so the answer is moot, and it is often an artefact of that: a request in flight when
    /// the process was frozen times out the moment it runs again, which is no store outage.
    fn settled<T>(&self, written: Result<T, StoreError>) -> Result<T, StoreError> {
        match written {
            Err(e) if !e.is_deposed() && !self.fence.is_valid() => Err(StoreError::Fenced {
                term: self.fence.term,
            }),
            other => other,
        }
    }
}

#[async_trait::async_trait]
impl ReadValue for FencedStore {
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
impl Store for FencedStore {
    async fn put_version(
        &self,
        secret: &SecretRef,
        version: VersionNo,
        rotation: RotationId,
        value: &SecretValue,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.fence.check()?;
        let written = self
            .inner
            .put_version(secret, version, rotation, value, now)
            .await;
        self.settled(written)
    }

    async fn commit(&self, secret: &SecretRef, commit: Commit<'_>) -> Result<(), StoreError> {
        self.fence.check()?;
        let written = self
            .inner
            .commit_at_term(secret, commit, self.fence.term)
            .await;
        self.settled(written)
    }

    async fn commit_at_term(
        &self,
        secret: &SecretRef,
        commit: Commit<'_>,
        term: u64,
    ) -> Result<(), StoreError> {
        // The fence's term is the writer's; a caller's own term changes nothing here.
        let _ = term;
        self.commit(secret, commit).await
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.fence.check()
    }

    async fn journal(&self, secret: &SecretRef) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.journal(secret).await
    }

    async fn versions(
        &self,
        secret: &SecretRef,
    ) -> Result<Vec<crate::domain::VersionMeta>, StoreError> {
        self.inner.versions(secret).await
    }

    async fn history(
        &self,
        secret: &SecretRef,
        limit: usize,
    ) -> Result<Vec<crate::domain::HistoryRecord>, StoreError> {
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
        self.fence.check()?;
        let written = self.inner.record_put(ns, id, bytes, expected).await;
        self.settled(written)
    }

    async fn record_delete(&self, ns: &str, id: &str, expected: Rev) -> Result<(), StoreError> {
        self.fence.check()?;
        let written = self.inner.record_delete(ns, id, expected).await;
        self.settled(written)
    }

    async fn record_list(&self, ns: &str) -> Result<Vec<Record>, StoreError> {
        self.inner.record_list(ns).await
    }

    fn fingerprint(&self, value: &[u8]) -> String {
        self.inner.fingerprint(value)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_fence_closes_at_its_deadline_by_the_monotonic_clock() {
        let fence = Fence::new(3, Instant::now() + Duration::from_secs(2));
        assert!(fence.check().is_ok());
        tokio::time::advance(Duration::from_millis(1_999)).await;
        assert!(fence.is_valid());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(matches!(fence.check(), Err(StoreError::Fenced { term: 3 })));
        // A renewal that lands after the deadline does not revive it.
        fence.extend(Instant::now() + Duration::from_secs(10));
        assert!(!fence.is_valid());
    }

    #[tokio::test(start_paused = true)]
    async fn extending_moves_forward_only_and_revoking_is_final() {
        let start = Instant::now();
        let fence = Fence::new(1, start + Duration::from_secs(2));
        fence.extend(start + Duration::from_secs(5));
        fence.extend(start + Duration::from_secs(3));
        assert_eq!(fence.valid_until(), Some(start + Duration::from_secs(5)));
        fence.revoke();
        assert!(!fence.is_valid());
        fence.extend(start + Duration::from_secs(9));
        assert!(!fence.is_valid());
        let clone = fence.clone();
        assert!(clone.check().unwrap_err().is_deposed());
    }

    /// A write that fails once the fence has closed (a frozen leader's request timing out
    /// as it resumes) is reported as fenced, not as the store's failure; before the close,
    /// the store's own error stands.
    #[tokio::test(start_paused = true)]
    async fn a_write_failing_after_the_fence_closed_is_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(
            crate::store::embedded::EmbeddedStore::open(
                &dir.path().join("rotor.redb"),
                &dir.path().join("master.key"),
            )
            .unwrap(),
        );
        let fence = Fence::new(4, Instant::now() + Duration::from_secs(5));
        let store = FencedStore::new(inner.clone(), fence.clone());
        inner.fail_writes_after(0);
        let failed = store.record_put("jobs", "a", b"1", None).await;
        assert!(matches!(failed, Err(StoreError::Injected)), "{failed:?}");
        // The write went out while the fence was open; it comes back after the close.
        let lost: Result<(), StoreError> = Err(StoreError::Unavailable {
            path: "kv/_rotor/t1/k1".into(),
            reason: "timed out".into(),
        });
        fence.revoke();
        assert!(matches!(
            store.settled(lost),
            Err(StoreError::Fenced { term: 4 })
        ));
        assert!(matches!(store.settled(Ok(7)), Ok(7)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fenced_store_says_when_writes_may_no_longer_go_out() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> = Arc::new(
            crate::store::embedded::EmbeddedStore::open(
                &dir.path().join("rotor.redb"),
                &dir.path().join("master.key"),
            )
            .unwrap(),
        );
        assert!(inner.check_writable().is_ok());
        let fence = Fence::new(2, Instant::now() + Duration::from_secs(5));
        let store = FencedStore::new(inner.clone(), fence.clone());
        assert!(store.check_writable().is_ok());
        let rev = store.record_put("jobs", "a", b"1", None).await.unwrap();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(matches!(
            store.check_writable(),
            Err(StoreError::Fenced { term: 2 })
        ));
        assert!(
            store
                .record_put("jobs", "a", b"2", Some(rev))
                .await
                .is_err()
        );
        assert!(store.record_delete("jobs", "a", rev).await.is_err());
        assert_eq!(
            inner.record_get("jobs", "a").await.unwrap(),
            Some((b"1".to_vec(), rev))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unfenced_process_is_always_valid_at_term_0() {
        let fence = Fence::unfenced();
        tokio::time::advance(Duration::from_secs(86_400)).await;
        fence.revoke();
        assert!(fence.check().is_ok());
        assert_eq!(fence.term(), 0);
    }
}
