//! The rotation state machine: pure code, no I/O, no clock reads, no async.
//!
//! ```text
//! Idle(current=v, next_due)
//!   -> Generating -> Staged(pending=v+1) -> Applied -> Tested
//!   -> Grace(current=v+1, previous=v, expires_at)        both valid
//!   -> Expired(previous being revoked) -> Idle(current=v+1, next_due')
//! a step before promotion fails -> RollingBack -> Idle(current=v) + retry with backoff,
//!   budget exhausted -> Stuck (alert, manual action)
//! Grace + Rollback -> RolledBack: current=v again, v+1 revoked -> Idle
//! Grace + ExpireNow -> Expired at once (an emergency job ends the grace)
//! Tested + promoted with expire_previous_at_promotion -> Expired (no grace)
//! ```
//!
//! [`Rules::step`] takes the persisted [`SecretState`], an [`Event`] and `now`, and returns a
//! [`Transition`]: the next state, the [`Effect`]s to execute, possibly a finished
//! [`HistoryRecord`], the id of the attempt the step concerns and the [`Outcome`] it
//! reached, if any. The caller persists the new state (with the labels [`labels`] derives
//! from it and the history record, in one transaction) **before** executing the effects.
//! Every effect carries its rotation id and is idempotent under it, so after a crash the
//! caller sends [`Event::Resume`] and the machine re-issues whatever was in flight.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::backoff::ExponentialBackoff;
use crate::domain::{
    ErrorKind, HistoryRecord, Label, Outcome, RotationId, Step, Trigger, VersionNo,
};

/// What a policy says about timing and retries, as the machine needs it.
pub struct Rules<'a> {
    /// How long the previous version stays valid after a promotion.
    pub grace: TimeDelta,
    /// Attempts (of a whole rotation, or of one revoke) before giving up and going Stuck.
    pub max_attempts: u32,
    /// First retry delay; doubles on each further failure.
    pub retry_backoff: TimeDelta,
    /// Upper bound of the retry delay.
    pub retry_backoff_max: TimeDelta,
    /// Whether grace expiry also waits for consumers to show the new version.
    pub expiry_gate: ExpiryGate,
    /// Seed for retry jitter, stable per secret (so the machine stays deterministic).
    pub jitter_seed: u64,
    /// The schedule: next due time given the last rotation time and now. `None` for
    /// manual-only policies. Must return a time `>= now`.
    pub next_due:
        &'a (dyn Fn(Option<DateTime<Utc>>, DateTime<Utc>) -> Option<DateTime<Utc>> + Send + Sync),
}

/// When a previous version may be expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryGate {
    /// At the end of the grace period.
    Grace,
    /// At the end of grace once a watched mount shows the new version, or at the latest
    /// `max_extension` after the end of grace.
    GraceAndConsumers { max_extension: TimeDelta },
}

/// The persisted state of one secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretState {
    /// The version consumers should use; `None` only before the first version exists.
    pub current: Option<VersionNo>,
    /// Highest version number ever allocated, failed attempts included, so numbers are
    /// never reused and a retried attempt never collides with a discarded value.
    pub latest_version: VersionNo,
    /// Number of rotation attempts ever started; the next id is this plus one.
    pub rotations_started: u64,
    /// When `current` was promoted. The schedule counts from here, never from process
    /// start, so a restart neither postpones nor repeats a rotation.
    pub last_rotated_at: Option<DateTime<Utc>>,
    /// Failed attempts in a row (reset by a success or by an operator's rotate).
    pub attempts: u32,
    pub phase: Phase,
}

impl Default for SecretState {
    fn default() -> Self {
        SecretState {
            current: None,
            latest_version: 0,
            rotations_started: 0,
            last_rotated_at: None,
            attempts: 0,
            phase: Phase::Idle {
                next_due: None,
                retry: false,
            },
        }
    }
}

