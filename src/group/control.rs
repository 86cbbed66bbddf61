//! Whole-tree control (`process-control` feature): signals, suspend/resume, members, adopt.

use std::io;

use super::{group_error, ProcessGroup};
use crate::error::{Error, Result};
use crate::Signal;

impl ProcessGroup {
    /// Sends `sig` to every member of the tree.
    ///
    /// [`Signal::Kill`] takes the same whole-tree hard-kill path as
    /// [`terminate_all`](Self::terminate_all) (`cgroup.kill` on Linux). Members that exit
    /// while the signal is being delivered are not an error.
    ///
    /// # Platform
    /// POSIX: every signal. A cgroup reaches the whole tree; the process-group mechanism
    /// reaches every process still in the groups it created (a descendant that called
    /// `setsid` escapes). Windows: only [`Signal::Kill`].
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a signal the platform cannot deliver; [`Error::Io`] when the
    /// OS refuses.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        if sig == Signal::Kill {
            return self.terminate_all();
        }
        self.inner
            .container
            .signal(sig)
            .map_err(|e| group_error(self, &format!("sending {sig} to the process group"), e))
    }

    /// Freezes every member of the tree. Idempotent: suspending a suspended group does
    /// nothing.
    ///
    /// Dropping, [`kill`](Self::kill)ing or [`shutdown`](Self::shutdown) of a suspended group
    /// still tears it down (shutdown thaws it so members can act on `SIGTERM`).
    ///
    /// While suspended the group takes no new members: [`start`](Self::start) and
    /// [`spawn`](Self::spawn) fail with [`Error::InvalidInput`] until [`resume`](Self::resume)
    /// (on Linux the new child would freeze before its `exec`, and the spawning thread with
    /// it). A spawn already in progress finishes before the freeze.
    ///
    /// # Platform
    /// Linux cgroup: one `cgroup.freeze` write covering the whole subtree, returning once the
    /// kernel reports it frozen (bounded wait). Process-group mechanism (macOS, BSD, Linux
    /// fallback): `SIGSTOP` to every tracked group. Windows: every thread of every member is
    /// suspended (best effort); there suspends nest and need matching resumes.
    ///
    /// # Errors
    /// [`Error::Unsupported`] where the mechanism cannot freeze; [`Error::Io`] when the OS
    /// refuses.
    pub fn suspend(&self) -> Result<()> {
        self.inner
            .set_suspended(true)
            .map_err(|e| group_error(self, "suspending the process group", e))
    }

    /// Lets a [`suspend`](Self::suspend)ed tree run again. Idempotent.
    ///
    /// # Platform
    /// As [`suspend`](Self::suspend): `cgroup.freeze` = 0, or `SIGCONT`.
    ///
    /// # Errors
    /// As [`suspend`](Self::suspend).
    pub fn resume(&self) -> Result<()> {
        self.inner
            .set_suspended(false)
            .map_err(|e| group_error(self, "resuming the process group", e))
    }

    /// A snapshot of the live member pids.
    ///
    /// # Platform
    /// Linux cgroup and Windows Job Object: every process of the tree, descendants included.
    /// Process-group mechanism: the tracked process-group **leaders** (the direct children
    /// started through the group, and adopted pids) that still exist; their descendants are
    /// not listed.
    ///
    /// # Errors
    /// [`Error::Io`] when the OS cannot list them.
    pub fn members(&self) -> Result<Vec<u32>> {
        self.inner
            .container
            .members()
            .map_err(|e| group_error(self, "listing the process group's members", e))
    }

    /// Brings an existing process (and, on a cgroup, every process it forks from now on) under
    /// the group: it is signalled, suspended, counted and killed with the rest of the tree.
    ///
    /// # Platform
    /// Linux cgroup: the process moves into the group's cgroup (its threads too), leaving its
    /// old one; on hybrid hosts also into the group's v1 limit cgroups. Process-group
    /// mechanism: the pid's own process group is tracked when it leads one (else the pid
    /// alone); children it forked earlier into other groups are not covered. Windows: the
    /// process is assigned to the Job Object.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a pid that does not name a live process (it exited, is a
    /// zombie, or never existed), for pid 0 or 1, for the calling process itself, and for a
    /// process we are not permitted to manage (another user's); [`Error::Unsupported`] where
    /// the mechanism cannot adopt; [`Error::Io`] for other OS refusals.
    pub fn adopt(&self, pid: u32) -> Result<()> {
        let what = format!("pid {pid}");
        if pid <= 1 {
            return Err(Error::invalid("", what, "pid 0 and 1 cannot be adopted"));
        }
        if pid == std::process::id() {
            return Err(Error::invalid(
                "",
                what,
                "is the calling process: adopting it would kill us with the group",
            ));
        }
        match self.inner.container.adopt(pid) {
            Ok(()) => {
                self.inner.note_started(pid);
                Ok(())
            }
            Err(e) => match e.kind() {
                io::ErrorKind::NotFound => Err(Error::invalid(
                    "",
                    what,
                    format!("cannot adopt: not a live process ({e})"),
                )),
                io::ErrorKind::PermissionDenied => Err(Error::invalid(
                    "",
                    what,
                    format!("cannot adopt: not permitted to manage it ({e})"),
                )),
                _ => Err(group_error(self, &format!("adopting pid {pid}"), e)),
            },
        }
    }
}
