//! The master key and what the embedded store does with it: sealing values with
//! AES-256-GCM, keyed fingerprints, and a key check value that detects a wrong key at open.
//!
//! # Master key file
//!
//! 64 lowercase hex characters (32 bytes) and an optional trailing newline. Hex rather than
//! raw bytes so the key can be backed up, pasted into a Kubernetes Secret or compared by eye
//! without binary-safe tooling. The file must not be readable by group or other (mode 0600
//! or 0400; for a Kubernetes secret volume set `defaultMode: 0400`): a key anyone on the
//! host can read protects nothing, so a wider mode is refused rather than warned about.
//!
//! A missing file is created with mode 0600 by writing a temporary file and hard-linking it
//! into place. `link` fails if the name exists, so an existing key is never overwritten
//! (not even by a concurrent process), and a crash leaves either no key or a whole one.
//!
//! # Sealed value format
//!
//! `0x01 || nonce (12 bytes) || AES-256-GCM ciphertext and tag`, with the associated data
//! `tenant/key/version`. Identifiers cannot contain `/`, so that string is unambiguous, and
//! a ciphertext copied to another secret or version fails to open. Nonces are random: at
//! the handful of seals a rotation service makes, the 2^-32 collision bound for random
//! 96-bit nonces is never approached.
//!
//! # Derived keys
//!
//! The master key is used directly only as the AES key. Fingerprints and the key check
//! value use sub-keys `HMAC-SHA256(master, label)` with distinct labels, so neither reveals
//! anything about the encryption key or about each other.

