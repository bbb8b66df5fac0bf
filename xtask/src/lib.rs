//! The library half of xtask: test infrastructure that the workspace's
//! integration tests use in-process and that the `cargo xtask` binary also
//! offers by hand. Today that is [`proxy`], a TCP proxy that puts latency,
//! resets, refused connects and silence between fifo and LocalStack.
//!
//! It stays on std threads, with `socket2` as its one dependency, so that
//! xtask keeps building fast on a fresh machine.

pub mod proxy;
