//! rotor's supervision tree, built from a validated configuration:
//!
//! ```text
//! rotor (root supervisor)
//! ├── metrics            one actor: encodes the registry, refreshes fleet gauges
//! ├── notifier           one actor: receives and delivers lifecycle events
//! ├── consumers          one actor: agents' reports and reload permits (only with
//! │                      `[server] consumer_token_file`)
//! ├── jobs               one actor: emergency rotation jobs (rotate-all), their progress
//! │                      in the store
//! ├── watchers           supervisor: one publisher per [[publish]] directory or view, then one
//! │                      watcher actor per [[mounts]] path (unless watching is off)
//! └── rotations          supervisor: one rotation actor per tenant secret that has work
//!                        (started on demand, stops when idle: see `rotation`)
//! ```
//!
//! The rotations supervisor starts with no children. [`start`] then reads every journal
//! from the store, a page at a time, and works out what each secret's actor would do on
//! resume without starting it: a secret with nothing to do soon gets its deadlines in the
//! scheduler and its status on the board; one with something in flight, due now or new
//! is woken. The tree is ready once every secret is on the board.
//!
//! Every restart anywhere is logged by the supervisor and counted in
//! `rotor_actor_restarts_total{kind}`. When the root gives up, [`Tree::wait`] says so and
//! `rotor run` exits non-zero so Kubernetes restarts the pod.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::TimeDelta;
use futures::StreamExt;
use tokio::sync::Semaphore;

use super::bootstrap;
use super::consumers::{self as consumers_actor, ConsumerBoard, ConsumersActor, ConsumersArgs};
use super::jobs::{self as jobs_actor, JobsActor, JobsArgs};
use super::managed::ManagedSecrets;
use super::metrics::{self as metrics_actor, MetricsActor};
use super::notifier::{self, Deliveries, Notifier, Undelivered};
use super::publisher::view::ViewPublisherActor;
use super::publisher::{self, PublisherActor};
use super::root::{Root, RootExit, spawn_root};
use super::rotation::{self, RotationContext};
use super::scheduler::{Scheduler, TimerKind};
use super::watcher::{self, WatchContext, WatcherActor};
use crate::clock::Clock;
use crate::config::Config;
use crate::domain::SecretRef;
use crate::ha::{Fence, FencedStore};
use crate::machine::{Effect, SecretState};
use crate::metrics::Metrics;
use crate::publish::aws::AwsEnv;
use crate::schedule::jitter_offset;
use crate::status::StatusBoard;
use crate::store::Store;
use crate::store::cache::{CacheOptions, CachedStore};
use crate::supervisor::{Backoff, ChildSpec, Intensity, Restart, SupervisorArgs, SupervisorEvent};
use crate::target::ValueReader;
use crate::watch::event::EventSink;
use crate::watch::limiter::ReloadLimiter;

/// Knobs that are not in the configuration file (tests set them).
#[derive(Clone)]
pub struct TreeOptions {
    pub clock: Clock,
    /// Longest a single rotation step may take.
    pub step_timeout: Duration,
    /// Restart intensity of the rotations supervisor.
    pub rotations_intensity: Intensity,
    pub backoff: Backoff,
    /// Overrides the target of every secret: called once per secret, it builds that
    /// secret's target (tests inject failing targets here). A test hook, so only with the `test-util` feature. The other fields are not: they are
    /// settings with production defaults that tests tune (time, timeouts, restart
    /// intensity, registry prefix, mountinfo path), an observer that changes nothing
    /// (`watch_sink`), and the Vault token renewer (`extra_children`).
    #[cfg(feature = "test-util")]
    pub target_override: Option<TargetOverride>,
    /// Prefix of every registry name (ractor's registry is per process; tests run
    /// several trees at once). Empty in production.
    pub namespace: String,
    /// Observes every watcher event (tests and benchmarks).
    pub watch_sink: Option<EventSink>,
    /// Where the subPath check reads mounts from (`/proc/self/mountinfo`).
    pub mountinfo: std::path::PathBuf,
    /// More children of the root supervisor, started after the four above (the Vault
    /// token renewer when the store is Vault).
    pub extra_children: Vec<ChildSpec>,
    /// Where AWS views' credential chain reads environment variables: the process's in
    /// production; tests hand over their own (`AwsEnv::vars`, `test-util` only) instead of
    /// changing a shared process environment.
    pub aws_env: AwsEnv,
    /// The leadership this tree runs under (HA): every write of the tree checks it first
    /// and every commit carries its term (`crate::ha::FencedStore`). Unfenced (term 0, the
    /// store used as is) without `[ha]`.
    pub fence: Fence,
    /// How long a rotation actor with nothing to do stays up before it stops (its secret
    /// then costs a scheduler entry and a status board entry). `None`: never; every secret
    /// keeps an actor from start-up on.
    pub hibernate_after: Option<Duration>,
}

