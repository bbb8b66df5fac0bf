//! One proxied connection: both sockets and the four threads that serve it
//! (a reader and a writer per direction), latency applied per chunk, and
//! resets and silence reaching it while it runs.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::framing::Framing;
use crate::{CONNECT_TIMEOUT, Fault, Shared};

/// How often a write stuck on a peer that does not read checks for a reset.
const WRITE_POLL: Duration = Duration::from_millis(200);
/// Chunks in flight per direction; a reader waits when its writer lags this far.
const IN_FLIGHT: usize = 64;

/// A chunk of bytes and the instant it is due at the other side.
type Chunk = (Instant, Vec<u8>);

/// One proxied connection: both sockets, shared by its four threads.
pub(crate) struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    /// Set by `Silent` and never cleared, so that half a request held back
    /// during silence never reaches upstream afterwards.
    pub(crate) silent: AtomicBool,
    /// Set once when the connection is reset; `reset_signal` wakes the
    /// writers waiting for a chunk's due time.
    reset: Mutex<bool>,
    reset_signal: Condvar,
}

impl Conn {
    pub(crate) fn new(client: TcpStream, upstream: TcpStream) -> Conn {
        for socket in [&client, &upstream] {
            // Small requests must not wait for Nagle on top of the latency.
            let _ = socket.set_nodelay(true);
            let _ = socket.set_write_timeout(Some(WRITE_POLL));
        }
        Conn {
            client,
            upstream,
            silent: AtomicBool::new(false),
            reset: Mutex::new(false),
            reset_signal: Condvar::new(),
        }
    }

    /// Resets the connection: both sockets send RST once the last thread lets
    /// go. Returns false if it was already reset.
    pub(crate) fn abort(&self) -> bool {
        let mut reset = self.reset.lock().unwrap_or_else(PoisonError::into_inner);
        if *reset {
            return false;
        }
        *reset = true;
        self.reset_signal.notify_all();
        for socket in [&self.client, &self.upstream] {
            abortive(socket);
            // Wakes a blocked reader with end of file; sends nothing.
            let _ = socket.shutdown(Shutdown::Read);
        }
        true
    }

    pub(crate) fn is_reset(&self) -> bool {
        *self.reset.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_silent(&self) -> bool {
        self.silent.load(Ordering::Relaxed)
    }

    /// Sleeps until `due`; false if the connection is reset meanwhile.
    pub(crate) fn sleep_until(&self, due: Instant) -> bool {
        let mut reset = self.reset.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let now = Instant::now();
            if *reset || now >= due {
                return !*reset;
            }
            reset = self
                .reset_signal
                .wait_timeout(reset, due - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Makes closing `socket` send RST instead of FIN.
pub(crate) fn abortive(socket: &TcpStream) {
    let _ = SockRef::from(socket).set_linger(Some(Duration::ZERO));
}

/// Connects `client` to upstream and carries its traffic until both sides
/// are done or it is reset.
pub(crate) fn serve(shared: &Shared, client: TcpStream) {
    let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, CONNECT_TIMEOUT) else {
        // Nothing behind the proxy: the client sees a reset.
        abortive(&client);
        return;
    };
    let conn = Arc::new(Conn::new(client, upstream));
    let id = {
        let mut state = shared.lock();
        if state.stopping {
            conn.abort();
            return;
        }
        match state.fault {
            Fault::ResetAll | Fault::Refuse => {
                conn.abort();
                state.stats.reset += 1;
                return;
            }
            Fault::Silent => conn.silent.store(true, Ordering::Relaxed),
            Fault::None | Fault::ResetAction(_) => {}
        }
        let id = state.next_id;
        state.next_id += 1;
        state.open.insert(id, Arc::clone(&conn));
        id
    };
    let (to_upstream, for_upstream) = mpsc::sync_channel(IN_FLIGHT);
    let (to_client, for_client) = mpsc::sync_channel(IN_FLIGHT);
    thread::scope(|s| {
        s.spawn(|| deliver(&conn, for_upstream, &conn.upstream));
        s.spawn(|| deliver(&conn, for_client, &conn.client));
        s.spawn(|| read_upstream(shared, &conn, to_client));
        read_client(shared, &conn, to_upstream);
    });
    // The last reference: if the connection was reset, this close sends RST.
    shared.lock().open.remove(&id);
}

/// Reads what upstream answers. Taking the sender by value matters: when this
/// returns, the client's writer sees the end of its chunks.
fn read_upstream(shared: &Shared, conn: &Conn, to_client: SyncSender<Chunk>) {
    pump(shared, conn, &conn.upstream, |bytes, due| {
        to_client.send((due, bytes.to_vec())).is_ok()
    });
}

/// Reads what the client sends, holding each request head until it is whole
/// so that `ResetAction` acts before any of the request reaches upstream.
fn read_client(shared: &Shared, conn: &Conn, to_upstream: SyncSender<Chunk>) {
    let mut framing = Framing::default();
    pump(shared, conn, &conn.client, |bytes, due| {
        for part in framing.feed(bytes) {
            if let Some(action) = &part.action {
                let mut state = shared.lock();
                if matches!(&state.fault, Fault::ResetAction(reset) if reset == action) {
                    if conn.abort() {
                        state.stats.reset += 1;
                    }
                    return false;
                }
                *state.stats.requests.entry(action.clone()).or_default() += 1;
            }
            if to_upstream.send((due, part.bytes)).is_err() {
                return false;
            }
        }
        true
    });
}

/// Reads `from` until end of file, handing each chunk and the instant it is
/// due to `forward` (until it returns false), or dropping it while the
/// connection is silent. A read error (the peer reset) resets the connection.
fn pump(
    shared: &Shared,
    conn: &Conn,
    mut from: &TcpStream,
    mut forward: impl FnMut(&[u8], Instant) -> bool,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                conn.abort();
                return;
            }
        };
        let due = Instant::now() + shared.lock().latency;
        if !conn.is_silent() && !forward(&buf[..n], due) {
            return;
        }
    }
}

/// Writes each chunk to `to` once it is due, then passes the end of file on,
/// unless the connection was reset: then it stops at once and sends nothing.
fn deliver(conn: &Conn, chunks: Receiver<Chunk>, mut to: &TcpStream) {
    for (due, bytes) in chunks {
        if !conn.sleep_until(due) {
            return;
        }
        if conn.is_silent() {
            continue;
        }
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            match to.write(rest) {
                Ok(0) => {
                    conn.abort();
                    return;
                }
                Ok(n) => rest = &rest[n..],
                // The write timeout lets a write to a peer that does not read
                // notice a reset.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) && !conn.is_reset() => {}
                Err(_) => {
                    conn.abort();
                    return;
                }
            }
        }
    }
    if !conn.is_reset() {
        let _ = to.shutdown(Shutdown::Write);
    }
}
