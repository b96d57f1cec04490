//! Emergency rotation jobs (`rotate-all`) on the real tree with the embedded store and
//! store-only (`none`) targets, on paused time: a job rotates each selected secret exactly
//! once, keeps to its rate and concurrency, stops starting within a second of a cancel, resumes
//! after the tree is shut down and started again on the same store without rotating a
//! secret twice, ends a grace it meets, and expires previous versions at promotion when
//! asked; the routes over real HTTP (bad bodies name their field, 404, 401/403); and the real
//! binary's `rotor rotate --tenant` printing plain lines and a summary.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rotor::actors::admin::ActorAdmin;
use rotor::actors::rotation;
use rotor::actors::tree::{self, Tree, TreeOptions};
use rotor::api::server::{self, AdminToken};
use rotor::api::{Admin, AdminError, JobRequest, JobSelector, JobView};
use rotor::clock::Clock;
use rotor::domain::{HistoryRecord, Label, SecretRef, Trigger, VersionNo};
use rotor::generator::SecretValue;
use rotor::machine::{Phase, SecretState};
use rotor::metrics::Metrics;
use rotor::store::Store;
use rotor::store::embedded::EmbeddedStore;
use rotor::target::{Target, TargetError};
use tokio::net::TcpListener;

use crate::common::embedded::{admin, open_store, tree_config};
use crate::common::http::request;
use crate::common::rotor_bin::{self, RotorBin, free_port};
use crate::common::wait::eventually;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap()
}

/// `t1` and `t2` with `keys` keys each (`k000`...), monthly with one minute of grace.
fn config_text(keys: usize) -> String {
    let keys: Vec<String> = (0..keys).map(|i| format!("\"k{i:03}\"")).collect();
    format!(
        r#"
[policies.monthly]
interval = "30d"
grace = "1m"
generator = {{ type = "token", bytes = 16 }}

[[secret_sets]]
tenants = ["t1", "t2"]
keys = [{}]
policy = "monthly"
"#,
        keys.join(", ")
    )
}

fn t1(i: usize) -> SecretRef {
    SecretRef::new("t1", &format!("k{i:03}")).unwrap()
}

struct Harness {
    tree: Tree,
    admin: Arc<ActorAdmin>,
    store: Arc<EmbeddedStore>,
    metrics: Metrics,
    clock: Clock,
}

async fn start(dir: &Path, keys: usize, base: DateTime<Utc>, run: u32) -> Harness {
    start_with(dir, keys, base, run, None).await
}

async fn start_with(
    dir: &Path,
    keys: usize,
    base: DateTime<Utc>,
    run: u32,
    target: Option<Arc<dyn Target>>,
) -> Harness {
    let cfg = tree_config(dir, &config_text(keys));
    let store = open_store(dir);
    let metrics = Metrics::new();
    let clock = Clock::tokio(base);
    let options = TreeOptions {
        clock,
        namespace: format!("{}/{run}/", dir.display()),
        target_override: target.map(|t| {
            let build: tree::TargetOverride = Arc::new(move |_: &SecretRef| t.clone());
            build
        }),
        ..TreeOptions::default()
    };
    let tree = tree::start(&cfg, store.clone(), metrics.clone(), options)
        .await
        .expect("tree starts");
    let admin = Arc::new(admin(&tree));
    let h = Harness {
        tree,
        admin,
        store,
        metrics,
        clock,
    };
    // A first start waits for every first version; a restart only for readiness (secrets
    // are in grace or mid-rotation then).
    eventually(Duration::from_secs(30), "ready", async || {
        h.admin.ready() && (run > 0 || h.all_idle_at_least(1, 2 * keys))
    })
    .await;
    h
}

impl Harness {
    /// Whether `n` secrets are idle with a current version of at least `min`.
    fn all_idle_at_least(&self, min: VersionNo, n: usize) -> bool {
        let mut ok = 0;
        self.tree.context.board.for_each(|_, s| {
            if s.phase == "idle" && s.current.is_some_and(|c| c >= min) {
                ok += 1;
            }
        });
        ok == n
    }

