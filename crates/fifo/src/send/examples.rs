//! Examples of one kind of outcome, for the summary of `fifo send`: the
//! first few lines, and how many there were.

use super::EXAMPLES;
use crate::stderr::stderr_line;

/// Up to [`EXAMPLES`] lines of one kind, and how many there were.
#[derive(Debug, Default)]
pub(crate) struct Examples {
    pub(crate) count: u64,
    pub(crate) lines: Vec<String>,
}

impl Examples {
    pub(crate) fn add(&mut self, line: String) {
        self.count += 1;
        if self.lines.len() < EXAMPLES {
            self.lines.push(line);
        }
    }

    pub(crate) fn add_opt(&mut self, line: Option<String>) {
        if let Some(line) = line {
            self.add(line);
        }
    }

    /// Prints the examples, each prefixed by `label`, then how many more.
    pub(crate) fn print(&self, label: &str) {
        for line in &self.lines {
            stderr_line(format_args!("{label}: {line}"));
        }
        if self.count > self.lines.len() as u64 {
            stderr_line(format_args!(
                "{label}: … and {} more",
                self.count - self.lines.len() as u64
            ));
        }
    }
}
