//! An OTP-style one-for-one supervisor on ractor, used at every level of rotor's tree.
//!
//! ractor links a child to its parent and reports `ActorStarted`, `ActorFailed` and
//! `ActorTerminated` to the parent's `handle_supervisor_evt`, but restarts nothing: with the
//! default handler a failed child stays dead (design.md §3, §10). [`Supervisor`] implements the
//! Erlang/OTP model on top:
//!
//! - **Restart types** ([`Restart`]): permanent children are always restarted, transient ones
//!   only after an abnormal exit (a panic, an `Err` from a handler, or a kill), temporary ones
//!   never. A child that is not restarted is removed from the table.
//! - **One-for-one**: only the child that exited is restarted; its siblings keep running.
//! - **Backoff** ([`Backoff`]): successive restarts of the same child wait exponentially longer;
//!   the count resets once the child has stayed up for `reset_after`. The wait is a scheduled
//!   message owned by a [`TimerGuard`], so the supervisor keeps answering while it waits.
//! - **Intensity** ([`Intensity`]): more than `max_restarts` restarts (of all children together)
//!   within `within` and the supervisor gives up: it stops its remaining children in reverse start
//!   order and fails, which ractor reports to its own parent as `ActorFailed`. A parent supervisor
//!   then restarts it like any other child, or gives up in turn; the root's give-up reaches `main`
//!   through [`super::root`].
//! - **Shutdown**: stopping a supervisor (`stop`/`stop_and_wait`, not `kill`) stops its children
//!   in reverse start order, each within its [`ChildSpec::shutdown`] bound, then kills stragglers.
//!   Killing a supervisor skips that: ractor then kills the children in no particular order.
//!
//! Children are matched to supervision events by actor id, as in ractor's
//! `examples/supervisor.rs`: an event for an actor id the table does not know (a child that was
//! terminated on purpose, or an old incarnation) is ignored.
//!
//! A child's `ActorCell` changes on every restart. Never keep one across a possible restart:
//! ask the supervisor ([`lookup_child`]) or the registry (a spec may register a name) each time.
//!
//! Starting a child awaits its `pre_start` inside the supervisor's handler, as OTP does, so keep
//! `pre_start` short and do slow work (store reads) in `post_start`, which runs in the child's
//! own task.
//!
//! # Example
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use rotor::actors::supervisor::*;
//! # async fn f<A: ractor::Actor<Arguments = ()> + Default>() -> Result<(), SupervisorError> {
//! let args = SupervisorArgs::new(vec![ChildSpec::actor(
//!     "metrics", "metrics", Restart::Permanent, Some("metrics".into()), || (A::default(), ()),
//! )])
//! .with_observer(Arc::new(|event: SupervisorEvent| tracing::info!(?event, "supervision")));
//! let (sup, _join) = ractor::Actor::spawn(Some("rotations".into()), Supervisor, args)
//!     .await
//!     .map_err(|e| SupervisorError::Unavailable(e.to_string()))?;
//! let metrics = lookup_child(&sup, "metrics").await?; // fresh on every use; never cached
//! # let _ = metrics; Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, Message, RactorErr, RpcReplyPort,
    SpawnErr, SupervisionEvent,
};
use tokio::time::Instant;

use super::timer::TimerGuard;

/// How long the client helpers ([`start_child`], [`lookup_child`], ...) wait for an answer. A
/// supervisor that has not answered in this time is wedged (or waiting on a child's shutdown).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// After a stop times out and the child is killed, how long to wait for the kill to land.
const KILL_GRACE: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Child specifications
// ---------------------------------------------------------------------------------------------

/// When a child that exited is started again (OTP restart types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted, whatever the exit.
    Permanent,
    /// Restarted only after an abnormal exit: a panic, an `Err` from a handler, or a kill. A
    /// normal `stop` (the child decided it is done) removes it.
    Transient,
    /// Never restarted; removed when it exits.
    Temporary,
}

impl Restart {
    fn should_restart(self, exit: &Exit) -> bool {
        match self {
            Self::Permanent => true,
            Self::Transient => exit.is_abnormal(),
            Self::Temporary => false,
        }
    }
}

/// Starts one incarnation of a child: spawns it linked to the given supervisor cell
/// (`Actor::spawn_linked`) and returns the new child's cell. Called again on every restart.
pub type StartFn =
    Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// Receives every [`SupervisorEvent`]. Called inside the supervisor's handler, so it must be
