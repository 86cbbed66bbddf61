//! Resource accounting for a group.

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
    /// The highest memory use observed for the group, in bytes.
    pub peak_memory_bytes: Option<u64>,
    /// Processes alive in the group now.
    pub active_process_count: u64,
    /// Processes ever started in the group, where the mechanism counts them.
    pub total_process_count: Option<u64>,
}

impl GroupStats {
    /// User plus system CPU time, when both are known.
    pub fn cpu_total(&self) -> Option<Duration> {
        Some(self.cpu_user? + self.cpu_system?)
    }
}
