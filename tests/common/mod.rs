//! Helpers shared by the integration tests: `mod common;` in a test file.
//!
//! The child behaviours come from the `pk-child` binary (`tests/bin/pk-child.rs`; its module
//! doc lists every action), so no test needs a shell.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Poll step of the `wait_*` helpers.
const POLL: Duration = Duration::from_millis(5);

/// Path of the `pk-child` helper binary built by cargo for the integration tests.
///
/// Under Wine (a Windows build run on a Unix host) cargo hands out a Unix path; it is turned
/// into the same file on Wine's `Z:` drive (`/a/b` becomes `Z:\a\b`), and the DLL shim the
/// Wine runner put next to the test binary is copied next to the helper (see [`helper_exe`]).
#[allow(dead_code)]
pub fn pk_child() -> PathBuf {
    helper_exe(env!("CARGO_BIN_EXE_pk-child"))
}

/// Path of the `pk-owner` helper binary (an owner process that uses processkit); see
/// [`pk_child`] for the Wine details.
#[allow(dead_code)]
pub fn pk_owner() -> PathBuf {
    helper_exe(env!("CARGO_BIN_EXE_pk-owner"))
}

/// A helper binary's path as this process must spell it, made ready to start.
///
/// Windows only: Wine 8 lacks `bcryptprimitives.dll` (Rust's std imports `ProcessPrng` from
/// it), so the Wine runner (`xcheck --wine`) puts a shim DLL next to each *test* binary only;
/// the helpers live one directory up and would fail to load (`0xC0000135`). When the shim sits
/// next to the running test binary and not next to the helper, it is copied there: to a name
/// unique to this process, then renamed into place, so test binaries starting in parallel
/// never see a half-written DLL. A no-op on real Windows (no shim next to the test binary).
fn helper_exe(raw: &str) -> PathBuf {
    let path = if cfg!(windows) && raw.starts_with('/') {
        PathBuf::from(format!("Z:{}", raw.replace('/', "\\")))
    } else {
        PathBuf::from(raw)
    };
    #[cfg(windows)]
    copy_dll_shim_next_to(&path);
    path
}

/// Copies the `pk-child` binary to `to` (for a test that needs a program of another name or
/// place), together with the Wine DLL shim when one sits next to `pk-child` (see
/// [`helper_exe`]). Returns every file it created, `to` first, for the test to remove.
#[allow(dead_code)]
pub fn copy_pk_child(to: &Path) -> Vec<PathBuf> {
    let from = pk_child();
    std::fs::copy(&from, to).expect("copy pk-child");
    let mut made = vec![to.to_path_buf()];
    let shim = from.with_file_name("bcryptprimitives.dll");
    if cfg!(windows) && shim.exists() {
        let next_to = to.with_file_name("bcryptprimitives.dll");
        if !next_to.exists() {
            std::fs::copy(&shim, &next_to).expect("copy the DLL shim");
            made.push(next_to);
        }
    }
    made
}

#[cfg(windows)]
fn copy_dll_shim_next_to(helper: &Path) {
    const SHIM: &str = "bcryptprimitives.dll";
    let Some(dir) = helper.parent() else { return };
    let target = dir.join(SHIM);
    if target.exists() {
        return;
    }
    let Some(source) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(SHIM)))
        .filter(|s| s.exists())
    else {
        return;
    };
    let tmp = dir.join(format!("{SHIM}.{}.tmp", std::process::id()));
    if std::fs::copy(&source, &tmp).is_ok() && std::fs::rename(&tmp, &target).is_err() {
        // Another test binary won the race (or the file is in use): theirs is the same DLL.
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Whether this (Windows) process runs under Wine rather than on Windows: ntdll exports
/// `wine_get_version` there. Always false off Windows. For assertions on behaviour Wine does
/// not emulate (Job Object limits are accepted but not enforced; job memory reads 0).
#[allow(dead_code)]
pub fn under_wine() -> bool {
    #[cfg(windows)]
    {
        use std::ffi::c_char;
        #[link(name = "kernel32")]
        extern "system" {
            fn GetModuleHandleW(name: *const u16) -> *mut std::ffi::c_void;
            fn GetProcAddress(
                module: *mut std::ffi::c_void,
                name: *const c_char,
            ) -> *mut std::ffi::c_void;
        }
        let name: Vec<u16> = "ntdll.dll\0".encode_utf16().collect();
        // SAFETY: a NUL-terminated UTF-16 name that outlives the call; ntdll is mapped into
        // every process and the returned module handle is not owned.
        let module = unsafe { GetModuleHandleW(name.as_ptr()) };
        // SAFETY: a valid module handle (checked) and a NUL-terminated ASCII name.
        !module.is_null()
            && !unsafe { GetProcAddress(module, c"wine_get_version".as_ptr()) }.is_null()
    }
    #[cfg(not(windows))]
    {
        false
    }
}

/// Owned arguments, e.g. `pk(&["print", "hi", ";", "exit", "3"])`.
#[allow(dead_code)]
pub fn pk(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Polls `cond` every 5 ms until it holds or `deadline` has passed (then checks once more).
/// Returns whether it held.
#[allow(dead_code)]
pub fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return cond();
        }
        std::thread::sleep(POLL);
    }
}

