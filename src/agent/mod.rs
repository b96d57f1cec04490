//! `rotor agent`: the sidecar in each workload pod. It watches the pod's secret mounts with
//! the watcher rotor itself uses ([`crate::actors::watcher`]: inotify on the directory,
//! kubelet's `..data` swap, debounce, `critical` globs, the reload action with its retries
//! and rate limit), and tells the central rotor which version of each mapped file the pod
//! holds and whether the reload after the last change succeeded.
//!
//! - **Reports** ([`client::Report`]): the full state, at start, every `heartbeat`, and at
//!   once after a change or a finished reload. A file's version is the number in its
//!   `NAME_version` marker beside it ([`crate::watch::mapping::version_marker`]), read with
//!   the scanner's rules ([`crate::watch::scan::read_visible`]); `null` when the marker is
//!   missing or not a number. A file the pod's reload applies to (a `critical` file of a
//!   mount with a `reload`) reports the version the workload *uses*, not the one on disk:
//!   the marker as it was when the agent started (the workload read its files at its own
//!   start), then as it was when the last reload that succeeded began. A new file on disk
//!   whose reload is pending or failed is not held yet, so rotor keeps the previous
//!   version alive for this pod: rotor expires a credential only once every live pod
//!   *uses* the new one. While rotor cannot be reached the agent keeps running and
//!   tries again with a bounded backoff (never longer apart than `heartbeat`).
//! - **Reload permits**: with a `workload`, every reload attempt first asks rotor for a
//!   permit ([`Permits`], the watcher's [`ReloadGate`]), waits on 429 as long as rotor says
//!   (`retryAfterMs`, plus up to a quarter more at random so a fleet does not ask again in
//!   step), and releases it once the attempt ended. The wait is bounded by `permit_wait`
//!   (default 2 minutes): after it, rotor unreachable or still answering 429, the reload runs
//!   **without** a permit and a WARN says why. A stale credential breaks the pod for sure,
//!   while one reload over the budget costs only capacity for a moment; and rotor itself
//!   releases a permit an agent never returned after its `permit_timeout`. A permit still
//!   held when the agent is told to stop (SIGTERM in the middle of a reload) is released
//!   on the way out, within [`RELEASE_AT_EXIT`], so the workload's other pods need not
//!   wait for that timeout.
//!
//! An agent never holds the master key, the store or a value other than the files its pod
//! already mounts, and it never sends one or an unkeyed hash of one: the watcher's
//! fingerprints are keyed with a random key made at start that never leaves the process,
//! and a report holds identifiers, version numbers and booleans only.
//!
//! It is small on purpose: one current-thread runtime, one watcher actor per mount (no
//! supervisor: a watcher that dies ends the agent with an error, and the pod restarts the
//! sidecar), and one reporter task.

pub mod client;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use hmac::Mac as _;
use ractor::Actor;
use tokio::sync::Notify;
use tokio::time::Instant;

use self::client::{ClientError, PermitAnswer, Report, ReportedSecret, RotorClient};
use crate::actors::watcher::{self, WatchContext, WatcherActor};
use crate::backoff::ExponentialBackoff;
use crate::clock::Clock;
use crate::config::agent::check_consumer_name;
use crate::config::{AgentConfig, MountConfig};
use crate::domain::SecretRef;
use crate::metrics::Metrics;
use crate::watch::event::{WatchEvent, WatchEventKind};
use crate::watch::glob::{self, Pattern};
use crate::watch::limiter::ReloadLimiter;
use crate::watch::reload::ReloadGate;
use crate::watch::{Fingerprinter, mapping, scan};

/// The registry namespace of the agent's watchers.
const NAMESPACE: &str = "agent:";
/// A version marker holds a number; anything longer is not one.
const MAX_MARKER_BYTES: u64 = 64;
/// First wait after a failed request to rotor; doubles up to the heartbeat.
const RETRY_MIN: Duration = Duration::from_millis(200);
/// Attempts at releasing a permit before leaving it to rotor's `permit_timeout`.
const RELEASE_ATTEMPTS: u32 = 3;
/// How long a stopping agent tries to release the permits it still holds.
pub const RELEASE_AT_EXIT: Duration = Duration::from_secs(2);

