//! The `postgres` target against the machine's real PostgreSQL (127.0.0.1:5432), with
//! random role names in the `rotor_managed` group, for which `.ci/setup-postgres.sh` (run
//! here once) makes the server require scram-sha-256: a wrong password is refused, which
//! the first test proves before the others rely on it.
//!
//! Covered: both logins during grace and the old one refused after expiry; rollback during
//! grace; `single`; a discarded attempt followed by a retry (which takes the next number)
//! leaving the current version's login alone with either strategy; a wrong admin password
//! failing the rotation before promotion through the whole actor tree, with current
//! untouched; no password in any error text.

use std::path::Path;
use std::time::Duration;

use crate::common::embedded;
use crate::common::http::request;
use crate::common::pg_consumer::as_user;
use crate::common::postgres::{Roles, setup};
use crate::common::rotor_bin::{self, LEAK_CHECK_LOG, RotorBin, assert_logged_at_trace, free_port};
use crate::common::targets::{Env, password_spec, random_name, secret, service_or_skip};
use crate::common::wait::eventually;
use chrono::Utc;
use rotor::actors::tree::{self, TreeOptions};
use rotor::api::Admin;
use rotor::config::Config;
use rotor::domain::{Label, RotationId};
use rotor::generator::SecretValue;
use rotor::metrics::Metrics;
use rotor::store::embedded::EmbeddedStore;
use rotor::store::{ReadValue as _, Store};
use rotor::target::Target;
use rotor::target::postgres::{Credentials, PostgresTarget, Strategy};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

const ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=5";

async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(ADMIN, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// Creates `n` NOLOGIN roles in `rotor_managed`, plus whatever `extra` SQL says; `None`
/// when the test should be skipped.
async fn roles(n: usize) -> Option<Roles> {
    if !service_or_skip("PostgreSQL", setup()) {
        return None;
    }
    let base = random_name("rotor_t");
    let names: Vec<String> = (0..n).map(|i| format!("{base}_{i}")).collect();
    let client = admin().await;
    for r in &names {
        client
            .batch_execute(&format!(
                "CREATE ROLE \"{r}\" NOLOGIN IN ROLE rotor_managed"
            ))
            .await
            .unwrap();
    }
    Some(Roles(names))
}

/// An admin role (password `admin-right-pw-1`) beside `roles`, dropped with the guard.
async fn admin_role(roles: &Roles) -> (String, Roles) {
    let name = format!("{}_admin", roles.0[0]);
    let guard = Roles(vec![name.clone()]);
    admin()
        .await
        .batch_execute(&format!(
            "CREATE ROLE \"{name}\" LOGIN CREATEROLE PASSWORD 'admin-right-pw-1' IN ROLE rotor_managed"
        ))
        .await
        .unwrap();
    (name, guard)
}

/// How a login ended. Only PostgreSQL's two refusals count as refused; any other failure
/// (a timeout, too many clients, the server gone) fails the test with its message, so a
/// broken connection can never pass for a refused password.
#[derive(Debug, PartialEq)]
enum Login {
    Accepted,
    /// SQLSTATE 28P01 (`invalid_password`): the password is not the role's.
    WrongPassword,
    /// SQLSTATE 28000 (`invalid_authorization_specification`): the password was right but
    /// the role is `NOLOGIN`.
    Disabled,
}

async fn login(user: &str, password: &str) -> Login {
    match as_user(user, password).connect(NoTls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client
                .simple_query("SELECT 1")
                .await
                .unwrap_or_else(|e| panic!("logged in as {user} but SELECT 1 failed: {e:?}"));
            Login::Accepted
        }
        Err(e) => match e.code() {
            Some(c) if *c == SqlState::INVALID_PASSWORD => Login::WrongPassword,
            Some(c) if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => Login::Disabled,
            _ => panic!("login as {user} failed, and not with a refusal: {e:?}"),
        },
    }
}

fn creds(value: &SecretValue) -> Credentials {
    Credentials::parse(value).unwrap()
}

fn admin_url_file(env: &Env, url: &str) -> std::path::PathBuf {
    let path = env.dir.path().join("pg-admin-url");
    std::fs::write(&path, url).unwrap();
    path
}

fn target(env: &Env, strategy: Strategy, roles: &Roles) -> PostgresTarget {
    PostgresTarget::new(
        secret("database_credentials"),
        admin_url_file(env, "postgres://postgres@127.0.0.1:5432/test"),
        strategy,
        roles.0.clone(),
        env.store.clone(),
    )
}

