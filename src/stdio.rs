//! Stdin sources, output modes, the output encoding and the capture buffer policy.

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_core::Stream;

/// A boxed stream of lines fed to a child's stdin by [`Stdin::from_lines`].
pub(crate) type LineSource = Pin<Box<dyn Stream<Item = String> + Send>>;

/// Where a child's standard input comes from.
///
/// The default for every [`Command`](crate::Command) is [`Stdin::null`]: a child never blocks
/// waiting on the owner's terminal unless asked to.
#[derive(Clone, Default)]
pub struct Stdin {
    pub(crate) kind: StdinKind,
}

#[derive(Clone, Default)]
pub(crate) enum StdinKind {
    #[default]
    Null,
    Inherit,
    Bytes(Arc<[u8]>),
    File(PathBuf),
    /// A one-shot stream: the first run takes it; a re-run (retry, supervision) gets EOF.
    Lines(Arc<Mutex<Option<LineSource>>>),
}

impl Stdin {
    /// No input: the child reads end-of-file at once.
    pub fn null() -> Stdin {
        Stdin {
            kind: StdinKind::Null,
        }
    }

    /// The owner's own standard input.
    pub fn inherit() -> Stdin {
        Stdin {
            kind: StdinKind::Inherit,
        }
    }

    /// Writes `text` to the child's stdin, then closes it.
    pub fn from_string(text: impl Into<String>) -> Stdin {
        Stdin::from_bytes(text.into().into_bytes())
    }

    /// Writes `bytes` to the child's stdin, then closes it.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Stdin {
        Stdin {
            kind: StdinKind::Bytes(Arc::from(bytes.into())),
        }
    }

    /// Connects the file at `path` to the child's stdin (opened when the run starts; a missing
    /// file is an [`Error::Io`](crate::Error::Io) naming the path).
    pub fn from_file(path: impl Into<PathBuf>) -> Stdin {
        Stdin {
            kind: StdinKind::File(path.into()),
        }
    }

    /// Writes each item of `lines` followed by `\n`, then closes stdin when the stream ends.
    ///
    /// The stream is consumed by the first run that uses it; a re-run of the same command
    /// (retry, supervision) sees an empty stdin.
    ///
    /// The source may stay open and idle (a channel, a file tail): feeding stops, and the
    /// stream is dropped, as soon as the child exits, is killed, or its handle is dropped, so
    /// an idle source never holds up a verb, a timeout or a pipeline. Items the child did not
    /// live to read are dropped with the stream. A stream that panics ends stdin there, and a
    /// one-shot verb resumes the panic on the caller's task rather than report a clean run.
    pub fn from_lines<S>(lines: S) -> Stdin
    where
        S: Stream<Item = String> + Send + 'static,
    {
        Stdin {
            kind: StdinKind::Lines(Arc::new(Mutex::new(Some(Box::pin(lines))))),
        }
    }

    pub(crate) fn has_data(&self) -> bool {
        matches!(
            self.kind,
            StdinKind::Bytes(_) | StdinKind::File(_) | StdinKind::Lines(_)
        )
    }
}

impl fmt::Debug for Stdin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            StdinKind::Null => f.write_str("Stdin::null()"),
            StdinKind::Inherit => f.write_str("Stdin::inherit()"),
            StdinKind::Bytes(b) => write!(f, "Stdin::from_bytes(<{} bytes>)", b.len()),
            StdinKind::File(p) => write!(f, "Stdin::from_file({p:?})"),
            StdinKind::Lines(_) => f.write_str("Stdin::from_lines(..)"),
        }
    }
}

impl From<&str> for Stdin {
    fn from(s: &str) -> Stdin {
        Stdin::from_string(s)
    }
}

impl From<String> for Stdin {
    fn from(s: String) -> Stdin {
        Stdin::from_string(s)
    }
}

impl From<Vec<u8>> for Stdin {
    fn from(b: Vec<u8>) -> Stdin {
        Stdin::from_bytes(b)
    }
}

/// What happens to a child's stdout or stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// Read by processkit: captured into the result, streamed, handed to line handlers.
    #[default]
    Capture,
    /// Discarded (`/dev/null`).
    Null,
    /// Written straight to the owner's own stream; nothing is captured.
    Inherit,
}

