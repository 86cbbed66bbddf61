//! `kill_on_parent_death`: when the owner is SIGKILLed (no destructor runs), its tree dies.
#![cfg(target_os = "linux")] // PDEATHSIG is Linux; Windows gets it from the job handle closing.
mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

fn owner() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_pk-owner"))
}

#[test]
fn direct_child_dies_with_a_sigkilled_owner() {
    let dir = tempdir();
    let mut o = std::process::Command::new(owner())
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(o.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    let child = read_pid_file(&dir.path().join("child.pid"), Duration::from_secs(5));
    let grand = read_pid_file(&dir.path().join("grand.pid"), Duration::from_secs(5));
    let setsid = read_pid_file(&dir.path().join("setsid.pid"), Duration::from_secs(5));
    assert!(pid_alive(child));
    o.kill().unwrap(); // SIGKILL: no Drop runs in the owner
    o.wait().unwrap();
    assert_dead_within(&[child], Duration::from_secs(5));
    // The grandchildren are the guardian's job (whole-tree parent death); clean them up here
    // so this test never leaks, whatever that feature's state.
    for p in [grand, setsid] {
        let _ = std::process::Command::new("kill")
            .args(["-9", &p.to_string()])
            .status();
    }
    assert_dead_within(&[grand, setsid], Duration::from_secs(5));
    remove_cgroups_of(o.id());
}
