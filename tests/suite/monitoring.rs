//! deploy/monitoring against rotor itself: the alert rules pass `promtool check rules` and
//! their `promtool test rules` unit tests, the PrometheusRule manifest carries exactly the
//! plain rules file, the Grafana dashboard is importable JSON with the seed's panels, and
//! every metric a panel or an alert names is exported by a running rotor whose `/metrics`
//! `promtool check metrics` accepts.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::http::request;
use crate::common::rotor_bin::{RotorBin, config, free_port, prometheus_tool};
use crate::common::wait::eventually;
use serde_json::Value;

fn monitoring() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(monitoring().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

const RULES: &str = "rules/rotor-alerts.rules.yaml";

#[test]
fn prometheus_rule_manifest_carries_the_plain_rules_file() {
    let manifest = read("prometheus-alerts.yaml");
    assert!(manifest.contains("\nkind: PrometheusRule\n"));
    assert!(manifest.contains("\napiVersion: monitoring.coreos.com/v1\n"));
    let spec = manifest.split_once("\nspec:\n").expect("a spec: line").1;
    let unindented: String = spec
        .lines()
        .map(|l| {
            if l.is_empty() {
                ""
            } else {
                l.strip_prefix("  ")
                    .unwrap_or_else(|| panic!("spec line not indented by two: {l:?}"))
            }
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        unindented,
        read(RULES),
        "the PrometheusRule spec and {RULES} differ: edit both"
    );
}

fn promtool(args: &[&str], stdin: Option<&str>) -> Option<(bool, String)> {
    let tool = prometheus_tool("promtool")?;
    let mut child = Command::new(tool)
        .args(args)
        .current_dir(monitoring())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    {
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

#[test]
fn promtool_accepts_the_rules() {
    let Some((ok, out)) = promtool(&["check", "rules", RULES], None) else {
        return;
    };
    assert!(ok, "promtool check rules:\n{out}");
    let alerts = read(RULES).matches("- alert: ").count();
    assert!(
        out.contains(&format!("SUCCESS: {alerts} rules found")),
        "{out}"
    );
}

#[test]
fn every_alert_has_a_firing_and_a_silent_unit_test_and_they_pass() {
    let tests = read("tests/rotor-alerts.test.yaml");
    for line in read(RULES).lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            for case in ["fires", "silent"] {
                assert!(
                    tests.contains(&format!("# {name} {case}\n")),
                    "no `{case}` unit test for {name}"
                );
            }
        }
    }
    let Some((ok, out)) = promtool(&["test", "rules", "tests/rotor-alerts.test.yaml"], None) else {
        return;
    };
    assert!(ok && out.contains("SUCCESS"), "promtool test rules:\n{out}");
}

/// The seed's ten alerts with their severities as the product states them (critical:
/// SecretRotationFailure, SecretProviderDown, LowRotationSuccessRate; warning:
/// HighSecretAccessLatency, LowCacheHitRate, ExcessiveSecretAccess; info:
/// LargeSecretCache), and the operator alerts.
#[test]
fn alerts_are_the_contracted_ones() {
    let rules = read(RULES);
    let mut severity = std::collections::BTreeMap::new();
    let mut current = None;
    for line in rules.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("- alert: ") {
            current = Some(name.to_owned());
        } else if let (Some(s), Some(name)) = (t.strip_prefix("severity: "), &current) {
            severity.insert(name.clone(), s.to_owned());
        }
    }
    for (name, sev) in [
        ("HighSecretAccessErrorRate", "warning"),
        ("SecretRotationFailure", "critical"),
        ("LowCacheHitRate", "warning"),
        ("HighSecretAccessLatency", "warning"),
        ("LowRotationSuccessRate", "critical"),
        ("SecretWatcherDown", "critical"),
        ("HighRotationDuration", "warning"),
        ("SecretProviderDown", "critical"),
        ("ExcessiveSecretAccess", "warning"),
        ("LargeSecretCache", "info"),
        ("SecretRotationOverdue", "warning"),
        ("SecretRotationStuck", "critical"),
        ("SecretGraceExtended", "warning"),
        ("ActorRestartStorm", "warning"),
        ("ReloadStorm", "warning"),
        ("SecretWatcherHealthFailing", "warning"),
        ("ViewLagExpiry", "warning"),
        ("ConsumersLaggingPastGrace", "warning"),
        ("RotorNoLeader", "critical"),
        ("RotorMoreThanOneLeader", "critical"),
    ] {
        assert_eq!(
            severity.get(name).map(String::as_str),
            Some(sev),
            "alert {name}"
        );
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&read("grafana-dashboard.json")).expect("dashboard is JSON")
}

#[test]
fn dashboard_is_importable_with_the_seed_panels() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    assert_eq!(d["uid"], "rotor-overview");
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "tenant"]);
    let panels = d["panels"].as_array().unwrap();
    let titles: BTreeSet<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for t in [
        "Secret access rate",
        "Secret access latency p95",
        "Cache hit rate",
        "Rotation success rate",
        "Secret access errors",
        "Rotation duration p95",
        "Active rotation jobs",
        "Secrets watched",
        "Secret cache size",
        "Oldest current version age",
        "Actor restarts",
        "Leader (per pod)",
    ] {
        assert!(titles.contains(t), "no panel {t:?} in {titles:?}");
    }
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        assert!(p["gridPos"]["w"].as_u64().is_some());
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(!p["targets"].as_array().unwrap().is_empty());
        }
    }
    // The tenant variable reads a per-secret series, and per-secret panels filter by it.
    assert!(
        d["templating"]["list"][1]["definition"]
            .as_str()
            .unwrap()
            .contains("rotor_secret_rotations_total")
    );
}

