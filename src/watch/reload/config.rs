//! `[[mounts]] reload = { type = "http" | "signal" | "exec", ... }`: the keys of a mount's
//! reload action, their checks, and the [`ReloadConfig`] the watcher runs.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

type S<T> = Spanned<T>;

use crate::config::{Field, Ty, Validator, f, join};

const DEFAULT_RELOAD_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_RELOAD_ATTEMPTS: u32 = 3;
const RELOAD_ATTEMPTS: (i64, i64) = (1, 20);
const DEFAULT_RELOAD_BACKOFF: Duration = Duration::from_secs(1);
/// Signals a reload action may send, by canonical name.
const SIGNALS: &[(&str, i32)] = &[
    ("SIGHUP", libc::SIGHUP),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGUSR2", libc::SIGUSR2),
    ("SIGINT", libc::SIGINT),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGTERM", libc::SIGTERM),
];

const RELOAD_HTTP: &[Field] = &[
    f("url", Ty::Str),
    f("method", Ty::Str),
    f("ca_file", Ty::Str),
    f("proxy", Ty::Str),
    f("timeout", Ty::Duration),
    f("expected_status", Ty::Int),
    f("max_attempts", Ty::Int),
    f("backoff", Ty::Duration),
];
const RELOAD_SIGNAL: &[Field] = &[
    f("signal", Ty::Str),
    f("pid_file", Ty::Str),
    f("max_attempts", Ty::Int),
    f("backoff", Ty::Duration),
];
const RELOAD_EXEC: &[Field] = &[
    f("command", Ty::StrList),
    f("env", Ty::StrList),
    f("timeout", Ty::Duration),
    f("max_attempts", Ty::Int),
    f("backoff", Ty::Duration),
];

/// The reload types and the keys each takes besides `type`, for the schema walk.
pub(crate) const TYPES: &[(&str, &[Field])] = &[
    ("http", RELOAD_HTTP),
    ("signal", RELOAD_SIGNAL),
    ("exec", RELOAD_EXEC),
];

/// All reload keys of all types in one struct (the schema walk checked which keys the
/// named type allows).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReload {
    #[serde(rename = "type")]
    kind: Option<S<String>>,
    url: Option<S<String>>,
    method: Option<S<String>>,
    /// `http` over `https://`: a PEM CA bundle trusted besides the system's roots.
    ca_file: Option<S<String>>,
    /// `http`: the proxy a URL that is not loopback is reached through.
    proxy: Option<S<String>>,
    timeout: Option<S<String>>,
    expected_status: Option<S<i64>>,
    signal: Option<S<String>>,
    pid_file: Option<S<String>>,
    command: Option<S<Vec<S<String>>>>,
    /// `exec`: names of rotor's environment variables the command gets.
    env: Option<S<Vec<S<String>>>>,
    max_attempts: Option<S<i64>>,
    backoff: Option<S<String>>,
}

