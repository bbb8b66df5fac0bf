//! `fifo create-queue`, `send` and `list-queues` against the real LocalStack.

use std::collections::BTreeMap;

use fifo_test_support::binary::*;
use fifo_test_support::localstack::*;
use fifo_test_support::temp_dir;

#[tokio::test]
async fn create_queue_is_idempotent_and_prints_only_the_url() {
    let name = unique_queue_name("create");
    let first = create_queue(&name, &[]);
    let second = create_queue(&name, &[]);
    assert_eq!(first, queue_url(&name));
    assert_eq!(first, second);

    let attributes = client().await.queue_attributes(&first).await.unwrap();
    assert!(attributes.fifo);
    assert!(attributes.content_based_deduplication);
    assert_eq!(attributes.visibility_timeout, 30);
    assert_eq!(attributes.dead_letter, None);
}

#[tokio::test]
async fn create_queue_with_a_dead_letter_queue_sets_the_redrive_policy() {
    let name = unique_queue_name("dlq");
    let args = [
        "--dlq",
        "--max-receive-count",
        "3",
        "--visibility-timeout",
        "45",
    ];
    let url = create_queue(&name, &args);
    assert_eq!(create_queue(&name, &args), url, "idempotent with a DLQ too");

    let client = client().await;
    let attributes = client.queue_attributes(&url).await.unwrap();
    let dlq_name = format!("{}-dlq.fifo", name.trim_end_matches(".fifo"));
    assert_eq!(attributes.dead_letter, Some((dlq_name.clone(), 3)));
    assert_eq!(attributes.visibility_timeout, 45);
    let dlq = client
        .queue_attributes(&queue_url(&dlq_name))
        .await
        .unwrap();
    assert!(
        dlq.fifo,
        "the dead-letter queue of a FIFO queue must be FIFO"
    );
}

#[tokio::test]
async fn create_queue_in_high_throughput_mode() {
    let name = unique_queue_name("ht");
    let url = create_queue(&name, &["--high-throughput"]);
    let attributes = client().await.queue_attributes(&url).await.unwrap();
    assert!(attributes.high_throughput);
}

