//! `proxy` keys: where they are accepted (the Vault store, HTTP notifier channels, the
//! webhook target, http reloads), what they must be, and that a refused one is quoted with
//! its password replaced by `***`.

use super::*;
use crate::notify::config::NotifyConfig;
use crate::target::config::TargetConfig;
use crate::watch::reload::config::ReloadAction;

/// Every integration with a `proxy` key, each set to `proxy`.
fn with_proxies(proxy: &str) -> String {
    format!(
        r#"
[store]
type = "vault"
address = "https://vault:8200"
auth = {{ method = "token", token_file = "/t" }}
proxy = "{proxy}"
[[notify]]
type = "slack"
url = "https://hooks.slack.com/services/x"
proxy = "{proxy}"
[[notify]]
type = "webhook"
url = "https://audit.example.com/events"
secret_file = "/k"
proxy = "{proxy}"
[[secrets]]
tenant = "acme"
key = "hooked"
policy = "api_keys"
target = {{ type = "webhook", url = "https://hooks.example.com/x", hmac_key_file = "/k", proxy = "{proxy}" }}
[[mounts]]
path = "/mnt/secrets"
reload = {{ type = "http", url = "https://app.example.com/-/reload", proxy = "{proxy}" }}
"#
    )
}

#[test]
fn every_http_integration_takes_a_proxy() {
    let c = load_ok(&with_proxies("http://proxy.internal:3128"));
    let want = Some(crate::http_client::ProxyUrl::parse("http://proxy.internal:3128").unwrap());
    let StoreConfig::Vault(v) = &c.store else {
        panic!("a vault store");
    };
    assert_eq!(v.proxy, want);
    assert!(c.notify.iter().all(|n: &NotifyConfig| n.proxy == want));
    let TargetConfig::Webhook(w) = &*c.secrets[0].target else {
        panic!("a webhook target");
    };
    assert_eq!(w.proxy, want);
    let Some(ReloadAction::Http { proxy, .. }) = c.mounts[0].reload.as_ref().map(|r| &r.action)
    else {
        panic!("an http reload");
    };
    assert_eq!(*proxy, want);
}

#[test]
fn bad_proxies_are_all_reported_by_key_without_their_password() {
    let errs = errors(&with_proxies("socks5://alice:s3cret@proxy:1080"));
    let keys: Vec<&str> = errs.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "store.proxy",
            "notify[0].proxy",
            "notify[1].proxy",
            "secrets[0].target.proxy",
            "mounts[0].reload.proxy"
        ],
        "{errs}"
    );
    let text = errs.to_string();
    assert!(text.contains("test.toml:6:9: store.proxy"), "{text}");
    assert!(text.contains("not supported"), "{text}");
    assert!(
        !text.contains("s3cret") && text.contains("socks5://***@proxy:1080"),
        "{text}"
    );
}

#[test]
fn a_log_channel_and_other_reloads_take_no_proxy() {
    one_error(
        "[[notify]]\ntype = \"log\"\nproxy = \"http://p:1\"\n",
        "notify[0].proxy",
        &["unknown"],
    );
    one_error(
        "[[mounts]]\npath = \"/m\"\nreload = { type = \"signal\", pid_file = \"/p\", proxy = \"http://p:1\" }\n",
        "mounts[0].reload.proxy",
        &["unknown"],
    );
}
