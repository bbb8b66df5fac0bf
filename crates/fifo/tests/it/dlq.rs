//! `fifo dlq peek` and `fifo purge` against the real LocalStack, on dead
//! letters that `fifo run` made.

use fifo_test_support::binary::*;
use fifo_test_support::localstack::*;
use fifo_test_support::temp_dir;

/// Rejects (exit 65) every message whose seq is 2.
const REJECT_SEQ_2: &str =
    r#"body=$(cat); case "$body" in *'"seq":2'*) echo "order 2 is not valid" >&2; exit 65;; esac"#;

/// `fifo run --until-empty` on `url` with `script` as the handler, which
/// rejects some messages (so the run exits 1).
fn run_rejecting(url: &str, script: &str) {
    let run = fifo_in(
        &temp_dir(),
        &[
            "--queue-url",
            url,
            "run",
            "--until-empty",
            "--",
            "sh",
            "-c",
            script,
        ],
        &[],
    );
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
}

#[test]
fn peek_shows_why_without_deleting_and_purge_needs_yes() {
    let name = unique_queue_name("d-peek");
    let url = create_queue(&name, &["--dlq", "--max-receive-count", "3"]);
    send(&url, &["--groups", "2", "--count", "6"]);
    run_rejecting(&url, REJECT_SEQ_2);

    let peek = |extra: &[&str]| {
        let mut args = vec!["--queue-url", &url, "dlq", "peek"];
        args.extend_from_slice(extra);
        ok(fifo(&args))
    };
    let text = peek(&[]);
    assert_eq!(
        text.matches(" exited with exit status: 65").count(),
        2,
        "{text}"
    );
    assert!(
        text.contains("group group-1") && text.contains("group group-2"),
        "{text}"
    );
    assert!(text.contains(r#"body: {"group":"group-1""#), "{text}");
    // The first peek: the dead-letter queue's first receive, said apart
    // from the source queue's.
    assert!(
        text.contains("failed on receive 1 from its queue")
            && text.contains("received 1 time from the dead-letter queue"),
        "{text}"
    );

    // Nothing was deleted: the same two again, by name, as JSON.
    let json: Vec<serde_json::Value> = serde_json::from_str(&peek(&[&name, "--json"])).unwrap();
    assert_eq!(json.len(), 2, "{json:?}");
    for letter in &json {
        assert_eq!(letter["receive_count"], 2, "the second peek: {letter}");
        assert_eq!(letter["source_receive_count"], 1, "{letter}");
        let attributes = &letter["attributes"];
        assert_eq!(attributes["fifo.status"], "exit status: 65");
        assert_eq!(attributes["fifo.attempts"], "1");
        assert_eq!(attributes["fifo.source-queue"], url.as_str());
        let body: serde_json::Value =
            serde_json::from_str(letter["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["seq"], 2);
    }
    assert_eq!(
        peek(&["--limit", "1", "--json"]).matches("\"id\"").count(),
        1
    );

    let base = name.strip_suffix(".fifo").unwrap();
    let dead_letters = format!("{base}-dlq.fifo");
    let refused = fifo(&["purge", &dead_letters]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("add --yes"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(queue_counts(&dead_letters)[&dead_letters].visible, 2);

    ok(fifo(&["purge", &dead_letters, "--yes"]));
    let counts = queue_counts(&dead_letters)[&dead_letters];
    assert_eq!((counts.visible, counts.in_flight), (0, 0));
}

#[test]
fn peek_on_a_queue_without_a_dead_letter_queue_says_so() {
    let name = unique_queue_name("d-none");
    create_queue(&name, &[]);
    let output = fifo(&["dlq", "peek", &name]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(text.contains("has no dead-letter queue"), "{text}");
    assert!(text.contains("hint: "), "{text}");
}

/// Rejects (exit 65) every message whose seq is above 2.
const REJECT_AFTER_2: &str =
    r#"body=$(cat); case "$body" in *'"seq":1'*|*'"seq":2'*) exit 0;; esac; exit 65"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_moves_dead_letters_back_in_group_order() {
    let name = unique_queue_name("d-redrive");
    let url = create_queue(&name, &["--dlq"]);
    send(&url, &["--groups", "2", "--count", "10"]);
    run_rejecting(&url, REJECT_AFTER_2);

    let redrive = fifo(&["dlq", "redrive", &name, "--rate", "50"]);
    assert!(redrive.status.success(), "{}", stderr(&redrive));
    assert!(
        stderr(&redrive).contains("6 messages moved"),
        "{}",
        stderr(&redrive)
    );
    let base = name.strip_suffix(".fifo").unwrap();
    let dead_letters = format!("{base}-dlq.fifo");
    assert_eq!(queue_counts(&dead_letters)[&dead_letters].visible, 0);

    // Back in the source queue, each group in its order.
    let back = drain(&client().await, &url).await;
    let mut by_group: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for message in &back {
        by_group
            .entry(message.group_id.clone())
            .or_default()
            .push(seq(message));
    }
    assert_eq!(by_group["group-1"], [3, 4, 5]);
    assert_eq!(by_group["group-2"], [3, 4, 5]);

    let again = fifo(&["dlq", "redrive", &name]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("nothing to move"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn peek_refuses_a_dead_letter_queue_that_has_a_redrive_policy_of_its_own() {
    let name = unique_queue_name("d-chain");
    let base = name.strip_suffix(".fifo").unwrap();
    let (first, second) = (format!("{base}-dlq.fifo"), format!("{base}-dlq2.fifo"));
    create_queue(&first, &["--dlq", &second, "--max-receive-count", "2"]);
    create_queue(&name, &["--dlq", &first]);
    let output = fifo(&["dlq", "peek", &name]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("has a redrive policy of its own"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn redrive_refuses_a_dead_letter_queue_shared_with_another_queue() {
    let name = unique_queue_name("d-shared");
    let base = name.strip_suffix(".fifo").unwrap();
    let url = create_queue(&name, &["--dlq"]);
    create_queue(
        &format!("{base}-other.fifo"),
        &["--dlq", &format!("{base}-dlq.fifo")],
    );
    send(&url, &["--group", "g", "--count", "2"]);
    run_rejecting(&url, REJECT_SEQ_2);
    let output = fifo(&["dlq", "redrive", &name]);
    assert_eq!(output.status.code(), Some(1));
    let text = stderr(&output);
    assert!(
        text.contains("is the dead-letter queue of other queues too"),
        "{text}"
    );
    assert!(text.contains(&format!("{base}-other.fifo")), "{text}");
}
