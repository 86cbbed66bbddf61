//! The Windows backend: one Job Object per container.
//!
//! # Containment
//! [`Container::create`] makes an anonymous Job Object with `CreateJobObjectW(NULL, NULL)` and
//! sets `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`. The job handle is created **non-inheritable**
//! (null security attributes) and is never duplicated, so the only handle to the job is the one
//! in [`Container`]: when it closes (on drop, or because this process died in any way, even
//! killed from Task Manager) the kernel terminates every process in the job. This is also why
//! `SpawnRequest::kill_on_parent_death` needs no extra work here.
//!
//! [`Container::spawn`] creates the child with `CREATE_SUSPENDED`, assigns it to the job, and
//! only then resumes it (`NtResumeProcess`), so not one instruction of the target program runs
//! outside the job. Every process a member creates is placed in the job by the kernel at
//! creation. If the assignment fails the suspended child is terminated and the spawn fails:
//! there is never an uncontained child.
//!
//! # Breakaway
//! A process can ask to leave its job with `CREATE_BREAKAWAY_FROM_JOB`, but only if the job has
//! `JOB_OBJECT_LIMIT_BREAKAWAY_OK` (or `JOB_OBJECT_LIMIT_SILENT_BREAKAWAY_OK`). We never set
//! either, so such a `CreateProcess` call fails with `ERROR_ACCESS_DENIED` and nothing escapes.
//!
//! What escapes: only processes started on a member's behalf by another process outside the
//! tree, such as a service (WMI `Win32_Process.Create`, the Task Scheduler, an out-of-process
//! COM server). They are not descendants in the kernel's sense and no Job Object holds them.
//!
//! # Nested jobs
//! Since Windows 8 / Server 2012 jobs nest. If this process already runs inside a job (a CI
//! runner, Windows Terminal, a service host), our children start in that job too, and when
//! that job forbids breakaway they cannot leave it. Nesting makes this harmless: at the first
//! assignment our job becomes a child of that job, every child then belongs to both, so it is
//! still contained by ours and still killed when ours closes, and the outer job's limits keep
//! applying on top of ours. The kernel's rule is that a process already in a job can only
//! join a job that is empty or already nested below the process's job, which is why
//! [`Container::adopt`] can refuse a process from an unrelated job tree. (Windows 7 had no
//! nesting and refused the assignment; the spawn then fails rather than run the child
//! uncontained.)
//!
//! # Kill semantics and exit codes
//! [`Container::kill_all`] (and `Signal::Kill`, and drop) is `TerminateJobObject(job, 1)`: every
//! member ends at once with **exit code 1**, a choice of this crate (Windows has no "killed by
//! signal" status). [`Child::start_kill`] is `TerminateProcess` with the same code. Windows has
//! no other signals, so [`Container::signal`] refuses everything but `Signal::Kill`, and
//! [`Container::graceful_stop`] is not wired yet (see there).
//!
//! Exit code 1 is what the OS records (and what any other observer of the process sees), but
//! a kill of ours is reported to our caller as it is on POSIX: no exit code. [`Child::wait`]
//! turns exit code 1 into "killed" (`code: None`) when this child was killed through
//! [`Child::start_kill`] or its container was terminated before the exit was observed. The
//! one ambiguity is a child that exits with 1 by itself at the very moment its container is
//! terminated: it is reported as killed, which it was about to be anyway.
//!
//! # Limits
//! `memory_max` is `JOB_OBJECT_LIMIT_JOB_MEMORY`: committed (private) memory of the whole tree;
//! an allocation past it fails inside the process (it is not killed as by a cgroup OOM).
//! `max_processes` is `JOB_OBJECT_LIMIT_ACTIVE_PROCESS`: creating one more process fails.
//! `cpu_quota` (a fraction of one core) becomes a hard cap with `JobObjectCpuRateControlInformation`
//! relative to the whole machine: `quota / logical CPUs * 10000` cycles per 10 000, clamped to
//! `1..=10000`, so it is approximate. A limit the OS refuses becomes `CreateError::Limit`.

mod job;
mod process;
mod spawn;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use windows_sys::Win32::Foundation::{HANDLE, WAIT_OBJECT_0};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcessId, WaitForSingleObject, PROCESS_QUERY_INFORMATION,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SET_QUOTA, PROCESS_SUSPEND_RESUME,
    PROCESS_SYNCHRONIZE, PROCESS_TERMINATE, PROCESS_VM_READ,
};

use super::{ContainerOptions, CreateError, ExitInfo, SpawnRequest};
use crate::{GroupStats, Mechanism, Signal};
use job::Job;

