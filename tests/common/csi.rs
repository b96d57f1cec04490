//! A stand-in for the Secrets Store CSI driver with the Vault provider, for tests that
//! run workloads against a Vault view: every `interval` it reads one KV v2 document
//! (`GET /v1/{mount}/data/{path}`, the latest version, as the provider does) and, when the
//! document changed, rewrites each pod's mount with kubelet's atomic `..data` swap
//! ([`super::kubelet::swap`]): one file per document field, so a field `password` and its
//! marker `password_version` land in one swap. Pods poll on their own schedules in a real
//! cluster; here each pod gets its own task with its own phase.
//!
//! Written from the provider's documented behaviour, not from rotor's code: it knows KV v2
//! and kubelet, nothing of rotor.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;

/// One CSI-refreshed pod mount per directory, all fed from one KV v2 document.
pub struct CsiDriver {
    tasks: Vec<JoinHandle<()>>,
}

impl CsiDriver {
    /// Starts one poller per pod directory. `address` and `token` reach the Vault server;
    /// `mount`/`path` name the document.
    pub fn start(
        address: &str,
        token: &str,
        mount: &str,
        path: &str,
        pods: Vec<PathBuf>,
        interval: Duration,
    ) -> CsiDriver {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client");
        let url = format!("{address}/v1/{mount}/data/{path}");
        let n = pods.len().max(1) as u32;
        let tasks = pods
            .into_iter()
            .enumerate()
            .map(|(i, dir)| {
                let (http, url, token) = (http.clone(), url.clone(), token.to_owned());
                // Spread the pods' polls over the interval, as independent kubelets do.
                let phase = interval * i as u32 / n;
                tokio::spawn(async move {
                    tokio::time::sleep(phase).await;
                    let mut shown: Option<BTreeMap<String, String>> = None;
                    loop {
                        if let Some(doc) = read(&http, &url, &token).await
                            && shown.as_ref() != Some(&doc)
                        {
                            let payload: Vec<(&str, &[u8])> = doc
                                .iter()
                                .map(|(k, v)| (k.as_str(), v.as_bytes()))
                                .collect();
                            let dir = dir.clone();
                            let owned: Vec<(String, Vec<u8>)> = payload
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_vec()))
                                .collect();
                            tokio::task::spawn_blocking(move || {
                                let p: Vec<(&str, &[u8])> = owned
                                    .iter()
                                    .map(|(k, v)| (k.as_str(), v.as_slice()))
                                    .collect();
                                super::kubelet::swap(&dir, &p);
                            })
                            .await
                            .expect("the swap");
                            shown = Some(doc);
                        }
                        tokio::time::sleep(interval).await;
                    }
                })
            })
            .collect();
        CsiDriver { tasks }
    }
}

impl Drop for CsiDriver {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The document's fields as strings, or `None` when it cannot be read (missing, the
/// server down): the mount then keeps what it has, as the driver does.
async fn read(http: &reqwest::Client, url: &str, token: &str) -> Option<BTreeMap<String, String>> {
    let resp = http
        .get(url)
        .header("X-Vault-Token", token)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let body: Value = serde_json::from_slice(&resp.bytes().await.ok()?).ok()?;
    let data = body["data"]["data"].as_object()?;
    Some(
        data.iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect(),
    )
}
