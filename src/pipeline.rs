//! Pipelines without a shell: `a | b | c` over native OS pipes, with pipefail attribution.
//!
//! Wiring: stage `i`'s stdout is the write end of an OS pipe whose read end is stage `i + 1`'s
//! stdin, so data flows kernel to kernel and never through this process. Both ends are handed
//! to the child at spawn and our copies are closed the moment the spawn returns (a write end
//! left open here would keep the consumer from ever seeing end-of-file). Every stage runs in
//! one group: a private kill-on-drop group per run, or the caller's shared group.
//!
//! The end rule: the pipeline is over when the **last** stage has exited. At that point any
//! earlier stage still running can no longer deliver output anywhere (a writer dies of
//! `SIGPIPE` / `EPIPE` on its next write), so after a short grace (`END_GRACE`, for stages that
//! closed their output and are just exiting) it is killed, then every stage is reaped and every
//! stderr drained. A checked stage killed this way counts as a failure (blamed only when no
//! checked stage failed on its own); mark producers that are expected to be cut short
//! `.unchecked()`.

use std::fmt;
use std::ops::BitOr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::group::{GroupInner, ProcessGroup};
use crate::result::{ProcessResult, StageOutcome};
use crate::runner::ProcessRunner;
use crate::running::pump::Mode;
use crate::running::Control;
use crate::running::{
    ExitState, LineStream, Owner, RunningProcess, StdinWriter, SHARED_DRAIN_LINGER,
};
use crate::stdio::Stdin;
use crate::sys::ChildStdio;
use crate::verbs::{self, Purpose, Scope, StageStdio};
use crate::{Command, JobRunner};

/// How long stages still running when the last stage exited get to end on their own before the
/// end rule kills them.
const END_GRACE: Duration = Duration::from_secs(1);

/// A chain of commands whose stdout feeds the next one's stdin: `a | b | c` without a shell.
///
/// Build one with [`Command::pipe`], [`Pipeline::pipe`] or the `|` operator, then finish it with
/// the same verbs as a [`Command`]: [`run`](Self::run), [`output_string`](Self::output_string),
/// [`output_bytes`](Self::output_bytes), [`exit_code`](Self::exit_code), [`probe`](Self::probe),
/// [`start`](Self::start). Like `Command`, a pipeline is plain data: it can be cloned and run
/// again.
///
/// ```no_run
/// use processkit::Command;
/// # #[tokio::main]
/// # async fn main() -> processkit::Result<()> {
/// // git log --format=%an | sort | uniq -c
/// let authors = (Command::new("git").args(["log", "--format=%an"])
///     | Command::new("sort")
///     | Command::new("uniq").arg("-c"))
///     .run()
///     .await?;
/// # let _ = authors;
/// # Ok(())
/// # }
/// ```
///
/// # Outcome (pipefail)
/// `stdout` is the last stage's. The exit code, stderr and [`program`](ProcessResult::program)
/// come from the first stage that did not exit cleanly (code 0), or from the last stage when all
/// did. A stage marked [`Command::unchecked`] is skipped by that search, so a checked failure
/// always wins. Every stage's own outcome is in [`ProcessResult::stages`] (like bash's
/// `PIPESTATUS`).
///
/// # Stages
/// The first stage's stdin source is honoured; later stages read the pipe (their own stdin
/// settings are ignored), and every stage but the last writes the pipe (their stdout settings
/// are ignored). The last stage's stdout mode, encoding and buffer policy apply to the result.
/// Each stage's stderr is drained concurrently and kept per stage. A stage's own
/// [`Command::timeout`] still applies to that stage; [`Pipeline::timeout`] bounds the whole
/// chain. Retry policies of stages are not applied.
///
/// # The end of a run
/// The pipeline is over when its last stage has exited: earlier stages still running then get
/// up to one second to end on their own (a writer dies of `SIGPIPE` at once; a stage that
/// closed its output is usually just exiting), then are killed; every stage is reaped and every
/// stderr drained. A checked stage killed this way counts as failed (like a `SIGPIPE`
/// death under `set -o pipefail`), but it is blamed only when no checked stage failed on its
/// own: a producer still starting up is never blamed for a later stage's fast failure.
#[derive(Clone)]
pub struct Pipeline {
    pub(crate) stages: Vec<Command>,
    pub(crate) timeout: Option<Duration>,
}

impl Command {
    /// Pipes this command's stdout into `next`'s stdin: `self | next`.
    ///
    /// Equivalent to `self | next`. See [`Pipeline`].
    pub fn pipe(self, next: Command) -> Pipeline {
        Pipeline {
            stages: vec![self, next],
            timeout: None,
        }
    }
}

impl From<Command> for Pipeline {
    /// A one-stage pipeline (useful as the seed of a fold).
    fn from(cmd: Command) -> Pipeline {
        Pipeline {
            stages: vec![cmd],
            timeout: None,
        }
    }
}

impl Pipeline {
    /// Appends `next` as the new last stage: `self | next`.
    pub fn pipe(mut self, next: Command) -> Pipeline {
        self.stages.push(next);
        self
    }

