//! The Vault view publisher: one actor per `[[publish]] type = "vault"` entry. Every
//! `interval` it reconciles the view with the store's current versions
//! ([`ViewWriter::sync`]: read the current labels, read the document, one check-and-set
//! write when they differ), first right after it starts, which repairs a view left stale
//! while rotor was down. A failed reconcile is logged at WARN (view and error, never a
//! value) and counted, and the next tick tries again; a lost check-and-set is retried at
//! once, a few times, since it only means someone else wrote in between.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::metrics::{Metrics, ViewFieldLabels, ViewLabels};
use crate::publish::config::VaultViewConfig;
use crate::publish::vault::{Synced, ViewError, ViewWriter};
use crate::store::Store;
use crate::supervisor::TimerGuard;

/// Reconciles in one tick when another writer keeps winning the check-and-set.
const CONFLICT_ATTEMPTS: u32 = 3;

/// The registry name of the publisher of a view in the tree `namespace`.
pub fn actor_name(namespace: &str, config: &VaultViewConfig) -> String {
    format!("{namespace}view:{}/{}", config.address, config.name())
}

pub enum ViewMsg {
    Tick,
}

pub struct ViewState {
    writer: ViewWriter,
    store: Arc<dyn Store>,
    metrics: Metrics,
    tick: TimerGuard,
}

pub struct ViewPublisherActor;

impl Actor for ViewPublisherActor {
    type Msg = ViewMsg;
    type State = ViewState;
    type Arguments = (Arc<VaultViewConfig>, Arc<dyn Store>, Metrics);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (config, store, metrics): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ViewState {
            writer: ViewWriter::new(config)?,
            store,
            metrics,
            tick: TimerGuard::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // The first reconcile is a message, not run here: a Vault that is slow to answer
        // must not hold up the tree's start.
        let _ = myself.cast(ViewMsg::Tick);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ViewMsg::Tick => {
                state.reconcile().await;
                let interval = state.writer.config().interval;
                state.tick.arm(interval, myself, || ViewMsg::Tick);
            }
        }
        Ok(())
    }
}

impl ViewState {
    async fn reconcile(&mut self) {
        let view = self.writer.config().name();
        for attempt in 1..=CONFLICT_ATTEMPTS {
            match self.writer.sync(&*self.store).await {
                Ok(Synced::Written {
                    kv_version,
                    versions,
                }) => {
                    self.count(&view, "written");
                    self.show(&view, &versions);
                    tracing::info!(view = %view, kv_version, versions = ?versions, "view updated to the current versions");
                    return;
                }
                Ok(Synced::Unchanged) => return,
                Ok(Synced::NotYetPromoted) => {
                    tracing::debug!(view = %view, "a secret of the view has no current version yet");
                    return;
                }
                Err(e) => {
                    self.count(&view, e.metric_label());
                    if matches!(e, ViewError::Conflict { .. }) && attempt < CONFLICT_ATTEMPTS {
                        tracing::info!(view = %view, error = %e, "reading the view again");
                        continue;
                    }
                    tracing::warn!(view = %view, error = %e, "cannot update the view; retrying at the next tick");
                    return;
                }
            }
        }
    }

    fn count(&self, view: &str, outcome: &str) {
        self.metrics
            .view_writes_total
            .get_or_create(&ViewLabels {
                view: view.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    fn show(&self, view: &str, versions: &std::collections::BTreeMap<String, u64>) {
        for (field, version) in versions {
            self.metrics
                .view_version
                .get_or_create(&ViewFieldLabels {
                    view: view.to_owned(),
                    field: field.clone(),
                })
                .set(i64::try_from(*version).unwrap_or(i64::MAX));
        }
    }
}