/// The exit code every process killed through the job gets (`TerminateJobObject(job, 1)`).
pub(crate) const KILLED_EXIT_CODE: u32 = 1;

/// How many list-and-suspend passes [`Container::freeze`] makes to catch processes that members
/// created while the previous pass was suspending them.
const FREEZE_PASSES: usize = 8;

/// A kill-on-drop container: one Job Object (see the module docs).
#[derive(Debug)]
pub(crate) struct Container {
    job: Job,
    /// Set (for good) before the first `TerminateJobObject`; shared with every [`Child`]
    /// spawned here, so a member that ends with the kill's exit code is reported as killed.
    terminated: Arc<AtomicBool>,
}

impl Container {
    /// Creates the job with `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE` and the limits in `opts`; a
    /// limit the OS refuses is `CreateError::Limit` naming it.
    pub(crate) fn create(opts: &ContainerOptions) -> Result<Container, CreateError> {
        Ok(Container {
            job: Job::create(opts)?,
            terminated: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Always [`Mechanism::JobObject`].
    pub(crate) fn mechanism(&self) -> Mechanism {
        Mechanism::JobObject
    }

    /// Spawns `req` inside the job before its first instruction (suspended, assigned, resumed).
    /// `uid`, `gid` and `setsid` fail with `ErrorKind::Unsupported`. Must be called inside a
    /// tokio runtime.
    pub(crate) fn spawn(&self, req: SpawnRequest) -> io::Result<super::Child> {
        let mut child = spawn::spawn(&self.job, req)?;
        child.inner.job_terminated = Some(Arc::clone(&self.terminated));
        Ok(child)
    }

    /// Spawns a caller-built std command inside the job (the `ProcessGroup::spawn` escape
    /// hatch), suspended-assigned-resumed like [`spawn`](Self::spawn). The command's creation
    /// flags are replaced by `CREATE_SUSPENDED` for the spawn (std cannot read them back to OR
    /// them) and reset to 0 afterwards.
    pub(crate) fn spawn_std(
        &self,
        cmd: &mut std::process::Command,
    ) -> io::Result<std::process::Child> {
        spawn::spawn_std(&self.job, cmd)
    }

    /// Terminates every member at once with exit code 1 (`TerminateJobObject`). Idempotent: an
    /// empty job terminates successfully.
    pub(crate) fn kill_all(&self) -> io::Result<()> {
        self.terminated.store(true, Ordering::SeqCst);
        self.job.terminate(KILLED_EXIT_CODE)
    }

    /// `Signal::Kill` is [`kill_all`](Self::kill_all); Windows has no other signals, so every
    /// other one fails with `ErrorKind::Unsupported`.
    pub(crate) fn signal(&self, sig: Signal) -> io::Result<()> {
        match sig {
            Signal::Kill => self.kill_all(),
            other => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{other} cannot be delivered on Windows; only SIGKILL (job terminate) can"),
            )),
        }
    }

    /// A polite stop request to every member. Not wired yet on Windows: it always fails with
    /// `ErrorKind::Unsupported`, and callers go straight to [`kill_all`](Self::kill_all).
    ///
    /// The planned opt-in is `GenerateConsoleCtrlEvent(CTRL_BREAK_EVENT, pid)` to members started
    /// with `CREATE_NEW_PROCESS_GROUP` that share our console; GUI programs and processes
    /// without a console cannot receive it, and sending `WM_CLOSE` to windows is out of scope.
    #[allow(dead_code)] // the planned opt-in graceful tier; nothing calls it yet
    pub(crate) fn graceful_stop(&self) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a graceful stop is not supported for Windows Job Objects yet",
        ))
    }

    /// Suspends every member, best effort: each process has all its threads suspended once
    /// (`NtSuspendProcess`), with repeated passes over the member list to catch processes
    /// created meanwhile. Windows suspension counts: freezing twice needs two
    /// [`thaw`](Self::thaw)s. Processes spawned or adopted into the container after this call
    /// are not frozen. Members that exit during the call are skipped; the first other failure
    /// is returned after every member was tried (the rest stay frozen).
    pub(crate) fn freeze(&self) -> io::Result<()> {
        let mut done = HashSet::new();
        let mut first_error = None;
        for _ in 0..FREEZE_PASSES {
            let mut found_new = false;
            for pid in self.job.process_ids()? {
                if !done.insert(pid) {
                    continue;
                }
                found_new = true;
                if let Err(e) = self.with_member(pid, PROCESS_SUSPEND_RESUME, process::suspend) {
                    first_error.get_or_insert(e);
                }
            }
            if !found_new {
                break;
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Undoes one [`freeze`](Self::freeze): resumes every thread of every member once
    /// (`NtResumeProcess`). Resuming a process that is not suspended does nothing. Best effort,
    /// like `freeze`.
    pub(crate) fn thaw(&self) -> io::Result<()> {
        let mut first_error = None;
        for pid in self.job.process_ids()? {
            if let Err(e) = self.with_member(pid, PROCESS_SUSPEND_RESUME, process::resume) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Opens member `pid` with `access` and runs `op` on it. A pid that has gone, or that was
    /// reused by a process outside the job since the list was read, is skipped. Our own process
    /// (only there if someone adopted it) is skipped too: suspending it would deadlock us.
    fn with_member(
        &self,
        pid: u32,
        access: u32,
        op: impl FnOnce(HANDLE) -> io::Result<()>,
    ) -> io::Result<()> {
        if pid == current_pid() {
            return Ok(());
        }
        let handle = match process::open(pid, access | PROCESS_QUERY_LIMITED_INFORMATION) {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if !self.is_member(pid, &handle)? {
            return Ok(());
        }
        op(handle.raw())
    }

    /// Whether the process behind `handle` (opened with `PROCESS_QUERY_LIMITED_INFORMATION`)
    /// is in the job. Windows accepts the limited right for `IsProcessInJob`; Wine demands
    /// `PROCESS_QUERY_INFORMATION`, so on `ERROR_ACCESS_DENIED` the pid is reopened with that.
    fn is_member(&self, pid: u32, handle: &job::Handle) -> io::Result<bool> {
        match self.job.contains(handle.raw()) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                match process::open(pid, PROCESS_QUERY_INFORMATION) {
                    // Same pid, and `handle` keeps the process object alive: same process.
                    Ok(full) => self.job.contains(full.raw()),
                    Err(_) => Err(e),
                }
            }
            other => other,
        }
    }

    /// The ids of every process in the job now, descendants included
    /// (`JobObjectBasicProcessIdList`, buffer grown as needed).
    pub(crate) fn members(&self) -> io::Result<Vec<u32>> {
        self.job.process_ids()
    }

    /// Moves the running process `pid` into the job (`OpenProcess` + `AssignProcessToJobObject`).
    /// Only processes it creates from now on follow it in; children it already has stay where
    /// they are. A pid that does not exist or has exited is `ErrorKind::NotFound`; a process
    /// already in this job is fine; our own process is refused (`InvalidInput`), since the job
    /// would kill us on drop. A process already in another job can only join if this container
    /// is empty (our job then nests below that job) or already nested below it; otherwise
    /// Windows refuses with `ERROR_ACCESS_DENIED` (`PermissionDenied`), as it does for a
    /// process we may not control.
    pub(crate) fn adopt(&self, pid: u32) -> io::Result<()> {
        if pid == current_pid() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "refusing to put the current process in its own kill-on-close job",
            ));
        }
        let handle = process::open(
            pid,
            PROCESS_SET_QUOTA
                | PROCESS_TERMINATE
                | PROCESS_QUERY_LIMITED_INFORMATION
                | PROCESS_SYNCHRONIZE,
        )?;
        let gone = || io::Error::new(io::ErrorKind::NotFound, format!("process {pid} has exited"));
        if has_exited(handle.raw()) {
            return Err(gone());
        }
        if self.is_member(pid, &handle)? {
            return Ok(());
        }
        self.job
            .assign(handle.raw())
            .map_err(|e| if has_exited(handle.raw()) { gone() } else { e })
    }

    /// Accounting for the whole tree, exited members included: user and kernel CPU time
    /// (`JobObjectBasicAccountingInformation`, 100 ns ticks), active and total process
    /// counts, current memory as the sum of the live members' committed private bytes (best
    /// effort: members that exit or deny access meanwhile are left out), and the peak as the
    /// job's `PeakJobMemoryUsed` (never below the current sum).
    pub(crate) fn stats(&self) -> io::Result<GroupStats> {
        let accounting = self.job.accounting()?;
        let peak = self.job.extended_limits()?.PeakJobMemoryUsed as u64;
        let mut current = 0u64;
        for pid in self.job.process_ids()? {
            let _ = self.with_member(pid, PROCESS_VM_READ, |h| {
                current += process::private_bytes(h)?;
                Ok(())
            });
        }
        Ok(GroupStats {
            cpu_user: Some(ticks(accounting.TotalUserTime)),
            cpu_system: Some(ticks(accounting.TotalKernelTime)),
            current_memory_bytes: Some(current),
            peak_memory_bytes: Some(peak.max(current)),
            active_process_count: u64::from(accounting.ActiveProcesses),
            total_process_count: Some(u64::from(accounting.TotalProcesses)),
        })
    }

    /// Whether the kernel killed a member for exceeding the memory limit: never on Windows. A
    /// Job Object memory limit makes the allocation that would exceed it fail inside the
    /// process (which usually then exits with its own error); nothing is killed on its behalf.
    pub(crate) fn oom_killed(&self) -> bool {
        false
    }

    /// Whether no process is alive in the job (`ActiveProcesses == 0`).
    pub(crate) fn is_empty(&self) -> io::Result<bool> {
        Ok(self.job.accounting()?.ActiveProcesses == 0)
    }
}

