//! The consumers actor: what every agent (a `rotor agent` sidecar in a workload's pod)
//! reported, and the fleet's reload permits.
//!
//! # Consumers
//!
//! A report (`POST /consumers/report`) says which version of each secret one consumer's
//! mount holds and whether its last reload succeeded; it is also the consumer's heartbeat.
//! The actor keeps every consumer in memory and writes its record to the store
//! (`Store::record_put`, namespace [`CONSUMERS_NS`], id = the consumer id) only when
//! something a later leader needs changes: its workload, a secret's version or reload
//! result, the set of its secrets, or whether it is gone. A heartbeat that changes nothing
//! writes nothing. On start the records are read back, and every consumer that was live is
//! treated as if it had just reported: its heartbeat times were never stored, and calling
//! them all gone at once would open every gate after a restart; a consumer that really
//! stopped is gone one `ttl` later.
//!
//! A consumer that has not reported for `[consumers] ttl` is `gone`: it no longer holds
//! expiry back. It stays listed (the admin route, `rotor consumers`) for [`GONE_KEPT`]
//! after it went, then its record is deleted. A consumer that reports again is live again.
//!
//! What the rotation actors need is published on the shared [`ConsumerBoard`]: per secret,
//! every consumer's version, reload result, last report and whether it is gone. Whenever
//! that changes for a secret in a way that can move its gate (a version, gone or back, a
//! consumer added or dropped; not a heartbeat), the secret's rotation actor gets
//! [`RotationMsg::ConsumersChanged`] and checks its gate again (see `rotation.rs`).
//!
//! # Trust
//!
//! Every agent authenticates with the one consumer token (`[server]
//! consumer_token_file`), which can report and ask for permits and nothing else. It does
//! not say *which* consumer is calling: an agent holding the token can report under
//! another pod's id (and so hold back or release expiry for it) or take permits in another
//! workload's name. The token is only as strong as the weakest pod that mounts it.
//!
//! # Reload permits
//!
//! Before a reload an agent that names a workload asks for a permit; at most
//! `[consumers] max_concurrent_reloads` are held per workload at once, so a rotation never
//! reloads a whole Deployment in the same instant. A permit is a record too (namespace
//! [`PERMITS_NS`]), so a later leader sees the permits in flight. A permit not returned
//! within `permit_timeout` is released at the next tick (its agent died). A consumer that
//! asks again while it holds one gets the same permit back (its first answer may have been
//! lost).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use super::rotation::{self, RotationMsg};
use crate::api::{AdminError, ConsumerView, PermitGrant, Report};
use crate::clock::Clock;
use crate::config::ConsumersConfig;
use crate::domain::{SecretRef, VersionNo};
use crate::metrics::{ConsumerStateLabels, KindLabels, Metrics, OutcomeLabels};
use crate::status::StatusBoard;
use crate::store::{Rev, Store, StoreError};
use crate::supervisor::TimerGuard;

/// How long a consumer refused a reload permit is told to wait before asking again.
const PERMIT_RETRY_HINT_MS: u64 = 1_000;
/// Registry name of the consumers actor (after the tree's namespace).
pub const NAME: &str = "rotor.consumers";

/// The store namespace of consumer records.
pub const CONSUMERS_NS: &str = "consumers";

/// The store namespace of reload permits.
pub const PERMITS_NS: &str = "permits";

/// How long a gone consumer stays listed before its record is deleted: a day, long enough
/// to look into why a pod stopped reporting the morning after.
pub const GONE_KEPT: Duration = Duration::from_secs(24 * 3_600);

/// The registry name of the consumers actor in the tree `namespace`.
pub fn actor_name(namespace: &str) -> String {
    format!("{namespace}{NAME}")
}

/// One consumer of one secret, as the board shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerEntry {
    pub workload: Option<String>,
    pub version: Option<VersionNo>,
    pub reloaded: Option<bool>,
    pub last_report_at: DateTime<Utc>,
    /// When it was found gone; `None` while live.
    pub gone_at: Option<DateTime<Utc>>,
}

/// Who lags behind a version of a secret ([`ConsumerBoard::lagging`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lagging {
    /// Live consumers that do not show the version.
    pub late: Vec<String>,
    /// Consumers gone since the given time without having shown it.
    pub gone: Vec<String>,
}

