//! The fault matrix (issue 12), one test per fault, each asserting the same five things:
//! no partial promotion (the store's current version and the system agree, and a version
//! is never promoted half-way), retries with backoff (failed attempts recorded with growing
//! spacing), the metric and event that show the fault, the service up and ready where it
//! can be, and recovery by itself once the fault clears, timed from the moment it clears.
//! `tests/suite/FAULTS.md` is the table of what each row showed. Targets and receivers are
//! real (the machine's PostgreSQL, private `redis-server`s, loopback HTTP); time is real
//! with one-second retry backoff except for the clock row, which runs on paused tokio time
//! with an injected clock that the test steps.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, TimeZone as _, Utc};
use rotor::actors::admin::ActorAdmin;
use rotor::actors::tree::{self, Tree, TreeOptions};
use rotor::api::Admin;
use rotor::clock::Clock;
use rotor::domain::{Label, Outcome, SecretRef};
use rotor::metrics::Metrics;
use rotor::store::embedded::EmbeddedStore;
use rotor::store::{ReadValue as _, Store};
use rotor::target::postgres::Credentials;
use tokio_postgres::NoTls;

use crate::common::embedded::{admin, open_store, tree_config};
use crate::common::faults::{HttpReceiver, RedisProcess, TcpProxy, TmpfsRotor, sha256_hex};
use crate::common::http::request;
use crate::common::kubelet;
use crate::common::postgres::{psql, setup};
use crate::common::rotor_bin::{self, RotorBin, free_port};
use crate::common::targets::{random_name, service_or_skip};
use crate::common::wait::{eventually, eventually_every};

/// Generous: the machine is shared by several builds and test runs at once.
const LIMIT: Duration = Duration::from_secs(60);

/// One tree in-process on real time, its store, and its directory.
struct Rig {
    tree: Tree,
    api: ActorAdmin,
    store: Arc<EmbeddedStore>,
    secret: SecretRef,
    dir: tempfile::TempDir,
}

/// Retries every second (doubling to two), twenty attempts before giving up, so a fault
/// the test clears within a few retries never exhausts the budget.
fn config_text(secret_extra: &str, rest: &str) -> String {
    format!(
        r#"
[runtime]
retry_backoff = "1s"
retry_backoff_max = "2s"

[policies.f]
manual = true
grace = "1h"
generator = {{ type = "password", length = 24 }}
max_attempts = 20

[[secrets]]
tenant = "tenant1"
key = "faulty"
policy = "f"
{secret_extra}
{rest}
"#
    )
}

impl Rig {
    /// A tree over a fresh store in `dir`, with `secret_extra` (a `target = ...` line) and
    /// `rest` (more tables) in the config; each step may take `step_timeout`.
    async fn start(
        dir: tempfile::TempDir,
        secret_extra: &str,
        rest: &str,
        step_timeout: Duration,
    ) -> Rig {
        let cfg = tree_config(dir.path(), &config_text(secret_extra, rest));
        let store = open_store(dir.path());
        let options = TreeOptions {
            namespace: format!("{}/", dir.path().display()),
            step_timeout,
            ..TreeOptions::default()
        };
        let tree = tree::start(&cfg, store.clone(), Metrics::new(), options)
            .await
            .expect("tree starts");
        let api = admin(&tree);
        Rig {
            tree,
            api,
            store,
            secret: SecretRef::new("tenant1", "faulty").unwrap(),
            dir,
        }
    }

