//! The one place that knows the operating system.
//!
//! Every backend exposes the same shape, chosen once behind the `imp` alias:
//!
//! * [`Container`]: a kill-on-drop container for a process tree (`create`, `spawn`,
//!   `kill_all`, `signal`, `freeze`/`thaw`, `members`, `adopt`, `stats`, `is_empty`, and a
//!   `Drop` that kills, reaps and removes kernel objects);
//! * [`Child`]: a spawned direct child with its pipe ends and an async `wait`.
//!
//! The facade never asks which backend it has except through [`Mechanism`]. Nothing in here
//! knows about `Command` verbs: requests arrive as a plain [`SpawnRequest`].
//!
//! All `unsafe` code of the crate lives under this module, each block with a `// SAFETY:` line.

// Every backend implements the whole container contract whatever the features; the features only
// gate what the facade exposes, so parts of the contract go unused in reduced builds.
#![cfg_attr(
    not(all(feature = "stats", feature = "process-control")),
    allow(dead_code)
)]

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(target_os = "linux")]
pub(crate) mod linux;
#[cfg(unix)]
pub(crate) mod unix;
#[cfg(windows)]
pub(crate) mod windows;

#[cfg(target_os = "linux")]
pub(crate) use linux as imp;
#[cfg(all(unix, not(target_os = "linux")))]
pub(crate) use unix as imp;
#[cfg(windows)]
pub(crate) use windows as imp;

pub(crate) use imp::{Child as ChildInner, Container};

/// An owned OS I/O object a child can take as a standard stream (`OwnedFd` on Unix,
/// `OwnedHandle` on Windows). `File`, `std::io::PipeReader` and `PipeWriter` convert into it with
/// `.into()` on every platform, so the facade needs no `cfg`.
#[cfg(unix)]
pub(crate) type OwnedIo = std::os::fd::OwnedFd;
/// See the Unix definition.
#[cfg(windows)]
pub(crate) type OwnedIo = std::os::windows::io::OwnedHandle;

/// How one standard stream of a child is wired.
#[derive(Debug)]
pub(crate) enum ChildStdio {
    /// `/dev/null` (or `NUL`).
    Null,
    /// The parent's own stream.
    Inherit,
    /// A new pipe whose other end the parent keeps (returned in [`Child`]).
    Piped,
    /// An OS object the child takes over (a file, or one end of a pipeline pipe).
    Redirect(OwnedIo),
}

/// Everything the OS needs to start one child. Plain data; built by the runner layer.
#[derive(Debug)]
pub(crate) struct SpawnRequest {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Start from an empty environment.
    pub env_clear: bool,
    /// Applied in order on top of the (possibly cleared) parent environment; `None` removes.
    pub env: Vec<(OsString, Option<OsString>)>,
    pub cwd: Option<PathBuf>,
    pub stdin: ChildStdio,
    pub stdout: ChildStdio,
    pub stderr: ChildStdio,
    /// POSIX: user id to switch to (after joining the container and after `gid`).
    pub uid: Option<u32>,
    /// POSIX: group id to switch to (before `uid`).
    pub gid: Option<u32>,
    /// POSIX: start a new session.
    pub setsid: bool,
    /// Linux: the direct child receives SIGKILL when the owner dies.
    #[cfg_attr(windows, allow(dead_code))] // the Job Object's kill-on-close covers it
    pub kill_on_parent_death: bool,
    /// Windows: `CREATE_NO_WINDOW`.
    pub create_no_window: bool,
}

/// Resource caps applied when a container is created.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ContainerOptions {
    pub memory_max: Option<u64>,
    pub max_processes: Option<u64>,
    /// Fraction of one CPU core.
    pub cpu_quota: Option<f64>,
    /// Worth paying a little at creation for better accounting (Linux hybrid hosts: a v1
    /// `memory` group when the v2 hierarchy lacks the controller). Off for the private group of
    /// a one-shot run, on for an explicit `ProcessGroup`.
    pub accounting: bool,
    /// Linux: may we move our own process into a leaf cgroup so controllers can be enabled for
    /// the group cgroups (the no-internal-process rule)?
    pub allow_self_move: bool,
}

impl ContainerOptions {
    /// Whether any limit was asked for.
    #[allow(dead_code)]
    pub(crate) fn has_limits(&self) -> bool {
        self.memory_max.is_some() || self.max_processes.is_some() || self.cpu_quota.is_some()
    }
}

