//! The admin HTTP API over real loopback HTTP, against a fake [`Admin`] backend.
//!
//! The client is a few dozen lines of HTTP/1.1 over a tokio `TcpStream` (one request per
//! connection, `Connection: close`, read to EOF): it keeps compile time small and lets tests
//! send bytes no well-behaved client library would.

use crate::common::http::{Resp, send_raw};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{TimeZone, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rotor::api::server::{self, AdminToken, TokenError};
use rotor::api::{Admin, AdminError, ScheduleEntry};
use rotor::domain::{
    ErrorKind, HistoryRecord, Label, Outcome, RotationId, SecretRef, Step, Trigger, VersionMeta,
};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOKEN: &str = "test-token-Zm9vYmFyYmF6";

// -------------------------------------------------------------------------------------------
// Fake backend

/// Knows one secret, `tenant1/db`, with two versions and three history records. Switches make
/// it refuse with a conflict, report not ready, or hang (for the timeout).
struct Fake {
    conflict: AtomicBool,
    ready: AtomicBool,
    hang: AtomicBool,
    next_id: AtomicU64,
    /// The `limit` the last history call received.
    last_limit: Mutex<Option<usize>>,
}

impl Fake {
    fn new() -> Arc<Fake> {
        Arc::new(Fake {
            conflict: AtomicBool::new(false),
            ready: AtomicBool::new(true),
            hang: AtomicBool::new(false),
            next_id: AtomicU64::new(7),
            last_limit: Mutex::new(None),
        })
    }

    fn known(&self, s: &SecretRef) -> Result<(), AdminError> {
        if s.tenant() == "tenant1" && s.key() == "db" {
            Ok(())
        } else {
            Err(AdminError::UnknownSecret(s.to_string()))
        }
    }

    fn start(&self, s: &SecretRef, busy: &str) -> Result<RotationId, AdminError> {
        self.known(s)?;
        if self.conflict.load(Ordering::SeqCst) {
            return Err(AdminError::Conflict(format!("{s}: {busy}")));
        }
        Ok(RotationId(self.next_id.fetch_add(1, Ordering::SeqCst)))
    }
}

fn at(secs: i64) -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0)
        .single()
        .expect("valid")
}

