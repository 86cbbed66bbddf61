//! The cgroup v2 container: one cgroup per group, joined by the child before `exec`, killed with
//! one `cgroup.kill` write, frozen with `cgroup.freeze`, and removed when the group is dropped.
//!
//! Where our cgroups live is decided once per process from `/proc/self/mountinfo` and
//! `/proc/self/cgroup` (see [`super::layout`]): directly under the owner's own cgroup when that is
//! writable. Every directory this module creates is named `pk-<owner pid>-<sequence>`, and only
//! those are ever written to or removed.

use std::fs;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::layout::{self, CgroupLayout, V2Plan};
use crate::sys::unix::{signal_number, ChildSetup};
use crate::sys::{ContainerOptions, SpawnRequest};
use crate::{GroupStats, Signal};

/// Where new cgroups are created, decided once.
#[derive(Debug)]
pub(crate) struct Placement {
    pub layout: CgroupLayout,
    pub parent: PathBuf,
}

static PLACEMENT: OnceLock<Result<Placement, String>> = OnceLock::new();
static SEQ: AtomicU64 = AtomicU64::new(0);
/// Set when even a never-killed cgroup killed its child at birth (see
/// [`super::spawn::Fallback::KilledAtBirth`]): join by a write from then on.
static INTO_CGROUP_BROKEN: AtomicBool = AtomicBool::new(false);

/// The placement for plain (controller-less) groups, or why cgroups are unavailable.
pub(crate) fn placement() -> Result<&'static Placement, &'static str> {
    PLACEMENT
        .get_or_init(|| {
            let layout =
                layout::discover_current().map_err(|e| format!("reading cgroup layout: {e}"))?;
            match layout::plan_v2(&layout, &[], false) {
                V2Plan::Direct { parent } => Ok(Placement { layout, parent }),
                V2Plan::MoveSelfToLeaf { own, .. } => Ok(Placement {
                    layout,
                    parent: own,
                }),
                V2Plan::Unavailable(reason) => Err(reason),
            }
        })
        .as_ref()
        .map_err(|s| s.as_str())
}

/// One cgroup v2 directory owned by a group.
#[derive(Debug)]
pub(crate) struct Cgroup {
    dir: PathBuf,
    /// The directory itself (`O_PATH`), for `clone3(CLONE_INTO_CGROUP)`. `None` only in `Drop`.
    dirfd: Option<OwnedFd>,
    /// `cgroup.kill` (Linux 5.14+), kept open: it is written at least twice per run.
    kill: Option<OwnedFd>,
    /// `cgroup.events`, kept open: read before every kill.
    events: Option<OwnedFd>,
    /// Whether `cgroup.kill` was ever written (the kernel's kill counter moved: such a cgroup
    /// is never pooled, and children join it by a write instead of `CLONE_INTO_CGROUP`).
    killed: AtomicBool,
    /// `cgroup.procs`, opened on first use by the std-based spawn paths (the child joins with
    /// one `write` before exec).
    procs: OnceLock<OwnedFd>,
    /// v1 controller groups of a hybrid host (limits and accounting v2 lacks here).
    v1: Option<super::v1::V1Group>,
    frozen: Mutex<bool>,
    /// `cpu.stat` user/system microseconds when this group got the cgroup (non-zero for a
    /// reused one, see [`super::pool`]); subtracted in [`Cgroup::stats`].
    cpu_base: (u64, u64),
}

