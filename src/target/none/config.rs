//! `target = { type = "none", ... }` (or no `target` at all): the keys of the store-only
//! target and the [`NoneTarget`] built from them.
//!
//! `delay` simulates a slow target, for demos. With the `test-util` cargo feature the
//! table also takes the failure hook tests drive the real binary with: `fail` names steps
//! that fail, and `fail_file` makes them fail only while that file exists. Without the
//! feature those are unknown keys, so a release build cannot be told to fail on purpose.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::NoneTarget;
use crate::config::{Field, Ty, Validator, f, join};
use crate::domain::SecretRef;
use crate::target::{Target, ValueReader};

/// The keys a none target takes besides `type`.
#[cfg(not(feature = "test-util"))]
pub(crate) const FIELDS: &[Field] = &[f("delay", Ty::Duration)];
/// The keys a none target takes besides `type`, failure hooks included.
#[cfg(feature = "test-util")]
pub(crate) const FIELDS: &[Field] = &[
    f("delay", Ty::Duration),
    f("fail", Ty::StrList),
    f("fail_file", Ty::Str),
];

/// Steps the failure hook can make fail.
#[cfg(feature = "test-util")]
const FAILABLE_STEPS: &[&str] = &["apply", "test", "promote", "revoke"];

/// The keys as written (every one optional and spanned; see [`crate::config`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNone {
    /// Simulated latency of every step.
    delay: Option<Spanned<String>>,
    /// Steps that fail.
    #[cfg(feature = "test-util")]
    fail: Option<Spanned<Vec<Spanned<String>>>>,
    /// `fail` applies only while this file exists.
    #[cfg(feature = "test-util")]
    fail_file: Option<Spanned<String>>,
}

/// Store only: nothing outside rotor checks the value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoneConfig {
    /// Every step takes this long (a simulated slow target); zero by default.
    pub delay: Duration,
    /// Steps that fail (`apply`, `test`, `promote`, `revoke`), always or only while
    /// `fail_file` exists.
    #[cfg(feature = "test-util")]
    pub fail: Vec<String>,
    #[cfg(feature = "test-util")]
    pub fail_file: Option<std::path::PathBuf>,
}

impl NoneConfig {
    /// Checks `raw` (the table at `path`).
    pub(crate) fn validate(v: &mut Validator<'_, '_>, path: &str, raw: &RawNone) -> NoneConfig {
        let delay = v
            .duration(&join(path, "delay"), raw.delay.as_ref())
            .ok()
            .flatten()
            .unwrap_or_default();
        #[cfg(feature = "test-util")]
        {
            let (fail, fail_file) = failures(v, path, raw);
            NoneConfig {
                delay,
                fail,
                fail_file,
            }
        }
        #[cfg(not(feature = "test-util"))]
        NoneConfig { delay }
    }

    /// The target this configuration describes.
    pub fn build(&self, secret: &SecretRef, _reader: &ValueReader) -> Arc<dyn Target> {
        #[cfg(feature = "test-util")]
        return Arc::new(NoneTarget::with_failures(
            secret.clone(),
            self.delay,
            &self.fail,
            self.fail_file.clone(),
        ));
        #[cfg(not(feature = "test-util"))]
        Arc::new(NoneTarget::with_delay(secret.clone(), self.delay))
    }
}

/// `fail` and `fail_file`.
#[cfg(feature = "test-util")]
fn failures(
    v: &mut Validator<'_, '_>,
    path: &str,
    raw: &RawNone,
) -> (Vec<String>, Option<std::path::PathBuf>) {
    let mut fail = Vec::new();
    for (j, step) in raw.fail.iter().flat_map(|f| f.get_ref().iter()).enumerate() {
        if FAILABLE_STEPS.contains(&step.get_ref().as_str()) {
            fail.push(step.get_ref().clone());
        } else {
            v.diag.value(
                step.span(),
                &format!("{path}.fail[{j}]"),
                format!(
                    "unknown step; expected one of: {}",
                    FAILABLE_STEPS.join(", ")
                ),
            );
        }
    }
    let fail_file = raw
        .fail_file
        .as_ref()
        .map(|f| std::path::PathBuf::from(f.get_ref()));
    // A fail_file alone means "apply fails while the file exists".
    if fail_file.is_some() && fail.is_empty() && raw.fail.is_none() {
        fail.push("apply".to_owned());
    }
    (fail, fail_file)
}
