//! The bulk path of a first start: the first versions of many new secrets, written in
//! batches before their rotation actors start.
//!
//! Left to the actors, each new secret makes its first version alone: five commits and a
//! version write, one secret at a time per actor, throttled by
//! `runtime.max_concurrent_rotations`. Here [`run`] finds, with one listing of the store
//! ([`Store::secrets`]), the secrets that have no state at all and whose target has nothing
//! to do for any step ([`Target::store_only`]: `type = "none"`), runs the state machine's
//! first rotation for each in memory ([`first_rotation`]: resume, the timer, every step
//! done), generates the values on blocking threads while the previous batch is written,
//! and writes each batch of [`BATCH`] secrets with [`Store::create_first_versions`] (one
//! transaction in the embedded store). What a secret ends with is exactly what its actor
//! would have committed at the end of its first rotation: version 1 `current`, the idle
//! state with its next due time, the attempt's history record; only the timestamps differ
//! (one `now` per batch). The actor that starts afterwards resumes from that state like
//! after any restart and has nothing to write.
//!
//! A secret whose target must apply and test (PostgreSQL, Redis, hooks, a `none` target a
//! test made fail or slow) is left to its actor: its first effect on the target is I/O
//! the actor owns, with its step timeout, retries and supervision.
//!
//! Metrics and notices are the actor path's: `secret_rotations_total{outcome="succeeded"}`
//! and the duration histogram per secret written, the `rotation_started` and
//! `rotation_succeeded` notices, sent once the notifier runs ([`FirstVersions::notify`]).
//! Progress goes to the log every [`PROGRESS_EVERY`] (done, total, rate) and to the gauge
//! `rotor_first_versions_pending`.
//!
//! A crash, or a store error, half-way leaves whole batches and nothing of the rest: the
//! secrets not written have no state, so the next start writes them (and, after an error,
//! their actors make their first versions themselves in this run).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::managed::ManagedSecrets;
use super::notifier::{self, NotifierMsg};
use super::rotation::RotationSpec;
use crate::clock::Clock;
use crate::domain::{HistoryRecord, Outcome, RotationId, SecretRef, Step, VersionNo};
use crate::generator;
use crate::machine::{self, Effect, Event, Notice, Phase, Rules, SecretState};
use crate::metrics::Metrics;
use crate::schedule::secret_seed;
use crate::store::{FirstVersion, Store, StoreError};
use crate::supervisor::AbortOnDrop;

/// Secrets per batch (one transaction of the embedded store): about a megabyte written
/// per commit, so one fsync covers a thousand secrets.
pub const BATCH: usize = 1_000;

/// How often progress is logged while the bulk path runs.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The most steps a first rotation takes in memory (resume, timer, four steps); more
/// means the machine did something a first rotation does not, and the actor takes over.
const MAX_STEPS: usize = 16;

/// The first rotation of one secret, as the machine ran it in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstRotation {
    /// The state after it: idle, the first version current.
    pub state: SecretState,
    /// The attempt that made the first version.
    pub rotation: RotationId,
    /// The first version.
    pub version: VersionNo,
    pub history: Option<HistoryRecord>,
    /// The notices the machine sent on the way, in order.
    pub notices: Vec<Notice>,
    /// The outcomes the machine reported, in order (`succeeded` once).
    pub outcomes: Vec<Outcome>,
}

/// What the bulk path did.
#[derive(Debug, Default)]
pub struct FirstVersions {
    /// Secrets without state whose first version it wrote.
    pub created: usize,
    /// Secrets without state left to their rotation actors: their target must apply and
    /// test, or the bulk path stopped on a store error before their batch.
    pub left_to_actors: usize,
    /// The store error that stopped it, if one did.
    pub failed: Option<StoreError>,
    /// The secrets written and when, for their notices once the notifier runs.
    written: Vec<(SecretRef, DateTime<Utc>)>,
    /// The notices of a first rotation (the same for every secret: a trigger and a version
    /// number, no time), with the rotation they name.
    notices: Vec<(RotationId, Notice)>,
}

impl FirstVersions {
    /// Sends every written secret's notices to the notifier of the tree `namespace`, as the
    /// actor would have while rotating. Call it once the notifier runs: before, they would
    /// only reach the log.
    pub fn notify(self, namespace: &str) {
        for (secret, at) in self.written {
            for (rotation, notice) in &self.notices {
                notifier::send(
                    namespace,
                    NotifierMsg::Event {
                        secret: secret.clone(),
                        rotation: *rotation,
                        notice: notice.clone(),
                        at,
                    },
                );
            }
        }
    }
}

