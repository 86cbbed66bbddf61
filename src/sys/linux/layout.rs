//! Where the cgroup hierarchies are, which cgroups we live in, and where a container's
//! cgroups may be created.
//!
//! Everything here is discovered from `/proc/self/mountinfo` and `/proc/self/cgroup`; no path
//! such as `/sys/fs/cgroup` is assumed. The parsing and the placement decision ([`plan_v2`])
//! are pure functions of their inputs (text, and a directory tree reached through an
//! [`AccessProbe`]), so they are unit-tested against fake mount tables and fake cgroupfs trees.
//!
//! Supported shapes: pure cgroup v2 (systemd delegation or the root), hybrid (v2 at
//! `.../unified` plus v1 controllers), pure v1, bind-mounted subtrees and cgroup namespaces
//! (mount `root` field not `/`), and hosts with no usable cgroup at all.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// Name of the leaf cgroup (inside our own v2 cgroup) that we move ourselves into when our
/// own cgroup must become process-free so controllers can be enabled for its children.
pub(crate) const LEAF_NAME: &str = "processkit-self";

/// One line of `/proc/self/mountinfo` (the fields we need).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// Mount id (field 1).
    pub id: u32,
    /// Id of the parent mount (field 2).
    pub parent_id: u32,
    /// The directory of the mounted filesystem that forms this mount's root (field 4); for a
    /// cgroup filesystem this is the cgroup path, inside the hierarchy, visible at
    /// `mount_point`.
    pub root: PathBuf,
    /// Where it is mounted, relative to our root directory (field 5).
    pub mount_point: PathBuf,
    /// Filesystem type, e.g. `cgroup2`, `cgroup`, `tmpfs`.
    pub fstype: String,
    /// Per-superblock options, e.g. `rw,memory` or `rw,cpu,cpuacct` for a v1 hierarchy.
    pub super_options: String,
}

/// Decodes the octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash) the
/// kernel uses for paths in mountinfo. Anything that is not a valid escape stays as it is.
fn unescape_path(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

/// Parses the text of `/proc/<pid>/mountinfo`.
///
/// Handles any number of optional fields (`shared:N`, `master:N`, ...) before the ` - `
/// separator and octal escapes in paths. Malformed lines are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        // Fields are separated by single spaces; spaces inside paths are escaped as `\040`.
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 10 {
            continue;
        }
        let Some(sep) = fields.iter().skip(6).position(|f| *f == "-").map(|p| p + 6) else {
            continue;
        };
        if sep + 1 >= fields.len() {
            continue;
        }
        let (Ok(id), Ok(parent_id)) = (fields[0].parse::<u32>(), fields[1].parse::<u32>()) else {
            continue;
        };
        entries.push(MountEntry {
            id,
            parent_id,
            root: unescape_path(fields[3]),
            mount_point: unescape_path(fields[4]),
            fstype: fields[sep + 1].to_string(),
            super_options: fields.get(sep + 3).copied().unwrap_or("").to_string(),
        });
    }
    entries
}

/// The cgroups our process belongs to, as `/proc/self/cgroup` reports them (paths are inside
/// each hierarchy, relative to our cgroup namespace root).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OwnCgroups {
    /// Our cgroup in the unified (v2) hierarchy, e.g. `/` or `/user.slice/.../app.scope`.
    pub v2: Option<PathBuf>,
    /// Our cgroup in each v1 hierarchy, one entry per controller (co-mounted controllers such
    /// as `cpu,cpuacct` yield one entry each; named hierarchies like `name=systemd` none).
    pub v1: Vec<(String, PathBuf)>,
}

/// Parses the text of `/proc/<pid>/cgroup` (`hierarchy-id:controllers:path` lines).
pub(crate) fn parse_proc_cgroup(text: &str) -> OwnCgroups {
    let mut own = OwnCgroups::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if path.is_empty() {
            continue;
        }
        if id == "0" && controllers.is_empty() {
            own.v2 = Some(PathBuf::from(path));
            continue;
        }
        for c in controllers.split(',') {
            if c.is_empty() || c.starts_with("name=") {
                continue;
            }
            own.v1.push((c.to_string(), PathBuf::from(path)));
        }
    }
    own
}

