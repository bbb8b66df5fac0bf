//! Plain HTTP/1.0 requests to a `fifo run --metrics-addr` server, and a
//! free port to give it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A free port on this machine (free when this returns; the run binds it a
/// moment later).
pub fn free_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// `METHOD path` on `addr`, with an `Authorization` header if given: the
/// status code and the body. A run just started may not listen yet: it is
/// waited for, up to 30 s.
pub fn request(addr: &str, method: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    let mut stream = connect(addr);
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n{auth}\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().expect("a status");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

/// `GET path` on `addr`: the status code and the body.
pub fn get(addr: &str, path: &str) -> (u16, String) {
    request(addr, "GET", path, None)
}

fn connect(addr: &str) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match TcpStream::connect(addr) {
            Ok(stream) => return stream,
            Err(e) => assert!(Instant::now() < deadline, "nothing listens on {addr}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
