//! Which managed secret a visible file holds: the mount's `files` table first, then a
//! naming convention: `tenant.key` (identifiers cannot contain `.`, so this is
//! unambiguous), or a bare `key` when exactly one managed secret has that key (what
//! `[[publish]]` writes by default).

use std::collections::{BTreeMap, BTreeSet};

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
}
