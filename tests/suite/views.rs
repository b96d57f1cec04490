//! Vault KV views (`[[publish]] type = "vault"`) on a private OpenBao: the whole rotation
//! tree in-process over the Vault store, with a view of one secret whose value is JSON
//! (an `ed25519` key pair: two fields). A reader polls the view as a CSI provider would
//! and checks it never shows a value that was not promoted, nor a document mixing
//! versions; start-up repairs a stale view; a second writer's check-and-set race leaves no
//! partial document; and the promotion-to-view latency and the requests per rotation are
//! measured and printed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::embedded::admin;
use crate::common::openbao::{OpenBao, random_name};
use crate::common::wait::eventually;
use rotor::actors::tree::{self, Tree, TreeOptions};
use rotor::api::Admin as _;
use rotor::clock::Clock;
use rotor::config::Config;
use rotor::domain::SecretRef;
use rotor::metrics::Metrics;
use rotor::store::Store;
use rotor::store::vault::{VaultAuth, VaultSettings, VaultStore};
use rotor::target::Target;
use rotor::target::none::NoneTarget;

const VIEW_PATH: &str = "apps/signing";
const LIMIT: Duration = Duration::from_secs(60);

struct Env {
    bao: OpenBao,
    /// Where rotor reaches OpenBao: its address, or a proxy in front of it.
    address: String,
    mount: String,
    dir: tempfile::TempDir,
    token_file: PathBuf,
}

impl Env {
    async fn start() -> Option<Env> {
        let bao = OpenBao::start().await?;
        let mount = format!("kv-{}", random_name(8));
        bao.enable_kv2(&mount).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{}\n", bao.token())).expect("write token");
        Some(Env {
            address: bao.address().to_owned(),
            bao,
            mount,
            dir,
            token_file,
        })
    }

    fn settings(&self) -> VaultSettings {
        VaultSettings {
            address: self.address.clone(),
            mount: self.mount.clone(),
            path_prefix: "prod".into(),
            namespace: None,
            ca_file: None,
            master_key_file: self.dir.path().join("master.key"),
            timeout: Duration::from_secs(10),
            max_attempts: 4,
            retry_backoff: Duration::from_millis(10),
            auth: VaultAuth::Token {
                token_file: self.token_file.clone(),
            },
            proxy: None,
            allow_insecure_http: false,
        }
    }

    /// A config with the Vault store, one secret under a manual-ish policy with `grace`,
    /// and a view of its key pair reconciled every `interval`.
    fn config(&self, grace: &str, interval: &str) -> Config {
        let text = format!(
            r#"
[store]
type = "vault"
address = "{address}"
mount = "{mount}"
path_prefix = "prod"
master_key_file = "{dir}/master.key"
auth = {{ method = "token", token_file = "{token}" }}

[runtime]
retry_backoff = "1s"
retry_backoff_max = "2s"

[policies.keys]
interval = "1h"
grace = "{grace}"
generator = {{ type = "ed25519" }}
max_attempts = 1

[[secrets]]
tenant = "tenant1"
key = "signing"
policy = "keys"

[[publish]]
type = "vault"
path = "{VIEW_PATH}"
interval = "{interval}"
fields = {{ private = "tenant1/signing#private_key", public = "tenant1/signing#public_key" }}
"#,
            address = self.address,
            mount = self.mount,
            dir = self.dir.path().display(),
            token = self.token_file.display(),
        );
        Config::from_str_with_env(&text, "views.toml", &|_| None).expect("valid config")
    }

    async fn start_tree(&self, cfg: &Config, switch: &NoneTarget) -> (Tree, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(
            VaultStore::open(self.settings())
                .await
                .expect("open the Vault store"),
        );
        let switch = switch.sharing_failures(secret());
        let options = TreeOptions {
            clock: Clock::System,
            target_override: Some(Arc::new(move |s: &SecretRef| {
                Arc::new(switch.sharing_failures(s.clone())) as Arc<dyn Target>
            })),
            namespace: format!("{}/{}/", self.dir.path().display(), random_name(6)),
            ..TreeOptions::default()
        };
        let tree = tree::start(cfg, store.clone(), Metrics::new(), options)
            .await
            .expect("tree starts");
        (tree, store)
    }

    /// The view's data, or `None` when it does not exist.
    async fn view(&self) -> Option<BTreeMap<String, String>> {
        let (status, body) = self
            .bao
            .call("GET", &format!("{}/data/{VIEW_PATH}", self.mount), None)
            .await;
        if status == 404 {
            return None;
        }
        assert_eq!(status, 200, "reading the view: {body}");
        let data = body.pointer("/data/data").and_then(Value::as_object)?;
        Some(
            data.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect(),
        )
    }

