//! Whole-tree resource limits (`limits` feature): memory (OOM kill reported), process count
//! (a fork storm stays capped), CPU quota, and no cgroup left behind in either hierarchy.
//!
//! Run with `cargo test --features limits --test limits`. Where no limit can be enforced
//! (macOS/BSD, a Linux host without delegation), each test checks that `with_options` refuses
//! with `Error::ResourceLimit` instead, and stops there.
#![cfg(feature = "limits")]

mod common;

use common::*;
use processkit::{Command, Error, ProcessGroup, ProcessGroupOptions, ProcessRunnerExt, StreamExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn child(args: &[&str]) -> Command {
    Command::new(pk_child()).args(args)
}

/// Creates the group, or checks the refusal is the typed error and returns `None`.
///
/// Also `None` under Wine, once the group was created: Wine accepts Job Object limits but
/// does not enforce them (and refuses the CPU rate), so there is nothing to observe.
fn limited(options: ProcessGroupOptions, what: &str) -> Option<ProcessGroup> {
    match ProcessGroup::with_options(options) {
        Ok(_) if under_wine() => {
            println!("skipped: Wine accepts {what} but does not enforce it");
            None
        }
        Ok(g) => Some(g),
        Err(Error::ResourceLimit { what: w, reason }) => {
            // With several limits asked for, the first one the platform refuses is named.
            assert!(
                w == what || (w == "cpu_quota" && under_wine()),
                "{w}: {reason}"
            );
            println!("skipped: {w} cannot be enforced here: {reason}");
            None
        }
        Err(e) => panic!("expected Ok or ResourceLimit, got {e:?}"),
    }
}

/// The cgroup directories (every hierarchy) a live process sits in, from
/// `/proc/<pid>/cgroup` and our mount table: the group's own v2 and v1 cgroups.
#[cfg(target_os = "linux")]
fn cgroup_dirs_of(pid: u32) -> Vec<PathBuf> {
    cgroup_dirs(&pid.to_string(), true)
}

/// Where this test process's groups are created, in every hierarchy: our own cgroups (the
/// parent of our `processkit-self` leaf if processkit moved us there).
#[cfg(target_os = "linux")]
fn our_parent_dirs() -> Vec<PathBuf> {
    cgroup_dirs("self", false)
        .into_iter()
        .map(|d| {
            if d.file_name().is_some_and(|n| n == "processkit-self") {
                d.parent().unwrap().to_path_buf()
            } else {
                d
            }
        })
        .collect()
}

/// Directories named `pk-<our pid>-*` under any of `parents`.
#[cfg(target_os = "linux")]
fn our_group_dirs(parents: &[PathBuf]) -> Vec<PathBuf> {
    let prefix = format!("pk-{}-", std::process::id());
    parents
        .iter()
        .filter_map(|p| std::fs::read_dir(p).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

#[cfg(target_os = "linux")]
fn cgroup_dirs(proc_entry: &str, _only_groups: bool) -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    // (fstype, super options, mount root, mount point)
    let mounts: Vec<(String, String, String, String)> = mounts
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            Some((
                post.first()?.to_string(),
                post.get(2).copied().unwrap_or("").to_string(),
                pre.get(3)?.to_string(),
                pre.get(4)?.to_string(),
            ))
        })
        .filter(|(fs, ..)| fs == "cgroup" || fs == "cgroup2")
        .collect();
    let mut dirs = Vec::new();
    let text = std::fs::read_to_string(format!("/proc/{proc_entry}/cgroup")).unwrap_or_default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        // Only our group cgroups (named pk-<pid>-<n>), never the hierarchy we live in.
        if !path
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with("pk-"))
        {
            continue;
        }
        let mount = mounts.iter().find(|(fs, opts, ..)| {
            if id == "0" {
                fs == "cgroup2"
            } else {
                fs == "cgroup" && ctrls.split(',').any(|c| opts.split(',').any(|o| o == c))
            }
        });
        if let Some((_, _, root, point)) = mount {
            let rel = path.strip_prefix(root.as_str()).unwrap_or(path);
            let dir = PathBuf::from(point).join(rel.trim_start_matches('/'));
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    dirs
}

