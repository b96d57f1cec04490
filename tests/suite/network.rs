//! rotor's network edges: which proxy an outgoing call uses (none from the environment, the
//! integration's own `proxy` key for hosts that are not loopback), plain http to Vault, and
//! the admin server's limits (header and idle timeouts, the connection cap, an oversized
//! header answered in JSON).
//!
//! The proxy is real: a TCP listener that records every request line it gets (absolute-form
//! `GET http://host/...` or `CONNECT host:port`) and, when asked, forwards it to the
//! loopback port the request names. A name that resolves nowhere (`receiver.invalid`) can
//! therefore only be reached through it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rotor::api::listener::{self, Limits};
use rotor::api::server::{self, AdminToken};
use rotor::api::{Admin, AdminError, ScheduleEntry};
use rotor::domain::{HistoryRecord, RotationId, SecretRef, VersionMeta};
use rotor::http_client::ProxyUrl;
use rotor::notify::http::{Attempt, Poster};
use rotor::store::vault::{VaultAuth, VaultSettings, VaultStore};
use rotor::store::vault_fake::VaultFake;
use rotor::watch::reload::config::{HttpUrl, ReloadAction};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::common::http::parse_response;
use crate::common::receiver::Receiver;
use crate::common::rotor_bin::{RotorBin, free_port};
use crate::common::wait::eventually;

const ROOT: &str = "root-token-network";

// -------------------------------------------------------------------------------------------
// A recording proxy

