//! Secret value generators: passwords, tokens, HMAC keys and ed25519 key pairs, all from
//! the OS CSPRNG, returned as [`SecretValue`] which zeroes its bytes on drop and never
//! prints them.
//!
//! Value formats (what a consumer reads from the store):
//!
//! - `password`: the password itself, ASCII, `length` characters.
//! - `token`: `prefix` followed by `bytes` random bytes in the chosen encoding.
//! - `hmac`: `bytes` random bytes as lowercase hex.
//! - `ed25519`: one line of JSON,
//!   `{"alg":"Ed25519","private_key":"<seed>","public_key":"<key>"}`, where `private_key` is
//!   the 32-byte RFC 8032 seed and `public_key` the 32-byte compressed point, both URL-safe
//!   base64 without padding (the encoding JWKs use for `d` and `x`).
//!
//! [`generate`] never fails: [`validate`] is the gate (config calls it and reports every
//! error); a spec that slipped past it is clamped into bounds rather than panicking.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng as _;
use rand::RngCore as _;
use rand::rngs::OsRng;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// Character classes a password may draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CharClasses {
    pub lower: bool,
    pub upper: bool,
    pub digits: bool,
    pub symbols: bool,
}

/// Text encoding of random bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// URL-safe base64 without padding.
    Base64Url,
    Hex,
}

/// How a policy generates new values. Built by `config` from the TOML `generator` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeneratorSpec {
    /// `{ type = "password", length = 32, lower = true, upper = true, digits = true, symbols = false }`
    Password { length: usize, classes: CharClasses },
    /// `{ type = "token", bytes = 32, prefix = "sk_", encoding = "base64url" | "hex" }`
    Token {
        bytes: usize,
        prefix: String,
        encoding: Encoding,
    },
    /// `{ type = "hmac", bytes = 64 }`: raw random key bytes, hex-encoded in the value.
    Hmac { bytes: usize },
    /// `{ type = "ed25519" }`: a signing key pair for JWTs.
    Ed25519,
}

/// Accepted password lengths. Below 8 a password is guessable online; above 1024 some
/// targets (PostgreSQL's SCRAM, Redis ACL files) start to choke.
pub const PASSWORD_LENGTH: std::ops::RangeInclusive<usize> = 8..=1024;
/// Accepted random byte counts for tokens and HMAC keys. 16 bytes (128 bits) is the least
/// that resists brute force; 1024 is far beyond any real need.
pub const RANDOM_BYTES: std::ops::RangeInclusive<usize> = 16..=1024;
/// Longest token prefix. Prefixes exist to make leaked tokens greppable (`sk_live_`), not
/// to carry data.
pub const MAX_PREFIX_LEN: usize = 32;

const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS: &[u8] = b"0123456789";
/// Symbols that survive the places passwords end up without quoting: no quotes, backslash,
/// backtick or `$` (shells), no `@ : / ?`-style URL delimiters except the unreserved ones,
/// no space (libpq keyword strings), no `;` (semicolon-separated connection strings).
const SYMBOLS: &[u8] = b"!#%*+,-.=^_~";

/// A secret value: bytes that are zeroed when dropped and never printed.
///
/// There is deliberately no `Display`, and `Debug` shows only the length, so a value that
/// reaches a log line or an error message by accident reveals nothing. Equality is
/// constant-time so comparing a presented value with a stored one leaks no timing.
#[derive(Clone)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Takes ownership of `bytes`; they are zeroed when the value is dropped.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        SecretValue(Zeroizing::new(bytes))
    }

    /// The raw bytes. Callers must not copy them into anything that outlives the use
    /// (a `String` in a log, an error); pass the slice straight to the consumer.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (safe to log).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<redacted, {} bytes>)", self.0.len())
    }
}

impl PartialEq for SecretValue {
    fn eq(&self, other: &Self) -> bool {
        // `ct_eq` on slices of different lengths returns false without comparing bytes;
        // the length is not secret.
        bool::from(self.0.as_slice().ct_eq(other.0.as_slice()))
    }
}

