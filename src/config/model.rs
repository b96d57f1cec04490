//! The validated configuration: what the rest of rotor reads. Every value here has been
//! checked, defaults are filled in and environment overrides applied; nothing in it knows
//! TOML.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::SecretRef;
use crate::generator::GeneratorSpec;
use crate::notify::config::NotifyConfig;
use crate::publish::config::{AwsViewConfig, PublishConfig, VaultViewConfig, ViewConfig};
use crate::schedule::Schedule;
use crate::store::vault::VaultSettings;
use crate::target::TargetConfig;
use crate::watch::reload::config::ReloadConfig;

/// A whole, valid configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub runtime: RuntimeConfig,
    pub watch: WatchConfig,
    pub mounts: Vec<MountConfig>,
    /// Directories rotor publishes current versions into (`[[publish]]`).
    pub publish: Vec<PublishConfig>,
    /// Vault KV documents rotor keeps showing the promoted current versions
    /// (`[[publish]] type = "vault"`), in file order.
    pub views: Vec<VaultViewConfig>,
    /// AWS Secrets Manager secrets rotor keeps showing the promoted current versions
    /// (`[[publish]] type = "aws"`), in file order.
    pub aws_views: Vec<AwsViewConfig>,
    /// Built-in policies, overridden or extended by the file, by name.
    pub policies: BTreeMap<String, Arc<Policy>>,
    /// `[[secrets]]` in file order, then each `[[secret_sets]]` expanded (tenants in
    /// their order, each with every key in its order).
    pub secrets: Vec<SecretConfig>,
    /// `[[notify]]` channels, in file order. Empty: events go to the log only.
    pub notify: Vec<NotifyConfig>,
    pub metrics: MetricsConfig,
    pub cache: CacheConfig,
    pub consumers: ConsumersConfig,
    pub ha: HaConfig,
}

/// `[ha]`: several replicas on one Vault store, one of them leading through a lease
/// record in it (see `src/ha/`). Off by default: one process leads for ever at term 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    pub enabled: bool,
    /// This replica's id in the lease; `None`: the hostname (the pod name in Kubernetes),
    /// looked up when `rotor run` starts.
    pub id: Option<String>,
    /// Where the other replicas reach this one's API: the file's `advertise_url`, else
    /// the `ROTOR_ADVERTISE_URL` environment variable, else `http://` and `[server] listen`.
    pub advertise_url: String,
    /// How long a lease holds without a renewal. Default 15 s; the leader renews every
    /// third of it.
    pub lease_duration: Duration,
}

impl HaConfig {
    pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
}

/// `[consumers]`: the workloads' agents that report which version each pod holds (see
/// `actors/consumers.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumersConfig {
    /// A consumer that has not reported for this long is `gone`: listed, no longer gating
    /// expiry. Default 1 minute (agents report every few seconds).
    pub ttl: Duration,
    /// Reload permits one workload holds at once. Default 1: a workload's pods reload one
    /// after another, as a rolling update with `maxUnavailable: 1` would replace them.
    pub max_concurrent_reloads: u32,
    /// A permit not returned within this is released (its agent died). Default 2 minutes.
    pub permit_timeout: Duration,
}

impl Default for ConsumersConfig {
    fn default() -> Self {
        ConsumersConfig {
            ttl: Duration::from_secs(60),
            max_concurrent_reloads: 1,
            permit_timeout: Duration::from_secs(120),
        }
    }
}

impl Config {
    /// Every view, Vault then AWS, each in file order: what the view publishers run and
    /// what gates a secret's expiry.
    pub fn all_views(&self) -> Vec<ViewConfig> {
        let vault = self
            .views
            .iter()
            .map(|v| ViewConfig::Vault(std::sync::Arc::new(v.clone())));
        let aws = self
            .aws_views
            .iter()
            .map(|a| ViewConfig::Aws(std::sync::Arc::new(a.clone())));
        vault.chain(aws).collect()
    }
}

/// `[cache]`: the in-memory cache every read of a secret value goes through (test steps,
/// targets reading older versions, publishers). Every rotation step of a secret drops its
/// entries whatever the TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long a value is served from memory. Default 60 s.
    pub ttl: Duration,
    /// Most values held at once; 0 turns the cache off. Default 10,000.
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl: Duration::from_secs(60),
            max_entries: 10_000,
        }
    }
}

