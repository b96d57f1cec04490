//! Fault matrix rows for targets that forget their state: "Redis down and restarted without
//! an aclfile" and a PostgreSQL "restore from backup" that puts an older password back. With
//! `verify_interval`, rotor checks the current version against the target while no rotation
//! is in flight (and right after a step the target refused with an authentication error),
//! and applies it again when the target lost it: same version, a `target_reapplied`
//! notice, `rotor_target_reapplied_total`. An unreachable target is a verify error, never a
//! re-apply. Without the key rotor never verifies. A restore can also bring back versions
//! rotor had revoked (an older aclfile, a role able to log in again): a verify revokes them
//! again, all of them after a re-apply, the last expired one when the current version holds.
//!
//! The real-server tests run the whole tree on real time and print the recovery time: from
//! the fault to the current credential logging in again. The behaviour without the key, the
//! bookkeeping of a re-apply, and a rotation waiting for a verify in flight run in-process
//! on paused time with a target that forgets on demand.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeZone as _, Utc};
use rotor::actors::tree::{self, Tree, TreeOptions};
use rotor::api::Admin;
use rotor::clock::Clock;
use rotor::config::Config;
use rotor::domain::{Label, SecretRef, VersionNo};
use rotor::generator::SecretValue;
use rotor::metrics::{KindLabels, Metrics, RotationLabels, VerifyLabels};
use rotor::store::embedded::EmbeddedStore;
use rotor::store::{ReadValue as _, Store};
use rotor::target::postgres::{Credentials, PostgresTarget, Strategy};
use rotor::target::{Target, TargetError, Verified};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_postgres::NoTls;

use crate::common::embedded;
use crate::common::pg_consumer::as_user;
use crate::common::postgres::{Roles, setup};
use crate::common::receiver::Receiver;
use crate::common::redis_server::RedisServer;
use crate::common::targets::{random_name, service_or_skip};
use crate::common::wait::eventually;

/// Generous: the machine is shared by several builds.
const LIMIT: Duration = Duration::from_secs(60);

fn secret(key: &str) -> SecretRef {
    SecretRef::new("tenant1", key).unwrap()
}

fn verifications(m: &Metrics, policy: &str, result: &str) -> u64 {
    m.target_verifications_total
        .get_or_create(&VerifyLabels {
            policy: policy.to_owned(),
            result: result.to_owned(),
        })
        .get()
}

fn revoked_again(m: &Metrics, policy: &str, outcome: &str) -> u64 {
    m.target_revoked_again_total
        .get_or_create(&RotationLabels {
            policy: policy.to_owned(),
            outcome: outcome.to_owned(),
        })
        .get()
}

fn reapplied(m: &Metrics, policy: &str, outcome: &str) -> u64 {
    m.target_reapplied_total
        .get_or_create(&RotationLabels {
            policy: policy.to_owned(),
            outcome: outcome.to_owned(),
        })
        .get()
}

/// Lifecycle events of `kind` the notifier received (and logged or delivered).
fn events(m: &Metrics, kind: &str) -> u64 {
    m.notifications_total
        .get_or_create(&KindLabels {
            kind: kind.to_owned(),
        })
        .get()
}

async fn labels(store: &EmbeddedStore, s: &SecretRef) -> Vec<(VersionNo, Vec<Label>)> {
    store
        .versions(s)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.version, v.labels))
        .collect()
}

