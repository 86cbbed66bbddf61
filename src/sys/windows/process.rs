//! Per-process helpers: opening a pid, whole-process suspend/resume, and memory counters.
//!
//! Suspension uses `NtSuspendProcess`/`NtResumeProcess` from `ntdll.dll`, resolved once at run
//! time with `GetModuleHandleW` + `GetProcAddress` (they are undocumented, so no import library
//! or `windows-sys` binding has them, but they have been exported since Windows XP and are what
//! Process Explorer and the debuggers use). They move every thread's suspend count by one. If
//! they were ever missing, the fallback walks the process's threads with a Toolhelp snapshot and
//! calls `SuspendThread`/`ResumeThread` on each, which has the same counting semantics but can
//! miss a thread created while the walk runs.

use std::ffi::{c_char, CStr};
use std::io;
use std::mem;
use std::ptr;
use std::sync::OnceLock;

use windows_sys::Win32::Foundation::{ERROR_INVALID_PARAMETER, FARPROC, HANDLE, HMODULE};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Thread32First, Thread32Next, TH32CS_SNAPTHREAD, THREADENTRY32,
};
use windows_sys::Win32::System::ProcessStatus::{
    K32GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS, PROCESS_MEMORY_COUNTERS_EX,
};
use windows_sys::Win32::System::Threading::{
    GetProcessId, OpenProcess, OpenThread, ResumeThread, SuspendThread, PROCESS_ACCESS_RIGHTS,
    THREAD_SUSPEND_RESUME,
};

use super::job::{check, Handle};

// `GetModuleHandleW` and `GetProcAddress` live in windows-sys's `Win32_System_LibraryLoader`
// feature, which this crate does not enable; kernel32 is always linked, so declare the two
// (stable since Windows 2000) directly.
#[link(name = "kernel32")]
extern "system" {
    fn GetModuleHandleW(name: *const u16) -> HMODULE;
    fn GetProcAddress(module: HMODULE, name: *const c_char) -> FARPROC;
}

/// `NTSTATUS NTAPI NtSuspendProcess(HANDLE)` and `NtResumeProcess`, same signature.
type NtProcessFn = unsafe extern "system" fn(HANDLE) -> i32;
/// `ULONG NTAPI RtlNtStatusToDosError(NTSTATUS)`.
type NtStatusToDosFn = unsafe extern "system" fn(i32) -> u32;

/// The ntdll entry points, resolved once per process; `None` where an export is missing.
struct Ntdll {
    suspend: Option<NtProcessFn>,
    resume: Option<NtProcessFn>,
    status_to_dos: Option<NtStatusToDosFn>,
}

fn ntdll() -> &'static Ntdll {
    static NTDLL: OnceLock<Ntdll> = OnceLock::new();
    NTDLL.get_or_init(|| {
        let name: Vec<u16> = "ntdll.dll\0".encode_utf16().collect();
        // SAFETY: `name` is a NUL-terminated UTF-16 string that outlives the call; ntdll.dll is
        // mapped into every Win32 process, and the returned module handle is not owned (no
        // reference count), so nothing is leaked.
        let module = unsafe { GetModuleHandleW(name.as_ptr()) };
        if module.is_null() {
            return Ntdll {
                suspend: None,
                resume: None,
                status_to_dos: None,
            };
        }
        let lookup = |symbol: &CStr| -> FARPROC {
            // SAFETY: `module` is ntdll's handle, valid for the life of the process, and
            // `symbol` is a NUL-terminated ASCII name.
            unsafe { GetProcAddress(module, symbol.as_ptr()) }
        };
        // SAFETY: the three exports have exactly these signatures (`NTSTATUS NTAPI f(HANDLE)`
        // and `ULONG NTAPI f(NTSTATUS)`, stable since NT 5); FARPROC is a nullable function
        // pointer of the same size, and mapping over the `Option` keeps the null case.
        unsafe {
            Ntdll {
                suspend: lookup(c"NtSuspendProcess").map(|f| {
                    mem::transmute::<unsafe extern "system" fn() -> isize, NtProcessFn>(f)
                }),
                resume: lookup(c"NtResumeProcess").map(|f| {
                    mem::transmute::<unsafe extern "system" fn() -> isize, NtProcessFn>(f)
                }),
                status_to_dos: lookup(c"RtlNtStatusToDosError").map(|f| {
                    mem::transmute::<unsafe extern "system" fn() -> isize, NtStatusToDosFn>(f)
                }),
            }
        }
    })
}

