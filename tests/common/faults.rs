//! Switchable loopback services for the fault matrix (`tests/suite/faults.rs`): a TCP
//! proxy on a fixed port that can refuse connections (the server behind it unreachable)
//! and come back, an HTTP receiver that can be down or slow and records what it was sent,
//! a private `redis-server`
//! that can be stopped and started again on the same port and aclfile, and the `rotor`
//! binary with its store on a small tmpfs of its own that a test can fill.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use super::http::request;
use super::rotor_bin::{RotorBin, free_port};
use super::wait::{eventually, eventually_blocking};

type Handler = Arc<dyn Fn(TcpStream) -> tokio::task::JoinHandle<()> + Send + Sync>;

/// A listener on a fixed loopback port whose accepting can be switched off (connections
/// refused, open ones cut) and on again.
struct Switch {
    port: u16,
    handler: Handler,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Switch {
    async fn start(handler: Handler) -> Switch {
        let s = Switch {
            port: free_port(),
            handler,
            tasks: Arc::default(),
        };
        s.up().await;
        s
    }

    async fn up(&self) {
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let listener = TcpListener::bind(addr).await.expect("the same port again");
        let handler = self.handler.clone();
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let task = handler(conn);
                tasks.lock().unwrap().push(task.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    fn down(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.down();
    }
}

/// Forwards every connection on its port to `upstream`; [`TcpProxy::down`] makes the
/// upstream unreachable (refused) as a network partition or a stopped server would.
pub struct TcpProxy {
    switch: Switch,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let handler: Handler = Arc::new(move |mut conn: TcpStream| {
            tokio::spawn(async move {
                if let Ok(mut up) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                }
            })
        });
        TcpProxy {
            switch: Switch::start(handler).await,
        }
    }

    pub fn port(&self) -> u16 {
        self.switch.port
    }

    pub fn down(&self) {
        self.switch.down();
    }

    pub async fn up(&self) {
        self.switch.up().await;
    }
}

/// One request an [`HttpReceiver`] read, as a webhook target posts a step: the operation,
/// the version, and a SHA-256 of the value rather than the value, so that an assertion
/// comparing them can never print one. A field is `None` when the body has no such member
/// (a notification's body, or a `promote`, which carries no value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub operation: Option<String>,
    pub version: Option<u64>,
    pub value_sha256: Option<String>,
}

impl Seen {
    fn parse(body: &[u8]) -> Seen {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        Seen {
            operation: json["operation"].as_str().map(str::to_owned),
            version: json["version"].as_u64(),
            value_sha256: json["value"].as_str().map(|v| sha256_hex(v.as_bytes())),
        }
    }

    /// Whether this is `operation` for `version`.
    pub fn is(&self, operation: &str, version: u64) -> bool {
        self.operation.as_deref() == Some(operation) && self.version == Some(version)
    }
}