/// Waits until `version` is current, every older version has expired and the secret is
/// idle (labels settle before the expiry's revoke step is done).
async fn settled_at(tree: &Tree, store: &EmbeddedStore, s: &SecretRef, version: VersionNo) {
    eventually(
        LIMIT,
        format!("v{version} current, older expired"),
        async || {
            let idle = tree
                .context
                .board
                .get(s)
                .is_some_and(|st| st.phase == "idle" && st.current == Some(version));
            let l = labels(store, s).await;
            idle && l.len() == version as usize
                && l.iter()
                    .all(|(v, labels)| (*v == version) == (labels == &vec![Label::Current]))
                && l.iter()
                    .all(|(v, labels)| *v == version || labels.is_empty())
        },
    )
    .await;
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

async fn start_tree(dir: &Path, cfg: &Config, metrics: &Metrics) -> (Tree, Arc<EmbeddedStore>) {
    let store = embedded::open_store(dir);
    let options = TreeOptions {
        namespace: format!("{}/", dir.display()),
        ..TreeOptions::default()
    };
    let tree = tree::start(cfg, store.clone(), metrics.clone(), options)
        .await
        .unwrap();
    (tree, store)
}

// ---- Redis -------------------------------------------------------------------------------

/// `AUTH user password` against `addr`: whether Redis accepted it.
async fn redis_auth(addr: &str, user: &str, password: &str) -> bool {
    redis_auth_reply(addr, user, password).await == "+OK"
}

/// `AUTH user password` against `addr`: Redis's reply line (empty when unreachable).
async fn redis_auth_reply(addr: &str, user: &str, password: &str) -> String {
    let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
    else {
        return String::new();
    };
    let mut stream = BufReader::new(stream);
    let cmd = format!(
        "*3\r\n$4\r\nAUTH\r\n${}\r\n{user}\r\n${}\r\n{password}\r\n",
        user.len(),
        password.len()
    );
    if stream.get_mut().write_all(cmd.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut line = String::new();
    let _ = stream.read_line(&mut line).await;
    line.trim_end().to_owned()
}

/// Whether Redis refuses `password` for `user` as a wrong password (`WRONGPASS`).
async fn redis_wrongpass(addr: &str, user: &str, password: &str) -> bool {
    redis_auth_reply(addr, user, password)
        .await
        .starts_with("-WRONGPASS")
}

/// How Redis names a password in an aclfile: lowercase hex SHA-256.
fn acl_hash(password: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(password.as_bytes()))
}

/// A private `redis-server` (its admin URL in a file rotor reads at every operation) and a
/// tree rotating one user on it with `verify_interval = "1s"`, notifying `notify_url`.
/// `None` when the test is skipped (no `redis-server` outside CI).
struct RedisTree {
    server: RedisServer,
    dir: tempfile::TempDir,
    url_file: std::path::PathBuf,
    user: String,
    metrics: Metrics,
    tree: Tree,
    store: Arc<EmbeddedStore>,
}

impl RedisTree {
    async fn start(notify_url: &str) -> Option<RedisTree> {
        let server = RedisServer::start()?;
        let dir = tempfile::tempdir().unwrap();
        let url_file = dir.path().join("redis-admin-url");
        std::fs::write(&url_file, server.url()).unwrap();
        let user = random_name("rotor_f");
        let cfg = redis_config(dir.path(), &user, notify_url, "verify_interval = \"1s\"");
        let metrics = Metrics::new();
        let (tree, store) = start_tree(dir.path(), &cfg, &metrics).await;
        Some(RedisTree {
            server,
            dir,
            url_file,
            user,
            metrics,
            tree,
            store,
        })
    }
}

fn redis_config(dir: &Path, user: &str, notify_url: &str, verify: &str) -> Config {
    embedded::tree_config(
        dir,
        &format!(
            r#"
[policies.cache]
manual = true
grace = "1s"
generator = {{ type = "password", length = 24 }}
max_attempts = 1
{verify}

[[secrets]]
tenant = "tenant1"
key = "cache_credentials"
policy = "cache"
target = {{ type = "redis", admin_url_file = "{dir}/redis-admin-url", user = "{user}" }}

[[notify]]
type = "slack"
url = "{notify_url}"
events = ["target_reapplied"]
"#,
            dir = dir.display(),
        ),
    )
}

/// Redis killed and started again without the users it had (its aclfile emptied, as a
/// server whose aclfile was lost): the user is gone, so the current version is refused.
/// rotor re-applies it within a verify interval; the version number stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_its_aclfile_gets_the_current_version_back() {
    let receiver = Receiver::start(vec![200]).await;
    let Some(RedisTree {
        mut server,
        // Kept alive: the store and the admin URL file live in it.
        dir: _dir,
        url_file,
        user,
        metrics,
        mut tree,
        store,
    }) = RedisTree::start(&format!("http://{}/slack", receiver.addr)).await
    else {
        return;
    };
    let admin = embedded::admin(&tree);
    let s = secret("cache_credentials");
    settled_at(&tree, &store, &s, 1).await;
    admin.rotate(s.clone()).await.unwrap();
    settled_at(&tree, &store, &s, 2).await;
    let v2 = Credentials::parse(&store.read_value(&s, 2).await.unwrap()).unwrap();
    assert!(redis_auth(&server.addr(), &user, &v2.password).await);

    // The fault: the server comes back without the user (and on another port, which the
    // operator's admin URL then names).
    let fault = Instant::now();
    server.restart_with_aclfile("");
    let addr = server.addr();
    std::fs::write(&url_file, server.url()).unwrap();
    assert!(
        !redis_auth(&addr, &user, &v2.password).await,
        "the restarted server forgot the user"
    );

    eventually(LIMIT, "the current version logs in again", async || {
        redis_auth(&addr, &user, &v2.password).await
    })
    .await;
    let recovery = fault.elapsed();
    println!("recovery (redis restarted without its aclfile): {recovery:?}");

    eventually(LIMIT, "the re-apply counted and notified", async || {
        reapplied(&metrics, "cache", "succeeded") >= 1
            && events(&metrics, "target_reapplied") >= 1
            && receiver.hits() >= 1
    })
    .await;
    assert_eq!(reapplied(&metrics, "cache", "failed"), 0);
    assert!(verifications(&metrics, "cache", "lost") >= 1);
    assert_eq!(
        labels(&store, &s).await,
        vec![(1, vec![]), (2, vec![Label::Current])],
        "no new version"
    );
    tree.shutdown(Duration::from_secs(5)).await;
}