/// apply, test and promote `version` on `t`; returns the stored value.
async fn rotate_to(env: &Env, t: &PostgresTarget, version: u64) -> SecretValue {
    env.rotate(
        t,
        &secret("database_credentials"),
        version,
        &password_spec(),
    )
    .await
}

/// Two alternating roles with v1 and v2 rotated onto them: v2 is current and v1 is still
/// valid, as during grace. Returns the roles, the environment, the target, the secret and
/// both versions' credentials; `None` when the test should be skipped.
async fn in_grace() -> Option<(Roles, Env, PostgresTarget, Credentials, Credentials)> {
    let roles = roles(2).await?;
    let env = Env::new();
    let t = target(&env, Strategy::Alternating, &roles);
    let v1 = creds(&rotate_to(&env, &t, 1).await);
    let v2 = creds(&rotate_to(&env, &t, 2).await);
    Some((roles, env, t, v1, v2))
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_the_right_one_works() {
    let Some(roles) = roles(2).await else { return };
    let env = Env::new();
    let t = target(&env, Strategy::Alternating, &roles);
    let v1 = rotate_to(&env, &t, 1).await;
    let c = creds(&v1);
    assert_eq!(c.username, roles.0[0]);
    assert_eq!(
        login(&c.username, &c.password).await,
        Login::Accepted,
        "right password"
    );
    assert_eq!(
        login(&c.username, "not-the-password").await,
        Login::WrongPassword,
        "pg_hba must require a password for rotor_managed members"
    );
    // The URL in the stored value is what a consumer connects with.
    let (client, conn) = tokio_postgres::connect(&c.url, NoTls)
        .await
        .expect("url works");
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), roles.0[0]);
}

#[tokio::test]
async fn alternating_both_work_in_grace_and_the_old_is_refused_after_expiry() {
    let Some((roles, env, t, v1, v2)) = in_grace().await else {
        return;
    };
    assert_eq!(
        v2.username, roles.0[1],
        "the new password goes to the other role"
    );
    assert_eq!(
        login(&v1.username, &v1.password).await,
        Login::Accepted,
        "old works in grace"
    );
    assert_eq!(
        login(&v2.username, &v2.password).await,
        Login::Accepted,
        "new works in grace"
    );

    t.revoke(1).await.expect("expire v1");
    assert_eq!(
        login(&v1.username, &v1.password).await,
        Login::Disabled,
        "old refused after expiry"
    );
    assert_eq!(
        login(&v2.username, &v2.password).await,
        Login::Accepted,
        "new still works"
    );
    // Idempotent.
    t.revoke(1).await.expect("expire v1 again");

    // The next rotation reuses the first role with a new password.
    let v3 = creds(&rotate_to(&env, &t, 3).await);
    assert_eq!(v3.username, roles.0[0]);
    assert_eq!(login(&v3.username, &v3.password).await, Login::Accepted);
    assert_eq!(
        login(&v1.username, &v1.password).await,
        Login::WrongPassword,
        "v1's password is gone"
    );
    assert_eq!(login(&v2.username, &v2.password).await, Login::Accepted);
}

/// A session logged in as `user`, kept open.
async fn session(user: &str, password: &str) -> tokio_postgres::Client {
    let (client, conn) = as_user(user, password)
        .connect(NoTls)
        .await
        .expect("session");
    tokio::spawn(conn);
    client
}

#[tokio::test]
async fn expiry_ends_the_old_roles_open_sessions_only_when_asked() {
    let Some((roles, env, t, v1, v2)) = in_grace().await else {
        return;
    };
    // A pool's connections, opened during grace.
    let old = session(&v1.username, &v1.password).await;
    let new = session(&v2.username, &v2.password).await;

    // By default, expiry refuses new logins and leaves open sessions alone.
    t.revoke(1).await.expect("expire v1");
    assert_eq!(login(&v1.username, &v1.password).await, Login::Disabled);
    old.simple_query("SELECT 1")
        .await
        .expect("an open session survives NOLOGIN");

    // With terminate_sessions, expiry (idempotent, so again) also ends them.
    let terminating = target(&env, Strategy::Alternating, &roles).terminating_sessions(true);
    terminating.revoke(1).await.expect("expire v1 again");
    assert!(
        old.simple_query("SELECT 1").await.is_err(),
        "the old role's session was ended"
    );
    new.simple_query("SELECT 1")
        .await
        .expect("the current role's session is untouched");
}

