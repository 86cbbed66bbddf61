//! The group layer: `ProcessGroup`, a kill-on-drop container for process trees.

#[cfg(feature = "process-control")]
mod control;
pub(crate) mod options;
#[cfg(feature = "stats")]
pub(crate) mod sampling;
pub(crate) mod signal;
pub(crate) mod stats;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sys;
use crate::{Command, RunningProcess};

pub use options::ProcessGroupOptions;

/// The kernel mechanism containing a group's processes.
///
/// Reported honestly: where the preferred mechanism is unavailable the fallback in force is
/// named here, never a silent downgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mechanism {
    /// A Linux cgroup v2: whole-tree kill (`cgroup.kill`), freeze, accounting, limits. Nothing
    /// escapes, `setsid` and double-forked daemons included.
    CgroupV2,
    /// A POSIX process group (macOS, the BSDs, and Linux when no cgroup can be created). A
    /// descendant that starts its own session or process group escapes.
    ProcessGroup,
    /// A Windows Job Object with kill-on-close.
    JobObject,
}

impl std::fmt::Display for Mechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mechanism::CgroupV2 => "cgroup v2",
            Mechanism::ProcessGroup => "process group",
            Mechanism::JobObject => "job object",
        })
    }
}

/// Shared state of a group: the container and its options.
#[derive(Debug)]
pub(crate) struct GroupInner {
    pub(crate) container: sys::Container,
    pub(crate) options: ProcessGroupOptions,
    /// Set when the owning [`ProcessGroup`] was dropped or killed for good.
    pub(crate) closed: AtomicBool,
    /// What the group has seen so far (process total, memory peak).
    pub(crate) tally: stats::Tally,
    /// Whether [`ProcessGroup::suspend`] froze the group (until `resume` or `shutdown`). A
    /// spawn holds the read side for its whole (synchronous) duration and a suspend or resume
    /// the write side, so a freeze never lands on a child that is still between its clone and
    /// its `exec`, where the parent waits for it.
    pub(crate) suspended: RwLock<bool>,
}

impl GroupInner {
    /// Records a process started in (or adopted into) the group, for the total count.
    pub(crate) fn note_started(&self, pid: u32) {
        self.tally.note_started(pid);
    }

    pub(crate) fn kill_all(&self) -> std::io::Result<()> {
        self.container.kill_all()
    }

    /// Runs `spawn` unless the group is suspended (see [`GroupInner::suspended`]).
    ///
    /// A suspended group takes no new members: on Linux the child would join the frozen cgroup
    /// before its `exec` and freeze there, with the spawning thread waiting on it for good. The
    /// rule is the same on every platform.
    pub(crate) fn spawn_gate<T>(
        &self,
        program: &str,
        spawn: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let suspended = self.suspended.read().unwrap_or_else(|e| e.into_inner());
        if *suspended {
            return Err(Error::invalid(
                program,
                "starting a process in a suspended group",
                "the group is suspended: resume() it first (a new member would be frozen \
                 before it could start)",
            ));
        }
        spawn()
    }

    /// Freezes (`true`) or thaws the tree and records the state, excluding concurrent spawns.
    pub(crate) fn set_suspended(&self, freeze: bool) -> std::io::Result<()> {
        let mut suspended = self.suspended.write().unwrap_or_else(|e| e.into_inner());
        if freeze {
            self.container.freeze()?;
        } else {
            self.container.thaw()?;
        }
        *suspended = freeze;
        Ok(())
    }
}

/// A kill-on-drop container for process trees.
///
/// Everything started through a group — and everything those processes spawn — is a member.
/// Dropping the group kills the whole tree and reaps it, even while
/// [`RunningProcess`] handles from it are still alive.
///
/// # Platform
/// Linux: a cgroup v2 (falls back to a process group, see [`Mechanism`]). macOS/BSD: process
/// groups. Windows: a Job Object with kill-on-close.
#[derive(Debug)]
pub struct ProcessGroup {
    pub(crate) inner: Arc<GroupInner>,
}

impl ProcessGroup {
    /// Creates a group with default options.
    ///
    /// # Errors
    /// [`Error::Io`] when the OS refuses to create the container.
    pub fn new() -> Result<ProcessGroup> {
        ProcessGroup::with_options(ProcessGroupOptions::default())
    }

    /// Creates a group with `options`.
    ///
    /// # Errors
    /// [`Error::ResourceLimit`] when a requested limit cannot be enforced here (never a
    /// silently unbounded group); [`Error::Io`] when the OS refuses.
    pub fn with_options(options: ProcessGroupOptions) -> Result<ProcessGroup> {
        options.validate()?;
        let container =
            sys::Container::create(&options.container_options()).map_err(|e| match e {
                sys::CreateError::Limit { what, reason } => Error::ResourceLimit {
                    what: what.to_owned(),
                    reason,
                },
                sys::CreateError::Io(source) => Error::io("", "creating a process group", source),
            })?;
        Ok(ProcessGroup {
            inner: Arc::new(GroupInner {
                container,
                options,
                closed: AtomicBool::new(false),
                tally: stats::Tally::default(),
                suspended: RwLock::new(false),
            }),
        })
    }

    /// The private group of one run (`Command` verbs): as cheap as possible, so no extra
    /// accounting cgroups (statistics fall back to `/proc` where the v2 cgroup lacks them).
    pub(crate) fn for_run() -> Result<ProcessGroup> {
        ProcessGroup::with_options(ProcessGroupOptions {
            accounting: false,
            ..ProcessGroupOptions::default()
        })
    }

