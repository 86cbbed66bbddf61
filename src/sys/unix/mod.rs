//! POSIX pieces shared by every Unix backend: the spawn path (with the in-child setup hook),
//! the direct-child handle, signal numbers, and the process-group container.
//!
//! On macOS and the BSDs this module is the whole backend (`imp`); on Linux it serves the
//! process-group fallback and the spawn path of the cgroup backend.

pub(crate) mod guardian;
pub(crate) mod pgroup;

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt as _;
use std::process::Stdio;

use super::{ChildStdio, ExitInfo, SpawnRequest};
use crate::Signal;

#[cfg(not(target_os = "linux"))]
pub(crate) use pgroup::Pgroup as Container;

/// What the forked child does between `fork` and `exec`, in this order: join the container
/// (write `0` to each already-open `cgroup.procs` fd), start a new process group or session, arm
/// the parent-death signal, then drop privileges (gid before uid). Joining comes first so a
/// privilege drop can never leave an uncontained child, and so the join is done with the
/// owner's credentials.
#[derive(Debug, Default)]
pub(crate) struct ChildSetup {
    /// `cgroup.procs` files, opened `O_WRONLY | O_CLOEXEC` by the parent.
    pub join_fds: Vec<RawFd>,
    /// `setpgid(0, 0)`: become the leader of a new process group.
    pub new_pgroup: bool,
    pub setsid: bool,
    pub pdeathsig: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Spawns `req` with `setup` run in the child before `exec`.
///
/// Uses std's fork/exec path with an exec-error pipe (so a failed `exec` or setup step comes
/// back as the OS error); the hook performs only async-signal-safe system calls and allocates
/// nothing.
pub(crate) fn spawn(req: SpawnRequest, setup: ChildSetup) -> io::Result<super::Child> {
    if req.create_no_window {
        // A documented no-op off Windows.
    }
    let mut std_cmd = std::process::Command::new(&req.program);
    std_cmd.args(&req.args);
    if req.env_clear {
        std_cmd.env_clear();
    }
    for (k, v) in &req.env {
        match v {
            Some(v) => std_cmd.env(k, v),
            None => std_cmd.env_remove(k),
        };
    }
    if let Some(dir) = &req.cwd {
        std_cmd.current_dir(dir);
    }
    std_cmd.stdin(to_stdio(req.stdin));
    std_cmd.stdout(to_stdio(req.stdout));
    std_cmd.stderr(to_stdio(req.stderr));

    let is_root = {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    };
    let ChildSetup {
        join_fds,
        new_pgroup,
        setsid,
        pdeathsig,
        uid,
        gid,
    } = setup;
    let needs_hook = !join_fds.is_empty() || setsid || pdeathsig || uid.is_some() || gid.is_some();
    if needs_hook {
        let hook = move || -> io::Result<()> {
            for &fd in &join_fds {
                // SAFETY: `fd` is a `cgroup.procs` file the parent keeps open across the spawn;
                // write(2) is async-signal-safe and the buffer is a static byte string.
                let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if setsid {
                // SAFETY: setsid(2) is async-signal-safe; we are a fresh child, not a group
                // leader, so it succeeds unless the kernel refuses.
                if unsafe { libc::setsid() } < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if new_pgroup {
                // SAFETY: setpgid(2) on ourselves is async-signal-safe.
                if unsafe { libc::setpgid(0, 0) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(gid) = gid {
                if is_root {
                    // SAFETY: clearing supplementary groups with a null list is valid; root only.
                    if unsafe { libc::setgroups(0, std::ptr::null()) } < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // SAFETY: setgid(2) is async-signal-safe.
                if unsafe { libc::setgid(gid as libc::gid_t) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(uid) = uid {
                if is_root && gid.is_none() {
                    // SAFETY: as above.
                    if unsafe { libc::setgroups(0, std::ptr::null()) } < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // SAFETY: setuid(2) is async-signal-safe.
                if unsafe { libc::setuid(uid as libc::uid_t) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // After the identity switch: changing the uid or gid clears the parent-death
            // signal (prctl(2)).
            #[cfg(target_os = "linux")]
            if pdeathsig {
                // SAFETY: prctl(PR_SET_PDEATHSIG) takes an integer signal number; async-signal-safe.
                if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) }
                    < 0
                {
                    return Err(io::Error::last_os_error());
                }
                // The owner may already have died between fork and prctl: then our parent is
                // no longer the process that forked us.
                // SAFETY: getppid has no preconditions.
                if unsafe { libc::getppid() } == 1 {
                    // SAFETY: raising SIGKILL on ourselves is always allowed.
                    unsafe { libc::raise(libc::SIGKILL) };
                }
            }
            Ok(())
        };
        // SAFETY: the hook runs in the child after fork; it only calls async-signal-safe
        // functions (write, setsid, setpgid, prctl, getppid, raise, setgroups, setgid, setuid),
        // touches only data moved into it, and does not allocate.
        unsafe {
            std_cmd.pre_exec(hook);
        }
    } else if new_pgroup {
        // Lets std keep its posix_spawn fast path (POSIX_SPAWN_SETPGROUP).
        std_cmd.process_group(0);
    }

    let mut cmd = tokio::process::Command::from(std_cmd);
    let mut child = cmd.spawn()?;
    let pid = child.id().unwrap_or(0);
    let stdin = child.stdin.take().map(|s| Box::pin(s) as super::PipeWriter);
    let stdout = child.stdout.take().map(|s| {
        grow_pipe(&s);
        Box::pin(s) as super::PipeReader
    });
    let stderr = child
        .stderr
        .take()
        .map(|s| Box::pin(s) as super::PipeReader);
    Ok(super::Child {
        pid,
        stdin,
        stdout,
        stderr,
        // `into`: on Linux the backend's child type wraps this one.
        #[allow(clippy::useless_conversion)]
        inner: Child { child }.into(),
    })
}

/// The stdout pipe capacity asked for on Linux: big enough that a fast writer and our reader
/// each get a long run of work per wake-up instead of ping-ponging every 64 KiB (the default);
/// measured by `benches/lines.rs` (streaming 2M lines is about a third faster than with 64 KiB
/// under load). Kept moderate because an unprivileged user's pipe pages are limited
/// (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB by default): 256 KiB is 64 pages per child, and
/// the kernel refuses (harmlessly) any growth past the soft limit.
#[cfg(target_os = "linux")]
const PIPE_CAPACITY: libc::c_int = 256 << 10;

/// Best effort: raises the capacity of the stdout pipe (Linux `F_SETPIPE_SZ`). Failing (an
/// unprivileged user at `/proc/sys/fs/pipe-user-pages-soft`, an old kernel) only costs speed.
#[cfg(target_os = "linux")]
pub(crate) fn grow_pipe(fd: &impl std::os::fd::AsRawFd) {
    // SAFETY: fcntl on a descriptor we own (borrowed for the call); F_SETPIPE_SZ takes an int
    // and touches no memory of ours.
    let _ = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_CAPACITY) };
}

#[cfg(not(target_os = "linux"))]
fn grow_pipe(_fd: &impl std::os::fd::AsRawFd) {}

fn to_stdio(s: ChildStdio) -> Stdio {
    match s {
        ChildStdio::Null => Stdio::null(),
        ChildStdio::Inherit => Stdio::inherit(),
        ChildStdio::Piped => Stdio::piped(),
        ChildStdio::Redirect(fd) => Stdio::from(fd),
    }
}

/// The OS half of a spawned child: tokio's handle, which reaps it.
#[derive(Debug)]
pub(crate) struct Child {
    child: tokio::process::Child,
}

impl Child {
    /// Waits for exit. Cancel safe.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitInfo> {
        let st = self.child.wait().await?;
        Ok(exit_info(st))
    }

    /// SIGTERM to the direct child only (its descendants and group siblings are untouched).
    ///
    /// A child that was already reaped is not signalled: its pid may belong to someone else by
    /// now. Until it is reaped (tokio reaps only through this handle) the pid stays ours, even
    /// as a zombie, so the signal cannot hit an unrelated process.
    pub(crate) fn start_term(&mut self) -> io::Result<()> {
        match self.child.id() {
            Some(pid) => kill_pid(pid as i32, libc::SIGTERM),
            None => Ok(()),
        }
    }

    /// SIGKILL to the direct child only.
    pub(crate) fn start_kill(&mut self) -> io::Result<()> {
        match self.child.start_kill() {
            Ok(()) => Ok(()),
            // Already reaped: nothing to kill.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn exit_info(st: std::process::ExitStatus) -> ExitInfo {
    use std::os::unix::process::ExitStatusExt as _;
    ExitInfo {
        code: st.code(),
        signal: st.signal(),
    }
}

/// The POSIX number of a [`Signal`].
pub(crate) fn signal_number(sig: Signal) -> libc::c_int {
    match sig {
        Signal::Hup => libc::SIGHUP,
        Signal::Int => libc::SIGINT,
        Signal::Quit => libc::SIGQUIT,
        Signal::Term => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
        Signal::Usr1 => libc::SIGUSR1,
        Signal::Usr2 => libc::SIGUSR2,
        Signal::Stop => libc::SIGSTOP,
        Signal::Cont => libc::SIGCONT,
        Signal::Alrm => libc::SIGALRM,
        Signal::Winch => libc::SIGWINCH,
    }
}

/// `kill(2)`: sends `sig` to one pid. A pid that is already gone is not an error.
pub(crate) fn kill_pid(pid: i32, sig: libc::c_int) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "pid must be positive",
        ));
    }
    // SAFETY: kill(2) with a positive pid targets exactly that process; no memory is touched.
    if unsafe { libc::kill(pid, sig) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// `killpg(2)`: sends `sig` to a whole process group. A group that is already empty is fine.
pub(crate) fn kill_pgroup(pgid: i32, sig: libc::c_int) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal process group <= 1",
        ));
    }
    // SAFETY: killpg(2) with a pgid > 1 targets exactly that group.
    if unsafe { libc::killpg(pgid, sig) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

/// Whether a process group still has a member (`killpg(pgid, 0)`).
pub(crate) fn pgroup_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    pgid > 1 && unsafe { libc::killpg(pgid, 0) } == 0
}

/// Whether a pid exists (`kill(pid, 0)`); a zombie counts as existing, and so does a process
/// we may not signal (`EPERM`).
pub(crate) fn pid_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// Checks that `pid` names a live process we may signal: `NotFound` when there is none,
/// `PermissionDenied` when it belongs to someone we may not touch.
pub(crate) fn check_signalable(pid: i32) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "pid must be positive",
        ));
    }
    // SAFETY: signal 0 only checks for existence and permission.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ESRCH) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no process with pid {pid} (it exited, or never existed)"),
        )),
        Some(libc::EPERM) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("pid {pid} belongs to another user; we may not signal it"),
        )),
        _ => Err(e),
    }
}

/// The process group of `pid`.
pub(crate) fn getpgid(pid: i32) -> io::Result<i32> {
    // SAFETY: getpgid(2) reads kernel state only.
    let r = unsafe { libc::getpgid(pid) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}
