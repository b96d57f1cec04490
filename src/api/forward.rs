//! Writes sent to a follower go to the leader (high availability).
//!
//! Only the leader runs rotation actors, jobs and the reload budget, so a write that
//! reaches a follower (through a Service that balances over every replica) is sent on to
//! the leader's advertised URL with the same method, path, query, body and
//! `Authorization` header, and the leader's answer (status, the headers in
//! [`ANSWER_HEADERS`], body) is returned as it is: a client cannot tell which replica it
//! reached. The public `GET /jwks/{tenant}/{key}` goes the same way (with `If-None-Match`,
//! so a 304 is the leader's too): the key set is read from the leader's `jwks` targets. The router decides *what* is forwarded and checks the token first (see
//! `server.rs`); this module only sends and copies.
//!
//! A forwarded request carries [`FORWARDED_HEADER`] (the sending replica's id). A replica
//! that receives such a request and does not lead answers 503 instead of forwarding it
//! again, so two replicas that each think the other leads cannot bounce a write between
//! them. No leader, a leader that does not answer within the timeout, or one that cannot
//! be reached: 503 with `Retry-After` ([`AdminError::NoLeader`]).
//!
//! Bodies are bounded both ways (the request by the router's body limit, the answer by
//! [`MAX_ANSWER_BYTES`]) and never logged, nor is the token: a log line names the method,
//! the path, the leader and the status.
//!
//! Every request that needed forwarding and passed the token check is counted once in
//! `rotor_forwarded_requests_total{outcome}` ([`ForwardOutcome`]): `forwarded` (the leader
//! answered, whatever its status), `no_leader`, `error`. A write refused on the follower
//! (its token, a body over the limit) was never going to be forwarded and is not counted.
//! The labels carry nothing else: no path, secret, token or replica id.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::Response;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::AdminError;
use crate::metrics::OutcomeLabels;

/// The marker of a forwarded request; its value is the id of the replica that forwarded it.
pub const FORWARDED_HEADER: &str = "x-rotor-forwarded";

/// How long a client is told to wait (`Retry-After`) when no leader can take a write: a new
/// leader is elected within a lease duration, so asking again every couple of seconds finds
/// it soon without hammering a replica.
pub const NO_LEADER_RETRY_AFTER_MS: u64 = 2_000;

/// The largest answer taken from the leader. The biggest legitimate one is a job's view
/// (well under 4 KiB); anything bigger is not the leader speaking rotor's API.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Request headers sent on to the leader besides the marker: the token, the body's type,
/// and the ones a client negotiates with.
const REQUEST_HEADERS: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::ACCEPT,
    header::IF_NONE_MATCH,
];

/// Answer headers copied from the leader: what a client of rotor's API reads (the body's
/// type, when to come back after a 429 or 503, the scheme after a 401, the methods after
/// a 405). Connection-level headers are the follower's own.
pub const ANSWER_HEADERS: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::RETRY_AFTER,
    header::WWW_AUTHENTICATE,
    header::ALLOW,
    header::ETAG,
    header::CACHE_CONTROL,
];

/// Which token a forwarded route takes, checked on the follower before anything is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteRoute {
    /// `/admin/...`: the admin token.
    Admin,
    /// `/consumers/...`: the consumer token.
    Consumer,
    /// `GET`/`HEAD /jwks/...`: no token (the route is public). Not a write, but only the
    /// leader can answer it: the key set is what its `jwks` targets hold (a file in the
    /// leader's pod), which a follower cannot read.
    Jwks,
}

/// Whether a request is one that only the leader may take, and which token it needs.
/// Every method but `GET`, `HEAD` and `OPTIONS` under `/admin/` or `/consumers/` is one:
/// that covers every write route today (rotate, rollback, rotate-all, cancelling a job,
/// reports, permits) and any added later, and a method a route does not take is answered
/// by the leader's 405 as the leader would. So is a read of `/jwks/` (see
/// [`WriteRoute::Jwks`]). Other reads are served by every replica.
pub(crate) fn write_route(method: &axum::http::Method, path: &str) -> Option<WriteRoute> {
    use axum::http::Method;
    if matches!(*method, Method::GET | Method::HEAD) && path.starts_with("/jwks/") {
        return Some(WriteRoute::Jwks);
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    if path.starts_with("/admin/") {
        Some(WriteRoute::Admin)
    } else if path.starts_with("/consumers/") {
        Some(WriteRoute::Consumer)
    } else {
        None
    }
}

/// Why a write could not be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ForwardError {
    /// Nobody can take it now (no leader, or the leader did not answer): 503 with
    /// `Retry-After`.
    NoLeader(AdminError),
    /// The leader answered something that is not rotor's API (too big): 502.
    BadAnswer(String),
}

/// The error of a write no leader can take now.
pub fn no_leader(message: impl Into<String>) -> AdminError {
    AdminError::NoLeader {
        message: message.into(),
        retry_after_ms: NO_LEADER_RETRY_AFTER_MS,
    }
}

/// What became of a write that needed forwarding (the `outcome` label of
/// `rotor_forwarded_requests_total`, [`crate::metrics::FORWARD_OUTCOMES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForwardOutcome {
    /// The leader answered; its answer, whatever the status, was returned.
    Forwarded,
    /// No replica led, or this one received a write another replica had forwarded: 503.
    NoLeader,
    /// A leader was named but could not be used: unreachable, no answer in time, a broken
    /// or oversized answer, or an unusable URL.
    Error,
}

impl ForwardOutcome {
    fn label(self) -> &'static str {
        match self {
            ForwardOutcome::Forwarded => "forwarded",
            ForwardOutcome::NoLeader => "no_leader",
            ForwardOutcome::Error => "error",
        }
    }
}

