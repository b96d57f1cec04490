//! The admin bearer token: loading it from its file and checking it on requests.
//!
//! The token lives in a file only its owner can read. On first start rotor creates that file
//! (mode 0600, never overwriting an existing one) with 32 random bytes, base64url-encoded,
//! so an operator never has to invent a token and no default token exists.
//!
//! Requests are checked by comparing SHA-256 digests of the presented and the expected token
//! with [`subtle::ConstantTimeEq`]: hashing first gives both sides the same length, so neither
//! the comparison's timing nor an early length check reveals anything about the token.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Random bytes in a generated token: 256 bits, beyond any guessing.
const TOKEN_BYTES: usize = 32;

/// Largest token file read. A real token is a few dozen bytes; anything far bigger is a
/// wrong path (a log, a binary), and reading it whole would be pointless.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// Why a bearer token (the admin or the consumer token) could not be loaded. Messages name
/// the path, never the token; the caller says which token it was.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "token file {path} has mode {mode:04o}; it must not be readable or writable by group or others (chmod 600 {path})"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("token file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("token file {path} is larger than {max} bytes; is this the right file?", max = MAX_TOKEN_FILE_BYTES)]
    TooLarge { path: PathBuf },
    #[error("token file {path} is empty or holds only whitespace")]
    Empty { path: PathBuf },
    #[error("token file {path} is not valid UTF-8")]
    NotUtf8 { path: PathBuf },
    /// The token goes into an HTTP header, where spaces and control characters either
    /// break the header or are trimmed by the parser, so such a token could never match.
    #[error(
        "token {origin} contains whitespace or a non-printable character; only printable ASCII is allowed"
    )]
    BadChar { origin: String },
}

/// The admin bearer token. Its `Debug` output is redacted and its memory is zeroed on drop.
#[derive(Clone)]
pub struct AdminToken(Zeroizing<String>);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// Wraps a token given directly (tests, or a token from another source). Refuses empty
    /// tokens and tokens with characters that cannot travel in an HTTP header.
    pub fn new(token: impl Into<String>) -> Result<AdminToken, TokenError> {
        let token = Zeroizing::new(token.into());
        if token.trim().is_empty() {
            return Err(TokenError::Empty {
                path: PathBuf::from("<given>"),
            });
        }
        check_chars(&token, "given directly")?;
        Ok(AdminToken(token))
    }

    /// Reads the token file; if missing, creates it (parent dirs too) with mode 0600 holding a
    /// random 32-byte base64url token (create_new, never overwrite). Refuses a file with
    /// group/other permission bits, or an empty/whitespace-only file, with a clear error naming
    /// the path. Trims a trailing newline.
    pub fn load_or_create(path: &Path) -> Result<AdminToken, TokenError> {
        let io_err = |source| TokenError::Io {
            path: path.to_owned(),
            source,
        };
        match File::open(path) {
            Ok(file) => Self::read_from(path, file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match Self::create(path) {
                Ok(token) => Ok(token),
                // Another process (a second replica sharing the volume, a racing start)
                // created it between our open and create: use theirs rather than fail.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    Self::read_from(path, File::open(path).map_err(io_err)?)
                }
                Err(e) => Err(io_err(e)),
            },
            Err(e) => Err(io_err(e)),
        }
    }

    /// Reads the token file, which must exist: with `[ha]`, every replica reads the same
    /// token from a shared Kubernetes Secret, and one that made its own would lock the
    /// others' clients out. Checks as [`AdminToken::load_or_create`] does.
    pub fn load(path: &Path) -> Result<AdminToken, TokenError> {
        let file = File::open(path).map_err(|source| TokenError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::read_from(path, file)
    }

    /// The token itself, for clients that must send it (the `rotor` CLI). Never log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the token, the fixed-length form compared in constant time.
    pub(crate) fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    fn read_from(path: &Path, file: File) -> Result<AdminToken, TokenError> {
        // Metadata of the opened handle, not of the path, so the file checked is the file read.
        let meta = file.metadata().map_err(|source| TokenError::Io {
            path: path.to_owned(),
            source,
        })?;
        if !meta.is_file() {
            return Err(TokenError::NotAFile {
                path: path.to_owned(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(MAX_TOKEN_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| TokenError::Io {
                path: path.to_owned(),
                source,
            })?;
        if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
            return Err(TokenError::TooLarge {
                path: path.to_owned(),
            });
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| TokenError::NotUtf8 {
            path: path.to_owned(),
        })?;
        // Editors and `echo` add a trailing newline; it is not part of the token.
        let token = text.trim_end_matches(['\n', '\r']);
        if token.trim().is_empty() {
            return Err(TokenError::Empty {
                path: path.to_owned(),
            });
        }
        check_chars(token, &format!("in {}", path.display()))?;
        Ok(AdminToken(Zeroizing::new(token.to_owned())))
    }

    fn create(path: &Path) -> io::Result<AdminToken> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Directories we create are private too; existing ones are left as they are.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        let mut raw = Zeroizing::new([0u8; TOKEN_BYTES]);
        rand::rngs::OsRng.fill_bytes(raw.as_mut());
        let token = Zeroizing::new(URL_SAFE_NO_PAD.encode(raw.as_ref()));
        // create_new: an existing file is never overwritten, even if it appeared just now.
        // mode 0600 is applied at creation, so the token is never readable by others.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(format!("{}\n", token.as_str()).as_bytes())?;
        file.sync_all()?;
        Ok(AdminToken(token))
    }
}

fn check_chars(token: &str, origin: &str) -> Result<(), TokenError> {
    if token.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(TokenError::BadChar {
            origin: origin.to_owned(),
        })
    }
}

/// Checks a request's `Authorization` header value against the expected token digest.
/// `None` (no header) and malformed headers are simply "not authorised".
pub(crate) fn bearer_matches(header: Option<&[u8]>, expected: &[u8; 32]) -> bool {
    let Some(value) = header else {
        return false;
    };
    // The scheme is case-insensitive (RFC 9110 §11.1); the token is compared as bytes.
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    let presented = value[7..].trim_ascii();
    let digest: [u8; 32] = Sha256::digest(presented).into();
    digest.ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_forms() {
        let token = AdminToken::new("s3cret-token").expect("valid");
        let d = token.digest();
        assert!(bearer_matches(Some(b"Bearer s3cret-token"), &d));
        assert!(bearer_matches(Some(b"bearer s3cret-token"), &d));
        assert!(!bearer_matches(None, &d));
        assert!(!bearer_matches(Some(b"Bearer s3cret-toke"), &d));
        assert!(!bearer_matches(Some(b"Basic s3cret-token"), &d));
        assert!(!bearer_matches(Some(b"s3cret-token"), &d));
        assert!(!bearer_matches(Some(b"Bearer"), &d));
    }

    #[test]
    fn debug_is_redacted() {
        let token = AdminToken::new("s3cret-token").expect("valid");
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn refuses_unsendable_tokens() {
        assert!(AdminToken::new("").is_err());
        assert!(AdminToken::new("   ").is_err());
        assert!(AdminToken::new("a b").is_err());
        assert!(AdminToken::new("a\u{7f}").is_err());
    }
}
