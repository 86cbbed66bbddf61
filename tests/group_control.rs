//! Whole-tree control and accounting: signals, suspend/resume, members, adopt, stats, sampled
//! series and per-run profiles, against real processes (the pk-child helper).
mod common;

use common::*;
use processkit::{Command, Error, Mechanism, ProcessGroup, Signal, StreamExt};
use std::path::Path;
use std::time::{Duration, Instant};

fn child(args: &[&str]) -> Command {
    Command::new(pk_child()).args(args)
}

fn read_number(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Kills and reaps a std child even when the test fails half-way.
struct StdChild(std::process::Child);

impl Drop for StdChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// POSIX only: Windows has no SIGHUP (only Signal::Kill is deliverable there).
#[cfg(unix)]
#[tokio::test]
async fn hup_reaches_a_trapping_child() {
    let dir = tempdir();
    let hups = dir.path().join("hups");
    let ready = dir.path().join("ready.pid");
    let group = ProcessGroup::new().unwrap();
    let _rp = group
        .start(&child(&[
            "trap-hup",
            hups.to_str().unwrap(),
            ";",
            "pidfile",
            ready.to_str().unwrap(),
            ";",
            "sleep-forever",
        ]))
        .await
        .unwrap();
    read_pid_file(&ready, Duration::from_secs(10));
    group.signal(Signal::Hup).unwrap();
    let seen = wait_until_async(Duration::from_secs(10), || {
        std::fs::read_to_string(&hups).is_ok_and(|s| s.lines().any(|l| l == "hup"))
    })
    .await;
    assert!(seen, "SIGHUP was not delivered");
    // The child survived it (it traps HUP).
    assert_eq!(group.members().unwrap().len(), 1);
}

#[tokio::test]
async fn signal_kill_takes_the_whole_tree() {
    let dir = tempdir();
    let group = ProcessGroup::new().unwrap();
    let mut rp = group
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
    group.signal(Signal::Kill).unwrap();
    assert_eq!(rp.wait().await.unwrap(), None);
    if group.mechanism() != Mechanism::ProcessGroup {
        assert_dead_within(&kids, Duration::from_secs(5));
    }
}

#[tokio::test]
async fn suspend_freezes_and_resume_thaws() {
    let dir = tempdir();
    let ticks = dir.path().join("ticks");
    let group = ProcessGroup::new().unwrap();
    let _rp = group
        .start(&child(&["tick", ticks.to_str().unwrap(), "10"]))
        .await
        .unwrap();
    assert!(
        wait_until_async(Duration::from_secs(10), || read_number(&ticks)
            .is_some_and(|n| n >= 2))
        .await,
        "the ticker never started"
    );
    group.suspend().unwrap();
    group.suspend().unwrap(); // idempotent
    let before = read_number(&ticks).unwrap();
    // The observation window itself: a running ticker advances ~40 times in 400 ms.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = read_number(&ticks).unwrap();
    // At most one write that was already in flight when the freeze landed.
    assert!(
        after <= before + 1,
        "ticked while suspended: {before} -> {after}"
    );

    group.resume().unwrap();
    group.resume().unwrap(); // idempotent
    assert!(
        wait_until_async(Duration::from_secs(10), || read_number(&ticks)
            .is_some_and(|n| n > after + 2))
        .await,
        "the ticker did not resume"
    );
}

#[tokio::test]
async fn suspended_group_still_dies_on_drop() {
    let group = ProcessGroup::new().unwrap();
    let rp = group.start(&child(&["sleep-forever"])).await.unwrap();
    let pid = rp.pid();
    group.suspend().unwrap();
    drop(group);
    drop(rp);
    assert_dead_within(&[pid], Duration::from_secs(10));
}

/// A suspended group takes no new members (on Linux the child would freeze between its clone
/// and its exec, and the spawning thread with it): a typed error at once, and `resume` lifts it.
#[tokio::test]
async fn a_suspended_group_takes_no_new_members_until_resumed() {
    let group = ProcessGroup::new().unwrap();
    let rp = group.start(&child(&["sleep-forever"])).await.unwrap();
    group.suspend().unwrap();

    let e = tokio::time::timeout(
        Duration::from_secs(20),
        group.start(&child(&["print", "late"])),
    )
    .await
    .expect("start on a suspended group hung")
    .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidInput { what, .. } if what.contains("suspended")),
        "{e:?}"
    );
    assert!(e.to_string().contains("resume()"), "{e}");
    let mut raw = std::process::Command::new(pk_child());
    raw.args(["print", "raw"]);
    assert!(matches!(
        group.spawn(&mut raw),
        Err(Error::InvalidInput { .. })
    ));
    // Nothing was started: the first child is the only member.
    assert_eq!(group.members().unwrap(), vec![rp.pid()]);

    group.resume().unwrap();
    let late = group.start(&child(&["print", "late"])).await.unwrap();
    let (code, _) = late.finish_streamed().await.unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn members_sees_the_whole_tree() {
    let dir = tempdir();
    let group = ProcessGroup::new().unwrap();
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
    let mut expected: Vec<u32> = read_tree_pids(dir.path(), 2);
    expected.push(rp.pid());
    expected.sort_unstable();
    let mut members = group.members().unwrap();
    members.sort_unstable();
    match group.mechanism() {
        // The process-group mechanism lists the group leaders only.
        Mechanism::ProcessGroup => assert_eq!(members, vec![rp.pid()]),
        _ => assert_eq!(members, expected),
    }
    drop(group);
    drop(rp);
    assert_dead_within(&expected, Duration::from_secs(10));
}

