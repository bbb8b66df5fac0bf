//! The http handler: POSTs each message to a service with the headers of
//! Elastic Beanstalk's worker daemon, and reads the response status as the
//! message's outcome.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};

use fifo_handler::{
    BatchOutcome, Handler, HandlerError, Message, Outcome, Reject, RetryLater, StatusError,
};

use crate::lambda::{self, EventSource};
use crate::trace;

/// sqsd's `User-Agent` starts `aws-sqsd/`, which some worker apps check.
const USER_AGENT_VALUE: &str = concat!("aws-sqsd/fifo-", env!("CARGO_PKG_VERSION"));

/// The `User-Agent` of Lambda's events: no sqsd there.
const LAMBDA_USER_AGENT: &str = concat!("fifo/", env!("CARGO_PKG_VERSION"));

/// How much of a failed response's body goes into the error (and so into a
/// dead letter's reason).
const BODY_IN_ERROR: usize = 256;

/// How often [`HttpHandler::wait_until_ready`] asks again, how long one
/// GET may take, and how often it says it is still waiting.
const READY_POLL: Duration = Duration::from_millis(500);
const READY_TIMEOUT: Duration = Duration::from_secs(5);
const READY_RETOLD: Duration = Duration::from_secs(30);

/// Bytes of a response body read to keep its connection for the next
/// request; a longer body closes the connection instead.
const BODY_DRAINED: usize = 1024 * 1024;

/// How an [`HttpHandler`] talks to its service.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The queue's name, sent as `X-Aws-Sqsd-Queue`.
    pub queue_name: String,
    /// The `Content-Type` of each request.
    pub content_type: String,
    /// The response status that rejects a message (for example 422).
    pub reject_status: u16,
    /// Connections kept alive for reuse: as many as requests run at once.
    pub connections: usize,
}

/// POSTs each message's body to a URL, one request per message, with the
/// headers of Elastic Beanstalk's worker daemon (`sqsd`), so a worker app
/// written for it runs unchanged, plus fifo's own:
///
/// | header | value |
/// |---|---|
/// | `User-Agent` | `aws-sqsd/fifo-VERSION` |
/// | `X-Aws-Sqsd-Msgid` | the message id |
/// | `X-Aws-Sqsd-Queue` | the queue's name |
/// | `X-Aws-Sqsd-First-Received-At` | first delivery, ISO 8601 UTC |
/// | `X-Aws-Sqsd-Sent-At` | when SQS accepted it, ISO 8601 UTC |
/// | `X-Aws-Sqsd-Sender-Id` | who sent it (SQS's `SenderId`) |
/// | `X-Aws-Sqsd-Receive-Count` | deliveries so far, this one included |
/// | `X-Aws-Sqsd-Attr-NAME` | each String or Number message attribute |
/// | `X-Fifo-Group-Id` | the message group id |
/// | `X-Fifo-Sequence-Number` | SQS's sequence number |
/// | `X-Fifo-Deduplication-Id` | the de-duplication id, when known |
/// | `X-Fifo-Attempt` | the attempt in this delivery, from 1 |
/// | `traceparent` | the sender's trace context, when it sent one |
///
/// The answer decides: any 2xx succeeds; the reject status rejects
/// ([`Reject`]); 429 or 503 with `Retry-After` asks to retry after that
/// delay ([`RetryLater`]); any other status (redirects are not followed),
/// a refused connection or a network error fails under the retry policy. The engine's handler
/// timeout bounds each request (dropping it closes its connection).
#[derive(Debug, Clone)]
pub struct HttpHandler {
    client: reqwest::Client,
    url: reqwest::Url,
    /// The URL without its user and password, for errors and logs.
    shown_url: String,
    queue_name: HeaderValue,
    content_type: HeaderValue,
    reject_status: StatusCode,
    /// Where the messages come from, when they are POSTed as Lambda's SQS
    /// event.
    lambda: Option<EventSource>,
}

