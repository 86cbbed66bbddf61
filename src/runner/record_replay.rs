//! [`RecordReplayRunner`]: record real runs into a JSON cassette once, replay them hermetically
//! (feature `record`).
//!
//! # The cassette format (version 1)
//!
//! ```json
//! {
//!   "version": 1,
//!   "entries": [
//!     {
//!       "program": "git",
//!       "args": ["--version"],
//!       "cwd": null,
//!       "has_stdin": false,
//!       "env": ["GIT_DIR"],
//!       "code": 0,
//!       "signal": null,
//!       "timed_out": false,
//!       "stdout": "git version 2.43.0\n",
//!       "stderr": ""
//!     }
//!   ]
//! }
//! ```
//!
//! `env` holds only the sorted, de-duplicated **names** of the command's environment overrides:
//! values never reach the file. Stdout that is not valid UTF-8 is kept exactly in an extra
//! `stdout_bytes` array (and `stdout` holds its lossy text for reading). A program that was not
//! installed when recording is an entry with `"not_found": true` (and a null `code`), which
//! replays as [`Error::NotFound`], so "is the tool there?" fallbacks replay faithfully; other
//! spawn failures are not recorded.

use std::collections::HashMap;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::result::ProcessResult;
use crate::running::RunningProcess;
use crate::sys::ExitInfo;
use crate::Command;

use super::{BoxFuture, ProcessRunner, Reply};

/// The cassette format this version reads and writes.
const FORMAT_VERSION: u64 = 1;

/// One recorded run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    program: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    cwd: Option<String>,
    #[serde(default)]
    has_stdin: bool,
    #[serde(default)]
    env: Vec<String>,
    code: Option<i32>,
    #[serde(default)]
    signal: Option<i32>,
    #[serde(default)]
    timed_out: bool,
    #[serde(default)]
    stdout: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stdout_bytes: Option<Vec<u8>>,
    #[serde(default)]
    stderr: String,
    /// The program was not installed when recording: replays as [`Error::NotFound`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    not_found: bool,
}

/// What an invocation is matched on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    program: String,
    args: Vec<String>,
    cwd: Option<String>,
    has_stdin: bool,
}

impl Key {
    fn of(cmd: &Command) -> Key {
        Key {
            program: cmd.program_name(),
            args: cmd.args_lossy(),
            cwd: cmd.cwd.as_ref().map(|p| p.to_string_lossy().into_owned()),
            has_stdin: cmd.has_stdin(),
        }
    }
}

impl Entry {
    fn key(&self) -> Key {
        Key {
            program: self.program.clone(),
            args: self.args.clone(),
            cwd: self.cwd.clone(),
            has_stdin: self.has_stdin,
        }
    }

    fn record(cmd: &Command, r: &ProcessResult<Vec<u8>>) -> Entry {
        let key = Key::of(cmd);
        let env = Entry::env_names(cmd);
        let (stdout, stdout_bytes) = match std::str::from_utf8(&r.stdout) {
            Ok(s) => (s.to_owned(), None),
            Err(_) => (
                String::from_utf8_lossy(&r.stdout).into_owned(),
                Some(r.stdout.clone()),
            ),
        };
        Entry {
            program: key.program,
            args: key.args,
            cwd: key.cwd,
            has_stdin: key.has_stdin,
            env,
            code: r.code,
            signal: r.signal,
            timed_out: r.timed_out,
            stdout,
            stdout_bytes,
            stderr: r.stderr.clone(),
            not_found: false,
        }
    }

    /// The entry for a run whose program was not installed.
    fn record_not_found(cmd: &Command) -> Entry {
        let key = Key::of(cmd);
        Entry {
            program: key.program,
            args: key.args,
            cwd: key.cwd,
            has_stdin: key.has_stdin,
            env: Entry::env_names(cmd),
            code: None,
            signal: None,
            timed_out: false,
            stdout: String::new(),
            stdout_bytes: None,
            stderr: String::new(),
            not_found: true,
        }
    }

    /// The sorted, de-duplicated names of the command's environment overrides (never values).
    fn env_names(cmd: &Command) -> Vec<String> {
        let mut env: Vec<String> = cmd
            .env
            .iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        env.sort();
        env.dedup();
        env
    }

    fn reply(&self) -> Reply {
        if self.not_found {
            return Reply::not_found();
        }
        let stdout = match &self.stdout_bytes {
            Some(b) => b.clone(),
            None => self.stdout.clone().into_bytes(),
        };
        Reply::from_parts(
            stdout,
            self.stderr.clone().into_bytes(),
            ExitInfo {
                code: self.code,
                signal: self.signal,
            },
            self.timed_out,
        )
    }
}

#[derive(Serialize)]
struct FileOut<'a> {
    version: u64,
    entries: &'a [Entry],
}

#[derive(Deserialize)]
struct FileIn {
    entries: Vec<Entry>,
}

