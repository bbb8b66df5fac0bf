//! How long a call may take: the connect, attempt and whole-call timeouts,
//! and what an error says when one of them ran out.

use std::time::Duration;

use aws_sdk_sqs::config::timeout::TimeoutConfig;

/// Opening a connection. A listening endpoint accepts within milliseconds;
/// one that is down or filtered should fail fast so the caller can report it
/// or back off.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One attempt of any call but a long poll, from sending the request to
/// reading the whole answer. SQS answers in milliseconds: an endpoint silent
/// for this long (it accepted the connection and never answered) is stuck,
/// and a fresh attempt on a new connection is the way out.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Added to a receive's long poll for one attempt. SQS answers at the end of
/// the wait at the latest, so past it a receive gets the same allowance as
/// any other call.
pub(crate) const RECEIVE_MARGIN: Duration = Duration::from_secs(5);

/// The SDK's standard retry makes up to three attempts, pausing at most 1 s
/// and then 2 s between them. The whole call is bounded by that much, so it
/// returns even when every attempt hangs, and the engine above can decide
/// what to do next.
const ATTEMPTS: u32 = 3;
const RETRY_PAUSES: Duration = Duration::from_secs(3);

/// How long one call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline {
    /// One attempt.
    pub(crate) attempt: Duration,
    /// The whole call, the SDK's own retries included.
    pub(crate) total: Duration,
}

impl Deadline {
    /// Every call but a receive.
    pub(crate) const CALL: Deadline = Deadline::per_attempt(ATTEMPT_TIMEOUT);

    /// A receive that long-polls for `wait_seconds`.
    pub(crate) fn receive(wait_seconds: u32) -> Deadline {
        Deadline::per_attempt(
            Duration::from_secs(wait_seconds.into()).saturating_add(RECEIVE_MARGIN),
        )
    }

    const fn per_attempt(attempt: Duration) -> Deadline {
        Deadline {
            attempt,
            total: attempt
                .saturating_mul(ATTEMPTS)
                .saturating_add(RETRY_PAUSES),
        }
    }

    /// The SDK's settings for this deadline.
    pub(crate) fn timeout_config(self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(self.attempt)
            .operation_timeout(self.total)
            .build()
    }

    /// What to tell a person whose call ran out of time.
    pub(crate) fn exceeded(self) -> String {
        format!(
            "timed out: no answer within {} per attempt, {} in all",
            seconds(self.attempt),
            seconds(self.total)
        )
    }
}

/// `5 s`, `1.5 s`.
pub(crate) fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_is_bounded_in_all() {
        assert_eq!(Deadline::CALL.attempt, Duration::from_secs(5));
        assert_eq!(Deadline::CALL.total, Duration::from_secs(18));
        let receive = Deadline::receive(20);
        assert_eq!(receive.attempt, Duration::from_secs(25));
        assert_eq!(receive.total, Duration::from_secs(78));
        let config = receive.timeout_config();
        assert_eq!(config.connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(config.operation_attempt_timeout(), Some(receive.attempt));
        assert_eq!(config.operation_timeout(), Some(receive.total));
    }

    #[test]
    fn a_timeout_reads_in_seconds() {
        assert_eq!(
            Deadline::CALL.exceeded(),
            "timed out: no answer within 5 s per attempt, 18 s in all"
        );
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
    }
}
