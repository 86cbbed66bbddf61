//! Spawn-path checks shared by `tests/spawn.rs` (the Linux clone3 path, the default) and
//! `tests/spawn_fork.rs` (the std-based fallback, forced with `PROCESSKIT_SPAWN=fork`).
//! Not a test binary of its own (a directory, so cargo does not build it alone): both files
//! include it with `#[path]`.
//!
//! Everything here is about what a child sees between spawn and its first instruction: the
//! program lookup and exec errors, environment, working directory, credentials, session,
//! signal state, inherited fds and the cgroup it is born in.
#![allow(dead_code)]

use crate::common::*;
use processkit::{Command, Error, ProcessGroup};
use std::time::Duration;

/// A pid's `/proc/<pid>/status` field, e.g. `SigBlk`.
fn status_field(pid: u32, name: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

/// Starts `pk-child pidfile F ; sleep-forever` in `group` and returns the handle and its pid
/// once the child is running its program (the pidfile exists).
async fn sleeper(
    group: &ProcessGroup,
    cmd: impl FnOnce(Command) -> Command,
) -> (processkit::RunningProcess, u32) {
    let dir = tempdir();
    // Writable for a child that drops to another user.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let pf = dir.path().join("p.pid");
    let rp = group
        .start(&cmd(Command::new(pk_child()).args([
            "pidfile",
            pf.to_str().unwrap(),
            ";",
            "sleep-forever",
        ])))
        .await
        .unwrap();
    let pid = read_pid_file(&pf, Duration::from_secs(10));
    assert_eq!(pid, rp.pid());
    (rp, pid)
}

pub async fn missing_program_is_not_found() {
    let e = Command::new("/nonexistent/processkit-no-such-program")
        .run()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    // A bare name searched along PATH.
    let e = Command::new("processkit-no-such-program-on-path")
        .run()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
}

pub async fn non_executable_file_is_permission_denied() {
    let dir = tempdir();
    let f = dir.path().join("not-executable");
    std::fs::write(&f, "#!/bin/sh\n").unwrap();
    let e = Command::new(&f).run().await.unwrap_err();
    match &e {
        Error::Spawn { source, .. } => {
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied, "{e:?}")
        }
        other => panic!("expected Spawn(PermissionDenied), got {other:?}"),
    }
    // A directory cannot be executed either.
    let e = Command::new(dir.path()).run().await.unwrap_err();
    assert!(matches!(e, Error::Spawn { .. }), "{e:?}");
}

pub async fn failed_exec_leaves_no_zombie_or_fd() {
    // Warm up lazily created state first (runtime, /dev/null fd, pool, threads).
    let _ = Command::new("/nonexistent/x").run().await;
    let before = fd_count();
    for _ in 0..20 {
        let _ = Command::new("/nonexistent/x").run().await.unwrap_err();
    }
    assert!(
        wait_until_async(Duration::from_secs(5), || zombie_children() == 0).await,
        "zombies after failed spawns"
    );
    assert!(
        wait_until_async(Duration::from_secs(5), || fd_count() <= before).await,
        "fds grew from {before} to {}",
        fd_count()
    );
}

pub async fn program_is_found_on_the_child_path() {
    let exe = pk_child();
    let dir = exe.parent().unwrap().to_str().unwrap().to_string();
    let name = exe.file_name().unwrap().to_str().unwrap().to_string();
    let out = Command::new(&name)
        .env("PATH", format!("/nonexistent-dir:{dir}"))
        .args(["print", "found"])
        .run()
        .await
        .unwrap();
    assert_eq!(out, "found");
    // With a cleared environment and no PATH, only /bin:/usr/bin are searched.
    let e = Command::new(&name)
        .env_clear()
        .args(["print", "x"])
        .run()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
}

pub async fn env_is_applied() {
    std::env::set_var("PK_SPAWN_TEST_INHERITED", "from-parent");
    let out = Command::new(pk_child())
        .env("PK_A", "1")
        .env("PK_B", "two words")
        .env_remove("PK_SPAWN_TEST_INHERITED")
        .args([
            "env",
            "PK_A",
            ";",
            "env",
            "PK_B",
            ";",
            "env",
            "PK_SPAWN_TEST_INHERITED",
        ])
        .run()
        .await
        .unwrap();
    assert_eq!(out, "PK_A=1\nPK_B=two words\nPK_SPAWN_TEST_INHERITED unset");
    let out = Command::new(pk_child())
        .args(["env", "PK_SPAWN_TEST_INHERITED"])
        .run()
        .await
        .unwrap();
    assert_eq!(out, "PK_SPAWN_TEST_INHERITED=from-parent");
    let out = Command::new(pk_child())
        .env_clear()
        .env("ONLY", "me")
        .args([
            "env",
            "ONLY",
            ";",
            "env",
            "PK_SPAWN_TEST_INHERITED",
            ";",
            "env",
            "PATH",
        ])
        .run()
        .await
        .unwrap();
    assert_eq!(out, "ONLY=me\nPK_SPAWN_TEST_INHERITED unset\nPATH unset");
}

pub async fn cwd_is_applied() {
    let dir = tempdir();
    let want = dir.path().canonicalize().unwrap();
    let out = Command::new(pk_child())
        .current_dir(&want)
        .arg("cwd")
        .run()
        .await
        .unwrap();
    assert_eq!(out, want.display().to_string());
}

/// The fd numbers open in `/proc/<pid>/fd`.
fn open_fds(pid: &str) -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