/// Why the agent cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The consumer id (configured, `POD_NAME` or the hostname) is unusable.
    #[error("consumer id {value:?} (from {source_name}) {why}")]
    ConsumerId {
        value: String,
        source_name: &'static str,
        why: &'static str,
    },
    /// Neither `consumer_id`, `POD_NAME` nor the hostname gave an id.
    #[error(
        "no consumer id: set [agent] consumer_id, or POD_NAME (the downward API's metadata.name)"
    )]
    NoConsumerId,
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot start the watcher of {mount}: {why}")]
    Watcher { mount: PathBuf, why: String },
    #[error("the watcher of {mount} stopped")]
    WatcherEnded { mount: PathBuf },
}

impl AgentError {
    /// A bounded label for the error.
    pub fn metric_label(&self) -> &'static str {
        match self {
            AgentError::ConsumerId { .. } | AgentError::NoConsumerId => "consumer_id",
            AgentError::Client(e) => e.metric_label(),
            AgentError::Watcher { .. } => "watcher",
            AgentError::WatcherEnded { .. } => "watcher_ended",
        }
    }

    /// Whether this is a configuration problem (exit 64) rather than a runtime failure.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            AgentError::ConsumerId { .. } | AgentError::NoConsumerId
        )
    }
}

/// The consumer id: `[agent] consumer_id`, else `POD_NAME` (what the downward API sets from
/// `metadata.name`), else the hostname (a pod's hostname is its name unless the pod spec
/// sets `hostname`). `env` and `hostname` are injected so tests need no process state.
pub fn consumer_id(
    configured: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    hostname: &dyn Fn() -> Option<String>,
) -> Result<String, AgentError> {
    let (value, source_name) = match (configured, env("POD_NAME")) {
        (Some(id), _) => (id.to_owned(), "[agent] consumer_id"),
        (None, Some(pod)) if !pod.trim().is_empty() => (pod.trim().to_owned(), "POD_NAME"),
        _ => match hostname() {
            Some(h) if !h.trim().is_empty() => (h.trim().to_owned(), "the hostname"),
            _ => return Err(AgentError::NoConsumerId),
        },
    };
    check_consumer_name(&value).map_err(|why| AgentError::ConsumerId {
        value: value.clone(),
        source_name,
        why,
    })?;
    Ok(value)
}

/// The machine's hostname, as the kernel has it.
pub fn system_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
}

/// What the reporter knows besides the mounts' files: per mount, how its last reload went.
#[derive(Default)]
struct Shared {
    /// Mount path to the outcome of the reload after the last change there: `None` while
    /// none has finished since (or none is configured).
    reloaded: BTreeMap<PathBuf, Option<bool>>,
    /// Per mount, the markers of the files its reload applies to as the workload holds
    /// them: taken at start, replaced by `attempt` when a reload succeeds.
    held: BTreeMap<PathBuf, BTreeMap<String, Option<u64>>>,
    /// Per mount, the markers when the latest reload attempt began.
    attempt: BTreeMap<PathBuf, BTreeMap<String, Option<u64>>>,
    /// Permits granted and not yet released: what a stopping agent gives back.
    permits: BTreeSet<String>,
    /// The agent is stopping: a permit granted from now on is given back at once.
    stopping: bool,
}

/// Everything the agent's tasks share.
struct Agent {
    client: RotorClient,
    consumer_id: String,
    workload: Option<String>,
    mounts: Vec<(Arc<MountConfig>, Vec<Pattern>)>,
    max_file_size: u64,
    permit_wait: Duration,
    shared: Mutex<Shared>,
    /// Wakes the reporter for an immediate report.
    report_now: Notify,
}

impl Agent {
    fn set_reloaded(&self, mount: &Path, value: Option<bool>) {
        if let Ok(mut shared) = self.shared.lock() {
            shared.reloaded.insert(mount.to_owned(), value);
        }
    }

    /// The markers, read now, of the files of `mount` its reload applies to.
    fn reloaded_markers(&self, mount: &Path) -> BTreeMap<String, Option<u64>> {
        self.mounts
            .iter()
            .filter(|(m, _)| m.path == mount && m.reload.is_some())
            .flat_map(|(m, critical)| {
                m.files
                    .keys()
                    .filter(|file| glob::any_matches(critical, file))
                    .map(|file| (file.clone(), read_marker(&m.path, file, self.max_file_size)))
            })
            .collect()
    }

    /// Takes the markers the workload holds at start.
    fn hold_initial(&self) {
        let held: BTreeMap<_, _> = self
            .mounts
            .iter()
            .map(|(m, _)| (m.path.clone(), self.reloaded_markers(&m.path)))
            .collect();
        if let Ok(mut shared) = self.shared.lock() {
            shared.held = held;
        }
    }

