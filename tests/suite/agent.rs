//! `rotor agent`, the real binary, against an in-test stand-in for rotor's consumer routes:
//! a mount swapped the way kubelet does it is reported with its new `NAME_version`, the
//! reload runs once inside a permit, a 429 makes it wait, reports resume after rotor was
//! down, a rotor that stays down cannot block the reload, bad configurations exit 64 naming
//! the key, the consumer id defaults to `POD_NAME` then the hostname, and neither the token
//! nor a value reaches the log or a report. One test runs the agent against the real
//! `rotor run` instead, following a rotation through rotor's own consumer routes.
//!
//! The stand-in ([`FakeRotor`]) is a fake because rotor's side of these routes is built
//! beside the agent, not yet in this tree; it implements the wire contract (bearer token,
//! report, permits with 429 and `retryAfterMs`, idempotent release) and records every
//! request, with the reload endpoint, in one ordered log.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::common::agent_bin::AgentBin;
use crate::common::faults::TcpProxy;
use crate::common::kubelet;
use crate::common::rotor_bin::assert_logged_at_trace;
use crate::common::wait::eventually;

const TOKEN: &str = "consumer-token-Zq8sV3nK1pW7";
const VALUE_1: &str = "first-password-value-7Hq2";
const VALUE_2: &str = "second-password-value-9Lx4";
const API_VALUE: &str = "api-key-value-without-marker-3Fz";

/// One thing the fake saw: a report, a permit request and its answer, a release, a reload.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    what: String,
    body: Value,
}

#[derive(Default)]
struct FakeState {
    seen: Mutex<Vec<Seen>>,
    /// Permit requests still to answer with 429.
    deny: AtomicUsize,
    retry_after_ms: AtomicUsize,
    granted: AtomicUsize,
    unauthorized: AtomicUsize,
    /// Whether the reload endpoint holds its answer (a reload that takes its time).
    hold_reload: AtomicBool,
}

impl FakeState {
    fn record(&self, what: impl Into<String>, body: Value) {
        self.seen.lock().unwrap().push(Seen {
            at: Instant::now(),
            what: what.into(),
            body,
        });
    }
}

/// The stand-in for rotor's consumer routes (see the module doc), behind a [`TcpProxy`]
/// so a test can make it unreachable and bring it back on the same port.
struct FakeRotor {
    state: Arc<FakeState>,
    addr: SocketAddr,
    proxy: TcpProxy,
    task: tokio::task::JoinHandle<()>,
}

fn authorized(state: &FakeState, headers: &HeaderMap) -> bool {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    if !ok {
        state.unauthorized.fetch_add(1, Ordering::SeqCst);
    }
    ok
}

async fn report(
    State(s): State<Arc<FakeState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> impl IntoResponse {
    if !authorized(&s, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "unauthorized"})),
        );
    }
    s.record("report", body);
    (StatusCode::OK, Json(json!({"status": "ok"})))
}

async fn permit(
    State(s): State<Arc<FakeState>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> axum::response::Response {
    if !authorized(&s, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "unauthorized"})),
        )
            .into_response();
    }
    s.record("permit-request", body);
    let denied = s
        .deny
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if denied {
        let ms = s.retry_after_ms.load(Ordering::SeqCst);
        s.record("permit-denied", Value::Null);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            Json(json!({"error": "workload web holds 1 of 1 permits", "retryAfterMs": ms})),
        )
            .into_response();
    }
    let id = format!("permit-{}", s.granted.fetch_add(1, Ordering::SeqCst));
    s.record(format!("permit-granted {id}"), Value::Null);
    (
        StatusCode::OK,
        Json(json!({"permitId": id, "expiresInMs": 30_000})),
    )
        .into_response()
}

