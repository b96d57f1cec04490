//! The admin server's connections: accepting them under a cap, serving each over HTTP/1.1
//! with hyper, and bounding how long a client may hold one without sending a request.
//!
//! `axum::serve` has none of these limits: 200 half-sent request heads and 200 idle
//! connections were all still held after 65 s. Here:
//!
//! - **Header read timeout** ([`Limits::header_read_timeout`], 10 s): hyper arms it
//!   whenever it waits for a request head: from accept for the first request, and from the
//!   end of the previous response for the next. So it bounds a half-sent head and an idle
//!   keep-alive connection alike; either is closed when it runs out.
//! - **Connection cap** ([`Limits::max_connections`], `[server] max_connections`, 4096):
//!   a connection over the cap is accepted and closed at once, not left in the listen
//!   backlog where the client would wait for a timeout of its own.
//! - **Request head size** ([`MAX_HEAD_BYTES`]): a bigger head is answered 431 by hyper;
//!   hyper's automatic answers (400, 414, 431) come with an empty body, which
//!   [`JsonErrorBodies`] turns into the `{"error": ...}` body every other error has. The
//!   connection is then closed gracefully: the rest of what the client sends is read and
//!   dropped for a moment, so the answer is not lost to a TCP reset.
//!
//! Shutdown: accepting stops, every connection finishes the request it is serving (idle ones
//! close at once), and [`serve`] returns when the last connection has ended. The caller
//! bounds that wait.
//!
//! One task per connection, ending with it: the only tasks the listener spawns (the HA
//! forwarder's HTTP client keeps its own connection tasks beside them).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use hyper::StatusCode;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Default [`Limits::header_read_timeout`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Default [`Limits::max_connections`] (`[server] max_connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Largest request head (request line and headers) read. A legitimate admin request's head
/// is a few hundred bytes; hyper's own default (about 400 KiB) times the connection cap
/// would let clients pin over a gigabyte of buffers.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long, and how many bytes, a connection answered with a parse error is read and
/// dropped before it is closed, so that the answer reaches the client.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 * 1024 * 1024;

/// What bounds the admin server's connections. [`Limits::default`] is production's; tests
/// shorten the timeout and lower the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest wait for a complete request head, idle keep-alive time included.
    pub header_read_timeout: Duration,
    /// Connections served at once; more are accepted and closed at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves; see the module
/// documentation.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    // A semaphore a connection holds a permit of for its life: the cap, and (by taking
    // every permit back) the wait for the last connection at shutdown.
    let cap =
        u32::try_from(limits.max_connections.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(cap as usize));
    let (stop, stopping) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: the
                    // listener itself is fine, and spinning on the error would help nobody.
                    tracing::warn!(error = %e, "admin API cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Over the cap: closed now. Left in the backlog it would only wait, holding a
            // kernel slot, for a client timeout.
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let http = http.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            connection(stream, service, http, stopping).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every permit back means every connection has ended.
    let _ = slots.acquire_many(cap).await;
    Ok(())
}

/// Serves one connection until it ends, the client's or the server's doing, or shutdown.
async fn connection(
    stream: TcpStream,
    service: TowerToHyperService<Router>,
    http: hyper::server::conn::http1::Builder,
    mut stopping: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut io = JsonErrorBodies::new(stream);
    {
        let conn = http.serve_connection(TokioIo::new(&mut io), service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            // Also when the server is gone without saying so: nothing will wait for us.
            () = stopped(&mut stopping) => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.as_mut().await;
            }
        }
    }
    if io.rewrote {
        linger(io).await;
    }
}

/// Resolves once shutdown has begun.
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, before any other await.
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Sends what is buffered, closes our side, and reads (and drops) what the client still
/// sends for a moment: closing with unread data would reset the connection, and the client
/// would lose the answer it has not read yet.
async fn linger(mut io: JsonErrorBodies<TcpStream>) {
    let drain = async {
        io.shutdown().await?;
        let mut buf = vec![0u8; 16 * 1024];
        let mut read = 0;
        while read < LINGER_BYTES {
            match io.read(&mut buf).await? {
                0 => break,
                n => read += n,
            }
        }
        Ok::<(), io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// The connection's stream, with hyper's automatic error answers rewritten on their way out.
///
/// hyper answers a request it cannot parse (head too large, bad request line, URI too long)
/// itself, before any service sees it, with a 4xx head, `content-length: 0` and no body.
/// Every answer of rotor's own router to an error has a JSON body, so a 4xx head with
/// `content-length: 0` and no `content-type` can only be one of hyper's: it is replaced by
/// the same head with a JSON `{"error": ...}` body.
struct JsonErrorBodies<S> {
    inner: S,
    /// Rewritten bytes not yet written to `inner`.
    pending: Vec<u8>,
    written: usize,
    /// An automatic answer was rewritten: the connection ends after it.
    rewrote: bool,
}

impl<S> JsonErrorBodies<S> {
    fn new(inner: S) -> Self {
        JsonErrorBodies {
            inner,
            pending: Vec::new(),
            written: 0,
            rewrote: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> JsonErrorBodies<S> {
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrorBodies<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrorBodies<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(answer) = json_error_answer(buf) {
            self.pending = answer;
            self.rewrote = true;
            // The bytes are taken (buffered); a pending write is finished by the flush
            // hyper calls next, or by the next write.
            if let Poll::Ready(Err(e)) = self.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// `head` with a JSON error body, if it is one of hyper's automatic answers: exactly one
/// `HTTP/1.1 4xx` head, `content-length: 0`, no `content-type`.
fn json_error_answer(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 4")?;
    if !rest.ends_with("\r\n\r\n") || rest.find("\r\n\r\n")? + 4 != rest.len() {
        return None;
    }
    let status = StatusCode::from_bytes(text.get(9..12)?.as_bytes()).ok()?;
    let mut lines = text.trim_end_matches("\r\n").split("\r\n");
    let status_line = lines.next()?;
    let mut kept = Vec::new();
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        if name.eq_ignore_ascii_case("content-type") {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            empty = value.trim() == "0";
            continue;
        }
        kept.push(line);
    }
    if !empty {
        return None;
    }
    let body =
        serde_json::to_vec(&serde_json::json!({ "error": parse_error_message(status) })).ok()?;
    let mut out = format!("{status_line}\r\n");
    for line in kept {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    ));
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

/// The message of an automatic answer, in the words the router's own errors use.
fn parse_error_message(status: StatusCode) -> String {
    match status {
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => format!(
            "request header fields too large: the request line and headers may take at most {} KiB",
            MAX_HEAD_BYTES / 1024
        ),
        other => other
            .canonical_reason()
            .unwrap_or("bad request")
            .to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_error_heads_are_rewritten() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(json_error_answer(head).unwrap()).unwrap();
        let (new_head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(new_head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(new_head.contains("date: Tue"));
        assert!(new_head.contains("content-type: application/json"));
        assert!(new_head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(
            json["error"]
                .as_str()
                .unwrap()
                .starts_with("request header fields too large")
        );

        // The router's own errors (JSON already), successes, bodies and partial heads pass.
        for other in [
            &b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            b"{\"error\":\"HTTP/1.1 400\"}",
        ] {
            assert_eq!(json_error_answer(other), None, "{}", String::from_utf8_lossy(other));
        }
    }
}
