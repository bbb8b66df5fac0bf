//! The engine: one task owns the router and every held message and makes
//! every decision; pollers, workers, the acker and visibility changes are
//! tasks that report back to it over one channel. Nothing here awaits I/O
//! inside the engine loop, so a slow call never stalls dispatch.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use fifo_group_router::Router;
use fifo_handler::{Handler, Message};
use fifo_sqs_client::{Error as QueueError, ReceiveOptions, ReceivedMessage};
use futures_util::FutureExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Counters, Error, PoolConfig, Queue, Stats, backoff};

/// Entries per batch call.
const BATCH: usize = 10;
/// Delete calls in flight at once.
const ACKS_IN_FLIGHT: usize = 4;

/// Runs the engine until `shutdown` is cancelled (or, with `until_empty` or
/// `limit`, until the work is done), then drains: running handlers get
/// `shutdown_timeout` to finish, every other held message is released at
/// once, and acks are flushed. Returns the final counters; an error only
/// when the queue itself is unusable (deleted, access denied).
pub async fn run<Q: Queue, H: Handler>(
    queue: Q,
    handler: H,
    config: PoolConfig,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
) -> Result<Stats, Error> {
    check(&config)?;
    let stop = shutdown.child_token();
    let (events, inbox) = mpsc::unbounded_channel();
    let (acks, acker_inbox) = mpsc::unbounded_channel();
    // Background I/O (pollers, releases, heartbeats) is tracked so the end
    // of `run` waits for it; workers are a JoinSet so they can be abandoned.
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(config.max_in_flight));
    let abort_receives = CancellationToken::new();
    let pollers_started = config.pollers;
    for poller in 0..config.pollers {
        tracker.spawn(poll(
            queue.clone(),
            config.clone(),
            permits.clone(),
            events.clone(),
            [stop.clone(), abort_receives.clone()],
            poller,
        ));
    }
    let acker = tokio::spawn(ack(queue.clone(), acker_inbox, counters.clone()));
    let mut engine = Engine {
        queue,
        handler: Arc::new(handler),
        config,
        counters: counters.clone(),
        router: Router::new(),
        held: HashMap::new(),
        retry_ready: VecDeque::new(),
        retries_pending: 0,
        moves_pending: 0,
        running: 0,
        checking_empty: false,
        stopping: false,
        abandoned: false,
        pollers: pollers_started,
        abort_receives,
        fatal: None,
        events,
        acks,
        permits,
        stop,
        tracker,
        workers: JoinSet::new(),
    };
    engine.run_loop(inbox).await;
    let Engine {
        acks,
        tracker,
        fatal,
        ..
    } = engine;
    drop(acks);
    let _ = acker.await;
    tracker.close();
    tracker.wait().await;
    match fatal {
        Some(err) => Err(err.into()),
        None => Ok(counters.snapshot()),
    }
}

fn check(config: &PoolConfig) -> Result<(), Error> {
    let problem = if config.workers == 0 {
        "workers must be at least 1"
    } else if config.pollers == 0 {
        "pollers must be at least 1"
    } else if !(1..=10).contains(&config.max_messages) {
        "max_messages must be 1 to 10"
    } else if config.max_in_flight < config.max_messages as usize {
        "max_in_flight must be at least max_messages"
    } else if config.wait_time_seconds > 20 {
        "wait_time_seconds must be 0 to 20"
    } else if !(1..=43_200).contains(&config.visibility_timeout) {
        "visibility_timeout must be 1 to 43200 seconds"
    } else {
        return Ok(());
    };
    Err(Error::Config(problem.to_owned()))
}

/// A held message and how often it has been tried in this delivery.
#[derive(Debug)]
struct Held {
    message: Message,
    attempts: u32,
}

#[derive(Debug)]
enum Event {
    Received(Vec<ReceivedMessage>),
    /// A receive came back empty.
    ReceivedNothing,
    Done {
        group: String,
        held: Held,
        outcome: Result<(), String>,
    },
    RetryDue {
        group: String,
        held: Held,
    },
    DeadLettered {
        group: String,
        held: Held,
        result: Result<(), String>,
    },
    QueueEmpty(bool),
    Fatal(QueueError),
    /// A poller has ended.
    PollerDone,
}

