//! The testing seam: every runner — the real one, a shared group, and each double — goes
//! through the same verbs with the same semantics; scripted streaming; record/replay
//! cassettes; `cli_client!`; tracing events.
//!
//! Run with `cargo test --all-features --test seam` (feature-gated parts are `cfg`'d).

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{copy_pk_child, pk_child, tempdir};
use processkit::{
    cli_client, Command, Error, JobRunner, Primitive, ProcessGroup, ProcessRunner,
    ProcessRunnerExt, RecordingRunner, Reply, Result, RetryPolicy, ScriptedRunner, Stdin,
    StreamExt,
};

fn child(args: &[&str]) -> Command {
    Command::new(pk_child()).args(args)
}

const OK: &[&str] = &["print", "hello", ";", "eprint", "note"];
const FAIL: &[&str] = &["eprint", "bad thing", ";", "exit", "3"];
const NO: &[&str] = &["exit", "1"];
const STREAM: &[&str] = &[
    "print",
    "booting",
    ";",
    "print",
    "ready on 8080",
    ";",
    "print",
    "serving",
];

/// The verb contract every runner must honour, driven through `ProcessRunnerExt` and
/// `ProcessRunner::start` only.
async fn verbs_contract(r: &impl ProcessRunner) {
    // run: trimmed stdout, success required.
    assert_eq!(r.run(&child(OK)).await.unwrap(), "hello");
    match r.run(&child(FAIL)).await {
        Err(Error::NonZeroExit { code, stderr, .. }) => {
            assert_eq!(code, 3);
            assert!(stderr.contains("bad thing"), "{stderr:?}");
        }
        other => panic!("expected NonZeroExit, got {other:?}"),
    }
    // output_string: everything captured; a non-zero exit is data.
    let out = r.output_string(&child(OK)).await.unwrap();
    assert_eq!(
        (out.code(), out.stdout().as_str(), out.stderr()),
        (Some(0), "hello\n", "note\n")
    );
    let out = r.output_string(&child(FAIL)).await.unwrap();
    assert_eq!(out.code(), Some(3));
    assert!(!out.success());
    // output_bytes (the primitive).
    let out = r.output_bytes(&child(OK)).await.unwrap();
    assert_eq!(out.stdout(), b"hello\n");
    // exit_code / probe.
    assert_eq!(r.exit_code(&child(FAIL)).await.unwrap(), 3);
    assert!(r.probe(&child(OK)).await.unwrap());
    assert!(!r.probe(&child(NO)).await.unwrap());
    assert!(matches!(
        r.probe(&child(FAIL)).await,
        Err(Error::NonZeroExit { code: 3, .. })
    ));
    // first_line.
    let line = r
        .first_line(&child(STREAM), |l| l.starts_with("ready"))
        .await
        .unwrap();
    assert_eq!(line.as_deref(), Some("ready on 8080"));
    assert_eq!(
        r.first_line(&child(OK), |l| l == "absent").await.unwrap(),
        None
    );
    // start: a live handle with the same streaming surface.
    let mut run = r.start(&child(STREAM)).await.unwrap();
    let ready = run
        .wait_for_line(|l| l.contains("ready"), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(ready, "ready on 8080");
    let rest: Vec<String> = run.stdout_lines().collect().await;
    assert_eq!(rest, ["serving"]);
    let (code, stderr) = run.finish_streamed().await.unwrap();
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
}

/// A script answering exactly the contract's commands, as pk-child would.
fn contract_script() -> ScriptedRunner {
    let p = pk_child();
    let argv = |a: &[&str]| {
        let mut v = vec![p.to_string_lossy().into_owned()];
        v.extend(a.iter().map(|s| s.to_string()));
        v
    };
    ScriptedRunner::new()
        .on(argv(OK), Reply::ok("hello\n").with_stderr("note\n"))
        .on(argv(FAIL), Reply::fail(3, "bad thing\n"))
        .on(argv(NO), Reply::fail(1, ""))
        .on(
            argv(STREAM),
            Reply::lines(["booting", "ready on 8080", "serving"]),
        )
}

#[tokio::test]
async fn job_runner_honours_the_contract() {
    verbs_contract(&JobRunner::new()).await;
}

#[tokio::test]
async fn shared_group_honours_the_contract() {
    let group = ProcessGroup::new().unwrap();
    verbs_contract(&&group).await;
    verbs_contract(&group).await;
}

#[tokio::test]
async fn scripted_runner_honours_the_contract() {
    verbs_contract(&contract_script()).await;
}

#[tokio::test]
async fn recording_runner_honours_the_contract_and_records() {
    let runner = RecordingRunner::new(JobRunner::new());
    verbs_contract(&runner).await;
    let calls = runner.calls();
    assert_eq!(calls.len(), 12);
    assert!(calls
        .iter()
        .all(|c| c.program == pk_child().to_string_lossy()));
    let starts = calls
        .iter()
        .filter(|c| c.primitive == Primitive::Start)
        .count();
    assert_eq!(starts, 3, "two first_line calls and one start");

    // Routing facts: cwd, env names (never values), stdin.
    let dir = tempdir();
    runner.clear();
    let cmd = child(&["print", "x"])
        .current_dir(dir.path())
        .env("API_TOKEN", "s3cret-value")
        .env_remove("HOME")
        .stdin(Stdin::from_string("input"));
    runner.run(&cmd).await.unwrap();
    let call = runner.only_call();
    assert_eq!(call.args_str(), ["print", "x"]);
    assert_eq!(call.cwd.as_deref(), Some(dir.path()));
    assert_eq!(call.env_names, ["API_TOKEN", "HOME"]);
    assert!(call.has_env("API_TOKEN") && call.has_stdin && call.has_flag("x"));
    assert!(!format!("{call:?}").contains("s3cret-value"));
    assert_eq!(call.primitive, Primitive::OutputBytes);
}

#[tokio::test]
async fn recording_runner_over_a_double_counts_retries() {
    let script = ScriptedRunner::new().on_sequence(
        ["tool", "sync"],
        [Reply::timeout(), Reply::timeout(), Reply::ok("synced\n")],
    );
    let runner = RecordingRunner::new(script);
    let cmd = Command::new("tool")
        .arg("sync")
        .timeout(Duration::from_secs(5))
        .retry(
            RetryPolicy::new(5)
                .backoff(Duration::from_millis(1), 1.0)
                .jitter(false),
        );
    let out = runner.output_string(&cmd).await.unwrap();
    assert_eq!((out.stdout().as_str(), out.attempts()), ("synced\n", 3));
    assert_eq!(runner.len(), 3, "one invocation per attempt");
}

#[tokio::test]
async fn scripted_miss_is_a_clear_error_listing_the_script() {
    let runner = ScriptedRunner::new()
        .on(["git", "status"], Reply::ok(""))
        .on_prefix(["git", "log"], Reply::ok(""))
        .when(|c| c.get_program() == "jj", Reply::ok(""));
    let err = runner
        .run(&Command::new("git").args(["push", "--force"]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
    assert_eq!(err.program(), "git");
    let msg = err.to_string();
    for needle in [
        "git push --force",
        "`git status`",
        "`git log ...`",
        "`when` predicate",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
    }
    // A miss is never retried.
    let cmd = Command::new("git").arg("fetch").retry(RetryPolicy::new(5));
    assert!(matches!(
        runner.output_string(&cmd).await,
        Err(Error::InvalidInput { .. })
    ));
    // Exact means exact; a prefix is element-wise.
    assert!(runner
        .run(&Command::new("git").args(["status", "-s"]))
        .await
        .is_err());
    assert!(runner
        .run(&Command::new("git").args(["log", "-n", "1"]))
        .await
        .is_ok());
    assert!(runner.run(&Command::new("git").arg("logs")).await.is_err());
    // The program matches by file name.
    assert!(runner
        .run(&Command::new("/usr/bin/git").arg("status"))
        .await
        .is_ok());
    assert_eq!(runner.unused(), ["a `when` predicate"]);
}

#[tokio::test]
async fn scripted_sequences_handlers_and_spawn_failures() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let runner = ScriptedRunner::new()
        .on_sequence(["probe"], [Reply::fail(1, ""), Reply::ok("up\n")])
        .on(["missing"], Reply::not_found())
        .on(["sig"], Reply::signalled(Some(9)))
        .fallback(Reply::lines(["a", "b"]));
    assert!(!runner.probe(&Command::new("probe")).await.unwrap());
    assert!(runner.probe(&Command::new("probe")).await.unwrap());
    assert!(
        runner.probe(&Command::new("probe")).await.unwrap(),
        "the last reply repeats"
    );
    assert!(matches!(
        runner.run(&Command::new("missing")).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        runner.run(&Command::new("sig")).await,
        Err(Error::Signalled { signal: 9, .. })
    ));
    // Line handlers run on the same pumps.
    let cmd =
        Command::new("anything").on_stdout_line(move |l| sink.lock().unwrap().push(l.to_owned()));
    assert_eq!(runner.run(&cmd).await.unwrap(), "a\nb");
    assert_eq!(*seen.lock().unwrap(), ["a", "b"]);
    assert_eq!(runner.answered(), 6);
}

#[tokio::test(start_paused = true)]
async fn scripted_start_drives_wait_for_line() {
    let runner = ScriptedRunner::new().on(
        ["server", "serve"],
        Reply::lines(["booting", "migrating", "listening on 8080", "GET /"])
            .with_stderr("warn: dev mode\n")
            .with_line_delay(Duration::from_millis(100)),
    );
    let mut run = runner
        .start(&Command::new("server").arg("serve"))
        .await
        .unwrap();
    assert_eq!(run.pid(), 0);
    // Too short a deadline: not ready yet, and the run is not killed.
    let early = run
        .wait_for_line(|l| l.contains("listening"), Duration::from_millis(150))
        .await;
    assert!(matches!(early, Err(Error::NotReady { .. })), "{early:?}");
    let line = run
        .wait_for_line(|l| l.contains("listening"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(line, "listening on 8080");
    let rest: Vec<String> = run.stdout_lines().collect().await;
    assert_eq!(rest, ["GET /"]);
    let (code, stderr) = run.finish_streamed().await.unwrap();
    assert_eq!((code, stderr.as_str()), (Some(0), "warn: dev mode\n"));
}

/// The inactivity timeout runs on tokio's clock like everything else: under a paused clock it
/// is exact and instant, and steady output keeps it from firing.
#[tokio::test(start_paused = true)]
async fn inactivity_timeout_is_exact_under_a_paused_clock() {
    let steady = ScriptedRunner::new().fallback(
        Reply::lines(["1", "2", "3", "4", "5", "6"]).with_line_delay(Duration::from_secs(3)),
    );
    let r = steady
        .output_string(&Command::new("tick").inactivity_timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(
        !r.timed_out(),
        "a line every 3 s never leaves 5 s of silence"
    );
    assert_eq!(r.stdout().lines().count(), 6);

    let silent = ScriptedRunner::new().fallback(Reply::pending());
    let started = tokio::time::Instant::now();
    let r = silent
        .output_string(&Command::new("quiet").inactivity_timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(r.timed_out());
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_secs(5) && idle < Duration::from_millis(5100),
        "{idle:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn scripted_pending_obeys_kill_and_timeout() {
    let runner = ScriptedRunner::new()
        .fallback(Reply::lines(["listening"]).with_exit_delay(Duration::from_secs(3600)));
    // A long-lived scripted server: ready, then killed by the caller.
    let mut run = runner.start(&Command::new("srv")).await.unwrap();
    run.wait_for_line(|l| l == "listening", Duration::from_secs(1))
        .await
        .unwrap();
    assert!(!run.has_exited());
    run.kill().await.unwrap();
    assert_eq!(run.wait().await.unwrap(), None, "killed: no exit code");

    // The command's timeout bounds a scripted run exactly like a real one.
    let pending = ScriptedRunner::new().fallback(Reply::pending());
    let cmd = Command::new("hang").timeout(Duration::from_secs(2));
    let out = pending.output_string(&cmd).await.unwrap();
    assert!(out.timed_out() && out.code().is_none());
    let err = pending.run(&cmd).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { timeout, .. } if timeout == Duration::from_secs(2)));
    // A scripted timeout reply reports the command's own deadline too.
    let t = ScriptedRunner::new().fallback(Reply::timeout());
    let err = t
        .exit_code(&Command::new("x").timeout(Duration::from_secs(7)))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { timeout, .. } if timeout == Duration::from_secs(7)));
}

#[cfg(feature = "cancellation")]
#[tokio::test]
async fn scripted_pending_obeys_cancellation() {
    use processkit::CancellationToken;
    let token = CancellationToken::new();
    let runner = Arc::new(ScriptedRunner::new().fallback(Reply::pending()));
    let job = tokio::spawn({
        let (runner, token) = (runner.clone(), token.child_token());
        async move { runner.run(&Command::new("long-job").cancel_on(token)).await }
    });
    tokio::task::yield_now().await;
    token.cancel();
    let r = tokio::time::timeout(Duration::from_secs(10), job)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, Err(Error::Cancelled { .. })), "{r:?}");
    // Already cancelled: nothing starts.
    let r = runner
        .start(&Command::new("x").cancel_on(token.clone()))
        .await;
    assert!(matches!(r, Err(Error::Cancelled { .. })));
}

