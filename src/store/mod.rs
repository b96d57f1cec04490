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
    /// Self-fencing: this replica's lease is no longer valid by its own clock (it lost the
    /// lease, or could not renew it in time), so it writes nothing more. The new leader
    /// owns the store now.
    #[error(
        "refused write: this replica's leader lease of term {term} is no longer valid (deposed or not renewed in time); nothing was written"
    )]
    Fenced { term: u64 },
    /// Store fencing: the document was last written by a leader of a higher term, so this
    /// writer was deposed. Nothing was written.
    #[error(
        "refused commit to {path}: written at term {recorded} by a newer leader, this writer holds term {term}; nothing was written"
    )]
    Deposed {
        path: String,
        term: u64,
        recorded: u64,
    },
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
            StoreError::Fenced { .. } => "fenced",
            StoreError::Deposed { .. } => "deposed",
        }
    }

    /// Whether this writer is no longer the leader ([`StoreError::Fenced`] or
    /// [`StoreError::Deposed`]): retrying cannot help, the writer must stop.
    pub fn is_deposed(&self) -> bool {
        matches!(self, StoreError::Fenced { .. } | StoreError::Deposed { .. })
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

/// A version to store with a commit ([`Store::put_version_and_commit`]).
#[derive(Clone, Copy)]
pub struct NewVersion<'a> {
    pub version: VersionNo,
    pub rotation: RotationId,
    pub value: &'a SecretValue,
}

/// One secret's first version and the state its first rotation ends in, as
/// [`Store::create_first_versions`] writes it: the version's value, then the journal, labels
/// and history record a [`Commit`] would carry.
#[derive(Debug, Clone)]
pub struct FirstVersion {
    pub secret: SecretRef,
    pub version: VersionNo,
    /// The attempt that created the version.
    pub rotation: RotationId,
    pub value: SecretValue,
    /// Serialised state-machine state after the first rotation; opaque to the store.
    pub journal: Vec<u8>,
    /// Every labelled version after the first rotation (the first version, `current`).
    pub labels: Vec<(VersionNo, Label)>,
    pub history: Option<HistoryRecord>,
}

/// How many secrets the default [`Store::create_first_versions`] writes at once: a remote
/// store's round trips overlap, without a burst that would look like an attack to it.
pub const FIRST_VERSIONS_CONCURRENCY: usize = 16;

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

    /// [`Store::commit`] by the leader of `term` (HA, see `crate::ha`): refused with
    /// [`StoreError::Deposed`] when the secret's state was last committed at a higher term,
    /// otherwise committed and the term recorded with the state. Term 0 is a process
    /// without HA: no check, nothing recorded, exactly [`Store::commit`].
    ///
    /// A store that is single-replica by nature (the embedded store: one file on one
    /// disk, and the config refuses `[ha]` with it) keeps this default, which ignores the
    /// term.
    async fn commit_at_term(
        &self,
        secret: &SecretRef,
        commit: Commit<'_>,
        term: u64,
    ) -> Result<(), StoreError> {
        let _ = term;
        self.commit(secret, commit).await
    }

    /// Whether a write through this store may go out now: `Err` ([`StoreError::Fenced`])
    /// once the writer's leadership ended (HA self-fencing, `crate::ha::FencedStore`).
    /// Writers of other systems on the leader's behalf (view publishers) ask it before
    /// they write. Always `Ok` for a store that is not fenced.
    fn check_writable(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// [`Store::put_version`] of `version` (as it says: the same version again for the
    /// same rotation keeps the first value) followed by [`Store::commit`], for a rotation
    /// actor that stepped an attempt on in memory past its generate step (a target whose
    /// steps need no I/O): the commit's labels may name `version`. A backend that can
    /// writes both in one transaction (the embedded store does); the default writes the
    /// version first, which a crash between the two leaves as after a crash between the
    /// generate step and the commit that follows it: the journal resumes the same rotation,
    /// whose `put_version` then finds its version already there.
    async fn put_version_and_commit(
        &self,
        secret: &SecretRef,
        version: NewVersion<'_>,
        commit: Commit<'_>,
    ) -> Result<(), StoreError> {
        self.put_version(
            secret,
            version.version,
            version.rotation,
            version.value,
            commit.now,
        )
        .await?;
        self.commit(secret, commit).await
    }

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

    /// Writes the first version of many secrets that have no journal yet, each with the
    /// journal, labels and history record of its finished first rotation (the bulk path of
    /// a first start). A secret that has a journal by the time it is written is left as it
    /// is (someone else started it); the answer says, in order, which ones were written.
    ///
    /// The embedded store writes the whole batch in one transaction: all of it, or none.
    /// This default, which the Vault store uses, runs up to
    /// [`FIRST_VERSIONS_CONCURRENCY`] secrets at a time, each as `journal`, `put_version`
    /// and `commit`: each secret's state lands in one write or not at all, and a version
    /// written without its state (a crash in between) is written again by the same
    /// rotation, which `put_version` accepts, keeping the first value.
    async fn create_first_versions(
        &self,
        firsts: &[FirstVersion],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, StoreError> {
        let mut written = Vec::with_capacity(firsts.len());
        // Chunks rather than a sliding window: boxed futures keep the default method's
        // future `Send` for every implementor.
        for chunk in firsts.chunks(FIRST_VERSIONS_CONCURRENCY) {
            let mut calls: Vec<futures::future::BoxFuture<'_, Result<bool, StoreError>>> =
                Vec::with_capacity(chunk.len());
            for first in chunk {
                calls.push(Box::pin(async move {
                    if self.journal(&first.secret).await?.is_some() {
                        return Ok(false);
                    }
                    self.put_version(
                        &first.secret,
                        first.version,
                        first.rotation,
                        &first.value,
                        now,
                    )
                    .await?;
                    self.commit(
                        &first.secret,
                        Commit {
                            journal: &first.journal,
                            labels: &first.labels,
                            history: first.history.as_ref(),
                            now,
                        },
                    )
                    .await?;
                    Ok(true)
                }));
            }
            written.extend(futures::future::try_join_all(calls).await?);
        }
        Ok(written)
    }

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