async fn release(
    State(s): State<Arc<FakeState>>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> StatusCode {
    if !authorized(&s, &headers) {
        return StatusCode::UNAUTHORIZED;
    }
    s.record(format!("permit-released {id}"), Value::Null);
    StatusCode::NO_CONTENT
}

async fn reload(State(s): State<Arc<FakeState>>) -> StatusCode {
    s.record("reload", Value::Null);
    if s.hold_reload.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    StatusCode::OK
}

impl FakeRotor {
    async fn start() -> FakeRotor {
        let state = Arc::new(FakeState {
            retry_after_ms: AtomicUsize::new(300),
            ..FakeState::default()
        });
        let router = Router::new()
            .route("/consumers/report", post(report))
            .route("/consumers/permits", post(permit))
            .route("/consumers/permits/{id}", delete(release))
            .route("/-/reload", post(reload))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        let proxy = TcpProxy::start(addr).await;
        FakeRotor {
            state,
            addr,
            proxy,
            task,
        }
    }

    /// What the agent is configured with: the proxy, which can be switched off.
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy.port())
    }

    /// The reload endpoint, reached directly (it stands for the workload in the pod).
    fn reload_url(&self) -> String {
        format!("http://{}/-/reload", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn reports(&self) -> Vec<Value> {
        self.seen()
            .into_iter()
            .filter(|s| s.what == "report")
            .map(|s| s.body)
            .collect()
    }

    fn count(&self, prefix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.what.starts_with(prefix))
            .count()
    }

    /// Whether some report says `secret` is at `version` with `reloaded`.
    fn reported(&self, key: &str, version: Value, reloaded: Value) -> bool {
        self.reports().iter().any(|r| {
            r["secrets"].as_array().is_some_and(|secrets| {
                secrets.iter().any(|s| {
                    s["secretKey"] == key && s["version"] == version && s["reloaded"] == reloaded
                })
            })
        })
    }
}

impl Drop for FakeRotor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A mount at `dir/mnt` holding `password` (version `n`, with its marker) and `api_key`
/// (no marker), swapped as kubelet does.
fn swap(dir: &Path, value: &str, n: u64) {
    let marker = n.to_string();
    kubelet::swap(
        &dir.join("mnt"),
        &[
            ("password", value.as_bytes()),
            ("password_version", marker.as_bytes()),
            ("api_key", API_VALUE.as_bytes()),
        ],
    );
}

/// An agent configuration for the mount of [`swap`], with `agent_extra` in `[agent]`.
fn config(dir: &Path, fake: &FakeRotor, agent_extra: &str) -> String {
    std::fs::write(dir.join("consumer.token"), format!("{TOKEN}\n")).unwrap();
    format!(
        r#"[agent]
rotor_url = "{url}"
token_file = "consumer.token"
heartbeat = "300ms"
{agent_extra}

[[mounts]]
path = "{mnt}"
debounce = "50ms"
critical = ["password"]
reload = {{ type = "http", url = "{reload}", timeout = "5s" }}
files = {{ "password" = "tenant1/database_credentials", "api_key" = "tenant1/api_keys" }}
"#,
        url = fake.url(),
        reload = fake.reload_url(),
        mnt = dir.join("mnt").display(),
    )
}

/// Asserts that neither the token nor a mounted value is in `text`.
#[track_caller]
fn assert_no_secret(what: &str, text: &str) {
    for secret in [TOKEN, VALUE_1, VALUE_2, API_VALUE] {
        assert!(!text.contains(secret), "{what} holds a secret:\n{text}");
    }
}