/// The consumers of every secret that has (or had) any: what the rotation actors gate on
/// and the admin route lists. Written by the consumers actor only.
#[derive(Debug, Default)]
pub struct ConsumerBoard {
    // A std RwLock: held for a map update or a clone, never across an await.
    entries: RwLock<HashMap<SecretRef, BTreeMap<String, ConsumerEntry>>>,
}

impl ConsumerBoard {
    /// The consumers of `secret`, by id; `None` if it never had any.
    pub fn get(&self, secret: &SecretRef) -> Option<BTreeMap<String, ConsumerEntry>> {
        self.entries.read().ok()?.get(secret).cloned()
    }

    /// Whether every live consumer of `secret` shows `version` (true when it has none).
    pub fn all_show(&self, secret: &SecretRef, version: VersionNo) -> bool {
        let Ok(entries) = self.entries.read() else {
            return false;
        };
        entries.get(secret).is_none_or(|consumers| {
            consumers
                .values()
                .all(|c| c.gone_at.is_some() || c.version == Some(version))
        })
    }

    /// The consumers of `secret` that do not show `version`: live ones, and those gone at or
    /// after `since` (they were live when the version was promoted).
    pub fn lagging(
        &self,
        secret: &SecretRef,
        version: VersionNo,
        since: Option<DateTime<Utc>>,
    ) -> Lagging {
        let mut out = Lagging::default();
        let Some(consumers) = self.get(secret) else {
            return out;
        };
        for (id, c) in consumers {
            if c.version == Some(version) {
                continue;
            }
            match c.gone_at {
                None => out.late.push(id),
                Some(at) if since.is_none_or(|s| at >= s) => out.gone.push(id),
                Some(_) => {}
            }
        }
        out
    }

    fn write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<SecretRef, BTreeMap<String, ConsumerEntry>>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// A consumer as stored: everything but its heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsumerRecord {
    #[serde(default)]
    workload: Option<String>,
    /// `tenant/key` to what the consumer shows of it.
    secrets: BTreeMap<String, Seen>,
    /// The last report that changed something (heartbeats are not stored).
    last_report_at: DateTime<Utc>,
    #[serde(default)]
    gone_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Seen {
    version: Option<VersionNo>,
    reloaded: Option<bool>,
}

struct Consumer {
    record: ConsumerRecord,
    /// The record's revision in the store; `None` before the first write.
    rev: Option<Rev>,
    /// The last report, heartbeats included.
    last_seen: DateTime<Utc>,
    /// The store does not hold the latest record (a write failed): written at the next tick.
    dirty: bool,
}

/// A reload permit as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PermitRecord {
    workload: String,
    consumer_id: String,
    expires_at: DateTime<Utc>,
}

struct Permit {
    record: PermitRecord,
    rev: Rev,
}

pub enum ConsumersMsg {
    Report {
        report: Report,
        reply: RpcReplyPort<Result<(), AdminError>>,
    },
    Acquire {
        consumer_id: String,
        workload: String,
        reply: RpcReplyPort<Result<PermitGrant, AdminError>>,
    },
    Release {
        permit_id: String,
        reply: RpcReplyPort<Result<(), AdminError>>,
    },
    /// Time to find gone consumers, drop long-gone ones, release expired permits and
    /// refresh the gauge.
    Tick,
}

/// What the consumers actor is started with.
#[derive(Clone)]
pub struct ConsumersArgs {
    pub config: ConsumersConfig,
    pub store: Arc<dyn Store>,
    pub board: Arc<ConsumerBoard>,
    pub status: Arc<StatusBoard>,
    pub metrics: Metrics,
    pub clock: Clock,
    pub namespace: String,
    /// The managed secrets: a report naming another is refused (404).
    pub managed: Arc<BTreeSet<SecretRef>>,
}

pub struct ConsumersState {
    args: ConsumersArgs,
    consumers: HashMap<String, Consumer>,
    permits: HashMap<String, Permit>,
    tick: TimerGuard,
}

pub struct ConsumersActor;

impl Actor for ConsumersActor {
    type Msg = ConsumersMsg;
    type State = ConsumersState;
    type Arguments = ConsumersArgs;

