//! Timeouts (captured vs raised, graceful tier, inactivity), retries (attempts, backoff,
//! classifier) and cancellation (the `cancellation` feature) against real processes.
//!
//! Run the cancellation half with `cargo test --test timeouts --features cancellation`.
mod common;

use common::*;
use processkit::{AttemptOutcome, Command, Error, ProcessGroup, ProcessRunnerExt, RetryPolicy};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a kill may take to become visible (generous: the machine is shared).
const SETTLE: Duration = Duration::from_secs(10);
/// A deadline long enough for pk-child to reach its later actions on a loaded machine.
const ROOMY: Duration = Duration::from_millis(1500);

fn child(args: &[&str]) -> Command {
    Command::new(pk_child()).args(args)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

/// Waits (async) until `path` holds a pid and returns it.
async fn pid_in(path: &Path) -> u32 {
    let ok = wait_until_async(SETTLE, || {
        std::fs::read_to_string(path).is_ok_and(|t| t.trim().parse::<u32>().is_ok())
    })
    .await;
    assert!(ok, "no pid in {} within {SETTLE:?}", path.display());
    read_pid_file(path, Duration::ZERO)
}

fn counter(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .map(|t| t.trim().parse().expect("counter file holds a number"))
        .unwrap_or(0)
}

fn retry_non_zero(o: &AttemptOutcome<'_>) -> bool {
    match o {
        AttemptOutcome::Finished(r) => !r.success(),
        other => other.retryable_by_default(),
    }
}

// ---------------------------------------------------------------------------------------------
// Captured vs raised deadlines
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn output_verbs_capture_the_deadline_and_the_tree_dies() {
    let dir = tempdir();
    let gc = dir.path().join("gc.pid");
    let r = child(&[
        "print",
        "early",
        ";",
        "spawn",
        "bg",
        s(&gc),
        ";",
        "print",
        "spawned",
        ";",
        "sleep-forever",
    ])
    .timeout(ROOMY)
    .output_string()
    .await
    .expect("a timeout is captured, not raised");
    assert!(r.timed_out());
    assert!(!r.success());
    assert_eq!(r.code(), None, "a timed-out run has no exit code");
    assert_eq!(
        r.stdout(),
        "early\nspawned\n",
        "output before the deadline is kept"
    );
    assert_eq!(r.attempts(), 1);
    assert_dead_within(&[read_pid_file(&gc, SETTLE)], SETTLE);

    let b = child(&["printn", "raw", ";", "sleep-forever"])
        .timeout(Duration::from_millis(300))
        .output_bytes()
        .await
        .unwrap();
    assert!(b.timed_out());
    assert_eq!(b.stdout(), b"raw");
}

#[tokio::test]
async fn run_and_exit_code_raise_the_deadline_and_the_tree_dies() {
    let dir = tempdir();
    let gc = dir.path().join("gc.pid");
    let e = child(&[
        "spawn",
        "bg",
        s(&gc),
        ";",
        "print",
        "early",
        ";",
        "eprint",
        "warn",
        ";",
        "sleep-forever",
    ])
    .timeout(ROOMY)
    .run()
    .await
    .unwrap_err();
    match &e {
        Error::Timeout {
            timeout,
            stdout,
            stderr,
            attempts,
            ..
        } => {
            assert_eq!(*timeout, ROOMY);
            assert_eq!(stdout, "early\n");
            assert_eq!(stderr, "warn\n");
            assert_eq!(*attempts, 1);
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(e.is_timeout());
    assert!(e.to_string().contains("timed out after"), "{e}");
    assert_dead_within(&[read_pid_file(&gc, SETTLE)], SETTLE);

    let short = Duration::from_millis(200);
    let e = child(&["sleep-forever"])
        .timeout(short)
        .exit_code()
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Timeout { timeout, .. } if timeout == short),
        "{e:?}"
    );
    let e = child(&["sleep-forever"])
        .timeout(short)
        .probe()
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
}

#[tokio::test]
async fn first_line_raises_the_deadline_when_no_line_matched() {
    let e = child(&["print", "a", ";", "eprint", "why", ";", "sleep-forever"])
        .timeout(Duration::from_millis(300))
        .first_line(|l| l == "never")
        .await
        .unwrap_err();
    match e {
        Error::Timeout { stderr, .. } => assert_eq!(stderr, "why\n"),
        other => panic!("expected Timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn the_deadline_bounds_a_stream() {
    use processkit::StreamExt as _;
    let dir = tempdir();
    let gc = dir.path().join("gc.pid");
    let mut rp = child(&[
        "spawn",
        "bg",
        s(&gc),
        ";",
        "print",
        "one",
        ";",
        "sleep-forever",
    ])
    .timeout(ROOMY)
    .start()
    .await
    .unwrap();
    let mut lines = rp.stdout_lines();
    let mut seen = Vec::new();
    while let Some(l) = lines.next().await {
        seen.push(l);
    }
    assert_eq!(seen, ["one"]);
    drop(lines);
    let pid = rp.pid();
    let (code, _) = rp
        .finish_streamed()
        .await
        .expect("a timeout is not an error here");
    assert_eq!(code, None);
    assert_dead_within(&[pid, read_pid_file(&gc, SETTLE)], SETTLE);
}

#[tokio::test]
async fn a_timeout_in_a_shared_group_kills_only_that_child() {
    let dir = tempdir();
    let sib_file = dir.path().join("sib.pid");
    let group = ProcessGroup::new().unwrap();
    let sibling = group
        .start(&child(&["pidfile", s(&sib_file), ";", "sleep-forever"]))
        .await
        .unwrap();
    let r = group
        .output_string(
            &child(&["print", "x", ";", "sleep-forever"]).timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert!(r.timed_out());
    assert_eq!(r.stdout(), "x\n");
    let sib = read_pid_file(&sib_file, SETTLE);
    assert!(
        pid_alive(sib),
        "the sibling must survive another run's timeout"
    );
    drop(sibling);
    drop(group);
    assert_dead_within(&[sib], SETTLE);
}

// ---------------------------------------------------------------------------------------------
// The graceful tier (POSIX only: SIGTERM has no Windows equivalent; there the kill is immediate)
// ---------------------------------------------------------------------------------------------

#[cfg(unix)]
#[tokio::test]
async fn timeout_grace_lets_a_term_trap_run() {
    let dir = tempdir();
    let flag = dir.path().join("termed");
    let gc = dir.path().join("gc.pid");
    let r = child(&[
        "spawn",
        "bg",
        s(&gc),
        ";",
        "trap-term",
        s(&flag),
        ";",
        "print",
        "armed",
        ";",
        "sleep-forever",
    ])
    .timeout(ROOMY)
    .timeout_grace(Duration::from_secs(60))
    .output_string()
    .await
    .unwrap();
    assert!(r.timed_out());
    assert_eq!(r.code(), None, "timed out, even though the trap exited 0");
    assert_eq!(r.stdout(), "armed\n");
    assert_eq!(
        std::fs::read_to_string(&flag).unwrap(),
        "term",
        "the trap ran"
    );
    // The child exiting within the grace ends the wait; its grandchild dies with the run.
    assert_dead_within(&[read_pid_file(&gc, SETTLE)], SETTLE);
}

#[cfg(unix)]
#[tokio::test]
async fn without_grace_the_deadline_is_an_immediate_kill() {
    let dir = tempdir();
    let flag = dir.path().join("termed");
    let r = child(&[
        "trap-term",
        s(&flag),
        ";",
        "print",
        "armed",
        ";",
        "sleep-forever",
    ])
    .timeout(ROOMY)
    .output_string()
    .await
    .unwrap();
    assert!(r.timed_out());
    assert_eq!(r.stdout(), "armed\n");
    assert_eq!(r.signal(), Some(9), "SIGKILL");
    assert!(!flag.exists(), "no SIGTERM is sent without timeout_grace");
}

#[cfg(unix)]
#[tokio::test]
async fn timeout_grace_kills_a_term_ignoring_tree_after_the_grace() {
    let dir = tempdir();
    let me = dir.path().join("child.pid");
    let gc = dir.path().join("gc.pid");
    let (deadline, grace) = (ROOMY, Duration::from_millis(300));
    // The grandchild inherits the ignored SIGTERM across fork and exec.
    let r = child(&[
        "pidfile",
        s(&me),
        ";",
        "ignore-term",
        ";",
        "spawn",
        "bg",
        s(&gc),
        ";",
        "print",
        "ready",
        ";",
        "sleep-forever",
    ])
    .timeout(deadline)
    .timeout_grace(grace)
    .output_string()
    .await
    .unwrap();
    assert!(r.timed_out());
    assert_eq!(r.stdout(), "ready\n");
    assert_eq!(r.signal(), Some(9), "SIGTERM was ignored; SIGKILL ended it");
    assert!(
        r.duration() >= deadline + grace,
        "the kill waited for the grace"
    );
    let pids = [read_pid_file(&me, SETTLE), read_pid_file(&gc, SETTLE)];
    assert_dead_within(&pids, SETTLE);
}

#[cfg(unix)]
#[tokio::test]
async fn timeout_grace_in_a_shared_group_terms_only_the_child() {
    let dir = tempdir();
    let flag = dir.path().join("termed");
    let sib_flag = dir.path().join("sib-termed");
    let sib_file = dir.path().join("sib.pid");
    let group = ProcessGroup::new().unwrap();
    let sibling = group
        .start(&child(&[
            "trap-term",
            s(&sib_flag),
            ";",
            "pidfile",
            s(&sib_file),
            ";",
            "sleep-forever",
        ]))
        .await
        .unwrap();
    let sib = read_pid_file(&sib_file, SETTLE);
    let r = group
        .output_string(
            &child(&[
                "trap-term",
                s(&flag),
                ";",
                "print",
                "armed",
                ";",
                "sleep-forever",
            ])
            .timeout(ROOMY)
            .timeout_grace(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert!(r.timed_out());
    assert_eq!(
        std::fs::read_to_string(&flag).unwrap(),
        "term",
        "the child got SIGTERM"
    );
    assert!(!sib_flag.exists(), "the sibling must not get SIGTERM");
    assert!(pid_alive(sib));
    drop(sibling);
    drop(group);
    assert_dead_within(&[sib], SETTLE);
}

// ---------------------------------------------------------------------------------------------
// Inactivity
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn inactivity_timeout_fires_for_a_silent_child() {
    let idle = Duration::from_millis(300);
    let dir = tempdir();
    let gc = dir.path().join("gc.pid");
    let r = child(&[
        "spawn",
        "bg",
        s(&gc),
        ";",
        "print",
        "hi",
        ";",
        "sleep-forever",
    ])
    .inactivity_timeout(idle)
    .output_string()
    .await
    .unwrap();
    assert!(r.timed_out());
    assert_eq!(r.stdout(), "hi\n");
    assert_dead_within(&[read_pid_file(&gc, SETTLE)], SETTLE);

    let e = child(&["print", "hi", ";", "sleep-forever"])
        .inactivity_timeout(idle)
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Timeout { timeout, .. } if timeout == idle),
        "the error names the inactivity limit: {e:?}"
    );
}

#[tokio::test]
async fn inactivity_timeout_spares_a_chatty_child() {
    // Twelve outputs 100 ms apart on both streams: 1.2 s in all, never 1 s silent.
    let mut args = Vec::new();
    for i in 0..12 {
        args.extend([
            if i % 2 == 0 { "print" } else { "eprint" },
            "tick",
            ";",
            "sleep",
            "100",
            ";",
        ]);
    }
    args.extend(["exit", "0"]);
    let r = child(&args)
        .inactivity_timeout(Duration::from_secs(1))
        .output_string()
        .await
        .unwrap();
    assert!(!r.timed_out(), "{r}");
    assert_eq!(r.code(), Some(0));
    assert_eq!(r.stdout().lines().count(), 6);
    assert_eq!(r.stderr().lines().count(), 6);
}

// ---------------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------------

/// Retry replays a run until it succeeds: a success ends the loop even under a classifier that
/// answers "retry" to everything, so its side effects happen once.
#[tokio::test]
async fn a_successful_attempt_is_never_retried() {
    let dir = tempdir();
    let c = dir.path().join("count");
    let r = child(&["counter", s(&c)])
        .retry(
            RetryPolicy::new(3)
                .backoff(Duration::from_millis(1), 1.0)
                .retry_if(|_| true),
        )
        .output_string()
        .await
        .unwrap();
    assert_eq!(r.code(), Some(0));
    assert_eq!(r.attempts(), 1);
    assert_eq!(counter(&c), 1, "the command ran once");
}

#[tokio::test]
async fn a_classifier_retries_a_flaky_command_with_backoff() {
    let dir = tempdir();
    let c = dir.path().join("count");
    let (base, mult) = (Duration::from_millis(50), 2.0);
    let policy = RetryPolicy::new(5)
        .backoff(base, mult)
        .jitter(false)
        .retry_if(retry_non_zero);
    assert_eq!(policy.delay_for(1), base);
    assert_eq!(policy.delay_for(2), base * 2);
    let started = Instant::now();
    let r = child(&["fail-until", s(&c), "3"])
        .retry(policy.clone())
        .output_string()
        .await
        .unwrap();
    assert_eq!(r.code(), Some(0));
    assert_eq!(r.attempts(), 3);
    assert_eq!(r.stdout(), "3\n", "the result is the last attempt's");
    assert_eq!(counter(&c), 3);
    assert!(
        started.elapsed() >= base + base * 2,
        "two backoffs were waited"
    );

    // `run` succeeds the same way.
    std::fs::remove_file(&c).unwrap();
    let out = child(&["fail-until", s(&c), "3"])
        .retry(policy)
        .run()
        .await
        .unwrap();
    assert_eq!(out, "3");
}

#[tokio::test]
async fn a_non_zero_exit_is_not_retried_by_default() {
    let dir = tempdir();
    let c = dir.path().join("count");
    let cmd = child(&["fail-until", s(&c), "3"]).retry(RetryPolicy::new(5));
    let r = cmd.output_string().await.unwrap();
    assert_eq!(r.code(), Some(1));
    assert_eq!(r.attempts(), 1);
    assert_eq!(counter(&c), 1);
    let e = cmd.run().await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonZeroExit {
                code: 1,
                attempts: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(counter(&c), 2);
}

#[tokio::test]
async fn exhausted_retries_report_the_attempt_count() {
    let dir = tempdir();
    let c = dir.path().join("count");
    let cmd = child(&["fail-until", s(&c), "100"]).retry(
        RetryPolicy::new(3)
            .backoff(Duration::from_millis(1), 1.0)
            .retry_if(retry_non_zero),
    );
    let e = cmd.run().await.unwrap_err();
    assert_eq!(e.exit_code(), Some(1));
    assert_eq!(e.attempts(), Some(3));
    assert!(e.to_string().contains("(after 3 attempts)"), "{e}");
    assert_eq!(counter(&c), 3);
    let e = cmd.exit_code().await;
    assert_eq!(e.unwrap(), 1, "exit_code returns the last attempt's code");
    assert_eq!(counter(&c), 6);
}

#[tokio::test]
async fn timeouts_are_retried_by_default() {
    let dir = tempdir();
    let c = dir.path().join("count");
    let gc = dir.path().join("gc.pid");
    let cmd = child(&[
        "counter",
        s(&c),
        ";",
        "spawn",
        "bg",
        s(&gc),
        ";",
        "sleep-forever",
    ])
    .timeout(ROOMY)
    .retry(RetryPolicy::new(2).backoff(Duration::from_millis(1), 1.0));
    let r = cmd.output_string().await.unwrap();
    assert!(r.timed_out());
    assert_eq!(r.attempts(), 2);
    assert_eq!(counter(&c), 2);
    assert_dead_within(&[read_pid_file(&gc, SETTLE)], SETTLE);
    let e = cmd.run().await.unwrap_err();
    assert!(matches!(e, Error::Timeout { attempts: 2, .. }), "{e:?}");
    assert!(e.to_string().contains("(after 2 attempts)"), "{e}");
}

/// POSIX only: a file without execute permission is how a spawn error is provoked here.
#[cfg(unix)]
#[tokio::test]
async fn spawn_errors_are_retried_by_default_but_not_found_is_not() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempdir();
    let exe = dir.path().join("not-executable");
    std::fs::write(&exe, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).unwrap();

    let calls = Arc::new(AtomicU32::new(0));
    let counting = |calls: Arc<AtomicU32>| {
        RetryPolicy::new(3)
            .backoff(Duration::from_millis(1), 1.0)
            .retry_if(move |o| {
                calls.fetch_add(1, Ordering::SeqCst);
                o.retryable_by_default()
            })
    };
    let e = Command::new(&exe)
        .retry(counting(calls.clone()))
        .run()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Spawn { .. }), "{e:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "asked after attempts 1 and 2, then exhausted"
    );

    calls.store(0, Ordering::SeqCst);
    let e = Command::new(dir.path().join("missing"))
        .retry(counting(calls.clone()))
        .run()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "asked once, said no");
}

// ---------------------------------------------------------------------------------------------
// Cancellation (feature `cancellation`)
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "cancellation")]
mod cancellation {
    use super::*;
    use processkit::{CancellationToken, StreamExt as _};
    use std::future::Future;

