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
//! Layout: this file holds the shared state (the held messages), the loop,
//! events and timers. Each part has a file and, where it keeps state of its
//! own, a struct there: `in_flight` (calls under way), `receiving`
//! (`Receiving`: slots and pace), `handlers` (`Workers`: handler calls and
//! retries; `work` runs one call as a task, `fate` decides what its result
//! means), `leases`
//! (heartbeats, pins, losses), `settling` (`Settling`: deletes, dead
//! letters, hand-backs), `trouble` (SQS failing and answering again),
//! `steering` (blocked groups and operators' requests), `rates` (limits on
//! handler starts) and `shutdown` (draining).

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use fifo_group_router::Router;
use fifo_handler::{Handler, Message};
use tokio::task::AbortHandle;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

mod fate;
mod handlers;
mod in_flight;
mod leases;
mod rates;
mod receiving;
mod settling;
mod shutdown;
mod steering;
mod trouble;
mod work;

use self::handlers::Workers;
use self::in_flight::InFlight;
use self::rates::Rates;
use self::receiving::Receiving;
use self::settling::Settling;
use self::trouble::{Trouble, error_type};
use crate::calls::{Event, Key};
use crate::queue::{Attribute, DeadLetterReason};
use crate::steering::{Inbox, Request};
use crate::{Counters, Error, PoolConfig, Queue, Stats};

/// Entries per batch call.
const BATCH: usize = 10;

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
    run_engine(queue, handler, config, shutdown, live, None).await
}

/// As [`run_observed`], answering the requests of the
/// [`Steering`](crate::Steering) handle whose `inbox` this is: the groups
/// held, skip or retry a group's head, pause and resume.
pub async fn run_steered<Q: Queue, H: Handler>(
    queue: Q,
    handler: H,
    config: &PoolConfig,
    shutdown: CancellationToken,
    live: Arc<Counters>,
    inbox: Inbox,
) -> Result<Stats, Error> {
    run_engine(queue, handler, config, shutdown, live, Some(inbox)).await
}

async fn run_engine<Q: Queue, H: Handler>(
    queue: Q,
    handler: H,
    config: &PoolConfig,
    shutdown: CancellationToken,
    live: Arc<Counters>,
    inbox: Option<Inbox>,
) -> Result<Stats, Error> {
    config.check().map_err(Error::Config)?;
    let before = live.snapshot();
    let mut engine = Engine::new(queue, handler, config.clone(), shutdown, live.clone());
    engine.inbox = inbox;
    engine.run_loop().await;
    match engine.fatal {
        Some(err) => Err(err),
        None => Ok(live.snapshot().since(&before)),
    }
}

/// Where the run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Receiving and running.
    Running,
    /// Stopping: no new work; running handlers may finish until the deadline.
    Draining,
    /// The deadline passed: running handlers were cancelled.
    Abandoned,
}

/// A held message.
#[derive(Debug)]
struct Tracked {
    /// The message as its handler sees it, with this delivery's receipt
    /// handle, for every call about it.
    message: Arc<Message>,
    /// The attributes as received, for the copy to the dead-letter queue.
    attributes: BTreeMap<String, Attribute>,
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
    last_failure: Option<DeadLetterReason>,
    /// Since when it blocks its group (`Exhausted::Block`), while it does.
    blocked_since: Option<SystemTime>,
    /// After a failure (or a handler's request to wait): how long it and
    /// its lane stay invisible once handed back.
    release_after: Duration,
    /// Its handler was cut off: until then its process may still be ending,
    /// so no one else may get the message before.
    kill_ends: Option<Instant>,
    /// Where it is in its life.
    state: State,
    /// When it entered that state, for operators (`Steering::groups`).
    since: SystemTime,
}

