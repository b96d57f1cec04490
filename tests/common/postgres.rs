//! The machine's PostgreSQL (127.0.0.1:5432, database `test`) for the tests and the target
//! benches: its one-time setup, `psql` as the superuser, and a guard dropping test roles.
//! `benches/targets.rs` includes
//! this file too, so it uses nothing else from `tests/common`.

use std::path::Path;
use std::sync::OnceLock;

/// Runs `.ci/setup-postgres.sh` once per process; `Err` when PostgreSQL is not there.
pub fn setup() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/setup-postgres.sh"))
            .output()
            .map_err(|e| format!("cannot run setup-postgres.sh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "setup-postgres.sh failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    })
    .clone()
}

/// Runs one SQL statement through `psql` as `postgres`; whether it succeeded.
pub fn psql(sql: &str) -> bool {
    std::process::Command::new("psql")
        .args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-c",
            sql,
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Drops the roles a test created when it ends, passed or not (synchronously, through
/// `psql`).
pub struct Roles(pub Vec<String>);

impl Drop for Roles {
    fn drop(&mut self) {
        for r in &self.0 {
            psql(&format!("DROP ROLE IF EXISTS \"{r}\""));
        }
    }
}