/// Hex SHA-256 of `bytes`: how the tests compare a value the receiver saw with a stored one.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// An HTTP receiver answering `204` to every request, counting them and recording each
/// one as it arrives; it can be down (connections refused) or slow (each answer delayed).
pub struct HttpReceiver {
    switch: Switch,
    hits: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl HttpReceiver {
    pub async fn start() -> HttpReceiver {
        let hits = Arc::new(AtomicUsize::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (h, d, r) = (hits.clone(), delay_ms.clone(), seen.clone());
        let handler: Handler = Arc::new(move |mut conn: TcpStream| {
            let (hits, delay_ms, seen) = (h.clone(), d.clone(), r.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = vec![0u8; 8192];
                // Headers, then as many body bytes as Content-Length says.
                let body_at = loop {
                    if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break end + 4..end + 4 + len;
                        }
                    }
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                };
                // Recorded on arrival: a slow receiver acts on a request and only answers
                // late, so what it saw includes the requests the sender gave up on.
                seen.lock().unwrap().push(Seen::parse(&got[body_at]));
                let delay = delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                hits.fetch_add(1, Ordering::SeqCst);
                let _ = conn
                    .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                    .await;
            })
        });
        HttpReceiver {
            switch: Switch::start(handler).await,
            hits,
            delay_ms,
            seen,
        }
    }

    /// Every request read so far, in order of arrival (answered or not).
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.switch.port)
    }

    /// Requests answered so far (a slow answer counts once it is sent).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn down(&self) {
        self.switch.down();
    }

    pub async fn up(&self) {
        self.switch.up().await;
    }

    /// Every answer from now on waits `delay` first.
    pub fn slow(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

/// A private `redis-server` on a fixed port with an aclfile, stopped (SIGKILL, as a crash)
/// and started again on the same port and files. `None` from [`RedisProcess::start`] when
/// the binary is missing outside CI.
pub struct RedisProcess {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisProcess {
    pub fn start() -> Option<RedisProcess> {
        if Command::new("redis-server")
            .arg("--version")
            .output()
            .is_err()
        {
            super::ci::skip_or_fail("redis-server", "not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("users.acl"), "").unwrap();
        let mut r = RedisProcess {
            child: None,
            port: free_port(),
            dir,
        };
        r.start_again();
        Some(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn start_again(&mut self) {
        let dir = self.dir.path();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .arg("--aclfile")
            .arg(dir.join("users.acl"))
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let port = self.port;
        eventually_blocking(Duration::from_secs(20), "redis-server to answer", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `rotor run` in a mount namespace of its own (`unshare -m`) in which `dir/store` is a
/// tmpfs of a few MiB: the store's filesystem can be filled up without touching the
/// machine's. The tmpfs exists only in that namespace (private propagation, gone with the
/// process), so [`Self::fill`] and [`Self::empty`] work in it through `nsenter`.
pub struct TmpfsRotor {
    pub bin: RotorBin,
    store_dir: PathBuf,
}

impl TmpfsRotor {
    /// Starts rotor in `dir` with `config` (whose store lives under `store/`) on `port`,
    /// with a tmpfs of `size` (`mount -o size=`) at `dir/store`, and waits until `/readyz`
    /// is 200. `None` outside CI when mount namespaces are not allowed here.
    pub async fn start(dir: &Path, port: u16, config: &str, size: &str) -> Option<TmpfsRotor> {
        let allowed = Command::new("unshare")
            .args(["-m", "true"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !allowed {
            super::ci::skip_or_fail("unshare -m", "mount namespaces are not allowed here");
            return None;
        }
        let store_dir = dir.join("store");
        std::fs::create_dir_all(&store_dir).unwrap();
        std::fs::write(dir.join("rotor.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("rotor.log")).unwrap();
        // `exec`: unshare and sh become rotor, one pid, so killing it ends the namespace.
        let script = format!(
            "mount -t tmpfs -o size={size},mode=0700 tmpfs store && exec {} run --config rotor.toml",
            env!("CARGO_BIN_EXE_rotor")
        );
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("unshare starts");
        let mut bin = RotorBin {
            child,
            addr: ([127, 0, 0, 1], port).into(),
            dir: dir.to_owned(),
        };
        eventually(
            Duration::from_secs(30),
            "rotor on tmpfs to be ready",
            async || {
                if let Some(status) = bin.child.try_wait().unwrap() {
                    panic!("rotor exited early ({status}); log:\n{}", bin.log());
                }
                tokio::net::TcpStream::connect(bin.addr).await.is_ok()
                    && request(bin.addr, "GET", "/readyz", None, None).await.status == 200
            },
        )
        .await;
        Some(TmpfsRotor { bin, store_dir })
    }

    /// Runs `script` with `sh` inside rotor's mount namespace, where `$STORE` is the tmpfs.
    fn in_namespace(&self, script: &str) -> std::process::Output {
        Command::new("nsenter")
            .args([
                "-t",
                &self.bin.child.id().to_string(),
                "-m",
                "--",
                "sh",
                "-c",
                script,
            ])
            .env("STORE", &self.store_dir)
            .output()
            .expect("nsenter runs")
    }

    /// Fills the tmpfs with a filler file until the filesystem is full (ENOSPC).
    pub fn fill(&self) {
        let out = self.in_namespace(
            r#"cat /dev/zero > "$STORE/filler" 2>/dev/null; df -k "$STORE" | tail -n 1"#,
        );
        let df = String::from_utf8_lossy(&out.stdout);
        let avail = df
            .split_whitespace()
            .nth(3)
            .and_then(|a| a.parse::<u64>().ok());
        assert_eq!(avail, Some(0), "the tmpfs is not full: {df}");
    }

    /// Removes the filler file: the filesystem has room again.
    pub fn empty(&self) {
        let out = self.in_namespace(r#"rm "$STORE/filler""#);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
