//! Target keys in the configuration: every type parses into its model, and the mistakes
//! an operator makes are named with their key (`single` with a grace period, the wrong
//! number of roles, a JWKS algorithm whose generator does not match, a plain-http webhook
//! off loopback, an unknown redis `persist`).
//! The `none` target's failure hook is tested when the `test-util` feature gives it.

use super::*;
use crate::target::TargetConfig;
use crate::target::exec::config::ExecConfig;
use crate::target::jwks::Algorithm;
use crate::target::jwks::config::JwksConfig;
use crate::target::none::config::NoneConfig;
use crate::target::postgres::Strategy;
use crate::target::postgres::config::PostgresConfig;
use crate::target::redis::Persist;
use crate::target::redis::config::RedisConfig;
use crate::target::webhook::HookUrl;
use crate::target::webhook::config::WebhookConfig;

fn load(policies: &str, target: &str) -> Result<Config, ConfigErrors> {
    let text = format!(
        r#"
{policies}
[[secrets]]
tenant = "tenant1"
key = "k"
policy = "p"
target = {target}
"#
    );
    Config::from_str_with_env(&text, "test.toml", &|_| None)
}

const DB: &str = r#"[policies.p]
interval = "90d"
grace = "24h"
generator = { type = "password", length = 32 }"#;

fn target(c: Config) -> TargetConfig {
    (*c.secrets[0].target).clone()
}

fn errors(r: Result<Config, ConfigErrors>) -> String {
    r.expect_err("refused").to_string()
}

#[test]
fn every_target_type_parses() {
    let t = target(
        load(
            DB,
            r#"{ type = "postgres", admin_url_file = "secrets/pg-admin-url", strategy = "alternating", roles = ["app_blue", "app_green"] }"#,
        )
        .unwrap(),
    );
    assert_eq!(
        t,
        TargetConfig::Postgres(PostgresConfig {
            admin_url_file: PathBuf::from("secrets/pg-admin-url"),
            strategy: Strategy::Alternating,
            roles: vec!["app_blue".into(), "app_green".into()],
            terminate_sessions: false,
        })
    );
    let t = target(
        load(
            DB,
            r#"{ type = "postgres", admin_url_file = "f", roles = ["a", "b"], terminate_sessions = true }"#,
        )
        .unwrap(),
    );
    assert!(matches!(
        t,
        TargetConfig::Postgres(PostgresConfig {
            terminate_sessions: true,
            ..
        })
    ));
    let t = target(
        load(
            DB,
            r#"{ type = "redis", admin_url_file = "secrets/redis-admin-url", user = "app" }"#,
        )
        .unwrap(),
    );
    assert_eq!(
        t,
        TargetConfig::Redis(RedisConfig {
            admin_url_file: PathBuf::from("secrets/redis-admin-url"),
            user: "app".into(),
            persist: Persist::Auto,
        })
    );
    let jwt = r#"[policies.p]
interval = "180d"
grace = "48h"
generator = { type = "ed25519" }"#;
    let t = target(
        load(
            jwt,
            r#"{ type = "jwks", path = "out/jwks.json", algorithm = "ed25519" }"#,
        )
        .unwrap(),
    );
    assert_eq!(
        t,
        TargetConfig::Jwks(JwksConfig {
            path: PathBuf::from("out/jwks.json"),
            algorithm: Algorithm::Ed25519
        })
    );
    let t = target(
        load(
            DB,
            r#"{ type = "exec", apply = ["/bin/apply"], test = ["/bin/test", "-q"], revoke = ["/bin/revoke"], timeout = "30s" }"#,
        )
        .unwrap(),
    );
    assert!(
        matches!(t, TargetConfig::Exec(ExecConfig { timeout, .. }) if timeout == Duration::from_secs(30))
    );
    let t = target(
        load(
            DB,
            r#"{ type = "webhook", url = "http://127.0.0.1:9000/rotate", hmac_key_file = "secrets/hook.key" }"#,
        )
        .unwrap(),
    );
    assert!(matches!(
        t,
        TargetConfig::Webhook(WebhookConfig { ca_file: None, .. })
    ));
    let t = target(
        load(
            DB,
            r#"{ type = "webhook", url = "https://api.example.com/v1/rotate", hmac_key_file = "secrets/hook.key", ca_file = "/etc/rotor/ca.pem" }"#,
        )
        .unwrap(),
    );
    assert_eq!(
        t,
        TargetConfig::Webhook(WebhookConfig {
            url: HookUrl::parse("https://api.example.com/v1/rotate").unwrap(),
            hmac_key_file: PathBuf::from("secrets/hook.key"),
            ca_file: Some(PathBuf::from("/etc/rotor/ca.pem")),
            timeout: Duration::from_secs(30),
            proxy: None,
        })
    );
}

