//! The bad-input catalogue: every class of wrong input gets a typed error naming the culprit,
//! and none panics or hangs.
mod common;

use common::*;
use processkit::{Command, Error, ProcessGroup, ProcessGroupOptions, Stdin};
use std::time::Duration;

fn child(args: &[&str]) -> Command {
    Command::new(pk_child()).args(args)
}

type Check = fn(&Error) -> bool;

#[tokio::test]
async fn every_bad_input_class_is_a_typed_error_naming_the_culprit() {
    let dir = tempdir();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let not_exec = dir.path().join("not-exec");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    let long_name = dir.path().join("n".repeat(300));
    let f = file.to_str().unwrap().to_owned();

    let invalid: Check = |e| matches!(e, Error::InvalidInput { .. });
    let bad_dir: Check = |e| matches!(e, Error::InvalidWorkingDir { .. });
    let spawn: Check = |e| matches!(e, Error::Spawn { .. });
    let not_found: Check = |e| matches!(e, Error::NotFound { .. });
    let io: Check = |e| matches!(e, Error::Io { .. });
    let spawn_or_not_found: Check = |e| matches!(e, Error::Spawn { .. } | Error::NotFound { .. });

    #[allow(clippy::type_complexity, unused_mut)]
    let mut cases: Vec<(&str, Command, Check, String)> = vec![
        (
            "NUL in program",
            Command::new("pk\0child"),
            invalid,
            "program".into(),
        ),
        (
            "NUL in argument",
            child(&["print", "a\0b"]),
            invalid,
            "argument 2".into(),
        ),
        (
            "NUL in env key",
            child(&["pid"]).env("K\0Y", "v"),
            invalid,
            "environment variable name".into(),
        ),
        (
            "NUL in env value",
            child(&["pid"]).env("KEY", "v\0"),
            invalid,
            "KEY".into(),
        ),
        (
            "'=' in env key",
            child(&["pid"]).env("A=B", "v"),
            invalid,
            "A=B".into(),
        ),
        (
            "empty env key",
            child(&["pid"]).env("", "v"),
            invalid,
            "environment variable name".into(),
        ),
        ("empty program", Command::new(""), invalid, "program".into()),
        (
            "directory as program",
            Command::new(dir.path()),
            spawn,
            "is a directory".into(),
        ),
        (
            "missing program",
            Command::new("pk-no-such-program"),
            not_found,
            "pk-no-such-program".into(),
        ),
        (
            "missing program path",
            Command::new("/no/such/pk"),
            not_found,
            "/no/such/pk".into(),
        ),
        (
            "missing cwd",
            child(&["cwd"]).current_dir(dir.path().join("gone")),
            bad_dir,
            "gone".into(),
        ),
        (
            "cwd is a file",
            child(&["cwd"]).current_dir(&file),
            bad_dir,
            "not a directory".into(),
        ),
        (
            "zero timeout",
            child(&["pid"]).timeout(Duration::ZERO),
            invalid,
            "timeout".into(),
        ),
        (
            "zero inactivity timeout",
            child(&["pid"]).inactivity_timeout(Duration::ZERO),
            invalid,
            "inactivity_timeout".into(),
        ),
        (
            "missing stdin file",
            child(&["cat"]).stdin(Stdin::from_file(dir.path().join("in"))),
            io,
            "in".into(),
        ),
        (
            "directory as stdin file",
            child(&["cat"]).stdin(Stdin::from_file(dir.path())),
            io,
            "is a directory".into(),
        ),
        (
            "program name too long",
            Command::new(&long_name),
            spawn_or_not_found,
            "nnnn".into(),
        ),
    ];
    // Windows caps a command line at 32,767 UTF-16 units (CreateProcessW fails with
    // ERROR_FILENAME_EXCED_RANGE); Wine does not enforce it.
    if cfg!(unix) || !under_wine() {
        cases.push((
            "argument too long (E2BIG)",
            child(&["print"]).arg("x".repeat(200 * 1024)),
            spawn,
            "pk-child".into(),
        ));
    }
    #[cfg(unix)]
    {
        // E2BIG for the environment is POSIX: a Windows environment block has no size cap.
        cases.push((
            "environment too long (E2BIG)",
            child(&["pid"]).env("BIG", "x".repeat(200 * 1024)),
            spawn,
            "pk-child".into(),
        ));
        cases.push((
            "non-executable file",
            Command::new(&not_exec),
            spawn,
            "not-exec".into(),
        ));
        cases.push((
            "uid -1",
            child(&["pid"]).uid(u32::MAX),
            invalid,
            "uid".into(),
        ));
        cases.push((
            "gid -1",
            child(&["pid"]).gid(u32::MAX),
            invalid,
            "gid".into(),
        ));
    }
    let _ = &f;
    let mut n = 0;
    for (class, cmd, check, needle) in cases {
        let e = match tokio::time::timeout(Duration::from_secs(20), cmd.run()).await {
            Ok(Ok(out)) => panic!("{class}: succeeded with {out:?}"),
            Ok(Err(e)) => e,
            Err(_) => panic!("{class}: hung"),
        };
        assert!(check(&e), "{class}: wrong variant {e:?}");
        let shown = e.to_string();
        assert!(
            shown.contains(&needle),
            "{class}: {shown:?} does not name {needle:?}"
        );
        n += 1;
    }

    // Group-level bad input.
    #[cfg(feature = "limits")]
    {
        for (class, opts) in [
            (
                "zero memory_max",
                ProcessGroupOptions::default().memory_max(0),
            ),
            (
                "zero max_processes",
                ProcessGroupOptions::default().max_processes(0),
            ),
            (
                "negative cpu_quota",
                ProcessGroupOptions::default().cpu_quota(-1.0),
            ),
            (
                "NaN cpu_quota",
                ProcessGroupOptions::default().cpu_quota(f64::NAN),
            ),
        ] {
            let e = ProcessGroup::with_options(opts).unwrap_err();
            assert!(matches!(e, Error::ResourceLimit { .. }), "{class}: {e:?}");
            n += 1;
        }
    }
    let _ = ProcessGroupOptions::default;
    let _ = ProcessGroup::new;
    let e = processkit::wait_any(&mut []).await.unwrap_err();
    assert!(matches!(e, Error::InvalidInput { .. }));
    n += 1;
    assert!(n >= 20, "only {n} classes");
}
