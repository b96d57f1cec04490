//! AWS Secrets Manager views (`[[publish]] type = "aws"`) on a private moto server: the
//! whole rotation tree in-process (embedded store), with a view of one secret as its
//! `SecretString` and a view of a key pair as a JSON document (`fields`). A reader polls
//! every 50 ms, as the CSI AWS provider would, reading every version and its stages and
//! the values under an explicit `VersionStage`; rotations succeed, fail at apply, fail at
//! test and roll back. It checks that a version in AWS is always one rotor had promoted
//! (never a discarded one), that exactly one version is `AWSCURRENT`, that once the view
//! settles `AWSCURRENT` is rotor's current and `AWSPREVIOUS` rotor's previous in grace
//! (none otherwise, and nothing else staged), that a rollback restores the previous value,
//! that two writers of the same promotion make one version (the request token is
//! deterministic) and a stale `AWSPENDING` is removed, and it prints the promotion-to-view
//! latency and the requests per rotation.
//!
//! rotor's credentials come through `TreeOptions::aws_env` (dummy keys moto accepts), never
//! through this process's environment, which every test shares.
//!
//! Where moto differs from AWS (met while writing these tests; each is a reason for how
//! rotor or the test does something):
//! - A missing secret is HTTP 404 `ResourceNotFoundException` (AWS: 400). rotor goes by
//!   the error's `__type` (the SDK does), never by the status.
//! - `GetSecretValue` without `VersionStage` can return a version other than the one
//!   `AWSCURRENT` names right after `UpdateSecretVersionStage`; the reader always names the
//!   stage.
//! - `PutSecretValue` without `VersionStages` can leave two versions labelled `AWSCURRENT`;
//!   rotor always puts with `AWSPENDING` and moves `AWSCURRENT` itself.
//! - `ListSecretVersionIds` of a missing secret is an HTTP 500 (AWS:
//!   `ResourceNotFoundException`); the reader asks `DescribeSecret` first.
//! - `PutSecretValue` with an existing `ClientRequestToken` and a different value replaces
//!   the version's value (AWS refuses with `ResourceExistsException`, and takes the same
//!   value as a no-op). rotor's token stands for one rotor version, whose value never
//!   changes, so it never sends that.
//! - `DescribeSecret` lists versions left without stages, as `[]` (AWS lists only versions
//!   with a stage). rotor treats both the same: only stages count.
//! - moto checks no signature: any access key is accepted (the SDK still signs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};

use crate::common::aws_reader::{AwsView, check_polls};
use crate::common::embedded::{admin, open_store, tree_config};
use crate::common::moto::{Moto, REGION};
use crate::common::openbao::random_name;
use crate::common::wait::eventually;
use rotor::actors::tree::{self, Tree, TreeOptions};
use rotor::api::Admin as _;
use rotor::clock::Clock;
use rotor::config::Config;
use rotor::domain::SecretRef;
use rotor::metrics::Metrics;
use rotor::publish::aws::{AwsEnv, AwsViewWriter};
use rotor::store::Store;
use rotor::target::Target;
use rotor::target::none::NoneTarget;

const LIMIT: Duration = Duration::from_secs(60);

/// Dummy credentials for moto, handed to rotor's credential chain only.
fn aws_env() -> AwsEnv {
    AwsEnv::vars(&[
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ])
}

struct Env {
    moto: Moto,
    dir: tempfile::TempDir,
    /// The AWS secret's name, new per test.
    name: String,
    /// A consumer's reads of that secret.
    view: AwsView,
}

impl Env {
    async fn start() -> Option<Env> {
        let moto = Moto::start().await?;
        let name = format!("rotor-test/{}", random_name(8));
        let view = AwsView::new(&moto, &name);
        Some(Env {
            moto,
            dir: tempfile::tempdir().expect("tempdir"),
            name,
            view,
        })
    }

