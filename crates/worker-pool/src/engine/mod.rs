//! The engine: one task owns every held message and the router and makes
//! every decision. The I/O it decides on runs in tasks that each make one
//! call and return an [`Event`]; handlers run in tasks of their own. Nothing
//! awaits I/O inside the loop, so a slow call, a slow handler or a stalled
//! output never delays dispatch or heartbeats.
//!
//! A held message's life: received → queued in its group's lane → running
//! (→ backing off → running …) → done → deleting → deleted; or handed back
//! with the rest of its lane (releasing → released); or lost, when SQS did
//! not confirm a visibility extension before its lease ran out. The order
//! rules live in the router; the engine keeps the leases, the calls and the
//! run's phases.
//!
//! Layout: this file holds the state, the loop, events, timers and SQS
//! trouble; `receiving`, `handlers`, `leases`, `settling` (deletes,
//! dead letters, hand-backs) and `shutdown` each one part of the life.

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use fifo_group_router::Router;
use fifo_handler::{Handler, Message};
use futures_util::FutureExt;
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

mod handlers;
mod leases;
mod receiving;
mod settling;
mod shutdown;

use self::receiving::{Pace, new_attempt_id};
use crate::calls::{self, Event, Key};
use crate::queue::{
    Attribute, DeadLetterCopy, DeadLetterReason, Delivery, EntryFailure, QueueError,
    QueueErrorKind, ReceiveRequest,
};
use crate::{Counters, Error, PoolConfig, Queue, Stats, backoff};

/// Entries per batch call.
const BATCH: usize = 10;
/// Delete calls in flight at once.
const DELETES_IN_FLIGHT: usize = 16;
/// How long a done message may wait for later messages of its group to
/// join its delete call while they still run: about one delete round trip
/// (what the delete would take anyway), within these bounds, and the
/// longest until deletes have been timed.
const DELETE_HOLD: (Duration, Duration) = (Duration::from_millis(2), Duration::from_millis(50));
/// SQS keeps a message invisible for at most this long after a receive.
const MAX_INVISIBLE: Duration = Duration::from_secs(43_200);

/// Runs the engine until `shutdown` is cancelled (or, with `until_empty` or
/// `limit`, until the work is done), then drains: running handlers get
/// `shutdown_timeout` to finish, every other held message is handed back
/// with its lane, and deletes are confirmed. Returns the run's figures; an
/// error when the queue is unusable (deleted, access denied) or a background
/// task failed, after handing back what it could.
pub async fn run<Q: Queue, H: Handler>(
    queue: Q,
    handler: H,
    config: &PoolConfig,
    shutdown: CancellationToken,
) -> Result<Stats, Error> {
    run_observed(queue, handler, config, shutdown, Arc::default()).await
}

/// As [`run`], adding the run's figures to `live` as they happen, for a
/// status line or metrics. A run returns what `live` gained while it ran
/// (so give runs at the same time one each) and stops at `limit` by its own
/// successes, whatever `live` held before.
pub async fn run_observed<Q: Queue, H: Handler>(
    queue: Q,
    handler: H,
    config: &PoolConfig,
    shutdown: CancellationToken,
    live: Arc<Counters>,
) -> Result<Stats, Error> {
    config.check().map_err(Error::Config)?;
    let before = live.snapshot();
    let mut engine = Engine::new(queue, handler, config.clone(), shutdown, live.clone());
    engine.run_loop().await;
    match engine.fatal {
        Some(err) => Err(err),
        None => Ok(live.snapshot().since(&before)),
    }
}

/// A failed call's `error_type` label.
fn error_type(kind: QueueErrorKind) -> &'static str {
    match kind {
        QueueErrorKind::Unreachable => "unreachable",
        QueueErrorKind::Busy => "busy",
        QueueErrorKind::Refused => "refused",
        QueueErrorKind::Unusable => "unusable",
        _ => "other",
    }
}

/// Where the run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Stopping: no new work; running handlers may finish until the deadline.
    Draining,
    /// The deadline passed: running handlers were cancelled.
    Abandoned,
}

