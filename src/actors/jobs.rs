//! The jobs actor: emergency rotations of many secrets at once (`POST
//! /admin/secrets/rotate-all`), at a bounded rate and concurrency, with progress, cancel and
//! resumption after a restart.
//!
//! # A job
//!
//! A job selects managed secrets (`tenantId`, `policy`, `keyGlob`, or `all`); the list is
//! fixed and sorted when the job is created and stored once as a record (namespace
//! [`SECRETS_NS`], id = the job id). The job then walks it in order: at most
//! `ratePerSecond` starts a second (a token bucket refilled on each tick) and at most
//! `maxConcurrent` secrets being worked on at once. Each start asks the secret's rotation
//! actor for [`RotationMsg::JobRotate`], which stamps the job's id on the attempt's run
//! (so it is in the secret's journal, committed before the actor answers). A secret in
//! grace first gets [`RotationMsg::ExpireNow`] (its previous version expires at once); a
//! secret with an attempt in flight that is not the job's (a scheduled one, the expiry
//! just asked for) is asked again later, never skipped. The rotation actor reports each
//! job attempt's outcome back ([`report_outcome`]): promoted counts as `done`, an attempt
//! that ended without promotion as `failed`.
//!
//! # What is stored, and resuming
//!
//! Progress is one record per job (namespace [`JOBS_NS`], id = the job id), written at most
//! once a second while it changes, at the end, and before the job passes its reservation:
//! `cursor` (every secret before it was reached), `reserved` (no secret at or after it was
//! started), the counts, and `open`, the secrets before `cursor` not finished yet. So a
//! write covers [`RESERVE_BATCH`] starts, not one. After a restart (or on a later leader)
//! the job reads each secret of `open` and of `cursor..reserved` back from the store: a
//! journal whose run carries the job's id is the job's attempt (still in flight: waited
//! for; promoted: done), a history record of a job attempt started after the job was
//! created is a finished one (done or failed by its outcome), and anything else was not
//! started and is started now. No secret is started twice: every start is either recorded
//! in the journal before the job hears of it, or was never made. (The history check takes
//! any job's attempt after this job's creation as this job's; two overlapping jobs on one
//! secret then rotate it once, which is what both asked for.)
//!
//! In-flight attempts whose outcome did not arrive (the jobs actor restarted between a
//! promotion and its report) are looked up in the store again after [`RECHECK_AFTER`].
//!
//! At most [`MAX_RUNNING_JOBS`] run at once. Finished and cancelled jobs stay readable
//! (their records stay in the store) for [`ENDED_JOBS_KEPT`] after they ended; then a sweep
//! (at start and every [`SWEEP_EVERY`]) deletes both of their records, so the store does
//! not grow with every job ever run.
//!
//! # Reading a job
//!
//! `GET /admin/jobs/{id}` reads the [`JobBoard`], not the actor itself: while a job runs
//! the actor's mailbox holds every attempt's outcome, and a read behind them would wait for
//! all of them (tens of milliseconds at a thousand rotations a second). The actor publishes
//! a job's view when it starts and when it is cancelled (before the answer), at its end,
//! and while it runs once a tick (20 ms): a read is at most a tick behind.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::managed::ManagedSecrets;
use super::notifier;
use super::rotation::{RotationContext, RotationMsg};
use crate::api::{AdminError, JobRequest, JobSelector, JobView};
use crate::clock::Clock;
use crate::domain::{Outcome, RotationId, SecretRef, Trigger};
use crate::machine::{Phase, Rejection, SecretState};
use crate::metrics::{Metrics, OutcomeLabels, StateLabels};
use crate::notify::Notification;
use crate::status::StatusBoard;
use crate::store::{Rev, Store, StoreError};
use crate::supervisor::TimerGuard;

/// The actor's registry name (after the tree's namespace).
pub const NAME: &str = "rotor.jobs";

/// Record namespace of the jobs' progress.
pub const JOBS_NS: &str = "jobs";
/// Record namespace of each job's list of secrets (written once).
pub const SECRETS_NS: &str = "job-secrets";

/// Jobs running at once; a further request is refused (409) until one ends.
pub const MAX_RUNNING_JOBS: usize = 4;

/// Starts covered by one write of the progress record (see the module doc).
pub const RESERVE_BATCH: u32 = 1024;

/// How often a running job starts what it may.
const TICK: Duration = Duration::from_millis(20);

/// How often progress is written while it changes.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// An attempt in flight this long without its outcome is looked up in the store.
pub const RECHECK_AFTER: Duration = Duration::from_secs(10);

/// How long a call to a rotation actor may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A secret whose rotation actor cannot be reached this many times in a row counts as
/// failed (its actor is gone for good, or the tree is stopping).
const MAX_UNAVAILABLE: u32 = 30;

/// History records read back per secret when resuming.
const HISTORY_LOOKBACK: usize = 20;

