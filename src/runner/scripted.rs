//! [`ScriptedRunner`]: canned replies for matched commands, no subprocess.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::result::ProcessResult;
use crate::running::scripted::{killed_exit, Script};
use crate::running::RunningProcess;
use crate::sys::ExitInfo;
use crate::verbs::{self, Purpose};
use crate::Command;

use super::{BoxFuture, ProcessRunner};

/// A canned outcome for a [`ScriptedRunner`] rule (also what a
/// [`RecordReplayRunner`](crate::RecordReplayRunner) replays).
///
/// Build one with a constructor ([`ok`](Self::ok), [`fail`](Self::fail), [`lines`](Self::lines),
/// [`timeout`](Self::timeout), [`signalled`](Self::signalled), [`pending`](Self::pending),
/// [`not_found`](Self::not_found)) and refine it with the `with_*` methods.
#[derive(Debug, Clone)]
pub struct Reply {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: ExitInfo,
    timed_out: bool,
    line_delay: Option<Duration>,
    linger: Option<Duration>,
    not_found: bool,
}

impl Reply {
    fn base(code: Option<i32>) -> Reply {
        Reply {
            stdout: Vec::new(),
            stderr: Vec::new(),
            exit: ExitInfo { code, signal: None },
            timed_out: false,
            line_delay: None,
            linger: Some(Duration::ZERO),
            not_found: false,
        }
    }

    /// Exit 0 with `stdout`.
    pub fn ok(stdout: impl Into<String>) -> Reply {
        Reply::base(Some(0)).with_stdout(stdout)
    }

    /// Exit `code` with `stderr` (and no stdout).
    pub fn fail(code: i32, stderr: impl Into<String>) -> Reply {
        Reply::base(Some(code)).with_stderr(stderr)
    }

