//! Streaming and interactive I/O against real processes (the pk-child helper): line streams,
//! stdin conversations, readiness probes, `wait_any`, timeouts and teardown.
mod common;

use common::*;
use processkit::{
    wait_any, Command, Error, OutputLine, OutputStream, ProcessGroup, Stdin, StreamExt,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bound for anything that should finish promptly; a hang fails the test instead of
/// blocking the suite.
const LIMIT: Duration = Duration::from_secs(20);

fn child(args: &[&str]) -> Command {
    Command::new(pk_child()).args(args)
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {LIMIT:?}"),
    }
}

fn expected_lines(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("line {i:08}")).collect()
}

#[tokio::test]
async fn streams_2000_lines_in_order() {
    let mut run = child(&["lines", "2000"]).start().await.unwrap();
    let lines: Vec<String> = bounded("stream", run.stdout_lines().collect()).await;
    assert_eq!(lines.len(), 2000);
    assert_eq!(lines, expected_lines(2000));
    let (code, stderr) = bounded("finish", run.finish_streamed()).await.unwrap();
    assert_eq!(code, Some(0));
    assert_eq!(stderr, "");
}

#[tokio::test]
async fn stderr_is_collected_while_stdout_streams() {
    let mut run = child(&[
        "elines",
        "300",
        ";",
        "lines",
        "500",
        ";",
        "eprint",
        "last words",
        ";",
        "exit",
        "4",
    ])
    .start()
    .await
    .unwrap();
    let lines: Vec<String> = bounded("stream", run.stdout_lines().collect()).await;
    assert_eq!(lines, expected_lines(500));
    let (code, stderr) = bounded("finish", run.finish_streamed()).await.unwrap();
    assert_eq!(code, Some(4));
    let mut want = expected_lines(300).join("\n");
    want.push_str("\nlast words\n");
    assert_eq!(stderr, want);
}

#[tokio::test]
async fn stderr_lines_streams_stderr() {
    let mut run = child(&["eprint", "e1", ";", "print", "o1", ";", "eprint", "e2"])
        .start()
        .await
        .unwrap();
    let err: Vec<String> = bounded("stderr stream", run.stderr_lines().collect()).await;
    assert_eq!(err, ["e1", "e2"]);
    let out: Vec<String> = bounded("stdout stream", run.stdout_lines().collect()).await;
    assert_eq!(out, ["o1"]);
    let (code, stderr) = bounded("finish", run.finish_streamed()).await.unwrap();
    assert_eq!(code, Some(0));
    assert_eq!(stderr, "", "stderr went to the stream, not the capture");
}

#[tokio::test]
async fn interactive_conversation_over_stdin() {
    let mut run = child(&["echo-stdin"])
        .keep_stdin_open()
        .start()
        .await
        .unwrap();
    let mut stdin = run.standard_input().expect("stdin kept open");
    assert!(
        run.standard_input().is_none(),
        "the writer is handed out once"
    );
    let mut out = run.stdout_lines();

    stdin.write_line("hello").await.unwrap();
    stdin.flush().await.unwrap();
    assert_eq!(
        bounded("reply 1", out.next()).await.as_deref(),
        Some("got: hello")
    );

    stdin.write_all(b"second\r\nthird\n").await.unwrap();
    assert_eq!(
        bounded("reply 2", out.next()).await.as_deref(),
        Some("got: second")
    );
    assert_eq!(
        bounded("reply 3", out.next()).await.as_deref(),
        Some("got: third")
    );

    stdin.finish().await.unwrap();
    stdin.finish().await.unwrap(); // idempotent
    assert_eq!(bounded("eof", out.next()).await.as_deref(), Some("eof"));
    assert_eq!(bounded("end", out.next()).await, None);
    let e = stdin.write_line("too late").await.unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    let (code, _) = bounded("finish", run.finish_streamed()).await.unwrap();
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn from_lines_with_line_handlers() {
    let seen_out = Arc::new(Mutex::new(Vec::new()));
    let seen_err = Arc::new(Mutex::new(Vec::new()));
    let (o, e) = (seen_out.clone(), seen_err.clone());
    let input = tokio_stream::iter(vec![
        "banana".to_owned(),
        "apple".to_owned(),
        "cherry".to_owned(),
    ]);
    let r = child(&["echo-stdin", ";", "eprint", "done"])
        .stdin(Stdin::from_lines(input))
        .on_stdout_line(move |l| o.lock().unwrap().push(l.to_owned()))
        .on_stderr_line(move |l| e.lock().unwrap().push(l.to_owned()))
        .output_string()
        .await
        .unwrap();
    let want = ["got: banana", "got: apple", "got: cherry", "eof"];
    assert_eq!(*seen_out.lock().unwrap(), want);
    assert_eq!(*seen_err.lock().unwrap(), ["done"]);
    // The handler runs in addition to capture.
    assert_eq!(r.stdout(), "got: banana\ngot: apple\ngot: cherry\neof\n");
    assert_eq!(r.stderr(), "done\n");
}

#[tokio::test]
async fn line_handler_runs_while_streaming() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let mut run = child(&["lines", "50"])
        .on_stdout_line(move |l| s.lock().unwrap().push(l.to_owned()))
        .start()
        .await
        .unwrap();
    let streamed: Vec<String> = bounded("stream", run.stdout_lines().collect()).await;
    assert_eq!(streamed, expected_lines(50));
    assert_eq!(*seen.lock().unwrap(), expected_lines(50));
}