/// Why an [`HttpHandler`] cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL does not parse, or is not http or https.
    #[error("{url:?} is not an http:// or https:// URL{why}")]
    BadUrl {
        /// As given.
        url: String,
        /// What is wrong with it, after a colon; empty for a scheme
        /// other than http or https.
        why: String,
    },
    /// A header value given cannot be sent (it has control characters).
    #[error("{what} {value:?} cannot be sent as an HTTP header")]
    BadHeader {
        /// Which option.
        what: &'static str,
        /// As given.
        value: String,
    },
    /// The reject status is not a status from 100 to 599.
    #[error("{0} is not an HTTP status (100 to 599)")]
    BadStatus(u16),
    /// The HTTP client could not be set up (no TLS roots, for example).
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
}

/// Parses `url` as an http or https URL.
pub fn http_url(url: &str) -> Result<reqwest::Url, HttpError> {
    let bad = |why: String| HttpError::BadUrl {
        url: url.to_owned(),
        why,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(format!(": {e}")))?;
    match parsed.scheme() {
        "http" | "https" => Ok(parsed),
        _ => Err(bad(String::new())),
    }
}

impl HttpHandler {
    /// A handler POSTing to `url`.
    pub fn new(url: &str, options: HttpOptions) -> Result<HttpHandler, HttpError> {
        let header = |what, value: &str| {
            HeaderValue::from_str(value).map_err(|_| HttpError::BadHeader {
                what,
                value: value.to_owned(),
            })
        };
        let reject_status = StatusCode::from_u16(options.reject_status)
            .map_err(|_| HttpError::BadStatus(options.reject_status))?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(options.connections)
            // A redirect is the app's answer, not a place to resend to:
            // followed, a POST becomes a GET whose 200 would delete a
            // message that was never handled.
            .redirect(reqwest::redirect::Policy::none())
            // A worker app behind us may be slow to answer, never slow to
            // accept: a connection that takes longer is a failure.
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(HttpError::Client)?;
        let url = http_url(url)?;
        Ok(HttpHandler {
            client,
            shown_url: shown(&url),
            url,
            queue_name: header("the queue name", &options.queue_name)?,
            content_type: header("the content type", &options.content_type)?,
            reject_status,
            lambda: None,
        })
    }

    /// POSTs Lambda's SQS event instead, for an app written for AWS Lambda
    /// (directly, or behind Lambda Web Adapter's pass-through route): one
    /// request per call, its body the event (one group's messages, in
    /// order; one message without batches), with `X-Fifo-Group-Id` and the
    /// first message's `traceparent`. A 2xx answer's body is the function's
    /// answer (`{"batchItemFailures": [{"itemIdentifier": ID}]}`: the
    /// messages before the first one listed succeeded, that one failed,
    /// the rest run again after it; an empty body or nothing listed is
    /// success of all). Any other status fails the whole batch, read as
    /// for one message. `source` names the queue in each record.
    pub fn lambda_events(mut self, source: EventSource) -> HttpHandler {
        self.lambda = Some(source);
        self
    }

