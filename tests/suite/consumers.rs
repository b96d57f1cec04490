//! Consumers (agents in workload pods) and the fleet reload budget, on the real tree with
//! the embedded store: expiry waits for every live consumer, a silent one stops holding it
//! once gone, `max_grace_extension` bounds the wait and names the late, consumers and
//! permits survive a restart; and the routes over real HTTP with the consumer token, which
//! gets 403 on every admin route.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use rotor::actors::admin::ActorAdmin;
use rotor::actors::tree::{self, Tree, TreeOptions};
use rotor::api::server::{self, AdminToken};
use rotor::api::{Admin, AdminError, Report};
use rotor::clock::Clock;
use rotor::domain::{Label, SecretRef};
use rotor::metrics::Metrics;
use rotor::store::Store;
use rotor::store::embedded::EmbeddedStore;
use tokio::net::TcpListener;

use crate::common::embedded::{admin, open_store, tree_config};
use crate::common::http::{Resp, request};
use crate::common::wait::eventually;

/// `tenant1/db` rotates hourly with ten minutes of grace; `tenant1/other` has no consumers.
fn config(dir: &Path, consumers: &str) -> rotor::config::Config {
    tree_config(
        dir,
        &format!(
            r#"
[server]
consumer_token_file = "{dir}/consumer.token"

[consumers]
{consumers}

[policies.fast]
interval = "1h"
grace = "10m"
generator = {{ type = "token", bytes = 32 }}

[[secrets]]
tenant = "tenant1"
key = "db"
policy = "fast"

[[secrets]]
tenant = "tenant1"
key = "other"
policy = "fast"
"#,
            dir = dir.display()
        ),
    )
}

struct Harness {
    tree: Tree,
    admin: Arc<ActorAdmin>,
    store: Arc<EmbeddedStore>,
    metrics: Metrics,
}

async fn start(dir: &Path, consumers: &str) -> Harness {
    let cfg = config(dir, consumers);
    let store = open_store(dir);
    let metrics = Metrics::new();
    let options = TreeOptions {
        clock: Clock::tokio(Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap()),
        namespace: format!("{}/", dir.display()),
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
    };
    eventually(Duration::from_secs(5), "first versions", async || {
        h.admin.ready() && h.current(&db()).await == Some(1) && h.current(&other()).await == Some(1)
    })
    .await;
    h
}

fn db() -> SecretRef {
    SecretRef::new("tenant1", "db").unwrap()
}

fn other() -> SecretRef {
    SecretRef::new("tenant1", "other").unwrap()
}

impl Harness {
    async fn current(&self, s: &SecretRef) -> Option<u64> {
        self.store
            .versions(s)
            .await
            .ok()?
            .into_iter()
            .find(|v| v.labels.contains(&Label::Current))
            .map(|v| v.version)
    }

    fn phase(&self, s: &SecretRef) -> &'static str {
        self.tree.context.board.get(s).map_or("none", |st| st.phase)
    }

    async fn report(&self, id: &str, version: u64) {
        self.admin
            .consumer_report(Report {
                consumer_id: id.into(),
                workload: Some("web".into()),
                secrets: vec![(db(), Some(version), Some(true))],
            })
            .await
            .expect("report accepted");
    }

    async fn states(&self) -> Vec<(String, Option<u64>, String)> {
        self.admin
            .consumers(db())
            .await
            .expect("consumers")
            .into_iter()
            .map(|c| (c.consumer_id, c.version, c.state))
            .collect()
    }

    /// Rotates `tenant1/db` through the API and waits for its grace.
    async fn rotate_into_grace(&self) {
        self.admin.rotate(db()).await.expect("rotate");
        eventually(Duration::from_secs(5), "grace", async || {
            self.phase(&db()) == "grace"
        })
        .await;
    }

    fn late_expiries(&self, kind: &str) -> u64 {
        self.metrics
            .consumer_late_expiries_total
            .get_or_create(&rotor::metrics::KindLabels { kind: kind.into() })
            .get()
    }

    fn gauge(&self, state: &str) -> i64 {
        self.metrics
            .consumers
            .get_or_create(&rotor::metrics::ConsumerStateLabels {
                state: state.into(),
            })
            .get()
    }
}