#[tokio::test]
async fn wait_for_line_returns_the_match_and_consumes_up_to_it() {
    let mut run = child(&[
        "print",
        "booting",
        ";",
        "print",
        "listening on 1234",
        ";",
        "print",
        "after",
        ";",
        "sleep-forever",
    ])
    .start()
    .await
    .unwrap();
    let line = run
        .wait_for_line(|l| l.contains("listening on"), LIMIT)
        .await
        .unwrap();
    assert_eq!(line, "listening on 1234");
    let mut rest = run.stdout_lines();
    assert_eq!(bounded("next", rest.next()).await.as_deref(), Some("after"));
    assert!(pid_alive(run.pid()));
    let pid = run.pid();
    bounded("kill", run.kill()).await.unwrap();
    assert!(!pid_alive(pid));
    assert_eq!(bounded("end", rest.next()).await, None);
}

#[tokio::test]
async fn wait_for_line_not_ready_when_child_exits() {
    let mut run = child(&["print", "nothing here", ";", "exit", "0"])
        .start()
        .await
        .unwrap();
    let e = bounded("probe", run.wait_for_line(|l| l == "ready", LIMIT))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotReady { .. }), "{e:?}");
    assert_eq!(bounded("wait", run.wait()).await.unwrap(), Some(0));
}

#[tokio::test]
async fn wait_for_line_not_ready_on_deadline_keeps_child_alive() {
    let mut run = child(&["print", "still booting", ";", "sleep-forever"])
        .start()
        .await
        .unwrap();
    let pid = run.pid();
    let e = run
        .wait_for_line(|l| l == "ready", Duration::from_millis(300))
        .await
        .unwrap_err();
    match &e {
        Error::NotReady { reason, .. } => assert!(reason.contains("within"), "{reason}"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(!run.has_exited());
    assert!(pid_alive(pid), "a missed probe must not kill the child");
    drop(run);
    assert_dead_within(&[pid], LIMIT);
}

#[tokio::test]
async fn wait_for_port_against_a_real_server() {
    let dir = tempdir();
    let portfile = dir.path().join("port");
    let mut run = child(&["delay-listen", "100", portfile.to_str().unwrap()])
        .start()
        .await
        .unwrap();
    let port = read_pid_file(&portfile, LIMIT);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    bounded("probe", run.wait_for_port(addr, LIMIT))
        .await
        .unwrap();
    // The server really answers.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    use tokio::io::AsyncReadExt as _;
    let mut chunk = [0u8; 16];
    while !buf.ends_with(b"\n") {
        let n = bounded("read", s.read(&mut chunk)).await.unwrap();
        assert!(n > 0, "server closed early");
        buf.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(buf, b"hello\n");
    // The banner is still on stdout: probes do not touch the pipes.
    let banner = run
        .wait_for_line(|l| l.starts_with("listening on"), LIMIT)
        .await
        .unwrap();
    assert_eq!(banner, format!("listening on {addr}"));
    let pid = run.pid();
    drop(run);
    assert_dead_within(&[pid], LIMIT);
}

#[tokio::test]
async fn wait_for_port_not_ready_when_child_exits_or_deadline_passes() {
    // Find a port with no listener: bind, note it, close it.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);

    let mut quitter = child(&["exit", "3"]).start().await.unwrap();
    let e = bounded("probe", quitter.wait_for_port(addr, LIMIT))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotReady { .. }), "{e:?}");

    let mut sleeper = child(&["sleep-forever"]).start().await.unwrap();
    let pid = sleeper.pid();
    let e = sleeper
        .wait_for_port(addr, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotReady { .. }), "{e:?}");
    assert!(pid_alive(pid), "a missed probe must not kill the child");
    bounded("kill", sleeper.kill()).await.unwrap();
    assert!(!pid_alive(pid));
}