/// The default idle delay before a rotation actor hibernates: long enough that a burst of
/// API calls or a rotation's steps reuse one actor, short enough that a mass rotation gives
/// its memory back within a minute.
pub const DEFAULT_HIBERNATE_AFTER: Duration = Duration::from_secs(30);

/// Journals read per page at start-up.
const JOURNAL_PAGE: usize = 4_096;

/// Secrets woken at once at start-up (each is a call to the rotations supervisor).
const WAKES_AT_ONCE: usize = 64;

/// Builds the target of a secret in place of its configured one (a test hook).
#[cfg(feature = "test-util")]
pub type TargetOverride = Arc<dyn Fn(&SecretRef) -> Arc<dyn crate::target::Target> + Send + Sync>;

impl Default for TreeOptions {
    fn default() -> Self {
        TreeOptions {
            clock: Clock::System,
            step_timeout: Duration::from_secs(60),
            // Wider than the default backoff's spread of 51 restarts (~443 s), so a
            // crash-looping rotation actor does escalate.
            rotations_intensity: Intensity {
                max_restarts: 50,
                within: Duration::from_secs(600),
            },
            backoff: Backoff::default(),
            #[cfg(feature = "test-util")]
            target_override: None,
            namespace: String::new(),
            watch_sink: None,
            mountinfo: "/proc/self/mountinfo".into(),
            extra_children: Vec::new(),
            aws_env: AwsEnv::process(),
            fence: Fence::unfenced(),
            hibernate_after: Some(DEFAULT_HIBERNATE_AFTER),
        }
    }
}

/// Kept free at the end of a shutdown for logging what was lost and returning in time.
const DRAIN_MARGIN: Duration = Duration::from_millis(250);

/// The running tree and what the API needs to reach it.
pub struct Tree {
    pub root: Root,
    pub context: Arc<RotationContext>,
    /// Every managed secret, for 404s and the schedule; specs are built on wake.
    pub secrets: Arc<ManagedSecrets>,
    ready: Arc<AtomicBool>,
    /// The notification delivery tasks, drained at shutdown.
    deliveries: Deliveries,
}

impl Tree {
    /// Whether every managed secret is on the status board (from its journal, or from its
    /// woken actor).
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    pub async fn wait(&mut self) -> RootExit {
        self.root.wait().await
    }

    /// Stops the tree gracefully (children in reverse order), killing it after `timeout`,
    /// then lets the notification channels deliver what they still hold until `timeout`
    /// (counted from the call) is nearly over. Events still undelivered then are lost, and
    /// logged by channel.
    pub async fn shutdown(&mut self, timeout: Duration) -> RootExit {
        let deadline = tokio::time::Instant::now() + timeout.saturating_sub(DRAIN_MARGIN);
        self.context.slots.close();
        let exit = self.root.shutdown(timeout).await;
        let Undelivered(lost) = self.deliveries.drain(deadline).await;
        for (channel, n) in lost {
            tracing::warn!(
                %channel,
                undelivered = n,
                "notifications not delivered at exit: the shutdown timeout ran out"
            );
        }
        exit
    }
}

