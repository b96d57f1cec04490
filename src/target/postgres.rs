//! The `postgres` target: PostgreSQL login roles.
//!
//! Two strategies:
//!
//! - `alternating` (two roles, e.g. `app_blue` and `app_green`; the AWS alternating-users
//!   model): version `v` lives on `roles[(v - 1) % 2]`. `apply` sets the new password on the
//!   inactive role and enables its login, so during grace both roles log in; `revoke` at
//!   expiry disables the old role's login (`NOLOGIN`); a rollback re-enables the previous
//!   role and disables the new one. The mapping is derived from the version number, so it
//!   survives restarts without any state. `NOLOGIN` refuses new logins only: sessions a
//!   pool opened during grace stay up, unless `terminate_sessions = true`, which ends the
//!   old role's sessions at expiry as well.
//! - `single` (one role): `apply` replaces the password, so the previous one stops working
//!   at once and no grace is possible (`rotor check` refuses a grace period with it). A
//!   rollback sets the previous version's password back.
//!
//! Passwords are sent as client-side SCRAM-SHA-256 verifiers
//! ([`postgres_protocol::password::scram_sha_256`]): `ALTER ROLE` takes no bind
//! parameters, and a verifier in the statement leaves no clear-text password in the
//! server's logs or `pg_stat_statements`. Identifiers are quoted.
//!
//! The admin connection comes from a URL in a file (`admin_url_file`), read at every
//! operation so an operator can rotate the admin credentials without a restart. The stored
//! value is what a consumer needs: `{"username","password","url"}`.
//!
//! `verify` logs in with the current version as `test` does; a refused login (SQLSTATE
//! 28P01 or 28000: a password restored from a backup, `NOLOGIN`, a missing role) is
//! `Lost`, and re-applying (`apply`) sets the password and `LOGIN` on its role again.
//!
//! Beware: a server that trusts local logins (`trust` in `pg_hba.conf`) accepts any
//! password, so `test` proves nothing there. Require `scram-sha-256` for the rotated roles
//! (see `.ci/setup-postgres.sh`: a rule for members of the `rotor_managed` group).

pub mod config;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};
use zeroize::Zeroizing;

use super::{Target, TargetError, ValueReader, Verified, json_value};
use crate::domain::{SecretRef, VersionNo};
use crate::generator::SecretValue;

const NAME: &str = "postgres";

/// Characters left as they are in the user-info and path parts of the consumer URL.
const URL_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How versions map to roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Two roles taking turns; grace works.
    Alternating,
    /// One role whose password is replaced; no grace.
    Single,
}

pub use super::credentials::Credentials;

/// PostgreSQL login roles.
pub struct PostgresTarget {
    /// The secret this target serves.
    secret: SecretRef,
    admin_url_file: PathBuf,
    strategy: Strategy,
    /// Two roles for `alternating`, one for `single`; validated identifiers.
    roles: Vec<String>,
    reader: ValueReader,
    connect_timeout: Duration,
    /// `alternating`: end the revoked role's open sessions at revoke.
    terminate_sessions: bool,
}

impl PostgresTarget {
    pub fn new(
        secret: SecretRef,
        admin_url_file: PathBuf,
        strategy: Strategy,
        roles: Vec<String>,
        reader: ValueReader,
    ) -> Self {
        PostgresTarget {
            secret,
            admin_url_file,
            strategy,
            roles,
            reader,
            connect_timeout: Duration::from_secs(10),
            terminate_sessions: false,
        }
    }

    /// With `alternating`, `revoke` also ends the sessions the revoked role still has
    /// open (`pg_terminate_backend`); the admin role needs `pg_signal_backend` (or to be a
    /// superuser) for that. Without it, `NOLOGIN` refuses new logins only.
    pub fn terminating_sessions(mut self, on: bool) -> Self {
        self.terminate_sessions = on;
        self
    }

    /// The role that holds `version`.
    pub fn role_for(&self, version: VersionNo) -> &str {
        match self.strategy {
            Strategy::Single => &self.roles[0],
            Strategy::Alternating => {
                let i = (version.saturating_sub(1) % self.roles.len() as u64) as usize;
                &self.roles[i]
            }
        }
    }

