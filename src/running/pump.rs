//! The read pump: one task per output pipe that drains it, splits lines on bytes, runs line
//! handlers, and either captures (per the buffer policy), hands line batches to a bounded
//! channel (backpressure: a slow consumer slows the child), or discards.
//!
//! Lines are split on `\n` first and decoded second (lossily), so invalid UTF-8 never ends a
//! stream; a trailing `\r` is removed; a final line without a newline is still delivered.
//!
//! Memory held for a stream nobody reads is bounded: at most [`CHANNEL_BATCHES`] batches in
//! the channel, one batch being filled, one batch being handed out by the stream, and one read
//! buffer — each batch at most [`BATCH_MAX_BYTES`] of line text or [`BATCH_MAX_LINES`] lines —
//! plus the one line still being assembled (a single line is always held whole).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_core::Stream;
use tokio::io::AsyncReadExt as _;
use tokio::sync::{mpsc, Notify};

use crate::command::LineHandler;
use crate::stdio::{BufferPolicy, Capture};
use crate::sys::PipeReader;

/// Bytes per read. A pipe rarely holds more than this at once, and one read per chunk keeps
/// the syscall count low.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// A batch is handed to the stream once it holds this much line text...
pub(crate) const BATCH_MAX_BYTES: usize = 64 * 1024;
/// ...or this many lines (bounds the per-`String` overhead of many tiny lines).
pub(crate) const BATCH_MAX_LINES: usize = 1024;
/// Batches in flight between a pump and its stream.
pub(crate) const CHANNEL_BATCHES: usize = 4;

/// Arrival order across every pump of the process: each chunk read gets the next number, so a
/// merged stdout+stderr stream can interleave batches in the order they were read.
static ARRIVAL: AtomicU64 = AtomicU64::new(1);

/// A batch of complete lines, in order, stamped with its arrival number.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) seq: u64,
    pub(crate) lines: Vec<String>,
}

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

/// The part of the pump state that changes together: the mode, the capture buffer, and the
/// unterminated line left in the capture when it was switched to a stream.
#[derive(Debug)]
struct State {
    mode: Mode,
    capture: Capture,
    /// Set by [`Pump::into_lines`]: the captured bytes after the last newline, which the pump
    /// must prepend to what it reads next.
    carry: Option<Vec<u8>>,
}

/// State shared between a pump task and its owner.
#[derive(Debug)]
pub(crate) struct PumpShared {
    state: Mutex<State>,
    mode_changed: Notify,
    /// Whether the pump task has seen end-of-file (or was stopped).
    done: Mutex<bool>,
    done_notify: Notify,
    /// Read errors other than EOF, kept for the finisher.
    pub(crate) error: Mutex<Option<std::io::Error>>,
}

