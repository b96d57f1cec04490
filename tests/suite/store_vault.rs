//! The Vault store against a real Vault-compatible server and against the in-repo fake.
//!
//! The real server is a private OpenBao per test (`tests/common/openbao.rs`: `bao server
//! -dev` on a free loopback port, a KV v2 mount at a random path enabled through the API),
//! so the `openbao::*` tests need `bao` (`.ci/setup-openbao.sh` installs it): under
//! `CI=true` a missing binary fails them, elsewhere they print SKIPPED.
//!
//! Core cases, run as `openbao::NAME` and `fake::NAME`: the `Store` contract shared with
//! `tests/suite/store.rs` (`tests/common/store_contract.rs`: round trip across a reopen,
//! fingerprints, idempotent `put_version` and conflicts, labels and timestamps, rollback,
//! invalid commits, history, listing), where a reopen is a new client on the same server
//! and prefix; a stale writer fenced by check-and-set; the KV layout (values as KV
//! versions below `_rotor`, labels mirrored in custom metadata, nothing where a consumer
//! looks); the migration of a store of layout 1, written here with raw KV calls (every
//! secret reads the same after it, it runs once, and one cut short after any of its writes
//! finishes on the next open); and the whole rotation tree over the store. What the real server cannot be made to do stays on the fake only: retried 500s
//! and timeouts, Kubernetes login and token renewal, and no value in any error, `Debug`
//! output or log line while those faults happen. A sealed Vault, a forced CAS conflict and
//! a policy denial by path are here on the fake too, where a case counts requests or needs
//! the fault on one exact request; the same faults on a real OpenBao, mid-rotation, are in
//! `tests/suite/faults_vault.rs`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::common::embedded::{FAST_API_KEYS, admin, tree_config};
use crate::common::openbao::{OpenBao, random_name};
use crate::common::store_contract::{self as contract, at, commit, labels_of, secret, value};
use crate::common::wait::eventually;
use futures::future::BoxFuture;
use rotor::domain::{Label, Outcome, RotationId};
use rotor::store::vault::{VaultAuth, VaultSettings, VaultStore};
use rotor::store::vault_fake::{Faults, VaultFake};
use rotor::store::{ReadValue as _, Store, StoreError};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;

const ROOT: &str = "root-token-for-tests";

/// One store under test plus what keeps it alive.
struct Env {
    store: VaultStore,
    settings: VaultSettings,
    server: Server,
    _dir: Arc<tempfile::TempDir>,
}

/// The server behind an [`Env`].
enum Server {
    Fake(Arc<VaultFake>),
    OpenBao(Arc<OpenBao>),
}

impl Env {
    /// A second store on the same Vault and prefix (another replica).
    async fn replica(&self) -> VaultStore {
        VaultStore::open(self.settings.clone())
            .await
            .expect("open replica")
    }
    fn fake(&self) -> &VaultFake {
        match &self.server {
            Server::Fake(fake) => fake,
            Server::OpenBao(_) => panic!("this case needs the fake"),
        }
    }
    /// KV path of `rest` under the store's prefix (without mount): `_rotor/tenant/key` is
    /// where the store keeps a secret's values, `tenant/key` where a consumer would look.
    fn kv_path(&self, rest: &str) -> String {
        format!("{}/{rest}", self.settings.path_prefix)
    }
    /// One API call with the root token, to the fake or to OpenBao: `(status, JSON body or
    /// Null)`.
    async fn raw(
        &self,
        method: &str,
        api: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        match &self.server {
            Server::OpenBao(bao) => bao.call(method, api, body).await,
            Server::Fake(fake) => {
                let http = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .expect("client");
                let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
                let mut req = http
                    .request(method, format!("{}/v1/{api}", fake.address()))
                    .header("X-Vault-Token", ROOT);
                if let Some(b) = body {
                    req = req
                        .header("Content-Type", "application/json")
                        .body(b.to_string());
                }
                let resp = req.send().await.expect("fake answers");
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await.expect("body");
                (status, serde_json::from_slice(&bytes).unwrap_or_default())
            }
        }
    }
    /// Whether the KV path `path` of the store's mount exists.
    async fn kv_exists(&self, path: &str) -> bool {
        let (status, body) = self
            .raw(
                "GET",
                &format!("{}/metadata/{path}", self.settings.mount),
                None,
            )
            .await;
        assert!(
            status == 200 || status == 404,
            "metadata of {path}: {status} {body}"
        );
        status == 200
    }
    /// The KV metadata of `path` in the store's mount, asked of the server itself:
    /// `current_version` and `custom_metadata`.
    async fn kv_metadata(&self, path: &str) -> (u64, BTreeMap<String, String>) {
        let mount = &self.settings.mount;
        match &self.server {
            Server::Fake(fake) => (
                fake.current_version(mount, path),
                fake.custom_metadata(mount, path),
            ),
            Server::OpenBao(bao) => {
                let (status, body) = bao
                    .call("GET", &format!("{mount}/metadata/{path}"), None)
                    .await;
                assert_eq!(status, 200, "metadata of {mount}/{path}: {body}");
                let data = &body["data"];
                let custom = data["custom_metadata"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default();
                (
                    data["current_version"].as_u64().expect("current_version"),
                    custom,
                )
            }
        }
    }
}

impl contract::Reopen for Env {
    fn store(&self) -> &dyn Store {
        &self.store
    }
    fn reopen(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.store = self.replica().await })
    }
}

fn settings(
    address: String,
    token_file: PathBuf,
    dir: &std::path::Path,
    prefix: &str,
) -> VaultSettings {
    VaultSettings {
        address,
        other_addresses: Vec::new(),
        mount: "secret".into(),
        path_prefix: prefix.into(),
        namespace: None,
        ca_file: None,
        master_key_file: dir.join("master.key"),
        timeout: Duration::from_millis(300),
        max_attempts: 4,
        retry_backoff: Duration::from_millis(10),
        auth: VaultAuth::Token { token_file },
        proxy: None,
        allow_insecure_http: false,
    }
}

async fn fake_env() -> Env {
    let fake = Arc::new(VaultFake::start("secret", ROOT).expect("start fake"));
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{ROOT}\n")).expect("write token");
    let settings = settings(fake.address(), token_file, dir.path(), "production/tenants");
    let store = VaultStore::open(settings.clone()).await.expect("open");
    Env {
        store,
        settings,
        server: Server::Fake(fake),
        _dir: Arc::new(dir),
    }
}