/// How captured bytes become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// UTF-8, with invalid sequences replaced by U+FFFD. Never fails.
    #[default]
    Utf8Lossy,
    /// UTF-8; invalid output is [`Error::InvalidUtf8`](crate::Error::InvalidUtf8) carrying the
    /// raw bytes. Applies to captured **stdout**, the data: stderr is diagnostics and always
    /// decodes lossily, so an odd byte in a message never masks the run's own error (a
    /// non-zero exit, a timeout). Streams (which cannot fail per line) decode lossily too.
    Utf8Strict,
}

/// How much output is kept in memory per stream.
///
/// The default keeps up to 64 MiB per stream. Past the cap, the **head and the tail** are kept
/// (half the cap each; the cut moves by up to three bytes so it never splits a UTF-8
/// character) and the number of bytes dropped from the middle is reported by
/// [`ProcessResult::stdout_dropped`](crate::ProcessResult::stdout_dropped) /
/// [`stderr_dropped`](crate::ProcessResult::stderr_dropped). Streams, line handlers and
/// pipelines are not affected: they see every byte. Memory: the kept bytes, plus up to as much
/// again for a moment while the result is assembled at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferPolicy {
    pub(crate) max_bytes: Option<usize>,
}

impl BufferPolicy {
    /// The default cap: 64 MiB per stream.
    pub const DEFAULT_CAP: usize = 64 * 1024 * 1024;

    /// Keep at most `bytes` per stream (head and tail halves past that).
    pub fn cap(bytes: usize) -> BufferPolicy {
        BufferPolicy {
            max_bytes: Some(bytes),
        }
    }

    /// Keep everything. Only for output whose size you trust.
    pub fn unbounded() -> BufferPolicy {
        BufferPolicy { max_bytes: None }
    }

    /// The cap in bytes, if any.
    pub fn max_bytes(&self) -> Option<usize> {
        self.max_bytes
    }
}

impl Default for BufferPolicy {
    fn default() -> Self {
        BufferPolicy::cap(Self::DEFAULT_CAP)
    }
}

/// An in-memory capture obeying a [`BufferPolicy`]: the first half-cap bytes, then a ring of the
/// last half-cap bytes, counting what fell out between them.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    cap: Option<usize>,
    dropped: u64,
    overflowed: bool,
}

impl Capture {
    pub(crate) fn new(policy: BufferPolicy) -> Capture {
        Capture {
            cap: policy.max_bytes,
            ..Capture::default()
        }
    }

    pub(crate) fn with_cap(cap: Option<usize>) -> Capture {
        Capture {
            cap,
            ..Capture::default()
        }
    }

    pub(crate) fn cap(&self) -> Option<usize> {
        self.cap
    }

    pub(crate) fn push(&mut self, mut data: &[u8]) {
        let Some(cap) = self.cap else {
            self.head.extend_from_slice(data);
            return;
        };
        if !self.overflowed {
            if self.head.len() + data.len() <= cap {
                self.head.extend_from_slice(data);
                return;
            }
            self.overflowed = true;
            let keep_head = cap / 2;
            if self.head.len() > keep_head {
                let rest = self.head.split_off(keep_head);
                self.tail.extend(rest);
            } else {
                let take = (keep_head - self.head.len()).min(data.len());
                self.head.extend_from_slice(&data[..take]);
                data = &data[take..];
            }
        }
        let tail_cap = cap - cap / 2;
        if data.len() >= tail_cap {
            self.dropped += (self.tail.len() + data.len() - tail_cap) as u64;
            self.tail.clear();
            self.tail.extend(&data[data.len() - tail_cap..]);
        } else {
            self.tail.extend(data);
            let excess = self.tail.len().saturating_sub(tail_cap);
            if excess > 0 {
                self.dropped += excess as u64;
                self.tail.drain(..excess);
            }
        }
    }