    /// Bounds the whole chain: at the deadline every stage (and everything it spawned, for a
    /// private group) is killed. The output verbs capture the expiry
    /// ([`ProcessResult::timed_out`]); [`run`](Self::run) and [`exit_code`](Self::exit_code)
    /// raise [`Error::Timeout`]. A zero duration is [`Error::InvalidInput`].
    pub fn timeout(mut self, timeout: Duration) -> Pipeline {
        self.timeout = Some(timeout);
        self
    }

    /// The stages, first to last.
    pub fn stages(&self) -> &[Command] {
        &self.stages
    }

    /// The chain timeout, if set.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The shell-escaped command line, stages joined by ` | `.
    pub fn command_line(&self) -> String {
        let parts: Vec<String> = self.stages.iter().map(Command::command_line).collect();
        parts.join(" | ")
    }

    /// Binds the pipeline to `runner` for one of the verbs: `pipeline.with_runner(&group).run()`.
    ///
    /// [`JobRunner`] (what the pipeline's own verbs use) gives every run a private group; a
    /// [`ProcessGroup`] puts every stage in that shared group; other runners get
    /// [`ProcessRunner::output_pipeline`] / [`ProcessRunner::start_pipeline`] (test doubles run
    /// the stages one after the other through their own `output_bytes`).
    pub fn with_runner<'a, R: ProcessRunner + ?Sized>(
        &'a self,
        runner: &'a R,
    ) -> PipelineWith<'a, R> {
        PipelineWith {
            pipeline: self,
            runner,
        }
    }

    /// Runs the chain, requiring every checked stage to succeed; returns the last stage's stdout
    /// with surrounding whitespace trimmed.
    ///
    /// # Errors
    /// [`Error::NonZeroExit`] / [`Error::Signalled`] for the first checked stage that failed
    /// (naming it, with its stderr), [`Error::Timeout`], spawn and input errors of any stage,
    /// [`Error::InvalidUtf8`] under the last stage's strict encoding, [`Error::Cancelled`].
    ///
    /// # Cancel safety
    /// Dropping the future kills every stage.
    pub async fn run(&self) -> Result<String> {
        self.with_runner(&JobRunner).run().await
    }

    /// Runs the chain and returns the combined outcome (see [pipefail](Pipeline#outcome-pipefail)),
    /// stdout decoded per the last stage's encoding.
    ///
    /// # Errors
    /// Spawn and input errors of any stage, [`Error::InvalidUtf8`] under strict encoding,
    /// [`Error::Cancelled`]. Never for a non-zero exit or a timeout.
    ///
    /// # Cancel safety
    /// Dropping the future kills every stage.
    pub async fn output_string(&self) -> Result<ProcessResult<String>> {
        self.with_runner(&JobRunner).output_string().await
    }

    /// Runs the chain and returns the combined outcome with the last stage's raw stdout.
    ///
    /// # Errors
    /// Spawn and input errors of any stage, [`Error::Cancelled`]. Never for a non-zero exit or
    /// a timeout.
    ///
    /// # Cancel safety
    /// Dropping the future kills every stage.
    pub async fn output_bytes(&self) -> Result<ProcessResult<Vec<u8>>> {
        self.with_runner(&JobRunner).output_bytes().await
    }

    /// Runs the chain and returns the pipefail exit code.
    ///
    /// # Errors
    /// [`Error::Timeout`], [`Error::Signalled`] when the reported stage was killed; spawn errors.
    ///
    /// # Cancel safety
    /// Dropping the future kills every stage.
    pub async fn exit_code(&self) -> Result<i32> {
        self.with_runner(&JobRunner).exit_code().await
    }

    /// Runs the chain as a yes/no question on the pipefail exit code: 0 is `true`, 1 is `false`.
    ///
    /// # Errors
    /// [`Error::NonZeroExit`] for any other code; [`Error::Timeout`], [`Error::Signalled`],
    /// spawn errors.
    ///
    /// # Cancel safety
    /// Dropping the future kills every stage.
    pub async fn probe(&self) -> Result<bool> {
        self.with_runner(&JobRunner).probe().await
    }

    /// Starts every stage in a private kill-on-drop group and returns a live handle to the chain.
    ///
    /// # Errors
    /// Spawn and input errors of any stage (the stages already started are killed).
    ///
    /// # Cancel safety
    /// Cancel safe: spawning completes synchronously inside the call.
    pub async fn start(&self) -> Result<RunningPipeline> {
        self.with_runner(&JobRunner).start().await
    }

    /// Rejects a chain the verbs cannot run, before anything is spawned.
    /// Rejects a chain before anything starts: no stage, a zero timeout, any stage's bad input
    /// (`real`: also what the file system must provide, as a real spawn checks; a double stays
    /// hermetic), and any stage's token already cancelled, so nothing is spawned at all.
    fn validate(&self, real: bool) -> Result<()> {
        let program = self
            .stages
            .first()
            .map(Command::program_name)
            .unwrap_or_default();
        if self.stages.is_empty() {
            return Err(Error::invalid(&program, "pipeline", "has no stage"));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::invalid(
                &program,
                "pipeline timeout",
                "must be greater than zero",
            ));
        }
        for cmd in &self.stages {
            if real {
                verbs::validate(cmd)?;
            } else {
                verbs::validate_input(cmd)?;
            }
        }
        for cmd in &self.stages {
            crate::cancel::precheck(cmd)?;
        }
        Ok(())
    }

    fn last(&self) -> &Command {
        self.stages
            .last()
            .expect("a validated pipeline has a stage")
    }
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Pipeline");
        d.field("stages", &self.stages);
        if let Some(t) = self.timeout {
            d.field("timeout", &t);
        }
        d.finish()
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.command_line())
    }
}