/// Where a held message is in its life.
#[derive(Debug)]
enum State {
    /// In its lane: queued, done, deleting or waiting to be handed back.
    InLane,
    /// Its handler runs (alone or in a batch, see `Engine::running`).
    Running(AbortHandle),
    /// Out of its lane and waiting to run again: retried when a timer fires
    /// at `until` or later (an operator may make it sooner), unless it is
    /// waiting out a kill grace.
    BackingOff {
        /// What it waits for.
        why: Backoff,
        /// When it is due.
        until: Instant,
    },
    /// Its handler was cancelled and counts as running until the kill grace
    /// passes (an exec handler's process group may still be ending).
    Cancelling {
        /// What becomes of it once its handler ended.
        then: AfterCancel,
        /// The handler call's task.
        task: tokio::task::Id,
    },
    /// Handed back with its lane; see `Release`.
    Releasing(u64),
}

/// Why a message waits out of its lane before running again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backoff {
    /// It failed with retries left.
    Retry,
    /// Its handler asked to run it again later.
    RetryLater,
    /// Its handler could not start (fifo's own trouble).
    NotStarted,
    /// It failed on every attempt allowed and blocks its group
    /// (`--exhausted block`) until it succeeds or is skipped.
    Blocked,
    /// It moves to the dead-letter queue once its cut-off program is gone.
    KillGrace,
}

/// What becomes of a message whose handler was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterCancel {
    /// Its lease ended: give it up.
    Lose,
    /// The shutdown deadline passed: hand it back with its lane.
    HandBack,
}

impl Tracked {
    /// Moves it to `state`, noting when.
    fn set_state(&mut self, state: State) {
        self.state = state;
        self.since = SystemTime::now();
    }

    /// Backs it off until `until`, for `why`.
    fn back_off(&mut self, why: Backoff, until: Instant) {
        self.set_state(State::BackingOff { why, until });
    }

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
    /// Nothing after it was deleted.
    No,
    /// A delete call with a later message of its group got no answer: it
    /// may have been deleted. Kept held as usual; an order risk if lost.
    Maybe,
    /// SQS confirmed a later message's delete: pinned (see `pin_overtaken`).
    Surely,
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

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// A message's backoff is over: it may run again.
    Retry(Key),
    /// A message cut off on its last receive may move on.
    DeadLetter(Key),
    /// A cancelled handler call's kill grace is over.
    CancelDone(tokio::task::Id),
    /// The shutdown deadline: running handlers are cancelled.
    DrainDeadline,
    /// Just wake the loop (a backoff gate or a release came due).
    Wake,
}

