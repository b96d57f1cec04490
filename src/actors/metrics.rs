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
        let now = Utc::now();
        let snapshot = self.board.snapshot();
        let m = &self.metrics;
        let count = |f: &dyn Fn(&SecretStatus) -> bool| {
            snapshot.iter().filter(|(_, s)| f(s)).count() as i64
        };
        m.secrets_managed.set(snapshot.len() as i64);
        m.secrets_stuck.set(count(&|s| s.phase == "stuck"));
        m.secrets_in_grace.set(count(&|s| s.phase == "grace"));
        let slack = TimeDelta::minutes(1);
        m.secrets_overdue
            .set(count(&|s| s.next_due.is_some_and(|d| d + slack < now)));
        let ts = |t: Option<DateTime<Utc>>| t.map_or(0, |t| t.timestamp());
        m.next_rotation_timestamp_seconds
            .set(ts(snapshot.iter().filter_map(|(_, s)| s.next_due).min()));
        m.next_grace_expiry_timestamp_seconds.set(ts(snapshot
            .iter()
            .filter_map(|(_, s)| s.grace_expires_at)
            .min()));
        m.last_rotation_timestamp_seconds.set(ts(snapshot
            .iter()
            .filter_map(|(_, s)| s.last_rotated_at)
            .max()));
        let oldest = snapshot.iter().filter_map(|(_, s)| s.last_rotated_at).min();
        m.oldest_current_age_seconds
            .set(oldest.map_or(0, |t| (now - t).num_seconds().max(0)));
    }
}
