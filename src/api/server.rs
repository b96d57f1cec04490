//! The admin HTTP server.
//!
//! # Routes
//!
//! Probes and metrics (no authentication, so kubelet and Prometheus need no token):
//!
//! - `GET /healthz`: always `200 {"status":"ok"}` while the process can answer at all.
//! - `GET /readyz`: `200 {"status":"ready"}` once [`Admin::ready`] says the store is open and
//!   the actors run, else `503 {"status":"not_ready","error":...}`.
//! - `GET /metrics`: Prometheus text exposition, `text/plain; version=0.0.4; charset=utf-8`.
//! - `GET /jwks/{tenant}/{key}`: the public key set of a `jwks` target with `ed25519`
//!   (`application/jwk-set+json`; public members only: `kty crv x kid alg use`). During
//!   grace it holds the current and the previous key. `Cache-Control: no-cache` with an
//!   `ETag`, so verifiers revalidate cheaply (`If-None-Match` → 304) and see a new key as
//!   soon as it is applied. 404 for secrets without one, `hs256` sets included: those are
//!   shared secrets and are never served.
//!
//! Admin routes (require `Authorization: Bearer <token>`, see [`super::auth`]):
//!
//! - `POST /admin/secrets/rotate` `{"tenantId","secretKey"}`: starts a rotation now;
//!   `202 {"rotationId","tenantId","secretKey","status":"accepted"}`; 409 while one is in flight.
//! - `POST /admin/secrets/rollback` `{"tenantId","secretKey"}`: rolls back the rotation in
//!   grace; `202` as above; 409 when nothing is in grace.
//! - `GET /admin/secrets/versions/{tenant}/{key}`: version metadata, oldest first. Never values.
//! - `GET /admin/secrets/history/{tenant}/{key}?limit=N`: finished rotations, newest first;
//!   `limit` defaults to 50 and must be 1..=1000.
//! - `GET /admin/secrets/schedule`: every managed secret, sorted by what happens next.
//! - `GET /admin/secrets/consumers/{tenant}/{key}`: the secret's consumers (agents),
//!   `{"tenantId","secretKey","consumers":[{"consumerId","workload","version","state",
//!   "lastReportAt","reloaded"}]}`, `state` one of `current`, `lagging`, `gone`.
//!
//! - `POST /admin/secrets/rotate-all` `{"tenantId"?,"policy"?,"keyGlob"?,"all"?,"confirm"?,
//!   "ratePerSecond"?,"maxConcurrent"?,"expirePrevious"?}`: starts an emergency rotation job
//!   over every managed secret matching all given fields; `tenantId` or `"all": true` is
//!   required, and `all` needs `"confirm": "rotate-all"`. Defaults: 10 per second, 4 at once,
//!   grace kept. `202 {"jobId", ...the job's view}`; 400 naming the field for a bad body or
//!   a selector that matches nothing; 409 while [`crate::actors::jobs::MAX_RUNNING_JOBS`]
//!   run.
//! - `GET /admin/jobs/{jobId}`: `{"jobId","state","total","done","failed","inFlight",
//!   "pending","selector","ratePerSecond","maxConcurrent","expirePrevious","startedAt",
//!   "finishedAt"}`, `state` one of `running`, `finished`, `cancelled`; 404 when unknown.
//! - `DELETE /admin/jobs/{jobId}`: cancels: nothing new starts, rotations in flight finish
//!   and count; `200` with the view; 409 for a finished job.
//! - `GET /admin/leader`: `{"leader": id|null, "leaderUrl": url|null, "term", "self"}`,
//!   who leads as this replica last learned it (HA); without `[ha]` the process itself at
//!   term 0.
//!
//! Consumer routes (require `Authorization: Bearer <consumer token>`, the file named by
//! `[server] consumer_token_file`; 404 when that is not set). The consumer token opens
//! these three and nothing else: on every `/admin/...` route it gets 403 (no or an unknown
//! token stays 401), and the admin token gets 403 here, so each token does one job.
//!
//! - `POST /consumers/report` `{"consumerId","workload"|null,"secrets":[{"tenantId",
//!   "secretKey","version"|null,"reloaded"|null}]}`: an agent's state, also its heartbeat;
//!   `200 {"status":"ok"}`. A secret rotor does not manage is 404 naming it; a bad id 400.
//! - `POST /consumers/permits` `{"consumerId","workload"}`: a reload permit,
//!   `200 {"permitId","expiresInMs"}`, or `429 {"error","retryAfterMs"}` with `Retry-After`
//!   (seconds, at least 1) while the workload holds `[consumers] max_concurrent_reloads`.
//! - `DELETE /consumers/permits/{permitId}`: returns a permit; `204`, also when it was
//!   already returned or expired.
//!
//! # High availability
//!
//! Every replica serves the probes, `/metrics` and the reads from its own backend (a
//! follower's reads the store). A write (every method but `GET`, `HEAD`, `OPTIONS` under
//! `/admin/` or `/consumers/`) that reaches a replica that does not lead is checked against
//! the token here, then sent to the leader and answered as the leader answers (see
//! [`super::forward`]); a follower is never an open relay. `GET /jwks/...` on a follower is
//! the leader's answer too (the key set lives in the leader's targets). No leader, a leader
//! that does not answer, or a forwarded request that reaches a replica that does not lead:
//! `503` with `Retry-After`. Built by [`router_with_leadership`]; [`router`] and
//! [`router_with_consumers`] are a single process that always leads.
//!
//! # Errors
//!
//! Every 4xx and 5xx body is `{"error": "<message>"}`, including axum's own rejections
//! (malformed JSON, wrong content type, body over 16 KiB, unknown route, wrong method): a
//! last layer rewrites any non-JSON error body into that shape. hyper's own answers to a
//! request it cannot parse (431 for a head over 64 KiB, 400, 414) get the same body on
//! their way out ([`super::listener`]). A malformed request is a 4xx,
//! never a 5xx. Unknown secrets are 404, invalid identifiers (`../etc`) 400, a busy secret 409,
//! an unavailable runtime or a request over the time limit 503. Errors never contain the token.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, http::Method, http::Uri};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::bearer_matches;
pub use super::auth::{AdminToken, TokenError};
use super::forward::{self, ForwardError, ForwardOutcome, Forwarder, WriteRoute};
pub use super::listener::Limits;
use super::{
    Admin, AdminError, ConsumerView, DEFAULT_JOB_CONCURRENCY, DEFAULT_JOB_RATE, JobRequest,
    JobSelector, JobView, MAX_JOB_CONCURRENCY, MAX_JOB_RATE, PermitGrant, Report, ScheduleEntry,
};
use crate::domain::{
    ErrorKind, HistoryRecord, Label, Outcome, SecretRef, Step, Trigger, VersionMeta, VersionNo,
};
use crate::ha::Leadership;
use crate::metrics::Metrics;

