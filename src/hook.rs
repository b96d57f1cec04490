//! What rotor gives a child process it starts (an `exec` target's step, an `exec` reload):
//! a clean environment, and a bounded read of what it prints on stderr.
//!
//! A hook does not inherit rotor's environment: that may hold credentials of rotor's own
//! (a cloud provider's keys, a Vault token) that a hook has no business seeing. It gets
//! [`INHERITED`] from rotor's environment, the names its configuration allow-lists
//! (`env = ["NAME", ...]`), and whatever the caller sets after (the `ROTOR_*` variables of
//! an exec target).

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::process::Command;
use zeroize::Zeroizing;

/// Variables every hook gets from rotor's environment when rotor has them: enough to find
/// programs, a home directory and the locale.
pub const INHERITED: &[&str] = &["PATH", "HOME", "LANG"];

/// Most stderr kept from a hook: its last bytes, where the reason for a failure is. A hook
/// printing without end costs this much memory, not more.
pub const STDERR_TAIL: usize = 4 * 1024;

/// Clears `cmd`'s environment, then copies [`INHERITED`] and the names in `allow` from
/// rotor's own environment (a name rotor does not have is left unset).
pub fn clean_env(cmd: &mut Command, allow: &[String]) {
    cmd.env_clear();
    let names = INHERITED
        .iter()
        .copied()
        .chain(allow.iter().map(String::as_str));
    for name in names {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
}

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