    fn phase(&self) -> &'static str {
        self.tree
            .context
            .board
            .get(&self.secret)
            .map_or("none", |s| s.phase)
    }

    /// The versions labelled current.
    async fn current(&self) -> Vec<u64> {
        self.store
            .versions(&self.secret)
            .await
            .unwrap()
            .into_iter()
            .filter(|v| v.labels.contains(&Label::Current))
            .map(|v| v.version)
            .collect()
    }

    async fn wait_current(&self, version: u64) {
        eventually(LIMIT, format!("v{version} current"), async || {
            self.current().await == vec![version]
        })
        .await;
    }

    async fn metrics(&self) -> String {
        self.api.metrics_text().await.expect("metrics")
    }

    /// The value of one exact series in `/metrics`, 0 when absent.
    async fn series(&self, series: &str) -> f64 {
        value_of(&self.metrics().await, series)
    }

    /// Every rotation step error so far (all kinds), from `secret_rotation_errors_total`.
    async fn errors(&self) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with(r#"secret_rotation_errors_total{policy="f","#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until `n` step errors have been counted, the first of kind `kind`, noting
    /// when each appeared; checks the retries after the first are spaced by the backoff,
    /// that the service is still up and ready, and that current did not move from
    /// `current`.
    async fn failing(&self, n: usize, current: u64, kind: &str) {
        let mut seen: Vec<Instant> = Vec::new();
        eventually(LIMIT, format!("{n} step errors"), async || {
            let e = self.errors().await as usize;
            while seen.len() < e {
                seen.push(Instant::now());
            }
            assert!(self.api.ready(), "ready during the fault");
            assert_eq!(self.current().await, vec![current], "current moved");
            e >= n
        })
        .await;
        let text = self.metrics().await;
        assert!(
            value_of(
                &text,
                &format!(r#"secret_rotation_errors_total{{policy="f",error="{kind}"}}"#)
            ) >= 1.0,
            "{text}"
        );
        // The first failure's own clean-up (discarding the pending version) follows it at
        // once; from there on each retry waits the backoff, at least half of one second.
        for pair in seen.windows(2).skip(1) {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(450), "retries {gap:?} apart");
        }
    }

    /// After recovery: every attempt that failed during the fault is in the history as
    /// failed, and announced (`rotation_failed`).
    async fn failed_and_announced(&self) {
        let failed = self
            .store
            .history(&self.secret, 100)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.outcome == Outcome::Failed)
            .count();
        assert!(failed >= 1, "no failed attempt in the history");
        let events = self
            .series(r#"rotor_notifications_total{kind="rotation_failed"}"#)
            .await;
        assert_eq!(
            events, failed as f64,
            "one rotation_failed event per failed attempt"
        );
    }

    /// Time from now until a version newer than `old` is promoted (grace entered).
    async fn recovery(&self, old: u64) -> Duration {
        let cleared = Instant::now();
        eventually(LIMIT, "a promotion after the fault cleared", async || {
            self.phase() == "grace" && self.current().await.first().is_some_and(|c| *c > old)
        })
        .await;
        cleared.elapsed()
    }
}

