//! Pipelines without a shell: wiring, pipefail attribution, unchecked stages, the end rule,
//! timeouts, stdin, stderr draining, live handles and runners.
mod common;

use common::*;
use processkit::{
    BoxFuture, Command, Error, OutputMode, Pipeline, ProcessGroup, ProcessResult, ProcessRunner,
    RunningProcess, Stdin, StreamExt,
};
use std::time::Duration;

/// A generous bound so a broken pipeline fails the test instead of hanging it.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn child(args: &[&str]) -> Command {
    Command::new(pk_child()).args(args)
}

fn pk_name() -> String {
    pk_child().to_string_lossy().into_owned()
}

async fn guarded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, f)
        .await
        .expect("the pipeline hung")
}

// `printf 'b\na\nb\nc\nb\n' | sort | uniq -c` with real sort/uniq (POSIX tools; Windows has
// neither with these semantics).
#[cfg(unix)]
#[tokio::test]
async fn three_stages_with_sort_and_uniq() {
    let producer = child(&[
        "print", "b", ";", "print", "a", ";", "print", "b", ";", "print", "c", ";", "print", "b",
    ]);
    let out = guarded(
        producer
            .pipe(Command::new("sort"))
            .pipe(Command::new("uniq").arg("-c"))
            .output_string(),
    )
    .await
    .unwrap();
    assert!(out.success(), "{out}");
    let rows: Vec<Vec<&str>> = out
        .stdout()
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows, vec![vec!["1", "a"], vec!["3", "b"], vec!["1", "c"]]);
    let st = out.stages();
    assert_eq!(st.len(), 3);
    assert_eq!(st[1].program, "sort");
    assert_eq!(st[2].program, "uniq");
    assert!(st.iter().all(|s| s.success()), "{st:?}");
    assert_eq!(
        out.program(),
        "uniq",
        "all succeeded: the last stage is reported"
    );
}

#[tokio::test]
async fn three_pk_child_stages_pass_bytes_through_unchanged() {
    let out = guarded(
        child(&["lines", "1000", "40"])
            .pipe(child(&["cat"]))
            .pipe(child(&["cat"]))
            .output_bytes(),
    )
    .await
    .unwrap();
    let direct = child(&["lines", "1000", "40"])
        .output_bytes()
        .await
        .unwrap();
    assert_eq!(out.code(), Some(0));
    assert_eq!(out.stdout().len(), 41 * 1000);
    assert_eq!(out.stdout(), direct.stdout());
}

#[tokio::test]
async fn bitor_operator_builds_the_same_chain() {
    let a = || child(&["lines", "3"]);
    let b = || child(&["cat"]);
    let c = || child(&["count-stdin"]);

    let piped = a().pipe(b()).pipe(c());
    let ored = a() | b() | c();
    let right = a() | (b() | c());
    let both = (a() | b()) | (c() | child(&["cat"]));
    assert_eq!(ored.stages().len(), 3);
    assert_eq!(right.stages().len(), 3);
    assert_eq!(both.stages().len(), 4);
    assert_eq!(ored.command_line(), piped.command_line());
    assert_eq!(right.command_line(), piped.command_line());

    let expect = format!("stdin-bytes={}", 3 * "line 00000001\n".len());
    assert_eq!(guarded(piped.run()).await.unwrap(), expect);
    assert_eq!(guarded(ored.run()).await.unwrap(), expect);
    assert_eq!(guarded(right.run()).await.unwrap(), expect);
    assert_eq!(guarded(both.run()).await.unwrap(), expect);
}