    fn is_cancelled<T: std::fmt::Debug>(r: &processkit::Result<T>) -> bool {
        matches!(r, Err(Error::Cancelled { .. }))
    }

    /// Drives `fut` and cancels `token` once `pidfile` exists (the child is running).
    async fn cancel_once_running<F: Future>(
        fut: F,
        token: &CancellationToken,
        pidfile: &Path,
    ) -> F::Output {
        let (out, ()) = tokio::join!(fut, async {
            pid_in(pidfile).await;
            token.cancel();
        });
        out
    }

    #[tokio::test]
    async fn cancelling_mid_run_kills_the_tree_and_errors() {
        let dir = tempdir();
        let me = dir.path().join("child.pid");
        let gc = dir.path().join("gc.pid");
        let token = CancellationToken::new();
        let cmd = child(&[
            "spawn",
            "bg",
            s(&gc),
            ";",
            "pidfile",
            s(&me),
            ";",
            "print",
            "partial",
            ";",
            "sleep-forever",
        ])
        .timeout(Duration::from_secs(600))
        .cancel_on(token.child_token());
        let r = cancel_once_running(cmd.run(), &token, &me).await;
        assert!(is_cancelled(&r), "{r:?}");
        assert_eq!(
            r.unwrap_err().to_string(),
            format!("`{}` was cancelled", pk_child().display())
        );
        assert_dead_within(
            &[read_pid_file(&me, SETTLE), read_pid_file(&gc, SETTLE)],
            SETTLE,
        );
    }

