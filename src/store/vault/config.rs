//! `[store] type = "vault"`: the keys of the Vault store, their checks, and the
//! [`VaultSettings`] the store is opened with.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{VaultAuth, VaultSettings};
use crate::config::{Field, StoreConfig, Ty, Validator, f};
use crate::store::embedded::config::DEFAULT_MASTER_KEY_FILE;

/// The keys of a Vault `auth` table, for the store and for Vault views alike.
pub(crate) const AUTH_FIELDS: &[Field] = &[
    f("method", Ty::Str),
    f("role", Ty::Str),
    f("token_file", Ty::Str),
    f("mount", Ty::Str),
];

/// The keys a Vault store takes besides `type`.
pub(crate) const FIELDS: &[Field] = &[
    f("address", Ty::Str),
    f("addresses", Ty::StrList),
    f("mount", Ty::Str),
    f("path_prefix", Ty::Str),
    f("namespace", Ty::Str),
    f("ca_file", Ty::Str),
    f("master_key_file", Ty::Str),
    f("timeout", Ty::Duration),
    f("max_attempts", Ty::Int),
    f("retry_backoff", Ty::Duration),
    f("auth", Ty::Table(AUTH_FIELDS)),
    f("proxy", Ty::Str),
    f("allow_insecure_http", Ty::Bool),
];

/// The keys as written (every one optional and spanned; see [`crate::config`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVault {
    address: Option<Spanned<String>>,
    /// Several nodes of one Vault cluster, tried in order after `address`.
    addresses: Option<Spanned<Vec<Spanned<String>>>>,
    mount: Option<Spanned<String>>,
    path_prefix: Option<Spanned<String>>,
    namespace: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    master_key_file: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    max_attempts: Option<Spanned<i64>>,
    retry_backoff: Option<Spanned<String>>,
    auth: Option<Spanned<RawVaultAuth>>,
    /// `http(s)://host:port` of a proxy for a Vault that is not on loopback.
    proxy: Option<Spanned<String>>,
    /// Allows `http://` to a host that is not loopback.
    allow_insecure_http: Option<Spanned<bool>>,
}

/// `auth = { method = "kubernetes" | "token", ... }`, as the store and Vault views take it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVaultAuth {
    method: Option<Spanned<String>>,
    role: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    mount: Option<Spanned<String>>,
}