#[cfg(not(target_os = "linux"))]
fn cgroup_dirs_of(_pid: u32) -> Vec<PathBuf> {
    Vec::new()
}

/// Every directory in `dirs` disappears within the deadline.
#[track_caller]
fn assert_removed(dirs: &[PathBuf]) {
    let gone = wait_until(Duration::from_secs(15), || dirs.iter().all(|d| !d.exists()));
    let left: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
    assert!(gone, "cgroups left behind: {left:?}");
}

#[tokio::test]
async fn memory_cap_kills_and_reports_oom() {
    let Some(group) = limited(
        ProcessGroupOptions::default().memory_max(64 << 20),
        "memory_max",
    ) else {
        return;
    };
    // Learn the group's cgroups from a live member, to check the teardown afterwards.
    let probe = group.start(&child(&["sleep-forever"])).await.unwrap();
    let dirs = cgroup_dirs_of(probe.pid());
    if cfg!(target_os = "linux") {
        assert!(!dirs.is_empty());
    }

    let r = group
        .output_string(&child(&["alloc", "512"]))
        .await
        .unwrap();
    if cfg!(windows) {
        // A Job Object memory cap fails the allocation inside the process (which aborts); no
        // one is killed on its behalf, so there is no OOM kill to report.
        assert!(!r.success() && !r.oom_killed(), "{r:?}");
        assert!(!r.stdout().contains("allocated=512"), "{r:?}");
        let ok = group.output_string(&child(&["alloc", "8"])).await.unwrap();
        assert_eq!(ok.code(), Some(0), "{ok:?}");
        return;
    }
    assert!(r.oom_killed(), "{r:?}");
    assert_eq!(r.code(), None, "{r:?}");
    assert!(!r.stdout().contains("allocated=512"), "{r:?}");
    // `run` reports it as the typed limit error, not a bare signal.
    match group.run(&child(&["alloc", "512"])).await {
        Err(Error::ResourceLimit { what, reason }) => {
            assert_eq!(what, "memory_max");
            assert!(reason.contains("OOM"), "{reason}");
        }
        other => panic!("expected ResourceLimit, got {other:?}"),
    }
    // A run that fits is untouched, and not blamed for the earlier kills.
    let ok = group.output_string(&child(&["alloc", "8"])).await.unwrap();
    assert_eq!(ok.code(), Some(0), "{ok:?}");
    assert!(!ok.oom_killed());
    // The group's memory accounting saw the pressure.
    let peak = group.stats().unwrap().peak_memory_bytes.unwrap();
    assert!(peak > 8 << 20, "peak {peak}");
    assert!(peak <= 80 << 20, "peak {peak} above the cap");

    drop(probe);
    drop(group);
    assert_removed(&dirs);
}

