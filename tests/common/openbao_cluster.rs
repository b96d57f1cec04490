//! A private 3-node OpenBao cluster for one test: integrated (raft) storage, each node a
//! `bao server -config=...` child process on free loopback ports (API and cluster port),
//! killed on drop and tied to the test's thread as [`super::openbao`]'s servers are.
//!
//! Set-up, as an operator does it: the first node is initialised through the API
//! (`sys/init`, one key share) and unsealed; the other two join it
//! (`sys/storage/raft/join` with the first node's API address) and are unsealed with the
//! same key, which completes their join. The cluster is ready once the raft configuration
//! lists three voters, so that killing any one node leaves a quorum that elects a new
//! leader. `performance_multiplier = 1` makes raft's timeouts the shortest OpenBao
//! allows (its default of 5 suits slow networks), so a new active node takes over within
//! a few seconds.
//!
//! Standby nodes forward requests to the active node over the cluster port, so a client
//! may talk to any unsealed node while there is an active one; [`OpenBaoCluster::active`]
//! finds the active node (`sys/health` answers 200 there, 429 on a standby) and
//! [`OpenBaoCluster::kill`] kills a node with SIGKILL, no clean shutdown.
//!
//! The binary is found as for a single server; none found fails the test under `CI=true`
//! and skips it otherwise.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use serde_json::{Value, json};

use super::openbao::{find_bao, redacted, spawn_persistent, tail};
use super::rotor_bin::free_port;
use super::wait::eventually_every;

/// How long a node may take to start, or the cluster to form or elect; a node starts in
/// about 0.2 s, but the machine is shared by parallel builds and test binaries.
const LIMIT: Duration = Duration::from_secs(90);

/// Nodes in the cluster: the smallest raft cluster that survives losing one.
pub const NODES: usize = 3;

struct Node {
    /// `None` once killed.
    child: Option<Child>,
    address: String,
    log: PathBuf,
}

pub struct OpenBaoCluster {
    nodes: Vec<Node>,
    token: String,
    http: reqwest::Client,
    /// Each node's config, raft data and log.
    _dir: tempfile::TempDir,
}

