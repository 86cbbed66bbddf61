//! The run engine behind every verb: validate, spawn into a container, pump, watch the
//! deadline, tear down, and build the result.
//!
//! One run, end to end: `Command` (data) -> a private or shared group -> `sys` spawns the child
//! inside the container -> pumps drain stdout and stderr concurrently -> the child exits or the
//! watchdog fires (timeout, inactivity, cancellation) -> the private group is killed (so a
//! grandchild holding a pipe can never hang the run) -> the pumps reach end-of-file -> a
//! `ProcessResult` or a typed `Error`.

use std::ffi::OsString;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::group::{GroupInner, ProcessGroup};
use crate::result::ProcessResult;
use crate::running::pump::{Activity, Mode, Pump};
use crate::running::stdin::{feed, StdinWriter};
use crate::running::{Control, ExitState, Owner, RunFlags, RunMeta, RunningProcess};
use crate::stdio::{Encoding, OutputMode, StdinKind};
use crate::sys::{self, ChildStdio, SpawnRequest};
use crate::Command;

/// Where a run's container comes from.
#[derive(Debug, Clone)]
pub(crate) enum Scope {
    /// A fresh private group that dies with the run.
    Private,
    /// A shared group: only the child itself is ours to kill.
    Shared(Arc<GroupInner>),
}

/// What the caller will do with the handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A live handle: stdout goes to a line channel.
    Stream,
    /// A one-shot verb: both streams are captured.
    Collect,
}

/// `Command::start` / `ProcessGroup::start`.
pub(crate) async fn start(cmd: &Command, scope: Scope) -> Result<RunningProcess> {
    start_with(cmd, scope, Purpose::Stream, None)
}

