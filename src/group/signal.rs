//! Whole-tree signals.

/// A signal to deliver to every member of a [`ProcessGroup`](crate::ProcessGroup).
///
/// # Platform
/// POSIX delivers every variant. On Windows only [`Signal::Kill`] is deliverable (it maps to
/// `TerminateJobObject`); every other signal returns [`Error::Unsupported`](crate::Error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(not(feature = "process-control"), allow(dead_code))]
pub enum Signal {
    /// `SIGHUP`: hang-up, conventionally "reload configuration".
    Hup,
    /// `SIGINT`: interrupt, as from Ctrl-C.
    Int,
    /// `SIGQUIT`: quit with a core dump.
    Quit,
    /// `SIGTERM`: polite termination request.
    Term,
    /// `SIGKILL`: immediate termination; takes the same whole-tree path as
    /// [`ProcessGroup::terminate_all`](crate::ProcessGroup::terminate_all).
    Kill,
    /// `SIGUSR1`: user-defined.
    Usr1,
    /// `SIGUSR2`: user-defined.
    Usr2,
    /// `SIGSTOP`: stop (cannot be caught).
    Stop,
    /// `SIGCONT`: continue a stopped process.
    Cont,
    /// `SIGALRM`: timer alarm.
    Alrm,
    /// `SIGWINCH`: terminal window size changed.
    Winch,
}

impl Signal {
    /// The conventional name, e.g. `"SIGTERM"`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Hup => "SIGHUP",
            Signal::Int => "SIGINT",
            Signal::Quit => "SIGQUIT",
            Signal::Term => "SIGTERM",
            Signal::Kill => "SIGKILL",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::Stop => "SIGSTOP",
            Signal::Cont => "SIGCONT",
            Signal::Alrm => "SIGALRM",
            Signal::Winch => "SIGWINCH",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
