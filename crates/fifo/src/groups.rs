//! `fifo groups`: what a running `fifo run --metrics-addr` holds, group by
//! group, and the operators' actions on it (skip, retry, pause, resume),
//! through its HTTP routes (see `admin`).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use color_eyre::eyre::Result;
use reqwest::StatusCode;

use crate::admin::{AdminToken, ErrorView, GroupView, PauseView};
use crate::cli::{GroupsAction, GroupsArgs};
use crate::error::UserError;
use crate::settings::Settings;

/// A run on the same machine answers in milliseconds; one that does not
/// answer in this long is stuck or not there.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

pub(crate) async fn run(settings: &Settings, args: &GroupsArgs) -> Result<ExitCode> {
    let (path, target) = match &args.action {
        None => (None, &args.target),
        Some(GroupsAction::Skip { id, target }) => {
            (Some(format!("groups/{}/skip", segment(id))), target)
        }
        Some(GroupsAction::Retry { id, target }) => {
            (Some(format!("groups/{}/retry", segment(id))), target)
        }
        Some(GroupsAction::Pause { target }) => (Some("pause".to_owned()), target),
        Some(GroupsAction::Resume { target }) => (Some("resume".to_owned()), target),
    };
    // Flags given before the action count as well as after it.
    let addr = target
        .addr
        .as_ref()
        .or(args.target.addr.as_ref())
        .or(settings.metrics_addr.as_ref())
        .ok_or_else(|| {
            UserError::new(
                "no address to ask: fifo groups talks to a running fifo run --metrics-addr ADDR",
                Some(
                    "give --addr ADDR, the --metrics-addr of that run (or set FIFO_METRICS_ADDR)"
                        .to_owned(),
                ),
            )
        })?;
    let base = base_url(addr)?;
    if let Some(GroupsAction::Skip { id, .. } | GroupsAction::Retry { id, .. }) = &args.action
        && (id == "." || id == "..")
    {
        return Err(UserError::new(
            format!("group id {id} cannot be named in a URL path: HTTP clients take it for a path step"),
            Some(format!(
                "send the request with a client that keeps the path as it is, such as curl --path-as-is -X POST -H \"Authorization: Bearer $(cat TOKEN_FILE)\" {base}/groups/{}/ACTION",
                id.replace('.', "%2E")
            )),
        )
        .into());
    }
    let client = reqwest::Client::builder()
        .timeout(ANSWER_WITHIN)
        .build()
        .map_err(|e| UserError::new(format!("cannot make an HTTP client: {e}"), None))?;
    let mut stdout = std::io::stdout().lock();
    let Some(path) = path else {
        let answer = send(client.get(format!("{base}/groups")), addr).await?;
        let groups: Vec<GroupView> = read(answer, addr, "/groups").await?;
        let text = if args.json {
            serde_json::to_string_pretty(&groups)? + "\n"
        } else {
            table(&groups, SystemTime::now())
        };
        stdout.write_all(text.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    };
    let token_file = target
        .admin_token_file
        .as_ref()
        .or(args.target.admin_token_file.as_ref())
        .or(settings.admin_token_file.as_ref())
        .ok_or_else(|| {
            UserError::new(
                "the actions need the admin token the run was started with",
                Some(
                    "give --admin-token-file PATH (or set FIFO_ADMIN_TOKEN_FILE), the file given to fifo run"
                        .to_owned(),
                ),
            )
        })?;
    let token = AdminToken::read(Path::new(token_file))?;
    let request = client
        .post(format!("{base}/{path}"))
        .header(reqwest::header::AUTHORIZATION, token.bearer());
    let answer = send(request, addr).await?;
    let shown = format!("/{path}");
    let line = match &args.action {
        Some(GroupsAction::Pause { .. } | GroupsAction::Resume { .. }) => {
            let state: PauseView = read(answer, addr, &shown).await?;
            match state.since {
                Some(since) => format!(
                    "paused since {since}: no handler starts and nothing is received until `fifo groups resume`\n"
                ),
                None => "running: handlers start and messages are received\n".to_owned(),
            }
        }
        Some(GroupsAction::Skip { id, .. }) => {
            let group: GroupView = read(answer, addr, &shown).await?;
            format!(
                "skipped the head of group {id}: it moves to the dead-letter queue; the group is now {}\n",
                group.state
            )
        }
        _ => {
            let group: GroupView = read(answer, addr, &shown).await?;
            format!("group {} runs its head again now\n", group.group)
        }
    };
    stdout.write_all(line.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `http://ADDR` for `HOST:PORT`; a URL as given, without a trailing `/`.
fn base_url(addr: &str) -> Result<String, UserError> {
    let trimmed = addr.trim_end_matches('/');
    let base = if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    match reqwest::Url::parse(&base) {
        Ok(url) if url.host().is_some() && url.path() == "/" && url.query().is_none() => Ok(base),
        _ => Err(UserError::new(
            format!("--addr {addr} is not an address to reach"),
            Some(
                "give the address fifo run --metrics-addr serves on, as HOST:PORT (such as 127.0.0.1:9464) or a URL (such as http://10.0.0.5:9464)"
                    .to_owned(),
            ),
        )),
    }
}

/// A group id as one path segment: SQS allows `/`, `?`, `#`, `%` and more
/// in group ids.
fn segment(id: &str) -> String {
    let mut encoded = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded += &format!("%{byte:02X}");
        }
    }
    encoded
}

/// Sends `request`, telling plainly when nothing answers at `addr`.
async fn send(
    request: reqwest::RequestBuilder,
    addr: &str,
) -> Result<reqwest::Response, UserError> {
    request.send().await.map_err(|e| {
        let (what, hint) = if e.is_timeout() {
            (
                format!("{addr} did not answer within {} s", ANSWER_WITHIN.as_secs()),
                "check that the fifo run there is not stuck (its /healthz)",
            )
        } else {
            (
                format!("nothing answers at {addr} ({})", root_cause(&e)),
                "is a fifo run --metrics-addr serving there? give its address with --addr",
            )
        };
        UserError::new(what, Some(hint.to_owned()))
    })
}

/// The innermost cause of an HTTP client error: "Connection refused"
/// rather than "error sending request".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// The answer's JSON, or the error it stands for.
async fn read<T: serde::de::DeserializeOwned>(
    answer: reqwest::Response,
    addr: &str,
    path: &str,
) -> Result<T, UserError> {
    let status = answer.status();
    let text = answer.text().await.unwrap_or_default();
    if status.is_success() {
        return serde_json::from_str(&text).map_err(|_| not_fifo(addr, path, status));
    }
    let Ok(ErrorView { error }) = serde_json::from_str(&text) else {
        return Err(not_fifo(addr, path, status));
    };
    let hint = match status {
        StatusCode::UNAUTHORIZED => {
            Some("give the token file the run was started with (--admin-token-file)".to_owned())
        }
        StatusCode::FORBIDDEN => Some(
            "restart that fifo run with --admin-token-file PATH to allow admin actions".to_owned(),
        ),
        StatusCode::NOT_FOUND => Some(format!(
            "`fifo groups --addr {addr}` lists the groups it holds; another process may hold this one"
        )),
        _ => None,
    };
    Err(UserError::new(format!("{addr} refused: {error}"), hint))
}

fn not_fifo(addr: &str, path: &str, status: StatusCode) -> UserError {
    UserError::new(
        format!("{addr} answered {status} to {path}, not as fifo run does"),
        Some("give --addr the --metrics-addr of a fifo run of this version".to_owned()),
    )
}

/// One line per group, aligned; a line saying so when none is held.
fn table(groups: &[GroupView], now: SystemTime) -> String {
    if groups.is_empty() {
        return "no groups held\n".to_owned();
    }
    let mut rows = vec![[
        "GROUP".to_owned(),
        "STATE".to_owned(),
        "HELD".to_owned(),
        "ATTEMPTS".to_owned(),
        "FOR".to_owned(),
        "HEAD".to_owned(),
        "LAST ERROR".to_owned(),
    ]];
    for group in groups {
        rows.push([
            group.group.clone(),
            group.state.clone(),
            group.held.to_string(),
            group.attempts.to_string(),
            age(&group.since, now),
            group
                .head
                .as_ref()
                .map_or_else(|| "-".to_owned(), |head| head.message_id.clone()),
            group
                .last_error
                .as_deref()
                .map_or_else(|| "-".to_owned(), |e| one_line(e, 60)),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        text += cells.join("  ").trim_end();
        text.push('\n');
    }
    text
}

/// How long ago an RFC 3339 time was: `42s`, `3m05s`, `2h10m`.
fn age(since: &str, now: SystemTime) -> String {
    let Ok(since) =
        time::OffsetDateTime::parse(since, &time::format_description::well_known::Rfc3339)
    else {
        return since.to_owned();
    };
    let seconds = now
        .duration_since(SystemTime::from(since))
        .unwrap_or_default()
        .as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// An error on one line, cut to `most` characters.
fn one_line(text: &str, most: usize) -> String {
    let line = text.replace(['\n', '\r'], " ");
    if line.chars().count() <= most {
        line
    } else {
        line.chars().take(most - 1).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::HeadView;

    #[test]
    fn a_group_id_is_one_path_segment() {
        assert_eq!(segment("orders-1"), "orders-1");
        assert_eq!(segment("a/b?c#d%e f"), "a%2Fb%3Fc%23d%25e%20f");
    }

    #[test]
    fn the_table_lines_groups_up_with_their_age() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let group = |name: &str, state: &str, ago: u64, error: Option<&str>| GroupView {
            group: name.to_owned(),
            state: state.to_owned(),
            held: 3,
            head: Some(HeadView {
                message_id: "m-1".to_owned(),
                sequence_number: "1".to_owned(),
            }),
            attempts: 4,
            last_error: error.map(str::to_owned),
            since: crate::admin::rfc_3339(now - Duration::from_secs(ago)),
        };
        let text = table(
            &[
                group("accounts", "blocked", 130, Some("exit status 1:\nboom")),
                group("b", "running", 2, None),
            ],
            now,
        );
        assert_eq!(
            text,
            "GROUP     STATE    HELD  ATTEMPTS  FOR    HEAD  LAST ERROR\n\
             accounts  blocked  3     4         2m10s  m-1   exit status 1: boom\n\
             b         running  3     4         2s     m-1   -\n"
        );
        assert_eq!(table(&[], now), "no groups held\n");
    }

    #[test]
    fn an_address_becomes_a_base_url() {
        assert_eq!(base_url("127.0.0.1:9464").unwrap(), "http://127.0.0.1:9464");
        assert_eq!(base_url("http://h:1/").unwrap(), "http://h:1");
        assert_eq!(base_url("[::1]:9464").unwrap(), "http://[::1]:9464");
        for bad in ["not an addr", "http://h:1/metrics", ""] {
            let err = base_url(bad).unwrap_err();
            assert_eq!(
                err.message,
                format!("--addr {bad} is not an address to reach")
            );
        }
    }
}
