//! The calls other actors make to a supervisor. Each waits at most [`CALL_TIMEOUT`] for the
//! answer.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorRef, Message, RpcReplyPort};

use super::actor::{ChildInfo, SupervisorMsg, stop_timeout};
use super::event::SupervisorError;
use super::spec::ChildSpec;

/// How long the client calls ([`start_child`], [`lookup_child`], ...) wait for an answer. A
/// supervisor that has not answered in this time is wedged (or waiting on a child's shutdown).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

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
