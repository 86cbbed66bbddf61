//! [`CliClient`] and the [`cli_client!`](crate::cli_client) macro: typed wrappers around an
//! external tool whose runner is injectable.

use std::borrow::{Borrow, Cow};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::time::Duration;

use crate::error::Result;
use crate::result::ProcessResult;
use crate::running::RunningProcess;
use crate::Command;

use super::{JobRunner, ProcessRunner, ProcessRunnerExt};

/// The core of a typed wrapper around an external tool (`git`, `jj`, `gh`, ...): the program
/// name, per-client defaults, and an injectable [`ProcessRunner`].
///
/// The wrapper contributes only commands and parsers; tests swap the runner for a
/// [`ScriptedRunner`](crate::ScriptedRunner) (or any double) with [`with_runner`](Self::with_runner).
/// The [`cli_client!`](crate::cli_client) macro generates such a wrapper.
///
/// Defaults: [`default_env`](Self::default_env) / [`default_env_remove`](Self::default_env_remove)
/// apply to every command the client **builds** ([`command`](Self::command),
/// [`command_in`](Self::command_in)); [`default_timeout`](Self::default_timeout) and
/// `default_cancel_on` (feature `cancellation`) also apply to every command the client
/// **runs**, unless that command set its own.
///
/// ```
/// use processkit::{CliClient, Reply, ScriptedRunner};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> processkit::Result<()> {
/// let gh = CliClient::with_runner("gh", ScriptedRunner::new().on(["gh", "--version"], Reply::ok("gh 2.0\n")));
/// assert_eq!(gh.run(gh.command(["--version"])).await?, "gh 2.0");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CliClient<R = JobRunner> {
    program: OsString,
    runner: R,
    timeout: Option<Duration>,
    env: Vec<(OsString, Option<OsString>)>,
    #[cfg(feature = "cancellation")]
    cancel: Option<tokio_util::sync::CancellationToken>,
}

impl CliClient<JobRunner> {
    /// A client for `program` that runs commands for real (each in a private kill-on-drop
    /// group).
    pub fn new(program: impl AsRef<OsStr>) -> CliClient<JobRunner> {
        CliClient::with_runner(program, JobRunner::new())
    }
}

impl<R: ProcessRunner> CliClient<R> {
    /// A client for `program` whose commands go through `runner`.
    pub fn with_runner(program: impl AsRef<OsStr>, runner: R) -> CliClient<R> {
        CliClient {
            program: program.as_ref().to_owned(),
            runner,
            timeout: None,
            env: Vec::new(),
            #[cfg(feature = "cancellation")]
            cancel: None,
        }
    }

    /// The program this client runs.
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// The runner.
    pub fn runner(&self) -> &R {
        &self.runner
    }

    /// Bounds every command the client builds or runs (unless it has its own timeout).
    pub fn default_timeout(mut self, timeout: Duration) -> CliClient<R> {
        self.timeout = Some(timeout);
        self
    }

