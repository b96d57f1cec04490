//! Policy checks (`[policies.NAME]`): schedules, grace, windows, generators and
//! `verify_interval`, merged over the built-in policies (`verify_interval` is never
//! inherited: no built-in sets it).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::builtin::{Builtin, BuiltinSchedule, builtin, builtins};
use super::check::{Checked, Reported, Validator, join};
use super::model::{ExpireAfter, Policy};
use super::raw::{RawGenerator, RawPolicy, RawWindow};
use crate::domain::validate_ident;
use crate::duration::format_duration;
use crate::generator::{CharClasses, Encoding, GeneratorSpec};
use crate::schedule::{Schedule, ScheduleKind, Window, shortest_cron_gap};

const DEFAULT_MAX_ATTEMPTS: u32 = 5;
const DEFAULT_MAX_GRACE_EXTENSION: Duration = Duration::from_secs(24 * 3_600);
const PASSWORD_LENGTH: (i64, i64) = (8, 1024);
const RANDOM_BYTES: (i64, i64) = (16, 1024);
const MAX_ATTEMPTS: (i64, i64) = (1, 100);
const MAX_PREFIX_LEN: usize = 32;

impl Validator<'_, '_> {
    /// Built-in policies merged with the file's. Returns the valid policies and the names
    /// of policies that were declared but invalid (so secrets using them are not also
    /// reported as naming an unknown policy).
    pub(super) fn policies(
        &mut self,
        raw: &BTreeMap<String, Spanned<RawPolicy>>,
    ) -> (BTreeMap<String, Arc<Policy>>, HashSet<String>) {
        let mut out = BTreeMap::new();
        let mut broken = HashSet::new();
        for b in builtins() {
            if !raw.contains_key(b.name)
                && let Some(policy) = self.policy(b.name, None, Some(&b))
            {
                out.insert(b.name.to_owned(), Arc::new(policy));
            }
        }
        for (name, spanned) in raw {
            let b = builtin(name);
            match self.policy(name, Some(spanned), b.as_ref()) {
                Some(policy) => {
                    out.insert(name.clone(), Arc::new(policy));
                }
                None => {
                    broken.insert(name.clone());
                }
            }
        }
        for name in self
            .pruned
            .iter()
            .filter_map(|p| p.strip_prefix("policies."))
        {
            if !name.contains('.') {
                broken.insert(name.to_owned());
            }
        }
        (out, broken)
    }

