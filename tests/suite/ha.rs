//! High availability: the election, fencing and the leader's lifecycle.
//!
//! - The election on paused tokio time over the records of an embedded store (the same
//!   records API and check-and-set as the Vault store's): one leader among three, a dead
//!   leader replaced within the lease duration plus one renew interval, a leader cut off
//!   from the store stopping by its own clock before anyone takes over, a clean stop
//!   handing over at once.
//! - The leader's tree in-process: a fence that closes mid-step commits nothing and stops
//!   the tree as deposed.
//! - The election in real time on the Vault fake and a private OpenBao: one leader of two,
//!   a dead leader replaced.
//! - Store fencing on the Vault store (fake and OpenBao): a commit of a lower term than the
//!   state document's is refused and writes nothing; term 0 (no HA) is not fenced; a
//!   [`FencedStore`] whose fence closed writes nothing at all.
//! - Three real `rotor run` processes with `[ha]` on one private OpenBao: exactly one
//!   leader, `kill -9` of it and a new leader rotating within the lease plus one renew
//!   interval (failover times printed), then a leader frozen by SIGSTOP past its lease,
//!   replaced, and resumed: zero writes from its stale term, and it follows; the leader
//!   killed again and again, with the median and p99 failover times printed.
//! - The kill campaign: the leader of three `kill -9`ed at random instants many times under
//!   API rotations through random replicas; after each kill a new leader in time and, over
//!   100 secrets, one current version, nothing promoted or finished twice; at the end every
//!   accepted rotation in its history.
//! - `GET /admin/leader` through `HaAdmin` over real HTTP, and the follower backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rotor::domain::{HistoryRecord, Label, RotationId, SecretRef, VersionMeta, VersionNo};
use rotor::generator::SecretValue;
use rotor::ha::lease::{LEASE_ID, LEASE_NAMESPACE, LeaseRecord};
use rotor::ha::{Election, ElectionSettings, Fence, FencedStore, Role};
use rotor::store::vault::{VaultAuth, VaultSettings, VaultStore};
use rotor::store::vault_fake::VaultFake;
use rotor::store::{Commit, ReadValue, Record, Rev, Store, StoreError};
use tokio::time::Instant;

use rotor::actors::root::RootExit;
use rotor::actors::tree::{self, TreeOptions};
use rotor::metrics::Metrics;

use crate::common::embedded::{open_store, tree_config};
use crate::common::http::request;
use crate::common::openbao::{OpenBao, random_name};
use crate::common::rotor_bin::{RotorBin, free_port};
use crate::common::store_contract::{at, secret, value};
use crate::common::wait::{eventually, eventually_every};

const D: Duration = Duration::from_secs(3);

// ---------------------------------------------------------------------------------------
// A store that can be cut off: its record calls hang while `cut` is set, as they would
// behind a partition (the election's view of the store; nothing else goes through it).

struct Cuttable {
    inner: Arc<dyn Store>,
    cut: Arc<AtomicBool>,
}

impl Cuttable {
    fn wrap(inner: Arc<dyn Store>) -> (Arc<dyn Store>, Arc<AtomicBool>) {
        let cut = Arc::new(AtomicBool::new(false));
        (
            Arc::new(Cuttable {
                inner,
                cut: cut.clone(),
            }),
            cut,
        )
    }

    async fn hang_if_cut(&self) {
        if self.cut.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }
}

#[async_trait::async_trait]
impl ReadValue for Cuttable {
    async fn read_value(&self, s: &SecretRef, v: VersionNo) -> Result<SecretValue, StoreError> {
        self.inner.read_value(s, v).await
    }
    async fn current_version(&self, s: &SecretRef) -> Result<Option<VersionNo>, StoreError> {
        self.inner.current_version(s).await
    }
}

#[async_trait::async_trait]
impl Store for Cuttable {
    async fn put_version(
        &self,
        s: &SecretRef,
        v: VersionNo,
        r: RotationId,
        value: &SecretValue,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.put_version(s, v, r, value, now).await
    }
    async fn commit(&self, s: &SecretRef, c: Commit<'_>) -> Result<(), StoreError> {
        self.inner.commit(s, c).await
    }
    async fn journal(&self, s: &SecretRef) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.journal(s).await
    }
    async fn versions(&self, s: &SecretRef) -> Result<Vec<VersionMeta>, StoreError> {
        self.inner.versions(s).await
    }
    async fn history(&self, s: &SecretRef, n: usize) -> Result<Vec<HistoryRecord>, StoreError> {
        self.inner.history(s, n).await
    }
    async fn secrets(&self) -> Result<Vec<SecretRef>, StoreError> {
        self.inner.secrets().await
    }
    async fn record_get(&self, ns: &str, id: &str) -> Result<Option<(Vec<u8>, Rev)>, StoreError> {
        self.hang_if_cut().await;
        self.inner.record_get(ns, id).await
    }
    async fn record_put(
        &self,
        ns: &str,
        id: &str,
        bytes: &[u8],
        expected: Option<Rev>,
    ) -> Result<Rev, StoreError> {
        self.hang_if_cut().await;
        self.inner.record_put(ns, id, bytes, expected).await
    }
    async fn record_delete(&self, ns: &str, id: &str, expected: Rev) -> Result<(), StoreError> {
        self.hang_if_cut().await;
        self.inner.record_delete(ns, id, expected).await
    }
    async fn record_list(&self, ns: &str) -> Result<Vec<Record>, StoreError> {
        self.inner.record_list(ns).await
    }
    fn fingerprint(&self, value: &[u8]) -> String {
        self.inner.fingerprint(value)
    }
}

fn settings(id: &str, lease: Duration) -> ElectionSettings {
    ElectionSettings {
        id: id.to_owned(),
        url: format!("http://{id}.rotor:8080"),
        lease_duration: lease,
    }
}

fn leaders(elections: &[Option<Election>]) -> Vec<usize> {
    elections
        .iter()
        .enumerate()
        .filter(|(_, e)| e.as_ref().is_some_and(|e| e.leadership().is_leader()))
        .map(|(i, _)| i)
        .collect()
}

async fn lease_record(store: &dyn Store) -> LeaseRecord {
    let (bytes, _) = store
        .record_get(LEASE_NAMESPACE, LEASE_ID)
        .await
        .expect("read the lease")
        .expect("a lease record");
    serde_json::from_slice(&bytes).expect("a lease record")
}

