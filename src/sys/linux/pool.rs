//! Keeping cgroup creation and removal off the critical path of a run.
//!
//! Creating a cgroup (`mkdir` + opening its files) and removing it (`rmdir`, which waits for the
//! kernel to take the directory down) cost tens of microseconds each, paid twice per one-shot
//! run. Instead, a plain cgroup that is confirmed empty when its group is dropped goes into a
//! small pool of spares, and the next plain group takes it: no `mkdir`, no `rmdir`.
//!
//! Rules:
//! * only plain cgroups are pooled: never one with v1 companions (limits), never one with the
//!   memory controller enabled (its peak and OOM counters could not be reset for the next
//!   user), never one that was frozen;
//! * a cgroup is pooled only after `cgroup.events` confirmed `populated 0` and `frozen 0`; its
//!   `cpu.stat` at that moment becomes the next user's baseline (an empty cgroup accumulates no
//!   CPU, so the baseline is exact);
//! * at most [`CAP`] (64) spares; anything beyond is removed;
//! * a spare idle for [`IDLE`] is removed by a background thread, so a burst of runs leaves no
//!   directory behind for longer than that; at normal process exit an `atexit` hook removes
//!   whatever is still pooled, so nothing lingers longer than it did without the pool;
//! * cgroups that are not empty yet (a killed tree still dying) are removed by the same
//!   background thread, retrying `cgroup.kill` until `rmdir` succeeds (bounded);
//! * at exit, the `atexit` hook also waits (at most [`EXIT_DRAIN`]) for those removals: a
//!   short-lived owner typically drops its last group right before `main` returns, and `exit`
//!   does not wait for threads, so without the wait the killed, still-draining `pk-<pid>-<n>`
//!   directories would outlive the owner. Bounded, so a cgroup that refuses to drain cannot hang
//!   the exit. From then on nothing is pooled any more.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Most spares kept. Sized for a 64-way fan-out: with 8, a burst of 64 concurrent runs created
/// and removed 56 cgroups per round and ran ~1.16x tokio's time instead of ~1.05x (all spares
/// are gone 100 ms after the burst; each holds 3 fds meanwhile).
pub(crate) const CAP: usize = 64;
/// How long a spare may sit unused before it is removed.
pub(crate) const IDLE: Duration = Duration::from_millis(100);

/// How long the exit hook waits for cgroups still being removed.
pub(crate) const EXIT_DRAIN: Duration = Duration::from_secs(2);

/// Spent cgroups handed over and not yet pooled or removed (queued, or being settled by the
/// background thread).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Set by the exit hook: from then on every spent cgroup is removed, none pooled.
static DRAINING: AtomicBool = AtomicBool::new(false);

/// An empty cgroup ready to be reused.
#[derive(Debug)]
pub(crate) struct Spare {
    pub dir: PathBuf,
    pub dirfd: OwnedFd,
    pub kill: Option<OwnedFd>,
    pub events: Option<OwnedFd>,
    /// `cpu.stat` (`user_usec`, `system_usec`) when it became a spare.
    pub cpu_base: (u64, u64),
    pooled_at: Instant,
}

/// A dropped group's cgroup, already killed.
#[derive(Debug)]
pub(crate) struct Spent {
    pub dir: PathBuf,
    pub dirfd: Option<OwnedFd>,
    pub kill: Option<OwnedFd>,
    pub events: Option<OwnedFd>,
    pub v1: Option<super::v1::V1Group>,
    /// Whether it may be pooled at all (plain, never frozen, never `cgroup.kill`ed).
    pub recyclable: bool,
}

#[derive(Default)]
struct State {
    spares: Vec<Spare>,
    /// Spent cgroups waiting for the background thread (removal, or a later recycle check).
    pending: Vec<Spent>,
    /// Whether the background thread is waiting without a timeout (needs a wake-up to start
    /// timing out spares).
    asleep: bool,
}

struct Janitor {
    state: Mutex<State>,
    cv: Condvar,
}

static JANITOR: OnceLock<Janitor> = OnceLock::new();

fn janitor() -> &'static Janitor {
    JANITOR.get_or_init(|| {
        let _ = std::thread::Builder::new()
            .name("processkit-cgroup-janitor".into())
            .spawn(run);
        // SAFETY: registering a plain `extern "C" fn()` with no captured state; its failure
        // (the registration table is full) only loses the exit drain, so it is ignored.
        unsafe {
            libc::atexit(drain_at_exit);
        }
        Janitor {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        }
    })
}

fn lock(j: &Janitor) -> MutexGuard<'_, State> {
    j.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A spare cgroup, if one is pooled (the most recently used: its kernel objects are warm).
pub(crate) fn take() -> Option<Spare> {
    let j = janitor();
    lock(j).spares.pop()
}

