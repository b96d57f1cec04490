//! A panic hook that logs one line per panic and never captures a backtrace.
//!
//! ractor turns a panic inside a handler into `SupervisionEvent::ActorFailed`, and rotor's
//! supervisors restart the actor, so a panic is an event to count and log, not a crash to debug
//! from a backtrace. The default hook captures a backtrace whenever `RUST_BACKTRACE=1` (set on
//! these machines), which makes restarting a panicking actor cost about 120 µs instead of about
//! 10 µs (ARCHITECTURE.md, "Measured facts"), and prints several lines to stderr outside the structured log.
//!
//! The panic message is logged as is. In principle a message could contain a secret (a
//! `panic!("{value}")`), but only rotor's own code panics inside rotor's actors and its panic
//! messages never format secret material; secret values are held in `SecretValue`, whose
//! `Debug` output is redacted. Keep it that way when adding `expect` or `panic!` calls.

use std::panic::PanicHookInfo;
use std::sync::Once;

/// Replaces the process-wide panic hook with one `tracing::error!` line per panic carrying the
/// thread name, the source location and the message. Idempotent: later calls do nothing.
///
/// Install it in `main` before spawning actors (after the tracing subscriber, so the line has
/// somewhere to go). Tests may install it too; it silences nothing that a subscriber would show.
pub fn install_quiet_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| std::panic::set_hook(Box::new(log_panic)));
}

/// The hook body: never allocates a backtrace, never writes to stderr directly.
fn log_panic(info: &PanicHookInfo<'_>) {
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("<unnamed>");
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
        .unwrap_or_else(|| "<unknown>".to_owned());
    // `&'static str` for `panic!("literal")`, `String` for formatted panics; anything else is
    // a `panic_any` payload that has no printable form.
    let message = info
        .payload_as_str()
        .unwrap_or("<non-string panic payload>");
    tracing::error!(thread, location = %location, message, "panic");
}
