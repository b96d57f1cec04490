//! Delayed self-messages whose lifetime is tied to the actor that armed them.
//!
//! ractor's `send_after` spawns a detached tokio task and hands back a `JoinHandle` that does
//! nothing when dropped, so a timer outlives the actor that armed it: 1,020 restarts of a
//! crashing actor once left 1,020 live timer tasks, each holding its message and a clone of the
//! target's `ActorRef`. [`TimerGuard`] keeps the task as an [`AbortOnDrop`], so it is aborted on
//! drop and on re-arm. An actor keeps its guards in its state, so when the actor
//! stops, fails or panics, ractor drops the state and every pending timer goes with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// The delayed-send task, aborted when replaced or dropped, and the flag it sets just
    /// before it sends.
    task: Option<(AbortOnDrop, Arc<AtomicBool>)>,
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
        let sent = Arc::new(AtomicBool::new(false));
        let flag = sent.clone();
        let task = AbortOnDrop::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            // Set before the send, so the actor handling the message sees it: the task
            // itself finishes a moment later, possibly after the handler ran.
            flag.store(true, Ordering::Release);
            // The target may have stopped meanwhile; there is nobody left to tell.
            let _ = actor.send_message(msg());
        });
        self.task = Some((task, sent));
    }

    /// Cancels the pending send, if any. Cancelling twice, or after the send, is harmless.
    pub fn cancel(&mut self) {
        self.task = None;
    }

    /// Whether a send is still pending (armed, not yet fired, not cancelled). False in the
    /// handler of the message this guard sent: an actor that re-arms only when nothing is
    /// armed must not take its own firing timer for a pending one (its timer then stopped
    /// for good when the handler won the race against the sending task's end).
    pub fn is_armed(&self) -> bool {
        self.task
            .as_ref()
            .is_some_and(|(_, sent)| !sent.load(Ordering::Acquire))
    }
}
