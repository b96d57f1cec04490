//! One watcher actor per `[[mounts]]` directory, under the watchers supervisor.
//!
//! It watches the directory (inotify through notify, non-recursive), never the visible
//! files: kubelet's swaps name only `..<ts>`, `..data_tmp` and `..data`, and a watch on a
//! file dies with the first swap (ARCHITECTURE.md, "Measured facts"). Access events are ignored (reading the
//! files produces them; reacting would loop), except close-after-write, which ends an
//! in-place write. Every other event, the queue-overflow rescan flag included, marks the
//! mount dirty: the notify thread sets an atomic flag and casts [`WatcherMsg::Dirty`] only
//! when the flag was clear, so a storm of events is one message.
//!
//! Dirty opens a debounce window (`debounce`, from the first event); at its end the actor
//! clears the flag, rescans ([`crate::watch::scan`]) and diffs against the last snapshot.
//! Events that arrive during a rescan set the flag again and open a new window, so the
//! final state is always scanned and none is lost. Real changes become `secret-changed` /
//! `secret-deleted` events; a swap that changes nothing emits nothing. Critical files
//! (glob patterns) emit `reload-required` and request the mount's reload action. Reloads
//! are coalesced (one in flight, at most one pending, whatever the number of changes),
//! retried with exponential backoff, and rate limited by a token bucket shared by all
//! mounts.
//!
//! Safety nets: the directory's identity (device, inode) is checked at every rescan and
//! the watch is re-armed if it was replaced; a missing directory is retried every
//! [`REARM_EVERY`]; every health check is also a full rescan. With `poll_interval` (or when
//! inotify is unavailable) the actor rescans on a timer instead, comparing content
//! fingerprints rather than modification times.
//!
//! A view's version markers (`NAME_version` beside `NAME`) are left out of every snapshot
//! ([`mapping::is_version_marker`]): they change with their value in the same swap and are
//! metadata. When the context carries a [`reload::ReloadGate`] (`rotor agent`'s reload
//! permits), every reload attempt waits for it and the gate hears how each reload ended.
//!
//! Last-seen fingerprints are persisted per mount ([`crate::watch::state`]), so a restarted
//! watcher reports only what changed while it was down. Mapped files (the mount's `files`
//! or the naming convention) are reported to their rotation actor as
//! [`RotationMsg::ConsumerSaw`] with the store's fingerprint, looked up by registry name
//! every time.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
use prometheus_client::metrics::gauge::Gauge;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::notifier::{self, NotifierMsg};
use super::rotation::{self, RotationMsg};
use crate::backoff::ExponentialBackoff;
use crate::clock::Clock;
use crate::config::MountConfig;
use crate::domain::SecretRef;
use crate::metrics::{KindLabels, Metrics, ReloadLabels};
use crate::supervisor::{AbortOnDrop, TimerGuard};
use crate::watch::event::{EventSink, WatchEvent, WatchEventKind};
use crate::watch::glob::{self, Pattern};
use crate::watch::limiter::ReloadLimiter;
use crate::watch::scan::{self, Change, FileState, ScanError, Snapshot};
use crate::watch::{Fingerprinter, mapping, mountinfo, reload, state};

/// How often a missing mount directory is looked for again.
pub const REARM_EVERY: Duration = Duration::from_millis(250);
/// Poll period when inotify cannot be used and no `poll_interval` is configured.
pub const FALLBACK_POLL: Duration = Duration::from_secs(5);
/// Longest wait between two reload attempts.
const MAX_RELOAD_BACKOFF: Duration = Duration::from_secs(300);
/// File names listed in a `reload-required` event before "and N more".
const LISTED_FILES: usize = 10;

/// What every watcher shares.
pub struct WatchContext {
    /// Prefix of every registry name in this tree.
    pub namespace: String,
    pub metrics: Metrics,
    pub clock: Clock,
    /// The store's keyed fingerprint (see [`crate::store::Store::fingerprint`]).
    pub fingerprint: Fingerprinter,
    /// The global reload rate limit.
    pub limiter: Arc<ReloadLimiter>,
    /// Managed secrets, for the file naming convention.
    pub managed: BTreeSet<SecretRef>,
    /// Where last-seen fingerprints are persisted; `None` keeps them in memory only.
    pub state_dir: Option<PathBuf>,
    /// Observes every event (tests, benchmarks).
    pub sink: Option<EventSink>,
    /// `/proc/self/mountinfo` in production; tests pass a fixture.
    pub mountinfo: PathBuf,
    /// `[watch] max_file_size`: larger visible files are skipped, not read.
    pub max_file_size: u64,
    /// Asked before every reload attempt and told how each reload ended (`rotor agent`'s
    /// reload permits); `None` in `rotor run`.
    pub reload_gate: Option<Arc<dyn reload::ReloadGate>>,
    /// Whether events go to the notifier actor. `rotor agent` has none: its events go to
    /// the sink, which logs what matters.
    pub notify: bool,
    /// Wakes a hibernating rotation actor that must hear what a mount shows (`rotor run`);
    /// `None` in `rotor agent`, which has no rotation actors.
    pub rotations: Option<Arc<super::rotation::RotationContext>>,
}

