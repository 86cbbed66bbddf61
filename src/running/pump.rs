//! The read pump: one task per output pipe that drains it, runs line handlers, and either
//! captures (per the buffer policy), hands chunks of whole lines to a bounded channel
//! (backpressure: a slow consumer slows the child), or discards.
//!
//! Lines are split on `\n` first and decoded second (lossily), so invalid UTF-8 never ends a
//! stream; a trailing `\r` is removed; a final line without a newline is still delivered.
//!
//! Speed: the pump only reads and cuts each read at its last newline; the stream splits those
//! bytes into `String`s on the consumer's side. So every line `String` is allocated and freed
//! by the same thread (no cross-thread `malloc`/`free` traffic), splitting runs in parallel
//! with reading, and chunk buffers are recycled through a small pool.
//!
//! Memory held for a stream nobody reads is bounded: at most [`CHANNEL_BATCHES`] chunks in
//! the channel, one being read, one being split by the stream and [`POOL_MAX`] recycled
//! buffers, each about [`READ_CHUNK`] bytes, plus the one line still being assembled (a single
//! line is always held whole).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::io::AsyncReadExt as _;
use tokio::sync::{mpsc, Notify};

use crate::command::LineHandler;
use crate::stdio::{BufferPolicy, Capture};
use crate::sys::PipeReader;

/// Bytes asked for per read (the pipe itself is 1 MiB on Linux, see `sys`).
pub(crate) const READ_CHUNK: usize = 128 * 1024;
/// A read is never smaller than this: a buffer with less room left (a long line in progress)
/// grows first.
const MIN_READ: usize = 16 * 1024;
/// Chunks in flight between a pump and its stream.
pub(crate) const CHANNEL_BATCHES: usize = 4;
/// Chunk buffers kept for reuse.
pub(crate) const POOL_MAX: usize = 4;

/// Arrival order across every pump of the process: each chunk read gets the next number, so a
/// merged stdout+stderr stream can interleave chunks in the order they were read.
static ARRIVAL: AtomicU64 = AtomicU64::new(1);

/// Whole lines, in order, stamped with their arrival number: every line ends with `\n`,
/// except possibly the last one of the last batch (a final line without a newline).
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) seq: u64,
    pub(crate) bytes: Vec<u8>,
}

/// Recycled chunk buffers, shared by a pump and its stream.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    bufs: Mutex<Vec<Vec<u8>>>,
}

impl Pool {
    fn get(&self) -> Vec<u8> {
        self.bufs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(READ_CHUNK))
    }

    fn put(&self, mut buf: Vec<u8>) {
        // Buffers grown by a very long line are not worth keeping.
        if buf.capacity() > 4 * READ_CHUNK {
            return;
        }
        buf.clear();
        let mut bufs = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        if bufs.len() < POOL_MAX {
            bufs.push(buf);
        }
    }
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
    /// Set by [`Pump::take_lines`]: the captured bytes after the last newline, which the pump
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
    /// The panic of the line handler, kept for the finisher to resume on the caller's task.
    handler_panic: Mutex<Option<HandlerPanic>>,
}

/// A line handler's panic payload.
struct HandlerPanic(Box<dyn std::any::Any + Send>);

impl std::fmt::Debug for HandlerPanic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandlerPanic")
    }
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

    /// Resumes, on the calling task, a panic the line handler raised on the pump's task (the
    /// pump itself carried on without the handler, so the child was never blocked).
    pub(crate) fn resume_handler_panic(&self) {
        let payload = self
            .handler_panic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(HandlerPanic(payload)) = payload {
            std::panic::resume_unwind(payload);
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
    pool: Arc<Pool>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Whether a line handler runs on this pump (whose panic a finisher must not miss).
    pub(crate) has_handler: bool,
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
            handler_panic: Mutex::new(None),
        });
        let pool = Arc::new(Pool::default());
        let out = Outbox {
            tx,
            pool: pool.clone(),
            closed: false,
        };
        let has_handler = handler.is_some();
        let task = tokio::spawn(run(reader, shared.clone(), out, handler, activity));
        Pump {
            shared,
            rx: Some(rx),
            pool,
            task: Some(task),
            has_handler,
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
    pub(crate) fn take_lines(&mut self) -> LineStream {
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
            rx: Some(rx),
            pool: Some(self.pool.clone()),
            ..LineStream::empty()
        }
    }
}

