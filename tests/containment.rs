//! The no-orphan guarantee: a background grandchild, a `setsid` grandchild and a double-forked
//! daemon are all dead after every way a run can end. Every test proves death by pid.
mod common;

use common::*;
use processkit::{Command, Mechanism, ProcessGroup};
use std::path::{Path, PathBuf};
use std::time::Duration;

const DEAD: Duration = Duration::from_secs(5);
const APPEAR: Duration = Duration::from_secs(10);

/// The tree shapes: how the child starts its grandchild.
#[cfg(unix)]
const SHAPES: [&str; 3] = ["bg", "setsid", "daemon"];
/// The tree shapes that exist on Windows (no sessions): a grandchild sharing the child's
/// stdio, one with null stdio, and one whose parent (an intermediate) has already exited.
#[cfg(windows)]
const SHAPES: [&str; 3] = ["bg", "quiet", "daemon"];

/// A child that writes its own pid, starts a grandchild of `shape`, then does `then`.
fn tree_cmd(dir: &Path, shape: &str, then: &[&str]) -> (Command, PathBuf, PathBuf) {
    let child_pid = dir.join(format!("{shape}-child.pid"));
    let grand_pid = dir.join(format!("{shape}-grand.pid"));
    let mut args = vec![
        "pidfile".to_string(),
        child_pid.display().to_string(),
        ";".into(),
        "spawn".into(),
        shape.into(),
        grand_pid.display().to_string(),
    ];
    for a in then {
        args.push(a.to_string());
    }
    (Command::new(pk_child()).args(args), child_pid, grand_pid)
}

/// Proves the tree of `shape` dead when it must be contained; otherwise (a setsid or daemon
/// grandchild under the process-group fallback, which documents the escape) kills it so the
/// test leaves nothing behind.
fn settle(shape: &str, pids: &[u32]) {
    if contained(shape) {
        assert_dead_within(pids, DEAD);
    } else {
        for &p in pids {
            kill_pid(p);
        }
    }
}

fn pids(child: &Path, grand: &Path) -> Vec<u32> {
    vec![read_pid_file(child, APPEAR), read_pid_file(grand, APPEAR)]
}

fn expect_cgroup() -> bool {
    // Containment of setsid/daemon shapes needs a cgroup (or a Job Object); the process-group
    // fallback documents that they escape.
    ProcessGroup::new().unwrap().mechanism() != Mechanism::ProcessGroup
}

/// Whether the grandchild of `shape` must die with the run: always for the shapes that stay
/// in the child's process group, and for every shape under a cgroup or Job Object.
fn contained(shape: &str) -> bool {
    matches!(shape, "bg" | "quiet") || expect_cgroup()
}

#[tokio::test]
async fn tree_dies_when_run_ends() {
    let dir = tempdir();
    for shape in SHAPES {
        let (cmd, c, g) = tree_cmd(dir.path(), shape, &[";", "print", "done"]);
        // `bg` keeps our stdout pipe open: the run must still end when the child exits.
        let out = cmd.run().await.unwrap();
        assert_eq!(out, "done");
        let p = pids(&c, &g);
        settle(shape, &p);
    }
}

#[tokio::test]
async fn tree_dies_on_timeout() {
    let dir = tempdir();
    for shape in SHAPES {
        let (cmd, c, g) = tree_cmd(dir.path(), shape, &[";", "sleep-forever"]);
        let r = cmd
            .timeout(Duration::from_millis(500))
            .output_string()
            .await
            .unwrap();
        assert!(r.timed_out(), "{shape}: {r:?}");
        let p = pids(&c, &g);
        settle(shape, &p);
    }
}

#[tokio::test]
async fn tree_dies_when_future_is_dropped() {
    let dir = tempdir();
    for shape in SHAPES {
        let (cmd, c, g) = tree_cmd(dir.path(), shape, &[";", "sleep-forever"]);
        let cmd2 = cmd.clone();
        let mut run = Box::pin(async move { cmd2.run().await });
        // Drive the run until both pid files exist, then drop the future mid-run.
        let gp = g.clone();
        let appeared = tokio::select! {
            r = &mut run => panic!("run ended early: {r:?}"),
            ok = wait_until_async(APPEAR, || gp.exists()) => ok,
        };
        assert!(appeared, "{shape}: grandchild never started");
        let p = pids(&c, &g);
        assert!(p.iter().all(|p| pid_alive(*p)));
        drop(run);
        settle(shape, &p);
    }
}

#[tokio::test]
async fn tree_dies_when_owning_task_panics() {
    let dir = tempdir();
    for shape in SHAPES {
        let (cmd, c, g) = tree_cmd(dir.path(), shape, &[";", "sleep-forever"]);
        let gp = g.clone();
        let task = tokio::spawn(async move {
            let _running = cmd.start().await.unwrap();
            assert!(wait_until_async(APPEAR, || gp.exists()).await);
            panic!("owner task panics with a live tree");
        });
        let err = task.await.unwrap_err();
        assert!(err.is_panic());
        let p = pids(&c, &g);
        settle(shape, &p);
    }
}

#[tokio::test]
async fn tree_dies_when_group_is_dropped() {
    let dir = tempdir();
    let group = ProcessGroup::new().unwrap();
    let mut all = Vec::new();
    let mut escaped = Vec::new();
    let mut handles = Vec::new();
    for shape in SHAPES {
        let (cmd, c, g) = tree_cmd(dir.path(), shape, &[";", "sleep-forever"]);
        handles.push(group.start(&cmd).await.unwrap());
        let p = pids(&c, &g);
        if contained(shape) {
            all.extend(p);
        } else {
            escaped.extend(p);
        }
    }
    assert!(all.iter().all(|p| pid_alive(*p)));
    // The handles stay alive: dropping the group alone must kill everything.
    drop(group);
    for p in escaped {
        kill_pid(p);
    }
    assert_dead_within(&all, DEAD);
    drop(handles);
}

