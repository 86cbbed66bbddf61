//! Lifecycle events for the `tracing` feature: one event per step of a run.
//!
//! Every event has target `processkit`, the message `processkit: <step>` and a field
//! `event = "<step>"` (`spawn`, `exit`, `timeout`, `cancel`, `teardown`, `retry`, `storm`), plus
//! what the step knows of `program` (the program name only), `pid`, `duration_ms` and `outcome`.
//! Argument values and environment variables are **never** part of an event: they routinely
//! carry secrets. Scripted and replayed runs (the test doubles) emit the same events with
//! `pid = 0`.
//!
//! Levels: `spawn`, `exit` and `teardown` are `DEBUG`; `timeout`, `cancel` and `retry` are
//! `INFO`; `storm` is `WARN`.
//!
//! Without the feature every function here is an empty inline function, so call sites need no
//! `cfg`.
#![cfg_attr(not(feature = "tracing"), allow(unused_variables))]

use std::time::Duration;

use crate::running::RunFlags;
use crate::sys::ExitInfo;

/// The target of every event.
#[cfg(feature = "tracing")]
const TARGET: &str = "processkit";

#[cfg(feature = "tracing")]
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A child was started (`pid` 0 for a scripted run).
#[inline]
pub(crate) fn spawn(program: &str, pid: u32) {
    #[cfg(feature = "tracing")]
    tracing::debug!(target: TARGET, event = "spawn", program, pid, "processkit: spawn");
}

/// How a run ended, as one word plus detail: `exited 0`, `signal 9`, `timed out`, `cancelled`.
#[cfg_attr(not(feature = "tracing"), allow(dead_code))]
pub(crate) fn outcome(exit: &ExitInfo, flags: &RunFlags) -> String {
    use std::sync::atomic::Ordering;
    if flags.cancelled.load(Ordering::SeqCst) {
        "cancelled".to_owned()
    } else if flags.timed_out.load(Ordering::SeqCst) {
        "timed out".to_owned()
    } else if let Some(c) = exit.code {
        format!("exited {c}")
    } else if let Some(s) = exit.signal {
        format!("signal {s}")
    } else {
        "killed".to_owned()
    }
}

/// The direct child exited (or was killed) and was reaped.
#[inline]
pub(crate) fn exit(program: &str, pid: u32, duration: Duration, exit: &ExitInfo, flags: &RunFlags) {
    #[cfg(feature = "tracing")]
    exit_event(program, pid, duration, &outcome(exit, flags));
    #[cfg(not(feature = "tracing"))]
    let _ = (program, pid, duration, exit, flags);
}

/// Waiting for the child failed (the OS wait returned an error).
#[inline]
pub(crate) fn exit_failed(program: &str, pid: u32, duration: Duration) {
    #[cfg(feature = "tracing")]
    exit_event(program, pid, duration, "wait failed");
    #[cfg(not(feature = "tracing"))]
    let _ = (program, pid, duration);
}

#[cfg(feature = "tracing")]
fn exit_event(program: &str, pid: u32, duration: Duration, outcome: &str) {
    tracing::debug!(
        target: TARGET,
        event = "exit",
        program,
        pid,
        duration_ms = ms(duration),
        outcome = %outcome,
        "processkit: exit"
    );
}

/// The run's deadline (or inactivity timer) fired; the tree is being stopped.
#[inline]
pub(crate) fn timeout(program: &str, pid: u32, elapsed: Duration, graceful: bool) {
    #[cfg(feature = "tracing")]
    tracing::info!(
        target: TARGET,
        event = "timeout",
        program,
        pid,
        duration_ms = ms(elapsed),
        outcome = %if graceful { "terminating (grace period)" } else { "killing" },
        "processkit: timeout"
    );
}

/// The run's cancellation token fired; the tree was killed.
#[inline]
pub(crate) fn cancel(program: &str, pid: u32, elapsed: Duration) {
    #[cfg(feature = "tracing")]
    tracing::info!(
        target: TARGET,
        event = "cancel",
        program,
        pid,
        duration_ms = ms(elapsed),
        outcome = %"killed",
        "processkit: cancel"
    );
}

/// A group's tree was torn down (`mechanism` names the container; `outcome` says how).
#[inline]
pub(crate) fn teardown(mechanism: &dyn std::fmt::Display, outcome: &str) {
    #[cfg(feature = "tracing")]
    tracing::debug!(
        target: TARGET,
        event = "teardown",
        mechanism = %mechanism,
        outcome = %outcome,
        "processkit: teardown"
    );
}

/// Attempt `attempt` failed and the run will be retried after `delay`.
#[inline]
pub(crate) fn retry(program: &str, attempt: u32, delay: Duration, outcome: &str) {
    #[cfg(feature = "tracing")]
    tracing::info!(
        target: TARGET,
        event = "retry",
        program,
        attempt,
        delay_ms = ms(delay),
        outcome = %outcome,
        "processkit: retry"
    );
}

/// A supervised child restarted too often (`restarts` within `window`): the storm guard gave
/// up or throttled. For the supervisor.
#[allow(dead_code)]
#[inline]
pub(crate) fn storm(program: &str, restarts: u32, window: Duration, outcome: &str) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        target: TARGET,
        event = "storm",
        program,
        restarts,
        duration_ms = ms(window),
        outcome = %outcome,
        "processkit: storm"
    );
}
