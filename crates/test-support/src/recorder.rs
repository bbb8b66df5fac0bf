//! A handler for tests of the engine: it records what it ran, when, and
//! with what outcome (a run cut off by the engine is recorded when it is
//! dropped), and can inject failures, panics and hangs, per body or at
//! random. Times are tokio's, so it works with paused time and real time
//! alike.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use fifo_handler::{Handler, Message, Outcome, Reject, RetryLater};
use tokio::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use fifo_worker_pool::{Counters, Error, Inbox, PoolConfig, Queue, Stats};

/// One handler run.
#[derive(Debug, Clone)]
pub struct Record {
    /// The message group id.
    pub group: String,
    /// The message body.
    pub body: String,
    /// The delivery's receive count: 1 on the first delivery.
    pub receive_count: u32,
    /// When the run began (tokio time).
    pub start: Instant,
    /// When the run returned, or was dropped if the engine cut it off.
    pub end: Instant,
    /// Whether the handler succeeded: false for failures, panics and cut-off
    /// runs.
    pub ok: bool,
    /// The engine dropped the run before it ended (timeout, lost lease,
    /// shutdown deadline).
    pub cancelled: bool,
}

/// What the test handler does with a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fail this many times, then succeed.
    FailTimes(u32),
    /// Panic this many times, then succeed; the engine counts a panic as a
    /// failure.
    Panic(u32),
    /// Hang (longer than any timeout) this many times.
    Hang(u32),
    /// Reject ([`fifo_handler::Reject`]) this many times.
    Reject(u32),
    /// Ask to run again after the delay ([`fifo_handler::RetryLater`]) this
    /// many times.
    RetryLater(u32, Duration),
}

impl Fault {
    /// How many more runs it applies to.
    fn left(&mut self) -> &mut u32 {
        match self {
            Fault::FailTimes(n)
            | Fault::Panic(n)
            | Fault::Hang(n)
            | Fault::Reject(n)
            | Fault::RetryLater(n, _) => n,
        }
    }
}

/// A handler that waits `work`, applies any fault set for the body, and
/// records the run. Clones share the records.
#[derive(Clone, Default)]
pub struct Recorder {
    records: Arc<Mutex<Vec<Record>>>,
    faults: Arc<Mutex<HashMap<String, Fault>>>,
    work: Duration,
    /// Give these to `run_observed`, so the recorder can see how much is held.
    pub counters: Arc<Counters>,
    /// The most messages held at the start of any handler run.
    pub max_in_flight_seen: Arc<Mutex<u64>>,
    /// Share of runs that fail, decided by a hash of the seed, the body and
    /// how often that body ran, so the same run gets the same outcome
    /// whatever the scheduling.
    failure_rate: f64,
    seed: u64,
    runs: Arc<Mutex<HashMap<String, u32>>>,
}

impl Recorder {
    /// Runs the engine on `queue` with this recorder as the handler and its
    /// counters as the run's (so it sees what is held).
    pub async fn run_on<Q: Queue>(
        &self,
        queue: Q,
        config: PoolConfig,
        shutdown: CancellationToken,
    ) -> Result<Stats, Error> {
        fifo_worker_pool::run_observed(
            queue,
            self.clone(),
            &config,
            shutdown,
            self.counters.clone(),
        )
        .await
    }

    /// As [`Recorder::run_on`], steered through the handle `inbox` belongs to.
    pub async fn run_steered<Q: Queue>(
        &self,
        queue: Q,
        config: PoolConfig,
        shutdown: CancellationToken,
        inbox: Inbox,
    ) -> Result<Stats, Error> {
        fifo_worker_pool::run_steered(
            queue,
            self.clone(),
            &config,
            shutdown,
            self.counters.clone(),
            inbox,
        )
        .await
    }

    /// A recorder whose runs each take `work` and succeed, until faults are
    /// added.
    pub fn new(work: Duration) -> Recorder {
        Recorder {
            work,
            ..Recorder::default()
        }
    }

    /// Fails `rate` of all runs, chosen by `seed`.
    pub fn random_failures(self, rate: f64, seed: u64) -> Recorder {
        Recorder {
            failure_rate: rate,
            seed,
            ..self
        }
    }

    /// Applies `fault` to runs of `body`, replacing any fault set for it
    /// before.
    pub fn fault(self, body: &str, fault: Fault) -> Recorder {
        self.faults.lock().unwrap().insert(body.to_owned(), fault);
        self
    }

    /// Every run recorded so far, in the order the runs ended.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap().clone()
    }

    /// Bodies that succeeded, per group, in the order they succeeded.
    pub fn successes(&self) -> BTreeMap<String, Vec<String>> {
        let mut records = self.records();
        records.sort_by_key(|r| r.end);
        let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in records.into_iter().filter(|r| r.ok) {
            by_group.entry(r.group).or_default().push(r.body);
        }
        by_group
    }
}

