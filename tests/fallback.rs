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

/// The parent-death signal on the fallback mechanism: armed after a privilege drop (which
/// would clear it), and a child created on processkit's lasting thread outlives the short-lived
/// thread that started it. Linux only (PDEATHSIG); the drop needs root.
#[cfg(target_os = "linux")]
#[test]
fn the_parent_death_signal_on_the_fallback_mechanism() {
    force_fallback();
    assert_eq!(
        ProcessGroup::new().unwrap().mechanism(),
        Mechanism::ProcessGroup
    );
    assert_child_outlives_its_starting_thread();

    if is_root() {
        use std::os::unix::fs::PermissionsExt;
        let open = tempdir();
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = open.path().join("pk-child");
        copy_pk_child(&exe);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let out = rt
            .block_on(
                Command::new(&exe)
                    .arg("pdeathsig")
                    .kill_on_parent_death()
                    .uid(65534)
                    .gid(65534)
                    .run(),
            )
            .unwrap();
        assert_eq!(out, "pdeathsig=9");
    }
}

/// A zombie (exited, not yet reaped) is refused as on the cgroup mechanism: it is no live
/// process to contain. Linux: /proc tells zombies apart.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn adopting_a_zombie_is_refused() {
    force_fallback();
    let mut child = std::process::Command::new(pk_child())
        .args(["exit", "0"])
        .spawn()
        .unwrap();
    let pid = child.id();
    let zombie = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rfind(')')
                    .map(|i| s[i + 1..].trim_start().starts_with('Z'))
            })
            .unwrap_or(false)
    };
    assert!(
        wait_until(Duration::from_secs(10), zombie),
        "never became a zombie"
    );
    let group = ProcessGroup::new().unwrap();
    let r = group.adopt(pid);
    child.wait().unwrap();
    assert!(
        matches!(r, Err(processkit::Error::InvalidInput { .. })),
        "{r:?}"
    );
    assert!(group.members().unwrap().is_empty());
}