/// cheap and must not block: count an atomic, `cast` to the metrics actor, log.
pub type Observer = Arc<dyn Fn(SupervisorEvent) + Send + Sync>;

/// What a supervisor needs to start, restart and stop one child.
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique among the supervisor's children; the key for lookups and termination.
    pub id: String,
    /// A bounded label (`"rotation"`, `"metrics"`, `"supervisor"`), safe as a metric label,
    /// unlike `id` which may name a tenant secret.
    pub kind: &'static str,
    /// When the child is restarted.
    pub restart: Restart,
    /// How long a graceful stop may take before the child is killed.
    pub shutdown: Duration,
    /// Stop by draining: the child handles what is already in its mailbox, then stops
    /// (ractor's `drain`), instead of stopping after its current message.
    pub drain: bool,
    /// Spawns the child linked to the supervisor; see [`StartFn`]. The child must be linked,
    /// otherwise the supervisor never hears that it exited.
    pub start: StartFn,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// Default bound on a leaf child's graceful stop.
    pub const DEFAULT_SHUTDOWN: Duration = Duration::from_secs(5);
    /// Default bound for a child that is itself a supervisor: long enough for its own children
    /// to stop one after another.
    pub const SUPERVISOR_SHUTDOWN: Duration = Duration::from_secs(30);

    /// A spec from any async start function. The function receives the supervisor's cell and
    /// must spawn the child linked to it.
    pub fn new<F, Fut>(
        id: impl Into<String>,
        kind: &'static str,
        restart: Restart,
        start: F,
    ) -> Self
    where
        F: Fn(ActorCell) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, SpawnErr>> + Send + 'static,
    {
        Self {
            id: id.into(),
            kind,
            restart,
            shutdown: Self::DEFAULT_SHUTDOWN,
            drain: false,
            start: Arc::new(move |supervisor| start(supervisor).boxed()),
        }
    }

    /// A spec for an actor of type `A`: each (re)start calls `make` for a fresh handler and
    /// arguments, then `A::spawn_linked` under the optional registry `name`.
    ///
    /// The name is released before the supervisor hears of the exit (ractor unregisters an actor
    /// as it starts stopping), so the restarted incarnation can take it again.
    pub fn actor<A, F>(
        id: impl Into<String>,
        kind: &'static str,
        restart: Restart,
        name: Option<String>,
        make: F,
    ) -> Self
    where
        A: Actor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        Self::new(id, kind, restart, move |supervisor| {
            let (actor, args) = make();
            let name = name.clone();
            async move {
                // The join handle is dropped on purpose: the supervisor learns of the exit from
                // the link, and dropping a tokio JoinHandle detaches without cancelling.
                let (child, _join) = A::spawn_linked(name, actor, args, supervisor).await?;
                Ok(child.get_cell())
            }
        })
    }

    /// A spec for a nested [`Supervisor`], permanent, with [`Self::SUPERVISOR_SHUTDOWN`].
    ///
    /// `args` runs on every (re)start, so a restarted supervisor starts the children it returns
    /// then (for example the current configuration's secrets); children that were added with
    /// [`start_child`] to the previous incarnation are not carried over, as in OTP.
    pub fn supervisor<F>(
        id: impl Into<String>,
        kind: &'static str,
        name: Option<String>,
        args: F,
    ) -> Self
    where
        F: Fn() -> SupervisorArgs + Send + Sync + 'static,
    {
        Self::actor(id, kind, Restart::Permanent, name, move || {
            (Supervisor, args())
        })
        .with_shutdown(Self::SUPERVISOR_SHUTDOWN)
    }

    /// Overrides the graceful-stop bound.
    pub fn with_shutdown(mut self, shutdown: Duration) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Stops this child by draining its mailbox first (see [`ChildSpec::drain`]).
    pub fn draining(mut self) -> Self {
        self.drain = true;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------------

/// Maximum restart intensity: more than `max_restarts` restarts within `within`, counted over
/// all children of one supervisor, and it gives up. `max_restarts: 0` means "never restart".
///
/// With [`Backoff`], pick `within` longer than the sum of the first `max_restarts + 1` backoff
/// delays, or a single crash-looping child is spread out enough never to trip it (the supervisor
/// logs a warning at start when that is the case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    pub max_restarts: u32,
    pub within: Duration,
}