/// Async [`wait_until`]: sleeps with `tokio::time::sleep` between polls.
///
/// The deadline is measured on the real clock (`std::time::Instant`), so it still means real
/// time in a test whose tokio clock is paused (there the sleeps auto-advance and the loop polls
/// without pausing).
#[allow(dead_code)]
pub async fn wait_until_async(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return cond();
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether process `pid` exists and has not yet exited.
///
/// - Linux: `/proc/{pid}` exists and its state (the field after the last `)` of
///   `/proc/{pid}/stat`) is not `Z` (zombie) or `X` (dead): an exited but unreaped child
///   counts as dead.
/// - Other Unix: `kill(pid, 0)` succeeds (or fails with EPERM). A zombie counts as **alive**
///   there until it is reaped.
/// - Windows: `OpenProcess(SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION)` succeeds and the
///   process object is not yet signalled (`WaitForSingleObject(h, 0)` times out). An exited
///   process whose object is still held open by someone counts as dead; a process we may not
///   open (access denied) counts as alive. (`tasklist` is a stub under Wine.)
#[allow(dead_code)]
pub fn pid_alive(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => match stat.rfind(')') {
                Some(i) => !matches!(
                    stat[i + 1..].trim_start().chars().next(),
                    Some('Z' | 'X') | None
                ),
                None => false,
            },
            // Gone, or raced with its removal.
            Err(_) => false,
        }
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        let Ok(p) = libc::pid_t::try_from(pid) else {
            return false;
        };
        if p <= 0 {
            return false;
        }
        // SAFETY: signal 0 only checks for existence and permission.
        if unsafe { libc::kill(p, 0) } == 0 {
            return true;
        }
        std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(windows)]
    {
        use windows_sys::Win32::Foundation::{
            CloseHandle, GetLastError, ERROR_ACCESS_DENIED, WAIT_TIMEOUT,
        };
        use windows_sys::Win32::System::Threading::{
            OpenProcess, WaitForSingleObject, PROCESS_QUERY_LIMITED_INFORMATION,
            PROCESS_SYNCHRONIZE,
        };
        if pid == 0 {
            return false;
        }
        // SAFETY: plain values in; the handle (if any) is closed below.
        let h = unsafe {
            OpenProcess(
                PROCESS_SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION,
                0,
                pid,
            )
        };
        if h.is_null() {
            // ERROR_INVALID_PARAMETER: no such process. Access denied: it exists.
            // SAFETY: reads this thread's last-error value.
            return unsafe { GetLastError() } == ERROR_ACCESS_DENIED;
        }
        // SAFETY: `h` is a valid process handle with SYNCHRONIZE; a zero timeout only reads
        // its signal state; it is closed exactly once.
        unsafe {
            let running = WaitForSingleObject(h, 0) == WAIT_TIMEOUT;
            CloseHandle(h);
            running
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = pid;
        false
    }
}

/// Kills process `pid` outright (`SIGKILL`; `TerminateProcess` on Windows), ignoring errors:
/// cleanup for a test that failed half-way, never part of what a test proves.
#[allow(dead_code)]
pub fn kill_pid(pid: u32) {
    #[cfg(unix)]
    {
        if let Ok(p) = libc::pid_t::try_from(pid) {
            if p > 0 {
                // SAFETY: kill(2) with a positive pid targets exactly that process.
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
        }
    }
    #[cfg(windows)]
    {
        use windows_sys::Win32::Foundation::CloseHandle;
        use windows_sys::Win32::System::Threading::{
            OpenProcess, TerminateProcess, PROCESS_TERMINATE,
        };
        // SAFETY: plain values in; a non-null handle is valid, used once and closed once.
        unsafe {
            let h = OpenProcess(PROCESS_TERMINATE, 0, pid);
            if !h.is_null() {
                TerminateProcess(h, 1);
                CloseHandle(h);
            }
        }
    }
    #[cfg(not(any(unix, windows)))]
    let _ = pid;
}

/// Waits up to `d` for every pid to be dead (see [`pid_alive`]); panics naming the survivors.
#[track_caller]
#[allow(dead_code)]
pub fn assert_dead_within(pids: &[u32], d: Duration) {
    if wait_until(d, || pids.iter().all(|&p| !pid_alive(p))) {
        return;
    }
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| pid_alive(p)).collect();
    if !alive.is_empty() {
        panic!("processes still alive after {d:?}: {alive:?} (of {pids:?})");
    }
}