    /// The containment mechanism in force.
    pub fn mechanism(&self) -> Mechanism {
        self.inner.container.mechanism()
    }

    /// Starts `cmd` inside this group and returns a live handle.
    ///
    /// The handle's timeout, cancellation and drop kill only that child, never its siblings.
    ///
    /// # Errors
    /// As [`Command::start`]; also [`Error::InvalidInput`] while the group is suspended.
    ///
    /// # Cancel safety
    /// Cancel safe: spawning completes synchronously inside the call, and a dropped handle
    /// kills its child.
    pub async fn start(&self, cmd: &Command) -> Result<RunningProcess> {
        crate::verbs::start(cmd, crate::verbs::Scope::Shared(self.inner.clone())).await
    }

    /// The escape hatch: spawns a raw `std::process::Command` inside the group.
    ///
    /// The child is contained like any other (it joins the container before `exec`). You own
    /// the returned `std::process::Child`: wait on it yourself.
    ///
    /// # Errors
    /// [`Error::Spawn`] / [`Error::NotFound`] when the OS refuses; [`Error::InvalidInput`]
    /// while the group is suspended.
    pub fn spawn(&self, cmd: &mut std::process::Command) -> Result<std::process::Child> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = self.inner.spawn_gate(&program, || {
            sys::spawn_std(&self.inner.container, cmd).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::NotFound {
                        program: program.clone(),
                    }
                } else {
                    Error::Spawn {
                        command_line: program.clone(),
                        program: program.clone(),
                        source: e,
                    }
                }
            })
        })?;
        self.inner.note_started(child.id());
        Ok(child)
    }

    /// Hard-kills every member of the tree now. Idempotent. Same as
    /// [`terminate_all`](Self::terminate_all).
    ///
    /// # Errors
    /// [`Error::Io`] if the OS refuses the kill.
    ///
    /// # Platform
    /// Linux cgroup: one `cgroup.kill` write (freeze + kill on kernels before 5.14). Process
    /// group (macOS, BSD, Linux fallback): `killpg(SIGKILL)` per tracked group; a descendant
    /// that left its group (`setsid`) is not reached. Windows: `TerminateJobObject`.
    pub fn kill(&self) -> Result<()> {
        self.inner
            .kill_all()
            .map_err(|e| Error::io("", "killing the process group", e))
    }

    /// Hard-kills every member of the tree now (`SIGKILL` / `cgroup.kill` / `TerminateJobObject`).
    ///
    /// # Errors
    /// [`Error::Io`] if the OS refuses the kill.
    ///
    /// # Platform
    /// As [`kill`](Self::kill).
    pub fn terminate_all(&self) -> Result<()> {
        self.kill()
    }

    /// Graceful teardown: `SIGTERM` to the whole tree, wait up to the grace period
    /// ([`ProcessGroupOptions::shutdown_grace`], default 5 s) for it to exit, then `SIGKILL`
    /// whatever is left, and wait until the tree is gone.
    ///
    /// # Platform
    /// Windows has no `SIGTERM`: the tree is terminated atomically at once.
    ///
    /// # Errors
    /// [`Error::Io`] if signalling fails.
    ///
    /// # Cancel safety
    /// Dropping the future mid-way leaves the tree signalled but alive; dropping the group
    /// still kills it.
    pub async fn shutdown(&self) -> Result<()> {
        let grace = self.inner.options.shutdown_grace;
        let c = &self.inner.container;
        let polite = c.signal(crate::Signal::Term);
        if polite.is_ok() {
            // Wake stopped (or suspended) processes so they can act on SIGTERM.
            let _ = c.signal(crate::Signal::Cont);
            let _ = self.inner.set_suspended(false);
            wait_empty(c, grace).await;
        }
        self.kill()?;
        let empty = wait_empty(c, Duration::from_secs(5)).await;
        crate::trace::teardown(
            &self.mechanism(),
            if empty {
                "shut down"
            } else {
                "shut down; members remain"
            },
        );
        Ok(())
    }

    pub(crate) fn inner(&self) -> &Arc<GroupInner> {
        &self.inner
    }
}

/// Maps an OS error of a group operation to the typed error: `Unsupported` names the
/// operation and the mechanism, everything else is [`Error::Io`] with `what` as context.
#[cfg_attr(
    not(any(feature = "stats", feature = "process-control")),
    allow(dead_code)
)]
pub(crate) fn group_error(group: &ProcessGroup, what: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::Unsupported {
        return Error::Unsupported {
            what: format!("{what} ({e})"),
            platform: format!("{} ({})", std::env::consts::OS, group.mechanism()),
        };
    }
    Error::io("", what, e)
}

/// Polls (with a growing step) until the container is empty or `limit` passes.
pub(crate) async fn wait_empty(c: &sys::Container, limit: Duration) -> bool {
    let deadline = crate::time::after(Instant::now(), limit);
    let mut step = Duration::from_millis(1);
    loop {
        if c.is_empty().unwrap_or(true) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(step).await;
        step = (step * 2).min(Duration::from_millis(25));
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let r = self.inner.kill_all();
        crate::trace::teardown(
            &self.mechanism(),
            if r.is_ok() {
                "killed on drop"
            } else {
                "kill on drop failed"
            },
        );
    }
}