impl Default for Intensity {
    /// 10 restarts in 60 s: with the default backoff a child that crashes on every start
    /// escalates after about 45 s.
    fn default() -> Self {
        Self {
            max_restarts: 10,
            within: Duration::from_secs(60),
        }
    }
}

/// Exponential backoff between successive restarts of one child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first restart; doubled for each further consecutive restart.
    /// `Duration::ZERO` restarts immediately every time, as plain OTP does.
    pub initial: Duration,
    /// Upper bound on one delay.
    pub max: Duration,
    /// A child that stayed up this long is considered healthy: its next restart starts again
    /// from `initial`.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(10),
            reset_after: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// Immediate restarts (plain OTP).
    pub const NONE: Self = Self {
        initial: Duration::ZERO,
        max: Duration::ZERO,
        reset_after: Duration::ZERO,
    };

    /// The delay before consecutive restart number `attempt` (1-based):
    /// `min(initial * 2^(attempt - 1), max)`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1));
        factor
            .and_then(|f| self.initial.checked_mul(f))
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The sum of the first `attempts` delays: how long a child that fails on every start takes
    /// to be restarted that many times.
    pub fn total_delay(&self, attempts: u32) -> Duration {
        (1..=attempts).fold(Duration::ZERO, |sum, a| sum.saturating_add(self.delay(a)))
    }
}

// ---------------------------------------------------------------------------------------------
// Observer events and errors
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// Requests to a [`Supervisor`]. Prefer the helper functions ([`start_child`],
/// [`terminate_child`], [`lookup_child`], [`which_children`]), which add a timeout.
pub enum SupervisorMsg {
    /// Starts and supervises a new child (OTP `start_child`).
    StartChild(ChildSpec, RpcReplyPort<Result<ActorCell, SupervisorError>>),
    /// Stops a child gracefully (within its shutdown bound) and forgets it, without restart.
    TerminateChild(String, RpcReplyPort<Result<(), SupervisorError>>),
    /// The child's current cell; `None` while it waits for a restart. Do not cache the answer.
    LookupChild(String, RpcReplyPort<Option<ActorCell>>),
    /// Every child, in start order.
    ListChildren(RpcReplyPort<Vec<ChildInfo>>),
    /// A backoff delay elapsed (sent by the supervisor's own timer).
    Restart(RestartDue),
}

/// The payload of [`SupervisorMsg::Restart`]. Its fields are private so that only the supervisor
/// schedules restarts.
#[derive(Debug)]
pub struct RestartDue {
    id: String,
    /// The table entry's sequence number, so a delayed message for a child that was terminated
    /// and then added again under the same id is ignored.
    seq: u64,
}

/// One row of [`SupervisorMsg::ListChildren`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    pub id: String,
    pub kind: &'static str,
    pub restart: Restart,
    /// False while the child waits for a (backoff-delayed) restart.
    pub alive: bool,
    /// Consecutive restarts since the child last stayed up for `reset_after`.
    pub attempt: u32,
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/// How a child exited, as far as restart types care.
#[derive(Debug)]
enum Exit {
    Normal(Option<String>),
    Abnormal(String),
}

impl Exit {
    fn is_abnormal(&self) -> bool {
        matches!(self, Self::Abnormal(_))
    }

    fn reason(&self) -> String {
        match self {
            Self::Normal(Some(reason)) => reason.clone(),
            Self::Normal(None) => "normal".to_owned(),
            Self::Abnormal(reason) => reason.clone(),
        }
    }
}

/// One supervised child across its incarnations.
struct Child {
    spec: ChildSpec,
    /// Position in start order; kept across restarts so shutdown order stays stable.
    seq: u64,
    /// The running incarnation; `None` while waiting for a restart.
    cell: Option<ActorCell>,
    /// When the current (or last) incarnation started, to reset the backoff after a healthy run.
    started_at: Instant,
    /// Consecutive restarts, for the backoff exponent.
    attempt: u32,
    /// The pending delayed restart. Dropping the child (terminate, give-up, supervisor exit)
    /// drops the guard and cancels the timer task.
    restart_timer: TimerGuard,
}

/// What to do after a child exit was counted against the intensity.
enum Plan {
    Now,
    After(Duration),
    GiveUp(GiveUp),
}