/// `[store] type = "vault"`: every key checked, every problem reported.
pub(crate) fn validate(
    v: &mut Validator<'_, '_>,
    span: Range<usize>,
    raw: &RawVault,
) -> StoreConfig {
    let allow_insecure_http = raw
        .allow_insecure_http
        .as_ref()
        .is_some_and(|a| *a.get_ref());
    // Every node, `address` first, with its key as errors name it: `store.address`,
    // `store.addresses[N]`.
    let mut named: Vec<(String, &Spanned<String>)> = Vec::new();
    if let Some(a) = &raw.address {
        named.push(("store.address".to_owned(), a));
    }
    if let Some(list) = &raw.addresses {
        if list.get_ref().is_empty() {
            v.diag.value(
                list.span(),
                "store.addresses",
                "is empty: list the nodes of the Vault cluster, e.g. [\"https://vault-0.vault-internal:8200\", \"https://vault-1.vault-internal:8200\"], or leave the key out",
            );
        }
        for (i, a) in list.get_ref().iter().enumerate() {
            named.push((format!("store.addresses[{i}]"), a));
        }
    }
    // A list stage one refused (an item that is no string) was reported there.
    if raw.address.is_none() && raw.addresses.is_none() && !v.was_pruned("store.addresses") {
        v.missing(
            Some(span.clone()),
            "store.address",
            "missing key `address`: the Vault server, e.g. \"https://vault.vault.svc:8200\" (or `addresses`, a list of the nodes of one Vault cluster)",
        );
    }
    let mut nodes: Vec<(url::Url, String)> = Vec::new();
    for (key, a) in &named {
        let Some(url) = node_address(v, key, a, allow_insecure_http) else {
            continue;
        };
        if let Some((_, first_key)) = nodes.iter().find(|(u, _)| *u == url) {
            v.diag.value(
                a.span(),
                key,
                format!("names the same Vault node as {first_key}: list each node once"),
            );
            continue;
        }
        // One cluster speaks one scheme, and `ca_file` applies to all of its nodes.
        if let Some((first, first_key)) = nodes.first()
            && first.scheme() != url.scheme()
        {
            v.diag.value(
                a.span(),
                key,
                format!(
                    "uses {}:// but {first_key} uses {}://: every node of the cluster must use the same scheme",
                    url.scheme(),
                    first.scheme()
                ),
            );
            continue;
        }
        nodes.push((url, key.clone()));
    }
    let texts: Vec<String> = named
        .iter()
        .filter(|(key, _)| nodes.iter().any(|(_, k)| k == key))
        .map(|(_, a)| a.get_ref().trim().to_owned())
        .collect();
    let (address, other_addresses) = match texts.split_first() {
        Some((first, rest)) => (first.clone(), rest.to_vec()),
        None => (String::new(), Vec::new()),
    };
    let mount = vault_path_part(v, "store.mount", raw.mount.as_ref(), "secret", false);
    let path_prefix = vault_path_part(v, "store.path_prefix", raw.path_prefix.as_ref(), "", true);
    let namespace = raw
        .namespace
        .as_ref()
        .map(|n| vault_path_part(v, "store.namespace", Some(n), "", false));
    let plain_http = nodes.first().is_some_and(|(u, _)| u.scheme() == "http");
    let proxy = v.proxy("store.proxy", raw.proxy.as_ref());
    let ca_file = v.ca_file("store.ca_file", raw.ca_file.as_ref(), plain_http);
    let master_key_file = v.non_empty_path(
        "store.master_key_file",
        raw.master_key_file.as_ref(),
        DEFAULT_MASTER_KEY_FILE,
    );
    let timeout = v.duration_or(
        "store.timeout",
        raw.timeout.as_ref(),
        Duration::from_secs(10),
    );
    if timeout.is_zero()
        && let Some(t) = &raw.timeout
    {
        v.diag
            .value(t.span(), "store.timeout", "must be longer than zero");
    }
    let max_attempts = v.int_or(
        "store.max_attempts",
        raw.max_attempts.as_ref(),
        (1, 20),
        "the number of attempts per Vault request",
        4,
    );
    let retry_backoff = v.duration_or(
        "store.retry_backoff",
        raw.retry_backoff.as_ref(),
        Duration::from_millis(200),
    );
    let auth = vault_auth(v, raw.auth.as_ref(), span);
    StoreConfig::Vault(Box::new(VaultSettings {
        address,
        other_addresses,
        mount,
        path_prefix,
        namespace,
        ca_file,
        master_key_file,
        timeout,
        max_attempts,
        retry_backoff,
        auth,
        proxy,
        allow_insecure_http,
    }))
}

/// One node's address at `key`: an `http` or `https` URL with a host and no path or query;
/// plain http only to loopback unless `allow_insecure_http`. `None` (reported) otherwise.
fn node_address(
    v: &mut Validator<'_, '_>,
    key: &str,
    a: &Spanned<String>,
    allow_insecure_http: bool,
) -> Option<url::Url> {
    let text = a.get_ref().trim();
    let url = match url::Url::parse(text) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && u.query().is_none()
                && matches!(u.path(), "" | "/") =>
        {
            u
        }
        _ => {
            v.diag.value(
                a.span(),
                key,
                "is not a Vault address such as \"https://vault.vault.svc:8200\" (http or https, a host, no path)",
            );
            return None;
        }
    };
    // Plain http is for a Vault agent or dev server on this machine; elsewhere the token and
    // every value would cross the network unencrypted, so that takes an explicit opt-in.
    if url.scheme() == "http" && !allow_insecure_http && !crate::http_client::url_is_loopback(&url)
    {
        v.diag.value(
            a.span(),
            key,
            "plain http to a host that is not loopback (127.0.0.0/8, ::1, localhost) sends the Vault token and every value unencrypted: use https://, or set allow_insecure_http = true in [store] to accept that",
        );
        return None;
    }
    Some(url)
}