/// Metric names in a PromQL text: rotor's all start with these prefixes.
fn metric_names(text: &str, into: &mut BTreeSet<String>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &text[i..];
        if starts_word
            && (rest.starts_with("secret_")
                || rest.starts_with("secrets_")
                || rest.starts_with("rotor_"))
        {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            into.insert(rest[..end].to_owned());
            i += end;
        } else {
            i += 1;
        }
    }
}

fn used_metric_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in read(RULES).lines() {
        if let Some(expr) = line.trim().strip_prefix("expr: ") {
            metric_names(expr, &mut names);
        }
    }
    fn walk(v: &Value, names: &mut BTreeSet<String>) {
        match v {
            Value::Object(o) => {
                for (k, v) in o {
                    match (k.as_str(), v) {
                        ("expr" | "definition", Value::String(s)) => metric_names(s, names),
                        ("query", Value::Object(q)) => {
                            if let Some(Value::String(s)) = q.get("query") {
                                metric_names(s, names)
                            }
                        }
                        _ => walk(v, names),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, names)),
            _ => {}
        }
    }
    walk(&dashboard(), &mut names);
    names
}

/// Sample names a text exposition declares: every `# TYPE` family, with a histogram's
/// `_bucket`, `_sum` and `_count`.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            out.insert(name.to_owned());
            if ty == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_rotor_exports_every_metric_the_dashboard_and_alerts_use() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(
        port,
        r#"[metrics]
per_secret = true

[policies.mon]
interval = "1h"
grace = "1m"
generator = { type = "token", bytes = 32 }

[[secrets]]
tenant = "tenant1"
key = "api_keys"
policy = "mon"

# A Vault view nobody answers for: its series (rotor_view_*) exist only with a view, and
# are exported from the view's start, whether or not it can be written.
[[publish]]
type = "vault"
address = "http://127.0.0.1:9"
auth = { method = "token", token_file = "view.token" }
mount = "secret"
path = "rotor/mon"
fields = { key = "tenant1/api_keys" }
"#,
    );
    let rotor = RotorBin::start(tmp.path(), port, &cfg).await;
    // The first version is created at start; wait until its rotation is counted so the
    // per-secret series have samples.
    let text = eventually(Duration::from_secs(20), "first rotation in /metrics", || async {
        let r = request(rotor.addr, "GET", "/metrics", None, None).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8"),
            "Prometheus 2.x picks its parser by content type"
        );
        let text = String::from_utf8(r.body).unwrap();
        text.contains(r#"rotor_secret_rotations_total{tenant="tenant1",key="api_keys",outcome="succeeded"} 1"#)
            .then_some(text)
    })
    .await;

    let exported = exported_names(&text);
    let used = used_metric_names();
    assert!(used.len() > 20, "too few names found: {used:?}");
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "used by panels or alerts but not exported: {missing:?}"
    );
    // And the contract names are all there.
    for &name in rotor::metrics::CONTRACT {
        assert!(exported.contains(name), "{name} not exported");
    }

    if let Some((ok, out)) = promtool(&["check", "metrics"], Some(&text)) {
        assert!(
            ok && out.trim().is_empty(),
            "promtool check metrics:\n{out}\n---\n{text}"
        );
    }
    // The default metrics (no per-secret series) too.
    let default = rotor::metrics::Metrics::new();
    default.init_policy("mon");
    if let Some((ok, out)) = promtool(&["check", "metrics"], Some(&default.encode().unwrap())) {
        assert!(
            ok && out.trim().is_empty(),
            "promtool check metrics:\n{out}"
        );
    }
}