#[tokio::test]
async fn failing_first_stage_is_reported_with_code_program_and_stderr() {
    let p = child(&[
        "print",
        "partial",
        ";",
        "eprint",
        "boom: disk on fire",
        ";",
        "exit",
        "3",
    ]) | child(&["cat"]).env("STAGE", "second")
        | child(&["eprint", "last stage talks", ";", "cat"]);
    let r = guarded(p.output_string()).await.unwrap();
    // stdout is the last stage's.
    assert_eq!(r.stdout(), "partial\n");
    // Code, stderr and program come from the first stage that failed.
    assert_eq!(r.code(), Some(3));
    assert!(!r.success());
    assert_eq!(r.program(), pk_name());
    assert_eq!(r.stderr(), "boom: disk on fire\n");
    assert_eq!(r.args()[0], "print", "the reported stage's own arguments");
    // PIPESTATUS-like per-stage view.
    let codes: Vec<_> = r.stages().iter().map(|s| s.code).collect();
    assert_eq!(codes, vec![Some(3), Some(0), Some(0)]);
    assert_eq!(r.stages()[2].stderr, "last stage talks\n");
    assert_eq!(r.stages()[0].stderr, "boom: disk on fire\n");

    let e = guarded(p.run()).await.unwrap_err();
    match &e {
        Error::NonZeroExit {
            program,
            code,
            stderr,
            ..
        } => {
            assert_eq!(program, &pk_name());
            assert_eq!(*code, 3);
            assert!(stderr.contains("disk on fire"), "{stderr}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(guarded(p.exit_code()).await.unwrap(), 3);
}

// The failing stage must be named by program: a real `sort` after a failing pk-child.
#[cfg(unix)]
#[tokio::test]
async fn failure_names_the_failing_program_not_the_last() {
    let r =
        guarded((child(&["print", "x", ";", "exit", "9"]) | Command::new("sort")).output_string())
            .await
            .unwrap();
    assert_eq!(r.program(), pk_name());
    assert_eq!(r.code(), Some(9));
    let r = guarded(
        // The producer writes nothing: it cannot die of a broken pipe before sort fails.
        (child(&["exit", "0"]) | Command::new("sort").arg("--no-such-flag")).output_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.program(), "sort");
    assert_ne!(r.code(), Some(0));
    assert!(!r.stderr().is_empty());
}

#[tokio::test]
async fn run_requires_every_checked_stage_to_succeed() {
    // A failing middle stage fails run() although the last stage succeeded. (The producer
    // writes nothing, so it cannot die of a broken pipe and be blamed first.)
    let e = guarded(
        (child(&["exit", "0"])
            | child(&["eprint", "middle broke", ";", "exit", "4"])
            | child(&["cat"]))
        .run(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.exit_code(), Some(4));
    assert!(e.stderr().unwrap().contains("middle broke"));

    // A failing last stage too.
    let e = guarded((child(&["print", "a"]) | child(&["cat", ";", "exit", "5"])).run())
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), Some(5));

    // All good: trimmed stdout of the last stage.
    let out = guarded((child(&["print", "  hi  "]) | child(&["cat"])).run())
        .await
        .unwrap();
    assert_eq!(out, "hi");

    // probe on the pipefail code.
    assert!(guarded((child(&["print", "a"]) | child(&["cat"])).probe())
        .await
        .unwrap());
    assert!(!guarded((child(&["exit", "1"]) | child(&["cat"])).probe())
        .await
        .unwrap());
    let e = guarded((child(&["exit", "2"]) | child(&["cat"])).probe())
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), Some(2));
}

#[tokio::test]
async fn unchecked_stages_are_skipped_but_a_checked_failure_wins() {
    // An unchecked failing producer: the chain succeeds.
    let p = child(&["print", "a", ";", "exit", "2"]).unchecked() | child(&["cat"]);
    let r = guarded(p.output_string()).await.unwrap();
    assert_eq!(r.code(), Some(0));
    assert!(r.stages()[0].unchecked);
    assert_eq!(r.stages()[0].code, Some(2));
    assert_eq!(guarded(p.run()).await.unwrap(), "a");

    // A checked failure after an unchecked one is the one reported.
    let p = child(&["exit", "2"]).unchecked()
        | child(&["eprint", "real problem", ";", "exit", "3"])
        | child(&["cat"]);
    let r = guarded(p.output_string()).await.unwrap();
    assert_eq!(r.code(), Some(3));
    assert_eq!(r.stderr(), "real problem\n");

    // An unchecked last stage (think `grep` finding nothing): run() succeeds, the combined
    // code is still its real code.
    let p = child(&["print", "a"]) | child(&["cat", ";", "exit", "1"]).unchecked();
    assert_eq!(guarded(p.run()).await.unwrap(), "a");
    assert_eq!(guarded(p.exit_code()).await.unwrap(), 1);
}