/// The cgroup hierarchies visible to us and our own place in each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CgroupLayout {
    /// Mount point of the cgroup v2 hierarchy (the one our own cgroup is visible under when
    /// there are several), if any is mounted.
    pub v2_mount: Option<PathBuf>,
    /// Absolute directory of our own v2 cgroup: the mount point joined with our cgroup path
    /// minus the mount's root. `None` when our cgroup is not visible under any v2 mount (or we
    /// have no v2 cgroup line).
    pub v2_own_dir: Option<PathBuf>,
    /// v1 controller name -> absolute directory of our own cgroup for that controller (same
    /// root-stripping rule). Controllers that are not mounted, or whose cgroup is not visible,
    /// are absent. Co-mounted controllers map to the same directory.
    pub v1: BTreeMap<String, PathBuf>,
}

/// Where the cgroup `own` (a path inside the hierarchy) appears under `mount`, if it does.
fn visible_dir(mount: &MountEntry, own: &Path) -> Option<PathBuf> {
    if !own.is_absolute()
        || own
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return None;
    }
    let rel = own.strip_prefix(&mount.root).ok()?;
    if rel.as_os_str().is_empty() {
        Some(mount.mount_point.clone())
    } else {
        Some(mount.mount_point.join(rel))
    }
}

/// Mounts that are reachable: neither the mount itself nor any mount it sits below is covered
/// by another mount stacked on the same mount point (unless that cover is itself on our chain,
/// i.e. the mount is the cover or lives on it).
fn reachable_mounts(mounts: &[MountEntry]) -> Vec<&MountEntry> {
    let by_id: BTreeMap<u32, &MountEntry> = mounts.iter().map(|m| (m.id, m)).collect();
    mounts
        .iter()
        .filter(|m| {
            // The mount and its ancestors (bounded, in case of a malformed table with a cycle).
            let mut chain = vec![*m];
            while chain.len() <= mounts.len() {
                match by_id.get(&chain[chain.len() - 1].parent_id) {
                    Some(p) if !chain.iter().any(|c| c.id == p.id) => chain.push(p),
                    _ => break,
                }
            }
            !chain.iter().any(|a| {
                mounts.iter().any(|n| {
                    n.parent_id == a.id
                        && n.mount_point == a.mount_point
                        && !chain.iter().any(|c| c.id == n.id)
                })
            })
        })
        .collect()
}

/// Combines the mount table and our cgroup membership into absolute directories.
///
/// `mountinfo` is the text of `/proc/self/mountinfo`, `proc_self_cgroup` that of
/// `/proc/self/cgroup`.
pub(crate) fn discover(mountinfo: &str, proc_self_cgroup: &str) -> CgroupLayout {
    let mounts = parse_mountinfo(mountinfo);
    let mounts = reachable_mounts(&mounts);
    let own = parse_proc_cgroup(proc_self_cgroup);
    let mut layout = CgroupLayout::default();

    let v2_mounts: Vec<&MountEntry> = mounts
        .iter()
        .copied()
        .filter(|m| m.fstype == "cgroup2")
        .collect();
    let visible = own.v2.as_deref().and_then(|own_path| {
        v2_mounts
            .iter()
            .find_map(|m| visible_dir(m, own_path).map(|dir| (*m, dir)))
    });
    match visible {
        Some((m, dir)) => {
            layout.v2_mount = Some(m.mount_point.clone());
            layout.v2_own_dir = Some(dir);
        }
        None => layout.v2_mount = v2_mounts.first().map(|m| m.mount_point.clone()),
    }

    for (controller, own_path) in &own.v1 {
        let dir = mounts
            .iter()
            .filter(|m| m.fstype == "cgroup")
            .filter(|m| m.super_options.split(',').any(|o| o == controller))
            .find_map(|m| visible_dir(m, own_path));
        if let Some(dir) = dir {
            layout.v1.entry(controller.clone()).or_insert(dir);
        }
    }
    layout
}

/// [`discover`] applied to this process's real `/proc/self/mountinfo` and `/proc/self/cgroup`.
pub(crate) fn discover_current() -> io::Result<CgroupLayout> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")?;
    Ok(discover(&mountinfo, &cgroup))
}

