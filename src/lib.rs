//! rotor: a supervised secret-rotation and secret-volume-watching service.
//!
//! # Layout
//!
//! - [`domain`]: shared nouns (secret refs, versions, labels, rotation ids, history records).
//! - [`duration`]: humane durations (`"90d"`, `"24h"`, `"1s"`) for configuration.
//! - [`config`]: TOML policy files, parsed raw then validated, every error at once.
//! - [`schedule`]: pure schedule maths (interval, cron, windows, jitter, next-due).
//! - [`backoff`]: the one exponential backoff (min, max, jitter drawn by the caller).
//! - [`machine`]: the pure rotation state machine, `step(state, event, now)`.
//! - [`ha`]: high availability: which replica leads (the election publishes into it), and
//!   what a replica that does not lead answers reads with (`ha::follower`).
//! - [`generator`]: CSPRNG secret generators and the zeroizing [`generator::SecretValue`].
//! - [`store`]: the [`store::Store`] trait, the encrypted embedded (redb) backend, the Vault
//!   KV v2 backend and the secret read cache.
//! - [`target`]: systems that check a secret (`none`, `postgres`, `redis`, `jwks`, `exec`,
//!   `webhook`), each with its configuration beside it.
//! - [`metrics`]: the Prometheus registry and metric handles.
//! - [`notify`]: notifications: the event model, routing, Slack/webhook payloads, signing,
//!   and the delivery loop of one channel.
//! - [`clock`]: system or tokio-driven "now" (paused time in tests).
//! - [`publish`]: where rotor publishes current versions (`[[publish]]` directories).
//! - [`watch`]: secret volume watching without actors: scans, diffs, reload actions,
//!   kubelet's atomic writer.
//! - [`supervisor`]: the OTP-style one-for-one supervisor on ractor, and the guards that tie
//!   timers and tasks to the actor holding them.
//! - [`status`]: the status board, the latest state of every secret for the API and gauges.
//! - [`http_client`]: the one builder of outgoing HTTP clients.
//! - [`hook`]: what a child process rotor starts gets: a clean environment, a bounded stderr.
//! - [`actors`]: everything that spawns: rotor's tree, the rotation, watcher, publisher,
//!   notifier, metrics and admin actors.
//! - [`api`]: the admin HTTP API over an [`api::Admin`] backend.
//! - [`agent`]: `rotor agent`, the sidecar: watches a pod's mounts with the same watcher,
//!   reloads, and reports versions to rotor (with reload permits).
//! - [`cli`]: the `rotor` command line.
//! - [`process`]: process hardening at start-up (no core dumps).
//! - [`redact`]: masking runs of a secret value (raw, base64, hex) out of hook output.
//! - `testing` (tests and the `test-util` feature only): the one `eventually` wait.

pub mod actors;
pub mod agent;
pub mod api;
pub mod backoff;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod duration;
pub mod generator;
pub mod ha;
pub mod hook;
pub mod http_client;
pub mod machine;
pub mod metrics;
pub mod notify;
pub mod process;
pub mod publish;
pub mod redact;
pub mod schedule;
pub mod status;
pub mod store;
pub mod supervisor;
pub mod target;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod watch;
