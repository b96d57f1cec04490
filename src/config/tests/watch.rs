//! The watcher's configuration contract: `[[mounts]]` with `reload` (http, signal, exec)
//! and `files`, `[[publish]]` in list and table form, and the errors for bad values.

use std::path::Path;

use super::*;
use crate::domain::SecretRef;
use crate::watch::reload::config::ReloadAction;

const BASE: &str = r#"
[[secrets]]
tenant = "tenant1"
key = "database_credentials"
policy = "database_credentials"
[[secrets]]
tenant = "tenant1"
key = "api_keys"
policy = "api_keys"
"#;

fn load(extra: &str) -> Result<Config, String> {
    Config::from_str_with_env(&format!("{BASE}{extra}"), "t.toml", &|_| None)
        .map_err(|e| e.to_string())
}

#[test]
fn contract_shape_loads() {
    let c = load(
        r#"
[[mounts]]
path = "/mnt/secrets"
debounce = "1s"
poll_interval = "5s"
health_check_interval = "30s"
critical = ["database-*", "jwt-secret"]
reload = { type = "http", url = "http://127.0.0.1:3000/-/reload", method = "POST", timeout = "5s" }
files = { "database-password" = "tenant1/database_credentials" }
[[mounts]]
path = "/mnt/b"
reload = { type = "signal", signal = "SIGHUP", pid_file = "/var/run/app.pid" }
[[mounts]]
path = "/mnt/c"
reload = { type = "exec", command = ["/usr/bin/app-reload"], timeout = "10s" }
[[publish]]
path = "demo/mnt/secrets"
secrets = ["tenant1/database_credentials", "tenant1/api_keys"]
[[publish]]
path = "demo/mnt/other"
secrets = { "db" = "tenant1/database_credentials" }
interval = "250ms"
"#,
    )
    .expect("valid");
    let m = &c.mounts[0];
    let reload = m.reload.as_ref().expect("reload");
    match &reload.action {
        ReloadAction::Http {
            url,
            method,
            ca_file,
            proxy,
            timeout,
            expected_status,
        } => {
            assert_eq!(*proxy, None);
            assert_eq!(url.to_string(), "http://127.0.0.1:3000/-/reload");
            assert_eq!(method, "POST");
            assert_eq!(*ca_file, None);
            assert_eq!(*timeout, Duration::from_secs(5));
            assert_eq!(*expected_status, None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reload.max_attempts, 3);
    assert_eq!(
        m.files.get("database-password"),
        Some(&SecretRef::new("tenant1", "database_credentials").unwrap())
    );
    match &c.mounts[1].reload.as_ref().unwrap().action {
        ReloadAction::Signal {
            name,
            number,
            pid_file,
        } => {
            assert_eq!(name, "SIGHUP");
            assert_eq!(*number, libc::SIGHUP);
            assert_eq!(pid_file, &PathBuf::from("/var/run/app.pid"));
        }
        other => panic!("{other:?}"),
    }
    match &c.mounts[2].reload.as_ref().unwrap().action {
        ReloadAction::Exec {
            command,
            timeout,
            env,
        } => {
            assert_eq!(command, &vec!["/usr/bin/app-reload".to_owned()]);
            assert_eq!(*timeout, Duration::from_secs(10));
            assert!(env.is_empty(), "no variables beyond the default ones");
        }
        other => panic!("{other:?}"),
    }
    // List form: file name = key.
    let p = &c.publish[0];
    assert_eq!(
        p.files.keys().cloned().collect::<Vec<_>>(),
        vec!["api_keys".to_owned(), "database_credentials".to_owned()]
    );
    assert_eq!(p.interval, Duration::from_secs(1));
    assert_eq!(c.publish[1].files.len(), 1);
    assert_eq!(c.publish[1].interval, Duration::from_millis(250));
    assert_eq!(c.watch.max_reloads_per_minute, 60);
}

#[test]
fn bad_values_are_reported_with_their_keys() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[[mounts]]\npath = \"/m\"\nreload = { type = \"http\", url = \"ftp://x/\" }\n",
            "mounts[0].reload.url",
            "https://",
        ),
        (
            "[[mounts]]\npath = \"/m\"\nreload = { type = \"http\", url = \"http://x/\", ca_file = \"ca.pem\" }\n",
            "mounts[0].reload.ca_file",
            "plain http",
        ),
        (
            "[[mounts]]\npath = \"/m\"\nreload = { type = \"http\" }\n",
            "mounts[0].reload.url",
            "missing",
        ),
        (
            "[[mounts]]\npath = \"/m\"\nreload = { type = \"signal\", signal = \"SIGKILL\", pid_file = \"/p\" }\n",
            "mounts[0].reload.signal",
            "SIGHUP",
        ),
        (
            "[[mounts]]\npath = \"/m\"\nreload = { type = \"exec\", command = [] }\n",
            "mounts[0].reload.command",
            "program",
        ),
        (
            "[[mounts]]\npath = \"/m\"\nreload = { type = \"carrier-pigeon\" }\n",
            "mounts[0].reload.type",
            "http, signal, exec",
        ),
        (
            "[[mounts]]\npath = \"/m\"\nfiles = { \"db\" = \"tenant9/nope\" }\n",
            "mounts[0].files.db",
            "not a managed secret",
        ),
        (
            "[[mounts]]\npath = \"/m\"\nfiles = { \"..data\" = \"tenant1/api_keys\" }\n",
            "mounts[0].files...data",
            "file name",
        ),
        (
            "[[publish]]\npath = \"/p\"\nsecrets = [\"tenant1/api_keys\", \"tenant1/api_keys\"]\n",
            "publish[0].secrets[1]",
            "twice",
        ),
        (
            "[[publish]]\npath = \"/p\"\n",
            "publish[0].secrets",
            "missing",
        ),
        (
            "[[publish]]\npath = \"/p\"\nsecrets = [\"not a ref\"]\n",
            "publish[0].secrets[0]",
            "tenant/key",
        ),
        (
            "[watch]\nmax_reloads_per_minute = 0\n",
            "watch.max_reloads_per_minute",
            "between",
        ),
    ];
    for (extra, key, needle) in cases {
        let e = load(extra).expect_err(extra);
        assert!(
            e.contains(key) && e.contains(needle),
            "{key} / {needle}:\n{e}"
        );
    }
}

