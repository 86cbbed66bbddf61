//! `pk-child`: the helper child process for processkit's tests.
//!
//! Tests never need a shell: every child behaviour they need is an action of this binary.
//! It uses only `std` (plus `libc` on Unix), so it builds and starts fast on every OS.
//!
//! ```text
//! pk-child ACTION [ARGS...] [; ACTION [ARGS...]]...
//! ```
//!
//! Actions are separated by a literal `;` argument and run in order; after the last one the
//! process exits 0 unless an action says otherwise. The whole command line is checked before
//! the first action runs. stdout goes through one locked, buffered writer that is flushed after
//! every action and before any sleep, block, spawn or exit.
//!
//! | action | behaviour |
//! | --- | --- |
//! | `print TEXT` / `eprint TEXT` | TEXT + `\n` to stdout / stderr |
//! | `printn TEXT` | TEXT to stdout, no newline |
//! | `lines N [WIDTH]` / `elines N [WIDTH]` | N lines `line {i:08}` (i from 1), padded with `.` to WIDTH bytes, then `\n` |
//! | `bytes N` / `ebytes N` | N bytes of 127 `x` + `\n` lines (N may end in K, M or G: binary units) |
//! | `hex HEX` | the raw bytes decoded from HEX to stdout |
//! | `sleep MS` / `sleep-forever` | sleep (in 5 ms steps that honour `trap-term` / `trap-hup`) |
//! | `exit CODE` | flush and exit with CODE |
//! | `pid` | print `pid={pid}` |
//! | `pidfile PATH` | write own pid to PATH atomically (tmp file + rename) |
//! | `cat` | copy stdin to stdout until EOF, flushing every chunk |
//! | `echo-stdin` | for each stdin line print `got: {line}`; at EOF print `eof` |
//! | `count-stdin` | read stdin to EOF, print `stdin-bytes={n}` |
//! | `close-stdin` | close fd 0 / the stdin handle |
//! | `close-stdout` | flush, then close fd 1 / the stdout handle (the process keeps running) |
//! | `pdeathsig` | print `pdeathsig={n}`: the parent-death signal armed (Linux; `0` elsewhere) |
//! | `spawn MODE PIDFILE` | start a copy of this binary running `pidfile PIDFILE ; sleep-forever`, wait (10 s at most) until PIDFILE exists, and go on without waiting for it. MODE: `bg` (inherits stdio), `quiet` (null stdio), `setsid` (Unix: new session, inherits stdio), `setsid-quiet` (both), `daemon` (double fork: an intermediate copy runs `spawn setsid-quiet PIDFILE ; exit 0` and is reaped) |
//! | `tree N DIR` | N `quiet` grandchildren writing `DIR/0.pid` .. `DIR/{N-1}.pid`; waits for all files |
//! | `forkstorm N` | try to start N `quiet` `sleep-forever` children; print `spawned={k} failed={N-k}` |
//! | `ignore-term` | Unix: SIGTERM := SIG_IGN |
//! | `trap-term PATH` | Unix: on SIGTERM, write `term` to PATH and exit 0 (noticed within 5 ms while sleeping/blocking) |
//! | `mark-term PATH` | Unix: like `trap-term`, but keeps running after writing PATH (only SIGKILL ends it) |
//! | `trap-hup PATH` | Unix: on each SIGHUP append a line `hup` to PATH |
//! | `tick PATH MS` | forever: write 1, 2, 3, ... to PATH (atomically), one every MS ms |
//! | `spin MS` | busy-loop for MS ms of wall time (0: forever) |
//! | `alloc MIB` | allocate MIB MiB, touch every page, keep it; print `allocated={MIB}` |
//! | `listen PORTFILE` | bind 127.0.0.1:0, print `listening on {addr}`, write the port to PORTFILE, answer every connection with `hello\n` forever |
//! | `delay-listen MS PORTFILE` | sleep MS, then `listen PORTFILE` |
//! | `counter PATH` | PATH's integer (missing: 0) + 1, written back and printed |
//! | `fail-until PATH N` | `counter PATH`, then exit 1 if the new value < N |
//! | `write-file PATH TEXT` | create/overwrite PATH with TEXT (atomically) |
//! | `wait-file PATH` | block until PATH exists (5 ms polls, no deadline) |
//! | `env NAME` | print `NAME=value` or `NAME unset` |
//! | `cwd` | print the current directory |
//! | `args` | print `arg={a}` for every argv element after argv[0] |
//! | `abort` | `std::process::abort()` |
//! | `kill-self SIG` | Unix: raise signal number SIG; elsewhere exit 1 |
//!
//! On Windows (and other non-Unix targets) the signal actions are accepted no-ops.
//!
//! Exit codes of its own: 101 bad command line (unknown action, missing, extra or bad
//! argument); 102 a spawned copy did not write its pid file within 10 s, or exited first;
//! 103 `alloc` could not allocate; 104 any other I/O error (file, spawn, bind, ...);
//! 105 writing to stdout or stderr failed (e.g. the reader closed the pipe).
//! A message always goes to stderr first.

