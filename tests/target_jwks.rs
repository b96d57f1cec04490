//! The `jwks` target: a token signed with the old key verifies against the published set
//! before and during grace, and not after expiry; the new key verifies from apply on; a
//! rollback puts the old key back; `hs256` publishes shared keys in a private file.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::targets::{Env, secret};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use rotor::generator::{GeneratorSpec, SecretValue};
use rotor::target::Target;
use rotor::target::jwks::{Algorithm, JwksTarget, kid};
use serde_json::Value;

/// A compact JWS (`header.payload.signature`) signed with the stored key of `value`.
fn sign(value: &SecretValue, kid: &str, claims: &str) -> String {
    let v: Value = serde_json::from_slice(value.expose()).unwrap();
    let seed = URL_SAFE_NO_PAD
        .decode(v["private_key"].as_str().unwrap())
        .unwrap();
    let key = SigningKey::from_bytes(&seed.try_into().unwrap());
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"EdDSA","kid":"{kid}"}}"#));
    let payload = URL_SAFE_NO_PAD.encode(claims);
    let input = format!("{header}.{payload}");
    let sig = URL_SAFE_NO_PAD.encode(key.sign(input.as_bytes()).to_bytes());
    format!("{input}.{sig}")
}

/// Verifies `token` against the JWKS file as a relying party would: find the key by
/// `kid`, check the signature.
fn verify(jwks_path: &std::path::Path, token: &str) -> bool {
    let Ok(text) = std::fs::read(jwks_path) else {
        return false;
    };
    let set: Value = serde_json::from_slice(&text).unwrap();
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
    let Some(jwk) = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
    else {
        return false;
    };
    let x: [u8; 32] = URL_SAFE_NO_PAD
        .decode(jwk["x"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let sig: [u8; 64] = URL_SAFE_NO_PAD.decode(s).unwrap().try_into().unwrap();
    VerifyingKey::from_bytes(&x)
        .unwrap()
        .verify(
            format!("{h}.{p}").as_bytes(),
            &ed25519_dalek::Signature::from_bytes(&sig),
        )
        .is_ok()
}

async fn rotate_to(env: &Env, t: &JwksTarget, version: u64, spec: &GeneratorSpec) -> SecretValue {
    let s = secret("jwt_signing");
    let value = env.generate(t, &s, version, spec);
    t.apply(&s, version, &value).await.expect("apply");
    t.test(&s, version, &value).await.expect("test");
    t.promote(&s, version, version.checked_sub(1).filter(|v| *v > 0))
        .await
        .expect("promote");
    value
}

#[tokio::test]
async fn old_tokens_verify_until_expiry() {
    let env = Env::new();
    let path = env.dir.path().join("out/jwks.json");
    let t = JwksTarget::new(path.clone(), Algorithm::Ed25519, env.store.clone());
    let s = secret("jwt_signing");
    let v1 = rotate_to(&env, &t, 1, &GeneratorSpec::Ed25519).await;
    let old_token = sign(&v1, &kid(&s, 1), r#"{"sub":"alice"}"#);
    assert!(verify(&path, &old_token), "before the rotation");

    let v2 = rotate_to(&env, &t, 2, &GeneratorSpec::Ed25519).await;
    let new_token = sign(&v2, &kid(&s, 2), r#"{"sub":"bob"}"#);
    assert!(verify(&path, &old_token), "old token during grace");
    assert!(verify(&path, &new_token), "new token during grace");
    let set: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(set["keys"].as_array().unwrap().len(), 2);
    assert!(
        !String::from_utf8_lossy(&std::fs::read(&path).unwrap()).contains("private_key"),
        "only public keys are published"
    );

    t.revoke(&s, 1).await.expect("expire");
    assert!(!verify(&path, &old_token), "old token after expiry");
    assert!(verify(&path, &new_token), "new token after expiry");
    t.revoke(&s, 1).await.expect("idempotent");

    // A forged token (signed by a key that was never published) never verifies.
    let forged = SigningKey::from_bytes(&[7u8; 32]);
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, kid(&s, 2))),
        URL_SAFE_NO_PAD.encode("{}")
    );
    let token = format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(forged.sign(input.as_bytes()).to_bytes())
    );
    assert!(!verify(&path, &token));
}

#[tokio::test]
async fn rollback_republishes_the_old_key_and_drops_the_new() {
    let env = Env::new();
    let path = env.dir.path().join("jwks.json");
    let t = JwksTarget::new(path.clone(), Algorithm::Ed25519, env.store.clone());
    let s = secret("jwt_signing");
    let v1 = rotate_to(&env, &t, 1, &GeneratorSpec::Ed25519).await;
    let v2 = rotate_to(&env, &t, 2, &GeneratorSpec::Ed25519).await;
    // Even if v1's key had gone missing, the rollback publishes it again.
    t.revoke(&s, 1).await.unwrap();
    t.restore(&s, 1, 2).await.expect("rollback");
    assert!(verify(&path, &sign(&v1, &kid(&s, 1), "{}")));
    assert!(!verify(&path, &sign(&v2, &kid(&s, 2), "{}")));
}

#[tokio::test]
async fn hs256_keys_are_published_to_a_private_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = Env::new();
    let path = env.dir.path().join("hs.json");
    let t = JwksTarget::new(path.clone(), Algorithm::Hs256, env.store.clone());
    let s = secret("jwt_signing");
    let spec = GeneratorSpec::Hmac { bytes: 32 };
    let v1 = rotate_to(&env, &t, 1, &spec).await;
    let _v2 = rotate_to(&env, &t, 2, &spec).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let set: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let k1 = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid(&s, 1))
        .expect("previous key during grace");
    assert_eq!(k1["kty"], "oct");
    assert_eq!(
        URL_SAFE_NO_PAD.decode(k1["k"].as_str().unwrap()).unwrap(),
        v1.expose()
    );
    t.revoke(&s, 1).await.unwrap();
    let set: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(set["keys"].as_array().unwrap().len(), 1);
}
