//! High availability, the follower's side: two admin servers on real loopback ports, a
//! leader (the actor tree over a Vault store on a private OpenBao) and a follower
//! (`ha::follower::StoreAdmin` over the same store), the leadership driven by the test
//! through `Leadership::channel`. Every write sent to the follower is answered exactly as
//! the leader answers (status, body, `Retry-After`); reads on the follower come from the
//! store and equal the leader's; without a leader a write gets 503 with `Retry-After`; a
//! forwarded write is never forwarded again; a token the follower would refuse is refused
//! there, with nothing sent on; every write the follower had to forward is counted in its
//! `rotor_forwarded_requests_total{outcome}`. The forwarded-write overhead (median of direct
//! against forwarded rotate calls) is printed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rotor::actors::tree::{self, TreeOptions};
use rotor::api::server::{self, AdminToken};
use rotor::api::{Admin, AdminError, ScheduleEntry};
use rotor::clock::Clock;
use rotor::config::Config;
use rotor::domain::{HistoryRecord, RotationId, SecretRef, VersionMeta};
use rotor::ha::follower::StoreAdmin;
use rotor::ha::{LeaderInfo, Leadership};
use rotor::metrics::Metrics;
use rotor::store::Store;
use rotor::store::vault::{VaultAuth, VaultSettings, VaultStore};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::common::embedded::admin;
use crate::common::http::{Resp, request, send_raw};
use crate::common::openbao::{OpenBao, random_name};
use crate::common::wait::eventually;

const ADMIN: &str = "admin-token";
const CONSUMER: &str = "consumer-token";
/// Secrets `tenant1/s00` .. `s49`: s00-s19 for the checks, s20-s49 for the measurement.
const SECRETS: usize = 50;
const LIMIT: Duration = Duration::from_secs(60);

/// One admin server on a loopback port, stopped on drop.
struct Replica {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
    _task: JoinHandle<std::io::Result<()>>,
}

