//! The operators' handle on a running engine: see the groups it holds,
//! skip or retry a group's head, pause and resume. A [`Steering`] sends
//! requests to the engine's [`Inbox`]; the engine answers them from its
//! loop, between two decisions, so an answer is always one consistent view.

use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};

/// How long a request waits for the engine's answer. An unanswered request
/// is dropped, and the engine never acts on it afterwards: an action the
/// caller was told failed must not happen later.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// A handle that steers one run (see [`crate::run_steered`]). Clones share
/// the run.
#[derive(Debug, Clone)]
pub struct Steering {
    requests: mpsc::Sender<Request>,
}

/// Where a run takes [`Steering`]'s requests; give it to
/// [`crate::run_steered`].
#[derive(Debug)]
pub struct Inbox {
    pub(crate) requests: mpsc::Receiver<Request>,
}

/// A handle and the inbox it sends to.
pub fn steering() -> (Steering, Inbox) {
    // Operators send a request now and then: a short queue is plenty, and
    // a full one makes a sender wait, never the engine.
    let (requests, inbox) = mpsc::channel(16);
    (Steering { requests }, Inbox { requests: inbox })
}

/// One held group, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStatus {
    /// The message group id.
    pub group: String,
    /// What its head (the message the rest waits for) is doing.
    pub state: GroupState,
    /// Its messages held by this run, in every step (done ones waiting for
    /// their delete included).
    pub held: usize,
    /// The message the rest of the group waits for; `None` while every
    /// message held succeeded and waits for its delete (or hand-back).
    pub head: Option<Head>,
    /// Handler runs of the head that failed in this delivery.
    pub attempts: u32,
    /// The head's last error in this delivery.
    pub last_error: Option<String>,
    /// When the group entered its state (for a blocked group: when it
    /// became blocked, however often it ran again since).
    pub since: SystemTime,
}

/// The message a group waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Its SQS message id.
    pub message_id: String,
    /// Its SQS sequence number.
    pub sequence_number: String,
}

/// What a held group is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupState {
    /// Its head failed on every attempt allowed and waits for its next run
    /// on the slow backoff (`--exhausted block`), or for an operator.
    Blocked,
    /// Its head's handler runs.
    Running,
    /// Its head waits for a worker (or for its rate, or a pause).
    Queued,
    /// Its head failed and waits for its next attempt.
    BackingOff,
    /// Its head's handler asked to run it again later.
    RetryLater,
    /// Nothing left to run: its messages wait for their deletes, a move to
    /// the dead-letter queue or a hand-back.
    Settling,
}

impl GroupState {
    /// The state's name in `GET /groups` and `fifo groups`.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Blocked => "blocked",
            GroupState::Running => "running",
            GroupState::Queued => "queued",
            GroupState::BackingOff => "backing-off",
            GroupState::RetryLater => "retry-later",
            GroupState::Settling => "settling",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SteerError {
    /// This run holds no message of the group.
    #[error("this process holds no message of group {0}")]
    NotHeld(String),
    /// The action does not apply to the group as it stands.
    #[error("{0}")]
    NotApplicable(String),
    /// The run has ended (or is ending and no longer answers).
    #[error("the run has stopped")]
    Stopped,
    /// The run did not answer in time (it has not started its engine yet,
    /// or is busy) or has too many requests waiting; nothing was done.
    #[error(
        "the run is not answering (it is starting, or busy; a request waits {} s at most): nothing was done",
        ANSWER_WITHIN.as_secs()
    )]
    NoAnswer,
}

/// A request, with where its answer goes: once nobody waits there any
/// more, it is not acted on (see [`Request::abandoned`]).
#[derive(Debug)]
pub(crate) enum Request {
    Groups(oneshot::Sender<Vec<GroupStatus>>),
    Skip(String, oneshot::Sender<Result<GroupStatus, SteerError>>),
    Retry(String, oneshot::Sender<Result<GroupStatus, SteerError>>),
    Pause(bool, oneshot::Sender<Option<SystemTime>>),
}

impl Request {
    /// Whether its caller stopped waiting for the answer.
    pub(crate) fn abandoned(&self) -> bool {
        match self {
            Request::Groups(answer) => answer.is_closed(),
            Request::Skip(_, answer) | Request::Retry(_, answer) => answer.is_closed(),
            Request::Pause(_, answer) => answer.is_closed(),
        }
    }
}

impl Steering {
    /// The groups the run holds: blocked ones first, then the longest in
    /// their state.
    pub async fn groups(&self) -> Result<Vec<GroupStatus>, SteerError> {
        self.ask(Request::Groups).await
    }

    /// Moves a blocked group's head to the dead-letter queue now (its
    /// reason says it was skipped by an operator, with its last error), and
    /// the group goes on.
    pub async fn skip(&self, group: &str) -> Result<GroupStatus, SteerError> {
        self.ask(|answer| Request::Skip(group.to_owned(), answer))
            .await?
    }

    /// Runs a group's head again now, instead of after its backoff.
    pub async fn retry(&self, group: &str) -> Result<GroupStatus, SteerError> {
        self.ask(|answer| Request::Retry(group.to_owned(), answer))
            .await?
    }

    /// Pauses (`true`) or resumes (`false`) the run: paused, no handler
    /// starts and nothing is received, while held messages keep their
    /// leases and running handlers finish. Returns since when the run is
    /// paused, `None` once it runs.
    pub async fn pause(&self, pause: bool) -> Result<Option<SystemTime>, SteerError> {
        self.ask(|answer| Request::Pause(pause, answer)).await
    }

    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, SteerError> {
        let (answer, answered) = oneshot::channel();
        self.requests
            .try_send(request(answer))
            .map_err(|full_or_closed| match full_or_closed {
                mpsc::error::TrySendError::Full(_) => SteerError::NoAnswer,
                mpsc::error::TrySendError::Closed(_) => SteerError::Stopped,
            })?;
        match tokio::time::timeout(ANSWER_WITHIN, answered).await {
            Ok(answer) => answer.map_err(|_| SteerError::Stopped),
            Err(_) => Err(SteerError::NoAnswer),
        }
    }
}
