//! The Linux backend: a cgroup v2 per group where one can be created, else the POSIX
//! process-group fallback (reported through [`Mechanism`]).

pub(crate) mod cgroup;
mod lasting;
pub(crate) mod layout;
pub(crate) mod limits;
pub(crate) mod pool;
#[cfg_attr(not(feature = "stats"), allow(dead_code))]
pub(crate) mod procfs;
pub(crate) mod spawn;
pub(crate) mod v1;

use std::io;
use std::sync::OnceLock;

use super::unix::pgroup::{limit_name, Pgroup};
use super::{ContainerOptions, CreateError, SpawnRequest};
use crate::{GroupStats, Mechanism, Signal};

pub(crate) use spawn::Child;

/// A Linux container: a cgroup, or a set of process groups when no cgroup can be created.
#[derive(Debug)]
pub(crate) enum Container {
    Cgroup(cgroup::Cgroup),
    Pgroup(Pgroup),
}

/// `PROCESSKIT_MECHANISM=process-group` forces the fallback (testing and escape hatch).
fn forced_pgroup() -> bool {
    static F: OnceLock<bool> = OnceLock::new();
    *F.get_or_init(|| {
        std::env::var_os("PROCESSKIT_MECHANISM").is_some_and(|v| v == "process-group")
    })
}

macro_rules! each {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            Container::Cgroup($c) => $e,
            Container::Pgroup($c) => $e,
        }
    };
}

impl Container {
    /// A cgroup when possible; otherwise a process group. Limits need a cgroup: when one is
    /// asked for and cannot be enforced, creation fails rather than fall back.
    pub(crate) fn create(opts: &ContainerOptions) -> Result<Container, CreateError> {
        if !forced_pgroup() {
            match cgroup::Cgroup::create(opts) {
                Ok(c) => return Ok(Container::Cgroup(c)),
                Err(e @ CreateError::Limit { .. }) => return Err(e),
                Err(CreateError::Io(e)) => {
                    if let Some(what) = limit_name(opts) {
                        return Err(CreateError::Limit {
                            what,
                            reason: format!("no cgroup could be created to enforce it: {e}"),
                        });
                    }
                }
            }
        }
        Ok(Container::Pgroup(Pgroup::create(opts)?))
    }

    /// The mechanism in force.
    pub(crate) fn mechanism(&self) -> Mechanism {
        match self {
            Container::Cgroup(_) => Mechanism::CgroupV2,
            Container::Pgroup(_) => Mechanism::ProcessGroup,
        }
    }

    /// Spawns a child inside the container before it runs a single instruction of its program.
    ///
    /// A child armed with `PR_SET_PDEATHSIG` (`kill_on_parent_death`) is created by a thread
    /// that lives as long as the process ([`lasting`]): the signal follows the creating
    /// thread, not the process, and the calling thread may be a short-lived one.
    pub(crate) fn spawn(&self, req: SpawnRequest) -> io::Result<super::Child> {
        if req.kill_on_parent_death {
            // The child's pipes and pidfd register with the caller's runtime.
            let rt = tokio::runtime::Handle::try_current().ok();
            return lasting::run(move || {
                let _in_rt = rt.as_ref().map(|h| h.enter());
                self.spawn_here(req)
            });
        }
        self.spawn_here(req)
    }

    fn spawn_here(&self, req: SpawnRequest) -> io::Result<super::Child> {
        match self {
            Container::Cgroup(c) => {
                if req.kill_on_parent_death {
                    // Whole-tree parent death: the guardian kills every `pk-<pid>-*` cgroup of
                    // ours when we die. Best effort: PDEATHSIG still covers the direct child.
                    let _ = super::unix::guardian::ensure(&cgroup::guarded_parents());
                }
                c.spawn(req)
            }
            Container::Pgroup(p) => {
                let join = spawn::Join {
                    new_pgroup: true,
                    ..spawn::Join::default()
                };
                if !spawn::available() {
                    return p.spawn(req);
                }
                // The guardian must be running before the child exists (registration below).
                let guard = p.prepare_guard(&req);
                match spawn::spawn(&req, &join) {
                    Ok(r) => {
                        let child = r?;
                        p.track_spawned(child.pid as i32, guard);
                        Ok(child)
                    }
                    Err(_) => p.spawn(req),
                }
            }
        }
    }

    /// Spawns a caller-built std command inside the container.
    pub(crate) fn spawn_std(
        &self,
        cmd: &mut std::process::Command,
    ) -> io::Result<std::process::Child> {
        each!(self, c => c.spawn_std(cmd))
    }

    /// Hard-kills every member. Idempotent.
    pub(crate) fn kill_all(&self) -> io::Result<()> {
        each!(self, c => c.kill_all())
    }

    /// Sends a signal to every member.
    pub(crate) fn signal(&self, sig: Signal) -> io::Result<()> {
        each!(self, c => c.signal(sig))
    }

    /// Freezes the whole tree.
    pub(crate) fn freeze(&self) -> io::Result<()> {
        each!(self, c => c.freeze())
    }

    /// Thaws the whole tree.
    pub(crate) fn thaw(&self) -> io::Result<()> {
        each!(self, c => c.thaw())
    }

    /// Live member pids.
    pub(crate) fn members(&self) -> io::Result<Vec<u32>> {
        each!(self, c => c.members())
    }

    /// Brings an existing process under the container.
    pub(crate) fn adopt(&self, pid: u32) -> io::Result<()> {
        match self {
            Container::Cgroup(c) => c.adopt(pid),
            Container::Pgroup(p) => {
                // The portable process-group code cannot tell a zombie from a live process;
                // /proc can, and the answer must not depend on the mechanism.
                if let Ok(raw) = i32::try_from(pid) {
                    super::unix::check_signalable(raw)?;
                }
                if procfs::is_zombie(pid) {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("process {pid} has already exited (a zombie waiting to be reaped)"),
                    ));
                }
                p.adopt(pid)
            }
        }
    }

    /// Resource accounting.
    pub(crate) fn stats(&self) -> io::Result<GroupStats> {
        each!(self, c => c.stats())
    }

    /// Whether no member is left.
    pub(crate) fn is_empty(&self) -> io::Result<bool> {
        each!(self, c => c.is_empty())
    }

    /// OOM kills recorded in the container so far (`None`: nothing counts them here).
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        match self {
            Container::Cgroup(c) => c.oom_kills(),
            Container::Pgroup(_) => None,
        }
    }

    /// Whether the kernel OOM-killed something in this container.
    pub(crate) fn oom_killed(&self) -> bool {
        match self {
            Container::Cgroup(c) => c.oom_killed(),
            Container::Pgroup(_) => false,
        }
    }
}
