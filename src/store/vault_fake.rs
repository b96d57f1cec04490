//! A fake HashiCorp Vault, for tests and benchmarks of [`super::vault`]. Built only with
//! the `test-util` feature (which tests and benchmarks get through the crate's
//! dev-dependency on itself), so a release build holds no fake Vault.
//!
//! The store's behaviour is tested against a real Vault-compatible server, a private
//! OpenBao per test (`tests/suite/store_vault.rs`). The fake exists for what a real server
//! cannot be made to do on demand: answer HTTP 500s, answer late (to trip client
//! timeouts), report itself sealed and then serve again, lose a check-and-set race that no
//! other writer caused, deny one path without a policy set-up, log in with Kubernetes
//! without a Kubernetes API server, expire a token at a chosen TTL, and show every request
//! body it got. It speaks the part of Vault's HTTP API that rotor uses, with Vault's status
//! codes, JSON shapes and error texts (as OpenBao 2.7 answers them: a test sends the same
//! requests to both and compares the answers), so `vaultrs` cannot tell it from a server.
//!
//! # Endpoints
//!
//! Every response is Vault's envelope (`request_id`, `lease_id`, `lease_duration`,
//! `renewable`, `data`, `auth`, `warnings`, `wrap_info`); errors are `{"errors": [...]}`.
//!
//! | method and path | semantics |
//! |---|---|
//! | `GET /v1/sys/health` | 200 `{"initialized":true,"sealed":false,"standby":false,...}`; 503 with `"sealed":true,"standby":true` when sealed. No token needed. |
//! | `POST /v1/auth/{mount}/login` | Kubernetes login: body `{"role","jwt"}`; a role registered with [`VaultFake::add_kubernetes_role`] and its JWT get a new token in `auth` (`client_token`, `lease_duration`, `renewable: true`); otherwise 400 `invalid role name` or 403 `permission denied`. No token needed. |
//! | `GET /v1/auth/token/lookup-self` | `data` with `id`, `ttl` (seconds left; 0 for the root token), `renewable`, `policies`, ... |
//! | `POST /v1/auth/token/renew-self` | resets the token's TTL to its period; `auth` as for login; 400 for a non-renewable token |
//! | `GET /v1/{mount}/data/{path}[?version=N]` | the latest (or Nth) live version: `data.data`, `data.metadata` (`version`, `created_time`, `deletion_time`, `destroyed`, `custom_metadata`); 404 `{"errors":[]}` if absent; 400 if `version` is not a number |
//! | `POST /v1/{mount}/data/{path}` | body `{"data":{...},"options":{"cas":N}}`: writes version `current_version + 1`. With `cas`, the write happens only if `cas == current_version` (0: must not exist), else 400 `check-and-set parameter did not match the current version`. Without `cas` on a path with `cas_required`, 400 `check-and-set parameter required for this call`. Returns the new version's metadata. Versions older than `max_versions` (default 10 unless set on the path) are dropped from reads, as Vault does. |
//! | `GET /v1/{mount}/metadata/{path}` | `current_version`, `oldest_version` (0 until versions were dropped past `max_versions`), `max_versions`, `cas_required`, `custom_metadata`, `versions` (`"N": {created_time, deletion_time, destroyed}`), times; 404 if absent |
//! | `POST /v1/{mount}/metadata/{path}` | sets `max_versions`, `cas_required`, `custom_metadata` (replacing the map; numbers and booleans become strings; Vault's limits enforced with its messages: at most 64 keys, keys of 1 to 128 bytes, values of 1 to 512 bytes, else 400); creates the metadata if absent; 204 |
//! | `LIST /v1/{mount}/metadata/{path}/` (or `GET ...?list=true`) | `data.keys`: the direct children, folders with a trailing `/`, sorted; 404 if none |
//!
//! Every endpoint except health and login needs a known, unexpired `X-Vault-Token` (403
//! `permission denied` otherwise, as Vault answers a bad token). `X-Vault-Namespace` is
//! accepted and recorded ([`VaultFake::last_namespace`]), not enforced. Only the mounts
//! given at start are KV v2 mounts; other paths get 404 `no handler for route`. A path
//! denied with [`VaultFake::deny_path`] answers 403 with OpenBao's text for a policy's
//! denial, `1 error occurred:\n\t* permission denied\n\n` (an unknown token gets the
//! plain `permission denied`).
//!
//! Not implemented: KV v1, delete/undelete/destroy, `delete_version_after`, leases,
//! response wrapping, other auth methods, real policies, replication headers.
//!
//! # Faults
//!
//! [`VaultFake::faults`] plans failures for the next requests that need a token: HTTP 500s,
//! a delay (to trip client timeouts), a sealed Vault (503 `Vault is sealed` on everything),
//! a forced CAS conflict on the next data write, and a data write applied whose answer is
//! lost (500 after the write). [`VaultFake::requests`] counts what
//! arrived, and [`VaultFake::seen_bodies`] keeps request bodies so tests can check what
//! reached "Vault" (values do: Vault stores them) versus what reached logs and errors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// Token lifetime given by logins and renewals unless changed.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Vault's default `max_versions` for a KV v2 mount.
const DEFAULT_MAX_VERSIONS: u64 = 10;

