//! Supervision: restart policies, bounds, backoff, storm guard, intensity window, uptime reset,
//! shared groups and drop semantics — against real processes (pk-child) and, hermetically,
//! through a private test-double runner that spawns nothing.
mod common;

use common::*;
use processkit::{
    BoxFuture, Command, Error, ProcessGroup, ProcessResult, ProcessRunner, RestartPolicy,
    RunningProcess, StopReason, Supervisor,
};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

fn child(args: &[&str]) -> Command {
    Command::new(pk_child()).args(args)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

fn read_count(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Waits (async, so the supervisor keeps running on this thread) for a pid in `path`.
async fn pid_in(path: &Path) -> u32 {
    let ok = wait_until_async(Duration::from_secs(10), || {
        std::fs::read_to_string(path).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
    })
    .await;
    assert!(ok, "no pid in {} within 10 s", path.display());
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

async fn assert_dead_async(pids: &[u32]) {
    let ok = wait_until_async(Duration::from_secs(5), || {
        pids.iter().all(|&p| !pid_alive(p))
    })
    .await;
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| pid_alive(p)).collect();
    assert!(ok && alive.is_empty(), "still alive: {alive:?} of {pids:?}");
}

/// Fast, deterministic restarts for the real-process tests.
fn quick(cmd: Command) -> Supervisor {
    Supervisor::new(cmd)
        .backoff(Duration::from_millis(1), 1.0)
        .jitter(false)
}

// ---------------------------------------------------------------------------------------------
// Real processes
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn restarts_until_success() {
    let dir = tempdir();
    let counter = dir.path().join("count");
    let out = quick(child(&["fail-until", p(&counter), "3"]))
        .restart(RestartPolicy::OnCrash)
        .run()
        .await
        .unwrap();
    assert_eq!(read_count(&counter), 3, "three runs");
    assert_eq!(out.restarts, 2);
    assert_eq!(out.stopped, StopReason::Policy);
    let last = out.result.expect("last result");
    assert_eq!(last.code(), Some(0));
    assert_eq!(last.stdout().trim(), "3");
}

#[tokio::test]
async fn max_restarts_bounds_the_restarts() {
    let dir = tempdir();
    let counter = dir.path().join("count");
    let out = quick(child(&["counter", p(&counter), ";", "exit", "1"]))
        .restart(RestartPolicy::Always)
        .max_restarts(2)
        .run()
        .await
        .unwrap();
    assert_eq!(read_count(&counter), 3, "the first run plus two restarts");
    assert_eq!(out.restarts, 2);
    assert!(
        matches!(out.stopped, StopReason::MaxRestarts),
        "{:?}",
        out.stopped
    );
    assert_eq!(out.result.unwrap().code(), Some(1));
}

#[tokio::test]
async fn never_runs_once() {
    let dir = tempdir();
    let counter = dir.path().join("count");
    let out = quick(child(&["counter", p(&counter), ";", "exit", "1"]))
        .restart(RestartPolicy::Never)
        .run()
        .await
        .unwrap();
    assert_eq!(read_count(&counter), 1);
    assert_eq!(out.restarts, 0);
    assert_eq!(out.stopped, StopReason::Policy);
    assert_eq!(out.result.unwrap().code(), Some(1));
}

#[tokio::test]
async fn stop_when_ends_supervision() {
    let dir = tempdir();
    let counter = dir.path().join("count");
    // Clean exits under Always keep restarting until the predicate matches the third output.
    let out = quick(child(&["counter", p(&counter)]))
        .restart(RestartPolicy::Always)
        .stop_when(|res| res.stdout().trim() == "3")
        .run()
        .await
        .unwrap();
    assert_eq!(read_count(&counter), 3);
    assert_eq!(out.restarts, 2);
    assert_eq!(out.stopped, StopReason::StopWhen);
}

#[tokio::test]
async fn intensity_window_stops_a_crash_loop() {
    let dir = tempdir();
    let counter = dir.path().join("count");
    let out = quick(child(&["counter", p(&counter), ";", "exit", "1"]))
        .restart(RestartPolicy::Always)
        .intensity(3, Duration::from_secs(3600))
        .run()
        .await
        .unwrap();
    assert_eq!(out.stopped, StopReason::Intensity);
    assert_eq!(out.restarts, 3);
    assert_eq!(read_count(&counter), 4);
}

#[tokio::test]
async fn spawn_failure_is_a_stop_reason_with_no_result() {
    let out = quick(Command::new("/nonexistent/processkit-no-such-program"))
        .restart(RestartPolicy::Always)
        .run()
        .await
        .unwrap();
    assert!(out.result.is_none());
    assert_eq!(out.restarts, 0);
    match &out.stopped {
        StopReason::SpawnFailed(Error::NotFound { program }) => {
            assert!(program.contains("no-such-program"))
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn supervision_inside_a_shared_group() {
    let dir = tempdir();
    let pidfile = dir.path().join("pid");
    let group = ProcessGroup::new().unwrap();
    let sup = quick(child(&["pidfile", p(&pidfile), ";", "sleep-forever"]))
        .restart(RestartPolicy::OnCrash)
        .max_restarts(1)
        .with_runner(&group);
    let check = async {
        let mut pids = Vec::new();
        for _ in 0..2 {
            let pid = pid_in(&pidfile).await;
            assert!(pid_alive(pid));
            std::fs::remove_file(&pidfile).unwrap();
            // Killing the group kills exactly its members: the incarnation dying proves it was
            // one. The supervisor sees a crash and restarts (once) into the same group.
            group.kill().unwrap();
            assert_dead_async(&[pid]).await;
            pids.push(pid);
        }
        pids
    };
    let (out, pids) = tokio::join!(sup.run(), check);
    let out = out.unwrap();
    assert_ne!(pids[0], pids[1], "a fresh incarnation each time");
    assert_eq!(out.restarts, 1);
    assert_eq!(out.stopped, StopReason::MaxRestarts);
    let last = out.result.unwrap();
    assert_eq!(last.code(), None, "killed, not exited");
    drop(group);
}

#[tokio::test]
async fn dropping_run_kills_the_current_incarnation_tree() {
    let dir = tempdir();
    let me = dir.path().join("self.pid");
    let sup = quick(child(&[
        "tree",
        "2",
        p(dir.path()),
        ";",
        "pidfile",
        p(&me),
        ";",
        "sleep-forever",
    ]))
    .restart(RestartPolicy::Always);
    let pids = tokio::select! {
        out = sup.run() => panic!("supervision ended early: {out:?}"),
        pids = async {
            let root = pid_in(&me).await;
            let a = pid_in(&dir.path().join("0.pid")).await;
            let b = pid_in(&dir.path().join("1.pid")).await;
            vec![root, a, b]
        } => pids,
    };
    // The `run` future was dropped when `select!` returned.
    assert_dead_within(&pids, Duration::from_secs(5));
}

#[cfg(feature = "cancellation")]
#[tokio::test]
async fn cancellation_stops_supervision_for_good() {
    use processkit::CancellationToken;
    let dir = tempdir();
    let pidfile = dir.path().join("pid");
    let token = CancellationToken::new();
    let sup = quick(child(&["pidfile", p(&pidfile), ";", "sleep-forever"]))
        .restart(RestartPolicy::Always)
        .cancel_on(token.clone());
    let check = async {
        let pid = pid_in(&pidfile).await;
        token.cancel();
        pid
    };
    let (out, pid) = tokio::join!(sup.run(), check);
    let out = out.unwrap();
    assert_eq!(out.stopped, StopReason::Cancelled);
    assert_eq!(out.restarts, 0, "no restart into a cancelled token");
    assert!(
        out.result.is_none(),
        "the cancelled incarnation has no result"
    );
    assert_dead_within(&[pid], Duration::from_secs(5));
}

#[cfg(feature = "cancellation")]
#[tokio::test]
async fn command_token_cancellation_stops_supervision() {
    use processkit::CancellationToken;
    let dir = tempdir();
    let pidfile = dir.path().join("pid");
    let token = CancellationToken::new();
    let sup =
        quick(child(&["pidfile", p(&pidfile), ";", "sleep-forever"]).cancel_on(token.clone()))
            .restart(RestartPolicy::Always);
    let check = async {
        let pid = pid_in(&pidfile).await;
        token.cancel();
        pid
    };
    let (out, pid) = tokio::join!(sup.run(), check);
    let out = out.unwrap();
    assert_eq!(out.stopped, StopReason::Cancelled);
    assert_eq!(out.restarts, 0);
    assert_dead_within(&[pid], Duration::from_secs(5));
}

// ---------------------------------------------------------------------------------------------
// Hermetic: a private test-double runner, no process spawned, virtual time.
// ---------------------------------------------------------------------------------------------

/// One scripted incarnation: how long it "runs" (virtual time), then its exit code, or an
/// error instead of a result.
#[derive(Clone)]
enum Step {
    Exit { up: Duration, code: i32 },
    Fail,
}

fn exit(code: i32) -> Step {
    Step::Exit {
        up: Duration::ZERO,
        code,
    }
}

fn exit_after(up: Duration, code: i32) -> Step {
    Step::Exit { up, code }
}

/// Plays `script` in order (the last step repeats), recording each call's (start, end).
struct Double {
    script: Vec<Step>,
    calls: Mutex<Vec<(Instant, Option<Instant>)>>,
    on_call: Box<dyn Fn(usize) + Send + Sync>,
}

impl Double {
    fn new(script: Vec<Step>) -> Double {
        Double {
            script,
            calls: Mutex::new(Vec::new()),
            on_call: Box::new(|_| {}),
        }
    }
    fn calls(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
    /// Waits between the end of each incarnation and the start of the next.
    fn gaps(&self) -> Vec<Duration> {
        let c = self.calls.lock().unwrap();
        c.windows(2)
            .map(|w| w[1].0 - w[0].1.expect("ended"))
            .collect()
    }
}

impl ProcessRunner for Double {
    fn output_bytes<'a>(
        &'a self,
        cmd: &'a Command,
    ) -> BoxFuture<'a, processkit::Result<ProcessResult<Vec<u8>>>> {
        Box::pin(async move {
            let n = {
                let mut c = self.calls.lock().unwrap();
                c.push((Instant::now(), None));
                c.len() - 1
            };
            (self.on_call)(n);
            let step = self
                .script
                .get(n)
                .or(self.script.last())
                .cloned()
                .expect("a script");
            let r = match step {
                Step::Exit { up, code } => {
                    tokio::time::sleep(up).await;
                    let program = cmd.get_program().to_string_lossy().into_owned();
                    Ok(ProcessResult::new_bytes(
                        program,
                        code,
                        format!("run {}\n", n + 1),
                        "",
                    ))
                }
                Step::Fail => Err(Error::NotFound {
                    program: "scripted".into(),
                }),
            };
            self.calls.lock().unwrap()[n].1 = Some(Instant::now());
            r
        })
    }

    fn start<'a>(&'a self, _cmd: &'a Command) -> BoxFuture<'a, processkit::Result<RunningProcess>> {
        Box::pin(async {
            Err(Error::Unsupported {
                what: "start".into(),
                platform: "supervision test double".into(),
            })
        })
    }
}

/// A program that cannot run: if anything spawned it for real, the test would see NotFound.
fn never_spawned() -> Command {
    Command::new("/nonexistent/processkit-never-spawned")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn hermetic_restart_until_clean_exit() {
    let d = Double::new(vec![exit(1), exit(1), exit(0)]);
    let out = Supervisor::new(never_spawned())
        .jitter(false)
        .with_runner(&d)
        .run()
        .await
        .unwrap();
    assert_eq!(d.calls(), 3);
    assert_eq!(out.restarts, 2);
    assert_eq!(out.stopped, StopReason::Policy);
    let last = out.result.unwrap();
    assert_eq!(last.code(), Some(0));
    assert_eq!(last.stdout(), "run 3\n");
}

#[tokio::test(start_paused = true)]
async fn hermetic_never_and_max_restarts() {
    let d = Double::new(vec![exit(7)]);
    let out = Supervisor::new(never_spawned())
        .restart(RestartPolicy::Never)
        .with_runner(&d)
        .run()
        .await
        .unwrap();
    assert_eq!((d.calls(), out.restarts), (1, 0));
    assert_eq!(out.stopped, StopReason::Policy);

    let d = Double::new(vec![exit(0)]);
    let out = Supervisor::new(never_spawned())
        .restart(RestartPolicy::Always)
        .max_restarts(4)
        .with_runner(&d)
        .run()
        .await
        .unwrap();
    assert_eq!((d.calls(), out.restarts), (5, 4));
    assert_eq!(out.stopped, StopReason::MaxRestarts);
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_exactly_without_jitter() {
    let d = Double::new(vec![exit(1)]);
    let out = Supervisor::new(never_spawned())
        .backoff(ms(100), 2.0)
        .max_backoff(ms(500))
        .jitter(false)
        .max_restarts(5)
        .with_runner(&d)
        .run()
        .await
        .unwrap();
    assert_eq!(out.stopped, StopReason::MaxRestarts);
    assert_eq!(d.gaps(), vec![ms(100), ms(200), ms(400), ms(500), ms(500)]);
}

#[tokio::test(start_paused = true)]
async fn jittered_backoff_stays_within_half_to_full() {
    let d = Double::new(vec![exit(1)]);
    Supervisor::new(never_spawned())
        .backoff(ms(1000), 2.0)
        .max_backoff(Duration::from_secs(60))
        .max_restarts(5)
        .with_runner(&d)
        .run()
        .await
        .unwrap();
    let gaps = d.gaps();
    assert_eq!(gaps.len(), 5);
    for (i, g) in gaps.iter().enumerate() {
        let full = ms(1000) * 2u32.pow(i as u32);
        // Virtual timers fire on whole milliseconds: allow 1 ms of rounding.
        assert!(
            *g + ms(1) >= full / 2 && *g <= full + ms(1),
            "gap {i}: {g:?} vs {full:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn min_uptime_resets_the_backoff() {
    let up = Duration::from_secs(5);
    let d = Double::new(vec![
        exit(1),
        exit(1),
        exit(1),
        exit_after(up, 1),
        exit(1),
        exit(1),
    ]);
    Supervisor::new(never_spawned())
        .backoff(ms(100), 2.0)
        .jitter(false)
        .min_uptime(Duration::from_secs(1))
        .max_restarts(5)
        .with_runner(&d)
        .run()
        .await
        .unwrap();
    assert_eq!(d.gaps(), vec![ms(100), ms(200), ms(400), ms(100), ms(200)]);
}

#[tokio::test(start_paused = true)]
async fn storm_guard_takes_one_collective_pause() {
    let d = Double::new(vec![exit(1)]);
    let pause = Duration::from_secs(15);
    let out = Supervisor::new(never_spawned())
        .backoff(ms(10), 1.0)
        .jitter(false)
        .failure_threshold(3.0)
        .failure_decay(Duration::from_secs(60))
        .storm_pause(pause)
        .max_restarts(6)
        .with_runner(&d)
        .run()
        .await
        .unwrap();
    assert_eq!(out.restarts, 6);
    // The fourth quick crash pushes the score past 3: one pause instead of the backoff, then
    // the score starts again from zero (three more crashes stay at or below the threshold).
    assert_eq!(
        d.gaps(),
        vec![ms(10), ms(10), ms(10), pause, ms(10), ms(10)]
    );
}

#[tokio::test(start_paused = true)]
async fn storm_guard_ignores_rare_failures() {
    // Each incarnation stays up for two half-lives: the score never builds up.
    let d = Double::new(vec![exit_after(Duration::from_secs(20), 1)]);
    Supervisor::new(never_spawned())
        .backoff(ms(10), 1.0)
        .jitter(false)
        .failure_threshold(1.5)
        .failure_decay(Duration::from_secs(10))
        .storm_pause(Duration::from_secs(15))
        .max_restarts(8)
        .with_runner(&d)
        .run()
        .await
        .unwrap();
    assert!(d.gaps().iter().all(|g| *g == ms(10)), "{:?}", d.gaps());
}

#[tokio::test(start_paused = true)]
async fn intensity_window_counts_only_recent_restarts() {
    // Crashes 10 s apart with at most 2 restarts per 15 s: never more than 2 in the window.
    let d = Double::new(vec![exit_after(Duration::from_secs(10), 1)]);
    let out = Supervisor::new(never_spawned())
        .backoff(ms(10), 1.0)
        .jitter(false)
        .intensity(2, Duration::from_secs(15))
        .max_restarts(6)
        .with_runner(&d)
        .run()
        .await
        .unwrap();
    assert_eq!(out.stopped, StopReason::MaxRestarts);

    // The same limit with instant crashes: the third restart inside the window is refused.
    let d = Double::new(vec![exit(1)]);
    let out = Supervisor::new(never_spawned())
        .backoff(ms(10), 1.0)
        .jitter(false)
        .intensity(2, Duration::from_secs(15))
        .with_runner(&d)
        .run()
        .await
        .unwrap();
    assert_eq!(out.stopped, StopReason::Intensity);
    assert_eq!((out.restarts, d.calls()), (2, 3));
}

#[tokio::test(start_paused = true)]
async fn exit_code_classification() {
    // A "never restart" code ends supervision even under Always.
    let d = Double::new(vec![exit(1), exit(78), exit(1)]);
    let out = Supervisor::new(never_spawned())
        .restart(RestartPolicy::Always)
        .no_restart_codes([78])
        .with_runner(&d)
        .run()
        .await
        .unwrap();
    assert_eq!(out.stopped, StopReason::Policy);
    assert_eq!((out.restarts, out.result.unwrap().code()), (1, Some(78)));

    // An extra success code is a clean exit for OnCrash.
    let d = Double::new(vec![exit(1), exit(143), exit(1)]);
    let out = Supervisor::new(never_spawned())
        .success_codes([143])
        .with_runner(&d)
        .run()
        .await
        .unwrap();
    assert_eq!(out.stopped, StopReason::Policy);
    assert_eq!((out.restarts, out.result.unwrap().code()), (1, Some(143)));
}

#[tokio::test(start_paused = true)]
async fn runner_error_keeps_the_previous_result() {
    let d = Double::new(vec![exit(1), Step::Fail]);
    let out = Supervisor::new(never_spawned())
        .with_runner(&d)
        .run()
        .await
        .unwrap();
    assert_eq!(out.restarts, 1);
    assert!(
        matches!(out.stopped, StopReason::SpawnFailed(Error::NotFound { .. })),
        "{:?}",
        out.stopped
    );
    assert_eq!(out.result.unwrap().stdout(), "run 1\n");
}

#[tokio::test]
async fn invalid_configuration_is_an_error() {
    let d = Double::new(vec![exit(1)]);
    let e = Supervisor::new(never_spawned())
        .intensity(3, Duration::ZERO)
        .with_runner(&d)
        .run()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
    let e = Supervisor::new(never_spawned())
        .storm_pause(Duration::from_secs(1))
        .failure_decay(Duration::ZERO)
        .with_runner(&d)
        .run()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
    assert_eq!(d.calls(), 0, "nothing ran");
}

#[test]
fn outcome_is_debug_printable() {
    let s = format!("{:?} {}", StopReason::MaxRestarts, StopReason::Intensity);
    assert!(s.contains("MaxRestarts"), "{s}");
}

#[cfg(feature = "cancellation")]
#[tokio::test(start_paused = true)]
async fn hermetic_cancel_cuts_the_backoff_short() {
    use processkit::CancellationToken;
    let token = CancellationToken::new();
    let d = Double::new(vec![exit(1)]);
    let t0 = Instant::now();
    let canceller = {
        let token = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            token.cancel();
        })
    };
    let out = Supervisor::new(never_spawned())
        .backoff(Duration::from_secs(3600), 2.0)
        .jitter(false)
        .cancel_on(token)
        .with_runner(&d)
        .run()
        .await
        .unwrap();
    canceller.await.unwrap();
    assert_eq!(out.stopped, StopReason::Cancelled);
    assert_eq!((out.restarts, d.calls()), (0, 1));
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    assert_eq!(out.result.unwrap().code(), Some(1));
}

#[cfg(feature = "cancellation")]
#[tokio::test(start_paused = true)]
async fn hermetic_cancel_during_an_incarnation_never_restarts() {
    use processkit::CancellationToken;
    let token = CancellationToken::new();
    let mut d = Double::new(vec![exit(1), exit_after(Duration::from_secs(3600), 0)]);
    let t = token.clone();
    d.on_call = Box::new(move |n| {
        if n == 1 {
            t.cancel();
        }
    });
    let out = Supervisor::new(never_spawned().cancel_on(token))
        .restart(RestartPolicy::Always)
        .with_runner(&d)
        .run()
        .await
        .unwrap();
    assert_eq!(out.stopped, StopReason::Cancelled);
    assert_eq!((out.restarts, d.calls()), (1, 2));
    assert_eq!(
        out.result.unwrap().stdout(),
        "run 1\n",
        "the cancelled run left no result"
    );
}

#[cfg(feature = "tracing")]
#[tokio::test(start_paused = true)]
async fn tracing_one_event_per_restart_and_storm_pause_without_argv() {
    use std::sync::Arc;
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(sub);

    let d = Double::new(vec![exit(1)]);
    let out = Supervisor::new(never_spawned().arg("secret-token-value"))
        .backoff(ms(10), 1.0)
        .jitter(false)
        .failure_threshold(2.0)
        .storm_pause(Duration::from_secs(5))
        .max_restarts(3)
        .with_runner(&d)
        .run()
        .await
        .unwrap();
    assert_eq!(out.restarts, 3);
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        log.matches("restarting supervised child").count(),
        3,
        "{log}"
    );
    assert_eq!(log.matches("failure storm").count(), 1, "{log}");
    assert!(!log.contains("secret-token-value"), "{log}");
}

#[tokio::test]
async fn run_future_is_send_and_spawnable() {
    let dir = tempdir();
    let counter = dir.path().join("count");
    let sup = quick(child(&["counter", p(&counter), ";", "exit", "1"])).max_restarts(1);
    let out = tokio::spawn(async move { sup.run().await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.restarts, 1);
    assert_eq!(read_count(&counter), 2);
}