/// Redis restarted with an old aclfile, as a restore from a backup taken during v2's grace
/// would leave it: the user holds v1's and v2's passwords, not v3's. rotor re-applies v3
/// and revokes v2 and v1 again, so what rotor expired stays invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_with_an_old_aclfile_gets_old_passwords_revoked_again() {
    let receiver = Receiver::start(vec![200]).await;
    let Some(RedisTree {
        mut server,
        // Kept alive: the store and the admin URL file live in it.
        dir: _dir,
        url_file,
        user,
        metrics,
        mut tree,
        store,
    }) = RedisTree::start(&format!("http://{}/slack", receiver.addr)).await
    else {
        return;
    };
    let admin = embedded::admin(&tree);
    let s = secret("cache_credentials");
    settled_at(&tree, &store, &s, 1).await;
    for v in 2..=3 {
        admin.rotate(s.clone()).await.unwrap();
        settled_at(&tree, &store, &s, v).await;
    }
    let mut creds = Vec::new();
    for v in 1..=3 {
        creds.push(Credentials::parse(&store.read_value(&s, v).await.unwrap()).unwrap());
    }
    let [v1, v2, v3] = &creds[..] else {
        unreachable!()
    };
    let addr = server.addr();
    eventually(LIMIT, "v1 and v2 expired, v3 works", async || {
        redis_wrongpass(&addr, &user, &v1.password).await
            && redis_wrongpass(&addr, &user, &v2.password).await
            && redis_auth(&addr, &user, &v3.password).await
    })
    .await;

    // The fault: the old aclfile comes back with the restart.
    let fault = Instant::now();
    server.restart_with_aclfile(&format!(
        "user {user} on #{} #{}\n",
        acl_hash(&v1.password),
        acl_hash(&v2.password)
    ));
    let addr = server.addr();
    // Before rotor is told the new port, so no verify can have undone it yet.
    assert!(redis_auth(&addr, &user, &v1.password).await, "v1 is back");
    assert!(redis_auth(&addr, &user, &v2.password).await, "v2 is back");
    assert!(
        redis_wrongpass(&addr, &user, &v3.password).await,
        "v3 is lost"
    );
    std::fs::write(&url_file, server.url()).unwrap();

    eventually(
        LIMIT,
        "v3 logs in again, v1 and v2 are refused again",
        async || {
            redis_auth(&addr, &user, &v3.password).await
                && redis_wrongpass(&addr, &user, &v1.password).await
                && redis_wrongpass(&addr, &user, &v2.password).await
        },
    )
    .await;
    let recovery = fault.elapsed();
    println!("recovery (redis restarted with an old aclfile): {recovery:?}");

    assert!(reapplied(&metrics, "cache", "succeeded") >= 1);
    eventually(LIMIT, "the revokes counted", async || {
        revoked_again(&metrics, "cache", "succeeded") >= 2
    })
    .await;
    // No count of failed revokes is asserted: a verify that held just before the server
    // was stopped for the restart may revoke into the stopped server, which rotor rightly
    // counts as failed and makes up for at the next verify (what the checks above prove).
    assert_eq!(
        labels(&store, &s).await,
        vec![(1, vec![]), (2, vec![]), (3, vec![Label::Current])],
        "no new version"
    );
    // The revokes were saved: a crash now does not bring v1 and v2 back.
    let acl = std::fs::read_to_string(server.aclfile()).unwrap();
    assert!(acl.contains(&acl_hash(&v3.password)), "v3 saved: {acl}");
    for old in [v1, v2] {
        assert!(
            !acl.contains(&acl_hash(&old.password)),
            "an old hash saved: {acl}"
        );
    }
    tree.shutdown(Duration::from_secs(5)).await;
}