/// The engine's state: what every part shares (the queue, the handler,
/// the settings, the router and the held messages), and each part's own.
struct Engine<Q, H> {
    /// The queue the messages come from and go back to.
    queue: Q,
    /// The user's handler, shared with the handler calls' tasks.
    handler: Arc<H>,
    /// The run's settings.
    config: PoolConfig,
    /// The run's figures, read live by metrics and the status line.
    counters: Arc<Counters>,
    /// The order rules: each group's lane of held messages.
    router: Router<Key>,
    /// Every held message.
    tracked: HashMap<Key, Tracked>,
    /// The key of each held message, by SQS message id: a message delivered
    /// again while held takes its old place.
    by_message_id: HashMap<String, Key>,
    /// The key the next message received gets: keys grow in receive order.
    next_key: Key,
    /// Where the run stands.
    phase: Phase,
    /// Timers, soonest first.
    timers: BinaryHeap<std::cmp::Reverse<(Instant, Timer)>>,
    /// Calls to the queue under way (`in_flight.rs`).
    in_flight: InFlight,
    /// The receive slots and their pace (`receiving.rs`).
    receiving: Receiving,
    /// Handler calls under way and the retries due (`handlers.rs`).
    workers: Workers,
    /// Deletes and hand-backs waiting or under way (`settling.rs`).
    settling: Settling,
    /// SQS trouble, said once when it starts and once when it ends (`trouble.rs`).
    trouble: Trouble,
    /// The limits on handler starts (`rates.rs`).
    rates: Rates,
    /// Where operators' requests arrive (`steering.rs`); `None` when no one
    /// steers the run, or no one can any more.
    inbox: Option<Inbox>,
    /// Since when an operator has paused the run: no handler starts and
    /// nothing is received.
    paused: Option<SystemTime>,
    /// Cancelled to stop the run: a signal, `limit` reached, or an empty
    /// queue with `until_empty`.
    shutdown: CancellationToken,
    /// Why the run failed, once it did.
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
        Engine {
            receiving: Receiving::new(config.pollers),
            rates: Rates::new(config.max_rate, config.group_rate),
            queue,
            handler: Arc::new(handler),
            config,
            counters,
            router: Router::new(),
            tracked: HashMap::new(),
            by_message_id: HashMap::new(),
            next_key: 0,
            phase: Phase::Running,
            timers: BinaryHeap::new(),
            in_flight: InFlight::default(),
            workers: Workers::default(),
            settling: Settling::new(),
            trouble: Trouble::default(),
            inbox: None,
            paused: None,
            shutdown: shutdown.child_token(),
            fatal: None,
        }
    }

    /// How long a receive or a heartbeat keeps a message hidden.
    fn visibility(&self) -> Duration {
        Duration::from_secs(u64::from(self.config.visibility_timeout))
    }

    /// How close to its end a lease is given up: SQS may hand the message
    /// to someone else soon after, so it must not start, and a running
    /// handler must have ended by then.
    fn lease_margin(&self) -> Duration {
        self.visibility() / 6
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
                self.workers.running.len(),
            );
            self.counters.loop_turned(
                self.phase == Phase::Running
                    && self.trouble.since.is_none()
                    && self.paused.is_none(),
            );
            if self.phase != Phase::Running
                && self.tracked.is_empty()
                && self.in_flight.tasks.is_empty()
                && self.workers.tasks.is_empty()
            {
                break;
            }
            let next_timer = self.timers.peek().map(|t| t.0.0);
            tokio::select! {
                Some(joined) = self.in_flight.tasks.join_next_with_id() => match joined {
                    Ok((id, event)) => {
                        // An emptiness check is no SQS call of a kind that fails.
                        let sent = self
                            .in_flight
                            .remove(&id)
                            .and_then(|call| Some((call.sent, call.pending.kind()?)));
                        if let Some((sent, kind)) = sent
                            && let Some(outcome) = event.outcome()
                        {
                            let error = outcome.err().map(error_type);
                            let took = sent.elapsed();
                            self.counters.observe_call(kind.operation_name(), took, error);
                        }
                        self.trouble.event_sent = sent.map(|(sent, _)| sent);
                        self.on_event(event);
                    }
                    Err(err) => self.on_call_failure(&err),
                },
                Some(joined) = self.workers.tasks.join_next_with_id() => self.on_worker(joined),
                _ = sleep_until(next_timer) => self.on_timers(),
                _ = tick.tick() => self.on_tick(),
                _ = self.shutdown.cancelled(), if self.phase == Phase::Running => self.begin_drain(),
                request = next_request(&mut self.inbox) => self.on_request(request),
            }
        }
        self.counters.set_gauges(0, 0, 0, 0);
        self.counters.set_blocked(0, Duration::ZERO);
        self.counters.loop_turned(false);
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Received { slot, result } => self.on_received(slot, result),
            Event::Deleted { keys, took, result } => {
                if result.is_ok() {
                    self.receiving.pace.on_delete(took);
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
                let idle = self.tracked.is_empty() && self.workers.running.is_empty();
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

/// The next operator's request; pending forever once no handle is left.
async fn next_request(inbox: &mut Option<Inbox>) -> Request {
    if let Some(open) = inbox {
        if let Some(request) = open.requests.recv().await {
            return request;
        }
        *inbox = None;
    }
    std::future::pending().await
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