impl BitOr<Command> for Command {
    type Output = Pipeline;
    /// `a | b`: same as [`Command::pipe`].
    fn bitor(self, next: Command) -> Pipeline {
        self.pipe(next)
    }
}

impl BitOr<Command> for Pipeline {
    type Output = Pipeline;
    /// `(a | b) | c`: same as [`Pipeline::pipe`].
    fn bitor(self, next: Command) -> Pipeline {
        self.pipe(next)
    }
}

impl BitOr<Pipeline> for Command {
    type Output = Pipeline;
    /// `a | (b | c)`: the chain keeps `(b | c)`'s timeout.
    fn bitor(self, mut rest: Pipeline) -> Pipeline {
        rest.stages.insert(0, self);
        rest
    }
}

impl BitOr<Pipeline> for Pipeline {
    type Output = Pipeline;
    /// `(a | b) | (c | d)`: when both sides have a timeout the shorter one bounds the chain.
    fn bitor(mut self, rest: Pipeline) -> Pipeline {
        self.stages.extend(rest.stages);
        self.timeout = match (self.timeout, rest.timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self
    }
}

/// A [`Pipeline`] bound to a [`ProcessRunner`] (from [`Pipeline::with_runner`]); offers the
/// pipeline verbs with the same semantics.
pub struct PipelineWith<'a, R: ProcessRunner + ?Sized> {
    pipeline: &'a Pipeline,
    runner: &'a R,
}

impl<R: ProcessRunner + ?Sized> fmt::Debug for PipelineWith<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineWith")
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

impl<R: ProcessRunner + ?Sized> PipelineWith<'_, R> {
    /// As [`Pipeline::run`].
    ///
    /// # Errors
    /// As [`Pipeline::run`].
    ///
    /// # Cancel safety
    /// Dropping the future kills every stage (with a [`ProcessGroup`] runner, only the stages
    /// themselves; what they spawned dies with the group).
    pub async fn run(&self) -> Result<String> {
        let r = self.output_bytes().await?;
        // A failed chain reports its own error; strict decoding must not mask it.
        let failed = r.timed_out
            || if r.stages.is_empty() {
                !r.success()
            } else {
                r.stages.iter().any(|s| !s.unchecked && !s.success())
            };
        let encoding = if !failed {
            self.pipeline.last().encoding
        } else {
            crate::Encoding::Utf8Lossy
        };
        let r = verbs::to_string_result(r, encoding)?;
        check_run(&r, self.pipeline.timeout)?;
        Ok(r.stdout.trim().to_owned())
    }

    /// As [`Pipeline::output_string`].
    ///
    /// # Errors
    /// As [`Pipeline::output_string`].
    ///
    /// # Cancel safety
    /// Dropping the future kills every stage (with a [`ProcessGroup`] runner, only the stages
    /// themselves; what they spawned dies with the group).
    pub async fn output_string(&self) -> Result<ProcessResult<String>> {
        let r = self.output_bytes().await?;
        verbs::to_string_result(r, self.pipeline.last().encoding)
    }

    /// As [`Pipeline::output_bytes`].
    ///
    /// # Errors
    /// As [`Pipeline::output_bytes`].
    ///
    /// # Cancel safety
    /// Dropping the future kills every stage (with a [`ProcessGroup`] runner, only the stages
    /// themselves; what they spawned dies with the group).
    pub async fn output_bytes(&self) -> Result<ProcessResult<Vec<u8>>> {
        self.pipeline.validate(false)?;
        self.runner.output_pipeline(self.pipeline).await
    }

    /// As [`Pipeline::exit_code`].
    ///
    /// # Errors
    /// As [`Pipeline::exit_code`].
    ///
    /// # Cancel safety
    /// Dropping the future kills every stage (with a [`ProcessGroup`] runner, only the stages
    /// themselves; what they spawned dies with the group).
    pub async fn exit_code(&self) -> Result<i32> {
        let r = self.output_bytes().await?.map_stdout(|_| String::new());
        verbs::check_finished(&r, self.pipeline.timeout)?;
        Ok(r.code.unwrap_or(-1))
    }

    /// As [`Pipeline::probe`].
    ///
    /// # Errors
    /// As [`Pipeline::probe`].
    ///
    /// # Cancel safety
    /// Dropping the future kills every stage (with a [`ProcessGroup`] runner, only the stages
    /// themselves; what they spawned dies with the group).
    pub async fn probe(&self) -> Result<bool> {
        let r = self.output_bytes().await?;
        let r = verbs::to_string_result(r, crate::Encoding::Utf8Lossy)?;
        verbs::check_finished(&r, self.pipeline.timeout)?;
        match r.code {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(verbs::non_zero(&r)),
        }
    }

    /// As [`Pipeline::start`], through the bound runner (a [`ProcessGroup`] runner starts every
    /// stage in that shared group).
    ///
    /// # Errors
    /// As [`Pipeline::start`].
    ///
    /// # Cancel safety
    /// As [`Pipeline::start`]: a dropped future leaves nothing running.
    pub async fn start(&self) -> Result<RunningPipeline> {
        self.pipeline.validate(false)?;
        self.runner.start_pipeline(self.pipeline).await
    }
}

