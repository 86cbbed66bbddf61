//! The spawn path: start the child suspended, put it in the job, then let it run.

use std::io;
use std::os::windows::io::AsRawHandle as _;
use std::os::windows::process::CommandExt as _;
use std::process::Stdio;

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::Threading::{CREATE_NO_WINDOW, CREATE_SUSPENDED};

use super::job::Job;
use super::{process, Child};
use crate::sys::{ChildStdio, PipeReader, PipeWriter, SpawnRequest};

/// Starts `req` inside `job` before the program's first instruction runs.
///
/// The process is created with `CREATE_SUSPENDED` (OR'd with `CREATE_NO_WINDOW` when asked),
/// assigned to the job with `AssignProcessToJobObject`, and only then resumed with
/// `NtResumeProcess`. If the assignment or the resume fails the still-suspended child is
/// terminated and the error returned: there is never an uncontained child.
///
/// POSIX-only knobs (`uid`, `gid`, `setsid`) fail with `ErrorKind::Unsupported` naming the
/// knob. `kill_on_parent_death` needs nothing here: the job has
/// `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE` and its only handle is ours, so when this process dies
/// for any reason the kernel closes it and kills the tree.
///
/// Must be called inside a tokio runtime (tokio registers the pipe ends with it).
pub(crate) fn spawn(job: &Job, req: SpawnRequest) -> io::Result<crate::sys::Child> {
    for (asked, knob) in [
        (req.uid.is_some(), "uid"),
        (req.gid.is_some(), "gid"),
        (req.setsid, "setsid"),
    ] {
        if asked {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("`{knob}` is POSIX-only and not supported on Windows"),
            ));
        }
    }

    let mut std_cmd = std::process::Command::new(&req.program);
    std_cmd.args(&req.args);
    if req.env_clear {
        std_cmd.env_clear();
    }
    for (key, value) in &req.env {
        match value {
            Some(value) => std_cmd.env(key, value),
            None => std_cmd.env_remove(key),
        };
    }
    if let Some(dir) = &req.cwd {
        std_cmd.current_dir(dir);
    }
    std_cmd.stdin(to_stdio(req.stdin));
    std_cmd.stdout(to_stdio(req.stdout));
    std_cmd.stderr(to_stdio(req.stderr));
    let mut flags = CREATE_SUSPENDED;
    if req.create_no_window {
        flags |= CREATE_NO_WINDOW;
    }
    std_cmd.creation_flags(flags);

    let mut cmd = tokio::process::Command::from(std_cmd);
    let mut child = retry_internal_error(|| cmd.spawn())?;
    // Some until the child has been waited on, which cannot have happened yet.
    let handle = child
        .raw_handle()
        .ok_or_else(|| io::Error::other("the new child has no process handle"));
    if let Err(err) = handle.and_then(|h| contain(job, h)) {
        // Still suspended: it has run no instruction. TerminateProcess works on a suspended
        // process; the handle closes when `child` drops.
        let _ = child.start_kill();
        return Err(err);
    }

    let pid = child.id().unwrap_or(0);
    let stdin = child.stdin.take().map(|s| Box::pin(s) as PipeWriter);
    let stdout = child.stdout.take().map(|s| Box::pin(s) as PipeReader);
    let stderr = child.stderr.take().map(|s| Box::pin(s) as PipeReader);
    Ok(crate::sys::Child {
        pid,
        stdin,
        stdout,
        stderr,
        inner: Child::new(child),
    })
}

/// Spawns a caller-built `std::process::Command` inside `job` (the `ProcessGroup::spawn`
/// escape hatch), with the same suspended-assign-resume sequence as [`spawn`].
///
/// std has no getter for creation flags, so the caller's flags cannot be OR'd with ours: the
/// command is spawned with exactly `CREATE_SUSPENDED`, and its flags are reset to 0 afterwards
/// so reusing the command elsewhere does not start a process that never runs.
pub(crate) fn spawn_std(
    job: &Job,
    cmd: &mut std::process::Command,
) -> io::Result<std::process::Child> {
    cmd.creation_flags(CREATE_SUSPENDED);
    let spawned = retry_internal_error(|| cmd.spawn());
    cmd.creation_flags(0);
    let mut child = spawned?;
    if let Err(err) = contain(job, child.as_raw_handle()) {
        // Still suspended: it has run no instruction.
        let _ = child.kill();
        return Err(err);
    }
    Ok(child)
}

/// `ERROR_INTERNAL_ERROR`: what Wine's `CreateProcessW` now and then returns on a loaded
/// machine, with no process created.
const ERROR_INTERNAL_ERROR: i32 = 1359;

/// Runs `create` again, a bounded number of times, while it fails with
/// `ERROR_INTERNAL_ERROR`. No process exists after such a failure, so a retry cannot
/// duplicate one; every other error, and the last internal error, is returned as it is.
pub(super) fn retry_internal_error<T>(mut create: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    const ATTEMPTS: u32 = 4;
    let mut attempt = 1;
    loop {
        match create() {
            Err(e) if e.raw_os_error() == Some(ERROR_INTERNAL_ERROR) && attempt < ATTEMPTS => {
                attempt += 1;
                // Back off a little: the failure comes from a busy machine.
                std::thread::sleep(std::time::Duration::from_millis(5 * u64::from(attempt)));
            }
            other => return other,
        }
    }
}

/// Assigns the freshly created, suspended process behind `handle` to `job`, then resumes it.
/// The handle from `CreateProcessW` has `PROCESS_ALL_ACCESS`, enough for both calls.
fn contain(job: &Job, handle: HANDLE) -> io::Result<()> {
    let step = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    job.assign(handle)
        .map_err(|e| step("putting the new process in the Job Object", e))?;
    process::resume(handle).map_err(|e| step("resuming the new process", e))
}

fn to_stdio(stdio: ChildStdio) -> Stdio {
    match stdio {
        ChildStdio::Null => Stdio::null(),
        ChildStdio::Inherit => Stdio::inherit(),
        ChildStdio::Piped => Stdio::piped(),
        ChildStdio::Redirect(handle) => Stdio::from(handle),
    }
}
