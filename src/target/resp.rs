//! A minimal RESP2 client over a tokio `TcpStream`: enough for `AUTH`, `ACL SETUSER`,
//! `ACL GETUSER` and `PING`. Chosen over the `redis` crate to keep a dependency tree (and
//! its compile time on a 2-core machine) out for five commands.
//!
//! Server error replies are returned as [`Reply::Error`]; callers decide what of them may
//! be shown (an ACL error can echo its arguments).

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Largest bulk string or array accepted: replies here are tiny; a bigger length means a
/// confused or hostile peer.
const MAX_LEN: i64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// One connection.
pub(crate) struct Conn {
    stream: BufReader<TcpStream>,
    timeout: Duration,
}

impl Conn {
    pub(crate) async fn connect(addr: &str, timeout: Duration) -> std::io::Result<Conn> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::new(stream),
            timeout,
        })
    }

    /// Sends one command and reads its reply.
    pub(crate) async fn call(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        // Built in a zeroizing buffer: arguments may hold a password.
        let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(
            16 + args.iter().map(|a| a.len() + 16).sum::<usize>(),
        ));
        buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        let timeout = self.timeout;
        let io = async {
            self.stream.get_mut().write_all(&buf).await?;
            read_reply(&mut self.stream).await
        };
        tokio::time::timeout(timeout, io)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "reply timed out"))?
    }
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("bad RESP reply: {what}"),
    )
}

async fn read_line(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).await?;
    if !line.ends_with(b"\r\n") {
        return Err(bad("connection closed mid-line"));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|_| bad("not UTF-8"))
}

fn read_reply(
    r: &mut BufReader<TcpStream>,
) -> futures::future::BoxFuture<'_, std::io::Result<Reply>> {
    Box::pin(async move {
        let mut type_byte = [0u8; 1];
        r.read_exact(&mut type_byte).await?;
        let line = read_line(r).await?;
        let len = || -> std::io::Result<i64> {
            let n: i64 = line.parse().map_err(|_| bad("length"))?;
            if n > MAX_LEN {
                return Err(bad("length too large"));
            }
            Ok(n)
        };
        match type_byte[0] {
            b'+' => Ok(Reply::Simple(line)),
            b'-' => Ok(Reply::Error(line)),
            b':' => Ok(Reply::Int(line.parse().map_err(|_| bad("integer"))?)),
            b'$' => {
                let n = len()?;
                if n < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let mut data = vec![0u8; n as usize + 2];
                r.read_exact(&mut data).await?;
                data.truncate(n as usize);
                Ok(Reply::Bulk(Some(data)))
            }
            b'*' => {
                let n = len()?;
                if n < 0 {
                    return Ok(Reply::Array(None));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(read_reply(r).await?);
                }
                Ok(Reply::Array(Some(items)))
            }
            _ => Err(bad("unknown type byte")),
        }
    })
}
