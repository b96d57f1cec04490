//! rotor's Prometheus metrics: one registry, families with low-cardinality labels.
//!
//! The names are a contract: dashboards, alert rules and users' queries name them. prometheus-client appends `_total` to counters,
//! so counters are registered without it. Handles are cheap to clone and update from any
//! task (atomics); the metrics actor owns encoding.
//!
//! Labels are bounded by configuration (policy, channel), by code (outcome, error kind,
//! actor kind, event kind) or both. Per-secret series (`tenant`, `key`) exist only with
//! `[metrics] per_secret = true` ([`Metrics::with_options`]): at 100,000 secrets a
//! per-secret counter plus histogram is about 170 MB of text per scrape.
//!
//! [`Metrics::encode`] emits the Prometheus text format 0.0.4 (what `promtool check
//! metrics` parses and what `/metrics` declares in its content type), converted from
//! prometheus-client's OpenMetrics output by [`openmetrics_to_text`].

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Rotation outcome counters: by policy and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RotationLabels {
    pub policy: String,
    pub outcome: String,
}

/// Error counters: by policy and bounded error kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub policy: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// Notification deliveries: by channel type and outcome (`delivered`, `failed`, `dropped`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: String,
    pub outcome: String,
}

/// Reload actions: by action type (`http`, `signal`, `exec`) and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub action: String,
    pub outcome: String,
}

/// Verifications of a current version against its target: by policy and result (`holds`,
/// `lost`, `error`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerifyLabels {
    pub policy: String,
    pub result: String,
}

/// Vault view writes: by view (`mount/path`, one per `[[publish]]` entry) and outcome
/// (`written`, `unchanged` is not counted, or a `ViewError` label).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViewLabels {
    pub view: String,
    pub outcome: String,
}

/// The rotor version a view's field shows: by view and field name (both from the config).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViewFieldLabels {
    pub view: String,
    pub field: String,
}

/// A view alone: by view (`mount/path`, one per `[[publish]]` entry).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViewNameLabels {
    pub view: String,
}

/// Consumers (agents' reports) by state: `current`, `lagging`, `gone`. Never a consumer id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerStateLabels {
    pub state: String,
}

/// A job state alone (`running`, `finished`, `cancelled`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// A bounded outcome alone (consumer reports, reload permits).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// The outcomes of `rotor_forwarded_requests_total`: the leader answered (whatever its
/// status), no replica led (or this one got a write another had forwarded already), or
/// the leader could not be used (unreachable, timed out, an unusable URL or answer).
pub const FORWARD_OUTCOMES: [&str; 3] = ["forwarded", "no_leader", "error"];

/// The states of [`ConsumerStateLabels`].
pub const CONSUMER_STATES: [&str; 3] = ["current", "lagging", "gone"];

/// Per-secret series: by tenant and key (opt-in).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecretLabels {
    pub tenant: String,
    pub key: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecretOutcomeLabels {
    pub tenant: String,
    pub key: String,
    pub outcome: String,
}

/// The opt-in per-secret families (`[metrics] per_secret = true`).
#[derive(Clone)]
pub struct PerSecret {
    pub rotations_total: Family<SecretOutcomeLabels, Counter>,
    pub rotation_duration_seconds: Family<SecretLabels, Histogram>,
    pub last_rotation_timestamp_seconds: Family<SecretLabels, Gauge>,
}

/// The metric families whose names are a contract (dashboards, alert rules and users'
/// queries name them), as they appear in the exposition: counters with `_total`.
pub const CONTRACT: &[&str] = &[
    "secret_access_total",
    "secret_access_errors_total",
    "secret_rotation_total",
    "secret_rotation_errors_total",
    "secret_cache_hits_total",
    "secret_cache_misses_total",
    "secret_access_latency_seconds",
    "secret_rotation_duration_seconds",
    "secret_cache_size",
    "secret_rotation_jobs_active",
    "secrets_watched",
];

