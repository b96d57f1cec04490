//! Masking a secret value out of text a hook printed (an `exec` target's stderr), before
//! that text goes into an error or a log line.
//!
//! Finding the whole value is not enough: a hook that prints part of it (`${v:0:30}`), or
//! the value base64- or hex-encoded, leaks it as surely. So [`mask`] replaces every run of
//! [`MIN_RUN`] or more bytes of the text that also appears in the value or in one of the
//! encodings a hook is likely to print it in: raw, base64 (standard and URL-safe, padded or
//! not) and hex (lower and upper case). Base64 is taken at the three byte alignments of the
//! value, so the base64 of any slice of the value is covered except its last few
//! characters, whose padding differs.
//!
//! A value shorter than [`MIN_RUN`] bytes cannot have a run that long; its whole occurrences
//! (and those of its encodings) are masked instead.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

/// Shortest run of the value (in any encoding) that is masked. Shorter runs are common in
/// ordinary text (any three-letter word of a password) and reveal little.
pub const MIN_RUN: usize = 8;

/// What a masked run is replaced with.
pub const MASK: &str = "<redacted>";

/// `text` with every run of at least [`MIN_RUN`] bytes that occurs in `value` or one of its
/// encodings replaced by [`MASK`], as (lossy) UTF-8.
///
/// Complexity: `O(t + e)` expected time and `O(t)` extra memory besides the encodings, for
/// `t = text.len()` and `e` the total length of the encodings (about 21 times the value):
/// the text's 8-byte windows go into a hash map once, and each encoding is scanned once,
/// each of its windows looked up in that map. Nothing compares the text against the value
/// position by position, so a 64 KiB value and a 4 KiB text cost a few milliseconds, not
/// the `t * e` of a naive search. A window that occurs many times in the text marks each
/// occurrence once per matching encoding window, which a capped text bounds.
pub fn mask(text: &[u8], value: &[u8]) -> String {
    if value.is_empty() || text.is_empty() {
        return String::from_utf8_lossy(text).into_owned();
    }
    let mut masked = vec![false; text.len()];
    let encodings = encodings(value);
    // Start positions of each MIN_RUN-byte window of the text.
    let mut windows: HashMap<&[u8], Vec<usize>> = HashMap::new();
    if text.len() >= MIN_RUN {
        for (i, w) in text.windows(MIN_RUN).enumerate() {
            windows.entry(w).or_default().push(i);
        }
    }
    for e in &encodings {
        if e.len() < MIN_RUN {
            mark_whole(text, e, &mut masked);
            continue;
        }
        for w in e.windows(MIN_RUN) {
            if let Some(starts) = windows.remove(w) {
                // Removed once matched: a window marked once needs no second marking.
                for &i in &starts {
                    masked[i..i + MIN_RUN].iter_mut().for_each(|m| *m = true);
                }
            }
        }
    }
    let mut out = Zeroizing::new(Vec::with_capacity(text.len()));
    let mut i = 0;
    while i < text.len() {
        if masked[i] {
            out.extend_from_slice(MASK.as_bytes());
            while i < text.len() && masked[i] {
                i += 1;
            }
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Marks every occurrence of `needle` (shorter than [`MIN_RUN`]) in `text`.
fn mark_whole(text: &[u8], needle: &[u8], masked: &mut [bool]) {
    if needle.is_empty() || needle.len() > text.len() {
        return;
    }
    for (i, w) in text.windows(needle.len()).enumerate() {
        if w == needle {
            masked[i..i + needle.len()]
                .iter_mut()
                .for_each(|m| *m = true);
        }
    }
}

/// The value as a hook might print it. Base64 is there padded and unpadded: the padded
/// form holds the windows that end in `=`, the unpadded one is what a short value becomes
/// when printed without padding (masked whole, so the two differ).
fn encodings(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    let mut out = vec![
        Zeroizing::new(value.to_vec()),
        Zeroizing::new(hex::encode(value).into_bytes()),
        Zeroizing::new(hex::encode_upper(value).into_bytes()),
    ];
    for skip in 0..3.min(value.len()) {
        let slice = &value[skip..];
        for engine in [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            out.push(Zeroizing::new(engine.encode(slice).into_bytes()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_encodings(value: &[u8]) -> Vec<Vec<u8>> {
        vec![
            value.to_vec(),
            STANDARD.encode(value).into_bytes(),
            URL_SAFE.encode(value).into_bytes(),
            STANDARD_NO_PAD.encode(value).into_bytes(),
            URL_SAFE_NO_PAD.encode(value).into_bytes(),
            hex::encode(value).into_bytes(),
            hex::encode_upper(value).into_bytes(),
        ]
    }

    #[test]
    fn a_prefix_of_the_value_is_masked_and_the_rest_kept() {
        let value = b"s3cr3t-Value-0123456789-abcdefghij";
        let text = b"provider said: bad key s3cr3t-Value-0123456789-abcde (exit)";
        let out = mask(text, value);
        assert_eq!(out, "provider said: bad key <redacted> (exit)");
    }

    #[test]
    fn base64_and_hex_of_a_slice_are_masked() {
        let value = b"correct horse battery staple, 42 times";
        // base64 of a slice that starts at a byte offset not divisible by 3.
        let b64 = STANDARD.encode(&value[4..30]);
        let text = format!(
            "b64={b64} hex={} HEX={}",
            hex::encode(&value[3..20]),
            hex::encode_upper(&value[1..9])
        );
        let out = mask(text.as_bytes(), value);
        assert!(out.starts_with("b64=<redacted>"), "{out}");
        assert!(out.contains("hex=<redacted>"), "{out}");
        assert!(out.contains("HEX=<redacted>"), "{out}");
        // At most the last few characters of the base64 (its padded tail) may remain.
        let b64_left = out["b64=<redacted>".len()..]
            .split(' ')
            .next()
            .unwrap_or("");
        assert!(b64_left.len() < 4, "{out}");
    }

    #[test]
    fn short_runs_and_unrelated_text_are_kept() {
        let value = b"0123456789abcdef";
        assert_eq!(mask(b"code 0123456 failed", value), "code 0123456 failed");
        assert_eq!(mask(b"no value here", value), "no value here");
        assert_eq!(mask(b"", value), "");
        assert_eq!(mask(b"anything", b""), "anything");
    }

    #[test]
    fn a_value_shorter_than_a_run_is_masked_whole() {
        assert_eq!(mask(b"pw=abc12 ok", b"abc12"), "pw=<redacted> ok");
    }

    #[test]
    fn a_large_value_is_quick() {
        let value: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7919 % 251) as u8).collect();
        let mut text = b"noise ".repeat(700);
        text.extend_from_slice(&value[1000..1040]);
        let started = std::time::Instant::now();
        let out = mask(&text, &value);
        assert!(out.ends_with(MASK), "{}", &out[out.len() - 40..]);
        // Generous for a loaded 2-core machine; a quadratic search takes minutes.
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    proptest! {
        /// For a random value and any run of at least MIN_RUN bytes of any encoding of it,
        /// embedded in noise, the masked text never contains that run.
        #[test]
        fn no_run_of_any_encoding_survives(
            value in proptest::collection::vec(any::<u8>(), 1..200),
            which in 0usize..7,
            start in any::<prop::sample::Index>(),
            len in any::<prop::sample::Index>(),
            before in "[ -~]{0,40}",
            after in "[ -~]{0,40}",
        ) {
            let enc = &all_encodings(&value)[which];
            prop_assume!(enc.len() >= MIN_RUN);
            let s = start.index(enc.len() - MIN_RUN + 1);
            let l = MIN_RUN + len.index(enc.len() - s - MIN_RUN + 1);
            let run = &enc[s..s + l];
            let mut text = before.into_bytes();
            text.extend_from_slice(run);
            text.extend_from_slice(after.as_bytes());
            let out = mask(&text, &value);
            let run = String::from_utf8_lossy(run);
            // Lossy decoding may turn bytes of a raw value into U+FFFD; compare what the
            // output can contain.
            prop_assert!(!out.contains(run.as_ref()), "{out:?} contains {run:?}");
            // And no MIN_RUN-byte piece of it either.
            for w in enc[s..s + l].windows(MIN_RUN) {
                if let Ok(w) = std::str::from_utf8(w) {
                    prop_assert!(!out.contains(w), "{out:?} contains {w:?}");
                }
            }
        }
    }
}