#[tokio::test]
async fn rollback_in_grace_restores_the_previous_role_and_refuses_the_new() {
    let Some((_roles, _env, t, v1, v2)) = in_grace().await else {
        return;
    };
    t.restore(1, 2).await.expect("rollback");
    assert_eq!(
        login(&v1.username, &v1.password).await,
        Login::Accepted,
        "previous works"
    );
    assert_eq!(
        login(&v2.username, &v2.password).await,
        Login::Disabled,
        "new refused"
    );
    t.restore(1, 2).await.expect("rollback is idempotent");
}

#[tokio::test]
async fn single_replaces_the_password_and_a_discarded_pending_is_undone() {
    let Some(roles) = roles(1).await else { return };
    let env = Env::new();
    let t = target(&env, Strategy::Single, &roles);
    let s = secret("database_credentials");
    let v1 = creds(&rotate_to(&env, &t, 1).await);
    let v2 = creds(&rotate_to(&env, &t, 2).await);
    assert_eq!(v1.username, v2.username);
    assert_eq!(
        login(&v1.username, &v1.password).await,
        Login::WrongPassword,
        "no grace with single"
    );
    assert_eq!(login(&v2.username, &v2.password).await, Login::Accepted);
    // Expiring v1 changes nothing.
    t.revoke(1).await.unwrap();
    assert_eq!(login(&v2.username, &v2.password).await, Login::Accepted);

    // v3 applied, then discarded before promotion: v2's password comes back.
    let v3 = env.generate(&t, &s, 3, &password_spec()).await;
    t.apply(3, &v3).await.unwrap();
    let v3 = creds(&v3);
    assert_eq!(login(&v3.username, &v3.password).await, Login::Accepted);
    t.revoke(3).await.unwrap();
    assert_eq!(
        login(&v2.username, &v2.password).await,
        Login::Accepted,
        "current restored"
    );
    assert_eq!(
        login(&v3.username, &v3.password).await,
        Login::WrongPassword,
        "discarded refused"
    );
}

/// A version applied and then discarded before promotion (its test failed), as the
/// rotation actor does it: generated and stored, applied, revoked. It stays stored and keeps
/// its number; `current` does not move.
async fn discard(env: &Env, t: &PostgresTarget, version: u64) -> Credentials {
    let value = env
        .generate(
            t,
            &secret("database_credentials"),
            version,
            &password_spec(),
        )
        .await;
    t.apply(version, &value).await.expect("apply");
    t.revoke(version).await.expect("discard");
    creds(&value)
}

#[tokio::test]
async fn alternating_after_a_discarded_version_the_retry_takes_the_other_role_than_current() {
    let Some(roles) = roles(2).await else { return };
    let env = Env::new();
    let t = target(&env, Strategy::Alternating, &roles);
    let v1 = creds(&rotate_to(&env, &t, 1).await);
    let v2 = discard(&env, &t, 2).await;
    assert_eq!(
        login(&v1.username, &v1.password).await,
        Login::Accepted,
        "current v1 survives the discard"
    );
    assert_eq!(
        login(&v2.username, &v2.password).await,
        Login::Disabled,
        "discarded refused"
    );

    // The retry takes the next number, 3, and is promoted: v1 is in grace.
    let v3 = creds(&rotate_to(&env, &t, 3).await);
    assert_eq!(
        login(&v1.username, &v1.password).await,
        Login::Accepted,
        "v1 ({}) must still log in during grace, v3 went on {}",
        v1.username,
        v3.username
    );
    assert_eq!(
        login(&v3.username, &v3.password).await,
        Login::Accepted,
        "v3 logs in"
    );
    assert_ne!(v3.username, v1.username, "v3 is on the other role than v1");

    // Revoking the discarded v2 again (a replay after a crash) must not disable v3's role,
    // which v2's stored value names.
    t.revoke(2).await.expect("discard again");
    assert_eq!(
        login(&v3.username, &v3.password).await,
        Login::Accepted,
        "the current role keeps its login"
    );

    // Expiry of v1 then works as usual.
    t.revoke(1).await.expect("expire v1");
    assert_eq!(
        login(&v1.username, &v1.password).await,
        Login::Disabled,
        "v1 expired"
    );
    assert_eq!(
        login(&v3.username, &v3.password).await,
        Login::Accepted,
        "v3 still works"
    );
}