// Real `yes` and `head` (POSIX tools).
#[cfg(unix)]
#[tokio::test]
async fn yes_into_head_with_unchecked_yes() {
    let p = Command::new("yes").unchecked() | Command::new("head").args(["-n", "1"]);
    let r = guarded(p.output_string()).await.unwrap();
    assert_eq!(r.stdout(), "y\n");
    assert_eq!(r.code(), Some(0));
    assert_eq!(r.program(), "head");
    // `yes` died of SIGPIPE (or was killed by the end rule): not a clean exit, but unchecked.
    assert_eq!(r.stages()[0].code, None);
    assert!(r.stages()[0].signal.is_some());
    assert_eq!(guarded(p.run()).await.unwrap(), "y");

    // Checked, the producer's death is a failure, as under `set -o pipefail`.
    let checked = Command::new("yes") | Command::new("head").args(["-n", "1"]);
    let e = guarded(checked.run()).await.unwrap_err();
    assert!(
        matches!(e, Error::Signalled { ref program, .. } if program == "yes"),
        "{e:?}"
    );
}

// `head` is a POSIX tool; the producer is pk-child (which sees EPIPE and exits non-zero).
#[cfg(unix)]
#[tokio::test]
async fn endless_pk_child_producer_into_head() {
    let p = child(&["bytes", "1G"]).unchecked() | Command::new("head").args(["-c", "10"]);
    let r = guarded(p.output_bytes()).await.unwrap();
    assert_eq!(r.stdout().as_slice(), b"xxxxxxxxxx");
    assert_eq!(r.code(), Some(0));
    assert_ne!(r.stages()[0].code, Some(0), "the producer was cut short");
}

#[tokio::test]
async fn stdin_feeds_the_first_stage() {
    let text = "one\ntwo\nthree\n";
    let p = child(&["cat"]).stdin(Stdin::from_string(text))
        // A later stage's own stdin setting is ignored: it reads the pipe.
        | child(&["echo-stdin"]).stdin(Stdin::from_string("ignored\n"));
    let r = guarded(p.output_string()).await.unwrap();
    assert_eq!(r.stdout(), "got: one\ngot: two\ngot: three\neof\n");

    // A large input (more than a pipe buffer) through three stages.
    let big = vec![b'z'; 3 * 1024 * 1024];
    let p = child(&["cat"]).stdin(Stdin::from_bytes(big.clone()))
        | child(&["cat"])
        | child(&["count-stdin"]);
    assert_eq!(
        guarded(p.run()).await.unwrap(),
        format!("stdin-bytes={}", big.len())
    );
}

