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
use super::{limits, procfs};
use crate::sys::unix::{signal_number, ChildSetup};
use crate::sys::{ContainerOptions, CreateError, SpawnRequest};
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

/// Whether a group with these options is plain: no limit and no accounting, so its cgroup
/// has no controller settings, no v1 companions and nothing to reset (see [`super::pool`]).
fn plain(opts: &ContainerOptions) -> bool {
    !opts.has_limits() && !opts.accounting
}

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

/// Every directory under which this owner's `pk-<pid>-*` cgroups can live (v2 parent and the
/// v1 controller directories of a hybrid host), for the parent-death guardian.
pub(crate) fn guarded_parents() -> Vec<PathBuf> {
    let Ok(place) = placement() else {
        return Vec::new();
    };
    let mut v = vec![place.parent.clone()];
    for dir in place.layout.v1.values() {
        if !v.contains(dir) {
            v.push(dir.clone());
        }
    }
    v
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
    /// Whether the v2 memory controller is enabled for this cgroup by us (a memory limit):
    /// then `memory.events` counts its OOM kills.
    memory_v2: bool,
    /// No limits and no accounting were asked for (and so no v1 companions, no v2 controller
    /// files): only such a cgroup may come from, or go back to, the pool.
    plain: bool,
    frozen: Mutex<bool>,
    /// `cpu.stat` user/system microseconds when this group got the cgroup (non-zero for a
    /// reused one, see [`super::pool`]); subtracted in [`Cgroup::stats`].
    cpu_base: (u64, u64),
}