use std::borrow::Cow;
use std::env;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const EXIT_USAGE: i32 = 101;
const EXIT_DEADLINE: i32 = 102;
const EXIT_ALLOC: i32 = 103;
const EXIT_IO: i32 = 104;
const EXIT_WRITE: i32 = 105;

/// The step of every sleep / poll loop.
const STEP: Duration = Duration::from_millis(5);
/// How long `spawn` and `tree` wait for the pid files.
const PIDFILE_DEADLINE: Duration = Duration::from_secs(10);
/// Poll step while waiting for pid files.
const PIDFILE_STEP: Duration = Duration::from_millis(10);
/// Size of I/O chunks.
const CHUNK: usize = 64 * 1024;

/// Set by the SIGTERM handler of `trap-term`.
static TERM: AtomicBool = AtomicBool::new(false);
/// Bumped by the SIGHUP handler of `trap-hup`.
static HUP: AtomicUsize = AtomicUsize::new(0);

struct Fail {
    code: i32,
    msg: String,
}

type R<T = ()> = Result<T, Fail>;

fn fail(code: i32, msg: impl Into<String>) -> Fail {
    Fail {
        code,
        msg: msg.into(),
    }
}

fn io_fail(what: impl std::fmt::Display, e: io::Error) -> Fail {
    fail(EXIT_IO, format!("{what}: {e}"))
}

fn write_fail(e: io::Error) -> Fail {
    fail(EXIT_WRITE, format!("write failed: {e}"))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bg,
    Quiet,
    Setsid,
    SetsidQuiet,
    Daemon,
}

enum Action {
    Print(OsString, bool),
    Printn(OsString),
    Lines { n: u64, width: usize, err: bool },
    Bytes { n: u64, err: bool },
    Hex(Vec<u8>),
    Sleep(u64),
    SleepForever,
    Exit(i32),
    Pid,
    Pidfile(PathBuf),
    Cat,
    EchoStdin,
    CountStdin,
    CloseStdin,
    CloseStdout,
    Pdeathsig,
    Spawn(Mode, PathBuf),
    Tree(usize, PathBuf),
    Forkstorm(usize),
    IgnoreTerm,
    TrapTerm(PathBuf),
    MarkTerm(PathBuf),
    TrapHup(PathBuf),
    Tick(PathBuf, u64),
    Spin(u64),
    Alloc(usize),
    Listen { delay_ms: u64, portfile: PathBuf },
    Counter(PathBuf),
    FailUntil(PathBuf, u64),
    WriteFile(PathBuf, OsString),
    WaitFile(PathBuf),
    Env(OsString),
    Cwd,
    Args,
    Abort,
    KillSelf(i32),
}

// ---------------------------------------------------------------------------------------------
// Command line

fn parse(argv: &[OsString]) -> R<Vec<Action>> {
    if argv.is_empty() {
        return Err(fail(
            EXIT_USAGE,
            "no action given (usage: pk-child ACTION [ARGS...] [; ACTION [ARGS...]]...)",
        ));
    }
    argv.split(|a| a == ";")
        .enumerate()
        .map(|(i, seg)| {
            parse_action(seg).map_err(|f| fail(f.code, format!("action #{}: {}", i + 1, f.msg)))
        })
        .collect()
}