/// Largest request body accepted. The biggest legitimate body is two identifiers (under
/// 200 bytes); 16 KiB leaves room for whitespace without letting a client make us buffer much.
pub const BODY_LIMIT_BYTES: usize = 16 * 1024;

/// Default time a request may take before the server answers 503 on its behalf.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// History entries returned when `limit` is not given.
pub const DEFAULT_HISTORY_LIMIT: usize = 50;

/// Most history entries one request may ask for; keeps a response bounded.
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// The content type Prometheus 2.x expects for the text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How much of a non-JSON error body the error layer reads to reuse as the message. Axum's
/// rejection texts are short; anything longer is cut rather than buffered.
const MAX_REWRITTEN_ERROR_BYTES: usize = 4096;

/// What `rotor run` needs to start the admin server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
    /// Already loaded, so a bad token file is reported before any port is bound.
    pub token: AdminToken,
    pub request_timeout: Duration,
}

/// Shared by every handler. Only the token's digest is kept: the handlers never need the
/// token itself, so it cannot leak from here.
#[derive(Clone)]
struct AppState {
    backend: Arc<dyn Admin>,
    token_digest: Arc<[u8; 32]>,
    /// The consumer token's digest; `None`: the consumer routes are off.
    consumer_digest: Option<Arc<[u8; 32]>>,
    /// Who leads: a write reaching a replica that does not lead goes to the leader.
    leadership: Leadership,
    /// Sends writes to the leader; `None` for a single process, which always leads.
    forwarder: Option<Arc<Forwarder>>,
}

/// The replica id of a process without high availability (it always leads).
const SINGLE_ID: &str = "rotor";

/// Builds the admin router: every route in the module doc, the auth check on `/admin/...`,
/// the 16 KiB body limit, the request timeout and JSON error bodies.
pub fn router(backend: Arc<dyn Admin>, token: AdminToken, request_timeout: Duration) -> Router {
    router_with_consumers(backend, token, None, request_timeout)
}

/// [`router`] with the consumer routes open to `consumer_token` (when given).
pub fn router_with_consumers(
    backend: Arc<dyn Admin>,
    token: AdminToken,
    consumer_token: Option<AdminToken>,
    request_timeout: Duration,
) -> Router {
    let state = AppState {
        backend,
        token_digest: Arc::new(token.digest()),
        consumer_digest: consumer_token.map(|t| Arc::new(t.digest())),
        leadership: Leadership::single(SINGLE_ID),
        forwarder: None,
    };
    build(state, request_timeout)
}