/// The agent started with `config` on a mount at version 1 (and `env` set, `remove`
/// unset), once it has reported that version.
async fn agent_at_v1(
    dir: &Path,
    fake: &FakeRotor,
    config: &str,
    env: &[(&str, &str)],
    remove: &[&str],
) -> AgentBin {
    swap(dir, VALUE_1, 1);
    let mut agent = AgentBin::start(dir, config, env, remove);
    eventually(Duration::from_secs(20), "the first report", async || {
        agent.assert_running();
        fake.reported("database_credentials", json!(1), Value::Null)
    })
    .await;
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_is_reported_and_reloaded_once_inside_a_permit() {
    let d = tempfile::tempdir().unwrap();
    let fake = FakeRotor::start().await;
    swap(d.path(), VALUE_1, 1);
    let mut agent = AgentBin::start(
        d.path(),
        &config(
            d.path(),
            &fake,
            "consumer_id = \"web-7d9f-abc\"\nworkload = \"web\"",
        ),
        &[],
        &[],
    );

    // At start: version 1 from the marker, the file without one as null, no reload yet.
    eventually(Duration::from_secs(20), "the first report", async || {
        agent.assert_running();
        fake.reported("database_credentials", json!(1), Value::Null)
            && fake.reported("api_keys", Value::Null, Value::Null)
    })
    .await;
    let first = fake.reports()[0].clone();
    assert_eq!(first["consumerId"], "web-7d9f-abc");
    assert_eq!(first["workload"], "web");
    assert_eq!(fake.count("reload"), 0, "nothing changed yet");

    swap(d.path(), VALUE_2, 2);
    eventually(
        Duration::from_secs(20),
        "version 2 reported as reloaded",
        async || fake.reported("database_credentials", json!(2), json!(true)),
    )
    .await;
    // Heartbeats keep coming while nothing changes.
    let before = fake.reports().len();
    eventually(Duration::from_secs(10), "heartbeats", async || {
        fake.reports().len() >= before + 2
    })
    .await;

    let seen = fake.seen();
    let at = |what: &str| {
        seen.iter()
            .find(|s| s.what.starts_with(what))
            .unwrap_or_else(|| panic!("no {what} in {seen:?}"))
            .at
    };
    assert_eq!(fake.count("reload"), 1, "one swap, one reload: {seen:?}");
    assert_eq!(fake.count("permit-granted"), 1, "{seen:?}");
    assert_eq!(fake.count("permit-released permit-0"), 1, "{seen:?}");
    assert!(at("permit-granted") <= at("reload"), "permit before reload");
    assert!(at("reload") <= at("permit-released"), "released after");
    let request = seen.iter().find(|s| s.what == "permit-request").unwrap();
    assert_eq!(
        request.body,
        json!({"consumerId": "web-7d9f-abc", "workload": "web"})
    );
    assert_eq!(fake.state.unauthorized.load(Ordering::SeqCst), 0);

    // Nothing secret in any report or in the log (written at trace).
    for r in fake.reports() {
        assert_no_secret("a report", &r.to_string());
    }
    agent.assert_running();
    let log = agent.log();
    assert_logged_at_trace(&log);
    assert_no_secret("the agent's log", &log);
}

/// SIGTERM in the middle of a reload: the agent gives its permit back on the way out, so
/// the workload's other pods do not wait for rotor's `permit_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permit_held_when_the_agent_is_stopped_is_released_on_the_way_out() {
    let d = tempfile::tempdir().unwrap();
    let fake = FakeRotor::start().await;
    // The reload's own timeout (5 s) must not end it first, however slow the machine.
    let config = config(d.path(), &fake, "workload = \"web\"")
        .replace("timeout = \"5s\"", "timeout = \"5m\"");
    let mut agent = agent_at_v1(d.path(), &fake, &config, &[], &[]).await;
    fake.state.hold_reload.store(true, Ordering::SeqCst);
    swap(d.path(), VALUE_2, 2);
    eventually(
        Duration::from_secs(20),
        "the reload under way",
        async || fake.count("reload") == 1,
    )
    .await;
    assert_eq!(
        fake.count("permit-granted permit-0"),
        1,
        "{:?}",
        fake.seen()
    );
    assert_eq!(fake.count("permit-released"), 0, "the reload has not ended");
    let status = agent.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}; log:\n{}", agent.log());
    assert_eq!(
        fake.count("permit-released permit-0"),
        1,
        "{:?}\nlog:\n{}",
        fake.seen(),
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_makes_the_reload_wait_for_its_permit() {
    let d = tempfile::tempdir().unwrap();
    let fake = FakeRotor::start().await;
    fake.state.deny.store(2, Ordering::SeqCst);
    fake.state.retry_after_ms.store(400, Ordering::SeqCst);
    // Proxies from the environment are ignored (they lead nowhere here): the consumer
    // token goes to rotor_url only.
    let _agent = agent_at_v1(
        d.path(),
        &fake,
        &config(d.path(), &fake, "workload = \"web\""),
        &[
            ("HTTP_PROXY", "http://127.0.0.1:9"),
            ("http_proxy", "http://127.0.0.1:9"),
            ("ALL_PROXY", "http://127.0.0.1:9"),
        ],
        &["NO_PROXY", "no_proxy"],
    )
    .await;
    swap(d.path(), VALUE_2, 2);
    eventually(Duration::from_secs(20), "the reload", async || {
        fake.count("reload") == 1
    })
    .await;
    let seen = fake.seen();
    assert_eq!(fake.count("permit-denied"), 2, "{seen:?}");
    assert_eq!(fake.count("permit-request"), 3, "{seen:?}");
    let first = seen.iter().find(|s| s.what == "permit-request").unwrap().at;
    let reload = seen.iter().find(|s| s.what == "reload").unwrap().at;
    // Two answers of `retryAfterMs = 400` were honoured (plus jitter, never less).
    assert!(
        reload.duration_since(first) >= Duration::from_millis(800),
        "reloaded {:?} after the first request",
        reload.duration_since(first)
    );
    eventually(Duration::from_secs(10), "reloaded reported", async || {
        fake.reported("database_credentials", json!(2), json!(true))
    })
    .await;
    assert_eq!(fake.count("permit-released"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_resume_when_rotor_is_back_and_a_down_rotor_cannot_block_a_reload() {
    let d = tempfile::tempdir().unwrap();
    let fake = FakeRotor::start().await;
    let mut agent = agent_at_v1(
        d.path(),
        &fake,
        &config(d.path(), &fake, "workload = \"web\"\npermit_wait = \"1s\""),
        &[],
        &[],
    )
    .await;

    // rotor goes away; the mount changes meanwhile. The reload does not wait for rotor
    // longer than permit_wait (the reload endpoint is the pod's own, still up).
    fake.proxy.down();
    swap(d.path(), VALUE_2, 2);
    eventually(
        Duration::from_secs(20),
        "the reload without a permit",
        async || {
            agent.assert_running();
            fake.count("reload") == 1
        },
    )
    .await;
    assert_eq!(fake.count("permit-granted"), 0);
    assert!(!fake.reported("database_credentials", json!(2), json!(true)));
    assert!(
        agent.log().contains("reloading without one"),
        "{}",
        agent.log()
    );

    // rotor is back: the agent, still running, reports the new state.
    fake.proxy.up().await;
    eventually(Duration::from_secs(20), "reports resumed", async || {
        agent.assert_running();
        fake.reported("database_credentials", json!(2), json!(true))
    })
    .await;
    eventually(Duration::from_secs(10), "the recovery logged", async || {
        agent.log().contains("reports reach rotor again")
    })
    .await;
    assert_no_secret("the agent's log", &agent.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_id_defaults_to_pod_name_then_the_hostname() {
    let fake = FakeRotor::start().await;
    let pod = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    swap(pod.path(), VALUE_1, 1);
    swap(host.path(), VALUE_1, 1);
    let mut a = AgentBin::start(
        pod.path(),
        &config(pod.path(), &fake, ""),
        &[("POD_NAME", "web-5c8d9-x2x7q")],
        &[],
    );
    let mut b = AgentBin::start(
        host.path(),
        &config(host.path(), &fake, ""),
        &[],
        &["POD_NAME"],
    );
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned();
    let reported_by = |id: &str| {
        fake.reports()
            .iter()
            .any(|r| r["consumerId"] == id && r["workload"].is_null())
    };
    eventually(Duration::from_secs(20), "both agents report", async || {
        a.assert_running();
        b.assert_running();
        reported_by("web-5c8d9-x2x7q") && reported_by(&hostname)
    })
    .await;
    // Without a workload no permit is asked for.
    assert_eq!(fake.count("permit-request"), 0);
}

#[test]
fn bad_agent_configs_exit_64_naming_the_key() {
    let d = tempfile::tempdir().unwrap();
    let mount = "[[mounts]]\npath = \"/mnt/s\"\nfiles = { \"password\" = \"tenant1/db\" }\n";
    let cases = [
        (
            format!("[agent]\ntoken_file = \"t\"\n{mount}"),
            "agent.rotor_url: missing key `rotor_url`",
        ),
        (
            format!("[agent]\nrotor_url = \"http://10.0.0.1:8080\"\ntoken_file = \"t\"\n{mount}"),
            "agent.rotor_url: plain http",
        ),
        (
            format!(
                "[agent]\nrotor_url = \"http://127.0.0.1:1\"\ntoken_file = \"t\"\nworkload = \"Web App\"\n{mount}"
            ),
            "agent.workload: may hold only",
        ),
        (
            format!(
                "[agent]\nrotor_url = \"http://127.0.0.1:1\"\ntoken_file = \"t\"\nheartbeat = \"2h\"\n{mount}"
            ),
            "agent.heartbeat: must be between",
        ),
        (
            format!(
                "[agent]\nrotor_url = \"http://127.0.0.1:1\"\ntoken_file = \"t\"\n{mount}[[secrets]]\ntenant = \"tenant1\"\nkey = \"db\"\npolicy = \"api_keys\"\n"
            ),
            "secrets: belongs to a `rotor run` configuration",
        ),
        (
            "[agent]\nrotor_url = \"http://127.0.0.1:1\"\ntoken_file = \"t\"\n[[mounts]]\npath = \"/m\"\nfiles = { \"p\" = \"Tenant1\" }\n".to_owned(),
            "mounts[0].files.p: must name a secret",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let file = d.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, text).unwrap();
        for args in [vec!["check"], vec!["agent", "-c"]] {
            let out = Command::new(env!("CARGO_BIN_EXE_rotor"))
                .args(&args)
                .arg(&file)
                .env_remove("ROTOR_CONFIG")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{args:?} {text}\n{stderr}");
            assert!(
                stderr.contains(want),
                "{args:?}: want {want:?} in:\n{stderr}"
            );
        }
    }
    // A good one passes `rotor check` and says it is an agent's.
    let good = d.path().join("good.toml");
    std::fs::write(
        &good,
        format!("[agent]\nrotor_url = \"http://127.0.0.1:1\"\ntoken_file = \"t\"\nworkload = \"web\"\n{mount}"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["check"])
        .arg(&good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok (agent: 1 mounts, 1 mapped files, workload web)"),
        "{stdout}"
    );
}

/// The agent against the real rotor: rotor publishes a directory (values and their
/// `NAME_version` markers, kubelet-style), the agent watches it as its pod's mount, and
/// rotor's own consumers route lists the agent at the version it holds, then at the next
/// one after a rotation, reloaded inside a permit of rotor's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_rotor_sees_the_agent_follow_a_rotation() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let port = crate::common::rotor_bin::free_port();
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join("consumer.token"))
            .unwrap();
        writeln!(f, "{TOKEN}").unwrap();
    }
    let reload = crate::common::receiver::Receiver::start(vec![200]).await;
    let rotor_config = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
admin_token_file = "admin.token"
consumer_token_file = "consumer.token"

[store]
type = "embedded"
path = "rotor.redb"
master_key_file = "master.key"

[runtime]
shutdown_timeout = "5s"

[consumers]
max_concurrent_reloads = 1

[policies.fast]
interval = "1h"
grace = "10m"
generator = {{ type = "token", bytes = 32 }}

[[secrets]]
tenant = "tenant1"
key = "db"
policy = "fast"

[[publish]]
path = "mnt"
secrets = {{ "password" = "tenant1/db" }}
interval = "100ms"
"#
    );
    let rotor = crate::common::rotor_bin::RotorBin::start(dir, port, &rotor_config).await;
    // In a pod the volume is mounted before the containers start: wait for v1 in it.
    eventually(Duration::from_secs(30), "v1 published", async || {
        std::fs::read_to_string(dir.join("mnt/password_version")).is_ok_and(|v| v == "1")
    })
    .await;
    let mut agent = AgentBin::start(
        dir,
        &format!(
            r#"[agent]
rotor_url = "http://127.0.0.1:{port}"
token_file = "consumer.token"
consumer_id = "web-1"
workload = "web"
heartbeat = "300ms"

[[mounts]]
path = "mnt"
debounce = "50ms"
critical = ["password"]
reload = {{ type = "http", url = "{reload}", timeout = "5s" }}
files = {{ "password" = "tenant1/db" }}
"#,
            reload = reload.url()
        ),
        &[],
        &[],
    );
    let admin_token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    let consumer = async || {
        let r = crate::common::http::request(
            rotor.addr,
            "GET",
            "/admin/secrets/consumers/tenant1/db",
            Some(admin_token.trim()),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.json());
        r.json()["consumers"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["consumerId"] == "web-1").cloned())
            .unwrap_or_default()
    };
    eventually(
        Duration::from_secs(30),
        "rotor lists the agent at v1",
        async || {
            agent.assert_running();
            let c = consumer().await;
            c["version"] == 1 && c["state"] == "current" && c["workload"] == "web"
        },
    )
    .await;
    rotor.rotate("tenant1", "db").await;
    eventually(
        Duration::from_secs(30),
        "rotor lists the agent at v2, reloaded",
        async || {
            agent.assert_running();
            let c = consumer().await;
            c["version"] == 2 && c["reloaded"] == true && c["state"] == "current"
        },
    )
    .await;
    assert_eq!(reload.hits(), 1, "one rotation, one reload");
    let log = agent.log();
    assert!(log.contains("reload permit granted"), "{log}");
    assert_no_secret("the agent's log", &log);
    assert!(
        !rotor.log().contains(TOKEN),
        "the consumer token in rotor's log"
    );
}
