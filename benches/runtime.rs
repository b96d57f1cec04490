//! Runtime figures for issue 3, printed as plain text (not criterion: these are whole-process
//! measurements). Run with `cargo bench --bench runtime`; `-- --quick` shortens the idle
//! window and skips 100,000 secrets. Under `cargo test` it is a smoke run on small counts.
//!
//! 1. Start-up time and RSS of the real `rotor run` binary with 10,000 and 100,000 managed
//!    secrets (store pre-seeded so every secret is idle and scheduled 30 days out), and its
//!    CPU while idle.
//! 2. Rotations per second through the admin API with the `none` target (store-only, fsync
//!    on every commit as in production).
//! 3. Restart latency of a rotation actor after a panic, journal reload included (p50/p99).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use ractor::ActorRef;
use ractor::rpc::CallResult;
use rotor::actors::rotation::{self, RotationMsg};
use rotor::actors::tree::{self, TreeOptions};
use rotor::config::Config;
use rotor::domain::{Label, RotationId, SecretRef};
use rotor::generator::SecretValue;
use rotor::machine::{Phase, SecretState};
use rotor::metrics::Metrics;
use rotor::store::embedded::EmbeddedStore;
use rotor::store::{Commit, Store};

#[path = "common/mode.rs"]
mod mode;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // A smoke run (`cargo test --all-targets`) starts rotor with a hundred secrets, skips
    // the idle window and takes a few rotations and restarts.
    let sizes: &[usize] = if !mode::full() {
        &[100]
    } else if quick {
        &[10_000]
    } else {
        &[10_000, 100_000]
    };
    let idle_secs = match (mode::full(), quick) {
        (false, _) => 0,
        (true, true) => 10,
        (true, false) => 60,
    };
    let baseline = startup(1, 0);
    println!(
        "baseline (1 secret): ready in {:.2} s, RSS {:.1} MiB",
        baseline.ready.as_secs_f64(),
        baseline.rss_kib as f64 / 1024.0
    );
    for &n in sizes {
        let f = startup(n, if n == 100_000 || quick { idle_secs } else { 0 });
        let per = (f.rss_kib.saturating_sub(baseline.rss_kib)) as f64 * 1024.0 / n as f64;
        println!(
            "{n} secrets: seeded in {:.1} s; ready in {:.2} s; RSS {:.1} MiB ({per:.0} bytes per secret over baseline)",
            f.seed.as_secs_f64(),
            f.ready.as_secs_f64(),
            f.rss_kib as f64 / 1024.0
        );
        if let Some(cpu) = f.idle_cpu {
            println!(
                "{n} secrets: idle CPU over {idle_secs} s = {:.3}% of one core",
                cpu * 100.0
            );
        }
    }
    api_rotations(mode::scaled(if quick { 200 } else { 1000 }));
    restart_latency(mode::scaled(if quick { 200 } else { 2000 }));
}

struct Startup {
    seed: Duration,
    ready: Duration,
    rss_kib: u64,
    idle_cpu: Option<f64>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn write_config(dir: &Path, port: u16, n: usize, interval: &str, grace: &str) {
    let mut text = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
admin_token_file = "admin.token"
[store]
type = "embedded"
path = "rotor.redb"
master_key_file = "master.key"
[runtime]
max_concurrent_rotations = 16
[policies.bench]
interval = "{interval}"
grace = "{grace}"
generator = {{ type = "token", bytes = 32 }}
"#
    );
    for s in secrets(n) {
        text.push_str(&format!(
            "[[secrets]]\ntenant = \"{}\"\nkey = \"{}\"\npolicy = \"bench\"\n",
            s.tenant(),
            s.key()
        ));
    }
    std::fs::write(dir.join("rotor.toml"), text).expect("write config");
}

fn secrets(n: usize) -> Vec<SecretRef> {
    (0..n)
        .map(|i| SecretRef::new(&format!("t{}", i / 100), &format!("k{i}")).expect("ident"))
        .collect()
}

/// Runs `f` to completion on a runtime of its own (for the store calls of a synchronous
/// step; the store is async).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Gives every secret a current v1, idle and due in 30 days, as after a first run.
async fn seed(dir: &Path, n: usize) -> Duration {
    let t = Instant::now();
    let store =
        EmbeddedStore::open(&dir.join("rotor.redb"), &dir.join("master.key")).expect("open store");
    store.set_fsync(false);
    let now = Utc::now();
    let state = SecretState {
        current: Some(1),
        latest_version: 1,
        rotations_started: 1,
        last_rotated_at: Some(now),
        attempts: 0,
        phase: Phase::Idle {
            next_due: Some(now + TimeDelta::days(30)),
            retry: false,
        },
    };
    let journal = serde_json::to_vec(&state).expect("journal");
    let value = SecretValue::from_bytes(b"seeded-bench-value-0123456789abcdef".to_vec());
    for s in secrets(n) {
        store
            .put_version(&s, 1, RotationId(1), &value, now)
            .await
            .expect("put");
        store
            .commit(
                &s,
                Commit {
                    journal: &journal,
                    labels: &[(1, Label::Current)],
                    history: None,
                    now,
                },
            )
            .await
            .expect("commit");
    }
    store.sync().expect("sync");
    t.elapsed()
}