#[tokio::test]
async fn one_group_arrives_one_to_five_in_order() {
    let url = create_queue(&unique_queue_name("same"), &[]);
    ok(fifo(&[
        "--queue-url",
        &url,
        "send",
        "--group",
        "same",
        "--count",
        "5",
    ]));

    let messages = drain(&client().await, &url).await;
    let got: Vec<(String, u64)> = messages
        .iter()
        .map(|m| (m.group_id.clone(), seq(m)))
        .collect();
    let expected: Vec<(String, u64)> = (1..=5).map(|n| ("same".to_owned(), n)).collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn groups_spread_round_robin_and_keep_their_order() {
    let url = create_queue(&unique_queue_name("groups"), &[]);
    ok(fifo(&[
        "--queue-url",
        &url,
        "send",
        "--groups",
        "5",
        "--count",
        "5",
    ]));
    ok(fifo(&[
        "--queue-url",
        &url,
        "send",
        "--groups",
        "3",
        "--count",
        "9",
    ]));

    let mut by_group: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for message in drain(&client().await, &url).await {
        by_group
            .entry(message.group_id.clone())
            .or_default()
            .push(seq(&message));
    }
    let expected: BTreeMap<String, Vec<u64>> = [
        ("group-1", vec![1, 1, 2, 3]),
        ("group-2", vec![1, 1, 2, 3]),
        ("group-3", vec![1, 1, 2, 3]),
        ("group-4", vec![1]),
        ("group-5", vec![1]),
    ]
    .into_iter()
    .map(|(g, s)| (g.to_owned(), s))
    .collect();
    assert_eq!(by_group, expected);
}

#[tokio::test]
async fn content_based_dedup_stores_one_copy_of_a_repeated_body() {
    let url = create_queue(&unique_queue_name("dedup"), &[]);
    ok(fifo(&[
        "--queue-url",
        &url,
        "send",
        "--body",
        "hello",
        "--count",
        "3",
    ]));
    ok(fifo(&["--queue-url", &url, "send", "--body", "hello"]));
    // Generated bodies carry an id of the invocation: a repeated send is not dropped.
    ok(fifo(&[
        "--queue-url",
        &url,
        "send",
        "--group",
        "g",
        "--count",
        "2",
    ]));
    ok(fifo(&[
        "--queue-url",
        &url,
        "send",
        "--group",
        "g",
        "--count",
        "2",
    ]));

    ok(fifo(&["--queue-url", &url, "send", "--body", "hello"]));

    let bodies: Vec<String> = drain(&client().await, &url)
        .await
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(
        bodies.iter().filter(|b| *b == "hello").count(),
        4,
        "--count 3 sends three distinct messages, then the queue keeps one `hello` of two: {bodies:?}"
    );
    assert_eq!(bodies.len(), 8, "{bodies:?}");
}

#[tokio::test]
async fn a_file_of_a_thousand_lines_arrives_complete_and_in_group_order() {
    let url = create_queue(&unique_queue_name("file"), &[]);
    let dir = temp_dir();
    let lines: Vec<String> = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                format!(r#"{{"group": "g{}", "body": "{i}"}}"#, i % 7)
            } else {
                // Lines without a group go to --groups round-robin.
                format!(r#"{{"body": "{i}"}}"#)
            }
        })
        .collect();
    std::fs::write(dir.path().join("messages.txt"), lines.join("\n")).unwrap();
    ok(fifo_in(
        &dir,
        &[
            "--queue-url",
            &url,
            "send",
            "--file",
            "messages.txt",
            "--groups",
            "3",
        ],
        &[],
    ));

    let messages = drain(&client().await, &url).await;
    assert_eq!(messages.len(), 1000);
    let mut by_group: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for message in &messages {
        by_group
            .entry(message.group_id.clone())
            .or_default()
            .push(message.body.parse().unwrap());
    }
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for i in 0..1000u64 {
        let group = if i % 2 == 0 {
            format!("g{}", i % 7)
        } else {
            format!("group-{}", i % 3 + 1)
        };
        expected.entry(group).or_default().push(i);
    }
    assert_eq!(by_group, expected);
}

#[tokio::test]
async fn list_queues_counts_visible_and_in_flight_messages() {
    let name = unique_queue_name("list");
    let url = create_queue(&name, &["--dlq"]);
    ok(fifo(&[
        "--queue-url",
        &url,
        "send",
        "--group",
        "a",
        "--count",
        "3",
    ]));
    ok(fifo(&[
        "--queue-url",
        &url,
        "send",
        "--group",
        "b",
        "--count",
        "2",
    ]));
    let options = fifo_sqs_client::ReceiveOptions {
        max_messages: 10,
        wait_seconds: 0,
        visibility_timeout: Some(60),
        attempt_id: None,
    };
    let received = client()
        .await
        .receive(&url, &options)
        .await
        .unwrap()
        .messages
        .len() as u64;
    assert!(received > 0);

    let json = ok(fifo(&["list-queues", "--prefix", &name, "--json"]));
    let queues: serde_json::Value = serde_json::from_str(&json).unwrap();
    let queue = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name.as_str())
        .expect("the queue is listed");
    assert_eq!(queue["in_flight"], received);
    assert_eq!(queue["visible"], 5 - received);
    assert_eq!(queue["delayed"], 0);
    let dlq_name = format!("{}-dlq.fifo", name.trim_end_matches(".fifo"));
    assert_eq!(queue["dead_letter_queue"], dlq_name.as_str());

    let table = ok(fifo(&["list-queues", "--prefix", &name]));
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .expect("a row");
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        columns[1..4],
        [
            (5 - received).to_string(),
            received.to_string(),
            "0".to_owned()
        ]
    );
}
