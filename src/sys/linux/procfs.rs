//! Per-process accounting from `/proc`: the fallback when a cgroup lacks a controller, and the
//! source for a single process in a shared group.

use std::fs;
use std::time::Duration;

use crate::sys::ProcUsage;

/// Clock ticks per second of the `/proc/<pid>/stat` times.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as u64
    } else {
        100
    }
}

fn ticks(t: u64) -> Duration {
    let hz = clock_ticks();
    Duration::from_nanos(
        u64::try_from(u128::from(t) * 1_000_000_000 / u128::from(hz)).unwrap_or(u64::MAX),
    )
}

/// `(user, system)` CPU ticks of a process plus its reaped children, from the text of
/// `/proc/<pid>/stat`. The command name may contain spaces and parentheses, so the fields are
/// counted from the last `)`.
pub(crate) fn parse_stat_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // Fields after the name: state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt
    // cmajflt utime(14) stime(15) cutime(16) cstime(17).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    let (utime, stime) = (n(11)?, n(12)?);
    // cutime/cstime are signed in the kernel ABI but never negative in practice.
    let cutime = n(13).unwrap_or(0);
    let cstime = n(14).unwrap_or(0);
    Some((utime + cutime, stime + cstime))
}

/// A `kB` line (`VmRSS:`, `VmHWM:`) of `/proc/<pid>/status` text, in bytes.
pub(crate) fn status_bytes(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kib| kib * 1024)
}

/// Usage of one live process; `None` once it is gone (or a zombie, whose memory is released).
pub(crate) fn process_usage(pid: u32) -> Option<ProcUsage> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (user, system) = parse_stat_ticks(&stat)?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    Some(ProcUsage {
        cpu_user: ticks(user),
        cpu_system: ticks(system),
        rss_bytes: status_bytes(&status, "VmRSS:").unwrap_or(0),
        peak_rss_bytes: status_bytes(&status, "VmHWM:").unwrap_or(0),
    })
}

/// Whether `pid` is a zombie (exited, not yet reaped) or already dead.
pub(crate) fn is_zombie(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(i) => matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => false,
        },
        Err(_) => false,
    }
}

/// Sums the usage of `pids` (members that vanish meanwhile are skipped): CPU and current RSS
/// add up, the peak is the largest single `VmHWM` (a lower bound of the group's true peak;
/// callers also fold in the sampled sums).
pub(crate) fn sum_usage(pids: &[u32]) -> ProcUsage {
    let mut total = ProcUsage::default();
    for &pid in pids {
        if let Some(u) = process_usage(pid) {
            total.cpu_user += u.cpu_user;
            total.cpu_system += u.cpu_system;
            total.rss_bytes += u.rss_bytes;
            total.peak_rss_bytes = total.peak_rss_bytes.max(u.peak_rss_bytes);
        }
    }
    total.peak_rss_bytes = total.peak_rss_bytes.max(total.rss_bytes);
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let stat = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 30 7 3 20 0 1 0 5 0 0";
        assert_eq!(parse_stat_ticks(stat), Some((257, 33)));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn status_fields_in_bytes() {
        let status = "Name:\tx\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(status_bytes(status, "VmRSS:"), Some(1 << 20));
        assert_eq!(status_bytes(status, "VmHWM:"), Some(2 << 20));
        assert_eq!(status_bytes(status, "VmSwap:"), None);
    }

    #[test]
    fn own_usage_is_readable() {
        let u = process_usage(std::process::id()).unwrap();
        assert!(u.rss_bytes > 0);
        assert!(u.peak_rss_bytes >= u.rss_bytes);
        let sum = sum_usage(&[std::process::id(), u32::MAX]);
        assert!(sum.rss_bytes > 0);
    }
}
