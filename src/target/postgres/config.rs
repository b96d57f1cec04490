//! `target = { type = "postgres", ... }`: the keys of a PostgreSQL target, their checks,
//! and the [`PostgresTarget`] built from them.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::{PostgresTarget, Strategy};
use crate::config::{Field, Policy, Ty, Validator, f, join};
use crate::domain::SecretRef;
use crate::duration::format_duration;
use crate::target::{Target, ValueReader};

/// PostgreSQL truncates identifiers longer than this.
const MAX_ROLE_LEN: usize = 63;

/// The keys a postgres target takes besides `type`.
pub(crate) const FIELDS: &[Field] = &[
    f("admin_url_file", Ty::Str),
    f("strategy", Ty::Str),
    f("roles", Ty::StrList),
    f("acknowledge_no_grace", Ty::Bool),
    f("terminate_sessions", Ty::Bool),
];

/// The keys as written (every one optional and spanned; see [`crate::config`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPostgres {
    /// File holding the admin connection URL.
    admin_url_file: Option<Spanned<String>>,
    /// `alternating` or `single`.
    strategy: Option<Spanned<String>>,
    /// `single` only: accept that no grace period is possible.
    acknowledge_no_grace: Option<Spanned<bool>>,
    /// `alternating` only: end the old role's sessions at expiry.
    terminate_sessions: Option<Spanned<bool>>,
    /// The login roles.
    roles: Option<Spanned<Vec<Spanned<String>>>>,
}

/// PostgreSQL login roles; the admin connection URL is read from `admin_url_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    pub admin_url_file: PathBuf,
    pub strategy: Strategy,
    /// Two roles for `alternating`, one for `single`.
    pub roles: Vec<String>,
    /// `alternating` only: at expiry, also end the sessions the old role still has
    /// open (connection pools keep them past `NOLOGIN`). Default off.
    pub terminate_sessions: bool,
}

impl PostgresConfig {
    /// Checks `t` (the table at `path`, spanning `span`); `policy` is the secret's policy when it
    /// resolved, for the grace check of `single`.
    pub(crate) fn validate(
        v: &mut Validator<'_, '_>,
        path: &str,
        span: Range<usize>,
        t: &RawPostgres,
        policy: Option<&Policy>,
    ) -> PostgresConfig {
        let admin_url_file =
            v.required_file(path, "admin_url_file", span.clone(), &t.admin_url_file);
        let strategy = match t.strategy.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "alternating")) => Strategy::Alternating,
            Some((_, "single")) => Strategy::Single,
            Some((s, _)) => {
                v.diag.value(
                    s.span(),
                    &join(path, "strategy"),
                    "expected \"alternating\" (two roles, grace works) or \"single\" (one role, no grace)",
                );
                Strategy::Alternating
            }
        };
        let roles = roles(v, path, span.clone(), t, strategy);
        let acknowledged = t
            .acknowledge_no_grace
            .as_ref()
            .is_some_and(|a| *a.get_ref());
        if strategy == Strategy::Single
            && !acknowledged
            && let Some(p) = policy.filter(|p| !p.grace.is_zero())
        {
            let span = t.strategy.as_ref().map_or(span.clone(), |s| s.span());
            v.diag.value(
                span,
                &join(path, "strategy"),
                format!(
                    "strategy \"single\" replaces the one role's password, so the previous \
                     one stops working at once and policy `{}`'s grace of {} cannot be \
                     honoured; use strategy = \"alternating\" with two roles, or set \
                     acknowledge_no_grace = true to accept that consumers break until \
                     they read the new value",
                    p.name,
                    format_duration(p.grace)
                ),
            );
        }
        let terminate_sessions = match &t.terminate_sessions {
            Some(b) if *b.get_ref() && strategy == Strategy::Single => {
                v.diag.value(
                    b.span(),
                    &join(path, "terminate_sessions"),
                    "needs strategy = \"alternating\": with one role, the sessions of \
                     the old password cannot be told apart from those of the new one",
                );
                false
            }
            Some(b) => *b.get_ref(),
            None => false,
        };
        PostgresConfig {
            admin_url_file,
            strategy,
            roles,
            terminate_sessions,
        }
    }

    /// The target this configuration describes; `reader` is how it reads stored values.
    pub fn build(&self, secret: &SecretRef, reader: &ValueReader) -> Arc<dyn Target> {
        Arc::new(
            PostgresTarget::new(
                secret.clone(),
                self.admin_url_file.clone(),
                self.strategy,
                self.roles.clone(),
                reader.clone(),
            )
            .terminating_sessions(self.terminate_sessions),
        )
    }
}

/// `roles`: PostgreSQL identifiers, two for `alternating`, one for `single`.
fn roles(
    v: &mut Validator<'_, '_>,
    path: &str,
    span: Range<usize>,
    t: &RawPostgres,
    strategy: Strategy,
) -> Vec<String> {
    let key = join(path, "roles");
    let want = match strategy {
        Strategy::Alternating => 2,
        Strategy::Single => 1,
    };
    let Some(list) = &t.roles else {
        v.missing(
            Some(span.clone()),
            &key,
            "missing key `roles`: two login roles for strategy \"alternating\" (e.g. [\"app_blue\", \"app_green\"]), one for \"single\"",
        );
        return Vec::new();
    };
    let roles: Vec<String> = list.get_ref().iter().map(|r| r.get_ref().clone()).collect();
    if roles.len() != want {
        v.diag.value(
            list.span(),
            &key,
            format!(
                "strategy {} takes exactly {want} role(s)",
                match strategy {
                    Strategy::Alternating => "\"alternating\"",
                    Strategy::Single => "\"single\"",
                }
            ),
        );
    }
    for (j, r) in list.get_ref().iter().enumerate() {
        let name = r.get_ref();
        let ok = !name.is_empty()
            && name.len() <= MAX_ROLE_LEN
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok {
            v.diag.value(
                r.span(),
                &format!("{key}[{j}]"),
                format!("a role name is 1 to {MAX_ROLE_LEN} lowercase letters, digits or `_`, not starting with a digit"),
            );
        }
    }
    if roles.len() == 2 && roles[0] == roles[1] {
        v.diag.value(list.span(), &key, "the two roles must differ");
    }
    roles
}