/// The registry name of the watcher of `mount` in the tree `namespace`.
pub fn actor_name(namespace: &str, mount: &Path) -> String {
    format!("{namespace}watcher:{}", mount.display())
}

pub enum WatcherMsg {
    /// Something relevant happened in the directory (from the notify thread).
    Dirty,
    /// The debounce window closed: rescan.
    Settle,
    /// Poll mode: rescan on a timer.
    Poll,
    /// Periodic health check (and full resync).
    HealthCheck,
    /// Try to watch the directory again (it was missing or replaced).
    Rearm,
    /// The notify backend reported an error.
    NotifyError(String),
    /// A reload finished: attempts used, or the last error.
    ReloadDone { result: Result<u32, String> },
    /// The last snapshot (fingerprints only). Answered once the first scan is done, so
    /// tests and the admin side can wait for a started watcher.
    Snapshot(RpcReplyPort<Snapshot>),
}

/// This actor's share of a gauge, returned when the state is dropped (stop, failure or
/// panic alike), so restarts never leave the fleet gauges counting a dead incarnation.
struct GaugeShare {
    gauge: Gauge,
    value: i64,
}

impl GaugeShare {
    fn set(&mut self, value: i64) {
        let delta = value - self.value;
        if delta > 0 {
            self.gauge.inc_by(delta);
        } else if delta < 0 {
            self.gauge.dec_by(-delta);
        }
        self.value = value;
    }
}

impl Drop for GaugeShare {
    fn drop(&mut self) {
        self.set(0);
    }
}

pub struct WatcherState {
    mount: Arc<MountConfig>,
    ctx: Arc<WatchContext>,
    critical: Vec<Pattern>,
    /// The last scan's result (or the persisted one until the first scan).
    snapshot: Snapshot,
    state_file: Option<PathBuf>,
    /// The inotify watch; dropping it stops notify's thread.
    watcher: Option<notify::RecommendedWatcher>,
    /// (device, inode) of the watched directory, to notice a replaced directory.
    watched_dir: Option<(u64, u64)>,
    /// Set by the notify thread; a `Dirty` message is sent only when it was clear.
    dirty: Arc<AtomicBool>,
    /// `Some` in poll mode.
    polling: Option<Duration>,
    settle: TimerGuard,
    poll: TimerGuard,
    health: TimerGuard,
    rearm: TimerGuard,
    /// The directory could not be listed at the last scan (reported once).
    missing: bool,
    healthy: Option<bool>,
    watched: GaugeShare,
    healthy_gauge: GaugeShare,
    /// The reload in flight with its retries; aborted with the state, so a reload never
    /// outlives the actor that started it.
    reload_task: Option<AbortOnDrop>,
    reload_pending: bool,
}

pub struct WatcherActor;

