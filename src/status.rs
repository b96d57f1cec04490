//! The status board: the latest status of every secret, published by its rotation actor
//! after each transition. `GET /admin/secrets/schedule` and `rotor` metrics read it, so a
//! schedule of 100,000 secrets needs no 100,000 actor calls.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{RotationId, SecretRef, VersionNo};

/// A secret's status as its rotation actor last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretStatus {
    pub policy: String,
    pub phase: &'static str,
    pub current: Option<VersionNo>,
    pub rotation: Option<RotationId>,
    pub next_due: Option<DateTime<Utc>>,
    pub grace_expires_at: Option<DateTime<Utc>>,
    pub last_rotated_at: Option<DateTime<Utc>>,
    pub attempts: u32,
}

#[derive(Debug, Default)]
pub struct StatusBoard {
    // A std Mutex: held for a map insert or a clone, never across an await.
    entries: Mutex<HashMap<SecretRef, SecretStatus>>,
}

impl StatusBoard {
    pub fn set(&self, secret: &SecretRef, status: SecretStatus) {
        if let Ok(mut e) = self.entries.lock() {
            match e.get_mut(secret) {
                Some(s) => *s = status,
                None => {
                    e.insert(secret.clone(), status);
                }
            }
        }
    }

    pub fn get(&self, secret: &SecretRef) -> Option<SecretStatus> {
        self.entries.lock().ok()?.get(secret).cloned()
    }

    /// Every secret, sorted by the next thing that happens to it (grace expiry or due
    /// time), secrets with nothing scheduled last, then by name.
    pub fn snapshot(&self) -> Vec<(SecretRef, SecretStatus)> {
        let mut v: Vec<_> = match self.entries.lock() {
            Ok(e) => e.iter().map(|(k, s)| (k.clone(), s.clone())).collect(),
            Err(_) => Vec::new(),
        };
        v.sort_by(|(ka, a), (kb, b)| {
            let ta = a.grace_expires_at.or(a.next_due);
            let tb = b.grace_expires_at.or(b.next_due);
            match (ta, tb) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
            .then_with(|| ka.cmp(kb))
        });
        v
    }

    /// Calls `f` for every secret under the lock, in no order: a pass without the copy and
    /// sort of [`StatusBoard::snapshot`] (the metrics actor folds 100,000 entries per
    /// scrape). `f` must be quick; rotation actors wait to publish meanwhile.
    pub fn for_each(&self, mut f: impl FnMut(&SecretRef, &SecretStatus)) {
        if let Ok(e) = self.entries.lock() {
            for (k, s) in e.iter() {
                f(k, s);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