impl PumpShared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_mode(&self, m: Mode) {
        self.state().mode = m;
        self.mode_changed.notify_waiters();
    }

    pub(crate) fn mode(&self) -> Mode {
        self.state().mode
    }

    /// Takes the captured bytes and the dropped count.
    pub(crate) fn take_capture(&self) -> (Vec<u8>, u64) {
        let mut st = self.state();
        let policy_cap = st.capture.cap();
        std::mem::replace(&mut st.capture, Capture::with_cap(policy_cap)).finish()
    }

    /// A copy of what is captured so far.
    #[allow(dead_code)]
    pub(crate) fn capture_snapshot(&self) -> Vec<u8> {
        self.state().capture.snapshot()
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
            state: Mutex::new(State {
                mode,
                capture: Capture::new(policy),
                carry: None,
            }),
            mode_changed: Notify::new(),
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

    /// The stream over this pump's lines: switches the pump to channel mode and yields the
    /// complete lines captured before the switch first. Returns an empty stream when the lines
    /// were already handed out.
    pub(crate) fn into_lines(&mut self) -> LineStream {
        let Some(rx) = self.rx.take() else {
            return LineStream::empty();
        };
        let mut pending = VecDeque::new();
        {
            // One lock covers the snapshot and the switch: the pump checks the mode and
            // appends to the capture under the same lock, so no chunk falls in between.
            let mut st = self.shared.state();
            if st.mode == Mode::Capture {
                let cap = st.capture.cap();
                let (bytes, _) =
                    std::mem::replace(&mut st.capture, Capture::with_cap(cap)).finish();
                let mut splitter = LineSplitter::default();
                splitter.push(&bytes, |l| pending.push_back(l));
                st.carry = splitter.finish_partial();
                st.mode = Mode::Channel;
            }
        }
        LineStream {
            pending,
            seq: 0,
            rx: Some(rx),
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
    let mut out = Outbox::new(tx);
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
        let mode = {
            let mut st = shared.state();
            match st.mode {
                Mode::Capture => st.capture.push(data),
                Mode::Channel => {
                    if let Some(carry) = st.carry.take() {
                        // With a handler the splitter already holds this partial line (it was
                        // fed every captured chunk); without one it starts from the carry.
                        if handler.is_none() {
                            splitter.partial = carry;
                        }
                    }
                }
                Mode::Discard => {}
            }
            st.mode
        };
        match mode {
            Mode::Capture | Mode::Discard => {
                if let Some(h) = &handler {
                    splitter.push(data, |l| h(&l));
                }
            }
            Mode::Channel => {
                let seq = ARRIVAL.fetch_add(1, Ordering::Relaxed);
                let mut rest = data;
                while let Some(line) = splitter.next_line(&mut rest) {
                    if let Some(h) = &handler {
                        h(&line);
                    }
                    if out.push(line) {
                        out.flush(&shared, seq).await;
                    }
                }
                // Hand over what this chunk completed: a reader sees a line as soon as it
                // arrives, not when a batch fills up.
                out.flush(&shared, seq).await;
            }
        }
    }
    if handler.is_none() && shared.mode() == Mode::Channel {
        if let Some(carry) = shared.state().carry.take() {
            splitter.partial = carry;
        }
    }
    if let Some(last) = splitter.finish_partial() {
        let line = decode(last);
        if let Some(h) = &handler {
            h(&line);
        }
        if shared.mode() == Mode::Channel {
            out.push(line);
            out.flush(&shared, ARRIVAL.fetch_add(1, Ordering::Relaxed))
                .await;
        }
    }
    shared.mark_done();
}

/// The batch being filled and the channel it goes to.
struct Outbox {
    tx: mpsc::Sender<Batch>,
    lines: Vec<String>,
    bytes: usize,
    /// Set once the stream is gone or the run stopped wanting lines: batches are dropped.
    closed: bool,
}

impl Outbox {
    fn new(tx: mpsc::Sender<Batch>) -> Outbox {
        Outbox {
            tx,
            lines: Vec::new(),
            bytes: 0,
            closed: false,
        }
    }

    /// Adds a line; returns whether the batch is full.
    fn push(&mut self, line: String) -> bool {
        if self.closed {
            return false;
        }
        self.bytes += line.len() + 1;
        self.lines.push(line);
        self.lines.len() >= BATCH_MAX_LINES || self.bytes >= BATCH_MAX_BYTES
    }

    /// Sends the batch (waiting for room: backpressure), or drops it when nobody will read it.
    async fn flush(&mut self, shared: &PumpShared, seq: u64) {
        if self.lines.is_empty() {
            return;
        }
        let batch = Batch {
            seq,
            lines: std::mem::take(&mut self.lines),
        };
        self.bytes = 0;
        if self.closed {
            return;
        }
        // Fast path: room in the channel, no waiting machinery.
        let batch = match self.tx.try_send(batch) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.close(shared);
                return;
            }
            Err(mpsc::error::TrySendError::Full(b)) => b,
        };
        let mut batch = Some(batch);
        loop {
            let changed = shared.mode_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if shared.mode() != Mode::Channel {
                // The only way out of channel mode is discard (e.g. `wait()`): drop the batch.
                self.closed = true;
                return;
            }
            let permit = tokio::select! {
                p = self.tx.reserve() => p,
                _ = &mut changed => continue,
            };
            let sent = match permit {
                Ok(permit) => {
                    if let Some(b) = batch.take() {
                        permit.send(b);
                    }
                    true
                }
                Err(_) => false,
            };
            if !sent {
                // The stream (or the handle) was dropped: nobody reads this stream any more.
                self.closed = true;
                shared.set_mode(Mode::Discard);
            }
            return;
        }
    }

    fn close(&mut self, shared: &PumpShared) {
        self.closed = true;
        shared.set_mode(Mode::Discard);
    }
}

