//! cgroup v1 controllers on hybrid hosts: resource limits and accounting when the v2
//! hierarchy lacks the controllers (`memory`, `pids`, `cpu`, `cpuacct`).
//!
//! A [`V1Group`] is one cgroup named `<name>` per needed controller, created inside our own v1
//! cgroup for that controller (co-mounted controllers such as `cpu,cpuacct` share one
//! directory). v1 has no `cgroup.kill`: teardown reads `cgroup.procs`, sends `SIGKILL` to each
//! pid and retries `rmdir` while the kernel reports `EBUSY`. Reading a pid and signalling it is
//! not atomic, so a pid that exits and is reused in between could be hit; the window is tiny,
//! and callers that also hold a v2 cgroup or process group should kill through that first.
//!
//! Only directories this module created are ever removed or signalled through.

// Some accessors (stats, `dirs`, `remove`) are not used by every build of the crate yet.
#![allow(dead_code)]

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::layout::CgroupLayout;

/// How long teardown keeps retrying `rmdir` while the cgroup is still busy.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between teardown attempts.
const REMOVE_STEP: Duration = Duration::from_millis(10);

/// What a [`V1Group`] must provide.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct V1Want {
    /// Memory limit in bytes (`memory.limit_in_bytes`, and `memory.memsw.limit_in_bytes` when
    /// swap accounting exists, so the limit cannot be escaped through swap). Requires `memory`.
    pub memory_max: Option<u64>,
    /// Maximum number of tasks (`pids.max`). Requires `pids`.
    pub max_processes: Option<u64>,
    /// CPU time as a fraction of one core (`cpu.cfs_quota_us` over `cpu.cfs_period_us`, as
    /// [`cpu_quota_period`](super::limits::cpu_quota_period) picks them). Must be finite and
    /// positive. Requires `cpu`.
    pub cpu_quota: Option<f64>,
    /// Also create `memory`, `pids` and `cpuacct` groups just for accounting. These are best
    /// effort: a controller that is not mounted, or a group that cannot be created, is skipped
    /// and its statistic reads as `None`.
    pub stats: bool,
    /// Create just the `memory` group for accounting (best effort, like `stats`): the cheap
    /// choice when CPU time and process counts already come from the v2 cgroup.
    pub account_memory: bool,
}

/// A set of v1 cgroups (one per controller) holding a container's processes.
///
/// Dropping it kills every member and removes the directories ([`V1Group::kill_and_remove`]).
#[derive(Debug)]
pub(crate) struct V1Group {
    /// `(controller, directory)` for every controller the group covers; co-mounted
    /// controllers repeat the same directory. Every directory here was created by us.
    dirs: Vec<(String, PathBuf)>,
    /// Set once every directory is gone, so later calls (and `Drop`) touch nothing.
    removed: AtomicBool,
}

/// Adds the controller and path to an I/O error, keeping its kind.
fn context(e: io::Error, controller: &str, what: &str, path: &Path) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "cgroup v1 {controller}: cannot {what} {}: {e}",
            path.display()
        ),
    )
}

/// Writes `value` into an existing control file (never creates it).
fn write_control(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

/// Reads a control file holding one integer.
fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Reads `key value` lines (`cpuacct.stat`, `memory.oom_control`) and returns `key`'s value.
fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

/// Converts `USER_HZ` ticks into a duration.
fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u128 } else { 100 };
    let nanos = u128::from(ticks) * 1_000_000_000 / hz;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

