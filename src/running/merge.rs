//! `all_lines()`: stdout and stderr interleaved in arrival order, each line tagged with its
//! source.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use super::pump::LineStream;
use super::RunningProcess;
use crate::error::OutputStream;

/// One line of a child's output and the pipe it came from; the item of
/// [`RunningProcess::all_lines`].
///
/// A named struct rather than a tuple so call sites read `l.stream` / `l.line`, and so that
/// matching on the source is explicit:
///
/// ```no_run
/// use processkit::{Command, OutputStream, StreamExt};
///
/// # #[tokio::main]
/// # async fn main() -> processkit::Result<()> {
/// let mut run = Command::new("cargo").arg("build").start().await?;
/// let mut all = run.all_lines();
/// while let Some(l) = all.next().await {
///     match l.stream {
///         OutputStream::Stdout => println!("{}", l.line),
///         OutputStream::Stderr => eprintln!("{}", l.line),
///     }
/// }
/// let (code, _) = run.finish_streamed().await?;
/// # let _ = code;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OutputLine {
    /// Which pipe the line came from.
    pub stream: OutputStream,
    /// The line, without its `\n` / `\r\n`, decoded lossily.
    pub line: String,
}

/// Stdout and stderr lines interleaved in the order they were read; see
/// [`RunningProcess::all_lines`].
#[derive(Debug)]
pub struct AllLines {
    out: LineStream,
    err: LineStream,
    out_done: bool,
    err_done: bool,
}

impl Stream for AllLines {
    type Item = OutputLine;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<OutputLine>> {
        let this = &mut *self;
        // Poll both sides every time, so each registers its waker.
        let out = if this.out_done {
            Poll::Ready(None)
        } else {
            this.out.poll_peek_seq(cx)
        };
        let err = if this.err_done {
            Poll::Ready(None)
        } else {
            this.err.poll_peek_seq(cx)
        };
        if let Poll::Ready(None) = out {
            this.out_done = true;
        }
        if let Poll::Ready(None) = err {
            this.err_done = true;
        }
        // Among the sides with a line ready, the one read first wins; on a tie (lines of one
        // read each), stdout first.
        let pick_err = match (out, err) {
            (Poll::Ready(Some(o)), Poll::Ready(Some(e))) => e < o,
            (Poll::Ready(Some(_)), _) => false,
            (_, Poll::Ready(Some(_))) => true,
            (Poll::Ready(None), Poll::Ready(None)) => return Poll::Ready(None),
            _ => return Poll::Pending,
        };
        let (stream, side) = if pick_err {
            (OutputStream::Stderr, &mut this.err)
        } else {
            (OutputStream::Stdout, &mut this.out)
        };
        Poll::Ready(side.pop().map(|line| OutputLine { stream, line }))
    }
}

impl RunningProcess {
    /// Streams stdout and stderr together, interleaved in the order their lines were read,
    /// each tagged with its [`OutputStream`] (see [`OutputLine`]).
    ///
    /// The order between the two pipes is the order processkit read them: exact when the child
    /// writes one stream at a time and waits in between, approximate for lines written within
    /// the same instant (the OS gives no ordering across two pipes). Lines of one stream
    /// always keep their order. Takes both streams: afterwards
    /// [`stdout_lines`](Self::stdout_lines) / [`stderr_lines`](Self::stderr_lines) are empty,
    /// and [`finish_streamed`](Self::finish_streamed) reports an empty stderr. Stderr captured
    /// before the call comes first. Backpressure applies to both pipes; the stream ends when
    /// both close.
    pub fn all_lines(&mut self) -> AllLines {
        let out = self.stdout_lines();
        let err = self.stderr_lines();
        AllLines {
            out,
            err,
            out_done: false,
            err_done: false,
        }
    }
}