/// Where a held message's visibility stands.
#[derive(Debug)]
struct Visibility {
    receipt_handle: String,
    expires: Instant,
}

struct Engine<Q, H> {
    queue: Q,
    handler: Arc<H>,
    config: PoolConfig,
    counters: Arc<Counters>,
    router: Router<Held>,
    /// Every held message (queued, running, backing off), by message id.
    held: HashMap<String, Visibility>,
    /// Retries whose backoff is over: they go before new work.
    retry_ready: VecDeque<(String, Held)>,
    retries_pending: usize,
    /// Moves to the dead-letter queue under way.
    moves_pending: usize,
    running: usize,
    checking_empty: bool,
    stopping: bool,
    /// The shutdown timeout passed with handlers still running.
    abandoned: bool,
    /// Pollers still running (one may have a receive under way).
    pollers: usize,
    /// Cancels receives under way; see `begin_stop`.
    abort_receives: CancellationToken,
    fatal: Option<QueueError>,
    events: mpsc::UnboundedSender<Event>,
    acks: mpsc::UnboundedSender<String>,
    /// One permit per message that may still be held; pollers take them.
    permits: Arc<Semaphore>,
    stop: CancellationToken,
    tracker: TaskTracker,
    workers: JoinSet<()>,
}

impl<Q: Queue, H: Handler> Engine<Q, H> {
    async fn run_loop(&mut self, mut inbox: mpsc::UnboundedReceiver<Event>) {
        let period = Duration::from_secs(u64::from(self.config.visibility_timeout)) / 3;
        let mut heartbeat = tokio::time::interval(period.max(Duration::from_millis(100)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut grace_ends = None;
        loop {
            self.dispatch();
            self.counters
                .set_gauges(self.held.len(), self.router.busy_groups());
            let handlers_done = self.running == 0 || self.abandoned;
            if self.stopping
                && handlers_done
                && self.retries_pending == 0
                && self.moves_pending == 0
                && self.pollers == 0
            {
                break;
            }
            tokio::select! {
                Some(event) = inbox.recv() => self.on_event(event),
                Some(_) = self.workers.join_next() => {}
                _ = heartbeat.tick() => self.heartbeat(),
                _ = self.stop.cancelled(), if !self.stopping => {
                    self.begin_stop();
                    grace_ends = Some(Instant::now() + self.config.shutdown_timeout);
                }
                _ = sleep_until(grace_ends), if grace_ends.is_some() && !self.abandoned => {
                    tracing::warn!(
                        "{} handlers still running after the shutdown timeout: abandoning them",
                        self.running
                    );
                    self.abandoned = true;
                    self.workers.abort_all();
                }
            }
        }
        // Anything still held belongs to an abandoned handler: release it so
        // it comes back at once rather than after its visibility timeout. No
        // receive is pending any more, so none can swallow it.
        let abandoned: Vec<String> = self.held.drain().map(|(_, v)| v.receipt_handle).collect();
        self.release(abandoned.iter().map(|h| (h.clone(), 0)).collect());
        self.counters.set_gauges(0, 0);
    }

    /// Starts handlers while workers are free: due retries first, then the
    /// next ready lane.
    fn dispatch(&mut self) {
        while self.running < self.config.workers {
            if let Some(limit) = self.config.limit {
                let succeeded = self.counters.snapshot().succeeded;
                if succeeded + self.running as u64 >= limit {
                    return;
                }
            }
            let next = match self.retry_ready.pop_front() {
                Some(retry) => Some(retry),
                None if self.stopping => None,
                None => self.router.take_next(),
            };
            let Some((group, held)) = next else { return };
            self.running += 1;
            self.workers.spawn(work(
                self.handler.clone(),
                group,
                held,
                self.config.handler_timeout,
                self.events.clone(),
            ));
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Received(messages) => self.on_received(messages),
            Event::ReceivedNothing => self.check_empty(),
            Event::Done {
                group,
                held,
                outcome,
            } => {
                self.running = self.running.saturating_sub(1);
                match outcome {
                    Ok(()) => self.on_success(&group, held),
                    Err(reason) => self.on_failure(group, held, reason),
                }
            }
            Event::DeadLettered {
                group,
                held,
                result,
            } => self.on_dead_lettered(group, held, result),
            Event::RetryDue { group, held } => {
                self.retries_pending -= 1;
                self.retry_ready.push_back((group, held));
            }
            Event::QueueEmpty(empty) => {
                self.checking_empty = false;
                if empty && self.idle() {
                    tracing::info!("the queue is empty and nothing is held: stopping");
                    self.stop.cancel();
                }
            }
            Event::PollerDone => self.pollers -= 1,
            Event::Fatal(err) => {
                tracing::error!("stopping: {err}");
                self.fatal.get_or_insert(err);
                self.stop.cancel();
            }
        }
    }

    fn on_received(&mut self, messages: Vec<ReceivedMessage>) {
        self.counters.add_received(messages.len() as u64);
        let expires =
            Instant::now() + Duration::from_secs(u64::from(self.config.visibility_timeout));
        let mut to_release = Vec::new();
        for message in messages {
            if let Some(visibility) = self.held.get_mut(&message.message_id) {
                // Delivered again while we hold it (its visibility ran out):
                // keep the copy we have, with the newest receipt handle.
                visibility.receipt_handle = message.receipt_handle;
                visibility.expires = expires;
                self.permits.add_permits(1);
                continue;
            }
            if self.stopping {
                to_release.push((message.receipt_handle, 0));
                self.permits.add_permits(1);
                continue;
            }
            let (message, receipt_handle) = handler_message(message);
            self.held.insert(
                message.id.clone(),
                Visibility {
                    receipt_handle,
                    expires,
                },
            );
            let group = message.group_id.clone();
            self.router.push(
                &group,
                Held {
                    message,
                    attempts: 0,
                },
            );
        }
        self.release(to_release);
    }

    fn on_success(&mut self, group: &str, held: Held) {
        self.counters.add_succeeded();
        self.router.succeeded(group);
        if let Some(visibility) = self.forget(&held.message.id) {
            let _ = self.acks.send(visibility.receipt_handle);
        }
        if self
            .config
            .limit
            .is_some_and(|limit| self.counters.snapshot().succeeded >= limit)
        {
            self.stop.cancel();
        }
    }

    fn on_failure(&mut self, group: String, mut held: Held, reason: String) {
        let message = &held.message;
        if !self.stopping && held.attempts < self.config.retries {
            held.attempts += 1;
            self.counters.add_retried();
            let delay = backoff::jittered(
                held.attempts,
                self.config.backoff_base,
                self.config.backoff_max,
            );
            tracing::info!(
                "message {} of group {group} failed ({reason}); retry {} of {} in {delay:?}",
                message.id,
                held.attempts,
                self.config.retries
            );
            self.retries_pending += 1;
            let events = self.events.clone();
            let stop = self.stop.clone();
            self.tracker.spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => {}
                }
                let _ = events.send(Event::RetryDue { group, held });
            });
            return;
        }

