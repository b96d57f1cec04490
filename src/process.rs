//! Process-wide hardening applied once at the start of `rotor run`: key material and
//! secret values live in this process's memory, so it must not be written out by a core
//! dump or read through `/proc/<pid>/mem` by a same-user process.
//!
//! Swap is the other way memory reaches a disk: rotor does not lock its memory
//! (`mlock`): values are short-lived (`SecretValue` zeroes on drop, and so do the AES key
//! schedules through the `zeroize` features of `aes`/`aes-gcm`), and a container runtime
//! normally runs without swap. Where swap is on, the operator turns it off for rotor's node
//! or accepts it; ARCHITECTURE.md says so.

use std::io;

/// Makes the process non-dumpable (`PR_SET_DUMPABLE` 0: no core file, and
/// `/proc/<pid>/mem`, `environ` and ptrace are closed to other unprivileged processes of
/// the same user) and sets the core file size limit to 0 for whatever it starts.
pub fn disable_core_dumps() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_DUMPABLE takes one integer argument and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we pass by reference and keeps no pointer to it.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_the_call_the_process_is_not_dumpable_and_writes_no_core() {
        disable_core_dumps().expect("prctl and setrlimit");
        // SAFETY: PR_GET_DUMPABLE takes no argument and returns the flag.
        let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
        assert_eq!(dumpable, 0);
        let mut limit = libc::rlimit {
            rlim_cur: 1,
            rlim_max: 1,
        };
        // SAFETY: getrlimit writes into the struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) }, 0);
        assert_eq!((limit.rlim_cur, limit.rlim_max), (0, 0));
    }
}