/// What every watcher shares: the store's fingerprint, the global reload limit, the
/// managed secrets (for the file naming convention) and where last-seen fingerprints go
/// (`watch/` next to the embedded store's file).
fn watch_context(
    config: &Config,
    context: &Arc<RotationContext>,
    options: &TreeOptions,
) -> Arc<WatchContext> {
    let store = context.store.clone();
    let state_dir = match &config.store {
        crate::config::StoreConfig::Embedded { path, .. } => path
            .parent()
            .map(|dir| dir.join("watch"))
            .or_else(|| Some("watch".into())),
        // No local data directory with a remote store: last-seen fingerprints are kept in
        // memory only.
        crate::config::StoreConfig::Vault(_) => None,
    };
    Arc::new(WatchContext {
        namespace: options.namespace.clone(),
        metrics: context.metrics.clone(),
        clock: options.clock,
        fingerprint: Arc::new(move |bytes| store.fingerprint(bytes)),
        limiter: Arc::new(ReloadLimiter::new(config.watch.max_reloads_per_minute)),
        // Only watchers read it: without one, a million names are not copied a third time.
        managed: if config.watch.enabled && !config.mounts.is_empty() {
            config.secrets.iter().map(|s| s.secret.clone()).collect()
        } else {
            Default::default()
        },
        state_dir,
        sink: options.watch_sink.clone(),
        mountinfo: options.mountinfo.clone(),
        max_file_size: config.watch.max_file_size,
        reload_gate: None,
        notify: true,
        rotations: Some(context.clone()),
    })
}

