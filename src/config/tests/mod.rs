//! Tests of the whole config pipeline: the contract shape, defaults and built-ins, every
//! refusal rule, all-errors-at-once reporting with line:column, and environment overrides.
//! The keys of one integration are tested by topic in the files beside this one; every
//! shipped config file is loaded in [`files`].

mod agent;
mod fast;
mod files;
mod ha;
mod notify;
mod proxies;
mod server;
mod sets;
mod stores;
mod targets;
mod views;
mod views_aws;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::generator::{CharClasses, Encoding, GeneratorSpec};
use crate::schedule::ScheduleKind;

const DAY: Duration = Duration::from_secs(86_400);
const HOUR: Duration = Duration::from_secs(3_600);

fn no_env(_: &str) -> Option<String> {
    None
}

fn load(text: &str) -> Result<Config, ConfigErrors> {
    Config::from_str_with_env(text, "test.toml", &no_env)
}

fn load_ok(text: &str) -> Config {
    match load(text) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got:\n{e}"),
    }
}

fn errors(text: &str) -> ConfigErrors {
    match load(text) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e,
    }
}

/// Asserts exactly one error, on `key`, whose message contains every `needle`.
fn one_error(text: &str, key: &str, needles: &[&str]) -> ConfigError {
    let errs = errors(text);
    assert_eq!(errs.errors.len(), 1, "expected one error, got:\n{errs}");
    let e = errs.errors[0].clone();
    assert_eq!(e.key, key, "{errs}");
    for needle in needles {
        assert!(e.message.contains(needle), "{needle:?} not in: {errs}");
    }
    e
}

const CONTRACT: &str = r#"
[server]
listen = "127.0.0.1:8080"
admin_token_file = "data/admin.token"
[store]
type = "embedded"
path = "data/rotor.redb"
master_key_file = "data/master.key"
[runtime]
max_concurrent_rotations = 8
shutdown_timeout = "20s"
retry_backoff = "10s"
retry_backoff_max = "30m"
hibernate_after = "45s"
[[mounts]]
path = "/mnt/secrets"
debounce = "1s"
poll_interval = "5s"
health_check_interval = "30s"
critical = ["database-*", "jwt-secret"]
[policies.api_keys]
interval = "30d"
grace = "2h"
jitter = "10m"
window = { cron = "0 1 * * *", duration = "3h" }
generator = { type = "token", bytes = 32, prefix = "sk_" }
max_attempts = 5
expire_after = "grace"
[policies.nightly]
cron = "0 2 * * 0"
timezone = "Europe/Berlin"
grace = "1h"
generator = { type = "password", length = 40, symbols = true }
expire_after = "grace_and_consumers"
max_grace_extension = "24h"
[[secrets]]
tenant = "tenant1"
key = "api_keys"
policy = "api_keys"
target = { type = "none" }
[[secrets]]
tenant = "tenant2"
key = "db"
policy = "nightly"
"#;

/// The contract file and an empty one both use the default listen address, admin token
/// file and embedded store.
fn assert_default_server_and_store(c: &Config) {
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.admin_token_file, PathBuf::from("data/admin.token"));
    assert_eq!(c.server.max_connections, 4096);
    assert_eq!(
        c.store,
        StoreConfig::Embedded {
            path: "data/rotor.redb".into(),
            master_key_file: "data/master.key".into()
        }
    );
}