/// A store on a private OpenBao, in a KV v2 mount at a random path; `None` when the test
/// is skipped (no `bao` outside CI).
async fn openbao_env() -> Option<Env> {
    let bao = Arc::new(OpenBao::start().await?);
    let mount = format!("kv-{}", random_name(8));
    bao.enable_kv2(&mount).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{}\n", bao.token())).expect("write token");
    let mut s = settings(
        bao.address().to_owned(),
        token_file,
        dir.path(),
        "production/tenants",
    );
    s.mount = mount;
    // A real server on a machine shared by parallel builds: no request should need this
    // long, and none of these cases is about timeouts.
    s.timeout = Duration::from_secs(10);
    let store = VaultStore::open(s.clone()).await.expect("open OpenBao");
    Some(Env {
        store,
        settings: s,
        server: Server::OpenBao(bao),
        _dir: Arc::new(dir),
    })
}

// ---------------------------------------------------------------------------------------
// Core cases: the shared `Store` contract, fencing, the KV layout and the rotation tree,
// run against a private OpenBao and against the fake.

async fn stale_writer_is_fenced(env: &Env) {
    let s = secret("t", "fenced");
    let a = &env.store;
    a.put_version(&s, 1, RotationId(1), &value("a"), at(0))
        .await
        .expect("put");
    commit(a, &s, &[(1, Label::Current)], None, at(1))
        .await
        .expect("commit");
    // Replica B takes over: reads the journal, rotates.
    let b = env.replica().await;
    b.journal(&s).await.expect("journal");
    b.put_version(&s, 2, RotationId(2), &value("b"), at(2))
        .await
        .expect("put");
    commit(
        &b,
        &s,
        &[(2, Label::Current), (1, Label::Previous)],
        None,
        at(3),
    )
    .await
    .expect("commit");
    let journal_b = b.journal(&s).await.expect("journal");
    // A, stale, tries to go on from what it last saw: refused, nothing overwritten.
    let err = commit(a, &s, &[(1, Label::Pending)], None, at(4))
        .await
        .expect_err("stale commit");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("check-and-set"), "{err}");
    let err = a
        .put_version(&s, 3, RotationId(9), &value("stale"), at(5))
        .await
        .expect_err("stale put");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(b.journal(&s).await.expect("journal"), journal_b);
    assert_eq!(
        labels_of(&b, &s).await,
        [(1, Label::Previous), (2, Label::Current)]
    );
    // Two writers of the same version: the second loses with a version conflict.
    let c = env.replica().await;
    c.journal(&s).await.expect("journal");
    b.put_version(&s, 3, RotationId(3), &value("c"), at(6))
        .await
        .expect("put");
    let err = c
        .put_version(&s, 3, RotationId(4), &value("d"), at(6))
        .await
        .expect_err("lost race");
    assert!(
        matches!(
            err,
            StoreError::Conflict { .. } | StoreError::VersionConflict { .. }
        ),
        "{err}"
    );
    assert_eq!(b.read_value(&s, 3).await.expect("read").expose(), b"c");
    // A re-reads (a resumed process restarts from the store) and may write again.
    a.journal(&s).await.expect("journal");
    commit(a, &s, &[(2, Label::Current)], None, at(7))
        .await
        .expect("after re-read");
}

/// Two tests per case, `openbao::NAME` and `fake::NAME`, each on a fresh store (and, for
/// OpenBao, a server of its own). `$flavor` is the tokio test flavour.
macro_rules! core_suite {
    ($($name:ident $([$($flavor:tt)*])?: |$env:ident| $case:expr),* $(,)?) => {
        mod fake {
            use super::*;
            $(#[tokio::test$(($($flavor)*))?] async fn $name() {
                let $env = &mut fake_env().await;
                $case.await;
            })*
        }
        mod openbao {
            use super::*;
            $(#[tokio::test$(($($flavor)*))?] async fn $name() {
                let Some(mut found) = openbao_env().await else { return };
                let $env = &mut found;
                $case.await;
            })*
        }
    };
}

core_suite!(
    values_round_trip_across_reopen: |env| contract::values_round_trip_across_reopen(env),
    fingerprints_match_for_equal_values_only:
        |env| contract::fingerprints_match_for_equal_values_only(&env.store),
    put_version_is_idempotent_per_rotation_and_conflicts_otherwise:
        |env| contract::put_version_is_idempotent_per_rotation_and_conflicts_otherwise(&env.store),
    labels_and_timestamps_follow_commits:
        |env| contract::labels_and_timestamps_follow_commits(&env.store),
    rollback_in_grace_keeps_the_original_promotion_time:
        |env| contract::rollback_in_grace_keeps_the_original_promotion_time(&env.store),
    invalid_commits_write_nothing: |env| contract::invalid_commits_write_nothing(&env.store),
    history_is_newest_first_limited_and_not_duplicated_by_replays:
        |env| contract::history_is_newest_first_limited_and_not_duplicated_by_replays(env),
    secrets_lists_those_with_a_journal:
        |env| contract::secrets_lists_those_with_a_journal(&env.store),
    first_versions_are_written_whole_and_skip_started_secrets:
        |env| contract::first_versions_are_written_whole_and_skip_started_secrets(&env.store),
    records_are_check_and_set: |env| contract::records_are_check_and_set(&env.store),
    records_list_by_namespace: |env| contract::records_list_by_namespace(&env.store),
    // `super::`: the closure is expanded inside `fake` and `openbao`, where the test
    // itself has this name.
    stale_writer_is_fenced: |env| super::stale_writer_is_fenced(env),
    values_land_as_kv_versions_with_labels_mirrored_in_custom_metadata:
        |env| super::values_land_as_kv_versions_with_labels_mirrored_in_custom_metadata(env),
    rotation_tree_rotates_over_the_vault_store [flavor = "multi_thread", worker_threads = 2]:
        |env| super::rotation_tree_rotates_over_the_vault_store(env),
    layout1_is_migrated_on_open_and_new_writes_land_below_rotor:
        |env| super::layout1_is_migrated_on_open_and_new_writes_land_below_rotor(env),
    a_migrated_store_is_not_migrated_again:
        |env| super::a_migrated_store_is_not_migrated_again(env),
    a_migration_cut_short_after_any_write_completes_on_the_next_open:
        |env| super::a_migration_cut_short_after_any_write_completes_on_the_next_open(env),
);