impl Drop for Container {
    /// Terminates the tree (`TerminateJobObject`, exit code 1), then closes the job handle. The
    /// close alone would kill too (`JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`); terminating first
    /// makes the kill explicit and immediate. Windows has no zombies, so nothing is left to reap.
    fn drop(&mut self) {
        let _ = self.kill_all();
        // `self.job` drops next and closes the handle.
    }
}

/// The OS half of a spawned direct child: tokio's process handle, and what it needs to tell
/// a kill of ours from an exit with code 1.
#[derive(Debug)]
pub(crate) struct Child {
    child: tokio::process::Child,
    /// [`start_kill`](Self::start_kill) was called.
    killed: bool,
    /// The container's "terminated" flag (set by [`Container::spawn`]).
    job_terminated: Option<Arc<AtomicBool>>,
}

impl Child {
    fn new(child: tokio::process::Child) -> Child {
        Child {
            child,
            killed: false,
            job_terminated: None,
        }
    }

    /// Waits for the child to exit. Cancel safe: tokio keeps the state across dropped futures.
    ///
    /// Exit code 1 after a kill of ours (this child's [`start_kill`](Self::start_kill), or
    /// its container terminated) is reported as killed: `code: None` (see the module docs).
    pub(crate) async fn wait(&mut self) -> io::Result<ExitInfo> {
        let status = self.child.wait().await?;
        Ok(self.exit_info(status))
    }

