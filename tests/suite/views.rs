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
            other_addresses: Vec::new(),
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

    /// A config like [`Env::config`] with the policy's grace lines `policy` and one view
    /// of the key pair per `(mount, path, interval)`.
    fn config_views(&self, policy: &str, views: &[(&str, &str, &str)]) -> Config {
        let mut text = format!(
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
{policy}
generator = {{ type = "ed25519" }}
max_attempts = 1

[[secrets]]
tenant = "tenant1"
key = "signing"
policy = "keys"
"#,
            address = self.address,
            mount = self.mount,
            dir = self.dir.path().display(),
            token = self.token_file.display(),
        );
        for (mount, path, interval) in views {
            text.push_str(&format!(
                r#"
[[publish]]
type = "vault"
mount = "{mount}"
path = "{path}"
interval = "{interval}"
fields = {{ private = "tenant1/signing#private_key", public = "tenant1/signing#public_key" }}
"#
            ));
        }
        Config::from_str_with_env(&text, "views.toml", &|_| None).expect("valid config")
    }

    /// The version the view at `mount/path` shows, `None` when it does not exist (or its
    /// mount does not).
    async fn shows(&self, mount: &str, path: &str) -> Option<(u64, String, String)> {
        let (status, body) = self
            .bao
            .call("GET", &format!("{mount}/data/{path}"), None)
            .await;
        if status != 200 {
            return None;
        }
        let data = body.pointer("/data/data").and_then(Value::as_object)?;
        let doc: BTreeMap<String, String> = data
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        consistent(&doc).ok().flatten()
    }

    async fn start_tree(&self, cfg: &Config, switch: &NoneTarget) -> (Tree, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(
            VaultStore::open(self.settings())
                .await
                .expect("open the Vault store"),
        );
        self.start_tree_over(cfg, switch, store).await
    }

    /// [`Env::start_tree`] over the store `store`.
    async fn start_tree_over(
        &self,
        cfg: &Config,
        switch: &NoneTarget,
        store: Arc<dyn Store>,
    ) -> (Tree, Arc<dyn Store>) {
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

/// What a reader has recorded so far: every distinct document, every inconsistency, and
/// how many polls it made.
#[derive(Debug, Default)]
struct Reading {
    seen: Vec<Seen>,
    bad: Vec<String>,
    polls: u64,
}

/// Polls the view every `every` until stopped; records every distinct document and every
/// inconsistency.
fn spawn_reader(
    env: Arc<Env>,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<Seen>, Vec<String>)> {
    spawn_shared_reader(env, every, stop, Arc::default())
}

/// [`spawn_reader`] that also keeps what it read in `shared`, so a test can check the
/// documents seen so far while the reader goes on.
fn spawn_shared_reader(
    env: Arc<Env>,
    every: Duration,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Reading>>,
) -> tokio::task::JoinHandle<(Vec<Seen>, Vec<String>)> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let doc = env.view().await;
            let at = Utc::now();
            {
                let mut r = shared.lock().expect("reading");
                r.polls += 1;
                let Reading { seen, bad, .. } = &mut *r;
                if let Some(doc) = doc {
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
            }
            tokio::time::sleep(every).await;
        }
        let mut r = shared.lock().expect("reading");
        (std::mem::take(&mut r.seen), std::mem::take(&mut r.bad))
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
    promoted_only(Writer::View).await;
}

/// The same rotations and checks with a naive writer instead of the view: a document
/// written when each version is generated (before apply, test and promotion), as consumers
/// saw rotor's values before views. It must fail, and by the promotion check ("the view
/// showed version N ..., which was never promoted" or "... before its promotion"), which
/// proves the checks above can fail. Ignored because it fails on purpose; run it with
/// `cargo test --test tests views::a_naive_writer -- --ignored`.
///
/// A first version of this demonstration failed by a timeout instead: its checks ran only
/// once all rotations were done, and the scenario waits for the document to show each
/// current version; after the rollback a naive writer never writes the restored version
/// again (it writes only what is generated), so that wait timed out before any check ran.
/// The scenario now checks what the reader has seen at every step, after the reader has
/// polled at least twice since the step, so the first unpromoted document fails the test
/// where it appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fails on purpose: shows the reader checks catch a writer of unpromoted values"]
async fn a_naive_writer_fails_the_promoted_only_checks() {
    promoted_only(Writer::NaiveAtGenerate).await;
}

/// Who writes the document the reader polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// rotor's view (`[[publish]] type = "vault"`).
    View,
    /// No view; [`NaiveStore`] writes the document when a version is generated.
    NaiveAtGenerate,
}

