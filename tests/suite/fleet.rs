//! A fleet of workload pods against the real parts: a private OpenBao holding rotor's
//! store and a Vault view of a PostgreSQL credential (alternating role pair on the
//! machine's PostgreSQL, whose `rotor_managed` roles must prove their password with
//! scram-sha-256), a CSI-driver stand-in copying the view into each pod's mount with
//! kubelet's `..data` swap, and per pod a `rotor agent` process in front of a consumer
//! stub that keeps logging into PostgreSQL with the credential it last reloaded.
//!
//! What it shows, on the real `rotor` binary:
//! - over ten rotations no live consumer ever fails a login: the previous credential
//!   expires only once every live pod has reloaded the new one;
//! - an agent frozen with SIGSTOP shows as `lagging` and holds expiry back until its ttl
//!   runs out; rotor then expires, names it in the history and counts it for the alert;
//! - a killed agent is `gone` after the ttl and holds nothing back;
//! - twenty agents of one workload with `max_concurrent_reloads = 2` never reload more than
//!   two at a time, and all of them finish;
//! - the time from promotion to the last live consumer's acknowledgement (printed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::agent_bin::AgentBin;
use crate::common::csi::CsiDriver;
use crate::common::http::request;
use crate::common::openbao::OpenBao;
use crate::common::pg_consumer::{Concurrency, PgConsumer};
use crate::common::postgres::{Roles, psql, setup};
use crate::common::rotor_bin::{RotorBin, free_port};
use crate::common::targets::{random_name, service_or_skip};
use crate::common::wait::eventually;

const CONSUMER_TOKEN: &str = "fleet-consumer-token-0123456789abcdef";
const VIEW_PATH: &str = "rotor/database";

struct Pod {
    id: String,
    consumer: PgConsumer,
    agent: Option<AgentBin>,
    _dir: PathBuf,
}

struct Fleet {
    _bao: OpenBao,
    rotor: RotorBin,
    admin_token: String,
    _csi: CsiDriver,
    pods: Vec<Pod>,
    _roles: Roles,
    _dir: tempfile::TempDir,
}

struct Options {
    pods: usize,
    /// `Some(workload)`: every agent names it and asks for reload permits.
    workload: Option<&'static str>,
    max_concurrent_reloads: u32,
    ttl: &'static str,
    /// How long each consumer's reload takes (so overlapping reloads can be seen).
    reload_takes: Duration,
    login_every: Duration,
    concurrency: Option<Arc<Concurrency>>,
}