        if self.stopping {
            self.release_group(&group, held, 0);
            return;
        }
        self.counters.add_failed();
        let receive_count = message.receive_count;
        if self
            .config
            .max_receive_count
            .is_some_and(|max| receive_count >= max)
        {
            tracing::warn!(
                "message {} of group {group} failed on its last allowed receive ({reason}); moving it to the dead-letter queue",
                message.id
            );
            self.moves_pending += 1;
            let queue = self.queue.clone();
            let events = self.events.clone();
            let receipt_handle = self
                .held
                .get(&held.message.id)
                .map(|v| v.receipt_handle.clone())
                .unwrap_or_default();
            self.tracker.spawn(async move {
                let result = queue
                    .dead_letter(&receipt_handle, &held.message)
                    .await
                    .map_err(|e| e.to_string());
                let _ = events.send(Event::DeadLettered {
                    group,
                    held,
                    result,
                });
            });
            return;
        }
        let seconds = backoff::release_seconds(
            receive_count,
            self.config.backoff_base,
            self.config.backoff_max,
        );
        tracing::warn!(
            "message {} of group {group} failed after {} attempts ({reason}); it comes back in {seconds} s",
            message.id,
            held.attempts + 1,
        );
        self.release_group(&group, held, seconds);
    }

    fn on_dead_lettered(&mut self, group: String, held: Held, result: Result<(), String>) {
        self.moves_pending -= 1;
        match result {
            Ok(()) => {
                self.counters.add_dead_lettered();
                self.forget(&held.message.id);
                self.router.succeeded(&group);
            }
            Err(err) => {
                // SQS's own redrive takes it on the next receive instead.
                tracing::warn!(
                    "moving message {} to the dead-letter queue failed: {err}",
                    held.message.id
                );
                self.release_group(&group, held, 0);
            }
        }
    }

    /// Releases a message that is out (visible again in `seconds`) and every
    /// later message of its group at once, so SQS redelivers the group from
    /// this message on, in order.
    fn release_group(&mut self, group: &str, held: Held, seconds: u32) {
        let mut releases = vec![(held.message.id, seconds)];
        let rest = self.router.failed(group);
        releases.extend(rest.into_iter().map(|h| (h.message.id, 0)));
        let handles = releases
            .into_iter()
            .filter_map(|(id, seconds)| Some((self.forget(&id)?.receipt_handle, seconds)))
            .collect();
        self.release(handles);
    }

    /// Stops tracking a message and frees its place for the pollers.
    fn forget(&mut self, message_id: &str) -> Option<Visibility> {
        let visibility = self.held.remove(message_id)?;
        self.permits.add_permits(1);
        Some(visibility)
    }

    /// Sets these messages' visibility (0: visible at once), in batches.
    fn release(&mut self, entries: Vec<(String, u32)>) {
        if entries.is_empty() {
            return;
        }
        self.counters.add_released(entries.len() as u64);
        self.change_visibility(entries);
    }

    fn change_visibility(&mut self, entries: Vec<(String, u32)>) {
        for chunk in entries.chunks(BATCH) {
            let queue = self.queue.clone();
            let chunk = chunk.to_vec();
            self.tracker.spawn(async move {
                let refs: Vec<(&str, u32)> = chunk.iter().map(|(h, s)| (h.as_str(), *s)).collect();
                match queue.change_visibility(&refs).await {
                    Ok(failures) if failures.is_empty() => {}
                    Ok(failures) => {
                        for f in failures {
                            tracing::warn!("changing visibility failed: {}: {}", f.code, f.message);
                        }
                    }
                    Err(err) => tracing::warn!("changing visibility failed: {err}"),
                }
            });
        }
    }

    /// Extends the visibility of every held message that would expire
    /// within half a timeout, so SQS never redelivers a group we hold.
    fn heartbeat(&mut self) {
        let timeout = Duration::from_secs(u64::from(self.config.visibility_timeout));
        let now = Instant::now();
        let mut entries = Vec::new();
        for visibility in self.held.values_mut() {
            if visibility.expires.saturating_duration_since(now) <= timeout / 2 {
                visibility.expires = now + timeout;
                entries.push((
                    visibility.receipt_handle.clone(),
                    self.config.visibility_timeout,
                ));
            }
        }
        self.change_visibility(entries);
    }

    fn idle(&self) -> bool {
        self.held.is_empty()
            && self.running == 0
            && self.retries_pending == 0
            && self.moves_pending == 0
    }

    /// With `until_empty`: after an empty receive with nothing held, ask the
    /// queue whether anything is left anywhere (in flight elsewhere, delayed).
    fn check_empty(&mut self) {
        if !self.config.until_empty || self.checking_empty || self.stopping || !self.idle() {
            return;
        }
        self.checking_empty = true;
        let queue = self.queue.clone();
        let events = self.events.clone();
        self.tracker.spawn(async move {
            let empty = queue.is_empty().await.unwrap_or(false);
            let _ = events.send(Event::QueueEmpty(empty));
        });
    }

    /// Stops taking work: every held message not started is released at once.
    ///
    /// A receive under way is not cancelled while anything may still be
    /// released or deleted: cancelling it only drops our end of the
    /// connection, and the server-side long poll would then swallow the
    /// messages that become visible (and hide them for a visibility
    /// timeout). Left to finish, it returns them promptly and they are
    /// released again. Only when nothing is held is it safe to cut it short.
    fn begin_stop(&mut self) {
        self.stopping = true;
        if self.held.is_empty() && self.running == 0 {
            self.abort_receives.cancel();
        }
        let mut waiting = self.router.drain_queued();
        waiting.extend(self.retry_ready.drain(..).map(|(_, held)| held));
        let handles = waiting
            .into_iter()
            .filter_map(|h| Some((self.forget(&h.message.id)?.receipt_handle, 0)))
            .collect();
        self.release(handles);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Runs the handler on one message. A panic is caught and becomes a
/// failure of that message alone; a timeout drops the handler's future
/// (which kills an exec handler's process).
async fn work<H: Handler>(
    handler: Arc<H>,
    group: String,
    held: Held,
    timeout: Option<Duration>,
    events: mpsc::UnboundedSender<Event>,
) {
    let handled = std::panic::AssertUnwindSafe(handler.handle(&held.message)).catch_unwind();
    let joined = match timeout {
        Some(limit) => match tokio::time::timeout(limit, handled).await {
            Ok(joined) => joined,
            Err(_) => Ok(Err(format!("handler timed out after {limit:?}").into())),
        },
        None => handled.await,
    };
    let outcome = match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_panic) => Err("handler panicked".to_owned()),
    };
    let _ = events.send(Event::Done {
        group,
        held,
        outcome,
    });
}

