//! `[store]`: the Vault store's keys, defaults and errors; `[cache]` bounds.

use super::*;

#[test]
fn vault_store_contract_shape_loads() {
    use crate::store::vault::{VaultAuth, VaultSettings};
    let cfg = load_ok(
        r#"
[store]
type = "vault"
address = "https://vault.vault.svc:8200"
mount = "secret"                       # KV v2 mount
path_prefix = "production/tenants"     # secret path = {prefix}/{tenant}/{key}
auth = { method = "kubernetes", role = "rotor", token_file = "/var/run/secrets/kubernetes.io/serviceaccount/token" }
"#,
    );
    let StoreConfig::Vault(v) = &cfg.store else {
        panic!("expected a vault store, got {:?}", cfg.store);
    };
    assert_eq!(
        **v,
        VaultSettings {
            address: "https://vault.vault.svc:8200".into(),
            other_addresses: Vec::new(),
            mount: "secret".into(),
            path_prefix: "production/tenants".into(),
            namespace: None,
            ca_file: None,
            master_key_file: "data/master.key".into(),
            timeout: std::time::Duration::from_secs(10),
            max_attempts: 4,
            retry_backoff: std::time::Duration::from_millis(200),
            auth: VaultAuth::Kubernetes {
                role: "rotor".into(),
                token_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
                mount: "kubernetes".into(),
            },
            proxy: None,
            allow_insecure_http: false,
        }
    );
    let cfg = load_ok(
        r#"
[store]
type = "vault"
address = "https://vault:8200"
path_prefix = "p"
namespace = "team-a/prod"
ca_file = "/etc/vault/ca.pem"
master_key_file = "/keys/fp.key"
timeout = "3s"
max_attempts = 2
retry_backoff = "50ms"
auth = { method = "token", token_file = "/vault/token" }
"#,
    );
    let StoreConfig::Vault(v) = &cfg.store else {
        panic!("expected a vault store");
    };
    assert_eq!(v.namespace.as_deref(), Some("team-a/prod"));
    assert_eq!(
        v.auth,
        VaultAuth::Token {
            token_file: "/vault/token".into()
        }
    );
    assert_eq!(v.max_attempts, 2);
}

#[test]
fn vault_store_errors_name_the_key() {
    one_error(
        "[store]\ntype = \"vault\"\naddress = \"vault:8200\"\nauth = { method = \"token\", token_file = \"/t\" }\n",
        "store.address",
        &["https://"],
    );
    one_error(
        "[store]\ntype = \"vault\"\nauth = { method = \"token\", token_file = \"/t\" }\n",
        "store.address",
        &["missing key `address`"],
    );
    one_error(
        "[store]\ntype = \"vault\"\naddress = \"https://v:8200\"\nauth = { method = \"kubernetes\", token_file = \"/t\" }\n",
        "store.auth.role",
        &["missing key `role`"],
    );
    one_error(
        "[store]\ntype = \"vault\"\naddress = \"https://v:8200\"\nauth = { method = \"kubernetes\", role = \"r\" }\n",
        "store.auth.token_file",
        &["missing key `token_file`"],
    );
    one_error(
        "[store]\ntype = \"vault\"\naddress = \"https://v:8200\"\nauth = { method = \"ldap\", token_file = \"/t\" }\n",
        "store.auth.method",
        &["\"kubernetes\" or \"token\""],
    );
    one_error(
        "[store]\ntype = \"vault\"\naddress = \"https://v:8200\"\npath_prefix = \"a/../b\"\nauth = { method = \"token\", token_file = \"/t\" }\n",
        "store.path_prefix",
        &["'..'"],
    );
    one_error(
        "[store]\ntype = \"vault\"\naddress = \"https://v:8200\"\nmount = \"my secrets\"\nauth = { method = \"token\", token_file = \"/t\" }\n",
        "store.mount",
        &["letters, digits"],
    );
    one_error(
        "[store]\ntype = \"vault\"\naddress = \"https://v:8200\"\n",
        "store.auth",
        &["missing key `auth`"],
    );
    // Embedded-only keys are not vault keys.
    let errs = errors(
        "[store]\ntype = \"vault\"\naddress = \"https://v:8200\"\npath = \"x\"\nauth = { method = \"token\", token_file = \"/t\" }\n",
    );
    assert!(errs.to_string().contains("store.path"), "{errs}");
}