#[test]
fn https_reload_endpoints_take_a_ca_file() {
    let c = Config::from_str_with_env(
        "[[mounts]]\npath = \"/m\"\nreload = { type = \"http\", url = \"https://reloader.sidecar.svc/-/reload\", ca_file = \"/etc/rotor/ca.pem\" }\n",
        "t.toml",
        &|_| None,
    )
    .expect("valid");
    match &c.mounts[0].reload.as_ref().unwrap().action {
        ReloadAction::Http { url, ca_file, .. } => {
            assert!(url.tls);
            assert_eq!(url.port, 443);
            assert_eq!(url.to_string(), "https://reloader.sidecar.svc:443/-/reload");
            assert_eq!(ca_file.as_deref(), Some(Path::new("/etc/rotor/ca.pem")));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn max_file_size_defaults_to_one_mebibyte_and_takes_bytes() {
    assert_eq!(load("").unwrap().watch.max_file_size, 1024 * 1024);
    let c = load("[watch]\nmax_file_size = 4096\n").unwrap();
    assert_eq!(c.watch.max_file_size, 4096);
}

#[test]
fn bad_max_file_size_is_refused_with_line_and_column() {
    // BASE is 9 lines (it starts with a newline); `[watch]` is line 10.
    let cases: &[(&str, &str)] = &[
        ("max_file_size = 0", "between 1 and 67108864"),
        ("max_file_size = -5", "between 1 and 67108864"),
        ("max_file_size = 100000000000", "between 1 and 67108864"),
        ("max_file_size = \"1MiB\"", "integer"),
    ];
    for (line, needle) in cases {
        let e = load(&format!("[watch]\n{line}\n")).expect_err(line);
        assert!(
            e.contains("t.toml:11:17: watch.max_file_size") && e.contains(needle),
            "{line}: {e}"
        );
    }
}

#[test]
fn exec_reload_takes_an_env_allow_list_of_valid_names() {
    let c = load(
        "[[mounts]]\npath = \"/m\"\nreload = { type = \"exec\", command = [\"/bin/r\"], env = [\"AWS_REGION\", \"_x1\"] }\n",
    )
    .unwrap();
    match &c.mounts[0].reload.as_ref().unwrap().action {
        ReloadAction::Exec { env, .. } => assert_eq!(env, &["AWS_REGION", "_x1"]),
        other => panic!("{other:?}"),
    }
    let e = load(
        "[[mounts]]\npath = \"/m\"\nreload = { type = \"exec\", command = [\"/bin/r\"], env = [\"OK\", \"1BAD\", \"A=B\", \"\"] }\n",
    )
    .expect_err("bad names");
    for got in ["\"1BAD\"", "\"A=B\"", "\"\""] {
        assert!(
            e.lines().any(|l| l.contains("mounts[0].reload.env")
                && l.contains("environment variable name")
                && l.contains(&format!("(got {got})"))
                && l.starts_with("t.toml:12:")),
            "{got}:\n{e}"
        );
    }
    assert!(!e.contains("\"OK\""), "{e}");
    // `env` is an exec key only.
    let e = load(
        "[[mounts]]\npath = \"/m\"\nreload = { type = \"signal\", pid_file = \"/p\", env = [\"A\"] }\n",
    )
    .expect_err("env on a signal reload");
    assert!(e.contains("mounts[0].reload.env"), "{e}");
}