/// The target cannot be reached during a verify: counted and notified as a verify error,
/// nothing is re-applied, the actor keeps running and verifies again once it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_is_a_verify_error_and_nothing_is_reapplied() {
    // Nothing listens at the notification URL; only a re-apply would be sent anyway.
    let Some(RedisTree {
        server,
        // Kept alive: the store and the admin URL file live in it.
        dir: _dir,
        url_file,
        user: _,
        metrics,
        mut tree,
        store,
    }) = RedisTree::start(&format!("http://127.0.0.1:{}/slack", free_port())).await
    else {
        return;
    };
    let s = secret("cache_credentials");
    settled_at(&tree, &store, &s, 1).await;
    eventually(LIMIT, "a first verify holds", async || {
        verifications(&metrics, "cache", "holds") >= 1
    })
    .await;

    // The target is unreachable: the admin URL names a port nothing listens on.
    std::fs::write(&url_file, format!("redis://127.0.0.1:{}", free_port())).unwrap();
    eventually(LIMIT, "verify errors counted and notified", async || {
        verifications(&metrics, "cache", "error") >= 2
            && events(&metrics, "target_verify_failed") >= 1
    })
    .await;
    assert_eq!(verifications(&metrics, "cache", "lost"), 0);
    assert_eq!(reapplied(&metrics, "cache", "succeeded"), 0);
    assert_eq!(reapplied(&metrics, "cache", "failed"), 0);
    assert_eq!(
        events(&metrics, "target_verify_failed"),
        1,
        "notified once per run of failures, not at every verify"
    );

    // Still up: reachable again, the next verify holds.
    let holds = verifications(&metrics, "cache", "holds");
    std::fs::write(&url_file, server.url()).unwrap();
    eventually(LIMIT, "verifies again once reachable", async || {
        verifications(&metrics, "cache", "holds") > holds
    })
    .await;
    assert_eq!(reapplied(&metrics, "cache", "succeeded"), 0);
    assert_eq!(
        tree.context.board.get(&s).map(|st| (st.phase, st.current)),
        Some(("idle", Some(1)))
    );
    tree.shutdown(Duration::from_secs(5)).await;
}

// ---- PostgreSQL --------------------------------------------------------------------------

const PG_ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5";

/// Two NOLOGIN roles in `rotor_managed` (scram-sha-256 required); `None` to skip.
async fn pg_roles() -> Option<Roles> {
    if !service_or_skip("PostgreSQL", setup()) {
        return None;
    }
    let base = random_name("rotor_f");
    let names: Vec<String> = (0..2).map(|i| format!("{base}_{i}")).collect();
    for r in &names {
        pg_exec(&format!(
            "CREATE ROLE \"{r}\" NOLOGIN IN ROLE rotor_managed"
        ))
        .await;
    }
    Some(Roles(names))
}

async fn pg_exec(sql: &str) {
    let (client, conn) = tokio_postgres::connect(PG_ADMIN, NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute(sql).await.unwrap();
}

async fn pg_login(user: &str, password: &str) -> bool {
    let config = as_user(user, password);
    match config.connect(NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client.simple_query("SELECT 1").await.is_ok()
        }
        Err(_) => false,
    }
}

/// Logs in as `user`: `Ok` when it works, else the SQLSTATE of the refusal (or the error).
async fn pg_login_code(user: &str, password: &str) -> Result<(), String> {
    let config = as_user(user, password);
    match config.connect(NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client
                .simple_query("SELECT 1")
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e
            .as_db_error()
            .map_or_else(|| e.to_string(), |db| db.code().code().to_owned())),
    }
}

fn pg_config(dir: &Path, roles: &Roles, verify_interval: &str) -> Config {
    std::fs::write(
        dir.join("pg-admin-url"),
        "postgres://postgres@127.0.0.1:5432/test",
    )
    .unwrap();
    embedded::tree_config(
        dir,
        &format!(
            r#"
[policies.db]
manual = true
grace = "1s"
generator = {{ type = "password", length = 24 }}
max_attempts = 1
verify_interval = "{verify_interval}"

[[secrets]]
tenant = "tenant1"
key = "database_credentials"
policy = "db"
target = {{ type = "postgres", admin_url_file = "{dir}/pg-admin-url", strategy = "alternating", roles = ["{a}", "{b}"] }}
"#,
            dir = dir.display(),
            a = roles.0[0],
            b = roles.0[1],
        ),
    )
}

async fn pg_creds(store: &EmbeddedStore, s: &SecretRef, v: VersionNo) -> Credentials {
    Credentials::parse(&store.read_value(s, v).await.unwrap()).unwrap()
}

