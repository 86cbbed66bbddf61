//! Backend tests. They need only `cmd.exe` and `ping.exe`, so they run on Windows and under
//! Wine alike (Wine's `cmd` has `ping -n N 127.0.0.1` but no `timeout /t`).

use std::future::Future;
use std::mem;
use std::os::windows::io::AsRawHandle as _;
use std::os::windows::process::CommandExt as _;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Thread32First, Thread32Next, TH32CS_SNAPTHREAD, THREADENTRY32,
};
use windows_sys::Win32::System::Threading::{
    OpenThread, QueryFullProcessImageNameW, ResumeThread, SuspendThread, CREATE_NO_WINDOW,
    CREATE_SUSPENDED, PROCESS_NAME_WIN32, THREAD_SUSPEND_RESUME,
};

use super::job::{cpu_rate, Handle};
use super::*;
use crate::sys::{ChildStdio, ContainerOptions, CreateError, SpawnRequest};

fn req(program: &str, args: &[&str]) -> SpawnRequest {
    SpawnRequest {
        program: program.into(),
        args: args.iter().map(Into::into).collect(),
        env_clear: false,
        env: Vec::new(),
        cwd: None,
        stdin: ChildStdio::Null,
        stdout: ChildStdio::Null,
        stderr: ChildStdio::Null,
        uid: None,
        gid: None,
        setsid: false,
        kill_on_parent_death: false,
        create_no_window: true,
    }
}

/// `cmd /c ping -n N 127.0.0.1`: a direct child (cmd) with a grandchild (ping) that lives about
/// `n` seconds.
fn pinger(n: u32) -> SpawnRequest {
    let n = n.to_string();
    req("cmd", &["/c", "ping", "-n", &n, "127.0.0.1"])
}

fn container() -> Container {
    Container::create(&ContainerOptions::default()).expect("create container")
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), fut)
        .await
        .expect("timed out")
}

fn alive(pid: u32) -> bool {
    match process::open(pid, PROCESS_SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION) {
        Ok(h) => !has_exited(h.raw()),
        Err(_) => false,
    }
}

/// The lower-cased file name of `pid`'s image (`ping.exe`), if it can be read.
fn image_name(pid: u32) -> Option<String> {
    let h = process::open(pid, PROCESS_QUERY_LIMITED_INFORMATION).ok()?;
    let mut buf = [0u16; 1024];
    let mut len = buf.len() as u32;
    // SAFETY: a valid process handle, a writable buffer of `len` UTF-16 units.
    let ok = unsafe {
        QueryFullProcessImageNameW(h.raw(), PROCESS_NAME_WIN32, buf.as_mut_ptr(), &mut len)
    };
    if ok == 0 {
        return None;
    }
    let path = String::from_utf16_lossy(&buf[..len as usize]);
    let name = path.rsplit(['\\', '/']).next().unwrap_or(&path);
    Some(name.to_ascii_lowercase())
}

/// Waits until `pinger`'s grandchild `ping.exe` is a member of `c` and running: not just any
/// second member (under Wine a console host can be one before ping starts, and it goes away
/// with `cmd`), and past its creation (a new process's first thread is briefly suspended).
async fn ping_joined(c: &Container) {
    eventually("the grandchild ping joins the job and runs", || {
        c.members().unwrap().iter().any(|&p| {
            image_name(p).as_deref() == Some("ping.exe") && {
                let counts = suspend_counts(p);
                !counts.is_empty() && counts.iter().all(|&n| n == 0)
            }
        })
    })
    .await;
}

