//! The delivery loop of one channel. The notifier actor puts events on the channel's
//! bounded queue (never waiting); this loop takes them off one at a time, renders, posts,
//! and retries with backoff. A slow or dead receiver therefore only fills its own queue,
//! after which the actor drops (and counts) what does not fit.
//!
//! Metrics: `rotor_notification_deliveries_total{channel, outcome}` with outcome
//! `delivered`, `retried` (one per failed attempt that is retried), `failed` (gave up or
//! refused) and `dropped` (counted by the actor, with `rotor_notifications_dropped_total`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::Uri;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::http::{Attempt, Poster};
use super::{Notification, Severity, slack, webhook};
use crate::backoff::{ExponentialBackoff, InvalidBackoff};
use crate::metrics::{ChannelLabels, Metrics};

/// Where a channel delivers. The URL and key are credentials: they are never logged.
pub enum Sink {
    Slack { uri: Uri },
    Webhook { uri: Uri, key: Zeroizing<Vec<u8>> },
}

impl Sink {
    /// The channel's `type` (`slack` or `webhook`), for logs.
    pub fn type_name(&self) -> &'static str {
        match self {
            Sink::Slack { .. } => "slack",
            Sink::Webhook { .. } => "webhook",
        }
    }
}

/// How a channel retries a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included (at least 1).
    pub max_attempts: u32,
    /// The delay before each retry.
    pub backoff: ExponentialBackoff,
}

impl RetryPolicy {
    /// Up to `max_attempts` attempts; the delay before retry `n` is drawn from `[d/2, d]`
    /// where `d = initial * 2^(n-1)`, and is `max` once the doubling reaches it
    /// ([`ExponentialBackoff::equal_jitter`]): retries of many channels that failed together
    /// spread out, and none comes sooner than half the nominal delay.
    pub fn new(
        max_attempts: u32,
        initial: Duration,
        max: Duration,
    ) -> Result<Self, InvalidBackoff> {
        Ok(Self {
            max_attempts,
            backoff: ExponentialBackoff::equal_jitter(initial, max)?,
        })
    }
}

/// One HTTP channel's delivery state.
pub struct Delivery {
    /// The channel's name (`[[notify]] name`), the `channel` label of its metrics.
    pub name: String,
    pub sink: Sink,
    pub poster: Poster,
    pub retry: RetryPolicy,
    pub metrics: Metrics,
}

impl Delivery {
    /// Delivers every event from `queue` until the queue is closed and empty.
    pub async fn run(self, queue: mpsc::Receiver<Notification>) {
        self.run_counted(queue, Arc::default()).await
    }

    /// [`Self::run`], taking one off `pending` as each event is done with (delivered or
    /// given up); the sender adds one before it queues an event.
    pub async fn run_counted(
        self,
        mut queue: mpsc::Receiver<Notification>,
        pending: Arc<AtomicUsize>,
    ) {
        let queued = self
            .metrics
            .notification_queue_length
            .get_or_create(&crate::metrics::KindLabels {
                kind: self.name.clone(),
            })
            .clone();
        while let Some(n) = queue.recv().await {
            queued.set(queue.len() as i64);
            self.deliver(&n).await;
            pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn count(&self, outcome: &str) {
        self.metrics
            .notification_deliveries_total
            .get_or_create(&ChannelLabels {
                channel: self.name.clone(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Delivers one event, retrying up to the policy's attempts. Returns whether it was
    /// delivered.
    pub async fn deliver(&self, n: &Notification) -> bool {
        let max = self.retry.max_attempts.max(1);
        for attempt in 1..=max {
            let outcome = match &self.sink {
                Sink::Slack { uri } => {
                    let body = serde_json::to_vec(&slack::payload(n)).unwrap_or_default();
                    self.poster.post(uri, &[], body).await
                }
                Sink::Webhook { uri, key } => {
                    let body = webhook::body(n);
                    // Signed per attempt: a retry minutes later carries a fresh timestamp.
                    let signature = webhook::sign(key, chrono::Utc::now().timestamp(), &body);
                    let headers = [
                        (webhook::SIGNATURE_HEADER, signature),
                        (webhook::EVENT_HEADER, n.event.to_owned()),
                    ];
                    self.poster.post(uri, &headers, body).await
                }
            };
            match outcome {
                Attempt::Delivered => {
                    self.count("delivered");
                    return true;
                }
                Attempt::Reject { reason } => {
                    self.count("failed");
                    tracing::warn!(channel = %self.name, sink = self.sink.type_name(), event = n.event, %reason, "notification refused by its receiver; not retried");
                    return false;
                }
                Attempt::Retry { reason, after } => {
                    if attempt == max {
                        self.count("failed");
                        tracing::warn!(channel = %self.name, sink = self.sink.type_name(), event = n.event, %reason, attempts = max, "notification not delivered; giving up");
                        return false;
                    }
                    self.count("retried");
                    let backoff = self.retry.backoff;
                    let delay = backoff.delay(attempt, rand::random::<f64>());
                    // A receiver's Retry-After is honoured up to the policy's maximum.
                    let delay = after.map_or(delay, |a| a.min(backoff.max()).max(delay));
                    tracing::debug!(channel = %self.name, event = n.event, %reason, attempt, delay_ms = delay.as_millis() as u64, "notification delivery failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        false
    }
}

/// The log channel: one structured line per event, at a level following its severity.
pub fn log(channel: &str, n: &Notification) {
    let secret = n.secret().unwrap_or_default();
    let version = n.version.map(|v| v as i64).unwrap_or(-1);
    match n.severity {
        Severity::Info => {
            tracing::info!(channel, event = n.event, severity = n.severity.as_str(), %secret, rotation = n.rotation, version, outcome = n.outcome, error = n.error, mount = n.mount.as_deref(), summary = %n.summary, "notification")
        }
        Severity::Warning => {
            tracing::warn!(channel, event = n.event, severity = n.severity.as_str(), %secret, rotation = n.rotation, version, outcome = n.outcome, error = n.error, mount = n.mount.as_deref(), summary = %n.summary, "notification")
        }
        Severity::Critical => {
            tracing::error!(channel, event = n.event, severity = n.severity.as_str(), %secret, rotation = n.rotation, version, outcome = n.outcome, error = n.error, mount = n.mount.as_deref(), summary = %n.summary, "notification")
        }
    }
}