    /// The admin connection settings, read from the file now.
    fn admin_config(&self) -> Result<Config, String> {
        let mut config = super::credentials::admin_url(&self.admin_url_file, |text| {
            // The parser's message may quote the text, which holds a password.
            Config::from_str(text)
                .map_err(|_| "expected postgresql://user:password@host:port/dbname")
        })?;
        config.connect_timeout(self.connect_timeout);
        Ok(config)
    }

    async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = config.connect(NoTls).await?;
        // The connection task ends when the client is dropped.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    async fn admin(&self) -> Result<Client, String> {
        let config = self.admin_config()?;
        Self::connect(&config)
            .await
            .map_err(|e| format!("admin connection failed: {}", db_message(&e)))
    }

    /// Runs admin statements in one transaction.
    async fn admin_exec(&self, sql: &str) -> Result<(), String> {
        let client = self.admin().await?;
        client
            .batch_execute(&format!("BEGIN; {sql} COMMIT;"))
            .await
            .map_err(|e| format!("statement failed: {}", db_message(&e)))
    }

    /// Logs in as `username` with `password`: `Ok(true)` when it works, `Ok(false)` when the
    /// server refuses the credentials, `Err` for anything else (server unreachable).
    async fn login(&self, username: &str, password: &str) -> Result<bool, String> {
        let mut config = self.admin_config()?;
        config.user(username).password(password);
        match Self::connect(&config).await {
            Ok(client) => client
                .simple_query("SELECT 1")
                .await
                .map(|_| true)
                .map_err(|e| format!("query as {username} failed: {}", db_message(&e))),
            Err(e) if is_refused(&e) => Ok(false),
            Err(e) => Err(format!(
                "connection as {username} failed: {}",
                db_message(&e)
            )),
        }
    }

    async fn read(&self, secret: &SecretRef, version: VersionNo) -> Result<Credentials, String> {
        Credentials::read(&self.reader, secret, version).await
    }

    async fn set_password(&self, role: &str, password: &str) -> Result<(), String> {
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        self.admin_exec(&format!(
            "ALTER ROLE {} WITH LOGIN PASSWORD {};",
            quote_ident(role),
            quote_literal(&verifier)
        ))
        .await
    }

    async fn single_revoke(&self, secret: &SecretRef, version: VersionNo) -> Result<(), String> {
        // Stateless and idempotent: only if `version`'s password is the one the role has
        // now (a pending version being discarded) is anything changed.
        let creds = match self.read(secret, version).await {
            Ok(c) => c,
            // A version that was never stored was never applied.
            Err(_) => return Ok(()),
        };
        if !self.login(&creds.username, &creds.password).await? {
            return Ok(());
        }
        let previous = match version.checked_sub(1).filter(|v| *v > 0) {
            Some(v) => self.read(secret, v).await.ok(),
            None => None,
        };
        match previous {
            Some(p) => self.set_password(&p.username, &p.password).await,
            None => {
                self.admin_exec(&format!(
                    "ALTER ROLE {} WITH NOLOGIN PASSWORD NULL;",
                    quote_ident(&creds.username)
                ))
                .await
            }
        }
    }
}

