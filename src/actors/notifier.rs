//! The notifier actor: receives every lifecycle event and hands it to the channels whose
//! route takes it (`[[notify]]`: log, Slack-compatible webhook, signed generic webhook).
//!
//! It never waits for a receiver. Each HTTP channel has a bounded queue and a delivery task
//! of its own ([`crate::notify::channel::Delivery`]) that posts and retries with backoff;
//! the handler only `try_send`s, and an event that does not fit is dropped and counted
//! (`rotor_notifications_dropped_total{kind=<channel>}`). So a slow or dead receiver
//! delays nothing but its own channel, and never a rotation: rotation actors `cast` here.
//! The log channel writes inline (a log line does not block on a receiver).
//!
//! Senders look it up by name for each event ([`send`]) instead of keeping its
//! `ActorRef`, so a restarted notifier is found again. At shutdown it is drained (the
//! events rotation actors sent while stopping are still handled) and its queues close;
//! each delivery task finishes what is queued and exits, and the tree waits for that
//! ([`Deliveries::drain`]) within what is left of the shutdown timeout. An event the
//! notifier can no longer take is written to the log instead.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::domain::{RotationId, SecretRef};
use crate::machine::Notice;
use crate::metrics::{ChannelLabels, KindLabels, Metrics};
use crate::notify::channel::{self, Delivery, RetryPolicy, Sink};
use crate::notify::config::NotifyConfig;
use crate::notify::http::Poster;
use crate::notify::route::Route;
use crate::notify::{Notification, Severity};
use crate::watch::event::WatchEventKind;

/// Registry name of the notifier (after the tree's namespace).
pub const NAME: &str = "rotor.notifier";

pub enum NotifierMsg {
    /// A rotation lifecycle event, from a rotation actor.
    Event {
        secret: SecretRef,
        rotation: RotationId,
        notice: Notice,
        at: DateTime<Utc>,
    },
    /// A volume watcher event (`secret-changed`, `reload-required`, ...): the mount, the
    /// visible file name and a detail, never file content.
    Watcher {
        mount: String,
        event: WatchEventKind,
        file: Option<String>,
        detail: Option<String>,
        at: DateTime<Utc>,
    },
    /// Any other notification (watcher health, reload actions).
    Notify(Notification),
}