    /// Exit 0 with `lines` on stdout, each terminated by `\n` (on a scripted
    /// [`start`](ProcessRunner::start) they stream one by one).
    pub fn lines<I, S>(lines: I) -> Reply
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = String::new();
        for l in lines {
            out.push_str(l.as_ref());
            out.push('\n');
        }
        Reply::ok(out)
    }

    /// Exit 0 with raw `stdout` bytes (need not be UTF-8).
    pub fn bytes(stdout: impl Into<Vec<u8>>) -> Reply {
        Reply::base(Some(0)).with_stdout_bytes(stdout)
    }

    /// A run that hit its deadline: the result is
    /// [`timed_out`](crate::ProcessResult::timed_out) and `run`/`exit_code` raise
    /// [`Error::Timeout`] (with the command's own timeout). Resolves at once; to race a real
    /// deadline use [`pending`](Self::pending) with [`Command::timeout`].
    pub fn timeout() -> Reply {
        let mut r = Reply::base(None);
        r.exit = killed_exit();
        r.timed_out = true;
        r
    }

    /// A run killed by `signal` (`None`: killed, number unknown). `run` raises
    /// [`Error::Signalled`].
    pub fn signalled(signal: Option<i32>) -> Reply {
        let mut r = Reply::base(None);
        r.exit.signal = signal;
        r
    }

    /// A run that writes its output and then never exits on its own, like a server: it ends
    /// only when killed — by [`RunningProcess::kill`], dropping the handle, the command's
    /// [`timeout`](Command::timeout) (then it reports timed out) or its cancellation token
    /// (then [`Error::Cancelled`]). With none of those a one-shot verb waits forever.
    pub fn pending() -> Reply {
        let mut r = Reply::base(Some(0));
        r.linger = None;
        r
    }

    /// The program "is not installed": the run fails with [`Error::NotFound`] before
    /// anything starts, as a real spawn of a missing program does.
    pub fn not_found() -> Reply {
        let mut r = Reply::base(None);
        r.not_found = true;
        r
    }

    /// Sets stdout.
    pub fn with_stdout(mut self, stdout: impl Into<String>) -> Reply {
        self.stdout = stdout.into().into_bytes();
        self
    }

    /// Sets stdout to raw bytes.
    pub fn with_stdout_bytes(mut self, stdout: impl Into<Vec<u8>>) -> Reply {
        self.stdout = stdout.into();
        self
    }

    /// Sets stderr.
    pub fn with_stderr(mut self, stderr: impl Into<String>) -> Reply {
        self.stderr = stderr.into().into_bytes();
        self
    }

    /// Sets the exit code (keeping the output).
    pub fn with_code(mut self, code: i32) -> Reply {
        self.exit = ExitInfo {
            code: Some(code),
            signal: None,
        };
        self.timed_out = false;
        self
    }

    /// Pauses `delay` before each stdout line, so a stream sees lines arrive over time
    /// (deterministic under a paused tokio clock).
    pub fn with_line_delay(mut self, delay: Duration) -> Reply {
        self.line_delay = Some(delay);
        self
    }

    /// Keeps the scripted process running for `delay` after its output before it exits
    /// (default: exits at once). The command's timeout applies to this time as to a real child.
    pub fn with_exit_delay(mut self, delay: Duration) -> Reply {
        self.linger = Some(delay);
        self
    }

    #[cfg_attr(not(feature = "record"), allow(dead_code))]
    pub(crate) fn from_parts(
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        exit: ExitInfo,
        timed_out: bool,
    ) -> Reply {
        let mut r = Reply::base(exit.code);
        r.stdout = stdout;
        r.stderr = stderr;
        r.exit = exit;
        r.timed_out = timed_out;
        r
    }

    fn script(&self) -> Script {
        Script {
            stdout: self.stdout.clone(),
            stderr: self.stderr.clone(),
            exit: self.exit,
            timed_out: self.timed_out,
            line_delay: self.line_delay,
            linger: self.linger,
        }
    }

    /// Plays this reply for `cmd` as a one-shot run (through the real pumps and finisher).
    pub(crate) async fn play_output(&self, cmd: &Command) -> Result<ProcessResult<Vec<u8>>> {
        self.check_spawn(cmd)?;
        let rp = RunningProcess::scripted(cmd, Purpose::Collect, self.script())?;
        verbs::collect(rp).await
    }

    /// Plays this reply for `cmd` as a live handle, without a runner: what a scripted
    /// [`start`](ProcessRunner::start) returns. Handy in a [`MockRunner`](crate::MockRunner)
    /// `expect_start().returning(..)` closure.
    ///
    /// # Errors
    /// [`Error::NotFound`] for [`Reply::not_found`]; [`Error::Cancelled`] when the command's
    /// token is already cancelled.
    ///
    /// # Panics
    /// Outside a tokio runtime (the scripted process runs as tasks).
    pub fn start(&self, cmd: &Command) -> Result<RunningProcess> {
        self.check_spawn(cmd)?;
        RunningProcess::scripted(cmd, Purpose::Stream, self.script())
    }

    fn check_spawn(&self, cmd: &Command) -> Result<()> {
        // The real runner's input checks come first, so a command a double accepts is one
        // production accepts too (a zero timeout, a NUL byte, an `=` in an env name, ...).
        // Not the file-system checks: a double stays hermetic (`/repo` need not exist).
        verbs::validate_input(cmd)?;
        if self.not_found {
            return Err(Error::NotFound {
                program: cmd.program_name(),
            });
        }
        Ok(())
    }
}

type Predicate = Arc<dyn Fn(&Command) -> bool + Send + Sync>;

