//! Stage two: turn the raw config into the validated model, checking what each value means
//! (durations, cron expressions, addresses, identifiers, cross-field rules) and filling in
//! defaults and built-in policies. Every problem goes to the shared [`Diagnostics`]; a
//! value that was already reported in stage one (pruned) is not reported again as missing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::builtin::{Builtin, BuiltinSchedule, builtin, builtins};
use super::env::{DEFAULT_DEBOUNCE, DEFAULT_HEALTH_CHECK_INTERVAL};
use super::error::Diagnostics;
use super::model::{
    CacheConfig, ChannelConfig, Config, ExpireAfter, HttpUrl, MetricsConfig, MountConfig,
    NotifyConfig, Policy, PublishConfig, ReloadAction, ReloadConfig, RuntimeConfig, SecretConfig,
    ServerConfig, StoreConfig, TargetConfig, UrlSource, WatchConfig,
};
use super::model::{JwksAlgorithm, PostgresStrategy, RedisPersist, VaultAuth, VaultSettings};
use super::raw::{
    RawCache, RawConfig, RawGenerator, RawMount, RawNotify, RawPolicy, RawPublish,
    RawPublishSecrets, RawReload, RawRuntime, RawSecret, RawServer, RawStore, RawTarget,
    RawVaultAuth, RawWindow,
};
use crate::domain::{SecretRef, validate_ident};
use crate::duration::{format_duration, parse_duration};
use crate::generator::{CharClasses, Encoding, GeneratorSpec};
use crate::schedule::{Schedule, ScheduleKind, Window, shortest_cron_gap, validate_cron};

/// 127.0.0.1:8080: loopback, so the admin API is not exposed until an operator says so.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    8080,
));
pub(super) const DEFAULT_ADMIN_TOKEN_FILE: &str = "data/admin.token";
pub(super) const DEFAULT_STORE_PATH: &str = "data/rotor.redb";
pub(super) const DEFAULT_MASTER_KEY_FILE: &str = "data/master.key";
const DEFAULT_MAX_CONCURRENT_ROTATIONS: usize = 16;
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(30);
const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(3_600);
const DEFAULT_MAX_ATTEMPTS: u32 = 5;
const DEFAULT_MAX_GRACE_EXTENSION: Duration = Duration::from_secs(24 * 3_600);

const PASSWORD_LENGTH: (i64, i64) = (8, 1024);
const RANDOM_BYTES: (i64, i64) = (16, 1024);
const MAX_ATTEMPTS: (i64, i64) = (1, 100);
const MAX_CONCURRENT_ROTATIONS: (i64, i64) = (1, 100_000);
const MAX_CACHE_ENTRIES: (i64, i64) = (0, 10_000_000);
const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);
const MAX_PREFIX_LEN: usize = 32;
const DEFAULT_MAX_RELOADS_PER_MINUTE: u32 = 60;
const MAX_RELOADS_PER_MINUTE: (i64, i64) = (1, 100_000);
const DEFAULT_RELOAD_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RELOAD_ATTEMPTS: u32 = 3;
const RELOAD_ATTEMPTS: (i64, i64) = (1, 20);
const DEFAULT_RELOAD_BACKOFF: Duration = Duration::from_secs(1);
const DEFAULT_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// Signals a reload action may send, by canonical name.
const SIGNALS: &[(&str, i32)] = &[
    ("SIGHUP", libc::SIGHUP),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGUSR2", libc::SIGUSR2),
    ("SIGINT", libc::SIGINT),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGTERM", libc::SIGTERM),
];

/// A `tenant/key` written in a mount's `files` or a `[[publish]]` table, checked against
/// the managed secrets once those are known.
struct SecretMention {
    span: Range<usize>,
    key: String,
    secret: SecretRef,
}

/// The value was bad and has been reported; callers skip checks that depend on it.
struct Reported;

/// Absent (`Ok(None)`), valid (`Ok(Some)`) or bad and reported (`Err`).
type Checked<T> = Result<Option<T>, Reported>;

struct Validator<'d, 's> {
    diag: &'d mut Diagnostics<'s>,
    pruned: &'d HashSet<String>,
}

/// Validates `raw`. The returned config is only meaningful if `diag` stayed empty: parts
/// that failed are replaced by defaults so that the remaining parts can still be checked.
pub(super) fn validate(
    raw: RawConfig,
    diag: &mut Diagnostics<'_>,
    pruned: &HashSet<String>,
) -> Config {
    let mut v = Validator { diag, pruned };
    let server = v.server(raw.server.as_ref());
    let store = v.store(raw.store.as_ref());
    let runtime = v.runtime(raw.runtime.as_ref());
    let watch = WatchConfig {
        enabled: raw
            .watch
            .as_ref()
            .and_then(|w| w.get_ref().enabled.as_ref())
            .is_none_or(|e| *e.get_ref()),
        max_reloads_per_minute: v
            .int_in(
                "watch.max_reloads_per_minute",
                raw.watch
                    .as_ref()
                    .and_then(|w| w.get_ref().max_reloads_per_minute.as_ref()),
                MAX_RELOADS_PER_MINUTE,
                "max_reloads_per_minute",
            )
            .ok()
            .flatten()
            .map_or(DEFAULT_MAX_RELOADS_PER_MINUTE, |n| n as u32),
    };
    let mut mentions = Vec::new();
    let mounts = v.mounts(&raw.mounts, &mut mentions);
    let publish = v.publish(&raw.publish, &mut mentions);
    let (policies, broken) = v.policies(&raw.policies);
    let secrets = v.secrets(&raw.secrets, &policies, &broken);
    v.managed(&mentions, &secrets);
    let notify = v.notify(&raw.notify);
    let metrics = MetricsConfig {
        per_secret: raw
            .metrics
            .as_ref()
            .and_then(|m| m.get_ref().per_secret.as_ref())
            .is_some_and(|p| *p.get_ref()),
    };
    let cache = v.cache(raw.cache.as_ref());
    Config {
        server,
        store,
        runtime,
        watch,
        mounts,
        publish,
        policies,
        secrets,
        notify,
        metrics,
        cache,
    }
}