/// Waits until exactly one of `elections` leads and every other one names it; returns it.
async fn one_leader(elections: &[Option<Election>], limit: Duration) -> usize {
    eventually(limit, "exactly one leader, known to all", async || {
        let l = leaders(elections);
        let [leader] = l[..] else { return None };
        let id = elections[leader]
            .as_ref()?
            .leadership()
            .self_id()
            .to_owned();
        let term = elections[leader].as_ref()?.leadership().current().term;
        elections
            .iter()
            .flatten()
            .all(|e| {
                let info = e.leadership().current();
                info.leader.as_deref() == Some(id.as_str()) && info.term == term
            })
            .then_some(leader)
    })
    .await
}

// ---------------------------------------------------------------------------------------
// The election on paused time.

/// Three replicas on one store: one leads and the others name it; killing it (its task
/// ends without releasing, as `kill -9` would) makes another lead at the next term, within
/// the lease duration plus one renew interval, counted on the paused clock.
#[tokio::test(start_paused = true)]
async fn one_leader_of_three_and_a_dead_one_replaced_within_lease_plus_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = open_store(dir.path());
    let mut elections: Vec<Option<Election>> = ["a", "b", "c"]
        .iter()
        .map(|id| Some(Election::start(store.clone(), settings(id, D))))
        .collect();
    let leader = one_leader(&elections, Duration::from_secs(10)).await;
    let first = lease_record(&*store).await;
    assert_eq!(first.term, 1);
    // Leadership holds through many renewals: nobody else takes over.
    tokio::time::sleep(D * 5).await;
    assert_eq!(leaders(&elections), vec![leader]);
    assert_eq!(lease_record(&*store).await.term, 1);

    // Killed right after a renewal is the worst case: wait for one.
    let before = lease_record(&*store).await.renewed_at;
    eventually(D, "a renewal", async || {
        lease_record(&*store).await.renewed_at != before
    })
    .await;
    let killed = Instant::now();
    drop(elections[leader].take());
    let next = one_leader(&elections, D * 3).await;
    let failover = killed.elapsed();
    println!("ha: paused-time failover {failover:?} (lease {D:?})");
    assert_ne!(next, leader);
    assert!(
        failover <= D + D / 3 + Duration::from_millis(100),
        "failover took {failover:?}, more than the lease plus one renew interval"
    );
    assert_eq!(lease_record(&*store).await.term, 2);
    assert_eq!(
        elections[next]
            .as_ref()
            .unwrap()
            .leadership()
            .current()
            .term,
        2
    );
}

/// A leader whose store stops answering stops leading by its own clock (its fence closes
/// and its role goes back to following) before the other replica, which still reaches the
/// store, may take over; the deposed replica's writes are refused from that moment.
#[tokio::test(start_paused = true)]
async fn a_leader_cut_off_from_the_store_fences_itself_before_anyone_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = open_store(dir.path());
    let (cut_store, cut) = Cuttable::wrap(store.clone());
    let a = Election::start(cut_store, settings("a", D));
    let mut roles = a.roles();
    let fence = loop {
        if let Role::Leading(f) = &*roles.borrow_and_update() {
            break f.clone();
        }
        roles.changed().await.unwrap();
    };
    let b = Election::start(store.clone(), settings("b", D));
    tokio::time::sleep(D).await;
    assert!(a.leadership().is_leader() && !b.leadership().is_leader());

    let fenced = FencedStore::new(store.clone(), fence.clone());
    fenced
        .record_put("test", "x", b"1", None)
        .await
        .expect("the leader writes");
    cut.store(true, Ordering::SeqCst);
    let cut_at = Instant::now();
    // A step down is a change to following.
    loop {
        roles.changed().await.unwrap();
        if matches!(&*roles.borrow_and_update(), Role::Following) {
            break;
        }
    }
    let stopped_at = Instant::now();
    assert!(!fence.is_valid());
    assert!(!a.leadership().is_leader());
    let refused = fenced
        .record_put("test", "x", b"2", Some(1))
        .await
        .expect_err("a fenced write");
    assert!(
        matches!(refused, StoreError::Fenced { term: 1 }),
        "{refused}"
    );
    assert!(refused.to_string().contains("term 1"), "{refused}");

    let mut b_roles = b.roles();
    loop {
        if matches!(&*b_roles.borrow_and_update(), Role::Leading(_)) {
            break;
        }
        b_roles.changed().await.unwrap();
    }
    let taken_at = Instant::now();
    println!(
        "ha: cut off at 0, self-fenced after {:?}, taken over after {:?}",
        stopped_at - cut_at,
        taken_at - cut_at
    );
    assert!(
        stopped_at < taken_at,
        "the old leader stopped after the new one started"
    );
    assert!(
        stopped_at - cut_at <= D,
        "self-fencing took longer than the lease"
    );
    assert_eq!(b.leadership().current().term, 2);
    // Nothing the old leader wrote after its fence closed.
    assert_eq!(
        store.record_get("test", "x").await.unwrap().map(|(b, _)| b),
        Some(b"1".to_vec())
    );
}

/// A leader that stops cleanly releases the lease (no holder, same term), and a follower
/// takes it within one read interval instead of a whole duration.
#[tokio::test(start_paused = true)]
async fn a_clean_stop_hands_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = open_store(dir.path());
    let mut elections = vec![Some(Election::start(store.clone(), settings("a", D)))];
    one_leader(&elections, Duration::from_secs(5)).await;
    elections.push(Some(Election::start(store.clone(), settings("b", D))));
    let leader = one_leader(&elections, Duration::from_secs(5)).await;
    assert_eq!(leader, 0);
    let stopped = Instant::now();
    elections[0].take().unwrap().stop().await;
    let released = lease_record(&*store).await;
    assert_eq!((released.holder, released.term), (None, 1));
    one_leader(&elections, D).await;
    let handover = stopped.elapsed();
    println!("ha: clean handover {handover:?}");
    assert!(
        handover <= D / 6 + Duration::from_millis(100),
        "{handover:?}"
    );
    assert_eq!(lease_record(&*store).await.term, 2);
}

