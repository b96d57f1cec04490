//! The [`Admin`] backend of the HTTP API: rotate and roll back by messaging the secret's
//! rotation actor (woken on every request, see [`RotationContext::wake`], never cached;
//! a request that an actor stopping for hibernation dropped unread, see [`Receipt`], goes
//! to the next incarnation), read versions and history from the store, and the schedule
//! from the status board.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use ractor::ActorRef;
use ractor::rpc::CallResult;

use super::consumers::{self, ConsumersMsg};
use super::jobs::{self, JobsMsg};
use super::managed::ManagedSecrets;
use super::metrics::{self as metrics_actor, MetricsMsg};
use super::rotation::{Receipt, RotationContext, RotationMsg, WakeError};
use crate::api::{
    Admin, AdminError, ConsumerView, JobRequest, JobView, PermitGrant, Report, ScheduleEntry,
};
use crate::domain::{HistoryRecord, RotationId, SecretRef, Trigger, VersionMeta};
use crate::machine::Rejection;

/// How long an API call waits for an actor before answering 503.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Times a request dropped unread by a stopping actor is sent again (to the next
/// incarnation), the first after [`UNREAD_RETRY`], doubling.
const UNREAD_TRIES: u32 = 4;
const UNREAD_RETRY: Duration = Duration::from_millis(5);

/// What an operator asks a secret's rotation actor to do through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AdminAction {
    /// Start a rotation now.
    Rotate,
    /// Roll back the rotation in grace.
    Rollback,
}

pub struct ActorAdmin {
    pub context: Arc<RotationContext>,
    pub secrets: Arc<ManagedSecrets>,
    pub ready: Arc<AtomicBool>,
}

impl ActorAdmin {
    fn known(&self, secret: &SecretRef) -> Result<(), AdminError> {
        if self.secrets.contains(secret) {
            Ok(())
        } else {
            Err(AdminError::UnknownSecret(secret.to_string()))
        }
    }

    async fn actor(&self, secret: &SecretRef) -> Result<ActorRef<RotationMsg>, AdminError> {
        self.context.wake(secret).await.map_err(|e| match e {
            WakeError::Unknown(_) => AdminError::UnknownSecret(secret.to_string()),
            WakeError::ShuttingDown | WakeError::Unavailable { .. } => {
                AdminError::Unavailable(format!("{e}; try again"))
            }
        })
    }

    async fn call(&self, secret: SecretRef, action: AdminAction) -> Result<RotationId, AdminError> {
        self.known(&secret)?;
        let mut delay = UNREAD_RETRY;
        for _ in 0..UNREAD_TRIES {
            let actor = self.actor(&secret).await?;
            let receipt = Receipt::default();
            let r = match action {
                AdminAction::Rollback => {
                    actor
                        .call(
                            |reply| RotationMsg::Rollback {
                                reply,
                                receipt: receipt.clone(),
                            },
                            Some(CALL_TIMEOUT),
                        )
                        .await
                }
                AdminAction::Rotate => {
                    actor
                        .call(
                            |reply| RotationMsg::Rotate {
                                trigger: Trigger::Api,
                                reply,
                                receipt: receipt.clone(),
                            },
                            Some(CALL_TIMEOUT),
                        )
                        .await
                }
            };
            return match r {
                Ok(CallResult::Success(Ok(id))) => Ok(id),
                Ok(CallResult::Success(Err(rejection))) => Err(match rejection {
                    Rejection::InProgress { .. } | Rejection::NothingToRollBack => {
                        AdminError::Conflict(format!("{secret}: {rejection}"))
                    }
                }),
                Ok(CallResult::Timeout) => Err(AdminError::Unavailable(format!(
                    "the rotation actor of {secret} did not answer in {CALL_TIMEOUT:?}"
                ))),
                // Dropped unread: the actor stopped before it reached the request (it went
                // into hibernation as the request arrived, or failed on an earlier message).
                // Nothing happened; the next incarnation is asked.
                Ok(CallResult::SenderError) | Err(_) if !receipt.taken() => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    continue;
                }
                // It failed on this request: asking again could fail it again.
                Ok(CallResult::SenderError) | Err(_) => Err(AdminError::Unavailable(format!(
                    "the rotation actor of {secret} stopped while answering; try again"
                ))),
            };
        }
        Err(AdminError::Unavailable(format!(
            "the rotation actor of {secret} stopped {UNREAD_TRIES} times before it took the \
             request; try again"
        )))
    }
}