/// Starts the whole tree. Returns once every actor has started; rotation actors load their
/// journals right after (see `ready`).
pub async fn start(
    config: &Config,
    store: Arc<dyn Store>,
    metrics: Metrics,
    options: TreeOptions,
) -> Result<Tree, ractor::SpawnErr> {
    let board = Arc::new(StatusBoard::default());
    // Every value read (test steps, targets, the API) goes through the cache, which every
    // write to a secret invalidates.
    let cache = CacheOptions {
        ttl: config.cache.ttl,
        capacity: config.cache.max_entries,
    };
    // Under the cache, so that every write of the tree, records included, is fenced.
    let store: Arc<dyn Store> = if options.fence.term() > 0 {
        Arc::new(FencedStore::new(store, options.fence.clone()))
    } else {
        store
    };
    let cached = Arc::new(CachedStore::new(store, cache, metrics.clone()));
    let reader: ValueReader = cached.clone();
    let store: Arc<dyn Store> = cached;
    let secrets = Arc::new(ManagedSecrets::new(config, &options, reader));
    // Board entries of the managed secrets take a slot each (no map entry), keyed by the
    // managed set's own names (shared, not copied).
    board.declare(secrets.configs().iter().map(|c| c.secret.clone()).collect());
    let context = Arc::new(RotationContext {
        store: store.clone(),
        metrics: metrics.clone(),
        clock: options.clock,
        slots: Arc::new(Semaphore::new(
            config.runtime.max_concurrent_rotations.max(1),
        )),
        board: board.clone(),
        scheduler: Scheduler::start(options.clock, options.namespace.clone()),
        namespace: options.namespace.clone(),
        consumers: Arc::new(ConsumerBoard::default()),
        jobs: Arc::new(jobs_actor::JobBoard::default()),
        secrets: secrets.clone(),
        hibernate_after: options.hibernate_after.filter(|d| !d.is_zero()),
    });
    context.scheduler.set_waker(Arc::downgrade(&context));
    metrics.secrets_managed.set(secrets.len() as i64);
    // The store was opened by the caller.
    metrics.store_up.set(1);
    for (name, policy) in &config.policies {
        metrics.init_policy(name);
        if policy.verify_interval.is_some() {
            metrics.init_verify(name);
        }
    }

    // New store-only secrets get their first versions in bulk before their actors start,
    // which then resume from that state (see `bootstrap`).
    let first_versions = if config.runtime.first_versions_in_bulk {
        bootstrap::run(
            &secrets,
            &context.store,
            &metrics,
            options.clock,
            bootstrap::BATCH,
        )
        .await
    } else {
        bootstrap::FirstVersions::default()
    };

    let observer_metrics = metrics.clone();
    let observer: Arc<dyn Fn(SupervisorEvent) + Send + Sync> = Arc::new(move |event| {
        if let SupervisorEvent::Restarting { kind: role, .. } = &event {
            observer_metrics.restart(role);
        }
    });

    let rotations_args = {
        let observer = observer.clone();
        let intensity = options.rotations_intensity;
        let backoff = options.backoff;
        let context = context.clone();
        let first = AtomicBool::new(true);
        move || {
            if !first.swap(false, Ordering::AcqRel) {
                // A restart by the root: the actors of the last incarnation are gone, and
                // what they had in flight has no deadline to wake it. Go through the
                // journals again, as at start-up.
                let context = context.clone();
                tokio::spawn(async move { fill(&context).await });
            }
            // No children: secrets are woken on demand (see `fill`).
            SupervisorArgs::new(Vec::new())
                .with_intensity(intensity)
                .with_backoff(backoff)
                .with_observer(observer.clone())
        }
    };
    let watch_ctx = watch_context(config, &context, &options);
    metrics.mounts.set(if config.watch.enabled {
        config.mounts.len() as i64
    } else {
        0
    });
    let watcher_children = {
        let ctx = watch_ctx.clone();
        let mounts: Vec<_> = if config.watch.enabled {
            config.mounts.iter().cloned().map(Arc::new).collect()
        } else {
            Vec::new()
        };
        let publish: Vec<_> = config.publish.iter().cloned().map(Arc::new).collect();
        let views = config.all_views();
        let aws_env = options.aws_env.clone();
        let metrics = metrics.clone();
        let store = context.store.clone();
        move || {
            // Publishers first: on a laptop they create the directories the watchers watch.
            let publishers = publish.iter().map(|destination| {
                let destination = destination.clone();
                let store = store.clone();
                ChildSpec::actor(
                    format!("publish:{}", destination.path.display()),
                    "publisher",
                    Restart::Permanent,
                    Some(publisher::actor_name(&ctx.namespace, &destination.path)),
                    move || (PublisherActor, (destination.clone(), store.clone())),
                )
            });
            let watchers = mounts.iter().map(|mount| {
                let mount = mount.clone();
                let ctx = ctx.clone();
                ChildSpec::actor(
                    format!("watch:{}", mount.path.display()),
                    "watcher",
                    Restart::Permanent,
                    Some(watcher::actor_name(&ctx.namespace, &mount.path)),
                    move || (WatcherActor, (mount.clone(), ctx.clone())),
                )
            });
            let views = views.iter().map(|view| {
                let view = view.clone();
                let store = store.clone();
                let metrics = metrics.clone();
                let namespace = ctx.namespace.clone();
                let aws_env = aws_env.clone();
                ChildSpec::actor(
                    format!("view:{}", view.name()),
                    "view_publisher",
                    Restart::Permanent,
                    Some(publisher::view::actor_name(&ctx.namespace, &view)),
                    move || {
                        (
                            ViewPublisherActor,
                            (
                                view.clone(),
                                store.clone(),
                                metrics.clone(),
                                namespace.clone(),
                                aws_env.clone(),
                            ),
                        )
                    },
                )
            });
            publishers.chain(views).chain(watchers).collect::<Vec<_>>()
        }
    };
    let watchers_args = {
        let observer = observer.clone();
        let backoff = options.backoff;
        move || {
            SupervisorArgs::new(watcher_children())
                .with_backoff(backoff)
                .with_observer(observer.clone())
        }
    };
    let ns = options.namespace.clone();
    let actor_metrics = metrics.clone();
    let actor_board = board.clone();
    let notifier_metrics = metrics.clone();
    let notify = config.notify.clone();
    let deliveries = Deliveries::default();
    let notifier_deliveries = deliveries.clone();
    let mut children = vec![
        ChildSpec::actor(
            "metrics",
            "metrics",
            Restart::Permanent,
            Some(format!("{ns}{}", metrics_actor::NAME)),
            move || (MetricsActor, (actor_metrics.clone(), actor_board.clone())),
        ),
        ChildSpec::actor(
            "notifier",
            "notifier",
            Restart::Permanent,
            Some(format!("{ns}{}", notifier::NAME)),
            move || {
                (
                    Notifier,
                    (
                        notifier_metrics.clone(),
                        notify.clone(),
                        notifier_deliveries.clone(),
                    ),
                )
            },
        )
        // Drained, not stopped: the last events of the stopping rotation actors still go
        // out.
        .draining(),
    ];
    // Before the rotations: it loads the consumers in `pre_start`, so no rotation actor
    // checks its gate against an empty board.
    if config.server.consumer_token_file.is_some() {
        let args = ConsumersArgs {
            config: config.consumers,
            store: context.store.clone(),
            board: context.consumers.clone(),
            status: board.clone(),
            metrics: metrics.clone(),
            clock: options.clock,
            namespace: ns.clone(),
            managed: Arc::new(secrets.iter().map(|(s, _)| s.clone()).collect()),
        };
        children.push(ChildSpec::actor(
            "consumers",
            "consumers",
            Restart::Permanent,
            Some(consumers_actor::actor_name(&ns)),
            move || (ConsumersActor, args.clone()),
        ));
    }
    // Before the rotations: a rotation actor that resumes a job's attempt reports its
    // outcome to it, and a report to an actor not yet registered would be dropped.
    {
        let args = JobsArgs {
            store: context.store.clone(),
            secrets: secrets.clone(),
            context: context.clone(),
            board: board.clone(),
            metrics: metrics.clone(),
            clock: options.clock,
            namespace: ns.clone(),
            views: context.jobs.clone(),
        };
        children.push(ChildSpec::actor(
            "jobs",
            "jobs",
            Restart::Permanent,
            Some(jobs_actor::actor_name(&ns)),
            move || (JobsActor, args.clone()),
        ));
    }
    children.extend([
        ChildSpec::supervisor(
            "watchers",
            "supervisor",
            Some(format!("{ns}rotor.watchers")),
            watchers_args,
        ),
        ChildSpec::supervisor(
            "rotations",
            "supervisor",
            Some(rotation::supervisor_name(&ns)),
            rotations_args,
        ),
    ]);
    children.extend(options.extra_children.iter().cloned());
    let root_args = SupervisorArgs::new(children)
        .with_intensity(Intensity {
            max_restarts: 5,
            within: Duration::from_secs(60),
        })
        .with_observer(observer);
    let root = spawn_root(Some(format!("{ns}rotor")), root_args).await?;
    // The notifier runs now: the notices of the first versions written in bulk go out.
    first_versions.notify(&ns);

    // Ready once every secret is on the board: filled from the journals, or published by
    // its woken actor after loading its journal and resuming.
    let ready = Arc::new(AtomicBool::new(false));
    {
        let ready = ready.clone();
        let context = context.clone();
        tokio::spawn(async move {
            fill(&context).await;
            let mut wait = Duration::from_millis(1);
            while context.board.len() < context.secrets.len() {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(100));
            }
            ready.store(true, Ordering::Release);
            // The journal pages and wake lists of the fill are freed: give their pages back,
            // so what `rotor run` holds once ready is the idle secrets' cost, not the peak.
            crate::config::release_freed_memory();
        });
    }
    Ok(Tree {
        root,
        context,
        secrets,
        ready,
        deliveries,
    })
}

