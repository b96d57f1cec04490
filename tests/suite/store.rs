//! The embedded store against a real redb file in a temporary directory. First the
//! `Store` contract cases shared with the Vault store (`tests/common/store_contract.rs`:
//! values round-trip across a reopen, idempotent `put_version` and conflicts, labels,
//! timestamps and rollback follow the `Commit` rules, invalid commits write nothing,
//! history, listing). Then what only the embedded store has: values never reach the file
//! in the clear, the master key is created, checked and never replaced, and a write that
//! fails at any point leaves exactly the state after the previous write (injected
//! failures, and a writer process killed with SIGKILL); concurrent writers all land.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use crate::common::store_contract::{
    self as contract, at, commit, labels_of, put, record, secret, value,
};
use base64::Engine as _;
use futures::future::BoxFuture;
use rotor::domain::{HistoryRecord, Label, Outcome, RotationId, SecretRef, VersionMeta, VersionNo};
use rotor::generator::SecretValue;
use rotor::store::embedded::EmbeddedStore;
use rotor::store::{ReadValue as _, Store, StoreError};

struct Paths {
    _dir: tempfile::TempDir,
    db: PathBuf,
    key: PathBuf,
}

fn paths() -> Paths {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("data/rotor.redb");
    let key = dir.path().join("keys/master.key");
    Paths { _dir: dir, db, key }
}

fn open(p: &Paths) -> EmbeddedStore {
    EmbeddedStore::open(&p.db, &p.key).expect("open store")
}

/// An embedded store in its own temporary directory, for the contract cases.
struct Fixture {
    paths: Paths,
    store: Option<EmbeddedStore>,
}

impl Fixture {
    fn new() -> Fixture {
        let paths = paths();
        let store = Some(open(&paths));
        Fixture { paths, store }
    }
}

impl contract::Reopen for Fixture {
    fn store(&self) -> &dyn Store {
        self.store.as_ref().expect("store is open")
    }
    fn reopen(&mut self) -> BoxFuture<'_, ()> {
        // redb allows one open handle per file: close before opening again.
        self.store = None;
        self.store = Some(open(&self.paths));
        Box::pin(async {})
    }
}

// ---------------------------------------------------------------------------------------
// The `Store` contract, shared with tests/suite/store_vault.rs.

/// One test per contract case, named after it, each on a fresh store: `store:` cases take
/// the store, `reopen:` cases a [`Fixture`] they can close and open again.
macro_rules! contract_cases {
    (store: $($case:ident),* ; reopen: $($reopen_case:ident),* $(,)?) => {
        $(#[tokio::test]
        async fn $case() {
            contract::$case(&open(&paths())).await;
        })*
        $(#[tokio::test]
        async fn $reopen_case() {
            contract::$reopen_case(&mut Fixture::new()).await;
        })*
    };
}

contract_cases!(
    store:
        fingerprints_match_for_equal_values_only,
        put_version_is_idempotent_per_rotation_and_conflicts_otherwise,
        labels_and_timestamps_follow_commits,
        rollback_in_grace_keeps_the_original_promotion_time,
        invalid_commits_write_nothing,
        secrets_lists_those_with_a_journal,
        first_versions_are_written_whole_and_skip_started_secrets,
        records_are_check_and_set,
        records_list_by_namespace;
    reopen:
        values_round_trip_across_reopen,
        history_is_newest_first_limited_and_not_duplicated_by_replays,
);

// ---------------------------------------------------------------------------------------
// Encryption at rest and the master key.

