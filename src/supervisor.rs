//! Supervision: keep a child alive with a restart policy, bounded restarts, exponential backoff
//! with jitter, a restart-intensity window, a failure-storm guard, and a typed stop reason.
//!
//! The supervisor is platform-agnostic: every incarnation runs through the
//! [`ProcessRunner`] seam (by default [`JobRunner`], a fresh private kill-on-drop group per
//! incarnation), so a test double drives the same logic without spawning anything. The backoff
//! and jitter maths are shared with [`RetryPolicy`](crate::RetryPolicy) (`retry.rs`).

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::result::ProcessResult;
use crate::retry::{backoff_delay, jitter_factor, output_with_retry};
use crate::runner::{JobRunner, ProcessRunner};
use crate::Command;

/// When a [`Supervisor`] restarts its child after an incarnation exits.
///
/// "Clean" means the exit code is one of the success codes (`0`, plus any added with
/// [`Supervisor::success_codes`]) and the run did not time out; anything else — a non-zero
/// code, a signal, a timeout — is a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RestartPolicy {
    /// Restart after every exit, clean or not (OTP `permanent`, systemd `Restart=always`).
    Always,
    /// Restart only after a crash; a clean exit ends supervision (OTP `transient`, systemd
    /// `Restart=on-failure`). The default.
    #[default]
    OnCrash,
    /// Never restart: run the child once (OTP `temporary`, systemd `Restart=no`).
    Never,
}

/// Why a [`Supervisor`] stopped, in [`SupervisionOutcome::stopped`].
///
/// Two reasons compare equal when they are the same variant (for
/// [`SpawnFailed`](Self::SpawnFailed): when the errors display the same text).
#[derive(Debug)]
#[non_exhaustive]
pub enum StopReason {
    /// The restart policy does not restart after this exit: [`RestartPolicy::Never`], a clean
    /// exit under [`RestartPolicy::OnCrash`], or an exit code listed in
    /// [`Supervisor::no_restart_codes`].
    Policy,
    /// The child exited and another restart would exceed [`Supervisor::max_restarts`].
    MaxRestarts,
    /// The [`Supervisor::stop_when`] predicate returned `true` for the last result.
    StopWhen,
    /// The cancellation token fired (`cancellation` feature): the current incarnation, if any,
    /// was killed and supervision ended for good.
    Cancelled,
    /// The runner returned an error instead of a result (the program could not be spawned, an
    /// invalid command, a closed group, ...). Supervision does not guess whether it is
    /// transient; give the command a [`RetryPolicy`](crate::RetryPolicy) to ride out transient
    /// spawn errors.
    SpawnFailed(Error),
    /// Another restart would exceed the restart-intensity window
    /// ([`Supervisor::intensity`]): too many restarts in too short a time.
    Intensity,
}

impl PartialEq for StopReason {
    fn eq(&self, other: &StopReason) -> bool {
        use StopReason::*;
        match (self, other) {
            (SpawnFailed(a), SpawnFailed(b)) => a.to_string() == b.to_string(),
            (Policy, Policy)
            | (MaxRestarts, MaxRestarts)
            | (StopWhen, StopWhen)
            | (Cancelled, Cancelled)
            | (Intensity, Intensity) => true,
            _ => false,
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Policy => {
                f.write_str("the restart policy does not restart after this exit")
            }
            StopReason::MaxRestarts => f.write_str("the maximum number of restarts was reached"),
            StopReason::StopWhen => f.write_str("the stop condition matched"),
            StopReason::Cancelled => f.write_str("supervision was cancelled"),
            StopReason::SpawnFailed(e) => write!(f, "the child could not be run: {e}"),
            StopReason::Intensity => f.write_str("too many restarts within the intensity window"),
        }
    }
}

/// What [`Supervisor::run`] reports when supervision ends.
#[derive(Debug)]
#[non_exhaustive]
pub struct SupervisionOutcome {
    /// The result of the last incarnation that ran to an exit (stdout decoded lossily as
    /// UTF-8). `None` when none did: the first spawn failed, or the first incarnation was
    /// cancelled while running. An incarnation killed by cancellation has no result, so after
    /// a cancellation this is the previous incarnation's result.
    pub result: Option<ProcessResult<String>>,
    /// How many restarts happened (incarnations started minus one; 0 when the child never
    /// restarted).
    pub restarts: u32,
    /// Why supervision stopped.
    pub stopped: StopReason,
}

type StopWhen = Arc<dyn Fn(&ProcessResult<String>) -> bool + Send + Sync>;