/// Last time any pump read a byte, for the inactivity timeout. On tokio's clock, like the
/// watchdog that reads it, so a test with a paused clock sees exact, instant idle timeouts.
#[derive(Debug)]
pub(crate) struct Activity {
    start: tokio::time::Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            start: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// The instant of the last read.
    pub(crate) fn last(&self) -> tokio::time::Instant {
        self.start + std::time::Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Marks the pump done however its task ends: end-of-file, an abort, or a panic.
struct DoneOnDrop(Arc<PumpShared>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        self.0.mark_done();
    }
}

/// The line handler as the pump calls it: a panic is caught and kept for the finisher
/// ([`PumpShared::resume_handler_panic`]), and the handler is not called again; the pump goes
/// on reading, so the child never blocks on a full pipe.
struct Handler {
    f: Option<LineHandler>,
}

impl Handler {
    fn call(&mut self, shared: &PumpShared, line: &str) {
        let Some(f) = &self.f else { return };
        if let Err(payload) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(line))) {
            self.f = None;
            *shared
                .handler_panic
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(HandlerPanic(payload));
        }
    }
}

async fn run(
    mut reader: PipeReader,
    shared: Arc<PumpShared>,
    mut out: Outbox,
    handler: Option<LineHandler>,
    activity: Option<Arc<Activity>>,
) {
    let _done = DoneOnDrop(shared.clone());
    // Fixed for the whole run (what `buf` holds depends on it), even after a handler panic
    // turned the calls off.
    let has_handler = handler.is_some();
    let mut handler = Handler { f: handler };
    // `buf` starts with the unterminated line carried over from earlier reads (only kept when
    // someone needs lines: a stream or a handler); new data is read after it.
    let mut buf = out.pool.get();
    loop {
        if buf.capacity() - buf.len() < MIN_READ {
            buf.reserve(READ_CHUNK);
        }
        let start = buf.len();
        match reader.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                *shared.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                break;
            }
        }
        if let Some(a) = &activity {
            a.touch();
        }
        let mode = {
            let mut st = shared.state();
            match st.mode {
                Mode::Capture => st.capture.push(&buf[start..]),
                Mode::Channel => {
                    if let Some(carry) = st.carry.take() {
                        // The captured part of the line in progress. With a handler, `buf`
                        // already holds it (every captured chunk was kept for line splitting).
                        if !has_handler {
                            let new = buf.split_off(start);
                            buf.clear();
                            buf.extend_from_slice(&carry);
                            buf.extend_from_slice(&new);
                        }
                    }
                }
                Mode::Discard => {}
            }
            st.mode
        };
        if !has_handler && mode != Mode::Channel {
            // Nobody needs lines: capture already has the bytes (or they are discarded).
            buf.clear();
            continue;
        }
        // Cut after the last newline: `buf[..cut]` is whole lines, the rest a line in progress.
        let Some(i) = memchr::memrchr(b'\n', &buf[start..]) else {
            continue;
        };
        let cut = start + i + 1;
        if has_handler {
            for_each_line(&buf[..cut], |l| handler.call(&shared, l));
        }
        let mut next = out.pool.get();
        next.extend_from_slice(&buf[cut..]);
        buf.truncate(cut);
        let whole = std::mem::replace(&mut buf, next);
        if mode == Mode::Channel {
            let seq = ARRIVAL.fetch_add(1, Ordering::Relaxed);
            out.send(&shared, Batch { seq, bytes: whole }).await;
        } else {
            out.pool.put(whole);
        }
    }
    let mode = shared.mode();
    if !has_handler && mode == Mode::Channel {
        if let Some(carry) = shared.state().carry.take() {
            buf.splice(0..0, carry);
        }
    }
    if !buf.is_empty() && (has_handler || mode == Mode::Channel) {
        handler.call(&shared, &decode_str(&buf));
        if mode == Mode::Channel {
            let seq = ARRIVAL.fetch_add(1, Ordering::Relaxed);
            out.send(&shared, Batch { seq, bytes: buf }).await;
        }
    }
}