// ---------------------------------------------------------------------------------------
// Layout 1 (values at `{prefix}/{tenant}/{key}`, where consumers look) migrated below
// `{prefix}/_rotor` on open. The old layout is written here with raw KV calls, exactly as
// the store wrote it before.

/// The prefix the migration cases write layout 1 under (the env's own store has already
/// marked `production/tenants` as a new store).
const LEGACY: &str = "legacy/tenants";

/// What one layout 1 secret held.
struct Layout1 {
    secret: rotor::domain::SecretRef,
    /// Per KV version, oldest first: the value and its rotation, or `None` for a version
    /// someone else wrote with `vault kv put` (no `rotor_rotation`).
    values: Vec<Option<(Vec<u8>, u64)>>,
    /// The state document's part; `None` for a secret whose first `put_version` crashed
    /// before its document was written.
    doc: Option<(
        Vec<u8>,
        Vec<rotor::domain::VersionMeta>,
        Vec<rotor::domain::HistoryRecord>,
    )>,
}

fn meta(
    store: &dyn Store,
    version: u64,
    rotation: u64,
    labels: &[Label],
    value: &[u8],
    t: i64,
) -> rotor::domain::VersionMeta {
    rotor::domain::VersionMeta {
        version,
        rotation: RotationId(rotation),
        labels: labels.to_vec(),
        created_at: at(t),
        promoted_at: labels.contains(&Label::Current).then(|| at(t + 1)),
        expired_at: None,
        fingerprint: store.fingerprint(value),
    }
}

/// Writes three layout 1 secrets (and a path rotor never wrote) under [`LEGACY`], as the
/// store of layout 1 did: values as KV versions with the label mirror in custom metadata,
/// the state document at `{path}/_rotor`.
async fn write_layout1(env: &Env) -> Vec<Layout1> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let st = &env.store;
    let binary = vec![0xff, 0x00, 0x80, 0x7f];
    let fixtures = vec![
        Layout1 {
            secret: secret("t1", "db"),
            values: vec![
                Some((b"one".to_vec(), 1)),
                None,
                Some((b"three".to_vec(), 3)),
                Some((binary.clone(), 4)),
            ],
            doc: Some((
                b"journal of t1/db".to_vec(),
                vec![
                    meta(st, 1, 1, &[], b"one", 0),
                    meta(st, 3, 3, &[Label::Previous], b"three", 10),
                    meta(st, 4, 4, &[Label::Current], &binary, 20),
                ],
                vec![
                    contract::record(1, None, 1, 0),
                    contract::record(3, Some(1), 3, 10),
                    contract::record(4, Some(3), 4, 20),
                ],
            )),
        },
        Layout1 {
            secret: secret("t2", "api"),
            values: vec![Some((b"alpha".to_vec(), 1))],
            doc: Some((
                b"journal of t2/api".to_vec(),
                vec![meta(st, 1, 1, &[Label::Current], b"alpha", 0)],
                vec![contract::record(1, None, 1, 0)],
            )),
        },
        Layout1 {
            secret: secret("t2", "crashed"),
            values: vec![Some((b"gamma".to_vec(), 7))],
            doc: None,
        },
    ];
    let mount = &env.settings.mount;
    for f in &fixtures {
        let path = format!("{LEGACY}/{}/{}", f.secret.tenant(), f.secret.key());
        for (i, v) in f.values.iter().enumerate() {
            let data = match v {
                Some((bytes, rotation)) => match std::str::from_utf8(bytes) {
                    Ok(text) => {
                        serde_json::json!({"value": text, "rotor_rotation": rotation.to_string()})
                    }
                    Err(_) => {
                        serde_json::json!({"value_base64": b64.encode(bytes), "rotor_rotation": rotation.to_string()})
                    }
                },
                None => serde_json::json!({"value": "put by hand"}),
            };
            let body = serde_json::json!({"data": data, "options": {"cas": i}});
            let (status, answer) = env
                .raw("POST", &format!("{mount}/data/{path}"), Some(body))
                .await;
            assert_eq!(status, 200, "layout 1 value {path}: {answer}");
        }
        if let Some((journal, versions, history)) = &f.doc {
            let mut custom = serde_json::Map::new();
            for m in versions {
                for l in &m.labels {
                    custom.insert(
                        format!("rotor_{}", l.as_str()),
                        m.version.to_string().into(),
                    );
                }
            }
            let body = serde_json::json!({"cas_required": true, "custom_metadata": custom});
            let (status, answer) = env
                .raw("POST", &format!("{mount}/metadata/{path}"), Some(body))
                .await;
            assert!(
                status == 200 || status == 204,
                "layout 1 mirror {path}: {answer}"
            );
            let doc = serde_json::json!({
                "format": 1,
                "journal": b64.encode(journal),
                "versions": versions,
                "history": history,
            });
            let body = serde_json::json!({"data": doc, "options": {"cas": 0}});
            let (status, answer) = env
                .raw("POST", &format!("{mount}/data/{path}/_rotor"), Some(body))
                .await;
            assert_eq!(status, 200, "layout 1 document {path}: {answer}");
        }
    }
    let body = serde_json::json!({"data": {"note": "not rotor's"}});
    let (status, answer) = env
        .raw(
            "POST",
            &format!("{mount}/data/{LEGACY}/t3/notes"),
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "a path rotor never wrote: {answer}");
    fixtures
}

fn legacy_settings(env: &Env) -> VaultSettings {
    VaultSettings {
        path_prefix: LEGACY.into(),
        ..env.settings.clone()
    }
}

