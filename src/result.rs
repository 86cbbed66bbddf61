//! The outcome of a finished run.

use std::fmt;
use std::time::Duration;

use crate::error::{shell_quote, write_bounded};

/// The outcome of one finished run: exit code, captured output, and how it ended.
///
/// A non-zero exit is **data** here, not an error; a timeout is captured as
/// [`timed_out`](Self::timed_out). `T` is `String` for
/// [`output_string`](crate::Command::output_string) and `Vec<u8>` for
/// [`output_bytes`](crate::Command::output_bytes).
#[derive(Clone, PartialEq)]
pub struct ProcessResult<T = String> {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    pub(crate) code: Option<i32>,
    pub(crate) signal: Option<i32>,
    pub(crate) stdout: T,
    pub(crate) stderr: String,
    pub(crate) timed_out: bool,
    pub(crate) oom_killed: bool,
    pub(crate) duration: Duration,
    pub(crate) stdout_dropped: u64,
    pub(crate) stderr_dropped: u64,
    pub(crate) attempts: u32,
    pub(crate) stages: Vec<StageOutcome>,
    /// Which limit ended a timed-out run (the timeout or the inactivity timeout), when the
    /// watchdog knows; for [`Error::Timeout`](crate::Error::Timeout)'s `timeout`.
    pub(crate) expired_after: Option<Duration>,
}

/// One stage of a pipeline as it ended, like an entry of bash's `PIPESTATUS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageOutcome {
    /// The stage's program.
    pub program: String,
    /// Its exit code (`None` when it was killed by a signal).
    pub code: Option<i32>,
    /// The signal that killed it, if any (POSIX).
    pub signal: Option<i32>,
    /// Its captured stderr.
    pub stderr: String,
    /// Whether the stage was marked `.unchecked()` (ignored by pipefail).
    pub unchecked: bool,
}

impl StageOutcome {
    /// Whether this stage exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl<T> ProcessResult<T> {
    /// The exit code; `None` when the child was killed (timeout, signal, cancellation).
    pub fn code(&self) -> Option<i32> {
        self.code
    }

    /// Whether the run exited with code 0 (and did not time out).
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// The signal that ended the child, when it was killed by one (POSIX).
    pub fn signal(&self) -> Option<i32> {
        self.signal
    }

    /// Captured standard output (per the command's buffer policy).
    pub fn stdout(&self) -> &T {
        &self.stdout
    }

    /// Captured standard error, decoded lossily.
    pub fn stderr(&self) -> &str {
        &self.stderr
    }

    /// Whether the command's own timeout expired (the tree was killed; output so far is kept).
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Whether the kernel killed the tree for exceeding its memory limit (`limits` feature).
    pub fn oom_killed(&self) -> bool {
        self.oom_killed
    }

    /// The program that ran (for a pipeline: the stage pipefail reports).
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The arguments, lossily decoded.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Wall time from spawn to exit.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Bytes of stdout dropped from the middle by the buffer policy (0 if all kept).
    pub fn stdout_dropped(&self) -> u64 {
        self.stdout_dropped
    }

    /// Bytes of stderr dropped from the middle by the buffer policy.
    pub fn stderr_dropped(&self) -> u64 {
        self.stderr_dropped
    }

    /// How many attempts ran (1 unless the command has a retry policy).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// For a pipeline, every stage's outcome in order (empty for a single command).
    pub fn stages(&self) -> &[StageOutcome] {
        &self.stages
    }

    /// Consumes the result, returning stdout.
    pub fn into_stdout(self) -> T {
        self.stdout
    }

    /// The shell-escaped command line.
    pub fn command_line(&self) -> String {
        command_line(&self.program, &self.args)
    }

    pub(crate) fn map_stdout<U>(self, f: impl FnOnce(T) -> U) -> ProcessResult<U> {
        ProcessResult {
            program: self.program,
            args: self.args,
            code: self.code,
            signal: self.signal,
            stdout: f(self.stdout),
            stderr: self.stderr,
            timed_out: self.timed_out,
            oom_killed: self.oom_killed,
            duration: self.duration,
            stdout_dropped: self.stdout_dropped,
            stderr_dropped: self.stderr_dropped,
            attempts: self.attempts,
            stages: self.stages,
            expired_after: self.expired_after,
        }
    }
}

impl ProcessResult<Vec<u8>> {
    /// Builds a result by hand: for test doubles (see [`ScriptedRunner`](crate::ScriptedRunner)).
    pub fn new_bytes(
        program: impl Into<String>,
        code: i32,
        stdout: impl Into<Vec<u8>>,
        stderr: impl Into<String>,
    ) -> Self {
        ProcessResult {
            program: program.into(),
            args: Vec::new(),
            code: Some(code),
            signal: None,
            stdout: stdout.into(),
            stderr: stderr.into(),
            timed_out: false,
            oom_killed: false,
            duration: Duration::ZERO,
            stdout_dropped: 0,
            stderr_dropped: 0,
            attempts: 1,
            stages: Vec::new(),
            expired_after: None,
        }
    }
}

impl ProcessResult<String> {
    /// Builds a result by hand: for test doubles and custom runners.
    pub fn new(
        program: impl Into<String>,
        code: i32,
        stdout: impl Into<String>,
        stderr: impl Into<String>,
    ) -> Self {
        ProcessResult::new_bytes(program, code, Vec::new(), stderr).map_stdout(|_| stdout.into())
    }
}

pub(crate) fn command_line(program: &str, args: &[String]) -> String {
    let mut s = shell_quote(program);
    for a in args {
        s.push(' ');
        s.push_str(&shell_quote(a));
    }
    s
}

impl<T: OutputText> fmt::Debug for ProcessResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessResult")
            .field("command", &self.command_line())
            .field("code", &self.code)
            .field("signal", &self.signal)
            .field("timed_out", &self.timed_out)
            .field("duration", &self.duration)
            .field("stdout", &self.stdout.preview())
            .field("stderr", &self.stderr)
            .finish_non_exhaustive()
    }
}

impl<T: OutputText> fmt::Display for ProcessResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` ", self.command_line())?;
        match (self.code, self.signal, self.timed_out) {
            (_, _, true) => write!(f, "timed out after {:?}", self.duration)?,
            (Some(c), _, _) => write!(f, "exited with code {c} in {:?}", self.duration)?,
            (None, Some(s), _) => write!(f, "was killed by signal {s}")?,
            (None, None, _) => f.write_str("was killed")?,
        }
        let out = self.stdout.preview();
        if !out.trim().is_empty() {
            f.write_str("\n--- stdout ---\n")?;
            write_bounded(f, &out, crate::error::STDERR_DISPLAY_LIMIT)?;
        }
        if !self.stderr.trim().is_empty() {
            f.write_str("\n--- stderr ---\n")?;
            write_bounded(f, &self.stderr, crate::error::STDERR_DISPLAY_LIMIT)?;
        }
        Ok(())
    }
}

/// Output types a result can carry (`String`, `Vec<u8>`).
pub trait OutputText: sealed::Sealed {
    /// A text view for display.
    fn preview(&self) -> std::borrow::Cow<'_, str>;
}

impl OutputText for String {
    fn preview(&self) -> std::borrow::Cow<'_, str> {
        std::borrow::Cow::Borrowed(self)
    }
}

impl OutputText for Vec<u8> {
    fn preview(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for String {}
    impl Sealed for Vec<u8> {}
}
