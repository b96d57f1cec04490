//! `[[notify]] type = "log" | "slack" | "webhook"`: the keys of a notifier channel, their
//! checks, the validated [`NotifyConfig`], and [`ChannelConfig::build`], which turns it
//! into the [`Sink`] the channel's delivery loop posts to.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use zeroize::Zeroizing;

use super::channel::Sink;
use super::{EVENT_KINDS, Severity};
use crate::config::{Field, Ty, Validator, f, join};
use crate::duration::format_duration;
use crate::http_client::ProxyUrl;

type S<T> = Spanned<T>;

const NOTIFY_LOG: &[Field] = &[
    f("name", Ty::Str),
    f("events", Ty::StrList),
    f("min_severity", Ty::Str),
];
/// The keys of an HTTP channel, in the order "expected one of" lists them; `$extra` (the
/// keys of one type only) come after `url_file`.
macro_rules! http_channel_fields {
    ($($extra:expr),*) => {
        &[
            f("name", Ty::Str),
            f("events", Ty::StrList),
            f("min_severity", Ty::Str),
            f("url", Ty::Str),
            f("url_file", Ty::Str),
            $($extra,)*
            f("ca_file", Ty::Str),
            f("queue_capacity", Ty::Int),
            f("max_attempts", Ty::Int),
            f("retry_backoff", Ty::Duration),
            f("retry_backoff_max", Ty::Duration),
            f("timeout", Ty::Duration),
            f("proxy", Ty::Str),
        ]
    };
}
const NOTIFY_SLACK: &[Field] = http_channel_fields!();
const NOTIFY_WEBHOOK: &[Field] = http_channel_fields!(f("secret_file", Ty::Str));

/// The channel types and the keys each takes besides `type`, for the schema walk.
pub(crate) const TYPES: &[(&str, &[Field])] = &[
    ("log", NOTIFY_LOG),
    ("slack", NOTIFY_SLACK),
    ("webhook", NOTIFY_WEBHOOK),
];

/// All channel keys of all types in one struct: the schema walk has already checked that
/// only the keys of the named type are present.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNotify {
    #[serde(rename = "type")]
    kind: Option<S<String>>,
    name: Option<S<String>>,
    events: Option<S<Vec<S<String>>>>,
    min_severity: Option<S<String>>,
    url: Option<S<String>>,
    url_file: Option<S<String>>,
    secret_file: Option<S<String>>,
    /// PEM file of a CA to trust for an `https://` receiver, besides the system's roots.
    ca_file: Option<S<String>>,
    queue_capacity: Option<S<i64>>,
    max_attempts: Option<S<i64>>,
    retry_backoff: Option<S<String>>,
    retry_backoff_max: Option<S<String>>,
    timeout: Option<S<String>>,
    /// The proxy requests to a receiver that is not loopback go through.
    proxy: Option<S<String>>,
}

/// One `[[notify]]` channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// Unique; the `channel` label of its metrics. Defaults to `<type>` or `<type>-<n>`.
    pub name: String,
    pub channel: ChannelConfig,
    /// Event kinds taken ([`EVENT_KINDS`]); empty means all.
    pub events: Vec<String>,
    pub min_severity: Severity,
    /// Events waiting for delivery; more are dropped (and counted).
    pub queue_capacity: usize,
    /// Attempts per event, the first included.
    pub max_attempts: u32,
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// Per attempt (connect and response).
    pub timeout: Duration,
    /// A CA (PEM) to trust for an `https://` receiver, besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The proxy requests go through, unless the receiver is loopback.
    pub proxy: Option<ProxyUrl>,
}

/// Where a channel delivers. URLs and keys may be credentials: never log them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelConfig {
    /// Structured log lines.
    Log,
    /// A Slack-compatible incoming webhook; the URL inline or read from a file at start.
    Slack { url: UrlSource },
    /// A generic JSON webhook signed with the key in `secret_file`.
    Webhook {
        url: UrlSource,
        secret_file: PathBuf,
    },
}

#[derive(Clone, PartialEq, Eq)]
pub enum UrlSource {
    Inline(String),
    /// Read (and trimmed) when the notifier starts.
    File(PathBuf),
}

impl std::fmt::Debug for UrlSource {
    // A webhook URL is a credential (Slack's path is its token): Debug shows the host only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlSource::Inline(u) => {
                let host = u
                    .parse::<hyper::Uri>()
                    .ok()
                    .and_then(|u| u.authority().map(|a| a.to_string()))
                    .unwrap_or_default();
                write!(f, "Inline(http://{host}/…)")
            }
            UrlSource::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

