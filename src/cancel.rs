//! Cancellation plumbing, with the `cancellation` feature gate kept in this one file.
//!
//! The engine asks three questions of a command's token — is it cancelled already, wait until it
//! is, and sleep unless it is — and gets the same answers with the feature off (never
//! cancelled), so the watchdog, the retry loop and the verbs carry no `cfg` of their own.

use std::future::Future as _;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::Command;

/// A command's cancellation token, or nothing (always nothing without the feature).
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancel {
    #[cfg(feature = "cancellation")]
    token: Option<tokio_util::sync::CancellationToken>,
}

impl Cancel {
    /// The token of `cmd`, if it has one.
    pub(crate) fn of(cmd: &Command) -> Cancel {
        #[cfg(feature = "cancellation")]
        {
            Cancel {
                token: cmd.cancel_token().cloned(),
            }
        }
        #[cfg(not(feature = "cancellation"))]
        {
            let _ = cmd;
            Cancel {}
        }
    }

    /// Whether there is a token at all (a run without one needs no watchdog for it).
    pub(crate) fn is_set(&self) -> bool {
        #[cfg(feature = "cancellation")]
        {
            self.token.is_some()
        }
        #[cfg(not(feature = "cancellation"))]
        {
            false
        }
    }

    /// Whether the token has been cancelled.
    pub(crate) fn is_cancelled(&self) -> bool {
        #[cfg(feature = "cancellation")]
        {
            self.token.as_ref().is_some_and(|t| t.is_cancelled())
        }
        #[cfg(not(feature = "cancellation"))]
        {
            false
        }
    }

    /// Completes when the token is cancelled; never without a token.
    pub(crate) async fn cancelled(&self) {
        #[cfg(feature = "cancellation")]
        if let Some(t) = &self.token {
            return t.cancelled().await;
        }
        std::future::pending::<()>().await
    }
}

/// [`Error::Cancelled`] when `cmd`'s token is already cancelled: a run that would be abandoned
/// before it started spawns nothing.
pub(crate) fn precheck(cmd: &Command) -> Result<()> {
    if Cancel::of(cmd).is_cancelled() {
        return Err(Error::Cancelled {
            program: cmd.program_name(),
        });
    }
    Ok(())
}

/// `cmd` without its token (a clone), when it has one. A native pipeline's stages run so: the
/// chain watches every stage's token itself, and abandons the whole chain while it runs.
pub(crate) fn without_token(cmd: &Command) -> Option<Command> {
    #[cfg(feature = "cancellation")]
    if cmd.cancel.is_some() {
        let mut own = cmd.clone();
        own.cancel = None;
        return Some(own);
    }
    let _ = cmd;
    None
}

/// Sleeps for `d` unless `cmd`'s token fires first ([`Error::Cancelled`]).
pub(crate) async fn sleep(cmd: &Command, d: Duration) -> Result<()> {
    let cancel = Cancel::of(cmd);
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Error::Cancelled { program: cmd.program_name() }),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}

/// Resolves once any of `cancels` fires (never, for an empty list or without the feature).
pub(crate) async fn any_cancelled(cancels: &[Cancel]) {
    let mut waits: Vec<_> = cancels.iter().map(|c| Box::pin(c.cancelled())).collect();
    if waits.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for w in &mut waits {
            if w.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}
