//! `fifo dlq peek` and `fifo purge` against the real LocalStack, on dead
//! letters that `fifo run` made.

mod common;

use common::*;

/// Rejects (exit 65) every message whose seq is 2.
const REJECT_SEQ_2: &str =
    r#"body=$(cat); case "$body" in *'"seq":2'*) echo "order 2 is not valid" >&2; exit 65;; esac"#;

#[test]
fn peek_shows_why_without_deleting_and_purge_needs_yes() {
    let name = unique_queue_name("d-peek");
    let url = create_queue(&name, &["--dlq", "--max-receive-count", "3"]);
    send(&url, &["--groups", "2", "--count", "6"]);
    let dir = TempDir::new();
    let run = fifo_in(
        &dir,
        &[
            "--queue-url",
            &url,
            "run",
            "--until-empty",
            "--",
            "sh",
            "-c",
            REJECT_SEQ_2,
        ],
        &[],
    );
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));

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

    // Nothing was deleted: the same two again, by name, as JSON.
    let json: Vec<serde_json::Value> = serde_json::from_str(&peek(&[&name, "--json"])).unwrap();
    assert_eq!(json.len(), 2, "{json:?}");
    for letter in &json {
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
