//! Per-run measurement (`stats` feature): CPU time, peak memory, and an end-to-end profile.

use std::time::Duration;

use super::{Owner, RunningProcess};
use crate::error::{Error, Result};

/// The summary of one run from [`RunningProcess::profile`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunProfile {
    /// The exit code; `None` when the child was killed (timeout, signal, OOM).
    pub exit_code: Option<i32>,
    /// Wall time from spawn to exit.
    pub duration: Duration,
    /// The highest memory use seen, in bytes (see [`RunningProcess::peak_memory_bytes`] for
    /// what is measured); `None` where it cannot be measured.
    pub peak_memory_bytes: Option<u64>,
    /// CPU time (user plus system) consumed by the run; `None` where it cannot be measured.
    pub cpu_time: Option<Duration>,
    /// How many samples were taken while the run was alive (the first at once, then one per
    /// interval).
    pub samples: u32,
}

impl RunProfile {
    /// Average CPU use over the run, in cores: `1.0` is one core busy the whole time, `0.5`
    /// half a core, `2.0` two cores. `None` when CPU time is unknown or the run took no
    /// measurable time.
    pub fn avg_cpu(&self) -> Option<f64> {
        let cpu = self.cpu_time?;
        let wall = self.duration.as_secs_f64();
        (wall > 0.0).then(|| cpu.as_secs_f64() / wall)
    }
}

/// One measurement: CPU so far and the peak memory so far.
#[derive(Debug, Clone, Copy, Default)]
struct Measure {
    cpu: Option<Duration>,
    peak: Option<u64>,
}

impl RunningProcess {
    fn measure(&self) -> Measure {
        let group = match &self.owner {
            Owner::Private(g) => g.inner().snapshot().ok(),
            Owner::Shared(_) | Owner::Detached => None,
        };
        let process = if self.pid != 0 {
            crate::sys::process_usage(self.pid)
        } else {
            None
        };
        Measure {
            cpu: group
                .as_ref()
                .and_then(|s| s.cpu_total())
                .or(process.map(|u| u.cpu_user + u.cpu_system)),
            peak: group
                .as_ref()
                .and_then(|s| s.peak_memory_bytes)
                .or(process.map(|u| u.peak_rss_bytes.max(u.rss_bytes))),
        }
    }

    /// CPU time (user plus system) used so far.
    ///
    /// For a handle from [`Command::start`](crate::Command::start) this is the whole tree's,
    /// from its private group (still readable after exit, until the handle is dropped). For a
    /// handle from a shared [`ProcessGroup`](crate::ProcessGroup) it is the child's own plus
    /// that of the children it has reaped, and only while the child is alive.
    ///
    /// # Platform
    /// Linux: the cgroup's `cpu.stat`, else `/proc/<pid>/stat`. Elsewhere: the group's job
    /// accounting (Windows) for private handles; `None` on the process-group mechanism of
    /// macOS/BSD.
    pub fn cpu_time(&self) -> Option<Duration> {
        self.measure().cpu
    }

    /// The highest memory use seen so far, in bytes.
    ///
    /// For a handle from [`Command::start`](crate::Command::start): the whole tree's, from the
    /// private group (the kernel's peak where the group has a memory controller, else the
    /// highest figure sampled by this and earlier calls and the child's own `VmHWM`). For a
    /// handle from a shared group: the child's own resident-set high-water mark (`VmHWM`),
    /// while it is alive.
    ///
    /// # Platform
    /// As [`cpu_time`](Self::cpu_time).
    pub fn peak_memory_bytes(&self) -> Option<u64> {
        self.measure().peak
    }

    /// Waits for the run to end while sampling it every `interval`, and returns its exit
    /// code, duration, peak memory and CPU time ([`RunProfile::avg_cpu`] gives the average
    /// load in cores).
    ///
    /// The run keeps its normal handling: its timeout and cancellation still apply (a killed
    /// run has `exit_code: None`), stderr is captured as usual, and stdout nobody streams is
    /// discarded, as in [`wait`](Self::wait). What is measured is as in
    /// [`cpu_time`](Self::cpu_time) and [`peak_memory_bytes`](Self::peak_memory_bytes): the
    /// whole tree for a private handle, final figures read after exit; the child itself for a
    /// shared-group handle, whose last figures are those of the last sample before exit (so
    /// up to one `interval` of CPU may be missing).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a zero `interval`; [`Error::Cancelled`] when the run's
    /// cancellation token fired; [`Error::Io`] when waiting fails.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future loses only the samples taken so far; the run goes on.
    pub async fn profile(&mut self, interval: Duration) -> Result<RunProfile> {
        if interval.is_zero() {
            return Err(Error::invalid(
                &self.meta.program,
                "profile interval",
                "must be greater than zero",
            ));
        }
        self.release_unread_stdout();
        let mut cpu = None;
        let mut peak: Option<u64> = None;
        let mut samples = 0u32;
        let mut fold = |m: Measure, cpu: &mut Option<Duration>| {
            if m.cpu.is_some() {
                *cpu = m.cpu.max(*cpu);
            }
            peak = peak.max(m.peak);
        };
        let mut exit_rx = self.exit_rx.clone();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if exit_rx.borrow().is_some() {
                break;
            }
            tokio::select! {
                _ = ticker.tick() => {
                    fold(self.measure(), &mut cpu);
                    samples += 1;
                }
                _ = exit_rx.changed() => {}
            }
        }
        let exit = self.wait_exit().await?;
        let duration = self.started.elapsed();
        // Private group: the cgroup still holds the tree's final accounting.
        fold(self.measure(), &mut cpu);
        self.check_cancelled()?;
        let timed_out = self
            .flags
            .timed_out
            .load(std::sync::atomic::Ordering::SeqCst);
        Ok(RunProfile {
            exit_code: if timed_out { None } else { exit.code },
            duration,
            peak_memory_bytes: peak,
            cpu_time: cpu,
            samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avg_cpu_is_cores() {
        let p = RunProfile {
            exit_code: Some(0),
            duration: Duration::from_secs(2),
            peak_memory_bytes: None,
            cpu_time: Some(Duration::from_secs(1)),
            samples: 3,
        };
        assert_eq!(p.avg_cpu(), Some(0.5));
        let none = RunProfile {
            cpu_time: None,
            ..p.clone()
        };
        assert_eq!(none.avg_cpu(), None);
        let instant = RunProfile {
            duration: Duration::ZERO,
            ..p
        };
        assert_eq!(instant.avg_cpu(), None);
    }
}
