//! The Linux spawn path that never forks: `clone3(CLONE_VM | CLONE_VFORK | CLONE_PIDFD
//! [| CLONE_INTO_CGROUP])` on a small dedicated stack, then `execve`.
//!
//! Why: `fork` copies the parent's page tables, so its cost grows with the parent's resident
//! memory (a 2 GiB parent pays tens of milliseconds per spawn), and the std `pre_exec` hook we
//! need for containment forces std onto its fork path. Sharing the address space (`CLONE_VM`,
//! what `posix_spawn` does) makes the spawn cost independent of the parent's size, and
//! `CLONE_INTO_CGROUP` places the child in its cgroup at birth, so there is no migration write
//! at all and the child is contained before it runs a single instruction of its program.
//!
//! How:
//! * Everything the child needs is prepared in the parent, before cloning: argv/envp as C
//!   strings, the list of paths to try for the program (the `PATH` search is done here), the
//!   fds to `dup2` onto 0/1/2 (all at numbers >= 3, so no dup can clobber another source), and
//!   the setup steps (v1 companion cgroup joins, `setsid`/`setpgid`, `setgroups`/`setgid`/
//!   `setuid`, `PR_SET_PDEATHSIG` with a parent check (after the identity switch, which would
//!   clear it), `chdir`).
//! * The parent blocks every signal on the calling thread around the clone, so no handler of
//!   ours can run on the child's stack; the child resets every caught signal to `SIG_DFL`,
//!   `SIGPIPE` to `SIG_DFL` as std does, then empties its signal mask and execs.
//! * Between clone and exec the child uses raw system calls only (inline `svc`/`syscall`): no
//!   libc wrapper (glibc's `setuid` would broadcast to the *parent's* threads, whose bookkeeping
//!   the child shares), no allocation, no thread-local, no panic path.
//! * `CLONE_VFORK` suspends the calling thread until the child has exec'd or exited, so the
//!   child reports a failed step by writing its errno into the shared context; the parent reads
//!   it when `clone3` returns (this is how glibc's `posix_spawn` reports errors too; it needs no
//!   pipe because the memory is shared).
//! * The child is waited on through its pidfd (`CLONE_PIDFD`) registered with tokio; it is
//!   reaped with `waitid(P_PIDFD)`, so no `SIGCHLD` machinery is involved.
//!
//! Anything unsupported (another architecture, a kernel before 5.7, a seccomp filter refusing
//! `clone3`) makes [`spawn`] report [`Fallback`], and the caller uses the std-based path.

use std::cell::Cell;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd as _, AsRawFd, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};

use tokio::io::unix::AsyncFd;

use crate::sys::{ChildStdio, ExitInfo, SpawnRequest};

/// What the container asks of the child beyond the request itself.
#[derive(Debug, Default)]
pub(crate) struct Join<'a> {
    /// A cgroup v2 directory fd: the child is born there (`CLONE_INTO_CGROUP`).
    pub cgroup_dir: Option<RawFd>,
    /// `cgroup.procs` files of v1 companion cgroups, joined by writing `0` before exec.
    pub v1_procs: &'a [RawFd],
    /// `setpgid(0, 0)` (ignored when the request asks for `setsid`).
    pub new_pgroup: bool,
}

/// Why the fast path did not produce a child; nothing of the request was consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// `clone3` is unusable here: use the std-based path.
    Unsupported,
    /// The child was killed before it ran a single instruction. Kernels with the `kill_seq`
    /// check of Linux 6.14+ compare the *target* cgroup's kill counter with the *parent's*
    /// for `CLONE_INTO_CGROUP`, so a child cloned into a cgroup that ever saw a
    /// `cgroup.kill` write is killed at birth. Retry without `CLONE_INTO_CGROUP` (join by a
    /// `cgroup.procs` write in the child instead).
    KilledAtBirth,
}

/// The fast path was found unusable (ENOSYS / EPERM from `clone3`): don't try again.
static DISABLED: AtomicBool = AtomicBool::new(false);

/// `PROCESSKIT_SPAWN=fork` forces the std-based path (testing, and an escape hatch).
fn forced_std() -> bool {
    static F: OnceLock<bool> = OnceLock::new();
    *F.get_or_init(|| std::env::var_os("PROCESSKIT_SPAWN").is_some_and(|v| v == "fork"))
}

/// Whether [`spawn`] will try the clone3 path at all.
pub(crate) fn available() -> bool {
    cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
        && !DISABLED.load(Ordering::Relaxed)
        && !forced_std()
}