    /// Loads every consumer and permit before the rotation actors start (the tree starts
    /// this actor first), so no gate is checked against an empty board.
    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let now = args.clock.now();
        let mut state = ConsumersState {
            args,
            consumers: HashMap::new(),
            permits: HashMap::new(),
            tick: TimerGuard::new(),
        };
        for rec in state.args.store.record_list(CONSUMERS_NS).await? {
            match serde_json::from_slice::<ConsumerRecord>(&rec.bytes) {
                Ok(record) => {
                    state.consumers.insert(
                        rec.id,
                        Consumer {
                            record,
                            rev: Some(rec.rev),
                            // Fresh at load: see the module doc.
                            last_seen: now,
                            dirty: false,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(consumer = %rec.id, error = %e, "unreadable consumer record; skipped");
                }
            }
        }
        for rec in state.args.store.record_list(PERMITS_NS).await? {
            match serde_json::from_slice::<PermitRecord>(&rec.bytes) {
                Ok(record) => {
                    state.permits.insert(
                        rec.id,
                        Permit {
                            record,
                            rev: rec.rev,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(permit = %rec.id, error = %e, "unreadable permit record; skipped");
                }
            }
        }
        let ids: Vec<String> = state.consumers.keys().cloned().collect();
        for id in ids {
            state.publish(&id, &BTreeSet::new());
        }
        state.arm_tick(&myself);
        tracing::info!(
            consumers = state.consumers.len(),
            permits = state.permits.len(),
            "consumers loaded from the store"
        );
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConsumersMsg::Report { report, reply } => {
                let r = state.report(report).await;
                let outcome = if r.is_ok() { "accepted" } else { "rejected" };
                state.count(&state.args.metrics.consumer_reports_total, outcome);
                let _ = reply.send(r);
            }
            ConsumersMsg::Acquire {
                consumer_id,
                workload,
                reply,
            } => {
                let r = state.acquire(consumer_id, workload).await;
                let _ = reply.send(r);
            }
            ConsumersMsg::Release { permit_id, reply } => {
                let r = state.release(&permit_id, "released").await;
                let _ = reply.send(r);
            }
            ConsumersMsg::Tick => {
                state.tick().await;
                state.arm_tick(&myself);
            }
        }
        Ok(())
    }
}

impl ConsumersState {
    fn arm_tick(&mut self, myself: &ActorRef<ConsumersMsg>) {
        // A quarter of the shorter timeout: a consumer is found gone at most a quarter
        // `ttl` late, a dead agent's permit a quarter `permit_timeout` late.
        let shorter = self.args.config.ttl.min(self.args.config.permit_timeout);
        let every = (shorter / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
        self.tick.arm(every, myself.clone(), || ConsumersMsg::Tick);
    }

    fn count(
        &self,
        family: &prometheus_client::metrics::family::Family<
            OutcomeLabels,
            prometheus_client::metrics::counter::Counter,
        >,
        outcome: &str,
    ) {
        family
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    async fn report(&mut self, report: Report) -> Result<(), AdminError> {
        for (secret, _, _) in &report.secrets {
            if !self.args.managed.contains(secret) {
                return Err(AdminError::UnknownSecret(secret.to_string()));
            }
        }
        let now = self.args.clock.now();
        let secrets: BTreeMap<String, Seen> = report
            .secrets
            .iter()
            .map(|(s, version, reloaded)| {
                (
                    s.to_string(),
                    Seen {
                        version: *version,
                        reloaded: *reloaded,
                    },
                )
            })
            .collect();
        let id = report.consumer_id;
        let (changed, before) = match self.consumers.get_mut(&id) {
            Some(c) => {
                let changed = c.record.workload != report.workload
                    || c.record.secrets != secrets
                    || c.record.gone_at.is_some();
                let before: BTreeSet<String> = c.record.secrets.keys().cloned().collect();
                c.last_seen = now;
                if changed {
                    if c.record.gone_at.is_some() {
                        tracing::info!(consumer = %id, "consumer reports again");
                    }
                    c.record.workload = report.workload;
                    c.record.secrets = secrets;
                    c.record.gone_at = None;
                    c.record.last_report_at = now;
                    c.dirty = true;
                }
                (changed, before)
            }
            None => {
                tracing::info!(consumer = %id, workload = ?report.workload, "new consumer");
                self.consumers.insert(
                    id.clone(),
                    Consumer {
                        record: ConsumerRecord {
                            workload: report.workload,
                            secrets,
                            last_report_at: now,
                            gone_at: None,
                        },
                        rev: None,
                        last_seen: now,
                        dirty: true,
                    },
                );
                (true, BTreeSet::new())
            }
        };
        if changed {
            self.persist(&id).await;
            self.publish(&id, &before);
        } else {
            self.heartbeat(&id, now);
        }
        Ok(())
    }

    /// Only the last report time moved: update it on the board, nudge no one.
    fn heartbeat(&self, id: &str, now: DateTime<Utc>) {
        let Some(c) = self.consumers.get(id) else {
            return;
        };
        let mut board = self.args.board.write();
        for name in c.record.secrets.keys() {
            if let Some(secret) = SecretRef::parse(name)
                && let Some(entry) = board.get_mut(&secret).and_then(|m| m.get_mut(id))
            {
                entry.last_report_at = now;
            }
        }
    }

    /// Puts consumer `id` on the board for each of its secrets (and takes it off those in
    /// `before` it no longer reports), then nudges the rotation actor of every secret
    /// touched.
    fn publish(&self, id: &str, before: &BTreeSet<String>) {
        let mut touched = Vec::new();
        {
            let mut board = self.args.board.write();
            let current = self.consumers.get(id);
            if let Some(c) = current {
                for (name, seen) in &c.record.secrets {
                    let Some(secret) = SecretRef::parse(name) else {
                        continue;
                    };
                    board.entry(secret.clone()).or_default().insert(
                        id.to_owned(),
                        ConsumerEntry {
                            workload: c.record.workload.clone(),
                            version: seen.version,
                            reloaded: seen.reloaded,
                            last_report_at: c.last_seen.max(c.record.last_report_at),
                            gone_at: c.record.gone_at,
                        },
                    );
                    touched.push(secret);
                }
            }
            for name in before {
                if current.is_some_and(|c| c.record.secrets.contains_key(name)) {
                    continue;
                }
                if let Some(secret) = SecretRef::parse(name) {
                    if let Some(m) = board.get_mut(&secret) {
                        m.remove(id);
                    }
                    touched.push(secret);
                }
            }
        }
        // Only live actors hear it: a secret whose expiry waits for agents keeps its actor
        // through grace, and outside grace the message changes nothing (a hibernating
        // secret checks its gate when it wakes).
        for secret in touched {
            let name = rotation::actor_name(&self.args.namespace, &secret);
            if let Some(cell) = ractor::registry::where_is(name) {
                let actor: ActorRef<RotationMsg> = cell.into();
                let _ = actor.cast(RotationMsg::ConsumersChanged);
            }
        }
    }

    /// Writes consumer `id`'s record if it changed. A failed write is logged and kept for
    /// the next tick; a check-and-set conflict (another rotor wrote it) is resolved by
    /// writing this process's view over it, which is the newer: the consumer reports here.
    async fn persist(&mut self, id: &str) {
        let Some(c) = self.consumers.get(id) else {
            return;
        };
        if !c.dirty {
            return;
        }
        let bytes = match serde_json::to_vec(&c.record) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(consumer = %id, error = %e, "cannot encode the consumer record");
                return;
            }
        };
        let store = &self.args.store;
        let mut result = store.record_put(CONSUMERS_NS, id, &bytes, c.rev).await;
        if let Err(StoreError::Conflict { .. }) = result {
            result = match store.record_get(CONSUMERS_NS, id).await {
                Ok(found) => {
                    store
                        .record_put(CONSUMERS_NS, id, &bytes, found.map(|(_, rev)| rev))
                        .await
                }
                Err(e) => Err(e),
            };
        }
        let Some(c) = self.consumers.get_mut(id) else {
            return;
        };
        match result {
            Ok(rev) => {
                c.rev = Some(rev);
                c.dirty = false;
            }
            Err(e) => {
                tracing::warn!(consumer = %id, error = %e, "cannot store the consumer record; trying again at the next tick");
            }
        }
    }

    async fn acquire(
        &mut self,
        consumer_id: String,
        workload: String,
    ) -> Result<PermitGrant, AdminError> {
        let now = self.args.clock.now();
        let timeout = self.args.config.permit_timeout;
        let expires_in = |at: DateTime<Utc>| (at - now).num_milliseconds().max(0) as u64;
        // The same consumer asking again gets its permit back: its first answer may have
        // been lost on the way.
        if let Some((id, p)) = self
            .permits
            .iter()
            .find(|(_, p)| p.record.consumer_id == consumer_id && p.record.workload == workload)
        {
            return Ok(PermitGrant {
                permit_id: id.clone(),
                expires_in_ms: expires_in(p.record.expires_at),
            });
        }
        let held: Vec<&Permit> = self
            .permits
            .values()
            .filter(|p| p.record.workload == workload)
            .collect();
        let max = self.args.config.max_concurrent_reloads as usize;
        if held.len() >= max {
            // A held permit is usually returned as soon as its reload ends (seconds), long
            // before it would expire: ask again after about a second, or at the earliest
            // expiry if that comes sooner. (Waiting for the expiry would hold a rollout of
            // a whole workload for `permit_timeout` per wave.)
            let retry_after_ms = held
                .iter()
                .map(|p| expires_in(p.record.expires_at))
                .min()
                .unwrap_or(PERMIT_RETRY_HINT_MS)
                .clamp(1, PERMIT_RETRY_HINT_MS);
            self.count(&self.args.metrics.consumer_permits_total, "refused");
            return Err(AdminError::Busy {
                message: format!(
                    "workload {workload} already holds {} of its {max} reload permits; ask again later",
                    held.len()
                ),
                retry_after_ms,
            });
        }
        let permit_id = {
            use rand::RngCore as _;
            let mut raw = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut raw);
            hex::encode(raw)
        };
        let record = PermitRecord {
            workload,
            consumer_id,
            expires_at: now + TimeDelta::from_std(timeout).unwrap_or(TimeDelta::MAX),
        };
        let bytes = serde_json::to_vec(&record)
            .map_err(|e| AdminError::Internal(format!("cannot encode a permit: {e}")))?;
        let rev = self
            .args
            .store
            .record_put(PERMITS_NS, &permit_id, &bytes, None)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot store a reload permit");
                AdminError::Unavailable(format!("cannot store the permit: {e}"))
            })?;
        tracing::debug!(permit = %permit_id, workload = %record.workload, consumer = %record.consumer_id, "reload permit granted");
        self.permits
            .insert(permit_id.clone(), Permit { record, rev });
        self.count(&self.args.metrics.consumer_permits_total, "granted");
        Ok(PermitGrant {
            permit_id,
            expires_in_ms: timeout.as_millis() as u64,
        })
    }

    /// Releases a permit (`outcome`: `released` by its agent, `expired`). Unknown permits
    /// are no error: releasing is idempotent.
    async fn release(&mut self, permit_id: &str, outcome: &str) -> Result<(), AdminError> {
        let Some(p) = self.permits.get(permit_id) else {
            return Ok(());
        };
        match self
            .args
            .store
            .record_delete(PERMITS_NS, permit_id, p.rev)
            .await
        {
            // A conflict: another rotor changed it; it is not ours to hold any more.
            Ok(()) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => {
                tracing::warn!(permit = %permit_id, error = %e, "cannot delete a reload permit");
                return Err(AdminError::Unavailable(format!(
                    "cannot release the permit: {e}"
                )));
            }
        }
        if let Some(p) = self.permits.remove(permit_id) {
            tracing::debug!(permit = %permit_id, workload = %p.record.workload, outcome, "reload permit returned");
        }
        self.count(&self.args.metrics.consumer_permits_total, outcome);
        Ok(())
    }

    async fn tick(&mut self) {
        let now = self.args.clock.now();
        let ttl = TimeDelta::from_std(self.args.config.ttl).unwrap_or(TimeDelta::MAX);
        let kept = TimeDelta::from_std(GONE_KEPT).unwrap_or(TimeDelta::MAX);
        let mut newly_gone = Vec::new();
        let mut expired = Vec::new();
        for (id, c) in &mut self.consumers {
            match c.record.gone_at {
                None if now - c.last_seen >= ttl => {
                    c.record.gone_at = Some(now);
                    c.dirty = true;
                    newly_gone.push(id.clone());
                }
                Some(at) if now - at >= kept => expired.push(id.clone()),
                _ => {}
            }
        }
        for id in &newly_gone {
            tracing::warn!(consumer = %id, ttl = ?self.args.config.ttl, "consumer stopped reporting: gone, no longer holding expiry back");
            self.publish(id, &BTreeSet::new());
        }
        for id in expired {
            let Some(c) = self.consumers.get(&id) else {
                continue;
            };
            let result = match c.rev {
                Some(rev) => self.args.store.record_delete(CONSUMERS_NS, &id, rev).await,
                None => Ok(()),
            };
            match result {
                Ok(()) | Err(StoreError::Conflict { .. }) => {
                    let before: BTreeSet<String> = c.record.secrets.keys().cloned().collect();
                    self.consumers.remove(&id);
                    self.publish(&id, &before);
                    tracing::info!(consumer = %id, "gone consumer forgotten");
                }
                Err(e) => {
                    tracing::warn!(consumer = %id, error = %e, "cannot delete a gone consumer's record");
                }
            }
        }
        let dirty: Vec<String> = self
            .consumers
            .iter()
            .filter(|(_, c)| c.dirty)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dirty {
            self.persist(&id).await;
        }
        let overdue: Vec<String> = self
            .permits
            .iter()
            .filter(|(_, p)| p.record.expires_at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in overdue {
            if let Some(p) = self.permits.get(&id) {
                tracing::warn!(permit = %id, workload = %p.record.workload, consumer = %p.record.consumer_id, "reload permit not returned within permit_timeout; released");
            }
            let _ = self.release(&id, "expired").await;
        }
        self.refresh_gauge();
    }

    /// `rotor_consumers{state}`: every consumer-secret pair, `current` when it shows the
    /// secret's current version.
    fn refresh_gauge(&self) {
        let mut counts = [0i64; 3];
        for c in self.consumers.values() {
            for (name, seen) in &c.record.secrets {
                let i = if c.record.gone_at.is_some() {
                    2
                } else {
                    let current = SecretRef::parse(name)
                        .and_then(|s| self.args.status.get(&s))
                        .and_then(|s| s.current);
                    if current.is_some() && seen.version == current {
                        0
                    } else {
                        1
                    }
                };
                counts[i] += 1;
            }
        }
        for (state, n) in crate::metrics::CONSUMER_STATES.iter().zip(counts) {
            self.args
                .metrics
                .consumers
                .get_or_create(&ConsumerStateLabels {
                    state: (*state).to_owned(),
                })
                .set(n);
        }
    }
}

