//! Stage two: turn the raw config into the validated model, checking what each value means
//! (durations, cron expressions, addresses, identifiers, cross-field rules) and filling in
//! defaults and built-in policies. Every problem goes to the shared [`Diagnostics`]; a
//! value that was already reported in stage one (pruned) is not reported again as missing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::check::{SecretMention, Validator, join};
use super::env::{DEFAULT_DEBOUNCE, DEFAULT_HEALTH_CHECK_INTERVAL};
use super::error::Diagnostics;
use super::model::{
    CacheConfig, Config, ConsumersConfig, HaConfig, MetricsConfig, MountConfig, RuntimeConfig,
    SecretConfig, ServerConfig, StoreConfig, WatchConfig,
};
use super::raw::{
    RawCache, RawConfig, RawConsumers, RawHa, RawMount, RawRuntime, RawServer, RawStore, RawWatch,
};
use crate::domain::SecretRef;
use crate::duration::format_duration;

/// 127.0.0.1:8080: loopback, so the admin API is not exposed until an operator says so.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8080,
));
pub(super) const DEFAULT_ADMIN_TOKEN_FILE: &str = "data/admin.token";
const DEFAULT_MAX_CONCURRENT_ROTATIONS: usize = 16;
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(30);
/// `[runtime] hibernate_after`: long enough that a burst of API calls or a rotation's steps
/// reuse one actor, short enough that a mass rotation gives its memory back within a minute.
pub const DEFAULT_HIBERNATE_AFTER: Duration = Duration::from_secs(30);
const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(3_600);

const MAX_CONCURRENT_ROTATIONS: (i64, i64) = (1, 100_000);
/// `[consumers] ttl`: at least a second (an agent cannot report faster in earnest), at
/// most a day (a consumer silent longer than that is gone by any measure).
const CONSUMER_TTL: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(86_400));
/// `[consumers] permit_timeout`: a reload takes seconds to minutes.
const PERMIT_TIMEOUT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3_600));
const MAX_CONCURRENT_RELOADS: (i64, i64) = (1, 100_000);
const MAX_CACHE_ENTRIES: (i64, i64) = (0, 10_000_000);
const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);
const DEFAULT_MAX_RELOADS_PER_MINUTE: u32 = 60;
const MAX_RELOADS_PER_MINUTE: (i64, i64) = (1, 100_000);
/// A scan holds a whole file in memory to fingerprint it; 64 MiB is far above any secret
/// and still a bound.
const MAX_FILE_SIZE: (i64, i64) = (1, 64 * 1024 * 1024);

/// Validates `raw`. The returned config is only meaningful if `diag` stayed empty: parts
/// that failed are replaced by defaults so that the remaining parts can still be checked.
pub(super) fn validate(
    raw: RawConfig,
    diag: &mut Diagnostics<'_>,
    pruned: &HashSet<String>,
    base_dir: &Path,
    fast: Option<&super::fast::Split<'_>>,
) -> Config {
    let mut v = Validator { diag, pruned };
    let server = v.server(raw.server.as_ref());
    let store = v.store(raw.store.as_ref());
    let runtime = v.runtime(raw.runtime.as_ref());
    let watch = v.watch(raw.watch.as_ref());
    let mut mentions = Vec::new();
    let mounts = v.mounts(&raw.mounts, &mut mentions);
    let publish = crate::publish::config::validate(&mut v, &raw.publish, &mut mentions, &store);
    let (policies, broken) = v.policies(&raw.policies);
    let secrets = super::sets::validate(
        &mut v,
        &raw.secrets,
        &raw.secret_sets,
        &policies,
        &broken,
        base_dir,
        fast,
    );
    v.managed(&mentions, &secrets);
    crate::publish::config::check_view_fields(&mut v, &publish.json_fields, &secrets);
    let notify = crate::notify::config::validate(&mut v, &raw.notify);
    let metrics = MetricsConfig {
        per_secret: raw
            .metrics
            .as_ref()
            .and_then(|m| m.get_ref().per_secret.as_ref())
            .is_some_and(|p| *p.get_ref()),
    };
    let cache = v.cache(raw.cache.as_ref());
    let consumers = v.consumers(raw.consumers.as_ref());
    let ha = v.ha(raw.ha.as_ref(), &store);
    Config {
        server,
        store,
        runtime,
        watch,
        mounts,
        publish: publish.directories,
        views: publish.views,
        aws_views: publish.aws_views,
        policies,
        secrets,
        notify,
        metrics,
        cache,
        consumers,
        ha,
    }
}

