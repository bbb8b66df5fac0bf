//! The engine's calls to the queue. Each runs in a task of its own, makes
//! one call and returns what happened as an [`Event`]; the engine owns every
//! decision about what to call and what the answer means.

use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::queue::{
    DeadLetterCopy, EntryFailure, Queue, QueueError, QueueErrorKind, ReceiveRequest, Received,
};

/// A held message, as the engine names it in calls.
pub(crate) type Key = u64;

/// What a call came back with.
#[derive(Debug)]
pub(crate) enum Event {
    Received {
        slot: usize,
        /// None when the receive was cut short at shutdown.
        result: Option<Result<Received, QueueError>>,
    },
    Deleted {
        keys: Vec<Key>,
        /// How long SQS took to answer.
        took: Duration,
        result: Result<Vec<EntryFailure>, QueueError>,
    },
    DeadLettered {
        key: Key,
        result: Result<(), QueueError>,
    },
    /// A heartbeat: these messages' visibility was set to `seconds` (the
    /// full timeout, or more for an overtaken message).
    Extended {
        keys: Vec<Key>,
        seconds: u32,
        sent_at: Instant,
        result: Result<Vec<EntryFailure>, QueueError>,
    },
    /// A hand-back: these messages' visibility was set to 0.
    Released {
        keys: Vec<Key>,
        result: Result<Vec<EntryFailure>, QueueError>,
    },
    QueueEmpty(Result<bool, QueueError>),
}

impl Event {
    /// How the call went, for its duration's metric: `None` for a receive
    /// cut short at shutdown; a whole batch counts as answered even when
    /// some of its entries failed.
    pub(crate) fn outcome(&self) -> Option<Result<(), QueueErrorKind>> {
        match self {
            Event::Received { result, .. } => result.as_ref().map(answer),
            Event::Deleted { result, .. }
            | Event::Extended { result, .. }
            | Event::Released { result, .. } => Some(answer(result)),
            Event::DeadLettered { result, .. } => Some(answer(result)),
            Event::QueueEmpty(result) => Some(answer(result)),
        }
    }
}

/// Whether a call was answered, and if not, the kind of error.
fn answer<T>(result: &Result<T, QueueError>) -> Result<(), QueueErrorKind> {
    result.as_ref().map(|_| ()).map_err(QueueError::kind)
}

pub(crate) async fn receive<Q: Queue>(
    queue: Q,
    options: ReceiveRequest,
    slot: usize,
    abort: CancellationToken,
) -> Event {
    let result = tokio::select! {
        result = queue.receive(&options) => Some(result),
        _ = abort.cancelled() => None,
    };
    Event::Received { slot, result }
}

pub(crate) async fn delete<Q: Queue>(queue: Q, keys: Vec<Key>, handles: Vec<String>) -> Event {
    let refs: Vec<&str> = handles.iter().map(String::as_str).collect();
    let started = Instant::now();
    let result = queue.delete(&refs).await;
    Event::Deleted {
        keys,
        took: started.elapsed(),
        result,
    }
}

pub(crate) async fn dead_letter<Q: Queue>(
    queue: Q,
    key: Key,
    receipt_handle: String,
    copy: DeadLetterCopy,
) -> Event {
    let result = queue.dead_letter(&receipt_handle, &copy).await;
    Event::DeadLettered { key, result }
}

/// Sets `seconds` of visibility on every entry: a heartbeat, or a
/// hand-back (`release`).
pub(crate) async fn change_visibility<Q: Queue>(
    queue: Q,
    keys: Vec<Key>,
    handles: Vec<String>,
    seconds: u32,
    release: bool,
) -> Event {
    let sent_at = Instant::now();
    let entries: Vec<(&str, u32)> = handles.iter().map(|h| (h.as_str(), seconds)).collect();
    let result = queue.change_visibility(&entries).await;
    if release {
        Event::Released { keys, result }
    } else {
        Event::Extended {
            keys,
            seconds,
            sent_at,
            result,
        }
    }
}

pub(crate) async fn is_empty<Q: Queue>(queue: Q) -> Event {
    Event::QueueEmpty(queue.is_empty().await)
}