/// Checks the reload action at `path`; `None` when it is refused (reported) or its type
/// is unknown (refused by the schema walk).
pub(crate) fn validate(
    v: &mut Validator<'_, '_>,
    path: &str,
    raw: &Spanned<RawReload>,
) -> Option<ReloadConfig> {
    let r = raw.get_ref();
    let kind = r.kind.as_ref()?.get_ref().as_str();
    let timeout = v.duration_or(
        &join(path, "timeout"),
        r.timeout.as_ref(),
        DEFAULT_RELOAD_TIMEOUT,
    );
    let action = match kind {
        "http" => {
            let url = match &r.url {
                None => {
                    v.missing(
                        Some(raw.span()),
                        &join(path, "url"),
                        "missing key `url`, e.g. \"http://127.0.0.1:3000/-/reload\"",
                    );
                    None
                }
                Some(u) => match parse_http_url(u.get_ref()) {
                    Ok(url) => Some(url),
                    Err(why) => {
                        v.diag.value(u.span(), &join(path, "url"), why);
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
                        v.diag.value(
                            m.span(),
                            &join(path, "method"),
                            "must be an HTTP method in capitals, e.g. \"POST\"",
                        );
                        None
                    }
                }
            };
            let expected_status = v
                .int_in(
                    &join(path, "expected_status"),
                    r.expected_status.as_ref(),
                    (100, 599),
                    "an HTTP status",
                )
                .ok()?
                .map(|n| n as u16);
            let plain_http = url.as_ref().is_some_and(|u| !u.tls);
            let ca_file = v.ca_file(&join(path, "ca_file"), r.ca_file.as_ref(), plain_http);
            let proxy = v.proxy(&join(path, "proxy"), r.proxy.as_ref());
            ReloadAction::Http {
                url: url?,
                method: method?,
                ca_file,
                proxy,
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
                            v.diag.value(
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
                    v.missing(
                        Some(raw.span()),
                        &join(path, "pid_file"),
                        "missing key `pid_file`: the file holding the pid to signal",
                    );
                    None
                }
                Some(p) if p.get_ref().trim().is_empty() => {
                    v.diag
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
                    v.missing(
                        Some(raw.span()),
                        &join(path, "command"),
                        "missing key `command`: the program and its arguments, e.g. [\"/usr/bin/app-reload\"]",
                    );
                    None
                }
                Some(c) if c.get_ref().first().is_none_or(|p| p.get_ref().is_empty()) => {
                    v.diag.value(
                        c.span(),
                        &join(path, "command"),
                        "must start with the program to run",
                    );
                    None
                }
                Some(c) => Some(c.get_ref().iter().map(|a| a.get_ref().clone()).collect()),
            };
            let env = v.env_names(&join(path, "env"), r.env.as_ref());
            ReloadAction::Exec {
                command: command?,
                timeout,
                env,
            }
        }
        // The schema walk refused other types.
        _ => return None,
    };
    if timeout.is_zero() {
        return None;
    }
    let before = v.diag.len();
    let max_attempts = v.int_or(
        &join(path, "max_attempts"),
        r.max_attempts.as_ref(),
        RELOAD_ATTEMPTS,
        "max_attempts",
        DEFAULT_RELOAD_ATTEMPTS,
    );
    if v.diag.len() > before {
        // A bad max_attempts refuses the action before its backoff is checked.
        return None;
    }
    let backoff = v.duration_or(
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

/// A mount's reload action, with its retry budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadConfig {
    pub action: ReloadAction,
    /// Attempts before a reload is reported as failed (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the first retry; doubles with each further one.
    pub backoff: Duration,
}

/// How a workload is told to reload its secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadAction {
    /// An HTTP/1.1 request to `http://` or `https://`.
    Http {
        url: HttpUrl,
        method: String,
        /// `https://` only: a PEM CA bundle trusted besides the system's roots.
        ca_file: Option<PathBuf>,
        /// The proxy the request goes through, unless the URL is loopback.
        proxy: Option<crate::http_client::ProxyUrl>,
        timeout: Duration,
        /// The status that counts as success; any 2xx when `None`.
        expected_status: Option<u16>,
    },
    /// A signal to the process whose pid is in `pid_file` (read at every reload).
    Signal {
        /// Canonical name, e.g. `SIGHUP`.
        name: String,
        number: i32,
        pid_file: PathBuf,
    },
    /// A command (argv, no shell), killed after `timeout`.
    Exec {
        command: Vec<String>,
        timeout: Duration,
        /// Variables of rotor's environment the command gets besides `PATH`, `HOME` and
        /// `LANG` (see [`crate::hook`]).
        env: Vec<String>,
    },
}

impl ReloadAction {
    /// The action's `type` (`http`, `signal` or `exec`): a bounded metric label.
    pub fn type_name(&self) -> &'static str {
        match self {
            ReloadAction::Http { .. } => "http",
            ReloadAction::Signal { .. } => "signal",
            ReloadAction::Exec { .. } => "exec",
        }
    }
}

/// A parsed `http[s]://host:port/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https://`: the request goes over TLS.
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.path)
    }
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
