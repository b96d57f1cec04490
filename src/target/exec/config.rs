//! `target = { type = "exec", ... }`: the keys of a target that runs a user's commands,
//! their checks, and the [`ExecTarget`] built from them.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Commands, ExecTarget};
use crate::config::{Field, Ty, Validator, f, join};
use crate::domain::SecretRef;
use crate::target::config::DEFAULT_TARGET_TIMEOUT;
use crate::target::{Target, ValueReader};

/// The keys an exec target takes besides `type`.
pub(crate) const FIELDS: &[Field] = &[
    f("apply", Ty::StrList),
    f("test", Ty::StrList),
    f("promote", Ty::StrList),
    f("revoke", Ty::StrList),
    f("restore", Ty::StrList),
    f("timeout", Ty::Duration),
    f("env", Ty::StrList),
];

type Argv = Option<Spanned<Vec<Spanned<String>>>>;

/// The keys as written (every one optional and spanned; see [`crate::config`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawExec {
    /// argv of each step.
    apply: Argv,
    test: Argv,
    promote: Argv,
    revoke: Argv,
    restore: Argv,
    /// Longest a step may take.
    timeout: Option<Spanned<String>>,
    /// Names of rotor's environment variables the steps get.
    env: Option<Spanned<Vec<Spanned<String>>>>,
}

/// A user's commands per step (argv lists), the value on stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecConfig {
    pub commands: Commands,
    pub timeout: Duration,
    /// Variables of rotor's environment passed to every step besides `PATH`, `HOME` and
    /// `LANG` (see [`crate::hook`]).
    pub env: Vec<String>,
}

impl ExecConfig {
    /// Checks `t` (the table at `path`, spanning `span`).
    pub(crate) fn validate(
        v: &mut Validator<'_, '_>,
        path: &str,
        span: Range<usize>,
        t: &RawExec,
    ) -> ExecConfig {
        let argv = |v: &mut Validator<'_, '_>, key: &str, raw: &Argv| {
            let list = raw.as_ref()?;
            if list.get_ref().is_empty() || list.get_ref()[0].get_ref().trim().is_empty() {
                v.diag.value(
                    list.span(),
                    &join(path, key),
                    "must name a program: [\"/path/to/program\", \"arg\", ...]",
                );
                return None;
            }
            Some(
                list.get_ref()
                    .iter()
                    .map(|a| a.get_ref().clone())
                    .collect::<Vec<_>>(),
            )
        };
        let commands = Commands {
            apply: argv(v, "apply", &t.apply),
            test: argv(v, "test", &t.test),
            promote: argv(v, "promote", &t.promote),
            revoke: argv(v, "revoke", &t.revoke),
            restore: argv(v, "restore", &t.restore),
        };
        if commands.apply.is_none()
            && commands.test.is_none()
            && t.apply.is_none()
            && t.test.is_none()
        {
            v.missing(
                Some(span.clone()),
                &join(path, "apply"),
                "an exec target needs at least `apply` or `test`",
            );
        }
        ExecConfig {
            commands,
            timeout: v.duration_or(
                &join(path, "timeout"),
                t.timeout.as_ref(),
                DEFAULT_TARGET_TIMEOUT,
            ),
            env: v.env_names(&join(path, "env"), t.env.as_ref()),
        }
    }

    /// The target this configuration describes; `reader` is how it reads stored values.
    pub fn build(&self, secret: &SecretRef, reader: &ValueReader) -> Arc<dyn Target> {
        Arc::new(
            ExecTarget::new(
                secret.clone(),
                self.commands.clone(),
                self.timeout,
                reader.clone(),
            )
            .with_env(self.env.clone()),
        )
    }
}