/// The consumers of `secret` as the admin route lists them, sorted by id: `gone` when gone,
/// `current` when it shows `current`, `lagging` otherwise.
pub fn views(
    board: &ConsumerBoard,
    secret: &SecretRef,
    current: Option<VersionNo>,
) -> Vec<ConsumerView> {
    board
        .get(secret)
        .unwrap_or_default()
        .into_iter()
        .map(|(id, c)| ConsumerView {
            consumer_id: id,
            workload: c.workload,
            version: c.version,
            state: if c.gone_at.is_some() {
                "gone"
            } else if current.is_some() && c.version == current {
                "current"
            } else {
                "lagging"
            }
            .to_owned(),
            last_report_at: c.last_report_at,
            reloaded: c.reloaded,
        })
        .collect()
}

/// Counts the consumers named at an expiry (`late` or `gone`).
pub fn count_late(metrics: &Metrics, lagging: &Lagging) {
    for (kind, n) in [("late", lagging.late.len()), ("gone", lagging.gone.len())] {
        if n > 0 {
            metrics
                .consumer_late_expiries_total
                .get_or_create(&KindLabels {
                    kind: kind.to_owned(),
                })
                .inc_by(n as u64);
        }
    }
}

/// The consumers of `secret` as the admin route lists them, read from the stored records
/// (namespace [`CONSUMERS_NS`]) instead of the board: what a replica that does not lead
/// answers. `lastReportAt` is the last report that changed something (heartbeats are not
/// stored); unreadable records are skipped, as the actor skips them at load.
pub fn views_from_records(
    records: &[crate::store::Record],
    secret: &SecretRef,
    current: Option<VersionNo>,
) -> Vec<ConsumerView> {
    let name = secret.to_string();
    let mut views: Vec<ConsumerView> = records
        .iter()
        .filter_map(|rec| {
            let record: ConsumerRecord = serde_json::from_slice(&rec.bytes).ok()?;
            let seen = record.secrets.get(&name)?;
            Some(ConsumerView {
                consumer_id: rec.id.clone(),
                workload: record.workload.clone(),
                version: seen.version,
                state: if record.gone_at.is_some() {
                    "gone"
                } else if current.is_some() && seen.version == current {
                    "current"
                } else {
                    "lagging"
                }
                .to_owned(),
                last_report_at: record.last_report_at,
                reloaded: seen.reloaded,
            })
        })
        .collect();
    views.sort_by(|a, b| a.consumer_id.cmp(&b.consumer_id));
    views
}
