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
//! rules live in the router; this file keeps the leases, the calls and the
//! run's phases.

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use fifo_group_router::Router;
use fifo_handler::{Handler, Message};
use fifo_sqs_client::{
    EntryFailure, Error as QueueError, MessageAttribute, OutgoingMessage, ReceiveOptions,
    ReceivedMessage,
};
use futures_util::FutureExt;
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use crate::calls::{self, Event, Key};
use crate::{Counters, Error, PoolConfig, Queue, Stats, backoff};

/// Entries per batch call.
const BATCH: usize = 10;
/// Delete calls in flight at once.
const DELETES_IN_FLIGHT: usize = 4;

/// Runs the engine until `shutdown` is cancelled (or, with `until_empty` or
/// `limit`, until the work is done), then drains: running handlers get
/// `shutdown_timeout` to finish, every other held message is handed back
/// with its lane, and deletes are confirmed. Returns the final counters; an
/// error when the queue is unusable (deleted, access denied) or a background
/// task failed, after handing back what it could.
pub async fn run<Q: Queue, H: Handler>(
    queue: Q,
    handler: H,
    config: PoolConfig,
    shutdown: CancellationToken,
    counters: Arc<Counters>,
) -> Result<Stats, Error> {
    check(&config)?;
    let mut engine = Engine::new(queue, handler, config, shutdown, counters.clone());
    engine.run_loop().await;
    match engine.fatal {
        Some(err) => Err(err),
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
    attributes: BTreeMap<String, MessageAttribute>,
    receipt_handle: String,
    /// Until when SQS keeps it from everyone else, as far as it confirmed.
    expires: Instant,
    /// A visibility change for it is under way: no other may be sent, so
    /// that they apply in the order decided.
    visibility_call: bool,
    /// Handler runs in this delivery.
    attempts: u32,
    /// Moved to the dead-letter queue instead of deleted when its turn comes.
    dead_letter: bool,
    /// After a failure: hold its lane this long before handing it back.
    release_after: Duration,
    state: State,
}

#[derive(Debug)]
enum State {
    /// In its lane: queued, done, deleting or waiting to be handed back.
    InLane,
    Running(AbortHandle),
    /// Failed; retried when its backoff timer fires.
    BackingOff,
    /// Its handler was cancelled and counts as running until the kill grace
    /// passes (an exec handler's process group may still be ending).
    Cancelling {
        then: AfterCancel,
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
    /// Whether a heartbeat may extend it: not while another visibility
    /// change for it is under way, and never once it is being given up (the
    /// rest of its lane was given up with it and must keep the same
    /// deadline, so that the group comes back whole).
    fn extendable(&self) -> bool {
        !self.visibility_call
            && !matches!(
                self.state,
                State::Cancelling {
                    then: AfterCancel::Lose
                }
            )
    }
}

/// A lane handed back: its messages go back to the queue in one call, in
/// order, so SQS makes them visible together.
#[derive(Debug)]
struct Release {
    group: String,
    keys: Vec<Key>,
    due: Instant,
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

/// One handler run's result.
#[derive(Debug)]
enum Attempt {
    Succeeded,
    Failed {
        reason: String,
        /// The handler was cut off (timeout): it may still be ending.
        cut_off: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Retry(Key),
    CancelDone(Key),
    DrainDeadline,
    /// Just wake the loop (a backoff gate or a release came due).
    Wake,
}

/// A receive slot: at most `pollers` receives are under way.
#[derive(Debug)]
struct Slot {
    busy: bool,
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

/// SQS trouble: reported once when it starts and once when it ends.
#[derive(Debug, Default)]
struct Trouble {
    since: Option<Instant>,
    failed_calls: u32,
}

struct Engine<Q, H> {
    queue: Q,
    handler: Arc<H>,
    config: PoolConfig,
    counters: Arc<Counters>,
    router: Router<Key>,
    tracked: HashMap<Key, Tracked>,
    by_message_id: HashMap<String, Key>,
    next_key: Key,
    phase: Phase,
    /// Calls to the queue under way; each returns its event.
    calls: JoinSet<Event>,
    /// What each call is about, so that one that panics is resolved too.
    call_owners: HashMap<tokio::task::Id, Pending>,
    workers: JoinSet<(Key, Attempt)>,
    /// Which message a worker task runs, to tell a cancelled one.
    worker_keys: HashMap<tokio::task::Id, Key>,
    /// Handlers running or being cancelled.
    busy_workers: usize,
    /// Retries whose backoff is over: they go before new work.
    retry_ready: VecDeque<Key>,
    timers: BinaryHeap<std::cmp::Reverse<(Instant, Timer)>>,
    slots: Vec<Slot>,
    receiving: usize,
    deletes: VecDeque<Key>,
    delete_calls: usize,
    deletes_not_before: Instant,
    releases: HashMap<u64, Release>,
    next_release: u64,
    releases_not_before: Instant,
    trouble: Trouble,
    checking_empty: bool,
    shutdown: CancellationToken,
    /// Cuts receives under way short; see `begin_drain`.
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
        let slots = (0..config.pollers)
            .map(|poller| Slot {
                busy: false,
                attempt_id: new_attempt_id(poller),
                attempt_sent: None,
                attempt_retried: false,
                failures: 0,
                not_before: now,
            })
            .collect();
        Engine {
            queue,
            handler: Arc::new(handler),
            config,
            counters,
            router: Router::new(),
            tracked: HashMap::new(),
            by_message_id: HashMap::new(),
            next_key: 0,
            phase: Phase::Running,
            calls: JoinSet::new(),
            call_owners: HashMap::new(),
            workers: JoinSet::new(),
            worker_keys: HashMap::new(),
            busy_workers: 0,
            retry_ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            slots,
            receiving: 0,
            deletes: VecDeque::new(),
            delete_calls: 0,
            deletes_not_before: now,
            releases: HashMap::new(),
            next_release: 0,
            releases_not_before: now,
            trouble: Trouble::default(),
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
            self.counters
                .set_gauges(self.tracked.len(), self.router.busy_groups());
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
        self.counters.set_gauges(0, 0);
    }

    // ---- receiving ----------------------------------------------------

    /// Starts receives while there is room for a full one under
    /// `max_in_flight` and a slot is free.
    fn receive_more(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        let now = Instant::now();
        let wanted = self.config.max_messages as usize;
        // With until_empty, short polls notice the end promptly.
        let wait_seconds = if self.config.until_empty {
            self.config.wait_time_seconds.min(1)
        } else {
            self.config.wait_time_seconds
        };
        for slot_index in 0..self.slots.len() {
            let room = self
                .config
                .max_in_flight
                .saturating_sub(self.tracked.len() + self.receiving * wanted);
            if room < wanted {
                return;
            }
            let slot = &mut self.slots[slot_index];
            if slot.busy || slot.not_before > now {
                continue;
            }
            slot.busy = true;
            if slot.attempt_sent.is_some() {
                slot.attempt_retried = true;
            } else {
                slot.attempt_sent = Some(now);
            }
            self.receiving += 1;
            let options = ReceiveOptions {
                max_messages: self.config.max_messages,
                wait_seconds,
                visibility_timeout: Some(self.config.visibility_timeout),
                attempt_id: Some(slot.attempt_id.clone()),
            };
            let call = calls::receive(
                self.queue.clone(),
                options,
                slot_index,
                self.abort_receives.clone(),
            );
            self.spawn_call(Pending::Receive(slot_index), call);
        }
    }

    fn on_received(
        &mut self,
        slot_index: usize,
        result: Option<Result<fifo_sqs_client::ReceiveOutput, QueueError>>,
    ) {
        self.receiving -= 1;
        let visibility = self.visibility();
        let slot = &mut self.slots[slot_index];
        slot.busy = false;
        let Some(result) = result else { return };
        let output = match result {
            Ok(output) => output,
            Err(err) => {
                if is_fatal(&err) || matches!(err, QueueError::InvalidParameter { .. }) {
                    return self.fail_run(err);
                }
                slot.failures += 1;
                // After a network error SQS may have taken messages for us:
                // the same attempt id gets them back. Otherwise a new one.
                if !matches!(err, QueueError::Unreachable { .. }) {
                    slot.new_attempt(slot_index);
                }
                let delay = backoff::jittered(
                    slot.failures,
                    Duration::from_millis(200),
                    Duration::from_secs(10),
                );
                let not_before = Instant::now() + delay;
                slot.not_before = not_before;
                self.wake_at(not_before);
                self.call_failed("receiving", &err);
                return;
            }
        };
        // SQS started the messages' visibility timeout when it took them:
        // about when it answered, or, for a retry of an attempt whose answer
        // was lost, as early as that attempt.
        let taken = match (slot.attempt_retried, slot.attempt_sent) {
            (true, Some(first)) => first,
            _ => Instant::now(),
        };
        let expires = taken + visibility;
        slot.failures = 0;
        slot.new_attempt(slot_index);
        self.call_succeeded();
        for malformed in &output.malformed {
            self.counters.add_malformed();
            tracing::error!(
                "received a malformed message (id {}, group {}): {}; it is left to come back after its visibility timeout",
                malformed.message_id.as_deref().unwrap_or("missing"),
                malformed.group_id.as_deref().unwrap_or("missing"),
                malformed.reason
            );
        }
        if output.messages.is_empty() {
            self.check_empty();
        }
        for message in output.messages {
            self.track(message, expires);
        }
        // A receive retried after a lost answer may bring messages whose
        // lease is nearly over already.
        self.give_up_expiring();
    }

    fn track(&mut self, received: ReceivedMessage, expires: Instant) {
        self.counters.add_received(1);
        if let Some(&key) = self.by_message_id.get(&received.message_id) {
            let tracked = self.tracked.get_mut(&key).expect("indexed");
            let group = tracked.message.group_id.clone();
            if self.router.step(&group, key).is_some() {
                // Delivered again while in its lane: SQS let the lease lapse.
                // The new delivery takes the old one's place in the lane.
                self.counters.add_lost(1);
                tracked.receipt_handle = received.receipt_handle;
                tracked.expires = expires;
                return;
            }
            // The old delivery had left its lane. Handed back: the hand-back
            // took effect though its answer was lost. Being given up: it ends
            // on its own. Either way the new delivery is a message of its
            // lane like any other, in its place before the later ones.
            if let State::Releasing(_) = tracked.state {
                self.counters.add_released(1);
                self.finish_release(key);
            } else {
                self.by_message_id.remove(&received.message_id);
            }
        }
        let key = self.next_key;
        self.next_key += 1;
        let message = Message {
            id: received.message_id,
            group_id: received.group_id,
            body: received.body,
            receive_count: received.receive_count,
            sequence_number: received.sequence_number,
            sent_timestamp_ms: received.sent_timestamp_ms,
            attributes: received
                .attributes
                .iter()
                .filter_map(|(name, attribute)| Some((name.clone(), attribute.text()?.to_owned())))
                .collect(),
        };
        self.by_message_id.insert(message.id.clone(), key);
        self.router.push(&message.group_id, key);
        self.tracked.insert(
            key,
            Tracked {
                message: Arc::new(message),
                attributes: received.attributes,
                receipt_handle: received.receipt_handle,
                expires,
                visibility_call: false,
                attempts: 0,
                dead_letter: false,
                release_after: Duration::ZERO,
                state: State::InLane,
            },
        );
    }

    /// With `until_empty`: after an empty receive with nothing held, ask the
    /// queue whether anything is left anywhere (in flight elsewhere, delayed).
    fn check_empty(&mut self) {
        if !self.config.until_empty
            || self.checking_empty
            || self.phase != Phase::Running
            || !self.tracked.is_empty()
            || self.busy_workers > 0
        {
            return;
        }
        self.checking_empty = true;
        self.spawn_call(Pending::IsEmpty, calls::is_empty(self.queue.clone()));
    }

    // ---- handlers -----------------------------------------------------

    /// Starts handlers while workers are free: due retries first, then the
    /// next ready lane.
    fn dispatch(&mut self) {
        while self.busy_workers < self.config.workers {
            if let Some(limit) = self.config.limit {
                let succeeded = self.counters.snapshot().succeeded;
                if succeeded + self.busy_workers as u64 >= limit {
                    return;
                }
            }
            let key = match self.retry_ready.pop_front() {
                Some(key) => key,
                None if self.phase == Phase::Running => match self.router.take_next() {
                    Some((_, key)) => key,
                    None => return,
                },
                None => return,
            };
            self.start(key);
        }
    }

    fn start(&mut self, key: Key) {
        let Some(tracked) = self.tracked.get(&key) else {
            return;
        };
        if self.at_risk(tracked, Instant::now()) {
            return self.lose(key, "its lease was about to run out when its turn came");
        }
        let tracked = self.tracked.get_mut(&key).expect("checked");
        let task = self.workers.spawn(work(
            self.handler.clone(),
            tracked.message.clone(),
            self.config.handler_timeout,
            key,
        ));
        self.worker_keys.insert(task.id(), key);
        tracked.state = State::Running(task);
        self.busy_workers += 1;
    }

    fn on_worker(&mut self, joined: Result<(tokio::task::Id, (Key, Attempt)), JoinError>) {
        let (id, key, attempt) = match joined {
            Ok((id, (key, attempt))) => (id, key, Some(attempt)),
            Err(err) => match self.worker_keys.get(&err.id()) {
                Some(&key) => (err.id(), key, None),
                None => return,
            },
        };
        self.worker_keys.remove(&id);
        let Some(tracked) = self.tracked.get_mut(&key) else {
            return;
        };
        match (&tracked.state, attempt) {
            (State::Running(_), Some(attempt)) => {
                self.busy_workers -= 1;
                tracked.state = State::InLane;
                self.on_attempt(key, attempt);
            }
            // Cancelled, but the handler had already ended by itself: no
            // need to wait out the kill grace.
            (State::Cancelling { then }, Some(_)) => {
                let then = *then;
                self.cancel_done(key, then);
            }
            // Cancelled: it ends when the kill grace passes (see CancelDone).
            (_, None) => {}
            _ => {}
        }
    }

    fn on_attempt(&mut self, key: Key, attempt: Attempt) {
        let group = self.tracked[&key].message.group_id.clone();
        let (reason, cut_off) = match attempt {
            Attempt::Succeeded => {
                self.counters.add_succeeded();
                self.router.finished(&group, key);
                if self
                    .config
                    .limit
                    .is_some_and(|limit| self.counters.snapshot().succeeded >= limit)
                {
                    self.shutdown.cancel();
                }
                return;
            }
            Attempt::Failed { reason, cut_off } => (reason, cut_off),
        };
        let retries = self.config.retries;
        let tracked = self.tracked.get_mut(&key).expect("tracked");
        let id = tracked.message.id.clone();
        if self.phase == Phase::Running && tracked.attempts < retries {
            tracked.attempts += 1;
            tracked.state = State::BackingOff;
            let attempt = tracked.attempts;
            self.counters.add_retried();
            let mut delay =
                backoff::jittered(attempt, self.config.backoff_base, self.config.backoff_max);
            if cut_off {
                // The cut-off handler may still be ending (an exec handler's
                // process group gets the kill grace): never run it twice at once.
                delay = delay.max(self.config.kill_grace());
            }
            tracing::info!(
                "message {id} of group {group} failed ({reason}); retry {attempt} of {retries} in {delay:?}"
            );
            self.add_timer(Instant::now() + delay, Timer::Retry(key));
            return;
        }

        self.counters.add_failed();
        let receive_count = tracked.message.receive_count;
        let last_receive = self
            .config
            .max_receive_count
            .is_some_and(|max| receive_count >= max);
        if self.phase == Phase::Running && last_receive {
            tracing::warn!(
                "message {id} of group {group} failed on its last allowed receive ({reason}); moving it to the dead-letter queue"
            );
            tracked.dead_letter = true;
            self.router.finished(&group, key);
            return;
        }
        if self.phase == Phase::Running {
            let seconds = backoff::release_seconds(
                receive_count,
                self.config.backoff_base,
                self.config.backoff_max,
            );
            tracked.release_after = Duration::from_secs(u64::from(seconds));
            tracing::warn!(
                "message {id} of group {group} failed after {} attempts ({reason}); it and the rest of its group go back to the queue in {seconds} s",
                tracked.attempts + 1,
            );
        } else {
            tracing::warn!(
                "message {id} of group {group} failed ({reason}); handing it back with the rest of its group"
            );
        }
        self.router.failed(&group, key);
    }

    fn on_retry_due(&mut self, key: Key) {
        let Some(tracked) = self.tracked.get_mut(&key) else {
            return;
        };
        if !matches!(tracked.state, State::BackingOff) {
            return;
        }
        if self.phase == Phase::Running {
            self.retry_ready.push_back(key);
        } else {
            tracked.state = State::InLane;
            let group = tracked.message.group_id.clone();
            self.router.failed(&group, key);
        }
    }

    /// Cancels a running handler; it counts as running until it ended.
    fn cancel(&mut self, key: Key, then: AfterCancel) {
        let Some(tracked) = self.tracked.get_mut(&key) else {
            return;
        };
        match &tracked.state {
            State::Running(task) => {
                task.abort();
                tracked.state = State::Cancelling { then };
                let at = Instant::now() + self.config.kill_grace();
                self.add_timer(at, Timer::CancelDone(key));
            }
            State::Cancelling { .. } => tracked.state = State::Cancelling { then },
            _ => {}
        }
    }

    fn cancel_done(&mut self, key: Key, then: AfterCancel) {
        let Some(tracked) = self.tracked.get_mut(&key) else {
            return;
        };
        if !matches!(tracked.state, State::Cancelling { .. }) {
            return;
        }
        self.busy_workers -= 1;
        match then {
            AfterCancel::Lose => {
                self.untrack(key);
                self.counters.add_lost(1);
            }
            AfterCancel::HandBack => {
                tracked.state = State::InLane;
                let group = tracked.message.group_id.clone();
                self.router.failed(&group, key);
            }
        }
    }

    // ---- leases -------------------------------------------------------

    /// Gives up messages whose lease is about to end without a confirmed
    /// extension, and extends every lane with a message due for it.
    fn on_tick(&mut self) {
        self.give_up_expiring();
        let now = Instant::now();
        let extend_at = self.visibility() * 2 / 3;

        // Past the shutdown deadline nothing is extended any more: whatever
        // is still held then (a delete or hand-back SQS keeps failing) is
        // given up when its lease ends, so shutdown is bounded.
        if self.phase == Phase::Abandoned {
            return;
        }
        let due: HashSet<&str> = self
            .tracked
            .values()
            .filter(|t| t.extendable() && t.expires.saturating_duration_since(now) <= extend_at)
            .map(|t| t.message.group_id.as_str())
            .collect();
        if due.is_empty() {
            return;
        }
        // Whole lanes together, in order, so a lane's messages share one
        // deadline: were they ever to expire, they would come back together.
        let mut lanes: BTreeMap<&str, Vec<Key>> = BTreeMap::new();
        for (key, t) in &self.tracked {
            if t.extendable() && due.contains(t.message.group_id.as_str()) {
                lanes
                    .entry(t.message.group_id.as_str())
                    .or_default()
                    .push(*key);
            }
        }
        let lanes: Vec<Vec<Key>> = lanes
            .into_values()
            .map(|mut keys| {
                keys.sort_unstable();
                keys
            })
            .collect();
        for batch in pack(lanes) {
            self.change_visibility(batch, self.config.visibility_timeout);
        }
    }

    /// A message whose lease ends within a sixth of the visibility timeout
    /// is given up: SQS may hand it to someone else soon, so it must not
    /// start, and a running handler must end before then.
    fn give_up_expiring(&mut self) {
        let now = Instant::now();
        let mut at_risk: Vec<Key> = self
            .tracked
            .iter()
            .filter(|(_, t)| self.at_risk(t, now))
            .map(|(key, _)| *key)
            .collect();
        at_risk.sort_unstable();
        for key in at_risk {
            self.lose(
                key,
                "SQS confirmed no visibility extension before its lease ran out",
            );
        }
    }

    fn at_risk(&self, tracked: &Tracked, now: Instant) -> bool {
        tracked.expires.saturating_duration_since(now) <= self.visibility() / 6
    }

    /// Sends one visibility change for up to ten messages.
    fn change_visibility(&mut self, keys: Vec<Key>, seconds: u32) {
        let mut handles = Vec::with_capacity(keys.len());
        for key in &keys {
            let tracked = self.tracked.get_mut(key).expect("tracked");
            tracked.visibility_call = true;
            handles.push(tracked.receipt_handle.clone());
        }
        let call = calls::change_visibility(self.queue.clone(), keys.clone(), handles, seconds);
        self.spawn_call(Pending::Visibility(keys), call);
    }

    fn on_extended(
        &mut self,
        keys: Vec<Key>,
        sent_at: Instant,
        result: Result<Vec<EntryFailure>, QueueError>,
    ) {
        for key in &keys {
            if let Some(tracked) = self.tracked.get_mut(key) {
                tracked.visibility_call = false;
            }
        }
        let failures = match result {
            Ok(failures) => failures,
            // Tried again on a later tick, while the lease lasts.
            Err(err) => return self.batch_failed("extending visibility", err),
        };
        self.call_succeeded();
        let outcomes = outcomes(&keys, &failures, &self.tracked);
        let expires = sent_at + self.visibility();
        for key in outcomes.done {
            let tracked = self.tracked.get_mut(&key).expect("held");
            tracked.expires = tracked.expires.max(expires);
        }
        for (key, reason) in outcomes.gone {
            self.lose(key, &format!("SQS refused to extend it: {reason}"));
        }
    }

    /// `key` is no longer ours, nor is anything after it in its lane: a
    /// running handler is cancelled; nothing is handed back (handing back
    /// later messages while SQS may still hold `key` would let them overtake).
    fn lose(&mut self, key: Key, why: &str) {
        // Lanes the router just decided to hand back become releases first,
        // so that a loss among them is seen as one.
        self.take_router_decisions();
        let Some(tracked) = self.tracked.get(&key) else {
            return;
        };
        let later = match tracked.state {
            State::Cancelling {
                then: AfterCancel::Lose,
            } => return,
            // A lane waiting to go back stays together: if one of its
            // messages is lost, so are the others (they share its lease, and
            // handing back only some would let them overtake it).
            State::Releasing(id) => match self.releases.get(&id) {
                Some(release) if !release.sent => {
                    release.keys.iter().copied().filter(|k| *k != key).collect()
                }
                _ => Vec::new(),
            },
            _ => self.router.lost(&tracked.message.group_id, key),
        };
        let tracked = &self.tracked[&key];
        let group = tracked.message.group_id.clone();
        let running = [key]
            .iter()
            .chain(&later)
            .filter(|k| {
                matches!(
                    self.tracked.get(k).map(|t| &t.state),
                    Some(State::Running(_))
                )
            })
            .count();
        tracing::warn!(
            "lost message {} of group {group}: {why}; it{} will be delivered again{}",
            tracked.message.id,
            if later.is_empty() {
                String::new()
            } else {
                format!(" and {} later messages of its group", later.len())
            },
            if running > 0 {
                "; its running handler was cancelled"
            } else {
                ""
            }
        );
        for key in [key].into_iter().chain(later) {
            self.give_up(key);
        }
    }

    /// Stops holding a message that the router no longer has.
    fn give_up(&mut self, key: Key) {
        let Some(tracked) = self.tracked.get(&key) else {
            return;
        };
        match tracked.state {
            State::Running(_) | State::Cancelling { .. } => self.cancel(key, AfterCancel::Lose),
            State::Releasing(_) => {
                self.finish_release(key);
                self.counters.add_lost(1);
            }
            State::InLane | State::BackingOff => {
                self.retry_ready.retain(|k| *k != key);
                self.untrack(key);
                self.counters.add_lost(1);
            }
        }
    }

    fn untrack(&mut self, key: Key) {
        if let Some(tracked) = self.tracked.remove(&key)
            && self.by_message_id.get(&tracked.message.id) == Some(&key)
        {
            self.by_message_id.remove(&tracked.message.id);
        }
    }

    // ---- deletes --------------------------------------------------------

    /// Takes what the router decided: deletes in group order, lanes to hand back.
    fn take_router_decisions(&mut self) {
        while let Some(key) = self.router.pop_delete() {
            if self.tracked[&key].dead_letter {
                self.move_to_dead_letters(key, Duration::ZERO);
            } else {
                self.deletes.push_back(key);
            }
        }
        while let Some(keys) = self.router.pop_hand_back() {
            let wait = match self.phase {
                Phase::Running => self.tracked[&keys[0]].release_after,
                Phase::Draining | Phase::Abandoned => Duration::ZERO,
            };
            let due = Instant::now() + wait;
            let group = self.tracked[&keys[0]].message.group_id.clone();
            // A later part of a group joins the part still waiting to go
            // back, so the group goes back in one piece and in order.
            let waiting = self
                .releases
                .iter_mut()
                .find(|(_, r)| r.group == group && !r.sent);
            let id = match waiting {
                Some((id, release)) => {
                    release.keys.extend_from_slice(&keys);
                    release.due = release.due.min(due);
                    *id
                }
                None => {
                    let id = self.next_release;
                    self.next_release += 1;
                    let release = Release {
                        group,
                        keys: keys.clone(),
                        due,
                        sent: false,
                    };
                    self.releases.insert(id, release);
                    id
                }
            };
            for key in &keys {
                self.tracked.get_mut(key).expect("tracked").state = State::Releasing(id);
            }
            self.wake_at(due);
        }
    }

    /// A full batch goes while fewer than `DELETES_IN_FLIGHT` calls are under
    /// way; a partial one only when none is, so deletes go at once when
    /// the engine is idle and fill up while it is busy.
    fn flush_deletes(&mut self) {
        if self.deletes_not_before > Instant::now() {
            return;
        }
        // A message lost while waiting for its delete is not ours to delete.
        self.deletes.retain(|key| self.tracked.contains_key(key));
        loop {
            let full = self.deletes.len() >= BATCH && self.delete_calls < DELETES_IN_FLIGHT;
            let idle = !self.deletes.is_empty() && self.delete_calls == 0;
            if !(full || idle) {
                return;
            }
            let count = self.deletes.len().min(BATCH);
            let keys: Vec<Key> = self.deletes.drain(..count).collect();
            let handles = keys
                .iter()
                .map(|key| self.tracked[key].receipt_handle.clone())
                .collect();
            self.delete_calls += 1;
            let call = calls::delete(self.queue.clone(), keys.clone(), handles);
            self.spawn_call(Pending::Delete(keys), call);
        }
    }

    fn on_deleted(&mut self, keys: Vec<Key>, result: Result<Vec<EntryFailure>, QueueError>) {
        self.delete_calls -= 1;
        let (outcomes, error) = match result {
            Ok(failures) => {
                self.call_succeeded();
                (outcomes(&keys, &failures, &self.tracked), None)
            }
            Err(err) if matches!(err, QueueError::InvalidParameter { .. }) => {
                let gone = keys.iter().map(|key| (*key, err.to_string())).collect();
                let outcomes = Outcomes {
                    gone,
                    ..Outcomes::default()
                };
                (outcomes, None)
            }
            Err(err) => {
                let retry = keys
                    .iter()
                    .copied()
                    .filter(|k| self.tracked.contains_key(k));
                let outcomes = Outcomes {
                    retry: retry.collect(),
                    ..Outcomes::default()
                };
                (outcomes, Some(err))
            }
        };
        for key in outcomes.done {
            let group = self.tracked[&key].message.group_id.clone();
            self.counters.add_deleted(1);
            self.untrack(key);
            self.router.deleted(&group, key);
        }
        for (key, reason) in outcomes.gone {
            self.lose(key, &format!("SQS refused to delete it: {reason}"));
        }
        if !outcomes.retry.is_empty() {
            // Tried again, first, when the backoff allows.
            for key in outcomes.retry.iter().rev() {
                self.deletes.push_front(*key);
            }
            self.deletes_not_before = Instant::now() + self.retry_delay();
            self.wake_at(self.deletes_not_before);
        }
        if let Some(err) = error {
            self.batch_failed("deleting", err);
        }
    }

    /// Sends a copy to the dead-letter queue and deletes the original,
    /// after `delay` (a backoff when retrying).
    fn move_to_dead_letters(&mut self, key: Key, delay: Duration) {
        let tracked = &self.tracked[&key];
        let copy = OutgoingMessage {
            body: tracked.message.body.clone(),
            group_id: tracked.message.group_id.clone(),
            dedup_id: Some(tracked.message.id.clone()),
            attributes: tracked.attributes.clone(),
        };
        let queue = self.queue.clone();
        let receipt_handle = tracked.receipt_handle.clone();
        let call = async move {
            tokio::time::sleep(delay).await;
            calls::dead_letter(queue, key, receipt_handle, copy).await
        };
        self.spawn_call(Pending::DeadLetter(key), call);
    }

    fn on_dead_lettered(&mut self, key: Key, result: Result<(), QueueError>) {
        let Some(tracked) = self.tracked.get(&key) else {
            return;
        };
        let group = tracked.message.group_id.clone();
        match result {
            Ok(()) => {
                self.call_succeeded();
                self.counters.add_dead_lettered();
                self.untrack(key);
                self.router.deleted(&group, key);
            }
            Err(err) if err.is_transient() => {
                self.call_failed("moving to the dead-letter queue", &err);
                self.move_to_dead_letters(key, self.retry_delay());
            }
            Err(err) => {
                // SQS's own redrive moves it on a later receive instead.
                tracing::warn!(
                    "moving message {} of group {group} to the dead-letter queue failed ({err}); handing it back with the rest of its group",
                    tracked.message.id
                );
                self.router.delete_refused(&group, key);
            }
        }
    }

    // ---- hand-backs -----------------------------------------------------

    /// Sends the hand-backs that are due, each lane whole in one call where
    /// it fits, and none while a heartbeat for one of its messages is under
    /// way (it could land after the release and undo it).
    fn send_releases(&mut self) {
        let now = Instant::now();
        if self.releases_not_before > now {
            return;
        }
        // One release of a group at a time, oldest first: two calls under way
        // could land in either order.
        let mut first_of_group: HashMap<&str, u64> = HashMap::new();
        for (id, release) in &self.releases {
            let first = first_of_group.entry(&release.group).or_insert(*id);
            *first = (*first).min(*id);
        }
        let mut ready: Vec<(u64, Vec<Key>)> = self
            .releases
            .iter()
            .filter(|(id, r)| {
                !r.sent
                    && r.due <= now
                    && first_of_group[r.group.as_str()] == **id
                    && r.keys.iter().all(|k| !self.tracked[k].visibility_call)
            })
            .map(|(id, r)| (*id, r.keys.clone()))
            .collect();
        ready.sort_unstable_by_key(|(id, _)| *id);
        for (id, _) in &ready {
            self.releases.get_mut(id).expect("listed").sent = true;
        }
        let lanes = ready.into_iter().map(|(_, keys)| keys).collect();
        for batch in pack(lanes) {
            self.change_visibility(batch, 0);
        }
    }

    fn on_released(&mut self, keys: Vec<Key>, result: Result<Vec<EntryFailure>, QueueError>) {
        for key in &keys {
            if let Some(tracked) = self.tracked.get_mut(key) {
                tracked.visibility_call = false;
            }
        }
        let (outcomes, error) = match result {
            Ok(failures) => {
                self.call_succeeded();
                (outcomes(&keys, &failures, &self.tracked), None)
            }
            Err(err) if matches!(err, QueueError::InvalidParameter { .. }) => {
                let gone = keys.iter().map(|key| (*key, err.to_string())).collect();
                let outcomes = Outcomes {
                    gone,
                    ..Outcomes::default()
                };
                (outcomes, None)
            }
            Err(err) => {
                let retry = keys
                    .iter()
                    .copied()
                    .filter(|k| self.tracked.contains_key(k));
                let outcomes = Outcomes {
                    retry: retry.collect(),
                    ..Outcomes::default()
                };
                (outcomes, Some(err))
            }
        };
        for key in outcomes.done {
            self.counters.add_released(1);
            self.finish_release(key);
        }
        for (key, reason) in outcomes.gone {
            if let Some(tracked) = self.tracked.get(&key) {
                tracing::warn!(
                    "handing message {} back failed ({reason}); it comes back when its visibility timeout ends",
                    tracked.message.id
                );
                self.counters.add_lost(1);
                self.finish_release(key);
            }
        }
        self.unsend_releases(&outcomes.retry);
        if let Some(err) = error {
            self.batch_failed("handing messages back", err);
        }
    }

    fn finish_release(&mut self, key: Key) {
        if let Some(State::Releasing(id)) = self.tracked.get(&key).map(|t| &t.state)
            && let Some(release) = self.releases.get_mut(id)
        {
            release.keys.retain(|k| *k != key);
            if release.keys.is_empty() {
                let id = *id;
                self.releases.remove(&id);
            }
        }
        self.untrack(key);
    }

    /// These messages' release is to be sent again after a backoff.
    fn unsend_releases(&mut self, keys: &[Key]) {
        if keys.is_empty() {
            return;
        }
        for key in keys {
            if let Some(State::Releasing(id)) = self.tracked.get(key).map(|t| &t.state)
                && let Some(release) = self.releases.get_mut(id)
            {
                release.sent = false;
            }
        }
        self.releases_not_before = Instant::now() + self.retry_delay();
        self.wake_at(self.releases_not_before);
    }

    // ---- shutdown -----------------------------------------------------

    /// Stops taking work. Every held message not running is handed back with
    /// its lane, a lane with a running handler once that handler ended.
    ///
    /// A receive under way is not cut short while anything is held: cutting
    /// it only drops our end of the connection, and the server-side long
    /// poll would then swallow messages handed back meanwhile (hiding them
    /// for a visibility timeout). Left to finish, it returns them promptly
    /// and they are handed back again.
    fn begin_drain(&mut self) {
        self.phase = Phase::Draining;
        let deadline = Instant::now() + self.config.shutdown_timeout;
        self.add_timer(deadline, Timer::DrainDeadline);
        if self.tracked.is_empty() {
            self.abort_receives.cancel();
        }
        self.router.stop();
        // Retries waiting for their backoff are not running: they go back.
        let waiting: Vec<Key> = self
            .tracked
            .iter()
            .filter(|(_, t)| matches!(t.state, State::BackingOff))
            .map(|(key, _)| *key)
            .collect();
        self.retry_ready.clear();
        let mut waiting = waiting;
        waiting.sort_unstable();
        for key in waiting {
            let tracked = self.tracked.get_mut(&key).expect("listed");
            tracked.state = State::InLane;
            let group = tracked.message.group_id.clone();
            self.router.failed(&group, key);
        }
        // Lanes held for a failure's backoff go back now.
        let now = Instant::now();
        for release in self.releases.values_mut() {
            release.due = release.due.min(now);
        }
    }

    fn abandon(&mut self) {
        if self.phase != Phase::Draining {
            return;
        }
        self.phase = Phase::Abandoned;
        let running: Vec<Key> = self
            .tracked
            .iter()
            .filter(|(_, t)| matches!(t.state, State::Running(_)))
            .map(|(key, _)| *key)
            .collect();
        if running.is_empty() {
            return;
        }
        let mut running = running;
        running.sort_unstable();
        tracing::warn!(
            "{} handlers still running after the shutdown timeout: cancelling them and handing their groups back",
            running.len()
        );
        for key in running {
            self.cancel(key, AfterCancel::HandBack);
        }
    }

    /// The queue is unusable: stop, hand back what can be, end with `err`.
    fn fail_run(&mut self, err: QueueError) {
        tracing::error!("stopping: {err}");
        if self.fatal.is_none() {
            self.fatal = Some(Error::Queue(err));
        }
        self.shutdown.cancel();
    }

    fn spawn_call(
        &mut self,
        pending: Pending,
        call: impl std::future::Future<Output = Event> + Send + 'static,
    ) {
        let id = self.calls.spawn(call).id();
        self.call_owners.insert(id, pending);
    }

    /// A call panicked (a bug in the queue implementation): its outcome is
    /// unknown, so what it was about is resolved as if it had failed for
    /// good, and the run ends with an error.
    fn on_call_failure(&mut self, err: &JoinError) {
        let message = if err.is_panic() {
            "a call to the queue panicked"
        } else {
            "a call to the queue was cancelled"
        };
        tracing::error!("stopping: {message}");
        if self.fatal.is_none() {
            self.fatal = Some(Error::Internal(message.to_owned()));
        }
        self.shutdown.cancel();
        let Some(pending) = self.call_owners.remove(&err.id()) else {
            return;
        };
        match pending {
            Pending::Receive(slot) => {
                self.receiving -= 1;
                self.slots[slot].busy = false;
            }
            Pending::IsEmpty => self.checking_empty = false,
            Pending::Delete(keys) => {
                self.delete_calls -= 1;
                for key in keys {
                    self.lose(key, message);
                }
            }
            Pending::Visibility(keys) => {
                for key in keys {
                    if let Some(tracked) = self.tracked.get_mut(&key) {
                        tracked.visibility_call = false;
                    }
                    self.lose(key, message);
                }
            }
            Pending::DeadLetter(key) => self.lose(key, message),
        }
    }

    // ---- events, timers, trouble ----------------------------------------

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Received { slot, result } => self.on_received(slot, result),
            Event::Deleted { keys, result } => self.on_deleted(keys, result),
            Event::DeadLettered { key, result } => self.on_dead_lettered(key, result),
            Event::Extended {
                keys,
                sent_at,
                result,
            } => self.on_extended(keys, sent_at, result),
            Event::Released { keys, result } => self.on_released(keys, result),
            Event::QueueEmpty(result) => {
                self.checking_empty = false;
                let idle = self.tracked.is_empty() && self.busy_workers == 0;
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
                Timer::CancelDone(key) => {
                    let then = match self.tracked.get(&key).map(|t| &t.state) {
                        Some(State::Cancelling { then }) => *then,
                        _ => continue,
                    };
                    self.cancel_done(key, then);
                }
                Timer::DrainDeadline => self.abandon(),
                Timer::Wake => {}
            }
        }
    }

    /// A batch call failed as a whole: the queue is unusable, or SQS is in
    /// trouble and the callers retry after a backoff.
    fn batch_failed(&mut self, what: &str, err: QueueError) {
        if is_fatal(&err) {
            return self.fail_run(err);
        }
        self.call_failed(what, &err);
    }

    fn call_failed(&mut self, what: &str, err: &QueueError) {
        if self.trouble.since.is_none() {
            tracing::warn!(
                "SQS calls are failing ({what}: {err}); retrying with backoff, held messages stay held while their leases last"
            );
            self.trouble.since = Some(Instant::now());
        }
        self.trouble.failed_calls = self.trouble.failed_calls.saturating_add(1);
    }

    fn call_succeeded(&mut self) {
        if let Some(since) = self.trouble.since.take() {
            tracing::warn!(
                "SQS answers again after {:.1} s ({} calls failed); carrying on",
                since.elapsed().as_secs_f64(),
                self.trouble.failed_calls
            );
            self.trouble.failed_calls = 0;
        }
    }

    fn retry_delay(&self) -> Duration {
        backoff::jittered(
            self.trouble.failed_calls.max(1),
            Duration::from_millis(100),
            Duration::from_secs(5),
        )
    }
}

/// Errors that make the queue unusable for this run.
fn is_fatal(err: &QueueError) -> bool {
    matches!(
        err,
        QueueError::QueueDoesNotExist { .. }
            | QueueError::NotFifo { .. }
            | QueueError::BadQueueUrl { .. }
            | QueueError::BadEndpointUrl { .. }
            | QueueError::MissingRegion
            | QueueError::Credentials { .. }
    )
}

/// What a batch call's entries came to, for the messages still held.
#[derive(Debug, Default)]
struct Outcomes {
    done: Vec<Key>,
    /// SQS no longer accepts the receipt handle: the message is not ours.
    gone: Vec<(Key, String)>,
    /// Worth trying again.
    retry: Vec<Key>,
}

/// Sorts a batch's entries (`keys`, in the order sent) by their result,
/// leaving out messages no longer held.
fn outcomes(keys: &[Key], failures: &[EntryFailure], held: &HashMap<Key, Tracked>) -> Outcomes {
    let mut sorted = Outcomes::default();
    for (index, key) in keys.iter().enumerate() {
        if !held.contains_key(key) {
            continue;
        }
        match failures.iter().find(|f| f.index == index) {
            None => sorted.done.push(*key),
            Some(failure) => {
                let gone = [
                    "ReceiptHandle",
                    "InvalidParameterValue",
                    "MessageNotInflight",
                ]
                .iter()
                .any(|code| failure.code.contains(code));
                if gone {
                    sorted.gone.push((*key, failure.message.clone()));
                } else {
                    sorted.retry.push(*key);
                }
            }
        }
    }
    sorted
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

fn new_attempt_id(poller: usize) -> String {
    format!("fifo-{poller}-{:016x}", fastrand::u64(..))
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Runs the handler on one message. A panic is caught and becomes a
/// failure of that message alone; a timeout drops the handler's future
/// (an exec handler then ends its process group).
async fn work<H: Handler>(
    handler: Arc<H>,
    message: Arc<Message>,
    timeout: Option<Duration>,
    key: Key,
) -> (Key, Attempt) {
    let handled = std::panic::AssertUnwindSafe(handler.handle(&message)).catch_unwind();
    let joined = match timeout {
        Some(limit) => match tokio::time::timeout(limit, handled).await {
            Ok(joined) => joined,
            Err(_) => {
                let reason = format!("handler timed out after {limit:?}");
                return (
                    key,
                    Attempt::Failed {
                        reason,
                        cut_off: true,
                    },
                );
            }
        },
        None => handled.await,
    };
    let attempt = match joined {
        Ok(Ok(())) => Attempt::Succeeded,
        Ok(Err(err)) => Attempt::Failed {
            reason: err.to_string(),
            cut_off: false,
        },
        Err(_panic) => Attempt::Failed {
            reason: "handler panicked".to_owned(),
            cut_off: false,
        },
    };
    (key, attempt)
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
