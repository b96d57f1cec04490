//! The embedded store: one redb file on local disk, values sealed under a master key
//! (see [`super::crypto`]). The default backend, and the one a laptop run uses.
//!
//! # Tables
//!
//! | table      | key                      | value                                   |
//! |------------|--------------------------|-----------------------------------------|
//! | `meta`     | name                     | schema version, master key check value  |
//! | `versions` | (tenant, key, version)   | [`VersionMeta`] as JSON, labels included |
//! | `values`   | (tenant, key, version)   | sealed value (AES-256-GCM)              |
//! | `journal`  | (tenant, key)            | opaque state-machine bytes              |
//! | `history`  | (tenant, key, seq)       | [`HistoryRecord`] as JSON               |
//!
//! Metadata and ciphertexts sit in separate tables so listing versions never reads a
//! ciphertext. Tuple keys order by tenant, key, then number, so a secret's versions and
//! history are contiguous ranges and come back sorted. JSON keeps the file inspectable
//! with generic redb tooling; none of it holds a value. The journal is stored as given,
//! in the clear: it is state, and values travel only through [`Store::put_version`].
//!
//! # Durability and atomicity
//!
//! Every write method is one redb write transaction, and returns `Ok` only once that
//! transaction is on disk, so a method that returned `Ok` survives a crash and one that
//! failed before its commit left nothing behind.
//!
//! Durability is a group commit: each transaction commits without an fsync (redb's
//! `Durability::None`: visible at once, on disk at the next durable commit), then its
//! writer waits for an fsync'd empty commit that covers it. Whichever waiting writer finds
//! no such fsync in flight runs one for everybody who committed before it started; the
//! others wait for it. One writer alone pays one fsync per write, as before; sixteen
//! rotation actors writing at once share theirs. A rotation through a target that does
//! I/O costs one `put_version` and five `commit`s; one through a target whose steps run in
//! memory (`none`) costs one `put_version_and_commit`, a single transaction
//! ([`EmbeddedStore::write_counts`] counts them); `benches/store.rs` measures writes alone
//! and with concurrent writers.
//! If that fsync fails, the writers it was to cover get the error although their
//! transaction is visible: the journal they resume from may then be one step ahead of what
//! is durable, which the state machine's idempotent steps already tolerate (it is the same
//! as a crash just after a commit).
//!
//! # Recovery after an I/O error
//!
//! redb latches its first I/O error (a full disk, a file made read-only): every later
//! operation on that handle fails with `PreviousIo` until the database is closed and
//! opened again. So an I/O error marks the handle broken, and the next operation closes
//! and reopens the file before it runs (at once the first time, then no more often than
//! [`REOPEN_BACKOFF`] allows while reopening keeps failing), so the store recovers by
//! itself once the fault clears, without a restart of rotor.
//!
//! Reopening loses no write that returned `Ok` and shows no half-write. Every operation
//! holds the handle shared for its whole transaction and a reopen holds it exclusively,
//! so no transaction straddles two handles. redb opens a file that was not closed cleanly
//! at its last durable commit: every write that returned `Ok` was covered by an fsync'd
//! commit first (see above), so it is there; a transaction is all in or all out, so none
//! is there in part. What a reopen can drop is a commit that was visible but not yet
//! durable; its writer is still waiting for its fsync and gets an error (the group commit
//! counts the reopens), never `Ok`: its caller resumes from what is on disk, as after a
//! crash just before that commit.
//!
//! # Threads
//!
//! redb blocks, and so does the group commit's wait for an fsync. Each [`Store`] call runs
//! on one of tokio's blocking threads (`spawn_blocking`), so an async caller never blocks a
//! runtime worker; concurrent writers are concurrent threads, which is what lets them
//! share an fsync.
//!
//! # Fault injection
//!
//! [`EmbeddedStore::fail_writes_after`] makes later write transactions fail with
//! [`StoreError::Injected`] just before their commit, so tests can prove that a failure at
//! any write leaves the store in the state after the previous one. Unused, it costs one
//! relaxed atomic load per write.

pub mod config;

use std::fmt;
use std::fs;
use std::mem::ManuallyDrop;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redb::{
    Database, Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition,
    WriteTransaction,
};

use super::crypto::MasterKey;
use super::labels::{apply_labels, new_version};
use super::{
    Commit, FirstVersion, NewVersion, ReadValue, Record, Rev, Store, StoreError, check_record_name,
};
use crate::backoff::ExponentialBackoff;
use crate::domain::{HistoryRecord, RotationId, SecretRef, VersionMeta, VersionNo};
use crate::generator::SecretValue;

/// Bumped when the table layout changes incompatibly; a newer file is refused, not misread.
const SCHEMA_VERSION: u64 = 1;
const META_SCHEMA: &str = "schema_version";
const META_KEY_CHECK: &str = "master_key_check";

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VERSIONS: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("versions");
const VALUES: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("values");
const JOURNAL: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("journal");
const HISTORY: TableDefinition<(&str, &str, u64), &[u8]> = TableDefinition::new("history");
/// Records (`Store::record_*`): `(namespace, id)` to the revision (8 bytes, big-endian)
/// followed by the record's bytes. Not sealed: records hold no secret value.
const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
/// The last record revision handed out, in `META`. One counter for every record, so a
/// revision is never reused, not even for a record deleted and written again.
const META_RECORD_REV: &str = "record_rev";

/// redb page cache size.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// No fault planned: writes are never failed on purpose.
const NO_FAULTS: u64 = u64::MAX;

/// How long to wait before reopening again after a reopen failed (the fault has not
/// cleared yet): operations in between fail at once instead of each retrying the open.
const REOPEN_BACKOFF: ExponentialBackoff =
    match ExponentialBackoff::new(Duration::from_millis(100), Duration::from_secs(5), 0.0) {
        Ok(b) => b,
        Err(_) => panic!("invalid reopen backoff"),
    };

/// What [`EmbeddedStore::write_counts`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCounts {
    /// Write transactions committed.
    pub commits: u64,
    /// Fsync'd commits the group commit ran to make them durable.
    pub fsyncs: u64,
}

/// A [`Store`] backed by one redb file.
pub struct EmbeddedStore {
    /// Shared with the blocking threads each call runs on.
    db: Arc<Db>,
}

/// The open file and its key. Its methods block (redb I/O, the group commit's wait for an
/// fsync); [`EmbeddedStore`] runs each on a blocking thread.
struct Db {
    /// The open file. Every operation holds it shared for its whole transaction; only a
    /// reopen after an I/O error (see [`Db::recover`]) holds it exclusively. `None` once
    /// closed by a reopen that then failed to open it again.
    file: RwLock<Option<Redb>>,
    /// redb reported an I/O error: the handle refuses everything until it is reopened.
    broken: AtomicBool,
    /// Failed reopens in a row and when the next may run (serialises reopens too).
    reopen: Mutex<Reopen>,
    key: MasterKey,
    path: PathBuf,
    /// Write transactions still allowed to commit before injected failures start;
    /// [`NO_FAULTS`] when no fault is planned (production).
    writes_left: AtomicU64,
    /// Whether commits wait for fsync. Always true in production; bulk seeding (benchmarks
    /// and tests that need 100,000 secrets) turns it off, then flushes with [`Self::sync`].
    fsync: AtomicBool,
    /// The group commit (see the module doc).
    group: GroupSync,
}

#[derive(Default)]
struct Reopen {
    failures: u32,
    not_before: Option<Instant>,
}

/// Commits counted in order, and how many of them an fsync has covered.
#[derive(Default)]
struct GroupSync {
    state: Mutex<SyncState>,
    /// An fsync finished.
    synced: Condvar,
    /// `active` dropped to zero.
    idle: Condvar,
}