#[test]
fn vault_store_takes_several_nodes_of_one_cluster() {
    let auth = "auth = { method = \"token\", token_file = \"/t\" }\n";
    let cfg = load_ok(&format!(
        "[store]\ntype = \"vault\"\naddresses = [\"https://vault-0:8200\", \"https://vault-1:8200\", \"https://vault-2:8200/\"]\n{auth}"
    ));
    let StoreConfig::Vault(v) = &cfg.store else {
        panic!("expected a vault store");
    };
    assert_eq!(v.address, "https://vault-0:8200");
    assert_eq!(
        v.other_addresses,
        ["https://vault-1:8200", "https://vault-2:8200/"]
    );
    assert_eq!(
        v.nodes().collect::<Vec<_>>(),
        [
            "https://vault-0:8200",
            "https://vault-1:8200",
            "https://vault-2:8200/"
        ]
    );
    // `address` and `addresses` together: `address` is the first node.
    let cfg = load_ok(&format!(
        "[store]\ntype = \"vault\"\naddress = \"https://vault:8200\"\naddresses = [\"https://vault-1:8200\"]\n{auth}"
    ));
    let StoreConfig::Vault(v) = &cfg.store else {
        panic!("expected a vault store");
    };
    assert_eq!(
        v.nodes().collect::<Vec<_>>(),
        ["https://vault:8200", "https://vault-1:8200"]
    );
    // One address alone is one node, as before.
    let cfg = load_ok(&format!(
        "[store]\ntype = \"vault\"\naddress = \"https://vault:8200\"\n{auth}"
    ));
    let StoreConfig::Vault(v) = &cfg.store else {
        panic!("expected a vault store");
    };
    assert!(v.other_addresses.is_empty());
}

#[test]
fn vault_store_nodes_are_checked_one_by_one_with_their_place() {
    let auth = "auth = { method = \"token\", token_file = \"/t\" }\n";
    let store = |keys: &str| format!("[store]\ntype = \"vault\"\n{keys}\n{auth}");
    // The same node twice, however written: the second one is named, at its place.
    let e = one_error(
        &store("addresses = [\"https://vault-0:8200\", \"https://VAULT-0:8200/\"]"),
        "store.addresses[1]",
        &["same Vault node as store.addresses[0]"],
    );
    let at = e.location.expect("a location");
    assert_eq!((at.line, at.column), (3, 38));
    one_error(
        &store("address = \"https://vault-0:8200\"\naddresses = [\"https://vault-0:8200\"]"),
        "store.addresses[0]",
        &["same Vault node as store.address"],
    );
    one_error(
        &store("addresses = [\"https://vault-0:8200\", \"vault-1:8200\"]"),
        "store.addresses[1]",
        &["not a Vault address", "https://"],
    );
    one_error(
        &store("addresses = [\"https://vault-0:8200/v1/secret\"]"),
        "store.addresses[0]",
        &["no path"],
    );
    one_error(
        &store("addresses = [\"https://vault-0:8200\", 8200]"),
        "store.addresses[1]",
        &["expected a string"],
    );
    one_error(
        &store("addresses = []"),
        "store.addresses",
        &["is empty", "leave the key out"],
    );
    // The plain-http rule holds for every node, and one cluster speaks one scheme.
    one_error(
        &store("addresses = [\"http://127.0.0.1:8200\", \"http://vault-1:8200\"]"),
        "store.addresses[1]",
        &["plain http", "allow_insecure_http = true"],
    );
    one_error(
        &store("addresses = [\"https://vault-0:8200\", \"http://127.0.0.1:8200\"]"),
        "store.addresses[1]",
        &["same scheme", "store.addresses[0] uses https://"],
    );
    one_error(
        &store(
            "addresses = [\"http://127.0.0.1:8200\", \"http://127.0.0.2:8200\"]\nca_file = \"/ca.pem\"",
        ),
        "store.ca_file",
        &["plain http"],
    );
    // Neither key: the one error names both.
    one_error(
        &store(""),
        "store.address",
        &["missing key `address`", "`addresses`"],
    );
    // Every problem at once.
    let errs = errors(&store(
        "addresses = [\"ftp://a\", \"https://b:8200\", \"https://b:8200\"]",
    ));
    let keys: Vec<&str> = errs.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["store.addresses[0]", "store.addresses[2]"], "{errs}");
}