/// A pending version whose stored value names the current version's role (what the old
/// rule, role by version parity, wrote for a retry after a discarded attempt) is refused
/// by `apply`, leaving the current password alone, and so is a role not configured.
#[tokio::test]
async fn alternating_apply_refuses_a_value_on_the_current_role_or_an_unknown_one() {
    let Some(roles) = roles(2).await else { return };
    let env = Env::new();
    let t = target(&env, Strategy::Alternating, &roles);
    let s = secret("database_credentials");
    let v1 = creds(&rotate_to(&env, &t, 1).await);
    let stored = |username: &str| {
        SecretValue::from_bytes(
            serde_json::to_vec(&serde_json::json!({
                "username": username,
                "password": "parity-rule-pw-3",
                "url": "",
            }))
            .unwrap(),
        )
    };
    let on_current = stored(&v1.username);
    env.store
        .put_version(&s, 3, RotationId(3), &on_current, Utc::now())
        .await
        .unwrap();
    let err = t.apply(3, &on_current).await.unwrap_err().to_string();
    assert!(
        err.contains(&v1.username) && err.contains("current v1"),
        "{err}"
    );
    assert!(!err.contains("parity-rule-pw-3"), "{err}");
    assert_eq!(
        login(&v1.username, &v1.password).await,
        Login::Accepted,
        "v1 untouched"
    );

    let unknown = stored("rotor_not_a_configured_role");
    let err = t.apply(3, &unknown).await.unwrap_err().to_string();
    assert!(
        err.contains("rotor_not_a_configured_role") && err.contains(&roles.0[1]),
        "names the role and the configured ones: {err}"
    );
}

#[tokio::test]
async fn single_discarding_pending_versions_restores_the_current_password() {
    let Some(roles) = roles(1).await else { return };
    let env = Env::new();
    let t = target(&env, Strategy::Single, &roles);
    let v1 = creds(&rotate_to(&env, &t, 1).await);
    let v2 = discard(&env, &t, 2).await;
    assert_eq!(
        login(&v1.username, &v1.password).await,
        Login::Accepted,
        "v1 logs in after v2 was discarded"
    );
    assert_eq!(
        login(&v2.username, &v2.password).await,
        Login::WrongPassword,
        "v2 refused"
    );
    // v3 follows a discarded v2: v1's password comes back, not v2's.
    let v3 = discard(&env, &t, 3).await;
    assert_eq!(
        login(&v1.username, &v1.password).await,
        Login::Accepted,
        "v1 logs in after v3 was discarded"
    );
    assert_eq!(
        login(&v2.username, &v2.password).await,
        Login::WrongPassword,
        "v2 refused"
    );
    assert_eq!(
        login(&v3.username, &v3.password).await,
        Login::WrongPassword,
        "v3 refused"
    );
}

#[tokio::test]
async fn errors_name_the_role_never_the_password() {
    let Some(roles) = roles(2).await else { return };
    let env = Env::new();
    let t = target(&env, Strategy::Alternating, &roles);
    let s = secret("database_credentials");
    let v1 = env.generate(&t, &s, 1, &password_spec()).await;
    // Tested before it is applied: the role cannot log in.
    let err = t.test(1, &v1).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&roles.0[0]), "{text}");
    assert!(!text.contains(&creds(&v1).password), "{text}");

    // A wrong admin password: apply fails, the text holds neither password.
    let (admin_role, _admin_guard) = admin_role(&roles).await;
    let bad = PostgresTarget::new(
        s.clone(),
        admin_url_file(
            &env,
            &format!("postgres://{admin_role}:admin-wrong-pw-2@127.0.0.1:5432/test"),
        ),
        Strategy::Alternating,
        roles.0.clone(),
        env.store.clone(),
    );
    let err = bad.apply(1, &v1).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("admin-wrong-pw-2"), "{text}");
    assert!(!text.contains(&creds(&v1).password), "{text}");
}