/// A stream of decoded lines from one output pipe.
///
/// Returned by [`RunningProcess::stdout_lines`](crate::RunningProcess::stdout_lines) and
/// [`stderr_lines`](crate::RunningProcess::stderr_lines). Ends when the pipe closes: the child
/// and every descendant holding it exited, or the tree was killed (timeout, cancellation,
/// drop of the handle).
///
/// Reading applies backpressure: while the stream is not polled, the pump stops reading once a
/// small fixed window (a few hundred KiB) is buffered, the pipe fills, and the child blocks on
/// its next write. Dropping the stream discards the rest of that output (the child never
/// blocks on it again).
#[derive(Debug)]
pub struct LineStream {
    pending: VecDeque<String>,
    /// Arrival number of the lines in `pending`.
    seq: u64,
    rx: Option<mpsc::Receiver<Batch>>,
}

impl LineStream {
    pub(crate) fn empty() -> LineStream {
        LineStream {
            pending: VecDeque::new(),
            seq: 0,
            rx: None,
        }
    }

    /// A stream over fixed lines (scripted runs).
    #[allow(dead_code)]
    pub(crate) fn from_lines(lines: Vec<String>) -> LineStream {
        LineStream {
            pending: lines.into(),
            seq: 0,
            rx: None,
        }
    }

    /// Makes a line available if one is (or becomes) ready: `Ready(Some(seq))` with the arrival
    /// number of the next line, `Ready(None)` at the end, `Pending` otherwise.
    pub(crate) fn poll_peek_seq(&mut self, cx: &mut Context<'_>) -> Poll<Option<u64>> {
        loop {
            if !self.pending.is_empty() {
                return Poll::Ready(Some(self.seq));
            }
            let Some(rx) = self.rx.as_mut() else {
                return Poll::Ready(None);
            };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => {
                    self.seq = batch.seq;
                    self.pending = batch.lines.into();
                }
                Poll::Ready(None) => {
                    self.rx = None;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The next line after [`poll_peek_seq`](Self::poll_peek_seq) returned `Ready(Some(_))`.
    pub(crate) fn pop(&mut self) -> Option<String> {
        self.pending.pop_front()
    }
}

impl Stream for LineStream {
    type Item = String;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<String>> {
        match self.poll_peek_seq(cx) {
            Poll::Ready(Some(_)) => Poll::Ready(self.pending.pop_front()),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.pending.len();
        (n, if self.rx.is_none() { Some(n) } else { None })
    }
}

/// Splits bytes into lines across chunk boundaries.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Takes the next complete line off the front of `data` (advancing it), or keeps the
    /// unterminated rest for the next chunk and returns `None`.
    #[inline]
    pub(crate) fn next_line(&mut self, data: &mut &[u8]) -> Option<String> {
        let d = *data;
        match memchr::memchr(b'\n', d) {
            Some(i) => {
                *data = &d[i + 1..];
                if self.partial.is_empty() {
                    Some(decode_slice(&d[..i]))
                } else {
                    self.partial.extend_from_slice(&d[..i]);
                    Some(decode(std::mem::take(&mut self.partial)))
                }
            }
            None => {
                self.partial.extend_from_slice(d);
                *data = &d[d.len()..];
                None
            }
        }
    }

    /// Feeds `data`, calling `emit` for every completed line (without `\n` or `\r\n`).
    pub(crate) fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(String)) {
        while let Some(line) = self.next_line(&mut data) {
            emit(line);
        }
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

    #[test]
    fn empty_lines_kept() {
        assert_eq!(split_all(b"\n\nx"), ["", "", "x"]);
    }
}