/// Puts every managed secret on the status board and its deadlines in the scheduler from
/// its journal, and wakes those that need their actor now: something in flight, a deadline
/// within the idle delay, a journal the machine would change on resume (a policy changed,
/// a due time passed), no journal yet, or every one when actors do not hibernate. Journals
/// are read a page at a time. If the store cannot be read, every secret is woken: its
/// actor reads its own journal and fails (and is restarted) as it would have before.
async fn fill(context: &Arc<RotationContext>) {
    let started = std::time::Instant::now();
    let secrets = &context.secrets;
    let mut seen = vec![false; secrets.len()];
    let mut wake: Vec<SecretRef> = Vec::new();
    let mut after: Option<SecretRef> = None;
    let mut read_all = true;
    loop {
        let page = match context.store.journals(after.as_ref(), JOURNAL_PAGE).await {
            Ok(page) => page,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the journals at start-up; starting every secret's actor");
                read_all = false;
                break;
            }
        };
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        let now = context.clock.now();
        for (secret, journal) in page {
            let Ok(index) = secrets
                .configs()
                .binary_search_by(|c| c.secret.cmp(&secret))
            else {
                // In the store, no longer in the configuration.
                continue;
            };
            seen[index] = true;
            // The managed set's name, not the page's copy: the board and the scheduler
            // then share one allocation of it.
            let secret = &secrets.configs()[index].secret;
            if !place(context, secret, &journal, now) {
                wake.push(secret.clone());
            }
        }
    }
    for (cfg, seen) in secrets.configs().iter().zip(&seen) {
        if !seen || !read_all {
            wake.push(cfg.secret.clone());
        }
    }
    wake.sort_unstable();
    wake.dedup();
    let woken = wake.len();
    tracing::info!(
        secrets = secrets.len(),
        hibernating = secrets.len().saturating_sub(woken),
        waking = woken,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "schedule filled from the journals"
    );
    futures::stream::iter(wake)
        .for_each_concurrent(WAKES_AT_ONCE, |secret| async move {
            if let Err(e) = context.wake(&secret).await {
                tracing::warn!(%secret, error = %e, "cannot start the rotation actor at start-up");
            }
        })
        .await;
}