#[test]
fn cache_bounds_have_defaults_and_limits() {
    let c = load_ok("");
    assert_eq!(c.cache, CacheConfig::default());
    assert_eq!(
        (c.cache.ttl, c.cache.max_entries),
        (Duration::from_secs(60), 10_000)
    );
    let c = load_ok("[cache]\nttl = \"5m\"\nmax_entries = 0\n");
    assert_eq!(
        c.cache,
        CacheConfig {
            ttl: Duration::from_secs(300),
            max_entries: 0
        }
    );
    one_error("[cache]\nttl = \"2h\"\n", "cache.ttl", &["at most 1h"]);
    one_error(
        "[cache]\nmax_entries = -1\n",
        "cache.max_entries",
        &["between 0 and 10000000"],
    );
    let e = one_error("[cache]\nsize = 10\n", "cache.size", &["unknown"]);
    assert_eq!(e.location.map(|l| l.line), Some(2));
}

#[test]
fn a_vault_ca_file_needs_an_https_address() {
    one_error(
        r#"
[store]
type = "vault"
address = "http://vault:8200"
allow_insecure_http = true
ca_file = "/etc/vault/ca.pem"
auth = { method = "token", token_file = "/vault/token" }
"#,
        "store.ca_file",
        &["plain http", "https"],
    );
}

#[test]
fn vault_plain_http_off_loopback_needs_allow_insecure_http() {
    let text = "[store]\ntype = \"vault\"\naddress = \"http://vault.vault.svc:8200\"\nauth = { method = \"token\", token_file = \"/t\" }\n";
    let e = one_error(
        text,
        "store.address",
        &["plain http", "loopback", "allow_insecure_http = true"],
    );
    let at = e.location.expect("a location");
    assert_eq!((at.line, at.column), (3, 11));
    let allowed = text.replace("[store]\n", "[store]\nallow_insecure_http = true\n");
    let cfg = load_ok(&allowed);
    let StoreConfig::Vault(v) = &cfg.store else {
        panic!("expected a vault store");
    };
    assert!(v.allow_insecure_http);
    // Loopback needs no opt-in: a Vault agent or dev server on this machine.
    for address in [
        "http://127.0.0.1:8200",
        "http://127.1.2.3:8200",
        "http://[::1]:8200",
        "http://localhost:8200",
    ] {
        load_ok(&text.replace("http://vault.vault.svc:8200", address));
    }
    load_ok(&text.replace("http://", "https://"));
}

#[test]
fn vault_proxy_is_an_http_url_and_never_quoted_with_its_password() {
    let base = "[store]\ntype = \"vault\"\naddress = \"https://vault:8200\"\nauth = { method = \"token\", token_file = \"/t\" }\n";
    let cfg = load_ok(&format!(
        "{base}proxy = \"http://u:pw@proxy.internal:3128\"\n"
    ));
    let StoreConfig::Vault(v) = &cfg.store else {
        panic!("expected a vault store");
    };
    assert_eq!(
        v.proxy.as_ref().map(|p| p.to_string()).as_deref(),
        Some("http://***@proxy.internal:3128")
    );
    let errs = errors(&format!(
        "{base}proxy = \"socks5://alice:s3cret@proxy:1080\"\n"
    ));
    let text = errs.to_string();
    assert!(
        text.contains("store.proxy") && text.contains("test.toml:5:9"),
        "{text}"
    );
    assert!(
        text.contains("not supported") && !text.contains("s3cret"),
        "{text}"
    );
    one_error(
        &format!("{base}proxy = \"http://proxy:3128/x\"\n"),
        "store.proxy",
        &["no path"],
    );
    one_error(&format!("{base}proxy = 3128\n"), "store.proxy", &[]);
}
