//! The admin HTTP API (axum). See [`server`] for the routes and [`listener`] for the
//! connections (timeouts, the connection cap).
//!
//! The API knows nothing of actors: it talks to an [`Admin`] backend, which the runtime
//! implements by messaging rotation actors and reading the store. Tests use a fake backend.

pub mod auth;
pub mod forward;
pub mod listener;
pub mod server;
pub mod thread;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::domain::{HistoryRecord, RotationId, SecretRef, VersionMeta, VersionNo};

/// Why an admin operation did not happen. Messages never contain a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// No such secret is configured (404).
    #[error("unknown secret {0}")]
    UnknownSecret(String),
    /// The request conflicts with the secret's state (409), e.g. a rotation in flight or
    /// nothing to roll back.
    #[error("{0}")]
    Conflict(String),
    /// The runtime could not answer (503), e.g. an actor restarting or shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// The secret exists but has no such resource (404), e.g. no public key set.
    #[error("{0}")]
    NotFound(String),
    /// Anything else (500). The message is safe to show.
    #[error("{0}")]
    Internal(String),
    /// Not now, ask again in `retry_after_ms` (429 with `Retry-After`): a workload already
    /// holds every reload permit it may.
    #[error("{message}")]
    Busy {
        message: String,
        retry_after_ms: u64,
    },
    /// The request is well-formed but a value in it is not acceptable (400).
    #[error("{0}")]
    BadRequest(String),
    /// No replica leads now (503 with `Retry-After`): a write cannot be taken until one
    /// does (high availability, between two leaders' leases).
    #[error("{message}")]
    NoLeader {
        message: String,
        retry_after_ms: u64,
    },
}

/// `POST /consumers/report`: which version of each secret one consumer (an agent in a
/// workload's pod) holds. Also its heartbeat. Never a value or an unkeyed hash of one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerReport {
    pub consumer_id: String,
    #[serde(default)]
    pub workload: Option<String>,
    pub secrets: Vec<ReportedSecret>,
}

/// One secret of a [`ConsumerReport`]. Identifiers are validated by the route (400).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportedSecret {
    pub tenant_id: String,
    pub secret_key: String,
    /// What the pod's mount holds (its `NAME_version` marker); `None` when unknown.
    #[serde(default)]
    pub version: Option<VersionNo>,
    /// Whether the reload after the last change succeeded; `None`: no reload configured,
    /// or none yet.
    #[serde(default)]
    pub reloaded: Option<bool>,
}

/// A checked consumer report: the route has validated every identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub consumer_id: String,
    pub workload: Option<String>,
    pub secrets: Vec<(SecretRef, Option<VersionNo>, Option<bool>)>,
}

/// A granted reload permit (`POST /consumers/permits`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PermitGrant {
    pub permit_id: String,
    pub expires_in_ms: u64,
}

/// One consumer of a secret, as `GET /admin/secrets/consumers/{tenant}/{key}` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerView {
    pub consumer_id: String,
    pub workload: Option<String>,
    pub version: Option<VersionNo>,
    /// `current`, `lagging` or `gone`.
    pub state: String,
    pub last_report_at: DateTime<Utc>,
    pub reloaded: Option<bool>,
}

/// Checks a consumer id or workload name: 1 to 253 characters of `[A-Za-z0-9._-]`,
/// starting with a letter or digit (a pod name, a hostname or a Deployment's name fits).
/// The message names the field and the value: neither is a secret.
pub fn validate_consumer_name(field: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= crate::store::MAX_RECORD_NAME
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        let shown: String = value.chars().take(64).collect();
        Err(format!(
            "invalid {field} {shown:?}: use 1 to 253 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
        ))
    }
}

/// One line of `GET /admin/secrets/schedule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleEntry {
    pub tenant_id: String,
    pub secret_key: String,
    pub policy: String,
    /// Machine phase name (`idle`, `grace`, `stuck`, ...).
    pub phase: String,
    pub current_version: Option<u64>,
    /// Next scheduled rotation; `None` for manual policies or while one is in flight.
    pub next_rotation_at: Option<DateTime<Utc>>,
    /// When the previous version expires, during grace.
    pub grace_expires_at: Option<DateTime<Utc>>,
}

/// Rotations an emergency job starts per second unless the request says otherwise: a
/// database or cache behind the targets sees at most this many password changes a second.
pub const DEFAULT_JOB_RATE: u32 = 10;
/// Rotations of one job in flight at once unless the request says otherwise.
pub const DEFAULT_JOB_CONCURRENCY: u32 = 4;
/// The highest `ratePerSecond` a job may ask for.
pub const MAX_JOB_RATE: u32 = 10_000;
/// The highest `maxConcurrent` a job may ask for.
pub const MAX_JOB_CONCURRENCY: u32 = 1_000;

/// Which managed secrets a job rotates: every one matching all the given fields.
/// `tenant_id` or `all` is always set (the route refuses anything else).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// `*` any run of characters, `?` one, against the secret's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_glob: Option<String>,
    #[serde(default)]
    pub all: bool,
}

impl JobSelector {
    /// Whether the secret `secret` under policy `policy` is selected.
    pub fn matches(&self, secret: &SecretRef, policy: &str) -> bool {
        self.tenant_id
            .as_deref()
            .is_none_or(|t| t == secret.tenant())
            && self.policy.as_deref().is_none_or(|p| p == policy)
            && self
                .key_glob
                .as_deref()
                .is_none_or(|g| crate::watch::glob::Pattern::new(g).matches(secret.key()))
    }