    /// `tenant1/api` (a token) or `tenant1/signing` (an ed25519 key pair, `fields`) under
    /// a policy with `grace`, shown by one AWS view at `endpoint` every `interval`.
    fn config(&self, endpoint: &str, grace: &str, interval: &str, fields: bool) -> Config {
        let (key, generator, view) = if fields {
            (
                "signing",
                "{ type = \"ed25519\" }",
                "fields = { private = \"tenant1/signing#private_key\", public = \"tenant1/signing#public_key\" }",
            )
        } else {
            (
                "api",
                "{ type = \"token\", bytes = 32 }",
                "secret = \"tenant1/api\"",
            )
        };
        tree_config(
            self.dir.path(),
            &format!(
                r#"
[runtime]
retry_backoff = "1s"
retry_backoff_max = "2s"

[policies.keys]
interval = "1h"
grace = "{grace}"
generator = {generator}
max_attempts = 1

[[secrets]]
tenant = "tenant1"
key = "{key}"
policy = "keys"

[[publish]]
type = "aws"
name = "{name}"
region = "{REGION}"
endpoint_url = "{endpoint}"
interval = "{interval}"
{view}
"#,
                name = self.name,
            ),
        )
    }

    async fn start_tree(&self, cfg: &Config, switch: &NoneTarget) -> (Tree, Arc<dyn Store>) {
        let store: Arc<dyn Store> = open_store(self.dir.path());
        // The tree builds one target per secret, each sharing this one's failure switch.
        let switch = switch.sharing_failures(api());
        let options = TreeOptions {
            clock: Clock::System,
            target_override: Some(Arc::new(move |s: &SecretRef| {
                Arc::new(switch.sharing_failures(s.clone())) as Arc<dyn Target>
            })),
            namespace: format!("{}/{}/", self.dir.path().display(), random_name(6)),
            aws_env: aws_env(),
            ..TreeOptions::default()
        };
        let tree = tree::start(cfg, store.clone(), Metrics::new(), options)
            .await
            .expect("tree starts");
        (tree, store)
    }
}

fn api() -> SecretRef {
    SecretRef::new("tenant1", "api").expect("valid")
}

fn signing() -> SecretRef {
    SecretRef::new("tenant1", "signing").expect("valid")
}