#[tokio::test]
async fn chain_timeout_kills_every_stage_and_descendant() {
    let dir = tempdir();
    let f = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let (p0, p1, p2, gc) = (f("0.pid"), f("1.pid"), f("2.pid"), f("gc.pid"));
    let p = (child(&["pidfile", &p0, ";", "sleep-forever"])
        | child(&["spawn", "quiet", &gc, ";", "pidfile", &p1, ";", "cat"])
        | child(&["pidfile", &p2, ";", "cat"]))
    .timeout(Duration::from_millis(500));
    let mut running = p.start().await.unwrap();
    let pids = running.pids();
    // The deadline is enforced by wait/finish, so reading the pid files first is race-free.
    let from_files: Vec<u32> = [&p0, &p1, &p2]
        .iter()
        .map(|p| read_pid_file(std::path::Path::new(p), Duration::from_secs(20)))
        .collect();
    assert_eq!(pids, from_files);
    let grandchild = read_pid_file(std::path::Path::new(&gc), Duration::from_secs(20));
    assert!(pid_alive(grandchild));

    assert_eq!(guarded(running.wait()).await.unwrap(), None);
    let r = guarded(running.finish()).await.unwrap();
    assert!(r.timed_out());
    assert_eq!(r.code(), None);
    assert!(
        r.stages().iter().all(|s| s.code.is_none()),
        "{:?}",
        r.stages()
    );
    let mut all = pids.clone();
    all.push(grandchild);
    assert_dead_within(&all, Duration::from_secs(10));
}

#[tokio::test]
async fn chain_timeout_through_the_output_verbs() {
    let p = (child(&["print", "early", ";", "sleep-forever"]) | child(&["cat"]))
        .timeout(Duration::from_millis(300));
    let r = guarded(p.output_string()).await.unwrap();
    assert!(r.timed_out());
    assert_eq!(r.code(), None);
    assert_eq!(r.stdout(), "early\n", "output before the deadline is kept");
    let e = guarded(p.run()).await.unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    let e = guarded(p.exit_code()).await.unwrap_err();
    assert!(e.is_timeout(), "{e:?}");

    let e = (child(&["cat"]) | child(&["cat"]))
        .timeout(Duration::ZERO)
        .run()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
}

#[tokio::test]
async fn noisy_stderr_in_every_stage_never_stalls() {
    let two_mib = 2 * 1024 * 1024;
    let p = child(&["ebytes", "2M", ";", "print", "done"])
        | child(&["ebytes", "2M", ";", "cat"])
        | child(&["cat"]);
    let r = guarded(p.output_string()).await.unwrap();
    assert_eq!(r.code(), Some(0));
    assert_eq!(r.stdout(), "done\n");
    assert_eq!(r.stages()[0].stderr.len(), two_mib);
    assert_eq!(r.stages()[1].stderr.len(), two_mib);
    assert_eq!(r.stages()[2].stderr.len(), 0);
}

#[tokio::test]
async fn sixty_four_mib_through_three_stages() {
    let p = child(&["bytes", "64M"]) | child(&["cat"]) | child(&["count-stdin"]);
    assert_eq!(
        guarded(p.run()).await.unwrap(),
        format!("stdin-bytes={}", 64 * 1024 * 1024)
    );
}

#[tokio::test]
async fn end_rule_kills_a_producer_that_outlives_the_last_stage() {
    // The producer never writes and never exits; the consumer exits at once.
    let p = child(&["sleep-forever"]).unchecked() | child(&["print", "bye"]);
    let running = p.start().await.unwrap();
    let pids = running.pids();
    let r = guarded(running.finish()).await.unwrap();
    assert_eq!(r.code(), Some(0));
    assert!(r.stages()[0].code.is_none(), "{:?}", r.stages());
    assert_dead_within(&pids, Duration::from_secs(10));

    // Checked, the killed producer is what pipefail reports.
    let r = guarded((child(&["sleep-forever"]) | child(&["print", "bye"])).output_string())
        .await
        .unwrap();
    assert_eq!(r.code(), None);
    assert_eq!(r.stdout(), "bye\n");
}

#[tokio::test]
async fn live_handle_streams_stdout_and_writes_stdin() {
    let p = child(&["echo-stdin"]).keep_stdin_open() | child(&["cat"]);
    let mut running = p.start().await.unwrap();
    assert_eq!(running.pids().len(), 2);
    let mut stdin = running.standard_input().expect("first stage stdin");
    let mut lines = running.stdout_lines();
    stdin.write_line("hello").await.unwrap();
    assert_eq!(guarded(lines.next()).await.as_deref(), Some("got: hello"));
    drop(stdin);
    assert_eq!(guarded(lines.next()).await.as_deref(), Some("eof"));
    assert_eq!(guarded(lines.next()).await, None);
    assert_eq!(guarded(running.wait()).await.unwrap(), Some(0));
    assert!(running.has_exited());
}