/// One rotation attempt in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    pub rotation: RotationId,
    pub trigger: Trigger,
    /// Current version when the attempt started.
    pub from: Option<VersionNo>,
    /// The version this attempt creates.
    pub pending: VersionNo,
    pub started_at: DateTime<Utc>,
    /// `last_rotated_at` before this attempt, restored by a rollback.
    pub prev_rotated_at: Option<DateTime<Utc>>,
    /// Steps completed so far, for the history.
    pub steps: Vec<Step>,
    /// Failures of the step now being retried in place (revokes after promotion).
    pub step_failures: u32,
    /// When the step being retried in place runs again.
    pub retry_at: Option<DateTime<Utc>>,
    /// The emergency rotation job that started this attempt, if one did. A job that
    /// resumes after a restart reads it from the journal to know the attempt is its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Expire the previous version at promotion instead of keeping it valid for the grace
    /// period (a job's `expirePrevious`: the old credential leaked and must stop working).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expire_previous_at_promotion: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Nothing in flight. `next_due` is `None` for manual-only policies.
    Idle {
        next_due: Option<DateTime<Utc>>,
        /// The next due time is a retry after a failed attempt.
        retry: bool,
    },
    /// Generating the new value and storing it as `pending`.
    Generating(Run),
    /// Stored; applying it to the target.
    Staged(Run),
    /// Applied; testing it against the target.
    Applied(Run),
    /// Tested; promoting it.
    Tested(Run),
    /// Promoted; the previous version stays valid until `expires_at`.
    Grace {
        run: Run,
        previous: VersionNo,
        expires_at: DateTime<Utc>,
        /// A watched mount has shown the new version.
        consumers_caught_up: bool,
        /// Expiry was postponed because consumers lag.
        extended: bool,
    },
    /// Grace is over; the previous version is being revoked on the target.
    Expired { run: Run, previous: VersionNo },
    /// A step before promotion failed; the pending version is being discarded.
    RollingBack { run: Run, reason: ErrorKind },
    /// Rolled back during grace: `restored` is current again, `run.pending` is revoked.
    RolledBack { run: Run, restored: VersionNo },
    /// The retry budget ran out. Current (if any) is still valid; an operator must act.
    Stuck {
        since: DateTime<Utc>,
        reason: ErrorKind,
        rotation: RotationId,
    },
}

impl Phase {
    /// Short name for logs, metrics and the API.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Idle { .. } => "idle",
            Phase::Generating(_) => "generating",
            Phase::Staged(_) => "staged",
            Phase::Applied(_) => "applied",
            Phase::Tested(_) => "tested",
            Phase::Grace { .. } => "grace",
            Phase::Expired { .. } => "expired",
            Phase::RollingBack { .. } => "rolling_back",
            Phase::RolledBack { .. } => "rolled_back",
            Phase::Stuck { .. } => "stuck",
        }
    }

    /// The attempt in flight, if any.
    pub fn run(&self) -> Option<&Run> {
        match self {
            Phase::Generating(r) | Phase::Staged(r) | Phase::Applied(r) | Phase::Tested(r) => {
                Some(r)
            }
            Phase::Grace { run, .. }
            | Phase::Expired { run, .. }
            | Phase::RollingBack { run, .. }
            | Phase::RolledBack { run, .. } => Some(run),
            Phase::Idle { .. } | Phase::Stuck { .. } => None,
        }
    }

    /// The step whose result this phase is waiting for.
    pub fn awaited_step(&self) -> Option<Step> {
        Some(match self {
            Phase::Generating(_) => Step::Generate,
            Phase::Staged(_) => Step::Apply,
            Phase::Applied(_) => Step::Test,
            Phase::Tested(_) => Step::Promote,
            Phase::Expired { .. } => Step::Expire,
            Phase::RollingBack { .. } | Phase::RolledBack { .. } => Step::Rollback,
            Phase::Idle { .. } | Phase::Grace { .. } | Phase::Stuck { .. } => return None,
        })
    }

    /// Whether a result for `step` of `rotation` is the one this phase waits for.
    pub fn awaits(&self, rotation: RotationId, step: Step) -> bool {
        self.run().map(|r| r.rotation) == Some(rotation) && self.awaited_step() == Some(step)
    }

    /// Whether a rotation is in progress (a new one would be refused).
    pub fn in_flight(&self) -> bool {
        self.run().is_some()
    }
}

/// Inputs to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The process (or actor) started: re-issue whatever was in flight.
    Resume,
    /// The secret's single timer fired (next due, grace expiry or a retry).
    Timer,
    /// An operator or the API asks for a rotation now.
    Rotate { trigger: Trigger },
    /// An emergency rotation job asks for a rotation now (trigger [`Trigger::Job`]); the
    /// run remembers `job`, and with `expire_previous` the previous version is expired at
    /// promotion instead of after the grace period. Refused like `Rotate` while an
    /// attempt is in flight.
    JobRotate { job: String, expire_previous: bool },
    /// End the grace period now: the previous version expires at once, whatever the
    /// policy's grace or consumers say. Ignored outside grace (there is no previous
    /// version to expire), so a job may send it to any secret it reaches.
    ExpireNow,
    /// An operator asks to roll back the rotation in grace.
    Rollback,
    /// The effect for `step` of `rotation` finished.
    StepDone { rotation: RotationId, step: Step },
    /// The effect for `step` of `rotation` failed.
    StepFailed {
        rotation: RotationId,
        step: Step,
        error: ErrorKind,
    },
    /// A watched mount shows `version` to consumers.
    ConsumerSaw { version: VersionNo },
}

