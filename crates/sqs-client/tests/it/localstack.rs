//! Against LocalStack: message attributes of every type survive a send and a
//! receive, real batch responses account for every entry, and a
//! de-duplicated message is recognisable. Each test makes its own queue.

use std::collections::BTreeMap;

use fifo_sqs_client::{
    AttributeValue, Client, MALFORMED_RESPONSE, MessageAttribute, OutgoingMessage, QueueSpec,
    ReceiveOptions, ReceivedMessage,
};
use fifo_test_support::localstack::{client as localstack, unique_queue_name};

/// A new FIFO queue no other test (or earlier run) uses.
async fn new_queue(client: &Client, test: &str) -> String {
    client
        .create_fifo_queue(&QueueSpec {
            name: unique_queue_name(&format!("sqs-client-{test}")),
            visibility_timeout: 30,
            high_throughput: false,
            redrive: None,
        })
        .await
        .expect("a new queue")
}

fn message(body: &str) -> OutgoingMessage {
    OutgoingMessage {
        body: body.to_owned(),
        group_id: "g".to_owned(),
        ..OutgoingMessage::default()
    }
}

/// Receives until `count` messages came back (or a few polls found none).
async fn receive(client: &Client, queue_url: &str, count: usize) -> Vec<ReceivedMessage> {
    let options = ReceiveOptions {
        max_messages: 10,
        wait_seconds: 1,
        visibility_timeout: Some(30),
        attempt_id: None,
    };
    let mut received = Vec::new();
    for _ in 0..5 {
        let output = client
            .receive(queue_url, &options)
            .await
            .expect("a receive");
        assert!(output.malformed.is_empty(), "{:?}", output.malformed);
        received.extend(output.messages);
        if received.len() >= count {
            break;
        }
    }
    received
}

#[tokio::test]
async fn message_attributes_survive_a_send_and_a_receive() {
    let client = localstack().await;
    let queue_url = new_queue(&client, "attributes").await;
    let attribute = |data_type: &str, value: AttributeValue| MessageAttribute {
        data_type: data_type.to_owned(),
        value,
    };
    let attributes = BTreeMap::from([
        (
            "reason".to_owned(),
            attribute(
                "String",
                AttributeValue::Text("handler failed: exit 65 ✗".to_owned()),
            ),
        ),
        (
            "attempts".to_owned(),
            attribute("Number", AttributeValue::Text("3".to_owned())),
        ),
        (
            "receive-count".to_owned(),
            attribute("Number.int", AttributeValue::Text("4".to_owned())),
        ),
        (
            "raw".to_owned(),
            attribute(
                "Binary",
                AttributeValue::Binary(vec![0, 1, 159, 255, b'\n']),
            ),
        ),
    ]);
    let sent = OutgoingMessage {
        attributes: attributes.clone(),
        ..message("a dead letter")
    };
    let sent = client
        .send_batch(&queue_url, &[sent, message("plain")])
        .await
        .expect("a send");
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");

    let received = receive(&client, &queue_url, 2).await;
    let bodies: Vec<_> = received.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["a dead letter", "plain"]);
    assert_eq!(received[0].attributes, attributes);
    assert!(received[1].attributes.is_empty());
}

#[tokio::test]
async fn batch_results_account_for_every_entry() {
    let client = localstack().await;
    let queue_url = new_queue(&client, "batches").await;
    let messages: Vec<_> = (1..=3).map(|i| message(&format!("m{i}"))).collect();
    let sent = client
        .send_batch(&queue_url, &messages)
        .await
        .expect("a send");
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");

    let received = receive(&client, &queue_url, 3).await;
    assert_eq!(received.len(), 3);
    let handles: Vec<&str> = received.iter().map(|m| m.receipt_handle.as_str()).collect();

    let extended: Vec<(&str, u32)> = handles.iter().map(|h| (*h, 60)).collect();
    let failures = client
        .change_visibility_batch(&queue_url, &extended)
        .await
        .expect("a visibility change");
    assert!(failures.is_empty(), "{failures:?}");

    // A handle SQS cannot know fails as an entry of its own, told by SQS.
    let mut deletes = handles.clone();
    deletes.insert(1, "not-a-receipt-handle");
    let failures = client
        .delete_batch(&queue_url, &deletes)
        .await
        .expect("a delete");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].index, 1);
    assert_ne!(failures[0].code, MALFORMED_RESPONSE);
}

/// How `fifo send` tells a de-duplicated message from a sent one: SQS
/// answers it with the id of the message it duplicates.
#[tokio::test]
async fn a_deduplicated_message_gets_the_id_of_the_one_it_repeats() {
    let client = localstack().await;
    let queue_url = new_queue(&client, "dedup-ids").await;
    let other_group = OutgoingMessage {
        group_id: "h".to_owned(),
        ..message("inc")
    };
    let sent = client
        .send_batch(
            &queue_url,
            &[
                message("inc"),
                message("other"),
                message("inc"),
                other_group,
            ],
        )
        .await
        .expect("a send");
    let ids: Vec<String> = sent.into_iter().map(|r| r.expect("accepted")).collect();
    assert_eq!(ids[0], ids[2], "same content, same group");
    assert_eq!(ids[0], ids[3], "content de-duplication spans groups");
    assert_ne!(ids[0], ids[1]);
    assert_eq!(receive(&client, &queue_url, 2).await.len(), 2);
}
