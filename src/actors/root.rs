//! The root of rotor's supervision tree, and how `main` learns that it ended.
//!
//! The root [`Supervisor`] has no parent supervisor to escalate to, so [`spawn_root`] gives it
//! one: a small watcher actor that spawns the root linked, waits for its exit and reports it once
//! through a oneshot channel as a [`RootExit`]. `main` waits on [`Root::wait`] (or
//! [`wait_root`]) next to its shutdown signal and exits non-zero when the root gave up, so
//! the orchestrator (Kubernetes) restarts the process.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use rotor::actors::root::spawn_root;
//! # use rotor::supervisor::SupervisorArgs;
//! # async fn main_body(args: SupervisorArgs) -> Result<std::process::ExitCode, ractor::SpawnErr> {
//! let mut root = spawn_root(Some("rotor".into()), args).await?;
//! let exit = tokio::select! {
//!     exit = root.wait() => exit,
//!     _ = tokio::signal::ctrl_c() => root.shutdown(Duration::from_secs(30)).await,
//! };
//! tracing::info!(%exit, "supervision tree ended");
//! Ok(exit.exit_code())
//! # }
//! ```

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SpawnErr, SupervisionEvent};
use tokio::sync::oneshot;

use crate::supervisor::{
    self, GiveUp, Supervisor, SupervisorArgs, SupervisorError, SupervisorMsg, is_kill,
};

/// How the root supervisor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootExit {
    /// It was stopped (a requested shutdown), with ractor's stop reason.
    Stopped(Option<String>),
    /// It exceeded its restart intensity after its children kept failing.
    GaveUp(GiveUp),
    /// It failed for another reason (a panic in supervisor code, or it was killed).
    Failed(String),
}

impl RootExit {
    /// Only a requested stop is a success.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Stopped(_))
    }

    /// The process exit code for `main`: 0 after a requested stop, 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        if self.is_success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

impl fmt::Display for RootExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stopped(Some(reason)) => write!(f, "stopped: {reason}"),
            Self::Stopped(None) => f.write_str("stopped"),
            Self::GaveUp(give_up) => give_up.fmt(f),
            Self::Failed(reason) => write!(f, "root supervisor failed: {reason}"),
        }
    }
}

/// A running supervision tree.
pub struct Root {
    /// The root supervisor. Stable for the life of the process (the root is never restarted),
    /// unlike the cells of the children below it.
    pub supervisor: ActorRef<SupervisorMsg>,
    exit: oneshot::Receiver<RootExit>,
    /// The answer, once received, so that waiting again returns it again.
    ended: Option<RootExit>,
}

impl Root {
    /// Waits until the root supervisor ends. Cancel-safe, so it can sit in a `select!`; after the
    /// first answer it returns the same answer again.
    pub async fn wait(&mut self) -> RootExit {
        if let Some(exit) = &self.ended {
            return exit.clone();
        }
        let exit = (&mut self.exit).await.unwrap_or_else(|_| {
            // The watcher always sends before it stops; a closed channel means it was torn down
            // from outside (the runtime shutting down), which is not a clean stop.
            RootExit::Failed("root watcher vanished".to_owned())
        });
        self.ended = Some(exit.clone());
        exit
    }

    /// Stops the tree gracefully (children in reverse start order, recursively), killing it after
    /// `timeout`, and returns how it ended.
    pub async fn shutdown(&mut self, timeout: Duration) -> RootExit {
        if self.ended.is_none() {
            supervisor::shutdown(&self.supervisor, timeout).await;
        }
        self.wait().await
    }
}

/// Spawns the root supervisor (under the registry `name`, if any) with its watcher.
///
/// Fails like `Actor::spawn` if the root's initial children fail to start.
pub async fn spawn_root(name: Option<String>, args: SupervisorArgs) -> Result<Root, SpawnErr> {
    let (exit_tx, exit_rx) = oneshot::channel();
    let (ready_tx, ready_rx) = oneshot::channel();
    let watch_args = RootWatchArgs {
        name,
        args,
        exit: exit_tx,
        ready: ready_tx,
    };
    // The watcher's join handle is not needed: the oneshot says when it is done.
    let (_watch, _join) = Actor::spawn(None, RootWatch, watch_args).await?;
    let supervisor = ready_rx.await.map_err(|_| {
        SpawnErr::StartupFailed("root watcher started without the root supervisor".into())
    })?;
    Ok(Root {
        supervisor,
        exit: exit_rx,
        ended: None,
    })
}