/// Calls `f` for every line of `bytes` (whole lines: each ends with `\n`).
fn for_each_line(bytes: &[u8], mut f: impl FnMut(&str)) {
    let mut rest = bytes;
    while let Some(i) = memchr::memchr(b'\n', rest) {
        f(&decode_str(&rest[..i]));
        rest = &rest[i + 1..];
    }
}

/// The channel to the stream.
pub(crate) struct Outbox {
    tx: mpsc::Sender<Batch>,
    pool: Arc<Pool>,
    /// Set once the stream is gone or the run stopped wanting lines: batches are dropped.
    closed: bool,
}

impl Outbox {
    /// Sends a batch (waiting for room: backpressure), or drops it when nobody will read it.
    async fn send(&mut self, shared: &PumpShared, batch: Batch) {
        if self.closed {
            self.pool.put(batch.bytes);
            return;
        }
        // Fast path: room in the channel, no waiting machinery.
        let batch = match self.tx.try_send(batch) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Closed(b)) => {
                self.pool.put(b.bytes);
                self.closed = true;
                shared.set_mode(Mode::Discard);
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
}

/// A stream of decoded lines from one output pipe.
///
/// Returned by [`RunningProcess::stdout_lines`](crate::RunningProcess::stdout_lines) and
/// [`stderr_lines`](crate::RunningProcess::stderr_lines). Ends when the pipe closes: the child
/// and every descendant holding it exited, or the tree was killed (timeout, cancellation,
/// drop of the handle).
///
/// Reading applies backpressure: while the stream is not polled, the pump stops reading once a
/// small fixed window (about a MiB) is buffered, the pipe fills, and the child blocks on its
/// next write. Dropping the stream discards the rest of that output (the child never blocks on
/// it again).
#[derive(Debug)]
pub struct LineStream {
    /// Lines decoded before the stream existed (captured output, scripted runs).
    pending: VecDeque<String>,
    /// The chunk being split and the position of its next line.
    current: Vec<u8>,
    pos: usize,
    /// Arrival number of `current` (0 for `pending`).
    seq: u64,
    rx: Option<mpsc::Receiver<Batch>>,
    pool: Option<Arc<Pool>>,
}

impl LineStream {
    pub(crate) fn empty() -> LineStream {
        LineStream {
            pending: VecDeque::new(),
            current: Vec::new(),
            pos: 0,
            seq: 0,
            rx: None,
            pool: None,
        }
    }

    /// A stream over fixed lines (scripted runs).
    #[allow(dead_code)]
    pub(crate) fn from_lines(lines: Vec<String>) -> LineStream {
        LineStream {
            pending: lines.into(),
            ..LineStream::empty()
        }
    }

