//! Pure schedule maths: when is a secret next due for rotation?
//!
//! A [`Schedule`] is an interval (`"90d"`), a cron expression evaluated in a time zone, or
//! manual, plus an optional per-secret jitter and an optional allowed window. Nothing here
//! reads a clock: `now` is always an argument, so every rule is covered by table and
//! property tests without sleeping.
//!
//! The rules, in order (see [`Schedule::next_due`]):
//! 1. manual: never due;
//! 2. never rotated: due now (a secret without a value is worse than one rotated outside
//!    its window, so neither jitter nor window delay the first version);
//! 3. interval: `last_rotated + interval + jitter_offset`; cron: first occurrence strictly
//!    after `last_rotated`, in the schedule's time zone, `+ jitter_offset`;
//! 4. overdue (the process was down): due now;
//! 5. window: moved to the first instant at or after that which lies inside a window.
//!
//! Looking up a cron occurrence in croner costs tens of microseconds, which a million
//! secrets would pay at every start. Each cron expression (of a schedule or a window)
//! therefore carries an [`Occurrences`] cache of the spans between consecutive occurrences
//! it has looked up: every secret whose last rotation falls into a known span gets the
//! answer from memory, so a cron secret costs about what an interval secret costs. The
//! cache only remembers what croner answered; it never reads a clock, and its answers are
//! the uncached ones (a property test compares them).

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use sha2::{Digest, Sha256};

use crate::domain::SecretRef;
use crate::duration::format_duration;

/// How a policy decides that a secret is due.
// The cron variant is several hundred bytes (croner keeps bitfields inline) while the
// others are small. Policies are few and shared through `Arc`, so boxing would only add
// an indirection to every `next_due`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleKind {
    /// Every so long after the last rotation. Plain elapsed time: a DST change neither
    /// skips nor doubles a rotation.
    Interval(Duration),
    /// At the occurrences of a cron expression, evaluated in `tz`.
    Cron {
        cron: Cron,
        /// The expression as written, for messages and `rotor plan`.
        expr: String,
        tz: chrono_tz::Tz,
        /// Occurrences already looked up (start with `Occurrences::default()`).
        occurrences: Occurrences,
    },
    /// Only on request (CLI or API).
    Manual,
}

/// An allowed rotation window: it opens at each occurrence of `cron` (in `tz`) and stays
/// open for `duration`.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub cron: Cron,
    /// The expression as written, for messages.
    pub expr: String,
    pub duration: Duration,
    pub tz: chrono_tz::Tz,
    /// Openings already looked up (start with `Occurrences::default()`).
    pub occurrences: Occurrences,
}

/// A policy's schedule. See the module doc for the rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    /// Spreads the secrets of one policy over `[0, jitter)` so that a fleet created
    /// together does not rotate in the same second forever after.
    pub jitter: Option<Duration>,
    pub window: Option<Window>,
}

impl Schedule {
    /// When `secret` is next due, given when it was last rotated.
    ///
    /// Returns `None` for a manual schedule, and (only for inputs that cannot come from a
    /// validated config) when the next occurrence lies beyond what `DateTime` can
    /// represent or a cron expression never fires again. Otherwise the result is `>= now`,
    /// and when a window exists and the secret was rotated before, inside that window.
    ///
    /// The due time is computed from `last_rotated`, never from process start, so a
    /// restart neither postpones nor advances a rotation.
    pub fn next_due(
        &self,
        secret: &SecretRef,
        last_rotated: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if matches!(self.kind, ScheduleKind::Manual) {
            return None;
        }
        let Some(last) = last_rotated else {
            return Some(now);
        };
        let jitter = self
            .jitter
            .map(|j| jitter_offset(secret, j))
            .unwrap_or(Duration::ZERO);
        let due = match &self.kind {
            ScheduleKind::Manual => return None,
            ScheduleKind::Interval(every) => add(last, every.checked_add(jitter)?)?,
            ScheduleKind::Cron {
                cron,
                tz,
                occurrences,
                ..
            } => add(occurrences.span(cron, *tz, last)?.next, jitter)?,
        };
        let due = due.max(now);
        match &self.window {
            None => Some(due),
            Some(window) => window.first_open_at_or_after(due),
        }
    }
}