#[test]
fn contract_shape_loads() {
    let c = load_ok(CONTRACT);
    assert_default_server_and_store(&c);
    assert_eq!(
        c.runtime,
        RuntimeConfig {
            max_concurrent_rotations: 8,
            shutdown_timeout: Duration::from_secs(20),
            retry_backoff: Duration::from_secs(10),
            retry_backoff_max: Duration::from_secs(1_800),
            first_versions_in_bulk: true,
            hibernate_after: Duration::from_secs(45),
        }
    );
    assert!(c.watch.enabled);
    assert_eq!(
        c.mounts,
        vec![MountConfig {
            path: "/mnt/secrets".into(),
            debounce: Duration::from_secs(1),
            poll_interval: Some(Duration::from_secs(5)),
            health_check_interval: Duration::from_secs(30),
            critical: vec!["database-*".into(), "jwt-secret".into()],
            reload: None,
            files: Default::default(),
        }]
    );
    let api = c.policy("api_keys").expect("api_keys");
    assert_eq!(api.schedule.kind, ScheduleKind::Interval(30 * DAY));
    assert_eq!(api.schedule.jitter, Some(Duration::from_secs(600)));
    let window = api.schedule.window.as_ref().expect("window");
    assert_eq!(window.expr, "0 1 * * *");
    assert_eq!(window.duration, 3 * HOUR);
    assert_eq!(window.tz, chrono_tz::UTC);
    assert_eq!(api.grace, 2 * HOUR);
    assert_eq!(api.max_attempts, 5);
    assert_eq!(api.expire_after, ExpireAfter::Grace);
    assert_eq!(
        api.generator,
        GeneratorSpec::Token {
            bytes: 32,
            prefix: "sk_".into(),
            encoding: Encoding::Base64Url
        }
    );
    let nightly = c.policy("nightly").expect("nightly");
    match &nightly.schedule.kind {
        ScheduleKind::Cron { expr, tz, .. } => {
            assert_eq!(expr, "0 2 * * 0");
            assert_eq!(*tz, chrono_tz::Europe::Berlin);
        }
        other => panic!("expected cron, got {other:?}"),
    }
    assert_eq!(
        nightly.expire_after,
        ExpireAfter::GraceAndConsumers {
            max_extension: 24 * HOUR
        }
    );
    assert_eq!(
        nightly.generator,
        GeneratorSpec::Password {
            length: 40,
            classes: CharClasses {
                lower: true,
                upper: true,
                digits: true,
                symbols: true
            }
        }
    );
    assert_eq!(c.secrets.len(), 2);
    assert_eq!(c.secrets[0].secret.to_string(), "tenant1/api_keys");
    assert_eq!(*c.secrets[0].target, crate::target::TargetConfig::default());
    assert_eq!(c.secrets[1].policy.name, "nightly");
    // Every policy is validated once and shared.
    assert!(std::sync::Arc::ptr_eq(
        &c.secrets[0].policy,
        c.policy("api_keys").expect("api_keys")
    ));
}

#[test]
fn empty_file_gives_defaults_and_builtins() {
    let c = load_ok("");
    assert_default_server_and_store(&c);
    assert_eq!(
        c.runtime,
        RuntimeConfig {
            max_concurrent_rotations: 16,
            shutdown_timeout: Duration::from_secs(10),
            retry_backoff: Duration::from_secs(30),
            retry_backoff_max: HOUR,
            first_versions_in_bulk: true,
            hibernate_after: Duration::from_secs(30),
        }
    );
    assert!(c.watch.enabled);
    assert!(c.mounts.is_empty() && c.secrets.is_empty());
    let names: Vec<&str> = c.policies.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "api_keys",
            "database_credentials",
            "encryption_keys",
            "jwt_secrets"
        ]
    );
    let db = c.policy("database_credentials").expect("db");
    assert_eq!(db.schedule.kind, ScheduleKind::Interval(90 * DAY));
    assert_eq!(db.grace, 24 * HOUR);
    assert!(matches!(
        db.generator,
        GeneratorSpec::Password { length: 32, .. }
    ));
    let jwt = c.policy("jwt_secrets").expect("jwt");
    assert_eq!(jwt.schedule.kind, ScheduleKind::Interval(180 * DAY));
    assert_eq!(jwt.grace, 48 * HOUR);
    assert_eq!(jwt.generator, GeneratorSpec::Hmac { bytes: 64 });
    let enc = c.policy("encryption_keys").expect("enc");
    assert_eq!(enc.schedule.kind, ScheduleKind::Manual);
    assert_eq!(enc.grace, 7 * DAY);
    assert_eq!(enc.generator, GeneratorSpec::Hmac { bytes: 32 });
    for p in c.policies.values() {
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.expire_after, ExpireAfter::Grace);
    }
}