/// `run()`'s rule: every checked stage succeeded and nothing timed out.
fn check_run(r: &ProcessResult<String>, timeout: Option<Duration>) -> Result<()> {
    if r.timed_out {
        return verbs::check_finished(r, timeout);
    }
    let checked_failure = if r.stages.is_empty() {
        !r.success()
    } else {
        r.stages.iter().any(|s| !s.unchecked && !s.success())
    };
    if checked_failure {
        // The combined view already names the first checked stage that failed.
        verbs::check_finished(r, timeout)?;
        return Err(verbs::non_zero(r));
    }
    Ok(())
}

/// A live pipeline: every stage running, connected by OS pipes.
///
/// Returned by [`Pipeline::start`] (a private kill-on-drop group holds every stage: dropping the
/// handle kills the whole chain and everything it spawned) and by
/// `pipeline.with_runner(&group).start()` (the stages live in that shared group; dropping the
/// handle kills the stages themselves).
///
/// The last stage's stdout is streamed with [`stdout_lines`](Self::stdout_lines); the first
/// stage's stdin is writable through [`standard_input`](Self::standard_input) when it was built
/// with [`Command::keep_stdin_open`]. [`wait`](Self::wait) and [`finish`](Self::finish) apply the
/// pipeline's end rule and timeout (see [`Pipeline`]).
pub struct RunningPipeline {
    stages: Vec<Slot>,
    meta: Vec<StageMeta>,
    /// The private group holding every stage, when this run owns one.
    group: Option<ProcessGroup>,
    deadline: Option<tokio::time::Instant>,
    started: Instant,
    timed_out: bool,
    /// The program of the stage whose cancellation token abandoned the whole chain.
    cancelled_by: Option<String>,
    /// Per stage: still running when the end rule killed the rest.
    cut_short: Vec<bool>,
    over: bool,
    /// Kills the whole chain when a stage's token fires, so a live chain's stream ends too.
    cancel_watch: Option<CancelWatch>,
}

/// The watch that abandons the whole chain when a stage's token fires while the chain runs.
struct CancelWatch {
    task: tokio::task::JoinHandle<()>,
    /// The program of the stage whose token abandoned the chain; set before the kill.
    fired: Arc<std::sync::OnceLock<String>>,
}

impl Drop for CancelWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the watch that abandons the whole chain when any stage's token fires before the last
/// stage exited (after that the chain's outcome is settled, as a single command's is once its
/// child exited): a stage's own watchdog kills only that stage, and a descendant of it could
/// hold the pipe to the next stage open for ever.
fn watch_cancels(
    p: &Pipeline,
    stages: &[Slot],
    private: Option<Arc<GroupInner>>,
) -> Option<CancelWatch> {
    let tokens: Vec<_> = p
        .stages
        .iter()
        .map(|cmd| (cmd.program_name(), crate::cancel::Cancel::of(cmd)))
        .filter(|(_, c)| c.is_set())
        .collect();
    let mut controls = Vec::new();
    for s in stages {
        if let Slot::Live(rp) = s {
            controls.extend(rp.control.clone());
        }
    }
    let last_exit = match stages.last() {
        Some(Slot::Live(rp)) => rp.exit_rx.clone(),
        _ => return None,
    };
    if tokens.is_empty() {
        return None;
    }
    let fired = Arc::new(std::sync::OnceLock::new());
    let mark = fired.clone();
    let task = tokio::spawn(async move {
        let cancels: Vec<_> = tokens.iter().map(|(_, c)| c.clone()).collect();
        crate::cancel::any_cancelled(&cancels).await;
        if last_exit.borrow().is_some() {
            return;
        }
        let program = tokens
            .iter()
            .find(|(_, c)| c.is_cancelled())
            .map(|(p, _)| p.clone())
            .unwrap_or_default();
        let _ = mark.set(program);
        if let Some(g) = private {
            let _ = g.kill_all();
        }
        for c in controls {
            let _ = c.send(Control::Kill);
        }
    });
    Some(CancelWatch { task, fired })
}

/// What a stage is right now.
enum Slot {
    /// A running (or exited, not yet collected) process.
    Live(Box<RunningProcess>),
    /// A stage that already finished (a runner emulating the chain stage by stage).
    Done(StageInfo),
}

/// Static facts about one stage.
#[derive(Debug, Clone)]
struct StageMeta {
    program: String,
    args: Vec<String>,
    unchecked: bool,
}

/// One finished stage, with what attribution needs.
#[derive(Debug, Clone)]
struct StageInfo {
    outcome: StageOutcome,
    args: Vec<String>,
    timed_out: bool,
    /// Killed by the end rule rather than failing on its own.
    cut_short: bool,
    stderr_dropped: u64,
}

impl StageInfo {
    fn clean(&self) -> bool {
        self.outcome.success() && !self.timed_out
    }
}

impl fmt::Debug for RunningPipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let programs: Vec<&str> = self.meta.iter().map(|m| m.program.as_str()).collect();
        f.debug_struct("RunningPipeline")
            .field("stages", &programs)
            .field("pids", &self.pids())
            .finish_non_exhaustive()
    }
}

