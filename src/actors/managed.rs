//! The managed secrets, by name, and the rotation specs built from them on demand.
//!
//! A rotation actor runs only while its secret has work (see [`super::rotation`]), so the
//! tree keeps no [`RotationSpec`] per secret: a spec holds a built target (clients, a lock,
//! views), which is what an idle secret must not cost. [`ManagedSecrets`] keeps the
//! configuration's secrets sorted by name (one [`SecretConfig`] each: the name and two
//! shared `Arc`s) and builds a secret's spec when its actor starts. Start-up asks it for
//! the machine's [`Rules`] of a secret, which need the policy and no target.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::publisher;
use super::rotation::{RotationSpec, ViewLink};
use super::tree::TreeOptions;
use crate::config::{Config, ExpireAfter, Policy, SecretConfig};
use crate::domain::SecretRef;
use crate::machine::{Event, ExpiryGate, Rejection, Rules, SecretState, Transition};
use crate::publish::config::ViewConfig;
use crate::schedule::secret_seed;
use crate::target::ValueReader;

/// How long the previous version of a secret that has views (or agent consumers) may
/// outlive its grace while one lags, when its policy has no `max_grace_extension`
/// (`expire_after = "grace"`): the same day as that key's own default.
const DEFAULT_VIEW_GRACE_EXTENSION: Duration = Duration::from_secs(24 * 3_600);

/// Every managed secret and what building its spec takes.
pub struct ManagedSecrets {
    /// Sorted by secret (names are unique: the configuration refuses duplicates), so a
    /// lookup is a binary search and iteration is in name order.
    secrets: Vec<SecretConfig>,
    /// Every view (Vault then AWS), once: which of them show a secret decides its gate.
    views: Vec<ViewConfig>,
    /// `[server] consumer_token_file` is set: agents' reports gate expiry.
    gate_on_consumers: bool,
    retry_backoff: TimeDelta,
    retry_backoff_max: TimeDelta,
    step_timeout: Duration,
    namespace: String,
    /// How targets read stored values (the cached store).
    reader: ValueReader,
    /// The test hook that replaces every secret's target (see [`TreeOptions`]).
    #[cfg(feature = "test-util")]
    target_override: Option<super::tree::TargetOverride>,
    /// Targets a test hook built, by secret: the hook is documented as called once per
    /// secret, and tests keep handles on what it returned.
    #[cfg(feature = "test-util")]
    overridden:
        std::sync::Mutex<std::collections::HashMap<SecretRef, Arc<dyn crate::target::Target>>>,
}

