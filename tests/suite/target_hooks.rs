//! Hook targets and the secret cache: `exec` runs a command per step with the value on
//! stdin (never argv or env) and its exit status decides; `webhook` posts signed JSON to
//! an HTTPS endpoint (a real TLS receiver whose certificate must be verified) or a loopback
//! `http://` one, its status decides, and redirects are not followed; the cache serves repeated reads, is
//! invalidated by every write, and counts hits and misses.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::targets::{Env, password_spec, secret};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use rotor::domain::{ErrorKind, SecretRef};
use rotor::target::Target;
use rotor::target::exec::{Commands, ExecTarget};
use rotor::target::webhook::{HookUrl, WebhookTarget, signature};

fn sh(script: &str) -> Option<Vec<String>> {
    Some(vec!["sh".into(), "-c".into(), script.into()])
}

#[tokio::test]
async fn exec_gets_the_value_on_stdin_and_its_exit_status_decides() {
    let env = Env::new();
    let out = env.dir.path().join("seen");
    let commands = Commands {
        // Records stdin, argv and environment, so the test can see where the value went.
        apply: sh(&format!(
            "cat > {o}.stdin; echo \"$@\" > {o}.argv; env > {o}.env; test \"$ROTOR_OPERATION\" = apply",
            o = out.display()
        )),
        test: sh("read v; test -n \"$v\""),
        revoke: sh(&format!("cat > {o}.revoked", o = out.display())),
        ..Commands::default()
    };
    let s = secret("provider_api_key");
    let t = ExecTarget::new(
        s.clone(),
        commands,
        Duration::from_secs(10),
        env.store.clone(),
    );
    let v1 = env.generate(&t, &s, 1, &password_spec()).await;
    t.apply(1, &v1).await.expect("apply");
    t.test(1, &v1).await.expect("test");
    let stdin = std::fs::read(format!("{}.stdin", out.display())).unwrap();
    assert_eq!(stdin, v1.expose(), "value on stdin");
    let value = std::str::from_utf8(v1.expose()).unwrap();
    for leak in ["argv", "env"] {
        let text = std::fs::read_to_string(format!("{}.{leak}", out.display())).unwrap();
        assert!(!text.contains(value), "value in {leak}");
    }
    t.revoke(1).await.expect("revoke");
    assert_eq!(
        std::fs::read(format!("{}.revoked", out.display())).unwrap(),
        v1.expose(),
        "revoke gets the revoked version's value"
    );
}

