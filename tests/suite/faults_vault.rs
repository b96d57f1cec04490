//! Vault faults on a real OpenBao (the rows of `tests/suite/FAULTS.md` marked Vault): the
//! server sealed mid-rotation, a token whose policy starts denying the store's paths (403),
//! a second writer winning the check-and-set on the store's state document and on a view
//! document, and the server restarted mid-rotation (a persistent server with raft storage:
//! a dev server would come back empty). Then `kill -9` of the real `rotor` binary
//! mid-rotation, several times, with the Vault store, a Vault view and an AWS Secrets
//! Manager view of the same secret on a private moto, each polled by a reader.
//!
//! Each fault test runs the whole tree in-process over the Vault store, one secret whose
//! value has two fields (an ed25519 key pair) and a Vault view of both, with a reader
//! polling the view every 50 ms as a CSI provider would. The fault is injected while the
//! target's `apply` step is in flight (every step of the test target takes a while, so the
//! rotation is reliably mid-way), and each test asserts: nothing is promoted while the
//! fault lasts (the promotion's `promoted_at` is after the fault cleared); the reader never
//! saw a version before its promotion nor a document mixing versions; the store's labels
//! end consistent (one `current`, the old one `previous`, nothing pending); the metric the
//! fault shows; and recovery by itself once it clears, timed from the clearing to the
//! view showing the new version and printed for FAULTS.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::aws_reader::{AWSCURRENT, AWSPREVIOUS, AwsView, check_polls};
use crate::common::embedded::admin;
use crate::common::moto::{Moto, REGION};
use crate::common::openbao::{OpenBao, random_name};
use crate::common::rotor_bin::{RotorBin, free_port};
use crate::common::wait::{eventually, eventually_every};
use rotor::actors::tree::{self, Tree, TreeOptions};
use rotor::api::Admin as _;
use rotor::clock::Clock;
use rotor::config::Config;
use rotor::domain::{Label, SecretRef, VersionMeta};
use rotor::metrics::Metrics;
use rotor::store::vault::{VaultAuth, VaultSettings, VaultStore};
use rotor::store::{ReadValue as _, Store};
use rotor::target::Target;
use rotor::target::none::NoneTarget;

/// Generous: the machine is shared by several builds and test runs at once.
const LIMIT: Duration = Duration::from_secs(90);
const VIEW_PATH: &str = "apps/signing";
const PREFIX: &str = "prod";

fn secret() -> SecretRef {
    SecretRef::new("tenant1", "signing").expect("valid")
}

/// One document the reader saw: when, the version both fields claim, and the values.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: DateTime<Utc>,
    pub version: u64,
    pub private: String,
    pub public: String,
}

/// What a reader of the view recorded: every distinct document and every inconsistent one.
#[derive(Debug, Default)]
pub struct Reading {
    pub seen: Vec<Seen>,
    pub bad: Vec<String>,
    pub polls: u64,
}

/// Checks one view document: both fields of the one secret, each with its `NAME_version`,
/// both claiming the same version. A document with a `foreign` field is a second writer's
/// (the CAS test writes those) and is skipped.
fn consistent(
    doc: &serde_json::Map<String, Value>,
) -> Result<Option<(u64, String, String)>, String> {
    if doc.contains_key("foreign") {
        return Ok(None);
    }
    let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
    let keys: Vec<&str> = doc.keys().map(String::as_str).collect();
    if keys != ["private", "private_version", "public", "public_version"] {
        return Err(format!("fields {keys:?}"));
    }
    let (pv, qv) = (text("private_version"), text("public_version"));
    if pv != qv {
        return Err(format!("mixed versions: private {pv:?} public {qv:?}"));
    }
    let version = pv
        .as_deref()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("version {pv:?}"))?;
    Ok(Some((
        version,
        text("private").unwrap_or_default(),
        text("public").unwrap_or_default(),
    )))
}

/// A reader of the view, running until stopped; what it has read so far is shared.
pub struct Reader {
    stop: Arc<AtomicBool>,
    reading: Arc<Mutex<Reading>>,
    task: tokio::task::JoinHandle<()>,
}

impl Reader {
    /// Whether the reader has seen `version`.
    pub fn saw(&self, version: u64) -> bool {
        self.reading
            .lock()
            .expect("reading")
            .seen
            .iter()
            .any(|s| s.version == version)
    }

    /// Stops the reader and hands over what it read.
    pub async fn finish(self) -> Reading {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("reader");
        std::mem::take(&mut *self.reading.lock().expect("reading"))
    }
}

