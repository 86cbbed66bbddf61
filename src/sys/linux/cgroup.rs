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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
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
    /// `cgroup.procs`, kept open so the child can join with one `write` before exec (the
    /// std-based fallback spawn path).
    procs: OwnedFd,
    /// The directory itself (`O_PATH`), for `clone3(CLONE_INTO_CGROUP)`.
    dirfd: OwnedFd,
    /// v1 controller groups of a hybrid host (limits and accounting v2 lacks here).
    v1: Option<super::v1::V1Group>,
    frozen: Mutex<bool>,
}

impl Cgroup {
    /// Creates `pk-<pid>-<seq>` under the placement's parent.
    pub(crate) fn create(opts: &ContainerOptions) -> io::Result<Cgroup> {
        let place =
            placement().map_err(|r| io::Error::new(io::ErrorKind::Unsupported, r.to_owned()))?;
        let name = format!(
            "pk-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = place.parent.join(&name);
        fs::create_dir(&dir)?;
        let procs = match open_write(&dir.join("cgroup.procs")) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                return Err(e);
            }
        };
        let dirfd = match open_dir(&dir) {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_dir(&dir);
                return Err(e);
            }
        };
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
            procs,
            dirfd,
            v1,
            frozen: Mutex::new(false),
        })
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
        // The clone3 path: the child is born in the cgroup and joins the v1 companions with a
        // write before exec.
        let join = super::spawn::Join {
            cgroup_dir: Some(self.dirfd.as_raw_fd()),
            v1_procs: &v1_raw,
            new_pgroup: false,
        };
        if let Ok(r) = super::spawn::spawn(&req, &join) {
            drop(extra);
            return r;
        }
        let mut join_fds = vec![self.procs.as_raw_fd()];
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
        let mut raw = vec![self.procs.as_raw_fd()];
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
        let r = match write_file(&self.dir.join("cgroup.kill"), b"1") {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.kill_each(),
            Err(e) => Err(e),
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
                    (Some("user_usec"), Some(v)) => s.cpu_user = Some(Duration::from_micros(v)),
                    (Some("system_usec"), Some(v)) => s.cpu_system = Some(Duration::from_micros(v)),
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
        let ev = fs::read_to_string(self.dir.join("cgroup.events"))?;
        Ok(ev.lines().any(|l| l == "populated 0"))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = self.kill_all();
        if *self.frozen.lock().unwrap_or_else(|e| e.into_inner()) {
            // A frozen task cannot die until thawed.
            let _ = write_file(&self.dir.join("cgroup.freeze"), b"0");
        }
        let v1 = self.v1.take();
        // Fast path: often the tree is already gone.
        if fs::remove_dir(&self.dir).is_ok() && v1.is_none() {
            return;
        }
        remover().send(Removal {
            dir: self.dir.clone(),
            v1,
        });
    }
}

/// A cgroup waiting to drain so it can be removed.
struct Removal {
    dir: PathBuf,
    v1: Option<super::v1::V1Group>,
}

/// One background thread removes cgroups whose processes are still dying, so `Drop` never blocks
/// a tokio worker.
struct Remover {
    tx: Mutex<mpsc::Sender<Removal>>,
}

impl Remover {
    fn send(&self, r: Removal) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(mpsc::SendError(r)) = tx.send(r) {
            remove_blocking(r);
        }
    }
}

fn remover() -> &'static Remover {
    static R: OnceLock<Remover> = OnceLock::new();
    R.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Removal>();
        let _ = std::thread::Builder::new()
            .name("processkit-cgroup-remover".into())
            .spawn(move || {
                for r in rx {
                    remove_blocking(r);
                }
            });
        Remover { tx: Mutex::new(tx) }
    })
}

fn remove_blocking(r: Removal) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut step = Duration::from_micros(200);
    loop {
        match fs::remove_dir(&r.dir) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(_) if Instant::now() < deadline => {
                let _ = write_file(&r.dir.join("cgroup.kill"), b"1");
                std::thread::sleep(step);
                step = (step * 2).min(Duration::from_millis(20));
            }
            Err(_) => break,
        }
    }
    drop(r.v1);
}

fn open_write(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = fs::OpenOptions::new()
        .write(true)
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
