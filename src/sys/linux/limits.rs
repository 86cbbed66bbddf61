//! Resource limits on Linux: which hierarchy enforces each one, enabling cgroup v2 controllers
//! (moving ourselves into a leaf when the no-internal-process rule demands it), and writing the
//! v2 limit files.
//!
//! Each requested limit is enforced by the v2 controller when our v2 cgroup offers it
//! (`cgroup.controllers`), else by the v1 controller of a hybrid host ([`super::v1`]). A
//! controller is bound to exactly one hierarchy, so there is never a choice to make between the
//! two. A limit neither can enforce is an error naming it: never a silently unbounded group.
//!
//! Enabling a controller for our group cgroups means writing `+name` into the parent's
//! `cgroup.subtree_control`, which the kernel refuses while that parent (not the hierarchy
//! root) holds processes. When the only process there is us, we move ourselves once into the
//! leaf `processkit-self` ([`super::layout::LEAF_NAME`]) and keep creating groups next to it;
//! `ProcessGroupOptions::allow_self_move(false)` forbids that, and then the limit is an error.
//!
//! Everything here works on paths only, so it is tested against fake cgroupfs trees.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::layout::{plan_v2_with, AccessProbe, CgroupLayout, V2Plan, LEAF_NAME};
use crate::sys::ContainerOptions;

/// The CFS period written with a CPU quota, in microseconds (longer for a tiny quota).
pub(crate) const CPU_PERIOD_US: u64 = 100_000;
/// The longest CFS period the kernel accepts, in microseconds.
const CPU_MAX_PERIOD_US: u64 = 1_000_000;
/// The smallest quota the kernel accepts, in microseconds.
const CPU_MIN_QUOTA_US: u64 = 1_000;

/// One requested limit: its option name and the controller that enforces it (the same name in
/// v1 and v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// The option name, e.g. `"memory_max"` (what [`crate::Error::ResourceLimit`] reports).
    pub limit: &'static str,
    /// The controller, e.g. `"memory"`.
    pub controller: &'static str,
}

/// The limits `opts` asks for, in a fixed order.
pub(crate) fn wanted(opts: &ContainerOptions) -> Vec<Wanted> {
    let mut w = Vec::new();
    if opts.memory_max.is_some() {
        w.push(Wanted {
            limit: "memory_max",
            controller: "memory",
        });
    }
    if opts.max_processes.is_some() {
        w.push(Wanted {
            limit: "max_processes",
            controller: "pids",
        });
    }
    if opts.cpu_quota.is_some() {
        w.push(Wanted {
            limit: "cpu_quota",
            controller: "cpu",
        });
    }
    w
}

/// The directory whose `cgroup.controllers` says what v2 offers us: our own cgroup, or its
/// parent when we already live in our leaf.
fn v2_anchor(layout: &CgroupLayout) -> Option<PathBuf> {
    let own = layout.v2_own_dir.as_deref()?;
    let mount = layout.v2_mount.as_deref()?;
    if own.file_name().is_some_and(|n| n == LEAF_NAME) {
        if let Some(parent) = own.parent().filter(|p| p.starts_with(mount)) {
            return Some(parent.to_path_buf());
        }
    }
    Some(own.to_path_buf())
}