#[derive(Default)]
struct SyncState {
    /// Transactions committed (not necessarily durable) so far.
    committed: u64,
    /// The first `durable` of them are on disk.
    durable: u64,
    /// A writer is running the fsync'd commit now.
    syncing: bool,
    /// Fsync'd commits run by the group commit (for tests).
    fsyncs: u64,
    /// Write methods between their start and their commit (or failure): the writers an
    /// fsync about to start should wait for, so that one covers them all.
    active: u64,
    /// Reopens so far: an fsync run on the handle before a reopen covers nothing after it.
    reopens: u64,
    /// Commits up to this one that were not durable when the file was reopened: they may
    /// be gone, so their writers get an error, never `Ok`.
    lost: u64,
}

/// Longest an fsync waits for writers still on their way to their commit.
const GROUP_WAIT: Duration = Duration::from_millis(2);

/// One write method on its way to its commit; leaves `active` when dropped.
struct Writer<'a>(&'a GroupSync);

impl GroupSync {
    fn enter(&self) -> Writer<'_> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).active += 1;
        Writer(self)
    }
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        st.active -= 1;
        if st.active == 0 {
            self.0.idle.notify_all();
        }
    }
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.db.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the store at `db_path`, creating the file (mode 0600) and its parent
    /// directories (0700) if needed.
    ///
    /// The master key comes from `master_key_file`. For a new store a missing key file is
    /// created (see [`MasterKey::load_or_create`]) and the key's check value recorded. For
    /// an existing store the key must exist and match that check value: a wrong key is
    /// refused here, with the paths in the message, rather than surfacing later as
    /// decryption failures; and a missing key file is an error, not a reason to make a new
    /// key that could never open the existing values.
    pub fn open(db_path: &Path, master_key_file: &Path) -> Result<Self, StoreError> {
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: db_path.display().to_string(),
            source,
        };
        if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| open_err(Box::new(e)))?;
        }
        // redb creates files with the process umask (often 0644). Fingerprints and history
        // are not for other users either, so create the file ourselves first.
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db_path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(open_err(Box::new(e))),
        }
        // redb's default page cache is 1 GiB; rotor reads each journal once at start and
        // then touches a few pages per rotation, so a small cache keeps RSS per managed
        // secret low (100,000 secrets must fit in well under 1 GiB).
        // Each redb call is contained on its own and the database is owned out here, so a
        // panic never unwinds through a frame that owns it (dropping it there, after redb
        // poisoned its locks, would panic again while unwinding: an abort).
        let damaged = |e: String| open_err(format!("{DAMAGED}: {e}").into());
        let db = contain_panic(|| {
            redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(db_path)
        })
        .map_err(damaged)?
        .map_err(|e| open_err(Box::new(e)))?;
        let db = Redb::new(db);
        let (schema, stored_check) = contain_panic(|| read_meta(&db))
            .map_err(damaged)?
            .map_err(|e| open_err(e.into()))?;
        if let Some(found) = schema.filter(|v| *v != SCHEMA_VERSION) {
            return Err(open_err(
                format!(
                    "schema version {found} is not {SCHEMA_VERSION}, the one this rotor understands; use a matching rotor release"
                )
                .into(),
            ));
        }

        let key = match &stored_check {
            Some(check) => {
                let key = match MasterKey::load(master_key_file) {
                    Err(StoreError::MasterKey { path, .. }) if !master_key_file.exists() => {
                        return Err(StoreError::MasterKey {
                            path,
                            reason: format!(
                                "does not exist, but the store at {} already holds values sealed under a master key; restore the key file (a new key could not decrypt them)",
                                db_path.display()
                            ),
                        });
                    }
                    other => other?,
                };
                if !key.matches_check_value(check) {
                    return Err(StoreError::MasterKey {
                        path: master_key_file.display().to_string(),
                        reason: format!(
                            "master key does not match the store at {}",
                            db_path.display()
                        ),
                    });
                }
                key
            }
            None => MasterKey::load_or_create(master_key_file)?,
        };

        // Create every table up front so readers never meet a missing table, and record
        // the schema and key check on first open. Done after the key check so a refused
        // open writes nothing.
        let init = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                if schema.is_none() {
                    meta.insert(META_SCHEMA, SCHEMA_VERSION.to_be_bytes().as_slice())?;
                }
                if stored_check.is_none() {
                    meta.insert(META_KEY_CHECK, key.check_value().as_slice())?;
                }
                txn.open_table(VERSIONS)?;
                txn.open_table(VALUES)?;
                txn.open_table(JOURNAL)?;
                txn.open_table(HISTORY)?;
                txn.open_table(RECORDS)?;
            }
            txn.commit()?;
            Ok(())
        };
        contain_panic(init)
            .map_err(damaged)?
            .map_err(|e| open_err(Box::new(e)))?;

        Ok(EmbeddedStore {
            db: Arc::new(Db {
                file: RwLock::new(Some(db)),
                broken: AtomicBool::new(false),
                reopen: Mutex::default(),
                key,
                path: db_path.to_owned(),
                writes_left: AtomicU64::new(NO_FAULTS),
                fsync: AtomicBool::new(true),
                group: GroupSync::default(),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.db.path
    }

    /// Test hook: lets the next `n` write transactions commit, then fails every later one
    /// with [`StoreError::Injected`] just before its commit, so none of it persists.
    /// Counts only transactions that would commit (an idempotent no-op `put_version`
    /// writes nothing and is not counted).
    pub fn fail_writes_after(&self, n: u64) {
        // `NO_FAULTS` is the sentinel; a plan that large is the same as no plan.
        self.db
            .writes_left
            .store(n.min(NO_FAULTS - 1), Ordering::SeqCst);
    }

    /// Removes any planned write failure.
    pub fn clear_faults(&self) {
        self.db.writes_left.store(NO_FAULTS, Ordering::SeqCst);
    }

    /// Turns fsync on commit off (`false`) or back on. With it off a crash may lose the
    /// latest commits (never corrupt the file): for bulk seeding only, never for a running
    /// service. Call [`Self::sync`] afterwards.
    pub fn set_fsync(&self, on: bool) {
        self.db.fsync.store(on, Ordering::Relaxed);
    }

    /// Makes every earlier commit durable (one fsync'd empty transaction). Blocks: for
    /// the end of a bulk seeding, not for a running service.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.db.sync()
    }

    /// Write transactions committed and fsyncs run by the group commit since the store
    /// was opened: what a rotation costs the disk (commits per rotation, and how many of
    /// them shared an fsync), read by tests and benchmarks.
    pub fn write_counts(&self) -> WriteCounts {
        let st = self
            .db
            .group
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        WriteCounts {
            commits: st.committed,
            fsyncs: st.fsyncs,
        }
    }

    /// Runs `call` on a blocking thread: every redb read and write blocks, and a write
    /// also waits for the group commit's fsync.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            contain_panic(|| call(&db))
                .map_err(|e| StoreError::Backend(format!("{DAMAGED}: {e}")))?
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store thread: {e}")))?
    }
}

impl Db {
    /// Whether the write about to commit must fail; consumes one allowed write otherwise.
    fn inject_fault(&self) -> bool {
        let mut left = self.writes_left.load(Ordering::Relaxed);
        loop {
            match left {
                NO_FAULTS => return false,
                0 => return true,
                n => match self.writes_left.compare_exchange_weak(
                    n,
                    n - 1,
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return false,
                    Err(now) => left = now,
                },
            }
        }
    }

