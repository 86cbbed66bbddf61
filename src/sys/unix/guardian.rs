//! The parent-death guardian: whole-tree cleanup when the owner dies abruptly (`SIGKILL`).
//!
//! A cgroup v2 has no kill-on-close, and `PR_SET_PDEATHSIG` covers only the direct child, so a
//! SIGKILLed owner would leave grandchildren running. The guardian is one tiny process per
//! owner, started the first time a child asks for `kill_on_parent_death`:
//!
//! * it is `/bin/sh` running a short script, started through `posix_spawn` (std's spawn path
//!   without a `pre_exec` hook) in its own process group, so a terminal's Ctrl-C aimed at the
//!   owner does not take the guardian with it;
//! * its stdin is the read end of a close-on-exec pipe whose write end only the owner holds. When
//!   the owner dies — however it dies — the kernel closes that end and the guardian reads EOF;
//! * it then writes `cgroup.kill` into every `pk-<owner pid>-*` cgroup under the parents it was
//!   given (the only cgroups this crate ever creates for that owner), kills the process groups
//!   the owner registered on the fallback mechanism (and did not unregister), removes the
//!   drained cgroups, and exits. It never outlives its work and never touches anything else.
//!
//! Cost: one spawn per owner process, on first use; nothing per run on the cgroup mechanism,
//! one short pipe write per registered process group on the fallback.

use std::io::{self, Write as _};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Mutex, OnceLock};

/// The guardian's script. `$1` is the owner pid; the rest are cgroup parent directories.
/// Stdin carries `g PGID` / `u PGID` lines (register / unregister a process group).
const SCRIPT: &str = r#"
owner=$1; shift
log=""
while IFS= read -r line; do log="$log
$line"; done
# EOF: the owner is gone.
live=""
for pg in $(printf '%s\n' "$log" | awk '$1=="g"{c[$2]++} $1=="u"{c[$2]--} END{for(p in c) if(c[p]>0) print p}'); do
  kill -9 "-$pg" 2>/dev/null
done
for parent in "$@"; do
  for d in "$parent"/pk-"$owner"-*; do
    [ -d "$d" ] || continue
    if [ -e "$d/cgroup.kill" ]; then
      echo 1 > "$d/cgroup.kill" 2>/dev/null
    else
      for p in $(cat "$d/cgroup.procs" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    fi
  done
done
i=0
while [ $i -lt 250 ]; do
  left=0
  for parent in "$@"; do
    for d in "$parent"/pk-"$owner"-*; do
      [ -d "$d" ] || continue
      rmdir "$d" 2>/dev/null || left=1
    done
  done
  [ $left = 0 ] && break
  sleep 0.02
  i=$((i+1))
done
"#;

struct Guardian {
    pipe: Mutex<std::io::PipeWriter>,
    _child: std::process::Child,
}

static GUARDIAN: OnceLock<Option<Guardian>> = OnceLock::new();

/// Starts the guardian once (idempotent). `parents` are the directories under which this
/// owner's `pk-<pid>-*` cgroups live (v2 and any v1 controllers); empty on the fallback.
/// Failure to start it is returned once and leaves plain `PDEATHSIG` in force.
pub(crate) fn ensure(parents: &[PathBuf]) -> io::Result<()> {
    let mut err = None;
    let g = GUARDIAN.get_or_init(|| match start(parents) {
        Ok(g) => Some(g),
        Err(e) => {
            err = Some(e);
            None
        }
    });
    match (g, err) {
        (_, Some(e)) => Err(e),
        (Some(_), None) => Ok(()),
        (None, None) => Err(io::Error::other(
            "the parent-death guardian could not be started",
        )),
    }
}

fn start(parents: &[PathBuf]) -> io::Result<Guardian> {
    use std::os::unix::process::CommandExt as _;
    let (reader, writer) = std::io::pipe()?;
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(SCRIPT)
        .arg("processkit-guardian")
        .arg(std::process::id().to_string())
        .args(parents)
        .stdin(Stdio::from(reader))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C to the owner's group must not reach it. std keeps
        // the posix_spawn fast path for this (POSIX_SPAWN_SETPGROUP).
        .process_group(0);
    let child = cmd.spawn()?;
    // `cmd` still holds the read end: drop it so only the guardian has it.
    drop(cmd);
    Ok(Guardian {
        pipe: Mutex::new(writer),
        _child: child,
    })
}

/// Tells a running guardian about a process group to kill if the owner dies.
pub(crate) fn register_pgroup(pgid: i32) {
    send(&format!("g {pgid}\n"));
}

/// Tells a running guardian a process group is gone (so a reused id is never killed).
pub(crate) fn unregister_pgroup(pgid: i32) {
    send(&format!("u {pgid}\n"));
}

fn send(line: &str) {
    if let Some(Some(g)) = GUARDIAN.get() {
        let mut w = g.pipe.lock().unwrap_or_else(|e| e.into_inner());
        let _ = w.write_all(line.as_bytes());
    }
}
