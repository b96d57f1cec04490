//! The mount publisher: for runs without a cluster, it writes the current version of
//! chosen secrets into a directory exactly the way kubelet updates a secret volume
//! ([`crate::watch::atomic`]: a `..<timestamp>` directory, `..data` swapped atomically,
//! 0400 files, visible symlinks), so `rotor run` closes the loop on a laptop: rotate,
//! publish, watch, reload, expire.
//!
//! Every `interval` it reads the versions' metadata from the store and compares the
//! current versions' fingerprints with what it last published; only a difference reads
//! the values (the store's bytes, as `read_value` returns them) and swaps. At start it
//! fingerprints what the directory already holds, so a restart does not swap again.
//!
//! Beside every file `NAME` the same swap writes its version marker `NAME_version`
//! ([`crate::watch::mapping::version_marker`]): the rotor version number, in decimal, no
//! newline. A consumer (`rotor agent`) reads it to report which version its mount holds; it
//! is in the same generation directory as the value, so the two never disagree.
//!
//! [`view`] is the publisher of a Vault view (`[[publish]] type = "vault"`).

pub mod view;

use std::collections::BTreeMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::domain::{Label, SecretRef};
use crate::publish::config::PublishConfig;
use crate::store::Store;
use crate::supervisor::TimerGuard;
use crate::watch::{atomic, mapping, scan};

/// Mode of published files, as a secret volume with `defaultMode: 0400`.
pub const FILE_MODE: u32 = 0o400;

/// The registry name of the publisher of `path` in the tree `namespace`.
pub fn actor_name(namespace: &str, path: &std::path::Path) -> String {
    format!("{namespace}publisher:{}", path.display())
}

pub enum PublisherMsg {
    Tick,
}

pub struct PublisherState {
    config: Arc<PublishConfig>,
    store: Arc<dyn Store>,
    /// File name to fingerprint of what the directory holds.
    published: BTreeMap<String, String>,
    tick: TimerGuard,
}

pub struct PublisherActor;

impl Actor for PublisherActor {
    type Msg = PublisherMsg;
    type State = PublisherState;
    type Arguments = (Arc<PublishConfig>, Arc<dyn Store>);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (config, store): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(PublisherState {
            config,
            store,
            published: BTreeMap::new(),
            tick: TimerGuard::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let dir = state.config.path.clone();
        let store = state.store.clone();
        let existing = tokio::task::spawn_blocking(move || {
            // rotor wrote what is there; a file over the default limit is republished.
            scan::scan(&dir, &|b| store.fingerprint(b), scan::DEFAULT_MAX_FILE_SIZE)
        })
        .await?;
        if let Ok(snapshot) = existing {
            // The value files only: markers are rewritten with their values.
            state.published = snapshot
                .files
                .into_iter()
                .filter(|(n, _)| state.config.files.contains_key(n))
                .filter_map(|(n, s)| s.fingerprint().map(|f| (n, f.to_owned())))
                .collect();
        }
        state.publish().await;
        state
            .tick
            .arm(state.config.interval, myself, || PublisherMsg::Tick);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PublisherMsg::Tick => {
                state.publish().await;
                state
                    .tick
                    .arm(state.config.interval, myself, || PublisherMsg::Tick);
            }
        }
        Ok(())
    }
}

impl PublisherState {
    /// Swaps the directory if a current version differs from what it holds. Failures are
    /// logged and retried at the next tick.
    async fn publish(&mut self) {
        match publish_once(&self.config, &*self.store, &self.published).await {
            Ok(Some(now)) => {
                tracing::info!(path = %self.config.path.display(), files = now.len(), "published current versions");
                self.published = now;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(path = %self.config.path.display(), error = %e, "cannot publish; retrying at the next tick")
            }
        }
    }
}

/// Publishes if needed; returns the new file fingerprints when it swapped.
async fn publish_once(
    config: &Arc<PublishConfig>,
    store: &dyn Store,
    published: &BTreeMap<String, String>,
) -> Result<Option<BTreeMap<String, String>>, String> {
    let mut want: BTreeMap<String, (SecretRef, u64, String)> = BTreeMap::new();
    for (file, secret) in &config.files {
        let versions = store.versions(secret).await.map_err(|e| e.to_string())?;
        if let Some(v) = versions.iter().find(|v| v.labels.contains(&Label::Current)) {
            want.insert(
                file.clone(),
                (secret.clone(), v.version, v.fingerprint.clone()),
            );
        }
    }
    let fingerprints: BTreeMap<String, String> = want
        .iter()
        .map(|(f, (_, _, fp))| (f.clone(), fp.clone()))
        .collect();
    if want.is_empty() || &fingerprints == published {
        return Ok(None);
    }
    let mut values = Vec::with_capacity(want.len());
    let mut markers = Vec::with_capacity(want.len());
    for (file, (secret, version, _)) in &want {
        let value = store
            .read_value(secret, *version)
            .await
            .map_err(|e| e.to_string())?;
        values.push((file.clone(), value));
        let marker = mapping::version_marker(file);
        if config.files.contains_key(&marker) {
            return Err(format!(
                "file {marker} is published and is also the version marker of {file}; rename one"
            ));
        }
        markers.push((marker, version.to_string()));
    }
    // Writing files blocks: on a blocking thread, like the scan at start.
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let files: BTreeMap<String, &[u8]> = values
            .iter()
            .map(|(f, v)| (f.clone(), v.expose()))
            .chain(markers.iter().map(|(f, v)| (f.clone(), v.as_bytes())))
            .collect();
        atomic::write(&config.path, &files, FILE_MODE)
            .map_err(|e| format!("writing {}: {e}", config.path.display()))
    })
    .await
    .map_err(|e| format!("publish task failed: {e}"))??;
    Ok(Some(fingerprints))
}