/// Every secret of `fixtures` reads through `store` as it did in layout 1.
async fn assert_reads_as_layout1(store: &VaultStore, fixtures: &[Layout1]) {
    for f in fixtures {
        let s = &f.secret;
        for (i, v) in f.values.iter().enumerate() {
            let version = i as u64 + 1;
            match v {
                Some((bytes, _)) => assert_eq!(
                    store.read_value(s, version).await.expect("read").expose(),
                    &bytes[..],
                    "{s} version {version}"
                ),
                None => assert!(
                    matches!(
                        store.read_value(s, version).await,
                        Err(StoreError::NoSuchVersion { .. })
                    ),
                    "{s} version {version} was not rotor's"
                ),
            }
        }
        match &f.doc {
            Some((journal, versions, history)) => {
                assert_eq!(store.versions(s).await.expect("versions"), *versions, "{s}");
                let mut newest_first = history.clone();
                newest_first.reverse();
                assert_eq!(
                    store.history(s, 10).await.expect("history"),
                    newest_first,
                    "{s}"
                );
                assert_eq!(
                    store.journal(s).await.expect("journal").as_ref(),
                    Some(journal),
                    "{s}"
                );
                let current = versions
                    .iter()
                    .find(|m| m.labels.contains(&Label::Current))
                    .map(|m| m.version);
                assert_eq!(
                    store.current_version(s).await.expect("current"),
                    current,
                    "{s}"
                );
            }
            None => assert!(store.versions(s).await.expect("versions").is_empty()),
        }
    }
    let with_journal: Vec<_> = fixtures
        .iter()
        .filter(|f| f.doc.is_some())
        .map(|f| f.secret.clone())
        .collect();
    assert_eq!(store.secrets().await.expect("secrets"), with_journal);
}

/// The layout marker's KV version, or `None` while there is none.
async fn marker_version(env: &Env) -> Option<u64> {
    let path = format!("{LEGACY}/_rotor/_layout");
    env.kv_exists(&path).await.then_some(())?;
    Some(env.kv_metadata(&path).await.0)
}

async fn layout1_is_migrated_on_open_and_new_writes_land_below_rotor(env: &Env) {
    let fixtures = write_layout1(env).await;
    let store = VaultStore::open(legacy_settings(env))
        .await
        .expect("open migrates");
    assert_reads_as_layout1(&store, &fixtures).await;
    assert_eq!(marker_version(env).await, Some(1));
    // A path rotor never wrote is not copied.
    assert!(!env.kv_exists(&format!("{LEGACY}/_rotor/t3/notes")).await);
    // The crashed first `put_version` replays against its copy.
    let crashed = secret("t2", "crashed");
    store
        .put_version(&crashed, 1, RotationId(7), &value("gamma"), at(30))
        .await
        .expect("the replay of a version written before the crash");
    // New writes land below `_rotor`; the path a consumer reads is not written again.
    let s = secret("t1", "db");
    store.journal(&s).await.expect("journal");
    store
        .put_version(&s, 5, RotationId(5), &value("five, pending"), at(40))
        .await
        .expect("put");
    commit(
        &store,
        &s,
        &[
            (5, Label::Pending),
            (4, Label::Current),
            (3, Label::Previous),
        ],
        None,
        at(41),
    )
    .await
    .expect("commit");
    let (consumer, _) = env.kv_metadata(&format!("{LEGACY}/t1/db")).await;
    assert_eq!(consumer, 4, "the layout 1 path got no new version");
    let (doc, _) = env.kv_metadata(&format!("{LEGACY}/t1/db/_rotor")).await;
    assert_eq!(doc, 1, "the layout 1 document was not written again");
    let (stored, custom) = env.kv_metadata(&format!("{LEGACY}/_rotor/t1/db")).await;
    assert_eq!(stored, 5);
    assert_eq!(custom.get("rotor_pending").map(String::as_str), Some("5"));
    let (status, body) = env
        .raw(
            "GET",
            &format!("{}/data/{LEGACY}/t1/db", env.settings.mount),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["data"]["metadata"]["version"], 4,
        "{}",
        body["data"]["metadata"]
    );
}

async fn a_migrated_store_is_not_migrated_again(env: &Env) {
    let fixtures = write_layout1(env).await;
    VaultStore::open(legacy_settings(env))
        .await
        .expect("open migrates");
    // Written to layout 1 after the migration (an old replica still running): not copied,
    // and the marker is not rewritten.
    let mount = &env.settings.mount;
    let body = serde_json::json!({"data": {"value": "late", "rotor_rotation": "9"}, "options": {"cas": 0}});
    let (status, _) = env
        .raw(
            "POST",
            &format!("{mount}/data/{LEGACY}/t9/late"),
            Some(body),
        )
        .await;
    assert_eq!(status, 200);
    let store = VaultStore::open(legacy_settings(env))
        .await
        .expect("reopen");
    assert!(!env.kv_exists(&format!("{LEGACY}/_rotor/t9/late")).await);
    assert_eq!(marker_version(env).await, Some(1));
    assert_reads_as_layout1(&store, &fixtures).await;
}

async fn a_migration_cut_short_after_any_write_completes_on_the_next_open(env: &Env) {
    let fixtures = write_layout1(env).await;
    // Each open may make one more write before it stops as a crash would: every write of
    // the migration is, once, the last one before a crash, and each open resumes.
    let mut cut_short = 0;
    let store = loop {
        match VaultStore::open_migrating_at_most(legacy_settings(env), 1).await {
            Ok(store) => break store,
            Err(e) => {
                assert!(e.to_string().contains("layout migration stopped"), "{e}");
                assert_eq!(
                    marker_version(env).await,
                    None,
                    "no marker before the copy is complete"
                );
                cut_short += 1;
                assert!(cut_short < 100, "the migration makes no progress: {e}");
            }
        }
    };
    // Metadata, versions and document of three secrets: many writes, each cut after.
    assert!(cut_short >= 10, "only {cut_short} opens were cut short");
    assert_eq!(marker_version(env).await, Some(1));
    assert_reads_as_layout1(&store, &fixtures).await;
    let again = VaultStore::open(legacy_settings(env))
        .await
        .expect("reopen");
    assert_reads_as_layout1(&again, &fixtures).await;
    assert_eq!(marker_version(env).await, Some(1));
}

/// Values are KV versions of the secret's path below `_rotor`, the labels are mirrored into its custom
/// metadata, and the state document is a KV path of its own.
async fn values_land_as_kv_versions_with_labels_mirrored_in_custom_metadata(env: &Env) {
    let s = secret("tenant1", "db");
    env.store
        .put_version(&s, 1, RotationId(1), &value("one"), at(0))
        .await
        .expect("put");
    env.store
        .put_version(&s, 2, RotationId(2), &value("two"), at(1))
        .await
        .expect("put");
    commit(
        &env.store,
        &s,
        &[(2, Label::Current), (1, Label::Previous)],
        None,
        at(2),
    )
    .await
    .expect("commit");
    let (current, custom) = env.kv_metadata(&env.kv_path("_rotor/tenant1/db")).await;
    assert_eq!(current, 2);
    assert_eq!(custom.get("rotor_current").map(String::as_str), Some("2"));
    assert_eq!(custom.get("rotor_previous").map(String::as_str), Some("1"));
    let (doc_version, _) = env
        .kv_metadata(&env.kv_path("_rotor/tenant1/db/_rotor"))
        .await;
    assert_eq!(doc_version, 3);
    // Nothing where a consumer would look: pending versions never show there.
    assert!(!env.kv_exists(&env.kv_path("tenant1/db")).await);
    assert!(!env.kv_exists(&env.kv_path("tenant1/db/_rotor")).await);
}