/// The AWS version id rotor gives `version` of `secret` in `env`'s view.
fn token(env: &Env, secret: &SecretRef, version: u64) -> String {
    env.view.token(secret, version)
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

/// Waits until AWS shows exactly `current` as `AWSCURRENT`, `previous` as `AWSPREVIOUS`
/// and nothing else staged.
async fn wait_settled(env: &Env, secret: &SecretRef, current: u64, previous: Option<u64>) {
    let mut want = BTreeMap::from([(token(env, secret, current), vec!["AWSCURRENT".to_owned()])]);
    if let Some(p) = previous {
        want.insert(token(env, secret, p), vec!["AWSPREVIOUS".to_owned()]);
    }
    let mut last = None;
    let settled = eventually(
        Duration::from_secs(20),
        format_args!("AWS to show current {current} and previous {previous:?}"),
        async || {
            let mut staged = env.view.versions().await?;
            staged.retain(|_, s| !s.is_empty());
            for s in staged.values_mut() {
                s.sort();
            }
            let ok = staged == want;
            last = Some(staged);
            ok.then_some(true)
        },
    )
    .await;
    assert!(settled, "last seen {last:?}");
}

/// The value of `version`, read while it is current or previous.
async fn value(store: &dyn Store, secret: &SecretRef, version: u64) -> String {
    let v = store.read_value(secret, version).await.expect("read value");
    String::from_utf8(v.expose().to_vec()).expect("text")
}

/// Rotations that succeed, fail at apply, fail at test and roll back during grace, with a
/// reader polling every 50 ms: AWS only ever holds promoted versions, exactly one
/// `AWSCURRENT`, and once settled the stages are rotor's labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_view_follows_rotor_labels_and_never_holds_an_unpromoted_version() {
    let Some(env) = Env::start().await else {
        return;
    };
    let env = Arc::new(env);
    let cfg = env.config(env.moto.endpoint(), "3s", "50ms", false);
    let switch = NoneTarget::new(api());
    let (mut tree, store) = env.start_tree(&cfg, &switch).await;
    let s = api();
    let first = wait_first(&tree).await;
    let mut values = BTreeMap::new();
    values.insert(first, value(&*store, &s, first).await);
    wait_settled(&env, &s, first, None).await;
    let reader = env.view.spawn_reader(s.clone());
    let admin = admin(&tree);
    let mut v = first;
    let mut failed = Vec::new();
    for round in 0..2 {
        // Succeeds: AWSPREVIOUS is the version before during grace, gone after it.
        admin.rotate(s.clone()).await.expect("rotate");
        let w = wait_phase(&tree, "grace").await.expect("current");
        values.insert(w, value(&*store, &s, w).await);
        wait_settled(&env, &s, w, Some(v)).await;
        wait_phase(&tree, "idle").await;
        wait_settled(&env, &s, w, None).await;
        v = w;
        // Fails at apply, then at test: AWS keeps the current version, nothing staged.
        for step in ["apply", "test"] as [&'static str; 2] {
            switch.fail(step);
            admin.rotate(s.clone()).await.expect("rotate");
            let current = wait_phase(&tree, "stuck").await;
            assert_eq!(
                current,
                Some(v),
                "round {round}: a failed {step} keeps the current"
            );
            failed.push(
                admin
                    .versions(s.clone())
                    .await
                    .expect("versions")
                    .iter()
                    .map(|x| x.version)
                    .max()
                    .expect("a version"),
            );
            switch.heal();
            wait_settled(&env, &s, v, None).await;
        }
        // Succeeds, then is rolled back during grace: AWSCURRENT returns to `v` with its
        // value, and the revoked version keeps no stage.
        admin.rotate(s.clone()).await.expect("rotate");
        let w = wait_phase(&tree, "grace").await.expect("current");
        values.insert(w, value(&*store, &s, w).await);
        wait_settled(&env, &s, w, Some(v)).await;
        admin.rollback(s.clone()).await.expect("rollback");
        eventually(LIMIT, "the rollback", async || {
            phase(&tree).await.is_some_and(|(_, c)| c == Some(v))
        })
        .await;
        wait_settled(&env, &s, v, None).await;
        let (id, restored) = env.view.staged("AWSCURRENT").await.expect("AWSCURRENT");
        assert_eq!(id, token(&env, &s, v));
        assert!(
            restored == values[&v],
            "the rollback restored another value"
        );
        wait_phase(&tree, "idle").await;
    }
    let reading = reader.finish().await;
    let polls = &reading.polls;
    assert!(reading.bad.is_empty(), "{:?}", reading.bad);
    assert!(polls.len() > 20, "the reader polled {} times", polls.len());
    let metas = store.versions(&s).await.expect("versions");
    check_polls(&metas, polls, |v, shown| match values.get(&v) {
        None => Err(format!("version {v} was never current")),
        Some(want) if shown != want => Err(format!("another value than version {v}'s")),
        Some(_) => Ok(()),
    });
    for f in &failed {
        assert!(
            polls.iter().all(|p| !p.versions.contains_key(f)),
            "the discarded version {f} reached AWS"
        );
    }
    let shown = reading.currents();
    println!(
        "views_aws: AWSCURRENT versions the reader saw, in order: {shown:?} over {} polls; discarded versions never in AWS: {failed:?}",
        polls.len()
    );
    let _ = tree.shutdown(Duration::from_secs(5)).await;
}