    async fn write_view(&self, data: Value) {
        let (status, body) = self
            .bao
            .call(
                "POST",
                &format!("{}/data/{VIEW_PATH}", self.mount),
                Some(json!({ "data": data })),
            )
            .await;
        assert!(status == 200 || status == 204, "writing the view: {body}");
    }
}

fn secret() -> SecretRef {
    SecretRef::new("tenant1", "signing").expect("valid")
}

/// One document a reader saw: the version both fields claim, and the values.
#[derive(Debug, Clone)]
struct Seen {
    at: DateTime<Utc>,
    version: u64,
    private: String,
    public: String,
}

/// Checks one document: both fields of the one secret claim the same version, or it is
/// the hand-written `foreign` marker. Returns what it shows.
fn consistent(doc: &BTreeMap<String, String>) -> Result<Option<(u64, String, String)>, String> {
    if doc.contains_key("foreign") {
        return Ok(None);
    }
    let keys: Vec<&str> = doc.keys().map(String::as_str).collect();
    if keys != ["private", "private_version", "public", "public_version"] {
        return Err(format!("fields {keys:?}"));
    }
    if doc["private_version"] != doc["public_version"] {
        return Err(format!(
            "mixed versions: private {} public {}",
            doc["private_version"], doc["public_version"]
        ));
    }
    let version = doc["private_version"]
        .parse()
        .map_err(|_| format!("version {:?}", doc["private_version"]))?;
    Ok(Some((
        version,
        doc["private"].clone(),
        doc["public"].clone(),
    )))
}

/// Polls the view every `every` until stopped; records every distinct document and every
/// inconsistency.
fn spawn_reader(
    env: Arc<Env>,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<Seen>, Vec<String>)> {
    tokio::spawn(async move {
        let mut seen: Vec<Seen> = Vec::new();
        let mut bad = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if let Some(doc) = env.view().await {
                let at = Utc::now();
                match consistent(&doc) {
                    Ok(Some((version, private, public))) => {
                        if seen.last().is_none_or(|s| {
                            s.version != version || s.private != private || s.public != public
                        }) {
                            seen.push(Seen {
                                at,
                                version,
                                private,
                                public,
                            });
                        }
                    }
                    Ok(None) => {}
                    Err(e) => bad.push(e),
                }
            }
            tokio::time::sleep(every).await;
        }
        (seen, bad)
    })
}

/// The values of `version`, read while it is current (an expired version's value is
/// deleted from the store).
async fn remember(store: &dyn Store, version: u64, values: &mut BTreeMap<u64, Value>) {
    let value = store
        .read_value(&secret(), version)
        .await
        .expect("read value");
    values.insert(
        version,
        serde_json::from_slice(value.expose()).expect("a JSON key pair"),
    );
}

/// Every document seen shows a version that had been promoted when it was seen, with that
/// version's values (`values`: every promoted version's, read while it was current).
async fn check_seen(store: &dyn Store, seen: &[Seen], values: &BTreeMap<u64, Value>) {
    let versions = store.versions(&secret()).await.expect("versions");
    for s in seen {
        let meta = versions
            .iter()
            .find(|v| v.version == s.version)
            .unwrap_or_else(|| {
                panic!(
                    "the view showed version {}, which the store lacks",
                    s.version
                )
            });
        let promoted = meta.promoted_at.unwrap_or_else(|| {
            panic!(
                "the view showed version {}, which was never promoted ({meta:?})",
                s.version
            )
        });
        assert!(
            promoted <= s.at,
            "the view showed version {} at {} before its promotion at {promoted}",
            s.version,
            s.at
        );
        let json = values
            .get(&s.version)
            .unwrap_or_else(|| panic!("version {} was shown but never current", s.version));
        assert!(
            json["private_key"] == s.private.as_str() && json["public_key"] == s.public.as_str(),
            "the view showed other values than version {} holds",
            s.version
        );
    }
}

/// The secret's phase and current version, once its actor has reported them.
async fn phase(tree: &Tree) -> Option<(String, Option<u64>)> {
    let entries = admin(tree).schedule().await.expect("schedule");
    let e = entries.first()?;
    Some((e.phase.clone(), e.current_version))
}

async fn wait_phase(tree: &Tree, want: &str) -> Option<u64> {
    eventually(LIMIT, format_args!("phase {want}"), async || {
        let (p, current) = phase(tree).await?;
        (p == want).then_some(current)
    })
    .await
}

/// The view shows `version` (and whatever the reader saw before it).
async fn wait_view(env: &Env, version: u64) {
    eventually(
        LIMIT,
        format_args!("the view to show version {version}"),
        async || {
            env.view()
                .await
                .and_then(|d| consistent(&d).ok().flatten())
                .is_some_and(|(v, _, _)| v == version)
        },
    )
    .await;
}