/// The suspend count of every thread of `pid` (read by suspending and resuming each once).
fn suspend_counts(pid: u32) -> Vec<u32> {
    // SAFETY: a system-wide thread snapshot; the result is checked by `from_raw`.
    let snap = unsafe { Handle::from_raw(CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0)) }.unwrap();
    // SAFETY: plain data, dwSize set below.
    let mut entry: THREADENTRY32 = unsafe { mem::zeroed() };
    entry.dwSize = mem::size_of::<THREADENTRY32>() as u32;
    let mut counts = Vec::new();
    // SAFETY: valid snapshot handle and writable entry with dwSize set.
    let mut more = unsafe { Thread32First(snap.raw(), &mut entry) } != 0;
    while more {
        if entry.th32OwnerProcessID == pid {
            // SAFETY: plain values; result checked by `from_raw`.
            let raw = unsafe { OpenThread(THREAD_SUSPEND_RESUME, 0, entry.th32ThreadID) };
            // SAFETY: OpenThread returns an owned handle or null.
            if let Ok(t) = unsafe { Handle::from_raw(raw) } {
                // SAFETY: valid thread handle with THREAD_SUSPEND_RESUME.
                let previous = unsafe { SuspendThread(t.raw()) };
                if previous != u32::MAX {
                    // SAFETY: as above; undoes our own suspension.
                    unsafe { ResumeThread(t.raw()) };
                    counts.push(previous);
                }
            }
        }
        // SAFETY: as for Thread32First.
        more = unsafe { Thread32Next(snap.raw(), &mut entry) } != 0;
    }
    counts
}

#[test]
fn container_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Container>();
    check::<Child>();
}

#[test]
fn cpu_rate_is_relative_to_the_machine_and_clamped() {
    assert_eq!(cpu_rate(0.5, 4), Some(1250));
    assert_eq!(cpu_rate(1.0, 1), Some(10_000));
    assert_eq!(cpu_rate(8.0, 4), Some(10_000));
    assert_eq!(cpu_rate(0.000_01, 64), Some(1));
    assert_eq!(cpu_rate(2.0, 0), Some(10_000));
    assert_eq!(cpu_rate(0.0, 4), None);
    assert_eq!(cpu_rate(-1.0, 4), None);
    assert_eq!(cpu_rate(f64::NAN, 4), None);
    assert_eq!(cpu_rate(f64::INFINITY, 4), None);
    assert!(job::logical_cpus() >= 1);
}

#[tokio::test]
async fn spawned_tree_is_contained_and_dies_with_the_container() {
    let c = container();
    assert_eq!(c.mechanism(), Mechanism::JobObject);
    let mut child = c.spawn(pinger(60)).unwrap();
    assert!(child.pid != 0);
    assert!(c.members().unwrap().contains(&child.pid));
    assert!(!c.is_empty().unwrap());
    ping_joined(&c).await;
    let tree = c.members().unwrap();
    assert!(child.try_wait().unwrap().is_none());

    drop(c);
    let status = within(child.wait()).await.unwrap();
    assert_eq!(
        status,
        ExitInfo {
            code: None,
            signal: None
        }
    );
    for pid in tree {
        eventually("every member is gone after drop", || !alive(pid)).await;
    }
}

#[tokio::test]
async fn exit_codes_and_piped_stdout() {
    let c = container();
    let mut r = req("cmd", &["/c", "echo", "hello"]);
    r.stdout = ChildStdio::Piped;
    let mut child = c.spawn(r).unwrap();
    assert!(child.stdin.is_none() && child.stderr.is_none());
    let mut out = String::new();
    within(child.stdout.take().unwrap().read_to_string(&mut out))
        .await
        .unwrap();
    assert_eq!(out.trim(), "hello");
    assert_eq!(within(child.wait()).await.unwrap().code, Some(0));

    let mut child = c.spawn(req("cmd", &["/c", "exit", "3"])).unwrap();
    assert_eq!(
        within(child.wait()).await.unwrap(),
        ExitInfo {
            code: Some(3),
            signal: None
        }
    );
    // A second wait returns the same status.
    assert_eq!(child.wait().await.unwrap().code, Some(3));
    // Exit code 1 is only "killed" after a kill of ours.
    let mut one = c.spawn(req("cmd", &["/c", "exit", "1"])).unwrap();
    assert_eq!(within(one.wait()).await.unwrap().code, Some(1));
    one.start_kill().unwrap();
    assert_eq!(one.wait().await.unwrap().code, Some(1));
    assert_eq!(child.try_wait().unwrap().map(|e| e.code), Some(Some(3)));
    // Killing an exited child is not an error.
    child.start_kill().unwrap();
}