    /// The full report as the mounts are now (reads the markers: blocking, small files).
    fn build_report(&self) -> Report {
        let (reloaded, held) = self
            .shared
            .lock()
            .map(|s| (s.reloaded.clone(), s.held.clone()))
            .unwrap_or_default();
        let mut files = Vec::new();
        for (mount, critical) in &self.mounts {
            for (file, secret) in &mount.files {
                let reload_applies = mount.reload.is_some() && glob::any_matches(critical, file);
                let version = if reload_applies {
                    held.get(&mount.path)
                        .and_then(|h| h.get(file))
                        .copied()
                        .flatten()
                } else {
                    read_marker(&mount.path, file, self.max_file_size)
                };
                files.push(FileReport {
                    secret: secret.clone(),
                    version,
                    reloaded: reload_applies.then(|| reloaded.get(&mount.path).copied().flatten()),
                });
            }
        }
        Report {
            consumer_id: self.consumer_id.clone(),
            workload: self.workload.clone(),
            secrets: merge(files),
        }
    }

    /// Watcher events: a change to a critical file of a mount with a reload starts a new
    /// "reload pending" (its `reloaded` is `null` until the reload ends); any change is
    /// reported at once.
    fn on_event(&self, event: &WatchEvent) {
        match event.kind {
            WatchEventKind::ReloadRequired => {
                if self
                    .mounts
                    .iter()
                    .any(|(m, _)| m.path == event.mount && m.reload.is_some())
                {
                    self.set_reloaded(&event.mount, None);
                }
                tracing::info!(mount = %event.mount.display(), detail = event.detail.as_deref().unwrap_or(""), "reload required");
                self.report_now.notify_one();
            }
            WatchEventKind::SecretChanged | WatchEventKind::SecretDeleted => {
                tracing::info!(
                    mount = %event.mount.display(),
                    file = event.file.as_deref().unwrap_or(""),
                    event = %event.kind,
                    "mount changed"
                );
                self.report_now.notify_one();
            }
            WatchEventKind::Error | WatchEventKind::HealthCheckFailed => {
                tracing::warn!(
                    mount = %event.mount.display(),
                    event = %event.kind,
                    detail = event.detail.as_deref().unwrap_or(""),
                    "watcher"
                );
            }
            _ => {}
        }
    }
}

/// What one mapped file says about its secret.
struct FileReport {
    secret: SecretRef,
    version: Option<u64>,
    /// `None`: no reload applies to this file; `Some(None)`: one applies and has not
    /// finished since the last change; `Some(Some(ok))`: how it ended.
    reloaded: Option<Option<bool>>,
}

/// One entry per secret, however many files map it (a username, a password and a URL of
/// one credential): the oldest version any of them holds (`null` if one has no marker: the
/// pod's version is then unknown), and a reload that applies to any of them reported as
/// pending while one is, failed if one failed, succeeded only if all did.
fn merge(files: Vec<FileReport>) -> Vec<ReportedSecret> {
    let mut merged: BTreeMap<SecretRef, (Option<u64>, Option<Option<bool>>)> = BTreeMap::new();
    for f in files {
        match merged.entry(f.secret) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert((f.version, f.reloaded));
            }
            std::collections::btree_map::Entry::Occupied(mut e) => {
                let (version, reloaded) = e.get_mut();
                *version = version.zip(f.version).map(|(a, b)| a.min(b));
                *reloaded = match (*reloaded, f.reloaded) {
                    (None, r) | (r, None) => r,
                    (Some(None), _) | (_, Some(None)) => Some(None),
                    (Some(Some(a)), Some(Some(b))) => Some(Some(a && b)),
                };
            }
        }
    }
    merged
        .into_iter()
        .map(|(secret, (version, reloaded))| ReportedSecret {
            tenant_id: secret.tenant().to_owned(),
            secret_key: secret.key().to_owned(),
            version,
            reloaded: reloaded.flatten(),
        })
        .collect()
}

/// The version number in the marker of `file` in the mount `dir`, if there is a readable
/// marker holding a number.
fn read_marker(dir: &Path, file: &str, max_file_size: u64) -> Option<u64> {
    let marker = mapping::version_marker(file);
    let bytes = scan::read_visible(dir, &marker, max_file_size.min(MAX_MARKER_BYTES))
        .ok()
        .flatten()?;
    std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
}

/// The watcher's reload gate: reload permits from rotor (see the module doc).
struct Permits(Arc<Agent>);

