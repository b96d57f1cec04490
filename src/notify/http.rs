//! One HTTP POST to a notification receiver, with a timeout, classified for the retry
//! loop. reqwest with rustls, so a Slack incoming webhook is reached directly over
//! `https://`; `ca_file` adds a private CA.
//!
//! Outcomes carry fixed reasons, never the URL or the response body: a Slack webhook URL
//! is itself a credential.

use std::path::Path;
use std::time::Duration;

use hyper::{StatusCode, Uri};

use crate::http_client::ProxyUrl;

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
    // reqwest with rustls (already in the build through vaultrs): http:// and https://.
    client: reqwest::Client,
}

impl Poster {
    /// A client with `timeout` per attempt. `ca_file` (PEM) is trusted in addition to the
    /// system's roots, for receivers behind a private CA.
    /// `proxy` is used for every receiver that is not loopback.
    pub fn new(
        timeout: Duration,
        ca_file: Option<&Path>,
        proxy: Option<&ProxyUrl>,
    ) -> Result<Poster, String> {
        // No redirect is followed (a 3xx is rejected): a notification names secrets and
        // goes to the configured receiver only, never downgraded from https to http.
        let client = crate::http_client::client(timeout, ca_file, proxy)?;
        Ok(Poster { client })
    }

    /// POSTs `body` as JSON to `uri` with extra `headers`.
    pub async fn post(&self, uri: &Uri, headers: &[(&str, String)], body: Vec<u8>) -> Attempt {
        let mut req = self
            .client
            .post(uri.to_string())
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            req = req.header(*name, value.as_str());
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) => {
                return Attempt::Retry {
                    reason: crate::http_client::failure(&e, uri.scheme_str() == Some("https"))
                        .into(),
                    after: None,
                };
            }
        };
        let status = StatusCode::from_u16(resp.status().as_u16())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
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
    let reason = if status.is_redirection() {
        format!("HTTP {} (redirects are not followed)", status.as_u16())
    } else {
        format!("HTTP {}", status.as_u16())
    };
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

    /// A receiver that answers with a redirect: the notification is rejected and the
    /// redirect's target never hears from rotor.
    #[tokio::test]
    async fn a_redirect_is_not_followed() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        use tokio::net::TcpListener;

        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_addr = target.local_addr().unwrap();
        let redirector = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let redirector_addr = redirector.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut conn, _) = redirector.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let answer = format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{target_addr}/\r\n\
                 content-length: 0\r\nconnection: close\r\n\r\n"
            );
            conn.write_all(answer.as_bytes()).await.unwrap();
        });

        let poster = Poster::new(Duration::from_secs(5), None, None).unwrap();
        let uri: Uri = format!("http://{redirector_addr}/hook").parse().unwrap();
        let attempt = poster.post(&uri, &[], b"{}".to_vec()).await;

        assert_eq!(
            attempt,
            Attempt::Reject {
                reason: "HTTP 307 (redirects are not followed)".into()
            }
        );
        let heard = tokio::time::timeout(Duration::from_millis(200), target.accept()).await;
        assert!(heard.is_err(), "the redirect's target was contacted");
    }
}
