//! A TCP proxy between fifo and LocalStack that injects the faults fifo must
//! survive: latency, connection resets (all, or the calls of one SQS action),
//! refused connects and silence, switchable while it runs. The tests and
//! the benchmark run it in-process; `cargo xtask proxy` runs it by hand.
//!
//! Layout: one accept thread owns the listener and a join handle per
//! connection; the shared [`State`] holds the fault, the latency, the counters
//! and a registry of open connections so that a fault reaches them at once.
//! Per connection, each direction is a reader thread that stamps every chunk
//! with the instant it is due and a writer thread that sends it then, so
//! latency delays each chunk without limiting throughput.
//!
//! A reset is a real RST: linger zero on both sockets, `shutdown(Read)` to
//! wake the readers (it sends nothing), and the writers notice the reset flag;
//! when the last thread lets go, closing the socket sends the RST.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

mod connection;
mod framing;

use self::connection::{Conn, serve};

/// How long a new connection waits for upstream to accept it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `set_fault` waits for the listener to close or open again.
const LISTENER_WAIT: Duration = Duration::from_secs(5);

/// A running proxy. Dropping it stops accepting, resets every connection and
/// joins every thread.
pub struct Proxy {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// What the proxy does to the traffic it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything (after the latency).
    None,
    /// Reset every open connection now (RST to the client, upstream closed)
    /// and every new one at once, while the fault holds.
    ResetAll,
    /// Reset a connection when the client sends a request for this SQS
    /// action, before any of that request reaches upstream; other requests
    /// pass. The action is read from the `X-Amz-Target: AmazonSQS.<Action>`
    /// header, e.g. `ResetAction("DeleteMessageBatch".into())`.
    ResetAction(String),
    /// Stop listening, so connects are refused; open connections are reset.
    /// When the fault is lifted the proxy listens again on the same address.
    Refuse,
    /// Nothing is forwarded or answered: open and new connections accept
    /// bytes and drop them. A connection that saw silence stays silent until
    /// it is closed; connections opened after the fault is lifted work.
    Silent,
}

impl fmt::Display for Fault {
    /// The `cargo xtask proxy` command that sets this fault.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::None => f.write_str("pass"),
            Fault::ResetAll => f.write_str("reset"),
            Fault::ResetAction(action) => write!(f, "reset {action}"),
            Fault::Refuse => f.write_str("refuse"),
            Fault::Silent => f.write_str("silent"),
        }
    }
}

/// What the proxy has seen since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub accepted: u64,
    /// Connections open now.
    pub open: usize,
    /// Connections a fault reset, including new ones reset at once.
    pub reset: u64,
    /// Requests let through towards upstream, per SQS action (the
    /// `X-Amz-Target` after `AmazonSQS.`), or per method and path for a
    /// request without that header. Requests a fault reset or swallowed are
    /// not counted.
    pub requests: BTreeMap<String, u64>,
}

impl fmt::Display for ProxyStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connections accepted, {} open, {} reset by a fault; requests:",
            self.accepted, self.open, self.reset
        )?;
        if self.requests.is_empty() {
            return f.write_str(" none");
        }
        for (i, (action, count)) in self.requests.iter().enumerate() {
            let separator = if i == 0 { " " } else { ", " };
            write!(f, "{separator}{action} {count}")?;
        }
        Ok(())
    }
}

