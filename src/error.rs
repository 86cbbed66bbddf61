//! The crate's typed error.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How many bytes of stderr an error's `Display` shows at most (head and tail together).
pub(crate) const STDERR_DISPLAY_LIMIT: usize = 2048;

/// Which output stream of a child something refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// The child's standard output.
    Stdout,
    /// The child's standard error.
    Stderr,
}

impl fmt::Display for OutputStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        })
    }
}

/// Everything that can go wrong running a child.
///
/// Each variant carries the program (and, where it helps, the shell-escaped command line) plus
/// what a caller needs to act. `Display` shows the command line and a bounded head and tail of
/// stderr, so a log line alone explains a failure. Output captured before a failure stays
/// available in the variant (`stdout`/`stderr` fields).
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The program could not be found (not on `PATH`, or the path does not exist).
    NotFound {
        /// The program as given to [`Command::new`](crate::Command::new).
        program: String,
    },
    /// The OS refused to start the program (not executable, a directory, too many open files,
    /// ...).
    Spawn {
        /// The program as given.
        program: String,
        /// The shell-escaped command line.
        command_line: String,
        /// The OS error.
        source: io::Error,
    },
    /// The command was built with input the OS cannot take (a NUL byte, an empty program, an
    /// `=` in an environment variable name, a zero duration, ...), or a test double has no
    /// answer for it (a [`ScriptedRunner`](crate::ScriptedRunner) or cassette miss). Never
    /// retried.
    InvalidInput {
        /// The program as given.
        program: String,
        /// Which input was wrong, e.g. `"argument 2"` or `"environment variable name \"A=B\""`.
        what: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The working directory does not exist or is not a directory.
    InvalidWorkingDir {
        /// The program as given.
        program: String,
        /// The directory asked for.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// The child exited with a non-zero code where success was required.
    NonZeroExit {
        /// The program that failed (for a pipeline: the stage pipefail blames).
        program: String,
        /// The shell-escaped command line.
        command_line: String,
        /// The exit code.
        code: i32,
        /// Everything captured on stdout.
        stdout: String,
        /// Everything captured on stderr (the display shows a bounded head and tail).
        stderr: String,
        /// How many attempts ran under the command's retry policy (1 without one); this is the
        /// last one's exit.
        attempts: u32,
    },
    /// The child was killed (POSIX: by a signal) where success was required.
    Signalled {
        /// The program.
        program: String,
        /// The shell-escaped command line.
        command_line: String,
        /// The signal number; 0 on Windows, where a kill (the Job Object's, or this child's
        /// own `TerminateProcess`) involves no signal.
        signal: i32,
        /// Everything captured on stderr.
        stderr: String,
        /// How many attempts ran under the command's retry policy (1 without one).
        attempts: u32,
    },
    /// The run's own [`Command::timeout`](crate::Command::timeout) expired; the tree was killed.
    Timeout {
        /// The program.
        program: String,
        /// The shell-escaped command line.
        command_line: String,
        /// The timeout that expired.
        timeout: Duration,
        /// Output captured before the deadline.
        stdout: String,
        /// Stderr captured before the deadline.
        stderr: String,
        /// How many attempts ran under the command's retry policy (1 without one); every one
        /// of them may have timed out.
        attempts: u32,
    },
    /// A readiness probe did not pass in time, or can no longer pass. The child is **not**
    /// killed.
    NotReady {
        /// The program.
        program: String,
        /// What was awaited and why it failed.
        reason: String,
    },
    /// The run was cancelled through its cancellation token; the tree was killed.
    Cancelled {
        /// The program.
        program: String,
    },
    /// A resource limit could not be applied, or the tree was killed for exceeding one.
    ResourceLimit {
        /// The limit concerned, e.g. `"memory_max"`.
        what: String,
        /// Details: why it cannot be enforced, or what was exceeded.
        reason: String,
    },
    /// The platform cannot honour a requested knob (e.g. `uid` on Windows).
    Unsupported {
        /// The knob or operation.
        what: String,
        /// The platform or mechanism that lacks it.
        platform: String,
    },
    /// Output was not valid UTF-8 and [`Encoding::Utf8Strict`](crate::Encoding) was asked for.
    InvalidUtf8 {
        /// The program.
        program: String,
        /// Which stream.
        stream: OutputStream,
        /// Byte offset of the first invalid sequence.
        valid_up_to: usize,
        /// The raw bytes, so nothing is lost.
        bytes: Vec<u8>,
    },
    /// An I/O error talking to the child or the OS container.
    Io {
        /// The program, when the error concerns one run (empty for group operations).
        program: String,
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
}

impl Error {
    /// The program this error concerns (empty for group-level errors).
    pub fn program(&self) -> &str {
        match self {
            Error::NotFound { program }
            | Error::Spawn { program, .. }
            | Error::InvalidInput { program, .. }
            | Error::InvalidWorkingDir { program, .. }
            | Error::NonZeroExit { program, .. }
            | Error::Signalled { program, .. }
            | Error::Timeout { program, .. }
            | Error::NotReady { program, .. }
            | Error::Cancelled { program }
            | Error::InvalidUtf8 { program, .. }
            | Error::Io { program, .. } => program,
            Error::ResourceLimit { .. } | Error::Unsupported { .. } => "",
        }
    }

    /// The exit code, for [`Error::NonZeroExit`].
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Error::NonZeroExit { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The captured stderr, where the variant carries it.
    pub fn stderr(&self) -> Option<&str> {
        match self {
            Error::NonZeroExit { stderr, .. }
            | Error::Signalled { stderr, .. }
            | Error::Timeout { stderr, .. } => Some(stderr),
            _ => None,
        }
    }

    /// How many attempts ran before this error, for the errors built from a finished run
    /// ([`Error::NonZeroExit`], [`Error::Signalled`], [`Error::Timeout`]): more than 1 when the
    /// command's [`RetryPolicy`](crate::RetryPolicy) re-ran it. `None` for the other variants
    /// (a spawn error ends a retried run only once retrying stopped; its count is not kept).
    pub fn attempts(&self) -> Option<u32> {
        match self {
            Error::NonZeroExit { attempts, .. }
            | Error::Signalled { attempts, .. }
            | Error::Timeout { attempts, .. } => Some(*attempts),
            _ => None,
        }
    }

    /// Whether this error is a timeout of the run itself.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    pub(crate) fn io(program: &str, context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            program: program.to_owned(),
            context: context.into(),
            source,
        }
    }

    pub(crate) fn invalid(
        program: &str,
        what: impl Into<String>,
        reason: impl Into<String>,
    ) -> Error {
        Error::InvalidInput {
            program: program.to_owned(),
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(what: impl Into<String>) -> Error {
        Error::Unsupported {
            what: what.into(),
            platform: std::env::consts::OS.to_owned(),
        }
    }
}

/// Writes `text` bounded to `limit` bytes: the head and the tail, with the elided middle counted.
pub(crate) fn write_bounded(f: &mut fmt::Formatter<'_>, text: &str, limit: usize) -> fmt::Result {
    let text = text.trim_end();
    if text.len() <= limit {
        return f.write_str(text);
    }
    let half = limit / 2;
    let mut head_end = half;
    while !text.is_char_boundary(head_end) {
        head_end -= 1;
    }
    let mut tail_start = text.len() - half;
    while !text.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    write!(
        f,
        "{}\n[... {} bytes elided ...]\n{}",
        &text[..head_end],
        tail_start - head_end,
        &text[tail_start..]
    )
}

fn write_stderr(f: &mut fmt::Formatter<'_>, stderr: &str) -> fmt::Result {
    if stderr.trim().is_empty() {
        return Ok(());
    }
    f.write_str("\n--- stderr ---\n")?;
    write_bounded(f, stderr, STDERR_DISPLAY_LIMIT)
}

/// ` (after N attempts)` when a retry policy ran the command more than once.
fn write_attempts(f: &mut fmt::Formatter<'_>, attempts: u32) -> fmt::Result {
    if attempts > 1 {
        write!(f, " (after {attempts} attempts)")?;
    }
    Ok(())
}

/// Longest command line `Display` shows; the field itself keeps it whole.
const MAX_SHOWN_COMMAND_LINE: usize = 1024;

/// A command line as `Display` shows it: whole up to [`MAX_SHOWN_COMMAND_LINE`] bytes, else
/// its head and how much was left out (a 256 KiB argument must not make a 256 KiB log line).
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.len() <= MAX_SHOWN_COMMAND_LINE {
            return f.write_str(s);
        }
        let mut end = MAX_SHOWN_COMMAND_LINE;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{}… ({} more bytes)", &s[..end], s.len() - end)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound { program } => {
                write!(
                    f,
                    "program not found: `{program}` (not on PATH or no such file)"
                )
            }
            Error::Spawn {
                command_line,
                source,
                ..
            } => write!(f, "failed to start `{}`: {source}", Shown(command_line)),
            Error::InvalidInput {
                program,
                what,
                reason,
            } => write!(f, "invalid input for `{program}`: {what}: {reason}"),
            Error::InvalidWorkingDir {
                program,
                path,
                reason,
            } => write!(
                f,
                "cannot run `{program}` in working directory {}: {reason}",
                path.display()
            ),
            Error::NonZeroExit {
                command_line,
                code,
                stderr,
                attempts,
                ..
            } => {
                write!(f, "`{}` exited with code {code}", Shown(command_line))?;
                write_attempts(f, *attempts)?;
                write_stderr(f, stderr)
            }
            Error::Signalled {
                command_line,
                signal,
                stderr,
                attempts,
                ..
            } => {
                if *signal == 0 {
                    // Windows: killed through the Job Object, no signal involved.
                    write!(f, "`{}` was killed", Shown(command_line))?;
                } else {
                    write!(f, "`{}` was killed by signal {signal}", Shown(command_line))?;
                }
                write_attempts(f, *attempts)?;
                write_stderr(f, stderr)
            }
            Error::Timeout {
                command_line,
                timeout,
                stderr,
                attempts,
                ..
            } => {
                write!(
                    f,
                    "`{}` timed out after {timeout:?}; the process tree was killed",
                    Shown(command_line)
                )?;
                write_attempts(f, *attempts)?;
                write_stderr(f, stderr)
            }
            Error::NotReady { program, reason } => write!(f, "`{program}` not ready: {reason}"),
            Error::Cancelled { program } => write!(f, "`{program}` was cancelled"),
            Error::ResourceLimit { what, reason } => write!(f, "resource limit {what}: {reason}"),
            Error::Unsupported { what, platform } => {
                write!(f, "{what} is not supported on {platform}")
            }
            Error::InvalidUtf8 {
                program,
                stream,
                valid_up_to,
                bytes,
            } => write!(
                f,
                "`{program}` wrote invalid UTF-8 to {stream} at byte {valid_up_to} of {}",
                bytes.len()
            ),
            Error::Io {
                program,
                context,
                source,
            } => {
                if program.is_empty() {
                    write!(f, "{context}: {source}")
                } else {
                    write!(f, "`{program}`: {context}: {source}")
                }
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Spawn { source, .. } | Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Quotes one word for a POSIX shell when it needs it, so a logged command line can be pasted.
pub(crate) fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_bounds_a_huge_command_line() {
        let long = format!("tool {}", "é".repeat(100_000));
        let e = Error::Spawn {
            program: "tool".into(),
            command_line: long.clone(),
            source: std::io::Error::from_raw_os_error(7),
        };
        let shown = e.to_string();
        assert!(
            shown.len() < MAX_SHOWN_COMMAND_LINE + 200,
            "{}",
            shown.len()
        );
        assert!(shown.starts_with("failed to start `tool éé"));
        assert!(shown.contains("more bytes)"));
        match e {
            Error::Spawn { command_line, .. } => assert_eq!(command_line, long),
            _ => unreachable!(),
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("abc"), "abc");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn display_bounds_stderr() {
        let e = Error::NonZeroExit {
            program: "p".into(),
            command_line: "p x".into(),
            code: 3,
            stdout: String::new(),
            stderr: format!("{}{}", "a".repeat(10_000), "END"),
            attempts: 1,
        };
        let s = e.to_string();
        assert!(s.starts_with("`p x` exited with code 3"));
        assert!(s.contains("bytes elided"));
        assert!(s.ends_with("END"));
        assert!(s.len() < STDERR_DISPLAY_LIMIT + 200);
    }

    #[test]
    fn display_names_attempts_only_when_retried() {
        let e = |attempts| Error::Timeout {
            program: "p".into(),
            command_line: "p".into(),
            timeout: Duration::from_secs(1),
            stdout: String::new(),
            stderr: String::new(),
            attempts,
        };
        assert!(!e(1).to_string().contains("attempts"));
        assert!(e(3).to_string().contains("(after 3 attempts)"));
        assert_eq!(e(3).attempts(), Some(3));
        let cancelled = Error::Cancelled {
            program: "p".into(),
        };
        assert_eq!(cancelled.attempts(), None);
    }
}