impl ChannelConfig {
    /// The sink of an HTTP channel called `channel` (`None` for the log channel): a
    /// `url_file` and the webhook's `secret_file` are read now. Errors name the channel and
    /// the file, never the URL or the key.
    pub fn build(&self, channel: &str) -> Result<Option<Sink>, String> {
        Ok(match self {
            ChannelConfig::Log => None,
            ChannelConfig::Slack { url } => Some(Sink::Slack {
                uri: read_url(channel, url)?,
            }),
            ChannelConfig::Webhook { url, secret_file } => {
                let key = read_secret(channel, secret_file)?;
                Some(Sink::Webhook {
                    uri: read_url(channel, url)?,
                    key,
                })
            }
        })
    }
}

/// The channel's URL; a `url_file` is read now.
fn read_url(channel: &str, url: &UrlSource) -> Result<hyper::Uri, String> {
    let text = match url {
        UrlSource::Inline(u) => u.clone(),
        UrlSource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| {
                format!(
                    "notify channel {channel}: cannot read url_file {}: {e}",
                    path.display()
                )
            })?
            .trim()
            .to_owned(),
    };
    check_http_url(&text)
        .map_err(|problem| format!("notify channel {channel}: the URL {problem}"))?;
    text.parse::<hyper::Uri>()
        .map_err(|_| format!("notify channel {channel}: the URL does not parse"))
}

/// The signing key of a webhook channel, trimmed of surrounding whitespace.
fn read_secret(channel: &str, path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let raw = Zeroizing::new(std::fs::read(path).map_err(|e| {
        format!(
            "notify channel {channel}: cannot read secret_file {}: {e}",
            path.display()
        )
    })?);
    let key = Zeroizing::new(raw.trim_ascii().to_vec());
    if key.is_empty() {
        return Err(format!(
            "notify channel {channel}: secret_file {} is empty",
            path.display()
        ));
    }
    Ok(key)
}

