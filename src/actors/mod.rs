//! Everything in rotor that spawns a task or an actor lives here (style.md: only `actors/`
//! spawns anything).
//!
//! # Layout
//!
//! - [`supervisor`]: the OTP-style one-for-one [`supervisor::Supervisor`] (restart types,
//!   intensity, backoff, escalation, ordered shutdown) used at every level of the tree.
//! - [`root`]: [`root::spawn_root`] starts the root supervisor and reports how it ended, so
//!   `main` can exit non-zero when it gives up.
//! - [`timer`]: [`timer::TimerGuard`], a delayed message that is cancelled with its owner.
//! - [`panic_hook`]: [`panic_hook::install_quiet_panic_hook`], one log line per panic, no
//!   backtrace.
//! - [`tree`]: rotor's own tree (metrics, notifier, watchers, rotations) built from config.
//! - [`rotation`]: one actor per tenant secret, driving the state machine.
//! - [`scheduler`]: the one timer of all rotation actors (a deadline map and one task).
//! - [`metrics`]: the metrics actor (encoding, fleet gauges).
//! - [`notifier`]: the notifier actor (lifecycle events to their channels).
//! - [`admin`]: the [`crate::api::Admin`] backend, answering the HTTP API through actors.
//! - [`vault_token`]: renews the Vault store's token (re-login on failure).

pub mod admin;
pub mod metrics;
pub mod notifier;
pub mod panic_hook;
pub mod publisher;
pub mod root;
pub mod rotation;
pub mod scheduler;
pub mod supervisor;
pub mod timer;
pub mod tree;
pub mod vault_token;
pub mod watcher;
