//! The volume watcher on real directories and real inotify: kubelet-style atomic swaps
//! (with and without changes, files added and removed, 1,000 rapid swaps), plain
//! directories (in-place writes, temp-file + rename), a deleted and recreated directory, an
//! unreadable file, polling, restarts without changes, reload coalescing, retries and rate
//! limiting against a real local HTTP receiver, the subPath warning from a mountinfo
//! fixture, and that file content never appears in an event.
//!
//! Time is real here (inotify is), so debounces are short and every wait is an
//! eventually-true poll with a deadline, never a fixed sleep that must be long enough.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::kubelet;
use crate::common::receiver::Receiver;
use crate::common::wait::eventually;
use ractor::{Actor, ActorRef};
use rotor::actors::watcher::{WatchContext, WatcherActor, WatcherMsg};
use rotor::clock::Clock;
use rotor::config::MountConfig;
use rotor::metrics::{Metrics, ReloadLabels};
use rotor::store::crypto::MasterKey;
use rotor::watch::event::{WatchEvent, WatchEventKind as K};
use rotor::watch::limiter::ReloadLimiter;
use rotor::watch::reload::config::{HttpUrl, ReloadAction, ReloadConfig};

fn fp(bytes: &[u8]) -> String {
    MasterKey::from_bytes(&[7u8; 32]).fingerprint(bytes)
}

fn mount(path: &Path) -> MountConfig {
    MountConfig {
        path: path.to_owned(),
        debounce: Duration::from_millis(20),
        poll_interval: None,
        health_check_interval: Duration::from_secs(3_600),
        critical: Vec::new(),
        reload: None,
        files: BTreeMap::new(),
    }
}

fn http_reload(r: &Receiver, max_attempts: u32) -> ReloadConfig {
    ReloadConfig {
        action: ReloadAction::Http {
            url: HttpUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: r.addr.port(),
                path: "/-/reload".into(),
            },
            method: "POST".into(),
            ca_file: None,
            proxy: None,
            timeout: Duration::from_secs(5),
            expected_status: None,
        },
        max_attempts,
        backoff: Duration::from_millis(10),
    }
}

struct Opts {
    state_dir: Option<PathBuf>,
    per_minute: u32,
    mountinfo: PathBuf,
    max_file_size: u64,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            state_dir: None,
            per_minute: 10_000,
            mountinfo: "/proc/self/mountinfo".into(),
            max_file_size: rotor::watch::scan::DEFAULT_MAX_FILE_SIZE,
        }
    }
}

struct Watch {
    actor: ActorRef<WatcherMsg>,
    handle: tokio::task::JoinHandle<()>,
    events: Arc<Mutex<Vec<WatchEvent>>>,
    metrics: Metrics,
}

impl Watch {
    async fn start(cfg: MountConfig, opts: Opts) -> Watch {
        Self::start_with(cfg, opts, Arc::new(Mutex::new(Vec::new())), Metrics::new()).await
    }

    async fn start_with(
        cfg: MountConfig,
        opts: Opts,
        events: Arc<Mutex<Vec<WatchEvent>>>,
        metrics: Metrics,
    ) -> Watch {
        let sink_events = events.clone();
        let ctx = Arc::new(WatchContext {
            namespace: format!("{}/", cfg.path.display()),
            metrics: metrics.clone(),
            clock: Clock::System,
            fingerprint: Arc::new(fp),
            limiter: Arc::new(ReloadLimiter::new(opts.per_minute)),
            managed: BTreeSet::new(),
            state_dir: opts.state_dir,
            sink: Some(Arc::new(move |e: &WatchEvent| {
                sink_events.lock().unwrap().push(e.clone())
            })),
            mountinfo: opts.mountinfo,
            max_file_size: opts.max_file_size,
            reload_gate: None,
            notify: true,
            rotations: None,
        });
        let (actor, handle) = Actor::spawn(None, WatcherActor, (Arc::new(cfg), ctx))
            .await
            .expect("watcher starts");
        let w = Watch {
            actor,
            handle,
            events,
            metrics,
        };
        // post_start (watch armed, first scan) has finished once a call is answered.
        ractor::call!(w.actor, WatcherMsg::Snapshot).expect("watcher answers");
        w
    }

    async fn stop(self) -> Arc<Mutex<Vec<WatchEvent>>> {
        self.actor.stop(None);
        self.handle.await.unwrap();
        self.events
    }

    fn all(&self) -> Vec<WatchEvent> {
        self.events.lock().unwrap().clone()
    }

