//! The `redis` target: one Redis ACL user, which can hold several passwords at once.
//!
//! `apply` adds the new password (`ACL SETUSER user on #<sha256>`), so during grace the user
//! logs in with the old and the new one; `test` opens a fresh connection and `AUTH`s with
//! the new one; `revoke` removes a version's password (`!<sha256>`), read back from the
//! store, at expiry or when a pending version is discarded; a rollback removes the new
//! password and keeps the old. Passwords go to the server as SHA-256 hashes in ACL
//! commands (the form Redis stores them in), so `ACL LOG`, `MONITOR` and error replies
//! never show one in clear text; only `AUTH` in `test` and `verify` sends it, as Redis
//! requires. `verify` answers `Lost` on `WRONGPASS` only (a restart without the aclfile
//! forgets the user, an older aclfile brings back old passwords); the re-apply that follows
//! is `apply`, which re-creates a missing user without permissions, as above.
//!
//! The user's permissions are the operator's business: rotor only adds and removes
//! passwords and turns the user `on`. A user rotor creates has no permissions until granted.
//! The admin connection comes from a `redis://[user:password@]host:port` URL in a file.
//! The stored value is `{"username","password"}`.
//!
//! `ACL SETUSER` changes live in the server's memory only: after a Redis restart, users come
//! back from the aclfile (or redis.conf) with their old passwords. So after every change
//! (`apply`, `revoke`, `restore`) rotor sends `ACL SAVE`, as `persist` says: `auto` (the
//! default) saves and, when the server cannot (no aclfile, the command refused or unknown as
//! on some managed Redis, any other failure), logs one warning per target and carries on;
//! `acl_save` fails the step instead; `none` never saves. A revoke saves even when the
//! password was already gone, so a step retried after a failed save still saves.

pub mod config;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::resp::{Conn, Reply};
use super::{Target, TargetError, ValueReader, Verified, json_value, scrub};
use crate::domain::{SecretRef, VersionNo};
use crate::generator::SecretValue;

const NAME: &str = "redis";

pub use super::credentials::Credentials;

/// Where and how to reach the server as an administrator.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct AdminUrl {
    pub addr: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl AdminUrl {
    /// Parses `redis://[user[:password]@]host[:port][/db]`. The error quotes nothing.
    pub fn parse(text: &str) -> Result<AdminUrl, &'static str> {
        const BAD: &str = "expected redis://[user:password@]host:port";
        let rest = text.trim().strip_prefix("redis://").ok_or(BAD)?;
        let rest = rest.split('/').next().unwrap_or_default();
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        if hostport.is_empty() {
            return Err(BAD);
        }
        let addr = if hostport.contains(':') && !hostport.ends_with(']') {
            hostport.to_owned()
        } else {
            format!("{hostport}:6379")
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| BAD)
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (
                    Some(decode(user)?).filter(|u| !u.is_empty()),
                    Some(decode(pass)?),
                ),
                None => (Some(decode(u)?), None),
            },
        };
        Ok(AdminUrl {
            addr,
            username,
            password,
        })
    }
}

/// Whether rotor's ACL changes are written to the server's aclfile with `ACL SAVE`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Persist {
    /// Save after every change; if the server cannot, warn once per target and carry on.
    #[default]
    Auto,
    /// Save after every change; the step fails if the server cannot.
    AclSave,
    /// Never save.
    None,
}

/// One Redis ACL user.
pub struct RedisTarget {
    /// The secret this target serves.
    secret: SecretRef,
    admin_url_file: PathBuf,
    user: String,
    reader: ValueReader,
    timeout: Duration,
    persist: Persist,
    /// Set when `Persist::Auto` has warned that changes are not saved.
    warned: AtomicBool,
}

impl RedisTarget {
    /// A target with `Persist::Auto`.
    pub fn new(
        secret: SecretRef,
        admin_url_file: PathBuf,
        user: String,
        reader: ValueReader,
    ) -> Self {
        RedisTarget {
            secret,
            admin_url_file,
            user,
            reader,
            timeout: Duration::from_secs(10),
            persist: Persist::Auto,
            warned: AtomicBool::new(false),
        }
    }