/// The handler's view of a received message, and its receipt handle.
fn handler_message(message: ReceivedMessage) -> (Message, String) {
    let handler_message = Message {
        id: message.message_id,
        group_id: message.group_id,
        body: message.body,
        receive_count: message.receive_count,
        sequence_number: message.sequence_number,
        sent_timestamp_ms: message.sent_timestamp_ms,
        attributes: message
            .attributes
            .into_iter()
            .filter_map(|(name, attribute)| Some((name, attribute.text()?.to_owned())))
            .collect(),
    };
    (handler_message, message.receipt_handle)
}

/// One poller: takes room for a full receive from `permits`, long-polls,
/// and hands what arrived to the engine. Network errors are retried with
/// the same ReceiveRequestAttemptId (SQS then returns the same messages);
/// other transient errors with a new one; unusable-queue errors end the run.
async fn poll<Q: Queue>(
    queue: Q,
    config: PoolConfig,
    permits: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
    [stop, abort]: [CancellationToken; 2],
    poller: usize,
) {
    receive_until_stopped(&queue, &config, &permits, &events, &stop, &abort, poller).await;
    let _ = events.send(Event::PollerDone);
}

/// The poller's loop: `stop` ends it between receives, `abort` also cuts a
/// receive short.
async fn receive_until_stopped<Q: Queue>(
    queue: &Q,
    config: &PoolConfig,
    permits: &Arc<Semaphore>,
    events: &mpsc::UnboundedSender<Event>,
    stop: &CancellationToken,
    abort: &CancellationToken,
    poller: usize,
) {
    let wanted = config.max_messages;
    // With until_empty, short polls notice the end promptly.
    let wait_seconds = if config.until_empty {
        config.wait_time_seconds.min(1)
    } else {
        config.wait_time_seconds
    };
    let new_attempt_id = || format!("fifo-{poller}-{:016x}", fastrand::u64(..));
    let mut attempt_id = new_attempt_id();
    let mut failures = 0;
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_many_owned(wanted) => permit.expect("the semaphore is never closed"),
            _ = stop.cancelled() => return,
        };
        let options = ReceiveOptions {
            max_messages: wanted,
            wait_seconds,
            visibility_timeout: Some(config.visibility_timeout),
            attempt_id: Some(attempt_id.clone()),
        };
        let result = tokio::select! {
            result = queue.receive(&options) => result,
            _ = abort.cancelled() => return,
        };
        match result {
            Ok(received) => {
                for malformed in &received.malformed {
                    tracing::error!(
                        "received a malformed message (id {:?}, group {:?}): {}; leaving it to come back after its visibility timeout",
                        malformed.message_id,
                        malformed.group_id,
                        malformed.reason
                    );
                }
                let messages = received.messages;
                failures = 0;
                attempt_id = new_attempt_id();
                permit.forget();
                permits.add_permits(wanted as usize - messages.len());
                let event = if messages.is_empty() {
                    Event::ReceivedNothing
                } else {
                    Event::Received(messages)
                };
                let _ = events.send(event);
                if stop.is_cancelled() {
                    return;
                }
            }
            Err(err) if !(err.is_transient() || matches!(err, QueueError::Other { .. })) => {
                let _ = events.send(Event::Fatal(err));
                return;
            }
            Err(err) => {
                drop(permit);
                failures += 1;
                if !matches!(err, QueueError::Unreachable { .. }) {
                    attempt_id = new_attempt_id();
                }
                let delay = backoff::jittered(
                    failures,
                    Duration::from_millis(200),
                    Duration::from_secs(10),
                );
                tracing::warn!("receive failed ({err}); retrying in {delay:?}");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

/// The acker: deletes succeeded messages in batches of ten. A partial batch
/// is sent only when no delete is under way, so deletes go at once when the
/// engine is idle and fill up while it is busy (each call costs about as
/// much as ten messages' other work). Failed entries are retried; what still
/// fails is counted and logged (it will be redelivered).
async fn ack<Q: Queue>(
    queue: Q,
    mut inbox: mpsc::UnboundedReceiver<String>,
    counters: Arc<Counters>,
) {
    let mut calls = JoinSet::new();
    let mut pending: Vec<String> = Vec::new();
    let mut open = true;
    while open || !pending.is_empty() || !calls.is_empty() {
        while open && pending.len() < BATCH * ACKS_IN_FLIGHT {
            match inbox.try_recv() {
                Ok(handle) => pending.push(handle),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        let full = pending.len() >= BATCH && calls.len() < ACKS_IN_FLIGHT;
        let idle = !pending.is_empty() && (calls.is_empty() || !open);
        if full || idle {
            let batch: Vec<String> = pending.drain(..pending.len().min(BATCH)).collect();
            calls.spawn(delete(queue.clone(), batch, counters.clone()));
            continue;
        }
        tokio::select! {
            handle = inbox.recv(), if open => match handle {
                Some(handle) => pending.push(handle),
                None => open = false,
            },
            Some(_) = calls.join_next(), if !calls.is_empty() => {}
        }
    }
}

async fn delete<Q: Queue>(queue: Q, mut handles: Vec<String>, counters: Arc<Counters>) {
    const ATTEMPTS: u32 = 3;
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        let refs: Vec<&str> = handles.iter().map(String::as_str).collect();
        match queue.delete(&refs).await {
            Ok(failures) => {
                counters.add_deleted((handles.len() - failures.len()) as u64);
                if failures.is_empty() {
                    return;
                }
                last_error = format!("{}: {}", failures[0].code, failures[0].message);
                handles = failures.iter().map(|f| handles[f.index].clone()).collect();
            }
            Err(err) => last_error = err.to_string(),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff::jittered(
                attempt,
                Duration::from_millis(50),
                Duration::from_secs(2),
            ))
            .await;
        }
    }
    counters.add_delete_failed(handles.len() as u64);
    tracing::warn!(
        "could not delete {} handled messages ({last_error}); they will be delivered again",
        handles.len()
    );
}