#[tokio::test]
async fn fork_storm_stays_under_max_processes() {
    let Some(group) = limited(
        ProcessGroupOptions::default().max_processes(16),
        "max_processes",
    ) else {
        return;
    };
    let mut rp = group
        .start(&child(&["forkstorm", "200", ";", "sleep-forever"]))
        .await
        .unwrap();
    let mut lines = rp.stdout_lines();
    let mut most = 0usize;
    let mut report = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut samples = group.sample_stats(Duration::from_millis(5));
    while report.is_none() {
        assert!(Instant::now() < deadline, "the fork storm never reported");
        tokio::select! {
            line = lines.next() => report = Some(line.expect("stdout closed before the report")),
            s = samples.next() => {
                let s = s.expect("sampling ended early");
                most = most.max(s.active_process_count as usize);
                most = most.max(group.members().unwrap().len());
            }
        }
    }
    // Settled: the storm is over and its survivors stay.
    let members = group.members().unwrap();
    most = most.max(members.len());
    let report = report.unwrap();
    println!("fork storm: {report}; at most {most} members");
    assert!(most <= 16, "{most} members under max_processes(16)");
    let spawned: usize = report
        .split_whitespace()
        .find_map(|w| w.strip_prefix("spawned="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad report {report:?}"));
    assert!(spawned < 16, "{report}");
    assert!(report.contains("failed="), "{report}");
    assert!(!report.ends_with("failed=0"), "{report}");

    let dirs = cgroup_dirs_of(rp.pid());
    drop(lines);
    drop(samples);
    drop(rp);
    drop(group);
    assert_dead_within(&members, Duration::from_secs(10));
    assert_removed(&dirs);
}

#[tokio::test]
async fn cpu_quota_holds_a_busy_loop_near_half_a_core() {
    let Some(group) = limited(ProcessGroupOptions::default().cpu_quota(0.5), "cpu_quota") else {
        return;
    };
    let rp = group.start(&child(&["spin", "0"])).await.unwrap();
    let dirs = cgroup_dirs_of(rp.pid());
    // Let the loop get going, then measure the group's CPU over a window of wall time.
    assert!(
        wait_until_async(Duration::from_secs(10), || group
            .stats()
            .unwrap()
            .cpu_total()
            .is_some_and(|c| c > Duration::ZERO))
        .await
    );
    let (c0, t0) = (group.stats().unwrap().cpu_total().unwrap(), Instant::now());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (c1, t1) = (group.stats().unwrap().cpu_total().unwrap(), Instant::now());
    let cores = (c1 - c0).as_secs_f64() / (t1 - t0).as_secs_f64();
    println!("cpu_quota(0.5): measured {cores:.2} cores");
    assert!(cores < 0.75, "a 0.5-core quota ran at {cores:.2} cores");
    assert!(cores > 0.0, "the busy loop got no CPU at all");

    drop(rp);
    drop(group);
    assert_removed(&dirs);
}

#[tokio::test]
async fn all_limits_together_and_nothing_left_behind() {
    let Some(group) = limited(
        ProcessGroupOptions::default()
            .memory_max(256 << 20)
            .max_processes(32)
            .cpu_quota(1.0),
        "memory_max",
    ) else {
        return;
    };
    let dir = tempdir();
    let rp = group
        .start(&child(&[
            "tree",
            "2",
            dir.path().to_str().unwrap(),
            ";",
            "sleep-forever",
        ]))
        .await
        .unwrap();
    let kids: Vec<u32> = read_tree_pids(dir.path(), 2);
    let dirs = cgroup_dirs_of(rp.pid());
    if cfg!(target_os = "linux") {
        // One v2 cgroup plus, on a hybrid host, the v1 memory/pids/cpu companions.
        assert!(!dirs.is_empty());
        for kid in &kids {
            assert_eq!(cgroup_dirs_of(*kid), dirs, "a grandchild escaped a cgroup");
        }
    }
    let s = group.stats().unwrap();
    assert_eq!(s.active_process_count, 3, "{s:?}");
    let mut all = kids.clone();
    all.push(rp.pid());
    drop(rp);
    drop(group);
    assert_dead_within(&all, Duration::from_secs(10));
    assert_removed(&dirs);

    // Across the whole binary: once every test's groups are gone, no `pk-<our pid>-*` cgroup
    // is left in any hierarchy (other tests may still hold theirs for a moment).
    #[cfg(target_os = "linux")]
    {
        let parents = our_parent_dirs();
        let clean = wait_until(Duration::from_secs(60), || {
            our_group_dirs(&parents).is_empty()
        });
        assert!(clean, "left behind: {:?}", our_group_dirs(&parents));
    }
}

#[tokio::test]
async fn invalid_limits_are_refused() {
    for (opts, what) in [
        (ProcessGroupOptions::default().memory_max(0), "memory_max"),
        (
            ProcessGroupOptions::default().max_processes(0),
            "max_processes",
        ),
        (ProcessGroupOptions::default().cpu_quota(0.0), "cpu_quota"),
        (
            ProcessGroupOptions::default().cpu_quota(f64::NAN),
            "cpu_quota",
        ),
        // Finer than 1 ms per second: no kernel enforces it, so it is refused, not rounded up.
        (
            ProcessGroupOptions::default().cpu_quota(0.0005),
            "cpu_quota",
        ),
    ] {
        match ProcessGroup::with_options(opts) {
            Err(Error::ResourceLimit { what: w, .. }) => assert_eq!(w, what),
            other => panic!("expected ResourceLimit for {what}, got {other:?}"),
        }
    }
}