#[tokio::test]
async fn wait_for_custom_check() {
    let dir = tempdir();
    let flag = dir.path().join("ready");
    let mut run = child(&[
        "sleep",
        "100",
        ";",
        "write-file",
        flag.to_str().unwrap(),
        "ok",
        ";",
        "sleep-forever",
    ])
    .start()
    .await
    .unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (f, c) = (flag.clone(), calls.clone());
    bounded(
        "probe",
        run.wait_for(
            move || {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let f = f.clone();
                async move { tokio::fs::metadata(&f).await.is_ok() }
            },
            LIMIT,
        ),
    )
    .await
    .unwrap();
    assert!(flag.exists());
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    // A check that never passes: NotReady, child alive.
    let e = run
        .wait_for(|| async { false }, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotReady { .. }), "{e:?}");
    assert!(pid_alive(run.pid()));
    bounded("kill", run.kill()).await.unwrap();
}

#[tokio::test]
async fn wait_any_picks_the_first_to_exit() {
    let mut slow = child(&["sleep-forever"]).start().await.unwrap();
    let mut fast = child(&["exit", "3"]).start().await.unwrap();
    let (idx, code) = bounded("race", wait_any(&mut [&mut slow, &mut fast]))
        .await
        .unwrap();
    assert_eq!((idx, code), (1, Some(3)));
    // Borrowed only: the loser is still alive and usable.
    assert!(pid_alive(slow.pid()));
    let pid = slow.pid();
    bounded("kill", slow.kill()).await.unwrap();
    assert!(!pid_alive(pid));
    let e = wait_any(&mut []).await.unwrap_err();
    assert!(matches!(e, Error::InvalidInput { .. }), "{e:?}");
}

#[tokio::test]
async fn timeout_ends_a_stream() {
    let dir = tempdir();
    let gc = dir.path().join("gc.pid");
    let mut run = child(&[
        "print",
        "hi",
        ";",
        "spawn",
        "bg",
        gc.to_str().unwrap(),
        ";",
        "print",
        "spawned",
        ";",
        "sleep-forever",
    ])
    .timeout(Duration::from_millis(500))
    .start()
    .await
    .unwrap();
    let pid = run.pid();
    let lines: Vec<String> = bounded("stream", run.stdout_lines().collect()).await;
    assert_eq!(lines, ["hi", "spawned"]);
    let gc_pid = read_pid_file(&gc, LIMIT);
    let (code, _) = bounded("finish", run.finish_streamed()).await.unwrap();
    assert_eq!(code, None, "a run ended by its timeout has no exit code");
    assert_dead_within(&[pid, gc_pid], LIMIT);
}

#[tokio::test]
async fn stderr_burst_during_stdout_streaming_does_not_stall() {
    let mut run = child(&["lines", "1000", ";", "ebytes", "5M", ";", "lines", "1000"])
        .start()
        .await
        .unwrap();
    let lines: Vec<String> = bounded("stream", run.stdout_lines().collect()).await;
    assert_eq!(lines.len(), 2000);
    let (code, stderr) = bounded("finish", run.finish_streamed()).await.unwrap();
    assert_eq!(code, Some(0));
    assert_eq!(stderr.len(), 5 * 1024 * 1024);
    assert!(stderr
        .lines()
        .all(|l| l.len() == 127 && l.bytes().all(|b| b == b'x')));
}