/// Why an event was refused. The state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("rotation {rotation} is in progress ({phase})")]
    InProgress {
        rotation: RotationId,
        phase: &'static str,
    },
    #[error("no previous version is inside its grace period")]
    NothingToRollBack,
}

/// Work for the caller. Every variant names its rotation so re-running it is a no-op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Generate a value and store it as `version` (idempotent per rotation).
    Generate {
        rotation: RotationId,
        version: VersionNo,
    },
    /// Make `version` valid on the target, alongside the current one.
    Apply {
        rotation: RotationId,
        version: VersionNo,
    },
    /// Check that `version` works against the target.
    Test {
        rotation: RotationId,
        version: VersionNo,
    },
    /// Tell the target `version` is now the one to hand out (labels are already moved).
    Promote {
        rotation: RotationId,
        version: VersionNo,
        previous: Option<VersionNo>,
    },
    /// Make `version` invalid on the target: the previous one after grace (`Step::Expire`)
    /// or a discarded pending one (`Step::Rollback`).
    Revoke {
        rotation: RotationId,
        version: VersionNo,
        step: Step,
    },
    /// Roll back on the target: make `restore` the valid one again and revoke `revoke`.
    Restore {
        rotation: RotationId,
        restore: VersionNo,
        revoke: VersionNo,
    },
    /// Arm the secret's one timer (replacing any armed one).
    ArmTimer {
        rotation: RotationId,
        at: DateTime<Utc>,
    },
    /// Disarm the timer.
    CancelTimer { rotation: RotationId },
    /// Tell people.
    Notify {
        rotation: RotationId,
        notice: Notice,
    },
}

impl Effect {
    pub fn rotation(&self) -> RotationId {
        match self {
            Effect::Generate { rotation, .. }
            | Effect::Apply { rotation, .. }
            | Effect::Test { rotation, .. }
            | Effect::Promote { rotation, .. }
            | Effect::Revoke { rotation, .. }
            | Effect::Restore { rotation, .. }
            | Effect::ArmTimer { rotation, .. }
            | Effect::CancelTimer { rotation }
            | Effect::Notify { rotation, .. } => *rotation,
        }
    }
}

/// Lifecycle events for the notifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    Started {
        trigger: Trigger,
        version: VersionNo,
    },
    GraceEntered {
        version: VersionNo,
        previous: VersionNo,
        expires_at: DateTime<Utc>,
    },
    /// Expiry postponed because consumers have not picked up the new version yet.
    GraceExtended {
        previous: VersionNo,
        until: DateTime<Utc>,
    },
    Succeeded {
        version: VersionNo,
    },
    Expired {
        version: VersionNo,
        /// Consumers never caught up; expired at the end of the maximum extension.
        forced: bool,
    },
    Failed {
        version: VersionNo,
        error: ErrorKind,
        retry_at: Option<DateTime<Utc>>,
    },
    RolledBack {
        version: VersionNo,
        restored: VersionNo,
    },
    Stuck {
        error: ErrorKind,
    },
    /// The target had lost the current version (a verify was refused) and it was applied
    /// again: same version, no new value. Sent by the rotation actor after a verify, never
    /// by the machine, whose state a re-apply does not change.
    TargetReapplied {
        version: VersionNo,
    },
    /// The previous version expired while consumers (agents) did not show `version`: `late`
    /// still reported an older one when `max_grace_extension` ran out, `gone` stopped
    /// reporting during the grace. Sent by the rotation actor, which alone knows the
    /// consumers, never by the machine.
    ConsumersLate {
        version: VersionNo,
        previous: VersionNo,
        late: Vec<String>,
        gone: Vec<String>,
    },
    /// Verifying the current version failed: the target could not be asked (`lost =
    /// false`; nothing was re-applied), or it had lost the version and re-applying it failed
    /// (`lost = true`). Sent by the rotation actor, like `TargetReapplied`.
    TargetVerifyFailed {
        version: VersionNo,
        error: ErrorKind,
        lost: bool,
    },
}

