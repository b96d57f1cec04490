//! The `jwks` target: a JSON Web Key Set file that verifiers of JWTs read.
//!
//! Each version is one key with its own `kid` (`<tenant>.<key>.v<version>`). `apply`
//! publishes the new key before it is handed out, so verifiers that cache the set know it
//! before the first token signed with it arrives; during grace the set holds the current
//! and the previous key, so tokens signed before a rotation keep verifying until expiry;
//! `revoke` removes a version's key; a rollback puts the previous key back (if missing)
//! and removes the new one. The `kid` is derived from the version, so the file needs no
//! other state and every operation is idempotent.
//!
//! Algorithms:
//!
//! - `ed25519` (policy generator `ed25519`): public keys only (`kty = "OKP"`, `alg =
//!   "EdDSA"`), file mode 0644.
//! - `hs256` (policy generator `hmac`): shared secrets (`kty = "oct"`, `k` = the stored
//!   value's bytes), for verifiers that share the key. The file then holds secrets: mode
//!   0600, and it must not be served publicly.
//!
//! The file is replaced atomically (written beside it, then renamed).

pub mod config;

use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{Target, TargetError, ValueReader};
use crate::domain::{SecretRef, VersionNo};
use crate::generator::SecretValue;

const NAME: &str = "jwks";

/// The key type published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Ed25519,
    Hs256,
}

/// The `ed25519` generator's value.
#[derive(serde::Deserialize, Zeroize, ZeroizeOnDrop)]
struct Ed25519Value {
    private_key: String,
    public_key: String,
}

/// A JWKS file.
pub struct JwksTarget {
    /// The secret this target serves.
    secret: SecretRef,
    path: PathBuf,
    algorithm: Algorithm,
    reader: ValueReader,
    /// Serialises read-modify-write of the file within this process.
    lock: Mutex<()>,
}

/// The `kid` of `version` of `secret`.
pub fn kid(secret: &SecretRef, version: VersionNo) -> String {
    format!("{}.{}.v{version}", secret.tenant(), secret.key())
}

impl JwksTarget {
    pub fn new(
        secret: SecretRef,
        path: PathBuf,
        algorithm: Algorithm,
        reader: ValueReader,
    ) -> Self {
        JwksTarget {
            secret,
            path,
            algorithm,
            reader,
            lock: Mutex::new(()),
        }
    }

    /// The JWK of a stored value (public part only for ed25519).
    fn jwk(&self, kid: &str, value: &SecretValue) -> Result<Value, String> {
        match self.algorithm {
            Algorithm::Ed25519 => {
                let v: Ed25519Value = serde_json::from_slice(value.expose())
                    .map_err(|_| "the stored value is not an ed25519 key pair".to_owned())?;
                Ok(json!({
                    "kty": "OKP", "crv": "Ed25519", "x": v.public_key,
                    "kid": kid, "alg": "EdDSA", "use": "sig",
                }))
            }
            Algorithm::Hs256 => Ok(json!({
                "kty": "oct", "k": URL_SAFE_NO_PAD.encode(value.expose()),
                "kid": kid, "alg": "HS256", "use": "sig",
            })),
        }
    }