    /// One policy: the file's table (if any) over the built-in (if any). `None` if it had
    /// errors, all of which have been reported.
    fn policy(
        &mut self,
        name: &str,
        raw: Option<&Spanned<RawPolicy>>,
        builtin: Option<&Builtin>,
    ) -> Option<Policy> {
        let errors_before = self.diag.len();
        let path = format!("policies.{name}");
        let table_span = raw.map(|r| r.span());
        let empty = RawPolicy::empty();
        let r = raw.map_or(&empty, |r| r.get_ref());
        let at = |key: &str| join(&path, key);

        if let Err(e) = validate_ident(name) {
            self.diag.at(
                table_span.clone(),
                &path,
                format!("policy name {name:?} {e}"),
            );
        }

        let interval = self.duration(&at("interval"), r.interval.as_ref());
        let cron = self.cron(&at("cron"), r.cron.as_ref());
        let timezone = self.timezone(&at("timezone"), r.timezone.as_ref());
        let grace = self.duration(&at("grace"), r.grace.as_ref());
        let jitter = self.duration(&at("jitter"), r.jitter.as_ref());
        let window = self.window(&at("window"), r.window.as_ref(), &timezone);
        let generator = self.generator(&at("generator"), r.generator.as_ref());
        let max_attempts = self.int_in(
            &at("max_attempts"),
            r.max_attempts.as_ref(),
            MAX_ATTEMPTS,
            "the number of attempts",
        );
        let expire_after = self.expire_after(&path, r);
        // Not inherited from a built-in: verifying is off unless the file asks for it.
        let verify_interval = self.duration(&at("verify_interval"), r.verify_interval.as_ref());

        // The schedule keys form one group: a table that names any of them replaces the
        // built-in schedule as a whole, so overriding `interval` with `cron` is no conflict.
        let schedule_keys = ["interval", "cron", "manual"];
        let names_schedule = r.interval.is_some()
            || r.cron.is_some()
            || r.manual.is_some()
            || schedule_keys.iter().any(|k| self.pruned.contains(&at(k)));
        let manual_on = r.manual.as_ref().is_some_and(|m| *m.get_ref());
        let kind: Option<ScheduleKind> = if names_schedule {
            if let (Some(_), Some(c)) = (&r.interval, &r.cron) {
                self.diag.value(
                    c.span(),
                    &at("cron"),
                    "a policy has either `interval` or `cron`, not both",
                );
                None
            } else if let (true, Some(m), true) = (
                manual_on,
                &r.manual,
                r.interval.is_some() || r.cron.is_some(),
            ) {
                self.diag.value(
                    m.span(),
                    &at("manual"),
                    "`manual = true` cannot be combined with `interval` or `cron`; remove one",
                );
                None
            } else if r.interval.is_some() {
                interval
                    .as_ref()
                    .ok()
                    .copied()
                    .flatten()
                    .map(ScheduleKind::Interval)
            } else if r.cron.is_some() {
                cron.as_ref()
                    .ok()
                    .cloned()
                    .flatten()
                    .map(|(cron, expr)| ScheduleKind::Cron {
                        cron,
                        expr,
                        occurrences: Default::default(),
                        tz: timezone
                            .as_ref()
                            .ok()
                            .copied()
                            .flatten()
                            .unwrap_or(chrono_tz::UTC),
                    })
            } else if manual_on {
                Some(ScheduleKind::Manual)
            } else {
                // Only `manual = false` is left, unless stage one removed a bad schedule key.
                if !schedule_keys.iter().any(|k| self.pruned.contains(&at(k))) {
                    let span = r.manual.as_ref().map(|m| m.span()).or(table_span.clone());
                    self.diag.at(span, &path, no_schedule_message());
                }
                None
            }
        } else {
            match builtin.map(|b| b.schedule) {
                Some(BuiltinSchedule::Interval(d)) => Some(ScheduleKind::Interval(d)),
                Some(BuiltinSchedule::Manual) => Some(ScheduleKind::Manual),
                None => {
                    self.diag
                        .at(table_span.clone(), &path, no_schedule_message());
                    None
                }
            }
        };

        if let (Some(tz_value), Some(kind)) = (&r.timezone, &kind)
            && !matches!(kind, ScheduleKind::Cron { .. })
            && r.window.is_none()
        {
            self.diag.value(
                tz_value.span(),
                &at("timezone"),
                "applies only to `cron` and `window`, and this policy has neither",
            );
        }
        if matches!(kind, Some(ScheduleKind::Manual)) {
            if let Some(j) = &r.jitter {
                self.diag.value(
                    j.span(),
                    &at("jitter"),
                    "has no effect on a manual policy; remove it",
                );
            }
            if let Some(w) = &r.window {
                self.diag.at(
                    Some(w.span()),
                    &at("window"),
                    "has no effect on a manual policy; remove it",
                );
            }
        }

        let grace = match grace {
            Ok(Some(g)) => Some(g),
            Ok(None) => match builtin {
                Some(b) => Some(b.grace),
                None => {
                    self.missing(
                        table_span.clone(),
                        &at("grace"),
                        "missing key `grace`: how long the previous version stays valid, e.g. \"24h\"",
                    );
                    None
                }
            },
            Err(Reported) => None,
        };

        // Grace must end before the next rotation, or two rotations would overlap and the
        // version being replaced would be one that is still in its grace period.
        if let (Some(g), Some(kind)) = (grace, &kind) {
            let limit = match kind {
                ScheduleKind::Interval(i) => {
                    Some((*i, format!("the interval ({})", format_duration(*i))))
                }
                ScheduleKind::Cron { cron, expr, tz, .. } => {
                    shortest_cron_gap(cron, *tz).map(|gap| {
                        (
                            gap,
                            format!(
                                "the shortest gap between occurrences of cron {expr:?} ({})",
                                format_duration(gap)
                            ),
                        )
                    })
                }
                ScheduleKind::Manual => None,
            };
            if let Some((limit, what)) = limit
                && g >= limit
            {
                let message = format!(
                    "grace {} must be shorter than {what}: otherwise the previous version is still in its grace period when the next rotation starts",
                    format_duration(g)
                );
                match (&r.grace, &r.interval, &r.cron) {
                    (Some(v), _, _) => self.diag.value(v.span(), &at("grace"), message),
                    (None, Some(v), _) => self.diag.value(v.span(), &at("interval"), message),
                    (None, None, Some(v)) => self.diag.value(v.span(), &at("cron"), message),
                    (None, None, None) => self.diag.at(table_span.clone(), &path, message),
                }
            }
        }

        let generator = match generator {
            Ok(Some(g)) => Some(g),
            Ok(None) => match builtin {
                Some(b) => Some(b.generator.clone()),
                None => {
                    self.missing(
                        table_span.clone(),
                        &at("generator"),
                        "missing key `generator`, e.g. generator = { type = \"token\", bytes = 32 }",
                    );
                    None
                }
            },
            Err(Reported) => None,
        };

        if self.diag.len() > errors_before {
            return None;
        }
        let (
            Some(kind),
            Some(grace),
            Some(generator),
            Ok(jitter),
            Ok(window),
            Ok(max_attempts),
            Some(expire_after),
            Ok(verify_interval),
        ) = (
            kind,
            grace,
            generator,
            jitter,
            window,
            max_attempts,
            expire_after,
            verify_interval,
        )
        else {
            return None;
        };
        Some(Policy {
            name: name.to_owned(),
            schedule: Schedule {
                kind,
                jitter,
                window,
            },
            grace,
            generator,
            max_attempts: max_attempts.map_or(DEFAULT_MAX_ATTEMPTS, |n| n as u32),
            expire_after,
            verify_interval,
        })
    }

