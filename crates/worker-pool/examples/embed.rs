//! The README's library example as a program, so that it keeps compiling:
//! processes a queue with a handler of one's own until it is empty.
//!
//! cargo run -p fifo-worker-pool --features sqs --example embed -- QUEUE_URL

// A program of its own, so it prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

struct Orders;

impl fifo_handler::Handler for Orders {
    async fn handle(&self, message: &fifo_handler::Message) -> fifo_handler::Outcome {
        println!("{} {}", message.group_id, message.body);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue_url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://localhost:4566/000000000000/test-fifo-queue.fifo".to_owned());
    let client = fifo_sqs_client::connect(&fifo_sqs_client::ConnectOptions {
        queue_url: &queue_url,
        ..Default::default()
    })
    .await?;

    let queue = fifo_worker_pool::SqsQueue::open(client, &queue_url).await?;
    let config = fifo_worker_pool::PoolConfig {
        until_empty: true,
        ..Default::default()
    };
    let shutdown = tokio_util::sync::CancellationToken::new(); // cancel it to drain
    let stats = fifo_worker_pool::run(queue, Orders, &config, shutdown).await?;
    eprintln!("{stats:?}");
    Ok(())
}