/// A restore from backup: the current role's password is set back to the one it had
/// before (v1's, two rotations ago on the alternating pair). rotor re-applies v3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restored_from_a_backup_gets_the_current_version_back() {
    let Some(roles) = pg_roles().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = pg_config(dir.path(), &roles, "1s");
    let metrics = Metrics::new();
    let (mut tree, store) = start_tree(dir.path(), &cfg, &metrics).await;
    let admin = embedded::admin(&tree);
    let s = secret("database_credentials");
    settled_at(&tree, &store, &s, 1).await;
    for v in 2..=3 {
        admin.rotate(s.clone()).await.unwrap();
        settled_at(&tree, &store, &s, v).await;
    }
    let v1 = pg_creds(&store, &s, 1).await;
    let v3 = pg_creds(&store, &s, 3).await;
    assert_eq!(v1.username, v3.username, "v1 and v3 share a role");
    assert!(pg_login(&v3.username, &v3.password).await);

    let fault = Instant::now();
    let verifier = postgres_protocol::password::scram_sha_256(v1.password.as_bytes());
    pg_exec(&format!(
        "ALTER ROLE \"{}\" WITH LOGIN PASSWORD '{verifier}'",
        v3.username
    ))
    .await;
    eventually(LIMIT, "the current version logs in again", async || {
        pg_login(&v3.username, &v3.password).await
    })
    .await;
    let recovery = fault.elapsed();
    println!("recovery (postgres restored from a backup): {recovery:?}");

    eventually(LIMIT, "the re-apply counted and notified", async || {
        reapplied(&metrics, "db", "succeeded") >= 1 && events(&metrics, "target_reapplied") >= 1
    })
    .await;
    assert!(
        !pg_login(&v1.username, &v1.password).await,
        "v1 stays refused"
    );
    assert_eq!(
        labels(&store, &s).await,
        vec![(1, vec![]), (2, vec![]), (3, vec![Label::Current])],
        "no new version"
    );
    tree.shutdown(Duration::from_secs(5)).await;
}

/// A restore that re-enables the other `alternating` role: after v1 expired (its role
/// NOLOGIN), the role logs in again with v1's password while v2 still works. The verify
/// finds v2 holding and revokes v1 again: its role is NOLOGIN once more (28000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_old_role_restored_to_login_is_disabled_again() {
    let Some(roles) = pg_roles().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = pg_config(dir.path(), &roles, "1s");
    let metrics = Metrics::new();
    let (mut tree, store) = start_tree(dir.path(), &cfg, &metrics).await;
    let admin = embedded::admin(&tree);
    let s = secret("database_credentials");
    settled_at(&tree, &store, &s, 1).await;
    admin.rotate(s.clone()).await.unwrap();
    settled_at(&tree, &store, &s, 2).await;
    let v1 = pg_creds(&store, &s, 1).await;
    let v2 = pg_creds(&store, &s, 2).await;
    assert_ne!(v1.username, v2.username, "v1 and v2 on the two roles");
    eventually(LIMIT, "v1 expired: its role cannot log in", async || {
        pg_login_code(&v1.username, &v1.password).await == Err("28000".into())
    })
    .await;

    // rotor cannot reach the server while the restore happens (verifies fail), so the
    // check that the fault took hold races no verify.
    let url = dir.path().join("pg-admin-url");
    std::fs::write(
        &url,
        format!("postgres://postgres@127.0.0.1:{}/test", free_port()),
    )
    .unwrap();
    let verifier = postgres_protocol::password::scram_sha_256(v1.password.as_bytes());
    pg_exec(&format!(
        "ALTER ROLE \"{}\" WITH LOGIN PASSWORD '{verifier}'",
        v1.username
    ))
    .await;
    assert_eq!(
        pg_login_code(&v1.username, &v1.password).await,
        Ok(()),
        "the restore let v1 log in"
    );
    let fault = Instant::now();
    std::fs::write(&url, "postgres://postgres@127.0.0.1:5432/test").unwrap();

    eventually(LIMIT, "v1 refused again (28000), v2 works", async || {
        pg_login_code(&v1.username, &v1.password).await == Err("28000".into())
            && pg_login_code(&v2.username, &v2.password).await == Ok(())
    })
    .await;
    let recovery = fault.elapsed();
    println!("recovery (postgres old role restored to LOGIN): {recovery:?}");

    eventually(LIMIT, "the revoke counted", async || {
        revoked_again(&metrics, "db", "succeeded") >= 1
    })
    .await;
    assert_eq!(
        reapplied(&metrics, "db", "succeeded"),
        0,
        "v2 held: nothing re-applied"
    );
    assert_eq!(
        labels(&store, &s).await,
        vec![(1, vec![]), (2, vec![Label::Current])],
        "no new version"
    );
    tree.shutdown(Duration::from_secs(5)).await;
}