/// Rotations that succeed, fail at apply, fail at test and roll back during grace, with a
/// reader polling the view every 50 ms: it only ever sees promoted versions, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_only_ever_shows_promoted_versions_whole() {
    let Some(env) = Env::start().await else {
        return;
    };
    let env = Arc::new(env);
    let cfg = env.config("3s", "50ms");
    let switch = NoneTarget::new(secret());
    let (mut tree, store) = env.start_tree(&cfg, &switch).await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(env.clone(), Duration::from_millis(50), stop.clone());
    let admin = admin(&tree);
    let s = secret();
    wait_phase(&tree, "idle").await;
    wait_view(&env, 1).await;
    let mut values = BTreeMap::new();
    remember(&*store, 1, &mut values).await;
    let mut failed = 0;
    for round in 0..3 {
        // Succeeds; grace ends.
        admin.rotate(s.clone()).await.expect("rotate");
        let v = wait_phase(&tree, "grace").await.expect("a current version");
        remember(&*store, v, &mut values).await;
        wait_view(&env, v).await;
        wait_phase(&tree, "idle").await;
        // Fails at apply, then at test: the view keeps the current version.
        for step in ["apply", "test"] as [&'static str; 2] {
            switch.fail(step);
            admin.rotate(s.clone()).await.expect("rotate");
            let (p, current) = (wait_phase(&tree, "stuck").await, v);
            assert_eq!(
                p,
                Some(current),
                "round {round}: a failed {step} keeps the current"
            );
            switch.heal();
            failed += 1;
        }
        // Succeeds, then is rolled back during grace: the view returns to `v`.
        admin.rotate(s.clone()).await.expect("rotate");
        let w = wait_phase(&tree, "grace").await.expect("a current version");
        assert!(w > v);
        remember(&*store, w, &mut values).await;
        wait_view(&env, w).await;
        admin.rollback(s.clone()).await.expect("rollback");
        wait_phase(&tree, "idle").await;
        wait_view(&env, v).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (seen, bad) = reader.await.expect("reader");
    assert!(bad.is_empty(), "inconsistent documents: {bad:?}");
    check_seen(&*store, &seen, &values).await;
    let shown: Vec<u64> = seen.iter().map(|s| s.version).collect();
    println!(
        "views: versions the reader saw, in order: {shown:?} ({failed} failed attempts never shown)"
    );
    let _ = tree.shutdown(Duration::from_secs(5)).await;
}

/// A view left stale while rotor was down (another version's number, a value that is not
/// the current one) is rewritten at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_view_is_repaired_at_start_up() {
    let Some(env) = Env::start().await else {
        return;
    };
    let cfg = env.config("3s", "1s");
    let switch = NoneTarget::new(secret());
    let (mut tree, _) = env.start_tree(&cfg, &switch).await;
    wait_view(&env, 1).await;
    let _ = tree.shutdown(Duration::from_secs(5)).await;
    let good = env.view().await.expect("the view");
    env.write_view(json!({
        "private": "stale", "private_version": "1",
        "public": good["public"], "public_version": "1",
    }))
    .await;
    let (mut tree, _) = env.start_tree(&cfg, &switch).await;
    eventually(LIMIT, "the view to be repaired", async || {
        env.view().await.as_ref() == Some(&good)
    })
    .await;
    let _ = tree.shutdown(Duration::from_secs(5)).await;
}