impl Window {
    /// The first instant `>= t` at which this window is open.
    pub fn first_open_at_or_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let span = self.occurrences.span(&self.cron, self.tz, t)?;
        if !span.from_is_occurrence {
            return self.first_open_uncached(t);
        }
        // `span.from` is the latest opening at or before `t`, and `span.next` the first
        // after it.
        if add(span.from, self.duration).is_some_and(|closes| t < closes) {
            Some(t)
        } else {
            Some(span.next)
        }
    }

    /// [`Window::first_open_at_or_after`] straight from croner.
    fn first_open_uncached(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz);
        // Only the latest opening at or before `t` matters: an earlier opening's window
        // ends no later than the latest one's, because all windows last equally long.
        if let Ok(opened) = self.cron.find_previous_occurrence(&local, true) {
            let opened = opened.with_timezone(&Utc);
            if opened <= t && add(opened, self.duration).is_some_and(|closes| t < closes) {
                return Some(t);
            }
        }
        next_occurrence(&self.cron, self.tz, t)
    }

    /// Whether the window is open at `t`.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.first_open_at_or_after(t) == Some(t)
    }
}

/// Most spans one [`Occurrences`] keeps; when full it starts again empty. Far more than
/// a fleet needs (one span per cron period its last rotations fall into), and a bound for
/// expressions that fire every second.
const MAX_SPANS: usize = 256;

/// The spans between consecutive occurrences of one cron expression in one time zone
/// that have been looked up, shared by every secret of the policy (it sits in the
/// policy's [`Schedule`]). A clone starts empty and all caches compare equal: it holds
/// nothing but answers croner already gave.
#[derive(Default)]
pub struct Occurrences {
    /// Sorted by `from`; spans never disagree (two that overlap end at the same
    /// occurrence).
    spans: Mutex<Vec<Span>>,
}

/// No occurrence lies in `(from, next)`, and `next` is one.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    from: DateTime<Utc>,
    /// `from` is itself an occurrence (the latest at or before any instant of the span);
    /// else only an instant the span was looked up for.
    from_is_occurrence: bool,
    next: DateTime<Utc>,
}

impl Occurrences {
    /// The span holding `t`, from memory or looked up (and then remembered). `None` when
    /// the expression never fires after `t`.
    fn span(&self, cron: &Cron, tz: chrono_tz::Tz, t: DateTime<Utc>) -> Option<Span> {
        // A poisoned lock only means a panic elsewhere while holding it; the spans are
        // still valid, but the lookup below works without them too.
        if let Ok(spans) = self.spans.lock() {
            let after = spans.partition_point(|s| s.from <= t);
            if let Some(s) = after.checked_sub(1).map(|i| spans[i])
                && t < s.next
            {
                return Some(s);
            }
        }
        let next = next_occurrence(cron, tz, t)?;
        // Widen the span back to the latest occurrence at or before `t`, checked through
        // the same "next after" lookup, so that every later instant of the span gets the
        // answer `t` got.
        let previous = cron
            .find_previous_occurrence(&t.with_timezone(&tz), true)
            .ok()
            .map(|p| p.with_timezone(&Utc))
            .filter(|p| *p <= t && next_occurrence(cron, tz, *p) == Some(next));
        let span = match previous {
            Some(p) => Span {
                from: p,
                from_is_occurrence: true,
                next,
            },
            None => Span {
                from: t,
                from_is_occurrence: false,
                next,
            },
        };
        if let Ok(mut spans) = self.spans.lock() {
            if spans.len() >= MAX_SPANS {
                spans.clear();
            }
            let at = spans.partition_point(|s| s.from <= span.from);
            spans.insert(at, span);
        }
        Some(span)
    }