impl Admin for Fake {
    fn jwks(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<u8>, AdminError>> {
        async move {
            self.known(&secret)?;
            Err(AdminError::NotFound(format!(
                "{secret} publishes no public key set"
            )))
        }
        .boxed()
    }

    fn rotate(&self, secret: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        async move { self.start(&secret, "a rotation is in flight") }.boxed()
    }

    fn rollback(&self, secret: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        async move { self.start(&secret, "nothing is in grace") }.boxed()
    }

    fn versions(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<VersionMeta>, AdminError>> {
        async move {
            self.known(&secret)?;
            Ok(vec![
                VersionMeta {
                    version: 1,
                    rotation: RotationId(1),
                    labels: vec![Label::Previous],
                    created_at: at(0),
                    promoted_at: Some(at(1)),
                    expired_at: None,
                    fingerprint: "00112233445566778899aabbccddeeff".into(),
                },
                VersionMeta {
                    version: 2,
                    rotation: RotationId(2),
                    labels: vec![Label::Current],
                    created_at: at(100),
                    promoted_at: Some(at(102)),
                    expired_at: None,
                    fingerprint: "ffeeddccbbaa99887766554433221100".into(),
                },
            ])
        }
        .boxed()
    }

    fn history(
        &self,
        secret: SecretRef,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<HistoryRecord>, AdminError>> {
        async move {
            self.known(&secret)?;
            *self.last_limit.lock().expect("lock") = Some(limit);
            let record = |id, outcome, error| HistoryRecord {
                rotation: RotationId(id),
                trigger: Trigger::Schedule,
                from_version: Some(id - 1),
                to_version: id,
                outcome,
                error,
                steps: vec![Step::Generate, Step::Apply, Step::Test, Step::Promote],
                started_at: at(100 * id as i64),
                finished_at: at(100 * id as i64) + chrono::Duration::milliseconds(2500),
                late_consumers: Vec::new(),
                gone_consumers: Vec::new(),
            };
            let all = vec![
                record(3, Outcome::Failed, Some(ErrorKind::Test)),
                record(2, Outcome::Succeeded, None),
                record(1, Outcome::Succeeded, None),
            ];
            Ok(all.into_iter().take(limit).collect())
        }
        .boxed()
    }

    fn schedule(&self) -> BoxFuture<'_, Result<Vec<ScheduleEntry>, AdminError>> {
        async move {
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            Ok(vec![ScheduleEntry {
                tenant_id: "tenant1".into(),
                secret_key: "db".into(),
                policy: "db-90d".into(),
                phase: "idle".into(),
                current_version: Some(2),
                next_rotation_at: Some(at(90 * 86_400)),
                grace_expires_at: None,
            }])
        }
        .boxed()
    }

    fn metrics_text(&self) -> BoxFuture<'_, Result<String, AdminError>> {
        async move { Ok("# TYPE rotor_up gauge\nrotor_up 1\n".to_owned()) }.boxed()
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

// -------------------------------------------------------------------------------------------
// Server and client

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(fake: Arc<Fake>) -> Server {
        Self::start_with_timeout(fake, Duration::from_secs(10)).await
    }

    async fn start_with_timeout(fake: Arc<Fake>, timeout: Duration) -> Server {
        let token = AdminToken::new(TOKEN).expect("token");
        let router = server::router(fake, token, timeout);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(listener, router, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("server stops within 5s")
            .expect("server task")
            .expect("serve returns Ok");
    }

    /// Sends a request with the admin token.
    async fn get(&self, path: &str) -> Resp {
        self.request("GET", path, Some(TOKEN), None).await
    }

    async fn post_json(&self, path: &str, body: &str) -> Resp {
        self.request(
            "POST",
            path,
            Some(TOKEN),
            Some(("application/json", body.as_bytes())),
        )
        .await
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, &[u8])>,
    ) -> Resp {
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        let mut raw = Vec::new();
        match body {
            Some((content_type, bytes)) => {
                if !content_type.is_empty() {
                    head.push_str(&format!("Content-Type: {content_type}\r\n"));
                }
                head.push_str(&format!("Content-Length: {}\r\n\r\n", bytes.len()));
                raw.extend_from_slice(head.as_bytes());
                raw.extend_from_slice(bytes);
            }
            None => {
                head.push_str("\r\n");
                raw.extend_from_slice(head.as_bytes());
            }
        }
        send_raw(self.addr, &raw).await
    }
}

trait ExpectError {
    fn expect_error(&self, status: u16) -> String;
}

impl ExpectError for Resp {
    fn expect_error(&self, status: u16) -> String {
        expect_error_impl(self, status)
    }
}

/// Asserts the status and that the body is `{"error": "<non-empty>"}`; returns the message.
fn expect_error_impl(resp: &Resp, status: u16) -> String {
    assert_eq!(
        resp.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&resp.body)
    );
    let v = resp.json();
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field: {v}"));
    assert!(!msg.is_empty());
    assert!(!msg.contains(TOKEN));
    assert!(
        resp.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{:?}",
        resp.headers
    );
    msg.to_owned()
}

// -------------------------------------------------------------------------------------------
// Probes and metrics

#[tokio::test]
async fn healthz_is_ok_without_token() {
    let s = Server::start(Fake::new()).await;
    let r = s.request("GET", "/healthz", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"status": "ok"}));
    s.shutdown().await;
}

