//! Which managed secret a visible file holds: the mount's `files` table first, then a
//! naming convention: `tenant.key` (identifiers cannot contain `.`, so this is
//! unambiguous), or a bare `key` when exactly one managed secret has that key (what
//! `[[publish]]` writes by default).
//!
//! Beside each value file a view (a `[[publish]]` directory, a Vault or AWS view mounted
//! by the CSI driver) carries a *version marker*, `NAME_version`, holding the rotor version
//! number of `NAME`. A marker is metadata, not a secret: [`is_version_marker`] tells the
//! watcher to leave it out of its snapshots, and `rotor agent` reads it to report which
//! version its pod holds.

use std::collections::{BTreeMap, BTreeSet};

/// What a version marker's name adds to the name of its value file.
pub const VERSION_SUFFIX: &str = "_version";

/// The name of the version marker of the value file `file`.
pub fn version_marker(file: &str) -> String {
    format!("{file}{VERSION_SUFFIX}")
}

/// Whether the visible file `file` is the version marker of another visible file (`NAME`
/// beside `NAME_version`; `present` says whether a name is visible), and not itself a file
/// the mount's `files` table maps (which wins: a secret may be called `x_version`).
pub fn is_version_marker(
    file: &str,
    present: impl Fn(&str) -> bool,
    explicit: &BTreeMap<String, SecretRef>,
) -> bool {
    file.strip_suffix(VERSION_SUFFIX)
        .is_some_and(|value| !value.is_empty() && present(value))
        && !explicit.contains_key(file)
}

use crate::domain::SecretRef;

pub fn secret_for(
    file: &str,
    explicit: &BTreeMap<String, SecretRef>,
    managed: &BTreeSet<SecretRef>,
) -> Option<SecretRef> {
    if let Some(s) = explicit.get(file) {
        return Some(s.clone());
    }
    if let Some((tenant, key)) = file.split_once('.')
        && let Ok(s) = SecretRef::new(tenant, key)
        && managed.contains(&s)
    {
        return Some(s);
    }
    let mut by_key = managed.iter().filter(|s| s.key() == file);
    match (by_key.next(), by_key.next()) {
        (Some(s), None) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_then_convention() {
        let s = |t: &str, k: &str| SecretRef::new(t, k).expect("valid");
        let managed: BTreeSet<_> = [s("t1", "db"), s("t1", "api"), s("t2", "api")].into();
        let explicit: BTreeMap<_, _> = [("database-password".to_owned(), s("t1", "db"))].into();
        assert_eq!(
            secret_for("database-password", &explicit, &managed),
            Some(s("t1", "db"))
        );
        assert_eq!(
            secret_for("t2.api", &explicit, &managed),
            Some(s("t2", "api"))
        );
        assert_eq!(secret_for("db", &explicit, &managed), Some(s("t1", "db")));
        assert_eq!(secret_for("api", &explicit, &managed), None, "ambiguous");
        assert_eq!(secret_for("t3.db", &explicit, &managed), None);
        assert_eq!(secret_for("other", &explicit, &managed), None);
    }

    #[test]
    fn version_markers_are_told_apart_from_value_files() {
        let s = SecretRef::new("t1", "db").expect("valid");
        let visible = ["password", "password_version", "lone_version", "_version"];
        let present = |name: &str| visible.contains(&name);
        let none = BTreeMap::new();
        assert_eq!(version_marker("password"), "password_version");
        assert!(is_version_marker("password_version", present, &none));
        assert!(!is_version_marker("password", present, &none));
        // No value file beside it: a file of its own.
        assert!(!is_version_marker("lone_version", present, &none));
        assert!(!is_version_marker("_version", present, &none));
        // Mapped explicitly: a value file, whatever its name.
        let mapped: BTreeMap<_, _> = [("password_version".to_owned(), s)].into();
        assert!(!is_version_marker("password_version", present, &mapped));
    }
}
