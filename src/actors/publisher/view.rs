//! The view publisher: one actor per `[[publish]] type = "vault"` or `type = "aws"` entry,
//! the same actor for both ([`Writer`] is the one thing that differs). Every `interval` it
//! reconciles the view with the store's labelled versions (a Vault view,
//! [`ViewWriter::sync`]: read the current labels, read the document, one check-and-set
//! write when they differ; an AWS view, [`AwsViewWriter::sync`]: move the AWS stages to
//! rotor's current and previous), first right after it starts, which repairs a view left stale
//! while rotor was down. A failed reconcile is logged at WARN (view and error, never a
//! value) and counted, and the next tick tries again; a lost check-and-set is retried at
//! once, a few times, since it only means someone else wrote in between.
//!
//! After every reconcile that leaves the document showing the current versions (written, or
//! read and found unchanged) it tells the rotation actor of each secret it shows
//! ([`RotationMsg::ViewShows`]): the previous version of a secret expires only once every
//! view of it shows the new one. It reports at every tick, not only on a write, so a
//! restarted rotation actor learns again within one interval. A rotation actor casts
//! [`ViewMsg::Nudge`] right after it commits a promotion, rollback or expiry, so the view
//! follows at once instead of at the next tick.

use std::collections::BTreeMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::super::rotation::{self, RotationMsg};
use crate::domain::{SecretRef, VersionNo};
use crate::metrics::{Metrics, ViewFieldLabels, ViewLabels, ViewNameLabels};
use crate::publish::aws::{AwsEnv, AwsViewWriter};
use crate::publish::config::{ViewConfig, ViewField};
use crate::publish::vault::ViewWriter;
use crate::publish::view::{Synced, ViewError};
use crate::store::Store;
use crate::supervisor::TimerGuard;

/// Reconciles in one tick when another writer keeps winning the check-and-set.
const CONFLICT_ATTEMPTS: u32 = 3;

/// The registry name of the publisher of a view in the tree `namespace`.
pub fn actor_name(namespace: &str, config: &ViewConfig) -> String {
    format!("{namespace}view:{}/{}", config.location(), config.name())
}

/// What writes one view: a Vault KV document or an AWS Secrets Manager secret.
#[derive(Debug)]
pub enum Writer {
    Vault(ViewWriter),
    Aws(AwsViewWriter),
}

impl Writer {
    /// The writer of `config`; `aws_env` is where an AWS view's credential chain reads the
    /// environment.
    pub fn new(config: &ViewConfig, aws_env: &AwsEnv) -> Result<Writer, ViewError> {
        Ok(match config {
            ViewConfig::Vault(v) => Writer::Vault(ViewWriter::new(v.clone())?),
            ViewConfig::Aws(a) => Writer::Aws(AwsViewWriter::new(a.clone(), aws_env.clone())),
        })
    }

    /// One reconcile with the store's labelled versions.
    pub async fn sync(&self, store: &dyn Store) -> Result<Synced, ViewError> {
        match self {
            Writer::Vault(w) => w.sync(store).await,
            Writer::Aws(w) => w.sync(store).await,
        }
    }
}

pub enum ViewMsg {
    /// The interval elapsed: reconcile, and arm the next tick.
    Tick,
    /// A secret of the view was promoted or rolled back: reconcile now. The tick stays armed
    /// as it was, so a nudge that fails is retried at the next tick.
    Nudge,
}

pub struct ViewState {
    writer: Writer,
    config: ViewConfig,
    /// The view's fields (what each shows), for the reports to rotation actors.
    fields: BTreeMap<String, ViewField>,
    store: Arc<dyn Store>,
    metrics: Metrics,
    tick: TimerGuard,
    /// The tree's registry prefix, to find the rotation actors of the view's secrets.
    namespace: String,
}

pub struct ViewPublisherActor;

impl Actor for ViewPublisherActor {
    type Msg = ViewMsg;
    type State = ViewState;
    /// The view, the store, metrics, the tree's registry namespace, and where an AWS
    /// view's credential chain reads the environment.
    type Arguments = (ViewConfig, Arc<dyn Store>, Metrics, String, AwsEnv);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (config, store, metrics, namespace, aws_env): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Exported at zero, so the alert on it has a series before the first forced expiry.
        let _ = metrics
            .view_lag_expiries_total
            .get_or_create(&ViewNameLabels {
                view: config.name(),
            });
        Ok(ViewState {
            writer: Writer::new(&config, &aws_env)?,
            fields: config.fields(),
            config,
            store,
            metrics,
            tick: TimerGuard::new(),
            namespace,
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
                let interval = state.config.interval();
                state.tick.arm(interval, myself, || ViewMsg::Tick);
            }
            ViewMsg::Nudge => state.reconcile().await,
        }
        Ok(())
    }
}

impl ViewState {
    async fn reconcile(&mut self) {
        let view = self.config.name();
        // HA self-fencing: a replica whose lease is no longer valid writes no view; the
        // new leader's publishers keep it.
        if let Err(e) = self.store.check_writable() {
            tracing::warn!(view = %view, error = %e, "not writing the view: this replica no longer leads");
            return;
        }
        for attempt in 1..=CONFLICT_ATTEMPTS {
            match self.writer.sync(&*self.store).await {
                Ok(Synced::Written { revision, versions }) => {
                    self.count(&view, "written");
                    self.show(&view, &versions);
                    tracing::info!(view = %view, revision = %revision, versions = ?versions, "view updated to the current versions");
                    self.report(&view, &versions);
                    return;
                }
                Ok(Synced::Unchanged { versions }) => {
                    self.report(&view, &versions);
                    return;
                }
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

    /// Tells the rotation actor of each secret of the view which version the document
    /// shows (looked up by registry name every time: a restarted actor is a new one). Only
    /// live actors hear it: a secret with views keeps its actor through grace, the one
    /// phase where this matters, and waking every secret of the view at every tick would
    /// undo hibernation.
    fn report(&self, view: &str, versions: &BTreeMap<String, VersionNo>) {
        let fields = &self.fields;
        let shown: BTreeMap<&SecretRef, VersionNo> = versions
            .iter()
            .filter_map(|(name, v)| fields.get(name).map(|f| (&f.secret, *v)))
            .collect();
        for (secret, version) in shown {
            if let Some(cell) =
                ractor::registry::where_is(rotation::actor_name(&self.namespace, secret))
            {
                let actor: ActorRef<RotationMsg> = cell.into();
                let _ = actor.cast(RotationMsg::ViewShows {
                    view: view.to_owned(),
                    version,
                });
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

    fn show(&self, view: &str, versions: &BTreeMap<String, VersionNo>) {
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
