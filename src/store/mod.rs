//! Where secret versions, the rotation journal and the history live.
//!
//! The [`Store`] trait is what the rest of rotor sees. Backends: [`embedded`] (one redb
//! file, values sealed with AES-256-GCM) and [`vault`] (HashiCorp Vault KV v2, tested
//! against a private OpenBao server and, for injected faults, the in-repo `vault_fake`,
//! built only with the `test-util` feature). A store knows labels, versions and
//! opaque journal bytes; it does not know the rotation state machine (the journal is
//! serialised by the caller) and it never logs or returns a value except through
//! [`ReadValue::read_value`]. The label rules every store keeps on commit are one pure
//! function both backends call (`labels.rs`), and so is finding the `current` version
//! among a secret's versions ([`ReadValue::current_version`]).
//!
//! Besides secrets, a store keeps small *records*: opaque bytes under a namespace and an
//! id, each with a revision that every write moves forward, written check-and-set
//! ([`Store::record_put`]). They hold what rotor must keep across restarts and share with a
//! later leader that is not a secret's journal (consumer state and reload permits today).
//! The store knows nothing of what a record means and never puts a secret value in one.

use chrono::{DateTime, Utc};

use crate::domain::{HistoryRecord, Label, RotationId, SecretRef, VersionMeta, VersionNo};
use crate::generator::SecretValue;

pub mod cache;
pub mod crypto;
pub mod embedded;
mod labels;
pub mod vault;
#[cfg(feature = "test-util")]
pub mod vault_fake;

/// Errors from a store. Messages name the secret and version, never a value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store file {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("master key file {path}: {reason}")]
    MasterKey { path: String, reason: String },
    #[error("cannot decrypt {secret} version {version}: wrong master key or tampered data")]
    Decrypt {
        secret: SecretRef,
        version: VersionNo,
    },
    #[error("{secret} has no version {version}")]
    NoSuchVersion {
        secret: SecretRef,
        version: VersionNo,
    },
    #[error("{secret} version {version} already exists for rotation {existing}, not {requested}")]
    VersionConflict {
        secret: SecretRef,
        version: VersionNo,
        existing: RotationId,
        requested: RotationId,
    },
    /// A commit that would break a label invariant (a label on two versions, say). A bug
    /// in the caller, refused so the store never holds two `current` versions.
    #[error("refused commit for {secret}: {reason}")]
    InvalidCommit { secret: SecretRef, reason: String },
    #[error("store I/O: {0}")]
    Backend(String),
    /// A write failed on purpose (tests inject these to prove crash safety).
    #[error("injected write failure")]
    Injected,
    /// A check-and-set write lost: someone else (another replica, or this process before
    /// it was resumed) changed the record since this process last read it. Nothing was
    /// overwritten; re-read the journal and decide again.
    #[error(
        "check-and-set conflict on {path}: it changed since this process last read it (another replica or a stale writer); nothing was overwritten"
    )]
    Conflict { path: String },
    /// The remote store refused the request under its access policy.
    #[error("permission denied by Vault policy for {path}")]
    PermissionDenied { path: String },
    /// The remote store cannot serve requests now (sealed, down, timing out), after the
    /// store's own bounded retries.
    #[error("store unavailable for {path}: {reason}")]
    Unavailable { path: String, reason: String },
}

impl StoreError {
    /// Bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            StoreError::Open { .. } => "open",
            StoreError::MasterKey { .. } => "master_key",
            StoreError::Decrypt { .. } => "decrypt",
            StoreError::NoSuchVersion { .. } => "not_found",
            StoreError::VersionConflict { .. } => "conflict",
            StoreError::InvalidCommit { .. } => "invalid_commit",
            StoreError::Backend(_) => "backend",
            StoreError::Injected => "injected",
            StoreError::Conflict { .. } => "cas_conflict",
            StoreError::PermissionDenied { .. } => "permission_denied",
            StoreError::Unavailable { .. } => "unavailable",
        }
    }
}

/// The revision of a record: moved forward by every write of it and never reused for the
/// same namespace and id, so a writer holding an old revision cannot overwrite a newer
/// record (no A-B-A after a delete either).
pub type Rev = u64;

/// One record as [`Store::record_list`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub bytes: Vec<u8>,
    pub rev: Rev,
}

/// Longest record namespace or id: a DNS subdomain name (a pod name) fits.
pub const MAX_RECORD_NAME: usize = 253;

/// Checks a record namespace or id: 1 to [`MAX_RECORD_NAME`] characters of `[A-Za-z0-9._-]`,
/// not starting with `.` or `_` (so never `..`, and never one of the Vault store's own
/// `_rotor` names). Both stores refuse anything else before touching storage, because a
/// name becomes part of a Vault path.
pub fn check_record_name(what: &str, name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_RECORD_NAME
        && !name.starts_with(['.', '_'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "invalid record {what} {name:?}: use 1 to {MAX_RECORD_NAME} characters of A-Z a-z 0-9 . _ -, not starting with . or _"
        )))
    }
}

/// One atomic update of a secret's journal: the persisted state-machine bytes, the labels
/// that state implies, and optionally a finished rotation to append to the history.
/// All of it is written in one transaction, or none of it.
#[derive(Debug, Clone)]
pub struct Commit<'a> {
    /// Serialised state-machine state; opaque to the store.
    pub journal: &'a [u8],
    /// Every labelled version after this commit. Versions that carried a label before and
    /// carry none now are stamped `expired_at = now`; a version newly labelled `current`
    /// is stamped `promoted_at = now` (if not already set).
    pub labels: &'a [(VersionNo, Label)],
    pub history: Option<&'a HistoryRecord>,
    pub now: DateTime<Utc>,
}

