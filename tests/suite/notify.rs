//! Notification channels against a real local HTTP receiver (axum on a random loopback
//! port): the Slack-compatible payload and the signed generic webhook from a real rotor
//! binary (and no secret value in any of it), retries after 500s, giving up, and drops
//! when a dead receiver lets a channel's queue overflow, without delaying rotations.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::http::request;
use crate::common::rotor_bin::{
    LEAK_CHECK_LOG, RotorBin, assert_logged_at_trace, config, free_port,
};
use crate::common::wait::eventually;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use rotor::domain::SecretRef;
use rotor::metrics::Metrics;
use rotor::notify::Notification;
use rotor::notify::channel::{Delivery, RetryPolicy, Sink};
use rotor::notify::http::Poster;
use rotor::notify::webhook;
use rotor::store::ReadValue as _;
use rotor::store::embedded::EmbeddedStore;
use serde_json::Value;

#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A receiver that records every request and answers with the next planned status (200
/// once the plan is used up), or never answers when `hang`.
#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    plan: Arc<Mutex<VecDeque<u16>>>,
    hang: bool,
    /// How long each answer takes (a slow receiver).
    delay: Duration,
}

impl Receiver {
    async fn start(plan: &[u16], hang: bool) -> (Receiver, SocketAddr) {
        Self::start_with(plan, hang, Duration::ZERO).await
    }

