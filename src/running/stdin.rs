//! The writer for a child's stdin kept open with [`Command::keep_stdin_open`](crate::Command::keep_stdin_open).

use tokio::io::AsyncWriteExt as _;

use crate::error::{Error, Result};
use crate::stdio::{Stdin, StdinKind};
use crate::sys::PipeWriter;

/// An async writer to a running child's stdin.
///
/// Obtained from [`RunningProcess::standard_input`](crate::RunningProcess::standard_input).
/// Dropping it (or calling [`finish`](Self::finish)) closes the pipe, which the child reads as
/// end-of-file.
pub struct StdinWriter {
    program: String,
    pipe: Option<PipeWriter>,
}

impl std::fmt::Debug for StdinWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdinWriter")
            .field("program", &self.program)
            .field("open", &self.pipe.is_some())
            .finish()
    }
}

impl StdinWriter {
    pub(crate) fn new(program: String, pipe: PipeWriter) -> StdinWriter {
        StdinWriter {
            program,
            pipe: Some(pipe),
        }
    }

    fn pipe(&mut self) -> Result<&mut PipeWriter> {
        let program = &self.program;
        self.pipe.as_mut().ok_or_else(|| {
            Error::io(
                program,
                "writing to stdin",
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stdin was already finished"),
            )
        })
    }

    /// Writes `line` followed by `\n`.
    ///
    /// # Errors
    /// [`Error::Io`] (kind `BrokenPipe`) when the child closed its stdin or exited.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call may have written part of the line.
    pub async fn write_line(&mut self, line: &str) -> Result<()> {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.write_all(&buf).await
    }

    /// Writes all of `bytes`.
    ///
    /// # Errors
    /// [`Error::Io`] (kind `BrokenPipe`) when the child closed its stdin or exited.
    ///
    /// # Cancel safety
    /// Not cancel safe: a dropped call may have written part of the data.
    pub async fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let program = self.program.clone();
        self.pipe()?
            .write_all(bytes)
            .await
            .map_err(|e| Error::io(&program, "writing to stdin", e))
    }

    /// Flushes buffered data to the pipe.
    ///
    /// # Errors
    /// [`Error::Io`] when the pipe is broken.
    ///
    /// # Cancel safety
    /// Cancel safe: a dropped flush loses nothing that was written; a later `flush` or
    /// `finish` pushes whatever is still pending.
    pub async fn flush(&mut self) -> Result<()> {
        let program = self.program.clone();
        self.pipe()?
            .flush()
            .await
            .map_err(|e| Error::io(&program, "flushing stdin", e))
    }

    /// Flushes and closes stdin: the child reads end-of-file. Idempotent.
    ///
    /// # Errors
    /// [`Error::Io`] when the final flush fails for a reason other than the child having
    /// already closed its end.
    ///
    /// # Cancel safety
    /// Cancel safe in effect: the pipe is taken before the first `.await`, so a dropped call
    /// still closes stdin (the child reads end-of-file) and a later `finish` is a no-op.
    pub async fn finish(&mut self) -> Result<()> {
        if let Some(mut p) = self.pipe.take() {
            match p.shutdown().await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(Error::io(&self.program, "closing stdin", e)),
            }
        }
        Ok(())
    }
}

/// Feeds a [`Stdin`] source into a pipe in the background. A child that stops reading early
/// (`EPIPE`) is not an error: it is allowed to ignore its input.
pub(crate) async fn feed(stdin: Stdin, mut pipe: PipeWriter) -> std::io::Result<()> {
    let r = async {
        match &stdin.kind {
            StdinKind::Bytes(b) => pipe.write_all(b).await?,
            StdinKind::Lines(src) => {
                let stream = src.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(mut stream) = stream {
                    use tokio_stream::StreamExt as _;
                    while let Some(line) = stream.next().await {
                        let mut buf = line.into_bytes();
                        buf.push(b'\n');
                        pipe.write_all(&buf).await?;
                    }
                }
            }
            StdinKind::Null | StdinKind::Inherit | StdinKind::File(_) => {}
        }
        pipe.shutdown().await
    }
    .await;
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
