//! What a replica that does not lead answers with: [`StoreAdmin`], the API's backend read
//! from the shared store.
//!
//! A follower runs no rotation actor, job or consumers actor, so it has no status board to
//! read; everything the leader would answer from memory is read back from what the leader
//! commits to the store instead:
//!
//! - versions and history: the store, as the leader reads them;
//! - the schedule: each secret's journal (the machine's committed state: phase, current
//!   version, the next due time an idle secret is waiting for, a grace's end). The leader
//!   commits every state change before acting on it, so this is the leader's own status;
//!   a secret with no journal yet (no leader has loaded it) is due now, as the machine
//!   makes it at its first load;
//! - consumers: the consumer records (heartbeats are not stored, so `lastReportAt` is the
//!   last report that changed something);
//! - jobs: the progress records (at most about a second behind a running job).
//!
//! Writes never reach it: the router forwards them to the leader. Should one get here
//! anyway (a router built without forwarding), it answers [`AdminError::NoLeader`].
//! `/metrics` is the follower's own registry; `/readyz` is true, because the store was
//! opened before this backend was built and a follower serves reads.
//!
//! **Invariant:** reads only. Nothing here writes to the store or spawns anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt as _;
use futures::future::BoxFuture;

use crate::actors::consumers::{self, CONSUMERS_NS};
use crate::actors::jobs::{self, JOBS_NS};
use crate::api::forward::no_leader;
use crate::api::{
    Admin, AdminError, ConsumerView, JobRequest, JobView, PermitGrant, Report, ScheduleEntry,
};
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::{HistoryRecord, RotationId, SecretRef, VersionMeta};
use crate::machine::{Phase, SecretState};
use crate::metrics::Metrics;
use crate::status::{SecretStatus, StatusBoard};
use crate::store::{Store, StoreError};

/// Journals read at once for the schedule: enough to hide a remote store's latency, few
/// enough not to flood it.
const SCHEDULE_READS_IN_FLIGHT: usize = 16;

/// The API's backend on a replica that does not lead (see the module doc).
pub struct StoreAdmin {
    store: Arc<dyn Store>,
    /// Every managed secret and the name of its policy.
    secrets: Arc<BTreeMap<SecretRef, String>>,
    metrics: Metrics,
    clock: Clock,
}

impl StoreAdmin {
    /// The backend of a follower of the rotor configured by `config`, reading `store` (the
    /// shared one the leader writes) and exporting `metrics`.
    pub fn new(config: &Config, store: Arc<dyn Store>, metrics: Metrics, clock: Clock) -> Self {
        let secrets: BTreeMap<SecretRef, String> = config
            .secrets
            .iter()
            .map(|s| (s.secret.clone(), s.policy.name.clone()))
            .collect();
        metrics.secrets_managed.set(secrets.len() as i64);
        StoreAdmin {
            store,
            secrets: Arc::new(secrets),
            metrics,
            clock,
        }
    }

    fn known(&self, secret: &SecretRef) -> Result<(), AdminError> {
        if self.secrets.contains_key(secret) {
            Ok(())
        } else {
            Err(AdminError::UnknownSecret(secret.to_string()))
        }
    }

    /// A secret's committed state; the machine's initial state when it has no journal.
    async fn state(&self, secret: &SecretRef) -> Result<SecretState, AdminError> {
        match self.store.journal(secret).await.map_err(store_error)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                AdminError::Internal(format!("the journal of {secret} is unreadable: {e}"))
            }),
            None => Ok(SecretState::default()),
        }
    }
}

/// A secret's status as its rotation actor on the leader publishes it, from its journal.
/// `stored` is `false` when there is none: such a secret is due now (it has no current
/// version, and the machine makes it due at once when it first loads).
fn status(policy: &str, state: &SecretState, stored: bool, clock: &Clock) -> SecretStatus {
    let (next_due, grace_expires_at) = match &state.phase {
        Phase::Idle { .. } if !stored => (Some(clock.now()), None),
        Phase::Idle { next_due, .. } => (*next_due, None),
        Phase::Grace { expires_at, .. } => (None, Some(*expires_at)),
        _ => (None, None),
    };
    SecretStatus {
        policy: policy.into(),
        phase: state.phase.name(),
        current: state.current,
        rotation: state.phase.run().map(|r| r.rotation),
        next_due,
        grace_expires_at,
        last_rotated_at: state.last_rotated_at,
        attempts: state.attempts,
    }
}

fn not_leader() -> AdminError {
    no_leader("this replica does not lead; writes are taken by the leader")
}

impl Admin for StoreAdmin {
    fn rotate(&self, _secret: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        Box::pin(async { Err(not_leader()) })
    }

    fn rollback(&self, _secret: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        Box::pin(async { Err(not_leader()) })
    }

