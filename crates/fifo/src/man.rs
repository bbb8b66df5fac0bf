//! `fifo man`: the manual pages, one per command (`fifo(1)`, `fifo-run(1)`,
//! `fifo-dlq-peek(1)`…), made from the same clap definition as `--help`,
//! so they say what the binary does.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap_mangen::Man;
use color_eyre::eyre::{Result, WrapErr};

use crate::cli::{Cli, ManArgs};
use crate::error::UserError;
use crate::stderr::stderr_line;

pub(crate) fn run(args: &ManArgs) -> Result<ExitCode> {
    let pages = pages();
    if let Some(dir) = &args.dir {
        write_all(&pages, dir)?;
        stderr_line(format_args!(
            "wrote {} man pages to {}",
            pages.len(),
            dir.display()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let wanted = args.command.join(" ");
    let Some(page) = pages.iter().find(|page| page.command == wanted) else {
        let commands: Vec<&str> = pages
            .iter()
            .map(|page| page.command.as_str())
            .filter(|command| !command.is_empty())
            .collect();
        return Err(UserError::new(
            format!("fifo has no command `{wanted}`"),
            Some(format!("give one of: {}", commands.join(", "))),
        )
        .into());
    };
    std::io::stdout()
        .lock()
        .write_all(&page.roff)
        .wrap_err("writing the man page")?;
    Ok(ExitCode::SUCCESS)
}

/// One command's man page.
struct Page {
    /// The command's words after `fifo` (`dlq peek`; empty for fifo itself).
    command: String,
    /// Its file name (`fifo-dlq-peek.1`).
    file: String,
    roff: Vec<u8>,
}

/// Every command's page.
fn pages() -> Vec<Page> {
    let mut command = Cli::full_command().disable_help_subcommand(true);
    // Built, every subcommand knows its full name (`fifo-dlq-peek`).
    command.build();
    let mut pages = Vec::new();
    add_pages(&command, "", &mut pages);
    pages
}

fn add_pages(command: &clap::Command, words: &str, pages: &mut Vec<Page>) {
    let man = Man::new(command.clone())
        .source(format!("fifo {}", env!("CARGO_PKG_VERSION")))
        .manual("fifo manual");
    let mut roff = Vec::new();
    man.render(&mut roff)
        .expect("rendering into memory cannot fail");
    // The help's ellipsis has no glyph on a terminal without UTF-8, where
    // man warns of it: three dots read the same everywhere.
    let roff = String::from_utf8(roff)
        .expect("clap_mangen writes UTF-8")
        .replace('…', "...");
    pages.push(Page {
        command: words.to_owned(),
        file: man.get_filename(),
        roff: roff.into_bytes(),
    });
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let words = format!("{words} {}", sub.get_name());
        add_pages(sub, words.trim_start(), pages);
    }
}

/// Writes `pages` into `dir`, created if missing.
fn write_all(pages: &[Page], dir: &Path) -> Result<()> {
    let cannot = |e: std::io::Error| {
        let why = if dir.exists() && !dir.is_dir() {
            "it is not a directory".to_owned()
        } else {
            e.to_string()
        };
        UserError::new(
            format!("cannot write man pages to {}: {why}", dir.display()),
            Some("give --dir a directory you may write to (it is created if missing)".to_owned()),
        )
    };
    std::fs::create_dir_all(dir).map_err(cannot)?;
    for page in pages {
        std::fs::write(dir.join(&page.file), &page.roff).map_err(cannot)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_a_page_named_after_it() {
        let pages = pages();
        let names: Vec<&str> = pages.iter().map(|page| page.file.as_str()).collect();
        for name in [
            "fifo.1",
            "fifo-run.1",
            "fifo-dlq-peek.1",
            "fifo-groups-skip.1",
            "fifo-man.1",
        ] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        let peek = pages.iter().find(|p| p.command == "dlq peek").unwrap();
        assert_eq!(peek.file, "fifo-dlq-peek.1");
        let run = pages.iter().find(|p| p.command == "run").unwrap();
        let run = String::from_utf8_lossy(&run.roff);
        assert!(run.starts_with(".ie"), "roff: {}", &run[..40]);
        // The settings' help is the one --help shows.
        assert!(run.contains("FIFO_HTTP_FORMAT"), "{run}");
    }
}