    /// How many spans are remembered.
    pub fn len(&self) -> usize {
        self.spans.lock().map_or(0, |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Clone for Occurrences {
    fn clone(&self) -> Self {
        Occurrences::default()
    }
}

impl PartialEq for Occurrences {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Occurrences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Occurrences({} spans)", self.len())
    }
}

/// The first occurrence of `cron` in `tz` strictly after `after`.
fn next_occurrence(cron: &Cron, tz: chrono_tz::Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let found = cron
        .find_next_occurrence(&after.with_timezone(&tz), false)
        .ok()?
        .with_timezone(&Utc);
    // croner works in whole seconds; make "strictly after" hold for sub-second inputs too.
    if found > after {
        Some(found)
    } else {
        next_occurrence(cron, tz, after + TimeDelta::seconds(1))
    }
}

fn add(t: DateTime<Utc>, d: Duration) -> Option<DateTime<Utc>> {
    t.checked_add_signed(TimeDelta::from_std(d).ok()?)
}

/// The per-secret seed of everything random-looking about one secret: its schedule jitter
/// ([`jitter_offset`]) and its retry jitter (the state machine's draws).
///
/// The first 8 bytes (big-endian) of SHA-256 of the tenant and key, not a random or
/// process-seeded hash, so it survives restarts and is the same on every replica.
pub fn secret_seed(secret: &SecretRef) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(secret.tenant().as_bytes());
    // A separator that identifiers cannot contain keeps ("ab","c") apart from ("a","bc").
    hasher.update([0u8]);
    hasher.update(secret.key().as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// A stable per-secret offset in `[0, jitter)` (zero when `jitter` is zero).
///
/// Derived from [`secret_seed`], so the offset survives restarts and is the same on every
/// replica: a secret's due time must not move when the process does.
pub fn jitter_offset(secret: &SecretRef, jitter: Duration) -> Duration {
    let span = jitter.as_nanos();
    if span == 0 {
        return Duration::ZERO;
    }
    let h = u128::from(secret_seed(secret));
    // Multiply-shift maps a 64-bit hash onto [0, span) without modulo bias worth noting.
    // `span` is below 2^64 for any duration shorter than 584 years; larger spans are
    // clamped rather than overflowing.
    let span = span.min(u128::from(u64::MAX));
    let nanos = (h * span) >> 64;
    Duration::new(
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    )
}

/// A cron field, with the range of values it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronField {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl CronField {
    pub fn name(self) -> &'static str {
        match self {
            CronField::Second => "second",
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
        }
    }

    fn range(self) -> (u32, u32) {
        match self {
            CronField::Second | CronField::Minute => (0, 59),
            CronField::Hour => (0, 23),
            CronField::DayOfMonth => (1, 31),
            CronField::Month => (1, 12),
            CronField::DayOfWeek => (0, 6),
        }
    }

    /// What a step that overshoots its range really selects, e.g. "day 1 of every month".
    fn only_match(self, first: u32) -> String {
        match self {
            CronField::Second => format!("second {first} of every minute"),
            CronField::Minute => format!("minute {first} of every hour"),
            CronField::Hour => format!("hour {first} of every day"),
            CronField::DayOfMonth => format!("day {first} of every month"),
            CronField::Month => format!("month {first} of every year"),
            CronField::DayOfWeek => format!("weekday {first} of every week (0 is Sunday)"),
        }
    }

    /// What the writer probably meant, and the interval that says it.
    fn intended(self, step: u32) -> (String, String) {
        match self {
            CronField::Second => (format!("every {step} seconds"), format!("{step}s")),
            CronField::Minute => (format!("every {step} minutes"), format!("{step}m")),
            CronField::Hour => (format!("every {step} hours"), format!("{step}h")),
            CronField::DayOfMonth | CronField::DayOfWeek => {
                (format!("every {step} days"), format!("{step}d"))
            }
            CronField::Month => (
                format!("every {step} months"),
                format!("{}d", u64::from(step) * 30),
            ),
        }
    }
}

/// Why a cron expression is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronProblem {
    #[error(
        "is empty; write five fields (minute hour day-of-month month day-of-week), e.g. \"0 2 * * 0\""
    )]
    Empty,
    #[error(
        "has {found} fields; write five (minute hour day-of-month month day-of-week) or six (with seconds first), e.g. \"0 2 * * 0\""
    )]
    FieldCount { found: usize },
    #[error(
        "{part:?} in the {field} field means {only}, not {intended}: a cron step larger than the field's range ({lo}-{hi}) matches only its first value; use interval = \"{interval}\" instead",
        field = field.name()
    )]
    StepTooLarge {
        field: CronField,
        part: String,
        only: String,
        intended: String,
        lo: u32,
        hi: u32,
        interval: String,
    },
    #[error("is not a valid cron expression: {reason}")]
    Invalid { reason: String },
    #[error("never matches a real date (e.g. 30 February), so it would never fire")]
    NeverFires,
}

