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
//! the work runtime, and answers the reads that touch only memory or one store record
//! ([`Admin::job`], [`Admin::ready`], [`Admin::leader`]) where they are asked. A request
//! that gives up (the request timeout, a client gone) stops waiting; its call on the work
//! runtime runs to its end, never cut between an actor's answer and the caller.
//!
//! Invariants:
//! - no actor, and no task that outlives a request, is ever spawned on the API runtime;
//! - the listener, its connections and their tasks belong to the API runtime alone; the
//!   thread ends when [`ApiThread::stop`] has been sent and the last connection has ended
//!   (or with the process).

use std::io;
use std::sync::Arc;

use axum::Router;
use futures::future::BoxFuture;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

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
    /// awaited. A work runtime that is shutting down answers 503.
    fn hop<T, F>(
        &self,
        call: impl FnOnce(Arc<dyn Admin>) -> F,
    ) -> BoxFuture<'_, Result<T, AdminError>>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, AdminError>> + Send + 'static,
    {
        let task = self.work.spawn(call(self.inner.clone()));
        Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                Err(AdminError::Unavailable(if e.is_panic() {
                    "the admin call failed".to_owned()
                } else {
                    "rotor is shutting down".to_owned()
                }))
            })
        })
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
        // The leader answers from the jobs actor's published views (memory), a follower
        // from one store record: neither starts anything, and this is the read a dashboard
        // polls while a job keeps the work runtime busy.
        self.inner.job(job_id)
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
    stop: oneshot::Sender<()>,
    stopped: oneshot::Receiver<io::Result<()>>,
}

impl ApiThread {
    /// Stops accepting; the returned receiver answers once every connection has finished
    /// its request (the caller bounds that wait), or with an error when the thread ended
    /// without saying.
    pub fn stop(self) -> oneshot::Receiver<io::Result<()>> {
        let _ = self.stop.send(());
        self.stopped
    }
}

/// Serves `router` on `listener` within `limits` (see [`listener::serve`]) from a
/// current-thread runtime on a thread named [`THREAD_NAME`]. `listener` is handed over as a
/// std socket: a tokio listener belongs to the runtime that made it.
pub fn spawn(
    listener: std::net::TcpListener,
    router: Router,
    limits: Limits,
) -> io::Result<ApiThread> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, stopping) = oneshot::channel::<()>();
    let (done, stopped) = oneshot::channel();
    std::thread::Builder::new()
        .name(THREAD_NAME.to_owned())
        .spawn(move || {
            let served = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)?;
                listener::serve(listener, router, limits, async move {
                    let _ = stopping.await;
                })
                .await
            });
            let _ = done.send(served);
        })?;
    Ok(ApiThread { stop, stopped })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

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
        fn rollback(&self, _: SecretRef) -> BoxFuture<'_, Result<RotationId, AdminError>> {
            not_asked()
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

    #[test]
    fn reads_are_answered_on_the_api_thread_and_actor_calls_run_on_the_work_runtime() {
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
            Duration::from_secs(5),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let api = spawn(listener, router, Limits::default()).unwrap();

        work.block_on(async {
            let auth = format!("Authorization: Bearer {token}\r\nConnection: close\r\n");
            let body = r#"{"tenantId":"t1","secretKey":"k1"}"#;
            let rotate = format!(
                "POST /admin/secrets/rotate HTTP/1.1\r\nHost: x\r\n{auth}\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            assert_eq!(status(addr, &rotate).await, 409);
            let job = format!("GET /admin/jobs/j1 HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
            assert_eq!(status(addr, &job).await, 404);
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
                ("job", THREAD_NAME.to_owned()),
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
}