#[test]
fn override_replaces_only_named_keys() {
    let c = load_ok("[policies.api_keys]\ngrace = \"1h\"\nmax_attempts = 3\n");
    let api = c.policy("api_keys").expect("api_keys");
    assert_eq!(api.grace, HOUR);
    assert_eq!(api.max_attempts, 3);
    assert_eq!(api.schedule.kind, ScheduleKind::Interval(30 * DAY));
    assert!(matches!(
        api.generator,
        GeneratorSpec::Token { bytes: 32, .. }
    ));

    // Naming a schedule key replaces the built-in schedule as a whole.
    let c = load_ok("[policies.database_credentials]\ncron = \"0 3 * * 0\"\n");
    let db = c.policy("database_credentials").expect("db");
    assert!(matches!(db.schedule.kind, ScheduleKind::Cron { .. }));
    assert_eq!(db.grace, 24 * HOUR);

    let c = load_ok("[policies.jwt_secrets]\nmanual = true\n");
    assert_eq!(
        c.policy("jwt_secrets").expect("jwt").schedule.kind,
        ScheduleKind::Manual
    );
}

#[test]
fn window_follows_the_policy_time_zone_unless_it_has_its_own() {
    let c = load_ok(
        r#"
[policies.a]
cron = "0 2 * * *"
timezone = "Europe/Berlin"
grace = "1h"
window = { cron = "0 1 * * *", duration = "3h" }
generator = { type = "hmac" }
[policies.b]
interval = "1d"
grace = "1h"
window = { cron = "0 1 * * *", duration = "3h", timezone = "America/New_York" }
generator = { type = "ed25519" }
"#,
    );
    let tz = |name: &str| {
        c.policy(name)
            .and_then(|p| p.schedule.window.as_ref())
            .map(|w| w.tz)
    };
    assert_eq!(tz("a"), Some(chrono_tz::Europe::Berlin));
    assert_eq!(tz("b"), Some(chrono_tz::America::New_York));
}

#[test]
fn unknown_keys_are_refused_everywhere() {
    let cases: &[(&str, &str)] = &[
        ("colour = 1\n", "colour"),
        ("[server]\nport = 1\n", "server.port"),
        ("[store]\ntype = \"embedded\"\nurl = \"x\"\n", "store.url"),
        ("[runtime]\nworkers = 3\n", "runtime.workers"),
        ("[watch]\nrecursive = true\n", "watch.recursive"),
        (
            "[[mounts]]\npath = \"/m\"\nreload = { type = \"http\", url = \"http://h/\", verb = \"GET\" }\n",
            "mounts[0].reload.verb",
        ),
        (
            "[policies.api_keys]\ngrase = \"1h\"\n",
            "policies.api_keys.grase",
        ),
        (
            "[policies.api_keys]\nwindow = { cron = \"0 1 * * *\", duration = \"1h\", days = 2 }\n",
            "policies.api_keys.window.days",
        ),
        (
            "[policies.api_keys]\ngenerator = { type = \"token\", length = 32 }\n",
            "policies.api_keys.generator.length",
        ),
        (
            "[[secrets]]\ntenant = \"t\"\nkey = \"k\"\npolicy = \"api_keys\"\nowner = \"me\"\n",
            "secrets[0].owner",
        ),
        (
            "[[secrets]]\ntenant = \"t\"\nkey = \"k\"\npolicy = \"api_keys\"\ntarget = { type = \"none\", url = \"x\" }\n",
            "secrets[0].target.url",
        ),
    ];
    for (text, key) in cases {
        let e = one_error(text, key, &["unknown key"]);
        assert!(e.location.is_some(), "{key}: no location");
    }
    let e = one_error(
        "[policies.api_keys]\ngrase = \"1h\"\n",
        "policies.api_keys.grase",
        &[],
    );
    assert!(e.message.contains("did you mean `grace`"), "{}", e.message);
}

#[test]
fn unknown_types_are_refused() {
    one_error(
        "[policies.api_keys]\ngenerator = { type = \"uuid\" }\n",
        "policies.api_keys.generator.type",
        &["unknown generator type", "password, token, hmac, ed25519"],
    );
    one_error(
        "[[secrets]]\ntenant = \"t\"\nkey = \"k\"\npolicy = \"api_keys\"\ntarget = { type = \"mysql\" }\n",
        "secrets[0].target.type",
        &["unknown target type", "none"],
    );
    one_error(
        "[store]\ntype = \"consul\"\n",
        "store.type",
        &["unknown store type", "embedded", "vault"],
    );
    one_error(
        "[policies.x]\ninterval = \"1d\"\ngrace = \"1h\"\ngenerator = { bytes = 32 }\n",
        "policies.x.generator.type",
        &["missing key `type`"],
    );
}