/// The leader's actor tree with a slow target: its fence closes while a step is in flight.
/// The step's result is not committed (journal and versions stay as they were), and the
/// tree stops itself as deposed instead of restarting its actors against a closed fence.
#[tokio::test(start_paused = true)]
async fn a_tree_whose_fence_closes_mid_step_commits_nothing_and_stops_as_deposed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tree_config(
        dir.path(),
        r#"
[policies.slow]
interval = "1h"
grace = "10m"
generator = { type = "token", bytes = 16 }
max_attempts = 3

[[secrets]]
tenant = "tenant1"
key = "api_keys"
policy = "slow"
target = { type = "none", delay = "5s" }
"#,
    );
    let store = open_store(dir.path());
    let fence = Fence::new(7, Instant::now() + Duration::from_secs(600));
    let mut tree = tree::start(
        &cfg,
        store.clone(),
        Metrics::new(),
        TreeOptions {
            fence: fence.clone(),
            namespace: format!("{}/", dir.path().display()),
            ..TreeOptions::default()
        },
    )
    .await
    .expect("the tree starts");
    let s = secret("tenant1", "api_keys");
    // The first version's attempt has begun: a step of 5 s is in flight.
    eventually(Duration::from_secs(2), "a first commit", async || {
        store.journal(&s).await.unwrap().is_some()
    })
    .await;
    fence.revoke();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let journal = store.journal(&s).await.unwrap();
    let versions = store.versions(&s).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(60), tree.wait())
        .await
        .expect("the tree stops by itself");
    assert!(
        matches!(&exit, RootExit::Stopped(Some(reason)) if reason == "deposed"),
        "{exit}"
    );
    assert_eq!(store.journal(&s).await.unwrap(), journal);
    assert_eq!(store.versions(&s).await.unwrap(), versions);
}

// ---------------------------------------------------------------------------------------
// The Vault store: the election and store fencing, on the fake and on OpenBao.

const ROOT: &str = "root-token";

struct Vault {
    settings: VaultSettings,
    _fake: Option<VaultFake>,
    _bao: Option<OpenBao>,
    _dir: tempfile::TempDir,
}

impl Vault {
    fn with(
        address: String,
        mount: &str,
        token: &str,
        fake: Option<VaultFake>,
        bao: Option<OpenBao>,
    ) -> Vault {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        Vault {
            settings: VaultSettings {
                address,
                other_addresses: Vec::new(),
                mount: mount.to_owned(),
                path_prefix: "ha".into(),
                namespace: None,
                ca_file: None,
                master_key_file: dir.path().join("master.key"),
                timeout: Duration::from_secs(5),
                max_attempts: 3,
                retry_backoff: Duration::from_millis(20),
                auth: VaultAuth::Token { token_file },
                proxy: None,
                allow_insecure_http: false,
            },
            _fake: fake,
            _bao: bao,
            _dir: dir,
        }
    }

    fn fake() -> Vault {
        let fake = VaultFake::start("secret", ROOT).expect("start the fake");
        Vault::with(fake.address(), "secret", ROOT, Some(fake), None)
    }

    async fn openbao() -> Option<Vault> {
        let bao = OpenBao::start().await?;
        let mount = format!("kv-{}", random_name(8));
        bao.enable_kv2(&mount).await;
        let (address, token) = (bao.address().to_owned(), bao.token().to_owned());
        Some(Vault::with(address, &mount, &token, None, Some(bao)))
    }

    async fn store(&self) -> Arc<dyn Store> {
        Arc::new(VaultStore::open(self.settings.clone()).await.expect("open"))
    }
}

/// Commits `current` as the only labelled version of `s` at `term`.
async fn commit_at(
    store: &dyn Store,
    s: &SecretRef,
    current: VersionNo,
    term: u64,
) -> Result<(), StoreError> {
    let labels = [(current, Label::Current)];
    let journal = format!("v{current}@{term}").into_bytes();
    store
        .commit_at_term(
            s,
            Commit {
                journal: &journal,
                labels: &labels,
                history: None,
                now: at(current as i64),
            },
            term,
        )
        .await
}