impl Eq for SecretValue {}

/// Checks that a spec is within bounds. The message names the field and the value.
pub fn validate(spec: &GeneratorSpec) -> Result<(), String> {
    match spec {
        GeneratorSpec::Password { length, classes } => {
            if !PASSWORD_LENGTH.contains(length) {
                return Err(format!(
                    "password length = {length} is out of range; use {} to {}",
                    PASSWORD_LENGTH.start(),
                    PASSWORD_LENGTH.end()
                ));
            }
            if alphabet_classes(classes).is_empty() {
                return Err(
                    "password enables no character class; enable at least one of lower, upper, digits, symbols"
                        .to_owned(),
                );
            }
            let enabled = alphabet_classes(classes).len();
            if *length < enabled {
                // Unreachable with the current bounds (8 > 4 classes), kept so that the
                // "one of each class" guarantee can never become impossible silently.
                return Err(format!(
                    "password length = {length} cannot hold one character of each of the {enabled} enabled classes"
                ));
            }
            Ok(())
        }
        GeneratorSpec::Token {
            bytes,
            prefix,
            encoding: _,
        } => {
            check_bytes("token", *bytes)?;
            if prefix.len() > MAX_PREFIX_LEN {
                return Err(format!(
                    "token prefix {prefix:?} is {} characters long; at most {MAX_PREFIX_LEN} are allowed",
                    prefix.len()
                ));
            }
            if let Some(c) = prefix
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            {
                return Err(format!(
                    "token prefix {prefix:?} contains {c:?}; only ASCII letters, digits, '_', '-' and '.' are allowed"
                ));
            }
            Ok(())
        }
        GeneratorSpec::Hmac { bytes } => check_bytes("hmac", *bytes),
        GeneratorSpec::Ed25519 => Ok(()),
    }
}

fn check_bytes(generator: &str, bytes: usize) -> Result<(), String> {
    if RANDOM_BYTES.contains(&bytes) {
        Ok(())
    } else {
        Err(format!(
            "{generator} bytes = {bytes} is out of range; use {} to {}",
            RANDOM_BYTES.start(),
            RANDOM_BYTES.end()
        ))
    }
}

/// Generates a new value from the OS CSPRNG.
///
/// Specs are expected to have passed [`validate`]; out-of-range numbers are clamped into
/// range and a password with no class enabled uses all four, so a bug upstream yields a
/// strong value instead of a panic or a weak one.
pub fn generate(spec: &GeneratorSpec) -> SecretValue {
    match spec {
        GeneratorSpec::Password { length, classes } => password(*length, classes),
        GeneratorSpec::Token {
            bytes,
            prefix,
            encoding,
        } => token(*bytes, prefix, *encoding),
        GeneratorSpec::Hmac { bytes } => {
            let raw = random_bytes(clamp_bytes(*bytes));
            SecretValue::from_bytes(hex::encode(raw.as_slice()).into_bytes())
        }
        GeneratorSpec::Ed25519 => ed25519(),
    }
}

fn clamp_bytes(n: usize) -> usize {
    n.clamp(*RANDOM_BYTES.start(), *RANDOM_BYTES.end())
}

fn random_bytes(n: usize) -> Zeroizing<Vec<u8>> {
    let mut buf = Zeroizing::new(vec![0u8; n]);
    OsRng.fill_bytes(&mut buf);
    buf
}

fn alphabet_classes(classes: &CharClasses) -> Vec<&'static [u8]> {
    [
        (classes.lower, LOWER),
        (classes.upper, UPPER),
        (classes.digits, DIGITS),
        (classes.symbols, SYMBOLS),
    ]
    .into_iter()
    .filter_map(|(on, set)| on.then_some(set))
    .collect()
}

