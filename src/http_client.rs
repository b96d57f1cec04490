//! The one way rotor builds an outgoing HTTP client (reqwest with rustls): notification
//! receivers, webhook targets, `http` reload actions and the CLI's calls to the running
//! rotor's admin API. `https://` is verified against the system's roots plus an optional
//! private CA (`ca_file`: one PEM certificate or a bundle); plain `http://` works too, and
//! callers decide where it is allowed.
//!
//! No client reads a proxy from the environment (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`):
//! many of these calls go to loopback (a reload endpoint in the pod, the admin API, a local
//! hook), which a proxy cannot reach, and a webhook body holds a value that must go to the
//! configured URL only.
//!
//! Errors name the CA file, never a URL.

use std::path::Path;
use std::time::Duration;

/// A client whose requests (and connects) give up after `timeout`. It follows no redirect:
/// a request goes to the configured URL and nowhere else (a webhook body holds a value, a
/// notification names secrets, and a redirect could downgrade https to http); a 3xx answer
/// is the caller's to report.
pub fn client(timeout: Duration, ca_file: Option<&Path>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(2)
        .tcp_nodelay(true)
        .user_agent(concat!("rotor/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        // Every certificate of a bundle is trusted; a file with none is refused rather than
        // silently leaving only the system's roots.
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| format!("ca_file {} is not a PEM certificate", path.display()))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|_| "cannot build the HTTP client".to_owned())
}

/// Why a request got no answer, in fixed words (reqwest's own text quotes the whole URL,
/// which may hold a token). `tls`: the request went to an `https://` URL, where a failed
/// connect may be an untrusted certificate.
pub fn failure(e: &reqwest::Error, tls: bool) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() && tls {
        "cannot connect (refused, or its TLS certificate is not trusted: see ca_file)"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = client(Duration::from_secs(1), Some(&missing)).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = client(Duration::from_secs(1), Some(&junk)).unwrap_err();
        assert!(e.contains("junk.pem") && e.contains("not a PEM"), "{e}");
        assert!(client(Duration::from_secs(1), None).is_ok());
    }
}