// ---------------------------------------------------------------------------------------------
// cli_client!

cli_client!(
    /// A typed `git` wrapper, as in the spec.
    pub struct Git => "git"
);

impl<R: ProcessRunner> Git<R> {
    async fn head(&self, dir: &Path) -> Result<String> {
        self.core
            .run(self.core.command_in(dir, ["rev-parse", "HEAD"]))
            .await
    }

    async fn is_clean(&self, dir: &Path) -> Result<bool> {
        self.core
            .probe(self.core.command_in(dir, ["diff", "--quiet"]))
            .await
    }

    async fn branches(&self) -> Result<Vec<String>> {
        let out = self
            .core
            .run(self.core.command(["branch", "--format=%(refname:short)"]))
            .await?;
        Ok(out.lines().map(str::to_owned).collect())
    }
}

#[tokio::test]
async fn cli_client_wrapper_with_a_scripted_runner() {
    let script = ScriptedRunner::new()
        .on(["git", "rev-parse", "HEAD"], Reply::ok("0123abcd\n"))
        .on(["git", "diff", "--quiet"], Reply::fail(1, ""))
        .on(
            ["git", "branch", "--format=%(refname:short)"],
            Reply::lines(["main", "topic"]),
        );
    let git = Git::with_runner(RecordingRunner::new(script))
        .default_env("GIT_TERMINAL_PROMPT", "0")
        .default_timeout(Duration::from_secs(30));
    let repo = Path::new("/no/such/repo"); // never touched: nothing is spawned
    assert_eq!(git.head(repo).await.unwrap(), "0123abcd");
    assert!(!git.is_clean(repo).await.unwrap());
    assert_eq!(git.branches().await.unwrap(), ["main", "topic"]);

    let calls = git.core.runner().calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].args_str(), ["rev-parse", "HEAD"]);
    assert_eq!(calls[0].cwd.as_deref(), Some(repo));
    assert!(calls
        .iter()
        .all(|c| c.program == "git" && c.has_env("GIT_TERMINAL_PROMPT")));
    assert_eq!(calls[2].cwd, None);
    // The default timeout is on every built command.
    assert_eq!(
        git.core.command(["x"]).get_timeout(),
        Some(Duration::from_secs(30))
    );

    // The real-runner constructor exists and names the program.
    let real = Git::new();
    assert_eq!(real.core().program(), "git");
}

