//! Retry policies: attempts, exponential backoff with jitter, and a classifier.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::result::ProcessResult;
use crate::runner::ProcessRunner;
use crate::Command;

/// What one attempt produced, as seen by a retry classifier
/// ([`RetryPolicy::retry_if`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum AttemptOutcome<'a> {
    /// The run finished (possibly with a non-zero exit or a timeout): the attempt's full
    /// result, stdout as raw bytes.
    Finished(&'a ProcessResult<Vec<u8>>),
    /// The run failed to produce a result (a spawn error, an I/O error, ...).
    Failed(&'a Error),
}

impl AttemptOutcome<'_> {
    /// The default rule, for a classifier that extends it: a timed-out run,
    /// [`Error::Spawn`] (the OS refused to start the program: too many open files, out of
    /// memory, a busy executable, ...), [`Error::Io`] and [`Error::Timeout`] are retryable. A
    /// finished run with any exit code is not, and neither is [`Error::NotFound`] (a missing
    /// program does not appear by waiting) nor any invalid-input error.
    ///
    /// ```
    /// use processkit::{AttemptOutcome, RetryPolicy};
    ///
    /// // Also retry exit code 75 (EX_TEMPFAIL).
    /// let policy = RetryPolicy::new(4).retry_if(|o| {
    ///     o.retryable_by_default()
    ///         || matches!(o, AttemptOutcome::Finished(r) if r.code() == Some(75))
    /// });
    /// # let _ = policy;
    /// ```
    pub fn retryable_by_default(&self) -> bool {
        match self {
            AttemptOutcome::Finished(r) => r.timed_out(),
            AttemptOutcome::Failed(e) => {
                matches!(
                    e,
                    Error::Spawn { .. } | Error::Io { .. } | Error::Timeout { .. }
                )
            }
        }
    }
}

type Classifier = Arc<dyn Fn(&AttemptOutcome<'_>) -> bool + Send + Sync>;

/// How a command is re-run when an attempt fails ([`Command::retry`]).
///
/// * **Attempts**: at most [`attempts`](Self::attempts) runs in total; the verb reports the
///   last one. [`ProcessResult::attempts`] and [`Error::attempts`] say how many ran.
/// * **Backoff**: after attempt `n` (1-based) the loop waits
///   `min(base * multiplier^(n-1), max_backoff)` ([`delay_for`](Self::delay_for)), scaled by a
///   random factor in `[0.5, 1.0]` when jitter is on (the default), so a fleet of retrying
///   callers does not stampede.
/// * **Classifier**: by default spawn errors and timeouts are retried and a finished run is
///   not, whatever its exit code ([`AttemptOutcome::retryable_by_default`]);
///   [`retry_if`](Self::retry_if) replaces the rule. A successful attempt,
///   [`Error::Cancelled`] and invalid input are never retried.
/// * **Isolation**: each attempt is a complete run of its own — through the `Command` verbs, a
///   fresh private container; a timeout applies to each attempt separately.
/// * **Cancellation** (`cancellation` feature): the token ends the loop at once, mid-attempt
///   or mid-backoff, with [`Error::Cancelled`].
///
/// Retries apply to the run-to-completion verbs (`run`, `output_string`, `output_bytes`,
/// `exit_code`, `probe`); `start` and `first_line` run once.
///
/// ```no_run
/// use processkit::{AttemptOutcome, Command, RetryPolicy};
/// use std::time::Duration;
///
/// # #[tokio::main]
/// # async fn main() -> processkit::Result<()> {
/// let policy = RetryPolicy::new(5)
///     .backoff(Duration::from_millis(200), 2.0)
///     .max_backoff(Duration::from_secs(5))
///     // A flaky network tool: retry its non-zero exits too.
///     .retry_if(|o| match o {
///         AttemptOutcome::Finished(r) => !r.success(),
///         _ => o.retryable_by_default(),
///     });
/// let out = Command::new("curl")
///     .args(["-fsS", "https://example.com/health"])
///     .timeout(Duration::from_secs(10))
///     .retry(policy)
///     .output_string()
///     .await?;
/// println!("{} after {} attempt(s)", out.code().unwrap_or(-1), out.attempts());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    pub(crate) attempts: u32,
    pub(crate) base: Duration,
    pub(crate) multiplier: f64,
    pub(crate) max_backoff: Duration,
    pub(crate) jitter: bool,
    pub(crate) classifier: Option<Classifier>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("attempts", &self.attempts)
            .field("base", &self.base)
            .field("multiplier", &self.multiplier)
            .field("max_backoff", &self.max_backoff)
            .field("jitter", &self.jitter)
            .field("classifier", &self.classifier.is_some())
            .finish()
    }
}