/// `[ha] lease_duration`: a second is the least a renewal every third of it can keep up
/// with over a network; past five minutes a dead leader stops rotations for too long.
const LEASE_DURATION: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(300));

/// Checks an advertised URL (`[ha] advertise_url`, `ROTOR_ADVERTISE_URL`): `http` or
/// `https` with a host, no credentials, query or fragment. Returns it without a trailing
/// `/`, so a route can be appended.
pub(super) fn check_advertise_url(text: &str) -> Result<String, String> {
    let bad = || {
        "must be the http:// or https:// URL the other replicas reach this one's API at, \
         e.g. http://10.0.0.7:8080 (no credentials, query or fragment)"
            .to_owned()
    };
    let url = url::Url::parse(text.trim()).map_err(|_| bad())?;
    let ok = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if ok {
        Ok(url.as_str().trim_end_matches('/').to_owned())
    } else {
        Err(bad())
    }
}

fn secret_span(value: Option<&Spanned<String>>, fallback: Range<usize>) -> Range<usize> {
    value.map_or(fallback, |v| v.span())
}

impl Validator<'_, '_> {
    /// `[watch]`, shared by `rotor run` and `rotor agent` configurations.
    pub(super) fn watch(&mut self, raw: Option<&Spanned<RawWatch>>) -> WatchConfig {
        let raw = raw.map(|w| w.get_ref());
        WatchConfig {
            enabled: raw
                .and_then(|w| w.enabled.as_ref())
                .is_none_or(|e| *e.get_ref()),
            max_reloads_per_minute: self.int_or(
                "watch.max_reloads_per_minute",
                raw.and_then(|w| w.max_reloads_per_minute.as_ref()),
                MAX_RELOADS_PER_MINUTE,
                "max_reloads_per_minute",
                DEFAULT_MAX_RELOADS_PER_MINUTE,
            ),
            max_file_size: self.int_or(
                "watch.max_file_size",
                raw.and_then(|w| w.max_file_size.as_ref()),
                MAX_FILE_SIZE,
                "max_file_size (in bytes)",
                crate::watch::scan::DEFAULT_MAX_FILE_SIZE,
            ),
        }
    }

    fn server(&mut self, raw: Option<&Spanned<RawServer>>) -> ServerConfig {
        let raw = raw.map(|r| r.get_ref());
        let listen = match raw.and_then(|r| r.listen.as_ref()) {
            None => DEFAULT_LISTEN,
            Some(text) => match text.get_ref().parse::<SocketAddr>() {
                Ok(addr) => addr,
                Err(_) => {
                    self.diag.value(
                        text.span(),
                        "server.listen",
                        "is not an IP:PORT address such as \"127.0.0.1:8080\" or \"0.0.0.0:8080\" (host names are not resolved)",
                    );
                    DEFAULT_LISTEN
                }
            },
        };
        let admin_token_file = self.non_empty_path(
            "server.admin_token_file",
            raw.and_then(|r| r.admin_token_file.as_ref()),
            DEFAULT_ADMIN_TOKEN_FILE,
        );
        let consumer_token_file = raw
            .and_then(|r| r.consumer_token_file.as_ref())
            .map(|v| self.non_empty_path("server.consumer_token_file", Some(v), ""))
            .filter(|p| !p.as_os_str().is_empty());
        if let (Some(consumer), Some(v)) = (
            &consumer_token_file,
            raw.and_then(|r| r.consumer_token_file.as_ref()),
        ) && *consumer == admin_token_file
        {
            self.diag.value(
                v.span(),
                "server.consumer_token_file",
                "is the admin token file; agents need a token of their own, which can only report",
            );
        }
        let max_connections = self.int_or(
            "server.max_connections",
            raw.and_then(|r| r.max_connections.as_ref()),
            (1, 1_000_000),
            "the number of admin API connections served at once",
            crate::api::listener::DEFAULT_MAX_CONNECTIONS,
        );
        ServerConfig {
            listen,
            admin_token_file,
            consumer_token_file,
            max_connections,
        }
    }