/// A held message.
#[derive(Debug)]
struct Tracked {
    message: Arc<Message>,
    /// The attributes as received, for the copy to the dead-letter queue.
    attributes: BTreeMap<String, Attribute>,
    receipt_handle: String,
    /// Until when SQS keeps it from everyone else, as far as it confirmed.
    expires: Instant,
    /// A visibility change for it is under way: no other may be sent, so
    /// that they apply in the order decided.
    visibility_call: bool,
    /// Handler runs in this delivery (failures, not counting requests to
    /// retry later).
    attempts: u32,
    /// Requests to retry later in this delivery: the backoff of those
    /// without a delay of their own grows with them.
    waits: u32,
    /// When the receive that delivered it went out: SQS keeps a message
    /// invisible for at most 12 hours from then.
    received: Instant,
    /// Whether a later message of its group was (or may have been) deleted
    /// while its own delete is unconfirmed: were SQS to hand it out again,
    /// it would run after that later one. Kept held until its delete is
    /// confirmed; lost, it is an order risk.
    overtaken: Overtaken,
    /// Surely overtaken, and its visibility set to the most SQS allows at once,
    /// so that only a crash or a half-day outage can replay it: heartbeats
    /// leave it alone.
    pinned: bool,
    /// Its last failure in this delivery, for a dead letter's attributes.
    last_failure: Option<LastFailure>,
    /// After a failure (or a handler's request to wait): how long it and
    /// its lane stay invisible once handed back.
    release_after: Duration,
    /// Its handler was cut off: until then its process may still be ending,
    /// so no one else may get the message before.
    kill_ends: Option<Instant>,
    state: State,
}

/// A handler's failure, as a dead letter tells it.
#[derive(Debug)]
struct LastFailure {
    error: String,
    status: Option<String>,
    at: std::time::SystemTime,
}

#[derive(Debug)]
enum State {
    /// In its lane: queued, done, deleting or waiting to be handed back.
    InLane,
    /// Its handler runs (alone or in a batch, see `Engine::running`).
    Running(AbortHandle),
    /// Failed; retried when its backoff timer fires.
    BackingOff,
    /// Its handler was cancelled and counts as running until the kill grace
    /// passes (an exec handler's process group may still be ending).
    Cancelling {
        then: AfterCancel,
        task: tokio::task::Id,
    },
    /// Handed back with its lane; see `Release`.
    Releasing(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterCancel {
    /// Its lease ended: give it up.
    Lose,
    /// The shutdown deadline passed: hand it back with its lane.
    HandBack,
}

impl Tracked {
    /// How long its cut-off handler's process may still be ending.
    fn kill_left(&self) -> Duration {
        self.kill_ends.map_or(Duration::ZERO, |end| {
            end.saturating_duration_since(Instant::now())
        })
    }

    /// Whether a heartbeat may extend it: not while another visibility
    /// change for it is under way, and never once it is being given up (the
    /// rest of its lane was given up with it and must keep the same
    /// deadline, so that the group comes back whole).
    fn extendable(&self) -> bool {
        !self.visibility_call
            && !self.pinned
            && !matches!(
                self.state,
                State::Cancelling {
                    then: AfterCancel::Lose,
                    ..
                }
            )
    }
}

/// Whether a held message was overtaken by a later one's delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Overtaken {
    No,
    /// A delete call with a later message of its group got no answer: it
    /// may have been deleted. Kept held as usual; an order risk if lost.
    Maybe,
    /// SQS confirmed a later message's delete: pinned (see `pin_overtaken`).
    Surely,
}

/// A lane handed back: its messages go back to the queue in one call, in
/// order, so SQS makes them visible together.
#[derive(Debug)]
struct Release {
    group: String,
    keys: Vec<Key>,
    /// The visibility timeout the lane gets: at least 1 s (see
    /// `take_router_decisions`).
    seconds: u32,
    sent: bool,
}

/// What a call under way is about.
#[derive(Debug)]
enum Pending {
    Receive(usize),
    Delete(Vec<Key>),
    DeadLetter(Key),
    Visibility(Vec<Key>),
    IsEmpty,
}

/// One handler call's result: the first `succeeded` of its messages
/// succeeded; `failed`, why the next one failed (later ones were not run).
#[derive(Debug)]
struct Ran {
    succeeded: usize,
    failed: Option<Attempt>,
    /// How long the call took.
    took: Duration,
}

/// One step of a message's life as a structured log event (target
/// `fifo::message`, level debug), with the message's group, id, sequence
/// number and attempt, and the handler call's duration and error where
/// there is one: what `fifo run --log-format json` prints per message.
fn message_event(
    event: &'static str,
    message: &Message,
    attempt: u32,
    took: Option<Duration>,
    error: Option<&dyn std::fmt::Display>,
) {
    tracing::debug!(
        target: "fifo::message",
        event,
        group = %message.group_id,
        message_id = %message.id,
        sequence = %message.sequence_number,
        receive_count = message.receive_count,
        attempt,
        duration_ms = took.map(|d| d.as_secs_f64() * 1000.0),
        error = error.map(tracing::field::display),
    );
}

/// One message's result.
#[derive(Debug)]
enum Attempt {
    Succeeded,
    Failed {
        /// Kept as the handler's error until it is logged.
        error: fifo_handler::HandlerError,
        /// The handler was cut off (timeout): it may still be ending.
        cut_off: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Retry(Key),
    /// A message cut off on its last receive may move on.
    DeadLetter(Key),
    CancelDone(tokio::task::Id),
    DrainDeadline,
    /// Just wake the loop (a backoff gate or a release came due).
    Wake,
}

/// A receive slot: one receive under way at most (`pollers` slots, or
/// [`crate::MAX_POLLERS`] when they adapt).
#[derive(Debug)]
struct Slot {
    busy: bool,
    /// Cuts this slot's receive short: one without an answer past its long
    /// poll is sent again (see `notice_unanswered_calls`).
    cut: CancellationToken,
    /// The long poll of its receive under way.
    wait: Duration,
    /// Kept after a network error, so that SQS returns the same messages.
    attempt_id: String,
    /// When a receive with `attempt_id` went out first, and whether it went
    /// out again since: messages returned by a retry were taken (and their
    /// visibility timeout started) no later than that first receive.
    attempt_sent: Option<Instant>,
    attempt_retried: bool,
    failures: u32,
    not_before: Instant,
}

impl Slot {
    fn new_attempt(&mut self, slot_index: usize) {
        self.attempt_id = new_attempt_id(slot_index);
        self.attempt_sent = None;
        self.attempt_retried = false;
    }
}

/// The kinds of calls, for reporting trouble and backing off each on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    Receive,
    Delete,
    Visibility,
    DeadLetter,
}

impl CallKind {
    const ALL: usize = 4;
    const EVERY: [CallKind; CallKind::ALL] = [
        CallKind::Receive,
        CallKind::Delete,
        CallKind::Visibility,
        CallKind::DeadLetter,
    ];