/// How a child ended, as the OS reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExitInfo {
    /// The exit code, when the child exited normally.
    pub code: Option<i32>,
    /// The signal that killed it (POSIX only).
    pub signal: Option<i32>,
}

/// A boxed async reader for a child's stdout or stderr pipe.
pub(crate) type PipeReader = Pin<Box<dyn AsyncRead + Send + Sync>>;
/// A boxed async writer for a child's stdin pipe.
pub(crate) type PipeWriter = Pin<Box<dyn AsyncWrite + Send + Sync>>;

/// A spawned direct child: its pid, the parent's pipe ends, and the OS handle to wait on.
pub(crate) struct Child {
    pub pid: u32,
    pub stdin: Option<PipeWriter>,
    pub stdout: Option<PipeReader>,
    pub stderr: Option<PipeReader>,
    pub inner: ChildInner,
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// Asks the direct child (only) to stop: `SIGTERM` on POSIX, so it can clean up; its
/// descendants and the siblings in its container are not signalled. Windows has no polite stop
/// for an arbitrary console process, so there it is the hard kill of that one process.
pub(crate) fn request_stop(child: &mut ChildInner) -> io::Result<()> {
    #[cfg(unix)]
    {
        child.start_term()
    }
    #[cfg(not(unix))]
    {
        child.start_kill()
    }
}

/// Resource use of one process, as the OS reports it (Linux: `/proc/<pid>/stat` and
/// `/proc/<pid>/status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ProcUsage {
    /// User CPU time of the process plus its reaped children.
    pub cpu_user: std::time::Duration,
    /// System CPU time of the process plus its reaped children.
    pub cpu_system: std::time::Duration,
    /// Resident set size now, in bytes.
    pub rss_bytes: u64,
    /// The kernel's high-water mark of the resident set (`VmHWM`), in bytes.
    pub peak_rss_bytes: u64,
}

/// Resource use of one live process; `None` when it is gone or the platform has no cheap way
/// to read another process's usage.
#[cfg_attr(not(feature = "stats"), allow(dead_code))]
pub(crate) fn process_usage(pid: u32) -> Option<ProcUsage> {
    #[cfg(target_os = "linux")]
    {
        linux::procfs::process_usage(pid)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// How many OOM kills the kernel has recorded in `c` so far; `None` when the container has no
/// memory accounting that counts them (only Linux cgroups with a memory controller do).
pub(crate) fn oom_kills(c: &Container) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        c.oom_kills()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = c;
        None
    }
}

/// Which error made container creation fail, so the facade can map it to a typed error.
#[derive(Debug)]
pub(crate) enum CreateError {
    /// A requested limit cannot be enforced here (`what` names it, `reason` says why).
    Limit { what: &'static str, reason: String },
    /// The OS refused for another reason.
    Io(io::Error),
}

impl From<io::Error> for CreateError {
    fn from(e: io::Error) -> Self {
        CreateError::Io(e)
    }
}

/// Spawns a caller-built `std::process::Command` inside `c` (the `ProcessGroup::spawn` escape
/// hatch). The child joins the container before `exec`.
pub(crate) fn spawn_std(
    c: &Container,
    cmd: &mut std::process::Command,
) -> io::Result<std::process::Child> {
    c.spawn_std(cmd)
}

#[cfg(all(test, windows))]
impl Child {
    /// Waits for the direct child to exit (backend tests).
    pub(crate) async fn wait(&mut self) -> io::Result<ExitInfo> {
        self.inner.wait().await
    }

    /// Hard-kills the direct child only (backend tests).
    pub(crate) fn start_kill(&mut self) -> io::Result<()> {
        self.inner.start_kill()
    }

    /// The exit status if the child has exited, without blocking (backend tests).
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitInfo>> {
        self.inner.try_wait()
    }
}

/// Whether `uid`, `gid` and `setsid` can be honoured on this platform (POSIX only).
pub(crate) const HAS_POSIX_IDENTITY: bool = cfg!(unix);

/// How a hard-killed process is reported: no exit code; SIGKILL on POSIX, no signal on Windows
/// (where the Job Object backend reports its own kills without the OS exit code 1).
pub(crate) fn killed_exit() -> ExitInfo {
    ExitInfo {
        code: None,
        signal: if cfg!(unix) { Some(9) } else { None },
    }
}