/// A running fake Vault on `127.0.0.1:<ephemeral>`. Stops when dropped.
pub struct VaultFake {
    addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Failures planned for the next token-authenticated requests.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Answer this many requests with HTTP 500.
    pub fail_next: u32,
    /// Delay this many requests by `delay` before answering.
    pub delay_next: u32,
    pub delay: Duration,
    /// Answer everything (health included) as a sealed Vault.
    pub sealed: bool,
    /// Fail this many data writes with Vault's CAS mismatch, whatever their `cas`.
    pub cas_conflict_next: u32,
    /// Apply this many data writes, then answer each with HTTP 500 instead of its
    /// metadata: the answer lost after the write landed (an active node dying right after
    /// its commit, a connection reset on the way back).
    pub lose_answer_next: u32,
}

struct Token {
    expires: Option<Instant>,
    period: Duration,
    renewable: bool,
    policies: Vec<String>,
}

struct KvVersion {
    data: Value,
    created: DateTime<Utc>,
}

#[derive(Default)]
struct KvEntry {
    versions: BTreeMap<u64, KvVersion>,
    current: u64,
    custom: BTreeMap<String, String>,
    cas_required: bool,
    max_versions: u64,
    /// Vault's `oldest_version`: 0 until a write drops versions past `max_versions`, then
    /// the oldest one kept.
    oldest: u64,
    created: Option<DateTime<Utc>>,
    updated: Option<DateTime<Utc>>,
}

struct FakeState {
    mounts: BTreeSet<String>,
    tokens: HashMap<String, Token>,
    roles: HashMap<String, String>,
    kv: BTreeMap<(String, String), KvEntry>,
    faults: Faults,
    denied: Vec<String>,
    token_ttl: Duration,
    issued: u64,
    requests: u64,
    last_namespace: Option<String>,
    bodies: Vec<String>,
}