#[test]
fn type_errors_are_reported_without_cascades() {
    // The bad interval is reported once, not again as "no schedule" or "grace >= interval".
    one_error(
        "[policies.x]\ninterval = 30\ngrace = \"1h\"\ngenerator = { type = \"hmac\" }\n",
        "policies.x.interval",
        &["expected a duration string, found an integer", "\"30s\""],
    );
    // A broken policy is not reported again by the secrets that use it.
    let errs = errors(
        "[policies.x]\ninterval = \"1d\"\ngrace = \"0s\"\ngenerator = { type = \"hmac\" }\n[[secrets]]\ntenant = \"t\"\nkey = \"k\"\npolicy = \"x\"\n",
    );
    assert_eq!(errs.errors.len(), 1, "{errs}");
    one_error(
        "[server]\nlisten = 8080\n",
        "server.listen",
        &["expected a string"],
    );
    one_error(
        "[[mounts]]\npath = \"/m\"\ncritical = [\"a\", 3]\n",
        "mounts[0].critical[1]",
        &["expected a string"],
    );
    one_error("mounts = 3\n", "mounts", &["expected an array of tables"]);
}

#[test]
fn secret_naming_an_unknown_policy() {
    one_error(
        "[[secrets]]\ntenant = \"t\"\nkey = \"k\"\npolicy = \"api_key\"\n",
        "secrets[0].policy",
        &["no policy has this name", "api_keys"],
    );
}

#[test]
fn duplicate_secrets() {
    let e = one_error(
        "[[secrets]]\ntenant = \"t\"\nkey = \"k\"\npolicy = \"api_keys\"\n[[secrets]]\ntenant = \"t\"\nkey = \"k\"\npolicy = \"jwt_secrets\"\n",
        "secrets[1]",
        &["duplicate secret t/k", "secrets[0]"],
    );
    assert_eq!(e.location, Some(Location { line: 7, column: 7 }));
}

#[test]
fn tenant_and_key_must_be_identifiers() {
    let long = "a".repeat(64);
    for (tenant, key, bad_key, needle) in [
        ("..", "k", "secrets[0].tenant", "'.'"),
        ("t", "a/b", "secrets[0].key", "'/'"),
        ("", "k", "secrets[0].tenant", "empty"),
        ("t", long.as_str(), "secrets[0].key", "at most 63"),
        ("Tenant", "k", "secrets[0].tenant", "lowercase"),
    ] {
        one_error(
            &format!("[[secrets]]\ntenant = {tenant:?}\nkey = {key:?}\npolicy = \"api_keys\"\n"),
            bad_key,
            &[needle],
        );
    }
    one_error(
        "[[secrets]]\nkey = \"k\"\npolicy = \"api_keys\"\n",
        "secrets[0].tenant",
        &["missing key `tenant`"],
    );
    one_error(
        "[policies.\"Bad/Name\"]\ninterval = \"1d\"\ngrace = \"1h\"\ngenerator = { type = \"hmac\" }\n",
        "policies.Bad/Name",
        &["policy name"],
    );
}

#[test]
fn grace_must_be_shorter_than_the_interval() {
    one_error(
        "[policies.x]\ninterval = \"1h\"\ngrace = \"1h\"\ngenerator = { type = \"hmac\" }\n",
        "policies.x.grace",
        &["grace 1h must be shorter than the interval (1h)"],
    );
    // A short interval over a built-in's 24h grace blames the interval, which the file set.
    one_error(
        "[policies.database_credentials]\ninterval = \"12h\"\n",
        "policies.database_credentials.interval",
        &["grace 1d must be shorter than the interval (12h)"],
    );
    one_error(
        "[policies.x]\ncron = \"0 * * * *\"\ngrace = \"2h\"\ngenerator = { type = \"hmac\" }\n",
        "policies.x.grace",
        &["shortest gap", "(1h)"],
    );
}

