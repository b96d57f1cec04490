//! The admin HTTP API (axum). See [`server`] for the routes and [`listener`] for the
//! connections (timeouts, the connection cap).
//!
//! The API knows nothing of actors: it talks to an [`Admin`] backend, which the runtime
//! implements by messaging rotation actors and reading the store. Tests use a fake backend.

pub mod auth;
pub mod listener;
pub mod server;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;

use crate::domain::{HistoryRecord, RotationId, SecretRef, VersionMeta};

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
}
