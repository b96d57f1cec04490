//! The `exec` target: a user's commands for systems rotor cannot speak to (a provider's
//! API keys, an appliance).
//!
//! Each step runs its configured command (an argv list, no shell) with the version's value
//! on **stdin**, never in argv or the environment, where `ps` and `/proc` would show it.
//! The environment names the step: `ROTOR_OPERATION` (`apply`, `test`, `promote`,
//! `revoke`, `restore`), `ROTOR_TENANT`, `ROTOR_KEY`, `ROTOR_VERSION`. Exit status 0 is
//! success; anything else, or running past `timeout` (the process is killed), fails the
//! step. A step without a command succeeds. `revoke` gets the revoked version's value (so
//! a hook can delete that key at the provider); a rollback runs `restore` with the restored
//! value if configured, and otherwise `revoke` for the discarded version.
//!
//! The error names the exit status and the last line of stderr (from its last 4 KiB), with
//! every run of 8 or more characters of the value masked, raw or base64- or hex-encoded
//! ([`crate::redact`]): a hook that prints part of the value leaks nothing through it.
//!
//! A step does not inherit rotor's environment ([`crate::hook::clean_env`]): it gets `PATH`,
//! `HOME` and `LANG`, the variables its `env = ["NAME", ...]` key allow-lists, and the
//! `ROTOR_*` variables above.

pub mod config;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use super::{Target, TargetError, ValueReader};
use crate::domain::{SecretRef, VersionNo};
use crate::generator::SecretValue;

const NAME: &str = "exec";
/// Longest stderr line quoted in an error.
const MAX_STDERR: usize = 200;

/// The commands of each step (argv; the first element is the program).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commands {
    pub apply: Option<Vec<String>>,
    pub test: Option<Vec<String>>,
    pub promote: Option<Vec<String>>,
    pub revoke: Option<Vec<String>>,
    pub restore: Option<Vec<String>>,
}

/// Runs a user's commands.
pub struct ExecTarget {
    /// The secret this target serves.
    secret: SecretRef,
    commands: Commands,
    timeout: Duration,
    /// Working directory of the commands (the process's when `None`).
    dir: Option<PathBuf>,
    /// Names of rotor's environment variables a step gets besides the default ones.
    env: Vec<String>,
    reader: ValueReader,
}

impl ExecTarget {
    pub fn new(
        secret: SecretRef,
        commands: Commands,
        timeout: Duration,
        reader: ValueReader,
    ) -> Self {
        ExecTarget {
            secret,
            commands,
            timeout,
            dir: None,
            env: Vec::new(),
            reader,
        }
    }

    /// Passes these variables of rotor's environment to every step (the `env` key).
    pub fn with_env(mut self, names: Vec<String>) -> Self {
        self.env = names;
        self
    }

    /// Runs `argv` for `operation` with `value` on stdin.
    async fn run(
        &self,
        operation: &'static str,
        argv: &[String],
        version: VersionNo,
        value: Option<&SecretValue>,
    ) -> Result<(), TargetError> {
        let secret = &self.secret;
        let fail = |m: String| TargetError::new(NAME, operation, secret, version, m);
        let Some((program, args)) = argv.split_first() else {
            return Ok(());
        };
        let mut cmd = Command::new(program);
        crate::hook::clean_env(&mut cmd, &self.env);
        cmd.args(args)
            .env("ROTOR_OPERATION", operation)
            .env("ROTOR_TENANT", secret.tenant())
            .env("ROTOR_KEY", secret.key())
            .env("ROTOR_VERSION", version.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // A timed-out step drops the child, which kills it.
            .kill_on_drop(true);
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot start {program}: {e}")))?;
        let stdin = child.stdin.take();
        let stderr = child.stderr.take();
        let work = async {
            let feed = async {
                if let Some(mut stdin) = stdin {
                    if let Some(v) = value {
                        // A command that does not read its stdin closes the pipe early: not
                        // an error of the step, its exit status decides.
                        let _ = stdin.write_all(v.expose()).await;
                    }
                    drop(stdin);
                }
            };
            // stderr is drained while the value is written, so a hook that prints before
            // reading cannot fill the pipe and stall both sides.
            let tail = async {
                match stderr {
                    Some(e) => crate::hook::read_tail(e).await,
                    None => Ok(Default::default()),
                }
            };
            let ((), tail) = tokio::join!(feed, tail);
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, tail?))
        };
        let (status, stderr) = match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => return Err(fail(format!("{program} failed to run: {e}"))),
            Err(_) => {
                return Err(fail(format!(
                    "{program} did not finish within {:?} and was killed",
                    self.timeout
                )));
            }
        };
        if status.success() {
            return Ok(());
        }
        let value = value.map(SecretValue::expose);
        let detail = crate::hook::last_line(&stderr, value, MAX_STDERR)
            .unwrap_or_else(|| "no stderr".to_owned());
        Err(fail(format!("{program} exited with {status}: {detail}")))
    }

    async fn read(&self, version: VersionNo) -> Option<SecretValue> {
        self.reader.read_value(&self.secret, version).await.ok()
    }
}

#[async_trait::async_trait]
impl Target for ExecTarget {
    fn type_name(&self) -> &'static str {
        NAME
    }

    async fn apply(&self, version: VersionNo, value: &SecretValue) -> Result<(), TargetError> {
        match &self.commands.apply {
            Some(argv) => self.run("apply", argv, version, Some(value)).await,
            None => Ok(()),
        }
    }

    async fn test(&self, version: VersionNo, value: &SecretValue) -> Result<(), TargetError> {
        match &self.commands.test {
            Some(argv) => self.run("test", argv, version, Some(value)).await,
            None => Ok(()),
        }
    }

    async fn promote(
        &self,
        version: VersionNo,
        _previous: Option<VersionNo>,
    ) -> Result<(), TargetError> {
        match &self.commands.promote {
            Some(argv) => {
                let value = self.read(version).await;
                self.run("promote", argv, version, value.as_ref()).await
            }
            None => Ok(()),
        }
    }

    async fn revoke(&self, version: VersionNo) -> Result<(), TargetError> {
        match &self.commands.revoke {
            Some(argv) => {
                let value = self.read(version).await;
                self.run("revoke", argv, version, value.as_ref()).await
            }
            None => Ok(()),
        }
    }

    async fn restore(&self, restore: VersionNo, revoke: VersionNo) -> Result<(), TargetError> {
        if let Some(argv) = &self.commands.restore {
            let value = self.read(restore).await;
            self.run("restore", argv, restore, value.as_ref()).await?;
        }
        self.revoke(revoke).await
    }
}
