//! The Vault store on a 3-node OpenBao cluster with integrated raft storage
//! (`tests/common/openbao_cluster.rs`): rotor, configured with the three nodes in
//! `[store] addresses`, rotates a few secrets on a fast policy, the active node is killed
//! (SIGKILL) mid-rotation, and rotor carries on through another node. Nothing is lost:
//! every secret ends with exactly one current version, every attempt but the one in flight
//! is in the history exactly once (none lost, none recorded twice), and the versions are
//! readable. The handover (from the kill to the first state commit rotor makes after it,
//! as the cluster's own timestamps show it) is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::common::embedded::admin;
use crate::common::openbao::random_name;
use crate::common::openbao_cluster::OpenBaoCluster;
use crate::common::wait::{eventually, eventually_every};
use rotor::actors::tree::{self, TreeOptions};
use rotor::api::Admin as _;
use rotor::clock::Clock;
use rotor::config::{Config, StoreConfig};
use rotor::domain::{Label, SecretRef};
use rotor::metrics::Metrics;
use rotor::store::Store;
use rotor::store::vault::VaultStore;

/// Generous: the machine is shared by several builds and test runs at once.
const LIMIT: Duration = Duration::from_secs(120);
const PREFIX: &str = "prod";

fn secrets() -> Vec<SecretRef> {
    (0..4)
        .map(|i| SecretRef::new(&format!("tenant{}", i % 2), &format!("key{i}")).expect("valid"))
        .collect()
}

/// The store on the cluster's three nodes (the first in `address`, all three in
/// `addresses` would be refused as a duplicate: `addresses` alone names them), a policy
/// rotating every second with half a second of grace, and a store-only target whose steps
/// take 200 ms, so that rotations are nearly always in flight.
fn config(cluster: &OpenBaoCluster, mount: &str, dir: &std::path::Path) -> Config {
    let addresses = cluster
        .addresses()
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = format!(
        r#"
[store]
type = "vault"
addresses = [{addresses}]
mount = "{mount}"
path_prefix = "{PREFIX}"
master_key_file = "{dir}/master.key"
timeout = "3s"
max_attempts = 4
retry_backoff = "100ms"
auth = {{ method = "token", token_file = "{dir}/token" }}

[runtime]
retry_backoff = "500ms"
retry_backoff_max = "2s"

[policies.fast]
interval = "1s"
grace = "500ms"
generator = {{ type = "token", bytes = 16 }}
max_attempts = 20
"#,
        dir = dir.display(),
    );
    for s in secrets() {
        text.push_str(&format!(
            "\n[[secrets]]\ntenant = \"{}\"\nkey = \"{}\"\npolicy = \"fast\"\n\
             target = {{ type = \"none\", delay = \"200ms\" }}\n",
            s.tenant(),
            s.key()
        ));
    }
    Config::from_str_with_env(&text, "vault_cluster.toml", &|_| None).expect("valid config")
}

/// Promoted versions of `s` whose promotion is after `after`.
async fn promoted_after(store: &dyn Store, s: &SecretRef, after: DateTime<Utc>) -> usize {
    store.versions(s).await.map_or(0, |vs| {
        vs.iter()
            .filter(|v| v.promoted_at.is_some_and(|p| p > after))
            .count()
    })
}