impl ReloadGate for Permits {
    fn acquire(&self, mount: &Path) -> BoxFuture<'static, Option<String>> {
        let agent = self.0.clone();
        let mount = mount.to_owned();
        Box::pin(async move {
            // What this attempt will make the workload read, at the latest: the files as
            // they are before it starts (a later swap starts another reload).
            let markers = agent.reloaded_markers(&mount);
            if let Ok(mut shared) = agent.shared.lock() {
                shared.attempt.insert(mount.clone(), markers);
            }
            let workload = agent.workload.clone()?;
            acquire_permit(&agent, &workload, &mount).await
        })
    }

    fn release(&self, mount: &Path, permit: Option<String>) -> BoxFuture<'static, ()> {
        let agent = self.0.clone();
        let mount = mount.to_owned();
        Box::pin(async move {
            let Some(permit) = permit else { return };
            for attempt in 1..=RELEASE_ATTEMPTS {
                match agent.client.release(&permit).await {
                    Ok(()) => {
                        tracing::debug!(mount = %mount.display(), "reload permit released");
                        break;
                    }
                    Err(e) if attempt < RELEASE_ATTEMPTS && e.is_transient() => {
                        tokio::time::sleep(RETRY_MIN * 2u32.pow(attempt)).await;
                    }
                    Err(e) => {
                        tracing::warn!(mount = %mount.display(), error = %e, "cannot release the reload permit; rotor releases it after its permit_timeout");
                        break;
                    }
                }
            }
            if let Ok(mut shared) = agent.shared.lock() {
                shared.permits.remove(&permit);
            }
        })
    }

    fn finished(&self, mount: &Path, succeeded: bool) {
        if succeeded
            && let Ok(mut shared) = self.0.shared.lock()
            && let Some(markers) = shared.attempt.get(mount).cloned()
        {
            shared.held.insert(mount.to_owned(), markers);
        }
        self.0.set_reloaded(mount, Some(succeeded));
        self.0.report_now.notify_one();
    }
}

/// Asks for a permit until rotor grants one or `permit_wait` has passed; `None`: reload
/// without one (said at WARN).
async fn acquire_permit(agent: &Agent, workload: &str, mount: &Path) -> Option<String> {
    let started = Instant::now();
    let backoff = ExponentialBackoff::new(RETRY_MIN, Duration::from_secs(10), 0.5).ok();
    let mut failures = 0u32;
    let mut waits = 0u32;
    loop {
        let (wait, why) = match agent.client.permit(&agent.consumer_id, workload).await {
            Ok(PermitAnswer::Granted { permit_id }) => {
                tracing::info!(mount = %mount.display(), workload, waited_ms = started.elapsed().as_millis() as u64, "reload permit granted");
                let stopping = match agent.shared.lock() {
                    Ok(mut shared) if !shared.stopping => {
                        shared.permits.insert(permit_id.clone());
                        false
                    }
                    _ => true,
                };
                if stopping {
                    // Asked before the stop, granted after the held ones were given back.
                    let _ = agent.client.release(&permit_id).await;
                    return None;
                }
                return Some(permit_id);
            }
            Ok(PermitAnswer::Busy { retry_after }) => {
                waits += 1;
                if waits == 1 {
                    tracing::info!(mount = %mount.display(), workload, retry_after_ms = retry_after.as_millis() as u64, "reload budget of the workload in use; waiting for a permit");
                }
                let jitter = retry_after.mul_f64(rand::random::<f64>() * 0.25);
                (
                    retry_after.max(Duration::from_millis(10)) + jitter,
                    "rotor kept answering 429".to_owned(),
                )
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(mount = %mount.display(), error = %e, "cannot get a reload permit; retrying");
                }
                let wait = backoff.map_or(RETRY_MIN, |b| b.delay(failures, rand::random()));
                (wait, e.to_string())
            }
        };
        let waited = started.elapsed();
        if waited + wait > agent.permit_wait {
            tracing::warn!(
                mount = %mount.display(),
                workload,
                waited_ms = waited.as_millis() as u64,
                reason = %why,
                "no reload permit within [agent] permit_wait; reloading without one rather than keep a stale credential"
            );
            return None;
        }
        tokio::time::sleep(wait).await;
    }
}