/// Sends writes on to the leader: one HTTP client (rotor's builder: no proxy from the
/// environment, no redirects) with a timeout, and the counter of what became of them.
pub(crate) struct Forwarder {
    client: reqwest::Client,
    timeout: Duration,
    counted: Family<OutcomeLabels, Counter>,
}

impl Forwarder {
    /// A forwarder whose calls give up after `timeout` (connect, send and the whole answer),
    /// counting into `counted` (`rotor_forwarded_requests_total` of the replica's registry).
    pub(crate) fn new(
        timeout: Duration,
        counted: Family<OutcomeLabels, Counter>,
    ) -> Result<Forwarder, String> {
        Ok(Forwarder {
            client: crate::http_client::client(timeout, None, None)?,
            timeout,
            counted,
        })
    }

    /// Counts one write that needed forwarding.
    pub(crate) fn count(&self, outcome: ForwardOutcome) {
        self.counted
            .get_or_create(&OutcomeLabels {
                outcome: outcome.label().to_owned(),
            })
            .inc();
    }

    /// [`Forwarder::forward`], counted: `forwarded` when the leader answered, `error`
    /// otherwise.
    pub(crate) async fn send(
        &self,
        leader: &str,
        leader_url: &str,
        self_id: &str,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Response, ForwardError> {
        let result = self.forward(leader, leader_url, self_id, parts, body).await;
        self.count(match result {
            Ok(_) => ForwardOutcome::Forwarded,
            Err(_) => ForwardOutcome::Error,
        });
        result
    }

    /// Sends the request (`parts`, `body`) to the leader `leader` at `leader_url` as replica
    /// `self_id`, and returns the leader's answer as this replica's.
    async fn forward(
        &self,
        leader: &str,
        leader_url: &str,
        self_id: &str,
        parts: &Parts,
        body: Bytes,
    ) -> Result<Response, ForwardError> {
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |p| p.as_str());
        let url = reqwest::Url::parse(&format!("{}{path}", leader_url.trim_end_matches('/')))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                ForwardError::NoLeader(no_leader(format!(
                    "the leader {leader} advertises an unusable URL {leader_url:?}; try again after the next election"
                )))
            })?;
        let mut request = self.client.request(parts.method.clone(), url).body(body);
        for name in &REQUEST_HEADERS {
            for value in parts.headers.get_all(name) {
                request = request.header(name, value);
            }
        }
        request = request.header(FORWARDED_HEADER, self_id);
        let started = std::time::Instant::now();
        let unreachable = |e: reqwest::Error| {
            let why = if e.is_timeout() {
                format!("did not answer within {:?}", self.timeout)
            } else if e.is_connect() {
                "cannot be reached".to_owned()
            } else {
                "broke off the answer".to_owned()
            };
            tracing::warn!(method = %parts.method, path = %parts.uri.path(), %leader, %leader_url, "forwarding a write failed: the leader {why}");
            ForwardError::NoLeader(no_leader(format!("the leader {leader} {why}; try again")))
        };
        let mut answer = request.send().await.map_err(unreachable)?;
        let status = StatusCode::from_u16(answer.status().as_u16())
            .map_err(|_| ForwardError::BadAnswer("the leader answered an invalid status".into()))?;
        let mut headers = Vec::new();
        for name in &ANSWER_HEADERS {
            for value in answer.headers().get_all(name) {
                headers.push((name.clone(), value.clone()));
            }
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = answer.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(ForwardError::BadAnswer(format!(
                    "the leader {leader} answered more than {MAX_ANSWER_BYTES} bytes; not rotor's API"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        tracing::debug!(
            method = %parts.method,
            path = %parts.uri.path(),
            %leader,
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "write forwarded to the leader"
        );
        let mut response = Response::new(Body::from(bytes));
        *response.status_mut() = status;
        for (name, value) in headers {
            response.headers_mut().append(name, value);
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn writes_are_every_changing_method_under_admin_and_consumers() {
        for (method, path, want) in [
            (
                Method::POST,
                "/admin/secrets/rotate",
                Some(WriteRoute::Admin),
            ),
            (
                Method::POST,
                "/admin/secrets/rollback",
                Some(WriteRoute::Admin),
            ),
            (
                Method::POST,
                "/admin/secrets/rotate-all",
                Some(WriteRoute::Admin),
            ),
            (Method::DELETE, "/admin/jobs/abc", Some(WriteRoute::Admin)),
            (
                Method::PUT,
                "/admin/secrets/schedule",
                Some(WriteRoute::Admin),
            ),
            (
                Method::POST,
                "/consumers/report",
                Some(WriteRoute::Consumer),
            ),
            (
                Method::POST,
                "/consumers/permits",
                Some(WriteRoute::Consumer),
            ),
            (
                Method::DELETE,
                "/consumers/permits/ab12",
                Some(WriteRoute::Consumer),
            ),
            (Method::GET, "/admin/secrets/schedule", None),
            (Method::GET, "/admin/jobs/abc", None),
            (Method::HEAD, "/admin/secrets/schedule", None),
            (Method::OPTIONS, "/admin/secrets/rotate", None),
            (Method::GET, "/healthz", None),
            (Method::POST, "/healthz", None),
            (Method::POST, "/adminx", None),
            (Method::POST, "/jwks/t/k", None),
            (Method::GET, "/jwks/t/k", Some(WriteRoute::Jwks)),
            (Method::HEAD, "/jwks/t/k", Some(WriteRoute::Jwks)),
            (Method::OPTIONS, "/jwks/t/k", None),
        ] {
            assert_eq!(write_route(&method, path), want, "{method} {path}");
        }
    }
}