#[test]
fn cron_step_beyond_the_field_range() {
    let e = one_error(
        "[policies.x]\ncron = \"0 0 */90 * *\"\ngrace = \"1h\"\ngenerator = { type = \"hmac\" }\n",
        "policies.x.cron",
        &[
            "day 1 of every month, not every 90 days",
            "interval = \"90d\"",
        ],
    );
    assert_eq!(e.got.as_deref(), Some("\"0 0 */90 * *\""));
    assert_eq!(e.location, Some(Location { line: 2, column: 8 }));
    one_error(
        "[policies.api_keys]\nwindow = { cron = \"*/70 * * * *\", duration = \"1h\" }\n",
        "policies.api_keys.window.cron",
        &["minute 0 of every hour"],
    );
}

#[test]
fn zero_durations_are_refused() {
    for (text, key) in [
        (
            "[policies.api_keys]\ngrace = \"0s\"\n",
            "policies.api_keys.grace",
        ),
        (
            "[policies.api_keys]\ninterval = \"0d\"\n",
            "policies.api_keys.interval",
        ),
        (
            "[policies.api_keys]\njitter = \"0m\"\n",
            "policies.api_keys.jitter",
        ),
        (
            "[policies.api_keys]\nwindow = { cron = \"0 1 * * *\", duration = \"0h\" }\n",
            "policies.api_keys.window.duration",
        ),
        (
            "[runtime]\nshutdown_timeout = \"0s\"\n",
            "runtime.shutdown_timeout",
        ),
        (
            "[[mounts]]\npath = \"/m\"\ndebounce = \"0ms\"\n",
            "mounts[0].debounce",
        ),
    ] {
        one_error(text, key, &["zero"]);
    }
    one_error(
        "[policies.api_keys]\ngrace = \"2 hours\"\n",
        "policies.api_keys.grace",
        &["not a unit"],
    );
}

#[test]
fn verify_interval_is_off_by_default_and_a_positive_duration() {
    // Off unless a policy names it, built-ins included.
    let c =
        load_ok("[policies.x]\nmanual = true\ngrace = \"1h\"\ngenerator = { type = \"hmac\" }\n");
    assert!(c.policies.values().all(|p| p.verify_interval.is_none()));
    let c = load_ok("[policies.api_keys]\nverify_interval = \"5m\"\n");
    assert_eq!(
        c.policy("api_keys").expect("api_keys").verify_interval,
        Some(Duration::from_secs(300))
    );
    assert!(
        c.policy("jwt_secrets")
            .expect("jwt_secrets")
            .verify_interval
            .is_none()
    );
    let e = one_error(
        "[policies.api_keys]\nverify_interval = \"0s\"\n",
        "policies.api_keys.verify_interval",
        &["zero"],
    );
    assert_eq!(
        e.location,
        Some(Location {
            line: 2,
            column: 19
        })
    );
    one_error(
        "[policies.api_keys]\nverify_interval = \"-5m\"\n",
        "policies.api_keys.verify_interval",
        &["negative"],
    );
    one_error(
        "[policies.api_keys]\nverify_interval = \"often\"\n",
        "policies.api_keys.verify_interval",
        &["often"],
    );
    one_error(
        "[policies.api_keys]\nverify_interval = 300\n",
        "policies.api_keys.verify_interval",
        &["duration"],
    );
}

#[test]
fn schedule_must_be_exactly_one_of_interval_cron_manual() {
    one_error(
        "[policies.x]\ngrace = \"1h\"\ngenerator = { type = \"hmac\" }\n",
        "policies.x",
        &["has no schedule", "manual = true"],
    );
    one_error(
        "[policies.x]\nmanual = false\ngrace = \"1h\"\ngenerator = { type = \"hmac\" }\n",
        "policies.x",
        &["has no schedule"],
    );
    one_error(
        "[policies.x]\ninterval = \"1d\"\ncron = \"0 2 * * *\"\ngrace = \"1h\"\ngenerator = { type = \"hmac\" }\n",
        "policies.x.cron",
        &["either `interval` or `cron`, not both"],
    );
    one_error(
        "[policies.x]\ninterval = \"1d\"\nmanual = true\ngrace = \"1h\"\ngenerator = { type = \"hmac\" }\n",
        "policies.x.manual",
        &["cannot be combined"],
    );
    one_error(
        "[policies.encryption_keys]\njitter = \"1m\"\n",
        "policies.encryption_keys.jitter",
        &["no effect on a manual policy"],
    );
}

