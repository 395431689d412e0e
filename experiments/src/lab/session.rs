//! Starting a child in a session of its own, the one place of this crate that needs `unsafe`.
//!
//! The lab's services and the deadline guards both start this way. A process alone in its
//! session is out of reach of whatever happens to its parent: no SIGHUP when the parent's
//! session ends, no SIGHUP and SIGCONT when the parent dies and leaves a stopped process group
//! orphaned, no signal sent to the parent's process group.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Starting a child in a session (and so a process group) of its own.
pub(crate) trait InOwnSession {
    /// Makes the child call `setsid(2)` before it execs.
    fn in_own_session(&mut self) -> &mut Self;
}

impl InOwnSession for Command {
    #[allow(unsafe_code)] // `pre_exec` is unsafe: its closure runs between fork and exec.
    fn in_own_session(&mut self) -> &mut Self {
        // SAFETY: the closure only calls setsid(2), which is async-signal-safe, allocates
        // nothing and takes no lock, as code between fork and exec must. The child is not a
        // process group leader yet (no `process_group` is set), so setsid cannot fail with
        // EPERM; if it fails anyway, the spawn fails with that error.
        unsafe {
            self.pre_exec(|| {
                nix::unistd::setsid()
                    .map(drop)
                    .map_err(std::io::Error::from)
            })
        }
    }
}