impl V1Group {
    /// Creates the group `name` (a single path component) in our own v1 cgroup of each needed
    /// controller and applies the limits in `want`.
    ///
    /// A limit whose controller is not mounted (or whose cgroup is not visible) fails with
    /// [`io::ErrorKind::Unsupported`]; a failed `mkdir` or write keeps the OS error's kind.
    /// Either way the message names the controller and path, and everything created so far is
    /// removed. An existing directory of the same name is never adopted (`AlreadyExists`).
    pub(crate) fn create(layout: &CgroupLayout, name: &str, want: &V1Want) -> io::Result<V1Group> {
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('\0')
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid cgroup name {name:?}: must be one path component"),
            ));
        }
        if let Some(q) = want.cpu_quota {
            if !(q.is_finite() && q > 0.0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid CPU quota {q}: must be a positive fraction of a core"),
                ));
            }
        }
        // (controller, required)
        let mut needed: Vec<(&str, bool)> = Vec::new();
        if want.memory_max.is_some() || want.stats || want.account_memory {
            needed.push(("memory", want.memory_max.is_some()));
        }
        if want.max_processes.is_some() || want.stats {
            needed.push(("pids", want.max_processes.is_some()));
        }
        if want.cpu_quota.is_some() {
            needed.push(("cpu", true));
        }
        if want.stats {
            needed.push(("cpuacct", false));
        }

        // From here on, dropping `group` removes whatever was created.
        let mut group = V1Group {
            dirs: Vec::new(),
            removed: AtomicBool::new(false),
        };
        for (controller, required) in needed {
            let Some(parent) = layout.v1.get(controller) else {
                if required {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "cgroup v1 {controller}: controller is not mounted, or our cgroup for \
                             it is not visible"
                        ),
                    ));
                }
                continue;
            };
            let dir = parent.join(name);
            if group.dirs.iter().any(|(_, d)| *d == dir) {
                // Co-mounted with a controller we already created the directory for.
                group.dirs.push((controller.to_string(), dir));
                continue;
            }
            match fs::create_dir(&dir) {
                Ok(()) => group.dirs.push((controller.to_string(), dir)),
                Err(_) if !required => {}
                Err(e) => return Err(context(e, controller, "create", &dir)),
            }
        }

        if let (Some(bytes), Some(dir)) = (want.memory_max, group.dir("memory")) {
            let file = dir.join("memory.limit_in_bytes");
            write_control(&file, &bytes.to_string())
                .map_err(|e| context(e, "memory", "write", &file))?;
            // Best effort: only when swap accounting is compiled in and enabled; must come after
            // the plain limit (memsw may not be below it).
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                let _ = write_control(&memsw, &bytes.to_string());
            }
        }
        if let (Some(n), Some(dir)) = (want.max_processes, group.dir("pids")) {
            let file = dir.join("pids.max");
            write_control(&file, &n.to_string()).map_err(|e| context(e, "pids", "write", &file))?;
        }
        if let (Some(q), Some(dir)) = (want.cpu_quota, group.dir("cpu")) {
            let (quota_us, period_us) = super::limits::cpu_quota_period(q);
            let period = dir.join("cpu.cfs_period_us");
            write_control(&period, &period_us.to_string())
                .map_err(|e| context(e, "cpu", "write", &period))?;
            let quota = dir.join("cpu.cfs_quota_us");
            write_control(&quota, &quota_us.to_string())
                .map_err(|e| context(e, "cpu", "write", &quota))?;
        }
        Ok(group)
    }

    /// The `(controller, directory)` pairs of this group (co-mounted controllers share a
    /// directory).
    pub(crate) fn dirs(&self) -> &[(String, PathBuf)] {
        &self.dirs
    }

    /// The group's directory for `controller`, if the group covers it.
    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| c == controller)
            .map(|(_, d)| d.as_path())
    }

    /// Each distinct directory once.
    fn unique_dirs(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        for (_, d) in &self.dirs {
            if !out.contains(&d.as_path()) {
                out.push(d);
            }
        }
        out
    }

    /// The `cgroup.procs` files a child must join, one per distinct directory. The spawn code
    /// opens them (write-only) before forking and writes `"0"` to each in the child, which
    /// moves the calling process.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.unique_dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// Moves process `pid` (all its threads) into every cgroup of the group.
    pub(crate) fn attach(&self, pid: u32) -> io::Result<()> {
        for (controller, dir) in &self.dirs {
            let file = dir.join("cgroup.procs");
            write_control(&file, &pid.to_string())
                .map_err(|e| context(e, controller, "write", &file))?;
        }
        Ok(())
    }

    /// Current memory use in bytes, page cache included (`memory.usage_in_bytes`).
    pub(crate) fn memory_current(&self) -> Option<u64> {
        read_u64(&self.dir("memory")?.join("memory.usage_in_bytes"))
    }

    /// Highest memory use seen, in bytes (`memory.max_usage_in_bytes`).
    pub(crate) fn memory_peak(&self) -> Option<u64> {
        read_u64(&self.dir("memory")?.join("memory.max_usage_in_bytes"))
    }

    /// CPU time used by the group as `(user, system)`, from `cpuacct.stat` (`USER_HZ` ticks,
    /// so 10 ms resolution on most systems). If that file cannot be read, the total from
    /// `cpuacct.usage` (nanoseconds) is reported as user time with zero system time.
    pub(crate) fn cpu_usage(&self) -> Option<(Duration, Duration)> {
        let dir = self.dir("cpuacct")?;
        let stat = dir.join("cpuacct.stat");
        if let (Some(user), Some(system)) = (read_keyed(&stat, "user"), read_keyed(&stat, "system"))
        {
            return Some((ticks_to_duration(user), ticks_to_duration(system)));
        }
        let total = read_u64(&dir.join("cpuacct.usage"))?;
        Some((Duration::from_nanos(total), Duration::ZERO))
    }

    /// Number of tasks (threads) in the group (`pids.current`).
    pub(crate) fn pids_current(&self) -> Option<u64> {
        read_u64(&self.dir("pids")?.join("pids.current"))
    }

    /// Whether the kernel OOM killer killed a process of the group: `oom_kill N` in
    /// `memory.oom_control` (kernels 4.13+). On older kernels, where that line is missing,
    /// `memory.failcnt > 0` is used as a weaker hint: it counts every time usage hit the limit,
    /// which reclaim can often resolve without killing anything.
    pub(crate) fn oom_killed(&self) -> bool {
        let Some(dir) = self.dir("memory") else {
            return false;
        };
        match read_keyed(&dir.join("memory.oom_control"), "oom_kill") {
            Some(n) => n > 0,
            None => read_u64(&dir.join("memory.failcnt")).is_some_and(|n| n > 0),
        }
    }

    /// How many processes the OOM killer killed in the group (`oom_kill N` in
    /// `memory.oom_control`, kernels 4.13+); `None` without a memory group or that line.
    pub(crate) fn oom_kill_count(&self) -> Option<u64> {
        read_keyed(&self.dir("memory")?.join("memory.oom_control"), "oom_kill")
    }

    /// The pids in any of the group's `cgroup.procs` files, sorted, without duplicates.
    pub(crate) fn members(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = Vec::new();
        for file in self.procs_files() {
            if let Ok(text) = fs::read_to_string(&file) {
                pids.extend(
                    text.split_whitespace()
                        .filter_map(|w| w.parse::<u32>().ok()),
                );
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Sends `SIGKILL` to every member (never to ourselves); returns how many were signalled.
    pub(crate) fn kill(&self) -> usize {
        let me = std::process::id();
        let mut n = 0;
        for pid in self.members() {
            if pid == me || pid == 0 {
                continue;
            }
            let Ok(pid) = libc::pid_t::try_from(pid) else {
                continue;
            };
            // SAFETY: kill has no memory effects; `pid` is a positive pid read from our own
            // cgroup's member list.
            if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                n += 1;
            }
        }
        n
    }

    /// Removes the group's directories without signalling anyone, retrying for up to ~2 s
    /// while the kernel reports `EBUSY` (members still exiting). A directory that is already
    /// gone counts as removed. The error names the controller and path left behind.
    pub(crate) fn remove(&self) -> io::Result<()> {
        self.teardown(false)
    }

    /// Kills every member and removes the directories, re-killing between `rmdir` retries (so
    /// processes forked meanwhile die too) for up to ~2 s. Never panics; failures are ignored
    /// (use [`V1Group::kill`] and [`V1Group::remove`] to see them). Called by `Drop`.
    pub(crate) fn kill_and_remove(&self) {
        let _ = self.teardown(true);
    }

    /// The shared retry loop of [`V1Group::remove`] and [`V1Group::kill_and_remove`].
    fn teardown(&self, kill: bool) -> io::Result<()> {
        if self.removed.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut left: Vec<&Path> = self.unique_dirs();
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        loop {
            if kill {
                self.kill();
            }
            let mut hard_error = None;
            let mut busy = None;
            left.retain(|dir| match fs::remove_dir(dir) {
                Ok(()) => false,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => {
                    if e.raw_os_error() == Some(libc::EBUSY) {
                        busy.get_or_insert((e, dir.to_path_buf()));
                    } else {
                        hard_error.get_or_insert((e, dir.to_path_buf()));
                    }
                    true
                }
            });
            if left.is_empty() {
                self.removed.store(true, Ordering::Release);
                return Ok(());
            }
            if let Some((e, dir)) = hard_error.or(if Instant::now() >= deadline {
                busy
            } else {
                None
            }) {
                let controller = self
                    .dirs
                    .iter()
                    .find(|(_, d)| *d == dir)
                    .map_or("?", |(c, _)| c.as_str());
                return Err(context(e, controller, "remove", &dir));
            }
            std::thread::sleep(REMOVE_STEP);
        }
    }
}

impl Drop for V1Group {
    fn drop(&mut self) {
        self.kill_and_remove();
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::{discover_current, AccessProbe, SystemProbe};
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::AtomicU32;

    /// A unique, recognisable group name per test.
    fn unique_name() -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "pk-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Cleans up even when an assertion fails: kills and reaps the child, then drops the group
    /// (whose `Drop` kills members and removes the directories).
    struct Guard {
        children: Vec<Child>,
        group: Option<V1Group>,
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            for mut c in self.children.drain(..) {
                let _ = c.kill();
                let _ = c.wait();
            }
            drop(self.group.take());
        }
    }

    /// The real layout if all `controllers` are mounted with a writable own cgroup, else a
    /// printed note and `None`.
    fn real_layout(controllers: &[&str]) -> Option<CgroupLayout> {
        let layout = match discover_current() {
            Ok(l) => l,
            Err(e) => {
                println!("skipped: cannot read cgroup layout: {e}");
                return None;
            }
        };
        for c in controllers {
            match layout.v1.get(*c) {
                Some(dir) if SystemProbe.writable(dir) => {}
                Some(dir) => {
                    println!("skipped: v1 {c} cgroup {} is not writable", dir.display());
                    return None;
                }
                None => {
                    println!("skipped: v1 controller {c} is not mounted");
                    return None;
                }
            }
        }
        Some(layout)
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap().trim().to_string()
    }

    #[test]
    fn real_limits_attach_kill_remove() {
        let Some(layout) = real_layout(&["memory", "pids", "cpu"]) else {
            return;
        };
        let want = V1Want {
            memory_max: Some(64 << 20),
            max_processes: Some(16),
            cpu_quota: Some(0.5),
            stats: true,
            account_memory: false,
        };
        let mut guard = Guard {
            children: Vec::new(),
            group: None,
        };
        let group = guard
            .group
            .insert(V1Group::create(&layout, &unique_name(), &want).unwrap());

        let mem = group.dir("memory").unwrap().to_path_buf();
        assert_eq!(
            read(&mem.join("memory.limit_in_bytes")),
            (64u64 << 20).to_string()
        );
        if mem.join("memory.memsw.limit_in_bytes").exists() {
            // Best effort; when it took, it equals the limit.
            let memsw = read(&mem.join("memory.memsw.limit_in_bytes"));
            println!("memsw limit: {memsw}");
        }
        assert_eq!(read(&group.dir("pids").unwrap().join("pids.max")), "16");
        let cpu = group.dir("cpu").unwrap().to_path_buf();
        assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
        let dirs: Vec<PathBuf> = group
            .unique_dirs()
            .iter()
            .map(|d| d.to_path_buf())
            .collect();
        assert_eq!(group.procs_files().len(), dirs.len());
        assert!(group.members().is_empty());
        assert_eq!(group.pids_current(), Some(0));

        let child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        guard.children.push(child);
        let group = guard.group.as_ref().unwrap();
        group.attach(pid).unwrap();
        assert_eq!(group.members(), vec![pid]);
        assert_eq!(group.pids_current(), Some(1));
        assert!(group.memory_current().is_some());
        assert!(group.memory_peak().is_some());
        if layout.v1.contains_key("cpuacct") {
            assert!(group.cpu_usage().is_some());
        }
        assert!(!group.oom_killed());

        group.kill_and_remove();
        for d in &dirs {
            assert!(!d.exists(), "{} still exists", d.display());
        }
        let status = guard.children[0].wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        // Idempotent, and touches nothing once removed.
        guard.group.as_ref().unwrap().remove().unwrap();
    }

    #[test]
    fn real_oom_kill_is_reported() {
        let Some(layout) = real_layout(&["memory"]) else {
            return;
        };
        let want = V1Want {
            memory_max: Some(16 << 20),
            ..V1Want::default()
        };
        let mut guard = Guard {
            children: Vec::new(),
            group: None,
        };
        let group = guard
            .group
            .insert(V1Group::create(&layout, &unique_name(), &want).unwrap());
        let procs = group.procs_files();
        // `yes | tail -c 256M`: tail buffers the endless pipe and grows until killed. Only tail
        // joins the group.
        let mut yes = Command::new("yes")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = yes.stdout.take().unwrap();
        guard.children.push(yes);
        let tail = Command::new("tail")
            .args(["-c", "256M"])
            .stdin(pipe)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = tail.id();
        guard.children.push(tail);
        for f in &procs {
            write_control(f, &pid.to_string()).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = guard.children[1].try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "not OOM-killed in time");
            std::thread::sleep(Duration::from_millis(20));
        };
        let group = guard.group.as_ref().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(group.oom_killed());
        assert!(group.memory_peak().unwrap() > 8 << 20);
        group.remove().unwrap();
    }

    #[test]
    fn real_stats_only_group() {
        let Some(layout) = real_layout(&[]) else {
            return;
        };
        let want = V1Want {
            stats: true,
            ..V1Want::default()
        };
        let group = V1Group::create(&layout, &unique_name(), &want).unwrap();
        let covered: Vec<&str> = group.dirs().iter().map(|(c, _)| c.as_str()).collect();
        for c in ["memory", "pids", "cpuacct"] {
            let expect = layout.v1.get(c).is_some_and(|d| SystemProbe.writable(d));
            assert_eq!(covered.contains(&c), expect, "{c}: {covered:?}");
        }
        assert!(!covered.contains(&"cpu") || layout.v1.get("cpu") == layout.v1.get("cpuacct"));
        let dirs: Vec<PathBuf> = group.dirs().iter().map(|(_, d)| d.clone()).collect();
        drop(group);
        for d in dirs {
            assert!(!d.exists(), "{}", d.display());
        }
    }

    /// A fake layout whose controllers point at plain directories.
    fn fake_layout(root: &Path, controllers: &[(&str, &str)]) -> CgroupLayout {
        let mut v1 = BTreeMap::new();
        for (c, sub) in controllers {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).unwrap();
            v1.insert(c.to_string(), dir);
        }
        CgroupLayout {
            v2_mount: None,
            v2_own_dir: None,
            v1,
        }
    }

    #[test]
    fn missing_required_controller_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = fake_layout(tmp.path(), &[("memory", "memory")]);
        let want = V1Want {
            memory_max: Some(1 << 20),
            max_processes: Some(4),
            ..V1Want::default()
        };
        let err = V1Group::create(&layout, "pk-x", &want).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        assert!(err.to_string().contains("pids"), "{err}");
        // Nothing left behind (the memory dir would not be a cgroup, so the write failed or
        // the pids check failed first; either way it is gone).
        assert!(!tmp.path().join("memory/pk-x").exists());
    }

    #[test]
    fn failed_write_removes_created_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        // Plain directories: mkdir works, but there are no control files to write.
        let layout = fake_layout(
            tmp.path(),
            &[
                ("memory", "memory"),
                ("pids", "pids"),
                ("cpuacct", "cpuacct"),
            ],
        );
        let want = V1Want {
            memory_max: Some(1 << 20),
            stats: true,
            ..V1Want::default()
        };
        let err = V1Group::create(&layout, "pk-y", &want).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            msg.contains("memory") && msg.contains("memory.limit_in_bytes"),
            "{msg}"
        );
        for sub in ["memory/pk-y", "pids/pk-y", "cpuacct/pk-y"] {
            assert!(!tmp.path().join(sub).exists(), "{sub}");
        }
    }

    #[test]
    fn existing_dir_is_not_adopted_or_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = fake_layout(tmp.path(), &[("pids", "pids"), ("memory", "memory")]);
        fs::create_dir(tmp.path().join("pids/pk-z")).unwrap();
        let want = V1Want {
            max_processes: Some(3),
            memory_max: Some(1 << 20),
            ..V1Want::default()
        };
        let err = V1Group::create(&layout, "pk-z", &want).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(
            tmp.path().join("pids/pk-z").exists(),
            "someone else's dir must stay"
        );
        assert!(!tmp.path().join("memory/pk-z").exists());
        // Optional stats groups skip an existing name instead of adopting it.
        let group = V1Group::create(
            &layout,
            "pk-z",
            &V1Want {
                stats: true,
                ..V1Want::default()
            },
        )
        .unwrap();
        assert_eq!(group.dirs().len(), 1);
        assert_eq!(group.dirs()[0].0, "memory");
        drop(group);
        assert!(tmp.path().join("pids/pk-z").exists());
        assert!(!tmp.path().join("memory/pk-z").exists());
    }

    #[test]
    fn co_mounted_controllers_share_one_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = fake_layout(
            tmp.path(),
            &[("cpu", "cpu,cpuacct"), ("cpuacct", "cpu,cpuacct")],
        );
        let group = V1Group::create(
            &layout,
            "pk-w",
            &V1Want {
                stats: true,
                ..V1Want::default()
            },
        )
        .unwrap();
        assert_eq!(group.dirs().len(), 1);
        assert_eq!(
            group.procs_files(),
            vec![tmp.path().join("cpu,cpuacct/pk-w/cgroup.procs")]
        );
        // Fake accounting files.
        let dir = tmp.path().join("cpu,cpuacct/pk-w");
        fs::write(dir.join("cpuacct.usage"), "1500000000\n").unwrap();
        assert_eq!(
            group.cpu_usage(),
            Some((Duration::from_millis(1500), Duration::ZERO))
        );
        fs::write(dir.join("cpuacct.stat"), "user 250\nsystem 30\n").unwrap();
        let (user, system) = group.cpu_usage().unwrap();
        // SAFETY: sysconf only reads a configuration value.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        assert_eq!(user, Duration::from_nanos(250 * 1_000_000_000 / hz));
        assert_eq!(system, Duration::from_nanos(30 * 1_000_000_000 / hz));
        fs::write(dir.join("cgroup.procs"), "12\n7\n12\n").unwrap();
        assert_eq!(group.members(), vec![7, 12]);
        assert_eq!(group.memory_current(), None);
        assert!(!group.oom_killed());
        // Plain dirs with files cannot be rmdir'ed: a hard (non-EBUSY) error, reported at once.
        let err = group.remove().unwrap_err();
        assert!(err.to_string().contains("pk-w"), "{err}");
        for f in ["cpuacct.usage", "cpuacct.stat", "cgroup.procs"] {
            fs::remove_file(dir.join(f)).unwrap();
        }
        group.remove().unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn oom_hint_falls_back_to_failcnt() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = fake_layout(tmp.path(), &[("memory", "m")]);
        let group = V1Group::create(
            &layout,
            "pk-o",
            &V1Want {
                stats: true,
                ..V1Want::default()
            },
        )
        .unwrap();
        let dir = tmp.path().join("m/pk-o");
        fs::write(
            dir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\n",
        )
        .unwrap();
        fs::write(dir.join("memory.failcnt"), "3\n").unwrap();
        assert!(group.oom_killed());
        fs::write(
            dir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        )
        .unwrap();
        assert!(!group.oom_killed());
        fs::write(
            dir.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        assert!(group.oom_killed());
        for f in ["memory.oom_control", "memory.failcnt"] {
            fs::remove_file(dir.join(f)).unwrap();
        }
    }

    #[test]
    fn rejects_bad_input() {
        let layout = CgroupLayout::default();
        for name in ["", ".", "..", "a/b"] {
            let err = V1Group::create(&layout, name, &V1Want::default()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
        for q in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let want = V1Want {
                cpu_quota: Some(q),
                ..V1Want::default()
            };
            let err = V1Group::create(&layout, "pk-q", &want).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{q}");
        }
        // Nothing wanted: an empty group, harmless to drop.
        let g = V1Group::create(&layout, "pk-e", &V1Want::default()).unwrap();
        assert!(g.procs_files().is_empty());
        g.remove().unwrap();
    }
}
