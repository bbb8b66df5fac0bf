//! The entries of a batch call: how many one may hold, and what became of
//! each, from SQS's answer, with its error code classified.

use aws_sdk_sqs::types::BatchResultErrorEntry;

use crate::{Error, MAX_BATCH_ENTRIES};

/// A failed entry of a batch call; `index` is its position in the slice
/// given to the call. A batch call returns at most one per entry, in index
/// order. `code` is SQS's error code, or [`MALFORMED_RESPONSE`] when the
/// response does not say clearly that the entry succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFailure {
    /// Position of the entry in the slice given to the batch call.
    pub index: usize,
    /// SQS's error code for the entry (e.g. `InvalidParameterValue`), or
    /// [`MALFORMED_RESPONSE`].
    pub code: String,
    /// SQS's explanation (empty when it gave none), or what was wrong with
    /// the response.
    pub message: String,
}

/// What a failed entry means for whoever sent it, told by its error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryFailureKind {
    /// SQS no longer accepts the entry's receipt handle (expired, or the
    /// message was received again since): the message is not the caller's
    /// any more, and the same entry fails again.
    ReceiptHandleGone,
    /// The response did not account for the entry exactly once
    /// ([`MALFORMED_RESPONSE`]): whether SQS carried it out is unknown.
    Unaccounted,
    /// Any other code: nothing more is known of the entry than that it
    /// failed this time.
    Other,
}

impl EntryFailure {
    /// What the failure means, by its code.
    pub fn kind(&self) -> EntryFailureKind {
        if self.code == MALFORMED_RESPONSE {
            return EntryFailureKind::Unaccounted;
        }
        // SQS's JSON protocol gives `ReceiptHandleIsInvalid`, its
        // query-compatible header `AWS.SimpleQueueService.` names, and an
        // expired handle is an `InvalidParameterValue`; LocalStack also says
        // `MessageNotInflight` of a message no longer in flight.
        let handle_gone = [
            "ReceiptHandle",
            "InvalidParameterValue",
            "MessageNotInflight",
        ]
        .iter()
        .any(|code| self.code.contains(code));
        if handle_gone {
            EntryFailureKind::ReceiptHandleGone
        } else {
            EntryFailureKind::Other
        }
    }
}

/// The code of an [`EntryFailure`] for an entry that the response of a
/// batch call does not account for exactly once (missing, listed as both
/// succeeded and failed): whether SQS carried it out is unknown.
pub const MALFORMED_RESPONSE: &str = "MalformedResponse";

pub(crate) fn check_batch_len(len: usize) -> Result<(), Error> {
    if (1..=MAX_BATCH_ENTRIES).contains(&len) {
        Ok(())
    } else {
        Err(Error::InvalidParameter {
            message: format!("a batch holds 1 to {MAX_BATCH_ENTRIES} entries, not {len}"),
        })
    }
}

