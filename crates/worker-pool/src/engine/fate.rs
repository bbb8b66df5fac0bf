//! What becomes of a message after its handler ran: decided by [`fate`], a
//! pure function of what is known then (no clock, no I/O, no randomness),
//! so that every case is one row of a table test; `Engine::on_attempt`
//! (`handlers.rs`) applies the decision.

use std::time::Duration;

use fifo_handler::Verdict;

/// What is known about a message when its handler call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Facts {
    /// `None` when the handler succeeded; otherwise what its error asks for.
    pub(super) verdict: Option<Verdict>,
    /// The run is not stopping: retries, waits and dead-letter moves happen.
    pub(super) running: bool,
    /// Failed attempts already counted in this delivery (this one not yet).
    pub(super) attempts: u32,
    /// In-process retries allowed per delivery.
    pub(super) retries: u32,
    /// Its receive count on this delivery.
    pub(super) receive_count: u32,
    /// The queue's `maxReceiveCount`; `None` without a dead-letter queue.
    pub(super) max_receive_count: Option<u32>,
    /// A message out of retries blocks its group (`--exhausted block`)
    /// instead of going back to the queue or to the dead-letter queue.
    pub(super) blocks: bool,
}

/// What happens to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// It succeeded: deletable once the messages before it are.
    Done,
    /// Its handler could not start, fifo's own trouble: it waits in its lane
    /// and starts again after a backoff, no attempt counted.
    NotStarted,
    /// Its handler asked to run it again later: after this delay (`None`:
    /// the next backoff), no attempt counted; its group waits.
    Wait(Option<Duration>),
    /// A failure with retries left: it runs again after a backoff, as
    /// attempt `attempts + 2`.
    Retry,
    /// It goes to the dead-letter queue now and its group goes on:
    /// `rejected` by its handler, or else failed on its last allowed receive.
    DeadLetter {
        /// Its handler rejected it (rather than failing on the last receive).
        rejected: bool,
    },
    /// Out of retries with `--exhausted block`: it stays held, its group
    /// waits behind it, and it runs again after a slow backoff.
    Block,
    /// It goes back to the queue with the rest of its lane.
    HandBack(HandBack),
}

/// Why a lane goes back to the queue, which says how long it stays hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HandBack {
    /// Its retries ran out: hidden for the backoff its receive count earns.
    Exhausted,
    /// The run is stopping: back at once, to run again on another receive.
    Stopping,
    /// The run is stopping and its handler had asked to wait: hidden for
    /// that long (`None`: the next backoff).
    Waiting(Option<Duration>),
}

impl Fate {
    /// Whether the message failed for good in this delivery (it counts as
    /// failed or rejected in the run's figures).
    pub(super) fn ends_the_delivery(self) -> bool {
        matches!(
            self,
            Fate::DeadLetter { .. } | Fate::HandBack(HandBack::Exhausted | HandBack::Stopping)
        )
    }
}