    async fn start_job(&self, tenant: &str, rate: u32, concurrent: u32, expire: bool) -> JobView {
        self.admin
            .rotate_all(JobRequest {
                selector: JobSelector {
                    tenant_id: Some(tenant.into()),
                    ..JobSelector::default()
                },
                rate_per_second: rate,
                max_concurrent: concurrent,
                expire_previous: expire,
            })
            .await
            .expect("job accepted")
    }

    async fn job(&self, id: &str) -> JobView {
        self.admin.job(id.into()).await.expect("job known")
    }

    async fn wait_ended(&self, id: &str) -> JobView {
        let mut last = None;
        eventually(Duration::from_secs(120), "job ended", async || {
            let v = self.job(id).await;
            let over = v.finished_at.is_some();
            last = Some(v);
            over
        })
        .await;
        last.expect("a view")
    }

    /// The job's attempts of `secret`: history records and the attempt in flight.
    async fn job_attempts(&self, secret: &SecretRef, job: &str) -> usize {
        let history = self.store.history(secret, 100).await.unwrap();
        let recorded = history.iter().filter(|h| h.trigger == Trigger::Job).count();
        let state = self.state(secret).await;
        let live = state.phase.run().is_some_and(|r| {
            r.job.as_deref() == Some(job) && !recorded_has(&history, r.rotation.0)
        });
        recorded + usize::from(live)
    }

    async fn state(&self, secret: &SecretRef) -> SecretState {
        let bytes = self.store.journal(secret).await.unwrap().expect("journal");
        serde_json::from_slice(&bytes).unwrap()
    }

    fn counted(&self, outcome: &str) -> u64 {
        self.metrics
            .job_rotations_total
            .get_or_create(&rotor::metrics::OutcomeLabels {
                outcome: outcome.into(),
            })
            .get()
    }
}

fn recorded_has(history: &[HistoryRecord], rotation: u64) -> bool {
    history.iter().any(|h| h.rotation.0 == rotation)
}

#[tokio::test(start_paused = true)]
async fn a_job_rotates_every_secret_of_its_tenant_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), 12, t0(), 0).await;
    let job = h.start_job("t1", 1000, 8, false).await;
    assert_eq!((job.total, job.state.as_str()), (12, "running"));
    let end = h.wait_ended(&job.job_id).await;
    assert_eq!(
        (
            end.state.as_str(),
            end.done,
            end.failed,
            end.in_flight,
            end.pending
        ),
        ("finished", 12, 0, 0, 0)
    );
    // Past the grace, so every success has its history record.
    tokio::time::sleep(Duration::from_secs(120)).await;
    eventually(Duration::from_secs(10), "grace over", async || {
        h.all_idle_at_least(1, 24)
    })
    .await;
    for i in 0..12 {
        let s = t1(i);
        assert_eq!(h.job_attempts(&s, &job.job_id).await, 1, "{s}");
        assert_eq!(h.state(&s).await.current, Some(2), "{s}");
    }
    // The other tenant was not touched.
    for i in 0..12 {
        let s = SecretRef::new("t2", &format!("k{i:03}")).unwrap();
        assert_eq!(h.state(&s).await.current, Some(1), "{s}");
    }
    assert_eq!((h.counted("started"), h.counted("done")), (12, 12));
    let text = h.admin.metrics_text().await.unwrap();
    assert!(text.contains("rotor_jobs{state=\"finished\"} 1"), "{text}");
    assert!(!text.contains(&job.job_id), "no job id in metrics");
}

/// A target whose apply takes `delay`: a store-only target takes no time, so concurrency
/// could not be seen without one. Counts applies in progress and the most at once.
struct SlowTarget {
    delay: Duration,
    active: AtomicUsize,
    most: AtomicUsize,
}

