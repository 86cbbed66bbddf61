//! `Command`: a plain builder. No I/O happens until a verb is called.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::shell_quote;
use crate::stdio::{BufferPolicy, Encoding, OutputMode, Stdin};

/// A line handler run on the read pump (see [`Command::on_stdout_line`]).
pub(crate) type LineHandler = Arc<dyn Fn(&str) + Send + Sync>;

/// A description of a child process to run: program, arguments, environment, stdio, limits.
///
/// `Command` is plain data: building one does no I/O, and it can be cloned and run many times.
/// Finish it with a verb:
///
/// | want | verb | returns |
/// |---|---|---|
/// | stdout, success required | [`run`](Self::run) | trimmed `String`; non-zero exit / timeout / kill -> `Err` |
/// | the full outcome | [`output_string`](Self::output_string) / [`output_bytes`](Self::output_bytes) | [`ProcessResult`](crate::ProcessResult), never `Err` on non-zero |
/// | the exit code | [`exit_code`](Self::exit_code) | `i32`; timeout / kill -> `Err` |
/// | yes or no | [`probe`](Self::probe) | `true` for 0, `false` for 1, `Err` otherwise |
/// | a matching line | [`first_line`](Self::first_line) | `Option<String>` |
/// | a live handle | [`start`](Self::start) | [`RunningProcess`](crate::RunningProcess) |
///
/// Every verb spawns the child into a fresh private kill-on-drop container: when the run ends
/// (or its future is dropped, or the caller panics) the whole tree dies with it.
#[derive(Clone)]
pub struct Command {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) env_clear: bool,
    pub(crate) inherit_env: Option<Vec<OsString>>,
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) stdin: Stdin,
    pub(crate) keep_stdin_open: bool,
    pub(crate) stdout: OutputMode,
    pub(crate) stderr: OutputMode,
    pub(crate) encoding: Encoding,
    pub(crate) buffer: BufferPolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) timeout_grace: Option<Duration>,
    pub(crate) inactivity_timeout: Option<Duration>,
    pub(crate) uid: Option<u32>,
    pub(crate) gid: Option<u32>,
    pub(crate) setsid: bool,
    pub(crate) create_no_window: bool,
    pub(crate) kill_on_parent_death: bool,
    pub(crate) on_stdout_line: Option<LineHandler>,
    pub(crate) on_stderr_line: Option<LineHandler>,
    pub(crate) retry: Option<crate::RetryPolicy>,
    #[cfg(feature = "cancellation")]
    pub(crate) cancel: Option<tokio_util::sync::CancellationToken>,
    pub(crate) unchecked: bool,
}

