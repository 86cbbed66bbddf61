//! Resource accounting for a group.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

/// A point-in-time snapshot of a group's resource use.
///
/// Fields a mechanism cannot measure are `None` (see the per-mechanism matrix in
/// `docs/process-groups.md`).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct GroupStats {
    /// CPU time spent in user mode by every member, living and exited.
    pub cpu_user: Option<Duration>,
    /// CPU time spent in kernel mode by every member, living and exited.
    pub cpu_system: Option<Duration>,
    /// Memory currently charged to the group, in bytes.
    pub current_memory_bytes: Option<u64>,
    /// The highest memory use observed for the group, in bytes: the kernel's own high-water
    /// mark where it keeps one, else the highest value sampled so far.
    pub peak_memory_bytes: Option<u64>,
    /// Processes alive in the group now (processes, not threads).
    pub active_process_count: u64,
    /// Processes ever seen in the group: every one started through it or adopted into it, plus
    /// every descendant observed by a [`stats`](crate::ProcessGroup::stats) or sample call
    /// (a descendant that comes and goes between two calls is missed).
    pub total_process_count: Option<u64>,
}

#[cfg_attr(not(feature = "stats"), allow(dead_code))]
impl GroupStats {
    /// User plus system CPU time, when both are known.
    pub fn cpu_total(&self) -> Option<Duration> {
        Some(self.cpu_user? + self.cpu_system?)
    }
}

/// What a group remembers between snapshots: the process total and the memory peak.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    inner: Mutex<TallyInner>,
}

#[derive(Debug, Default)]
struct TallyInner {
    /// Processes counted so far.
    total: u64,
    /// Pids already counted that were alive at the last look (pruned at every snapshot, so the
    /// set stays as small as the live tree).
    known: HashSet<u32>,
    /// The highest memory figure seen.
    peak_memory: Option<u64>,
}

impl Tally {
    /// Counts a process started in or adopted into the group.
    pub(crate) fn note_started(&self, pid: u32) {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if t.known.insert(pid) {
            t.total += 1;
        }
    }

    /// Folds a fresh OS snapshot in: new members count towards the total, and the peak is the
    /// highest of the kernel's peak, the current use and every earlier snapshot.
    #[cfg_attr(not(feature = "stats"), allow(dead_code))]
    pub(crate) fn fold(&self, members: &[u32], s: &mut GroupStats) {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut counted = 0;
        for pid in members {
            if !t.known.contains(pid) {
                counted += 1;
            }
        }
        t.total += counted;
        t.known = members.iter().copied().collect();
        let candidates = [s.peak_memory_bytes, s.current_memory_bytes, t.peak_memory];
        t.peak_memory = candidates.into_iter().flatten().max();
        if s.peak_memory_bytes.is_some() || s.current_memory_bytes.is_some() {
            s.peak_memory_bytes = t.peak_memory;
        }
        let total = t.total.max(s.active_process_count);
        s.total_process_count = Some(match s.total_process_count {
            // The OS counts (Windows job accounting): trust it, it sees every fork.
            Some(os) => os.max(total),
            None => total,
        });
    }
}

/// Whether the kernel's OOM killer ended this run.
///
/// A private group: any OOM kill recorded in it (the tree is the run). A shared group: the
/// child died of `SIGKILL` and the group's OOM-kill counter grew since it was spawned (the
/// group cannot say which member the kernel picked, so a sibling's OOM kill coinciding with an
/// unrelated `SIGKILL` of this child would be misattributed).
pub(crate) fn run_oom_killed(rp: &crate::RunningProcess, exit: &crate::sys::ExitInfo) -> bool {
    use crate::running::Owner;
    const SIGKILL: i32 = 9;
    if let Some(g) = rp.private_group() {
        return g.inner().container.oom_killed();
    }
    match &rp.owner {
        Owner::Private(_) | Owner::Detached => false,
        Owner::Shared(g) => {
            exit.signal == Some(SIGKILL)
                && rp.flags.oom_baseline.get().is_some_and(|&before| {
                    crate::sys::oom_kills(&g.container).is_some_and(|now| now > before)
                })
        }
    }
}

/// The error `run()` and friends raise for a run the OOM killer ended.
pub(crate) fn oom_error<T>(r: &crate::ProcessResult<T>) -> crate::Error {
    crate::Error::ResourceLimit {
        what: "memory_max".to_owned(),
        reason: format!(
            "`{}` was killed by the kernel OOM killer: its process group ran out of memory{}",
            r.command_line(),
            match r.signal {
                Some(s) => format!(" (signal {s})"),
                None => String::new(),
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_each_process_once_and_keeps_the_peak() {
        let t = Tally::default();
        t.note_started(10);
        t.note_started(10);
        let mut s = GroupStats {
            active_process_count: 3,
            current_memory_bytes: Some(100),
            ..GroupStats::default()
        };
        t.fold(&[10, 11, 12], &mut s);
        assert_eq!(s.total_process_count, Some(3));
        assert_eq!(s.peak_memory_bytes, Some(100));
        // 10 and 11 exit, 13 appears; memory drops.
        let mut s = GroupStats {
            active_process_count: 2,
            current_memory_bytes: Some(40),
            ..GroupStats::default()
        };
        t.fold(&[12, 13], &mut s);
        assert_eq!(s.total_process_count, Some(4));
        assert_eq!(s.peak_memory_bytes, Some(100));
        // A kernel peak above everything sampled wins.
        let mut s = GroupStats {
            current_memory_bytes: Some(40),
            peak_memory_bytes: Some(500),
            ..GroupStats::default()
        };
        t.fold(&[], &mut s);
        assert_eq!(s.peak_memory_bytes, Some(500));
        assert_eq!(s.total_process_count, Some(4));
        // Without any memory figure (counts-only mechanism) the peak stays unknown.
        let t2 = Tally::default();
        let mut s = GroupStats::default();
        t2.fold(&[1], &mut s);
        assert_eq!(s.peak_memory_bytes, None);
        assert_eq!(s.total_process_count, Some(1));
    }
}
