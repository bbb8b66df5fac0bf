//! Operators steering `fifo run` against the real LocalStack: a group
//! blocked by `--exhausted block`, seen with `fifo groups` and `GET
//! /groups`, skipped into the dead-letter queue; pause and resume; the
//! admin token's rules. The promises are checked from the handlers' own
//! records.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fifo_test_support::binary::*;
use fifo_test_support::http::{free_addr, request};
use fifo_test_support::localstack::*;
use fifo_test_support::records::{
    Event, Script, assert_order, records, runs, signal, spawn_run, wait_for,
};
use fifo_test_support::{TempDir, temp_dir};

const TOKEN: &str = "s3cret-token-for-tests-0123456789";

/// A token file in `dir` with `mode`.
fn token_file(dir: &TempDir, name: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path().join(name);
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// `fifo groups ARGS` in `dir`.
fn groups(dir: &TempDir, args: &[&str]) -> std::process::Output {
    let mut all = vec!["groups"];
    all.extend_from_slice(args);
    fifo_in(dir, &all, &[])
}

/// `fifo groups ACTION… --addr ADDR --admin-token-file TOKEN` in `dir`.
fn act(dir: &TempDir, addr: &str, token: &str, action: &[&str]) -> std::process::Output {
    let mut args = action.to_vec();
    args.extend(["--addr", addr, "--admin-token-file", token]);
    groups(dir, &args)
}

/// [`act`], tried again while the group's head is running (a blocked head
/// shows running while it runs again): its stdout.
fn until_accepted(dir: &TempDir, addr: &str, token: &str, action: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = act(dir, addr, token, action);
        if output.status.success() {
            return stdout(&output);
        }
        assert!(
            stderr(&output).contains("is running"),
            "{}",
            stderr(&output)
        );
        assert!(Instant::now() < deadline, "never accepted: {action:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET /groups`, polled until `ready` holds for the groups listed.
fn wait_for_groups(
    addr: &str,
    what: &str,
    ready: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = request(addr, "GET", "/groups", None);
        assert_eq!(status, 200, "{body}");
        let groups: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        if ready(&groups) {
            return groups;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {groups:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_blocked_group_waits_is_listed_first_and_an_operator_skips_its_head() {
    let name = unique_queue_name("g-block");
    let url = create_queue(&name, &["--dlq", "--max-receive-count", "2"]);
    send(&url, &["--groups", "2", "--count", "6"]);
    let dir = temp_dir();
    let token = token_file(&dir, "token", 0o600);
    let addr = free_addr();
    // group-1's first message always fails: with --max-receive-count 2 it
    // would be dead-lettered on its second receive; blocked, it is held.
    let script = Script {
        work: "0.05",
        behaviour: r#"[ "$FIFO_GROUP_ID" = group-1 ] && [ "$seq" = 1 ] && status=3"#,
    };
    let mut run = spawn_run(
        &dir,
        &url,
        "blocker",
        &script,
        &[
            "--exhausted",
            "block",
            "--retries",
            "1",
            "--backoff-base-ms",
            "50",
            "--blocked-retry-max",
            "1",
            "--metrics-addr",
            &addr,
            "--admin-token-file",
            token.to_str().unwrap(),
        ],
    );
    let listed = wait_for_groups(&addr, "group-1 to be blocked", |groups| {
        groups
            .iter()
            .any(|g| g["group"] == "group-1" && g["state"] == "blocked")
    });
    let blocked = &listed[0];
    assert_eq!(blocked["group"], "group-1", "blocked first: {listed:?}");
    assert_eq!(blocked["held"], 3, "{blocked}");
    assert!(blocked["attempts"].as_u64().unwrap() >= 2, "{blocked}");
    assert!(
        blocked["last_error"]
            .as_str()
            .unwrap()
            .contains("exit status: 3"),
        "{blocked}"
    );
    assert!(blocked["head"]["message_id"].is_string(), "{blocked}");
    assert!(
        blocked["since"].as_str().unwrap().ends_with('Z'),
        "{blocked}"
    );

    // It keeps running on the slow backoff, on one receive, while the
    // other group finishes.
    wait_for(
        &dir,
        "group-2 done and group-1's head run four times",
        |r| {
            let all = runs(r);
            let head_runs = all
                .iter()
                .filter(|r| r.group == "group-1" && r.seq == 1 && r.end.is_some())
                .count();
            all.iter()
                .filter(|r| r.group == "group-2" && r.succeeded())
                .count()
                == 3
                && head_runs >= 4
        },
    );
    let table = stdout(&groups(&dir, &["--addr", &addr]));
    let first_row = table.lines().nth(1).unwrap_or_default();
    assert!(
        first_row.starts_with("group-1 ")
            && (first_row.contains(" blocked ") || first_row.contains(" running ")),
        "{table}"
    );
    let scrape = request(&addr, "GET", "/metrics", None).1;
    assert!(scrape.contains("fifo_groups_blocked 1\n"), "{scrape}");

    // Nobody else gets in.
    let skip = "/groups/group-1/skip";
    assert_eq!(request(&addr, "POST", skip, None).0, 401);
    assert_eq!(
        request(&addr, "POST", skip, Some("Bearer wrong-token-0123456789")).0,
        401
    );
    let open = token_file(&dir, "open-token", 0o644);
    let refused = act(&dir, &addr, open.to_str().unwrap(), &["skip", "group-1"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("may be read or changed by others (mode 0644)"),
        "{}",
        stderr(&refused)
    );
    let no_token = groups(&dir, &["skip", "group-1", "--addr", &addr]);
    assert_eq!(no_token.status.code(), Some(1));
    assert!(
        stderr(&no_token).contains("hint: give --admin-token-file PATH"),
        "{}",
        stderr(&no_token)
    );
    assert_eq!(
        request(
            &addr,
            "POST",
            "/groups/nobody/skip",
            Some(&format!("Bearer {TOKEN}"))
        )
        .0,
        404
    );

    // An operator may run the head again now: it fails again and the
    // group stays blocked.
    let token_arg = token.to_str().unwrap();
    let retried = until_accepted(&dir, &addr, token_arg, &["retry", "group-1"]);
    assert_eq!(retried, "group group-1 runs its head again now\n");

    // The operator skips the head: the group goes on, the head is a dead
    // letter that says why.
    let skipped = until_accepted(&dir, &addr, token_arg, &["skip", "group-1"]);
    assert!(
        skipped.starts_with("skipped the head of group group-1"),
        "{skipped}"
    );
    wait_for(&dir, "group-1 to go on", |r| {
        runs(r)
            .iter()
            .filter(|r| r.group == "group-1" && r.succeeded())
            .count()
            == 2
    });
    let all = records(&dir);
    let head_ok = runs(&all)
        .iter()
        .any(|r| r.group == "group-1" && r.seq == 1 && r.succeeded());
    assert!(!head_ok, "the head never succeeded");
    assert!(
        all.iter()
            .all(|r| r.group != "group-1" || r.receive_count == 1),
        "group-1 was never handed back"
    );
    let group_2: Vec<_> = all
        .iter()
        .filter(|r| r.group == "group-2")
        .cloned()
        .collect();
    assert_order(&group_2, &[("group-2".to_owned(), 3)]);
    let group_1_done: Vec<u64> = runs(&all)
        .iter()
        .filter(|r| r.group == "group-1" && r.succeeded())
        .map(|r| r.seq)
        .collect();
    assert_eq!(group_1_done, [2, 3], "the rest of group-1, in order");
    let last_end_of_head = all
        .iter()
        .filter(|r| r.group == "group-1" && r.seq == 1 && r.event != Event::Start)
        .map(|r| r.nanos)
        .max()
        .unwrap();
    let first_start_of_2 = all
        .iter()
        .filter(|r| r.group == "group-1" && r.seq == 2 && r.event == Event::Start)
        .map(|r| r.nanos)
        .min()
        .unwrap();
    assert!(
        first_start_of_2 > last_end_of_head,
        "seq 2 ran after the skipped head"
    );

    let peek = ok(fifo(&["dlq", "peek", &name, "--json"]));
    let letters: Vec<serde_json::Value> = serde_json::from_str(&peek).unwrap();
    assert_eq!(letters.len(), 1, "{peek}");
    let reason = letters[0]["attributes"]["fifo.reason"].as_str().unwrap();
    assert!(
        reason.starts_with("skipped by operator; last error: ")
            && reason.contains("exit status: 3"),
        "{reason}"
    );

    // Nothing left to skip.
    let again = act(&dir, &addr, token.to_str().unwrap(), &["skip", "group-1"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("refused"), "{}", stderr(&again));

    signal(run.id(), "-TERM", false);
    let exit = run.wait(Duration::from_secs(30));
    assert_eq!(exit.status.code(), Some(0), "{}", exit.stderr);
    assert!(exit.stderr.contains("is blocked"), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("skipped by an operator"),
        "{}",
        exit.stderr
    );
}

#[test]
fn pause_holds_every_start_until_resume_and_actions_need_a_token_file() {
    let url = create_queue(&unique_queue_name("g-pause"), &[]);
    send(&url, &["--groups", "2", "--count", "12"]);
    let dir = temp_dir();
    let token = token_file(&dir, "token", 0o600);
    let token = token.to_str().unwrap();
    let addr = free_addr();
    let mut run = spawn_run(
        &dir,
        &url,
        "pauser",
        &Script::sleeping("0.2"),
        &["--metrics-addr", &addr, "--admin-token-file", token],
    );
    wait_for(&dir, "a first handler", |r| !r.is_empty());
    let paused = act(&dir, &addr, token, &["pause"]);
    assert!(
        stdout(&paused).starts_with("paused since "),
        "{}",
        stderr(&paused)
    );
    assert_eq!(
        request(&addr, "GET", "/readyz", None).0,
        503,
        "not ready while paused"
    );

    // The handlers running at the pause end; then nothing starts for as
    // long as it lasts (a visibility timeout and more: leases are kept).
    std::thread::sleep(Duration::from_secs(1));
    let starts = |dir: &TempDir| {
        records(dir)
            .iter()
            .filter(|r| r.event == Event::Start)
            .count()
    };
    let before = starts(&dir);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(starts(&dir), before, "a handler started while paused");
    assert!(before < 12, "the pause came before the end");

    let resumed = act(&dir, &addr, token, &["resume"]);
    assert_eq!(
        stdout(&resumed),
        "running: handlers start and messages are received\n"
    );
    wait_for(&dir, "every message", |r| {
        runs(r).iter().filter(|r| r.succeeded()).count() == 12
    });
    let all = records(&dir);
    assert!(
        all.iter().all(|r| r.receive_count == 1),
        "no lease was lost"
    );
    assert_order(
        &all,
        &[("group-1".to_owned(), 6), ("group-2".to_owned(), 6)],
    );
    signal(run.id(), "-TERM", false);
    assert_eq!(run.wait(Duration::from_secs(30)).status.code(), Some(0));

    // Without --admin-token-file, every action answers 403.
    let addr = free_addr();
    let mut run = spawn_run(
        &dir,
        &url,
        "closed",
        &Script::sleeping("0"),
        &["--metrics-addr", &addr],
    );
    let (status, body) = request(&addr, "POST", "/pause", Some(&format!("Bearer {TOKEN}")));
    assert_eq!(status, 403, "{body}");
    let refused = act(&dir, &addr, token, &["pause"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("hint: restart that fifo run with --admin-token-file PATH"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        stdout(&groups(&dir, &["--addr", &addr])),
        "no groups held\n"
    );
    signal(run.id(), "-TERM", false);
    assert_eq!(run.wait(Duration::from_secs(30)).status.code(), Some(0));
}

#[test]
fn nothing_answering_at_the_address_is_one_clear_error() {
    let dir = temp_dir();
    let addr = free_addr();
    let output = groups(&dir, &["--addr", &addr]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        text.starts_with(&format!("error: nothing answers at {addr} (")),
        "{text}"
    );
    assert!(
        text.contains("hint: is a fifo run --metrics-addr serving there?"),
        "{text}"
    );
    let output = groups(&dir, &[]);
    assert!(
        stderr(&output).contains("hint: give --addr ADDR"),
        "{}",
        stderr(&output)
    );
}
