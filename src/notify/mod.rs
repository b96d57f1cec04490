//! Notifications: what rotor tells people, and how each channel says it.
//!
//! This module is pure formatting and delivery mechanics; the notifier actor
//! ([`crate::actors::notifier`]) owns the queues and spawns one delivery task per channel.
//!
//! # Layout
//!
//! - [`Notification`]: one event as every channel sees it (kind, severity, secret, version
//!   numbers, outcome, error kind). It is built from metadata only, so no channel can leak
//!   a secret value: there is none to leak.
//! - [`route`]: which events a `[[notify]]` channel takes (event kinds, minimum severity).
//! - [`slack`]: the Slack-compatible incoming-webhook payload (`text` plus blocks).
//! - [`webhook`]: the generic JSON payload and its `X-Rotor-Signature` (HMAC-SHA256).
//! - [`http`]: one HTTP POST with a timeout, classified as delivered, retryable or not.
//! - [`config`]: `[[notify]]`: each channel type's keys, their checks, the validated
//!   [`config::NotifyConfig`], and the [`channel::Sink`] it builds.
//! - [`channel`]: the delivery loop of one channel: queue in, retries (with
//!   [`crate::backoff::ExponentialBackoff`]), metrics.

pub mod channel;
pub mod config;
pub mod http;
pub mod route;
pub mod slack;
pub mod webhook;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::{RotationId, SecretRef};
use crate::machine::Notice;

/// How much an event matters. Ordered: `Info < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        match text {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// Every event kind a channel can subscribe to (`[[notify]] events`). The rotation kinds
/// are [`Notice::event_name`]'s; the others come from watchers and reload actions.
pub const EVENT_KINDS: &[&str] = &[
    "rotation_started",
    "grace_entered",
    "grace_extended",
    "rotation_succeeded",
    "version_expired",
    "rotation_failed",
    "rotation_rolled_back",
    "rotation_stuck",
    "target_reapplied",
    "target_verify_failed",
    "consumers_late",
    "watcher_health_failed",
    "watcher_health_recovered",
    "reload_succeeded",
    "reload_failed",
    "job_started",
    "job_finished",
];

/// A job's id and counts in a job notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobCounts {
    pub id: String,
    pub total: u64,
    pub done: u64,
    pub failed: u64,
}

/// One event, as every channel renders it. Only metadata: names, version numbers, bounded
/// error kinds. Never a secret value, a file's content or a URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    /// One of [`EVENT_KINDS`].
    pub event: &'static str,
    pub severity: Severity,
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<u64>,
    /// The version the event is about (the new one for a rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// The other version involved: the previous one in grace, the restored one after a
    /// rollback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<u64>,
    /// `started`, `succeeded`, `failed`, `rolled_back`, `expired`, `stuck`, ...
    pub outcome: &'static str,
    /// A bounded error kind (`apply`, `timeout`, `store`, ...), never a message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    /// The watched mount directory (watcher events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// The reload action type (`http`, `signal`, `exec`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The emergency rotation job the event is about, with its counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<JobCounts>,
    /// Consumers (agents' ids) the event names: those late or gone at an expiry.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<String>,
    /// One human sentence summarising the event.
    pub summary: String,
}

