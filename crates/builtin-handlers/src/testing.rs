//! Writers for tests of `Output` and the handlers that use it.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::watch;

/// Keeps what was written; clones share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Capture {
    bytes: Arc<watch::Sender<Vec<u8>>>,
}

impl Capture {
    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.bytes.borrow().clone()
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Waits until what was written contains `needle`.
    pub(crate) async fn wait_for(&self, needle: &str) {
        let mut written = self.bytes.subscribe();
        let found = written.wait_for(|bytes| String::from_utf8_lossy(bytes).contains(needle));
        // The sender lives in `self`, so waiting cannot fail.
        let _ = found.await;
    }
}

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.send_modify(|bytes| bytes.extend_from_slice(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer whose reader has gone away.
pub(crate) fn broken_pipe() -> impl Write + Send + 'static {
    struct BrokenPipe;
    impl Write for BrokenPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }
    BrokenPipe
}

/// A writer that blocks (its thread) until the test opens it, like a pipe
/// nobody reads; clones share the gate and what was written.
#[derive(Debug, Clone, Default)]
pub(crate) struct Gated {
    shared: Arc<GatedShared>,
}

#[derive(Debug, Default)]
struct GatedShared {
    open: Mutex<bool>,
    opened: Condvar,
    /// Becomes true when a write waits at the closed gate.
    blocked: watch::Sender<bool>,
    written: Mutex<Vec<u8>>,
}

impl Gated {
    pub(crate) fn open(&self) {
        *self.shared.open.lock().unwrap() = true;
        self.shared.opened.notify_all();
    }

    /// Waits until a write is stuck at the closed gate.
    pub(crate) async fn blocked(&self) {
        let _ = self.shared.blocked.subscribe().wait_for(|&b| b).await;
    }

    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.shared.written.lock().unwrap().clone()
    }
}

impl Write for Gated {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut open = self.shared.open.lock().unwrap();
        if !*open {
            self.shared.blocked.send_replace(true);
        }
        while !*open {
            open = self.shared.opened.wait(open).unwrap();
        }
        self.shared.written.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