/// How long a finished or cancelled job stays readable (and its records stored) after it
/// ended: a week, long enough for an incident review to read it back.
pub const ENDED_JOBS_KEPT: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// How often ended jobs past [`ENDED_JOBS_KEPT`] are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// The latest view of every job the jobs actor holds: what `GET /admin/jobs/{id}` answers
/// with (see the module doc). Written only by the jobs actor; a lock held for a map
/// look-up or insert at a time, never across an await.
#[derive(Default)]
pub struct JobBoard {
    /// `None` until the actor (re)loaded the jobs from the store: until then a job that
    /// exists may be missing, so a read is told to try again rather than 404.
    views: RwLock<Option<BTreeMap<String, JobView>>>,
}

impl JobBoard {
    /// The view of job `id`.
    pub fn view(&self, id: &str) -> Result<JobView, AdminError> {
        let views = self.views.read().unwrap_or_else(|p| p.into_inner());
        match views.as_ref() {
            None => Err(AdminError::Unavailable(
                "the jobs actor is loading the jobs; try again".into(),
            )),
            Some(views) => views.get(id).cloned().ok_or_else(|| unknown_job(id)),
        }
    }

    /// Replaces every view (after a load), or marks the board as loading (`None`).
    fn replace(&self, all: Option<BTreeMap<String, JobView>>) {
        *self.views.write().unwrap_or_else(|p| p.into_inner()) = all;
    }

    fn publish(&self, job: &Job) {
        let view = job.view();
        let mut views = self.views.write().unwrap_or_else(|p| p.into_inner());
        views
            .get_or_insert_with(BTreeMap::new)
            .insert(view.job_id.clone(), view);
    }

    fn remove(&self, id: &str) {
        let mut views = self.views.write().unwrap_or_else(|p| p.into_inner());
        if let Some(views) = views.as_mut() {
            views.remove(id);
        }
    }
}

pub fn actor_name(namespace: &str) -> String {
    format!("{namespace}{NAME}")
}

/// Tells job `job` how its attempt `rotation` of `secret` ended (called by rotation
/// actors). While the jobs actor is not running the report is dropped: the job looks the
/// attempt up in the store when it resumes or after [`RECHECK_AFTER`].
pub fn report_outcome(
    namespace: &str,
    job: String,
    secret: SecretRef,
    rotation: RotationId,
    outcome: Outcome,
) {
    if let Some(cell) = ractor::registry::where_is(actor_name(namespace)) {
        let actor: ActorRef<JobsMsg> = cell.into();
        let _ = actor.cast(JobsMsg::Outcome {
            job,
            secret,
            rotation,
            outcome,
        });
    }
}

pub enum JobsMsg {
    /// `POST /admin/secrets/rotate-all`.
    Start {
        request: JobRequest,
        reply: RpcReplyPort<Result<JobView, AdminError>>,
    },
    /// `DELETE /admin/jobs/{id}`.
    Cancel {
        id: String,
        reply: RpcReplyPort<Result<JobView, AdminError>>,
    },
    /// A job's attempt reached an outcome (from its rotation actor).
    Outcome {
        job: String,
        secret: SecretRef,
        rotation: RotationId,
        outcome: Outcome,
    },
    /// A start task finished.
    Reached {
        job: String,
        index: u32,
        reached: Reached,
    },
    /// Start what may start, write progress, look up stale attempts.
    Tick,
    /// Delete the jobs that ended more than [`ENDED_JOBS_KEPT`] ago.
    Sweep,
}

/// What a start task (or a look-up in the store) came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reached {
    /// The job's attempt is in flight.
    InFlight(RotationId),
    /// The job's attempt was promoted.
    Done,
    /// The job's attempt ended without a promotion.
    Failed,
    /// Another attempt is in flight: ask again later.
    Busy,
    /// The rotation actor did not answer (restarting, stopping) or the store could not be
    /// read; whether the attempt started is unknown, so the store is read first next time.
    Unavailable,
    /// The job never started an attempt of this secret.
    NotStarted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum JobState {
    Running,
    Finished,
    Cancelled,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// A job's progress record. Never a value: names, counts and positions.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobRecord {
    id: String,
    selector: JobSelector,
    rate_per_second: u32,
    max_concurrent: u32,
    expire_previous: bool,
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    state: JobState,
    total: u32,
    done: u64,
    failed: u64,
    /// Every secret before this index was reached (started, or known finished).
    cursor: u32,
    /// No secret at or after this index was started.
    reserved: u32,
    /// Secrets before `cursor` not finished (in flight, waiting, or to start again).
    open: Vec<u32>,
}

/// A secret a running job is working on.
#[derive(Debug, Clone, Copy)]
enum Open {
    /// A start task is out.
    Starting,
    /// Ask again at `at`; `check` first reads the store (a start may have happened).
    Waiting {
        at: Instant,
        tries: u32,
        check: bool,
    },
    /// The job's attempt is in flight since `since`; `checking` while a look-up is out.
    InFlight {
        rotation: RotationId,
        since: Instant,
        checking: bool,
    },
}

struct Job {
    record: JobRecord,
    rev: Option<Rev>,
    /// Empty once the job is over.
    secrets: Arc<Vec<SecretRef>>,
    open: BTreeMap<u32, Open>,
    /// Known not started, to start before the cursor moves on (after a resume).
    again: VecDeque<u32>,
    /// Outcomes that arrived before the start task's answer.
    early: HashMap<u32, (RotationId, Outcome)>,
    tokens: f64,
    refilled: Instant,
    dirty: bool,
    persisted: Instant,
}

