//! The status board: the latest status of every secret, published by its rotation actor
//! after each transition. `GET /admin/secrets/schedule` and `rotor` metrics read it, so a
//! schedule of 100,000 secrets needs no 100,000 actor calls.
//!
//! For a hibernating secret the board entry is the only status there is, so an entry is
//! kept small: the managed secrets are declared once ([`StatusBoard::declare`], sorted),
//! and their entries sit in one slot each, found by binary search, with no key, hash or
//! allocation of their own; a policy's name is one shared `Arc<str>` for every entry of the
//! policy. A secret that was not declared (a board used on its own) is kept in a map.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::domain::{RotationId, SecretRef, VersionNo};

/// A secret's status as its rotation actor last reported it. The board keeps it as it is,
/// with the policy's name interned: one shared `Arc<str>` per policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretStatus {
    pub policy: Arc<str>,
    pub phase: &'static str,
    pub current: Option<VersionNo>,
    pub rotation: Option<RotationId>,
    pub next_due: Option<DateTime<Utc>>,
    pub grace_expires_at: Option<DateTime<Utc>>,
    pub last_rotated_at: Option<DateTime<Utc>>,
    pub attempts: u32,
}

#[derive(Debug, Default)]
struct Entries {
    /// The declared secrets, sorted; `slots[i]` is the entry of `names[i]`.
    names: Vec<SecretRef>,
    slots: Vec<Option<SecretStatus>>,
    /// Slots that hold an entry.
    filled: usize,
    /// Entries of secrets that were not declared.
    others: HashMap<SecretRef, SecretStatus>,
    /// One name per policy, shared by its entries (policies are few).
    policies: Vec<Arc<str>>,
}

impl Entries {
    fn policy(&mut self, name: &str) -> Arc<str> {
        if let Some(p) = self.policies.iter().find(|p| p.as_ref() == name) {
            return p.clone();
        }
        let p: Arc<str> = name.into();
        self.policies.push(p.clone());
        p
    }

    fn slot(&self, secret: &SecretRef) -> Option<usize> {
        self.names.binary_search(secret).ok()
    }

    fn get(&self, secret: &SecretRef) -> Option<&SecretStatus> {
        match self.slot(secret) {
            Some(i) => self.slots[i].as_ref(),
            None => self.others.get(secret),
        }
    }
}

#[derive(Debug, Default)]
pub struct StatusBoard {
    // A std Mutex: held for an entry's update or a copy, never across an await.
    entries: Mutex<Entries>,
}

impl StatusBoard {
    /// Declares the managed secrets, `sorted` by name (the tree does, once, before any
    /// entry is set): their entries then take a slot each instead of a map entry. Entries
    /// already set move into their slots; declaring again keeps the first declaration.
    pub fn declare(&self, sorted: Vec<SecretRef>) {
        let Ok(mut e) = self.entries.lock() else {
            return;
        };
        if !e.names.is_empty() {
            return;
        }
        debug_assert!(sorted.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
        e.slots = vec![None; sorted.len()];
        e.names = sorted;
        let others = std::mem::take(&mut e.others);
        for (secret, entry) in others {
            match e.slot(&secret) {
                Some(i) => {
                    e.slots[i] = Some(entry);
                    e.filled += 1;
                }
                None => {
                    e.others.insert(secret, entry);
                }
            }
        }
    }

    pub fn set(&self, secret: &SecretRef, status: SecretStatus) {
        let Ok(mut e) = self.entries.lock() else {
            return;
        };
        let entry = SecretStatus {
            policy: e.policy(&status.policy),
            ..status
        };
        match e.slot(secret) {
            Some(i) => {
                if e.slots[i].replace(entry).is_none() {
                    e.filled += 1;
                }
            }
            None => match e.others.get_mut(secret) {
                Some(s) => *s = entry,
                None => {
                    e.others.insert(secret.clone(), entry);
                }
            },
        }
    }

    pub fn get(&self, secret: &SecretRef) -> Option<SecretStatus> {
        self.entries.lock().ok()?.get(secret).cloned()
    }

    /// Every secret, sorted by the next thing that happens to it (grace expiry or due
    /// time), secrets with nothing scheduled last, then by name.
    pub fn snapshot(&self) -> Vec<(SecretRef, SecretStatus)> {
        let mut v: Vec<(SecretRef, SecretStatus)> = Vec::new();
        self.for_each(|k, s| v.push((k.clone(), s.clone())));
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
            for (k, s) in e.names.iter().zip(&e.slots) {
                if let Some(s) = s {
                    f(k, s);
                }
            }
            for (k, s) in e.others.iter() {
                f(k, s);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .map(|e| e.filled + e.others.len())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(policy: &str, attempts: u32) -> SecretStatus {
        SecretStatus {
            policy: policy.into(),
            phase: "idle",
            current: Some(1),
            rotation: None,
            next_due: None,
            grace_expires_at: None,
            last_rotated_at: None,
            attempts,
        }
    }

    fn secret(t: &str, k: &str) -> SecretRef {
        SecretRef::new(t, k).expect("valid")
    }

    #[test]
    fn declared_and_undeclared_secrets_read_back_what_was_set() {
        let board = StatusBoard::default();
        // Set before the declaration: moved into its slot.
        board.set(&secret("a", "k1"), status("p", 1));
        board.declare(vec![
            secret("a", "k1"),
            secret("a", "k2"),
            secret("b", "k1"),
        ]);
        assert_eq!(board.len(), 1);
        board.set(&secret("b", "k1"), status("p", 2));
        board.set(&secret("b", "k1"), status("q", 3));
        board.set(&secret("z", "other"), status("p", 4));
        assert_eq!(board.len(), 3, "a/k2 was never set");
        assert_eq!(board.get(&secret("a", "k1")), Some(status("p", 1)));
        assert_eq!(board.get(&secret("b", "k1")), Some(status("q", 3)));
        assert_eq!(board.get(&secret("z", "other")), Some(status("p", 4)));
        assert_eq!(board.get(&secret("a", "k2")), None);
        let names: Vec<String> = board
            .snapshot()
            .into_iter()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(names, ["a/k1", "b/k1", "z/other"]);
        // Entries of one policy share its name.
        board.set(&secret("a", "k2"), status("p", 0));
        let mut policies = Vec::new();
        board.for_each(|_, e| policies.push(e.policy.clone()));
        let p: Vec<_> = policies.iter().filter(|p| p.as_ref() == "p").collect();
        assert_eq!(p.len(), 3);
        assert!(p.windows(2).all(|w| Arc::ptr_eq(w[0], w[1])));
    }
}