    /// Cancellation is always an error: every verb, including the ones that capture a timeout.
    #[tokio::test]
    async fn every_verb_reports_cancelled() {
        let dir = tempdir();
        let mut pids = Vec::new();
        for verb in [
            "output_string",
            "output_bytes",
            "exit_code",
            "probe",
            "first_line",
            "retry",
        ] {
            let me = dir.path().join(format!("{verb}.pid"));
            let token = CancellationToken::new();
            let mut cmd = child(&["pidfile", s(&me), ";", "print", "x", ";", "sleep-forever"])
                .cancel_on(token.clone());
            let ok = match verb {
                "output_string" => {
                    is_cancelled(&cancel_once_running(cmd.output_string(), &token, &me).await)
                }
                "output_bytes" => {
                    is_cancelled(&cancel_once_running(cmd.output_bytes(), &token, &me).await)
                }
                "exit_code" => {
                    is_cancelled(&cancel_once_running(cmd.exit_code(), &token, &me).await)
                }
                "probe" => is_cancelled(&cancel_once_running(cmd.probe(), &token, &me).await),
                "first_line" => is_cancelled(
                    &cancel_once_running(cmd.first_line(|l| l == "never"), &token, &me).await,
                ),
                _ => {
                    // A cancelled attempt is never retried, whatever the classifier says.
                    cmd = cmd.retry(RetryPolicy::new(5).retry_if(|_| true));
                    let r = cancel_once_running(cmd.output_string(), &token, &me).await;
                    is_cancelled(&r)
                }
            };
            assert!(ok, "{verb} did not report Cancelled");
            pids.push(read_pid_file(&me, SETTLE));
        }
        assert_dead_within(&pids, SETTLE);
    }