impl Handler for Recorder {
    async fn handle(&self, message: &Message) -> Outcome {
        let start = Instant::now();
        {
            let seen = self.counters.snapshot().in_flight;
            let mut max = self.max_in_flight_seen.lock().unwrap();
            *max = (*max).max(seen);
        }
        let fault = {
            let mut faults = self.faults.lock().unwrap();
            faults.get_mut(&message.body).and_then(|fault| {
                let applies = *fault.left() > 0;
                applies.then(|| {
                    let before = *fault;
                    *fault.left() -= 1;
                    before
                })
            })
        };
        let random_failure = self.failure_rate > 0.0 && {
            let mut runs = self.runs.lock().unwrap();
            let run = runs.entry(message.body.clone()).or_insert(0);
            *run += 1;
            chance(self.seed, &message.body, *run) < self.failure_rate
        };
        // Recorded when the run ends or, if the engine cuts it off, when it
        // is dropped.
        let mut record = RecordOnDrop {
            records: self.records.clone(),
            record: Some(Record {
                group: message.group_id.clone(),
                body: message.body.clone(),
                receive_count: message.receive_count,
                start,
                end: start,
                ok: false,
                cancelled: true,
            }),
        };
        if matches!(fault, Some(Fault::Hang(_))) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        tokio::time::sleep(self.work).await;
        let ok = fault.is_none() && !random_failure;
        if let Some(record) = record.record.as_mut() {
            record.ok = ok;
            record.cancelled = false;
        }
        drop(record);
        match fault {
            Some(Fault::Panic(_)) => panic!("the handler panics on {}", message.body),
            Some(Fault::Reject(_)) => {
                Err(Reject::because(format!("injected reject of {}", message.body)).into())
            }
            Some(Fault::RetryLater(_, delay)) => {
                Err(RetryLater::after(delay, format!("injected wait for {}", message.body)).into())
            }
            Some(_) => Err(format!("injected failure of {}", message.body).into()),
            None if random_failure => Err(format!("random failure of {}", message.body).into()),
            None => Ok(()),
        }
    }
}

struct RecordOnDrop {
    records: Arc<Mutex<Vec<Record>>>,
    record: Option<Record>,
}

impl Drop for RecordOnDrop {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.end = Instant::now();
            self.records.lock().unwrap().push(record);
        }
    }
}

/// A number in 0..1 from the seed, a body and a run count (FNV-1a).
fn chance(seed: u64, body: &str, run: u32) -> f64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for byte in body.bytes().chain(run.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// Most handler runs that were under way at the same moment.
pub fn max_overlap(records: &[Record]) -> usize {
    records
        .iter()
        .map(|r| {
            records
                .iter()
                .filter(|o| o.start <= r.start && r.start < o.end)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Checks the order promise from the handler's own records, given the
/// bodies sent, in send order, as `(group, body)`, and the bodies that went
/// to the dead-letter queue. Returns one line per violation:
/// - two runs of one group overlapped (two handlers of a group at once);
/// - a run started before every earlier message of its group had
///   succeeded (or been dead-lettered);
/// - the last runs of a group's messages (dead letters aside) were not in
///   send order (a replay overtook a later message).
pub fn order_violations(
    records: &[Record],
    sent: &[(String, String)],
    dead_letters: &[String],
) -> Vec<String> {
    let mut violations = Vec::new();
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (group, body) in sent {
        groups.entry(group).or_default().push(body);
    }
    for (group, bodies) in &groups {
        let mut runs: Vec<&Record> = records.iter().filter(|r| r.group == *group).collect();
        runs.sort_by_key(|r| (r.start, r.end));
        for pair in runs.windows(2) {
            if pair[1].start < pair[0].end {
                violations.push(format!(
                    "group {group}: {} started while {} was running",
                    pair[1].body, pair[0].body
                ));
            }
        }
        for run in &runs {
            let Some(position) = bodies.iter().position(|b| *b == run.body) else {
                continue;
            };
            for earlier in &bodies[..position] {
                let succeeded = runs
                    .iter()
                    .any(|r| r.body == *earlier && r.ok && r.end <= run.start);
                if !succeeded && !dead_letters.iter().any(|d| d == earlier) {
                    violations.push(format!(
                        "group {group}: {} started before {earlier} had succeeded",
                        run.body
                    ));
                }
            }
        }
        // A dead-lettered message left the group's order (SQS or fifo
        // moved it), so only the others' last runs are compared.
        let last_starts: Vec<(&str, Instant)> = bodies
            .iter()
            .filter(|body| !dead_letters.iter().any(|d| d == *body))
            .filter_map(|body| {
                let last = runs
                    .iter()
                    .filter(|r| r.body == *body)
                    .map(|r| r.start)
                    .max()?;
                Some((*body, last))
            })
            .collect();
        for pair in last_starts.windows(2) {
            let ((earlier, a), (later, b)) = (pair[0], pair[1]);
            if b < a {
                violations.push(format!(
                    "group {group}: the last run of {earlier} came after the last run of {later}"
                ));
            }
        }
    }
    violations
}
