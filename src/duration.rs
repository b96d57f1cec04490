//! Humane durations for configuration: `"90d"`, `"24h"`, `"10m"`, `"1s"`, `"500ms"` and
//! compounds such as `"1h30m"`, parsed into [`std::time::Duration`] and printed back by
//! [`format_duration`].
//!
//! The grammar is deliberately small: one or more `<digits><unit>` groups, units in
//! strictly decreasing order (`d`, `h`, `m`, `s`, `ms`, `us`, `ns`), no spaces, no signs,
//! no fractions. Every duration in rotor's configuration means "how long until something
//! happens", so zero is refused here rather than in every caller.

use std::time::Duration;

/// Why a string is not a humane duration. Messages name the offending text so that the
/// config layer can show them next to the key they came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("is empty; write a number and a unit, e.g. \"30s\", \"10m\", \"24h\", \"90d\"")]
    Empty,
    #[error("is negative; durations count forward, e.g. \"30s\"")]
    Negative,
    #[error("is zero; a duration here must be longer than zero")]
    Zero,
    #[error("has a fraction; write \"1h30m\" instead of \"1.5h\" (units: d, h, m, s, ms, us, ns)")]
    Fraction,
    #[error("{number:?} has no unit; write e.g. \"{number}s\" (units: d, h, m, s, ms, us, ns)")]
    MissingUnit { number: String },
    #[error("{unit:?} is not a unit; use d, h, m, s, ms, us or ns")]
    UnknownUnit { unit: String },
    #[error("expected a number before {at:?} (units: d, h, m, s, ms, us, ns)")]
    MissingNumber { at: String },
    #[error(
        "unit {unit:?} is out of order or repeated; write units from largest to smallest, each once (e.g. \"1h30m\")"
    )]
    UnitOrder { unit: String },
    #[error("is too long to represent")]
    Overflow,
}

/// Units in the order they must appear, with their length in nanoseconds.
const UNITS: [(&str, u128); 7] = [
    ("d", 86_400 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses a humane duration. Zero, negative, empty and malformed inputs are errors.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    if text.starts_with('-') {
        return Err(DurationError::Negative);
    }
    let bytes = text.as_bytes();
    let mut pos = 0;
    let mut total: u128 = 0;
    // Index into UNITS of the last unit used; the next one must come strictly later.
    let mut last_unit: Option<usize> = None;
    while pos < bytes.len() {
        let digits_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == digits_start {
            return Err(DurationError::MissingNumber {
                at: text[pos..].to_owned(),
            });
        }
        let number = &text[digits_start..pos];
        if pos < bytes.len() && (bytes[pos] == b'.' || bytes[pos] == b',') {
            return Err(DurationError::Fraction);
        }
        let unit_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_alphabetic() {
            pos += 1;
        }
        let unit = &text[unit_start..pos];
        if unit.is_empty() {
            if pos == bytes.len() {
                return Err(DurationError::MissingUnit {
                    number: number.to_owned(),
                });
            }
            // Something that is neither digit nor letter: report it as a bad unit.
            let bad: String = text[pos..].chars().take(1).collect();
            return Err(DurationError::UnknownUnit { unit: bad });
        }
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(DurationError::UnknownUnit {
                unit: unit.to_owned(),
            });
        };
        if last_unit.is_some_and(|last| index <= last) {
            return Err(DurationError::UnitOrder {
                unit: unit.to_owned(),
            });
        }
        last_unit = Some(index);
        let value: u128 = number.parse().map_err(|_| DurationError::Overflow)?;
        total = value
            .checked_mul(UNITS[index].1)
            .and_then(|nanos| total.checked_add(nanos))
            .ok_or(DurationError::Overflow)?;
    }
    if total == 0 {
        return Err(DurationError::Zero);
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    // The remainder is below 10^9, so it always fits in u32.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Prints a duration in the humane form [`parse_duration`] reads, largest units first:
/// `90d`, `1h30m`, `1s500ms`. Zero prints as `0s`.
pub fn format_duration(duration: Duration) -> String {
    let mut rest = duration.as_nanos();
    if rest == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (name, nanos) in UNITS {
        let count = rest / nanos;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push_str(name);
            rest -= count * nanos;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_documented_forms() {
        let cases = [
            ("90d", Duration::from_secs(90 * 86_400)),
            ("24h", Duration::from_secs(24 * 3_600)),
            ("10m", Duration::from_secs(600)),
            ("1s", Duration::from_secs(1)),
            ("500ms", Duration::from_millis(500)),
            ("1h30m", Duration::from_secs(5_400)),
            ("1d2h3m4s5ms", Duration::new(93_784, 5_000_000)),
            ("250us", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            ("0h5m", Duration::from_secs(300)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        let cases = [
            ("", DurationError::Empty),
            ("0s", DurationError::Zero),
            ("0d0h", DurationError::Zero),
            ("-5s", DurationError::Negative),
            ("1.5h", DurationError::Fraction),
            (
                "30",
                DurationError::MissingUnit {
                    number: "30".into(),
                },
            ),
            ("5y", DurationError::UnknownUnit { unit: "y".into() }),
            ("5 s", DurationError::UnknownUnit { unit: " ".into() }),
            ("h", DurationError::MissingNumber { at: "h".into() }),
            ("30m1h", DurationError::UnitOrder { unit: "h".into() }),
            ("1s1s", DurationError::UnitOrder { unit: "s".into() }),
            (
                "99999999999999999999999999999999999999999d",
                DurationError::Overflow,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Err(want), "{text:?}");
        }
    }

    #[test]
    fn messages_help_the_reader() {
        let msg = parse_duration("1.5h").unwrap_err().to_string();
        assert!(msg.contains("1h30m"), "{msg}");
        let msg = parse_duration("30").unwrap_err().to_string();
        assert!(msg.contains("\"30s\""), "{msg}");
    }

    #[test]
    fn formats_largest_units_first() {
        assert_eq!(format_duration(Duration::from_secs(90 * 86_400)), "90d");
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1s500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_nanos(1_001)), "1us1ns");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(nanos in 1u64..u64::MAX) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,12}") {
            let _ = parse_duration(&text);
        }
    }
}