    fn store(&mut self, raw: Option<&Spanned<RawStore>>) -> StoreConfig {
        // The schema walk has checked `type` and which keys each type allows.
        match raw.map(|r| (r.get_ref(), r.span())) {
            Some((RawStore::Vault(vault), span)) => {
                crate::store::vault::config::validate(self, span, vault)
            }
            Some((RawStore::Embedded(embedded), _)) => {
                crate::store::embedded::config::validate(self, Some(embedded))
            }
            None => crate::store::embedded::config::validate(self, None),
        }
    }

    fn cache(&mut self, raw: Option<&Spanned<RawCache>>) -> CacheConfig {
        let raw = raw.map(|r| r.get_ref());
        let default = CacheConfig::default();
        let ttl_raw = raw.and_then(|r| r.ttl.as_ref());
        let ttl = self.duration_or("cache.ttl", ttl_raw, default.ttl);
        if let Some(v) = ttl_raw
            && ttl > MAX_CACHE_TTL
        {
            self.diag.value(
                v.span(),
                "cache.ttl",
                format!(
                    "must be at most {}: every rotation step drops a secret's entries, but a \
                     long TTL keeps decrypted values in memory for no gain",
                    format_duration(MAX_CACHE_TTL)
                ),
            );
        }
        let max_entries = self.int_or(
            "cache.max_entries",
            raw.and_then(|r| r.max_entries.as_ref()),
            MAX_CACHE_ENTRIES,
            "the number of cached values (0 turns the cache off)",
            default.max_entries,
        );
        CacheConfig { ttl, max_entries }
    }

    fn consumers(&mut self, raw: Option<&Spanned<RawConsumers>>) -> ConsumersConfig {
        let raw = raw.map(|r| r.get_ref());
        let default = ConsumersConfig::default();
        let ttl = self.duration_between(
            "consumers.ttl",
            raw.and_then(|r| r.ttl.as_ref()),
            CONSUMER_TTL,
            default.ttl,
        );
        let permit_timeout = self.duration_between(
            "consumers.permit_timeout",
            raw.and_then(|r| r.permit_timeout.as_ref()),
            PERMIT_TIMEOUT,
            default.permit_timeout,
        );
        let max_concurrent_reloads = self.int_or(
            "consumers.max_concurrent_reloads",
            raw.and_then(|r| r.max_concurrent_reloads.as_ref()),
            MAX_CONCURRENT_RELOADS,
            "the number of reloads one workload runs at once",
            default.max_concurrent_reloads,
        );
        ConsumersConfig {
            ttl,
            max_concurrent_reloads,
            permit_timeout,
        }
    }

    /// `[ha]`. Refused with the embedded store: its file lives on one replica's disk, so
    /// replicas could not share it (and it needs no election to be safe).
    fn ha(&mut self, raw: Option<&Spanned<RawHa>>, store: &StoreConfig) -> HaConfig {
        let raw = raw.map(|r| r.get_ref());
        let enabled = raw.and_then(|r| r.enabled.as_ref());
        if let Some(flag) = enabled
            && *flag.get_ref()
            && matches!(store, StoreConfig::Embedded { .. })
        {
            self.diag.value(
                flag.span(),
                "ha.enabled",
                "needs the Vault store ([store] type = \"vault\"): the embedded store is one \
                 file on one replica's disk, which other replicas cannot share",
            );
        }
        let id = raw.and_then(|r| r.id.as_ref()).and_then(|id| {
            match crate::store::check_record_name("id", id.get_ref()) {
                Ok(()) => Some(id.get_ref().clone()),
                Err(_) => {
                    self.diag.value(
                        id.span(),
                        "ha.id",
                        "must be 1 to 253 characters of A-Z a-z 0-9 . _ -, not starting with . or _ (a pod name fits)",
                    );
                    None
                }
            }
        });
        let advertise_url = match raw.and_then(|r| r.advertise_url.as_ref()) {
            None => String::new(),
            Some(v) => match check_advertise_url(v.get_ref()) {
                Ok(url) => url,
                Err(message) => {
                    self.diag.value(v.span(), "ha.advertise_url", message);
                    String::new()
                }
            },
        };
        let lease_duration = self.duration_between(
            "ha.lease_duration",
            raw.and_then(|r| r.lease_duration.as_ref()),
            LEASE_DURATION,
            HaConfig::DEFAULT_LEASE_DURATION,
        );
        HaConfig {
            enabled: enabled.is_some_and(|e| *e.get_ref()),
            id,
            advertise_url,
            lease_duration,
        }
    }

