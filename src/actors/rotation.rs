//! One rotation actor per tenant secret: it drives the pure state machine.
//!
//! On start it loads the secret's journal from the store and sends the machine
//! [`Event::Resume`], so an attempt that was in flight when the process died continues or
//! rolls back where it stopped. For every event it persists the machine's new state (with
//! the labels and history it implies, in one store transaction) **before** executing the
//! effects. Step effects (generate, apply, test, promote, revoke) run in a task of their own
//! so the actor keeps answering status and API calls; the task reports back with
//! [`RotationMsg::StepResult`]. One deadline per secret (next due time, grace expiry or a
//! retry), kept by the shared [`Scheduler`]; no polling.
//!
//! A global semaphore bounds rotations in flight: an attempt takes a slot before its first
//! step and holds it until it is promoted, rolled back or abandoned. A secret waiting for a
//! slot is already `generating` (persisted), so it is neither lost nor started twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use prometheus_client::metrics::gauge::Gauge;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::notifier::{self, NotifierMsg};
use super::scheduler::Scheduler;
use crate::clock::Clock;
use crate::domain::{ErrorKind, Outcome, RotationId, SecretRef, Step, Trigger, VersionNo};
use crate::generator::{self, GeneratorSpec};
use crate::machine::{
    self, Effect, Event, ExpiryGate, Notice, Phase, Rejection, Rules, SecretState,
};
use crate::metrics::Metrics;
use crate::schedule::secret_seed;
use crate::status::{SecretStatus, StatusBoard};
use crate::store::{Commit, Store, StoreError};
use crate::supervisor::AbortOnDrop;
use crate::target::{Target, TargetError};

/// The schedule as the actor needs it: next due given the last rotation time and now.
pub type NextDue =
    dyn Fn(Option<DateTime<Utc>>, DateTime<Utc>) -> Option<DateTime<Utc>> + Send + Sync;

/// Everything the actor needs to know about its secret's policy.
pub struct RotationSpec {
    pub secret: SecretRef,
    pub policy: String,
    pub generator: GeneratorSpec,
    pub grace: TimeDelta,
    pub max_attempts: u32,
    pub retry_backoff: TimeDelta,
    pub retry_backoff_max: TimeDelta,
    pub expiry_gate: ExpiryGate,
    pub next_due: Arc<NextDue>,
    /// Longest a single step may take before it counts as failed.
    pub step_timeout: Duration,
    pub target: Arc<dyn Target>,
}

/// The tree's runtime context, shared by every rotation actor: the store, metrics, clock,
/// concurrency slots, status board, timer and registry namespace.
pub struct RotationContext {
    pub store: Arc<dyn Store>,
    pub metrics: Metrics,
    pub clock: Clock,
    /// Rotations in flight, bounded (`runtime.max_concurrent_rotations`).
    pub slots: Arc<Semaphore>,
    pub board: Arc<StatusBoard>,
    /// The one timer task of all rotation actors.
    pub scheduler: Arc<Scheduler>,
    /// Prefix of every registry name in this tree.
    pub namespace: String,
}

/// The registry name of a secret's rotation actor in the tree `namespace` (empty in
/// production; tests run several trees in one process). Look it up for every request;
/// never keep the `ActorRef` (a restarted actor is a new one).
pub fn actor_name(namespace: &str, secret: &SecretRef) -> String {
    format!("{namespace}rotation:{secret}")
}

pub enum RotationMsg {
    /// Start a rotation now; answers with its id or why not.
    Rotate {
        trigger: Trigger,
        reply: RpcReplyPort<Result<RotationId, Rejection>>,
    },
    /// Roll back the rotation in grace.
    Rollback(RpcReplyPort<Result<RotationId, Rejection>>),
    /// The current status.
    Status(RpcReplyPort<SecretStatus>),
    /// A watched mount shows the value with this fingerprint.
    ConsumerSaw { fingerprint: String },
    /// The secret's timer fired.
    Timer,
    /// A step task finished.
    StepResult {
        rotation: RotationId,
        step: Step,
        result: Result<(), ErrorKind>,
        slot: Option<Slot>,
    },
    /// Test-only fault hook: the actor panics while handling it, so supervision can be
    /// exercised. Exists only with the `test-util` feature, never in a release build.
    #[cfg(feature = "test-util")]
    InjectPanic,
}

