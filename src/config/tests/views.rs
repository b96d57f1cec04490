//! `[[publish]] type = "vault"`: the view keys, their defaults from a Vault store, and
//! every refusal `rotor check` makes (exit 64 comes from any config error).

use super::*;
use crate::domain::SecretRef;
use crate::store::vault::VaultAuth;

const VAULT_STORE: &str = r#"
[store]
type = "vault"
address = "https://vault.vault.svc:8200"
mount = "secret"
path_prefix = "prod/tenants"
auth = { method = "token", token_file = "/vault/token" }
"#;

/// Two secrets the view tests publish: a postgres credential (fields `username`,
/// `password`, `url`) and a plain token. Shared with the AWS view tests.
pub(super) const SECRETS: &str = r#"
[[secrets]]
tenant = "team"
key = "db"
policy = "database_credentials"
target = { type = "postgres", admin_url_file = "f", roles = ["app_blue", "app_green"] }

[[secrets]]
tenant = "team"
key = "api"
policy = "api_keys"
"#;

fn doc(views: &str) -> String {
    format!("{VAULT_STORE}{SECRETS}{views}")
}

#[test]
fn a_view_takes_the_vault_store_defaults() {
    let c = load_ok(&doc(r#"
[[publish]]
type = "vault"
path = "rotor/database"
fields = { username = "team/db#username", password = "team/db#password", api = "team/api" }
"#));
    assert!(c.publish.is_empty(), "a view is not a directory");
    let v = &c.views[0];
    assert_eq!(v.address, "https://vault.vault.svc:8200");
    assert_eq!(v.mount, "secret");
    assert_eq!(v.path, "rotor/database");
    assert_eq!(v.name(), "secret/rotor/database");
    assert_eq!(
        v.auth,
        VaultAuth::Token {
            token_file: "/vault/token".into()
        }
    );
    assert_eq!(v.interval, Duration::from_secs(1));
    let pw = &v.fields["password"];
    assert_eq!(pw.secret, SecretRef::new("team", "db").unwrap());
    assert_eq!(pw.json_field.as_deref(), Some("password"));
    assert_eq!(v.fields["api"].json_field, None);
}

#[test]
fn a_view_with_its_own_vault_needs_no_vault_store() {
    let c = load_ok(&format!(
        r#"{SECRETS}
[[publish]]
type = "vault"
address = "https://other-vault:8200"
mount = "kv"
path = "apps/db"
auth = {{ method = "kubernetes", role = "rotor", token_file = "/var/run/sa" }}
proxy = "http://proxy:3128"
interval = "5s"
fields = {{ password = "team/db#password" }}
"#
    ));
    let v = &c.views[0];
    assert_eq!(v.address, "https://other-vault:8200");
    assert_eq!(v.mount, "kv");
    assert!(v.proxy.is_some());
    assert_eq!(v.interval, Duration::from_secs(5));
    assert!(matches!(v.auth, VaultAuth::Kubernetes { ref mount, .. } if mount == "kubernetes"));
}

#[test]
fn directories_are_unchanged_and_refuse_view_keys() {
    let c = load_ok(&doc(
        "[[publish]]\npath = \"/mnt/s\"\nsecrets = [\"team/api\"]\n",
    ));
    assert_eq!(c.publish.len(), 1);
    assert!(c.views.is_empty());
    one_error(
        &doc(
            "[[publish]]\ntype = \"directory\"\npath = \"/mnt/s\"\nsecrets = [\"team/api\"]\nmount = \"secret\"\n",
        ),
        "publish[0].mount",
        &["only applies to type = \"vault\""],
    );
}

#[test]
fn view_refusals_name_the_key_and_line() {
    let cases: &[(&str, &str, &[&str])] = &[
        // An unknown secret.
        (
            "[[publish]]\ntype = \"vault\"\npath = \"v\"\nfields = { a = \"team/nope\" }\n",
            "publish[0].fields.a",
            &["team/nope is not a managed secret"],
        ),
        // A JSON field the postgres target's value does not have.
        (
            "[[publish]]\ntype = \"vault\"\npath = \"v\"\nfields = { a = \"team/db#token\" }\n",
            "publish[0].fields.a",
            &["no field \"token\"", "username, password, url"],
        ),
        // A JSON field of a plain value (a none target with a password generator).
        (
            "[[publish]]\ntype = \"vault\"\npath = \"v\"\nfields = { a = \"team/api#password\" }\n",
            "publish[0].fields.a",
            &["no field \"password\"", "not JSON"],
        ),
        // Inside the store's path_prefix on the store's mount.
        (
            "[[publish]]\ntype = \"vault\"\npath = \"prod/tenants/views/db\"\nfields = { a = \"team/api\" }\n",
            "publish[0].path",
            &["inside the store's path_prefix"],
        ),
        // Plain http to a host that is not loopback.
        (
            "[[publish]]\ntype = \"vault\"\naddress = \"http://vault.internal:8200\"\npath = \"v\"\nfields = { a = \"team/api\" }\n",
            "publish[0].address",
            &["plain http", "allow_insecure_http"],
        ),
        (
            "[[publish]]\ntype = \"vault\"\npath = \"v\"\nsecrets = [\"team/api\"]\nfields = { a = \"team/api\" }\n",
            "publish[0].secrets",
            &["type = \"directory\""],
        ),
        (
            "[[publish]]\ntype = \"s3\"\npath = \"v\"\n",
            "publish[0].type",
            &["\"directory\"", "\"vault\""],
        ),
        (
            "[[publish]]\ntype = \"vault\"\npath = \"v\"\nfields = { a = \"team\" }\n",
            "publish[0].fields.a",
            &["tenant/key#json_field"],
        ),
        (
            "[[publish]]\ntype = \"vault\"\npath = \"v\"\nfields = { a = \"team/api\", a_version = \"team/api\" }\n",
            "publish[0].fields.a_version",
            &["collides"],
        ),
        (
            "[[publish]]\ntype = \"vault\"\npath = \"v\"\n",
            "publish[0].fields",
            &["missing key `fields`"],
        ),
    ];
    for (views, key, needles) in cases {
        let text = doc(views);
        let e = one_error(&text, key, needles);
        let at = e.location.expect("a line and column");
        // Every case's `[[publish]]` starts after the store and secrets.
        let publish_line = text.lines().position(|l| l == "[[publish]]").unwrap() + 1;
        assert!(at.line >= publish_line as _, "{key}: {e:?}");
    }
}

#[test]
fn two_views_of_one_document_are_refused() {
    let e = one_error(
        &doc(
            "[[publish]]\ntype = \"vault\"\npath = \"rotor/db\"\nfields = { a = \"team/api\" }\n\
             [[publish]]\ntype = \"vault\"\nmount = \"secret\"\naddress = \"https://vault.vault.svc:8200/\"\npath = \"/rotor/db/\"\nfields = { b = \"team/db#url\" }\n",
        ),
        "publish[1].path",
        &["already written by publish[0]"],
    );
    assert!(e.location.is_some());
    // The same path on another mount is another document.
    load_ok(&doc(
        "[[publish]]\ntype = \"vault\"\npath = \"rotor/db\"\nfields = { a = \"team/api\" }\n\
         [[publish]]\ntype = \"vault\"\nmount = \"kv\"\npath = \"rotor/db\"\nfields = { b = \"team/db#url\" }\n",
    ));
}

#[test]
fn insecure_http_is_accepted_when_allowed_or_loopback() {
    load_ok(&doc(
        "[[publish]]\ntype = \"vault\"\naddress = \"http://vault.internal:8200\"\nallow_insecure_http = true\npath = \"v\"\nfields = { a = \"team/api\" }\n",
    ));
    load_ok(&doc(
        "[[publish]]\ntype = \"vault\"\naddress = \"http://127.0.0.1:8200\"\npath = \"v\"\nfields = { a = \"team/api\" }\n",
    ));
}

#[test]
fn a_view_without_a_vault_store_needs_address_and_auth() {
    let errs = errors(&format!(
        "{SECRETS}[[publish]]\ntype = \"vault\"\npath = \"v\"\nfields = {{ a = \"team/api\" }}\n"
    ));
    let keys: Vec<&str> = errs.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["publish[0].address", "publish[0].auth"], "{errs}");
}

/// A view's `auth` is checked by the store's own rules, each problem named under the view.
#[test]
fn a_views_auth_is_checked_as_the_stores_is() {
    let errs = errors(&format!(
        "{SECRETS}[[publish]]\ntype = \"vault\"\naddress = \"https://vault.internal:8200\"\n\
         auth = {{ method = \"kubernetes\", token_file = \" \", mount = \"a//b\" }}\n\
         path = \"v\"\nfields = {{ a = \"team/api\" }}\n"
    ));
    let keys: Vec<&str> = errs.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "publish[0].auth.role",
            "publish[0].auth.token_file",
            "publish[0].auth.mount"
        ],
        "{errs}"
    );
    let errs = errors(&format!(
        "{SECRETS}[[publish]]\ntype = \"vault\"\naddress = \"https://vault.internal:8200\"\n\
         auth = {{ method = \"ldap\", token_file = \"/t\" }}\npath = \"v\"\nfields = {{ a = \"team/api\" }}\n"
    ));
    assert!(
        errs.to_string().contains("publish[0].auth.method")
            && errs
                .to_string()
                .contains("expected \"kubernetes\" or \"token\""),
        "{errs}"
    );
}