    /// A duration within `(lo, hi)` with a default when absent; out of range is reported
    /// with the range and the value as written.
    fn duration_between(
        &mut self,
        path: &str,
        value: Option<&Spanned<String>>,
        (lo, hi): (Duration, Duration),
        default: Duration,
    ) -> Duration {
        let Ok(Some(d)) = self.duration(path, value) else {
            // Absent, or reported already.
            return default;
        };
        if !(lo..=hi).contains(&d)
            && let Some(v) = value
        {
            self.diag.value(
                v.span(),
                path,
                format!(
                    "must be between {} and {}, not {:?}",
                    format_duration(lo),
                    format_duration(hi),
                    v.get_ref()
                ),
            );
            return default;
        }
        d
    }

    fn runtime(&mut self, raw: Option<&Spanned<RawRuntime>>) -> RuntimeConfig {
        let raw = raw.map(|r| r.get_ref());
        let max_concurrent_rotations = self.int_or(
            "runtime.max_concurrent_rotations",
            raw.and_then(|r| r.max_concurrent_rotations.as_ref()),
            MAX_CONCURRENT_ROTATIONS,
            "the number of concurrent rotations",
            DEFAULT_MAX_CONCURRENT_ROTATIONS,
        );
        let shutdown_timeout = self.duration_or(
            "runtime.shutdown_timeout",
            raw.and_then(|r| r.shutdown_timeout.as_ref()),
            DEFAULT_SHUTDOWN_TIMEOUT,
        );
        let retry_backoff = self.duration(
            "runtime.retry_backoff",
            raw.and_then(|r| r.retry_backoff.as_ref()),
        );
        let max_raw = raw.and_then(|r| r.retry_backoff_max.as_ref());
        let retry_backoff_max = self.duration("runtime.retry_backoff_max", max_raw);
        let (retry_backoff, retry_backoff_max) = match (retry_backoff, retry_backoff_max) {
            (Ok(b), Ok(m)) => {
                let b = b.unwrap_or(DEFAULT_RETRY_BACKOFF);
                let m = m.unwrap_or(DEFAULT_RETRY_BACKOFF_MAX);
                if b > m {
                    let message = format!(
                        "must not be shorter than retry_backoff ({})",
                        format_duration(b)
                    );
                    match max_raw {
                        Some(v) => self
                            .diag
                            .value(v.span(), "runtime.retry_backoff_max", message),
                        None => self.diag.value(
                            raw.and_then(|r| r.retry_backoff.as_ref())
                                .map_or(0..0, |v| v.span()),
                            "runtime.retry_backoff",
                            format!(
                                "must not be longer than retry_backoff_max ({}, the default)",
                                format_duration(m)
                            ),
                        ),
                    }
                }
                (b, m)
            }
            _ => (DEFAULT_RETRY_BACKOFF, DEFAULT_RETRY_BACKOFF_MAX),
        };
        RuntimeConfig {
            max_concurrent_rotations,
            shutdown_timeout,
            retry_backoff,
            retry_backoff_max,
            first_versions_in_bulk: raw
                .and_then(|r| r.first_versions_in_bulk.as_ref())
                .is_none_or(|b| *b.get_ref()),
            // Zero is refused by the duration parser ("must be longer than zero").
            hibernate_after: self.duration_or(
                "runtime.hibernate_after",
                raw.and_then(|r| r.hibernate_after.as_ref()),
                DEFAULT_HIBERNATE_AFTER,
            ),
        }
    }