/// The real `postgres` target, with a restore landing between a rotation's apply and its
/// test: both roles get an old password back, so the test step is refused with 28P01.
struct RestoredMidRotation {
    inner: PostgresTarget,
    /// SQL run once, right after the next apply.
    restore: std::sync::Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl Target for RestoredMidRotation {
    fn type_name(&self) -> &'static str {
        self.inner.type_name()
    }
    async fn shape_value(&self, v: VersionNo, g: SecretValue) -> Result<SecretValue, TargetError> {
        self.inner.shape_value(v, g).await
    }
    async fn apply(&self, v: VersionNo, value: &SecretValue) -> Result<(), TargetError> {
        self.inner.apply(v, value).await?;
        let restore = self.restore.lock().unwrap().take();
        if let Some(sql) = restore {
            pg_exec(&sql).await;
        }
        Ok(())
    }
    async fn test(&self, v: VersionNo, value: &SecretValue) -> Result<(), TargetError> {
        self.inner.test(v, value).await
    }
    async fn revoke(&self, v: VersionNo) -> Result<(), TargetError> {
        self.inner.revoke(v).await
    }
    async fn restore(&self, restore: VersionNo, revoke: VersionNo) -> Result<(), TargetError> {
        self.inner.restore(restore, revoke).await
    }
    async fn verify(&self, v: VersionNo, value: &SecretValue) -> Result<Verified, TargetError> {
        self.inner.verify(v, value).await
    }
}

/// A test step refused with 28P01 triggers a verify of the current version at once (the
/// interval is an hour and this secret's first periodic verify comes 936 s after start,
/// beyond every wait here, so only the refusal can have caused it), which finds it lost
/// and re-applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_refused_with_28p01_triggers_a_verify_and_a_reapply() {
    let Some(roles) = pg_roles().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = pg_config(dir.path(), &roles, "1h");
    let metrics = Metrics::new();
    let store = embedded::open_store(dir.path());
    let cached: Arc<dyn rotor::store::ReadValue> = store.clone();
    let target = Arc::new(RestoredMidRotation {
        inner: PostgresTarget::new(
            secret("database_credentials"),
            dir.path().join("pg-admin-url"),
            Strategy::Alternating,
            roles.0.clone(),
            cached,
        ),
        restore: std::sync::Mutex::new(None),
    });
    let options = TreeOptions {
        namespace: format!("{}/", dir.path().display()),
        target_override: Some(Arc::new({
            let target = target.clone();
            move |_: &SecretRef| target.clone() as Arc<dyn Target>
        })),
        ..TreeOptions::default()
    };
    let mut tree = tree::start(&cfg, store.clone(), metrics.clone(), options)
        .await
        .unwrap();
    let admin = embedded::admin(&tree);
    let s = secret("database_credentials");
    settled_at(&tree, &store, &s, 1).await;
    let v1 = pg_creds(&store, &s, 1).await;

    let old = postgres_protocol::password::scram_sha_256(b"restored-from-backup");
    *target.restore.lock().unwrap() = Some(format!(
        "ALTER ROLE \"{a}\" WITH LOGIN PASSWORD '{old}'; ALTER ROLE \"{b}\" WITH LOGIN PASSWORD '{old}';",
        a = roles.0[0],
        b = roles.0[1],
    ));
    let fault = Instant::now();
    admin.rotate(s.clone()).await.unwrap();
    eventually(LIMIT, "the current version logs in again", async || {
        reapplied(&metrics, "db", "succeeded") >= 1 && pg_login(&v1.username, &v1.password).await
    })
    .await;
    println!(
        "recovery (postgres restored during a rotation, 28P01 at test): {:?}",
        fault.elapsed()
    );
    assert!(verifications(&metrics, "db", "lost") >= 1);
    assert_eq!(
        tree.context.board.get(&s).map(|st| (st.phase, st.current)),
        Some(("stuck", Some(1))),
        "the attempt failed (one attempt allowed) and v1 stayed current"
    );
    tree.shutdown(Duration::from_secs(5)).await;
}

// ---- in-process, paused time -------------------------------------------------------------

/// A target that forgets on demand (`holds` set to false): it holds the versions applied
/// to it until then. It records the versions applied, in order, and whether two of its
/// operations ever overlapped; a verify can be held at `gate` until a permit is added.
struct Forgetful {
    holds: AtomicBool,
    applies: AtomicUsize,
    applied: std::sync::Mutex<Vec<VersionNo>>,
    /// The versions revoked, in order.
    revoked: std::sync::Mutex<Vec<VersionNo>>,
    verifies: AtomicUsize,
    /// Operations in progress.
    busy: AtomicUsize,
    overlapped: AtomicBool,
    gate: Option<tokio::sync::Semaphore>,
}

impl Forgetful {
    fn new(gated: bool) -> Forgetful {
        Forgetful {
            holds: AtomicBool::new(false),
            applies: AtomicUsize::new(0),
            applied: std::sync::Mutex::new(Vec::new()),
            revoked: std::sync::Mutex::new(Vec::new()),
            verifies: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            overlapped: AtomicBool::new(false),
            gate: gated.then(|| tokio::sync::Semaphore::new(0)),
        }
    }

    fn enter(&self) -> Busy<'_> {
        if self.busy.fetch_add(1, Ordering::SeqCst) > 0 {
            self.overlapped.store(true, Ordering::SeqCst);
        }
        Busy(self)
    }
}