impl Notice {
    /// The event name channels subscribe to (`[[notify]] events`) and receive.
    pub fn event_name(&self) -> &'static str {
        match self {
            Notice::Started { .. } => "rotation_started",
            Notice::GraceEntered { .. } => "grace_entered",
            Notice::GraceExtended { .. } => "grace_extended",
            Notice::Succeeded { .. } => "rotation_succeeded",
            Notice::Expired { .. } => "version_expired",
            Notice::Failed { .. } => "rotation_failed",
            Notice::RolledBack { .. } => "rotation_rolled_back",
            Notice::Stuck { .. } => "rotation_stuck",
            Notice::TargetReapplied { .. } => "target_reapplied",
            Notice::TargetVerifyFailed { .. } => "target_verify_failed",
            Notice::ConsumersLate { .. } => "consumers_late",
        }
    }
}

/// The result of one step of the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub state: SecretState,
    pub effects: Vec<Effect>,
    /// A finished attempt, to append to the history in the same commit as `state`.
    pub history: Option<HistoryRecord>,
    /// The attempt this step concerns: the one it started, advanced, finished or rolled
    /// back, which is always the latest one started (`RotationId(0)` before the first).
    /// A `Rotate` or `Rollback` request answers with it.
    pub rotation: RotationId,
    /// The result `rotation` reached in this step, if it reached one: `Succeeded` at its
    /// promotion, `Failed` when it will be retried, `RolledBack` once an operator's rollback
    /// is done, `Abandoned` when the retry budget ran out. This is what the rotation metrics
    /// count. The history record may come later (a success is recorded once the previous
    /// version has expired) or say more (a rollback whose revoke was given up on is
    /// recorded as rolled back, and counted here as abandoned).
    pub outcome: Option<Outcome>,
}

/// The labels a state implies: exactly one `current` once a version exists, `pending`
/// while a staged value is applied and tested, `previous` during grace only.
pub fn labels(state: &SecretState) -> Vec<(VersionNo, Label)> {
    let mut out = Vec::with_capacity(2);
    if let Some(c) = state.current {
        out.push((c, Label::Current));
    }
    match &state.phase {
        Phase::Staged(r) | Phase::Applied(r) | Phase::Tested(r) => {
            out.push((r.pending, Label::Pending))
        }
        Phase::Grace { previous, .. } => out.push((*previous, Label::Previous)),
        _ => {}
    }
    out
}

