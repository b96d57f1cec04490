//! What the `postgres` and `redis` targets share about credentials: the stored
//! `{"username","password"}` value (PostgreSQL adds the consumer's `url`) and the
//! `admin_url_file` holding the URL of the admin connection, password included.
//!
//! Neither is ever quoted in an error: errors name the file or the version and say what
//! was expected.

use std::path::Path;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::ValueReader;
use crate::domain::{SecretRef, VersionNo};
use crate::generator::SecretValue;

/// The stored value of a `postgres` or `redis` secret, as consumers read it.
#[derive(serde::Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// `postgres` only: the URL a consumer connects with; empty for `redis`.
    #[serde(default)]
    pub url: String,
}

impl Credentials {
    /// Parses a stored value; the error names no part of it.
    pub fn parse(value: &SecretValue) -> Result<Credentials, &'static str> {
        serde_json::from_slice(value.expose()).map_err(
            |_| "the stored value is not the {\"username\",\"password\"} JSON this target writes",
        )
    }

    /// The stored credentials of `version`, read through the target's reader.
    pub(crate) async fn read(
        reader: &ValueReader,
        secret: &SecretRef,
        version: VersionNo,
    ) -> Result<Credentials, String> {
        let value = reader
            .read_value(secret, version)
            .await
            .map_err(|e| format!("cannot read v{version}: {e}"))?;
        Credentials::parse(&value).map_err(str::to_owned)
    }
}

/// The admin connection URL in `path` (an `admin_url_file`), trimmed and handed to `parse`,
/// whose error says what was expected. The file is read at every operation, so an operator
/// can change the admin credentials without a restart; its text is wiped once parsed.
pub(crate) fn admin_url<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, &'static str>,
) -> Result<T, String> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read admin_url_file {}: {e}", path.display()))?,
    );
    parse(text.trim()).map_err(|why| format!("admin_url_file {}: {why}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_url_errors_name_the_file_and_never_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("admin-url");
        let missing = admin_url(&file, |_| Ok(())).unwrap_err();
        assert!(missing.contains("cannot read admin_url_file") && missing.contains("admin-url"));
        std::fs::write(&file, "  scheme://user:S3CRET@host  \n").unwrap();
        let seen = admin_url(&file, |text| Ok(text.to_owned())).unwrap();
        assert_eq!(seen, "scheme://user:S3CRET@host", "trimmed");
        let refused = admin_url(&file, |_| Err::<(), _>("expected something else")).unwrap_err();
        assert!(
            refused.contains("admin-url: expected something else"),
            "{refused}"
        );
        assert!(!refused.contains("S3CRET"), "{refused}");
    }
}