/// The controllers the v2 hierarchy offers at our position (empty without v2).
pub(crate) fn v2_available(layout: &CgroupLayout) -> Vec<String> {
    v2_anchor(layout)
        .and_then(|d| fs::read_to_string(d.join("cgroup.controllers")).ok())
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Splits `wanted` into the limits v2 enforces (its controller is offered by v2) and those left
/// for the v1 hierarchy.
pub(crate) fn split(wanted: &[Wanted], v2_offers: &[String]) -> (Vec<Wanted>, Vec<Wanted>) {
    wanted
        .iter()
        .partition(|w| v2_offers.iter().any(|c| c == w.controller))
}

/// Makes a v2 directory whose children get `controllers`, per [`plan_v2_with`]: enables them in
/// its `cgroup.subtree_control`, first moving ourselves into the leaf when the plan says so.
/// Returns the directory to create group cgroups in, or why it is impossible.
///
/// Callers serialise this (one lock per process): two threads must not race the move.
pub(crate) fn prepare_v2_parent(
    layout: &CgroupLayout,
    controllers: &[&str],
    allow_self_move: bool,
    probe: &dyn AccessProbe,
) -> Result<PathBuf, String> {
    let parent = match plan_v2_with(layout, controllers, allow_self_move, probe) {
        V2Plan::Direct { parent } => parent,
        V2Plan::MoveSelfToLeaf { own, leaf } => {
            match fs::create_dir(&leaf) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("cannot create {}: {e}", leaf.display())),
            }
            let procs = leaf.join("cgroup.procs");
            write(&procs, &probe.self_pid().to_string()).map_err(|e| {
                format!(
                    "cannot move this process into {} (needed so {} may enable controllers): {e}",
                    leaf.display(),
                    own.display()
                )
            })?;
            own
        }
        V2Plan::Unavailable(reason) => return Err(reason),
    };
    enable_controllers(&parent, controllers).map_err(|e| {
        format!(
            "cannot enable {} in {}: {e}",
            controllers.join(", "),
            parent.display()
        )
    })?;
    Ok(parent)
}

/// Writes `+name` for each controller not yet in `dir/cgroup.subtree_control`.
pub(crate) fn enable_controllers(dir: &Path, controllers: &[&str]) -> io::Result<()> {
    let file = dir.join("cgroup.subtree_control");
    let enabled: Vec<String> = fs::read_to_string(&file)?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let missing: Vec<String> = controllers
        .iter()
        .filter(|c| !enabled.iter().any(|e| e == *c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(&file, &missing.join(" "))
}

/// Writes the v2 limit files of `only` into the group directory `dir`: `memory.max` (and
/// `memory.swap.max = 0` where swap accounting exists, so the cap cannot be escaped through
/// swap), `pids.max`, `cpu.max` (`quota period`, 100 ms period). On failure, the error names
/// the limit that could not be written.
pub(crate) fn write_v2_limits(
    dir: &Path,
    opts: &ContainerOptions,
    only: &[Wanted],
) -> Result<(), (&'static str, String)> {
    let has = |c: &str| only.iter().any(|w| w.controller == c);
    let fail = |limit: &'static str, file: &Path, e: io::Error| {
        (limit, format!("cannot write {}: {e}", file.display()))
    };
    if let (true, Some(bytes)) = (has("memory"), opts.memory_max) {
        let file = dir.join("memory.max");
        write(&file, &bytes.to_string()).map_err(|e| fail("memory_max", &file, e))?;
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            let _ = write(&swap, "0");
        }
    }
    if let (true, Some(n)) = (has("pids"), opts.max_processes) {
        let file = dir.join("pids.max");
        write(&file, &n.to_string()).map_err(|e| fail("max_processes", &file, e))?;
    }
    if let (true, Some(q)) = (has("cpu"), opts.cpu_quota) {
        let file = dir.join("cpu.max");
        let (quota, period) = cpu_quota_period(q);
        write(&file, &format!("{quota} {period}")).map_err(|e| fail("cpu_quota", &file, e))?;
    }
    Ok(())
}

/// A fraction of one core as `(quota, period)` in microseconds, for `cpu.max` (v2) and
/// `cpu.cfs_quota_us` / `cpu.cfs_period_us` (v1): a 100 ms period, lengthened (up to the
/// kernel's 1 s) when the quota would fall below the kernel's 1 ms minimum, so a small share is
/// enforced as asked rather than rounded up. Shares below 0.001 (1 ms per second) are refused
/// when the options are validated; here they clamp to that.
pub(crate) fn cpu_quota_period(cores: f64) -> (u64, u64) {
    let period = if cores * (CPU_PERIOD_US as f64) < CPU_MIN_QUOTA_US as f64 {
        ((CPU_MIN_QUOTA_US as f64 / cores).ceil() as u64).clamp(CPU_PERIOD_US, CPU_MAX_PERIOD_US)
    } else {
        CPU_PERIOD_US
    };
    let quota = ((cores * period as f64).round() as u64).max(CPU_MIN_QUOTA_US);
    (quota, period)
}