    pub fn with_persist(mut self, persist: Persist) -> Self {
        self.persist = persist;
        self
    }

    fn admin_url(&self) -> Result<AdminUrl, String> {
        super::credentials::admin_url(&self.admin_url_file, AdminUrl::parse)
    }

    /// An admin connection and the `host:port` it goes to.
    async fn admin(&self) -> Result<(Conn, String), String> {
        let url = self.admin_url()?;
        let mut conn = Conn::connect(&url.addr, self.timeout)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", url.addr))?;
        if let Some(password) = &url.password {
            let user = url.username.as_deref().unwrap_or("default");
            match conn
                .call(&[b"AUTH", user.as_bytes(), password.as_bytes()])
                .await
            {
                Ok(Reply::Simple(_)) => {}
                Ok(Reply::Error(e)) => {
                    return Err(format!(
                        "admin login as {user} refused: {}",
                        scrub(&e, &[password.as_bytes()])
                    ));
                }
                Ok(_) => return Err("admin login: unexpected reply".into()),
                Err(e) => return Err(format!("admin login: {e}")),
            }
        }
        Ok((conn, url.addr.clone()))
    }

    /// The password hashes the user holds now (empty when the user does not exist).
    async fn hashes(&self, conn: &mut Conn) -> Result<Vec<String>, String> {
        let reply = conn
            .call(&[b"ACL", b"GETUSER", self.user.as_bytes()])
            .await
            .map_err(|e| format!("ACL GETUSER: {e}"))?;
        let items = match reply {
            Reply::Array(Some(items)) => items,
            Reply::Array(None) | Reply::Bulk(None) => return Ok(Vec::new()),
            Reply::Error(e) => return Err(format!("ACL GETUSER refused: {e}")),
            _ => return Err("ACL GETUSER: unexpected reply".into()),
        };
        let mut it = items.into_iter();
        while let Some(key) = it.next() {
            let value = it.next();
            if key == Reply::Bulk(Some(b"passwords".to_vec())) {
                if let Some(Reply::Array(Some(list))) = value {
                    return Ok(list
                        .into_iter()
                        .filter_map(|r| match r {
                            Reply::Bulk(Some(b)) => String::from_utf8(b).ok(),
                            _ => None,
                        })
                        .collect());
                }
                return Ok(Vec::new());
            }
        }
        Ok(Vec::new())
    }

    /// `ACL SETUSER user <rules...>`; `hide` are strings scrubbed from a server error.
    async fn setuser(&self, conn: &mut Conn, rules: &[&str], hide: &[&[u8]]) -> Result<(), String> {
        let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", self.user.as_bytes()];
        args.extend(rules.iter().map(|r| r.as_bytes()));
        match conn.call(&args).await {
            Ok(Reply::Simple(_)) => Ok(()),
            Ok(Reply::Error(e)) => Err(format!("ACL SETUSER refused: {}", scrub(&e, hide))),
            Ok(_) => Err("ACL SETUSER: unexpected reply".into()),
            Err(e) => Err(format!("ACL SETUSER: {e}")),
        }
    }

    async fn read(&self, secret: &SecretRef, version: VersionNo) -> Result<Credentials, String> {
        Credentials::read(&self.reader, secret, version).await
    }

    /// A fresh connection to the server and `AUTH` with `creds`. `Err` when the server
    /// cannot be reached or answers nonsense: that says nothing about the credentials.
    async fn login(&self, creds: &Credentials) -> Result<Login, String> {
        let url = self.admin_url()?;
        let mut conn = Conn::connect(&url.addr, self.timeout)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", url.addr))?;
        match conn
            .call(&[
                b"AUTH",
                creds.username.as_bytes(),
                creds.password.as_bytes(),
            ])
            .await
        {
            Ok(Reply::Simple(_)) => Ok(Login::Accepted),
            Ok(Reply::Error(e)) => {
                let why = format!(
                    "AUTH as {} refused: {}",
                    creds.username,
                    scrub(&e, &[creds.password.as_bytes()])
                );
                // Redis 6 and later answer a wrong password, an unknown user and a user
                // that is off alike, with this code.
                Ok(if e.starts_with("WRONGPASS") {
                    Login::Refused(why)
                } else {
                    Login::Failed(why)
                })
            }
            Ok(_) => Err("AUTH: unexpected reply".into()),
            Err(e) => Err(format!("AUTH: {e}")),
        }
    }