#[tokio::test]
async fn adopted_process_dies_with_the_group() {
    let mut raw = std::process::Command::new(pk_child());
    raw.arg("sleep-forever")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    let mut outsider = StdChild(raw.spawn().unwrap());
    let pid = outsider.0.id();
    let group = ProcessGroup::new().unwrap();
    group.adopt(pid).unwrap();
    assert!(group.members().unwrap().contains(&pid));
    assert!(group.stats().unwrap().total_process_count.unwrap() >= 1);
    drop(group);
    assert_dead_within(&[pid], Duration::from_secs(10));
    let status = outsider.0.wait().unwrap();
    assert!(!status.success());
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(9));
    }
}

#[tokio::test]
async fn adopting_a_dead_pid_is_a_typed_error() {
    let mut raw = std::process::Command::new(pk_child());
    raw.args(["exit", "0"]);
    let mut gone = StdChild(raw.spawn().unwrap());
    let pid = gone.0.id();
    gone.0.wait().unwrap(); // reaped: the pid names nothing now
    let group = ProcessGroup::new().unwrap();
    match group.adopt(pid) {
        Err(Error::InvalidInput { what, reason, .. }) => {
            assert!(what.contains(&pid.to_string()), "{what}");
            assert!(reason.contains("not a live process"), "{reason}");
        }
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    // Ourselves: refused, rather than arranging our own death.
    assert!(matches!(
        group.adopt(std::process::id()),
        Err(Error::InvalidInput { .. })
    ));
    assert!(group.members().unwrap().is_empty());
}

#[tokio::test]
async fn stats_count_processes_and_memory() {
    let dir = tempdir();
    let ready = dir.path().join("ready.pid");
    let group = ProcessGroup::new().unwrap();
    let _rp = group
        .start(&child(&[
            "tree",
            "2",
            dir.path().to_str().unwrap(),
            ";",
            "alloc",
            "32",
            ";",
            "pidfile",
            ready.to_str().unwrap(),
            ";",
            "sleep-forever",
        ]))
        .await
        .unwrap();
    read_pid_file(&ready, Duration::from_secs(10));
    let s = group.stats().unwrap();
    let total = s.total_process_count.expect("the group counts processes");
    assert!(total >= s.active_process_count, "{s:?}");
    if group.mechanism() == Mechanism::ProcessGroup {
        assert_eq!(s.active_process_count, 1, "{s:?}");
        return;
    }
    assert_eq!(s.active_process_count, 3, "{s:?}");
    assert_eq!(total, 3, "{s:?}");
    if under_wine() {
        // Wine reports no per-process memory counters (they read 0).
        return;
    }
    let current = s.current_memory_bytes.expect("memory is measured");
    assert!(current >= 32 << 20, "{s:?}");
    assert!(
        s.peak_memory_bytes.expect("peak is measured") >= current,
        "{s:?}"
    );
    assert!(s.cpu_user.is_some() && s.cpu_system.is_some(), "{s:?}");
    assert_eq!(
        s.cpu_total(),
        Some(s.cpu_user.unwrap() + s.cpu_system.unwrap())
    );
}

#[tokio::test]
async fn sample_stats_yields_a_series() {
    let dir = tempdir();
    let group = ProcessGroup::new().unwrap();
    let _rp = group
        .start(&child(&[
            "tree",
            "1",
            dir.path().to_str().unwrap(),
            ";",
            "spin",
            "0",
        ]))
        .await
        .unwrap();
    read_pid_file(&dir.path().join("0.pid"), Duration::from_secs(10));
    let mut samples = group.sample_stats(Duration::from_millis(50));
    let mut series = Vec::new();
    while series.len() < 3 {
        let s = tokio::time::timeout(Duration::from_secs(10), samples.next())
            .await
            .expect("a sample within the deadline")
            .expect("the series goes on while the group lives");
        series.push(s);
    }
    assert!(samples.error().is_none());
    for s in &series {
        assert!(s.active_process_count >= 1, "{s:?}");
    }
    if group.mechanism() != Mechanism::ProcessGroup {
        // CPU never goes backwards across the series.
        let cpu: Vec<Duration> = series.iter().map(|s| s.cpu_total().unwrap()).collect();
        assert!(cpu.windows(2).all(|w| w[0] <= w[1]), "{cpu:?}");
        assert!(
            series.iter().all(|s| s.active_process_count == 2),
            "{series:?}"
        );
    }
    // Dropping the group ends the series.
    drop(group);
    assert!(samples.next().await.is_none());
    assert!(samples.error().is_none());
}

#[tokio::test]
async fn zero_sample_interval_is_invalid_input() {
    let group = ProcessGroup::new().unwrap();
    let mut samples = group.sample_stats(Duration::ZERO);
    assert!(samples.next().await.is_none());
    assert!(
        matches!(samples.error(), Some(Error::InvalidInput { .. })),
        "{samples:?}"
    );
    assert!(matches!(
        group.try_sample_stats(Duration::ZERO),
        Err(Error::InvalidInput { .. })
    ));
    let mut rp = child(&["exit", "0"]).start().await.unwrap();
    assert!(matches!(
        rp.profile(Duration::ZERO).await,
        Err(Error::InvalidInput { .. })
    ));
}

#[tokio::test]
async fn profile_of_a_cpu_bound_run() {
    let started = Instant::now();
    let profile = child(&["spin", "300"])
        .start()
        .await
        .unwrap()
        .profile(Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(profile.exit_code, Some(0));
    assert!(
        profile.duration >= Duration::from_millis(300),
        "{profile:?}"
    );
    assert!(profile.duration <= started.elapsed(), "{profile:?}");
    assert!(profile.samples >= 1, "{profile:?}");
    // Wine reports neither job CPU time nor process memory (both read 0).
    if cfg!(target_os = "linux") || (cfg!(windows) && !under_wine()) {
        let cpu = profile.cpu_time.expect("CPU time is measured");
        assert!(cpu > Duration::ZERO, "{profile:?}");
        let avg = profile.avg_cpu().unwrap();
        assert!(avg > 0.0, "{profile:?}");
        assert!(
            profile.peak_memory_bytes.expect("peak memory is measured") > 0,
            "{profile:?}"
        );
    }
}

#[tokio::test]
async fn profile_reports_a_failing_exit() {
    let mut rp = child(&["exit", "3"]).start().await.unwrap();
    let profile = rp.profile(Duration::from_millis(20)).await.unwrap();
    assert_eq!(profile.exit_code, Some(3));
}

// Per-process accounting of a shared-group child reads /proc (Linux).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn cpu_time_and_peak_memory_of_a_shared_group_child() {
    let group = ProcessGroup::new().unwrap();
    let mut rp = group
        .start(&child(&["alloc", "16", ";", "spin", "0"]))
        .await
        .unwrap();
    assert!(
        wait_until_async(Duration::from_secs(10), || rp
            .cpu_time()
            .is_some_and(|c| c > Duration::ZERO))
        .await,
        "no CPU time accumulated"
    );
    assert!(
        wait_until_async(Duration::from_secs(10), || rp
            .peak_memory_bytes()
            .is_some_and(|m| m >= 16 << 20))
        .await,
        "peak {:?}",
        rp.peak_memory_bytes()
    );
    rp.kill().await.unwrap();
}

#[tokio::test]
async fn private_handle_measures_its_tree_after_exit() {
    let mut rp = child(&["spin", "100"]).start().await.unwrap();
    assert_eq!(rp.wait().await.unwrap(), Some(0));
    // The private group keeps the tree's accounting until the handle is dropped (a cgroup;
    // the forced process-group fallback has nothing left to read once the child is reaped).
    let forced_pgroup =
        std::env::var_os("PROCESSKIT_MECHANISM").is_some_and(|v| v == "process-group");
    if cfg!(target_os = "linux") && !forced_pgroup {
        assert!(rp.cpu_time().is_some_and(|c| c > Duration::ZERO));
    }
}

/// The teardown verbs empty a group but keep it: later starts run in it as before.
#[tokio::test]
async fn a_group_stays_usable_after_kill_and_shutdown() {
    let group = ProcessGroup::new().unwrap();
    let first = group.start(&child(&["sleep-forever"])).await.unwrap();
    let pid = first.pid();
    group.kill().unwrap();
    assert_dead_within(&[pid], Duration::from_secs(10));
    let again = group.start(&child(&["print", "again"])).await.unwrap();
    let (code, _) = again.finish_streamed().await.unwrap();
    assert_eq!(code, Some(0));

    let second = group.start(&child(&["sleep-forever"])).await.unwrap();
    let pid = second.pid();
    group.shutdown().await.unwrap();
    assert_dead_within(&[pid], Duration::from_secs(10));
    let last = group.start(&child(&["print", "last"])).await.unwrap();
    let (code, _) = last.finish_streamed().await.unwrap();
    assert_eq!(code, Some(0));
}
