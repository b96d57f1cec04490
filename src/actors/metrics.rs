//! The metrics actor: owns encoding of the registry. Gauges that describe the whole fleet
//! (secrets managed, stuck, in grace, overdue) are refreshed from the status board at
//! scrape time, so no actor has to keep a shared count right across its own crashes.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::metrics::Metrics;
use crate::status::{SecretStatus, StatusBoard};

/// Registry name of the metrics actor.
pub const NAME: &str = "rotor.metrics";

pub enum MetricsMsg {
    /// The text exposition of every metric.
    Encode(RpcReplyPort<Result<String, String>>),
}

pub struct MetricsActor;

pub struct MetricsState {
    metrics: Metrics,
    board: Arc<StatusBoard>,
}

impl Actor for MetricsActor {
    type Msg = MetricsMsg;
    type State = MetricsState;
    type Arguments = (Metrics, Arc<StatusBoard>);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (metrics, board): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(MetricsState { metrics, board })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MetricsMsg::Encode(reply) => {
                state.refresh();
                let _ = reply.send(state.metrics.encode().map_err(|e| e.to_string()));
            }
        }
        Ok(())
    }
}

impl MetricsState {
    fn refresh(&self) {
        refresh(&self.metrics, &self.board, Utc::now());
    }
}

/// Sets the fleet gauges (managed, stuck, failing, in grace, overdue, freshness) from the
/// status board in one pass.
pub fn refresh(m: &Metrics, board: &StatusBoard, now: DateTime<Utc>) {
    let slack = TimeDelta::minutes(1);
    let mut managed = 0i64;
    let mut stuck = 0i64;
    let mut grace = 0i64;
    let mut overdue = 0i64;
    let mut next_due: Option<DateTime<Utc>> = None;
    let mut next_expiry: Option<DateTime<Utc>> = None;
    let mut last: Option<DateTime<Utc>> = None;
    let mut oldest: Option<DateTime<Utc>> = None;
    let min = |a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>| match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    board.for_each(|_, s: &SecretStatus| {
        managed += 1;
        stuck += i64::from(s.phase == "stuck");
        grace += i64::from(s.phase == "grace");
        overdue += i64::from(s.next_due.is_some_and(|d| d + slack < now));
        next_due = min(next_due, s.next_due);
        next_expiry = min(next_expiry, s.grace_expires_at);
        oldest = min(oldest, s.last_rotated_at);
        last = match (last, s.last_rotated_at) {
            (Some(x), Some(y)) => Some(x.max(y)),
            (x, y) => x.or(y),
        };
    });
    let ts = |t: Option<DateTime<Utc>>| t.map_or(0, |t| t.timestamp());
    m.secrets_managed.set(managed);
    m.secrets_stuck.set(stuck);
    m.secrets_in_grace.set(grace);
    m.secrets_overdue.set(overdue);
    m.next_rotation_timestamp_seconds.set(ts(next_due));
    m.next_grace_expiry_timestamp_seconds.set(ts(next_expiry));
    m.last_rotation_timestamp_seconds.set(ts(last));
    m.oldest_current_age_seconds
        .set(oldest.map_or(0, |t| (now - t).num_seconds().max(0)));
}