impl ManagedSecrets {
    pub fn new(config: &Config, options: &TreeOptions, reader: ValueReader) -> Self {
        let mut secrets = config.secrets.clone();
        secrets.sort_unstable_by(|a, b| a.secret.cmp(&b.secret));
        let to_delta = |d: Duration| TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
        ManagedSecrets {
            secrets,
            views: config.all_views(),
            gate_on_consumers: config.server.consumer_token_file.is_some(),
            retry_backoff: to_delta(config.runtime.retry_backoff),
            retry_backoff_max: to_delta(config.runtime.retry_backoff_max),
            step_timeout: options.step_timeout,
            namespace: options.namespace.clone(),
            reader,
            #[cfg(feature = "test-util")]
            target_override: options.target_override.clone(),
            #[cfg(feature = "test-util")]
            overridden: std::sync::Mutex::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn contains(&self, secret: &SecretRef) -> bool {
        self.get(secret).is_some()
    }

    pub fn get(&self, secret: &SecretRef) -> Option<&SecretConfig> {
        self.secrets
            .binary_search_by(|s| s.secret.cmp(secret))
            .ok()
            .map(|i| &self.secrets[i])
    }

    /// Every secret with its policy's name, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&SecretRef, &str)> {
        self.secrets
            .iter()
            .map(|s| (&s.secret, s.policy.name.as_str()))
    }

    /// Every secret's configuration, in name order.
    pub fn configs(&self) -> &[SecretConfig] {
        &self.secrets
    }

    /// Whether something the actor keeps in memory gates the secret's expiry: a view's
    /// last report, or agents' reports. Such a secret keeps its actor through grace.
    pub fn has_memory_gates(&self, secret: &SecretRef) -> bool {
        self.gate_on_consumers || self.views.iter().any(|v| v.shows(secret))
    }

    fn expiry_gate(&self, policy: &Policy, has_views: bool) -> ExpiryGate {
        let to_delta = |d: Duration| TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
        match policy.expire_after {
            ExpireAfter::Grace if !has_views && !self.gate_on_consumers => ExpiryGate::Grace,
            // A secret with views (or agent consumers) is gated on them whatever its policy
            // says; a policy that does not gate on consumers has no `max_grace_extension`
            // of its own. A secret that never has agent consumers passes that gate as soon
            // as it is promoted (see `RotationState::consumers_saw`).
            ExpireAfter::Grace => ExpiryGate::GraceAndConsumers {
                max_extension: to_delta(DEFAULT_VIEW_GRACE_EXTENSION),
            },
            ExpireAfter::GraceAndConsumers { max_extension } => ExpiryGate::GraceAndConsumers {
                max_extension: to_delta(max_extension),
            },
        }
    }

    /// What the machine does when `secret`'s actor would start in `state` at `now`
    /// ([`Event::Resume`]), worked out without an actor or a target. `None` for a secret
    /// that is not managed.
    pub fn resume(
        &self,
        secret: &SecretRef,
        state: &SecretState,
        now: DateTime<Utc>,
    ) -> Option<Result<Transition, Rejection>> {
        let cfg = self.get(secret)?;
        let policy = &cfg.policy;
        let has_views = self.views.iter().any(|v| v.shows(secret));
        let next_due = |last, now| policy.schedule.next_due(secret, last, now);
        let rules = Rules {
            grace: TimeDelta::from_std(policy.grace).unwrap_or(TimeDelta::MAX),
            max_attempts: policy.max_attempts,
            retry_backoff: self.retry_backoff,
            retry_backoff_max: self.retry_backoff_max,
            expiry_gate: self.expiry_gate(policy, has_views),
            jitter_seed: secret_seed(secret),
            next_due: &next_due,
        };
        Some(rules.step(state, Event::Resume, now))
    }

    /// Builds the spec of `secret` (its target included), or `None` if it is not managed.
    pub fn spec(&self, secret: &SecretRef) -> Option<Arc<RotationSpec>> {
        let cfg = self.get(secret)?;
        Some(self.spec_for(cfg))
    }

    fn target_for(&self, cfg: &SecretConfig) -> Arc<dyn crate::target::Target> {
        #[cfg(feature = "test-util")]
        if let Some(build) = &self.target_override {
            let mut built = self.overridden.lock().unwrap_or_else(|e| e.into_inner());
            return built
                .entry(cfg.secret.clone())
                .or_insert_with(|| build(&cfg.secret))
                .clone();
        }
        cfg.target.build(&cfg.secret, &self.reader)
    }

    fn spec_for(&self, cfg: &SecretConfig) -> Arc<RotationSpec> {
        let policy = cfg.policy.clone();
        let secret = cfg.secret.clone();
        let schedule_policy = policy.clone();
        let schedule_secret = secret.clone();
        let target = self.target_for(cfg);
        let views: Vec<ViewLink> = self
            .views
            .iter()
            .filter(|v| v.shows(&secret))
            .map(|v| ViewLink {
                name: v.name(),
                actor: publisher::view::actor_name(&self.namespace, v),
            })
            .collect();
        Arc::new(RotationSpec {
            secret,
            policy: policy.name.clone(),
            generator: policy.generator.clone(),
            grace: TimeDelta::from_std(policy.grace).unwrap_or(TimeDelta::MAX),
            max_attempts: policy.max_attempts,
            retry_backoff: self.retry_backoff,
            retry_backoff_max: self.retry_backoff_max,
            expiry_gate: self.expiry_gate(&policy, !views.is_empty()),
            gate_on_mounts: matches!(policy.expire_after, ExpireAfter::GraceAndConsumers { .. }),
            gate_on_consumers: self.gate_on_consumers,
            views,
            next_due: Arc::new(move |last, now| {
                schedule_policy
                    .schedule
                    .next_due(&schedule_secret, last, now)
            }),
            step_timeout: self.step_timeout,
            target,
            verify_interval: policy.verify_interval,
        })
    }
}