/// Writes an existing control file (never creates one). `O_TRUNC` is what a shell's `>` does;
/// cgroupfs ignores it, and it keeps fake trees in tests honest.
fn write(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const ME: u32 = 4242;

    /// Everything writable; a fixed own pid.
    struct Probe;
    impl AccessProbe for Probe {
        fn writable(&self, _: &Path) -> bool {
            true
        }
        fn self_pid(&self) -> u32 {
            ME
        }
    }

    fn cgroup(dir: &Path, controllers: &str, subtree: &str, procs: &str, root: bool) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
        fs::write(dir.join("cgroup.subtree_control"), subtree).unwrap();
        fs::write(dir.join("cgroup.procs"), procs).unwrap();
        if !root {
            fs::write(dir.join("cgroup.type"), "domain\n").unwrap();
        }
    }

    /// A systemd-style delegated scope we live in (not the hierarchy root).
    fn delegated(procs: &str, subtree: &str) -> (tempfile::TempDir, CgroupLayout, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let mount = tmp.path().join("cgroup");
        cgroup(
            &mount,
            "cpu memory pids io\n",
            "cpu memory pids\n",
            "1\n",
            true,
        );
        let own = mount.join("user.slice/app.slice/x.scope");
        cgroup(&own, "cpu memory pids\n", subtree, procs, false);
        let layout = CgroupLayout {
            v2_mount: Some(mount),
            v2_own_dir: Some(own.clone()),
            v1: BTreeMap::new(),
        };
        (tmp, layout, own)
    }

    fn opts() -> ContainerOptions {
        ContainerOptions {
            memory_max: Some(64 << 20),
            max_processes: Some(16),
            cpu_quota: Some(0.5),
            ..ContainerOptions::default()
        }
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap().trim().to_string()
    }

    #[test]
    fn a_small_cpu_share_lengthens_the_period_instead_of_rounding_up() {
        assert_eq!(cpu_quota_period(0.5), (50_000, 100_000));
        assert_eq!(cpu_quota_period(2.0), (200_000, 100_000));
        assert_eq!(cpu_quota_period(0.01), (1_000, 100_000));
        assert_eq!(cpu_quota_period(0.005), (1_000, 200_000));
        assert_eq!(cpu_quota_period(0.001), (1_000, 1_000_000));
        assert_eq!(cpu_quota_period(0.0001), (1_000, 1_000_000));
    }

    #[test]
    fn wanted_and_split() {
        let w = wanted(&opts());
        let names: Vec<_> = w.iter().map(|w| (w.limit, w.controller)).collect();
        assert_eq!(
            names,
            [
                ("memory_max", "memory"),
                ("max_processes", "pids"),
                ("cpu_quota", "cpu")
            ]
        );
        // A hybrid host: v2 offers nothing, everything goes to v1.
        let (v2, v1) = split(&w, &[]);
        assert!(v2.is_empty());
        assert_eq!(v1.len(), 3);
        // Mixed: v2 has memory only.
        let (v2, v1) = split(&w, &["memory".to_string(), "io".to_string()]);
        assert_eq!(
            v2.iter().map(|w| w.limit).collect::<Vec<_>>(),
            ["memory_max"]
        );
        assert_eq!(
            v1.iter().map(|w| w.limit).collect::<Vec<_>>(),
            ["max_processes", "cpu_quota"]
        );
        assert!(wanted(&ContainerOptions::default()).is_empty());
    }

    #[test]
    fn available_controllers_come_from_our_cgroup_or_the_leaf_parent() {
        let (_tmp, mut layout, own) = delegated("4242\n", "");
        assert_eq!(v2_available(&layout), ["cpu", "memory", "pids"]);
        // Already moved into our leaf: the parent's list counts.
        let leaf = own.join(LEAF_NAME);
        cgroup(&leaf, "", "", "4242\n", false);
        layout.v2_own_dir = Some(leaf);
        assert_eq!(v2_available(&layout), ["cpu", "memory", "pids"]);
        assert!(v2_available(&CgroupLayout::default()).is_empty());
    }

    #[test]
    fn moves_self_into_leaf_then_enables_controllers() {
        let (_tmp, layout, own) = delegated("4242\n", "");
        // The kernel gives a new cgroup its `cgroup.procs`; the fake needs it made up front.
        cgroup(&own.join(LEAF_NAME), "", "", "", false);
        let parent = prepare_v2_parent(&layout, &["memory", "pids", "cpu"], true, &Probe).unwrap();
        assert_eq!(parent, own);
        assert_eq!(read(&own.join(LEAF_NAME).join("cgroup.procs")), "4242");
        assert_eq!(
            read(&own.join("cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
    }

    #[test]
    fn self_move_can_be_refused() {
        let (_tmp, layout, own) = delegated("4242\n", "");
        let err = prepare_v2_parent(&layout, &["memory"], false, &Probe).unwrap_err();
        assert!(err.contains("not allowed"), "{err}");
        assert!(!own.join(LEAF_NAME).exists());
        assert_eq!(read(&own.join("cgroup.subtree_control")), "");
    }

    #[test]
    fn direct_when_empty_and_only_missing_controllers_are_written() {
        let (_tmp, layout, own) = delegated("", "memory\n");
        let parent = prepare_v2_parent(&layout, &["memory", "pids"], true, &Probe).unwrap();
        assert_eq!(parent, own);
        assert!(!own.join(LEAF_NAME).exists());
        assert_eq!(read(&own.join("cgroup.subtree_control")), "+pids");
        // Everything enabled already: nothing is written.
        fs::write(own.join("cgroup.subtree_control"), "memory pids\n").unwrap();
        prepare_v2_parent(&layout, &["memory", "pids"], true, &Probe).unwrap();
        assert_eq!(read(&own.join("cgroup.subtree_control")), "memory pids");
    }

    #[test]
    fn other_processes_make_it_unavailable() {
        let (_tmp, layout, _own) = delegated("4242\n77\n", "");
        let err = prepare_v2_parent(&layout, &["pids"], true, &Probe).unwrap_err();
        assert!(err.contains("other processes"), "{err}");
    }

    #[test]
    fn writes_v2_limit_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pk-1-0");
        fs::create_dir(&dir).unwrap();
        for f in ["memory.max", "memory.swap.max", "pids.max", "cpu.max"] {
            fs::write(dir.join(f), "max\n").unwrap();
        }
        let o = opts();
        write_v2_limits(&dir, &o, &wanted(&o)).unwrap();
        assert_eq!(read(&dir.join("memory.max")), (64u64 << 20).to_string());
        assert_eq!(read(&dir.join("memory.swap.max")), "0");
        assert_eq!(read(&dir.join("pids.max")), "16");
        assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
        // Only the listed limits are written.
        let o2 = ContainerOptions {
            cpu_quota: Some(0.0001),
            ..opts()
        };
        let only: Vec<Wanted> = wanted(&o2)
            .into_iter()
            .filter(|w| w.limit == "cpu_quota")
            .collect();
        fs::write(dir.join("pids.max"), "max\n").unwrap();
        write_v2_limits(&dir, &o2, &only).unwrap();
        assert_eq!(read(&dir.join("pids.max")), "max");
        assert_eq!(read(&dir.join("cpu.max")), "1000 1000000");
    }

    #[test]
    fn missing_limit_file_names_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("memory.max"), "max\n").unwrap();
        let o = opts();
        let (limit, reason) = write_v2_limits(tmp.path(), &o, &wanted(&o)).unwrap_err();
        assert_eq!(limit, "max_processes");
        assert!(reason.contains("pids.max"), "{reason}");
    }
}
