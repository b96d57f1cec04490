//! Watcher events. They name a mount, a visible file and a keyed fingerprint, never
//! content: they go to logs, notification channels and metrics.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};

/// What happened, as a bounded label (`rotor_watcher_events_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WatchEventKind {
    Started,
    Stopped,
    SecretChanged,
    SecretDeleted,
    ReloadRequired,
    HealthCheckSuccess,
    HealthCheckFailed,
    Error,
}

impl WatchEventKind {
    pub const ALL: [WatchEventKind; 8] = [
        Self::Started,
        Self::Stopped,
        Self::SecretChanged,
        Self::SecretDeleted,
        Self::ReloadRequired,
        Self::HealthCheckSuccess,
        Self::HealthCheckFailed,
        Self::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Stopped => "stopped",
            Self::SecretChanged => "secret-changed",
            Self::SecretDeleted => "secret-deleted",
            Self::ReloadRequired => "reload-required",
            Self::HealthCheckSuccess => "health-check-success",
            Self::HealthCheckFailed => "health-check-failed",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for WatchEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One watcher event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub mount: PathBuf,
    pub kind: WatchEventKind,
    /// The visible file name, for per-file events.
    pub file: Option<String>,
    /// The keyed fingerprint of the file's new content (`secret-changed`).
    pub fingerprint: Option<String>,
    /// A human-readable detail (an error, the files behind a reload). Never content.
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// Receives every watcher event as it is emitted, in the watcher's task (tests and
/// benchmarks observe events here). Must be cheap and must not block.
pub type EventSink = Arc<dyn Fn(&WatchEvent) + Send + Sync>;
