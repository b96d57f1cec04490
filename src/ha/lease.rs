//! The election: one lease record in the shared store, every change a check-and-set.
//!
//! The record (`ha/leader`, through the store's records API) holds the holder's id and
//! URL, a term that only grows, when it was last renewed (wall clock, for people; no
//! replica decides anything on it) and the lease duration. rotor builds no consensus of
//! its own: the store's check-and-set on the record's revision is the arbiter.
//!
//! - The leader renews every third of the duration ([`ElectionSettings::renew_every`]),
//!   a check-and-set on the revision it last wrote. Each success extends its [`Fence`] to
//!   the *start* of that renewal plus the duration minus a safety margin
//!   ([`ElectionSettings::safety_margin`]), on its own monotonic clock. The moment the
//!   fence closes it stops leading, whether or not the store could be reached; a lost
//!   check-and-set (someone else wrote the record) ends its leadership at once.
//! - A follower reads the record every sixth of the duration and takes the lease only
//!   after seeing the same revision for a full duration on its own monotonic clock (the
//!   replicas' clocks are never compared), with a check-and-set that bumps the term. A
//!   released record (no holder: its leader stopped cleanly) is taken at once.
//!
//! Why that is safe: a follower's duration starts when it first *saw* a revision, which
//! is after the renewal that wrote it started, so the follower takes over no earlier
//! than that start plus the duration, while the leader stopped at that start plus the
//! duration minus the margin. The margin covers the clocks' rate differences and a write
//! checked just before the deadline that lands after it; the store's term check
//! ([`crate::store::Store::commit_at_term`]) catches what still gets through.
//!
//! Failover: a leader killed just after a renewal is seen within a sixth of the duration,
//! declared gone a duration later, replaced at the next read: within the duration plus
//! one renew interval of its last renewal.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::fence::Fence;
use super::{LeaderInfo, Leadership};
use crate::store::{Rev, Store, StoreError};

/// The records namespace and id of the lease.
pub const LEASE_NAMESPACE: &str = "ha";
pub const LEASE_ID: &str = "leader";

/// The lease record as stored (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    /// The replica holding the lease; `None` once it released it (stopped cleanly).
    pub holder: Option<String>,
    pub holder_url: Option<String>,
    /// Grows by one at every change of holder; every commit of that leader carries it.
    pub term: u64,
    /// Wall-clock time of the last renewal: for people reading the record. Replicas'
    /// clocks differ, so no decision uses it.
    pub renewed_at: DateTime<Utc>,
    pub duration_ms: u64,
}

/// What the election needs to know about this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionSettings {
    /// This replica's id (`[ha] id`, else the hostname).
    pub id: String,
    /// Where the other replicas reach this one's API (`[ha] advertise_url`).
    pub url: String,
    /// `[ha] lease_duration`.
    pub lease_duration: Duration,
}

impl ElectionSettings {
    /// How often the leader renews: a third of the duration, so two renewals in a row
    /// may fail before the lease runs out.
    pub fn renew_every(&self) -> Duration {
        self.lease_duration / 3
    }

    /// How often a follower reads the record (and the leader retries a failed renewal).
    pub fn poll_every(&self) -> Duration {
        self.lease_duration / 6
    }

    /// How long before the end of its lease, by its own clock, the leader stops writing:
    /// a fifth of the duration.
    pub fn safety_margin(&self) -> Duration {
        self.lease_duration / 5
    }

    /// The fence deadline of a renewal (or take-over) that started at `started`.
    fn valid_until(&self, started: Instant) -> Instant {
        started + self.lease_duration - self.safety_margin()
    }
}

/// This replica's part, as the election last decided it.
#[derive(Debug, Clone)]
pub enum Role {
    Following,
    /// Leading at the fence's term, for as long as the fence is valid.
    Leading(Fence),
}

/// A revision of the record as a follower saw it, and since when (its own clock).
#[derive(Debug, Clone)]
struct Seen {
    rev: Option<Rev>,
    record: Option<LeaseRecord>,
    since: Instant,
}

/// What a follower does after reading the record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FollowerStep {
    /// Take the lease at this term, check-and-set on `expected`.
    Take { term: u64, expected: Option<Rev> },
    /// Someone else leads (or nobody, until the record expires): publish this.
    Follow(LeaderInfo),
}

