//! The [`Store`] contract (see `src/store/mod.rs`), written once and run against every
//! backend: `tests/suite/store.rs` runs it on the embedded store, `tests/suite/store_vault.rs` on the
//! Vault store against a private OpenBao server and against the in-repo fake.
//!
//! One pub fn per case. A case that only needs a store takes `&dyn Store`, which must be
//! empty (no secret written yet); one that needs to see the data from a restarted process
//! takes a [`Reopen`] fixture. Also the helpers the store tests share: fixed times, values,
//! history records, and [`commit`], whose journal encodes the labels it commits so a test
//! can check that journal and labels agree.

use chrono::{DateTime, TimeZone as _, Utc};
use futures::future::BoxFuture;
use rotor::domain::{
    HistoryRecord, Label, Outcome, RotationId, SecretRef, Step, Trigger, VersionNo,
};
use rotor::generator::SecretValue;
use rotor::store::{Commit, FirstVersion, Store, StoreError};

/// A store under test that can be closed and opened again on the same data, as a
/// restarted process would: the embedded store reopens its file, the Vault store opens a
/// new client on the same Vault and prefix.
pub trait Reopen {
    /// The store as it is open now; starts empty.
    fn store(&self) -> &dyn Store;
    /// Drops the store and opens a new one on the same data (and master key).
    fn reopen(&mut self) -> BoxFuture<'_, ()>;
}

pub fn secret(t: &str, k: &str) -> SecretRef {
    SecretRef::new(t, k).expect("valid ref")
}

pub fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0)
        .single()
        .expect("valid time")
}

pub fn value(s: &str) -> SecretValue {
    SecretValue::from_bytes(s.as_bytes().to_vec())
}

pub fn record(rotation: u64, from: Option<VersionNo>, to: VersionNo, t: i64) -> HistoryRecord {
    HistoryRecord {
        rotation: RotationId(rotation),
        trigger: Trigger::Schedule,
        from_version: from,
        to_version: to,
        outcome: Outcome::Succeeded,
        error: None,
        steps: vec![Step::Generate, Step::Apply, Step::Test, Step::Promote],
        started_at: at(t),
        finished_at: at(t + 1),
        late_consumers: Vec::new(),
        gone_consumers: Vec::new(),
    }
}

/// The journal [`commit`] writes for `labels`.
pub fn journal_for(labels: &[(VersionNo, Label)]) -> Vec<u8> {
    serde_json::to_vec(labels).expect("encode journal")
}

/// Commits `labels` with a journal that encodes the same labels, so a test can check
/// that journal and labels always agree.
pub async fn commit(
    store: &dyn Store,
    s: &SecretRef,
    labels: &[(VersionNo, Label)],
    history: Option<&HistoryRecord>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let journal = journal_for(labels);
    store
        .commit(
            s,
            Commit {
                journal: &journal,
                labels,
                history,
                now,
            },
        )
        .await
}

/// Stores `text` as version `v` of `s`, created by rotation `v`, at `at(t)`; it must succeed.
pub async fn put(store: &dyn Store, s: &SecretRef, v: VersionNo, text: &str, t: i64) {
    store
        .put_version(s, v, RotationId(v), &value(text), at(t))
        .await
        .expect("put");
}

/// Every (version, label) pair of `s`, sorted.
pub async fn labels_of(store: &dyn Store, s: &SecretRef) -> Vec<(VersionNo, Label)> {
    let mut out: Vec<_> = store
        .versions(s)
        .await
        .expect("versions")
        .into_iter()
        .flat_map(|m| m.labels.into_iter().map(move |l| (m.version, l)))
        .collect();
    out.sort();
    out
}