#[tokio::test]
async fn invalid_utf8_mid_stream_does_not_end_it() {
    // "a\n", "b\xffc\r\n", then "tail" with no newline.
    let mut run = child(&[
        "print",
        "a",
        ";",
        "hex",
        "62ff630d0a",
        ";",
        "printn",
        "tail",
    ])
    .start()
    .await
    .unwrap();
    let lines: Vec<String> = bounded("stream", run.stdout_lines().collect()).await;
    assert_eq!(lines, ["a", "b\u{fffd}c", "tail"]);
}

#[tokio::test]
async fn grandchild_holding_stdout_does_not_stall_the_stream() {
    let dir = tempdir();
    let gc = dir.path().join("gc.pid");
    let mut run = child(&[
        "spawn",
        "bg",
        gc.to_str().unwrap(),
        ";",
        "print",
        "parent done",
        ";",
        "exit",
        "0",
    ])
    .start()
    .await
    .unwrap();
    let lines: Vec<String> = bounded("stream", run.stdout_lines().collect()).await;
    assert_eq!(lines, ["parent done"]);
    let gc_pid = read_pid_file(&gc, LIMIT);
    let (code, stderr) = bounded("finish", run.finish_streamed()).await.unwrap();
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    assert_dead_within(&[gc_pid], LIMIT);
}

#[tokio::test]
async fn dropping_the_handle_kills_the_tree() {
    let dir = tempdir();
    let gc = dir.path().join("gc.pid");
    let mut run = child(&[
        "spawn",
        "quiet",
        gc.to_str().unwrap(),
        ";",
        "print",
        "up",
        ";",
        "sleep-forever",
    ])
    .start()
    .await
    .unwrap();
    let pid = run.pid();
    let up = run.wait_for_line(|l| l == "up", LIMIT).await.unwrap();
    assert_eq!(up, "up");
    let gc_pid = read_pid_file(&gc, LIMIT);
    assert!(pid_alive(pid) && pid_alive(gc_pid));
    drop(run);
    assert_dead_within(&[pid, gc_pid], LIMIT);
}

#[tokio::test]
async fn all_lines_interleaves_in_arrival_order() {
    let dir = tempdir();
    let (f1, f2) = (dir.path().join("f1"), dir.path().join("f2"));
    let mut run = child(&[
        "print",
        "o1",
        ";",
        "wait-file",
        f1.to_str().unwrap(),
        ";",
        "eprint",
        "e1",
        ";",
        "wait-file",
        f2.to_str().unwrap(),
        ";",
        "print",
        "o2",
        ";",
        "eprint",
        "e2",
    ])
    .start()
    .await
    .unwrap();
    let mut all = run.all_lines();
    let line = |stream, s: &str| OutputLine {
        stream,
        line: s.to_owned(),
    };
    assert_eq!(
        bounded("o1", all.next()).await,
        Some(line(OutputStream::Stdout, "o1"))
    );
    std::fs::write(&f1, "").unwrap();
    assert_eq!(
        bounded("e1", all.next()).await,
        Some(line(OutputStream::Stderr, "e1"))
    );
    std::fs::write(&f2, "").unwrap();
    let rest: Vec<OutputLine> = bounded("rest", all.collect()).await;
    // o2 and e2 are written back to back: each keeps its tag, order across pipes is the read
    // order.
    let mut tags: Vec<_> = rest.iter().map(|l| (l.stream, l.line.as_str())).collect();
    tags.sort_by_key(|t| t.1);
    assert_eq!(
        tags,
        [(OutputStream::Stderr, "e2"), (OutputStream::Stdout, "o2")]
    );
    assert!(
        run.stdout_lines().next().await.is_none(),
        "all_lines took stdout"
    );
    let (code, stderr) = bounded("finish", run.finish_streamed()).await.unwrap();
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
}

