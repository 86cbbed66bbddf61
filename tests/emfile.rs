//! EMFILE during spawn: a typed error, nothing leaked, and the next run works.
//! (Its own test binary: it lowers this process's fd limit.)
#![cfg(unix)] // RLIMIT_NOFILE is POSIX
mod common;

use common::*;
use processkit::{Command, Error};

#[tokio::test]
async fn fd_exhaustion_is_a_typed_error_and_leaks_nothing() {
    Command::new(pk_child())
        .args(["print", "warm"])
        .run()
        .await
        .unwrap();
    let before = fd_count();
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read a plain struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let saved = lim;
    lim.rlim_cur = ((before + 64) as libc::rlim_t).min(lim.rlim_max);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    // Use up every descriptor.
    let mut hog = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hog.push(f);
    }
    let e = Command::new(pk_child())
        .args(["print", "x"])
        .run()
        .await
        .unwrap_err();
    let shown = e.to_string();
    assert!(
        matches!(e, Error::Spawn { .. } | Error::Io { .. }),
        "unexpected variant: {e:?}"
    );
    assert!(
        shown.to_lowercase().contains("too many open files"),
        "{shown}"
    );
    drop(hog);
    // SAFETY: restoring the saved limit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) };
    assert!(
        wait_until_async(std::time::Duration::from_secs(5), || fd_count() <= before).await,
        "fds leaked: {before} -> {}",
        fd_count()
    );
    assert_eq!(
        Command::new(pk_child())
            .args(["print", "again"])
            .run()
            .await
            .unwrap(),
        "again"
    );
}