impl OpenBaoCluster {
    /// Starts, initialises, unseals and joins three nodes, and waits until all three are
    /// raft voters. `None` (skipped, with the reason printed) when no `bao` binary is
    /// found outside CI.
    pub async fn start() -> Option<OpenBaoCluster> {
        let binary = match find_bao() {
            Ok(b) => b,
            Err(why) => {
                super::ci::skip_or_fail("OpenBao (`bao`, from `.ci/setup-openbao.sh`)", &why);
                return None;
            }
        };
        let dir = tempfile::tempdir().expect("temporary directory");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let mut cluster = OpenBaoCluster {
            nodes: Vec::new(),
            token: String::new(),
            http,
            _dir: dir,
        };
        for i in 0..NODES {
            let node = cluster.start_node(&binary, i).await;
            cluster.nodes.push(node);
        }

        let (status, init) = cluster
            .call_at(
                0,
                "PUT",
                "sys/init",
                Some(json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await;
        assert_eq!(status, 200, "sys/init: {}", redacted(&init));
        cluster.token = init["root_token"].as_str().expect("root_token").to_owned();
        let key = init["keys_base64"][0]
            .as_str()
            .expect("an unseal key")
            .to_owned();
        cluster.unseal(0, &key).await;
        cluster
            .wait_health(0, "the first node to be active", |status| status == 200)
            .await;
        let leader = cluster.nodes[0].address.clone();
        for i in 1..NODES {
            let (status, body) = cluster
                .call_at(
                    i,
                    "PUT",
                    "sys/storage/raft/join",
                    Some(json!({ "leader_api_addr": leader })),
                )
                .await;
            assert_eq!(status, 200, "node {i}: raft join: {body}");
            // A joining node is sealed until it gets the cluster's key; unsealing it
            // completes the join (it fetches the raft data from the leader).
            cluster.unseal(i, &key).await;
            cluster
                .wait_health(i, "a joined node to be an unsealed standby", |status| {
                    status == 429
                })
                .await;
        }
        eventually_every(
            LIMIT,
            Duration::from_millis(200),
            "the raft configuration to list three voters",
            async || {
                let (status, body) = cluster
                    .call("GET", "sys/storage/raft/configuration", None)
                    .await;
                let servers = body.pointer("/data/config/servers")?.as_array()?;
                (status == 200
                    && servers.len() == NODES
                    && servers.iter().all(|s| s["voter"] == true))
                .then_some(())
            },
        )
        .await;
        Some(cluster)
    }

    /// Starts node `i` on free ports (another pair if the first is taken before the node
    /// binds it) and waits until it answers its health check.
    async fn start_node(&self, binary: &Path, i: usize) -> Node {
        let data = self._dir.path().join(format!("raft-{i}"));
        std::fs::create_dir(&data).expect("raft directory");
        let mut failures = Vec::new();
        for attempt in 0..5 {
            let port = free_port();
            let cluster_port = free_port();
            let config = self._dir.path().join(format!("node-{i}-{attempt}.hcl"));
            std::fs::write(
                &config,
                format!(
                    r#"storage "raft" {{
  path = "{data}"
  node_id = "node-{i}"
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  cluster_address = "127.0.0.1:{cluster_port}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "https://127.0.0.1:{cluster_port}"
"#,
                    data = data.display()
                ),
            )
            .expect("node config");
            let log = self._dir.path().join(format!("node-{i}-{attempt}.log"));
            let mut child = spawn_persistent(binary, &config, &log);
            let url = format!("http://127.0.0.1:{port}/v1/sys/health");
            // Not initialised yet: health answers 501 with `initialized: false`.
            let up = eventually_every(
                LIMIT,
                Duration::from_millis(20),
                format_args!("OpenBao node {i} to answer {url}"),
                async || {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Some(Err(format!("exited with {status}")));
                    }
                    let resp = self.http.get(&url).send().await.ok()?;
                    let health: Value = serde_json::from_slice(&resp.bytes().await.ok()?).ok()?;
                    health.get("initialized").map(|_| Ok(()))
                },
            )
            .await;
            match up {
                Ok(()) => {
                    return Node {
                        child: Some(child),
                        address: format!("http://127.0.0.1:{port}"),
                        log,
                    };
                }
                Err(e) => {
                    failures.push(format!("port {port}: {e}\n{}", tail(&log)));
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        panic!(
            "OpenBao node {i} ({}) did not start:\n{}",
            binary.display(),
            failures.join("\n")
        );
    }

    async fn unseal(&self, i: usize, key: &str) {
        let (status, body) = self
            .call_at(i, "PUT", "sys/unseal", Some(json!({ "key": key })))
            .await;
        assert_eq!(status, 200, "node {i}: sys/unseal: {}", redacted(&body));
    }

    /// Waits until node `i`'s `sys/health` status satisfies `ok`.
    async fn wait_health(&self, i: usize, what: &str, ok: impl Fn(u16) -> bool) {
        let url = format!("{}/v1/sys/health", self.nodes[i].address);
        eventually_every(
            LIMIT,
            Duration::from_millis(50),
            format_args!("node {i}: {what}\n{}", tail(&self.nodes[i].log)),
            async || {
                let resp = self.http.get(&url).send().await.ok()?;
                ok(resp.status().as_u16()).then_some(())
            },
        )
        .await;
    }

    /// Every node's `http://127.0.0.1:PORT`, killed ones included, in node order.
    pub fn addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.address.clone()).collect()
    }

    /// The root token `sys/init` gave.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The index of the active node, waiting (up to the limit) until one of the nodes
    /// still running answers `sys/health` with 200.
    pub async fn active(&self) -> usize {
        eventually_every(
            LIMIT,
            Duration::from_millis(20),
            "an active OpenBao node",
            async || {
                for (i, node) in self.nodes.iter().enumerate() {
                    if node.child.is_none() {
                        continue;
                    }
                    let url = format!("{}/v1/sys/health", node.address);
                    if let Ok(resp) = self.http.get(&url).send().await
                        && resp.status() == 200
                    {
                        return Some(i);
                    }
                }
                None
            },
        )
        .await
    }

    /// Kills node `i` (SIGKILL: no clean shutdown, no step-down).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Enables a KV v2 secrets engine at `path` and waits until it serves reads.
    pub async fn enable_kv2(&self, path: &str) {
        let (status, body) = self
            .call(
                "POST",
                &format!("sys/mounts/{path}"),
                Some(json!({"type": "kv", "options": {"version": "2"}})),
            )
            .await;
        assert!(
            status == 204 || status == 200,
            "enable kv-v2 at {path}: {status} {body}"
        );
        eventually_every(
            LIMIT,
            Duration::from_millis(50),
            format_args!("the KV v2 mount {path} to serve reads"),
            async || {
                self.call("GET", &format!("{path}/data/ready-probe"), None)
                    .await
                    .0
                    == 404
            },
        )
        .await;
    }

    /// One API call with the root token to the first node still running that answers:
    /// `(status, JSON body or Null)`; `(0, Null)` when none answers.
    pub async fn call(&self, method: &str, api: &str, body: Option<Value>) -> (u16, Value) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                continue;
            }
            if let Some(answer) = self.try_call_at(i, method, api, body.clone()).await {
                return answer;
            }
        }
        (0, Value::Null)
    }

    /// [`OpenBaoCluster::call`] to node `i`, which must answer.
    pub async fn call_at(
        &self,
        i: usize,
        method: &str,
        api: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.try_call_at(i, method, api, body)
            .await
            .unwrap_or_else(|| panic!("OpenBao node {i} did not answer {api}"))
    }

    async fn try_call_at(
        &self,
        i: usize,
        method: &str,
        api: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
        let mut req = self
            .http
            .request(method, format!("{}/v1/{api}", self.nodes[i].address));
        if !self.token.is_empty() {
            req = req.header("X-Vault-Token", &self.token);
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.ok()?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.ok()?;
        Some((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }
}

impl Drop for OpenBaoCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