/// A `fields` view holds a JSON document of one version's fields and their versions, a
/// rollback in grace restores the previous document, and no document mixes versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fields_view_never_mixes_versions_and_a_rollback_restores_it() {
    let Some(env) = Env::start().await else {
        return;
    };
    let env = Arc::new(env);
    let cfg = env.config(env.moto.endpoint(), "30m", "50ms", true);
    let switch = NoneTarget::new(signing());
    let (mut tree, store) = env.start_tree(&cfg, &switch).await;
    let s = signing();
    let first = wait_first(&tree).await;
    wait_settled(&env, &s, first, None).await;
    let doc_of = async |v: u64| -> Value {
        let raw = store.read_value(&s, v).await.expect("value");
        let pair: Value = serde_json::from_slice(raw.expose()).expect("json");
        json!({
            "private": pair["private_key"], "private_version": v.to_string(),
            "public": pair["public_key"], "public_version": v.to_string(),
        })
    };
    let first_doc = doc_of(first).await;
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let env = env.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut bad = Vec::new();
            let mut seen = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Some((_, text)) = env.view.staged("AWSCURRENT").await {
                    seen += 1;
                    let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    if doc["private_version"] != doc["public_version"]
                        || doc.as_object().map(|o| o.len()) != Some(4)
                    {
                        bad.push(format!(
                            "a mixed or partial document: versions {} and {}",
                            doc["private_version"], doc["public_version"]
                        ));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (seen, bad)
        })
    };
    let admin = admin(&tree);
    for _ in 0..3 {
        admin.rotate(s.clone()).await.expect("rotate");
        let w = wait_phase(&tree, "grace").await.expect("current");
        wait_settled(&env, &s, w, Some(first)).await;
        let (_, text) = env.view.staged("AWSCURRENT").await.expect("AWSCURRENT");
        let shown: Value = serde_json::from_str(&text).expect("a JSON document");
        assert!(
            shown == doc_of(w).await,
            "AWSCURRENT is not version {w}'s document"
        );
        admin.rollback(s.clone()).await.expect("rollback");
        eventually(LIMIT, "the rollback", async || {
            phase(&tree).await.is_some_and(|(_, c)| c == Some(first))
        })
        .await;
        wait_settled(&env, &s, first, None).await;
        let (_, text) = env.view.staged("AWSCURRENT").await.expect("AWSCURRENT");
        let shown: Value = serde_json::from_str(&text).expect("a JSON document");
        assert!(
            shown == first_doc,
            "the rollback did not restore the first document"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let (seen, bad) = poller.await.expect("poller");
    assert!(bad.is_empty(), "{bad:?}");
    assert!(seen >= 5, "the poller read {seen} documents");
    let _ = tree.shutdown(Duration::from_secs(5)).await;
}

/// Two writers reconcile the same promotion one after the other (a retry by a restarted
/// rotor): one AWS version for it, since both use the same request token. A stale `AWSPENDING` left by a
/// crash between a put and the move is removed, and a version a foreign writer made
/// `AWSCURRENT` is replaced by rotor's current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_idempotent_and_stale_stages_are_repaired() {
    let Some(env) = Env::start().await else {
        return;
    };
    // A view ticking once an hour: only this test's own writers touch AWS after start.
    let cfg = env.config(env.moto.endpoint(), "30m", "1h", false);
    let switch = NoneTarget::new(api());
    let (mut tree, store) = env.start_tree(&cfg, &switch).await;
    let s = api();
    let first = wait_first(&tree).await;
    wait_settled(&env, &s, first, None).await;
    let _ = tree.shutdown(Duration::from_secs(5)).await;
    // The store is opened once at a time: let go of it before the next tree opens it.
    drop(tree);
    drop(store);
    // Promote a second version with the view pointed nowhere: rotor's store moves on and
    // AWS does not.
    let quiet = env.config("http://127.0.0.1:9", "30m", "1h", false);
    let (mut tree, store2) = env.start_tree(&quiet, &switch).await;
    admin(&tree).rotate(s.clone()).await.expect("rotate");
    let second = wait_phase(&tree, "grace").await.expect("current");
    let _ = tree.shutdown(Duration::from_secs(5)).await;
    let view = Arc::new(cfg.aws_views[0].clone());
    let a = AwsViewWriter::new(view.clone(), aws_env());
    let b = AwsViewWriter::new(view.clone(), aws_env());
    // A retry of the same promotion by another writer (a restarted rotor): the first
    // writes, the second finds it done; both use the same request token, so AWS holds one
    // version for it. (The two are not run at once: moto does not serialise stage moves on
    // one secret as AWS does, and a race there can leave the secret with no `AWSCURRENT`
    // at all, a state AWS never shows; every later move then gets moto's HTTP 500.)
    let second_value = value(&*store2, &s, second).await;
    let ra = a.sync(&*store2).await;
    let rb = b.sync(&*store2).await;
    for e in [&ra, &rb].into_iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            !e.to_string().contains(&second_value) && !format!("{e:?}").contains(&second_value),
            "an error holds the value"
        );
    }
    assert!(
        matches!(ra, Ok(rotor::publish::view::Synced::Written { .. })),
        "the first writer writes: {ra:?}"
    );
    assert!(
        matches!(rb, Ok(rotor::publish::view::Synced::Unchanged { .. })),
        "the retry finds it done: {rb:?}"
    );
    wait_settled(&env, &s, second, Some(first)).await;
    let all = env.view.versions().await.expect("the secret");
    assert_eq!(all.len(), 2, "one AWS version per rotor version: {all:?}");
    assert!(matches!(
        a.sync(&*store2).await.expect("sync"),
        rotor::publish::view::Synced::Unchanged { .. }
    ));
    // A foreign writer's version put with AWSCURRENT (moto then shows two), and then
    // AWSPENDING left on the current version, as a crash between rotor's move and its
    // removal of AWSPENDING leaves it.
    let (status, body) = env
        .moto
        .secrets_manager(
            "PutSecretValue",
            &json!({"SecretId": env.name, "SecretString": "foreign", "ClientRequestToken": "foreign-foreign-foreign-foreign-0001", "VersionStages": ["AWSCURRENT"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = env
        .moto
        .secrets_manager(
            "UpdateSecretVersionStage",
            &json!({"SecretId": env.name, "VersionStage": "AWSPENDING", "MoveToVersionId": token(&env, &s, second)}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let repaired = a.sync(&*store2).await;
    assert!(repaired.is_ok(), "{repaired:?}");
    wait_settled(&env, &s, second, Some(first)).await;
    let (_, shown) = env.view.staged("AWSCURRENT").await.expect("AWSCURRENT");
    assert!(shown == value(&*store2, &s, second).await);
}

/// Counts Secrets Manager requests by operation (`X-Amz-Target`) on their way to moto.
struct OperationCounter {
    endpoint: String,
    ops: Arc<std::sync::Mutex<BTreeMap<String, usize>>>,
}

impl OperationCounter {
    async fn start(upstream: &str) -> OperationCounter {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let ops = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        let counted = ops.clone();
        let upstream = upstream.trim_start_matches("http://").to_owned();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, counted) = (upstream.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let back = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    });
                    let mut chunk = vec![0u8; 64 * 1024];
                    let mut carry = String::new();
                    while let Ok(n) = from_client.read(&mut chunk).await {
                        if n == 0 {
                            break;
                        }
                        // Header lines end in CRLF; a JSON body holds none, and a line
                        // split across reads is completed from `carry`.
                        carry.push_str(&String::from_utf8_lossy(&chunk[..n]));
                        while let Some(end) = carry.find("\r\n") {
                            let line = carry[..end].to_ascii_lowercase();
                            if let Some(op) = line.strip_prefix("x-amz-target: secretsmanager.")
                                && let Ok(mut ops) = counted.lock()
                            {
                                *ops.entry(op.to_owned()).or_insert(0) += 1;
                            }
                            carry.drain(..end + 2);
                        }
                        if to_server.write_all(&chunk[..n]).await.is_err() {
                            break;
                        }
                    }
                    back.abort();
                });
            }
        });
        OperationCounter { endpoint, ops }
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        self.ops.lock().expect("lock").clone()
    }
}

