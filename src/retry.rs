//! Retry policies: attempts, exponential backoff with jitter, and a classifier.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::result::ProcessResult;
use crate::runner::ProcessRunner;
use crate::Command;

/// What one attempt produced, as seen by a retry classifier.
#[derive(Debug)]
#[non_exhaustive]
pub enum AttemptOutcome<'a> {
    /// The run finished (possibly with a non-zero exit or a timeout).
    Finished(&'a ProcessResult<Vec<u8>>),
    /// The run failed to produce a result (spawn error, ...).
    Failed(&'a Error),
}

type Classifier = Arc<dyn Fn(&AttemptOutcome<'_>) -> bool + Send + Sync>;

/// How a command is re-run when an attempt fails.
///
/// Attempt `n` (1-based) waits `min(base * multiplier^(n-1), max_backoff)` before attempt
/// `n + 1`, scaled by a random factor in `[0.5, 1.0]` when jitter is on (the default). By default
/// spawn errors and timeouts are retried; a non-zero exit is not, unless the classifier says so.
/// Each attempt runs in a fresh container.
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
    /// Up to `attempts` runs in total (at least 1), 100 ms base backoff doubling up to 10 s,
    /// jitter on.
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

    /// Sets the backoff: the first wait and its growth factor per attempt.
    pub fn backoff(mut self, base: Duration, multiplier: f64) -> RetryPolicy {
        self.base = base;
        self.multiplier = if multiplier.is_finite() && multiplier >= 1.0 { multiplier } else { 1.0 };
        self
    }

    /// Caps a single wait.
    pub fn max_backoff(mut self, max: Duration) -> RetryPolicy {
        self.max_backoff = max;
        self
    }

    /// Turns jitter on or off (on by default).
    pub fn jitter(mut self, on: bool) -> RetryPolicy {
        self.jitter = on;
        self
    }

    /// Decides which outcomes are retried (replacing the default rule).
    pub fn retry_if(mut self, f: impl Fn(&AttemptOutcome<'_>) -> bool + Send + Sync + 'static) -> RetryPolicy {
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
        if let Some(c) = &self.classifier {
            return c(o);
        }
        match o {
            AttemptOutcome::Finished(r) => r.timed_out(),
            AttemptOutcome::Failed(e) => matches!(e, Error::Spawn { .. } | Error::Io { .. } | Error::Timeout { .. }),
        }
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
    let Some(policy) = &cmd.retry else {
        return runner.output_bytes(cmd).await;
    };
    let mut n = 1;
    loop {
        let r = runner.output_bytes(cmd).await;
        let retry = n < policy.attempts
            && match &r {
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
        tokio::time::sleep(d).await;
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