impl Job {
    fn view(&self) -> JobView {
        let r = &self.record;
        let in_flight = self.open.len() as u64;
        let reached = r.done + r.failed + in_flight;
        JobView {
            job_id: r.id.clone(),
            state: r.state.as_str().to_owned(),
            total: u64::from(r.total),
            done: r.done,
            failed: r.failed,
            in_flight,
            pending: u64::from(r.total).saturating_sub(reached),
            selector: r.selector.clone(),
            rate_per_second: r.rate_per_second,
            max_concurrent: r.max_concurrent,
            expire_previous: r.expire_previous,
            started_at: r.created_at,
            finished_at: r.finished_at,
        }
    }

    fn index_of(&self, secret: &SecretRef) -> Option<u32> {
        self.secrets.binary_search(secret).ok().map(|i| i as u32)
    }

    /// Counts a finished secret.
    fn finish_secret(&mut self, index: u32, promoted: bool, metrics: &Metrics) {
        if self.open.remove(&index).is_none() {
            return;
        }
        if promoted {
            self.record.done += 1;
        } else {
            self.record.failed += 1;
        }
        metrics
            .job_rotations_total
            .get_or_create(&OutcomeLabels {
                outcome: if promoted { "done" } else { "failed" }.into(),
            })
            .inc();
        self.dirty = true;
    }
}

#[derive(Clone)]
pub struct JobsArgs {
    pub store: Arc<dyn Store>,
    pub secrets: Arc<ManagedSecrets>,
    /// Wakes a secret's rotation actor for the job's attempt.
    pub context: Arc<RotationContext>,
    pub board: Arc<StatusBoard>,
    pub metrics: Metrics,
    pub clock: Clock,
    pub namespace: String,
    /// Where the views of the jobs are published for the API.
    pub views: Arc<JobBoard>,
}

pub struct JobsState {
    args: JobsArgs,
    jobs: BTreeMap<String, Job>,
    tick: TimerGuard,
    sweep: TimerGuard,
}

pub struct JobsActor;

impl Actor for JobsActor {
    type Msg = JobsMsg;
    type State = JobsState;
    type Arguments = JobsArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: JobsArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // A restarted actor loads again; reads wait for that rather than miss a job.
        args.views.replace(None);
        Ok(JobsState {
            args,
            jobs: BTreeMap::new(),
            tick: TimerGuard::new(),
            sweep: TimerGuard::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Registered already: outcome reports that arrive while loading wait in the mailbox.
        state.load().await?;
        state.sweep().await;
        let views = state.jobs.iter().map(|(id, j)| (id.clone(), j.view()));
        state.args.views.replace(Some(views.collect()));
        state.publish_gauges();
        state.arm_tick(&myself);
        state
            .sweep
            .arm(SWEEP_EVERY, myself.clone(), || JobsMsg::Sweep);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JobsMsg::Start { request, reply } => {
                let r = state.create(request).await;
                let _ = reply.send(r);
                state.arm_tick(&myself);
            }
            JobsMsg::Cancel { id, reply } => {
                let r = state.cancel(&myself, &id).await;
                let _ = reply.send(r);
            }
            JobsMsg::Outcome {
                job,
                secret,
                rotation,
                outcome,
            } => state.outcome(&job, &secret, rotation, outcome),
            JobsMsg::Reached {
                job,
                index,
                reached,
            } => state.reached(&job, index, reached),
            JobsMsg::Tick => {
                state.tick(&myself).await;
                state.arm_tick(&myself);
            }
            JobsMsg::Sweep => {
                state.sweep().await;
                state
                    .sweep
                    .arm(SWEEP_EVERY, myself.clone(), || JobsMsg::Sweep);
            }
        }
        // A job's end is published here, its start and its cancel before their answers;
        // the progress in between on each tick (see `tick`), not after every outcome.
        state.finish_jobs().await;
        Ok(())
    }
}

fn unknown_job(id: &str) -> AdminError {
    let shown: String = id.chars().take(64).collect();
    AdminError::NotFound(format!("unknown job {shown:?}"))
}