    #[tokio::test]
    async fn a_pre_cancelled_token_spawns_nothing() {
        let dir = tempdir();
        let path = dir.path().join("written");
        let token = CancellationToken::new();
        token.cancel();
        let cmd = child(&["write-file", s(&path), "x"]).cancel_on(token.clone());
        assert!(is_cancelled(&cmd.run().await));
        assert!(is_cancelled(&cmd.output_string().await));
        assert!(is_cancelled(&cmd.output_bytes().await));
        assert!(is_cancelled(&cmd.exit_code().await));
        assert!(is_cancelled(&cmd.probe().await));
        assert!(is_cancelled(&cmd.first_line(|_| true).await));
        assert!(is_cancelled(&cmd.start().await));
        let retried = cmd.clone().retry(RetryPolicy::new(3).retry_if(|_| true));
        assert!(is_cancelled(&retried.output_string().await));
        let group = ProcessGroup::new().unwrap();
        assert!(is_cancelled(&group.start(&cmd).await));
        assert!(is_cancelled(&group.run(&cmd).await));
        assert!(!path.exists(), "nothing was spawned");
    }

    /// The deadline and the cancel fire at the same instant (a paused clock makes them land
    /// together whatever order the tasks run in): cancellation wins.
    // Unix only: on Windows tokio reads child pipes on its blocking pool, and a pending
    // blocking read stops the paused clock from auto-advancing, so the test would hang.
    #[cfg(unix)]
    #[tokio::test(start_paused = true)]
    async fn cancel_beats_a_timeout_that_lands_together() {
        for verb in ["output_string", "run", "wait"] {
            let dir = tempdir();
            let me = dir.path().join("child.pid");
            let d = Duration::from_secs(30);
            let token = CancellationToken::new();
            let canceller = tokio::spawn({
                let token = token.clone();
                async move {
                    tokio::time::sleep(d).await;
                    token.cancel();
                }
            });
            let cmd = child(&["pidfile", s(&me), ";", "sleep-forever"])
                .timeout(d)
                .cancel_on(token.clone());
            let ok = match verb {
                "output_string" => is_cancelled(&cmd.output_string().await),
                "run" => is_cancelled(&cmd.run().await),
                _ => {
                    let mut rp = cmd.start().await.unwrap();
                    let pid = rp.pid();
                    let ok = is_cancelled(&rp.wait().await);
                    assert_dead_within(&[pid], SETTLE);
                    ok
                }
            };
            assert!(ok, "{verb}: the cancel must win");
            canceller.await.unwrap();
        }
    }