/// A held concurrency slot; keeps the `secret_rotation_jobs_active` gauge right on drop.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    jobs_active: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.jobs_active.dec();
    }
}

pub struct RotationState {
    spec: Arc<RotationSpec>,
    context: Arc<RotationContext>,
    machine: SecretState,
    /// The step in flight; aborted with the state, so a step does not outlive a crashed actor.
    step_task: Option<AbortOnDrop>,
    slot: Option<Slot>,
}

pub struct RotationActor;

impl Actor for RotationActor {
    type Msg = RotationMsg;
    type State = RotationState;
    type Arguments = (Arc<RotationSpec>, Arc<RotationContext>);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (spec, context): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // The journal is read in post_start, in this actor's own task: the supervisor awaits
        // pre_start, and 100,000 store reads in a row there would serialise start-up.
        Ok(RotationState {
            spec,
            context,
            machine: SecretState::default(),
            step_task: None,
            slot: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Boxed for the same reason as `drive` in `handle`: keep idle actors small.
        Box::pin(state.load_and_resume(&myself)).await
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // `drive` is boxed: its future is large, and an unboxed one would be part of every
        // idle actor's task allocation (100,000 of them), not just of busy ones.
        match msg {
            RotationMsg::Rotate { trigger, reply } => {
                let r = Box::pin(state.drive(&myself, Event::Rotate { trigger })).await?;
                // The caller may have given up (timeout); that is fine.
                let _ = reply.send(r);
            }
            RotationMsg::Rollback(reply) => {
                let r = Box::pin(state.drive(&myself, Event::Rollback)).await?;
                let _ = reply.send(r);
            }
            RotationMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            RotationMsg::ConsumerSaw { fingerprint } => {
                if let Some(version) =
                    Box::pin(state.version_with_fingerprint(&fingerprint)).await?
                {
                    let _ = Box::pin(state.drive(&myself, Event::ConsumerSaw { version })).await?;
                }
            }
            RotationMsg::Timer => {
                let _ = Box::pin(state.drive(&myself, Event::Timer)).await?;
            }
            RotationMsg::StepResult {
                rotation,
                step,
                result,
                slot,
            } => {
                state.step_task = None;
                if slot.is_some() {
                    state.slot = slot;
                }
                let event = match result {
                    Ok(()) => Event::StepDone { rotation, step },
                    Err(error) => {
                        state
                            .context
                            .metrics
                            .rotation_error(&state.spec.policy, error.as_str());
                        Event::StepFailed {
                            rotation,
                            step,
                            error,
                        }
                    }
                };
                let _ = Box::pin(state.drive(&myself, event)).await?;
            }
            #[cfg(feature = "test-util")]
            RotationMsg::InjectPanic => panic!("fault injected into {}", state.spec.secret),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.context.scheduler.cancel(&state.spec.secret);
        state.step_task = None;
        Ok(())
    }
}

impl RotationState {
    /// Loads the journal and resumes whatever was in flight.
    async fn load_and_resume(
        &mut self,
        myself: &ActorRef<RotationMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let journal = self.context.store.journal(&self.spec.secret).await?;
        if let Some(bytes) = journal {
            self.machine = serde_json::from_slice(&bytes)
                .map_err(|e| format!("journal of {} is unreadable: {e}", self.spec.secret))?;
        }
        // Resume is never rejected.
        let _ = self.drive(myself, Event::Resume).await?;
        Ok(())
    }

    /// Steps the machine, persists, then executes the effects. Answers with the id of the
    /// attempt the step concerned.
    async fn drive(
        &mut self,
        myself: &ActorRef<RotationMsg>,
        event: Event,
    ) -> Result<Result<RotationId, Rejection>, ActorProcessingErr> {
        let now = self.context.clock.now();
        let spec = self.spec.clone();
        let next_due = |last, now| (spec.next_due)(last, now);
        let rules = Rules {
            grace: spec.grace,
            max_attempts: spec.max_attempts,
            retry_backoff: spec.retry_backoff,
            retry_backoff_max: spec.retry_backoff_max,
            expiry_gate: spec.expiry_gate,
            jitter_seed: secret_seed(&spec.secret),
            next_due: &next_due,
        };
        let t = match rules.step(&self.machine, event, now) {
            Ok(t) => t,
            Err(rejection) => return Ok(Err(rejection)),
        };
        if t.state != self.machine || t.history.is_some() {
            // Durability rule: the new state is on disk before any of its effects run.
            let journal = serde_json::to_vec(&t.state)?;
            let labels = machine::labels(&t.state);
            let committed = self
                .context
                .store
                .commit(
                    &spec.secret,
                    Commit {
                        journal: &journal,
                        labels: &labels,
                        history: t.history.as_ref(),
                        now,
                    },
                )
                .await;
            // A failed commit fails the actor: its supervisor restarts it, and it resumes
            // from the last state that did reach the store.
            self.context
                .metrics
                .store_up
                .set(i64::from(committed.is_ok()));
            committed?;
        }
        self.machine = t.state;
        // A slot is held only while an attempt is before its promotion (or rolling back).
        if !holds_a_slot(&self.machine.phase) {
            self.slot = None;
        }
        if let Some(outcome) = t.outcome {
            self.count_outcome(outcome, now);
        }
        for effect in t.effects {
            self.execute(myself, effect, now);
        }
        self.context.board.set(&self.spec.secret, self.status());
        Ok(Ok(t.rotation))
    }

    fn execute(&mut self, myself: &ActorRef<RotationMsg>, effect: Effect, now: DateTime<Utc>) {
        match effect {
            Effect::ArmTimer { at, .. } => self.context.scheduler.arm(&self.spec.secret, at),
            Effect::CancelTimer { .. } => self.context.scheduler.cancel(&self.spec.secret),
            Effect::Notify { rotation, notice } => self.notify(rotation, notice, now),
            step_effect => self.spawn_step(myself, step_effect),
        }
    }

    /// Counts the result an attempt reached (the machine says which, once per result).
    fn count_outcome(&self, outcome: Outcome, now: DateTime<Utc>) {
        let m = &self.context.metrics;
        let policy = &self.spec.policy;
        let mut duration = None;
        if outcome == Outcome::Succeeded
            && let Some(run) = self.machine.phase.run()
        {
            let secs = (now - run.started_at).num_milliseconds().max(0) as f64 / 1000.0;
            m.rotation_duration_seconds
                .get_or_create(&crate::metrics::PolicyLabels {
                    policy: policy.clone(),
                })
                .observe(secs);
            duration = Some(secs);
        }
        m.rotation(policy, outcome.as_str());
        let secret = &self.spec.secret;
        let promoted_at = (outcome == Outcome::Succeeded).then(|| now.timestamp());
        m.secret_rotation(
            secret.tenant(),
            secret.key(),
            outcome.as_str(),
            duration,
            promoted_at,
        );
    }

    fn notify(&self, rotation: RotationId, notice: Notice, now: DateTime<Utc>) {
        notifier::send(
            &self.context.namespace,
            NotifierMsg::Event {
                secret: self.spec.secret.clone(),
                rotation,
                notice,
                at: now,
            },
        );
    }

    /// Runs one step effect in its own task, which reports back with `StepResult`.
    fn spawn_step(&mut self, myself: &ActorRef<RotationMsg>, effect: Effect) {
        let (rotation, step) = match &effect {
            Effect::Generate { rotation, .. } => (*rotation, Step::Generate),
            Effect::Apply { rotation, .. } => (*rotation, Step::Apply),
            Effect::Test { rotation, .. } => (*rotation, Step::Test),
            Effect::Promote { rotation, .. } => (*rotation, Step::Promote),
            Effect::Revoke { rotation, step, .. } => (*rotation, *step),
            Effect::Restore { rotation, .. } => (*rotation, Step::Rollback),
            _ => return,
        };
        let needs_slot = holds_a_slot(&self.machine.phase);
        let held = self.slot.take();
        let spec = self.spec.clone();
        let context = self.context.clone();
        let me = myself.clone();
        self.step_task = Some(AbortOnDrop::spawn(async move {
            let slot = match (held, needs_slot) {
                (Some(s), _) => Some(s),
                (None, true) => match context.slots.clone().acquire_owned().await {
                    Ok(permit) => {
                        context.metrics.rotation_jobs_active.inc();
                        Some(Slot {
                            _permit: permit,
                            jobs_active: context.metrics.rotation_jobs_active.clone(),
                        })
                    }
                    // The semaphore is closed only at shutdown.
                    Err(_) => return,
                },
                (None, false) => None,
            };
            let result =
                match tokio::time::timeout(spec.step_timeout, run_step(&spec, &context, effect))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(ErrorKind::Timeout),
                };
            let _ = me.cast(RotationMsg::StepResult {
                rotation,
                step,
                result,
                slot,
            });
        }));
    }

    fn status(&self) -> SecretStatus {
        let (next_due, grace_expires_at) = match &self.machine.phase {
            Phase::Idle { next_due, .. } => (*next_due, None),
            Phase::Grace { expires_at, .. } => (None, Some(*expires_at)),
            _ => (None, None),
        };
        SecretStatus {
            policy: self.spec.policy.clone(),
            phase: self.machine.phase.name(),
            current: self.machine.current,
            rotation: self.machine.phase.run().map(|r| r.rotation),
            next_due,
            grace_expires_at,
            last_rotated_at: self.machine.last_rotated_at,
            attempts: self.machine.attempts,
        }
    }

    async fn version_with_fingerprint(
        &self,
        fingerprint: &str,
    ) -> Result<Option<VersionNo>, ActorProcessingErr> {
        let versions = self.context.store.versions(&self.spec.secret).await?;
        Ok(versions
            .into_iter()
            .find(|v| v.fingerprint == fingerprint)
            .map(|v| v.version))
    }
}

/// Whether an attempt in `phase` holds a rotation slot: only while it is before its
/// promotion, or rolling back.
fn holds_a_slot(phase: &Phase) -> bool {
    matches!(
        phase,
        Phase::Generating(_)
            | Phase::Staged(_)
            | Phase::Applied(_)
            | Phase::Tested(_)
            | Phase::RollingBack { .. }
    )
}

/// Executes one step against the store and the target.
async fn run_step(
    spec: &RotationSpec,
    context: &RotationContext,
    effect: Effect,
) -> Result<(), ErrorKind> {
    let secret = &spec.secret;
    let log_err = |step: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(secret = %secret, step, error = %e, "rotation step failed");
    };
    // What a failed step reports: logged under the step's name, counted by its kind.
    let target_failed = |step: &'static str| {
        move |e: TargetError| {
            log_err(step, &e);
            e.kind
        }
    };
    let store_failed = |step: &'static str| {
        move |e: StoreError| {
            log_err(step, &e);
            ErrorKind::Store
        }
    };
    match effect {
        Effect::Generate { rotation, version } => {
            let now = context.clock.now();
            // The target shapes what consumers read (e.g. username, password, URL).
            let value = spec
                .target
                .shape_value(version, generator::generate(&spec.generator))
                .await
                .map_err(target_failed("generate"))?;
            context
                .store
                .put_version(secret, version, rotation, &value, now)
                .await
                .map_err(store_failed("generate"))
        }
        Effect::Apply { version, .. } | Effect::Test { version, .. } => {
            let is_apply = matches!(effect, Effect::Apply { .. });
            let value = context
                .store
                .read_value(secret, version)
                .await
                .map_err(store_failed("read"))?;
            let r = if is_apply {
                spec.target.apply(version, &value).await
            } else {
                spec.target.test(version, &value).await
            };
            r.map_err(target_failed(if is_apply { "apply" } else { "test" }))
        }
        Effect::Promote {
            version, previous, ..
        } => {
            let promoted = spec.target.promote(version, previous).await;
            promoted.map_err(target_failed("promote"))
        }
        Effect::Revoke { version, .. } => {
            let revoked = spec.target.revoke(version).await;
            revoked.map_err(target_failed("revoke"))
        }
        Effect::Restore {
            restore, revoke, ..
        } => {
            let restored = spec.target.restore(restore, revoke).await;
            restored.map_err(target_failed("rollback"))
        }
        Effect::ArmTimer { .. } | Effect::CancelTimer { .. } | Effect::Notify { .. } => Ok(()),
    }
}