/// Takes over a dropped group's (killed) cgroup: pools it when it qualifies and there is room,
/// else hands it to the background thread for removal. Never blocks on the kernel.
pub(crate) fn hand_over(mut spent: Spent) {
    let j = janitor();
    if DRAINING.load(Ordering::SeqCst) {
        spent.recyclable = false;
    }
    if spent.recyclable {
        if let Some(dirfd) = spent.dirfd.take() {
            match check_spare(&dirfd, spent.events.as_ref()) {
                Check::Ready(cpu_base) => {
                    let mut st = lock(j);
                    if st.spares.len() < CAP && !DRAINING.load(Ordering::SeqCst) {
                        st.spares.push(Spare {
                            dir: std::mem::take(&mut spent.dir),
                            dirfd,
                            kill: spent.kill.take(),
                            events: spent.events.take(),
                            cpu_base,
                            pooled_at: Instant::now(),
                        });
                        if st.asleep {
                            st.asleep = false;
                            j.cv.notify_one();
                        }
                        return;
                    }
                    spent.recyclable = false;
                }
                Check::NotYet => {}
                Check::Never => spent.recyclable = false,
            }
            spent.dirfd = Some(dirfd);
        }
    }
    IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
    let mut st = lock(j);
    st.pending.push(spent);
    st.asleep = false;
    j.cv.notify_one();
}

enum Check {
    /// Empty and unfrozen: the CPU baseline.
    Ready((u64, u64)),
    /// Still populated (a killed tree dying): check again later.
    NotYet,
    /// Must not be pooled.
    Never,
}

/// Reads a small file from offset 0 into `buf` (one `pread`: cgroup files render afresh).
fn pread_small(fd: RawFd, buf: &mut [u8]) -> Option<&str> {
    // SAFETY: pread into a buffer of the given length from an fd the caller keeps open.
    let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n <= 0 {
        return None;
    }
    std::str::from_utf8(&buf[..n as usize]).ok()
}

/// Reads a small cgroup file relative to the directory handle (`openat` + one `read`).
fn read_at<'a>(dirfd: &OwnedFd, name: &std::ffi::CStr, buf: &'a mut [u8]) -> Option<&'a str> {
    // SAFETY: openat on a valid directory fd with a NUL-terminated relative name.
    let fd = unsafe {
        libc::openat(
            dirfd.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh fd returned by openat, closed when `f` drops.
    let f = unsafe { OwnedFd::from_raw_fd(fd) };
    pread_small(f.as_raw_fd(), buf)
}

fn check_spare(dirfd: &OwnedFd, events: Option<&OwnedFd>) -> Check {
    let mut buf = [0u8; 512];
    let ev = match events {
        Some(e) => pread_small(e.as_raw_fd(), &mut buf),
        None => read_at(dirfd, c"cgroup.events", &mut buf),
    };
    let Some(ev) = ev else {
        return Check::Never;
    };
    if !ev.lines().any(|l| l == "frozen 0") {
        return Check::Never;
    }
    if !ev.lines().any(|l| l == "populated 0") {
        return Check::NotYet;
    }
    // SAFETY: faccessat on a valid directory fd with a NUL-terminated relative name.
    let has_memory =
        unsafe { libc::faccessat(dirfd.as_raw_fd(), c"memory.events".as_ptr(), libc::F_OK, 0) }
            == 0;
    if has_memory {
        return Check::Never;
    }
    match read_at(dirfd, c"cpu.stat", &mut buf) {
        Some(s) => Check::Ready(parse_cpu_stat(s)),
        None => Check::Never,
    }
}

/// `user_usec` and `system_usec` of a `cpu.stat` text (0 when absent).
pub(crate) fn parse_cpu_stat(text: &str) -> (u64, u64) {
    let mut user = 0;
    let mut system = 0;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        match (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) {
            (Some("user_usec"), Some(v)) => user = v,
            (Some("system_usec"), Some(v)) => system = v,
            _ => {}
        }
    }
    (user, system)
}

