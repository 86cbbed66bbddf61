//! `RunningProcess`: a live child with line streams, interactive stdin and readiness probes.

mod merge;
#[cfg(feature = "stats")]
pub(crate) mod profile;
pub(crate) mod pump;
pub(crate) mod scripted;
pub(crate) mod stdin;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;

use crate::error::{Error, Result};
use crate::group::{GroupInner, ProcessGroup};
use crate::stdio::Encoding;
use crate::sys::ExitInfo;

pub use merge::{AllLines, OutputLine};
#[cfg(feature = "stats")]
pub use profile::RunProfile;
pub use pump::LineStream;
pub use stdin::StdinWriter;

use pump::{Mode, Pump};

/// How long a run in a *shared* group keeps draining its pipes after the child exited. A
/// descendant still holding a pipe may not be killed (siblings are off limits), so the drain is
/// bounded instead of waiting for end-of-file forever.
pub(crate) const SHARED_DRAIN_LINGER: Duration = Duration::from_millis(250);

/// What the child task reports once.
#[derive(Debug, Clone)]
pub(crate) enum ExitState {
    Exited(ExitInfo),
    Failed(String),
}

/// Requests to the task that owns the OS child handle.
#[derive(Debug)]
pub(crate) enum Control {
    /// Hard-kill the direct child.
    Kill,
    /// Send a polite termination request (`SIGTERM`) to the direct child only.
    Term,
}

/// Flags set by the watchdog (timeout, inactivity, cancellation).
#[derive(Debug, Default)]
pub(crate) struct RunFlags {
    pub(crate) timed_out: AtomicBool,
    pub(crate) cancelled: AtomicBool,
    /// OOM kills the (shared) group had recorded when this child was spawned.
    pub(crate) oom_baseline: std::sync::OnceLock<u64>,
    /// The run's cancellation token, for [`RunFlags::is_cancelled`].
    pub(crate) cancel: crate::cancel::Cancel,
    /// Which limit the watchdog enforced (`timeout` or `inactivity_timeout`), set before
    /// `timed_out`.
    pub(crate) expired_limit: std::sync::OnceLock<std::time::Duration>,
}

impl RunFlags {
    /// Whether the run ends as cancelled: the watchdog killed it for its token, or a deadline
    /// and the token landed together (the run timed out and the token was cancelled by the time
    /// the outcome is reported) — cancellation wins that race.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
            || (self.timed_out.load(Ordering::SeqCst) && self.cancel.is_cancelled())
    }
}

/// Facts about a run that every finisher needs.
#[derive(Debug, Clone)]
pub(crate) struct RunMeta {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    pub(crate) encoding: Encoding,
}

/// Who owns the container of a run.
#[derive(Debug)]
pub(crate) enum Owner {
    /// A private group: dropping the handle kills the whole tree.
    Private(ProcessGroup),
    /// A shared group: only this child is ours to kill.
    Shared(Arc<GroupInner>),
    /// No OS process (a scripted double).
    Detached,
}