impl Cgroup {
    /// Creates `pk-<pid>-<seq>` and applies the limits of `opts`.
    ///
    /// Each limit goes to the v2 controller when our v2 cgroup offers it (enabling it in the
    /// parent, see [`super::limits`]), else to the v1 controller of a hybrid host. With
    /// `opts.accounting` and no v2 `memory` controller, a v1 `memory` group is added (best
    /// effort) so memory use and its peak are measured by the kernel.
    ///
    /// A plain group (no limits, no accounting: see [`plain`]) reuses a pooled empty cgroup
    /// when there is one (see [`super::pool`]).
    ///
    /// # Errors
    /// [`CreateError::Limit`] naming the first limit that cannot be enforced;
    /// [`CreateError::Io`] when no cgroup can be created at all.
    pub(crate) fn create(opts: &ContainerOptions) -> Result<Cgroup, CreateError> {
        let plain = plain(opts);
        if plain {
            if let Some(s) = super::pool::take() {
                return Ok(Cgroup {
                    dir: s.dir,
                    dirfd: Some(s.dirfd),
                    kill: s.kill,
                    events: s.events,
                    killed: AtomicBool::new(false),
                    procs: OnceLock::new(),
                    v1: None,
                    memory_v2: false,
                    plain: true,
                    frozen: Mutex::new(false),
                    cpu_base: s.cpu_base,
                });
            }
        }
        let place = placement().map_err(|r| {
            CreateError::Io(io::Error::new(io::ErrorKind::Unsupported, r.to_owned()))
        })?;
        let wanted = limits::wanted(opts);
        // Reading `cgroup.controllers` costs a syscall or two: only when it can matter.
        let v2_offers = if wanted.is_empty() && !opts.accounting {
            Vec::new()
        } else {
            limits::v2_available(&place.layout)
        };
        let (v2_limits, v1_limits) = limits::split(&wanted, &v2_offers);
        for w in &v1_limits {
            if !place.layout.v1.contains_key(w.controller) {
                return Err(CreateError::Limit {
                    what: w.limit,
                    reason: format!(
                        "the `{}` controller is neither offered by our cgroup v2 ({}) nor mounted \
                         as a cgroup v1 hierarchy; run as root, in a container, or under a \
                         systemd unit with Delegate=yes",
                        w.controller,
                        place.layout.v2_own_dir.as_deref().map_or_else(
                            || "no v2 hierarchy".to_owned(),
                            |d| d.display().to_string()
                        ),
                    ),
                });
            }
        }
        let parent = if v2_limits.is_empty() {
            place.parent.clone()
        } else {
            static ENABLE: Mutex<()> = Mutex::new(());
            let _serial = ENABLE.lock().unwrap_or_else(|e| e.into_inner());
            let controllers: Vec<&str> = v2_limits.iter().map(|w| w.controller).collect();
            limits::prepare_v2_parent(
                &place.layout,
                &controllers,
                opts.allow_self_move,
                &layout::SystemProbe,
            )
            .map_err(|reason| CreateError::Limit {
                what: v2_limits[0].limit,
                reason,
            })?
        };

        let name = format!(
            "pk-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = parent.join(&name);
        fs::create_dir(&dir)?;
        // From here on, failures remove the directory again.
        let cleanup = |e: CreateError| {
            let _ = fs::remove_dir(&dir);
            e
        };
        let dirfd = open_dir(&dir).map_err(|e| cleanup(e.into()))?;
        // Absent before Linux 5.14: `kill_all` then kills member by member.
        let kill = open_write(&dir.join("cgroup.kill")).ok();
        let events = open_read(&dir.join("cgroup.events")).ok();
        limits::write_v2_limits(&dir, opts, &v2_limits)
            .map_err(|(what, reason)| cleanup(CreateError::Limit { what, reason }))?;
        let account_memory = opts.accounting && !v2_offers.iter().any(|c| c == "memory");
        let v1 = if !v1_limits.is_empty() || account_memory {
            let has = |c: &str| v1_limits.iter().any(|w| w.controller == c);
            let want = super::v1::V1Want {
                memory_max: opts.memory_max.filter(|_| has("memory")),
                max_processes: opts.max_processes.filter(|_| has("pids")),
                cpu_quota: opts.cpu_quota.filter(|_| has("cpu")),
                stats: false,
                account_memory,
            };
            match super::v1::V1Group::create(&place.layout, &name, &want) {
                Ok(g) if g.dirs().is_empty() => None,
                Ok(g) => Some(g),
                Err(e) => {
                    return Err(cleanup(match v1_limits.first() {
                        Some(w) => CreateError::Limit {
                            what: w.limit,
                            reason: e.to_string(),
                        },
                        None => CreateError::Io(e),
                    }))
                }
            }
        } else {
            None
        };
        let memory_v2 = v2_limits.iter().any(|w| w.controller == "memory");
        Ok(Cgroup {
            dir,
            dirfd: Some(dirfd),
            kill,
            events,
            killed: AtomicBool::new(false),
            procs: OnceLock::new(),
            v1,
            memory_v2,
            plain,
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
        match write_file(
            &self.dir.join("cgroup.freeze"),
            if on { b"1" } else { b"0" },
        ) {
            Ok(()) => {}
            // Kernels before 5.2 have no v2 freezer: stop/continue each member instead.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let sig = if on { libc::SIGSTOP } else { libc::SIGCONT };
                for pid in self.members()? {
                    crate::sys::unix::kill_pid(pid as i32, sig)?;
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        }
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
        let raw = i32::try_from(pid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        crate::sys::unix::check_signalable(raw)?;
        if procfs::is_zombie(pid) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("process {pid} has already exited (a zombie waiting to be reaped)"),
            ));
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))?;
        f.write_all(pid.to_string().as_bytes())
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ESRCH) => io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("process {pid} exited before it could be adopted"),
                ),
                _ => e,
            })?;
        if let Some(v1) = &self.v1 {
            v1.attach(pid)?;
        }
        Ok(())
    }

    /// Resource use of the whole tree.
    ///
    /// * CPU: `cpu.stat` (`user_usec`, `system_usec`), kept by every v2 cgroup whether or not
    ///   the `cpu` controller is enabled; else the v1 `cpuacct` group; else the sum of the live
    ///   members' `/proc/<pid>/stat` (exited members are then missing).
    /// * Memory: `memory.current` / `memory.peak` when the v2 `memory` controller is enabled
    ///   here; else the v1 `memory` group (`memory.usage_in_bytes` /
    ///   `memory.max_usage_in_bytes`); else the sum of the members' `VmRSS`, with the largest
    ///   member `VmHWM` (or the sum, if larger) as the peak.
    /// * Processes: the pids in `cgroup.procs` (threads are not counted).
    pub(crate) fn stats(&self) -> io::Result<GroupStats> {
        let members = self.members()?;
        let mut s = GroupStats {
            active_process_count: members.len() as u64,
            ..GroupStats::default()
        };
        let mut procfs_sum = None;
        let mut sum = || *procfs_sum.get_or_insert_with(|| procfs::sum_usage(&members));
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
        if s.cpu_user.is_none() || s.cpu_system.is_none() {
            if let Some((user, system)) = self.v1.as_ref().and_then(|v| v.cpu_usage()) {
                s.cpu_user = Some(user);
                s.cpu_system = Some(system);
            } else {
                let u = sum();
                s.cpu_user = Some(u.cpu_user);
                s.cpu_system = Some(u.cpu_system);
            }
        }
        if let Some(cur) = read_u64(&self.dir.join("memory.current")) {
            s.current_memory_bytes = Some(cur);
            s.peak_memory_bytes = read_u64(&self.dir.join("memory.peak"));
        } else if let Some(cur) = self.v1.as_ref().and_then(|v| v.memory_current()) {
            s.current_memory_bytes = Some(cur);
            s.peak_memory_bytes = self.v1.as_ref().and_then(|v| v.memory_peak());
        } else {
            let u = sum();
            s.current_memory_bytes = Some(u.rss_bytes);
            s.peak_memory_bytes = Some(u.peak_rss_bytes);
        }
        Ok(s)
    }

    /// OOM kills recorded so far: `oom_kill` of `memory.events` (v2 memory controller) plus
    /// that of the v1 memory group. `None` when neither exists.
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        let v2 = if self.memory_v2 {
            fs::read_to_string(self.dir.join("memory.events"))
                .ok()
                .and_then(|ev| {
                    ev.lines().find_map(|l| {
                        l.strip_prefix("oom_kill ")
                            .and_then(|n| n.trim().parse::<u64>().ok())
                    })
                })
        } else {
            None
        };
        let v1 = self.v1.as_ref().and_then(|v| v.oom_kill_count());
        match (v2, v1) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        }
    }

    /// Whether the kernel OOM-killed a process in this cgroup (the v2 `memory.events` counter,
    /// or the v1 memory group's, with its `failcnt` hint on kernels before 4.13).
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
            recyclable: self.plain
                && !self.memory_v2
                && v1.is_none()
                && !was_frozen
                && !*self.killed.get_mut(),
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

/// A control file holding one integer.
fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}
