//! The real `rotor agent` binary in a directory of its own (its config `agent.toml`, its
//! log `agent.log` at the leak-check level), killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::rotor_bin::LEAK_CHECK_LOG;

/// `rotor agent` in `dir`, logging to `agent.log`; killed when dropped.
pub struct AgentBin {
    child: Child,
    dir: PathBuf,
}

impl AgentBin {
    pub fn start(dir: &Path, config: &str, env: &[(&str, &str)], remove: &[&str]) -> AgentBin {
        std::fs::write(dir.join("agent.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rotor"));
        cmd.args(["agent", "--config", "agent.toml"])
            .current_dir(dir)
            .env("RUST_LOG", LEAK_CHECK_LOG)
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        for name in remove {
            cmd.env_remove(name);
        }
        AgentBin {
            child: cmd.spawn().expect("rotor agent starts"),
            dir: dir.to_owned(),
        }
    }

    /// The agent's process id (to freeze it with SIGSTOP, or kill it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit; panics if it takes longer than `limit`.
    pub fn terminate(&mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        super::wait::eventually_blocking(limit, "rotor agent to exit after SIGTERM", || {
            self.child.try_wait().unwrap()
        })
    }

    #[track_caller]
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("rotor agent exited ({status}); log:\n{}", self.log());
        }
    }
}

impl Drop for AgentBin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
