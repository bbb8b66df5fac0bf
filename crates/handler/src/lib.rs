//! The `Handler` trait that user code implements, and the built-in handlers
//! (`log`, exec). The trait lands with the `fifo run` issue.