// ---------------------------------------------------------------------------------------------
// Parent side: preparation.

/// A NUL-separated string table and the pointer array (NULL-terminated) into it.
struct CStrTable {
    _buf: Vec<u8>,
    ptrs: Vec<*const libc::c_char>,
}

impl CStrTable {
    fn new<'a>(items: impl Iterator<Item = &'a [u8]> + Clone) -> CStrTable {
        let len: usize = items.clone().map(|s| s.len() + 1).sum();
        let mut buf = Vec::with_capacity(len);
        let mut offsets = Vec::new();
        for s in items {
            offsets.push(buf.len());
            buf.extend_from_slice(s);
            buf.push(0);
        }
        let base = buf.as_ptr();
        let mut ptrs: Vec<*const libc::c_char> = offsets
            .iter()
            // SAFETY: every offset is inside `buf`, which is never resized after this point.
            .map(|&o| unsafe { base.add(o) }.cast())
            .collect();
        ptrs.push(std::ptr::null());
        CStrTable { _buf: buf, ptrs }
    }
}

/// The child's final environment, as `NAME=VALUE` byte strings.
fn build_env(req: &SpawnRequest) -> Vec<Vec<u8>> {
    let mut vars: Vec<(OsString, OsString)> = if req.env_clear {
        Vec::new()
    } else {
        std::env::vars_os().collect()
    };
    for (k, v) in &req.env {
        match vars.iter().position(|(n, _)| n == k) {
            Some(i) => match v {
                Some(v) => vars[i].1 = v.clone(),
                None => {
                    vars.swap_remove(i);
                }
            },
            None => {
                if let Some(v) = v {
                    vars.push((k.clone(), v.clone()));
                }
            }
        }
    }
    vars.into_iter()
        .map(|(k, v)| {
            let mut e = Vec::with_capacity(k.len() + v.len() + 1);
            e.extend_from_slice(k.as_bytes());
            e.push(b'=');
            e.extend_from_slice(v.as_bytes());
            e
        })
        .collect()
}

/// The paths `execve` should try, in order: the program itself when it names a path, else
/// each `PATH` entry (the child's `PATH`, or `/bin:/usr/bin` when it has none, as `execvp`).
fn exec_candidates(program: &OsStr, env: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let p = program.as_bytes();
    if p.contains(&b'/') {
        return vec![p.to_vec()];
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix(b"PATH="))
        .unwrap_or(b"/bin:/usr/bin");
    path.split(|&b| b == b':')
        .map(|dir| {
            if dir.is_empty() {
                // An empty entry means the current directory.
                p.to_vec()
            } else {
                let mut c = Vec::with_capacity(dir.len() + 1 + p.len());
                c.extend_from_slice(dir);
                if !dir.ends_with(b"/") {
                    c.push(b'/');
                }
                c.extend_from_slice(p);
                c
            }
        })
        .collect()
}

/// `/dev/null`, opened once (read-write, close-on-exec, at a number >= 3).
fn dev_null() -> io::Result<RawFd> {
    static NULL: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = NULL.get() {
        return Ok(fd.as_raw_fd());
    }
    let f: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into();
    let f = above_stdio(f)?;
    Ok(NULL.get_or_init(|| f).as_raw_fd())
}