    fn window(
        &mut self,
        path: &str,
        raw: Option<&Spanned<RawWindow>>,
        policy_tz: &Checked<chrono_tz::Tz>,
    ) -> Checked<Window> {
        let Some(spanned) = raw else { return Ok(None) };
        let w = spanned.get_ref();
        let cron = self.cron(&join(path, "cron"), w.cron.as_ref());
        let duration = self.duration(&join(path, "duration"), w.duration.as_ref());
        let tz = self.timezone(&join(path, "timezone"), w.timezone.as_ref());
        if w.cron.is_none() {
            self.missing(
                Some(spanned.span()),
                &join(path, "cron"),
                "missing key `cron`: when the window opens, e.g. \"0 1 * * *\"",
            );
        }
        if w.duration.is_none() {
            self.missing(
                Some(spanned.span()),
                &join(path, "duration"),
                "missing key `duration`: how long the window stays open, e.g. \"3h\"",
            );
        }
        match (cron, duration, tz) {
            (Ok(Some((cron, expr))), Ok(Some(duration)), Ok(tz)) => {
                // A window without its own zone follows the policy's.
                let tz = tz
                    .or(policy_tz.as_ref().ok().copied().flatten())
                    .unwrap_or(chrono_tz::UTC);
                Ok(Some(Window {
                    cron,
                    expr,
                    duration,
                    tz,
                    occurrences: Default::default(),
                }))
            }
            _ => Err(Reported),
        }
    }

