//! Test support (feature `testing`): a handler that records what it ran,
//! when, and with what outcome, and can inject failures, panics and hangs.
//! Times are tokio's, so it works with paused time and real time alike.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use fifo_handler::{Handler, Message, Outcome};
use tokio::time::{Duration, Instant};

use crate::Counters;

/// One handler run.
#[derive(Debug, Clone)]
pub struct Record {
    pub group: String,
    pub body: String,
    pub receive_count: u32,
    pub start: Instant,
    pub end: Instant,
    pub ok: bool,
}

/// What the test handler does with a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fail this many times, then succeed.
    FailTimes(u32),
    Panic(u32),
    /// Hang (longer than any timeout) this many times.
    Hang(u32),
}

/// A handler that waits `work`, applies any fault set for the body, and
/// records the run. Clones share the records.
#[derive(Clone, Default)]
pub struct Recorder {
    records: Arc<Mutex<Vec<Record>>>,
    faults: Arc<Mutex<HashMap<String, Fault>>>,
    work: Duration,
    /// Give these to `run`, so the recorder can see how much is held.
    pub counters: Arc<Counters>,
    /// The most messages held at the start of any handler run.
    pub max_in_flight_seen: Arc<Mutex<u64>>,
}

impl Recorder {
    pub fn new(work: Duration) -> Recorder {
        Recorder {
            work,
            ..Recorder::default()
        }
    }

    pub fn fault(self, body: &str, fault: Fault) -> Recorder {
        self.faults.lock().unwrap().insert(body.to_owned(), fault);
        self
    }

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
            match faults.get_mut(&message.body) {
                Some(Fault::FailTimes(n) | Fault::Panic(n) | Fault::Hang(n)) if *n == 0 => None,
                Some(fault) => {
                    let kind = *fault;
                    let (Fault::FailTimes(n) | Fault::Panic(n) | Fault::Hang(n)) = fault;
                    *n -= 1;
                    Some(kind)
                }
                None => None,
            }
        };
        if matches!(fault, Some(Fault::Hang(_))) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        tokio::time::sleep(self.work).await;
        let ok = fault.is_none();
        self.records.lock().unwrap().push(Record {
            group: message.group_id.clone(),
            body: message.body.clone(),
            receive_count: message.receive_count,
            start,
            end: Instant::now(),
            ok,
        });
        match fault {
            None => Ok(()),
            Some(Fault::Panic(_)) => panic!("the handler panics on {}", message.body),
            Some(_) => Err(format!("injected failure of {}", message.body).into()),
        }
    }
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