    /// Adds the password in `creds` to the user (as its SHA-256 hash) and switches the user
    /// on; the counterpart of [`Self::remove`].
    async fn add(&self, conn: &mut Conn, creds: &Credentials) -> Result<(), String> {
        let hash = hash(&creds.password);
        let rule = format!("#{hash}");
        self.setuser(
            conn,
            &["on", &rule],
            &[creds.password.as_bytes(), hash.as_bytes()],
        )
        .await
    }

    /// Removes the password `creds` (of some version) if the user still holds it.
    async fn remove(&self, conn: &mut Conn, creds: &Credentials) -> Result<(), String> {
        let hash = hash(&creds.password);
        if !self.hashes(conn).await?.contains(&hash) {
            return Ok(());
        }
        let rule = format!("!{hash}");
        self.setuser(
            conn,
            &[&rule],
            &[creds.password.as_bytes(), hash.as_bytes()],
        )
        .await
    }

    /// Saves the ACLs to the server's aclfile (`ACL SAVE`) as `persist` says, after a change.
    /// `hide` are the passwords involved, scrubbed from a server error.
    async fn save(
        &self,
        conn: &mut Conn,
        addr: &str,
        secret: &SecretRef,
        hide: &[&Credentials],
    ) -> Result<(), String> {
        if self.persist == Persist::None {
            return Ok(());
        }
        let why = match conn.call(&[b"ACL", b"SAVE"]).await {
            Ok(Reply::Simple(_)) => return Ok(()),
            Ok(Reply::Error(e)) if e.contains("not configured to use an ACL file") => {
                "this Redis has no aclfile".to_owned()
            }
            Ok(Reply::Error(e)) => {
                let hashes: Vec<String> = hide.iter().map(|c| hash(&c.password)).collect();
                let mut secrets: Vec<&[u8]> = hide.iter().map(|c| c.password.as_bytes()).collect();
                secrets.extend(hashes.iter().map(|h| h.as_bytes()));
                format!("Redis answered {}", scrub(&e, &secrets))
            }
            Ok(_) => "unexpected reply".to_owned(),
            Err(e) => e.to_string(),
        };
        if self.persist == Persist::AclSave {
            return Err(format!(
                "ACL SAVE failed: {why}; the change to user {} is in memory only and a Redis \
                 restart would lose it; configure `aclfile` in redis.conf (and allow ACL SAVE \
                 for the admin user) or set persist = \"none\"",
                self.user
            ));
        }
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                secret = %secret,
                user = %self.user,
                addr = %addr,
                reason = %why,
                "ACL changes to user {} on {addr} are not persisted (ACL SAVE failed: {why}): a \
                 Redis restart would lose rotated passwords; configure `aclfile` in redis.conf \
                 (and allow ACL SAVE for the admin user), or set persist = \"none\" on this \
                 target to silence this warning",
                self.user
            );
        }
        Ok(())
    }
}

/// How Redis answered an `AUTH` with a secret's credentials.
enum Login {
    Accepted,
    /// `WRONGPASS`: the server does not know this user with this password.
    Refused(String),
    /// Any other error reply; the message is scrubbed.
    Failed(String),
}