/// [`router_with_consumers`] for one replica of several: while `leadership` says another
/// replica leads, writes are forwarded to it (see the module doc). The forwarding call gives
/// up at four fifths of `request_timeout`, so a leader that does not answer gets this
/// replica's 503 with `Retry-After` rather than the generic timeout. Every write that
/// needed forwarding is counted in `metrics`' `rotor_forwarded_requests_total{outcome}`.
/// Fails only when the HTTP client cannot be built.
pub fn router_with_leadership(
    backend: Arc<dyn Admin>,
    token: AdminToken,
    consumer_token: Option<AdminToken>,
    request_timeout: Duration,
    leadership: Leadership,
    metrics: &Metrics,
) -> Result<Router, String> {
    let forwarder = Forwarder::new(
        request_timeout.mul_f64(0.8),
        metrics.forwarded_requests_total.clone(),
    )?;
    let state = AppState {
        backend,
        token_digest: Arc::new(token.digest()),
        consumer_digest: consumer_token.map(|t| Arc::new(t.digest())),
        leadership,
        forwarder: Some(Arc::new(forwarder)),
    };
    Ok(build(state, request_timeout))
}

fn build(state: AppState, request_timeout: Duration) -> Router {
    // Every admin handler takes an `Authorized` extractor instead of sitting behind a
    // `route_layer`: a layered route loses axum's `Allow` header on 405, and the extractor
    // runs before the body is read, so an unauthenticated client cannot make us buffer one.
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/jwks/{tenant}/{key}", get(jwks))
        .route("/admin/secrets/rotate", post(rotate))
        .route("/admin/secrets/rollback", post(rollback))
        .route("/admin/secrets/versions/{tenant}/{key}", get(versions))
        .route("/admin/secrets/history/{tenant}/{key}", get(history))
        .route("/admin/secrets/schedule", get(schedule))
        .route("/admin/secrets/consumers/{tenant}/{key}", get(consumers))
        .route("/admin/secrets/rotate-all", post(rotate_all))
        .route("/admin/jobs/{job}", get(job).delete(cancel_job))
        .route("/admin/leader", get(leader))
        .route("/consumers/report", post(consumer_report))
        .route("/consumers/permits", post(permit_acquire))
        .route("/consumers/permits/{permit}", delete(permit_release))
        .fallback(not_found)
        .with_state(state.clone());

    // The cross-cutting layers wrap the finished router as one service rather than each
    // route (`Router::layer` would), again so that the routes keep their `Allow` header.
    // Layers run outside-in from the last one added: errors are rewritten to JSON last, so
    // that also covers the timeout's and the body limit's answers.
    let mut app = Router::new()
        .fallback_service(routes)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES));
    // Forwarding sits inside the timeout and the JSON error layer: a forwarded answer is
    // bounded by the same time limit, and this replica's own refusals get the same shape.
    if state.forwarder.is_some() {
        app = app.layer(middleware::from_fn_with_state(state, forward_writes));
    }
    app.layer(middleware::from_fn_with_state(
        request_timeout,
        enforce_timeout,
    ))
    .layer(middleware::map_response(json_errors))
}

/// Serves `router` on `listener` with the production [`Limits`] until `shutdown` resolves,
/// then stops accepting, lets in-flight requests finish and returns. The caller reads the
/// bound address from the listener (`listener.local_addr()`) before calling, so
/// `127.0.0.1:0` works in tests, and bounds the drain with its own timeout if it must.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    super::listener::serve(listener, router, Limits::default(), shutdown).await
}

// ---------------------------------------------------------------------------------------------
// Errors

/// An error answer: a status and a message safe to show (never the token, never a value).
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
    /// `Retry-After` in whole seconds, when the caller should come back (no leader now).
    retry_after_secs: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

/// A 429 for [`AdminError::Busy`]: the message, `retryAfterMs` in the body and `Retry-After`
/// in whole seconds (rounded up, at least 1, as RFC 9110 takes only seconds).
fn busy(message: String, retry_after_ms: u64) -> Response {
    let secs = retry_after_ms.div_ceil(1000).max(1);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, HeaderValue::from(secs))],
        Json(json!({ "error": message, "retryAfterMs": retry_after_ms })),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), error = %self.message, "admin request failed");
        }
        let mut resp = (self.status, Json(json!({ "error": self.message }))).into_response();
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: a 401 names the scheme the client should use.
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        let status = match e {
            AdminError::UnknownSecret(_) | AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AdminError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::NoLeader { retry_after_ms, .. } => {
                let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
                err.retry_after_secs = Some(retry_after_ms.div_ceil(1000).max(1));
                return err;
            }
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = match r {
            // Axum answers 422 for well-formed JSON of the wrong shape; to a client that is
            // just a bad request, and the contract says 400.
            JsonRejection::JsonDataError(_) => StatusCode::BAD_REQUEST,
            ref other => other.status(),
        };
        ApiError::new(status, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(r.body_text())
    }
}