/// Spawns the run. `stdin_override` lets a pipeline wire a stage's stdin to the previous
/// stage's pipe.
pub(crate) fn start_with(
    cmd: &Command,
    scope: Scope,
    purpose: Purpose,
    stdio_override: Option<StageStdio>,
) -> Result<RunningProcess> {
    let program = cmd.program_name();
    validate(cmd)?;
    // A token cancelled before the run starts: spawn nothing, create no container.
    crate::cancel::precheck(cmd)?;

    let (owner, container_inner) = match scope {
        Scope::Private => {
            let g = ProcessGroup::for_run()?;
            let inner = g.inner().clone();
            (Owner::Private(g), inner)
        }
        Scope::Shared(inner) => {
            if inner.closed.load(Ordering::SeqCst) {
                return Err(Error::io(
                    &program,
                    "starting in a process group",
                    io::Error::other("the group was dropped or shut down"),
                ));
            }
            (Owner::Shared(inner.clone()), inner)
        }
    };

    // Stdin wiring.
    let mut stage = stdio_override.unwrap_or_default();
    let mut stdin_source = None;
    let stdin = if let Some(s) = stage.stdin.take() {
        s
    } else if cmd.keep_stdin_open {
        ChildStdio::Piped
    } else {
        match &cmd.stdin.kind {
            StdinKind::Null => ChildStdio::Null,
            StdinKind::Inherit => ChildStdio::Inherit,
            StdinKind::File(path) => {
                let f = std::fs::File::open(path).map_err(|e| {
                    Error::io(
                        &program,
                        format!("opening stdin file {}", path.display()),
                        e,
                    )
                })?;
                ChildStdio::Redirect(f.into())
            }
            StdinKind::Bytes(_) | StdinKind::Lines(_) => {
                stdin_source = Some(cmd.stdin.clone());
                ChildStdio::Piped
            }
        }
    };
    let out_mode = |m: OutputMode| match m {
        OutputMode::Capture => ChildStdio::Piped,
        OutputMode::Null => ChildStdio::Null,
        OutputMode::Inherit => ChildStdio::Inherit,
    };
    let stdout = stage.stdout.take().unwrap_or_else(|| out_mode(cmd.stdout));
    let stderr = out_mode(cmd.stderr);

    let req = SpawnRequest {
        program: cmd.program.clone(),
        args: cmd.args.clone(),
        env_clear: cmd.env_clear,
        env: resolve_env(cmd),
        cwd: cmd.cwd.clone(),
        stdin,
        stdout,
        stderr,
        uid: cmd.uid,
        gid: cmd.gid,
        setsid: cmd.setsid,
        kill_on_parent_death: cmd.kill_on_parent_death,
        create_no_window: cmd.create_no_window,
    };
    let oom_baseline = match &owner {
        Owner::Shared(g) => sys::oom_kills(&g.container),
        _ => None,
    };
    let started = Instant::now();
    let mut child = container_inner.spawn_gate(&program, || {
        container_inner
            .container
            .spawn(req)
            .map_err(|e| map_spawn_error(cmd, e))
    })?;
    container_inner.note_started(child.pid);
    crate::trace::spawn(&program, child.pid);

    let meta = RunMeta {
        program: program.clone(),
        args: cmd.args_lossy(),
        encoding: cmd.encoding,
    };
    let activity = cmd.inactivity_timeout.map(|_| Arc::new(Activity::new()));
    let stdout_mode = match purpose {
        Purpose::Stream => Mode::Channel,
        Purpose::Collect => Mode::Capture,
    };
    let stdout_pump = child.stdout.take().map(|r| {
        Pump::spawn(
            r,
            stdout_mode,
            cmd.buffer,
            cmd.on_stdout_line.clone(),
            activity.clone(),
        )
    });
    let stderr_pump = child.stderr.take().map(|r| {
        Pump::spawn(
            r,
            Mode::Capture,
            cmd.buffer,
            cmd.on_stderr_line.clone(),
            activity.clone(),
        )
    });
    let mut stdin_writer = None;
    let mut stdin_task = None;
    if let Some(pipe) = child.stdin.take() {
        if cmd.keep_stdin_open {
            stdin_writer = Some(StdinWriter::new(program.clone(), pipe));
        } else if let Some(src) = stdin_source {
            stdin_task = Some(tokio::spawn(feed(src, pipe)));
        }
    }

    let pid = child.pid;
    let (exit_tx, exit_rx) = watch::channel(None);
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let private = match &owner {
        Owner::Private(g) => Some(g.inner().clone()),
        _ => None,
    };
    let flags = Arc::new(RunFlags {
        cancel: Cancel::of(cmd),
        ..RunFlags::default()
    });
    if let Some(n) = oom_baseline {
        let _ = flags.oom_baseline.set(n);
    }
    let who = RunId {
        program: program.clone(),
        pid,
        started,
        flags: flags.clone(),
    };
    tokio::spawn(child_task(
        child.inner,
        exit_tx,
        ctl_rx,
        private.clone(),
        who.clone(),
    ));
    let watchdog = spawn_watchdog(cmd, who, exit_rx.clone(), ctl_tx.clone(), private, activity);

    Ok(RunningProcess {
        meta,
        pid,
        started,
        exit_rx,
        control: Some(ctl_tx),
        owner,
        stdout: stdout_pump,
        stderr: stderr_pump,
        stdout_stream: None,
        stdin: stdin_writer,
        stdin_task,
        flags,
        watchdog,
    })
}

/// Pipe ends a pipeline hands to one stage.
#[derive(Debug, Default)]
pub(crate) struct StageStdio {
    pub(crate) stdin: Option<ChildStdio>,
    pub(crate) stdout: Option<ChildStdio>,
}

/// Which run a background task works for (for its lifecycle events) and the run's flags.
#[derive(Debug, Clone)]
pub(crate) struct RunId {
    pub(crate) program: String,
    pub(crate) pid: u32,
    pub(crate) started: Instant,
    pub(crate) flags: Arc<RunFlags>,
}