/// The value of `series` (the whole label set) in a Prometheus text, 0 when absent.
fn value_of(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn report(row: &str, recovery: Duration) {
    eprintln!("FAULTS {row}: recovered in {} ms", recovery.as_millis());
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// Two NOLOGIN roles in `rotor_managed` and an admin role that may alter them, with
/// password `admin_pw`; all dropped at the end. `None` when PostgreSQL is not there.
struct PgRoles {
    roles: [String; 2],
    admin: String,
}

impl Drop for PgRoles {
    fn drop(&mut self) {
        for r in self.roles.iter().chain([&self.admin]) {
            psql(&format!("DROP ROLE IF EXISTS \"{r}\""));
        }
    }
}

const ADMIN_PW: &str = "fault-admin-pw-1";

fn pg_roles() -> Option<PgRoles> {
    if !service_or_skip("PostgreSQL", setup()) {
        return None;
    }
    let base = random_name("rotor_f");
    let r = PgRoles {
        roles: [format!("{base}_a"), format!("{base}_b")],
        admin: format!("{base}_admin"),
    };
    for role in &r.roles {
        assert!(psql(&format!(
            "CREATE ROLE \"{role}\" NOLOGIN IN ROLE rotor_managed"
        )));
    }
    assert!(psql(&format!(
        "CREATE ROLE \"{}\" LOGIN CREATEROLE PASSWORD '{ADMIN_PW}' IN ROLE rotor_managed",
        r.admin
    )));
    Some(r)
}

fn pg_target(dir: &Path, roles: &PgRoles) -> String {
    format!(
        r#"target = {{ type = "postgres", admin_url_file = "{}/pg-admin-url", strategy = "alternating", roles = ["{}", "{}"] }}"#,
        dir.display(),
        roles.roles[0],
        roles.roles[1]
    )
}

fn write_admin_url(dir: &Path, user: &str, password: &str, port: u16) {
    std::fs::write(
        dir.join("pg-admin-url"),
        format!("postgres://{user}:{password}@127.0.0.1:{port}/test"),
    )
    .unwrap();
}

async fn pg_login(user: &str, password: &str) -> bool {
    let mut c = tokio_postgres::Config::new();
    c.host("127.0.0.1")
        .port(5432)
        .dbname("test")
        .user(user)
        .password(password)
        .connect_timeout(Duration::from_secs(10));
    match c.connect(NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client.simple_query("SELECT 1").await.is_ok()
        }
        Err(_) => false,
    }
}

/// The store and PostgreSQL agree: the current version's credentials log in, and so do the
/// previous version's while it is in grace (alternating roles keep it valid).
async fn pg_agrees(rig: &Rig) {
    let versions = rig.store.versions(&rig.secret).await.unwrap();
    for v in &versions {
        let valid = v.labels.contains(&Label::Current) || v.labels.contains(&Label::Previous);
        if !valid {
            continue;
        }
        let creds =
            Credentials::parse(&rig.store.read_value(&rig.secret, v.version).await.unwrap())
                .unwrap();
        assert!(
            pg_login(&creds.username, &creds.password).await,
            "v{} ({:?}) does not log in as {}: {versions:?}",
            v.version,
            v.labels,
            creds.username
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable() {
    let Some(roles) = pg_roles() else { return };
    let proxy = TcpProxy::start(([127, 0, 0, 1], 5432).into()).await;
    let dir = tempfile::tempdir().unwrap();
    write_admin_url(dir.path(), &roles.admin, ADMIN_PW, proxy.port());
    let target = pg_target(dir.path(), &roles);
    let rig = Rig::start(dir, &target, "", Duration::from_secs(30)).await;
    rig.wait_current(1).await;

    proxy.down();
    rig.api.rotate(rig.secret.clone()).await.unwrap();
    rig.failing(3, 1, "apply").await;
    pg_agrees(&rig).await;

    proxy.up().await;
    let took = rig.recovery(1).await;
    rig.failed_and_announced().await;
    pg_agrees(&rig).await;
    report("postgres_unreachable", took);
}

/// The backend that would run rotor's `ALTER ROLE` is held up: another session holds the
/// role's row lock in an open transaction, so rotor's statement waits (a paused backend)
/// until the step timeout. Only the private roles are locked; the server runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_slow() {
    let Some(roles) = pg_roles() else { return };
    let dir = tempfile::tempdir().unwrap();
    write_admin_url(dir.path(), &roles.admin, ADMIN_PW, 5432);
    let target = pg_target(dir.path(), &roles);
    let rig = Rig::start(dir, &target, "", Duration::from_secs(3)).await;
    rig.wait_current(1).await;

    let (blocker, conn) =
        tokio_postgres::connect("host=127.0.0.1 port=5432 user=postgres dbname=test", NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    // Both roles: whichever the next version lands on waits.
    blocker
        .batch_execute(&format!(
            "BEGIN; ALTER ROLE \"{}\" CONNECTION LIMIT 50; ALTER ROLE \"{}\" CONNECTION LIMIT 50;",
            roles.roles[0], roles.roles[1]
        ))
        .await
        .unwrap();
    rig.api.rotate(rig.secret.clone()).await.unwrap();
    rig.failing(2, 1, "timeout").await;

    blocker.batch_execute("ROLLBACK").await.unwrap();
    let took = rig.recovery(1).await;
    rig.failed_and_announced().await;
    pg_agrees(&rig).await;
    report("postgres_slow", took);
}

/// The admin role's password is changed underneath rotor; the fault clears when the admin
/// URL file (a mounted secret in production) gets the new password, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_admin_password_changed() {
    let Some(roles) = pg_roles() else { return };
    let dir = tempfile::tempdir().unwrap();
    write_admin_url(dir.path(), &roles.admin, ADMIN_PW, 5432);
    let target = pg_target(dir.path(), &roles);
    let rig = Rig::start(dir, &target, "", Duration::from_secs(30)).await;
    rig.wait_current(1).await;

    assert!(psql(&format!(
        "ALTER ROLE \"{}\" PASSWORD 'fault-admin-pw-2'",
        roles.admin
    )));
    rig.api.rotate(rig.secret.clone()).await.unwrap();
    rig.failing(3, 1, "apply").await;
    pg_agrees(&rig).await;
    let log_safe = rig.metrics().await;
    assert!(
        !log_safe.contains("fault-admin-pw"),
        "a password in metrics"
    );

    write_admin_url(rig.dir.path(), &roles.admin, "fault-admin-pw-2", 5432);
    let took = rig.recovery(1).await;
    rig.failed_and_announced().await;
    pg_agrees(&rig).await;
    report("postgres_admin_password_changed", took);
}

// ---------------------------------------------------------------------------------------------
// Redis

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down() {
    let Some(mut redis) = RedisProcess::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("redis-admin-url"), redis.url()).unwrap();
    let user = random_name("app");
    let target = format!(
        r#"target = {{ type = "redis", admin_url_file = "{}/redis-admin-url", user = "{user}" }}"#,
        dir.path().display()
    );
    let rig = Rig::start(dir, &target, "", Duration::from_secs(30)).await;
    rig.wait_current(1).await;

    redis.stop();
    rig.api.rotate(rig.secret.clone()).await.unwrap();
    rig.failing(3, 1, "apply").await;

    redis.start_again();
    let took = rig.recovery(1).await;
    rig.failed_and_announced().await;
    // Redis agrees: both the current and the previous password authenticate.
    for v in [1, rig.current().await[0]] {
        let value = rig.store.read_value(&rig.secret, v).await.unwrap();
        let creds = Credentials::parse(&value).unwrap();
        let pw = creds.password.to_string();
        assert!(redis_auth(redis.port, &user, &pw).await, "v{v} refused");
    }
    report("redis_down", took);
}

async fn redis_auth(port: u16, user: &str, password: &str) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let cmd = format!(
        "*3\r\n$4\r\nAUTH\r\n${}\r\n{user}\r\n${}\r\n{password}\r\n",
        user.len(),
        password.len()
    );
    s.write_all(cmd.as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.unwrap_or(0);
    buf[..n].starts_with(b"+OK")
}

// ---------------------------------------------------------------------------------------------
// Notification receiver

fn webhook_channel(dir: &Path, url: &str) -> String {
    std::fs::write(
        dir.join("webhook.key"),
        "fault-signing-key-0123456789abcdef",
    )
    .unwrap();
    format!(
        r#"
[[notify]]
type = "webhook"
url = "{url}"
secret_file = "{}/webhook.key"
timeout = "2s"
retry_backoff = "1s"
retry_backoff_max = "2s"
max_attempts = 30
events = ["rotation_succeeded"]
"#,
        dir.display()
    )
}

async fn deliveries(rig: &Rig, outcome: &str) -> f64 {
    rig.series(&format!(
        r#"rotor_notification_deliveries_total{{channel="webhook",outcome="{outcome}"}}"#
    ))
    .await
}

/// A receiver that is down never holds up a rotation: v1 and v2 are promoted while it is
/// down, the deliveries are retried with backoff, and both arrive once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receiver_down() {
    let receiver = HttpReceiver::start().await;
    receiver.down();
    let dir = tempfile::tempdir().unwrap();
    let channel = webhook_channel(dir.path(), &receiver.url());
    let rig = Rig::start(dir, "", &channel, Duration::from_secs(30)).await;
    rig.wait_current(1).await;
    rig.api.rotate(rig.secret.clone()).await.unwrap();
    rig.wait_current(2).await;
    eventually(LIMIT, "deliveries retried", async || {
        deliveries(&rig, "retried").await >= 2.0
    })
    .await;
    assert!(rig.api.ready());
    assert_eq!(receiver.hits(), 0);

    receiver.up().await;
    let cleared = Instant::now();
    eventually(LIMIT, "both events delivered", async || {
        receiver.hits() >= 2 && deliveries(&rig, "delivered").await >= 2.0
    })
    .await;
    assert_eq!(deliveries(&rig, "failed").await, 0.0);
    report("webhook_receiver_down", cleared.elapsed());
}

/// A receiver slower than the channel's timeout: the rotation is promoted at once, each
/// delivery times out and is retried; once it answers in time the event arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receiver_slow() {
    let receiver = HttpReceiver::start().await;
    receiver.slow(Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let channel = webhook_channel(dir.path(), &receiver.url());
    let rig = Rig::start(dir, "", &channel, Duration::from_secs(30)).await;
    rig.wait_current(1).await;
    eventually(LIMIT, "a delivery retried after a timeout", async || {
        deliveries(&rig, "retried").await >= 1.0
    })
    .await;
    assert!(rig.api.ready());

    receiver.slow(Duration::ZERO);
    let cleared = Instant::now();
    eventually(LIMIT, "the event delivered", async || {
        deliveries(&rig, "delivered").await >= 1.0
    })
    .await;
    report("webhook_receiver_slow", cleared.elapsed());
}

// ---------------------------------------------------------------------------------------------
// The webhook target's receiver

fn webhook_target(dir: &Path, url: &str) -> String {
    std::fs::write(dir.join("hook.key"), "fault-hook-key-0123456789abcdef").unwrap();
    format!(
        r#"target = {{ type = "webhook", url = "{url}", hmac_key_file = "{}/hook.key" }}"#,
        dir.display()
    )
}

impl Rig {
    /// The versions labelled current, as the admin API answers them.
    async fn api_current(&self) -> Vec<u64> {
        self.api
            .versions(self.secret.clone())
            .await
            .expect("versions through the admin API")
            .into_iter()
            .filter(|v| v.labels.contains(&Label::Current))
            .map(|v| v.version)
            .collect()
    }

    async fn sha256_of(&self, version: u64) -> Option<String> {
        let value = self.store.read_value(&self.secret, version).await.unwrap();
        Some(sha256_hex(value.expose()))
    }
}

/// No partial promotion, from both sides, once a rotation after the fault is promoted: the
/// store and the admin API agree on one current version newer than v1; every attempt that
/// failed left a version that was never promoted in the store (discarded: `expired_at` set)
/// and never tested or promoted at the receiver, whose revoke reached the receiver with
/// that version's own value before the next attempt began; the receiver saw a promote
/// only for v1 and the new current version, whose apply and test carried its stored value.
async fn receiver_agrees(rig: &Rig, receiver: &HttpReceiver) -> u64 {
    let current = rig.current().await;
    assert_eq!(current.len(), 1, "one current: {current:?}");
    let current = current[0];
    assert!(current > 1, "nothing promoted after v1");
    assert_eq!(rig.api_current().await, vec![current], "the admin API");
    let seen = receiver.seen();
    let history = rig.store.history(&rig.secret, 100).await.unwrap();
    let failed: Vec<u64> = history
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .map(|r| r.to_version)
        .collect();
    assert!(!failed.is_empty(), "no failed attempt in the history");
    let versions = rig.store.versions(&rig.secret).await.unwrap();
    let first_of_current = seen
        .iter()
        .position(|s| s.version == Some(current))
        .expect("the receiver saw the new current version");
    for f in &failed {
        let meta = versions.iter().find(|v| v.version == *f).unwrap();
        assert!(
            meta.promoted_at.is_none() && meta.expired_at.is_some() && meta.labels.is_empty(),
            "v{f} of a failed attempt was not discarded: {meta:?}"
        );
        for op in ["test", "promote"] {
            assert!(
                !seen.iter().any(|s| s.is(op, *f)),
                "the receiver saw {op} of the failed v{f}: {seen:?}"
            );
        }
        let revoked = seen
            .iter()
            .rposition(|s| s.is("revoke", *f))
            .unwrap_or_else(|| panic!("v{f} never revoked at the receiver: {seen:?}"));
        assert_eq!(
            seen[revoked].value_sha256,
            rig.sha256_of(*f).await,
            "v{f}'s revoke carried another value"
        );
        assert!(
            revoked < first_of_current,
            "v{f} revoked after v{current}'s attempt began: {seen:?}"
        );
    }
    let promoted: Vec<u64> = seen
        .iter()
        .filter(|s| s.operation.as_deref() == Some("promote"))
        .filter_map(|s| s.version)
        .collect();
    assert_eq!(promoted, vec![1, current], "promotes the receiver saw");
    for op in ["apply", "test"] {
        let step = seen
            .iter()
            .find(|s| s.is(op, current))
            .unwrap_or_else(|| panic!("no {op} of v{current}: {seen:?}"));
        assert_eq!(
            step.value_sha256,
            rig.sha256_of(current).await,
            "{op} value"
        );
    }
    current
}

/// The webhook target's receiver refuses connections during a rotation: apply fails, the
/// pending version is discarded and its revoke retried with backoff until the receiver is
/// back; current is untouched and the service ready throughout; the next attempt after it
/// is back is promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_target_receiver_down() {
    let receiver = HttpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let target = webhook_target(dir.path(), &receiver.url());
    let rig = Rig::start(dir, &target, "", Duration::from_secs(30)).await;
    rig.wait_current(1).await;

    receiver.down();
    let before = receiver.seen().len();
    rig.api.rotate(rig.secret.clone()).await.unwrap();
    rig.failing(3, 1, "apply").await;
    assert!(
        rig.series(r#"secret_rotation_errors_total{policy="f",error="revoke"}"#)
            .await
            >= 2.0,
        "the discard's revoke was not retried"
    );
    assert_eq!(rig.api_current().await, vec![1]);
    assert_eq!(
        receiver.seen().len(),
        before,
        "a request reached a receiver that is down"
    );

    receiver.up().await;
    let took = rig.recovery(1).await;
    rig.failed_and_announced().await;
    // The first request the receiver read once back is the failed version's revoke.
    let seen = receiver.seen();
    assert!(seen[before].is("revoke", 2), "{seen:?}");
    receiver_agrees(&rig, &receiver).await;
    assert!(rig.api.ready());
    report("webhook_target_receiver_down", took);
}

/// The webhook target's receiver answers only after longer than the step timeout (it reads
/// and records each request at once, as a receiver that acts and answers late would): the
/// step times out (`error="timeout"`) and the discard's revoke too, retried with backoff;
/// current is untouched; once the receiver answers in time the next attempt is promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_target_receiver_slow() {
    let receiver = HttpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let target = webhook_target(dir.path(), &receiver.url());
    // The step timeout (2 s) is shorter than the target's own request timeout (30 s by
    // default), so the step's deadline is what gives up.
    let rig = Rig::start(dir, &target, "", Duration::from_secs(2)).await;
    rig.wait_current(1).await;

    receiver.slow(Duration::from_secs(30));
    rig.api.rotate(rig.secret.clone()).await.unwrap();
    rig.failing(2, 1, "timeout").await;
    assert_eq!(
        rig.series(r#"secret_rotation_errors_total{policy="f",error="timeout"}"#)
            .await,
        rig.errors().await,
        "every step error a timeout"
    );
    assert_eq!(rig.api_current().await, vec![1]);
    // The receiver did see v2's apply (it is slow, not gone), and nothing past it.
    let seen = receiver.seen();
    assert!(seen.iter().any(|s| s.is("apply", 2)), "{seen:?}");

    receiver.slow(Duration::ZERO);
    let took = rig.recovery(1).await;
    rig.failed_and_announced().await;
    receiver_agrees(&rig, &receiver).await;
    assert!(rig.api.ready());
    report("webhook_target_receiver_slow", took);
}

// ---------------------------------------------------------------------------------------------
// The embedded store's file read-only

/// `chattr +i` on the store file (ext4 refuses every write to an immutable file, even
/// through a descriptor opened before): commits fail, the rotation actor fails and is
/// restarted, `rotor_store_up` drops to 0; nothing is promoted half-way, and once the flag
/// is gone the next attempt succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_file_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rotor.redb");
    let rig = Rig::start(dir, "", "", Duration::from_secs(30)).await;
    rig.wait_current(1).await;
    if !chattr(&file, "+i") {
        crate::common::ci::skip_or_fail("chattr +i", "the filesystem refuses it");
        return;
    }
    let _unlock = Unlock(file.clone());
    let _ = rig.api.rotate(rig.secret.clone()).await;
    eventually(LIMIT, "the store marked down", async || {
        rig.series("rotor_store_up").await == 0.0
    })
    .await;
    eventually(LIMIT, "the rotation actor restarted", async || {
        rig.series(r#"rotor_actor_restarts_total{kind="rotation"}"#)
            .await
            >= 2.0
    })
    .await;
    assert!(rig.api.ready());

    assert!(chattr(&file, "-i"));
    let cleared = Instant::now();
    eventually(LIMIT, "a rotation through the store again", async || {
        let _ = rig.api.rotate(rig.secret.clone()).await;
        rig.phase() == "grace"
    })
    .await;
    let took = cleared.elapsed();
    let current = rig.current().await;
    assert_eq!(current.len(), 1, "one current");
    assert_eq!(rig.series("rotor_store_up").await, 1.0);
    for v in rig.store.versions(&rig.secret).await.unwrap() {
        rig.store
            .read_value(&rig.secret, v.version)
            .await
            .expect("every version readable");
    }
    report("store_file_read_only", took);
}

fn chattr(file: &Path, flag: &str) -> bool {
    std::process::Command::new("chattr")
        .arg(flag)
        .arg(file)
        .status()
        .is_ok_and(|s| s.success())
}

/// Clears the immutable flag even when the test fails, so the directory can be removed.
struct Unlock(std::path::PathBuf);

impl Drop for Unlock {
    fn drop(&mut self) {
        chattr(&self.0, "-i");
    }
}

// ---------------------------------------------------------------------------------------------
// The embedded store's disk full

/// The real binary with its store on a 4 MiB tmpfs in a mount namespace of its own; the
/// test fills the tmpfs (ENOSPC for every new page the store writes): rotations fail
/// before promotion, `rotor_store_up` drops to 0, the service stays up and ready; once
/// the filler is removed the next attempt is promoted without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_disk_full() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = rotor_bin::config(
        port,
        r#"
[policies.f]
manual = true
grace = "1h"
generator = { type = "password", length = 24 }
max_attempts = 20

[[secrets]]
tenant = "tenant1"
key = "faulty"
policy = "f"
"#,
    )
    .replace(r#"path = "rotor.redb""#, r#"path = "store/rotor.redb""#);
    let Some(rotor) = TmpfsRotor::start(dir.path(), port, &config, "4m").await else {
        return;
    };
    let api = BinApi::new(&rotor.bin);
    eventually(LIMIT, "v1 current", async || api.current().await == vec![1]).await;

    rotor.fill();
    // A rotation may still fit in pages the store already holds, so keep asking until a
    // write needs a new page; whatever promoted meanwhile, one version is current.
    let mut seen = 1;
    eventually(LIMIT, "the store marked down", async || {
        api.rotate().await;
        let current = api.current().await;
        assert!(current.len() <= 1, "more than one current: {current:?}");
        seen = current.first().copied().unwrap_or(seen);
        api.metric("rotor_store_up").await == 0.0
    })
    .await;
    eventually(LIMIT, "the rotation actor restarted", async || {
        api.metric(r#"rotor_actor_restarts_total{kind="rotation"}"#)
            .await
            >= 1.0
    })
    .await;
    assert!(api.ready().await, "not ready while the disk is full");
    // No promotion while full: what is current now (when readable) stays current.
    let mut held = None;
    for _ in 0..3 {
        api.rotate().await;
        let current = api.current().await;
        assert!(current.len() <= 1, "more than one current: {current:?}");
        if let Some(v) = current.first() {
            assert!(held.is_none_or(|h| h == *v), "v{v} promoted while full");
            held = Some(*v);
        }
    }
    let held = held.unwrap_or(seen);

    rotor.empty();
    let cleared = Instant::now();
    eventually(LIMIT, "a promotion after the disk has room", async || {
        api.rotate().await;
        api.current().await.first().is_some_and(|c| *c > held)
    })
    .await;
    let took = cleared.elapsed();
    assert_eq!(api.current().await.len(), 1, "one current");
    eventually(LIMIT, "the store marked up", async || {
        api.metric("rotor_store_up").await == 1.0
    })
    .await;
    assert!(api.ready().await);
    let log = rotor.bin.log();
    assert!(
        log.contains("No space left on device"),
        "ENOSPC never reached the store: {log}"
    );
    report("store_disk_full", took);
}

/// The admin API of a rotor binary, for the rows that run the binary.
struct BinApi {
    addr: std::net::SocketAddr,
    token: String,
}

impl BinApi {
    fn new(bin: &RotorBin) -> BinApi {
        let token = std::fs::read_to_string(bin.dir.join("admin.token")).unwrap();
        BinApi {
            addr: bin.addr,
            token: token.trim().to_owned(),
        }
    }

    /// Asks for a rotation; whatever the answer (409 while one runs, an error while the
    /// store fails), the test looks at the outcome through the versions.
    async fn rotate(&self) {
        let body = r#"{"tenantId":"tenant1","secretKey":"faulty"}"#;
        request(
            self.addr,
            "POST",
            "/admin/secrets/rotate",
            Some(&self.token),
            Some(body),
        )
        .await;
    }

    /// The versions labelled current; empty when the store cannot be read.
    async fn current(&self) -> Vec<u64> {
        let r = request(
            self.addr,
            "GET",
            "/admin/secrets/versions/tenant1/faulty",
            Some(&self.token),
            None,
        )
        .await;
        if r.status != 200 {
            return Vec::new();
        }
        r.json()["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| {
                v["labels"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|l| l == "current"))
            })
            .filter_map(|v| v["version"].as_u64())
            .collect()
    }

    async fn metric(&self, series: &str) -> f64 {
        let r = request(self.addr, "GET", "/metrics", None, None).await;
        value_of(&String::from_utf8_lossy(&r.body), series)
    }

    async fn ready(&self) -> bool {
        request(self.addr, "GET", "/readyz", None, None)
            .await
            .status
            == 200
    }
}