/// Rewrites any error response whose body is not JSON (axum's plain-text rejections, the
/// empty 405) into `{"error": ...}`, so clients parse one error shape everywhere.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(resp.headers()) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // An unreadable or oversized body only loses the detail; the default message remains.
    let bytes = to_bytes(body, MAX_REWRITTEN_ERROR_BYTES)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    let message = if !text.is_empty() {
        text.to_owned()
    } else if status == StatusCode::METHOD_NOT_ALLOWED {
        match parts
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
        {
            Some(allow) => format!("method not allowed; this route accepts {allow}"),
            None => "method not allowed on this route".to_owned(),
        }
    } else {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase()
    };
    // The old length no longer matches; hyper sets the new one from the body.
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = serde_json::to_vec(&json!({ "error": message })).unwrap_or_default();
    Response::from_parts(parts, Body::from(body))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
}

// ---------------------------------------------------------------------------------------------
// Middleware

/// Proof that the request carried the admin token; the first argument of every admin
/// handler. Rejects with 401 and `WWW-Authenticate: Bearer`.
struct Authorized;

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let presented = parts.headers.get(header::AUTHORIZATION);
        if bearer_matches(presented.map(HeaderValue::as_bytes), &state.token_digest) {
            return Ok(Authorized);
        }
        if let Some(consumer) = &state.consumer_digest
            && bearer_matches(presented.map(HeaderValue::as_bytes), consumer)
        {
            tracing::info!(path = %parts.uri.path(), "admin request refused: the consumer token can only report");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the consumer token may only call /consumers/...; admin routes take the admin token",
            ));
        }
        // Say which of the two cases it is (helps operators), but never echo what was sent.
        let message = if presented.is_none() {
            "missing bearer token: send Authorization: Bearer <admin token>"
        } else {
            "invalid bearer token"
        };
        tracing::info!(path = %parts.uri.path(), "admin request refused: {message}");
        Err(ApiError::new(StatusCode::UNAUTHORIZED, message))
    }
}

/// Proof that the request carried the consumer token; the first argument of every
/// consumer handler. 404 when consumer routes are off, 403 for the admin token (each token
/// does one job), 401 otherwise.
struct ConsumerAuthorized;

impl FromRequestParts<AppState> for ConsumerAuthorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = &state.consumer_digest else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "consumer routes are off: rotor has no [server] consumer_token_file",
            ));
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if bearer_matches(presented, expected) {
            return Ok(ConsumerAuthorized);
        }
        if bearer_matches(presented, &state.token_digest) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "consumer routes take the consumer token, not the admin token",
            ));
        }
        let message = if presented.is_none() {
            "missing bearer token: send Authorization: Bearer <consumer token>"
        } else {
            "invalid bearer token"
        };
        tracing::info!(path = %parts.uri.path(), "consumer request refused: {message}");
        Err(ApiError::new(StatusCode::UNAUTHORIZED, message))
    }
}

/// Sends a write that reached a replica that does not lead to the leader (see
/// [`super::forward`]), after checking its token here. Everything else, and every request
/// while this replica leads, goes on to the routes.
async fn forward_writes(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(forwarder) = state.forwarder.clone() else {
        return next.run(req).await;
    };
    let Some(route) = forward::write_route(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    if state.leadership.is_leader() {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    // The token first: a follower forwards nothing for a caller it would refuse itself.
    let authorized = match route {
        WriteRoute::Admin => Authorized::from_request_parts(&mut parts, &state)
            .await
            .map(drop),
        WriteRoute::Consumer => ConsumerAuthorized::from_request_parts(&mut parts, &state)
            .await
            .map(drop),
        WriteRoute::Jwks => Ok(()),
    };
    if let Err(e) = authorized {
        return e.into_response();
    }
    let self_id = state.leadership.self_id().to_owned();
    if parts.headers.contains_key(forward::FORWARDED_HEADER) {
        forwarder.count(ForwardOutcome::NoLeader);
        return ApiError::from(forward::no_leader(format!(
            "replica {self_id} received a forwarded write but does not lead; a forwarded write is never forwarded again, try again"
        )))
        .into_response();
    }
    let info = state.leadership.current();
    let (leader, leader_url) = match (info.leader, info.leader_url) {
        // It became the leader meanwhile: take the write here.
        (Some(leader), _) if leader == self_id => {
            return next.run(Request::from_parts(parts, body)).await;
        }
        (Some(leader), Some(url)) => (leader, url),
        _ => {
            forwarder.count(ForwardOutcome::NoLeader);
            return ApiError::from(forward::no_leader(format!(
                "no replica leads now (term {}); writes are taken again once one does",
                info.term
            )))
            .into_response();
        }
    };
    let Ok(bytes) = to_bytes(body, BODY_LIMIT_BYTES).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {BODY_LIMIT_BYTES} bytes"),
        )
        .into_response();
    };
    match forwarder
        .send(&leader, &leader_url, &self_id, &parts, bytes)
        .await
    {
        Ok(answer) => answer,
        Err(ForwardError::NoLeader(e)) => ApiError::from(e).into_response(),
        Err(ForwardError::BadAnswer(message)) => {
            ApiError::new(StatusCode::BAD_GATEWAY, message).into_response()
        }
    }
}

