//! One rotation actor per tenant secret: it drives the pure state machine.
//!
//! The actor lives only while its secret has work. An idle secret (nothing in flight, no
//! deadline within `hibernate_after`) has no actor: its deadlines wait in the shared
//! [`Scheduler`] and its status on the [`StatusBoard`]. [`RotationContext::wake`] starts the
//! actor on demand (a deadline, an API call, a job, a consumer report, a watcher), as a
//! transient child of the rotations supervisor: it resumes from its journal exactly as after
//! a restart, and stops itself normally once it has been idle for `hibernate_after`
//! ([`RotationMsg::Hibernate`]). A normal stop is not restarted; a failure is.
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
//!
//! With a `verify_interval`, the actor also checks the current version against the target
//! ([`Target::verify`]) on a second deadline of the scheduler, and right after a step the
//! target refused with an authentication error ([`TargetError::refused`]). It does so only
//! while no rotation is in flight; when the target has lost the version it applies and tests
//! it again, without a new version and without touching the machine's state (so no grace or
//! schedule moves), and says so in a notice and `rotor_target_reapplied_total`. An
//! unreachable target is a verify error, never a reason to re-apply. Verify tasks and step
//! tasks share one lock per secret, so a re-apply and a rotation step never run at once: a
//! rotation that starts during a verify waits for it before its first step.
//!
//! Expiry can wait for consumers: Vault views ([`RotationMsg::ViewShows`]), a watched mount
//! ([`RotationMsg::ConsumerSaw`]) and agents in workload pods (the [`ConsumerBoard`], which
//! the consumers actor fills and announces with [`RotationMsg::ConsumersChanged`]). The
//! machine hears `ConsumerSaw` for the current version once each of those the secret has
//! shows it ([`RotationState::consumers_saw`]). A secret with agent consumers is gated on
//! every live one; one that stops reporting stops gating when it is found gone (`[consumers]
//! ttl`), and `max_grace_extension` bounds the wait. At expiry the consumers that did not
//! show the new version are named in a `consumers_late` notice and in the history record.
//!
//! A restore that takes the target back in time can also bring back versions rotor
//! revoked (an older Redis aclfile holds old password hashes; a PostgreSQL backup can have
//! the other `alternating` role able to log in). So a verify also revokes old versions
//! again ([`revoke_again`]): after a re-apply, every stored version that is neither
//! current, previous in grace nor pending (the newest [`REVOKE_AGAIN_MAX`]); when the
//! current version holds, only the one that expired last, the one a backup taken during
//! the last grace still has. Counted in `rotor_target_revoked_again_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use prometheus_client::metrics::gauge::Gauge;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{Mutex as AsyncMutex, OwnedSemaphorePermit, Semaphore};

use super::consumers::{self as consumers_actor, ConsumerBoard, Lagging};
use super::managed::ManagedSecrets;
use super::notifier::{self, NotifierMsg};
use super::scheduler::{Scheduler, TimerKind};
use crate::clock::Clock;
use crate::domain::{ErrorKind, Outcome, RotationId, SecretRef, Step, Trigger, VersionNo};
use crate::generator::{self, GeneratorSpec, SecretValue};
use crate::machine::{
    self, Effect, Event, ExpiryGate, Notice, Phase, Rejection, Rules, SecretState,
};
use crate::metrics::Metrics;
use crate::schedule::{jitter_offset, secret_seed};
use crate::status::{SecretStatus, StatusBoard};
use crate::store::{Commit, NewVersion, Store, StoreError};
use crate::supervisor::{AbortOnDrop, ChildSpec, Restart, SupervisorError};
use crate::target::{Target, TargetError, Verified};

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
    /// How often the current version is verified against the target (`None`: never, and
    /// no verify after a refused step either).
    pub verify_interval: Option<Duration>,
    /// The views (Vault or AWS) that show this secret. With any, `expiry_gate` is
    /// `GraceAndConsumers` and the machine hears `ConsumerSaw` only once every one of them
    /// shows the current version.
    pub views: Vec<ViewLink>,
    /// Whether a watched mount must show the current version too (the policy says
    /// `expire_after = "grace_and_consumers"`); without views this is what `expiry_gate`
    /// says already.
    pub gate_on_mounts: bool,
    /// Whether agents' reports gate expiry (rotor takes consumer reports: `[server]
    /// consumer_token_file` is set). Only a secret that has or had consumers on the
    /// [`ConsumerBoard`] waits for them; `expiry_gate` is then `GraceAndConsumers`.
    pub gate_on_consumers: bool,
}

/// A view of the secret: its name (`mount/path`, as in metrics and logs) and the registry
/// name of its publisher, which the actor nudges after a promotion or rollback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewLink {
    pub name: String,
    pub actor: String,
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
    /// What agents reported, by secret (filled by the consumers actor).
    pub consumers: Arc<ConsumerBoard>,
    /// The latest view of every emergency rotation job (filled by the jobs actor, read by
    /// the API without a message to it).
    pub jobs: Arc<super::jobs::JobBoard>,
    /// Every managed secret; a woken actor's spec is built from it.
    pub secrets: Arc<ManagedSecrets>,
    /// How long an actor with nothing to do stays up before it stops (`None`: never; every
    /// secret then keeps its actor, as before hibernation).
    pub hibernate_after: Option<Duration>,
}

/// Why [`RotationContext::wake`] could not give an actor.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    #[error("{0} is not a managed secret")]
    Unknown(SecretRef),
    #[error("rotor is shutting down")]
    ShuttingDown,
    #[error("the rotation actor of {secret} cannot start now: {reason}")]
    Unavailable { secret: SecretRef, reason: String },
}

/// Tries of [`RotationContext::wake`] while the secret's previous actor is still stopping
/// (hibernating) or waits for a restart, the first after [`WAKE_RETRY`], doubling.
const WAKE_TRIES: u32 = 8;
const WAKE_RETRY: Duration = Duration::from_millis(5);

/// The reason a hibernating actor stops with (a normal stop: not restarted).
pub const HIBERNATE_REASON: &str = "hibernating";

/// The registry name of the rotations supervisor of the tree `namespace`.
pub fn supervisor_name(namespace: &str) -> String {
    format!("{namespace}rotor.rotations")
}