/// The creation times of the KV versions of `s`'s state document (every commit writes
/// one), as the cluster recorded them.
async fn commit_times(cluster: &OpenBaoCluster, mount: &str, s: &SecretRef) -> Vec<DateTime<Utc>> {
    let api = format!(
        "{mount}/metadata/{PREFIX}/_rotor/{}/{}/_rotor",
        s.tenant(),
        s.key()
    );
    let (status, body) = cluster.call("GET", &api, None).await;
    if status != 200 {
        return Vec::new();
    }
    body.pointer("/data/versions")
        .and_then(Value::as_object)
        .map(|versions| {
            versions
                .values()
                .filter_map(|v| v["created_time"].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_node_killed_mid_rotation_rotor_carries_on_through_another() {
    let Some(mut cluster) = OpenBaoCluster::start().await else {
        return;
    };
    let mount = format!("kv-{}", random_name(8));
    cluster.enable_kv2(&mount).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), format!("{}\n", cluster.token())).expect("token");
    let cfg = config(&cluster, &mount, dir.path());
    let StoreConfig::Vault(settings) = &cfg.store else {
        panic!("a Vault store: {:?}", cfg.store);
    };
    assert_eq!(settings.nodes().count(), 3, "{settings:?}");
    let vault = Arc::new(
        VaultStore::open((**settings).clone())
            .await
            .expect("open the Vault store"),
    );
    let store: Arc<dyn Store> = vault.clone();
    let options = TreeOptions {
        clock: Clock::System,
        namespace: format!("{}/{}/", dir.path().display(), random_name(6)),
        ..TreeOptions::default()
    };
    let mut tree = tree::start(&cfg, store.clone(), Metrics::new(), options)
        .await
        .expect("tree starts");
    let started = Utc::now();

    // Rotations going on: every secret promoted twice.
    for s in secrets() {
        eventually(LIMIT, format_args!("{s} to rotate twice"), async || {
            promoted_after(&*store, &s, started).await >= 2
        })
        .await;
    }

    // Kill the active node while a rotation is mid-way (a phase other than idle or grace:
    // a version stored and its steps running).
    let active = cluster.active().await;
    let active_address = cluster.addresses()[active].clone();
    eventually_every(
        LIMIT,
        Duration::from_millis(10),
        "a rotation mid-way",
        async || {
            let entries = admin(&tree).schedule().await.ok()?;
            entries
                .iter()
                .any(|e| e.phase != "idle" && e.phase != "grace")
                .then_some(())
        },
    )
    .await;
    let killed_at = Utc::now();
    let killed = Instant::now();
    cluster.kill(active);

    // rotor carries on: every secret promoted twice more, through another node.
    for s in secrets() {
        eventually(
            LIMIT,
            format_args!("{s} to rotate twice after the active node was killed"),
            async || promoted_after(&*store, &s, killed_at).await >= 2,
        )
        .await;
    }
    let carried_on = killed.elapsed();
    let new_active = cluster.active().await;
    assert_ne!(new_active, active, "a new active node");
    let in_use = vault.node_in_use();
    assert_ne!(
        in_use, active_address,
        "rotor still talks to the killed node"
    );

    // The handover: from the kill to the first commit after it, by the cluster's clock
    // (this machine's: the nodes run here).
    let mut first_commit = None::<DateTime<Utc>>;
    for s in secrets() {
        for t in commit_times(&cluster, &mount, &s).await {
            if t > killed_at && first_commit.is_none_or(|f| t < f) {
                first_commit = Some(t);
            }
        }
    }
    let first_commit = first_commit.expect("a commit after the kill");
    let handover = (first_commit - killed_at).to_std().expect("after the kill");
    assert!(
        handover < Duration::from_secs(30),
        "the handover took {handover:?}"
    );

    let exit = tree.shutdown(Duration::from_secs(10)).await;
    println!("vault_cluster: tree exit {exit:?}");

    // Nothing lost.
    let mut rotations = 0;
    for s in secrets() {
        let versions = store.versions(&s).await.expect("versions");
        let current: Vec<u64> = versions
            .iter()
            .filter(|v| v.labels.contains(&Label::Current))
            .map(|v| v.version)
            .collect();
        assert_eq!(current.len(), 1, "{s}: one current version: {versions:?}");
        let history = store.history(&s, usize::MAX).await.expect("history");
        let ids: BTreeSet<_> = history.iter().map(|h| h.rotation).collect();
        assert_eq!(
            ids.len(),
            history.len(),
            "{s}: an attempt recorded twice: {history:?}"
        );
        let mut by_version: BTreeMap<u64, usize> = BTreeMap::new();
        for h in &history {
            *by_version.entry(h.to_version).or_default() += 1;
            let meta = versions
                .iter()
                .find(|v| v.version == h.to_version)
                .unwrap_or_else(|| {
                    panic!(
                        "{s}: history names version {} the store lacks",
                        h.to_version
                    )
                });
            assert_eq!(
                meta.rotation, h.rotation,
                "{s}: version {} of another attempt",
                h.to_version
            );
        }
        // Every attempt has ended but the newest one, which may be in flight.
        let newest = versions.iter().map(|v| v.version).max().expect("versions");
        for v in &versions {
            let records = by_version.get(&v.version).copied().unwrap_or(0);
            if v.version == newest {
                assert!(
                    records <= 1,
                    "{s}: version {} recorded {records} times",
                    v.version
                );
            } else {
                assert_eq!(
                    records, 1,
                    "{s}: the attempt of version {} lost or doubled: {history:?}",
                    v.version
                );
            }
        }
        // Readable: the current version, and the newest ones Vault keeps (it drops values
        // beyond the mount's max_versions, 10).
        let value = store
            .read_value(&s, current[0])
            .await
            .expect("read current");
        assert!(!value.expose().is_empty());
        for v in versions.iter().filter(|v| v.version + 8 > newest) {
            store
                .read_value(&s, v.version)
                .await
                .unwrap_or_else(|e| panic!("{s}: version {} unreadable: {e}", v.version));
        }
        rotations += history.len();
    }
    // One line for `scripts/vault-failover.sh`, which takes medians over runs.
    println!(
        "vault_cluster figures: handover_ms={} carried_on_ms={}",
        handover.as_millis(),
        carried_on.as_millis()
    );
    println!(
        "vault_cluster: killed the active node {active_address} mid-rotation; handover \
         (kill to the next successful commit) {handover:?}; every secret promoted twice more \
         {carried_on:?} after the kill; rotor now on {in_use}; {rotations} attempts in the \
         histories, none lost or doubled"
    );
}