enum Matcher {
    Exact(Vec<OsString>),
    Prefix(Vec<OsString>),
    When(Predicate),
    Any,
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words = |w: &[OsString]| {
            w.iter()
                .map(|a| crate::error::shell_quote(&a.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self {
            Matcher::Exact(w) => write!(f, "`{}`", words(w)),
            Matcher::Prefix(w) => write!(f, "`{} ...`", words(w)),
            Matcher::When(_) => f.write_str("a `when` predicate"),
            Matcher::Any => f.write_str("the fallback"),
        }
    }
}

/// Whether the rule's program names the command's program: equal, or (for a rule without a
/// path) equal to the command program's file name, with an `.exe` suffix ignored.
fn program_matches(rule: &OsStr, program: &OsStr) -> bool {
    if rule == program {
        return true;
    }
    let rule_path = Path::new(rule);
    if rule_path.components().count() != 1 {
        return false;
    }
    let Some(name) = Path::new(program).file_name() else {
        return false;
    };
    let strip = |s: &OsStr| {
        let s = s.to_string_lossy().into_owned();
        match s.strip_suffix(".exe") {
            Some(t) => t.to_owned(),
            None => s,
        }
    };
    strip(name) == strip(rule)
}

impl Matcher {
    fn matches(&self, cmd: &Command) -> bool {
        let argv_match = |w: &[OsString], exact: bool| {
            let Some((prog, args)) = w.split_first() else {
                return false;
            };
            if !program_matches(prog, &cmd.program) {
                return false;
            }
            if exact {
                args.len() == cmd.args.len() && args.iter().zip(&cmd.args).all(|(a, b)| a == b)
            } else {
                args.len() <= cmd.args.len() && args.iter().zip(&cmd.args).all(|(a, b)| a == b)
            }
        };
        match self {
            Matcher::Exact(w) => argv_match(w, true),
            Matcher::Prefix(w) => argv_match(w, false),
            Matcher::When(p) => p(cmd),
            Matcher::Any => true,
        }
    }
}

struct Rule {
    matcher: Matcher,
    replies: Vec<Reply>,
    /// How many times this rule was used.
    served: usize,
}

/// A test double that answers commands with canned [`Reply`]s; nothing is spawned.
///
/// Rules are tried in registration order and the first match wins:
///
/// * [`on`](Self::on) matches the program and the **exact** argument list;
/// * [`on_prefix`](Self::on_prefix) matches the program and a leading run of arguments;
/// * [`when`](Self::when) matches any predicate over the [`Command`];
/// * [`fallback`](Self::fallback) matches everything (always tried last).
///
/// The program of a rule without a path matches a command's program by file name, so
/// `on(["git", ...])` also answers `Command::new("/usr/bin/git")`.
///
/// Each rule answers with one reply, or with a sequence ([`on_sequence`](Self::on_sequence)):
/// the replies in order, then the last one again and again.
///
/// Every verb behaves as with a real child: a scripted run goes through the same pumps,
/// buffer policy, line handlers, encoding, retry policy, timeout and cancellation logic, and a
/// scripted [`start`](ProcessRunner::start) returns a [`RunningProcess`] whose
/// `stdout_lines`/`wait_for_line`/`finish_streamed` work (its [`pid`](RunningProcess::pid) is
/// 0; stdin is accepted and discarded).
///
/// # Errors
/// An invocation no rule matches fails with [`Error::InvalidInput`] whose `what` names the
/// invocation and whose `reason` lists the rules the script has, so a surprise command can
/// never slip through a test. (`InvalidInput` is never retried by a
/// [`RetryPolicy`](crate::RetryPolicy).)
///
/// ```
/// use processkit::{Command, ProcessRunnerExt, Reply, ScriptedRunner};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> processkit::Result<()> {
/// let runner = ScriptedRunner::new()
///     .on(["git", "branch", "--show-current"], Reply::ok("main\n"))
///     .when(|cmd| cmd.get_current_dir().is_some(), Reply::fail(128, "not a git repository"));
/// let branch = runner.run(&Command::new("git").args(["branch", "--show-current"])).await?;
/// assert_eq!(branch, "main");
/// # Ok(())
/// # }
/// ```
#[derive(Default)]
pub struct ScriptedRunner {
    rules: Mutex<Vec<Rule>>,
    fallback: Option<Reply>,
    fallback_served: AtomicUsize,
}

impl fmt::Debug for ScriptedRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedRunner")
            .field("rules", &self.describe())
            .finish()
    }
}

fn argv<I, S>(argv: I) -> Vec<OsString>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    argv.into_iter().map(|a| a.as_ref().to_owned()).collect()
}

impl ScriptedRunner {
    /// An empty script: every invocation is an error until rules are added.
    pub fn new() -> ScriptedRunner {
        ScriptedRunner::default()
    }

