//! The testing seam: every verb goes through a [`ProcessRunner`].
//!
//! [`JobRunner`] spawns for real (a private group per run); a [`ProcessGroup`] (or `&ProcessGroup`)
//! spawns into a shared group; the doubles never touch the OS.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::pipeline::{self, Pipeline, RunningPipeline};
use crate::result::ProcessResult;
use crate::running::RunningProcess;
use crate::verbs::{self, Scope};
use crate::{Command, ProcessGroup};

mod cli_client;
#[cfg(feature = "mock")]
mod mock;
#[cfg(feature = "record")]
mod record_replay;
mod recording;
mod scripted;

pub use cli_client::CliClient;
#[cfg(feature = "mock")]
pub use mock::MockRunner;
#[cfg(feature = "record")]
pub use record_replay::{Cassette, RecordReplayRunner};
pub use recording::{Invocation, Primitive, RecordingRunner};
pub use scripted::{Reply, ScriptedRunner};

/// A boxed, `Send` future: the return type of [`ProcessRunner`]'s methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The seam between the verbs and whatever actually runs a command.
///
/// Two primitives: run to completion capturing everything ([`output_bytes`](Self::output_bytes)),
/// and start a live handle ([`start`](Self::start)). [`ProcessRunnerExt`] builds every other verb
/// (`run`, `output_string`, `exit_code`, `probe`, `first_line`) on top, with the same semantics
/// as [`Command`]'s own verbs, so a double behaves exactly like the real thing.
pub trait ProcessRunner: Send + Sync {
    /// Runs `cmd` to completion, capturing stdout and stderr. A non-zero exit is not an error.
    ///
    /// # Errors
    /// Spawn failures, invalid input, cancellation; see [`Error`].
    ///
    /// # Cancel safety
    /// Implementations must leave nothing running when the future is dropped: [`JobRunner`]
    /// kills the whole tree, a [`ProcessGroup`] kills the child, the test doubles spawn
    /// nothing.
    fn output_bytes<'a>(
        &'a self,
        cmd: &'a Command,
    ) -> BoxFuture<'a, Result<ProcessResult<Vec<u8>>>>;

    /// Starts `cmd` and returns a live handle.
    ///
    /// # Errors
    /// Spawn failures, invalid input, cancellation; see [`Error`].
    ///
    /// # Cancel safety
    /// Cancel safe for the crate's runners: a child started by a dropped future is owned by a
    /// handle that is dropped with it, which kills it.
    fn start<'a>(&'a self, cmd: &'a Command) -> BoxFuture<'a, Result<RunningProcess>>;

    /// Runs `pipeline` to completion: the combined (pipefail) outcome with every stage's
    /// outcome in [`ProcessResult::stages`].
    ///
    /// [`JobRunner`] and [`ProcessGroup`] connect the stages with native OS pipes. The provided
    /// default, meant for test doubles, runs the stages one after the other through
    /// [`output_bytes`](Self::output_bytes), feeding each stage's stdout to the next as stdin
    /// bytes (so a never-ending producer never ends there); a runner that spawns for real
    /// should forward to a real runner instead.
    ///
    /// # Errors
    /// Spawn failures, invalid input, cancellation of any stage; see [`Error`].
    ///
    /// # Cancel safety
    /// As [`output_bytes`](Self::output_bytes): dropping the future kills every stage.
    fn output_pipeline<'a>(
        &'a self,
        pipeline: &'a Pipeline,
    ) -> BoxFuture<'a, Result<ProcessResult<Vec<u8>>>> {
        Box::pin(pipeline::output_emulated(self, pipeline))
    }

    /// Starts every stage of `pipeline` and returns a live handle.
    ///
    /// The provided default (for test doubles) runs every stage but the last to completion
    /// through [`output_bytes`](Self::output_bytes) and [`start`](Self::start)s the last one
    /// with the collected bytes as stdin; [`JobRunner`] and [`ProcessGroup`] start every stage
    /// at once over native pipes.
    ///
    /// # Errors
    /// Spawn failures, invalid input, cancellation of any stage; see [`Error`].
    ///
    /// # Cancel safety
    /// As [`start`](Self::start): stages started by a dropped future are killed.
    fn start_pipeline<'a>(
        &'a self,
        pipeline: &'a Pipeline,
    ) -> BoxFuture<'a, Result<RunningPipeline>> {
        Box::pin(pipeline::start_emulated(self, pipeline))
    }
}