/// Lowercase hex SHA-256: how Redis names a stored password.
fn hash(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

#[async_trait::async_trait]
impl Target for RedisTarget {
    fn type_name(&self) -> &'static str {
        NAME
    }

    async fn shape_value(
        &self,
        version: VersionNo,
        generated: SecretValue,
    ) -> Result<SecretValue, TargetError> {
        let secret = &self.secret;
        let password = std::str::from_utf8(generated.expose()).map_err(|_| {
            TargetError::new(
                NAME,
                "generate",
                secret,
                version,
                "the generated password is not UTF-8",
            )
        })?;
        Ok(json_value(&[
            ("username", &self.user),
            ("password", password),
        ]))
    }

    async fn apply(&self, version: VersionNo, value: &SecretValue) -> Result<(), TargetError> {
        let secret = &self.secret;
        let fail = |m: String| TargetError::new(NAME, "apply", secret, version, m);
        let creds = Credentials::parse(value).map_err(|m| fail(m.into()))?;
        if creds.username != self.user {
            return Err(fail(format!(
                "stored username {} is not the configured user {}",
                creds.username, self.user
            )));
        }
        let (mut conn, addr) = self.admin().await.map_err(fail)?;
        self.add(&mut conn, &creds).await.map_err(fail)?;
        self.save(&mut conn, &addr, secret, &[&creds])
            .await
            .map_err(fail)
    }

    async fn test(&self, version: VersionNo, value: &SecretValue) -> Result<(), TargetError> {
        let secret = &self.secret;
        let fail = |m: String| TargetError::new(NAME, "test", secret, version, m);
        let creds = Credentials::parse(value).map_err(|m| fail(m.into()))?;
        match self.login(&creds).await.map_err(fail)? {
            Login::Accepted => Ok(()),
            Login::Refused(why) => Err(fail(why).credential_refused()),
            Login::Failed(why) => Err(fail(why)),
        }
    }

    /// `AUTH` as the user with `version`'s password, as `test` does: `WRONGPASS` (the user
    /// lacks that password, or is missing or off, as after a restart without its aclfile)
    /// is `Lost`, and `apply` adds the password and switches the user on again.
    async fn verify(
        &self,
        version: VersionNo,
        value: &SecretValue,
    ) -> Result<Verified, TargetError> {
        let secret = &self.secret;
        let fail = |m: String| TargetError::new(NAME, "verify", secret, version, m);
        let creds = Credentials::parse(value).map_err(|m| fail(m.into()))?;
        match self.login(&creds).await.map_err(fail)? {
            Login::Accepted => Ok(Verified::Holds),
            Login::Refused(_) => Ok(Verified::Lost),
            Login::Failed(why) => Err(fail(why)),
        }
    }

    async fn revoke(&self, version: VersionNo) -> Result<(), TargetError> {
        let secret = &self.secret;
        let fail = |m: String| TargetError::new(NAME, "revoke", secret, version, m);
        let (mut conn, addr) = self.admin().await.map_err(fail)?;
        // Never stored, so never applied: nothing to remove or save.
        let Ok(creds) = self.read(secret, version).await else {
            return Ok(());
        };
        self.remove(&mut conn, &creds).await.map_err(fail)?;
        // Saved even when the password was already gone: a retry after a failed save.
        self.save(&mut conn, &addr, secret, &[&creds])
            .await
            .map_err(fail)
    }

    async fn restore(&self, restore: VersionNo, revoke: VersionNo) -> Result<(), TargetError> {
        let secret = &self.secret;
        let fail = |m: String| TargetError::new(NAME, "restore", secret, restore, m);
        let (mut conn, addr) = self.admin().await.map_err(fail)?;
        // The restored password was never removed during grace; adding it again keeps
        // this idempotent even if an operator removed it by hand.
        let creds = self.read(secret, restore).await.map_err(fail)?;
        self.add(&mut conn, &creds).await.map_err(fail)?;
        // Never stored, so never applied.
        let revoked = self.read(secret, revoke).await.ok();
        if let Some(revoked) = &revoked {
            self.remove(&mut conn, revoked).await.map_err(fail)?;
        }
        let hide: Vec<&Credentials> = std::iter::once(&creds).chain(revoked.as_ref()).collect();
        self.save(&mut conn, &addr, secret, &hide)
            .await
            .map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls_parse() {
        let u = AdminUrl::parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!(u.addr, "127.0.0.1:6379");
        assert!(u.username.is_none() && u.password.is_none());
        let u = AdminUrl::parse("redis://admin:p%40ss@localhost/0\n").unwrap();
        assert_eq!(u.addr, "localhost:6379");
        assert_eq!(u.username.as_deref(), Some("admin"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        let u = AdminUrl::parse("redis://:only@h:1").unwrap();
        assert!(u.username.is_none());
        assert_eq!(u.password.as_deref(), Some("only"));
        assert!(AdminUrl::parse("http://x").is_err());
    }
}