/// The admin HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// File holding the bearer token of the admin API (generated on first run).
    pub admin_token_file: PathBuf,
    /// File holding the bearer token agents report with (`POST /consumers/...`), which can
    /// do nothing else. Created like the admin token when missing. `None`: the consumer
    /// routes are off. One token shared by every agent lets a pod report under another
    /// pod's id; see `actors/consumers.rs`.
    pub consumer_token_file: Option<PathBuf>,
    /// Connections the admin API serves at once; more are accepted and closed at once.
    pub max_connections: usize,
}

/// Where secrets are stored. Paths are used as written: relative paths are relative to the
/// working directory of the process, not to the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The local redb file, values encrypted under the key in `master_key_file`.
    Embedded {
        path: PathBuf,
        master_key_file: PathBuf,
    },
    /// HashiCorp Vault KV v2 (see [`crate::store::vault`]).
    /// Boxed: the settings are large next to the embedded variant.
    Vault(Box<VaultSettings>),
}

/// How the process runs its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Rotations running at the same moment, across all secrets; bounds the load a mass
    /// rotation puts on targets.
    pub max_concurrent_rotations: usize,
    /// How long shutdown waits for in-flight work before giving up.
    pub shutdown_timeout: Duration,
    /// First retry delay after a failed rotation; doubles up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// New store-only secrets get their first versions through the bulk path of a first
    /// start (`actors::bootstrap`), in batched transactions before their actors start
    /// (default). `false` leaves each to its rotation actor, one rotation at a time.
    pub first_versions_in_bulk: bool,
    /// How long a rotation actor with nothing to do stays up before it stops, leaving its
    /// secret a scheduler deadline and a status board entry (`[runtime] hibernate_after`,
    /// default 30 s, longer than zero).
    pub hibernate_after: Duration,
}

/// Volume watching as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// `false` turns off every mount watcher (`SECRETS_VOLUME_WATCH_ENABLED=false`).
    pub enabled: bool,
    /// Reload actions started per minute across all mounts (a token bucket); more wait.
    pub max_reloads_per_minute: u32,
    /// Largest visible file a scan reads, in bytes; a larger one is skipped with a
    /// warning, so a huge file in a mount cannot take rotor's memory. Default 1 MiB (the
    /// largest Kubernetes Secret).
    pub max_file_size: u64,
}

/// A watched secret mount directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountConfig {
    pub path: PathBuf,
    /// Changes closer together than this are reported once.
    pub debounce: Duration,
    /// Poll instead of inotify, at this period (filesystems without inotify).
    pub poll_interval: Option<Duration>,
    pub health_check_interval: Duration,
    /// File name patterns (`*` matches any run of characters) whose change triggers a
    /// reload action.
    pub critical: Vec<String>,
    /// What to run when a critical file changes.
    pub reload: Option<ReloadConfig>,
    /// Visible file name to the secret it holds (`files = { "db" = "tenant1/db" }`).
    pub files: BTreeMap<String, SecretRef>,
}

/// A named rotation policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub name: String,
    pub schedule: Schedule,
    /// How long the previous version stays valid after a new one is promoted.
    pub grace: Duration,
    pub generator: GeneratorSpec,
    /// Attempts per rotation before the secret is declared stuck.
    pub max_attempts: u32,
    pub expire_after: ExpireAfter,
    /// How often the current version is checked against the target while no rotation is
    /// in flight, and re-applied when the target lost it (a Redis restarted without its
    /// aclfile, a database restored from a backup). `None` (the default): never.
    pub verify_interval: Option<Duration>,
}

/// When the previous version is expired after a promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpireAfter {
    /// When the grace period ends.
    Grace,
    /// When the grace period ends and every watched mount shows the new version, but no
    /// later than grace + `max_extension` (then with an alert).
    GraceAndConsumers { max_extension: Duration },
}

/// One managed secret.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretConfig {
    pub secret: SecretRef,
    pub policy: Arc<Policy>,
    /// Shared by every secret of a `[[secret_sets]]` entry (and by consecutive
    /// `[[secrets]]` with equal targets): a target is built per secret from it, so one
    /// copy serves them all.
    pub target: Arc<TargetConfig>,
}

/// `[metrics]`: what `/metrics` exports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Per-secret series (`tenant`, `key` labels). Off by default: at 100,000 secrets a
    /// per-secret counter plus histogram is about 170 MB of text per scrape.
    pub per_secret: bool,
}
