//! The Job Object itself: an owned handle type, creation with kill-on-close and the optional
//! limits, and thin safe wrappers over the job calls the container needs.

use std::io;
use std::mem::{self, MaybeUninit};
use std::ptr;

use windows_sys::Win32::Foundation::{CloseHandle, ERROR_MORE_DATA, HANDLE, INVALID_HANDLE_VALUE};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, IsProcessInJob,
    JobObjectBasicAccountingInformation, JobObjectBasicProcessIdList,
    JobObjectCpuRateControlInformation, JobObjectExtendedLimitInformation,
    QueryInformationJobObject, SetInformationJobObject, TerminateJobObject, JOBOBJECTINFOCLASS,
    JOBOBJECT_BASIC_ACCOUNTING_INFORMATION, JOBOBJECT_BASIC_PROCESS_ID_LIST,
    JOBOBJECT_CPU_RATE_CONTROL_INFORMATION, JOBOBJECT_CPU_RATE_CONTROL_INFORMATION_0,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JOB_OBJECT_CPU_RATE_CONTROL_ENABLE,
    JOB_OBJECT_CPU_RATE_CONTROL_HARD_CAP, JOB_OBJECT_LIMIT_ACTIVE_PROCESS,
    JOB_OBJECT_LIMIT_JOB_MEMORY, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};
use windows_sys::Win32::System::Threading::{GetActiveProcessorCount, ALL_PROCESSOR_GROUPS};

use crate::sys::{ContainerOptions, CreateError};

/// An owned kernel handle, closed exactly once on drop.
///
/// Never null and never `INVALID_HANDLE_VALUE`: constructors turn those into the last OS error.
#[derive(Debug)]
pub(crate) struct Handle(HANDLE);

// SAFETY: a kernel handle is a process-wide table index, not tied to the thread that opened it;
// every kernel call on it is thread safe, and this type only closes it once, on drop.
unsafe impl Send for Handle {}
// SAFETY: as above; shared references only pass the raw value to thread-safe kernel calls.
unsafe impl Sync for Handle {}

impl Handle {
    /// Takes ownership of `raw` as returned by a Win32 call, or returns the thread's last OS
    /// error when `raw` is one of the failure values (null or `INVALID_HANDLE_VALUE`).
    ///
    /// # Safety
    /// `raw` must be a failure value or a handle the caller owns and nothing else closes.
    pub(crate) unsafe fn from_raw(raw: HANDLE) -> io::Result<Handle> {
        if raw.is_null() || raw == INVALID_HANDLE_VALUE {
            Err(io::Error::last_os_error())
        } else {
            Ok(Handle(raw))
        }
    }

    /// The raw value, borrowed for a kernel call; still owned by `self`.
    pub(crate) fn raw(&self) -> HANDLE {
        self.0
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: `self.0` is a valid handle we own (checked in `from_raw`), closed only here.
        unsafe {
            CloseHandle(self.0);
        }
    }
}