/// Waits for the root supervisor to end (the same as [`Root::wait`]).
pub async fn wait_root(root: &mut Root) -> RootExit {
    root.wait().await
}

// ---------------------------------------------------------------------------------------------
// The watcher actor
// ---------------------------------------------------------------------------------------------

/// The watcher takes no messages; it only hears supervision events.
type RootWatchMsg = ();

struct RootWatchArgs {
    name: Option<String>,
    args: SupervisorArgs,
    exit: oneshot::Sender<RootExit>,
    ready: oneshot::Sender<ActorRef<SupervisorMsg>>,
}

struct RootWatchState {
    root: ActorId,
    /// Taken on the first exit event; there is only one.
    exit: Option<oneshot::Sender<RootExit>>,
}

/// The root supervisor's parent: turns its exit into a [`RootExit`].
struct RootWatch;

impl Actor for RootWatch {
    type Msg = RootWatchMsg;
    type State = RootWatchState;
    type Arguments = RootWatchArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RootWatchMsg>,
        RootWatchArgs {
            name,
            args,
            exit,
            ready,
        }: RootWatchArgs,
    ) -> Result<RootWatchState, ActorProcessingErr> {
        let (root, _join) =
            Supervisor::spawn_linked(name, Supervisor, args, myself.get_cell()).await?;
        let id = root.get_id();
        // spawn_root is waiting on this; if it went away there is nobody to hand the root to.
        let _ = ready.send(root);
        Ok(RootWatchState {
            root: id,
            exit: Some(exit),
        })
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootWatchMsg>,
        event: SupervisionEvent,
        state: &mut RootWatchState,
    ) -> Result<(), ActorProcessingErr> {
        let exit = match event {
            SupervisionEvent::ActorFailed(cell, err) if cell.get_id() == state.root => {
                match err.downcast_ref::<SupervisorError>() {
                    Some(SupervisorError::GaveUp(give_up)) => RootExit::GaveUp(give_up.clone()),
                    _ => RootExit::Failed(err.to_string()),
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) if cell.get_id() == state.root => {
                if is_kill(reason.as_deref()) {
                    RootExit::Failed(reason.unwrap_or_default())
                } else {
                    RootExit::Stopped(reason)
                }
            }
            _ => return Ok(()),
        };
        if let Some(tx) = state.exit.take() {
            // main may have stopped waiting; the exit is logged by the supervisor regardless.
            let _ = tx.send(exit);
        }
        myself.stop(None);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::Restart;
    use crate::supervisor::tests::{
        ChildMsg, Probe, WAIT, at_most, child, init, inner_of, inner_supervisor, no_backoff,
        recorder, send,
    };

    #[tokio::test(start_paused = true)]
    async fn root_give_up_reaches_main_through_nested_escalation() {
        init();
        let (probe, sibling) = (Probe::default(), Probe::default());
        let (observer, _) = recorder();
        let args = no_backoff(vec![
            child("sibling", Restart::Permanent, &sibling),
            inner_supervisor(&probe, at_most(0), observer),
        ])
        .with_intensity(at_most(0));
        let mut root = spawn_root(Some("root-give-up-test".into()), args)
            .await
            .unwrap();

        let inner = inner_of(&root.supervisor).await;
        send(&inner, "w", ChildMsg::Panic).await;

        let exit = tokio::time::timeout(WAIT, root.wait()).await.unwrap();
        match &exit {
            RootExit::GaveUp(g) => {
                assert_eq!(g.supervisor, "root-give-up-test");
                assert_eq!((g.child_id.as_str(), g.kind), ("inner", "rotations"));
                assert!(g.reason.contains("gave up"), "{}", g.reason);
            }
            other => panic!("expected a give-up, got {other:?}"),
        }
        assert!(!exit.is_success());
        assert_eq!(exit.exit_code(), ExitCode::FAILURE);
        // Waiting again returns the same answer.
        assert_eq!(root.wait().await, exit);
        // The root stopped what was still running (gracefully: post_stop ran) on the way out.
        assert_eq!(sibling.stopped(), ["sibling"]);
        assert_eq!(sibling.starts(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn root_shutdown_is_a_clean_exit() {
        init();
        let probe = Probe::default();
        let mut root = spawn_root(
            None,
            no_backoff(vec![child("a", Restart::Permanent, &probe)]),
        )
        .await
        .unwrap();
        let exit = root.shutdown(Duration::from_secs(5)).await;
        assert!(exit.is_success(), "{exit}");
        assert_eq!(probe.stopped(), ["a"]);
    }
}