/// The supervisor's state: the child table and the restart history.
pub struct SupervisorState {
    /// Registry name or actor id, for logs and events.
    label: String,
    children: HashMap<String, Child>,
    /// Start order (sequence number → child id), walked backwards on shutdown.
    order: BTreeMap<u64, String>,
    /// Running incarnations: supervision events carry an actor id, not a child id.
    by_actor: HashMap<ActorId, String>,
    next_seq: u64,
    /// Times of recent restarts, oldest first, pruned to the intensity window.
    restarts: VecDeque<Instant>,
    intensity: Intensity,
    backoff: Backoff,
    observer: Observer,
}

/// Start arguments of a [`Supervisor`]. Cloneable so that a parent can restart it.
#[derive(Clone)]
pub struct SupervisorArgs {
    /// Started in order in `pre_start`; if one fails, the ones already started are stopped and
    /// the supervisor fails to start.
    pub children: Vec<ChildSpec>,
    pub intensity: Intensity,
    pub backoff: Backoff,
    pub observer: Observer,
}

impl SupervisorArgs {
    /// Default intensity and backoff, and an observer that ignores events (the supervisor logs
    /// them regardless).
    pub fn new(children: Vec<ChildSpec>) -> Self {
        Self {
            children,
            intensity: Intensity::default(),
            backoff: Backoff::default(),
            observer: Arc::new(|_| {}),
        }
    }

    pub fn with_intensity(mut self, intensity: Intensity) -> Self {
        self.intensity = intensity;
        self
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = observer;
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Actor
// ---------------------------------------------------------------------------------------------

/// The one-for-one supervisor actor. See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Supervisor;

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let label = myself
            .get_name()
            .unwrap_or_else(|| format!("supervisor-{}", myself.get_id()));
        let spread = args
            .backoff
            .total_delay(args.intensity.max_restarts.saturating_add(1));
        if args.intensity.max_restarts > 0 && spread > args.intensity.within {
            tracing::warn!(
                supervisor = %label,
                ?spread,
                within = ?args.intensity.within,
                "backoff spreads restarts wider than the intensity window: a crash-looping child will never escalate"
            );
        }
        let mut state = SupervisorState {
            label,
            children: HashMap::new(),
            order: BTreeMap::new(),
            by_actor: HashMap::new(),
            next_seq: 0,
            restarts: VecDeque::new(),
            intensity: args.intensity,
            backoff: args.backoff,
            observer: args.observer,
        };
        for spec in args.children {
            if let Err(err) = state.start_new(&myself, spec).await {
                // Leave nothing running behind a supervisor that failed to start.
                state.stop_all("supervisor failed to start").await;
                return Err(err.into());
            }
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Only reached on a graceful stop; after a kill or a failure ractor skips post_stop and
        // kills the remaining children itself.
        state.stop_all("supervisor shutting down").await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::StartChild(spec, reply) => {
                let result = state.start_new(&myself, spec).await;
                // The caller may have timed out and gone; nothing to do about it.
                let _ = reply.send(result);
            }
            SupervisorMsg::TerminateChild(id, reply) => {
                let result = state.terminate(&id).await;
                let _ = reply.send(result);
            }
            SupervisorMsg::LookupChild(id, reply) => {
                let cell = state.children.get(&id).and_then(|c| c.cell.clone());
                let _ = reply.send(cell);
            }
            SupervisorMsg::ListChildren(reply) => {
                let _ = reply.send(state.list());
            }
            SupervisorMsg::Restart(due) => {
                let waiting = state
                    .children
                    .get(&due.id)
                    .is_some_and(|c| c.seq == due.seq && c.cell.is_none());
                if waiting {
                    state.restart_child(&myself, &due.id).await?;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (actor_id, exit) = match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                (cell.get_id(), Exit::Abnormal(err.to_string()))
            }
            SupervisionEvent::ActorTerminated(cell, _state, reason) => {
                // ractor reports a kill (and a cancelled actor task) as a termination with this
                // reason; OTP counts a kill as abnormal, so transient children come back.
                let exit = match reason.as_deref() {
                    Some("killed") | Some("actor_task_cancelled") => {
                        Exit::Abnormal(reason.unwrap_or_default())
                    }
                    _ => Exit::Normal(reason),
                };
                (cell.get_id(), exit)
            }
            // Started events add nothing: the table is updated when the start function returns.
            _ => return Ok(()),
        };
        // Unknown ids are children terminated on purpose, or not ours: ignore them.
        let Some(child_id) = state.by_actor.remove(&actor_id) else {
            return Ok(());
        };
        state.on_exit(&myself, child_id, exit).await?;
        Ok(())
    }
}

impl SupervisorState {
    fn notify(&self, event: SupervisorEvent) {
        (self.observer)(event);
    }