fn parse_action(seg: &[OsString]) -> R<Action> {
    let Some((name, args)) = seg.split_first() else {
        return Err(fail(
            EXIT_USAGE,
            "empty action (two `;` in a row, or a leading/trailing `;`)",
        ));
    };
    let name = name.to_string_lossy();
    let name = name.as_ref();
    let arity = |min: usize, max: usize| -> R {
        if args.len() < min || args.len() > max {
            let want = if min == max {
                format!("{min}")
            } else {
                format!("{min} to {max}")
            };
            Err(fail(
                EXIT_USAGE,
                format!("{name}: takes {want} argument(s), got {}", args.len()),
            ))
        } else {
            Ok(())
        }
    };
    let num = |i: usize, what: &str| -> R<u64> {
        let s = args[i].to_string_lossy();
        s.parse::<u64>()
            .map_err(|_| fail(EXIT_USAGE, format!("{name}: bad {what} '{s}'")))
    };
    let path = |i: usize| PathBuf::from(&args[i]);
    let action = match name {
        "print" | "eprint" => {
            arity(1, 1)?;
            Action::Print(args[0].clone(), name == "eprint")
        }
        "printn" => {
            arity(1, 1)?;
            Action::Printn(args[0].clone())
        }
        "lines" | "elines" => {
            arity(1, 2)?;
            let n = num(0, "N")?;
            let width = if args.len() > 1 {
                num(1, "WIDTH")? as usize
            } else {
                0
            };
            Action::Lines {
                n,
                width,
                err: name == "elines",
            }
        }
        "bytes" | "ebytes" => {
            arity(1, 1)?;
            let s = args[0].to_string_lossy();
            let n =
                parse_size(&s).ok_or_else(|| fail(EXIT_USAGE, format!("{name}: bad N '{s}'")))?;
            Action::Bytes {
                n,
                err: name == "ebytes",
            }
        }
        "hex" => {
            arity(1, 1)?;
            let s = args[0].to_string_lossy();
            Action::Hex(
                parse_hex(&s)
                    .ok_or_else(|| fail(EXIT_USAGE, format!("hex: bad HEXSTRING '{s}'")))?,
            )
        }
        "sleep" => {
            arity(1, 1)?;
            Action::Sleep(num(0, "MS")?)
        }
        "sleep-forever" => {
            arity(0, 0)?;
            Action::SleepForever
        }
        "exit" => {
            arity(1, 1)?;
            let s = args[0].to_string_lossy();
            Action::Exit(
                s.parse()
                    .map_err(|_| fail(EXIT_USAGE, format!("exit: bad CODE '{s}'")))?,
            )
        }
        "pid" => {
            arity(0, 0)?;
            Action::Pid
        }
        "pidfile" => {
            arity(1, 1)?;
            Action::Pidfile(path(0))
        }
        "cat" => {
            arity(0, 0)?;
            Action::Cat
        }
        "echo-stdin" => {
            arity(0, 0)?;
            Action::EchoStdin
        }
        "count-stdin" => {
            arity(0, 0)?;
            Action::CountStdin
        }
        "close-stdin" => {
            arity(0, 0)?;
            Action::CloseStdin
        }
        "close-stdout" => {
            arity(0, 0)?;
            Action::CloseStdout
        }
        "pdeathsig" => {
            arity(0, 0)?;
            Action::Pdeathsig
        }
        "spawn" => {
            arity(2, 2)?;
            let m = args[0].to_string_lossy();
            let mode = match m.as_ref() {
                "bg" => Mode::Bg,
                "quiet" => Mode::Quiet,
                "setsid" => Mode::Setsid,
                "setsid-quiet" => Mode::SetsidQuiet,
                "daemon" => Mode::Daemon,
                _ => {
                    return Err(fail(
                        EXIT_USAGE,
                        format!("spawn: bad MODE '{m}' (bg, quiet, setsid, setsid-quiet, daemon)"),
                    ))
                }
            };
            Action::Spawn(mode, path(1))
        }
        "tree" => {
            arity(2, 2)?;
            Action::Tree(num(0, "N")? as usize, path(1))
        }
        "forkstorm" => {
            arity(1, 1)?;
            Action::Forkstorm(num(0, "N")? as usize)
        }
        "ignore-term" => {
            arity(0, 0)?;
            Action::IgnoreTerm
        }
        "trap-term" => {
            arity(1, 1)?;
            Action::TrapTerm(path(0))
        }
        "mark-term" => {
            arity(1, 1)?;
            Action::MarkTerm(path(0))
        }
        "trap-hup" => {
            arity(1, 1)?;
            Action::TrapHup(path(0))
        }
        "tick" => {
            arity(2, 2)?;
            Action::Tick(path(0), num(1, "MS")?)
        }
        "spin" => {
            arity(1, 1)?;
            Action::Spin(num(0, "MS")?)
        }
        "alloc" => {
            arity(1, 1)?;
            Action::Alloc(num(0, "MIB")? as usize)
        }
        "listen" => {
            arity(1, 1)?;
            Action::Listen {
                delay_ms: 0,
                portfile: path(0),
            }
        }
        "delay-listen" => {
            arity(2, 2)?;
            Action::Listen {
                delay_ms: num(0, "MS")?,
                portfile: path(1),
            }
        }
        "counter" => {
            arity(1, 1)?;
            Action::Counter(path(0))
        }
        "fail-until" => {
            arity(2, 2)?;
            Action::FailUntil(path(0), num(1, "N")?)
        }
        "write-file" => {
            arity(2, 2)?;
            Action::WriteFile(path(0), args[1].clone())
        }
        "wait-file" => {
            arity(1, 1)?;
            Action::WaitFile(path(0))
        }
        "env" => {
            arity(1, 1)?;
            Action::Env(args[0].clone())
        }
        "cwd" => {
            arity(0, 0)?;
            Action::Cwd
        }
        "args" => {
            arity(0, 0)?;
            Action::Args
        }
        "abort" => {
            arity(0, 0)?;
            Action::Abort
        }
        "kill-self" => {
            arity(1, 1)?;
            let s = args[0].to_string_lossy();
            Action::KillSelf(
                s.parse()
                    .map_err(|_| fail(EXIT_USAGE, format!("kill-self: bad SIG '{s}'")))?,
            )
        }
        _ => return Err(fail(EXIT_USAGE, format!("unknown action '{name}'"))),
    };
    Ok(action)
}