#[tokio::test]
async fn cli_client_default_timeout_applies_to_foreign_commands() {
    let client = processkit::CliClient::with_runner(
        "hang",
        ScriptedRunner::new().fallback(Reply::pending()),
    )
    .default_timeout(Duration::from_millis(50));
    // A command the client did not build still gets the client's deadline.
    let err = client.run(&Command::new("hang")).await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
}

#[cfg(feature = "cancellation")]
#[tokio::test]
async fn cli_client_default_cancel_on_cancels_in_flight_commands() {
    use processkit::{CancellationToken, CliClient};
    let token = CancellationToken::new();
    // The spec's usage compiles.
    let _gh = CliClient::new("gh").default_cancel_on(token.child_token());

    let git = Arc::new(
        Git::with_runner(ScriptedRunner::new().fallback(Reply::pending()))
            .default_cancel_on(token.child_token()),
    );
    let dir = tempdir();
    let job = tokio::spawn({
        let (git, dir) = (git.clone(), dir.path().to_owned());
        async move { git.head(&dir).await }
    });
    // A command not built by the client is covered as well.
    let foreign = tokio::spawn({
        let git = git.clone();
        async move {
            git.core
                .output_string(Command::new("git").arg("fetch"))
                .await
        }
    });
    tokio::task::yield_now().await;
    token.cancel();
    let r = tokio::time::timeout(Duration::from_secs(10), job)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, Err(Error::Cancelled { .. })), "{r:?}");
    let r = tokio::time::timeout(Duration::from_secs(10), foreign)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, Err(Error::Cancelled { .. })), "{r:?}");

    // With a real program and the token already cancelled: nothing is spawned.
    let real = CliClient::new(pk_child()).default_cancel_on(token.child_token());
    assert!(matches!(
        real.run(real.command(["sleep-forever"])).await,
        Err(Error::Cancelled { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// MockRunner

#[cfg(feature = "mock")]
#[tokio::test]
async fn mock_runner_honours_the_contract() {
    use processkit::{MockRunner, ProcessResult};
    let p = pk_child().to_string_lossy().into_owned();
    let mut mock = MockRunner::new();
    let prog = p.clone();
    mock.expect_output_bytes()
        .withf(move |cmd| cmd.get_program().to_string_lossy() == prog)
        .times(9)
        .returning(|cmd| {
            let args: Vec<String> = cmd
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let program = cmd.get_program().to_string_lossy().into_owned();
            Ok(if args == OK {
                ProcessResult::new_bytes(program, 0, "hello\n", "note\n")
            } else if args == FAIL {
                ProcessResult::new_bytes(program, 3, "", "bad thing\n")
            } else {
                ProcessResult::new_bytes(program, 1, "", "")
            })
        });
    // A live handle for `start`: a canned reply played through the scripted pumps.
    mock.expect_start().times(3).returning(|cmd| {
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let reply = if args == STREAM {
            Reply::lines(["booting", "ready on 8080", "serving"])
        } else {
            Reply::ok("hello\n").with_stderr("note\n")
        };
        reply.start(cmd)
    });
    verbs_contract(&mock).await;
}

// ---------------------------------------------------------------------------------------------
// Record / replay

#[cfg(feature = "record")]
/// A double refuses the input production refuses (so a test cannot pass on a command that
/// would fail for real), but never touches the file system: a missing working directory is
/// fine for a double, as the README's `CliClient` example needs.
#[tokio::test]
async fn doubles_refuse_what_production_refuses_and_stay_hermetic() {
    let runner = ScriptedRunner::new().fallback(Reply::ok("x"));
    let bad = [
        Command::new("tool").timeout(Duration::ZERO),
        Command::new("tool").inactivity_timeout(Duration::ZERO),
        Command::new("tool").arg("a\0b"),
        Command::new("tool").env("A=B", "1"),
        Command::new(""),
    ];
    for cmd in &bad {
        assert!(
            matches!(runner.run(cmd).await, Err(Error::InvalidInput { .. })),
            "{cmd:?}"
        );
        assert!(
            matches!(
                JobRunner::new().run(cmd).await,
                Err(Error::InvalidInput { .. })
            ),
            "{cmd:?}"
        );
        assert!(matches!(
            runner.start(cmd).await,
            Err(Error::InvalidInput { .. })
        ));
    }
    let elsewhere = Command::new("tool").current_dir("/no/such/dir/for/a/double");
    assert_eq!(runner.run(&elsewhere).await.unwrap(), "x");
}

mod record {
    use super::*;
    use processkit::{Cassette, RecordReplayRunner};
    use proptest::prelude::*;

    #[tokio::test]
    async fn record_then_replay_honours_the_contract() {
        let dir = tempdir();
        let path = dir.path().join("fixtures").join("contract.json");
        let rec = RecordReplayRunner::record(&path, JobRunner::new());
        assert!(rec.is_recording());
        verbs_contract(&rec).await;
        rec.save().unwrap();
        let replay = RecordReplayRunner::replay(&path).unwrap();
        assert!(!replay.is_recording());
        verbs_contract(&replay).await;
    }

    /// The proof that replay spawns nothing: the recorded program is deleted from disk before
    /// the replay, and a real spawn of it fails.
    #[tokio::test]
    async fn replay_spawns_nothing_and_never_stores_env_values() {
        let dir = tempdir();
        let tool = dir
            .path()
            .join(if cfg!(windows) { "tool.exe" } else { "tool" });
        let made = copy_pk_child(&tool);
        let cassette = dir.path().join("tool.json");
        let cmd = Command::new(&tool)
            .args(["print", "deployed"])
            .env("API_TOKEN", "hunter2-secret-value");

        let rec = RecordReplayRunner::record(&cassette, RecordingRunner::new(JobRunner::new()));
        let live = rec.run(&cmd).await.unwrap();
        assert_eq!(live, "deployed");
        rec.save().unwrap();
        drop(rec);
        for f in made {
            std::fs::remove_file(f).unwrap();
        }

        let text = std::fs::read_to_string(&cassette).unwrap();
        assert!(
            !text.contains("hunter2"),
            "env value leaked into the cassette: {text}"
        );
        assert!(text.contains("\"API_TOKEN\""), "env names are kept: {text}");
        assert!(text.contains("\"version\": 1"));
        // Only the cassette is left: the temporary file was renamed into place.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["tool.json"]);

        // A real run of the deleted program fails...
        assert!(matches!(cmd.run().await, Err(Error::NotFound { .. })));
        // ...while replay answers, with a different env value even (env is not matched).
        let replay = RecordReplayRunner::replay(&cassette).unwrap();
        let cmd2 = Command::new(&tool)
            .args(["print", "deployed"])
            .env("API_TOKEN", "other");
        assert_eq!(replay.run(&cmd2).await.unwrap(), live);
        // A replayed start streams the recorded stdout through the real pumps.
        let mut run = replay.start(&cmd2).await.unwrap();
        let line = run
            .wait_for_line(|l| l == "deployed", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(line, live);
        assert_eq!(run.wait().await.unwrap(), Some(0));
    }

    /// "Is the tool installed?" fallbacks replay as they ran: a missing program is recorded
    /// and comes back as `Error::NotFound`, for the one-shot verbs and for `start` alike.
    #[tokio::test]
    async fn a_missing_program_replays_as_not_found() {
        let dir = tempdir();
        let cassette = dir.path().join("missing.json");
        let missing = dir.path().join("no-such-tool");
        let cmd = Command::new(&missing).arg("--version");
        let rec = RecordReplayRunner::record(&cassette, JobRunner::new());
        assert!(matches!(rec.run(&cmd).await, Err(Error::NotFound { .. })));
        assert!(matches!(rec.start(&cmd).await, Err(Error::NotFound { .. })));
        assert_eq!(rec.len(), 2);
        rec.save().unwrap();
        let text = std::fs::read_to_string(&cassette).unwrap();
        assert!(text.contains("\"not_found\": true"), "{text}");

        let replay = RecordReplayRunner::replay(&cassette).unwrap();
        match replay.output_string(&cmd).await {
            Err(Error::NotFound { program }) => assert!(program.contains("no-such-tool")),
            other => panic!("expected NotFound, got {other:?}"),
        }
        assert!(matches!(
            replay.start(&cmd).await,
            Err(Error::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn repeated_invocations_replay_in_order_then_repeat_the_last() {
        let dir = tempdir();
        let counter = dir.path().join("count");
        let cassette = dir.path().join("seq.json");
        let cmd = child(&["counter", counter.to_str().unwrap()]);
        {
            let rec = RecordReplayRunner::record(&cassette, JobRunner::new());
            for want in ["1", "2", "3"] {
                assert_eq!(rec.run(&cmd).await.unwrap(), want);
            }
            // No save(): dropping the recorder saves on a best-effort basis.
        }
        std::fs::remove_file(&counter).unwrap();
        let replay = RecordReplayRunner::replay(&cassette).unwrap();
        assert_eq!(replay.len(), 3);
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(replay.run(&cmd).await.unwrap());
        }
        assert_eq!(got, ["1", "2", "3", "3", "3"]);
        assert!(!counter.exists(), "replay ran nothing");
    }

    #[tokio::test]
    async fn misses_are_strict_errors_naming_the_invocation_and_file() {
        let dir = tempdir();
        let cassette = dir.path().join("m.json");
        let rec =
            RecordReplayRunner::record(&cassette, ScriptedRunner::new().fallback(Reply::ok("x\n")));
        rec.run(&Command::new("git").arg("status")).await.unwrap();
        rec.save().unwrap();
        let replay = RecordReplayRunner::replay(&cassette).unwrap();
        assert_eq!(
            replay
                .run(&Command::new("git").arg("status"))
                .await
                .unwrap(),
            "x"
        );

        let misses = [
            Command::new("git").arg("log"),
            Command::new("git").arg("status").current_dir(dir.path()),
            Command::new("git")
                .arg("status")
                .stdin(Stdin::from_string("in")),
            Command::new("hg").arg("status"),
        ];
        for cmd in &misses {
            let err = replay.output_string(cmd).await.unwrap_err();
            assert!(matches!(err, Error::InvalidInput { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(&cmd.command_line()), "{msg}");
            assert!(msg.contains(&cassette.display().to_string()), "{msg}");
        }
        // A miss under a retry policy is not retried (and spawns nothing).
        let retried = Command::new("git").arg("log").retry(RetryPolicy::new(3));
        assert!(replay.run(&retried).await.is_err());
    }

    #[tokio::test]
    async fn corrupt_missing_and_future_cassettes_are_clear_errors() {
        let dir = tempdir();
        let check = |name: &str, body: Option<&str>, kind: std::io::ErrorKind, needle: &str| {
            let path = dir.path().join(name);
            if let Some(b) = body {
                std::fs::write(&path, b).unwrap();
            }
            let err = RecordReplayRunner::replay(&path).unwrap_err();
            let msg = err.to_string();
            match &err {
                Error::Io { source, .. } => assert_eq!(source.kind(), kind, "{msg}"),
                other => panic!("expected Error::Io, got {other:?}"),
            }
            assert!(
                msg.contains(&path.display().to_string()),
                "file not named: {msg}"
            );
            assert!(msg.contains(needle), "{needle:?} missing: {msg}");
        };
        use std::io::ErrorKind::{InvalidData, NotFound};
        check("missing.json", None, NotFound, "reading cassette");
        check(
            "garbage.json",
            Some("{\"version\": 1, \"entries\": [ {\"prog"),
            InvalidData,
            "invalid JSON",
        );
        check(
            "array.json",
            Some("[1, 2]"),
            InvalidData,
            "expected a JSON object",
        );
        check(
            "noversion.json",
            Some("{\"entries\": []}"),
            InvalidData,
            "no `version`",
        );
        check(
            "future.json",
            Some("{\"version\": 99, \"entries\": []}"),
            InvalidData,
            "version 99",
        );
        check(
            "badentry.json",
            Some("{\"version\": 1, \"entries\": [{\"program\": 5}]}"),
            InvalidData,
            "corrupt cassette",
        );
        // A valid empty cassette loads.
        std::fs::write(
            dir.path().join("empty.json"),
            "{\"version\": 1, \"entries\": []}",
        )
        .unwrap();
        assert!(RecordReplayRunner::replay(dir.path().join("empty.json"))
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn timed_out_runs_replay_as_timeouts() {
        let dir = tempdir();
        let cassette = dir.path().join("t.json");
        let cmd =
            child(&["print", "partial", ";", "sleep-forever"]).timeout(Duration::from_millis(300));
        let rec = RecordReplayRunner::record(&cassette, JobRunner::new());
        let live = rec.output_string(&cmd).await.unwrap();
        assert!(live.timed_out());
        rec.save().unwrap();
        let replay = RecordReplayRunner::replay(&cassette).unwrap();
        let again = replay.output_string(&cmd).await.unwrap();
        assert!(again.timed_out() && again.code().is_none());
        assert_eq!(again.stdout(), live.stdout());
        assert!(replay.run(&cmd).await.unwrap_err().is_timeout());
    }

    /// Any text a command can carry: every char but NUL (the OS cannot take one in an
    /// argument or a variable, and the runners, doubles included, refuse it up front).
    fn arb_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..40)
            .prop_map(|c| c.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Anything recorded replays identically, and the file survives a parse/print cycle.
        #[test]
        fn cassettes_round_trip(
            args in proptest::collection::vec(arb_text(), 0..4),
            stdout in proptest::collection::vec(any::<u8>(), 0..200),
            stderr in arb_text(),
            code in any::<i32>(),
            env_value in arb_text(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let dir = tempdir();
                let path = dir.path().join("p.json");
                let reply = Reply::bytes(stdout.clone()).with_stderr(stderr.clone()).with_code(code);
                let cmd = Command::new("prog").args(&args).env("VAR", &env_value);
                let rec = RecordReplayRunner::record(&path, ScriptedRunner::new().fallback(reply));
                let live = rec.output_bytes(&cmd).await.unwrap();
                rec.save().unwrap();
                let text = std::fs::read(&path).unwrap();
                let parsed = Cassette::from_json(&text).unwrap();
                prop_assert_eq!(parsed.to_json().into_bytes(), text);
                prop_assert_eq!(parsed.len(), 1);
                let replayed = RecordReplayRunner::replay(&path).unwrap().output_bytes(&cmd).await.unwrap();
                prop_assert_eq!(replayed.stdout(), live.stdout());
                prop_assert_eq!(replayed.stdout(), &stdout);
                prop_assert_eq!(replayed.stderr(), stderr.as_str());
                prop_assert_eq!(replayed.code(), Some(code));
                Ok::<(), TestCaseError>(())
            })?;
        }

        /// The parser never panics, whatever the bytes.
        #[test]
        fn cassette_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Cassette::from_json(&bytes);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tracing

#[cfg(feature = "tracing")]
mod tracing_events {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        /// Events emitted on this thread. Each test runs on a current-thread runtime, so every
        /// task of its runs (pumps, child task, watchdog) emits here.
        static CAPTURED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    struct ThreadBuf;

    impl std::io::Write for ThreadBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            CAPTURED.with(|c| c.borrow_mut().extend_from_slice(b));
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Installs one global test subscriber (a scoped `set_default` races with callsite
    /// interest caching when other tests emit concurrently) and clears this thread's capture.
    fn capture() {
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(|| ThreadBuf)
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
        });
        CAPTURED.with(|c| c.borrow_mut().clear());
    }

    fn captured() -> String {
        CAPTURED.with(|c| String::from_utf8_lossy(&c.borrow()).into_owned())
    }

    fn events(text: &str, step: &str) -> Vec<String> {
        let needle = format!("event=\"{step}\"");
        text.lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn one_event_per_lifecycle_step_and_no_argv_or_env() {
        capture();

        // spawn + exit (+ teardown of the private group).
        let secret_arg = "argument-secret-123";
        let ok = child(&["print", secret_arg]).env("SECRET_ENV", "env-secret-456");
        JobRunner::new().run(&ok).await.unwrap();
        // timeout.
        let slow = child(&["sleep-forever"]).timeout(Duration::from_millis(100));
        let out = JobRunner::new().output_string(&slow).await.unwrap();
        assert!(out.timed_out());
        // retry: fail twice then succeed.
        let dir = tempdir();
        let count = dir.path().join("n");
        let flaky = child(&["fail-until", count.to_str().unwrap(), "3"]).retry(
            RetryPolicy::new(5)
                .backoff(Duration::from_millis(1), 1.0)
                .jitter(false)
                .retry_if(
                    |o| matches!(o, processkit::AttemptOutcome::Finished(r) if r.code() != Some(0)),
                ),
        );
        JobRunner::new().run(&flaky).await.unwrap();
        // A scripted run emits the same events with pid 0.
        ScriptedRunner::new()
            .fallback(Reply::ok(""))
            .run(&Command::new("scripted-tool"))
            .await
            .unwrap();

        let text = captured();
        assert!(!text.contains(secret_arg), "argv leaked: {text}");
        assert!(
            !text.contains("env-secret-456") && !text.contains("SECRET_ENV"),
            "env leaked: {text}"
        );
        // As the event shows it: Debug-quoted (a Windows path's backslashes are escaped).
        let program = format!("{:?}", pk_child().to_string_lossy());

        let spawns = events(&text, "spawn");
        assert_eq!(spawns.len(), 1 + 1 + 3 + 1, "{text}");
        assert!(spawns.iter().all(|l| l.contains("pid=")));
        assert!(spawns
            .iter()
            .any(|l| l.contains("pid=0") && l.contains("scripted-tool")));
        let exits = events(&text, "exit");
        assert_eq!(exits.len(), spawns.len(), "one exit per spawn: {text}");
        assert!(exits
            .iter()
            .all(|l| l.contains("duration_ms=") && l.contains("outcome=")));
        assert!(
            exits[0].contains(&program) && exits[0].contains("outcome=exited 0"),
            "{}",
            exits[0]
        );
        assert!(exits[1].contains("outcome=timed out"), "{}", exits[1]);
        let timeouts = events(&text, "timeout");
        assert_eq!(timeouts.len(), 1, "{text}");
        assert!(timeouts[0].contains(&program) && timeouts[0].contains("INFO"));
        let retries = events(&text, "retry");
        assert_eq!(retries.len(), 2, "{text}");
        assert!(retries[0].contains("attempt=1") && retries[0].contains("outcome=exited 1"));
        let teardowns = events(&text, "teardown");
        assert_eq!(teardowns.len(), 1 + 1 + 3, "one per private group: {text}");
        assert!(events(&text, "cancel").is_empty());
    }

    #[tokio::test]
    async fn pipeline_events_carry_no_argv() {
        capture();
        let secret_arg = "pipeline-secret-789";
        let chain = child(&["print", secret_arg]) | child(&["cat"]);
        assert_eq!(chain.run().await.unwrap(), secret_arg);
        let text = captured();
        assert!(text.contains("pipeline started"), "{text}");
        assert!(!text.contains(secret_arg), "argv leaked: {text}");
    }

    #[cfg(feature = "cancellation")]
    #[tokio::test]
    async fn cancel_event() {
        capture();
        let token = processkit::CancellationToken::new();
        let mut run = JobRunner::new()
            .start(&child(&["sleep-forever"]).cancel_on(token.clone()))
            .await
            .unwrap();
        token.cancel();
        assert!(matches!(run.wait().await, Err(Error::Cancelled { .. })));
        let text = captured();
        let cancels = events(&text, "cancel");
        assert_eq!(cancels.len(), 1, "{text}");
        assert!(
            events(&text, "exit")[0].contains("outcome=cancelled"),
            "{text}"
        );
    }
}

#[test]
fn doubles_are_runners() {
    fn assert_runner<R: ProcessRunner + 'static>() {}
    assert_runner::<ScriptedRunner>();
    assert_runner::<RecordingRunner<JobRunner>>();
    assert_runner::<RecordingRunner<Arc<ScriptedRunner>>>();
    assert_runner::<Box<dyn ProcessRunner>>();
    #[cfg(feature = "mock")]
    assert_runner::<processkit::MockRunner>();
    #[cfg(feature = "record")]
    assert_runner::<processkit::RecordReplayRunner>();
}