#[tokio::test]
async fn raw_file_never_contains_the_value_in_any_common_encoding() {
    let p = paths();
    let s = secret("tenant1", "api_keys");
    let secret_bytes = b"Zq8-unmistakable-secret-value-4c1e9a".to_vec();
    {
        let store = open(&p);
        store
            .put_version(
                &s,
                1,
                RotationId(1),
                &SecretValue::from_bytes(secret_bytes.clone()),
                at(0),
            )
            .await
            .expect("put");
        commit(&store, &s, &[(1, Label::Current)], None, at(1))
            .await
            .expect("commit");
    }
    let raw = fs::read(&p.db).expect("read db file");
    let key_hex = fs::read_to_string(&p.key).expect("read key");
    let needles: Vec<Vec<u8>> = vec![
        secret_bytes.clone(),
        secret_bytes[..16].to_vec(),
        hex::encode(&secret_bytes).into_bytes(),
        hex::encode_upper(&secret_bytes).into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(&secret_bytes)
            .into_bytes(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(&secret_bytes)
            .into_bytes(),
        key_hex.trim().as_bytes().to_vec(),
        hex::decode(key_hex.trim()).expect("hex key"),
    ];
    for needle in &needles {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle.as_slice()),
            "found a {}-byte encoding of a secret in the store file",
            needle.len()
        );
    }
    // The metadata, by contrast, is there: the search would have found a plaintext.
    assert!(raw.windows(8).any(|w| w == b"api_keys"));
}

#[tokio::test]
async fn wrong_master_key_is_refused_at_open() {
    let p = paths();
    let s = secret("t", "k");
    {
        let store = open(&p);
        put(&store, &s, 1, "v", 0).await;
    }
    let other_key = p.key.with_file_name("other.key");
    rotor::store::crypto::MasterKey::load_or_create(&other_key).expect("second key");
    let err = EmbeddedStore::open(&p.db, &other_key).expect_err("wrong key");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::MasterKey { .. }), "{msg}");
    assert!(
        msg.contains(&format!(
            "master key does not match the store at {}",
            p.db.display()
        )),
        "{msg}"
    );
    // The right key still works afterwards: the refused open wrote nothing.
    let store = open(&p);
    assert_eq!(store.read_value(&s, 1).await.expect("read").expose(), b"v");
}

#[test]
fn missing_key_for_an_existing_store_is_an_error_not_a_new_key() {
    let p = paths();
    drop(open(&p));
    fs::remove_file(&p.key).expect("remove key");
    let err = EmbeddedStore::open(&p.db, &p.key).expect_err("missing key");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::MasterKey { .. }), "{msg}");
    assert!(msg.contains("restore the key file"), "{msg}");
    assert!(!p.key.exists(), "a new key was created");
}

#[test]
fn world_readable_key_file_is_refused() {
    let p = paths();
    drop(open(&p));
    fs::set_permissions(&p.key, fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = EmbeddedStore::open(&p.db, &p.key).expect_err("0644");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::MasterKey { .. }), "{msg}");
    assert!(msg.contains("0644"), "{msg}");
    assert!(msg.contains(&p.key.display().to_string()), "{msg}");

    // Also for a brand-new store: a pre-existing loose key is not silently accepted.
    let q = paths();
    fs::create_dir_all(q.key.parent().expect("parent")).expect("mkdir");
    fs::write(&q.key, format!("{}\n", "ab".repeat(32))).expect("write key");
    fs::set_permissions(&q.key, fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(matches!(
        EmbeddedStore::open(&q.db, &q.key),
        Err(StoreError::MasterKey { .. })
    ));
}