/// The rules of `spec`'s policy, as the rotation actor builds them for every step.
fn with_rules<T>(spec: &RotationSpec, f: impl FnOnce(&Rules<'_>) -> T) -> T {
    let next_due = |last, now| (spec.next_due)(last, now);
    let rules = Rules {
        grace: spec.grace,
        max_attempts: spec.max_attempts,
        retry_backoff: spec.retry_backoff,
        retry_backoff_max: spec.retry_backoff_max,
        expiry_gate: spec.expiry_gate,
        jitter_seed: secret_seed(&spec.secret),
        next_due: &next_due,
    };
    f(&rules)
}

/// Runs the first rotation of a secret that has no state through the machine, at `now`,
/// as its actor would with a target on which every step succeeds at once: `Resume` (due
/// now, since there is no version), the timer, then `StepDone` for each step effect.
/// `None` if the machine does not end idle with a first version current within
/// [`MAX_STEPS`] steps, or asks for anything but those steps, a timer and notices (it never
/// does for a first rotation; the actor then makes the first version itself).
pub fn first_rotation(spec: &RotationSpec, now: DateTime<Utc>) -> Option<FirstRotation> {
    with_rules(spec, |rules| {
        let mut state = SecretState::default();
        let mut out = FirstRotation {
            state: SecretState::default(),
            rotation: RotationId(0),
            version: 0,
            history: None,
            notices: Vec::new(),
            outcomes: Vec::new(),
        };
        let mut events = vec![Event::Resume, Event::Timer];
        events.reverse();
        for _ in 0..MAX_STEPS {
            let Some(event) = events.pop() else { break };
            let t = rules.step(&state, event, now).ok()?;
            out.outcomes.extend(t.outcome);
            if t.history.is_some() {
                out.history = t.history;
            }
            for effect in t.effects {
                let (rotation, step) = match effect {
                    Effect::Generate { rotation, .. } => (rotation, Step::Generate),
                    Effect::Apply { rotation, .. } => (rotation, Step::Apply),
                    Effect::Test { rotation, .. } => (rotation, Step::Test),
                    Effect::Promote { rotation, .. } => (rotation, Step::Promote),
                    Effect::Notify { notice, .. } => {
                        out.notices.push(notice);
                        continue;
                    }
                    Effect::ArmTimer { .. } | Effect::CancelTimer { .. } => continue,
                    Effect::Revoke { .. } | Effect::Restore { .. } => return None,
                };
                events.push(Event::StepDone { rotation, step });
            }
            state = t.state;
        }
        let done = events.is_empty()
            && matches!(state.phase, Phase::Idle { .. })
            && state.current == Some(state.latest_version)
            && state.current.is_some();
        if !done {
            return None;
        }
        out.rotation = RotationId(state.rotations_started);
        out.version = state.latest_version;
        out.state = state;
        Some(out)
    })
}

/// One generated batch: the store's input, and per secret its spec for the metrics.
struct Batch {
    /// Secrets asked for, made or not.
    asked: usize,
    firsts: Vec<FirstVersion>,
    specs: Vec<Arc<RotationSpec>>,
    now: DateTime<Utc>,
    notices: Vec<(RotationId, Notice)>,
    outcomes: Vec<Outcome>,
}

/// Builds one secret's first version: its machine run, its value (generated, then shaped
/// by its target as the generate step does), and what the store writes.
fn build(spec: &RotationSpec, now: DateTime<Utc>) -> Option<(FirstVersion, FirstRotation)> {
    let run = first_rotation(spec, now)?;
    let journal = serde_json::to_vec(&run.state).ok()?;
    let first = FirstVersion {
        secret: spec.secret.clone(),
        version: run.version,
        rotation: run.rotation,
        value: generator::generate(&spec.generator),
        journal,
        labels: machine::labels(&run.state),
        history: run.history.clone(),
    };
    Some((first, run))
}

/// Generates a batch on blocking threads (value generation and the machine runs are CPU
/// work), split over the machine's cores.
async fn generate(specs: Vec<Arc<RotationSpec>>, now: DateTime<Utc>) -> Batch {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_thread = specs.len().div_ceil(threads).max(1);
    let mut parts = Vec::new();
    for chunk in specs.chunks(per_thread) {
        let chunk = chunk.to_vec();
        parts.push(tokio::task::spawn_blocking(move || {
            chunk
                .into_iter()
                .filter_map(|spec| build(&spec, now).map(|(first, run)| (first, run, spec)))
                .collect::<Vec<_>>()
        }));
    }
    let mut batch = Batch {
        asked: specs.len(),
        firsts: Vec::with_capacity(specs.len()),
        specs: Vec::with_capacity(specs.len()),
        now,
        notices: Vec::new(),
        outcomes: Vec::new(),
    };
    for part in parts {
        // A panicking generator thread loses its part: those secrets are left to actors.
        let Ok(part) = part.await else { continue };
        for (mut first, run, spec) in part {
            // The target shapes what consumers read, as in the actor's generate step.
            match spec.target.shape_value(first.version, first.value).await {
                Ok(value) => first.value = value,
                Err(e) => {
                    tracing::warn!(secret = %spec.secret, error = %e, "shaping the first value failed; its rotation actor makes it");
                    continue;
                }
            }
            if batch.notices.is_empty() {
                batch.notices = run
                    .notices
                    .iter()
                    .map(|n| (run.rotation, n.clone()))
                    .collect();
                batch.outcomes = run.outcomes.clone();
            }
            batch.firsts.push(first);
            batch.specs.push(spec);
        }
    }
    batch
}

/// Counts one written first version as the actor counts a promotion.
fn count(metrics: &Metrics, spec: &RotationSpec, outcomes: &[Outcome], now: DateTime<Utc>) {
    for outcome in outcomes {
        let succeeded = *outcome == Outcome::Succeeded;
        if succeeded {
            // Started and promoted at the same `now`.
            metrics
                .rotation_duration_seconds
                .get_or_create(&crate::metrics::PolicyLabels {
                    policy: spec.policy.clone(),
                })
                .observe(0.0);
        }
        metrics.rotation(&spec.policy, outcome.as_str());
        metrics.secret_rotation(
            spec.secret.tenant(),
            spec.secret.key(),
            outcome.as_str(),
            succeeded.then_some(0.0),
            succeeded.then(|| now.timestamp()),
        );
    }
}

/// The bulk path (see the module doc): writes the first version of every secret of
/// `secrets` that has no state in `store` and a store-only target, `batch` secrets per
/// [`Store::create_first_versions`] call. Never fails: a store error stops it, is logged
/// and returned in [`FirstVersions::failed`], and the rest is left to the rotation actors.
pub async fn run(
    secrets: &ManagedSecrets,
    store: &Arc<dyn Store>,
    metrics: &Metrics,
    clock: Clock,
    batch: usize,
) -> FirstVersions {
    let mut out = FirstVersions::default();
    let started: BTreeSet<SecretRef> = match store.secrets().await {
        Ok(s) => s.into_iter().collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the secrets that have state; first versions are left to the rotation actors");
            out.failed = Some(e);
            return out;
        }
    };
    // Specs are built for the new secrets only (and dropped after the bulk path).
    let (bulk, left): (Vec<_>, Vec<_>) = secrets
        .iter()
        .filter(|(secret, _)| !started.contains(*secret))
        .filter_map(|(secret, _)| secrets.spec(secret))
        .partition(|spec| spec.target.store_only());
    drop(started);
    out.left_to_actors = left.len();
    let total = bulk.len();
    if total == 0 {
        return out;
    }
    metrics.first_versions_pending.set(total as i64);
    tracing::info!(
        secrets = total,
        left_to_actors = left.len(),
        batch,
        "creating first versions in bulk"
    );
    let began = tokio::time::Instant::now();
    let mut logged = began;
    // Generation runs one batch ahead of the writes.
    let (tx, mut rx) = mpsc::channel::<Batch>(1);
    let _producer = {
        let batch = batch.max(1);
        AbortOnDrop::spawn(async move {
            for chunk in bulk.chunks(batch) {
                let generated = generate(chunk.to_vec(), clock.now()).await;
                if tx.send(generated).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut seen = 0;
    while let Some(b) = rx.recv().await {
        seen += b.asked;
        match store.create_first_versions(&b.firsts, b.now).await {
            Ok(written) => {
                metrics.store_up.set(1);
                for (spec, w) in b.specs.iter().zip(written) {
                    if w {
                        count(metrics, spec, &b.outcomes, b.now);
                        out.written.push((spec.secret.clone(), b.now));
                        out.created += 1;
                    }
                }
                if out.notices.is_empty() {
                    out.notices = b.notices;
                }
            }
            Err(e) => {
                metrics.store_up.set(0);
                tracing::error!(
                    error = %e,
                    done = out.created,
                    total,
                    "writing first versions failed; the rotation actors make the rest"
                );
                out.failed = Some(e);
                break;
            }
        }
        metrics.first_versions_pending.set((total - seen) as i64);
        let now = tokio::time::Instant::now();
        if now - logged >= PROGRESS_EVERY {
            logged = now;
            tracing::info!(
                done = out.created,
                total,
                per_second = rate(out.created, now - began),
                "creating first versions"
            );
        }
    }
    // Secrets neither written nor skipped (a failed batch and those after it, or a value
    // that could not be made) get theirs from their actors.
    out.left_to_actors += total - out.created.min(total);
    metrics.first_versions_pending.set(0);
    tracing::info!(
        created = out.created,
        total,
        seconds = began.elapsed().as_secs_f64(),
        per_second = rate(out.created, began.elapsed()),
        "first versions created in bulk"
    );
    out
}

fn rate(done: usize, elapsed: Duration) -> u64 {
    (done as f64 / elapsed.as_secs_f64().max(1e-3)) as u64
}
