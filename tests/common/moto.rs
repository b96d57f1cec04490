//! A private moto server for one test: `moto_server -p PORT` on a free loopback port,
//! serving AWS APIs (Secrets Manager among them) in memory, killed on drop and tied to the
//! test's thread as [`super::openbao`]'s servers are. It answers about 0.6 s after it is
//! started.
//!
//! moto picks the AWS service of a request from the credential scope of its
//! `Authorization` header, and checks no signature: [`Moto::secrets_manager`] sends
//! dummy credentials in SigV4's header shape (`testing/.../secretsmanager/aws4_request`).
//!
//! The binary: `ROTOR_MOTO_SERVER` if set; else `moto_server` in the scripts folder of
//! `python3` (where pip puts it; `.ci/setup-openbao.sh` installs `moto[server]`); else
//! `moto_server` on PATH. None found fails the test under `CI=true` and skips it otherwise.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

use super::openbao::{python_answer, runs, spawn_tied, tail};
use super::wait::eventually_every;

/// How long moto may take to answer (about 0.6 s here; the machine is shared).
const START_LIMIT: Duration = Duration::from_secs(60);

/// The region moto is asked to serve; any works, ARNs name it.
pub const REGION: &str = "us-east-1";

pub struct Moto {
    child: Child,
    endpoint: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Starts moto and waits until it answers; `None` (the test is skipped, with the
    /// reason printed) when no `moto_server` is found outside CI.
    pub async fn start() -> Option<Moto> {
        let binary = match find_moto() {
            Ok(b) => b,
            Err(why) => {
                super::ci::skip_or_fail("moto (`moto_server`, from `.ci/setup-openbao.sh`)", &why);
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let mut failures = Vec::new();
        // A port taken between choosing and binding makes the server exit: try another.
        for _ in 0..5 {
            let port = super::rotor_bin::free_port();
            let log = dir.path().join(format!("moto-{port}.log"));
            let mut child = spawn_tied(
                Command::new(&binary)
                    .args(["-H", "127.0.0.1", "-p"])
                    .arg(port.to_string()),
                &log,
            );
            let endpoint = format!("http://127.0.0.1:{port}");
            let ready = format!("{endpoint}/moto-api/");
            let up = eventually_every(
                START_LIMIT,
                Duration::from_millis(20),
                format_args!("moto to answer {ready}"),
                async || {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Some(Err(format!("exited with {status}")));
                    }
                    let resp = http.get(&ready).send().await.ok()?;
                    resp.status().is_success().then_some(Ok(()))
                },
            )
            .await;
            match up {
                Ok(()) => {
                    return Some(Moto {
                        child,
                        endpoint,
                        http,
                        _dir: dir,
                    });
                }
                Err(e) => {
                    failures.push(format!("port {port}: {e}\n{}", tail(&log)));
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!(
            "moto ({}) did not start:\n{}",
            binary.display(),
            failures.join("\n")
        );
    }

    /// `http://127.0.0.1:PORT`, the endpoint URL for every AWS service moto serves.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A client of this server that can be moved into a task (a reader polling it).
    pub fn client(&self) -> MotoClient {
        MotoClient {
            endpoint: self.endpoint.clone(),
            http: self.http.clone(),
        }
    }

    /// One Secrets Manager JSON API call: see [`MotoClient::secrets_manager`].
    pub async fn secrets_manager(&self, action: &str, body: &Value) -> (u16, Value) {
        self.client().secrets_manager(action, body).await
    }
}

/// Requests to one moto server, cheap to clone; it does not keep the server running.
#[derive(Clone)]
pub struct MotoClient {
    endpoint: String,
    http: reqwest::Client,
}

impl MotoClient {
    /// One Secrets Manager JSON API call (`X-Amz-Target: secretsmanager.{action}`):
    /// `(status, JSON body)`. moto's threaded server now and then answers a request that
    /// races a write to the same secret with a bare 500 page (a Python exception inside
    /// moto, not an AWS error): such an answer, or a connection it dropped, is asked again,
    /// [`MOTO_TRIES`] times at most.
    pub async fn secrets_manager(&self, action: &str, body: &Value) -> (u16, Value) {
        let mut last = String::new();
        for _ in 0..MOTO_TRIES {
            let sent = self
                .http
                .post(&self.endpoint)
                .header("X-Amz-Target", format!("secretsmanager.{action}"))
                .header("Content-Type", "application/x-amz-json-1.1")
                .header(
                    "Authorization",
                    format!(
                        "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/secretsmanager/aws4_request, SignedHeaders=host;x-amz-date, Signature=0"
                    ),
                )
                .body(body.to_string())
                .send()
                .await;
            let resp = match sent {
                Ok(resp) => resp,
                Err(e) => {
                    last = e.to_string();
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.expect("response body");
            match serde_json::from_slice(&bytes) {
                Ok(json) => return (status, json),
                Err(e) if status >= 500 => {
                    last = format!(
                        "{status} with no JSON ({e}): {}",
                        String::from_utf8_lossy(&bytes)
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!(
                    "moto secretsmanager.{action} answered {status} with no JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                ),
            }
        }
        panic!("moto secretsmanager.{action}, {MOTO_TRIES} tries: {last}")
    }
}

/// How often [`MotoClient::secrets_manager`] asks moto before it gives up.
const MOTO_TRIES: u32 = 5;

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ROTOR_MOTO_SERVER`, then python3's scripts folder, then PATH.
fn find_moto() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ROTOR_MOTO_SERVER") {
        let path = PathBuf::from(path);
        return runs(&path, "--help").map(|()| path);
    }
    let mut tried = Vec::new();
    match python_answer("import sysconfig; print(sysconfig.get_path('scripts'))") {
        Ok(dir) => {
            let path = PathBuf::from(dir).join("moto_server");
            match runs(&path, "--help") {
                Ok(()) => return Ok(path),
                Err(e) => tried.push(e),
            }
        }
        Err(e) => tried.push(e),
    }
    let path = PathBuf::from("moto_server");
    match runs(&path, "--help") {
        Ok(()) => Ok(path),
        Err(e) => {
            tried.push(e);
            Err(tried.join("; "))
        }
    }
}