// ---------------------------------------------------------------------------------------------
// A mount directory deleted and recreated

/// The mount directory a consumer reads is deleted entirely (as when a volume is torn down
/// and set up again), then recreated by kubelet's writer with a new generation showing the
/// new version. While it is gone the watcher reports an error and the previous version
/// stays valid (no consumer shows the new one); once it is back the watcher reads it
/// without a restart: the critical file's change triggers the reload, the consumer's new
/// version lets the previous one expire, and later swaps in the new directory are seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_directory_deleted_and_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let receiver = HttpReceiver::start().await;
    let cfg = tree_config(
        dir.path(),
        &format!(
            r#"
[policies.f]
manual = true
grace = "1s"
generator = {{ type = "password", length = 24 }}
expire_after = "grace_and_consumers"
max_grace_extension = "1h"

[[secrets]]
tenant = "tenant1"
key = "faulty"
policy = "f"

[[mounts]]
path = "{mnt}"
debounce = "20ms"
critical = ["password"]
reload = {{ type = "http", url = "{url}", method = "POST", timeout = "5s" }}
files = {{ "password" = "tenant1/faulty" }}
"#,
            mnt = mnt.display(),
            url = receiver.url()
        ),
    );
    let store = open_store(dir.path());
    let options = TreeOptions {
        namespace: format!("{}/", dir.path().display()),
        ..TreeOptions::default()
    };
    let tree = tree::start(&cfg, store.clone(), Metrics::new(), options)
        .await
        .expect("tree starts");
    let rig = Rig {
        api: admin(&tree),
        tree,
        store,
        secret: SecretRef::new("tenant1", "faulty").unwrap(),
        dir,
    };
    rig.wait_current(1).await;
    // The first version may exist before the watcher's first look (a first start writes
    // it in bulk): the directory appears only once the watcher has found it missing.
    eventually(LIMIT, "the watcher to find no directory", async || {
        rig.series(r#"rotor_watcher_events_total{kind="error"}"#)
            .await
            >= 1.0
    })
    .await;
    let v1 = rig.store.read_value(&rig.secret, 1).await.unwrap();
    kubelet::swap(&mnt, &[("password", v1.expose())]);
    rig.api.rotate(rig.secret.clone()).await.unwrap();
    rig.wait_current(2).await;
    let v2 = rig.store.read_value(&rig.secret, 2).await.unwrap();
    // The watcher has read v1 from the mount (it started before the directory existed,
    // which counted one error already).
    eventually(LIMIT, "v1 seen in the mount", async || {
        rig.series(r#"rotor_watcher_events_total{kind="secret-changed"}"#)
            .await
            >= 1.0
    })
    .await;
    let errors = rig
        .series(r#"rotor_watcher_events_total{kind="error"}"#)
        .await;

    std::fs::remove_dir_all(&mnt).unwrap();
    eventually(
        LIMIT,
        "the watcher reports the missing directory",
        async || {
            rig.series(r#"rotor_watcher_events_total{kind="error"}"#)
                .await
                > errors
        },
    )
    .await;
    assert!(rig.api.ready(), "not ready while the mount is gone");
    // Past the grace, v1 is still valid: no consumer has shown v2.
    let promoted = rig.store.versions(&rig.secret).await.unwrap()[1]
        .promoted_at
        .expect("v2 promoted");
    eventually(LIMIT, "v2's grace over", async || {
        Utc::now() > promoted + TimeDelta::milliseconds(1500)
    })
    .await;
    assert!(!expired(&rig, 1).await, "v1 expired with no consumer on v2");
    let reloads = receiver.hits();

    kubelet::swap(&mnt, &[("password", v2.expose())]);
    let cleared = Instant::now();
    eventually(
        LIMIT,
        "the recreated directory read: v1 expired, reloaded",
        async || expired(&rig, 1).await && receiver.hits() > reloads,
    )
    .await;
    let took = cleared.elapsed();
    assert_eq!(rig.current().await, vec![2]);
    // The new directory is watched, not just rescanned once: a later swap is seen too.
    let changed = rig
        .series(r#"rotor_watcher_events_total{kind="secret-changed"}"#)
        .await;
    kubelet::swap(&mnt, &[("password", v2.expose()), ("other", b"x")]);
    eventually(LIMIT, "a swap in the recreated directory", async || {
        rig.series(r#"rotor_watcher_events_total{kind="secret-changed"}"#)
            .await
            > changed
    })
    .await;
    assert!(rig.api.ready());
    report("mount_directory_deleted_and_recreated", took);
}

async fn expired(rig: &Rig, version: u64) -> bool {
    rig.store
        .versions(&rig.secret)
        .await
        .unwrap()
        .iter()
        .any(|v| v.version == version && v.expired_at.is_some())
}

// ---------------------------------------------------------------------------------------------
// The clock stepped

/// The injected clock steps an hour forward and back (as NTP or an operator steps the wall
/// clock; tokio's timers run on monotonic time): an hourly secret is rotated once per due
/// time, never twice for one due time, and none is skipped.
#[tokio::test(start_paused = true)]
async fn clock_stepped_forward_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tree_config(
        dir.path(),
        r#"
[policies.hourly]
interval = "1h"
grace = "10m"
generator = { type = "token", bytes = 16 }

[[secrets]]
tenant = "tenant1"
key = "faulty"
policy = "hourly"
"#,
    );
    let store = open_store(dir.path());
    let (clock, step) = Clock::tokio_stepped(Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap());
    let options = TreeOptions {
        clock,
        namespace: format!("{}/", dir.path().display()),
        ..TreeOptions::default()
    };
    let tree = tree::start(&cfg, store.clone(), Metrics::new(), options)
        .await
        .unwrap();
    let s = SecretRef::new("tenant1", "faulty").unwrap();
    let promoted = async || {
        store
            .history(&s, 100)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.outcome == Outcome::Succeeded)
            .count()
    };
    eventually(Duration::from_secs(10), "v1", async || {
        promoted().await == 1
    })
    .await;

    // Half an hour in, the clock jumps an hour forward: the secret is now overdue and is
    // rotated once (when the timer armed on monotonic time fires), not twice.
    tokio::time::sleep(Duration::from_secs(1800)).await;
    step.step(TimeDelta::hours(1));
    let stepped = tokio::time::Instant::now();
    eventually_every(
        Duration::from_secs(3 * 3600),
        Duration::from_secs(10),
        "v2 after the forward step",
        async || promoted().await == 2,
    )
    .await;
    let late = stepped.elapsed();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(promoted().await, 2, "doubled after the forward step");

    // The clock steps back an hour: the next due time is an hour after v2 by the clock, so
    // two hours of monotonic time; the early timer re-arms instead of rotating.
    step.step(TimeDelta::hours(-1));
    tokio::time::sleep(Duration::from_secs(3600 + 600)).await;
    assert_eq!(promoted().await, 2, "rotated early after the backward step");
    eventually_every(
        Duration::from_secs(3 * 3600),
        Duration::from_secs(10),
        "v3 after the backward step",
        async || promoted().await == 3,
    )
    .await;
    let versions = store.versions(&s).await.unwrap();
    assert_eq!(
        versions
            .iter()
            .filter(|v| v.labels.contains(&Label::Current))
            .count(),
        1
    );
    eprintln!(
        "FAULTS clock_stepped_forward_and_back: rotated {} s (tokio) after the forward step",
        late.as_secs()
    );
    drop(tree);
}
