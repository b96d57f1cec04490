//! The generic webhook: the [`Notification`] as JSON, signed.
//!
//! `X-Rotor-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>.<body>")>`. The
//! timestamp is inside the MAC so a captured request cannot be replayed later with a new
//! timestamp; receivers check the MAC in constant time and refuse old timestamps
//! ([`verify`] does both). The key comes from a file (`secret_file`) and is never logged.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::Notification;

pub const SIGNATURE_HEADER: &str = "x-rotor-signature";
pub const EVENT_HEADER: &str = "x-rotor-event";

/// The JSON body: `{"event", "severity", "at", "tenant", "key", "rotation", "version",
/// "previous_version", "outcome", "error", "mount", "action", "summary", "source"}`
/// (absent fields are left out).
pub fn body(n: &Notification) -> Vec<u8> {
    let mut v = serde_json::to_value(n).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("source".into(), "rotor".into());
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

fn mac(key: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key length");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `X-Rotor-Signature` header value.
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac(key, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature header is not `t=<unix>,v1=<hex>`")]
    Malformed,
    #[error("signature timestamp is {age_secs} s away from now (tolerance {tolerance_secs} s)")]
    Stale { age_secs: i64, tolerance_secs: i64 },
    #[error("signature does not match the body")]
    Mismatch,
}

/// Checks a signature header as a receiver would.
pub fn verify(
    key: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return Err(VerifyError::Malformed);
    };
    let age = (now - t).abs();
    if age > tolerance_secs {
        return Err(VerifyError::Stale {
            age_secs: age,
            tolerance_secs,
        });
    }
    let expected = mac(key, t, body).finalize().into_bytes();
    if bool::from(expected.as_slice().ct_eq(&v1)) {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // printf '1700000000.{}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign(b"key", 1_700_000_000, b"{}"),
            "t=1700000000,v1=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }

    #[test]
    fn verifies_and_refuses() {
        let body = br#"{"event":"rotation_failed"}"#;
        let h = sign(b"s3cret", 100, body);
        assert_eq!(verify(b"s3cret", &h, body, 110, 300), Ok(()));
        assert_eq!(
            verify(b"other", &h, body, 110, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(b"s3cret", &h, b"{}", 110, 300),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            verify(b"s3cret", &h, body, 1_000, 300),
            Err(VerifyError::Stale { .. })
        ));
        assert_eq!(
            verify(b"s3cret", "v1=zz", body, 100, 300),
            Err(VerifyError::Malformed)
        );
    }
}