/// Turns a Win32 `BOOL` result into `io::Result`, reading the last error on failure.
pub(crate) fn check(ok: i32) -> io::Result<()> {
    if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A Job Object with `JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`: closing its only handle (ours, never
/// inherited) terminates every process in it.
#[derive(Debug)]
pub(crate) struct Job {
    handle: Handle,
}

impl Job {
    /// Creates an anonymous, non-inheritable job with kill-on-close, then applies the limits in
    /// `opts` one at a time so a refusal names the limit it concerns.
    pub(crate) fn create(opts: &ContainerOptions) -> Result<Job, CreateError> {
        // SAFETY: null security attributes (default descriptor, handle not inheritable) and a
        // null name (anonymous job) are both documented as valid; the result is checked.
        let raw = unsafe { CreateJobObjectW(ptr::null(), ptr::null()) };
        // SAFETY: CreateJobObjectW returns a new handle owned by us, or null on failure.
        let handle = unsafe { Handle::from_raw(raw) }?;
        let job = Job { handle };

        // SAFETY: JOBOBJECT_EXTENDED_LIMIT_INFORMATION is plain data; all-zero means "no limit".
        let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { mem::zeroed() };
        limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        job.set_extended_limits(&limits)?;

        if let Some(max) = opts.memory_max {
            let bytes = usize::try_from(max).map_err(|_| CreateError::Limit {
                what: "memory_max",
                reason: format!("{max} bytes exceeds this platform's address space"),
            })?;
            limits.JobMemoryLimit = bytes;
            limits.BasicLimitInformation.LimitFlags |= JOB_OBJECT_LIMIT_JOB_MEMORY;
            job.set_extended_limits(&limits)
                .map_err(|e| CreateError::Limit {
                    what: "memory_max",
                    reason: format!("the Job Object refused JOB_OBJECT_LIMIT_JOB_MEMORY: {e}"),
                })?;
        }

        if let Some(max) = opts.max_processes {
            let count = u32::try_from(max).map_err(|_| CreateError::Limit {
                what: "max_processes",
                reason: format!("{max} exceeds the Job Object maximum of {}", u32::MAX),
            })?;
            limits.BasicLimitInformation.ActiveProcessLimit = count;
            limits.BasicLimitInformation.LimitFlags |= JOB_OBJECT_LIMIT_ACTIVE_PROCESS;
            job.set_extended_limits(&limits)
                .map_err(|e| CreateError::Limit {
                    what: "max_processes",
                    reason: format!("the Job Object refused JOB_OBJECT_LIMIT_ACTIVE_PROCESS: {e}"),
                })?;
        }

        if let Some(quota) = opts.cpu_quota {
            let rate = cpu_rate(quota, logical_cpus()).ok_or_else(|| CreateError::Limit {
                what: "cpu_quota",
                reason: format!("{quota} is not a positive, finite fraction of a core"),
            })?;
            job.set_cpu_rate(rate).map_err(|e| CreateError::Limit {
                what: "cpu_quota",
                reason: format!("the Job Object refused a hard CPU rate cap of {rate}/10000: {e}"),
            })?;
        }
        Ok(job)
    }

    /// The raw job handle, for kernel calls; still owned by the job.
    pub(crate) fn raw(&self) -> HANDLE {
        self.handle.raw()
    }

    fn set_extended_limits(&self, limits: &JOBOBJECT_EXTENDED_LIMIT_INFORMATION) -> io::Result<()> {
        // SAFETY: the class matches the struct, the pointer and size describe `*limits`, which
        // outlives the call, and the job handle is valid.
        check(unsafe {
            SetInformationJobObject(
                self.raw(),
                JobObjectExtendedLimitInformation,
                ptr::from_ref(limits).cast(),
                size_of_u32::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>(),
            )
        })
    }

    fn set_cpu_rate(&self, rate: u32) -> io::Result<()> {
        let info = JOBOBJECT_CPU_RATE_CONTROL_INFORMATION {
            ControlFlags: JOB_OBJECT_CPU_RATE_CONTROL_ENABLE | JOB_OBJECT_CPU_RATE_CONTROL_HARD_CAP,
            Anonymous: JOBOBJECT_CPU_RATE_CONTROL_INFORMATION_0 { CpuRate: rate },
        };
        // SAFETY: the class matches the struct, the pointer and size describe `info`, which
        // outlives the call, and the job handle is valid.
        check(unsafe {
            SetInformationJobObject(
                self.raw(),
                JobObjectCpuRateControlInformation,
                ptr::from_ref(&info).cast(),
                size_of_u32::<JOBOBJECT_CPU_RATE_CONTROL_INFORMATION>(),
            )
        })
    }

    /// `TerminateJobObject`: ends every process in the job with `exit_code`. Succeeds on an
    /// empty job, so it is idempotent.
    pub(crate) fn terminate(&self, exit_code: u32) -> io::Result<()> {
        // SAFETY: the job handle is valid and has JOB_OBJECT_TERMINATE (we created it).
        check(unsafe { TerminateJobObject(self.raw(), exit_code) })
    }

    /// `AssignProcessToJobObject`. `process` needs `PROCESS_SET_QUOTA | PROCESS_TERMINATE`.
    pub(crate) fn assign(&self, process: HANDLE) -> io::Result<()> {
        // SAFETY: both handles are valid for the duration of the call (the caller owns or
        // borrows `process`); the call only reads them.
        check(unsafe { AssignProcessToJobObject(self.raw(), process) })
    }

    /// `IsProcessInJob`: whether `process` is in this job (directly or through a nested child
    /// job). `process` needs `PROCESS_QUERY_LIMITED_INFORMATION` (Wine insists on
    /// `PROCESS_QUERY_INFORMATION`; see `Container::is_member`).
    pub(crate) fn contains(&self, process: HANDLE) -> io::Result<bool> {
        let mut result = 0;
        // SAFETY: both handles are valid for the call and `result` is a live, writable BOOL.
        check(unsafe { IsProcessInJob(process, self.raw(), &mut result) })?;
        Ok(result != 0)
    }

    /// The ids of every process in the job now (`JobObjectBasicProcessIdList`), growing the
    /// buffer until the whole list fits. A tree that keeps growing faster than we can read is
    /// reported as far as the last, largest read got.
    pub(crate) fn process_ids(&self) -> io::Result<Vec<u32>> {
        // The list is a header of two u32 counts followed by usize ids; the header fits in two
        // usize words on every target, so a Vec<usize> gives a correctly aligned buffer.
        let header = mem::offset_of!(JOBOBJECT_BASIC_PROCESS_ID_LIST, ProcessIdList);
        let header_words = header.div_ceil(mem::size_of::<usize>());
        let mut capacity = 32usize;
        for attempt in 0..16 {
            let mut buf = vec![0usize; header_words + capacity];
            let bytes = u32::try_from(buf.len() * mem::size_of::<usize>())
                .map_err(|_| io::Error::other("job process list too large"))?;
            // SAFETY: the class matches the buffer layout (header then usize ids), the pointer
            // and size describe `buf`, which outlives the call, and the job handle is valid.
            let ok = unsafe {
                QueryInformationJobObject(
                    self.raw(),
                    JobObjectBasicProcessIdList,
                    buf.as_mut_ptr().cast(),
                    bytes,
                    ptr::null_mut(),
                )
            };
            if ok == 0 {
                let err = io::Error::last_os_error();
                if err.raw_os_error() == Some(ERROR_MORE_DATA as i32) && attempt < 15 {
                    capacity *= 2;
                    continue;
                }
                return Err(err);
            }
            let list = buf.as_ptr().cast::<JOBOBJECT_BASIC_PROCESS_ID_LIST>();
            // SAFETY: `buf` is aligned for usize (and so for the u32 header) and at least as
            // large as the header; the kernel filled the header on success.
            let (assigned, listed) = unsafe {
                (
                    (*list).NumberOfAssignedProcesses,
                    (*list).NumberOfProcessIdsInList,
                )
            };
            let listed = (listed as usize).min(capacity);
            if (assigned as usize) > listed && attempt < 15 {
                capacity = (assigned as usize).max(capacity) * 2;
                continue;
            }
            let ids = &buf[header_words..header_words + listed];
            // Process ids are DWORDs stored in ULONG_PTR slots.
            return Ok(ids.iter().map(|&id| id as u32).collect());
        }
        unreachable!("the last attempt always returns")
    }

    /// `JobObjectBasicAccountingInformation`: total user and kernel CPU time (100 ns ticks) and
    /// the active and total process counts. (The `...AndIo...` class adds I/O counters we do not
    /// report, and Wine does not implement it.)
    pub(crate) fn accounting(&self) -> io::Result<JOBOBJECT_BASIC_ACCOUNTING_INFORMATION> {
        // SAFETY: the struct is the one this class fills, and it is plain data.
        unsafe { self.query(JobObjectBasicAccountingInformation) }
    }

    /// `JobObjectExtendedLimitInformation`: the limits, plus the peak job memory.
    pub(crate) fn extended_limits(&self) -> io::Result<JOBOBJECT_EXTENDED_LIMIT_INFORMATION> {
        // SAFETY: the struct is the one this class fills, and it is plain data.
        unsafe { self.query(JobObjectExtendedLimitInformation) }
    }

    /// Reads one fixed-size information class.
    ///
    /// # Safety
    /// `T` must be the plain-data struct the kernel writes for `class` (any bit pattern valid).
    unsafe fn query<T>(&self, class: JOBOBJECTINFOCLASS) -> io::Result<T> {
        let mut out = MaybeUninit::<T>::zeroed();
        // SAFETY: the pointer and size describe `out`, which outlives the call; the caller
        // guarantees `T` matches `class`; the job handle is valid.
        check(unsafe {
            QueryInformationJobObject(
                self.raw(),
                class,
                out.as_mut_ptr().cast(),
                size_of_u32::<T>(),
                ptr::null_mut(),
            )
        })?;
        // SAFETY: zero-initialised and then filled by the kernel; the caller guarantees any bit
        // pattern is a valid `T`.
        Ok(unsafe { out.assume_init() })
    }
}

fn size_of_u32<T>() -> u32 {
    // Every Job Object information struct is a few hundred bytes at most.
    mem::size_of::<T>() as u32
}

/// Logical processors in the whole machine (every processor group), falling back to
/// `GetSystemInfo` (the current group only) if the former reports nothing.
pub(crate) fn logical_cpus() -> u32 {
    // SAFETY: GetActiveProcessorCount takes a plain group number and touches no memory.
    let all = unsafe { GetActiveProcessorCount(ALL_PROCESSOR_GROUPS) };
    if all > 0 {
        return all;
    }
    let mut info = MaybeUninit::<SYSTEM_INFO>::zeroed();
    // SAFETY: GetSystemInfo fills the struct behind a valid, writable pointer and cannot fail.
    let info = unsafe {
        GetSystemInfo(info.as_mut_ptr());
        info.assume_init()
    };
    info.dwNumberOfProcessors.max(1)
}

/// The job CPU rate (cycles per 10 000 of the whole machine) for a quota given as a fraction of
/// one core on a machine with `cpus` logical processors, clamped to `1..=10000`. `None` when
/// the quota is not a positive finite number.
pub(crate) fn cpu_rate(quota: f64, cpus: u32) -> Option<u32> {
    if !quota.is_finite() || quota <= 0.0 {
        return None;
    }
    let rate = (quota / f64::from(cpus.max(1)) * 10_000.0).round();
    Some(rate.clamp(1.0, 10_000.0) as u32)
}