/// The parser rotor uses everywhere: seconds optional, no year field (a rotation schedule
/// pinned to a year stops firing silently when the year ends).
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// Parses and checks a cron expression: field count, steps that overshoot their field
/// (`*/90` in day-of-month), croner's own syntax checks, and that it fires at all.
pub fn validate_cron(expr: &str) -> Result<Cron, CronProblem> {
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err(CronProblem::Empty);
    }
    // Nicknames such as @daily have no fields to check; croner expands them.
    if !trimmed.starts_with('@') {
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        let names: &[CronField] = match fields.len() {
            5 => &[
                CronField::Minute,
                CronField::Hour,
                CronField::DayOfMonth,
                CronField::Month,
                CronField::DayOfWeek,
            ],
            6 => &[
                CronField::Second,
                CronField::Minute,
                CronField::Hour,
                CronField::DayOfMonth,
                CronField::Month,
                CronField::DayOfWeek,
            ],
            found => return Err(CronProblem::FieldCount { found }),
        };
        for (text, field) in fields.iter().zip(names) {
            check_steps(text, *field)?;
        }
    }
    let cron = parser().parse(trimmed).map_err(|e| CronProblem::Invalid {
        reason: e.to_string(),
    })?;
    // Any fixed reference works: a pattern without a year that fires at all fires within
    // a few years of every date.
    let reference = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single();
    if let Some(reference) = reference
        && cron.find_next_occurrence(&reference, false).is_err()
    {
        return Err(CronProblem::NeverFires);
    }
    Ok(cron)
}

/// Refuses `*/N` and `A-B/N` whose step jumps past the end of the range, which would
/// match only the first value: the classic `*/90` "every 90 days" mistake.
fn check_steps(text: &str, field: CronField) -> Result<(), CronProblem> {
    let (min, max) = field.range();
    for part in text.split(',') {
        let Some((range, step)) = part.split_once('/') else {
            continue;
        };
        // Anything unparsable is left to croner, which explains its own syntax.
        let Ok(step) = step.parse::<u32>() else {
            continue;
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            match (a.parse::<u32>(), b.parse::<u32>()) {
                (Ok(a), Ok(b)) if a <= b => (a, b),
                _ => continue,
            }
        } else {
            continue;
        };
        if step > hi - lo {
            let (intended, interval) = field.intended(step);
            return Err(CronProblem::StepTooLarge {
                field,
                part: part.to_owned(),
                only: field.only_match(lo),
                intended,
                lo,
                hi,
                interval,
            });
        }
    }
    Ok(())
}

/// The shortest gap between successive occurrences of `cron` in `tz`, sampled over a year
/// of occurrences from a fixed reference. Used by config to check grace against cron
/// schedules; `None` if fewer than two occurrences were found.
pub fn shortest_cron_gap(cron: &Cron, tz: chrono_tz::Tz) -> Option<Duration> {
    let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single()?;
    let end = start + TimeDelta::days(400);
    let mut previous: Option<DateTime<Utc>> = None;
    let mut shortest: Option<Duration> = None;
    // Bounded so that a per-second expression does not iterate a year of seconds.
    for occurrence in cron.iter_after(start.with_timezone(&tz)).take(2_000) {
        let occurrence = occurrence.with_timezone(&Utc);
        if occurrence > end {
            break;
        }
        if let Some(p) = previous
            && let Ok(gap) = (occurrence - p).to_std()
        {
            shortest = Some(shortest.map_or(gap, |s: Duration| s.min(gap)));
        }
        previous = Some(occurrence);
    }
    shortest
}

