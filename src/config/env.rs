//! Environment overrides from the seed, read through a lookup function so that tests need
//! no process environment:
//!
//! - `SECRETS_MOUNT_PATH`: the mount path; adds a mount with default settings when the file
//!   has none, otherwise replaces the first mount's path.
//! - `SECRETS_VOLUME_WATCH_ENABLED`: `true` or `false`, nothing else.
//! - `SECRETS_WATCH_POLL_INTERVAL`: milliseconds, an integer above zero; sets the poll
//!   interval of every mount (poll fallback for filesystems without inotify).
//! - `ROTOR_ADVERTISE_URL`: `[ha] advertise_url` when the file does not set it (a pod
//!   learns its IP from the downward API, which a shared file cannot hold).
//!
//! The variables are checked on their own, before the file's values are known, so that a
//! bad variable is reported together with the file's problems.

use std::path::PathBuf;
use std::time::Duration;

use super::error::Diagnostics;
use super::model::{Config, MountConfig};

pub const MOUNT_PATH: &str = "SECRETS_MOUNT_PATH";
pub const WATCH_ENABLED: &str = "SECRETS_VOLUME_WATCH_ENABLED";
pub const POLL_INTERVAL: &str = "SECRETS_WATCH_POLL_INTERVAL";
pub const ADVERTISE_URL: &str = "ROTOR_ADVERTISE_URL";

/// Defaults of a mount that only the environment declares.
pub(super) const DEFAULT_DEBOUNCE: Duration = Duration::from_secs(1);
pub(super) const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// The checked values of the variables that were set.
#[derive(Debug, Default)]
pub(super) struct EnvOverrides {
    mount_path: Option<PathBuf>,
    watch_enabled: Option<bool>,
    poll_interval: Option<Duration>,
    advertise_url: Option<String>,
}

/// Reads and checks the variables, reporting bad ones to `diag`.
pub(super) fn read(
    env: &dyn Fn(&str) -> Option<String>,
    diag: &mut Diagnostics<'_>,
) -> EnvOverrides {
    let mut out = EnvOverrides::default();
    let key = |name: &str| format!("env {name}");
    if let Some(value) = env(MOUNT_PATH) {
        if value.trim().is_empty() {
            diag.detached(
                &key(MOUNT_PATH),
                "is empty; set it to the mount directory, e.g. /mnt/secrets, or unset it",
                Some(format!("{value:?}")),
            );
        } else {
            out.mount_path = Some(PathBuf::from(value));
        }
    }
    if let Some(value) = env(WATCH_ENABLED) {
        match value.as_str() {
            "true" => out.watch_enabled = Some(true),
            "false" => out.watch_enabled = Some(false),
            _ => diag.detached(
                &key(WATCH_ENABLED),
                "must be `true` or `false`",
                Some(format!("{value:?}")),
            ),
        }
    }
    if let Some(value) = env(POLL_INTERVAL) {
        match value.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => out.poll_interval = Some(Duration::from_millis(ms)),
            _ => diag.detached(
                &key(POLL_INTERVAL),
                "must be a whole number of milliseconds greater than zero, e.g. 5000",
                Some(format!("{value:?}")),
            ),
        }
    }
    if let Some(value) = env(ADVERTISE_URL) {
        match super::validate::check_advertise_url(&value) {
            Ok(url) => out.advertise_url = Some(url),
            Err(message) => diag.detached(&key(ADVERTISE_URL), message, Some(format!("{value:?}"))),
        }
    }
    out
}

/// Applies checked overrides to a valid config.
pub(super) fn apply(config: &mut Config, overrides: EnvOverrides) {
    // Validation leaves the advertised URL empty when the file does not set one: the
    // environment's comes next, then one built from the listen address.
    if config.ha.advertise_url.is_empty() {
        config.ha.advertise_url = overrides
            .advertise_url
            .unwrap_or_else(|| format!("http://{}", config.server.listen));
    }
    if let Some(path) = overrides.mount_path {
        match config.mounts.first_mut() {
            Some(first) => first.path = path,
            None => config.mounts.push(MountConfig {
                path,
                debounce: DEFAULT_DEBOUNCE,
                poll_interval: None,
                health_check_interval: DEFAULT_HEALTH_CHECK_INTERVAL,
                critical: Vec::new(),
                reload: None,
                files: Default::default(),
            }),
        }
    }
    if let Some(enabled) = overrides.watch_enabled {
        config.watch.enabled = enabled;
    }
    if let Some(every) = overrides.poll_interval {
        for mount in &mut config.mounts {
            mount.poll_interval = Some(every);
        }
    }
}