    fn push(self, matcher: Matcher, replies: Vec<Reply>) -> ScriptedRunner {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Rule {
                matcher,
                replies,
                served: 0,
            });
        self
    }

    /// Answers `program args...` (the first element is the program; the arguments must match
    /// exactly) with `reply`.
    pub fn on<I, S>(self, command: I, reply: Reply) -> ScriptedRunner
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.push(Matcher::Exact(argv(command)), vec![reply])
    }

    /// Answers any command starting with `program args...` (element-wise: `["git", "log"]`
    /// matches `git log -n 1`, not `git logs`) with `reply`.
    pub fn on_prefix<I, S>(self, prefix: I, reply: Reply) -> ScriptedRunner
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.push(Matcher::Prefix(argv(prefix)), vec![reply])
    }

    /// Answers exactly `program args...` with `replies` in order, then repeats the last one
    /// (e.g. fail, fail, succeed for a retry test). An empty list is the same as no rule.
    pub fn on_sequence<I, S, R>(self, command: I, replies: R) -> ScriptedRunner
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
        R: IntoIterator<Item = Reply>,
    {
        self.push(Matcher::Exact(argv(command)), replies.into_iter().collect())
    }

    /// Answers every command for which `pred` returns `true` with `reply`.
    pub fn when(
        self,
        pred: impl Fn(&Command) -> bool + Send + Sync + 'static,
        reply: Reply,
    ) -> ScriptedRunner {
        self.push(Matcher::When(Arc::new(pred)), vec![reply])
    }

    /// Answers every command no rule matched with `reply`.
    pub fn fallback(mut self, reply: Reply) -> ScriptedRunner {
        self.fallback = Some(reply);
        self
    }

    /// How many invocations the script has answered (fallback included).
    pub fn answered(&self) -> usize {
        let rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        rules.iter().map(|r| r.served).sum::<usize>() + self.fallback_served.load(Ordering::SeqCst)
    }

    /// The rules (registration order) that have not answered anything yet, described as in
    /// the miss error; empty when every rule was used.
    pub fn unused(&self) -> Vec<String> {
        let rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        rules
            .iter()
            .filter(|r| r.served == 0)
            .map(|r| r.matcher.to_string())
            .collect()
    }

    fn describe(&self) -> Vec<String> {
        let rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let mut d: Vec<String> = rules.iter().map(|r| r.matcher.to_string()).collect();
        if self.fallback.is_some() {
            d.push(Matcher::Any.to_string());
        }
        d
    }

    /// The reply for `cmd`, or the miss error.
    fn pick(&self, cmd: &Command) -> Result<Reply> {
        {
            let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
            for rule in rules.iter_mut() {
                if rule.replies.is_empty() || !rule.matcher.matches(cmd) {
                    continue;
                }
                let i = rule.served.min(rule.replies.len() - 1);
                rule.served += 1;
                return Ok(rule.replies[i].clone());
            }
        }
        if let Some(f) = &self.fallback {
            self.fallback_served.fetch_add(1, Ordering::SeqCst);
            return Ok(f.clone());
        }
        let rules = self.describe();
        let expected = if rules.is_empty() {
            "the script has no rules".to_owned()
        } else {
            format!("the script expects {}", rules.join(", "))
        };
        let cwd = cmd
            .cwd
            .as_ref()
            .map(|d| format!(" in {}", d.display()))
            .unwrap_or_default();
        Err(Error::invalid(
            &cmd.program_name(),
            format!("unscripted invocation `{}`{cwd}", cmd.command_line()),
            format!("ScriptedRunner has no reply for it; {expected}"),
        ))
    }
}

impl ProcessRunner for ScriptedRunner {
    fn output_bytes<'a>(
        &'a self,
        cmd: &'a Command,
    ) -> BoxFuture<'a, Result<ProcessResult<Vec<u8>>>> {
        Box::pin(async move {
            admit(cmd)?;
            let reply = self.pick(cmd)?;
            reply.play_output(cmd).await
        })
    }

    fn start<'a>(&'a self, cmd: &'a Command) -> BoxFuture<'a, Result<RunningProcess>> {
        Box::pin(async move {
            admit(cmd)?;
            self.pick(cmd)?.start(cmd)
        })
    }
}

/// What a real run checks before anything starts, in the same order: bad input, then a token
/// already cancelled. Before a reply is picked, so a refused run uses none up.
fn admit(cmd: &Command) -> Result<()> {
    verbs::validate_input(cmd)?;
    crate::cancel::precheck(cmd)
}