fn join(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

fn secret_span(value: Option<&Spanned<String>>, fallback: Range<usize>) -> Range<usize> {
    value.map_or(fallback, |v| v.span())
}

/// `http[s]://host[:port]/path`: the URLs a reload action takes.
pub(crate) fn parse_http_url(text: &str) -> Result<HttpUrl, String> {
    let (tls, rest) = match (text.strip_prefix("http://"), text.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return Err("must start with http:// or https://".to_owned()),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err("must name a host, e.g. http://127.0.0.1:3000/-/reload".to_owned());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
            Ok(port) if port > 0 => (h, port),
            _ => return Err(format!("has a bad port {p:?}")),
        },
        _ => (authority, if tls { 443 } else { 80 }),
    };
    if host.is_empty() || path.contains(char::is_whitespace) {
        return Err("is not a valid URL".to_owned());
    }
    Ok(HttpUrl {
        tls,
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}

impl Validator<'_, '_> {
    /// Reports a required key that is missing, unless stage one already reported (and
    /// removed) it.
    fn missing(&mut self, span: Option<Range<usize>>, path: &str, message: impl Into<String>) {
        if !self.pruned.contains(path) {
            self.diag.at(span, path, message);
        }
    }

    fn duration(&mut self, path: &str, value: Option<&Spanned<String>>) -> Checked<Duration> {
        let Some(value) = value else { return Ok(None) };
        match parse_duration(value.get_ref()) {
            Ok(d) => Ok(Some(d)),
            Err(e) => {
                self.diag.value(value.span(), path, e.to_string());
                Err(Reported)
            }
        }
    }

    /// A duration with a default when absent; a bad value yields the default too (and has
    /// been reported, so the config will be refused anyway).
    fn duration_or(
        &mut self,
        path: &str,
        value: Option<&Spanned<String>>,
        default: Duration,
    ) -> Duration {
        self.duration(path, value).ok().flatten().unwrap_or(default)
    }

    fn int_in(
        &mut self,
        path: &str,
        value: Option<&Spanned<i64>>,
        (lo, hi): (i64, i64),
        what: &str,
    ) -> Checked<i64> {
        let Some(value) = value else { return Ok(None) };
        let n = *value.get_ref();
        if (lo..=hi).contains(&n) {
            Ok(Some(n))
        } else {
            self.diag.value(
                value.span(),
                path,
                format!("{what} must be between {lo} and {hi}"),
            );
            Err(Reported)
        }
    }

    /// An optional `ca_file` (PEM CA bundle): a non-empty path, refused when the URL it
    /// would verify is plain http.
    fn ca_file(
        &mut self,
        key: &str,
        value: Option<&Spanned<String>>,
        plain_http: bool,
    ) -> Option<PathBuf> {
        let v = value?;
        if plain_http {
            self.diag.value(
                v.span(),
                key,
                "is set but the URL is plain http; use an https URL",
            );
            return None;
        }
        Some(self.non_empty_path(key, Some(v), ""))
    }

    fn non_empty_path(
        &mut self,
        path: &str,
        value: Option<&Spanned<String>>,
        default: &str,
    ) -> PathBuf {
        match value {
            None => PathBuf::from(default),
            Some(v) if v.get_ref().trim().is_empty() => {
                self.diag.value(v.span(), path, "must not be empty");
                PathBuf::from(default)
            }
            Some(v) => PathBuf::from(v.get_ref()),
        }
    }

    fn timezone(&mut self, path: &str, value: Option<&Spanned<String>>) -> Checked<chrono_tz::Tz> {
        let Some(value) = value else { return Ok(None) };
        match value.get_ref().parse::<chrono_tz::Tz>() {
            Ok(tz) => Ok(Some(tz)),
            Err(_) => {
                self.diag.value(
                    value.span(),
                    path,
                    "is not a known time zone; use an IANA name such as \"UTC\" or \"Europe/Berlin\"",
                );
                Err(Reported)
            }
        }
    }

    fn cron(
        &mut self,
        path: &str,
        value: Option<&Spanned<String>>,
    ) -> Checked<(croner::Cron, String)> {
        let Some(value) = value else { return Ok(None) };
        match validate_cron(value.get_ref()) {
            Ok(cron) => Ok(Some((cron, value.get_ref().trim().to_owned()))),
            Err(problem) => {
                self.diag.value(value.span(), path, problem.to_string());
                Err(Reported)
            }
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
        ServerConfig {
            listen,
            admin_token_file,
        }
    }

    fn store(&mut self, raw: Option<&Spanned<RawStore>>) -> StoreConfig {
        let raw = raw.map(|r| r.get_ref());
        // The schema walk has checked `type` and which keys each type allows.
        match raw.and_then(|r| r.kind.as_ref()) {
            Some(kind) if kind.get_ref() == "vault" => {
                if let Some(r) = raw {
                    return self.vault_store(r, kind.span());
                }
            }
            Some(kind) if kind.get_ref() != "embedded" => {
                self.diag.value(
                    kind.span(),
                    "store.type",
                    "expected \"embedded\" or \"vault\"",
                );
            }
            _ => {}
        }
        StoreConfig::Embedded {
            path: self.non_empty_path(
                "store.path",
                raw.and_then(|r| r.path.as_ref()),
                DEFAULT_STORE_PATH,
            ),
            master_key_file: self.non_empty_path(
                "store.master_key_file",
                raw.and_then(|r| r.master_key_file.as_ref()),
                DEFAULT_MASTER_KEY_FILE,
            ),
        }
    }

    /// `[store] type = "vault"`: every key checked, every problem reported.
    fn vault_store(&mut self, raw: &RawStore, span: Range<usize>) -> StoreConfig {
        let address = match &raw.address {
            None => {
                self.missing(
                    Some(span.clone()),
                    "store.address",
                    "missing key `address`: the Vault server, e.g. \"https://vault.vault.svc:8200\"",
                );
                String::new()
            }
            Some(a) => {
                let text = a.get_ref().trim().to_owned();
                match url::Url::parse(&text) {
                    Ok(u)
                        if matches!(u.scheme(), "http" | "https")
                            && u.host_str().is_some_and(|h| !h.is_empty())
                            && u.query().is_none()
                            && matches!(u.path(), "" | "/") =>
                    {
                        text
                    }
                    _ => {
                        self.diag.value(
                            a.span(),
                            "store.address",
                            "is not a Vault address such as \"https://vault.vault.svc:8200\" (http or https, a host, no path)",
                        );
                        String::new()
                    }
                }
            }
        };
        let mount = self.vault_path_part("store.mount", raw.mount.as_ref(), "secret", false);
        let path_prefix =
            self.vault_path_part("store.path_prefix", raw.path_prefix.as_ref(), "", true);
        let namespace = raw
            .namespace
            .as_ref()
            .map(|n| self.vault_path_part("store.namespace", Some(n), "", false));
        let plain_http = url::Url::parse(&address).is_ok_and(|u| u.scheme() == "http");
        let ca_file = self.ca_file("store.ca_file", raw.ca_file.as_ref(), plain_http);
        let master_key_file = self.non_empty_path(
            "store.master_key_file",
            raw.master_key_file.as_ref(),
            DEFAULT_MASTER_KEY_FILE,
        );
        let timeout = self.duration_or(
            "store.timeout",
            raw.timeout.as_ref(),
            Duration::from_secs(10),
        );
        if timeout.is_zero()
            && let Some(t) = &raw.timeout
        {
            self.diag
                .value(t.span(), "store.timeout", "must be longer than zero");
        }
        let max_attempts = self
            .int_in(
                "store.max_attempts",
                raw.max_attempts.as_ref(),
                (1, 20),
                "the number of attempts per Vault request",
            )
            .ok()
            .flatten()
            .map_or(4, |n| n as u32);
        let retry_backoff = self.duration_or(
            "store.retry_backoff",
            raw.retry_backoff.as_ref(),
            Duration::from_millis(200),
        );
        let auth = self.vault_auth(raw.auth.as_ref(), span);
        StoreConfig::Vault(Box::new(VaultSettings {
            address,
            mount,
            path_prefix,
            namespace,
            ca_file,
            master_key_file,
            timeout,
            max_attempts,
            retry_backoff,
            auth,
        }))
    }

    fn vault_auth(
        &mut self,
        raw: Option<&Spanned<RawVaultAuth>>,
        store_span: Range<usize>,
    ) -> VaultAuth {
        let placeholder = VaultAuth::Token {
            token_file: PathBuf::new(),
        };
        let Some(spanned) = raw else {
            self.missing(
                Some(store_span),
                "store.auth",
                "missing key `auth`: e.g. { method = \"kubernetes\", role = \"rotor\", token_file = \"/var/run/secrets/kubernetes.io/serviceaccount/token\" } or { method = \"token\", token_file = \"...\" }",
            );
            return placeholder;
        };
        let a = spanned.get_ref();
        let token_file = match &a.token_file {
            None => {
                self.missing(
                    Some(spanned.span()),
                    "store.auth.token_file",
                    "missing key `token_file`: the file holding the service-account JWT (kubernetes) or the Vault token (token)",
                );
                PathBuf::new()
            }
            Some(f) => self.non_empty_path("store.auth.token_file", Some(f), ""),
        };
        match a.method.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            Some(("kubernetes", _)) => {
                let role = match &a.role {
                    None => {
                        self.missing(
                            Some(spanned.span()),
                            "store.auth.role",
                            "missing key `role`: the Vault Kubernetes auth role, e.g. \"rotor\"",
                        );
                        String::new()
                    }
                    Some(r) if r.get_ref().trim().is_empty() => {
                        self.diag
                            .value(r.span(), "store.auth.role", "must not be empty");
                        String::new()
                    }
                    Some(r) => r.get_ref().clone(),
                };
                let mount =
                    self.vault_path_part("store.auth.mount", a.mount.as_ref(), "kubernetes", false);
                VaultAuth::Kubernetes {
                    role,
                    token_file,
                    mount,
                }
            }
            Some(("token", _)) => {
                for (key, v) in [("role", &a.role), ("mount", &a.mount)] {
                    if let Some(v) = v {
                        self.diag.value(
                            v.span(),
                            &format!("store.auth.{key}"),
                            "only applies to method = \"kubernetes\"",
                        );
                    }
                }
                VaultAuth::Token { token_file }
            }
            Some((_, span)) => {
                self.diag.value(
                    span,
                    "store.auth.method",
                    "expected \"kubernetes\" or \"token\"",
                );
                placeholder
            }
            None => {
                self.missing(
                    Some(spanned.span()),
                    "store.auth.method",
                    "missing key `method`: \"kubernetes\" or \"token\"",
                );
                placeholder
            }
        }
    }

    /// A Vault mount, namespace or path prefix: `/`-separated segments of letters, digits,
    /// `-`, `_` and `.`, none empty, `.` or `..`. Empty is allowed only where `may_be_empty`.
    fn vault_path_part(
        &mut self,
        path: &str,
        value: Option<&Spanned<String>>,
        default: &str,
        may_be_empty: bool,
    ) -> String {
        let Some(v) = value else {
            return default.to_owned();
        };
        let text = v.get_ref().trim_matches('/');
        let ok_segment = |seg: &str| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if (text.is_empty() && may_be_empty)
            || (!text.is_empty() && text.split('/').all(ok_segment))
        {
            text.to_owned()
        } else {
            self.diag.value(
                v.span(),
                path,
                "must be /-separated names of letters, digits, '-', '_' and '.' (no empty, '.' or '..' parts)",
            );
            default.to_owned()
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
        let max_entries = self
            .int_in(
                "cache.max_entries",
                raw.and_then(|r| r.max_entries.as_ref()),
                MAX_CACHE_ENTRIES,
                "the number of cached values (0 turns the cache off)",
            )
            .ok()
            .flatten()
            .map_or(default.max_entries, |n| n as usize);
        CacheConfig { ttl, max_entries }
    }

    fn runtime(&mut self, raw: Option<&Spanned<RawRuntime>>) -> RuntimeConfig {
        let raw = raw.map(|r| r.get_ref());
        let max_concurrent_rotations = self
            .int_in(
                "runtime.max_concurrent_rotations",
                raw.and_then(|r| r.max_concurrent_rotations.as_ref()),
                MAX_CONCURRENT_ROTATIONS,
                "the number of concurrent rotations",
            )
            .ok()
            .flatten()
            .map_or(DEFAULT_MAX_CONCURRENT_ROTATIONS, |n| n as usize);
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
        }
    }

    fn mounts(
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
            let reload = m
                .reload
                .as_ref()
                .and_then(|r| self.reload(&join(&path, "reload"), r));
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

    /// One `file name = "tenant/key"` pair of a mount's `files` or a `[[publish]]` table.
    fn file_mapping(
        &mut self,
        key: &str,
        name_span: Range<usize>,
        name: &str,
        secret: &str,
        secret_span: Range<usize>,
    ) -> Option<(String, SecretRef)> {
        if name.is_empty() || name.contains('/') || name.starts_with("..") {
            self.diag.value(
                name_span,
                key,
                "is a file name in the mount: not empty, no '/', and not starting with \"..\" (kubelet's own entries)",
            );
            return None;
        }
        match SecretRef::parse(secret) {
            Some(s) => Some((name.to_owned(), s)),
            None => {
                self.diag.value(
                    secret_span,
                    key,
                    "must name a secret as \"tenant/key\" (lowercase identifiers)",
                );
                None
            }
        }
    }

    fn reload(&mut self, path: &str, raw: &Spanned<RawReload>) -> Option<ReloadConfig> {
        let r = raw.get_ref();
        let kind = r.kind.as_ref()?.get_ref().as_str();
        let timeout = self.duration_or(
            &join(path, "timeout"),
            r.timeout.as_ref(),
            DEFAULT_RELOAD_TIMEOUT,
        );
        let action = match kind {
            "http" => {
                let url = match &r.url {
                    None => {
                        self.missing(
                            Some(raw.span()),
                            &join(path, "url"),
                            "missing key `url`, e.g. \"http://127.0.0.1:3000/-/reload\"",
                        );
                        None
                    }
                    Some(u) => match parse_http_url(u.get_ref()) {
                        Ok(url) => Some(url),
                        Err(why) => {
                            self.diag.value(u.span(), &join(path, "url"), why);
                            None
                        }
                    },
                };
                let method = match &r.method {
                    None => Some("POST".to_owned()),
                    Some(m) => {
                        let text = m.get_ref();
                        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_uppercase()) {
                            Some(text.clone())
                        } else {
                            self.diag.value(
                                m.span(),
                                &join(path, "method"),
                                "must be an HTTP method in capitals, e.g. \"POST\"",
                            );
                            None
                        }
                    }
                };
                let expected_status = self
                    .int_in(
                        &join(path, "expected_status"),
                        r.expected_status.as_ref(),
                        (100, 599),
                        "an HTTP status",
                    )
                    .ok()?
                    .map(|n| n as u16);
                let plain_http = url.as_ref().is_some_and(|u| !u.tls);
                let ca_file = self.ca_file(&join(path, "ca_file"), r.ca_file.as_ref(), plain_http);
                ReloadAction::Http {
                    url: url?,
                    method: method?,
                    ca_file,
                    timeout,
                    expected_status,
                }
            }
            "signal" => {
                let signal = match &r.signal {
                    None => Some(("SIGHUP".to_owned(), libc::SIGHUP)),
                    Some(sig) => {
                        let text = sig.get_ref().trim().to_ascii_uppercase();
                        let name = if text.starts_with("SIG") {
                            text
                        } else {
                            format!("SIG{text}")
                        };
                        match SIGNALS.iter().find(|(n, _)| *n == name) {
                            Some((n, number)) => Some(((*n).to_owned(), *number)),
                            None => {
                                let known: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
                                self.diag.value(
                                    sig.span(),
                                    &join(path, "signal"),
                                    format!(
                                        "is not a signal a reload may send; one of: {}",
                                        known.join(", ")
                                    ),
                                );
                                None
                            }
                        }
                    }
                };
                let pid_file = match &r.pid_file {
                    None => {
                        self.missing(
                            Some(raw.span()),
                            &join(path, "pid_file"),
                            "missing key `pid_file`: the file holding the pid to signal",
                        );
                        None
                    }
                    Some(p) if p.get_ref().trim().is_empty() => {
                        self.diag
                            .value(p.span(), &join(path, "pid_file"), "must not be empty");
                        None
                    }
                    Some(p) => Some(PathBuf::from(p.get_ref())),
                };
                let (name, number) = signal?;
                ReloadAction::Signal {
                    name,
                    number,
                    pid_file: pid_file?,
                }
            }
            "exec" => {
                let command = match &r.command {
                    None => {
                        self.missing(
                            Some(raw.span()),
                            &join(path, "command"),
                            "missing key `command`: the program and its arguments, e.g. [\"/usr/bin/app-reload\"]",
                        );
                        None
                    }
                    Some(c) if c.get_ref().first().is_none_or(|p| p.get_ref().is_empty()) => {
                        self.diag.value(
                            c.span(),
                            &join(path, "command"),
                            "must start with the program to run",
                        );
                        None
                    }
                    Some(c) => Some(c.get_ref().iter().map(|a| a.get_ref().clone()).collect()),
                };
                ReloadAction::Exec {
                    command: command?,
                    timeout,
                }
            }
            // The schema walk refused other types.
            _ => return None,
        };
        if timeout.is_zero() {
            return None;
        }
        let max_attempts = self
            .int_in(
                &join(path, "max_attempts"),
                r.max_attempts.as_ref(),
                RELOAD_ATTEMPTS,
                "max_attempts",
            )
            .ok()?
            .map_or(DEFAULT_RELOAD_ATTEMPTS, |n| n as u32);
        let backoff = self.duration_or(
            &join(path, "backoff"),
            r.backoff.as_ref(),
            DEFAULT_RELOAD_BACKOFF,
        );
        Some(ReloadConfig {
            action,
            max_attempts,
            backoff,
        })
    }

    fn publish(
        &mut self,
        raw: &[Spanned<RawPublish>],
        mentions: &mut Vec<SecretMention>,
    ) -> Vec<PublishConfig> {
        let mut out = Vec::new();
        let mut seen: HashMap<PathBuf, usize> = HashMap::new();
        for (i, spanned) in raw.iter().enumerate() {
            let path = format!("publish[{i}]");
            let p = spanned.get_ref();
            let dir = match &p.path {
                None => {
                    self.missing(
                        Some(spanned.span()),
                        &join(&path, "path"),
                        "missing key `path`: the directory to publish into, e.g. \"demo/mnt/secrets\"",
                    );
                    None
                }
                Some(d) if d.get_ref().trim().is_empty() => {
                    self.diag
                        .value(d.span(), &join(&path, "path"), "must not be empty");
                    None
                }
                Some(d) => {
                    let dir = PathBuf::from(d.get_ref());
                    if let Some(first) = seen.insert(dir.clone(), i) {
                        self.diag.value(
                            d.span(),
                            &join(&path, "path"),
                            format!("is already published by publish[{first}]"),
                        );
                    }
                    Some(dir)
                }
            };
            let interval = self.duration_or(
                &join(&path, "interval"),
                p.interval.as_ref(),
                DEFAULT_PUBLISH_INTERVAL,
            );
            let mut files = BTreeMap::new();
            match &p.secrets {
                None => self.missing(
                    Some(spanned.span()),
                    &join(&path, "secrets"),
                    "missing key `secrets`: [\"tenant/key\", ...] (file name = key) or { \"file\" = \"tenant/key\" }",
                ),
                Some(list) => {
                    let span = list.span();
                    let pairs: Vec<(String, String, String)> = match list.get_ref() {
                        RawPublishSecrets::List(items) => items
                            .iter()
                            .enumerate()
                            .map(|(j, s)| {
                                let name = s.split_once('/').map_or(s.as_str(), |(_, k)| k);
                                (format!("{path}.secrets[{j}]"), name.to_owned(), s.clone())
                            })
                            .collect(),
                        RawPublishSecrets::Map(map) => map
                            .iter()
                            .map(|(name, s)| {
                                (format!("{path}.secrets.{name}"), name.clone(), s.clone())
                            })
                            .collect(),
                    };
                    for (key, name, secret) in pairs {
                        let Some((name, secret)) =
                            self.file_mapping(&key, span.clone(), &name, &secret, span.clone())
                        else {
                            continue;
                        };
                        if files.contains_key(&name) {
                            self.diag.value(
                                span.clone(),
                                &key,
                                format!("file name {name:?} is used twice in this directory; use the table form to name files"),
                            );
                            continue;
                        }
                        mentions.push(SecretMention {
                            span: span.clone(),
                            key,
                            secret: secret.clone(),
                        });
                        files.insert(name, secret);
                    }
                }
            }
            if let Some(dir) = dir {
                out.push(PublishConfig {
                    path: dir,
                    files,
                    interval,
                });
            }
        }
        out
    }

    /// Every secret a mount maps or a publisher writes must be one rotor manages:
    /// otherwise no version could ever match it.
    fn managed(&mut self, mentions: &[SecretMention], secrets: &[SecretConfig]) {
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

    /// Built-in policies merged with the file's. Returns the valid policies and the names
    /// of policies that were declared but invalid (so secrets using them are not also
    /// reported as naming an unknown policy).
    fn policies(
        &mut self,
        raw: &BTreeMap<String, Spanned<RawPolicy>>,
    ) -> (BTreeMap<String, Arc<Policy>>, HashSet<String>) {
        let mut out = BTreeMap::new();
        let mut broken = HashSet::new();
        for b in builtins() {
            if !raw.contains_key(b.name)
                && let Some(policy) = self.policy(b.name, None, Some(&b))
            {
                out.insert(b.name.to_owned(), Arc::new(policy));
            }
        }
        for (name, spanned) in raw {
            let b = builtin(name);
            match self.policy(name, Some(spanned), b.as_ref()) {
                Some(policy) => {
                    out.insert(name.clone(), Arc::new(policy));
                }
                None => {
                    broken.insert(name.clone());
                }
            }
        }
        for name in self
            .pruned
            .iter()
            .filter_map(|p| p.strip_prefix("policies."))
        {
            if !name.contains('.') {
                broken.insert(name.to_owned());
            }
        }
        (out, broken)
    }

    /// One policy: the file's table (if any) over the built-in (if any). `None` if it had
    /// errors, all of which have been reported.
    fn policy(
        &mut self,
        name: &str,
        raw: Option<&Spanned<RawPolicy>>,
        builtin: Option<&Builtin>,
    ) -> Option<Policy> {
        let errors_before = self.diag.len();
        let path = format!("policies.{name}");
        let table_span = raw.map(|r| r.span());
        let empty = RawPolicy::empty();
        let r = raw.map_or(&empty, |r| r.get_ref());
        let at = |key: &str| join(&path, key);

        if let Err(e) = validate_ident(name) {
            self.diag.at(
                table_span.clone(),
                &path,
                format!("policy name {name:?} {e}"),
            );
        }

        let interval = self.duration(&at("interval"), r.interval.as_ref());
        let cron = self.cron(&at("cron"), r.cron.as_ref());
        let timezone = self.timezone(&at("timezone"), r.timezone.as_ref());
        let grace = self.duration(&at("grace"), r.grace.as_ref());
        let jitter = self.duration(&at("jitter"), r.jitter.as_ref());
        let window = self.window(&at("window"), r.window.as_ref(), &timezone);
        let generator = self.generator(&at("generator"), r.generator.as_ref());
        let max_attempts = self.int_in(
            &at("max_attempts"),
            r.max_attempts.as_ref(),
            MAX_ATTEMPTS,
            "the number of attempts",
        );
        let expire_after = self.expire_after(&path, r);

        // The schedule keys form one group: a table that names any of them replaces the
        // built-in schedule as a whole, so overriding `interval` with `cron` is no conflict.
        let schedule_keys = ["interval", "cron", "manual"];
        let names_schedule = r.interval.is_some()
            || r.cron.is_some()
            || r.manual.is_some()
            || schedule_keys.iter().any(|k| self.pruned.contains(&at(k)));
        let manual_on = r.manual.as_ref().is_some_and(|m| *m.get_ref());
        let kind: Option<ScheduleKind> = if names_schedule {
            if let (Some(_), Some(c)) = (&r.interval, &r.cron) {
                self.diag.value(
                    c.span(),
                    &at("cron"),
                    "a policy has either `interval` or `cron`, not both",
                );
                None
            } else if let (true, Some(m), true) = (
                manual_on,
                &r.manual,
                r.interval.is_some() || r.cron.is_some(),
            ) {
                self.diag.value(
                    m.span(),
                    &at("manual"),
                    "`manual = true` cannot be combined with `interval` or `cron`; remove one",
                );
                None
            } else if r.interval.is_some() {
                interval
                    .as_ref()
                    .ok()
                    .copied()
                    .flatten()
                    .map(ScheduleKind::Interval)
            } else if r.cron.is_some() {
                cron.as_ref()
                    .ok()
                    .cloned()
                    .flatten()
                    .map(|(cron, expr)| ScheduleKind::Cron {
                        cron,
                        expr,
                        tz: timezone
                            .as_ref()
                            .ok()
                            .copied()
                            .flatten()
                            .unwrap_or(chrono_tz::UTC),
                    })
            } else if manual_on {
                Some(ScheduleKind::Manual)
            } else {
                // Only `manual = false` is left, unless stage one removed a bad schedule key.
                if !schedule_keys.iter().any(|k| self.pruned.contains(&at(k))) {
                    let span = r.manual.as_ref().map(|m| m.span()).or(table_span.clone());
                    self.diag.at(span, &path, no_schedule_message());
                }
                None
            }
        } else {
            match builtin.map(|b| b.schedule) {
                Some(BuiltinSchedule::Interval(d)) => Some(ScheduleKind::Interval(d)),
                Some(BuiltinSchedule::Manual) => Some(ScheduleKind::Manual),
                None => {
                    self.diag
                        .at(table_span.clone(), &path, no_schedule_message());
                    None
                }
            }
        };

        if let (Some(tz_value), Some(kind)) = (&r.timezone, &kind)
            && !matches!(kind, ScheduleKind::Cron { .. })
            && r.window.is_none()
        {
            self.diag.value(
                tz_value.span(),
                &at("timezone"),
                "applies only to `cron` and `window`, and this policy has neither",
            );
        }
        if matches!(kind, Some(ScheduleKind::Manual)) {
            if let Some(j) = &r.jitter {
                self.diag.value(
                    j.span(),
                    &at("jitter"),
                    "has no effect on a manual policy; remove it",
                );
            }
            if let Some(w) = &r.window {
                self.diag.at(
                    Some(w.span()),
                    &at("window"),
                    "has no effect on a manual policy; remove it",
                );
            }
        }

        let grace = match grace {
            Ok(Some(g)) => Some(g),
            Ok(None) => match builtin {
                Some(b) => Some(b.grace),
                None => {
                    self.missing(
                        table_span.clone(),
                        &at("grace"),
                        "missing key `grace`: how long the previous version stays valid, e.g. \"24h\"",
                    );
                    None
                }
            },
            Err(Reported) => None,
        };

        // Grace must end before the next rotation, or two rotations would overlap and the
        // version being replaced would be one that is still in its grace period.
        if let (Some(g), Some(kind)) = (grace, &kind) {
            let limit = match kind {
                ScheduleKind::Interval(i) => {
                    Some((*i, format!("the interval ({})", format_duration(*i))))
                }
                ScheduleKind::Cron { cron, expr, tz } => shortest_cron_gap(cron, *tz).map(|gap| {
                    (
                        gap,
                        format!(
                            "the shortest gap between occurrences of cron {expr:?} ({})",
                            format_duration(gap)
                        ),
                    )
                }),
                ScheduleKind::Manual => None,
            };
            if let Some((limit, what)) = limit
                && g >= limit
            {
                let message = format!(
                    "grace {} must be shorter than {what}: otherwise the previous version is still in its grace period when the next rotation starts",
                    format_duration(g)
                );
                match (&r.grace, &r.interval, &r.cron) {
                    (Some(v), _, _) => self.diag.value(v.span(), &at("grace"), message),
                    (None, Some(v), _) => self.diag.value(v.span(), &at("interval"), message),
                    (None, None, Some(v)) => self.diag.value(v.span(), &at("cron"), message),
                    (None, None, None) => self.diag.at(table_span.clone(), &path, message),
                }
            }
        }

        let generator = match generator {
            Ok(Some(g)) => Some(g),
            Ok(None) => match builtin {
                Some(b) => Some(b.generator.clone()),
                None => {
                    self.missing(
                        table_span.clone(),
                        &at("generator"),
                        "missing key `generator`, e.g. generator = { type = \"token\", bytes = 32 }",
                    );
                    None
                }
            },
            Err(Reported) => None,
        };

        if self.diag.len() > errors_before {
            return None;
        }
        let (
            Some(kind),
            Some(grace),
            Some(generator),
            Ok(jitter),
            Ok(window),
            Ok(max_attempts),
            Some(expire_after),
        ) = (
            kind,
            grace,
            generator,
            jitter,
            window,
            max_attempts,
            expire_after,
        )
        else {
            return None;
        };
        Some(Policy {
            name: name.to_owned(),
            schedule: Schedule {
                kind,
                jitter,
                window,
            },
            grace,
            generator,
            max_attempts: max_attempts.map_or(DEFAULT_MAX_ATTEMPTS, |n| n as u32),
            expire_after,
        })
    }

    fn window(
        &mut self,
        path: &str,
        raw: Option<&Spanned<RawWindow>>,
        policy_tz: &Checked<chrono_tz::Tz>,
    ) -> Checked<Window> {
        let Some(spanned) = raw else { return Ok(None) };
        let w = spanned.get_ref();
        let cron = self.cron(&join(path, "cron"), w.cron.as_ref());
        let duration = self.duration(&join(path, "duration"), w.duration.as_ref());
        let tz = self.timezone(&join(path, "timezone"), w.timezone.as_ref());
        if w.cron.is_none() {
            self.missing(
                Some(spanned.span()),
                &join(path, "cron"),
                "missing key `cron`: when the window opens, e.g. \"0 1 * * *\"",
            );
        }
        if w.duration.is_none() {
            self.missing(
                Some(spanned.span()),
                &join(path, "duration"),
                "missing key `duration`: how long the window stays open, e.g. \"3h\"",
            );
        }
        match (cron, duration, tz) {
            (Ok(Some((cron, expr))), Ok(Some(duration)), Ok(tz)) => {
                // A window without its own zone follows the policy's.
                let tz = tz
                    .or(policy_tz.as_ref().ok().copied().flatten())
                    .unwrap_or(chrono_tz::UTC);
                Ok(Some(Window {
                    cron,
                    expr,
                    duration,
                    tz,
                }))
            }
            _ => Err(Reported),
        }
    }

    fn generator(
        &mut self,
        path: &str,
        raw: Option<&Spanned<RawGenerator>>,
    ) -> Checked<GeneratorSpec> {
        let Some(spanned) = raw else { return Ok(None) };
        let g = spanned.get_ref();
        let errors_before = self.diag.len();
        let kind = g.kind.as_ref().map_or("", |k| k.get_ref().as_str());
        let flag =
            |v: &Option<Spanned<bool>>, default: bool| v.as_ref().map_or(default, |b| *b.get_ref());
        let spec = match kind {
            "password" => {
                let length = self
                    .int_in(
                        &join(path, "length"),
                        g.length.as_ref(),
                        PASSWORD_LENGTH,
                        "password length",
                    )
                    .ok()
                    .flatten()
                    .unwrap_or(32);
                let classes = CharClasses {
                    lower: flag(&g.lower, true),
                    upper: flag(&g.upper, true),
                    digits: flag(&g.digits, true),
                    symbols: flag(&g.symbols, false),
                };
                if !(classes.lower || classes.upper || classes.digits || classes.symbols) {
                    self.diag.at(
                        Some(spanned.span()),
                        path,
                        "a password needs at least one character class: set one of lower, upper, digits, symbols to true",
                    );
                }
                GeneratorSpec::Password {
                    length: length as usize,
                    classes,
                }
            }
            "token" => {
                let bytes = self
                    .int_in(
                        &join(path, "bytes"),
                        g.bytes.as_ref(),
                        RANDOM_BYTES,
                        "token bytes",
                    )
                    .ok()
                    .flatten()
                    .unwrap_or(32);
                let prefix = match &g.prefix {
                    None => String::new(),
                    Some(p) => {
                        let text = p.get_ref();
                        if text.len() > MAX_PREFIX_LEN
                            || !text.chars().all(|c| {
                                c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
                            })
                        {
                            self.diag.value(
                                p.span(),
                                &join(path, "prefix"),
                                format!("a token prefix has at most {MAX_PREFIX_LEN} characters from a-z, A-Z, 0-9, '_', '-', '.'"),
                            );
                        }
                        text.clone()
                    }
                };
                let encoding = match g.encoding.as_ref().map(|e| (e, e.get_ref().as_str())) {
                    None | Some((_, "base64url")) => Encoding::Base64Url,
                    Some((_, "hex")) => Encoding::Hex,
                    Some((e, _)) => {
                        self.diag.value(
                            e.span(),
                            &join(path, "encoding"),
                            "unknown encoding; expected \"base64url\" or \"hex\"",
                        );
                        Encoding::Base64Url
                    }
                };
                GeneratorSpec::Token {
                    bytes: bytes as usize,
                    prefix,
                    encoding,
                }
            }
            "hmac" => {
                let bytes = self
                    .int_in(
                        &join(path, "bytes"),
                        g.bytes.as_ref(),
                        RANDOM_BYTES,
                        "key bytes",
                    )
                    .ok()
                    .flatten()
                    .unwrap_or(32);
                GeneratorSpec::Hmac {
                    bytes: bytes as usize,
                }
            }
            "ed25519" => GeneratorSpec::Ed25519,
            // The schema walk removes generators without a known type.
            _ => return Err(Reported),
        };
        if self.diag.len() > errors_before {
            Err(Reported)
        } else {
            Ok(Some(spec))
        }
    }

    /// `None` if bad (reported).
    fn expire_after(&mut self, path: &str, r: &RawPolicy) -> Option<ExpireAfter> {
        let extension = self.duration(
            &join(path, "max_grace_extension"),
            r.max_grace_extension.as_ref(),
        );
        let mode = r.expire_after.as_ref();
        match mode.map(|m| m.get_ref().as_str()) {
            None | Some("grace") => {
                if let Some(ext) = &r.max_grace_extension {
                    self.diag.value(
                        ext.span(),
                        &join(path, "max_grace_extension"),
                        "applies only with expire_after = \"grace_and_consumers\"",
                    );
                    return None;
                }
                Some(ExpireAfter::Grace)
            }
            Some("grace_and_consumers") => Some(ExpireAfter::GraceAndConsumers {
                max_extension: extension.ok()?.unwrap_or(DEFAULT_MAX_GRACE_EXTENSION),
            }),
            Some(_) => {
                if let Some(m) = mode {
                    self.diag.value(
                        m.span(),
                        &join(path, "expire_after"),
                        "expected \"grace\" or \"grace_and_consumers\"",
                    );
                }
                None
            }
        }
    }

    fn secrets(
        &mut self,
        raw: &[Spanned<RawSecret>],
        policies: &BTreeMap<String, Arc<Policy>>,
        broken: &HashSet<String>,
    ) -> Vec<SecretConfig> {
        let mut out = Vec::new();
        let mut seen: HashMap<SecretRef, usize> = HashMap::new();
        for (i, spanned) in raw.iter().enumerate() {
            let path = format!("secrets[{i}]");
            let s = spanned.get_ref();
            let ident =
                |v: &mut Self, key: &str, value: &Option<Spanned<String>>| -> Option<String> {
                    let key_path = join(&path, key);
                    match value {
                        None => {
                            v.missing(
                                Some(spanned.span()),
                                &key_path,
                                format!("missing key `{key}`"),
                            );
                            None
                        }
                        Some(text) => match validate_ident(text.get_ref()) {
                            Ok(()) => Some(text.get_ref().clone()),
                            Err(e) => {
                                v.diag.value(text.span(), &key_path, e.to_string());
                                None
                            }
                        },
                    }
                };
            let tenant = ident(self, "tenant", &s.tenant);
            let key = ident(self, "key", &s.key);
            let policy = match &s.policy {
                None => {
                    self.missing(
                        Some(spanned.span()),
                        &join(&path, "policy"),
                        "missing key `policy`: the name of the policy that rotates this secret",
                    );
                    None
                }
                Some(name) => match policies.get(name.get_ref()) {
                    Some(p) => Some(p.clone()),
                    None if broken.contains(name.get_ref()) => None,
                    None => {
                        let known = policies.keys().cloned().collect::<Vec<_>>().join(", ");
                        self.diag.value(
                            name.span(),
                            &join(&path, "policy"),
                            format!("no policy has this name; known policies: {known}"),
                        );
                        None
                    }
                },
            };
            let Some(target) = self.target(&path, s.target.as_ref(), policy.as_deref()) else {
                continue;
            };
            let (Some(tenant), Some(key), Some(policy)) = (tenant, key, policy) else {
                continue;
            };
            // Both parts were validated above, each with its own diagnostic.
            let Ok(secret) = SecretRef::new(&tenant, &key) else {
                continue;
            };
            if let Some(first) = seen.insert(secret.clone(), i) {
                let span = s.key.as_ref().map_or(spanned.span(), |k| k.span());
                self.diag.at(
                    Some(span),
                    &path,
                    format!("duplicate secret {secret}: already declared as secrets[{first}]"),
                );
                continue;
            }
            out.push(SecretConfig {
                secret,
                policy,
                target,
            });
        }
        out
    }
}

const DEFAULT_TARGET_TIMEOUT: Duration = Duration::from_secs(30);
/// PostgreSQL truncates identifiers longer than this.
const MAX_ROLE_LEN: usize = 63;

/// Target checks (`secrets[i].target`), in their own block: one arm per target type.
impl Validator<'_, '_> {
    /// The validated target of a secret, or `None` when something was reported. `policy`
    /// is the secret's policy when it resolved, for cross-field checks (grace, generator).
    fn target(
        &mut self,
        path: &str,
        raw: Option<&Spanned<RawTarget>>,
        policy: Option<&Policy>,
    ) -> Option<TargetConfig> {
        let Some(spanned) = raw else {
            // Absent means store-only.
            return Some(TargetConfig::None {
                delay: Duration::ZERO,
                fail: Vec::new(),
                fail_file: None,
            });
        };
        let t = spanned.get_ref();
        let path = join(path, "target");
        let kind = t
            .kind
            .as_ref()
            .map(|k| k.get_ref().as_str())
            .unwrap_or("none");
        let before = self.diag.len();
        let target = match kind {
            "none" => {
                let (fail, fail_file) = self.none_failures(&path, t);
                TargetConfig::None {
                    delay: self
                        .duration(&join(&path, "delay"), t.delay.as_ref())
                        .ok()
                        .flatten()
                        .unwrap_or_default(),
                    fail,
                    fail_file,
                }
            }
            "postgres" => {
                let admin_url_file =
                    self.required_file(&path, "admin_url_file", spanned, &t.admin_url_file);
                let strategy = match t.strategy.as_ref().map(|s| (s, s.get_ref().as_str())) {
                    None | Some((_, "alternating")) => PostgresStrategy::Alternating,
                    Some((_, "single")) => PostgresStrategy::Single,
                    Some((s, _)) => {
                        self.diag.value(
                            s.span(),
                            &join(&path, "strategy"),
                            "expected \"alternating\" (two roles, grace works) or \"single\" (one role, no grace)",
                        );
                        PostgresStrategy::Alternating
                    }
                };
                let roles = self.roles(&path, spanned, t, strategy);
                let acknowledged = t
                    .acknowledge_no_grace
                    .as_ref()
                    .is_some_and(|a| *a.get_ref());
                if strategy == PostgresStrategy::Single
                    && !acknowledged
                    && let Some(p) = policy.filter(|p| !p.grace.is_zero())
                {
                    let span = t.strategy.as_ref().map_or(spanned.span(), |s| s.span());
                    self.diag.value(
                        span,
                        &join(&path, "strategy"),
                        format!(
                            "strategy \"single\" replaces the one role's password, so the previous \
                             one stops working at once and policy `{}`'s grace of {} cannot be \
                             honoured; use strategy = \"alternating\" with two roles, or set \
                             acknowledge_no_grace = true to accept that consumers break until \
                             they read the new value",
                            p.name,
                            format_duration(p.grace)
                        ),
                    );
                }
                let terminate_sessions = match &t.terminate_sessions {
                    Some(v) if *v.get_ref() && strategy == PostgresStrategy::Single => {
                        self.diag.value(
                            v.span(),
                            &join(&path, "terminate_sessions"),
                            "needs strategy = \"alternating\": with one role, the sessions of \
                             the old password cannot be told apart from those of the new one",
                        );
                        false
                    }
                    Some(v) => *v.get_ref(),
                    None => false,
                };
                TargetConfig::Postgres {
                    admin_url_file,
                    strategy,
                    roles,
                    terminate_sessions,
                }
            }
            "redis" => {
                let admin_url_file =
                    self.required_file(&path, "admin_url_file", spanned, &t.admin_url_file);
                let user = match &t.user {
                    None => {
                        self.missing(
                            Some(spanned.span()),
                            &join(&path, "user"),
                            "missing key `user`: the Redis ACL user whose passwords rotor rotates",
                        );
                        String::new()
                    }
                    Some(u) => {
                        let name = u.get_ref();
                        if name.is_empty()
                            || name.len() > 128
                            || !name.bytes().all(|b| b.is_ascii_graphic())
                        {
                            self.diag.value(
                                u.span(),
                                &join(&path, "user"),
                                "must be 1 to 128 printable ASCII characters without spaces",
                            );
                        }
                        name.clone()
                    }
                };
                let persist = match t.persist.as_ref().map(|p| (p, p.get_ref().as_str())) {
                    None | Some((_, "auto")) => RedisPersist::Auto,
                    Some((_, "acl_save")) => RedisPersist::AclSave,
                    Some((_, "none")) => RedisPersist::None,
                    Some((p, _)) => {
                        self.diag.value(
                            p.span(),
                            &join(&path, "persist"),
                            "expected \"auto\" (ACL SAVE after each change, warn if Redis has no \
                             aclfile), \"acl_save\" (ACL SAVE after each change, fail the step if \
                             it cannot) or \"none\" (never save)",
                        );
                        RedisPersist::Auto
                    }
                };
                TargetConfig::Redis {
                    admin_url_file,
                    user,
                    persist,
                }
            }
            "jwks" => {
                let file = self.required_file(&path, "path", spanned, &t.path);
                let algorithm = match t.algorithm.as_ref().map(|a| (a, a.get_ref().as_str())) {
                    None | Some((_, "ed25519")) => JwksAlgorithm::Ed25519,
                    Some((_, "hs256")) => JwksAlgorithm::Hs256,
                    Some((a, _)) => {
                        self.diag.value(
                            a.span(),
                            &join(&path, "algorithm"),
                            "expected \"ed25519\" or \"hs256\"",
                        );
                        JwksAlgorithm::Ed25519
                    }
                };
                if let Some(p) = policy {
                    let (fits, want) = match algorithm {
                        JwksAlgorithm::Ed25519 => {
                            (matches!(p.generator, GeneratorSpec::Ed25519), "ed25519")
                        }
                        JwksAlgorithm::Hs256 => {
                            (matches!(p.generator, GeneratorSpec::Hmac { .. }), "hmac")
                        }
                    };
                    if !fits {
                        let span = t.algorithm.as_ref().map_or(spanned.span(), |a| a.span());
                        self.diag.value(
                            span,
                            &join(&path, "algorithm"),
                            format!("needs a policy whose generator type is \"{want}\"; policy `{}` generates something else", p.name),
                        );
                    }
                }
                TargetConfig::Jwks {
                    path: file,
                    algorithm,
                }
            }
            "exec" => {
                let argv =
                    |v: &mut Self, key: &str, raw: &Option<Spanned<Vec<Spanned<String>>>>| {
                        let list = raw.as_ref()?;
                        if list.get_ref().is_empty()
                            || list.get_ref()[0].get_ref().trim().is_empty()
                        {
                            v.diag.value(
                                list.span(),
                                &join(&path, key),
                                "must name a program: [\"/path/to/program\", \"arg\", ...]",
                            );
                            return None;
                        }
                        Some(
                            list.get_ref()
                                .iter()
                                .map(|a| a.get_ref().clone())
                                .collect::<Vec<_>>(),
                        )
                    };
                let apply = argv(self, "apply", &t.apply);
                let test = argv(self, "test", &t.test);
                let promote = argv(self, "promote", &t.promote);
                let revoke = argv(self, "revoke", &t.revoke);
                let restore = argv(self, "restore", &t.restore);
                if apply.is_none() && test.is_none() && t.apply.is_none() && t.test.is_none() {
                    self.missing(
                        Some(spanned.span()),
                        &join(&path, "apply"),
                        "an exec target needs at least `apply` or `test`",
                    );
                }
                TargetConfig::Exec {
                    apply,
                    test,
                    promote,
                    revoke,
                    restore,
                    timeout: self.duration_or(
                        &join(&path, "timeout"),
                        t.timeout.as_ref(),
                        DEFAULT_TARGET_TIMEOUT,
                    ),
                }
            }
            "webhook" => {
                let url = match &t.url {
                    None => {
                        self.missing(
                            Some(spanned.span()),
                            &join(&path, "url"),
                            "missing key `url`: the endpoint every step is posted to",
                        );
                        String::new()
                    }
                    Some(u) => u.get_ref().clone(),
                };
                let plain_http = match crate::target::webhook::HookUrl::parse(&url) {
                    Ok(parsed) => !parsed.is_https(),
                    Err(m) => {
                        if let Some(u) = &t.url {
                            self.diag.value(u.span(), &join(&path, "url"), m);
                        }
                        false
                    }
                };
                let ca_file = self.ca_file(&join(&path, "ca_file"), t.ca_file.as_ref(), plain_http);
                TargetConfig::Webhook {
                    url,
                    hmac_key_file: self.required_file(
                        &path,
                        "hmac_key_file",
                        spanned,
                        &t.hmac_key_file,
                    ),
                    ca_file,
                    timeout: self.duration_or(
                        &join(&path, "timeout"),
                        t.timeout.as_ref(),
                        DEFAULT_TARGET_TIMEOUT,
                    ),
                }
            }
            // The schema walk refuses unknown types before this point.
            other => {
                let span = t.kind.as_ref().map_or(spanned.span(), |k| k.span());
                self.diag.value(
                    span,
                    &join(&path, "type"),
                    format!("unknown target type {other}"),
                );
                return None;
            }
        };
        (self.diag.len() == before).then_some(target)
    }

    /// A required, non-empty file path key of a target.
    fn required_file(
        &mut self,
        path: &str,
        key: &str,
        table: &Spanned<RawTarget>,
        value: &Option<Spanned<String>>,
    ) -> PathBuf {
        let key_path = join(path, key);
        match value {
            None => {
                self.missing(
                    Some(table.span()),
                    &key_path,
                    format!("missing key `{key}`: a file path"),
                );
                PathBuf::new()
            }
            Some(_) => self.non_empty_path(&key_path, value.as_ref(), ""),
        }
    }

    /// `roles` of a postgres target: PostgreSQL identifiers, two for `alternating`, one
    /// for `single`.
    fn roles(
        &mut self,
        path: &str,
        table: &Spanned<RawTarget>,
        t: &RawTarget,
        strategy: PostgresStrategy,
    ) -> Vec<String> {
        let key = join(path, "roles");
        let want = match strategy {
            PostgresStrategy::Alternating => 2,
            PostgresStrategy::Single => 1,
        };
        let Some(list) = &t.roles else {
            self.missing(
                Some(table.span()),
                &key,
                "missing key `roles`: two login roles for strategy \"alternating\" (e.g. [\"app_blue\", \"app_green\"]), one for \"single\"",
            );
            return Vec::new();
        };
        let roles: Vec<String> = list.get_ref().iter().map(|r| r.get_ref().clone()).collect();
        if roles.len() != want {
            self.diag.value(
                list.span(),
                &key,
                format!(
                    "strategy {} takes exactly {want} role(s)",
                    match strategy {
                        PostgresStrategy::Alternating => "\"alternating\"",
                        PostgresStrategy::Single => "\"single\"",
                    }
                ),
            );
        }
        for (j, r) in list.get_ref().iter().enumerate() {
            let name = r.get_ref();
            let ok = !name.is_empty()
                && name.len() <= MAX_ROLE_LEN
                && name
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                self.diag.value(
                    r.span(),
                    &format!("{key}[{j}]"),
                    format!("a role name is 1 to {MAX_ROLE_LEN} lowercase letters, digits or `_`, not starting with a digit"),
                );
            }
        }
        if roles.len() == 2 && roles[0] == roles[1] {
            self.diag
                .value(list.span(), &key, "the two roles must differ");
        }
        roles
    }
}

/// Steps of the `none` target that its test/demo hook can make fail.
const NONE_FAILABLE_STEPS: &[&str] = &["apply", "test", "promote", "revoke"];
const NOTIFY_QUEUE_CAPACITY: (i64, i64) = (1, 1_000_000);
const DEFAULT_NOTIFY_QUEUE_CAPACITY: usize = 1_000;
const NOTIFY_MAX_ATTEMPTS: (i64, i64) = (1, 100);
const DEFAULT_NOTIFY_MAX_ATTEMPTS: u32 = 5;
const DEFAULT_NOTIFY_RETRY_BACKOFF: Duration = Duration::from_secs(1);
const DEFAULT_NOTIFY_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(60);
const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

impl Validator<'_, '_> {
    /// `fail` and `fail_file` of a `none` target (test/demo hook).
    fn none_failures(
        &mut self,
        path: &str,
        t: &super::raw::RawTarget,
    ) -> (Vec<String>, Option<PathBuf>) {
        let mut fail = Vec::new();
        for (j, step) in t.fail.iter().flat_map(|f| f.get_ref().iter()).enumerate() {
            if NONE_FAILABLE_STEPS.contains(&step.get_ref().as_str()) {
                fail.push(step.get_ref().clone());
            } else {
                self.diag.value(
                    step.span(),
                    &format!("{path}.fail[{j}]"),
                    format!(
                        "unknown step; expected one of: {}",
                        NONE_FAILABLE_STEPS.join(", ")
                    ),
                );
            }
        }
        let fail_file = t.fail_file.as_ref().map(|f| PathBuf::from(f.get_ref()));
        // A fail_file alone means "apply fails while the file exists".
        if fail_file.is_some() && fail.is_empty() && t.fail.is_none() {
            fail.push("apply".to_owned());
        }
        (fail, fail_file)
    }

    fn notify(&mut self, raw: &[Spanned<RawNotify>]) -> Vec<NotifyConfig> {
        let mut out = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, spanned) in raw.iter().enumerate() {
            let path = format!("notify[{i}]");
            let n = spanned.get_ref();
            let errors_before = self.diag.len();
            // The schema walk removed entries without a known type.
            let Some(kind) = n.kind.as_ref().map(|k| k.get_ref().as_str()) else {
                continue;
            };
            let name = match &n.name {
                Some(v) => {
                    let text = v.get_ref();
                    if text.is_empty()
                        || text.len() > 64
                        || !text
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        self.diag.value(
                            v.span(),
                            &join(&path, "name"),
                            "a channel name has 1 to 64 characters from a-z, A-Z, 0-9, '_', '-'",
                        );
                    }
                    text.clone()
                }
                None => match raw
                    .iter()
                    .filter(|r| {
                        r.get_ref().kind.as_ref().map(|k| k.get_ref().as_str()) == Some(kind)
                    })
                    .count()
                {
                    1 => kind.to_owned(),
                    _ => format!("{kind}-{i}"),
                },
            };
            if let Some(first) = names.insert(name.clone(), i) {
                let span = n.name.as_ref().map_or(spanned.span(), |v| v.span());
                self.diag.at(
                    Some(span),
                    &join(&path, "name"),
                    format!("channel name {name:?} is already used by notify[{first}]; set distinct names"),
                );
            }
            let mut events = Vec::new();
            for (j, e) in n.events.iter().flat_map(|e| e.get_ref().iter()).enumerate() {
                if crate::notify::EVENT_KINDS.contains(&e.get_ref().as_str()) {
                    events.push(e.get_ref().clone());
                } else {
                    self.diag.value(
                        e.span(),
                        &format!("{path}.events[{j}]"),
                        format!(
                            "unknown event kind; expected one of: {}",
                            crate::notify::EVENT_KINDS.join(", ")
                        ),
                    );
                }
            }
            let min_severity = match &n.min_severity {
                None => crate::notify::Severity::Info,
                Some(v) => crate::notify::Severity::parse(v.get_ref()).unwrap_or_else(|| {
                    self.diag.value(
                        v.span(),
                        &join(&path, "min_severity"),
                        "expected \"info\", \"warning\" or \"critical\"",
                    );
                    crate::notify::Severity::Info
                }),
            };
            let url = self.notify_url(&path, spanned, n, kind);
            let channel = match kind {
                "log" => Some(ChannelConfig::Log),
                "slack" => url.map(|url| ChannelConfig::Slack { url }),
                "webhook" => {
                    let secret_file = match &n.secret_file {
                        None => {
                            self.missing(
                                Some(spanned.span()),
                                &join(&path, "secret_file"),
                                "missing key `secret_file`: a file holding the key that signs every request (X-Rotor-Signature)",
                            );
                            None
                        }
                        Some(v) if v.get_ref().trim().is_empty() => {
                            self.diag.value(
                                v.span(),
                                &join(&path, "secret_file"),
                                "must not be empty",
                            );
                            None
                        }
                        Some(v) => Some(PathBuf::from(v.get_ref())),
                    };
                    match (url, secret_file) {
                        (Some(url), Some(secret_file)) => {
                            Some(ChannelConfig::Webhook { url, secret_file })
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            let queue_capacity = self
                .int_in(
                    &join(&path, "queue_capacity"),
                    n.queue_capacity.as_ref(),
                    NOTIFY_QUEUE_CAPACITY,
                    "the queue capacity",
                )
                .ok()
                .flatten()
                .map_or(DEFAULT_NOTIFY_QUEUE_CAPACITY, |c| c as usize);
            let max_attempts = self
                .int_in(
                    &join(&path, "max_attempts"),
                    n.max_attempts.as_ref(),
                    NOTIFY_MAX_ATTEMPTS,
                    "the number of attempts",
                )
                .ok()
                .flatten()
                .map_or(DEFAULT_NOTIFY_MAX_ATTEMPTS, |c| c as u32);
            let retry_backoff = self.duration_or(
                &join(&path, "retry_backoff"),
                n.retry_backoff.as_ref(),
                DEFAULT_NOTIFY_RETRY_BACKOFF,
            );
            let retry_backoff_max = self.duration_or(
                &join(&path, "retry_backoff_max"),
                n.retry_backoff_max.as_ref(),
                DEFAULT_NOTIFY_RETRY_BACKOFF_MAX,
            );
            if retry_backoff > retry_backoff_max {
                let span = n
                    .retry_backoff_max
                    .as_ref()
                    .or(n.retry_backoff.as_ref())
                    .map_or(spanned.span(), |v| v.span());
                self.diag.value(
                    span,
                    &join(&path, "retry_backoff_max"),
                    format!(
                        "must not be shorter than retry_backoff ({})",
                        format_duration(retry_backoff)
                    ),
                );
            }
            let timeout = self.duration_or(
                &join(&path, "timeout"),
                n.timeout.as_ref(),
                DEFAULT_NOTIFY_TIMEOUT,
            );
            if timeout.is_zero()
                && let Some(v) = &n.timeout
            {
                self.diag.value(
                    v.span(),
                    &join(&path, "timeout"),
                    "must be longer than zero",
                );
            }
            let Some(channel) = channel else { continue };
            if self.diag.len() > errors_before {
                continue;
            }
            out.push(NotifyConfig {
                name,
                channel,
                events,
                min_severity,
                queue_capacity,
                max_attempts,
                retry_backoff,
                retry_backoff_max,
                timeout,
                ca_file: n.ca_file.as_ref().map(|f| PathBuf::from(f.get_ref())),
            });
        }
        out
    }

    /// `url` or `url_file` (exactly one) of an HTTP channel. An inline URL must be
    /// `http(s)://host[:port]/path`; it is not quoted back in messages (it may hold a token).
    fn notify_url(
        &mut self,
        path: &str,
        spanned: &Spanned<RawNotify>,
        n: &RawNotify,
        kind: &str,
    ) -> Option<UrlSource> {
        if kind == "log" {
            return None;
        }
        match (&n.url, &n.url_file) {
            (Some(_), Some(f)) => {
                self.diag.at(
                    Some(f.span()),
                    &join(path, "url_file"),
                    "set either `url` or `url_file`, not both",
                );
                None
            }
            (None, None) => {
                self.missing(
                    Some(spanned.span()),
                    &join(path, "url"),
                    "missing key `url` (or `url_file`, a file holding the URL): where the channel posts",
                );
                None
            }
            (None, Some(f)) if f.get_ref().trim().is_empty() => {
                self.diag
                    .value(f.span(), &join(path, "url_file"), "must not be empty");
                None
            }
            (None, Some(f)) => Some(UrlSource::File(PathBuf::from(f.get_ref()))),
            (Some(u), None) => match check_http_url(u.get_ref()) {
                Ok(()) => Some(UrlSource::Inline(u.get_ref().clone())),
                Err(problem) => {
                    // `at`, not `value`: the URL may carry a token and is not quoted.
                    self.diag.at(Some(u.span()), &join(path, "url"), problem);
                    None
                }
            },
        }
    }
}

/// Whether `url` is a URL the notifier can post to (`http(s)://host[:port]/...`).
pub fn check_http_url(url: &str) -> Result<(), String> {
    let uri = url
        .trim()
        .parse::<hyper::Uri>()
        .map_err(|_| "is not a URL such as \"http://relay.local:8080/hook\"".to_owned())?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() => Ok(()),
        _ => Err("must be an http:// or https:// URL with a host, such as \"https://hooks.slack.com/services/...\"".to_owned()),
    }
}

fn no_schedule_message() -> &'static str {
    "has no schedule: set interval = \"30d\", cron = \"0 2 * * 0\" or manual = true"
}

impl RawPolicy {
    /// A policy table naming nothing, for built-ins the file does not mention.
    fn empty() -> Self {
        RawPolicy {
            interval: None,
            cron: None,
            timezone: None,
            manual: None,
            grace: None,
            jitter: None,
            window: None,
            generator: None,
            max_attempts: None,
            expire_after: None,
            max_grace_extension: None,
        }
    }
}