impl VaultFake {
    /// Starts a fake with one KV v2 mount and a root token (never expires).
    pub fn start(mount: &str, root_token: &str) -> std::io::Result<VaultFake> {
        let mut tokens = HashMap::new();
        tokens.insert(
            root_token.to_owned(),
            Token {
                expires: None,
                period: Duration::ZERO,
                renewable: false,
                policies: vec!["root".into()],
            },
        );
        let state = Arc::new(Mutex::new(FakeState {
            mounts: [mount.to_owned()].into(),
            tokens,
            roles: HashMap::new(),
            kv: BTreeMap::new(),
            faults: Faults::default(),
            denied: Vec::new(),
            token_ttl: DEFAULT_TOKEN_TTL,
            issued: 0,
            requests: 0,
            last_namespace: None,
            bodies: Vec::new(),
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new().fallback(handle).with_state(state.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // The fake serves from its own thread and runtime so that synchronous tests,
        // async tests and benchmarks can all use it.
        let thread = std::thread::Builder::new()
            .name("vault-fake".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })?;
        Ok(VaultFake {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        lock(&self.state)
    }

    /// Plans failures (replacing any earlier plan).
    pub fn faults(&self, faults: Faults) {
        self.state().faults = faults;
    }

    /// Registers a Kubernetes auth role that accepts this service-account JWT.
    pub fn add_kubernetes_role(&self, role: &str, jwt: &str) {
        self.state().roles.insert(role.to_owned(), jwt.to_owned());
    }

    /// Lifetime of tokens issued from now on by login and renewal.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.state().token_ttl = ttl;
    }

    /// Makes every request to a path starting with `prefix` (after `/v1/`) answer 403.
    pub fn deny_path(&self, prefix: &str) {
        self.state().denied.push(prefix.to_owned());
    }

    /// Revokes a token (as if it expired or was revoked by an operator).
    pub fn revoke(&self, token: &str) {
        self.state().tokens.remove(token);
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.state().requests
    }

    /// Tokens issued by login so far.
    pub fn logins(&self) -> u64 {
        self.state().issued
    }

    /// The last `X-Vault-Namespace` header seen.
    pub fn last_namespace(&self) -> Option<String> {
        self.state().last_namespace.clone()
    }

    /// Every request body received (what reached "Vault").
    pub fn seen_bodies(&self) -> Vec<String> {
        self.state().bodies.clone()
    }

    /// Current version of a KV path in `mount` (0 if absent).
    pub fn current_version(&self, mount: &str, path: &str) -> u64 {
        self.state()
            .kv
            .get(&(mount.to_owned(), path.to_owned()))
            .map_or(0, |e| e.current)
    }

    /// Custom metadata of a KV path.
    pub fn custom_metadata(&self, mount: &str, path: &str) -> BTreeMap<String, String> {
        self.state()
            .kv
            .get(&(mount.to_owned(), path.to_owned()))
            .map(|e| e.custom.clone())
            .unwrap_or_default()
    }
}

impl Drop for VaultFake {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(state: &Mutex<FakeState>) -> MutexGuard<'_, FakeState> {
    match state.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn envelope(data: Option<Value>, auth: Option<Value>) -> Value {
    json!({
        "request_id": "00000000-0000-0000-0000-000000000000",
        "lease_id": "",
        "lease_duration": 0,
        "renewable": false,
        "data": data,
        "auth": auth,
        "warnings": null,
        "wrap_info": null,
    })
}

fn ok(data: Value) -> Response {
    (StatusCode::OK, axum::Json(envelope(Some(data), None))).into_response()
}

fn error(status: StatusCode, errors: &[&str]) -> Response {
    (status, axum::Json(json!({ "errors": errors }))).into_response()
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(String::new, |t| t.to_rfc3339())
}

async fn handle(
    State(state): State<Arc<Mutex<FakeState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = percent_encoding::percent_decode_str(uri.path())
        .decode_utf8_lossy()
        .into_owned();
    // Empty segments (`/v1//auth/...`, as vaultrs writes endpoint paths that start with
    // `/`) are collapsed; anything else in the path is taken as sent, so a malformed path
    // gets the 404 a Vault server gives it.
    let path = collapse_slashes(&path);
    let Some(api) = path.strip_prefix("/v1/") else {
        return error(StatusCode::NOT_FOUND, &[]);
    };
    let query = uri.query().unwrap_or("");
    let token = headers
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    let delay = {
        let mut s = lock(&state);
        s.requests += 1;
        if let Some(ns) = headers
            .get("x-vault-namespace")
            .and_then(|v| v.to_str().ok())
        {
            s.last_namespace = Some(ns.to_owned());
        }
        if !body.is_empty() {
            s.bodies.push(String::from_utf8_lossy(&body).into_owned());
        }
        if s.faults.delay_next > 0 && api != "sys/health" {
            s.faults.delay_next -= 1;
            Some(s.faults.delay)
        } else {
            None
        }
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }

    let mut s = lock(&state);
    if s.faults.sealed {
        if api == "sys/health" {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                // A sealed server is no active node, so it reports itself standby, and
                // its replication modes are unknown.
                axum::Json(json!({
                    "initialized": true, "sealed": true, "standby": true,
                    "replication_performance_mode": "unknown",
                    "replication_dr_mode": "unknown",
                    "server_time_utc": Utc::now().timestamp(), "version": "fake"
                })),
            )
                .into_response();
        }
        return error(StatusCode::SERVICE_UNAVAILABLE, &["Vault is sealed"]);
    }
    if api == "sys/health" {
        return (
            StatusCode::OK,
            axum::Json(json!({
                "initialized": true, "sealed": false, "standby": false,
                "replication_performance_mode": "disabled", "replication_dr_mode": "disabled",
                "server_time_utc": Utc::now().timestamp(),
                "version": "fake", "cluster_name": "vault-fake", "cluster_id": "fake"
            })),
        )
            .into_response();
    }
    let json_body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &[&format!("failed to decode JSON input: {e}")],
                );
            }
        }
    };

    // Logins need no token.
    if method == Method::POST
        && let Some(mount) = api
            .strip_prefix("auth/")
            .and_then(|r| r.strip_suffix("/login"))
        && mount != "token"
    {
        let _ = mount;
        return s.login(&json_body);
    }