/// The contents of a cassette file: the recorded runs in capture order.
///
/// Mostly internal to [`RecordReplayRunner`]; public so a cassette can be validated or
/// inspected (and fuzzed) without a runner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cassette {
    entries: Vec<Entry>,
}

impl Cassette {
    /// Parses a cassette from its JSON text.
    ///
    /// # Errors
    /// [`Error::Io`] with kind `InvalidData` when the text is not a cassette, is corrupt, or
    /// has a format `version` this processkit does not read.
    pub fn from_json(json: &[u8]) -> Result<Cassette> {
        Cassette::parse(json).map_err(|msg| {
            Error::io(
                "",
                "parsing a processkit cassette",
                io::Error::new(io::ErrorKind::InvalidData, msg),
            )
        })
    }

    /// Reads and parses the cassette at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file: kind `NotFound` when it does not exist, `InvalidData`
    /// when it is corrupt or has an unknown format version.
    pub fn load(path: impl AsRef<Path>) -> Result<Cassette> {
        let path = path.as_ref();
        let context = || format!("reading cassette {}", path.display());
        let bytes = std::fs::read(path).map_err(|e| Error::io("", context(), e))?;
        Cassette::parse(&bytes).map_err(|msg| {
            Error::io(
                "",
                context(),
                io::Error::new(io::ErrorKind::InvalidData, msg),
            )
        })
    }

    fn parse(json: &[u8]) -> std::result::Result<Cassette, String> {
        let value: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| format!("not a processkit cassette (invalid JSON: {e})"))?;
        let Some(obj) = value.as_object() else {
            return Err("not a processkit cassette (expected a JSON object)".into());
        };
        match obj.get("version") {
            None => return Err("not a processkit cassette (no `version` field)".into()),
            Some(v) if v.as_u64() == Some(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "unsupported cassette format version {v} (this processkit reads version \
                     {FORMAT_VERSION}); re-record the cassette or upgrade processkit"
                ))
            }
        }
        let file: FileIn =
            serde_json::from_value(value).map_err(|e| format!("corrupt cassette: {e}"))?;
        Ok(Cassette {
            entries: file.entries,
        })
    }

    /// The cassette as pretty-printed JSON (what [`RecordReplayRunner::save`] writes).
    ///
    /// # Panics
    /// Never: every field is a string, a number or a list of them, which JSON always encodes.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(&FileOut {
            version: FORMAT_VERSION,
            entries: &self.entries,
        })
        .expect("a cassette always serializes");
        s.push('\n');
        s
    }

    /// How many runs are recorded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The shell-escaped command lines of the recorded runs, in capture order.
    pub fn command_lines(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| crate::result::command_line(&e.program, &e.args))
            .collect()
    }
}

enum Mode {
    Record(Box<dyn ProcessRunner>),
    Replay,
}

struct State {
    cassette: Cassette,
    /// Replay: how many times each key was served.
    served: HashMap<Key, usize>,
    /// Record: entries not yet saved.
    dirty: bool,
}

/// A runner that records real runs into a JSON cassette, or replays a cassette without
/// spawning anything.
///
/// * [`record(path, inner)`](Self::record) runs every command through `inner` and remembers
///   each completed run (a non-zero exit and a captured timeout are results and are recorded;
///   errors such as a missing program are not). [`save`](Self::save) writes the cassette
///   (atomically: a temporary file renamed into place, so a crash never leaves half a file);
///   dropping the runner saves unsaved runs on a best-effort basis. Recording starts a fresh
///   cassette: an existing file is replaced on save.
/// * [`replay(path)`](Self::replay) loads the cassette and answers from it.
///
/// Invocations are matched by program + args + working directory + whether stdin had data.
/// Environment variables are not matched, and their **values never reach the file** (only the
/// sorted names). When one invocation was recorded several times, replay serves the entries in
/// capture order and then repeats the last one. An invocation absent from the cassette is a
/// strict error: replay never spawns a process.
///
/// Both primitives work in both modes: recording a [`start`](ProcessRunner::start) runs the
/// command to completion first (so a never-ending or interactive command cannot be recorded
/// that way; bound it with a timeout), and a replayed `start` feeds the recorded stdout through
/// the real line pumps, so `stdout_lines` and `wait_for_line` work.
///
/// `program`, `args`, `cwd`, stdout and stderr are stored verbatim: review a cassette before
/// committing it if they may carry secrets.
///
/// # Errors
/// A replay miss is [`Error::InvalidInput`] naming the invocation and the cassette file (never
/// retried by a [`RetryPolicy`](crate::RetryPolicy)). A missing, corrupt or future-version
/// cassette is [`Error::Io`] naming the file.
pub struct RecordReplayRunner {
    path: PathBuf,
    mode: Mode,
    state: Mutex<State>,
}