    /// Sets an environment variable on every command the client builds (e.g.
    /// `GIT_TERMINAL_PROMPT=0`); a command's own `env` calls apply on top.
    pub fn default_env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> CliClient<R> {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an inherited environment variable on every command the client builds.
    pub fn default_env_remove(mut self, key: impl AsRef<OsStr>) -> CliClient<R> {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Cancels every command the client builds or runs (unless it has its own token) when
    /// `token` is cancelled: in-flight runs are killed and report
    /// [`Error::Cancelled`](crate::Error::Cancelled); a run started after that spawns nothing.
    /// Pass a `child_token()` to cancel just this client.
    #[cfg(feature = "cancellation")]
    pub fn default_cancel_on(mut self, token: tokio_util::sync::CancellationToken) -> CliClient<R> {
        self.cancel = Some(token);
        self
    }

    /// A command running this client's program with `args`, with the client's defaults.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.program).args(args);
        cmd.env.extend(self.env.iter().cloned());
        self.apply_run_defaults(&mut cmd);
        cmd
    }

    /// As [`command`](Self::command), running in `dir`.
    pub fn command_in<I, S>(&self, dir: impl AsRef<Path>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(args).current_dir(dir)
    }

    fn apply_run_defaults(&self, cmd: &mut Command) {
        if cmd.timeout.is_none() {
            cmd.timeout = self.timeout;
        }
        #[cfg(feature = "cancellation")]
        if cmd.cancel.is_none() {
            cmd.cancel = self.cancel.clone();
        }
    }

    /// `cmd` with the run-time defaults filled in (borrowed when nothing is missing).
    fn prepare<'c>(&self, cmd: &'c Command) -> Cow<'c, Command> {
        let needs_timeout = cmd.timeout.is_none() && self.timeout.is_some();
        #[cfg(feature = "cancellation")]
        let needs_cancel = cmd.cancel.is_none() && self.cancel.is_some();
        #[cfg(not(feature = "cancellation"))]
        let needs_cancel = false;
        if needs_timeout || needs_cancel {
            let mut c = cmd.clone();
            self.apply_run_defaults(&mut c);
            Cow::Owned(c)
        } else {
            Cow::Borrowed(cmd)
        }
    }

    /// Runs `cmd`, requiring success; returns trimmed stdout. See [`ProcessRunnerExt::run`].
    ///
    /// # Errors
    /// As [`ProcessRunnerExt::run`].
    ///
    /// # Cancel safety
    /// As the runner's verb: with [`JobRunner`](crate::JobRunner), dropping the future kills
    /// the whole tree.
    pub async fn run(&self, cmd: impl Borrow<Command>) -> Result<String> {
        let cmd = self.prepare(cmd.borrow());
        self.runner.run(&cmd).await
    }

    /// Runs `cmd` and returns the full outcome. See [`ProcessRunnerExt::output_string`].
    ///
    /// # Errors
    /// As [`ProcessRunnerExt::output_string`].
    ///
    /// # Cancel safety
    /// As the runner's verb: with [`JobRunner`](crate::JobRunner), dropping the future kills
    /// the whole tree.
    pub async fn output_string(&self, cmd: impl Borrow<Command>) -> Result<ProcessResult<String>> {
        let cmd = self.prepare(cmd.borrow());
        self.runner.output_string(&cmd).await
    }

    /// Runs `cmd` and returns the full outcome with raw stdout (retry policy honoured).
    ///
    /// # Errors
    /// As [`Command::output_bytes`].
    ///
    /// # Cancel safety
    /// As the runner's verb: with [`JobRunner`](crate::JobRunner), dropping the future kills
    /// the whole tree.
    pub async fn output_bytes(&self, cmd: impl Borrow<Command>) -> Result<ProcessResult<Vec<u8>>> {
        let cmd = self.prepare(cmd.borrow());
        crate::retry::output_with_retry(&self.runner, &cmd).await
    }

    /// Runs `cmd` and returns its exit code. See [`ProcessRunnerExt::exit_code`].
    ///
    /// # Errors
    /// As [`ProcessRunnerExt::exit_code`].
    ///
    /// # Cancel safety
    /// As the runner's verb: with [`JobRunner`](crate::JobRunner), dropping the future kills
    /// the whole tree.
    pub async fn exit_code(&self, cmd: impl Borrow<Command>) -> Result<i32> {
        let cmd = self.prepare(cmd.borrow());
        self.runner.exit_code(&cmd).await
    }

    /// Runs `cmd` as a yes/no question. See [`ProcessRunnerExt::probe`].
    ///
    /// # Errors
    /// As [`ProcessRunnerExt::probe`].
    ///
    /// # Cancel safety
    /// As the runner's verb: with [`JobRunner`](crate::JobRunner), dropping the future kills
    /// the whole tree.
    pub async fn probe(&self, cmd: impl Borrow<Command>) -> Result<bool> {
        let cmd = self.prepare(cmd.borrow());
        self.runner.probe(&cmd).await
    }

    /// Returns the first stdout line of `cmd` satisfying `pred`. See
    /// [`ProcessRunnerExt::first_line`].
    ///
    /// # Errors
    /// As [`ProcessRunnerExt::first_line`].
    ///
    /// # Cancel safety
    /// As the runner's verb: with [`JobRunner`](crate::JobRunner), dropping the future kills
    /// the whole tree.
    pub async fn first_line(
        &self,
        cmd: impl Borrow<Command>,
        pred: impl FnMut(&str) -> bool + Send,
    ) -> Result<Option<String>> {
        let cmd = self.prepare(cmd.borrow());
        self.runner.first_line(&cmd, pred).await
    }

    /// Starts `cmd` and returns a live handle. See [`ProcessRunner::start`].
    ///
    /// # Errors
    /// As [`ProcessRunner::start`].
    ///
    /// # Cancel safety
    /// As the runner's `start`: with [`JobRunner`](crate::JobRunner), cancel safe (a dropped
    /// handle kills its tree).
    pub async fn start(&self, cmd: impl Borrow<Command>) -> Result<RunningProcess> {
        let cmd = self.prepare(cmd.borrow());
        self.runner.start(&cmd).await
    }
}