    /// The exit status if the child has exited, without blocking (tests only).
    #[cfg(test)]
    pub(crate) fn try_wait(&mut self) -> io::Result<Option<ExitInfo>> {
        let status = self.child.try_wait()?;
        Ok(status.map(|s| self.exit_info(s)))
    }

    fn exit_info(&self, status: std::process::ExitStatus) -> ExitInfo {
        let killed_by_us = self.killed
            || self
                .job_terminated
                .as_ref()
                .is_some_and(|t| t.load(Ordering::SeqCst));
        // Windows exit codes are u32; std reinterprets them as i32 and always has one.
        let code = status.code();
        if killed_by_us && code == Some(KILLED_EXIT_CODE as i32) {
            ExitInfo {
                code: None,
                signal: None,
            }
        } else {
            ExitInfo { code, signal: None }
        }
    }

    /// `TerminateProcess` on the direct child only, exit code 1 (reported as killed by
    /// [`wait`](Self::wait)). A child that already exited is not an error.
    pub(crate) fn start_kill(&mut self) -> io::Result<()> {
        if let Ok(Some(_)) = self.child.try_wait() {
            // It exited by itself (tokio keeps the status for `wait`): not killed by us.
            return Ok(());
        }
        match self.child.start_kill() {
            Ok(()) => {
                self.killed = true;
                Ok(())
            }
            Err(e) => match self.child.try_wait() {
                Ok(Some(_)) => Ok(()),
                _ => Err(e),
            },
        }
    }
}

/// 100-nanosecond ticks (as the job accounting reports them) to a `Duration`.
fn ticks(t: i64) -> Duration {
    Duration::from_nanos(u64::try_from(t).unwrap_or(0).saturating_mul(100))
}

fn current_pid() -> u32 {
    // SAFETY: GetCurrentProcessId has no preconditions and cannot fail.
    unsafe { GetCurrentProcessId() }
}

/// Whether the process behind `handle` (opened with `SYNCHRONIZE`) has exited.
fn has_exited(handle: HANDLE) -> bool {
    // SAFETY: a zero-timeout wait on a valid process handle only reads its signal state.
    unsafe { WaitForSingleObject(handle, 0) == WAIT_OBJECT_0 }
}