impl std::fmt::Debug for RecordReplayRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordReplayRunner")
            .field("path", &self.path)
            .field("recording", &self.is_recording())
            .finish_non_exhaustive()
    }
}

impl RecordReplayRunner {
    /// Records every run of `inner` for the cassette at `path` (written by
    /// [`save`](Self::save), or on drop).
    pub fn record(
        path: impl Into<PathBuf>,
        inner: impl ProcessRunner + 'static,
    ) -> RecordReplayRunner {
        RecordReplayRunner {
            path: path.into(),
            mode: Mode::Record(Box::new(inner)),
            state: Mutex::new(State {
                cassette: Cassette::default(),
                served: HashMap::new(),
                dirty: false,
            }),
        }
    }

    /// Replays the cassette at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file when it is missing (kind `NotFound`), corrupt, or has an
    /// unknown format version (kind `InvalidData`).
    pub fn replay(path: impl Into<PathBuf>) -> Result<RecordReplayRunner> {
        let path = path.into();
        let cassette = Cassette::load(&path)?;
        Ok(RecordReplayRunner {
            path,
            mode: Mode::Replay,
            state: Mutex::new(State {
                cassette,
                served: HashMap::new(),
                dirty: false,
            }),
        })
    }

    /// The cassette file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this runner records (rather than replays).
    pub fn is_recording(&self) -> bool {
        matches!(self.mode, Mode::Record(_))
    }

    /// How many runs the cassette holds (recorded so far, or loaded).
    pub fn len(&self) -> usize {
        self.lock().cassette.len()
    }

    /// Whether the cassette holds no run.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the recorded runs to the cassette file, atomically (a temporary file in the same
    /// directory, then a rename); missing parent directories are created. A no-op when
    /// replaying.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file when it cannot be written.
    pub fn save(&self) -> Result<()> {
        if !self.is_recording() {
            return Ok(());
        }
        let json = {
            let mut st = self.lock();
            st.dirty = false;
            st.cassette.to_json()
        };
        write_atomic(&self.path, json.as_bytes())
            .map_err(|e| Error::io("", format!("writing cassette {}", self.path.display()), e))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, cmd: &Command, r: &Result<ProcessResult<Vec<u8>>>) {
        let entry = match r {
            Ok(res) => Entry::record(cmd, res),
            Err(Error::NotFound { .. }) => Entry::record_not_found(cmd),
            Err(_) => return,
        };
        let mut st = self.lock();
        st.cassette.entries.push(entry);
        st.dirty = true;
    }

    /// The reply for `cmd` from the cassette, or the miss error.
    fn lookup(&self, cmd: &Command) -> Result<Reply> {
        let key = Key::of(cmd);
        let mut st = self.lock();
        let matching: Vec<usize> = st
            .cassette
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.key() == key)
            .map(|(i, _)| i)
            .collect();
        let Some(&last) = matching.last() else {
            let cwd = key
                .cwd
                .as_ref()
                .map(|d| format!(" in {d}"))
                .unwrap_or_default();
            let stdin = if key.has_stdin { " with stdin" } else { "" };
            return Err(Error::invalid(
                &key.program,
                format!("replayed invocation `{}`{cwd}{stdin}", cmd.command_line()),
                format!(
                    "not in cassette {} ({} recorded runs); replay never spawns a process: \
                     re-record the cassette",
                    self.path.display(),
                    st.cassette.len()
                ),
            ));
        };
        let n = st.served.entry(key).or_insert(0);
        let idx = matching.get(*n).copied().unwrap_or(last);
        *n += 1;
        Ok(st.cassette.entries[idx].reply())
    }
}

impl ProcessRunner for RecordReplayRunner {
    fn output_bytes<'a>(
        &'a self,
        cmd: &'a Command,
    ) -> BoxFuture<'a, Result<ProcessResult<Vec<u8>>>> {
        Box::pin(async move {
            match &self.mode {
                Mode::Record(inner) => {
                    let r = inner.output_bytes(cmd).await;
                    self.remember(cmd, &r);
                    r
                }
                Mode::Replay => self.lookup(cmd)?.play_output(cmd).await,
            }
        })
    }

    fn start<'a>(&'a self, cmd: &'a Command) -> BoxFuture<'a, Result<RunningProcess>> {
        Box::pin(async move {
            match &self.mode {
                Mode::Record(inner) => {
                    let r = inner.output_bytes(cmd).await;
                    self.remember(cmd, &r);
                    Entry::record(cmd, &r?).reply().start(cmd)
                }
                Mode::Replay => self.lookup(cmd)?.start(cmd),
            }
        })
    }
}

impl Drop for RecordReplayRunner {
    fn drop(&mut self) {
        if self.is_recording() && self.lock().dirty {
            let _ = self.save();
        }
    }
}

/// Writes `data` to `path` through a temporary file in the same directory and a rename, so
/// readers see the old file or the new one, never a partial one.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the cassette path has no file name",
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
