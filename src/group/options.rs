//! Options fixed when a group is created.

use std::time::Duration;

use crate::error::{Error, Result};

/// The smallest CPU share a quota may ask for: 1 ms of CPU per second, the finest share Linux's
/// CFS bandwidth control enforces (its shortest quota over its longest period).
const MIN_CPU_QUOTA: f64 = 0.001;
use crate::sys::ContainerOptions;

/// Options for [`ProcessGroup::with_options`](crate::ProcessGroup::with_options).
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessGroupOptions {
    pub(crate) memory_max: Option<u64>,
    pub(crate) max_processes: Option<u64>,
    pub(crate) cpu_quota: Option<f64>,
    pub(crate) shutdown_grace: Duration,
    pub(crate) allow_self_move: bool,
    /// Pay for kernel memory accounting at creation (off for a one-shot run's private group).
    pub(crate) accounting: bool,
}

impl Default for ProcessGroupOptions {
    fn default() -> Self {
        ProcessGroupOptions {
            memory_max: None,
            max_processes: None,
            cpu_quota: None,
            shutdown_grace: Duration::from_secs(5),
            allow_self_move: true,
            accounting: true,
        }
    }
}

impl ProcessGroupOptions {
    /// How long [`shutdown`](crate::ProcessGroup::shutdown) waits after `SIGTERM` before it
    /// kills (default 5 s).
    ///
    /// # Platform
    /// Unused on Windows, which has no `SIGTERM`: `shutdown` terminates the job at once.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Caps the memory of the whole tree, in bytes. The kernel kills (OOM) inside the group when
    /// it is exceeded; the result reports it ([`ProcessResult::oom_killed`](crate::ProcessResult::oom_killed)).
    ///
    /// # Platform
    /// Linux cgroup (v2 controllers, or the v1 memory controller on hybrid hosts) and Windows
    /// Job Objects. Elsewhere [`ProcessGroup::with_options`](crate::ProcessGroup::with_options)
    /// returns [`Error::ResourceLimit`].
    #[cfg(feature = "limits")]
    pub fn memory_max(mut self, bytes: u64) -> Self {
        self.memory_max = Some(bytes);
        self
    }

    /// Caps how many processes the tree may hold at once; `fork` fails past it.
    ///
    /// # Platform
    /// As [`memory_max`](Self::memory_max). On Linux the `pids` controller counts every task,
    /// **threads included**: size the cap for the threads the tree runs (a multi-threaded
    /// runtime in one child takes several). A Windows Job Object counts processes only.
    #[cfg(feature = "limits")]
    pub fn max_processes(mut self, count: u64) -> Self {
        self.max_processes = Some(count);
        self
    }

    /// Caps CPU to a fraction of **one** core (`0.5` = half a core, `2.0` = two cores).
    /// At least `0.001` (1 ms of CPU per second, the finest share Linux enforces); less is
    /// refused with [`Error::ResourceLimit`] rather than rounded up. On Linux a share below
    /// `0.01` is enforced over a longer CFS period (up to 1 s) instead of a coarser quota.
    ///
    /// # Platform
    /// As [`memory_max`](Self::memory_max); on Windows converted against the host's CPU count
    /// (approximate).
    #[cfg(feature = "limits")]
    pub fn cpu_quota(mut self, cores: f64) -> Self {
        self.cpu_quota = Some(cores);
        self
    }

    /// Whether processkit may move **this** process into a leaf cgroup of its own so that
    /// cgroup v2 controllers can be enabled for the group (default `true`).
    ///
    /// Linux forbids enabling controllers in a cgroup that holds processes (the
    /// no-internal-process rule). Under systemd (`Delegate=yes`) or in a container, our own
    /// cgroup usually holds exactly one process: us. To apply a v2 limit there, processkit
    /// moves this process (all its threads) once into `<our cgroup>/processkit-self`, enables
    /// the controllers in `<our cgroup>`, and creates the groups next to that leaf. Other
    /// tools that read `/proc/self/cgroup` will see the new path. With `false`, such a limit
    /// fails with [`Error::ResourceLimit`] instead. Limits enforced through the v1 hierarchy of
    /// a hybrid host never need the move.
    ///
    /// # Platform
    /// Linux only; ignored elsewhere.
    #[cfg(feature = "limits")]
    pub fn allow_self_move(mut self, allow: bool) -> Self {
        self.allow_self_move = allow;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |what: &str, reason: &str| {
            Err(Error::ResourceLimit {
                what: what.to_owned(),
                reason: reason.to_owned(),
            })
        };
        if self.memory_max == Some(0) {
            return bad("memory_max", "must be greater than zero");
        }
        if self.max_processes == Some(0) {
            return bad("max_processes", "must be at least 1");
        }
        if let Some(q) = self.cpu_quota {
            if !(q.is_finite() && q > 0.0) {
                return bad(
                    "cpu_quota",
                    "must be a positive, finite fraction of one core",
                );
            }
            if q < MIN_CPU_QUOTA {
                return bad(
                    "cpu_quota",
                    "must be at least 0.001 of a core (1 ms per second, the finest share the \
                     kernels enforce)",
                );
            }
        }
        Ok(())
    }

    pub(crate) fn container_options(&self) -> ContainerOptions {
        ContainerOptions {
            memory_max: self.memory_max,
            max_processes: self.max_processes,
            cpu_quota: self.cpu_quota,
            accounting: self.accounting,
            allow_self_move: self.allow_self_move,
        }
    }
}
