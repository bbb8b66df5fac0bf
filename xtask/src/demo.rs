//! `cargo xtask demo`: a queue, the seed's two patterns sent and processed,
//! and a timeline of the run that shows group `same` in order.

use std::path::Path;
use std::process::Command;

use crate::project::{cargo, run, target_dir};
use crate::{Result, log_line};

pub(crate) fn demo() -> Result<()> {
    cargo(&["build", "--quiet", "--package", "fifo"])?;
    let fifo = target_dir().join("debug/fifo");
    // A queue of its own, so earlier messages never mix into the timeline.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let queue = format!("fifo-demo-{stamp}.fifo");
    let queue_url = format!("http://localhost:4566/000000000000/{queue}");
    let with_queue = |args: &[&str]| -> Vec<String> {
        ["--queue-url", queue_url.as_str()]
            .iter()
            .chain(args)
            .map(|s| s.to_string())
            .collect()
    };
    step(
        "create a FIFO queue",
        &fifo,
        &with_queue(&["create-queue", &queue]),
    )?;
    step(
        "send 5 messages to one group: they must be handled 1→5, one at a time",
        &fifo,
        &with_queue(&["send", "--group", "same", "--count", "5"]),
    )?;
    step(
        "send 5 messages to 5 groups: they may be handled side by side",
        &fifo,
        &with_queue(&["send", "--groups", "5", "--count", "5"]),
    )?;
    step(
        "list the queue",
        &fifo,
        &with_queue(&["list-queues", "--prefix", "fifo-demo-"]),
    )?;

    let run_args = with_queue(&[
        "run",
        "--until-empty",
        "--workers",
        "5",
        "--work-ms",
        "500",
        "--wait-time",
        "1",
    ]);
    println!(
        "\n==> process it: 5 workers, 500 ms of work per message\n$ fifo {}",
        run_args[2..].join(" ")
    );
    let output = Command::new(&fifo)
        .args(&run_args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run fifo: {e}"))?;
    let log = String::from_utf8_lossy(&output.stdout);
    print!("{log}");
    if !output.status.success() {
        return Err(format!("fifo run failed ({})", output.status));
    }
    println!("\n{}", timeline(&log)?);
    Ok(())
}

/// One handled message, from the log handler's start and done lines.
struct Span {
    group: String,
    seq: u64,
    start: f64,
    end: f64,
}

/// Draws the log handler's output as a timeline, one row per message, and
/// says whether group `same` ran in order, one at a time.
fn timeline(log: &str) -> Result<String> {
    let mut spans: Vec<Span> = Vec::new();
    let mut open: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for line in log.lines().filter_map(log_line::parse) {
        match line.event {
            log_line::LogEvent::Start => {
                // The demo's bodies carry the order they were sent in.
                let seq = line
                    .body
                    .and_then(|body| body.split("\"seq\":").nth(1))
                    .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
                    .unwrap_or(0);
                open.insert(line.sequence_number.to_owned(), spans.len());
                spans.push(Span {
                    group: line.group.to_owned(),
                    seq,
                    start: line.at,
                    end: line.at,
                });
            }
            log_line::LogEvent::Done => {
                if let Some(&index) = open.get(line.sequence_number) {
                    spans[index].end = line.at;
                }
            }
        }
    }
    if spans.is_empty() {
        return Err("the run printed no messages".to_owned());
    }
    let origin = spans.iter().map(|s| s.start).fold(f64::INFINITY, f64::min);
    for span in &mut spans {
        span.start -= origin;
        span.end -= origin;
    }
    spans.sort_by(|a, b| {
        (a.group != "same", &a.group, a.seq).cmp(&(b.group != "same", &b.group, b.seq))
    });
    let scale = 0.1; // seconds per column
    let mut chart = String::from("timeline (one █ = 100 ms)\n");
    for span in &spans {
        let from = (span.start / scale).round() as usize;
        let to = ((span.end / scale).round() as usize).max(from + 1);
        chart += &format!(
            "  {:<8} #{} {}{}\n",
            span.group,
            span.seq,
            " ".repeat(from),
            "█".repeat(to - from)
        );
    }
    let same: Vec<&Span> = spans.iter().filter(|s| s.group == "same").collect();
    let in_order = same.iter().map(|s| s.seq).eq(1..=5);
    let one_at_a_time = same.windows(2).all(|w| w[0].end <= w[1].start + 0.0005);
    chart += &format!(
        "\ngroup same: {} {}\n",
        same.iter()
            .map(|s| s.seq.to_string())
            .collect::<Vec<_>>()
            .join(" → "),
        if in_order && one_at_a_time {
            "in order, one at a time"
        } else {
            "OUT OF ORDER"
        }
    );
    let others: Vec<&Span> = spans.iter().filter(|s| s.group != "same").collect();
    let most_at_once = others
        .iter()
        .map(|s| {
            others
                .iter()
                .filter(|o| o.start <= s.start && s.start < o.end)
                .count()
        })
        .max()
        .unwrap_or(0);
    chart += &format!(
        "the other {} groups: up to {most_at_once} side by side\n",
        others.len()
    );
    if !(in_order && one_at_a_time) {
        return Err(format!("{chart}group `same` was not processed in order"));
    }
    Ok(chart)
}

fn step(title: &str, program: &Path, args: &[String]) -> Result<()> {
    println!("\n==> {title}\n$ fifo {}", args[2..].join(" "));
    run(Command::new(program).args(args))
}