/// Draws passwords uniformly from the union alphabet and rejects any that miss an enabled
/// class. Rejection keeps the result uniform over all passwords that satisfy the policy
/// (forcing one character per class and shuffling does not). With the bounds enforced by
/// `validate` the worst case (8 characters, four classes) still succeeds about half the
/// time per draw, so the expected number of draws is about two.
fn password(length: usize, classes: &CharClasses) -> SecretValue {
    let mut sets = alphabet_classes(classes);
    if sets.is_empty() {
        sets = vec![LOWER, UPPER, DIGITS, SYMBOLS];
    }
    let length = length.clamp(*PASSWORD_LENGTH.start(), *PASSWORD_LENGTH.end());
    let alphabet: Vec<u8> = sets.iter().flat_map(|s| s.iter().copied()).collect();
    let mut out = Zeroizing::new(vec![0u8; length]);
    loop {
        for c in out.iter_mut() {
            // `gen_range` on integers is unbiased (rejection sampling inside rand).
            *c = alphabet[OsRng.gen_range(0..alphabet.len())];
        }
        if sets.iter().all(|set| out.iter().any(|c| set.contains(c))) {
            break;
        }
    }
    // Move, not copy: the Vec's buffer becomes the value's buffer.
    SecretValue(out)
}

fn token(bytes: usize, prefix: &str, encoding: Encoding) -> SecretValue {
    let raw = random_bytes(clamp_bytes(bytes));
    let encoded_len = match encoding {
        Encoding::Base64Url => base64::encoded_len(raw.len(), false).unwrap_or(0),
        Encoding::Hex => raw.len() * 2,
    };
    // Sized up front so the buffer never reallocates, which would leave an un-zeroed copy
    // of the partial token in freed memory.
    let mut out = Zeroizing::new(Vec::with_capacity(prefix.len() + encoded_len));
    out.extend_from_slice(prefix.as_bytes());
    match encoding {
        Encoding::Base64Url => {
            let start = out.len();
            out.resize(start + encoded_len, 0);
            let written = URL_SAFE_NO_PAD
                .encode_slice(raw.as_slice(), &mut out[start..])
                .unwrap_or(0);
            out.truncate(start + written);
        }
        Encoding::Hex => {
            let start = out.len();
            out.resize(start + encoded_len, 0);
            // Only fails on a wrong output length, which `encoded_len` rules out.
            let _ = hex::encode_to_slice(raw.as_slice(), &mut out[start..]);
        }
    }
    SecretValue(out)
}

