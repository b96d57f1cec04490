//! The `redis` target against the machine's real Redis (127.0.0.1:6379), with random ACL
//! user names: AUTH with the old and the new password during grace, only the new after
//! expiry, the old again (and not the new) after a rollback, and no password in errors.

mod common;

use std::time::Duration;

use common::targets::{Env, password_spec, random_name, secret, service_or_skip};
use rotor::generator::SecretValue;
use rotor::target::Target;
use rotor::target::redis::{Credentials, RedisTarget};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const ADDR: &str = "127.0.0.1:6379";

/// Sends one command (RESP) and returns the first reply line.
async fn command(args: &[&str]) -> Result<String, String> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(ADDR))
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

async fn auth(user: &str, password: &str) -> bool {
    command(&["AUTH", user, password]).await.as_deref() == Ok("+OK")
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
    RedisTarget::new(file, user.0.clone(), env.store.clone())
}

async fn rotate_to(env: &Env, t: &RedisTarget, version: u64) -> SecretValue {
    let s = secret("cache_credentials");
    let value = env.generate(t, &s, version, &password_spec());
    t.apply(&s, version, &value).await.expect("apply");
    t.test(&s, version, &value).await.expect("test");
    t.promote(&s, version, version.checked_sub(1).filter(|v| *v > 0))
        .await
        .expect("promote");
    value
}

fn creds(v: &SecretValue) -> Credentials {
    Credentials::parse(v).unwrap()
}

#[tokio::test]
async fn old_and_new_work_in_grace_only_new_after_expiry() {
    let Some(user) = user().await else { return };
    let env = Env::new();
    let t = target(&env, &user, "redis://127.0.0.1:6379");
    let s = secret("cache_credentials");
    let v1 = creds(&rotate_to(&env, &t, 1).await);
    assert_eq!(v1.username, user.0);
    assert!(auth(&user.0, &v1.password).await);
    assert!(
        !auth(&user.0, "not-the-password").await,
        "a wrong password is refused"
    );

    let v2 = creds(&rotate_to(&env, &t, 2).await);
    assert!(auth(&user.0, &v1.password).await, "old works in grace");
    assert!(auth(&user.0, &v2.password).await, "new works in grace");

    t.revoke(&s, 1).await.expect("expire");
    assert!(
        !auth(&user.0, &v1.password).await,
        "old refused after expiry"
    );
    assert!(auth(&user.0, &v2.password).await, "new works");
    t.revoke(&s, 1).await.expect("expiry is idempotent");
}

#[tokio::test]
async fn rollback_keeps_the_old_and_removes_the_new() {
    let Some(user) = user().await else { return };
    let env = Env::new();
    let t = target(&env, &user, "redis://127.0.0.1:6379/0");
    let s = secret("cache_credentials");
    let v1 = creds(&rotate_to(&env, &t, 1).await);
    let v2 = creds(&rotate_to(&env, &t, 2).await);
    t.restore(&s, 1, 2).await.expect("rollback");
    assert!(auth(&user.0, &v1.password).await);
    assert!(!auth(&user.0, &v2.password).await);
    t.restore(&s, 1, 2).await.expect("rollback is idempotent");
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
    let v1 = env.generate(&bad, &s, 1, &password_spec());
    let err = bad.apply(&s, 1, &v1).await.unwrap_err().to_string();
    assert!(err.contains("refused"), "{err}");
    assert!(!err.contains("admin-wrong-pw"), "{err}");
    assert!(!err.contains(&creds(&v1).password), "{err}");
    // Testing a password the server never got.
    let good = target(&env, &user, "redis://127.0.0.1:6379");
    let err = good.test(&s, 1, &v1).await.unwrap_err().to_string();
    assert!(err.contains(&user.0), "{err}");
    assert!(!err.contains(&creds(&v1).password), "{err}");
}
