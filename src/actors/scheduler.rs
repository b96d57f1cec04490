//! One timer for every rotation actor: a sorted map of deadlines and a single task that
//! sleeps until the earliest one (the shape of mini-redis's purge task).
//!
//! A tokio task and sleep per secret would cost about 1 KiB each at 100,000 secrets, and
//! a `send_after` task outlives the actor that armed it. Here an actor arms its one
//! deadline by secret (re-arming replaces it); when it fires, the scheduler looks the
//! actor up by registry name and casts `Timer`. A deadline armed by an incarnation that
//! has since crashed therefore reaches the new incarnation, whose state machine ignores
//! early or stale timers (it re-arms), so nothing is lost and nothing leaks.
//!
//! A secret whose policy has a `verify_interval` has a second deadline, of its own kind
//! ([`TimerKind::Verify`]), so checking the target never moves the rotation deadline.
//!
//! Most secrets have no actor at all (they hibernate, see [`super::rotation`]): their
//! deadlines sit here alone. When one fires and no actor answers to the secret's name, the
//! scheduler wakes it through the [`RotationContext`] ([`RotationContext::wake`]) and then
//! sends the message. A third kind, [`TimerKind::Hibernate`], tells a live actor that it
//! has been idle long enough to stop; it never wakes one.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use chrono::{DateTime, Utc};
use ractor::ActorRef;
use tokio::sync::Notify;

use super::rotation::{self, RotationContext, RotationMsg};
use crate::clock::Clock;
use crate::domain::SecretRef;

/// Which of a secret's deadlines: each secret has at most one of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// The state machine's one timer (next due, grace expiry, retry): fires `Timer`.
    Rotation,
    /// The next check of the current version against the target: fires `Verify`.
    Verify,
    /// The actor has been idle for `hibernate_after`: fires `Hibernate` at a live actor
    /// only (a hibernated secret has nothing to stop).
    Hibernate,
}

#[derive(Default)]
struct Deadlines {
    /// Ordered by time, then secret, so the first entry is the next to fire.
    queue: BTreeSet<(DateTime<Utc>, SecretRef, TimerKind)>,
    /// The one armed deadline of each secret and kind, to remove it when re-armed.
    by_secret: HashMap<(SecretRef, TimerKind), DateTime<Utc>>,
}

/// The shared timer. Cheap to clone through an `Arc`.
pub struct Scheduler {
    // std Mutex: held only for map updates, never across an await.
    deadlines: Mutex<Deadlines>,
    /// Wakes the timer task when an earlier deadline is armed.
    wake: Arc<Notify>,
    clock: Clock,
    namespace: String,
    /// Starts the actor of a secret whose deadline fired while it hibernates. Weak: the
    /// context owns this scheduler.
    waker: OnceLock<Weak<RotationContext>>,
}

impl Scheduler {
    /// Creates the scheduler and spawns its task, which ends when the last `Arc` is
    /// dropped.
    pub fn start(clock: Clock, namespace: String) -> Arc<Scheduler> {
        let s = Arc::new(Scheduler {
            deadlines: Mutex::new(Deadlines::default()),
            wake: Arc::new(Notify::new()),
            clock,
            namespace,
            waker: OnceLock::new(),
        });
        let weak = Arc::downgrade(&s);
        let notify = s.wake.clone();
        tokio::spawn(async move {
            loop {
                let Some(s) = weak.upgrade() else { return };
                let next = s.fire_due();
                let delay = next.map(|at| s.clock.delay_until(at));
                // A wake-up sent before this point is kept as a permit, so none is lost.
                let wake = notify.notified();
                // Do not keep the scheduler alive while sleeping.
                drop(s);
                match delay {
                    Some(d) => {
                        tokio::select! {
                            _ = tokio::time::sleep(d) => {}
                            _ = wake => {}
                        }
                    }
                    None => wake.await,
                }
            }
        });
        s
    }

    /// Lets a fired deadline wake a hibernating secret's actor (set once, by the tree).
    pub fn set_waker(&self, context: Weak<RotationContext>) {
        let _ = self.waker.set(context);
    }

    /// When `secret`'s deadline of `kind` is armed, if it is.
    pub fn armed(&self, secret: &SecretRef, kind: TimerKind) -> Option<DateTime<Utc>> {
        let d = self.deadlines.lock().ok()?;
        d.by_secret.get(&(secret.clone(), kind)).copied()
    }

    /// Arms `secret`'s rotation deadline at `at`, replacing any armed one.
    pub fn arm(&self, secret: &SecretRef, at: DateTime<Utc>) {
        self.arm_kind(secret, TimerKind::Rotation, at);
    }