struct RecordingProxy {
    addr: SocketAddr,
    /// The request line of every request, in arrival order.
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingProxy {
    /// `forward`: pass each request on to `127.0.0.1:<the port it names>` (as origin-form
    /// for a plain request, as a tunnel for `CONNECT`); otherwise answer 502.
    async fn start(forward: bool) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let _ = proxy_one(conn, forward, record).await;
                });
            }
        });
        RecordingProxy { addr, seen, task }
    }

    fn url(&self) -> ProxyUrl {
        ProxyUrl::parse(&format!("http://{}", self.addr)).unwrap()
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy_one(
    mut conn: TcpStream,
    forward: bool,
    seen: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let line = head.lines().next().unwrap_or_default().to_owned();
    seen.lock().unwrap().push(line.clone());
    if !forward {
        conn.write_all(
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await?;
        return Ok(());
    }
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method == "CONNECT" {
        let port = target
            .rsplit(':')
            .next()
            .unwrap_or("")
            .parse::<u16>()
            .unwrap();
        let mut upstream = TcpStream::connect(("127.0.0.1", port)).await?;
        conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        upstream.write_all(&got[head_end..]).await?;
        tokio::io::copy_bidirectional(&mut conn, &mut upstream).await?;
        return Ok(());
    }
    // Absolute-form `METHOD http://host:port/path HTTP/1.1`: origin-form to the port.
    let url = url::Url::parse(target).unwrap();
    let port = url.port_or_known_default().unwrap();
    let origin = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let rewritten = head.replacen(target, &origin, 1);
    let mut upstream = TcpStream::connect(("127.0.0.1", port)).await?;
    upstream.write_all(rewritten.as_bytes()).await?;
    upstream.write_all(&got[head_end..]).await?;
    tokio::io::copy_bidirectional(&mut conn, &mut upstream).await?;
    Ok(())
}

fn vault_settings(
    address: String,
    dir: &std::path::Path,
    proxy: Option<ProxyUrl>,
) -> VaultSettings {
    let token_file = dir.join("vault.token");
    std::fs::write(&token_file, ROOT).unwrap();
    VaultSettings {
        address,
        other_addresses: Vec::new(),
        mount: "secret".into(),
        path_prefix: "network".into(),
        namespace: None,
        ca_file: None,
        master_key_file: dir.join("master.key"),
        timeout: Duration::from_secs(10),
        max_attempts: 2,
        retry_backoff: Duration::from_millis(10),
        auth: VaultAuth::Token { token_file },
        proxy,
        allow_insecure_http: false,
    }
}

fn reload_to(host: &str, port: u16, proxy: Option<ProxyUrl>) -> ReloadAction {
    ReloadAction::Http {
        url: HttpUrl {
            tls: false,
            host: host.into(),
            port,
            path: "/-/reload".into(),
        },
        method: "POST".into(),
        ca_file: None,
        proxy,
        timeout: Duration::from_secs(10),
        expected_status: None,
    }
}

// -------------------------------------------------------------------------------------------
// Proxies

/// `HTTP_PROXY` and its kin in rotor's environment are ignored: the Vault store, the
/// notifier and the webhook target all reach their loopback servers directly, and the proxy
/// hears nothing. (vaultrs built its own client, which read the environment: before rotor
/// gave it one, the store's login went to the proxy and rotor could not start.)
#[tokio::test]
async fn a_proxy_in_the_environment_is_never_used() {
    let proxy = RecordingProxy::start(false).await;
    let fake = VaultFake::start("secret", ROOT).unwrap();
    let hook = Receiver::start(vec![200]).await;
    let notified = Receiver::start(vec![200]).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vault.token"), ROOT).unwrap();
    std::fs::write(dir.path().join("hook.key"), "hook-signing-key").unwrap();
    std::fs::write(dir.path().join("notify.key"), "notify-signing-key").unwrap();
    let port = free_port();
    let config = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
admin_token_file = "admin.token"

[store]
type = "vault"
address = "{vault}"
master_key_file = "master.key"
timeout = "5s"
max_attempts = 1
auth = {{ method = "token", token_file = "vault.token" }}

[[notify]]
type = "webhook"
url = "http://127.0.0.1:{notify}/events"
secret_file = "notify.key"

[[secrets]]
tenant = "acme"
key = "hooked"
policy = "api_keys"
target = {{ type = "webhook", url = "http://127.0.0.1:{hook}/rotate", hmac_key_file = "hook.key" }}
"#,
        vault = fake.address(),
        notify = notified.addr.port(),
        hook = hook.addr.port(),
    );
    let proxy_url = format!("http://{}", proxy.addr);
    let env: Vec<(&str, &str)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .into_iter()
    .map(|k| (k, proxy_url.as_str()))
    .collect();
    let rotor = RotorBin::start_with_env(dir.path(), port, &config, &env).await;
    // The first version is made at start: its steps reach the webhook, its outcome the
    // notifier.
    eventually(
        Duration::from_secs(30),
        "the webhook and the notifier to be called",
        || async { hook.hits() > 0 && notified.hits() > 0 },
    )
    .await;
    assert!(fake.requests() > 0);
    // The CLI's admin call, with the same environment.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
        .args(["rotate", "--config", "rotor.toml", "acme", "hooked"])
        .current_dir(dir.path())
        .envs(env.iter().copied())
        .output()
        .expect("rotor rotate runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Accepted, or refused by rotor itself while the first rotation is still in flight.
    assert!(out.status.success() || stderr.contains("(409)"), "{stderr}");
    assert_eq!(proxy.seen(), Vec::<String>::new(), "log:\n{}", rotor.log());
}

/// With `proxy` set, a host that is not loopback is reached through it (the name resolves
/// nowhere else): a notification, an http reload, the Vault store, and the webhook target's
/// `CONNECT` for https.
#[tokio::test]
async fn a_configured_proxy_carries_calls_to_other_hosts() {
    let proxy = RecordingProxy::start(true).await;
    let receiver = Receiver::start(vec![200]).await;
    let port = receiver.addr.port();

    let poster = Poster::new(Duration::from_secs(10), None, Some(&proxy.url())).unwrap();
    let uri = format!("http://receiver.invalid:{port}/events")
        .parse()
        .unwrap();
    assert_eq!(
        poster.post(&uri, &[], b"{}".to_vec()).await,
        Attempt::Delivered
    );

    rotor::watch::reload::run(&reload_to("receiver.invalid", port, Some(proxy.url())))
        .await
        .expect("reload through the proxy");
    assert_eq!(receiver.hits(), 2);

    let fake = VaultFake::start("secret", ROOT).unwrap();
    let vault_port = fake.address().rsplit(':').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let settings = vault_settings(
        format!("http://vault.invalid:{vault_port}"),
        dir.path(),
        Some(proxy.url()),
    );
    VaultStore::open(settings)
        .await
        .expect("vault through the proxy");

    assert_eq!(
        proxy.seen(),
        [
            format!("POST http://receiver.invalid:{port}/events HTTP/1.1"),
            format!("POST http://receiver.invalid:{port}/-/reload HTTP/1.1"),
            format!("GET http://vault.invalid:{vault_port}/v1/auth/token/lookup-self HTTP/1.1"),
        ]
    );
}

/// The webhook target takes the proxy too: its https request opens a `CONNECT` tunnel to
/// the endpoint's host through it (the TLS handshake behind it is not this test's concern).
#[tokio::test]
async fn the_webhook_target_tunnels_through_its_proxy() {
    use rotor::config::Config;
    let proxy = RecordingProxy::start(false).await;
    let env = crate::common::targets::Env::new();
    let d = env.dir.path().display();
    let text = format!(
        r#"[store]
type = "embedded"
path = "{d}/rotor.redb"
master_key_file = "{d}/master.key"
[[secrets]]
tenant = "acme"
key = "hooked"
policy = "api_keys"
target = {{ type = "webhook", url = "https://hooks.invalid:8443/rotate", hmac_key_file = "{d}/hook.key", proxy = "http://{p}", timeout = "10s" }}
"#,
        p = proxy.addr,
    );
    std::fs::write(env.dir.path().join("hook.key"), "k").unwrap();
    let config = Config::from_str_with_env(&text, "test.toml", &|_| None).unwrap();
    let rotor::target::config::TargetConfig::Webhook(webhook) = &*config.secrets[0].target else {
        panic!("a webhook target");
    };
    let reader: rotor::target::ValueReader = env.store.clone();
    let target = webhook.build(&config.secrets[0].secret, &reader);
    let value = rotor::generator::SecretValue::from_bytes(b"hooked-value".to_vec());
    let e = target.apply(1, &value).await.unwrap_err();
    assert!(!e.to_string().contains("hooked-value"), "{e}");
    assert_eq!(proxy.seen(), ["CONNECT hooks.invalid:8443 HTTP/1.1"]);
}

/// A loopback destination never goes through the configured proxy: `127.0.0.1`,
/// `localhost` and the Vault store on loopback all go straight to the server.
#[tokio::test]
async fn loopback_bypasses_a_configured_proxy() {
    let proxy = RecordingProxy::start(false).await;
    let receiver = Receiver::start(vec![200]).await;
    let port = receiver.addr.port();
    let poster = Poster::new(Duration::from_secs(10), None, Some(&proxy.url())).unwrap();
    for host in ["127.0.0.1", "localhost"] {
        let uri = format!("http://{host}:{port}/events").parse().unwrap();
        assert_eq!(
            poster.post(&uri, &[], b"{}".to_vec()).await,
            Attempt::Delivered,
            "{host}"
        );
    }
    rotor::watch::reload::run(&reload_to("127.0.0.1", port, Some(proxy.url())))
        .await
        .expect("reload on loopback");
    assert_eq!(receiver.hits(), 3);

    let fake = VaultFake::start("secret", ROOT).unwrap();
    let dir = tempfile::tempdir().unwrap();
    VaultStore::open(vault_settings(
        fake.address(),
        dir.path(),
        Some(proxy.url()),
    ))
    .await
    .expect("vault on loopback");
    assert_eq!(proxy.seen(), Vec::<String>::new());
}

// -------------------------------------------------------------------------------------------
// Plain http to Vault

/// `rotor check` refuses `http://` to a Vault that is not loopback with exit code 64, naming
/// the key and its place; `allow_insecure_http = true` accepts it.
#[test]
fn rotor_check_refuses_plain_http_to_a_remote_vault() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rotor.toml");
    let text = "[store]\ntype = \"vault\"\naddress = \"http://vault.example.com:8200\"\nauth = { method = \"token\", token_file = \"/t\" }\n";
    std::fs::write(&file, text).unwrap();
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rotor"))
            .arg("check")
            .arg(&file)
            .output()
            .expect("rotor check runs")
    };
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("rotor.toml:3:11: store.address")
            && stderr.contains("allow_insecure_http = true"),
        "{stderr}"
    );
    std::fs::write(
        &file,
        text.replace("[store]\n", "[store]\nallow_insecure_http = true\n"),
    )
    .unwrap();
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Vault that is not loopback over `http://`, allowed with `allow_insecure_http`: rotor
/// starts (through the store's proxy, the only way to reach `vault.invalid`) and says at
/// start-up that tokens and values travel unencrypted, naming the host and nothing secret.
#[tokio::test]
async fn allowed_insecure_http_warns_at_start_up() {
    let proxy = RecordingProxy::start(true).await;
    let fake = VaultFake::start("secret", ROOT).unwrap();
    let vault_port = fake.address().rsplit(':').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vault.token"), ROOT).unwrap();
    let port = free_port();
    let config = format!(
        r#"[server]
listen = "127.0.0.1:{port}"
admin_token_file = "admin.token"

[store]
type = "vault"
address = "http://vault.invalid:{vault_port}"
allow_insecure_http = true
proxy = "http://{proxy}"
master_key_file = "master.key"
auth = {{ method = "token", token_file = "vault.token" }}
"#,
        proxy = proxy.addr,
    );
    let rotor = RotorBin::start(dir.path(), port, &config).await;
    let log = rotor.log();
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("allow_insecure_http"))
        .unwrap_or_else(|| panic!("no warning in:\n{log}"));
    assert!(warning.contains("vault.invalid"), "{warning}");
    assert!(!log.contains(ROOT), "{log}");
    assert!(!proxy.seen().is_empty());
}