/// Forwards every method of [`ProcessRunner`] through a pointer type.
macro_rules! forward_runner {
    ($($ptr:ty),*) => {$(
        impl<R: ProcessRunner + ?Sized> ProcessRunner for $ptr {
            fn output_bytes<'a>(
                &'a self,
                cmd: &'a Command,
            ) -> BoxFuture<'a, Result<ProcessResult<Vec<u8>>>> {
                (**self).output_bytes(cmd)
            }
            fn start<'a>(&'a self, cmd: &'a Command) -> BoxFuture<'a, Result<RunningProcess>> {
                (**self).start(cmd)
            }
            fn output_pipeline<'a>(
                &'a self,
                p: &'a Pipeline,
            ) -> BoxFuture<'a, Result<ProcessResult<Vec<u8>>>> {
                (**self).output_pipeline(p)
            }
            fn start_pipeline<'a>(
                &'a self,
                p: &'a Pipeline,
            ) -> BoxFuture<'a, Result<RunningPipeline>> {
                (**self).start_pipeline(p)
            }
        }
    )*};
}

forward_runner!(&R, Arc<R>, Box<R>);

/// The real runner: every run gets a fresh private kill-on-drop group.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobRunner;

impl JobRunner {
    /// The real runner.
    pub fn new() -> JobRunner {
        JobRunner
    }
}

impl ProcessRunner for JobRunner {
    fn output_bytes<'a>(
        &'a self,
        cmd: &'a Command,
    ) -> BoxFuture<'a, Result<ProcessResult<Vec<u8>>>> {
        Box::pin(verbs::output_bytes(cmd, Scope::Private))
    }
    fn start<'a>(&'a self, cmd: &'a Command) -> BoxFuture<'a, Result<RunningProcess>> {
        Box::pin(verbs::start(cmd, Scope::Private))
    }
    fn output_pipeline<'a>(
        &'a self,
        p: &'a Pipeline,
    ) -> BoxFuture<'a, Result<ProcessResult<Vec<u8>>>> {
        Box::pin(pipeline::output_native(p, None))
    }
    fn start_pipeline<'a>(&'a self, p: &'a Pipeline) -> BoxFuture<'a, Result<RunningPipeline>> {
        Box::pin(async move { pipeline::start_native(p, None, verbs::Purpose::Stream) })
    }
}

impl ProcessRunner for ProcessGroup {
    fn output_bytes<'a>(
        &'a self,
        cmd: &'a Command,
    ) -> BoxFuture<'a, Result<ProcessResult<Vec<u8>>>> {
        Box::pin(verbs::output_bytes(
            cmd,
            Scope::Shared(self.inner().clone()),
        ))
    }
    fn start<'a>(&'a self, cmd: &'a Command) -> BoxFuture<'a, Result<RunningProcess>> {
        Box::pin(verbs::start(cmd, Scope::Shared(self.inner().clone())))
    }
    fn output_pipeline<'a>(
        &'a self,
        p: &'a Pipeline,
    ) -> BoxFuture<'a, Result<ProcessResult<Vec<u8>>>> {
        Box::pin(pipeline::output_native(p, Some(self.inner().clone())))
    }
    fn start_pipeline<'a>(&'a self, p: &'a Pipeline) -> BoxFuture<'a, Result<RunningPipeline>> {
        let inner = self.inner().clone();
        Box::pin(async move { pipeline::start_native(p, Some(inner), verbs::Purpose::Stream) })
    }
}

/// The verbs, on any [`ProcessRunner`]. Same semantics as [`Command`]'s verbs.
pub trait ProcessRunnerExt: ProcessRunner {
    /// Runs `cmd`, requiring success; returns trimmed stdout.
    ///
    /// # Errors
    /// [`Error::NonZeroExit`], [`Error::Timeout`], [`Error::Signalled`] (each with the retry
    /// attempt count), [`Error::Cancelled`], plus spawn errors.
    ///
    /// # Cancel safety
    /// As the runner's [`output_bytes`](ProcessRunner::output_bytes): dropping the future
    /// leaves nothing running (with [`JobRunner`], the whole tree is killed).
    fn run<'a>(&'a self, cmd: &'a Command) -> impl Future<Output = Result<String>> + Send + 'a {
        async move {
            let r = crate::retry::output_with_retry(self, cmd).await?;
            // A failed run reports its own error (exit code, timeout, signal), which strict
            // decoding must not mask: its stdout is then only the error's payload.
            let encoding = if r.success() {
                cmd.encoding
            } else {
                crate::Encoding::Utf8Lossy
            };
            let r = verbs::to_string_result(r, encoding)?;
            verbs::check_finished(&r, verbs::expired_limit(cmd, r.expired_after, r.duration))?;
            if r.code != Some(0) {
                return Err(verbs::non_zero(&r));
            }
            Ok(r.stdout.trim().to_owned())
        }
    }