/// A live child process.
///
/// Returned by [`Command::start`](crate::Command::start) (which gives the handle a private
/// kill-on-drop group) and [`ProcessGroup::start`](crate::ProcessGroup::start) (a shared group:
/// the handle's timeout, kill and drop touch only this child).
///
/// Stdout and stderr are always drained concurrently: reading one never deadlocks on the
/// other. Dropping the handle kills the child (and, for a private group, its whole tree).
pub struct RunningProcess {
    pub(crate) meta: RunMeta,
    pub(crate) pid: u32,
    pub(crate) started: Instant,
    pub(crate) exit_rx: watch::Receiver<Option<ExitState>>,
    pub(crate) control: Option<mpsc::UnboundedSender<Control>>,
    pub(crate) owner: Owner,
    pub(crate) stdout: Option<Pump>,
    pub(crate) stderr: Option<Pump>,
    pub(crate) stdout_stream: Option<LineStream>,
    pub(crate) stdin: Option<StdinWriter>,
    pub(crate) stdin_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    pub(crate) flags: Arc<RunFlags>,
    pub(crate) watchdog: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RunningProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningProcess")
            .field("program", &self.meta.program)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl RunningProcess {
    /// The OS process id of the direct child (0 for a scripted double).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The program.
    pub fn program(&self) -> &str {
        &self.meta.program
    }

    /// Whether the child has exited (without waiting).
    pub fn has_exited(&self) -> bool {
        self.exit_rx.borrow().is_some()
    }

    /// The group of this run, when it owns a private one.
    pub(crate) fn private_group(&self) -> Option<&ProcessGroup> {
        match &self.owner {
            Owner::Private(g) => Some(g),
            _ => None,
        }
    }

    /// Streams stdout line by line.
    ///
    /// Returns the remaining lines: after [`wait_for_line`](Self::wait_for_line), the lines after
    /// the match. A second call (or a call after [`all_lines`](Self::all_lines)) returns an
    /// empty stream. Lines are split on `\n` (a trailing `\r` is removed) and decoded lossily,
    /// so invalid UTF-8 never ends the stream; a last line without a newline is delivered too.
    ///
    /// The stream applies backpressure: while it is not read, the pump stops once a small
    /// fixed window is buffered, the pipe fills, and the child blocks on its next write, so
    /// memory stays bounded however much the child prints. Stderr keeps draining meanwhile.
    /// The stream ends when stdout closes: the child exited (the tree of a `start()` handle is
    /// torn down then, so a grandchild holding the pipe cannot keep it open), the command's
    /// timeout killed it, or the handle was dropped.
    pub fn stdout_lines(&mut self) -> LineStream {
        self.ensure_stdout_stream();
        self.stdout_stream.take().unwrap_or_else(LineStream::empty)
    }

    /// Streams stderr line by line (lines captured before this call come first).
    ///
    /// Until this is called, stderr is captured in the background per the command's
    /// [`BufferPolicy`](crate::BufferPolicy) (for [`finish_streamed`](Self::finish_streamed));
    /// from here on it goes to the stream instead, with the same backpressure as
    /// [`stdout_lines`](Self::stdout_lines). A second call returns an empty stream.
    pub fn stderr_lines(&mut self) -> LineStream {
        match self.stderr.as_mut() {
            Some(p) => p.take_lines(),
            None => LineStream::empty(),
        }
    }

    fn ensure_stdout_stream(&mut self) {
        if self.stdout_stream.is_none() {
            if let Some(p) = self.stdout.as_mut() {
                if p.rx.is_some() {
                    self.stdout_stream = Some(p.take_lines());
                }
            }
        }
    }

    /// The writer for stdin, once, when the command used
    /// [`keep_stdin_open`](crate::Command::keep_stdin_open).
    pub fn standard_input(&mut self) -> Option<StdinWriter> {
        self.stdin.take()
    }

    /// Waits for the child to exit and returns its exit code (`None` when it was killed: by a
    /// timeout, a signal, or [`kill`](Self::kill)).
    ///
    /// Stdout that was not handed to a stream is discarded from here on, so a chatty child
    /// cannot block on a full pipe while you wait. A stream you hold but do not read still
    /// applies backpressure: drain or drop it first. A stdin writer you never took with
    /// [`standard_input`](Self::standard_input) is closed first (as `std`'s `Child::wait`
    /// does), so a child reading stdin to its end can finish.
    ///
    /// # Errors
    /// [`Error::Cancelled`] when the run's cancellation token killed it (also when the token
    /// fired together with the timeout); [`Error::Io`] when the OS wait fails.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future loses nothing; wait again later.
    pub async fn wait(&mut self) -> Result<Option<i32>> {
        self.close_untaken_stdin();
        self.release_unread_stdout();
        let st = self.wait_exit().await;
        self.settle_handler_pumps().await;
        self.resume_handler_panics();
        self.check_cancelled()?;
        Ok(self.reported_code(st?))
    }

    /// The exit code to report: none for a run the timeout ended (even when the child caught
    /// the polite signal and exited by itself).
    fn reported_code(&self, st: ExitInfo) -> Option<i32> {
        if self.flags.timed_out.load(Ordering::SeqCst) {
            None
        } else {
            st.code
        }
    }

    /// A [`keep_stdin_open`](crate::Command::keep_stdin_open) writer nobody took is closed
    /// (the child sees end-of-file), as `std::process::Child::wait` does: nothing can write to
    /// it any more, and a child reading stdin to its end would otherwise wait forever.
    pub(crate) fn close_untaken_stdin(&mut self) {
        self.stdin = None;
    }

    /// Resumes on the caller's task a panic an `on_stdout_line` / `on_stderr_line` handler
    /// raised on its pump (which carried on without it, so the child never blocked).
    pub(crate) fn resume_handler_panics(&self) {
        for p in [&self.stdout, &self.stderr].into_iter().flatten() {
            p.shared.resume_handler_panic();
        }
    }

    /// After the exit, lets every pump that runs a line handler reach end-of-file (bounded in
    /// a shared group, without giving up on it), so a handler's panic on the last lines is
    /// seen by [`resume_handler_panics`](Self::resume_handler_panics). A stdout stream the
    /// caller holds is left alone: its pump may be waiting for the caller to read.
    async fn settle_handler_pumps(&mut self) {
        let linger = self.drain_linger();
        for p in [self.stdout.as_ref(), self.stderr.as_ref()]
            .into_iter()
            .flatten()
        {
            if !p.has_handler || p.shared.mode() == Mode::Channel {
                continue;
            }
            match linger {
                None => p.wait_done().await,
                Some(d) => {
                    let _ = tokio::time::timeout(d, p.wait_done()).await;
                }
            }
        }
    }

    /// How long a finisher waits for a pump after the exit: unbounded when the run's own
    /// container was torn down (nothing can hold the pipe), else a short grace.
    fn drain_linger(&self) -> Option<std::time::Duration> {
        match &self.owner {
            Owner::Shared(_) => Some(SHARED_DRAIN_LINGER),
            // The process-group mechanism cannot kill a descendant that left the group
            // (`setsid`): one that still holds the pipe must not hang the run.
            Owner::Private(g) if g.mechanism() == crate::Mechanism::ProcessGroup => {
                Some(SHARED_DRAIN_LINGER)
            }
            _ => None,
        }
    }

    /// Stdout not handed to a stream is switched to discard (nobody will read it). That
    /// includes the rest of a stream only a probe (`wait_for_line`) read from: a server that
    /// keeps logging after its banner must not block a later `wait()`.
    fn release_unread_stdout(&mut self) {
        let held_here = self.stdout_stream.take().is_some();
        if let Some(p) = self.stdout.as_mut() {
            if p.rx.take().is_some() || held_here {
                p.shared.set_mode(Mode::Discard);
            }
        }
    }

    pub(crate) fn check_cancelled(&self) -> Result<()> {
        if self.flags.is_cancelled() {
            return Err(Error::Cancelled {
                program: self.meta.program.clone(),
            });
        }
        Ok(())
    }

    /// Waits for the exit state without touching the pipes.
    pub(crate) async fn wait_exit(&mut self) -> Result<ExitInfo> {
        let mut rx = self.exit_rx.clone();
        let state = match rx.wait_for(|s| s.is_some()).await {
            Ok(s) => s.clone().expect("waited for Some"),
            Err(_) => ExitState::Failed("the child task ended without reporting an exit".into()),
        };
        match state {
            ExitState::Exited(e) => Ok(e),
            ExitState::Failed(msg) => Err(Error::io(
                &self.meta.program,
                "waiting for the child",
                std::io::Error::other(msg),
            )),
        }
    }

    /// Kills the child — the whole tree for a handle from [`Command::start`](crate::Command::start),
    /// only this child for one from a shared group — and waits until it is reaped.
    ///
    /// # Errors
    /// [`Error::Io`] when the OS refuses the kill.
    ///
    /// # Cancel safety
    /// Cancel safe: the kill is sent before the first `.await`; dropping the future only stops
    /// waiting for the reap, and the handle stays usable (`wait` reports the kill).
    pub async fn kill(&mut self) -> Result<()> {
        self.start_kill()?;
        let _ = self.wait_exit().await?;
        Ok(())
    }

    /// Sends the kill without waiting.
    pub(crate) fn start_kill(&mut self) -> Result<()> {
        match &self.owner {
            Owner::Private(g) => g.kill()?,
            Owner::Shared(_) | Owner::Detached => {}
        }
        if let Some(c) = &self.control {
            let _ = c.send(Control::Kill);
        }
        Ok(())
    }

    /// Waits for exit and returns the exit code with the stderr drained in the background while
    /// stdout was streamed (kept per the command's [`BufferPolicy`](crate::BufferPolicy):
    /// past the cap, the head and the tail).
    ///
    /// The code is `None` when the run was killed (the command's timeout, a signal,
    /// [`kill`](Self::kill)). Stderr is empty when it was taken by
    /// [`stderr_lines`](Self::stderr_lines) or [`all_lines`](Self::all_lines). Stdout not handed
    /// to a stream is discarded; a stream you still hold keeps its backpressure, so read it to
    /// the end (or drop it) before finishing.
    ///
    /// # Errors
    /// [`Error::Cancelled`] when the run's token killed it (the stream ended early because of
    /// that); [`Error::Io`] when waiting fails.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping it mid-way may lose the stderr collected so far (and kills the
    /// child, as dropping the handle does).
    pub async fn finish_streamed(mut self) -> Result<(Option<i32>, String)> {
        self.close_untaken_stdin();
        self.release_unread_stdout();
        let st = self.wait_exit().await;
        self.check_cancelled()?;
        let code = self.reported_code(st?);
        self.drain_after_exit_one(true).await;
        self.settle_handler_pumps().await;
        self.resume_handler_panics();
        let stderr = match self.stderr.as_ref() {
            Some(p) => {
                let (bytes, _) = p.shared.take_capture();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            None => String::new(),
        };
        Ok((code, stderr))
    }

    /// After exit: ends the task feeding a `Stdin` source. Nobody can read the data any more,
    /// and a `Stdin::from_lines` stream may never end on its own (an idle channel, a file
    /// tail), so the task is aborted rather than awaited.
    ///
    /// A `Stdin::from_lines` stream that panicked (which cut stdin short) has its panic resumed
    /// here, on the caller's task, instead of passing for a clean end of input.
    pub(crate) async fn stop_feeding_stdin(&mut self) {
        if let Some(t) = self.stdin_task.take() {
            t.abort();
            if let Err(e) = t.await {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
    }

    /// After exit: wait for the pumps to reach end-of-file (the tree is torn down for private
    /// groups, so this is prompt), bounded for shared groups.
    pub(crate) async fn drain_after_exit(&mut self) {
        self.drain_after_exit_one(false).await;
        self.drain_after_exit_one(true).await;
    }

    async fn drain_after_exit_one(&mut self, stderr: bool) {
        let linger = self.drain_linger();
        let pump = if stderr {
            self.stderr.as_mut()
        } else {
            self.stdout.as_mut()
        };
        if let Some(p) = pump {
            match linger {
                None => p.wait_done().await,
                Some(d) => {
                    if tokio::time::timeout(d, p.wait_done()).await.is_err() {
                        p.abort();
                    }
                }
            }
        }
    }

    /// Waits until a stdout line satisfies `pred` and returns it. Stdout is consumed up to and
    /// including the match; continue with [`stdout_lines`](Self::stdout_lines) (the lines after
    /// the match) or [`finish_streamed`](Self::finish_streamed).
    ///
    /// # Errors
    /// [`Error::NotReady`] when no line matched within `deadline`, or stdout closed first (the
    /// child exited), or stdout was already taken by [`stdout_lines`](Self::stdout_lines) /
    /// [`all_lines`](Self::all_lines) or is not piped. The child is **not** killed.
    /// [`Error::Cancelled`] when the run's token killed it while waiting.
    ///
    /// # Cancel safety
    /// Cancel safe at line granularity: lines read before cancellation are consumed.
    pub async fn wait_for_line(
        &mut self,
        mut pred: impl FnMut(&str) -> bool,
        deadline: Duration,
    ) -> Result<String> {
        self.ensure_stdout_stream();
        let program = self.meta.program.clone();
        let Some(stream) = self.stdout_stream.as_mut() else {
            return Err(Error::NotReady {
                program,
                reason: "stdout is not captured or was already taken by stdout_lines()".into(),
            });
        };
        let flags = self.flags.clone();
        let until = crate::time::deadline_in(deadline);
        // In a shared group a descendant we may not kill can hold stdout open after the child
        // exited: then the lines already written get a short grace, not the whole deadline.
        let shared = matches!(self.owner, Owner::Shared(_));
        let mut exit_rx = self.exit_rx.clone();
        let mut exited_at: Option<tokio::time::Instant> = None;
        let sleep = tokio::time::sleep_until(until);
        tokio::pin!(sleep);
        loop {
            if shared && exited_at.is_none() && exit_rx.borrow().is_some() {
                let at = crate::time::deadline_in(SHARED_DRAIN_LINGER);
                exited_at = Some(at);
                if at < until {
                    sleep.as_mut().reset(at);
                }
            }
            tokio::select! {
                biased;
                line = stream.next() => match line {
                    Some(l) if pred(&l) => return Ok(l),
                    Some(_) => continue,
                    // The token killed the run: that, not readiness, is the story.
                    None if flags.is_cancelled() => return Err(Error::Cancelled { program }),
                    None => return Err(Error::NotReady {
                        program,
                        reason: "stdout closed (the child exited) before a matching line".into(),
                    }),
                },
                _ = exit_rx.changed(), if shared && exited_at.is_none() => continue,
                _ = &mut sleep => return Err(Error::NotReady {
                    program,
                    reason: if exited_at.is_some() {
                        "the child exited before a matching stdout line".into()
                    } else {
                        format!("no matching stdout line within {deadline:?}")
                    },
                }),
            }
        }
    }

    /// Waits until `addr` accepts a TCP connection. Does not touch the pipes.
    ///
    /// # Errors
    /// [`Error::NotReady`] when `deadline` passes or the child exits first. The child is not
    /// killed. [`Error::Cancelled`] when the run's token killed it while waiting.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_for_port(&mut self, addr: SocketAddr, deadline: Duration) -> Result<()> {
        let what = format!("a TCP listener on {addr}");
        self.poll_ready(&what, deadline, || async move {
            matches!(
                tokio::time::timeout(
                    Duration::from_millis(250),
                    tokio::net::TcpStream::connect(addr)
                )
                .await,
                Ok(Ok(_))
            )
        })
        .await
    }

    /// Waits until the async `check` returns `true` (polled every 25 ms). Does not touch the
    /// pipes.
    ///
    /// # Errors
    /// [`Error::NotReady`] when `deadline` passes or the child exits first. The child is not
    /// killed. [`Error::Cancelled`] when the run's token killed it while waiting.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_for<F, Fut>(&mut self, check: F, deadline: Duration) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        self.poll_ready("the readiness check", deadline, check)
            .await
    }

    async fn poll_ready<F, Fut>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut check: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let until = crate::time::deadline_in(deadline);
        let mut exit_rx = self.exit_rx.clone();
        loop {
            if exit_rx.borrow().is_some() {
                self.check_cancelled()?;
                return Err(Error::NotReady {
                    program: self.meta.program.clone(),
                    reason: format!("the child exited before {what} was ready"),
                });
            }
            tokio::select! {
                ok = check() => if ok { return Ok(()) },
                _ = tokio::time::sleep_until(until) => {
                    return Err(Error::NotReady {
                        program: self.meta.program.clone(),
                        reason: format!("{what} was not ready within {deadline:?}"),
                    })
                }
                _ = exit_rx.changed() => continue,
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(25)) => {}
                _ = exit_rx.changed() => {}
            }
            if tokio::time::Instant::now() >= until {
                return Err(Error::NotReady {
                    program: self.meta.program.clone(),
                    reason: format!("{what} was not ready within {deadline:?}"),
                });
            }
        }
    }