    /// Makes a line available if one is (or becomes) ready: `Ready(Some(seq))` with the arrival
    /// number of the next line, `Ready(None)` at the end, `Pending` otherwise.
    pub(crate) fn poll_peek_seq(&mut self, cx: &mut Context<'_>) -> Poll<Option<u64>> {
        if !self.pending.is_empty() {
            return Poll::Ready(Some(0));
        }
        loop {
            if self.pos < self.current.len() {
                return Poll::Ready(Some(self.seq));
            }
            let Some(rx) = self.rx.as_mut() else {
                return Poll::Ready(None);
            };
            match rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => {
                    let done = std::mem::replace(&mut self.current, batch.bytes);
                    if let Some(pool) = &self.pool {
                        pool.put(done);
                    }
                    self.pos = 0;
                    self.seq = batch.seq;
                }
                Poll::Ready(None) => {
                    self.rx = None;
                    self.current = Vec::new();
                    self.pos = 0;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The next line after [`poll_peek_seq`](Self::poll_peek_seq) returned `Ready(Some(_))`.
    pub(crate) fn pop(&mut self) -> Option<String> {
        if let Some(l) = self.pending.pop_front() {
            return Some(l);
        }
        let rest = &self.current[self.pos..];
        if rest.is_empty() {
            return None;
        }
        let (line, used) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], i + 1),
            // The final line, without a newline.
            None => (rest, rest.len()),
        };
        let line = decode_slice(line);
        self.pos += used;
        Some(line)
    }
}

impl Stream for LineStream {
    type Item = String;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<String>> {
        match self.poll_peek_seq(cx) {
            Poll::Ready(Some(_)) => Poll::Ready(self.pop()),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.pending.len();
        (
            n,
            if self.rx.is_none() && self.pos >= self.current.len() {
                Some(n)
            } else {
                None
            },
        )
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

/// Decodes one line for a handler, borrowing when it is valid UTF-8.
fn decode_str(line: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(strip_cr(line))
}

#[inline]
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
#[allow(dead_code)] // the scripted runner (test doubles) uses it
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
            let (got, whole) = crate::__fuzz::split_lines(&data, &cuts);
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

    use tokio::io::AsyncWriteExt as _;
    use tokio_stream::StreamExt as _;

    type Seen = Arc<Mutex<Vec<String>>>;

    fn pump_over(mode: Mode, with_handler: bool) -> (tokio::io::DuplexStream, Pump, Seen) {
        let (writer, reader) = tokio::io::duplex(1 << 16);
        let seen: Seen = Arc::default();
        let s = seen.clone();
        let handler: Option<LineHandler> = if with_handler {
            Some(Arc::new(move |l: &str| {
                s.lock().unwrap().push(l.to_owned())
            }))
        } else {
            None
        };
        let pump = Pump::spawn(
            Box::pin(reader),
            mode,
            BufferPolicy::default(),
            handler,
            None,
        );
        (writer, pump, seen)
    }

    async fn captured(p: &Pump, len: usize) {
        while p.shared.capture_snapshot().len() < len {
            tokio::task::yield_now().await;
        }
    }

    /// A line cut in half by the switch from capture to stream arrives whole, once.
    #[tokio::test]
    async fn switch_mid_line_keeps_the_line_whole() {
        for with_handler in [false, true] {
            let (mut w, mut pump, seen) = pump_over(Mode::Capture, with_handler);
            w.write_all(b"a\r\nhal").await.unwrap();
            captured(&pump, 6).await;
            let mut lines = pump.take_lines();
            w.write_all(b"f\nb\n\xfftail").await.unwrap();
            drop(w);
            let got: Vec<String> = (&mut lines).collect().await;
            assert_eq!(
                got,
                ["a", "half", "b", "\u{fffd}tail"],
                "handler: {with_handler}"
            );
            if with_handler {
                assert_eq!(*seen.lock().unwrap(), got);
            }
            assert!(
                pump.take_lines().next().await.is_none(),
                "lines are handed out once"
            );
        }
    }

    /// The switch right before end-of-file still delivers the captured partial line.
    #[tokio::test]
    async fn switch_then_eof_delivers_the_carry() {
        let (mut w, mut pump, _) = pump_over(Mode::Capture, false);
        w.write_all(b"x\nunterminated").await.unwrap();
        captured(&pump, 14).await;
        let lines = pump.take_lines();
        drop(w);
        let got: Vec<String> = lines.collect().await;
        assert_eq!(got, ["x", "unterminated"]);
    }

    /// Lines longer than a read chunk, and many tiny ones, come through intact.
    #[tokio::test]
    async fn long_and_tiny_lines() {
        let (mut w, mut pump, seen) = pump_over(Mode::Channel, true);
        let lines = pump.take_lines();
        let long = "y".repeat(3 * READ_CHUNK + 17);
        let mut input = String::new();
        input.push_str(&long);
        input.push('\n');
        for i in 0..5000 {
            input.push_str(&(i % 10).to_string());
            input.push('\n');
        }
        let writer = tokio::spawn(async move {
            w.write_all(input.as_bytes()).await.unwrap();
        });
        let got: Vec<String> = lines.collect().await;
        writer.await.unwrap();
        assert_eq!(got.len(), 5001);
        assert_eq!(got[0], long);
        assert!(got[1..]
            .iter()
            .enumerate()
            .all(|(i, l)| *l == (i % 10).to_string()));
        assert_eq!(*seen.lock().unwrap(), got);
    }

    /// A dropped stream turns the pump into a drain: the writer never blocks.
    #[tokio::test]
    async fn dropped_stream_discards() {
        let (mut w, mut pump, _) = pump_over(Mode::Channel, false);
        drop(pump.take_lines());
        let chunk = vec![b'z'; 1 << 16];
        for _ in 0..64 {
            w.write_all(&chunk).await.unwrap();
        }
        drop(w);
        pump.wait_done().await;
        assert_eq!(pump.shared.mode(), Mode::Discard);
    }
}
