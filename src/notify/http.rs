//! One HTTP POST to a notification receiver, with a timeout, classified for the retry
//! loop. Plain HTTP/1.1 over hyper's client (already in the build through axum); no TLS
//! yet, so receivers are reached over `http://` (a local relay or an egress proxy for
//! Slack; see the `[[notify]]` docs).
//!
//! Outcomes carry fixed reasons, never the URL or the response body: a Slack webhook URL
//! is itself a credential.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx.
    Delivered,
    /// Worth retrying: a 5xx, 408, 429, a connection error or a timeout. `after` is the
    /// receiver's `Retry-After`, when it sent one in seconds.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Retrying will not help (another 4xx): the request itself is refused.
    Reject { reason: String },
}

#[derive(Clone)]
pub struct Poster {
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Poster {
    pub fn new(timeout: Duration) -> Poster {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(connector);
        Poster { client, timeout }
    }

    /// POSTs `body` as JSON to `uri` with extra `headers`.
    pub async fn post(&self, uri: &Uri, headers: &[(&str, String)], body: Vec<u8>) -> Attempt {
        let mut req = Request::post(uri.clone())
            .header("content-type", "application/json")
            .header("user-agent", concat!("rotor/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let req = match req.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(_) => {
                return Attempt::Reject {
                    reason: "invalid request header".into(),
                };
            }
        };
        let resp = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => {
                return Attempt::Retry {
                    reason: "timeout".into(),
                    after: None,
                };
            }
            Ok(Err(e)) => {
                let reason = if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                return Attempt::Retry {
                    reason: reason.into(),
                    after: None,
                };
            }
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        classify(
            status,
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
        )
    }
}

/// Delivered, retry or reject, by status code.
pub fn classify(status: StatusCode, retry_after: Option<&str>) -> Attempt {
    if status.is_success() {
        return Attempt::Delivered;
    }
    let reason = format!("HTTP {}", status.as_u16());
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Attempt::Retry {
            reason,
            after: retry_after
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        }
    } else {
        Attempt::Reject { reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_status_codes() {
        assert_eq!(classify(StatusCode::OK, None), Attempt::Delivered);
        assert_eq!(classify(StatusCode::NO_CONTENT, None), Attempt::Delivered);
        assert!(matches!(
            classify(StatusCode::INTERNAL_SERVER_ERROR, None),
            Attempt::Retry { after: None, .. }
        ));
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, Some("7")),
            Attempt::Retry {
                reason: "HTTP 429".into(),
                after: Some(Duration::from_secs(7))
            }
        );
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, None),
            Attempt::Reject { .. }
        ));
    }
}
