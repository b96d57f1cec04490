//! The laptop loop in one process: rotate, publish (kubelet-style), watch, reload, expire.
//! A secret whose mount shows the new version expires its previous version right after
//! grace (`expire_after = "grace_and_consumers"`); one that no mount shows has its grace
//! extended. Real time and real inotify; waits are eventually-true polls.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::embedded::{admin, open_store, tree_config};
use crate::common::receiver::Receiver;
use crate::common::wait::eventually;
use rotor::actors::tree::{self, TreeOptions};
use rotor::api::Admin;
use rotor::config::Config;
use rotor::domain::{Label, SecretRef, VersionMeta};
use rotor::metrics::Metrics;
use rotor::store::Store;
use rotor::watch::event::{WatchEvent, WatchEventKind as K};

fn config(dir: &Path, reload_url: &str) -> Config {
    tree_config(
        dir,
        &format!(
            r#"
[policies.gated]
interval = "1h"
grace = "1s"
generator = {{ type = "password", length = 24 }}
expire_after = "grace_and_consumers"
max_grace_extension = "1h"

[[secrets]]
tenant = "tenant1"
key = "database_credentials"
policy = "gated"

[[secrets]]
tenant = "tenant1"
key = "api_keys"
policy = "gated"

[[publish]]
path = "{dir}/mnt"
secrets = {{ "database-password" = "tenant1/database_credentials" }}
interval = "20ms"

[[mounts]]
path = "{dir}/mnt"
debounce = "20ms"
critical = ["database-*"]
reload = {{ type = "http", url = "{reload_url}", method = "POST", timeout = "5s" }}
files = {{ "database-password" = "tenant1/database_credentials" }}
"#,
            dir = dir.display()
        ),
    )
}

fn label(versions: &[VersionMeta], v: u64) -> Option<&VersionMeta> {
    versions.iter().find(|m| m.version == v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_publish_watch_reload_expire() {
    let d = tempfile::tempdir().unwrap();
    let r = Receiver::start(vec![200]).await;
    let cfg = config(d.path(), &r.url());
    let store = open_store(d.path());
    let events: Arc<Mutex<Vec<WatchEvent>>> = Arc::default();
    let sink = events.clone();
    let options = TreeOptions {
        namespace: format!("{}/", d.path().display()),
        watch_sink: Some(Arc::new(move |e: &WatchEvent| {
            sink.lock().unwrap().push(e.clone())
        })),
        ..TreeOptions::default()
    };
    let metrics = Metrics::new();
    let mut tree = tree::start(&cfg, store.clone(), metrics.clone(), options)
        .await
        .expect("tree starts");
    let admin = admin(&tree);
    let db = SecretRef::new("tenant1", "database_credentials").unwrap();
    let api = SecretRef::new("tenant1", "api_keys").unwrap();
    let file = d.path().join("mnt/database-password");

    // The first version is created at start and published.
    eventually(Duration::from_secs(15), "v1 published", async || {
        store.versions(&db).await.is_ok_and(|v| {
            label(&v, 1).is_some_and(|m| m.labels.contains(&Label::Current))
                && std::fs::read(&file).is_ok_and(|b| store.fingerprint(&b) == m_fp(&v, 1))
        })
    })
    .await;
    let meta = std::fs::symlink_metadata(&file).unwrap();
    assert!(meta.file_type().is_symlink(), "visible files are symlinks");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o400);
    assert!(d.path().join("mnt/..data").is_symlink());
    // The version marker beside the value, in the same generation (one `..data` swap).
    let marker = d.path().join("mnt/database-password_version");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "1");
    assert_eq!(
        std::fs::read_link(&marker).unwrap(),
        Path::new("..data/database-password_version")
    );

    // Rotate both; only the database secret is published and watched.
    admin.rotate(db.clone()).await.expect("rotate db");
    admin.rotate(api.clone()).await.expect("rotate api");
    eventually(Duration::from_secs(15), "v2 in the mount", async || {
        let Ok(bytes) = std::fs::read(&file) else {
            return false;
        };
        store
            .versions(&db)
            .await
            .is_ok_and(|v| store.fingerprint(&bytes) == m_fp(&v, 2))
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "2",
        "the marker follows its value"
    );
    eventually(Duration::from_secs(15), "reload fired", async || {
        r.hits() >= 1
    })
    .await;
    eventually(
        Duration::from_secs(15),
        "db v1 expired after grace, consumers caught up",
        async || {
            store
                .versions(&db)
                .await
                .is_ok_and(|v| label(&v, 1).is_some_and(|m| m.expired_at.is_some()))
        },
    )
    .await;
    // api_keys: nobody shows v2, so its grace is extended and v1 stays valid.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let v = store.versions(&api).await.unwrap();
    let v1 = label(&v, 1).unwrap();
    assert!(
        v1.labels.contains(&Label::Previous) && v1.expired_at.is_none(),
        "{v:?}"
    );

    let seen = events.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|e| e.kind == K::SecretChanged && e.file.as_deref() == Some("database-password"))
    );
    assert!(seen.iter().any(|e| e.kind == K::ReloadRequired));
    // Markers are metadata: no event names one, and `secrets_watched` below counts the
    // value file alone.
    assert!(
        !seen
            .iter()
            .any(|e| e.file.as_deref() == Some("database-password_version")),
        "{seen:?}"
    );
    let text = metrics.encode().unwrap();
    assert!(
        text.contains(r#"rotor_watcher_events_total{kind="secret-changed"}"#),
        "{text}"
    );
    assert!(text.contains("secrets_watched 1"), "{text}");
    assert!(text.contains("rotor_mounts 1"), "{text}");
    tree.shutdown(Duration::from_secs(5)).await;
}

fn m_fp(v: &[VersionMeta], n: u64) -> String {
    label(v, n)
        .map(|m| m.fingerprint.clone())
        .unwrap_or_default()
}