#[async_trait::async_trait]
impl Target for SlowTarget {
    fn type_name(&self) -> &'static str {
        "none"
    }
    async fn apply(&self, _: VersionNo, _: &SecretValue) -> Result<(), TargetError> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.active.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
    async fn test(&self, _: VersionNo, _: &SecretValue) -> Result<(), TargetError> {
        Ok(())
    }
    async fn revoke(&self, _: VersionNo) -> Result<(), TargetError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_keeps_to_its_rate_and_its_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Arc::new(SlowTarget {
        delay: Duration::from_millis(100),
        active: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    let h = start_with(dir.path(), 12, t0(), 0, Some(slow.clone())).await;
    // Rate: 4 a second over 12 secrets with plenty of concurrency.
    let job = h.start_job("t1", 4, 100, false).await;
    let end = h.wait_ended(&job.job_id).await;
    assert_eq!((end.done, end.failed), (12, 0));
    let mut starts = Vec::new();
    for i in 0..12 {
        let st = h.state(&t1(i)).await;
        let run = st.phase.run().expect("in grace").clone();
        assert_eq!(run.job.as_deref(), Some(job.job_id.as_str()));
        starts.push(run.started_at);
    }
    starts.sort();
    let span = (starts[11] - starts[0]).as_seconds_f64();
    // The first start is free; the next 11 come at 4 a second: at least 2.75 s.
    assert!(span >= 2.7, "12 starts at 4/s took only {span:.2}s");
    assert!(span < 6.0, "12 starts at 4/s took {span:.2}s");
    println!("jobs: 12 starts at 4/s spanned {span:.2}s");

    // Concurrency: t2 at a high rate, 3 at once, each apply 100 ms long.
    slow.most.store(0, Ordering::SeqCst);
    let job = h.start_job("t2", 1000, 3, false).await;
    let mut most_seen = 0;
    eventually(Duration::from_secs(60), "second job ended", async || {
        let v = h.job(&job.job_id).await;
        most_seen = most_seen.max(v.in_flight);
        v.finished_at.is_some()
    })
    .await;
    let most = slow.most.load(Ordering::SeqCst);
    assert!(most <= 3, "{most} applies at once with maxConcurrent 3");
    assert!(most >= 2, "the limit was never approached ({most})");
    assert!(most_seen <= 3, "inFlight {most_seen}");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_job_stops_starting_within_a_second_and_counts_what_was_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Arc::new(SlowTarget {
        delay: Duration::from_millis(300),
        active: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    let h = start_with(dir.path(), 40, t0(), 0, Some(slow)).await;
    let job = h.start_job("t1", 10, 4, false).await;
    eventually(Duration::from_secs(60), "ten done", async || {
        h.job(&job.job_id).await.done >= 10
    })
    .await;
    let cancelled_at = h.clock.now();
    let view = h
        .admin
        .cancel_job(job.job_id.clone())
        .await
        .expect("cancel");
    assert_eq!(view.state, "cancelled");
    let end = h.wait_ended(&job.job_id).await;
    assert_eq!(end.state, "cancelled");
    assert_eq!(end.in_flight, 0);
    assert!(end.pending > 0, "cancelled half-way: {end:?}");
    assert_eq!(end.done + end.failed + end.pending, 40);
    // Every started attempt finished and counted; none started a second after the cancel.
    let mut started = 0;
    for i in 0..40 {
        let st = h.state(&t1(i)).await;
        if let Some(run) = st.phase.run().filter(|r| r.trigger == Trigger::Job) {
            started += 1;
            assert!(
                run.started_at <= cancelled_at + chrono::TimeDelta::seconds(1),
                "{} started {} after the cancel",
                t1(i),
                run.started_at - cancelled_at
            );
            assert!(matches!(st.phase, Phase::Grace { .. }), "{:?}", st.phase);
        }
    }
    assert_eq!(started, end.done + end.failed);
    // Cancelling again answers the same; an unknown job is 404.
    assert_eq!(
        h.admin.cancel_job(job.job_id.clone()).await.unwrap().state,
        "cancelled"
    );
    assert!(matches!(
        h.admin.job("job-nope".into()).await,
        Err(AdminError::NotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_job_resumes_after_a_restart_and_rotates_no_secret_twice() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Arc::new(SlowTarget {
        delay: Duration::from_millis(200),
        active: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
    });
    let mut h = start_with(dir.path(), 40, t0(), 0, Some(slow.clone())).await;
    let job = h.start_job("t1", 20, 4, false).await;
    eventually(Duration::from_secs(60), "a third done", async || {
        h.job(&job.job_id).await.done >= 13
    })
    .await;
    // Shut down mid-job: attempts are in flight.
    let before = h.job(&job.job_id).await;
    assert!(
        before.done < 40 && before.pending > 0,
        "not half-way: {before:?}"
    );
    let now = h.clock.now();
    h.tree.shutdown(Duration::from_secs(5)).await;
    drop(h);
    let h = start_with(dir.path(), 40, now, 1, Some(slow)).await;
    let end = h.wait_ended(&job.job_id).await;
    assert_eq!(
        (end.state.as_str(), end.done, end.failed),
        ("finished", 40, 0)
    );
    tokio::time::sleep(Duration::from_secs(120)).await;
    eventually(Duration::from_secs(10), "grace over", async || {
        h.all_idle_at_least(1, 80)
    })
    .await;
    for i in 0..40 {
        let s = t1(i);
        assert_eq!(h.job_attempts(&s, &job.job_id).await, 1, "{s}");
        assert_eq!(h.state(&s).await.current, Some(2), "{s}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_secret_in_grace_has_its_grace_ended_then_is_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), 2, t0(), 0).await;
    let s = t1(0);
    h.admin.rotate(s.clone()).await.expect("rotate");
    eventually(Duration::from_secs(10), "grace", async || {
        h.tree
            .context
            .board
            .get(&s)
            .is_some_and(|st| st.phase == "grace")
    })
    .await;
    let job = h.start_job("t1", 100, 4, false).await;
    let end = h.wait_ended(&job.job_id).await;
    assert_eq!((end.done, end.failed), (2, 0));
    let versions = h.store.versions(&s).await.unwrap();
    let by_no: BTreeMap<_, _> = versions.iter().map(|v| (v.version, v)).collect();
    // v1's grace was cut short: expired well before its minute was over.
    let v1 = by_no[&1];
    let expired = v1.expired_at.expect("v1 expired");
    assert!(expired - t0() < chrono::TimeDelta::seconds(30), "{expired}");
    assert!(v1.labels.is_empty());
    // v2 is the previous version of the job's rotation, v3 current.
    assert_eq!(by_no[&2].labels, vec![Label::Previous]);
    assert_eq!(by_no[&3].labels, vec![Label::Current]);
    let history = h.store.history(&s, 10).await.unwrap();
    let rotations: Vec<_> = history
        .iter()
        .filter(|r| r.trigger != Trigger::Initial)
        .collect();
    assert_eq!(rotations.len(), 1, "the API rotation's record: {history:?}");
    assert_eq!(
        (rotations[0].trigger, rotations[0].to_version),
        (Trigger::Api, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn expire_previous_expires_each_previous_version_at_promotion() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), 3, t0(), 0).await;
    let job = h.start_job("t1", 100, 4, true).await;
    assert!(job.expire_previous);
    let end = h.wait_ended(&job.job_id).await;
    assert_eq!((end.done, end.failed), (3, 0));
    for i in 0..3 {
        let s = t1(i);
        eventually(Duration::from_secs(5), "idle", async || {
            h.tree
                .context
                .board
                .get(&s)
                .is_some_and(|st| st.phase == "idle")
        })
        .await;
        let versions = h.store.versions(&s).await.unwrap();
        assert_eq!(versions.len(), 2);
        assert!(
            versions[0].labels.is_empty(),
            "{s}: {:?}",
            versions[0].labels
        );
        let expired = versions[0].expired_at.expect("v1 expired");
        let promoted = versions[1].promoted_at.expect("v2 promoted");
        assert!(expired - promoted < chrono::TimeDelta::seconds(1), "{s}");
        assert_eq!(versions[1].labels, vec![Label::Current]);
        let history = h.store.history(&s, 10).await.unwrap();
        let triggers: Vec<_> = history.iter().map(|r| r.trigger).collect();
        assert_eq!(triggers, vec![Trigger::Job, Trigger::Initial]);
    }
}

#[tokio::test]
async fn the_routes_check_bodies_and_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), 3, Utc::now(), 0).await;
    let token = AdminToken::new("admin-token").unwrap();
    let consumer = AdminToken::new("consumer-token").unwrap();
    let router = server::router_with_consumers(
        h.admin.clone(),
        token,
        Some(consumer),
        Duration::from_secs(10),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(listener, router, std::future::pending()));
    let admin_token = "admin-token".to_owned();
    let post = async |body: &str| {
        request(
            addr,
            "POST",
            "/admin/secrets/rotate-all",
            Some(&admin_token),
            Some(body),
        )
        .await
    };
    for (body, names) in [
        ("{}", "tenantId"),
        (r#"{"all":true}"#, "confirm"),
        (r#"{"all":true,"confirm":"yes"}"#, "confirm"),
        (
            r#"{"tenantId":"t1","all":true,"confirm":"rotate-all"}"#,
            "not both",
        ),
        (r#"{"tenantId":"../etc"}"#, "tenantId"),
        (r#"{"tenantId":"t1","ratePerSecond":0}"#, "ratePerSecond"),
        (r#"{"tenantId":"t1","maxConcurrent":5000}"#, "maxConcurrent"),
        (r#"{"tenantId":"t1","keyGlob":"A/B"}"#, "keyGlob"),
        (r#"{"tenantId":"t1","policy":"nope"}"#, "policy"),
        (r#"{"tenantId":"nobody"}"#, "tenantId \"nobody\""),
        (r#"{"tenantId":"t1","keyGlob":"zz*"}"#, "keyGlob \"zz*\""),
        (r#"{"tenantId":"t1","bogus":1}"#, "bogus"),
        (
            r#"{"tenantId":"t1","expirePrevious":"yes"}"#,
            "expirePrevious",
        ),
    ] {
        let resp = post(body).await;
        assert_eq!(resp.status, 400, "{body}: {}", resp.json());
        let message = resp.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(names), "{body}: {message}");
    }
    // No token: 401; the consumer token: 403, on all three routes.
    for (method, path) in [
        ("POST", "/admin/secrets/rotate-all"),
        ("GET", "/admin/jobs/job-x"),
        ("DELETE", "/admin/jobs/job-x"),
    ] {
        let body = (method == "POST").then_some(r#"{"tenantId":"t1"}"#);
        assert_eq!(request(addr, method, path, None, body).await.status, 401);
        let c = "consumer-token";
        assert_eq!(request(addr, method, path, Some(c), body).await.status, 403);
    }
    assert_eq!(
        request(addr, "GET", "/admin/jobs/job-x", Some(&admin_token), None)
            .await
            .status,
        404
    );
    assert_eq!(
        request(addr, "DELETE", "/admin/jobs/..", Some(&admin_token), None)
            .await
            .status,
        400
    );
    // A good body: 202 with the job's id; GET reports it with the contract's fields.
    let resp = post(r#"{"tenantId":"t1","keyGlob":"k00?","ratePerSecond":50}"#).await;
    assert_eq!(resp.status, 202, "{}", resp.json());
    let id = resp.json()["jobId"].as_str().unwrap().to_owned();
    let job_path = format!("/admin/jobs/{id}");
    let get_job = async || request(addr, "GET", &job_path, Some(&admin_token), None).await;
    // The job is readable the moment its 202 is: the board has it before the answer.
    let first = get_job().await;
    assert_eq!(first.status, 200, "{}", first.json());
    eventually(Duration::from_secs(30), "finished over HTTP", async || {
        let j = get_job().await.json();
        for field in ["jobId", "state", "total", "done", "failed", "inFlight"] {
            assert!(!j[field].is_null(), "{field} in {j}");
        }
        j["state"] == "finished" && j["done"] == 3 && j["total"] == 3
    })
    .await;
    let resp = request(
        addr,
        "DELETE",
        &format!("/admin/jobs/{id}"),
        Some(&admin_token),
        None,
    )
    .await;
    assert_eq!(resp.status, 409, "{}", resp.json());
}

#[tokio::test]
async fn rotor_rotate_tenant_follows_a_job_with_plain_lines_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = rotor_bin::config(port, &config_text(5));
    let rotor = RotorBin::start(dir.path(), port, &config).await;
    let out = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
                .args([
                    "rotate",
                    "-c",
                    "rotor.toml",
                    "--tenant",
                    "t1",
                    "--rate",
                    "50",
                ])
                .current_dir(&dir)
                .output()
                .expect("rotor rotate runs")
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}\n{}", rotor.log());
    assert!(stdout.contains("started: 5 secrets"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(" done, ") && l.contains("of 5")),
        "plain progress lines: {stdout}"
    );
    assert!(
        !stdout.contains('\u{1b}'),
        "no terminal escapes: {stdout:?}"
    );
    for row in ["state        finished", "done         5", "failed       0"] {
        assert!(stdout.contains(row), "summary row {row:?}: {stdout}");
    }
    // The one-secret form still works.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["rotate", "-c", "rotor.toml", "t2", "k000"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("accepted: rotation"));
}

/// The job's attempts of each secret of tenant `t1` (`keys` of them), read from a store
/// no process uses any more: history records of job attempts plus the attempt in flight.
async fn job_attempts_in(store: &EmbeddedStore, keys: usize, job: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for i in 0..keys {
        let s = t1(i);
        let history = store.history(&s, 100).await.unwrap();
        let recorded = history.iter().filter(|h| h.trigger == Trigger::Job).count();
        let bytes = store.journal(&s).await.unwrap().expect("journal");
        let state: SecretState = serde_json::from_slice(&bytes).unwrap();
        let live = state.phase.run().is_some_and(|r| {
            r.job.as_deref() == Some(job) && !recorded_has(&history, r.rotation.0)
        });
        out.push((s.to_string(), recorded + usize::from(live)));
    }
    out
}

#[tokio::test]
async fn a_job_killed_half_way_resumes_in_the_restarted_binary_and_rotates_each_secret_once() {
    const KEYS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = rotor_bin::config(port, &config_text(KEYS));
    let rotor = RotorBin::start(dir.path(), port, &config).await;
    let addr = rotor.addr;
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let token = token.trim().to_owned();
    let view = async |id: &str| {
        let r = request(
            addr,
            "GET",
            &format!("/admin/jobs/{id}"),
            Some(&token),
            None,
        )
        .await;
        (r.status, r.json())
    };
    // Every first version written (600 of them), so the job meets settled secrets.
    eventually(Duration::from_secs(60), "first versions", async || {
        let r = request(addr, "GET", "/metrics", Some(&token), None).await;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let succeeded: f64 = text
            .lines()
            .filter(|l| l.starts_with("secret_rotation_total{") && l.contains("succeeded"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        succeeded >= (2 * KEYS) as f64
    })
    .await;
    let r = request(
        addr,
        "POST",
        "/admin/secrets/rotate-all",
        Some(&token),
        Some(r#"{"tenantId":"t1","ratePerSecond":100,"maxConcurrent":16}"#),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.json());
    let id = r.json()["jobId"].as_str().unwrap().to_owned();
    // Half-way: some done, most not started.
    let done_at_kill = eventually(Duration::from_secs(30), "a third done", async || {
        let (status, v) = view(&id).await;
        assert_eq!(status, 200, "{v}");
        let done = v["done"].as_u64().unwrap();
        (done >= KEYS as u64 / 3).then_some(done)
    })
    .await;
    assert!(
        done_at_kill < KEYS as u64,
        "the job ended before the kill: {done_at_kill}"
    );
    rotor.kill_group();

    let mut rotor = RotorBin::start(dir.path(), port, &config).await;
    let end = eventually(
        Duration::from_secs(60),
        "the resumed job to end",
        async || {
            let (status, v) = view(&id).await;
            // Right after the start the jobs may still be loading (503).
            (status == 200 && !v["finishedAt"].is_null()).then_some(v)
        },
    )
    .await;
    assert_eq!(end["state"], "finished", "{end}");
    assert_eq!(end["total"], KEYS as u64, "{end}");
    assert_eq!(end["done"], KEYS as u64, "{end}");
    assert_eq!(end["failed"], 0, "{end}");
    assert!(
        rotor.log().contains("resuming a rotation job"),
        "{}",
        rotor.log()
    );
    assert!(rotor.terminate(Duration::from_secs(10)).success());

    // Each secret of the tenant rotated once by the job (history and journal), the other
    // tenant not at all.
    let store = open_store(dir.path());
    let attempts = job_attempts_in(&store, KEYS, &id).await;
    let wrong: Vec<_> = attempts.iter().filter(|(_, n)| *n != 1).collect();
    assert!(
        wrong.is_empty(),
        "secrets not rotated exactly once: {wrong:?}"
    );
    for i in 0..KEYS {
        let s = t1(i);
        let versions = store.versions(&s).await.unwrap();
        assert_eq!(versions.len(), 2, "{s}: {versions:?}");
        let other = SecretRef::new("t2", &format!("k{i:03}")).unwrap();
        assert_eq!(store.versions(&other).await.unwrap().len(), 1, "{other}");
    }
}

/// A job wakes each secret once: the actors it woke go back to sleep about a second after
/// their attempt ([`rotation::HIBERNATE_AFTER_JOB`]), not after the configured idle delay
/// (30 s here), which an operator's request keeps.
#[tokio::test(start_paused = true)]
async fn the_actors_a_job_woke_sleep_again_a_second_after_their_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), 12, t0(), 0).await;
    let namespace = h.tree.context.namespace.clone();
    let awake =
        |s: &SecretRef| ractor::registry::where_is(rotation::actor_name(&namespace, s)).is_some();
    let job = h.start_job("t1", 1000, 8, false).await;
    h.wait_ended(&job.job_id).await;
    // The last attempts ended moments ago: their actors are still awake. An operator's
    // request to one of them (a rotation, or a 409 while it is in grace) gives it the
    // configured delay back.
    let kept = (0..12)
        .map(t1)
        .find(|s| awake(s))
        .expect("an actor the job woke still awake right after the job");
    match h.admin.rotate(kept.clone()).await {
        Ok(_) | Err(AdminError::Conflict(_)) => {}
        Err(e) => panic!("rotate {kept}: {e}"),
    }
    eventually(
        Duration::from_secs(3),
        "the job's other actors asleep",
        async || !(0..12).map(t1).any(|s| s != kept && awake(&s)),
    )
    .await;
    // Asleep in grace, each with its new version.
    for s in (0..12).map(t1).filter(|s| *s != kept) {
        let status = h.tree.context.board.get(&s).expect("on the board");
        assert_eq!((status.phase, status.current), ("grace", Some(2)), "{s}");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        awake(&kept),
        "{kept} asleep 5 s after an operator's request"
    );
}

#[tokio::test(start_paused = true)]
async fn ended_jobs_are_deleted_after_a_week_with_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), 3, t0(), 0).await;
    let old = h.start_job("t1", 1000, 4, false).await;
    h.wait_ended(&old.job_id).await;
    // Four days later a second job; the first is still readable.
    tokio::time::sleep(Duration::from_secs(4 * 86_400)).await;
    let recent = h.start_job("t2", 1000, 4, false).await;
    h.wait_ended(&recent.job_id).await;
    assert_eq!(h.job(&old.job_id).await.state, "finished");
    let ids = |records: Vec<rotor::store::Record>| -> Vec<String> {
        records.into_iter().map(|r| r.id).collect()
    };
    for ns in [
        rotor::actors::jobs::JOBS_NS,
        rotor::actors::jobs::SECRETS_NS,
    ] {
        let stored = ids(h.store.record_list(ns).await.unwrap());
        assert!(stored.contains(&old.job_id), "{ns}: {stored:?}");
    }
    // A week and a sweep after the first ended: it is gone, records and all; the second
    // (ended three days later) stays.
    tokio::time::sleep(Duration::from_secs(3 * 86_400) + rotor::actors::jobs::SWEEP_EVERY).await;
    eventually(Duration::from_secs(5), "the old job deleted", async || {
        matches!(
            h.admin.job(old.job_id.clone()).await,
            Err(AdminError::NotFound(_))
        )
    })
    .await;
    for ns in [
        rotor::actors::jobs::JOBS_NS,
        rotor::actors::jobs::SECRETS_NS,
    ] {
        let stored = ids(h.store.record_list(ns).await.unwrap());
        assert_eq!(stored, vec![recent.job_id.clone()], "{ns}");
    }
    assert_eq!(h.job(&recent.job_id).await.state, "finished");
    let text = h.admin.metrics_text().await.unwrap();
    assert!(text.contains("rotor_jobs{state=\"finished\"} 1"), "{text}");
}

/// Store writes per rotation of a `rotate-all` job over store-only secrets, through the
/// `none` target the actor steps in memory and through the same target with a 1 ms delay
/// per step (every step committed, as for a real target): printed, and the in-memory path
/// must cost one write transaction per rotation.
#[tokio::test(start_paused = true)]
async fn commits_per_rotation_of_a_job_over_store_only_secrets() {
    const KEYS: usize = 40;
    let mut measured = Vec::new();
    for delay in [Duration::ZERO, Duration::from_millis(1)] {
        let dir = tempfile::tempdir().unwrap();
        let target: Arc<dyn Target> = Arc::new(rotor::target::none::NoneTarget::with_delay(
            SecretRef::new("t1", "k000").unwrap(),
            delay,
        ));
        let mut h = start_with(dir.path(), KEYS, t0(), 0, Some(target)).await;
        let before = h.store.write_counts();
        let job = h.start_job("t1", 10_000, 16, false).await;
        let end = h.wait_ended(&job.job_id).await;
        assert_eq!((end.done, end.failed), (KEYS as u64, 0));
        let after = h.store.write_counts();
        // The job's own records: the list of secrets, the progress record at its start,
        // its reservation and its end (and at most one a second between).
        let commits = (after.commits - before.commits) as f64 / KEYS as f64;
        let fsyncs = (after.fsyncs - before.fsyncs) as f64 / KEYS as f64;
        println!(
            "commits per rotation ({}): {commits:.2} write transactions, {fsyncs:.2} fsyncs (job records included)",
            if delay.is_zero() {
                "steps in memory"
            } else {
                "step by step"
            }
        );
        measured.push(commits);
        h.tree.shutdown(Duration::from_secs(5)).await;
    }
    let job_records = 6.0 / KEYS as f64;
    assert!(
        measured[0] <= 1.0 + job_records,
        "in memory: {} commits per rotation",
        measured[0]
    );
    assert!(
        measured[1] >= 6.0,
        "step by step: {} commits per rotation",
        measured[1]
    );
}

/// `[runtime] hibernate_after` reaches the binary's tree: a secret woken by an API rotation
/// goes back to hibernation (`rotor_rotation_actors_awake` back to 0) that long after its
/// work is done, well before the default 30 s.
#[tokio::test]
async fn the_configured_hibernation_delay_reaches_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = rotor_bin::config(port, &config_text(2)).replacen(
        "[runtime]\n",
        "[runtime]\nhibernate_after = \"1s\"\n",
        1,
    );
    assert!(config.contains("hibernate_after = \"1s\""));
    let rotor = RotorBin::start(dir.path(), port, &config).await;
    let addr = rotor.addr;
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let token = token.trim().to_owned();
    let awake = async || -> Option<u64> {
        let r = request(addr, "GET", "/metrics", Some(&token), None).await;
        String::from_utf8_lossy(&r.body)
            .lines()
            .find_map(|l| l.strip_prefix("rotor_rotation_actors_awake "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    eventually(Duration::from_secs(20), "every secret asleep", async || {
        awake().await == Some(0)
    })
    .await;
    let r = request(
        addr,
        "POST",
        "/admin/secrets/rotate",
        Some(&token),
        Some(r#"{"tenantId":"t1","secretKey":"k000"}"#),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.json());
    // It answered, so it is awake, and it stays so for at least the second it waits.
    assert_eq!(awake().await, Some(1));
    eventually(Duration::from_secs(15), "asleep again", async || {
        awake().await == Some(0)
    })
    .await;
    drop(rotor);
}