    /// The deadline fired first (the child is dead) and the cancel arrived before the outcome
    /// was collected: both landed from the caller's point of view, and cancellation wins.
    #[tokio::test]
    async fn cancel_wins_over_a_timeout_not_yet_reported() {
        let token = CancellationToken::new();
        let cmd = child(&["sleep-forever"])
            .timeout(Duration::from_millis(200))
            .cancel_on(token.clone());
        let mut rp = cmd.start().await.unwrap();
        let pid = rp.pid();
        // Async: the watchdog must run on this (single-threaded) runtime to fire the deadline.
        assert!(
            wait_until_async(SETTLE, || !pid_alive(pid)).await,
            "the deadline killed it"
        );
        token.cancel();
        let r = rp.wait().await;
        assert!(is_cancelled(&r), "{r:?}");

        // Without a cancel the same run reports a plain timeout (no exit code).
        let token = CancellationToken::new();
        let mut rp = cmd.clone().cancel_on(token).start().await.unwrap();
        assert_eq!(rp.wait().await.unwrap(), None);
    }

    /// The deadline fired and the run is inside its (long) grace: the child got SIGTERM and
    /// keeps running. A cancel then ends the grace at once: the tree is hard-killed and the run
    /// reports `Cancelled`, not the timeout, without waiting out the grace.
    #[cfg(unix)]
    #[tokio::test]
    async fn cancelling_inside_the_timeout_grace_kills_at_once() {
        let dir = tempdir();
        let termed = dir.path().join("termed");
        let me = dir.path().join("child.pid");
        let gc = dir.path().join("gc.pid");
        let token = CancellationToken::new();
        // `mark-term` comes first, so a SIGTERM at any later point is noted, never fatal.
        let cmd = child(&[
            "mark-term",
            s(&termed),
            ";",
            "spawn",
            "bg",
            s(&gc),
            ";",
            "pidfile",
            s(&me),
            ";",
            "sleep-forever",
        ])
        .timeout(ROOMY)
        .timeout_grace(Duration::from_secs(3600))
        .cancel_on(token.clone());
        let run = tokio::spawn(async move { cmd.output_string().await });
        assert!(
            wait_until_async(SETTLE + ROOMY, || termed.exists()).await,
            "the deadline's SIGTERM (the start of the grace) never reached the child"
        );
        let pids = [read_pid_file(&me, SETTLE), read_pid_file(&gc, SETTLE)];
        assert!(
            pid_alive(pids[0]),
            "mark-term keeps the child alive in the grace"
        );
        token.cancel();
        // A hang guard, not a speed check: without the cancel the grace would last an hour.
        let r = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("the cancel did not end the grace")
            .unwrap();
        assert!(is_cancelled(&r), "{r:?}");
        assert_dead_within(&pids, SETTLE);
    }