/// Polls `{mount}/data/{VIEW_PATH}` every 50 ms, with its own client: a sealed, denied or
/// stopped server is skipped over (the reader is a consumer and retries), never a failure
/// of the reader.
pub fn spawn_reader(address: String, token: String, mount: String) -> Reader {
    let stop = Arc::new(AtomicBool::new(false));
    let reading = Arc::new(Mutex::new(Reading::default()));
    let task = {
        let stop = stop.clone();
        let shared = reading.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("client");
            let url = format!("{address}/v1/{mount}/data/{VIEW_PATH}");
            while !stop.load(Ordering::Relaxed) {
                shared.lock().expect("reading").polls += 1;
                let got = async {
                    let resp = http
                        .get(&url)
                        .header("X-Vault-Token", &token)
                        .send()
                        .await
                        .ok()?;
                    if resp.status() != 200 {
                        return None;
                    }
                    let body: Value = serde_json::from_slice(&resp.bytes().await.ok()?).ok()?;
                    body.pointer("/data/data")
                        .and_then(Value::as_object)
                        .cloned()
                }
                .await;
                // Stamped after the answer: the document was there at least by then.
                let at = Utc::now();
                if let Some(doc) = got {
                    let mut r = shared.lock().expect("reading");
                    match consistent(&doc) {
                        Ok(Some((version, private, public))) => {
                            if r.seen.last().is_none_or(|s| {
                                s.version != version || s.private != private || s.public != public
                            }) {
                                r.seen.push(Seen {
                                    at,
                                    version,
                                    private,
                                    public,
                                });
                            }
                        }
                        Ok(None) => {}
                        Err(e) => r.bad.push(e),
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    Reader {
        stop,
        reading,
        task,
    }
}

/// Every document seen shows a version that had been promoted when it was seen (its
/// `promoted_at` in the store's metadata at or before the reading), with that version's
/// values (`values`: each promoted version's key pair).
pub fn check_seen(versions: &[VersionMeta], seen: &[Seen], values: &BTreeMap<u64, Value>) {
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
                "the view showed version {} at {}, which was never promoted ({meta:?})",
                s.version, s.at
            )
        });
        assert!(
            promoted <= s.at,
            "the view showed version {} at {} before its promotion at {promoted}",
            s.version,
            s.at
        );
        if let Some(json) = values.get(&s.version) {
            assert!(
                json["private_key"] == s.private.as_str()
                    && json["public_key"] == s.public.as_str(),
                "the view showed other values than version {} holds",
                s.version
            );
        }
    }
}

/// The labels of the store, checked: exactly one `current`, at most one of each label,
/// nothing pending once a rotation is over. Returns `(current, previous)`.
fn labels_consistent(versions: &[VersionMeta]) -> (u64, Option<u64>) {
    let with = |l: Label| -> Vec<u64> {
        versions
            .iter()
            .filter(|v| v.labels.contains(&l))
            .map(|v| v.version)
            .collect()
    };
    let current = with(Label::Current);
    assert_eq!(current.len(), 1, "one current: {versions:?}");
    let previous = with(Label::Previous);
    assert!(previous.len() <= 1, "one previous at most: {versions:?}");
    assert!(
        with(Label::Pending).is_empty(),
        "nothing pending: {versions:?}"
    );
    (current[0], previous.first().copied())
}

/// The fault a test injects mid-rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `sys/seal`, as `bao operator seal`.
    Sealed,
    /// The token's policy is rewritten to deny the store's paths.
    Denied,
    /// A second writer rewrites the store's state document (same content, new KV version).
    StoreCas,
    /// A second writer keeps writing the view's document.
    ViewCas,
    /// The (persistent) server is killed and started again.
    Restarted,
}

/// A policy for the store's token: everything in the test's mount; with `deny`, not the
/// store's own paths (the view's path stays allowed).
fn policy(mount: &str, deny: bool) -> String {
    let mut hcl = format!(
        "path \"{mount}/*\" {{ capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"] }}\n"
    );
    if deny {
        for kind in ["data", "metadata"] {
            hcl.push_str(&format!(
                "path \"{mount}/{kind}/{PREFIX}/_rotor/*\" {{ capabilities = [\"deny\"] }}\n"
            ));
        }
    }
    hcl
}

struct Rig {
    bao: OpenBao,
    mount: String,
    dir: tempfile::TempDir,
    token_file: PathBuf,
}

impl Rig {
    async fn start(fault: Fault) -> Option<Rig> {
        let bao = if fault == Fault::Restarted {
            OpenBao::start_persistent().await?
        } else {
            OpenBao::start().await?
        };
        let mount = format!("kv-{}", random_name(8));
        bao.enable_kv2(&mount).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("token");
        let token = if fault == Fault::Denied {
            bao.write_policy("rotor", &policy(&mount, false)).await;
            bao.policy_token("rotor").await
        } else {
            bao.token().to_owned()
        };
        std::fs::write(&token_file, format!("{token}\n")).expect("write token");
        Some(Rig {
            bao,
            mount,
            dir,
            token_file,
        })
    }