impl JobsState {
    /// Reads every job back; running ones resume (see the module doc).
    async fn load(&mut self) -> Result<(), ActorProcessingErr> {
        let store = self.args.store.clone();
        for rec in store.record_list(JOBS_NS).await? {
            let record: JobRecord = match serde_json::from_slice(&rec.bytes) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(job = %rec.id, error = %e, "unreadable job record; skipped");
                    continue;
                }
            };
            let mut job = Job {
                secrets: Arc::new(Vec::new()),
                open: BTreeMap::new(),
                again: VecDeque::new(),
                early: HashMap::new(),
                tokens: 0.0,
                refilled: Instant::now(),
                dirty: false,
                persisted: Instant::now(),
                rev: Some(rec.rev),
                record,
            };
            if job.record.state != JobState::Running {
                self.jobs.insert(rec.id, job);
                continue;
            }
            let Some((bytes, _)) = store.record_get(SECRETS_NS, &rec.id).await? else {
                tracing::warn!(job = %rec.id, "the job's list of secrets is missing; the job cannot resume");
                continue;
            };
            let names: Vec<String> = serde_json::from_slice(&bytes)?;
            let secrets = names
                .iter()
                .map(|n| SecretRef::parse(n))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("job {}: a secret name in its list is invalid", rec.id))?;
            job.secrets = Arc::new(secrets);
            let r = &job.record;
            let mut unknown: Vec<u32> = r.open.clone();
            unknown.extend(r.cursor..r.reserved.min(r.total));
            unknown.sort_unstable();
            unknown.dedup();
            let created = r.created_at;
            let id = r.id.clone();
            let n = unknown.len();
            let (mut done, mut failed, mut waiting, mut again) = (0, 0, 0, 0);
            for index in unknown {
                let Some(secret) = job.secrets.get(index as usize).cloned() else {
                    continue;
                };
                let found = look_up(store.as_ref(), &secret, &id, created).await;
                match found {
                    Reached::Done => {
                        job.record.done += 1;
                        done += 1;
                    }
                    Reached::Failed => {
                        job.record.failed += 1;
                        failed += 1;
                    }
                    Reached::InFlight(rotation) => {
                        job.open.insert(
                            index,
                            Open::InFlight {
                                rotation,
                                since: Instant::now(),
                                checking: false,
                            },
                        );
                        waiting += 1;
                    }
                    _ => {
                        again += 1;
                        job.again.push_back(index);
                    }
                }
            }
            // Everything in `cursor..reserved` is now known: counted, open or to start.
            job.record.cursor = job
                .record
                .cursor
                .max(job.record.reserved.min(job.record.total));
            job.record.reserved = job.record.cursor;
            job.dirty = true;
            tracing::info!(
                job = %id,
                checked = n,
                done,
                failed,
                in_flight = waiting,
                to_start = again,
                "resuming a rotation job"
            );
            self.jobs.insert(rec.id, job);
        }
        Ok(())
    }

    async fn create(&mut self, request: JobRequest) -> Result<JobView, AdminError> {
        let running = self
            .jobs
            .values()
            .filter(|j| j.record.state == JobState::Running)
            .count();
        if running >= MAX_RUNNING_JOBS {
            return Err(AdminError::Conflict(format!(
                "{running} rotation jobs are running already (at most {MAX_RUNNING_JOBS}); wait for one to finish or cancel one"
            )));
        }
        if let Some(policy) = &request.selector.policy
            && !self.args.secrets.iter().any(|(_, p)| p == policy)
        {
            return Err(AdminError::BadRequest(format!(
                "policy: no managed secret has policy {policy:?}"
            )));
        }
        let secrets: Vec<SecretRef> = self
            .args
            .secrets
            .iter()
            .filter(|(secret, policy)| request.selector.matches(secret, policy))
            .map(|(secret, _)| secret.clone())
            .collect();
        if secrets.is_empty() {
            return Err(AdminError::BadRequest(format!(
                "no managed secret matches {}",
                request.selector.describe()
            )));
        }
        let total = u32::try_from(secrets.len())
            .map_err(|_| AdminError::BadRequest("too many secrets for one job".into()))?;
        let now = self.args.clock.now();
        let id = format!(
            "job-{}-{:08x}",
            now.format("%Y%m%d%H%M%S"),
            rand::random::<u32>()
        );
        let names: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        let bytes = serde_json::to_vec(&names).map_err(|e| AdminError::Internal(e.to_string()))?;
        self.args
            .store
            .record_put(SECRETS_NS, &id, &bytes, None)
            .await
            .map_err(|e| AdminError::Unavailable(format!("cannot store the job: {e}")))?;
        let mut job = Job {
            record: JobRecord {
                id: id.clone(),
                selector: request.selector,
                rate_per_second: request.rate_per_second,
                max_concurrent: request.max_concurrent,
                expire_previous: request.expire_previous,
                created_at: now,
                finished_at: None,
                state: JobState::Running,
                total,
                done: 0,
                failed: 0,
                cursor: 0,
                reserved: 0,
                open: Vec::new(),
            },
            rev: None,
            secrets: Arc::new(secrets),
            open: BTreeMap::new(),
            again: VecDeque::new(),
            early: HashMap::new(),
            tokens: 1.0,
            refilled: Instant::now(),
            dirty: false,
            persisted: Instant::now(),
        };
        self::persist(self.args.store.as_ref(), &mut job)
            .await
            .map_err(|e| AdminError::Unavailable(format!("cannot store the job: {e}")))?;
        let view = job.view();
        tracing::info!(
            job = %id,
            selector = %job.record.selector.describe(),
            total,
            rate_per_second = job.record.rate_per_second,
            max_concurrent = job.record.max_concurrent,
            expire_previous = job.record.expire_previous,
            "rotation job started"
        );
        notifier::notify(
            &self.args.namespace,
            Notification::job(
                "job_started",
                &view,
                format!(
                    "rotation job {id} started: {total} secrets ({}), {} per second, {} at once{}",
                    view.selector.describe(),
                    view.rate_per_second,
                    view.max_concurrent,
                    if view.expire_previous {
                        ", previous versions expire at promotion"
                    } else {
                        ""
                    }
                ),
                now,
            ),
        );
        // On the board before the 202 goes out: a client that reads the job right after
        // starting it must not be told it does not exist.
        self.args.views.publish(&job);
        self.jobs.insert(id, job);
        self.publish_gauges();
        Ok(view)
    }

    async fn cancel(
        &mut self,
        myself: &ActorRef<JobsMsg>,
        id: &str,
    ) -> Result<JobView, AdminError> {
        let store = self.args.store.clone();
        let Some(job) = self.jobs.get_mut(id) else {
            return Err(unknown_job(id));
        };
        match job.record.state {
            JobState::Cancelled => return Ok(job.view()),
            JobState::Finished => {
                return Err(AdminError::Conflict(format!(
                    "job {id} is finished already"
                )));
            }
            JobState::Running => {}
        }
        job.record.state = JobState::Cancelled;
        job.again.clear();
        // Secrets that were only waiting to be asked were never started; one whose last
        // ask went unanswered may have been, so the store says.
        let waiting: Vec<(u32, bool)> = job
            .open
            .iter()
            .filter_map(|(i, o)| match o {
                Open::Waiting { check, .. } => Some((*i, *check)),
                _ => None,
            })
            .collect();
        for (index, check) in waiting {
            if check {
                job.open.insert(
                    index,
                    Open::InFlight {
                        rotation: RotationId(0),
                        since: Instant::now(),
                        checking: true,
                    },
                );
                spawn_look_up(myself, store.clone(), job, index);
            } else {
                job.open.remove(&index);
            }
        }
        job.dirty = true;
        let _ = self.persist_id(id).await;
        tracing::info!(job = %id, "rotation job cancelled");
        self.publish_gauges();
        // As at the start: the board says "cancelled" before the answer does.
        if let Some(job) = self.jobs.get(id) {
            self.args.views.publish(job);
        }
        self.jobs
            .get(id)
            .map(Job::view)
            .ok_or_else(|| unknown_job(id))
    }

    fn outcome(&mut self, job: &str, secret: &SecretRef, rotation: RotationId, outcome: Outcome) {
        let metrics = self.args.metrics.clone();
        let Some(job) = self.jobs.get_mut(job) else {
            return;
        };
        let Some(index) = job.index_of(secret) else {
            return;
        };
        let promoted = match outcome {
            Outcome::Succeeded | Outcome::RolledBack => true,
            Outcome::Failed | Outcome::Abandoned => false,
        };
        match job.open.get(&index) {
            Some(Open::InFlight { rotation: r, .. }) if *r == rotation || r.0 == 0 => {
                job.finish_secret(index, promoted, &metrics);
            }
            Some(Open::Starting) => {
                job.early.insert(index, (rotation, outcome));
            }
            _ => {}
        }
    }

    fn reached(&mut self, job_id: &str, index: u32, reached: Reached) {
        let metrics = self.args.metrics.clone();
        let Some(job) = self.jobs.get_mut(job_id) else {
            return;
        };
        let Some(open) = job.open.get(&index).copied() else {
            return;
        };
        let cancelled = job.record.state != JobState::Running;
        let now = Instant::now();
        match reached {
            Reached::InFlight(rotation) => {
                if matches!(open, Open::Starting) {
                    metrics
                        .job_rotations_total
                        .get_or_create(&OutcomeLabels {
                            outcome: "started".into(),
                        })
                        .inc();
                }
                job.open.insert(
                    index,
                    Open::InFlight {
                        rotation,
                        since: now,
                        checking: false,
                    },
                );
                if let Some((r, outcome)) = job.early.remove(&index)
                    && r == rotation
                {
                    let promoted = matches!(outcome, Outcome::Succeeded | Outcome::RolledBack);
                    job.finish_secret(index, promoted, &metrics);
                }
            }
            Reached::Done => job.finish_secret(index, true, &metrics),
            Reached::Failed => job.finish_secret(index, false, &metrics),
            Reached::NotStarted if cancelled => {
                job.open.remove(&index);
            }
            Reached::NotStarted | Reached::Busy | Reached::Unavailable => {
                if let Open::InFlight {
                    rotation,
                    since,
                    checking: true,
                } = open
                    && rotation.0 != 0
                {
                    // A look-up of an attempt we know started: try again later.
                    job.open.insert(
                        index,
                        Open::InFlight {
                            rotation,
                            since,
                            checking: false,
                        },
                    );
                    return;
                }
                let tries = match open {
                    Open::Waiting { tries, .. } => tries + 1,
                    _ => 1,
                };
                let unavailable = reached == Reached::Unavailable;
                if unavailable && tries >= MAX_UNAVAILABLE {
                    tracing::warn!(job = %job_id, secret = %job.secrets[index as usize], "the rotation actor did not answer; counted as failed");
                    job.finish_secret(index, false, &metrics);
                    return;
                }
                if cancelled && !unavailable {
                    job.open.remove(&index);
                    return;
                }
                // Busy: the attempt in flight (a scheduled one, an expiry) is usually over
                // in milliseconds; back off to a second for slow targets.
                let delay =
                    Duration::from_millis(20 * (1u64 << tries.min(6))).min(Duration::from_secs(1));
                job.open.insert(
                    index,
                    Open::Waiting {
                        at: now + delay,
                        tries,
                        check: unavailable,
                    },
                );
            }
        }
        job.dirty = true;
    }

    async fn tick(&mut self, myself: &ActorRef<JobsMsg>) {
        let ids: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.record.state == JobState::Running || !j.open.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.tick_job(myself, &id).await;
            // Progress reaches the board once a tick (every 20 ms), not after every one of
            // the thousands of outcomes and answers a second: a write lock and a view
            // built per message was work the readers never saw.
            if let Some(job) = self.jobs.get(&id)
                && job.record.finished_at.is_none()
            {
                self.args.views.publish(job);
            }
            let due = self
                .jobs
                .get(&id)
                .is_some_and(|j| j.dirty && j.persisted.elapsed() >= PERSIST_EVERY);
            if due {
                let _ = self.persist_id(&id).await;
            }
        }
    }

    async fn tick_job(&mut self, myself: &ActorRef<JobsMsg>, id: &str) {
        let store = self.args.store.clone();
        let context = self.args.context.clone();
        let board = self.args.board.clone();
        let Some(job) = self.jobs.get_mut(id) else {
            return;
        };
        let now = Instant::now();
        let rate = f64::from(job.record.rate_per_second.max(1));
        // A burst of at most a tenth of a second's starts (at least one), so a job that
        // waited for its concurrency does not then start a second's worth at once.
        let cap = (rate / 10.0).max(1.0);
        job.tokens = (job.tokens + rate * (now - job.refilled).as_secs_f64()).min(cap);
        job.refilled = now;
        let running = job.record.state == JobState::Running;

        // Attempts whose outcome did not arrive: ask the store.
        let stale: Vec<u32> = job
            .open
            .iter()
            .filter_map(|(i, o)| match o {
                Open::InFlight {
                    since,
                    checking: false,
                    ..
                } if now.duration_since(*since) >= RECHECK_AFTER => Some(*i),
                _ => None,
            })
            .collect();
        for index in stale {
            if let Some(Open::InFlight { rotation, .. }) = job.open.get(&index).copied() {
                job.open.insert(
                    index,
                    Open::InFlight {
                        rotation,
                        since: now,
                        checking: true,
                    },
                );
                spawn_look_up(myself, store.clone(), job, index);
            }
        }

        // Secrets asked before and told to wait: they hold their place in the concurrency.
        let due: Vec<(u32, bool)> = job
            .open
            .iter()
            .filter_map(|(i, o)| match o {
                Open::Waiting { at, check, .. } if *at <= now => Some((*i, *check)),
                _ => None,
            })
            .collect();
        for (index, check) in due {
            if !running {
                // Cancelled: nothing new starts; only whether it had started is asked.
                job.open.insert(
                    index,
                    Open::InFlight {
                        rotation: RotationId(0),
                        since: now,
                        checking: true,
                    },
                );
                spawn_look_up(myself, store.clone(), job, index);
                continue;
            }
            if job.tokens < 1.0 {
                break;
            }
            job.tokens -= 1.0;
            job.open.insert(index, Open::Starting);
            spawn_start(
                myself,
                &context,
                board.clone(),
                store.clone(),
                job,
                index,
                check,
            );
        }
        if !running {
            return;
        }
        // New starts: the ones known not started after a resume, then the cursor.
        while job.tokens >= 1.0 && (job.open.len() as u32) < job.record.max_concurrent {
            let index = if let Some(i) = job.again.pop_front() {
                i
            } else if job.record.cursor < job.record.total {
                let i = job.record.cursor;
                if i >= job.record.reserved {
                    // Reserve the next batch before starting any of it.
                    job.record.reserved = (i + RESERVE_BATCH).min(job.record.total);
                    job.dirty = true;
                    if let Err(e) = persist(store.as_ref(), job).await {
                        tracing::warn!(job = %id, error = %e, "cannot store the job's progress; starts wait");
                        job.record.reserved = i;
                        return;
                    }
                }
                job.record.cursor += 1;
                i
            } else {
                break;
            };
            job.tokens -= 1.0;
            job.open.insert(index, Open::Starting);
            job.dirty = true;
            spawn_start(
                myself,
                &context,
                board.clone(),
                store.clone(),
                job,
                index,
                false,
            );
        }
    }

    /// Marks jobs with nothing left as finished (or a cancelled one's end), writes them and
    /// tells people.
    async fn finish_jobs(&mut self) {
        let now = self.args.clock.now();
        let ended: Vec<String> = self
            .jobs
            .iter()
            .filter(|(_, j)| {
                j.record.finished_at.is_none()
                    && j.open.is_empty()
                    && (j.record.state == JobState::Cancelled
                        || (j.again.is_empty() && j.record.cursor >= j.record.total))
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in ended {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            if job.record.state == JobState::Running {
                job.record.state = JobState::Finished;
            }
            job.record.finished_at = Some(now);
            job.dirty = true;
            let view = job.view();
            let _ = self.persist_id(&id).await;
            if let Some(job) = self.jobs.get_mut(&id) {
                job.secrets = Arc::new(Vec::new());
                job.early.clear();
                self.args.views.publish(job);
            }
            tracing::info!(
                job = %id,
                state = %view.state,
                total = view.total,
                done = view.done,
                failed = view.failed,
                "rotation job ended"
            );
            notifier::notify(
                &self.args.namespace,
                Notification::job(
                    "job_finished",
                    &view,
                    format!(
                        "rotation job {id} {}: {} of {} secrets rotated, {} failed{}",
                        view.state,
                        view.done,
                        view.total,
                        view.failed,
                        if view.pending > 0 {
                            format!(", {} not started", view.pending)
                        } else {
                            String::new()
                        }
                    ),
                    now,
                ),
            );
            self.publish_gauges();
        }
    }

    /// Deletes every job that ended more than [`ENDED_JOBS_KEPT`] ago: its progress record
    /// and its list of secrets, then its view. A job whose records cannot be deleted now
    /// stays (and readable) until a later sweep succeeds.
    async fn sweep(&mut self) {
        let now = self.args.clock.now();
        let old: Vec<(String, Option<Rev>)> = self
            .jobs
            .iter()
            .filter(|(_, j)| {
                j.record
                    .finished_at
                    .is_some_and(|at| at + ENDED_JOBS_KEPT <= now)
            })
            .map(|(id, j)| (id.clone(), j.rev))
            .collect();
        if old.is_empty() {
            return;
        }
        let store = self.args.store.clone();
        for (id, rev) in old {
            if let Err(e) = delete_job(store.as_ref(), &id, rev).await {
                tracing::warn!(job = %id, error = %e, "cannot delete an ended job's records; trying again at the next sweep");
                continue;
            }
            self.jobs.remove(&id);
            self.args.views.remove(&id);
            tracing::info!(job = %id, kept_days = ENDED_JOBS_KEPT.num_days(), "ended rotation job deleted");
        }
        self.publish_gauges();
    }

    async fn persist_id(&mut self, id: &str) -> Result<(), StoreError> {
        let Some(job) = self.jobs.get_mut(id) else {
            return Ok(());
        };
        let r = self::persist(self.args.store.as_ref(), job).await;
        if let Err(e) = &r {
            tracing::warn!(job = %id, error = %e, "cannot store the job's progress; trying again");
        }
        r
    }

    fn arm_tick(&mut self, myself: &ActorRef<JobsMsg>) {
        let busy = self
            .jobs
            .values()
            .any(|j| j.record.state == JobState::Running || !j.open.is_empty());
        if busy {
            if !self.tick.is_armed() {
                self.tick.arm(TICK, myself.clone(), || JobsMsg::Tick);
            }
        } else {
            self.tick.cancel();
        }
    }

    fn publish_gauges(&self) {
        let mut counts: BTreeMap<&'static str, i64> =
            [("running", 0), ("finished", 0), ("cancelled", 0)].into();
        for job in self.jobs.values() {
            *counts.entry(job.record.state.as_str()).or_default() += 1;
        }
        for (state, n) in counts {
            self.args
                .metrics
                .jobs
                .get_or_create(&StateLabels {
                    state: state.into(),
                })
                .set(n);
        }
    }
}

/// Deletes job `id`'s list of secrets, then its progress record (at `rev`): in that
/// order, so a job whose deletion is cut short still has the record that names it, and
/// the next sweep finishes it.
async fn delete_job(store: &dyn Store, id: &str, rev: Option<Rev>) -> Result<(), StoreError> {
    if let Some((_, secrets_rev)) = store.record_get(SECRETS_NS, id).await? {
        store.record_delete(SECRETS_NS, id, secrets_rev).await?;
    }
    match rev {
        Some(rev) => store.record_delete(JOBS_NS, id, rev).await,
        None => Ok(()),
    }
}

/// Writes a job's progress record (check-and-set on the revision it last wrote).
async fn persist(store: &dyn Store, job: &mut Job) -> Result<(), StoreError> {
    let mut open: Vec<u32> = job.open.keys().copied().collect();
    open.extend(job.again.iter().copied());
    open.sort_unstable();
    job.record.open = open;
    let bytes = serde_json::to_vec(&job.record)
        .map_err(|e| StoreError::Backend(format!("cannot encode the job record: {e}")))?;
    let rev = store
        .record_put(JOBS_NS, &job.record.id, &bytes, job.rev)
        .await?;
    job.rev = Some(rev);
    job.dirty = false;
    job.persisted = Instant::now();
    Ok(())
}

/// Starts (or, with `check`, first looks up) the job's attempt of secret `index` in a task
/// of its own, so a slow commit of one secret does not hold back the others.
fn spawn_start(
    myself: &ActorRef<JobsMsg>,
    context: &Arc<RotationContext>,
    board: Arc<StatusBoard>,
    store: Arc<dyn Store>,
    job: &Job,
    index: u32,
    check: bool,
) {
    let Some(secret) = job.secrets.get(index as usize).cloned() else {
        return;
    };
    let me = myself.clone();
    let job_id = job.record.id.clone();
    let created = job.record.created_at;
    let expire_previous = job.record.expire_previous;
    let context = context.clone();
    tokio::spawn(async move {
        let reached = async {
            if check {
                match look_up(store.as_ref(), &secret, &job_id, created).await {
                    Reached::NotStarted => {}
                    other => return other,
                }
            }
            start(&context, &board, &secret, job_id.clone(), expire_previous).await
        }
        .await;
        let _ = me.cast(JobsMsg::Reached {
            job: job_id,
            index,
            reached,
        });
    });
}

/// Looks the job's attempt of secret `index` up in the store, in a task of its own.
fn spawn_look_up(myself: &ActorRef<JobsMsg>, store: Arc<dyn Store>, job: &Job, index: u32) {
    let Some(secret) = job.secrets.get(index as usize).cloned() else {
        return;
    };
    let me = myself.clone();
    let job_id = job.record.id.clone();
    let created = job.record.created_at;
    tokio::spawn(async move {
        let reached = look_up(store.as_ref(), &secret, &job_id, created).await;
        let _ = me.cast(JobsMsg::Reached {
            job: job_id,
            index,
            reached,
        });
    });
}

/// Asks the secret's rotation actor for the job's attempt; a secret in grace first has its
/// grace ended.
async fn start(
    context: &Arc<RotationContext>,
    board: &StatusBoard,
    secret: &SecretRef,
    job: String,
    expire_previous: bool,
) -> Reached {
    let Ok(actor) = context.wake(secret).await else {
        return Reached::Unavailable;
    };
    if board.get(secret).is_some_and(|s| s.phase == "grace") {
        match actor.call(RotationMsg::ExpireNow, Some(CALL_TIMEOUT)).await {
            Ok(CallResult::Success(())) => {}
            _ => return Reached::Unavailable,
        }
    }
    match actor
        .call(
            |reply| RotationMsg::JobRotate {
                job,
                expire_previous,
                reply,
            },
            Some(CALL_TIMEOUT),
        )
        .await
    {
        Ok(CallResult::Success(Ok(rotation))) => Reached::InFlight(rotation),
        Ok(CallResult::Success(Err(Rejection::InProgress { .. }))) => Reached::Busy,
        Ok(CallResult::Success(Err(Rejection::NothingToRollBack))) => Reached::Busy,
        _ => Reached::Unavailable,
    }
}

/// What the store says of job `job`'s attempt of `secret` (see the module doc).
pub async fn look_up(
    store: &dyn Store,
    secret: &SecretRef,
    job: &str,
    created: DateTime<Utc>,
) -> Reached {
    let journal = match store.journal(secret).await {
        Ok(j) => j,
        Err(_) => return Reached::Unavailable,
    };
    if let Some(bytes) = journal {
        let Ok(state) = serde_json::from_slice::<SecretState>(&bytes) else {
            return Reached::Unavailable;
        };
        if let Some(run) = state.phase.run()
            && run.job.as_deref() == Some(job)
        {
            return match &state.phase {
                Phase::Grace { .. } | Phase::Expired { .. } | Phase::RolledBack { .. } => {
                    Reached::Done
                }
                _ => Reached::InFlight(run.rotation),
            };
        }
    }
    let history = match store.history(secret, HISTORY_LOOKBACK).await {
        Ok(h) => h,
        Err(_) => return Reached::Unavailable,
    };
    match history
        .iter()
        .find(|h| h.trigger == Trigger::Job && h.started_at >= created)
    {
        Some(h) => match h.outcome {
            Outcome::Succeeded | Outcome::RolledBack => Reached::Done,
            Outcome::Failed | Outcome::Abandoned => Reached::Failed,
        },
        None => Reached::NotStarted,
    }
}

/// A job's view read from its stored progress record (namespace [`JOBS_NS`]) instead of
/// the actor: what a replica that does not lead answers. It is as fresh as the last
/// progress write (at most about a second behind while the job runs, exact once it ended);
/// `inFlight` counts the secrets the record holds open (in flight or still to be started
/// again).
pub fn view_from_record(bytes: &[u8]) -> Result<JobView, String> {
    let record: JobRecord =
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable job record: {e}"))?;
    let in_flight = record.open.len() as u64;
    let reached = record.done + record.failed + in_flight;
    Ok(JobView {
        job_id: record.id,
        state: record.state.as_str().to_owned(),
        total: u64::from(record.total),
        done: record.done,
        failed: record.failed,
        in_flight,
        pending: u64::from(record.total).saturating_sub(reached),
        selector: record.selector,
        rate_per_second: record.rate_per_second,
        max_concurrent: record.max_concurrent,
        expire_previous: record.expire_previous,
        started_at: record.created_at,
        finished_at: record.finished_at,
    })
}
