//! What SQS's answers and the SDK's failures mean: an SDK error becomes an
//! [`Error`] by its kind, HTTP status and error code.

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

use crate::Error;
use crate::deadline::{CONNECT_TIMEOUT, Deadline, seconds};

/// What a call was about, for the error it may become.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub(crate) operation: &'static str,
    /// The queue URL or name the call was about, for the message.
    pub(crate) queue: &'a str,
    /// Where the request went.
    pub(crate) endpoint: &'a str,
    /// The limits the call ran under, to say which one ran out.
    pub(crate) deadline: Deadline,
}

/// Turns an SDK error into ours by its structure: the kind of failure, the
/// HTTP status and the error code SQS gave.
pub(crate) fn classify<E>(err: SdkError<E, HttpResponse>, call: &Call<'_>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let unreachable = |detail: String| Error::Unreachable {
        endpoint: call.endpoint.to_owned(),
        detail,
    };
    match &err {
        SdkError::ServiceError(service) => {
            let raw = service.raw();
            let answer = Answer {
                status: raw.status().as_u16(),
                code: err.code(),
                message: err.message(),
                body: raw.body().bytes(),
            };
            classify_answer(&answer, call)
        }
        SdkError::TimeoutError(_) => unreachable(call.deadline.exceeded()),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => unreachable(format!(
            "timed out: no connection within {}",
            seconds(CONNECT_TIMEOUT)
        )),
        // The SDK resolves credentials while dispatching; a failure to find
        // them has no kind of its own, only its text.
        SdkError::DispatchFailure(failure) if !failure.is_io() && mentions_credentials(&err) => {
            Error::Credentials {
                message: format!(
                    "none were found in the environment, the AWS profile, or instance metadata (the last one tried said: {})",
                    innermost_cause(&err)
                ),
            }
        }
        SdkError::DispatchFailure(_) => unreachable(innermost_cause(&err)),
        SdkError::ResponseError(response) => {
            let raw = response.raw();
            let answer = Answer {
                status: raw.status().as_u16(),
                code: None,
                message: None,
                body: raw.body().bytes(),
            };
            unreachable(format!(
                "the answer was cut off or unreadable ({}): {}",
                answer.excerpt(),
                innermost_cause(&err)
            ))
        }
        SdkError::ConstructionFailure(_) => Error::Other {
            operation: call.operation,
            message: format!("the request could not be built: {}", innermost_cause(&err)),
        },
        _ => Error::Other {
            operation: call.operation,
            message: innermost_cause(&err),
        },
    }
}

/// An HTTP answer to a request that failed, as far as it could be read.
#[derive(Debug, Clone, Copy)]
struct Answer<'a> {
    status: u16,
    /// The error code, when the body was an SQS error.
    code: Option<&'a str>,
    message: Option<&'a str>,
    body: Option<&'a [u8]>,
}

/// How much of a body that is not an SQS answer goes into the error.
const EXCERPT_CHARS: usize = 100;

impl Answer<'_> {
    /// `HTTP 502: <html>…`, whitespace collapsed, cut at [`EXCERPT_CHARS`].
    fn excerpt(&self) -> String {
        let status = self.status;
        // The SDK keeps no body it could not read to the end.
        let Some(bytes) = self.body else {
            return format!("HTTP {status}");
        };
        let text = String::from_utf8_lossy(bytes)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if text.is_empty() {
            return format!("HTTP {status}, empty body");
        }
        if let Some(title) = html_title(&text) {
            return format!("HTTP {status}, an HTML page titled \"{title}\"");
        }
        match text.char_indices().nth(EXCERPT_CHARS) {
            Some((cut, _)) => format!("HTTP {status}: {}…", &text[..cut]),
            None => format!("HTTP {status}: {text}"),
        }
    }
}

/// The title of an HTML page: what a person would recognise it by.
fn html_title(text: &str) -> Option<&str> {
    let lower = text.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = start + lower[start..].find("</title>")?;
    let title = text[start..end].trim();
    (!title.is_empty()).then_some(title)
}

/// Error codes that mean "slow down". SQS's JSON protocol gives its own
/// codes, its query-compatible header the older ones; throttling in front of
/// SQS can use the generic AWS codes.
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "RequestThrottled",
    "Throttling",
    "TooManyRequestsException",
    "KmsThrottled",
    "KMS.ThrottlingException",
];