#[test]
fn bad_time_zones() {
    one_error(
        "[policies.x]\ncron = \"0 2 * * *\"\ntimezone = \"Mars/Olympus\"\ngrace = \"1h\"\ngenerator = { type = \"hmac\" }\n",
        "policies.x.timezone",
        &["not a known time zone", "Europe/Berlin"],
    );
    one_error(
        "[policies.api_keys]\nwindow = { cron = \"0 1 * * *\", duration = \"1h\", timezone = \"CEST+2\" }\n",
        "policies.api_keys.window.timezone",
        &["not a known time zone"],
    );
    one_error(
        "[policies.api_keys]\ntimezone = \"Europe/Berlin\"\n",
        "policies.api_keys.timezone",
        &["applies only to `cron` and `window`"],
    );
}

#[test]
fn bad_listen_address() {
    for bad in ["localhost:8080", "127.0.0.1", "1.2.3.4:99999", ""] {
        one_error(
            &format!("[server]\nlisten = {bad:?}\n"),
            "server.listen",
            &["IP:PORT"],
        );
    }
    let c = load_ok("[server]\nlisten = \"[::1]:9000\"\n");
    assert_eq!(c.server.listen.port(), 9000);
}

#[test]
fn bad_generator_parameters() {
    let policy = |generator: &str| {
        format!("[policies.x]\ninterval = \"1d\"\ngrace = \"1h\"\ngenerator = {generator}\n")
    };
    one_error(
        &policy("{ type = \"password\", length = 7 }"),
        "policies.x.generator.length",
        &["between 8 and 1024"],
    );
    one_error(
        &policy("{ type = \"password\", length = 1025 }"),
        "policies.x.generator.length",
        &["between 8 and 1024"],
    );
    one_error(
        &policy("{ type = \"password\", lower = false, upper = false, digits = false }"),
        "policies.x.generator",
        &["at least one character class"],
    );
    one_error(
        &policy("{ type = \"token\", bytes = 15 }"),
        "policies.x.generator.bytes",
        &["between 16 and 1024"],
    );
    one_error(
        &policy("{ type = \"token\", encoding = \"base32\" }"),
        "policies.x.generator.encoding",
        &["base64url"],
    );
    one_error(
        &policy("{ type = \"token\", prefix = \"sk \" }"),
        "policies.x.generator.prefix",
        &["prefix"],
    );
    one_error(
        &policy("{ type = \"hmac\", bytes = -1 }"),
        "policies.x.generator.bytes",
        &["between 16 and 1024"],
    );
    load_ok(&policy(
        "{ type = \"password\", length = 8, symbols = true, upper = false }",
    ));
}

#[test]
fn other_value_checks() {
    one_error(
        "[policies.api_keys]\nmax_attempts = 0\n",
        "policies.api_keys.max_attempts",
        &["between 1 and 100"],
    );
    one_error(
        "[policies.api_keys]\nexpire_after = \"never\"\n",
        "policies.api_keys.expire_after",
        &["grace_and_consumers"],
    );
    one_error(
        "[policies.api_keys]\nmax_grace_extension = \"1h\"\n",
        "policies.api_keys.max_grace_extension",
        &["grace_and_consumers"],
    );
    one_error(
        "[runtime]\nretry_backoff = \"2h\"\n",
        "runtime.retry_backoff",
        &["retry_backoff_max (1h, the default)"],
    );
    one_error(
        "[runtime]\nhibernate_after = \"0s\"\n",
        "runtime.hibernate_after",
        &["longer than zero"],
    );
    one_error(
        "[runtime]\nhibernate_after = \"soon\"\n",
        "runtime.hibernate_after",
        &["soon"],
    );
    one_error(
        "[runtime]\nmax_concurrent_rotations = 0\n",
        "runtime.max_concurrent_rotations",
        &["between 1"],
    );
    one_error(
        "[[mounts]]\npath = \"/m\"\n[[mounts]]\npath = \"/m\"\n",
        "mounts[1].path",
        &["already watched by mounts[0]"],
    );
    one_error(
        "[[mounts]]\ndebounce = \"1s\"\n",
        "mounts[0].path",
        &["missing key `path`"],
    );
    one_error(
        "[[mounts]]\npath = \"/m\"\ncritical = [\"db/*\"]\n",
        "mounts[0].critical[0]",
        &["'/'"],
    );
    one_error(
        "[policies.api_keys]\nwindow = { duration = \"1h\" }\n",
        "policies.api_keys.window.cron",
        &["missing key `cron`"],
    );
}

