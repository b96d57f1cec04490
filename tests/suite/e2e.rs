//! End to end against the real `rotor` binary on a random loopback port: rotation through
//! the API with labels moving pending → current → previous → expired, rollback during
//! grace, graceful SIGTERM, no secret in the logs (written at trace); and `kill -9` of rotor
//! and its hooks at random instants, after readiness and during start-up, with an exec
//! target recording every step: after each kill the store (one current, the journal's;
//! every attempt finished once or in flight) and the recorded steps (nothing used after it
//! was revoked, versions and promotions increasing, current = last promoted) must agree.
//! `scripts/kill-campaign.sh` runs the kill test with many more kills.

use std::collections::{BTreeMap, BTreeSet};
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
use rotor::domain::{Label, Outcome, SecretRef};
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

/// The hook every step of the kill campaign runs: one line per step, `operation
/// tenant/key version pid-of-rotor`, appended to `effects.log` (one short `O_APPEND` write,
/// so lines never interleave). It never reads its stdin, where the value is. The test of
/// every fifth version fails, so attempts are discarded too.
fn effects_hook(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("hook.sh");
    std::fs::write(
        &path,
        format!(
            r#"#!/bin/sh
printf '%s %s/%s %s %s\n' "$ROTOR_OPERATION" "$ROTOR_TENANT" "$ROTOR_KEY" "$ROTOR_VERSION" "$PPID" >> '{}'
if [ "$ROTOR_OPERATION" = test ] && [ $((ROTOR_VERSION % 5)) -eq 0 ]; then
    echo "version $ROTOR_VERSION fails its test" >&2
    exit 1
fi
"#,
            dir.join("effects.log").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// One line of `effects.log`.
#[derive(Debug)]
struct Effect {
    op: String,
    secret: String,
    version: u64,
    /// The rotor process that ran the step.
    pid: u32,
}

fn effects(dir: &Path) -> Vec<Effect> {
    std::fs::read_to_string(dir.join("effects.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 4, "effects.log line {l:?}");
            Effect {
                op: f[0].to_owned(),
                secret: f[1].to_owned(),
                version: f[2].parse().expect("a version"),
                pid: f[3].parse().expect("a pid"),
            }
        })
        .collect()
}

/// What the target saw of one secret, checked line by line as it is read.
#[derive(Debug, Default)]
struct Seen {
    applied: BTreeSet<u64>,
    revoked: BTreeSet<u64>,
    promoted: Vec<(u64, u32)>,
}

/// The invariants of the side effects, from the hook's log: every version is applied
/// before it is tested or promoted; no version is applied, tested or promoted once it has
/// been revoked (discarded or expired); versions are applied in increasing order (a
/// version is applied again only when a restart re-issues the step); promotions strictly
/// increase and a version is promoted twice only when a restarted process re-issues the
/// promotion it was killed in.
fn check_effects(lines: &[Effect]) -> BTreeMap<String, Seen> {
    let mut seen: BTreeMap<String, Seen> = Default::default();
    for (n, e) in lines.iter().enumerate() {
        let s = seen.entry(e.secret.clone()).or_default();
        let at = format!("effects.log line {} ({e:?})", n + 1);
        let v = e.version;
        if e.op != "revoke" {
            assert!(
                !s.revoked.contains(&v),
                "{at}: v{v} used after it was revoked"
            );
        }
        match e.op.as_str() {
            "apply" => {
                let newest = s.applied.last().copied().unwrap_or(0);
                assert!(v >= newest, "{at}: v{v} applied after v{newest}");
                s.applied.insert(v);
            }
            "test" => assert!(s.applied.contains(&v), "{at}: v{v} tested, never applied"),
            "promote" => {
                assert!(s.applied.contains(&v), "{at}: v{v} promoted, never applied");
                match s.promoted.last() {
                    Some(&(last, pid)) if last == v => {
                        assert_ne!(pid, e.pid, "{at}: v{v} promoted twice by one process")
                    }
                    Some(&(last, _)) => {
                        assert!(v > last, "{at}: v{v} promoted after v{last}");
                    }
                    None => {}
                }
                s.promoted.push((v, e.pid));
            }
            "revoke" => {
                s.revoked.insert(v);
            }
            other => panic!("{at}: unexpected operation {other}"),
        }
    }
    seen
}

/// The store's side, for every secret, against the hook's log: exactly one current version
/// (the journal's) once one exists, every labelled value readable, every attempt ever
/// started finished in the history exactly once except the one in flight, and the current
/// version the last one the log promoted (or the state waits for the commit of that
/// promotion, which the process was killed before). Returns the rotations started.
async fn check_store(dir: &Path, refs: &[SecretRef], seen: &BTreeMap<String, Seen>) -> u64 {
    // A hook rotor was forking when the group was killed holds the store file's lock until
    // it is gone too (the descriptor closes at exec, not at fork), which can be a moment
    // after rotor itself was reaped.
    let store = eventually(
        Duration::from_secs(10),
        "the killed process group to release the store file",
        || async {
            match EmbeddedStore::open(&dir.join("rotor.redb"), &dir.join("master.key")) {
                Ok(store) => Some(store),
                Err(e) if format!("{e:?}").contains("DatabaseAlreadyOpen") => None,
                Err(e) => panic!("opening the store after a kill: {e}"),
            }
        },
    )
    .await;
    let mut started = 0;
    for s in refs {
        let versions = store.versions(s).await.unwrap();
        let Some(journal) = store.journal(s).await.unwrap() else {
            assert!(versions.is_empty(), "{s}: versions without a journal");
            continue;
        };
        let state: SecretState = serde_json::from_slice(&journal).unwrap();
        let current: Vec<_> = versions
            .iter()
            .filter(|v| v.labels.contains(&Label::Current))
            .map(|v| v.version)
            .collect();
        assert_eq!(current, Vec::from_iter(state.current), "{s}: {versions:?}");
        for v in versions.iter().filter(|v| !v.labels.is_empty()) {
            store
                .read_value(s, v.version)
                .await
                .unwrap_or_else(|e| panic!("{s}: labelled v{} unreadable: {e}", v.version));
        }
        let history = store.history(s, 100_000).await.unwrap();
        let mut ids: Vec<u64> = history.iter().map(|h| h.rotation.0).collect();
        ids.sort_unstable();
        let in_flight = state.phase.run().map(|r| r.rotation.0);
        let expected: Vec<u64> = (1..=state.rotations_started)
            .filter(|id| Some(*id) != in_flight)
            .collect();
        assert_eq!(ids, expected, "{s}: phase {:?}", state.phase.name());

        let log = seen.get(&s.to_string());
        let last_promoted = log.and_then(|l| l.promoted.last()).map(|&(v, _)| v);
        let promoting = match &state.phase {
            Phase::Tested(run) => Some(run.pending),
            _ => None,
        };
        assert!(
            state.current == last_promoted || (promoting.is_some() && promoting == last_promoted),
            "{s}: current {:?} in the store, last promoted {last_promoted:?} in the log, phase {}",
            state.current,
            state.phase.name()
        );
        // What the history says happened, the target saw: a success was promoted there, a
        // discarded attempt's version revoked.
        for h in &history {
            let v = h.to_version;
            match h.outcome {
                Outcome::Succeeded | Outcome::RolledBack => assert!(
                    log.is_some_and(|l| l.promoted.iter().any(|&(p, _)| p == v)),
                    "{s}: {} succeeded, v{v} never promoted on the target",
                    h.rotation
                ),
                Outcome::Failed | Outcome::Abandoned => assert!(
                    log.is_some_and(|l| l.revoked.contains(&v)),
                    "{s}: {} failed, v{v} never revoked on the target",
                    h.rotation
                ),
            }
        }
        started += state.rotations_started;
    }
    started
}

/// `kill -9` (of rotor and its hooks) at random instants, after readiness and during start-up
/// (before readiness, while the actors resume), with every step recorded by an exec hook.
/// After every kill the store and the hook's log must satisfy the invariants; a last run must
/// get every secret rotating again. `ROTOR_KILLS` sets the number of kills (20 by default;
/// `scripts/kill-campaign.sh` runs many more) and the seed is printed for a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_instants_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let kills: u32 = std::env::var("ROTOR_KILLS")
        .map(|k| k.parse().expect("ROTOR_KILLS is a number of kills"))
        .unwrap_or(20);
    let seed: u64 = std::env::var("ROTOR_KILL_SEED")
        .map(|k| k.parse().expect("ROTOR_KILL_SEED is a u64"))
        .unwrap_or_else(|_| rand::random());
    println!("seed {seed} (ROTOR_KILL_SEED replays it), {kills} kills");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let hook = effects_hook(dir);
    let hook = hook.display();
    let refs: Vec<SecretRef> = (0..10)
        .map(|i| SecretRef::new(&format!("tenant{}", i % 5), &format!("key{i}")).unwrap())
        .collect();
    let mut secrets = String::new();
    for s in &refs {
        secrets.push_str(&format!(
            "[[secrets]]\ntenant = \"{}\"\nkey = \"{}\"\npolicy = \"churn\"\n\
             target = {{ type = \"exec\", apply = [\"{hook}\"], test = [\"{hook}\"], \
             promote = [\"{hook}\"], revoke = [\"{hook}\"], timeout = \"30s\" }}\n\n",
            s.tenant(),
            s.key()
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
    // How long a start took to be ready: the start-up kills land before that.
    let mut time_to_ready = Duration::from_millis(200);
    let mut before_ready = 0;
    for n in 0..kills {
        let mut rotor = RotorBin::spawn(dir, port, &cfg, "info");
        let began = std::time::Instant::now();
        if n % 2 == 1 {
            // During start-up: a random instant in the first three quarters of the time the
            // last start took to be ready.
            let at = rng.gen_range(0..(time_to_ready.as_millis() as u64 * 3 / 4).max(1));
            tokio::time::sleep(Duration::from_millis(at)).await;
            if !rotor.is_ready().await {
                before_ready += 1;
            }
        } else {
            rotor.wait_ready().await;
            time_to_ready = began.elapsed();
            tokio::time::sleep(Duration::from_millis(rng.gen_range(20..1500))).await;
        }
        rotor.kill_group();
        let seen = check_effects(&effects(dir));
        check_store(dir, &refs, &seen).await;
    }
    assert!(
        kills < 10 || before_ready > 0,
        "no kill landed before readiness: the start-up kills tested nothing"
    );

    // A last run lets every interrupted rotation continue and every secret rotate again,
    // then a clean stop.
    let last_start = chrono::Utc::now();
    let mut rotor = RotorBin::spawn(dir, port, &cfg, "info");
    rotor.wait_ready().await;
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    for s in &refs {
        let path = format!("/admin/secrets/versions/{}/{}", s.tenant(), s.key());
        eventually(
            Duration::from_secs(30),
            format!("{s} to be promoted after the last start"),
            async || {
                let r = request(rotor.addr, "GET", &path, Some(token.trim()), None).await;
                r.status == 200
                    && r.json()["versions"].as_array().is_some_and(|vs| {
                        vs.iter().any(|v| {
                            v["promotedAt"]
                                .as_str()
                                .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
                                .is_some_and(|t| t > last_start)
                        })
                    })
            },
        )
        .await;
    }
    assert!(rotor.terminate(Duration::from_secs(15)).success());

    let lines = effects(dir);
    let seen = check_effects(&lines);
    let started = check_store(dir, &refs, &seen).await;
    let store = EmbeddedStore::open(&dir.join("rotor.redb"), &dir.join("master.key")).unwrap();
    for s in &refs {
        let state: SecretState =
            serde_json::from_slice(&store.journal(s).await.unwrap().expect("journal")).unwrap();
        assert!(!matches!(state.phase, Phase::Stuck { .. }), "{s} stuck");
    }
    let count = |op: &str| lines.iter().filter(|e| e.op == op).count();
    println!(
        "kill campaign: {kills} kills ({before_ready} before readiness), {started} rotations \
         started, {} applies, {} tests, {} promotions, {} revokes; invariants held after \
         every kill (seed {seed})",
        count("apply"),
        count("test"),
        count("promote"),
        count("revoke"),
    );
    // The churn really happened: rotations across the kills, failed tests discarded.
    assert!(started > refs.len() as u64 * 3, "only {started} rotations");
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
