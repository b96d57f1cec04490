//! The API's backend across leadership changes.
//!
//! [`HaAdmin`] is the one [`Admin`] the API server is built with in `rotor run`: it
//! answers `GET /admin/leader` from the election and hands every other call to the
//! backend of this replica's current role, which `main` swaps: the actor tree's
//! `ActorAdmin` while leading, a follower backend (`ha::follower::StoreAdmin`: reads from the store, writes
//! answered "no leader here", as the router forwards them before they get here) otherwise.
//! Without `[ha]` the backend is the tree's for the life of the process.

use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;

use super::Leadership;
use crate::api::{
    Admin, AdminError, ConsumerView, JobRequest, JobView, LeaderView, PermitGrant, Report,
    ScheduleEntry,
};
use crate::domain::{HistoryRecord, RotationId, SecretRef, VersionMeta};

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
    fn job_in_memory(&self, job_id: &str) -> Option<Result<JobView, AdminError>> {
        self.current().job_in_memory(job_id)
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