// -------------------------------------------------------------------------------------------
// The admin server's connections

/// A backend that knows no secret: the connection tests only need `/healthz`, a 404, and a
/// schedule that takes `schedule_delay` to answer (a request in flight at shutdown).
struct NoSecrets {
    schedule_delay: Duration,
    /// A schedule request has reached the backend.
    scheduling: std::sync::atomic::AtomicBool,
}

impl Admin for NoSecrets {
    fn rotate(&self, s: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        Box::pin(async move { Err(AdminError::UnknownSecret(s.to_string())) })
    }
    fn rollback(&self, s: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        Box::pin(async move { Err(AdminError::UnknownSecret(s.to_string())) })
    }
    fn versions(&self, s: SecretRef) -> BoxFuture<'_, Result<Vec<VersionMeta>, AdminError>> {
        Box::pin(async move { Err(AdminError::UnknownSecret(s.to_string())) })
    }
    fn history(
        &self,
        s: SecretRef,
        _limit: usize,
    ) -> BoxFuture<'_, Result<Vec<HistoryRecord>, AdminError>> {
        Box::pin(async move { Err(AdminError::UnknownSecret(s.to_string())) })
    }
    fn schedule(&self) -> BoxFuture<'_, Result<Vec<ScheduleEntry>, AdminError>> {
        Box::pin(async {
            self.scheduling
                .store(true, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(self.schedule_delay).await;
            Ok(Vec::new())
        })
    }
    fn metrics_text(&self) -> BoxFuture<'_, Result<String, AdminError>> {
        Box::pin(async { Ok(String::new()) })
    }
    fn ready(&self) -> bool {
        true
    }
}