    async fn start_with(plan: &[u16], hang: bool, delay: Duration) -> (Receiver, SocketAddr) {
        let r = Receiver {
            hits: Arc::default(),
            plan: Arc::new(Mutex::new(plan.iter().copied().collect())),
            hang,
            delay,
        };
        let app = Router::new().fallback(handle).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (r, addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

async fn handle(
    State(r): State<Receiver>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    // A slow receiver records a request once it has taken it in full (after the delay),
    // so a client that gives up early is not counted.
    tokio::time::sleep(r.delay).await;
    r.hits.lock().unwrap().push(Hit {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    if r.hang {
        std::future::pending::<()>().await;
    }
    let code = r.plan.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(code).unwrap()
}

fn json(hit: &Hit) -> Value {
    serde_json::from_slice(&hit.body).expect("JSON body")
}

/// A counter's value in an exposition, 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_and_signed_webhook_payloads_from_a_real_rotor_carry_no_secret() {
    let (recv, raddr) = Receiver::start(&[], false).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key = "whsec_test_signing_key_0123456789";
    std::fs::write(dir.join("webhook.key"), format!("{key}\n")).unwrap();
    std::fs::write(
        dir.join("slack.url"),
        format!("http://{raddr}/slack/T000/B000/XXXX\n"),
    )
    .unwrap();
    let port = free_port();
    let cfg = config(
        port,
        &format!(
            r#"[policies.n]
interval = "1h"
grace = "1m"
generator = {{ type = "token", bytes = 32, prefix = "sk_n_" }}

[[secrets]]
tenant = "tenant1"
key = "api_keys"
policy = "n"

[[notify]]
type = "slack"
url_file = "slack.url"

[[notify]]
type = "webhook"
url = "http://{raddr}/hook"
secret_file = "webhook.key"
events = ["rotation_succeeded", "grace_entered"]

[[notify]]
type = "log"
"#
        ),
    );
    let rotor = RotorBin::start_logging(dir, port, &cfg, LEAK_CHECK_LOG).await;
    succeeded(rotor.addr, 1.0).await;
    rotor.rotate("tenant1", "api_keys").await;
    // Initial rotation (started, succeeded) and the API one (started, succeeded, grace).
    eventually(
        Duration::from_secs(20),
        "grace_entered on both channels",
        || async {
            let hits = recv.hits();
            let seen = |path: &str| {
                hits.iter().any(|h| {
                    h.path.starts_with(path)
                        && json(h)["blocks"].is_array() == (path == "/slack")
                        && String::from_utf8_lossy(&h.body).contains("grace")
                })
            };
            (seen("/slack") && seen("/hook")).then_some(())
        },
    )
    .await;
    let metrics = String::from_utf8(
        request(rotor.addr, "GET", "/metrics", None, None)
            .await
            .body,
    )
    .unwrap();
    drop(rotor);

    let hits = recv.hits();
    let slack: Vec<&Hit> = hits
        .iter()
        .filter(|h| h.path.starts_with("/slack"))
        .collect();
    let hooks: Vec<&Hit> = hits.iter().filter(|h| h.path == "/hook").collect();

    // Slack: text plus blocks with tenant, key, versions, outcome.
    let succeeded = slack
        .iter()
        .map(|h| json(h))
        .find(|v| {
            v["text"]
                .as_str()
                .unwrap()
                .contains("rotation r2 of tenant1/api_keys succeeded")
        })
        .expect("a Slack message for the API rotation");
    let fields: Vec<String> = succeeded["blocks"][1]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap().to_owned())
        .collect();
    for want in [
        "*Tenant*\ntenant1",
        "*Key*\napi_keys",
        "*Version*\nv2",
        "*Outcome*\nsucceeded",
    ] {
        assert!(
            fields.iter().any(|f| f == want),
            "{want:?} not in {fields:?}"
        );
    }
    assert!(
        slack
            .iter()
            .all(|h| h.headers.get("x-rotor-signature").is_none())
    );

    // Webhook: only the routed kinds, signed with the key from the file.
    let events: Vec<String> = hooks
        .iter()
        .map(|h| json(h)["event"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e == "rotation_succeeded" || e == "grace_entered"),
        "{events:?}"
    );
    assert!(events.contains(&"grace_entered".to_owned()));
    for h in &hooks {
        let sig = h
            .headers
            .get("x-rotor-signature")
            .expect("signed")
            .to_str()
            .unwrap();
        webhook::verify(key.as_bytes(), sig, &h.body, Utc::now().timestamp(), 300)
            .unwrap_or_else(|e| panic!("signature refused: {e}"));
        assert!(webhook::verify(b"wrong key", sig, &h.body, Utc::now().timestamp(), 300).is_err());
        let v = json(h);
        assert_eq!(
            h.headers.get("x-rotor-event").unwrap(),
            v["event"].as_str().unwrap()
        );
        assert_eq!(v["tenant"], "tenant1");
        assert_eq!(v["key"], "api_keys");
        assert!(v["version"].is_u64() && v["outcome"].is_string());
    }
    let grace = hooks
        .iter()
        .map(|h| json(h))
        .find(|v| v["event"] == "grace_entered")
        .unwrap();
    assert_eq!(
        (
            grace["version"].as_u64(),
            grace["previous_version"].as_u64()
        ),
        (Some(2), Some(1))
    );
    // The queue is sequential: both succeeded events were delivered (and counted) before
    // grace_entered was posted.
    assert!(
        sample(
            &metrics,
            r#"rotor_notification_deliveries_total{channel="webhook",outcome="delivered"}"#
        ) >= 2.0,
        "{metrics}"
    );

    // No secret value anywhere: not in bodies, headers or rotor's log.
    let store = EmbeddedStore::open(&dir.join("rotor.redb"), &dir.join("master.key")).unwrap();
    let secret = SecretRef::new("tenant1", "api_keys").unwrap();
    let log = std::fs::read_to_string(dir.join("rotor.log")).unwrap();
    for v in [1, 2] {
        let value = store.read_value(&secret, v).await.unwrap();
        let value = String::from_utf8(value.expose().to_vec()).unwrap();
        assert!(value.starts_with("sk_n_"));
        for h in &hits {
            assert!(
                !String::from_utf8_lossy(&h.body).contains(&value),
                "value in a notification body"
            );
            assert!(
                !format!("{:?}", h.headers).contains(&value),
                "value in a header"
            );
        }
        assert!(!log.contains(&value), "value in the log");
    }
    assert!(
        !log.contains("XXXX"),
        "the Slack URL (a credential) is logged"
    );
    assert_logged_at_trace(&log);
    assert!(!log.contains(key), "the signing key is logged");
}

/// Waits until `n` rotations of policy `n` have succeeded (the first runs at start).
async fn succeeded(addr: SocketAddr, n: f64) -> String {
    eventually(Duration::from_secs(10), "rotations to succeed", || async {
        let m = request(addr, "GET", "/metrics", None, None).await;
        let text = String::from_utf8(m.body).unwrap();
        (sample(
            &text,
            r#"secret_rotation_total{policy="n",outcome="succeeded"}"#,
        ) >= n)
            .then_some(text)
    })
    .await
}

fn note(i: u64) -> Notification {
    let mut n = Notification::watcher_health("/mnt/secrets", false, Utc::now());
    n.summary = format!("event {i}");
    n
}

fn delivery(addr: SocketAddr, metrics: &Metrics, max_attempts: u32) -> Delivery {
    Delivery {
        name: "test".into(),
        sink: Sink::Slack {
            uri: format!("http://{addr}/slack").parse().unwrap(),
        },
        poster: Poster::new(Duration::from_secs(5), None, None).expect("client"),
        retry: RetryPolicy::new(
            max_attempts,
            Duration::from_millis(10),
            Duration::from_millis(50),
        )
        .unwrap(),
        metrics: metrics.clone(),
    }
}

#[tokio::test]
async fn retries_after_500s_then_delivers() {
    let (recv, addr) = Receiver::start(&[500, 503], false).await;
    let metrics = Metrics::new();
    assert!(delivery(addr, &metrics, 5).deliver(&note(1)).await);
    let hits = recv.hits();
    assert_eq!(hits.len(), 3, "two 5xx then a 200");
    assert!(
        hits.iter().all(|h| h.body == hits[0].body),
        "the same event each time"
    );
    let text = metrics.encode().unwrap();
    assert_eq!(
        sample(
            &text,
            r#"rotor_notification_deliveries_total{channel="test",outcome="retried"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            r#"rotor_notification_deliveries_total{channel="test",outcome="delivered"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn gives_up_after_max_attempts_and_never_retries_a_4xx() {
    let (recv, addr) = Receiver::start(&[500, 500, 500, 500], false).await;
    let metrics = Metrics::new();
    assert!(!delivery(addr, &metrics, 3).deliver(&note(1)).await);
    assert_eq!(recv.hits().len(), 3);
    let (recv, addr) = Receiver::start(&[404], false).await;
    assert!(!delivery(addr, &metrics, 3).deliver(&note(1)).await);
    assert_eq!(recv.hits().len(), 1, "a 404 is not retried");
    let text = metrics.encode().unwrap();
    assert_eq!(
        sample(
            &text,
            r#"rotor_notification_deliveries_total{channel="test",outcome="failed"}"#
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_overflows_its_queue_and_never_delays_rotations() {
    let (recv, raddr) = Receiver::start(&[], true).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let cfg = config(
        port,
        &format!(
            r#"[policies.n]
interval = "1h"
grace = "1m"
generator = {{ type = "token", bytes = 32 }}

[[secrets]]
tenant = "tenant1"
key = "api_keys"
policy = "n"

[[notify]]
type = "slack"
name = "dead"
url = "http://{raddr}/slack"
queue_capacity = 1
max_attempts = 1
timeout = "60s"
"#
        ),
    );
    let rotor = RotorBin::start(dir, port, &cfg).await;
    // The first event is stuck at the receiver; the rotation through the API still runs
    // to grace at once.
    eventually(
        Duration::from_secs(10),
        "the receiver holding a request",
        || async { (!recv.hits().is_empty()).then_some(()) },
    )
    .await;
    succeeded(rotor.addr, 1.0).await;
    let started = Instant::now();
    rotor.rotate("tenant1", "api_keys").await;
    let text = eventually(
        Duration::from_secs(10),
        "the API rotation to succeed",
        || async {
            let m = request(rotor.addr, "GET", "/metrics", None, None).await;
            let text = String::from_utf8(m.body).unwrap();
            (sample(
                &text,
                r#"secret_rotation_total{policy="n",outcome="succeeded"}"#,
            ) >= 2.0)
                .then_some(text)
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "rotation took {:?} behind a dead receiver",
        started.elapsed()
    );
    // 5 events (2 initial, 3 from the API rotation): 1 in flight, at most 1 queued.
    let dropped = sample(&text, r#"rotor_notifications_dropped_total{kind="dead"}"#);
    assert!(dropped >= 3.0, "dropped {dropped}\n{text}");
    assert_eq!(
        sample(
            &text,
            r#"rotor_notification_deliveries_total{channel="dead",outcome="dropped"}"#
        ),
        dropped
    );
    assert_eq!(
        recv.hits().len(),
        1,
        "the dead receiver holds the only request"
    );
}

/// A real TLS receiver (Python's http.server behind ssl, with a self-signed certificate
/// made by openssl): the poster reaches it over https:// when its CA is trusted through
/// `ca_file`, and refuses it when it is not (certificates are verified).
#[tokio::test]
async fn https_receivers_are_reached_and_their_certificates_verified() {
    use rotor::notify::http::{Attempt, Poster};

    let Some(receiver) = crate::common::tls::TlsReceiver::start() else {
        return;
    };
    let uri: hyper::Uri = receiver.url("/hook").parse().unwrap();
    let cert = receiver.cert.clone();

    let trusting = Poster::new(Duration::from_secs(5), Some(&cert), None).expect("client");
    let delivered = trusting.post(&uri, &[], b"{}".to_vec()).await;
    let untrusting = Poster::new(Duration::from_secs(5), None, None).expect("client");
    let refused = untrusting.post(&uri, &[], b"{}".to_vec()).await;
    assert_eq!(delivered, Attempt::Delivered);
    assert_eq!(receiver.wait_for(1)[0].path, "/hook");
    assert!(
        matches!(refused, Attempt::Retry { .. }),
        "an unknown certificate was accepted: {refused:?}"
    );
}

/// `n` secrets of a policy whose first rotations each send `rotation_started` and
/// `rotation_succeeded`, a webhook channel to `receiver`, and the log channel (which logs
/// every event the webhook channel is also given).
fn many_events_config(port: u16, receiver: SocketAddr, n: usize, shutdown: &str) -> String {
    let secrets: String = (0..n)
        .map(|i| format!("[[secrets]]\ntenant = \"t{i}\"\nkey = \"k\"\npolicy = \"n\"\n\n"))
        .collect();
    config(
        port,
        &format!(
            r#"[policies.n]
interval = "1h"
grace = "1m"
generator = {{ type = "token", bytes = 16 }}

{secrets}
[[notify]]
type = "webhook"
url = "http://{receiver}/hook"
secret_file = "webhook.key"
timeout = "30s"
max_attempts = 1

[[notify]]
type = "log"
"#
        ),
    )
    .replace(
        "shutdown_timeout = \"5s\"",
        &format!("shutdown_timeout = \"{shutdown}\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_notifications_are_delivered_before_exit() {
    // Each answer takes 100 ms, so most of the start-up events are still queued when
    // SIGTERM arrives; a graceful exit delivers them all.
    let (recv, raddr) = Receiver::start_with(&[], false, Duration::from_millis(100)).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("webhook.key"), "k\n").unwrap();
    let port = free_port();
    let cfg = many_events_config(port, raddr, 20, "20s");
    let mut rotor = RotorBin::start(dir, port, &cfg).await;
    succeeded(rotor.addr, 20.0).await;
    let before = recv.hits().len();
    let status = rotor.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let log = rotor.log();
    let events = log
        .lines()
        .filter(|l| l.contains("notification") && l.contains("channel=\"log\""))
        .count();
    assert!(
        events >= 40,
        "20 secrets started and succeeded: {events}\n{log}"
    );
    assert!(
        before < events,
        "the receiver had everything before SIGTERM; the test proves nothing"
    );
    assert_eq!(
        recv.hits().len(),
        events,
        "every queued event delivered\n{log}"
    );
    assert!(!log.contains("not delivered at exit"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_cannot_hold_the_exit_and_the_loss_is_logged() {
    let (_recv, raddr) = Receiver::start(&[], true).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("webhook.key"), "k\n").unwrap();
    let port = free_port();
    let cfg = many_events_config(port, raddr, 3, "2s");
    let mut rotor = RotorBin::start(dir, port, &cfg).await;
    succeeded(rotor.addr, 3.0).await;
    let started = Instant::now();
    let status = rotor.terminate(Duration::from_secs(10));
    let took = started.elapsed();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(4), "exit took {took:?}");
    let log = rotor.log();
    let lost = log
        .lines()
        .find(|l| l.contains("notifications not delivered at exit"))
        .unwrap_or_else(|| panic!("no loss reported:\n{log}"));
    assert!(
        lost.contains("channel=webhook") && lost.contains("undelivered=6"),
        "{lost}"
    );
}