#[tokio::test]
async fn env_cwd_and_stdin() {
    let c = container();
    let dir = std::env::temp_dir();
    let mut r = req("cmd", &["/c", "echo %PK_TEST_VAR%& cd"]);
    r.env
        .push(("PK_TEST_VAR".into(), Some("from-parent".into())));
    r.cwd = Some(dir.clone());
    r.stdout = ChildStdio::Piped;
    let mut child = c.spawn(r).unwrap();
    let mut out = String::new();
    within(child.stdout.take().unwrap().read_to_string(&mut out))
        .await
        .unwrap();
    within(child.wait()).await.unwrap();
    assert!(out.contains("from-parent"), "{out:?}");
    let shown = dir.to_string_lossy().trim_end_matches('\\').to_lowercase();
    assert!(
        out.to_lowercase().contains(&shown),
        "{out:?} should mention {shown:?}"
    );

    // `more` copies stdin to stdout until EOF.
    let mut r = req("cmd", &["/c", "more"]);
    r.stdin = ChildStdio::Piped;
    r.stdout = ChildStdio::Piped;
    let mut child = c.spawn(r).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"piped-in\r\n")
        .await
        .unwrap();
    drop(stdin);
    let mut out = String::new();
    within(child.stdout.take().unwrap().read_to_string(&mut out))
        .await
        .unwrap();
    assert!(out.contains("piped-in"), "{out:?}");
    within(child.wait()).await.unwrap();
}

#[tokio::test]
async fn kill_all_is_idempotent_and_counts_stay() {
    let c = container();
    let mut child = c.spawn(pinger(60)).unwrap();
    ping_joined(&c).await;
    let stats = c.stats().unwrap();
    assert!(stats.active_process_count >= 2, "{stats:?}");
    assert!(stats.total_process_count.unwrap() >= 2, "{stats:?}");
    assert!(
        stats.peak_memory_bytes >= stats.current_memory_bytes,
        "{stats:?}"
    );

    c.kill_all().unwrap();
    assert_eq!(within(child.wait()).await.unwrap().code, None);
    eventually("the job empties", || c.is_empty().unwrap()).await;
    assert!(c.members().unwrap().is_empty());
    c.kill_all().unwrap();
    c.signal(Signal::Kill).unwrap();
    let stats = c.stats().unwrap();
    assert_eq!(stats.active_process_count, 0);
    assert!(stats.total_process_count.unwrap() >= 2);
    assert_eq!(stats.current_memory_bytes, Some(0));
    // The container still works after a kill.
    let mut again = c.spawn(req("cmd", &["/c", "exit", "0"])).unwrap();
    assert_eq!(within(again.wait()).await.unwrap().code, Some(0));
}

#[tokio::test]
async fn start_kill_hits_the_direct_child_only() {
    let c = container();
    let mut child = c.spawn(pinger(60)).unwrap();
    ping_joined(&c).await;
    child.start_kill().unwrap();
    assert_eq!(within(child.wait()).await.unwrap().code, None);
    // The grandchild is still a member until the container goes.
    let rest = c.members().unwrap();
    assert!(!rest.is_empty() && !rest.contains(&child.pid), "{rest:?}");
    drop(c);
    for pid in rest {
        eventually("the orphaned grandchild dies with the container", || {
            !alive(pid)
        })
        .await;
    }
}

#[tokio::test]
async fn members_list_grows_its_buffer() {
    let c = container();
    let mut children = Vec::new();
    for _ in 0..20 {
        children.push(c.spawn(pinger(60)).unwrap());
    }
    // 20 cmd + 20 ping: more than the first 32-entry buffer holds.
    eventually("40 members", || c.members().unwrap().len() >= 40).await;
    let members = c.members().unwrap();
    for child in &children {
        assert!(members.contains(&child.pid));
    }
    c.kill_all().unwrap();
    for child in &mut children {
        assert_eq!(within(child.wait()).await.unwrap().code, None);
    }
}

