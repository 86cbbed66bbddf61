//! The read pump: one task per output pipe that drains it, splits lines on bytes, runs line
//! handlers, and either captures (per the buffer policy), hands line batches to a bounded
//! channel (backpressure: a slow consumer slows the child), or discards.
//!
//! Lines are split on `\n` first and decoded second (lossily), so invalid UTF-8 never ends a
//! stream; a trailing `\r` is removed; a final line without a newline is still delivered.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_core::Stream;
use tokio::io::AsyncReadExt as _;
use tokio::sync::{mpsc, Notify};

use crate::command::LineHandler;
use crate::stdio::{BufferPolicy, Capture};
use crate::sys::PipeReader;

/// Bytes per read: large reads are what make capture fast.
const READ_CHUNK: usize = 128 * 1024;
/// Batches in flight between a pump and its stream: the memory an unread stream can hold is
/// bounded by `CHANNEL_BATCHES * READ_CHUNK` plus one partial line.
const CHANNEL_BATCHES: usize = 2;

/// A batch of complete lines, in order.
pub(crate) type Batch = Vec<String>;

/// Where a pump's output goes right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Append raw bytes to the capture buffer.
    Capture,
    /// Send line batches to the channel (blocking when it is full).
    Channel,
    /// Read and drop (the run no longer wants this stream).
    Discard,
}

/// State shared between a pump task and its owner.
#[derive(Debug)]
pub(crate) struct PumpShared {
    mode: Mutex<Mode>,
    mode_changed: Notify,
    capture: Mutex<Capture>,
    /// Whether the pump task has seen end-of-file (or was stopped).
    done: Mutex<bool>,
    done_notify: Notify,
    /// Read errors other than EOF, kept for the finisher.
    pub(crate) error: Mutex<Option<std::io::Error>>,
}

impl PumpShared {
    pub(crate) fn set_mode(&self, m: Mode) {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner()) = m;
        self.mode_changed.notify_waiters();
    }

    pub(crate) fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the captured bytes and the dropped count.
    pub(crate) fn take_capture(&self) -> (Vec<u8>, u64) {
        let mut c = self.capture.lock().unwrap_or_else(|e| e.into_inner());
        let policy_cap = c.cap();
        std::mem::replace(&mut *c, Capture::with_cap(policy_cap)).finish()
    }

    /// A copy of what is captured so far.
    pub(crate) fn capture_snapshot(&self) -> Vec<u8> {
        self.capture
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot()
    }

    pub(crate) fn is_done(&self) -> bool {
        *self.done.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the pump has reached end-of-file.
    pub(crate) async fn wait_done(&self) {
        loop {
            let notified = self.done_notify.notified();
            if self.is_done() {
                return;
            }
            notified.await;
        }
    }

    fn mark_done(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.done_notify.notify_waiters();
    }
}

/// The owner's side of a pump.
#[derive(Debug)]
pub(crate) struct Pump {
    pub(crate) shared: Arc<PumpShared>,
    /// The receiving end of the line channel, until a stream takes it.
    pub(crate) rx: Option<mpsc::Receiver<Batch>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Pump {
    /// Starts a pump task over `reader`.
    pub(crate) fn spawn(
        reader: PipeReader,
        mode: Mode,
        policy: BufferPolicy,
        handler: Option<LineHandler>,
        activity: Option<Arc<Activity>>,
    ) -> Pump {
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let shared = Arc::new(PumpShared {
            mode: Mutex::new(mode),
            mode_changed: Notify::new(),
            capture: Mutex::new(Capture::new(policy)),
            done: Mutex::new(false),
            done_notify: Notify::new(),
            error: Mutex::new(None),
        });
        let task = tokio::spawn(run(reader, shared.clone(), tx, handler, activity));
        Pump {
            shared,
            rx: Some(rx),
            task: Some(task),
        }
    }

    /// Waits for end-of-file.
    pub(crate) async fn wait_done(&self) {
        self.shared.wait_done().await
    }

    /// Stops the pump without waiting for end-of-file (a descendant we may not kill still holds
    /// the pipe). What was captured so far stays available.
    pub(crate) fn abort(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.shared.mark_done();
    }

    /// The stream over this pump's lines: switches the pump to channel mode and yields what was
    /// captured before the switch first.
    pub(crate) fn into_lines(&mut self) -> LineStream {
        let mut pending = VecDeque::new();
        let mode = self.shared.mode();
        if mode == Mode::Capture {
            // Hold the capture lock across the switch so no chunk is lost in between.
            let mut cap = self
                .shared
                .capture
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let bytes = cap.snapshot();
            let cap_len = cap.cap();
            *cap = Capture::with_cap(cap_len);
            *self.shared.mode.lock().unwrap_or_else(|e| e.into_inner()) = Mode::Channel;
            drop(cap);
            self.shared.mode_changed.notify_waiters();
            let mut splitter = LineSplitter::default();
            splitter.push(&bytes, |l| pending.push_back(l));
            if let Some(rest) = splitter.finish_partial() {
                // An unterminated line captured before the switch is delivered as its own line:
                // the switch is rare (stderr_lines after stderr already arrived) and splitting
                // one line is better than losing bytes.
                pending.push_back(decode(rest));
            }
        }
        LineStream {
            pending,
            rx: self.rx.take(),
        }
    }
}

/// Last time any pump read a byte, for the inactivity timeout.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The instant of the last read.
    pub(crate) fn last(&self) -> Instant {
        self.start + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

async fn run(
    mut reader: PipeReader,
    shared: Arc<PumpShared>,
    tx: mpsc::Sender<Batch>,
    handler: Option<LineHandler>,
    activity: Option<Arc<Activity>>,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut splitter = LineSplitter::default();
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                *shared.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                break;
            }
        };
        if let Some(a) = &activity {
            a.touch();
        }
        let data = &buf[..n];
        let mode = shared.mode();
        match mode {
            Mode::Capture | Mode::Discard => {
                if mode == Mode::Capture {
                    shared
                        .capture
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(data);
                }
                if let Some(h) = &handler {
                    splitter.push(data, |l| h(&l));
                }
            }
            Mode::Channel => {
                let mut batch = Vec::new();
                splitter.push(data, |l| {
                    if let Some(h) = &handler {
                        h(&l);
                    }
                    batch.push(l);
                });
                if !batch.is_empty() {
                    deliver(&shared, &tx, batch).await;
                }
            }
        }
    }
    if let Some(last) = splitter.finish_partial() {
        let line = decode(last);
        if let Some(h) = &handler {
            h(&line);
        }
        if shared.mode() == Mode::Channel {
            deliver(&shared, &tx, vec![line]).await;
        }
    }
    shared.mark_done();
}

