//! rotor's actors. Everything in rotor that spawns a task or an actor lives here or in
//! [`crate::supervisor`] (the supervisor, timer and task guards these actors are built on), so
//! the rest of the crate stays plain functions that tests call directly.
//!
//! # Layout
//!
//! - [`root`]: [`root::spawn_root`] starts the root supervisor and reports how it ended, so
//!   `main` can exit non-zero when it gives up.
//! - [`panic_hook`]: [`panic_hook::install_quiet_panic_hook`], one log line per panic, no
//!   backtrace.
//! - [`tree`]: rotor's own tree (metrics, notifier, watchers, rotations) built from config.
//! - [`rotation`]: one actor per tenant secret, driving the state machine.
//! - [`bootstrap`]: the bulk path of a first start: new store-only secrets' first versions
//!   in batched transactions, before their rotation actors start.
//! - [`rotation`]: one actor per tenant secret that has work, driving the state machine;
//!   started on demand ([`rotation::RotationContext::wake`]), stopped when idle.
//! - [`managed`]: the managed secrets by name, and their rotation specs built on wake.
//! - [`watcher`]: one actor per `[[mounts]]` path: inotify or polling, debounce, reloads.
//! - [`publisher`]: one actor per `[[publish]]` directory, writing current values the way
//!   kubelet does.
//! - [`scheduler`]: the one timer of all rotation actors (a deadline map and one task).
//! - [`metrics`]: the metrics actor (encoding, fleet gauges).
//! - [`notifier`]: the notifier actor (lifecycle events to their channels).
//! - [`consumers`]: agents' reports (which version each workload pod holds) and the fleet's
//!   reload permits, kept in the store as records.
//! - [`jobs`]: emergency rotation jobs (`rotate-all`): rate, concurrency, progress in
//!   the store, resumed after a restart.
//! - [`admin`]: the [`crate::api::Admin`] backend, answering the HTTP API through actors.
//! - [`vault_token`]: renews the Vault store's token (re-login on failure).

pub mod admin;
pub mod bootstrap;
pub mod consumers;
pub mod jobs;
pub mod managed;
pub mod metrics;
pub mod notifier;
pub mod panic_hook;
pub mod publisher;
pub mod root;
pub mod rotation;
pub mod scheduler;
pub mod tree;
pub mod vault_token;
pub mod watcher;