    fn settings(&self) -> VaultSettings {
        VaultSettings {
            address: self.bao.address().to_owned(),
            other_addresses: Vec::new(),
            mount: self.mount.clone(),
            path_prefix: PREFIX.into(),
            namespace: None,
            ca_file: None,
            master_key_file: self.dir.path().join("master.key"),
            timeout: Duration::from_secs(5),
            max_attempts: 3,
            retry_backoff: Duration::from_millis(50),
            auth: VaultAuth::Token {
                token_file: self.token_file.clone(),
            },
            proxy: None,
            allow_insecure_http: false,
        }
    }

    /// The Vault store, one secret under a manual policy with an hour of grace and twenty
    /// attempts, retries every second, and a view of its key pair every 200 ms.
    fn config(&self) -> Config {
        let text = format!(
            r#"
[store]
type = "vault"
address = "{address}"
mount = "{mount}"
path_prefix = "{PREFIX}"
master_key_file = "{dir}/master.key"
auth = {{ method = "token", token_file = "{token}" }}

[runtime]
retry_backoff = "1s"
retry_backoff_max = "2s"

[policies.keys]
manual = true
grace = "1h"
generator = {{ type = "ed25519" }}
max_attempts = 20

[[secrets]]
tenant = "tenant1"
key = "signing"
policy = "keys"

[[publish]]
type = "vault"
path = "{VIEW_PATH}"
interval = "200ms"
fields = {{ private = "tenant1/signing#private_key", public = "tenant1/signing#public_key" }}
"#,
            address = self.bao.address(),
            mount = self.mount,
            dir = self.dir.path().display(),
            token = self.token_file.display(),
        );
        Config::from_str_with_env(&text, "faults_vault.toml", &|_| None).expect("valid config")
    }

    /// The tree over a fresh Vault store; every step of the target takes `step`.
    async fn start_tree(&self, step: Duration) -> (Tree, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(
            VaultStore::open(self.settings())
                .await
                .expect("open the Vault store"),
        );
        let switch = NoneTarget::with_delay(secret(), step);
        let options = TreeOptions {
            clock: Clock::System,
            target_override: Some(Arc::new(move |s: &SecretRef| {
                Arc::new(switch.sharing_failures(s.clone())) as Arc<dyn Target>
            })),
            namespace: format!("{}/{}/", self.dir.path().display(), random_name(6)),
            ..TreeOptions::default()
        };
        let tree = tree::start(&self.config(), store.clone(), Metrics::new(), options)
            .await
            .expect("tree starts");
        (tree, store)
    }

    /// The version the view shows now, if it is readable and whole.
    async fn view_shows(&self) -> Option<u64> {
        let (status, body) = self
            .bao
            .call("GET", &format!("{}/data/{VIEW_PATH}", self.mount), None)
            .await;
        if status != 200 {
            return None;
        }
        let doc = body.pointer("/data/data").and_then(Value::as_object)?;
        consistent(doc).ok().flatten().map(|(v, _, _)| v)
    }

    fn state_doc(&self) -> String {
        format!(
            "{}/data/{PREFIX}/_rotor/{}/{}/_rotor",
            self.mount,
            secret().tenant(),
            secret().key()
        )
    }
}

/// The secret's phase and current version, as the admin API reports them.
async fn phase(tree: &Tree) -> Option<(String, Option<u64>)> {
    let entries = admin(tree).schedule().await.ok()?;
    let e = entries.first()?;
    Some((e.phase.clone(), e.current_version))
}

/// The sum of the series of `metric` whose labels contain `labels` (`""`: all).
async fn metric(tree: &Tree, metric: &str, labels: &str) -> f64 {
    let text = admin(tree).metrics_text().await.expect("metrics");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every metric line of the tree, not at zero, that names a store, view, error, restart or
/// failure, for the test's output.
async fn fault_lines(tree: &Tree) -> Vec<String> {
    let text = admin(tree).metrics_text().await.expect("metrics");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with("rotor_store_up")
                || l.starts_with("secret_rotation_errors_total")
                || l.starts_with("rotor_actor_restarts_total")
                || l.starts_with("rotor_view_writes_total")
                || l.starts_with("rotor_notifications_total{kind=\"rotation_failed\"")
        })
        .filter(|l| !l.ends_with(" 0"))
        .map(str::to_owned)
        .collect()
}