/// Every metric rotor exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub access_total: Counter,
    pub access_errors_total: Counter,
    pub access_latency_seconds: Histogram,
    pub cache_hits_total: Counter,
    pub cache_misses_total: Counter,
    pub cache_size: Gauge,
    pub rotation_total: Family<RotationLabels, Counter>,
    pub rotation_errors_total: Family<ErrorLabels, Counter>,
    pub rotation_duration_seconds: Family<PolicyLabels, Histogram>,
    pub rotation_jobs_active: Gauge,
    pub secrets_watched: Gauge,
    pub secrets_managed: Gauge,
    /// Secrets still waiting for their first version from the bulk path of a first start
    /// (`actors::bootstrap`); 0 once it is done.
    pub first_versions_pending: Gauge,
    /// Rotation actors alive now: the secrets with work (the others hibernate).
    pub rotation_actors_awake: Gauge,
    pub secrets_stuck: Gauge,
    pub actor_restarts_total: Family<KindLabels, Counter>,
    pub notifications_total: Family<KindLabels, Counter>,
    pub notification_deliveries_total: Family<ChannelLabels, Counter>,
    pub notifications_dropped_total: Family<KindLabels, Counter>,
    pub reloads_total: Family<ReloadLabels, Counter>,
    pub watcher_events_total: Family<KindLabels, Counter>,
    /// Mounts whose last health check succeeded.
    pub mounts_healthy: Gauge,
    pub mounts: Gauge,
    /// 1 while the store answers, 0 after a failed store operation (until one succeeds).
    pub store_up: Gauge,
    /// 1 on the replica that leads (runs the actor tree), 0 on the others (`[ha]`); 1
    /// without `[ha]`.
    pub leader: Gauge,
    // Freshness, refreshed from the status board at scrape time.
    pub secrets_in_grace: Gauge,
    pub secrets_overdue: Gauge,
    pub oldest_current_age_seconds: Gauge,
    pub next_rotation_timestamp_seconds: Gauge,
    pub next_grace_expiry_timestamp_seconds: Gauge,
    pub last_rotation_timestamp_seconds: Gauge,
    /// Events waiting in each notification channel's queue, by channel.
    pub notification_queue_length: Family<KindLabels, Gauge>,
    /// Verifications of current versions (`verify_interval`), by policy and result.
    pub target_verifications_total: Family<VerifyLabels, Counter>,
    /// Current versions applied again after their target lost them, by policy and outcome
    /// (`succeeded`, `failed`).
    pub target_reapplied_total: Family<RotationLabels, Counter>,
    /// Reconciles of Vault views that wrote or failed, by view and outcome.
    pub view_writes_total: Family<ViewLabels, Counter>,
    /// The rotor version each field of a Vault view shows, as last written or checked.
    pub view_version: Family<ViewFieldLabels, Gauge>,
    /// Previous versions expired at the end of `max_grace_extension` while this view still
    /// did not show the new one.
    pub view_lag_expiries_total: Family<ViewNameLabels, Counter>,
    /// Old versions revoked again by a verify (a restore can bring them back), by policy
    /// and outcome (`succeeded`, `failed`). Revoke is idempotent, so most succeed without
    /// changing anything: the count says rotor made sure, not that something was found.
    pub target_revoked_again_total: Family<RotationLabels, Counter>,
    /// Consumer-secret pairs by state (a consumer reporting two secrets counts twice).
    pub consumers: Family<ConsumerStateLabels, Gauge>,
    /// Consumer reports by outcome (`accepted`, `rejected`).
    pub consumer_reports_total: Family<OutcomeLabels, Counter>,
    /// Reload permits by outcome (`granted`, `refused`, `released`, `expired`).
    pub consumer_permits_total: Family<OutcomeLabels, Counter>,
    /// Consumers named at an expiry because they did not show the new version: `late`
    /// (still reporting an older one when `max_grace_extension` ran out) or `gone` (stopped
    /// reporting during the grace).
    pub consumer_late_expiries_total: Family<KindLabels, Counter>,
    /// Emergency rotation jobs this process knows, by state (`running`, `finished`,
    /// `cancelled`). No job id label: the API reports each job.
    pub jobs: Family<StateLabels, Gauge>,
    /// Secrets handled by emergency rotation jobs, by outcome (`started`, `done`,
    /// `failed`).
    pub job_rotations_total: Family<OutcomeLabels, Counter>,
    /// Requests (every write, and JWKS reads) a replica that does not lead sent on to the
    /// leader (`[ha]`), by outcome
    /// ([`FORWARD_OUTCOMES`]: `forwarded`, `no_leader`, `error`). Counted by
    /// `api::forward`; no path, secret or replica id in the labels.
    pub forwarded_requests_total: Family<OutcomeLabels, Counter>,
    /// Present only with `[metrics] per_secret = true`.
    pub per_secret: Option<PerSecret>,
}

