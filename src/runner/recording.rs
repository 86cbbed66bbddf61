//! [`RecordingRunner`]: records what was asked of a runner, for assertions.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::error::Result;
use crate::result::ProcessResult;
use crate::running::RunningProcess;
use crate::Command;

use super::{BoxFuture, ProcessRunner};

/// Which [`ProcessRunner`] primitive an invocation went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Primitive {
    /// [`ProcessRunner::output_bytes`]: every one-shot verb (`run`, `output_string`,
    /// `exit_code`, `probe`, ...), once per attempt under a retry policy.
    OutputBytes,
    /// [`ProcessRunner::start`]: a live handle (also `first_line`).
    Start,
}

/// One invocation seen by a [`RecordingRunner`]: the routing facts of the command, never
/// environment values.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Invocation {
    /// The program, lossily decoded.
    pub program: String,
    /// The arguments, lossily decoded.
    pub args: Vec<String>,
    /// The working directory, if set.
    pub cwd: Option<PathBuf>,
    /// Names of the explicit environment overrides (set or removed), in the order given.
    pub env_names: Vec<String>,
    /// Whether the command had stdin data (or kept stdin open).
    pub has_stdin: bool,
    /// Which primitive ran it.
    pub primitive: Primitive,
}

impl Invocation {
    fn of(cmd: &Command, primitive: Primitive) -> Invocation {
        Invocation {
            program: cmd.program_name(),
            args: cmd.args_lossy(),
            cwd: cmd.cwd.clone(),
            env_names: cmd
                .env
                .iter()
                .map(|(k, _)| k.to_string_lossy().into_owned())
                .collect(),
            has_stdin: cmd.has_stdin(),
            primitive,
        }
    }

    /// The arguments as `&str`s (handy in `assert_eq!` against an array literal).
    pub fn args_str(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    /// Whether `flag` is one of the arguments.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.args.iter().any(|a| a == flag)
    }

    /// Whether the environment override `name` was set or removed.
    pub fn has_env(&self, name: &str) -> bool {
        self.env_names.iter().any(|n| n == name)
    }

    /// The shell-escaped command line.
    pub fn command_line(&self) -> String {
        crate::result::command_line(&self.program, &self.args)
    }
}

/// Wraps another runner and records every [`Invocation`] before passing it on.
///
/// ```
/// use processkit::{Command, ProcessRunnerExt, RecordingRunner, Reply, ScriptedRunner};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> processkit::Result<()> {
/// let runner = RecordingRunner::new(ScriptedRunner::new().fallback(Reply::ok("done")));
/// runner.run(&Command::new("gh").args(["pr", "create", "--draft"])).await?;
/// let call = runner.only_call();
/// assert_eq!(call.args_str(), ["pr", "create", "--draft"]);
/// assert!(call.has_flag("--draft") && !call.has_stdin);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RecordingRunner<R> {
    inner: R,
    calls: Mutex<Vec<Invocation>>,
}

impl<R: ProcessRunner> RecordingRunner<R> {
    /// Records every invocation, then delegates to `inner`.
    pub fn new(inner: R) -> RecordingRunner<R> {
        RecordingRunner {
            inner,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Every invocation so far, in order.
    pub fn calls(&self) -> Vec<Invocation> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many invocations so far.
    pub fn len(&self) -> usize {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing was invoked yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The single invocation.
    ///
    /// # Panics
    /// Unless exactly one invocation was recorded (the message lists them).
    pub fn only_call(&self) -> Invocation {
        let calls = self.calls();
        match calls.as_slice() {
            [one] => one.clone(),
            _ => panic!(
                "RecordingRunner: expected exactly one invocation, got {}: {:?}",
                calls.len(),
                calls
                    .iter()
                    .map(Invocation::command_line)
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// Forgets the invocations recorded so far.
    pub fn clear(&self) {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The wrapped runner.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    /// Unwraps the wrapped runner.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn record(&self, cmd: &Command, p: Primitive) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Invocation::of(cmd, p));
    }
}

impl<R: ProcessRunner> ProcessRunner for RecordingRunner<R> {
    fn output_bytes<'a>(
        &'a self,
        cmd: &'a Command,
    ) -> BoxFuture<'a, Result<ProcessResult<Vec<u8>>>> {
        self.record(cmd, Primitive::OutputBytes);
        self.inner.output_bytes(cmd)
    }

    fn start<'a>(&'a self, cmd: &'a Command) -> BoxFuture<'a, Result<RunningProcess>> {
        self.record(cmd, Primitive::Start);
        self.inner.start(cmd)
    }
}
