//! The agent's side of the consumer routes of rotor's HTTP listener: `POST
//! /consumers/report`, `POST /consumers/permits`, `DELETE /consumers/permits/{id}`, each
//! with `Authorization: Bearer <consumer token>`.
//!
//! The token is read from `token_file` before every request (a rotated Kubernetes Secret is
//! picked up without a restart), held in a zeroizing buffer, and never logged: errors name
//! the route, the status and rotor's own `error` message, which by rotor's contract never
//! holds a value or a token. The HTTP client is the shared one ([`crate::http_client`]: no
//! proxy from the environment, no redirects followed, so the token goes to `rotor_url` only).

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use zeroize::Zeroizing;

use crate::config::AgentSettings;

/// A token file larger than this is not a token.
const MAX_TOKEN_BYTES: u64 = 4096;
/// Longest `error` message from rotor kept in an error (a misbehaving peer cannot flood
/// the log).
const MAX_MESSAGE_CHARS: usize = 200;

/// What can go wrong talking to rotor.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// rotor did not answer: connection refused, timed out, reset.
    #[error("cannot reach rotor at {url}: {why}")]
    Unreachable { url: String, why: &'static str },
    /// rotor answered with a status the route does not expect.
    #[error("rotor answered {route} with {status}: {message}")]
    Status {
        route: &'static str,
        status: u16,
        message: String,
    },
    /// The consumer token file cannot be used.
    #[error("consumer token file {path}: {why}")]
    Token { path: PathBuf, why: String },
    /// The HTTP client could not be built (the CA file).
    #[error("{0}")]
    Client(String),
}

impl ClientError {
    /// A bounded label for counting errors.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ClientError::Unreachable { .. } => "unreachable",
            ClientError::Status { status, .. } if *status >= 500 => "server_error",
            ClientError::Status { .. } => "rejected",
            ClientError::Token { .. } => "token",
            ClientError::Client(_) => "client",
        }
    }

    /// Whether waiting and trying again can help (rotor down or failing), as opposed to an
    /// answer that will not change by itself (a bad token, an unknown secret).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Status { status, .. } => *status >= 500 || *status == 429,
            ClientError::Token { .. } | ClientError::Client(_) => false,
        }
    }
}

/// One secret in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportedSecret {
    pub tenant_id: String,
    pub secret_key: String,
    /// What the mount's `NAME_version` marker says; `None` when it is missing.
    pub version: Option<u64>,
    /// Whether the reload after the last change succeeded; `None`: no reload configured
    /// for the file, or none finished since the change.
    pub reloaded: Option<bool>,
}

/// The body of `POST /consumers/report`: the agent's whole state, every time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub consumer_id: String,
    pub workload: Option<String>,
    pub secrets: Vec<ReportedSecret>,
}

/// rotor's answer to a permit request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermitAnswer {
    /// Granted: the opaque id to release it with.
    Granted { permit_id: String },
    /// The workload holds all its permits: ask again after this long.
    Busy { retry_after: Duration },
}

/// A client of one rotor's consumer routes.
pub struct RotorClient {
    http: reqwest::Client,
    /// `rotor_url` without a trailing `/`; routes are appended.
    base: String,
    token_file: PathBuf,
}

impl RotorClient {
    pub fn new(settings: &AgentSettings) -> Result<RotorClient, ClientError> {
        let http = crate::http_client::client(settings.timeout, settings.ca_file.as_deref(), None)
            .map_err(ClientError::Client)?;
        Ok(RotorClient {
            http,
            base: settings.rotor_url.as_str().trim_end_matches('/').to_owned(),
            token_file: settings.token_file.clone(),
        })
    }

    /// Checks that the token file can be read now (at start, to fail early and clearly).
    pub fn check_token(&self) -> Result<(), ClientError> {
        read_token(&self.token_file).map(drop)
    }

    /// `POST /consumers/report`.
    pub async fn report(&self, report: &Report) -> Result<(), ClientError> {
        let (status, json, _) = self
            .send(
                reqwest::Method::POST,
                "/consumers/report",
                "/consumers/report",
                Some(serde_json::to_value(report).unwrap_or_default()),
            )
            .await?;
        match status {
            200..=299 => Ok(()),
            _ => Err(status_error("/consumers/report", status, &json)),
        }
    }

