//! The label rules every store keeps on commit, in one pure function both backends call:
//! a commit may not put one label on two versions (the store must never hold two `current`
//! versions of a secret), may label only versions that exist, and moves the
//! `promoted_at`/`expired_at` stamps as labels come and go. A stored version starts with
//! none of them ([`new_version`]). Which version is current is read back the same way by
//! every store ([`current`]).

use chrono::{DateTime, Utc};

use super::StoreError;
use crate::domain::{Label, RotationId, SecretRef, VersionMeta, VersionNo};

/// Applies a commit's label set to all of a secret's versions, after checking it.
///
/// Refuses (changing nothing) a label given to two versions
/// ([`StoreError::InvalidCommit`]) and a label on a version not in `versions`
/// ([`StoreError::NoSuchVersion`]), in that order. Otherwise relabels every version (see
/// [`relabel`]) and returns the indices into `versions` of those whose metadata changed,
/// which a store that writes versions one by one rewrites.
pub(super) fn apply_labels(
    secret: &SecretRef,
    versions: &mut [VersionMeta],
    labels: &[(VersionNo, Label)],
    now: DateTime<Utc>,
) -> Result<Vec<usize>, StoreError> {
    for (i, (v, label)) in labels.iter().enumerate() {
        if let Some((other, _)) = labels[..i]
            .iter()
            .find(|(other, l)| l == label && other != v)
        {
            return Err(StoreError::InvalidCommit {
                secret: secret.clone(),
                reason: format!("label {label} is given to both version {other} and {v}"),
            });
        }
    }
    if let Some((missing, _)) = labels
        .iter()
        .find(|(v, _)| !versions.iter().any(|m| m.version == *v))
    {
        return Err(StoreError::NoSuchVersion {
            secret: secret.clone(),
            version: *missing,
        });
    }
    Ok(versions
        .iter_mut()
        .enumerate()
        .filter_map(|(i, meta)| relabel(meta, labels, now).then_some(i))
        .collect())
}

/// The metadata of a version just stored: no label, so never promoted and not expired.
pub(super) fn new_version(
    version: VersionNo,
    rotation: RotationId,
    now: DateTime<Utc>,
    fingerprint: String,
) -> VersionMeta {
    VersionMeta {
        version,
        rotation,
        labels: Vec::new(),
        created_at: now,
        promoted_at: None,
        expired_at: None,
        fingerprint,
    }
}

/// The version labelled `current` among a secret's versions, if any; what every store's
/// [`super::ReadValue::current_version`] answers. `apply_labels` keeps it to at most one.
pub(super) fn current(versions: &[VersionMeta]) -> Option<VersionNo> {
    versions
        .iter()
        .find(|m| m.labels.contains(&Label::Current))
        .map(|m| m.version)
}

/// Applies a commit's label set to one version; returns whether anything changed.
///
/// Labels are replaced wholesale. Losing the last label stamps `expired_at`; gaining
/// `current` stamps `promoted_at` unless it was already set (a rollback to a version keeps
/// its original promotion time). A version that gains a label again after expiring is
/// valid again, so its `expired_at` is cleared rather than left contradicting its labels.
fn relabel(meta: &mut VersionMeta, labels: &[(VersionNo, Label)], now: DateTime<Utc>) -> bool {
    let mut new: Vec<Label> = labels
        .iter()
        .filter(|(v, _)| *v == meta.version)
        .map(|(_, l)| *l)
        .collect();
    new.sort();
    new.dedup();
    let before = meta.clone();
    if new.is_empty() {
        if !meta.labels.is_empty() && meta.expired_at.is_none() {
            meta.expired_at = Some(now);
        }
    } else {
        meta.expired_at = None;
        if new.contains(&Label::Current) && meta.promoted_at.is_none() {
            meta.promoted_at = Some(now);
        }
    }
    meta.labels = new;
    *meta != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn meta(version: VersionNo, labels: Vec<Label>) -> VersionMeta {
        let created = Utc.timestamp_opt(0, 0).single().expect("time");
        VersionMeta {
            labels,
            ..new_version(version, RotationId(version), created, String::new())
        }
    }

    #[test]
    fn relabel_stamps_promotion_and_expiry() {
        let t1 = Utc.timestamp_opt(100, 0).single().expect("time");
        let t2 = Utc.timestamp_opt(200, 0).single().expect("time");

        let mut m = meta(1, vec![]);
        assert!(relabel(&mut m, &[(1, Label::Pending)], t1));
        assert_eq!((m.promoted_at, m.expired_at), (None, None));
        assert!(relabel(&mut m, &[(1, Label::Current)], t1));
        assert_eq!(m.promoted_at, Some(t1));
        assert!(!relabel(&mut m, &[(1, Label::Current)], t2), "no-op");
        assert!(relabel(&mut m, &[(1, Label::Previous)], t2));
        assert_eq!(m.promoted_at, Some(t1));
        assert_eq!(m.expired_at, None);
        assert!(relabel(&mut m, &[(2, Label::Current)], t2));
        assert_eq!(m.expired_at, Some(t2));
        assert!(m.labels.is_empty());
        // Staying unlabelled keeps the first expiry time.
        let t3 = Utc.timestamp_opt(300, 0).single().expect("time");
        assert!(!relabel(&mut m, &[], t3));
        assert_eq!(m.expired_at, Some(t2));
        // Never labelled: never expires.
        let mut fresh = meta(5, vec![]);
        assert!(!relabel(&mut fresh, &[(1, Label::Current)], t3));
        assert_eq!(fresh.expired_at, None);
    }

    #[test]
    fn bad_label_sets_are_refused_and_change_nothing() {
        let s = SecretRef::new("t", "k").expect("valid");
        let now = Utc.timestamp_opt(100, 0).single().expect("time");
        let mut versions = vec![meta(1, vec![]), meta(2, vec![])];
        let before = versions.clone();

        let err = apply_labels(
            &s,
            &mut versions,
            &[(1, Label::Current), (2, Label::Current)],
            now,
        )
        .expect_err("two currents");
        assert!(matches!(err, StoreError::InvalidCommit { .. }), "{err}");
        assert!(err.to_string().contains("current"), "{err}");
        // Two currents on a missing version: the label rule is reported first.
        let err = apply_labels(
            &s,
            &mut versions,
            &[(1, Label::Current), (9, Label::Current)],
            now,
        )
        .expect_err("two currents");
        assert!(matches!(err, StoreError::InvalidCommit { .. }), "{err}");
        let err = apply_labels(&s, &mut versions, &[(9, Label::Current)], now)
            .expect_err("missing version");
        assert!(
            matches!(err, StoreError::NoSuchVersion { version: 9, .. }),
            "{err}"
        );
        assert_eq!(versions, before);

        // The same label twice on one version is fine.
        let changed = apply_labels(
            &s,
            &mut versions,
            &[
                (1, Label::Current),
                (1, Label::Current),
                (2, Label::Previous),
            ],
            now,
        )
        .expect("valid");
        assert_eq!(changed, [0, 1]);
        assert_eq!(versions[0].labels, [Label::Current]);
        assert_eq!(versions[0].promoted_at, Some(now));
        assert_eq!(versions[1].labels, [Label::Previous]);
        let changed = apply_labels(&s, &mut versions, &[(1, Label::Current)], now).expect("valid");
        assert_eq!(changed, [1], "only version 2 lost its label");
    }
}