    /// Waits until `url` answers a GET with 2xx (a sidecar's app is up),
    /// asking every half second (a GET unanswered for 5 s counts as a no);
    /// `waiting` is called when the first answer is not 2xx and every
    /// 30 s after, with the URL (without credentials) and what the answer was.
    pub async fn wait_until_ready(&self, url: &reqwest::Url, mut waiting: impl FnMut(&str, &str)) {
        let shown_url = shown(url);
        let mut told: Option<tokio::time::Instant> = None;
        loop {
            let asked = self.client.get(url.clone()).timeout(READY_TIMEOUT).send();
            let answer = match asked.await {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => format!("it answered {}", response.status()),
                Err(e) => error_chain(&e.without_url()),
            };
            if told.is_none_or(|at| at.elapsed() >= READY_RETOLD) {
                waiting(&shown_url, &answer);
                told = Some(tokio::time::Instant::now());
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    fn headers(&self, message: &Message) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, self.content_type.clone());
        headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        headers.insert("x-aws-sqsd-queue", self.queue_name.clone());
        let mut text = |name: &str, value: &str| {
            // Values that cannot be a header (control characters) are left
            // out rather than failing the message: the body is what counts.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        };
        text("x-aws-sqsd-msgid", &message.id);
        text(
            "x-aws-sqsd-receive-count",
            &message.receive_count.to_string(),
        );
        if message.first_received_ms > 0 {
            text(
                "x-aws-sqsd-first-received-at",
                &iso_8601(message.first_received_ms),
            );
        }
        if message.sent_timestamp_ms > 0 {
            text("x-aws-sqsd-sent-at", &iso_8601(message.sent_timestamp_ms));
        }
        if let Some(sender) = &message.sender_id {
            text("x-aws-sqsd-sender-id", sender);
        }
        for (name, value) in &message.attributes {
            text(&format!("x-aws-sqsd-attr-{name}"), value);
        }
        text("x-fifo-group-id", &message.group_id);
        text("x-fifo-sequence-number", &message.sequence_number);
        if let Some(id) = &message.deduplication_id {
            text("x-fifo-deduplication-id", id);
        }
        text("x-fifo-attempt", &message.attempt.to_string());
        if let Some(parent) = trace::traceparent(message) {
            text("traceparent", &parent);
        }
        headers
    }
}

impl Handler for HttpHandler {
    async fn handle(&self, message: &Message) -> Outcome {
        if let Some(source) = &self.lambda {
            return lambda::single(self.post_event(&[message], source).await);
        }
        let response = self.post(self.headers(message), message.body.clone());
        let mut response = response.await?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.refused(response, "").await);
        }
        // A body cut off mid-way: the app may have failed before it
        // committed, so this is no success.
        match drain(&mut response, 0).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.cut_off(status, e, "")),
        }
    }

    async fn handle_batch(&self, messages: &[&Message]) -> BatchOutcome {
        if let Some(source) = &self.lambda {
            return self.post_event(messages, source).await;
        }
        for (succeeded, message) in messages.iter().enumerate() {
            if let Err(error) = self.handle(message).await {
                return BatchOutcome::failed_at(succeeded, error);
            }
        }
        BatchOutcome::all(messages.len())
    }
}

impl HttpHandler {
    /// POSTs `body`; a request that got no answer is the error.
    async fn post(
        &self,
        headers: HeaderMap,
        body: impl Into<reqwest::Body>,
    ) -> Result<reqwest::Response, HandlerError> {
        let sent = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await;
        sent.map_err(|e| {
            let error = error_chain(&e.without_url());
            format!("POST {}: {error}", self.shown_url).into()
        })
    }

    /// POSTs Lambda's SQS event for `messages` and reads the answer.
    async fn post_event(&self, messages: &[&Message], source: &EventSource) -> BatchOutcome {
        let Some(first) = messages.first() else {
            return BatchOutcome::all(0);
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, self.content_type.clone());
        headers.insert(USER_AGENT, HeaderValue::from_static(LAMBDA_USER_AGENT));
        if let Ok(group) = HeaderValue::from_str(&first.group_id) {
            headers.insert("x-fifo-group-id", group);
        }
        if let Some(parent) = trace::traceparent(first).and_then(|p| HeaderValue::from_str(&p).ok())
        {
            headers.insert("traceparent", parent);
        }
        // A failure of the request is one of the whole batch.
        let whole = lambda::whole_batch(messages.len());
        let mut response = match self.post(headers, lambda::event(messages, source)).await {
            Ok(response) => response,
            Err(error) => return BatchOutcome::failed_at(0, format!("{error}{whole}")),
        };
        let status = response.status();
        if !status.is_success() {
            return BatchOutcome::failed_at(0, self.refused(response, &whole).await);
        }
        let who = format!("POST {}", self.shown_url);
        match drain(&mut response, lambda::MAX_ANSWER + 1).await {
            Ok(answer) if answer.len() > lambda::MAX_ANSWER => lambda::too_long(&who),
            Ok(answer) => lambda::outcome(&answer, messages, &who),
            Err(e) => BatchOutcome::failed_at(0, self.cut_off(status, e, &whole)),
        }
    }

    /// The failure a 2xx answer whose body was cut off is, `note` ending
    /// its text.
    fn cut_off(&self, status: StatusCode, error: reqwest::Error, note: &str) -> HandlerError {
        StatusError::new(
            format!("HTTP {}", status.as_u16()),
            format!(
                "POST {} answered {status} but its body was cut off ({}){note}",
                self.shown_url,
                error_chain(&error.without_url())
            ),
        )
        .into()
    }

