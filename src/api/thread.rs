//! The admin API on a thread of its own, so that reads and probes answer in milliseconds
//! while the work runtime is saturated (an emergency rotation of 100,000 secrets keeps
//! both of its workers and its blocking pool busy).
//!
//! On the work runtime a request waits twice: behind the actor tasks queued on the worker
//! that holds its connection (hundreds while a job runs), and behind every runnable thread
//! the kernel shares two cores between (the workers and the blocking threads of store
//! calls). Measured with `scripts/rotate-all-bench.sh 100000`: p50 0.09 ms, p99 60 ms.
//! [`spawn`] serves the listener from a current-thread runtime on its own OS thread
//! (`rotor-api`): a request is parsed, checked and answered there, the thread being one more
//! runnable task for the kernel, not one more item in a queue of hundreds.
//!
//! The API thread must not become home to actors or long-lived tasks: an actor spawned from
//! a handler would live on this runtime, and stop with it. [`OnWorkRuntime`] is the
//! backend the thread serves: it runs every [`Admin`] call that may start an actor (a
//! rotation actor asleep in the status board, a job) or do work beyond a read as a task on
//! the work runtime, and answers the reads that touch only memory where they are asked:
//! [`Admin::ready`], [`Admin::leader`] and a leader's [`Admin::job`]
//! ([`Admin::job_in_memory`]; a follower reads the job from the store, which goes to the
//! work runtime like every store call: a store's pooled connections belong to the runtime
//! that opened them). A request that gives up (the request timeout, a client gone) aborts
//! its call on the work runtime, as it would have run in the request's own task.
//!
//! Invariants:
//! - no actor, no store call and no task that outlives a request runs on the API runtime
//!   (the connection tasks of the HA forwarder's client live there, and end with it);
//! - the listener, its connections and their tasks belong to the API runtime alone; after
//!   [`ApiThread::stop`] the connections have the drain bound to finish their requests,
//!   then the runtime is dropped with whatever is left, so nothing the router holds (the
//!   store among it) outlives the stop.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use futures::future::BoxFuture;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};

use super::listener::{self, Limits};
use super::{
    Admin, AdminError, ConsumerView, JobRequest, JobView, LeaderView, PermitGrant, Report,
    ScheduleEntry,
};
use crate::domain::{HistoryRecord, RotationId, SecretRef, VersionMeta};

/// The name of the API's thread, as `top -H` and `/proc/PID/task/*/comm` show it.
pub const THREAD_NAME: &str = "rotor-api";

/// An [`Admin`] backend whose calls run on the work runtime (see the module documentation
/// for which calls do not).
pub struct OnWorkRuntime {
    inner: Arc<dyn Admin>,
    work: Handle,
}

impl OnWorkRuntime {
    /// Wraps `inner`; its calls will run on the runtime of `work`.
    pub fn new(inner: Arc<dyn Admin>, work: Handle) -> Self {
        OnWorkRuntime { inner, work }
    }

    /// Runs `call` on the work runtime and waits for its answer from wherever this is
    /// awaited; dropping the wait aborts the call. A work runtime that is shutting down
    /// answers 503.
    fn hop<T, F>(
        &self,
        call: impl FnOnce(Arc<dyn Admin>) -> F,
    ) -> BoxFuture<'_, Result<T, AdminError>>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, AdminError>> + Send + 'static,
    {
        let mut task = AbortOnDrop(self.work.spawn(call(self.inner.clone())));
        Box::pin(async move {
            (&mut task.0).await.unwrap_or_else(|e| {
                Err(AdminError::Unavailable(if e.is_panic() {
                    "the admin call failed".to_owned()
                } else {
                    "rotor is shutting down".to_owned()
                }))
            })
        })
    }
}