impl RotationContext {
    /// The actor of `secret`, started if it hibernates. Race-safe: the rotations supervisor
    /// handles start requests one at a time and refuses a second child with the same id,
    /// so of two callers waking the same secret one starts it and the other finds it by
    /// name. Never keep the answer (a restarted or hibernated actor is another one).
    pub async fn wake(
        self: &Arc<Self>,
        secret: &SecretRef,
    ) -> Result<ActorRef<RotationMsg>, WakeError> {
        let name = actor_name(&self.namespace, secret);
        let mut spec = None;
        let mut delay = WAKE_RETRY;
        let mut reason = String::new();
        for _ in 0..WAKE_TRIES {
            if let Some(cell) = ractor::registry::where_is(name.clone()) {
                return Ok(cell.into());
            }
            if self.slots.is_closed() {
                return Err(WakeError::ShuttingDown);
            }
            let spec = match &spec {
                Some(spec) => Arc::clone(spec),
                None => {
                    let built = self
                        .secrets
                        .spec(secret)
                        .ok_or_else(|| WakeError::Unknown(secret.clone()))?;
                    spec = Some(built.clone());
                    built
                }
            };
            match ractor::registry::where_is(supervisor_name(&self.namespace)) {
                // Being restarted by the root: try again shortly.
                None => reason = "the rotations supervisor is restarting".into(),
                Some(supervisor) => {
                    let started =
                        crate::supervisor::start_child(&supervisor.into(), self.child_spec(spec))
                            .await;
                    match started {
                        Ok(cell) => return Ok(cell.into()),
                        // Another caller started it (found by name on the next try), or the
                        // last incarnation is still stopping or waits for its restart.
                        Err(e @ SupervisorError::DuplicateChild { .. }) => reason = e.to_string(),
                        Err(e) => {
                            return Err(WakeError::Unavailable {
                                secret: secret.clone(),
                                reason: e.to_string(),
                            });
                        }
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        Err(WakeError::Unavailable {
            secret: secret.clone(),
            reason,
        })
    }

    /// The rotations supervisor's child for `spec`: transient, so an actor that stops
    /// because it is idle is removed, and one that fails is restarted (with the same spec).
    pub fn child_spec(self: &Arc<Self>, spec: Arc<RotationSpec>) -> ChildSpec {
        let context = self.clone();
        ChildSpec::actor(
            spec.secret.to_string(),
            "rotation",
            Restart::Transient,
            Some(actor_name(&self.namespace, &spec.secret)),
            move || (RotationActor, (spec.clone(), context.clone())),
        )
    }
}

/// Whether a secret in `phase` may be left without an actor. `memory_gates`: its expiry
/// waits for reports the actor keeps in memory (views, agents), so it keeps its actor
/// through grace. Everything else in flight has a step running.
pub fn may_hibernate(phase: &Phase, memory_gates: bool) -> bool {
    match phase {
        Phase::Idle { .. } | Phase::Stuck { .. } => true,
        Phase::Grace { .. } => !memory_gates,
        _ => false,
    }
}

/// The registry name of a secret's rotation actor in the tree `namespace` (empty in
/// production; tests run several trees in one process). Look it up for every request;
/// never keep the `ActorRef` (a restarted actor is a new one).
pub fn actor_name(namespace: &str, secret: &SecretRef) -> String {
    format!("{namespace}rotation:{secret}")
}

/// Marked by the rotation actor as it takes an operator's request out of its mailbox. A
/// caller whose reply port was dropped learns from it whether the request was taken (the
/// actor failed on it: asking again could fail it again) or dropped unread: the actor
/// stopped first, to hibernate or failing on an earlier message, and the next incarnation
/// may be asked.
#[derive(Debug, Clone, Default)]
pub struct Receipt(Arc<AtomicBool>);

impl Receipt {
    fn mark(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether the actor took the request.
    pub fn taken(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

pub enum RotationMsg {
    /// Start a rotation now; answers with its id or why not.
    Rotate {
        trigger: Trigger,
        reply: RpcReplyPort<Result<RotationId, Rejection>>,
        receipt: Receipt,
    },
    /// Start a rotation for an emergency rotation job ([`super::jobs`]): trigger `job`,
    /// the job's name on the run, and with `expire_previous` no grace after promotion.
    /// Answers like `Rotate`; the job hears the attempt's outcome through
    /// [`super::jobs::report_outcome`].
    JobRotate {
        job: String,
        expire_previous: bool,
        reply: RpcReplyPort<Result<RotationId, Rejection>>,
    },
    /// End the grace period now (a job reached the secret while it was in grace); answers
    /// once the new state is committed. Nothing happens outside grace.
    ExpireNow(RpcReplyPort<()>),
    /// Roll back the rotation in grace.
    Rollback {
        reply: RpcReplyPort<Result<RotationId, Rejection>>,
        receipt: Receipt,
    },
    /// The current status.
    Status(RpcReplyPort<SecretStatus>),
    /// A watched mount shows the value with this fingerprint.
    ConsumerSaw { fingerprint: String },
    /// The Vault view `view` (`mount/path`) shows `version` of this secret.
    ViewShows { view: String, version: VersionNo },
    /// The secret's consumers on the [`ConsumerBoard`] changed (a version, one gone or
    /// back, one added or dropped): check the gate again.
    ConsumersChanged,
    /// The secret's timer fired.
    Timer,
    /// A step task finished.
    StepResult {
        rotation: RotationId,
        step: Step,
        result: Result<(), ErrorKind>,
        /// The target refused the secret's credential ([`TargetError::refused`]).
        refused: bool,
        slot: Option<Slot>,
    },
    /// The verify deadline fired: check the current version against the target.
    Verify,
    /// A verify task finished.
    Verified {
        version: VersionNo,
        outcome: VerifyOutcome,
        revoked: RevokedAgain,
    },
    /// The actor has been idle for `hibernate_after`: it stops (normally) unless work came
    /// in since or a deadline is near.
    Hibernate,
    /// Test-only fault hook: the actor panics while handling it, so supervision can be
    /// exercised. Exists only with the `test-util` feature, never in a release build.
    #[cfg(feature = "test-util")]
    InjectPanic,
}

/// What a verify of the current version came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The target holds the version.
    Holds,
    /// The target had lost it; it was applied and tested again.
    Reapplied,
    /// The target had lost it, and applying or testing it again failed.
    ReapplyFailed(ErrorKind),
    /// The target could not be asked (unreachable, timed out, the value unreadable).
    Failed(ErrorKind),
    /// The target cannot verify (`Verified::Unsupported`).
    Unsupported,
}

/// What revoking old versions again after a verify came to ([`revoke_again`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RevokedAgain {
    /// Revokes that succeeded (most change nothing: revoke is idempotent).
    pub succeeded: u32,
    /// Revokes that failed, or 1 when the list of versions could not be read.
    pub failed: u32,
    /// It did not get through every version it meant to revoke.
    pub incomplete: bool,
}

/// The most old versions one verify revokes again after a re-apply, newest first. A restore
/// brings back what a backup held, and a backup holds the versions valid when it was
/// taken: the latest few. Each revoke is a round trip to the target (a PostgreSQL admin
/// login, a Redis `ACL GETUSER` and `ACL SAVE`) made while holding the secret's target
/// lock, which a rotation of this secret waits for; a bound keeps a secret with years of
/// history from holding it for hundreds of them.
pub const REVOKE_AGAIN_MAX: usize = 16;

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

/// Counts a live rotation actor in `rotor_rotation_actors_awake` while it is held: kept in
/// the actor's state, so it is released however the actor ends (a hibernation, a failure,
/// a panic), where `post_stop` runs only on a normal stop.
struct Awake(prometheus_client::metrics::gauge::Gauge);

impl Awake {
    fn new(gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        Awake(gauge.clone())
    }
}

impl Drop for Awake {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub struct RotationState {
    _awake: Awake,
    spec: Arc<RotationSpec>,
    context: Arc<RotationContext>,
    machine: SecretState,
    /// The step in flight; aborted with the state, so a step does not outlive a crashed actor.
    step_task: Option<AbortOnDrop>,
    slot: Option<Slot>,
    /// Held by every step task and every verify task while they use the target, so a
    /// re-apply never interleaves with a rotation's steps. A tokio mutex: it is held across
    /// the target's awaits. Only with a `verify_interval`: without verifies there is
    /// nothing to exclude, and idle actors stay as small as they were.
    target_lock: Option<Arc<AsyncMutex<()>>>,
    /// The verify in flight, aborted with the state like `step_task`.
    verify_task: Option<AbortOnDrop>,
    /// A verify is due (deadline fired, or a step was refused) and waits until no rotation
    /// is in flight.
    verify_wanted: bool,
    /// The target answered `Unsupported`: stop arming the verify deadline.
    verify_unsupported: bool,
    /// The last verify failed; the next failure in a row is counted but not notified again.
    verify_failing: bool,
    /// The version each view of the secret last said it shows. Kept in memory only: views
    /// report at every tick, so a restarted actor learns again within one interval.
    views_show: std::collections::BTreeMap<String, VersionNo>,
    /// The version a watched mount last showed (only kept when the secret has views or
    /// agent consumers; see `consumers_saw`).
    mount_saw: Option<VersionNo>,
    /// The consumers that lagged when the previous version expired, kept for the history
    /// record of the same attempt (written once its revoke is done). In memory only: after
    /// a restart in between, the record is written without them (the notice went out).
    /// The secret keeps its actor while this is set (see `hibernatable`).
    lagging_at_expiry: Option<Lagging>,
    /// Every old version is owed a revoke again (the target lost the current version, and
    /// the revokes after it did not all happen): the next verify that finds the current
    /// version working does them all, not only the last expired one.
    revoke_all_wanted: bool,
    /// The last attempt that ended was a job's, and no operator request came since: the
    /// job never asks this secret again, so the actor goes back to sleep after
    /// [`HIBERNATE_AFTER_JOB`] instead of the configured delay.
    job_done: bool,
}

/// The idle delay of an actor whose last attempt was a job's (when shorter than
/// `hibernate_after`). A job wakes each secret once; with the configured delay (30 s by
/// default) a job over 100,000 secrets at 4,000 a second kept every actor it woke awake
/// to its end (about 1 GB), with this one only those of the last second or so.
pub const HIBERNATE_AFTER_JOB: Duration = Duration::from_secs(1);

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
        let target_lock = spec.verify_interval.map(|_| Arc::new(AsyncMutex::new(())));
        Ok(RotationState {
            _awake: Awake::new(&context.metrics.rotation_actors_awake),
            spec,
            context,
            machine: SecretState::default(),
            step_task: None,
            slot: None,
            target_lock,
            verify_task: None,
            verify_wanted: false,
            verify_unsupported: false,
            job_done: false,
            verify_failing: false,
            views_show: std::collections::BTreeMap::new(),
            mount_saw: None,
            lagging_at_expiry: None,
            revoke_all_wanted: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Boxed for the same reason as `drive` in `handle`: keep idle actors small.
        Box::pin(state.load_and_resume(&myself)).await?;
        // A secret woken from hibernation keeps the verify deadline it had.
        if state
            .context
            .scheduler
            .armed(&state.spec.secret, TimerKind::Verify)
            .is_none()
        {
            state.arm_verify(true);
        }
        state.arm_hibernate();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // `drive` is boxed: its future is large, and an unboxed one would be part of every
        // idle actor's task allocation (100,000 of them), not just of busy ones.
        if let RotationMsg::Hibernate = msg {
            if state.hibernatable() && !state.deadline_within_idle_delay() {
                myself.stop(Some(HIBERNATE_REASON.to_owned()));
            }
            // A deadline is near: the message it brings re-arms the idle delay.
            return Ok(());
        }
        match msg {
            RotationMsg::Rotate {
                trigger,
                reply,
                receipt,
            } => {
                receipt.mark();
                state.job_done = false;
                let r = Box::pin(state.drive(&myself, Event::Rotate { trigger })).await?;
                // The caller may have given up (timeout); that is fine.
                let _ = reply.send(r);
            }
            RotationMsg::JobRotate {
                job,
                expire_previous,
                reply,
            } => {
                let event = Event::JobRotate {
                    job,
                    expire_previous,
                };
                let r = Box::pin(state.drive(&myself, event)).await?;
                let _ = reply.send(r);
            }
            RotationMsg::ExpireNow(reply) => {
                let _ = Box::pin(state.drive(&myself, Event::ExpireNow)).await?;
                let _ = reply.send(());
            }
            RotationMsg::Rollback { reply, receipt } => {
                receipt.mark();
                state.job_done = false;
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
                    if state.spec.views.is_empty() && !state.spec.gate_on_consumers {
                        let _ =
                            Box::pin(state.drive(&myself, Event::ConsumerSaw { version })).await?;
                    } else if state.mount_saw != Some(version) {
                        state.mount_saw = Some(version);
                        Box::pin(state.consumers_saw(&myself)).await?;
                    }
                }
            }
            RotationMsg::ViewShows { view, version } => {
                if state.views_show.insert(view, version) != Some(version) {
                    Box::pin(state.consumers_saw(&myself)).await?;
                }
            }
            RotationMsg::ConsumersChanged => {
                Box::pin(state.consumers_saw(&myself)).await?;
            }
            RotationMsg::Timer => {
                let _ = Box::pin(state.drive(&myself, Event::Timer)).await?;
            }
            RotationMsg::StepResult {
                rotation,
                step,
                result,
                refused,
                slot,
            } => {
                state.step_task = None;
                // A refused credential may mean the target forgot the current version too;
                // the verify runs once the attempt is over (see `maybe_verify`).
                if refused && state.spec.verify_interval.is_some() {
                    state.verify_wanted = true;
                }
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
            RotationMsg::Verify => {
                state.arm_verify(false);
                if !state.verify_unsupported {
                    state.verify_wanted = true;
                }
                state.maybe_verify(&myself);
            }
            RotationMsg::Verified {
                version,
                outcome,
                revoked,
            } => {
                state.verify_task = None;
                state.verified(version, outcome, revoked);
                state.maybe_verify(&myself);
            }
            RotationMsg::Hibernate => {}
            #[cfg(feature = "test-util")]
            RotationMsg::InjectPanic => panic!("fault injected into {}", state.spec.secret),
        }
        // A promotion (or a resume in grace) may find every gate open already: a secret
        // whose consumers all show the new version, or one with no consumers at all,
        // must not wait for `max_grace_extension`.
        if state.waits_for_consumers() {
            Box::pin(state.consumers_saw(&myself)).await?;
        }
        state.arm_hibernate();
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The secret's deadlines stay armed whatever the reason: they are what wakes it
        // (after hibernation, or when a restarted rotations supervisor comes back). At
        // shutdown a deadline that fires wakes nothing (`RotationContext::wake` refuses).
        state
            .context
            .scheduler
            .cancel_kind(&state.spec.secret, TimerKind::Hibernate);
        state.step_task = None;
        state.verify_task = None;
        Ok(())
    }
}

impl RotationState {
    /// Whether nothing is going on that needs this actor: no step or verify running or
    /// wanted, no slot held, nothing the actor keeps in memory that matters (a view's or a
    /// mount's report in grace, lagging consumers to record, revokes owed, a failing
    /// verify that was notified once).
    fn hibernatable(&self) -> bool {
        let memory_gates = !self.spec.views.is_empty() || self.spec.gate_on_consumers;
        self.context.hibernate_after.is_some()
            && self.step_task.is_none()
            && self.verify_task.is_none()
            && self.slot.is_none()
            && !self.verify_wanted
            && !self.verify_failing
            && !self.revoke_all_wanted
            && self.lagging_at_expiry.is_none()
            && may_hibernate(&self.machine.phase, memory_gates)
    }

    /// Whether one of the secret's deadlines comes within the idle delay: stopping now
    /// would only start the actor again.
    fn deadline_within_idle_delay(&self) -> bool {
        let Some(after) = self.idle_delay() else {
            return true;
        };
        let soon = self.context.clock.now() + TimeDelta::from_std(after).unwrap_or(TimeDelta::MAX);
        [TimerKind::Rotation, TimerKind::Verify]
            .into_iter()
            .filter_map(|kind| self.context.scheduler.armed(&self.spec.secret, kind))
            .any(|at| at <= soon)
    }

    /// How long the actor stays awake with nothing to do: `hibernate_after`, shorter after
    /// a job's attempt; `None`: for ever.
    fn idle_delay(&self) -> Option<Duration> {
        let after = self.context.hibernate_after?;
        Some(if self.job_done {
            after.min(HIBERNATE_AFTER_JOB)
        } else {
            after
        })
    }

    /// After every message: (re)starts the idle delay when there is nothing to do, and
    /// cancels it otherwise.
    fn arm_hibernate(&self) {
        let scheduler = &self.context.scheduler;
        match self.idle_delay() {
            Some(after) if self.hibernatable() => {
                let at =
                    self.context.clock.now() + TimeDelta::from_std(after).unwrap_or(TimeDelta::MAX);
                scheduler.arm_kind(&self.spec.secret, TimerKind::Hibernate, at);
            }
            Some(_) => scheduler.cancel_kind(&self.spec.secret, TimerKind::Hibernate),
            None => {}
        }
    }

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
        if self.waits_for_consumers() {
            self.consumers_saw(myself).await?;
        }
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
        let mut t = match rules.step(&self.machine, event, now) {
            Ok(t) => t,
            Err(rejection) => return Ok(Err(rejection)),
        };
        self.name_lagging_consumers(&mut t);
        let mut reached: Vec<Reached> = Reached::by(&self.machine, &t).into_iter().collect();
        // A target whose steps need no I/O: its steps run here and the machine steps on in
        // memory, so the attempt is committed once where a crash must resume it, not once
        // per step.
        let generated = if spec.target.steps_in_memory() && spec.verify_interval.is_none() {
            self.step_in_memory(&rules, &mut t, &mut reached, now).await
        } else {
            None
        };
        if t.state != self.machine || t.history.is_some() || generated.is_some() {
            // Durability rule: the new state is on disk before any of its effects run.
            let journal = serde_json::to_vec(&t.state)?;
            let labels = machine::labels(&t.state);
            let commit = Commit {
                journal: &journal,
                labels: &labels,
                history: t.history.as_ref(),
                now,
            };
            let store = &self.context.store;
            let committed = match &generated {
                // The value generated on the way lands with the state that labels it.
                Some((version, rotation, value)) => {
                    let version = NewVersion {
                        version: *version,
                        rotation: *rotation,
                        value,
                    };
                    store
                        .put_version_and_commit(&spec.secret, version, commit)
                        .await
                }
                None => store.commit(&spec.secret, commit).await,
            };
            // A failed commit fails the actor: its supervisor restarts it, and it resumes
            // from the last state that did reach the store.
            // A refusal for a lost lease says nothing about the store's health.
            match &committed {
                Ok(_) => {
                    self.context.metrics.store_up.set(1);
                }
                Err(e) if !e.is_deposed() => {
                    self.context.metrics.store_up.set(0);
                }
                Err(_) => {}
            }
            if let Err(e) = &committed
                && e.is_deposed()
            {
                // This replica no longer leads (HA): restarting would only be refused
                // again, so the whole tree of this term stops, and `main` goes back to
                // following. The new leader resumes from the last committed state.
                tracing::warn!(secret = %spec.secret, error = %e, "deposed: stopping this leader's actor tree");
                if let Some(root) =
                    ractor::registry::where_is(format!("{}rotor", self.context.namespace))
                {
                    root.stop(Some("deposed".into()));
                }
            }
            committed?;
        }
        let was = crate::machine::labels(&self.machine);
        self.machine = t.state;
        // The job that started the attempt hears its outcome (promoted, or ended without).
        for r in &reached {
            self.job_done = r.job.is_some();
            if let Some(job) = &r.job {
                super::jobs::report_outcome(
                    &self.context.namespace,
                    job.clone(),
                    self.spec.secret.clone(),
                    r.rotation,
                    r.outcome,
                );
            }
        }
        self.after_commit(&was, &t.effects);
        // A slot is held only while an attempt is before its promotion (or rolling back).
        if !holds_a_slot(&self.machine.phase) {
            self.slot = None;
        }
        for r in reached {
            self.count_outcome(r.outcome, r.started_at, now);
        }
        for effect in t.effects {
            self.execute(myself, effect, now);
        }
        self.context.board.set(&self.spec.secret, self.status());
        self.maybe_verify(myself);
        Ok(Ok(t.rotation))
    }

    /// For a target whose steps need no I/O ([`Target::steps_in_memory`]): runs the step
    /// effects of `t` here, in line, and steps the machine on with their results, until
    /// the attempt waits for something else (a timer, a consumer, an operator), a step
    /// wrote a history record (committed with the state that wrote it, one per commit), or
    /// a slot is not free at once (the attempt then waits for one the ordinary way, in a
    /// step task). `t` becomes the last transition, carrying every effect that is not a
    /// step (timers, notices) in order; `reached` gets each result reached on the way. The
    /// value a generate step made is returned, to be stored in the same transaction as
    /// the state that labels it ([`Store::put_version_and_commit`]).
    ///
    /// Crash safety is unchanged: nothing outside the store saw the steps run here, so a
    /// crash before the commit resumes from the last committed state and runs them again,
    /// and a generated value is stored exactly when the state naming it is.
    async fn step_in_memory(
        &mut self,
        rules: &Rules<'_>,
        t: &mut machine::Transition,
        reached: &mut Vec<Reached>,
        now: DateTime<Utc>,
    ) -> Option<(VersionNo, RotationId, SecretValue)> {
        let mut generated = None;
        while t.history.is_none() {
            let Some(i) = t.effects.iter().position(|e| effect_step(e).is_some()) else {
                break;
            };
            if holds_a_slot(&t.state.phase) && self.slot.is_none() {
                let Ok(permit) = self.context.slots.clone().try_acquire_owned() else {
                    break;
                };
                self.context.metrics.rotation_jobs_active.inc();
                self.slot = Some(Slot {
                    _permit: permit,
                    jobs_active: self.context.metrics.rotation_jobs_active.clone(),
                });
            }
            let effect = t.effects.remove(i);
            let Some((rotation, step)) = effect_step(&effect) else {
                break;
            };
            let event =
                match run_step(&self.spec, &self.context, effect, Some(&mut generated)).await {
                    Ok(()) => Event::StepDone { rotation, step },
                    Err(e) => {
                        self.context
                            .metrics
                            .rotation_error(&self.spec.policy, e.kind.as_str());
                        Event::StepFailed {
                            rotation,
                            step,
                            error: e.kind,
                        }
                    }
                };
            // A step result is never rejected (a stale one changes nothing).
            let Ok(mut next) = rules.step(&t.state, event, now) else {
                break;
            };
            self.record_lagging(&mut next);
            reached.extend(Reached::by(&t.state, &next));
            let mut effects = std::mem::take(&mut t.effects);
            effects.append(&mut next.effects);
            next.effects = effects;
            *t = next;
        }
        generated
    }

    /// Whether the secret is in grace, waiting for consumers the actor tracks itself
    /// (views, agents), and has not heard they all caught up.
    fn waits_for_consumers(&self) -> bool {
        (!self.spec.views.is_empty() || self.spec.gate_on_consumers)
            && matches!(
                self.machine.phase,
                Phase::Grace {
                    consumers_caught_up: false,
                    ..
                }
            )
    }

    /// With views or agent consumers: drives `ConsumerSaw` for the current version once
    /// every view shows it, every live agent consumer reports it and, when the policy
    /// gates on consumers, a watched mount shows it too. The machine ignores it outside
    /// grace, and a repeat changes nothing.
    async fn consumers_saw(
        &mut self,
        myself: &ActorRef<RotationMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let Some(current) = self.machine.current else {
            return Ok(());
        };
        if !self.waits_for_consumers() {
            return Ok(());
        }
        let views = self
            .spec
            .views
            .iter()
            .all(|v| self.views_show.get(&v.name) == Some(&current));
        let mounts = !self.spec.gate_on_mounts || self.mount_saw == Some(current);
        let agents = !self.spec.gate_on_consumers
            || self.context.consumers.all_show(&self.spec.secret, current);
        if views && mounts && agents {
            let _ = self
                .drive(myself, Event::ConsumerSaw { version: current })
                .await?;
        }
        Ok(())
    }

    /// At the step that expires the previous version: names the agent consumers that did
    /// not show the current one (live ones still behind, ones gone during the grace),
    /// counts and logs them, and sends a `consumers_late` notice; at the step that writes
    /// the attempt's history record, puts them in it.
    fn name_lagging_consumers(&mut self, t: &mut machine::Transition) {
        if !self.spec.gate_on_consumers {
            return;
        }
        if let (Phase::Grace { run, previous, .. }, Phase::Expired { .. }, Some(current)) =
            (&self.machine.phase, &t.state.phase, self.machine.current)
        {
            let lagging = self.context.consumers.lagging(
                &self.spec.secret,
                current,
                self.machine.last_rotated_at,
            );
            if !lagging.late.is_empty() || !lagging.gone.is_empty() {
                consumers_actor::count_late(&self.context.metrics, &lagging);
                tracing::warn!(
                    secret = %self.spec.secret,
                    previous,
                    current,
                    late = ?lagging.late,
                    gone = ?lagging.gone,
                    "expiring the previous version while consumers do not show the current one"
                );
                t.effects.push(Effect::Notify {
                    rotation: run.rotation,
                    notice: Notice::ConsumersLate {
                        version: current,
                        previous: *previous,
                        late: lagging.late.clone(),
                        gone: lagging.gone.clone(),
                    },
                });
                self.lagging_at_expiry = Some(lagging);
            } else {
                self.lagging_at_expiry = None;
            }
        }
        self.record_lagging(t);
    }

    /// At the step that writes the attempt's history record: puts in it the consumers
    /// named when the previous version expired.
    fn record_lagging(&mut self, t: &mut machine::Transition) {
        if let Some(record) = t.history.as_mut()
            && let Some(lagging) = self.lagging_at_expiry.take()
        {
            record.late_consumers = lagging.late;
            record.gone_consumers = lagging.gone;
        }
    }

    /// Runs once the machine's new state is committed. A promotion, a rollback or an
    /// expiry moved the `current` or `previous` label (`was`: the labels before): nudge
    /// every view of the secret to show it now rather than at its next tick (an AWS view
    /// moves or removes `AWSPREVIOUS` at an expiry). A forced expiry while a view lags is counted per lagging view and logged
    /// (the machine's `version_expired` notice with `forced` is the event).
    fn after_commit(&self, was: &[(VersionNo, crate::domain::Label)], effects: &[Effect]) {
        if self.spec.views.is_empty() {
            return;
        }
        let shown = |labels: &[(VersionNo, crate::domain::Label)]| -> Vec<(VersionNo, crate::domain::Label)> {
            labels
                .iter()
                .filter(|(_, l)| !matches!(l, crate::domain::Label::Pending))
                .cloned()
                .collect()
        };
        if shown(&crate::machine::labels(&self.machine)) != shown(was) {
            for view in &self.spec.views {
                if let Some(cell) = ractor::registry::where_is(view.actor.clone()) {
                    let actor: ActorRef<super::publisher::view::ViewMsg> = cell.into();
                    let _ = actor.cast(super::publisher::view::ViewMsg::Nudge);
                }
            }
        }
        let forced = effects.iter().find_map(|e| match e {
            Effect::Notify {
                notice:
                    Notice::Expired {
                        version,
                        forced: true,
                    },
                ..
            } => Some(*version),
            _ => None,
        });
        if let (Some(previous), Some(current)) = (forced, self.machine.current) {
            for view in &self.spec.views {
                let shows = self.views_show.get(&view.name).copied();
                if shows != Some(current) {
                    self.context
                        .metrics
                        .view_lag_expiries_total
                        .get_or_create(&crate::metrics::ViewNameLabels {
                            view: view.name.clone(),
                        })
                        .inc();
                    tracing::warn!(
                        secret = %self.spec.secret,
                        view = %view.name,
                        previous,
                        current,
                        shows = ?shows,
                        "max_grace_extension reached: expiring the previous version while the view does not show the current one"
                    );
                }
            }
        }
    }

    /// Arms the next verify, `verify_interval` from now (if the policy has one and the
    /// target can verify). The first one after start-up comes at a stable per-secret offset
    /// within one interval instead: every actor starts at once, and without it every secret
    /// of a policy would log in to its target in the same instant, every interval.
    fn arm_verify(&self, first: bool) {
        if let Some(interval) = self.spec.verify_interval
            && !self.verify_unsupported
        {
            let delay = if first {
                jitter_offset(&self.spec.secret, interval)
            } else {
                interval
            };
            let at =
                self.context.clock.now() + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
            self.context
                .scheduler
                .arm_kind(&self.spec.secret, TimerKind::Verify, at);
        }
    }

    /// Starts the wanted verify if nothing stands in its way: no verify already running, no
    /// rotation in flight (a re-apply must not race one; the wish is kept until the attempt
    /// is over), a current version to verify.
    fn maybe_verify(&mut self, myself: &ActorRef<RotationMsg>) {
        if !self.verify_wanted
            || self.verify_task.is_some()
            || self.machine.phase.in_flight()
            || self.spec.verify_interval.is_none()
        {
            return;
        }
        let Some(version) = self.machine.current else {
            self.verify_wanted = false;
            return;
        };
        // Free whenever no attempt is in flight, unless an aborted step task has not yet
        // released it; the next message retries then.
        let Some(Ok(guard)) = self.target_lock.clone().map(|l| l.try_lock_owned()) else {
            return;
        };
        self.verify_wanted = false;
        let spec = self.spec.clone();
        let context = self.context.clone();
        let me = myself.clone();
        // Never revoked again: what the machine says is valid now. No attempt is in flight
        // here, so that is the current version, but the labels say it whatever the phase.
        let keep: Vec<VersionNo> = machine::labels(&self.machine)
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        let revoke_all = self.revoke_all_wanted;
        self.verify_task = Some(AbortOnDrop::spawn(async move {
            let outcome = verify_and_reapply(&spec, &context, version).await;
            let revoked = match outcome {
                VerifyOutcome::Holds => revoke_again(&spec, &context, &keep, revoke_all).await,
                VerifyOutcome::Reapplied => revoke_again(&spec, &context, &keep, true).await,
                // The current version does not work (or nobody can tell): the target is
                // in a state nothing can be said about, and the next verify comes soon.
                _ => RevokedAgain::default(),
            };
            drop(guard);
            let _ = me.cast(RotationMsg::Verified {
                version,
                outcome,
                revoked,
            });
        }));
    }

    /// Counts, logs and notifies what a verify found.
    fn verified(&mut self, version: VersionNo, outcome: VerifyOutcome, revoked: RevokedAgain) {
        let m = &self.context.metrics;
        let policy = &self.spec.policy;
        m.target_revoked_again(policy, "succeeded", revoked.succeeded);
        m.target_revoked_again(policy, "failed", revoked.failed);
        match outcome {
            VerifyOutcome::Holds | VerifyOutcome::Reapplied => {
                // A revoke-all that did not finish is owed again; a single revoke that
                // failed is simply tried at the next verify.
                self.revoke_all_wanted = revoked.incomplete
                    && (outcome == VerifyOutcome::Reapplied || self.revoke_all_wanted);
            }
            // The target lost the current version: once it works again, every old version
            // is owed its revoke.
            VerifyOutcome::ReapplyFailed(_) => self.revoke_all_wanted = true,
            VerifyOutcome::Failed(_) | VerifyOutcome::Unsupported => {}
        }
        let secret = &self.spec.secret;
        let now = self.context.clock.now();
        // A re-apply is no attempt of its own; notices name the latest one started.
        let rotation = RotationId(self.machine.rotations_started);
        let failing = self.verify_failing;
        self.verify_failing = false;
        match outcome {
            VerifyOutcome::Holds => m.target_verified(policy, "holds"),
            VerifyOutcome::Unsupported => {
                self.verify_unsupported = true;
                self.context
                    .scheduler
                    .cancel_kind(secret, TimerKind::Verify);
                tracing::warn!(
                    secret = %secret,
                    target = self.spec.target.type_name(),
                    "verify_interval has no effect: a {} target cannot verify a version",
                    self.spec.target.type_name()
                );
            }
            VerifyOutcome::Reapplied => {
                m.target_verified(policy, "lost");
                m.target_reapplied(policy, "succeeded");
                tracing::warn!(
                    secret = %secret,
                    version,
                    "the target had lost the current version; applied it again"
                );
                self.notify(rotation, Notice::TargetReapplied { version }, now);
            }
            VerifyOutcome::ReapplyFailed(error) => {
                m.target_verified(policy, "lost");
                m.target_reapplied(policy, "failed");
                tracing::error!(
                    secret = %secret,
                    version,
                    error = error.as_str(),
                    "the target has lost the current version and applying it again failed"
                );
                self.verify_failing = true;
                if !failing {
                    self.notify(
                        rotation,
                        Notice::TargetVerifyFailed {
                            version,
                            error,
                            lost: true,
                        },
                        now,
                    );
                }
            }
            VerifyOutcome::Failed(error) => {
                m.target_verified(policy, "error");
                self.verify_failing = true;
                if !failing {
                    self.notify(
                        rotation,
                        Notice::TargetVerifyFailed {
                            version,
                            error,
                            lost: false,
                        },
                        now,
                    );
                }
            }
        }
    }

    fn execute(&mut self, myself: &ActorRef<RotationMsg>, effect: Effect, now: DateTime<Utc>) {
        match effect {
            Effect::ArmTimer { at, .. } => self.context.scheduler.arm(&self.spec.secret, at),
            Effect::CancelTimer { .. } => self.context.scheduler.cancel(&self.spec.secret),
            Effect::Notify { rotation, notice } => self.notify(rotation, notice, now),
            step_effect => self.spawn_step(myself, step_effect),
        }
    }

    /// Counts the result an attempt reached (the machine says which, once per result);
    /// `started_at`: when the attempt started, if the state after its promotion still
    /// holds it.
    fn count_outcome(
        &self,
        outcome: Outcome,
        started_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) {
        let m = &self.context.metrics;
        let policy = &self.spec.policy;
        let mut duration = None;
        if outcome == Outcome::Succeeded
            && let Some(started_at) = started_at
        {
            let secs = (now - started_at).num_milliseconds().max(0) as f64 / 1000.0;
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
        let Some((rotation, step)) = effect_step(&effect) else {
            return;
        };
        let needs_slot = holds_a_slot(&self.machine.phase);
        let held = self.slot.take();
        let spec = self.spec.clone();
        let context = self.context.clone();
        let target_lock = self.target_lock.clone();
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
            // Waits for a verify in flight; not counted against the step's timeout.
            let target_guard = match target_lock {
                Some(lock) => Some(lock.lock_owned().await),
                None => None,
            };
            let result = match tokio::time::timeout(
                spec.step_timeout,
                run_step(&spec, &context, effect, None),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(StepError {
                    kind: ErrorKind::Timeout,
                    refused: false,
                }),
            };
            drop(target_guard);
            let (result, refused) = match result {
                Ok(()) => (Ok(()), false),
                Err(e) => (Err(e.kind), e.refused),
            };
            let _ = me.cast(RotationMsg::StepResult {
                rotation,
                step,
                result,
                refused,
                slot,
            });
        }));
    }

    fn status(&self) -> SecretStatus {
        status_of(&self.spec.policy, &self.machine)
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

/// The attempt and step a step effect is for; `None` for timers and notices.
fn effect_step(effect: &Effect) -> Option<(RotationId, Step)> {
    Some(match effect {
        Effect::Generate { rotation, .. } => (*rotation, Step::Generate),
        Effect::Apply { rotation, .. } => (*rotation, Step::Apply),
        Effect::Test { rotation, .. } => (*rotation, Step::Test),
        Effect::Promote { rotation, .. } => (*rotation, Step::Promote),
        Effect::Revoke { rotation, step, .. } => (*rotation, *step),
        Effect::Restore { rotation, .. } => (*rotation, Step::Rollback),
        Effect::ArmTimer { .. } | Effect::CancelTimer { .. } | Effect::Notify { .. } => {
            return None;
        }
    })
}

/// A result an attempt reached in one step of the machine, with what counting and
/// reporting it need from the attempt.
struct Reached {
    rotation: RotationId,
    outcome: Outcome,
    /// The emergency rotation job that started the attempt, which hears the result.
    job: Option<String>,
    /// When the attempt started, if the state after the step still holds it.
    started_at: Option<DateTime<Utc>>,
}

impl Reached {
    /// The result `t` reached from `before`, if any.
    fn by(before: &SecretState, t: &machine::Transition) -> Option<Reached> {
        let outcome = t.outcome?;
        let run = [&t.state.phase, &before.phase]
            .into_iter()
            .find_map(|p| p.run().filter(|r| r.rotation == t.rotation));
        Some(Reached {
            rotation: t.rotation,
            outcome,
            job: run.and_then(|r| r.job.clone()),
            started_at: t.state.phase.run().map(|r| r.started_at),
        })
    }
}

/// The status board's entry for a secret of `policy` in `machine`'s state.
pub fn status_of(policy: &str, machine: &SecretState) -> SecretStatus {
    let (next_due, grace_expires_at) = match &machine.phase {
        Phase::Idle { next_due, .. } => (*next_due, None),
        Phase::Grace { expires_at, .. } => (None, Some(*expires_at)),
        _ => (None, None),
    };
    SecretStatus {
        policy: policy.into(),
        phase: machine.phase.name(),
        current: machine.current,
        rotation: machine.phase.run().map(|r| r.rotation),
        next_due,
        grace_expires_at,
        last_rotated_at: machine.last_rotated_at,
        attempts: machine.attempts,
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

/// A failed step: its bounded kind, and whether the target refused the credential.
struct StepError {
    kind: ErrorKind,
    refused: bool,
}

/// Verifies `version` (the current one) against the target and, when the target lost it,
/// applies and tests it again. Each call is bounded by the step timeout. Never creates a
/// version or touches another one.
async fn verify_and_reapply(
    spec: &RotationSpec,
    context: &RotationContext,
    version: VersionNo,
) -> VerifyOutcome {
    let secret = &spec.secret;
    let timeout = spec.step_timeout;
    let failed = |what: &str, e: &dyn std::fmt::Display, kind: ErrorKind| {
        tracing::warn!(secret = %secret, version, step = what, error = %e, "verify failed");
        kind
    };
    let value = match context.store.read_value(secret, version).await {
        Ok(v) => v,
        Err(e) => return VerifyOutcome::Failed(failed("read", &e, ErrorKind::Store)),
    };
    let target = &spec.target;
    match tokio::time::timeout(timeout, target.verify(version, &value)).await {
        Err(_) => VerifyOutcome::Failed(failed("verify", &"timed out", ErrorKind::Timeout)),
        Ok(Err(e)) => VerifyOutcome::Failed(failed("verify", &e, e.kind)),
        Ok(Ok(Verified::Holds)) => VerifyOutcome::Holds,
        Ok(Ok(Verified::Unsupported)) => VerifyOutcome::Unsupported,
        Ok(Ok(Verified::Lost)) => {
            tracing::warn!(
                secret = %secret,
                version,
                "the target refused the current version; applying it again"
            );
            match tokio::time::timeout(timeout, target.apply(version, &value)).await {
                Err(_) => {
                    return VerifyOutcome::ReapplyFailed(failed(
                        "reapply",
                        &"timed out",
                        ErrorKind::Timeout,
                    ));
                }
                Ok(Err(e)) => return VerifyOutcome::ReapplyFailed(failed("reapply", &e, e.kind)),
                Ok(Ok(())) => {}
            }
            match tokio::time::timeout(timeout, target.test(version, &value)).await {
                Err(_) => VerifyOutcome::ReapplyFailed(failed(
                    "reapply",
                    &"timed out",
                    ErrorKind::Timeout,
                )),
                Ok(Err(e)) => VerifyOutcome::ReapplyFailed(failed("reapply", &e, e.kind)),
                Ok(Ok(())) => VerifyOutcome::Reapplied,
            }
        }
    }
}

/// Revokes old versions again, after a verify found the current one working (`Holds`, or
/// `Reapplied`): a restore may have brought them back, and once rotor expired them they
/// must stay invalid. `all`: every stored version without a label and not in `keep`,
/// newest first, at most [`REVOKE_AGAIN_MAX`]. Otherwise only the version that expired
/// last among those consumers once held: that is what a backup taken during the last
/// grace brings back while the current version still works, and one revoke per verify is
/// cheap, where revoking every old version at every verify would not be. The target's
/// `revoke` is idempotent and never disables what the current version uses (PostgreSQL's
/// `alternating` skips an old version on the current role). Stops at the first failure: a
/// target that fails one revoke (unreachable, slow) would fail the rest one step timeout
/// each, holding the target lock all along.
async fn revoke_again(
    spec: &RotationSpec,
    context: &RotationContext,
    keep: &[VersionNo],
    all: bool,
) -> RevokedAgain {
    let secret = &spec.secret;
    let mut done = RevokedAgain::default();
    let stored = match context.store.versions(secret).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(secret = %secret, error = %e, "cannot list versions to revoke again");
            done.failed = 1;
            done.incomplete = true;
            return done;
        }
    };
    let mut old: Vec<_> = stored
        .into_iter()
        .filter(|v| v.labels.is_empty() && !keep.contains(&v.version))
        .collect();
    let versions: Vec<VersionNo> = if all {
        old.sort_by_key(|v| std::cmp::Reverse(v.version));
        if old.len() > REVOKE_AGAIN_MAX {
            tracing::info!(
                secret = %secret,
                revoking = REVOKE_AGAIN_MAX,
                older = old.len() - REVOKE_AGAIN_MAX,
                "revoking the newest old versions again, not the oldest"
            );
        }
        old.iter()
            .take(REVOKE_AGAIN_MAX)
            .map(|v| v.version)
            .collect()
    } else {
        old.iter()
            .filter(|v| v.promoted_at.is_some())
            .max_by_key(|v| (v.expired_at, v.version))
            .map(|v| v.version)
            .into_iter()
            .collect()
    };
    for version in versions {
        match tokio::time::timeout(spec.step_timeout, spec.target.revoke(version)).await {
            Ok(Ok(())) => {
                done.succeeded += 1;
                tracing::debug!(secret = %secret, version, "old version revoked again");
            }
            Ok(Err(e)) => {
                tracing::warn!(secret = %secret, version, error = %e, "revoking an old version again failed");
                done.failed += 1;
                done.incomplete = true;
                break;
            }
            Err(_) => {
                tracing::warn!(secret = %secret, version, error = "timed out", "revoking an old version again failed");
                done.failed += 1;
                done.incomplete = true;
                break;
            }
        }
    }
    if all && done.succeeded > 0 {
        tracing::info!(
            secret = %secret,
            revoked = done.succeeded,
            failed = done.failed,
            "old versions revoked again after the target lost its state"
        );
    }
    done
}

/// A value generated by a step run in line and not stored yet: version, attempt, value.
type Generated = Option<(VersionNo, RotationId, SecretValue)>;

/// Executes one step against the store and the target. With `generated` (steps run in
/// line, [`RotationState::step_in_memory`]) a generate step keeps its value there instead
/// of storing it, and an apply or test of that version uses it from there.
async fn run_step(
    spec: &RotationSpec,
    context: &RotationContext,
    effect: Effect,
    generated: Option<&mut Generated>,
) -> Result<(), StepError> {
    let secret = &spec.secret;
    let log_err = |step: &str, e: &dyn std::fmt::Display| {
        tracing::warn!(secret = %secret, step, error = %e, "rotation step failed");
    };
    // What a failed step reports: logged under the step's name, counted by its kind.
    let target_failed = |step: &'static str| {
        move |e: TargetError| {
            log_err(step, &e);
            StepError {
                kind: e.kind,
                refused: e.refused,
            }
        }
    };
    let store_failed = |step: &'static str| {
        move |e: StoreError| {
            log_err(step, &e);
            StepError {
                kind: ErrorKind::Store,
                refused: false,
            }
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
            if let Some(kept) = generated {
                *kept = Some((version, rotation, value));
                return Ok(());
            }
            context
                .store
                .put_version(secret, version, rotation, &value, now)
                .await
                .map_err(store_failed("generate"))
        }
        Effect::Apply { version, .. } | Effect::Test { version, .. } => {
            let is_apply = matches!(effect, Effect::Apply { .. });
            let kept = generated
                .and_then(|g| g.as_ref())
                .filter(|(v, _, _)| *v == version)
                .map(|(_, _, value)| value);
            let read;
            let value = match kept {
                Some(value) => value,
                None => {
                    read = context
                        .store
                        .read_value(secret, version)
                        .await
                        .map_err(store_failed("read"))?;
                    &read
                }
            };
            let r = if is_apply {
                spec.target.apply(version, value).await
            } else {
                spec.target.test(version, value).await
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