    fn generator(
        &mut self,
        path: &str,
        raw: Option<&Spanned<RawGenerator>>,
    ) -> Checked<GeneratorSpec> {
        let Some(spanned) = raw else { return Ok(None) };
        let g = spanned.get_ref();
        let errors_before = self.diag.len();
        let kind = g.kind.as_ref().map_or("", |k| k.get_ref().as_str());
        let flag =
            |v: &Option<Spanned<bool>>, default: bool| v.as_ref().map_or(default, |b| *b.get_ref());
        let spec = match kind {
            "password" => {
                let length = self.int_or(
                    &join(path, "length"),
                    g.length.as_ref(),
                    PASSWORD_LENGTH,
                    "password length",
                    32,
                );
                let classes = CharClasses {
                    lower: flag(&g.lower, true),
                    upper: flag(&g.upper, true),
                    digits: flag(&g.digits, true),
                    symbols: flag(&g.symbols, false),
                };
                if !(classes.lower || classes.upper || classes.digits || classes.symbols) {
                    self.diag.at(
                        Some(spanned.span()),
                        path,
                        "a password needs at least one character class: set one of lower, upper, digits, symbols to true",
                    );
                }
                GeneratorSpec::Password {
                    length: length as usize,
                    classes,
                }
            }
            "token" => {
                let bytes = self.int_or(
                    &join(path, "bytes"),
                    g.bytes.as_ref(),
                    RANDOM_BYTES,
                    "token bytes",
                    32,
                );
                let prefix = match &g.prefix {
                    None => String::new(),
                    Some(p) => {
                        let text = p.get_ref();
                        if text.len() > MAX_PREFIX_LEN
                            || !text.chars().all(|c| {
                                c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'
                            })
                        {
                            self.diag.value(
                                p.span(),
                                &join(path, "prefix"),
                                format!("a token prefix has at most {MAX_PREFIX_LEN} characters from a-z, A-Z, 0-9, '_', '-', '.'"),
                            );
                        }
                        text.clone()
                    }
                };
                let encoding = match g.encoding.as_ref().map(|e| (e, e.get_ref().as_str())) {
                    None | Some((_, "base64url")) => Encoding::Base64Url,
                    Some((_, "hex")) => Encoding::Hex,
                    Some((e, _)) => {
                        self.diag.value(
                            e.span(),
                            &join(path, "encoding"),
                            "unknown encoding; expected \"base64url\" or \"hex\"",
                        );
                        Encoding::Base64Url
                    }
                };
                GeneratorSpec::Token {
                    bytes: bytes as usize,
                    prefix,
                    encoding,
                }
            }
            "hmac" => {
                let bytes = self.int_or(
                    &join(path, "bytes"),
                    g.bytes.as_ref(),
                    RANDOM_BYTES,
                    "key bytes",
                    32,
                );
                GeneratorSpec::Hmac {
                    bytes: bytes as usize,
                }
            }
            "ed25519" => GeneratorSpec::Ed25519,
            // The schema walk removes generators without a known type.
            _ => return Err(Reported),
        };
        if self.diag.len() > errors_before {
            Err(Reported)
        } else {
            Ok(Some(spec))
        }
    }

    /// `None` if bad (reported).
    fn expire_after(&mut self, path: &str, r: &RawPolicy) -> Option<ExpireAfter> {
        let extension = self.duration(
            &join(path, "max_grace_extension"),
            r.max_grace_extension.as_ref(),
        );
        let mode = r.expire_after.as_ref();
        match mode.map(|m| m.get_ref().as_str()) {
            None | Some("grace") => {
                if let Some(ext) = &r.max_grace_extension {
                    self.diag.value(
                        ext.span(),
                        &join(path, "max_grace_extension"),
                        "applies only with expire_after = \"grace_and_consumers\"",
                    );
                    return None;
                }
                Some(ExpireAfter::Grace)
            }
            Some("grace_and_consumers") => Some(ExpireAfter::GraceAndConsumers {
                max_extension: extension.ok()?.unwrap_or(DEFAULT_MAX_GRACE_EXTENSION),
            }),
            Some(_) => {
                if let Some(m) = mode {
                    self.diag.value(
                        m.span(),
                        &join(path, "expire_after"),
                        "expected \"grace\" or \"grace_and_consumers\"",
                    );
                }
                None
            }
        }
    }
}

fn no_schedule_message() -> &'static str {
    "has no schedule: set interval = \"30d\", cron = \"0 2 * * 0\" or manual = true"
}

impl RawPolicy {
    /// A policy table naming nothing, for built-ins the file does not mention.
    fn empty() -> Self {
        RawPolicy {
            interval: None,
            cron: None,
            timezone: None,
            manual: None,
            grace: None,
            jitter: None,
            window: None,
            generator: None,
            max_attempts: None,
            expire_after: None,
            max_grace_extension: None,
            verify_interval: None,
        }
    }
}