    /// Arms `secret`'s deadline of `kind` at `at`, replacing any armed one of that kind.
    pub fn arm_kind(&self, secret: &SecretRef, kind: TimerKind, at: DateTime<Utc>) {
        let earliest = {
            let Ok(mut d) = self.deadlines.lock() else {
                return;
            };
            if let Some(old) = d.by_secret.insert((secret.clone(), kind), at) {
                d.queue.remove(&(old, secret.clone(), kind));
            }
            d.queue.insert((at, secret.clone(), kind));
            d.queue
                .first()
                .is_some_and(|(first, s, k)| *first == at && s == secret && *k == kind)
        };
        if earliest {
            self.wake.notify_one();
        }
    }

    /// Disarms `secret`'s rotation deadline.
    pub fn cancel(&self, secret: &SecretRef) {
        self.cancel_kind(secret, TimerKind::Rotation);
    }

    /// Disarms `secret`'s deadline of `kind`.
    pub fn cancel_kind(&self, secret: &SecretRef, kind: TimerKind) {
        if let Ok(mut d) = self.deadlines.lock()
            && let Some(old) = d.by_secret.remove(&(secret.clone(), kind))
        {
            d.queue.remove(&(old, secret.clone(), kind));
        }
    }

    /// Number of armed deadlines.
    pub fn len(&self) -> usize {
        self.deadlines.lock().map(|d| d.queue.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends `Timer` to every actor whose deadline has passed; returns the next deadline.
    fn fire_due(&self) -> Option<DateTime<Utc>> {
        let now = self.clock.now();
        let mut due = Vec::new();
        let next = {
            let Ok(mut d) = self.deadlines.lock() else {
                return None;
            };
            while let Some((at, _, _)) = d.queue.first() {
                if *at > now {
                    break;
                }
                if let Some((_, secret, kind)) = d.queue.pop_first() {
                    d.by_secret.remove(&(secret.clone(), kind));
                    due.push((secret, kind));
                }
            }
            d.queue.first().map(|(at, _, _)| *at)
        };
        for (secret, kind) in due {
            let message = || match kind {
                TimerKind::Rotation => RotationMsg::Timer,
                TimerKind::Verify => RotationMsg::Verify,
                TimerKind::Hibernate => RotationMsg::Hibernate,
            };
            let name = rotation::actor_name(&self.namespace, &secret);
            match ractor::registry::where_is(name) {
                Some(cell) => {
                    let actor: ActorRef<RotationMsg> = cell.into();
                    let _ = actor.cast(message());
                }
                // Gone already: nothing to stop.
                None if kind == TimerKind::Hibernate => {}
                None => match self.waker.get().and_then(Weak::upgrade) {
                    // Hibernating (or restarting): start it, then deliver. A restarting
                    // one answers the wake once it is back; its journal re-arms the rest.
                    Some(context) => {
                        let msg = message();
                        tokio::spawn(async move {
                            match context.wake(&secret).await {
                                Ok(actor) => {
                                    let _ = actor.cast(msg);
                                }
                                Err(e) => {
                                    tracing::debug!(%secret, error = %e, "timer fired while the actor cannot start")
                                }
                            }
                        });
                    }
                    None => tracing::debug!(%secret, "timer fired while the actor restarts"),
                },
            }
        }
        next
    }
}

impl Drop for Scheduler {
    /// Wakes the timer task so that it sees the scheduler gone and ends: a task waiting
    /// with no deadline armed would otherwise wait for ever (one leaked task per stopped
    /// tree, e.g. per lost leader term).
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timer task ends with the scheduler, whether or not a deadline is armed.
    #[tokio::test(flavor = "current_thread")]
    async fn the_timer_task_ends_when_the_scheduler_is_dropped() {
        let metrics = tokio::runtime::Handle::current().metrics();
        for armed in [false, true] {
            let before = metrics.num_alive_tasks();
            let s = Scheduler::start(Clock::System, "sched-test-".into());
            if armed {
                let secret = SecretRef::new("t1", "k1").unwrap();
                s.arm(&secret, Utc::now() + chrono::TimeDelta::days(1));
            }
            tokio::task::yield_now().await;
            assert_eq!(metrics.num_alive_tasks(), before + 1, "armed: {armed}");
            drop(s);
            let mut ended = false;
            for _ in 0..100 {
                tokio::task::yield_now().await;
                if metrics.num_alive_tasks() == before {
                    ended = true;
                    break;
                }
            }
            assert!(
                ended,
                "the timer task outlived its scheduler (armed: {armed})"
            );
        }
    }
}