/// The background thread: removes spent cgroups (recycling those that became empty, while
/// there is room) and spares idle for longer than [`IDLE`].
fn run() {
    let j = janitor();
    let mut st = lock(j);
    loop {
        if !st.pending.is_empty() {
            let batch = std::mem::take(&mut st.pending);
            drop(st);
            for s in batch {
                settle(j, s);
                IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
            }
            st = lock(j);
            continue;
        }
        let now = Instant::now();
        let (expired, kept): (Vec<Spare>, Vec<Spare>) = std::mem::take(&mut st.spares)
            .into_iter()
            .partition(|s| now.duration_since(s.pooled_at) >= IDLE);
        st.spares = kept;
        if !expired.is_empty() {
            drop(st);
            for s in expired {
                remove_blocking(s.dir, s.kill.as_ref().map(|k| k.as_raw_fd()), None, None);
            }
            st = lock(j);
            continue;
        }
        match st.spares.iter().map(|s| s.pooled_at).min() {
            Some(oldest) => {
                let wait = (oldest + IDLE).saturating_duration_since(now);
                st =
                    j.cv.wait_timeout(st, wait + Duration::from_millis(1))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
            }
            None => {
                st.asleep = true;
                st = j.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        }
    }
}

/// Waits (bounded) for a spent cgroup to empty, then pools or removes it.
fn settle(j: &Janitor, mut s: Spent) {
    if s.recyclable && !DRAINING.load(Ordering::SeqCst) {
        if let Some(dirfd) = s.dirfd.take() {
            let deadline = Instant::now() + Duration::from_millis(20);
            loop {
                match check_spare(&dirfd, s.events.as_ref()) {
                    Check::Ready(cpu_base) => {
                        let mut st = lock(j);
                        if st.spares.len() < CAP && !DRAINING.load(Ordering::SeqCst) {
                            st.spares.push(Spare {
                                dir: std::mem::take(&mut s.dir),
                                dirfd,
                                kill: s.kill.take(),
                                events: s.events.take(),
                                cpu_base,
                                pooled_at: Instant::now(),
                            });
                            return;
                        }
                        break;
                    }
                    Check::NotYet if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_micros(500));
                    }
                    _ => break,
                }
            }
        }
    }
    remove_blocking(s.dir, s.kill.as_ref().map(|k| k.as_raw_fd()), s.v1, None);
}

/// Removes a cgroup directory, re-killing until the kernel lets it go (at most 10 s, or until
/// `until`).
pub(crate) fn remove_blocking(
    dir: PathBuf,
    kill: Option<RawFd>,
    v1: Option<super::v1::V1Group>,
    until: Option<Instant>,
) {
    let deadline = until.unwrap_or_else(|| Instant::now() + Duration::from_secs(10));
    let mut step = Duration::from_micros(200);
    loop {
        match fs::remove_dir(&dir) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(_) if Instant::now() < deadline => {
                match kill {
                    // SAFETY: pwrite of a static byte to an fd the caller keeps open.
                    Some(fd) => unsafe {
                        libc::pwrite(fd, b"1".as_ptr().cast(), 1, 0);
                    },
                    None => {
                        let _ = super::cgroup::write_file(&dir.join("cgroup.kill"), b"1");
                    }
                }
                std::thread::sleep(step);
                step = (step * 2).min(Duration::from_millis(20));
            }
            Err(_) => break,
        }
    }
    drop(v1);
}

/// At exit: removes every spare now, removes the cgroups still waiting for the background
/// thread, and waits for the one it may be removing, all within [`EXIT_DRAIN`]. Returns how
/// many directories it removed itself.
pub(crate) fn drain() -> usize {
    let Some(j) = JANITOR.get() else {
        return 0;
    };
    DRAINING.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + EXIT_DRAIN;
    let (spares, pending) = {
        let mut st = lock(j);
        (
            std::mem::take(&mut st.spares),
            std::mem::take(&mut st.pending),
        )
    };
    let mut n = 0;
    for s in spares {
        n += usize::from(fs::remove_dir(&s.dir).is_ok());
    }
    for s in pending {
        let dir = s.dir.clone();
        // Dropping the v1 companions (inside) kills and removes them too.
        remove_blocking(
            s.dir,
            s.kill.as_ref().map(|k| k.as_raw_fd()),
            s.v1,
            Some(deadline),
        );
        n += usize::from(!dir.exists());
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
    while IN_FLIGHT.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    n
}

extern "C" fn drain_at_exit() {
    drain();
}

#[cfg(test)]
mod tests {
    use super::super::cgroup::Cgroup;
    use super::*;
    use crate::sys::ContainerOptions;

    #[test]
    fn cpu_stat_fields() {
        let text = "usage_usec 30\nuser_usec 20\nsystem_usec 10\nnr_periods 0\n";
        assert_eq!(parse_cpu_stat(text), (20, 10));
        assert_eq!(parse_cpu_stat(""), (0, 0));
    }

    #[test]
    fn a_new_group_reports_no_cpu_even_on_a_reused_cgroup() {
        let Ok(a) = Cgroup::create(&ContainerOptions::default()) else {
            eprintln!("skipped: no cgroup v2 here");
            return;
        };
        for _ in 0..20 {
            let mut cmd = std::process::Command::new("/bin/true");
            a.spawn_std(&mut cmd).unwrap().wait().unwrap();
        }
        let used = a.stats().unwrap();
        assert!(used.cpu_user.is_some());
        drop(a);
        // Fresh or a spare (this one or another test's): nothing ran in it for this group.
        let b = Cgroup::create(&ContainerOptions::default()).unwrap();
        let s = b.stats().unwrap();
        assert_eq!(s.cpu_user.unwrap_or_default(), Duration::ZERO);
        assert_eq!(s.cpu_system.unwrap_or_default(), Duration::ZERO);
        assert_eq!(s.active_process_count, 0);
    }
}
