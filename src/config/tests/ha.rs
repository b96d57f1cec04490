//! `[ha]`: several replicas on one Vault store, the keys' defaults and ranges, the
//! advertised URL from the file, the environment or the listen address, and the refusal
//! with the embedded store.

use super::*;

const VAULT: &str = r#"
[server]
listen = "0.0.0.0:8080"
[store]
type = "vault"
address = "https://vault:8200"
auth = { method = "token", token_file = "/t" }
"#;

fn with_env(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::from_str_with_env(text, "test.toml", &move |name| {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
}

#[test]
fn ha_is_off_by_default_with_a_15s_lease() {
    let c = load_ok("").ha;
    assert!(!c.enabled);
    assert_eq!(c.id, None);
    assert_eq!(c.lease_duration, Duration::from_secs(15));
    assert_eq!(c.advertise_url, "http://127.0.0.1:8080");
}

#[test]
fn every_key_is_read() {
    let c = load_ok(&format!(
        "{VAULT}[ha]\nenabled = true\nid = \"rotor-0\"\nadvertise_url = \"http://10.0.0.7:8080/\"\nlease_duration = \"3s\"\n"
    ))
    .ha;
    assert!(c.enabled);
    assert_eq!(c.id.as_deref(), Some("rotor-0"));
    // Without the trailing slash, so a route can be appended.
    assert_eq!(c.advertise_url, "http://10.0.0.7:8080");
    assert_eq!(c.lease_duration, Duration::from_secs(3));
}

#[test]
fn the_advertised_url_comes_from_the_file_then_the_environment_then_listen() {
    let text = format!("{VAULT}[ha]\nenabled = true\n");
    let env = [(ENV_ADVERTISE_URL, "http://10.1.2.3:8080")];
    assert_eq!(
        with_env(&text, &env).unwrap().ha.advertise_url,
        "http://10.1.2.3:8080"
    );
    assert_eq!(
        with_env(&text, &[]).unwrap().ha.advertise_url,
        "http://0.0.0.0:8080"
    );
    let file = format!("{text}advertise_url = \"https://rotor-0.rotor:8443\"\n");
    assert_eq!(
        with_env(&file, &env).unwrap().ha.advertise_url,
        "https://rotor-0.rotor:8443"
    );
}

#[test]
fn a_bad_advertise_url_in_the_environment_is_reported_by_name() {
    let errs = with_env(
        &format!("{VAULT}[ha]\nenabled = true\n"),
        &[(ENV_ADVERTISE_URL, "10.0.0.7:8080")],
    )
    .unwrap_err();
    assert_eq!(errs.errors.len(), 1, "{errs}");
    assert_eq!(errs.errors[0].key, "env ROTOR_ADVERTISE_URL", "{errs}");
    assert!(errs.errors[0].message.contains("http://"), "{errs}");
}

#[test]
fn ha_with_the_embedded_store_is_refused_at_its_line() {
    let e = one_error(
        "[ha]\nenabled = true\n",
        "ha.enabled",
        &["needs the Vault store", "embedded store"],
    );
    let at = e.location.expect("a location");
    assert_eq!((at.line, at.column), (2, 11));
    // Turned off, the table is fine with any store.
    load_ok("[ha]\nenabled = false\nlease_duration = \"5s\"\n");
}

#[test]
fn bad_values_are_refused_with_key_and_position() {
    for (line, key, needle) in [
        ("lease_duration = \"500ms\"", "ha.lease_duration", "between"),
        ("lease_duration = \"1h\"", "ha.lease_duration", "between"),
        ("id = \"../x\"", "ha.id", "A-Z a-z 0-9"),
        ("id = \"\"", "ha.id", "A-Z a-z 0-9"),
        ("advertise_url = \"ftp://x\"", "ha.advertise_url", "http://"),
        (
            "advertise_url = \"http://u:p@x:1\"",
            "ha.advertise_url",
            "no credentials",
        ),
        (
            "advertise_url = \"http://x:1/?a=b\"",
            "ha.advertise_url",
            "query",
        ),
    ] {
        let text = format!("{VAULT}[ha]\nenabled = true\n{line}\n");
        let e = one_error(&text, key, &[needle]);
        let at = e.location.expect("a location");
        assert_eq!(at.line, 10, "{line}");
    }
    one_error(
        &format!("{VAULT}[ha]\nenabled = \"yes\"\n"),
        "ha.enabled",
        &["true or false"],
    );
    one_error(
        &format!("{VAULT}[ha]\nleader = true\n"),
        "ha.leader",
        &["unknown"],
    );
}