    let token_ok = token.as_ref().is_some_and(|t| {
        s.tokens
            .get(t)
            .is_some_and(|tok| tok.expires.is_none_or(|e| e > Instant::now()))
    });
    if !token_ok {
        return error(StatusCode::FORBIDDEN, &["permission denied"]);
    }
    if s.faults.fail_next > 0 {
        s.faults.fail_next -= 1;
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &["internal error (injected)"],
        );
    }
    if s.denied.iter().any(|d| api.starts_with(d.as_str())) {
        // A policy's denial comes wrapped in Go's multierror text; an unknown token's
        // (above) does not.
        return error(
            StatusCode::FORBIDDEN,
            &["1 error occurred:\n\t* permission denied\n\n"],
        );
    }
    let token = token.unwrap_or_default();

    match (method.as_str(), api) {
        ("GET", "auth/token/lookup-self") => s.lookup_self(&token),
        ("POST", "auth/token/renew-self") => s.renew_self(&token),
        (m, _) => {
            let Some((mount, kind, kv_path)) = split_kv(api, &s.mounts) else {
                return error(
                    StatusCode::NOT_FOUND,
                    &[&format!(
                        "no handler for route \"{api}\". route entry not found."
                    )],
                );
            };
            let list = m == "LIST" || (m == "GET" && query.contains("list=true"));
            match (m, kind, list) {
                (_, "metadata", true) => s.list(&mount, &kv_path),
                ("GET", "data", _) => s.read(&mount, &kv_path, query),
                ("POST" | "PUT", "data", _) => {
                    let answer = s.write(&mount, &kv_path, &json_body);
                    if answer.status() == StatusCode::OK && s.faults.lose_answer_next > 0 {
                        s.faults.lose_answer_next -= 1;
                        return error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &["internal error (injected after the write was applied)"],
                        );
                    }
                    answer
                }
                ("GET", "metadata", _) => s.read_metadata(&mount, &kv_path),
                ("POST" | "PUT", "metadata", _) => s.write_metadata(&mount, &kv_path, &json_body),
                _ => error(StatusCode::METHOD_NOT_ALLOWED, &["unsupported operation"]),
            }
        }
    }
}