async fn store_fencing(vault: &Vault) {
    // Two replicas' views of the same documents.
    let (new, old) = (vault.store().await, vault.store().await);
    let s = secret("tenant1", "db");
    for v in 1..=2 {
        new.put_version(&s, v, RotationId(v), &value(&format!("v{v}")), at(0))
            .await
            .unwrap();
    }
    commit_at(&*new, &s, 1, 0)
        .await
        .expect("term 0: no fencing");
    commit_at(&*new, &s, 1, 3).await.expect("term 3");
    // The old leader re-reads the document first, so the per-document check-and-set
    // passes: only the term refuses it.
    assert!(old.journal(&s).await.unwrap().is_some());
    let err = commit_at(&*old, &s, 2, 2).await.expect_err("a lower term");
    assert!(
        matches!(
            err,
            StoreError::Deposed {
                term: 2,
                recorded: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_deposed());
    assert!(
        err.to_string().contains("term 3") && err.to_string().contains("_rotor"),
        "{err}"
    );
    assert_eq!(new.journal(&s).await.unwrap(), Some(b"v1@3".to_vec()));
    assert_eq!(new.current_version(&s).await.unwrap(), Some(1));
    // The same term and a higher one pass; term 0 (a process without HA) is not fenced
    // and does not lower the recorded term.
    commit_at(&*new, &s, 2, 3).await.expect("same term");
    commit_at(&*new, &s, 1, 0).await.expect("term 0");
    commit_at(&*new, &s, 2, 4).await.expect("term 4");
    let err = commit_at(&*new, &s, 1, 3)
        .await
        .expect_err("term 3 after 4");
    assert!(
        matches!(err, StoreError::Deposed { recorded: 4, .. }),
        "{err}"
    );

    // Layer 1: a closed fence writes nothing at all, records included.
    let fence = Fence::new(5, Instant::now() + Duration::from_secs(60));
    let fenced = FencedStore::new(new.clone(), fence.clone());
    fenced
        .commit(
            &s,
            Commit {
                journal: b"f",
                labels: &[(2, Label::Current)],
                history: None,
                now: at(9),
            },
        )
        .await
        .expect("a valid fence");
    fence.revoke();
    let err = fenced
        .commit(
            &s,
            Commit {
                journal: b"g",
                labels: &[(1, Label::Current)],
                history: None,
                now: at(10),
            },
        )
        .await
        .expect_err("a closed fence");
    assert!(matches!(err, StoreError::Fenced { term: 5 }), "{err}");
    assert!(fenced.record_put("jobs", "j1", b"x", None).await.is_err());
    assert!(
        fenced
            .put_version(&s, 3, RotationId(3), &value("v3"), at(11))
            .await
            .is_err()
    );
    assert_eq!(new.journal(&s).await.unwrap(), Some(b"f".to_vec()));
    assert_eq!(new.record_get("jobs", "j1").await.unwrap(), None);
    assert_eq!(new.versions(&s).await.unwrap().len(), 2);
}

#[tokio::test]
async fn fake_store_fencing_refuses_a_lower_term() {
    store_fencing(&Vault::fake()).await;
}

#[tokio::test]
async fn openbao_store_fencing_refuses_a_lower_term() {
    let Some(vault) = Vault::openbao().await else {
        return;
    };
    store_fencing(&vault).await;
}

async fn vault_election(vault: &Vault) {
    let lease = Duration::from_secs(1);
    let mut elections = Vec::new();
    for id in ["a", "b"] {
        elections.push(Some(Election::start(
            vault.store().await,
            settings(id, lease),
        )));
    }
    let leader = one_leader(&elections, Duration::from_secs(10)).await;
    let killed = std::time::Instant::now();
    drop(elections[leader].take());
    let next = one_leader(&elections, Duration::from_secs(10)).await;
    let failover = killed.elapsed();
    println!("ha: Vault election failover {failover:?} (lease {lease:?})");
    assert_ne!(next, leader);
    // Real time on a shared machine: the bound plus scheduling slack.
    assert!(
        failover <= lease + lease / 3 + Duration::from_millis(700),
        "{failover:?}"
    );
    assert_eq!(lease_record(&*vault.store().await).await.term, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_election_one_leader_and_a_dead_one_replaced() {
    vault_election(&Vault::fake()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_election_one_leader_and_a_dead_one_replaced() {
    let Some(vault) = Vault::openbao().await else {
        return;
    };
    vault_election(&vault).await;
}

// ---------------------------------------------------------------------------------------
// Three real `rotor run` processes on one OpenBao.

const PREFIX: &str = "prod";
const TOKEN: &str = "ha-admin-token-0123456789";

/// What every replica of a [`Cluster`] manages: `secrets` secrets `tenant1/k{n}`, each with
/// the policy `fast` (its `interval` and `grace`) and the target `target`.
#[derive(Clone, Copy)]
struct Workload {
    secrets: usize,
    interval: &'static str,
    grace: &'static str,
    target: &'static str,
}

/// The failover tests' few secrets, rotating every second, so that a new leader commits soon.
const FAILOVER: Workload = Workload {
    secrets: 6,
    interval: "1s",
    grace: "300ms",
    target: r#"{ type = "none", delay = "800ms" }"#,
};

struct Cluster {
    workload: Workload,
    bao: OpenBao,
    mount: String,
    shared: tempfile::TempDir,
    replicas: Vec<Option<RotorBin>>,
    /// Replicas stopped by SIGSTOP now: they cannot answer, so nobody asks them.
    frozen: Vec<bool>,
    /// Each replica's port and config, to start it again after a kill.
    configs: Vec<(u16, String)>,
    dirs: Vec<tempfile::TempDir>,
}

fn write_0600(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

impl Cluster {
    async fn start() -> Option<Cluster> {
        Cluster::start_with(FAILOVER).await
    }

    async fn start_with(workload: Workload) -> Option<Cluster> {
        let bao = OpenBao::start().await?;
        let mount = format!("kv-{}", random_name(8));
        bao.enable_kv2(&mount).await;
        let shared = tempfile::tempdir().unwrap();
        // What the shared Kubernetes Secret would hold: rotor creates none of them.
        write_0600(&shared.path().join("admin.token"), TOKEN);
        write_0600(&shared.path().join("master.key"), &"ab".repeat(32));
        write_0600(&shared.path().join("vault.token"), bao.token());
        let mut cluster = Cluster {
            workload,
            bao,
            mount,
            shared,
            replicas: Vec::new(),
            frozen: vec![false; 3],
            configs: Vec::new(),
            dirs: Vec::new(),
        };
        for i in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let config = cluster.config(i, port);
            cluster
                .replicas
                .push(Some(RotorBin::start(dir.path(), port, &config).await));
            cluster.configs.push((port, config));
            cluster.dirs.push(dir);
        }
        Some(cluster)
    }

    fn config(&self, i: usize, port: u16) -> String {
        let shared = self.shared.path().display();
        let mut secrets = String::new();
        for k in 0..self.workload.secrets {
            secrets.push_str(&format!(
                "[[secrets]]\ntenant = \"tenant1\"\nkey = \"k{k}\"\npolicy = \"fast\"\ntarget = {}\n",
                self.workload.target
            ));
        }
        format!(
            r#"[server]
listen = "127.0.0.1:{port}"
admin_token_file = "{shared}/admin.token"

[store]
type = "vault"
address = "{address}"
mount = "{mount}"
path_prefix = "{PREFIX}"
master_key_file = "{shared}/master.key"
auth = {{ method = "token", token_file = "{shared}/vault.token" }}

[ha]
enabled = true
id = "r{i}"
advertise_url = "http://127.0.0.1:{port}"
lease_duration = "{lease}s"

[runtime]
shutdown_timeout = "5s"
retry_backoff = "500ms"
retry_backoff_max = "1s"

[policies.fast]
interval = "{interval}"
grace = "{grace}"
generator = {{ type = "token", bytes = 16 }}
max_attempts = 3

{secrets}"#,
            address = self.bao.address(),
            mount = self.mount,
            lease = D.as_secs(),
            interval = self.workload.interval,
            grace = self.workload.grace,
        )
    }

    /// `(leader, term, self)` as replica `i` answers `GET /admin/leader`.
    async fn leader_seen_by(&self, i: usize) -> Option<(Option<String>, u64, String)> {
        let r = self.replicas[i].as_ref()?;
        let resp = request(r.addr, "GET", "/admin/leader", Some(TOKEN), None).await;
        if resp.status != 200 {
            return None;
        }
        let v = resp.json();
        Some((
            v["leader"].as_str().map(str::to_owned),
            v["term"].as_u64()?,
            v["self"].as_str()?.to_owned(),
        ))
    }

    /// Waits until every live replica (not killed, not frozen) names the same leader at a
    /// term above `after`;
    /// returns its index and term.
    async fn agreed_leader(&self, after: u64, limit: Duration) -> (usize, u64) {
        eventually(limit, "one leader every replica names", async || {
            let mut seen = Vec::new();
            for i in 0..self.replicas.len() {
                if self.replicas[i].is_some() && !self.frozen[i] {
                    seen.push((i, self.leader_seen_by(i).await?));
                }
            }
            let (_, (leader, term, _)) = seen.first()?.clone();
            let leader = leader?;
            if term <= after
                || !seen
                    .iter()
                    .all(|(_, (l, t, _))| l.as_deref() == Some(leader.as_str()) && *t == term)
            {
                return None;
            }
            let (idx, _) = seen.iter().find(|(_, (_, _, me))| *me == leader)?;
            Some((*idx, term))
        })
        .await
    }

    async fn rotor_leader_gauge(&self, i: usize) -> Option<u64> {
        self.gauge(i, "rotor_leader").await
    }

    /// Replica `i`'s unlabelled gauge `name`.
    async fn gauge(&self, i: usize, name: &str) -> Option<u64> {
        let r = self.replicas[i].as_ref()?;
        let resp = request(r.addr, "GET", "/metrics", None, None).await;
        let text = String::from_utf8_lossy(&resp.body).into_owned();
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    }

    /// Every secret's state document: `(KV version, recorded term, history length)`.
    async fn documents(&self) -> Vec<(u64, u64, usize)> {
        let mut out = Vec::new();
        for k in 0..self.workload.secrets {
            let (status, body) = self
                .bao
                .call(
                    "GET",
                    &format!("{}/data/{PREFIX}/_rotor/tenant1/k{k}/_rotor", self.mount),
                    None,
                )
                .await;
            if status != 200 {
                out.push((0, 0, 0));
                continue;
            }
            let data = &body["data"];
            let doc = &data["data"];
            out.push((
                data["metadata"]["version"].as_u64().unwrap_or(0),
                doc["term"].as_u64().unwrap_or(0),
                doc["history"].as_array().map_or(0, Vec::len),
            ));
        }
        out
    }

    /// Starts replica `i` again (after a kill), on its port, with its config.
    async fn restart(&mut self, i: usize) {
        self.respawn(i);
        self.replicas[i].as_mut().unwrap().wait_ready().await;
    }

    /// [`Cluster::restart`] without waiting until the replica is ready.
    fn respawn(&mut self, i: usize) {
        let (port, config) = self.configs[i].clone();
        self.replicas[i] = Some(RotorBin::spawn(self.dirs[i].path(), port, &config, "info"));
    }

    fn signal(&mut self, i: usize, signal: &str) {
        self.frozen[i] = signal == "-STOP";
        let pid = self.replicas[i].as_ref().unwrap().child.id().to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }
}

/// Waits until some document records `term` (the first commit of that term's leader).
async fn first_commit_of(cluster: &Cluster, term: u64, limit: Duration) {
    eventually(limit, format!("a commit at term {term}"), async || {
        cluster.documents().await.iter().any(|(_, t, _)| *t == term)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_one_leader_kill_9_and_a_frozen_leader() {
    let Some(mut cluster) = Cluster::start().await else {
        return;
    };
    // Nothing was created by rotor: the shared files are as written.
    assert_eq!(
        std::fs::read_to_string(cluster.shared.path().join("admin.token")).unwrap(),
        TOKEN
    );

    // Exactly one leader, every replica agrees; the gauge says who.
    let (leader, term) = cluster.agreed_leader(0, Duration::from_secs(30)).await;
    first_commit_of(&cluster, term, Duration::from_secs(30)).await;
    for i in 0..3 {
        let want = u64::from(i == leader);
        eventually(Duration::from_secs(5), "rotor_leader", async || {
            cluster.rotor_leader_gauge(i).await == Some(want)
        })
        .await;
        let (_, _, me) = cluster.leader_seen_by(i).await.unwrap();
        assert_eq!(me, format!("r{i}"));
    }
    // A follower forwards writes to the leader and answers as it answers (a rotation, or
    // 409 while the secret's scheduled one runs: never 503 while there is a leader), and
    // is ready.
    let follower = (leader + 1) % 3;
    let f = cluster.replicas[follower].as_ref().unwrap();
    let r = request(
        f.addr,
        "POST",
        "/admin/secrets/rotate",
        Some(TOKEN),
        Some(r#"{"tenantId":"tenant1","secretKey":"k0"}"#),
    )
    .await;
    assert!(
        r.status == 202 || r.status == 409,
        "{} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    assert!(f.is_ready().await);

    // kill -9 of the leader: a new one, and its first commit, within the lease plus one
    // renew interval (plus slack for a loaded machine).
    cluster.replicas[leader].take().unwrap().kill_group();
    let killed = std::time::Instant::now();
    let (leader2, term2) = cluster.agreed_leader(term, Duration::from_secs(30)).await;
    let elected = killed.elapsed();
    first_commit_of(&cluster, term2, Duration::from_secs(30)).await;
    let first_step = killed.elapsed();
    println!(
        "ha: kill -9 failover: new leader r{leader2} (term {term2}) after {elected:?}, its first commit after {first_step:?} (lease {D:?}, renew {:?})",
        D / 3
    );
    assert!(term2 > term);
    assert!(
        elected <= D + D / 3 + Duration::from_secs(1),
        "a new leader after {elected:?}"
    );

    // The frozen leader: SIGSTOP past its lease; another replica takes over and rotates.
    cluster.signal(leader2, "-STOP");
    let frozen = std::time::Instant::now();
    let (leader3, term3) = cluster.agreed_leader(term2, Duration::from_secs(30)).await;
    first_commit_of(&cluster, term3, Duration::from_secs(30)).await;
    println!(
        "ha: frozen leader replaced by r{leader3} (term {term3}) after {:?}",
        frozen.elapsed()
    );
    assert_ne!(leader3, leader2);
    // The new leader is held still while the old one resumes, so any write seen comes
    // from the stale term. It is resumed well before its lease could run out.
    cluster.signal(leader3, "-STOP");
    let before = cluster.documents().await;
    let lease_before = cluster
        .bao
        .call(
            "GET",
            &format!(
                "{}/metadata/{PREFIX}/_rotor/_records/ha/leader",
                cluster.mount
            ),
            None,
        )
        .await;
    cluster.signal(leader2, "-CONT");
    let resumed = std::time::Instant::now();
    eventually(
        Duration::from_millis(1_500),
        "the resumed leader to step down",
        async || cluster.rotor_leader_gauge(leader2).await == Some(0),
    )
    .await;
    // Give its tree every chance to commit what it had in flight.
    while resumed.elapsed() < Duration::from_millis(1_200) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = cluster.documents().await;
    let lease_after = cluster
        .bao
        .call(
            "GET",
            &format!(
                "{}/metadata/{PREFIX}/_rotor/_records/ha/leader",
                cluster.mount
            ),
            None,
        )
        .await;
    cluster.signal(leader3, "-CONT");
    assert_eq!(
        before, after,
        "a document changed while only the stale leader ran"
    );
    assert_eq!(
        lease_before.1["data"]["current_version"], lease_after.1["data"]["current_version"],
        "the stale leader wrote the lease"
    );
    let log = cluster.replicas[leader2].as_ref().unwrap().log();
    assert!(log.contains("no longer the leader"), "{log}");
    // Its refused commits (if any) were a lost lease, not a store outage.
    assert_eq!(cluster.gauge(leader2, "rotor_store_up").await, Some(1));

    // Both replicas agree on a leader again (the resumed one only at a new term: it
    // never leads again at its stale one), and rotations go on.
    let (leader4, term4) = cluster.agreed_leader(term2, Duration::from_secs(30)).await;
    assert!(term4 >= term3);
    let (named, seen_term, _) = cluster.leader_seen_by(leader2).await.unwrap();
    assert_eq!(named, Some(format!("r{leader4}")));
    assert!(seen_term > term2);
    let history_before: usize = cluster.documents().await.iter().map(|d| d.2).sum();
    eventually(
        Duration::from_secs(30),
        "rotations after the failovers",
        async || cluster.documents().await.iter().map(|d| d.2).sum::<usize>() > history_before,
    )
    .await;
    // Every document's recorded term is a leader's, none above the newest.
    for (_, t, _) in cluster.documents().await {
        assert!(t <= term4, "term {t} above the newest leader's {term4}");
    }
}

/// The p-th percentile (0..=100) of `times`, nearest rank.
fn percentile(times: &mut [Duration], p: usize) -> Duration {
    times.sort();
    let rank = (p * times.len()).div_ceil(100).max(1);
    times[rank - 1]
}

/// Failover times over repeated `kill -9` of the leader of three replicas: each time the
/// killed replica is started again, so there are always three. Prints every failover and
/// the median and p99 of both figures (kill to a new leader every replica names, kill to
/// that leader's first commit); each new leader within the lease plus one renew interval
/// (plus slack for a loaded machine). `ROTOR_HA_KILLS` sets the number of kills (3 by
/// default; `scripts/ha-failover.sh` runs many).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_times_over_repeated_kill_9_of_the_leader() {
    let kills: usize = std::env::var("ROTOR_HA_KILLS")
        .map(|k| k.parse().expect("ROTOR_HA_KILLS is a number of kills"))
        .unwrap_or(3);
    let Some(mut cluster) = Cluster::start().await else {
        return;
    };
    let (mut leader, mut term) = cluster.agreed_leader(0, Duration::from_secs(30)).await;
    first_commit_of(&cluster, term, Duration::from_secs(30)).await;
    let (mut elected_times, mut commit_times) = (Vec::new(), Vec::new());
    for n in 1..=kills {
        cluster.replicas[leader].take().unwrap().kill_group();
        let killed = std::time::Instant::now();
        let (next, next_term) = cluster.agreed_leader(term, Duration::from_secs(30)).await;
        let elected = killed.elapsed();
        first_commit_of(&cluster, next_term, Duration::from_secs(30)).await;
        let committed = killed.elapsed();
        println!(
            "ha: kill {n}: r{leader} (term {term}) -> r{next} (term {next_term}): leader after {elected:?}, first commit after {committed:?}"
        );
        assert!(
            elected <= D + D / 3 + Duration::from_secs(1),
            "kill {n}: a new leader after {elected:?}"
        );
        elected_times.push(elected);
        commit_times.push(committed);
        cluster.restart(leader).await;
        (leader, term) = (next, next_term);
    }
    println!(
        "ha: failover over {kills} kills (lease {D:?}, renew {:?}): new leader p50 {:?} p99 {:?}; first commit p50 {:?} p99 {:?}",
        D / 3,
        percentile(&mut elected_times, 50),
        percentile(&mut elected_times, 99),
        percentile(&mut commit_times, 50),
        percentile(&mut commit_times, 99),
    );
}

/// `GET /admin/leader` over real HTTP through `HaAdmin`: a process without `[ha]` leads
/// itself at term 0; a replica names the leader it learned of (or none), and itself; the
/// route wants the admin token. The follower backend (`StoreAdmin`), reached without the
/// forwarding layer, answers a write with 503 and `Retry-After`, and is ready.
#[tokio::test]
async fn the_leader_route_and_the_follower_backend() {
    use rotor::api::server::{self, AdminToken};
    use rotor::ha::follower::StoreAdmin;
    use rotor::ha::{HaAdmin, LeaderInfo, Leadership};

    // The backend `rotor run` gives a replica that does not lead: reads from the store.
    let dir = tempfile::tempdir().unwrap();
    let config = tree_config(dir.path(), "");
    let store = open_store(dir.path());
    let follower_backend = |_: Leadership, metrics: Metrics| -> Arc<dyn rotor::api::Admin> {
        Arc::new(StoreAdmin::new(
            &config,
            store.clone(),
            metrics,
            rotor::clock::Clock::System,
        ))
    };

    async fn serve(
        admin: Arc<HaAdmin>,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let router = server::router(
            admin,
            AdminToken::new(TOKEN).unwrap(),
            Duration::from_secs(10),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server::serve(listener, router, async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }
    let leader = async |addr| {
        let r = request(addr, "GET", "/admin/leader", Some(TOKEN), None).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    };

    let single = Leadership::single("solo");
    let (addr, _stop) = serve(Arc::new(HaAdmin::new(
        single.clone(),
        follower_backend(single, Metrics::new()),
    )))
    .await;
    assert_eq!(
        leader(addr).await,
        serde_json::json!({"leader": "solo", "leaderUrl": null, "term": 0, "self": "solo"})
    );
    assert_eq!(
        request(addr, "GET", "/admin/leader", None, None)
            .await
            .status,
        401
    );

    let (tx, replica) = Leadership::channel("b");
    let (addr, _stop2) = serve(Arc::new(HaAdmin::new(
        replica.clone(),
        follower_backend(replica, Metrics::new()),
    )))
    .await;
    assert_eq!(
        leader(addr).await,
        serde_json::json!({"leader": null, "leaderUrl": null, "term": 0, "self": "b"})
    );
    let rotate = r#"{"tenantId":"tenant1","secretKey":"k0"}"#;
    let r = request(
        addr,
        "POST",
        "/admin/secrets/rotate",
        Some(TOKEN),
        Some(rotate),
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("does not lead"));
    tx.send_replace(LeaderInfo {
        leader: Some("a".into()),
        leader_url: Some("http://10.0.0.1:8080".into()),
        term: 3,
    });
    assert_eq!(
        leader(addr).await,
        serde_json::json!({"leader": "a", "leaderUrl": "http://10.0.0.1:8080", "term": 3, "self": "b"})
    );
    let r = request(
        addr,
        "POST",
        "/admin/secrets/rotate",
        Some(TOKEN),
        Some(rotate),
    )
    .await;
    // Without the forwarding layer (`server::router`) the write reaches the follower's
    // backend, which takes none.
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        request(addr, "GET", "/readyz", None, None).await.status,
        200
    );
    let metrics = request(addr, "GET", "/metrics", None, None).await;
    assert!(String::from_utf8_lossy(&metrics.body).contains("rotor_leader 0"));
}

// ---------------------------------------------------------------------------------------
// The kill campaign: the leader killed again and again under API rotations.

/// Many secrets rotating every half minute through a store-only target that takes a
/// moment, so that kills land in the middle of steps. Every 5 s was tried: three debug
/// replicas on two cores finish about 3.5 rotations a second, so nearly every secret was
/// always in progress and nearly every API rotation answered 409.
const CAMPAIGN: Workload = Workload {
    secrets: 100,
    interval: "30s",
    grace: "1s",
    target: r#"{ type = "none", delay = "300ms" }"#,
};

/// The replicas the campaign's client may send to: each one's address while it runs, and a
/// generation bumped at every kill, so that a request cut off by a kill is told apart from
/// a replica failing to answer.
type Live = Arc<std::sync::Mutex<Vec<(Option<std::net::SocketAddr>, u64)>>>;

fn live_addrs(live: &Live) -> Vec<std::net::SocketAddr> {
    live.lock()
        .unwrap()
        .iter()
        .filter_map(|(a, _)| *a)
        .collect()
}

/// What the campaign's client saw.
#[derive(Default)]
struct ClientLog {
    /// Every 202's rotation id, with the index of its secret.
    accepted: Vec<(usize, String)>,
    conflicts: usize,
    unavailable: usize,
    /// Requests whose replica was killed before it answered.
    cut_off: usize,
    /// The first few 409 and 503 answers' bodies, to show why they came.
    samples: Vec<String>,
    /// Answers the API must never give (anything but 202, 409 and 503).
    failures: Vec<String>,
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client")
}

/// Sends `POST /admin/secrets/rotate` for a random secret to a random live replica every
/// 250 ms until `stop` is set, and records every answer in `log`.
fn spawn_client(
    live: Live,
    secrets: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
    log: Arc<std::sync::Mutex<ClientLog>>,
) -> tokio::task::JoinHandle<()> {
    use rand::{Rng as _, SeedableRng as _};
    tokio::spawn(async move {
        let http = http_client();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut pace = tokio::time::interval(Duration::from_millis(250));
        while !stop.load(Ordering::SeqCst) {
            pace.tick().await;
            let up: Vec<_> = {
                let live = live.lock().unwrap();
                live.iter()
                    .enumerate()
                    .filter_map(|(i, (a, generation))| a.map(|a| (i, a, *generation)))
                    .collect()
            };
            if up.is_empty() {
                continue;
            }
            let (i, addr, generation) = up[rng.gen_range(0..up.len())];
            let k = rng.gen_range(0..secrets);
            let answer = async {
                let r = http
                    .post(format!("http://{addr}/admin/secrets/rotate"))
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/json")
                    .body(format!(r#"{{"tenantId":"tenant1","secretKey":"k{k}"}}"#))
                    .send()
                    .await?;
                let status = r.status().as_u16();
                Ok::<_, reqwest::Error>((status, r.bytes().await?))
            }
            .await;
            let killed = live.lock().unwrap()[i].1 != generation;
            let mut log = log.lock().unwrap();
            match answer {
                Ok((202, body)) => {
                    let id = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["rotationId"].as_str().map(str::to_owned));
                    match id {
                        Some(id) => log.accepted.push((k, id)),
                        None => log.failures.push(format!(
                            "rotate k{k} on r{i}: a 202 without a rotationId: {}",
                            String::from_utf8_lossy(&body)
                        )),
                    }
                }
                Ok((status @ (409 | 503), body)) => {
                    if status == 409 {
                        log.conflicts += 1;
                    } else {
                        log.unavailable += 1;
                    }
                    if log.samples.len() < 12 {
                        let sample =
                            format!("{status} from r{i}: {}", String::from_utf8_lossy(&body));
                        log.samples.push(sample);
                    }
                }
                Ok((status, body)) => log.failures.push(format!(
                    "rotate k{k} on r{i}: {status} {}",
                    String::from_utf8_lossy(&body)
                )),
                Err(_) if killed => log.cut_off += 1,
                Err(e) => log
                    .failures
                    .push(format!("rotate k{k} on r{i} (not killed): {e}")),
            }
        }
    })
}

/// `GET path` on `addr` with the admin token; anything but 200 with JSON fails the test.
async fn get_json(
    http: &reqwest::Client,
    addr: std::net::SocketAddr,
    path: &str,
) -> serde_json::Value {
    let r = http
        .get(format!("http://{addr}{path}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"));
    let status = r.status().as_u16();
    let body = r
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"));
    assert_eq!(
        status,
        200,
        "GET {path} on {addr}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

/// Every secret's `(versions, history)` as the API answers them, each secret read from one
/// of `addrs` in turn (followers read the store, the leader its own view of it).
async fn read_all(
    http: &reqwest::Client,
    addrs: &[std::net::SocketAddr],
    secrets: usize,
) -> Vec<(serde_json::Value, serde_json::Value)> {
    use futures::StreamExt as _;
    futures::stream::iter(0..secrets)
        .map(|k| {
            let addr = addrs[k % addrs.len()];
            async move {
                let versions =
                    get_json(http, addr, &format!("/admin/secrets/versions/tenant1/k{k}")).await;
                let history = get_json(
                    http,
                    addr,
                    &format!("/admin/secrets/history/tenant1/k{k}?limit=1000"),
                )
                .await;
                (versions, history)
            }
        })
        .buffered(8)
        .collect()
        .await
}

/// How many of a versions answer's versions carry the label `current`.
fn currents(versions: &serde_json::Value) -> usize {
    versions["versions"].as_array().map_or(0, |vs| {
        vs.iter()
            .filter(|v| {
                v["labels"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|l| l == "current"))
            })
            .count()
    })
}

/// What the campaign's checks have seen in the histories, across kills (the store keeps
/// only the newest records of each secret, so a record may leave the history later).
#[derive(Default)]
struct Finished {
    /// A rotation (secret, rotation id; ids count per secret) → the version it made.
    rotations: std::collections::HashMap<(usize, String), u64>,
    /// A promoted version (secret, version) → the rotation that promoted it.
    promotions: std::collections::HashMap<(usize, u64), String>,
}

/// Checks the campaign's invariants on one reading of every secret, `when` naming the
/// moment in a failure: exactly one version labelled current; no rotation id twice in a
/// history, nor a rotation id recorded for two different versions across readings; no
/// version promoted (a `succeeded` or `rolled_back` record) by two records.
fn check_invariants(
    reading: &[(serde_json::Value, serde_json::Value)],
    finished: &mut Finished,
    when: &str,
) {
    for (k, (versions, history)) in reading.iter().enumerate() {
        let n = currents(versions);
        assert_eq!(n, 1, "{when}: k{k} has {n} current versions: {versions}");
        let records = history["rotations"]
            .as_array()
            .unwrap_or_else(|| panic!("{when}: k{k}'s history: {history}"));
        let mut ids = std::collections::HashSet::new();
        let mut promoted = std::collections::HashSet::new();
        for r in records {
            let id = r["rotationId"].as_str().expect("a rotationId").to_owned();
            let to = r["toVersion"].as_u64().expect("a toVersion");
            assert!(
                ids.insert(id.clone()),
                "{when}: rotation {id} finished twice in k{k}'s history: {history}"
            );
            let outcome = r["outcome"].as_str().expect("an outcome");
            if matches!(outcome, "succeeded" | "rolled_back") {
                assert!(
                    promoted.insert(to),
                    "{when}: version {to} of k{k} promoted twice: {history}"
                );
                let by = finished.promotions.entry((k, to)).or_insert(id.clone());
                assert_eq!(
                    *by, id,
                    "{when}: version {to} of k{k} promoted by rotation {by} and again by {id}"
                );
            }
            let made = finished.rotations.entry((k, id.clone())).or_insert(to);
            assert_eq!(
                *made, to,
                "{when}: rotation {id} of k{k} recorded for v{to}, earlier for v{made}"
            );
        }
    }
}

/// The leader of three replicas `kill -9`ed `ROTOR_HA_CAMPAIGN_KILLS` times (50 by default;
/// `scripts/ha-kill-campaign.sh` runs 1,000), each time at a random instant 0..=4 s after
/// the previous new leader was agreed, while 100 secrets rotate every 30 s and a client
/// sends API rotations for random secrets through random live replicas (202, 409 and 503
/// are the only answers allowed). After each kill: a new leader every live replica names
/// within the lease plus one renew interval (plus slack for a loaded machine), the killed
/// replica started again, and over every secret exactly one current version, no version
/// promoted twice, no rotation finished twice. At the end every accepted rotation (each
/// 202's id) is in its secret's history. `ROTOR_HA_CAMPAIGN_SEED` replays a run's random
/// choices (the seed is printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_campaign_loses_no_rotation_and_promotes_nothing_twice() {
    use rand::{Rng as _, SeedableRng as _};
    let kills: usize = std::env::var("ROTOR_HA_CAMPAIGN_KILLS")
        .map(|k| {
            k.parse()
                .expect("ROTOR_HA_CAMPAIGN_KILLS is a number of kills")
        })
        .unwrap_or(50);
    let seed: u64 = std::env::var("ROTOR_HA_CAMPAIGN_SEED")
        .map(|s| s.parse().expect("ROTOR_HA_CAMPAIGN_SEED is a number"))
        .unwrap_or_else(|_| rand::random());
    println!("ha campaign: {kills} kills, seed {seed}");
    let Some(mut cluster) = Cluster::start_with(CAMPAIGN).await else {
        return;
    };
    let began = std::time::Instant::now();
    let secrets = CAMPAIGN.secrets;
    let http = http_client();
    let live: Live = Arc::new(std::sync::Mutex::new(
        cluster
            .replicas
            .iter()
            .map(|r| (r.as_ref().map(|r| r.addr), 0))
            .collect(),
    ));
    let (mut leader, mut term) = cluster.agreed_leader(0, Duration::from_secs(30)).await;
    eventually_every(
        Duration::from_secs(120),
        Duration::from_millis(500),
        "a current version of every secret",
        async || {
            read_all(&http, &live_addrs(&live), secrets)
                .await
                .iter()
                .all(|(versions, _)| currents(versions) == 1)
        },
    )
    .await;

    let log = Arc::new(std::sync::Mutex::new(ClientLog::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = spawn_client(
        live.clone(),
        secrets,
        seed.wrapping_add(1),
        stop.clone(),
        log.clone(),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut finished = Finished::default();
    let mut failovers = Vec::new();
    let mut next_kill = Instant::now() + Duration::from_millis(rng.gen_range(0..=4_000));
    for n in 1..=kills {
        tokio::time::sleep_until(next_kill).await;
        {
            let mut live = live.lock().unwrap();
            live[leader] = (None, live[leader].1 + 1);
        }
        cluster.replicas[leader].take().unwrap().kill_group();
        let killed = std::time::Instant::now();
        let (next, next_term) = cluster.agreed_leader(term, Duration::from_secs(30)).await;
        let elected = killed.elapsed();
        next_kill = Instant::now() + Duration::from_millis(rng.gen_range(0..=4_000));
        println!(
            "ha campaign: kill {n}: r{leader} (term {term}) -> r{next} (term {next_term}) after {elected:?}"
        );
        assert!(
            elected <= D + D / 3 + Duration::from_secs(1),
            "kill {n}: a new leader after {elected:?}"
        );
        failovers.push(elected);
        // The killed replica starts again while the invariants are read.
        cluster.respawn(leader);
        let reading = read_all(&http, &live_addrs(&live), secrets).await;
        check_invariants(&reading, &mut finished, &format!("after kill {n}"));
        cluster.replicas[leader]
            .as_mut()
            .unwrap()
            .wait_ready()
            .await;
        live.lock().unwrap()[leader].0 = Some(cluster.replicas[leader].as_ref().unwrap().addr);
        let failures = log.lock().unwrap().failures.clone();
        assert!(
            failures.is_empty(),
            "kill {n}: the client got {failures:#?}"
        );
        (leader, term) = (next, next_term);
    }

    stop.store(true, Ordering::SeqCst);
    client.await.expect("the client task");
    let log = std::mem::take(&mut *log.lock().unwrap());
    assert!(
        log.failures.is_empty(),
        "the client got {:#?}",
        log.failures
    );
    let missing = std::sync::Mutex::new(Vec::new());
    eventually_every(
        Duration::from_secs(120),
        Duration::from_secs(1),
        std::fmt::from_fn(|f| {
            write!(
                f,
                "every accepted rotation in its secret's history; missing (secret, rotation): {:?}",
                missing.lock().unwrap()
            )
        }),
        async || {
            let reading = read_all(&http, &live_addrs(&live), secrets).await;
            check_invariants(&reading, &mut finished, "at the end");
            let lost: Vec<_> = log
                .accepted
                .iter()
                .filter(|(k, id)| !finished.rotations.contains_key(&(*k, id.clone())))
                .cloned()
                .collect();
            let done = lost.is_empty();
            *missing.lock().unwrap() = lost;
            done
        },
    )
    .await;
    println!(
        "ha campaign: {kills} kills in {:?} (lease {D:?}, renew {:?}): new leader p50 {:?} p99 {:?}; {} rotations accepted (202), {} answered 409, {} answered 503, {} cut off by a kill; {} rotations finished in the histories read",
        began.elapsed(),
        D / 3,
        percentile(&mut failovers, 50),
        percentile(&mut failovers, 99),
        log.accepted.len(),
        log.conflicts,
        log.unavailable,
        log.cut_off,
        finished.rotations.len(),
    );
    println!("ha campaign: first 409/503 answers: {:#?}", log.samples);
}