/// Values (text and binary) come back as stored, also after a reopen; a missing version
/// or another tenant's is `NoSuchVersion`; the metadata names version, rotation, creation
/// time and the store's fingerprint of the value.
pub async fn values_round_trip_across_reopen(fixture: &mut dyn Reopen) {
    let s = secret("tenant1", "database_credentials");
    let binary = SecretValue::from_bytes(vec![0xff, 0x00, 0x80]);
    {
        let store = fixture.store();
        put(store, &s, 1, "first", 0).await;
        put(store, &s, 2, "second", 1).await;
        store
            .put_version(&s, 3, RotationId(3), &binary, at(2))
            .await
            .expect("put binary");
        assert_eq!(
            store.read_value(&s, 1).await.expect("read").expose(),
            b"first"
        );
    }
    fixture.reopen().await;
    let store = fixture.store();
    assert_eq!(
        store.read_value(&s, 1).await.expect("read").expose(),
        b"first"
    );
    assert_eq!(
        store.read_value(&s, 2).await.expect("read").expose(),
        b"second"
    );
    assert_eq!(
        store.read_value(&s, 3).await.expect("read").expose(),
        binary.expose()
    );
    let err = store.read_value(&s, 4).await.expect_err("missing");
    assert!(
        matches!(err, StoreError::NoSuchVersion { version: 4, .. }),
        "{err}"
    );
    let err = store
        .read_value(&secret("tenant2", "database_credentials"), 1)
        .await
        .expect_err("other tenant");
    assert!(matches!(err, StoreError::NoSuchVersion { .. }), "{err}");

    let versions = store.versions(&s).await.expect("versions");
    assert_eq!(
        versions.iter().map(|m| m.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(versions[0].created_at, at(0));
    assert_eq!(versions[0].rotation, RotationId(1));
    assert!(versions[0].labels.is_empty());
    assert_eq!(versions[0].fingerprint, store.fingerprint(b"first"));
    assert_eq!(versions[0].fingerprint.len(), 32);
    assert_ne!(versions[0].fingerprint, versions[1].fingerprint);
}

pub async fn fingerprints_match_for_equal_values_only(store: &dyn Store) {
    let s = secret("t", "k");
    put(store, &s, 1, "same", 0).await;
    put(store, &s, 2, "same", 0).await;
    put(store, &s, 3, "other", 0).await;
    let v = store.versions(&s).await.expect("versions");
    assert_eq!(v[0].fingerprint, v[1].fingerprint);
    assert_ne!(v[0].fingerprint, v[2].fingerprint);
}

pub async fn put_version_is_idempotent_per_rotation_and_conflicts_otherwise(store: &dyn Store) {
    let s = secret("t", "k");
    store
        .put_version(&s, 1, RotationId(7), &value("first"), at(0))
        .await
        .expect("put");
    let before = store.versions(&s).await.expect("versions");
    // Replay with a different value and time (a regenerated value after a crash): the
    // first value stays.
    store
        .put_version(&s, 1, RotationId(7), &value("second"), at(5))
        .await
        .expect("replay");
    assert_eq!(
        store.read_value(&s, 1).await.expect("read").expose(),
        b"first"
    );
    assert_eq!(store.versions(&s).await.expect("versions"), before);

    let err = store
        .put_version(&s, 1, RotationId(8), &value("third"), at(6))
        .await
        .expect_err("conflict");
    match &err {
        StoreError::VersionConflict {
            version,
            existing,
            requested,
            ..
        } => {
            assert_eq!(
                (*version, *existing, *requested),
                (1, RotationId(7), RotationId(8))
            );
        }
        other => panic!("expected a conflict, got {other}"),
    }
    assert!(!err.to_string().contains("third"));
    assert_eq!(
        store.read_value(&s, 1).await.expect("read").expose(),
        b"first"
    );
}

/// Labels and stamps move with commits, and `current_version` (what targets read) names
/// the version labelled `current` after each of them.
pub async fn labels_and_timestamps_follow_commits(store: &dyn Store) {
    let s = secret("t", "k");
    let current = async || store.current_version(&s).await.expect("current version");
    assert_eq!(current().await, None, "nothing stored yet");
    put(store, &s, 1, "a", 0).await;
    commit(store, &s, &[(1, Label::Pending)], None, at(1))
        .await
        .expect("commit");
    assert_eq!(current().await, None, "pending is not current");
    commit(store, &s, &[(1, Label::Current)], None, at(2))
        .await
        .expect("commit");
    assert_eq!(current().await, Some(1));
    put(store, &s, 2, "b", 10).await;
    commit(
        store,
        &s,
        &[(1, Label::Current), (2, Label::Pending)],
        None,
        at(11),
    )
    .await
    .expect("commit");
    assert_eq!(current().await, Some(1), "staging v2 leaves v1 current");
    commit(
        store,
        &s,
        &[(2, Label::Current), (1, Label::Previous)],
        None,
        at(12),
    )
    .await
    .expect("commit");
    assert_eq!(current().await, Some(2), "promoted");

    let v = store.versions(&s).await.expect("versions");
    assert_eq!(v[0].labels, [Label::Previous]);
    assert_eq!(v[0].promoted_at, Some(at(2)));
    assert_eq!(v[0].expired_at, None);
    assert_eq!(v[1].labels, [Label::Current]);
    assert_eq!(v[1].promoted_at, Some(at(12)));

    commit(store, &s, &[(2, Label::Current)], None, at(20))
        .await
        .expect("expire");
    let v = store.versions(&s).await.expect("versions");
    assert!(v[0].labels.is_empty());
    assert_eq!(v[0].expired_at, Some(at(20)));
    assert_eq!(v[1].expired_at, None);

    // A failed attempt: v3 staged, then discarded.
    put(store, &s, 3, "c", 30).await;
    commit(
        store,
        &s,
        &[(2, Label::Current), (3, Label::Pending)],
        None,
        at(31),
    )
    .await
    .expect("stage");
    commit(store, &s, &[(2, Label::Current)], None, at(32))
        .await
        .expect("discard");
    assert_eq!(current().await, Some(2), "a discarded v3 is not current");
    let v = store.versions(&s).await.expect("versions");
    assert_eq!(v[2].promoted_at, None);
    assert_eq!(v[2].expired_at, Some(at(32)));
    // Expiry time is kept by later commits that do not label it.
    commit(store, &s, &[(2, Label::Current)], None, at(40))
        .await
        .expect("again");
    assert_eq!(
        store.versions(&s).await.expect("versions")[0].expired_at,
        Some(at(20))
    );
    assert_eq!(labels_of(store, &s).await, [(2, Label::Current)]);
    assert_eq!(
        store.journal(&s).await.expect("journal"),
        Some(journal_for(&[(2, Label::Current)]))
    );
}

pub async fn rollback_in_grace_keeps_the_original_promotion_time(store: &dyn Store) {
    let s = secret("t", "k");
    put(store, &s, 1, "a", 0).await;
    commit(store, &s, &[(1, Label::Current)], None, at(1))
        .await
        .expect("commit");
    put(store, &s, 2, "b", 2).await;
    commit(
        store,
        &s,
        &[(2, Label::Current), (1, Label::Previous)],
        None,
        at(3),
    )
    .await
    .expect("promote");
    commit(store, &s, &[(1, Label::Current)], None, at(4))
        .await
        .expect("rollback");
    let v = store.versions(&s).await.expect("versions");
    assert_eq!(v[0].labels, [Label::Current]);
    assert_eq!(v[0].promoted_at, Some(at(1)));
    assert_eq!(v[1].labels, Vec::<Label>::new());
    assert_eq!(v[1].expired_at, Some(at(4)));
    assert_eq!(labels_of(store, &s).await, [(1, Label::Current)]);
    assert_eq!(
        store.journal(&s).await.expect("journal"),
        Some(journal_for(&[(1, Label::Current)]))
    );
}

/// A commit naming a version that does not exist, or putting one label on two versions,
/// is refused and changes nothing: journal, versions, labels and history stay.
pub async fn invalid_commits_write_nothing(store: &dyn Store) {
    let s = secret("t", "k");
    put(store, &s, 1, "a", 0).await;
    commit(store, &s, &[(1, Label::Current)], None, at(1))
        .await
        .expect("commit");
    let journal = store.journal(&s).await.expect("journal");
    let versions = store.versions(&s).await.expect("versions");
    let rec = record(2, Some(1), 2, 2);

    let err = commit(
        store,
        &s,
        &[(1, Label::Previous), (9, Label::Current)],
        Some(&rec),
        at(2),
    )
    .await
    .expect_err("missing version");
    assert!(
        matches!(err, StoreError::NoSuchVersion { version: 9, .. }),
        "{err}"
    );
    put(store, &s, 2, "b", 3).await;
    let versions_2 = store.versions(&s).await.expect("versions");
    let err = commit(
        store,
        &s,
        &[(1, Label::Current), (2, Label::Current)],
        Some(&rec),
        at(4),
    )
    .await
    .expect_err("two currents");
    assert!(matches!(err, StoreError::InvalidCommit { .. }), "{err}");

    assert_eq!(store.journal(&s).await.expect("journal"), journal);
    assert_eq!(
        store.versions(&s).await.expect("versions")[..1],
        versions[..]
    );
    assert_eq!(store.versions(&s).await.expect("versions"), versions_2);
    assert!(store.history(&s, 10).await.expect("history").is_empty());
}

/// History comes newest first, limited, per secret; replaying a commit does not append
/// its record again; it survives a reopen, and later appends continue the sequence.
pub async fn history_is_newest_first_limited_and_not_duplicated_by_replays(
    fixture: &mut dyn Reopen,
) {
    let s = secret("t", "k");
    let other = secret("t", "other");
    let all = {
        let store = fixture.store();
        put(store, &s, 1, "a", 0).await;
        for i in 1..=5u64 {
            let rec = record(i, Some(i), i + 1, i as i64 * 10);
            commit(store, &s, &[(1, Label::Current)], Some(&rec), at(i as i64))
                .await
                .expect("commit");
            // A replay of the same commit appends nothing.
            commit(store, &s, &[(1, Label::Current)], Some(&rec), at(i as i64))
                .await
                .expect("replay");
        }
        let all = store.history(&s, 100).await.expect("history");
        assert_eq!(
            all.iter().map(|r| r.rotation.0).collect::<Vec<_>>(),
            [5, 4, 3, 2, 1]
        );
        assert_eq!(store.history(&s, 2).await.expect("history"), all[..2]);
        assert!(store.history(&s, 0).await.expect("history").is_empty());
        assert!(store.history(&other, 10).await.expect("history").is_empty());
        all
    };

    fixture.reopen().await;
    let store = fixture.store();
    assert_eq!(store.history(&s, 100).await.expect("history"), all);
    let rec = record(6, Some(6), 7, 60);
    commit(store, &s, &[(1, Label::Current)], Some(&rec), at(60))
        .await
        .expect("commit");
    assert_eq!(store.history(&s, 1).await.expect("history"), [rec]);
    assert_eq!(store.history(&s, 100).await.expect("history").len(), 6);
}

/// `secrets` lists the secrets with a journal, and `journals` reads theirs, whole or a page
/// at a time.
pub async fn secrets_lists_those_with_a_journal(store: &dyn Store) {
    assert!(store.secrets().await.expect("secrets").is_empty());
    let a = secret("tenant1", "api_keys");
    let b = secret("tenant1", "database_credentials");
    let c = secret("tenant2", "jwt");
    let d = secret("tenant2", "no_journal");
    for s in [&c, &a, &b, &d] {
        put(store, s, 1, "x", 0).await;
    }
    for s in [&c, &a, &b] {
        commit(store, s, &[(1, Label::Current)], None, at(1))
            .await
            .expect("commit");
    }
    assert_eq!(
        store.secrets().await.expect("secrets"),
        [a.clone(), b.clone(), c.clone()]
    );
    assert!(store.journal(&d).await.expect("journal").is_none());
    // Every journal at once, in order, each the one `journal` reads.
    let all = store.journals(None, 100).await.expect("journals");
    let names: Vec<SecretRef> = all.iter().map(|(s, _)| s.clone()).collect();
    assert_eq!(names, [a, b, c]);
    for (s, bytes) in &all {
        assert_eq!(
            store.journal(s).await.expect("journal").as_ref(),
            Some(bytes)
        );
    }
    // A page at a time, each continuing after the last secret of the one before, until an
    // empty page: the same journals, none twice.
    let mut paged = Vec::new();
    let mut after: Option<SecretRef> = None;
    loop {
        let page = store.journals(after.as_ref(), 2).await.expect("page");
        assert!(page.len() <= 2, "{} journals in a page of 2", page.len());
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        paged.extend(page);
    }
    assert_eq!(paged, all);
}

/// Records: check-and-set on the revision (absent, current, stale), revisions that move
/// forward and are not reused after a delete, an idempotent delete, and bad names refused
/// before anything is written.
pub async fn records_are_check_and_set(store: &dyn Store) {
    assert_eq!(
        store.record_get("consumers", "web-1").await.expect("get"),
        None
    );
    let r1 = store
        .record_put("consumers", "web-1", b"one", None)
        .await
        .expect("create");
    assert_eq!(
        store.record_get("consumers", "web-1").await.expect("get"),
        Some((b"one".to_vec(), r1))
    );
    // Creating again, or writing on a stale or made-up revision, conflicts and changes nothing.
    for expected in [None, Some(r1 + 1000)] {
        let err = store
            .record_put("consumers", "web-1", b"lost", expected)
            .await
            .expect_err("conflict");
        assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    }
    let r2 = store
        .record_put("consumers", "web-1", b"two", Some(r1))
        .await
        .expect("update");
    assert!(r2 > r1, "revision moved forward: {r1} -> {r2}");
    let err = store
        .record_put("consumers", "web-1", b"stale", Some(r1))
        .await
        .expect_err("stale writer");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let err = store
        .record_delete("consumers", "web-1", r1)
        .await
        .expect_err("stale delete");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(
        store.record_get("consumers", "web-1").await.expect("get"),
        Some((b"two".to_vec(), r2))
    );
    store
        .record_delete("consumers", "web-1", r2)
        .await
        .expect("delete");
    assert_eq!(
        store.record_get("consumers", "web-1").await.expect("get"),
        None
    );
    // A delete that already happened is no error (a retried request).
    store
        .record_delete("consumers", "web-1", r2)
        .await
        .expect("delete again");
    // Written again: a new revision, so a holder of an old one cannot overwrite it.
    let r3 = store
        .record_put("consumers", "web-1", b"three", None)
        .await
        .expect("create again");
    assert!(r3 > r2, "revision not reused after a delete: {r2} -> {r3}");
    let err = store
        .record_put("consumers", "web-1", b"aba", Some(r2))
        .await
        .expect_err("old revision");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    // Names that could escape a path or collide with the store's own are refused.
    for (ns, id) in [
        ("consumers", ""),
        ("consumers", "a/b"),
        ("consumers", ".."),
        ("consumers", "_rotor"),
        ("", "x"),
        ("../x", "y"),
    ] {
        let err = store
            .record_put(ns, id, b"x", None)
            .await
            .expect_err("bad name");
        assert!(err.to_string().contains("invalid record"), "{err}");
    }
}

/// `record_list` returns one namespace's live records, sorted by id, with their revisions;
/// deleted records and other namespaces are not in it, and records are no secrets.
pub async fn records_list_by_namespace(store: &dyn Store) {
    assert!(
        store
            .record_list("permits")
            .await
            .expect("empty")
            .is_empty()
    );
    let b = store
        .record_put("permits", "b", b"{\"n\":2}", None)
        .await
        .expect("b");
    let a = store
        .record_put("permits", "a", b"\x00\xffbinary", None)
        .await
        .expect("a");
    let gone = store
        .record_put("permits", "gone", b"x", None)
        .await
        .expect("gone");
    store
        .record_delete("permits", "gone", gone)
        .await
        .expect("delete");
    store
        .record_put("permitsx", "other", b"y", None)
        .await
        .expect("other namespace");
    store
        .record_put("consumers", "a", b"z", None)
        .await
        .expect("other namespace");
    let list = store.record_list("permits").await.expect("list");
    let seen: Vec<(&str, &[u8], u64)> = list
        .iter()
        .map(|r| (r.id.as_str(), r.bytes.as_slice(), r.rev))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("a", b"\x00\xffbinary".as_slice(), a),
            ("b", b"{\"n\":2}".as_slice(), b)
        ]
    );
    assert!(
        store.secrets().await.expect("secrets").is_empty(),
        "records are no secrets"
    );
}