    #[tokio::test]
    async fn cancelling_in_a_shared_group_kills_only_that_child() {
        let dir = tempdir();
        let sib_file = dir.path().join("sib.pid");
        let me = dir.path().join("child.pid");
        let group = ProcessGroup::new().unwrap();
        let sibling = group
            .start(&child(&["pidfile", s(&sib_file), ";", "sleep-forever"]))
            .await
            .unwrap();
        let token = CancellationToken::new();
        let cmd = child(&["pidfile", s(&me), ";", "sleep-forever"]).cancel_on(token.clone());
        let r = cancel_once_running(group.run(&cmd), &token, &me).await;
        assert!(is_cancelled(&r), "{r:?}");
        let (sib, pid) = (read_pid_file(&sib_file, SETTLE), read_pid_file(&me, SETTLE));
        assert_dead_within(&[pid], SETTLE);
        assert!(
            pid_alive(sib),
            "the sibling must survive another run's cancellation"
        );

        // The live-handle path too.
        let token = CancellationToken::new();
        let me2 = dir.path().join("child2.pid");
        let mut rp = group
            .start(&child(&["pidfile", s(&me2), ";", "sleep-forever"]).cancel_on(token.clone()))
            .await
            .unwrap();
        let r = cancel_once_running(rp.wait(), &token, &me2).await;
        assert!(is_cancelled(&r), "{r:?}");
        assert_dead_within(&[rp.pid()], SETTLE);
        assert!(pid_alive(sib));

        drop(sibling);
        drop(group);
        assert_dead_within(&[sib], SETTLE);
    }

