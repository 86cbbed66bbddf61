//! # processkit
//!
//! Async child processes with a **kernel-backed no-orphan guarantee**: every process you
//! start — and everything *it* spawns — lives in a kill-on-drop container (a cgroup v2 on
//! Linux, a Job Object on Windows, a process group on macOS/BSD), so no descendant outlives
//! your program.
//!
//! ```
//! use processkit::{Command, ProcessGroup, Stdin};
//!
//! # #[cfg(unix)] // the tour runs `sort` and `sh`
//! # #[tokio::main]
//! # async fn main() -> processkit::Result<()> {
//! // One-shot: capture everything. A non-zero exit is data, not an Err.
//! let head = Command::new("git").args(["rev-parse", "HEAD"]).output_string().await?;
//! println!("HEAD = {}", head.stdout().trim());
//!
//! // Success-checking: non-zero exit / timeout / signal-kill become typed errors.
//! let version = Command::new("cargo").arg("--version").run().await?;
//!
//! let sorted = Command::new("sort")
//!     .stdin(Stdin::from_string("b\na\n"))
//!     .timeout(std::time::Duration::from_secs(5))
//!     .run()
//!     .await?;
//!
//! // Containment: anything spawned through a group dies with it.
//! // (A stand-in dev server that forks a helper of its own, as servers do.)
//! let group = ProcessGroup::new()?;
//! let _server = group
//!     .start(&Command::new("sh").args(["-c", "sleep 300 & exec sleep 300"]))
//!     .await?;
//! drop(group); // the server — and everything *it* spawned — is reaped
//! # let _ = (version, sorted);
//! # Ok(())
//! # }
//! # #[cfg(not(unix))]
//! # fn main() {}
//! ```
//!
//! See the guides in `docs/` for every capability: `docs/README.md` is the index and
//! `docs/cookbook.md` maps "I want to …" to a runnable snippet. The runnable programs in
//! `examples/` (`cargo run --example tour`) show them end to end.
#![deny(missing_docs)]
#![warn(rust_2018_idioms)]

mod cancel;
mod command;
#[cfg(doctest)]
mod doctests;
mod error;
mod group;
mod pipeline;
mod result;
mod retry;
mod runner;
mod running;
mod stdio;
mod supervisor;
mod sys;
mod time;
mod trace;
mod verbs;

pub use command::Command;
pub use error::{Error, OutputStream, Result};
#[cfg(feature = "stats")]
pub use group::sampling::StatsSamples;
#[cfg(feature = "process-control")]
pub use group::signal::Signal;
#[cfg(not(feature = "process-control"))]
pub(crate) use group::signal::Signal;
#[cfg(feature = "stats")]
pub use group::stats::GroupStats;
#[cfg(not(feature = "stats"))]
pub(crate) use group::stats::GroupStats;
pub use group::{Mechanism, ProcessGroup, ProcessGroupOptions};
pub use pipeline::{Pipeline, PipelineWith, RunningPipeline};
pub use result::{OutputText, ProcessResult, StageOutcome};
pub use retry::{AttemptOutcome, RetryPolicy};
#[cfg(feature = "mock")]
pub use runner::MockRunner;
pub use runner::{
    BoxFuture, CliClient, Invocation, JobRunner, Primitive, ProcessRunner, ProcessRunnerExt,
    RecordingRunner, Reply, ScriptedRunner,
};
#[cfg(feature = "record")]
pub use runner::{Cassette, RecordReplayRunner};

/// The test doubles in one place (all also exported at the crate root). See `docs/testing.md`.
pub mod testing {
    #[cfg(feature = "mock")]
    pub use crate::runner::MockRunner;
    #[cfg(feature = "record")]
    pub use crate::runner::{Cassette, RecordReplayRunner};
    pub use crate::runner::{Invocation, Primitive, RecordingRunner, Reply, ScriptedRunner};
}
#[cfg(feature = "stats")]
pub use running::RunProfile;
pub use running::{wait_any, AllLines, LineStream, OutputLine, RunningProcess, StdinWriter};
pub use stdio::{BufferPolicy, Encoding, OutputMode, Stdin};
pub use supervisor::{RestartPolicy, StopReason, SupervisionOutcome, Supervisor};

/// `StreamExt` from `tokio-stream`, for `.next()` on line streams.
pub use tokio_stream::StreamExt;

/// The cancellation token accepted by `Command::cancel_on` (re-exported from `tokio-util`).
#[cfg(feature = "cancellation")]
pub use tokio_util::sync::CancellationToken;

use std::ffi::OsStr;

/// Runs `program` with `args`, requiring success; returns trimmed stdout.
///
/// Shorthand for `Command::new(program).args(args).run()`.
///
/// # Errors
/// As [`Command::run`].
///
/// # Cancel safety
/// Dropping the future kills the whole tree.
pub async fn run<I, S>(program: impl AsRef<OsStr>, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(program).args(args).run().await
}

