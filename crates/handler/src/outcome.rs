//! The failures that say more than "retry": [`Reject`], [`RetryLater`] and
//! [`CannotStart`], read from a handler's error as a [`Verdict`]; any other
//! error is a failure under the retry policy. A [`StatusError`] carries how
//! the work ended, for a dead letter's attributes.

use std::fmt;
use std::time::Duration;

use crate::HandlerError;

/// What the engine does with a message whose handler failed, from its
/// error ([`Verdict::of`]); `Ok` deletes the message and its group goes
/// on. The built-in handlers map onto it too: `exec` by exit status,
/// `http` by response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Any error but the two below: retried with backoff; once retries run
    /// out, handed back to the queue with the rest of its group.
    Retry,
    /// [`Reject`]: the message can never succeed. Moved to the dead-letter
    /// queue now, skipping the retries left, and its group goes on. Without
    /// a dead-letter queue it is a failure like `Retry`, never deleted.
    Reject,
    /// [`RetryLater`]: run it again after the delay (`None`: the retry
    /// policy's next backoff), without counting a failure.
    RetryLater(Option<Duration>),
    /// [`CannotStart`]: the handler could not even start, through no fault
    /// of the message. Run again after a backoff; never an attempt, never
    /// dead-lettered for it.
    CannotStart,
}

impl Verdict {
    /// The verdict a handler's error asks for: [`Reject`] or
    /// [`RetryLater`] at the top of the error, otherwise `Retry`.
    pub fn of(error: &HandlerError) -> Verdict {
        if error.is::<Reject>() {
            Verdict::Reject
        } else if let Some(later) = error.downcast_ref::<RetryLater>() {
            Verdict::RetryLater(later.after)
        } else if error.is::<CannotStart>() {
            Verdict::CannotStart
        } else {
            Verdict::Retry
        }
    }
}

/// A handler's error for a message that can never succeed (bad data, a
/// request the service refuses for good): it goes to the dead-letter queue
/// now instead of being retried. Its text is the dead letter's reason.
///
/// ```
/// # use fifo_handler::{Message, Outcome, Reject};
/// fn parse(message: &Message) -> Outcome {
///     let _: u64 = message.body.parse().map_err(Reject::because)?;
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Reject {
    reason: HandlerError,
}

impl Reject {
    /// Rejects for `reason` (an error or a text).
    pub fn because(reason: impl Into<HandlerError>) -> Reject {
        Reject {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rejected: {}", self.reason)
    }
}

impl std::error::Error for Reject {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.reason)
    }
}

/// A handler's error for a message that cannot run now but is not at
/// fault (a dependency is busy or down for maintenance): it runs again
/// after a delay, and the attempt does not count against its retries.
#[derive(Debug)]
pub struct RetryLater {
    after: Option<Duration>,
    reason: HandlerError,
}

impl RetryLater {
    /// Retries after the retry policy's next backoff, for `reason`.
    pub fn because(reason: impl Into<HandlerError>) -> RetryLater {
        RetryLater {
            after: None,
            reason: reason.into(),
        }
    }

    /// Retries after `delay` (for example an HTTP `Retry-After`).
    pub fn after(delay: Duration, reason: impl Into<HandlerError>) -> RetryLater {
        RetryLater {
            after: Some(delay),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for RetryLater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.after {
            Some(delay) => write!(f, "retry in {delay:?}: {}", self.reason),
            None => write!(f, "retry later: {}", self.reason),
        }
    }
}

impl std::error::Error for RetryLater {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.reason)
    }
}

/// A handler's error when fifo's own machine refused to start the work (no
/// file descriptor, memory or process left, the program gone): it says
/// nothing about the message, which runs again once starts succeed, without
/// counting an attempt and never dead-lettered for it.
#[derive(Debug)]
pub struct CannotStart {
    reason: HandlerError,
}

impl CannotStart {
    /// The work could not start, for `reason`.
    pub fn because(reason: impl Into<HandlerError>) -> CannotStart {
        CannotStart {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for CannotStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.reason.fmt(f)
    }
}

impl std::error::Error for CannotStart {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.reason)
    }
}

/// A failure that carries how the work ended: a program's exit status
/// (`exit status: 3`) or a service's answer (`HTTP 500`). The engine puts
/// it in a dead letter's attributes; [`status_of`] finds it under a
/// [`Reject`] or [`RetryLater`] too.
#[derive(Debug)]
pub struct StatusError {
    status: String,
    text: String,
}

impl StatusError {
    /// A failure whose status is `status` and whose text is `text`.
    pub fn new(status: impl Into<String>, text: impl Into<String>) -> StatusError {
        StatusError {
            status: status.into(),
            text: text.into(),
        }
    }
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for StatusError {}

/// The status of a [`StatusError`] in `error` or its causes, if any.
pub fn status_of(error: &HandlerError) -> Option<&str> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(&**error);
    while let Some(error) = current {
        if let Some(found) = error.downcast_ref::<StatusError>() {
            return Some(&found.status);
        }
        current = error.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_comes_from_the_error_type() {
        let plain: HandlerError = "boom".into();
        assert_eq!(Verdict::of(&plain), Verdict::Retry);
        let reject: HandlerError = Reject::because("not JSON").into();
        assert_eq!(Verdict::of(&reject), Verdict::Reject);
        assert_eq!(reject.to_string(), "rejected: not JSON");
        let later: HandlerError = RetryLater::after(Duration::from_secs(3), "busy").into();
        assert_eq!(
            Verdict::of(&later),
            Verdict::RetryLater(Some(Duration::from_secs(3)))
        );
        let backoff: HandlerError = RetryLater::because("busy").into();
        assert_eq!(Verdict::of(&backoff), Verdict::RetryLater(None));
        let unstarted: HandlerError = CannotStart::because("Too many open files").into();
        assert_eq!(Verdict::of(&unstarted), Verdict::CannotStart);
        assert_eq!(unstarted.to_string(), "Too many open files");
    }

    #[test]
    fn a_status_is_found_under_a_reject() {
        let plain: HandlerError = StatusError::new("HTTP 500", "POST answered 500").into();
        assert_eq!(status_of(&plain), Some("HTTP 500"));
        assert_eq!(plain.to_string(), "POST answered 500");
        let rejected: HandlerError =
            Reject::because(StatusError::new("exit status: 65", "exited with 65")).into();
        assert_eq!(status_of(&rejected), Some("exit status: 65"));
        let none: HandlerError = "boom".into();
        assert_eq!(status_of(&none), None);
    }
}
