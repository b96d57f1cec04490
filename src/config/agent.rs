//! The configuration of `rotor agent`, the sidecar: a separate kind of document, told apart
//! by its `[agent]` table. It holds `[agent]` (where rotor is, the consumer token file, who
//! this consumer is), `[[mounts]]` and optionally `[watch]`; the mounts and `[watch]` are
//! parsed and checked by exactly the code `rotor run` uses ([`super::validate`]), so a
//! mount means the same thing in both. It has no store, secrets or policies: an agent never
//! sees a value other than the files its pod already mounts, and never holds a key.
//!
//! ```toml
//! [agent]
//! rotor_url = "http://rotor.rotor.svc:8080"
//! token_file = "/var/run/rotor/consumer.token"
//! workload = "web"            # asks rotor for a reload permit before each reload
//! heartbeat = "5s"
//! [[mounts]]
//! path = "/mnt/secrets"
//! critical = ["*"]
//! reload = { type = "http", url = "http://127.0.0.1:3000/-/reload" }
//! files = { "password" = "tenant1/database_credentials" }
//! ```

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeTable;

use super::check::Validator;
use super::error::Diagnostics;
use super::model::{MountConfig, WatchConfig};
use super::raw::{RawMount, RawWatch};
use super::schema::{Field, MOUNT, Ty, WATCH, f};
use super::{ConfigErrors, schema};
use crate::duration::format_duration;

/// The table whose presence makes a document an agent configuration.
pub(super) const AGENT_TABLE: &str = "agent";

const AGENT: &[Field] = &[
    f("rotor_url", Ty::Str),
    f("token_file", Ty::Str),
    f("consumer_id", Ty::Str),
    f("workload", Ty::Str),
    f("heartbeat", Ty::Duration),
    f("permit_wait", Ty::Duration),
    f("timeout", Ty::Duration),
    f("ca_file", Ty::Str),
    f("allow_insecure_http", Ty::Bool),
];

/// The whole agent document.
const ROOT: &[Field] = &[
    f(AGENT_TABLE, Ty::Table(AGENT)),
    f("mounts", Ty::TableList(MOUNT)),
    f("watch", Ty::Table(WATCH)),
];

/// Default `[agent] heartbeat`: a pod that stops reporting is noticed within rotor's
/// `[consumers] ttl`, which is several heartbeats.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
const HEARTBEAT_RANGE: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(600));
/// Default `[agent] permit_wait`: how long a reload waits for a permit before it runs
/// without one (see [`AgentSettings::permit_wait`]).
pub const DEFAULT_PERMIT_WAIT: Duration = Duration::from_secs(120);
/// Default `[agent] timeout` of one request to rotor.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A whole, valid agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub agent: AgentSettings,
    pub watch: WatchConfig,
    pub mounts: Vec<MountConfig>,
}

/// `[agent]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSettings {
    /// rotor's HTTP listener (`http(s)://host:port`, optionally a path prefix); the
    /// consumer routes are below it.
    pub rotor_url: url::Url,
    /// The consumer token (`[server] consumer_token_file` on rotor's side), read again
    /// before every request so a rotated Secret is picked up.
    pub token_file: PathBuf,
    /// `None`: the pod name (`POD_NAME`, from the downward API), else the hostname.
    pub consumer_id: Option<String>,
    /// The workload this pod belongs to; when set, every reload first asks rotor for a
    /// permit, so at most `[consumers] max_concurrent_reloads` pods of it reload at once.
    pub workload: Option<String>,
    /// How often the full report is sent (it is also sent at once after a change).
    pub heartbeat: Duration,
    /// The longest a reload waits for a permit (rotor unreachable or answering 429) before
    /// it runs without one: a stale credential is an outage, one reload too many at once
    /// is not.
    pub permit_wait: Duration,
    /// Bound of one request to rotor.
    pub timeout: Duration,
    /// A private CA for an `https://` rotor_url.
    pub ca_file: Option<PathBuf>,
    /// Plain `http://` to a host that is not loopback was accepted explicitly.
    pub allow_insecure_http: bool,
}

/// Whether `text` has an `[agent]` table at its top level: then it is an agent
/// configuration. A document that does not parse is not one (its syntax errors are reported
/// by whichever loader reads it).
pub(super) fn is_agent_document(text: &str) -> bool {
    // A million `[[secrets]]` tables are gigabytes as a TOML tree: look in what the fast
    // path's scanner leaves (every table but the `[[secrets]]` entries it takes) when that
    // parses.
    if let Some(split) = super::fast::split(text) {
        let (doc, errors) = DeTable::parse_recoverable(&split.residual.text);
        if errors.is_empty() {
            return doc.get_ref().contains_key(AGENT_TABLE);
        }
    }
    let (doc, _) = DeTable::parse_recoverable(text);
    doc.get_ref().contains_key(AGENT_TABLE)
}