/// Owns the OS child handle: reports its exit once, kills on request, and tears a private
/// group down the moment the child exits (so descendants holding pipes cannot stall a run).
async fn child_task(
    mut child: sys::ChildInner,
    exit_tx: watch::Sender<Option<ExitState>>,
    mut ctl: mpsc::UnboundedReceiver<Control>,
    private: Option<Arc<GroupInner>>,
    who: RunId,
) {
    let mut ctl_open = true;
    let state = loop {
        tokio::select! {
            r = child.wait() => break match r {
                Ok(e) => ExitState::Exited(e),
                Err(e) => ExitState::Failed(e.to_string()),
            },
            c = ctl.recv(), if ctl_open => match c {
                Some(Control::Kill) => { let _ = child.start_kill(); }
                Some(Control::Term) => { let _ = sys::request_stop(&mut child); }
                None => {
                    // The handle is gone: the child must not outlive it.
                    ctl_open = false;
                    let _ = child.start_kill();
                }
            },
        }
    };
    if let Some(g) = &private {
        let _ = g.kill_all();
    }
    match &state {
        ExitState::Exited(e) => {
            crate::trace::exit(&who.program, who.pid, who.started.elapsed(), e, &who.flags)
        }
        ExitState::Failed(_) => {
            crate::trace::exit_failed(&who.program, who.pid, who.started.elapsed())
        }
    }
    let _ = exit_tx.send(Some(state));
}