fn ed25519() -> SecretValue {
    // `SigningKey` zeroes its seed on drop (ed25519-dalek's default `zeroize` feature).
    let signing = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let seed = Zeroizing::new(signing.to_bytes());
    let public = signing.verifying_key().to_bytes();

    let mut seed_b64 = Zeroizing::new([0u8; 43]);
    let mut public_b64 = [0u8; 43];
    let seed_len = URL_SAFE_NO_PAD
        .encode_slice(seed.as_slice(), seed_b64.as_mut_slice())
        .unwrap_or(0);
    let public_len = URL_SAFE_NO_PAD
        .encode_slice(public, &mut public_b64)
        .unwrap_or(0);

    const HEAD: &[u8] = b"{\"alg\":\"Ed25519\",\"private_key\":\"";
    const MID: &[u8] = b"\",\"public_key\":\"";
    const TAIL: &[u8] = b"\"}";
    // Built by hand into a pre-sized buffer rather than through serde_json so no
    // intermediate String holding the seed is left behind un-zeroed.
    let mut out = Zeroizing::new(Vec::with_capacity(
        HEAD.len() + seed_len + MID.len() + public_len + TAIL.len(),
    ));
    out.extend_from_slice(HEAD);
    out.extend_from_slice(&seed_b64[..seed_len]);
    out.extend_from_slice(MID);
    out.extend_from_slice(&public_b64[..public_len]);
    out.extend_from_slice(TAIL);
    SecretValue(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: CharClasses = CharClasses {
        lower: true,
        upper: true,
        digits: true,
        symbols: true,
    };

    #[test]
    fn password_has_length_and_every_enabled_class() {
        for length in [8, 9, 32, 1024] {
            for _ in 0..50 {
                let v = generate(&GeneratorSpec::Password {
                    length,
                    classes: ALL,
                });
                let b = v.expose();
                assert_eq!(b.len(), length);
                for set in [LOWER, UPPER, DIGITS, SYMBOLS] {
                    assert!(b.iter().any(|c| set.contains(c)), "class missing");
                }
            }
        }
    }

    #[test]
    fn password_uses_only_enabled_classes() {
        let classes = CharClasses {
            lower: false,
            upper: false,
            digits: true,
            symbols: false,
        };
        let v = generate(&GeneratorSpec::Password {
            length: 16,
            classes,
        });
        assert!(v.expose().iter().all(u8::is_ascii_digit));

        let classes = CharClasses {
            lower: true,
            upper: false,
            digits: false,
            symbols: true,
        };
        for _ in 0..50 {
            let v = generate(&GeneratorSpec::Password { length: 8, classes });
            assert!(
                v.expose()
                    .iter()
                    .all(|c| LOWER.contains(c) || SYMBOLS.contains(c))
            );
            assert!(v.expose().iter().any(|c| SYMBOLS.contains(c)));
            assert!(v.expose().iter().any(|c| LOWER.contains(c)));
        }
    }

    #[test]
    fn password_characters_are_roughly_uniform() {
        // 62-character alphabet, 62,000 draws: each character is expected 1,000 times.
        // A modulo bias of the classic kind (256 % 62) would skew the first characters by
        // about 25%; the bound below catches that while random noise (sd ≈ 32) never trips it.
        let classes = CharClasses {
            lower: true,
            upper: true,
            digits: true,
            symbols: false,
        };
        let mut counts = [0u32; 256];
        for _ in 0..62 {
            let v = generate(&GeneratorSpec::Password {
                length: 1000,
                classes,
            });
            for &c in v.expose() {
                counts[c as usize] += 1;
            }
        }
        for c in LOWER.iter().chain(UPPER).chain(DIGITS) {
            let n = counts[*c as usize];
            assert!((800..=1200).contains(&n), "{} drawn {n} times", *c as char);
        }
    }

    #[test]
    fn token_has_prefix_and_encoding() {
        let v = generate(&GeneratorSpec::Token {
            bytes: 32,
            prefix: "sk_".into(),
            encoding: Encoding::Base64Url,
        });
        let s = std::str::from_utf8(v.expose()).expect("ascii");
        let body = s.strip_prefix("sk_").expect("prefix");
        assert_eq!(body.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(body).expect("base64url").len(), 32);
        assert!(!body.contains('='));

        let v = generate(&GeneratorSpec::Token {
            bytes: 20,
            prefix: String::new(),
            encoding: Encoding::Hex,
        });
        let s = std::str::from_utf8(v.expose()).expect("ascii");
        assert_eq!(hex::decode(s).expect("hex").len(), 20);
    }

    #[test]
    fn hmac_is_hex_of_requested_bytes() {
        let v = generate(&GeneratorSpec::Hmac { bytes: 64 });
        let s = std::str::from_utf8(v.expose()).expect("ascii");
        assert_eq!(s.len(), 128);
        assert_eq!(hex::decode(s).expect("hex").len(), 64);
    }

    #[test]
    fn values_are_unique_across_calls() {
        let specs = [
            GeneratorSpec::Password {
                length: 16,
                classes: ALL,
            },
            GeneratorSpec::Token {
                bytes: 16,
                prefix: "t_".into(),
                encoding: Encoding::Hex,
            },
            GeneratorSpec::Hmac { bytes: 16 },
            GeneratorSpec::Ed25519,
        ];
        for spec in &specs {
            let mut seen = std::collections::HashSet::new();
            for _ in 0..200 {
                assert!(seen.insert(generate(spec).expose().to_vec()), "repeat");
            }
        }
    }

    #[test]
    fn ed25519_public_key_derives_from_private_key() {
        #[derive(serde::Deserialize)]
        struct Pair {
            alg: String,
            private_key: String,
            public_key: String,
        }
        let v = generate(&GeneratorSpec::Ed25519);
        let pair: Pair = serde_json::from_slice(v.expose()).expect("json");
        assert_eq!(pair.alg, "Ed25519");
        let seed: [u8; 32] = URL_SAFE_NO_PAD
            .decode(&pair.private_key)
            .expect("b64")
            .try_into()
            .expect("32 bytes");
        let public: [u8; 32] = URL_SAFE_NO_PAD
            .decode(&pair.public_key)
            .expect("b64")
            .try_into()
            .expect("32 bytes");
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        assert_eq!(signing.verifying_key().to_bytes(), public);

        use ed25519_dalek::{Signer as _, Verifier as _};
        let sig = signing.sign(b"rotor");
        let verifying = ed25519_dalek::VerifyingKey::from_bytes(&public).expect("point");
        assert!(verifying.verify(b"rotor", &sig).is_ok());
    }

    #[test]
    fn debug_never_shows_bytes() {
        let v = SecretValue::from_bytes(b"hunter2-very-secret".to_vec());
        let d = format!("{v:?}");
        assert_eq!(d, "SecretValue(<redacted, 19 bytes>)");
        assert!(!d.contains("hunter2"));
        let pretty = format!("{:#?}", Some(&v));
        assert!(!pretty.contains("hunter2"));
        // Byte values as Debug of a Vec<u8> would print them.
        assert!(!d.contains("104"));
    }

    #[test]
    fn equality_compares_contents() {
        let a = SecretValue::from_bytes(b"abc".to_vec());
        assert_eq!(a, a.clone());
        assert_ne!(a, SecretValue::from_bytes(b"abd".to_vec()));
        assert_ne!(a, SecretValue::from_bytes(b"ab".to_vec()));
    }

    #[test]
    fn validate_enforces_bounds() {
        let pw = |length, classes| GeneratorSpec::Password { length, classes };
        assert!(validate(&pw(8, ALL)).is_ok());
        assert!(validate(&pw(1024, ALL)).is_ok());
        assert!(validate(&pw(7, ALL)).unwrap_err().contains("length = 7"));
        assert!(validate(&pw(1025, ALL)).is_err());
        let none = CharClasses {
            lower: false,
            upper: false,
            digits: false,
            symbols: false,
        };
        assert!(validate(&pw(16, none)).unwrap_err().contains("class"));

        let tok = |bytes, prefix: &str| GeneratorSpec::Token {
            bytes,
            prefix: prefix.into(),
            encoding: Encoding::Base64Url,
        };
        assert!(validate(&tok(16, "sk_live_")).is_ok());
        assert!(validate(&tok(15, "")).unwrap_err().contains("bytes = 15"));
        assert!(validate(&tok(1025, "")).is_err());
        assert!(validate(&tok(32, "a b")).is_err());
        assert!(validate(&tok(32, &"p".repeat(33))).is_err());

        assert!(validate(&GeneratorSpec::Hmac { bytes: 16 }).is_ok());
        assert!(validate(&GeneratorSpec::Hmac { bytes: 1024 }).is_ok());
        assert!(validate(&GeneratorSpec::Hmac { bytes: 8 }).is_err());
        assert!(validate(&GeneratorSpec::Ed25519).is_ok());
    }

    #[test]
    fn invalid_specs_are_clamped_not_weak() {
        let none = CharClasses {
            lower: false,
            upper: false,
            digits: false,
            symbols: false,
        };
        let v = generate(&GeneratorSpec::Password {
            length: 2,
            classes: none,
        });
        assert_eq!(v.len(), 8);
        let v = generate(&GeneratorSpec::Hmac { bytes: 1 });
        assert_eq!(v.len(), 32);
    }
}