#[tokio::test(start_paused = true)]
async fn expiry_waits_until_every_live_consumer_reports_the_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), "ttl = \"1h\"").await;
    h.report("web-1", 1).await;
    h.report("web-2", 1).await;
    h.rotate_into_grace().await;
    assert_eq!(h.current(&db()).await, Some(2));
    h.report("web-1", 2).await;
    eventually(Duration::from_secs(5), "states and gauge", async || {
        h.states().await
            == vec![
                ("web-1".into(), Some(2), "current".into()),
                ("web-2".into(), Some(1), "lagging".into()),
            ]
            && h.gauge("current") == 1
            && h.gauge("lagging") == 1
    })
    .await;
    // Grace ends while web-2 lags: the previous version is held back.
    tokio::time::sleep(Duration::from_secs(11 * 60)).await;
    h.report("web-1", 2).await;
    h.report("web-2", 1).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(h.phase(&db()), "grace", "expiry waits for web-2");
    let versions = h.store.versions(&db()).await.unwrap();
    assert_eq!(versions[0].labels, vec![Label::Previous]);
    // The secret without consumers expired at the end of its own grace meanwhile? It was
    // not rotated; rotate it and see it expire on time.
    h.admin.rotate(other()).await.expect("rotate other");
    // web-2 catches up: expiry follows at once, nobody is named.
    h.report("web-2", 2).await;
    eventually(Duration::from_secs(5), "expired", async || {
        h.phase(&db()) == "idle"
    })
    .await;
    let history = h.store.history(&db(), 1).await.unwrap();
    assert_eq!(history[0].to_version, 2);
    assert!(history[0].late_consumers.is_empty() && history[0].gone_consumers.is_empty());
    assert_eq!(h.late_expiries("late") + h.late_expiries("gone"), 0);
    // Without consumers: expiry at the end of grace, not at max_grace_extension.
    tokio::time::sleep(Duration::from_secs(11 * 60)).await;
    eventually(Duration::from_secs(5), "other expired", async || {
        h.phase(&other()) == "idle" && h.current(&other()).await == Some(2)
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_silent_consumer_holds_expiry_until_its_ttl_then_is_named_gone() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), "ttl = \"30m\"").await;
    h.report("web-1", 1).await;
    h.report("web-2", 1).await;
    h.rotate_into_grace().await;
    // web-1 catches up and keeps reporting; web-2 never speaks again.
    for _ in 0..3 {
        h.report("web-1", 2).await;
        tokio::time::sleep(Duration::from_secs(5 * 60)).await;
    }
    // 15 minutes in: grace is over, web-2 is not gone yet.
    assert_eq!(h.phase(&db()), "grace");
    for _ in 0..4 {
        h.report("web-1", 2).await;
        tokio::time::sleep(Duration::from_secs(5 * 60)).await;
    }
    eventually(Duration::from_secs(5), "web-2 gone, expiry", async || {
        h.phase(&db()) == "idle"
    })
    .await;
    let states = h.states().await;
    assert_eq!(
        states,
        vec![
            ("web-1".into(), Some(2), "current".into()),
            ("web-2".into(), Some(1), "gone".into()),
        ]
    );
    let history = h.store.history(&db(), 1).await.unwrap();
    assert_eq!(history[0].gone_consumers, vec!["web-2".to_owned()]);
    assert!(history[0].late_consumers.is_empty());
    assert_eq!(h.late_expiries("gone"), 1);
    // A gone consumer that reports again is live again.
    h.report("web-2", 2).await;
    eventually(Duration::from_secs(5), "web-2 back", async || {
        h.states().await[1].2 == "current"
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn max_grace_extension_bounds_the_wait_and_names_the_late_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), "ttl = \"1d\"").await;
    h.report("web-1", 1).await;
    h.rotate_into_grace().await;
    // web-1 keeps reporting v1: 10 minutes of grace plus the 24 h default extension.
    for _ in 0..25 {
        h.report("web-1", 1).await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    // The schedule rotates again as soon as v2 is out of grace (an hour is long past), so
    // the attempt's history record says it expired, not the phase.
    eventually(Duration::from_secs(5), "forced expiry", async || {
        h.store
            .history(&db(), 10)
            .await
            .unwrap()
            .iter()
            .any(|r| r.to_version == 2)
    })
    .await;
    let history = h.store.history(&db(), 10).await.unwrap();
    let v2 = history.iter().find(|r| r.to_version == 2).unwrap();
    assert_eq!(v2.late_consumers, vec!["web-1".to_owned()]);
    assert!(v2.gone_consumers.is_empty());
    assert_eq!(h.late_expiries("late"), 1);
}