/// The follower's decision, pure: `seen` is updated with what was `read` at `now`.
fn follower_step(
    self_id: &str,
    seen: &mut Option<Seen>,
    read: Option<(LeaseRecord, Rev)>,
    now: Instant,
    duration: Duration,
) -> FollowerStep {
    let (record, rev) = match read {
        Some((record, rev)) => (Some(record), Some(rev)),
        None => (None, None),
    };
    if seen.as_ref().is_none_or(|s| s.rev != rev) {
        *seen = Some(Seen {
            rev,
            record: record.clone(),
            since: now,
        });
    }
    let since = seen.as_ref().map_or(now, |s| s.since);
    let Some(record) = record else {
        // No lease was ever written: the first replica to write one leads.
        return FollowerStep::Take {
            term: 1,
            expected: None,
        };
    };
    let next = FollowerStep::Take {
        term: record.term + 1,
        expected: rev,
    };
    match &record.holder {
        None => next,
        Some(_) if now.duration_since(since) >= duration => next,
        // A record naming this id is an earlier incarnation of this replica, not this one:
        // nobody that this process knows of leads until it expires.
        Some(holder) if holder == self_id => FollowerStep::Follow(LeaderInfo::none(record.term)),
        Some(holder) => FollowerStep::Follow(LeaderInfo {
            leader: Some(holder.clone()),
            leader_url: record.holder_url.clone(),
            term: record.term,
        }),
    }
}

/// The running election: its leadership value, its roles, and how to stop it.
pub struct Election {
    leadership: Leadership,
    roles: watch::Receiver<Role>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Election {
    /// Starts the election in a task of the caller's runtime: `store` is the shared store,
    /// unfenced (the lease record is what decides the fence).
    pub fn start(store: Arc<dyn Store>, settings: ElectionSettings) -> Election {
        let (leader_tx, leadership) = Leadership::channel(settings.id.clone());
        let (role_tx, roles) = watch::channel(Role::Following);
        let (stop, stopped) = oneshot::channel();
        let runner = Runner {
            store,
            settings,
            leader_tx,
            role_tx,
        };
        // The one task of the election; it ends when `stop` is called (or the handle is
        // dropped), so nothing outlives the election.
        let task = tokio::spawn(runner.run(stopped));
        Election {
            leadership,
            roles,
            stop: Some(stop),
            task,
        }
    }

    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Every change of this replica's role.
    pub fn roles(&self) -> watch::Receiver<Role> {
        self.roles.clone()
    }

    /// Stops the election. A leader revokes its fence, then releases the lease (the
    /// record keeps its term, without a holder) so that a follower takes over at once
    /// instead of after a duration. Call it once the actor tree has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Runner {
    store: Arc<dyn Store>,
    settings: ElectionSettings,
    leader_tx: watch::Sender<LeaderInfo>,
    role_tx: watch::Sender<Role>,
}

/// The leader's own state.
struct Leading {
    term: u64,
    rev: Rev,
    fence: Fence,
    /// When the next renewal is due.
    next_renew: Instant,
}

impl Runner {
    async fn run(self, mut stopped: oneshot::Receiver<()>) {
        let mut seen: Option<Seen> = None;
        let mut leading: Option<Leading> = None;
        loop {
            if let Some(lead) = leading.as_mut() {
                let still = tokio::select! {
                    still = self.lead(lead) => Some(still),
                    _ = &mut stopped => None,
                };
                match still {
                    Some(true) => {}
                    Some(false) => leading = None,
                    None => {
                        self.release(lead).await;
                        return;
                    }
                }
            } else {
                // A read and a take-over are seen through before a stop is looked at: a
                // take-over that wrote the record must be known, so that a stop releases it.
                leading = self.follow(&mut seen).await;
                if leading.is_none() {
                    tokio::select! {
                        _ = tokio::time::sleep(self.settings.poll_every()) => {}
                        _ = &mut stopped => return,
                    }
                }
            }
        }
    }

    /// Stepping down cleanly: nothing more is written under this term, then the record
    /// loses its holder (same term), which a follower takes at once.
    async fn release(&self, lead: &Leading) {
        lead.fence.revoke();
        self.leader_tx.send_replace(LeaderInfo::none(lead.term));
        self.role_tx.send_replace(Role::Following);
        let bytes = self.lease_record(lead.term, false);
        match self
            .store
            .record_put(LEASE_NAMESPACE, LEASE_ID, &bytes, Some(lead.rev))
            .await
        {
            Ok(_) => tracing::info!(term = lead.term, "released the leader lease"),
            Err(e) => tracing::warn!(
                error = %e,
                term = lead.term,
                "cannot release the leader lease; another replica takes it when it expires"
            ),
        }
    }

