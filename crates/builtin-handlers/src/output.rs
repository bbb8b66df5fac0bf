//! Where handlers write: our stdout and stderr, each fed by a thread of its
//! own, so that a slow reader slows the handlers, never the engine.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

/// How many bytes may wait for each stream's writer thread. A handler that
/// writes more while the reader lags waits for room; the engine, whose
/// heartbeats share the runtime thread, never does.
const BUDGET: usize = 4 * 1024 * 1024;

/// Where handlers write: our stdout and stderr, each fed by an OS thread of
/// its own, so that a stdout nobody reads slows down the handlers that
/// write to it, never the runtime thread.
///
/// A failed write to stdout (a closed pipe, a full disk) closes it for good:
/// later stdout output is dropped and [`Output::closed`] resolves. A failed
/// write to stderr drops later stderr output. Bytes are passed through as
/// they are; nothing here assumes UTF-8. Clones share the streams. Output
/// still queued when the process exits is lost: call [`Output::finish`]
/// before exiting.
#[derive(Debug, Clone)]
pub struct Output {
    stdout: Stream,
    stderr: Stream,
    /// Handler programs' stderr lines go out as JSON objects.
    json_stderr: bool,
}

impl Output {
    /// Writes to the process's stdout and stderr. Buffered in front of
    /// std's line buffering, so that a burst of lines leaves in one system
    /// call (the writer flushes whenever nothing else waits).
    pub fn stdio() -> Output {
        Output::new(
            std::io::BufWriter::new(std::io::stdout()),
            std::io::BufWriter::new(std::io::stderr()),
        )
    }

    /// Writes to the given writers (tests capture output this way).
    pub fn new(stdout: impl Write + Send + 'static, stderr: impl Write + Send + 'static) -> Output {
        Output::with_budget(stdout, stderr, BUDGET)
    }

    pub(crate) fn with_budget(
        stdout: impl Write + Send + 'static,
        stderr: impl Write + Send + 'static,
        budget: usize,
    ) -> Output {
        Output {
            stdout: Stream::spawn("fifo-stdout", stdout, budget),
            stderr: Stream::spawn("fifo-stderr", stderr, budget),
            json_stderr: false,
        }
    }

    /// The lines an exec handler's program writes to stderr are written as
    /// JSON objects (`timestamp`, `level`, `target: "fifo::handler"`,
    /// `group`, `message`), so that stderr stays one JSON object per line
    /// alongside JSON logs. Stdout is left as the program wrote it.
    pub fn with_json_stderr(mut self) -> Output {
        self.json_stderr = true;
        self
    }

    /// Whether stderr lines are written as JSON (see
    /// [`Output::with_json_stderr`]).
    pub fn json_stderr(&self) -> bool {
        self.json_stderr
    }

    /// Queues `bytes` for stdout, waiting while the queue is full.
    pub async fn stdout(&self, bytes: Vec<u8>) {
        self.stdout.write(bytes).await;
    }

    /// Queues `bytes` for stderr, waiting while the queue is full.
    pub async fn stderr(&self, bytes: Vec<u8>) {
        self.stderr.write(bytes).await;
    }

    /// Whether a write to stdout failed.
    pub fn is_closed(&self) -> bool {
        *self.stdout.failed.borrow()
    }

    /// Resolves once a write to stdout has failed (at once if one has):
    /// whoever reads our output is gone.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut failed = self.stdout.failed.subscribe();
        async move {
            if failed.wait_for(|&failed| failed).await.is_err() {
                // Every handle and both threads are gone without a failure:
                // stdout never closes any more.
                std::future::pending::<()>().await;
            }
        }
    }

    /// Stops taking output, from this handle and every clone, and waits
    /// until what was queued has been written or its stream has failed. This
    /// takes as long as the reader of the output takes.
    pub async fn finish(self) {
        tokio::join!(self.stdout.finish(), self.stderr.finish());
    }
}

/// One stream: a queue of byte chunks and the thread that writes them.
#[derive(Debug, Clone)]
struct Stream {
    queue: mpsc::UnboundedSender<Job>,
    /// Permits are bytes waiting in `queue`; this bounds the queue, not the
    /// channel (a chunk holds its permits until it has been written).
    budget: Arc<Semaphore>,
    budget_size: usize,
    /// Set by the thread when a write failed.
    failed: Arc<watch::Sender<bool>>,
}

#[derive(Debug)]
enum Job {
    Write(Vec<u8>, OwnedSemaphorePermit),
    /// Everything queued before has been handled: flush, answer and stop.
    Finish(oneshot::Sender<()>),
}