/// Answers 503 when a request takes longer than `limit`. The handler's future is dropped, so
/// a backend call in progress is abandoned (in `rotor run` its task on the work runtime is
/// aborted, see [`super::thread::OnWorkRuntime`]); for rotate/rollback the message says the
/// operation may still have started.
async fn enforce_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "request did not complete within {}s; a rotation or rollback may still have started, check the history",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Probes and metrics

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.backend.ready() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "not_ready",
                "error": "not ready: the store is not open or the actors have not started",
            })),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let text = state.backend.metrics_text().await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(METRICS_CONTENT_TYPE),
        )],
        text,
    )
        .into_response())
}

async fn jwks(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    use sha2::Digest as _;
    let Path((tenant, key)) = path?;
    let secret = secret_ref(&tenant, &key)?;
    // One answer for an unknown secret and for one without a public set: this route needs
    // no token, so its 404 must not tell a caller which secrets exist.
    let body = match state.backend.jwks(secret).await {
        Ok(body) => body,
        Err(AdminError::UnknownSecret(_) | AdminError::NotFound(_)) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no public key set is served at this path",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let digest = sha2::Sha256::digest(&body);
    let etag = format!("\"{}\"", hex::encode(&digest[..16]));
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let etag = HeaderValue::from_str(&etag)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the ETag"))?;
    let common = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if cached {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    Ok((
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/jwk-set+json"),
        )],
        body,
    )
        .into_response())
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

// ---------------------------------------------------------------------------------------------
// Admin routes

/// Body of rotate and rollback. Fields are optional here so that a missing one gets our own
/// message naming it, with the same 400 as an invalid one.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretBody {
    tenant_id: Option<String>,
    secret_key: Option<String>,
}

impl SecretBody {
    fn secret(&self) -> Result<SecretRef, ApiError> {
        let tenant = self
            .tenant_id
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("missing field tenantId"))?;
        let key = self
            .secret_key
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("missing field secretKey"))?;
        secret_ref(tenant, key)
    }
}

/// Validates both identifiers, naming the one that is wrong. Invalid is 400, not 404: the
/// name could never be configured, and the backend must never see a path fragment.
fn secret_ref(tenant: &str, key: &str) -> Result<SecretRef, ApiError> {
    crate::domain::validate_ident(tenant)
        .map_err(|e| ApiError::bad_request(format!("invalid tenantId: {e}")))?;
    crate::domain::validate_ident(key)
        .map_err(|e| ApiError::bad_request(format!("invalid secretKey: {e}")))?;
    SecretRef::new(tenant, key).map_err(|e| ApiError::bad_request(format!("invalid secret: {e}")))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    rotation_id: String,
    tenant_id: String,
    secret_key: String,
    status: &'static str,
}

impl Accepted {
    fn new(id: crate::domain::RotationId, secret: SecretRef) -> (StatusCode, Json<Accepted>) {
        (
            StatusCode::ACCEPTED,
            Json(Accepted {
                rotation_id: id.to_string(),
                tenant_id: secret.tenant().to_owned(),
                secret_key: secret.key().to_owned(),
                status: "accepted",
            }),
        )
    }
}

async fn rotate(
    _: Authorized,
    State(state): State<AppState>,
    body: Result<Json<SecretBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let secret = body?.secret()?;
    let id = state.backend.rotate(secret.clone()).await?;
    tracing::info!(secret = %secret, rotation = %id, "rotation requested through the admin API");
    Ok(Accepted::new(id, secret))
}

