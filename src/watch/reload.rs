//! Running one reload action once. Retries, backoff, coalescing and the global rate
//! limit are the watcher actor's; this module only knows how to make the call.
//!
//! - `http`: one HTTP/1.1 request with an empty body through the shared client
//!   ([`crate::http_client`]: `https://` certificates verified, optional `ca_file`,
//!   redirects not followed, no proxy from the environment, as the usual endpoint is on the
//!   pod's loopback); success is the expected status, or any 2xx.
//! - `signal`: reads the pid file at every reload (the workload may have restarted),
//!   refuses pids below 1 (`kill(0)` or `kill(-1)` would signal a whole group), sends it.
//! - `exec`: runs the argv without a shell, stdin/stdout/stderr closed, killed on
//!   timeout; success is exit status 0. It does not inherit rotor's environment: it gets
//!   `PATH`, `HOME`, `LANG` and the names its `env` key allow-lists
//!   ([`crate::hook::clean_env`]). Its stderr is not read: the command may print the
//!   mounted files, which rotor holds only as fingerprints and so could not mask; the exit
//!   status is what the error reports.
//!
//! Errors name the action's target (URL, pid file, program), never anything read from a
//! secret.
//!
//! A [`ReloadGate`] lets whoever runs the watcher decide when each attempt may start and
//! hear how the reload ended: `rotor agent` asks rotor for a reload permit there, so a
//! fleet of pods never reloads all at once. `rotor run` has none.

pub mod config;

use std::path::Path;
use std::time::Duration;

use self::config::{HttpUrl, ReloadAction};

/// Wrapped around every reload attempt of a mount (see the module doc). The futures are
/// `'static` so the watcher's reload task can hold them; implementations clone what they
/// need.
pub trait ReloadGate: Send + Sync {
    /// Waits until an attempt to reload `mount` may start. What it returns (a permit, or
    /// `None` when the attempt runs without one) is handed to [`ReloadGate::release`] once
    /// the attempt has ended, whatever its outcome.
    fn acquire(&self, mount: &Path) -> futures::future::BoxFuture<'static, Option<String>>;
    /// The attempt that `acquire` let start has ended.
    fn release(
        &self,
        mount: &Path,
        permit: Option<String>,
    ) -> futures::future::BoxFuture<'static, ()>;
    /// The reload (all its attempts) ended: succeeded or gave up.
    fn finished(&self, mount: &Path, succeeded: bool);
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("reload request to {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reload request to {url} answered {status}, expected {expected}")]
    Status {
        url: String,
        status: u16,
        expected: String,
    },
    #[error("reload {what} did not finish within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
    #[error("pid file {path}: {reason}")]
    PidFile { path: String, reason: String },
    #[error("cannot send {signal} to pid {pid}: {source}")]
    Signal {
        signal: String,
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run reload command {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("reload command {program} failed: {status}")]
    Exit { program: String, status: String },
}

impl ReloadError {
    /// Bounded label for metrics and events.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReloadError::Http { .. } => "http",
            ReloadError::Status { .. } => "status",
            ReloadError::Timeout { .. } => "timeout",
            ReloadError::PidFile { .. } => "pid_file",
            ReloadError::Signal { .. } => "signal",
            ReloadError::Spawn { .. } => "spawn",
            ReloadError::Exit { .. } => "exit",
        }
    }
}

/// Runs `action` once.
pub async fn run(action: &ReloadAction) -> Result<(), ReloadError> {
    match action {
        ReloadAction::Http {
            url,
            method,
            ca_file,
            proxy,
            timeout,
            expected_status: expected,
        } => {
            let status =
                http_status(url, method, ca_file.as_deref(), proxy.as_ref(), *timeout).await?;
            let ok = match expected {
                Some(want) => status == *want,
                None => (200..300).contains(&status),
            };
            if ok {
                Ok(())
            } else {
                Err(ReloadError::Status {
                    url: url.to_string(),
                    status,
                    expected: expected.map_or_else(|| "2xx".to_owned(), |s| s.to_string()),
                })
            }
        }
        ReloadAction::Signal {
            name,
            number,
            pid_file,
        } => {
            let path = pid_file.display().to_string();
            let text =
                tokio::fs::read_to_string(pid_file)
                    .await
                    .map_err(|e| ReloadError::PidFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
            let pid: i32 = text
                .trim()
                .parse()
                .ok()
                .filter(|p| *p >= 1)
                .ok_or_else(|| ReloadError::PidFile {
                    path: path.clone(),
                    reason: "does not hold a process id (a whole number of at least 1)".into(),
                })?;
            // SAFETY: kill(2) with a positive pid and a valid signal number has no memory
            // effects; errors come back through errno.
            let r = unsafe { libc::kill(pid, *number) };
            if r == 0 {
                Ok(())
            } else {
                Err(ReloadError::Signal {
                    signal: name.clone(),
                    pid,
                    source: std::io::Error::last_os_error(),
                })
            }
        }
        ReloadAction::Exec {
            command,
            timeout,
            env,
        } => {
            let program = command.first().cloned().unwrap_or_default();
            let mut cmd = tokio::process::Command::new(&program);
            crate::hook::clean_env(&mut cmd, env);
            let mut child = cmd
                .args(&command[1.min(command.len())..])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| ReloadError::Spawn {
                    program: program.clone(),
                    source,
                })?;
            let status = match tokio::time::timeout(*timeout, child.wait()).await {
                Ok(r) => r.map_err(|source| ReloadError::Spawn {
                    program: program.clone(),
                    source,
                })?,
                Err(_) => {
                    let _ = child.kill().await;
                    return Err(ReloadError::Timeout {
                        what: format!("command {program}"),
                        timeout: *timeout,
                    });
                }
            };
            if status.success() {
                Ok(())
            } else {
                Err(ReloadError::Exit {
                    program,
                    status: status.to_string(),
                })
            }
        }
    }
}

/// Sends the request with an empty body and returns the response status; the body is not
/// read. The client's timeout covers connecting, sending and the response head.
async fn http_status(
    url: &HttpUrl,
    method: &str,
    ca_file: Option<&Path>,
    proxy: Option<&crate::http_client::ProxyUrl>,
    timeout: Duration,
) -> Result<u16, ReloadError> {
    let err = |reason: String| ReloadError::Http {
        url: url.to_string(),
        source: std::io::Error::other(reason),
    };
    let client = crate::http_client::client(timeout, ca_file, proxy).map_err(err)?;
    let method = reqwest::Method::from_bytes(method.as_bytes())
        .map_err(|_| err(format!("{method} is not an HTTP method")))?;
    let sent = client
        .request(method, url.to_string())
        .header(reqwest::header::CONTENT_LENGTH, 0)
        .send()
        .await;
    match sent {
        Ok(response) => Ok(response.status().as_u16()),
        Err(e) if e.is_timeout() => Err(ReloadError::Timeout {
            what: format!("request to {url}"),
            timeout,
        }),
        Err(e) => Err(err(crate::http_client::failure(&e, url.tls).into())),
    }
}
