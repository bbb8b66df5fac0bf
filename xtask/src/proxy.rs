//! `cargo xtask proxy`: the fault proxy run by hand, switched by commands
//! read on stdin.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use fifo_fault_proxy::{Fault, Proxy};

use crate::Result;

const PROXY_USAGE: &str = "cargo xtask proxy [--listen ADDR] [--upstream ADDR] [--latency-ms N]";
const PROXY_COMMANDS: &str = "pass, latency MS, reset, reset ACTION, refuse, silent, stats, quit";

/// Runs the fault proxy until `quit` or the end of stdin, switching it by
/// the commands read there and printing the state after each.
pub(crate) fn proxy(args: &[String]) -> Result<()> {
    let (mut listen, mut upstream, mut latency_ms) = ("127.0.0.1:4567", "127.0.0.1:4566", 0);
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .map(String::as_str)
            .ok_or_else(|| format!("{flag} needs a value\nusage: {PROXY_USAGE}"));
        match flag.as_str() {
            "--listen" => listen = value?,
            "--upstream" => upstream = value?,
            "--latency-ms" => {
                latency_ms = value?
                    .parse()
                    .map_err(|_| "--latency-ms takes a whole number of milliseconds".to_owned())?;
            }
            other => return Err(format!("unknown flag `{other}`\nusage: {PROXY_USAGE}")),
        }
    }
    let (listen, upstream) = (socket_addr(listen)?, socket_addr(upstream)?);
    let proxy =
        Proxy::start_on(listen, upstream).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    proxy.set_latency(Duration::from_millis(latency_ms));
    println!(
        "proxy listening on {} and forwarding to {upstream}; commands: {PROXY_COMMANDS}",
        proxy.url()
    );
    for line in std::io::stdin().lines() {
        let line = line.map_err(|e| format!("cannot read stdin: {e}"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            [] => continue,
            ["pass"] => proxy.set_fault(Fault::None),
            ["latency", ms] => match ms.parse() {
                Ok(ms) => {
                    latency_ms = ms;
                    proxy.set_latency(Duration::from_millis(ms));
                }
                Err(_) => {
                    eprintln!("error: `latency` takes milliseconds, e.g. `latency 50`");
                    continue;
                }
            },
            ["reset"] => proxy.set_fault(Fault::ResetAll),
            ["reset", action] => proxy.set_fault(Fault::ResetAction(action.to_owned())),
            ["refuse"] => proxy.set_fault(Fault::Refuse),
            ["silent"] => proxy.set_fault(Fault::Silent),
            ["stats"] => println!("{}", proxy.stats()),
            ["quit"] => break,
            _ => {
                eprintln!("error: unknown command `{line}`; commands: {PROXY_COMMANDS}");
                continue;
            }
        }
        println!("{}, latency {latency_ms} ms", proxy.fault());
    }
    drop(proxy);
    println!("proxy stopped");
    Ok(())
}

fn socket_addr(addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| format!("bad address `{addr}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{addr}` resolves to no address"))
}