/// A byte count, optionally with a binary K/M/G suffix.
fn parse_size(s: &str) -> Option<u64> {
    let (digits, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1u64 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1u64 << 30),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    b.chunks(2)
        .map(|p| Some(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

/// The bytes of an argument: exact on Unix, lossy UTF-8 elsewhere.
fn os_bytes(s: &OsStr) -> Cow<'_, [u8]> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Cow::Borrowed(s.as_bytes())
    }
    #[cfg(not(unix))]
    {
        match s.to_string_lossy() {
            Cow::Borrowed(b) => Cow::Borrowed(b.as_bytes()),
            Cow::Owned(o) => Cow::Owned(o.into_bytes()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Runtime state

struct Ctx {
    out: BufWriter<io::StdoutLock<'static>>,
    term_path: Option<PathBuf>,
    /// `mark-term`: keep running after writing `term_path`.
    term_stays: bool,
    hup_path: Option<PathBuf>,
    hup_seen: usize,
    /// Memory of `alloc`, kept until exit.
    #[allow(dead_code)]
    kept: Vec<Vec<u8>>,
}

impl Ctx {
    fn out(&mut self, b: &[u8]) -> R {
        self.out.write_all(b).map_err(write_fail)
    }

    fn flush(&mut self) -> R {
        self.out.flush().map_err(write_fail)
    }

    fn line(&mut self, s: &str) -> R {
        self.out(s.as_bytes())?;
        self.out(b"\n")
    }

    fn exit(&mut self, code: i32) -> ! {
        let _ = self.out.flush();
        process::exit(code)
    }

    /// Acts on signals noticed by the handlers. Called at every step of every blocking loop.
    fn poll(&mut self) -> R {
        if self.term_path.is_some() && TERM.load(Ordering::SeqCst) {
            let _ = self.out.flush();
            let path = self.term_path.take().unwrap();
            if let Err(e) = write_atomic(&path, b"term") {
                return Err(io_fail(
                    format_args!("trap-term: write {}", path.display()),
                    e,
                ));
            }
            if !self.term_stays {
                process::exit(0);
            }
        }
        if let Some(path) = &self.hup_path {
            let n = HUP.load(Ordering::SeqCst);
            while self.hup_seen < n {
                let r = fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(b"hup\n"));
                if let Err(e) = r {
                    return Err(io_fail(
                        format_args!("trap-hup: append to {}", path.display()),
                        e,
                    ));
                }
                self.hup_seen += 1;
            }
        }
        Ok(())
    }

    /// Sleeps in short steps, polling the signal flags.
    fn sleep(&mut self, d: Duration) -> R {
        self.flush()?;
        let deadline = Instant::now() + d;
        loop {
            self.poll()?;
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            std::thread::sleep(STEP.min(deadline - now));
        }
    }

    fn sleep_forever(&mut self) -> R {
        self.flush()?;
        loop {
            self.poll()?;
            std::thread::sleep(STEP);
        }
    }

    /// Reads a chunk of stdin; EINTR (a trapped signal) polls the flags and retries.
    fn read_stdin(&mut self, inp: &mut impl Read, buf: &mut [u8]) -> R<usize> {
        loop {
            match inp.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.poll()?,
                Err(e) => return Err(io_fail("read stdin", e)),
            }
        }
    }

    fn run(&mut self, action: Action) -> R {
        match action {
            Action::Print(text, err) => {
                let mut b = os_bytes(&text).into_owned();
                b.push(b'\n');
                if err {
                    self.flush()?;
                    io::stderr().write_all(&b).map_err(write_fail)?;
                } else {
                    self.out(&b)?;
                }
            }
            Action::Printn(text) => self.out(&os_bytes(&text))?,
            Action::Lines { n, width, err } => self.lines(n, width, err)?,
            Action::Bytes { n, err } => self.bytes(n, err)?,
            Action::Hex(b) => self.out(&b)?,
            Action::Sleep(ms) => self.sleep(Duration::from_millis(ms))?,
            Action::SleepForever => self.sleep_forever()?,
            Action::Exit(code) => self.exit(code),
            Action::Pid => self.line(&format!("pid={}", process::id()))?,
            Action::Pidfile(path) => write_atomic(&path, process::id().to_string().as_bytes())
                .map_err(|e| io_fail(format_args!("pidfile: write {}", path.display()), e))?,
            Action::Cat => self.cat()?,
            Action::EchoStdin => self.echo_stdin()?,
            Action::CountStdin => {
                self.flush()?;
                let stdin = io::stdin();
                let mut inp = stdin.lock();
                let mut buf = vec![0u8; CHUNK];
                let mut total: u64 = 0;
                loop {
                    let n = self.read_stdin(&mut inp, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                self.line(&format!("stdin-bytes={total}"))?;
            }
            Action::CloseStdin => close_std(Std::In),
            Action::Pdeathsig => self.line(&format!("pdeathsig={}", pdeathsig()))?,
            Action::CloseStdout => {
                self.flush()?;
                close_std(Std::Out);
            }
            Action::Spawn(mode, pidfile) => self.spawn(mode, &pidfile)?,
            Action::Tree(n, dir) => self.tree(n, &dir)?,
            Action::Forkstorm(n) => self.forkstorm(n)?,
            Action::IgnoreTerm => sig::ignore_term(),
            Action::TrapTerm(path) => {
                self.term_stays = false;
                self.term_path = Some(path);
                sig::trap_term().map_err(|e| io_fail("trap-term: sigaction", e))?;
            }
            Action::MarkTerm(path) => {
                self.term_stays = true;
                self.term_path = Some(path);
                sig::trap_term().map_err(|e| io_fail("mark-term: sigaction", e))?;
            }
            Action::TrapHup(path) => {
                if self.hup_path.is_none() {
                    self.hup_seen = HUP.load(Ordering::SeqCst);
                }
                self.hup_path = Some(path);
                sig::trap_hup().map_err(|e| io_fail("trap-hup: sigaction", e))?;
            }
            Action::Tick(path, ms) => {
                let mut count: u64 = 0;
                loop {
                    count += 1;
                    write_atomic(&path, count.to_string().as_bytes())
                        .map_err(|e| io_fail(format_args!("tick: write {}", path.display()), e))?;
                    self.sleep(Duration::from_millis(ms))?;
                }
            }
            Action::Spin(ms) => {
                self.flush()?;
                let start = Instant::now();
                let limit = Duration::from_millis(ms);
                let mut x: u64 = 1;
                loop {
                    for _ in 0..10_000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407),
                        );
                    }
                    self.poll()?;
                    if ms != 0 && start.elapsed() >= limit {
                        break;
                    }
                }
            }
            Action::Alloc(mib) => self.alloc(mib)?,
            Action::Listen { delay_ms, portfile } => self.listen(delay_ms, &portfile)?,
            Action::Counter(path) => {
                self.counter(&path)?;
            }
            Action::FailUntil(path, n) => {
                if self.counter(&path)? < n {
                    self.exit(1);
                }
            }
            Action::WriteFile(path, text) => write_atomic(&path, &os_bytes(&text))
                .map_err(|e| io_fail(format_args!("write-file: write {}", path.display()), e))?,
            Action::WaitFile(path) => {
                self.flush()?;
                while !path.exists() {
                    self.sleep(STEP)?;
                }
            }
            Action::Env(name) => {
                let n = name.to_string_lossy();
                match env::var_os(&name) {
                    Some(v) => self.line(&format!("{n}={}", v.to_string_lossy()))?,
                    None => self.line(&format!("{n} unset"))?,
                }
            }
            Action::Cwd => {
                let d = env::current_dir().map_err(|e| io_fail("cwd", e))?;
                self.line(&d.display().to_string())?;
            }
            Action::Args => {
                for a in env::args_os().skip(1) {
                    self.line(&format!("arg={}", a.to_string_lossy()))?;
                }
            }
            Action::Abort => {
                let _ = self.out.flush();
                process::abort();
            }
            Action::KillSelf(signo) => {
                self.flush()?;
                if !sig::raise(signo) {
                    self.exit(1);
                }
            }
        }
        Ok(())
    }

    fn lines(&mut self, n: u64, width: usize, err: bool) -> R {
        let stderr = io::stderr();
        let mut stderr = stderr.lock();
        if err {
            self.flush()?;
        }
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + width + 64);
        for i in 1..=n {
            let start = buf.len();
            buf.extend_from_slice(b"line ");
            push_padded(&mut buf, i, 8);
            let len = buf.len() - start;
            if width > len {
                buf.resize(start + width, b'.');
            }
            buf.push(b'\n');
            if buf.len() >= CHUNK {
                if err {
                    stderr.write_all(&buf).map_err(write_fail)?;
                } else {
                    self.out(&buf)?;
                }
                buf.clear();
            }
        }
        if err {
            stderr.write_all(&buf).map_err(write_fail)
        } else {
            self.out(&buf)
        }
    }

    fn bytes(&mut self, n: u64, err: bool) -> R {
        // 64 KiB is a whole number of 128-byte lines, so every chunk starts a line.
        let chunk: Vec<u8> = (0..CHUNK)
            .map(|i| if i % 128 == 127 { b'\n' } else { b'x' })
            .collect();
        let stderr = io::stderr();
        let mut stderr = stderr.lock();
        if err {
            self.flush()?;
        }
        let mut left = n;
        while left > 0 {
            let k = left.min(CHUNK as u64) as usize;
            if err {
                stderr.write_all(&chunk[..k]).map_err(write_fail)?;
            } else {
                self.out(&chunk[..k])?;
            }
            left -= k as u64;
        }
        Ok(())
    }

    fn cat(&mut self) -> R {
        self.flush()?;
        let stdin = io::stdin();
        let mut inp = stdin.lock();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = self.read_stdin(&mut inp, &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            self.out(&buf[..n])?;
            self.flush()?;
        }
    }

    fn echo_stdin(&mut self) -> R {
        self.flush()?;
        let stdin = io::stdin();
        let mut inp = stdin.lock();
        let mut buf = vec![0u8; CHUNK];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let n = self.read_stdin(&mut inp, &mut buf)?;
            if n == 0 {
                break;
            }
            pending.extend_from_slice(&buf[..n]);
            let mut start = 0;
            while let Some(pos) = pending[start..].iter().position(|&c| c == b'\n') {
                let end = start + pos;
                let line = pending[start..end].to_vec();
                self.got(&line)?;
                start = end + 1;
            }
            pending.drain(..start);
            self.flush()?;
        }
        if !pending.is_empty() {
            self.got(&pending.clone())?;
        }
        self.out(b"eof\n")
    }

    fn got(&mut self, line: &[u8]) -> R {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.out(b"got: ")?;
        self.out(line)?;
        self.out(b"\n")
    }

    fn spawn(&mut self, mode: Mode, pidfile: &Path) -> R {
        self.flush()?;
        let _ = fs::remove_file(pidfile);
        let mut child = if mode == Mode::Daemon {
            // The intermediate spawns the final grandchild and exits; reaping it here leaves the
            // grandchild reparented away from us.
            let args: [&OsStr; 6] = [
                "spawn".as_ref(),
                "setsid-quiet".as_ref(),
                pidfile.as_os_str(),
                ";".as_ref(),
                "exit".as_ref(),
                "0".as_ref(),
            ];
            let mut cmd =
                self_command(Mode::Bg, &args).map_err(|e| io_fail("spawn: current_exe", e))?;
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
            let status = cmd
                .status()
                .map_err(|e| io_fail("spawn: start intermediate", e))?;
            if !status.success() {
                return Err(fail(
                    status.code().unwrap_or(EXIT_IO),
                    format!("spawn daemon: intermediate failed with {status}"),
                ));
            }
            None
        } else {
            Some(self.spawn_sleeper(mode, pidfile)?)
        };
        let children: Vec<&mut Child> = child.iter_mut().collect();
        self.wait_pidfiles(&[pidfile.to_path_buf()], children)
    }

    /// Starts a copy of this binary running `pidfile PIDFILE ; sleep-forever`.
    fn spawn_sleeper(&mut self, mode: Mode, pidfile: &Path) -> R<Child> {
        let args: [&OsStr; 4] = [
            "pidfile".as_ref(),
            pidfile.as_os_str(),
            ";".as_ref(),
            "sleep-forever".as_ref(),
        ];
        let mut cmd = self_command(mode, &args).map_err(|e| io_fail("spawn: current_exe", e))?;
        // Wine's CreateProcessW now and then fails with ERROR_INTERNAL_ERROR (1359) on a
        // loaded machine; Windows does not. A few retries keep the tree shapes the tests ask
        // for; every other error is reported at once.
        let mut tries = 0;
        loop {
            match cmd.spawn() {
                Err(e) if cfg!(windows) && e.raw_os_error() == Some(1359) && tries < 5 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20)); // retry backoff
                }
                r => return r.map_err(|e| io_fail("spawn", e)),
            }
        }
    }

    /// Waits until every file exists; a child that exits first, or the deadline, is an error.
    fn wait_pidfiles(&mut self, files: &[PathBuf], mut children: Vec<&mut Child>) -> R {
        let deadline = Instant::now() + PIDFILE_DEADLINE;
        loop {
            self.poll()?;
            if files.iter().all(|f| f.exists()) {
                return Ok(());
            }
            for (child, file) in children.iter_mut().zip(files) {
                if let Ok(Some(status)) = child.try_wait() {
                    if !file.exists() {
                        return Err(fail(
                            EXIT_DEADLINE,
                            format!(
                                "grandchild exited ({status}) before writing {}",
                                file.display()
                            ),
                        ));
                    }
                }
            }
            if Instant::now() >= deadline {
                let missing: Vec<String> = files
                    .iter()
                    .filter(|f| !f.exists())
                    .map(|f| f.display().to_string())
                    .collect();
                return Err(fail(
                    EXIT_DEADLINE,
                    format!(
                        "pid file(s) not written within {PIDFILE_DEADLINE:?}: {}",
                        missing.join(", ")
                    ),
                ));
            }
            std::thread::sleep(PIDFILE_STEP);
        }
    }

    fn tree(&mut self, n: usize, dir: &Path) -> R {
        self.flush()?;
        let files: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("{i}.pid"))).collect();
        let mut children = Vec::with_capacity(n);
        for f in &files {
            let _ = fs::remove_file(f);
            children.push(self.spawn_sleeper(Mode::Quiet, f)?);
        }
        self.wait_pidfiles(&files, children.iter_mut().collect())
    }

    fn forkstorm(&mut self, n: usize) -> R {
        self.flush()?;
        let args: [&OsStr; 1] = ["sleep-forever".as_ref()];
        let mut cmd =
            self_command(Mode::Quiet, &args).map_err(|e| io_fail("forkstorm: current_exe", e))?;
        let mut ok = 0usize;
        for _ in 0..n {
            // Dropping a Child neither kills nor waits for it.
            if cmd.spawn().is_ok() {
                ok += 1;
            }
        }
        self.line(&format!("spawned={ok} failed={}", n - ok))
    }

    fn alloc(&mut self, mib: usize) -> R {
        self.flush()?;
        let n = mib
            .checked_mul(1 << 20)
            .ok_or_else(|| fail(EXIT_ALLOC, format!("alloc: {mib} MiB is too large")))?;
        let mut v: Vec<u8> = Vec::new();
        if let Err(e) = v.try_reserve_exact(n) {
            return Err(fail(
                EXIT_ALLOC,
                format!("alloc: cannot allocate {mib} MiB: {e}"),
            ));
        }
        if n > 0 {
            let p = v.as_mut_ptr();
            // SAFETY: every offset is inside the reserved capacity.
            unsafe {
                let mut off = 0;
                while off < n {
                    p.add(off).write_volatile(1);
                    off += 4096;
                }
                p.add(n - 1).write_volatile(1);
            }
        }
        self.kept.push(v);
        self.line(&format!("allocated={mib}"))
    }

    fn listen(&mut self, delay_ms: u64, portfile: &Path) -> R {
        if delay_ms > 0 {
            self.sleep(Duration::from_millis(delay_ms))?;
        }
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| io_fail("listen: bind", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| io_fail("listen: local_addr", e))?;
        self.line(&format!("listening on {addr}"))?;
        self.flush()?;
        write_atomic(portfile, addr.port().to_string().as_bytes())
            .map_err(|e| io_fail(format_args!("listen: write {}", portfile.display()), e))?;
        // Non-blocking accept polled every 5 ms, so trapped signals are noticed.
        listener
            .set_nonblocking(true)
            .map_err(|e| io_fail("listen: set_nonblocking", e))?;
        loop {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.write_all(b"hello\n");
                    let _ = s.shutdown(std::net::Shutdown::Write);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.sleep(STEP)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.poll()?,
                Err(e) => return Err(io_fail("listen: accept", e)),
            }
        }
    }

    fn counter(&mut self, path: &Path) -> R<u64> {
        let cur = match fs::read_to_string(path) {
            Ok(s) if s.trim().is_empty() => 0,
            Ok(s) => s.trim().parse::<u64>().map_err(|_| {
                fail(
                    EXIT_IO,
                    format!(
                        "counter: {} holds '{}', not an integer",
                        path.display(),
                        s.trim()
                    ),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_fail(format_args!("counter: read {}", path.display()), e)),
        };
        let v = cur + 1;
        write_atomic(path, v.to_string().as_bytes())
            .map_err(|e| io_fail(format_args!("counter: write {}", path.display()), e))?;
        self.line(&v.to_string())?;
        Ok(v)
    }
}

/// Appends `v` in decimal, zero-padded to at least `width` digits.
fn push_padded(buf: &mut Vec<u8>, mut v: u64, width: usize) {
    let mut d = [b'0'; 20];
    let mut i = d.len();
    loop {
        i -= 1;
        d[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let digits = d.len() - i;
    for _ in digits..width {
        buf.push(b'0');
    }
    buf.extend_from_slice(&d[i..]);
}

/// Writes `path` via a temporary file in the same directory and a rename, so readers never see
/// it half written. The temporary name carries our pid, so concurrent writers do not collide.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", process::id()));
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, data)?;
    // Windows refuses to replace a file while a reader has it open without FILE_SHARE_DELETE
    // (Wine even with it): that reader is a test polling the file, so retry for a while.
    let mut tries = 0;
    loop {
        match fs::rename(&tmp, path) {
            Ok(()) => return Ok(()),
            Err(e)
                if cfg!(windows) && e.kind() == io::ErrorKind::PermissionDenied && tries < 1000 =>
            {
                tries += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
    }
}

/// A command that runs a copy of this binary with `args`, set up for `mode`
/// (`Daemon` is handled by the caller).
fn self_command(mode: Mode, args: &[&OsStr]) -> io::Result<Command> {
    let mut cmd = Command::new(env::current_exe()?);
    cmd.args(args);
    if matches!(mode, Mode::Quiet | Mode::SetsidQuiet) {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }
    #[cfg(unix)]
    if matches!(mode, Mode::Setsid | Mode::SetsidQuiet) {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
        }
    }
    Ok(cmd)
}

/// The parent-death signal armed for this process (`prctl(PR_GET_PDEATHSIG)`).
#[cfg(target_os = "linux")]
fn pdeathsig() -> i32 {
    let mut sig: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int through the pointer, which points at `sig`.
    unsafe {
        libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut libc::c_int);
    }
    sig
}

#[cfg(not(target_os = "linux"))]
fn pdeathsig() -> i32 {
    0
}

/// Which standard stream `close_std` closes.
#[derive(Clone, Copy)]
enum Std {
    In,
    Out,
}

#[cfg(unix)]
fn close_std(which: Std) {
    let fd = match which {
        Std::In => 0,
        Std::Out => 1,
    };
    // SAFETY: fd 0 / 1 is not owned by anything else here; later stdin reads see EBADF, which
    // std reports as EOF (stdout is flushed first and not written again).
    unsafe {
        libc::close(fd);
    }
}

#[cfg(windows)]
fn close_std(which: Std) {
    use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
    #[link(name = "kernel32")]
    extern "system" {
        fn SetStdHandle(std_handle: u32, handle: RawHandle) -> i32;
    }
    const STD_INPUT_HANDLE: u32 = -10i32 as u32;
    const STD_OUTPUT_HANDLE: u32 = -11i32 as u32;
    let (slot, h) = match which {
        Std::In => (STD_INPUT_HANDLE, io::stdin().as_raw_handle()),
        Std::Out => (STD_OUTPUT_HANDLE, io::stdout().as_raw_handle()),
    };
    // SAFETY: the process's slot is cleared first, so std sees no handle (EOF for stdin, writes
    // discarded for stdout) instead of a stale value that a later open could reuse; then the
    // handle is closed.
    unsafe {
        SetStdHandle(slot, std::ptr::null_mut());
        if !h.is_null() && h as isize != -1 {
            drop(OwnedHandle::from_raw_handle(h));
        }
    }
}

#[cfg(not(any(unix, windows)))]
fn close_std(_: Std) {}

#[cfg(unix)]
mod sig {
    use super::{HUP, TERM};
    use std::io;
    use std::sync::atomic::Ordering;

    extern "C" fn on_term(_: libc::c_int) {
        TERM.store(true, Ordering::SeqCst);
    }

    extern "C" fn on_hup(_: libc::c_int) {
        HUP.fetch_add(1, Ordering::SeqCst);
    }

    fn install(signo: libc::c_int, handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
        // SAFETY: the handlers only touch atomics. No SA_RESTART: blocking stdin reads return
        // EINTR, so `cat` / `echo-stdin` / `count-stdin` notice the flags too.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as usize as libc::sighandler_t;
            sa.sa_flags = 0;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(signo, &sa, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    pub fn trap_term() -> io::Result<()> {
        install(libc::SIGTERM, on_term)
    }

    pub fn trap_hup() -> io::Result<()> {
        install(libc::SIGHUP, on_hup)
    }

    pub fn ignore_term() {
        // SAFETY: plain disposition change.
        unsafe {
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
    }

    /// Raises `signo`; returns once it was delivered and did not end the process.
    pub fn raise(signo: i32) -> bool {
        // SAFETY: raising a signal at ourselves.
        unsafe { libc::raise(signo) == 0 }
    }
}

/// Signals do not exist here: the actions are accepted and do nothing.
#[cfg(not(unix))]
mod sig {
    use std::io;

    pub fn trap_term() -> io::Result<()> {
        Ok(())
    }

    pub fn trap_hup() -> io::Result<()> {
        Ok(())
    }

    pub fn ignore_term() {}

    /// `kill-self` exits 1 on non-Unix targets.
    pub fn raise(_signo: i32) -> bool {
        false
    }
}

fn main() {
    let argv: Vec<OsString> = env::args_os().skip(1).collect();
    let actions = match parse(&argv) {
        Ok(a) => a,
        Err(f) => {
            let _ = writeln!(io::stderr(), "pk-child: {}", f.msg);
            process::exit(f.code);
        }
    };
    let mut ctx = Ctx {
        out: BufWriter::with_capacity(CHUNK, io::stdout().lock()),
        term_path: None,
        term_stays: false,
        hup_path: None,
        hup_seen: 0,
        kept: Vec::new(),
    };
    for action in actions {
        if let Err(f) = ctx.run(action).and_then(|()| ctx.flush()) {
            let _ = ctx.out.flush();
            let _ = writeln!(io::stderr(), "pk-child: {}", f.msg);
            process::exit(f.code);
        }
    }
    ctx.exit(0)
}