#[test]
fn syntax_errors_have_a_location() {
    let errs = errors("[server]\nlisten = \n");
    assert!(!errs.errors.is_empty());
    assert_eq!(errs.errors[0].key, "syntax");
    assert_eq!(errs.errors[0].location.map(|l| l.line), Some(2), "{errs}");
}

/// Several problems of different kinds in one file are all reported in one go, in file
/// order, each with its line and column.
#[test]
fn all_errors_at_once_with_locations() {
    let text = r#"[server]
listen = "localhost"
colour = "blue"

[policies.api_keys]
grace = "0s"
interval = 30

[policies.monthly]
cron = "0 0 */90 * *"
grace = "1h"
generator = { type = "password", length = 4 }

[[secrets]]
tenant = "../etc"
key = "api_keys"
policy = "nope"
"#;
    let errs = errors(text);
    let got: Vec<(usize, usize, &str)> = errs
        .errors
        .iter()
        .map(|e| {
            let loc = e.location.expect("located");
            (loc.line, loc.column, e.key.as_str())
        })
        .collect();
    assert_eq!(
        got,
        [
            (2, 10, "server.listen"),
            (3, 1, "server.colour"),
            (6, 9, "policies.api_keys.grace"),
            (7, 12, "policies.api_keys.interval"),
            (10, 8, "policies.monthly.cron"),
            (12, 43, "policies.monthly.generator.length"),
            (15, 10, "secrets[0].tenant"),
            (17, 10, "secrets[0].policy"),
        ],
        "{errs}"
    );
    let rendered = errs.to_string();
    let first = rendered.lines().next().expect("a line");
    assert!(
        first.starts_with("test.toml:2:10: server.listen: is not an IP:PORT address"),
        "{first}"
    );
    assert!(first.ends_with("(got \"localhost\")"), "{first}");
    assert_eq!(rendered.lines().count(), 8);
}

#[test]
fn env_overrides() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    };
    // No mount in the file: the variable adds one with defaults.
    let c = Config::from_str_with_env("", "t", &env(&[("SECRETS_MOUNT_PATH", "/var/run/secrets")]))
        .expect("valid");
    assert_eq!(
        c.mounts,
        vec![MountConfig {
            path: "/var/run/secrets".into(),
            debounce: Duration::from_secs(1),
            poll_interval: None,
            health_check_interval: Duration::from_secs(30),
            critical: vec![],
            reload: None,
            files: Default::default(),
        }]
    );
    // With mounts: the first one's path is replaced; poll interval applies to all.
    let c = Config::from_str_with_env(
        "[[mounts]]\npath = \"/a\"\ncritical = [\"db-*\"]\n[[mounts]]\npath = \"/b\"\n",
        "t",
        &env(&[
            ("SECRETS_MOUNT_PATH", "/c"),
            ("SECRETS_WATCH_POLL_INTERVAL", "250"),
            ("SECRETS_VOLUME_WATCH_ENABLED", "false"),
        ]),
    )
    .expect("valid");
    assert_eq!(c.mounts[0].path, PathBuf::from("/c"));
    assert_eq!(c.mounts[0].critical, vec!["db-*".to_string()]);
    assert_eq!(c.mounts[1].path, PathBuf::from("/b"));
    assert!(
        c.mounts
            .iter()
            .all(|m| m.poll_interval == Some(Duration::from_millis(250)))
    );
    assert!(!c.watch.enabled);
    let c = Config::from_str_with_env(
        "[watch]\nenabled = false\n",
        "t",
        &env(&[("SECRETS_VOLUME_WATCH_ENABLED", "true")]),
    )
    .expect("valid");
    assert!(c.watch.enabled);
}