/// An `io::Error` for a failed `NTSTATUS`, translated to the Win32 error where ntdll can.
fn ntstatus_error(call: &str, status: i32) -> io::Error {
    if let Some(to_dos) = ntdll().status_to_dos {
        // SAFETY: RtlNtStatusToDosError is a pure table lookup on an integer.
        let code = unsafe { to_dos(status) };
        // ERROR_MR_MID_NOT_FOUND (317): no Win32 equivalent.
        if code != 0 && code != 317 {
            return io::Error::from_raw_os_error(code as i32);
        }
    }
    io::Error::other(format!(
        "{call} failed with NTSTATUS {:#010x}",
        status as u32
    ))
}

/// `STATUS_PROCESS_IS_TERMINATING`: the target is already exiting; suspending it is moot.
const STATUS_PROCESS_IS_TERMINATING: i32 = 0xC000_010A_u32 as i32;

/// Suspends every thread of `process` once (needs `PROCESS_SUSPEND_RESUME`). A process that is
/// already exiting is not an error.
pub(crate) fn suspend(process: HANDLE) -> io::Result<()> {
    match ntdll().suspend {
        Some(f) => {
            // SAFETY: `f` is ntdll's NtSuspendProcess and `process` a valid handle.
            let status = unsafe { f(process) };
            if status < 0 && status != STATUS_PROCESS_IS_TERMINATING {
                return Err(ntstatus_error("NtSuspendProcess", status));
            }
            Ok(())
        }
        None => for_each_thread(process, |thread| {
            // SAFETY: `thread` is a valid handle opened with THREAD_SUSPEND_RESUME.
            unsafe { SuspendThread(thread) }
        }),
    }
}

/// Resumes every thread of `process` once (needs `PROCESS_SUSPEND_RESUME`): undoes one
/// [`suspend`], or the initial suspension of a `CREATE_SUSPENDED` process. Resuming a thread
/// that is not suspended is a no-op.
pub(crate) fn resume(process: HANDLE) -> io::Result<()> {
    match ntdll().resume {
        Some(f) => {
            // SAFETY: `f` is ntdll's NtResumeProcess and `process` a valid handle.
            let status = unsafe { f(process) };
            if status < 0 && status != STATUS_PROCESS_IS_TERMINATING {
                return Err(ntstatus_error("NtResumeProcess", status));
            }
            Ok(())
        }
        None => resume_threads(process),
    }
}

/// The Toolhelp fallback of [`resume`], also reachable directly so tests can exercise it.
pub(crate) fn resume_threads(process: HANDLE) -> io::Result<()> {
    for_each_thread(process, |thread| {
        // SAFETY: `thread` is a valid handle opened with THREAD_SUSPEND_RESUME.
        unsafe { ResumeThread(thread) }
    })
}