#[tokio::test]
async fn readyz_follows_backend() {
    let fake = Fake::new();
    fake.ready.store(false, Ordering::SeqCst);
    let s = Server::start(fake.clone()).await;
    let r = s.request("GET", "/readyz", None, None).await;
    r.expect_error(503);
    assert_eq!(r.json()["status"], "not_ready");
    fake.ready.store(true, Ordering::SeqCst);
    let r = s.request("GET", "/readyz", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ready");
    s.shutdown().await;
}

#[tokio::test]
async fn metrics_is_prometheus_text_without_token() {
    let s = Server::start(Fake::new()).await;
    let r = s.request("GET", "/metrics", None, None).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(r.body, b"# TYPE rotor_up gauge\nrotor_up 1\n");
    s.shutdown().await;
}

// -------------------------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn admin_routes_need_the_token() {
    let s = Server::start(Fake::new()).await;
    let routes = [
        ("GET", "/admin/secrets/schedule"),
        ("GET", "/admin/secrets/versions/tenant1/db"),
        ("GET", "/admin/secrets/history/tenant1/db"),
        ("POST", "/admin/secrets/rotate"),
        ("POST", "/admin/secrets/rollback"),
    ];
    let body = Some((
        "application/json",
        &br#"{"tenantId":"tenant1","secretKey":"db"}"#[..],
    ));
    for (method, path) in routes {
        let none = s.request(method, path, None, body).await;
        none.expect_error(401);
        assert_eq!(none.header("www-authenticate"), Some("Bearer"));

        let wrong_token = format!("{TOKEN}x");
        let wrong = s.request(method, path, Some(&wrong_token), body).await;
        let msg = wrong.expect_error(401);
        assert_eq!(wrong.header("www-authenticate"), Some("Bearer"));
        assert!(!msg.contains(&wrong_token));
        assert!(!String::from_utf8_lossy(&wrong.body).contains("test-token"));

        // A prefix of the real token must not pass either.
        let prefix = s.request(method, path, Some(&TOKEN[..10]), body).await;
        prefix.expect_error(401);

        let basic = s
            .request_with_header(method, path, "Authorization", &format!("Basic {TOKEN}"))
            .await;
        basic.expect_error(401);
    }
    s.shutdown().await;
}

impl Server {
    async fn request_with_header(&self, method: &str, path: &str, name: &str, value: &str) -> Resp {
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{name}: {value}\r\nContent-Length: 0\r\n\r\n"
        );
        send_raw(self.addr, raw.as_bytes()).await
    }
}

// -------------------------------------------------------------------------------------------
// Rotate and rollback

#[tokio::test]
async fn rotate_accepts_and_returns_id() {
    let s = Server::start(Fake::new()).await;
    let r = s
        .post_json(
            "/admin/secrets/rotate",
            r#"{"tenantId":"tenant1","secretKey":"db"}"#,
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json(),
        serde_json::json!({"rotationId": "r7", "tenantId": "tenant1", "secretKey": "db", "status": "accepted"})
    );
    s.shutdown().await;
}

#[tokio::test]
async fn rollback_accepts_and_returns_id() {
    let s = Server::start(Fake::new()).await;
    let r = s
        .post_json(
            "/admin/secrets/rollback",
            r#"{"tenantId":"tenant1","secretKey":"db"}"#,
        )
        .await;
    assert_eq!(r.status, 202);
    let v = r.json();
    assert_eq!(v["rotationId"], "r7");
    assert_eq!(v["status"], "accepted");
    s.shutdown().await;
}

#[tokio::test]
async fn rotate_and_rollback_conflict_is_409() {
    let fake = Fake::new();
    fake.conflict.store(true, Ordering::SeqCst);
    let s = Server::start(fake).await;
    let body = r#"{"tenantId":"tenant1","secretKey":"db"}"#;
    let msg = s
        .post_json("/admin/secrets/rotate", body)
        .await
        .expect_error(409);
    assert!(msg.contains("in flight"), "{msg}");
    let msg = s
        .post_json("/admin/secrets/rollback", body)
        .await
        .expect_error(409);
    assert!(msg.contains("grace"), "{msg}");
    s.shutdown().await;
}

#[tokio::test]
async fn unknown_secret_is_404() {
    let s = Server::start(Fake::new()).await;
    let body = r#"{"tenantId":"tenant1","secretKey":"nope"}"#;
    let msg = s
        .post_json("/admin/secrets/rotate", body)
        .await
        .expect_error(404);
    assert!(msg.contains("tenant1/nope"), "{msg}");
    s.post_json("/admin/secrets/rollback", body)
        .await
        .expect_error(404);
    s.get("/admin/secrets/versions/tenant1/nope")
        .await
        .expect_error(404);
    s.get("/admin/secrets/history/other/db")
        .await
        .expect_error(404);
    s.shutdown().await;
}

