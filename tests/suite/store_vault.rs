//! The Vault store against the in-repo fake Vault (`rotor::store::vault_fake`: no Vault
//! server can run on these machines), and the same core cases against a real Vault when
//! `VAULT_ADDR` and `VAULT_TOKEN` are set (otherwise the `real_vault::*` tests print
//! SKIPPED and pass: CI has no Vault).
//!
//! Core cases: the `Store` contract shared with `tests/suite/store.rs`
//! (`tests/common/store_contract.rs`: round trip across a reopen, fingerprints, idempotent
//! `put_version` and conflicts, labels and timestamps, rollback, invalid commits, history,
//! listing), where a reopen is a new client on the same Vault and prefix, plus a stale
//! writer fenced by check-and-set. Then what only a remote store has, against the fake:
//! the KV layout, retried 500s and timeouts, a sealed Vault, forced CAS conflicts, a
//! policy denial, Kubernetes login and token renewal, no value in any error, `Debug`
//! output or log line, and the rotation tree and token renewer over this store.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::common::embedded::{FAST_API_KEYS, admin, tree_config};
use crate::common::store_contract::{self as contract, at, commit, labels_of, secret, value};
use crate::common::wait::eventually;
use chrono::Utc;
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
    fake: Option<Arc<VaultFake>>,
    _dir: Arc<tempfile::TempDir>,
}

impl Env {
    /// A second store on the same Vault and prefix (another replica).
    async fn replica(&self) -> VaultStore {
        VaultStore::open(self.settings.clone())
            .await
            .expect("open replica")
    }
    fn fake(&self) -> &VaultFake {
        self.fake.as_deref().expect("fake")
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
        mount: "secret".into(),
        path_prefix: prefix.into(),
        namespace: None,
        ca_file: None,
        master_key_file: dir.join("master.key"),
        timeout: Duration::from_millis(300),
        max_attempts: 4,
        retry_backoff: Duration::from_millis(10),
        auth: VaultAuth::Token { token_file },
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
        fake: Some(fake),
        _dir: Arc::new(dir),
    }
}

/// A store on the real Vault named by `VAULT_ADDR`/`VAULT_TOKEN`, under a fresh prefix.
async fn real_env() -> Option<Env> {
    let addr = std::env::var("VAULT_ADDR").ok()?;
    let token = std::env::var("VAULT_TOKEN").ok()?;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token).expect("write token");
    let prefix = format!("rotor-test/{}", rand_suffix());
    let mut s = settings(addr, token_file, dir.path(), &prefix);
    s.mount = std::env::var("VAULT_MOUNT").unwrap_or_else(|_| "secret".into());
    s.namespace = std::env::var("VAULT_NAMESPACE").ok();
    s.ca_file = std::env::var("VAULT_CACERT").ok().map(PathBuf::from);
    s.timeout = Duration::from_secs(10);
    let store = VaultStore::open(s.clone()).await.expect("open real Vault");
    Some(Env {
        store,
        settings: s,
        fake: None,
        _dir: Arc::new(dir),
    })
}

fn rand_suffix() -> String {
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    format!("{}-{nanos}", std::process::id())
}

// ---------------------------------------------------------------------------------------
// Core cases: the shared `Store` contract and fencing, run against the fake and against a
// real Vault.

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

/// Two tests per case, `fake::NAME` and `real_vault::NAME`, each on a fresh store.
macro_rules! core_suite {
    ($($name:ident: |$env:ident| $case:expr),* $(,)?) => {
        mod fake {
            use super::*;
            $(#[tokio::test] async fn $name() {
                let $env = &mut fake_env().await;
                $case.await;
            })*
        }
        mod real_vault {
            use super::*;
            $(#[tokio::test] async fn $name() {
                match real_env().await {
                    Some(mut found) => {
                        let $env = &mut found;
                        $case.await
                    }
                    None => println!("SKIPPED: set VAULT_ADDR and VAULT_TOKEN to run against a real Vault"),
                }
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
    // `super::`: the closure is expanded inside `fake` and `real_vault`, where the test
    // itself has this name.
    stale_writer_is_fenced: |env| super::stale_writer_is_fenced(env),
);

// ---------------------------------------------------------------------------------------
// The fake's own behaviour and faults.

#[tokio::test]
async fn values_land_as_kv_versions_with_labels_mirrored_in_custom_metadata() {
    let env = fake_env().await;
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
    let fake = env.fake();
    assert_eq!(
        fake.current_version("secret", "production/tenants/tenant1/db"),
        2
    );
    let custom = fake.custom_metadata("secret", "production/tenants/tenant1/db");
    assert_eq!(custom.get("rotor_current").map(String::as_str), Some("2"));
    assert_eq!(custom.get("rotor_previous").map(String::as_str), Some("1"));
    assert_eq!(
        fake.current_version("secret", "production/tenants/tenant1/db/_rotor"),
        3
    );
}

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
        msg.contains("secret/data/production/tenants/t/k/_rotor"),
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
    env.fake().deny_path("secret/data/production/tenants/t/k");
    let err = env
        .store
        .put_version(&secret("t", "k"), 1, RotationId(1), &value("v"), at(0))
        .await
        .expect_err("denied");
    assert!(matches!(err, StoreError::PermissionDenied { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "permission denied by Vault policy for secret/data/production/tenants/t/k/_rotor"
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

/// The whole rotation tree over the Vault store against the fake, in real time: the
/// initial version at start, then an API-triggered rotation promoted to `current`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_tree_rotates_over_the_vault_store() {
    use rotor::actors::tree::{self, TreeOptions};
    use rotor::api::Admin as _;
    use rotor::clock::Clock;
    use rotor::domain::SecretRef;
    use rotor::metrics::Metrics;
    use rotor::target::Target;
    use rotor::target::none::NoneTarget;

    let env = fake_env().await;
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
    admin.rotate(s.clone()).await.expect("rotation accepted");
    eventually(
        Duration::from_secs(20),
        "the rotation to finish",
        async || labels_of(&*store, &s).await.contains(&(2, Label::Current)),
    )
    .await;
    let labels = labels_of(&*store, &s).await;
    assert_eq!(labels, [(1, Label::Previous), (2, Label::Current)]);
    let fake = env.fake();
    assert_eq!(
        fake.current_version("secret", "production/tenants/tenant1/api_keys"),
        2
    );
    let custom = fake.custom_metadata("secret", "production/tenants/tenant1/api_keys");
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
