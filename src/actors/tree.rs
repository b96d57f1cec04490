//! rotor's supervision tree, built from a validated configuration:
//!
//! ```text
//! rotor (root supervisor)
//! ├── metrics            one actor: encodes the registry, refreshes fleet gauges
//! ├── notifier           one actor: receives and delivers lifecycle events
//! ├── watchers           supervisor: one watcher actor per mount path (none yet)
//! └── rotations          supervisor: one rotation actor per tenant secret
//! ```
//!
//! Every restart anywhere is logged by the supervisor and counted in
//! `rotor_actor_restarts_total{kind}`. When the root gives up, [`Tree::wait`] says so and
//! `rotor run` exits non-zero so Kubernetes restarts the pod.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::TimeDelta;
use tokio::sync::Semaphore;

use super::metrics::{self as metrics_actor, MetricsActor};
use super::notifier::{self, Notifier};
use super::root::{Root, RootExit, spawn_root};
use super::rotation::{self, RotationActor, RotationSpec, Shared};
use super::supervisor::{Backoff, ChildSpec, Intensity, Restart, SupervisorArgs, SupervisorEvent};
use crate::clock::Clock;
use crate::config::{Config, ExpireAfter, SecretConfig, TargetConfig};
use crate::domain::SecretRef;
use crate::machine::ExpiryGate;
use crate::metrics::Metrics;
use crate::status::StatusBoard;
use crate::store::Store;
use crate::target::Target;
use crate::target::none::NoneTarget;

/// Knobs that are not in the configuration file (tests set them).
#[derive(Clone)]
pub struct TreeOptions {
    pub clock: Clock,
    /// Longest a single rotation step may take.
    pub step_timeout: Duration,
    /// Restart intensity of the rotations supervisor.
    pub rotations_intensity: Intensity,
    pub backoff: Backoff,
    /// Overrides the target of every secret (tests inject failing targets here).
    pub target_override: Option<Arc<dyn Target>>,
    /// Prefix of every registry name (ractor's registry is per process; tests run
    /// several trees at once). Empty in production.
    pub namespace: String,
}

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
            target_override: None,
            namespace: String::new(),
        }
    }
}

/// The running tree and what the API needs to reach it.
pub struct Tree {
    pub root: Root,
    pub shared: Arc<Shared>,
    /// Every managed secret and its spec, for 404s and the schedule.
    pub secrets: Arc<BTreeMap<SecretRef, Arc<RotationSpec>>>,
    ready: Arc<AtomicBool>,
}

impl Tree {
    /// Whether every rotation actor has reported its state once.
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    pub async fn wait(&mut self) -> RootExit {
        self.root.wait().await
    }

    /// Stops the tree gracefully (children in reverse order), killing it after `timeout`.
    pub async fn shutdown(&mut self, timeout: Duration) -> RootExit {
        self.shared.slots.close();
        self.root.shutdown(timeout).await
    }
}