#[tokio::test]
async fn exec_failures_and_timeouts_fail_the_step_without_the_value() {
    let env = Env::new();
    let commands = Commands {
        // Echoes the value to stderr and fails: the error must withhold it.
        apply: sh("cat >&2; exit 3"),
        test: sh("echo 'provider said no' >&2; exit 1"),
        revoke: sh("sleep 60"),
        ..Commands::default()
    };
    let s = secret("provider_api_key");
    let t = ExecTarget::new(
        s.clone(),
        commands,
        // Long enough for a shell to start and exit on a loaded machine, so apply and
        // test fail by their exit status; revoke sleeps far longer and is killed.
        Duration::from_secs(5),
        env.store.clone(),
    );
    let v1 = env.generate(&t, &s, 1, &password_spec()).await;
    let value = std::str::from_utf8(v1.expose()).unwrap().to_owned();

    let err = t.apply(1, &v1).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Apply);
    let text = err.to_string();
    assert!(text.contains("exit status: 3"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
    assert!(!text.contains(&value), "{text}");

    let text = t.test(1, &v1).await.unwrap_err().to_string();
    assert!(text.contains("provider said no"), "{text}");

    let started = std::time::Instant::now();
    let err = t.revoke(1).await.unwrap_err();
    assert!(err.to_string().contains("killed"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "killed at the 5 s timeout, not after the 60 s sleep"
    );
}

/// Log lines written on this thread while the guard lives (`#[tokio::test]` runs the test
/// and the target on one thread, so parallel tests' lines are not mixed in).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Captures everything down to TRACE.
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Every encoding a hook might print `value` in, by name.
fn encodings(value: &[u8]) -> Vec<(&'static str, String)> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    vec![
        ("raw", String::from_utf8_lossy(value).into_owned()),
        ("base64", STANDARD.encode(value)),
        ("base64url", URL_SAFE.encode(value)),
        ("hex", hex::encode(value)),
        ("HEX", hex::encode_upper(value)),
    ]
}

/// Asserts that no run of 8 characters of any encoding of `value` is in `text`, without
/// printing the run.
fn holds_no_run_of(text: &str, value: &[u8]) {
    for (name, encoded) in encodings(value) {
        let chars: Vec<char> = encoded.chars().collect();
        for (i, w) in chars.windows(8).enumerate() {
            let run: String = w.iter().collect();
            assert!(
                !text.contains(&run),
                "the log holds the {name} value's characters {i}..{}",
                i + 8
            );
        }
    }
}

#[tokio::test]
async fn exec_stderr_is_reported_with_every_run_of_the_value_masked() {
    let env = Env::new();
    // A hook that prints slices of the value: 30 characters raw, a slice of its base64, the
    // base64 of a slice at an odd offset, and the hex of a slice in both cases.
    let script = r#"IFS= read -r v
b64=$(printf %s "$v" | base64 -w0)
hex=$(printf %s "${v:2:12}" | od -An -tx1 | tr -d ' \n')
echo "first line ${v:1:20}" >&2
echo "bad key ${v:0:30} b64 ${b64:4:28} slice $(printf %s "${v:5:20}" | base64 -w0) hex $hex HEX ${hex^^}" >&2
exit 7"#;
    let commands = Commands {
        apply: Some(vec!["bash".into(), "-c".into(), script.into()]),
        ..Commands::default()
    };
    let s = secret("provider_api_key");
    let t = ExecTarget::new(
        s.clone(),
        commands,
        Duration::from_secs(30),
        env.store.clone(),
    );
    let v1 = env.generate(&t, &s, 1, &password_spec()).await;
    let (logs, guard) = Logs::capture();
    let err = t.apply(1, &v1).await.unwrap_err();
    // As the rotation actor logs a failed step.
    tracing::warn!(secret = %s, step = "apply", error = %err, "rotation step failed");
    drop(guard);
    let log = logs.text();
    assert!(log.contains("exit status: 7"), "{log}");
    assert!(
        log.contains("bad key <redacted>"),
        "the last stderr line, masked: {log}"
    );
    holds_no_run_of(&log, v1.expose());
    holds_no_run_of(&err.to_string(), v1.expose());
}

/// Where [`exec_env_child`] writes the environments its hooks saw; set only by the parent
/// test, in the child's environment (this process's environment is never changed).
const ENV_OUT: &str = "ROTOR_TEST_ENV_OUT";
/// Variables the child test runs with: two rotor must not pass on, one allow-listed.
const CANARY: (&str, &str) = ("ROTOR_TEST_CANARY_SECRET", "canary-9f2c4e7a");
const AWS: (&str, &str) = ("AWS_SECRET_ACCESS_KEY", "aws-secret-5d1b3c8e");
const ALLOWED: (&str, &str) = ("ROTOR_TEST_ALLOWED", "allowed-7e4a2f90");

#[tokio::test]
async fn exec_hooks_get_a_clean_environment_plus_the_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    // The test binary again, running only the child test, with the parent's variables set
    // on the command: rotor's environment as a deployment would give it.
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "target_hooks::exec_env_child",
            "--ignored",
            "--test-threads=1",
        ])
        .env(ENV_OUT, dir.path())
        .env(CANARY.0, CANARY.1)
        .env(AWS.0, AWS.1)
        .env(ALLOWED.0, ALLOWED.1)
        .output()
        .expect("child test runs");
    assert!(
        out.status.success(),
        "child test failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for hook in ["target", "reload"] {
        let path = dir.path().join(format!("{hook}.env"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{hook} hook wrote no environment: {e}"));
        let vars: Vec<&str> = text.lines().collect();
        assert!(
            !text.contains(CANARY.1),
            "{hook} hook got {}: {vars:?}",
            CANARY.0
        );
        assert!(!text.contains(AWS.1), "{hook} hook got {}: {vars:?}", AWS.0);
        assert!(
            vars.iter().any(|l| l.starts_with("PATH=")),
            "{hook} hook has no PATH: {vars:?}"
        );
        let allowed = format!("{}={}", ALLOWED.0, ALLOWED.1);
        assert!(
            vars.contains(&allowed.as_str()),
            "{hook} hook lacks the allow-listed variable: {vars:?}"
        );
    }
    let target = std::fs::read_to_string(dir.path().join("target.env")).unwrap();
    for name in [
        "ROTOR_OPERATION=apply",
        "ROTOR_TENANT=tenant1",
        "ROTOR_VERSION=1",
    ] {
        assert!(
            target.lines().any(|l| l == name),
            "{name} missing: {target}"
        );
    }
}

/// Run by [`exec_hooks_get_a_clean_environment_plus_the_allow_list`] in a child process:
/// an exec target step and an exec reload, each writing its environment to a file.
#[tokio::test]
#[ignore = "run by exec_hooks_get_a_clean_environment_plus_the_allow_list"]
async fn exec_env_child() {
    let Some(out) = std::env::var_os(ENV_OUT).map(std::path::PathBuf::from) else {
        return;
    };
    let write_env = |file: &str| -> Vec<String> {
        let path = out.join(file).display().to_string();
        vec![
            "sh".into(),
            "-c".into(),
            "env > \"$1\"".into(),
            "sh".into(),
            path,
        ]
    };
    let env = Env::new();
    let s = secret("provider_api_key");
    let t = ExecTarget::new(
        s.clone(),
        Commands {
            apply: Some(write_env("target.env")),
            ..Commands::default()
        },
        Duration::from_secs(30),
        env.store.clone(),
    )
    .with_env(vec![ALLOWED.0.to_owned()]);
    let v1 = env.generate(&t, &s, 1, &password_spec()).await;
    t.apply(1, &v1).await.expect("apply");
    let reload = rotor::watch::reload::config::ReloadAction::Exec {
        command: write_env("reload.env"),
        timeout: Duration::from_secs(30),
        env: vec![ALLOWED.0.to_owned()],
    };
    rotor::watch::reload::run(&reload).await.expect("reload");
}

/// One request as the endpoint saw it: timestamp, signature, body.
type Seen = (String, String, Vec<u8>);

#[derive(Clone, Default)]
struct Hook {
    seen: Arc<Mutex<Vec<Seen>>>,
    fail_test: bool,
}

async fn hook(State(h): State<Hook>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let get = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    h.seen.lock().unwrap().push((
        get("x-rotor-timestamp"),
        get("x-rotor-signature"),
        body.to_vec(),
    ));
    if h.fail_test && json["operation"] == "test" {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::NO_CONTENT
    }
}

async fn serve(h: Hook) -> String {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(h);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

/// A webhook target of `secret` on `url` signing with `key_file`, trusting `ca_file`, 5 s
/// timeout.
fn webhook_target(
    env: &Env,
    secret: &SecretRef,
    url: &str,
    key_file: &std::path::Path,
    ca_file: Option<std::path::PathBuf>,
) -> WebhookTarget {
    WebhookTarget::new(
        secret.clone(),
        HookUrl::parse(url).unwrap(),
        key_file.to_owned(),
        ca_file,
        Duration::from_secs(5),
        None,
        env.store.clone(),
    )
}

#[tokio::test]
async fn webhook_posts_signed_steps_and_its_status_decides() {
    let env = Env::new();
    let key_file = env.dir.path().join("hook.key");
    std::fs::write(&key_file, "hook-signing-key\n").unwrap();
    let h = Hook::default();
    let url = serve(h.clone()).await;
    let s = secret("provider_api_key");
    let t = webhook_target(&env, &s, &url, &key_file, None);
    let v1 = env.generate(&t, &s, 1, &password_spec()).await;
    t.apply(1, &v1).await.expect("apply");
    t.test(1, &v1).await.expect("test");
    t.promote(1, None).await.expect("promote");
    t.revoke(1).await.expect("revoke");
    let seen = h.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    for (ts, sig, body) in &seen {
        assert_eq!(sig, &signature(b"hook-signing-key", ts, body), "signed");
    }
    let apply: serde_json::Value = serde_json::from_slice(&seen[0].2).unwrap();
    assert_eq!(apply["operation"], "apply");
    assert_eq!(apply["value"].as_str().unwrap().as_bytes(), v1.expose());
    let promote: serde_json::Value = serde_json::from_slice(&seen[2].2).unwrap();
    assert!(promote.get("value").is_none(), "promote carries no value");

    let failing = Hook {
        fail_test: true,
        ..Hook::default()
    };
    let url = serve(failing).await;
    let t = webhook_target(&env, &s, &url, &key_file, None);
    let err = t.test(1, &v1).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Test);
    assert!(err.to_string().contains("422"), "{err}");
    assert!(
        !err.to_string()
            .contains(std::str::from_utf8(v1.expose()).unwrap())
    );
}

/// Answers every request with a `307` to `location` (which it never reads).
async fn redirector(location: String) -> String {
    let app = axum::Router::new().fallback(move || {
        let location = location.clone();
        async move {
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(axum::http::header::LOCATION, location)],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

#[tokio::test]
async fn webhook_redirects_are_not_followed() {
    // A 307 keeps the method and body: following it would hand the value to a URL nobody
    // configured. The step fails instead, and the redirect's target hears nothing.
    let env = Env::new();
    let key_file = env.dir.path().join("hook.key");
    std::fs::write(&key_file, "k").unwrap();
    let elsewhere = Hook::default();
    let elsewhere_url = serve(elsewhere.clone()).await;
    let url = redirector(elsewhere_url).await;
    let s = secret("provider_api_key");
    let t = webhook_target(&env, &s, &url, &key_file, None);
    let v1 = env.generate(&t, &s, 1, &password_spec()).await;
    let err = t.apply(1, &v1).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Apply);
    let text = err.to_string();
    assert!(
        text.contains("307") && text.contains("redirects are not followed"),
        "{text}"
    );
    assert!(
        elsewhere.seen.lock().unwrap().is_empty(),
        "the redirect was followed"
    );
}

#[tokio::test]
async fn webhook_over_https_verifies_the_certificate_and_never_quotes_the_url() {
    let Some(receiver) = crate::common::tls::TlsReceiver::start() else {
        return;
    };
    let env = Env::new();
    let key_file = env.dir.path().join("hook.key");
    std::fs::write(&key_file, "hook-signing-key\n").unwrap();
    // Provider URLs often carry a token in the path or query: errors must not quote it.
    let url = receiver.url("/v1/rotate/TOKEN-IN-PATH?auth=TOKEN-IN-QUERY");
    let s = secret("provider_api_key");

    let trusting = webhook_target(&env, &s, &url, &key_file, Some(receiver.cert.clone()));
    let v1 = env.generate(&trusting, &s, 1, &password_spec()).await;
    trusting.apply(1, &v1).await.expect("apply over TLS");
    trusting.test(1, &v1).await.expect("test over TLS");
    trusting.promote(1, None).await.expect("promote over TLS");
    let seen = receiver.wait_for(3);
    assert_eq!(seen.len(), 3);
    for hit in &seen {
        assert_eq!(hit.path, "/v1/rotate/TOKEN-IN-PATH?auth=TOKEN-IN-QUERY");
        let ts = hit.header("x-rotor-timestamp").expect("timestamp");
        assert_eq!(
            hit.header("x-rotor-signature").expect("signature"),
            signature(b"hook-signing-key", ts, &hit.body),
            "signed"
        );
    }
    let apply: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(apply["operation"], "apply");
    assert_eq!(apply["value"].as_str().unwrap().as_bytes(), v1.expose());

    // The same endpoint without its CA: the handshake fails, nothing is sent.
    let untrusting = webhook_target(&env, &s, &url, &key_file, None);
    let err = untrusting.apply(1, &v1).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("not trusted"), "{text}");
    assert!(
        !text.contains("TOKEN"),
        "the URL's path or query leaked: {text}"
    );
    assert!(
        !text.contains(std::str::from_utf8(v1.expose()).unwrap()),
        "{text}"
    );
    assert_eq!(receiver.seen().len(), 3, "nothing reached the endpoint");

    // A ca_file that is missing fails the step, naming the file.
    let missing = env.dir.path().join("no-such-ca.pem");
    let broken = webhook_target(&env, &s, &url, &key_file, Some(missing));
    let text = broken.test(1, &v1).await.unwrap_err().to_string();
    assert!(text.contains("no-such-ca.pem"), "{text}");
}

#[tokio::test]
async fn the_cache_serves_repeats_and_every_write_invalidates() {
    let env = Env::new();
    let s = secret("api_keys");
    let t = rotor::target::none::NoneTarget::new(s.clone());
    let v1 = env.generate(&t, &s, 1, &password_spec()).await;
    for _ in 0..10 {
        assert_eq!(env.store.read_value(&s, 1).await.unwrap(), v1);
    }
    assert_eq!(env.metrics.cache_misses_total.get(), 1);
    assert_eq!(env.metrics.cache_hits_total.get(), 9);
    assert_eq!(env.metrics.access_total.get(), 10);
    // A new version (a rotation) drops the secret's cached values.
    env.generate(&t, &s, 2, &password_spec()).await;
    env.store.read_value(&s, 1).await.unwrap();
    assert_eq!(env.metrics.cache_misses_total.get(), 2);
    assert!(env.store.read_value(&s, 9).await.is_err());
    assert_eq!(env.metrics.access_errors_total.get(), 1);
    let text = env.metrics.encode().unwrap();
    assert!(text.contains("secret_cache_hits_total 9"), "{text}");
}

#[tokio::test]
async fn a_running_rotor_rotates_through_an_https_webhook() {
    use crate::common::rotor_bin::{
        LEAK_CHECK_LOG, RotorBin, assert_logged_at_trace, config, free_port,
    };
    use crate::common::wait::eventually;

    let Some(receiver) = crate::common::tls::TlsReceiver::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("hook.key"), "hook-signing-key\n").unwrap();
    std::fs::copy(&receiver.cert, dir.join("ca.pem")).unwrap();
    let port = free_port();
    let cfg = config(
        port,
        &format!(
            r#"[policies.provider]
interval = "1h"
grace = "2s"
generator = {{ type = "token", bytes = 32, prefix = "sk_live_" }}

[[secrets]]
tenant = "tenant1"
key = "provider_api_key"
policy = "provider"
target = {{ type = "webhook", url = "{url}", hmac_key_file = "hook.key", ca_file = "ca.pem", timeout = "5s" }}
"#,
            url = receiver.url("/rotate?token=TOKEN-IN-QUERY")
        ),
    );
    let rotor = RotorBin::start_logging(dir, port, &cfg, LEAK_CHECK_LOG).await;
    let ops = |seen: &[crate::common::tls::Seen]| -> Vec<(String, u64)> {
        seen.iter()
            .map(|s| {
                let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
                (
                    v["operation"].as_str().unwrap().to_owned(),
                    v["version"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    receiver.wait_for(3);
    rotor.rotate("tenant1", "provider_api_key").await;
    // v2 applied, tested, promoted; after the 2 s grace, v1 revoked.
    let seen = eventually(Duration::from_secs(30), "v1 revoked", || async {
        let seen = receiver.seen();
        ops(&seen)
            .contains(&("revoke".to_owned(), 1))
            .then_some(seen)
    })
    .await;
    let log = rotor.log();
    drop(rotor);
    let steps = ops(&seen);
    for step in ["apply", "test", "promote"] {
        for v in [1, 2] {
            assert!(
                steps.contains(&(step.to_owned(), v)),
                "{step} v{v}: {steps:?}"
            );
        }
    }
    for s in &seen {
        let ts = s.header("x-rotor-timestamp").unwrap();
        assert_eq!(
            s.header("x-rotor-signature").unwrap(),
            signature(b"hook-signing-key", ts, &s.body)
        );
        let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
        if let Some(value) = v["value"].as_str() {
            assert!(value.starts_with("sk_live_"), "a generated token");
            assert!(!log.contains(value), "a value reached the log");
        }
    }
    assert_logged_at_trace(&log);
    assert!(!log.contains("TOKEN-IN-QUERY"), "the URL reached the log");
}