    /// The selector in words, for messages and the log: `tenantId "t1", keyGlob "db_*"`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.all {
            parts.push("all".to_owned());
        }
        if let Some(t) = &self.tenant_id {
            parts.push(format!("tenantId {t:?}"));
        }
        if let Some(p) = &self.policy {
            parts.push(format!("policy {p:?}"));
        }
        if let Some(g) = &self.key_glob {
            parts.push(format!("keyGlob {g:?}"));
        }
        parts.join(", ")
    }
}

/// A validated `POST /admin/secrets/rotate-all`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRequest {
    pub selector: JobSelector,
    pub rate_per_second: u32,
    pub max_concurrent: u32,
    pub expire_previous: bool,
}

/// `GET /admin/jobs/{jobId}`: a job's progress. `done` counts secrets whose new version was
/// promoted, `failed` those whose attempt ended without a promotion, `inFlight` those being
/// rotated now and `pending` those not reached yet (never started once a job is
/// cancelled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub job_id: String,
    /// `running`, `finished` or `cancelled`.
    pub state: String,
    pub total: u64,
    pub done: u64,
    pub failed: u64,
    pub in_flight: u64,
    pub pending: u64,
    pub selector: JobSelector,
    pub rate_per_second: u32,
    pub max_concurrent: u32,
    pub expire_previous: bool,
    pub started_at: DateTime<Utc>,
    /// When the last rotation of the job ended (a cancelled job's in-flight ones
    /// included); `None` while any runs.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What the admin API needs from the rest of rotor.
pub trait Admin: Send + Sync + 'static {
    /// Starts a rotation now; returns its id.
    fn rotate(&self, secret: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>>;
    /// Rolls back the rotation in grace; returns its id.
    fn rollback(&self, secret: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>>;
    /// Version metadata, oldest first. Never values.
    fn versions(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<VersionMeta>, AdminError>>;
    /// Finished rotations, newest first.
    fn history(
        &self,
        secret: SecretRef,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<HistoryRecord>, AdminError>>;
    /// Every managed secret, sorted by the next thing that happens to it.
    fn schedule(&self) -> BoxFuture<'_, Result<Vec<ScheduleEntry>, AdminError>>;
    /// Prometheus text exposition of every metric.
    fn metrics_text(&self) -> BoxFuture<'_, Result<String, AdminError>>;
    /// Whether the store is open and the actors have started.
    fn ready(&self) -> bool;
    /// The public JWK set a secret's `jwks` target (`ed25519`) publishes, as JSON bytes.
    /// The default: no secret publishes one.
    fn jwks(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<u8>, AdminError>> {
        Box::pin(async move { Err(AdminError::UnknownSecret(secret.to_string())) })
    }
    /// Records a consumer's report (and heartbeat). The default: consumers are not tracked.
    fn consumer_report(&self, report: Report) -> BoxFuture<'_, Result<(), AdminError>> {
        let _ = report;
        Box::pin(async { Err(no_consumers()) })
    }
    /// Grants a reload permit to `consumer_id` of `workload`, or says when to ask again.
    fn permit_acquire(
        &self,
        consumer_id: String,
        workload: String,
    ) -> BoxFuture<'_, Result<PermitGrant, AdminError>> {
        let _ = (consumer_id, workload);
        Box::pin(async { Err(no_consumers()) })
    }
    /// Returns a permit; returning one that is unknown (released, expired) is no error.
    fn permit_release(&self, permit_id: String) -> BoxFuture<'_, Result<(), AdminError>> {
        let _ = permit_id;
        Box::pin(async { Err(no_consumers()) })
    }
    /// Starts an emergency rotation job; answers with its view (`jobId` among it). The
    /// default: this backend runs no jobs.
    fn rotate_all(&self, request: JobRequest) -> BoxFuture<'_, Result<JobView, AdminError>> {
        let _ = request;
        Box::pin(async { Err(no_jobs()) })
    }
    /// A job's progress; `NotFound` for an unknown id.
    fn job(&self, job_id: String) -> BoxFuture<'_, Result<JobView, AdminError>> {
        let _ = job_id;
        Box::pin(async { Err(no_jobs()) })
    }
    /// [`Admin::job`] when this backend can answer it from memory alone (no store read, no
    /// actor call, no wait), else `None`. The API's own thread answers such reads in place
    /// (see [`thread`]). The default: `None`.
    fn job_in_memory(&self, job_id: &str) -> Option<Result<JobView, AdminError>> {
        let _ = job_id;
        None
    }
    /// Cancels a job: nothing new starts, rotations in flight finish and count.
    fn cancel_job(&self, job_id: String) -> BoxFuture<'_, Result<JobView, AdminError>> {
        let _ = job_id;
        Box::pin(async { Err(no_jobs()) })
    }
    /// The consumers of a secret, sorted by id.
    fn consumers(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<ConsumerView>, AdminError>> {
        let _ = secret;
        Box::pin(async { Err(no_consumers()) })
    }
    /// Who leads (`GET /admin/leader`); `None` for a backend that does not know (the
    /// route answers 404 then). `rotor run` serves every backend behind
    /// `crate::ha::HaAdmin`, which answers from the election.
    fn leader(&self) -> Option<LeaderView> {
        None
    }
}

/// `GET /admin/leader`: who leads as this replica last learned it, and who this replica
/// is. Without `[ha]` the process leads itself at term 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderView {
    pub leader: Option<String>,
    pub leader_url: Option<String>,
    pub term: u64,
    #[serde(rename = "self")]
    pub self_id: String,
}

fn no_jobs() -> AdminError {
    AdminError::NotFound("this rotor runs no rotation jobs".into())
}

fn no_consumers() -> AdminError {
    AdminError::NotFound("this rotor does not track consumers".into())
}