/// Watches the deadline, the inactivity timer and the cancellation token: the one place a run
/// is ended from outside.
///
/// * Cancellation: flag, hard-kill (the tree of a private group, the direct child of a shared
///   one), done. It is checked first, so a cancel that lands together with a deadline wins; a
///   cancel during a timeout's grace period still flags the run cancelled and kills at once.
/// * The deadline or the inactivity timer: flag `timed_out`, then either hard-kill at once (no
///   grace) or ask politely ([`polite_stop`]) and hard-kill after the grace unless the child
///   exits first.
/// * The child's own exit ends the watch.
///
/// Also drives scripted runs (which have no private group and obey `Control::Kill`).
pub(crate) fn spawn_watchdog(
    cmd: &Command,
    who: RunId,
    exit_rx: watch::Receiver<Option<ExitState>>,
    ctl: mpsc::UnboundedSender<Control>,
    private: Option<Arc<GroupInner>>,
    activity: Option<Arc<Activity>>,
) -> Option<tokio::task::JoinHandle<()>> {
    let flags = who.flags.clone();
    let cancel = Cancel::of(cmd);
    if cmd.timeout.is_none() && cmd.inactivity_timeout.is_none() && !cancel.is_set() {
        return None;
    }
    let deadline = cmd.timeout.map(|t| (t, crate::time::deadline_in(t)));
    let idle = cmd.inactivity_timeout.zip(activity);
    let grace = cmd.timeout_grace;
    Some(tokio::spawn(async move {
        let hard_kill = || {
            if let Some(g) = &private {
                let _ = g.kill_all();
            }
            let _ = ctl.send(Control::Kill);
        };
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        let expired = async {
            let timed = async {
                match deadline {
                    Some((limit, d)) => {
                        tokio::time::sleep_until(d).await;
                        limit
                    }
                    None => std::future::pending().await,
                }
            };
            let idle_fired = async {
                match &idle {
                    Some((d, a)) => loop {
                        let due = crate::time::after(a.last(), *d);
                        if tokio::time::Instant::now() >= due {
                            break *d;
                        }
                        tokio::time::sleep_until(due).await;
                    },
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                limit = timed => limit,
                limit = idle_fired => limit,
            }
        };
        let mut rx = exit_rx.clone();
        let exited = async move {
            let _ = rx.wait_for(|s| s.is_some()).await;
        };
        tokio::select! {
            biased;
            _ = &mut cancelled => {
                flags.cancelled.store(true, Ordering::SeqCst);
                hard_kill();
                crate::trace::cancel(&who.program, who.pid, who.started.elapsed());
            }
            _ = exited => {}
            limit = expired => {
                let _ = flags.expired_limit.set(limit);
                flags.timed_out.store(true, Ordering::SeqCst);
                crate::trace::timeout(&who.program, who.pid, who.started.elapsed(), grace.is_some());
                if let Some(g) = grace {
                    polite_stop(&private, &ctl);
                    let mut rx = exit_rx.clone();
                    tokio::select! {
                        biased;
                        _ = &mut cancelled => {
                            flags.cancelled.store(true, Ordering::SeqCst);
                            #[cfg(feature = "tracing")]
                            tracing::debug!("processkit: run cancelled during the timeout grace");
                        }
                        _ = rx.wait_for(|s| s.is_some()) => {}
                        _ = tokio::time::sleep(g) => {}
                    }
                }
                hard_kill();
            }
        }
    }))
}

/// SIGTERM to the tree (private group) or the direct child (shared group).
fn polite_stop(private: &Option<Arc<GroupInner>>, ctl: &mpsc::UnboundedSender<Control>) {
    match private {
        Some(g) => {
            if g.container.signal(crate::Signal::Term).is_err() {
                let _ = g.kill_all();
            }
        }
        None => {
            let _ = ctl.send(Control::Term);
        }
    }
}

/// Runs to completion and captures both streams (the one-shot verbs).
pub(crate) async fn output_bytes(cmd: &Command, scope: Scope) -> Result<ProcessResult<Vec<u8>>> {
    let rp = start_with(cmd, scope, Purpose::Collect, None)?;
    collect(rp).await
}

/// Waits for a started run and builds its result.
pub(crate) async fn collect(mut rp: RunningProcess) -> Result<ProcessResult<Vec<u8>>> {
    // A one-shot verb hands out no writer: `keep_stdin_open` means an empty stdin here.
    rp.close_untaken_stdin();
    let exit = rp.wait_exit().await;
    rp.check_cancelled()?;
    let exit = exit?;
    rp.drain_after_exit().await;
    rp.resume_handler_panics();
    rp.stop_feeding_stdin().await;
    rp.check_cancelled()?;
    let oom_killed = crate::group::stats::run_oom_killed(&rp, &exit);
    let (stdout, stdout_dropped) = rp
        .stdout
        .as_ref()
        .map(|p| p.shared.take_capture())
        .unwrap_or_default();
    let (stderr, stderr_dropped) = rp
        .stderr
        .as_ref()
        .map(|p| p.shared.take_capture())
        .unwrap_or_default();
    let timed_out = rp.flags.timed_out.load(Ordering::SeqCst);
    Ok(ProcessResult {
        program: rp.meta.program.clone(),
        args: rp.meta.args.clone(),
        code: if timed_out { None } else { exit.code },
        signal: exit.signal,
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        timed_out,
        oom_killed,
        duration: rp.started.elapsed(),
        stdout_dropped,
        stderr_dropped,
        attempts: 1,
        stages: Vec::new(),
        expired_after: rp.flags.expired_limit.get().copied(),
    })
}

/// Decodes stdout per the command's encoding.
pub(crate) fn to_string_result(
    mut r: ProcessResult<Vec<u8>>,
    encoding: Encoding,
) -> Result<ProcessResult<String>> {
    if encoding == Encoding::Utf8Strict && (r.timed_out || r.code.is_none()) {
        // Killed mid-write: the kill, not the child, may have cut the last character in two.
        // Only that final partial character is forgiven (and counted as dropped).
        let cut = crate::stdio::utf8_partial_suffix(&r.stdout);
        r.stdout.truncate(r.stdout.len() - cut);
        r.stdout_dropped += cut as u64;
    }
    match encoding {
        Encoding::Utf8Lossy => Ok(r.map_stdout(|b| match String::from_utf8(b) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })),
        Encoding::Utf8Strict => match std::str::from_utf8(&r.stdout) {
            Ok(_) => Ok(r.map_stdout(|b| String::from_utf8(b).expect("validated"))),
            Err(e) => Err(Error::InvalidUtf8 {
                program: r.program.clone(),
                stream: crate::OutputStream::Stdout,
                valid_up_to: e.valid_up_to(),
                bytes: r.stdout,
            }),
        },
    }
}

/// Turns a result into the error `run`/`exit_code` raise, if it is one.
pub(crate) fn check_finished(r: &ProcessResult<String>, timeout: Option<Duration>) -> Result<()> {
    if r.timed_out {
        return Err(Error::Timeout {
            program: r.program.clone(),
            command_line: r.command_line(),
            timeout: timeout.unwrap_or(r.duration),
            stdout: r.stdout.clone(),
            stderr: r.stderr.clone(),
            attempts: r.attempts,
        });
    }
    if r.code.is_none() && r.oom_killed {
        return Err(crate::group::stats::oom_error(r));
    }
    if r.code.is_none() {
        return Err(Error::Signalled {
            program: r.program.clone(),
            command_line: r.command_line(),
            signal: r.signal.unwrap_or(0),
            stderr: r.stderr.clone(),
            attempts: r.attempts,
        });
    }
    Ok(())
}