const NOTIFY_MAX_ATTEMPTS: (i64, i64) = (1, 100);
const DEFAULT_NOTIFY_MAX_ATTEMPTS: u32 = 5;
const DEFAULT_NOTIFY_RETRY_BACKOFF: Duration = Duration::from_secs(1);
const DEFAULT_NOTIFY_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(60);
const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks every `[[notify]]` entry; an entry with a problem (reported) is left out.
pub(crate) fn validate(v: &mut Validator<'_, '_>, raw: &[Spanned<RawNotify>]) -> Vec<NotifyConfig> {
    let mut out = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, spanned) in raw.iter().enumerate() {
        let path = format!("notify[{i}]");
        let n = spanned.get_ref();
        let errors_before = v.diag.len();
        // The schema walk removed entries without a known type.
        let Some(kind) = n.kind.as_ref().map(|k| k.get_ref().as_str()) else {
            continue;
        };
        let name = match &n.name {
            Some(value) => {
                let text = value.get_ref();
                if text.is_empty()
                    || text.len() > 64
                    || !text
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    v.diag.value(
                        value.span(),
                        &join(&path, "name"),
                        "a channel name has 1 to 64 characters from a-z, A-Z, 0-9, '_', '-'",
                    );
                }
                text.clone()
            }
            None => match raw
                .iter()
                .filter(|r| r.get_ref().kind.as_ref().map(|k| k.get_ref().as_str()) == Some(kind))
                .count()
            {
                1 => kind.to_owned(),
                _ => format!("{kind}-{i}"),
            },
        };
        if let Some(first) = names.insert(name.clone(), i) {
            let span = n.name.as_ref().map_or(spanned.span(), |name| name.span());
            v.diag.at(
                Some(span),
                &join(&path, "name"),
                format!(
                    "channel name {name:?} is already used by notify[{first}]; set distinct names"
                ),
            );
        }
        let mut events = Vec::new();
        for (j, e) in n.events.iter().flat_map(|e| e.get_ref().iter()).enumerate() {
            if EVENT_KINDS.contains(&e.get_ref().as_str()) {
                events.push(e.get_ref().clone());
            } else {
                v.diag.value(
                    e.span(),
                    &format!("{path}.events[{j}]"),
                    format!(
                        "unknown event kind; expected one of: {}",
                        EVENT_KINDS.join(", ")
                    ),
                );
            }
        }
        let min_severity = match &n.min_severity {
            None => Severity::Info,
            Some(value) => Severity::parse(value.get_ref()).unwrap_or_else(|| {
                v.diag.value(
                    value.span(),
                    &join(&path, "min_severity"),
                    "expected \"info\", \"warning\" or \"critical\"",
                );
                Severity::Info
            }),
        };
        let queue_capacity = v.int_or(
            &join(&path, "queue_capacity"),
            n.queue_capacity.as_ref(),
            (1, 1_000_000),
            "the queue capacity",
            1_000,
        );
        let url = notify_url(v, &path, spanned, n, kind);
        let channel = match kind {
            "log" => Some(ChannelConfig::Log),
            "slack" => url.map(|url| ChannelConfig::Slack { url }),
            "webhook" => {
                let secret_file = match &n.secret_file {
                    None => {
                        v.missing(
                                Some(spanned.span()),
                                &join(&path, "secret_file"),
                                "missing key `secret_file`: a file holding the key that signs every request (X-Rotor-Signature)",
                            );
                        None
                    }
                    Some(file) if file.get_ref().trim().is_empty() => {
                        v.diag.value(
                            file.span(),
                            &join(&path, "secret_file"),
                            "must not be empty",
                        );
                        None
                    }
                    Some(file) => Some(PathBuf::from(file.get_ref())),
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
        let max_attempts = v.int_or(
            &join(&path, "max_attempts"),
            n.max_attempts.as_ref(),
            NOTIFY_MAX_ATTEMPTS,
            "the number of attempts",
            DEFAULT_NOTIFY_MAX_ATTEMPTS,
        );
        let retry_backoff = v.duration_or(
            &join(&path, "retry_backoff"),
            n.retry_backoff.as_ref(),
            DEFAULT_NOTIFY_RETRY_BACKOFF,
        );
        let retry_backoff_max = v.duration_or(
            &join(&path, "retry_backoff_max"),
            n.retry_backoff_max.as_ref(),
            DEFAULT_NOTIFY_RETRY_BACKOFF_MAX,
        );
        if retry_backoff > retry_backoff_max {
            let span = n
                .retry_backoff_max
                .as_ref()
                .or(n.retry_backoff.as_ref())
                .map_or(spanned.span(), |value| value.span());
            v.diag.value(
                span,
                &join(&path, "retry_backoff_max"),
                format!(
                    "must not be shorter than retry_backoff ({})",
                    format_duration(retry_backoff)
                ),
            );
        }
        let timeout = v.duration_or(
            &join(&path, "timeout"),
            n.timeout.as_ref(),
            DEFAULT_NOTIFY_TIMEOUT,
        );
        if timeout.is_zero()
            && let Some(value) = &n.timeout
        {
            v.diag.value(
                value.span(),
                &join(&path, "timeout"),
                "must be longer than zero",
            );
        }
        let proxy = v.proxy(&join(&path, "proxy"), n.proxy.as_ref());
        let Some(channel) = channel else { continue };
        if v.diag.len() > errors_before {
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
            proxy,
        });
    }
    out
}

/// `url` or `url_file` (exactly one) of an HTTP channel. An inline URL must be
/// `http(s)://host[:port]/path`; it is not quoted back in messages (it may hold a token).
fn notify_url(
    v: &mut Validator<'_, '_>,
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
            v.diag.at(
                Some(f.span()),
                &join(path, "url_file"),
                "set either `url` or `url_file`, not both",
            );
            None
        }
        (None, None) => {
            v.missing(
                    Some(spanned.span()),
                    &join(path, "url"),
                    "missing key `url` (or `url_file`, a file holding the URL): where the channel posts",
                );
            None
        }
        (None, Some(f)) if f.get_ref().trim().is_empty() => {
            v.diag
                .value(f.span(), &join(path, "url_file"), "must not be empty");
            None
        }
        (None, Some(f)) => Some(UrlSource::File(PathBuf::from(f.get_ref()))),
        (Some(u), None) => match check_http_url(u.get_ref()) {
            Ok(()) => Some(UrlSource::Inline(u.get_ref().clone())),
            Err(problem) => {
                // `at`, not `value`: the URL may carry a token and is not quoted.
                v.diag.at(Some(u.span()), &join(path, "url"), problem);
                None
            }
        },
    }
}

/// Whether `url` is a URL the notifier can post to (`http(s)://host[:port]/...`).
fn check_http_url(url: &str) -> Result<(), String> {
    let uri = url
        .trim()
        .parse::<hyper::Uri>()
        .map_err(|_| "is not a URL such as \"http://relay.local:8080/hook\"".to_owned())?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.authority().is_some() => Ok(()),
        _ => Err("must be an http:// or https:// URL with a host, such as \"https://hooks.slack.com/services/...\"".to_owned()),
    }
}
