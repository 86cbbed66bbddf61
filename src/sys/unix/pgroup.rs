//! The POSIX process-group container: macOS, the BSDs, and the Linux fallback when no cgroup
//! can be created.
//!
//! Each direct child becomes the leader of a new process group (`setpgid(0, 0)` before exec, or
//! a new session with `setsid`); teardown is `killpg(SIGKILL)` over every tracked group. Its
//! weakness is documented rather than hidden: a descendant that calls `setsid`/`setpgid` itself
//! leaves the group and escapes. `members()` lists the tracked group leaders only.

use std::io;
use std::sync::Mutex;

use super::{kill_pgroup, kill_pid, pgroup_alive, pid_exists, signal_number, ChildSetup};
use crate::sys::{ContainerOptions, CreateError, SpawnRequest};
use crate::{GroupStats, Mechanism, Signal};

/// What one tracked entry is: a process group we created, or a single adopted pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracked {
    Group(i32),
    Pid(i32),
}

/// A set of process groups killed together.
#[derive(Debug, Default)]
pub(crate) struct Pgroup {
    tracked: Mutex<Vec<Tracked>>,
    /// Process groups registered with the parent-death guardian.
    guarded: Mutex<Vec<i32>>,
}

impl Pgroup {
    /// A new, empty container. Limits cannot be enforced by a process group.
    pub(crate) fn create(opts: &ContainerOptions) -> Result<Pgroup, CreateError> {
        if let Some(what) = limit_name(opts) {
            return Err(CreateError::Limit {
                what,
                reason: "the process-group mechanism cannot cap a whole tree; a cgroup v2 (Linux) \
                         or Job Object (Windows) is required"
                    .into(),
            });
        }
        Ok(Pgroup::default())
    }

    /// Always [`Mechanism::ProcessGroup`].
    #[cfg_attr(target_os = "linux", allow(dead_code))] // Linux asks its own Container enum
    pub(crate) fn mechanism(&self) -> Mechanism {
        Mechanism::ProcessGroup
    }

    /// Spawns a child as the leader of a new process group.
    pub(crate) fn spawn(&self, req: SpawnRequest) -> io::Result<crate::sys::Child> {
        let guard = self.prepare_guard(&req);
        let setup = ChildSetup {
            new_pgroup: true,
            setsid: req.setsid,
            pdeathsig: req.kill_on_parent_death && cfg!(target_os = "linux"),
            uid: req.uid,
            gid: req.gid,
            ..ChildSetup::default()
        };
        let child = self.spawn_with(req, setup)?;
        self.guard_group(child.pid as i32, guard);
        Ok(child)
    }

    /// Before a spawn: starts the parent-death guardian when the request asks for
    /// `kill_on_parent_death` (best effort: without it, PDEATHSIG still covers the direct
    /// child). Returns whether the new group must be registered with it.
    pub(crate) fn prepare_guard(&self, req: &SpawnRequest) -> bool {
        if req.kill_on_parent_death {
            let _ = super::guardian::ensure(&[]);
        }
        req.kill_on_parent_death
    }

    /// After a spawn: registers the child's process group with the guardian (see
    /// [`Pgroup::prepare_guard`]).
    fn guard_group(&self, pgid: i32, guard: bool) {
        if guard {
            super::guardian::register_pgroup(pgid);
            self.guarded
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(pgid);
        }
    }

    /// Spawns with an already prepared setup (the Linux backend adds cgroup fds).
    pub(crate) fn spawn_with(
        &self,
        req: SpawnRequest,
        setup: ChildSetup,
    ) -> io::Result<crate::sys::Child> {
        let child = super::spawn(req, setup)?;
        self.track(Tracked::Group(child.pid as i32));
        Ok(child)
    }