    /// Runs `cmd` and returns the full outcome with stdout decoded per its encoding.
    ///
    /// # Errors
    /// Spawn errors, [`Error::InvalidUtf8`] under strict encoding, cancellation. Never for a
    /// non-zero exit or a timeout (captured as [`ProcessResult::timed_out`]).
    ///
    /// # Cancel safety
    /// As the runner's [`output_bytes`](ProcessRunner::output_bytes): dropping the future
    /// leaves nothing running (with [`JobRunner`], the whole tree is killed).
    fn output_string<'a>(
        &'a self,
        cmd: &'a Command,
    ) -> impl Future<Output = Result<ProcessResult<String>>> + Send + 'a {
        async move {
            let r = crate::retry::output_with_retry(self, cmd).await?;
            verbs::to_string_result(r, cmd.encoding)
        }
    }

    /// Runs `cmd` and returns its exit code.
    ///
    /// # Errors
    /// [`Error::Timeout`] and [`Error::Signalled`] rather than an invented code;
    /// [`Error::Cancelled`]; spawn errors.
    ///
    /// # Cancel safety
    /// As the runner's [`output_bytes`](ProcessRunner::output_bytes): dropping the future
    /// leaves nothing running (with [`JobRunner`], the whole tree is killed).
    fn exit_code<'a>(&'a self, cmd: &'a Command) -> impl Future<Output = Result<i32>> + Send + 'a {
        async move {
            let r = crate::retry::output_with_retry(self, cmd).await?;
            let r = r.map_stdout(|_| String::new());
            verbs::check_finished(&r, verbs::expired_limit(cmd, r.expired_after, r.duration))?;
            Ok(r.code.unwrap_or(-1))
        }
    }

    /// Runs `cmd` as a yes/no question: exit 0 is `true`, 1 is `false`.
    ///
    /// # Errors
    /// [`Error::NonZeroExit`] for any other code; timeout, signal and cancellation errors as
    /// [`exit_code`](Self::exit_code).
    ///
    /// # Cancel safety
    /// As the runner's [`output_bytes`](ProcessRunner::output_bytes): dropping the future
    /// leaves nothing running (with [`JobRunner`], the whole tree is killed).
    fn probe<'a>(&'a self, cmd: &'a Command) -> impl Future<Output = Result<bool>> + Send + 'a {
        async move {
            let r = crate::retry::output_with_retry(self, cmd).await?;
            let r = verbs::to_string_result(r, crate::Encoding::Utf8Lossy)?;
            verbs::check_finished(&r, verbs::expired_limit(cmd, r.expired_after, r.duration))?;
            match r.code {
                Some(0) => Ok(true),
                Some(1) => Ok(false),
                _ => Err(verbs::non_zero(&r)),
            }
        }
    }

    /// Starts `cmd` and returns the first stdout line satisfying `pred`, killing the run once it
    /// is found; `None` as soon as stdout closes without a match (without waiting for the exit:
    /// a child still running then is killed).
    ///
    /// # Errors
    /// Spawn errors; [`Error::Timeout`] when the command's timeout ends the search;
    /// [`Error::Cancelled`].
    ///
    /// # Cancel safety
    /// Dropping the future drops the live handle, which kills the run (with [`JobRunner`], the
    /// whole tree).
    fn first_line<'a, P>(
        &'a self,
        cmd: &'a Command,
        mut pred: P,
    ) -> impl Future<Output = Result<Option<String>>> + Send + 'a
    where
        P: FnMut(&str) -> bool + Send + 'a,
    {
        async move {
            use tokio_stream::StreamExt as _;
            // A double's `start` may not know about tokens: short-circuit here too.
            crate::cancel::precheck(cmd)?;
            let mut rp = self.start(cmd).await?;
            let mut lines = rp.stdout_lines();
            while let Some(l) = lines.next().await {
                if pred(&l) {
                    // Dropping the handle kills the run.
                    return Ok(Some(l));
                }
            }
            drop(lines);
            // Stdout closed without a match. The watchdog raises its flag before it kills, so
            // a close caused by the timeout or the token is known now; otherwise the child
            // closed its stdout (and may still be running: dropping `rp` ends it), which is
            // the `None` answer without waiting for an exit. Cancellation wins over the rest.
            rp.check_cancelled()?;
            if rp.flags.timed_out.load(std::sync::atomic::Ordering::SeqCst) {
                let exit = rp.wait_exit().await;
                rp.check_cancelled()?;
                exit?;
                rp.drain_after_exit().await;
                let stderr = rp
                    .stderr
                    .as_ref()
                    .map(|p| String::from_utf8_lossy(&p.shared.take_capture().0).into_owned())
                    .unwrap_or_default();
                return Err(Error::Timeout {
                    program: rp.meta.program.clone(),
                    command_line: cmd.command_line(),
                    timeout: verbs::expired_limit(
                        cmd,
                        rp.flags.expired_limit.get().copied(),
                        rp.elapsed(),
                    )
                    .unwrap_or_else(|| rp.elapsed()),
                    stdout: String::new(),
                    stderr,
                    attempts: 1,
                });
            }
            Ok(None)
        }
    }
}

impl<R: ProcessRunner + ?Sized> ProcessRunnerExt for R {}