#[tokio::test]
async fn bad_bodies_are_400() {
    let s = Server::start(Fake::new()).await;
    let cases = [
        (r#"{"secretKey":"db"}"#, "tenantId"),
        (r#"{"tenantId":"tenant1"}"#, "secretKey"),
        (r#"{}"#, "tenantId"),
        (r#"{"tenantId":"../etc","secretKey":"db"}"#, "tenantId"),
        (r#"{"tenantId":"tenant1","secretKey":"a/b"}"#, "secretKey"),
        (r#"{"tenantId":"Tenant1","secretKey":"db"}"#, "tenantId"),
        (r#"{"tenantId":"","secretKey":"db"}"#, "tenantId"),
        // Wrong shapes and broken JSON: serde's own words, with where it stopped.
        (
            r#"{"tenantId":5,"secretKey":"db"}"#,
            "tenantId: invalid type: integer `5`, expected a string",
        ),
        (
            r#"[]"#,
            "invalid length 0, expected struct SecretBody with 2 elements",
        ),
        (r#"null"#, "invalid type: null, expected struct SecretBody"),
        (
            r#"{"tenantId":"tenant1","#,
            "Failed to parse the request body as JSON: EOF while parsing a value at line 1 column 22",
        ),
        ("not json", "expected ident at line 1 column 2"),
        ("", "EOF while parsing a value at line 1 column 0"),
    ];
    for path in ["/admin/secrets/rotate", "/admin/secrets/rollback"] {
        for (body, names) in cases {
            let msg = s.post_json(path, body).await.expect_error(400);
            assert!(msg.contains(names), "{body}: {msg}");
        }
    }
    s.shutdown().await;
}

#[tokio::test]
async fn wrong_content_type_is_415_json() {
    let s = Server::start(Fake::new()).await;
    let body = br#"{"tenantId":"tenant1","secretKey":"db"}"#;
    for ct in ["text/plain", ""] {
        let r = s
            .request(
                "POST",
                "/admin/secrets/rotate",
                Some(TOKEN),
                Some((ct, body)),
            )
            .await;
        let msg = r.expect_error(415);
        assert!(msg.to_lowercase().contains("content-type"), "{msg}");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn body_over_16_kib_is_413() {
    let s = Server::start(Fake::new()).await;
    let padding = " ".repeat(17 * 1024);
    let body = format!(r#"{{"tenantId":"tenant1",{padding}"secretKey":"db"}}"#);
    let r = s.post_json("/admin/secrets/rotate", &body).await;
    r.expect_error(413);
    // Just under the limit is still fine: the limit is about size, not whitespace.
    let padding = " ".repeat(15 * 1024);
    let body = format!(r#"{{"tenantId":"tenant1",{padding}"secretKey":"db"}}"#);
    assert_eq!(
        s.post_json("/admin/secrets/rotate", &body).await.status,
        202
    );
    s.shutdown().await;
}

// -------------------------------------------------------------------------------------------
// Reads

#[tokio::test]
async fn versions_returns_metadata_in_camel_case() {
    let s = Server::start(Fake::new()).await;
    let r = s.get("/admin/secrets/versions/tenant1/db").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["tenantId"], "tenant1");
    assert_eq!(v["secretKey"], "db");
    let versions = v["versions"].as_array().expect("array");
    assert_eq!(versions.len(), 2);
    assert_eq!(
        versions[1],
        serde_json::json!({
            "version": 2,
            "labels": ["current"],
            "createdAt": "2023-11-14T22:15:00Z",
            "promotedAt": "2023-11-14T22:15:02Z",
            "expiredAt": null,
            "fingerprint": "ffeeddccbbaa99887766554433221100",
        })
    );
    assert_eq!(versions[0]["labels"], serde_json::json!(["previous"]));
    s.shutdown().await;
}

#[tokio::test]
async fn invalid_identifiers_in_paths_are_400() {
    let s = Server::start(Fake::new()).await;
    for path in [
        "/admin/secrets/versions/..%2Fetc/db",
        "/admin/secrets/versions/../db",
        "/admin/secrets/versions/Tenant1/db",
        "/admin/secrets/versions/tenant1/%00",
        "/admin/secrets/history/tenant1/a%20b",
        "/admin/secrets/history/tenant1/%FF",
    ] {
        let msg = s.get(path).await.expect_error(400);
        assert!(!msg.is_empty(), "{path}");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn history_has_durations_and_limits() {
    let fake = Fake::new();
    let s = Server::start(fake.clone()).await;
    let r = s.get("/admin/secrets/history/tenant1/db").await;
    assert_eq!(r.status, 200);
    assert_eq!(*fake.last_limit.lock().expect("lock"), Some(50));
    let v = r.json();
    assert_eq!(v["tenantId"], "tenant1");
    assert_eq!(v["secretKey"], "db");
    let rotations = v["rotations"].as_array().expect("array");
    assert_eq!(rotations.len(), 3);
    assert_eq!(
        rotations[0],
        serde_json::json!({
            "rotationId": "r3",
            "trigger": "schedule",
            "fromVersion": 2,
            "toVersion": 3,
            "outcome": "failed",
            "error": "test",
            "steps": ["generate", "apply", "test", "promote"],
            "startedAt": "2023-11-14T22:18:20Z",
            "finishedAt": "2023-11-14T22:18:22.500Z",
            "durationSeconds": 2.5,
        })
    );
    assert_eq!(rotations[1]["error"], Value::Null);

    let r = s.get("/admin/secrets/history/tenant1/db?limit=1").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["rotations"].as_array().expect("array").len(), 1);
    assert_eq!(*fake.last_limit.lock().expect("lock"), Some(1));
    let r = s.get("/admin/secrets/history/tenant1/db?limit=1000").await;
    assert_eq!(r.status, 200);

    for bad in ["0", "1001", "-3", "ten", "", "1.5"] {
        let msg = s
            .get(&format!("/admin/secrets/history/tenant1/db?limit={bad}"))
            .await
            .expect_error(400);
        assert!(msg.contains("limit"), "{bad}: {msg}");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn schedule_lists_entries() {
    let s = Server::start(Fake::new()).await;
    let r = s.get("/admin/secrets/schedule").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        serde_json::json!({"secrets": [{
            "tenantId": "tenant1",
            "secretKey": "db",
            "policy": "db-90d",
            "phase": "idle",
            "currentVersion": 2,
            "nextRotationAt": "2024-02-12T22:13:20Z",
            "graceExpiresAt": null,
        }]})
    );
    s.shutdown().await;
}

// -------------------------------------------------------------------------------------------
// Routing errors, timeouts, fuzz

#[tokio::test]
async fn unknown_route_is_404_json() {
    let s = Server::start(Fake::new()).await;
    let msg = s.get("/nope").await.expect_error(404);
    assert!(msg.contains("/nope"), "{msg}");
    s.get("/admin/secrets").await.expect_error(404);
    s.get("/admin/secrets/versions/tenant1")
        .await
        .expect_error(404);
    s.request("GET", "/", None, None).await.expect_error(404);
    s.shutdown().await;
}

#[tokio::test]
async fn wrong_method_is_405_json() {
    let s = Server::start(Fake::new()).await;
    let r = s.request("POST", "/healthz", None, None).await;
    let msg = r.expect_error(405);
    assert!(msg.contains("GET"), "{msg}");
    s.request("DELETE", "/metrics", None, None)
        .await
        .expect_error(405);
    s.get("/admin/secrets/rotate").await.expect_error(405);
    s.request("PUT", "/admin/secrets/schedule", Some(TOKEN), None)
        .await
        .expect_error(405);
    s.shutdown().await;
}

#[tokio::test]
async fn slow_backend_times_out_with_503() {
    let fake = Fake::new();
    fake.hang.store(true, Ordering::SeqCst);
    // Short enough to keep the test quick, long enough that a loaded machine answers the
    // /healthz below within it.
    let s = Server::start_with_timeout(fake, Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    let msg = s.get("/admin/secrets/schedule").await.expect_error(503);
    assert!(msg.contains("did not complete"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The server keeps answering other requests.
    assert_eq!(s.request("GET", "/healthz", None, None).await.status, 200);
    s.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_never_yield_5xx() {
    let s = Server::start(Fake::new()).await;
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let prefixes = [
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/admin",
        "/admin/secrets/rotate",
        "/admin/secrets/rollback",
        "/admin/secrets/versions/",
        "/admin/secrets/history/",
        "/admin/secrets/schedule",
    ];
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    let content_types = [
        "application/json",
        "text/plain",
        "",
        "application/json; charset=utf-8",
    ];
    // Characters a request target may carry unescaped, plus escapes of arbitrary bytes.
    let path_chars: Vec<char> = "abcz09-_./?=&%~AZ".chars().collect();
    for i in 0..200 {
        let method = methods[rng.gen_range(0..methods.len())];
        let mut path = prefixes[rng.gen_range(0..prefixes.len())].to_owned();
        for _ in 0..rng.gen_range(0..12) {
            if rng.gen_bool(0.2) {
                path.push_str(&format!("%{:02X}", rng.r#gen::<u8>()));
            } else {
                path.push(path_chars[rng.gen_range(0..path_chars.len())]);
            }
        }
        let len = rng.gen_range(0..600);
        let mut body: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
        if rng.gen_bool(0.3) {
            // Near-valid JSON with random field values reaches deeper than pure noise.
            body = format!(
                r#"{{"tenantId":{},"secretKey":"db"}}"#,
                serde_json::to_string(&String::from_utf8_lossy(&body)).expect("json")
            )
            .into_bytes();
        }
        let ct = content_types[rng.gen_range(0..content_types.len())];
        let token = if rng.gen_bool(0.7) { Some(TOKEN) } else { None };
        let r = s.request(method, &path, token, Some((ct, &body))).await;
        assert!(
            r.status < 500,
            "request {i}: {method} {path} -> {} {:?}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        if r.status >= 400 && method != "HEAD" {
            r.expect_error(r.status);
        }
    }
    // Garbage request heads are refused by the HTTP parser itself, still without a 5xx.
    for _ in 0..20 {
        let junk: Vec<u8> = (0..rng.gen_range(1..200)).map(|_| rng.r#gen()).collect();
        let mut raw = junk;
        raw.extend_from_slice(b"\r\n\r\n");
        let mut stream = TcpStream::connect(s.addr).await.expect("connect");
        let _ = stream.write_all(&raw).await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
        if buf.starts_with(b"HTTP/1.1 ") {
            let status: u16 = std::str::from_utf8(&buf[9..12])
                .ok()
                .and_then(|s| s.parse().ok())
                .expect("status");
            assert!(status < 500, "junk head -> {status}");
        }
    }
    assert_eq!(s.request("GET", "/healthz", None, None).await.status, 200);
    s.shutdown().await;
}

// -------------------------------------------------------------------------------------------
// Token file

#[test]
fn token_file_is_created_0600_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("nested/dir/admin-token");
    let created = AdminToken::load_or_create(&path).expect("create");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // 32 bytes base64url without padding is 43 characters.
    assert_eq!(created.expose_secret().len(), 43);
    assert!(
        created
            .expose_secret()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert!(!format!("{created:?}").contains(created.expose_secret()));

    let before = std::fs::read(&path).expect("read");
    let loaded = AdminToken::load_or_create(&path).expect("load");
    assert_eq!(loaded.expose_secret(), created.expose_secret());
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "file rewritten"
    );
}

#[test]
fn token_file_is_not_overwritten_and_newline_trimmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("admin-token");
    std::fs::write(&path, "operator-chosen-token\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let token = AdminToken::load_or_create(&path).expect("load");
    assert_eq!(token.expose_secret(), "operator-chosen-token");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        "operator-chosen-token\n"
    );
}

#[test]
fn token_file_with_group_or_other_bits_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("admin-token");
    std::fs::write(&path, "operator-chosen-token\n").expect("write");
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let err = AdminToken::load_or_create(&path).expect_err("refused");
        assert!(matches!(err, TokenError::Permissions { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(!msg.contains("operator-chosen-token"), "{msg}");
    }
    // Refusing is all it does: the file is left as the operator wrote it.
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        "operator-chosen-token\n"
    );
}

#[test]
fn empty_token_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("admin-token");
    for content in ["", "\n", "  \n\t\n"] {
        std::fs::write(&path, content).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = AdminToken::load_or_create(&path).expect_err("refused");
        assert!(
            matches!(err, TokenError::Empty { .. }),
            "{content:?}: {err:?}"
        );
        assert!(err.to_string().contains(&path.display().to_string()));
    }
}

/// `/jwks` needs no token: its 404 is the same whether the secret exists or not, so it
/// does not tell an unauthenticated caller which secrets are configured.
#[tokio::test]
async fn jwks_404_does_not_tell_whether_a_secret_exists() {
    let server = Server::start(Fake::new()).await;
    let known = server.get("/jwks/tenant1/db").await;
    let unknown = server.get("/jwks/tenant1/nope").await;
    let message = known.expect_error(404);
    assert_eq!(unknown.expect_error(404), message);
    assert!(!message.contains("tenant1"), "{message}");
    server.shutdown().await;
}