/// Builds the actor-facing spec of one secret from its configuration.
pub fn spec_for(cfg: &SecretConfig, config: &Config, options: &TreeOptions) -> Arc<RotationSpec> {
    let policy = cfg.policy.clone();
    let secret = cfg.secret.clone();
    let schedule_policy = policy.clone();
    let schedule_secret = secret.clone();
    let target: Arc<dyn Target> = match (&options.target_override, &cfg.target) {
        (Some(t), _) => t.clone(),
        (
            None,
            TargetConfig::None {
                delay,
                fail,
                fail_file,
            },
        ) => Arc::new(NoneTarget::with_failures(*delay, fail, fail_file.clone())),
    };
    let td = |d: Duration| TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
    Arc::new(RotationSpec {
        secret,
        policy: policy.name.clone(),
        generator: policy.generator.clone(),
        grace: td(policy.grace),
        max_attempts: policy.max_attempts,
        retry_backoff: td(config.runtime.retry_backoff),
        retry_backoff_max: td(config.runtime.retry_backoff_max),
        expiry_gate: match policy.expire_after {
            ExpireAfter::Grace => ExpiryGate::Grace,
            ExpireAfter::GraceAndConsumers { max_extension } => ExpiryGate::GraceAndConsumers {
                max_extension: td(max_extension),
            },
        },
        next_due: Arc::new(move |last, now| {
            schedule_policy
                .schedule
                .next_due(&schedule_secret, last, now)
        }),
        step_timeout: options.step_timeout,
        target,
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
    let shared = Arc::new(Shared {
        store,
        metrics: metrics.clone(),
        clock: options.clock,
        slots: Arc::new(Semaphore::new(
            config.runtime.max_concurrent_rotations.max(1),
        )),
        board: board.clone(),
        namespace: options.namespace.clone(),
    });
    let secrets: BTreeMap<SecretRef, Arc<RotationSpec>> = config
        .secrets
        .iter()
        .map(|s| (s.secret.clone(), spec_for(s, config, &options)))
        .collect();
    let secrets = Arc::new(secrets);
    metrics.secrets_managed.set(secrets.len() as i64);
    // The store was opened by the caller.
    metrics.store_up.set(1);
    for policy in config.policies.keys() {
        metrics.init_policy(policy);
    }

    let observer_metrics = metrics.clone();
    let observer: Arc<dyn Fn(SupervisorEvent) + Send + Sync> = Arc::new(move |event| {
        if let SupervisorEvent::Restarting { kind, .. } = &event {
            observer_metrics.restart(kind);
        }
    });

    let rotation_children = {
        let secrets = secrets.clone();
        let shared = shared.clone();
        move || {
            secrets
                .values()
                .map(|spec| {
                    let spec = spec.clone();
                    let shared = shared.clone();
                    ChildSpec::actor(
                        spec.secret.to_string(),
                        "rotation",
                        Restart::Permanent,
                        Some(rotation::actor_name(&shared.namespace, &spec.secret)),
                        move || (RotationActor, (spec.clone(), shared.clone())),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let rotations_args = {
        let observer = observer.clone();
        let intensity = options.rotations_intensity;
        let backoff = options.backoff;
        move || {
            SupervisorArgs::new(rotation_children())
                .with_intensity(intensity)
                .with_backoff(backoff)
                .with_observer(observer.clone())
        }
    };
    let watchers_args = {
        let observer = observer.clone();
        move || SupervisorArgs::new(Vec::new()).with_observer(observer.clone())
    };
    let ns = options.namespace.clone();
    let m = metrics.clone();
    let b = board.clone();
    let m2 = metrics.clone();
    let notify = config.notify.clone();
    let children = vec![
        ChildSpec::actor(
            "metrics",
            "metrics",
            Restart::Permanent,
            Some(format!("{ns}{}", metrics_actor::NAME)),
            move || (MetricsActor, (m.clone(), b.clone())),
        ),
        ChildSpec::actor(
            "notifier",
            "notifier",
            Restart::Permanent,
            Some(format!("{ns}{}", notifier::NAME)),
            move || (Notifier, (m2.clone(), notify.clone())),
        ),
        ChildSpec::supervisor(
            "watchers",
            "supervisor",
            Some(format!("{ns}rotor.watchers")),
            watchers_args,
        ),
        ChildSpec::supervisor(
            "rotations",
            "supervisor",
            Some(format!("{ns}rotor.rotations")),
            rotations_args,
        ),
    ];
    let root_args = SupervisorArgs::new(children)
        .with_intensity(Intensity {
            max_restarts: 5,
            within: Duration::from_secs(60),
        })
        .with_observer(observer);
    let root = spawn_root(Some(format!("{ns}rotor")), root_args).await?;

    // Ready once every rotation actor has published its state (it does after loading its
    // journal and resuming).
    let ready = Arc::new(AtomicBool::new(false));
    {
        let ready = ready.clone();
        let board = board.clone();
        let want = secrets.len();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(1);
            while board.len() < want {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(100));
            }
            ready.store(true, Ordering::Release);
        });
    }
    Ok(Tree {
        root,
        shared,
        secrets,
        ready,
    })
}