/// Error codes of a failure on SQS's side.
const SERVER_FAILURE_CODES: &[&str] = &["InternalError", "InternalFailure", "ServiceUnavailable"];

fn classify_answer(answer: &Answer<'_>, call: &Call<'_>) -> Error {
    let status = answer.status;
    match answer.code {
        Some(code) if THROTTLING_CODES.contains(&code) => Error::Throttled {
            message: answer.message.unwrap_or(code).to_owned(),
        },
        None if status == 429 => Error::Throttled {
            message: answer.excerpt(),
        },
        Some(code) if status == 429 => Error::Throttled {
            message: format!("{code}: {}", answer.message.unwrap_or_default()),
        },
        Some(code) if SERVER_FAILURE_CODES.contains(&code) || status >= 500 => {
            Error::ServiceUnavailable {
                message: format!(
                    "HTTP {status} {code}: {}",
                    answer.message.unwrap_or_default()
                ),
            }
        }
        // A server error without an SQS error code may come from a proxy in
        // front of SQS (worth retrying) or from something that is not SQS.
        None if status >= 500 => Error::ServiceUnavailable {
            message: format!(
                "{}, without an SQS error code: is {} SQS?",
                answer.excerpt(),
                call.endpoint
            ),
        },
        Some(code) => classify_code(
            code,
            answer.message.unwrap_or(code).to_owned(),
            call.operation,
            call.queue,
        ),
        // Neither a result nor an SQS error: something else answers there
        // (a proxy, a captive portal, another service).
        None => Error::Unreachable {
            endpoint: call.endpoint.to_owned(),
            detail: format!("the answer is not from SQS ({})", answer.excerpt()),
        },
    }
}

fn classify_code(code: &str, message: String, operation: &'static str, queue: &str) -> Error {
    match code {
        "QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue" => {
            Error::QueueDoesNotExist {
                queue: queue.to_owned(),
            }
        }
        "InvalidClientTokenId"
        | "UnrecognizedClientException"
        | "SignatureDoesNotMatch"
        | "InvalidSecurity"
        | "ExpiredToken"
        | "AccessDenied"
        | "AccessDeniedException"
        | "MissingAuthenticationToken"
        | "IncompleteSignature" => Error::Credentials { message },
        "InvalidParameterValue"
        | "MissingParameter"
        | "InvalidAttributeName"
        | "InvalidAttributeValue"
        | "InvalidParameterCombination"
        | "InvalidAddress"
        | "InvalidMessageContents"
        | "QueueAlreadyExists"
        | "QueueNameExists"
        | "ValidationError"
        | "AWS.SimpleQueueService.BatchRequestTooLong"
        | "BatchRequestTooLong" => Error::InvalidParameter { message },
        _ => Error::Other {
            operation,
            message: format!("{code}: {message}"),
        },
    }
}

/// Whether any error in the chain speaks of credentials.
fn mentions_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if err.to_string().to_lowercase().contains("credential") {
            return true;
        }
        cause = err.source();
    }
    false
}