impl RunningPipeline {
    /// The OS process id of every stage, first to last (0 for a stage a test double ran).
    pub fn pids(&self) -> Vec<u32> {
        self.stages
            .iter()
            .map(|s| match s {
                Slot::Live(rp) => rp.pid(),
                Slot::Done(_) => 0,
            })
            .collect()
    }

    /// Whether every stage has exited (without waiting).
    pub fn has_exited(&self) -> bool {
        self.stages.iter().all(|s| match s {
            Slot::Live(rp) => rp.has_exited(),
            Slot::Done(_) => true,
        })
    }

    /// Streams the last stage's stdout line by line (see [`RunningProcess::stdout_lines`]).
    pub fn stdout_lines(&mut self) -> LineStream {
        match self.stages.last_mut() {
            Some(Slot::Live(rp)) => rp.stdout_lines(),
            _ => LineStream::empty(),
        }
    }

    /// The writer for the first stage's stdin, once, when that stage was built with
    /// [`Command::keep_stdin_open`].
    pub fn standard_input(&mut self) -> Option<StdinWriter> {
        match self.stages.first_mut() {
            Some(Slot::Live(rp)) => rp.standard_input(),
            _ => None,
        }
    }

    /// Waits until the pipeline is over (its last stage exited; the rest were then killed) and
    /// returns the pipefail exit code: the first failed checked stage's, else the last stage's
    /// (`None` when that stage was killed, or the chain timed out).
    ///
    /// Stdout that nobody streams is discarded from here on, and a first-stage stdin writer
    /// never taken with [`standard_input`](Self::standard_input) is closed (end-of-file).
    ///
    /// # Errors
    /// [`Error::Cancelled`] when a stage's token fired; [`Error::Io`] when an OS wait fails.
    ///
    /// # Cancel safety
    /// Cancel safe: wait again later.
    pub async fn wait(&mut self) -> Result<Option<i32>> {
        if let Some(Slot::Live(rp)) = self.stages.first_mut() {
            rp.close_untaken_stdin();
        }
        if let Some(Slot::Live(rp)) = self.stages.last_mut() {
            if rp.stdout_stream.is_none() {
                if let Some(p) = rp.stdout.as_mut() {
                    if p.shared.mode() == Mode::Channel && p.rx.is_some() {
                        p.rx = None;
                        p.shared.set_mode(Mode::Discard);
                    }
                }
            }
        }
        self.wait_over().await?;
        self.check_cancelled()?;
        let infos = self.stage_infos(false);
        let (idx, _) = attribute(&infos);
        if self.timed_out || infos[idx].timed_out {
            return Ok(None);
        }
        Ok(infos[idx].outcome.code)
    }

    /// Kills every stage now (for a private group: everything the stages spawned too) and waits
    /// until all are reaped.
    ///
    /// # Errors
    /// [`Error::Io`] when the OS refuses the kill or a wait fails.
    ///
    /// # Cancel safety
    /// Cancel safe: the kill is sent before the first `.await`; dropping the future only stops
    /// waiting for the stages to be reaped (which still happens in the background).
    pub async fn kill(&mut self) -> Result<()> {
        self.kill_all()?;
        for s in &mut self.stages {
            if let Slot::Live(rp) = s {
                rp.wait_exit().await?;
            }
        }
        Ok(())
    }

    /// Waits until the pipeline is over and returns the combined outcome (see
    /// [pipefail](Pipeline#outcome-pipefail)) with every stage's outcome in
    /// [`ProcessResult::stages`].
    ///
    /// `stdout` holds what the last stage printed that was not streamed: a handle from
    /// [`Pipeline::start`] hands stdout to [`stdout_lines`](Self::stdout_lines), so read it there
    /// (lines not read are lost once this is called).
    ///
    /// # Errors
    /// [`Error::Cancelled`], [`Error::Io`] when a wait fails, [`Error::InvalidUtf8`] under the
    /// last stage's strict encoding.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping it kills the chain and loses the collected output.
    pub async fn finish(mut self) -> Result<ProcessResult<String>> {
        let encoding = match self.stages.last() {
            Some(Slot::Live(rp)) => rp.meta.encoding,
            _ => crate::Encoding::default(),
        };
        self.wait().await?;
        let r = self.finish_bytes().await?;
        verbs::to_string_result(r, encoding)
    }

    /// Builds the combined outcome of a run that is over (or collects one from scratch).
    async fn finish_bytes(&mut self) -> Result<ProcessResult<Vec<u8>>> {
        self.wait_over().await?;
        for stage in &self.stages {
            if let Slot::Live(rp) = stage {
                rp.resume_handler_panics();
            }
        }
        self.check_cancelled()?;
        let infos = self.stage_infos(true);
        let (stdout, stdout_dropped) = match self.stages.last() {
            Some(Slot::Live(rp)) => rp
                .stdout
                .as_ref()
                .map(|p| p.shared.take_capture())
                .unwrap_or_default(),
            _ => Default::default(),
        };
        let oom_killed = self
            .group
            .as_ref()
            .is_some_and(|g| g.inner().container.oom_killed());
        Ok(combine(
            infos,
            stdout,
            stdout_dropped,
            self.timed_out,
            oom_killed,
            self.started.elapsed(),
        ))
    }

    fn check_cancelled(&self) -> Result<()> {
        if let Some(program) = &self.cancelled_by {
            return Err(Error::Cancelled {
                program: program.clone(),
            });
        }
        for s in &self.stages {
            if let Slot::Live(rp) = s {
                rp.check_cancelled()?;
            }
        }
        Ok(())
    }