#[tokio::test]
async fn posix_knobs_and_signals_are_unsupported() {
    let c = container();
    for (r, knob) in [
        (
            SpawnRequest {
                uid: Some(1000),
                ..pinger(1)
            },
            "uid",
        ),
        (
            SpawnRequest {
                gid: Some(1000),
                ..pinger(1)
            },
            "gid",
        ),
        (
            SpawnRequest {
                setsid: true,
                ..pinger(1)
            },
            "setsid",
        ),
    ] {
        let err = c.spawn(r).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        assert!(err.to_string().contains(knob), "{err}");
    }
    assert!(c.is_empty().unwrap());
    // kill_on_parent_death is satisfied by the job itself.
    let mut child = c
        .spawn(SpawnRequest {
            kill_on_parent_death: true,
            ..req("cmd", &["/c", "exit", "0"])
        })
        .unwrap();
    assert_eq!(within(child.wait()).await.unwrap().code, Some(0));

    for sig in [
        Signal::Term,
        Signal::Int,
        Signal::Hup,
        Signal::Stop,
        Signal::Cont,
    ] {
        assert_eq!(
            c.signal(sig).unwrap_err().kind(),
            io::ErrorKind::Unsupported
        );
    }
    assert_eq!(
        c.graceful_stop().unwrap_err().kind(),
        io::ErrorKind::Unsupported
    );
}

#[tokio::test]
async fn a_missing_program_fails_to_spawn_and_leaves_nothing() {
    let c = container();
    let err = c.spawn(req("pk-no-such-program-xyz", &[])).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(c.is_empty().unwrap());
}

#[tokio::test]
async fn adopt_moves_an_outside_process_in() {
    let c = container();
    let mut outside = std::process::Command::new("ping")
        .args(["-n", "60", "127.0.0.1"])
        .stdout(std::process::Stdio::null())
        .creation_flags(CREATE_NO_WINDOW)
        .spawn()
        .unwrap();
    let pid = outside.id();
    c.adopt(pid).unwrap();
    c.adopt(pid).unwrap(); // already a member: fine
    assert!(c.members().unwrap().contains(&pid));
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = outside.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the adopted process outlived the container"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(1));
}

