//! The notifier actor: receives every lifecycle event and delivers it. For now its one
//! channel is the log (structured, one line per event); webhook channels come later.
//!
//! Senders look it up by name for each event ([`send`]) instead of keeping its
//! `ActorRef`, so a restarted notifier is found again.

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::domain::{RotationId, SecretRef};
use crate::machine::Notice;
use crate::metrics::{KindLabels, Metrics};

/// Registry name of the notifier (after the tree's namespace).
pub const NAME: &str = "rotor.notifier";

pub enum NotifierMsg {
    Event {
        secret: SecretRef,
        rotation: RotationId,
        notice: Notice,
        at: DateTime<Utc>,
    },
    /// A volume watcher event (`secret-changed`, `reload-required`, ...): the mount, the
    /// visible file name and a detail, never file content.
    Watcher {
        mount: String,
        kind: &'static str,
        file: Option<String>,
        detail: Option<String>,
        at: DateTime<Utc>,
    },
}

/// Sends `msg` to the notifier if it is running. While it restarts, the event is logged
/// here instead, so it is never silently lost.
pub fn send(namespace: &str, msg: NotifierMsg) {
    match ractor::registry::where_is(format!("{namespace}{NAME}")) {
        Some(cell) => {
            let actor: ActorRef<NotifierMsg> = cell.into();
            if let Err(e) = actor.cast(msg) {
                tracing::warn!(error = %e, "notifier unavailable; event not delivered");
            }
        }
        None => match msg {
            NotifierMsg::Event { secret, notice, .. } => {
                tracing::warn!(secret = %secret, event = notice.kind(), "notifier not running; event logged here only");
            }
            NotifierMsg::Watcher {
                mount, kind, file, ..
            } => {
                tracing::warn!(%mount, event = kind, file, "notifier not running; event logged here only");
            }
        },
    }
}

pub struct Notifier;

pub struct NotifierState {
    metrics: Metrics,
}

impl Actor for Notifier {
    type Msg = NotifierMsg;
    type State = NotifierState;
    type Arguments = Metrics;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        metrics: Metrics,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(NotifierState { metrics })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (secret, rotation, notice, at) = match msg {
            NotifierMsg::Event {
                secret,
                rotation,
                notice,
                at,
            } => (secret, rotation, notice, at),
            NotifierMsg::Watcher {
                mount,
                kind,
                file,
                detail,
                at,
            } => {
                state
                    .metrics
                    .notifications_total
                    .get_or_create(&KindLabels {
                        kind: kind.to_owned(),
                    })
                    .inc();
                tracing::info!(%mount, event = kind, file, detail, %at, "watcher event");
                return Ok(());
            }
        };
        state
            .metrics
            .notifications_total
            .get_or_create(&KindLabels {
                kind: notice.kind().to_owned(),
            })
            .inc();
        let details = serde_json::to_string(&notice).unwrap_or_default();
        match notice {
            Notice::Failed { .. } | Notice::Stuck { .. } | Notice::GraceExtended { .. } => {
                tracing::warn!(tenant = %secret.tenant, key = %secret.key, %rotation, event = notice.kind(), %at, %details, "rotation event")
            }
            _ => {
                tracing::info!(tenant = %secret.tenant, key = %secret.key, %rotation, event = notice.kind(), %at, %details, "rotation event")
            }
        }
        Ok(())
    }
}