use std::fmt;
use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use aes_gcm::aead::{Aead as _, AeadCore as _, KeyInit as _, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use rand::rngs::OsRng;
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use super::StoreError;
use crate::domain::{SecretRef, VersionNo};
use crate::generator::SecretValue;

type HmacSha256 = Hmac<Sha256>;

/// Bytes in a master key.
pub const KEY_LEN: usize = 32;
/// First byte of every sealed value; lets a future format coexist with this one.
const SEAL_FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const FINGERPRINT_LABEL: &[u8] = b"rotor fingerprint v1";
const CHECK_LABEL: &[u8] = b"rotor key check v1";
/// Bytes of the fingerprint HMAC kept: 128 bits identify a value without a collision in
/// any realistic number of versions, and keep the hex short enough for a table column.
const FINGERPRINT_LEN: usize = 16;

/// The store's master key and the sub-keys derived from it.
///
/// Key material lives in [`Zeroizing`] buffers and is zeroed on drop. `Debug` prints
/// nothing about the key.
pub struct MasterKey {
    cipher: Aes256Gcm,
    fingerprint_key: Zeroizing<[u8; 32]>,
    check_value: [u8; 32],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// Builds a key from raw bytes (tests, benchmarks, and callers with their own key source).
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> MasterKey {
        MasterKey {
            cipher: Aes256Gcm::new(bytes.into()),
            fingerprint_key: Zeroizing::new(derive(bytes, FINGERPRINT_LABEL)),
            // Not secret: it is stored in the database in the clear.
            check_value: derive(bytes, CHECK_LABEL),
        }
    }

    /// Loads the key at `path`, creating it (mode 0600, parent directories 0700) if the
    /// file does not exist. Never overwrites an existing file.
    pub fn load_or_create(path: &Path) -> Result<MasterKey, StoreError> {
        match fs::symlink_metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(e) => Err(key_err(path, format!("cannot stat: {e}"))),
        }
    }

    /// Loads the key at `path`; a missing file is an error.
    ///
    /// Refused: a file whose mode grants group or other any access, anything that is not a
    /// regular file (after following symlinks, as Kubernetes secret volumes use them), and
    /// content that is not exactly 64 hex characters plus an optional newline.
    pub fn load(path: &Path) -> Result<MasterKey, StoreError> {
        let mut file = fs::File::open(path).map_err(|e| key_err(path, open_reason(&e)))?;
        let meta = file
            .metadata()
            .map_err(|e| key_err(path, format!("cannot stat: {e}")))?;
        if !meta.is_file() {
            return Err(key_err(path, "is not a regular file".to_owned()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(key_err(
                path,
                format!(
                    "mode is {mode:04o}, which lets group or other read the key; run `chmod 600` on it (or set defaultMode: 0400 on the Kubernetes volume)"
                ),
            ));
        }
        // Bounded read: a huge file is a mistake, not a key, and is reported as such.
        let mut text = Zeroizing::new(Vec::with_capacity(2 * KEY_LEN + 2));
        (&mut file)
            .take(2 * KEY_LEN as u64 + 2)
            .read_to_end(&mut text)
            .map_err(|e| key_err(path, format!("cannot read: {e}")))?;
        let body = text.strip_suffix(b"\n").unwrap_or(&text);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.len() != 2 * KEY_LEN {
            return Err(key_err(
                path,
                format!(
                    "expected {} hex characters (a {KEY_LEN}-byte key) and an optional newline, found {} bytes",
                    2 * KEY_LEN,
                    meta.len()
                ),
            ));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(body, key.as_mut_slice()).map_err(|_| {
            key_err(
                path,
                format!("is not hex; expected {} hex characters", 2 * KEY_LEN),
            )
        })?;
        Ok(MasterKey::from_bytes(&key))
    }

    fn create(path: &Path) -> Result<MasterKey, StoreError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| {
                key_err(
                    path,
                    format!("cannot create directory {}: {e}", dir.display()),
                )
            })?;

        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        OsRng.fill_bytes(key.as_mut_slice());
        let mut text = Zeroizing::new([0u8; 2 * KEY_LEN + 1]);
        hex::encode_to_slice(key.as_slice(), &mut text[..2 * KEY_LEN])
            .map_err(|e| key_err(path, format!("cannot encode: {e}")))?;
        text[2 * KEY_LEN] = b'\n';

        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "master.key".to_owned());
        let tmp = dir.join(format!(
            ".{file_name}.tmp-{}-{:016x}",
            std::process::id(),
            OsRng.next_u64()
        ));
        let result = write_new_file(&tmp, text.as_slice()).and_then(|()| {
            // `link` refuses to replace an existing name: if another process created the
            // key since we looked, its key wins and we load it instead.
            match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        });
        // The temporary name is never needed again, whatever happened.
        let _ = fs::remove_file(&tmp);
        let created = result.map_err(|e| key_err(path, format!("cannot create: {e}")))?;
        if !created {
            return Self::load(path);
        }
        // Make the new directory entry durable, so a crash after the store sealed values
        // under this key cannot lose the key.
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| {
                key_err(
                    path,
                    format!("cannot sync directory {}: {e}", dir.display()),
                )
            })?;
        Ok(MasterKey::from_bytes(&key))
    }

    /// Encrypts `plaintext` as `version` of `secret`.
    pub fn seal(
        &self,
        secret: &SecretRef,
        version: VersionNo,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = associated_data(secret, version);
        let ciphertext = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            // Only possible for plaintexts beyond GCM's 64 GiB limit.
            .map_err(|_| {
                StoreError::Backend(format!(
                    "cannot encrypt {secret} version {version}: value too large"
                ))
            })?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(SEAL_FORMAT_V1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Decrypts a value sealed by [`MasterKey::seal`] for the same secret and version.
    pub fn open(
        &self,
        secret: &SecretRef,
        version: VersionNo,
        sealed: &[u8],
    ) -> Result<SecretValue, StoreError> {
        let decrypt_err = || StoreError::Decrypt {
            secret: secret.clone(),
            version,
        };
        if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != SEAL_FORMAT_V1 {
            return Err(decrypt_err());
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        let aad = associated_data(secret, version);
        let plaintext = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| decrypt_err())?;
        Ok(SecretValue::from_bytes(plaintext))
    }

    /// Keyed fingerprint of a value: hex of the first 16 bytes of
    /// `HMAC-SHA256(HMAC-SHA256(master, "rotor fingerprint v1"), value)`. Equal values give
    /// equal fingerprints under one master key; without the key it reveals nothing, not
    /// even for low-entropy values.
    pub fn fingerprint(&self, value: &[u8]) -> String {
        let mac = hmac_sha256(self.fingerprint_key.as_slice(), value);
        hex::encode(&mac[..FINGERPRINT_LEN])
    }

    /// The value stored in the database to recognise this key later. Public by design:
    /// an HMAC output under a derived key says nothing about the key itself.
    pub fn check_value(&self) -> [u8; 32] {
        self.check_value
    }

    /// Whether `stored` is this key's check value (constant-time).
    pub fn matches_check_value(&self, stored: &[u8]) -> bool {
        bool::from(self.check_value.as_slice().ct_eq(stored))
    }
}

fn associated_data(secret: &SecretRef, version: VersionNo) -> String {
    format!("{}/{}/{}", secret.tenant(), secret.key(), version)
}

fn derive(master: &[u8; KEY_LEN], label: &[u8]) -> [u8; 32] {
    hmac_sha256(master, label)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this constructor cannot fail; the fallback keeps
    // the signature infallible without an unwrap.
    let mut mac = match <HmacSha256 as hmac::Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()),
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn write_new_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

fn open_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".to_owned(),
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (rotor must run as the key file's owner)".to_owned()
        }
        _ => format!("cannot open: {e}"),
    }
}