impl Fleet {
    async fn start(o: Options) -> Option<Fleet> {
        if !service_or_skip("PostgreSQL", setup()) {
            return None;
        }
        let bao = OpenBao::start().await?;
        // A dev server mounts KV v2 at `secret/`, where the CSI provider reads by default.
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path();

        // Two NOLOGIN roles rotor alternates between, and an admin role that may alter them.
        let base = random_name("rotor_fleet");
        let (blue, green, admin) = (
            format!("{base}_blue"),
            format!("{base}_green"),
            format!("{base}_admin"),
        );
        let roles = Roles(vec![blue.clone(), green.clone(), admin.clone()]);
        assert!(psql(&format!(
            "CREATE ROLE \"{blue}\" NOLOGIN IN ROLE rotor_managed; \
             CREATE ROLE \"{green}\" NOLOGIN IN ROLE rotor_managed; \
             CREATE ROLE \"{admin}\" LOGIN CREATEROLE PASSWORD 'fleet-admin-pw-1' IN ROLE rotor_managed; \
             GRANT \"{blue}\", \"{green}\" TO \"{admin}\" WITH ADMIN OPTION"
        )));
        write_private(
            &dir.join("admin.url"),
            &format!("postgresql://{admin}:fleet-admin-pw-1@127.0.0.1:5432/test"),
        );
        write_private(&dir.join("vault.token"), bao.token());
        write_private(&dir.join("consumer.token"), CONSUMER_TOKEN);

        let port = free_port();
        let config = format!(
            r#"[server]
listen = "127.0.0.1:{port}"
admin_token_file = "admin.token"
consumer_token_file = "consumer.token"

[store]
type = "vault"
address = "{address}"
mount = "secret"
path_prefix = "rotor-store"
master_key_file = "master.key"
auth = {{ method = "token", token_file = "vault.token" }}

[runtime]
shutdown_timeout = "5s"
retry_backoff = "1s"
retry_backoff_max = "2s"

[consumers]
ttl = "{ttl}"
max_concurrent_reloads = {max}
permit_timeout = "20s"

[policies.db]
manual = true
grace = "1s"
generator = {{ type = "password", length = 24 }}
max_attempts = 1

[[secrets]]
tenant = "tenant1"
key = "db"
policy = "db"
target = {{ type = "postgres", admin_url_file = "admin.url", strategy = "alternating", roles = ["{blue}", "{green}"] }}

[[publish]]
type = "vault"
mount = "secret"
path = "{VIEW_PATH}"
interval = "200ms"
fields = {{ username = "tenant1/db#username", password = "tenant1/db#password" }}
"#,
            address = bao.address(),
            ttl = o.ttl,
            max = o.max_concurrent_reloads,
        );
        let rotor = RotorBin::start(dir, port, &config).await;
        let admin_token = std::fs::read_to_string(dir.join("admin.token"))
            .expect("admin token")
            .trim()
            .to_owned();

        let mut pods = Vec::new();
        let mut mounts = Vec::new();
        for i in 0..o.pods {
            let pod_dir = dir.join(format!("pod-{i}"));
            std::fs::create_dir_all(&pod_dir).expect("pod dir");
            let mount = pod_dir.join("mnt");
            mounts.push(mount.clone());
            let consumer = PgConsumer::start(
                mount.clone(),
                o.login_every,
                o.reload_takes,
                o.concurrency.clone(),
            )
            .await;
            pods.push(Pod {
                id: format!("pod-{i}"),
                consumer,
                agent: None,
                _dir: pod_dir,
            });
        }
        let csi = CsiDriver::start(
            bao.address(),
            bao.token(),
            "secret",
            VIEW_PATH,
            mounts,
            Duration::from_millis(300),
        );
        let fleet_dir = dir.to_owned();
        for (i, pod) in pods.iter_mut().enumerate() {
            let pod_dir = fleet_dir.join(format!("pod-{i}"));
            let workload = o
                .workload
                .map(|w| format!("workload = \"{w}\"\n"))
                .unwrap_or_default();
            let agent_config = format!(
                r#"[agent]
rotor_url = "http://127.0.0.1:{port}"
token_file = "{token}"
consumer_id = "{id}"
{workload}heartbeat = "500ms"
permit_wait = "60s"

[[mounts]]
path = "mnt"
debounce = "100ms"
critical = ["username", "password"]
reload = {{ type = "http", url = "{reload}", timeout = "10s" }}
files = {{ "username" = "tenant1/db", "password" = "tenant1/db" }}
"#,
                token = fleet_dir.join("consumer.token").display(),
                id = pod.id,
                reload = pod.consumer.reload_url(),
            );
            pod.agent = Some(AgentBin::start(&pod_dir, &agent_config, &[], &[]));
        }
        Some(Fleet {
            _bao: bao,
            rotor,
            admin_token,
            _csi: csi,
            pods,
            _roles: roles,
            _dir: d,
        })
    }

    async fn get(&self, path: &str) -> Value {
        let r = request(self.rotor.addr, "GET", path, Some(&self.admin_token), None).await;
        assert_eq!(r.status, 200, "GET {path}: {:?}", r.json());
        r.json()
    }

