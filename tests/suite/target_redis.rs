//! The `redis` target against the machine's real Redis (127.0.0.1:6379, no aclfile), with
//! random ACL user names: AUTH with the old and the new password during grace, only the new
//! after expiry, the old again (and not the new) after a rollback, and no password in
//! errors. `persist`: against a private `redis-server` with an aclfile, rotations and
//! rollbacks survive a kill and restart (and with `persist = "none"` they do not); against
//! the machine's Redis, `auto` warns once and carries on, `acl_save` fails with a clear
//! error.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::redis_server::RedisServer;
use crate::common::targets::{Env, password_spec, random_name, secret, service_or_skip};
use rotor::generator::SecretValue;
use rotor::target::Target;
use rotor::target::redis::{Credentials, Persist, RedisTarget};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const ADDR: &str = "127.0.0.1:6379";

/// Sends one command (RESP) to the machine's Redis and returns the first reply line.
async fn command(args: &[&str]) -> Result<String, String> {
    command_at(ADDR, args).await
}

/// Sends one command (RESP) to `addr` and returns the first reply line.
async fn command_at(addr: &str, args: &[&str]) -> Result<String, String> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let mut stream = BufReader::new(stream);
    let mut buf = format!("*{}\r\n", args.len());
    for a in args {
        buf.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    stream
        .get_mut()
        .write_all(buf.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    stream
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    Ok(line.trim_end().to_owned())
}

/// How an AUTH ended. Only Redis's `WRONGPASS` counts as refused; any other answer or
/// failure (a timeout, `max number of clients reached`, a dead server) fails the test with
/// what it was, so a broken connection can never pass for a refused password.
#[derive(Debug, PartialEq)]
enum Auth {
    Accepted,
    WrongPass,
}

async fn auth(user: &str, password: &str) -> Auth {
    auth_at(ADDR, user, password).await
}

async fn auth_at(addr: &str, user: &str, password: &str) -> Auth {
    match command_at(addr, &["AUTH", user, password]).await {
        Ok(reply) if reply == "+OK" => Auth::Accepted,
        Ok(reply) if reply.starts_with("-WRONGPASS ") => Auth::WrongPass,
        Ok(reply) => panic!("AUTH as {user} at {addr} answered neither OK nor WRONGPASS: {reply}"),
        Err(e) => panic!("AUTH as {user} at {addr} failed: {e}"),
    }
}

/// Deletes the ACL user when the test ends.
struct User(String);

impl Drop for User {
    fn drop(&mut self) {
        let _ = std::process::Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", "6379", "ACL", "DELUSER", &self.0])
            .output();
    }
}

async fn user() -> Option<User> {
    let reachable = match command(&["PING"]).await {
        Ok(r) if r == "+PONG" => Ok(()),
        Ok(r) => Err(format!("PING answered {r}")),
        Err(e) => Err(e),
    };
    service_or_skip("Redis", reachable).then(|| User(random_name("rotor_t")))
}

fn target(env: &Env, user: &User, url: &str) -> RedisTarget {
    let file = env.dir.path().join("redis-admin-url");
    std::fs::write(&file, url).unwrap();
    RedisTarget::new(
        secret("cache_credentials"),
        file,
        user.0.clone(),
        env.store.clone(),
    )
}

async fn rotate_to(env: &Env, t: &RedisTarget, version: u64) -> SecretValue {
    env.rotate(t, &secret("cache_credentials"), version, &password_spec())
        .await
}

fn creds(v: &SecretValue) -> Credentials {
    Credentials::parse(v).unwrap()
}

#[tokio::test]
async fn old_and_new_work_in_grace_only_new_after_expiry() {
    let Some(user) = user().await else { return };
    let env = Env::new();
    let t = target(&env, &user, "redis://127.0.0.1:6379");
    let v1 = creds(&rotate_to(&env, &t, 1).await);
    assert_eq!(v1.username, user.0);
    assert_eq!(auth(&user.0, &v1.password).await, Auth::Accepted);
    assert_eq!(
        auth(&user.0, "not-the-password").await,
        Auth::WrongPass,
        "a wrong password is refused"
    );

    let v2 = creds(&rotate_to(&env, &t, 2).await);
    assert_eq!(
        auth(&user.0, &v1.password).await,
        Auth::Accepted,
        "old works in grace"
    );
    assert_eq!(
        auth(&user.0, &v2.password).await,
        Auth::Accepted,
        "new works in grace"
    );

    t.revoke(1).await.expect("expire");
    assert_eq!(
        auth(&user.0, &v1.password).await,
        Auth::WrongPass,
        "old refused after expiry"
    );
    assert_eq!(
        auth(&user.0, &v2.password).await,
        Auth::Accepted,
        "new works"
    );
    t.revoke(1).await.expect("expiry is idempotent");
}

#[tokio::test]
async fn rollback_keeps_the_old_and_removes_the_new() {
    let Some(user) = user().await else { return };
    let env = Env::new();
    let t = target(&env, &user, "redis://127.0.0.1:6379/0");
    let v1 = creds(&rotate_to(&env, &t, 1).await);
    let v2 = creds(&rotate_to(&env, &t, 2).await);
    t.restore(1, 2).await.expect("rollback");
    assert_eq!(auth(&user.0, &v1.password).await, Auth::Accepted);
    assert_eq!(auth(&user.0, &v2.password).await, Auth::WrongPass);
    t.restore(1, 2).await.expect("rollback is idempotent");
}

#[tokio::test]
async fn errors_never_hold_a_password() {
    let Some(user) = user().await else { return };
    let env = Env::new();
    let s = secret("cache_credentials");
    // Admin login with a wrong password for a user that does not exist.
    let bad = target(
        &env,
        &user,
        "redis://nobody_rotor:admin-wrong-pw@127.0.0.1:6379",
    );
    let v1 = env.generate(&bad, &s, 1, &password_spec()).await;
    let err = bad.apply(1, &v1).await.unwrap_err().to_string();
    assert!(err.contains("refused"), "{err}");
    assert!(!err.contains("admin-wrong-pw"), "{err}");
    assert!(!err.contains(&creds(&v1).password), "{err}");
    // Testing a password the server never got.
    let good = target(&env, &user, "redis://127.0.0.1:6379");
    let err = good.test(1, &v1).await.unwrap_err().to_string();
    assert!(err.contains(&user.0), "{err}");
    assert!(!err.contains(&creds(&v1).password), "{err}");
}

/// How Redis names a stored password: lowercase hex SHA-256.
fn sha256(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

/// Log lines written on this thread while the guard lives. `#[tokio::test]` runs the test
/// on one thread, so parallel tests' lines are not mixed in.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The lines warning that ACL changes are not persisted.
    fn not_persisted(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("not persisted"))
            .map(str::to_owned)
            .collect()
    }
}