impl Replica {
    async fn serve(listener: TcpListener, router: axum::Router) -> Replica {
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(listener, router, async {
            let _ = stopped.await;
        }));
        Replica {
            addr,
            _stop: stop,
            _task: task,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Resp {
        request(self.addr, method, path, token, body).await
    }
}

fn router(
    backend: Arc<dyn Admin>,
    leadership: Leadership,
    timeout: Duration,
    metrics: &Metrics,
) -> axum::Router {
    server::router_with_leadership(
        backend,
        AdminToken::new(ADMIN).unwrap(),
        Some(AdminToken::new(CONSUMER).unwrap()),
        timeout,
        leadership,
        metrics,
    )
    .expect("router")
}

/// The `rotor_forwarded_requests_total` series of an exposition: `(forwarded, no_leader,
/// error)`; a missing series is a failure (they exist at zero from the start).
fn forward_counts(exposition: &str) -> (u64, u64, u64) {
    let count = |outcome: &str| {
        let prefix = format!("rotor_forwarded_requests_total{{outcome=\"{outcome}\"}} ");
        exposition
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {prefix:?} series in:\n{exposition}"))
            .trim()
            .parse::<u64>()
            .expect("a count")
    };
    (count("forwarded"), count("no_leader"), count("error"))
}

fn led_by(leader: &str, url: &str, term: u64) -> LeaderInfo {
    LeaderInfo {
        leader: Some(leader.into()),
        leader_url: Some(url.into()),
        term,
    }
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// What a client can see of an answer: status, `Retry-After`, content type and the body.
fn seen(r: &Resp) -> (u16, Option<String>, Option<String>, String) {
    (
        r.status,
        r.header("retry-after").map(str::to_owned),
        r.header("content-type").map(str::to_owned),
        text(r),
    )
}

// ---------------------------------------------------------------------------------------------
// On a real store

struct Env {
    _bao: OpenBao,
    address: String,
    mount: String,
    dir: tempfile::TempDir,
    token_file: PathBuf,
}

impl Env {
    async fn start() -> Option<Env> {
        let bao = OpenBao::start().await?;
        let mount = format!("kv-{}", random_name(8));
        bao.enable_kv2(&mount).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{}\n", bao.token())).expect("write token");
        Some(Env {
            address: bao.address().to_owned(),
            _bao: bao,
            mount,
            dir,
            token_file,
        })
    }

    fn settings(&self) -> VaultSettings {
        VaultSettings {
            address: self.address.clone(),
            other_addresses: Vec::new(),
            mount: self.mount.clone(),
            path_prefix: "prod".into(),
            namespace: None,
            ca_file: None,
            master_key_file: self.dir.path().join("master.key"),
            timeout: Duration::from_secs(10),
            max_attempts: 4,
            retry_backoff: Duration::from_millis(10),
            auth: VaultAuth::Token {
                token_file: self.token_file.clone(),
            },
            proxy: None,
            allow_insecure_http: false,
        }
    }

    /// The Vault store, consumer reports with one reload at a time per workload, and
    /// [`SECRETS`] secrets rotating hourly with ten minutes of grace (the `none` target).
    fn config(&self) -> Config {
        let mut text = format!(
            r#"
[store]
type = "vault"
address = "{address}"
mount = "{mount}"
path_prefix = "prod"
master_key_file = "{dir}/master.key"
auth = {{ method = "token", token_file = "{token}" }}

[server]
consumer_token_file = "{dir}/consumer.token"

[consumers]
max_concurrent_reloads = 1
permit_timeout = "1m"

[policies.fast]
interval = "1h"
grace = "10m"
generator = {{ type = "token", bytes = 32 }}
"#,
            address = self.address,
            mount = self.mount,
            dir = self.dir.path().display(),
            token = self.token_file.display(),
        );
        for i in 0..SECRETS {
            text.push_str(&format!(
                "\n[[secrets]]\ntenant = \"tenant1\"\nkey = \"s{i:02}\"\npolicy = \"fast\"\n"
            ));
        }
        Config::from_str_with_env(&text, "ha.toml", &|_| None).expect("valid config")
    }

    /// One secret `tenant1/jwt` whose `jwks` target (ed25519) writes its key set into
    /// this environment's directory, on the Vault store.
    fn jwks_config(&self) -> Config {
        let text = format!(
            r#"
[store]
type = "vault"
address = "{address}"
mount = "{mount}"
path_prefix = "jwks"
master_key_file = "{dir}/master.key"
auth = {{ method = "token", token_file = "{token}" }}

[policies.signing]
interval = "1h"
grace = "10m"
generator = {{ type = "ed25519" }}

[[secrets]]
tenant = "tenant1"
key = "jwt"
policy = "signing"
target = {{ type = "jwks", path = "{dir}/jwks.json", algorithm = "ed25519" }}
"#,
            address = self.address,
            mount = self.mount,
            dir = self.dir.path().display(),
            token = self.token_file.display(),
        );
        Config::from_str_with_env(&text, "ha-jwks.toml", &|_| None).expect("valid config")
    }
}

fn secret_body(key: &str) -> String {
    format!(r#"{{"tenantId":"tenant1","secretKey":"{key}"}}"#)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// A leader "rotor-a" (`cfg`'s actor tree on the Vault store) and a follower "rotor-b"
/// (a `StoreAdmin` on a store client of its own, one registry for its backend and its
/// router, as `rotor run` has), both told by the test that rotor-a leads at term 1.
struct LeaderAndFollower {
    tree: tree::Tree,
    leader_admin: Arc<rotor::actors::admin::ActorAdmin>,
    a: Replica,
    b: Replica,
    metrics_b: Metrics,
    /// What each replica believes of the leader (kept: dropping a sender ends it).
    tell_a: tokio::sync::watch::Sender<LeaderInfo>,
    tell_b: tokio::sync::watch::Sender<LeaderInfo>,
}

impl LeaderAndFollower {
    async fn start(env: &Env, cfg: &Config) -> Self {
        let store_a: Arc<dyn Store> =
            Arc::new(VaultStore::open(env.settings()).await.expect("open"));
        let options = TreeOptions {
            namespace: format!("{}/{}/", env.dir.path().display(), random_name(6)),
            ..TreeOptions::default()
        };
        let tree = tree::start(cfg, store_a, Metrics::new(), options)
            .await
            .expect("tree starts");
        let leader_admin = Arc::new(admin(&tree));
        let listener_a = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url_a = format!("http://{}", listener_a.local_addr().unwrap());
        let (tell_a, lead_a) = Leadership::channel("rotor-a");
        let (tell_b, lead_b) = Leadership::channel("rotor-b");
        tell_a.send_replace(led_by("rotor-a", &url_a, 1));
        tell_b.send_replace(led_by("rotor-a", &url_a, 1));
        let a = Replica::serve(
            listener_a,
            router(
                leader_admin.clone(),
                lead_a,
                Duration::from_secs(10),
                &Metrics::new(),
            ),
        )
        .await;
        let store_b: Arc<dyn Store> =
            Arc::new(VaultStore::open(env.settings()).await.expect("open"));
        let metrics_b = Metrics::new();
        let follower = StoreAdmin::new(cfg, store_b, metrics_b.clone(), Clock::System);
        let b = Replica::serve(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            router(
                Arc::new(follower),
                lead_b,
                Duration::from_secs(10),
                &metrics_b,
            ),
        )
        .await;
        LeaderAndFollower {
            tree,
            leader_admin,
            a,
            b,
            metrics_b,
            tell_a,
            tell_b,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_every_write_as_the_leader_and_reads_what_the_leader_reads() {
    let Some(env) = Env::start().await else {
        return;
    };
    let cfg = env.config();
    let LeaderAndFollower {
        mut tree,
        leader_admin,
        a,
        b,
        tell_b: _tell_b,
        tell_a: _tell_a,
        ..
    } = LeaderAndFollower::start(&env, &cfg).await;

    eventually(LIMIT, "every secret's first version", async || {
        leader_admin.ready()
            && leader_admin
                .schedule()
                .await
                .is_ok_and(|s| s.len() == SECRETS && s.iter().all(|e| e.current_version == Some(1)))
    })
    .await;

    // Probes and metrics are the follower's own.
    assert_eq!(b.call("GET", "/healthz", None, None).await.status, 200);
    let r = b.call("GET", "/readyz", None, None).await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (200, "ready".into())
    );
    let r = b.call("GET", "/metrics", None, None).await;
    assert_eq!(r.status, 200);
    assert!(
        text(&r).contains(&format!("rotor_secrets_managed {SECRETS}")),
        "{}",
        text(&r)
    );

    // Answers that depend only on the leader's state are the same, byte for byte, whether
    // the write went to the leader or through the follower.
    for (method, path, token, body) in [
        (
            "POST",
            "/admin/secrets/rollback",
            ADMIN,
            Some(secret_body("s01")),
        ),
        (
            "POST",
            "/admin/secrets/rotate",
            ADMIN,
            Some(secret_body("nope")),
        ),
        (
            "POST",
            "/admin/secrets/rotate",
            ADMIN,
            Some(r#"{"tenantId":"tenant1"}"#.into()),
        ),
        (
            "POST",
            "/admin/secrets/rotate-all",
            ADMIN,
            Some(r#"{"policy":"fast"}"#.into()),
        ),
        ("DELETE", "/admin/jobs/no-such-job", ADMIN, None),
        (
            "PUT",
            "/admin/secrets/rotate",
            ADMIN,
            Some(secret_body("s01")),
        ),
        ("DELETE", "/consumers/permits/xyz", CONSUMER, None),
    ] {
        let direct = a.call(method, path, Some(token), body.as_deref()).await;
        let forwarded = b.call(method, path, Some(token), body.as_deref()).await;
        assert!(direct.status >= 400, "{method} {path}: {}", text(&direct));
        assert_eq!(seen(&forwarded), seen(&direct), "{method} {path}");
    }

    // A rotation asked of the follower is the leader's; so is the rollback of it, and the
    // history record that ends it, which the follower reads from the store as the leader.
    let r = b
        .call(
            "POST",
            "/admin/secrets/rotate",
            Some(ADMIN),
            Some(&secret_body("s00")),
        )
        .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    // The seven writes above and this one went to the leader, as the follower's own
    // /metrics says.
    let exposition = b.call("GET", "/metrics", None, None).await;
    assert_eq!(forward_counts(&text(&exposition)), (8, 0, 0));
    let accepted = r.json();
    assert_eq!(
        (
            &accepted["tenantId"],
            &accepted["secretKey"],
            &accepted["status"]
        ),
        (
            &Value::from("tenant1"),
            &Value::from("s00"),
            &Value::from("accepted")
        )
    );
    let rotation = accepted["rotationId"].clone();
    eventually(LIMIT, "s00 in grace, read on the follower", async || {
        let r = b
            .call("GET", "/admin/secrets/schedule", Some(ADMIN), None)
            .await;
        r.json()["secrets"].as_array().is_some_and(|s| {
            s.iter().any(|e| {
                e["secretKey"] == "s00" && e["phase"] == "grace" && e["currentVersion"] == 2
            })
        })
    })
    .await;
    let r = b
        .call(
            "POST",
            "/admin/secrets/rollback",
            Some(ADMIN),
            Some(&secret_body("s00")),
        )
        .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    assert_eq!(r.json()["rotationId"], rotation);
    let path = "/admin/secrets/history/tenant1/s00";
    eventually(
        LIMIT,
        "the rolled back rotation in the history",
        async || {
            let r = b.call("GET", path, Some(ADMIN), None).await;
            r.status == 200
                && r.json()["rotations"][0]["rotationId"] == rotation
                && r.json()["rotations"][0]["outcome"] == "rolled_back"
        },
    )
    .await;
    for path in [
        "/admin/secrets/history/tenant1/s00",
        "/admin/secrets/versions/tenant1/s00",
        "/admin/secrets/versions/tenant1/s01",
    ] {
        let direct = a.call("GET", path, Some(ADMIN), None).await;
        let follower = b.call("GET", path, Some(ADMIN), None).await;
        assert_eq!(direct.status, 200, "{path}");
        assert_eq!(follower.json(), direct.json(), "{path}");
    }

    // Reload permits: the leader's grant, its 429 with Retry-After (the same as asked
    // directly), and a release through the follower frees the slot.
    let permit = |id: &str| format!(r#"{{"consumerId":"{id}","workload":"web"}}"#);
    let r = b
        .call(
            "POST",
            "/consumers/permits",
            Some(CONSUMER),
            Some(&permit("web-1")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let granted = r.json()["permitId"].as_str().expect("permitId").to_owned();
    let forwarded = b
        .call(
            "POST",
            "/consumers/permits",
            Some(CONSUMER),
            Some(&permit("web-2")),
        )
        .await;
    let direct = a
        .call(
            "POST",
            "/consumers/permits",
            Some(CONSUMER),
            Some(&permit("web-2")),
        )
        .await;
    assert_eq!(forwarded.status, 429, "{}", text(&forwarded));
    assert_eq!(forwarded.header("retry-after"), Some("1"));
    assert_eq!(seen(&forwarded), seen(&direct));
    let r = b
        .call(
            "DELETE",
            &format!("/consumers/permits/{granted}"),
            Some(CONSUMER),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", text(&r));
    let r = b
        .call(
            "POST",
            "/consumers/permits",
            Some(CONSUMER),
            Some(&permit("web-2")),
        )
        .await;
    assert_eq!(r.status, 200, "the slot was freed: {}", text(&r));

    // A report through the follower; the consumer list reads the same on both.
    let report = r#"{"consumerId":"web-1","workload":"web","secrets":[{"tenantId":"tenant1","secretKey":"s01","version":1,"reloaded":true}]}"#;
    let r = b
        .call("POST", "/consumers/report", Some(CONSUMER), Some(report))
        .await;
    assert_eq!((r.status, text(&r)), (200, r#"{"status":"ok"}"#.into()));
    let path = "/admin/secrets/consumers/tenant1/s01";
    let direct = a.call("GET", path, Some(ADMIN), None).await;
    let follower = b.call("GET", path, Some(ADMIN), None).await;
    assert_eq!(direct.json()["consumers"][0]["state"], "current");
    assert_eq!(follower.json(), direct.json());

    // An emergency job started through the follower; its progress read on the follower
    // (from the store) ends as the leader's; cancelling it then is the leader's 409.
    let r = b
        .call(
            "POST",
            "/admin/secrets/rotate-all",
            Some(ADMIN),
            Some(
                r#"{"tenantId":"tenant1","keyGlob":"s1?","ratePerSecond":100,"maxConcurrent":10}"#,
            ),
        )
        .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let job = r.json()["jobId"].as_str().expect("jobId").to_owned();
    assert_eq!(r.json()["total"], 10);
    let path = format!("/admin/jobs/{job}");
    eventually(
        LIMIT,
        "the job finished, read on the follower",
        async || {
            let r = b.call("GET", &path, Some(ADMIN), None).await;
            r.status == 200 && r.json()["state"] == "finished"
        },
    )
    .await;
    eventually(LIMIT, "the job's view the same on both", async || {
        let direct = a.call("GET", &path, Some(ADMIN), None).await.json();
        direct == b.call("GET", &path, Some(ADMIN), None).await.json()
    })
    .await;
    let direct = a.call("DELETE", &path, Some(ADMIN), None).await;
    let forwarded = b.call("DELETE", &path, Some(ADMIN), None).await;
    assert_eq!(direct.status, 409, "{}", text(&direct));
    assert_eq!(seen(&forwarded), seen(&direct));
    let r = b
        .call("GET", "/admin/jobs/not-a-job", Some(ADMIN), None)
        .await;
    assert_eq!(r.status, 404, "{}", text(&r));

    // The overhead of forwarding: rotate calls straight to the leader against the same
    // calls through the follower, alternating, each on a secret of its own.
    let (mut direct, mut forwarded) = (Vec::new(), Vec::new());
    for i in 0..(SECRETS - 20) / 2 {
        for (replica, times, key) in [
            (&a, &mut direct, 20 + 2 * i),
            (&b, &mut forwarded, 21 + 2 * i),
        ] {
            let started = Instant::now();
            let r = replica
                .call(
                    "POST",
                    "/admin/secrets/rotate",
                    Some(ADMIN),
                    Some(&secret_body(&format!("s{key:02}"))),
                )
                .await;
            times.push(started.elapsed());
            assert_eq!(r.status, 202, "s{key:02}: {}", text(&r));
        }
    }
    let n = direct.len();
    let (d, f) = (median(direct), median(forwarded));
    println!(
        "forwarded-write overhead: rotate median {d:?} direct, {f:?} through a follower, overhead {:?} (n={n} each, OpenBao store, loopback)",
        f.saturating_sub(d)
    );

    // Once nothing is in flight, the schedule reads the same on both.
    eventually(LIMIT, "the same schedule on both", async || {
        let direct = a
            .call("GET", "/admin/secrets/schedule", Some(ADMIN), None)
            .await
            .json();
        let settled = direct["secrets"].as_array().is_some_and(|s| {
            s.iter()
                .all(|e| e["phase"] == "grace" || e["phase"] == "idle")
        });
        settled
            && direct
                == b.call("GET", "/admin/secrets/schedule", Some(ADMIN), None)
                    .await
                    .json()
    })
    .await;
    tree.shutdown(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------------
// Without a store: what the follower refuses by itself

/// A backend that counts the writes it takes and answers reads with nothing.
#[derive(Default)]
struct Counting {
    rotations: AtomicUsize,
}

impl Admin for Counting {
    fn rotate(&self, _: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        self.rotations.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(RotationId(7)) })
    }
    fn rollback(&self, _: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        Box::pin(async { Err(AdminError::Conflict("nothing to roll back".into())) })
    }
    fn versions(&self, _: SecretRef) -> BoxFuture<'_, Result<Vec<VersionMeta>, AdminError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn history(
        &self,
        _: SecretRef,
        _: usize,
    ) -> BoxFuture<'_, Result<Vec<HistoryRecord>, AdminError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn schedule(&self) -> BoxFuture<'_, Result<Vec<ScheduleEntry>, AdminError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn metrics_text(&self) -> BoxFuture<'_, Result<String, AdminError>> {
        Box::pin(async { Ok(String::new()) })
    }
    fn ready(&self) -> bool {
        true
    }
}

/// A "leader" that accepts connections, counts them and never answers.
async fn silent_leader() -> (String, Arc<AtomicUsize>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (url, accepted, task)
}

#[tokio::test]
async fn without_a_leader_writes_get_503_and_a_follower_sends_on_nothing_it_would_refuse() {
    let (silent_url, accepted, _silent) = silent_leader().await;
    let backend = Arc::new(Counting::default());
    let (tell, lead) = Leadership::channel("rotor-b");
    let metrics = Metrics::new();
    let b = Replica::serve(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        router(backend.clone(), lead, Duration::from_secs(1), &metrics),
    )
    .await;
    let counts = || forward_counts(&metrics.encode().unwrap());
    assert_eq!(counts(), (0, 0, 0));
    let rotate = secret_body("s00");
    let report = r#"{"consumerId":"web-1","secrets":[]}"#;

    // No leader: every write is 503 with Retry-After, reads are served.
    for (method, path, token, body) in [
        (
            "POST",
            "/admin/secrets/rotate",
            ADMIN,
            Some(rotate.as_str()),
        ),
        (
            "POST",
            "/admin/secrets/rotate-all",
            ADMIN,
            Some(r#"{"all":true}"#),
        ),
        ("DELETE", "/admin/jobs/j1", ADMIN, None),
        ("POST", "/consumers/report", CONSUMER, Some(report)),
        ("DELETE", "/consumers/permits/ab12", CONSUMER, None),
    ] {
        let r = b.call(method, path, Some(token), body).await;
        assert_eq!(r.status, 503, "{method} {path}: {}", text(&r));
        assert_eq!(r.header("retry-after"), Some("2"), "{method} {path}");
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("no replica leads"),
            "{}",
            text(&r)
        );
    }
    assert_eq!(counts(), (0, 5, 0), "five writes with no leader");
    let r = b
        .call("GET", "/admin/secrets/schedule", Some(ADMIN), None)
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));

    // Led by a replica that never answers.
    tell.send_replace(led_by("rotor-a", &silent_url, 1));
    // Refused here, nothing sent on: no token, a wrong one, the other route's token.
    for (method, path, token, body, status) in [
        (
            "POST",
            "/admin/secrets/rotate",
            None,
            Some(rotate.as_str()),
            401,
        ),
        (
            "POST",
            "/admin/secrets/rotate",
            Some("wrong"),
            Some(rotate.as_str()),
            401,
        ),
        (
            "POST",
            "/admin/secrets/rotate",
            Some(CONSUMER),
            Some(rotate.as_str()),
            403,
        ),
        ("POST", "/consumers/report", Some(ADMIN), Some(report), 403),
        (
            "POST",
            "/consumers/report",
            Some("wrong"),
            Some(report),
            401,
        ),
    ] {
        let r = b.call(method, path, token, body).await;
        assert_eq!(r.status, status, "{method} {path} {token:?}: {}", text(&r));
        assert!(!text(&r).contains(ADMIN) && !text(&r).contains(CONSUMER));
    }
    // A forwarded write that reaches a replica that does not lead stops here.
    let raw = format!(
        "POST /admin/secrets/rotate HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nX-Rotor-Forwarded: rotor-c\r\nContent-Length: {}\r\n\r\n{rotate}",
        rotate.len()
    );
    let r = send_raw(b.addr, raw.as_bytes()).await;
    assert_eq!(r.status, 503, "{}", text(&r));
    assert_eq!(r.header("retry-after"), Some("2"));
    assert!(text(&r).contains("never forwarded again"), "{}", text(&r));
    // Refused for its token (above) or its size (below): never forwarded, not counted.
    assert_eq!(counts(), (0, 6, 0));
    // A body over the limit is refused before anything is sent.
    let big = format!(
        r#"{{"tenantId":"tenant1","secretKey":"{}"}}"#,
        "x".repeat(20_000)
    );
    let r = b
        .call("POST", "/admin/secrets/rotate", Some(ADMIN), Some(&big))
        .await;
    assert_eq!(r.status, 413, "{}", text(&r));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "nothing reached the leader"
    );
    assert_eq!(counts(), (0, 6, 0));

    // A leader that does not answer: 503 with Retry-After once the forwarding times out
    // (four fifths of the one-second request limit).
    let started = Instant::now();
    let r = b
        .call("POST", "/admin/secrets/rotate", Some(ADMIN), Some(&rotate))
        .await;
    assert_eq!(r.status, 503, "{}", text(&r));
    assert_eq!(r.header("retry-after"), Some("2"));
    assert!(text(&r).contains("did not answer"), "{}", text(&r));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the write went to the leader"
    );

    // A leader that cannot be reached (its port closed).
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    tell.send_replace(led_by("rotor-a", &closed_url, 2));
    let r = b
        .call("POST", "/admin/secrets/rotate", Some(ADMIN), Some(&rotate))
        .await;
    assert_eq!(r.status, 503, "{}", text(&r));
    assert!(text(&r).contains("cannot be reached"), "{}", text(&r));
    assert_eq!(counts(), (0, 6, 2), "a silent and an unreachable leader");

    // A leader that answers: its answers, whatever their status, count as forwarded.
    let leader_backend = Arc::new(Counting::default());
    let (tell_a, lead_a) = Leadership::channel("rotor-a");
    let listener_a = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url_a = format!("http://{}", listener_a.local_addr().unwrap());
    tell_a.send_replace(led_by("rotor-a", &url_a, 2));
    let leader_metrics = Metrics::new();
    let _a = Replica::serve(
        listener_a,
        router(
            leader_backend.clone(),
            lead_a,
            Duration::from_secs(1),
            &leader_metrics,
        ),
    )
    .await;
    tell.send_replace(led_by("rotor-a", &url_a, 2));
    let r = b
        .call("POST", "/admin/secrets/rotate", Some(ADMIN), Some(&rotate))
        .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    let r = b
        .call(
            "POST",
            "/admin/secrets/rollback",
            Some(ADMIN),
            Some(&rotate),
        )
        .await;
    assert_eq!(r.status, 409, "{}", text(&r));
    assert_eq!(leader_backend.rotations.load(Ordering::SeqCst), 1);
    assert_eq!(counts(), (2, 6, 2));
    assert_eq!(
        forward_counts(&leader_metrics.encode().unwrap()),
        (0, 0, 0),
        "the leader forwards nothing"
    );

    // This replica leads now: the write is its own.
    assert_eq!(backend.rotations.load(Ordering::SeqCst), 0);
    tell.send_replace(LeaderInfo {
        leader: Some("rotor-b".into()),
        leader_url: None,
        term: 3,
    });
    let r = b
        .call("POST", "/admin/secrets/rotate", Some(ADMIN), Some(&rotate))
        .await;
    assert_eq!(r.status, 202, "{}", text(&r));
    assert_eq!(backend.rotations.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// The public key set: only the leader's targets hold it

/// `GET /jwks/{tenant}/{key}` on a follower is the leader's answer (body, `ETag`,
/// `Cache-Control`, content type), a conditional GET with the leader's `ETag` is the
/// leader's 304, an unknown secret the leader's 404; without a leader it is 503 with
/// `Retry-After`. Each forwarded GET is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serves_the_leaders_public_key_set() {
    let Some(env) = Env::start().await else {
        return;
    };
    let cfg = env.jwks_config();
    let LeaderAndFollower {
        mut tree,
        a,
        b,
        metrics_b,
        tell_b,
        tell_a: _tell_a,
        ..
    } = LeaderAndFollower::start(&env, &cfg).await;

    let path = "/jwks/tenant1/jwt";
    let direct = eventually(LIMIT, "the leader serves the first key", async || {
        let r = a.call("GET", path, None, None).await;
        (r.status == 200).then_some(r)
    })
    .await;
    let set: Value = serde_json::from_slice(&direct.body).expect("a JWK set");
    assert_eq!(set["keys"][0]["kid"], "tenant1.jwt.v1", "{}", text(&direct));
    let etag = direct.header("etag").expect("an ETag").to_owned();

    let forwarded = b.call("GET", path, None, None).await;
    assert_eq!(seen(&forwarded), seen(&direct));
    for name in ["etag", "cache-control"] {
        assert_eq!(forwarded.header(name), direct.header(name), "{name}");
    }
    let conditional = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"
    );
    let r = send_raw(b.addr, conditional.as_bytes()).await;
    assert_eq!(r.status, 304, "{}", text(&r));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let unknown = "/jwks/tenant1/nope";
    assert_eq!(
        seen(&b.call("GET", unknown, None, None).await),
        seen(&a.call("GET", unknown, None, None).await)
    );
    assert_eq!(forward_counts(&metrics_b.encode().unwrap()), (3, 0, 0));

    // No leader: the follower cannot answer for the leader's targets.
    tell_b.send_replace(LeaderInfo::none(1));
    let r = b.call("GET", path, None, None).await;
    assert_eq!(r.status, 503, "{}", text(&r));
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(forward_counts(&metrics_b.encode().unwrap()), (3, 1, 0));
    tree.shutdown(Duration::from_secs(5)).await;
}
