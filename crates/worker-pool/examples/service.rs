//! The engine inside a small service of one's own: a handler that rejects
//! what it can never process, the service's own shutdown (Ctrl-C or
//! SIGTERM drains the engine, then stops the metrics server), and the
//! engine's figures on a Prometheus endpoint next to the service's.
//!
//! cargo run -p fifo-worker-pool --features sqs --example service -- QUEUE_URL [ADDR]
//!
//! then `curl ADDR/metrics` (default 127.0.0.1:9464).

// A program of its own, so it prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;

use fifo_handler::{Handler, Message, Outcome, Reject};
use fifo_worker_pool::{Counters, PoolConfig, SqsQueue};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Orders arrive as JSON, one entity's changes per group, in order.
struct Orders;

impl Handler for Orders {
    async fn handle(&self, message: &Message) -> Outcome {
        // A body that is not JSON never will be: to the dead-letter queue
        // at once (with the reason), instead of three retries.
        let order: serde_json::Value =
            serde_json::from_str(&message.body).map_err(Reject::because)?;
        println!("{} attempt {}: {order}", message.group_id, message.attempt);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let queue_url = args
        .next()
        .unwrap_or_else(|| "http://localhost:4566/000000000000/test-fifo-queue.fifo".to_owned());
    let metrics_addr = args.next().unwrap_or_else(|| "127.0.0.1:9464".to_owned());

    let client = fifo_sqs_client::connect(&fifo_sqs_client::ConnectOptions {
        queue_url: &queue_url,
        ..Default::default()
    })
    .await?;
    let queue = SqsQueue::open(client, &queue_url).await?;

    // The service owns shutdown: the first signal drains the engine.
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));

    // The engine's figures, with whatever else the service registers.
    let counters = Arc::new(Counters::default());
    let mut registry = Registry::default();
    counters.register(&mut registry);
    // Its own token: the metrics stay up while the engine drains.
    let stop_server = CancellationToken::new();
    let server = serve_metrics(&metrics_addr, Arc::new(registry), stop_server.clone()).await?;
    eprintln!("metrics on http://{metrics_addr}/metrics; Ctrl-C to stop");

    let config = PoolConfig {
        workers: 8,
        ..PoolConfig::default()
    };
    let stats =
        fifo_worker_pool::run_observed(queue, Orders, &config, shutdown.clone(), counters).await?;
    // The engine has drained: the rest of the service stops after it.
    stop_server.cancel();
    server.await??;
    eprintln!("{stats:?}");
    Ok(())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    shutdown.cancel();
}

/// Serves `/metrics` until `shutdown`.
async fn serve_metrics(
    addr: &str,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry)
                .map(|()| text)
                .map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)
        }),
    );
    Ok(tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }))
}
