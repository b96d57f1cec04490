//! The `postgres` target: PostgreSQL login roles.
//!
//! Two strategies:
//!
//! - `alternating` (two roles, e.g. `app_blue` and `app_green`; the AWS alternating-users
//!   model): a new version goes on the role the current version's stored value does not
//!   name (`roles[0]` when nothing is current yet). `apply` sets the new password on that
//!   inactive role and enables its login, so during grace both roles log in; `revoke` at
//!   expiry disables the old role's login (`NOLOGIN`); a rollback re-enables the previous
//!   role and disables the new one. `NOLOGIN` refuses new logins only: sessions a pool
//!   opened during grace stay up, unless `terminate_sessions = true`, which ends the old
//!   role's sessions at expiry as well.
//!
//!   Which role holds a version is its stored value's `username`, written once by
//!   `shape_value` and read back by `apply`, `revoke` and `restore`; the store keeps it
//!   across restarts, so the target needs no state of its own. It is not derived from the
//!   version number: a discarded attempt keeps its number, so numbers do not alternate
//!   with the roles, and a parity rule put the retry after a discarded version on the
//!   current version's role, replacing the password consumers held. Values stored under
//!   that parity rule name their role too, so they are read the same way (no migration).
//!   `revoke` never disables the role the current version uses.
//! - `single` (one role): `apply` replaces the password, so the previous one stops working
//!   at once and no grace is possible (`rotor check` refuses a grace period with it). A
//!   rollback sets the previous version's password back; discarding a pending version sets
//!   the current version's password back.
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
use crate::store::StoreError;

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

    /// The stored credentials of `version`, or `None` when it was never stored (and so
    /// never applied); any other failure to read is an error, not a reason to skip.
    async fn stored(&self, version: VersionNo) -> Result<Option<Credentials>, String> {
        match self.reader.read_value(&self.secret, version).await {
            Ok(value) => Credentials::parse(&value)
                .map(Some)
                .map_err(|m| format!("v{version}: {m}")),
            Err(StoreError::NoSuchVersion { .. }) => Ok(None),
            Err(e) => Err(format!("cannot read v{version}: {e}")),
        }
    }

    /// The version consumers hold now and its stored credentials, if one is current.
    async fn current(&self) -> Result<Option<(VersionNo, Credentials)>, String> {
        let current = self
            .reader
            .current_version(&self.secret)
            .await
            .map_err(|e| format!("cannot read which version is current: {e}"))?;
        match current {
            Some(v) => Ok(Some((v, self.read(&self.secret, v).await?))),
            None => Ok(None),
        }
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

    async fn alternating_revoke(&self, version: VersionNo) -> Result<(), String> {
        let Some(creds) = self.stored(version).await? else {
            // A version that was never stored was never applied.
            return Ok(());
        };
        let role = creds.username.as_str();
        if let Some((current, _)) = self
            .current()
            .await?
            .filter(|(_, c)| c.username == creds.username)
        {
            // Consumers log in as this role now: disabling it would cut them off. The role
            // holds the current version's password, so `version`'s is already gone (the
            // version is the current one, or an older one whose role was reused), and there
            // is nothing left to revoke.
            tracing::debug!(
                secret = %self.secret,
                version,
                current,
                role,
                "not revoking: the current version uses this role"
            );
            return Ok(());
        }
        let nologin = format!("ALTER ROLE {} WITH NOLOGIN;", quote_ident(role));
        self.admin_exec(&nologin).await?;
        if self.terminate_sessions {
            // Once NOLOGIN is committed, so no new session slips in after.
            self.admin_exec(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE usename = {} AND pid <> pg_backend_pid();",
                quote_literal(role)
            ))
            .await
            .map_err(|m| format!("ending the sessions of {role}: {m}"))?;
        }
        Ok(())
    }

    /// Rollback: `restore`'s role logs in again and `revoke`'s stops, each role read from
    /// its version's stored value.
    async fn alternating_restore(
        &self,
        restore: VersionNo,
        revoke: VersionNo,
    ) -> Result<(), String> {
        let back = self.read(&self.secret, restore).await?;
        let mut sql = format!("ALTER ROLE {} WITH LOGIN;", quote_ident(&back.username));
        match self.stored(revoke).await? {
            // Never disable the role being restored, even if both versions name it.
            Some(gone) if gone.username != back.username => {
                sql.push_str(&format!(
                    " ALTER ROLE {} WITH NOLOGIN;",
                    quote_ident(&gone.username)
                ));
            }
            _ => {}
        }
        self.admin_exec(&sql).await
    }

    async fn single_revoke(&self, version: VersionNo) -> Result<(), String> {
        // Stateless and idempotent: only if `version`'s password is the one the role has
        // now (a pending version being discarded) is anything changed.
        let Some(creds) = self.stored(version).await? else {
            // A version that was never stored was never applied.
            return Ok(());
        };
        let current = self.current().await?;
        if current.as_ref().is_some_and(|(c, _)| *c == version) {
            // Consumers hold this password: there is nothing pending to undo.
            return Ok(());
        }
        if !self.login(&creds.username, &creds.password).await? {
            return Ok(());
        }
        // The current version's password goes back, not `version - 1`'s: that may be a
        // discarded attempt whose password was never handed out.
        match current {
            Some((_, c)) => self.set_password(&c.username, &c.password).await,
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

    async fn shape_value(
        &self,
        version: VersionNo,
        generated: SecretValue,
    ) -> Result<SecretValue, TargetError> {
        let secret = &self.secret;
        let fail = |m: String| TargetError::new(NAME, "generate", secret, version, m);
        let password = std::str::from_utf8(generated.expose())
            .map_err(|_| fail("the generated password is not UTF-8".into()))?;
        let config = self.admin_config().map_err(fail)?;
        let username = match self.strategy {
            Strategy::Single => &self.roles[0],
            // The role the current version does not use; the stored value records it.
            Strategy::Alternating => match self.current().await.map_err(fail)? {
                Some((_, current)) => self
                    .roles
                    .iter()
                    .find(|r| **r != current.username)
                    .unwrap_or(&self.roles[0]),
                None => &self.roles[0],
            },
        };
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
        if !self.roles.contains(&creds.username) {
            return Err(fail(format!(
                "stored username {} is none of the configured roles {}",
                creds.username,
                self.roles.join(", ")
            )));
        }
        if self.strategy == Strategy::Alternating
            && let Some((current, c)) = self.current().await.map_err(fail)?
            && current != version
            && c.username == creds.username
        {
            // A value stored under the old parity rule after a discarded attempt can name
            // the current role; applying it would replace the password consumers hold.
            return Err(fail(format!(
                "stored username {} is the role of current v{current}; applying would \
                 replace the password consumers hold",
                creds.username
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
            Strategy::Alternating => self.alternating_revoke(version).await,
            Strategy::Single => self.single_revoke(version).await,
        };
        r.map_err(|m| TargetError::new(NAME, "revoke", secret, version, m))
    }

    async fn restore(&self, restore: VersionNo, revoke: VersionNo) -> Result<(), TargetError> {
        let secret = &self.secret;
        let r = match self.strategy {
            Strategy::Alternating => self.alternating_restore(restore, revoke).await,
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
