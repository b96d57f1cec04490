//! The `webhook` target: a user's HTTP endpoint decides each step.
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
//! The value travels in the body, so the body may only go where nobody can read it: this
//! build speaks plain HTTP to loopback addresses only (a local agent or sidecar). HTTPS
//! endpoints are not supported yet; configuration refuses any other URL.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{Target, TargetError, ValueReader, kind_of};
use crate::domain::{SecretRef, VersionNo};
use crate::generator::SecretValue;

const NAME: &str = "webhook";

/// A parsed `http://host:port/path` URL with a loopback host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopbackUrl {
    pub authority: String,
    pub path: String,
}

impl LoopbackUrl {
    /// Accepts `http://` URLs whose host is a loopback address (`127.0.0.0/8`, `[::1]`,
    /// `localhost`). The error says why, quoting nothing secret (URLs hold no secrets).
    pub fn parse(url: &str) -> Result<LoopbackUrl, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(if url.starts_with("https://") {
                "https endpoints are not supported yet: use an http:// URL on a loopback \
                 address (a local agent or sidecar)"
                    .into()
            } else {
                "expected an http:// URL on a loopback address".into()
            });
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not allowed: use hmac_key_file".into());
        }
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.split(':').next().unwrap_or_default(),
        };
        let loopback =
            host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(format!(
                "{host} is not a loopback address: the value is sent in the body, which \
                 only TLS (not supported yet) or loopback keeps private"
            ));
        }
        let authority = if authority.starts_with('[') {
            if authority.contains("]:") {
                authority.to_owned()
            } else {
                format!("{authority}:80")
            }
        } else if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(LoopbackUrl {
            authority,
            path: path.to_owned(),
        })
    }
}

/// A user's HTTP endpoint.
pub struct WebhookTarget {
    url: LoopbackUrl,
    hmac_key_file: PathBuf,
    timeout: Duration,
    reader: ValueReader,
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
    pub fn new(
        url: LoopbackUrl,
        hmac_key_file: PathBuf,
        timeout: Duration,
        reader: ValueReader,
    ) -> Self {
        WebhookTarget {
            url,
            hmac_key_file,
            timeout,
            reader,
        }
    }

    fn err(op: &'static str, secret: &SecretRef, v: VersionNo, message: String) -> TargetError {
        TargetError::new(NAME, op, secret, v, kind_of(op), message)
    }

    async fn post(
        &self,
        operation: &'static str,
        secret: &SecretRef,
        version: VersionNo,
        value: Option<&SecretValue>,
    ) -> Result<(), TargetError> {
        let fail = |m: String| Self::err(operation, secret, version, m);
        let key = Zeroizing::new(std::fs::read(&self.hmac_key_file).map_err(|e| {
            fail(format!(
                "cannot read hmac_key_file {}: {e}",
                self.hmac_key_file.display()
            ))
        })?);
        let key: &[u8] = key.trim_ascii();
        let mut body = serde_json::json!({
            "operation": operation,
            "tenant": secret.tenant,
            "key": secret.key,
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
        let request = hyper::Request::post(&self.url.path)
            .header(hyper::header::HOST, &self.url.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("x-rotor-timestamp", &timestamp)
            .header("x-rotor-signature", sig)
            .body(Full::new(Bytes::copy_from_slice(&body)))
            .map_err(|e| fail(format!("cannot build the request: {e}")))?;
        let authority = self.url.authority.clone();
        let exchange = async move {
            let stream = tokio::net::TcpStream::connect(&authority)
                .await
                .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP handshake with {authority}: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("request to {authority}: {e}"))?;
            let status = response.status();
            // Drain (bounded by the timeout) so the connection closes cleanly; the body is
            // not quoted: an endpoint might echo the value.
            let _ = response.into_body().collect().await;
            Ok::<_, String>(status)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(status)) if status.is_success() => Ok(()),
            Ok(Ok(status)) => Err(fail(format!("endpoint answered {status}"))),
            Ok(Err(m)) => Err(fail(m)),
            Err(_) => Err(fail(format!("no answer within {:?}", self.timeout))),
        }
    }
}

impl Target for WebhookTarget {
    fn kind(&self) -> &'static str {
        NAME
    }

    fn apply<'a>(
        &'a self,
        secret: &'a SecretRef,
        version: VersionNo,
        value: &'a SecretValue,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(self.post("apply", secret, version, Some(value)))
    }

    fn test<'a>(
        &'a self,
        secret: &'a SecretRef,
        version: VersionNo,
        value: &'a SecretValue,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(self.post("test", secret, version, Some(value)))
    }

    fn promote<'a>(
        &'a self,
        secret: &'a SecretRef,
        version: VersionNo,
        _previous: Option<VersionNo>,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(self.post("promote", secret, version, None))
    }

    fn revoke<'a>(
        &'a self,
        secret: &'a SecretRef,
        version: VersionNo,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let value = self.reader.read_value(secret, version).ok();
            self.post("revoke", secret, version, value.as_ref()).await
        })
    }

    fn restore<'a>(
        &'a self,
        secret: &'a SecretRef,
        restore: VersionNo,
        revoke: VersionNo,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(async move {
            let value = self.reader.read_value(secret, restore).ok();
            self.post("restore", secret, restore, value.as_ref())
                .await?;
            self.revoke(secret, revoke).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_http_is_accepted() {
        let u = LoopbackUrl::parse("http://127.0.0.1:9000/hook").unwrap();
        assert_eq!(u.authority, "127.0.0.1:9000");
        assert_eq!(u.path, "/hook");
        assert_eq!(LoopbackUrl::parse("http://localhost").unwrap().path, "/");
        assert!(LoopbackUrl::parse("http://[::1]:80/x").is_ok());
        assert!(LoopbackUrl::parse("http://10.0.0.1/x").is_err());
        assert!(LoopbackUrl::parse("https://api.example.com/x").is_err());
        assert!(LoopbackUrl::parse("http://u:p@127.0.0.1/x").is_err());
    }
}