#[tokio::test]
async fn shared_group_handle_leaves_siblings_alone() {
    let group = ProcessGroup::new().unwrap();
    let mut a = group
        .start(&child(&["print", "a", ";", "sleep-forever"]))
        .await
        .unwrap();
    let mut b = group
        .start(&child(&["print", "b", ";", "sleep-forever"]))
        .await
        .unwrap();
    assert_eq!(a.wait_for_line(|_| true, LIMIT).await.unwrap(), "a");
    let (pa, pb) = (a.pid(), b.pid());
    bounded("kill a", a.kill()).await.unwrap();
    assert!(!pid_alive(pa));
    assert!(
        pid_alive(pb),
        "killing one handle of a shared group spares its siblings"
    );
    drop(a);
    assert!(
        pid_alive(pb),
        "dropping one handle of a shared group spares its siblings"
    );
    assert_eq!(b.wait_for_line(|_| true, LIMIT).await.unwrap(), "b");
    drop(group);
    assert_dead_within(&[pb], LIMIT);
    drop(b);
}

#[tokio::test]
async fn wait_discards_unread_stdout() {
    // 20 MB nobody reads: `wait` must not block on the full pipe.
    let mut run = child(&["bytes", "20M", ";", "exit", "5"])
        .start()
        .await
        .unwrap();
    assert_eq!(bounded("wait", run.wait()).await.unwrap(), Some(5));
}

#[tokio::test]
async fn wait_for_line_in_a_shared_group_gives_up_soon_after_exit() {
    // The grandchild keeps stdout open and, in a shared group, may not be killed by the
    // handle: the probe must still notice that the child exited instead of waiting LIMIT out.
    let dir = tempdir();
    let gc = dir.path().join("gc.pid");
    let group = ProcessGroup::new().unwrap();
    let mut run = group
        .start(&child(&[
            "spawn",
            "bg",
            gc.to_str().unwrap(),
            ";",
            "print",
            "not it",
            ";",
            "exit",
            "0",
        ]))
        .await
        .unwrap();
    let e = tokio::time::timeout(LIMIT / 2, run.wait_for_line(|l| l == "ready", LIMIT))
        .await
        .expect("the probe waited for the whole deadline after the child exited")
        .unwrap_err();
    match &e {
        Error::NotReady { reason, .. } => assert!(reason.contains("exited"), "{reason}"),
        other => panic!("unexpected {other:?}"),
    }
    let gc_pid = read_pid_file(&gc, LIMIT);
    assert!(
        pid_alive(gc_pid),
        "a shared-group handle leaves other members alone"
    );
    drop(run);
    drop(group);
    assert_dead_within(&[gc_pid], LIMIT);
}

#[test]
fn handles_and_streams_are_send() {
    fn send<T: Send + 'static>() {}
    send::<processkit::RunningProcess>();
    send::<processkit::LineStream>();
    send::<processkit::AllLines>();
    send::<processkit::StdinWriter>();
    fn unpin<T: Unpin>() {}
    unpin::<processkit::LineStream>();
    unpin::<processkit::AllLines>();
}

#[tokio::test]
async fn finishing_after_a_probe_discards_the_rest_of_stdout() {
    // A server that keeps printing after its banner: `wait` / `finish_streamed` after
    // `wait_for_line` must not block on the unread rest.
    for finish in [false, true] {
        let mut run = child(&["print", "ready", ";", "bytes", "20M", ";", "exit", "7"])
            .start()
            .await
            .unwrap();
        run.wait_for_line(|l| l == "ready", LIMIT).await.unwrap();
        let code = if finish {
            bounded("finish", run.finish_streamed()).await.unwrap().0
        } else {
            bounded("wait", run.wait()).await.unwrap()
        };
        assert_eq!(code, Some(7));
    }
}

/// A `Stdin::from_lines` source that stays open and idle (an open channel, a file tail) and
/// reports, through `held`'s count, whether the run still owns it.
fn idle_source(held: &Arc<()>) -> Stdin {
    let held = held.clone();
    Stdin::from_lines(tokio_stream::pending::<String>().map(move |l| {
        let _ = &held;
        l
    }))
}

/// Waits until only the test holds `held`: the run has dropped its stdin source.
async fn assert_source_released(held: &Arc<()>) {
    assert!(
        wait_until_async(LIMIT, || Arc::strong_count(held) == 1).await,
        "the stdin source is still held after the run ended"
    );
}