impl Command {
    /// A command running `program`, looked up on `PATH` unless it contains a path separator.
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env_clear: false,
            inherit_env: None,
            env: Vec::new(),
            cwd: None,
            stdin: Stdin::null(),
            keep_stdin_open: false,
            stdout: OutputMode::Capture,
            stderr: OutputMode::Capture,
            encoding: Encoding::default(),
            buffer: BufferPolicy::default(),
            timeout: None,
            timeout_grace: None,
            inactivity_timeout: None,
            uid: None,
            gid: None,
            setsid: false,
            create_no_window: false,
            kill_on_parent_death: false,
            on_stdout_line: None,
            on_stderr_line: None,
            retry: None,
            #[cfg(feature = "cancellation")]
            cancel: None,
            unchecked: false,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Command {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Command {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Sets several environment variables.
    pub fn envs<I, K, V>(mut self, vars: I) -> Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    /// Removes a variable from the child's environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Command {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Starts the child from an empty environment (explicit [`env`](Self::env) still applies).
    pub fn env_clear(mut self) -> Command {
        self.env_clear = true;
        self.inherit_env = None;
        self.env.clear();
        self
    }

    /// Clears the environment and copies only the named variables from the owner's; explicit
    /// [`env`](Self::env) / [`env_remove`](Self::env_remove) calls apply on top. Works on every
    /// platform. Names absent from the owner's environment are skipped.
    pub fn inherit_env<I, S>(mut self, names: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.env_clear = true;
        self.inherit_env = Some(names.into_iter().map(|n| n.as_ref().to_owned()).collect());
        self
    }

    /// Runs the child in `dir`. A missing directory, or a path that is not a directory, is
    /// [`Error::InvalidWorkingDir`](crate::Error::InvalidWorkingDir) naming the path.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Command {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Where stdin comes from (default: [`Stdin::null`]).
    pub fn stdin(mut self, stdin: impl Into<Stdin>) -> Command {
        self.stdin = stdin.into();
        self
    }

    /// Keeps stdin as an open pipe for [`RunningProcess::standard_input`](crate::RunningProcess::standard_input).
    pub fn keep_stdin_open(mut self) -> Command {
        self.keep_stdin_open = true;
        self
    }

    /// What happens to stdout (default: [`OutputMode::Capture`]).
    pub fn stdout(mut self, mode: OutputMode) -> Command {
        self.stdout = mode;
        self
    }

    /// What happens to stderr (default: [`OutputMode::Capture`]).
    pub fn stderr(mut self, mode: OutputMode) -> Command {
        self.stderr = mode;
        self
    }

    /// How captured output is decoded (default: [`Encoding::Utf8Lossy`]).
    pub fn encoding(mut self, encoding: Encoding) -> Command {
        self.encoding = encoding;
        self
    }

    /// How much output is kept per stream (default: [`BufferPolicy::default`], 64 MiB).
    pub fn buffer_policy(mut self, policy: BufferPolicy) -> Command {
        self.buffer = policy;
        self
    }

    /// Bounds the run: at the deadline the whole tree is killed (see
    /// [`timeout_grace`](Self::timeout_grace) for a polite first step). The output verbs
    /// *capture* the expiry ([`ProcessResult::timed_out`](crate::ProcessResult::timed_out), no
    /// exit code, output so far kept); `run`, `exit_code`, `probe` and `first_line` *raise*
    /// [`Error::Timeout`](crate::Error::Timeout). On a [`start`](Self::start) handle the
    /// deadline ends the line streams and `wait` returns `None`. Under a retry policy each
    /// attempt gets the full timeout. A zero duration is
    /// [`Error::InvalidInput`](crate::Error::InvalidInput); a duration too large for the clock
    /// (`Duration::MAX`) means no practical deadline, as it does for every other duration the
    /// crate takes (probes, pipelines, grace periods, sampling intervals).
    ///
    /// # Platform
    /// For a run in a shared [`ProcessGroup`](crate::ProcessGroup), only the direct child is
    /// killed (its siblings are not ours to touch); a private run loses its whole tree.
    pub fn timeout(mut self, timeout: Duration) -> Command {
        self.timeout = Some(timeout);
        self
    }

    /// Makes the timeout graceful: at the deadline (or the inactivity limit) the tree gets
    /// `SIGTERM`, and `SIGKILL` follows after `grace` unless the child exited first (then the
    /// rest of a private tree is killed at once). Default: no grace, an immediate `SIGKILL`.
    /// The run still counts as timed out even when the child exits cleanly on `SIGTERM`.
    /// Without a timeout or an inactivity timeout this does nothing.
    ///
    /// # Platform
    /// POSIX: `SIGTERM` goes to every process of a private run's container, or only to the
    /// direct child of a run in a shared [`ProcessGroup`](crate::ProcessGroup). Windows has no
    /// `SIGTERM`: the kill is immediate.
    pub fn timeout_grace(mut self, grace: Duration) -> Command {
        self.timeout_grace = Some(grace);
        self
    }

    /// Kills the tree when neither stdout nor stderr produced a byte for `idle`; reported like a
    /// timeout ([`ProcessResult::timed_out`](crate::ProcessResult::timed_out) /
    /// [`Error::Timeout`](crate::Error::Timeout) naming `idle`), and graceful with
    /// [`timeout_grace`](Self::timeout_grace). Combines with [`timeout`](Self::timeout):
    /// whichever fires first ends the run. Only captured streams are watched: with both
    /// streams inherited or discarded it fires `idle` after the spawn. On a
    /// [`start`](Self::start) handle whose stdout stream nobody reads, a child blocked on the
    /// full pipe is silent too. A zero duration is
    /// [`Error::InvalidInput`](crate::Error::InvalidInput).
    pub fn inactivity_timeout(mut self, idle: Duration) -> Command {
        self.inactivity_timeout = Some(idle);
        self
    }

    /// Runs the child as user `uid`, switched after the child joined its container (so the
    /// join uses the owner's credentials and the child is never uncontained).
    ///
    /// # Platform
    /// POSIX (`setuid` between `fork` and `exec`; supplementary groups are cleared when the
    /// owner is root). Elsewhere the run fails with
    /// [`Error::Unsupported`](crate::Error::Unsupported): a privilege drop is never silently
    /// skipped.
    pub fn uid(mut self, uid: u32) -> Command {
        self.uid = Some(uid);
        self
    }

    /// Runs the child with group `gid` (set before the user id).
    ///
    /// # Platform
    /// POSIX (`setgid` between `fork` and `exec`). Elsewhere the run fails with
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    pub fn gid(mut self, gid: u32) -> Command {
        self.gid = Some(gid);
        self
    }

    /// Starts the child in a new session (`setsid`). Containment is kept: the container
    /// tracks the new session's process group (and a cgroup holds it regardless).
    ///
    /// # Platform
    /// POSIX. Elsewhere the run fails with [`Error::Unsupported`](crate::Error::Unsupported).
    pub fn setsid(mut self) -> Command {
        self.setsid = true;
        self
    }

    /// Starts a console program without a console window (`CREATE_NO_WINDOW`).
    ///
    /// # Platform
    /// Windows; OR'd with the group's `CREATE_SUSPENDED` containment flag. A no-op elsewhere.
    pub fn create_no_window(mut self) -> Command {
        self.create_no_window = true;
        self
    }

    /// Kills the child — and its whole tree — when the owner dies abruptly, even by `SIGKILL`
    /// (when no destructor can run).
    ///
    /// # Platform
    /// - Linux: `PR_SET_PDEATHSIG` on the direct child, plus a per-owner *guardian* (a tiny
    ///   `/bin/sh` process started once, on first use) that, on seeing the owner die, writes
    ///   `cgroup.kill` into every cgroup the owner still had (or kills the registered process
    ///   groups on the fallback mechanism) and removes them. Nothing per run. The parent-death
    ///   signal follows the thread that created the child, so such children are created by
    ///   one processkit thread that lives as long as the process: the child outlives a
    ///   short-lived thread (a retired blocking-pool thread, a runtime in a scoped thread)
    ///   that started it.
    /// - Windows: already guaranteed: the Job Object handle closes with the owner
    ///   (kill-on-close).
    /// - macOS/BSD: best effort: the guardian kills the registered process groups; there is no
    ///   `PDEATHSIG`, and a `setsid` descendant escapes the process group.
    pub fn kill_on_parent_death(mut self) -> Command {
        self.kill_on_parent_death = true;
        self
    }

    /// Runs `handler` for every stdout line as it is read, in addition to capture.
    ///
    /// The handler runs on the read pump's task: keep it short. Should it panic, it is not
    /// called again, reading goes on (the child never blocks), and the panic is resumed on the
    /// caller's task by the call that finishes the run (a one-shot verb, `wait`,
    /// `finish_streamed`, a pipeline's `finish`). The same holds for
    /// [`on_stderr_line`](Self::on_stderr_line).
    pub fn on_stdout_line(mut self, handler: impl Fn(&str) + Send + Sync + 'static) -> Command {
        self.on_stdout_line = Some(Arc::new(handler));
        self
    }

    /// Runs `handler` for every stderr line as it is read, in addition to capture.
    pub fn on_stderr_line(mut self, handler: impl Fn(&str) + Send + Sync + 'static) -> Command {
        self.on_stderr_line = Some(Arc::new(handler));
        self
    }

    /// Re-runs the command per `policy` (each attempt in a fresh container) in the
    /// run-to-completion verbs; see [`RetryPolicy`](crate::RetryPolicy) for the backoff and
    /// the classifier. The result's [`attempts`](crate::ProcessResult::attempts) (or
    /// [`Error::attempts`](crate::Error::attempts)) says how many ran.
    pub fn retry(mut self, policy: crate::RetryPolicy) -> Command {
        self.retry = Some(policy);
        self
    }

    /// Cancels the run when `token` is cancelled: the tree is killed and every consuming path
    /// (each verb, [`RunningProcess::wait`](crate::RunningProcess::wait),
    /// [`finish_streamed`](crate::RunningProcess::finish_streamed), the readiness probes)
    /// returns [`Error::Cancelled`](crate::Error::Cancelled); a line stream simply ends.
    /// Cancellation is always an error, never a captured outcome. A token already cancelled
    /// spawns nothing. When the token and a timeout both land before the outcome is reported,
    /// cancellation wins. A retry loop stops at once, mid-attempt or mid-backoff.
    ///
    /// # Platform
    /// In a shared [`ProcessGroup`](crate::ProcessGroup) only the direct child is killed; its
    /// siblings live on.
    #[cfg(feature = "cancellation")]
    pub fn cancel_on(mut self, token: tokio_util::sync::CancellationToken) -> Command {
        self.cancel = Some(token);
        self
    }

    /// As a pipeline stage: pipefail ignores this stage's exit (for a producer that is expected
    /// to die of `SIGPIPE` when the consumer stops reading, as in `yes | head -1`).
    pub fn unchecked(mut self) -> Command {
        self.unchecked = true;
        self
    }

    /// The program.
    pub fn get_program(&self) -> &OsStr {
        &self.program
    }

    /// The arguments.
    pub fn get_args(&self) -> impl ExactSizeIterator<Item = &OsStr> {
        self.args.iter().map(|a| a.as_os_str())
    }

    /// The working directory, if set.
    pub fn get_current_dir(&self) -> Option<&Path> {
        self.cwd.as_deref()
    }

    /// The explicit environment overrides, in order (`None` = removed).
    pub fn get_envs(&self) -> impl Iterator<Item = (&OsStr, Option<&OsStr>)> {
        self.env.iter().map(|(k, v)| (k.as_os_str(), v.as_deref()))
    }

    /// The timeout, if set.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether a stdin source with data is attached.
    pub fn has_stdin(&self) -> bool {
        self.stdin.has_data() || self.keep_stdin_open
    }

    /// Whether this stage is ignored by pipefail.
    pub fn is_unchecked(&self) -> bool {
        self.unchecked
    }

    /// The program as a lossy `String` (for errors and logs).
    pub(crate) fn program_name(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    pub(crate) fn args_lossy(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The shell-escaped command line, for errors and logs.
    pub fn command_line(&self) -> String {
        let mut s = shell_quote(&self.program.to_string_lossy());
        for a in &self.args {
            s.push(' ');
            s.push_str(&shell_quote(&a.to_string_lossy()));
        }
        s
    }

    #[cfg(feature = "cancellation")]
    pub(crate) fn cancel_token(&self) -> Option<&tokio_util::sync::CancellationToken> {
        self.cancel.as_ref()
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Command");
        d.field("command", &self.command_line());
        if let Some(cwd) = &self.cwd {
            d.field("cwd", cwd);
        }
        // Values may be secrets: show names only.
        let names: Vec<_> = self.env.iter().map(|(k, _)| k.to_string_lossy()).collect();
        if !names.is_empty() {
            d.field("env", &names);
        }
        d.field("stdin", &self.stdin);
        if let Some(t) = self.timeout {
            d.field("timeout", &t);
        }
        d.finish_non_exhaustive()
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.command_line())
    }
}