/// Access latency buckets: 1 ms to 5 s.
pub const ACCESS_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Rotation duration buckets: 1 s to 5 min.
pub const ROTATION_BUCKETS: [f64; 8] = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The default metrics: no per-secret series.
    pub fn new() -> Metrics {
        Metrics::with_options(false)
    }

    /// With per-secret series when `per_secret` (`[metrics] per_secret = true`).
    pub fn with_options(per_secret: bool) -> Metrics {
        let mut r = Registry::default();
        let access_total = Counter::default();
        r.register("secret_access", "Secret value reads", access_total.clone());
        let access_errors_total = Counter::default();
        r.register(
            "secret_access_errors",
            "Secret value reads that failed",
            access_errors_total.clone(),
        );
        let access_latency_seconds = Histogram::new(ACCESS_BUCKETS);
        r.register(
            "secret_access_latency_seconds",
            "Latency of secret value reads",
            access_latency_seconds.clone(),
        );
        let cache_hits_total = Counter::default();
        r.register(
            "secret_cache_hits",
            "Secret reads served from the cache",
            cache_hits_total.clone(),
        );
        let cache_misses_total = Counter::default();
        r.register(
            "secret_cache_misses",
            "Secret reads that missed the cache",
            cache_misses_total.clone(),
        );
        let cache_size = Gauge::default();
        r.register(
            "secret_cache_size",
            "Entries in the secret cache",
            cache_size.clone(),
        );
        let rotation_total = Family::<RotationLabels, Counter>::default();
        r.register(
            "secret_rotation",
            "Finished rotation attempts by policy and outcome",
            rotation_total.clone(),
        );
        let rotation_errors_total = Family::<ErrorLabels, Counter>::default();
        r.register(
            "secret_rotation_errors",
            "Failed rotation steps by policy and error kind",
            rotation_errors_total.clone(),
        );
        let rotation_duration_seconds =
            Family::<PolicyLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(ROTATION_BUCKETS)
            });
        r.register(
            "secret_rotation_duration_seconds",
            "Time from the start of a rotation to its promotion",
            rotation_duration_seconds.clone(),
        );
        let rotation_jobs_active = Gauge::default();
        r.register(
            "secret_rotation_jobs_active",
            "Rotations in flight (holding a concurrency slot)",
            rotation_jobs_active.clone(),
        );
        let secrets_watched = Gauge::default();
        r.register(
            "secrets_watched",
            "Files watched in secret mounts",
            secrets_watched.clone(),
        );
        let secrets_managed = Gauge::default();
        r.register(
            "rotor_secrets_managed",
            "Tenant secrets with a rotation actor",
            secrets_managed.clone(),
        );
        let first_versions_pending = Gauge::default();
        r.register(
            "rotor_first_versions_pending",
            "Secrets still waiting for their first version from the bulk path of a first start",
            first_versions_pending.clone(),
        );
        let rotation_actors_awake = Gauge::default();
        r.register(
            "rotor_rotation_actors_awake",
            "Rotation actors alive now (secrets with work; the others hibernate)",
            rotation_actors_awake.clone(),
        );
        let secrets_stuck = Gauge::default();
        r.register(
            "rotor_secrets_stuck",
            "Secrets whose retry budget ran out (manual action needed)",
            secrets_stuck.clone(),
        );
        let actor_restarts_total = Family::<KindLabels, Counter>::default();
        r.register(
            "rotor_actor_restarts",
            "Actor restarts by supervisors, by actor kind",
            actor_restarts_total.clone(),
        );
        let notifications_total = Family::<KindLabels, Counter>::default();
        r.register(
            "rotor_notifications",
            "Lifecycle events received by the notifier, by kind",
            notifications_total.clone(),
        );
        let notification_deliveries_total = Family::<ChannelLabels, Counter>::default();
        r.register(
            "rotor_notification_deliveries",
            "Notification delivery attempts by channel and outcome",
            notification_deliveries_total.clone(),
        );
        let notifications_dropped_total = Family::<KindLabels, Counter>::default();
        r.register(
            "rotor_notifications_dropped",
            "Notifications dropped because a channel's queue was full, by channel",
            notifications_dropped_total.clone(),
        );
        let reloads_total = Family::<ReloadLabels, Counter>::default();
        r.register(
            "rotor_reloads",
            "Reload actions run for critical secret changes, by action and outcome",
            reloads_total.clone(),
        );
        let watcher_events_total = Family::<KindLabels, Counter>::default();
        r.register(
            "rotor_watcher_events",
            "Watcher events by kind (secret-changed, health-check-failed, ...)",
            watcher_events_total.clone(),
        );
        let mounts_healthy = Gauge::default();
        r.register(
            "rotor_mounts_healthy",
            "Watched mounts whose last health check succeeded",
            mounts_healthy.clone(),
        );
        let mounts = Gauge::default();
        r.register("rotor_mounts", "Watched mounts", mounts.clone());
        let store_up = Gauge::default();
        r.register(
            "rotor_store_up",
            "1 while the secret store answers, 0 after a failed operation",
            store_up.clone(),
        );
        let leader = Gauge::default();
        r.register(
            "rotor_leader",
            "1 on the replica that holds the leader lease and runs rotations, 0 on the others",
            leader.clone(),
        );
        let secrets_in_grace = Gauge::default();
        r.register(
            "rotor_secrets_in_grace",
            "Secrets whose previous version is still valid (grace period)",
            secrets_in_grace.clone(),
        );
        let secrets_overdue = Gauge::default();
        r.register(
            "rotor_secrets_overdue",
            "Secrets more than a minute past their due time without a rotation in flight",
            secrets_overdue.clone(),
        );
        let oldest_current_age_seconds = Gauge::default();
        r.register_with_unit(
            "rotor_oldest_current_version_age",
            "Age of the oldest current version across all secrets",
            Unit::Seconds,
            oldest_current_age_seconds.clone(),
        );
        let next_rotation_timestamp_seconds = Gauge::default();
        r.register(
            "rotor_next_rotation_timestamp_seconds",
            "Unix time of the next scheduled rotation (0 if none)",
            next_rotation_timestamp_seconds.clone(),
        );
        let next_grace_expiry_timestamp_seconds = Gauge::default();
        r.register(
            "rotor_next_grace_expiry_timestamp_seconds",
            "Unix time of the next grace expiry (0 if none)",
            next_grace_expiry_timestamp_seconds.clone(),
        );
        let last_rotation_timestamp_seconds = Gauge::default();
        r.register(
            "rotor_last_rotation_timestamp_seconds",
            "Unix time of the most recent promotion (0 if none)",
            last_rotation_timestamp_seconds.clone(),
        );
        let notification_queue_length = Family::<KindLabels, Gauge>::default();
        r.register(
            "rotor_notification_queue_length",
            "Notifications waiting for delivery, by channel",
            notification_queue_length.clone(),
        );
        let target_verifications_total = Family::<VerifyLabels, Counter>::default();
        r.register(
            "rotor_target_verifications",
            "Checks of a current version against its target (verify_interval), by policy and result (holds, lost, error)",
            target_verifications_total.clone(),
        );
        let target_reapplied_total = Family::<RotationLabels, Counter>::default();
        r.register(
            "rotor_target_reapplied",
            "Current versions applied again after their target lost them, by policy and outcome",
            target_reapplied_total.clone(),
        );
        let view_writes_total = Family::<ViewLabels, Counter>::default();
        r.register(
            "rotor_view_writes",
            "Vault view reconciles that wrote the document or failed, by view and outcome (written, conflict, denied, vault_error, store_error, value_error)",
            view_writes_total.clone(),
        );
        let view_version = Family::<ViewFieldLabels, Gauge>::default();
        r.register(
            "rotor_view_version",
            "The rotor version each field of a Vault view shows, by view and field",
            view_version.clone(),
        );
        let view_lag_expiries_total = Family::<ViewNameLabels, Counter>::default();
        r.register(
            "rotor_view_lag_expiries",
            "Previous versions expired at the end of max_grace_extension while a Vault view still did not show the new version, by view",
            view_lag_expiries_total.clone(),
        );
        let target_revoked_again_total = Family::<RotationLabels, Counter>::default();
        r.register(
            "rotor_target_revoked_again",
            "Old versions revoked again by a verify of the current version, by policy and outcome",
            target_revoked_again_total.clone(),
        );
        let consumers = Family::<ConsumerStateLabels, Gauge>::default();
        r.register(
            "rotor_consumers",
            "Consumer-secret pairs reported by agents, by state (current, lagging, gone)",
            consumers.clone(),
        );
        let consumer_reports_total = Family::<OutcomeLabels, Counter>::default();
        r.register(
            "rotor_consumer_reports",
            "Consumer reports received, by outcome (accepted, rejected)",
            consumer_reports_total.clone(),
        );
        let consumer_permits_total = Family::<OutcomeLabels, Counter>::default();
        r.register(
            "rotor_consumer_permits",
            "Reload permits by outcome (granted, refused, released, expired)",
            consumer_permits_total.clone(),
        );
        let jobs = Family::<StateLabels, Gauge>::default();
        r.register(
            "rotor_jobs",
            "Emergency rotation jobs (rotate-all) known to this process, by state (running, finished, cancelled)",
            jobs.clone(),
        );
        let job_rotations_total = Family::<OutcomeLabels, Counter>::default();
        r.register(
            "rotor_job_rotations",
            "Secrets handled by emergency rotation jobs, by outcome (started, done, failed)",
            job_rotations_total.clone(),
        );
        let forwarded_requests_total = Family::<OutcomeLabels, Counter>::default();
        r.register(
            "rotor_forwarded_requests",
            "Requests (writes, JWKS reads) a follower sent on to the leader (HA), by outcome (forwarded, no_leader, error)",
            forwarded_requests_total.clone(),
        );
        let consumer_late_expiries_total = Family::<KindLabels, Counter>::default();
        r.register(
            "rotor_consumer_late_expiries",
            "Consumers that did not show the new version when the previous one expired, by kind (late, gone)",
            consumer_late_expiries_total.clone(),
        );
        let per_secret = per_secret.then(|| {
            let p = PerSecret {
                rotations_total: Family::default(),
                rotation_duration_seconds: Family::new_with_constructor(|| {
                    Histogram::new(ROTATION_BUCKETS)
                }),
                last_rotation_timestamp_seconds: Family::default(),
            };
            r.register(
                "rotor_secret_rotations",
                "Finished rotation attempts by secret and outcome (per_secret)",
                p.rotations_total.clone(),
            );
            r.register(
                "rotor_secret_rotation_duration_seconds",
                "Time from the start of a rotation to its promotion, by secret (per_secret)",
                p.rotation_duration_seconds.clone(),
            );
            r.register(
                "rotor_secret_last_rotation_timestamp_seconds",
                "Unix time of the secret's most recent promotion (per_secret)",
                p.last_rotation_timestamp_seconds.clone(),
            );
            p
        });
        let m = Metrics {
            registry: Arc::new(r),
            access_total,
            access_errors_total,
            access_latency_seconds,
            cache_hits_total,
            cache_misses_total,
            cache_size,
            rotation_total,
            rotation_errors_total,
            rotation_duration_seconds,
            rotation_jobs_active,
            secrets_watched,
            secrets_managed,
            first_versions_pending,
            rotation_actors_awake,
            secrets_stuck,
            actor_restarts_total,
            notifications_total,
            notification_deliveries_total,
            notifications_dropped_total,
            reloads_total,
            watcher_events_total,
            mounts_healthy,
            mounts,
            store_up,
            leader,
            secrets_in_grace,
            secrets_overdue,
            oldest_current_age_seconds,
            next_rotation_timestamp_seconds,
            next_grace_expiry_timestamp_seconds,
            last_rotation_timestamp_seconds,
            notification_queue_length,
            target_verifications_total,
            target_reapplied_total,
            view_writes_total,
            view_version,
            view_lag_expiries_total,
            target_revoked_again_total,
            consumers,
            consumer_reports_total,
            consumer_permits_total,
            consumer_late_expiries_total,
            jobs,
            job_rotations_total,
            forwarded_requests_total,
            per_secret,
        };
        m.init_known_series();
        m
    }

    /// Creates, at zero, the series whose labels are known in advance, so that every
    /// family a dashboard or an alert names is in `/metrics` from the first scrape (an
    /// empty family is not printed at all, and an absent series makes `increase()` and
    /// ratios silently empty).
    fn init_known_series(&self) {
        for role in [
            "rotation",
            "supervisor",
            "metrics",
            "notifier",
            "watcher",
            "consumers",
        ] {
            let _ = self.actor_restarts_total.get_or_create(&KindLabels {
                kind: role.to_owned(),
            });
        }
        for action in ["http", "signal", "exec"] {
            for outcome in ["succeeded", "failed"] {
                let _ = self.reloads_total.get_or_create(&ReloadLabels {
                    action: action.to_owned(),
                    outcome: outcome.to_owned(),
                });
            }
        }
        // The watcher event kinds (`WatchEventKind`): a bounded label set.
        for kind in [
            "started",
            "stopped",
            "secret-changed",
            "secret-deleted",
            "reload-required",
            "health-check-success",
            "health-check-failed",
            "error",
        ] {
            let _ = self.watcher_events_total.get_or_create(&KindLabels {
                kind: kind.to_owned(),
            });
        }
        for state in CONSUMER_STATES {
            let _ = self.consumers.get_or_create(&ConsumerStateLabels {
                state: state.to_owned(),
            });
        }
        for outcome in ["accepted", "rejected"] {
            let _ = self.consumer_reports_total.get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }
        for outcome in ["granted", "refused", "released", "expired"] {
            let _ = self.consumer_permits_total.get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }
        for outcome in FORWARD_OUTCOMES {
            let _ = self.forwarded_requests_total.get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }
        for kind in ["late", "gone"] {
            let _ = self
                .consumer_late_expiries_total
                .get_or_create(&KindLabels {
                    kind: kind.to_owned(),
                });
        }
    }

    /// Creates the series of notification channel `channel` at zero.
    pub fn init_channel(&self, channel: &str) {
        for outcome in ["delivered", "retried", "failed", "dropped"] {
            let _ = self
                .notification_deliveries_total
                .get_or_create(&ChannelLabels {
                    channel: channel.to_owned(),
                    outcome: outcome.to_owned(),
                });
        }
        let _ = self.notifications_dropped_total.get_or_create(&KindLabels {
            kind: channel.to_owned(),
        });
        let _ = self.notification_queue_length.get_or_create(&KindLabels {
            kind: channel.to_owned(),
        });
    }

    /// The Prometheus text exposition format 0.0.4 (`text/plain; version=0.0.4`), which
    /// Prometheus 2.x scrapes and `promtool check metrics` accepts.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        Ok(openmetrics_to_text(&self.encode_openmetrics()?))
    }

    /// The OpenMetrics text format (`application/openmetrics-text; version=1.0.0`).
    pub fn encode_openmetrics(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Records a finished attempt of `secret` in the per-secret series (no-op unless
    /// `per_secret`). `duration_secs` and `promoted_at` only for a success.
    pub fn secret_rotation(
        &self,
        tenant: &str,
        key: &str,
        outcome: &str,
        duration_secs: Option<f64>,
        promoted_at: Option<i64>,
    ) {
        let Some(p) = &self.per_secret else { return };
        p.rotations_total
            .get_or_create(&SecretOutcomeLabels {
                tenant: tenant.to_owned(),
                key: key.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        let labels = SecretLabels {
            tenant: tenant.to_owned(),
            key: key.to_owned(),
        };
        if let Some(d) = duration_secs {
            p.rotation_duration_seconds
                .get_or_create(&labels)
                .observe(d);
        }
        if let Some(t) = promoted_at {
            p.last_rotation_timestamp_seconds
                .get_or_create(&labels)
                .set(t);
        }
    }

    /// Creates the series of `policy` at zero, so dashboards and alerts see them before the
    /// first rotation (an absent series makes `rate()` and ratios silently empty).
    pub fn init_policy(&self, policy: &str) {
        for outcome in ["succeeded", "failed", "rolled_back", "abandoned"] {
            let _ = self.rotation_total.get_or_create(&RotationLabels {
                policy: policy.to_owned(),
                outcome: outcome.to_owned(),
            });
        }
        let _ = self.rotation_duration_seconds.get_or_create(&PolicyLabels {
            policy: policy.to_owned(),
        });
        for error in [
            "store", "apply", "test", "revoke", "timeout", "operator", "internal",
        ] {
            let _ = self.rotation_errors_total.get_or_create(&ErrorLabels {
                policy: policy.to_owned(),
                error: error.to_owned(),
            });
        }
    }

    /// Creates the verification series of `policy` at zero; only for policies with a
    /// `verify_interval`, so the others export nothing they never do.
    pub fn init_verify(&self, policy: &str) {
        for result in ["holds", "lost", "error"] {
            let _ = self
                .target_verifications_total
                .get_or_create(&VerifyLabels {
                    policy: policy.to_owned(),
                    result: result.to_owned(),
                });
        }
        for outcome in ["succeeded", "failed"] {
            let labels = RotationLabels {
                policy: policy.to_owned(),
                outcome: outcome.to_owned(),
            };
            let _ = self.target_reapplied_total.get_or_create(&labels);
            let _ = self.target_revoked_again_total.get_or_create(&labels);
        }
    }

    /// Counts one verification of a current version: `holds`, `lost` or `error`.
    pub fn target_verified(&self, policy: &str, result: &str) {
        self.target_verifications_total
            .get_or_create(&VerifyLabels {
                policy: policy.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts one re-apply of a lost current version: `succeeded` or `failed`.
    pub fn target_reapplied(&self, policy: &str, outcome: &str) {
        self.target_reapplied_total
            .get_or_create(&RotationLabels {
                policy: policy.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts `n` old versions revoked again by a verify: `succeeded` or `failed`.
    pub fn target_revoked_again(&self, policy: &str, outcome: &str, n: u32) {
        if n > 0 {
            self.target_revoked_again_total
                .get_or_create(&RotationLabels {
                    policy: policy.to_owned(),
                    outcome: outcome.to_owned(),
                })
                .inc_by(u64::from(n));
        }
    }

    pub fn rotation(&self, policy: &str, outcome: &str) {
        self.rotation_total
            .get_or_create(&RotationLabels {
                policy: policy.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn rotation_error(&self, policy: &str, error: &str) {
        self.rotation_errors_total
            .get_or_create(&ErrorLabels {
                policy: policy.to_owned(),
                error: error.to_owned(),
            })
            .inc();
    }

    /// Counts a restart of an actor in `role` (`rotation`, `watcher`, ...).
    pub fn restart(&self, role: &str) {
        self.actor_restarts_total
            .get_or_create(&KindLabels {
                kind: role.to_owned(),
            })
            .inc();
    }
}

/// Converts prometheus-client's OpenMetrics text to the Prometheus text format 0.0.4:
/// counter families are named with their `_total` suffix in `# HELP`/`# TYPE` (OpenMetrics
/// names the family without it, which the 0.0.4 parser reads as a family with no
/// samples plus an untyped one), and `# UNIT` and `# EOF` lines are dropped.
pub fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // prometheus-client writes `# HELP` before `# TYPE`; the HELP line waits for the type.
    let mut help: Option<&str> = None;
    let flush = |out: &mut String, help: &mut Option<&str>| {
        if let Some(h) = help.take() {
            out.push_str(h);
            out.push('\n');
        }
    };
    for line in om.lines() {
        if line.starts_with("# HELP ") {
            flush(&mut out, &mut help);
            help = Some(line);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let name = if ty == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some(h) = help.take() {
                let text = h["# HELP ".len()..]
                    .split_once(' ')
                    .map_or("", |(_, text)| text);
                out.push_str("# HELP ");
                out.push_str(&name);
                out.push(' ');
                out.push_str(text);
                out.push('\n');
            }
            out.push_str("# TYPE ");
            out.push_str(&name);
            out.push(' ');
            out.push_str(ty);
            out.push('\n');
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        } else {
            flush(&mut out, &mut help);
            out.push_str(line);
            out.push('\n');
        }
    }
    flush(&mut out, &mut help);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_names_counters_with_total_and_drops_openmetrics_lines() {
        let m = Metrics::new();
        m.rotation("p", "succeeded");
        let text = m.encode().unwrap();
        assert!(
            text.contains("# TYPE secret_rotation_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP secret_rotation_total Finished"),
            "{text}"
        );
        assert!(text.contains("# TYPE secret_access_latency_seconds histogram\n"));
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert!(text.contains("# TYPE rotor_oldest_current_version_age_seconds gauge\n"));
    }

    #[test]
    fn per_secret_series_only_when_enabled() {
        let off = Metrics::new();
        off.secret_rotation("t", "k", "succeeded", Some(1.0), Some(5));
        assert!(
            !off.encode()
                .unwrap()
                .contains("rotor_secret_rotations_total")
        );
        let on = Metrics::with_options(true);
        on.secret_rotation("t", "k", "succeeded", Some(1.0), Some(5));
        let text = on.encode().unwrap();
        assert!(
            text.contains(
                r#"rotor_secret_rotations_total{tenant="t",key="k",outcome="succeeded"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"rotor_secret_last_rotation_timestamp_seconds{tenant="t",key="k"} 5"#)
        );
    }

    #[test]
    fn contract_names_are_exported() {
        let m = Metrics::new();
        m.init_policy("api_keys");
        m.rotation("api_keys", "succeeded");
        m.rotation_error("api_keys", "apply");
        m.restart("rotation");
        let text = m.encode().unwrap();
        for name in CONTRACT.iter().chain(&["rotor_actor_restarts_total"]) {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert!(text.contains(r#"secret_rotation_total{policy="api_keys",outcome="succeeded"} 1"#));
    }
}