    #[tokio::test]
    async fn cancelling_a_stream_ends_it_and_finish_streamed_reports_it() {
        let dir = tempdir();
        let gc = dir.path().join("gc.pid");
        let token = CancellationToken::new();
        let mut rp = child(&[
            "spawn",
            "bg",
            s(&gc),
            ";",
            "print",
            "ready",
            ";",
            "sleep-forever",
        ])
        .cancel_on(token.clone())
        .start()
        .await
        .unwrap();
        let pid = rp.pid();
        let mut lines = rp.stdout_lines();
        assert_eq!(lines.next().await.as_deref(), Some("ready"));
        token.cancel();
        let end = tokio::time::timeout(SETTLE, lines.next()).await;
        assert_eq!(end.expect("the stream must end"), None);
        drop(lines);
        let r = rp.finish_streamed().await;
        assert!(is_cancelled(&r), "{r:?}");
        assert_dead_within(&[pid, read_pid_file(&gc, SETTLE)], SETTLE);
    }

    #[tokio::test]
    async fn readiness_probes_report_cancelled() {
        let dir = tempdir();
        let me = dir.path().join("child.pid");
        let token = CancellationToken::new();
        let mut rp = child(&["pidfile", s(&me), ";", "sleep-forever"])
            .cancel_on(token.clone())
            .start()
            .await
            .unwrap();
        let r = cancel_once_running(
            rp.wait_for_line(|l| l == "never", Duration::from_secs(600)),
            &token,
            &me,
        )
        .await;
        assert!(is_cancelled(&r), "{r:?}");

        let me2 = dir.path().join("child2.pid");
        let token = CancellationToken::new();
        let mut rp = child(&["pidfile", s(&me2), ";", "sleep-forever"])
            .cancel_on(token.clone())
            .start()
            .await
            .unwrap();
        let r = cancel_once_running(
            rp.wait_for(|| async { false }, Duration::from_secs(600)),
            &token,
            &me2,
        )
        .await;
        assert!(is_cancelled(&r), "{r:?}");
        assert_dead_within(
            &[read_pid_file(&me, SETTLE), read_pid_file(&me2, SETTLE)],
            SETTLE,
        );
    }