    /// Kills every stage still running (the whole group, when private).
    fn kill_all(&mut self) -> Result<()> {
        if let Some(g) = &self.group {
            g.kill()?;
        }
        for s in &mut self.stages {
            if let Slot::Live(rp) = s {
                if !rp.has_exited() {
                    rp.start_kill()?;
                }
            }
        }
        Ok(())
    }

    /// The end rule: wait for the last stage (bounded by the chain deadline), kill the rest,
    /// reap everything, drain every stderr (and the captured stdout).
    async fn wait_over(&mut self) -> Result<()> {
        if self.over {
            return Ok(());
        }
        let deadline = self.deadline;
        if let Some(Slot::Live(last)) = self.stages.last_mut() {
            // A stage's token ends this wait too: the cancel watch kills every stage.
            let exited = match deadline {
                Some(d) => tokio::select! {
                    biased;
                    r = last.wait_exit() => Some(r),
                    _ = tokio::time::sleep_until(d) => None,
                },
                None => Some(last.wait_exit().await),
            };
            match exited {
                Some(r) => {
                    r?;
                }
                None => {
                    self.timed_out = true;
                    #[cfg(feature = "tracing")]
                    tracing::debug!("processkit: pipeline timed out; killing every stage");
                }
            }
        }
        // The watch records the stage before it kills, so a chain it ended is known here.
        self.cancelled_by = self
            .cancel_watch
            .as_ref()
            .and_then(|w| w.fired.get().cloned());
        #[cfg(feature = "tracing")]
        if self.cancelled_by.is_some() {
            tracing::debug!("processkit: pipeline cancelled; every stage was killed");
        }
        // Whatever still runs can no longer deliver output anywhere. A writer dies of SIGPIPE
        // at once, and a stage that closed its stdout before exiting (coreutils do, at exit) is
        // usually just finishing: give them END_GRACE to end on their own, then kill the rest
        // and remember which stages that cut short, for attribution.
        if !self.timed_out && self.cancelled_by.is_none() {
            let until = tokio::time::Instant::now() + END_GRACE;
            let n = self.stages.len();
            for s in self.stages.iter_mut().take(n.saturating_sub(1)) {
                if let Slot::Live(rp) = s {
                    if !rp.has_exited() {
                        tokio::select! {
                            biased;
                            r = rp.wait_exit() => { r?; }
                            _ = tokio::time::sleep_until(until) => break,
                        }
                    }
                }
            }
            for (cut, s) in self.cut_short.iter_mut().zip(&self.stages) {
                *cut = matches!(s, Slot::Live(rp) if !rp.has_exited());
            }
        }
        let _ = self.kill_all();
        let private = self.group.is_some();
        for s in &mut self.stages {
            let Slot::Live(rp) = s else { continue };
            rp.wait_exit().await?;
            // With the private group killed nothing can hold a pipe open: drain to end-of-file.
            // In a shared group a stage's descendant may (and must not be killed): bound it.
            let linger = !private && matches!(rp.owner, Owner::Shared(_));
            let stdout_collectable = rp
                .stdout
                .as_ref()
                .is_some_and(|p| p.shared.mode() != Mode::Channel);
            let mut pumps = Vec::new();
            if let Some(p) = rp.stderr.as_mut() {
                pumps.push(p);
            }
            if stdout_collectable {
                if let Some(p) = rp.stdout.as_mut() {
                    pumps.push(p);
                }
            }
            for p in pumps {
                if linger {
                    if tokio::time::timeout(SHARED_DRAIN_LINGER, p.wait_done())
                        .await
                        .is_err()
                    {
                        p.abort();
                    }
                } else {
                    p.wait_done().await;
                }
            }
            rp.stop_feeding_stdin().await;
        }
        self.over = true;
        Ok(())
    }

    /// Every stage as it ended. `take` moves the captured stderr out (once, when finishing);
    /// without it the stderr fields are left empty.
    fn stage_infos(&mut self, take: bool) -> Vec<StageInfo> {
        let mut out = Vec::with_capacity(self.stages.len());
        for ((slot, meta), &cut) in self.stages.iter_mut().zip(&self.meta).zip(&self.cut_short) {
            match slot {
                Slot::Done(info) => out.push(info.clone()),
                Slot::Live(rp) => {
                    let exit = match &*rp.exit_rx.borrow() {
                        Some(ExitState::Exited(e)) => Some(*e),
                        _ => None,
                    };
                    let (stderr, stderr_dropped) = match rp.stderr.as_ref() {
                        Some(p) if take => p.shared.take_capture(),
                        _ => Default::default(),
                    };
                    let mut info = StageInfo {
                        outcome: StageOutcome {
                            program: meta.program.clone(),
                            code: exit.and_then(|e| e.code),
                            signal: exit.and_then(|e| e.signal),
                            stderr: String::from_utf8_lossy(&stderr).into_owned(),
                            unchecked: meta.unchecked,
                        },
                        args: meta.args.clone(),
                        timed_out: rp.flags.timed_out.load(Ordering::SeqCst),
                        cut_short: false,
                        stderr_dropped,
                    };
                    info.cut_short = cut && !info.clean();
                    out.push(info);
                }
            }
        }
        out
    }
}

