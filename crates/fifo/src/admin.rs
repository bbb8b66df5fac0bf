//! The operators' routes beside the metrics of `fifo run --metrics-addr`:
//! `GET /groups` (the groups held, as JSON) and the actions
//! `POST /groups/{id}/skip`, `POST /groups/{id}/retry`, `POST /pause` and
//! `POST /resume`, which answer only a request with the bearer token read
//! from `--admin-token-file`. Also the token file's rules and the JSON that
//! `fifo groups` reads back.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fifo_worker_pool::{GroupStatus, SteerError, Steering};
use serde::{Deserialize, Serialize};

use crate::error::UserError;

/// The shortest token accepted: anything shorter is guessable.
const MIN_TOKEN_LEN: usize = 16;

/// The admin token, never shown (its `Debug` hides it) nor logged.
pub(crate) struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(hidden)")
    }
}

impl AdminToken {
    /// Reads the token from `path`: a regular file that only its owner may
    /// read or write (mode 0600 or 0400), holding one line of at least 16
    /// printable characters.
    pub(crate) fn read(path: &Path) -> Result<AdminToken, UserError> {
        use std::os::unix::fs::PermissionsExt;
        let shown = path.display();
        let make_one =
            format!("make one with: (umask 077; head -c 32 /dev/urandom | base64 > {shown})");
        let metadata = std::fs::metadata(path).map_err(|e| {
            UserError::new(
                format!("cannot read the admin token file {shown}: {e}"),
                Some(make_one.clone()),
            )
        })?;
        if !metadata.is_file() {
            return Err(UserError::new(
                format!("the admin token file {shown} is not a regular file"),
                Some(make_one),
            ));
        }
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(UserError::new(
                format!(
                    "the admin token file {shown} may be read or changed by others (mode {mode:04o})"
                ),
                Some(format!("chmod 600 {shown}")),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            UserError::new(
                format!("cannot read the admin token file {shown}: {e}"),
                Some(make_one.clone()),
            )
        })?;
        let token = text.trim();
        if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(UserError::new(
                format!(
                    "the admin token file {shown} must hold one line of at least {MIN_TOKEN_LEN} printable characters, without spaces"
                ),
                Some(make_one),
            ));
        }
        Ok(AdminToken(token.to_owned()))
    }

    /// The `Authorization` header's value that carries it.
    pub(crate) fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether `headers` carry this token as a bearer token, compared in
    /// constant time.
    fn admits(&self, headers: &HeaderMap) -> bool {
        use subtle::ConstantTimeEq;
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let value = value.as_bytes();
        let Some(given) = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .map(|_| &value[7..])
        else {
            return false;
        };
        given.ct_eq(self.0.as_bytes()).into()
    }
}

/// A group in `GET /groups` and in the answer to an action on it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GroupView {
    pub(crate) group: String,
    /// `blocked`, `running`, `queued`, `backing-off`, `retry-later` or
    /// `settling`.
    pub(crate) state: String,
    pub(crate) held: usize,
    pub(crate) head: Option<HeadView>,
    pub(crate) attempts: u32,
    pub(crate) last_error: Option<String>,
    /// RFC 3339, in UTC.
    pub(crate) since: String,
}

/// The message a group waits for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HeadView {
    pub(crate) message_id: String,
    pub(crate) sequence_number: String,
}

/// The answer to `POST /pause` and `POST /resume`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PauseView {
    pub(crate) paused: bool,
    /// Since when, RFC 3339, while paused.
    pub(crate) since: Option<String>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ErrorView {
    pub(crate) error: String,
}

impl From<&GroupStatus> for GroupView {
    fn from(status: &GroupStatus) -> GroupView {
        GroupView {
            group: status.group.clone(),
            state: status.state.name().to_owned(),
            held: status.held,
            head: status.head.as_ref().map(|head| HeadView {
                message_id: head.message_id.clone(),
                sequence_number: head.sequence_number.clone(),
            }),
            attempts: status.attempts,
            last_error: status.last_error.clone(),
            since: rfc_3339(status.since),
        }
    }
}