async fn rollback(
    _: Authorized,
    State(state): State<AppState>,
    body: Result<Json<SecretBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let secret = body?.secret()?;
    let id = state.backend.rollback(secret.clone()).await?;
    tracing::info!(secret = %secret, rotation = %id, "rollback requested through the admin API");
    Ok(Accepted::new(id, secret))
}

/// Body of `rotate-all`. Every field optional, so that each problem gets a message naming
/// its field; unknown fields are refused (a typo in a selector must not widen it).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RotateAllBody {
    tenant_id: Option<String>,
    policy: Option<String>,
    key_glob: Option<String>,
    all: Option<bool>,
    confirm: Option<String>,
    rate_per_second: Option<u32>,
    max_concurrent: Option<u32>,
    expire_previous: Option<bool>,
}

/// The word `all` must be confirmed with.
const CONFIRM_ALL: &str = "rotate-all";

impl RotateAllBody {
    fn request(self) -> Result<JobRequest, ApiError> {
        let all = self.all.unwrap_or(false);
        match (&self.tenant_id, all) {
            (None, false) => {
                return Err(ApiError::bad_request(
                    "tenantId or \"all\": true is required (which secrets to rotate)",
                ));
            }
            (Some(_), true) => {
                return Err(ApiError::bad_request(
                    "give tenantId or \"all\": true, not both",
                ));
            }
            (None, true) if self.confirm.as_deref() != Some(CONFIRM_ALL) => {
                return Err(ApiError::bad_request(format!(
                    "\"all\": true rotates every managed secret and needs \"confirm\": \"{CONFIRM_ALL}\""
                )));
            }
            _ => {}
        }
        if let Some(tenant) = &self.tenant_id {
            crate::domain::validate_ident(tenant)
                .map_err(|e| ApiError::bad_request(format!("invalid tenantId: {e}")))?;
        }
        if let Some(policy) = &self.policy
            && (policy.is_empty() || policy.len() > 253 || policy.chars().any(char::is_control))
        {
            return Err(ApiError::bad_request(
                "invalid policy: use the name of a configured policy",
            ));
        }
        if let Some(glob) = &self.key_glob {
            let ok = !glob.is_empty()
                && glob.len() <= 253
                && glob
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*?".contains(&b));
            if !ok {
                let shown: String = glob.chars().take(64).collect();
                return Err(ApiError::bad_request(format!(
                    "invalid keyGlob {shown:?}: use key characters (a-z 0-9 _ - .) with * and ?"
                )));
            }
        }
        let rate = self.rate_per_second.unwrap_or(DEFAULT_JOB_RATE);
        if !(1..=MAX_JOB_RATE).contains(&rate) {
            return Err(ApiError::bad_request(format!(
                "invalid ratePerSecond {rate}: use 1 to {MAX_JOB_RATE}"
            )));
        }
        let concurrent = self.max_concurrent.unwrap_or(DEFAULT_JOB_CONCURRENCY);
        if !(1..=MAX_JOB_CONCURRENCY).contains(&concurrent) {
            return Err(ApiError::bad_request(format!(
                "invalid maxConcurrent {concurrent}: use 1 to {MAX_JOB_CONCURRENCY}"
            )));
        }
        Ok(JobRequest {
            selector: JobSelector {
                tenant_id: self.tenant_id,
                policy: self.policy,
                key_glob: self.key_glob,
                all,
            },
            rate_per_second: rate,
            max_concurrent: concurrent,
            expire_previous: self.expire_previous.unwrap_or(false),
        })
    }
}

async fn rotate_all(
    _: Authorized,
    State(state): State<AppState>,
    body: Result<Json<RotateAllBody>, JsonRejection>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let request = body?.0.request()?;
    let view = state.backend.rotate_all(request).await?;
    tracing::info!(job = %view.job_id, total = view.total, "rotation job requested through the admin API");
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// A job id as the API takes it: the characters a job id is made of. Anything else could
/// never name a job.
fn job_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path?;
    if crate::store::check_record_name("id", &id).is_err() {
        let shown: String = id.chars().take(64).collect();
        return Err(ApiError::bad_request(format!("invalid jobId {shown:?}")));
    }
    Ok(id)
}

async fn job(
    _: Authorized,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(state.backend.job(job_id(path)?).await?))
}

async fn cancel_job(
    _: Authorized,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<JobView>, ApiError> {
    let id = job_id(path)?;
    let view = state.backend.cancel_job(id).await?;
    tracing::info!(job = %view.job_id, "rotation job cancelled through the admin API");
    Ok(Json(view))
}

/// Response shape of one version; the domain type stays free of wire naming. `rotor
/// versions` reads it back and prints the same table whether it read the store or this API.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VersionView {
    pub(crate) version: VersionNo,
    pub(crate) labels: Vec<Label>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) promoted_at: Option<DateTime<Utc>>,
    pub(crate) expired_at: Option<DateTime<Utc>>,
    pub(crate) fingerprint: String,
}

