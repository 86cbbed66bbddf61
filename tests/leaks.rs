//! Hundreds of runs leave no cgroup, no file descriptor and no zombie behind.
//! (One test in its own binary: fd and zombie counts are per process.)
mod common;

use common::*;
use processkit::Command;
use std::time::Duration;

#[cfg(target_os = "linux")]
fn our_cgroups() -> Vec<std::path::PathBuf> {
    let prefix = format!("pk-{}-", std::process::id());
    let mut found = Vec::new();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if !fields[dash + 1].starts_with("cgroup") {
            continue;
        }
        let mnt = fields[4];
        for entry in walk(std::path::Path::new(mnt), 4) {
            if entry
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            {
                found.push(entry);
            }
        }
    }
    found
}

#[cfg(target_os = "linux")]
fn walk(dir: &std::path::Path, depth: usize) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if depth == 0 {
        return out;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(e.path());
                out.extend(walk(&e.path(), depth - 1));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_runs_leak_nothing() {
    // Warm up lazily created state (runtime threads, the cgroup remover thread).
    Command::new(pk_child())
        .args(["print", "warm"])
        .run()
        .await
        .unwrap();
    let fds_before = fd_count();
    let n = std::env::var("PK_LEAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut tasks = Vec::new();
    for chunk in 0..8 {
        tasks.push(tokio::spawn(async move {
            for i in 0..n / 8 {
                let out = Command::new(pk_child())
                    .args(["print", &format!("{chunk}-{i}")])
                    .run()
                    .await
                    .unwrap();
                assert_eq!(out, format!("{chunk}-{i}"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    #[cfg(target_os = "linux")]
    assert!(
        wait_until_async(Duration::from_secs(10), || our_cgroups().is_empty()).await,
        "cgroups left behind: {:?}",
        our_cgroups()
    );
    assert!(
        wait_until_async(Duration::from_secs(5), || fd_count() <= fds_before).await,
        "fds grew from {fds_before} to {}",
        fd_count()
    );
    assert!(
        wait_until_async(Duration::from_secs(5), || zombie_children() == 0).await,
        "{} zombie children",
        zombie_children()
    );
}
