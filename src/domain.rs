//! The nouns every other module shares: secret references, version numbers, labels,
//! rotation ids, triggers, outcomes, error kinds and history records.
//!
//! Nothing here does I/O or reads a clock; every type is plain data that serialises.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest tenant or key accepted. Long enough for real names, short enough that a
/// Vault path, a metric label or a file name built from it stays sane.
pub const MAX_IDENT_LEN: usize = 63;

/// Why a string is not a valid tenant or key identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    #[error("must not be empty")]
    Empty,
    #[error("is {len} characters long; at most {max} are allowed", max = MAX_IDENT_LEN)]
    TooLong { len: usize },
    #[error(
        "contains {found:?}; only lowercase letters, digits, '-' and '_' are allowed (it is used in store paths and must never act as a path fragment)"
    )]
    BadChar { found: char },
    #[error("must start with a lowercase letter or a digit")]
    BadStart,
}

/// Checks that `s` is an identifier: `[a-z0-9][a-z0-9_-]*`, at most [`MAX_IDENT_LEN`] long.
/// `..`, `/`, `\`, NUL and uppercase letters are all refused, so an identifier can never
/// escape the directory or key prefix it is joined to.
pub fn validate_ident(s: &str) -> Result<(), IdentError> {
    if s.is_empty() {
        return Err(IdentError::Empty);
    }
    if s.len() > MAX_IDENT_LEN {
        return Err(IdentError::TooLong { len: s.len() });
    }
    if let Some(found) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(IdentError::BadChar { found });
    }
    let first = s.as_bytes()[0];
    if first == b'-' || first == b'_' {
        return Err(IdentError::BadStart);
    }
    Ok(())
}

/// A tenant secret: `(tenant, key)`. Both parts are validated identifiers: the fields are
/// private, so [`SecretRef::new`] is the only way to build one, deserialising included.
///
/// One shared allocation holds `tenant/key`: a clone is a reference count, so the
/// configuration, the managed set, the status board and the scheduler, which each keep
/// every secret's name, share one copy of it (24 bytes a reference). Ordered by tenant,
/// then key; serialised as `{"tenant", "key"}`.
#[derive(Clone, Deserialize)]
#[serde(try_from = "UncheckedSecretRef")]
pub struct SecretRef {
    /// `tenant/key`; identifiers hold no `/`, so the split is unambiguous.
    name: std::sync::Arc<str>,
    /// Length of the tenant part (at most [`MAX_IDENT_LEN`]).
    tenant_len: u8,
}

/// The serialised form of a [`SecretRef`], before its parts are validated.
#[derive(Deserialize)]
struct UncheckedSecretRef {
    tenant: String,
    key: String,
}

impl TryFrom<UncheckedSecretRef> for SecretRef {
    type Error = IdentError;

    fn try_from(unchecked: UncheckedSecretRef) -> Result<Self, IdentError> {
        SecretRef::new(&unchecked.tenant, &unchecked.key)
    }
}

impl SecretRef {
    /// Builds a reference after validating both parts.
    pub fn new(tenant: &str, key: &str) -> Result<Self, IdentError> {
        validate_ident(tenant)?;
        validate_ident(key)?;
        let mut name = String::with_capacity(tenant.len() + 1 + key.len());
        name.push_str(tenant);
        name.push('/');
        name.push_str(key);
        Ok(SecretRef {
            name: name.into(),
            // validate_ident bounds it by MAX_IDENT_LEN (63).
            tenant_len: tenant.len() as u8,
        })
    }

    /// Parses `tenant/key`.
    pub fn parse(s: &str) -> Option<Self> {
        let (t, k) = s.split_once('/')?;
        SecretRef::new(t, k).ok()
    }

    /// The tenant identifier.
    pub fn tenant(&self) -> &str {
        &self.name[..usize::from(self.tenant_len)]
    }

    /// The key identifier, unique within the tenant.
    pub fn key(&self) -> &str {
        &self.name[usize::from(self.tenant_len) + 1..]
    }
}

impl PartialEq for SecretRef {
    fn eq(&self, other: &Self) -> bool {
        // `tenant/key` determines both parts: no identifier holds a `/`.
        self.name == other.name
    }
}

impl Eq for SecretRef {}

impl std::hash::Hash for SecretRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl PartialOrd for SecretRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SecretRef {
    /// By tenant, then key (not by the joined text: `-` sorts before `/`).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.tenant()
            .cmp(other.tenant())
            .then_with(|| self.key().cmp(other.key()))
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRef")
            .field("tenant", &self.tenant())
            .field("key", &self.key())
            .finish()
    }
}

impl Serialize for SecretRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("SecretRef", 2)?;
        s.serialize_field("tenant", self.tenant())?;
        s.serialize_field("key", self.key())?;
        s.end()
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A version number of a secret; the first version is 1.
pub type VersionNo = u64;

/// AWS Secrets Manager style staging labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// The value consumers should use. Exactly one version carries it once one exists.
    Current,
    /// A staged value that is being applied and tested; not yet for consumers.
    Pending,
    /// The value that was current before the last promotion, still valid during grace.
    Previous,
}

impl Label {
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Current => "current",
            Label::Pending => "pending",
            Label::Previous => "previous",
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one rotation attempt of one secret: the secret's own attempt counter.
/// Every effect carries it, so executing an effect twice (after a crash) is a no-op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RotationId(pub u64);

impl fmt::Display for RotationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// What started a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The secret has no version yet: the first one is created.
    Initial,
    Schedule,
    Manual,
    Api,
    /// A retry after a failed attempt.
    Retry,
    /// An emergency rotation job (`POST /admin/secrets/rotate-all`); the attempt's run
    /// names the job.
    Job,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Initial => "initial",
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Api => "api",
            Trigger::Retry => "retry",
            Trigger::Job => "job",
        }
    }
}