    /// The SQS operation, as the metrics name it.
    fn operation_name(self) -> &'static str {
        match self {
            CallKind::Receive => "ReceiveMessage",
            CallKind::Delete => "DeleteMessageBatch",
            CallKind::Visibility => "ChangeMessageVisibilityBatch",
            CallKind::DeadLetter => "MoveToDeadLetterQueue",
        }
    }

    fn doing(self) -> &'static str {
        match self {
            CallKind::Receive => "receiving",
            CallKind::Delete => "deleting",
            CallKind::Visibility => "changing visibility",
            CallKind::DeadLetter => "moving to the dead-letter queue",
        }
    }
}

/// How long a call (beyond its long poll) may go unanswered before it is
/// reported: one attempt's deadline in the SQS client.
const UNANSWERED: Duration = Duration::from_secs(5);

/// SQS trouble: reported once when it starts (a call of any kind fails or
/// goes unanswered) and once when it ends: when every kind of call that
/// failed has been answered since (an empty receive too).
#[derive(Debug, Default)]
struct Trouble {
    since: Option<Instant>,
    /// When it last ended: calls sent before, which went into the silence
    /// or the outage that ended, do not start it again when they fail.
    ended: Option<Instant>,
    failed_calls: u32,
    /// Failures in a row, per kind of call.
    failing: [u32; CallKind::ALL],
    /// When the call whose event is being handled was sent.
    event_sent: Option<Instant>,
}

impl Trouble {
    /// Whether a call sent at `sent` belongs to the trouble that ended.
    fn before_the_end(&self, sent: Option<Instant>) -> bool {
        matches!((sent, self.ended), (Some(sent), Some(ended)) if sent < ended)
    }
}

/// Handlers that could not start: since when, how many (in a row, for the
/// backoff, and in all), and the last one.
#[derive(Debug, Default)]
struct Unstarted {
    since: Option<Instant>,
    in_a_row: u32,
    failed: u32,
    last_failed: Option<Instant>,
}