/// Waits up to `deadline` until `path` holds a decimal integer (a pid, or a port from
/// `listen`) and returns it; panics with the path and what was last seen.
#[track_caller]
#[allow(dead_code)]
pub fn read_pid_file(path: &Path, deadline: Duration) -> u32 {
    let mut last = String::from("file does not exist");
    let found = wait_until(deadline, || match std::fs::read_to_string(path) {
        Ok(s) => match s.trim().parse::<u32>() {
            Ok(_) => true,
            Err(_) => {
                last = format!("content {s:?} is not a number");
                false
            }
        },
        Err(e) => {
            last = e.to_string();
            false
        }
    });
    if found {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Ok(v) = s.trim().parse::<u32>() {
                return v;
            }
        }
    }
    panic!("no pid in {} after {deadline:?}: {last}", path.display());
}

/// A fresh temporary directory (removed when dropped).
#[allow(dead_code)]
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("processkit-test-")
        .tempdir()
        .expect("create temporary directory")
}

/// Number of open file descriptors of this process (Linux: entries of `/proc/self/fd`, not
/// counting the one used to list them); 0 elsewhere. Other tests running in parallel threads
/// of the same binary open descriptors too: compare counts only in a test that runs alone, or
/// with slack.
#[allow(dead_code)]
pub fn fd_count() -> usize {
    #[cfg(target_os = "linux")]
    {
        match std::fs::read_dir("/proc/self/fd") {
            Ok(rd) => rd.count().saturating_sub(1),
            Err(_) => 0,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Number of our own child processes that are zombies (exited, not reaped) — Linux: processes
/// in `/proc` whose parent is this process and whose state is `Z`; 0 elsewhere. Children of
/// other tests running in parallel in the same binary count too.
#[allow(dead_code)]
pub fn zombie_children() -> usize {
    #[cfg(target_os = "linux")]
    {
        let me = std::process::id();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return 0;
        };
        rd.filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            })
            .filter(|e| {
                let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                    return false;
                };
                let Some(i) = stat.rfind(')') else {
                    return false;
                };
                // After the comm: "state ppid pgrp ...".
                let mut fields = stat[i + 1..].split_whitespace();
                let state = fields.next();
                let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
                state == Some("Z") && ppid == Some(me)
            })
            .count()
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Removes the (empty) cgroups a SIGKILLed owner `pid` left behind (`pk-<pid>-*` under every
/// cgroup mount), waiting briefly for their processes to be gone. Linux only; a no-op elsewhere.
#[allow(dead_code)]
pub fn remove_cgroups_of(pid: u32) {
    #[cfg(target_os = "linux")]
    {
        let prefix = format!("pk-{pid}-");
        let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(dash) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            if !fields
                .get(dash + 1)
                .is_some_and(|t| t.starts_with("cgroup"))
            {
                continue;
            }
            let mut stack = vec![PathBuf::from(fields[4])];
            let mut depth = 0;
            while let Some(dir) = stack.pop() {
                depth += 1;
                if depth > 10_000 {
                    break;
                }
                let Ok(rd) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in rd.flatten() {
                    if !e.file_type().is_ok_and(|t| t.is_dir()) {
                        continue;
                    }
                    if e.file_name().to_string_lossy().starts_with(&prefix) {
                        let path = e.path();
                        let _ = std::fs::write(path.join("cgroup.kill"), "1");
                        wait_until(Duration::from_secs(5), || {
                            std::fs::remove_dir(&path).is_ok() || !path.exists()
                        });
                    } else {
                        stack.push(e.path());
                    }
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = pid;
}

/// The pids a `pk-child tree N DIR` wrote (`DIR/0.pid` .. `DIR/{N-1}.pid`), waiting up to 10 s
/// for each.
#[allow(dead_code)]
pub fn read_tree_pids(dir: &Path, n: usize) -> Vec<u32> {
    (0..n)
        .map(|i| read_pid_file(&dir.join(format!("{i}.pid")), Duration::from_secs(10)))
        .collect()
}

/// Whether the tests run as root (a privilege drop needs it; such tests skip otherwise).
#[allow(dead_code)]
pub fn is_root() -> bool {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// Starts `pk-child tick` with `kill_on_parent_death` from a short-lived thread that has its
/// own runtime, then proves the child outlives that thread (its tick count keeps growing after
/// the thread is gone) and dies with its group. The parent-death signal follows the creating
/// thread, so processkit must create such children on a thread that lasts.
#[allow(dead_code)]
pub fn assert_child_outlives_its_starting_thread() {
    let dir = tempdir();
    let ticks = dir.path().join("ticks");
    let ticks_arg = ticks.to_str().unwrap().to_owned();
    let (group, run) = std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let group = processkit::ProcessGroup::new().unwrap();
            let cmd = processkit::Command::new(pk_child())
                .args(["tick", &ticks_arg, "10"])
                .kill_on_parent_death();
            let run = rt.block_on(group.start(&cmd)).unwrap();
            (group, run)
        })
        .join()
        .unwrap()
    });
    let read = || -> u64 {
        std::fs::read_to_string(&ticks)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let after_join = read();
    assert!(
        wait_until(Duration::from_secs(10), || read() >= after_join + 5),
        "the child died with the thread that started it"
    );
    let pid = run.pid();
    assert!(pid_alive(pid));
    drop(run);
    drop(group);
    assert_dead_within(&[pid], Duration::from_secs(10));
}
