//! Verb semantics against real processes (the pk-child helper).
mod common;

use common::*;
use processkit::{Command, Error, Stdin};
use std::time::Duration;

fn child(args: &[&str]) -> Command {
    Command::new(pk_child()).args(args)
}

#[tokio::test]
async fn run_returns_trimmed_stdout() {
    let out = child(&["print", "  hello  ", ";", "print", ""])
        .run()
        .await
        .unwrap();
    assert_eq!(out, "hello");
}

#[tokio::test]
async fn output_string_nonzero_is_data() {
    let r = child(&["print", "out", ";", "eprint", "bad", ";", "exit", "3"])
        .output_string()
        .await
        .unwrap();
    assert_eq!(r.code(), Some(3));
    assert_eq!(r.stdout(), "out\n");
    assert_eq!(r.stderr(), "bad\n");
    assert!(!r.timed_out());
    assert!(!r.success());
}

#[tokio::test]
async fn run_nonzero_is_typed_error_with_stderr() {
    let e = child(&["eprint", "boom happened", ";", "exit", "7"])
        .run()
        .await
        .unwrap_err();
    match &e {
        Error::NonZeroExit { code, stderr, .. } => {
            assert_eq!(*code, 7);
            assert!(stderr.contains("boom happened"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let shown = e.to_string();
    assert!(shown.contains("exited with code 7"), "{shown}");
    assert!(shown.contains("boom happened"), "{shown}");
}

#[tokio::test]
async fn probe_three_outcomes() {
    assert!(child(&["exit", "0"]).probe().await.unwrap());
    assert!(!child(&["exit", "1"]).probe().await.unwrap());
    let e = child(&["exit", "2"]).probe().await.unwrap_err();
    assert_eq!(e.exit_code(), Some(2));
}

#[tokio::test]
async fn exit_code_and_timeout() {
    assert_eq!(child(&["exit", "42"]).exit_code().await.unwrap(), 42);
    let e = child(&["sleep-forever"])
        .timeout(Duration::from_millis(200))
        .exit_code()
        .await
        .unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
}

#[tokio::test]
async fn output_captures_timeout() {
    let r = child(&["print", "early", ";", "sleep-forever"])
        .timeout(Duration::from_millis(300))
        .output_string()
        .await
        .unwrap();
    assert!(r.timed_out());
    assert_eq!(r.code(), None);
    assert_eq!(r.stdout(), "early\n");
}

#[tokio::test]
async fn first_line_match_and_no_match() {
    let l = child(&["print", "a", ";", "print", "b=2", ";", "sleep-forever"])
        .first_line(|l| l.starts_with("b="))
        .await
        .unwrap();
    assert_eq!(l.as_deref(), Some("b=2"));
    let none = child(&["print", "a"])
        .first_line(|l| l == "zzz")
        .await
        .unwrap();
    assert_eq!(none, None);
}

/// "`None` when stdout closes": a child that closes stdout and keeps running answers at once,
/// and the verb, done with it, ends it.
#[tokio::test]
async fn first_line_answers_none_when_stdout_closes_before_the_exit() {
    let dir = tempdir();
    let pidfile = dir.path().join("child.pid");
    let cmd = child(&[
        "pidfile",
        pidfile.to_str().unwrap(),
        ";",
        "print",
        "a",
        ";",
        "close-stdout",
        ";",
        "sleep-forever",
    ]);
    let none = tokio::time::timeout(Duration::from_secs(20), cmd.first_line(|l| l == "zzz"))
        .await
        .expect("first_line waited for the exit instead of the end of stdout")
        .unwrap();
    assert_eq!(none, None);
    let pid = read_pid_file(&pidfile, Duration::from_secs(10));
    assert_dead_within(&[pid], Duration::from_secs(10));
}

#[tokio::test]
async fn stdin_from_string() {
    let out = child(&["cat"])
        .stdin(Stdin::from_string("x\ny\n"))
        .run()
        .await
        .unwrap();
    assert_eq!(out, "x\ny");
}

#[tokio::test]
async fn one_liners() {
    let p = pk_child();
    let out = processkit::run(&p, ["print", "hi"]).await.unwrap();
    assert_eq!(out, "hi");
    let r = processkit::output(&p, ["exit", "5"]).await.unwrap();
    assert_eq!(r.code(), Some(5));
}