fn http(addr: SocketAddr, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

fn spawn(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["run", "--config", "rotor.toml"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn rotor")
}

fn wait_ready(child: &mut Child, addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("rotor exited: {status}");
        }
        if http(addr, "GET", "/readyz", "", "").0 == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "not ready in 10 minutes");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // CLK_TCK is 100 on Linux x86_64.
    ticks as f64 / 100.0
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn startup(n: usize, idle_secs: u64) -> Startup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let port = free_port();
    write_config(dir, port, n, "30d", "1h");
    let seed = block_on(seed(dir, n));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let t = Instant::now();
    let mut child = spawn(dir);
    wait_ready(&mut child, addr);
    let ready = t.elapsed();
    let pid = child.id();
    let rss_kib = proc_field(pid, "status", "VmRSS:");
    let idle_cpu = (idle_secs > 0).then(|| {
        let c0 = cpu_seconds(pid);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(idle_secs));
        (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64()
    });
    stop(child);
    Startup {
        seed,
        ready,
        rss_kib,
        idle_cpu,
    }
}

fn api_rotations(n: usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let port = free_port();
    write_config(dir, port, n, "30d", "1h");
    block_on(seed(dir, n));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = spawn(dir);
    wait_ready(&mut child, addr);
    let token = std::fs::read_to_string(dir.join("admin.token"))
        .expect("token")
        .trim()
        .to_owned();
    let token = Arc::new(token);
    let all = Arc::new(secrets(n));
    let t = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|w| {
            let token = token.clone();
            let all = all.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                for s in all.iter().skip(w).step_by(8) {
                    let body = format!(
                        r#"{{"tenantId":"{}","secretKey":"{}"}}"#,
                        s.tenant(),
                        s.key()
                    );
                    let t = Instant::now();
                    let (status, _) = http(addr, "POST", "/admin/secrets/rotate", &token, &body);
                    assert_eq!(status, 202, "rotate {s}");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = threads
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect();
    let accepted = t.elapsed();
    // Completed = promoted (in grace): count phases from the schedule.
    loop {
        let (_, body) = http(addr, "GET", "/admin/secrets/schedule", &token, "");
        let in_grace = body.matches("\"phase\":\"grace\"").count();
        if in_grace == n {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(900), "rotations stalled");
        std::thread::sleep(Duration::from_millis(50));
    }
    let done = t.elapsed();
    lat.sort();
    stop(child);
    println!(
        "API rotations ({n} secrets, none target, 8 clients): accepted {:.0}/s (request p50 {:.2} ms, p99 {:.2} ms); completed to promotion {:.0}/s",
        n as f64 / accepted.as_secs_f64(),
        lat[lat.len() / 2].as_secs_f64() * 1e3,
        lat[lat.len() * 99 / 100].as_secs_f64() * 1e3,
        n as f64 / done.as_secs_f64()
    );
}

fn restart_latency(rounds: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        tokio::spawn(async move {
            rotor::actors::panic_hook::install_quiet_panic_hook();
            let tmp = tempfile::tempdir().expect("tempdir");
            let dir = tmp.path();
            write_config(dir, free_port(), 1, "30d", "1h");
            seed(dir, 1).await;
            let cfg = Config::load(&dir.join("rotor.toml")).expect("config");
            let store = Arc::new(
                EmbeddedStore::open(&dir.join("rotor.redb"), &dir.join("master.key"))
                    .expect("store"),
            );
            let options = TreeOptions {
                rotations_intensity: rotor::supervisor::Intensity {
                    max_restarts: u32::MAX,
                    within: Duration::from_secs(1),
                },
                backoff: rotor::supervisor::Backoff::NONE,
                // The actor under test must not hibernate between rounds.
                hibernate_after: None,
                ..TreeOptions::default()
            };
            let tree = tree::start(&cfg, store, Metrics::new(), options)
                .await
                .expect("tree");
            let secret = secrets(1).remove(0);
            let name = rotation::actor_name(&tree.context.namespace, &secret);
            let lookup = || -> Option<ActorRef<RotationMsg>> {
                ractor::registry::where_is(name.clone()).map(ActorRef::from)
            };
            while lookup().is_none() {
                tokio::task::yield_now().await;
            }
            let mut lat = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                let old = lookup().expect("actor");
                let t = Instant::now();
                let _ = old.cast(RotationMsg::InjectPanic);
                // Until a new incarnation answers a status call, i.e. its journal is
                // loaded (post_start runs before any message is handled).
                loop {
                    if let Some(a) = lookup()
                        && a.get_id() != old.get_id()
                        && let Ok(CallResult::Success(_)) =
                            a.call(RotationMsg::Status, Some(Duration::from_secs(1))).await
                    {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                lat.push(t.elapsed());
            }
            lat.sort();
            println!(
                "rotation actor restart after a panic, journal reload included ({rounds} rounds): p50 {:.1} µs, p99 {:.1} µs",
                lat[rounds / 2].as_secs_f64() * 1e6,
                lat[rounds * 99 / 100].as_secs_f64() * 1e6
            );
        })
        .await
        .expect("restart bench");
    });
}
