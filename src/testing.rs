//! Helpers for tests (the crate's own unit tests, and with the `test-util` feature the
//! integration tests and benches): the one way to wait for something in a test, polling a
//! check until it holds or a deadline passes, never a fixed sleep that must be long enough.
//! [`eventually`] in async tests, on real or on paused tokio time; [`eventually_blocking`]
//! where no runtime is at hand.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often [`eventually`] and [`eventually_blocking`] look again.
pub const POLL: Duration = Duration::from_millis(10);

/// What a check answers: `bool` (whether it holds yet) or `Option<T>` (the value, once it
/// is there).
pub trait Ready {
    type Value;
    fn ready(self) -> Option<Self::Value>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Option<T> {
        self
    }
}

/// Polls `check` every [`POLL`] until it holds and returns what it found; panics with
/// "timed out waiting for `what`" once `limit` has passed. `what` is formatted only then, so
/// it can show the state at the timeout (`std::fmt::from_fn` reading a log, say).
pub async fn eventually<R: Ready>(
    limit: Duration,
    what: impl Display,
    check: impl AsyncFnMut() -> R,
) -> R::Value {
    eventually_every(limit, POLL, what, check).await
}

/// [`eventually`], polling every `every` (for checks that are expensive to ask often).
///
/// The limit must pass on tokio's clock and on the wall clock before the wait fails, so it
/// means the same on real time and on paused time (`start_paused = true`) without turning
/// either kind of wait into the other. On paused time the pauses between polls are tokio
/// sleeps, which advance tokio's clock at once: a wait for a timer costs no real time, and
/// tokio's clock stops at `limit` (plus one poll), so something that should happen within
/// `limit` of tokio time still fails the test when it does not. From there the pauses are
/// real ones on a blocking thread, during which tokio does not advance its paused clock: a
/// check that waits for real work (another thread, a socket, a child process) still gets
/// `limit` of real time instead of failing at once.
pub async fn eventually_every<R: Ready>(
    limit: Duration,
    every: Duration,
    what: impl Display,
    mut check: impl AsyncFnMut() -> R,
) -> R::Value {
    let tokio_deadline = tokio::time::Instant::now() + limit;
    let wall_deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await.ready() {
            return value;
        }
        if tokio::time::Instant::now() < tokio_deadline {
            tokio::time::sleep(every).await;
        } else if Instant::now() < wall_deadline {
            tokio::task::spawn_blocking(move || std::thread::sleep(every))
                .await
                .expect("a blocking sleep");
        } else {
            panic!("timed out waiting for {what}");
        }
    }
}

/// [`eventually`] for code that runs outside a tokio runtime: the pauses are thread sleeps.
pub fn eventually_blocking<R: Ready>(
    limit: Duration,
    what: impl Display,
    mut check: impl FnMut() -> R,
) -> R::Value {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().ready() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// On paused time a wait for a timer costs no real time.
    #[tokio::test(start_paused = true)]
    async fn a_timer_on_paused_time_is_waited_for_in_tokio_time() {
        let began = Instant::now();
        let due = tokio::time::Instant::now() + Duration::from_secs(60);
        eventually(Duration::from_secs(120), "the timer", async || {
            tokio::time::Instant::now() >= due
        })
        .await;
        assert!(began.elapsed() < Duration::from_secs(5));
    }

    /// On paused time a wait for another thread still gets real time.
    #[tokio::test(start_paused = true)]
    async fn work_on_another_thread_is_waited_for_in_real_time_on_paused_time() {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            flag.store(true, Ordering::SeqCst);
        });
        eventually(Duration::from_secs(5), "the thread", async || {
            done.load(Ordering::SeqCst)
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out waiting for what never comes")]
    async fn a_check_that_never_holds_fails_at_the_limit() {
        eventually(Duration::from_millis(50), "what never comes", async || {
            false
        })
        .await;
    }
}
