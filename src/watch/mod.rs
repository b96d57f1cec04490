//! Secret volume watching, without actors: what a mount directory holds, what changed,
//! which files are critical, how a workload is told to reload, and how rotor itself writes
//! a directory the way kubelet does. The watcher actor ([`crate::actors::watcher`]) and the
//! publisher actor ([`crate::actors::publisher`]) drive these pieces; nothing here spawns a
//! task, holds an `ActorRef` or knows the store.
//!
//! A kubelet or Secrets Store CSI mount is updated by an atomic swap (a new `..<timestamp>`
//! directory, a `..data_tmp` symlink renamed over `..data`, the old directory removed); the
//! visible files are symlinks through `..data` and are never written. So the watcher
//! watches the directory, rescans it on any relevant event, and compares keyed
//! fingerprints: a swap that changes nothing reports nothing.
//!
//! # Layout
//!
//! - [`scan`]: read a mount into a [`scan::Snapshot`] of fingerprints (pinned to one
//!   `..data` target, retried if a swap lands mid-scan) and diff two snapshots.
//! - [`event`]: the watcher events (`secret-changed`, `reload-required`, ...).
//! - [`glob`]: `critical` patterns on visible file names.
//! - [`reload`]: run a reload action (HTTP request, signal, command).
//! - [`limiter`]: the global token bucket that rate limits reloads.
//! - [`atomic`]: kubelet's atomic writer, for `[[publish]]`.
//! - [`mountinfo`]: `/proc/self/mountinfo` parsing, to warn about subPath mounts.
//! - [`state`]: last-seen fingerprints persisted per mount, so a restart fires nothing for
//!   files that did not change while rotor was down.
//! - [`mapping`]: which managed secret a visible file holds.

pub mod atomic;
pub mod event;
pub mod glob;
pub mod limiter;
pub mod mapping;
pub mod mountinfo;
pub mod reload;
pub mod scan;
pub mod state;

use std::sync::Arc;

/// The keyed fingerprint of a value: the store's, so that a mounted file's fingerprint
/// equals the fingerprint the store recorded for the version it holds.
pub type Fingerprinter = Arc<dyn Fn(&[u8]) -> String + Send + Sync>;