/// Keeps a child alive: restarts its command per a [`RestartPolicy`] whenever it exits.
///
/// ```no_run
/// use processkit::{Command, RestartPolicy, Supervisor};
/// use std::time::Duration;
///
/// # #[tokio::main]
/// # async fn main() -> processkit::Result<()> {
/// let outcome = Supervisor::new(Command::new("my-server").args(["--port", "8080"]))
///     .restart(RestartPolicy::OnCrash)
///     .max_restarts(5)
///     .backoff(Duration::from_millis(200), 2.0)
///     .storm_pause(Duration::from_secs(15))
///     .stop_when(|res| res.code() == Some(0))
///     .run()
///     .await?;
/// println!("ended after {} restarts: {:?}", outcome.restarts, outcome.stopped);
/// # Ok(())
/// # }
/// ```
///
/// After incarnation `k` exits, the supervisor decides, in this order: stop with
/// [`StopReason::StopWhen`] if the predicate matches; stop with [`StopReason::Policy`] for a
/// no-restart exit code or when the policy doesn't restart; stop with
/// [`StopReason::MaxRestarts`] / [`StopReason::Intensity`] when a restart would exceed those
/// bounds; stop with [`StopReason::Cancelled`] when the token has fired. Otherwise it waits
/// (backoff, or one storm pause) and restarts.
///
/// Defaults: [`RestartPolicy::OnCrash`], unlimited restarts, backoff 100 ms doubling up to 30 s
/// with jitter, no backoff reset, no intensity window, storm guard off (threshold 5, decay
/// half-life 60 s once enabled with [`storm_pause`](Self::storm_pause)).
///
/// Each incarnation's stdout and stderr are captured per the command's buffer policy (for a
/// chatty server, bound it with [`Command::buffer_policy`] or send the output elsewhere with
/// [`Command::stdout`]); the command's own [`RetryPolicy`](crate::RetryPolicy), if any, applies
/// to each incarnation.
#[derive(Clone)]
pub struct Supervisor<R = JobRunner> {
    cmd: Command,
    runner: R,
    policy: RestartPolicy,
    max_restarts: Option<u32>,
    base: Duration,
    multiplier: f64,
    max_backoff: Duration,
    jitter: bool,
    min_uptime: Option<Duration>,
    success_codes: Vec<i32>,
    no_restart_codes: Vec<i32>,
    stop_when: Option<StopWhen>,
    intensity: Option<(u32, Duration)>,
    failure_threshold: f64,
    failure_decay: Duration,
    storm_pause: Option<Duration>,
    #[cfg(feature = "cancellation")]
    cancel: Option<tokio_util::sync::CancellationToken>,
}

impl<R> fmt::Debug for Supervisor<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("cmd", &self.cmd)
            .field("policy", &self.policy)
            .field("max_restarts", &self.max_restarts)
            .field("base", &self.base)
            .field("multiplier", &self.multiplier)
            .field("max_backoff", &self.max_backoff)
            .field("jitter", &self.jitter)
            .field("min_uptime", &self.min_uptime)
            .field("success_codes", &self.success_codes)
            .field("no_restart_codes", &self.no_restart_codes)
            .field("stop_when", &self.stop_when.is_some())
            .field("intensity", &self.intensity)
            .field("failure_threshold", &self.failure_threshold)
            .field("failure_decay", &self.failure_decay)
            .field("storm_pause", &self.storm_pause)
            .finish_non_exhaustive()
    }
}

impl Supervisor<JobRunner> {
    /// Supervises `cmd` with the defaults (see the type docs); every incarnation runs in a
    /// fresh private kill-on-drop group.
    pub fn new(cmd: Command) -> Supervisor<JobRunner> {
        Supervisor {
            cmd,
            runner: JobRunner,
            policy: RestartPolicy::OnCrash,
            max_restarts: None,
            base: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(30),
            jitter: true,
            min_uptime: None,
            success_codes: vec![0],
            no_restart_codes: Vec::new(),
            stop_when: None,
            intensity: None,
            failure_threshold: 5.0,
            failure_decay: Duration::from_secs(60),
            storm_pause: None,
            #[cfg(feature = "cancellation")]
            cancel: None,
        }
    }
}

