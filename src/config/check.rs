//! The checking API every part of the configuration is validated with: the document's
//! [`Diagnostics`], the key paths stage one already reported (pruned), and the shared
//! checks of values (durations, integers in a range, file paths, CA files, time zones,
//! cron expressions, `file = "tenant/key"` pairs, hook `env` allow-lists). Each
//! integration's own `config` module (targets, stores, notifier channels, reload actions,
//! publish destinations) validates its keys through a [`Validator`], so every problem lands
//! in the one list `rotor check` prints; the secrets they name come back as
//! [`SecretMention`]s for the config module's cross-reference check.

use std::collections::HashSet;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::error::Diagnostics;
use crate::domain::SecretRef;
use crate::duration::parse_duration;
use crate::schedule::validate_cron;

/// The value was bad and has been reported; callers skip checks that depend on it.
pub(crate) struct Reported;

/// Absent (`Ok(None)`), valid (`Ok(Some)`) or bad and reported (`Err`).
pub(crate) type Checked<T> = Result<Option<T>, Reported>;

/// A `tenant/key` written in a mount's `files` or a `[[publish]]` table, checked against
/// the managed secrets once those are known.
pub(crate) struct SecretMention {
    pub(crate) span: Range<usize>,
    pub(crate) key: String,
    pub(crate) secret: SecretRef,
}

/// Stage two's view of the document: where problems go, and which keys stage one removed.
pub(crate) struct Validator<'d, 's> {
    pub(crate) diag: &'d mut Diagnostics<'s>,
    pub(super) pruned: &'d HashSet<String>,
}

/// `path.key`: the key path of `key` inside the table at `path`.
pub(crate) fn join(path: &str, key: &str) -> String {
    format!("{path}.{key}")
}

impl Validator<'_, '_> {
    /// One `file name = "tenant/key"` pair of a mount's `files` or a `[[publish]]` table.
    pub(crate) fn file_mapping(
        &mut self,
        key: &str,
        name_span: Range<usize>,
        name: &str,
        secret: &str,
        secret_span: Range<usize>,
    ) -> Option<(String, SecretRef)> {
        if name.is_empty() || name.contains('/') || name.starts_with("..") {
            self.diag.value(
                name_span,
                key,
                "is a file name in the mount: not empty, no '/', and not starting with \"..\" (kubelet's own entries)",
            );
            return None;
        }
        match SecretRef::parse(secret) {
            Some(s) => Some((name.to_owned(), s)),
            None => {
                self.diag.value(
                    secret_span,
                    key,
                    "must name a secret as \"tenant/key\" (lowercase identifiers)",
                );
                None
            }
        }
    }

    /// Whether stage one already reported (and removed) the key at `path`.
    pub(crate) fn was_pruned(&self, path: &str) -> bool {
        self.pruned.contains(path)
    }

    /// Reports a required key that is missing, unless stage one already reported (and
    /// removed) it.
    pub(crate) fn missing(
        &mut self,
        span: Option<Range<usize>>,
        path: &str,
        message: impl Into<String>,
    ) {
        if !self.pruned.contains(path) {
            self.diag.at(span, path, message);
        }
    }

    pub(crate) fn duration(
        &mut self,
        path: &str,
        value: Option<&Spanned<String>>,
    ) -> Checked<Duration> {
        let Some(value) = value else { return Ok(None) };
        match parse_duration(value.get_ref()) {
            Ok(d) => Ok(Some(d)),
            Err(e) => {
                self.diag.value(value.span(), path, e.to_string());
                Err(Reported)
            }
        }
    }

    /// A duration with a default when absent; a bad value yields the default too (and has
    /// been reported, so the config will be refused anyway).
    pub(crate) fn duration_or(
        &mut self,
        path: &str,
        value: Option<&Spanned<String>>,
        default: Duration,
    ) -> Duration {
        self.duration(path, value).ok().flatten().unwrap_or(default)
    }

    pub(crate) fn int_in(
        &mut self,
        path: &str,
        value: Option<&Spanned<i64>>,
        (lo, hi): (i64, i64),
        what: &str,
    ) -> Checked<i64> {
        let Some(value) = value else { return Ok(None) };
        let n = *value.get_ref();
        if (lo..=hi).contains(&n) {
            Ok(Some(n))
        } else {
            self.diag.value(
                value.span(),
                path,
                format!("{what} must be between {lo} and {hi}"),
            );
            Err(Reported)
        }
    }

