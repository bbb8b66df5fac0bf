//! What the workspace's tests share: LocalStack fixtures ([`localstack`]),
//! a recording handler for tests of the engine ([`recorder`]), the `fifo`
//! binary run in a clean environment ([`binary`]) with an exec handler that
//! keeps its own records ([`records`]), requests to its HTTP server
//! ([`http`]), and temporary directories.
//!
//! It depends on the engine, so the engine's own tests reach it as a
//! dev-dependency: its integration tests and benchmarks may, its unit tests
//! (`#[cfg(test)]` in `src/`) may not, as they build a second copy of the
//! engine.

pub mod binary;
pub mod http;
pub mod localstack;
pub mod recorder;
pub mod records;

pub use tempfile::TempDir;

/// A new empty directory, removed when dropped: a working directory of its
/// own, so no `fifo.toml` of ours is read.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("fifo-test-")
        .tempdir()
        .expect("a temporary directory")
}