const ADMIN_TOKEN: &str = "network-test-token-0123456789";

/// The admin server on a loopback port with `limits`; stopped when dropped.
struct AdminServer {
    addr: SocketAddr,
    backend: Arc<NoSecrets>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl AdminServer {
    async fn start(limits: Limits) -> AdminServer {
        Self::start_with(limits, Duration::ZERO).await
    }

    async fn start_with(limits: Limits, schedule_delay: Duration) -> AdminServer {
        let token = AdminToken::new(ADMIN_TOKEN).unwrap();
        let backend = Arc::new(NoSecrets {
            schedule_delay,
            scheduling: Default::default(),
        });
        let router = server::router(backend.clone(), token, Duration::from_secs(10));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(listener::serve(listener, router, limits, async {
            let _ = stopped.await;
        }));
        AdminServer {
            addr,
            backend,
            stop: Some(stop),
            task,
        }
    }
}

/// One keep-alive `GET path` on `conn`; returns the status. Reads exactly the response
/// (head and `content-length` body), so the connection stays usable.
async fn get(conn: &mut TcpStream, path: &str) -> u16 {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nhost: rotor\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let r = parse_response(&got[..end + 4]);
            let len: usize = r.header("content-length").unwrap_or("0").parse().unwrap();
            if got.len() >= end + 4 + len {
                return r.status;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut buf))
            .await
            .expect("a response within 20 s")
            .unwrap();
        assert!(n > 0, "closed before the response was complete");
        got.extend_from_slice(&buf[..n]);
    }
}

/// Waits (at most `within`) for the server to close `conn`: a read returns end of file or a
/// reset. Panics if the connection is still open.
async fn closed_by_server(conn: &mut TcpStream, within: Duration) {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(within, conn.read(&mut buf)).await {
            Err(_) => panic!("the connection was still open after {within:?}"),
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => continue,
        }
    }
}

fn short_header_timeout() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(1),
        max_connections: 64,
    }
}

/// A client that sends half a request head is disconnected once the header timeout (1 s
/// here, 10 s in production) runs out.
#[tokio::test]
async fn a_half_sent_request_head_is_closed_after_the_header_timeout() {
    let server = AdminServer::start(short_header_timeout()).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: rotor\r\nx-slow: ")
        .await
        .unwrap();
    closed_by_server(&mut conn, Duration::from_secs(20)).await;
    // A client that says nothing at all is treated the same.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    closed_by_server(&mut silent, Duration::from_secs(20)).await;
}