fn vault_auth(
    v: &mut Validator<'_, '_>,
    raw: Option<&Spanned<RawVaultAuth>>,
    store_span: Range<usize>,
) -> VaultAuth {
    let Some(spanned) = raw else {
        v.missing(
            Some(store_span),
            "store.auth",
            "missing key `auth`: e.g. { method = \"kubernetes\", role = \"rotor\", token_file = \"/var/run/secrets/kubernetes.io/serviceaccount/token\" } or { method = \"token\", token_file = \"...\" }",
        );
        return AUTH_PLACEHOLDER;
    };
    auth(v, "store.auth", spanned)
}

/// What a rejected `auth` table stands for: the config is refused anyway.
const AUTH_PLACEHOLDER: VaultAuth = VaultAuth::Token {
    token_file: PathBuf::new(),
};

/// An `auth` table at `key` (`store.auth`, `publish[N].auth`): every problem reported;
/// a refused table comes back as a placeholder (the config is refused as a whole).
pub(crate) fn auth(
    v: &mut Validator<'_, '_>,
    key: &str,
    spanned: &Spanned<RawVaultAuth>,
) -> VaultAuth {
    let at = |name: &str| format!("{key}.{name}");
    let a = spanned.get_ref();
    let token_file = match &a.token_file {
        None => {
            v.missing(
                Some(spanned.span()),
                &at("token_file"),
                "missing key `token_file`: the file holding the service-account JWT (kubernetes) or the Vault token (token)",
            );
            PathBuf::new()
        }
        Some(f) => v.non_empty_path(&at("token_file"), Some(f), ""),
    };
    match a.method.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
        Some(("kubernetes", _)) => {
            let role = match &a.role {
                None => {
                    v.missing(
                        Some(spanned.span()),
                        &at("role"),
                        "missing key `role`: the Vault Kubernetes auth role, e.g. \"rotor\"",
                    );
                    String::new()
                }
                Some(r) if r.get_ref().trim().is_empty() => {
                    v.diag.value(r.span(), &at("role"), "must not be empty");
                    String::new()
                }
                Some(r) => r.get_ref().clone(),
            };
            let mount = vault_path_part(v, &at("mount"), a.mount.as_ref(), "kubernetes", false);
            VaultAuth::Kubernetes {
                role,
                token_file,
                mount,
            }
        }
        Some(("token", _)) => {
            for (name, value) in [("role", &a.role), ("mount", &a.mount)] {
                if let Some(value) = value {
                    v.diag.value(
                        value.span(),
                        &at(name),
                        "only applies to method = \"kubernetes\"",
                    );
                }
            }
            VaultAuth::Token { token_file }
        }
        Some((_, span)) => {
            v.diag
                .value(span, &at("method"), "expected \"kubernetes\" or \"token\"");
            AUTH_PLACEHOLDER
        }
        None => {
            v.missing(
                Some(spanned.span()),
                &at("method"),
                "missing key `method`: \"kubernetes\" or \"token\"",
            );
            AUTH_PLACEHOLDER
        }
    }
}

/// A Vault mount, namespace or path prefix: `/`-separated segments of letters, digits,
/// `-`, `_` and `.`, none empty, `.` or `..`. Empty is allowed only where `may_be_empty`.
fn vault_path_part(
    v: &mut Validator<'_, '_>,
    path: &str,
    value: Option<&Spanned<String>>,
    default: &str,
    may_be_empty: bool,
) -> String {
    let Some(value) = value else {
        return default.to_owned();
    };
    let text = value.get_ref().trim_matches('/');
    let ok_segment = |seg: &str| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if (text.is_empty() && may_be_empty) || (!text.is_empty() && text.split('/').all(ok_segment)) {
        text.to_owned()
    } else {
        v.diag.value(
            value.span(),
            path,
            "must be /-separated names of letters, digits, '-', '_' and '.' (no empty, '.' or '..' parts)",
        );
        default.to_owned()
    }
}
