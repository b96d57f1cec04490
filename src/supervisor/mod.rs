//! An OTP-style one-for-one supervisor on ractor, used at every level of rotor's tree.
//!
//! ractor links a child to its parent and reports `ActorStarted`, `ActorFailed` and
//! `ActorTerminated` to the parent's `handle_supervisor_evt`, but restarts nothing: with the
//! default handler a failed child stays dead, and a secret whose actor died would silently stop
//! rotating. [`Supervisor`] implements the Erlang/OTP model on top (ractor-supervisor, the
//! nearest crate, has no mailbox drain, ordered shutdown or observer hook, which rotor needs):
//!
//! - **Restart types** ([`Restart`]): permanent children are always restarted, transient ones
//!   only after an abnormal exit (a panic, an `Err` from a handler, or a kill), temporary ones
//!   never. A child that is not restarted is removed from the table.
//! - **One-for-one**: only the child that exited is restarted; its siblings keep running.
//! - **Backoff** ([`Backoff`]): successive restarts of the same child wait exponentially longer
//!   ([`crate::backoff::ExponentialBackoff`], without jitter); the count resets once the child
//!   has stayed up for `reset_after`. The wait is a scheduled message owned by a [`TimerGuard`],
//!   so the supervisor keeps answering while it waits.
//! - **Intensity** ([`Intensity`]): more than `max_restarts` restarts (of all children together)
//!   within `within` and the supervisor gives up: it stops its remaining children in reverse start
//!   order and fails, which ractor reports to its own parent as `ActorFailed`. A parent supervisor
//!   then restarts it like any other child, or gives up in turn; the root's give-up reaches `main`
//!   through [`crate::actors::root`].
//! - **Shutdown**: stopping a supervisor (`stop`/`stop_and_wait`, not `kill`) stops its children
//!   in reverse start order, each within its [`ChildSpec::shutdown`] bound (draining the mailbox
//!   first when the spec says so), then kills stragglers. Killing a supervisor skips that: ractor
//!   then kills the children in no particular order.
//! - **Dynamic children**: [`start_child`] and [`terminate_child`] add and remove children of a
//!   running supervisor (OTP `start_child`, `terminate_child` + `delete_child`).
//! - **Observer** ([`Observer`]): every restart, removal and give-up is reported as a
//!   [`SupervisorEvent`], for metrics and logs.
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
//! # Parts
//!
//! - `spec.rs`: what to supervise and how: [`ChildSpec`], [`Restart`], [`Intensity`],
//!   [`Backoff`].
//! - `event.rs`: what a supervisor reports: [`SupervisorEvent`], [`GiveUp`],
//!   [`SupervisorError`], and the [`Observer`] hook.
//! - `actor.rs`: the [`Supervisor`] actor, its messages ([`SupervisorMsg`]) and its child table.
//! - `client.rs`: the calls other actors make, each with a timeout ([`start_child`],
//!   [`terminate_child`], [`lookup_child`], [`which_children`], [`shutdown`]).
//! - [`timer`]: [`TimerGuard`], a delayed self-message cancelled with the actor that armed it.
//! - [`task`]: [`AbortOnDrop`], a spawned task that ends with whoever holds it.
//!
//! # Example
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use rotor::supervisor::*;
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

mod actor;
mod client;
mod event;
mod spec;
pub mod task;
pub mod timer;

#[cfg(test)]
pub(crate) mod tests;

pub use actor::{
    ChildInfo, RestartDue, Supervisor, SupervisorArgs, SupervisorMsg, SupervisorState,
};
pub use client::{
    CALL_TIMEOUT, lookup_child, lookup_child_as, shutdown, start_child, terminate_child,
    which_children,
};
pub use event::{GiveUp, Observer, SupervisorError, SupervisorEvent, is_kill};
pub use spec::{Backoff, ChildSpec, Intensity, Restart, StartFn};
pub use task::AbortOnDrop;
pub use timer::TimerGuard;
