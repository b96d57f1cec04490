//! `target = { type = "webhook", ... }`: the keys of a target that posts every step to a
//! user's HTTP endpoint, their checks, and the [`WebhookTarget`] built from them.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{HookUrl, WebhookTarget};
use crate::config::{Field, Ty, Validator, f, join};
use crate::domain::SecretRef;
use crate::http_client::ProxyUrl;
use crate::target::config::DEFAULT_TARGET_TIMEOUT;
use crate::target::{Target, ValueReader};

/// The keys a webhook target takes besides `type`.
pub(crate) const FIELDS: &[Field] = &[
    f("url", Ty::Str),
    f("hmac_key_file", Ty::Str),
    f("ca_file", Ty::Str),
    f("timeout", Ty::Duration),
    f("proxy", Ty::Str),
];

/// The keys as written (every one optional and spanned; see [`crate::config`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    /// The endpoint.
    url: Option<Spanned<String>>,
    /// File holding the request-signing key.
    hmac_key_file: Option<Spanned<String>>,
    /// PEM CA trusted in addition to the system's roots.
    ca_file: Option<Spanned<String>>,
    /// Longest a step may take.
    timeout: Option<Spanned<String>>,
    /// The proxy an `https://` endpoint is reached through.
    proxy: Option<Spanned<String>>,
}

/// A user's HTTP endpoint per step, HMAC-signed: `https://`, or `http://` on loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Checked once here: the target is built from the parsed URL.
    pub url: HookUrl,
    pub hmac_key_file: PathBuf,
    /// PEM CA trusted in addition to the system's roots.
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    /// The proxy requests go through, unless the endpoint is loopback.
    pub proxy: Option<ProxyUrl>,
}

impl WebhookConfig {
    /// Checks `t` (the table at `path`, spanning `span`); `None` when the URL is missing or refused
    /// (reported).
    pub(crate) fn validate(
        v: &mut Validator<'_, '_>,
        path: &str,
        span: Range<usize>,
        t: &RawWebhook,
    ) -> Option<WebhookConfig> {
        let url = match &t.url {
            None => {
                v.missing(
                    Some(span.clone()),
                    &join(path, "url"),
                    "missing key `url`: the endpoint every step is posted to",
                );
                None
            }
            Some(u) => match HookUrl::parse(u.get_ref()) {
                Ok(url) => Some(url),
                Err(m) => {
                    v.diag.value(u.span(), &join(path, "url"), m);
                    None
                }
            },
        };
        let plain_http = url.as_ref().is_some_and(|u| !u.is_https());
        let ca_file = v.ca_file(&join(path, "ca_file"), t.ca_file.as_ref(), plain_http);
        let hmac_key_file = v.required_file(path, "hmac_key_file", span.clone(), &t.hmac_key_file);
        let timeout = v.duration_or(
            &join(path, "timeout"),
            t.timeout.as_ref(),
            DEFAULT_TARGET_TIMEOUT,
        );
        let proxy = v.proxy(&join(path, "proxy"), t.proxy.as_ref());
        Some(WebhookConfig {
            url: url?,
            hmac_key_file,
            ca_file,
            timeout,
            proxy,
        })
    }

    /// The target this configuration describes; `reader` is how it reads stored values.
    pub fn build(&self, secret: &SecretRef, reader: &ValueReader) -> Arc<dyn Target> {
        Arc::new(WebhookTarget::new(
            secret.clone(),
            self.url.clone(),
            self.hmac_key_file.clone(),
            self.ca_file.clone(),
            self.timeout,
            self.proxy.clone(),
            reader.clone(),
        ))
    }
}