fn tree_config(dir: &Path, roles: &Roles) -> Config {
    embedded::tree_config(
        dir,
        &format!(
            r#"
[policies.db]
manual = true
grace = "1s"
generator = {{ type = "password", length = 24 }}
max_attempts = 1

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

/// The whole actor tree on real time: the first version, a rotation whose grace expires,
/// then a rotation with a wrong admin password that fails before promotion and leaves the
/// current version (and its login) as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_tree_a_wrong_admin_password_leaves_current_untouched() {
    let Some(roles) = roles(2).await else { return };
    let (admin_role, _admin_guard) = admin_role(&roles).await;
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("pg-admin-url");
    std::fs::write(
        &url_file,
        format!("postgres://{admin_role}:admin-right-pw-1@127.0.0.1:5432/test"),
    )
    .unwrap();
    let cfg = tree_config(dir.path(), &roles);
    let store = embedded::open_store(dir.path());
    let options = TreeOptions {
        namespace: format!("{}/", dir.path().display()),
        ..TreeOptions::default()
    };
    let mut tree = tree::start(&cfg, store.clone(), Metrics::new(), options)
        .await
        .unwrap();
    let admin_api = embedded::admin(&tree);
    let s = secret("database_credentials");
    let labels = async |store: &EmbeddedStore| {
        store
            .versions(&s)
            .await
            .unwrap()
            .into_iter()
            .map(|v| (v.version, v.labels))
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(20), "v1 current", async || {
        labels(&store).await == vec![(1, vec![Label::Current])]
    })
    .await;
    let v1 = creds(&store.read_value(&s, 1).await.unwrap());
    assert_eq!(login(&v1.username, &v1.password).await, Login::Accepted);

    // A full rotation: v2 current, v1 refused once the 1 s grace has expired.
    admin_api.rotate(s.clone()).await.unwrap();
    eventually(Duration::from_secs(20), "v1 expired", async || {
        let l = labels(&store).await;
        l.len() == 2 && l[0].1.is_empty() && l[1].1 == vec![Label::Current]
    })
    .await;
    let v2 = creds(&store.read_value(&s, 2).await.unwrap());
    assert_eq!(login(&v2.username, &v2.password).await, Login::Accepted);
    assert_eq!(login(&v1.username, &v1.password).await, Login::Disabled);

    // A wrong admin password: the attempt fails before promotion.
    std::fs::write(
        &url_file,
        format!("postgres://{admin_role}:admin-wrong-pw-2@127.0.0.1:5432/test"),
    )
    .unwrap();
    admin_api.rotate(s.clone()).await.unwrap();
    eventually(Duration::from_secs(20), "attempt given up", async || {
        tree.context
            .board
            .get(&s)
            .is_some_and(|st| st.phase == "stuck" || st.phase == "idle" && st.attempts > 0)
    })
    .await;
    let l = labels(&store).await;
    assert!(
        l.iter()
            .any(|(v, labels)| *v == 2 && labels == &vec![Label::Current]),
        "v2 still current: {l:?}"
    );
    assert_eq!(
        login(&v2.username, &v2.password).await,
        Login::Accepted,
        "current untouched"
    );
    tree.shutdown(Duration::from_secs(5)).await;
}

/// The real binary with a `postgres` target, logging at trace: neither a password nor the
/// SCRAM verifier rotor sends in `ALTER ROLE ... PASSWORD` reaches the log, including what
/// the PostgreSQL client library logs about the statements it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_or_verifier_in_a_trace_log() {
    let Some(roles) = roles(2).await else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("pg-admin-url"),
        "postgres://postgres@127.0.0.1:5432/test",
    )
    .unwrap();
    let port = free_port();
    let cfg = rotor_bin::config(
        port,
        &format!(
            r#"[policies.db]
manual = true
grace = "1h"
generator = {{ type = "password", length = 24 }}

[[secrets]]
tenant = "tenant1"
key = "database_credentials"
policy = "db"
target = {{ type = "postgres", admin_url_file = "pg-admin-url", strategy = "alternating", roles = ["{a}", "{b}"] }}
"#,
            a = roles.0[0],
            b = roles.0[1],
        ),
    );
    let mut rotor = RotorBin::start_logging(dir, port, &cfg, LEAK_CHECK_LOG).await;
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    let current = async |version: u64| {
        let r = request(
            rotor.addr,
            "GET",
            "/admin/secrets/versions/tenant1/database_credentials",
            Some(token.trim()),
            None,
        )
        .await;
        r.status == 200
            && r.json()["versions"].as_array().is_some_and(|vs| {
                vs.iter()
                    .any(|v| v["version"] == version && v["labels"][0] == "current")
            })
    };
    eventually(Duration::from_secs(30), "v1 current", async || {
        current(1).await
    })
    .await;
    rotor.rotate("tenant1", "database_credentials").await;
    eventually(Duration::from_secs(30), "v2 current", async || {
        current(2).await
    })
    .await;
    assert!(rotor.terminate(Duration::from_secs(15)).success());

    let log = rotor.log();
    assert_logged_at_trace(&log);
    assert!(
        !log.contains("SCRAM-SHA-256$"),
        "a SCRAM verifier reached the log, in: {}",
        // Up to the verifier, which this message must not repeat.
        log.lines()
            .find(|l| l.contains("SCRAM-SHA-256$"))
            .and_then(|l| l.split("SCRAM-SHA-256$").next())
            .unwrap_or_default()
    );
    let store = EmbeddedStore::open(&dir.join("rotor.redb"), &dir.join("master.key")).unwrap();
    for v in 1..=2 {
        let value = store
            .read_value(&secret("database_credentials"), v)
            .await
            .unwrap();
        assert!(
            !log.contains(&creds(&value).password),
            "the password of v{v} reached the log"
        );
    }
}
