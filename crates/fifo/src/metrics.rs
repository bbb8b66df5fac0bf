//! `fifo run --metrics-addr`: the run's figures in the Prometheus text
//! format on `/metrics`, `/healthz` and `/readyz` for probes, and the
//! operators' routes (`admin`), served by axum on the engine's runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use fifo_worker_pool::Counters;
use prometheus_client::registry::Registry;

use crate::error::UserError;

/// The engine loop turns at least every 2 s (its lease tick): silent for
/// this long, it is stuck.
const ALIVE_WITHIN: Duration = Duration::from_secs(10);

/// Listens on `addr` now (so a port in use fails the start, before any
/// message is received) and serves until the process exits, with the
/// operators' routes `admin` beside.
pub(crate) async fn serve(
    addr: &str,
    counters: Arc<Counters>,
    admin: axum::Router,
) -> Result<SocketAddr, UserError> {
    let addr: SocketAddr = addr.parse().expect("checked with the settings");
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        UserError::new(
            format!("cannot listen on {addr} for metrics: {e}"),
            Some(
                "give --metrics-addr (FIFO_METRICS_ADDR) a free port, such as 127.0.0.1:9464"
                    .to_owned(),
            ),
        )
    })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let mut registry = Registry::default();
    counters.register(&mut registry);
    let registry = Arc::new(registry);
    let alive = counters.clone();
    let ready = counters;
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    match prometheus_client::encoding::text::encode(&mut text, &registry) {
                        Ok(()) => (
                            StatusCode::OK,
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            text,
                        )
                            .into_response(),
                        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        )
        .route(
            "/healthz",
            axum::routing::get(move || async move {
                if alive.is_alive(ALIVE_WITHIN) {
                    (StatusCode::OK, "alive\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the engine loop is stuck\n",
                    )
                }
            }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || async move {
                if ready.is_ready() {
                    (StatusCode::OK, "receiving\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not receiving: starting, stopping, paused, or SQS unreachable\n",
                    )
                }
            }),
        )
        .merge(admin);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("the metrics server stopped: {e}");
        }
    });
    Ok(bound)
}