/// The whole rotation tree over the Vault store, in real time: the initial version at
/// start, then an API-triggered rotation promoted to `current`.
async fn rotation_tree_rotates_over_the_vault_store(env: &Env) {
    use rotor::actors::tree::{self, TreeOptions};
    use rotor::api::Admin as _;
    use rotor::clock::Clock;
    use rotor::domain::SecretRef;
    use rotor::metrics::Metrics;
    use rotor::target::Target;
    use rotor::target::none::NoneTarget;

    let dir = tempfile::tempdir().expect("tempdir");
    // The config's embedded store goes unused: the tree gets the Vault store.
    let cfg = tree_config(dir.path(), FAST_API_KEYS);
    let store: Arc<dyn Store> = Arc::new(env.replica().await);
    let options = TreeOptions {
        clock: Clock::System,
        target_override: Some(Arc::new(|s: &SecretRef| {
            Arc::new(NoneTarget::new(s.clone())) as Arc<dyn Target>
        })),
        namespace: format!("{}/", dir.path().display()),
        ..TreeOptions::default()
    };
    let mut tree = tree::start(&cfg, store.clone(), Metrics::new(), options)
        .await
        .expect("tree starts");
    let admin = admin(&tree);
    let s = secret("tenant1", "api_keys");
    eventually(Duration::from_secs(20), "the initial version", async || {
        labels_of(&*store, &s).await.contains(&(1, Label::Current))
    })
    .await;
    // A Vault request that fails on a loaded machine fails the rotation actor, which its
    // supervisor restarts (the design): the API then says 503 "try again", and this does.
    eventually(
        Duration::from_secs(20),
        "the rotation accepted",
        async || match admin.rotate(s.clone()).await {
            // 409: the attempt the restarted actor resumed from its journal.
            Ok(_) | Err(rotor::api::AdminError::Conflict(_)) => true,
            Err(rotor::api::AdminError::Unavailable(_)) => false,
            Err(e) => panic!("rotation refused: {e}"),
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the rotation to finish",
        async || labels_of(&*store, &s).await.contains(&(2, Label::Current)),
    )
    .await;
    let labels = labels_of(&*store, &s).await;
    assert_eq!(labels, [(1, Label::Previous), (2, Label::Current)]);
    let (current, custom) = env
        .kv_metadata(&env.kv_path("_rotor/tenant1/api_keys"))
        .await;
    assert_eq!(current, 2);
    assert_eq!(custom.get("rotor_current").map(String::as_str), Some("2"));
    let history = store.history(&s, 10).await.expect("history");
    // The second rotation's record lands when its grace ends (10 minutes); the first's is
    // there.
    assert!(
        history
            .iter()
            .any(|r| r.to_version == 1 && r.outcome == Outcome::Succeeded),
        "{history:?}"
    );
    let _ = tree.shutdown(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------
// What only the fake can do: faults a real server cannot be made to show on demand.

#[tokio::test]
async fn transient_500s_are_retried_and_persistent_ones_reported() {
    let env = fake_env().await;
    let s = secret("t", "k");
    env.fake().faults(Faults {
        fail_next: 3,
        ..Faults::default()
    });
    env.store
        .put_version(&s, 1, RotationId(1), &value("v"), at(0))
        .await
        .expect("retried through three 500s");
    env.fake().faults(Faults {
        fail_next: 100,
        ..Faults::default()
    });
    let before = env.fake().requests();
    let err = env.store.versions(&s).await.expect_err("persistent 500");
    assert_eq!(
        env.fake().requests() - before,
        4,
        "max_attempts bounds the retries"
    );
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("500") && msg.contains("4 attempts"), "{msg}");
    assert!(
        msg.contains("secret/data/production/tenants/_rotor/t/k/_rotor"),
        "{msg}"
    );
}

#[tokio::test]
async fn timeouts_are_retried_then_reported() {
    let env = fake_env().await;
    let s = secret("t", "k");
    env.fake().faults(Faults {
        delay_next: 1,
        delay: Duration::from_millis(800),
        ..Faults::default()
    });
    env.store
        .put_version(&s, 1, RotationId(1), &value("v"), at(0))
        .await
        .expect("one timeout, then success");
    env.fake().faults(Faults {
        delay_next: 100,
        delay: Duration::from_millis(800),
        ..Faults::default()
    });
    let err = env.store.versions(&s).await.expect_err("always slow");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("timed out"), "{err}");
    env.fake().faults(Faults::default());
    // The timed-out write of a retried request may have landed; it is not doubled.
    assert_eq!(env.store.versions(&s).await.expect("versions").len(), 1);
}

/// A write that lands but whose answer is lost (an active node dying right after its
/// commit, a reset connection) is sent again and meets its own check-and-set: the store
/// reads the one version the write could have created and, finding exactly its data,
/// succeeds, once. A retried write that did not land still reports the conflict.
#[tokio::test]
async fn a_retried_write_whose_answer_was_lost_succeeds_once() {
    let env = fake_env().await;
    let records = |n| ("consumers", format!("web-{n}"));
    let (ns, id) = records(1);
    env.fake().faults(Faults {
        lose_answer_next: 1,
        ..Faults::default()
    });
    let before = env.fake().requests();
    let rev = env
        .store
        .record_put(ns, &id, b"one", None)
        .await
        .expect("the first attempt landed");
    // The read of the absent record, the write, its retry (a CAS mismatch), the read of
    // version 1.
    assert_eq!(env.fake().requests() - before, 4);
    assert_eq!(rev, 1);
    env.fake().faults(Faults {
        lose_answer_next: 1,
        ..Faults::default()
    });
    let rev = env
        .store
        .record_put(ns, &id, b"two", Some(rev))
        .await
        .expect("the first attempt landed");
    assert_eq!(rev, 2);
    assert_eq!(
        env.store.record_get(ns, &id).await.expect("get"),
        Some((b"two".to_vec(), 2))
    );
    // Not landed: a 500 before the write, then a mismatch with another writer's version.
    env.fake().faults(Faults {
        fail_next: 1,
        cas_conflict_next: 1,
        ..Faults::default()
    });
    let err = env
        .store
        .record_put(ns, &id, b"three", Some(rev))
        .await
        .expect_err("did not land");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    // Landed, but version 2 + 1 holds other data than this write's: someone else's.
    let (ns2, id2) = records(2);
    env.store
        .record_put(ns2, &id2, b"mine", None)
        .await
        .expect("put");
    env.fake().faults(Faults {
        fail_next: 1,
        ..Faults::default()
    });
    let theirs = env
        .store
        .record_put(ns2, &id2, b"theirs", Some(1))
        .await
        .expect("a write after a 500");
    assert_eq!(theirs, 2);
    env.fake().faults(Faults {
        fail_next: 1,
        ..Faults::default()
    });
    let err = env
        .store
        .record_put(ns2, &id2, b"mine again", Some(1))
        .await
        .expect_err("version 2 is another write's");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    // The state document and the values go through the same writes: a lost answer on
    // each leaves one version and one commit.
    let s = secret("t", "k");
    env.fake().faults(Faults {
        lose_answer_next: 2,
        ..Faults::default()
    });
    env.store
        .put_version(&s, 1, RotationId(1), &value("v"), at(0))
        .await
        .expect("put after lost answers");
    commit(&env.store, &s, &[(1, Label::Current)], None, at(1))
        .await
        .expect("commit");
    let versions = env.store.versions(&s).await.expect("versions");
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(labels_of(&env.store, &s).await, [(1, Label::Current)]);
}

#[tokio::test]
async fn sealed_vault_is_a_clear_error_without_retries() {
    let env = fake_env().await;
    let s = secret("t", "k");
    env.fake().faults(Faults {
        sealed: true,
        ..Faults::default()
    });
    let before = env.fake().requests();
    let err = env
        .store
        .put_version(&s, 1, RotationId(1), &value("v"), at(0))
        .await
        .expect_err("sealed");
    assert_eq!(env.fake().requests() - before, 1);
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("sealed"), "{err}");
    assert_eq!(err.metric_label(), "unavailable");
}

