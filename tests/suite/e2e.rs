//! End to end against the real `rotor` binary on a random loopback port: rotation through
//! the API with labels moving pending → current → previous → expired, rollback during
//! grace, graceful SIGTERM, no secret in the logs; and `kill -9` at random instants in the
//! middle of rotations, after which every secret still has exactly one current version and
//! every interrupted rotation finished or rolled back.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::http::request;
use crate::common::rotor_bin::{
    LEAK_CHECK_LOG, RotorBin, assert_logged_at_trace, config, free_port,
};
use crate::common::wait::eventually;
use rand::{Rng, SeedableRng};
use rotor::domain::{Label, SecretRef};
use rotor::machine::{Phase, SecretState};
use rotor::store::embedded::EmbeddedStore;
use rotor::store::{ReadValue as _, Store};
use serde_json::Value;

/// The real binary (killed when dropped) and the admin token it created.
struct Rotor {
    bin: RotorBin,
    addr: SocketAddr,
    token: String,
}

impl Rotor {
    /// Starts `rotor run` in `dir` with `config` on `port` and `RUST_LOG=rust_log`; waits
    /// until /readyz says ready.
    async fn start(dir: &Path, port: u16, config: &str, rust_log: &str) -> Rotor {
        let bin = RotorBin::start_logging(dir, port, config, rust_log).await;
        let token = std::fs::read_to_string(dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned();
        Rotor {
            addr: bin.addr,
            bin,
            token,
        }
    }

    async fn get(&self, path: &str) -> Value {
        let r = request(self.addr, "GET", path, Some(&self.token), None).await;
        assert_eq!(
            r.status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }

    async fn post(&self, path: &str, tenant: &str, key: &str) -> (u16, Value) {
        let body = format!(r#"{{"tenantId":"{tenant}","secretKey":"{key}"}}"#);
        let r = request(self.addr, "POST", path, Some(&self.token), Some(&body)).await;
        (r.status, r.json())
    }

    /// The labels of every version, in version order.
    async fn labels(&self, tenant: &str, key: &str) -> Vec<(u64, Vec<String>, bool)> {
        let v = self
            .get(&format!("/admin/secrets/versions/{tenant}/{key}"))
            .await;
        v["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["version"].as_u64().unwrap(),
                    v["labels"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|l| l.as_str().unwrap().to_owned())
                        .collect(),
                    !v["expiredAt"].is_null(),
                )
            })
            .collect()
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        // Graceful shutdown must finish well within 15 s.
        self.bin.terminate(Duration::from_secs(15))
    }

    /// `kill -9`: dropping the binary's handle kills it.
    fn kill9(self) {
        drop(self.bin);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_grace_expire_and_rollback_through_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let cfg = config(
        port,
        r#"[policies.e2e]
interval = "1h"
grace = "3s"
generator = { type = "token", bytes = 32, prefix = "sk_e2e_" }

[[secrets]]
tenant = "tenant1"
key = "api_keys"
policy = "e2e"
target = { type = "none", delay = "300ms" }"#,
    );
    let rotor = Rotor::start(dir, port, &cfg, LEAK_CHECK_LOG).await;
    let l = || rotor.labels("tenant1", "api_keys");

    // The first version is created at start.
    eventually(Duration::from_secs(10), "v1 current", || async {
        (l().await == vec![(1, vec!["current".to_owned()], false)]).then_some(())
    })
    .await;

    // Unauthenticated admin calls are refused; probes and metrics are open.
    let r = request(rotor.addr, "GET", "/admin/secrets/schedule", None, None).await;
    assert_eq!(r.status, 401);
    let m = request(rotor.addr, "GET", "/metrics", None, None).await;
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain")
    );

    // Rotate: 202 with the id; unknown secrets are 404; a second rotate is 409.
    let (status, body) = rotor
        .post("/admin/secrets/rotate", "tenant1", "api_keys")
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["rotationId"], "r2");
    let (status, _) = rotor
        .post("/admin/secrets/rotate", "nobody", "api_keys")
        .await;
    assert_eq!(status, 404);
    let (status, _) = rotor
        .post("/admin/secrets/rotate", "tenant1", "api_keys")
        .await;
    assert_eq!(status, 409);