impl Actor for WatcherActor {
    type Msg = WatcherMsg;
    type State = WatcherState;
    type Arguments = (Arc<MountConfig>, Arc<WatchContext>);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (mount, ctx): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(WatcherState {
            critical: mount.critical.iter().map(|p| Pattern::new(p)).collect(),
            state_file: ctx
                .state_dir
                .as_ref()
                .map(|d| state::file_for(d, &mount.path)),
            watched: GaugeShare {
                gauge: ctx.metrics.secrets_watched.clone(),
                value: 0,
            },
            healthy_gauge: GaugeShare {
                gauge: ctx.metrics.mounts_healthy.clone(),
                value: 0,
            },
            polling: mount.poll_interval,
            mount,
            ctx,
            snapshot: Snapshot::default(),
            watcher: None,
            watched_dir: None,
            dirty: Arc::new(AtomicBool::new(false)),
            settle: TimerGuard::new(),
            poll: TimerGuard::new(),
            health: TimerGuard::new(),
            rearm: TimerGuard::new(),
            missing: false,
            healthy: None,
            reload_task: None,
            reload_pending: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.emit(WatchEventKind::Started, None, None, None);
        state.check_subpath();
        // Watch before the first scan, so nothing between the two is missed.
        match state.polling {
            Some(every) => state.poll.arm(every, myself.clone(), || WatcherMsg::Poll),
            None => {
                state.arm_watch(&myself);
            }
        }
        let persisted = match &state.state_file {
            Some(file) => {
                let file = file.clone();
                tokio::task::spawn_blocking(move || state::load(&file)).await?
            }
            None => None,
        };
        let first_run = persisted.is_none();
        state.snapshot = persisted.unwrap_or_default();
        // With no persisted state the directory as it is now is the baseline: nothing
        // changed as far as anyone can tell.
        state.rescan(&myself, first_run).await?;
        for (file, s) in &state.snapshot.files {
            if let FileState::Fingerprint(f) = s {
                state.consumer_saw(file, f);
            }
        }
        let every = state.mount.health_check_interval;
        state
            .health
            .arm(every, myself.clone(), || WatcherMsg::HealthCheck);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WatcherMsg::Dirty => {
                if state.mount.debounce.is_zero() {
                    state.dirty.store(false, Ordering::SeqCst);
                    state.rescan(&myself, false).await?;
                } else if !state.settle.is_armed() {
                    let debounce = state.mount.debounce;
                    state
                        .settle
                        .arm(debounce, myself.clone(), || WatcherMsg::Settle);
                }
            }
            WatcherMsg::Settle => {
                state.dirty.store(false, Ordering::SeqCst);
                state.rescan(&myself, false).await?;
            }
            WatcherMsg::Poll => {
                state.rescan(&myself, false).await?;
                if let Some(every) = state.polling {
                    state.poll.arm(every, myself.clone(), || WatcherMsg::Poll);
                }
            }
            WatcherMsg::HealthCheck => {
                state.rescan(&myself, false).await?;
                state.health_check();
                let every = state.mount.health_check_interval;
                state
                    .health
                    .arm(every, myself.clone(), || WatcherMsg::HealthCheck);
            }
            WatcherMsg::Rearm => {
                if state.polling.is_some() || state.arm_watch(&myself) {
                    state.rescan(&myself, false).await?;
                }
            }
            WatcherMsg::NotifyError(error) => {
                state.emit(
                    WatchEventKind::Error,
                    None,
                    None,
                    Some(format!("watch error: {error}")),
                );
                // Whatever the backend lost, a rescan recovers it.
                state.rescan(&myself, false).await?;
            }
            WatcherMsg::Snapshot(reply) => {
                let _ = reply.send(state.snapshot.clone());
            }
            WatcherMsg::ReloadDone { result } => {
                state.reload_task = None;
                let action = state.reload_type();
                let outcome = if result.is_ok() {
                    "succeeded"
                } else {
                    "failed"
                };
                state.count_reload(action, outcome);
                if let Some(gate) = &state.ctx.reload_gate {
                    gate.finished(&state.mount.path, result.is_ok());
                }
                match result {
                    Ok(attempts) => tracing::info!(
                        mount = %state.mount.path.display(),
                        action,
                        attempts,
                        "reload succeeded"
                    ),
                    Err(error) => state.emit(
                        WatchEventKind::Error,
                        None,
                        None,
                        Some(format!("{action} reload failed: {error}")),
                    ),
                }
                if std::mem::take(&mut state.reload_pending) {
                    state.start_reload(&myself);
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.watcher = None;
        state.emit(WatchEventKind::Stopped, None, None, None);
        Ok(())
    }
}

impl WatcherState {
    fn path(&self) -> &Path {
        &self.mount.path
    }

    /// Watches the directory; on failure retries later (missing) or falls back to polling
    /// (inotify unavailable). Returns whether the watch is armed.
    fn arm_watch(&mut self, myself: &ActorRef<WatcherMsg>) -> bool {
        self.watcher = None;
        self.watched_dir = None;
        let dirty = self.dirty.clone();
        let me = myself.clone();
        let handler = move |res: notify::Result<notify::Event>| match res {
            Ok(event) if !relevant(&event) => {}
            Ok(_) => {
                if !dirty.swap(true, Ordering::SeqCst) {
                    let _ = me.cast(WatcherMsg::Dirty);
                }
            }
            Err(e) => {
                let _ = me.cast(WatcherMsg::NotifyError(e.to_string()));
            }
        };
        let path = self.mount.path.clone();
        let armed = notify::recommended_watcher(handler).and_then(|mut w| {
            w.watch(&path, RecursiveMode::NonRecursive)?;
            Ok(w)
        });
        match armed {
            Ok(w) => {
                self.watcher = Some(w);
                self.watched_dir = dir_id(&path);
                true
            }
            Err(e) if !path.is_dir() => {
                tracing::debug!(mount = %path.display(), error = %e, "mount directory not there yet; retrying");
                self.rearm
                    .arm(REARM_EVERY, myself.clone(), || WatcherMsg::Rearm);
                false
            }
            Err(e) => {
                self.emit(
                    WatchEventKind::Error,
                    None,
                    None,
                    Some(format!(
                        "cannot watch with inotify ({e}); polling every {FALLBACK_POLL:?} instead"
                    )),
                );
                self.polling = Some(FALLBACK_POLL);
                self.poll
                    .arm(FALLBACK_POLL, myself.clone(), || WatcherMsg::Poll);
                false
            }
        }
    }

    /// Scans the directory and acts on what changed. `quiet` takes the scan as the new
    /// baseline without reporting changes (first start without persisted state).
    async fn rescan(
        &mut self,
        myself: &ActorRef<WatcherMsg>,
        quiet: bool,
    ) -> Result<(), ActorProcessingErr> {
        let dir = self.mount.path.clone();
        let fp = self.ctx.fingerprint.clone();
        let max = self.ctx.max_file_size;
        let (result, id) =
            tokio::task::spawn_blocking(move || (scan::scan(&dir, &*fp, max), dir_id(&dir)))
                .await?;
        match result {
            Ok(mut snap) => {
                // Version markers change with their value file in the same swap; they are
                // metadata, reported by nobody and never critical.
                let markers: Vec<String> = snap
                    .files
                    .keys()
                    .filter(|f| {
                        mapping::is_version_marker(
                            f,
                            |v| snap.files.contains_key(v),
                            &self.mount.files,
                        )
                    })
                    .cloned()
                    .collect();
                for m in markers {
                    snap.files.remove(&m);
                }
                if std::mem::take(&mut self.missing) {
                    tracing::info!(mount = %self.path().display(), "mount directory is back");
                }
                let changes = scan::diff(&self.snapshot, &snap);
                self.snapshot = snap;
                self.watched.set(self.snapshot.readable() as i64);
                if quiet {
                    for c in &changes {
                        if let Change::Unreadable { file, reason } = c {
                            self.unreadable(file, reason);
                        }
                    }
                } else {
                    self.apply(myself, &changes);
                }
                if !changes.is_empty() || quiet {
                    self.persist().await;
                }
                if self.polling.is_none()
                    && (self.watcher.is_none() || id != self.watched_dir)
                    && !self.rearm.is_armed()
                    && self.arm_watch(myself)
                {
                    // Changes between this scan and the new watch are caught by one more.
                    let _ = myself.cast(WatcherMsg::Dirty);
                }
            }
            Err(ScanError::Unavailable { source, .. }) => {
                if !self.missing {
                    self.missing = true;
                    self.emit(
                        WatchEventKind::Error,
                        None,
                        None,
                        Some(format!("cannot list the mount directory: {source}")),
                    );
                }
                self.watcher = None;
                self.watched_dir = None;
                if self.polling.is_none() && !self.rearm.is_armed() {
                    self.rearm
                        .arm(REARM_EVERY, myself.clone(), || WatcherMsg::Rearm);
                }
            }
            Err(e @ ScanError::Unstable { .. }) => {
                tracing::debug!(mount = %self.path().display(), error = %e, "rescanning later");
                let wait = self.mount.debounce.max(Duration::from_millis(10));
                self.settle.arm(wait, myself.clone(), || WatcherMsg::Settle);
            }
        }
        Ok(())
    }

    fn apply(&mut self, myself: &ActorRef<WatcherMsg>, changes: &[Change]) {
        let mut critical = Vec::new();
        for change in changes {
            match change {
                Change::Changed { file, fingerprint } => {
                    self.emit(
                        WatchEventKind::SecretChanged,
                        Some(file.clone()),
                        Some(fingerprint.clone()),
                        None,
                    );
                    self.consumer_saw(file, fingerprint);
                }
                Change::Deleted { file } => {
                    self.emit(
                        WatchEventKind::SecretDeleted,
                        Some(file.clone()),
                        None,
                        None,
                    );
                }
                Change::Unreadable { file, reason } => self.unreadable(file, reason),
            }
            if !matches!(change, Change::Unreadable { .. })
                && glob::any_matches(&self.critical, change.file())
            {
                critical.push(change.file().to_owned());
            }
        }
        if critical.is_empty() {
            return;
        }
        let mut detail = critical
            .iter()
            .take(LISTED_FILES)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if critical.len() > LISTED_FILES {
            detail.push_str(&format!(" and {} more", critical.len() - LISTED_FILES));
        }
        self.emit(
            WatchEventKind::ReloadRequired,
            None,
            None,
            Some(format!("critical files changed: {detail}")),
        );
        self.request_reload(myself);
    }

    /// A visible file the scan did not fingerprint (an I/O error, or skipped: too large,
    /// not a regular file, a planted link). Reported once per change of the reason.
    fn unreadable(&self, file: &str, reason: &str) {
        let path = self.mount.path.join(file);
        tracing::warn!(path = %path.display(), %reason, "cannot read a file in a watched mount");
        self.emit(
            WatchEventKind::Error,
            Some(file.to_owned()),
            None,
            Some(format!("cannot read {}: {reason}", path.display())),
        );
    }

    fn health_check(&mut self) {
        let alive = self.polling.is_some() || self.watcher.is_some();
        let ok = !self.missing && alive;
        let changed = self.healthy != Some(ok);
        self.healthy = Some(ok);
        self.healthy_gauge.set(i64::from(ok));
        let (event, detail) = if ok {
            (WatchEventKind::HealthCheckSuccess, None)
        } else if self.missing {
            (
                WatchEventKind::HealthCheckFailed,
                Some("mount directory missing or unreadable".to_owned()),
            )
        } else {
            (
                WatchEventKind::HealthCheckFailed,
                Some("no watch on the mount directory".to_owned()),
            )
        };
        // Successes reach the notifier only when the health changes; every check is
        // counted and observed.
        self.emit_to(event, None, None, detail, !ok || changed);
        for (file, s) in &self.snapshot.files {
            if let FileState::Fingerprint(f) = s {
                self.consumer_saw(file, f);
            }
        }
    }

    fn reload_type(&self) -> &'static str {
        self.mount
            .reload
            .as_ref()
            .map_or("none", |r| r.action.type_name())
    }

    fn count_reload(&self, action: &str, outcome: &str) {
        self.ctx
            .metrics
            .reloads_total
            .get_or_create(&ReloadLabels {
                action: action.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// One reload in flight per mount; requests meanwhile fold into one pending reload.
    fn request_reload(&mut self, myself: &ActorRef<WatcherMsg>) {
        if self.mount.reload.is_none() {
            return;
        }
        if self.reload_task.is_some() {
            if !self.reload_pending {
                self.reload_pending = true;
            }
            self.count_reload(self.reload_type(), "coalesced");
            return;
        }
        self.start_reload(myself);
    }

    fn start_reload(&mut self, myself: &ActorRef<WatcherMsg>) {
        let Some(reload) = self.mount.reload.clone() else {
            return;
        };
        let limiter = self.ctx.limiter.clone();
        let gate = self.ctx.reload_gate.clone();
        let mount_path = self.mount.path.clone();
        let me = myself.clone();
        let mount = self.mount.path.display().to_string();
        // Doubling from the mount's `backoff`, no jitter (one reload per mount at a time, and
        // the global token bucket spreads mounts). The minimum is clamped to the maximum, so
        // the constructor cannot refuse it.
        let backoff = ExponentialBackoff::new(
            reload.backoff.min(MAX_RELOAD_BACKOFF),
            MAX_RELOAD_BACKOFF,
            0.0,
        )
        .ok();
        self.reload_task = Some(AbortOnDrop::spawn(async move {
            let mut attempt = 0u32;
            let result = loop {
                attempt += 1;
                let waited = limiter.acquire().await;
                if !waited.is_zero() {
                    tracing::info!(%mount, waited = ?waited, "reload delayed by the global rate limit");
                }
                // The gate (a reload permit) is held only while the attempt runs, not
                // through the backoff before the next one.
                let permit = match &gate {
                    Some(g) => g.acquire(&mount_path).await,
                    None => None,
                };
                let ran = reload::run(&reload.action).await;
                if let Some(g) = &gate {
                    g.release(&mount_path, permit).await;
                }
                match ran {
                    Ok(()) => break Ok(attempt),
                    Err(e) if attempt < reload.max_attempts => {
                        let wait = backoff.map_or(MAX_RELOAD_BACKOFF, |b| b.delay(attempt, 0.0));
                        tracing::warn!(%mount, action = reload.action.type_name(), attempt, error = %e, retry_in = ?wait, "reload failed; retrying");
                        tokio::time::sleep(wait).await;
                    }
                    Err(e) => break Err(format!("{e} (after {attempt} attempts)")),
                }
            };
            let _ = me.cast(WatcherMsg::ReloadDone { result });
        }));
    }

    /// Tells the rotation actor of the secret this file holds which value it shows. A
    /// secret in grace whose actor hibernates is woken for it (its expiry may wait for the
    /// mount); outside grace a live actor hears it and a hibernating one need not.
    fn consumer_saw(&self, file: &str, fingerprint: &str) {
        let Some(secret) = mapping::secret_for(file, &self.mount.files, &self.ctx.managed) else {
            return;
        };
        let msg = RotationMsg::ConsumerSaw {
            fingerprint: fingerprint.to_owned(),
        };
        if let Some(cell) =
            ractor::registry::where_is(rotation::actor_name(&self.ctx.namespace, &secret))
        {
            let actor: ActorRef<RotationMsg> = cell.into();
            let _ = actor.cast(msg);
        } else if let Some(context) = &self.ctx.rotations
            && context
                .board
                .get(&secret)
                .is_some_and(|s| s.phase == "grace")
        {
            let context = context.clone();
            tokio::spawn(async move {
                match context.wake(&secret).await {
                    Ok(actor) => {
                        let _ = actor.cast(msg);
                    }
                    Err(e) => {
                        tracing::debug!(%secret, error = %e, "cannot wake the rotation actor for a mount's report")
                    }
                }
            });
        }
    }

    async fn persist(&self) {
        let Some(file) = self.state_file.clone() else {
            return;
        };
        let snapshot = self.snapshot.clone();
        let saved = tokio::task::spawn_blocking(move || state::save(&file, &snapshot)).await;
        if let Ok(Err(e)) | Err(e) = saved.map_err(std::io::Error::other) {
            tracing::warn!(mount = %self.path().display(), error = %e, "cannot persist last-seen fingerprints; a restart may report changes again");
        }
    }

    fn check_subpath(&self) {
        let Ok(text) = std::fs::read_to_string(&self.ctx.mountinfo) else {
            return;
        };
        let path = std::fs::canonicalize(self.path()).unwrap_or_else(|_| self.path().to_owned());
        if let Some(warning) = mountinfo::subpath_warning(&mountinfo::parse(&text), &path) {
            tracing::warn!(mount = %self.path().display(), %warning, "mount will never update");
            self.emit(WatchEventKind::Error, None, None, Some(warning));
        }
    }

    fn emit(
        &self,
        event: WatchEventKind,
        file: Option<String>,
        fingerprint: Option<String>,
        detail: Option<String>,
    ) {
        self.emit_to(event, file, fingerprint, detail, true);
    }

    fn emit_to(
        &self,
        event: WatchEventKind,
        file: Option<String>,
        fingerprint: Option<String>,
        detail: Option<String>,
        notify: bool,
    ) {
        let at = self.ctx.clock.now();
        self.ctx
            .metrics
            .watcher_events_total
            .get_or_create(&KindLabels {
                kind: event.as_str().to_owned(),
            })
            .inc();
        if let Some(sink) = &self.ctx.sink {
            sink(&WatchEvent {
                mount: self.mount.path.clone(),
                kind: event,
                file: file.clone(),
                fingerprint,
                detail: detail.clone(),
                at,
            });
        }
        if notify && self.ctx.notify {
            notifier::send(
                &self.ctx.namespace,
                NotifierMsg::Watcher {
                    mount: self.mount.path.display().to_string(),
                    event,
                    file,
                    detail,
                    at,
                },
            );
        }
    }
}

/// Whether a notify event can mean a change. Access events are what reading the files
/// produces; reacting to them would rescan forever (ARCHITECTURE.md, "Measured facts"). Close-after-write is
/// the end of an in-place write and does count.
fn relevant(event: &notify::Event) -> bool {
    if event.need_rescan() {
        return true;
    }
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

fn dir_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}