/// Sends a batch, or—when nobody will ever read it—drops it. Re-dispatches if the mode changes
/// while waiting for room.
async fn deliver(shared: &PumpShared, tx: &mpsc::Sender<Batch>, batch: Batch) {
    let changed = shared.mode_changed.notified();
    tokio::pin!(changed);
    tokio::select! {
        r = tx.send(batch) => {
            if let Err(mpsc::error::SendError(_lost)) = r {
                // The stream (or the handle) was dropped: nobody reads this stream any more.
                shared.set_mode(Mode::Discard);
            }
        }
        _ = &mut changed => {
            // The finisher no longer wants lines (e.g. `wait()`); the batch is discarded.
        }
    }
}

/// A stream of decoded lines from one output pipe.
///
/// Ends when the pipe closes: the child and every descendant holding it exited, or the tree was
/// killed (timeout, cancellation, drop).
#[derive(Debug)]
pub struct LineStream {
    pending: VecDeque<String>,
    rx: Option<mpsc::Receiver<Batch>>,
}

impl LineStream {
    pub(crate) fn empty() -> LineStream {
        LineStream {
            pending: VecDeque::new(),
            rx: None,
        }
    }

    pub(crate) fn from_lines(lines: Vec<String>) -> LineStream {
        LineStream {
            pending: lines.into(),
            rx: None,
        }
    }
}

impl Stream for LineStream {
    type Item = String;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<String>> {
        loop {
            if let Some(l) = self.pending.pop_front() {
                return Poll::Ready(Some(l));
            }
            let Some(rx) = self.rx.as_mut() else {
                return Poll::Ready(None);
            };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.pending.extend(batch),
                Poll::Ready(None) => {
                    self.rx = None;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Splits bytes into lines across chunk boundaries.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `data`, calling `emit` for every completed line (without `\n` or `\r\n`).
    pub(crate) fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(String)) {
        while let Some(i) = memchr::memchr(b'\n', data) {
            let line = &data[..i];
            if self.partial.is_empty() {
                emit(decode_slice(line));
            } else {
                self.partial.extend_from_slice(line);
                let full = std::mem::take(&mut self.partial);
                emit(decode(full));
            }
            data = &data[i + 1..];
        }
        self.partial.extend_from_slice(data);
    }

    /// The unterminated remainder, if any.
    pub(crate) fn finish_partial(&mut self) -> Option<Vec<u8>> {
        if self.partial.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.partial))
        }
    }
}

fn strip_cr(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\r").unwrap_or(b)
}

fn decode_slice(line: &[u8]) -> String {
    let line = strip_cr(line);
    match std::str::from_utf8(line) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(line).into_owned(),
    }
}

/// Decodes one line lossily, removing a trailing `\r`.
pub(crate) fn decode(mut line: Vec<u8>) -> String {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    match String::from_utf8(line) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Splits a whole buffer into lines (used by scripted runs and tests).
pub(crate) fn split_all(bytes: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut s = LineSplitter::default();
    s.push(bytes, |l| out.push(l));
    if let Some(rest) = s.finish_partial() {
        out.push(decode(rest));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_chunks_and_crlf() {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        s.push(b"ab", |l| out.push(l));
        s.push(b"c\r\nde\nf", |l| out.push(l));
        assert_eq!(out, ["abc", "de"]);
        assert_eq!(s.finish_partial(), Some(b"f".to_vec()));
    }

    #[test]
    fn invalid_utf8_is_lossy_not_fatal() {
        assert_eq!(split_all(b"a\xffb\nok\n"), ["a\u{fffd}b", "ok"]);
    }

    proptest::proptest! {
        /// However the bytes are chunked, the lines are the same as splitting the whole buffer,
        /// and every input byte that is not a separator survives (lossily decoded).
        #[test]
        fn chunking_never_changes_lines(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048), cuts in proptest::collection::vec(0usize..2048, 0..16)) {
            let whole = split_all(&data);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut s = LineSplitter::default();
            let mut got = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                s.push(&data[at..c], |l| got.push(l));
                at = c;
            }
            if let Some(rest) = s.finish_partial() {
                got.push(decode(rest));
            }
            proptest::prop_assert_eq!(&got, &whole);
            let newlines = data.iter().filter(|b| **b == b'\n').count();
            let expected = newlines + usize::from(!data.is_empty() && data.last() != Some(&b'\n'));
            proptest::prop_assert_eq!(whole.len(), expected);
        }
    }

    #[test]
    fn empty_lines_kept() {
        assert_eq!(split_all(b"\n\nx"), ["", "", "x"]);
    }
}