/// Where a container's v2 cgroups may be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum V2Plan {
    /// Create group cgroups directly under `parent`. When controllers were asked for, the
    /// caller writes `+name` for each into `parent/cgroup.subtree_control` first (harmless if
    /// already enabled).
    Direct {
        /// The directory to create group cgroups in.
        parent: PathBuf,
    },
    /// Our process lives in `own`, which must stay process-free for controllers: move
    /// ourselves into `leaf` (= `own/`[`LEAF_NAME`]; mkdir it, write our pid into
    /// `leaf/cgroup.procs`), then enable the controllers in `own/cgroup.subtree_control` and
    /// create group cgroups under `own`.
    MoveSelfToLeaf {
        /// Our current cgroup, the future parent of the group cgroups.
        own: PathBuf,
        /// The leaf cgroup to move ourselves into.
        leaf: PathBuf,
    },
    /// No usable v2 hierarchy; the text says which path and what is missing.
    Unavailable(String),
}

/// The facts about the live system [`plan_v2_with`] needs besides the directory tree itself;
/// faked in tests (root bypasses permission bits, so a real read-only dir cannot be tested).
pub(crate) trait AccessProbe {
    /// Whether this process may write `path` (create entries, for a directory).
    fn writable(&self, path: &Path) -> bool;
    /// Our own process id, as it appears in `cgroup.procs`.
    fn self_pid(&self) -> u32 {
        std::process::id()
    }
}

/// The real [`AccessProbe`]: `faccessat(W_OK, AT_EACCESS)`, which also reports `EROFS` for
/// root on a read-only mount.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SystemProbe;

impl AccessProbe for SystemProbe {
    fn writable(&self, path: &Path) -> bool {
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call; faccessat only
        // reads it and has no other memory effects.
        let rc =
            unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK, libc::AT_EACCESS) };
        rc == 0
    }
}

/// Reads a whitespace-separated list file (`cgroup.controllers`, `cgroup.subtree_control`).
fn read_words(path: &Path) -> io::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)?
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// Reads the pids in a `cgroup.procs` file.
fn read_pids(path: &Path) -> io::Result<Vec<u32>> {
    Ok(std::fs::read_to_string(path)?
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect())
}

/// Decides where v2 group cgroups go, with the real access checks; see [`plan_v2_with`].
pub(crate) fn plan_v2(
    layout: &CgroupLayout,
    need_controllers: &[&str],
    allow_move_self: bool,
) -> V2Plan {
    plan_v2_with(layout, need_controllers, allow_move_self, &SystemProbe)
}

/// Decides where v2 group cgroups go.
///
/// * [`V2Plan::Direct`] when our own v2 cgroup directory exists with a writable directory and
///   `cgroup.procs`, and either no controllers are needed, or all of them are already in its
///   `cgroup.subtree_control`, or they are in its `cgroup.controllers`, its
///   `cgroup.subtree_control` is writable and it has no processes (or it is the hierarchy
///   root, where the no-internal-process rule does not apply).
/// * [`V2Plan::MoveSelfToLeaf`] when controllers are needed and available but our own
///   (non-root) cgroup holds processes, the only one being us, and `allow_move_self`.
/// * [`V2Plan::Unavailable`] otherwise, with the reason.
///
/// If we already sit in our own leaf ([`LEAF_NAME`], from an earlier move), the leaf's parent
/// is considered first so repeated planning is stable.
pub(crate) fn plan_v2_with(
    layout: &CgroupLayout,
    need_controllers: &[&str],
    allow_move_self: bool,
    probe: &dyn AccessProbe,
) -> V2Plan {
    let Some(mount) = layout.v2_mount.as_deref() else {
        return V2Plan::Unavailable("no cgroup v2 hierarchy is mounted".to_string());
    };
    let Some(own) = layout.v2_own_dir.as_deref() else {
        return V2Plan::Unavailable(format!(
            "our own cgroup v2 is not visible under the cgroup2 mount at {}",
            mount.display()
        ));
    };
    if own.file_name().is_some_and(|n| n == LEAF_NAME) {
        if let Some(parent) = own.parent().filter(|p| p.starts_with(mount)) {
            let parent_empty = read_pids(&parent.join("cgroup.procs")).is_ok_and(|p| p.is_empty());
            if parent_empty {
                let plan = plan_dir(mount, parent, need_controllers, false, probe);
                if matches!(plan, V2Plan::Direct { .. }) {
                    return plan;
                }
            }
        }
    }
    plan_dir(mount, own, need_controllers, allow_move_self, probe)
}