    /// Spawns a caller-built std command as the leader of a new process group.
    pub(crate) fn spawn_std(
        &self,
        cmd: &mut std::process::Command,
    ) -> io::Result<std::process::Child> {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0);
        let child = cmd.spawn()?;
        self.track(Tracked::Group(child.id() as i32));
        Ok(child)
    }

    /// Tracks a process group whose leader was spawned elsewhere (the Linux clone3 path), and
    /// registers it with the guardian when `guard` (from [`Pgroup::prepare_guard`]).
    #[cfg(target_os = "linux")]
    pub(crate) fn track_spawned(&self, pgid: i32, guard: bool) {
        self.track(Tracked::Group(pgid));
        self.guard_group(pgid, guard);
    }

    fn track(&self, t: Tracked) {
        let mut v = self.tracked.lock().unwrap_or_else(|e| e.into_inner());
        // Forget groups that are already empty so a long-lived group does not grow.
        v.retain(|t| alive(*t));
        if !v.contains(&t) {
            v.push(t);
        }
    }

    fn snapshot(&self) -> Vec<Tracked> {
        self.tracked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// SIGKILL to every tracked group. Idempotent.
    pub(crate) fn kill_all(&self) -> io::Result<()> {
        self.send(libc::SIGKILL)
    }

    fn send(&self, sig: libc::c_int) -> io::Result<()> {
        let mut first_err = None;
        for t in self.snapshot() {
            let r = match t {
                Tracked::Group(g) => kill_pgroup(g, sig),
                Tracked::Pid(p) => kill_pid(p, sig),
            };
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Sends `sig` to every tracked group.
    pub(crate) fn signal(&self, sig: Signal) -> io::Result<()> {
        self.send(signal_number(sig))
    }

    /// SIGSTOP to every tracked group.
    pub(crate) fn freeze(&self) -> io::Result<()> {
        self.send(libc::SIGSTOP)
    }

    /// SIGCONT to every tracked group.
    pub(crate) fn thaw(&self) -> io::Result<()> {
        self.send(libc::SIGCONT)
    }

    /// The tracked group leaders (and adopted pids) that still exist.
    pub(crate) fn members(&self) -> io::Result<Vec<u32>> {
        Ok(self
            .snapshot()
            .into_iter()
            .filter_map(|t| match t {
                Tracked::Group(g) if pid_exists(g) => Some(g as u32),
                Tracked::Pid(p) if pid_exists(p) => Some(p as u32),
                _ => None,
            })
            .collect())
    }

    /// Brings `pid` under the group: its own process group when it leads one, else the pid alone.
    pub(crate) fn adopt(&self, pid: u32) -> io::Result<()> {
        let pid = i32::try_from(pid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        super::check_signalable(pid)?;
        let pgid = super::getpgid(pid)?;
        // SAFETY: getpgrp has no preconditions.
        let own = unsafe { libc::getpgrp() };
        if pgid == pid && pgid != own {
            self.track(Tracked::Group(pgid));
        } else {
            self.track(Tracked::Pid(pid));
        }
        Ok(())
    }

    /// Process counts only: a process group has no whole-tree accounting.
    pub(crate) fn stats(&self) -> io::Result<GroupStats> {
        Ok(GroupStats {
            active_process_count: self.members()?.len() as u64,
            ..GroupStats::default()
        })
    }

    /// A process group has no memory accounting: never an OOM kill to report.
    #[allow(dead_code)]
    pub(crate) fn oom_killed(&self) -> bool {
        false
    }

    /// Whether every tracked group is gone.
    pub(crate) fn is_empty(&self) -> io::Result<bool> {
        Ok(!self.snapshot().into_iter().any(alive))
    }
}

fn alive(t: Tracked) -> bool {
    match t {
        Tracked::Group(g) => pgroup_alive(g),
        Tracked::Pid(p) => pid_exists(p),
    }
}

pub(crate) fn limit_name(opts: &ContainerOptions) -> Option<&'static str> {
    if opts.memory_max.is_some() {
        Some("memory_max")
    } else if opts.max_processes.is_some() {
        Some("max_processes")
    } else if opts.cpu_quota.is_some() {
        Some("cpu_quota")
    } else {
        None
    }
}

impl Drop for Pgroup {
    fn drop(&mut self) {
        let _ = self.kill_all();
        for pg in self
            .guarded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            super::guardian::unregister_pgroup(pg);
        }
    }
}