/// Promotion to `AWSCURRENT` showing the new value (p50, p99 over 30 rotations) at the
/// default view interval of 1 s (the rotation actor's nudge starts the reconcile), and
/// Secrets Manager requests per rotation by operation. Printed for the report; bounded
/// generously.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_to_awscurrent_latency_and_requests_per_rotation() {
    const ROTATIONS: usize = 30;
    let Some(env) = Env::start().await else {
        return;
    };
    let counter = OperationCounter::start(env.moto.endpoint()).await;
    let interval = "1s";
    let cfg = env.config(&counter.endpoint, "1s", interval, false);
    let switch = NoneTarget::new(api());
    let (mut tree, store) = env.start_tree(&cfg, &switch).await;
    let admin = admin(&tree);
    let s = api();
    let first = wait_first(&tree).await;
    wait_settled(&env, &s, first, None).await;
    let before = counter.counts();
    let started = Instant::now();
    let mut latencies = Vec::new();
    for _ in 0..ROTATIONS {
        admin.rotate(s.clone()).await.expect("rotate");
        let v = wait_phase(&tree, "grace").await.expect("current");
        let want = token(&env, &s, v);
        let shown = eventually(LIMIT, format_args!("AWSCURRENT to be {v}"), async || {
            let (id, _) = env.view.staged("AWSCURRENT").await?;
            (id == want).then(Utc::now)
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
    let after = counter.counts();
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
        "views_aws: promotion to AWSCURRENT over {ROTATIONS} rotations (view interval {interval}): p50 {:?} p99 {:?} max {:?}; \
         Secrets Manager requests per rotation {total:.1} (incl. idle ticks over {elapsed:?}): {per:?}",
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or_default(),
    );
    assert!(pct(0.5) < Duration::from_secs(10), "{latencies:?}");
    assert!(
        per.get("putsecretvalue").is_some_and(|n| *n >= 1.0),
        "every rotation puts its version: {per:?}"
    );
}