/// [`plan_v2_with`] for one candidate directory `own` (our cgroup) under `mount`.
fn plan_dir(
    mount: &Path,
    own: &Path,
    need: &[&str],
    allow_move_self: bool,
    probe: &dyn AccessProbe,
) -> V2Plan {
    let procs_file = own.join("cgroup.procs");
    if !own.is_dir() || !procs_file.is_file() {
        return V2Plan::Unavailable(format!(
            "{} is not a cgroup v2 directory (missing or without cgroup.procs)",
            own.display()
        ));
    }
    if !probe.writable(own) || !probe.writable(&procs_file) {
        return V2Plan::Unavailable(format!(
            "cgroup {} is not writable by us (not delegated, or read-only mount)",
            own.display()
        ));
    }
    if need.is_empty() {
        return V2Plan::Direct {
            parent: own.to_path_buf(),
        };
    }
    let controllers_file = own.join("cgroup.controllers");
    let available = match read_words(&controllers_file) {
        Ok(w) => w,
        Err(e) => {
            return V2Plan::Unavailable(format!("cannot read {}: {e}", controllers_file.display()))
        }
    };
    let missing: Vec<&str> = need
        .iter()
        .copied()
        .filter(|c| !available.iter().any(|a| a == c))
        .collect();
    if !missing.is_empty() {
        return V2Plan::Unavailable(format!(
            "cgroup v2 controller(s) {} not available in {} (cgroup.controllers lists: {})",
            missing.join(", "),
            own.display(),
            if available.is_empty() {
                "nothing".to_string()
            } else {
                available.join(" ")
            }
        ));
    }
    let subtree_file = own.join("cgroup.subtree_control");
    let enabled = read_words(&subtree_file).unwrap_or_default();
    if need.iter().all(|c| enabled.iter().any(|e| e == c)) {
        return V2Plan::Direct {
            parent: own.to_path_buf(),
        };
    }
    if !probe.writable(&subtree_file) {
        return V2Plan::Unavailable(format!(
            "cannot enable controller(s) {}: {} is not writable",
            need.join(", "),
            subtree_file.display()
        ));
    }
    // The hierarchy root has no `cgroup.type`; a namespace or bind-mount root does.
    let is_root = own == mount && !own.join("cgroup.type").exists();
    let procs = match read_pids(&procs_file) {
        Ok(p) => p,
        Err(e) => return V2Plan::Unavailable(format!("cannot read {}: {e}", procs_file.display())),
    };
    if is_root || procs.is_empty() {
        return V2Plan::Direct {
            parent: own.to_path_buf(),
        };
    }
    let me = probe.self_pid();
    let others: Vec<u32> = procs.iter().copied().filter(|p| *p != me).collect();
    if !others.is_empty() {
        let shown: Vec<String> = others.iter().take(8).map(u32::to_string).collect();
        return V2Plan::Unavailable(format!(
            "cannot enable controller(s) {} in {}: it holds other processes besides us ({}{}), \
             and a cgroup with processes cannot delegate controllers",
            need.join(", "),
            own.display(),
            shown.join(" "),
            if others.len() > shown.len() {
                " ..."
            } else {
                ""
            }
        ));
    }
    if !allow_move_self {
        return V2Plan::Unavailable(format!(
            "cannot enable controller(s) {} in {}: we live in it, and moving ourselves into a \
             leaf cgroup was not allowed",
            need.join(", "),
            own.display()
        ));
    }
    V2Plan::MoveSelfToLeaf {
        own: own.to_path_buf(),
        leaf: own.join(LEAF_NAME),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// The mount table of the development machine (hybrid: v1 controllers + v2 at `unified`).
    const HYBRID_MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334492k,nr_inodes=3083623,mode=755
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684092k
26 24 0:24 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
29 26 0:26 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000
30 25 0:27 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684092k
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/a187f2d31a276c2555068e963d5c7d93
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

    const SYSTEMD_MOUNTINFO: &str = "\
24 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
25 24 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    const SYSTEMD_CGROUP: &str =
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope\n";

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn parses_hybrid_machine() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(mounts.len(), 19);
        // /dev/pts and /dev/shm are mounted twice; only the top of each stack is reachable.
        let reachable: Vec<u32> = reachable_mounts(&mounts).iter().map(|m| m.id).collect();
        assert!(
            !reachable.contains(&25) && !reachable.contains(&26),
            "{reachable:?}"
        );
        assert!(reachable.contains(&29) && reachable.contains(&30) && reachable.contains(&41));
        assert_eq!(reachable.len(), 17);
        let unified = mounts.iter().find(|m| m.fstype == "cgroup2").unwrap();
        assert_eq!(unified.mount_point, p("/sys/fs/cgroup/unified"));
        assert_eq!(unified.root, p("/"));
        assert_eq!(unified.super_options, "rw");
        assert_eq!((unified.id, unified.parent_id), (41, 31));

        let own = parse_proc_cgroup(HYBRID_CGROUP);
        assert_eq!(own.v2, Some(p("/")));
        assert!(own.v1.iter().all(|(c, _)| !c.starts_with("name=")));
        assert_eq!(own.v1.len(), 8);

        let layout = discover(HYBRID_MOUNTINFO, HYBRID_CGROUP);
        assert_eq!(layout.v2_mount, Some(p("/sys/fs/cgroup/unified")));
        assert_eq!(layout.v2_own_dir, Some(p("/sys/fs/cgroup/unified")));
        assert_eq!(
            layout.v1.get("memory"),
            Some(&p(
                "/sys/fs/cgroup/memory/process_api/a187f2d31a276c2555068e963d5c7d93"
            ))
        );
        assert_eq!(layout.v1.get("pids"), Some(&p("/sys/fs/cgroup/pids")));
        assert_eq!(layout.v1.get("cpu"), Some(&p("/sys/fs/cgroup/cpu")));
        assert_eq!(layout.v1.get("cpuacct"), Some(&p("/sys/fs/cgroup/cpuacct")));
        assert!(!layout.v1.contains_key("name=systemd"));
        assert!(!layout.v1.contains_key("hugetlb"));
    }

    #[test]
    fn parses_pure_v2_systemd() {
        let layout = discover(SYSTEMD_MOUNTINFO, SYSTEMD_CGROUP);
        assert_eq!(layout.v2_mount, Some(p("/sys/fs/cgroup")));
        assert_eq!(
            layout.v2_own_dir,
            Some(p(
                "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope"
            ))
        );
        assert!(layout.v1.is_empty());
        let m = parse_mountinfo(SYSTEMD_MOUNTINFO);
        assert_eq!(m[2].super_options, "rw,nsdelegate,memory_recursiveprot");
    }

    #[test]
    fn bind_mounted_subtree_root_is_stripped() {
        let mi = "\
100 1 0:50 / / rw - overlay overlay rw
101 100 0:26 /kubepods/pod1/abc /sys/fs/cgroup ro,nosuid master:9 - cgroup2 cgroup2 rw
";
        let layout = discover(mi, "0::/kubepods/pod1/abc/init\n");
        assert_eq!(layout.v2_mount, Some(p("/sys/fs/cgroup")));
        assert_eq!(layout.v2_own_dir, Some(p("/sys/fs/cgroup/init")));

        // Exactly at the mount root.
        let layout = discover(mi, "0::/kubepods/pod1/abc\n");
        assert_eq!(layout.v2_own_dir, Some(p("/sys/fs/cgroup")));

        // Our cgroup is outside the bind-mounted subtree (or a namespace `..` path): invisible.
        let layout = discover(mi, "0::/kubepods/pod2\n");
        assert_eq!(layout.v2_mount, Some(p("/sys/fs/cgroup")));
        assert_eq!(layout.v2_own_dir, None);
        let layout = discover(mi, "0::/kubepods/pod1/abcdef\n");
        assert_eq!(
            layout.v2_own_dir, None,
            "prefix match must be per component"
        );
        let layout = discover(mi, "0::/../../x\n");
        assert_eq!(layout.v2_own_dir, None);
    }

    #[test]
    fn picks_the_v2_mount_our_cgroup_is_visible_under() {
        let mi = "\
1 0 0:1 / / rw - ext4 /dev/sda rw
2 1 0:26 /other /mnt/a rw - cgroup2 cgroup2 rw
3 1 0:26 / /mnt/b rw - cgroup2 cgroup2 rw
";
        let layout = discover(mi, "0::/mine\n");
        assert_eq!(layout.v2_mount, Some(p("/mnt/b")));
        assert_eq!(layout.v2_own_dir, Some(p("/mnt/b/mine")));
    }

    #[test]
    fn covered_mounts_are_ignored() {
        // A cgroup2 mount stacked over the hybrid tmpfs hides the v1 mounts below it.
        let mi = format!("{HYBRID_MOUNTINFO}50 31 0:60 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let layout = discover(&mi, HYBRID_CGROUP);
        assert_eq!(layout.v2_mount, Some(p("/sys/fs/cgroup")));
        assert_eq!(layout.v2_own_dir, Some(p("/sys/fs/cgroup")));
        assert!(layout.v1.is_empty(), "{:?}", layout.v1);
    }

    #[test]
    fn no_cgroup2_mount_at_all() {
        let mi = "\
1 0 8:1 / / rw - ext4 /dev/sda rw
2 1 0:20 / /cg/memory rw - cgroup cgroup rw,memory
";
        let layout = discover(mi, "3:memory:/a\n0::/\n");
        assert_eq!(layout.v2_mount, None);
        assert_eq!(layout.v2_own_dir, None);
        assert_eq!(layout.v1.get("memory"), Some(&p("/cg/memory/a")));
        assert!(matches!(
            plan_v2(&layout, &[], true),
            V2Plan::Unavailable(_)
        ));

        let layout = discover("", "");
        assert_eq!(layout, CgroupLayout::default());
    }

    #[test]
    fn escaped_paths() {
        let mi = r"36 25 0:40 /my\040group /mnt/cg\040v2\011tab\134x rw shared:7 master:3 - cgroup2 none rw
";
        let m = parse_mountinfo(mi);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].root, p("/my group"));
        assert_eq!(m[0].mount_point, p("/mnt/cg v2\ttab\\x"));
        assert_eq!(m[0].fstype, "cgroup2");
        let layout = discover(mi, "0::/my group/sub\n");
        assert_eq!(layout.v2_own_dir, Some(p("/mnt/cg v2\ttab\\x/sub")));
        // Not an escape: kept literally.
        assert_eq!(unescape_path(r"/a\9b\04"), p(r"/a\9b\04"));
    }

    #[test]
    fn v1_co_mounted_cpu_cpuacct() {
        let mi = "\
1 0 8:1 / / rw - ext4 /dev/sda rw
20 1 0:20 / /sys/fs/cgroup rw - tmpfs tmpfs rw
21 20 0:21 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
22 20 0:22 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
23 20 0:23 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
";
        let cg = "4:cpuset:/\n2:cpu,cpuacct:/user.slice\n1:name=systemd:/user.slice/s.scope\n";
        let own = parse_proc_cgroup(cg);
        assert_eq!(
            own.v1,
            vec![
                ("cpuset".to_string(), p("/")),
                ("cpu".to_string(), p("/user.slice")),
                ("cpuacct".to_string(), p("/user.slice")),
            ]
        );
        assert_eq!(own.v2, None);
        let layout = discover(mi, cg);
        assert_eq!(
            layout.v1.get("cpu"),
            Some(&p("/sys/fs/cgroup/cpu,cpuacct/user.slice"))
        );
        assert_eq!(
            layout.v1.get("cpuacct"),
            Some(&p("/sys/fs/cgroup/cpu,cpuacct/user.slice"))
        );
        // "cpu" must not match the "cpuset" option.
        assert_eq!(layout.v1.get("cpuset"), Some(&p("/sys/fs/cgroup/cpuset")));
        assert_eq!(layout.v1.len(), 3);
    }

    #[test]
    fn discovers_this_machine() {
        let layout = discover_current().unwrap();
        // Whatever the host, every reported directory must exist.
        if let Some(dir) = &layout.v2_own_dir {
            assert!(dir.join("cgroup.procs").is_file(), "{dir:?}");
        }
        for dir in layout.v1.values() {
            assert!(dir.join("cgroup.procs").is_file(), "{dir:?}");
        }
        // Read-only planning must not fail or touch anything.
        let plan = plan_v2(&layout, &["memory", "pids"], false);
        println!("layout: {layout:?}\nplan(memory,pids): {plan:?}");
        println!("plan(): {:?}", plan_v2(&layout, &[], false));
    }

    #[test]
    fn system_probe_sees_writable_tempdir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(SystemProbe.writable(dir.path()));
        assert!(!SystemProbe.writable(&dir.path().join("missing")));
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            use std::os::unix::fs::PermissionsExt;
            let ro = dir.path().join("ro");
            fs::create_dir(&ro).unwrap();
            fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
            assert!(!SystemProbe.writable(&ro));
        }
    }

    /// A fake probe: everything writable except the listed paths; a fixed own pid.
    struct FakeProbe {
        read_only: Vec<PathBuf>,
        pid: u32,
    }

    impl AccessProbe for FakeProbe {
        fn writable(&self, path: &Path) -> bool {
            !self.read_only.iter().any(|r| path.starts_with(r))
        }
        fn self_pid(&self) -> u32 {
            self.pid
        }
    }

    const ME: u32 = 4242;

    fn probe() -> FakeProbe {
        FakeProbe {
            read_only: Vec::new(),
            pid: ME,
        }
    }

    /// Builds a fake cgroup v2 directory.
    fn fake_cgroup(dir: &Path, controllers: &str, subtree: &str, procs: &str, root: bool) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
        fs::write(dir.join("cgroup.subtree_control"), subtree).unwrap();
        fs::write(dir.join("cgroup.procs"), procs).unwrap();
        if !root {
            fs::write(dir.join("cgroup.type"), "domain\n").unwrap();
        }
    }

    /// A fake delegated systemd layout under a tempdir: returns (tempdir, layout, own dir).
    fn fake_systemd(
        controllers: &str,
        subtree: &str,
        procs: &str,
    ) -> (tempfile::TempDir, CgroupLayout, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let mount = tmp.path().join("cgroup");
        fake_cgroup(
            &mount,
            "cpu memory pids io\n",
            "cpu memory pids\n",
            "1\n",
            true,
        );
        let own = mount.join("user.slice/app.slice/x.scope");
        fake_cgroup(&own, controllers, subtree, procs, false);
        let layout = CgroupLayout {
            v2_mount: Some(mount),
            v2_own_dir: Some(own.clone()),
            v1: BTreeMap::new(),
        };
        (tmp, layout, own)
    }

    #[test]
    fn plan_direct_when_writable_and_nothing_needed() {
        let (_tmp, layout, own) = fake_systemd("", "", "4242\n77\n");
        assert_eq!(
            plan_v2_with(&layout, &[], false, &probe()),
            V2Plan::Direct { parent: own }
        );
    }

    #[test]
    fn plan_direct_at_hierarchy_root_even_with_processes() {
        let tmp = tempfile::tempdir().unwrap();
        let mount = tmp.path().join("unified");
        fake_cgroup(&mount, "hugetlb memory\n", "", "1\n2\n4242\n", true);
        let layout = CgroupLayout {
            v2_mount: Some(mount.clone()),
            v2_own_dir: Some(mount.clone()),
            v1: BTreeMap::new(),
        };
        assert_eq!(
            plan_v2_with(&layout, &["memory"], false, &probe()),
            V2Plan::Direct {
                parent: mount.clone()
            }
        );
        // The machine's real shape: only hugetlb available.
        match plan_v2_with(&layout, &["memory", "pids"], true, &probe()) {
            V2Plan::Unavailable(why) => {
                assert!(
                    why.contains("pids")
                        && !why.contains("memory,")
                        && why.contains(&*mount.to_string_lossy()),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
        // A namespace root looks like a mount root but has cgroup.type: the rule applies.
        fs::write(mount.join("cgroup.type"), "domain\n").unwrap();
        assert!(matches!(
            plan_v2_with(&layout, &["memory"], true, &probe()),
            V2Plan::Unavailable(_)
        ));
    }

    #[test]
    fn plan_direct_when_controllers_enabled_or_enableable() {
        let (_tmp, layout, own) = fake_systemd("cpu memory pids\n", "memory pids\n", "4242\n");
        assert_eq!(
            plan_v2_with(&layout, &["memory", "pids"], false, &probe()),
            V2Plan::Direct {
                parent: own.clone()
            }
        );
        // Not yet enabled but our cgroup is empty (we are accounted elsewhere).
        let (_tmp, layout, own) = fake_systemd("cpu memory pids\n", "", "");
        assert_eq!(
            plan_v2_with(&layout, &["memory", "cpu"], false, &probe()),
            V2Plan::Direct { parent: own }
        );
    }

    #[test]
    fn plan_move_self_when_delegated_with_our_process() {
        let (_tmp, layout, own) = fake_systemd("cpu memory pids\n", "", "4242\n");
        assert_eq!(
            plan_v2_with(&layout, &["memory", "pids"], true, &probe()),
            V2Plan::MoveSelfToLeaf {
                own: own.clone(),
                leaf: own.join(LEAF_NAME)
            }
        );
        match plan_v2_with(&layout, &["memory", "pids"], false, &probe()) {
            V2Plan::Unavailable(why) => assert!(why.contains("not allowed"), "{why}"),
            other => panic!("{other:?}"),
        }
        // After the move: we sit in the leaf, the scope is empty -> groups go in the scope.
        fs::write(own.join("cgroup.procs"), "").unwrap();
        fs::write(own.join("cgroup.subtree_control"), "memory pids\n").unwrap();
        let leaf = own.join(LEAF_NAME);
        fake_cgroup(&leaf, "memory pids\n", "", "4242\n", false);
        let moved = CgroupLayout {
            v2_own_dir: Some(leaf),
            ..layout
        };
        assert_eq!(
            plan_v2_with(&moved, &["memory", "pids"], true, &probe()),
            V2Plan::Direct {
                parent: own.clone()
            }
        );
        assert_eq!(
            plan_v2_with(&moved, &[], true, &probe()),
            V2Plan::Direct { parent: own }
        );
    }

    #[test]
    fn plan_unavailable_when_other_processes_share_our_cgroup() {
        let (_tmp, layout, own) = fake_systemd("cpu memory pids\n", "", "4242\n999\n");
        match plan_v2_with(&layout, &["memory"], true, &probe()) {
            V2Plan::Unavailable(why) => {
                assert!(
                    why.contains("999") && why.contains(&*own.to_string_lossy()),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plan_unavailable_when_controllers_missing() {
        let (_tmp, layout, own) = fake_systemd("memory\n", "", "4242\n");
        match plan_v2_with(&layout, &["memory", "pids", "cpu"], true, &probe()) {
            V2Plan::Unavailable(why) => {
                assert!(
                    why.contains("pids, cpu") && why.contains(&*own.to_string_lossy()),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plan_unavailable_when_read_only() {
        use std::os::unix::fs::PermissionsExt;
        let (_tmp, layout, own) = fake_systemd("cpu memory pids\n", "", "");
        fs::set_permissions(&own, fs::Permissions::from_mode(0o555)).unwrap();
        // The real probe (honours mode bits unless we are root).
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(matches!(
                plan_v2(&layout, &[], true),
                V2Plan::Unavailable(_)
            ));
        }
        // The injected probe models EROFS / EACCES for root too.
        let ro = FakeProbe {
            read_only: vec![own.clone()],
            pid: ME,
        };
        match plan_v2_with(&layout, &[], true, &ro) {
            V2Plan::Unavailable(why) => {
                assert!(
                    why.contains("not writable") && why.contains(&*own.to_string_lossy()),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
        // Only subtree_control read-only: fine without controllers, not with them.
        fs::set_permissions(&own, fs::Permissions::from_mode(0o755)).unwrap();
        let ro = FakeProbe {
            read_only: vec![own.join("cgroup.subtree_control")],
            pid: ME,
        };
        assert_eq!(
            plan_v2_with(&layout, &[], true, &ro),
            V2Plan::Direct {
                parent: own.clone()
            }
        );
        assert!(matches!(
            plan_v2_with(&layout, &["memory"], true, &ro),
            V2Plan::Unavailable(_)
        ));
    }

    #[test]
    fn plan_unavailable_when_own_dir_invisible_or_missing() {
        let layout = CgroupLayout {
            v2_mount: Some(p("/nonexistent-mount")),
            v2_own_dir: None,
            v1: BTreeMap::new(),
        };
        match plan_v2_with(&layout, &[], true, &probe()) {
            V2Plan::Unavailable(why) => assert!(why.contains("/nonexistent-mount"), "{why}"),
            other => panic!("{other:?}"),
        }
        let layout = CgroupLayout {
            v2_mount: Some(p("/nonexistent-mount")),
            v2_own_dir: Some(p("/nonexistent-mount/x")),
            v1: BTreeMap::new(),
        };
        assert!(matches!(
            plan_v2_with(&layout, &[], true, &probe()),
            V2Plan::Unavailable(_)
        ));
    }
}
