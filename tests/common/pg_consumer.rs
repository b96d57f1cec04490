//! A workload stand-in that uses a rotated PostgreSQL credential the way a real service
//! does: it holds the username and password it read from its mount at the last reload and
//! keeps logging in with them (a new connection every `every`), counting logins that
//! worked and failed; a reload (`POST` to [`PgConsumer::reload_url`], what an agent's
//! `http` reload calls) makes it read the mount again and answers 200 only once a login
//! with the new credential worked, so a reload that reports success means the workload
//! really holds a working credential.
//!
//! Logins go over TCP to 127.0.0.1, where `.ci/setup-postgres.sh` makes members of
//! `rotor_managed` prove their password (scram-sha-256); a login as a trusted role would
//! prove nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

/// Reloads in progress across a set of consumers, and the most seen at once.
#[derive(Default)]
pub struct Concurrency {
    now: AtomicU64,
    max: AtomicU64,
}

impl Concurrency {
    pub fn max(&self) -> u64 {
        self.max.load(Ordering::SeqCst)
    }

    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the consumer has seen so far.
#[derive(Default)]
pub struct Counts {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub reloads: AtomicU64,
}

pub struct PgConsumer {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    /// The last login error, for the failure message (never holds a password: PostgreSQL's
    /// errors name the role, not the password).
    pub last_error: Arc<Mutex<Option<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

/// The credential in use. A login holds a read guard for as long as it runs, and a reload
/// swaps the credential under the write guard, which waits for those logins: a reload
/// answers only once no attempt with the old credential is left, as a connection pool that
/// drains before it acknowledges a reload does. (Without that, a login begun just before
/// the swap could meet the old credential's revocation and count as the workload's
/// failure, though the workload had already said it moved on.)
type Creds = Arc<tokio::sync::RwLock<Option<(String, String)>>>;

impl PgConsumer {
    /// Starts the consumer on `mount` (files `username` and `password`); it starts logging
    /// in once the mount holds both. A reload takes at least `reload_takes` (a workload's
    /// restart is not instant) and is counted in `concurrency`, if given.
    pub async fn start(
        mount: PathBuf,
        every: Duration,
        reload_takes: Duration,
        concurrency: Option<Arc<Concurrency>>,
    ) -> PgConsumer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let counts = Arc::new(Counts::default());
        let last_error = Arc::new(Mutex::new(None));
        let creds: Creds = Arc::new(tokio::sync::RwLock::new(read_creds(&mount)));

        let logins = {
            let (counts, creds, last_error) = (counts.clone(), creds.clone(), last_error.clone());
            let mount = mount.clone();
            tokio::spawn(async move {
                loop {
                    let held = creds.read().await;
                    match held.as_ref() {
                        Some((user, password)) => match login(user, password).await {
                            Ok(()) => {
                                counts.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                counts.failed.fetch_add(1, Ordering::Relaxed);
                                *last_error.lock().expect("error") = Some(e);
                            }
                        },
                        None => {
                            drop(held);
                            *creds.write().await = read_creds(&mount);
                        }
                    }
                    tokio::time::sleep(every).await;
                }
            })
        };
        let server = {
            let (counts, creds) = (counts.clone(), creds.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((mut conn, _)) = listener.accept().await else {
                        return;
                    };
                    let (counts, creds, mount) = (counts.clone(), creds.clone(), mount.clone());
                    let concurrency = concurrency.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 4096];
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        if let Some(c) = &concurrency {
                            c.enter();
                        }
                        tokio::time::sleep(reload_takes).await;
                        let status = match read_creds(&mount) {
                            Some((user, password)) => match login(&user, &password).await {
                                Ok(()) => {
                                    *creds.write().await = Some((user, password));
                                    counts.reloads.fetch_add(1, Ordering::Relaxed);
                                    200
                                }
                                Err(_) => 503,
                            },
                            None => 503,
                        };
                        if let Some(c) = &concurrency {
                            c.leave();
                        }
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        let _ = conn.write_all(reply.as_bytes()).await;
                    });
                }
            })
        };
        PgConsumer {
            addr,
            counts,
            last_error,
            tasks: vec![logins, server],
        }
    }

    /// The URL an agent's `http` reload posts to.
    pub fn reload_url(&self) -> String {
        format!("http://{}/-/reload", self.addr)
    }

    pub fn failed(&self) -> u64 {
        self.counts.failed.load(Ordering::Relaxed)
    }

    pub fn ok(&self) -> u64 {
        self.counts.ok.load(Ordering::Relaxed)
    }

    pub fn reloads(&self) -> u64 {
        self.counts.reloads.load(Ordering::Relaxed)
    }
}

impl Drop for PgConsumer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn read_creds(mount: &Path) -> Option<(String, String)> {
    let user = std::fs::read_to_string(mount.join("username")).ok()?;
    let password = std::fs::read_to_string(mount.join("password")).ok()?;
    Some((user.trim().to_owned(), password.trim().to_owned()))
}

/// One login and `SELECT 1`; the error text when it fails.
async fn login(user: &str, password: &str) -> Result<(), String> {
    let config = as_user(user, password);
    // `db error` alone says nothing: keep PostgreSQL's own code and message (they name the
    // role, never the password), and when it happened.
    let describe = |e: tokio_postgres::Error| match e.as_db_error() {
        Some(db) => format!(
            "{} as {user}: {} {}",
            chrono::Utc::now().format("%H:%M:%S%.3f"),
            db.code().code(),
            db.message()
        ),
        None => format!(
            "{} as {user}: {e}",
            chrono::Utc::now().format("%H:%M:%S%.3f")
        ),
    };
    let (client, conn) = config.connect(NoTls).await.map_err(describe)?;
    let task = tokio::spawn(conn);
    let result = client
        .simple_query("SELECT 1")
        .await
        .map(|_| ())
        .map_err(describe);
    drop(client);
    let _ = task.await;
    result
}

/// Connection settings for the test database over TCP on loopback as `user`: where
/// `.ci/setup-postgres.sh` makes members of `rotor_managed` prove their password.
pub fn as_user(user: &str, password: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(5432)
        .dbname("test")
        .user(user)
        .password(password)
        .connect_timeout(std::time::Duration::from_secs(5));
    config
}