struct Engine<Q, H> {
    queue: Q,
    handler: Arc<H>,
    config: PoolConfig,
    counters: Arc<Counters>,
    /// Handler runs that succeeded in this run, for `limit`.
    succeeded: u64,
    router: Router<Key>,
    tracked: HashMap<Key, Tracked>,
    by_message_id: HashMap<String, Key>,
    next_key: Key,
    phase: Phase,
    /// Calls to the queue under way; each returns its event.
    calls: JoinSet<Event>,
    /// What each call is about, so that one that panics is resolved too.
    call_owners: HashMap<tokio::task::Id, Pending>,
    /// When each call to SQS began, and its kind: one unanswered past
    /// [`UNANSWERED`] is trouble before the queue gives up on it.
    call_started: HashMap<tokio::task::Id, (Instant, CallKind)>,
    workers: JoinSet<Ran>,
    /// The messages, in lane order, of each handler call running or being
    /// cancelled (each call takes one worker).
    running: HashMap<tokio::task::Id, Vec<Key>>,
    /// Retries whose backoff is over: they go before new work.
    retry_ready: VecDeque<Key>,
    timers: BinaryHeap<std::cmp::Reverse<(Instant, Timer)>>,
    slots: Vec<Slot>,
    receiving: usize,
    pace: Pace,
    /// Messages to delete, in their groups' order, and since when each waits.
    deletes: VecDeque<(Key, Instant)>,
    delete_calls: usize,
    /// Groups with a delete call under way, and the group of each message
    /// in one: a group's deletes go one call at a time, so that a
    /// partial failure is seen in one answer (see `on_deleted`).
    deleting_groups: HashMap<String, usize>,
    deleting_keys: HashMap<Key, String>,
    /// When the loop wakes for a delete's hold to end (see `flush_deletes`).
    delete_hold_wake: Option<Instant>,
    deletes_not_before: Instant,
    releases: HashMap<u64, Release>,
    next_release: u64,
    releases_not_before: Instant,
    trouble: Trouble,
    /// Handlers failing to start (fifo's own trouble), as `trouble` is SQS's.
    unstarted: Unstarted,
    checking_empty: bool,
    shutdown: CancellationToken,
    /// Cuts receives under way short; see `cut_receives_when_idle`.
    abort_receives: CancellationToken,
    fatal: Option<Error>,
}

impl<Q: Queue, H: Handler> Engine<Q, H> {
    fn new(
        queue: Q,
        handler: H,
        config: PoolConfig,
        shutdown: CancellationToken,
        counters: Arc<Counters>,
    ) -> Self {
        let now = Instant::now();
        let slots = (0..config.pollers.unwrap_or(crate::MAX_POLLERS))
            .map(|poller| Slot {
                busy: false,
                cut: CancellationToken::new(),
                wait: Duration::ZERO,
                attempt_id: new_attempt_id(poller),
                attempt_sent: None,
                attempt_retried: false,
                failures: 0,
                not_before: now,
            })
            .collect();
        Engine {
            pace: Pace::new(config.pollers),
            queue,
            handler: Arc::new(handler),
            config,
            counters,
            succeeded: 0,
            router: Router::new(),
            tracked: HashMap::new(),
            by_message_id: HashMap::new(),
            next_key: 0,
            phase: Phase::Running,
            calls: JoinSet::new(),
            call_owners: HashMap::new(),
            call_started: HashMap::new(),
            workers: JoinSet::new(),
            running: HashMap::new(),
            retry_ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            slots,
            receiving: 0,
            deletes: VecDeque::new(),
            delete_calls: 0,
            deleting_groups: HashMap::new(),
            deleting_keys: HashMap::new(),
            delete_hold_wake: None,
            deletes_not_before: now,
            releases: HashMap::new(),
            next_release: 0,
            releases_not_before: now,
            trouble: Trouble::default(),
            unstarted: Unstarted::default(),
            checking_empty: false,
            shutdown: shutdown.child_token(),
            abort_receives: CancellationToken::new(),
            fatal: None,
        }
    }

    fn visibility(&self) -> Duration {
        Duration::from_secs(u64::from(self.config.visibility_timeout))
    }