#[tokio::test]
async fn forced_cas_conflict_overwrites_nothing() {
    let env = fake_env().await;
    let s = secret("t", "k");
    env.store
        .put_version(&s, 1, RotationId(1), &value("v"), at(0))
        .await
        .expect("put");
    commit(&env.store, &s, &[(1, Label::Current)], None, at(1))
        .await
        .expect("commit");
    let journal = env.store.journal(&s).await.expect("journal");
    env.fake().faults(Faults {
        cas_conflict_next: 1,
        ..Faults::default()
    });
    let err = commit(&env.store, &s, &[(1, Label::Pending)], None, at(2))
        .await
        .expect_err("conflict");
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(err.metric_label(), "cas_conflict");
    assert_eq!(env.store.journal(&s).await.expect("journal"), journal);
    assert_eq!(labels_of(&env.store, &s).await, [(1, Label::Current)]);
}

#[tokio::test]
async fn policy_denial_names_the_path() {
    let env = fake_env().await;
    env.fake()
        .deny_path("secret/data/production/tenants/_rotor/t/k");
    let err = env
        .store
        .put_version(&secret("t", "k"), 1, RotationId(1), &value("v"), at(0))
        .await
        .expect_err("denied");
    assert!(matches!(err, StoreError::PermissionDenied { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "permission denied by Vault policy for secret/data/production/tenants/_rotor/t/k/_rotor"
    );
}

#[tokio::test]
async fn bad_token_and_bad_address_fail_at_open() {
    let env = fake_env().await;
    let mut s = env.settings.clone();
    let bad = env._dir.path().join("bad-token");
    std::fs::write(&bad, "nope").expect("write");
    s.auth = VaultAuth::Token { token_file: bad };
    let err = VaultStore::open(s.clone()).await.expect_err("bad token");
    assert!(matches!(err, StoreError::PermissionDenied { .. }), "{err}");
    s.address = "http://127.0.0.1:1".into();
    s.max_attempts = 2;
    let err = VaultStore::open(s).await.expect_err("nothing listens");
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
}

#[tokio::test]
async fn kubernetes_login_and_token_renewal() {
    let env = fake_env().await;
    let jwt_file = env._dir.path().join("sa-token");
    std::fs::write(&jwt_file, "eyJhbGciOi.fake.jwt").expect("write");
    env.fake()
        .add_kubernetes_role("rotor", "eyJhbGciOi.fake.jwt");
    env.fake().set_token_ttl(Duration::from_secs(90));
    let mut s = env.settings.clone();
    s.namespace = Some("team-a".into());
    s.auth = VaultAuth::Kubernetes {
        role: "rotor".into(),
        token_file: jwt_file.clone(),
        mount: "kubernetes".into(),
    };
    let store = VaultStore::open(s.clone()).await.expect("login");
    assert_eq!(env.fake().logins(), 1);
    assert_eq!(store.lease().ttl, Duration::from_secs(90));
    assert_eq!(store.lease().renew_after(), Some(Duration::from_secs(60)));
    assert_eq!(env.fake().last_namespace().as_deref(), Some("team-a"));
    let sec = secret("t", "k");
    store
        .put_version(&sec, 1, RotationId(1), &value("v"), at(0))
        .await
        .expect("put with the login token");

    let session = store.session();
    let lease = session.renew().await.expect("renew-self");
    assert_eq!(lease.ttl, Duration::from_secs(90));
    assert_eq!(env.fake().logins(), 1, "renewed, not logged in again");
    // The token is revoked: renewal falls back to a new login, and the store goes on.
    env.fake().revoke("hvs.fake-1");
    session.renew().await.expect("re-login");
    assert_eq!(env.fake().logins(), 2);
    assert_eq!(
        store.read_value(&sec, 1).await.expect("read").expose(),
        b"v"
    );

    // A wrong role is refused at open with a clear error.
    s.auth = VaultAuth::Kubernetes {
        role: "other".into(),
        token_file: jwt_file,
        mount: "kubernetes".into(),
    };
    let err = VaultStore::open(s).await.expect_err("bad role");
    assert!(err.to_string().contains("invalid role name"), "{err}");
}

/// Log lines from every thread (the fake serves from its own), recorded while
/// a [`Capturing`] guard lives: the subscriber is process-wide, and the other topics of the
/// test binary run in this process too.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

static CAPTURING: AtomicBool = AtomicBool::new(false);

/// Records log lines into [`captured_logs`] until dropped.
struct Capturing;

impl Capturing {
    fn start() -> Capturing {
        CAPTURING.store(true, Ordering::SeqCst);
        Capturing
    }
}

impl Drop for Capturing {
    fn drop(&mut self) {
        CAPTURING.store(false, Ordering::SeqCst);
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::ErrorKind::Other)?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || writer.clone())
            .with_filter(filter_fn(|_| CAPTURING.load(Ordering::SeqCst)));
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
        logs
    })
}