#[tokio::test]
async fn an_idle_stdin_source_does_not_outlive_the_child() {
    let held = Arc::new(());
    let r = bounded(
        "output_string with an idle stdin source",
        child(&["print", "hi"])
            .stdin(idle_source(&held))
            .output_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.code(), Some(0));
    assert_eq!(r.stdout(), "hi\n");
    assert_source_released(&held).await;

    let out = bounded(
        "run with an idle stdin source",
        child(&["print", "hi"]).stdin(idle_source(&held)).run(),
    )
    .await
    .unwrap();
    assert_eq!(out, "hi");
    assert_source_released(&held).await;
}

#[tokio::test]
async fn an_idle_stdin_source_does_not_hold_up_a_timeout() {
    let held = Arc::new(());
    let r = bounded(
        "a timed-out run with an idle stdin source",
        child(&["print", "up", ";", "sleep-forever"])
            .stdin(idle_source(&held))
            .timeout(Duration::from_millis(300))
            .output_string(),
    )
    .await
    .unwrap();
    assert!(r.timed_out());
    assert_eq!(r.stdout(), "up\n");
    assert_source_released(&held).await;
}

#[tokio::test]
async fn an_idle_stdin_source_does_not_hold_up_a_pipeline() {
    let held = Arc::new(());
    let r = bounded(
        "a pipeline whose first stage has an idle stdin source",
        child(&["print", "a"])
            .stdin(idle_source(&held))
            .pipe(child(&["cat"]))
            .output_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.code(), Some(0));
    assert_eq!(r.stdout(), "a\n");
    assert_source_released(&held).await;

    let r = bounded(
        "a timed-out pipeline with an idle stdin source",
        child(&["sleep-forever"])
            .stdin(idle_source(&held))
            .pipe(child(&["cat"]))
            .timeout(Duration::from_millis(300))
            .output_string(),
    )
    .await
    .unwrap();
    assert!(r.timed_out());
    assert_source_released(&held).await;
}

#[tokio::test]
async fn dropping_a_started_run_releases_its_stdin_source() {
    let held = Arc::new(());
    let run = child(&["sleep-forever"])
        .stdin(idle_source(&held))
        .start()
        .await
        .unwrap();
    let pid = run.pid();
    assert_eq!(
        Arc::strong_count(&held),
        2,
        "the feeder owns the source while running"
    );
    drop(run);
    assert_source_released(&held).await;
    assert_dead_within(&[pid], LIMIT);
}

#[tokio::test]
async fn a_scripted_run_with_an_idle_stdin_source_completes() {
    use processkit::{ProcessRunnerExt, Reply, ScriptedRunner};
    let held = Arc::new(());
    let runner = ScriptedRunner::new().on(["tool"], Reply::ok("done\n"));
    let out = bounded(
        "a scripted run with an idle stdin source",
        runner.run(&Command::new("tool").stdin(idle_source(&held))),
    )
    .await
    .unwrap();
    assert_eq!(out, "done");
    assert_source_released(&held).await;
}

/// A `keep_stdin_open` writer nobody took is closed by the finishing calls (as std's
/// `Child::wait` does), so a child reading stdin to its end finishes instead of waiting forever;
/// a one-shot verb, which hands out no writer, sees an empty stdin.
#[tokio::test]
async fn an_untaken_stdin_writer_is_closed_when_waiting() {
    let mut run = child(&["count-stdin"])
        .keep_stdin_open()
        .start()
        .await
        .unwrap();
    assert_eq!(bounded("wait", run.wait()).await.unwrap(), Some(0));

    let run = child(&["count-stdin"])
        .keep_stdin_open()
        .start()
        .await
        .unwrap();
    let (code, _) = bounded("finish_streamed", run.finish_streamed())
        .await
        .unwrap();
    assert_eq!(code, Some(0));

    let r = bounded(
        "output_string",
        child(&["count-stdin"]).keep_stdin_open().output_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.stdout(), "stdin-bytes=0\n");

    let r = bounded(
        "a pipeline's output_string",
        child(&["count-stdin"])
            .keep_stdin_open()
            .pipe(child(&["cat"]))
            .output_string(),
    )
    .await
    .unwrap();
    assert_eq!(r.stdout(), "stdin-bytes=0\n");

    let mut live = child(&["count-stdin"])
        .keep_stdin_open()
        .pipe(child(&["cat"]))
        .start()
        .await
        .unwrap();
    assert_eq!(
        bounded("a live pipeline's wait", live.wait())
            .await
            .unwrap(),
        Some(0)
    );

    // A writer that was taken stays the caller's: the child reads what it is sent.
    let mut run = child(&["count-stdin"])
        .keep_stdin_open()
        .start()
        .await
        .unwrap();
    let mut stdin = run.standard_input().unwrap();
    stdin.write_all(b"12345").await.unwrap();
    stdin.finish().await.unwrap();
    let mut lines = run.stdout_lines();
    assert_eq!(
        bounded("line", lines.next()).await.as_deref(),
        Some("stdin-bytes=5")
    );
}