    async fn run_loop(&mut self) {
        let mut tick = tokio::time::interval(self.config.lease_tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.take_router_decisions();
            self.dispatch();
            self.receive_more();
            self.flush_deletes();
            self.send_releases();
            self.cut_receives_when_idle();
            self.counters.set_gauges(
                self.tracked.len(),
                self.router.busy_groups(),
                self.router.ready_groups(),
                self.running.len(),
            );
            self.counters
                .loop_turned(self.phase == Phase::Running && self.trouble.since.is_none());
            if self.phase != Phase::Running
                && self.tracked.is_empty()
                && self.calls.is_empty()
                && self.workers.is_empty()
            {
                break;
            }
            let next_timer = self.timers.peek().map(|t| t.0.0);
            tokio::select! {
                Some(joined) = self.calls.join_next_with_id() => match joined {
                    Ok((id, event)) => {
                        self.call_owners.remove(&id);
                        let started = self.call_started.remove(&id);
                        if let Some((started, kind)) = started
                            && let Some(outcome) = event.outcome()
                        {
                            let error = outcome.err().map(error_type);
                            let took = started.elapsed();
                            self.counters.observe_call(kind.operation_name(), took, error);
                        }
                        self.trouble.event_sent = started.map(|(sent, _)| sent);
                        self.on_event(event);
                    }
                    Err(err) => self.on_call_failure(&err),
                },
                Some(joined) = self.workers.join_next_with_id() => self.on_worker(joined),
                _ = sleep_until(next_timer) => self.on_timers(),
                _ = tick.tick() => self.on_tick(),
                _ = self.shutdown.cancelled(), if self.phase == Phase::Running => self.begin_drain(),
            }
        }
        self.counters.set_gauges(0, 0, 0, 0);
        self.counters.loop_turned(false);
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Received { slot, result } => self.on_received(slot, result),
            Event::Deleted { keys, took, result } => {
                if result.is_ok() {
                    self.pace.on_delete(took);
                }
                self.on_deleted(keys, result)
            }
            Event::DeadLettered { key, result } => self.on_dead_lettered(key, result),
            Event::Extended {
                keys,
                seconds,
                sent_at,
                result,
            } => self.on_extended(keys, seconds, sent_at, result),
            Event::Released { keys, result } => self.on_released(keys, result),
            Event::QueueEmpty(result) => {
                self.checking_empty = false;
                let idle = self.tracked.is_empty() && self.running.is_empty();
                if result.is_ok_and(|empty| empty) && idle && self.phase == Phase::Running {
                    tracing::info!("the queue is empty and nothing is held: stopping");
                    self.shutdown.cancel();
                }
            }
        }
    }

    fn add_timer(&mut self, at: Instant, timer: Timer) {
        self.timers.push(std::cmp::Reverse((at, timer)));
    }

    fn wake_at(&mut self, at: Instant) {
        self.add_timer(at, Timer::Wake);
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        while let Some(std::cmp::Reverse((at, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Retry(key) => self.on_retry_due(key),
                Timer::DeadLetter(key) => self.on_dead_letter_due(key),
                Timer::CancelDone(task) => self.cancel_done(task),
                Timer::DrainDeadline => self.abandon(),
                Timer::Wake => {}
            }
        }
    }

    /// A batch call failed as a whole: the queue is unusable, or SQS is in
    /// trouble and the callers retry after a backoff.
    fn batch_failed(&mut self, kind: CallKind, err: QueueError) {
        if is_fatal(&err) {
            return self.fail_run(err);
        }
        self.call_failed(kind, &err);
    }

    fn call_failed(&mut self, kind: CallKind, err: &QueueError) {
        let failing = &mut self.trouble.failing[kind as usize];
        *failing = failing.saturating_add(1);
        if self.trouble.before_the_end(self.trouble.event_sent) {
            return;
        }
        if self.trouble.since.is_none() {
            tracing::warn!(
                "SQS calls are failing ({}: {err}); retrying with backoff, held messages stay held while their leases last",
                kind.doing()
            );
            self.trouble.since = Some(Instant::now());
        }
        self.trouble.failed_calls = self.trouble.failed_calls.saturating_add(1);
    }

    /// A call without an answer for longer than one attempt may take (a
    /// silent endpoint) is trouble now, though the queue may try it twice
    /// more before it fails: said once, as a failure would be. A receive in
    /// that state is cut and sent again (with the same attempt id, so that
    /// SQS returns what it may have taken meanwhile): while SQS is in
    /// trouble receives poll briefly, so the first one SQS answers ends the
    /// trouble promptly even on an idle queue.
    fn notice_unanswered_calls(&mut self) {
        let now = Instant::now();
        let overdue: Vec<(tokio::task::Id, Instant, CallKind)> = self
            .call_started
            .iter()
            .filter(|(id, (started, _))| {
                let limit = match self.call_owners.get(id) {
                    Some(Pending::Receive(slot)) => self.slots[*slot].wait + UNANSWERED,
                    _ => UNANSWERED,
                };
                now.saturating_duration_since(*started) > limit
                    && !self.trouble.before_the_end(Some(*started))
            })
            .map(|(id, (started, kind))| (*id, *started, *kind))
            .collect();
        for (id, started, kind) in overdue {
            if self.trouble.since.is_none() {
                tracing::warn!(
                    "SQS calls are failing ({}: no answer for {:.0} s); waiting, then retrying with backoff, held messages stay held while their leases last",
                    kind.doing(),
                    now.saturating_duration_since(started).as_secs_f64()
                );
                self.trouble.since = Some(started);
            }
            let failing = &mut self.trouble.failing[kind as usize];
            *failing = (*failing).max(1);
            if let Some(Pending::Receive(slot)) = self.call_owners.get(&id) {
                self.slots[*slot].cut.cancel();
            }
        }
    }

    /// A call of `kind` was answered. The trouble ends once every kind of
    /// call that failed has been answered since (an empty receive counts),
    /// and no call is still without an answer.
    fn call_succeeded(&mut self, kind: CallKind) {
        self.trouble.failing[kind as usize] = 0;
        // A kind of call with nothing left to try again (its messages were
        // given up meanwhile) is not failing any more either.
        for other in CallKind::EVERY {
            if !self.has_work(other) {
                self.trouble.failing[other as usize] = 0;
            }
        }
        // Not over while another call is still without an answer.
        if self.trouble.since.is_some() {
            self.notice_unanswered_calls();
        }
        if self.trouble.failing.iter().any(|n| *n > 0) {
            return;
        }
        if let Some(since) = self.trouble.since.take() {
            let failed = match self.trouble.failed_calls {
                0 => String::new(),
                n => format!(" ({n} calls failed)"),
            };
            tracing::warn!(
                "SQS answers again after {:.1} s{failed}; carrying on",
                since.elapsed().as_secs_f64(),
            );
            self.trouble.failed_calls = 0;
            self.trouble.ended = Some(Instant::now());
        }
    }

    /// Whether calls of `kind` are still to be made (or under way).
    fn has_work(&self, kind: CallKind) -> bool {
        match kind {
            CallKind::Receive => self.phase == Phase::Running,
            CallKind::Delete => !self.deletes.is_empty() || self.delete_calls > 0,
            CallKind::Visibility => !self.tracked.is_empty(),
            CallKind::DeadLetter => self
                .call_owners
                .values()
                .any(|pending| matches!(pending, Pending::DeadLetter(_))),
        }
    }

    /// How long to wait before trying a kind of call again: longer the
    /// more of them failed in a row.
    fn retry_delay(&self, kind: CallKind) -> Duration {
        backoff::jittered(
            self.trouble.failing[kind as usize].max(1),
            Duration::from_millis(100),
            Duration::from_secs(5),
        )
    }
}

