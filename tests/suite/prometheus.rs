//! A real Prometheus in the loop: Debian's `prometheus` on a random loopback port scrapes a
//! real `rotor` every second with rotor's alert rules loaded. The rotor's target is made
//! to fail (the `none` target's `fail_file` test hook), and the test asserts through
//! Prometheus's HTTP API that `SecretRotationFailure` becomes active, then that it clears
//! once the file is removed and the retried rotation succeeds.
//!
//! The one change to the shipped rules: the alert's `[5m]` window is shortened to `[15s]`
//! so that it clears in test time; the expression is otherwise the shipped one.
//!
//! Needs `prometheus` and `promtool` (`.ci/setup-prometheus.sh`); under `CI=true` their
//! absence fails the test instead of skipping it.

use std::fmt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::http::request;
use crate::common::rotor_bin::{RotorBin, config, free_port, prometheus_tool};
use crate::common::wait::{eventually, eventually_every};
use serde_json::Value;

struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    log: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A GET on Prometheus's API; `Err` saying why while it is not listening, answers
    /// non-200 or answers something that is not JSON.
    async fn api(&self, path: &str) -> Result<Value, String> {
        tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("Prometheus at {} unreachable: {e}", self.addr))?;
        let r = request(self.addr, "GET", path, None, None).await;
        if r.status != 200 {
            return Err(format!(
                "GET {path} answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        serde_json::from_slice(&r.body).map_err(|e| format!("GET {path}: not JSON: {e}"))
    }

    /// The state of alert `name` (`pending`, `firing`), `Ok(None)` when Prometheus answered
    /// and the alert is not active, and `Err` when Prometheus could not say: an unreachable
    /// Prometheus is not one whose alert has cleared.
    async fn alert_state(&self, name: &str) -> Result<Option<String>, String> {
        let v = self.api("/api/v1/alerts").await?;
        let alerts = v["data"]["alerts"]
            .as_array()
            .ok_or_else(|| format!("/api/v1/alerts without data.alerts: {v}"))?;
        Ok(alerts
            .iter()
            .find(|a| a["labels"]["alertname"] == name)
            .and_then(|a| a["state"].as_str().map(str::to_owned)))
    }
}

fn start_prometheus(bin: &Path, dir: &Path, rotor_port: u16) -> Prometheus {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/monitoring/rules/rotor-alerts.rules.yaml"),
    )
    .unwrap();
    let window = "increase(secret_rotation_errors_total[5m])";
    assert!(
        shipped.contains(window),
        "SecretRotationFailure changed shape"
    );
    let rules = shipped.replace(window, "increase(secret_rotation_errors_total[15s])");
    std::fs::write(dir.join("rules.yaml"), rules).unwrap();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            r#"global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - rules.yaml
scrape_configs:
  - job_name: rotor
    static_configs:
      - targets: ["127.0.0.1:{rotor_port}"]
"#
        ),
    )
    .unwrap();
    let port = free_port();
    let log = dir.join("prometheus.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .current_dir(dir)
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("prometheus starts");
    Prometheus {
        child,
        addr: ([127, 0, 0, 1], port).into(),
        log,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_rotation_failure_fires_and_clears_in_a_real_prometheus() {
    let Some(prometheus_bin) = prometheus_tool("prometheus") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fail_file = dir.join("target-broken");
    std::fs::write(&fail_file, b"").unwrap();
    let rotor_port = free_port();
    let cfg = config(
        rotor_port,
        &format!(
            r#"[policies.prom]
interval = "1h"
grace = "1m"
max_attempts = 100
generator = {{ type = "token", bytes = 32 }}

[[secrets]]
tenant = "tenant1"
key = "db"
policy = "prom"
target = {{ type = "none", fail = ["apply"], fail_file = "{}" }}
"#,
            fail_file.display()
        ),
    );
    let rotor = RotorBin::start(dir, rotor_port, &cfg).await;
    let prom = start_prometheus(&prometheus_bin, dir, rotor_port);

    // Prometheus is up and scrapes rotor successfully.
    eventually(
        Duration::from_secs(60),
        "Prometheus scraping rotor",
        || async {
            let v = prom.api("/api/v1/targets").await.ok()?;
            let up = v["data"]["activeTargets"]
                .as_array()?
                .iter()
                .any(|t| t["health"] == "up");
            up.then_some(())
        },
    )
    .await;

    eventually_every(
        Duration::from_secs(60),
        Duration::from_millis(250),
        fmt::from_fn(|f| {
            write!(
                f,
                "SecretRotationFailure to fire; prometheus log:\n{}\nrotor log:\n{}",
                prom.log(),
                rotor.log()
            )
        }),
        || async {
            prom.alert_state("SecretRotationFailure")
                .await
                .is_ok_and(|state| state.as_deref() == Some("firing"))
        },
    )
    .await;
    let alerts = prom.api("/api/v1/alerts").await.unwrap();
    let alert = alerts["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["labels"]["alertname"] == "SecretRotationFailure")
        .unwrap()
        .clone();
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["policy"], "prom");

    // Heal the target: the next retry succeeds, errors stop, and the alert clears.
    std::fs::remove_file(&fail_file).unwrap();
    eventually(
        Duration::from_secs(30),
        "the retried rotation to succeed",
        || async {
            let m = request(rotor.addr, "GET", "/metrics", None, None).await;
            let text = String::from_utf8_lossy(&m.body).into_owned();
            text.lines()
                .any(|l| {
                    l.starts_with(r#"secret_rotation_total{policy="prom",outcome="succeeded"}"#)
                        && !l.ends_with(" 0")
                })
                .then_some(())
        },
    )
    .await;
    // Cleared means Prometheus answered and the alert is not among the active ones; while it
    // cannot answer the wait goes on, and the timeout says what it last answered.
    let last = std::sync::Mutex::new(String::from("nothing yet"));
    eventually_every(
        Duration::from_secs(90),
        Duration::from_millis(250),
        fmt::from_fn(|f| {
            write!(
                f,
                "SecretRotationFailure to clear after the target was healed; last answer: {}; \
                 prometheus log:\n{}",
                last.lock().unwrap(),
                prom.log()
            )
        }),
        || async {
            let state = prom.alert_state("SecretRotationFailure").await;
            *last.lock().unwrap() = format!("{state:?}");
            state == Ok(None)
        },
    )
    .await;
}