#[tokio::test(start_paused = true)]
async fn consumers_and_permits_survive_a_restart_and_reports_of_unknown_secrets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let consumers = "ttl = \"10m\"\nmax_concurrent_reloads = 2\npermit_timeout = \"2m\"";
    let mut h = start(dir.path(), consumers).await;
    h.report("web-1", 1).await;
    let unknown = h
        .admin
        .consumer_report(Report {
            consumer_id: "web-1".into(),
            workload: None,
            secrets: vec![(SecretRef::new("tenant9", "nope").unwrap(), None, None)],
        })
        .await
        .expect_err("unknown secret");
    assert_eq!(
        unknown,
        AdminError::UnknownSecret("tenant9/nope".into()),
        "named"
    );
    let a = h
        .admin
        .permit_acquire("web-1".into(), "web".into())
        .await
        .expect("first permit");
    // The same consumer asking again gets the same permit.
    let again = h
        .admin
        .permit_acquire("web-1".into(), "web".into())
        .await
        .expect("same permit");
    assert_eq!(a.permit_id, again.permit_id);
    let _b = h
        .admin
        .permit_acquire("web-2".into(), "web".into())
        .await
        .expect("second permit");
    match h.admin.permit_acquire("web-3".into(), "web".into()).await {
        Err(AdminError::Busy { retry_after_ms, .. }) => {
            assert!((1..=1_000).contains(&retry_after_ms), "{retry_after_ms}")
        }
        other => panic!("third permit: {other:?}"),
    }
    // Another workload has a budget of its own.
    h.admin
        .permit_acquire("api-1".into(), "api".into())
        .await
        .expect("other workload");
    // A restart: the consumer and the permits are read back from the store.
    h.tree.shutdown(Duration::from_secs(5)).await;
    drop(h);
    let h = start(dir.path(), consumers).await;
    assert_eq!(
        h.states().await,
        vec![("web-1".into(), Some(1), "current".into())]
    );
    assert!(matches!(
        h.admin.permit_acquire("web-3".into(), "web".into()).await,
        Err(AdminError::Busy { .. })
    ));
    // Returning a permit frees a slot; returning it twice is no error.
    h.admin
        .permit_release(a.permit_id.clone())
        .await
        .expect("release");
    h.admin
        .permit_release(a.permit_id)
        .await
        .expect("release again");
    let c = h
        .admin
        .permit_acquire("web-3".into(), "web".into())
        .await
        .expect("slot freed");
    // A permit not returned within permit_timeout is released.
    tokio::time::sleep(Duration::from_secs(150)).await;
    eventually(
        Duration::from_secs(5),
        "expired permits released",
        async || {
            h.admin
                .permit_acquire("web-4".into(), "web".into())
                .await
                .is_ok()
        },
    )
    .await;
    assert!(
        h.store
            .record_list(rotor::actors::consumers::PERMITS_NS)
            .await
            .unwrap()
            .iter()
            .all(|r| r.id != c.permit_id),
        "the expired permit's record is deleted"
    );
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Serves the router with both tokens over real loopback HTTP.
async fn serve(h: &Harness) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let router = server::router_with_consumers(
        h.admin.clone(),
        AdminToken::new("admin-token").unwrap(),
        Some(AdminToken::new("consumer-token").unwrap()),
        Duration::from_secs(10),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = server::serve(listener, router, std::future::pending()).await;
    });
    (addr, task)
}