/// Checks that `name` can be a consumer id or a workload name: what Kubernetes allows in a
/// pod or object name (letters, digits, `-`, `.`, `_`, starting and ending with a letter or
/// digit, at most 253 characters). The reason when it cannot.
pub fn check_consumer_name(name: &str) -> Result<(), &'static str> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 253 {
        return Err("must be 1 to 253 characters long");
    }
    if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err("may hold only letters, digits, '-', '.' and '_'");
    }
    let edge = |b: &u8| b.is_ascii_alphanumeric();
    if !bytes.first().is_some_and(edge) || !bytes.last().is_some_and(edge) {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgentConfig {
    agent: Option<Spanned<RawAgent>>,
    watch: Option<Spanned<RawWatch>>,
    #[serde(default)]
    mounts: Vec<Spanned<RawMount>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    rotor_url: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    consumer_id: Option<Spanned<String>>,
    workload: Option<Spanned<String>>,
    heartbeat: Option<Spanned<String>>,
    permit_wait: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    allow_insecure_http: Option<Spanned<bool>>,
}

impl AgentConfig {
    /// Validates agent configuration text; `origin` names it in messages.
    pub fn from_str(text: &str, origin: &str) -> Result<AgentConfig, ConfigErrors> {
        let mut diag = Diagnostics::new(text);
        let (mut doc, syntax_errors) = DeTable::parse_recoverable(text);
        if !syntax_errors.is_empty() {
            for e in syntax_errors {
                diag.at(e.span(), "syntax", e.message().to_owned());
            }
            return Err(diag.finish(origin));
        }
        let root = doc.get_mut();
        // The tables of a `rotor run` file get their own message: the file mixes two kinds.
        let service_keys: Vec<(String, std::ops::Range<usize>)> = root
            .iter()
            .map(|(k, _)| (k.get_ref().to_string(), k.span()))
            .filter(|(k, _)| {
                schema::ROOT.iter().any(|field| field.name == k)
                    && !ROOT.iter().any(|field| field.name == k)
            })
            .collect();
        let mut pruned = HashSet::new();
        for (key, span) in service_keys {
            diag.at(
                Some(span),
                &key,
                "belongs to a `rotor run` configuration; this file has an [agent] table, so it \
                 is a `rotor agent` configuration, which holds only [agent], [[mounts]] and \
                 [watch] (an agent has no store, secrets or policies: keep the two in separate \
                 files)",
            );
            root.remove(key.as_str());
            pruned.insert(key);
        }
        pruned.extend(schema::check_document_with(&mut diag, root, ROOT));
        let raw = match RawAgentConfig::deserialize(toml::Deserializer::from(doc)) {
            Ok(raw) => raw,
            Err(e) => {
                // Unreachable while the schema and the raw structs agree.
                diag.at(e.span(), "document", e.message().to_owned());
                return Err(diag.finish(origin));
            }
        };
        let mut v = Validator {
            diag: &mut diag,
            pruned: &pruned,
        };
        let config = validate(&mut v, &raw);
        if !diag.is_empty() {
            return Err(diag.finish(origin));
        }
        Ok(config)
    }
}

fn validate(v: &mut Validator<'_, '_>, raw: &RawAgentConfig) -> AgentConfig {
    let table = raw.agent.as_ref().map(|a| a.span());
    let agent = raw.agent.as_ref().map(|a| a.get_ref());
    let rotor_url = rotor_url(v, table.clone(), agent.and_then(|a| a.rotor_url.as_ref()));
    let plain_http = rotor_url.scheme() == "http";
    let allow_insecure_http = agent
        .and_then(|a| a.allow_insecure_http.as_ref())
        .is_some_and(|a| *a.get_ref());
    // The consumer token crosses the network with every request. In a cluster rotor's
    // listener is plain http behind its Service today, so this is allowed, but only when
    // said explicitly, as for a Vault store's address.
    if plain_http
        && !allow_insecure_http
        && !crate::http_client::url_is_loopback(&rotor_url)
        && let Some(u) = agent.and_then(|a| a.rotor_url.as_ref())
    {
        v.diag.value(
            u.span(),
            "agent.rotor_url",
            "plain http to a host that is not loopback (127.0.0.0/8, ::1, localhost) sends the \
             consumer token unencrypted: use https://, or set allow_insecure_http = true in \
             [agent] to accept that (e.g. rotor's Service inside the cluster)",
        );
    }
    let token_file = match agent.and_then(|a| a.token_file.as_ref()) {
        None => {
            v.missing(
                table.clone(),
                "agent.token_file",
                "missing key `token_file`: the file holding the consumer token (rotor's [server] consumer_token_file)",
            );
            PathBuf::new()
        }
        Some(t) => v.non_empty_path("agent.token_file", Some(t), ""),
    };
    let name = |v: &mut Validator<'_, '_>, key: &str, value: Option<&Spanned<String>>| {
        let value = value?;
        match check_consumer_name(value.get_ref()) {
            Ok(()) => Some(value.get_ref().clone()),
            Err(why) => {
                v.diag.value(value.span(), key, why);
                None
            }
        }
    };
    let consumer_id = name(
        v,
        "agent.consumer_id",
        agent.and_then(|a| a.consumer_id.as_ref()),
    );
    let workload = name(v, "agent.workload", agent.and_then(|a| a.workload.as_ref()));
    let heartbeat_raw = agent.and_then(|a| a.heartbeat.as_ref());
    let heartbeat = v.duration_or("agent.heartbeat", heartbeat_raw, DEFAULT_HEARTBEAT);
    if let Some(h) = heartbeat_raw
        && !(HEARTBEAT_RANGE.0..=HEARTBEAT_RANGE.1).contains(&heartbeat)
    {
        v.diag.value(
            h.span(),
            "agent.heartbeat",
            format!(
                "must be between {} and {}",
                format_duration(HEARTBEAT_RANGE.0),
                format_duration(HEARTBEAT_RANGE.1)
            ),
        );
    }
    let permit_wait = v.duration_or(
        "agent.permit_wait",
        agent.and_then(|a| a.permit_wait.as_ref()),
        DEFAULT_PERMIT_WAIT,
    );
    let timeout_raw = agent.and_then(|a| a.timeout.as_ref());
    let timeout = v.duration_or("agent.timeout", timeout_raw, DEFAULT_TIMEOUT);
    if let Some(t) = timeout_raw
        && timeout.is_zero()
    {
        v.diag
            .value(t.span(), "agent.timeout", "must be longer than zero");
    }
    let ca_file = v.ca_file(
        "agent.ca_file",
        agent.and_then(|a| a.ca_file.as_ref()),
        plain_http,
    );

    let watch = v.watch(raw.watch.as_ref());
    if !watch.enabled
        && let Some(e) = raw
            .watch
            .as_ref()
            .and_then(|w| w.get_ref().enabled.as_ref())
    {
        v.diag.value(
            e.span(),
            "watch.enabled",
            "an agent exists to watch its mounts; remove the key (or the agent)",
        );
    }
    // The agent knows no managed secrets: what a mount's `files` names is rotor's to check
    // when the report arrives (404 naming the secret), so the mentions are not checked here.
    let mounts = v.mounts(&raw.mounts, &mut Vec::new());
    if raw.mounts.is_empty() {
        v.missing(
            None,
            "mounts",
            "an agent configuration needs at least one [[mounts]] table with `path` and `files`",
        );
    } else if raw.mounts.iter().all(|m| {
        m.get_ref()
            .files
            .as_ref()
            .is_none_or(|files| files.get_ref().is_empty())
    }) {
        v.diag.at(
            raw.mounts.first().map(|m| m.span()),
            "mounts",
            "no mount maps a file to a secret (files = { \"password\" = \"tenant/key\" }): the \
             agent would have nothing to report",
        );
    }
    AgentConfig {
        agent: AgentSettings {
            rotor_url,
            token_file,
            consumer_id,
            workload,
            heartbeat,
            permit_wait,
            timeout,
            ca_file,
            allow_insecure_http,
        },
        watch,
        mounts,
    }
}

/// `agent.rotor_url`: an `http(s)://` URL with a host, no userinfo (the token comes from
/// `token_file`), no query or fragment. A placeholder is returned after an error.
fn rotor_url(
    v: &mut Validator<'_, '_>,
    table: Option<std::ops::Range<usize>>,
    value: Option<&Spanned<String>>,
) -> url::Url {
    let placeholder = || url::Url::parse("http://127.0.0.1:8080").expect("a valid URL");
    let Some(value) = value else {
        v.missing(
            table,
            "agent.rotor_url",
            "missing key `rotor_url`: rotor's address, e.g. \"http://rotor.rotor.svc:8080\"",
        );
        return placeholder();
    };
    let why = match url::Url::parse(value.get_ref().trim()) {
        Err(_) => "is not a URL such as \"http://rotor.rotor.svc:8080\"",
        Ok(u) if !matches!(u.scheme(), "http" | "https") => "must be an http:// or https:// URL",
        Ok(u) if u.host_str().is_none_or(str::is_empty) => "has no host",
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            "must not carry credentials: the consumer token is read from token_file"
        }
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            "must not have a query or fragment"
        }
        Ok(u) => return u,
    };
    v.diag.value(value.span(), "agent.rotor_url", why);
    placeholder()
}