impl Admin for ActorAdmin {
    fn jwks(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<u8>, AdminError>> {
        Box::pin(async move {
            // Built for the call: a hibernating secret has no spec in memory.
            let spec = self
                .secrets
                .spec(&secret)
                .ok_or_else(|| AdminError::UnknownSecret(secret.to_string()))?;
            let Some(set) = spec.target.public_key_set() else {
                return Err(AdminError::NotFound(format!(
                    "{secret} publishes no public key set (only jwks targets with algorithm \
                     ed25519 do)"
                )));
            };
            set.await
                .map_err(|e| AdminError::Internal(format!("{secret}: {e}")))
        })
    }

    fn rotate(&self, secret: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        Box::pin(self.call(secret, AdminAction::Rotate))
    }

    fn rollback(&self, secret: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        Box::pin(self.call(secret, AdminAction::Rollback))
    }

    fn versions(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<VersionMeta>, AdminError>> {
        Box::pin(async move {
            self.known(&secret)?;
            self.context
                .store
                .versions(&secret)
                .await
                .map_err(store_error)
        })
    }

    fn history(
        &self,
        secret: SecretRef,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<HistoryRecord>, AdminError>> {
        Box::pin(async move {
            self.known(&secret)?;
            self.context
                .store
                .history(&secret, limit)
                .await
                .map_err(store_error)
        })
    }

    fn schedule(&self) -> BoxFuture<'_, Result<Vec<ScheduleEntry>, AdminError>> {
        Box::pin(async move {
            Ok(self
                .context
                .board
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
            let actor: ActorRef<MetricsMsg> = ractor::registry::where_is(format!(
                "{}{}",
                self.context.namespace,
                metrics_actor::NAME
            ))
            .map(ActorRef::from)
            .ok_or_else(|| AdminError::Unavailable("metrics actor restarting".into()))?;
            match actor.call(MetricsMsg::Encode, Some(CALL_TIMEOUT)).await {
                Ok(CallResult::Success(Ok(text))) => Ok(text),
                Ok(CallResult::Success(Err(e))) => Err(AdminError::Internal(e)),
                _ => Err(AdminError::Unavailable(
                    "metrics actor did not answer".into(),
                )),
            }
        })
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn consumer_report(&self, report: Report) -> BoxFuture<'_, Result<(), AdminError>> {
        Box::pin(self.consumers_call(|reply| ConsumersMsg::Report { report, reply }))
    }

    fn permit_acquire(
        &self,
        consumer_id: String,
        workload: String,
    ) -> BoxFuture<'_, Result<PermitGrant, AdminError>> {
        Box::pin(self.consumers_call(|reply| ConsumersMsg::Acquire {
            consumer_id,
            workload,
            reply,
        }))
    }

    fn permit_release(&self, permit_id: String) -> BoxFuture<'_, Result<(), AdminError>> {
        Box::pin(self.consumers_call(|reply| ConsumersMsg::Release { permit_id, reply }))
    }

    fn rotate_all(&self, request: JobRequest) -> BoxFuture<'_, Result<JobView, AdminError>> {
        Box::pin(self.jobs_call(|reply| JobsMsg::Start { request, reply }))
    }

    fn job(&self, job_id: String) -> BoxFuture<'_, Result<JobView, AdminError>> {
        Box::pin(std::future::ready(self.context.jobs.view(&job_id)))
    }

    fn job_in_memory(&self, job_id: &str) -> Option<Result<JobView, AdminError>> {
        // From the jobs actor's published views, not through its mailbox: while a job
        // runs that mailbox holds every attempt's outcome, and a read must not queue
        // behind them.
        Some(self.context.jobs.view(job_id))
    }

    fn cancel_job(&self, job_id: String) -> BoxFuture<'_, Result<JobView, AdminError>> {
        Box::pin(self.jobs_call(|reply| JobsMsg::Cancel { id: job_id, reply }))
    }

    fn consumers(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<ConsumerView>, AdminError>> {
        Box::pin(async move {
            self.known(&secret)?;
            // The board and the status board are memory: no actor call, no store read.
            let current = self.context.board.get(&secret).and_then(|s| s.current);
            Ok(consumers::views(&self.context.consumers, &secret, current))
        })
    }
}

impl ActorAdmin {
    /// One call to the jobs actor.
    async fn jobs_call<T: Send + 'static>(
        &self,
        msg: impl FnOnce(ractor::RpcReplyPort<Result<T, AdminError>>) -> JobsMsg,
    ) -> Result<T, AdminError> {
        let actor: ActorRef<JobsMsg> =
            ractor::registry::where_is(jobs::actor_name(&self.context.namespace))
                .map(ActorRef::from)
                .ok_or_else(|| {
                    AdminError::Unavailable("the jobs actor is restarting; try again".into())
                })?;
        match actor.call(msg, Some(CALL_TIMEOUT)).await {
            Ok(CallResult::Success(r)) => r,
            Ok(CallResult::Timeout) => Err(AdminError::Unavailable(format!(
                "the jobs actor did not answer in {CALL_TIMEOUT:?}"
            ))),
            Ok(CallResult::SenderError) | Err(_) => Err(AdminError::Unavailable(
                "the jobs actor stopped while answering; try again".into(),
            )),
        }
    }

    /// One call to the consumers actor, which answers for reports and permits.
    async fn consumers_call<T: Send + 'static>(
        &self,
        msg: impl FnOnce(ractor::RpcReplyPort<Result<T, AdminError>>) -> ConsumersMsg,
    ) -> Result<T, AdminError> {
        let actor: ActorRef<ConsumersMsg> =
            ractor::registry::where_is(consumers::actor_name(&self.context.namespace))
                .map(ActorRef::from)
                .ok_or_else(|| {
                    AdminError::Unavailable(
                        "the consumers actor is not running (restarting, or [server] consumer_token_file is not set)".into(),
                    )
                })?;
        match actor.call(msg, Some(CALL_TIMEOUT)).await {
            Ok(CallResult::Success(r)) => r,
            Ok(CallResult::Timeout) => Err(AdminError::Unavailable(format!(
                "the consumers actor did not answer in {CALL_TIMEOUT:?}"
            ))),
            Ok(CallResult::SenderError) | Err(_) => Err(AdminError::Unavailable(
                "the consumers actor stopped while answering; try again".into(),
            )),
        }
    }
}

/// A store read that failed: the API's 500, naming the store's (value-free) reason.
fn store_error(e: crate::store::StoreError) -> AdminError {
    AdminError::Internal(format!("store: {e}"))
}
