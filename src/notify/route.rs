//! Routing: which events a channel takes. A channel names the event kinds it wants (all of
//! them when it names none) and a minimum severity; an event goes to every channel that
//! takes it.

use super::{Notification, Severity};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Event kinds ([`super::EVENT_KINDS`]); empty means every kind.
    pub events: Vec<String>,
    pub min_severity: Severity,
}

impl Default for Route {
    fn default() -> Self {
        Route {
            events: Vec::new(),
            min_severity: Severity::Info,
        }
    }
}

impl Route {
    pub fn takes(&self, n: &Notification) -> bool {
        n.severity >= self.min_severity
            && (self.events.is_empty() || self.events.iter().any(|e| e == n.event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    #[test]
    fn routes_by_kind_and_severity() {
        let failed = Notification::watcher_health("/m", false, Utc::now()); // warning
        let ok = Notification::watcher_health("/m", true, Utc::now()); // info
        let all = Route::default();
        assert!(all.takes(&failed) && all.takes(&ok));
        let warn = Route {
            events: vec![],
            min_severity: Severity::Warning,
        };
        assert!(warn.takes(&failed) && !warn.takes(&ok));
        let only_ok = Route {
            events: vec!["watcher_health_recovered".into()],
            min_severity: Severity::Info,
        };
        assert!(!only_ok.takes(&failed) && only_ok.takes(&ok));
        let critical = Route {
            events: vec![],
            min_severity: Severity::Critical,
        };
        assert!(!critical.takes(&failed));
    }
}