/// The error for a non-zero exit where success was required.
pub(crate) fn non_zero(r: &ProcessResult<String>) -> Error {
    Error::NonZeroExit {
        program: r.program.clone(),
        command_line: r.command_line(),
        code: r.code.unwrap_or(-1),
        stdout: r.stdout.clone(),
        stderr: r.stderr.clone(),
        attempts: r.attempts,
    }
}

/// Which limit a timed-out run hit, for [`Error::Timeout`]'s `timeout`: what the watchdog
/// recorded when it fired; else (a replayed timeout) the overall deadline when the run lasted
/// that long, or the inactivity timeout.
pub(crate) fn expired_limit(
    cmd: &Command,
    recorded: Option<Duration>,
    elapsed: Duration,
) -> Option<Duration> {
    recorded.or(match (cmd.timeout, cmd.inactivity_timeout) {
        (Some(t), Some(idle)) => Some(if elapsed >= t { t } else { idle }),
        (t, idle) => t.or(idle),
    })
}

/// Rejects input the OS cannot take, naming the culprit: [`validate_input`], then what the
/// file system must provide (the working directory, a stdin file that is not a directory).
pub(crate) fn validate(cmd: &Command) -> Result<()> {
    validate_input(cmd)?;
    let program = cmd.program_name();
    if let Some(dir) = &cmd.cwd {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::InvalidWorkingDir {
                    program,
                    path: dir.clone(),
                    reason: "is not a directory".into(),
                })
            }
            Err(e) => {
                return Err(Error::InvalidWorkingDir {
                    program,
                    path: dir.clone(),
                    reason: e.to_string(),
                })
            }
        }
    }
    if let StdinKind::File(path) = &cmd.stdin.kind {
        if path.is_dir() {
            return Err(Error::io(
                &program,
                format!("opening stdin file {}", path.display()),
                io::Error::new(io::ErrorKind::InvalidInput, "is a directory"),
            ));
        }
    }
    Ok(())
}

/// The checks that need nothing but the command (no file system): an empty program, NUL
/// bytes, bad environment names, zero durations, reserved ids, knobs this platform lacks.
/// Test doubles run these too, so a command a double accepts is one production accepts.
pub(crate) fn validate_input(cmd: &Command) -> Result<()> {
    let program = cmd.program_name();
    if cmd.program.is_empty() {
        return Err(Error::invalid(
            &program,
            "program",
            "the program name is empty",
        ));
    }
    if has_nul(&cmd.program) {
        return Err(Error::invalid(&program, "program", "contains a NUL byte"));
    }
    for (i, a) in cmd.args.iter().enumerate() {
        if has_nul(a) {
            return Err(Error::invalid(
                &program,
                format!("argument {} ({:?})", i + 1, a.to_string_lossy()),
                "contains a NUL byte",
            ));
        }
    }
    for k in cmd.inherit_env.iter().flatten() {
        let name = k.to_string_lossy();
        if k.is_empty() || has_nul(k) || name.contains('=') {
            return Err(Error::invalid(
                &program,
                format!("inherit_env name {name:?}"),
                "is not a variable name (empty, or contains '=' or a NUL byte)",
            ));
        }
    }
    for (k, v) in &cmd.env {
        let name = k.to_string_lossy();
        if k.is_empty() {
            return Err(Error::invalid(
                &program,
                "environment variable name",
                "is empty",
            ));
        }
        if has_nul(k) {
            return Err(Error::invalid(
                &program,
                format!("environment variable name {name:?}"),
                "contains a NUL byte",
            ));
        }
        if k.to_string_lossy().contains('=') {
            return Err(Error::invalid(
                &program,
                format!("environment variable name {name:?}"),
                "contains '='",
            ));
        }
        if v.as_ref().is_some_and(|v| has_nul(v)) {
            return Err(Error::invalid(
                &program,
                format!("value of environment variable {name:?}"),
                "contains a NUL byte",
            ));
        }
    }
    for (what, d) in [
        ("timeout", cmd.timeout),
        ("inactivity_timeout", cmd.inactivity_timeout),
    ] {
        if d == Some(Duration::ZERO) {
            return Err(Error::invalid(&program, what, "must be greater than zero"));
        }
    }
    for (knob, id) in [("uid", cmd.uid), ("gid", cmd.gid)] {
        if id == Some(u32::MAX) {
            return Err(Error::invalid(
                &program,
                knob,
                "4294967295 (-1) is reserved and cannot be switched to",
            ));
        }
    }
    if !sys::HAS_POSIX_IDENTITY {
        for (knob, set) in [
            ("uid", cmd.uid.is_some()),
            ("gid", cmd.gid.is_some()),
            ("setsid", cmd.setsid),
        ] {
            if set {
                return Err(Error::unsupported(knob));
            }
        }
    }
    Ok(())
}