/// Runs `program` with `args` and returns the full outcome (a non-zero exit is data).
///
/// Shorthand for `Command::new(program).args(args).output_string()`.
///
/// # Errors
/// As [`Command::output_string`].
///
/// # Cancel safety
/// Dropping the future kills the whole tree.
pub async fn output<I, S>(program: impl AsRef<OsStr>, args: I) -> Result<ProcessResult<String>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(program).args(args).output_string().await
}

impl Command {
    /// Runs the command, requiring success; returns stdout with surrounding whitespace trimmed.
    ///
    /// # Errors
    /// [`Error::NonZeroExit`] (with the stderr tail), [`Error::Timeout`], [`Error::Signalled`],
    /// [`Error::NotFound`], [`Error::Spawn`], [`Error::InvalidInput`],
    /// [`Error::InvalidWorkingDir`], [`Error::InvalidUtf8`] (strict encoding),
    /// [`Error::Cancelled`].
    ///
    /// # Cancel safety
    /// Dropping the future kills the whole tree; nothing is left running.
    pub async fn run(&self) -> Result<String> {
        JobRunner.run(self).await
    }

    /// Runs the command and returns the full outcome; stdout decoded per the encoding.
    ///
    /// # Errors
    /// Spawn and input errors, [`Error::InvalidUtf8`] under strict encoding,
    /// [`Error::Cancelled`]. Never for a non-zero exit or a timeout.
    ///
    /// # Cancel safety
    /// Dropping the future kills the whole tree.
    pub async fn output_string(&self) -> Result<ProcessResult<String>> {
        JobRunner.output_string(self).await
    }

    /// Runs the command and returns the full outcome with raw stdout bytes.
    ///
    /// # Errors
    /// Spawn and input errors, [`Error::Cancelled`]. Never for a non-zero exit or a timeout.
    ///
    /// # Cancel safety
    /// Dropping the future kills the whole tree.
    pub async fn output_bytes(&self) -> Result<ProcessResult<Vec<u8>>> {
        retry::output_with_retry(&JobRunner, self).await
    }

    /// Runs the command and returns its exit code.
    ///
    /// # Errors
    /// [`Error::Timeout`] / [`Error::Signalled`] instead of an invented code;
    /// [`Error::Cancelled`]; spawn errors.
    ///
    /// # Cancel safety
    /// Dropping the future kills the whole tree.
    pub async fn exit_code(&self) -> Result<i32> {
        JobRunner.exit_code(self).await
    }

    /// Runs the command as a yes/no question: exit 0 is `true`, exit 1 is `false`.
    ///
    /// # Errors
    /// [`Error::NonZeroExit`] for any other code; [`Error::Timeout`], [`Error::Signalled`],
    /// [`Error::Cancelled`], spawn errors.
    ///
    /// # Cancel safety
    /// Dropping the future kills the whole tree.
    pub async fn probe(&self) -> Result<bool> {
        JobRunner.probe(self).await
    }

    /// Returns the first stdout line satisfying `pred` (the run is killed once it is found), or
    /// `None` when stdout closes without a match. The answer does not wait for the exit: a
    /// child that closes stdout and keeps running gets `None` at once, and is killed with its
    /// tree. The exit code is not inspected; use [`output_string`](Self::output_string) when
    /// it matters.
    ///
    /// # Errors
    /// Spawn errors, [`Error::Timeout`], [`Error::Cancelled`].
    ///
    /// # Cancel safety
    /// Dropping the future kills the whole tree.
    pub async fn first_line(
        &self,
        pred: impl FnMut(&str) -> bool + Send,
    ) -> Result<Option<String>> {
        JobRunner.first_line(self, pred).await
    }

    /// Starts the command in a private kill-on-drop group and returns a live handle.
    ///
    /// # Errors
    /// Spawn and input errors, [`Error::Cancelled`] for a token cancelled beforehand.
    ///
    /// # Cancel safety
    /// Cancel safe: spawning completes synchronously inside the call.
    pub async fn start(&self) -> Result<RunningProcess> {
        JobRunner.start(self).await
    }
}

/// Entry points for the fuzz targets in `fuzz/` (not a public API; may change at any time).
#[doc(hidden)]
pub mod __fuzz {
    /// Splits `data` into lines fed in chunks cut at `cuts`, and as one buffer; the fuzz target
    /// asserts both agree.
    pub fn split_lines(data: &[u8], cuts: &[usize]) -> (Vec<String>, Vec<String>) {
        use crate::running::pump::{decode, split_all, LineSplitter};
        let mut cuts: Vec<usize> = cuts.iter().map(|c| (*c).min(data.len())).collect();
        cuts.sort_unstable();
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            s.push(&data[at..c], |l| got.push(l));
            at = c;
        }
        if let Some(rest) = s.finish_partial() {
            got.push(decode(rest));
        }
        (got, split_all(data))
    }
}