impl<R: ProcessRunner> Supervisor<R> {
    /// Runs every incarnation through `runner`: `&group` keeps them all in one shared
    /// kill-on-drop [`ProcessGroup`](crate::ProcessGroup); a test double runs none at all.
    ///
    /// In a shared group, dropping the [`run`](Self::run) future kills the current incarnation
    /// itself; what it spawned stays in the group until the group is killed or dropped.
    pub fn with_runner<R2: ProcessRunner>(self, runner: R2) -> Supervisor<R2> {
        Supervisor {
            cmd: self.cmd,
            runner,
            policy: self.policy,
            max_restarts: self.max_restarts,
            base: self.base,
            multiplier: self.multiplier,
            max_backoff: self.max_backoff,
            jitter: self.jitter,
            min_uptime: self.min_uptime,
            success_codes: self.success_codes,
            no_restart_codes: self.no_restart_codes,
            stop_when: self.stop_when,
            intensity: self.intensity,
            failure_threshold: self.failure_threshold,
            failure_decay: self.failure_decay,
            storm_pause: self.storm_pause,
            #[cfg(feature = "cancellation")]
            cancel: self.cancel,
        }
    }

    /// Sets when the child is restarted (default [`RestartPolicy::OnCrash`]).
    pub fn restart(mut self, policy: RestartPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Restarts at most `n` times (so at most `n + 1` incarnations); then stops with
    /// [`StopReason::MaxRestarts`]. Unlimited by default.
    pub fn max_restarts(mut self, n: u32) -> Self {
        self.max_restarts = Some(n);
        self
    }

    /// Sets the backoff: the wait before the first restart and its growth factor per restart.
    /// A multiplier below 1 (or not finite) is taken as 1. Default: 100 ms, 2.0.
    pub fn backoff(mut self, base: Duration, multiplier: f64) -> Self {
        self.base = base;
        self.multiplier = crate::retry::growth_factor(multiplier);
        self
    }

    /// Caps a single backoff wait (default 30 s).
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// Turns jitter on or off (on by default): each backoff wait is scaled by a random factor in
    /// `[0.5, 1.0]`, so a fleet restarted together doesn't restart in lockstep.
    pub fn jitter(mut self, on: bool) -> Self {
        self.jitter = on;
        self
    }

    /// Resets the backoff when an incarnation stayed up at least `uptime`: the next wait is the
    /// base again (a child that ran fine for an hour and then crashed is not crash-looping).
    /// Off by default: the backoff only grows.
    pub fn min_uptime(mut self, uptime: Duration) -> Self {
        self.min_uptime = Some(uptime);
        self
    }

    /// Adds exit codes that count as a clean exit, besides 0 (systemd `SuccessExitStatus`).
    /// They matter for [`RestartPolicy::OnCrash`] and for the storm guard's failure score.
    pub fn success_codes(mut self, codes: impl IntoIterator<Item = i32>) -> Self {
        self.success_codes.extend(codes);
        self
    }

    /// Exit codes after which the child is never restarted, whatever the policy (systemd
    /// `RestartPreventExitStatus`), e.g. a "bad configuration" code. Supervision stops with
    /// [`StopReason::Policy`].
    pub fn no_restart_codes(mut self, codes: impl IntoIterator<Item = i32>) -> Self {
        self.no_restart_codes.extend(codes);
        self
    }

    /// Ends supervision with [`StopReason::StopWhen`] when `pred` returns `true` for an
    /// incarnation's result; checked first, before the policy.
    pub fn stop_when(
        mut self,
        pred: impl Fn(&ProcessResult<String>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.stop_when = Some(Arc::new(pred));
        self
    }

    /// The restart-intensity window (OTP's `intensity` / `period`): at most `max` restarts
    /// within any `within` span; the restart that would exceed it stops supervision with
    /// [`StopReason::Intensity`]. Off by default. A zero `within` is rejected by
    /// [`run`](Self::run).
    pub fn intensity(mut self, max: u32, within: Duration) -> Self {
        self.intensity = Some((max, within));
        self
    }

    /// The storm guard's threshold: a failure score above it triggers a storm pause (default
    /// 5.0, so the sixth crash in quick succession). Must be finite and positive.
    pub fn failure_threshold(mut self, threshold: f64) -> Self {
        self.failure_threshold = threshold;
        self
    }

    /// The storm guard's half-life: the failure score halves every `half_life` (default 60 s).
    /// Must not be zero.
    pub fn failure_decay(mut self, half_life: Duration) -> Self {
        self.failure_decay = half_life;
        self
    }

    /// Enables the failure-storm guard (off by default): every crash adds 1 to a score that
    /// halves every [`failure_decay`](Self::failure_decay); when it exceeds
    /// [`failure_threshold`](Self::failure_threshold), the supervisor waits `pause` (instead of
    /// the backoff) before the next restart and resets the score.
    pub fn storm_pause(mut self, pause: Duration) -> Self {
        self.storm_pause = Some(pause);
        self
    }

    /// Stops supervision for good when `token` is cancelled: the current incarnation is killed
    /// (or the backoff wait cut short) and [`run`](Self::run) returns with
    /// [`StopReason::Cancelled`]. The command's own [`Command::cancel_on`] token does the same.
    #[cfg(feature = "cancellation")]
    pub fn cancel_on(mut self, token: tokio_util::sync::CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// The supervised command.
    pub fn command(&self) -> &Command {
        &self.cmd
    }

    /// Supervises until a stop condition holds and reports how it ended.
    ///
    /// Every incarnation runs contained (through the runner, see
    /// [`with_runner`](Self::with_runner)). Waits use tokio's clock, so a test with a paused
    /// clock (`tokio::time::pause`) sees exact virtual backoff times.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid configuration, before anything runs: a zero
    /// intensity window, or (with the storm guard on) a zero `failure_decay` or a threshold that
    /// is not finite and positive. Everything that happens to the child — including a failure to
    /// spawn it — is reported in the [`SupervisionOutcome`], not as an `Err`.
    ///
    /// # Cancel safety
    /// Dropping the future kills the current incarnation (with the default runner, its whole
    /// tree) and ends supervision; nothing is left running.
    pub async fn run(&self) -> Result<SupervisionOutcome> {
        self.validate()?;
        let mut restarts = 0u32;
        let mut step = 0u32;
        let mut last: Option<ProcessResult<String>> = None;
        let mut window: VecDeque<Instant> = VecDeque::new();
        let mut storm = StormScore::default();
        let stop = |result, restarts, stopped| {
            Ok(SupervisionOutcome {
                result,
                restarts,
                stopped,
            })
        };
        loop {
            let started = Instant::now();
            let res = match self.run_once().await {
                Incarnation::Finished(r) => r,
                Incarnation::Cancelled => return stop(last, restarts, StopReason::Cancelled),
                Incarnation::Failed(e) => return stop(last, restarts, StopReason::SpawnFailed(e)),
            };
            let now = Instant::now();
            let uptime = now - started;
            let clean =
                res.code().is_some_and(|c| self.success_codes.contains(&c)) && !res.timed_out();

            let no_restart = res
                .code()
                .is_some_and(|c| self.no_restart_codes.contains(&c));
            let policy_stops = match self.policy {
                RestartPolicy::Always => false,
                RestartPolicy::OnCrash => clean,
                RestartPolicy::Never => true,
            };
            let verdict = if self.stop_when.as_ref().is_some_and(|p| p(&res)) {
                Some(StopReason::StopWhen)
            } else if no_restart || policy_stops {
                Some(StopReason::Policy)
            } else if self.max_restarts.is_some_and(|m| restarts >= m) {
                Some(StopReason::MaxRestarts)
            } else if self.intensity_exceeded(&mut window, now) {
                Some(StopReason::Intensity)
            } else if self.is_cancelled() {
                Some(StopReason::Cancelled)
            } else {
                None
            };
            #[cfg(feature = "tracing")]
            let code = res.code();
            last = Some(res);
            if let Some(reason) = verdict {
                return stop(last, restarts, reason);
            }

            // The wait before the restart: backoff (reset after a long enough uptime), or one
            // collective storm pause.
            step = if self.min_uptime.is_some_and(|m| uptime >= m) {
                1
            } else {
                step.saturating_add(1)
            };
            let mut delay = backoff_delay(self.base, self.multiplier, self.max_backoff, step);
            if self.jitter {
                delay = delay.mul_f64(jitter_factor());
            }
            if !clean {
                storm.add_failure(now, self.failure_decay);
            }
            if let Some(pause) = self.storm_pause {
                if storm.score > self.failure_threshold {
                    storm.score = 0.0;
                    delay = pause;
                    crate::trace::storm(
                        &self.cmd.program_name(),
                        restarts,
                        pause,
                        "failure storm: pausing before the next restart",
                    );
                }
            }
            #[cfg(feature = "tracing")]
            tracing::info!(
                program = %self.cmd.program_name(),
                restart = restarts + 1,
                code = ?code,
                delay = ?delay,
                "processkit: restarting supervised child"
            );
            tokio::select! {
                biased;
                _ = self.cancelled() => return stop(last, restarts, StopReason::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
            restarts += 1;
        }
    }

    fn validate(&self) -> Result<()> {
        let program = self.cmd.program_name();
        if let Some((_, within)) = self.intensity {
            if within.is_zero() {
                return Err(Error::invalid(
                    &program,
                    "supervisor intensity window",
                    "must not be zero",
                ));
            }
        }
        if self.storm_pause.is_some() {
            if self.failure_decay.is_zero() {
                return Err(Error::invalid(
                    &program,
                    "supervisor failure_decay",
                    "must not be zero",
                ));
            }
            if !(self.failure_threshold.is_finite() && self.failure_threshold > 0.0) {
                return Err(Error::invalid(
                    &program,
                    "supervisor failure_threshold",
                    format!(
                        "must be finite and positive, got {}",
                        self.failure_threshold
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Runs one incarnation to its exit, racing the cancellation tokens.
    async fn run_once(&self) -> Incarnation {
        if self.is_cancelled() {
            return Incarnation::Cancelled;
        }
        tokio::select! {
            biased;
            _ = self.cancelled() => Incarnation::Cancelled,
            r = output_with_retry(&self.runner, &self.cmd) => match r {
                Ok(r) => Incarnation::Finished(r.map_stdout(|b| match String::from_utf8(b) {
                    Ok(s) => s,
                    Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
                })),
                Err(Error::Cancelled { .. }) => Incarnation::Cancelled,
                Err(e) => Incarnation::Failed(e),
            },
        }
    }

    /// Records a restart at `now` unless it would exceed the intensity window.
    fn intensity_exceeded(&self, window: &mut VecDeque<Instant>, now: Instant) -> bool {
        let Some((max, within)) = self.intensity else {
            return false;
        };
        while window
            .front()
            .is_some_and(|&t| now.duration_since(t) >= within)
        {
            window.pop_front();
        }
        if window.len() >= max as usize {
            return true;
        }
        window.push_back(now);
        false
    }

    #[cfg(feature = "cancellation")]
    fn is_cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|t| t.is_cancelled())
            || self.cmd.cancel_token().is_some_and(|t| t.is_cancelled())
    }

    #[cfg(not(feature = "cancellation"))]
    fn is_cancelled(&self) -> bool {
        false
    }

    /// Completes when either token (the supervisor's or the command's) is cancelled.
    #[cfg(feature = "cancellation")]
    async fn cancelled(&self) {
        let own = self.cancel.as_ref();
        let cmd = self.cmd.cancel_token();
        tokio::select! {
            _ = async { match own { Some(t) => t.cancelled().await, None => std::future::pending().await } } => {}
            _ = async { match cmd { Some(t) => t.cancelled().await, None => std::future::pending().await } } => {}
        }
    }

    #[cfg(not(feature = "cancellation"))]
    async fn cancelled(&self) {
        std::future::pending::<()>().await
    }
}

enum Incarnation {
    Finished(ProcessResult<String>),
    Cancelled,
    Failed(Error),
}

/// The storm guard's exponentially decaying failure score.
#[derive(Default)]
struct StormScore {
    score: f64,
    at: Option<Instant>,
}

impl StormScore {
    /// Decays the score to `now` (halving every `half_life`), then adds one failure.
    fn add_failure(&mut self, now: Instant, half_life: Duration) {
        if let Some(at) = self.at {
            let halves = now.duration_since(at).as_secs_f64() / half_life.as_secs_f64();
            self.score *= 0.5f64.powf(halves);
        }
        self.score += 1.0;
        self.at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_score_halves_per_half_life() {
        let t0 = Instant::now();
        let hl = Duration::from_secs(10);
        let mut s = StormScore::default();
        s.add_failure(t0, hl);
        s.add_failure(t0, hl);
        assert_eq!(s.score, 2.0);
        s.add_failure(t0 + hl, hl);
        assert!((s.score - 2.0).abs() < 1e-9, "{}", s.score);
        s.add_failure(t0 + hl * 3, hl);
        assert!((s.score - 1.5).abs() < 1e-9, "{}", s.score);
    }

    #[test]
    fn stop_reason_eq_and_display() {
        assert_eq!(StopReason::MaxRestarts, StopReason::MaxRestarts);
        assert_ne!(StopReason::Policy, StopReason::StopWhen);
        let nf = || {
            StopReason::SpawnFailed(Error::NotFound {
                program: "x".into(),
            })
        };
        assert_eq!(nf(), nf());
        assert!(nf().to_string().contains("could not be run"));
    }
}