/// Moves an fd to a number >= 3 (close-on-exec), so dup2 onto 0/1/2 can never clobber it.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC duplicates an fd we own; the result is a new fd we then own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `n` is a fresh fd returned by fcntl, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// A close-on-exec pipe: `(read end, write end)`.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the 2-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_SETFL on an fd we own; a pipe end has no other status flags we would drop.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The parent's ends of the child's pipes.
#[derive(Default)]
struct ParentEnds {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

/// Wires one standard stream: returns the fd the child dup2s (or -1 to inherit), keeping any
/// fd that must stay open until the clone in `keep`.
fn wire(
    s: &ChildStdio,
    target: RawFd,
    keep: &mut Vec<OwnedFd>,
    parent_end: &mut Option<OwnedFd>,
) -> io::Result<RawFd> {
    Ok(match s {
        ChildStdio::Inherit => -1,
        ChildStdio::Null => dev_null()?,
        ChildStdio::Redirect(fd) => {
            if fd.as_raw_fd() >= 3 {
                fd.as_raw_fd()
            } else {
                let dup = above_stdio(fd.try_clone()?)?;
                let raw = dup.as_raw_fd();
                keep.push(dup);
                raw
            }
        }
        ChildStdio::Piped => {
            let (r, w) = pipe()?;
            let (mine, theirs) = if target == 0 { (w, r) } else { (r, w) };
            if target == 1 {
                // The same stdout pipe capacity as the std-based path.
                crate::sys::unix::grow_pipe(&mine);
            }
            set_nonblocking(mine.as_raw_fd())?;
            let theirs = above_stdio(theirs)?;
            let raw = theirs.as_raw_fd();
            keep.push(theirs);
            *parent_end = Some(mine);
            raw
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The child context and the child side.

/// Everything the child reads, laid out before the clone. Pointers stay valid until `clone3`
/// returns in the parent (the child has exec'd or exited by then).
#[repr(C)]
struct ChildCtx {
    /// Source fd for 0, 1, 2, or -1 to leave the stream alone.
    dups: [libc::c_int; 3],
    v1_procs: *const libc::c_int,
    n_v1_procs: usize,
    setsid: bool,
    new_pgroup: bool,
    pdeathsig: bool,
    /// The pid the child must see as its parent after arming PDEATHSIG.
    ppid: libc::pid_t,
    setgroups: bool,
    gid: Option<u32>,
    uid: Option<u32>,
    /// NUL-terminated, or null.
    cwd: *const libc::c_char,
    candidates: *const *const libc::c_char,
    n_candidates: usize,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// Set by the child first thing: 0 after the clone means it never ran.
    started: libc::c_int,
    /// Written by the child when a step fails: the errno (0 = exec succeeded).
    err: libc::c_int,
}

/// The kernel's `struct sigaction` (x86_64 and aarch64 share this layout).
#[repr(C)]
struct KSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

const SIG_DFL: usize = 0;
const SIG_IGN: usize = 1;
/// Highest signal number (`_NSIG - 1` on x86_64 and aarch64).
const MAX_SIG: usize = 64;

/// The child's whole life before `execve`: returns the errno of the step that failed.
///
/// # Safety
/// Runs in a `CLONE_VM | CLONE_VFORK` child on its own stack: it must make only raw system
/// calls, never allocate, touch thread-locals, unwind or return into Rust frames of the parent.
/// `ctx` must point at a live [`ChildCtx`].
unsafe fn child_steps(ctx: &ChildCtx) -> libc::c_int {
    // SAFETY: (the whole body) only raw system calls on values prepared by the parent; the
    // slices are built from pointer/length pairs the parent keeps alive across the clone.
    unsafe {
        for (target, &src) in ctx.dups.iter().enumerate() {
            if src >= 0 {
                // dup3 (dup2 does not exist on aarch64); src >= 3 > target, so never equal.
                let r = raw::sys3(libc::SYS_dup3, src as usize, target, 0);
                if r < 0 {
                    return -r as libc::c_int;
                }
            }
        }
        let v1 = core::slice::from_raw_parts(ctx.v1_procs, ctx.n_v1_procs);
        for &fd in v1 {
            let r = raw::sys3(libc::SYS_write, fd as usize, b"0".as_ptr() as usize, 1);
            if r < 0 {
                return -r as libc::c_int;
            }
        }
        if ctx.setsid {
            let r = raw::sys3(libc::SYS_setsid, 0, 0, 0);
            if r < 0 {
                return -r as libc::c_int;
            }
        } else if ctx.new_pgroup {
            let r = raw::sys3(libc::SYS_setpgid, 0, 0, 0);
            if r < 0 {
                return -r as libc::c_int;
            }
        }
        if ctx.setgroups {
            let r = raw::sys3(libc::SYS_setgroups, 0, 0, 0);
            if r < 0 {
                return -r as libc::c_int;
            }
        }
        if let Some(gid) = ctx.gid {
            let r = raw::sys3(libc::SYS_setgid, gid as usize, 0, 0);
            if r < 0 {
                return -r as libc::c_int;
            }
        }
        if let Some(uid) = ctx.uid {
            let r = raw::sys3(libc::SYS_setuid, uid as usize, 0, 0);
            if r < 0 {
                return -r as libc::c_int;
            }
        }
        // After the identity switch: changing the uid or gid clears the parent-death signal.
        if ctx.pdeathsig {
            let r = raw::sys3(
                libc::SYS_prctl,
                libc::PR_SET_PDEATHSIG as usize,
                libc::SIGKILL as usize,
                0,
            );
            if r < 0 {
                return -r as libc::c_int;
            }
            // The owner may have died between the clone and the prctl.
            if raw::sys3(libc::SYS_getppid, 0, 0, 0) != ctx.ppid as isize {
                let me = raw::sys3(libc::SYS_getpid, 0, 0, 0);
                raw::sys3(libc::SYS_kill, me as usize, libc::SIGKILL as usize, 0);
            }
        }
        if !ctx.cwd.is_null() {
            let r = raw::sys3(libc::SYS_chdir, ctx.cwd as usize, 0, 0);
            if r < 0 {
                return -r as libc::c_int;
            }
        }
        // Signals: the parent's handlers must not survive (they would run on the shared
        // address space until exec), and SIGPIPE goes back to the default as std does.
        let mut old = KSigaction {
            handler: 0,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        let dfl = KSigaction {
            handler: SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for sig in 1..=MAX_SIG {
            if sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize {
                continue;
            }
            let r = raw::sys4(
                libc::SYS_rt_sigaction,
                sig,
                0,
                &mut old as *mut KSigaction as usize,
                8,
            );
            if r < 0 {
                continue;
            }
            let reset = match old.handler {
                SIG_DFL => false,
                SIG_IGN => sig == libc::SIGPIPE as usize,
                _ => true,
            };
            if reset {
                raw::sys4(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KSigaction as usize,
                    0,
                    8,
                );
            }
        }
        let empty: u64 = 0;
        raw::sys4(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as usize,
            &empty as *const u64 as usize,
            0,
            8,
        );
        // execvp's rules: keep looking past ENOENT/ENOTDIR-like errors, remember EACCES.
        let cands = core::slice::from_raw_parts(ctx.candidates, ctx.n_candidates);
        let mut saw_eacces = false;
        let mut last = libc::ENOENT;
        for &path in cands {
            let r = raw::sys3(
                libc::SYS_execve,
                path as usize,
                ctx.argv as usize,
                ctx.envp as usize,
            );
            let e = -r as libc::c_int;
            match e {
                libc::EACCES => saw_eacces = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                _ => return e,
            }
            last = e;
        }
        if saw_eacces {
            libc::EACCES
        } else {
            last
        }
    }
}

/// The child's entry point on its new stack. Never returns.
///
/// # Safety
/// Only called by the clone trampoline in the child, with the context pointer the parent passed.
unsafe extern "C" fn child_entry(ctx: *mut ChildCtx) -> ! {
    // SAFETY: the parent keeps the context alive and does not touch it until the child has
    // exec'd or exited (CLONE_VFORK); the write is volatile so it reaches the shared memory.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*ctx).started), 1);
        let e = child_steps(&*ctx);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*ctx).err), e.max(1));
        raw::sys3(libc::SYS_exit_group, 127, 0, 0);
        // exit_group does not return; the trampoline traps if it ever did.
        loop {
            raw::sys3(libc::SYS_exit, 127, 0, 0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The clone itself.

const CLONE_PIDFD: u64 = 0x1000;
const CLONE_VM: u64 = 0x100;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// The child's stack: an anonymous mapping with a guard page at the bottom, cached per thread
/// (the calling thread is suspended while the child runs on it, so one per thread suffices).
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

const STACK_SIZE: usize = 64 * 1024;
const GUARD: usize = 4096;

impl Stack {
    fn new() -> io::Result<Stack> {
        let len = STACK_SIZE + GUARD;
        // SAFETY: an anonymous private mapping; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let s = Stack { base, len };
        // SAFETY: the first page of the mapping we own becomes the guard.
        if unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(s)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`, no longer used by anyone.
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

thread_local! {
    static STACK: Cell<Option<Stack>> = const { Cell::new(None) };
}

/// A clone that went through: the child's pid and pidfd.
struct Cloned {
    pid: libc::pid_t,
    pidfd: OwnedFd,
}

/// Runs the clone with every signal blocked on this thread; returns the child or the errno.
fn clone_child(ctx: &mut ChildCtx, cgroup_dir: Option<RawFd>) -> Result<Cloned, libc::c_int> {
    let stack = match STACK.with(|s| s.take()) {
        Some(s) => s,
        None => Stack::new().map_err(|e| e.raw_os_error().unwrap_or(libc::ENOMEM))?,
    };
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: CLONE_VM | CLONE_VFORK | CLONE_PIDFD,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        // SAFETY: GUARD < len: the usable stack starts after the guard page.
        stack: unsafe { stack.base.cast::<u8>().add(GUARD) } as u64,
        stack_size: STACK_SIZE as u64,
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup_dir {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    let all: u64 = !0;
    let mut saved: u64 = 0;
    // SAFETY: rt_sigprocmask on the calling thread with valid 8-byte sigset pointers. Blocking
    // everything (glibc-internal signals included) keeps any handler of ours off the child's
    // stack while it shares our memory; the child sets its own mask before exec.
    let ret = unsafe {
        raw::sys4(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as usize,
            &all as *const u64 as usize,
            &mut saved as *mut u64 as usize,
            8,
        );
        let r = raw::clone3(
            &mut args,
            std::mem::size_of::<CloneArgs>(),
            child_entry,
            ctx as *mut ChildCtx,
        );
        raw::sys4(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as usize,
            &saved as *const u64 as usize,
            0,
            8,
        );
        r
    };
    // The child has exec'd or exited: the stack is free again.
    STACK.with(|s| s.set(Some(stack)));
    if ret < 0 {
        return Err(-ret as libc::c_int);
    }
    // SAFETY: CLONE_PIDFD stored a fresh pidfd owned by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(Cloned {
        pid: ret as libc::pid_t,
        pidfd,
    })
}

/// Spawns `req` without forking. `Err(Fallback)` means: use the std-based path instead (the
/// request is untouched); a real spawn failure comes back as `Ok(Err(e))`.
pub(crate) fn spawn(
    req: &SpawnRequest,
    join: &Join<'_>,
) -> Result<io::Result<crate::sys::Child>, Fallback> {
    if !available() {
        return Err(Fallback::Unsupported);
    }
    spawn_inner(req, join)
}

fn spawn_inner(
    req: &SpawnRequest,
    join: &Join<'_>,
) -> Result<io::Result<crate::sys::Child>, Fallback> {
    let env = build_env(req);
    let cands = exec_candidates(&req.program, &env);
    let argv = CStrTable::new(
        std::iter::once(req.program.as_bytes()).chain(req.args.iter().map(|a| a.as_bytes())),
    );
    let envp = CStrTable::new(env.iter().map(|e| e.as_slice()));
    let cand_table = CStrTable::new(cands.iter().map(|c| c.as_slice()));
    let cwd = match &req.cwd {
        Some(d) => match CString::new(d.as_os_str().as_bytes()) {
            Ok(c) => Some(c),
            Err(e) => return Ok(Err(io::Error::new(io::ErrorKind::InvalidInput, e))),
        },
        None => None,
    };

    let mut keep = Vec::new();
    let mut ends = ParentEnds::default();
    let mut dups = [-1; 3];
    for (i, (s, end)) in [
        (&req.stdin, &mut ends.stdin),
        (&req.stdout, &mut ends.stdout),
        (&req.stderr, &mut ends.stderr),
    ]
    .into_iter()
    .enumerate()
    {
        match wire(s, i as RawFd, &mut keep, end) {
            Ok(fd) => dups[i] = fd,
            Err(e) => return Ok(Err(e)),
        }
    }

    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    let mut ctx = ChildCtx {
        dups,
        v1_procs: join.v1_procs.as_ptr(),
        n_v1_procs: join.v1_procs.len(),
        setsid: req.setsid,
        new_pgroup: join.new_pgroup,
        pdeathsig: req.kill_on_parent_death,
        ppid: std::process::id() as libc::pid_t,
        setgroups: is_root && (req.gid.is_some() || req.uid.is_some()),
        gid: req.gid,
        uid: req.uid,
        cwd: cwd.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        candidates: cand_table.ptrs.as_ptr(),
        n_candidates: cands.len(),
        argv: argv.ptrs.as_ptr(),
        envp: envp.ptrs.as_ptr(),
        started: 0,
        err: 0,
    };

    let cloned = match clone_child(&mut ctx, join.cgroup_dir) {
        Ok(c) => c,
        Err(e @ (libc::EAGAIN | libc::ENOMEM)) => return Ok(Err(io::Error::from_raw_os_error(e))),
        Err(e) => {
            if e == libc::ENOSYS || e == libc::EPERM {
                DISABLED.store(true, Ordering::Relaxed);
            }
            return Err(Fallback::Unsupported);
        }
    };
    // Close the child's ends now (the parent must not hold a pipe's write end open).
    drop(keep);
    // SAFETY: the child has exec'd or exited (CLONE_VFORK); reading its report is race-free.
    let (started, err) = unsafe {
        (
            core::ptr::read_volatile(core::ptr::addr_of!(ctx.started)),
            core::ptr::read_volatile(core::ptr::addr_of!(ctx.err)),
        )
    };
    if started == 0 {
        // Killed before its first instruction (see `Fallback::KilledAtBirth`).
        let _ = reap_blocking(&cloned.pidfd);
        return Err(Fallback::KilledAtBirth);
    }
    if err != 0 {
        // The child failed before exec and exits; reap it so no zombie remains.
        let _ = reap_blocking(&cloned.pidfd);
        return Ok(Err(io::Error::from_raw_os_error(err)));
    }
    Ok(finish(cloned, ends))
}

fn finish(cloned: Cloned, ends: ParentEnds) -> io::Result<crate::sys::Child> {
    let pid = cloned.pid;
    // `try_with_interest` is deprecated in newest tokio only because a `T` could report a
    // changing fd; an `OwnedFd` cannot. (Its replacement does not exist in the tokio versions
    // we allow.)
    #[allow(deprecated)]
    let fd = match AsyncFd::try_with_interest(cloned.pidfd, tokio::io::Interest::READABLE) {
        Ok(fd) => fd,
        Err(e) => {
            // Not registrable (no runtime?): the child must not run on unowned.
            let (pidfd, err) = e.into_parts();
            kill_pidfd(&pidfd);
            let _ = reap_blocking(&pidfd);
            return Err(err);
        }
    };
    let mut child = PidfdChild {
        pid,
        fd: Some(fd),
        status: None,
    };
    match wrap_pipes(ends) {
        Ok((stdin, stdout, stderr)) => Ok(crate::sys::Child {
            pid: pid as u32,
            stdin,
            stdout,
            stderr,
            inner: Child::Pidfd(child),
        }),
        Err(e) => {
            // `Drop` hands the killed child to the reaper.
            let _ = child.start_kill();
            Err(e)
        }
    }
}

type Pipes = (
    Option<crate::sys::PipeWriter>,
    Option<crate::sys::PipeReader>,
    Option<crate::sys::PipeReader>,
);

/// The parent's pipe ends as tokio pipes (already non-blocking).
fn wrap_pipes(ends: ParentEnds) -> io::Result<Pipes> {
    let stdin = match ends.stdin {
        Some(fd) => Some(
            Box::pin(tokio::net::unix::pipe::Sender::from_owned_fd_unchecked(fd)?)
                as crate::sys::PipeWriter,
        ),
        None => None,
    };
    let reader = |fd: Option<OwnedFd>| -> io::Result<Option<crate::sys::PipeReader>> {
        match fd {
            Some(fd) => Ok(Some(Box::pin(
                tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(fd)?,
            ))),
            None => Ok(None),
        }
    };
    Ok((stdin, reader(ends.stdout)?, reader(ends.stderr)?))
}

/// SIGKILL through a pidfd (cannot hit a recycled pid). Whether it was sent; errno says why not.
fn kill_pidfd(fd: &OwnedFd) -> bool {
    signal_pidfd(fd, libc::SIGKILL)
}

/// `pidfd_send_signal(fd, sig)`. Whether it was sent; errno says why not.
fn signal_pidfd(fd: &OwnedFd, sig: libc::c_int) -> bool {
    // SAFETY: pidfd_send_signal on our own pidfd with no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    r == 0
}

// ---------------------------------------------------------------------------------------------
// Waiting: the pidfd child, and the std/tokio one of the fallback path.

/// The OS half of a spawned child on Linux.
#[derive(Debug)]
pub(crate) enum Child {
    /// Spawned by the clone3 path: waited on through its pidfd.
    Pidfd(PidfdChild),
    /// Spawned by the std-based fallback path.
    Std(crate::sys::unix::Child),
}

impl From<crate::sys::unix::Child> for Child {
    fn from(c: crate::sys::unix::Child) -> Child {
        Child::Std(c)
    }
}

impl Child {
    /// Waits for exit. Cancel safe.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitInfo> {
        match self {
            Child::Pidfd(c) => c.wait().await,
            Child::Std(c) => c.wait().await,
        }
    }

    /// SIGTERM to the direct child only (its descendants and group siblings are untouched);
    /// nothing once it was reaped.
    pub(crate) fn start_term(&mut self) -> io::Result<()> {
        match self {
            Child::Pidfd(c) => c.start_term(),
            Child::Std(c) => c.start_term(),
        }
    }

    /// SIGKILL to the direct child only.
    pub(crate) fn start_kill(&mut self) -> io::Result<()> {
        match self {
            Child::Pidfd(c) => c.start_kill(),
            Child::Std(c) => c.start_kill(),
        }
    }
}

/// A child owned through its pidfd: readable when it exits, reaped with `waitid(P_PIDFD)`.
#[derive(Debug)]
pub(crate) struct PidfdChild {
    pid: libc::pid_t,
    /// `None` only once handed to the orphan reaper in `Drop`.
    fd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitInfo>,
}

impl PidfdChild {
    async fn wait(&mut self) -> io::Result<ExitInfo> {
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            let fd = self.fd.as_ref().expect("pidfd present until drop");
            let mut guard = fd.readable().await?;
            // Re-check after readiness; clear it only if the child is still running.
            match waitid_nohang(fd.get_ref())? {
                Some(s) => {
                    self.status = Some(s);
                    return Ok(s);
                }
                None => guard.clear_ready(),
            }
        }
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitInfo>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let fd = self.fd.as_ref().expect("pidfd present until drop");
        let s = waitid_nohang(fd.get_ref())?;
        self.status = s;
        Ok(s)
    }

    fn start_kill(&mut self) -> io::Result<()> {
        self.signal(libc::SIGKILL)
    }

    fn start_term(&mut self) -> io::Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Signals the child through its pidfd: never a recycled pid. Nothing once it was reaped;
    /// an exited but unreaped child (`ESRCH`) is not an error.
    fn signal(&mut self, sig: libc::c_int) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        let fd = self.fd.as_ref().expect("pidfd present until drop");
        if !signal_pidfd(fd.get_ref(), sig) {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }

    /// The child's pid.
    #[allow(dead_code)]
    pub(crate) fn pid(&self) -> libc::pid_t {
        self.pid
    }
}

impl Drop for PidfdChild {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let Some(fd) = self.fd.take() else { return };
        if let Ok(Some(_)) = waitid_nohang(fd.get_ref()) {
            return;
        }
        // Still running (its container kill is on the way): reap it in the background so no
        // zombie is left. Deregister from tokio first; the reaper only needs the raw fd.
        orphans().send(fd.into_inner());
    }
}

fn exit_info_of(si: &libc::siginfo_t) -> ExitInfo {
    // SAFETY: waitid filled `si` for a child state change; these accessors read the
    // SIGCHLD-specific fields.
    let status = unsafe { si.si_status() };
    if si.si_code == libc::CLD_EXITED {
        ExitInfo {
            code: Some(status),
            signal: None,
        }
    } else {
        ExitInfo {
            code: None,
            signal: Some(status),
        }
    }
}

/// `waitid(P_PIDFD, fd, WEXITED | WNOHANG)`: the exit, if it happened (and reaps it).
fn waitid_nohang(fd: &OwnedFd) -> io::Result<Option<ExitInfo>> {
    waitid(fd, libc::WNOHANG)
}

fn reap_blocking(fd: &OwnedFd) -> io::Result<Option<ExitInfo>> {
    waitid(fd, 0)
}

fn waitid(fd: &OwnedFd, extra: libc::c_int) -> io::Result<Option<ExitInfo>> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value for waitid to overwrite.
        let mut si: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes only into `si`; P_PIDFD takes the pidfd as the id.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                fd.as_fd().as_raw_fd() as libc::id_t,
                &mut si,
                libc::WEXITED | extra,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: reading si_pid of a siginfo filled (or left zeroed) by waitid.
        if unsafe { si.si_pid() } == 0 {
            return Ok(None);
        }
        return Ok(Some(exit_info_of(&si)));
    }
}

// ---------------------------------------------------------------------------------------------
// Orphans: children whose handle was dropped before they exited (e.g. the runtime shut down).

struct Orphans {
    tx: Mutex<mpsc::Sender<OwnedFd>>,
}

impl Orphans {
    fn send(&self, fd: OwnedFd) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(mpsc::SendError(fd)) = tx.send(fd) {
            // No reaper thread: reap in place (the container kill is already under way).
            let _ = reap_blocking(&fd);
        }
    }
}

fn orphans() -> &'static Orphans {
    static O: OnceLock<Orphans> = OnceLock::new();
    O.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<OwnedFd>();
        let _ = std::thread::Builder::new()
            .name("processkit-reaper".into())
            .spawn(move || reaper(rx));
        Orphans { tx: Mutex::new(tx) }
    })
}

/// Polls every orphan pidfd and reaps each as it exits.
fn reaper(rx: mpsc::Receiver<OwnedFd>) {
    let mut fds: Vec<OwnedFd> = Vec::new();
    loop {
        if fds.is_empty() {
            match rx.recv() {
                Ok(fd) => fds.push(fd),
                Err(_) => return,
            }
        }
        while let Ok(fd) = rx.try_recv() {
            fds.push(fd);
        }
        let mut pfds: Vec<libc::pollfd> = fds
            .iter()
            .map(|f| libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: poll reads and writes exactly `pfds.len()` entries of the vector.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 50) };
        let mut i = 0;
        fds.retain(|f| {
            let ready = pfds[i].revents != 0;
            i += 1;
            // Keep it unless it was ready and is now reaped (or unreapable).
            !ready || matches!(waitid_nohang(f), Ok(None))
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Raw system calls and the clone trampoline, per architecture.

mod raw {
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(super) unsafe fn sys3(n: libc::c_long, a: usize, b: usize, c: usize) -> isize {
        let ret: isize;
        // SAFETY: the caller passes a system call number and arguments valid for it; the
        // `syscall` instruction clobbers only rcx and r11 besides the return register.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") n as isize => ret,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(super) unsafe fn sys4(n: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
        let ret: isize;
        // SAFETY: as `sys3`, with the fourth argument in r10.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") n as isize => ret,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                in("r10") d,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// `clone3(args, size)`; in the child (return value 0, running on the new stack the kernel
    /// installed) calls `f(arg)`, which must never return.
    #[cfg(target_arch = "x86_64")]
    pub(super) unsafe fn clone3(
        args: *mut super::CloneArgs,
        size: usize,
        f: unsafe extern "C" fn(*mut super::ChildCtx) -> !,
        arg: *mut super::ChildCtx,
    ) -> isize {
        let ret: isize;
        // SAFETY: the caller provides valid clone args with a private stack. In the parent the
        // asm is a plain system call. In the child, nothing of the parent's stack is touched:
        // the frame pointer is cleared, the stack aligned and `f` called; `ud2` traps should it
        // ever return.
        unsafe {
            core::arch::asm!(
                "syscall",
                "test rax, rax",
                "jnz 2f",
                "xor ebp, ebp",
                "and rsp, -16",
                "mov rdi, r12",
                "call r13",
                "ud2",
                "2:",
                inlateout("rax") libc::SYS_clone3 as isize => ret,
                in("rdi") args,
                in("rsi") size,
                in("r12") arg,
                in("r13") f,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    pub(super) unsafe fn sys3(n: libc::c_long, a: usize, b: usize, c: usize) -> isize {
        let ret: isize;
        // SAFETY: the caller passes a system call number and arguments valid for it; `svc 0`
        // returns in x0 and clobbers nothing else.
        unsafe {
            core::arch::asm!(
                "svc 0",
                in("x8") n,
                inlateout("x0") a as isize => ret,
                in("x1") b,
                in("x2") c,
                options(nostack),
            );
        }
        ret
    }

    #[cfg(target_arch = "aarch64")]
    #[inline(always)]
    pub(super) unsafe fn sys4(n: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
        let ret: isize;
        // SAFETY: as `sys3`, with the fourth argument in x3.
        unsafe {
            core::arch::asm!(
                "svc 0",
                in("x8") n,
                inlateout("x0") a as isize => ret,
                in("x1") b,
                in("x2") c,
                in("x3") d,
                options(nostack),
            );
        }
        ret
    }

    /// See the x86_64 version.
    #[cfg(target_arch = "aarch64")]
    pub(super) unsafe fn clone3(
        args: *mut super::CloneArgs,
        size: usize,
        f: unsafe extern "C" fn(*mut super::ChildCtx) -> !,
        arg: *mut super::ChildCtx,
    ) -> isize {
        let ret: isize;
        // SAFETY: as on x86_64: in the child the frame pointer and link register are cleared
        // (the kernel installed the 16-byte aligned stack top) and `f` is called; `brk` traps
        // should it ever return.
        unsafe {
            core::arch::asm!(
                "svc 0",
                "cbnz x0, 2f",
                "mov x29, xzr",
                "mov x30, xzr",
                "mov x0, x20",
                "blr x21",
                "brk #0x1",
                "2:",
                in("x8") libc::SYS_clone3,
                inlateout("x0") args as isize => ret,
                in("x1") size,
                in("x20") arg,
                in("x21") f,
                options(nostack),
            );
        }
        ret
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub(super) unsafe fn sys3(_: libc::c_long, _: usize, _: usize, _: usize) -> isize {
        -(libc::ENOSYS as isize)
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub(super) unsafe fn sys4(_: libc::c_long, _: usize, _: usize, _: usize, _: usize) -> isize {
        -(libc::ENOSYS as isize)
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub(super) unsafe fn clone3(
        _: *mut super::CloneArgs,
        _: usize,
        _: unsafe extern "C" fn(*mut super::ChildCtx) -> !,
        _: *mut super::ChildCtx,
    ) -> isize {
        -(libc::ENOSYS as isize)
    }
}
