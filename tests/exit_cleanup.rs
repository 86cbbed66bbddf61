//! A short-lived owner — a CLI tool, an example, a doctest — typically drops its last group
//! right before `main` returns. The tree is killed at drop; the cgroup directories must not
//! outlive the owner either, although `exit` does not wait for the background remover.
#![cfg(target_os = "linux")] // cgroup directories are a Linux artefact.
mod common;

use common::*;
use std::path::PathBuf;
use std::time::Duration;

/// Every directory named `pk-<pid>-*` under any cgroup mount.
fn cgroups_of(pid: u32) -> Vec<PathBuf> {
    let prefix = format!("pk-{pid}-");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut found = Vec::new();
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
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    found.push(e.path());
                }
                stack.push(e.path());
            }
        }
    }
    found
}

#[test]
fn no_cgroup_outlives_an_owner_that_drops_its_group_and_exits() {
    // A few rounds: the race (remover thread vs. exit) does not lose every time.
    for _ in 0..5 {
        let dir = tempdir();
        let owner = std::process::Command::new(env!("CARGO_BIN_EXE_pk-owner"))
            .arg("--drop-and-exit")
            .arg(dir.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = owner.id();
        let out = owner.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let grandchild = read_pid_file(&dir.path().join("grand.pid"), Duration::from_secs(5));
        assert_dead_within(&[grandchild], Duration::from_secs(5));
        let left = cgroups_of(pid);
        // Leave nothing behind even when the assertion below fails.
        remove_cgroups_of(pid);
        assert!(
            left.is_empty(),
            "owner {pid} ({}) exited leaving {left:?}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
}
