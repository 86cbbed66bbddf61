//! Group statistics (`stats` feature): a snapshot, and a sampled series.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;

use super::{GroupInner, ProcessGroup};
use crate::error::{Error, Result};
use crate::GroupStats;

impl GroupInner {
    /// A snapshot with the group's own memory (total, peak) folded in.
    pub(crate) fn snapshot(&self) -> std::io::Result<GroupStats> {
        let mut s = self.container.stats()?;
        // The members are read again (cheap) so the tally sees pids, not just a count.
        let members = self.container.members().unwrap_or_default();
        self.tally.fold(&members, &mut s);
        Ok(s)
    }
}

impl ProcessGroup {
    /// A point-in-time snapshot of the whole tree's resource use: CPU time (user and system,
    /// members living and exited), current and peak memory, and live and total process counts.
    ///
    /// # Platform
    /// Where each figure comes from (see `docs/process-groups.md` for the full matrix):
    ///
    /// * Linux cgroup v2: CPU from `cpu.stat` (kept by every v2 cgroup). Memory from
    ///   `memory.current` / `memory.peak` when the v2 memory controller is enabled for the
    ///   group; else, on a hybrid host, from a v1 `memory` cgroup the group creates for
    ///   accounting (`memory.usage_in_bytes` / `memory.max_usage_in_bytes`); else by summing
    ///   the members' `/proc/<pid>/status` `VmRSS` (peak: the highest sampled). Processes from
    ///   `cgroup.procs`.
    /// * Process-group mechanism (macOS, BSD, Linux fallback): process counts only; CPU and
    ///   memory are `None`.
    /// * Windows Job Object: job accounting (CPU, peak job memory, process counts).
    ///
    /// # Errors
    /// [`Error::Io`] when the OS accounting cannot be read.
    pub fn stats(&self) -> Result<GroupStats> {
        self.inner
            .snapshot()
            .map_err(|e| super::group_error(self, "reading the process group's statistics", e))
    }

    /// A stream of [`GroupStats`] snapshots, one every `interval` (the first at once).
    ///
    /// The stream ends when the group is dropped, or when the statistics cannot be read; [`StatsSamples::error`] then says why. Missed ticks are not bunched up: a slow
    /// consumer sees fresh samples at most every `interval`.
    ///
    /// ```no_run
    /// use processkit::{Command, ProcessGroup, StreamExt};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main]
    /// # async fn main() -> processkit::Result<()> {
    /// let group = ProcessGroup::new()?;
    /// let _worker = group.start(&Command::new("worker")).await?;
    /// let mut samples = group.sample_stats(Duration::from_millis(250));
    /// if let Some(s) = samples.next().await {
    ///     println!("procs={} peak={:?}", s.active_process_count, s.peak_memory_bytes);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// A zero `interval` is [`Error::InvalidInput`]: the stream yields nothing and
    /// [`StatsSamples::error`] returns the error. Use [`try_sample_stats`](Self::try_sample_stats)
    /// to get it up front.
    ///
    /// # Platform
    /// As [`stats`](Self::stats).
    ///
    /// # Cancel safety
    /// `next()` is cancel safe: a dropped `next()` loses no sample that was not yet taken.
    pub fn sample_stats(&self, interval: Duration) -> StatsSamples {
        match self.try_sample_stats(interval) {
            Ok(s) => s,
            Err(e) => StatsSamples {
                inner: Weak::new(),
                ticker: None,
                error: Some(e),
                done: true,
            },
        }
    }

    /// [`sample_stats`](Self::sample_stats), with a bad `interval` reported here.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a zero `interval`.
    ///
    /// # Platform
    /// As [`stats`](Self::stats).
    pub fn try_sample_stats(&self, interval: Duration) -> Result<StatsSamples> {
        if interval.is_zero() {
            return Err(Error::invalid(
                "",
                "sample_stats interval",
                "must be greater than zero",
            ));
        }
        Ok(StatsSamples {
            inner: Arc::downgrade(&self.inner),
            ticker: Some(Ticker::new(interval)),
            error: None,
            done: false,
        })
    }
}

/// The timer behind a sample series, created lazily so the stream can be built outside a
/// tokio runtime.
struct Ticker {
    interval: Duration,
    timer: Option<tokio::time::Interval>,
}

impl Ticker {
    fn new(interval: Duration) -> Ticker {
        Ticker {
            interval,
            timer: None,
        }
    }

    fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let interval = self.interval;
        let timer = self.timer.get_or_insert_with(|| {
            let mut t = tokio::time::interval(interval);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        timer.poll_tick(cx).map(|_| ())
    }
}

/// A series of [`GroupStats`] from [`ProcessGroup::sample_stats`]; use it as a
/// [`Stream`](futures_core::Stream) (`.next().await` with [`StreamExt`](crate::StreamExt)).
///
/// It holds the group weakly: dropping the [`ProcessGroup`] still kills the tree and frees
/// its kernel objects, and the series then ends.
pub struct StatsSamples {
    inner: Weak<GroupInner>,
    ticker: Option<Ticker>,
    error: Option<Error>,
    done: bool,
}

impl std::fmt::Debug for StatsSamples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsSamples")
            .field("interval", &self.ticker.as_ref().map(|t| t.interval))
            .field("error", &self.error)
            .field("done", &self.done)
            .finish()
    }
}

impl StatsSamples {
    /// Why the series ended early: a zero interval ([`Error::InvalidInput`]) or unreadable
    /// statistics ([`Error::Io`]). `None` while it runs, and after an ordinary end (the group
    /// was dropped).
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// Takes the error out (see [`error`](Self::error)).
    pub fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }
}

impl Stream for StatsSamples {
    type Item = GroupStats;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<GroupStats>> {
        let this = self.get_mut();
        let inner = match this.inner.upgrade() {
            Some(g) if !this.done && !g.closed.load(Ordering::SeqCst) => g,
            _ => {
                this.done = true;
                return Poll::Ready(None);
            }
        };
        let Some(ticker) = this.ticker.as_mut() else {
            this.done = true;
            return Poll::Ready(None);
        };
        if ticker.poll_tick(cx).is_pending() {
            return Poll::Pending;
        }
        if inner.closed.load(Ordering::SeqCst) {
            this.done = true;
            return Poll::Ready(None);
        }
        match inner.snapshot() {
            Ok(s) => Poll::Ready(Some(s)),
            Err(e) => {
                this.done = true;
                this.error = Some(Error::io("", "sampling the process group's statistics", e));
                Poll::Ready(None)
            }
        }
    }
}
