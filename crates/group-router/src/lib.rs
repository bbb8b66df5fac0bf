//! Per-group lanes and the order rules of fifo, as pure data structures with
//! no I/O: which received message may run next, and what to release after a
//! failure. The engine lands with the `fifo run` issue.
