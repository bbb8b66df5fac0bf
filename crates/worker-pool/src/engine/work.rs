//! One handler call as a task of its own: the handler on one message or a
//! batch, a panic caught and a timeout enforced, reported back as a [`Ran`].

use std::sync::Arc;

use fifo_handler::{BatchOutcome, Handler, HandlerError, Message};
use futures_util::FutureExt;
use tokio::time::Duration;

/// One handler call's result: the first `succeeded` of its messages
/// succeeded; `failed`, why the next one failed (later ones were not run).
#[derive(Debug)]
pub(super) struct Ran {
    /// How many of its messages, from the first, succeeded.
    pub(super) succeeded: usize,
    /// The next one's result, when it failed.
    pub(super) failed: Option<Attempt>,
    /// How long the call took.
    pub(super) took: Duration,
}

/// One message's result.
#[derive(Debug)]
pub(super) enum Attempt {
    /// It succeeded.
    Succeeded,
    /// It failed.
    Failed {
        /// Kept as the handler's error until it is logged.
        error: HandlerError,
        /// The handler was cut off (timeout): it may still be ending.
        cut_off: bool,
    },
}

/// Runs the handler on one message, or with `batches` on a batch (of one
/// or more) with `handle_batch`. A panic is caught and fails the call's
/// first message (the others were not reached); so does a timeout, which
/// drops the handler's future (an exec handler then ends its process
/// group). The failed message then runs alone (see `Engine::start`).
pub(super) async fn work<H: Handler>(
    handler: Arc<H>,
    messages: Vec<Arc<Message>>,
    batches: bool,
    timeout: Option<Duration>,
) -> Ran {
    let count = messages.len();
    let handled = async {
        match messages.as_slice() {
            [message] if !batches => match handler.handle(message).await {
                Ok(()) => BatchOutcome::all(1),
                Err(error) => BatchOutcome::failed_at(0, error),
            },
            _ => {
                let batch: Vec<&Message> = messages.iter().map(|m| &**m).collect();
                handler.handle_batch(&batch).await
            }
        }
    };
    let handled = std::panic::AssertUnwindSafe(handled).catch_unwind();
    let joined = match timeout {
        Some(limit) => match tokio::time::timeout(limit, handled).await {
            Ok(joined) => joined,
            Err(_) => return Ran::first_failed(format!("handler timed out after {limit:?}"), true),
        },
        None => handled.await,
    };
    match joined {
        Ok(outcome) => {
            let succeeded = outcome.succeeded.min(count);
            let failed = (succeeded < count).then(|| Attempt::Failed {
                error: outcome.error.unwrap_or_else(|| {
                    format!(
                        "the handler reported {succeeded} of {count} messages handled, with no error"
                    )
                    .into()
                }),
                cut_off: false,
            });
            Ran {
                succeeded,
                failed,
                took: Duration::ZERO,
            }
        }
        Err(_panic) => Ran::panicked(),
    }
}

impl Ran {
    /// The call's first message failed (the others were not reached);
    /// `cut_off`: the handler was dropped and may still be ending.
    fn first_failed(error: String, cut_off: bool) -> Ran {
        Ran {
            succeeded: 0,
            failed: Some(Attempt::Failed {
                error: error.into(),
                cut_off,
            }),
            took: Duration::ZERO,
        }
    }

    pub(super) fn panicked() -> Ran {
        Ran::first_failed("handler panicked".to_owned(), false)
    }
}
