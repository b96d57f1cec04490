//! Where "now" comes from. Production reads the system clock; in-process tests run on
//! tokio's paused clock so that hours of schedule pass in microseconds.

use chrono::{DateTime, TimeDelta, Utc};

#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The wall clock.
    System,
    /// `base` plus the tokio time elapsed since `start`; follows `tokio::time::pause` and
    /// `advance`, for tests.
    Tokio {
        base: DateTime<Utc>,
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// A tokio-driven clock starting at `base`. Must be called inside a runtime.
    pub fn tokio(base: DateTime<Utc>) -> Clock {
        Clock::Tokio {
            base,
            start: tokio::time::Instant::now(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Tokio { base, start } => {
                let elapsed = tokio::time::Instant::now().duration_since(*start);
                *base + TimeDelta::from_std(elapsed).unwrap_or(TimeDelta::MAX)
            }
        }
    }

    /// The tokio delay until `at`, never negative. Long delays are capped so that a timer
    /// armed months ahead re-checks the wall clock daily (the machine re-arms early timers).
    pub fn delay_until(&self, at: DateTime<Utc>) -> std::time::Duration {
        const MAX: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
        (at - self.now()).to_std().unwrap_or_default().min(MAX)
    }
}