/// The reporter: a report at start, every `heartbeat`, and at once when woken; after a
/// failure, again after a backoff that never exceeds the heartbeat.
async fn report_loop(agent: Arc<Agent>, heartbeat: Duration) {
    let backoff = ExponentialBackoff::new(RETRY_MIN.min(heartbeat), heartbeat, 0.5).ok();
    let mut failures = 0u32;
    let mut last_problem: Option<String> = None;
    loop {
        let a = agent.clone();
        let report = tokio::task::spawn_blocking(move || a.build_report()).await;
        let wait = match report {
            Err(e) => {
                tracing::error!(error = %e, "building the report failed");
                heartbeat
            }
            Ok(report) => match agent.client.report(&report).await {
                Ok(()) => {
                    if last_problem.take().is_some() {
                        tracing::info!(consumer_id = %agent.consumer_id, "reports reach rotor again");
                    }
                    failures = 0;
                    tracing::debug!(secrets = report.secrets.len(), "reported");
                    heartbeat
                }
                Err(e) => {
                    // Once per kind of problem, not every heartbeat.
                    let problem = e.to_string();
                    if last_problem.as_deref() != Some(problem.as_str()) {
                        tracing::warn!(error = %problem, kind = e.metric_label(), "report not accepted; retrying");
                        last_problem = Some(problem);
                    }
                    if e.is_transient() {
                        failures += 1;
                        backoff.map_or(heartbeat, |b| b.delay(failures, rand::random()))
                    } else {
                        heartbeat
                    }
                }
            },
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = agent.report_now.notified() => {}
        }
    }
}

/// A fingerprint keyed with a random key made now, so that the watcher can tell contents
/// apart without anything derived from a value being comparable outside this process.
fn process_fingerprinter() -> Fingerprinter {
    let key: [u8; 32] = rand::random();
    Arc::new(move |bytes: &[u8]| {
        let mut mac =
            <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&key).expect("any key length");
        mac.update(bytes);
        hex::encode(mac.finalize().into_bytes())
    })
}

/// Runs the agent until `shutdown` resolves (Ok) or a watcher stops (an error).
pub async fn run(
    config: AgentConfig,
    consumer_id: String,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), AgentError> {
    let client = RotorClient::new(&config.agent)?;
    client.check_token()?;
    let mounts: Vec<(Arc<MountConfig>, Vec<Pattern>)> = config
        .mounts
        .iter()
        .map(|m| {
            (
                Arc::new(m.clone()),
                m.critical.iter().map(|p| Pattern::new(p)).collect(),
            )
        })
        .collect();
    let agent = Arc::new(Agent {
        client,
        consumer_id,
        workload: config.agent.workload.clone(),
        mounts: mounts.clone(),
        max_file_size: config.watch.max_file_size,
        permit_wait: config.agent.permit_wait,
        shared: Mutex::new(Shared::default()),
        report_now: Notify::new(),
    });
    agent.hold_initial();
    let sink_agent = agent.clone();
    let ctx = Arc::new(WatchContext {
        namespace: NAMESPACE.to_owned(),
        metrics: Metrics::with_options(false),
        clock: Clock::System,
        fingerprint: process_fingerprinter(),
        limiter: Arc::new(ReloadLimiter::new(config.watch.max_reloads_per_minute)),
        managed: Default::default(),
        // Nothing persisted: a restarted agent takes the mount as it finds it (and reports
        // it at once), which is all rotor needs.
        state_dir: None,
        sink: Some(Arc::new(move |e: &WatchEvent| sink_agent.on_event(e))),
        mountinfo: PathBuf::from("/proc/self/mountinfo"),
        max_file_size: config.watch.max_file_size,
        reload_gate: Some(Arc::new(Permits(agent.clone()))),
        notify: false,
        rotations: None,
    });
    let mut watchers = Vec::new();
    for (mount, _) in &mounts {
        let name = watcher::actor_name(NAMESPACE, &mount.path);
        let (actor, handle) = Actor::spawn(Some(name), WatcherActor, (mount.clone(), ctx.clone()))
            .await
            .map_err(|e| AgentError::Watcher {
                mount: mount.path.clone(),
                why: e.to_string(),
            })?;
        watchers.push((mount.path.clone(), actor, handle));
    }
    tracing::info!(
        consumer_id = %agent.consumer_id,
        workload = agent.workload.as_deref().unwrap_or("-"),
        rotor = %config.agent.rotor_url,
        mounts = mounts.len(),
        heartbeat_ms = config.agent.heartbeat.as_millis() as u64,
        "rotor agent started"
    );
    let reporter =
        crate::supervisor::AbortOnDrop::spawn(report_loop(agent.clone(), config.agent.heartbeat));
    let ended = futures::future::select_all(
        watchers
            .iter_mut()
            .map(|(path, _, handle)| Box::pin(async move { (path.clone(), handle.await) })),
    );
    let result = tokio::select! {
        () = shutdown => Ok(()),
        ((mount, _), _, _) = ended => Err(AgentError::WatcherEnded { mount }),
    };
    drop(reporter);
    for (_, actor, _) in &watchers {
        actor.stop(None);
    }
    agent.release_held_permits().await;
    result
}