/// Puts one secret on the board and its deadlines in the scheduler, if its actor has
/// nothing to do now. `false`: wake it.
fn place(
    context: &RotationContext,
    secret: &SecretRef,
    journal: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let Some(after) = context.hibernate_after else {
        return false;
    };
    let secrets = &context.secrets;
    let Some(cfg) = secrets.get(secret) else {
        return false;
    };
    // An unreadable journal: the actor fails on it, loudly, as it always did.
    let Ok(state) = serde_json::from_slice::<SecretState>(journal) else {
        return false;
    };
    if !rotation::may_hibernate(&state.phase, secrets.has_memory_gates(secret)) {
        return false;
    }
    let Some(Ok(t)) = secrets.resume(secret, &state, now) else {
        return false;
    };
    if t.state != state || t.history.is_some() {
        return false;
    }
    let mut deadline = None;
    for effect in &t.effects {
        match effect {
            Effect::ArmTimer { at, .. } => deadline = Some(*at),
            Effect::CancelTimer { .. } => deadline = None,
            _ => return false,
        }
    }
    let soon = now + TimeDelta::from_std(after).unwrap_or(TimeDelta::MAX);
    if deadline.is_some_and(|at| at <= soon) {
        return false;
    }
    if let Some(at) = deadline {
        context.scheduler.arm(secret, at);
    }
    // The first verify after start-up, at the same per-secret offset an actor would use.
    if let Some(interval) = cfg.policy.verify_interval {
        let at =
            now + TimeDelta::from_std(jitter_offset(secret, interval)).unwrap_or(TimeDelta::MAX);
        context.scheduler.arm_kind(secret, TimerKind::Verify, at);
    }
    context
        .board
        .set(secret, rotation::status_of(&cfg.policy.name, &state));
    true
}
