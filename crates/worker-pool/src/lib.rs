//! The tokio runtime of `fifo run`: pollers, workers, heartbeats, acks and
//! graceful shutdown around the group router. It lands with the `fifo run`
//! issue.