impl Agent {
    /// Gives back, once each and all at once, the permits still held (a reload the stop
    /// interrupted), within [`RELEASE_AT_EXIT`]; what is left then expires at rotor. A
    /// release already under way may overlap: releasing twice is no error.
    async fn release_held_permits(&self) {
        let held = match self.shared.lock() {
            Ok(mut shared) => {
                shared.stopping = true;
                std::mem::take(&mut shared.permits)
            }
            Err(_) => return,
        };
        if held.is_empty() {
            return;
        }
        let releases = futures::future::join_all(held.iter().map(|p| self.client.release(p)));
        match tokio::time::timeout(RELEASE_AT_EXIT, releases).await {
            Ok(results) => {
                let failed = results.iter().filter(|r| r.is_err()).count();
                if failed == 0 {
                    tracing::info!(
                        permits = held.len(),
                        "reload permits still held released on the way out"
                    );
                } else {
                    tracing::warn!(
                        permits = held.len(),
                        failed,
                        "cannot release every reload permit on the way out; rotor releases them after its permit_timeout"
                    );
                }
            }
            Err(_) => tracing::warn!(
                permits = held.len(),
                "rotor did not answer the releases in time; it releases the permits after its permit_timeout"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_id_comes_from_config_then_pod_name_then_hostname() {
        let no_env = |_: &str| None;
        let pod = |name: &str| (name == "POD_NAME").then(|| "web-7d9f-abc".to_owned());
        let host = || Some("node-host\n".to_owned());
        let no_host = || None;
        assert_eq!(consumer_id(Some("given"), &pod, &host).unwrap(), "given");
        assert_eq!(consumer_id(None, &pod, &host).unwrap(), "web-7d9f-abc");
        assert_eq!(consumer_id(None, &no_env, &host).unwrap(), "node-host");
        assert!(matches!(
            consumer_id(None, &no_env, &no_host),
            Err(AgentError::NoConsumerId)
        ));
        let bad = |_: &str| Some("has space".to_owned());
        let e = consumer_id(None, &bad, &host).unwrap_err().to_string();
        assert!(e.contains("POD_NAME") && e.contains("has space"), "{e}");
    }

    #[test]
    fn files_of_one_secret_make_one_entry() {
        let db = SecretRef::new("t1", "db").unwrap();
        let api = SecretRef::new("t1", "api").unwrap();
        let f = |secret: &SecretRef, version, reloaded| FileReport {
            secret: secret.clone(),
            version,
            reloaded,
        };
        let merged = merge(vec![
            f(&db, Some(3), Some(Some(true))),
            f(&db, Some(2), None),
            f(&api, Some(5), Some(Some(true))),
            f(&api, None, Some(None)),
        ]);
        assert_eq!(merged.len(), 2, "{merged:?}");
        let api_entry = &merged[0];
        assert_eq!(
            (api_entry.secret_key.as_str(), api_entry.version),
            ("api", None)
        );
        assert_eq!(api_entry.reloaded, None, "one file's reload still pending");
        let db_entry = &merged[1];
        assert_eq!((db_entry.version, db_entry.reloaded), (Some(2), Some(true)));
        let failed = merge(vec![
            f(&db, Some(3), Some(Some(true))),
            f(&db, Some(3), Some(Some(false))),
        ]);
        assert_eq!(failed[0].reloaded, Some(false));
    }

    #[test]
    fn markers_are_read_as_numbers_or_not_at_all() {
        let dir = std::env::temp_dir().join(format!("rotor-agent-marker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("password"), "value").unwrap();
        assert_eq!(read_marker(&dir, "password", 1024), None);
        std::fs::write(dir.join("password_version"), "7\n").unwrap();
        assert_eq!(read_marker(&dir, "password", 1024), Some(7));
        std::fs::write(dir.join("password_version"), "seven").unwrap();
        assert_eq!(read_marker(&dir, "password", 1024), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