    fn of(&self, kind: K) -> Vec<WatchEvent> {
        self.all().into_iter().filter(|e| e.kind == kind).collect()
    }

    fn count(&self, kind: K) -> usize {
        self.of(kind).len()
    }

    fn changed(&self, file: &str) -> Vec<String> {
        self.of(K::SecretChanged)
            .into_iter()
            .filter(|e| e.file.as_deref() == Some(file))
            .filter_map(|e| e.fingerprint)
            .collect()
    }

    fn reloads(&self, outcome: &str) -> u64 {
        self.metrics
            .reloads_total
            .get_or_create(&ReloadLabels {
                action: "http".into(),
                outcome: outcome.into(),
            })
            .get()
    }

    /// Waits until `f` holds (10 s deadline); a timeout lists the events seen.
    async fn until(&self, what: &str, f: impl Fn(&Watch) -> bool) {
        let what = fmt::from_fn(|out| write!(out, "{what}; events: {:#?}", self.all()));
        eventually(Duration::from_secs(10), what, async || f(self)).await;
    }

    /// Lets the watcher go quiet: a marker change in another file is reported, so
    /// everything before it has been processed.
    async fn settle(&self, dir: &Path, marker: &mut u32, payload: &[(&str, &[u8])]) {
        *marker += 1;
        let m = format!("marker-{marker}");
        let mut all: Vec<(&str, &[u8])> = payload.to_vec();
        all.push(("zz-marker", m.as_bytes()));
        kubelet::swap(dir, &all);
        let want = fp(m.as_bytes());
        self.until("marker", |w| w.changed("zz-marker").contains(&want))
            .await;
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_with_changes_reports_only_the_changed_file() {
    let d = tmp();
    let m = d.path().join("secrets");
    kubelet::swap(&m, &[("a", b"1"), ("b", b"2")]);
    let w = Watch::start(mount(&m), Opts::default()).await;
    assert_eq!(w.metrics.secrets_watched.get(), 2);
    kubelet::swap(&m, &[("a", b"1"), ("b", b"3")]);
    w.until("b changed", |w| w.changed("b") == vec![fp(b"3")])
        .await;
    assert!(w.changed("a").is_empty());
    assert_eq!(w.count(K::SecretDeleted), 0);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_without_changes_emits_nothing() {
    let d = tmp();
    let m = d.path().join("secrets");
    let payload: &[(&str, &[u8])] = &[("a", b"1"), ("b", b"2")];
    kubelet::swap(&m, payload);
    let w = Watch::start(mount(&m), Opts::default()).await;
    let mut marker = 0;
    w.settle(&m, &mut marker, payload).await;
    let before = w.all().len();
    for _ in 0..20 {
        kubelet::swap(&m, &[("a", b"1"), ("b", b"2"), ("zz-marker", b"marker-1")]);
    }
    w.settle(&m, &mut marker, payload).await;
    let after: Vec<_> = w.all()[before..].to_vec();
    assert_eq!(after.len(), 1, "only the marker: {after:#?}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_added_and_removed_in_one_swap() {
    let d = tmp();
    let m = d.path().join("secrets");
    kubelet::swap(&m, &[("a", b"1"), ("b", b"2")]);
    let w = Watch::start(mount(&m), Opts::default()).await;
    kubelet::swap(&m, &[("a", b"1"), ("c", b"3")]);
    w.until("c added, b deleted", |w| {
        w.changed("c") == vec![fp(b"3")] && w.count(K::SecretDeleted) == 1
    })
    .await;
    assert_eq!(w.of(K::SecretDeleted)[0].file.as_deref(), Some("b"));
    assert!(!m.join("b").exists(), "kubelet removed the visible link");
    w.until("gauge", |w| w.metrics.secrets_watched.get() == 2)
        .await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_directory_in_place_write_and_temp_file_rename() {
    let d = tmp();
    let m = d.path().join("plain");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(m.join("token"), b"one").unwrap();
    std::fs::write(m.join("other"), b"x").unwrap();
    let w = Watch::start(mount(&m), Opts::default()).await;
    // In place: truncate and write the same inode.
    std::fs::write(m.join("token"), b"two").unwrap();
    w.until("in-place write", |w| {
        w.changed("token").last() == Some(&fp(b"two"))
    })
    .await;
    // Temp file + rename, as editors and config tools do.
    std::fs::write(m.join(".other.tmp"), b"y").unwrap();
    std::fs::rename(m.join(".other.tmp"), m.join("other")).unwrap();
    w.until("rename", |w| w.changed("other") == vec![fp(b"y")])
        .await;
    assert!(
        w.all()
            .iter()
            .all(|e| e.file.as_deref() != Some(".other.tmp")),
        "temp files are not secrets"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rapid_swaps_end_in_the_final_state() {
    let d = tmp();
    let m = d.path().join("secrets");
    kubelet::swap(&m, &[("db", b"v0")]);
    let w = Watch::start(mount(&m), Opts::default()).await;
    for i in 1..=1_000 {
        kubelet::swap(&m, &[("db", format!("v{i}").as_bytes())]);
    }
    let last = fp(b"v1000");
    w.until("final state", |w| w.changed("db").last() == Some(&last))
        .await;
    // Debounced: far fewer events than swaps, and none after the final one.
    let n = w.changed("db").len();
    assert!(n < 1_000, "{n} events for 1,000 swaps");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(w.changed("db").last(), Some(&last));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_deleted_and_recreated_is_watched_again() {
    let d = tmp();
    let m = d.path().join("secrets");
    kubelet::swap(&m, &[("a", b"1")]);
    let w = Watch::start(mount(&m), Opts::default()).await;
    std::fs::remove_dir_all(&m).unwrap();
    w.until("error for the missing directory", |w| {
        w.count(K::Error) == 1
    })
    .await;
    assert_eq!(
        w.count(K::SecretDeleted),
        0,
        "a vanished mount is not a deletion"
    );
    w.actor.cast(WatcherMsg::HealthCheck).unwrap();
    w.until("health failed", |w| w.count(K::HealthCheckFailed) == 1)
        .await;
    kubelet::swap(&m, &[("a", b"2")]);
    w.until("change after recreation", |w| {
        w.changed("a") == vec![fp(b"2")]
    })
    .await;
    // And the new directory is watched, not just rescanned once.
    kubelet::swap(&m, &[("a", b"3")]);
    w.until("next change", |w| w.changed("a").last() == Some(&fp(b"3")))
        .await;
    w.actor.cast(WatcherMsg::HealthCheck).unwrap();
    w.until("health ok", |w| w.count(K::HealthCheckSuccess) == 1)
        .await;
    assert_eq!(w.metrics.mounts_healthy.get(), 1);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_file_is_an_error_event_not_a_crash() {
    let d = tmp();
    let m = d.path().join("plain");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(m.join("ok"), b"1").unwrap();
    let w = Watch::start(mount(&m), Opts::default()).await;
    // A symlink loop cannot be read by anyone, root included.
    std::os::unix::fs::symlink("bad", m.join("bad")).unwrap();
    w.until("error for bad", |w| {
        w.of(K::Error)
            .iter()
            .any(|e| e.file.as_deref() == Some("bad"))
    })
    .await;
    std::fs::write(m.join("ok"), b"2").unwrap();
    w.until("still watching", |w| w.changed("ok") == vec![fp(b"2")])
        .await;
    assert_eq!(w.of(K::Error).len(), 1, "reported once");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_compares_content_not_mtimes() {
    let d = tmp();
    let m = d.path().join("plain");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(m.join("k"), b"aaaa").unwrap();
    let mut cfg = mount(&m);
    cfg.poll_interval = Some(Duration::from_millis(20));
    let w = Watch::start(cfg, Opts::default()).await;
    // Same size, same second: an mtime comparison would miss these.
    for v in [b"bbbb", b"cccc"] {
        std::fs::write(m.join("k"), v).unwrap();
        let want = fp(v);
        w.until("poll sees it", |w| w.changed("k").last() == Some(&want))
            .await;
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_changes_fires_nothing_and_changes_while_down_fire_once() {
    let d = tmp();
    let m = d.path().join("secrets");
    let state = d.path().join("state");
    let r = Receiver::start(vec![200]).await;
    kubelet::swap(&m, &[("database-password", b"p1")]);
    let cfg = || {
        let mut c = mount(&m);
        c.critical = vec!["database-*".into()];
        c.reload = Some(http_reload(&r, 1));
        c
    };
    let opts = || Opts {
        state_dir: Some(state.clone()),
        ..Opts::default()
    };
    let w = Watch::start(cfg(), opts()).await;
    w.stop().await;
    // Restart: same content, nothing fires.
    let w = Watch::start(cfg(), opts()).await;
    let mut marker = 0;
    w.settle(&m, &mut marker, &[("database-password", b"p1")])
        .await;
    assert!(w.changed("database-password").is_empty());
    assert_eq!(w.count(K::ReloadRequired), 0);
    w.stop().await;
    assert_eq!(r.hits(), 0);
    // Changed while down: reported and reloaded once at start.
    kubelet::swap(
        &m,
        &[("database-password", b"p2"), ("zz-marker", b"marker-1")],
    );
    let w = Watch::start(cfg(), opts()).await;
    w.until("change while down", |w| {
        w.changed("database-password") == vec![fp(b"p2")]
    })
    .await;
    w.until("one reload", |w| w.reloads("succeeded") == 1).await;
    assert_eq!(r.hits(), 1);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_critical_changes_coalesce_into_one_reload() {
    let d = tmp();
    let m = d.path().join("secrets");
    let r = Receiver::start(vec![200]).await;
    let names: Vec<String> = (0..200).map(|i| format!("database-{i:04}")).collect();
    let payload = |v: &str| -> Vec<(String, Vec<u8>)> {
        names
            .iter()
            .map(|n| (n.clone(), format!("{n}={v}").into_bytes()))
            .collect()
    };
    let as_refs = |p: &[(String, Vec<u8>)]| -> Vec<(String, Vec<u8>)> { p.to_vec() };
    let p1 = as_refs(&payload("1"));
    let refs: Vec<(&str, &[u8])> = p1.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
    kubelet::swap(&m, &refs);
    let mut cfg = mount(&m);
    // Long enough that the three swaps below land in one window even on a busy machine.
    cfg.debounce = Duration::from_secs(2);
    cfg.critical = vec!["database-*".into()];
    cfg.reload = Some(http_reload(&r, 1));
    let w = Watch::start(cfg, Opts::default()).await;
    // 200 files change in one swap, then twice more within the debounce window.
    let started = std::time::Instant::now();
    for v in ["2", "3", "4"] {
        let p = payload(v);
        let refs: Vec<(&str, &[u8])> = p.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        kubelet::swap(&m, &refs);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "swaps took {took:?}, longer than the debounce"
    );
    w.until("reload done", |w| w.reloads("succeeded") >= 1)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.hits(), 1, "one reload for 600 file changes");
    assert_eq!(w.count(K::ReloadRequired), 1);
    let detail = w.of(K::ReloadRequired)[0].detail.clone().unwrap();
    assert!(detail.contains("and 190 more"), "{detail}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_rate_limited_globally() {
    let d = tmp();
    let m = d.path().join("secrets");
    let r = Receiver::start(vec![200]).await;
    kubelet::swap(&m, &[("jwt-secret", b"0")]);
    let mut cfg = mount(&m);
    cfg.critical = vec!["jwt-secret".into()];
    cfg.reload = Some(http_reload(&r, 1));
    // One a minute (burst 1): the first reload runs, the next waits a minute.
    let w = Watch::start(
        cfg,
        Opts {
            per_minute: 1,
            ..Opts::default()
        },
    )
    .await;
    kubelet::swap(&m, &[("jwt-secret", b"1")]);
    w.until("first reload", |w| w.reloads("succeeded") == 1)
        .await;
    for v in [b"2", b"3", b"4"] {
        kubelet::swap(&m, &[("jwt-secret", v)]);
        let want = fp(v);
        w.until("seen", |w| w.changed("jwt-secret").contains(&want))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(r.hits(), 1, "the rest wait for a token");
    assert_eq!(w.count(K::ReloadRequired), 4);
    // One in flight (waiting), the later requests folded into one pending.
    assert_eq!(w.reloads("coalesced"), 2);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reloads_are_retried_with_backoff_and_reported() {
    let d = tmp();
    let m = d.path().join("secrets");
    kubelet::swap(&m, &[("jwt-secret", b"0")]);
    // Fails twice, then succeeds: three attempts.
    let r = Receiver::start(vec![500, 503, 204]).await;
    let mut cfg = mount(&m);
    cfg.critical = vec!["jwt-secret".into()];
    cfg.reload = Some(http_reload(&r, 3));
    let w = Watch::start(cfg, Opts::default()).await;
    kubelet::swap(&m, &[("jwt-secret", b"1")]);
    w.until("success after retries", |w| w.reloads("succeeded") == 1)
        .await;
    assert_eq!(r.hits(), 3);
    w.stop().await;

    // Always failing: reported as an error event and a failed reload.
    let r = Receiver::start(vec![500]).await;
    let mut cfg = mount(&m);
    cfg.critical = vec!["jwt-secret".into()];
    cfg.reload = Some(http_reload(&r, 2));
    let w = Watch::start(cfg, Opts::default()).await;
    kubelet::swap(&m, &[("jwt-secret", b"2")]);
    w.until("failure reported", |w| w.reloads("failed") == 1)
        .await;
    assert_eq!(r.hits(), 2);
    let err = w.of(K::Error);
    assert_eq!(err.len(), 1);
    let detail = err[0].detail.clone().unwrap();
    assert!(
        detail.contains("500") && detail.contains("2 attempts"),
        "{detail}"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subpath_mounts_are_warned_about() {
    let d = tmp();
    let m = d.path().join("secrets");
    kubelet::swap(&m, &[("a", b"1")]);
    let real = std::fs::canonicalize(&m).unwrap();
    let fixture = d.path().join("mountinfo");
    std::fs::write(
        &fixture,
        format!(
            "22 1 0:21 / / rw - overlay overlay rw\n\
             31 22 0:46 /..2026_11_28_10_00_00.1/creds {} ro,relatime - tmpfs tmpfs rw\n",
            real.display()
        ),
    )
    .unwrap();
    let w = Watch::start(
        mount(&m),
        Opts {
            mountinfo: fixture,
            ..Opts::default()
        },
    )
    .await;
    w.until("warning", |w| w.count(K::Error) == 1).await;
    let detail = w.of(K::Error)[0].detail.clone().unwrap();
    assert!(detail.contains("subPath"), "{detail}");
    w.stop().await;

    // The same directory as a whole tmpfs volume is fine.
    std::fs::write(
        d.path().join("mountinfo2"),
        format!("31 22 0:46 / {} ro - tmpfs tmpfs rw\n", real.display()),
    )
    .unwrap();
    let w = Watch::start(
        mount(&m),
        Opts {
            mountinfo: d.path().join("mountinfo2"),
            ..Opts::default()
        },
    )
    .await;
    w.actor.cast(WatcherMsg::HealthCheck).unwrap();
    w.until("health", |w| w.count(K::HealthCheckSuccess) == 1)
        .await;
    assert_eq!(w.count(K::Error), 0);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_never_appears_in_events() {
    let d = tmp();
    let m = d.path().join("secrets");
    let secret_a = "SUPER-SECRET-PASSWORD-1b9f";
    let secret_b = "SUPER-SECRET-PASSWORD-77c2";
    kubelet::swap(&m, &[("database-password", secret_a.as_bytes())]);
    let r = Receiver::start(vec![200]).await;
    let mut cfg = mount(&m);
    cfg.critical = vec!["database-*".into()];
    cfg.reload = Some(http_reload(&r, 1));
    let w = Watch::start(cfg, Opts::default()).await;
    kubelet::swap(&m, &[("database-password", secret_b.as_bytes())]);
    w.until("reload", |w| w.reloads("succeeded") == 1).await;
    std::fs::remove_dir_all(&m).unwrap();
    w.until("error", |w| w.count(K::Error) == 1).await;
    let events = w.stop().await;
    let text = format!("{:?}", events.lock().unwrap());
    assert!(text.contains("secret-changed") || text.contains("SecretChanged"));
    for s in [secret_a, secret_b, "SUPER-SECRET"] {
        assert!(!text.contains(s), "content in events: {text}");
    }
}

#[tokio::test]
async fn https_reload_endpoints_are_verified_against_their_ca() {
    let Some(receiver) = crate::common::tls::TlsReceiver::start() else {
        return;
    };
    let action = |ca_file: Option<PathBuf>| ReloadAction::Http {
        url: HttpUrl {
            tls: true,
            host: "127.0.0.1".into(),
            port: receiver.port,
            path: "/-/reload".into(),
        },
        method: "POST".into(),
        ca_file,
        proxy: None,
        timeout: Duration::from_secs(5),
        expected_status: None,
    };
    rotor::watch::reload::run(&action(Some(receiver.cert.clone())))
        .await
        .expect("reload over TLS with the CA");
    assert_eq!(receiver.wait_for(1)[0].path, "/-/reload");
    let refused = rotor::watch::reload::run(&action(None)).await.unwrap_err();
    let text = refused.to_string();
    assert!(text.contains("not trusted"), "{text}");
    assert_eq!(refused.metric_label(), "http");
    assert_eq!(receiver.seen().len(), 1, "nothing sent without trust");
}

/// The `..<timestamp>` directory `..data` points at in the kubelet mount `m`.
fn generation(m: &Path) -> PathBuf {
    m.join(std::fs::read_link(m.join("..data")).expect("..data"))
}

/// The Error events about `file`.
fn errors_about(w: &Watch, file: &str) -> Vec<WatchEvent> {
    w.of(K::Error)
        .into_iter()
        .filter(|e| e.file.as_deref() == Some(file))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_a_mount_is_skipped_with_a_warning_and_the_scan_returns() {
    let d = tmp();
    let m = d.path().join("secrets");
    kubelet::swap(&m, &[("a", b"1"), ("pipe", b"2")]);
    let w = Watch::start(mount(&m), Opts::default()).await;
    // A FIFO where kubelet wrote a file, with no writer: opening it for reading blocks
    // unless the open is non-blocking.
    let pipe = generation(&m).join("pipe");
    std::fs::remove_file(&pipe).unwrap();
    let c = std::ffi::CString::new(pipe.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    // A health check is a full rescan (nothing in the mount directory itself changed).
    w.actor.cast(WatcherMsg::HealthCheck).unwrap();
    w.until("a warning about the FIFO", |w| {
        !errors_about(w, "pipe").is_empty()
    })
    .await;
    let detail = errors_about(&w, "pipe")[0]
        .detail
        .clone()
        .unwrap_or_default();
    assert!(detail.contains("not a regular file (a FIFO)"), "{detail}");
    assert!(
        detail.contains(&m.join("pipe").display().to_string()),
        "{detail}"
    );
    // The watcher is not stuck: a later change is reported.
    let mut marker = 0;
    w.settle(&m, &mut marker, &[("a", b"3")]).await;
    assert_eq!(w.changed("a"), vec![fp(b"3")]);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_planted_in_a_kubelet_generation_is_not_followed() {
    let d = tmp();
    let m = d.path().join("secrets");
    let outside = d.path().join("outside");
    std::fs::write(&outside, b"not for the watcher").unwrap();
    kubelet::swap(&m, &[("a", b"1"), ("token", b"t1")]);
    let w = Watch::start(mount(&m), Opts::default()).await;
    let token = generation(&m).join("token");
    std::fs::remove_file(&token).unwrap();
    std::os::unix::fs::symlink(&outside, &token).unwrap();
    w.actor.cast(WatcherMsg::HealthCheck).unwrap();
    w.until("a warning about the link", |w| {
        !errors_about(w, "token").is_empty()
    })
    .await;
    let detail = errors_about(&w, "token")[0]
        .detail
        .clone()
        .unwrap_or_default();
    assert!(detail.contains("symbolic link"), "{detail}");
    assert!(
        !w.changed("token").contains(&fp(b"not for the watcher")),
        "the link was followed"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_over_max_file_size_are_skipped_with_a_warning_not_read() {
    let d = tmp();
    let m = d.path().join("plain");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(m.join("small"), b"1").unwrap();
    let opts = Opts {
        max_file_size: 1024,
        ..Opts::default()
    };
    let w = Watch::start(mount(&m), opts).await;
    // Exactly at the limit: read.
    std::fs::write(m.join("edge"), vec![b'e'; 1024]).unwrap();
    w.until("edge read", |w| {
        w.changed("edge") == vec![fp(&[b'e'; 1024])]
    })
    .await;
    // One byte over: skipped, and the warning names the path and the limit.
    std::fs::write(m.join("big"), vec![b'b'; 1025]).unwrap();
    w.until("a warning about big", |w| {
        !errors_about(w, "big").is_empty()
    })
    .await;
    let detail = errors_about(&w, "big")[0]
        .detail
        .clone()
        .unwrap_or_default();
    assert!(
        detail.contains(&m.join("big").display().to_string()),
        "{detail}"
    );
    assert!(detail.contains("max_file_size (1024 bytes)"), "{detail}");
    assert!(
        !detail.contains("bbbbbbbb"),
        "content in the warning: {detail}"
    );
    assert!(w.changed("big").is_empty(), "big was fingerprinted");
    // A sparse 2 GiB file: read whole it would take 2 GiB of memory and seconds; skipped
    // from its size, it takes neither.
    let huge = std::fs::File::create(m.join("huge")).unwrap();
    huge.set_len(2 << 30).unwrap();
    drop(huge);
    w.until("a warning about huge", |w| {
        !errors_about(w, "huge").is_empty()
    })
    .await;
    assert!(w.changed("huge").is_empty(), "huge was fingerprinted");
    w.stop().await;
}