fn has_nul(s: &std::ffi::OsStr) -> bool {
    s.as_encoded_bytes().contains(&0)
}

/// The environment overrides to apply: the allow-list copied from the owner, then explicit ones.
fn resolve_env(cmd: &Command) -> Vec<(OsString, Option<OsString>)> {
    let mut env = Vec::new();
    if let Some(names) = &cmd.inherit_env {
        for n in names {
            if let Some(v) = std::env::var_os(n) {
                env.push((n.clone(), Some(v)));
            }
        }
    }
    env.extend(cmd.env.iter().cloned());
    env
}

/// The program's file, when a spawn that failed with "not found" was about a file that exists
/// after all. On Unix `execve` reports ENOENT for a script whose `#!` interpreter is missing (or
/// a binary whose loader is): that is not a missing program, and saying so would send the user
/// looking in the wrong place. Elsewhere "not found" means what it says.
fn existing_program_file(cmd: &Command) -> Option<std::path::PathBuf> {
    if !cfg!(unix) {
        return None;
    }
    let program = std::path::Path::new(&cmd.program);
    let in_cwd = |p: &std::path::Path| match &cmd.cwd {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p.to_path_buf(),
    };
    if program.components().count() > 1 {
        let file = in_cwd(program);
        return file.is_file().then_some(file);
    }
    // The child's PATH, searched as the spawn did (`/bin:/usr/bin` when it has none).
    let inherited = if cmd.env_clear || cmd.inherit_env.is_some() {
        None
    } else {
        std::env::var_os("PATH")
    };
    let path = resolve_env(cmd)
        .into_iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(inherited, |(_, v)| v)
        .unwrap_or_else(|| "/bin:/usr/bin".into());
    std::env::split_paths(&path)
        .map(|dir| in_cwd(&dir.join(program)))
        .find(|file| file.is_file())
}

/// Maps a spawn failure to the typed error naming what was wrong.
fn map_spawn_error(cmd: &Command, e: io::Error) -> Error {
    let program = cmd.program_name();
    if e.kind() == io::ErrorKind::Unsupported {
        return Error::Unsupported {
            what: e.to_string(),
            platform: std::env::consts::OS.into(),
        };
    }
    if e.kind() == io::ErrorKind::NotFound {
        if let Some(file) = existing_program_file(cmd) {
            let msg = format!(
                "{} exists but could not be executed: the interpreter on its #! line, or its \
                 dynamic loader, was not found",
                file.display()
            );
            return Error::Spawn {
                command_line: cmd.command_line(),
                program,
                source: io::Error::new(io::ErrorKind::NotFound, msg),
            };
        }
        return Error::NotFound { program };
    }
    let path = std::path::Path::new(&cmd.program);
    let detail = if path.is_dir() {
        Some("is a directory")
    } else {
        None
    };
    let source = match detail {
        Some(d) => io::Error::new(e.kind(), format!("{e} ({} {d})", path.display())),
        None => e,
    };
    Error::Spawn {
        command_line: cmd.command_line(),
        program,
        source,
    }
}
