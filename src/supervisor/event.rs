//! What a supervisor reports: events for its [`Observer`], the [`GiveUp`] it fails with, and
//! the errors of supervisor requests.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ractor::SpawnErr;

/// Receives every [`SupervisorEvent`]. Called inside the supervisor's handler, so it must be
/// cheap and must not block: count an atomic, `cast` to the metrics actor, log.
pub type Observer = Arc<dyn Fn(SupervisorEvent) + Send + Sync>;

/// What a supervisor tells its [`Observer`]. `supervisor` is the supervisor's registry name (or
/// its actor id); `kind` is the child's bounded label, fit for metrics; `child_id` may name a
/// tenant secret and belongs in logs, not labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorEvent {
    /// A child exited and will be started again after `delay`. `attempt` counts consecutive
    /// restarts of this child (1 after a healthy run). Count restarts here.
    Restarting {
        supervisor: String,
        child_id: String,
        kind: &'static str,
        reason: String,
        delay: Duration,
        attempt: u32,
    },
    /// The new incarnation started.
    Restarted {
        supervisor: String,
        child_id: String,
        kind: &'static str,
        attempt: u32,
    },
    /// The start function failed during a restart; another restart is planned (or the
    /// supervisor gives up).
    RestartFailed {
        supervisor: String,
        child_id: String,
        kind: &'static str,
        error: String,
    },
    /// A child exited and was removed without restart (temporary, or transient after a normal
    /// stop).
    Removed {
        supervisor: String,
        child_id: String,
        kind: &'static str,
        reason: String,
    },
    /// The restart intensity was exceeded; the supervisor stopped its children and failed.
    GaveUp(GiveUp),
}

/// Why a supervisor gave up: it exceeded its restart intensity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiveUp {
    /// The supervisor's registry name, or its actor id.
    pub supervisor: String,
    /// The child whose exit tipped the count.
    pub child_id: String,
    pub kind: &'static str,
    /// That child's exit reason.
    pub reason: String,
    pub max_restarts: u32,
    pub within: Duration,
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "supervisor {} gave up: more than {} restarts within {:?}, last child {:?} ({}) exited: {}",
            self.supervisor, self.max_restarts, self.within, self.child_id, self.kind, self.reason
        )
    }
}

/// Errors from supervisor requests, and the error a supervisor fails with when it gives up.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("child id {id:?} is already supervised")]
    DuplicateChild { id: String },
    #[error("no child with id {id:?}")]
    UnknownChild { id: String },
    #[error("child {id:?} ({kind}) failed to start: {source}")]
    StartFailed {
        id: String,
        kind: &'static str,
        #[source]
        source: SpawnErr,
    },
    #[error("child {id:?} is not an actor of the requested message type")]
    WrongType { id: String },
    #[error("{0}")]
    GaveUp(GiveUp),
    #[error("supervisor did not answer within {0:?}")]
    CallTimeout(Duration),
    #[error("supervisor is not running: {0}")]
    Unavailable(String),
}

impl SupervisorError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::DuplicateChild { .. } => "duplicate_child",
            Self::UnknownChild { .. } => "unknown_child",
            Self::StartFailed { .. } => "start_failed",
            Self::WrongType { .. } => "wrong_type",
            Self::GaveUp(_) => "gave_up",
            Self::CallTimeout(_) => "timeout",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// Whether an `ActorTerminated` reason means the actor was killed. ractor reports a kill (and a
/// cancelled actor task) as a termination with one of these reasons, where OTP counts a kill
/// as an abnormal exit.
pub fn is_kill(reason: Option<&str>) -> bool {
    matches!(reason, Some("killed") | Some("actor_task_cancelled"))
}
