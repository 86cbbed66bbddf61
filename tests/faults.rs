//! Fault injection: cgroups that cannot be created, fd exhaustion, a child that closes stdin
//! early, a reader that stops reading.
mod common;

use common::*;
use processkit::{Command, StreamExt};
use std::time::Duration;

#[tokio::test]
async fn child_closing_stdin_early_is_not_an_error() {
    // 8 MiB of stdin to a child that never reads it: our writer meets EPIPE.
    let r = Command::new(pk_child())
        .args(["print", "ignored my input"])
        .stdin(processkit::Stdin::from_bytes(vec![b'x'; 8 << 20]))
        .output_string()
        .await
        .unwrap();
    assert_eq!(r.code(), Some(0));
    assert_eq!(r.stdout(), "ignored my input\n");
}

#[tokio::test]
async fn explicit_write_after_child_exit_reports_broken_pipe() {
    let mut h = Command::new(pk_child())
        .args(["close-stdin", ";", "print", "closed"])
        .keep_stdin_open()
        .start()
        .await
        .unwrap();
    let mut w = h.standard_input().unwrap();
    assert_eq!(h.wait().await.unwrap(), Some(0));
    // The caller asked to write: the failure is reported, typed, never a panic.
    let mut failed = false;
    for _ in 0..64 {
        if let Err(e) = w.write_all(&[b'x'; 65536]).await {
            assert!(matches!(e, processkit::Error::Io { .. }), "{e:?}");
            failed = true;
            break;
        }
    }
    assert!(failed, "writing 4 MiB into a closed pipe never failed");
}

#[tokio::test]
async fn reader_that_stops_reading_does_not_deadlock_the_child() {
    let dir = tempdir();
    let pf = dir.path().join("c.pid");
    let mut h = Command::new(pk_child())
        .args([
            "pidfile",
            pf.to_str().unwrap(),
            ";",
            "lines",
            "500000",
            "100",
        ])
        .start()
        .await
        .unwrap();
    let mut lines = h.stdout_lines();
    assert_eq!(
        lines.next().await.as_deref(),
        Some(&*format!("line 00000001{}", ".".repeat(87)))
    );
    drop(lines); // stop reading with ~50 MB still to come
    let code = tokio::time::timeout(Duration::from_secs(60), h.wait())
        .await
        .expect("the child deadlocked on a full pipe")
        .unwrap();
    assert_eq!(code, Some(0));
    assert_dead_within(
        &[read_pid_file(&pf, Duration::from_secs(5))],
        Duration::from_secs(5),
    );
}

#[tokio::test]
async fn never_reading_stdout_then_waiting_does_not_deadlock() {
    let mut h = Command::new(pk_child())
        .args(["bytes", "20M"])
        .start()
        .await
        .unwrap();
    let code = tokio::time::timeout(Duration::from_secs(60), h.wait())
        .await
        .expect("deadlock")
        .unwrap();
    assert_eq!(code, Some(0));
}

/// An unprivileged owner cannot create cgroups under root's: it must fall back to process
/// groups, say so through `Mechanism`, and still run.
#[cfg(target_os = "linux")]
#[test]
fn unwritable_cgroup_falls_back_to_process_group() {
    use std::os::unix::process::CommandExt as _;
    if !is_root() {
        eprintln!("skipped: needs root to start an unprivileged owner");
        return;
    }
    let owner = env!("CARGO_BIN_EXE_pk-owner");
    let out = std::process::Command::new(owner)
        .arg("--print-mechanism")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, "process group\nrun-ok\n");
}

/// A read-only cgroup mount (EROFS even for root) falls back too. Needs `unshare` and
/// `mount` to build the read-only view: this test is about a mount, so it uses a shell.
#[cfg(target_os = "linux")]
#[test]
fn read_only_cgroup_mount_falls_back_to_process_group() {
    if !is_root()
        || std::process::Command::new("unshare")
            .arg("--version")
            .output()
            .is_err()
    {
        eprintln!("skipped: needs root and unshare");
        return;
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(v2) = mountinfo
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .map(|l| l.split(' ').nth(4).unwrap().to_owned())
    else {
        eprintln!("skipped: no cgroup2 mount");
        return;
    };
    let owner = env!("CARGO_BIN_EXE_pk-owner");
    let script = format!("mount -o bind,ro {v2} {v2} && mount -o remount,bind,ro {v2} && exec {owner} --print-mechanism");
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "skipped: could not build a read-only view: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "process group\nrun-ok\n"
    );
}

#[cfg(target_os = "linux")]
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