fn key_err(path: &Path, reason: String) -> StoreError {
    StoreError::MasterKey {
        path: path.display().to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(t: &str, k: &str) -> SecretRef {
        SecretRef::new(t, k).expect("valid")
    }

    fn key() -> MasterKey {
        MasterKey::from_bytes(&[7u8; KEY_LEN])
    }

    #[test]
    fn seal_open_round_trip() {
        let k = key();
        let s = secret("t1", "db");
        let sealed = k.seal(&s, 3, b"correct horse").expect("seal");
        assert_eq!(sealed.len(), 1 + NONCE_LEN + 13 + TAG_LEN);
        assert!(!sealed.windows(13).any(|w| w == b"correct horse"));
        let opened = k.open(&s, 3, &sealed).expect("open");
        assert_eq!(opened.expose(), b"correct horse");
    }

    #[test]
    fn nonces_differ_per_seal() {
        let k = key();
        let s = secret("t1", "db");
        assert_ne!(
            k.seal(&s, 1, b"same").expect("seal"),
            k.seal(&s, 1, b"same").expect("seal")
        );
    }

    #[test]
    fn ciphertext_moved_to_another_secret_or_version_fails() {
        let k = key();
        let s = secret("t1", "db");
        let sealed = k.seal(&s, 3, b"value").expect("seal");
        for (other, version) in [
            (secret("t2", "db"), 3),
            (secret("t1", "api"), 3),
            (s.clone(), 4),
            (s.clone(), 2),
        ] {
            let err = k.open(&other, version, &sealed).expect_err("must not open");
            assert!(matches!(err, StoreError::Decrypt { .. }), "{err}");
        }
        // Tenant/key boundary: "t1/db" version 3 vs tenant "t1" key "db3"... cannot be
        // confused because the separator is part of the data.
        let err = k.open(&secret("t1", "db3"), 3, &sealed).expect_err("no");
        assert!(matches!(err, StoreError::Decrypt { .. }));
    }

    #[test]
    fn tampering_and_wrong_key_fail() {
        let k = key();
        let s = secret("t1", "db");
        let mut sealed = k.seal(&s, 1, b"value").expect("seal");
        let other = MasterKey::from_bytes(&[8u8; KEY_LEN]);
        assert!(other.open(&s, 1, &sealed).is_err());
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(k.open(&s, 1, &sealed).is_err());
        assert!(k.open(&s, 1, &[]).is_err());
        assert!(k.open(&s, 1, &[SEAL_FORMAT_V1; 20]).is_err());
    }

    #[test]
    fn fingerprint_is_keyed_and_stable() {
        let k = key();
        let f = k.fingerprint(b"value");
        assert_eq!(f.len(), 32);
        assert_eq!(f, k.fingerprint(b"value"));
        assert_ne!(f, k.fingerprint(b"valuf"));
        assert_ne!(
            f,
            MasterKey::from_bytes(&[8u8; KEY_LEN]).fingerprint(b"value")
        );
        // Not a plain hash of the value.
        use sha2::Digest as _;
        assert!(!hex::encode(Sha256::digest(b"value")).starts_with(&f));
    }

    #[test]
    fn check_value_identifies_the_key() {
        let k = key();
        assert!(k.matches_check_value(&k.check_value()));
        assert!(!MasterKey::from_bytes(&[8u8; KEY_LEN]).matches_check_value(&k.check_value()));
        assert!(!k.matches_check_value(&k.check_value()[..16]));
    }

    #[test]
    fn debug_redacts() {
        assert_eq!(format!("{:?}", key()), "MasterKey(<redacted>)");
    }

    #[test]
    fn created_key_is_0600_hex_and_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/dir/master.key");
        let k1 = MasterKey::load_or_create(&path).expect("create");
        let meta = fs::metadata(&path).expect("exists");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        let k2 = MasterKey::load_or_create(&path).expect("load");
        assert_eq!(k1.check_value(), k2.check_value());
        assert_eq!(fs::read_to_string(&path).expect("read"), text);
        // No temporary files left behind.
        let names: Vec<_> = fs::read_dir(path.parent().expect("parent"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn wide_modes_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        MasterKey::load_or_create(&path).expect("create");
        for mode in [0o644, 0o640, 0o604, 0o660, 0o601] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            let err = MasterKey::load_or_create(&path).expect_err("refused");
            let msg = err.to_string();
            assert!(matches!(err, StoreError::MasterKey { .. }));
            assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
            assert!(msg.contains("chmod 600"), "{msg}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).expect("chmod");
        MasterKey::load_or_create(&path).expect("0400 is fine");
    }

    #[test]
    fn malformed_files_are_refused_without_echoing_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        for content in [
            &b""[..],
            b"abcd\n",
            &[b'z'; 64][..],
            &[b'a'; 66][..],
            &[b'a'; 200][..],
        ] {
            let _ = fs::remove_file(&path);
            write_new_file(&path, content).expect("write");
            let err = MasterKey::load_or_create(&path).expect_err("refused");
            assert!(matches!(err, StoreError::MasterKey { .. }), "{err}");
            assert!(!err.to_string().contains("zzzz"), "{err}");
            assert!(
                content.len() == 64
                    || err
                        .to_string()
                        .contains(&format!("found {} bytes", content.len())),
                "{err}"
            );
            // Still there: a malformed key is reported, never replaced.
            assert_eq!(fs::read(&path).expect("read"), content);
        }
        let _ = fs::remove_file(&path);
        write_new_file(&path, &[b'A'; 64]).expect("write");
        MasterKey::load(&path).expect("uppercase hex is accepted");
    }

    #[test]
    fn missing_key_is_an_error_for_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = MasterKey::load(&dir.path().join("nope")).expect_err("missing");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
