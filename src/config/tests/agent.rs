//! `rotor agent`'s configuration: the contract shape, defaults, the mount keys shared with
//! `rotor run`, the refusals (each naming its key), and telling the two kinds apart.

use super::*;
use crate::config::agent::{DEFAULT_HEARTBEAT, DEFAULT_PERMIT_WAIT};
use crate::domain::SecretRef;
use std::path::Path;

fn agent(text: &str) -> Result<AgentConfig, String> {
    AgentConfig::from_str(text, "a.toml").map_err(|e| e.to_string())
}

const MOUNT: &str = r#"
[[mounts]]
path = "/mnt/secrets"
debounce = "200ms"
critical = ["pass*"]
reload = { type = "http", url = "http://127.0.0.1:3000/-/reload" }
files = { "password" = "tenant1/database_credentials" }
"#;

#[test]
fn contract_shape_loads_with_defaults() {
    let c = agent(&format!(
        "[agent]\nrotor_url = \"http://127.0.0.1:8080\"\ntoken_file = \"/var/run/rotor/token\"\n{MOUNT}"
    ))
    .expect("valid");
    assert_eq!(c.agent.rotor_url.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(c.agent.heartbeat, DEFAULT_HEARTBEAT);
    assert_eq!(c.agent.permit_wait, DEFAULT_PERMIT_WAIT);
    assert_eq!(c.agent.consumer_id, None);
    assert_eq!(c.agent.workload, None);
    let m = &c.mounts[0];
    assert_eq!(m.debounce, std::time::Duration::from_millis(200));
    assert!(m.reload.is_some());
    assert_eq!(
        m.files.get("password"),
        Some(&SecretRef::new("tenant1", "database_credentials").unwrap())
    );

    let c = agent(&format!(
        r#"[agent]
rotor_url = "http://rotor.rotor.svc:8080"
allow_insecure_http = true
token_file = "t"
consumer_id = "web-7d9f-abc"
workload = "web"
heartbeat = "2s"
permit_wait = "30s"
[watch]
max_reloads_per_minute = 5
{MOUNT}"#
    ))
    .expect("valid");
    assert_eq!(c.agent.workload.as_deref(), Some("web"));
    assert_eq!(c.agent.consumer_id.as_deref(), Some("web-7d9f-abc"));
    assert_eq!(c.watch.max_reloads_per_minute, 5);
}

#[test]
fn bad_agent_keys_are_all_named() {
    let e = agent(
        r#"[agent]
rotor_url = "ftp://user:pw@rotor"
consumer_id = "-bad"
heartbeat = "20m"
permit_wait = "soon"
colour = "blue"
[[mounts]]
path = "/mnt/s"
debounce = "x"
files = { "password" = "Tenant/Key" }
"#,
    )
    .unwrap_err();
    for want in [
        "a.toml:2:13: agent.rotor_url: must be an http:// or https:// URL",
        "agent.token_file: missing key `token_file`",
        "agent.consumer_id: must start and end with a letter or digit (got \"-bad\")",
        "agent.heartbeat: must be between 100ms and 10m",
        "agent.permit_wait:",
        "agent.colour: unknown key",
        "mounts[0].debounce:",
        "mounts[0].files.password: must name a secret",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
    // The URL's credentials are never quoted back.
    assert!(!e.contains("user:pw"), "{e}");
}

#[test]
fn plain_http_elsewhere_than_loopback_needs_an_opt_in() {
    let text = |extra: &str| {
        format!(
            "[agent]\nrotor_url = \"http://rotor.rotor.svc:8080\"\ntoken_file = \"t\"\n{extra}{MOUNT}"
        )
    };
    let e = agent(&text("")).unwrap_err();
    assert!(e.contains("agent.rotor_url: plain http"), "{e}");
    agent(&text("allow_insecure_http = true\n")).expect("accepted explicitly");
    let c = agent(&format!(
        "[agent]\nrotor_url = \"https://rotor.example\"\ntoken_file = \"t\"\nca_file = \"ca.pem\"\ntimeout = \"3s\"\n{MOUNT}"
    ))
    .expect("https anywhere");
    assert_eq!(c.agent.ca_file.as_deref(), Some(Path::new("ca.pem")));
    assert_eq!(c.agent.timeout, std::time::Duration::from_secs(3));
    // A CA file cannot verify plain http.
    let e = agent(&text("allow_insecure_http = true\nca_file = \"ca.pem\"\n")).unwrap_err();
    assert!(
        e.contains("agent.ca_file: is set but the URL is plain http"),
        "{e}"
    );
}

#[test]
fn the_two_kinds_are_never_mixed() {
    let e = agent(&format!(
        "[agent]\nrotor_url = \"http://127.0.0.1:8080\"\ntoken_file = \"t\"\n[store]\ntype = \"embedded\"\n[[secrets]]\ntenant = \"a\"\nkey = \"b\"\n{MOUNT}"
    ))
    .unwrap_err();
    assert!(
        e.contains("store: belongs to a `rotor run` configuration"),
        "{e}"
    );
    assert!(
        e.contains("secrets: belongs to a `rotor run` configuration"),
        "{e}"
    );
    // And `rotor run` refuses an agent file by name rather than calling [agent] unknown.
    let e = Config::from_str_with_env(
        "[agent]\nrotor_url = \"http://127.0.0.1:8080\"\n",
        "a.toml",
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("start it with `rotor agent -c FILE`"), "{e}");
}

#[test]
fn an_agent_needs_a_mapped_file() {
    let e = agent("[agent]\nrotor_url = \"http://127.0.0.1:1\"\ntoken_file = \"t\"\n").unwrap_err();
    assert!(
        e.contains("mounts: an agent configuration needs at least one"),
        "{e}"
    );
    let e = agent(
        "[agent]\nrotor_url = \"http://127.0.0.1:1\"\ntoken_file = \"t\"\n[[mounts]]\npath = \"/m\"\n",
    )
    .unwrap_err();
    assert!(e.contains("no mount maps a file"), "{e}");
}
