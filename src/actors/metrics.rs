//! The metrics actor: owns encoding of the registry. Gauges that describe the whole fleet
//! (secrets managed, stuck, in grace, overdue) are refreshed from the status board at
//! scrape time, so no actor has to keep a shared count right across its own crashes.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::metrics::Metrics;
use crate::status::StatusBoard;

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
        let snapshot = self.board.snapshot();
        let stuck = snapshot.iter().filter(|(_, s)| s.phase == "stuck").count();
        self.metrics.secrets_managed.set(snapshot.len() as i64);
        self.metrics.secrets_stuck.set(stuck as i64);
    }
}
