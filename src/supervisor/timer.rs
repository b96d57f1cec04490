//! Delayed self-messages whose lifetime is tied to the actor that armed them.
//!
//! ractor's `send_after` spawns a detached tokio task and hands back a `JoinHandle` that does
//! nothing when dropped, so a timer outlives the actor that armed it: 1,020 restarts of a
//! crashing actor once left 1,020 live timer tasks, each holding its message and a clone of the
//! target's `ActorRef`. [`TimerGuard`] keeps the task as an [`AbortOnDrop`], so it is aborted on
//! drop and on re-arm. An actor keeps its guards in its state, so when the actor
//! stops, fails or panics, ractor drops the state and every pending timer goes with it.

use std::time::Duration;

use ractor::{ActorRef, Message};
use tokio::time::Instant;

use super::task::AbortOnDrop;

/// At most one pending delayed message, cancelled when the guard is dropped or re-armed.
///
/// ```no_run
/// # use std::time::Duration;
/// # use ractor::ActorRef;
/// # use rotor::supervisor::TimerGuard;
/// # enum Msg { Tick }
/// # fn f(myself: ActorRef<Msg>) {
/// let mut tick = TimerGuard::new();
/// tick.arm(Duration::from_secs(30), myself, || Msg::Tick);
/// // Keep `tick` in the actor's state; dropping the state cancels the send.
/// # }
/// ```
#[derive(Debug, Default)]
pub struct TimerGuard {
    /// The delayed-send task, aborted when replaced or dropped.
    task: Option<AbortOnDrop>,
}

impl TimerGuard {
    /// A guard with nothing armed.
    pub const fn new() -> Self {
        Self { task: None }
    }

    /// Sends `msg()` to `actor` after `delay`, replacing (and cancelling) any pending send.
    ///
    /// The message is built lazily so that a cancelled timer never constructs it. A send to an
    /// actor that has already stopped is dropped silently: the only listener is gone.
    pub fn arm<M, F>(&mut self, delay: Duration, actor: ActorRef<M>, msg: F)
    where
        M: Message,
        F: FnOnce() -> M + Send + 'static,
    {
        self.arm_at(Instant::now() + delay, actor, msg);
    }

    /// Like [`TimerGuard::arm`] but with an absolute deadline, for schedulers that compute the
    /// next due time rather than a delay.
    pub fn arm_at<M, F>(&mut self, deadline: Instant, actor: ActorRef<M>, msg: F)
    where
        M: Message,
        F: FnOnce() -> M + Send + 'static,
    {
        self.task = Some(AbortOnDrop::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            // The target may have stopped meanwhile; there is nobody left to tell.
            let _ = actor.send_message(msg());
        }));
    }

    /// Cancels the pending send, if any. Cancelling twice, or after the send, is harmless.
    pub fn cancel(&mut self) {
        self.task = None;
    }

    /// Whether a send is still pending (armed, not yet fired, not cancelled).
    pub fn is_armed(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }
}
