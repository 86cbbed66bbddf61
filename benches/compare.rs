//! processkit against `tokio::process` and `std::process`, side by side in the same run.
//!
//! Run (short times, as in docs/performance.md):
//!
//! ```text
//! cargo bench --bench compare -- --warm-up-time 1 --measurement-time 4 --sample-size 10
//! ```
//!
//! Every scenario has three functions, `processkit`, `tokio` and `std`, in one criterion group,
//! so their ratios come from the same run on the same machine state. Children are `/bin/echo`,
//! `/bin/true` or the `pk-child` helper. Async variants run on a 2-worker multi-thread tokio
//! runtime (the common application setup).

// The scenarios use Linux interfaces (pidfds, `/bin/true`, `sh`); elsewhere the bench is empty.
#[cfg(target_os = "linux")]
mod linux {
    use std::io::BufRead as _;
    use std::path::{Path, PathBuf};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
    use processkit::{BufferPolicy, Command, OutputMode, ProcessGroup};
    use tokio::io::AsyncBufReadExt as _;
    use tokio_stream::StreamExt as _;

    const PK_CHILD: &str = env!("CARGO_BIN_EXE_pk-child");
    /// 32 bytes of output including the newline `echo` adds.
    const ECHO_31: &str = "0123456789abcdefghijklmnopqrstu";

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    }

    /// Small capture: `echo` with 32 bytes of output, both streams captured.
    fn small_capture(c: &mut Criterion) {
        let rt = runtime();
        let mut g = c.benchmark_group("small_capture");
        g.bench_function("processkit", |b| {
            b.to_async(&rt).iter(|| async {
                let out = Command::new("/bin/echo")
                    .arg(ECHO_31)
                    .output_string()
                    .await
                    .unwrap();
                assert_eq!(out.stdout().len(), 32);
            })
        });
        g.bench_function("tokio", |b| {
            b.to_async(&rt).iter(|| async {
                let out = tokio::process::Command::new("/bin/echo")
                    .arg(ECHO_31)
                    .stdin(Stdio::null())
                    .output()
                    .await
                    .unwrap();
                assert_eq!(out.stdout.len(), 32);
            })
        });
        g.bench_function("std", |b| {
            b.iter(|| {
                let out = std::process::Command::new("/bin/echo")
                    .arg(ECHO_31)
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                assert_eq!(out.stdout.len(), 32);
            })
        });
        g.finish();
    }

    /// 64 concurrent `echo` runs, all captured; one iteration = all 64 done.
    fn fan_out(c: &mut Criterion) {
        const N: usize = 64;
        let rt = runtime();
        let mut g = c.benchmark_group("fan_out_64");
        g.bench_function("processkit", |b| {
            b.to_async(&rt).iter(|| async {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..N {
                    set.spawn(async {
                        Command::new("/bin/echo")
                            .arg(ECHO_31)
                            .output_string()
                            .await
                            .unwrap()
                    });
                }
                while let Some(r) = set.join_next().await {
                    assert_eq!(r.unwrap().stdout().len(), 32);
                }
            })
        });
        g.bench_function("tokio", |b| {
            b.to_async(&rt).iter(|| async {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..N {
                    set.spawn(async {
                        tokio::process::Command::new("/bin/echo")
                            .arg(ECHO_31)
                            .stdin(Stdio::null())
                            .output()
                            .await
                            .unwrap()
                    });
                }
                while let Some(r) = set.join_next().await {
                    assert_eq!(r.unwrap().stdout.len(), 32);
                }
            })
        });
        g.bench_function("std", |b| {
            b.iter(|| {
                let children: Vec<_> = (0..N)
                    .map(|_| {
                        std::process::Command::new("/bin/echo")
                            .arg(ECHO_31)
                            .stdin(Stdio::null())
                            .stdout(Stdio::piped())
                            .stderr(Stdio::piped())
                            .spawn()
                            .unwrap()
                    })
                    .collect();
                for ch in children {
                    assert_eq!(ch.wait_with_output().unwrap().stdout.len(), 32);
                }
            })
        });
        g.finish();
    }

    /// Bulk capture: 512 MiB on stdout, all kept in memory.
    fn bulk_capture(c: &mut Criterion) {
        const SIZE: u64 = 512 << 20;
        let rt = runtime();
        let mut g = c.benchmark_group("bulk_capture_512MiB");
        g.sampling_mode(SamplingMode::Flat);
        g.throughput(Throughput::Bytes(SIZE));
        g.bench_function("processkit", |b| {
            b.to_async(&rt).iter(|| async {
                let out = Command::new(PK_CHILD)
                    .args(["bytes", "512M"])
                    .buffer_policy(BufferPolicy::unbounded())
                    .output_bytes()
                    .await
                    .unwrap();
                assert_eq!(out.stdout().len() as u64, SIZE);
            })
        });
        g.bench_function("tokio", |b| {
            b.to_async(&rt).iter(|| async {
                let out = tokio::process::Command::new(PK_CHILD)
                    .args(["bytes", "512M"])
                    .stdin(Stdio::null())
                    .output()
                    .await
                    .unwrap();
                assert_eq!(out.stdout.len() as u64, SIZE);
            })
        });
        g.bench_function("std", |b| {
            b.iter(|| {
                let out = std::process::Command::new(PK_CHILD)
                    .args(["bytes", "512M"])
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                assert_eq!(out.stdout.len() as u64, SIZE);
            })
        });
        g.finish();
    }

    /// Line streaming: 2M lines of 128 bytes (newline included), each delivered as a `String`.
    fn line_streaming(c: &mut Criterion) {
        const LINES: u64 = 2_000_000;
        let n = LINES.to_string();
        let args = ["lines", n.as_str(), "127"];
        let rt = runtime();
        let mut g = c.benchmark_group("lines_2M_x_128B");
        g.sampling_mode(SamplingMode::Flat);
        g.throughput(Throughput::Bytes(LINES * 128));
        g.bench_function("processkit", |b| {
            b.to_async(&rt).iter(|| async {
                let mut rp = Command::new(PK_CHILD).args(args).start().await.unwrap();
                let mut lines = rp.stdout_lines();
                let mut count = 0u64;
                while let Some(l) = lines.next().await {
                    debug_assert_eq!(l.len(), 127);
                    count += 1;
                }
                assert_eq!(count, LINES);
                assert_eq!(rp.wait().await.unwrap(), Some(0));
            })
        });
        g.bench_function("tokio", |b| {
            b.to_async(&rt).iter(|| async {
                let mut ch = tokio::process::Command::new(PK_CHILD)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut lines = tokio::io::BufReader::new(ch.stdout.take().unwrap()).lines();
                let mut count = 0u64;
                while let Some(l) = lines.next_line().await.unwrap() {
                    debug_assert_eq!(l.len(), 127);
                    count += 1;
                }
                assert_eq!(count, LINES);
                assert!(ch.wait().await.unwrap().success());
            })
        });
        g.bench_function("std", |b| {
            b.iter(|| {
                let mut ch = std::process::Command::new(PK_CHILD)
                    .args(args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let reader = std::io::BufReader::new(ch.stdout.take().unwrap());
                let mut count = 0u64;
                for l in reader.lines() {
                    debug_assert_eq!(l.unwrap().len(), 127);
                    count += 1;
                }
                assert_eq!(count, LINES);
                assert!(ch.wait().unwrap().success());
            })
        });
        g.finish();
    }

    /// Spawn + wait of `/bin/true` (both streams captured), in a parent of `label` size.
    fn spawn_wait_group(c: &mut Criterion, rt: &tokio::runtime::Runtime, label: &str) {
        let mut g = c.benchmark_group("spawn_wait_true");
        g.bench_function(BenchmarkId::new("processkit", label), |b| {
            b.to_async(rt).iter(|| async {
                let out = Command::new("/bin/true").output_string().await.unwrap();
                assert_eq!(out.code(), Some(0));
            })
        });
        g.bench_function(BenchmarkId::new("tokio", label), |b| {
            b.to_async(rt).iter(|| async {
                let out = tokio::process::Command::new("/bin/true")
                    .stdin(Stdio::null())
                    .output()
                    .await
                    .unwrap();
                assert!(out.status.success());
            })
        });
        g.bench_function(BenchmarkId::new("std", label), |b| {
            b.iter(|| {
                let out = std::process::Command::new("/bin/true")
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                assert!(out.status.success());
            })
        });
        g.finish();
    }

    fn spawn_wait(c: &mut Criterion) {
        let rt = runtime();
        spawn_wait_group(c, &rt, "small_parent");
    }

    /// The same with 2 GiB of touched memory in this process: a fork-based spawn copies the page
    /// tables of all of it on every spawn; a `CLONE_VM` spawn does not.
    fn spawn_wait_big_parent(c: &mut Criterion) {
        let rt = runtime();
        let mut ballast = vec![0u8; 2 << 30];
        for i in (0..ballast.len()).step_by(4096) {
            ballast[i] = 1;
        }
        spawn_wait_group(c, &rt, "2GiB_parent");
        assert_eq!(std::hint::black_box(&ballast)[4096], 1);
        drop(ballast);
    }

    /// A 3-stage pipeline, `pk-child bytes 64M | pk-child cat | pk-child count-stdin`, the last
    /// stage's one line captured. processkit: `Command::pipe` (native pipes, one group for the
    /// chain); `sh`: the same chain as `sh -c 'a | b | c'`; `std`: the same stages wired by hand
    /// with `std::process` pipes. 64 MiB pass through two pipes; none of it through us.
    fn pipeline_3(c: &mut Criterion) {
        const SIZE: u64 = 64 << 20;
        let want = format!("stdin-bytes={SIZE}\n");
        let rt = runtime();
        let mut g = c.benchmark_group("pipeline_3_stages_64MiB");
        g.throughput(Throughput::Bytes(SIZE));
        let chain = Command::new(PK_CHILD)
            .args(["bytes", "64M"])
            .pipe(Command::new(PK_CHILD).arg("cat"))
            .pipe(Command::new(PK_CHILD).arg("count-stdin"));
        g.bench_function("processkit", |b| {
            b.to_async(&rt).iter(|| async {
                let out = chain.output_string().await.unwrap();
                assert_eq!(out.stdout(), &want);
            })
        });
        let script =
            format!("'{PK_CHILD}' bytes 64M | '{PK_CHILD}' cat | '{PK_CHILD}' count-stdin");
        g.bench_function("sh", |b| {
            b.iter(|| {
                let out = std::process::Command::new("sh")
                    .args(["-c", &script])
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                assert_eq!(String::from_utf8_lossy(&out.stdout), want);
            })
        });
        g.bench_function("std", |b| {
            b.iter(|| {
                let mut a = std::process::Command::new(PK_CHILD)
                    .args(["bytes", "64M"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut m = std::process::Command::new(PK_CHILD)
                    .arg("cat")
                    .stdin(Stdio::from(a.stdout.take().unwrap()))
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let z = std::process::Command::new(PK_CHILD)
                    .arg("count-stdin")
                    .stdin(Stdio::from(m.stdout.take().unwrap()))
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let out = z.wait_with_output().unwrap();
                assert!(a.wait().unwrap().success() && m.wait().unwrap().success());
                assert_eq!(String::from_utf8_lossy(&out.stdout), want);
            })
        });
        g.finish();
    }

    /// Reads the pids of a `tree N DIR` run (every file is written whole before `tree` returns, but
    /// `tree` returning is not observable from here: poll until all parse).
    fn read_tree_pids(dir: &Path, n: usize) -> Vec<i32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut pids = Vec::with_capacity(n);
        for i in 0..n {
            let f = dir.join(format!("{i}.pid"));
            loop {
                if let Some(p) = std::fs::read_to_string(&f)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                {
                    pids.push(p);
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "tree never wrote {}",
                    f.display()
                );
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        pids
    }

    /// Pidfds of the tree's processes, opened before the teardown starts.
    fn pidfds(pids: &[i32]) -> Vec<std::os::fd::OwnedFd> {
        use std::os::fd::FromRawFd as _;
        pids.iter()
            .map(|&p| {
                // SAFETY: pidfd_open takes a pid and flags and returns a new fd we then own.
                let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p, 0) };
                assert!(
                    fd >= 0,
                    "pidfd_open({p}): {}",
                    std::io::Error::last_os_error()
                );
                // SAFETY: a fresh fd from pidfd_open.
                unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }
            })
            .collect()
    }

    /// Waits until every process has exited. A pidfd turns readable when its process exits, so
    /// this measures the kill, not how fast PID 1 gets round to reaping the orphaned zombies (on
    /// the reference VM its init reaps 400 orphans in ~1.6 s, whoever killed them).
    fn wait_all_exited(fds: &[std::os::fd::OwnedFd]) {
        use std::os::fd::AsRawFd as _;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut left: Vec<libc::pollfd> = fds
            .iter()
            .map(|f| libc::pollfd {
                fd: f.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        while !left.is_empty() {
            assert!(Instant::now() < deadline, "tree not dead");
            // SAFETY: poll over a vector of pollfd we own, with its exact length.
            unsafe { libc::poll(left.as_mut_ptr(), left.len() as libc::nfds_t, 100) };
            left.retain(|p| p.revents == 0);
        }
    }

    fn tree_args(dir: &Path, n: usize) -> Vec<String> {
        vec![
            "tree".into(),
            n.to_string(),
            dir.display().to_string(),
            ";".into(),
            "sleep-forever".into(),
        ]
    }

    /// Teardown of a 400-process tree: from "drop the owner" to "every process dead" (the direct
    /// child reaped, the 400 grandchildren exited). Only the teardown is timed, not the build.
    fn teardown(c: &mut Criterion) {
        const N: usize = 400;
        let rt = runtime();
        let base = tempfile::tempdir().expect("tempdir");
        let mut seq = 0u32;
        let mut fresh_dir = move || -> PathBuf {
            seq += 1;
            let d = base.path().join(seq.to_string());
            std::fs::create_dir(&d).unwrap();
            d
        };
        let mut g = c.benchmark_group("teardown_400_tree");
        g.sampling_mode(SamplingMode::Flat);
        g.bench_function("processkit", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = fresh_dir();
                    let (group, rp) = rt.block_on(async {
                        let group = ProcessGroup::new().unwrap();
                        let rp = group
                            .start(
                                &Command::new(PK_CHILD)
                                    .args(tree_args(&dir, N))
                                    .stdout(OutputMode::Null),
                            )
                            .await
                            .unwrap();
                        (group, rp)
                    });
                    let fds = pidfds(&read_tree_pids(&dir, N));
                    let t = Instant::now();
                    drop(rp);
                    drop(group);
                    wait_all_exited(&fds);
                    total += t.elapsed();
                }
                total
            })
        });
        g.bench_function("tokio", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = fresh_dir();
                    let mut ch = rt.block_on(async {
                        tokio::process::Command::new(PK_CHILD)
                            .args(tree_args(&dir, N))
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .process_group(0)
                            .spawn()
                            .unwrap()
                    });
                    let fds = pidfds(&read_tree_pids(&dir, N));
                    let pgid = ch.id().unwrap() as i32;
                    let t = Instant::now();
                    // SAFETY: killpg of the process group this benchmark created.
                    unsafe { libc::killpg(pgid, libc::SIGKILL) };
                    rt.block_on(ch.wait()).unwrap();
                    wait_all_exited(&fds);
                    total += t.elapsed();
                }
                total
            })
        });
        g.bench_function("std", |b| {
            b.iter_custom(|iters| {
                use std::os::unix::process::CommandExt as _;
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let dir = fresh_dir();
                    let mut ch = std::process::Command::new(PK_CHILD)
                        .args(tree_args(&dir, N))
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .process_group(0)
                        .spawn()
                        .unwrap();
                    let fds = pidfds(&read_tree_pids(&dir, N));
                    let pgid = ch.id() as i32;
                    let t = Instant::now();
                    // SAFETY: killpg of the process group this benchmark created.
                    unsafe { libc::killpg(pgid, libc::SIGKILL) };
                    ch.wait().unwrap();
                    wait_all_exited(&fds);
                    total += t.elapsed();
                }
                total
            })
        });
        g.finish();
    }

    criterion_group!(
        benches,
        small_capture,
        fan_out,
        bulk_capture,
        line_streaming,
        spawn_wait,
        spawn_wait_big_parent,
        pipeline_3,
        teardown
    );
}

#[cfg(target_os = "linux")]
fn main() {
    linux::benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("benches/compare.rs measures Linux only");
}
