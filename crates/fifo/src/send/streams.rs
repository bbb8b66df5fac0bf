//! Sending: each group belongs to one stream, and a stream sends its
//! messages batch after batch, so a group's messages reach the queue in the
//! order given. A message that is not sent holds back the rest of its group:
//! a group never reaches the queue with a hole in it.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use fifo_sqs_client::{Client, Error, MAX_BATCH_ENTRIES, payload_bytes};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::input::{Item, Planned, Refused};

/// What became of one message, or of the whole send.
#[derive(Debug)]
pub(crate) enum Note {
    /// SQS accepted it and gave it this id (the id of an earlier message
    /// when it was de-duplicated).
    Accepted {
        number: u64,
        group: String,
        message_id: String,
    },
    Refused(Refused),
    HeldBack {
        origin: String,
        group: String,
    },
    /// Its batch's answer was lost: it may or may not be in the queue.
    Unknown {
        origin: String,
    },
    /// Not sent because the send stopped.
    NotAttempted {
        origin: String,
    },
    /// Accepted although an earlier message of its group in the same batch
    /// was refused: the group has a hole.
    AfterAHole {
        origin: String,
        group: String,
    },
    /// A batch call failed: the send stops.
    Stopped(Error),
}

/// Deals groups to streams: the first groups in order of first appearance
/// (so a few groups spread evenly), any more by hash (so memory stays flat
/// with millions of groups). A group's stream never changes.
pub(crate) struct Dealer {
    streams: usize,
    known: HashMap<String, usize>,
    hasher: RandomState,
}

const DEALT_BY_APPEARANCE: usize = 10_000;

impl Dealer {
    pub(crate) fn new(streams: usize) -> Dealer {
        Dealer {
            streams,
            known: HashMap::new(),
            hasher: RandomState::new(),
        }
    }

    pub(crate) fn stream_of(&mut self, group: &str) -> usize {
        if let Some(&stream) = self.known.get(group) {
            return stream;
        }
        if self.known.len() < DEALT_BY_APPEARANCE {
            let stream = self.known.len() % self.streams;
            self.known.insert(group.to_owned(), stream);
            return stream;
        }
        (self.hasher.hash_one(group) % self.streams as u64) as usize
    }
}

/// The rule that keeps groups whole: after a message of a group is not
/// sent, no later message of that group is.
#[derive(Debug, Default)]
pub(crate) struct Gate {
    stopped: HashSet<String>,
}

impl Gate {
    /// What to do with the next item: a message to send, or the note that
    /// says why it is not sent.
    pub(crate) fn admit(&mut self, item: Item) -> Result<Planned, Note> {
        match item {
            Err(refused) => {
                self.stopped.extend(refused.group.clone());
                Err(Note::Refused(refused))
            }
            Ok(p) if self.stopped.contains(&p.message.group_id) => Err(Note::HeldBack {
                origin: p.origin,
                group: p.message.group_id,
            }),
            Ok(p) => Ok(p),
        }
    }

    /// Stops a group whose message was not sent.
    pub(crate) fn stop(&mut self, group: String) {
        self.stopped.insert(group);
    }
}

/// One stream: sends what arrives on `items`, in order, and notes the fate
/// of every message.
pub(crate) async fn send_stream(
    client: Client,
    queue_url: String,
    max_batch_bytes: usize,
    mut items: mpsc::Receiver<Item>,
    notes: mpsc::UnboundedSender<Note>,
    stop: CancellationToken,
) {
    let note = |n: Note| {
        let _ = notes.send(n);
    };
    let mut gate = Gate::default();
    let mut next: Option<Planned> = None;
    loop {
        let mut batch: Vec<Planned> = next.take().into_iter().collect();
        let mut bytes: usize = batch.iter().map(|p| payload_bytes(&p.message)).sum();
        while batch.len() < MAX_BATCH_ENTRIES {
            // Wait for a first message; then take only what is ready, so a
            // slow input is sent as it comes.
            let item = if batch.is_empty() {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => None,
                    item = items.recv() => item,
                }
            } else {
                items.try_recv().ok()
            };
            let Some(item) = item else { break };
            match gate.admit(item) {
                Err(not_sent) => note(not_sent),
                Ok(p) => {
                    let size = payload_bytes(&p.message);
                    if !batch.is_empty() && bytes + size > max_batch_bytes {
                        next = Some(p);
                        break;
                    }
                    bytes += size;
                    batch.push(p);
                }
            }
        }
        if stop.is_cancelled() {
            // Nothing more is sent: what this stream holds was not attempted.
            // Closed first, so that the reader cannot hand over a message
            // after the last look (it would be dropped with the channel,
            // counted as taken and told of nowhere): a send after this
            // fails, and the reader counts it as not taken.
            items.close();
            let queued = std::iter::from_fn(|| items.try_recv().ok()).map(|item| match item {
                Ok(p) => p.origin,
                Err(r) => r.origin,
            });
            let held = batch.into_iter().chain(next).map(|p| p.origin);
            for origin in held.chain(queued) {
                note(Note::NotAttempted { origin });
            }
            return;
        }
        if batch.is_empty() {
            return;
        }
        let messages: Vec<_> = batch.iter().map(|p| p.message.clone()).collect();
        match client.send_batch(&queue_url, &messages).await {
            Ok(outcomes) => {
                let mut refused_here: HashSet<String> = HashSet::new();
                for (p, outcome) in batch.into_iter().zip(outcomes) {
                    let group = p.message.group_id;
                    match outcome {
                        Ok(message_id) => {
                            if refused_here.contains(&group) {
                                note(Note::AfterAHole {
                                    origin: p.origin.clone(),
                                    group: group.clone(),
                                });
                            }
                            note(Note::Accepted {
                                number: p.number,
                                group,
                                message_id,
                            });
                        }
                        Err(failure) => {
                            note(Note::Refused(Refused {
                                origin: p.origin,
                                reason: format!(
                                    "SQS refused it: {}: {}",
                                    failure.code, failure.message
                                ),
                                hint: "fix the message and send it and the rest of its group again"
                                    .to_owned(),
                                group: Some(group.clone()),
                            }));
                            refused_here.insert(group.clone());
                            gate.stop(group);
                        }
                    }
                }
            }
            Err(err) => {
                // An answer that never came leaves the batch unknown; an
                // error SQS answered means it stored none of it.
                for p in batch {
                    gate.stop(p.message.group_id.clone());
                    if err.is_transient() {
                        note(Note::Unknown { origin: p.origin });
                    } else {
                        note(Note::Refused(Refused {
                            origin: p.origin,
                            reason: format!("not sent: {err}"),
                            hint: String::new(),
                            group: Some(p.message.group_id),
                        }));
                    }
                }
                stop.cancel();
                note(Note::Stopped(err));
            }
        }
    }
}