    fn versions(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<VersionMeta>, AdminError>> {
        Box::pin(async move {
            self.known(&secret)?;
            self.store.versions(&secret).await.map_err(store_error)
        })
    }

    fn history(
        &self,
        secret: SecretRef,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<HistoryRecord>, AdminError>> {
        Box::pin(async move {
            self.known(&secret)?;
            self.store
                .history(&secret, limit)
                .await
                .map_err(store_error)
        })
    }

    fn schedule(&self) -> BoxFuture<'_, Result<Vec<ScheduleEntry>, AdminError>> {
        Box::pin(async move {
            // Owned per read: a stream of futures borrowing `self` is not `Send` enough
            // for the boxed future the trait returns.
            let secrets: Vec<(SecretRef, String)> = self
                .secrets
                .iter()
                .map(|(s, p)| (s.clone(), p.clone()))
                .collect();
            let reads = futures::stream::iter(secrets)
                .map(|(secret, policy)| {
                    let store = self.store.clone();
                    let clock = self.clock;
                    async move {
                        let journal = store.journal(&secret).await.map_err(store_error)?;
                        let stored = journal.is_some();
                        let state = match journal {
                            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                                AdminError::Internal(format!(
                                    "the journal of {secret} is unreadable: {e}"
                                ))
                            })?,
                            None => SecretState::default(),
                        };
                        let status = status(&policy, &state, stored, &clock);
                        Ok::<_, AdminError>((secret, status))
                    }
                })
                .buffer_unordered(SCHEDULE_READS_IN_FLIGHT)
                .collect::<Vec<_>>()
                .await;
            // The leader's order (what happens next first), by the board's own sort.
            let board = StatusBoard::default();
            for read in reads {
                let (secret, status) = read?;
                board.set(&secret, status);
            }
            Ok(board
                .snapshot()
                .into_iter()
                .map(|(secret, s)| ScheduleEntry {
                    tenant_id: secret.tenant().to_owned(),
                    secret_key: secret.key().to_owned(),
                    policy: s.policy.to_string(),
                    phase: s.phase.to_owned(),
                    current_version: s.current,
                    next_rotation_at: s.next_due,
                    grace_expires_at: s.grace_expires_at,
                })
                .collect())
        })
    }

    fn metrics_text(&self) -> BoxFuture<'_, Result<String, AdminError>> {
        Box::pin(async move {
            self.metrics
                .encode()
                .map_err(|e| AdminError::Internal(format!("cannot encode the metrics: {e}")))
        })
    }

    fn ready(&self) -> bool {
        true
    }

    fn consumer_report(&self, _report: Report) -> BoxFuture<'_, Result<(), AdminError>> {
        Box::pin(async { Err(not_leader()) })
    }

    fn permit_acquire(
        &self,
        _consumer_id: String,
        _workload: String,
    ) -> BoxFuture<'_, Result<PermitGrant, AdminError>> {
        Box::pin(async { Err(not_leader()) })
    }

    fn permit_release(&self, _permit_id: String) -> BoxFuture<'_, Result<(), AdminError>> {
        Box::pin(async { Err(not_leader()) })
    }

    fn rotate_all(&self, _request: JobRequest) -> BoxFuture<'_, Result<JobView, AdminError>> {
        Box::pin(async { Err(not_leader()) })
    }

    fn job(&self, job_id: String) -> BoxFuture<'_, Result<JobView, AdminError>> {
        Box::pin(async move {
            match self
                .store
                .record_get(JOBS_NS, &job_id)
                .await
                .map_err(store_error)?
            {
                Some((bytes, _)) => jobs::view_from_record(&bytes).map_err(AdminError::Internal),
                None => {
                    let shown: String = job_id.chars().take(64).collect();
                    Err(AdminError::NotFound(format!("unknown job {shown:?}")))
                }
            }
        })
    }

    fn cancel_job(&self, _job_id: String) -> BoxFuture<'_, Result<JobView, AdminError>> {
        Box::pin(async { Err(not_leader()) })
    }

    fn consumers(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<ConsumerView>, AdminError>> {
        Box::pin(async move {
            self.known(&secret)?;
            let current = self.state(&secret).await?.current;
            let records = self
                .store
                .record_list(CONSUMERS_NS)
                .await
                .map_err(store_error)?;
            Ok(consumers::views_from_records(&records, &secret, current))
        })
    }
}

/// A store read that failed: the API's 500, naming the store's (value-free) reason.
fn store_error(e: StoreError) -> AdminError {
    AdminError::Internal(format!("store: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_secret_without_a_journal_is_due_now_and_an_idle_one_when_its_journal_says() {
        let clock = Clock::System;
        let s = status("fast", &SecretState::default(), false, &clock);
        assert_eq!((s.phase, s.current), ("idle", None));
        assert!(s.next_due.is_some());
        let due = Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap();
        let state = SecretState {
            current: Some(3),
            phase: Phase::Idle {
                next_due: Some(due),
                retry: false,
            },
            ..SecretState::default()
        };
        let s = status("fast", &state, true, &clock);
        assert_eq!(
            (s.phase, s.current, s.next_due, s.grace_expires_at),
            ("idle", Some(3), Some(due), None)
        );
        assert_eq!(&*s.policy, "fast");
    }
}
