//! The `webhook` target: a user's HTTPS endpoint decides each step.
//!
//! Every step is a `POST` of one JSON object to `url`:
//! `{"operation","tenant","key","version","value"}` (`value` is absent for `promote`;
//! `revoke` sends the revoked version's value so the endpoint can delete that key). The
//! request is signed: `X-Rotor-Timestamp` (Unix seconds) and `X-Rotor-Signature:
//! sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` under the key in `hmac_key_file`, so
//! the endpoint can refuse forgeries and replays. A 2xx status is success; anything else,
//! or no answer within `timeout`, fails the step. A rollback posts `restore` (with the
//! restored value), then `revoke` for the discarded version.
//!
//! The value travels in the body, so the body may only go where nobody else can read it:
//! `https://` to any host (certificates verified against the system's roots plus an
//! optional `ca_file`), or plain `http://` to a loopback address (a local agent or
//! sidecar). Redirects are not followed: a `307` could otherwise carry the body to a
//! URL nobody vetted. Errors name the endpoint's host and port only, never its path or
//! query (provider URLs often embed a token) and never the response body (an endpoint
//! might echo the value).

pub mod config;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{Target, TargetError, ValueReader};
use crate::domain::{SecretRef, VersionNo};
use crate::generator::SecretValue;
use crate::http_client::ProxyUrl;

const NAME: &str = "webhook";

/// An endpoint URL the value may be posted to: `https://` anywhere, `http://` only on a
/// loopback address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookUrl {
    url: url::Url,
    /// `host:port`, the only part of the URL errors quote.
    pub authority: String,
}

impl HookUrl {
    /// Accepts `https://` URLs and `http://` URLs whose host is a loopback address
    /// (`127.0.0.0/8`, `[::1]`, `localhost`). The error says why; it quotes the host at
    /// most, never the path or query.
    pub fn parse(text: &str) -> Result<HookUrl, String> {
        let url = url::Url::parse(text).map_err(|e| format!("is not a URL: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials in the URL are not allowed: use hmac_key_file".into());
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            None => return Err("has no host".into()),
        };
        match url.scheme() {
            "https" => {}
            "http" => {
                if !crate::http_client::url_is_loopback(&url) {
                    return Err(format!(
                        "plain http to {host} is refused: the value is sent in the body, so \
                         use https:// (or http:// on a loopback address for a local agent)"
                    ));
                }
            }
            other => {
                return Err(format!(
                    "scheme {other} is not supported: use https:// (or http:// on a \
                     loopback address)"
                ));
            }
        }
        let port = url.port_or_known_default().unwrap_or(443);
        Ok(HookUrl {
            authority: format!("{host}:{port}"),
            url,
        })
    }

    /// Whether the endpoint is reached over TLS.
    pub fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }
}

/// A user's HTTP endpoint.
pub struct WebhookTarget {
    /// The secret this target serves.
    secret: SecretRef,
    url: HookUrl,
    hmac_key_file: PathBuf,
    ca_file: Option<PathBuf>,
    timeout: Duration,
    /// Used for every endpoint that is not loopback.
    proxy: Option<ProxyUrl>,
    reader: ValueReader,
    /// Built at the first step that succeeds in building it, so a `ca_file` mounted after
    /// start is picked up instead of failing every step until a restart.
    client: Mutex<Option<reqwest::Client>>,
}