/// `at` in RFC 3339, UTC, to the millisecond.
pub(crate) fn rfc_3339(at: SystemTime) -> String {
    let at = time::OffsetDateTime::from(at);
    let at = at
        .replace_nanosecond(at.millisecond() as u32 * 1_000_000)
        .unwrap_or(at);
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What the routes share: the run's handle, its token if any, and the
/// requests refused for want of it.
#[derive(Clone)]
struct Admin {
    steering: Steering,
    token: Option<Arc<AdminToken>>,
    refusals: Arc<Mutex<Refusals>>,
}

/// Requests refused for want of the token, said at most once a minute: a
/// flood of them must not flood the log.
#[derive(Debug, Default)]
struct Refusals {
    /// Refused since the last line said so.
    unsaid: u64,
    /// When the last line was.
    said_at: Option<Instant>,
}

/// How often refused requests are said, at most.
const SAY_REFUSALS_EVERY: Duration = Duration::from_secs(60);

impl Refusals {
    /// Counts one refusal of `action`; says so if the last line is old.
    fn refused(&mut self, action: &str) {
        self.unsaid += 1;
        if self
            .said_at
            .is_some_and(|at| at.elapsed() < SAY_REFUSALS_EVERY)
        {
            return;
        }
        tracing::warn!(
            "refused {} without a valid bearer token (the latest: {action}); such refusals are said at most once a minute",
            crate::counted(self.unsaid, "admin request")
        );
        self.unsaid = 0;
        self.said_at = Some(Instant::now());
    }
}

/// The routes, for the metrics server.
pub(crate) fn routes(steering: Steering, token: Option<AdminToken>) -> axum::Router {
    use axum::routing::{get, post};
    let admin = Admin {
        steering,
        token: token.map(Arc::new),
        refusals: Arc::default(),
    };
    axum::Router::new()
        .route("/groups", get(list))
        .route("/groups/{id}/skip", post(skip))
        .route("/groups/{id}/retry", post(retry))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .with_state(admin)
}

async fn list(State(admin): State<Admin>) -> Response {
    match admin.steering.groups().await {
        Ok(groups) => json(
            StatusCode::OK,
            &groups.iter().map(GroupView::from).collect::<Vec<_>>(),
        ),
        Err(refused) => refusal(&refused),
    }
}

async fn skip(
    State(admin): State<Admin>,
    UrlPath(group): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = admin.allow(&headers, "skip") {
        return denied;
    }
    group_answer(admin.steering.skip(&group).await)
}

async fn retry(
    State(admin): State<Admin>,
    UrlPath(group): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = admin.allow(&headers, "retry") {
        return denied;
    }
    group_answer(admin.steering.retry(&group).await)
}

async fn pause(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    pause_answer(&admin, &headers, true).await
}

async fn resume(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    pause_answer(&admin, &headers, false).await
}

async fn pause_answer(admin: &Admin, headers: &HeaderMap, paused: bool) -> Response {
    let action = if paused { "pause" } else { "resume" };
    if let Err(denied) = admin.allow(headers, action) {
        return denied;
    }
    match admin.steering.pause(paused).await {
        Ok(since) => json(
            StatusCode::OK,
            &PauseView {
                paused: since.is_some(),
                since: since.map(rfc_3339),
            },
        ),
        Err(refused) => refusal(&refused),
    }
}

impl Admin {
    /// Lets an action through only with the right token: 403 when this
    /// run has none (actions are off), 401 when the request lacks it.
    #[allow(clippy::result_large_err)]
    fn allow(&self, headers: &HeaderMap, action: &str) -> Result<(), Response> {
        let Some(token) = &self.token else {
            return Err(json(
                StatusCode::FORBIDDEN,
                &ErrorView {
                    error: "admin actions are off: start fifo run with --admin-token-file PATH to allow them".to_owned(),
                },
            ));
        };
        if token.admits(headers) {
            return Ok(());
        }
        self.refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .refused(action);
        let mut denied = json(
            StatusCode::UNAUTHORIZED,
            &ErrorView {
                error: "a valid admin token is needed: send Authorization: Bearer TOKEN, with the token of --admin-token-file".to_owned(),
            },
        );
        denied.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("a valid header"),
        );
        Err(denied)
    }
}

fn group_answer(answer: Result<GroupStatus, SteerError>) -> Response {
    match answer {
        Ok(status) => json(StatusCode::OK, &GroupView::from(&status)),
        Err(refused) => refusal(&refused),
    }
}

fn refusal(refused: &SteerError) -> Response {
    let status = match refused {
        SteerError::NotHeld(_) => StatusCode::NOT_FOUND,
        SteerError::NotApplicable(_) => StatusCode::CONFLICT,
        SteerError::Stopped | SteerError::NoAnswer => StatusCode::SERVICE_UNAVAILABLE,
    };
    json(
        status,
        &ErrorView {
            error: refused.to_string(),
        },
    )
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let text = serde_json::to_string(body).expect("plain data serializes");
    (status, [(header::CONTENT_TYPE, "application/json")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_token(text: &str, mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let (_dir, path) = write_token("0123456789abcdef0123\n", 0o644);
        let err = AdminToken::read(&path).unwrap_err();
        assert!(err.message.contains("(mode 0644)"), "{err}");
        assert_eq!(err.hint.unwrap(), format!("chmod 600 {}", path.display()));
    }

    #[test]
    fn a_short_or_empty_token_is_refused() {
        for text in ["", "short\n", "has spaces in the middle\n"] {
            let (_dir, path) = write_token(text, 0o600);
            let err = AdminToken::read(&path).unwrap_err();
            assert!(err.message.contains("at least 16"), "{text:?}: {err}");
        }
    }

    #[test]
    fn only_the_right_bearer_token_is_admitted() {
        let (_dir, path) = write_token("0123456789abcdef0123\n", 0o600);
        let token = AdminToken::read(&path).unwrap();
        assert!(token.admits(&headers("Bearer 0123456789abcdef0123")));
        assert!(token.admits(&headers("bearer 0123456789abcdef0123")));
        assert!(!token.admits(&headers("Bearer 0123456789abcdef012")));
        assert!(!token.admits(&headers("Bearer 0123456789abcdef01234")));
        assert!(!token.admits(&headers("Basic 0123456789abcdef0123")));
        assert!(!token.admits(&headers("0123456789abcdef0123")));
        assert!(!token.admits(&HeaderMap::new()));
        assert_eq!(format!("{token:?}"), "AdminToken(hidden)");
    }
}
