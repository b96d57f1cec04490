//! One rotation's worth of store writes, shared by the store benchmarks so every backend is
//! measured on exactly the same work: `put_version`, then five commits (staged, applied,
//! tested, promoted into grace, previous expired with a history record).

use chrono::Utc;
use rotor::domain::{
    HistoryRecord, Label, Outcome, RotationId, SecretRef, Step, Trigger, VersionNo,
};
use rotor::generator::SecretValue;
use rotor::store::{Commit, Store};

/// Writes the rotation from `current` (0 for none) to `current + 1`; returns the new current.
pub async fn rotate(
    store: &dyn Store,
    secret: &SecretRef,
    value: &SecretValue,
    journal: &[u8],
    current: VersionNo,
) -> VersionNo {
    let next = current + 1;
    let now = Utc::now();
    let commit = async |labels: &[(VersionNo, Label)], history: Option<&HistoryRecord>| {
        store
            .commit(
                secret,
                Commit {
                    journal,
                    labels,
                    history,
                    now,
                },
            )
            .await
            .expect("commit");
    };
    store
        .put_version(secret, next, RotationId(next), value, now)
        .await
        .expect("put_version");
    let (base, grace): (Vec<_>, Vec<_>) = if current == 0 {
        (vec![], vec![(next, Label::Current)])
    } else {
        (
            vec![(current, Label::Current)],
            vec![(next, Label::Current), (current, Label::Previous)],
        )
    };
    let mut staged = base;
    staged.push((next, Label::Pending));
    commit(&staged, None).await; // staged
    commit(&staged, None).await; // applied
    commit(&staged, None).await; // tested
    commit(&grace, None).await; // promoted, previous in grace
    let record = HistoryRecord {
        rotation: RotationId(next),
        trigger: Trigger::Schedule,
        from_version: (current > 0).then_some(current),
        to_version: next,
        outcome: Outcome::Succeeded,
        error: None,
        steps: vec![
            Step::Generate,
            Step::Apply,
            Step::Test,
            Step::Promote,
            Step::Expire,
        ],
        started_at: now,
        finished_at: now,
        late_consumers: Vec::new(),
        gone_consumers: Vec::new(),
    };
    commit(&[(next, Label::Current)], Some(&record)).await; // previous expired
    next
}
