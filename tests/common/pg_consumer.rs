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

type Creds = Arc<Mutex<Option<(String, String)>>>;

impl PgConsumer {
    /// Starts the consumer on `mount` (files `username` and `password`); it starts logging
    /// in once the mount holds both.
    pub async fn start(mount: PathBuf, every: Duration) -> PgConsumer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let counts = Arc::new(Counts::default());
        let last_error = Arc::new(Mutex::new(None));
        let creds: Creds = Arc::new(Mutex::new(read_creds(&mount)));

        let logins = {
            let (counts, creds, last_error) = (counts.clone(), creds.clone(), last_error.clone());
            let mount = mount.clone();
            tokio::spawn(async move {
                loop {
                    let held = creds.lock().expect("creds").clone();
                    match held {
                        Some((user, password)) => match login(&user, &password).await {
                            Ok(()) => {
                                counts.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                counts.failed.fetch_add(1, Ordering::Relaxed);
                                *last_error.lock().expect("error") = Some(e);
                            }
                        },
                        None => *creds.lock().expect("creds") = read_creds(&mount),
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
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 4096];
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        let status = match read_creds(&mount) {
                            Some((user, password)) => match login(&user, &password).await {
                                Ok(()) => {
                                    *creds.lock().expect("creds") = Some((user, password));
                                    counts.reloads.fetch_add(1, Ordering::Relaxed);
                                    200
                                }
                                Err(_) => 503,
                            },
                            None => 503,
                        };
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
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(5432)
        .dbname("test")
        .user(user)
        .password(password)
        .connect_timeout(Duration::from_secs(5));
    let (client, conn) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    let result = client
        .simple_query("SELECT 1")
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    drop(client);
    let _ = task.await;
    result
}
