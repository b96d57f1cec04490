//! The API's backend across leadership changes.
//!
//! [`HaAdmin`] is the one [`Admin`] the API server is built with in `rotor run`: it
//! answers `GET /admin/leader` from the election and hands every other call to the
//! backend of this replica's current role, which `main` swaps: the actor tree's
//! `ActorAdmin` while leading, a follower backend ([`follower_backend`]) otherwise.
//! Without `[ha]` the backend is the tree's for the life of the process.

use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;

use super::Leadership;
use crate::api::{
    Admin, AdminError, ConsumerView, JobRequest, JobView, LeaderView, PermitGrant, Report,
    ScheduleEntry,
};
use crate::domain::{HistoryRecord, RotationId, SecretRef, VersionMeta};
use crate::metrics::Metrics;

/// See the module documentation.
pub struct HaAdmin {
    leadership: Leadership,
    // A std lock: held only to clone or replace an `Arc`, never across an await.
    backend: RwLock<Arc<dyn Admin>>,
}

impl HaAdmin {
    pub fn new(leadership: Leadership, backend: Arc<dyn Admin>) -> Self {
        HaAdmin {
            leadership,
            backend: RwLock::new(backend),
        }
    }

    /// Requests from now on go to `backend`; those in flight finish on the old one.
    pub fn set_backend(&self, backend: Arc<dyn Admin>) {
        match self.backend.write() {
            Ok(mut b) => *b = backend,
            Err(poisoned) => *poisoned.into_inner() = backend,
        }
    }

    fn current(&self) -> Arc<dyn Admin> {
        match self.backend.read() {
            Ok(b) => b.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl Admin for HaAdmin {
    fn rotate(&self, secret: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        let b = self.current();
        Box::pin(async move { b.rotate(secret).await })
    }
    fn rollback(&self, secret: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        let b = self.current();
        Box::pin(async move { b.rollback(secret).await })
    }
    fn versions(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<VersionMeta>, AdminError>> {
        let b = self.current();
        Box::pin(async move { b.versions(secret).await })
    }
    fn history(
        &self,
        secret: SecretRef,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<HistoryRecord>, AdminError>> {
        let b = self.current();
        Box::pin(async move { b.history(secret, limit).await })
    }
    fn schedule(&self) -> BoxFuture<'_, Result<Vec<ScheduleEntry>, AdminError>> {
        let b = self.current();
        Box::pin(async move { b.schedule().await })
    }
    fn metrics_text(&self) -> BoxFuture<'_, Result<String, AdminError>> {
        let b = self.current();
        Box::pin(async move { b.metrics_text().await })
    }
    fn ready(&self) -> bool {
        self.current().ready()
    }
    fn jwks(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<u8>, AdminError>> {
        let b = self.current();
        Box::pin(async move { b.jwks(secret).await })
    }
    fn consumer_report(&self, report: Report) -> BoxFuture<'_, Result<(), AdminError>> {
        let b = self.current();
        Box::pin(async move { b.consumer_report(report).await })
    }
    fn permit_acquire(
        &self,
        consumer_id: String,
        workload: String,
    ) -> BoxFuture<'_, Result<PermitGrant, AdminError>> {
        let b = self.current();
        Box::pin(async move { b.permit_acquire(consumer_id, workload).await })
    }
    fn permit_release(&self, permit_id: String) -> BoxFuture<'_, Result<(), AdminError>> {
        let b = self.current();
        Box::pin(async move { b.permit_release(permit_id).await })
    }
    fn rotate_all(&self, request: JobRequest) -> BoxFuture<'_, Result<JobView, AdminError>> {
        let b = self.current();
        Box::pin(async move { b.rotate_all(request).await })
    }
    fn job(&self, job_id: String) -> BoxFuture<'_, Result<JobView, AdminError>> {
        let b = self.current();
        Box::pin(async move { b.job(job_id).await })
    }
    fn cancel_job(&self, job_id: String) -> BoxFuture<'_, Result<JobView, AdminError>> {
        let b = self.current();
        Box::pin(async move { b.cancel_job(job_id).await })
    }
    fn consumers(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<ConsumerView>, AdminError>> {
        let b = self.current();
        Box::pin(async move { b.consumers(secret).await })
    }
    fn leader(&self) -> Option<LeaderView> {
        let info = self.leadership.current();
        Some(LeaderView {
            leader: info.leader,
            leader_url: info.leader_url,
            term: info.term,
            self_id: self.leadership.self_id().to_owned(),
        })
    }
}