/// What became of each of the `sent` entries of a batch (ids `0`, `1`…),
/// from the ids the response lists as successful and its failed entries.
/// Every entry must be in exactly one of the two lists: one that is in
/// neither or in both fails with [`MALFORMED_RESPONSE`], since whether SQS
/// carried it out is unknown. Ids the request did not have are ignored.
pub(crate) fn entry_failures(
    sent: usize,
    successful: impl IntoIterator<Item = String>,
    failed: Vec<BatchResultErrorEntry>,
) -> Vec<EntryFailure> {
    #[derive(Default)]
    enum Reported {
        #[default]
        Nothing,
        Succeeded,
        Failed {
            code: String,
            message: String,
        },
        Both,
    }
    let index_of = |id: &str| {
        id.parse::<usize>()
            .ok()
            .filter(|&index| index < sent && index.to_string() == id)
    };
    let mut reported: Vec<Reported> = (0..sent).map(|_| Reported::default()).collect();
    let mut unknown = Vec::new();
    for id in successful {
        match index_of(&id) {
            Some(index) => {
                let slot = &mut reported[index];
                *slot = match std::mem::take(slot) {
                    Reported::Nothing | Reported::Succeeded => Reported::Succeeded,
                    Reported::Failed { .. } | Reported::Both => Reported::Both,
                }
            }
            None => unknown.push(id),
        }
    }
    for entry in failed {
        match index_of(&entry.id) {
            Some(index) => {
                let slot = &mut reported[index];
                *slot = match std::mem::take(slot) {
                    Reported::Nothing => Reported::Failed {
                        code: entry.code,
                        message: entry.message.unwrap_or_default(),
                    },
                    // The first failure reported for an entry stands.
                    failed @ Reported::Failed { .. } => failed,
                    Reported::Succeeded | Reported::Both => Reported::Both,
                }
            }
            None => unknown.push(entry.id),
        }
    }
    let unknown = if unknown.is_empty() {
        String::new()
    } else {
        tracing::warn!(
            ?unknown,
            "a batch response names entries that were not sent"
        );
        format!(
            " (it names entries that were not sent: {})",
            unknown.join(", ")
        )
    };
    let malformed = |index, message: String| EntryFailure {
        index,
        code: MALFORMED_RESPONSE.to_owned(),
        message,
    };
    reported
        .into_iter()
        .enumerate()
        .filter_map(|(index, reported)| match reported {
            Reported::Succeeded => None,
            Reported::Failed { code, message } => Some(EntryFailure {
                index,
                code,
                message,
            }),
            Reported::Nothing => Some(malformed(
                index,
                format!(
                    "the response says neither that this entry succeeded nor that it failed{unknown}"
                ),
            )),
            Reported::Both => Some(malformed(
                index,
                "the response says both that this entry succeeded and that it failed".to_owned(),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(id: &str, code: &str) -> BatchResultErrorEntry {
        BatchResultErrorEntry::builder()
            .id(id)
            .code(code)
            .message("refused")
            .sender_fault(true)
            .build()
            .unwrap()
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    #[test]
    fn entry_results_report_what_sqs_refused() {
        let failures = entry_failures(
            3,
            ids(&["0", "2"]),
            vec![failed("1", "InvalidParameterValue")],
        );
        assert_eq!(
            failures,
            [EntryFailure {
                index: 1,
                code: "InvalidParameterValue".to_owned(),
                message: "refused".to_owned(),
            }]
        );
        assert!(entry_failures(2, ids(&["1", "0"]), vec![]).is_empty());
    }

    #[test]
    fn an_entry_missing_from_the_response_fails() {
        let failures = entry_failures(3, ids(&["0"]), vec![failed("2", "X")]);
        let found: Vec<_> = failures
            .iter()
            .map(|f| (f.index, f.code.as_str()))
            .collect();
        assert_eq!(found, [(1, MALFORMED_RESPONSE), (2, "X")]);
        assert!(failures[0].message.contains("neither"), "{failures:?}");
        // An empty answer accounts for nothing.
        assert_eq!(entry_failures(2, ids(&[]), vec![]).len(), 2);
    }

    #[test]
    fn bad_or_unknown_ids_never_panic_and_never_count_as_success() {
        let failures = entry_failures(
            2,
            ids(&["0", "x", "+1", "01", "7"]),
            vec![
                failed("not-a-number", "X"),
                failed(&usize::MAX.to_string(), "X"),
            ],
        );
        let found: Vec<_> = failures
            .iter()
            .map(|f| (f.index, f.code.as_str()))
            .collect();
        assert_eq!(found, [(1, MALFORMED_RESPONSE)]);
        assert!(
            failures[0].message.ends_with("(it names entries that were not sent: x, +1, 01, 7, not-a-number, 18446744073709551615)"),
            "{failures:?}"
        );
    }

    #[test]
    fn an_entry_failure_is_classified_by_its_code() {
        let kind = |code: &str| {
            EntryFailure {
                index: 0,
                code: code.to_owned(),
                message: String::new(),
            }
            .kind()
        };
        for code in [
            "ReceiptHandleIsInvalid",
            "AWS.SimpleQueueService.ReceiptHandleIsInvalid",
            "InvalidParameterValue",
            "AWS.SimpleQueueService.MessageNotInflight",
        ] {
            assert_eq!(kind(code), EntryFailureKind::ReceiptHandleGone, "{code}");
        }
        assert_eq!(kind(MALFORMED_RESPONSE), EntryFailureKind::Unaccounted);
        assert_eq!(kind("InternalError"), EntryFailureKind::Other);
    }

    #[test]
    fn an_entry_reported_both_ways_fails() {
        let failures = entry_failures(1, ids(&["0"]), vec![failed("0", "X")]);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].code, MALFORMED_RESPONSE);
        assert!(failures[0].message.contains("both"), "{failures:?}");
        // Reported twice as failed: one failure, the first.
        let failures = entry_failures(1, ids(&[]), vec![failed("0", "A"), failed("0", "B")]);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].code, "A");
    }
}