#[tokio::test]
async fn routes_over_http_and_the_consumer_token_gets_403_on_every_admin_route() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(
        dir.path(),
        "max_concurrent_reloads = 1\npermit_timeout = \"1m\"",
    )
    .await;
    let (addr, task) = serve(&h).await;
    let consumer = Some("consumer-token");
    let admin_t = Some("admin-token");
    let body = r#"{"tenantId":"tenant1","secretKey":"db"}"#;
    for (method, path, json) in [
        ("POST", "/admin/secrets/rotate", Some(body)),
        ("POST", "/admin/secrets/rollback", Some(body)),
        ("GET", "/admin/secrets/versions/tenant1/db", None),
        ("GET", "/admin/secrets/history/tenant1/db", None),
        ("GET", "/admin/secrets/schedule", None),
        ("GET", "/admin/secrets/consumers/tenant1/db", None),
    ] {
        let r = request(addr, method, path, consumer, json).await;
        assert_eq!(r.status, 403, "{method} {path}: {}", text(&r));
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .contains("consumer token")
        );
        assert!(!text(&r).contains("consumer-token"), "token echoed");
        let r = request(addr, method, path, None, json).await;
        assert_eq!(r.status, 401, "{method} {path} without a token");
        let r = request(addr, method, path, Some("wrong"), json).await;
        assert_eq!(r.status, 401, "{method} {path} with a wrong token");
    }
    // Reports.
    let report = r#"{"consumerId":"web-7d9f-abc","workload":"web","secrets":[{"tenantId":"tenant1","secretKey":"db","version":1,"reloaded":true}]}"#;
    let r = request(addr, "POST", "/consumers/report", consumer, Some(report)).await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("ok")),
        "{}",
        text(&r)
    );
    let r = request(addr, "POST", "/consumers/report", admin_t, Some(report)).await;
    assert_eq!(r.status, 403, "the admin token does not report");
    let r = request(addr, "POST", "/consumers/report", None, Some(report)).await;
    assert_eq!(r.status, 401);
    let unknown = r#"{"consumerId":"web-1","workload":null,"secrets":[{"tenantId":"tenant1","secretKey":"nope","version":null,"reloaded":null}]}"#;
    let r = request(addr, "POST", "/consumers/report", consumer, Some(unknown)).await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("tenant1/nope"));
    for (bad, needle) in [
        (
            r#"{"consumerId":"../x","secrets":[]}"#,
            "invalid consumerId \"../x\"",
        ),
        (
            r#"{"consumerId":"web-1","workload":"a b","secrets":[]}"#,
            "invalid workload \"a b\"",
        ),
        (r#"{"consumerId":"web-1"}"#, "missing field secrets"),
        (
            r#"{"consumerId":"web-1","secrets":[{"tenantId":"Tenant1","secretKey":"db"}]}"#,
            "invalid tenantId",
        ),
    ] {
        let r = request(addr, "POST", "/consumers/report", consumer, Some(bad)).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(
            r.json()["error"].as_str().unwrap().contains(needle),
            "{bad}: {}",
            text(&r)
        );
    }
    // The admin route lists it.
    let r = request(
        addr,
        "GET",
        "/admin/secrets/consumers/tenant1/db",
        admin_t,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let j = r.json();
    assert_eq!(j["tenantId"], "tenant1");
    assert_eq!(j["secretKey"], "db");
    let c = &j["consumers"][0];
    assert_eq!(c["consumerId"], "web-7d9f-abc");
    assert_eq!(c["workload"], "web");
    assert_eq!(c["version"], 1);
    assert_eq!(c["state"], "current");
    assert_eq!(c["reloaded"], true);
    assert!(c["lastReportAt"].is_string());
    // Permits: one per workload here; the second waits with Retry-After.
    let ask = r#"{"consumerId":"web-1","workload":"web"}"#;
    let r = request(addr, "POST", "/consumers/permits", consumer, Some(ask)).await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let permit = r.json()["permitId"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["expiresInMs"], 60_000);
    let r = request(
        addr,
        "POST",
        "/consumers/permits",
        consumer,
        Some(r#"{"consumerId":"web-2","workload":"web"}"#),
    )
    .await;
    assert_eq!(r.status, 429, "{}", text(&r));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert!(r.json()["retryAfterMs"].as_u64().unwrap() >= 1_000);
    let r = request(
        addr,
        "POST",
        "/consumers/permits",
        consumer,
        Some(r#"{"consumerId":"web-2"}"#),
    )
    .await;
    assert_eq!(r.status, 400, "workload is required for a permit");
    for _ in 0..2 {
        let r = request(
            addr,
            "DELETE",
            &format!("/consumers/permits/{permit}"),
            consumer,
            None,
        )
        .await;
        assert_eq!(r.status, 204, "{}", text(&r));
    }
    let r = request(addr, "DELETE", "/consumers/permits/..%2Fx", consumer, None).await;
    assert_eq!(r.status, 400);
    task.abort();
}

#[tokio::test]
async fn consumer_routes_are_off_without_a_consumer_token() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), "").await;
    let router = server::router(
        h.admin.clone(),
        AdminToken::new("admin-token").unwrap(),
        Duration::from_secs(10),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = server::serve(listener, router, std::future::pending()).await;
    });
    let r = request(
        addr,
        "POST",
        "/consumers/report",
        Some("admin-token"),
        Some(r#"{"consumerId":"a","secrets":[]}"#),
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("consumer_token_file")
    );
    task.abort();
}