    /// Commits `txn`, or aborts it when a fault is planned, and returns its place in the
    /// group commit for [`Self::wait_durable`] (called once the file is released).
    /// `writer` is the method's place among the writers on their way to a commit.
    fn finish(
        &self,
        txn: WriteTransaction,
        what: &dyn fmt::Display,
        writer: Writer<'_>,
    ) -> Result<u64, StoreError> {
        if self.inject_fault() {
            txn.abort().map_err(|e| self.backend(what, e))?;
            return Err(StoreError::Injected);
        }
        txn.commit().map_err(|e| self.backend(what, e))?;
        // Counted after the commit: an fsync that starts once this number is read covers
        // this transaction.
        let seq = {
            let mut st = self.group.state.lock().unwrap_or_else(|p| p.into_inner());
            st.committed += 1;
            st.committed
        };
        drop(writer);
        Ok(seq)
    }

    /// Returns once the first `seq` commits are on disk, running the fsync itself when no
    /// other writer is.
    /// Must not be called with the file held (the fsync takes it).
    fn wait_durable(&self, seq: u64) -> Result<(), StoreError> {
        if !self.fsync.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut st = self.group.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if st.durable >= seq {
                return Ok(());
            }
            if seq <= st.lost {
                return Err(StoreError::Backend(format!(
                    "{}: reopened after an I/O error before this write was on disk; it may be lost",
                    self.path.display()
                )));
            }
            if st.syncing {
                st = self
                    .group
                    .synced
                    .wait(st)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.syncing = true;
            // Let the writers already on their way commit first (briefly), so this one
            // fsync covers them too.
            st = self
                .group
                .idle
                .wait_timeout_while(st, GROUP_WAIT, |s| s.active > 0)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            let (target, reopens) = (st.committed, st.reopens);
            drop(st);
            let synced = self.sync();
            st = self.group.state.lock().unwrap_or_else(|p| p.into_inner());
            st.syncing = false;
            // An fsync on a handle opened after these commits covers none of them.
            if synced.is_ok() && st.reopens == reopens {
                st.durable = st.durable.max(target);
                st.fsyncs += 1;
            }
            self.group.synced.notify_all();
            // On failure the others retry the fsync themselves; this writer reports it.
            synced?;
        }
    }

    /// Every write transaction commits without fsync; [`Self::wait_durable`] makes it
    /// durable.
    fn begin_write(
        &self,
        db: &Database,
        what: &dyn fmt::Display,
    ) -> Result<WriteTransaction, StoreError> {
        let mut txn = db.begin_write().map_err(|e| self.backend(what, e))?;
        txn.set_durability(Durability::None)
            .map_err(|e| self.backend(what, e))?;
        Ok(txn)
    }

    /// Makes every earlier commit durable (one fsync'd empty transaction).
    fn sync(&self) -> Result<(), StoreError> {
        let what = "sync";
        self.with_file(|db| {
            let txn = db.begin_write().map_err(|e| self.backend(&what, e))?;
            txn.commit().map_err(|e| self.backend(&what, e))
        })
    }

    /// Runs `op` on the open file, reopening it first if an I/O error broke it.
    fn with_file<T>(
        &self,
        op: impl FnOnce(&Database) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.broken.load(Ordering::Acquire) {
            self.recover()?;
        }
        let file = self.file.read().unwrap_or_else(|p| p.into_inner());
        match file.as_ref() {
            Some(db) => op(db),
            // Closed by a reopen that failed since `recover` returned.
            None => Err(StoreError::Backend(format!(
                "{}: not open after an I/O error",
                self.path.display()
            ))),
        }
    }

    /// A store error for `e`; an I/O error also marks the handle broken, since redb
    /// refuses every later operation on it (see the module doc).
    fn backend(&self, what: &dyn fmt::Display, e: impl Into<redb::Error>) -> StoreError {
        let e = e.into();
        if matches!(e, redb::Error::Io(_) | redb::Error::PreviousIo) {
            self.broken.store(true, Ordering::Release);
        }
        backend(what, e)
    }

    /// Closes the broken handle and opens the file again (see the module doc), unless a
    /// reopen failed less than its backoff ago.
    fn recover(&self) -> Result<(), StoreError> {
        let mut reopen = self.reopen.lock().unwrap_or_else(|p| p.into_inner());
        // Another operation may have reopened it while this one waited.
        if !self.broken.load(Ordering::Acquire) {
            return Ok(());
        }
        let now = Instant::now();
        if let Some(at) = reopen.not_before.filter(|at| now < *at) {
            return Err(StoreError::Backend(format!(
                "{}: not reopened yet after an I/O error ({} failed reopens; the next in {} ms)",
                self.path.display(),
                reopen.failures,
                (at - now).as_millis()
            )));
        }
        // Waits for every operation on the old handle to finish: none straddles the reopen.
        let mut file = self.file.write().unwrap_or_else(|p| p.into_inner());
        // After a latched I/O error redb writes nothing at close; it releases the file
        // and its lock. Dropping a `Redb` closes it inside the panic guard.
        drop(file.take());
        {
            let mut st = self.group.state.lock().unwrap_or_else(|p| p.into_inner());
            st.reopens += 1;
            st.lost = st.committed;
            self.group.synced.notify_all();
        }
        match reopen_file(&self.path, &self.key) {
            Ok(db) => {
                *file = Some(db);
                self.broken.store(false, Ordering::Release);
                *reopen = Reopen::default();
                Ok(())
            }
            Err(e) => {
                reopen.failures += 1;
                reopen.not_before = Some(now + REOPEN_BACKOFF.delay(reopen.failures, 0.0));
                Err(e)
            }
        }
    }
}

/// Opens the store file again after an I/O error: redb recovers it to its last durable
/// commit. `open`, not `create`: a file that is gone is an error, not a new empty store;
/// and the key check value must still match, so it is the same store.
fn reopen_file(path: &Path, key: &MasterKey) -> Result<Redb, StoreError> {
    let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    // Contained as in `EmbeddedStore::open`: the file may have been damaged meanwhile.
    let damaged = |e: String| open_err(format!("{DAMAGED}: {e}").into());
    let db = contain_panic(|| redb::Builder::new().set_cache_size(CACHE_BYTES).open(path))
        .map_err(damaged)?
        .map_err(|e| open_err(Box::new(e)))?;
    let db = Redb::new(db);
    let (_, check) = contain_panic(|| read_meta(&db))
        .map_err(damaged)?
        .map_err(|e| open_err(e.into()))?;
    if !check.is_some_and(|c| key.matches_check_value(&c)) {
        return Err(open_err(
            "reopened after an I/O error, it no longer holds the key check value of the store opened at start"
                .into(),
        ));
    }
    Ok(db)
}

/// What a panic inside redb is reported as: redb panics (`unreachable!`, slice indexing,
/// "Malformed allocator state") on some damaged files instead of returning an error, and a
/// damaged file must be an error that names the store, not a crash of `rotor run` or of an
/// offline command.
const DAMAGED: &str = "the store file is damaged (the database library failed reading it)";

/// Runs `f`, turning a panic into an error. The panic's own message is kept out of the
/// error (it is redb's internal wording, about positions and lengths, and says nothing an
/// operator can act on beyond "damaged"); only where it happened is given. A `Database`
/// that panicked may be left inconsistent, which is why later calls on it are still
/// wrapped: they fail the same way rather than crash.
fn contain_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|_| {
        "panicked inside the store; restore the file from a backup or move it aside".to_owned()
    })
}

/// redb's `Database`, dropped inside [`contain_panic`]: after redb panicked on a damaged
/// file its locks are poisoned, and its `Drop` (which closes the file) unwraps them, so a
/// plain drop would panic at shutdown or on the error path of `open`.
struct Redb(ManuallyDrop<Database>);

impl Redb {
    fn new(db: Database) -> Self {
        Redb(ManuallyDrop::new(db))
    }
}

impl std::ops::Deref for Redb {
    type Target = Database;

    fn deref(&self) -> &Database {
        &self.0
    }
}

impl Drop for Redb {
    fn drop(&mut self) {
        // SAFETY: `self.0` is taken once, here, and `self` is never used again.
        let db = unsafe { ManuallyDrop::take(&mut self.0) };
        // Nothing to report to: a failed close of a damaged file was already an error.
        let _ = contain_panic(move || drop(db));
    }
}