/// Vault's limits on custom metadata, with its messages: at most 64 keys, each key and
/// value 1 to 128 and 1 to 512 bytes; every violation is listed, as Vault's multi-error
/// does.
fn validate_custom_metadata(custom: &BTreeMap<String, String>) -> Result<(), String> {
    const PREFIX: &str = "custom_metadata validation failed";
    let mut errors = Vec::new();
    if custom.len() > 64 {
        errors.push(format!(
            "{PREFIX}: payload must contain at most 64 keys, provided {}",
            custom.len()
        ));
    }
    for (k, v) in custom {
        if k.is_empty() || k.len() > 128 {
            errors.push(format!(
                "{PREFIX}: length of key {k:?} is {} but must be 0 < len(key) <= 128",
                k.len()
            ));
        }
        if v.is_empty() || v.len() > 512 {
            errors.push(format!(
                "{PREFIX}: length of value for key {k:?} is {} but must be 0 < len(value) <= 512",
                v.len()
            ));
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(format!("1 error occurred:\n\t* {}\n\n", errors[0])),
        n => Err(format!(
            "{n} errors occurred:\n\t* {}\n\n",
            errors.join("\n\t* ")
        )),
    }
}

/// The Go type name Vault's decoder reports for a JSON value it cannot convert.
fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

fn collapse_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// `secret/data/a/b` → (`secret`, `data`, `a/b`) for a known mount.
fn split_kv(api: &str, mounts: &BTreeSet<String>) -> Option<(String, &'static str, String)> {
    for mount in mounts {
        let Some(rest) = api
            .strip_prefix(mount.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            continue;
        };
        for kind in ["data", "metadata"] {
            if let Some(p) = rest.strip_prefix(kind) {
                let p = p.strip_prefix('/').unwrap_or(p);
                return Some((mount.clone(), kind, p.to_owned()));
            }
        }
    }
    None
}

impl FakeState {
    fn auth_info(&self, token: &str, ttl: Duration, renewable: bool) -> Value {
        json!({
            "client_token": token,
            "accessor": format!("accessor-{token}"),
            "policies": ["default", "rotor"],
            "token_policies": ["default", "rotor"],
            "metadata": {},
            "lease_duration": ttl.as_secs(),
            "renewable": renewable,
            "entity_id": "",
            "token_type": "service",
            "orphan": true,
        })
    }

    fn login(&mut self, body: &Value) -> Response {
        let role = body.get("role").and_then(Value::as_str).unwrap_or("");
        let jwt = body.get("jwt").and_then(Value::as_str).unwrap_or("");
        match self.roles.get(role) {
            None => error(StatusCode::BAD_REQUEST, &["invalid role name"]),
            Some(expected) if expected != jwt => {
                error(StatusCode::FORBIDDEN, &["permission denied"])
            }
            Some(_) => {
                self.issued += 1;
                let token = format!("hvs.fake-{}", self.issued);
                let ttl = self.token_ttl;
                self.tokens.insert(
                    token.clone(),
                    Token {
                        expires: Some(Instant::now() + ttl),
                        period: ttl,
                        renewable: true,
                        policies: vec!["default".into(), "rotor".into()],
                    },
                );
                let auth = self.auth_info(&token, ttl, true);
                (StatusCode::OK, axum::Json(envelope(None, Some(auth)))).into_response()
            }
        }
    }

    fn lookup_self(&self, token: &str) -> Response {
        let Some(t) = self.tokens.get(token) else {
            return error(StatusCode::FORBIDDEN, &["permission denied"]);
        };
        let ttl = t
            .expires
            .map_or(0, |e| e.saturating_duration_since(Instant::now()).as_secs());
        ok(json!({
            "accessor": format!("accessor-{token}"),
            "creation_time": 0,
            "creation_ttl": t.period.as_secs(),
            "display_name": "fake",
            "entity_id": "",
            "expire_time": null,
            "explicit_max_ttl": 0,
            "id": token,
            "identity_policies": null,
            "issue_time": null,
            "meta": null,
            "num_uses": 0,
            "orphan": true,
            "path": "auth/token/create",
            "policies": t.policies,
            "renewable": t.renewable,
            "role": null,
            "ttl": ttl,
        }))
    }

    fn renew_self(&mut self, token: &str) -> Response {
        let ttl = self.token_ttl;
        let Some(t) = self.tokens.get_mut(token) else {
            return error(StatusCode::FORBIDDEN, &["permission denied"]);
        };
        if !t.renewable {
            return error(StatusCode::BAD_REQUEST, &["lease is not renewable"]);
        }
        t.period = ttl;
        t.expires = Some(Instant::now() + ttl);
        let auth = self.auth_info(token, ttl, true);
        (StatusCode::OK, axum::Json(envelope(None, Some(auth)))).into_response()
    }

    fn version_meta(entry: &KvEntry, version: u64) -> Value {
        json!({
            "created_time": time(entry.versions.get(&version).map(|v| v.created)),
            "deletion_time": "",
            "destroyed": false,
            "version": version,
            "custom_metadata": if entry.custom.is_empty() { Value::Null } else { json!(entry.custom) },
        })
    }

    fn oldest_kept(entry: &KvEntry) -> u64 {
        let max = if entry.max_versions == 0 {
            DEFAULT_MAX_VERSIONS
        } else {
            entry.max_versions
        };
        entry.current.saturating_sub(max - 1).max(1)
    }

    fn read(&self, mount: &str, path: &str, query: &str) -> Response {
        let Some(entry) = self.kv.get(&(mount.to_owned(), path.to_owned())) else {
            return error(StatusCode::NOT_FOUND, &[]);
        };
        let version = match query
            .split('&')
            .find_map(|kv| kv.strip_prefix("version="))
            .map(str::parse::<u64>)
        {
            None | Some(Ok(0)) => entry.current,
            Some(Ok(v)) => v,
            Some(Err(_)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &[
                        "Field validation failed: error converting input for field \"version\": '' cannot parse value as 'int': strconv.ParseInt: invalid syntax",
                    ],
                );
            }
        };
        if version < Self::oldest_kept(entry) {
            return error(StatusCode::NOT_FOUND, &[]);
        }
        match entry.versions.get(&version) {
            None => error(StatusCode::NOT_FOUND, &[]),
            Some(v) => ok(json!({
                "data": v.data,
                "metadata": Self::version_meta(entry, version),
            })),
        }
    }

    fn write(&mut self, mount: &str, path: &str, body: &Value) -> Response {
        let data = match body.get("data") {
            None | Some(Value::Null) => {
                return error(StatusCode::BAD_REQUEST, &["no data provided"]);
            }
            Some(d @ Value::Object(_)) => d,
            Some(other) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &[&format!(
                        "error converting input for field \"data\": '' expected type 'map[string]interface {{}}', got unconvertible type '{}'",
                        go_type(other)
                    )],
                );
            }
        };
        let cas = body
            .get("options")
            .and_then(|o| o.get("cas"))
            .and_then(Value::as_u64);
        let forced = self.faults.cas_conflict_next > 0;
        if forced {
            self.faults.cas_conflict_next -= 1;
        }
        let entry = self
            .kv
            .entry((mount.to_owned(), path.to_owned()))
            .or_default();
        match cas {
            None if entry.cas_required => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &["check-and-set parameter required for this call"],
                );
            }
            Some(cas) if cas != entry.current || forced => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &["check-and-set parameter did not match the current version"],
                );
            }
            None if forced => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &["check-and-set parameter did not match the current version"],
                );
            }
            _ => {}
        }
        let now = Utc::now();
        entry.current += 1;
        let version = entry.current;
        entry.versions.insert(
            version,
            KvVersion {
                data: data.clone(),
                created: now,
            },
        );
        entry.created.get_or_insert(now);
        entry.updated = Some(now);
        let oldest = Self::oldest_kept(entry);
        if oldest > 1 {
            entry.oldest = oldest;
        }
        entry.versions.retain(|v, _| *v >= oldest);
        ok(Self::version_meta(entry, version))
    }

    fn read_metadata(&self, mount: &str, path: &str) -> Response {
        let Some(entry) = self.kv.get(&(mount.to_owned(), path.to_owned())) else {
            return error(StatusCode::NOT_FOUND, &[]);
        };
        let versions: serde_json::Map<String, Value> = entry
            .versions
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    json!({"created_time": time(Some(v.created)), "deletion_time": "", "destroyed": false}),
                )
            })
            .collect();
        ok(json!({
            "cas_required": entry.cas_required,
            "created_time": time(entry.created),
            "current_version": entry.current,
            "delete_version_after": "0s",
            "max_versions": entry.max_versions,
            "oldest_version": entry.oldest,
            "updated_time": time(entry.updated),
            "custom_metadata": if entry.custom.is_empty() { Value::Null } else { json!(entry.custom) },
            "versions": versions,
        }))
    }

    fn write_metadata(&mut self, mount: &str, path: &str, body: &Value) -> Response {
        let custom = match body.get("custom_metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    // Vault decodes the map weakly: numbers and booleans become strings.
                    let v = match v {
                        Value::String(v) => v.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => if *b { "1" } else { "0" }.to_owned(),
                        _ => {
                            return error(
                                StatusCode::BAD_REQUEST,
                                &[&format!(
                                    "error converting input for field \"custom_metadata\": '{k}' expected type 'string', got unconvertible type '{}'",
                                    go_type(v)
                                )],
                            );
                        }
                    };
                    out.insert(k.clone(), v);
                }
                if let Err(e) = validate_custom_metadata(&out) {
                    return error(StatusCode::BAD_REQUEST, &[&e]);
                }
                Some(out)
            }
            Some(other) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &[&format!(
                        "error converting input for field \"custom_metadata\": '' expected type 'map[string]interface {{}}', got unconvertible type '{}'",
                        go_type(other)
                    )],
                );
            }
        };
        let entry = self
            .kv
            .entry((mount.to_owned(), path.to_owned()))
            .or_default();
        if let Some(c) = custom {
            entry.custom = c;
        }
        if let Some(b) = body.get("cas_required").and_then(Value::as_bool) {
            entry.cas_required = b;
        }
        if let Some(n) = body.get("max_versions").and_then(Value::as_u64) {
            entry.max_versions = n;
        }
        let now = Utc::now();
        entry.created.get_or_insert(now);
        entry.updated = Some(now);
        StatusCode::NO_CONTENT.into_response()
    }

    fn list(&self, mount: &str, path: &str) -> Response {
        let dir = path.trim_end_matches('/');
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut keys = BTreeSet::new();
        for (m, p) in self.kv.keys() {
            if m != mount {
                continue;
            }
            if let Some(rest) = p.strip_prefix(prefix.as_str()) {
                match rest.split_once('/') {
                    Some((folder, _)) => keys.insert(format!("{folder}/")),
                    None if !rest.is_empty() => keys.insert(rest.to_owned()),
                    None => false,
                };
            }
        }
        if keys.is_empty() {
            return error(StatusCode::NOT_FOUND, &[]);
        }
        ok(json!({ "keys": keys }))
    }
}