/// The signature header value for `body` sent at `timestamp`.
pub fn signature(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl WebhookTarget {
    /// `ca_file` (PEM) is trusted in addition to the system's roots.
    pub fn new(
        secret: SecretRef,
        url: HookUrl,
        hmac_key_file: PathBuf,
        ca_file: Option<PathBuf>,
        timeout: Duration,
        proxy: Option<ProxyUrl>,
        reader: ValueReader,
    ) -> Self {
        WebhookTarget {
            secret,
            url,
            hmac_key_file,
            ca_file,
            timeout,
            proxy,
            reader,
            client: Mutex::new(None),
        }
    }

    fn client(&self) -> Result<reqwest::Client, String> {
        let mut slot = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        // The body holds the value: a redirect must not carry it anywhere else.
        let client =
            crate::http_client::client(self.timeout, self.ca_file.as_deref(), self.proxy.as_ref())?;
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn post(
        &self,
        operation: &'static str,
        secret: &SecretRef,
        version: VersionNo,
        value: Option<&SecretValue>,
    ) -> Result<(), TargetError> {
        let fail = |m: String| TargetError::new(NAME, operation, secret, version, m);
        let client = self.client().map_err(fail)?;
        let key = Zeroizing::new(std::fs::read(&self.hmac_key_file).map_err(|e| {
            fail(format!(
                "cannot read hmac_key_file {}: {e}",
                self.hmac_key_file.display()
            ))
        })?);
        let key: &[u8] = key.trim_ascii();
        let mut body = serde_json::json!({
            "operation": operation,
            "tenant": secret.tenant(),
            "key": secret.key(),
            "version": version,
        });
        if let Some(v) = value {
            match std::str::from_utf8(v.expose()) {
                Ok(s) => body["value"] = s.into(),
                Err(_) => {
                    body["value"] = STANDARD.encode(v.expose()).into();
                    body["value_encoding"] = "base64".into();
                }
            }
        }
        let body = Zeroizing::new(serde_json::to_vec(&body).map_err(|e| fail(e.to_string()))?);
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let sig = signature(key, &timestamp, &body);
        let authority = &self.url.authority;
        let sent = client
            .post(self.url.url.clone())
            .header("content-type", "application/json")
            .header("x-rotor-timestamp", &timestamp)
            .header("x-rotor-signature", sig)
            // reqwest takes the body by value; this copy is dropped (not zeroized) with
            // the request, like every buffer the TLS stack keeps.
            .body(body.to_vec())
            .send()
            .await;
        let response = sent.map_err(|e| {
            let why = crate::http_client::failure(&e, self.url.is_https());
            fail(format!("request to {authority}: {why}"))
        })?;
        let status = response.status();
        // The body is not read into the error: an endpoint might echo the value. Dropping
        // the response closes or returns the connection.
        drop(response);
        if status.is_success() {
            Ok(())
        } else if status.is_redirection() {
            Err(fail(format!(
                "endpoint {authority} answered {status}; redirects are not followed, \
                 configure the final URL"
            )))
        } else {
            Err(fail(format!("endpoint {authority} answered {status}")))
        }
    }
}

#[async_trait::async_trait]
impl Target for WebhookTarget {
    fn type_name(&self) -> &'static str {
        NAME
    }

    async fn apply(&self, version: VersionNo, value: &SecretValue) -> Result<(), TargetError> {
        self.post("apply", &self.secret, version, Some(value)).await
    }

    async fn test(&self, version: VersionNo, value: &SecretValue) -> Result<(), TargetError> {
        self.post("test", &self.secret, version, Some(value)).await
    }

    async fn promote(
        &self,
        version: VersionNo,
        _previous: Option<VersionNo>,
    ) -> Result<(), TargetError> {
        self.post("promote", &self.secret, version, None).await
    }

    async fn revoke(&self, version: VersionNo) -> Result<(), TargetError> {
        let secret = &self.secret;
        let value = self.reader.read_value(secret, version).await.ok();
        self.post("revoke", secret, version, value.as_ref()).await
    }

    async fn restore(&self, restore: VersionNo, revoke: VersionNo) -> Result<(), TargetError> {
        let secret = &self.secret;
        let value = self.reader.read_value(secret, restore).await.ok();
        self.post("restore", secret, restore, value.as_ref())
            .await?;
        self.revoke(revoke).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_and_http_only_on_loopback() {
        let u = HookUrl::parse("http://127.0.0.1:9000/hook").unwrap();
        assert_eq!(u.authority, "127.0.0.1:9000");
        assert!(!u.is_https());
        assert_eq!(
            HookUrl::parse("http://localhost").unwrap().authority,
            "localhost:80"
        );
        assert!(HookUrl::parse("http://[::1]:80/x").is_ok());
        let u = HookUrl::parse("https://api.example.com/v1/keys?token=abc").unwrap();
        assert_eq!(u.authority, "api.example.com:443");
        assert!(u.is_https());
        let refused = HookUrl::parse("http://10.0.0.1/x").unwrap_err();
        assert!(refused.contains("use https://"), "{refused}");
        assert!(HookUrl::parse("http://u:p@127.0.0.1/x").is_err());
        assert!(HookUrl::parse("https://u@api.example.com/x").is_err());
        assert!(HookUrl::parse("ftp://127.0.0.1/x").is_err());
        assert!(HookUrl::parse("not a url").is_err());
    }

    #[test]
    fn refusals_do_not_quote_path_or_query() {
        let e = HookUrl::parse("http://hooks.example.com/t/SECRETPATH?k=SECRETQ").unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
    }
}