/// Schema version and key check value, if the file has been initialised.
fn read_meta(db: &Database) -> Result<(Option<u64>, Option<Vec<u8>>), redb::Error> {
    let txn = db.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok((None, None)),
        Err(e) => return Err(e.into()),
    };
    let schema = match meta.get(META_SCHEMA)? {
        Some(v) => Some(
            <[u8; 8]>::try_from(v.value())
                .map(u64::from_be_bytes)
                .map_err(|_| {
                    redb::Error::Corrupted("meta schema_version is not 8 bytes".to_owned())
                })?,
        ),
        None => None,
    };
    let check = meta.get(META_KEY_CHECK)?.map(|v| v.value().to_vec());
    Ok((schema, check))
}

fn backend(what: &dyn fmt::Display, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(format!("{what}: {}", e.into()))
}

fn corrupt(what: &dyn fmt::Display, e: serde_json::Error) -> StoreError {
    StoreError::Backend(format!("{what}: corrupt record: {e}"))
}

/// Describes an operation on a secret for error messages (`commit tenant1/db`).
struct Op<'a>(&'static str, &'a SecretRef);

impl fmt::Display for Op<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

/// Outcome of looking up a version inside `put_version`'s transaction.
enum Existing {
    Absent,
    SameRotation,
    Other(RotationId),
}

#[async_trait::async_trait]
impl ReadValue for EmbeddedStore {
    async fn read_value(
        &self,
        secret: &SecretRef,
        version: VersionNo,
    ) -> Result<SecretValue, StoreError> {
        let secret = secret.clone();
        self.blocking(move |db| db.with_file(|f| db.read_value(f, &secret, version)))
            .await
    }

    async fn current_version(&self, secret: &SecretRef) -> Result<Option<VersionNo>, StoreError> {
        // The labels live in each version's metadata, which `versions` reads in one
        // read transaction.
        Ok(super::labels::current(
            &Store::versions(self, secret).await?,
        ))
    }
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    fn fingerprint(&self, value: &[u8]) -> String {
        self.db.key.fingerprint(value)
    }

    async fn put_version(
        &self,
        secret: &SecretRef,
        version: VersionNo,
        rotation: RotationId,
        value: &SecretValue,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (secret, value) = (secret.clone(), value.clone());
        self.blocking(move |db| {
            let seq =
                db.with_file(|f| db.put_version(f, &secret, version, rotation, &value, now))?;
            db.wait_durable(seq)
        })
        .await
    }

    async fn commit(&self, secret: &SecretRef, commit: Commit<'_>) -> Result<(), StoreError> {
        let secret = secret.clone();
        let (journal, labels) = (commit.journal.to_vec(), commit.labels.to_vec());
        let (history, now) = (commit.history.cloned(), commit.now);
        self.blocking(move |db| {
            let commit = Commit {
                journal: &journal,
                labels: &labels,
                history: history.as_ref(),
                now,
            };
            let seq = db.with_file(|f| db.commit(f, &secret, commit))?;
            db.wait_durable(seq)
        })
        .await
    }

    async fn put_version_and_commit(
        &self,
        secret: &SecretRef,
        version: NewVersion<'_>,
        commit: Commit<'_>,
    ) -> Result<(), StoreError> {
        let secret = secret.clone();
        let (number, rotation, value) = (version.version, version.rotation, version.value.clone());
        let (journal, labels) = (commit.journal.to_vec(), commit.labels.to_vec());
        let (history, now) = (commit.history.cloned(), commit.now);
        self.blocking(move |db| {
            let version = NewVersion {
                version: number,
                rotation,
                value: &value,
            };
            let commit = Commit {
                journal: &journal,
                labels: &labels,
                history: history.as_ref(),
                now,
            };
            let seq = db.with_file(|f| db.put_version_and_commit(f, &secret, version, commit))?;
            db.wait_durable(seq)
        })
        .await
    }

    async fn journal(&self, secret: &SecretRef) -> Result<Option<Vec<u8>>, StoreError> {
        let secret = secret.clone();
        self.blocking(move |db| db.with_file(|f| db.journal(f, &secret)))
            .await
    }

    async fn versions(&self, secret: &SecretRef) -> Result<Vec<VersionMeta>, StoreError> {
        let secret = secret.clone();
        self.blocking(move |db| db.with_file(|f| db.versions(f, &secret)))
            .await
    }

    async fn history(
        &self,
        secret: &SecretRef,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, StoreError> {
        let secret = secret.clone();
        self.blocking(move |db| db.with_file(|f| db.history(f, &secret, limit)))
            .await
    }

    async fn secrets(&self) -> Result<Vec<SecretRef>, StoreError> {
        self.blocking(|db| db.with_file(|f| db.secrets(f))).await
    }

    async fn create_first_versions(
        &self,
        firsts: &[FirstVersion],
        now: DateTime<Utc>,
    ) -> Result<Vec<bool>, StoreError> {
        let firsts = firsts.to_vec();
        self.blocking(move |db| {
            let (seq, written) = db.with_file(|f| db.create_first_versions(f, &firsts, now))?;
            db.wait_durable(seq)?;
            Ok(written)
        })
        .await
    }

    async fn journals(
        &self,
        after: Option<&SecretRef>,
        limit: usize,
    ) -> Result<Vec<(SecretRef, Vec<u8>)>, StoreError> {
        let after = after.cloned();
        self.blocking(move |db| db.with_file(|f| db.journals(f, after.as_ref(), limit)))
            .await
    }

    async fn record_get(&self, ns: &str, id: &str) -> Result<Option<(Vec<u8>, Rev)>, StoreError> {
        check_record_name("namespace", ns)?;
        check_record_name("id", id)?;
        let (ns, id) = (ns.to_owned(), id.to_owned());
        self.blocking(move |db| db.with_file(|f| db.record_get(f, &ns, &id)))
            .await
    }

    async fn record_put(
        &self,
        ns: &str,
        id: &str,
        bytes: &[u8],
        expected: Option<Rev>,
    ) -> Result<Rev, StoreError> {
        check_record_name("namespace", ns)?;
        check_record_name("id", id)?;
        let (ns, id, bytes) = (ns.to_owned(), id.to_owned(), bytes.to_vec());
        self.blocking(move |db| {
            let (seq, rev) =
                db.with_file(|f| db.record_write(f, &ns, &id, Some(&bytes), expected))?;
            db.wait_durable(seq)?;
            Ok(rev)
        })
        .await
    }

    async fn record_delete(&self, ns: &str, id: &str, expected: Rev) -> Result<(), StoreError> {
        check_record_name("namespace", ns)?;
        check_record_name("id", id)?;
        let (ns, id) = (ns.to_owned(), id.to_owned());
        self.blocking(move |db| {
            let (seq, _) = db.with_file(|f| db.record_write(f, &ns, &id, None, Some(expected)))?;
            db.wait_durable(seq)
        })
        .await
    }

    async fn record_list(&self, ns: &str) -> Result<Vec<Record>, StoreError> {
        check_record_name("namespace", ns)?;
        let ns = ns.to_owned();
        self.blocking(move |db| db.with_file(|f| db.record_list(f, &ns)))
            .await
    }
}

/// A record's stored form: its revision, then its bytes.
fn split_record(what: &dyn fmt::Display, raw: &[u8]) -> Result<(Vec<u8>, Rev), StoreError> {
    if raw.len() < 8 {
        return Err(StoreError::Backend(format!(
            "{what}: corrupt record: shorter than its revision"
        )));
    }
    let (rev, bytes) = raw.split_at(8);
    let rev = u64::from_be_bytes(rev.try_into().unwrap_or_default());
    Ok((bytes.to_vec(), rev))
}

/// The record methods, blocking; each one redb transaction.
impl Db {
    fn record_get(
        &self,
        db: &Database,
        ns: &str,
        id: &str,
    ) -> Result<Option<(Vec<u8>, Rev)>, StoreError> {
        let what = format!("read record {ns}/{id}");
        let txn = db.begin_read().map_err(|e| self.backend(&what, e))?;
        let records = txn
            .open_table(RECORDS)
            .map_err(|e| self.backend(&what, e))?;
        let found = records.get((ns, id)).map_err(|e| self.backend(&what, e))?;
        found.map(|g| split_record(&what, g.value())).transpose()
    }

