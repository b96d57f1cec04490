//! The real `rotor` binary on a random loopback port, for tests that look at it from the
//! outside (`/metrics`, Prometheus scraping it). Killed when dropped.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::http::request;
use super::wait::{eventually, eventually_blocking};

pub fn free_port() -> u16 {
    // Bind port 0, read the port, release it: a small race with other processes, fine
    // for a test machine.
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub struct RotorBin {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

/// A config with the server on `port`, the store in the working directory, fast retries,
/// and `rest` appended (policies, secrets, `[metrics]`, `[[notify]]`).
pub fn config(port: u16, rest: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
admin_token_file = "admin.token"

[store]
type = "embedded"
path = "rotor.redb"
master_key_file = "master.key"

[runtime]
shutdown_timeout = "5s"
retry_backoff = "1s"
retry_backoff_max = "2s"

{rest}
"#
    )
}

/// The `RUST_LOG` of a test that asserts no secret reaches the log: everything every crate
/// logs, so a value that only a debug or trace line would carry (ours or a dependency's)
/// is caught too.
pub const LEAK_CHECK_LOG: &str = "trace";

/// Asserts that `log` was written at [`LEAK_CHECK_LOG`]: a leak check on a log that holds
/// only info lines would miss what debug and trace lines carry.
#[track_caller]
pub fn assert_logged_at_trace(log: &str) {
    assert!(
        log.lines().any(|l| l.contains(" TRACE ")),
        "the leak check needs a log written at RUST_LOG={LEAK_CHECK_LOG}; it has no TRACE line"
    );
}

impl RotorBin {
    /// Starts `rotor run` in `dir` listening on `port` and waits until `/readyz` is 200.
    pub async fn start(dir: &Path, port: u16, config: &str) -> RotorBin {
        RotorBin::start_logging(dir, port, config, "info").await
    }

    /// [`RotorBin::start`] with `RUST_LOG=rust_log` ([`LEAK_CHECK_LOG`] for leak tests).
    pub async fn start_logging(dir: &Path, port: u16, config: &str, rust_log: &str) -> RotorBin {
        let mut r = RotorBin::spawn(dir, port, config, rust_log);
        r.wait_ready().await;
        r
    }

    /// Starts `rotor run` without waiting for it, in a process group of its own, so that
    /// [`RotorBin::kill_group`] ends the hooks it runs as well, as the end of a container
    /// would.
    pub fn spawn(dir: &Path, port: u16, config: &str, rust_log: &str) -> RotorBin {
        RotorBin::spawn_with_env(dir, port, config, rust_log, &[])
    }

    /// [`RotorBin::start`] with `env` added to the child's environment (only the child's:
    /// the test process's own environment is shared by every test and never changed).
    pub async fn start_with_env(
        dir: &Path,
        port: u16,
        config: &str,
        env: &[(&str, &str)],
    ) -> RotorBin {
        let mut r = RotorBin::spawn_with_env(dir, port, config, "info", env);
        r.wait_ready().await;
        r
    }

    /// [`RotorBin::spawn`] with `env` added to the child's environment.
    pub fn spawn_with_env(
        dir: &Path,
        port: u16,
        config: &str,
        rust_log: &str,
        env: &[(&str, &str)],
    ) -> RotorBin {
        use std::os::unix::process::CommandExt as _;
        std::fs::write(dir.join("rotor.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("rotor.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rotor"))
            .args(["run", "--config", "rotor.toml"])
            .current_dir(dir)
            .env("RUST_LOG", rust_log)
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .expect("rotor starts");
        RotorBin {
            child,
            addr: ([127, 0, 0, 1], port).into(),
            dir: dir.to_owned(),
        }
    }

    /// Waits (30 s at most) until `/readyz` is 200; panics with the log if rotor exits.
    pub async fn wait_ready(&mut self) {
        let dir = self.dir.clone();
        let log = || std::fs::read_to_string(dir.join("rotor.log")).unwrap_or_default();
        let what = fmt::from_fn(|f| write!(f, "rotor to be ready in 30 s; log:\n{}", log()));
        eventually(Duration::from_secs(30), what, async || {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("rotor exited early ({status}); log:\n{}", log());
            }
            self.is_ready().await
        })
        .await;
    }

    /// Whether `/readyz` answers 200 now.
    pub async fn is_ready(&self) -> bool {
        tokio::net::TcpStream::connect(self.addr).await.is_ok()
            && request(self.addr, "GET", "/readyz", None, None)
                .await
                .status
                == 200
    }

    /// `kill -9` of rotor and everything in its process group (the hooks it is running),
    /// then waits for rotor's exit.
    pub fn kill_group(mut self) {
        let group = format!("-{}", self.child.id());
        let status = Command::new("kill")
            .args(["-KILL", "--", &group])
            .status()
            .expect("kill -KILL");
        assert!(status.success(), "kill -KILL -- {group}: {status}");
        self.child.wait().expect("rotor reaped");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rotor.log")).unwrap_or_default()
    }

    /// `POST /admin/secrets/rotate` with the token rotor wrote, repeated while it answers
    /// 409 (a rotation still finishing), until it is accepted (202) within 10 s.
    pub async fn rotate(&self, tenant: &str, key: &str) {
        let token = std::fs::read_to_string(self.dir.join("admin.token")).unwrap();
        let body = format!(r#"{{"tenantId":"{tenant}","secretKey":"{key}"}}"#);
        eventually(Duration::from_secs(10), "a rotation accepted", || async {
            let r = request(
                self.addr,
                "POST",
                "/admin/secrets/rotate",
                Some(token.trim()),
                Some(&body),
            )
            .await;
            assert!(r.status == 202 || r.status == 409, "{}", r.status);
            r.status == 202
        })
        .await;
    }

    /// SIGTERM, then waits for the exit; panics if it takes longer than `limit`.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        eventually_blocking(limit, "rotor to exit after SIGTERM", || {
            self.child.try_wait().unwrap()
        })
    }
}

impl Drop for RotorBin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The path of a Prometheus tool (`promtool`, `prometheus`), or `None` outside CI when it
/// is missing. Under `CI=true` a missing tool fails the test: CI installs it
/// (`.ci/setup-prometheus.sh`), so its absence there is a broken setup, not a skip.
pub fn prometheus_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        super::ci::skip_or_fail(
            name,
            "not installed (.ci/setup-prometheus.sh installs Debian's `prometheus`)",
        );
    }
    found
}