/// Declares a typed wrapper around a CLI tool: `cli_client!(pub struct Git => "git");`.
///
/// Generates `pub struct Git<R: ProcessRunner = JobRunner> { pub core: CliClient<R> }` with
/// `Git::new()` (the real runner; also `Default`), `Git::with_runner(runner)` (a double in
/// tests), `core()`, and the builder defaults `default_timeout`, `default_env`,
/// `default_env_remove` and (feature `cancellation`) `default_cancel_on`. Attributes and doc
/// comments before `struct` are kept. Add the tool's operations in an
/// `impl<R: ProcessRunner> Git<R>` block using `self.core`:
///
/// ```
/// use processkit::{cli_client, ProcessRunner, Reply, Result, ScriptedRunner};
/// use std::path::Path;
///
/// cli_client!(
///     /// A typed `git` client.
///     pub struct Git => "git"
/// );
///
/// impl<R: ProcessRunner> Git<R> {
///     /// HEAD's commit id.
///     pub async fn head(&self, dir: &Path) -> Result<String> {
///         self.core.run(self.core.command_in(dir, ["rev-parse", "HEAD"])).await
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<()> {
/// let git = Git::with_runner(ScriptedRunner::new().on(["git", "rev-parse", "HEAD"], Reply::ok("abc123\n")));
/// assert_eq!(git.head(Path::new("/repo")).await?, "abc123");
/// # Ok(())
/// # }
/// ```
#[macro_export]
macro_rules! cli_client {
    ($(#[$meta:meta])* $vis:vis struct $name:ident => $program:expr $(,)?) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        $vis struct $name<R: $crate::ProcessRunner = $crate::JobRunner> {
            /// The client core: builds this tool's commands and runs them through the runner.
            pub core: $crate::CliClient<R>,
        }

        impl $name<$crate::JobRunner> {
            /// A client that runs the real tool.
            #[allow(dead_code)]
            pub fn new() -> Self {
                $name { core: $crate::CliClient::new($program) }
            }
        }

        impl ::core::default::Default for $name<$crate::JobRunner> {
            fn default() -> Self {
                Self::new()
            }
        }

        #[allow(dead_code)]
        impl<R: $crate::ProcessRunner> $name<R> {
            /// A client whose commands go through `runner` (a test double, a shared group, ...).
            pub fn with_runner(runner: R) -> Self {
                $name { core: $crate::CliClient::with_runner($program, runner) }
            }

            /// The client core.
            pub fn core(&self) -> &$crate::CliClient<R> {
                &self.core
            }

            /// Bounds every command this client builds or runs.
            pub fn default_timeout(mut self, timeout: ::std::time::Duration) -> Self {
                self.core = self.core.default_timeout(timeout);
                self
            }

            /// Sets an environment variable on every command this client builds.
            pub fn default_env(
                mut self,
                key: impl ::core::convert::AsRef<::std::ffi::OsStr>,
                value: impl ::core::convert::AsRef<::std::ffi::OsStr>,
            ) -> Self {
                self.core = self.core.default_env(key, value);
                self
            }

            /// Removes an inherited environment variable on every command this client builds.
            pub fn default_env_remove(mut self, key: impl ::core::convert::AsRef<::std::ffi::OsStr>) -> Self {
                self.core = self.core.default_env_remove(key);
                self
            }
        }

        $crate::__cli_client_cancel!($name);
    };
}

/// Adds `default_cancel_on` to a `cli_client!` wrapper when processkit has `cancellation`.
#[cfg(feature = "cancellation")]
#[doc(hidden)]
#[macro_export]
macro_rules! __cli_client_cancel {
    ($name:ident) => {
        #[allow(dead_code)]
        impl<R: $crate::ProcessRunner> $name<R> {
            /// Cancels every command this client builds or runs when `token` is cancelled.
            pub fn default_cancel_on(mut self, token: $crate::CancellationToken) -> Self {
                self.core = self.core.default_cancel_on(token);
                self
            }
        }
    };
}

/// Without `cancellation` there is nothing to add.
#[cfg(not(feature = "cancellation"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __cli_client_cancel {
    ($name:ident) => {};
}