/// The backend of a replica that does not lead: every call is answered "no leader here"
/// with the leader's id and URL when known, `/metrics` from the process's registry, and
/// ready (a follower is a healthy replica). The one constructor `main` calls, so that the
/// follower API (reads from the store, writes forwarded to the leader) replaces it here.
pub fn follower_backend(leadership: Leadership, metrics: Metrics) -> Arc<dyn Admin> {
    Arc::new(NotLeader {
        leadership,
        metrics,
    })
}

struct NotLeader {
    leadership: Leadership,
    metrics: Metrics,
}

/// How soon a client asks again: a follower learns of a new leader within a poll.
const RETRY_AFTER_MS: u64 = 1_000;

impl NotLeader {
    fn no_leader<T: Send + 'static>(&self) -> BoxFuture<'_, Result<T, AdminError>> {
        let info = self.leadership.current();
        let message = match (info.leader, info.leader_url) {
            (Some(id), Some(url)) => format!(
                "this replica is not the leader; the leader is {id} at {url} (term {})",
                info.term
            ),
            (Some(id), None) => format!(
                "this replica is not the leader; the leader is {id} (term {})",
                info.term
            ),
            _ => "no leader now: the replicas are electing one; try again".to_owned(),
        };
        Box::pin(async move {
            Err(AdminError::NoLeader {
                message,
                retry_after_ms: RETRY_AFTER_MS,
            })
        })
    }
}

impl Admin for NotLeader {
    fn rotate(&self, _: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        self.no_leader()
    }
    fn rollback(&self, _: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        self.no_leader()
    }
    fn versions(&self, _: SecretRef) -> BoxFuture<'_, Result<Vec<VersionMeta>, AdminError>> {
        self.no_leader()
    }
    fn history(
        &self,
        _: SecretRef,
        _: usize,
    ) -> BoxFuture<'_, Result<Vec<HistoryRecord>, AdminError>> {
        self.no_leader()
    }
    fn schedule(&self) -> BoxFuture<'_, Result<Vec<ScheduleEntry>, AdminError>> {
        self.no_leader()
    }
    fn metrics_text(&self) -> BoxFuture<'_, Result<String, AdminError>> {
        let text = self
            .metrics
            .encode()
            .map_err(|e| AdminError::Internal(format!("cannot encode the metrics: {e}")));
        Box::pin(async move { text })
    }
    fn ready(&self) -> bool {
        true
    }
    fn consumer_report(&self, _: Report) -> BoxFuture<'_, Result<(), AdminError>> {
        self.no_leader()
    }
    fn permit_acquire(
        &self,
        _: String,
        _: String,
    ) -> BoxFuture<'_, Result<PermitGrant, AdminError>> {
        self.no_leader()
    }
    fn permit_release(&self, _: String) -> BoxFuture<'_, Result<(), AdminError>> {
        self.no_leader()
    }
    fn rotate_all(&self, _: JobRequest) -> BoxFuture<'_, Result<JobView, AdminError>> {
        self.no_leader()
    }
    fn job(&self, _: String) -> BoxFuture<'_, Result<JobView, AdminError>> {
        self.no_leader()
    }
    fn cancel_job(&self, _: String) -> BoxFuture<'_, Result<JobView, AdminError>> {
        self.no_leader()
    }
    fn consumers(&self, _: SecretRef) -> BoxFuture<'_, Result<Vec<ConsumerView>, AdminError>> {
        self.no_leader()
    }
}
