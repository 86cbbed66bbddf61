//! Test helper: an *owner* process that uses processkit, so tests can kill the owner abruptly
//! (SIGKILL) and check what happens to the tree it started.
//!
//! `pk-owner --print-mechanism` prints the mechanism a group gets here, then runs a child.
//!
//! `pk-owner --drop-and-exit DIR`: starts a tree (a child with a background grandchild whose
//! pid goes to `DIR/grand.pid`) in a
//! group, drops the group and returns from `main` at once — the short-lived-owner shape, for
//! the test that nothing of the group (no cgroup directory) outlives a normal exit.
//!
//! `pk-owner DIR [--no-parent-death]`: starts `pk-child` (found next to this binary) with
//! `kill_on_parent_death`, which writes `DIR/child.pid`, starts a background grandchild
//! (`DIR/grand.pid`) and a `setsid` grandchild (`DIR/setsid.pid`), then sleeps. The owner prints
//! `ready` once all three pid files exist, then sleeps until killed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args_os().skip(1);
    let first = args
        .next()
        .expect("usage: pk-owner DIR [--no-parent-death] | --print-mechanism");
    if first == "--print-mechanism" {
        // Which mechanism a group gets in this process (e.g. run as an unprivileged user),
        // and proof that a run still works there.
        let g = processkit::ProcessGroup::new().expect("group");
        println!("{}", g.mechanism());
        let child = std::env::current_exe()
            .expect("current_exe")
            .with_file_name(format!("pk-child{}", std::env::consts::EXE_SUFFIX));
        let out = processkit::Command::new(child)
            .args(["print", "run-ok"])
            .run()
            .await
            .expect("run");
        println!("{out}");
        return;
    }
    if first == "--drop-and-exit" {
        let child = std::env::current_exe()
            .expect("current_exe")
            .with_file_name(format!("pk-child{}", std::env::consts::EXE_SUFFIX));
        let grand = PathBuf::from(args.next().expect("--drop-and-exit DIR")).join("grand.pid");
        let g = processkit::ProcessGroup::new().expect("group");
        let _run = g
            .start(&processkit::Command::new(child).args([
                "spawn",
                "bg",
                &grand.display().to_string(),
                ";",
                "sleep-forever",
            ]))
            .await
            .expect("start");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !grand.exists() {
            assert!(Instant::now() < deadline, "the grandchild did not start");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!("{}", g.mechanism());
        return; // drops the group (and the handle) right before exit
    }
    let dir = PathBuf::from(first);
    let parent_death = args.next().is_none_or(|a| a != "--no-parent-death");
    let exe = std::env::current_exe().expect("current_exe");
    let child_exe = exe.with_file_name(format!("pk-child{}", std::env::consts::EXE_SUFFIX));
    let p = |n: &str| dir.join(n).display().to_string();
    let mut cmd = processkit::Command::new(child_exe).args([
        "pidfile",
        &p("child.pid"),
        ";",
        "spawn",
        "quiet",
        &p("grand.pid"),
        ";",
        "spawn",
        "setsid-quiet",
        &p("setsid.pid"),
        ";",
        "sleep-forever",
    ]);
    if parent_death {
        cmd = cmd.kill_on_parent_death();
    }
    let _run = cmd.start().await.expect("start");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !["child.pid", "grand.pid", "setsid.pid"]
        .iter()
        .all(|n| dir.join(n).exists())
    {
        assert!(Instant::now() < deadline, "pid files did not appear");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("ready");
    std::future::pending::<()>().await;
}