/// A store that, besides storing a version, writes it to the view's document at once: the
/// writer the promoted-only checks must catch. A test stand-in on purpose (rotor has no such
/// writer any more; this is how a consumer of a store path saw values before views).
struct NaiveStore {
    inner: Arc<dyn Store>,
    http: reqwest::Client,
    url: String,
    token: String,
}

#[async_trait::async_trait]
impl rotor::store::ReadValue for NaiveStore {
    async fn read_value(
        &self,
        secret: &SecretRef,
        version: u64,
    ) -> Result<rotor::generator::SecretValue, rotor::store::StoreError> {
        self.inner.read_value(secret, version).await
    }
    async fn current_version(
        &self,
        secret: &SecretRef,
    ) -> Result<Option<u64>, rotor::store::StoreError> {
        self.inner.current_version(secret).await
    }
}

#[async_trait::async_trait]
impl Store for NaiveStore {
    async fn put_version(
        &self,
        secret: &SecretRef,
        version: u64,
        rotation: rotor::domain::RotationId,
        value: &rotor::generator::SecretValue,
        now: DateTime<Utc>,
    ) -> Result<(), rotor::store::StoreError> {
        self.inner
            .put_version(secret, version, rotation, value, now)
            .await?;
        let pair: Value = serde_json::from_slice(value.expose()).expect("a JSON key pair");
        let doc = json!({"data": {
            "private": pair["private_key"], "private_version": version.to_string(),
            "public": pair["public_key"], "public_version": version.to_string(),
        }});
        let resp = self
            .http
            .post(&self.url)
            .header("X-Vault-Token", &self.token)
            .body(doc.to_string())
            .send()
            .await
            .expect("the naive write");
        assert_eq!(resp.status(), 200, "the naive write");
        Ok(())
    }
    async fn commit(
        &self,
        secret: &SecretRef,
        commit: rotor::store::Commit<'_>,
    ) -> Result<(), rotor::store::StoreError> {
        self.inner.commit(secret, commit).await
    }
    async fn journal(
        &self,
        secret: &SecretRef,
    ) -> Result<Option<Vec<u8>>, rotor::store::StoreError> {
        self.inner.journal(secret).await
    }
    async fn versions(
        &self,
        secret: &SecretRef,
    ) -> Result<Vec<rotor::domain::VersionMeta>, rotor::store::StoreError> {
        self.inner.versions(secret).await
    }
    async fn history(
        &self,
        secret: &SecretRef,
        limit: usize,
    ) -> Result<Vec<rotor::domain::HistoryRecord>, rotor::store::StoreError> {
        self.inner.history(secret, limit).await
    }
    async fn secrets(&self) -> Result<Vec<SecretRef>, rotor::store::StoreError> {
        self.inner.secrets().await
    }
    async fn record_get(
        &self,
        ns: &str,
        id: &str,
    ) -> Result<Option<(Vec<u8>, rotor::store::Rev)>, rotor::store::StoreError> {
        self.inner.record_get(ns, id).await
    }
    async fn record_put(
        &self,
        ns: &str,
        id: &str,
        bytes: &[u8],
        expected: Option<rotor::store::Rev>,
    ) -> Result<rotor::store::Rev, rotor::store::StoreError> {
        self.inner.record_put(ns, id, bytes, expected).await
    }
    async fn record_delete(
        &self,
        ns: &str,
        id: &str,
        expected: rotor::store::Rev,
    ) -> Result<(), rotor::store::StoreError> {
        self.inner.record_delete(ns, id, expected).await
    }
    async fn record_list(
        &self,
        ns: &str,
    ) -> Result<Vec<rotor::store::Record>, rotor::store::StoreError> {
        self.inner.record_list(ns).await
    }
    fn fingerprint(&self, value: &[u8]) -> String {
        self.inner.fingerprint(value)
    }
}