    // pending (apply and test take 300 ms each) → current, with v1 previous during grace.
    eventually(Duration::from_secs(10), "v2 pending", || async {
        l().await
            .contains(&(2, vec!["pending".to_owned()], false))
            .then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "v2 current, v1 previous",
        || async {
            (l().await
                == vec![
                    (1, vec!["previous".to_owned()], false),
                    (2, vec!["current".to_owned()], false),
                ])
            .then_some(())
        },
    )
    .await;
    // After grace (3 s) and the revoke (300 ms), v1 is expired.
    eventually(Duration::from_secs(15), "v1 expired", || async {
        (l().await == vec![(1, vec![], true), (2, vec!["current".to_owned()], false)]).then_some(())
    })
    .await;

    // The revoke of v1 finishes (the rotation is in flight until then).
    eventually(Duration::from_secs(10), "idle", || async {
        let s = rotor.get("/admin/secrets/schedule").await;
        (s["secrets"][0]["phase"] == "idle").then_some(())
    })
    .await;

    // Rotate again and roll back during grace: v2 current again, v3 expired.
    let (status, _) = rotor
        .post("/admin/secrets/rotate", "tenant1", "api_keys")
        .await;
    assert_eq!(status, 202);
    eventually(Duration::from_secs(10), "v3 current", || async {
        l().await
            .contains(&(3, vec!["current".to_owned()], false))
            .then_some(())
    })
    .await;
    let (status, body) = rotor
        .post("/admin/secrets/rollback", "tenant1", "api_keys")
        .await;
    assert_eq!(status, 202, "{body}");
    eventually(Duration::from_secs(10), "rolled back", || async {
        let v = l().await;
        (v[1] == (2, vec!["current".to_owned()], false) && v[2] == (3, vec![], true)).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "idle after the rollback",
        || async {
            let s = rotor.get("/admin/secrets/schedule").await;
            (s["secrets"][0]["phase"] == "idle").then_some(())
        },
    )
    .await;
    let (status, _) = rotor
        .post("/admin/secrets/rollback", "tenant1", "api_keys")
        .await;
    assert_eq!(status, 409, "nothing left in grace");

    let history = rotor.get("/admin/secrets/history/tenant1/api_keys").await;
    let outcomes: Vec<_> = history["rotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(outcomes, ["rolled_back", "succeeded", "succeeded"]);
    let schedule = rotor.get("/admin/secrets/schedule").await;
    assert_eq!(schedule["secrets"][0]["phase"], "idle");

    // The same through the CLI, which calls the running rotor's API.
    let cli = |action: &str| {
        Command::new(env!("CARGO_BIN_EXE_rotor"))
            .args([action, "--config", "rotor.toml", "tenant1", "api_keys"])
            .current_dir(dir)
            .output()
            .expect("rotor cli")
    };
    let out = cli("rotate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("accepted: rotation r4"), "{stdout}");
    eventually(Duration::from_secs(10), "v4 in grace", || async {
        let s = rotor.get("/admin/secrets/schedule").await;
        (s["secrets"][0]["phase"] == "grace").then_some(())
    })
    .await;
    assert!(cli("rollback").status.success());
    eventually(
        Duration::from_secs(10),
        "idle after the CLI rollback",
        || async {
            let s = rotor.get("/admin/secrets/schedule").await;
            (s["secrets"][0]["phase"] == "idle").then_some(())
        },
    )
    .await;
    let out = cli("rollback");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refused (409)"), "{stderr}");
    assert!(!stderr.contains(&rotor.token), "token in CLI output");

    // `versions` and `history` while rotor holds the store: read through its API, and the
    // same tables as offline once it has stopped.
    let running: Vec<_> = ["versions", "history"].map(cli).into_iter().collect();
    for out in &running {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout} {stderr}");
        assert!(stderr.contains("admin API"), "{stderr}");
        assert!(!stdout.contains(&rotor.token) && !stderr.contains(&rotor.token));
    }
    let versions = String::from_utf8_lossy(&running[0].stdout).into_owned();
    assert!(versions.contains("4 versions"), "{versions}");
    assert!(versions.contains("current"), "{versions}");
    let history = String::from_utf8_lossy(&running[1].stdout).into_owned();
    assert!(history.contains("rolled_back"), "{history}");

    let status = rotor.terminate();
    assert!(status.success(), "exit after SIGTERM: {status}");
    for (out, action) in running.iter().zip(["versions", "history"]) {
        let offline = cli(action);
        assert!(offline.status.success());
        assert!(
            !String::from_utf8_lossy(&offline.stderr).contains("admin API"),
            "offline reads the store itself"
        );
        assert_eq!(
            String::from_utf8_lossy(&offline.stdout),
            String::from_utf8_lossy(&out.stdout),
            "{action}: the API and the store print the same table"
        );
    }

    // No value ever reached the log.
    let log = std::fs::read_to_string(dir.join("rotor.log")).unwrap();
    assert!(log.contains("rotor started"), "{log}");
    assert_logged_at_trace(&log);
    let store = EmbeddedStore::open(&dir.join("rotor.redb"), &dir.join("master.key")).unwrap();
    let secret = SecretRef::new("tenant1", "api_keys").unwrap();
    for v in 1..=3 {
        let value = store.read_value(&secret, v).await.unwrap();
        let text = String::from_utf8_lossy(value.expose()).into_owned();
        assert!(text.starts_with("sk_e2e_"));
        assert!(!log.contains(&text), "value of v{v} in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_instants_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut secrets = String::new();
    let refs: Vec<SecretRef> = (0..20)
        .map(|i| SecretRef::new(&format!("tenant{}", i % 5), &format!("key{i}")).unwrap())
        .collect();
    for s in &refs {
        secrets.push_str(&format!(
            "[[secrets]]\ntenant = \"{}\"\nkey = \"{}\"\npolicy = \"churn\"\ntarget = {{ type = \"none\", delay = \"30ms\" }}\n\n",
            s.tenant(), s.key()
        ));
    }
    let port = free_port();
    let cfg = config(
        port,
        &format!(
            r#"[policies.churn]
interval = "1s"
grace = "500ms"
generator = {{ type = "token", bytes = 16 }}
max_attempts = 3

{secrets}"#
        ),
    );
    let kills = 20;
    for _ in 0..kills {
        let rotor = Rotor::start(dir, port, &cfg, "info").await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(50..1500))).await;
        rotor.kill9();
    }
    // A last run lets every interrupted rotation continue, then a clean stop.
    let last_start = chrono::Utc::now();
    let rotor = Rotor::start(dir, port, &cfg, "info").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(rotor.terminate().success());

    let store = EmbeddedStore::open(&dir.join("rotor.redb"), &dir.join("master.key")).unwrap();
    let mut total_rotations = 0;
    for s in &refs {
        let state: SecretState =
            serde_json::from_slice(&store.journal(s).await.unwrap().expect("journal")).unwrap();
        let versions = store.versions(s).await.unwrap();
        // Exactly one current, and it is the journal's.
        let current: Vec<_> = versions
            .iter()
            .filter(|v| v.labels.contains(&Label::Current))
            .map(|v| v.version)
            .collect();
        assert_eq!(current.len(), 1, "{s}: {versions:?}");
        assert_eq!(Some(current[0]), state.current, "{s}");
        // Every labelled version still decrypts: no value lost.
        for v in versions.iter().filter(|v| !v.labels.is_empty()) {
            store
                .read_value(s, v.version)
                .await
                .expect("labelled value readable");
        }
        // Version numbers are never reused.
        let numbers: BTreeSet<_> = versions.iter().map(|v| v.version).collect();
        assert_eq!(numbers.len(), versions.len());
        // Every rotation ever started is finished in the history exactly once, except the
        // one in flight (or in grace) now: nothing interrupted was dropped or repeated.
        let history = store.history(s, 100_000).await.unwrap();
        let mut ids: Vec<u64> = history.iter().map(|h| h.rotation.0).collect();
        ids.sort_unstable();
        let in_flight = state.phase.run().map(|r| r.rotation.0);
        let expected: Vec<u64> = (1..=state.rotations_started)
            .filter(|id| Some(*id) != in_flight)
            .collect();
        assert_eq!(ids, expected, "{s}: phase {:?}", state.phase.name());
        assert!(!matches!(state.phase, Phase::Stuck { .. }), "{s} stuck");
        // And every secret kept rotating after the last restart (nothing wedged).
        assert!(
            state.last_rotated_at.is_some_and(|t| t > last_start),
            "{s} did not rotate after the last restart: {:?}",
            state.phase.name()
        );
        total_rotations += state.rotations_started;
    }
    // The churn really happened: many rotations across the kills.
    assert!(
        total_rotations > refs.len() as u64 * 3,
        "only {total_rotations} rotations"
    );
}

/// The CLI's admin calls go to the rotor on loopback directly, whatever proxy the
/// environment names: every client rotor builds ignores `HTTP_PROXY` and its kin. A
/// stand-in admin API answers `rotor rotate`; a stand-in proxy counts the connections it
/// gets, and must get none.
#[test]
fn cli_admin_calls_ignore_a_proxy_from_the_environment() {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    // `rotor rotate` asks the API without checking the configuration's secrets: none needed.
    let cfg = config(admin.local_addr().unwrap().port(), "");
    std::fs::write(dir.join("rotor.toml"), cfg).unwrap();
    let token = rotor::api::server::AdminToken::load_or_create(&dir.join("admin.token")).unwrap();

    let proxied = Arc::new(AtomicUsize::new(0));
    let seen = proxied.clone();
    // Answers like a proxy that cannot reach anything, so a proxied call fails at once.
    std::thread::spawn(move || {
        for conn in proxy.incoming() {
            seen.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut conn) = conn {
                let _ = conn.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
            }
        }
    });
    let api = std::thread::spawn(move || {
        let (mut conn, _) = admin.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        // The head, then the body, which ends with the JSON object's brace.
        while !request.ends_with(b"}") {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let body = r#"{"rotationId":"r7"}"#;
        let answer = format!(
            "HTTP/1.1 202 Accepted\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        conn.write_all(answer.as_bytes()).unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });

    let mut cli = Command::new(env!("CARGO_BIN_EXE_rotor"));
    cli.args(["rotate", "--config", "rotor.toml", "tenant1", "api_keys"])
        .current_dir(dir);
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cli.env(name, &proxy_url);
    }
    // An exemption or a CGI marker in the test's own environment would hide the proxy.
    for name in ["NO_PROXY", "no_proxy", "REQUEST_METHOD"] {
        cli.env_remove(name);
    }
    let out = cli.output().expect("rotor cli");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        proxied.load(Ordering::SeqCst),
        0,
        "went through the proxy: {stderr}"
    );
    assert!(out.status.success(), "{stdout} {stderr}");
    assert!(stdout.contains("accepted: rotation r7"), "{stdout}");
    let request = api.join().unwrap();
    assert!(
        request.starts_with("POST /admin/secrets/rotate HTTP/1.1\r\n"),
        "{request}"
    );
    let bearer = format!("Bearer {}", token.expose_secret());
    assert!(request.contains(&bearer), "the token is sent");
    assert!(request.contains(r#""tenantId":"tenant1""#), "{request}");
}