/// How a rotation attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The new version was promoted (and, later, the previous one expired).
    Succeeded,
    /// A step before promotion failed; current was never changed.
    Failed,
    /// The new version was promoted, then rolled back during grace.
    RolledBack,
    /// The retry budget ran out; the secret is stuck until an operator acts.
    Abandoned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
            Outcome::Abandoned => "abandoned",
        }
    }
}

/// A step of a rotation, as executed against the store or the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Generate,
    Apply,
    Test,
    Promote,
    Expire,
    Rollback,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Generate => "generate",
            Step::Apply => "apply",
            Step::Test => "test",
            Step::Promote => "promote",
            Step::Expire => "expire",
            Step::Rollback => "rollback",
        }
    }
}

/// Bounded classification of failures, safe as a metric label and in history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Could not write or read the store.
    Store,
    /// The target refused or failed the apply step.
    Apply,
    /// The new value did not work against the target.
    Test,
    /// Revoking an old value failed.
    Revoke,
    /// A step took longer than allowed.
    Timeout,
    /// An operator asked for a rollback.
    Operator,
    /// Anything else (a panic in an actor, an unexpected state).
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Store => "store",
            ErrorKind::Apply => "apply",
            ErrorKind::Test => "test",
            ErrorKind::Revoke => "revoke",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Operator => "operator",
            ErrorKind::Internal => "internal",
        }
    }
}

/// One finished rotation attempt, appended to a secret's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub rotation: RotationId,
    pub trigger: Trigger,
    /// The current version when the attempt started (`None` for the first version).
    pub from_version: Option<VersionNo>,
    /// The version the attempt created.
    pub to_version: VersionNo,
    pub outcome: Outcome,
    pub error: Option<ErrorKind>,
    /// Steps completed, in order.
    pub steps: Vec<Step>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Consumers (agents, by id) still reporting an older version when the previous one
    /// expired at the end of `max_grace_extension`. Empty for secrets without consumers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late_consumers: Vec<String>,
    /// Consumers that stopped reporting during the grace without showing the new version
    /// (they stopped holding expiry back when their `ttl` ran out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gone_consumers: Vec<String>,
}

/// Metadata of one stored version. Never holds the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    pub version: VersionNo,
    pub rotation: RotationId,
    pub labels: Vec<Label>,
    pub created_at: DateTime<Utc>,
    pub promoted_at: Option<DateTime<Utc>>,
    /// When the version stopped being valid: expired after grace, rolled back, or
    /// discarded after a failed attempt.
    pub expired_at: Option<DateTime<Utc>>,
    /// Keyed hash of the value (HMAC-SHA256 under a key derived from the master key),
    /// hex, truncated to 16 bytes. Identifies a value without revealing it.
    pub fingerprint: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_refuse_path_fragments() {
        for bad in [
            "", "..", "a/b", "../x", "A", "a b", "a\0", "-a", "_a", "a.b", "é",
        ] {
            assert!(validate_ident(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            validate_ident(&"a".repeat(MAX_IDENT_LEN + 1)),
            Err(IdentError::TooLong {
                len: MAX_IDENT_LEN + 1
            })
        );
        for good in ["tenant1", "database_credentials", "a-b", "0x"] {
            assert_eq!(validate_ident(good), Ok(()), "{good:?} refused");
        }
    }

    #[test]
    fn secret_ref_deserialises_only_valid_identifiers() {
        let r: SecretRef =
            serde_json::from_str(r#"{"tenant":"tenant1","key":"api_keys"}"#).expect("valid");
        assert_eq!(r, SecretRef::new("tenant1", "api_keys").expect("valid"));
        assert_eq!(
            serde_json::to_string(&r).expect("serialises"),
            r#"{"tenant":"tenant1","key":"api_keys"}"#
        );
        for bad in [
            r#"{"tenant":"..","key":"api_keys"}"#,
            r#"{"tenant":"tenant1","key":"a/b"}"#,
            r#"{"tenant":"","key":"k"}"#,
        ] {
            assert!(
                serde_json::from_str::<SecretRef>(bad).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn secret_ref_parses_tenant_slash_key() {
        let r = SecretRef::parse("tenant1/api_keys").expect("valid");
        assert_eq!(r.to_string(), "tenant1/api_keys");
        assert!(SecretRef::parse("tenant1").is_none());
        assert!(SecretRef::parse("tenant1/../x").is_none());
    }

    #[test]
    fn secret_ref_orders_by_tenant_then_key_and_serialises_both_parts() {
        let a = SecretRef::new("a", "z").expect("valid");
        let b = SecretRef::new("a-b", "a").expect("valid");
        // By tenant first: "a" < "a-b", although "a/z" > "a-b/a" as text.
        assert!(a < b);
        assert_eq!(a.tenant(), "a");
        assert_eq!(a.key(), "z");
        assert_eq!(
            serde_json::to_string(&b).expect("serialise"),
            r#"{"tenant":"a-b","key":"a"}"#
        );
        let back: SecretRef = serde_json::from_str(r#"{"tenant":"a-b","key":"a"}"#).expect("read");
        assert_eq!(back, b);
        assert_eq!(format!("{b:?}"), r#"SecretRef { tenant: "a-b", key: "a" }"#);
        // A clone shares the name: no copy per structure that keeps it.
        let c = b.clone();
        assert!(std::ptr::eq(c.tenant().as_ptr(), b.tenant().as_ptr()));
    }
}