impl From<VersionMeta> for VersionView {
    fn from(v: VersionMeta) -> Self {
        VersionView {
            version: v.version,
            labels: v.labels,
            created_at: v.created_at,
            promoted_at: v.promoted_at,
            expired_at: v.expired_at,
            fingerprint: v.fingerprint,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct VersionsResponse {
    tenant_id: String,
    secret_key: String,
    versions: Vec<VersionView>,
}

async fn versions(
    _: Authorized,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<VersionsResponse>, ApiError> {
    let Path((tenant, key)) = path?;
    let secret = secret_ref(&tenant, &key)?;
    let versions = state.backend.versions(secret.clone()).await?;
    Ok(Json(VersionsResponse {
        tenant_id: secret.tenant().to_owned(),
        secret_key: secret.key().to_owned(),
        versions: versions.into_iter().map(VersionView::from).collect(),
    }))
}

/// Query of the history route. `limit` is taken as text so that a bad value gets our own
/// message with the allowed range.
#[derive(Debug, Deserialize)]
struct HistoryQuery {
    limit: Option<String>,
}

fn parse_limit(raw: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_HISTORY_LIMIT);
    };
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_HISTORY_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "limit must be a whole number from 1 to {MAX_HISTORY_LIMIT} (default {DEFAULT_HISTORY_LIMIT})"
        ))),
    }
}

/// Response shape of one rotation, read back by `rotor history` as [`VersionView`] is.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HistoryView {
    pub(crate) rotation_id: String,
    pub(crate) trigger: Trigger,
    pub(crate) from_version: Option<VersionNo>,
    pub(crate) to_version: VersionNo,
    pub(crate) outcome: Outcome,
    pub(crate) error: Option<ErrorKind>,
    pub(crate) steps: Vec<Step>,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) finished_at: DateTime<Utc>,
    pub(crate) duration_seconds: f64,
    /// Consumers still behind when the previous version expired (see [`HistoryRecord`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) late_consumers: Vec<String>,
    /// Consumers that stopped reporting during the grace without catching up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) gone_consumers: Vec<String>,
}

