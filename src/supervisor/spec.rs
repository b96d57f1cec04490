//! Child specifications and restart policy: what a supervisor starts, when it restarts a child
//! ([`Restart`]), how long it waits between restarts ([`Backoff`]) and when it gives up
//! ([`Intensity`]).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, SpawnErr};

use super::actor::{Exit, Supervisor, SupervisorArgs};
use crate::backoff::{ExponentialBackoff, InvalidBackoff};

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
    pub(super) fn should_restart(self, exit: &Exit) -> bool {
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
    /// [`super::start_child`] to the previous incarnation are not carried over, as in OTP.
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
    /// Delay before each consecutive restart: `min` before the first, doubled for each further
    /// one, capped at `max`, without jitter (a supervisor restarts one child, nothing to spread).
    /// [`ExponentialBackoff::NONE`] restarts immediately every time, as plain OTP does.
    pub delays: ExponentialBackoff,
    /// A child that stayed up this long is considered healthy: its next restart starts again
    /// from the first delay.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Backoff {
    /// Immediate restarts (plain OTP).
    pub const NONE: Self = Self {
        delays: ExponentialBackoff::NONE,
        reset_after: Duration::ZERO,
    };

    /// 50 ms doubling up to 10 s; healthy after 30 s up.
    const DEFAULT: Self = match Self::new(
        Duration::from_millis(50),
        Duration::from_secs(10),
        Duration::from_secs(30),
    ) {
        Ok(backoff) => backoff,
        Err(_) => panic!("the default restart backoff is valid"),
    };

    /// Restarts after `initial`, doubling up to `max`; refused when `initial > max`.
    pub const fn new(
        initial: Duration,
        max: Duration,
        reset_after: Duration,
    ) -> Result<Self, InvalidBackoff> {
        match ExponentialBackoff::new(initial, max, 0.0) {
            Ok(delays) => Ok(Self {
                delays,
                reset_after,
            }),
            Err(e) => Err(e),
        }
    }

    /// The delay before consecutive restart number `attempt` (1-based):
    /// `min(initial * 2^(attempt - 1), max)`.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delays.delay(attempt, 0.0)
    }

    /// The sum of the first `attempts` delays: how long a child that fails on every start takes
    /// to be restarted that many times.
    pub fn total_delay(&self, attempts: u32) -> Duration {
        self.delays.total_delay(attempts)
    }
}