/// `create_first_versions` writes each new secret's value, labels, journal and history
/// record (with the label stamps of a commit at that time), answers which it wrote, and
/// leaves a secret that has a journal exactly as it was; written again, it writes nothing.
pub async fn first_versions_are_written_whole_and_skip_started_secrets(store: &dyn Store) {
    let a = secret("tenant1", "api_keys");
    let b = secret("tenant2", "api_keys");
    let started = secret("tenant3", "api_keys");
    put(store, &started, 1, "old", 0).await;
    commit(
        store,
        &started,
        &[(1, Label::Current)],
        Some(&record(1, None, 1, 0)),
        at(1),
    )
    .await
    .expect("commit");
    let first = |s: &SecretRef, text: &str| {
        let mut history = record(1, None, 1, 5);
        history.trigger = Trigger::Initial;
        FirstVersion {
            secret: s.clone(),
            version: 1,
            rotation: RotationId(1),
            value: value(text),
            journal: journal_for(&[(1, Label::Current)]),
            labels: vec![(1, Label::Current)],
            history: Some(history),
        }
    };
    let firsts = [first(&a, "va"), first(&b, "vb"), first(&started, "new")];
    let written = store
        .create_first_versions(&firsts, at(5))
        .await
        .expect("create first versions");
    assert_eq!(written, [true, true, false]);
    for (s, text) in [(&a, "va"), (&b, "vb")] {
        assert_eq!(
            store.read_value(s, 1).await.expect("value").expose(),
            text.as_bytes()
        );
        assert_eq!(labels_of(store, s).await, [(1, Label::Current)]);
        let meta = store.versions(s).await.expect("versions");
        assert_eq!(meta.len(), 1);
        assert_eq!(meta[0].rotation, RotationId(1));
        assert_eq!(meta[0].created_at, at(5));
        assert_eq!(meta[0].promoted_at, Some(at(5)));
        assert_eq!(meta[0].expired_at, None);
        assert_eq!(meta[0].fingerprint, store.fingerprint(text.as_bytes()));
        assert_eq!(
            store.journal(s).await.expect("journal"),
            Some(journal_for(&[(1, Label::Current)]))
        );
        assert_eq!(
            store.history(s, 10).await.expect("history"),
            [firsts[0].history.clone().expect("a record")]
        );
    }
    assert_eq!(
        store.read_value(&started, 1).await.expect("value").expose(),
        b"old"
    );
    assert_eq!(
        store.history(&started, 10).await.expect("history"),
        [record(1, None, 1, 0)]
    );
    assert_eq!(
        store.secrets().await.expect("secrets"),
        [a.clone(), b, started]
    );
    // Again (a resumed start that finds them written): nothing changes.
    let again = store
        .create_first_versions(&firsts, at(9))
        .await
        .expect("create first versions again");
    assert_eq!(again, [false, false, false]);
    assert_eq!(store.history(&a, 10).await.expect("history").len(), 1);
    assert_eq!(
        store.read_value(&a, 1).await.expect("value").expose(),
        b"va"
    );
}