    /// Elapsed time since spawn.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for RunningProcess {
    fn drop(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        // A `Stdin::from_lines` source may never end (an open channel): release it.
        if let Some(t) = self.stdin_task.take() {
            t.abort();
        }
        if let Some(c) = self.control.take() {
            if self.exit_rx.borrow().is_none() {
                let _ = c.send(Control::Kill);
            }
        }
        // A private group is dropped with `owner` and kills the whole tree.
    }
}

/// Waits for whichever of `procs` exits first and returns its index and exit code. Borrows
/// only: the others stay usable.
///
/// No per-process timeout is applied (bound the race with `tokio::time::timeout`), and no
/// output is pumped on your behalf beyond the usual background drain of stderr: stdout nobody
/// reads applies backpressure, so drain chatty children first (or give them
/// `stdout(OutputMode::Null)`). Nothing is discarded: the winner's unread output stays
/// available to its streams.
///
/// # Errors
/// [`Error::InvalidInput`] for an empty slice; otherwise as [`RunningProcess::wait`].
///
/// # Cancel safety
/// Cancel safe.
pub async fn wait_any(procs: &mut [&mut RunningProcess]) -> Result<(usize, Option<i32>)> {
    if procs.is_empty() {
        return Err(Error::invalid(
            "wait_any",
            "processes",
            "no process to wait for",
        ));
    }
    let mut rxs: Vec<_> = procs.iter().map(|p| p.exit_rx.clone()).collect();
    // Each future resolves once its child reported an exit (or its reporter is gone, which
    // `wait` then turns into an error): no busy loop either way.
    let mut futs: Vec<_> = rxs
        .iter_mut()
        .map(|r| Box::pin(async move { r.wait_for(|s| s.is_some()).await.is_ok() }))
        .collect();
    let idx = std::future::poll_fn(|cx| {
        for (i, f) in futs.iter_mut().enumerate() {
            if f.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(i);
            }
        }
        std::task::Poll::Pending
    })
    .await;
    drop(futs);
    let p = &mut *procs[idx];
    let st = p.wait_exit().await?;
    p.check_cancelled()?;
    Ok((idx, p.reported_code(st)))
}