#[async_trait::async_trait]
impl Target for PostgresTarget {
    fn type_name(&self) -> &'static str {
        NAME
    }

    fn shape_value(
        &self,
        version: VersionNo,
        generated: SecretValue,
    ) -> Result<SecretValue, TargetError> {
        let secret = &self.secret;
        let fail = |m: String| TargetError::new(NAME, "generate", secret, version, m);
        let password = std::str::from_utf8(generated.expose())
            .map_err(|_| fail("the generated password is not UTF-8".into()))?;
        let config = self.admin_config().map_err(fail)?;
        let username = self.role_for(version);
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) if h.contains(':') => format!("[{h}]"),
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => utf8_percent_encode(&p.to_string_lossy(), URL_SAFE).to_string(),
            None => "localhost".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let db = config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("postgres");
        let url = Zeroizing::new(format!(
            "postgresql://{}:{}@{host}:{port}/{}",
            utf8_percent_encode(username, URL_SAFE),
            utf8_percent_encode(password, URL_SAFE),
            utf8_percent_encode(db, URL_SAFE),
        ));
        Ok(json_value(&[
            ("username", username),
            ("password", password),
            ("url", &url),
        ]))
    }

    async fn apply(&self, version: VersionNo, value: &SecretValue) -> Result<(), TargetError> {
        let secret = &self.secret;
        let fail = |m: String| TargetError::new(NAME, "apply", secret, version, m);
        let creds = Credentials::parse(value).map_err(|m| fail(m.into()))?;
        if creds.username != self.role_for(version) {
            return Err(fail(format!(
                "stored username {} is not the role {} that holds v{version}",
                creds.username,
                self.role_for(version)
            )));
        }
        self.set_password(&creds.username, &creds.password)
            .await
            .map_err(fail)
    }

    async fn test(&self, version: VersionNo, value: &SecretValue) -> Result<(), TargetError> {
        let secret = &self.secret;
        let fail = |m: String| TargetError::new(NAME, "test", secret, version, m);
        let creds = Credentials::parse(value).map_err(|m| fail(m.into()))?;
        match self.login(&creds.username, &creds.password).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(fail(format!(
                "the server refused the new password of {}",
                creds.username
            ))
            .credential_refused()),
            Err(m) => Err(fail(m)),
        }
    }

    /// Logs in with `version`'s credentials, as `test` does: a refused login (wrong
    /// password, `NOLOGIN`, no such role: what a restore from an older backup leaves) is
    /// `Lost`, and `apply` sets the password and `LOGIN` on the version's role again, for
    /// `alternating` and `single` alike.
    async fn verify(
        &self,
        version: VersionNo,
        value: &SecretValue,
    ) -> Result<Verified, TargetError> {
        let secret = &self.secret;
        let fail = |m: String| TargetError::new(NAME, "verify", secret, version, m);
        let creds = Credentials::parse(value).map_err(|m| fail(m.into()))?;
        match self.login(&creds.username, &creds.password).await {
            Ok(true) => Ok(Verified::Holds),
            Ok(false) => Ok(Verified::Lost),
            Err(m) => Err(fail(m)),
        }
    }

    async fn revoke(&self, version: VersionNo) -> Result<(), TargetError> {
        let secret = &self.secret;
        let r = match self.strategy {
            Strategy::Alternating => {
                let role = self.role_for(version);
                let nologin = format!("ALTER ROLE {} WITH NOLOGIN;", quote_ident(role));
                match self.admin_exec(&nologin).await {
                    // Once NOLOGIN is committed, so no new session slips in after.
                    Ok(()) if self.terminate_sessions => self
                        .admin_exec(&format!(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                             WHERE usename = {} AND pid <> pg_backend_pid();",
                            quote_literal(role)
                        ))
                        .await
                        .map_err(|m| format!("ending the sessions of {role}: {m}")),
                    r => r,
                }
            }
            Strategy::Single => self.single_revoke(secret, version).await,
        };
        r.map_err(|m| TargetError::new(NAME, "revoke", secret, version, m))
    }

    async fn restore(&self, restore: VersionNo, revoke: VersionNo) -> Result<(), TargetError> {
        let secret = &self.secret;
        let r = match self.strategy {
            Strategy::Alternating => {
                self.admin_exec(&format!(
                    "ALTER ROLE {} WITH LOGIN; ALTER ROLE {} WITH NOLOGIN;",
                    quote_ident(self.role_for(restore)),
                    quote_ident(self.role_for(revoke))
                ))
                .await
            }
            Strategy::Single => match self.read(secret, restore).await {
                Ok(c) => self.set_password(&c.username, &c.password).await,
                Err(m) => Err(m),
            },
        };
        r.map_err(|m| TargetError::new(NAME, "restore", secret, restore, m))
    }
}

/// Whether the server refused the login itself (bad password, login disabled, no such
/// role) rather than being unreachable.
fn is_refused(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == SqlState::INVALID_PASSWORD
            || *db.code() == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    })
}

/// The server's message for a failed statement. Statements carry SCRAM verifiers, never a
/// clear-text password, and the server's messages quote identifiers only.
fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        // `Display` of the error and its source chain (I/O, timeout); never a password.
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

/// `"name"`, with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'`, with embedded quotes doubled (standard_conforming_strings is on by default;
/// verifiers contain no quote or backslash anyway).
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("app_blue"), "\"app_blue\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
