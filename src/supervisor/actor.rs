//! The supervisor actor: its messages, its child table, and how it starts, restarts and stops
//! children.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RactorErr, RpcReplyPort,
    SupervisionEvent,
};
use tokio::time::Instant;

use super::event::{GiveUp, Observer, SupervisorError, SupervisorEvent, is_kill};
use super::spec::{Backoff, ChildSpec, Intensity, Restart};
use super::timer::TimerGuard;

/// After a stop times out and the child is killed, how long to wait for the kill to land.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// Requests to a [`Supervisor`]. Prefer the client calls ([`super::start_child`],
/// [`super::terminate_child`], [`super::lookup_child`], [`super::which_children`]), which add a
/// timeout.
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
pub(super) enum Exit {
    Normal(Option<String>),
    Abnormal(String),
}

impl Exit {
    pub(super) fn is_abnormal(&self) -> bool {
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
                // OTP counts a kill as abnormal, so transient children come back.
                let exit = if is_kill(reason.as_deref()) {
                    Exit::Abnormal(reason.unwrap_or_default())
                } else {
                    Exit::Normal(reason)
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
    kill_if_timed_out(cell, timed_out, spec.shutdown).await;
}

/// Stops an actor gracefully within `timeout`, then kills it.
pub(super) async fn stop_timeout(cell: &ActorCell, timeout: Duration, reason: &str) {
    let timed_out = matches!(
        cell.stop_and_wait(Some(reason.to_owned()), Some(timeout))
            .await,
        Err(RactorErr::Timeout)
    );
    kill_if_timed_out(cell, timed_out, timeout).await;
}

/// Kills an actor whose graceful stop did not finish within `timeout`. A stop that failed for
/// any other reason means the actor had already stopped (its channels are closed): nothing
/// left to do.
async fn kill_if_timed_out(cell: &ActorCell, timed_out: bool, timeout: Duration) {
    if timed_out {
        tracing::warn!(actor = %cell.get_id(), ?timeout, "child did not stop in time; killing it");
        let _ = cell.kill_and_wait(Some(KILL_GRACE)).await;
    }
}
