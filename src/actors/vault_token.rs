//! The Vault token-renewal actor: the one owner of the Vault store's token lifetime.
//!
//! It renews the token (`renew-self`) at two thirds of its lease; when renewal fails the
//! session logs in again (Kubernetes auth) or re-reads the token file (token auth, for a
//! token that Vault Agent rotates), see [`VaultSession::renew`]. A failed attempt is retried
//! after [`RETRY_AFTER`] (or sooner if the lease would run out first). A token that never
//! expires (TTL 0) needs no renewal and the actor idles. A permanent child of the root
//! supervisor when the store is `vault` ([`child_spec`]); the timer is a [`TimerGuard`], so
//! it dies with the actor.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SpawnErr};

use crate::store::vault::{TokenLease, VaultSession};
use crate::supervisor::{ChildSpec, Restart, TimerGuard};

/// Delay before another attempt after a failed renewal and re-login.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Messages of the renewal actor.
#[derive(Debug)]
pub enum TokenMsg {
    /// Renew now (sent by the timer; tests send it directly).
    Renew,
}

/// State: the session whose token is renewed and the pending timer.
pub struct TokenState {
    session: Arc<VaultSession>,
    lease: TokenLease,
    timer: TimerGuard,
}

/// The actor. Arguments: the session and the lease found at open.
pub struct TokenRenewer;

impl TokenRenewer {
    fn schedule(myself: &ActorRef<TokenMsg>, state: &mut TokenState, after: Option<Duration>) {
        match after {
            Some(delay) => state.timer.arm(delay, myself.clone(), || TokenMsg::Renew),
            None => state.timer.cancel(),
        }
    }
}

impl Actor for TokenRenewer {
    type Msg = TokenMsg;
    type State = TokenState;
    type Arguments = (Arc<VaultSession>, TokenLease);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (session, lease): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = TokenState {
            session,
            lease,
            timer: TimerGuard::new(),
        };
        // A restarted renewer's lease is the one found at open, possibly long stale: renew
        // at once, then follow the fresh lease. (At first start this costs one request.)
        let first = lease.renew_after().map(|_| Duration::ZERO);
        Self::schedule(&myself, &mut state, first);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TokenMsg::Renew => match state.session.renew().await {
                Ok(lease) => {
                    state.lease = lease;
                    tracing::debug!(ttl_secs = lease.ttl.as_secs(), "vault token renewed");
                    Self::schedule(&myself, state, lease.renew_after());
                }
                Err(e) => {
                    tracing::error!(error = %e, "vault token renewal and re-authentication failed; retrying");
                    let retry = state.lease.renew_after().map_or(RETRY_AFTER, |r| {
                        (r / 4).clamp(Duration::from_secs(1), RETRY_AFTER)
                    });
                    Self::schedule(&myself, state, Some(retry));
                }
            },
        }
        Ok(())
    }
}

/// The renewer as a permanent child of the root supervisor.
pub fn child_spec(session: Arc<VaultSession>, lease: TokenLease) -> ChildSpec {
    ChildSpec::actor(
        "vault-token",
        "vault_token",
        Restart::Permanent,
        None,
        move || (TokenRenewer, (session.clone(), lease)),
    )
}

/// Starts the renewal actor on its own (tests). `rotor run` supervises it instead, see
/// [`child_spec`].
pub async fn spawn(
    session: Arc<VaultSession>,
    lease: TokenLease,
) -> Result<ActorRef<TokenMsg>, SpawnErr> {
    let (actor, _handle) = Actor::spawn(None, TokenRenewer, (session, lease)).await?;
    Ok(actor)
}