#[tokio::test]
async fn adopt_refuses_dead_missing_and_self() {
    let c = container();
    let mut dead = std::process::Command::new("cmd")
        .args(["/c", "exit", "0"])
        .creation_flags(CREATE_NO_WINDOW)
        .spawn()
        .unwrap();
    dead.wait().unwrap();
    // We still hold its handle, so the pid cannot have been reused.
    assert_eq!(
        c.adopt(dead.id()).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        c.adopt(0xFFFF_FFF0).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    assert_eq!(
        c.adopt(std::process::id()).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
    assert!(c.is_empty().unwrap());
}

#[tokio::test]
async fn freeze_and_thaw_move_every_thread_suspend_count() {
    let c = container();
    let mut child = c.spawn(pinger(60)).unwrap();
    ping_joined(&c).await;
    let tree = c.members().unwrap();
    eventually("every member runs (none still starting)", || {
        tree.iter()
            .all(|&pid| suspend_counts(pid).iter().all(|&n| n == 0))
    })
    .await;
    c.freeze().unwrap();
    for &pid in &tree {
        let counts = suspend_counts(pid);
        assert!(
            !counts.is_empty() && counts.iter().all(|&n| n == 1),
            "pid {pid}: {counts:?}"
        );
    }
    c.freeze().unwrap();
    for &pid in &tree {
        assert!(
            suspend_counts(pid).iter().all(|&n| n == 2),
            "nested freezes stack"
        );
    }
    c.thaw().unwrap();
    c.thaw().unwrap();
    for &pid in &tree {
        assert!(suspend_counts(pid).iter().all(|&n| n == 0), "thawed");
    }
    c.thaw().unwrap(); // thawing a running tree changes nothing
    for &pid in &tree {
        assert!(suspend_counts(pid).iter().all(|&n| n == 0), "still running");
    }
    // A frozen tree can still be killed.
    c.freeze().unwrap();
    c.kill_all().unwrap();
    assert_eq!(within(child.wait()).await.unwrap().code, None);
    eventually("the job empties", || c.is_empty().unwrap()).await;
}

#[test]
fn toolhelp_resume_fallback_starts_a_suspended_process() {
    let mut child = std::process::Command::new("cmd")
        .args(["/c", "exit", "5"])
        .creation_flags(CREATE_SUSPENDED | CREATE_NO_WINDOW)
        .spawn()
        .unwrap();
    let pid = child.id();
    let counts = suspend_counts(pid);
    assert!(counts.contains(&1), "created suspended: {counts:?}");
    process::resume_threads(child.as_raw_handle()).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(5));
}

#[test]
fn limits_are_applied_or_refused_by_name() {
    let opts = ContainerOptions {
        memory_max: Some(256 << 20),
        max_processes: Some(16),
        cpu_quota: None,
        ..ContainerOptions::default()
    };
    match Container::create(&opts) {
        Ok(_) if process::running_under_wine() => {
            eprintln!("Wine accepts job limits but reads them back as zero");
        }
        Ok(c) => {
            let limits = c.job.extended_limits().unwrap();
            assert_eq!(limits.JobMemoryLimit, 256 << 20);
            assert_eq!(limits.BasicLimitInformation.ActiveProcessLimit, 16);
        }
        Err(CreateError::Limit { what, reason }) => {
            assert!(
                what == "memory_max" || what == "max_processes",
                "{what}: {reason}"
            );
        }
        Err(CreateError::Io(e)) => panic!("unexpected I/O error: {e}"),
    }

    let quota = ContainerOptions {
        cpu_quota: Some(0.5),
        ..Default::default()
    };
    match Container::create(&quota) {
        Ok(_) => {}
        Err(CreateError::Limit { what, .. }) => assert_eq!(what, "cpu_quota"),
        Err(CreateError::Io(e)) => panic!("unexpected I/O error: {e}"),
    }

    let bad = ContainerOptions {
        cpu_quota: Some(f64::NAN),
        ..Default::default()
    };
    assert!(matches!(
        Container::create(&bad),
        Err(CreateError::Limit {
            what: "cpu_quota",
            ..
        })
    ));
}

#[tokio::test]
async fn process_limit_is_enforced() {
    let opts = ContainerOptions {
        max_processes: Some(1),
        ..Default::default()
    };
    let c = Container::create(&opts).unwrap();
    // cmd is the one allowed process; the ping it tries to start must fail.
    let mut child = c.spawn(pinger(5)).unwrap();
    let status = within(child.wait()).await.unwrap();
    if process::running_under_wine() {
        eprintln!("under Wine the active-process limit is not enforced (exit {status:?})");
        return;
    }
    assert_ne!(
        status.code,
        Some(0),
        "cmd could start ping despite max_processes = 1"
    );
}

#[tokio::test]
async fn spawn_std_contains_the_escape_hatch_child() {
    let c = container();
    let mut cmd = std::process::Command::new("cmd");
    cmd.args(["/c", "ping", "-n", "60", "127.0.0.1"])
        .stdout(std::process::Stdio::null());
    let mut child = c.spawn_std(&mut cmd).unwrap();
    assert!(c.members().unwrap().contains(&child.id()));
    assert!(!c.oom_killed());
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the escape-hatch child outlived the container"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(1));

    // The flags were reset: the same command now runs normally outside any container.
    let mut again = std::process::Command::new("cmd");
    again.args(["/c", "exit", "4"]);
    let c = container();
    c.spawn_std(&mut again).unwrap().wait().unwrap();
    assert_eq!(again.status().unwrap().code(), Some(4));
}

#[test]
fn create_retries_only_the_transient_internal_error() {
    let internal = || io::Error::from_raw_os_error(1359);
    let mut calls = 0;
    let r = spawn::retry_internal_error(|| {
        calls += 1;
        if calls < 3 {
            Err(internal())
        } else {
            Ok(calls)
        }
    });
    assert_eq!(r.unwrap(), 3, "succeeds on the third attempt");

    let mut calls = 0;
    let r: io::Result<()> = spawn::retry_internal_error(|| {
        calls += 1;
        Err(internal())
    });
    assert_eq!(r.unwrap_err().raw_os_error(), Some(1359));
    assert_eq!(calls, 4, "bounded: four attempts, then the error");

    let mut calls = 0;
    let r: io::Result<()> = spawn::retry_internal_error(|| {
        calls += 1;
        Err(io::Error::from_raw_os_error(2))
    });
    assert_eq!(r.unwrap_err().raw_os_error(), Some(2));
    assert_eq!(calls, 1, "any other error is reported at once");
}