/// A task aborted when its handle is dropped (aborting a finished task does nothing).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Admin for OnWorkRuntime {
    fn rotate(&self, secret: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        self.hop(|b| async move { b.rotate(secret).await })
    }
    fn rollback(&self, secret: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
        self.hop(|b| async move { b.rollback(secret).await })
    }
    fn versions(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<VersionMeta>, AdminError>> {
        self.hop(|b| async move { b.versions(secret).await })
    }
    fn history(
        &self,
        secret: SecretRef,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<HistoryRecord>, AdminError>> {
        self.hop(move |b| async move { b.history(secret, limit).await })
    }
    fn schedule(&self) -> BoxFuture<'_, Result<Vec<ScheduleEntry>, AdminError>> {
        self.hop(|b| async move { b.schedule().await })
    }
    fn metrics_text(&self) -> BoxFuture<'_, Result<String, AdminError>> {
        self.hop(|b| async move { b.metrics_text().await })
    }
    fn ready(&self) -> bool {
        self.inner.ready()
    }
    fn jwks(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<u8>, AdminError>> {
        self.hop(|b| async move { b.jwks(secret).await })
    }
    fn consumer_report(&self, report: Report) -> BoxFuture<'_, Result<(), AdminError>> {
        self.hop(|b| async move { b.consumer_report(report).await })
    }
    fn permit_acquire(
        &self,
        consumer_id: String,
        workload: String,
    ) -> BoxFuture<'_, Result<PermitGrant, AdminError>> {
        self.hop(|b| async move { b.permit_acquire(consumer_id, workload).await })
    }
    fn permit_release(&self, permit_id: String) -> BoxFuture<'_, Result<(), AdminError>> {
        self.hop(|b| async move { b.permit_release(permit_id).await })
    }
    fn rotate_all(&self, request: JobRequest) -> BoxFuture<'_, Result<JobView, AdminError>> {
        self.hop(|b| async move { b.rotate_all(request).await })
    }
    fn job(&self, job_id: String) -> BoxFuture<'_, Result<JobView, AdminError>> {
        // The read a dashboard polls while a job keeps the work runtime busy: in place when
        // it is memory (the leader's published views), on the work runtime otherwise.
        match self.inner.job_in_memory(&job_id) {
            Some(answer) => Box::pin(std::future::ready(answer)),
            None => self.hop(|b| async move { b.job(job_id).await }),
        }
    }
    fn job_in_memory(&self, job_id: &str) -> Option<Result<JobView, AdminError>> {
        self.inner.job_in_memory(job_id)
    }
    fn cancel_job(&self, job_id: String) -> BoxFuture<'_, Result<JobView, AdminError>> {
        self.hop(|b| async move { b.cancel_job(job_id).await })
    }
    fn consumers(&self, secret: SecretRef) -> BoxFuture<'_, Result<Vec<ConsumerView>, AdminError>> {
        self.hop(|b| async move { b.consumers(secret).await })
    }
    fn leader(&self) -> Option<LeaderView> {
        self.inner.leader()
    }
}

/// The API's thread, serving until [`ApiThread::stop`].
pub struct ApiThread {
    stop: watch::Sender<bool>,
    stopped: oneshot::Receiver<io::Result<()>>,
}

impl ApiThread {
    /// Stops accepting; the returned receiver answers once every connection has finished
    /// its request, or the drain bound given to [`spawn`] has passed and the rest were cut
    /// (the API's runtime dropped with them); an error when the thread ended without
    /// saying.
    pub fn stop(self) -> oneshot::Receiver<io::Result<()>> {
        let _ = self.stop.send(true);
        self.stopped
    }
}