#[test]
fn single_with_a_grace_period_is_refused_with_the_reason() {
    let e = errors(load(
        DB,
        r#"{ type = "postgres", admin_url_file = "f", strategy = "single", roles = ["app"] }"#,
    ));
    assert!(e.contains("secrets[0].target.strategy"), "{e}");
    assert!(e.contains("grace"), "{e}");
    assert!(e.contains("alternating"), "{e}");
    assert!(
        load(
            DB,
            r#"{ type = "postgres", admin_url_file = "f", strategy = "single", roles = ["app"], acknowledge_no_grace = true }"#
        )
        .is_ok()
    );
}

#[test]
fn terminate_sessions_needs_two_roles() {
    let e = errors(load(
        DB,
        r#"{ type = "postgres", admin_url_file = "f", strategy = "single", roles = ["app"], acknowledge_no_grace = true, terminate_sessions = true }"#,
    ));
    assert!(
        e.contains("target.terminate_sessions") && e.contains("alternating"),
        "{e}"
    );
    let e = errors(load(
        DB,
        r#"{ type = "postgres", admin_url_file = "f", roles = ["a", "b"], terminate_sessions = "yes" }"#,
    ));
    assert!(e.contains("target.terminate_sessions"), "{e}");
}

#[test]
fn mistakes_are_named_with_their_key() {
    let e = errors(load(
        DB,
        r#"{ type = "postgres", admin_url_file = "f", roles = ["app_blue"] }"#,
    ));
    assert!(e.contains("target.roles") && e.contains("exactly 2"), "{e}");
    let e = errors(load(
        DB,
        r#"{ type = "postgres", admin_url_file = "f", roles = ["App-Blue", "x"] }"#,
    ));
    assert!(e.contains("target.roles[0]"), "{e}");
    let e = errors(load(DB, r#"{ type = "postgres", roles = ["a", "b"] }"#));
    assert!(e.contains("target.admin_url_file"), "{e}");
    let e = errors(load(
        DB,
        r#"{ type = "postgres", admin_url = "postgres://x:y@h/db", roles = ["a", "b"] }"#,
    ));
    assert!(e.contains("admin_url"), "inline URLs are not a key: {e}");
    let e = errors(load(DB, r#"{ type = "jwks", path = "out/jwks.json" }"#));
    assert!(
        e.contains("target.algorithm") && e.contains("ed25519"),
        "{e}"
    );
    let e = errors(load(
        DB,
        r#"{ type = "webhook", url = "http://10.1.2.3/x", hmac_key_file = "k" }"#,
    ));
    assert!(e.contains("target.url") && e.contains("loopback"), "{e}");
    assert!(e.contains("use https://"), "{e}");
    // A refused URL is quoted without its userinfo and query, which often hold credentials.
    let e = errors(load(
        DB,
        r#"{ type = "webhook", url = "http://hook:pa55word@10.1.2.3/x?token=t0ken", hmac_key_file = "k" }"#,
    ));
    assert!(e.contains("target.url") && e.contains("10.1.2.3/x"), "{e}");
    assert!(!e.contains("pa55word") && !e.contains("t0ken"), "{e}");
    let e = errors(load(
        DB,
        r#"{ type = "webhook", url = "http://127.0.0.1:9000/x", hmac_key_file = "k", ca_file = "ca.pem" }"#,
    ));
    assert!(
        e.contains("target.ca_file") && e.contains("plain http"),
        "{e}"
    );
    let e = errors(load(
        DB,
        r#"{ type = "webhook", url = "https://hooks.example.com/x", hmac_key_file = "k", ca_file = "" }"#,
    ));
    assert!(e.contains("target.ca_file") && e.contains("empty"), "{e}");
    let e = errors(load(
        DB,
        r#"{ type = "exec", apply = ["/bin/true"], ca_file = "ca.pem" }"#,
    ));
    assert!(e.contains("ca_file"), "ca_file is a webhook key only: {e}");
    let e = errors(load(DB, r#"{ type = "exec", apply = [] }"#));
    assert!(e.contains("target.apply"), "{e}");
    let e = errors(load(DB, r#"{ type = "redis", admin_url_file = "f" }"#));
    assert!(e.contains("target.user"), "{e}");
}

#[test]
fn redis_persist_defaults_to_auto_and_takes_three_values() {
    let persist = |extra: &str| match target(
        load(
            DB,
            &format!(r#"{{ type = "redis", admin_url_file = "f", user = "app"{extra} }}"#),
        )
        .unwrap(),
    ) {
        TargetConfig::Redis(RedisConfig { persist, .. }) => persist,
        other => panic!("not a redis target: {other:?}"),
    };
    assert_eq!(persist(""), Persist::Auto);
    assert_eq!(persist(r#", persist = "auto""#), Persist::Auto);
    assert_eq!(persist(r#", persist = "acl_save""#), Persist::AclSave);
    assert_eq!(persist(r#", persist = "none""#), Persist::None);

    for bad in [r#""always""#, r#""ACL_SAVE""#, r#""""#] {
        let e = errors(load(
            DB,
            &format!(
                r#"{{ type = "redis", admin_url_file = "f", user = "app", persist = {bad} }}"#
            ),
        ));
        assert!(e.contains("secrets[0].target.persist"), "{e}");
        for allowed in ["\"auto\"", "\"acl_save\"", "\"none\""] {
            assert!(e.contains(allowed), "{allowed} is named: {e}");
        }
    }
    let e = errors(load(
        DB,
        r#"{ type = "redis", admin_url_file = "f", user = "app", persist = true }"#,
    ));
    assert!(e.contains("target.persist"), "a boolean is refused: {e}");
    let e = errors(load(
        DB,
        r#"{ type = "postgres", admin_url_file = "f", roles = ["a", "b"], persist = "auto" }"#,
    ));
    assert!(e.contains("persist"), "persist is a redis key only: {e}");
}

#[cfg(feature = "test-util")]
#[test]
fn none_target_failure_hook() {
    let c = load_ok(
        r#"
[[secrets]]
tenant = "t"
key = "k"
policy = "api_keys"
target = { type = "none", fail_file = "/tmp/broken" }
"#,
    );
    assert_eq!(
        *c.secrets[0].target,
        TargetConfig::None(NoneConfig {
            delay: Duration::ZERO,
            fail: vec!["apply".into()],
            fail_file: Some(PathBuf::from("/tmp/broken")),
        })
    );
    one_error(
        r#"
[[secrets]]
tenant = "t"
key = "k"
policy = "api_keys"
target = { type = "none", fail = ["explode"] }
"#,
        "secrets[0].target.fail[0]",
        &["apply, test, promote, revoke"],
    );
}

#[test]
fn exec_env_allow_list_takes_valid_names_only() {
    let t = target(
        load(
            DB,
            r#"{ type = "exec", apply = ["/bin/apply"], env = ["AWS_REGION", "http_proxy"] }"#,
        )
        .unwrap(),
    );
    match t {
        TargetConfig::Exec(ExecConfig { env, .. }) => {
            assert_eq!(env, vec!["AWS_REGION".to_owned(), "http_proxy".to_owned()])
        }
        other => panic!("{other:?}"),
    }
    let t = target(load(DB, r#"{ type = "exec", apply = ["/bin/apply"] }"#).unwrap());
    assert!(matches!(t, TargetConfig::Exec(ExecConfig { ref env, .. }) if env.is_empty()));
    let e = errors(load(
        DB,
        r#"{ type = "exec", apply = ["/bin/apply"], env = ["GOOD", "BAD-NAME", "9LIVES"] }"#,
    ));
    // The target line is line 10 of the document.
    assert!(
        e.contains("test.toml:10:")
            && e.contains("target.env: is not an environment variable name")
            && e.contains("(got \"BAD-NAME\")")
            && e.contains("(got \"9LIVES\")"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 2, "{e}");
    let e = errors(load(
        DB,
        r#"{ type = "exec", apply = ["/bin/apply"], env = "PATH" }"#,
    ));
    assert!(e.contains("target.env"), "{e}");
}