/// Sends `msg` to the notifier if it is running. While it restarts, the event is logged
/// here instead, so it is never silently lost.
pub fn send(namespace: &str, msg: NotifierMsg) {
    match ractor::registry::where_is(format!("{namespace}{NAME}")) {
        Some(cell) => {
            let actor: ActorRef<NotifierMsg> = cell.into();
            match actor.cast(msg) {
                Ok(()) => {}
                // Stopping (drained) or restarting: the log still gets the event.
                Err(MessagingErr::SendErr(msg)) => {
                    if let Some(n) = notification(msg) {
                        channel::log("fallback", &n);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "notifier unavailable; event not delivered"),
            }
        }
        None => match notification(msg) {
            Some(n) => channel::log("fallback", &n),
            None => tracing::warn!("notifier not running; watcher event not delivered"),
        },
    }
}

/// Sends a watcher or reload notification (see [`Notification::watcher_health`] and
/// [`Notification::reload`]).
pub fn notify(namespace: &str, n: Notification) {
    send(namespace, NotifierMsg::Notify(n));
}

/// What the channels send for a message. Watcher events other than health changes are
/// logged and counted only (`None`): every secret-changed event of a 10,000-file swap
/// must not become a webhook call.
fn notification(msg: NotifierMsg) -> Option<Notification> {
    match msg {
        NotifierMsg::Event {
            secret,
            rotation,
            notice,
            at,
        } => Some(Notification::from_notice(&secret, rotation, &notice, at)),
        NotifierMsg::Notify(n) => Some(n),
        NotifierMsg::Watcher {
            mount, event, at, ..
        } => match event {
            WatchEventKind::HealthCheckFailed => {
                Some(Notification::watcher_health(&mount, false, at))
            }
            WatchEventKind::HealthCheckSuccess => {
                Some(Notification::watcher_health(&mount, true, at))
            }
            _ => None,
        },
    }
}

pub struct Notifier;

enum Out {
    Log,
    Queue {
        tx: mpsc::Sender<Notification>,
        capacity: usize,
        /// Queued or being delivered; see [`Deliveries::spawn`].
        pending: Arc<AtomicUsize>,
    },
}

struct Channel {
    name: String,
    route: Route,
    out: Out,
}

pub struct NotifierState {
    metrics: Metrics,
    channels: Vec<Channel>,
}

impl Actor for Notifier {
    type Msg = NotifierMsg;
    type State = NotifierState;
    type Arguments = (Metrics, Vec<NotifyConfig>, Deliveries);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (metrics, configs, deliveries): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut channels = Vec::new();
        if configs.is_empty() {
            metrics.init_channel("log");
            channels.push(Channel {
                name: "log".into(),
                route: Route::default(),
                out: Out::Log,
            });
        }
        for c in configs {
            let route = Route {
                events: c.events.clone(),
                min_severity: c.min_severity,
            };
            let out = match c.channel.build(&c.name)? {
                None => Out::Log,
                Some(sink) => start_delivery(&c, sink, &metrics, &deliveries)?,
            };
            for outcome in ["delivered", "retried", "failed", "dropped"] {
                let _ = metrics
                    .notification_deliveries_total
                    .get_or_create(&ChannelLabels {
                        channel: c.name.clone(),
                        outcome: outcome.to_owned(),
                    });
            }
            let _ = metrics
                .notifications_dropped_total
                .get_or_create(&KindLabels {
                    kind: c.name.clone(),
                });
            channels.push(Channel {
                name: c.name.clone(),
                route,
                out,
            });
        }
        Ok(NotifierState { metrics, channels })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let NotifierMsg::Watcher {
            mount,
            event,
            file,
            detail,
            at,
        } = &msg
        {
            tracing::info!(%mount, event = event.as_str(), file, detail, %at, "watcher event");
        }
        let Some(n) = notification(msg) else {
            return Ok(());
        };
        state
            .metrics
            .notifications_total
            .get_or_create(&KindLabels {
                kind: n.event.to_owned(),
            })
            .inc();
        for ch in &state.channels {
            if !ch.route.takes(&n) {
                continue;
            }
            match &ch.out {
                Out::Log => {
                    channel::log(&ch.name, &n);
                    state
                        .metrics
                        .notification_deliveries_total
                        .get_or_create(&ChannelLabels {
                            channel: ch.name.clone(),
                            outcome: "delivered".into(),
                        })
                        .inc();
                }
                Out::Queue {
                    tx,
                    capacity,
                    pending,
                } => {
                    // Counted before it is queued: the delivery task may finish it first.
                    pending.fetch_add(1, Ordering::AcqRel);
                    let queued = tx.try_send(n.clone());
                    match queued {
                        Ok(()) => {
                            state
                                .metrics
                                .notification_queue_length
                                .get_or_create(&KindLabels {
                                    kind: ch.name.clone(),
                                })
                                .set((capacity - tx.capacity()) as i64);
                        }
                        Err(_) => {
                            // Full (or its task ended): drop rather than wait.
                            pending.fetch_sub(1, Ordering::AcqRel);
                            let m = &state.metrics;
                            m.notifications_dropped_total
                                .get_or_create(&KindLabels {
                                    kind: ch.name.clone(),
                                })
                                .inc();
                            m.notification_deliveries_total
                                .get_or_create(&ChannelLabels {
                                    channel: ch.name.clone(),
                                    outcome: "dropped".into(),
                                })
                                .inc();
                            let level_warn = n.severity >= Severity::Warning;
                            if level_warn {
                                tracing::warn!(channel = %ch.name, event = n.event, summary = %n.summary, "notification queue full; event dropped");
                            } else {
                                tracing::debug!(channel = %ch.name, event = n.event, "notification queue full; event dropped");
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// One delivery task and what it still has to do.
struct Tracked {
    channel: String,
    pending: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

/// The delivery tasks of one tree (every incarnation of its notifier), so that shutdown
/// lets them finish what is queued (within what is left of `runtime.shutdown_timeout`)
/// instead of losing it when the process exits, and says how many were lost when time
/// runs out.
#[derive(Clone, Default)]
pub struct Deliveries {
    tasks: Arc<Mutex<Vec<Tracked>>>,
}

/// What [`Deliveries::drain`] left behind: undelivered events by channel.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Undelivered(pub Vec<(String, usize)>);

impl Deliveries {
    /// Starts `delivery` on `queue`. Returns the channel's pending count: the sender adds
    /// one before queueing an event (and takes it back if the event does not fit).
    pub fn spawn(
        &self,
        delivery: Delivery,
        queue: mpsc::Receiver<Notification>,
    ) -> Arc<AtomicUsize> {
        let pending = Arc::new(AtomicUsize::new(0));
        let channel = delivery.name.clone();
        let task = tokio::spawn(delivery.run_counted(queue, pending.clone()));
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        // Tasks of a previous notifier incarnation end once their queue is empty.
        tasks.retain(|t| !t.task.is_finished());
        tasks.push(Tracked {
            channel,
            pending: pending.clone(),
            task,
        });
        pending
    }

    /// Waits until every task has delivered what is queued (their queues close when the
    /// notifier stops) or `deadline` passes; then aborts what is left and reports, by
    /// channel, how many events it still held.
    pub async fn drain(&self, deadline: Instant) -> Undelivered {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        let mut lost = Vec::new();
        for mut t in tasks {
            if tokio::time::timeout_at(deadline, &mut t.task)
                .await
                .is_err()
            {
                t.task.abort();
                let n = t.pending.load(Ordering::Acquire);
                if n > 0 {
                    lost.push((t.channel, n));
                }
            }
        }
        Undelivered(lost)
    }
}

/// Starts the delivery task of an HTTP channel; returns its queue.
fn start_delivery(
    c: &NotifyConfig,
    sink: Sink,
    metrics: &Metrics,
    deliveries: &Deliveries,
) -> Result<Out, ActorProcessingErr> {
    let poster = Poster::new(c.timeout, c.ca_file.as_deref(), c.proxy.as_ref())
        .map_err(|e| format!("notify channel {}: {e}", c.name))?;
    let (tx, rx) = mpsc::channel(c.queue_capacity);
    let delivery = Delivery {
        name: c.name.clone(),
        sink,
        poster,
        retry: RetryPolicy::new(c.max_attempts, c.retry_backoff, c.retry_backoff_max)
            .map_err(|e| format!("notify channel {}: {e}", c.name))?,
        metrics: metrics.clone(),
    };
    let pending = deliveries.spawn(delivery, rx);
    Ok(Out::Queue {
        tx,
        capacity: c.queue_capacity,
        pending,
    })
}