    /// Adds a new child and starts its first incarnation.
    async fn start_new(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
    ) -> Result<ActorCell, SupervisorError> {
        if self.children.contains_key(&spec.id) {
            return Err(SupervisorError::DuplicateChild { id: spec.id });
        }
        let cell = (spec.start)(myself.get_cell()).await.map_err(|source| {
            SupervisorError::StartFailed {
                id: spec.id.clone(),
                kind: spec.kind,
                source,
            }
        })?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_actor.insert(cell.get_id(), spec.id.clone());
        self.order.insert(seq, spec.id.clone());
        tracing::debug!(supervisor = %self.label, child = %spec.id, kind = spec.kind, "child started");
        self.children.insert(
            spec.id.clone(),
            Child {
                spec,
                seq,
                cell: Some(cell.clone()),
                started_at: Instant::now(),
                attempt: 0,
                restart_timer: TimerGuard::new(),
            },
        );
        Ok(cell)
    }

    /// A child's incarnation exited: remove it or plan its restart.
    async fn on_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        child_id: String,
        exit: Exit,
    ) -> Result<(), SupervisorError> {
        let Some(child) = self.children.get_mut(&child_id) else {
            return Ok(());
        };
        child.cell = None;
        let (kind, restart) = (child.spec.kind, child.spec.restart);
        let reason = exit.reason();
        if exit.is_abnormal() {
            tracing::warn!(supervisor = %self.label, child = %child_id, kind, %reason, "child failed");
        } else {
            tracing::debug!(supervisor = %self.label, child = %child_id, kind, %reason, "child stopped");
        }
        if !restart.should_restart(&exit) {
            self.remove(&child_id);
            self.notify(SupervisorEvent::Removed {
                supervisor: self.label.clone(),
                child_id,
                kind,
                reason,
            });
            return Ok(());
        }
        self.plan_and_restart(myself, &child_id, reason).await
    }