pub async fn only_stdio_fds_are_inherited() {
    // What this test process itself hands down on purpose (fds without FD_CLOEXEC, such as
    // cargo's jobserver pipe) is not ours to close; everything processkit opens is.
    let inheritable: Vec<i32> = open_fds("self")
        .into_iter()
        // SAFETY: F_GETFD only reads the fd's flags; a closed fd just returns -1.
        .filter(|&fd| fd > 2 && unsafe { libc::fcntl(fd, libc::F_GETFD) } == 0)
        .collect();
    let g = ProcessGroup::new().unwrap();
    let (mut rp, pid) = sleeper(&g, |c| c).await;
    let extra: Vec<i32> = open_fds(&pid.to_string())
        .into_iter()
        .filter(|fd| *fd > 2 && !inheritable.contains(fd))
        .collect();
    assert!(extra.is_empty(), "the child inherited fds {extra:?}");
    rp.kill().await.unwrap();
}

/// `expect_empty_mask`: the clone3 path empties the mask; std's own spawn (the fallback) no
/// longer does in current Rust releases, so there only SIGPIPE is checked.
pub async fn signal_mask_and_sigpipe_are_reset(expect_empty_mask: bool) {
    // This thread blocks SIGUSR1 and the Rust runtime ignores SIGPIPE: the child must start
    // with SIGPIPE at its default (like std's spawn) and, on the clone3 path, an empty mask.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain sigset manipulation on a local, then blocking SIGUSR1 on this thread.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    // A C program: a Rust one (like pk-child) ignores SIGPIPE itself at startup.
    let g = ProcessGroup::new().unwrap();
    let mut rp = g.start(&Command::new("sleep").arg("30")).await.unwrap();
    let pid = rp.pid();
    assert!(
        wait_until_async(Duration::from_secs(10), || {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|p| p.file_name().is_some_and(|n| n == "sleep"))
        })
        .await,
        "sleep never started"
    );
    // SAFETY: undoing the block above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    if expect_empty_mask {
        assert_eq!(
            u64::from_str_radix(&status_field(pid, "SigBlk"), 16).unwrap(),
            0
        );
    }
    let ign = u64::from_str_radix(&status_field(pid, "SigIgn"), 16).unwrap();
    assert_eq!(ign & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE still ignored");
    rp.kill().await.unwrap();
}

pub async fn setsid_makes_a_session_leader() {
    let g = ProcessGroup::new().unwrap();
    let (mut rp, pid) = sleeper(&g, |c| c.setsid()).await;
    // SAFETY: getsid only reads kernel state.
    assert_eq!(unsafe { libc::getsid(pid as i32) }, pid as i32);
    rp.kill().await.unwrap();
    let (mut rp, pid) = sleeper(&g, |c| c).await;
    // SAFETY: as above.
    assert_ne!(unsafe { libc::getsid(pid as i32) }, pid as i32);
    rp.kill().await.unwrap();
}

pub async fn uid_gid_and_groups_are_dropped() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    let g = ProcessGroup::new().unwrap();
    let (mut rp, pid) = sleeper(&g, |c| c.uid(65534).gid(65534)).await;
    assert!(status_field(pid, "Uid")
        .split_whitespace()
        .all(|u| u == "65534"));
    assert!(status_field(pid, "Gid")
        .split_whitespace()
        .all(|u| u == "65534"));
    assert_eq!(status_field(pid, "Groups"), "");
    rp.kill().await.unwrap();
}

/// The cgroup v2 path of a pid (`0::/...` line of `/proc/<pid>/cgroup`).
fn cgroup_of(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("")
        .to_string()
}

pub async fn child_runs_inside_its_cgroup() {
    let g = ProcessGroup::new().unwrap();
    if g.mechanism() != processkit::Mechanism::CgroupV2 {
        eprintln!("skipped: no cgroup v2 here");
        return;
    }
    let (mut rp, pid) = sleeper(&g, |c| c).await;
    let prefix = format!("pk-{}-", std::process::id());
    let cg = cgroup_of(pid);
    assert!(
        cg.rsplit('/').next().unwrap().starts_with(&prefix),
        "child is in {cg:?}"
    );
    rp.kill().await.unwrap();
}

pub async fn spawn_after_kill_in_the_same_group_works() {
    // `cgroup.kill` moves the kernel's per-cgroup kill counter; a child cloned into such a
    // cgroup must still run (Linux 6.14+ would kill it at birth with CLONE_INTO_CGROUP).
    let g = ProcessGroup::new().unwrap();
    let (_rp, pid) = sleeper(&g, |c| c).await;
    g.kill().unwrap();
    assert_dead_within(&[pid], Duration::from_secs(5));
    for i in 0..3 {
        let mut rp = g
            .start(&Command::new(pk_child()).args(["print", &format!("again-{i}")]))
            .await
            .unwrap();
        assert_eq!(
            rp.wait().await.unwrap(),
            Some(0),
            "the child after the kill did not run"
        );
    }
    let out = Command::new(pk_child())
        .args(["print", "private"])
        .run()
        .await
        .unwrap();
    assert_eq!(out, "private");
}

pub async fn killed_and_frozen_cgroups_are_not_reused() {
    let g = ProcessGroup::new().unwrap();
    if g.mechanism() != processkit::Mechanism::CgroupV2 {
        return;
    }
    let (_rp, pid) = sleeper(&g, |c| c).await;
    let killed_cg = cgroup_of(pid);
    g.kill().unwrap();
    drop(_rp);
    drop(g);
    for _ in 0..10 {
        let g = ProcessGroup::new().unwrap();
        let (mut rp, pid) = sleeper(&g, |c| c).await;
        assert_ne!(
            cgroup_of(pid),
            killed_cg,
            "a killed cgroup was handed out again"
        );
        rp.kill().await.unwrap();
    }
}