impl Stream {
    fn spawn(name: &str, writer: impl Write + Send + 'static, budget: usize) -> Stream {
        let (queue, jobs) = mpsc::unbounded_channel();
        let failed = Arc::new(watch::Sender::new(false));
        let marker = failed.clone();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || write_jobs(writer, jobs, &marker))
            .unwrap_or_else(|e| panic!("cannot start the {name} thread: {e}"));
        Stream {
            queue,
            budget: Arc::new(Semaphore::new(budget)),
            budget_size: budget,
            failed,
        }
    }

    async fn write(&self, bytes: Vec<u8>) {
        if bytes.is_empty() || *self.failed.borrow() {
            return;
        }
        // A chunk larger than the whole budget takes all of it, so it waits
        // for an empty queue instead of forever.
        let permits = u32::try_from(bytes.len().min(self.budget_size)).unwrap_or(u32::MAX);
        // Fails only once the stream is finished: output is dropped then.
        let Ok(permit) = self.budget.clone().acquire_many_owned(permits).await else {
            return;
        };
        if *self.failed.borrow() {
            return;
        }
        let _ = self.queue.send(Job::Write(bytes, permit));
    }

    async fn finish(&self) {
        // Writers waiting for room, and later writes, give up.
        self.budget.close();
        let (done, written) = oneshot::channel();
        if self.queue.send(Job::Finish(done)).is_ok() {
            // An error means the thread has stopped already.
            let _ = written.await;
        }
    }
}

/// The body of a stream's thread.
fn write_jobs(
    mut writer: impl Write,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    failed: &watch::Sender<bool>,
) {
    let mut ok = true;
    while let Some(job) = jobs.blocking_recv() {
        match job {
            // The permit is released when this arm ends: after the write.
            Job::Write(bytes, _permit) => {
                // Flushing only when nothing else waits sends a burst in few
                // system calls and a lone line at once.
                ok = ok
                    && writer.write_all(&bytes).is_ok()
                    && (!jobs.is_empty() || writer.flush().is_ok());
                if !ok {
                    failed.send_replace(true);
                }
            }
            Job::Finish(done) => {
                if ok {
                    let _ = writer.flush();
                }
                let _ = done.send(());
                return;
            }
        }
    }
    // Every handle was dropped without `finish`.
    if ok {
        let _ = writer.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::time::Duration;

    use super::*;
    use crate::testing::{Capture, Gated, broken_pipe};

    #[tokio::test]
    async fn writes_bytes_in_order_and_finish_waits_for_them() {
        let (out, err) = (Capture::default(), Capture::default());
        let output = Output::with_budget(out.clone(), err.clone(), 8);
        output.stdout(b"one\n".to_vec()).await;
        output.stderr(b"\xff\n".to_vec()).await;
        // Larger than the whole budget: must not wait forever.
        output.stdout(b"two and more\n".to_vec()).await;
        output.clone().finish().await;
        assert_eq!(out.bytes(), b"one\ntwo and more\n");
        assert_eq!(err.bytes(), b"\xff\n");
        // Finished: later output, from any clone, is dropped.
        output.stdout(b"late\n".to_vec()).await;
        assert_eq!(out.bytes(), b"one\ntwo and more\n");
    }

    #[tokio::test]
    async fn a_failed_stdout_closes_it_and_drops_later_output() {
        let output = Output::new(broken_pipe(), io::sink());
        let closed = output.closed();
        assert!(!output.is_closed());
        output.stdout(b"lost\n".to_vec()).await;
        tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .expect("closed() resolves after a failed write");
        assert!(output.is_closed());
        // Already closed: resolves at once; later writes return at once.
        output.closed().await;
        output.stdout(vec![b'x'; 10 * BUDGET]).await;
        output.finish().await;
    }

    #[tokio::test]
    async fn a_failed_stderr_does_not_close_stdout() {
        let out = Capture::default();
        let output = Output::new(out.clone(), broken_pipe());
        output.stderr(b"lost\n".to_vec()).await;
        output.stdout(b"kept\n".to_vec()).await;
        output.clone().finish().await;
        assert!(!output.is_closed());
        assert_eq!(out.bytes(), b"kept\n");
    }

    #[tokio::test]
    async fn finish_waits_for_a_slow_reader() {
        let gated = Gated::default();
        let output = Output::new(gated.clone(), io::sink());
        output.stdout(b"slow\n".to_vec()).await;
        gated.blocked().await;
        let early = tokio::time::timeout(Duration::from_millis(100), output.clone().finish());
        assert!(early.await.is_err(), "finish returned before the write");
        gated.open();
        output.finish().await;
        assert_eq!(gated.bytes(), b"slow\n");
    }
}