/// One operation of a [`Forgetful`] in progress.
struct Busy<'a>(&'a Forgetful);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Target for Forgetful {
    fn type_name(&self) -> &'static str {
        "forgetful"
    }
    async fn apply(&self, v: VersionNo, _: &SecretValue) -> Result<(), TargetError> {
        let _busy = self.enter();
        self.applies.fetch_add(1, Ordering::SeqCst);
        self.applied.lock().unwrap().push(v);
        self.holds.store(true, Ordering::SeqCst);
        Ok(())
    }
    async fn test(&self, _: VersionNo, _: &SecretValue) -> Result<(), TargetError> {
        let _busy = self.enter();
        Ok(())
    }
    async fn revoke(&self, v: VersionNo) -> Result<(), TargetError> {
        let _busy = self.enter();
        self.revoked.lock().unwrap().push(v);
        Ok(())
    }
    async fn verify(&self, _: VersionNo, _: &SecretValue) -> Result<Verified, TargetError> {
        let _busy = self.enter();
        self.verifies.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        Ok(if self.holds.load(Ordering::SeqCst) {
            Verified::Holds
        } else {
            Verified::Lost
        })
    }
}

async fn forgetful_tree(
    verify: &str,
    gated: bool,
) -> (Tree, Arc<Forgetful>, Metrics, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = embedded::tree_config(
        dir.path(),
        &format!(
            r#"
[policies.keys]
manual = true
grace = "1h"
generator = {{ type = "token", bytes = 32 }}
{verify}

[[secrets]]
tenant = "tenant1"
key = "api_keys"
policy = "keys"
"#
        ),
    );
    let target = Arc::new(Forgetful::new(gated));
    let metrics = Metrics::new();
    let options = TreeOptions {
        clock: Clock::tokio(Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap()),
        namespace: format!("{}/", dir.path().display()),
        target_override: Some(Arc::new({
            let target = target.clone();
            move |_: &SecretRef| target.clone() as Arc<dyn Target>
        })),
        ..TreeOptions::default()
    };
    let tree = tree::start(
        &cfg,
        embedded::open_store(dir.path()),
        metrics.clone(),
        options,
    )
    .await
    .unwrap();
    (tree, target, metrics, dir)
}

/// Without `verify_interval` nothing is ever verified, however long the target has lost
/// the version; with it, the target is verified every interval, and a lost version is
/// applied again once, without a new version.
#[tokio::test(start_paused = true)]
async fn verify_is_off_without_verify_interval_and_periodic_with_it() {
    let s = secret("api_keys");
    for (verify, on) in [("", false), ("verify_interval = \"10m\"", true)] {
        let (mut tree, target, metrics, _dir) = forgetful_tree(verify, false).await;
        eventually(LIMIT, "v1 current", async || {
            tree.context
                .board
                .get(&s)
                .is_some_and(|st| st.current == Some(1) && st.phase == "idle")
        })
        .await;
        assert_eq!(target.applies.load(Ordering::SeqCst), 1);
        target.holds.store(false, Ordering::SeqCst);
        // A day of paused time: 144 intervals.
        tokio::time::sleep(Duration::from_secs(86_400)).await;
        let verifies = target.verifies.load(Ordering::SeqCst);
        if on {
            assert!(verifies >= 140, "verified every 10m: {verifies}");
            assert_eq!(target.applies.load(Ordering::SeqCst), 2, "re-applied once");
            assert_eq!(reapplied(&metrics, "keys", "succeeded"), 1);
            assert_eq!(verifications(&metrics, "keys", "lost"), 1);
            assert!(verifications(&metrics, "keys", "holds") >= 139);
        } else {
            assert_eq!(verifies, 0, "no verify without verify_interval");
            assert_eq!(
                target.applies.load(Ordering::SeqCst),
                1,
                "nothing re-applied"
            );
            assert!(
                !metrics
                    .encode()
                    .unwrap()
                    .contains("rotor_target_verifications_total{"),
                "no verification series without the key"
            );
        }
        assert_eq!(
            tree.context.board.get(&s).map(|st| st.current),
            Some(Some(1)),
            "no new version"
        );
        tree.shutdown(Duration::from_secs(5)).await;
    }
}