impl From<HistoryRecord> for HistoryView {
    fn from(h: HistoryRecord) -> Self {
        // Milliseconds are precise enough for a human; a clock step backwards reads as 0.
        let millis = (h.finished_at - h.started_at).num_milliseconds().max(0);
        HistoryView {
            rotation_id: h.rotation.to_string(),
            trigger: h.trigger,
            from_version: h.from_version,
            to_version: h.to_version,
            outcome: h.outcome,
            error: h.error,
            steps: h.steps,
            started_at: h.started_at,
            finished_at: h.finished_at,
            duration_seconds: millis as f64 / 1000.0,
            late_consumers: h.late_consumers,
            gone_consumers: h.gone_consumers,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HistoryResponse {
    tenant_id: String,
    secret_key: String,
    rotations: Vec<HistoryView>,
}

async fn history(
    _: Authorized,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let Path((tenant, key)) = path?;
    let secret = secret_ref(&tenant, &key)?;
    let Query(query) = query?;
    let limit = parse_limit(query.limit.as_deref())?;
    let records = state.backend.history(secret.clone(), limit).await?;
    Ok(Json(HistoryResponse {
        tenant_id: secret.tenant().to_owned(),
        secret_key: secret.key().to_owned(),
        // The backend is asked for `limit`; truncating again keeps the promise if it overshoots.
        rotations: records
            .into_iter()
            .take(limit)
            .map(HistoryView::from)
            .collect(),
    }))
}

#[derive(Debug, Serialize)]
struct ScheduleResponse {
    secrets: Vec<ScheduleEntry>,
}

async fn schedule(
    _: Authorized,
    State(state): State<AppState>,
) -> Result<Json<ScheduleResponse>, ApiError> {
    let secrets = state.backend.schedule().await?;
    Ok(Json(ScheduleResponse { secrets }))
}

async fn leader(
    _: Authorized,
    State(state): State<AppState>,
) -> Result<Json<crate::api::LeaderView>, ApiError> {
    state.backend.leader().map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this backend does not report leadership",
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Consumer routes

/// Body of `POST /consumers/report`, with every field optional so that a missing one gets
/// our own message naming it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReportBody {
    consumer_id: Option<String>,
    #[serde(default)]
    workload: Option<String>,
    secrets: Option<Vec<ReportedBody>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReportedBody {
    tenant_id: Option<String>,
    secret_key: Option<String>,
    #[serde(default)]
    version: Option<VersionNo>,
    #[serde(default)]
    reloaded: Option<bool>,
}

/// Most secrets one report may name: a pod mounts a handful; the bound keeps one report
/// from making rotor hold thousands of entries per consumer.
pub const MAX_REPORTED_SECRETS: usize = 256;

fn consumer_name(field: &str, value: Option<&str>) -> Result<String, ApiError> {
    let value = value.ok_or_else(|| ApiError::bad_request(format!("missing field {field}")))?;
    super::validate_consumer_name(field, value).map_err(ApiError::bad_request)?;
    Ok(value.to_owned())
}

async fn consumer_report(
    _: ConsumerAuthorized,
    State(state): State<AppState>,
    body: Result<Json<ReportBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body?;
    let consumer_id = consumer_name("consumerId", body.consumer_id.as_deref())?;
    let workload = match body.workload.as_deref() {
        None => None,
        Some(w) => Some(consumer_name("workload", Some(w))?),
    };
    let reported = body
        .secrets
        .ok_or_else(|| ApiError::bad_request("missing field secrets"))?;
    if reported.len() > MAX_REPORTED_SECRETS {
        return Err(ApiError::bad_request(format!(
            "secrets names {} secrets; at most {MAX_REPORTED_SECRETS} per report",
            reported.len()
        )));
    }
    let mut secrets = Vec::with_capacity(reported.len());
    for (i, r) in reported.iter().enumerate() {
        let tenant = r
            .tenant_id
            .as_deref()
            .ok_or_else(|| ApiError::bad_request(format!("missing field secrets[{i}].tenantId")))?;
        let key = r.secret_key.as_deref().ok_or_else(|| {
            ApiError::bad_request(format!("missing field secrets[{i}].secretKey"))
        })?;
        secrets.push((secret_ref(tenant, key)?, r.version, r.reloaded));
    }
    state
        .backend
        .consumer_report(Report {
            consumer_id,
            workload,
            secrets,
        })
        .await?;
    Ok(Json(json!({ "status": "ok" })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PermitBody {
    consumer_id: Option<String>,
    workload: Option<String>,
}

async fn permit_acquire(
    _: ConsumerAuthorized,
    State(state): State<AppState>,
    body: Result<Json<PermitBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let consumer_id = consumer_name("consumerId", body.consumer_id.as_deref())?;
    let workload = consumer_name("workload", body.workload.as_deref())?;
    match state.backend.permit_acquire(consumer_id, workload).await {
        Ok(grant) => Ok(Json::<PermitGrant>(grant).into_response()),
        Err(AdminError::Busy {
            message,
            retry_after_ms,
        }) => Ok(busy(message, retry_after_ms)),
        Err(e) => Err(e.into()),
    }
}

async fn permit_release(
    _: ConsumerAuthorized,
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(permit) = path?;
    // Permit ids are rotor's own (hex); anything else was never granted, and must never
    // reach the store as a record name.
    if permit.is_empty() || permit.len() > 64 || !permit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "invalid permitId: not one rotor granted (hex, at most 64 characters)",
        ));
    }
    state.backend.permit_release(permit).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConsumersResponse {
    tenant_id: String,
    secret_key: String,
    consumers: Vec<ConsumerView>,
}

async fn consumers(
    _: Authorized,
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<ConsumersResponse>, ApiError> {
    let Path((tenant, key)) = path?;
    let secret = secret_ref(&tenant, &key)?;
    let consumers = state.backend.consumers(secret.clone()).await?;
    Ok(Json(ConsumersResponse {
        tenant_id: secret.tenant().to_owned(),
        secret_key: secret.key().to_owned(),
        consumers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_parsing() {
        assert_eq!(parse_limit(None).ok(), Some(DEFAULT_HISTORY_LIMIT));
        assert_eq!(parse_limit(Some("7")).ok(), Some(7));
        assert_eq!(parse_limit(Some("1000")).ok(), Some(1000));
        for bad in [
            "0",
            "1001",
            "-1",
            "abc",
            "",
            "1e3",
            "99999999999999999999999",
        ] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn admin_errors_map_to_statuses() {
        let s = |e| ApiError::from(e).status;
        assert_eq!(
            s(AdminError::UnknownSecret("a/b".into())),
            StatusCode::NOT_FOUND
        );
        assert_eq!(s(AdminError::Conflict("busy".into())), StatusCode::CONFLICT);
        assert_eq!(
            s(AdminError::Unavailable("restarting".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            s(AdminError::Internal("oops".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
