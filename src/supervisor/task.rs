//! A spawned task tied to the value that holds it.
//!
//! Dropping a tokio `JoinHandle` detaches the task: it keeps running, holding whatever it
//! captured (an `ActorRef`, a semaphore permit). An actor that spawns work (a rotation step, a
//! reload with its retries, a delayed message) keeps an [`AbortOnDrop`] in its state instead, so
//! when the actor stops, fails or panics, ractor drops the state and the task is aborted with
//! it: nothing outlives the incarnation that started it.

use std::future::Future;

use tokio::task::JoinHandle;

/// A spawned task that is aborted when this guard is dropped.
#[derive(Debug)]
pub struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    /// Spawns `task` on the current tokio runtime.
    pub fn spawn<F>(task: F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        Self(tokio::spawn(task))
    }

    /// Whether the task has ended (finished or aborted).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