/// The promoted-only scenario with `writer` writing the document the reader polls.
async fn promoted_only(writer: Writer) {
    let Some(env) = Env::start().await else {
        return;
    };
    let env = Arc::new(env);
    let cfg = env.config("3s", "50ms");
    let switch = NoneTarget::new(secret());
    let vault: Arc<dyn Store> = Arc::new(
        VaultStore::open(env.settings())
            .await
            .expect("open the Vault store"),
    );
    let (mut tree, store) = match writer {
        Writer::View => env.start_tree_over(&cfg, &switch, vault).await,
        Writer::NaiveAtGenerate => {
            // The same config without its `[[publish]]`: only the naive writer writes.
            let text = cfg_without_views(&env);
            let naive = Arc::new(NaiveStore {
                inner: vault.clone(),
                http: reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .expect("client"),
                url: format!("{}/v1/{}/data/{VIEW_PATH}", env.bao.address(), env.mount),
                token: env.bao.token().to_owned(),
            });
            let (tree, _) = env.start_tree_over(&text, &switch, naive).await;
            (tree, vault)
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Mutex::new(Reading::default()));
    let reader = spawn_shared_reader(
        env.clone(),
        Duration::from_millis(50),
        stop.clone(),
        shared.clone(),
    );
    let admin = admin(&tree);
    let s = secret();
    let mut values = BTreeMap::new();
    // Checks every document seen so far, once the reader has polled twice more.
    let checkpoint = async |values: &BTreeMap<u64, Value>| {
        let polls = shared.lock().expect("reading").polls;
        eventually(LIMIT, "the reader to poll twice more", async || {
            shared.lock().expect("reading").polls >= polls + 2
        })
        .await;
        let (seen, bad) = {
            let r = shared.lock().expect("reading");
            (r.seen.clone(), r.bad.clone())
        };
        assert!(bad.is_empty(), "inconsistent documents: {bad:?}");
        check_seen(&*store, &seen, values).await;
    };
    wait_phase(&tree, "idle").await;
    // The phase is `idle` before the first version exists too; the view showing it is what
    // says that it does.
    wait_view(&env, 1).await;
    remember(&*store, 1, &mut values).await;
    checkpoint(&values).await;
    let mut failed = 0;
    for round in 0..3 {
        // Succeeds; grace ends.
        admin.rotate(s.clone()).await.expect("rotate");
        let v = wait_phase(&tree, "grace").await.expect("a current version");
        remember(&*store, v, &mut values).await;
        checkpoint(&values).await;
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
            checkpoint(&values).await;
            switch.heal();
            failed += 1;
        }
        // Succeeds, then is rolled back during grace: the view returns to `v`.
        admin.rotate(s.clone()).await.expect("rotate");
        let w = wait_phase(&tree, "grace").await.expect("a current version");
        assert!(w > v);
        remember(&*store, w, &mut values).await;
        checkpoint(&values).await;
        wait_view(&env, w).await;
        admin.rollback(s.clone()).await.expect("rollback");
        wait_phase(&tree, "idle").await;
        checkpoint(&values).await;
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

/// [`Env::config`]`("3s", _)` without its `[[publish]]` table.
fn cfg_without_views(env: &Env) -> Config {
    env.config_views("grace = \"3s\"", &[])
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

/// Promotion to view latency (p50, p99 over 20 rotations) at the default view interval of
/// 1 s, and OpenBao requests per rotation, from OpenBao's audit log. Printed for the
/// report; bounded generously. The view follows the rotation actor's nudge after the
/// commit, so the latency is a reconcile's, not up to one interval's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_to_view_latency_and_requests_per_rotation() {
    const ROTATIONS: usize = 20;
    let Some(env) = Env::start().await else {
        return;
    };
    let proxy = CountingProxy::start(env.bao.address().to_owned()).await;
    let mut env = env;
    env.address = proxy.address.clone();
    let interval = "1s";
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

/// The first version, once it is promoted and the secret idle.
async fn wait_first(tree: &Tree) -> u64 {
    eventually(LIMIT, "the first version", async || {
        match phase(tree).await? {
            (p, Some(current)) if p == "idle" => Some(current),
            _ => None,
        }
    })
    .await
}

/// The line of `rotor_view_lag_expiries_total` for `view`, once the tree exports it.
async fn lag_expiries(tree: &Tree, view: &str) -> Option<String> {
    let text = admin(tree).metrics_text().await.expect("metrics");
    let prefix = format!("rotor_view_lag_expiries_total{{view=\"{view}\"}} ");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .map(|l| l[prefix.len()..].to_owned())
}

/// A view that cannot be written (its KV mount does not exist) holds the previous version
/// past its grace until `max_grace_extension`; then it expires anyway, counted in
/// `rotor_view_lag_expiries_total{view}` (exported at zero until then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_that_cannot_be_written_holds_expiry_until_max_grace_extension() {
    let Some(env) = Env::start().await else {
        return;
    };
    let missing = format!("kv-missing-{}", random_name(6));
    let view = format!("{missing}/apps/lag");
    let cfg = env.config_views(
        "grace = \"2s\"\nexpire_after = \"grace_and_consumers\"\nmax_grace_extension = \"8s\"",
        &[(&missing, "apps/lag", "1s")],
    );
    let switch = NoneTarget::new(secret());
    let (mut tree, _) = env.start_tree(&cfg, &switch).await;
    wait_first(&tree).await;
    assert_eq!(lag_expiries(&tree, &view).await.as_deref(), Some("0"));
    admin(&tree).rotate(secret()).await.expect("rotate");
    let promoted = Instant::now();
    wait_phase(&tree, "grace").await;
    // Past the grace of 2 s, well before its end plus the extension of 8 s.
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(promoted.elapsed())).await;
    let (p, _) = phase(&tree).await.expect("phase");
    assert_eq!(
        p, "grace",
        "the previous version expired while the view lagged"
    );
    wait_phase(&tree, "idle").await;
    assert!(
        promoted.elapsed() >= Duration::from_secs(8),
        "expired {:?} after promotion, before grace plus max_grace_extension",
        promoted.elapsed()
    );
    assert_eq!(lag_expiries(&tree, &view).await.as_deref(), Some("1"));
    let _ = tree.shutdown(Duration::from_secs(5)).await;
}

/// Two views of one secret, the second unwritable until its mount appears: past grace the
/// previous version stays valid while the second view lags, and expires once both show
/// the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_version_expires_only_once_every_view_shows_the_new_one() {
    let Some(env) = Env::start().await else {
        return;
    };
    let late = format!("kv-late-{}", random_name(6));
    let cfg = env.config_views(
        "grace = \"2s\"",
        &[(&env.mount, "apps/a", "1s"), (&late, "apps/b", "1s")],
    );
    let switch = NoneTarget::new(secret());
    let (mut tree, _) = env.start_tree(&cfg, &switch).await;
    wait_first(&tree).await;
    admin(&tree).rotate(secret()).await.expect("rotate");
    let promoted = Instant::now();
    let v = wait_phase(&tree, "grace").await.expect("current");
    eventually(
        LIMIT,
        "the first view to show the new version",
        async || {
            env.shows(&env.mount, "apps/a")
                .await
                .is_some_and(|(shown, _, _)| shown == v)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(promoted.elapsed())).await;
    let (p, _) = phase(&tree).await.expect("phase");
    assert_eq!(
        p, "grace",
        "the previous version expired while the second view did not show version {v}"
    );
    env.bao.enable_kv2(&late).await;
    wait_phase(&tree, "idle").await;
    assert_eq!(
        env.shows(&late, "apps/b").await.map(|(shown, _, _)| shown),
        Some(v),
        "expired before the second view showed the new version"
    );
    let _ = tree.shutdown(Duration::from_secs(5)).await;
}

/// With views ticking only once an hour, a promotion and a rollback in grace still reach
/// every view at once (the rotation actor nudges them after its commit): after the
/// rollback each shows the restored version's values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_in_grace_reaches_every_view_at_once() {
    let Some(env) = Env::start().await else {
        return;
    };
    let cfg = env.config_views(
        "grace = \"30m\"",
        &[(&env.mount, "apps/a", "1h"), (&env.mount, "apps/b", "1h")],
    );
    let switch = NoneTarget::new(secret());
    let (mut tree, store) = env.start_tree(&cfg, &switch).await;
    let first = wait_first(&tree).await;
    let mut values = BTreeMap::new();
    remember(&*store, first, &mut values).await;
    let every_view_shows = async |v: u64| {
        eventually(LIMIT, format_args!("every view to show {v}"), async || {
            for path in ["apps/a", "apps/b"] {
                let (shown, private, public) = env.shows(&env.mount, path).await?;
                if shown != v {
                    return None;
                }
                if let Some(json) = values.get(&v) {
                    assert!(
                        json["private_key"] == private.as_str()
                            && json["public_key"] == public.as_str(),
                        "{path} shows other values than version {v}"
                    );
                }
            }
            Some(())
        })
        .await
    };
    every_view_shows(first).await;
    admin(&tree).rotate(secret()).await.expect("rotate");
    let second = wait_phase(&tree, "grace").await.expect("current");
    assert_ne!(second, first);
    every_view_shows(second).await;
    admin(&tree).rollback(secret()).await.expect("rollback");
    eventually(
        LIMIT,
        "the rollback to restore the first version",
        async || phase(&tree).await.is_some_and(|(_, c)| c == Some(first)),
    )
    .await;
    every_view_shows(first).await;
    let _ = tree.shutdown(Duration::from_secs(5)).await;
}
