//! A thread that lives as long as the process, for spawns armed with `PR_SET_PDEATHSIG`.
//!
//! The parent-death signal fires when the *thread* that created the child exits, not the
//! process (prctl(2): "the parent" is the creating thread). Spawned from a tokio blocking-pool
//! thread that retires after ten idle seconds, or from a runtime inside a short-lived thread,
//! a `kill_on_parent_death` child would be SIGKILLed while its owner lives on. Such spawns run
//! here instead: one thread, started on first use, that never exits before the process does.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// The lasting thread's inbox, or `None` when it could not be started.
fn inbox() -> Option<&'static Mutex<mpsc::Sender<Job>>> {
    static INBOX: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();
    INBOX
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("processkit-spawner".into())
                .spawn(move || {
                    for job in rx {
                        job();
                    }
                })
                .ok()
                .map(|_| Mutex::new(tx))
        })
        .as_ref()
}

/// Runs `f` on the lasting thread and returns its result (a panic in `f` is resumed here).
/// Falls back to running `f` on the calling thread when the lasting thread cannot be started.
pub(crate) fn run<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let Some(inbox) = inbox() else {
        return f();
    };
    let (done_tx, done_rx) = mpsc::sync_channel::<std::thread::Result<T>>(1);
    let job = move || {
        let r = catch_unwind(AssertUnwindSafe(f));
        let _ = done_tx.send(r);
    };
    let job: Box<dyn FnOnce() + Send + '_> = Box::new(job);
    // SAFETY: erases the borrow lifetime of `f` so the job can cross to the lasting thread.
    // Sound because this function does not return before the job has finished with every
    // borrow: `f` is consumed by the call inside the job, whose very last use of anything is
    // the send that `done_rx.recv()` below waits for (what remains, `done_tx`, is owned). If
    // the job can no longer be delivered it is handed back and run here instead.
    let job: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(job) };
    let sent = inbox.lock().unwrap_or_else(|e| e.into_inner()).send(job);
    if let Err(mpsc::SendError(job)) = sent {
        job();
    }
    match done_rx.recv() {
        Ok(Ok(v)) => v,
        Ok(Err(panic)) => resume_unwind(panic),
        // The job always sends before it is dropped; a dropped job without a send would mean
        // the lasting thread died mid-job, which `catch_unwind` rules out.
        Err(_) => unreachable!("the spawner thread dropped a job without answering"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_one_lasting_thread_and_returns_borrowed_work() {
        let data = [1, 2, 3];
        let (sum, name_a) = run(|| {
            (
                data.iter().sum::<i32>(),
                std::thread::current().name().map(str::to_owned),
            )
        });
        assert_eq!(sum, 6);
        assert_eq!(name_a.as_deref(), Some("processkit-spawner"));
        let id_a = run(|| std::thread::current().id());
        // From another (short-lived) thread: the same lasting thread does the work.
        let id_b = std::thread::spawn(|| run(|| std::thread::current().id()))
            .join()
            .unwrap();
        assert_eq!(id_a, id_b);
        assert_ne!(id_a, std::thread::current().id());
    }

    #[test]
    fn a_panic_reaches_the_caller_and_the_thread_lives_on() {
        let r = catch_unwind(|| run(|| panic!("in the job")));
        assert!(r.is_err());
        assert_eq!(run(|| 7), 7);
    }
}
