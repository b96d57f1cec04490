//! A private `redis-server` for one test: 127.0.0.1 on a free port, its own temporary
//! directory holding an aclfile (`users.acl`, created empty) and the server's log, no RDB
//! or AOF (`--save ""`, `--appendonly no`). `restart` kills the process (SIGKILL, as a
//! crash would) and starts a new one on the same directory, so on the same aclfile; the
//! port may change. Killed on drop.
//!
//! A missing `redis-server` binary fails the test under `CI=true`; locally the test is
//! skipped with the reason printed.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = "redis-server";

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server with an empty aclfile; `None` (test skipped) when `redis-server`
    /// cannot run outside CI.
    pub fn start() -> Option<RedisServer> {
        let runs = match Command::new(BINARY).arg("--version").output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!("`{BINARY} --version` exited with {}", o.status)),
            Err(e) => Err(format!("cannot run `{BINARY}`: {e}")),
        };
        if let Err(why) = runs {
            super::ci::skip_or_fail(BINARY, &why);
            return None;
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("users.acl"), "").expect("empty aclfile");
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
        };
        server.spawn();
        Some(server)
    }

    /// `127.0.0.1:<port>` of the running process.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// An admin URL for the `default` user (no password).
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    pub fn aclfile(&self) -> PathBuf {
        self.dir.path().join("users.acl")
    }

    /// Kills the server and starts a new one on the same directory and aclfile.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Kills the server, replaces its aclfile with `acl` and starts it again: a restore
    /// made while the server is down. Writing the file while it runs would race rotor,
    /// whose every revoke (a verify revokes old versions again) rewrites it with
    /// `ACL SAVE`.
    pub fn restart_with_aclfile(&mut self, acl: &str) {
        self.stop();
        std::fs::write(self.aclfile(), acl).expect("aclfile written");
        self.spawn();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process on a free port and waits until it answers PING. A port taken
    /// between choosing and binding makes the server exit; another port is tried then.
    fn spawn(&mut self) {
        let dir = self.dir.path();
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(BINARY)
                .arg("--port")
                .arg(port.to_string())
                .args(["--bind", "127.0.0.1"])
                .arg("--dir")
                .arg(dir)
                .arg("--aclfile")
                .arg(dir.join("users.acl"))
                .arg("--logfile")
                .arg(dir.join("redis.log"))
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--daemonize", "no"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server spawns");
            match wait_for_ping(&mut child, port) {
                Ok(()) => {
                    self.child = Some(child);
                    self.port = port;
                    return;
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    failures.push(format!("port {port}: {e}"));
                }
            }
        }
        let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        panic!(
            "private redis-server did not start: {}\nlast log lines:\n{}",
            failures.join("; "),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Polls until the server answers `+PONG` (or exits, or 10 s pass).
fn wait_for_ping(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("exited with {status}"));
        }
        let last = match ping(port) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!("no PONG within 10s: {last}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ping(port: u16) -> Result<(), String> {
    let addr = ([127, 0, 0, 1], port).into();
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"*1\r\n$4\r\nPING\r\n")
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    match line.trim_end() {
        "+PONG" => Ok(()),
        other => Err(format!("PING answered {other:?}")),
    }
}