/// An idle keep-alive connection (a request answered, no next one) is closed by the same
/// timeout, which hyper arms whenever it waits for a request head.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = AdminServer::start(short_header_timeout()).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(get(&mut conn, "/healthz").await, 200);
    assert_eq!(get(&mut conn, "/healthz").await, 200, "kept alive");
    closed_by_server(&mut conn, Duration::from_secs(20)).await;
}

/// Over the connection cap (4 here) a new connection is accepted and closed at once, and a
/// slot freed by a client that leaves is served again.
#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let server = AdminServer::start(Limits {
        header_read_timeout: Duration::from_secs(300),
        max_connections: 4,
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        assert_eq!(get(&mut conn, "/healthz").await, 200);
        held.push(conn);
    }
    let mut fifth = TcpStream::connect(server.addr).await.unwrap();
    // The server may close before or while the request is written: either way no answer.
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: rotor\r\n\r\n")
        .await;
    closed_by_server(&mut fifth, Duration::from_secs(20)).await;

    drop(held.pop());
    eventually(
        Duration::from_secs(20),
        "a freed slot to serve a new connection",
        || async {
            let Ok(mut conn) = TcpStream::connect(server.addr).await else {
                return false;
            };
            if conn
                .write_all(b"GET /healthz HTTP/1.1\r\nhost: rotor\r\nconnection: close\r\n\r\n")
                .await
                .is_err()
            {
                return false;
            }
            let mut got = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut got)).await;
            got.starts_with(b"HTTP/1.1 200")
        },
    )
    .await;
    // The ones still held were served all along.
    for conn in &mut held {
        assert_eq!(get(conn, "/healthz").await, 200);
    }
}

/// A 1 MB request header is answered 431 with the JSON error body every other 4xx has,
/// and the answer arrives (the rest of the request is read and dropped, not reset).
#[tokio::test]
async fn an_oversized_header_gets_431_with_a_json_error() {
    let server = AdminServer::start(Limits::default()).await;
    let mut not_found = TcpStream::connect(server.addr).await.unwrap();
    conn_write(
        &mut not_found,
        b"GET /nowhere HTTP/1.1\r\nhost: rotor\r\nconnection: close\r\n\r\n",
    )
    .await;
    let mut got = Vec::new();
    not_found.read_to_end(&mut got).await.unwrap();
    let other = parse_response(&got);
    assert_eq!(other.status, 404);

    let conn = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = conn.into_split();
    let writer = tokio::spawn(async move {
        let mut request = b"GET /healthz HTTP/1.1\r\nhost: rotor\r\nx-big: ".to_vec();
        request.extend(std::iter::repeat_n(b'a', 1024 * 1024));
        request.extend_from_slice(b"\r\n\r\n");
        // The server stops reading the head early; what it drops afterwards may fail.
        let _ = write.write_all(&request).await;
        let _ = write.shutdown().await;
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), read.read_to_end(&mut got))
        .await
        .expect("an answer within 20 s");
    writer.abort();
    let r = parse_response(&got);
    assert_eq!(r.status, 431, "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(r.header("content-type"), other.header("content-type"));
    let json = r.json();
    let keys = |v: &serde_json::Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<String>>()
    };
    assert_eq!(keys(&json), keys(&other.json()));
    let message = json["error"].as_str().unwrap();
    assert!(
        message.contains("request header fields too large"),
        "{message}"
    );
}

async fn conn_write(conn: &mut TcpStream, bytes: &[u8]) {
    conn.write_all(bytes).await.unwrap();
}

/// Shutdown closes idle connections, lets the request in flight finish with its answer, and
/// then `serve` returns.
#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    let mut server = AdminServer::start_with(Limits::default(), Duration::from_secs(1)).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(get(&mut idle, "/healthz").await, 200);
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    busy.write_all(
        format!(
            "GET /admin/secrets/schedule HTTP/1.1\r\nhost: rotor\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // The request is in the handler before shutdown begins.
    eventually(
        Duration::from_secs(20),
        "the schedule request in flight",
        || async {
            server
                .backend
                .scheduling
                .load(std::sync::atomic::Ordering::SeqCst)
        },
    )
    .await;
    let _ = server.stop.take().unwrap().send(());
    closed_by_server(&mut idle, Duration::from_secs(20)).await;
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), busy.read_to_end(&mut got))
        .await
        .expect("the answer within 20 s")
        .unwrap();
    let r = parse_response(&got);
    assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(r.json()["secrets"], serde_json::json!([]));
    tokio::time::timeout(Duration::from_secs(20), &mut server.task)
        .await
        .expect("serve returns after the drain")
        .unwrap()
        .unwrap();
}
