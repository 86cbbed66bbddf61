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
/// into the same file on Wine's `Z:` drive (`/a/b` becomes `Z:\a\b`).
#[allow(dead_code)]
pub fn pk_child() -> PathBuf {
    let raw = env!("CARGO_BIN_EXE_pk-child");
    if cfg!(windows) && raw.starts_with('/') {
        PathBuf::from(format!("Z:{}", raw.replace('/', "\\")))
    } else {
        PathBuf::from(raw)
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
/// - Windows: `tasklist /FI "PID eq {pid}" /NH` lists it (no Win32 bindings in the dev
///   dependencies). An exited process is not listed even while handles to it are open.
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
        let out = std::process::Command::new("tasklist")
            .args(["/FI", &format!("PID eq {pid}"), "/NH"])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output();
        let Ok(out) = out else { return false };
        let text = String::from_utf8_lossy(&out.stdout);
        let want = pid.to_string();
        text.lines()
            .filter(|l| !l.trim_start().starts_with("INFO:"))
            .any(|l| l.split_whitespace().any(|tok| tok == want))
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = pid;
        false
    }
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