#[cfg(unix)] // SIGTERM traps are POSIX; on Windows shutdown is an atomic job termination.
#[tokio::test]
async fn shutdown_lets_term_trap_run_first() {
    let dir = tempdir();
    let marker = dir.path().join("term-ran");
    let pidf = dir.path().join("p.pid");
    let group = ProcessGroup::new().unwrap();
    let _h = group
        .start(&Command::new(pk_child()).args([
            "pidfile",
            pidf.to_str().unwrap(),
            ";",
            "trap-term",
            marker.to_str().unwrap(),
            ";",
            "sleep-forever",
        ]))
        .await
        .unwrap();
    let pid = read_pid_file(&pidf, APPEAR);
    group.shutdown().await.unwrap();
    assert!(
        marker.exists(),
        "the SIGTERM handler did not run before the kill"
    );
    assert_dead_within(&[pid], DEAD);
}

#[cfg(unix)]
#[tokio::test]
async fn shutdown_kills_term_ignoring_child_after_grace() {
    use processkit::ProcessGroupOptions;
    let dir = tempdir();
    let pidf = dir.path().join("p.pid");
    let group = ProcessGroup::with_options(
        ProcessGroupOptions::default().shutdown_grace(Duration::from_millis(300)),
    )
    .unwrap();
    let _h = group
        .start(&Command::new(pk_child()).args([
            "ignore-term",
            ";",
            "pidfile",
            pidf.to_str().unwrap(),
            ";",
            "sleep-forever",
        ]))
        .await
        .unwrap();
    let pid = read_pid_file(&pidf, APPEAR);
    group.shutdown().await.unwrap();
    assert_dead_within(&[pid], DEAD);
}

#[tokio::test]
async fn shared_group_timeout_kills_only_that_child() {
    let dir = tempdir();
    let group = ProcessGroup::new().unwrap();
    let sib = dir.path().join("sibling.pid");
    let _sibling = group
        .start(&Command::new(pk_child()).args([
            "pidfile",
            sib.to_str().unwrap(),
            ";",
            "sleep-forever",
        ]))
        .await
        .unwrap();
    let sib_pid = read_pid_file(&sib, APPEAR);
    let r = group_run_with_timeout(&group).await;
    assert!(r.timed_out());
    assert!(
        pid_alive(sib_pid),
        "a sibling in the shared group was killed"
    );
    drop(group);
    assert_dead_within(&[sib_pid], DEAD);
}

async fn group_run_with_timeout(group: &ProcessGroup) -> processkit::ProcessResult<String> {
    use processkit::ProcessRunnerExt;
    let cmd = Command::new(pk_child())
        .arg("sleep-forever")
        .timeout(Duration::from_millis(200));
    group.output_string(&cmd).await.unwrap()
}

#[cfg(unix)] // uid/gid are POSIX knobs.
#[tokio::test]
async fn uid_gid_drop_composes_with_the_cgroup() {
    // SAFETY-free check: only meaningful as root.
    if !is_root() {
        eprintln!("skipped: not root");
        return;
    }
    let id = Command::new("id")
        .args(["-u"])
        .uid(65534)
        .gid(65534)
        .run()
        .await
        .unwrap();
    assert_eq!(id, "65534");
    let gid = Command::new("id")
        .arg("-g")
        .uid(65534)
        .gid(65534)
        .run()
        .await
        .unwrap();
    assert_eq!(gid, "65534");
    if expect_cgroup() {
        // The child joined its cgroup before dropping privileges.
        let cg = Command::new("cat")
            .arg("/proc/self/cgroup")
            .uid(65534)
            .gid(65534)
            .run()
            .await
            .unwrap();
        let v2 = cg.lines().find(|l| l.starts_with("0::")).unwrap_or("");
        assert!(v2.contains("/pk-"), "not in a processkit cgroup: {cg}");
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn child_runs_inside_its_own_cgroup() {
    if !expect_cgroup() {
        return;
    }
    let cg = Command::new(pk_child())
        .args(["print", "x"])
        .run()
        .await
        .unwrap();
    assert_eq!(cg, "x");
    let own = Command::new("cat")
        .arg("/proc/self/cgroup")
        .run()
        .await
        .unwrap();
    let v2 = own.lines().find(|l| l.starts_with("0::")).unwrap();
    assert!(v2.contains(&format!("/pk-{}-", std::process::id())), "{v2}");
}

/// Changing the uid or gid clears the parent-death signal, so it must be armed after the drop:
/// a `kill_on_parent_death` child that also drops privileges still has it. Linux (PDEATHSIG)
/// and root only (the drop needs it); `fallback.rs` checks the process-group mechanism.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_parent_death_signal_survives_a_privilege_drop() {
    if !is_root() {
        eprintln!("skipped: not root");
        return;
    }
    // A copy the target user can reach (a test's temp dir is private by default).
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("pk-child");
    copy_pk_child(&exe);
    let out = Command::new(&exe)
        .arg("pdeathsig")
        .kill_on_parent_death()
        .uid(65534)
        .gid(65534)
        .run()
        .await
        .unwrap();
    assert_eq!(out, "pdeathsig=9");
}