    #[tokio::test]
    async fn cancelling_during_the_backoff_ends_the_retry_loop() {
        let dir = tempdir();
        let c = dir.path().join("count");
        let token = CancellationToken::new();
        // The classifier runs after an attempt ended, right before the backoff starts.
        let classified = Arc::new(AtomicU32::new(0));
        let cmd = child(&["fail-until", s(&c), "100"])
            .retry(
                RetryPolicy::new(5)
                    .backoff(Duration::from_secs(600), 1.0)
                    .retry_if({
                        let classified = classified.clone();
                        move |o| {
                            classified.fetch_add(1, Ordering::SeqCst);
                            retry_non_zero(o)
                        }
                    }),
            )
            .cancel_on(token.clone());
        let run = async {
            let (r, ()) = tokio::join!(cmd.output_string(), async {
                assert!(wait_until_async(SETTLE, || classified.load(Ordering::SeqCst) == 1).await);
                token.cancel();
            });
            r
        };
        // Without a cancellable backoff this would sleep for 600 s.
        let r = tokio::time::timeout(SETTLE * 3, run)
            .await
            .expect("the cancel must end the backoff");
        assert!(is_cancelled(&r), "{r:?}");
        assert_eq!(counter(&c), 1, "no attempt after the cancel");
    }
}

/// `Error::Timeout` names the limit that fired, even when a grace period stretched the run past
/// the other one. Unix: the child has to shrug off SIGTERM for the grace to be used up.
#[cfg(unix)]
#[tokio::test]
async fn the_timeout_error_names_the_limit_that_fired() {
    let cmd = child(&["ignore-term", ";", "print", "hi", ";", "sleep-forever"])
        .inactivity_timeout(Duration::from_millis(300))
        .timeout(Duration::from_millis(700))
        .timeout_grace(Duration::from_millis(1200));
    match cmd.run().await {
        Err(Error::Timeout { timeout, .. }) => assert_eq!(timeout, Duration::from_millis(300)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    match cmd.first_line(|l| l == "never").await {
        Err(Error::Timeout { timeout, .. }) => assert_eq!(timeout, Duration::from_millis(300)),
        other => panic!("expected a timeout, got {other:?}"),
    }
}