impl Cgroup {
    /// A plain group reuses a pooled empty cgroup when there is one; otherwise creates
    /// `pk-<pid>-<seq>` under the placement's parent.
    pub(crate) fn create(opts: &ContainerOptions) -> io::Result<Cgroup> {
        if !opts.has_limits() {
            if let Some(s) = super::pool::take() {
                return Ok(Cgroup {
                    dir: s.dir,
                    dirfd: Some(s.dirfd),
                    kill: s.kill,
                    events: s.events,
                    killed: AtomicBool::new(false),
                    procs: OnceLock::new(),
                    v1: None,
                    frozen: Mutex::new(false),
                    cpu_base: s.cpu_base,
                });
            }
        }
        let place =
            placement().map_err(|r| io::Error::new(io::ErrorKind::Unsupported, r.to_owned()))?;
        let name = format!(
            "pk-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = place.parent.join(&name);
        fs::create_dir(&dir)?;
        let dirfd = match open_dir(&dir) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                return Err(e);
            }
        };
        // Absent before Linux 5.14: `kill_all` then kills member by member.
        let kill = open_write(&dir.join("cgroup.kill")).ok();
        let events = open_read(&dir.join("cgroup.events")).ok();
        let v1 = if opts.has_limits() {
            let want = super::v1::V1Want {
                memory_max: opts.memory_max,
                max_processes: opts.max_processes,
                cpu_quota: opts.cpu_quota,
                stats: true,
            };
            match super::v1::V1Group::create(&place.layout, &name, &want) {
                Ok(g) => Some(g),
                Err(e) => {
                    let _ = fs::remove_dir(&dir);
                    return Err(e);
                }
            }
        } else {
            None
        };
        Ok(Cgroup {
            dir,
            dirfd: Some(dirfd),
            kill,
            events,
            killed: AtomicBool::new(false),
            procs: OnceLock::new(),
            v1,
            frozen: Mutex::new(false),
            cpu_base: (0, 0),
        })
    }

    /// `cgroup.procs`, opened once.
    fn procs_fd(&self) -> io::Result<RawFd> {
        if let Some(f) = self.procs.get() {
            return Ok(f.as_raw_fd());
        }
        let f = open_write(&self.dir.join("cgroup.procs"))?;
        Ok(self.procs.get_or_init(|| f).as_raw_fd())
    }

    /// The cgroup directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Spawns a child that joins this cgroup (and its v1 companions) before exec.
    pub(crate) fn spawn(&self, req: SpawnRequest) -> io::Result<crate::sys::Child> {
        let mut extra: Vec<OwnedFd> = Vec::new();
        if let Some(v1) = &self.v1 {
            for p in v1.procs_files() {
                extra.push(open_write(&p)?);
            }
        }
        let v1_raw: Vec<RawFd> = extra.iter().map(|f| f.as_raw_fd()).collect();
        // The clone3 path: the child is born in the cgroup (or, where the kernel would kill it
        // at birth, joins with a write) and joins the v1 companions with a write before exec.
        for attempt in 0..2 {
            let born_inside = attempt == 0
                && !self.killed.load(Ordering::Relaxed)
                && !INTO_CGROUP_BROKEN.load(Ordering::Relaxed);
            let mut writes = Vec::with_capacity(v1_raw.len() + 1);
            if !born_inside {
                writes.push(self.procs_fd()?);
            }
            writes.extend_from_slice(&v1_raw);
            let join = super::spawn::Join {
                cgroup_dir: if born_inside {
                    self.dirfd.as_ref().map(|f| f.as_raw_fd())
                } else {
                    None
                },
                v1_procs: &writes,
                new_pgroup: false,
            };
            match super::spawn::spawn(&req, &join) {
                Ok(r) => return r,
                Err(super::spawn::Fallback::Unsupported) => break,
                Err(super::spawn::Fallback::KilledAtBirth) => {
                    if !born_inside {
                        // Killed although it joined by a write: a kill raced the spawn.
                        return Err(io::Error::new(
                            io::ErrorKind::Interrupted,
                            "the group was killed while the child was being spawned",
                        ));
                    }
                    if !self.killed.load(Ordering::Relaxed) {
                        // Our own cgroup's counter differs from a fresh one's: never again.
                        INTO_CGROUP_BROKEN.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        let mut join_fds = vec![self.procs_fd()?];
        join_fds.extend(v1_raw);
        let setup = ChildSetup {
            join_fds,
            // A process group too, so a graceful signal can reach a `setsid`-free tree cheaply and
            // so the fallback and cgroup paths behave alike for terminal signals.
            new_pgroup: false,
            setsid: req.setsid,
            pdeathsig: req.kill_on_parent_death,
            uid: req.uid,
            gid: req.gid,
        };
        let child = crate::sys::unix::spawn(req, setup);
        drop(extra);
        child
    }

    /// Spawns a caller-built std command that joins this cgroup before exec.
    pub(crate) fn spawn_std(
        &self,
        cmd: &mut std::process::Command,
    ) -> io::Result<std::process::Child> {
        use std::os::unix::process::CommandExt as _;
        let mut fds: Vec<OwnedFd> = Vec::new();
        if let Some(v1) = &self.v1 {
            for p in v1.procs_files() {
                fds.push(open_write(&p)?);
            }
        }
        let mut raw = vec![self.procs_fd()?];
        raw.extend(fds.iter().map(|f| f.as_raw_fd()));
        let hook = move || -> io::Result<()> {
            for &fd in &raw {
                // SAFETY: `fd` is an open `cgroup.procs` file kept alive by the parent across the
                // spawn; write(2) is async-signal-safe and the buffer is static.
                if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        };
        // SAFETY: the hook only calls write(2) on inherited fds and does not allocate.
        unsafe {
            cmd.pre_exec(hook);
        }
        let child = cmd.spawn();
        drop(fds);
        child
    }

    /// Kills every process in the cgroup with one `cgroup.kill` write (Linux 5.14+); on older
    /// kernels, freezes the cgroup and SIGKILLs each member until it is empty.
    pub(crate) fn kill_all(&self) -> io::Result<()> {
        let r = match &self.kill {
            // Nothing to kill: keep the kernel's kill counter still (see `killed`). Nothing can
            // enter an empty cgroup except through our own spawns.
            Some(_) if self.populated() == Some(false) => Ok(()),
            Some(fd) => {
                self.killed.store(true, Ordering::Relaxed);
                // SAFETY: pwrite of one static byte to the `cgroup.kill` fd we own.
                if unsafe { libc::pwrite(fd.as_raw_fd(), b"1".as_ptr().cast(), 1, 0) } < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            }
            None => self.kill_each(),
        };
        if let Some(v1) = &self.v1 {
            // Members are the same processes; this also covers a pid only the v1 side saw.
            for pid in v1.members() {
                let _ = crate::sys::unix::kill_pid(pid as i32, libc::SIGKILL);
            }
        }
        r
    }

    fn kill_each(&self) -> io::Result<()> {
        let _ = write_file(&self.dir.join("cgroup.freeze"), b"1");
        for _ in 0..100 {
            let pids = self.members()?;
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                crate::sys::unix::kill_pid(pid as i32, libc::SIGKILL)?;
            }
        }
        Ok(())
    }

    /// Sends `sig` to every member; `Kill` takes the `cgroup.kill` path.
    pub(crate) fn signal(&self, sig: Signal) -> io::Result<()> {
        if sig == Signal::Kill {
            return self.kill_all();
        }
        let n = signal_number(sig);
        for pid in self.members()? {
            crate::sys::unix::kill_pid(pid as i32, n)?;
        }
        Ok(())
    }

    /// Freezes the whole subtree (`cgroup.freeze`) and waits until the kernel reports it frozen.
    pub(crate) fn freeze(&self) -> io::Result<()> {
        self.set_frozen(true)
    }

    /// Thaws the subtree.
    pub(crate) fn thaw(&self) -> io::Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, on: bool) -> io::Result<()> {
        let mut frozen = self.frozen.lock().unwrap_or_else(|e| e.into_inner());
        write_file(
            &self.dir.join("cgroup.freeze"),
            if on { b"1" } else { b"0" },
        )?;
        // The transition is asynchronous; wait (bounded) until `cgroup.events` agrees.
        let want = if on { "frozen 1" } else { "frozen 0" };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let ev = fs::read_to_string(self.dir.join("cgroup.events")).unwrap_or_default();
            if ev.lines().any(|l| l == want) || !ev.contains("populated 1") {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        *frozen = on;
        Ok(())
    }

    /// Every pid in the cgroup (the whole tree).
    pub(crate) fn members(&self) -> io::Result<Vec<u32>> {
        read_pids(&self.dir.join("cgroup.procs"))
    }

    /// Moves an existing process into this cgroup.
    pub(crate) fn adopt(&self, pid: u32) -> io::Result<()> {
        if !crate::sys::unix::pid_exists(pid as i32) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no process with pid {pid}"),
            ));
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))?;
        f.write_all(pid.to_string().as_bytes())?;
        if let Some(v1) = &self.v1 {
            v1.attach(pid)?;
        }
        Ok(())
    }

    /// CPU from `cpu.stat` (always present in v2), memory from the v1 companions or by summing
    /// members' `/proc/<pid>/status`, process counts from `cgroup.procs`.
    pub(crate) fn stats(&self) -> io::Result<GroupStats> {
        let members = self.members()?;
        let mut s = GroupStats {
            active_process_count: members.len() as u64,
            ..GroupStats::default()
        };
        if let Ok(text) = fs::read_to_string(self.dir.join("cpu.stat")) {
            for line in text.lines() {
                let mut it = line.split_whitespace();
                match (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) {
                    (Some("user_usec"), Some(v)) => {
                        s.cpu_user = Some(Duration::from_micros(v.saturating_sub(self.cpu_base.0)))
                    }
                    (Some("system_usec"), Some(v)) => {
                        s.cpu_system =
                            Some(Duration::from_micros(v.saturating_sub(self.cpu_base.1)))
                    }
                    _ => {}
                }
            }
        }
        if let Ok(v) = fs::read_to_string(self.dir.join("memory.current")) {
            s.current_memory_bytes = v.trim().parse().ok();
            s.peak_memory_bytes = fs::read_to_string(self.dir.join("memory.peak"))
                .ok()
                .and_then(|v| v.trim().parse().ok());
        } else if let Some(v1) = &self.v1 {
            s.current_memory_bytes = v1.memory_current();
            s.peak_memory_bytes = v1.memory_peak();
        } else {
            let mut rss = 0u64;
            for pid in &members {
                rss += proc_status_kib(*pid, "VmRSS:").unwrap_or(0) * 1024;
            }
            s.current_memory_bytes = Some(rss);
        }
        if let Ok(v) = fs::read_to_string(self.dir.join("pids.current")) {
            s.active_process_count = v.trim().parse().unwrap_or(s.active_process_count);
        }
        Ok(s)
    }

    /// Whether the v1 memory controller recorded an OOM kill in this group.
    pub(crate) fn oom_killed(&self) -> bool {
        if let Ok(ev) = fs::read_to_string(self.dir.join("memory.events")) {
            if ev
                .lines()
                .any(|l| l.starts_with("oom_kill ") && l.trim_end() != "oom_kill 0")
            {
                return true;
            }
        }
        self.v1.as_ref().is_some_and(|v| v.oom_killed())
    }

    /// Whether no process is left (`cgroup.events`: `populated 0`).
    pub(crate) fn is_empty(&self) -> io::Result<bool> {
        if let Some(p) = self.populated() {
            return Ok(!p);
        }
        let ev = fs::read_to_string(self.dir.join("cgroup.events"))?;
        Ok(ev.lines().any(|l| l == "populated 0"))
    }

    /// `populated` of `cgroup.events`, read through the kept fd (`None` if unreadable).
    fn populated(&self) -> Option<bool> {
        let fd = self.events.as_ref()?;
        let mut buf = [0u8; 128];
        // SAFETY: pread into a stack buffer of the given length from an fd we own; offset 0
        // makes the kernel render the file afresh.
        let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return None;
        }
        let text = &buf[..n as usize];
        if memchr::memmem::find(text, b"populated 1").is_some() {
            Some(true)
        } else if memchr::memmem::find(text, b"populated 0").is_some() {
            Some(false)
        } else {
            None
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = self.kill_all();
        let was_frozen = *self.frozen.lock().unwrap_or_else(|e| e.into_inner());
        if was_frozen {
            // A frozen task cannot die until thawed.
            let _ = write_file(&self.dir.join("cgroup.freeze"), b"0");
        }
        // Pooled when empty (the common case: the run's tree is already gone), else removed in
        // the background; either way no rmdir on the caller's path.
        let v1 = self.v1.take();
        super::pool::hand_over(super::pool::Spent {
            dir: std::mem::take(&mut self.dir),
            dirfd: self.dirfd.take(),
            kill: self.kill.take(),
            events: self.events.take(),
            recyclable: v1.is_none() && !was_frozen && !*self.killed.get_mut(),
            v1,
        });
    }
}

fn open_write(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    Ok(f.into())
}

fn open_read(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    Ok(f.into())
}

/// Opens a directory as an `O_PATH` handle (enough for `CLONE_INTO_CGROUP`).
fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)?;
    Ok(f.into())
}

pub(crate) fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(data)
}

pub(crate) fn read_pids(path: &Path) -> io::Result<Vec<u32>> {
    Ok(fs::read_to_string(path)?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// A `kB` field of `/proc/<pid>/status`.
pub(crate) fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