    async fn load(&self) -> Result<Vec<Value>, String> {
        let text = match tokio::fs::read(&self.path).await {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        let doc: Value = serde_json::from_slice(&text)
            .map_err(|_| format!("{} is not a JWKS document", self.path.display()))?;
        match doc.get("keys") {
            Some(Value::Array(keys)) => Ok(keys.clone()),
            _ => Err(format!("{} has no \"keys\" array", self.path.display())),
        }
    }

    async fn save(&self, keys: Vec<Value>) -> Result<(), String> {
        let body = Zeroizing::new(
            serde_json::to_vec_pretty(&json!({ "keys": keys }))
                .map_err(|e| format!("cannot encode the set: {e}"))?,
        );
        let tmp = self.path.with_extension("jwks.tmp");
        let mode = match self.algorithm {
            Algorithm::Ed25519 => 0o644,
            Algorithm::Hs256 => 0o600,
        };
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }

    /// Loads the set, lets `change` edit it, and saves it if it changed.
    async fn edit(&self, change: impl FnOnce(&mut Vec<Value>)) -> Result<(), String> {
        let _guard = self.lock.lock().await;
        let mut keys = self.load().await?;
        let before = keys.clone();
        change(&mut keys);
        if keys != before {
            self.save(keys).await?;
        }
        Ok(())
    }

    /// The published set as served over HTTP: ed25519 only, and only the public members
    /// of each key, whatever else the file holds. A missing file is an empty set.
    async fn public_set(&self) -> Result<Vec<u8>, String> {
        const PUBLIC: [&str; 6] = ["kty", "crv", "x", "kid", "alg", "use"];
        let keys = {
            let _guard = self.lock.lock().await;
            self.load().await?
        };
        let keys: Vec<Value> = keys
            .into_iter()
            .filter(|k| k.get("kty").and_then(Value::as_str) == Some("OKP"))
            .map(|k| {
                let members = PUBLIC
                    .iter()
                    .filter_map(|m| k.get(*m).map(|v| ((*m).to_owned(), v.clone())));
                Value::Object(members.collect())
            })
            .collect();
        serde_json::to_vec(&json!({ "keys": keys })).map_err(|e| format!("cannot encode: {e}"))
    }

    async fn read(&self, secret: &SecretRef, version: VersionNo) -> Result<SecretValue, String> {
        self.reader
            .read_value(secret, version)
            .await
            .map_err(|e| format!("cannot read v{version}: {e}"))
    }

    /// Proves the published key of `kid` matches `value`: for ed25519 by signing a probe
    /// with the private key and verifying it with the published public key.
    fn check(&self, keys: &[Value], kid: &str, value: &SecretValue) -> Result<(), String> {
        let jwk = keys
            .iter()
            .find(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
            .ok_or_else(|| format!("{} does not publish kid {kid}", self.path.display()))?;
        match self.algorithm {
            Algorithm::Ed25519 => {
                let v: Ed25519Value = serde_json::from_slice(value.expose())
                    .map_err(|_| "the stored value is not an ed25519 key pair".to_owned())?;
                let seed = Zeroizing::new(
                    URL_SAFE_NO_PAD
                        .decode(&v.private_key)
                        .map_err(|_| "the stored private key is not base64url".to_owned())?,
                );
                let seed: &[u8; 32] = seed
                    .as_slice()
                    .try_into()
                    .map_err(|_| "the stored private key is not 32 bytes".to_owned())?;
                let signing = SigningKey::from_bytes(seed);
                let x = jwk.get("x").and_then(Value::as_str).unwrap_or_default();
                let public: [u8; 32] = URL_SAFE_NO_PAD
                    .decode(x)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| format!("kid {kid} has no valid \"x\""))?;
                let verifying = VerifyingKey::from_bytes(&public)
                    .map_err(|_| format!("kid {kid} is not a valid Ed25519 key"))?;
                let probe = format!("rotor probe {kid}");
                verifying
                    .verify(probe.as_bytes(), &signing.sign(probe.as_bytes()))
                    .map_err(|_| format!("kid {kid} does not verify the stored key's signature"))
            }
            Algorithm::Hs256 => {
                let want = Zeroizing::new(URL_SAFE_NO_PAD.encode(value.expose()));
                let k = jwk.get("k").and_then(Value::as_str).unwrap_or_default();
                let same: bool =
                    subtle::ConstantTimeEq::ct_eq(k.as_bytes(), want.as_bytes()).into();
                if same {
                    Ok(())
                } else {
                    Err(format!("kid {kid} does not hold the stored key"))
                }
            }
        }
    }
}

fn remove_kid(keys: &mut Vec<Value>, kid: &str) {
    keys.retain(|k| k.get("kid").and_then(Value::as_str) != Some(kid));
}

fn put(keys: &mut Vec<Value>, jwk: Value) {
    let kid = jwk
        .get("kid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    remove_kid(keys, &kid);
    // Newest first: verifiers that try keys in order find the current one first.
    keys.insert(0, jwk);
}

#[async_trait::async_trait]
impl Target for JwksTarget {
    fn type_name(&self) -> &'static str {
        NAME
    }

    async fn apply(&self, version: VersionNo, value: &SecretValue) -> Result<(), TargetError> {
        let secret = &self.secret;
        let fail = |m: String| TargetError::new(NAME, "apply", secret, version, m);
        let jwk = self.jwk(&kid(secret, version), value).map_err(fail)?;
        self.edit(|keys| put(keys, jwk)).await.map_err(fail)
    }

    async fn test(&self, version: VersionNo, value: &SecretValue) -> Result<(), TargetError> {
        let secret = &self.secret;
        let fail = |m: String| TargetError::new(NAME, "test", secret, version, m);
        let keys = self.load().await.map_err(fail)?;
        self.check(&keys, &kid(secret, version), value)
            .map_err(fail)
    }

    async fn revoke(&self, version: VersionNo) -> Result<(), TargetError> {
        let secret = &self.secret;
        let kid = kid(secret, version);
        self.edit(|keys| remove_kid(keys, &kid))
            .await
            .map_err(|m| TargetError::new(NAME, "revoke", secret, version, m))
    }

    async fn restore(&self, restore: VersionNo, revoke: VersionNo) -> Result<(), TargetError> {
        let secret = &self.secret;
        let fail = |m: String| TargetError::new(NAME, "restore", secret, restore, m);
        let value = self.read(secret, restore).await.map_err(fail)?;
        let jwk = self.jwk(&kid(secret, restore), &value).map_err(fail)?;
        let gone = kid(secret, revoke);
        self.edit(|keys| {
            remove_kid(keys, &gone);
            if !keys.contains(&jwk) {
                put(keys, jwk);
            }
        })
        .await
        .map_err(fail)
    }

    fn public_key_set(&self) -> Option<BoxFuture<'_, Result<Vec<u8>, String>>> {
        match self.algorithm {
            Algorithm::Ed25519 => Some(Box::pin(self.public_set())),
            Algorithm::Hs256 => None,
        }
    }
}