    /// Writes (`bytes` given) or deletes (`None`) `ns/id` if its revision is `expected`
    /// (`None`: absent). Returns the group-commit sequence and the new revision (0 for a
    /// delete). A delete of an absent record commits nothing.
    fn record_write(
        &self,
        db: &Database,
        ns: &str,
        id: &str,
        bytes: Option<&[u8]>,
        expected: Option<Rev>,
    ) -> Result<(u64, Rev), StoreError> {
        let what = format!("write record {ns}/{id}");
        let conflict = || StoreError::Conflict {
            path: format!("record {ns}/{id}"),
        };
        let writer = self.group.enter();
        let txn = self.begin_write(db, &what)?;
        let rev = {
            let mut records = txn
                .open_table(RECORDS)
                .map_err(|e| self.backend(&what, e))?;
            let found = records
                .get((ns, id))
                .map_err(|e| self.backend(&what, e))?
                .map(|g| split_record(&what, g.value()).map(|(_, rev)| rev))
                .transpose()?;
            match bytes {
                None => {
                    match found {
                        None => {
                            drop(records);
                            txn.abort().map_err(|e| self.backend(&what, e))?;
                            drop(writer);
                            return Ok((0, 0));
                        }
                        Some(rev) if Some(rev) != expected => return Err(conflict()),
                        Some(_) => {}
                    }
                    records
                        .remove((ns, id))
                        .map_err(|e| self.backend(&what, e))?;
                    0
                }
                Some(bytes) => {
                    if found != expected {
                        return Err(conflict());
                    }
                    let mut meta = txn.open_table(META).map_err(|e| self.backend(&what, e))?;
                    let last = meta
                        .get(META_RECORD_REV)
                        .map_err(|e| self.backend(&what, e))?
                        .and_then(|g| <[u8; 8]>::try_from(g.value()).ok())
                        .map_or(0, u64::from_be_bytes);
                    let rev = last + 1;
                    meta.insert(META_RECORD_REV, rev.to_be_bytes().as_slice())
                        .map_err(|e| self.backend(&what, e))?;
                    let mut raw = Vec::with_capacity(8 + bytes.len());
                    raw.extend_from_slice(&rev.to_be_bytes());
                    raw.extend_from_slice(bytes);
                    records
                        .insert((ns, id), raw.as_slice())
                        .map_err(|e| self.backend(&what, e))?;
                    rev
                }
            }
        };
        let seq = self.finish(txn, &what, writer)?;
        Ok((seq, rev))
    }

    fn record_list(&self, db: &Database, ns: &str) -> Result<Vec<Record>, StoreError> {
        let what = format!("list records {ns}");
        let txn = db.begin_read().map_err(|e| self.backend(&what, e))?;
        let records = txn
            .open_table(RECORDS)
            .map_err(|e| self.backend(&what, e))?;
        let mut out = Vec::new();
        // Every id sorts at or after "" and before any string that starts past `ns`.
        for item in records
            .range((ns, "")..)
            .map_err(|e| self.backend(&what, e))?
        {
            let (key, v) = item.map_err(|e| self.backend(&what, e))?;
            let (found_ns, id) = key.value();
            if found_ns != ns {
                break;
            }
            let (bytes, rev) = split_record(&what, v.value())?;
            out.push(Record {
                id: id.to_owned(),
                bytes,
                rev,
            });
        }
        Ok(out)
    }
}

/// The [`Store`] methods, blocking; each one redb transaction.
impl Db {
    fn put_version(
        &self,
        db: &Database,
        secret: &SecretRef,
        version: VersionNo,
        rotation: RotationId,
        value: &SecretValue,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let what = Op("put_version", secret);
        let writer = self.group.enter();
        let txn = self.begin_write(db, &what)?;
        let new = NewVersion {
            version,
            rotation,
            value,
        };
        let existing = self.insert_version(&txn, &what, secret, new, now)?;
        match existing {
            Existing::Absent => self.finish(txn, &what, writer),
            // A replay after a crash: the first value stays, nothing is written, and the
            // version was durable before the call that wrote it returned (commit 0, which
            // every fsync covers).
            Existing::SameRotation => {
                txn.abort().map_err(|e| self.backend(&what, e))?;
                Ok(0)
            }
            Existing::Other(existing) => {
                txn.abort().map_err(|e| self.backend(&what, e))?;
                Err(StoreError::VersionConflict {
                    secret: secret.clone(),
                    version,
                    existing,
                    requested: rotation,
                })
            }
        }
    }

    /// `put_version` then `commit` in one transaction: both land or neither does.
    fn put_version_and_commit(
        &self,
        db: &Database,
        secret: &SecretRef,
        version: NewVersion<'_>,
        commit: Commit<'_>,
    ) -> Result<u64, StoreError> {
        let what = Op("commit with a new version", secret);
        let writer = self.group.enter();
        let txn = self.begin_write(db, &what)?;
        // Any error below drops `txn` without committing, which aborts it.
        match self.insert_version(&txn, &what, secret, version, commit.now)? {
            Existing::Absent | Existing::SameRotation => {}
            Existing::Other(existing) => {
                return Err(StoreError::VersionConflict {
                    secret: secret.clone(),
                    version: version.version,
                    existing,
                    requested: version.rotation,
                });
            }
        }
        self.write_commit(&txn, &what, secret, commit)?;
        self.finish(txn, &what, writer)
    }

    /// Inserts `version` (metadata and sealed value) into `txn` unless it exists; says
    /// whether it did.
    fn insert_version(
        &self,
        txn: &WriteTransaction,
        what: &Op<'_>,
        secret: &SecretRef,
        new: NewVersion<'_>,
        now: DateTime<Utc>,
    ) -> Result<Existing, StoreError> {
        let NewVersion {
            version,
            rotation,
            value,
        } = new;
        let k = (secret.tenant(), secret.key(), version);
        let existing = {
            let mut versions = txn
                .open_table(VERSIONS)
                .map_err(|e| self.backend(&what, e))?;
            let found = versions
                .get(k)
                .map_err(|e| self.backend(&what, e))?
                .map(|g| serde_json::from_slice::<VersionMeta>(g.value()))
                .transpose()
                .map_err(|e| corrupt(&what, e))?;
            match found {
                Some(meta) if meta.rotation == rotation => Existing::SameRotation,
                Some(meta) => Existing::Other(meta.rotation),
                None => {
                    let sealed = self.key.seal(secret, version, value.expose())?;
                    let fingerprint = self.key.fingerprint(value.expose());
                    let meta = new_version(version, rotation, now, fingerprint);
                    let json = serde_json::to_vec(&meta).map_err(|e| corrupt(&what, e))?;
                    versions
                        .insert(k, json.as_slice())
                        .map_err(|e| self.backend(&what, e))?;
                    let mut values = txn.open_table(VALUES).map_err(|e| self.backend(&what, e))?;
                    values
                        .insert(k, sealed.as_slice())
                        .map_err(|e| self.backend(&what, e))?;
                    Existing::Absent
                }
            }
        };
        Ok(existing)
    }