impl Proxy {
    /// Listens on 127.0.0.1 on a free port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<Proxy> {
        Proxy::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), upstream)
    }

    /// Listens on `listen` and forwards to `upstream`.
    pub fn start_on(listen: SocketAddr, upstream: SocketAddr) -> io::Result<Proxy> {
        let listener = TcpListener::bind(listen)?;
        let shared = Arc::new(Shared {
            addr: listener.local_addr()?,
            upstream,
            state: Mutex::new(State {
                fault: Fault::None,
                latency: Duration::ZERO,
                stopping: false,
                listening: true,
                open: HashMap::new(),
                next_id: 0,
                stats: ProxyStats::default(),
            }),
            changed: Condvar::new(),
        });
        let accept = thread::Builder::new()
            .name("proxy-accept".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || accept_loop(&shared, listener)
            })?;
        Ok(Proxy {
            shared,
            accept: Some(accept),
        })
    }

    /// The address it listens on (the same again after `Refuse` is lifted).
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// "http://127.0.0.1:PORT", to give fifo as its endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// Delay added to each direction (so a call costs about 2 × this more).
    /// Chunks read from now on get the new delay.
    pub fn set_latency(&self, one_way: Duration) {
        self.shared.lock().latency = one_way;
    }

    /// Switches the fault. Returns once it holds: after `Refuse` connects are
    /// refused, and after lifting `Refuse` the proxy listens again (it waits
    /// up to 5 s for the address, should another process have taken it).
    pub fn set_fault(&self, fault: Fault) {
        let shared = &*self.shared;
        let mut state = shared.lock();
        match fault {
            Fault::ResetAll | Fault::Refuse => {
                let mut reset = 0;
                for conn in state.open.values() {
                    if conn.abort() {
                        reset += 1;
                    }
                }
                state.stats.reset += reset;
            }
            Fault::Silent => {
                for conn in state.open.values() {
                    conn.silent.store(true, Ordering::Relaxed);
                }
            }
            Fault::None | Fault::ResetAction(_) => {}
        }
        let was_refusing = state.fault == Fault::Refuse;
        let refuse = fault == Fault::Refuse;
        state.fault = fault;
        shared.changed.notify_all();
        if refuse && state.listening {
            // The accept thread sits in `accept`: a connect wakes it to close
            // the listener.
            drop(state);
            shared.wake_accept();
            shared.wait_while(|s| s.listening);
        } else if was_refusing && !refuse {
            drop(state);
            shared.wait_while(|s| !s.listening);
        }
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        self.shared.lock().fault.clone()
    }

    /// Counters for tests and the CLI.
    pub fn stats(&self) -> ProxyStats {
        let state = self.shared.lock();
        ProxyStats {
            open: state.open.len(),
            ..state.stats.clone()
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let listening = {
            let mut state = self.shared.lock();
            state.stopping = true;
            state.listening
        };
        self.shared.changed.notify_all();
        if listening {
            self.shared.wake_accept();
        }
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// What the accept thread, the connections and the [`Proxy`] handle share.
struct Shared {
    /// The address actually bound, so that lifting `Refuse` binds the same port.
    addr: SocketAddr,
    upstream: SocketAddr,
    state: Mutex<State>,
    /// Signalled when `fault`, `stopping` or `listening` change.
    changed: Condvar,
}

struct State {
    fault: Fault,
    latency: Duration,
    /// Set once, by `Drop`: the accept thread resets everything and ends.
    stopping: bool,
    /// Whether the listener is open; the accept thread closes it under `Refuse`.
    listening: bool,
    /// Every connection serving traffic, so that a fault reaches it at once.
    open: HashMap<u64, Arc<Conn>>,
    next_id: u64,
    /// Counters; `open` is filled in from the registry when read.
    stats: ProxyStats,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits, at most [`LISTENER_WAIT`], for the accept thread to change
    /// `listening` so that `condition` no longer holds.
    fn wait_while(&self, condition: impl FnMut(&mut State) -> bool) {
        let state = self.lock();
        drop(
            self.changed
                .wait_timeout_while(state, LISTENER_WAIT, condition)
                .unwrap_or_else(PoisonError::into_inner),
        );
    }

    /// Connects to our own listener so that a blocked `accept` returns and
    /// the accept thread looks at the state again.
    fn wake_accept(&self) {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT);
    }

    /// Waits while the fault is `Refuse`, then binds the same address again;
    /// `None` once the proxy stops.
    fn listen_again(&self) -> Option<TcpListener> {
        let mut state = self.lock();
        loop {
            if state.stopping {
                return None;
            }
            if state.fault == Fault::Refuse {
                state = self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            if let Ok(listener) = TcpListener::bind(self.addr) {
                state.listening = true;
                self.changed.notify_all();
                return Some(listener);
            }
            // Another process took the port meanwhile: try again shortly.
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Accepts connections until the proxy stops, closing the listener while the
/// fault is `Refuse`; at the end resets every connection and joins its thread.
fn accept_loop(shared: &Arc<Shared>, listener: TcpListener) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    let mut first = Some(listener);
    while let Some(listener) = first.take().or_else(|| shared.listen_again()) {
        loop {
            let accepted = listener.accept();
            connections.retain(|c| !c.is_finished());
            {
                let mut state = shared.lock();
                if state.stopping || state.fault == Fault::Refuse {
                    break;
                }
                if accepted.is_ok() {
                    state.stats.accepted += 1;
                }
            }
            match accepted {
                Ok((client, _)) => {
                    let shared = Arc::clone(shared);
                    let spawned = thread::Builder::new()
                        .name("proxy-connection".to_owned())
                        .spawn(move || serve(&shared, client));
                    // Without a thread the client is simply closed.
                    connections.extend(spawned.ok());
                }
                // E.g. out of file descriptors: do not spin.
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
        drop(listener);
        shared.lock().listening = false;
        shared.changed.notify_all();
    }
    for conn in shared.lock().open.values() {
        conn.abort();
    }
    for connection in connections {
        let _ = connection.join();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
    use std::time::Instant;

    use super::*;
    use crate::framing::{Framing, Part};

    /// A keep-alive HTTP server that answers every request with 200 and the
    /// request's action as the body, and records the actions it saw.
    struct Upstream {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl Upstream {
        fn start() -> Upstream {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let seen = Arc::new(Mutex::new(Vec::new()));
            let recorder = Arc::clone(&seen);
            thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let seen = Arc::clone(&recorder);
                    thread::spawn(move || answer(stream, &seen));
                }
            });
            Upstream { addr, seen }
        }

        fn seen(&self) -> Vec<String> {
            self.seen.lock().unwrap().clone()
        }
    }

    fn answer(mut stream: TcpStream, seen: &Mutex<Vec<String>>) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        // A request cut off by a reset is an error here, so it is not recorded.
        while let Ok(Some((action, _))) = read_message(&mut reader) {
            seen.lock().unwrap().push(action.clone());
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{action}",
                action.len()
            );
            if stream.write_all(response.as_bytes()).is_err() {
                return;
            }
        }
    }

    /// Reads one HTTP message: its SQS action and its body; `None` at end of
    /// file before a message starts.
    fn read_message(reader: &mut impl BufRead) -> io::Result<Option<(String, String)>> {
        let (mut action, mut length) = (String::new(), 0);
        for first in [true].into_iter().chain(std::iter::repeat(false)) {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return match first {
                    true => Ok(None),
                    false => Err(ErrorKind::UnexpectedEof.into()),
                };
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.eq_ignore_ascii_case("x-amz-target") {
                action = value.trim().trim_start_matches("AmazonSQS.").to_owned();
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        Ok(Some((action, String::from_utf8(body).unwrap())))
    }

    /// A request as aws-sdk-sqs sends it (AWS JSON protocol).
    fn request(action: &str) -> String {
        format!(
            "POST / HTTP/1.1\r\nHost: sqs\r\nX-Amz-Target: AmazonSQS.{action}\r\n\
             Content-Type: application/x-amz-json-1.0\r\nContent-Length: 2\r\n\r\n{{}}"
        )
    }

    struct Client {
        stream: TcpStream,
        reader: BufReader<TcpStream>,
    }

    impl Client {
        fn connect(proxy: &Proxy) -> Client {
            let stream = TcpStream::connect(proxy.addr()).unwrap();
            stream.set_nodelay(true).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let reader = BufReader::new(stream.try_clone().unwrap());
            Client { stream, reader }
        }

        fn send(&mut self, bytes: &str) -> io::Result<()> {
            self.stream.write_all(bytes.as_bytes())
        }

        /// The body of the next response; a clean end of file is an error too.
        fn response(&mut self) -> io::Result<String> {
            match read_message(&mut self.reader)? {
                Some((_, body)) => Ok(body),
                None => Err(io::Error::new(ErrorKind::UnexpectedEof, "closed cleanly")),
            }
        }

        fn call(&mut self, action: &str) -> io::Result<String> {
            self.send(&request(action))?;
            self.response()
        }

        /// Asserts that no answer, and no end of file, arrives within 300 ms.
        fn assert_silent(&mut self) {
            self.stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let error = self.response().expect_err("no answer while silent");
            assert!(
                matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "expected a read timeout, got {error}"
            );
            self.stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
        }
    }

    fn assert_reset(result: io::Result<String>) {
        let error = result.expect_err("the connection should have been reset");
        assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{error}");
    }

    fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|&(a, n)| (a.to_owned(), n)).collect()
    }

    #[test]
    fn forwards_requests_and_responses() -> io::Result<()> {
        let upstream = Upstream::start();
        let proxy = Proxy::start(upstream.addr)?;
        assert_eq!(
            proxy.url(),
            format!("http://127.0.0.1:{}", proxy.addr().port())
        );
        let mut client = Client::connect(&proxy);
        assert_eq!(client.call("SendMessage")?, "SendMessage");
        assert_eq!(client.call("ReceiveMessage")?, "ReceiveMessage");
        assert_eq!(upstream.seen(), ["SendMessage", "ReceiveMessage"]);
        let stats = proxy.stats();
        assert_eq!((stats.accepted, stats.open, stats.reset), (1, 1, 0));
        assert_eq!(
            stats.requests,
            counts(&[("ReceiveMessage", 1), ("SendMessage", 1)])
        );
        Ok(())
    }

    #[test]
    fn latency_delays_each_direction_without_limiting_throughput() -> io::Result<()> {
        let one_way = Duration::from_millis(250);
        let upstream = Upstream::start();
        let proxy = Proxy::start(upstream.addr)?;
        proxy.set_latency(one_way);
        let mut client = Client::connect(&proxy);

        let start = Instant::now();
        client.call("SendMessage")?;
        assert!(start.elapsed() >= 2 * one_way, "{:?}", start.elapsed());

        // Two requests in flight at once, the second 20 ms after the first so
        // that the proxy reads them as two chunks. Delayed side by side they
        // take 2 × one_way and a little; a proxy that held each direction for
        // a delay per chunk would take at least 3 × one_way.
        let start = Instant::now();
        client.send(&request("ReceiveMessage"))?;
        thread::sleep(Duration::from_millis(20));
        client.send(&request("DeleteMessage"))?;
        assert_eq!(client.response()?, "ReceiveMessage");
        assert_eq!(client.response()?, "DeleteMessage");
        let elapsed = start.elapsed();
        assert!(elapsed >= 2 * one_way, "{elapsed:?}");
        assert!(elapsed < 3 * one_way, "{elapsed:?}");
        Ok(())
    }

    #[test]
    fn reset_all_resets_open_and_new_connections_until_lifted() -> io::Result<()> {
        let upstream = Upstream::start();
        let proxy = Proxy::start(upstream.addr)?;
        let mut open = Client::connect(&proxy);
        open.call("ReceiveMessage")?;

        proxy.set_fault(Fault::ResetAll);
        assert_eq!(proxy.fault(), Fault::ResetAll);
        assert_reset(open.response());
        assert_reset(Client::connect(&proxy).call("ReceiveMessage"));
        let stats = proxy.stats();
        assert_eq!((stats.reset, stats.open), (2, 0));

        proxy.set_fault(Fault::None);
        assert_eq!(Client::connect(&proxy).call("SendMessage")?, "SendMessage");
        assert_eq!(upstream.seen(), ["ReceiveMessage", "SendMessage"]);
        Ok(())
    }

    #[test]
    fn reset_action_resets_only_that_action() -> io::Result<()> {
        let upstream = Upstream::start();
        let proxy = Proxy::start(upstream.addr)?;
        let mut client = Client::connect(&proxy);
        client.call("ReceiveMessage")?;

        proxy.set_fault(Fault::ResetAction("DeleteMessageBatch".into()));
        assert_eq!(client.call("SendMessage")?, "SendMessage");
        assert_reset(client.call("DeleteMessageBatch"));
        assert_eq!(
            Client::connect(&proxy).call("ReceiveMessage")?,
            "ReceiveMessage"
        );
        assert_eq!(
            upstream.seen(),
            ["ReceiveMessage", "SendMessage", "ReceiveMessage"]
        );
        let stats = proxy.stats();
        assert_eq!(stats.reset, 1);
        assert_eq!(
            stats.requests,
            counts(&[("ReceiveMessage", 2), ("SendMessage", 1)])
        );
        Ok(())
    }

    #[test]
    fn reset_action_sees_a_header_split_across_writes() -> io::Result<()> {
        let upstream = Upstream::start();
        let proxy = Proxy::start(upstream.addr)?;
        proxy.set_fault(Fault::ResetAction("DeleteMessageBatch".into()));
        let mut client = Client::connect(&proxy);
        let request = request("DeleteMessageBatch").replace("X-Amz-Target", "x-amz-target");
        let (first, second) = request.split_at(request.find("target").unwrap());
        client.send(first)?;
        // Only makes it likely that the proxy reads the head in two pieces;
        // `framing_finds_the_action_however_the_head_is_split` covers every
        // split without relying on timing.
        thread::sleep(Duration::from_millis(50));
        client.send(second)?;
        assert_reset(client.response());

        assert_eq!(
            Client::connect(&proxy).call("DeleteMessage")?,
            "DeleteMessage"
        );
        assert_eq!(upstream.seen(), ["DeleteMessage"]);
        Ok(())
    }

    #[test]
    fn framing_finds_the_action_however_the_head_is_split() {
        let request = request("DeleteMessageBatch").replace("X-Amz-Target", "x-amz-target");
        let head_len = request.find("\r\n\r\n").unwrap() + 4;
        for split in 0..=request.len() {
            let mut framing = Framing::default();
            let early = framing.feed(&request.as_bytes()[..split]);
            let late = framing.feed(&request.as_bytes()[split..]);
            if split < head_len {
                assert_eq!(early, [], "nothing passes before the head is whole");
            }
            let parts: Vec<Part> = early.into_iter().chain(late).collect();
            let actions: Vec<_> = parts.iter().filter_map(|p| p.action.as_deref()).collect();
            assert_eq!(actions, ["DeleteMessageBatch"], "split at {split}");
            let bytes: Vec<u8> = parts.into_iter().flat_map(|p| p.bytes).collect();
            assert_eq!(bytes, request.as_bytes());
        }
    }

    #[test]
    fn framing_passes_bodies_and_pipelined_requests() {
        let tricky_body = "\r\n\r\nX-Amz-Target: AmazonSQS.Hidden\r\n\r\n";
        let stream = format!(
            "{}POST / HTTP/1.1\r\nX-Amz-Target: AmazonSQS.SendMessage\r\n\
             Content-Length: {}\r\n\r\n{tricky_body}\
             GET /_localstack/health HTTP/1.1\r\nHost: x\r\n\r\n",
            request("ReceiveMessage"),
            tricky_body.len()
        );
        let mut framing = Framing::default();
        let parts = framing.feed(stream.as_bytes());
        let actions: Vec<_> = parts.iter().filter_map(|p| p.action.as_deref()).collect();
        assert_eq!(
            actions,
            ["ReceiveMessage", "SendMessage", "GET /_localstack/health"]
        );
        let bytes: Vec<u8> = parts.into_iter().flat_map(|p| p.bytes).collect();
        assert_eq!(bytes, stream.as_bytes());
    }

    #[test]
    fn refuse_refuses_connects_until_lifted_on_the_same_port() -> io::Result<()> {
        let upstream = Upstream::start();
        let proxy = Proxy::start(upstream.addr)?;
        let addr = proxy.addr();
        let mut open = Client::connect(&proxy);
        open.call("ReceiveMessage")?;

        proxy.set_fault(Fault::Refuse);
        assert_reset(open.response());
        let refused = TcpStream::connect(addr).expect_err("connects are refused");
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");

        proxy.set_fault(Fault::None);
        assert_eq!(proxy.addr(), addr);
        assert_eq!(Client::connect(&proxy).call("SendMessage")?, "SendMessage");
        assert_eq!(proxy.stats().reset, 1);
        Ok(())
    }

    #[test]
    fn silent_answers_nothing_until_lifted() -> io::Result<()> {
        let upstream = Upstream::start();
        let proxy = Proxy::start(upstream.addr)?;
        let mut open = Client::connect(&proxy);
        open.call("ReceiveMessage")?;

        proxy.set_fault(Fault::Silent);
        open.send(&request("SendMessage"))?;
        open.assert_silent();
        let mut new = Client::connect(&proxy);
        new.send(&request("SendMessage"))?;
        new.assert_silent();

        proxy.set_fault(Fault::None);
        // A connection that saw silence stays silent, even for a new request.
        open.send(&request("PurgeQueue"))?;
        open.assert_silent();
        assert_eq!(
            Client::connect(&proxy).call("DeleteMessage")?,
            "DeleteMessage"
        );
        assert_eq!(upstream.seen(), ["ReceiveMessage", "DeleteMessage"]);
        Ok(())
    }

    #[test]
    fn drop_closes_connections_and_the_port() -> io::Result<()> {
        let upstream = Upstream::start();
        let proxy = Proxy::start(upstream.addr)?;
        let addr = proxy.addr();
        let mut open = Client::connect(&proxy);
        open.call("ReceiveMessage")?;

        drop(proxy);
        let mut byte = [0; 1];
        match open.stream.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("expected the connection closed, got {other:?}"),
        }
        let refused = TcpStream::connect(addr).expect_err("nothing listens any more");
        assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
        Ok(())
    }
}