/// Pipefail: the first checked stage that did not exit cleanly, else the last stage. A stage
/// the end rule had to kill is blamed only when no checked stage failed on its own: otherwise a
/// producer still starting up when a later stage failed fast would be blamed for that failure.
/// Returns the index and whether it is a failure.
fn attribute(infos: &[StageInfo]) -> (usize, bool) {
    let failed = |s: &&StageInfo| !s.outcome.unchecked && !s.clean();
    let own = infos.iter().position(|s| failed(&s) && !s.cut_short);
    match own.or_else(|| infos.iter().position(|s| failed(&s))) {
        Some(i) => (i, true),
        None => (infos.len() - 1, false),
    }
}

/// The combined view of a finished chain.
fn combine(
    infos: Vec<StageInfo>,
    stdout: Vec<u8>,
    stdout_dropped: u64,
    chain_timed_out: bool,
    oom_killed: bool,
    duration: Duration,
) -> ProcessResult<Vec<u8>> {
    let (idx, _) = attribute(&infos);
    let rep = &infos[idx];
    let timed_out = chain_timed_out || rep.timed_out;
    ProcessResult {
        program: rep.outcome.program.clone(),
        args: rep.args.clone(),
        code: if timed_out { None } else { rep.outcome.code },
        signal: rep.outcome.signal,
        stdout,
        stderr: rep.outcome.stderr.clone(),
        timed_out,
        oom_killed,
        duration,
        stdout_dropped,
        stderr_dropped: rep.stderr_dropped,
        attempts: 1,
        stages: infos.into_iter().map(|i| i.outcome).collect(),
        // A chain's deadline is reported from the pipeline's own timeout by its callers.
        expired_after: None,
    }
}

fn stage_meta(p: &Pipeline) -> Vec<StageMeta> {
    p.stages
        .iter()
        .map(|c| StageMeta {
            program: c.program_name(),
            args: c.args_lossy(),
            unchecked: c.unchecked,
        })
        .collect()
}

/// Spawns every stage over native pipes. `shared`: the caller's group; `None`: a private group
/// owned by the returned handle.
pub(crate) fn start_native(
    p: &Pipeline,
    shared: Option<Arc<GroupInner>>,
    purpose: Purpose,
) -> Result<RunningPipeline> {
    p.validate(true)?;
    let (group, inner) = match shared {
        Some(inner) => (None, inner),
        None => {
            let g = ProcessGroup::new()?;
            let inner = g.inner().clone();
            (Some(g), inner)
        }
    };
    let started = Instant::now();
    let deadline = p.timeout.map(crate::time::deadline_in);
    let n = p.stages.len();
    let mut stages = Vec::with_capacity(n);
    // The read end of the previous stage's stdout pipe, until the next stage takes it.
    let mut upstream: Option<std::io::PipeReader> = None;
    for (i, cmd) in p.stages.iter().enumerate() {
        let last = i + 1 == n;
        let (downstream, stdout) = if last {
            (None, None)
        } else {
            let (r, w) = std::io::pipe()
                .map_err(|e| Error::io(&cmd.program_name(), "creating a pipeline pipe", e))?;
            (Some(r), Some(ChildStdio::Redirect(w.into())))
        };
        let stdin = upstream.take().map(|r| ChildStdio::Redirect(r.into()));
        let stage_purpose = if last { purpose } else { Purpose::Collect };
        // Both pipe ends move into the spawn request and are closed in this process as soon as
        // the spawn returns; on error, the stages already started are killed when `stages` (and
        // a private `group`) drop.
        // The chain watches the stage's token (`watch_cancels`), not the stage itself.
        let own = crate::cancel::without_token(cmd);
        let rp = verbs::start_with(
            own.as_ref().unwrap_or(cmd),
            Scope::Shared(inner.clone()),
            stage_purpose,
            Some(StageStdio { stdin, stdout }),
        )?;
        stages.push(Slot::Live(Box::new(rp)));
        upstream = downstream;
    }
    #[cfg(feature = "tracing")]
    tracing::debug!(
        // Program names only: an event never carries argument values (nor the environment).
        programs = %p.stages.iter().map(|c| c.program_name()).collect::<Vec<_>>().join(" | "),
        "processkit: pipeline started"
    );
    let cancel_watch = watch_cancels(p, &stages, group.as_ref().map(|g| g.inner().clone()));
    Ok(RunningPipeline {
        stages,
        meta: stage_meta(p),
        group,
        deadline,
        started,
        timed_out: false,
        cancelled_by: None,
        cut_short: vec![false; n],
        over: false,
        cancel_watch,
    })
}

/// Runs a native pipeline to completion.
pub(crate) async fn output_native(
    p: &Pipeline,
    shared: Option<Arc<GroupInner>>,
) -> Result<ProcessResult<Vec<u8>>> {
    let mut rp = start_native(p, shared, Purpose::Collect)?;
    // A one-shot run hands out no writer: `keep_stdin_open` means an empty stdin here.
    if let Some(Slot::Live(first)) = rp.stages.first_mut() {
        first.close_untaken_stdin();
    }
    rp.finish_bytes().await
}