/// A line handler that panics panics the caller (on its own task), instead of leaving the
/// verb waiting forever for a pump that died; the child's tree is gone either way.
#[tokio::test]
async fn a_panicking_line_handler_panics_the_caller() {
    fn boom(l: &str) {
        if l == "line 00000500" {
            panic!("handler bug");
        }
    }
    async fn panic_message<T: Send + 'static>(
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> String {
        let err = match bounded("a run with a panicking handler", tokio::spawn(f)).await {
            Ok(_) => panic!("the handler's panic was swallowed"),
            Err(e) => e,
        };
        assert!(err.is_panic(), "{err:?}");
        (*err.into_panic().downcast::<&str>().unwrap()).to_owned()
    }
    let cmd = child(&["lines", "1000"]).on_stdout_line(boom);
    let msg = panic_message(async move { cmd.output_string().await }).await;
    assert_eq!(msg, "handler bug");
    let cmd = child(&["elines", "1000"]).on_stderr_line(boom);
    let msg = panic_message(async move { cmd.run().await }).await;
    assert_eq!(msg, "handler bug");
    let chain = child(&["lines", "1000"]).pipe(child(&["cat"]).on_stdout_line(boom));
    let msg = panic_message(async move { chain.output_string().await }).await;
    assert_eq!(msg, "handler bug");
    let msg = panic_message(async {
        let mut run = child(&["lines", "1000"])
            .on_stdout_line(boom)
            .start()
            .await
            .unwrap();
        // The stream still delivers every line: only the handler stopped.
        let lines: Vec<String> = run.stdout_lines().collect().await;
        assert_eq!(lines.len(), 1000);
        run.finish_streamed().await
    })
    .await;
    assert_eq!(msg, "handler bug");

    // A panic on the very last line is not lost by a `wait` / `finish_streamed` called at
    // once: they let a handler's pump reach end-of-file first. Repeated: it was a race.
    for _ in 0..20 {
        let cmd = child(&["print", "line 00000500"]).on_stdout_line(boom);
        let msg = panic_message(async move {
            let mut run = cmd.start().await.unwrap();
            run.wait().await
        })
        .await;
        assert_eq!(msg, "handler bug");
        let cmd = child(&["eprint", "line 00000500"]).on_stderr_line(boom);
        let msg =
            panic_message(async move { cmd.start().await.unwrap().finish_streamed().await }).await;
        assert_eq!(msg, "handler bug");
    }
}

/// A `Stdin::from_lines` stream that panics cuts stdin short; the run does not pass that off as
/// a clean end of input: the panic reaches the caller.
#[tokio::test]
async fn a_panicking_stdin_stream_panics_the_caller() {
    let input = tokio_stream::iter(0..10).map(|i| {
        if i == 3 {
            panic!("source bug");
        }
        format!("item {i}")
    });
    let cmd = child(&["count-stdin"]).stdin(Stdin::from_lines(input));
    let err = bounded(
        "a run with a panicking stdin stream",
        tokio::spawn(async move { cmd.output_string().await }),
    )
    .await
    .expect_err("the stream's panic was swallowed");
    assert!(err.is_panic());
    assert_eq!(*err.into_panic().downcast::<&str>().unwrap(), "source bug");
}
