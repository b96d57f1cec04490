//! rotor's Prometheus metrics: one registry, families with low-cardinality labels.
//!
//! The names are a contract (design.md §6). prometheus-client appends `_total` to counters,
//! so counters are registered without it. Handles are cheap to clone and update from any
//! task (atomics); the metrics actor owns encoding.

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
    // Freshness, refreshed from the status board at scrape time.
    pub secrets_in_grace: Gauge,
    pub secrets_overdue: Gauge,
    pub oldest_current_age_seconds: Gauge,
    pub next_rotation_timestamp_seconds: Gauge,
    pub next_grace_expiry_timestamp_seconds: Gauge,
    pub last_rotation_timestamp_seconds: Gauge,
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
    pub fn new() -> Metrics {
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
        Metrics {
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
            secrets_in_grace,
            secrets_overdue,
            oldest_current_age_seconds,
            next_rotation_timestamp_seconds,
            next_grace_expiry_timestamp_seconds,
            last_rotation_timestamp_seconds,
        }
    }

    /// The text exposition format (OpenMetrics text, which Prometheus 2.x scrapes).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
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

    pub fn restart(&self, kind: &str) {
        self.actor_restarts_total
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_names_are_exported() {
        let m = Metrics::new();
        m.init_policy("api_keys");
        m.rotation("api_keys", "succeeded");
        m.rotation_error("api_keys", "apply");
        m.restart("rotation");
        let text = m.encode().unwrap();
        for name in [
            "secret_access_total",
            "secret_access_errors_total",
            "secret_rotation_total",
            "secret_rotation_errors_total",
            "secret_cache_hits_total",
            "secret_cache_misses_total",
            "secret_access_latency_seconds_bucket",
            "secret_rotation_duration_seconds",
            "secret_cache_size",
            "secret_rotation_jobs_active",
            "secrets_watched",
            "rotor_actor_restarts_total",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert!(text.contains(r#"secret_rotation_total{policy="api_keys",outcome="succeeded"} 1"#));
    }
}
