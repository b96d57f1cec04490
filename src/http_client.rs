//! The one way rotor builds an outgoing HTTP client (reqwest with rustls): notification
//! receivers, webhook targets, `http` reload actions and the CLI's calls to the running
//! rotor's admin API. `https://` is verified against the system's roots plus an optional
//! private CA (`ca_file`: one PEM certificate or a bundle); plain `http://` works too, and
//! callers decide where it is allowed.
//!
//! No client reads a proxy from the environment (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`):
//! many of these calls go to loopback (a reload endpoint in the pod, the admin API, a local
//! hook), which a proxy cannot reach, and a webhook body holds a value that must go to the
//! configured URL only. The one proxy a client uses is the one its integration names in
//! its own `proxy` key ([`ProxyUrl`]), and even then a loopback destination ([`is_loopback`])
//! is reached directly: a value meant for this machine never travels through another.
//!
//! Errors name the CA file, never a URL.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// Whether `host` is this machine's loopback: `127.0.0.0/8`, `::1` or `localhost`. The one
/// definition rotor uses, for the plain-http rules of the webhook target and the Vault store
/// and for bypassing a configured proxy.
pub fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => {
            let d = d.strip_suffix('.').unwrap_or(d);
            d.eq_ignore_ascii_case("localhost")
        }
        url::Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        url::Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

/// Whether `url` names a loopback host (see [`is_loopback`]).
pub fn url_is_loopback(url: &url::Url) -> bool {
    url.host().is_some_and(|h| is_loopback(&h))
}

/// The proxy an integration's `proxy` key names: `http://host:port` or `https://host:port`,
/// optionally with `user:password@`. `Debug` and [`fmt::Display`] show it with the
/// userinfo replaced by `***`, so it can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl(url::Url);

impl ProxyUrl {
    /// Accepts an `http` or `https` URL with a host and no path, query or fragment. The
    /// error says why and never quotes the text (it may hold a password).
    pub fn parse(text: &str) -> Result<ProxyUrl, String> {
        let url = url::Url::parse(text.trim())
            .map_err(|_| "is not a proxy URL such as \"http://proxy.internal:3128\"".to_owned())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "proxy scheme {} is not supported: use http:// or https://",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("has no host: use e.g. \"http://proxy.internal:3128\"".to_owned());
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err("must be only scheme, host and port (no path or query)".to_owned());
        }
        Ok(ProxyUrl(url))
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = &self.0;
        let auth = if u.username().is_empty() && u.password().is_none() {
            ""
        } else {
            "***@"
        };
        let host = u.host_str().unwrap_or_default();
        match u.port() {
            Some(port) => write!(f, "{}://{auth}{host}:{port}", u.scheme()),
            None => write!(f, "{}://{auth}{host}", u.scheme()),
        }
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

/// A client whose requests (and connects) give up after `timeout`. It follows no redirect:
/// a request goes to the configured URL and nowhere else (a webhook body holds a value, a
/// notification names secrets, and a redirect could downgrade https to http); a 3xx answer
/// is the caller's to report.
///
/// `proxy`: the integration's `proxy` key. Requests to a loopback host never use it; all
/// others go through it. Without one, no request uses a proxy.
pub fn client(
    timeout: Duration,
    ca_file: Option<&Path>,
    proxy: Option<&ProxyUrl>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        // Clears the environment's proxies; must come before `proxy` below, which it would
        // clear too.
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
    if let Some(proxy) = proxy {
        let target = proxy.0.clone();
        // A custom rule rather than reqwest's NO_PROXY list, so that "loopback" means exactly
        // what `is_loopback` says everywhere in rotor.
        builder = builder.proxy(reqwest::Proxy::custom(move |url| {
            (!url_is_loopback(url)).then(|| target.clone())
        }));
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
        let e = client(Duration::from_secs(1), Some(&missing), None).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = client(Duration::from_secs(1), Some(&junk), None).unwrap_err();
        assert!(e.contains("junk.pem") && e.contains("not a PEM"), "{e}");
        assert!(client(Duration::from_secs(1), None, None).is_ok());
    }

    #[test]
    fn loopback_is_127_8_ipv6_one_and_localhost() {
        for yes in [
            "http://127.0.0.1/",
            "http://127.9.8.7:1/",
            "http://[::1]:80/",
            "http://localhost/",
            "http://LocalHost.:9/",
        ] {
            assert!(url_is_loopback(&url::Url::parse(yes).unwrap()), "{yes}");
        }
        for no in [
            "http://10.0.0.1/",
            "http://[::2]/",
            "http://localhost.example.com/",
            "http://mylocalhost/",
            "http://0.0.0.0/",
        ] {
            assert!(!url_is_loopback(&url::Url::parse(no).unwrap()), "{no}");
        }
    }

    #[test]
    fn proxy_urls_are_checked_and_shown_without_userinfo() {
        let p = ProxyUrl::parse("http://alice:s3cret@proxy.internal:3128").unwrap();
        assert_eq!(p.to_string(), "http://***@proxy.internal:3128");
        assert!(!format!("{p:?}").contains("s3cret"));
        assert_eq!(
            ProxyUrl::parse("https://proxy/").unwrap().to_string(),
            "https://proxy"
        );
        for (bad, why) in [
            ("socks5://proxy:1080", "not supported"),
            ("proxy:3128", "not supported"),
            ("http://proxy:3128/path", "no path"),
            ("http://proxy:3128/?x=1", "no path"),
            ("not a url", "not a proxy URL"),
        ] {
            let e = ProxyUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = ProxyUrl::parse("ftp://u:s3cret@h").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }
}
