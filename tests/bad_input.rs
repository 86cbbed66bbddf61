//! Bad input gets a typed error naming the culprit — never a panic or a hang — and output
//! captured so far stays available.
mod common;

use common::*;
use processkit::{BufferPolicy, Command, Encoding, Error, OutputStream};
use std::time::Duration;

fn child(args: &[&str]) -> Command {
    Command::new(pk_child()).args(args)
}

#[tokio::test]
async fn missing_program_is_not_found() {
    let e = Command::new("processkit-no-such-program-xyz")
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::NotFound { program } if program == "processkit-no-such-program-xyz"),
        "{e:?}"
    );
    assert!(e.to_string().contains("processkit-no-such-program-xyz"));
    let e = Command::new("/definitely/not/here")
        .output_string()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
}

#[cfg(unix)] // the executable bit is a POSIX notion
#[tokio::test]
async fn non_executable_file_is_spawn_error() {
    let dir = tempdir();
    let f = dir.path().join("not-exec");
    std::fs::write(&f, "#!/bin/sh\necho hi\n").unwrap();
    let e = Command::new(&f).run().await.unwrap_err();
    match &e {
        Error::Spawn {
            program, source, ..
        } => {
            assert!(program.ends_with("not-exec"));
            assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn directory_as_program_is_spawn_error() {
    let dir = tempdir();
    let e = Command::new(dir.path()).run().await.unwrap_err();
    match &e {
        Error::Spawn { source, .. } => {
            assert!(source.to_string().contains("is a directory"), "{source}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn missing_or_file_cwd_is_invalid_working_dir() {
    let dir = tempdir();
    let missing = dir.path().join("nope");
    let e = child(&["cwd"])
        .current_dir(&missing)
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidWorkingDir { path, .. } if *path == missing),
        "{e:?}"
    );
    assert!(e.to_string().contains("nope"));
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let e = child(&["cwd"]).current_dir(&file).run().await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidWorkingDir { reason, .. } if reason.contains("not a directory")),
        "{e:?}"
    );
}

#[tokio::test]
async fn nul_bytes_and_bad_env_names_are_invalid_input() {
    let cases: Vec<(Command, &str)> = vec![
        (child(&["print", "a\0b"]), "argument 2"),
        (Command::new("pk\0child"), "program"),
        (
            child(&["print"]).env("K\0", "v"),
            "environment variable name",
        ),
        (
            child(&["print"]).env("K", "v\0"),
            "value of environment variable",
        ),
        (child(&["print"]).env("A=B", "v"), "contains '='"),
        (child(&["print"]).env("", "v"), "environment variable name"),
        (Command::new(""), "program"),
        (child(&["print"]).timeout(Duration::ZERO), "timeout"),
        (
            child(&["print"]).inherit_env(["PATH", "A=B"]),
            "inherit_env name",
        ),
        (child(&["print"]).inherit_env([""]), "inherit_env name"),
    ];
    for (cmd, needle) in cases {
        let e = cmd.run().await.unwrap_err();
        assert!(matches!(e, Error::InvalidInput { .. }), "{needle}: {e:?}");
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    }
}

#[tokio::test]
async fn invalid_utf8_lossy_and_strict() {
    // "ok\xff\xfe\n"
    let r = child(&["hex", "6f6bfffe0a"]).output_string().await.unwrap();
    assert_eq!(r.stdout(), "ok\u{fffd}\u{fffd}\n");
    let e = child(&["hex", "6f6bfffe0a"])
        .encoding(Encoding::Utf8Strict)
        .output_string()
        .await
        .unwrap_err();
    match e {
        Error::InvalidUtf8 {
            stream,
            valid_up_to,
            bytes,
            ..
        } => {
            assert_eq!(stream, OutputStream::Stdout);
            assert_eq!(valid_up_to, 2);
            assert_eq!(bytes, b"ok\xff\xfe\n");
        }
        other => panic!("{other:?}"),
    }
    // Raw bytes are always available.
    let r = child(&["hex", "6f6bfffe0a"]).output_bytes().await.unwrap();
    assert_eq!(r.stdout(), b"ok\xff\xfe\n");
}

#[tokio::test]
async fn fifty_megabytes_are_captured_whole() {
    let r = child(&["bytes", "50M"]).output_bytes().await.unwrap();
    assert_eq!(r.stdout().len(), 50 * 1024 * 1024);
    assert_eq!(r.stdout_dropped(), 0);
    assert!(r
        .stdout()
        .chunks(128)
        .all(|c| c[..c.len().min(127)].iter().all(|b| *b == b'x')));
}

#[tokio::test]
async fn capture_cap_keeps_head_and_tail() {
    let r = child(&["lines", "10000"])
        .buffer_policy(BufferPolicy::cap(1000))
        .output_string()
        .await
        .unwrap();
    let total = 10000 * "line 00000001\n".len();
    assert_eq!(r.stdout().len(), 1000);
    assert_eq!(r.stdout_dropped() as usize, total - 1000);
    assert!(r.stdout().starts_with("line 00000001\n"));
    assert!(r.stdout().ends_with("line 00010000\n"));
    assert_eq!(r.code(), Some(0));
}

#[tokio::test]
async fn stdin_file_missing_names_the_path() {
    let e = child(&["cat"])
        .stdin(processkit::Stdin::from_file("/no/such/input"))
        .run()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("/no/such/input"), "{e}");
}

#[tokio::test]
async fn error_display_shows_command_line_and_bounded_stderr() {
    let e = child(&[
        "printn",
        "it's quoted",
        ";",
        "ebytes",
        "100K",
        ";",
        "eprint",
        "THE-END",
        ";",
        "exit",
        "9",
    ])
    .run()
    .await
    .unwrap_err();
    let s = e.to_string();
    assert!(s.contains("exited with code 9"), "{s}");
    assert!(s.contains("'it'\\''s quoted'"), "{s}");
    assert!(s.contains("THE-END"));
    assert!(s.len() < 4000, "stderr not bounded: {} bytes", s.len());
    // Nothing is lost: the full stderr stays in the error.
    assert!(e.stderr().unwrap().len() > 100 * 1024);
}

/// `Duration::MAX` is "practically never" everywhere a duration is taken: no overflow panic,
/// and a huge value never switches another deadline off.
#[tokio::test]
async fn huge_durations_mean_never_and_never_panic() {
    async fn within<T>(f: impl std::future::Future<Output = T>) -> Result<T, ()> {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .map_err(|_| ())
    }

    let out = within(child(&["print", "hi"]).timeout(Duration::MAX).run())
        .await
        .expect("hung")
        .unwrap();
    assert_eq!(out, "hi");

    // A huge inactivity timeout leaves the ordinary timeout in force.
    let r = within(
        child(&["sleep-forever"])
            .timeout(Duration::from_millis(300))
            .inactivity_timeout(Duration::MAX)
            .timeout_grace(Duration::MAX)
            .output_string(),
    )
    .await
    .expect("the timeout did not fire")
    .unwrap();
    assert!(r.timed_out());

    let r = within(
        child(&["print", "a"])
            .pipe(child(&["cat"]))
            .timeout(Duration::MAX)
            .output_string(),
    )
    .await
    .expect("hung")
    .unwrap();
    assert_eq!(r.stdout(), "a\n");

    let mut run = child(&["print", "ready", ";", "sleep-forever"])
        .start()
        .await
        .unwrap();
    let line = within(run.wait_for_line(|l| l == "ready", Duration::MAX))
        .await
        .expect("hung")
        .unwrap();
    assert_eq!(line, "ready");
    within(run.wait_for(|| async { true }, Duration::MAX))
        .await
        .expect("hung")
        .unwrap();
    run.kill().await.unwrap();

    // Sampling at a huge interval: the first sample still comes at once.
    #[cfg(feature = "stats")]
    {
        use processkit::{ProcessGroup, StreamExt};
        let group = ProcessGroup::new().unwrap();
        let _rp = group.start(&child(&["sleep-forever"])).await.unwrap();
        let mut samples = group.sample_stats(Duration::MAX);
        assert!(within(samples.next()).await.expect("hung").is_some());
        let profile = within(
            child(&["print", "x"])
                .start()
                .await
                .unwrap()
                .profile(Duration::MAX),
        )
        .await
        .expect("hung")
        .unwrap();
        assert_eq!(profile.exit_code, Some(0));
    }
}

/// The capture cap's cut never splits a character, so strict decoding of valid UTF-8 output
/// succeeds past the cap, and the kept plus dropped bytes still add up.
#[tokio::test]
async fn strict_utf8_survives_the_capture_cap() {
    let text = "€".repeat(10_000);
    let r = child(&["printn", &text])
        .encoding(Encoding::Utf8Strict)
        .buffer_policy(BufferPolicy::cap(1001))
        .output_string()
        .await
        .unwrap();
    assert!(r.stdout().chars().all(|c| c == '€'));
    assert!(r.stdout().len() <= 1001 && r.stdout().len() >= 995);
    assert_eq!(
        r.stdout().len() as u64 + r.stdout_dropped(),
        text.len() as u64
    );
}

/// A script whose `#!` interpreter is missing exists: that is a spawn error naming the cause,
/// not `NotFound` (which would send the user looking for the script). Unix: about `#!` scripts.
#[cfg(unix)]
#[tokio::test]
async fn a_script_with_a_missing_interpreter_is_not_a_missing_program() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let script = dir.path().join("tool.sh");
    std::fs::write(&script, "#!/no/such/interpreter\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    for cmd in [
        Command::new(&script),
        Command::new("tool.sh").env("PATH", dir.path()),
    ] {
        let e = cmd.run().await.unwrap_err();
        assert!(matches!(e, Error::Spawn { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("interpreter") && msg.contains("tool.sh"),
            "{msg}"
        );
    }
    // A name found nowhere is still NotFound.
    let e = Command::new("tool-absent.sh")
        .env("PATH", dir.path())
        .run()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
}

/// Under strict encoding a failed run still reports its own error: a non-zero exit or a
/// timeout is not masked by `InvalidUtf8`, and a kill that cut the last character in two is not
/// blamed on the child.
#[tokio::test]
async fn strict_encoding_never_masks_the_runs_own_error() {
    // "ok " then the first two bytes of "€": invalid only because the output stops there.
    let e = child(&["hex", "6f6b20e282", ";", "exit", "3"])
        .encoding(Encoding::Utf8Strict)
        .run()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NonZeroExit { code: 3, .. }), "{e:?}");
    let cut = child(&["hex", "6f6b20e282", ";", "sleep-forever"])
        .encoding(Encoding::Utf8Strict)
        .timeout(Duration::from_millis(300));
    let e = cut.run().await.unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
    let r = cut.output_string().await.unwrap();
    assert!(r.timed_out());
    assert_eq!(r.stdout(), "ok ");
    assert_eq!(r.stdout_dropped(), 2);
    // A child that finished on its own with a broken character is still an encoding error.
    let e = child(&["hex", "6f6b20e282"])
        .encoding(Encoding::Utf8Strict)
        .output_string()
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::InvalidUtf8 { valid_up_to: 3, .. }),
        "{e:?}"
    );
    let e = (child(&["hex", "6f6b20e282", ";", "exit", "4"])
        | child(&["cat"]).encoding(Encoding::Utf8Strict))
    .run()
    .await
    .unwrap_err();
    assert!(matches!(e, Error::NonZeroExit { code: 4, .. }), "{e:?}");
}