    /// The failure an answer that is not 2xx is, `note` ending its text.
    async fn refused(&self, mut response: reqwest::Response, note: &str) -> HandlerError {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| retry_after(value.to_str().ok()?, SystemTime::now()));
        // Some of the body, for the log and a dead letter's reason, on one
        // line (a text log line must not be split by the app's newlines).
        let body = drain(&mut response, BODY_IN_ERROR)
            .await
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&body);
        let mut error = format!("POST {} answered {status}", self.shown_url);
        if !body.trim().is_empty() {
            error += &format!(": {}", crate::log_line::escape_controls(body.trim()));
        }
        error += note;
        let error = StatusError::new(format!("HTTP {}", status.as_u16()), error);
        failure(status, self.reject_status, retry_after, error)
    }
}

/// Reads the response body to its end (up to [`BODY_DRAINED`] bytes, or
/// `keep` if more), so
/// that its connection can carry the next request; returns its first
/// `keep` bytes, or the error that cut the body off.
async fn drain(response: &mut reqwest::Response, keep: usize) -> Result<Vec<u8>, reqwest::Error> {
    let (mut kept, mut read) = (Vec::new(), 0);
    while read < BODY_DRAINED.max(keep)
        && let Some(chunk) = response.chunk().await?
    {
        read += chunk.len();
        let room = keep.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..room.min(chunk.len())]);
    }
    Ok(kept)
}

/// `url` without a user or password: errors end up in logs and dead
/// letters.
fn shown(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.to_string()
}

/// What a status that is not 2xx means.
fn failure(
    status: StatusCode,
    reject_status: StatusCode,
    retry_after: Option<Duration>,
    error: StatusError,
) -> HandlerError {
    let busy = status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
    match retry_after {
        _ if status == reject_status => Reject::because(error).into(),
        Some(delay) if busy => RetryLater::after(delay, error).into(),
        _ => error.into(),
    }
}

/// A `Retry-After` value: seconds, or an HTTP date (a date already past
/// is no wait).
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value.trim()).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `2026-11-26T09:30:00Z` from milliseconds since the epoch, as `sqsd`
/// writes its timestamps.
fn iso_8601(ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from(at)
        .format(format)
        .unwrap_or_default()
}

/// An error with its causes: reqwest's own text hides them ("error sending
/// request"), and the cause is what tells refused from timed out.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use fifo_handler::Verdict;

    #[test]
    fn statuses_map_onto_the_outcome_contract() {
        let verdict = |status: u16, after: Option<u64>| {
            let error = failure(
                StatusCode::from_u16(status).unwrap(),
                StatusCode::UNPROCESSABLE_ENTITY,
                after.map(Duration::from_secs),
                StatusError::new(format!("HTTP {status}"), "answered"),
            );
            Verdict::of(&error)
        };
        assert_eq!(verdict(422, None), Verdict::Reject);
        assert_eq!(
            verdict(429, Some(2)),
            Verdict::RetryLater(Some(Duration::from_secs(2)))
        );
        assert_eq!(
            verdict(503, Some(0)),
            Verdict::RetryLater(Some(Duration::ZERO))
        );
        assert_eq!(verdict(503, None), Verdict::Retry, "no Retry-After");
        assert_eq!(
            verdict(500, Some(2)),
            Verdict::Retry,
            "only 429 and 503 wait"
        );
        assert_eq!(verdict(404, None), Verdict::Retry);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(30)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn first_received_is_iso_8601_utc() {
        assert_eq!(iso_8601(1_764_149_400_123), "2025-11-26T09:30:00Z");
    }

    #[test]
    fn only_http_urls_are_taken() {
        assert!(http_url("http://localhost:8080/work").is_ok());
        assert!(http_url("https://example.com").is_ok());
        let err = http_url("ftp://example.com").unwrap_err().to_string();
        assert_eq!(
            err,
            r#""ftp://example.com" is not an http:// or https:// URL"#
        );
        assert!(http_url("localhost:8080").is_err());
    }

    #[test]
    fn credentials_are_not_shown() {
        let url = http_url("http://alice:s3cret@localhost:8080/work").unwrap();
        assert_eq!(shown(&url), "http://localhost:8080/work");
    }
}
