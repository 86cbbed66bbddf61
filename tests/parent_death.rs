//! `kill_on_parent_death` means the whole tree dies with the owner, even when the owner is
//! SIGKILLed (no destructor runs): on Linux the guardian kills every cgroup (or registered
//! process group) the owner still had; on Windows the kernel closes the owner's only handle to
//! the Job Object, and kill-on-close ends the tree (`TerminateProcess` of the owner here).
// Not macOS/BSD: their process-group mechanism lets the setsid grandchild escape by design.
#![cfg(any(target_os = "linux", windows))]
mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

/// Starts pk-owner, waits for its tree, SIGKILLs it (`TerminateProcess` on Windows), and
/// returns (child, grandchild, setsid grandchild) pids plus the owner pid. (On Windows the
/// "setsid" grandchild is a plain quiet one: there are no sessions.)
fn kill_owner(env: &[(&str, &str)]) -> ([u32; 3], u32, CleanupOnPanic) {
    let dir = tempdir();
    let mut cmd = std::process::Command::new(pk_owner());
    cmd.arg(dir.path()).stdout(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut o = cmd.spawn().unwrap();
    let mut cleanup = CleanupOnPanic {
        dir: dir.path().to_owned(),
        owner: o.id(),
        tree: Vec::new(),
    };
    let mut line = String::new();
    BufReader::new(o.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let pid = |n: &str| read_pid_file(&dir.path().join(n), Duration::from_secs(5));
    let tree = [pid("child.pid"), pid("grand.pid"), pid("setsid.pid")];
    cleanup.tree = tree.to_vec();
    assert!(tree.iter().all(|p| pid_alive(*p)));
    o.kill().unwrap(); // SIGKILL: no Drop runs in the owner
    o.wait().unwrap();
    (tree, o.id(), cleanup)
}

/// Should the test fail (the owner did not get its tree up, or the tree outlived it), it still
/// leaves nothing behind: the owner, every pid its tree wrote, the owner's cgroups. Held until
/// the end of the test.
struct CleanupOnPanic {
    dir: std::path::PathBuf,
    owner: u32,
    /// The tree's pids, once read (the directory goes with `kill_owner`'s return).
    tree: Vec<u32>,
}

impl Drop for CleanupOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        kill_pid(self.owner);
        for &pid in &self.tree {
            kill_pid(pid);
        }
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if e.path().extension().is_some_and(|x| x == "pid") {
                if let Some(pid) = std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    kill_pid(pid);
                }
            }
        }
        remove_cgroups_of(self.owner);
    }
}

#[test]
fn whole_tree_dies_with_a_sigkilled_owner() {
    let (tree, owner_pid, _cleanup) = kill_owner(&[]);
    // Child, background grandchild and setsid grandchild: all dead within a second.
    let dead = wait_until(Duration::from_secs(1), || {
        tree.iter().all(|p| !pid_alive(*p))
    });
    if !dead {
        for p in tree {
            kill_pid(p);
        }
    }
    assert!(
        dead,
        "tree {tree:?} outlived its SIGKILLed owner by more than a second"
    );
    // The guardian also removed the owner's cgroups.
    #[cfg(target_os = "linux")]
    assert!(
        wait_until(Duration::from_secs(5), || !owner_cgroups_exist(owner_pid)),
        "the owner's cgroups were not removed"
    );
    remove_cgroups_of(owner_pid);
}

// Linux only: the fallback is forced with PROCESSKIT_MECHANISM, a Linux-backend switch.
#[cfg(target_os = "linux")]
#[test]
fn fallback_tree_dies_with_a_sigkilled_owner() {
    let (tree, owner_pid, _cleanup) = kill_owner(&[("PROCESSKIT_MECHANISM", "process-group")]);
    // The process-group mechanism reaches the child and its background grandchild; the setsid
    // grandchild left the group (the documented weakness of that mechanism).
    let dead = wait_until(Duration::from_secs(1), || {
        tree[..2].iter().all(|p| !pid_alive(*p))
    });
    for p in tree {
        kill_pid(p);
    }
    assert_dead_within(&tree, Duration::from_secs(5));
    assert!(dead, "fallback tree {tree:?} outlived its owner");
    remove_cgroups_of(owner_pid);
}

#[cfg(target_os = "linux")]
fn owner_cgroups_exist(pid: u32) -> bool {
    let prefix = format!("pk-{pid}-");
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .any(|root| {
            std::fs::read_dir(root)
                .map(|rd| {
                    rd.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                })
                .unwrap_or(false)
        })
}

/// The parent-death signal follows the thread that created the child, not the process: a
/// child started from a short-lived thread (its own runtime here) must outlive that thread and
/// live as long as its owner. (`fallback.rs` checks the process-group mechanism.)
#[test]
fn a_child_outlives_the_thread_that_started_it() {
    assert_child_outlives_its_starting_thread();
}