#[tokio::test]
async fn dropping_a_live_pipeline_kills_every_stage() {
    let running = (child(&["sleep-forever"]) | child(&["cat"]) | child(&["cat"]))
        .start()
        .await
        .unwrap();
    let pids = running.pids();
    assert!(pids.iter().all(|&p| pid_alive(p)));
    drop(running);
    assert_dead_within(&pids, Duration::from_secs(10));
}

#[tokio::test]
async fn kill_stops_the_chain() {
    let mut running = (child(&["sleep-forever"]) | child(&["cat"]))
        .start()
        .await
        .unwrap();
    let pids = running.pids();
    guarded(running.kill()).await.unwrap();
    assert_dead_within(&pids, Duration::from_secs(10));
}

#[tokio::test]
async fn a_process_group_runner_holds_every_stage() {
    let group = ProcessGroup::new().unwrap();
    let p = child(&["print", "via group"]) | child(&["cat"]);
    let r = guarded(p.with_runner(&group).output_string())
        .await
        .unwrap();
    assert_eq!(r.stdout(), "via group\n");
    assert_eq!(r.stages().len(), 2);

    let running = (child(&["sleep-forever"]) | child(&["cat"]))
        .with_runner(&group)
        .start()
        .await
        .unwrap();
    let pids = running.pids();
    // Dropping the group kills the stages even while the handle lives.
    drop(group);
    assert_dead_within(&pids, Duration::from_secs(10));
    drop(running);
}

#[tokio::test]
async fn a_stage_that_cannot_start_fails_the_chain_and_leaves_nothing() {
    let dir = tempdir();
    let pidfile = dir.path().join("0.pid");
    let p = child(&["pidfile", &pidfile.to_string_lossy(), ";", "sleep-forever"])
        | Command::new("processkit-no-such-program-xyz")
        | child(&["cat"]);
    let e = guarded(p.output_string()).await.unwrap_err();
    assert!(
        matches!(e, Error::NotFound { ref program } if program == "processkit-no-such-program-xyz"),
        "{e:?}"
    );
    // If the first stage got as far as writing its pid, it must be dead now.
    if let Ok(s) = std::fs::read_to_string(&pidfile) {
        if let Ok(pid) = s.trim().parse::<u32>() {
            assert_dead_within(&[pid], Duration::from_secs(10));
        }
    }
}

#[tokio::test]
async fn last_stage_stdout_mode_is_honoured() {
    let r = guarded(
        (child(&["print", "x"]) | child(&["cat"]).stdout(OutputMode::Null)).output_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.code(), Some(0));
    assert_eq!(r.stdout(), "");
}

/// A double: knows two programs; never spawns anything.
struct Double;

impl ProcessRunner for Double {
    fn output_bytes<'a>(
        &'a self,
        cmd: &'a Command,
    ) -> BoxFuture<'a, processkit::Result<ProcessResult<Vec<u8>>>> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        Box::pin(async move {
            Ok(match program.as_str() {
                "produce" => ProcessResult::new_bytes(program, 0, "data\n", ""),
                "fail" => ProcessResult::new_bytes(program, 6, "", "double failure"),
                _ => ProcessResult::new_bytes(program, 127, "", "unknown"),
            })
        })
    }
    fn start<'a>(&'a self, cmd: &'a Command) -> BoxFuture<'a, processkit::Result<RunningProcess>> {
        Box::pin(async move {
            Err(Error::NotFound {
                program: cmd.get_program().to_string_lossy().into_owned(),
            })
        })
    }
}