/// Runs one fault mid-rotation and checks the invariants listed in the module doc.
async fn fault_mid_rotation(fault: Fault) {
    let Some(mut rig) = Rig::start(fault).await else {
        return;
    };
    let (mut tree, store) = rig.start_tree(Duration::from_millis(1500)).await;
    let s = secret();
    let first = eventually(LIMIT, "the first version promoted", async || {
        match phase(&tree).await? {
            (p, Some(c)) if p == "idle" => Some(c),
            _ => None,
        }
    })
    .await;
    eventually(LIMIT, "the view to show the first version", async || {
        rig.view_shows().await == Some(first)
    })
    .await;
    let reader = spawn_reader(
        rig.bao.address().to_owned(),
        rig.bao.token().to_owned(),
        rig.mount.clone(),
    );
    let api = admin(&tree);
    api.rotate(s.clone()).await.expect("rotate");
    // Mid-rotation: the new version is stored and its apply (1.5 s) is in flight.
    eventually(LIMIT, "the apply step in flight", async || {
        phase(&tree).await.is_some_and(|(p, _)| p == "staged")
    })
    .await;

    // Inject, and wait until rotor shows the fault.
    let hammer_stop = Arc::new(AtomicBool::new(false));
    let mut hammer = None;
    let (series, labels) = match fault {
        Fault::Sealed => {
            rig.bao.seal().await;
            ("rotor_store_up", "")
        }
        Fault::Denied => {
            rig.bao
                .write_policy("rotor", &policy(&rig.mount, true))
                .await;
            ("rotor_store_up", "")
        }
        Fault::Restarted => {
            rig.bao.stop();
            ("rotor_store_up", "")
        }
        Fault::StoreCas => {
            // Another writer's check-and-set write of the state document: the same
            // content under a new KV version, so the store's fence no longer matches.
            let (status, body) = rig.bao.call("GET", &rig.state_doc(), None).await;
            assert_eq!(status, 200, "the state document");
            let index = body["data"]["metadata"]["version"]
                .as_u64()
                .expect("version");
            let (status, _) = rig
                .bao
                .call(
                    "POST",
                    &rig.state_doc(),
                    Some(json!({"data": body["data"]["data"], "options": {"cas": index}})),
                )
                .await;
            assert_eq!(status, 200, "the second writer's write");
            ("rotor_actor_restarts_total", "kind=\"rotation\"")
        }
        Fault::ViewCas => {
            let address = rig.bao.address().to_owned();
            let token = rig.bao.token().to_owned();
            let url = format!("{address}/v1/{}/data/{VIEW_PATH}", rig.mount);
            let hammer_stop = hammer_stop.clone();
            hammer = Some(tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .expect("client");
                let mut n = 0u64;
                while !hammer_stop.load(Ordering::Relaxed) {
                    n += 1;
                    let _ = http
                        .post(&url)
                        .header("X-Vault-Token", &token)
                        .body(json!({"data": {"foreign": n.to_string()}}).to_string())
                        .send()
                        .await;
                }
                n
            }));
            ("rotor_view_writes_total", "outcome=\"conflict\"")
        }
    };
    let injected = Instant::now();
    eventually(
        LIMIT,
        format_args!("{fault:?}: rotor to show the fault in {series}"),
        async || {
            let v = metric(&tree, series, labels).await;
            let shows = if series == "rotor_store_up" {
                v == 0.0
            } else {
                v > 0.0
            };
            shows.then_some(())
        },
    )
    .await;
    // The fault holds a while (a few of rotor's retries) and nothing is promoted.
    if fault != Fault::ViewCas && fault != Fault::StoreCas {
        tokio::time::sleep(Duration::from_secs(3).saturating_sub(injected.elapsed())).await;
        let (p, current) = phase(&tree).await.expect("phase");
        assert_eq!(
            current,
            Some(first),
            "{fault:?}: promoted during the fault (phase {p})"
        );
    }
    let during = fault_lines(&tree).await;
    // The store's faults stop commits: the rotation actor fails on the commit (and again
    // while loading its journal), is restarted by its supervisor, and the view cannot read
    // the store's labels.
    if fault != Fault::ViewCas {
        assert!(
            metric(&tree, "rotor_actor_restarts_total", "kind=\"rotation\"").await >= 1.0,
            "{fault:?}: {during:?}"
        );
    }
    if matches!(fault, Fault::Sealed | Fault::Denied | Fault::Restarted) {
        assert!(
            metric(&tree, "rotor_view_writes_total", "outcome=\"store_error\"").await >= 1.0,
            "{fault:?}: {during:?}"
        );
    }

    // Clear the fault.
    let cleared_wall = Utc::now();
    let cleared = Instant::now();
    match fault {
        Fault::Sealed => rig.bao.unseal().await,
        Fault::Denied => {
            rig.bao
                .write_policy("rotor", &policy(&rig.mount, false))
                .await
        }
        Fault::Restarted => rig.bao.start_again().await,
        Fault::StoreCas => {}
        Fault::ViewCas => {}
    }
    let store_back = if fault == Fault::ViewCas {
        Duration::ZERO
    } else {
        eventually_every(
            LIMIT,
            Duration::from_millis(20),
            format_args!("{fault:?}: a commit to succeed again"),
            async || (metric(&tree, "rotor_store_up", "").await == 1.0).then(|| cleared.elapsed()),
        )
        .await
    };
    let promoted = eventually(
        LIMIT,
        format_args!("{fault:?}: the new version promoted"),
        async || match phase(&tree).await? {
            (p, Some(c)) if c > first && p == "grace" => Some(c),
            _ => None,
        },
    )
    .await;
    if let Some(h) = hammer.take() {
        // The second writer stops once the new version is promoted; the view must then
        // converge by itself.
        hammer_stop.store(true, Ordering::Relaxed);
        let writes = h.await.expect("hammer");
        println!("faults_vault: {fault:?}: the second writer wrote {writes} documents");
    }
    let hammered = Instant::now();
    eventually_every(
        LIMIT,
        Duration::from_millis(20),
        format_args!("{fault:?}: the view to show {promoted}"),
        async || rig.view_shows().await == Some(promoted),
    )
    .await;
    let recovery = cleared.elapsed();
    let view_after_writer = hammered.elapsed();
    eventually(
        LIMIT,
        format_args!("{fault:?}: the reader to see {promoted}"),
        async || reader.saw(promoted),
    )
    .await;
    let reading = reader.finish().await;

    // No partial promotion: labels consistent, the new version promoted after the fault
    // cleared (for the faults that stop the store), one attempt's version.
    let versions = store.versions(&s).await.expect("versions");
    let (current, previous) = labels_consistent(&versions);
    assert_eq!(current, promoted);
    assert_eq!(previous, Some(first), "{versions:?}");
    let meta = versions
        .iter()
        .find(|v| v.version == promoted)
        .expect("meta");
    if matches!(fault, Fault::Sealed | Fault::Denied | Fault::Restarted) {
        assert!(
            meta.promoted_at.is_some_and(|p| p >= cleared_wall),
            "{fault:?}: version {promoted} was promoted at {:?}, before the fault cleared at {cleared_wall}",
            meta.promoted_at
        );
    }
    let mut values = BTreeMap::new();
    for v in [first, promoted] {
        let value = store.read_value(&s, v).await.expect("read value");
        values.insert(
            v,
            serde_json::from_slice::<Value>(value.expose()).expect("a JSON key pair"),
        );
    }
    assert!(
        reading.bad.is_empty(),
        "{fault:?}: partial or mixed documents: {:?}",
        reading.bad
    );
    check_seen(&versions, &reading.seen, &values);
    // The fault's metric, and store_up back to 1 once a commit went through.
    assert_eq!(metric(&tree, "rotor_store_up", "").await, 1.0, "{fault:?}");
    let after = fault_lines(&tree).await;
    let timing = if fault == Fault::ViewCas {
        format!("the view showed v{promoted} {view_after_writer:?} after the second writer stopped")
    } else {
        format!(
            "first commit {store_back:?} after the fault cleared, the view showing v{promoted} \
             {recovery:?} after (the test target's steps take 1.5 s each)"
        )
    };
    println!(
        "faults_vault: {fault:?}: {timing}; reader polls {}, versions seen {:?}\n  during: {during:?}\n  after: {after:?}",
        reading.polls,
        reading.seen.iter().map(|x| x.version).collect::<Vec<_>>()
    );
    let _ = tree.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_sealed_mid_rotation() {
    fault_mid_rotation(Fault::Sealed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_policy_denies_the_store_mid_rotation() {
    fault_mid_rotation(Fault::Denied).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_second_writer_on_the_state_document() {
    fault_mid_rotation(Fault::StoreCas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_second_writer_on_the_view_document() {
    fault_mid_rotation(Fault::ViewCas).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_restarted_mid_rotation() {
    fault_mid_rotation(Fault::Restarted).await;
}

/// The exec hook of the kill test: every step appends `operation version` to `steps.log`
/// (one short `O_APPEND` write) and takes 300 ms, so a kill can land inside a step; the test
/// of every fourth version fails, so attempts are discarded too. It never reads its stdin,
/// where the value is.
fn slow_hook(dir: &std::path::Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("hook.sh");
    std::fs::write(
        &path,
        format!(
            r#"#!/bin/sh
printf '%s %s\n' "$ROTOR_OPERATION" "$ROTOR_VERSION" >> '{}'
sleep 0.3
if [ "$ROTOR_OPERATION" = test ] && [ $((ROTOR_VERSION % 4)) -eq 0 ]; then
    echo "version $ROTOR_VERSION fails its test" >&2
    exit 1
fi
"#,
            dir.join("steps.log").display()
        ),
    )
    .expect("hook");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// The number of lines of `steps.log`.
fn steps(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("steps.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// The kill test's configuration: the Vault store, one two-field secret rotating every
/// second through the exec hook at `hook`, a Vault view of both fields and, with `aws`
/// (`(endpoint_url, name)` of a moto server and a secret), an AWS view of the same fields.
fn kill_config(rig: &Rig, port: u16, hook: &Path, aws: Option<(&str, &str)>) -> String {
    let aws_view = aws.map_or_else(String::new, |(endpoint, name)| {
        format!(
            r#"
[[publish]]
type = "aws"
name = "{name}"
region = "{REGION}"
endpoint_url = "{endpoint}"
interval = "200ms"
fields = {{ private = "tenant1/signing#private_key", public = "tenant1/signing#public_key" }}
"#
        )
    });
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
admin_token_file = "admin.token"

[store]
type = "vault"
address = "{address}"
mount = "{mount}"
path_prefix = "{PREFIX}"
master_key_file = "{dir}/master.key"
auth = {{ method = "token", token_file = "{token}" }}

[runtime]
shutdown_timeout = "5s"
retry_backoff = "500ms"
retry_backoff_max = "1s"

[policies.churn]
interval = "1s"
grace = "500ms"
generator = {{ type = "ed25519" }}
max_attempts = 3

[[secrets]]
tenant = "tenant1"
key = "signing"
policy = "churn"
target = {{ type = "exec", apply = ["{hook}"], test = ["{hook}"], promote = ["{hook}"], revoke = ["{hook}"], timeout = "30s" }}

[[publish]]
type = "vault"
path = "{VIEW_PATH}"
interval = "200ms"
fields = {{ private = "tenant1/signing#private_key", public = "tenant1/signing#public_key" }}
{aws_view}"#,
        address = rig.bao.address(),
        mount = rig.mount,
        dir = rig.dir.path().display(),
        token = rig.token_file.display(),
        hook = hook.display(),
    )
}

/// The `current` and `previous` labels of the store, as found (no check).
fn current_and_previous(versions: &[VersionMeta]) -> (Vec<u64>, Vec<u64>) {
    let with = |l: Label| -> Vec<u64> {
        versions
            .iter()
            .filter(|v| v.labels.contains(&l))
            .map(|v| v.version)
            .collect()
    };
    (with(Label::Current), with(Label::Previous))
}

/// Waits until the AWS view's stages are the store's labels while rotor runs on: the
/// store is read before and after AWS, and only an unchanged store counts (a rotation
/// in between is waited out). Settled: `AWSCURRENT` on rotor's current alone,
/// `AWSPREVIOUS` on nothing or on rotor's previous, no other stage on any version.
/// Returns rotor's current and the staged versions, once settled.
async fn aws_settled(
    aws: &AwsView,
    store: &VaultStore,
    s: &SecretRef,
) -> (u64, BTreeMap<u64, Vec<String>>) {
    // The last state seen, for the message if it never settles.
    let last = std::cell::RefCell::new(None);
    let what = std::fmt::from_fn(|f| {
        write!(
            f,
            "the AWS view to settle on rotor's labels; last (current, previous, staged): {:?}",
            last.borrow()
        )
    });
    eventually(LIMIT, what, async || {
        let before = current_and_previous(&store.versions(s).await.ok()?);
        let listed = aws.versions().await?;
        let after = current_and_previous(&store.versions(s).await.ok()?);
        if before != after || after.0.len() != 1 || after.1.len() > 1 {
            return None;
        }
        let (current, previous) = (after.0[0], after.1.first().copied());
        let staged: BTreeMap<u64, Vec<String>> = listed
            .iter()
            .filter(|(_, stages)| !stages.is_empty())
            .map(|(id, stages)| (aws.version_of(s, id).unwrap_or(0), stages.clone()))
            .collect();
        let ok = staged.get(&current).is_some_and(|x| x == &[AWSCURRENT])
            && staged.iter().all(|(v, stages)| {
                *v == current || (Some(*v) == previous && stages == &[AWSPREVIOUS])
            });
        *last.borrow_mut() = Some((current, previous, staged.clone()));
        ok.then_some((current, staged))
    })
    .await
}

/// `kill -9` of the real `rotor` binary mid-rotation, with the Vault store on a private
/// OpenBao, a Vault view and an AWS Secrets Manager view (on a private moto) of a
/// two-field secret rotating every second (a step takes 300 ms, every fourth test fails),
/// while a reader polls each view every 50 ms across the kills: the Vault document, and
/// AWS's stages (`DescribeSecret`, `ListSecretVersionIds`) and `AWSCURRENT` read by stage.
/// Each kill lands right after a step began (a new line in the hook's log), so it is
/// mid-rotation. After the kills and a last run that must promote again, the store's
/// version metadata says when each version was promoted: every version either reader saw
/// (in AWS: under any stage or none) was promoted at or before it saw it, with that
/// version's values, and no document mixed versions; every AWS poll showed exactly one
/// `AWSCURRENT` and `AWSPREVIOUS` only on an older version (nothing is rolled back here);
/// once the last run settles, `AWSCURRENT` is rotor's current and `AWSPREVIOUS` at most on
/// rotor's previous. rotor's AWS credentials are in its own environment only, and neither
/// they nor a value reach its log. Without moto outside CI the AWS half is skipped (with a
/// printed reason) and the Vault half runs. `ROTOR_VAULT_KILLS` sets the number of kills
/// (5 by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_rotation_never_shows_an_unpromoted_value() {
    use rand::{Rng as _, SeedableRng as _};
    let kills: u32 = std::env::var("ROTOR_VAULT_KILLS")
        .map(|k| k.parse().expect("ROTOR_VAULT_KILLS is a number of kills"))
        .unwrap_or(5);
    let seed: u64 = rand::random();
    println!("faults_vault: kill seed {seed}, {kills} kills");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let Some(rig) = Rig::start(Fault::Sealed).await else {
        return;
    };
    let moto = Moto::start().await;
    let aws = moto
        .as_ref()
        .map(|m| AwsView::new(m, &format!("rotor-test/{}", random_name(8))));
    let dir = rig.dir.path();
    let hook = slow_hook(dir);
    let port = free_port();
    let cfg = kill_config(
        &rig,
        port,
        &hook,
        moto.as_ref()
            .zip(aws.as_ref())
            .map(|(m, a)| (m.endpoint(), a.name())),
    );
    // Dummy credentials moto accepts, for the child only; the secret key is distinctive
    // so that the log check below would find it.
    let secret_key = format!("rotor-kill-test-{}", random_name(16));
    let child_env = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", secret_key.as_str()),
        ("AWS_REGION", REGION),
    ];
    let s = secret();
    let reader = spawn_reader(
        rig.bao.address().to_owned(),
        rig.bao.token().to_owned(),
        rig.mount.clone(),
    );
    let aws_reader = aws.as_ref().map(|a| a.spawn_reader(s.clone()));
    let mut logs = Vec::new();
    for n in 0..kills {
        let mut rotor = RotorBin::spawn_with_env(dir, port, &cfg, "info", &child_env);
        rotor.wait_ready().await;
        // Mid-rotation: a step has just begun (it takes 300 ms), after a random wait.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..3000))).await;
        let before = steps(dir);
        eventually(
            LIMIT,
            format_args!("kill {n}: a step to begin"),
            async || steps(dir) > before,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..250))).await;
        rotor.kill_group();
        logs.push(std::fs::read_to_string(dir.join("rotor.log")).unwrap_or_default());
    }
    // A last run: the interrupted rotation finishes and the secret rotates again.
    let last_start = Utc::now();
    let mut rotor = RotorBin::spawn_with_env(dir, port, &cfg, "info", &child_env);
    rotor.wait_ready().await;
    let store = VaultStore::open(rig.settings())
        .await
        .expect("open the Vault store");
    let promoted = eventually(LIMIT, "a promotion after the last start", async || {
        let versions = store.versions(&s).await.ok()?;
        versions
            .iter()
            .find(|v| v.promoted_at.is_some_and(|p| p > last_start))
            .map(|v| v.version)
    })
    .await;
    eventually(
        LIMIT,
        format_args!("the readers to see version {promoted} or later"),
        async || {
            let vault = reader
                .reading
                .lock()
                .expect("reading")
                .seen
                .last()
                .is_some_and(|x| x.version >= promoted);
            let in_aws = aws_reader
                .as_ref()
                .is_none_or(|r| r.last_current().is_some_and(|v| v >= promoted));
            vault && in_aws
        },
    )
    .await;
    // Settled while rotor still runs: a view's stages are only final for a moment.
    let settled = match &aws {
        Some(a) => Some(aws_settled(a, &store, &s).await),
        None => None,
    };
    assert!(rotor.terminate(Duration::from_secs(15)).success());
    logs.push(rotor.log());
    let reading = reader.finish().await;
    let versions = store.versions(&s).await.expect("versions");
    // Values of the versions still readable (an expired version's value is deleted).
    let mut values = BTreeMap::new();
    for v in &versions {
        if let Ok(value) = store.read_value(&s, v.version).await {
            values.insert(
                v.version,
                serde_json::from_slice::<Value>(value.expose()).expect("a JSON key pair"),
            );
        }
    }
    assert!(
        reading.bad.is_empty(),
        "partial or mixed documents: {:?}",
        reading.bad
    );
    check_seen(&versions, &reading.seen, &values);
    let never: Vec<u64> = versions
        .iter()
        .filter(|v| v.promoted_at.is_none())
        .map(|v| v.version)
        .collect();
    let shown: Vec<u64> = reading.seen.iter().map(|x| x.version).collect();
    let promoted_at = |v: u64| {
        versions
            .iter()
            .find(|m| m.version == v)
            .and_then(|m| m.promoted_at)
    };
    let vault_lag = lags(
        reading
            .seen
            .iter()
            .filter_map(|x| (x.at - promoted_at(x.version)?).to_std().ok()),
    );
    println!(
        "faults_vault: kill -9 x{kills}: {} versions, never promoted {never:?}, the Vault reader ({} polls) saw {shown:?}; promotion to the Vault view (50 ms polls): {vault_lag}",
        versions.len(),
        reading.polls
    );
    assert!(
        shown.len() >= 3,
        "the reader saw too few rotations to mean anything: {shown:?}"
    );
    for log in &logs {
        assert!(
            !log.contains(&secret_key),
            "the AWS secret key reached rotor's log"
        );
        for pair in values.values() {
            for field in ["private_key", "public_key"] {
                let value = pair[field].as_str().unwrap_or_default();
                assert!(
                    value.is_empty() || !log.contains(value),
                    "a {field} reached rotor's log"
                );
            }
        }
    }
    if let (Some(aws_reader), Some((current, staged))) = (aws_reader, settled) {
        let aws_reading = aws_reader.finish().await;
        let polls = &aws_reading.polls;
        assert!(
            aws_reading.bad.is_empty(),
            "AWS polls: {:?}",
            aws_reading.bad
        );
        check_polls(&versions, polls, |v, text| {
            let doc: serde_json::Map<String, Value> =
                serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
            let (version, private, public) =
                consistent(&doc)?.ok_or_else(|| "a foreign document".to_owned())?;
            if version != v {
                return Err(format!("the document claims version {version}"));
            }
            match values.get(&v) {
                Some(pair) if pair["private_key"] != private || pair["public_key"] != public => {
                    Err("other values than the version holds".to_owned())
                }
                _ => Ok(()),
            }
        });
        for p in polls {
            let (current, previous) = (p.holding(AWSCURRENT), p.holding(AWSPREVIOUS));
            assert!(
                previous.iter().all(|x| current.iter().all(|c| x < c)),
                "AWSPREVIOUS on {previous:?} with AWSCURRENT on {current:?} at {}",
                p.at
            );
        }
        // The settled stages name promoted versions only (a never-promoted one would
        // have failed `aws_settled`'s match with rotor's labels too).
        assert!(
            staged.keys().all(|v| promoted_at(*v).is_some()),
            "{staged:?}"
        );
        let aws_shown = aws_reading.currents();
        let first = aws_reading.first_current();
        let aws_lag = lags(
            first
                .iter()
                .filter_map(|(v, at)| (*at - promoted_at(*v)?).to_std().ok()),
        );
        println!(
            "faults_vault: kill -9 x{kills}: the AWS reader ({} polls) saw AWSCURRENT {aws_shown:?}, settled on v{current} with stages {staged:?}; promotion to AWSCURRENT (50 ms polls): {aws_lag}",
            polls.len()
        );
        assert!(
            aws_shown.len() >= 3,
            "the AWS reader saw too few rotations to mean anything: {aws_shown:?}"
        );
    }
}

/// The median and the largest of `lags`, for the printed figures.
fn lags(lags: impl Iterator<Item = Duration>) -> String {
    let mut all: Vec<Duration> = lags.collect();
    all.sort();
    match (all.get(all.len() / 2), all.last()) {
        (Some(p50), Some(max)) => format!("p50 {p50:?} max {max:?} over {}", all.len()),
        _ => "none".to_owned(),
    }
}
