//! The `jwks` target: a token signed with the old key verifies against the published set
//! before and during grace, and not after expiry; the new key verifies from apply on; a
//! rollback puts the old key back; `hs256` publishes shared keys in a private file. A
//! running rotor serves the ed25519 set at `GET /jwks/{tenant}/{key}` (and never an hs256
//! one), and tokens verify against what it serves exactly as against the file.

use crate::common::targets::{Env, secret};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use rotor::domain::SecretRef;
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
    verify_set(&text, token)
}

/// Verifies `token` against a JWKS document.
fn verify_set(text: &[u8], token: &str) -> bool {
    let set: Value = serde_json::from_slice(text).unwrap();
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

/// `tenant1/jwt_signing` as an ed25519 JWKS target publishing to `path`.
fn ed25519_target(env: &Env, path: &std::path::Path) -> (SecretRef, JwksTarget) {
    let s = secret("jwt_signing");
    let target = JwksTarget::new(
        s.clone(),
        path.to_path_buf(),
        Algorithm::Ed25519,
        env.store.clone(),
    );
    (s, target)
}

async fn rotate_to(env: &Env, t: &JwksTarget, version: u64, spec: &GeneratorSpec) -> SecretValue {
    env.rotate(t, &secret("jwt_signing"), version, spec).await
}

#[tokio::test]
async fn old_tokens_verify_until_expiry() {
    let env = Env::new();
    let path = env.dir.path().join("out/jwks.json");
    let (s, t) = ed25519_target(&env, &path);
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

    t.revoke(1).await.expect("expire");
    assert!(!verify(&path, &old_token), "old token after expiry");
    assert!(verify(&path, &new_token), "new token after expiry");
    t.revoke(1).await.expect("idempotent");

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
    let (s, t) = ed25519_target(&env, &path);
    let v1 = rotate_to(&env, &t, 1, &GeneratorSpec::Ed25519).await;
    let v2 = rotate_to(&env, &t, 2, &GeneratorSpec::Ed25519).await;
    // Even if v1's key had gone missing, the rollback publishes it again.
    t.revoke(1).await.unwrap();
    t.restore(1, 2).await.expect("rollback");
    assert!(verify(&path, &sign(&v1, &kid(&s, 1), "{}")));
    assert!(!verify(&path, &sign(&v2, &kid(&s, 2), "{}")));
}

#[tokio::test]
async fn hs256_keys_are_published_to_a_private_file() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = Env::new();
    let path = env.dir.path().join("hs.json");
    let s = secret("jwt_signing");
    let t = JwksTarget::new(s.clone(), path.clone(), Algorithm::Hs256, env.store.clone());
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
    t.revoke(1).await.unwrap();
    let set: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(set["keys"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn only_public_members_of_ed25519_keys_are_ever_served() {
    let env = Env::new();
    let path = env.dir.path().join("jwks.json");
    // A hand-edited file that also holds a private member and a shared key.
    std::fs::write(
        &path,
        r#"{"keys":[
            {"kty":"OKP","crv":"Ed25519","x":"PUB","d":"PRIVATE","kid":"a","alg":"EdDSA","use":"sig","x5c":["c"]},
            {"kty":"oct","k":"SHARED","kid":"b","alg":"HS256"}
        ]}"#,
    )
    .unwrap();
    let t = JwksTarget::new(
        secret("jwt_signing"),
        path.clone(),
        Algorithm::Ed25519,
        env.store.clone(),
    );
    let served = t
        .public_key_set()
        .expect("an ed25519 set is served")
        .await
        .unwrap();
    let served: Value = serde_json::from_slice(&served).unwrap();
    assert_eq!(
        served,
        serde_json::json!({"keys":[
            {"kty":"OKP","crv":"Ed25519","x":"PUB","kid":"a","alg":"EdDSA","use":"sig"}
        ]})
    );
    let hs = JwksTarget::new(
        secret("jwt_signing"),
        path,
        Algorithm::Hs256,
        env.store.clone(),
    );
    assert!(
        hs.public_key_set().is_none(),
        "shared keys are never served"
    );
}

#[tokio::test]
async fn a_running_rotor_serves_the_public_set_and_old_tokens_verify_until_expiry() {
    use crate::common::http::request;
    use crate::common::rotor_bin::{RotorBin, config, free_port};
    use crate::common::wait::eventually;
    use rotor::domain::SecretRef;
    use rotor::store::ReadValue as _;
    use rotor::store::embedded::EmbeddedStore;
    use std::time::Duration;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port();
    let cfg = config(
        port,
        r#"[policies.signing]
interval = "1h"
grace = "3s"
generator = { type = "ed25519" }

[policies.shared]
interval = "1h"
grace = "3s"
generator = { type = "hmac", bytes = 32 }

[[secrets]]
tenant = "tenant1"
key = "jwt_signing"
policy = "signing"
target = { type = "jwks", path = "out/jwks.json", algorithm = "ed25519" }

[[secrets]]
tenant = "tenant1"
key = "jwt_secret"
policy = "shared"
target = { type = "jwks", path = "out/shared.json", algorithm = "hs256" }

[[secrets]]
tenant = "tenant1"
key = "plain"
policy = "shared"
"#,
    );
    let rotor = RotorBin::start(dir, port, &cfg).await;
    let addr = rotor.addr;
    let get = |path: &'static str| async move { request(addr, "GET", path, None, None).await };
    let kids = |body: &[u8]| -> Vec<String> {
        let set: Value = serde_json::from_slice(body).unwrap();
        set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    let v1_set = eventually(Duration::from_secs(10), "v1 published", || async {
        let r = get("/jwks/tenant1/jwt_signing").await;
        (r.status == 200 && !kids(&r.body).is_empty()).then_some(r)
    })
    .await;
    assert_eq!(kids(&v1_set.body), ["tenant1.jwt_signing.v1"]);
    assert_eq!(
        v1_set.header("content-type"),
        Some("application/jwk-set+json")
    );
    let etag = v1_set.header("etag").expect("an ETag").to_owned();
    let r = conditional(addr, "/jwks/tenant1/jwt_signing", &etag).await;
    assert_eq!(r.status, 304, "an unchanged set is not sent again");

    rotor.rotate("tenant1", "jwt_signing").await;
    let grace_set = eventually(Duration::from_secs(10), "v2 published", || async {
        let r = get("/jwks/tenant1/jwt_signing").await;
        (kids(&r.body).len() == 2).then_some(r.body)
    })
    .await;
    assert_eq!(
        conditional(addr, "/jwks/tenant1/jwt_signing", &etag)
            .await
            .status,
        200,
        "a changed set has a new ETag"
    );
    let after_set = eventually(Duration::from_secs(20), "v1 expired", || async {
        let r = get("/jwks/tenant1/jwt_signing").await;
        (kids(&r.body) == ["tenant1.jwt_signing.v2"]).then_some(r.body)
    })
    .await;

    // Shared-secret sets and targets without a set are never served.
    for path in ["/jwks/tenant1/jwt_secret", "/jwks/tenant1/plain"] {
        let r = get(path).await;
        assert_eq!(r.status, 404, "{path}");
        assert!(
            String::from_utf8_lossy(&r.body).contains("no public key set"),
            "{path}"
        );
    }
    assert_eq!(get("/jwks/tenant1/nope").await.status, 404);
    assert_eq!(get("/jwks/tenant1/..%2Fetc").await.status, 400);
    let file = std::fs::read(dir.join("out/jwks.json")).unwrap();
    let served: Value = serde_json::from_slice(&after_set).unwrap();
    let published: Value = serde_json::from_slice(&file).unwrap();
    assert_eq!(
        served, published,
        "the route serves what the file publishes"
    );
    drop(rotor);

    // A token signed with v1 before the rotation verifies against the set served during
    // grace, and not against the one served after expiry; v2's verifies against both.
    let store = EmbeddedStore::open(&dir.join("rotor.redb"), &dir.join("master.key")).unwrap();
    let s = SecretRef::new("tenant1", "jwt_signing").unwrap();
    let old = sign(
        &store.read_value(&s, 1).await.unwrap(),
        "tenant1.jwt_signing.v1",
        r#"{"sub":"before"}"#,
    );
    let new = sign(
        &store.read_value(&s, 2).await.unwrap(),
        "tenant1.jwt_signing.v2",
        r#"{"sub":"after"}"#,
    );
    assert!(verify_set(&v1_set.body, &old));
    assert!(verify_set(&grace_set, &old), "old token during grace");
    assert!(!verify_set(&after_set, &old), "old token after expiry");
    assert!(verify_set(&grace_set, &new) && verify_set(&after_set, &new));
    // The served document holds public members only.
    for k in served["keys"].as_array().unwrap() {
        assert!(k.get("d").is_none() && k.get("k").is_none(), "{k}");
    }
}

/// `GET path` with `If-None-Match: etag`.
async fn conditional(
    addr: std::net::SocketAddr,
    path: &str,
    etag: &str,
) -> crate::common::http::Resp {
    let raw = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nIf-None-Match: {etag}\r\nConnection: close\r\n\r\n"
    );
    crate::common::http::send_raw(addr, raw.as_bytes()).await
}