/// Serves `router` on `listener` within `limits` (see [`listener::serve`]) from a
/// current-thread runtime on a thread named [`THREAD_NAME`], until [`ApiThread::stop`] (or
/// until the `ApiThread` is dropped); connections then get `drain` to finish their
/// requests. `listener` is handed over as a std socket: a tokio listener belongs to the
/// runtime that made it.
pub fn spawn(
    listener: std::net::TcpListener,
    router: Router,
    limits: Limits,
    drain: Duration,
) -> io::Result<ApiThread> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, stopping) = watch::channel(false);
    let (done, stopped) = oneshot::channel();
    std::thread::Builder::new()
        .name(THREAD_NAME.to_owned())
        .spawn(move || {
            let served = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let mut asked = stopping.clone();
                let mut stopping = stopping;
                let serving = listener::serve(listener, router, limits, async move {
                    // A dropped `ApiThread` stops the API too.
                    let _ = stopping.wait_for(|s| *s).await;
                });
                tokio::select! {
                    served = serving => served,
                    () = async {
                        let _ = asked.wait_for(|s| *s).await;
                        tokio::time::sleep(drain).await;
                    } => Ok(()),
                }
            });
            // Connections still open after the drain end here, with what they hold.
            drop(runtime);
            let _ = done.send(served);
        })?;
    Ok(ApiThread { stop, stopped })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::api::server::{self, AdminToken};

    /// Records the name of the thread each call ran on.
    #[derive(Default)]
    struct Where(Mutex<Vec<(&'static str, String)>>);

    impl Where {
        fn note(&self, call: &'static str) {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            self.0.lock().unwrap().push((call, name));
        }
        fn calls(&self) -> Vec<(&'static str, String)> {
            self.0.lock().unwrap().clone()
        }
    }

    /// What the calls these tests never make answer.
    fn not_asked<T: Send + 'static>() -> BoxFuture<'static, Result<T, AdminError>> {
        Box::pin(async { Err(AdminError::Internal("not asked in these tests".into())) })
    }

    impl Admin for Where {
        fn rotate(&self, _: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
            self.note("rotate");
            Box::pin(async { Err(AdminError::Conflict("busy".into())) })
        }
        /// Never answers.
        fn rollback(&self, _: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
            self.note("rollback");
            Box::pin(std::future::pending())
        }
        fn versions(&self, _: SecretRef) -> BoxFuture<'_, Result<Vec<VersionMeta>, AdminError>> {
            not_asked()
        }
        fn history(
            &self,
            _: SecretRef,
            _: usize,
        ) -> BoxFuture<'_, Result<Vec<HistoryRecord>, AdminError>> {
            not_asked()
        }
        fn schedule(&self) -> BoxFuture<'_, Result<Vec<ScheduleEntry>, AdminError>> {
            not_asked()
        }
        fn metrics_text(&self) -> BoxFuture<'_, Result<String, AdminError>> {
            not_asked()
        }
        fn ready(&self) -> bool {
            self.note("ready");
            true
        }
        fn job(&self, job_id: String) -> BoxFuture<'_, Result<JobView, AdminError>> {
            self.note("job");
            Box::pin(async move { Err(AdminError::NotFound(format!("unknown job {job_id:?}"))) })
        }
        /// Job `in-memory` is answered from memory, every other one by `job`.
        fn job_in_memory(&self, job_id: &str) -> Option<Result<JobView, AdminError>> {
            self.note("job_in_memory");
            (job_id == "in-memory").then(|| Err(AdminError::NotFound("unknown job".into())))
        }
    }

    /// One HTTP/1.1 request on a fresh connection; the status line's code.
    async fn status(addr: std::net::SocketAddr, request: &str) -> u16 {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        answer
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {answer:?}"))
    }

    /// A [`Where`] backend behind [`OnWorkRuntime`] on a one-worker runtime of threads named
    /// `work`, served by [`spawn`] on a loopback port.
    struct Served {
        work: tokio::runtime::Runtime,
        calls: Arc<Where>,
        token: String,
        addr: std::net::SocketAddr,
        api: ApiThread,
    }

    fn served(request_timeout: Duration, drain: Duration) -> Served {
        let work = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("work")
            .enable_all()
            .build()
            .unwrap();
        let calls = Arc::new(Where::default());
        let backend = Arc::new(OnWorkRuntime::new(calls.clone(), work.handle().clone()));
        let token = "t".repeat(32);
        let router = server::router(
            backend,
            AdminToken::new(token.clone()).unwrap(),
            request_timeout,
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let api = spawn(listener, router, Limits::default(), drain).unwrap();
        Served {
            work,
            calls,
            token,
            addr,
            api,
        }
    }

    #[test]
    fn reads_from_memory_are_answered_on_the_api_thread_and_every_other_call_on_the_work_runtime() {
        let Served {
            work,
            calls,
            token,
            addr,
            api,
        } = served(Duration::from_secs(5), Duration::from_secs(2));

        work.block_on(async {
            let auth = format!("Authorization: Bearer {token}\r\nConnection: close\r\n");
            let body = r#"{"tenantId":"t1","secretKey":"k1"}"#;
            let rotate = format!(
                "POST /admin/secrets/rotate HTTP/1.1\r\nHost: x\r\n{auth}\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            assert_eq!(status(addr, &rotate).await, 409);
            for job in ["in-memory", "stored"] {
                let get = format!("GET /admin/jobs/{job} HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
                assert_eq!(status(addr, &get).await, 404);
            }
            let ready = "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
            assert_eq!(status(addr, ready).await, 200);
            tokio::time::timeout(Duration::from_secs(5), api.stop())
                .await
                .expect("the API thread stops once asked")
                .expect("it says how it ended")
                .expect("it ended cleanly");
        });
        assert_eq!(
            calls.calls(),
            [
                ("rotate", "work".to_owned()),
                ("job_in_memory", THREAD_NAME.to_owned()),
                ("job_in_memory", THREAD_NAME.to_owned()),
                ("job", "work".to_owned()),
                ("ready", THREAD_NAME.to_owned()),
            ]
        );
    }

    #[test]
    fn a_call_the_work_runtime_can_no_longer_run_is_answered_503() {
        let work = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let backend = OnWorkRuntime::new(Arc::new(Where::default()), work.handle().clone());
        work.shutdown_background();
        let api = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let answer = api.block_on(backend.rotate(SecretRef::new("t1", "k1").unwrap()));
        assert_eq!(
            answer,
            Err(AdminError::Unavailable("rotor is shutting down".into()))
        );
    }

    /// A request still open when the drain bound has passed is cut: the stop completes, and
    /// neither the router nor the call on the work runtime keeps the backend (in `rotor
    /// run`, what holds the store) alive.
    #[test]
    fn a_request_still_open_after_the_drain_is_cut_and_the_backend_let_go() {
        let Served {
            work,
            calls,
            token,
            addr,
            api,
        } = served(Duration::from_secs(600), Duration::from_millis(200));

        work.block_on(async {
            use tokio::io::AsyncWriteExt as _;
            let body = r#"{"tenantId":"t1","secretKey":"k1"}"#;
            let rollback = format!(
                "POST /admin/secrets/rollback HTTP/1.1\r\nHost: x\r\n\
                 Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            conn.write_all(rollback.as_bytes()).await.unwrap();
            crate::testing::eventually(
                Duration::from_secs(10),
                "the rollback under way",
                async || calls.calls().iter().any(|(call, _)| *call == "rollback"),
            )
            .await;
            tokio::time::timeout(Duration::from_secs(10), api.stop())
                .await
                .expect("the stop completes although the rollback never answers")
                .expect("it says how it ended")
                .expect("it ended cleanly");
            crate::testing::eventually(Duration::from_secs(10), "the backend let go", async || {
                Arc::strong_count(&calls) == 1
            })
            .await;
            drop(conn);
        });
    }
}