    fn commit(
        &self,
        db: &Database,
        secret: &SecretRef,
        commit: Commit<'_>,
    ) -> Result<u64, StoreError> {
        let what = Op("commit", secret);
        let writer = self.group.enter();
        let txn = self.begin_write(db, &what)?;
        // Any error below drops `txn` without committing, which aborts it: journal, labels
        // and history land together or not at all.
        self.write_commit(&txn, &what, secret, commit)?;
        self.finish(txn, &what, writer)
    }

    /// Writes journal, labels and history of `commit` into `txn`.
    fn write_commit(
        &self,
        txn: &WriteTransaction,
        what: &Op<'_>,
        secret: &SecretRef,
        commit: Commit<'_>,
    ) -> Result<(), StoreError> {
        let (t, k) = (secret.tenant(), secret.key());
        {
            let mut versions = txn
                .open_table(VERSIONS)
                .map_err(|e| self.backend(&what, e))?;
            let mut all: Vec<VersionMeta> = Vec::new();
            for item in versions
                .range((t, k, 0u64)..=(t, k, u64::MAX))
                .map_err(|e| self.backend(&what, e))?
            {
                let (_, v) = item.map_err(|e| self.backend(&what, e))?;
                all.push(serde_json::from_slice(v.value()).map_err(|e| corrupt(&what, e))?);
            }
            for i in apply_labels(secret, &mut all, commit.labels, commit.now)? {
                let meta = &all[i];
                let json = serde_json::to_vec(meta).map_err(|e| corrupt(&what, e))?;
                versions
                    .insert((t, k, meta.version), json.as_slice())
                    .map_err(|e| self.backend(&what, e))?;
            }

            let mut journal = txn
                .open_table(JOURNAL)
                .map_err(|e| self.backend(&what, e))?;
            journal
                .insert((t, k), commit.journal)
                .map_err(|e| self.backend(&what, e))?;

            if let Some(record) = commit.history {
                let mut history = txn
                    .open_table(HISTORY)
                    .map_err(|e| self.backend(&what, e))?;
                let last = history
                    .range((t, k, 0u64)..=(t, k, u64::MAX))
                    .map_err(|e| self.backend(&what, e))?
                    .next_back()
                    .transpose()
                    .map_err(|e| self.backend(&what, e))?
                    .map(|(key, v)| {
                        serde_json::from_slice::<HistoryRecord>(v.value())
                            .map(|rec| (key.value().2, rec))
                    })
                    .transpose()
                    .map_err(|e| corrupt(&what, e))?;
                // Replaying the commit that appended this record (after a crash between
                // commit and acknowledgement) must not append it twice.
                let duplicate = last.as_ref().is_some_and(|(_, rec)| rec == record);
                if !duplicate {
                    let seq = last.map_or(1, |(seq, _)| seq + 1);
                    let json = serde_json::to_vec(record).map_err(|e| corrupt(&what, e))?;
                    history
                        .insert((t, k, seq), json.as_slice())
                        .map_err(|e| self.backend(&what, e))?;
                }
            }
        }
        Ok(())
    }

    fn journal(&self, db: &Database, secret: &SecretRef) -> Result<Option<Vec<u8>>, StoreError> {
        let what = Op("read journal of", secret);
        let txn = db.begin_read().map_err(|e| self.backend(&what, e))?;
        let journal = txn
            .open_table(JOURNAL)
            .map_err(|e| self.backend(&what, e))?;
        let found = journal
            .get((secret.tenant(), secret.key()))
            .map_err(|e| self.backend(&what, e))?;
        Ok(found.map(|g| g.value().to_vec()))
    }

    fn versions(&self, db: &Database, secret: &SecretRef) -> Result<Vec<VersionMeta>, StoreError> {
        let what = Op("read versions of", secret);
        let (t, k) = (secret.tenant(), secret.key());
        let txn = db.begin_read().map_err(|e| self.backend(&what, e))?;
        let versions = txn
            .open_table(VERSIONS)
            .map_err(|e| self.backend(&what, e))?;
        let mut out = Vec::new();
        for item in versions
            .range((t, k, 0u64)..=(t, k, u64::MAX))
            .map_err(|e| self.backend(&what, e))?
        {
            let (_, v) = item.map_err(|e| self.backend(&what, e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| corrupt(&what, e))?);
        }
        Ok(out)
    }

    fn read_value(
        &self,
        db: &Database,
        secret: &SecretRef,
        version: VersionNo,
    ) -> Result<SecretValue, StoreError> {
        let what = Op("read value of", secret);
        let txn = db.begin_read().map_err(|e| self.backend(&what, e))?;
        let values = txn.open_table(VALUES).map_err(|e| self.backend(&what, e))?;
        let sealed = values
            .get((secret.tenant(), secret.key(), version))
            .map_err(|e| self.backend(&what, e))?
            .ok_or_else(|| StoreError::NoSuchVersion {
                secret: secret.clone(),
                version,
            })?;
        self.key.open(secret, version, sealed.value())
    }

