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
    let name = std::iter::once("fifo")
        .chain(args.command.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join("-");
    let Some((_, page)) = pages.iter().find(|(file, _)| *file == format!("{name}.1")) else {
        let commands: Vec<String> = pages
            .iter()
            .filter_map(|(file, _)| file.strip_prefix("fifo-")?.strip_suffix(".1"))
            .map(|name| name.replace('-', " "))
            .collect();
        return Err(UserError::new(
            format!("fifo has no command `{}`", args.command.join(" ")),
            Some(format!("give one of: {}", commands.join(", "))),
        )
        .into());
    };
    std::io::stdout()
        .lock()
        .write_all(page)
        .wrap_err("writing the man page")?;
    Ok(ExitCode::SUCCESS)
}

/// Every page, as its file name (`fifo-dlq-peek.1`) and its roff text.
fn pages() -> Vec<(String, Vec<u8>)> {
    let mut command = Cli::full_command().disable_help_subcommand(true);
    // Built, every subcommand knows its full name (`fifo-dlq-peek`).
    command.build();
    let mut pages = Vec::new();
    add_pages(&command, &mut pages);
    pages
}

fn add_pages(command: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) {
    let man = Man::new(command.clone())
        .source(format!("fifo {}", env!("CARGO_PKG_VERSION")))
        .manual("fifo manual");
    let mut roff = Vec::new();
    man.render(&mut roff)
        .expect("rendering into memory cannot fail");
    pages.push((man.get_filename(), roff));
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        add_pages(sub, pages);
    }
}

/// Writes `pages` into `dir`, created if missing.
fn write_all(pages: &[(String, Vec<u8>)], dir: &Path) -> Result<()> {
    let cannot = |e: std::io::Error| {
        UserError::new(
            format!("cannot write man pages to {}: {e}", dir.display()),
            Some("give --dir a directory you may write to".to_owned()),
        )
    };
    std::fs::create_dir_all(dir).map_err(cannot)?;
    for (file, roff) in pages {
        std::fs::write(dir.join(file), roff).map_err(cannot)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_a_page_named_after_it() {
        let pages = pages();
        let names: Vec<&str> = pages.iter().map(|(file, _)| file.as_str()).collect();
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
        let (_, run) = pages.iter().find(|(f, _)| f == "fifo-run.1").unwrap();
        let run = String::from_utf8_lossy(run);
        assert!(run.starts_with(".ie"), "roff: {}", &run[..40]);
        // The settings' help is the one --help shows.
        assert!(run.contains("FIFO_HTTP_FORMAT"), "{run}");
    }
}