/// Errors that make the queue unusable for this run.
fn is_fatal(err: &QueueError) -> bool {
    err.kind() == QueueErrorKind::Unusable
}

/// Packs lanes into batches of at most ten, keeping each lane in one batch
/// (and in order) unless it alone is longer than ten.
fn pack(lanes: Vec<Vec<Key>>) -> Vec<Vec<Key>> {
    let mut batches: Vec<Vec<Key>> = Vec::new();
    let mut current: Vec<Key> = Vec::new();
    for lane in lanes {
        if current.len() + lane.len() > BATCH && !current.is_empty() {
            batches.push(std::mem::take(&mut current));
        }
        for chunk in lane.chunks(BATCH) {
            if current.len() + chunk.len() > BATCH {
                batches.push(std::mem::take(&mut current));
            }
            current.extend_from_slice(chunk);
        }
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_are_packed_whole_into_batches_of_ten() {
        let lane = |from: u64, len: u64| (from..from + len).collect::<Vec<_>>();
        let batches = pack(vec![lane(0, 4), lane(10, 4), lane(20, 4), lane(30, 12)]);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [8, 4, 10, 2]);
        assert_eq!(batches[1], lane(20, 4));
        assert_eq!(batches[2], lane(30, 10), "a long lane is split in order");
    }
}
