//! Stress suite: many runs, every tree shape crossed with every ending, concurrent group drops.
//!
//! Bounded for CI; set `PK_STRESS=1` for the long version (10,000 runs, more rounds). On
//! Windows the counts are a tenth to a quarter (a process start costs far more there, and even
//! more under Wine); the shapes and endings are the same.
#[path = "../common/mod.rs"]
mod common;

use common::*;
use processkit::{Command, ProcessGroup, ProcessGroupOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn long() -> bool {
    std::env::var_os("PK_STRESS").is_some_and(|v| v != "0")
}

const DEAD: Duration = Duration::from_secs(10);

/// `unix` on POSIX, `windows` on Windows (where the default counts are smaller).
fn per_os(unix: usize, windows: usize) -> usize {
    if cfg!(windows) {
        windows
    } else {
        unix
    }
}

#[cfg(target_os = "linux")]
fn our_cgroup_count() -> usize {
    let prefix = format!("pk-{}-", std::process::id());
    let mut n = 0;
    for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        if let Ok(rd) = std::fs::read_dir(root) {
            n += rd
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .count();
        }
    }
    n
}
#[cfg(not(target_os = "linux"))]
fn our_cgroup_count() -> usize {
    0
}

/// Many short runs: fds, zombies and cgroups are back to where they started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_short_runs_leak_nothing() {
    let runs: usize = if long() { 10_000 } else { per_os(1_500, 160) };
    Command::new(pk_child()).arg("pid").run().await.unwrap();
    let fds = fd_count();
    let width = 16;
    let mut tasks = Vec::new();
    for t in 0..width {
        tasks.push(tokio::spawn(async move {
            for i in 0..runs / width {
                let want = format!("{t}.{i}");
                let r = Command::new(pk_child())
                    .args(["print", &want])
                    .output_string()
                    .await
                    .unwrap();
                assert_eq!(r.stdout().trim(), want);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        wait_until_async(DEAD, || our_cgroup_count() == 0).await,
        "cgroups left: {}",
        our_cgroup_count()
    );
    assert!(
        wait_until_async(DEAD, || fd_count() <= fds).await,
        "fds {fds} -> {}",
        fd_count()
    );
    assert!(
        wait_until_async(DEAD, || zombie_children() == 0).await,
        "zombies: {}",
        zombie_children()
    );
}

/// How a tree is shaped.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Background,
    Nohup,
    #[cfg_attr(windows, allow(dead_code))] // POSIX only
    Setsid,
    DoubleFork,
    Wide,
}

/// How a run ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    RunEnd,
    Timeout,
    Drop,
    Panic,
    #[cfg(feature = "cancellation")]
    Cancel,
    GroupDrop,
    Shutdown,
}

#[cfg(unix)]
const SHAPES: &[Shape] = &[
    Shape::Background,
    Shape::Nohup,
    Shape::Setsid,
    Shape::DoubleFork,
    Shape::Wide,
];
/// Windows has no sessions: `Setsid` would only repeat `Background`. `DoubleFork` there is a
/// grandchild whose parent (the intermediate) has exited.
#[cfg(windows)]
const SHAPES: &[Shape] = &[
    Shape::Background,
    Shape::Nohup,
    Shape::DoubleFork,
    Shape::Wide,
];

fn endings() -> Vec<Ending> {
    vec![
        Ending::RunEnd,
        Ending::Timeout,
        Ending::Drop,
        Ending::Panic,
        #[cfg(feature = "cancellation")]
        Ending::Cancel,
        Ending::GroupDrop,
        Ending::Shutdown,
    ]
}

/// The child's arguments for `shape`, and the pid files it will write.
fn shape_args(shape: Shape, dir: &Path) -> (Vec<String>, Vec<PathBuf>) {
    let p = |n: &str| dir.join(n);
    let mut files = vec![p("child.pid")];
    let mut args = vec!["pidfile".to_string(), p("child.pid").display().to_string()];
    let mut spawn = |mode: &str, name: &str, files: &mut Vec<PathBuf>| {
        args.extend([
            ";".into(),
            "spawn".into(),
            mode.into(),
            p(name).display().to_string(),
        ]);
        files.push(p(name));
    };
    match shape {
        Shape::Background => spawn("bg", "g.pid", &mut files),
        Shape::Nohup => spawn("quiet", "g.pid", &mut files),
        Shape::Setsid => spawn("setsid", "g.pid", &mut files),
        Shape::DoubleFork => spawn("daemon", "g.pid", &mut files),
        Shape::Wide => {
            let n = if long() { 200 } else { per_os(60, 12) };
            args.extend([
                ";".into(),
                "tree".into(),
                n.to_string(),
                dir.display().to_string(),
            ]);
            files.extend((0..n).map(|i| p(&format!("{i}.pid"))));
        }
    }
    (args, files)
}

fn read_all(files: &[PathBuf]) -> Vec<u32> {
    files
        .iter()
        .map(|f| read_pid_file(f, Duration::from_secs(20)))
        .collect()
}

async fn end_tree(shape: Shape, ending: Ending) {
    let dir = tempdir();
    let (mut args, files) = shape_args(shape, dir.path());
    // The tree's members start in no fixed order: wait for every pid file, not the last one.
    let all_written = {
        let files = files.clone();
        move || files.iter().all(|f| f.exists())
    };
    let sleep_then = |args: &mut Vec<String>| args.extend([";".into(), "sleep-forever".into()]);
    let pids: Vec<u32> = match ending {
        Ending::RunEnd => {
            args.extend([";".into(), "print".into(), "done".into()]);
            let out = Command::new(pk_child()).args(&args).run().await.unwrap();
            assert_eq!(out, "done");
            read_all(&files)
        }
        Ending::Timeout => {
            sleep_then(&mut args);
            // The deadline must land after the whole tree exists, which a loaded machine (or
            // Wine) can delay past any fixed figure: a run whose tree was not complete when
            // the deadline hit still proves its partial tree dead, then retries with twice the
            // deadline. The condition, not the figure, decides.
            let mut deadline = Duration::from_millis(1500);
            loop {
                let r = Command::new(pk_child())
                    .args(&args)
                    .timeout(deadline)
                    .output_string()
                    .await
                    .unwrap();
                assert!(r.timed_out(), "{shape:?}: {r}");
                if all_written() {
                    break read_all(&files);
                }
                let partial: Vec<u32> = files
                    .iter()
                    .filter(|f| f.exists())
                    .map(|f| read_pid_file(f, Duration::from_secs(5)))
                    .collect();
                assert_dead_within(&partial, DEAD);
                assert!(
                    deadline < Duration::from_secs(40),
                    "{shape:?}: the tree never completed before a {deadline:?} timeout"
                );
                for f in &files {
                    let _ = std::fs::remove_file(f);
                }
                deadline *= 2;
            }
        }
        Ending::Drop => {
            sleep_then(&mut args);
            let h = Command::new(pk_child()).args(&args).start().await.unwrap();
            assert!(wait_until_async(Duration::from_secs(20), &all_written).await);
            let pids = read_all(&files);
            drop(h);
            pids
        }
        Ending::Panic => {
            sleep_then(&mut args);
            let cmd = Command::new(pk_child()).args(&args);
            let written = all_written.clone();
            let t = tokio::spawn(async move {
                let _h = cmd.start().await.unwrap();
                assert!(wait_until_async(Duration::from_secs(20), &written).await);
                panic!("the owning task panics");
            });
            assert!(t.await.unwrap_err().is_panic());
            read_all(&files)
        }
        #[cfg(feature = "cancellation")]
        Ending::Cancel => {
            sleep_then(&mut args);
            let token = processkit::CancellationToken::new();
            let cmd = Command::new(pk_child())
                .args(&args)
                .cancel_on(token.clone());
            let run = tokio::spawn(async move { cmd.output_string().await });
            assert!(wait_until_async(Duration::from_secs(20), &all_written).await);
            let pids = read_all(&files);
            token.cancel();
            let e = run.await.unwrap().unwrap_err();
            assert!(matches!(e, processkit::Error::Cancelled { .. }), "{e:?}");
            pids
        }
        Ending::GroupDrop | Ending::Shutdown => {
            sleep_then(&mut args);
            let g = ProcessGroup::with_options(
                ProcessGroupOptions::default().shutdown_grace(Duration::from_millis(200)),
            )
            .unwrap();
            let _h = g
                .start(&Command::new(pk_child()).args(&args))
                .await
                .unwrap();
            let pids = read_all(&files);
            if matches!(ending, Ending::Shutdown) {
                g.shutdown().await.unwrap();
            }
            drop(g);
            pids
        }
    };
    let contained = ProcessGroup::new().unwrap().mechanism() != processkit::Mechanism::ProcessGroup
        || matches!(shape, Shape::Background | Shape::Nohup | Shape::Wide);
    if contained {
        assert_dead_within(&pids, DEAD);
    } else {
        // The process-group fallback documents that these escape; never leave them behind.
        for &p in &pids {
            kill_pid(p);
        }
    }
}

/// Every shape crossed with every ending, in a seeded random order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_times_every_ending() {
    let seed = std::env::var("PK_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::process::id() as u64);
    eprintln!("stress seed {seed} (PK_STRESS_SEED to replay)");
    let mut cases: Vec<(Shape, Ending)> = SHAPES
        .iter()
        .flat_map(|s| endings().into_iter().map(move |e| (*s, e)))
        .collect();
    let rounds = if long() { 5 } else { 1 };
    let mut x = seed | 1;
    for _ in 0..rounds {
        // Fisher-Yates with xorshift: a different interleaving each seed.
        for i in (1..cases.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.swap(i, (x % (i as u64 + 1)) as usize);
        }
        for chunk in cases.chunks(4) {
            let mut tasks = Vec::new();
            for &(s, e) in chunk {
                tasks.push(tokio::spawn(async move { end_tree(s, e).await }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    }
}

/// A hundred groups (25 on Windows), each with a small tree, dropped concurrently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_drops_of_a_hundred_groups() {
    let dir = tempdir();
    let mut groups = Vec::new();
    let mut pids = Vec::new();
    for i in 0..per_os(100, 25) {
        let g = ProcessGroup::new().unwrap();
        let gp = dir.path().join(format!("{i}.pid"));
        let cp = dir.path().join(format!("{i}c.pid"));
        let h = g
            .start(&Command::new(pk_child()).args([
                "pidfile",
                cp.to_str().unwrap(),
                ";",
                "spawn",
                "quiet",
                gp.to_str().unwrap(),
                ";",
                "sleep-forever",
            ]))
            .await
            .unwrap();
        pids.push(read_pid_file(&cp, Duration::from_secs(20)));
        pids.push(read_pid_file(&gp, Duration::from_secs(20)));
        groups.push((g, h));
    }
    let mut tasks = Vec::new();
    for (g, h) in groups {
        tasks.push(tokio::task::spawn_blocking(move || {
            drop(g);
            drop(h);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_dead_within(&pids, DEAD);
    assert!(wait_until_async(DEAD, || our_cgroup_count() == 0).await);
}

/// A fork storm inside a capped group never exceeds the cap.
#[cfg(feature = "limits")]
#[tokio::test]
async fn fork_storm_under_max_processes() {
    let g = match ProcessGroup::with_options(ProcessGroupOptions::default().max_processes(16)) {
        Ok(g) => g,
        Err(processkit::Error::ResourceLimit { reason, .. }) => {
            eprintln!("skipped: max_processes unavailable here: {reason}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    if under_wine() {
        eprintln!("skipped: Wine accepts max_processes but does not enforce it");
        return;
    }
    let mut h = g
        .start(&Command::new(pk_child()).args(["forkstorm", "300", ";", "sleep-forever"]))
        .await
        .unwrap();
    let line = h
        .wait_for_line(|l| l.starts_with("spawned="), Duration::from_secs(30))
        .await
        .unwrap();
    let spawned: u32 = line["spawned=".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(spawned < 16, "{line}");
    #[cfg(feature = "process-control")]
    assert!(g.members().unwrap().len() <= 16);
    drop(h);
    drop(g);
}