#[tokio::test]
async fn values_never_reach_errors_debug_output_or_logs() {
    let logs = captured_logs();
    let capturing = Capturing::start();
    let env = fake_env().await;
    let s = secret("t", "k");
    let secret_text = "hunter2-very-secret-value";
    env.store
        .put_version(&s, 1, RotationId(1), &value(secret_text), at(0))
        .await
        .expect("put");
    let mut errors = Vec::new();
    for faults in [
        Faults {
            fail_next: 100,
            ..Faults::default()
        },
        Faults {
            sealed: true,
            ..Faults::default()
        },
        Faults {
            cas_conflict_next: 5,
            ..Faults::default()
        },
        Faults {
            delay_next: 100,
            delay: Duration::from_millis(800),
            ..Faults::default()
        },
    ] {
        env.fake().faults(faults);
        if let Err(e) = env.store.read_value(&s, 1).await {
            errors.push(e);
        }
        if let Err(e) = env
            .store
            .put_version(&s, 2, RotationId(2), &value(secret_text), at(1))
            .await
        {
            errors.push(e);
        }
    }
    env.fake().faults(Faults::default());
    // A conflict whose loser holds the value.
    if let Err(e) = env
        .store
        .put_version(&s, 1, RotationId(5), &value(secret_text), at(2))
        .await
    {
        errors.push(e);
    }
    assert!(errors.len() >= 5, "{errors:?}");
    let _ = std::io::stdout().flush();
    for e in &errors {
        assert!(!e.to_string().contains(secret_text), "{e}");
        assert!(!format!("{e:?}").contains(secret_text), "{e:?}");
    }
    assert!(!format!("{:?}", env.store).contains(secret_text));
    assert!(
        !format!("{:?}", env.store).contains(ROOT),
        "no token in Debug"
    );
    drop(capturing);
    let text = String::from_utf8_lossy(&logs.0.lock().expect("logs")).into_owned();
    assert!(!text.is_empty(), "the subscriber captured the store's logs");
    assert!(!text.contains(secret_text), "a value reached the logs");
    assert!(!text.contains(ROOT), "a token reached the logs");
    // It did reach Vault, which is where values belong.
    assert!(
        env.fake()
            .seen_bodies()
            .iter()
            .any(|b| b.contains(secret_text))
    );
}

/// The token renewer, as `rotor run` starts it (a child of a supervisor): it renews at
/// once when it starts, so a token revoked meanwhile leads to a new login straight away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_supervised_renewer_logs_in_again_when_its_token_is_revoked() {
    use rotor::actors::vault_token;
    use rotor::supervisor::{Supervisor, SupervisorArgs};

    let env = fake_env().await;
    let jwt_file = env._dir.path().join("sa-token");
    std::fs::write(&jwt_file, "eyJhbGciOi.fake.jwt").expect("write");
    env.fake()
        .add_kubernetes_role("rotor", "eyJhbGciOi.fake.jwt");
    env.fake().set_token_ttl(Duration::from_secs(3600));
    let mut s = env.settings.clone();
    s.auth = VaultAuth::Kubernetes {
        role: "rotor".into(),
        token_file: jwt_file,
        mount: "kubernetes".into(),
    };
    let store = VaultStore::open(s).await.expect("login");
    assert_eq!(env.fake().logins(), 1);
    env.fake().revoke("hvs.fake-1");
    let args = SupervisorArgs::new(vec![vault_token::child_spec(
        store.session(),
        store.lease(),
    )]);
    let (sup, _join) = ractor::Actor::spawn(None, Supervisor, args)
        .await
        .expect("supervisor");
    eventually(
        Duration::from_secs(10),
        "a new login by the renewer",
        async || env.fake().logins() >= 2,
    )
    .await;
    sup.stop(None);
    drop(store);
}

// ---------------------------------------------------------------------------------------
// The fake against the real thing.