    fn lease_record(&self, term: u64, holder: bool) -> Vec<u8> {
        let record = LeaseRecord {
            holder: holder.then(|| self.settings.id.clone()),
            holder_url: holder.then(|| self.settings.url.clone()),
            term,
            renewed_at: Utc::now(),
            duration_ms: u64::try_from(self.settings.lease_duration.as_millis())
                .unwrap_or(u64::MAX),
        };
        // A struct of strings and integers always serialises.
        serde_json::to_vec(&record).unwrap_or_default()
    }

    async fn read(&self) -> Result<Option<(LeaseRecord, Rev)>, StoreError> {
        let Some((bytes, rev)) = self.store.record_get(LEASE_NAMESPACE, LEASE_ID).await? else {
            return Ok(None);
        };
        match serde_json::from_slice::<LeaseRecord>(&bytes) {
            Ok(record) => Ok(Some((record, rev))),
            Err(e) => Err(StoreError::Backend(format!(
                "the lease record {LEASE_NAMESPACE}/{LEASE_ID} is not a lease: {e}"
            ))),
        }
    }

    /// One follower round: read, decide, maybe take over. Returns the leadership taken.
    async fn follow(&self, seen: &mut Option<Seen>) -> Option<Leading> {
        let read = match self.read().await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the leader lease; trying again");
                return None;
            }
        };
        let now = Instant::now();
        match follower_step(
            &self.settings.id,
            seen,
            read,
            now,
            self.settings.lease_duration,
        ) {
            FollowerStep::Follow(info) => {
                self.leader_tx.send_if_modified(|current| {
                    let changed = *current != info;
                    *current = info;
                    changed
                });
                None
            }
            FollowerStep::Take { term, expected } => {
                let previous = seen
                    .as_ref()
                    .and_then(|s| s.record.as_ref())
                    .map(|r| r.term);
                if self.leader_tx.borrow().leader.is_some() {
                    self.leader_tx.send_replace(LeaderInfo::none(term - 1));
                }
                let started = Instant::now();
                let put = self
                    .store
                    .record_put(
                        LEASE_NAMESPACE,
                        LEASE_ID,
                        &self.lease_record(term, true),
                        expected,
                    )
                    .await;
                match put {
                    Ok(rev) => {
                        let fence = Fence::new(term, self.settings.valid_until(started));
                        tracing::info!(
                            id = %self.settings.id,
                            term,
                            previous_term = previous,
                            "took the leader lease"
                        );
                        self.leader_tx.send_replace(LeaderInfo {
                            leader: Some(self.settings.id.clone()),
                            leader_url: Some(self.settings.url.clone()),
                            term,
                        });
                        self.role_tx.send_replace(Role::Leading(fence.clone()));
                        *seen = None;
                        Some(Leading {
                            term,
                            rev,
                            fence,
                            next_renew: started + self.settings.renew_every(),
                        })
                    }
                    Err(StoreError::Conflict { .. }) => {
                        // Another replica was faster: follow it from the next read.
                        *seen = None;
                        None
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, term, "cannot take the leader lease; trying again");
                        None
                    }
                }
            }
        }
    }

    /// The leader's next round: renew when due, stop leading when the fence closes or the
    /// lease was taken. Returns whether this replica still leads.
    async fn lead(&self, lead: &mut Leading) -> bool {
        let Some(deadline) = lead.fence.valid_until() else {
            return self.step_down(lead, "the lease fence was revoked");
        };
        tokio::select! {
            _ = tokio::time::sleep_until(lead.next_renew) => {}
            _ = tokio::time::sleep_until(deadline) => {
                return self.step_down(lead, "the lease ran out before a renewal succeeded");
            }
        }
        let started = Instant::now();
        let bytes = self.lease_record(lead.term, true);
        let put = self
            .store
            .record_put(LEASE_NAMESPACE, LEASE_ID, &bytes, Some(lead.rev));
        tokio::select! {
            result = put => match result {
                Ok(rev) => {
                    lead.rev = rev;
                    lead.next_renew = started + self.settings.renew_every();
                    lead.fence.extend(self.settings.valid_until(started));
                    if lead.fence.is_valid() {
                        true
                    } else {
                        self.step_down(lead, "a renewal succeeded after the lease ran out")
                    }
                }
                Err(StoreError::Conflict { .. }) => {
                    self.step_down(lead, "another replica took the lease")
                }
                Err(e) => {
                    tracing::warn!(error = %e, term = lead.term, "cannot renew the leader lease; trying again");
                    // Again a poll interval from now; the fence's deadline stays where the
                    // last successful renewal put it.
                    lead.next_renew = Instant::now() + self.settings.poll_every();
                    true
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                self.step_down(lead, "the lease ran out while a renewal was in flight")
            }
        }
    }

    fn step_down(&self, lead: &Leading, reason: &'static str) -> bool {
        lead.fence.revoke();
        tracing::warn!(id = %self.settings.id, term = lead.term, reason, "no longer the leader");
        self.leader_tx.send_replace(LeaderInfo::none(lead.term));
        self.role_tx.send_replace(Role::Following);
        false
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // However the task ends (stopped, aborted), nothing leads through it any more.
        if let Role::Leading(fence) = &*self.role_tx.borrow() {
            fence.revoke();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(3);

    fn record(holder: Option<&str>, term: u64) -> LeaseRecord {
        LeaseRecord {
            holder: holder.map(str::to_owned),
            holder_url: holder.map(|h| format!("http://{h}:8080")),
            term,
            renewed_at: Utc::now(),
            duration_ms: 3_000,
        }
    }

    #[test]
    fn the_settings_derive_renewal_poll_and_margin_from_the_duration() {
        let s = ElectionSettings {
            id: "a".into(),
            url: "http://a:8080".into(),
            lease_duration: Duration::from_secs(15),
        };
        assert_eq!(s.renew_every(), Duration::from_secs(5));
        assert_eq!(s.poll_every(), Duration::from_millis(2_500));
        assert_eq!(s.safety_margin(), Duration::from_secs(3));
    }

    #[test]
    fn nobody_ever_led_so_the_first_reader_takes_term_1() {
        let mut seen = None;
        let step = follower_step("a", &mut seen, None, Instant::now(), D);
        assert_eq!(
            step,
            FollowerStep::Take {
                term: 1,
                expected: None
            }
        );
    }

    #[test]
    fn a_held_lease_is_taken_only_after_a_full_duration_unchanged_on_the_own_clock() {
        let t0 = Instant::now();
        let mut seen = None;
        let held = || Some((record(Some("b"), 4), 17));
        let follow = FollowerStep::Follow(LeaderInfo {
            leader: Some("b".into()),
            leader_url: Some("http://b:8080".into()),
            term: 4,
        });
        assert_eq!(follower_step("a", &mut seen, held(), t0, D), follow);
        assert_eq!(
            follower_step("a", &mut seen, held(), t0 + D - Duration::from_millis(1), D),
            follow
        );
        // A renewal (new revision) starts the count again, whatever its wall-clock time.
        let renewed = Some((record(Some("b"), 4), 18));
        assert_eq!(
            follower_step("a", &mut seen, renewed.clone(), t0 + D, D),
            follow
        );
        assert_eq!(
            follower_step(
                "a",
                &mut seen,
                renewed.clone(),
                t0 + 2 * D - Duration::from_millis(1),
                D
            ),
            follow
        );
        assert_eq!(
            follower_step("a", &mut seen, renewed, t0 + 2 * D, D),
            FollowerStep::Take {
                term: 5,
                expected: Some(18)
            }
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once_with_a_higher_term() {
        let mut seen = None;
        assert_eq!(
            follower_step(
                "a",
                &mut seen,
                Some((record(None, 7), 30)),
                Instant::now(),
                D
            ),
            FollowerStep::Take {
                term: 8,
                expected: Some(30)
            }
        );
    }

    #[test]
    fn a_lease_naming_this_id_is_an_earlier_incarnation_not_this_process() {
        let t0 = Instant::now();
        let mut seen = None;
        let mine = || Some((record(Some("a"), 2), 5));
        assert_eq!(
            follower_step("a", &mut seen, mine(), t0, D),
            FollowerStep::Follow(LeaderInfo::none(2))
        );
        assert_eq!(
            follower_step("a", &mut seen, mine(), t0 + D, D),
            FollowerStep::Take {
                term: 3,
                expected: Some(5)
            }
        );
    }

    #[test]
    fn the_leader_stops_before_any_follower_may_take_over() {
        // The follower's count starts no earlier than the renewal's start (it saw the
        // revision that renewal wrote), so it takes over at `start + D` at the earliest;
        // the leader's fence closes a margin before that.
        let s = ElectionSettings {
            id: "a".into(),
            url: "http://a:8080".into(),
            lease_duration: D,
        };
        let start = Instant::now();
        let mut seen = None;
        let _ = follower_step("b", &mut seen, Some((record(Some("a"), 1), 2)), start, D);
        let take_at = start + D;
        assert!(matches!(
            follower_step("b", &mut seen, Some((record(Some("a"), 1), 2)), take_at, D),
            FollowerStep::Take { .. }
        ));
        assert!(s.valid_until(start) + s.safety_margin() <= take_at);
    }
}
