//! The process-group fallback (what Linux uses when no cgroup can be created, and what macOS
//! and the BSDs use): forced here with `PROCESSKIT_MECHANISM=process-group`, read once per
//! process, so this is its own test binary.
#![cfg(unix)] // the fallback mechanism is POSIX process groups
mod common;

use common::*;
use processkit::{Command, Mechanism, ProcessGroup};
use std::time::Duration;

fn force_fallback() {
    // Every test sets the same value before any group exists; the crate reads it once.
    std::env::set_var("PROCESSKIT_MECHANISM", "process-group");
}

#[tokio::test]
async fn mechanism_is_reported_honestly() {
    force_fallback();
    let g = ProcessGroup::new().unwrap();
    assert_eq!(g.mechanism(), Mechanism::ProcessGroup);
}

#[tokio::test]
async fn verbs_work_and_background_grandchild_dies() {
    force_fallback();
    let dir = tempdir();
    let gp = dir.path().join("g.pid");
    let out = Command::new(pk_child())
        .args(["spawn", "bg", gp.to_str().unwrap(), ";", "print", "ok"])
        .run()
        .await
        .unwrap();
    assert_eq!(out, "ok");
    let pid = read_pid_file(&gp, Duration::from_secs(10));
    assert_dead_within(&[pid], Duration::from_secs(5));
}

#[tokio::test]
async fn timeout_kills_the_process_group() {
    force_fallback();
    let dir = tempdir();
    let gp = dir.path().join("g.pid");
    let r = Command::new(pk_child())
        .args(["spawn", "quiet", gp.to_str().unwrap(), ";", "sleep-forever"])
        .timeout(Duration::from_millis(300))
        .output_string()
        .await
        .unwrap();
    assert!(r.timed_out());
    let pid = read_pid_file(&gp, Duration::from_secs(10));
    assert_dead_within(&[pid], Duration::from_secs(5));
}

#[tokio::test]
async fn setsid_child_stays_contained_by_its_own_session_group() {
    force_fallback();
    let dir = tempdir();
    let pf = dir.path().join("c.pid");
    let g = ProcessGroup::new().unwrap();
    let _h = g
        .start(
            &Command::new(pk_child())
                .args(["pidfile", pf.to_str().unwrap(), ";", "sleep-forever"])
                .setsid(),
        )
        .await
        .unwrap();
    let pid = read_pid_file(&pf, Duration::from_secs(10));
    drop(g);
    assert_dead_within(&[pid], Duration::from_secs(5));
}

#[cfg(feature = "limits")]
#[tokio::test]
async fn limits_are_refused_not_silently_dropped() {
    force_fallback();
    let e = ProcessGroup::with_options(processkit::ProcessGroupOptions::default().max_processes(4))
        .unwrap_err();
    assert!(
        matches!(e, processkit::Error::ResourceLimit { .. }),
        "{e:?}"
    );
}
