//! Built-in policies, mirroring the seed: a config can use them by name without declaring
//! them, and a `[policies.NAME]` table with the same name overrides only the keys it names.

use std::time::Duration;

use crate::generator::{CharClasses, Encoding, GeneratorSpec};

const DAY: Duration = Duration::from_secs(86_400);
const HOUR: Duration = Duration::from_secs(3_600);

/// The schedule of a built-in policy (none uses cron).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BuiltinSchedule {
    Interval(Duration),
    Manual,
}

/// A built-in policy's values; everything not listed takes the ordinary defaults.
#[derive(Debug, Clone)]
pub(super) struct Builtin {
    pub name: &'static str,
    pub schedule: BuiltinSchedule,
    pub grace: Duration,
    pub generator: GeneratorSpec,
}

/// All built-in policies.
pub(super) fn builtins() -> Vec<Builtin> {
    vec![
        Builtin {
            name: "database_credentials",
            schedule: BuiltinSchedule::Interval(90 * DAY),
            grace: 24 * HOUR,
            // No symbols: they break connection strings and URLs that embed the password.
            generator: GeneratorSpec::Password {
                length: 32,
                classes: CharClasses {
                    lower: true,
                    upper: true,
                    digits: true,
                    symbols: false,
                },
            },
        },
        Builtin {
            name: "api_keys",
            schedule: BuiltinSchedule::Interval(30 * DAY),
            grace: 2 * HOUR,
            generator: GeneratorSpec::Token {
                bytes: 32,
                prefix: "sk_".to_owned(),
                encoding: Encoding::Base64Url,
            },
        },
        Builtin {
            name: "jwt_secrets",
            schedule: BuiltinSchedule::Interval(180 * DAY),
            grace: 48 * HOUR,
            generator: GeneratorSpec::Hmac { bytes: 64 },
        },
        Builtin {
            name: "encryption_keys",
            schedule: BuiltinSchedule::Manual,
            grace: 7 * DAY,
            generator: GeneratorSpec::Hmac { bytes: 32 },
        },
    ]
}

/// The built-in policy called `name`, if any.
pub(super) fn builtin(name: &str) -> Option<Builtin> {
    builtins().into_iter().find(|b| b.name == name)
}
