//! High availability: which replica leads.
//!
//! Several rotor replicas share one Vault store; one of them, the leader, holds a lease
//! record in that store and is the only one that runs rotation actors, timers, view
//! writers, jobs and the reload budget. The others (followers) serve reads from the store
//! and forward every write to the leader.
//!
//! [`Leadership`] is what the rest of rotor sees of the election: who leads now (id, URL,
//! term) as a `tokio::sync::watch` value, and whether this replica is the leader. Without
//! `[ha]` a process is always its own leader ([`Leadership::single`]).
//!
//! - `lease.rs`: the election ([`Election`]): the lease record, renewals, take-overs, and
//!   this replica's [`Role`] (leading with a [`Fence`], or following).
//! - `fence.rs`: [`Fence`] (a term and its deadline on the monotonic clock) and
//!   [`FencedStore`], the store a leader's actor tree writes through (self-fencing before
//!   every write, the term on every commit).
//! - `admin.rs`: [`HaAdmin`], the API backend that follows the role, and the follower
//!   backend's constructor.
//!
//! **Invariant:** [`Leadership`] decides nothing by itself; the election (a lease in the
//! store) publishes into it, and everything else only reads it. Nothing here knows actors:
//! `main` starts and stops the leader's tree on the election's [`Role`].

pub mod admin;
pub mod fence;
pub mod lease;

pub use admin::HaAdmin;
pub use fence::{Fence, FencedStore};
pub use lease::{Election, ElectionSettings, Role};

pub mod follower;

use tokio::sync::watch;

/// Who leads, as this replica last learned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The id of the replica that holds a valid lease, if any does.
    pub leader: Option<String>,
    /// Where that replica's API answers (its advertised URL).
    pub leader_url: Option<String>,
    /// The lease's term: grows by one every time the lease changes holder.
    pub term: u64,
}

impl LeaderInfo {
    /// Nobody leads (yet, or any more).
    pub fn none(term: u64) -> Self {
        LeaderInfo {
            leader: None,
            leader_url: None,
            term,
        }
    }
}

/// This replica's view of the election. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Leadership {
    self_id: String,
    rx: watch::Receiver<LeaderInfo>,
}

impl Leadership {
    /// A process without `[ha]`: it is the leader, for ever, at term 0.
    pub fn single(self_id: impl Into<String>) -> Self {
        let self_id = self_id.into();
        let (tx, rx) = watch::channel(LeaderInfo {
            leader: Some(self_id.clone()),
            leader_url: None,
            term: 0,
        });
        // Nobody will ever change it: the receiver keeps the last value.
        drop(tx);
        Leadership { self_id, rx }
    }

    /// A leadership the election drives through the returned sender. Starts with no leader.
    pub fn channel(self_id: impl Into<String>) -> (watch::Sender<LeaderInfo>, Self) {
        let (tx, rx) = watch::channel(LeaderInfo::none(0));
        (
            tx,
            Leadership {
                self_id: self_id.into(),
                rx,
            },
        )
    }

    /// This replica's id.
    pub fn self_id(&self) -> &str {
        &self.self_id
    }

    /// Who leads now, as last published.
    pub fn current(&self) -> LeaderInfo {
        self.rx.borrow().clone()
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        self.rx.borrow().leader.as_deref() == Some(self.self_id.as_str())
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<LeaderInfo> {
        self.rx.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_process_always_leads() {
        let l = Leadership::single("a");
        assert!(l.is_leader());
        assert_eq!(l.current().term, 0);
        assert_eq!(l.self_id(), "a");
    }

    #[test]
    fn a_channel_starts_leaderless_and_follows_its_sender() {
        let (tx, l) = Leadership::channel("a");
        assert!(!l.is_leader());
        tx.send_replace(LeaderInfo {
            leader: Some("b".into()),
            leader_url: Some("http://b:8080".into()),
            term: 3,
        });
        assert!(!l.is_leader());
        assert_eq!(l.current().leader_url.as_deref(), Some("http://b:8080"));
        tx.send_replace(LeaderInfo {
            leader: Some("a".into()),
            leader_url: None,
            term: 4,
        });
        assert!(l.is_leader());
    }
}