impl Notification {
    /// A rotation lifecycle event.
    pub fn from_notice(
        secret: &SecretRef,
        rotation: RotationId,
        notice: &Notice,
        at: DateTime<Utc>,
    ) -> Notification {
        let fmt_t = |t: &DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let (severity, outcome, version, previous, error, summary) = match notice {
            Notice::Started { trigger, version } => (
                Severity::Info,
                "started",
                Some(*version),
                None,
                None,
                format!(
                    "rotation {rotation} of {secret} started ({}), staging v{version}",
                    trigger.as_str()
                ),
            ),
            Notice::GraceEntered {
                version,
                previous,
                expires_at,
            } => (
                Severity::Info,
                "grace",
                Some(*version),
                Some(*previous),
                None,
                format!(
                    "{secret}: v{version} is current; v{previous} stays valid until {}",
                    fmt_t(expires_at)
                ),
            ),
            Notice::GraceExtended { previous, until } => (
                Severity::Warning,
                "grace_extended",
                None,
                Some(*previous),
                None,
                format!(
                    "{secret}: consumers have not picked up the new version; v{previous} stays valid until {}",
                    fmt_t(until)
                ),
            ),
            Notice::Succeeded { version } => (
                Severity::Info,
                "succeeded",
                Some(*version),
                None,
                None,
                format!("rotation {rotation} of {secret} succeeded: v{version} is current"),
            ),
            Notice::Expired { version, forced } => (
                if *forced {
                    Severity::Warning
                } else {
                    Severity::Info
                },
                "expired",
                Some(*version),
                None,
                None,
                if *forced {
                    format!(
                        "{secret}: v{version} expired at the end of the maximum grace extension, consumers never caught up"
                    )
                } else {
                    format!("{secret}: v{version} expired")
                },
            ),
            Notice::Failed {
                version,
                error,
                retry_at,
            } => (
                Severity::Warning,
                "failed",
                Some(*version),
                None,
                Some(error.as_str()),
                match retry_at {
                    Some(t) => format!(
                        "rotation {rotation} of {secret} failed ({} error); retrying at {}",
                        error.as_str(),
                        fmt_t(t)
                    ),
                    None => format!(
                        "rotation {rotation} of {secret} failed ({} error); no attempts left",
                        error.as_str()
                    ),
                },
            ),
            Notice::RolledBack { version, restored } => (
                Severity::Warning,
                "rolled_back",
                Some(*version),
                Some(*restored),
                None,
                format!(
                    "rotation {rotation} of {secret} rolled back: v{version} discarded, v{restored} is current again"
                ),
            ),
            Notice::Stuck { error } => (
                Severity::Critical,
                "stuck",
                None,
                None,
                Some(error.as_str()),
                format!(
                    "{secret} is stuck after repeated {} errors: manual action needed",
                    error.as_str()
                ),
            ),
            Notice::ConsumersLate {
                version,
                previous,
                late,
                gone,
            } => (
                Severity::Warning,
                "consumers_late",
                Some(*version),
                Some(*previous),
                None,
                {
                    let mut parts = Vec::new();
                    if !late.is_empty() {
                        parts.push(format!(
                            "still on an older version at the end of max_grace_extension: {}",
                            late.join(", ")
                        ));
                    }
                    if !gone.is_empty() {
                        parts.push(format!(
                            "stopped reporting before showing v{version}: {}",
                            gone.join(", ")
                        ));
                    }
                    format!(
                        "{secret}: v{previous} expired while consumers did not show v{version}; {}",
                        parts.join("; ")
                    )
                },
            ),
            Notice::TargetReapplied { version } => (
                Severity::Warning,
                "reapplied",
                Some(*version),
                None,
                None,
                format!("{secret}: the target had lost current v{version}; rotor applied it again"),
            ),
            Notice::TargetVerifyFailed {
                version,
                error,
                lost,
            } => (
                // A lost version that could not be restored leaves consumers locked out.
                if *lost {
                    Severity::Critical
                } else {
                    Severity::Warning
                },
                if *lost {
                    "reapply_failed"
                } else {
                    "verify_failed"
                },
                Some(*version),
                None,
                Some(error.as_str()),
                if *lost {
                    format!(
                        "{secret}: the target has lost current v{version} and applying it again failed ({} error): consumers cannot log in",
                        error.as_str()
                    )
                } else {
                    format!(
                        "{secret}: could not verify current v{version} against the target ({} error); nothing was re-applied",
                        error.as_str()
                    )
                },
            ),
        };
        Notification {
            event: notice.event_name(),
            severity,
            at,
            tenant: Some(secret.tenant().to_owned()),
            key: Some(secret.key().to_owned()),
            rotation: Some(rotation.0),
            version,
            previous_version: previous,
            outcome,
            error,
            mount: None,
            action: None,
            job: None,
            consumers: match notice {
                Notice::ConsumersLate { late, gone, .. } => {
                    late.iter().chain(gone.iter()).cloned().collect()
                }
                _ => Vec::new(),
            },
            summary,
        }
    }

    /// An emergency rotation job started (`job_started`) or ended (`job_finished`, also
    /// when cancelled). A job that ended with failures is a warning.
    pub fn job(
        event: &'static str,
        view: &crate::api::JobView,
        summary: String,
        at: DateTime<Utc>,
    ) -> Notification {
        let outcome = match (event, view.state.as_str()) {
            ("job_started", _) => "started",
            (_, "cancelled") => "cancelled",
            _ => "finished",
        };
        Notification {
            event,
            severity: if view.failed > 0 {
                Severity::Warning
            } else {
                Severity::Info
            },
            at,
            tenant: view.selector.tenant_id.clone(),
            key: None,
            rotation: None,
            version: None,
            previous_version: None,
            outcome,
            error: None,
            mount: None,
            action: None,
            job: Some(JobCounts {
                id: view.job_id.clone(),
                total: view.total,
                done: view.done,
                failed: view.failed,
            }),
            consumers: Vec::new(),
            summary,
        }
    }

    /// A watched mount's health check changed: `healthy = false` on failure.
    pub fn watcher_health(mount: &str, healthy: bool, at: DateTime<Utc>) -> Notification {
        let (event, severity, outcome, summary) = if healthy {
            (
                "watcher_health_recovered",
                Severity::Info,
                "recovered",
                format!("secret mount {mount} is healthy again"),
            )
        } else {
            (
                "watcher_health_failed",
                Severity::Warning,
                "failed",
                format!("health check of secret mount {mount} failed"),
            )
        };
        Notification::about_mount(event, severity, at, outcome, mount, summary)
    }