impl Rules<'_> {
    /// Advances `state` by `event` at `now`.
    pub fn step(
        &self,
        state: &SecretState,
        event: Event,
        now: DateTime<Utc>,
    ) -> Result<Transition, Rejection> {
        let mut t = Transition {
            state: state.clone(),
            effects: Vec::new(),
            history: None,
            rotation: RotationId(state.rotations_started),
            outcome: None,
        };
        match (&state.phase, event) {
            // ---- requests from operators -------------------------------------------
            (Phase::Idle { .. }, Event::Rotate { trigger }) => self.start(&mut t, trigger, now),
            (Phase::Stuck { .. }, Event::Rotate { trigger }) => {
                // An operator's rotate is the way out of Stuck: a fresh budget.
                t.state.attempts = 0;
                self.start(&mut t, trigger, now)
            }
            (
                Phase::Idle { .. },
                Event::JobRotate {
                    job,
                    expire_previous,
                },
            ) => self.start_for_job(&mut t, job, expire_previous, now),
            (
                Phase::Stuck { .. },
                Event::JobRotate {
                    job,
                    expire_previous,
                },
            ) => {
                t.state.attempts = 0;
                self.start_for_job(&mut t, job, expire_previous, now)
            }
            (phase, Event::Rotate { .. } | Event::JobRotate { .. }) => {
                return Err(Rejection::InProgress {
                    rotation: phase.run().map_or(RotationId(0), |r| r.rotation),
                    phase: phase.name(),
                });
            }
            (Phase::Grace { run, previous, .. }, Event::Rollback) => {
                let mut run = run.clone();
                run.steps.push(Step::Rollback);
                run.step_failures = 0;
                run.retry_at = None;
                let restored = *previous;
                t.state.current = Some(restored);
                t.state.last_rotated_at = run.prev_rotated_at;
                t.effects.push(Effect::Restore {
                    rotation: run.rotation,
                    restore: restored,
                    revoke: run.pending,
                });
                t.state.phase = Phase::RolledBack { run, restored };
            }
            (_, Event::Rollback) => return Err(Rejection::NothingToRollBack),
            (Phase::Grace { run, previous, .. }, Event::ExpireNow) => {
                // Consumers are not waited for: ending the grace now is the point.
                self.expire(&mut t, run, *previous, false);
            }
            (_, Event::ExpireNow) => {}

            // ---- start-up ------------------------------------------------------------
            (phase, Event::Resume) => self.resume(&mut t, phase.clone(), now),

            // ---- the timer -----------------------------------------------------------
            (Phase::Idle { next_due, retry }, Event::Timer) => match next_due {
                Some(due) if *due <= now => {
                    let trigger = if state.current.is_none() {
                        Trigger::Initial
                    } else if *retry {
                        Trigger::Retry
                    } else {
                        Trigger::Schedule
                    };
                    self.start(&mut t, trigger, now)
                }
                // Early or stale timer: re-arm for the real due time.
                Some(due) => t.effects.push(Effect::ArmTimer {
                    rotation: self.next_id(state),
                    at: *due,
                }),
                None => {}
            },
            (
                Phase::Grace {
                    run,
                    previous,
                    expires_at,
                    consumers_caught_up,
                    extended,
                },
                Event::Timer,
            ) => {
                if now < *expires_at {
                    t.effects.push(Effect::ArmTimer {
                        rotation: run.rotation,
                        at: *expires_at,
                    });
                } else {
                    match self.expiry_gate {
                        ExpiryGate::GraceAndConsumers { max_extension }
                            if !*consumers_caught_up && !*extended =>
                        {
                            let until = *expires_at + max_extension;
                            if now < until {
                                t.effects.push(Effect::ArmTimer {
                                    rotation: run.rotation,
                                    at: until,
                                });
                                t.effects.push(Effect::Notify {
                                    rotation: run.rotation,
                                    notice: Notice::GraceExtended {
                                        previous: *previous,
                                        until,
                                    },
                                });
                                t.state.phase = Phase::Grace {
                                    run: run.clone(),
                                    previous: *previous,
                                    expires_at: until,
                                    consumers_caught_up: false,
                                    extended: true,
                                };
                            } else {
                                self.expire(&mut t, run, *previous, true);
                            }
                        }
                        _ => {
                            let forced = *extended && !*consumers_caught_up;
                            self.expire(&mut t, run, *previous, forced);
                        }
                    }
                }
            }
            (Phase::Expired { run, .. }, Event::Timer)
            | (Phase::RollingBack { run, .. }, Event::Timer)
            | (Phase::RolledBack { run, .. }, Event::Timer) => match run.retry_at {
                Some(at) if at <= now => {
                    let mut phase = state.phase.clone();
                    if let Some(r) = phase_run_mut(&mut phase) {
                        r.retry_at = None;
                    }
                    t.state.phase = phase;
                    self.reissue(&mut t, now);
                }
                Some(at) => t.effects.push(Effect::ArmTimer {
                    rotation: run.rotation,
                    at,
                }),
                None => {}
            },
            (_, Event::Timer) => {}

            // ---- consumers -------------------------------------------------------------
            (
                Phase::Grace {
                    run,
                    previous,
                    expires_at,
                    extended,
                    ..
                },
                Event::ConsumerSaw { version },
            ) if Some(version) == state.current => {
                if *extended {
                    // Grace is already over and we were only waiting for consumers.
                    self.expire(&mut t, run, *previous, false);
                } else {
                    t.state.phase = Phase::Grace {
                        run: run.clone(),
                        previous: *previous,
                        expires_at: *expires_at,
                        consumers_caught_up: true,
                        extended: *extended,
                    };
                }
            }
            (_, Event::ConsumerSaw { .. }) => {}

            // ---- step results ----------------------------------------------------------
            (phase, Event::StepDone { rotation, step }) => {
                if !phase.awaits(rotation, step) {
                    // A late answer for an attempt that is over: ignore it.
                    return Ok(t);
                }
                self.done(&mut t, step, now);
            }
            (
                phase,
                Event::StepFailed {
                    rotation,
                    step,
                    error,
                },
            ) => {
                if !phase.awaits(rotation, step) {
                    // A late or duplicate answer (e.g. after a resume): ignore it.
                    return Ok(t);
                }
                self.failed(&mut t, error, now);
            }
        }
        Ok(t)
    }

    fn next_id(&self, state: &SecretState) -> RotationId {
        RotationId(state.rotations_started + 1)
    }

    /// The next due time, counted from the last promotion. A secret without a version is
    /// due at once, whatever the policy (a manual policy still needs a first value).
    pub fn due_after(&self, state: &SecretState, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if state.current.is_none() {
            return Some(now);
        }
        (self.next_due)(state.last_rotated_at, now)
    }

    fn go_idle(&self, t: &mut Transition, next_due: Option<DateTime<Utc>>, retry: bool) {
        let rotation = self.next_id(&t.state);
        t.effects.push(match next_due {
            Some(at) => Effect::ArmTimer { rotation, at },
            None => Effect::CancelTimer { rotation },
        });
        t.state.phase = Phase::Idle { next_due, retry };
    }

    fn start(&self, t: &mut Transition, trigger: Trigger, now: DateTime<Utc>) {
        let s = &mut t.state;
        s.rotations_started += 1;
        s.latest_version += 1;
        let run = Run {
            rotation: RotationId(s.rotations_started),
            trigger,
            from: s.current,
            pending: s.latest_version,
            started_at: now,
            prev_rotated_at: s.last_rotated_at,
            steps: Vec::new(),
            step_failures: 0,
            retry_at: None,
            job: None,
            expire_previous_at_promotion: false,
        };
        t.rotation = run.rotation;
        t.effects.push(Effect::CancelTimer {
            rotation: run.rotation,
        });
        t.effects.push(Effect::Notify {
            rotation: run.rotation,
            notice: Notice::Started {
                trigger,
                version: run.pending,
            },
        });
        t.effects.push(Effect::Generate {
            rotation: run.rotation,
            version: run.pending,
        });
        s.phase = Phase::Generating(run);
    }

    /// Starts an attempt for an emergency rotation job: [`Rules::start`] with the job's
    /// name and its `expirePrevious` on the run.
    fn start_for_job(
        &self,
        t: &mut Transition,
        job: String,
        expire_previous: bool,
        now: DateTime<Utc>,
    ) {
        self.start(t, Trigger::Job, now);
        if let Phase::Generating(run) = &mut t.state.phase {
            run.job = Some(job);
            run.expire_previous_at_promotion = expire_previous;
        }
    }

    /// After a restart: re-issue the effect of the phase we were in.
    fn resume(&self, t: &mut Transition, phase: Phase, now: DateTime<Utc>) {
        match phase {
            Phase::Idle { retry, .. } => {
                // Recompute from the last rotation: the policy may have changed while we
                // were down, and a due time that passed meanwhile means "now".
                let due = if retry {
                    match &t.state.phase {
                        Phase::Idle { next_due, .. } => next_due.map(|d| d.max(now)),
                        _ => None,
                    }
                } else {
                    self.due_after(&t.state, now)
                };
                self.go_idle(t, due, retry);
            }
            Phase::Stuck { .. } => {}
            Phase::Grace {
                run, expires_at, ..
            } => t.effects.push(Effect::ArmTimer {
                rotation: run.rotation,
                at: expires_at,
            }),
            _ => {
                if let Some(at) = t.state.phase.run().and_then(|r| r.retry_at) {
                    t.effects.push(Effect::ArmTimer {
                        rotation: t.state.phase.run().map_or(RotationId(0), |r| r.rotation),
                        at,
                    });
                } else {
                    self.reissue(t, now);
                }
            }
        }
    }

    /// Emits the effect that the current in-flight phase is waiting for.
    fn reissue(&self, t: &mut Transition, _now: DateTime<Utc>) {
        let e = match &t.state.phase {
            Phase::Generating(r) => Effect::Generate {
                rotation: r.rotation,
                version: r.pending,
            },
            Phase::Staged(r) => Effect::Apply {
                rotation: r.rotation,
                version: r.pending,
            },
            Phase::Applied(r) => Effect::Test {
                rotation: r.rotation,
                version: r.pending,
            },
            Phase::Tested(r) => Effect::Promote {
                rotation: r.rotation,
                version: r.pending,
                previous: r.from,
            },
            Phase::Expired { run, previous } => Effect::Revoke {
                rotation: run.rotation,
                version: *previous,
                step: Step::Expire,
            },
            Phase::RollingBack { run, .. } => Effect::Revoke {
                rotation: run.rotation,
                version: run.pending,
                step: Step::Rollback,
            },
            Phase::RolledBack { run, restored } => Effect::Restore {
                rotation: run.rotation,
                restore: *restored,
                revoke: run.pending,
            },
            Phase::Idle { .. } | Phase::Grace { .. } | Phase::Stuck { .. } => return,
        };
        t.effects.push(e);
    }

    fn expire(&self, t: &mut Transition, run: &Run, previous: VersionNo, forced: bool) {
        let mut run = run.clone();
        run.step_failures = 0;
        run.retry_at = None;
        t.effects.push(Effect::Revoke {
            rotation: run.rotation,
            version: previous,
            step: Step::Expire,
        });
        if forced {
            t.effects.push(Effect::Notify {
                rotation: run.rotation,
                notice: Notice::Expired {
                    version: previous,
                    forced: true,
                },
            });
        }
        t.state.phase = Phase::Expired { run, previous };
    }

    fn done(&self, t: &mut Transition, step: Step, now: DateTime<Utc>) {
        let phase = t.state.phase.clone();
        match (phase, step) {
            (Phase::Generating(mut r), Step::Generate) => {
                r.steps.push(Step::Generate);
                t.effects.push(Effect::Apply {
                    rotation: r.rotation,
                    version: r.pending,
                });
                t.state.phase = Phase::Staged(r);
            }
            (Phase::Staged(mut r), Step::Apply) => {
                r.steps.push(Step::Apply);
                t.effects.push(Effect::Test {
                    rotation: r.rotation,
                    version: r.pending,
                });
                t.state.phase = Phase::Applied(r);
            }
            (Phase::Applied(mut r), Step::Test) => {
                r.steps.push(Step::Test);
                t.effects.push(Effect::Promote {
                    rotation: r.rotation,
                    version: r.pending,
                    previous: r.from,
                });
                t.state.phase = Phase::Tested(r);
            }
            (Phase::Tested(mut r), Step::Promote) => {
                r.steps.push(Step::Promote);
                t.state.current = Some(r.pending);
                t.state.last_rotated_at = Some(now);
                t.state.attempts = 0;
                t.outcome = Some(Outcome::Succeeded);
                t.effects.push(Effect::Notify {
                    rotation: r.rotation,
                    notice: Notice::Succeeded { version: r.pending },
                });
                match r.from {
                    None => {
                        // The first version: there is nothing to keep valid.
                        t.history = Some(record(&r, Outcome::Succeeded, None, now));
                        let due = self.due_after(&t.state, now);
                        self.go_idle(t, due, false);
                    }
                    Some(previous) if r.expire_previous_at_promotion => {
                        // No grace: the previous version is revoked right after the
                        // promotion, as if its grace had just ended.
                        self.expire(t, &r, previous, false);
                    }
                    Some(previous) => {
                        let expires_at = now + self.grace;
                        t.effects.push(Effect::Notify {
                            rotation: r.rotation,
                            notice: Notice::GraceEntered {
                                version: r.pending,
                                previous,
                                expires_at,
                            },
                        });
                        t.effects.push(Effect::ArmTimer {
                            rotation: r.rotation,
                            at: expires_at,
                        });
                        t.state.phase = Phase::Grace {
                            run: r,
                            previous,
                            expires_at,
                            consumers_caught_up: false,
                            extended: false,
                        };
                    }
                }
            }
            (Phase::Expired { mut run, previous }, Step::Expire) => {
                run.steps.push(Step::Expire);
                t.effects.push(Effect::Notify {
                    rotation: run.rotation,
                    notice: Notice::Expired {
                        version: previous,
                        forced: false,
                    },
                });
                t.history = Some(record(&run, Outcome::Succeeded, None, now));
                let due = self.due_after(&t.state, now);
                self.go_idle(t, due, false);
            }
            (Phase::RollingBack { run, reason }, Step::Rollback) => {
                self.after_failed_attempt(t, run, reason, now);
            }
            (Phase::RolledBack { run, restored }, Step::Rollback) => {
                t.outcome = Some(Outcome::RolledBack);
                t.effects.push(Effect::Notify {
                    rotation: run.rotation,
                    notice: Notice::RolledBack {
                        version: run.pending,
                        restored,
                    },
                });
                t.history = Some(record(
                    &run,
                    Outcome::RolledBack,
                    Some(ErrorKind::Operator),
                    now,
                ));
                // Count the schedule from the restored version's promotion, but never
                // re-rotate straight away: someone rolled back for a reason.
                let due = self
                    .due_after(&t.state, now)
                    .map(|d| d.max(now + self.retry_backoff_max));
                self.go_idle(t, due, false);
            }
            // A step result that does not match the phase (a duplicate after a resume).
            _ => {}
        }
    }

    fn failed(&self, t: &mut Transition, error: ErrorKind, now: DateTime<Utc>) {
        let phase = t.state.phase.clone();
        match phase {
            Phase::Generating(run)
            | Phase::Staged(run)
            | Phase::Applied(run)
            | Phase::Tested(run) => {
                // Before promotion: current was never touched. Discard the pending value.
                t.effects.push(Effect::Revoke {
                    rotation: run.rotation,
                    version: run.pending,
                    step: Step::Rollback,
                });
                t.state.phase = Phase::RollingBack { run, reason: error };
            }
            Phase::Expired { .. } | Phase::RollingBack { .. } | Phase::RolledBack { .. } => {
                // A revoke failed: retry it in place with backoff, then give up.
                let mut phase = phase;
                let Some(run) = phase_run_mut(&mut phase) else {
                    return;
                };
                run.step_failures += 1;
                if run.step_failures >= self.max_attempts {
                    let rotation = run.rotation;
                    let run = run.clone();
                    let outcome = if matches!(phase, Phase::RolledBack { .. }) {
                        Outcome::RolledBack
                    } else {
                        Outcome::Abandoned
                    };
                    t.history = Some(record(&run, outcome, Some(error), now));
                    self.stuck(t, rotation, error, now);
                    return;
                }
                let at = now + self.backoff(run.rotation, run.step_failures);
                run.retry_at = Some(at);
                let rotation = run.rotation;
                t.effects.push(Effect::ArmTimer { rotation, at });
                t.state.phase = phase;
            }
            Phase::Idle { .. } | Phase::Grace { .. } | Phase::Stuck { .. } => {}
        }
    }

    fn after_failed_attempt(
        &self,
        t: &mut Transition,
        run: Run,
        reason: ErrorKind,
        now: DateTime<Utc>,
    ) {
        t.state.attempts += 1;
        if t.state.attempts >= self.max_attempts {
            t.history = Some(record(&run, Outcome::Abandoned, Some(reason), now));
            t.effects.push(Effect::Notify {
                rotation: run.rotation,
                notice: Notice::Failed {
                    version: run.pending,
                    error: reason,
                    retry_at: None,
                },
            });
            self.stuck(t, run.rotation, reason, now);
            return;
        }
        let at = now + self.backoff(run.rotation, t.state.attempts);
        t.history = Some(record(&run, Outcome::Failed, Some(reason), now));
        t.outcome = Some(Outcome::Failed);
        t.effects.push(Effect::Notify {
            rotation: run.rotation,
            notice: Notice::Failed {
                version: run.pending,
                error: reason,
                retry_at: Some(at),
            },
        });
        self.go_idle(t, Some(at), true);
    }

    fn stuck(
        &self,
        t: &mut Transition,
        rotation: RotationId,
        reason: ErrorKind,
        now: DateTime<Utc>,
    ) {
        t.outcome = Some(Outcome::Abandoned);
        t.effects.push(Effect::CancelTimer { rotation });
        t.effects.push(Effect::Notify {
            rotation,
            notice: Notice::Stuck { error: reason },
        });
        t.state.phase = Phase::Stuck {
            since: now,
            reason,
            rotation,
        };
    }

    /// The delay before retry `failures` of `rotation`: exponential with equal jitter (drawn
    /// from `[b/2, b]`, `b = retry_backoff * 2^(failures-1)`, and `retry_backoff_max` once the
    /// doubling reaches it). The draw comes from the per-secret seed, the rotation id and the
    /// failure count, so the same inputs always give the same delay.
    pub fn backoff(&self, rotation: RotationId, failures: u32) -> TimeDelta {
        let max = self.retry_backoff_max.to_std().unwrap_or_default();
        let initial = self.retry_backoff.to_std().unwrap_or_default().min(max);
        let bits = splitmix64(self.jitter_seed ^ rotation.0.wrapping_mul(31) ^ u64::from(failures));
        // The top 53 bits as a fraction: uniform in [0, 1).
        let draw = (bits >> 11) as f64 / (1u64 << 53) as f64;
        // `initial` is clamped to `max`, so the backoff is always valid.
        ExponentialBackoff::equal_jitter(initial, max)
            .ok()
            .and_then(|b| TimeDelta::from_std(b.delay(failures, draw)).ok())
            .unwrap_or(self.retry_backoff_max)
    }
}

fn phase_run_mut(phase: &mut Phase) -> Option<&mut Run> {
    match phase {
        Phase::Generating(r) | Phase::Staged(r) | Phase::Applied(r) | Phase::Tested(r) => Some(r),
        Phase::Grace { run, .. }
        | Phase::Expired { run, .. }
        | Phase::RollingBack { run, .. }
        | Phase::RolledBack { run, .. } => Some(run),
        Phase::Idle { .. } | Phase::Stuck { .. } => None,
    }
}

fn record(
    run: &Run,
    outcome: Outcome,
    error: Option<ErrorKind>,
    now: DateTime<Utc>,
) -> HistoryRecord {
    HistoryRecord {
        rotation: run.rotation,
        trigger: run.trigger,
        from_version: run.from,
        to_version: run.pending,
        outcome,
        error,
        steps: run.steps.clone(),
        started_at: run.started_at,
        finished_at: now,
        late_consumers: Vec::new(),
        gone_consumers: Vec::new(),
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