/// The innermost cause is what a user can act on ("Connection refused").
fn innermost_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::error::ConnectorError;

    use super::*;

    const CALL: Call<'static> = Call {
        operation: "ReceiveMessage",
        queue: "http://sqs.test/1/q.fifo",
        endpoint: "http://sqs.test",
        deadline: Deadline::CALL,
    };

    fn answer(status: u16, code: Option<&str>, body: &str) -> Error {
        let answer = Answer {
            status,
            code,
            message: code.map(|_| "the message"),
            body: Some(body.as_bytes()),
        };
        classify_answer(&answer, &CALL)
    }

    #[test]
    fn throttling_is_told_by_code_or_429() {
        for code in THROTTLING_CODES {
            let err = answer(400, Some(code), "");
            assert!(matches!(err, Error::Throttled { .. }), "{code}: {err:?}");
        }
        let err = answer(429, None, "slow down");
        assert!(matches!(&err, Error::Throttled { message } if message == "HTTP 429: slow down"));
        let err = answer(429, Some("SomethingElse"), "");
        assert!(matches!(err, Error::Throttled { .. }), "{err:?}");
        assert!(err.is_transient());
    }

    #[test]
    fn server_errors_are_told_by_code_or_5xx() {
        for code in SERVER_FAILURE_CODES {
            let err = answer(400, Some(code), "");
            assert!(
                matches!(err, Error::ServiceUnavailable { .. }),
                "{code}: {err:?}"
            );
        }
        let err = answer(503, Some("Whatever"), "");
        assert!(
            matches!(&err, Error::ServiceUnavailable { message } if message == "HTTP 503 Whatever: the message"),
            "{err:?}"
        );
        assert!(err.is_transient());
        let err = answer(
            502,
            None,
            "<html>\n  <title>502 Bad Gateway</title>\n</html>",
        );
        assert_eq!(
            err.to_string(),
            "SQS failed to serve the request: HTTP 502, an HTML page titled \"502 Bad Gateway\", without an SQS error code: is http://sqs.test SQS?"
        );
    }

    #[test]
    fn an_answer_that_is_not_from_sqs_is_unreachable_and_readable() {
        let page = format!(
            "<!DOCTYPE html><html><body>{}</body></html>",
            "x".repeat(300)
        );
        let err = answer(200, None, &page);
        let Error::Unreachable { detail, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(detail.starts_with("the answer is not from SQS (HTTP 200: <!DOCTYPE html>"));
        let titled = answer(200, None, "<HTML><head><Title> Login </Title></head>…");
        assert!(
            titled
                .to_string()
                .ends_with("(HTTP 200, an HTML page titled \"Login\")"),
            "{titled}"
        );
        assert!(detail.chars().count() < 150, "{detail}");
        assert!(err.is_transient());
        let err = answer(403, None, "");
        assert!(err.to_string().ends_with("(HTTP 403, empty body)"), "{err}");
        let unread = Answer {
            status: 200,
            code: None,
            message: None,
            body: None,
        };
        assert_eq!(unread.excerpt(), "HTTP 200");
    }

    #[test]
    fn known_codes_keep_their_meaning() {
        assert!(matches!(
            answer(400, Some("AWS.SimpleQueueService.NonExistentQueue"), ""),
            Error::QueueDoesNotExist { queue } if queue == CALL.queue
        ));
        assert!(matches!(
            answer(400, Some("InvalidParameterValue"), ""),
            Error::InvalidParameter { .. }
        ));
        assert!(matches!(
            answer(403, Some("InvalidClientTokenId"), ""),
            Error::Credentials { .. }
        ));
        let err = answer(400, Some("OverLimit"), "");
        assert_eq!(
            err.to_string(),
            "ReceiveMessage failed: OverLimit: the message"
        );
        assert!(!err.is_transient());
    }

    type ListQueuesError =
        SdkError<aws_sdk_sqs::operation::list_queues::ListQueuesError, HttpResponse>;

    #[test]
    fn a_timeout_says_how_long_it_waited() {
        let err = classify(ListQueuesError::timeout_error("elapsed"), &CALL);
        assert!(
            matches!(&err, Error::Unreachable { detail, .. } if *detail == CALL.deadline.exceeded()),
            "{err:?}"
        );
        let connecting = ConnectorError::timeout("connect timed out".into());
        let err = classify(ListQueuesError::dispatch_failure(connecting), &CALL);
        assert_eq!(
            err.to_string(),
            "cannot reach SQS at http://sqs.test: timed out: no connection within 3 s"
        );
    }

    #[test]
    fn a_failed_connection_gives_its_innermost_cause() {
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let err = classify(
            ListQueuesError::dispatch_failure(ConnectorError::io(refused.into())),
            &CALL,
        );
        assert!(
            matches!(&err, Error::Unreachable { detail, .. } if detail == "Connection refused"),
            "{err:?}"
        );
    }

    #[test]
    fn missing_credentials_are_told_apart() {
        let missing =
            ConnectorError::other("no providers in chain provided credentials".into(), None);
        let err = classify(ListQueuesError::dispatch_failure(missing), &CALL);
        assert!(
            matches!(&err, Error::Credentials { message } if message.ends_with("(the last one tried said: no providers in chain provided credentials)")),
            "{err:?}"
        );
        assert!(!err.is_transient());
    }
}
