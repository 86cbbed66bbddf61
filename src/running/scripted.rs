//! A [`RunningProcess`] with no OS process behind it, for the test doubles.
//!
//! The canned stdout and stderr are written into in-memory pipes (`tokio::io::duplex`) that
//! feed the **same** [`Pump`]s a real child's pipes feed, so line splitting, capture, buffer
//! policies, line handlers, backpressure, `stdout_lines`, `wait_for_line` and `finish_streamed`
//! behave exactly as for a real child. The command's timeout, inactivity timeout and
//! cancellation token are enforced by the same watchdog (it sends `Control::Kill`, which ends
//! the scripted process at once: there is no signal tier, so `timeout_grace` is ignored).
//!
//! The scripted "process" writes its output, lives on for `linger` (forever when `None`), then
//! exits: its pipe ends close and the exit is published on the watch channel, in that order.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt as _, DuplexStream};
use tokio::sync::{mpsc, watch};

use super::pump::{Activity, Mode, Pump};
use super::stdin::{feed, StdinWriter};
use super::{Control, ExitState, Owner, RunFlags, RunMeta, RunningProcess};
use crate::error::Result;
use crate::stdio::OutputMode;
use crate::sys::ExitInfo;
use crate::verbs::{Purpose, RunId};
use crate::Command;

/// Capacity of an in-memory pipe, like a kernel pipe buffer.
const PIPE_CAPACITY: usize = 64 * 1024;

/// What a scripted run does.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    /// Bytes written to stdout.
    pub(crate) stdout: Vec<u8>,
    /// Bytes written to stderr.
    pub(crate) stderr: Vec<u8>,
    /// How it ends when it exits on its own.
    pub(crate) exit: ExitInfo,
    /// Report the run as timed out (a recorded or scripted timeout).
    pub(crate) timed_out: bool,
    /// Pause before each stdout line.
    pub(crate) line_delay: Option<Duration>,
    /// How long it keeps running after writing its output; `None` = until killed.
    pub(crate) linger: Option<Duration>,
}

/// How a killed scripted process is reported: like a hard kill on the host OS (no exit code;
/// SIGKILL on POSIX, no signal on Windows, where the Job Object backend reports its own kills
/// without the OS exit code 1).
pub(crate) fn killed_exit() -> ExitInfo {
    crate::sys::killed_exit()
}

impl RunningProcess {
    /// Starts a scripted run of `cmd`: pid 0, no container ([`Owner::Detached`]), canned output
    /// through the real pumps.
    ///
    /// # Errors
    /// [`Error::Cancelled`] when the command's token is already cancelled (nothing starts).
    pub(crate) fn scripted(
        cmd: &Command,
        purpose: Purpose,
        script: Script,
    ) -> Result<RunningProcess> {
        let program = cmd.program_name();
        #[cfg(feature = "cancellation")]
        if cmd.cancel_token().is_some_and(|t| t.is_cancelled()) {
            return Err(crate::Error::Cancelled { program });
        }
        let started = Instant::now();
        crate::trace::spawn(&program, 0);
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
        let pipe = |mode: OutputMode, pump_mode: Mode, handler| {
            if mode != OutputMode::Capture {
                return (None, None);
            }
            let (reader, writer) = tokio::io::duplex(PIPE_CAPACITY);
            let pump = Pump::spawn(
                Box::pin(reader),
                pump_mode,
                cmd.buffer,
                handler,
                activity.clone(),
            );
            (Some(pump), Some(writer))
        };
        let (stdout, out_w) = pipe(cmd.stdout, stdout_mode, cmd.on_stdout_line.clone());
        let (stderr, err_w) = pipe(cmd.stderr, Mode::Capture, cmd.on_stderr_line.clone());

        // Stdin goes nowhere, but a source is still consumed (a producer never blocks on it).
        let mut stdin = None;
        let mut stdin_task = None;
        if cmd.keep_stdin_open {
            stdin = Some(StdinWriter::new(
                program.clone(),
                Box::pin(tokio::io::sink()),
            ));
        } else if cmd.stdin.has_data() {
            stdin_task = Some(tokio::spawn(feed(
                cmd.stdin.clone(),
                Box::pin(tokio::io::sink()),
            )));
        }

        let flags = Arc::new(RunFlags {
            cancel: crate::cancel::Cancel::of(cmd),
            ..RunFlags::default()
        });
        let who = RunId {
            program,
            pid: 0,
            started,
            flags: flags.clone(),
        };
        let (exit_tx, exit_rx) = watch::channel(None);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        tokio::spawn(play(script, out_w, err_w, exit_tx, ctl_rx, who.clone()));
        let watchdog =
            crate::verbs::spawn_watchdog(cmd, who, exit_rx.clone(), ctl_tx.clone(), None, activity);
        Ok(RunningProcess {
            meta,
            pid: 0,
            started,
            exit_rx,
            control: Some(ctl_tx),
            owner: Owner::Detached,
            stdout,
            stderr,
            stdout_stream: None,
            stdin,
            stdin_task,
            flags,
            watchdog,
        })
    }
}

/// The scripted process: write, linger, exit; or stop at once when killed.
async fn play(
    script: Script,
    out: Option<DuplexStream>,
    err: Option<DuplexStream>,
    exit_tx: watch::Sender<Option<ExitState>>,
    mut ctl: mpsc::UnboundedReceiver<Control>,
    who: RunId,
) {
    let Script {
        stdout,
        stderr,
        exit,
        timed_out,
        line_delay,
        linger,
    } = script;
    // Owning the pipe ends inside this future means they close when it ends or is dropped.
    let life = async move {
        let write_out = async {
            let mut out = out;
            if let Some(w) = out.as_mut() {
                write_paced(w, &stdout, line_delay).await;
            }
            out
        };
        let write_err = async {
            let mut err = err;
            if let Some(w) = err.as_mut() {
                let _ = w.write_all(&stderr).await;
            }
            err
        };
        let pipes = tokio::join!(write_out, write_err);
        match linger {
            Some(d) if !d.is_zero() => tokio::time::sleep(d).await,
            Some(_) => {}
            None => std::future::pending().await,
        }
        drop(pipes);
    };
    // Any control message (kill, terminate) or the handle going away ends the process.
    let killed = async { ctl.recv().await };
    let exit = tokio::select! {
        biased;
        _ = killed => killed_exit(),
        _ = life => {
            if timed_out {
                who.flags.timed_out.store(true, Ordering::SeqCst);
            }
            exit
        }
    };
    crate::trace::exit(&who.program, 0, who.started.elapsed(), &exit, &who.flags);
    let _ = exit_tx.send(Some(ExitState::Exited(exit)));
}

/// Writes `data`, pausing `delay` before each line when asked.
async fn write_paced(w: &mut DuplexStream, data: &[u8], delay: Option<Duration>) {
    let Some(delay) = delay else {
        let _ = w.write_all(data).await;
        return;
    };
    for line in data.split_inclusive(|b| *b == b'\n') {
        tokio::time::sleep(delay).await;
        if w.write_all(line).await.is_err() {
            return;
        }
    }
}