    fn history(
        &self,
        db: &Database,
        secret: &SecretRef,
        limit: usize,
    ) -> Result<Vec<HistoryRecord>, StoreError> {
        let what = Op("read history of", secret);
        let (t, k) = (secret.tenant(), secret.key());
        let txn = db.begin_read().map_err(|e| self.backend(&what, e))?;
        let history = txn
            .open_table(HISTORY)
            .map_err(|e| self.backend(&what, e))?;
        let mut out = Vec::new();
        for item in history
            .range((t, k, 0u64)..=(t, k, u64::MAX))
            .map_err(|e| self.backend(&what, e))?
            .rev()
            .take(limit)
        {
            let (_, v) = item.map_err(|e| self.backend(&what, e))?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| corrupt(&what, e))?);
        }
        Ok(out)
    }

    /// Every secret of `firsts` without a journal gets its version (sealed), labels,
    /// journal and history record, all in one transaction; the others are skipped. Returns
    /// the group-commit sequence (0 when nothing was written) and which were written.
    fn create_first_versions(
        &self,
        db: &Database,
        firsts: &[FirstVersion],
        now: DateTime<Utc>,
    ) -> Result<(u64, Vec<bool>), StoreError> {
        let what = format!("create the first versions of {} secrets", firsts.len());
        let writer = self.group.enter();
        let txn = self.begin_write(db, &what)?;
        let mut written = Vec::with_capacity(firsts.len());
        // Any error below drops `txn` without committing: the batch lands whole or not at all.
        {
            let mut journal = txn
                .open_table(JOURNAL)
                .map_err(|e| self.backend(&what, e))?;
            let mut versions = txn
                .open_table(VERSIONS)
                .map_err(|e| self.backend(&what, e))?;
            let mut values = txn.open_table(VALUES).map_err(|e| self.backend(&what, e))?;
            let mut history = txn
                .open_table(HISTORY)
                .map_err(|e| self.backend(&what, e))?;
            for first in firsts {
                let secret = &first.secret;
                let op = Op("create the first version of", secret);
                let (t, k) = (secret.tenant(), secret.key());
                let started = journal
                    .get((t, k))
                    .map_err(|e| self.backend(&op, e))?
                    .is_some();
                // A version without a journal is possible only from another writer that
                // stopped half-way; it is not overwritten (a value once stored stays).
                let stored = versions
                    .range((t, k, 0u64)..=(t, k, u64::MAX))
                    .map_err(|e| self.backend(&op, e))?
                    .next()
                    .is_some();
                if started || stored {
                    written.push(false);
                    continue;
                }
                let sealed = self.key.seal(secret, first.version, first.value.expose())?;
                let fingerprint = self.key.fingerprint(first.value.expose());
                let mut all = vec![new_version(first.version, first.rotation, now, fingerprint)];
                apply_labels(secret, &mut all, &first.labels, now)?;
                let json = serde_json::to_vec(&all[0]).map_err(|e| corrupt(&op, e))?;
                versions
                    .insert((t, k, first.version), json.as_slice())
                    .map_err(|e| self.backend(&op, e))?;
                values
                    .insert((t, k, first.version), sealed.as_slice())
                    .map_err(|e| self.backend(&op, e))?;
                journal
                    .insert((t, k), first.journal.as_slice())
                    .map_err(|e| self.backend(&op, e))?;
                if let Some(record) = &first.history {
                    let json = serde_json::to_vec(record).map_err(|e| corrupt(&op, e))?;
                    history
                        .insert((t, k, 1u64), json.as_slice())
                        .map_err(|e| self.backend(&op, e))?;
                }
                written.push(true);
            }
        }
        if !written.contains(&true) {
            txn.abort().map_err(|e| self.backend(&what, e))?;
            return Ok((0, written));
        }
        Ok((self.finish(txn, &what, writer)?, written))
    }

    /// Up to `limit` journals after `after`, in key order (tenant, then key), from one
    /// read transaction.
    fn journals(
        &self,
        db: &Database,
        after: Option<&SecretRef>,
        limit: usize,
    ) -> Result<Vec<(SecretRef, Vec<u8>)>, StoreError> {
        use std::ops::Bound;
        let what = "read journals";
        let txn = db.begin_read().map_err(|e| self.backend(&what, e))?;
        let journal = txn
            .open_table(JOURNAL)
            .map_err(|e| self.backend(&what, e))?;
        let start = match after {
            Some(a) => Bound::Excluded((a.tenant(), a.key())),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in journal
            .range::<(&str, &str)>((start, Bound::Unbounded))
            .map_err(|e| self.backend(&what, e))?
            .take(limit)
        {
            let (key, value) = item.map_err(|e| self.backend(&what, e))?;
            let (t, k) = key.value();
            let secret = SecretRef::new(t, k).map_err(|e| {
                StoreError::Backend(format!("{what}: corrupt journal key {t:?}/{k:?}: {e}"))
            })?;
            out.push((secret, value.value().to_vec()));
        }
        Ok(out)
    }

    fn secrets(&self, db: &Database) -> Result<Vec<SecretRef>, StoreError> {
        let what = "list secrets";
        let txn = db.begin_read().map_err(|e| self.backend(&what, e))?;
        let journal = txn
            .open_table(JOURNAL)
            .map_err(|e| self.backend(&what, e))?;
        let mut out = Vec::new();
        for item in journal.iter().map_err(|e| self.backend(&what, e))? {
            let (key, _) = item.map_err(|e| self.backend(&what, e))?;
            let (t, k) = key.value();
            out.push(SecretRef::new(t, k).map_err(|e| {
                StoreError::Backend(format!("{what}: corrupt journal key {t:?}/{k:?}: {e}"))
            })?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sixteen writers through the async trait, as sixteen rotation actors would: they
    /// share fsyncs, and every commit is covered by one before its call returns.
    #[tokio::test]
    async fn concurrent_writers_share_fsyncs_and_every_commit_is_covered() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb"), &dir.path().join("k")).unwrap();
        const WRITERS: u64 = 16;
        const EACH: u64 = 10;
        let store = &store;
        futures::future::join_all((0..WRITERS).map(|w| async move {
            let secret = SecretRef::new(&format!("t{w}"), "k").unwrap();
            for n in 0..EACH {
                let journal = n.to_be_bytes();
                store
                    .commit(
                        &secret,
                        Commit {
                            journal: &journal,
                            labels: &[],
                            history: None,
                            now: Utc::now(),
                        },
                    )
                    .await
                    .unwrap();
            }
        }))
        .await;
        {
            let st = store.db.group.state.lock().unwrap();
            assert_eq!(st.committed, WRITERS * EACH);
            assert_eq!(
                st.durable, st.committed,
                "every commit was covered by an fsync"
            );
            assert!(
                st.fsyncs < st.committed,
                "{} fsyncs for {} commits: none shared",
                st.fsyncs,
                st.committed
            );
        }
        for w in 0..WRITERS {
            let secret = SecretRef::new(&format!("t{w}"), "k").unwrap();
            assert_eq!(
                store.journal(&secret).await.unwrap(),
                Some((EACH - 1).to_be_bytes().to_vec())
            );
        }
    }
}

/// Property-based fuzzing of what the store decodes from its own file: a real store file,
/// truncated or bit-flipped, must open and read without a panic or a hang, and never yield
/// a value other than the one written. Here rather than in `tests/suite/fuzz.rs` because it
/// reads the private `values` table to find where each sealed value lies in the file.
/// `ROTOR_FUZZ_CASES` sets the case count (`scripts/fuzz.sh` runs it long).
#[cfg(test)]
mod fuzz {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use proptest::prelude::*;
    use proptest::sample::Index;
    use proptest::test_runner::{FileFailurePersistence, TestCaseError, TestRunner};

    use super::*;
    use crate::domain::{Label, Outcome, Step, Trigger};

    /// Cases when `ROTOR_FUZZ_CASES` is unset: each case writes and opens a store file.
    const DEFAULT_CASES: u32 = 64;

    /// Longest one damaged file may take to open and read before it counts as a hang:
    /// generous, for a loaded machine.
    const CASE_DEADLINE: Duration = Duration::from_secs(60);

    fn cases() -> u32 {
        match std::env::var("ROTOR_FUZZ_CASES") {
            Ok(v) => v
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("ROTOR_FUZZ_CASES must be a whole number, got {v:?}")),
            Err(_) => DEFAULT_CASES,
        }
    }

    /// A store file written by the real store, and everything written into it.
    struct Base {
        dir: tempfile::TempDir,
        key_file: PathBuf,
        bytes: Vec<u8>,
        /// Every value written, by secret and version.
        values: Vec<(SecretRef, VersionNo, Vec<u8>)>,
        /// Where each value's sealed bytes lie in the file (every copy: redb writes pages
        /// copy-on-write, so a freed page may still hold an older copy).
        sealed_at: Vec<Vec<std::ops::Range<usize>>>,
    }

    fn base() -> Base {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db_path, key_file) = (dir.path().join("base.redb"), dir.path().join("master.key"));
        let store = EmbeddedStore::open(&db_path, &key_file).expect("open");
        let now = Utc::now();
        let mut values = Vec::new();
        for (tenant, key) in [("tenant1", "db"), ("tenant2", "api-keys")] {
            let secret = SecretRef::new(tenant, key).expect("ident");
            for version in 1..=3u64 {
                let value = format!(
                    "value-{tenant}-{key}-{version}-{}",
                    "x".repeat(version as usize * 7)
                );
                store
                    .db
                    .with_file(|f| {
                        store.db.put_version(
                            f,
                            &secret,
                            version,
                            RotationId(version),
                            &SecretValue::from_bytes(value.clone().into_bytes()),
                            now,
                        )
                    })
                    .expect("put");
                let history = HistoryRecord {
                    rotation: RotationId(version),
                    trigger: Trigger::Schedule,
                    from_version: version.checked_sub(1).filter(|v| *v > 0),
                    to_version: version,
                    outcome: Outcome::Succeeded,
                    error: None,
                    steps: vec![Step::Generate, Step::Apply, Step::Test, Step::Promote],
                    started_at: now,
                    finished_at: now,
                    late_consumers: Vec::new(),
                    gone_consumers: Vec::new(),
                };
                let mut labels = vec![(version, Label::Current)];
                if version > 1 {
                    labels.push((version - 1, Label::Previous));
                }
                store
                    .db
                    .with_file(|f| {
                        store.db.commit(
                            f,
                            &secret,
                            Commit {
                                journal: format!("journal {version}").as_bytes(),
                                labels: &labels,
                                history: Some(&history),
                                now,
                            },
                        )
                    })
                    .expect("commit");
                values.push((secret.clone(), version, value.into_bytes()));
            }
        }
        let sealed: Vec<Vec<u8>> = {
            store.db.sync().expect("sync");
            let file = store.db.file.read().expect("file lock");
            let txn = file.as_ref().expect("open").begin_read().expect("read");
            let table = txn.open_table(VALUES).expect("values");
            values
                .iter()
                .map(|(s, v, _)| {
                    table
                        .get((s.tenant(), s.key(), *v))
                        .expect("get")
                        .expect("stored")
                        .value()
                        .to_vec()
                })
                .collect()
        };
        drop(store);
        let bytes = fs::read(&db_path).expect("read file");
        let sealed_at = sealed
            .iter()
            .map(|s| {
                let found: Vec<_> = bytes
                    .windows(s.len())
                    .enumerate()
                    .filter(|(_, w)| w == s)
                    .map(|(i, _)| i..i + s.len())
                    .collect();
                assert!(
                    !found.is_empty(),
                    "a sealed value is not in the file as written"
                );
                found
            })
            .collect();
        Base {
            dir,
            key_file,
            bytes,
            values,
            sealed_at,
        }
    }

    /// One way to damage the file.
    #[derive(Debug, Clone)]
    enum Damage {
        /// Cut the file at this point.
        Truncate(Index),
        /// Flip these bits anywhere in the file.
        Flip(Vec<(Index, u8)>),
        /// Flip one bit of one sealed value, in every copy of it the file holds.
        FlipSealed { value: Index, at: Index, bit: u8 },
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            1 => any::<Index>().prop_map(Damage::Truncate),
            2 => proptest::collection::vec((any::<Index>(), 0u8..8), 1..5).prop_map(Damage::Flip),
            2 => (any::<Index>(), any::<Index>(), 0u8..8)
                .prop_map(|(value, at, bit)| Damage::FlipSealed { value, at, bit }),
        ]
    }

    /// The variant of an error, for the tally of what damage turns into.
    fn kind(e: &StoreError) -> &'static str {
        let text = e.to_string();
        match e {
            StoreError::Open { .. } if text.contains(DAMAGED) => "Open(redb panic contained)",
            StoreError::Open { .. } => "Open(redb error)",
            StoreError::MasterKey { .. } => "MasterKey",
            StoreError::Decrypt { .. } => "Decrypt",
            StoreError::NoSuchVersion { .. } => "NoSuchVersion",
            StoreError::Backend(_) if text.contains(DAMAGED) => "Backend(redb panic contained)",
            StoreError::Backend(_) if text.contains("corrupt record") => "Backend(corrupt JSON)",
            StoreError::Backend(_) => "Backend(redb error)",
            _ => "other",
        }
    }

    /// Opens `path` and reads everything `base` wrote, through the public API as rotor
    /// does (each read on a blocking thread of a tokio runtime). Returns each step's
    /// outcome (`"step:ok"` or `"step:ErrorKind"`) and the value reads' results in
    /// `values` order.
    fn open_and_read(
        path: &Path,
        key_file: &Path,
        values: &[(SecretRef, VersionNo, Vec<u8>)],
    ) -> (Vec<String>, Vec<Result<Vec<u8>, &'static str>>) {
        let mut outcomes = Vec::new();
        let mut note = |what: &str, r: Result<(), &'static str>| {
            outcomes.push(format!("{what}:{}", r.err().unwrap_or("ok")));
        };
        let store = match EmbeddedStore::open(path, key_file) {
            Ok(s) => s,
            Err(e) => {
                note("open", Err(kind(&e)));
                return (outcomes, Vec::new());
            }
        };
        note("open", Ok(()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut reads = Vec::new();
        runtime.block_on(async {
            for (secret, version, _) in values {
                let read = store.read_value(secret, *version).await;
                reads.push(read.map(|v| v.expose().to_vec()).map_err(|e| kind(&e)));
                let journal = store.journal(secret).await;
                note("journal", journal.map(drop).map_err(|e| kind(&e)));
                let versions = store.versions(secret).await;
                note("versions", versions.map(drop).map_err(|e| kind(&e)));
                let history = store.history(secret, 100).await;
                note("history", history.map(drop).map_err(|e| kind(&e)));
            }
            let secrets = store.secrets().await;
            note("secrets", secrets.map(drop).map_err(|e| kind(&e)));
        });
        for r in &reads {
            note("read_value", r.as_ref().map(drop).map_err(|e| *e));
        }
        (outcomes, reads)
    }

    #[test]
    fn damaged_store_files_never_panic_and_never_return_another_value() {
        let base = base();
        let path = base.dir.path().join("damaged.redb");
        let tally: Mutex<BTreeMap<String, u64>> = Mutex::default();
        let mut config = ProptestConfig::with_cases(cases());
        config.source_file = Some(file!());
        config.failure_persistence = Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        )));
        let mut runner = TestRunner::new(config);
        let ran = AtomicU64::new(0);
        let result = runner.run(&damage(), |damage| {
            ran.fetch_add(1, Ordering::Relaxed);
            let mut bytes = base.bytes.clone();
            let mut sealed_victim = None;
            // The damage in file offsets, for the failure message.
            let mut done = Vec::new();
            match &damage {
                Damage::Truncate(at) => {
                    let i = at.index(bytes.len());
                    done.push(format!("truncate at {i}"));
                    bytes.truncate(i);
                }
                Damage::Flip(flips) => {
                    for (at, bit) in flips {
                        let i = at.index(bytes.len());
                        done.push(format!("flip bit {bit} of byte {i}"));
                        bytes[i] ^= 1 << bit;
                    }
                }
                Damage::FlipSealed { value, at, bit } => {
                    let v = value.index(base.values.len());
                    for range in &base.sealed_at[v] {
                        let i = range.start + at.index(range.len());
                        done.push(format!("flip bit {bit} of byte {i} (sealed value)"));
                        bytes[i] ^= 1 << bit;
                    }
                    sealed_victim = Some(v);
                }
            }
            let done = format!(
                "{} of a {}-byte store file",
                done.join(", "),
                base.bytes.len()
            );
            fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // On a thread of its own, so a hang fails the case instead of the whole run.
            let (tx, rx) = std::sync::mpsc::channel();
            let (p, k, values) = (path.clone(), base.key_file.clone(), base.values.clone());
            std::thread::spawn(move || {
                let result = std::panic::catch_unwind(|| open_and_read(&p, &k, &values));
                let _ = tx.send(result.map_err(|e| {
                    e.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default()
                }));
            });
            let (outcomes, reads) = match rx.recv_timeout(CASE_DEADLINE) {
                Ok(Ok(r)) => r,
                Ok(Err(panic)) => {
                    return Err(TestCaseError::fail(format!("{done}: panicked: {panic}")));
                }
                Err(_) => {
                    return Err(TestCaseError::fail(format!(
                        "{done}: open and read took over {CASE_DEADLINE:?}"
                    )));
                }
            };
            {
                let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                for o in outcomes {
                    *t.entry(o).or_default() += 1;
                }
            }
            for (i, read) in reads.iter().enumerate() {
                let (secret, version, written) = &base.values[i];
                if let Ok(got) = read {
                    prop_assert!(
                        got == written,
                        "{done}: {secret} v{version} read back as a different value"
                    );
                    prop_assert!(
                        sealed_victim != Some(i),
                        "{done}: {secret} v{version} opened although its sealed bytes were flipped"
                    );
                }
            }
            Ok(())
        });
        eprintln!(
            "fuzz target=store_records cases={} failures={}",
            ran.load(Ordering::Relaxed),
            u32::from(result.is_err())
        );
        eprintln!(
            "fuzz store_records outcomes: {:?}",
            tally.lock().unwrap_or_else(|p| p.into_inner())
        );
        if let Err(e) = result {
            panic!("fuzz target store_records: {e}");
        }
    }
}