/// Asserts that none of the values' passwords or hashes is in `text` (without printing
/// either).
fn holds_no_secret(what: &str, text: &str, values: &[&Credentials]) {
    for (i, c) in values.iter().enumerate() {
        assert!(
            !text.contains(&c.password),
            "{what} holds password #{i} in clear text"
        );
        assert!(
            !text.contains(&sha256(&c.password)),
            "{what} holds the hash of password #{i}"
        );
    }
}

/// A target for a fresh random user of a private server, with `persist`.
fn private_target(env: &Env, server: &RedisServer, persist: Persist) -> (RedisTarget, String) {
    let name = random_name("rotor_p");
    let file = env.dir.path().join("redis-admin-url");
    std::fs::write(&file, server.url()).unwrap();
    let t = RedisTarget::new(
        secret("cache_credentials"),
        file,
        name.clone(),
        env.store.clone(),
    )
    .with_persist(persist);
    (t, name)
}

/// The aclfile's line for `user`, if any.
fn acl_line(server: &RedisServer, user: &str) -> Option<String> {
    let text = std::fs::read_to_string(server.aclfile()).expect("aclfile readable");
    let prefix = format!("user {user} ");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .map(str::to_owned)
}

#[tokio::test]
async fn rotations_survive_a_redis_restart_with_an_aclfile() {
    for persist in [Persist::Auto, Persist::AclSave] {
        let Some(mut server) = RedisServer::start() else {
            return;
        };
        let (logs, _guard) = Logs::capture();
        let env = Env::new();
        let (t, user) = private_target(&env, &server, persist);
        let v1 = creds(&rotate_to(&env, &t, 1).await);
        let v2 = creds(&rotate_to(&env, &t, 2).await);
        t.revoke(1).await.expect("expire v1");

        let line = acl_line(&server, &user)
            .unwrap_or_else(|| panic!("{persist:?}: the aclfile has no line for {user}"));
        assert!(
            line.contains(&format!("#{}", sha256(&v2.password))),
            "{persist:?}: the aclfile holds v2's hash"
        );
        assert!(
            !line.contains(&sha256(&v1.password)),
            "{persist:?}: the aclfile no longer holds v1's hash"
        );
        assert!(line.contains(" on "), "{persist:?}: the user is on");

        server.restart();
        let addr = server.addr();
        assert_eq!(
            auth_at(&addr, &user, &v2.password).await,
            Auth::Accepted,
            "{persist:?}: v2 logs in after the restart"
        );
        assert_eq!(
            auth_at(&addr, &user, &v1.password).await,
            Auth::WrongPass,
            "{persist:?}: v1 stays refused after the restart"
        );
        assert!(
            logs.not_persisted().is_empty(),
            "{persist:?}: no warning when Redis saves: {:?}",
            logs.not_persisted()
        );
        holds_no_secret("the logs", &logs.text(), &[&v1, &v2]);
    }
}