#[tokio::test]
async fn missing_key_is_created_0600_and_never_overwritten() {
    let p = paths();
    assert!(!p.key.exists());
    let s = secret("t", "k");
    {
        let store = open(&p);
        put(&store, &s, 1, "v", 0).await;
    }
    let mode = fs::metadata(&p.key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let db_mode = fs::metadata(&p.db).expect("db").permissions().mode() & 0o777;
    assert_eq!(db_mode, 0o600);
    let first = fs::read(&p.key).expect("read key");
    for _ in 0..3 {
        let store = open(&p);
        assert_eq!(store.read_value(&s, 1).await.expect("read").expose(), b"v");
    }
    assert_eq!(fs::read(&p.key).expect("read key"), first);
}

// ---------------------------------------------------------------------------------------
// Crash safety and concurrency.

/// Every secret's full observable state, values included.
#[derive(Debug, PartialEq)]
struct Snapshot {
    secrets: Vec<SecretRef>,
    per_secret: Vec<SecretState>,
}

#[derive(Debug, PartialEq)]
struct SecretState {
    journal: Option<Vec<u8>>,
    versions: Vec<VersionMeta>,
    values: Vec<Vec<u8>>,
    history: Vec<HistoryRecord>,
}

async fn snapshot(store: &EmbeddedStore, all: &[SecretRef]) -> Snapshot {
    let mut per_secret = Vec::new();
    for s in all {
        let versions = store.versions(s).await.expect("versions");
        let mut values = Vec::new();
        for m in &versions {
            let value = store.read_value(s, m.version).await.expect("value");
            values.push(value.expose().to_vec());
        }
        per_secret.push(SecretState {
            journal: store.journal(s).await.expect("journal"),
            versions,
            values,
            history: store.history(s, usize::MAX).await.expect("history"),
        });
    }
    Snapshot {
        secrets: store.secrets().await.expect("secrets"),
        per_secret,
    }
}

/// The journal of every secret names exactly the labels its versions carry.
async fn assert_journal_matches_labels(store: &EmbeddedStore, all: &[SecretRef]) {
    for s in all {
        let from_journal: Vec<(VersionNo, Label)> = match store.journal(s).await.expect("journal") {
            Some(bytes) => {
                let mut l: Vec<(VersionNo, Label)> =
                    serde_json::from_slice(&bytes).expect("journal json");
                l.sort();
                l
            }
            None => Vec::new(),
        };
        assert_eq!(
            from_journal,
            labels_of(store, s).await,
            "{s}: journal and labels disagree"
        );
    }
}

/// One write the rotation actor makes: a version stored (`Put`: secret, version, which is
/// also the rotation, value, time), or a commit of labels and history.
enum WriteOp {
    Put(SecretRef, VersionNo, &'static str, i64),
    Commit(
        SecretRef,
        Vec<(VersionNo, Label)>,
        Option<HistoryRecord>,
        i64,
    ),
}

impl WriteOp {
    async fn run(&self, store: &EmbeddedStore) -> Result<(), StoreError> {
        match self {
            WriteOp::Put(s, v, text, t) => {
                store
                    .put_version(s, *v, RotationId(*v), &value(text), at(*t))
                    .await
            }
            WriteOp::Commit(s, labels, history, t) => {
                commit(store, s, labels, history.as_ref(), at(*t)).await
            }
        }
    }
}

/// Two rotations of one secret (the second rolled back) interleaved with a first rotation
/// of another: every kind of write the rotation actor makes.
fn rotation_writes() -> (Vec<SecretRef>, Vec<WriteOp>) {
    use WriteOp::{Commit, Put};
    let s = secret("tenant1", "database_credentials");
    let o = secret("tenant1", "api_keys");
    let mut rolled_back = record(3, Some(2), 3, 9);
    rolled_back.outcome = Outcome::RolledBack;
    let ops = vec![
        Put(s.clone(), 1, "v1", 0),
        Commit(s.clone(), vec![(1, Label::Pending)], None, 1),
        Commit(
            s.clone(),
            vec![(1, Label::Current)],
            Some(record(1, None, 1, 0)),
            2,
        ),
        Put(o.clone(), 1, "o1", 3),
        Put(s.clone(), 2, "v2", 4),
        Commit(o.clone(), vec![(1, Label::Current)], None, 5),
        Commit(
            s.clone(),
            vec![(1, Label::Current), (2, Label::Pending)],
            None,
            6,
        ),
        Commit(
            s.clone(),
            vec![(2, Label::Current), (1, Label::Previous)],
            None,
            7,
        ),
        Commit(
            s.clone(),
            vec![(2, Label::Current)],
            Some(record(2, Some(1), 2, 4)),
            8,
        ),
        Put(s.clone(), 3, "v3", 9),
        Commit(
            s.clone(),
            vec![(3, Label::Current), (2, Label::Previous)],
            None,
            10,
        ),
        Commit(s.clone(), vec![(2, Label::Current)], Some(rolled_back), 11),
        Commit(
            o.clone(),
            vec![(1, Label::Current)],
            Some(record(1, None, 1, 3)),
            12,
        ),
    ];
    (vec![s, o], ops)
}

#[tokio::test]
async fn a_failure_at_any_write_leaves_the_state_after_the_previous_write() {
    let (all, ops) = rotation_writes();

    // Reference: the state after each prefix of the writes, taken from a clean run.
    let reference = paths();
    let mut expected = Vec::new();
    {
        let store = open(&reference);
        expected.push(snapshot(&store, &all).await);
        for op in &ops {
            op.run(&store).await.expect("clean write");
            assert_journal_matches_labels(&store, &all).await;
            expected.push(snapshot(&store, &all).await);
        }
    }

    for k in 0..=ops.len() {
        let p = paths();
        // Same master key as the reference, so fingerprints compare equal.
        fs::create_dir_all(p.key.parent().expect("parent")).expect("mkdir");
        fs::copy(&reference.key, &p.key).expect("copy key");
        {
            let store = open(&p);
            store.fail_writes_after(k as u64);
            for (i, op) in ops.iter().enumerate() {
                let result = op.run(&store).await;
                if i < k {
                    result.unwrap_or_else(|e| panic!("write {i} with k={k}: {e}"));
                } else if i == k {
                    assert!(
                        matches!(result, Err(StoreError::Injected)),
                        "write {i} with k={k}: {result:?}"
                    );
                } else {
                    // Later writes fail too: injected, or refused earlier because they
                    // depend on a version the failed write would have stored.
                    assert!(result.is_err(), "write {i} with k={k} succeeded");
                }
            }
            // What a running process sees, before any restart.
            assert_eq!(
                snapshot(&store, &all).await,
                expected[k],
                "k={k} before reopen"
            );
        }
        let store = open(&p);
        assert_eq!(
            snapshot(&store, &all).await,
            expected[k],
            "k={k} after reopen"
        );
        assert_journal_matches_labels(&store, &all).await;

        // Resuming after the failure (as a restarted actor would) completes the sequence.
        for op in &ops[k..] {
            op.run(&store).await.expect("resumed write");
        }
        assert_eq!(
            snapshot(&store, &all).await,
            expected[ops.len()],
            "k={k} resumed"
        );
    }
}

#[tokio::test]
async fn clear_faults_restores_writes() {
    let p = paths();
    let store = open(&p);
    let s = secret("t", "k");
    store.fail_writes_after(0);
    assert!(matches!(
        store
            .put_version(&s, 1, RotationId(1), &value("a"), at(0))
            .await,
        Err(StoreError::Injected)
    ));
    store.clear_faults();
    put(&store, &s, 1, "a", 0).await;
    // Reads are never failed.
    store.fail_writes_after(0);
    assert_eq!(store.read_value(&s, 1).await.expect("read").expose(), b"a");
    // An idempotent replay writes nothing, so it is not failed either.
    store
        .put_version(&s, 1, RotationId(1), &value("a"), at(0))
        .await
        .expect("replay");
}

const CHILD_DB: &str = "ROTOR_STORE_TEST_CHILD_DB";
const CHILD_KEY: &str = "ROTOR_STORE_TEST_CHILD_KEY";

/// Not a test on its own: the writer process that `killed_writer_leaves_a_consistent_store`
/// starts and kills. It rotates one secret forever, one commit after another.
#[tokio::test]
#[ignore = "run as a child process by killed_writer_leaves_a_consistent_store"]
async fn child_writer() {
    let (Some(db), Some(key)) = (std::env::var_os(CHILD_DB), std::env::var_os(CHILD_KEY)) else {
        return;
    };
    let store = EmbeddedStore::open(Path::new(&db), Path::new(&key)).expect("child open");
    let s = secret("t", "k");
    // Resume from the labelled current version; a version staged by a killed run is
    // re-put idempotently (same rotation id) and carried on from.
    let mut current = store
        .versions(&s)
        .await
        .expect("versions")
        .iter()
        .find(|m| m.labels.contains(&Label::Current))
        .map_or(0, |m| m.version);
    loop {
        let next = current + 1;
        store
            .put_version(
                &s,
                next,
                RotationId(next),
                &value(&format!("v{next}")),
                at(0),
            )
            .await
            .expect("put");
        let mut keep: Vec<(VersionNo, Label)> = Vec::new();
        if current > 0 {
            keep.push((current, Label::Current));
        }
        let mut staged = keep.clone();
        staged.push((next, Label::Pending));
        commit(&store, &s, &staged, None, at(1))
            .await
            .expect("stage");
        let mut grace = vec![(next, Label::Current)];
        if current > 0 {
            grace.push((current, Label::Previous));
        }
        commit(&store, &s, &grace, None, at(2))
            .await
            .expect("promote");
        let rec = record(next, (current > 0).then_some(current), next, 0);
        commit(&store, &s, &[(next, Label::Current)], Some(&rec), at(3))
            .await
            .expect("expire");
        current = next;
    }
}

#[tokio::test]
async fn killed_writer_leaves_a_consistent_store() {
    let p = paths();
    drop(open(&p));
    let exe = std::env::current_exe().expect("test binary");
    let s = secret("t", "k");
    let all = [s.clone()];
    let mut last_versions = 0;
    for delay_ms in [30u64, 55, 80, 120, 170] {
        let mut child = std::process::Command::new(&exe)
            .args([
                "--exact",
                "store::child_writer",
                "--ignored",
                "--test-threads=1",
            ])
            .env(CHILD_DB, &p.db)
            .env(CHILD_KEY, &p.key)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn writer");
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        child.kill().expect("SIGKILL writer");
        child.wait().expect("reap writer");

        let store = open(&p);
        assert_journal_matches_labels(&store, &all).await;
        let versions = store.versions(&s).await.expect("versions");
        assert!(versions.len() >= last_versions, "versions lost");
        last_versions = versions.len();
        for m in &versions {
            let v = store
                .read_value(&s, m.version)
                .await
                .expect("every version decrypts");
            assert_eq!(v.expose(), format!("v{}", m.version).as_bytes());
        }
        // Exactly one current once a version has been promoted.
        let currents = labels_of(&store, &s)
            .await
            .iter()
            .filter(|(_, l)| *l == Label::Current)
            .count();
        let promoted = versions.iter().any(|m| m.promoted_at.is_some());
        assert_eq!(currents, usize::from(promoted));
    }
    assert!(last_versions > 0, "the writer never wrote anything");
}

#[tokio::test]
async fn concurrent_writers_on_one_store_all_land() {
    let p = paths();
    let store = &open(&p);
    futures::future::join_all((0..8).map(|i| async move {
        let s = secret("t", &format!("k{i}"));
        for v in 1..=5u64 {
            store
                .put_version(&s, v, RotationId(v), &value(&format!("{i}-{v}")), at(0))
                .await
                .expect("put");
            commit(store, &s, &[(v, Label::Current)], None, at(v as i64))
                .await
                .expect("commit");
        }
    }))
    .await;
    assert_eq!(store.secrets().await.expect("secrets").len(), 8);
    for i in 0..8 {
        let s = secret("t", &format!("k{i}"));
        assert_eq!(labels_of(store, &s).await, [(5, Label::Current)]);
        assert_eq!(
            store.read_value(&s, 3).await.expect("read").expose(),
            format!("{i}-3").as_bytes()
        );
    }
}