    /// An integer in `range` with a default when absent; a bad value yields the default
    /// too (and has been reported, so the config will be refused anyway). The range is
    /// within `T`'s, so the conversion does not fail.
    pub(crate) fn int_or<T: TryFrom<i64>>(
        &mut self,
        path: &str,
        value: Option<&Spanned<i64>>,
        range: (i64, i64),
        what: &str,
        default: T,
    ) -> T {
        match self.int_in(path, value, range, what) {
            Ok(Some(n)) => T::try_from(n).unwrap_or(default),
            Ok(None) | Err(Reported) => default,
        }
    }

    /// An optional `ca_file` (PEM CA bundle): a non-empty path, refused when the URL it
    /// would verify is plain http.
    pub(crate) fn ca_file(
        &mut self,
        key: &str,
        value: Option<&Spanned<String>>,
        plain_http: bool,
    ) -> Option<PathBuf> {
        let v = value?;
        if plain_http {
            self.diag.value(
                v.span(),
                key,
                "is set but the URL is plain http; use an https URL",
            );
            return None;
        }
        Some(self.non_empty_path(key, Some(v), ""))
    }

    /// An optional `proxy` key: the `http://` or `https://` proxy the integration's requests
    /// go through (loopback destinations excepted). A bad value is quoted with its userinfo
    /// replaced by `***`, as every quoted URL is.
    pub(crate) fn proxy(
        &mut self,
        key: &str,
        value: Option<&Spanned<String>>,
    ) -> Option<crate::http_client::ProxyUrl> {
        let v = value?;
        match crate::http_client::ProxyUrl::parse(v.get_ref()) {
            Ok(p) => Some(p),
            Err(why) => {
                self.diag.value(v.span(), key, why);
                None
            }
        }
    }

    pub(crate) fn non_empty_path(
        &mut self,
        path: &str,
        value: Option<&Spanned<String>>,
        default: &str,
    ) -> PathBuf {
        match value {
            None => PathBuf::from(default),
            Some(v) if v.get_ref().trim().is_empty() => {
                self.diag.value(v.span(), path, "must not be empty");
                PathBuf::from(default)
            }
            Some(v) => PathBuf::from(v.get_ref()),
        }
    }

    pub(crate) fn timezone(
        &mut self,
        path: &str,
        value: Option<&Spanned<String>>,
    ) -> Checked<chrono_tz::Tz> {
        let Some(value) = value else { return Ok(None) };
        match value.get_ref().parse::<chrono_tz::Tz>() {
            Ok(tz) => Ok(Some(tz)),
            Err(_) => {
                self.diag.value(
                    value.span(),
                    path,
                    "is not a known time zone; use an IANA name such as \"UTC\" or \"Europe/Berlin\"",
                );
                Err(Reported)
            }
        }
    }

    pub(crate) fn cron(
        &mut self,
        path: &str,
        value: Option<&Spanned<String>>,
    ) -> Checked<(croner::Cron, String)> {
        let Some(value) = value else { return Ok(None) };
        match validate_cron(value.get_ref()) {
            Ok(cron) => Ok(Some((cron, value.get_ref().trim().to_owned()))),
            Err(problem) => {
                self.diag.value(value.span(), path, problem.to_string());
                Err(Reported)
            }
        }
    }

    /// An `env = ["NAME", ...]` allow-list of a hook (an exec target or reload): each name
    /// must be an environment variable name, `[A-Za-z_][A-Za-z0-9_]*`. Bad names are
    /// reported one by one and left out.
    pub(crate) fn env_names(
        &mut self,
        path: &str,
        value: Option<&Spanned<Vec<Spanned<String>>>>,
    ) -> Vec<String> {
        let Some(list) = value else {
            return Vec::new();
        };
        let mut names = Vec::new();
        for name in list.get_ref() {
            let text = name.get_ref();
            let mut chars = text.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if valid {
                names.push(text.clone());
            } else {
                self.diag.value(
                    name.span(),
                    path,
                    "is not an environment variable name: letters, digits and '_', not starting with a digit (e.g. \"AWS_REGION\")",
                );
            }
        }
        names
    }

    /// A required, non-empty file path key of the table at `path` (spanning `table`).
    pub(crate) fn required_file(
        &mut self,
        path: &str,
        key: &str,
        table: Range<usize>,
        value: &Option<Spanned<String>>,
    ) -> PathBuf {
        let key_path = join(path, key);
        match value {
            None => {
                self.missing(
                    Some(table),
                    &key_path,
                    format!("missing key `{key}`: a file path"),
                );
                PathBuf::new()
            }
            Some(_) => self.non_empty_path(&key_path, value.as_ref(), ""),
        }
    }
}