#[tokio::test]
async fn a_rollback_survives_a_redis_restart_with_an_aclfile() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let env = Env::new();
    let (t, user) = private_target(&env, &server, Persist::Auto);
    let v1 = creds(&rotate_to(&env, &t, 1).await);
    let v2 = creds(&rotate_to(&env, &t, 2).await);
    t.restore(1, 2).await.expect("rollback");
    server.restart();
    let addr = server.addr();
    assert_eq!(
        auth_at(&addr, &user, &v1.password).await,
        Auth::Accepted,
        "v1 logs in after the restart"
    );
    assert_eq!(
        auth_at(&addr, &user, &v2.password).await,
        Auth::WrongPass,
        "v2 stays refused after the restart"
    );
}

/// The control: without ACL SAVE, the same restart loses the rotation, so the tests above
/// can fail.
#[tokio::test]
async fn persist_none_loses_rotations_on_a_redis_restart() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let env = Env::new();
    let (t, user) = private_target(&env, &server, Persist::None);
    rotate_to(&env, &t, 1).await;
    let v2 = creds(&rotate_to(&env, &t, 2).await);
    t.revoke(1).await.expect("expire v1");
    assert_eq!(
        auth_at(&server.addr(), &user, &v2.password).await,
        Auth::Accepted,
        "v2 logs in before the restart"
    );
    assert!(
        acl_line(&server, &user).is_none(),
        "nothing was saved to the aclfile"
    );
    server.restart();
    assert_eq!(
        auth_at(&server.addr(), &user, &v2.password).await,
        Auth::WrongPass,
        "the restarted server does not know v2"
    );
}

#[tokio::test]
async fn auto_warns_once_and_rotates_when_redis_has_no_aclfile() {
    let Some(quiet_user) = user().await else {
        return;
    };
    let Some(user) = user().await else { return };
    let (logs, _guard) = Logs::capture();
    let env = Env::new();
    let t = target(&env, &user, "redis://127.0.0.1:6379");
    let v1 = creds(&rotate_to(&env, &t, 1).await);
    let v2 = creds(&rotate_to(&env, &t, 2).await);
    t.revoke(1).await.expect("expire v1");
    t.restore(1, 2).await.expect("rollback");
    assert_eq!(
        auth(&user.0, &v1.password).await,
        Auth::Accepted,
        "the rotation took effect"
    );

    let warnings = logs.not_persisted();
    assert_eq!(
        warnings.len(),
        1,
        "one warning per target, however many changes (the machine's Redis must have no \
         aclfile): {warnings:?}"
    );
    let w = &warnings[0];
    assert!(w.contains(&user.0), "names the user: {w}");
    assert!(w.contains(ADDR), "names host:port: {w}");
    assert!(w.contains("no aclfile"), "says why: {w}");
    assert!(w.contains("restart"), "says what is lost: {w}");
    assert!(
        w.contains("`aclfile`") && w.contains(r#"persist = "none""#),
        "says how to fix or silence it: {w}"
    );
    holds_no_secret("the logs", &logs.text(), &[&v1, &v2]);

    // persist = "none" says nothing.
    let env = Env::new();
    let quiet = target(&env, &quiet_user, "redis://127.0.0.1:6379").with_persist(Persist::None);
    rotate_to(&env, &quiet, 1).await;
    assert_eq!(
        logs.not_persisted().len(),
        1,
        "persist = \"none\" is silent"
    );
}

#[tokio::test]
async fn acl_save_fails_the_step_clearly_when_redis_has_no_aclfile() {
    let Some(user) = user().await else { return };
    let env = Env::new();
    let t = target(&env, &user, "redis://127.0.0.1:6379").with_persist(Persist::AclSave);
    let s = secret("cache_credentials");
    let value = env.generate(&t, &s, 1, &password_spec()).await;
    let v1 = creds(&value);
    let err = t.apply(1, &value).await.unwrap_err().to_string();
    assert!(err.contains("ACL SAVE failed"), "{err}");
    assert!(err.contains("no aclfile"), "{err}");
    assert!(
        err.contains("`aclfile`") && err.contains(r#"persist = "none""#),
        "{err}"
    );
    holds_no_secret("the apply error", &err, &[&v1]);
    // The password is in memory now; removing it fails the same way, quoting nothing.
    let err = t.revoke(1).await.unwrap_err().to_string();
    assert!(err.contains("ACL SAVE failed"), "{err}");
    holds_no_secret("the revoke error", &err, &[&v1]);
}