#[tokio::test]
async fn any_runner_runs_a_pipeline_through_the_seam() {
    let p = Command::new("produce") | Command::new("fail") | Command::new("produce");
    let r = p.with_runner(&Double).output_string().await.unwrap();
    assert_eq!(r.code(), Some(6));
    assert_eq!(r.program(), "fail");
    assert_eq!(r.stderr(), "double failure");
    assert_eq!(r.stdout(), "data\n");
    assert_eq!(r.stages().len(), 3);
    let e = p.with_runner(&Double).run().await.unwrap_err();
    assert_eq!(e.exit_code(), Some(6));
    assert_eq!(
        (Command::new("produce") | Command::new("produce"))
            .with_runner(&Double)
            .run()
            .await
            .unwrap(),
        "data"
    );
}

#[test]
fn pipeline_is_plain_data() {
    let p: Pipeline = Command::new("a").arg("x y") | Command::new("b");
    assert_eq!(p.to_string(), "a 'x y' | b");
    assert_eq!(p.get_timeout(), None);
    let p = p.timeout(Duration::from_secs(3));
    let q = p.clone() | (Command::new("c") | Command::new("d")).timeout(Duration::from_secs(1));
    assert_eq!(q.get_timeout(), Some(Duration::from_secs(1)));
    assert_eq!(q.stages().len(), 4);
    assert_eq!(Pipeline::from(Command::new("solo")).stages().len(), 1);

    // The verbs' futures can be spawned onto a multi-threaded runtime.
    fn assert_send<T: Send>(_: &T) {}
    let group = ProcessGroup::new().unwrap();
    assert_send(&q.run());
    assert_send(&q.output_bytes());
    assert_send(&q.start());
    assert_send(&q.with_runner(&group).exit_code());
    assert_send(&q.with_runner(&Double).probe());
}

/// Cancelling a stage's token mid-run kills the chain and the pipeline reports `Cancelled`.
#[cfg(feature = "cancellation")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)] // read_pid_file blocks its thread
async fn cancelled_stage_cancels_the_pipeline() {
    let dir = tempdir();
    let pf = dir.path().join("consumer.pid");
    let token = processkit::CancellationToken::new();
    let chain = Command::new(pk_child())
        .args(["print", "x", ";", "sleep-forever"])
        .cancel_on(token.clone())
        | Command::new(pk_child()).args(["pidfile", pf.to_str().unwrap(), ";", "cat"]);
    let run = tokio::spawn(async move { chain.output_string().await });
    let consumer = read_pid_file(&pf, std::time::Duration::from_secs(10));
    token.cancel();
    let e = run.await.unwrap().unwrap_err();
    assert!(matches!(e, processkit::Error::Cancelled { .. }), "{e:?}");
    assert_dead_within(&[consumer], std::time::Duration::from_secs(5));
}

/// A cancelled stage whose descendant still holds the pipe open abandons the whole chain at
/// once (it used to leave the next stage waiting for an end-of-file that never came), and the
/// descendant dies with it.
#[cfg(feature = "cancellation")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)] // read_pid_file blocks its thread
async fn cancelling_a_stage_with_a_descendant_on_the_pipe_ends_the_chain() {
    let dir = tempdir();
    let gpf = dir.path().join("grandchild.pid");
    let token = processkit::CancellationToken::new();
    // `spawn bg` leaves a grandchild inheriting the stage's stdout: the pipe to `cat`.
    let chain = Command::new(pk_child())
        .args(["spawn", "bg", gpf.to_str().unwrap(), ";", "sleep-forever"])
        .cancel_on(token.clone())
        | Command::new(pk_child()).arg("cat");
    let run = tokio::spawn(async move { chain.output_string().await });
    let grandchild = read_pid_file(&gpf, std::time::Duration::from_secs(10));
    token.cancel();
    let e = tokio::time::timeout(std::time::Duration::from_secs(20), run)
        .await
        .expect("the chain did not end after its stage was cancelled")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&e, processkit::Error::Cancelled { program } if program.contains("pk-child")),
        "{e:?}"
    );
    assert_dead_within(&[grandchild], std::time::Duration::from_secs(5));
}

