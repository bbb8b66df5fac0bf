//! Lines to stderr: written as they are, or, with `--log-format json`, as
//! JSON objects like the log's own, so that stderr stays one JSON object
//! per line.

/// Set once at start by `--log-format json`.
static JSON_LINES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether stderr is JSON lines (`--log-format json`).
pub(crate) fn json_lines() -> bool {
    JSON_LINES.load(std::sync::atomic::Ordering::Relaxed)
}

/// From now on [`stderr_line`] writes JSON objects, as the log does, so
/// that stderr stays one JSON object per line.
pub(crate) fn use_json_lines() {
    JSON_LINES.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Writes one line to stderr. Unlike `eprintln!` it does not panic when
/// nobody reads stderr any more (`fifo run 2>&1 | head`): the line is lost.
/// With JSON logs the line becomes `{"timestamp", "level", "message"}`,
/// the level from an `error: ` or `warning: ` prefix.
pub(crate) fn stderr_line(line: std::fmt::Arguments<'_>) {
    let text = line.to_string();
    if !json_lines() {
        return write_line(&text);
    }
    let (level, message) = [("error: ", "ERROR"), ("warning: ", "WARN")]
        .iter()
        .find_map(|(prefix, level)| Some((*level, text.strip_prefix(prefix)?)))
        .unwrap_or(("INFO", &text));
    write_line(&json_line(level, message).to_string());
}

/// Writes `text` and a newline to stderr, losing it when nobody reads.
pub(crate) fn write_line(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// A line as the JSON log writes its own.
pub(crate) fn json_line(level: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "timestamp": now_rfc3339(),
        "level": level,
        "message": message,
        "target": "fifo",
    })
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
