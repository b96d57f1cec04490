//! The one rule for tests that need something outside the repo (a server, a tool): under
//! `CI=true` its absence fails the test, because CI installs and starts everything the suite
//! needs and a missing piece there is a broken setup; on a developer's machine the test is
//! skipped, and the skip is printed on stderr (shown by `cargo test`, as `SKIPPED: ...`).

/// Whether this run is CI (`CI=true` or `CI=1`, as CI systems set it).
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `what` is missing because of `why`: panics under CI; otherwise prints a visible
/// `SKIPPED:` line and returns, so the caller returns early.
#[track_caller]
pub fn skip_or_fail(what: &str, why: &str) {
    if is_ci() {
        panic!("{what} is required under CI=true but is missing: {why}");
    }
    eprintln!("SKIPPED: {what}: {why} (under CI=true this is a failure)");
}