/// Another writer keeps writing the document while rotor reconciles it: rotor's
/// check-and-set writes lose some races (counted as `conflict`), no document is ever
/// partial or mixed, and once the other writer stops the view converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_loses_no_document_and_the_view_converges() {
    let Some(env) = Env::start().await else {
        return;
    };
    let env = Arc::new(env);
    let cfg = env.config("3s", "50ms");
    let switch = NoneTarget::new(secret());
    let (mut tree, _) = env.start_tree(&cfg, &switch).await;
    wait_view(&env, 1).await;
    let good = env.view().await.expect("the view");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(env.clone(), Duration::from_millis(5), stop.clone());
    let hammer_stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let env = env.clone();
        let hammer_stop = hammer_stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !hammer_stop.load(Ordering::Relaxed) {
                n += 1;
                env.write_view(json!({ "foreign": n.to_string() })).await;
            }
            n
        })
    };
    let admin = admin(&tree);
    eventually(LIMIT, "a lost check-and-set", async || {
        admin
            .metrics_text()
            .await
            .expect("metrics")
            .lines()
            .any(|l| {
                l.starts_with("rotor_view_writes_total{") && l.contains("outcome=\"conflict\"")
            })
    })
    .await;
    hammer_stop.store(true, Ordering::Relaxed);
    let writes = hammer.await.expect("hammer");
    eventually(LIMIT, "the view to converge", async || {
        env.view().await.as_ref() == Some(&good)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (_, bad) = reader.await.expect("reader");
    assert!(bad.is_empty(), "partial or mixed documents: {bad:?}");
    println!(
        "views: the second writer wrote {writes} documents; rotor lost at least one check-and-set and converged"
    );
    let _ = tree.shutdown(Duration::from_secs(5)).await;
}

/// A loopback TCP proxy to OpenBao that records the request line of every HTTP request
/// passing through (OpenBao refuses to enable an audit device through its API).
struct CountingProxy {
    address: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl CountingProxy {
    async fn start(upstream: String) -> CountingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("address"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let upstream = upstream.trim_start_matches("http://").to_owned();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let back = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    });
                    let mut buf: Vec<u8> = Vec::new();
                    let mut chunk = [0u8; 16 * 1024];
                    loop {
                        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                        let n = match cr.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        // A JSON body cannot hold a raw CRLF, so this marks request lines.
                        const MARK: &[u8] = b" HTTP/1.1\r\n";
                        while let Some(end) = buf.windows(MARK.len()).position(|w| w == MARK) {
                            let start = buf[..end]
                                .iter()
                                .rposition(|b| *b == b'\n')
                                .map_or(0, |i| i + 1);
                            // A body without a trailing newline runs into the next
                            // request line: keep from the method on.
                            let text = String::from_utf8_lossy(&buf[start..end]).into_owned();
                            let line = ["GET /", "POST /", "PUT /", "LIST /", "DELETE /"]
                                .iter()
                                .filter_map(|m| text.rfind(m))
                                .max()
                                .map_or(text.clone(), |i| text[i..].to_owned());
                            if let Ok(mut r) = recorded.lock() {
                                r.push(line);
                            }
                            buf.drain(..end + MARK.len());
                        }
                        if sw.write_all(&chunk[..n]).await.is_err() {
                            break;
                        }
                    }
                    back.abort();
                });
            }
        });
        CountingProxy { address, requests }
    }

    /// Requests so far by `METHOD class`: the view's path, the store's paths, or other.
    fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for line in self.requests.lock().expect("lock").iter() {
            let (method, path) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let class = if path.contains(VIEW_PATH) {
                "view"
            } else if path.contains("/_rotor") {
                "store"
            } else {
                "other"
            };
            *counts.entry(format!("{method} {class}")).or_insert(0) += 1;
        }
        counts
    }
}

/// Promotion to view latency (p50, p99 over 20 rotations) and OpenBao requests per
/// rotation, from OpenBao's audit log. Printed for the report; bounded generously.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_to_view_latency_and_requests_per_rotation() {
    const ROTATIONS: usize = 20;
    let Some(env) = Env::start().await else {
        return;
    };
    let proxy = CountingProxy::start(env.bao.address().to_owned()).await;
    let mut env = env;
    env.address = proxy.address.clone();
    let interval = "100ms";
    let cfg = env.config("1s", interval);
    let switch = NoneTarget::new(secret());
    let (mut tree, store) = env.start_tree(&cfg, &switch).await;
    let admin = admin(&tree);
    let s = secret();
    wait_phase(&tree, "idle").await;
    wait_view(&env, 1).await;
    let before = proxy.counts();
    let started = Instant::now();
    let mut latencies = Vec::new();
    for _ in 0..ROTATIONS {
        admin.rotate(s.clone()).await.expect("rotate");
        let v = wait_phase(&tree, "grace").await.expect("current");
        // Poll the view tightly to time when it shows `v`.
        let shown = eventually(LIMIT, format_args!("the view to show {v}"), async || {
            let doc = env.view().await?;
            let (seen, _, _) = consistent(&doc).ok().flatten()?;
            (seen == v).then(Utc::now)
        })
        .await;
        let promoted = store
            .versions(&s)
            .await
            .expect("versions")
            .into_iter()
            .find(|m| m.version == v)
            .and_then(|m| m.promoted_at)
            .expect("promoted");
        latencies.push((shown - promoted).to_std().unwrap_or_default());
        wait_phase(&tree, "idle").await;
    }
    let elapsed = started.elapsed();
    let _ = tree.shutdown(Duration::from_secs(5)).await;
    let after = proxy.counts();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    let per: BTreeMap<String, f64> = after
        .iter()
        .map(|(k, n)| {
            let d = n - before.get(k).copied().unwrap_or(0);
            (k.clone(), d as f64 / ROTATIONS as f64)
        })
        .collect();
    let total: f64 = per.values().sum();
    println!(
        "views: promotion to view over {ROTATIONS} rotations (view interval {interval}): p50 {:?} p99 {:?} max {:?}; \
         OpenBao requests per rotation {total:.1} (incl. idle ticks over {elapsed:?}): {per:?}",
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or_default(),
    );
    assert!(pct(0.5) < Duration::from_secs(10), "{latencies:?}");
    assert!(
        per.get("POST view").is_some_and(|n| *n >= 1.0),
        "every rotation writes the view once: {per:?}"
    );
}