/// Decides a message's fate from its handler's verdict and its delivery.
///
/// A reject goes to the dead-letter queue at once, skipping the retries left,
/// but only while running and only when there is a dead-letter queue (without
/// one it fails like any error and is never deleted). Other failures are
/// retried in process while retries are left; then, on the last receive SQS
/// allows, moved to the dead-letter queue by fifo itself (SQS's redrive would
/// move it only on a later receive, after the group's next messages ran);
/// otherwise handed back with the rest of the lane. When exhausted messages
/// block, a failure out of retries blocks its group instead, even on the
/// last receive (only a reject still goes to the dead-letter queue: the
/// handler said it can never succeed). While stopping nothing is retried,
/// waited for, blocked or moved: it all goes back.
pub(super) fn fate(facts: Facts) -> Fate {
    let Some(verdict) = facts.verdict else {
        return Fate::Done;
    };
    let has_dead_letters = facts.max_receive_count.is_some();
    match verdict {
        Verdict::CannotStart => Fate::NotStarted,
        Verdict::RetryLater(after) if facts.running => Fate::Wait(after),
        Verdict::RetryLater(after) => Fate::HandBack(HandBack::Waiting(after)),
        _ if !facts.running => Fate::HandBack(HandBack::Stopping),
        Verdict::Reject if has_dead_letters => Fate::DeadLetter { rejected: true },
        _ if facts.attempts < facts.retries => Fate::Retry,
        _ if facts.blocks => Fate::Block,
        _ if facts
            .max_receive_count
            .is_some_and(|max| facts.receive_count >= max) =>
        {
            Fate::DeadLetter { rejected: false }
        }
        _ => Fate::HandBack(HandBack::Exhausted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATER: Option<Duration> = Some(Duration::from_secs(7));

    /// A failure on the first attempt of a first delivery, while running,
    /// with two retries and a dead-letter queue after three receives.
    fn failed(verdict: Verdict) -> Facts {
        Facts {
            verdict: Some(verdict),
            running: true,
            attempts: 0,
            retries: 2,
            receive_count: 1,
            max_receive_count: Some(3),
            blocks: false,
        }
    }

    #[test]
    fn each_case_has_its_fate() {
        let exhausted = Facts {
            attempts: 2,
            ..failed(Verdict::Retry)
        };
        let last_receive = Facts {
            receive_count: 3,
            ..exhausted
        };
        let stopping = |verdict| Facts {
            running: false,
            ..failed(verdict)
        };
        let no_dead_letters = |facts: Facts| Facts {
            max_receive_count: None,
            ..facts
        };
        let blocking = |facts: Facts| Facts {
            blocks: true,
            ..facts
        };
        let rows: [(&str, Facts, Fate); 22] = [
            (
                "succeeded",
                Facts {
                    verdict: None,
                    ..exhausted
                },
                Fate::Done,
            ),
            ("failed, retries left", failed(Verdict::Retry), Fate::Retry),
            (
                "failed, retries left on the last receive",
                Facts {
                    receive_count: 3,
                    ..failed(Verdict::Retry)
                },
                Fate::Retry,
            ),
            (
                "failed, no retries left",
                exhausted,
                Fate::HandBack(HandBack::Exhausted),
            ),
            (
                "failed, no retries left, beyond the last receive",
                Facts {
                    receive_count: 9,
                    ..exhausted
                },
                Fate::DeadLetter { rejected: false },
            ),
            (
                "failed on the last receive",
                last_receive,
                Fate::DeadLetter { rejected: false },
            ),
            (
                "failed on a receive no dead-letter queue limits",
                no_dead_letters(last_receive),
                Fate::HandBack(HandBack::Exhausted),
            ),
            (
                "rejected",
                failed(Verdict::Reject),
                Fate::DeadLetter { rejected: true },
            ),
            (
                "rejected without a dead-letter queue: a failure",
                no_dead_letters(failed(Verdict::Reject)),
                Fate::Retry,
            ),
            (
                "rejected without a dead-letter queue, no retries left",
                no_dead_letters(Facts {
                    verdict: Some(Verdict::Reject),
                    ..exhausted
                }),
                Fate::HandBack(HandBack::Exhausted),
            ),
            (
                "asked to wait",
                failed(Verdict::RetryLater(LATER)),
                Fate::Wait(LATER),
            ),
            (
                "asked to wait, no retries left: not counted",
                Facts {
                    verdict: Some(Verdict::RetryLater(None)),
                    ..last_receive
                },
                Fate::Wait(None),
            ),
            (
                "could not start",
                Facts {
                    verdict: Some(Verdict::CannotStart),
                    ..last_receive
                },
                Fate::NotStarted,
            ),
            (
                "failed while stopping",
                stopping(Verdict::Retry),
                Fate::HandBack(HandBack::Stopping),
            ),
            (
                "rejected while stopping",
                stopping(Verdict::Reject),
                Fate::HandBack(HandBack::Stopping),
            ),
            (
                "asked to wait while stopping",
                stopping(Verdict::RetryLater(LATER)),
                Fate::HandBack(HandBack::Waiting(LATER)),
            ),
            (
                "blocking, failed, retries left",
                blocking(failed(Verdict::Retry)),
                Fate::Retry,
            ),
            (
                "blocking, failed, no retries left",
                blocking(exhausted),
                Fate::Block,
            ),
            (
                "blocking, failed on the last receive",
                blocking(last_receive),
                Fate::Block,
            ),
            (
                "blocking, rejected: still a dead letter",
                blocking(failed(Verdict::Reject)),
                Fate::DeadLetter { rejected: true },
            ),
            (
                "blocking, rejected without a dead-letter queue, no retries left",
                blocking(no_dead_letters(Facts {
                    verdict: Some(Verdict::Reject),
                    ..exhausted
                })),
                Fate::Block,
            ),
            (
                "blocking, failed while stopping",
                blocking(stopping(Verdict::Retry)),
                Fate::HandBack(HandBack::Stopping),
            ),
        ];
        for (case, facts, expected) in rows {
            assert_eq!(fate(facts), expected, "{case}: {facts:?}");
        }
        assert_eq!(
            fate(Facts {
                running: false,
                ..last_receive
            }),
            Fate::HandBack(HandBack::Stopping),
            "nothing moves to the dead-letter queue while stopping"
        );
    }

    #[test]
    fn only_failures_for_good_end_a_delivery() {
        let ends: Vec<bool> = [
            Fate::Done,
            Fate::NotStarted,
            Fate::Wait(None),
            Fate::Retry,
            Fate::Block,
            Fate::DeadLetter { rejected: true },
            Fate::HandBack(HandBack::Exhausted),
            Fate::HandBack(HandBack::Stopping),
            Fate::HandBack(HandBack::Waiting(None)),
        ]
        .into_iter()
        .map(Fate::ends_the_delivery)
        .collect();
        assert_eq!(
            ends,
            [false, false, false, false, false, true, true, true, false]
        );
    }
}