/// A one-line human description, e.g. `every 30d (jitter 10m, window "0 1 * * *" for 3h)`.
pub fn describe(schedule: &Schedule) -> String {
    let mut out = match &schedule.kind {
        ScheduleKind::Interval(d) => format!("every {}", format_duration(*d)),
        ScheduleKind::Cron { expr, tz, .. } => format!("cron {expr:?} ({tz})"),
        ScheduleKind::Manual => "manual".to_owned(),
    };
    if let Some(j) = schedule.jitter {
        out.push_str(&format!(", jitter {}", format_duration(j)));
    }
    if let Some(w) = &schedule.window {
        out.push_str(&format!(
            ", window {:?} for {} ({})",
            w.expr,
            format_duration(w.duration),
            w.tz
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Tz;
    use proptest::prelude::*;

    fn secret(tenant: &str, key: &str) -> SecretRef {
        SecretRef::new(tenant, key).expect("valid ident")
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid time")
    }

    fn interval(d: Duration) -> Schedule {
        Schedule {
            kind: ScheduleKind::Interval(d),
            jitter: None,
            window: None,
        }
    }

    fn cron_kind(expr: &str, tz: Tz) -> ScheduleKind {
        ScheduleKind::Cron {
            cron: validate_cron(expr).expect("valid cron"),
            expr: expr.to_owned(),
            tz,
            occurrences: Occurrences::default(),
        }
    }

    fn window(expr: &str, duration: Duration, tz: Tz) -> Window {
        Window {
            cron: validate_cron(expr).expect("valid cron"),
            expr: expr.to_owned(),
            duration,
            tz,
            occurrences: Occurrences::default(),
        }
    }

    const HOUR: Duration = Duration::from_secs(3_600);
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn table_of_next_due() {
        let s = secret("tenant1", "api_keys");
        let now = utc(2026, 5, 10, 12, 0, 0);
        struct Case {
            name: &'static str,
            schedule: Schedule,
            last: Option<DateTime<Utc>>,
            want: Option<DateTime<Utc>>,
        }
        let cases = [
            Case {
                name: "manual is never due",
                schedule: Schedule {
                    kind: ScheduleKind::Manual,
                    jitter: None,
                    window: None,
                },
                last: Some(utc(2026, 1, 1, 0, 0, 0)),
                want: None,
            },
            Case {
                name: "never rotated is due now",
                schedule: interval(30 * DAY),
                last: None,
                want: Some(now),
            },
            Case {
                name: "never rotated ignores the window",
                schedule: Schedule {
                    kind: ScheduleKind::Interval(30 * DAY),
                    jitter: Some(HOUR),
                    window: Some(window("0 1 * * *", 3 * HOUR, Tz::UTC)),
                },
                last: None,
                want: Some(now),
            },
            Case {
                name: "interval from last rotation",
                schedule: interval(30 * DAY),
                last: Some(utc(2026, 5, 1, 8, 0, 0)),
                want: Some(utc(2026, 5, 31, 8, 0, 0)),
            },
            Case {
                name: "overdue interval is due now",
                schedule: interval(DAY),
                last: Some(utc(2026, 1, 1, 0, 0, 0)),
                want: Some(now),
            },
            Case {
                name: "cron: first occurrence after last rotation",
                schedule: Schedule {
                    kind: cron_kind("0 2 * * 0", Tz::UTC),
                    jitter: None,
                    window: None,
                },
                // Sunday 2026-05-10 02:00 is the occurrence; last rotated at it.
                last: Some(utc(2026, 5, 10, 2, 0, 0)),
                want: Some(utc(2026, 5, 17, 2, 0, 0)),
            },
            Case {
                name: "cron in Berlin time",
                schedule: Schedule {
                    kind: cron_kind("0 2 * * *", Tz::Europe__Berlin),
                    jitter: None,
                    window: None,
                },
                last: Some(utc(2026, 5, 10, 11, 0, 0)),
                // 02:00 CEST is 00:00 UTC.
                want: Some(utc(2026, 5, 11, 0, 0, 0)),
            },
            Case {
                name: "overdue cron is due now",
                schedule: Schedule {
                    kind: cron_kind("0 2 * * *", Tz::UTC),
                    jitter: None,
                    window: None,
                },
                last: Some(utc(2026, 5, 1, 2, 0, 0)),
                want: Some(now),
            },
            Case {
                name: "due outside the window moves to the next opening",
                schedule: Schedule {
                    kind: ScheduleKind::Interval(DAY),
                    jitter: None,
                    window: Some(window("0 1 * * *", 3 * HOUR, Tz::UTC)),
                },
                last: Some(utc(2026, 5, 10, 11, 0, 0)),
                want: Some(utc(2026, 5, 12, 1, 0, 0)),
            },
            Case {
                name: "due inside the window stays",
                schedule: Schedule {
                    kind: ScheduleKind::Interval(DAY),
                    jitter: None,
                    window: Some(window("0 1 * * *", 3 * HOUR, Tz::UTC)),
                },
                last: Some(utc(2026, 5, 10, 2, 30, 0)),
                want: Some(utc(2026, 5, 11, 2, 30, 0)),
            },
            Case {
                name: "window end is exclusive",
                schedule: Schedule {
                    kind: ScheduleKind::Interval(DAY),
                    jitter: None,
                    window: Some(window("0 1 * * *", 3 * HOUR, Tz::UTC)),
                },
                last: Some(utc(2026, 5, 10, 4, 0, 0)),
                want: Some(utc(2026, 5, 12, 1, 0, 0)),
            },
            Case {
                name: "overdue outside the window waits for it",
                schedule: Schedule {
                    kind: ScheduleKind::Interval(DAY),
                    jitter: None,
                    window: Some(window("0 1 * * *", 3 * HOUR, Tz::UTC)),
                },
                last: Some(utc(2026, 1, 1, 2, 0, 0)),
                want: Some(utc(2026, 5, 11, 1, 0, 0)),
            },
        ];
        for case in cases {
            assert_eq!(
                case.schedule.next_due(&s, case.last, now),
                case.want,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn jitter_is_added_and_stable() {
        let s = secret("tenant1", "api_keys");
        let jitter = Duration::from_secs(600);
        let offset = jitter_offset(&s, jitter);
        assert_eq!(offset, jitter_offset(&s, jitter), "stable");
        assert!(offset < jitter);
        let schedule = Schedule {
            kind: ScheduleKind::Interval(DAY),
            jitter: Some(jitter),
            window: None,
        };
        let last = utc(2026, 5, 1, 0, 0, 0);
        let due = schedule.next_due(&s, Some(last), last).expect("due");
        assert_eq!(due, add(last, DAY + offset).expect("in range"));
        // A known value pins the hash so that a change of algorithm (which would move
        // every secret's due time) cannot happen unnoticed.
        // (Computed independently: first 8 bytes of SHA-256("tenant1\0api_keys"), as a
        // big-endian integer, times 3600e9, shifted right by 64.)
        assert_eq!(
            jitter_offset(&s, Duration::from_secs(3_600)),
            Duration::from_nanos(1_257_478_009_682)
        );
        assert_eq!(jitter_offset(&s, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn jitter_spreads_secrets() {
        let jitter = Duration::from_secs(3_600);
        let offsets: std::collections::BTreeSet<Duration> = (0..200)
            .map(|i| jitter_offset(&secret(&format!("t{i}"), "api_keys"), jitter))
            .collect();
        assert!(offsets.len() > 190, "offsets collide: {}", offsets.len());
        assert_ne!(
            jitter_offset(&secret("ab", "c"), jitter),
            jitter_offset(&secret("a", "bc"), jitter)
        );
    }

    #[test]
    fn cron_steps_beyond_the_range_are_refused() {
        let err = validate_cron("0 0 */90 * *").expect_err("*/90 refused");
        let msg = err.to_string();
        assert!(msg.contains("day 1 of every month"), "{msg}");
        assert!(msg.contains("not every 90 days"), "{msg}");
        assert!(msg.contains("interval = \"90d\""), "{msg}");
        let msg = validate_cron("*/70 * * * *").expect_err("*/70").to_string();
        assert!(msg.contains("minute 0 of every hour"), "{msg}");
        assert!(msg.contains("interval = \"70m\""), "{msg}");
        assert!(validate_cron("0 */24 * * *").is_err());
        assert!(validate_cron("0 0 1 */13 *").is_err());
        assert!(validate_cron("0 0 * * */7").is_err());
        assert!(validate_cron("*/60 * * * * *").is_err(), "seconds field");
        assert!(validate_cron("0 0 1-10/20 * *").is_err(), "range step");
        for ok in [
            "0 2 * * 0",
            "*/15 * * * *",
            "0 */12 * * *",
            "0 0 */15 * *",
            "*/30 * * * * *",
            "0 0 1-10/9 * *",
            "@daily",
            "0 2 * * SUN",
        ] {
            assert!(
                validate_cron(ok).is_ok(),
                "{ok} refused: {:?}",
                validate_cron(ok)
            );
        }
    }

    #[test]
    fn cron_other_problems() {
        assert_eq!(validate_cron(""), Err(CronProblem::Empty));
        assert_eq!(
            validate_cron("* * *"),
            Err(CronProblem::FieldCount { found: 3 })
        );
        assert_eq!(
            validate_cron("0 0 0 1 1 * 2030"),
            Err(CronProblem::FieldCount { found: 7 })
        );
        assert!(matches!(
            validate_cron("61 * * * *"),
            Err(CronProblem::Invalid { .. })
        ));
        assert!(matches!(
            validate_cron("every day"),
            Err(CronProblem::Invalid { .. }) | Err(CronProblem::FieldCount { .. })
        ));
        assert_eq!(validate_cron("0 0 30 2 *"), Err(CronProblem::NeverFires));
    }

    /// Successive on-time rotations across the 2026 DST changes in Berlin: each due time
    /// is exactly interval + jitter after the previous one, so none is skipped or doubled.
    #[test]
    fn interval_is_unaffected_by_dst() {
        let s = secret("tenant1", "database_credentials");
        for (every, jitter) in [
            (HOUR, Duration::from_secs(7)),
            (Duration::from_secs(900), Duration::ZERO),
            (DAY, Duration::from_secs(600)),
        ] {
            let schedule = Schedule {
                kind: ScheduleKind::Interval(every),
                jitter: Some(jitter),
                window: None,
            };
            let step = every + jitter_offset(&s, jitter);
            for start in [utc(2026, 3, 28, 20, 0, 0), utc(2026, 10, 24, 20, 0, 0)] {
                let mut last = start;
                let mut count = 0;
                while last < start + TimeDelta::days(3) {
                    let due = schedule.next_due(&s, Some(last), last).expect("due");
                    assert_eq!((due - last).to_std().ok(), Some(step));
                    last = due;
                    count += 1;
                }
                let want = (3 * DAY).as_nanos().div_ceil(step.as_nanos());
                assert_eq!(count as u128, want, "rotations in 3 days");
            }
        }
    }

    /// A daily cron at 02:30 Berlin time fires once on each DST day: on 2026-03-29 02:30
    /// does not exist (croner moves it forward) and on 2026-10-25 it exists twice.
    #[test]
    fn daily_cron_fires_once_per_day_across_dst() {
        let s = secret("tenant1", "jwt_secrets");
        let schedule = Schedule {
            kind: cron_kind("30 2 * * *", Tz::Europe__Berlin),
            jitter: None,
            window: None,
        };
        for start in [utc(2026, 3, 26, 12, 0, 0), utc(2026, 10, 22, 12, 0, 0)] {
            let mut last = start;
            let mut days = std::collections::BTreeSet::new();
            for _ in 0..6 {
                let due = schedule.next_due(&s, Some(last), last).expect("due");
                assert!(due > last);
                let local_day = due.with_timezone(&Tz::Europe__Berlin).date_naive();
                assert!(days.insert(local_day), "two rotations on {local_day}");
                last = due;
            }
            assert_eq!(days.len(), 6);
            let first = *days.first().expect("non-empty");
            let last_day = *days.last().expect("non-empty");
            assert_eq!((last_day - first).num_days(), 5, "no day skipped");
        }
    }

    fn tz_strategy() -> impl Strategy<Value = Tz> {
        prop_oneof![
            Just(Tz::UTC),
            Just(Tz::Europe__Berlin),
            Just(Tz::America__New_York),
            Just(Tz::Australia__Lord_Howe),
        ]
    }

    fn window_strategy() -> impl Strategy<Value = Option<Window>> {
        let exprs = prop_oneof![
            Just("0 1 * * *"),
            Just("30 2 * * *"),
            Just("0 22 * * 1-5"),
            Just("*/20 * * * *"),
            Just("0 3 1 * *"),
        ];
        proptest::option::of(
            (exprs, 1u64..(6 * 3_600), tz_strategy())
                .prop_map(|(e, secs, tz)| window(e, Duration::from_secs(secs), tz)),
        )
    }

    fn kind_strategy() -> impl Strategy<Value = ScheduleKind> {
        prop_oneof![
            (1u64..(400 * 86_400)).prop_map(|s| ScheduleKind::Interval(Duration::from_secs(s))),
            (
                prop_oneof![
                    Just("0 2 * * 0"),
                    Just("30 2 * * *"),
                    Just("*/15 * * * *"),
                    Just("0 0 1 * *")
                ],
                tz_strategy()
            )
                .prop_map(|(e, tz)| cron_kind(e, tz)),
        ]
    }

    /// Seconds around 2026, so that DST changes of several zones fall inside.
    fn time_strategy() -> impl Strategy<Value = DateTime<Utc>> {
        (0i64..(2 * 365 * 86_400), 0u32..1_000_000_000).prop_map(|(s, ns)| {
            utc(2025, 6, 1, 0, 0, 0) + TimeDelta::seconds(s) + TimeDelta::nanoseconds(ns.into())
        })
    }

    /// Independent check that `t` lies in a window: some opening in the preceding
    /// `duration` (found by iterating forward, not by the code under test) covers it.
    fn in_window(w: &Window, t: DateTime<Utc>) -> bool {
        let from = t - TimeDelta::from_std(w.duration).expect("small") - TimeDelta::seconds(1);
        w.cron
            .iter_after(from.with_timezone(&w.tz))
            .map(|o| o.with_timezone(&Utc))
            .take_while(|o| *o <= t)
            .any(|o| t < o + TimeDelta::from_std(w.duration).expect("small"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn next_due_is_never_before_now_and_inside_the_window(
            kind in kind_strategy(),
            jitter in proptest::option::of(1u64..7_200),
            window in window_strategy(),
            last in proptest::option::of(time_strategy()),
            now in time_strategy(),
            tenant in "[a-z][a-z0-9]{0,8}",
        ) {
            let s = secret(&tenant, "api_keys");
            let schedule = Schedule { kind, jitter: jitter.map(Duration::from_secs), window };
            let due = schedule.next_due(&s, last, now).expect("not manual");
            prop_assert!(due >= now);
            if let (Some(w), Some(_)) = (&schedule.window, last) {
                prop_assert!(in_window(w, due), "{due} not in window {:?}", w.expr);
                prop_assert!(w.contains(due));
            }
        }

        /// The occurrence cache answers what croner answers: one schedule (whose caches
        /// fill up as it is asked) against a fresh copy per question (empty caches, so
        /// each answer comes from croner), for many secrets and instants, including
        /// instants a little before and after each answer and zones with DST changes.
        #[test]
        fn cached_answers_equal_uncached_ones(
            kind in kind_strategy(),
            jitter in proptest::option::of(1u64..7_200),
            window in window_strategy(),
            lasts in proptest::collection::vec(time_strategy(), 1..40),
            now in time_strategy(),
        ) {
            let cached = Schedule { kind, jitter: jitter.map(Duration::from_secs), window };
            for (i, last) in lasts.iter().enumerate() {
                let s = secret(&format!("t{i}"), "k");
                let fresh = cached.clone();
                let due = cached.next_due(&s, Some(*last), now);
                prop_assert_eq!(due, fresh.next_due(&s, Some(*last), now), "last {}", last);
                if let (Some(w), Some(due)) = (&cached.window, due) {
                    for t in [due - TimeDelta::seconds(1), due, due + TimeDelta::milliseconds(1500)] {
                        prop_assert_eq!(
                            w.first_open_at_or_after(t),
                            w.first_open_uncached(t),
                            "window {:?} at {}", w.expr, t
                        );
                    }
                }
            }
        }

        #[test]
        fn jitter_stays_within_bounds(
            tenant in "[a-z0-9][a-z0-9_-]{0,20}",
            key in "[a-z0-9][a-z0-9_-]{0,20}",
            jitter_ns in 1u64..u64::MAX,
        ) {
            let jitter = Duration::from_nanos(jitter_ns);
            let offset = jitter_offset(&secret(&tenant, &key), jitter);
            prop_assert!(offset < jitter);
        }

        /// When not overdue, `now` does not move the due time: only `last_rotated` does.
        #[test]
        fn next_due_depends_on_last_rotated_not_now(
            kind in kind_strategy(),
            jitter in proptest::option::of(1u64..7_200),
            window in window_strategy(),
            last in time_strategy(),
            a in 0.0f64..1.0,
            b in 0.0f64..1.0,
        ) {
            let s = secret("tenant1", "api_keys");
            let schedule = Schedule { kind, jitter: jitter.map(Duration::from_secs), window };
            // The due time computed with now = last is the reference; any now between
            // last and that due time must give the same answer.
            let due = schedule.next_due(&s, Some(last), last).expect("due");
            let span = (due - last).num_milliseconds();
            let now_a = last + TimeDelta::milliseconds((span as f64 * a) as i64);
            let now_b = last + TimeDelta::milliseconds((span as f64 * b) as i64);
            prop_assert_eq!(schedule.next_due(&s, Some(last), now_a), Some(due));
            prop_assert_eq!(schedule.next_due(&s, Some(last), now_b), Some(due));
        }

        /// Interval policies without a window: on-time rotations are exactly
        /// interval + jitter apart, whatever the calendar does.
        #[test]
        fn on_time_interval_rotations_are_evenly_spaced(
            secs in 1u64..(10 * 86_400),
            jitter in 1u64..3_600,
            start in time_strategy(),
        ) {
            let s = secret("tenant2", "jwt_secrets");
            let schedule = Schedule {
                kind: ScheduleKind::Interval(Duration::from_secs(secs)),
                jitter: Some(Duration::from_secs(jitter)),
                window: None,
            };
            let step = Duration::from_secs(secs) + jitter_offset(&s, Duration::from_secs(jitter));
            let mut last = start;
            for _ in 0..20 {
                let due = schedule.next_due(&s, Some(last), last).expect("due");
                prop_assert_eq!((due - last).to_std().ok(), Some(step));
                last = due;
            }
        }
    }
}