/// Reading stored values, and nothing else: what a target is built with (the cached store
/// in production), so it can read an older version's value, and learn which version is
/// current, but never write.
#[async_trait::async_trait]
pub trait ReadValue: Send + Sync + 'static {
    /// Decrypts one version's value.
    async fn read_value(
        &self,
        secret: &SecretRef,
        version: VersionNo,
    ) -> Result<SecretValue, StoreError>;

    /// The version labelled `current`, if any: what consumers hold now. A target needs it
    /// because version numbers alone do not say which version is live (a discarded attempt
    /// keeps its number), and reading a label writes nothing.
    async fn current_version(&self, secret: &SecretRef) -> Result<Option<VersionNo>, StoreError>;
}

/// A backend holding versions, labels, journals and history for many secrets.
///
/// Methods are async and run on the caller's runtime; a backend whose I/O blocks (redb)
/// moves it onto a blocking thread itself. [`ReadValue::read_value`] is the one way a
/// value comes back out.
/// How many journal reads the default [`Store::journals`] keeps in flight (round trips to
/// a remote store overlap; a local one barely notices).
const JOURNAL_READS_AT_ONCE: usize = 32;

#[async_trait::async_trait]
pub trait Store: ReadValue {
    /// Stores `value` as `version` of `secret`, created by `rotation`, with no label.
    /// Idempotent: storing the same version again for the same rotation succeeds without
    /// changing anything (the first value is kept); for another rotation it is a
    /// [`StoreError::VersionConflict`].
    async fn put_version(
        &self,
        secret: &SecretRef,
        version: VersionNo,
        rotation: RotationId,
        value: &SecretValue,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// Atomically writes journal, labels and history (see [`Commit`]).
    async fn commit(&self, secret: &SecretRef, commit: Commit<'_>) -> Result<(), StoreError>;

    /// The last committed journal bytes, if any.
    async fn journal(&self, secret: &SecretRef) -> Result<Option<Vec<u8>>, StoreError>;

    /// Metadata of every version, oldest first.
    async fn versions(&self, secret: &SecretRef) -> Result<Vec<VersionMeta>, StoreError>;

    /// The most recent `limit` history records, newest first.
    async fn history(
        &self,
        secret: &SecretRef,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, StoreError>;

    /// Every secret that has a journal.
    async fn secrets(&self) -> Result<Vec<SecretRef>, StoreError>;

    /// Up to `limit` journals of the secrets after `after` (all when `None`), in the
    /// store's order of secrets, which this order continues from (pass the last secret of
    /// a page to get the next; an empty page is the end). What start-up reads to fill the
    /// schedule and the status board without an actor per secret, a page at a time so a
    /// million journals are never in memory at once. This default lists every secret and
    /// reads the page's journals a few at a time; a store that can scan its journals in
    /// order (the embedded one) overrides it. A secret deleted between the list and its
    /// read is left out.
    async fn journals(
        &self,
        after: Option<&SecretRef>,
        limit: usize,
    ) -> Result<Vec<(SecretRef, Vec<u8>)>, StoreError> {
        use futures::StreamExt;
        let mut secrets = self.secrets().await?;
        secrets.sort_unstable();
        let from = after.map_or(0, |a| secrets.partition_point(|s| s <= a));
        let page: Vec<SecretRef> = secrets.into_iter().skip(from).take(limit).collect();
        let read: Vec<_> = futures::stream::iter(page)
            .map(|secret| async move {
                let journal = self.journal(&secret).await;
                journal.map(|j| j.map(|bytes| (secret, bytes)))
            })
            .buffered(JOURNAL_READS_AT_ONCE)
            .collect()
            .await;
        read.into_iter().filter_map(|r| r.transpose()).collect()
    }

    /// The record `ns/id` and its revision, if it exists.
    async fn record_get(&self, ns: &str, id: &str) -> Result<Option<(Vec<u8>, Rev)>, StoreError>;

    /// Writes the record `ns/id`, check-and-set: `expected` `None` means it must not exist,
    /// `Some(rev)` that it must be at `rev`. Returns the new revision; a mismatch is
    /// [`StoreError::Conflict`] and writes nothing.
    async fn record_put(
        &self,
        ns: &str,
        id: &str,
        bytes: &[u8],
        expected: Option<Rev>,
    ) -> Result<Rev, StoreError>;

    /// Deletes the record `ns/id` if it is at `expected` ([`StoreError::Conflict`] if it
    /// moved on). Deleting a record that does not exist succeeds: a retried delete that
    /// already landed is no error.
    async fn record_delete(&self, ns: &str, id: &str, expected: Rev) -> Result<(), StoreError>;

    /// Every record of namespace `ns`, sorted by id.
    async fn record_list(&self, ns: &str) -> Result<Vec<Record>, StoreError>;

    /// The keyed fingerprint this store records in [`VersionMeta::fingerprint`] for a
    /// value with these bytes. The volume watcher fingerprints mounted files with it, so a
    /// file can be matched to the version it holds without either side revealing a value.
    /// Pure and cheap, so synchronous.
    fn fingerprint(&self, value: &[u8]) -> String;
}