/// A rotation asked for while a verify holds the target waits for it: the re-apply of v1
/// comes first, then v2's apply, and no two target operations ever overlap.
#[tokio::test(start_paused = true)]
async fn a_rotation_waits_for_a_verify_in_flight() {
    let s = secret("api_keys");
    let (mut tree, target, metrics, _dir) = forgetful_tree("verify_interval = \"10m\"", true).await;
    let admin = embedded::admin(&tree);
    eventually(LIMIT, "v1 current", async || {
        tree.context
            .board
            .get(&s)
            .is_some_and(|st| st.current == Some(1) && st.phase == "idle")
    })
    .await;
    target.holds.store(false, Ordering::SeqCst);
    // The first verify comes at a per-secret offset within the interval: step paused time
    // a second at a time until it has started, so the gate holds it for less than the 60 s
    // step timeout that bounds it.
    let mut waited = 0;
    while waited <= 600 && target.verifies.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        waited += 1;
    }
    assert_eq!(
        target.verifies.load(Ordering::SeqCst),
        1,
        "a verify in flight"
    );
    // Spread, not all at start + interval: this secret's offset is about 209 s.
    assert!(
        waited < 590,
        "first verify {waited}s after start, not within the interval"
    );
    admin.rotate(s.clone()).await.unwrap();
    // Half the step timeout of paused time: the rotation has started but not applied.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        *target.applied.lock().unwrap(),
        vec![1],
        "v2 waits for the verify"
    );

    target.gate.as_ref().unwrap().add_permits(1_000);
    eventually(LIMIT, "v2 current", async || {
        tree.context
            .board
            .get(&s)
            .is_some_and(|st| st.current == Some(2))
    })
    .await;
    assert_eq!(
        *target.applied.lock().unwrap(),
        vec![1, 1, 2],
        "the re-apply of v1 before v2's apply"
    );
    assert!(
        !target.overlapped.load(Ordering::SeqCst),
        "operations overlapped"
    );
    assert_eq!(reapplied(&metrics, "keys", "succeeded"), 1);
    tree.shutdown(Duration::from_secs(5)).await;
}

/// What a verify revokes again, on paused time with 20 versions: after a re-apply the 16
/// newest old versions, newest first; at a verify that finds the current version holding,
/// only the one that expired last. Never the current version, never one in grace.
#[tokio::test(start_paused = true)]
async fn a_verify_revokes_old_versions_again_bounded_and_never_the_current() {
    let s = secret("api_keys");
    let (mut tree, target, metrics, _dir) =
        forgetful_tree("verify_interval = \"10m\"", false).await;
    let admin = embedded::admin(&tree);
    for v in 1..=20 {
        if v > 1 {
            admin.rotate(s.clone()).await.unwrap();
            eventually(LIMIT, format!("v{v} in grace"), async || {
                tree.context
                    .board
                    .get(&s)
                    .is_some_and(|st| st.current == Some(v) && st.phase == "grace")
            })
            .await;
            // Verifies during grace revoke nothing: a rotation is in flight.
            let before = target.revoked.lock().unwrap().len();
            tokio::time::sleep(Duration::from_secs(3_000)).await;
            assert_eq!(
                target.revoked.lock().unwrap().len(),
                before,
                "nothing revoked during v{v}'s grace"
            );
            // Grace is 1h: past it, v-1 expires.
            tokio::time::sleep(Duration::from_secs(700)).await;
        }
        eventually(LIMIT, format!("v{v} current, idle"), async || {
            tree.context
                .board
                .get(&s)
                .is_some_and(|st| st.current == Some(v) && st.phase == "idle")
        })
        .await;
    }
    // An idle interval: the current version holds, the one that expired last is revoked
    // again, and only it.
    target.revoked.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let revoked = std::mem::take(&mut *target.revoked.lock().unwrap());
    assert!(!revoked.is_empty(), "a verify that holds revokes again");
    assert!(
        revoked.iter().all(|v| *v == 19),
        "only v19, the last expired: {revoked:?}"
    );

    // The target loses its state: the re-apply, then the 16 newest old versions.
    let verifies = target.verifies.load(Ordering::SeqCst);
    target.holds.store(false, Ordering::SeqCst);
    // One verify interval of paused time.
    tokio::time::sleep(Duration::from_secs(600)).await;
    eventually(LIMIT, "re-applied", async || {
        reapplied(&metrics, "keys", "succeeded") == 1
    })
    .await;
    assert!(target.verifies.load(Ordering::SeqCst) > verifies);
    let revoked = std::mem::take(&mut *target.revoked.lock().unwrap());
    let newest: Vec<VersionNo> = (4..=19).rev().collect();
    // Verifies that found v20 holding since may have revoked v19 again after those.
    assert!(
        revoked.starts_with(&newest) && revoked[newest.len()..].iter().all(|v| *v == 19),
        "v19 down to v4 revoked again after the re-apply, and nothing older: {revoked:?}"
    );
    assert!(revoked_again(&metrics, "keys", "succeeded") >= 17);
    assert_eq!(revoked_again(&metrics, "keys", "failed"), 0);
    assert_eq!(
        tree.context.board.get(&s).map(|st| st.current),
        Some(Some(20)),
        "no new version"
    );
    tree.shutdown(Duration::from_secs(5)).await;
}