#[test]
fn bad_env_values_are_errors_naming_the_variable() {
    let env = |name: &str| match name {
        "SECRETS_VOLUME_WATCH_ENABLED" => Some("yes".to_string()),
        "SECRETS_WATCH_POLL_INTERVAL" => Some("0".to_string()),
        "SECRETS_MOUNT_PATH" => Some(String::new()),
        _ => None,
    };
    // Reported together with the file's own problems.
    let errs = Config::from_str_with_env("[server]\nlisten = \"x\"\n", "f.toml", &env)
        .expect_err("invalid");
    let keys: Vec<&str> = errs.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "server.listen",
            "env SECRETS_MOUNT_PATH",
            "env SECRETS_VOLUME_WATCH_ENABLED",
            "env SECRETS_WATCH_POLL_INTERVAL",
        ],
        "{errs}"
    );
    let text = errs.to_string();
    assert!(
        text.contains(
            "f.toml: env SECRETS_VOLUME_WATCH_ENABLED: must be `true` or `false` (got \"yes\")"
        ),
        "{text}"
    );
    for bad in ["-5", "1.5", "5s", ""] {
        let env =
            move |name: &str| (name == "SECRETS_WATCH_POLL_INTERVAL").then(|| bad.to_string());
        assert!(Config::from_str_with_env("", "t", &env).is_err(), "{bad:?}");
    }
}

#[test]
fn load_reports_unreadable_files() {
    let errs = Config::load_with_env(std::path::Path::new("/nonexistent/rotor.toml"), &no_env)
        .expect_err("missing file");
    assert_eq!(errs.origin, "/nonexistent/rotor.toml");
    assert!(errs.to_string().contains("cannot read"), "{errs}");
}

/// The schema walk and the raw serde structs describe the same keys twice. Build
/// documents with every key of the schema (one per variant of the tagged tables) and check
/// that the raw structs, with `deny_unknown_fields`, accept them all.
#[test]
fn every_schema_key_deserializes() {
    use super::schema::{Field, ROOT, Ty};

    fn value(ty: &Ty, variant: usize) -> toml::Value {
        match ty {
            Ty::Str => toml::Value::String("x".into()),
            Ty::Duration => toml::Value::String("1s".into()),
            Ty::Int => toml::Value::Integer(1),
            Ty::Bool => toml::Value::Boolean(true),
            Ty::StrList => toml::Value::Array(vec![toml::Value::String("x".into())]),
            Ty::StrMap => {
                let mut t = toml::Table::new();
                t.insert("f".into(), toml::Value::String("x".into()));
                toml::Value::Table(t)
            }
            Ty::StrListOrMap if variant.is_multiple_of(2) => value(&Ty::StrList, variant),
            Ty::StrListOrMap => value(&Ty::StrMap, variant),
            Ty::Table(fields) => toml::Value::Table(table(fields, variant)),
            Ty::Tagged { variants, .. } => {
                let (name, fields) = variants[variant % variants.len()];
                let mut t = table(fields, variant);
                t.insert("type".into(), toml::Value::String(name.into()));
                toml::Value::Table(t)
            }
            Ty::TableList(fields) => {
                toml::Value::Array(vec![toml::Value::Table(table(fields, variant))])
            }
            Ty::TaggedList { variants, .. } => {
                let (name, fields) = variants[variant % variants.len()];
                let mut t = table(fields, variant);
                t.insert("type".into(), toml::Value::String(name.into()));
                toml::Value::Array(vec![toml::Value::Table(t)])
            }
            Ty::NamedTables(fields) => {
                let mut t = toml::Table::new();
                t.insert("name".into(), toml::Value::Table(table(fields, variant)));
                toml::Value::Table(t)
            }
        }
    }
    fn table(fields: &[Field], variant: usize) -> toml::Table {
        fields
            .iter()
            .map(|f| (f.name.to_owned(), value(&f.ty, variant)))
            .collect()
    }

    for variant in 0..6 {
        let doc = toml::to_string(&table(ROOT, variant)).expect("serializes");
        let (parsed, syntax) = DeTable::parse_recoverable(&doc);
        assert!(syntax.is_empty());
        let parsed = raw::parse(parsed);
        assert!(parsed.is_ok(), "{doc}\n{parsed:?}");
    }
    // And the walk accepts the same documents without complaint.
    for variant in 0..6 {
        let doc = toml::to_string(&table(ROOT, variant)).expect("serializes");
        let mut diag = error::Diagnostics::new(&doc);
        let (mut parsed, syntax) = DeTable::parse_recoverable(&doc);
        assert!(syntax.is_empty());
        let pruned = schema::check_document(&mut diag, parsed.get_mut());
        assert!(pruned.is_empty() && diag.is_empty(), "{doc}");
    }
}