    /// A reload action ran for a critical secret change in `mount`.
    pub fn reload(
        mount: &str,
        action: &str,
        error: Option<&'static str>,
        at: DateTime<Utc>,
    ) -> Notification {
        let (event, severity, outcome, summary) = match error {
            None => (
                "reload_succeeded",
                Severity::Info,
                "succeeded",
                format!("{action} reload for a critical change in {mount} succeeded"),
            ),
            Some(kind) => (
                "reload_failed",
                Severity::Warning,
                "failed",
                format!("{action} reload for a critical change in {mount} failed ({kind})"),
            ),
        };
        Notification {
            error,
            action: Some(action.to_owned()),
            ..Notification::about_mount(event, severity, at, outcome, mount, summary)
        }
    }

    /// An event about a mount rather than a secret: every secret field empty.
    fn about_mount(
        event: &'static str,
        severity: Severity,
        at: DateTime<Utc>,
        outcome: &'static str,
        mount: &str,
        summary: String,
    ) -> Notification {
        Notification {
            event,
            severity,
            at,
            tenant: None,
            key: None,
            rotation: None,
            version: None,
            previous_version: None,
            outcome,
            error: None,
            mount: Some(mount.to_owned()),
            action: None,
            job: None,
            consumers: Vec::new(),
            summary,
        }
    }

    /// `tenant/key` when the event is about a secret.
    pub fn secret(&self) -> Option<String> {
        match (&self.tenant, &self.key) {
            (Some(t), Some(k)) => Some(format!("{t}/{k}")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ErrorKind, Trigger};
    use chrono::TimeZone;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap()
    }

    #[test]
    fn every_notice_kind_is_a_subscribable_event() {
        let s = SecretRef::new("t", "k").expect("valid");
        let notices = [
            Notice::Started {
                trigger: Trigger::Api,
                version: 2,
            },
            Notice::GraceEntered {
                version: 2,
                previous: 1,
                expires_at: at(),
            },
            Notice::GraceExtended {
                previous: 1,
                until: at(),
            },
            Notice::Succeeded { version: 2 },
            Notice::Expired {
                version: 1,
                forced: false,
            },
            Notice::Failed {
                version: 2,
                error: ErrorKind::Apply,
                retry_at: None,
            },
            Notice::RolledBack {
                version: 2,
                restored: 1,
            },
            Notice::Stuck {
                error: ErrorKind::Test,
            },
            Notice::TargetReapplied { version: 2 },
            Notice::ConsumersLate {
                version: 2,
                previous: 1,
                late: vec!["web-1".into()],
                gone: vec!["web-2".into()],
            },
            Notice::TargetVerifyFailed {
                version: 2,
                error: ErrorKind::Timeout,
                lost: false,
            },
            Notice::TargetVerifyFailed {
                version: 2,
                error: ErrorKind::Apply,
                lost: true,
            },
        ];
        for n in &notices {
            let note = Notification::from_notice(&s, RotationId(3), n, at());
            assert!(EVENT_KINDS.contains(&note.event), "{}", note.event);
            assert_eq!(note.secret().as_deref(), Some("t/k"));
        }
        let stuck = Notification::from_notice(&s, RotationId(3), &notices[7], at());
        assert_eq!(stuck.severity, Severity::Critical);
        assert_eq!(stuck.error, Some("test"));
        let late = Notification::from_notice(&s, RotationId(3), &notices[9], at());
        assert_eq!(late.consumers, vec!["web-1", "web-2"]);
        assert!(late.summary.contains("web-1") && late.summary.contains("web-2"));
        let unreachable = Notification::from_notice(&s, RotationId(3), &notices[10], at());
        assert_eq!(unreachable.severity, Severity::Warning);
        let locked_out = Notification::from_notice(&s, RotationId(3), &notices[11], at());
        assert_eq!(locked_out.severity, Severity::Critical);
        assert_eq!(locked_out.error, Some("apply"));
        for e in [
            Notification::watcher_health("/mnt/secrets", false, at()).event,
            Notification::watcher_health("/mnt/secrets", true, at()).event,
            Notification::reload("/mnt/secrets", "http", None, at()).event,
            Notification::reload("/mnt/secrets", "http", Some("timeout"), at()).event,
        ] {
            assert!(EVENT_KINDS.contains(&e), "{e}");
        }
    }

    #[test]
    fn severities_order_and_parse() {
        assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
        for s in [Severity::Info, Severity::Warning, Severity::Critical] {
            assert_eq!(Severity::parse(s.as_str()), Some(s));
        }
        assert_eq!(Severity::parse("loud"), None);
    }
}