    /// `POST /consumers/permits` for `workload`.
    pub async fn permit(
        &self,
        consumer_id: &str,
        workload: &str,
    ) -> Result<PermitAnswer, ClientError> {
        let body = serde_json::json!({"consumerId": consumer_id, "workload": workload});
        let (status, json, retry_header) = self
            .send(
                reqwest::Method::POST,
                "/consumers/permits",
                "/consumers/permits",
                Some(body),
            )
            .await?;
        match status {
            200 => match json["permitId"].as_str() {
                Some(id) if !id.is_empty() => Ok(PermitAnswer::Granted {
                    permit_id: id.to_owned(),
                }),
                _ => Err(ClientError::Status {
                    route: "/consumers/permits",
                    status,
                    message: "the answer has no permitId".to_owned(),
                }),
            },
            429 => {
                // `retryAfterMs` is the precise one; the header (whole seconds) is the
                // fallback, and one second when rotor gave neither.
                let retry_after = json["retryAfterMs"]
                    .as_u64()
                    .map(Duration::from_millis)
                    .or(retry_header)
                    .unwrap_or(Duration::from_secs(1));
                Ok(PermitAnswer::Busy { retry_after })
            }
            _ => Err(status_error("/consumers/permits", status, &json)),
        }
    }

    /// `DELETE /consumers/permits/{id}`; idempotent on rotor's side.
    pub async fn release(&self, permit_id: &str) -> Result<(), ClientError> {
        let id =
            percent_encoding::utf8_percent_encode(permit_id, percent_encoding::NON_ALPHANUMERIC);
        let (status, json, _) = self
            .send(
                reqwest::Method::DELETE,
                "/consumers/permits/{permitId}",
                &format!("/consumers/permits/{id}"),
                None,
            )
            .await?;
        match status {
            200..=299 | 404 => Ok(()),
            _ => Err(status_error("/consumers/permits/{permitId}", status, &json)),
        }
    }

    /// One request; the status, the JSON body (`Null` when not JSON) and a `Retry-After`
    /// header in seconds, if any.
    async fn send(
        &self,
        method: reqwest::Method,
        route: &'static str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value, Option<Duration>), ClientError> {
        let token = read_token(&self.token_file)?;
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(token.as_str());
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: format!("{}{route}", self.base),
            why: crate::http_client::failure(&e, self.base.starts_with("https")),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.bytes().await.map_err(unreachable)?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or_default(),
            retry_after,
        ))
    }
}

fn status_error(route: &'static str, status: u16, json: &serde_json::Value) -> ClientError {
    let message = json["error"]
        .as_str()
        .map(|m| m.chars().take(MAX_MESSAGE_CHARS).collect())
        .unwrap_or_else(|| "no error message".to_owned());
    ClientError::Status {
        route,
        status,
        message,
    }
}

/// The consumer token in `path`: at most 4 KiB, a trailing newline dropped, printable
/// ASCII only (it travels in a header). Errors name the file, never its content.
fn read_token(path: &Path) -> Result<Zeroizing<String>, ClientError> {
    let fail = |why: String| ClientError::Token {
        path: path.to_owned(),
        why,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_TOKEN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_TOKEN_BYTES {
        return Err(fail(format!(
            "larger than {MAX_TOKEN_BYTES} bytes; is this the right file?"
        )));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| fail("not UTF-8".to_owned()))?;
    let token = text.trim_end_matches(['\n', '\r']);
    if token.is_empty() {
        return Err(fail("empty".to_owned()));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(fail(
            "holds whitespace or a non-printable character; only printable ASCII travels in a header"
                .to_owned(),
        ));
    }
    Ok(Zeroizing::new(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_errors_name_the_file_never_the_content() {
        let dir = std::env::temp_dir().join(format!("rotor-agent-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "abc def-secret-part\n").unwrap();
        let e = read_token(&file).unwrap_err().to_string();
        assert!(e.contains("token"), "{e}");
        assert!(!e.contains("secret-part"), "{e}");
        std::fs::write(&file, "good-token\n").unwrap();
        assert_eq!(read_token(&file).unwrap().as_str(), "good-token");
        std::fs::write(&file, "\n").unwrap();
        assert!(read_token(&file).unwrap_err().to_string().contains("empty"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn report_body_has_the_contract_shape() {
        let report = Report {
            consumer_id: "web-7d9f-abc".into(),
            workload: None,
            secrets: vec![ReportedSecret {
                tenant_id: "tenant1".into(),
                secret_key: "database_credentials".into(),
                version: Some(7),
                reloaded: None,
            }],
        };
        assert_eq!(
            serde_json::to_value(&report).unwrap(),
            serde_json::json!({
                "consumerId": "web-7d9f-abc",
                "workload": null,
                "secrets": [{"tenantId": "tenant1", "secretKey": "database_credentials",
                             "version": 7, "reloaded": null}]
            })
        );
    }
}