/// Runs the stages one after the other through `runner.output_bytes`, each stage's stdout fed
/// to the next as stdin bytes: the default [`ProcessRunner::output_pipeline`], for doubles.
pub(crate) async fn output_emulated<R: ProcessRunner + ?Sized>(
    runner: &R,
    p: &Pipeline,
) -> Result<ProcessResult<Vec<u8>>> {
    p.validate(false)?;
    let started = Instant::now();
    let (infos, stdout, stdout_dropped, timed_out) = emulate(runner, p, p.stages.len()).await?;
    Ok(combine(
        infos,
        stdout,
        stdout_dropped,
        timed_out,
        false,
        started.elapsed(),
    ))
}

/// Starts a pipeline through a runner that only knows single commands: every stage but the last
/// runs to completion through `output_bytes`, the last is started with the collected bytes as
/// stdin. The default [`ProcessRunner::start_pipeline`], for doubles.
pub(crate) async fn start_emulated<R: ProcessRunner + ?Sized>(
    runner: &R,
    p: &Pipeline,
) -> Result<RunningPipeline> {
    p.validate(false)?;
    let started = Instant::now();
    let deadline = p.timeout.map(crate::time::deadline_in);
    let n = p.stages.len();
    let (infos, input, _, _) = emulate(runner, p, n - 1).await?;
    let mut last = p.last().clone();
    if n > 1 {
        last = last.stdin(Stdin::from_bytes(input));
    }
    let rp = runner.start(&last).await?;
    let mut stages: Vec<Slot> = infos.into_iter().map(Slot::Done).collect();
    stages.push(Slot::Live(Box::new(rp)));
    Ok(RunningPipeline {
        stages,
        meta: stage_meta(p),
        group: None,
        deadline,
        started,
        timed_out: false,
        cancelled_by: None,
        cut_short: vec![false; n],
        over: false,
        cancel_watch: None,
    })
}

/// Runs the first `count` stages in order through `runner.output_bytes`. Returns their infos
/// (stages cut off by the chain timeout are reported killed), the last stdout, its dropped
/// count, and whether the chain timed out.
async fn emulate<R: ProcessRunner + ?Sized>(
    runner: &R,
    p: &Pipeline,
    count: usize,
) -> Result<(Vec<StageInfo>, Vec<u8>, u64, bool)> {
    let deadline = p.timeout.map(crate::time::deadline_in);
    let mut infos = Vec::with_capacity(count);
    let mut input: Option<Vec<u8>> = None;
    let mut dropped = 0;
    let mut timed_out = false;
    for cmd in p.stages.iter().take(count) {
        let stage = match input.take() {
            Some(bytes) => cmd.clone().stdin(Stdin::from_bytes(bytes)),
            None => cmd.clone(),
        };
        let r = if timed_out {
            None
        } else {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, runner.output_bytes(&stage))
                    .await
                    .ok(),
                None => Some(runner.output_bytes(&stage).await),
            }
        };
        match r {
            Some(r) => {
                let r = r?;
                infos.push(StageInfo {
                    outcome: StageOutcome {
                        program: cmd.program_name(),
                        code: if r.timed_out { None } else { r.code },
                        signal: r.signal,
                        stderr: r.stderr.clone(),
                        unchecked: cmd.unchecked,
                    },
                    args: cmd.args_lossy(),
                    timed_out: r.timed_out,
                    cut_short: false,
                    stderr_dropped: r.stderr_dropped,
                });
                dropped = r.stdout_dropped;
                input = Some(r.stdout);
            }
            None => {
                timed_out = true;
                infos.push(StageInfo {
                    outcome: StageOutcome {
                        program: cmd.program_name(),
                        code: None,
                        signal: None,
                        stderr: String::new(),
                        unchecked: cmd.unchecked,
                    },
                    args: cmd.args_lossy(),
                    timed_out: false,
                    cut_short: false,
                    stderr_dropped: 0,
                });
                input = Some(Vec::new());
            }
        }
    }
    Ok((infos, input.unwrap_or_default(), dropped, timed_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(code: Option<i32>, unchecked: bool, cut_short: bool) -> StageInfo {
        StageInfo {
            outcome: StageOutcome {
                program: String::new(),
                code,
                signal: None,
                stderr: String::new(),
                unchecked,
            },
            args: Vec::new(),
            timed_out: false,
            cut_short,
            stderr_dropped: 0,
        }
    }

    #[test]
    fn attribution_rules() {
        let ok = info(Some(0), false, false);
        // All clean: the last stage.
        assert_eq!(attribute(&[ok.clone(), ok.clone()]), (1, false));
        // The first checked failure.
        let failed = [
            ok.clone(),
            info(Some(2), false, false),
            info(Some(3), false, false),
        ];
        assert_eq!(attribute(&failed), (1, true));
        // Unchecked failures are skipped.
        let skip = [info(Some(2), true, false), ok.clone()];
        assert_eq!(attribute(&skip), (1, false));
        let wins = [
            info(None, true, false),
            info(Some(4), false, false),
            ok.clone(),
        ];
        assert_eq!(attribute(&wins), (1, true));
        // A stage the end rule killed yields to a stage that failed on its own...
        let cut = [info(None, false, true), info(Some(5), false, false)];
        assert_eq!(attribute(&cut), (1, true));
        // ...and is blamed when nothing else failed.
        let only_cut = [info(None, false, true), ok];
        assert_eq!(attribute(&only_cut), (0, true));
    }
}