    /// The kept bytes (head then tail) and how many were dropped.
    ///
    /// Where the middle was dropped, the cut is moved (at most three bytes on each side) so it
    /// never splits a UTF-8 character: valid text stays valid, and strict decoding never blames
    /// the child for a character the cap cut in two. The moved bytes count as dropped.
    pub(crate) fn finish(mut self) -> (Vec<u8>, u64) {
        if self.dropped > 0 {
            let cut = utf8_partial_suffix(&self.head);
            self.head.truncate(self.head.len() - cut);
            let lead = self
                .tail
                .iter()
                .take(3)
                .take_while(|&&b| is_continuation(b))
                .count();
            self.tail.drain(..lead);
            self.dropped += (cut + lead) as u64;
        }
        let (a, b) = self.tail.as_slices();
        self.head.reserve(a.len() + b.len());
        self.head.extend_from_slice(a);
        self.head.extend_from_slice(b);
        (self.head, self.dropped)
    }

    /// A copy of what is kept so far.
    pub(crate) fn snapshot(&self) -> Vec<u8> {
        let mut v = self.head.clone();
        v.extend(self.tail.iter());
        v
    }
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// How many bytes at the end of `bytes` are the start of a UTF-8 character that is not
/// complete (0 when it ends on a character boundary, or is not UTF-8 there at all).
pub(crate) fn utf8_partial_suffix(bytes: &[u8]) -> usize {
    let n = bytes.len();
    for back in 1..=n.min(4) {
        let b = bytes[n - back];
        if is_continuation(b) {
            continue;
        }
        let width = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if back < width { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_never_splits_a_utf8_character() {
        let text = format!("x{}", "€".repeat(10_000)); // 1 + 30 000 bytes
        for cap in [1001, 1000, 999, 64, 7] {
            let mut c = Capture::new(BufferPolicy::cap(cap));
            for chunk in text.as_bytes().chunks(97) {
                c.push(chunk);
            }
            let (kept, dropped) = c.finish();
            let kept = String::from_utf8(kept).expect("the kept bytes stay valid UTF-8");
            assert!(kept.starts_with('x') || cap < 4, "cap {cap}");
            assert!(
                kept.len() <= cap && kept.len() + 6 >= cap,
                "cap {cap}: {}",
                kept.len()
            );
            assert_eq!(kept.len() as u64 + dropped, text.len() as u64, "cap {cap}");
        }
    }

    #[test]
    fn partial_suffixes() {
        assert_eq!(utf8_partial_suffix(b"abc"), 0);
        assert_eq!(utf8_partial_suffix("a€".as_bytes()), 0);
        assert_eq!(utf8_partial_suffix(&"a€".as_bytes()[..3]), 2);
        assert_eq!(utf8_partial_suffix(&"a€".as_bytes()[..2]), 1);
        assert_eq!(utf8_partial_suffix(&"😀".as_bytes()[..3]), 3);
        assert_eq!(utf8_partial_suffix(b"\x80\x80\x80\x80"), 0);
        assert_eq!(utf8_partial_suffix(b""), 0);
    }

    #[test]
    fn capture_under_cap_keeps_all() {
        let mut c = Capture::new(BufferPolicy::cap(10));
        c.push(b"hello");
        c.push(b"world");
        assert_eq!(c.finish(), (b"helloworld".to_vec(), 0));
    }

    #[test]
    fn capture_over_cap_keeps_head_and_tail() {
        let mut c = Capture::new(BufferPolicy::cap(10));
        for chunk in [&b"abcdefgh"[..], b"ijklmnop", b"qrstuvwxyz"] {
            c.push(chunk);
        }
        let (kept, dropped) = c.finish();
        assert_eq!(kept, b"abcdevwxyz");
        assert_eq!(dropped, 26 - 10);
    }

    #[test]
    fn capture_first_push_over_cap() {
        let mut c = Capture::new(BufferPolicy::cap(4));
        c.push(b"0123456789");
        assert_eq!(c.finish(), (b"0189".to_vec(), 6));
    }

    #[test]
    fn capture_many_small_pushes() {
        let mut c = Capture::new(BufferPolicy::cap(4));
        for b in b"0123456789" {
            c.push(&[*b]);
        }
        assert_eq!(c.finish(), (b"0189".to_vec(), 6));
    }
}