/// The same requests, sent to the fake and to a private OpenBao, get the same answers: the
/// KV v2 data and metadata endpoints the store uses, their check-and-set and validation
/// errors, and listing. Times, request ids and OpenBao's own additions to the metadata
/// (`current_metadata_version`, `metadata_cas_required`) are left out of the comparison.
#[tokio::test]
async fn the_fake_answers_as_openbao_does() {
    let Some(bao) = OpenBao::start().await else {
        return;
    };
    let fake = VaultFake::start("secret", ROOT).expect("start fake");
    let long = "x".repeat(513);
    let many: serde_json::Map<String, serde_json::Value> = (0..65)
        .map(|i| (format!("k{i}"), serde_json::json!("v")))
        .collect();
    let script: Vec<(&str, String, Option<String>)> = vec![
        ("GET", "secret/data/a/b".into(), None),
        ("GET", "secret/metadata/a/b".into(), None),
        (
            "POST",
            "secret/data/a/b".into(),
            Some(r#"{"data":{"v":"1"},"options":{"cas":1}}"#.into()),
        ),
        (
            "POST",
            "secret/data/a/b".into(),
            Some(r#"{"data":{"v":"1"},"options":{"cas":0}}"#.into()),
        ),
        (
            "POST",
            "secret/data/a/b".into(),
            Some(r#"{"data":{"v":"2"}}"#.into()),
        ),
        (
            "POST",
            "secret/data/a/b".into(),
            Some(r#"{"options":{"cas":2}}"#.into()),
        ),
        (
            "POST",
            "secret/data/a/b".into(),
            Some(r#"{"data":"text","options":{"cas":2}}"#.into()),
        ),
        (
            "POST",
            "secret/metadata/a/b".into(),
            Some(r#"{"custom_metadata":"text"}"#.into()),
        ),
        ("GET", "secret/metadata/a/b".into(), None),
        (
            "POST",
            "secret/metadata/a/b".into(),
            Some(r#"{"cas_required":true,"custom_metadata":{"rotor_current":"2"}}"#.into()),
        ),
        (
            "POST",
            "secret/data/a/b".into(),
            Some(r#"{"data":{"v":"3"}}"#.into()),
        ),
        (
            "POST",
            "secret/metadata/a/b".into(),
            Some(r#"{"custom_metadata":{"k":1}}"#.into()),
        ),
        (
            "POST",
            "secret/metadata/a/b".into(),
            Some(r#"{"custom_metadata":{"k":""}}"#.into()),
        ),
        (
            "POST",
            "secret/metadata/a/b".into(),
            Some(format!(r#"{{"custom_metadata":{{"k":"{long}"}}}}"#)),
        ),
        (
            "POST",
            "secret/metadata/a/b".into(),
            Some(format!(
                r#"{{"custom_metadata":{{"{}":"v"}}}}"#,
                "k".repeat(129)
            )),
        ),
        (
            "POST",
            "secret/metadata/a/b".into(),
            Some(serde_json::json!({"custom_metadata": many}).to_string()),
        ),
        ("GET", "secret/data/a/b?version=1".into(), None),
        ("GET", "secret/data/a/b?version=9".into(), None),
        ("GET", "secret/data/a/b?version=abc".into(), None),
        ("GET", "secret/metadata/a/b".into(), None),
        ("LIST", "secret/metadata/a/".into(), None),
        ("LIST", "secret/metadata/a/b/".into(), None),
        ("GET", "secret/metadata/?list=true".into(), None),
        ("LIST", "secret/metadata/zz/".into(), None),
        (
            "POST",
            "secret/metadata/new/path".into(),
            Some(r#"{"max_versions":3}"#.into()),
        ),
        ("GET", "secret/metadata/new/path".into(), None),
        ("GET", "secret/data/new/path".into(), None),
        ("GET", "nomount/data/x".into(), None),
    ];
    // Past `max_versions` (10): the oldest versions are gone from reads and metadata.
    let mut script = script;
    for v in 1..=12 {
        script.push((
            "POST",
            "secret/data/c".into(),
            Some(format!(
                r#"{{"data":{{"v":"{v}"}},"options":{{"cas":{}}}}}"#,
                v - 1
            )),
        ));
    }
    script.push(("GET", "secret/metadata/c".into(), None));
    script.push(("GET", "secret/data/c?version=2".into(), None));
    script.push(("GET", "secret/data/c?version=3".into(), None));

    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let mut differences = Vec::new();
    let compare = async |script: &[(&str, String, Option<String>)],
                         bao_token: &str,
                         fake_token: &str,
                         differences: &mut Vec<String>| {
        for (method, api, body) in script {
            let mut answers = Vec::new();
            for (address, token) in [
                (bao.address().to_owned(), bao_token),
                (fake.address(), fake_token),
            ] {
                let mut req = http
                    .request(
                        reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                        format!("{address}/v1/{api}"),
                    )
                    .header("X-Vault-Token", token);
                if let Some(b) = body {
                    req = req.body(b.clone());
                }
                let resp = req.send().await.expect("request");
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await.expect("body");
                let mut json: serde_json::Value =
                    serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                comparable(&mut json);
                answers.push((status, json));
            }
            if answers[0] != answers[1] {
                differences.push(format!(
                    "{method} {api}\n  openbao: {} {}\n  fake:    {} {}",
                    answers[0].0, answers[0].1, answers[1].0, answers[1].1
                ));
            }
        }
    };
    compare(&script, bao.token(), ROOT, &mut differences).await;

    // A policy that denies a path (a token of its own on OpenBao, `deny_path` on the fake),
    // and a token the server does not know.
    bao.write_policy(
        "compare",
        "path \"secret/*\" { capabilities = [\"create\", \"read\", \"update\", \"list\"] }\n\
         path \"secret/data/denied/*\" { capabilities = [\"deny\"] }\n",
    )
    .await;
    let limited = bao.policy_token("compare").await;
    fake.deny_path("secret/data/denied/");
    let denied: Vec<(&str, String, Option<String>)> = vec![
        ("GET", "secret/data/denied/x".into(), None),
        (
            "POST",
            "secret/data/denied/x".into(),
            Some(r#"{"data":{"v":"1"},"options":{"cas":0}}"#.into()),
        ),
        ("GET", "secret/data/a/b".into(), None),
    ];
    compare(&denied, &limited, ROOT, &mut differences).await;
    let unknown: Vec<(&str, String, Option<String>)> = vec![
        ("GET", "secret/data/a/b".into(), None),
        ("GET", "auth/token/lookup-self".into(), None),
        ("GET", "sys/health".into(), None),
    ];
    compare(&unknown, "not-a-token", "not-a-token", &mut differences).await;

    // Sealed (`sys/seal` on OpenBao, the `sealed` fault on the fake): every request, health
    // included, whatever the token.
    bao.seal().await;
    fake.faults(Faults {
        sealed: true,
        ..Faults::default()
    });
    let sealed: Vec<(&str, String, Option<String>)> = vec![
        ("GET", "secret/data/a/b".into(), None),
        (
            "POST",
            "secret/data/a/b".into(),
            Some(r#"{"data":{"v":"9"},"options":{"cas":3}}"#.into()),
        ),
        ("GET", "secret/metadata/a/b".into(), None),
        ("GET", "auth/token/lookup-self".into(), None),
        ("GET", "sys/health".into(), None),
    ];
    compare(&sealed, bao.token(), ROOT, &mut differences).await;
    compare(&sealed[..1], "not-a-token", "not-a-token", &mut differences).await;
    assert!(
        differences.is_empty(),
        "the fake answers differently:\n{}",
        differences.join("\n")
    );
}

/// Drops what differs between any two servers (times, ids) and what OpenBao adds to
/// Vault's metadata.
fn comparable(json: &mut serde_json::Value) {
    match json {
        serde_json::Value::Object(map) => {
            for key in [
                "request_id",
                "created_time",
                "updated_time",
                "current_metadata_version",
                "metadata_cas_required",
                // Health: the server's clock, build and cluster identity.
                "server_time_utc",
                "version",
                "cluster_name",
                "cluster_id",
            ] {
                map.remove(key);
            }
            map.values_mut().for_each(comparable);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(comparable),
        _ => {}
    }
}