    /// `(version, labels, promotedAt, expiredAt)` of every version.
    async fn versions(&self) -> Vec<(u64, Vec<String>, Option<DateTime<Utc>>)> {
        self.get("/admin/secrets/versions/tenant1/db").await["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .map(|v| {
                (
                    v["version"].as_u64().expect("version"),
                    v["labels"]
                        .as_array()
                        .expect("labels")
                        .iter()
                        .map(|l| l.as_str().expect("label").to_owned())
                        .collect(),
                    v["promotedAt"]
                        .as_str()
                        .map(|t| t.parse().expect("promotedAt")),
                )
            })
            .collect()
    }

    async fn labelled(&self, label: &str) -> Option<(u64, Option<DateTime<Utc>>)> {
        self.versions()
            .await
            .into_iter()
            .find(|(_, labels, _)| labels.iter().any(|l| l == label))
            .map(|(v, _, at)| (v, at))
    }

    /// Consumer id to `(version, state)`.
    async fn consumers(&self) -> BTreeMap<String, (Option<u64>, String)> {
        self.get("/admin/secrets/consumers/tenant1/db").await["consumers"]
            .as_array()
            .expect("consumers")
            .iter()
            .map(|c| {
                (
                    c["consumerId"].as_str().expect("consumerId").to_owned(),
                    (
                        c["version"].as_u64(),
                        c["state"].as_str().expect("state").to_owned(),
                    ),
                )
            })
            .collect()
    }

    /// Starts a rotation, once the one before has finished (its revoke step may still run
    /// after the previous version's label is gone: 409 until then).
    async fn rotate(&self) {
        eventually(
            Duration::from_secs(60),
            "rotor to accept a rotation",
            async || {
                let r = request(
                    self.rotor.addr,
                    "POST",
                    "/admin/secrets/rotate",
                    Some(&self.admin_token),
                    Some(&json!({"tenantId": "tenant1", "secretKey": "db"}).to_string()),
                )
                .await;
                assert!(
                    r.status == 202 || r.status == 409,
                    "rotate: {} {:?}",
                    r.status,
                    r.json()
                );
                r.status == 202
            },
        )
        .await;
    }

    fn assert_agents_running(&mut self) {
        for pod in &mut self.pods {
            if let Some(a) = pod.agent.as_mut() {
                a.assert_running();
            }
        }
    }

    /// Rotates once and waits for the new version to be promoted, for every consumer in
    /// `live` to report it, and for the previous version to expire. Returns the time from
    /// promotion to the last live acknowledgement.
    async fn rotate_and_settle(&mut self, live: &[&str], limit: Duration) -> Duration {
        let (before, _) = self.labelled("current").await.expect("a current version");
        self.rotate().await;
        let mut promoted: Option<(u64, DateTime<Utc>)> = None;
        eventually(limit, "the new version to be promoted", async || match self
            .labelled("current")
            .await
        {
            Some((v, Some(at))) if v > before => {
                promoted = Some((v, at));
                true
            }
            _ => false,
        })
        .await;
        let (version, promoted_at) = promoted.expect("promoted");
        let mut acked_at = None;
        eventually(
            limit,
            format_args!("every live consumer ({live:?}) to report v{version}"),
            async || {
                self.assert_agents_running();
                let c = self.consumers().await;
                let all = live.iter().all(|id| {
                    c.get(*id)
                        .is_some_and(|(v, state)| *v == Some(version) && state == "current")
                });
                if all {
                    acked_at = Some(Utc::now());
                }
                all
            },
        )
        .await;
        eventually(limit, "the previous version to expire", async || {
            self.labelled("previous").await.is_none()
        })
        .await;
        (acked_at.expect("acknowledged") - promoted_at)
            .to_std()
            .unwrap_or_default()
    }

    fn failed_logins(&self, ids: &[&str]) -> Vec<(String, u64, Option<String>)> {
        self.pods
            .iter()
            .filter(|p| ids.contains(&p.id.as_str()))
            .filter(|p| p.consumer.failed() > 0)
            .map(|p| {
                (
                    p.id.clone(),
                    p.consumer.failed(),
                    p.consumer.last_error.lock().expect("error").clone(),
                )
            })
            .collect()
    }

    async fn metric(&self, name_and_labels: &str) -> f64 {
        let r = request(self.rotor.addr, "GET", "/metrics", None, None).await;
        String::from_utf8_lossy(&r.body)
            .lines()
            .find_map(|l| {
                l.strip_prefix(name_and_labels)
                    .and_then(|rest| rest.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    }
}

fn write_private(path: &Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("a private file");
    writeln!(f, "{text}").expect("write");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn print_latency(what: &str, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "{what}: promotion to last live acknowledgement over {} rotations: p50 {:?} p99 {:?} max {:?}",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
}

fn signal(agent: &AgentBin, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &agent.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig}");
}

/// Five pods, ten rotations without a failed login, then a frozen agent and a killed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_pods_never_fail_a_login_and_late_or_dead_agents_are_handled() {
    let Some(mut fleet) = Fleet::start(Options {
        pods: 5,
        workload: None,
        max_concurrent_reloads: 1,
        ttl: "10s",
        reload_takes: Duration::ZERO,
        login_every: Duration::from_millis(100),
        concurrency: None,
    })
    .await
    else {
        return;
    };
    let all: Vec<String> = fleet.pods.iter().map(|p| p.id.clone()).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let limit = Duration::from_secs(60);

    // Every pod first holds v1 and has logged in with it.
    eventually(limit, "every pod to report v1 and log in", async || {
        fleet.assert_agents_running();
        let c = fleet.consumers().await;
        all.iter().all(|id| {
            c.get(*id)
                .is_some_and(|(v, s)| *v == Some(1) && s == "current")
        }) && fleet.pods.iter().all(|p| p.consumer.ok() > 0)
    })
    .await;

    let mut lat = Vec::new();
    for _ in 0..10 {
        lat.push(fleet.rotate_and_settle(&all, limit).await);
        let failed = fleet.failed_logins(&all);
        assert!(
            failed.is_empty(),
            "live consumers failed to log in: {failed:?}"
        );
    }
    print_latency("5 agents", lat);
    for pod in &fleet.pods {
        assert!(
            pod.consumer.reloads() >= 10,
            "{} reloaded {}",
            pod.id,
            pod.consumer.reloads()
        );
        assert!(pod.consumer.ok() > 0);
    }

    // A frozen agent: lagging while the others catch up, holding expiry back until its ttl.
    let frozen = fleet.pods[0].agent.as_ref().expect("agent");
    signal(frozen, "-STOP");
    let (before, _) = fleet.labelled("current").await.expect("current");
    fleet.rotate().await;
    let others = &all[1..];
    // While it is live (its ttl has not run out), the frozen agent is `lagging`.
    eventually(limit, "the others to report the new version", async || {
        let c = fleet.consumers().await;
        others.iter().all(|id| {
            c.get(*id)
                .is_some_and(|(v, s)| *v == Some(before + 1) && s == "current")
        })
    })
    .await;
    let c = fleet.consumers().await;
    assert_eq!(c["pod-0"].1, "lagging", "the frozen agent: {c:?}");
    assert!(
        fleet.labelled("previous").await.is_some(),
        "the previous version expired while a live consumer lagged"
    );
    eventually(limit, "rotor to expire the previous version", async || {
        fleet.labelled("previous").await.is_none()
    })
    .await;
    let c = fleet.consumers().await;
    assert_eq!(
        c["pod-0"].1, "gone",
        "after its ttl the frozen agent is gone: {c:?}"
    );
    // The history record is written when the attempt ends (after the revoke step).
    let mut history = Value::Null;
    eventually(limit, "the frozen round's history record", async || {
        history = fleet.get("/admin/secrets/history/tenant1/db?limit=1").await;
        history["rotations"][0]["toVersion"] == before + 1
    })
    .await;
    let named: Vec<String> = ["lateConsumers", "goneConsumers"]
        .iter()
        .flat_map(|k| {
            history["rotations"][0][k]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert!(
        named.contains(&"pod-0".to_owned()),
        "history names the frozen agent: {history}"
    );
    assert!(
        fleet
            .metric("rotor_consumer_late_expiries_total{kind=\"gone\"}")
            .await
            + fleet
                .metric("rotor_consumer_late_expiries_total{kind=\"late\"}")
                .await
            >= 1.0,
        "the alert's counter counts the frozen agent"
    );
    let failed = fleet.failed_logins(others);
    assert!(
        failed.is_empty(),
        "live consumers failed to log in: {failed:?}"
    );
    // Thawed, it catches up.
    signal(fleet.pods[0].agent.as_ref().expect("agent"), "-CONT");
    eventually(limit, "the thawed agent to catch up", async || {
        let c = fleet.consumers().await;
        c.get("pod-0")
            .is_some_and(|(v, s)| *v == Some(before + 1) && s == "current")
    })
    .await;

    // A killed agent: gone after the ttl, and expiry does not wait for it.
    let killed = fleet.pods[1].agent.take().expect("agent");
    signal(&killed, "-KILL");
    drop(killed);
    let live: Vec<&str> = all.iter().copied().filter(|id| *id != "pod-1").collect();
    // The thawed pod failed its logins while frozen (its credential expired then, as it
    // should); from here on it is live again and must not fail one more.
    let thawed_failures = fleet.pods[0].consumer.failed();
    let started = Instant::now();
    fleet.rotate_and_settle(&live, limit).await;
    let c = fleet.consumers().await;
    assert_eq!(c["pod-1"].1, "gone", "a killed agent is gone: {c:?}");
    println!(
        "a killed agent: the rotation settled {:?} after it was started",
        started.elapsed()
    );
    let failed = fleet.failed_logins(&live[1..]);
    assert!(
        failed.is_empty(),
        "live consumers failed to log in: {failed:?}"
    );
    assert_eq!(
        fleet.pods[0].consumer.failed(),
        thawed_failures,
        "the thawed pod failed a login once live again: {:?}",
        fleet.pods[0].consumer.last_error.lock().expect("error")
    );
}

/// Twenty pods of one workload reload at most two at a time, and all of them do.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_pods_of_one_workload_reload_at_most_two_at_a_time() {
    let concurrency = Arc::new(Concurrency::default());
    let Some(mut fleet) = Fleet::start(Options {
        pods: 20,
        workload: Some("web"),
        max_concurrent_reloads: 2,
        ttl: "30s",
        reload_takes: Duration::from_millis(300),
        login_every: Duration::from_millis(500),
        concurrency: Some(concurrency.clone()),
    })
    .await
    else {
        return;
    };
    let all: Vec<String> = fleet.pods.iter().map(|p| p.id.clone()).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let limit = Duration::from_secs(120);
    eventually(limit, "every pod to report v1", async || {
        fleet.assert_agents_running();
        let c = fleet.consumers().await;
        all.iter().all(|id| {
            c.get(*id)
                .is_some_and(|(v, s)| *v == Some(1) && s == "current")
        })
    })
    .await;
    let mut lat = Vec::new();
    for round in 1..=3u64 {
        let reloads_before: u64 = fleet.pods.iter().map(|p| p.consumer.reloads()).sum();
        lat.push(fleet.rotate_and_settle(&all, limit).await);
        let reloads: u64 = fleet.pods.iter().map(|p| p.consumer.reloads()).sum();
        assert!(
            reloads - reloads_before >= 20,
            "round {round}: {} reloads, expected every pod's",
            reloads - reloads_before
        );
        let failed = fleet.failed_logins(&all);
        assert!(failed.is_empty(), "consumers failed to log in: {failed:?}");
    }
    print_latency("20 agents, 2 reloads at a time", lat);
    let max = concurrency.max();
    assert!(max <= 2, "{max} reloads ran at once");
    assert!(max >= 1, "no reload was seen");
}