/// Calls `op` (`SuspendThread` or `ResumeThread`) on every thread of `process` found in a
/// Toolhelp snapshot. Threads that exit during the walk are skipped; the first real failure is
/// returned after the walk finishes.
fn for_each_thread(process: HANDLE, mut op: impl FnMut(HANDLE) -> u32) -> io::Result<()> {
    // SAFETY: GetProcessId only reads the handle's process id; 0 means failure.
    let pid = unsafe { GetProcessId(process) };
    if pid == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a thread snapshot of the whole system (the pid argument is ignored for threads);
    // the handle is ours, or INVALID_HANDLE_VALUE on failure.
    let snapshot = unsafe { Handle::from_raw(CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0)) }?;
    // SAFETY: THREADENTRY32 is plain data; dwSize is set below as the API requires.
    let mut entry: THREADENTRY32 = unsafe { mem::zeroed() };
    entry.dwSize = mem::size_of::<THREADENTRY32>() as u32;
    let mut first_error = None;
    // SAFETY: the snapshot handle is valid and `entry` is writable with dwSize set.
    let mut more = unsafe { Thread32First(snapshot.raw(), &mut entry) } != 0;
    while more {
        if entry.th32OwnerProcessID == pid {
            // SAFETY: OpenThread takes plain values; the result is checked for null.
            let raw = unsafe { OpenThread(THREAD_SUSPEND_RESUME, 0, entry.th32ThreadID) };
            // SAFETY: OpenThread returns a new handle owned by us, or null.
            if let Ok(thread) = unsafe { Handle::from_raw(raw) } {
                if op(thread.raw()) == u32::MAX && first_error.is_none() {
                    first_error = Some(io::Error::last_os_error());
                }
            }
        }
        // SAFETY: as for Thread32First.
        more = unsafe { Thread32Next(snapshot.raw(), &mut entry) } != 0;
    }
    first_error.map_or(Ok(()), Err)
}

/// Opens `pid` with `access`. A pid that does not exist is `ErrorKind::NotFound` (Windows says
/// `ERROR_INVALID_PARAMETER`).
pub(crate) fn open(pid: u32, access: PROCESS_ACCESS_RIGHTS) -> io::Result<Handle> {
    // SAFETY: OpenProcess takes plain values; the handle is not inheritable; result checked.
    let raw = unsafe { OpenProcess(access, 0, pid) };
    // SAFETY: OpenProcess returns a new handle owned by us, or null.
    unsafe { Handle::from_raw(raw) }.map_err(|e| {
        if e.raw_os_error() == Some(ERROR_INVALID_PARAMETER as i32) {
            io::Error::new(io::ErrorKind::NotFound, format!("no process with id {pid}"))
        } else {
            e
        }
    })
}

/// Committed private memory of `process` (`PrivateUsage`, the quantity a job memory limit
/// counts). Needs `PROCESS_QUERY_LIMITED_INFORMATION`.
pub(crate) fn private_bytes(process: HANDLE) -> io::Result<u64> {
    // SAFETY: plain data; `cb` is set below as the API requires.
    let mut counters: PROCESS_MEMORY_COUNTERS_EX = unsafe { mem::zeroed() };
    counters.cb = mem::size_of::<PROCESS_MEMORY_COUNTERS_EX>() as u32;
    // SAFETY: the pointer and `cb` describe `counters` (the _EX layout extends the base one,
    // which the API accepts when `cb` says so); the process handle is valid.
    check(unsafe {
        K32GetProcessMemoryInfo(
            process,
            ptr::from_mut(&mut counters).cast::<PROCESS_MEMORY_COUNTERS>(),
            counters.cb,
        )
    })?;
    Ok(counters.PrivateUsage as u64)
}

/// Whether this process runs under Wine (ntdll exports `wine_get_version`), for tests that
/// check behaviour Wine does not emulate.
#[cfg(test)]
pub(crate) fn running_under_wine() -> bool {
    let name: Vec<u16> = "ntdll.dll\0".encode_utf16().collect();
    // SAFETY: as in `ntdll()`: a NUL-terminated name, and an unowned module handle.
    let module = unsafe { GetModuleHandleW(name.as_ptr()) };
    // SAFETY: a valid module handle (or null, which GetProcAddress rejects) and a
    // NUL-terminated name.
    !module.is_null() && unsafe { GetProcAddress(module, c"wine_get_version".as_ptr()) }.is_some()
}