    /// `[[mounts]]`, shared by `rotor run` and `rotor agent` configurations; the secrets the
    /// mounts map go to `mentions`.
    pub(super) fn mounts(
        &mut self,
        raw: &[Spanned<RawMount>],
        mentions: &mut Vec<SecretMention>,
    ) -> Vec<MountConfig> {
        let mut out = Vec::new();
        let mut seen: HashMap<PathBuf, usize> = HashMap::new();
        for (i, spanned) in raw.iter().enumerate() {
            let path = format!("mounts[{i}]");
            let m = spanned.get_ref();
            let mount_path = match &m.path {
                None => {
                    self.missing(
                        Some(spanned.span()),
                        &join(&path, "path"),
                        "missing key `path`: the directory the secrets are mounted at, e.g. \"/mnt/secrets\"",
                    );
                    continue;
                }
                Some(p) if p.get_ref().trim().is_empty() => {
                    self.diag
                        .value(p.span(), &join(&path, "path"), "must not be empty");
                    continue;
                }
                Some(p) => {
                    let dir = PathBuf::from(p.get_ref());
                    if let Some(first) = seen.insert(dir.clone(), i) {
                        self.diag.value(
                            p.span(),
                            &join(&path, "path"),
                            format!("is already watched by mounts[{first}]"),
                        );
                    }
                    dir
                }
            };
            let debounce = self.duration_or(
                &join(&path, "debounce"),
                m.debounce.as_ref(),
                DEFAULT_DEBOUNCE,
            );
            let poll_interval = self
                .duration(&join(&path, "poll_interval"), m.poll_interval.as_ref())
                .ok()
                .flatten();
            let health_check_interval = self.duration_or(
                &join(&path, "health_check_interval"),
                m.health_check_interval.as_ref(),
                DEFAULT_HEALTH_CHECK_INTERVAL,
            );
            let mut critical = Vec::new();
            for (j, pattern) in m
                .critical
                .iter()
                .flat_map(|c| c.get_ref().iter())
                .enumerate()
            {
                let text = pattern.get_ref();
                let key = format!("{path}.critical[{j}]");
                if text.trim().is_empty() {
                    self.diag.value(pattern.span(), &key, "must not be empty");
                } else if text.contains('/') {
                    self.diag.value(
                        pattern.span(),
                        &key,
                        "is matched against file names in the mount, so it cannot contain '/'",
                    );
                } else {
                    critical.push(text.clone());
                }
            }
            let reload = m.reload.as_ref().and_then(|r| {
                crate::watch::reload::config::validate(self, &join(&path, "reload"), r)
            });
            let mut files = BTreeMap::new();
            if let Some(map) = &m.files {
                for (name, secret) in map.get_ref() {
                    let key = format!("{path}.files.{name}");
                    if let Some((name, secret)) =
                        self.file_mapping(&key, map.span(), name, secret.get_ref(), secret.span())
                    {
                        mentions.push(SecretMention {
                            span: secret_span(map.get_ref().get(&name), map.span()),
                            key,
                            secret: secret.clone(),
                        });
                        files.insert(name, secret);
                    }
                }
            }
            out.push(MountConfig {
                path: mount_path,
                debounce,
                poll_interval,
                health_check_interval,
                critical,
                reload,
                files,
            });
        }
        out
    }

    /// Every secret a mount maps or a publisher writes must be one rotor manages:
    /// otherwise no version could ever match it.
    fn managed(&mut self, mentions: &[SecretMention], secrets: &[SecretConfig]) {
        // Most large fleets name no secret in a mount or publisher: skip the set of all.
        if mentions.is_empty() {
            return;
        }
        let known: HashSet<&SecretRef> = secrets.iter().map(|s| &s.secret).collect();
        for m in mentions {
            if !known.contains(&m.secret) {
                self.diag.value(
                    m.span.clone(),
                    &m.key,
                    format!(
                        "{} is not a managed secret; add a [[secrets]] entry for it",
                        m.secret
                    ),
                );
            }
        }
    }
}