impl RetryPolicy {
    /// Up to `attempts` runs in total (0 is taken as 1), 100 ms base backoff doubling up to
    /// 10 s, jitter on, the default classifier.
    pub fn new(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts: attempts.max(1),
            base: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(10),
            jitter: true,
            classifier: None,
        }
    }

    /// Sets the backoff: the first wait and its growth factor per attempt (a factor below 1 or
    /// not finite is taken as 1: a constant backoff).
    pub fn backoff(mut self, base: Duration, multiplier: f64) -> RetryPolicy {
        self.base = base;
        self.multiplier = growth_factor(multiplier);
        self
    }

    /// Caps a single wait (default 10 s).
    pub fn max_backoff(mut self, max: Duration) -> RetryPolicy {
        self.max_backoff = max;
        self
    }

    /// Turns jitter on or off (on by default).
    pub fn jitter(mut self, on: bool) -> RetryPolicy {
        self.jitter = on;
        self
    }

    /// Decides which failed attempts are retried, replacing the default rule (extend it with
    /// [`AttemptOutcome::retryable_by_default`]). It is called after every unsuccessful attempt
    /// but the last, on the runner's task; keep it quick. A successful attempt (exit code 0,
    /// not timed out) always ends the loop, whatever the classifier would say: retry replays a
    /// run *until it succeeds*, so its side effects happen once.
    pub fn retry_if(
        mut self,
        f: impl Fn(&AttemptOutcome<'_>) -> bool + Send + Sync + 'static,
    ) -> RetryPolicy {
        self.classifier = Some(Arc::new(f));
        self
    }

    /// The configured number of attempts.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The wait after attempt `n` (1-based), before jitter.
    pub fn delay_for(&self, n: u32) -> Duration {
        backoff_delay(self.base, self.multiplier, self.max_backoff, n)
    }

    pub(crate) fn should_retry(&self, o: &AttemptOutcome<'_>) -> bool {
        match &self.classifier {
            Some(c) => c(o),
            None => o.retryable_by_default(),
        }
    }
}

/// A backoff multiplier as used: below 1 or not finite is taken as 1 (a constant backoff).
pub(crate) fn growth_factor(multiplier: f64) -> f64 {
    if multiplier.is_finite() && multiplier >= 1.0 {
        multiplier
    } else {
        1.0
    }
}

/// `min(base * multiplier^(n-1), max)`.
pub(crate) fn backoff_delay(base: Duration, multiplier: f64, max: Duration, n: u32) -> Duration {
    let factor = multiplier.powi(n.saturating_sub(1).min(1000) as i32);
    let secs = base.as_secs_f64() * factor;
    if !secs.is_finite() || secs >= max.as_secs_f64() {
        max
    } else {
        Duration::from_secs_f64(secs)
    }
}

/// A factor in `[0.5, 1.0]` from a small per-process PRNG (no dependency; not cryptographic).
pub(crate) fn jitter_factor() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    0.5 + (x >> 11) as f64 / (1u64 << 53) as f64 * 0.5
}

/// A short description of a failed attempt for the retry event (never argv or env).
fn attempt_outcome(r: &Result<ProcessResult<Vec<u8>>>) -> String {
    match r {
        Ok(res) if res.timed_out() => "timed out".to_owned(),
        Ok(res) => match res.code() {
            Some(c) => format!("exited {c}"),
            None => "killed".to_owned(),
        },
        Err(e) => match e {
            Error::NotFound { .. } => "not found".to_owned(),
            Error::Spawn { .. } => "spawn failed".to_owned(),
            Error::Timeout { .. } => "timed out".to_owned(),
            Error::Io { .. } => "i/o error".to_owned(),
            _ => "error".to_owned(),
        },
    }
}

/// Runs `cmd` through `runner`, honouring its retry policy.
pub(crate) async fn output_with_retry<R: ProcessRunner + ?Sized>(
    runner: &R,
    cmd: &Command,
) -> Result<ProcessResult<Vec<u8>>> {
    // A pre-cancelled token spawns nothing, whatever the runner (doubles included).
    crate::cancel::precheck(cmd)?;
    let Some(policy) = &cmd.retry else {
        return runner.output_bytes(cmd).await;
    };
    let mut n = 1;
    loop {
        let r = runner.output_bytes(cmd).await;
        let retry = n < policy.attempts
            && match &r {
                // A success ends the loop: the classifier only judges failures.
                Ok(res) if res.success() => false,
                Ok(res) => policy.should_retry(&AttemptOutcome::Finished(res)),
                Err(Error::Cancelled { .. }) | Err(Error::InvalidInput { .. }) => false,
                Err(e) => policy.should_retry(&AttemptOutcome::Failed(e)),
            };
        if !retry {
            return r.map(|mut res| {
                res.attempts = n;
                res
            });
        }
        let mut d = policy.delay_for(n);
        if policy.jitter {
            d = d.mul_f64(jitter_factor());
        }
        crate::trace::retry(&cmd.program_name(), n, d, &attempt_outcome(&r));
        // Cancelling during the backoff ends the retry loop at once.
        crate::cancel::sleep(cmd, d).await?;
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = Duration::from_millis(100);
        let m = Duration::from_secs(1);
        assert_eq!(backoff_delay(b, 2.0, m, 1), Duration::from_millis(100));
        assert_eq!(backoff_delay(b, 2.0, m, 2), Duration::from_millis(200));
        assert_eq!(backoff_delay(b, 2.0, m, 4), Duration::from_millis(800));
        assert_eq!(backoff_delay(b, 2.0, m, 5), m);
        assert_eq!(backoff_delay(b, 2.0, m, 500), m);
    }

    #[test]
    fn jitter_in_range() {
        for _ in 0..1000 {
            let j = jitter_factor();
            assert!((0.5..=1.0).contains(&j));
        }
    }
}