    /// The backoff delay elapsed: start the child, or plan again if the start fails.
    async fn restart_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        child_id: &str,
    ) -> Result<(), SupervisorError> {
        match self.start_existing(myself, child_id).await {
            Ok(()) => Ok(()),
            Err(reason) => self.plan_and_restart(myself, child_id, reason).await,
        }
    }

    /// Counts a restart against the intensity, then restarts now, arms the backoff timer, or
    /// gives up. Loops while immediate restarts fail, so a child with zero backoff whose start
    /// keeps failing still reaches the intensity limit.
    async fn plan_and_restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        child_id: &str,
        mut reason: String,
    ) -> Result<(), SupervisorError> {
        loop {
            match self.plan(child_id, &reason) {
                None => return Ok(()),
                Some(Plan::GiveUp(give_up)) => return Err(self.give_up(give_up).await),
                Some(Plan::After(delay)) => {
                    let Some(child) = self.children.get_mut(child_id) else {
                        return Ok(());
                    };
                    let due = RestartDue {
                        id: child_id.to_owned(),
                        seq: child.seq,
                    };
                    child
                        .restart_timer
                        .arm(delay, myself.clone(), move || SupervisorMsg::Restart(due));
                    return Ok(());
                }
                Some(Plan::Now) => match self.start_existing(myself, child_id).await {
                    Ok(()) => return Ok(()),
                    Err(err) => reason = err,
                },
            }
        }
    }

    /// Records one restart and decides when it happens. `None` if the child is gone.
    fn plan(&mut self, child_id: &str, reason: &str) -> Option<Plan> {
        let now = Instant::now();
        self.restarts.push_back(now);
        while let Some(&oldest) = self.restarts.front() {
            if now.duration_since(oldest) > self.intensity.within {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        let over_limit = self.restarts.len() > self.intensity.max_restarts as usize;
        let child = self.children.get_mut(child_id)?;
        let kind = child.spec.kind;
        if over_limit {
            return Some(Plan::GiveUp(GiveUp {
                supervisor: self.label.clone(),
                child_id: child_id.to_owned(),
                kind,
                reason: reason.to_owned(),
                max_restarts: self.intensity.max_restarts,
                within: self.intensity.within,
            }));
        }
        if now.duration_since(child.started_at) >= self.backoff.reset_after {
            child.attempt = 0;
        }
        child.attempt = child.attempt.saturating_add(1);
        let attempt = child.attempt;
        let delay = self.backoff.delay(attempt);
        tracing::info!(supervisor = %self.label, child = %child_id, kind, attempt, ?delay, "restarting child");
        self.notify(SupervisorEvent::Restarting {
            supervisor: self.label.clone(),
            child_id: child_id.to_owned(),
            kind,
            reason: reason.to_owned(),
            delay,
            attempt,
        });
        Some(if delay.is_zero() {
            Plan::Now
        } else {
            Plan::After(delay)
        })
    }

    /// Starts a new incarnation of a known child. The error is the reason for the next plan.
    async fn start_existing(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        child_id: &str,
    ) -> Result<(), String> {
        let Some(child) = self.children.get(child_id) else {
            return Ok(());
        };
        let (start, kind) = (child.spec.start.clone(), child.spec.kind);
        match start(myself.get_cell()).await {
            Ok(cell) => {
                let Some(child) = self.children.get_mut(child_id) else {
                    // Unreachable in practice (nothing else runs during the await), but a child
                    // nobody tracks must not keep running.
                    cell.stop(Some("supervisor forgot the child".to_owned()));
                    return Ok(());
                };
                child.cell = Some(cell.clone());
                child.started_at = Instant::now();
                let attempt = child.attempt;
                self.by_actor.insert(cell.get_id(), child_id.to_owned());
                self.notify(SupervisorEvent::Restarted {
                    supervisor: self.label.clone(),
                    child_id: child_id.to_owned(),
                    kind,
                    attempt,
                });
                Ok(())
            }
            Err(err) => {
                let error = err.to_string();
                tracing::warn!(supervisor = %self.label, child = %child_id, kind, %error, "child restart failed");
                self.notify(SupervisorEvent::RestartFailed {
                    supervisor: self.label.clone(),
                    child_id: child_id.to_owned(),
                    kind,
                    error: error.clone(),
                });
                Err(format!("restart failed: {error}"))
            }
        }
    }

    /// Stops every child, tells the observer, and returns the error the supervisor fails with.
    async fn give_up(&mut self, give_up: GiveUp) -> SupervisorError {
        tracing::error!(supervisor = %self.label, child = %give_up.child_id, kind = give_up.kind, "{give_up}");
        self.notify(SupervisorEvent::GaveUp(give_up.clone()));
        self.stop_all("supervisor gave up").await;
        SupervisorError::GaveUp(give_up)
    }

    /// Stops and forgets one child (OTP `terminate_child` + `delete_child`).
    async fn terminate(&mut self, child_id: &str) -> Result<(), SupervisorError> {
        let Some(child) = self.remove(child_id) else {
            return Err(SupervisorError::UnknownChild {
                id: child_id.to_owned(),
            });
        };
        if let Some(cell) = &child.cell {
            stop_child(cell, &child.spec, "terminated by supervisor").await;
        }
        Ok(())
    }

    /// Stops every child in reverse start order, each within its shutdown bound.
    async fn stop_all(&mut self, reason: &str) {
        while let Some((_, child_id)) = self.order.pop_last() {
            if let Some(child) = self.remove(&child_id)
                && let Some(cell) = &child.cell
            {
                stop_child(cell, &child.spec, reason).await;
            }
        }
    }

    /// Drops a child from every index. Its exit event, if still to come, is then ignored, and its
    /// restart timer is cancelled when the returned value is dropped.
    fn remove(&mut self, child_id: &str) -> Option<Child> {
        let child = self.children.remove(child_id)?;
        self.order.remove(&child.seq);
        if let Some(cell) = &child.cell {
            self.by_actor.remove(&cell.get_id());
        }
        Some(child)
    }

    fn list(&self) -> Vec<ChildInfo> {
        self.order
            .values()
            .filter_map(|id| self.children.get(id))
            .map(|c| ChildInfo {
                id: c.spec.id.clone(),
                kind: c.spec.kind,
                restart: c.spec.restart,
                alive: c.cell.is_some(),
                attempt: c.attempt,
            })
            .collect()
    }
}

/// Stops a child gracefully (draining it if its spec says so) within its shutdown bound,
/// then kills it.
async fn stop_child(cell: &ActorCell, spec: &ChildSpec, reason: &str) {
    let timed_out = if spec.drain {
        matches!(
            cell.drain_and_wait(Some(spec.shutdown)).await,
            Err(RactorErr::Timeout)
        )
    } else {
        matches!(
            cell.stop_and_wait(Some(reason.to_owned()), Some(spec.shutdown))
                .await,
            Err(RactorErr::Timeout)
        )
    };
    settle(cell, timed_out, spec.shutdown).await;
}

/// Stops an actor gracefully within `timeout`, then kills it.
async fn stop_timeout(cell: &ActorCell, timeout: Duration, reason: &str) {
    let timed_out = matches!(
        cell.stop_and_wait(Some(reason.to_owned()), Some(timeout))
            .await,
        Err(RactorErr::Timeout)
    );
    settle(cell, timed_out, timeout).await;
}

/// Kills an actor whose graceful stop did not finish within `timeout`. Any other error
/// means it had already stopped (its channels are closed): nothing left to do.
async fn settle(cell: &ActorCell, timed_out: bool, timeout: Duration) {
    if timed_out {
        tracing::warn!(actor = %cell.get_id(), ?timeout, "child did not stop in time; killing it");
        let _ = cell.kill_and_wait(Some(KILL_GRACE)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Client helpers
// ---------------------------------------------------------------------------------------------

async fn call<T, F>(supervisor: &ActorRef<SupervisorMsg>, build: F) -> Result<T, SupervisorError>
where
    T: Send + 'static,
    F: FnOnce(RpcReplyPort<T>) -> SupervisorMsg,
{
    match supervisor.call(build, Some(CALL_TIMEOUT)).await {
        Ok(CallResult::Success(value)) => Ok(value),
        Ok(CallResult::Timeout) => Err(SupervisorError::CallTimeout(CALL_TIMEOUT)),
        Ok(CallResult::SenderError) => Err(SupervisorError::Unavailable(
            "supervisor dropped the request".to_owned(),
        )),
        Err(err) => Err(SupervisorError::Unavailable(err.to_string())),
    }
}

/// Starts and supervises a new child; returns its first incarnation's cell.
pub async fn start_child(
    supervisor: &ActorRef<SupervisorMsg>,
    spec: ChildSpec,
) -> Result<ActorCell, SupervisorError> {
    call(supervisor, |reply| SupervisorMsg::StartChild(spec, reply)).await?
}

/// Stops a child (gracefully, within its shutdown bound) and removes it; it is not restarted.
pub async fn terminate_child(
    supervisor: &ActorRef<SupervisorMsg>,
    id: &str,
) -> Result<(), SupervisorError> {
    let id = id.to_owned();
    call(supervisor, |reply| SupervisorMsg::TerminateChild(id, reply)).await?
}

/// The child's current cell, `None` if unknown or waiting for a restart.
///
/// The answer is only good until the child next exits: ask again for each use, never store it.
pub async fn lookup_child(
    supervisor: &ActorRef<SupervisorMsg>,
    id: &str,
) -> Result<Option<ActorCell>, SupervisorError> {
    let id = id.to_owned();
    call(supervisor, |reply| SupervisorMsg::LookupChild(id, reply)).await
}

/// [`lookup_child`], typed: `Err(WrongType)` if the child does not take messages of type `M`.
/// Same caveat: do not keep the reference across a possible restart.
pub async fn lookup_child_as<M: Message>(
    supervisor: &ActorRef<SupervisorMsg>,
    id: &str,
) -> Result<Option<ActorRef<M>>, SupervisorError> {
    match lookup_child(supervisor, id).await? {
        None => Ok(None),
        Some(cell) if cell.is_message_type_of::<M>() == Some(false) => {
            Err(SupervisorError::WrongType { id: id.to_owned() })
        }
        Some(cell) => Ok(Some(cell.into())),
    }
}

/// Every child in start order, with whether it is currently running.
pub async fn which_children(
    supervisor: &ActorRef<SupervisorMsg>,
) -> Result<Vec<ChildInfo>, SupervisorError> {
    call(supervisor, SupervisorMsg::ListChildren).await
}

/// Stops a supervisor gracefully (children in reverse start order) and waits up to `timeout`;
/// kills it if that is not enough. Killing skips the ordered shutdown of what is left.
pub async fn shutdown(supervisor: &ActorRef<SupervisorMsg>, timeout: Duration) {
    stop_timeout(&supervisor.get_cell(), timeout, "shutdown").await;
}