/// The same for a live chain: the stream of the last stage ends when a stage's token fires,
/// and `wait` reports `Cancelled`.
#[cfg(feature = "cancellation")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)] // read_pid_file blocks its thread
async fn cancelling_a_stage_ends_a_live_chains_stream() {
    use processkit::StreamExt;
    let dir = tempdir();
    let gpf = dir.path().join("grandchild.pid");
    let token = processkit::CancellationToken::new();
    let chain = Command::new(pk_child())
        .args([
            "print",
            "first",
            ";",
            "spawn",
            "bg",
            gpf.to_str().unwrap(),
            ";",
            "sleep-forever",
        ])
        .cancel_on(token.clone())
        | Command::new(pk_child()).arg("cat");
    let mut live = chain.start().await.unwrap();
    let mut lines = live.stdout_lines();
    assert_eq!(lines.next().await.as_deref(), Some("first"));
    let grandchild = read_pid_file(&gpf, std::time::Duration::from_secs(10));
    token.cancel();
    let rest = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next())
        .await
        .expect("the stream did not end after a stage was cancelled");
    assert_eq!(rest, None);
    let e = live.wait().await.unwrap_err();
    assert!(matches!(e, processkit::Error::Cancelled { .. }), "{e:?}");
    assert_dead_within(&[grandchild], std::time::Duration::from_secs(5));
}

/// Once the chain has exited its outcome is settled, as a single command's is once its child
/// exited: a token firing before `finish` is called changes nothing.
#[cfg(feature = "cancellation")]
#[tokio::test]
async fn a_token_firing_after_the_chain_exited_changes_nothing() {
    use processkit::StreamExt;
    let token = processkit::CancellationToken::new();
    let chain = Command::new(pk_child()).args(["print", "x"])
        | Command::new(pk_child()).arg("cat").cancel_on(token.clone());
    let mut live = chain.start().await.unwrap();
    let lines: Vec<String> = live.stdout_lines().collect().await;
    assert_eq!(lines, ["x"]);
    // The end of the stream is not the exit: wait for the exit itself.
    assert!(wait_until_async(std::time::Duration::from_secs(10), || live.has_exited()).await);
    token.cancel();
    let r = live.finish().await.unwrap();
    assert_eq!(r.code(), Some(0));
}

/// A token already cancelled on any stage, even a later one, spawns nothing at all: the chain
/// is refused before its first stage starts, for real runs and through doubles alike.
#[cfg(feature = "cancellation")]
#[tokio::test]
async fn a_pre_cancelled_later_stage_spawns_nothing() {
    let dir = tempdir();
    let pf = dir.path().join("first.pid");
    let token = processkit::CancellationToken::new();
    token.cancel();
    let chain =
        Command::new(pk_child()).args(["pidfile", pf.to_str().unwrap(), ";", "sleep-forever"])
            | Command::new(pk_child()).arg("cat").cancel_on(token.clone());
    let e = chain.output_string().await.unwrap_err();
    assert!(matches!(e, processkit::Error::Cancelled { .. }), "{e:?}");
    let Err(e) = chain.start().await else {
        panic!("a pre-cancelled chain started");
    };
    assert!(matches!(e, processkit::Error::Cancelled { .. }), "{e:?}");
    assert!(!pf.exists(), "the first stage was spawned");

    let double = processkit::ScriptedRunner::new().fallback(processkit::Reply::ok("x\n"));
    let e = chain
        .with_runner(&double)
        .output_string()
        .await
        .unwrap_err();
    assert!(matches!(e, processkit::Error::Cancelled { .. }), "{e:?}");
    assert_eq!(double.answered(), 0);
}
