//! What rotor gives a child process it starts (an `exec` target's step): a bounded read of
//! what it prints on stderr.

use tokio::io::{AsyncRead, AsyncReadExt as _};
use zeroize::Zeroizing;

/// Most stderr kept from a hook: its last bytes, where the reason for a failure is. A hook
/// printing without end costs this much memory, not more.
pub const STDERR_TAIL: usize = 4 * 1024;

/// Reads `from` to its end and returns its last [`STDERR_TAIL`] bytes. The buffers are
/// zeroed when dropped: a hook's stderr may hold the value it was given.
pub async fn read_tail(mut from: impl AsyncRead + Unpin) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let mut tail = Zeroizing::new(Vec::with_capacity(STDERR_TAIL * 2));
    let mut chunk = Zeroizing::new(vec![0u8; STDERR_TAIL]);
    loop {
        let n = from.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&chunk[..n]);
        // Drained only once the buffer holds two tails, so each byte moves at most once.
        if tail.len() >= 2 * STDERR_TAIL {
            let excess = tail.len() - STDERR_TAIL;
            tail.drain(..excess);
        }
    }
    if tail.len() > STDERR_TAIL {
        let excess = tail.len() - STDERR_TAIL;
        tail.drain(..excess);
    }
    Ok(tail)
}

/// The last non-empty line of `stderr`, masked of every run of `value` (see
/// [`crate::redact::mask`]) and cut to `max_chars` characters; `None` when there is none.
pub fn last_line(stderr: &[u8], value: Option<&[u8]>, max_chars: usize) -> Option<String> {
    let line = stderr
        .split(|b| *b == b'\n')
        .rev()
        .find(|l| !l.trim_ascii().is_empty())?;
    let text = match value {
        Some(v) => crate::redact::mask(line.trim_ascii(), v),
        None => String::from_utf8_lossy(line.trim_ascii()).into_owned(),
    };
    Some(text.chars().take(max_chars).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_tail_is_kept() {
        let mut text = vec![b'a'; 3 * STDERR_TAIL + 17];
        text.extend_from_slice(b"\nlast line\n");
        let tail = read_tail(&text[..]).await.unwrap();
        assert_eq!(tail.len(), STDERR_TAIL);
        assert!(tail.ends_with(b"\nlast line\n"));
        assert_eq!(last_line(&tail, None, 200).as_deref(), Some("last line"));
        let short = read_tail(&b"one\ntwo\n\n"[..]).await.unwrap();
        assert_eq!(&short[..], b"one\ntwo\n\n");
        assert_eq!(last_line(&short, None, 200).as_deref(), Some("two"));
        assert_eq!(last_line(b"\n  \n", None, 200), None);
    }

    #[test]
    fn the_last_line_is_masked_then_cut() {
        let value = b"0123456789abcdefXYZ";
        let line = last_line(b"first\nkey 0123456789abc rejected\n", Some(value), 200);
        assert_eq!(line.as_deref(), Some("key <redacted> rejected"));
        let cut = last_line(b"abcdefghij", None, 4);
        assert_eq!(cut.as_deref(), Some("abcd"));
    }
}
