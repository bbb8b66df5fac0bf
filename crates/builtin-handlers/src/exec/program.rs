//! Finding the program at start-up the way `execvp` would, so that a typo
//! or a missing permission fails once, and saying why a file cannot run.

use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Why [`ExecHandler::new`](crate::ExecHandler::new) cannot run a program.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    /// The program was given as an empty string.
    #[error("the program name is empty")]
    EmptyName,
    /// A program given as a path (its name contains a slash) that cannot run.
    #[error("program `{}` {why}", program.display())]
    Refused {
        /// The path as given.
        program: PathBuf,
        /// Why it cannot run.
        why: Refusal,
    },
    /// A name found in `PATH` only as files that cannot run; the first one
    /// found is reported.
    #[error("program `{}` found in PATH as {} {why}", program.display(), found.display())]
    RefusedInPath {
        /// The name as given.
        program: PathBuf,
        /// The first match: a directory of `PATH` joined with the name.
        found: PathBuf,
        /// Why `found` cannot run.
        why: Refusal,
    },
    /// No directory of `PATH` holds anything of that name.
    #[error("program `{}` not found in PATH", program.display())]
    NotInPath {
        /// The name as given.
        program: PathBuf,
    },
}

/// Why a file cannot be run.
#[derive(Debug)]
pub enum Refusal {
    /// Nothing exists at the path, or a part of it is not a directory.
    Missing,
    /// The path is a directory.
    Directory,
    /// Neither a regular file nor a directory: a device, a socket or a FIFO.
    NotAFile,
    /// The kernel refuses this user execute access to it (for root: no execute bit is set).
    NotExecutable,
    /// Its metadata cannot be read, for a reason other than it being missing.
    Unreadable(io::Error),
    /// A script whose `#!` line names an interpreter that cannot run.
    Interpreter(String, Box<Refusal>),
    /// A script whose `#!` line ends in a carriage return.
    WindowsLineEnding(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Missing => f.write_str("not found"),
            Refusal::Directory => f.write_str("is a directory"),
            Refusal::NotAFile => f.write_str("is not a regular file"),
            Refusal::NotExecutable => f.write_str("is not executable (no execute permission)"),
            Refusal::Unreadable(e) => write!(f, "cannot be examined: {e}"),
            Refusal::Interpreter(interpreter, why) => {
                write!(
                    f,
                    "names an interpreter that cannot run: `{interpreter}` {why}"
                )
            }
            Refusal::WindowsLineEnding(interpreter) => write!(
                f,
                "has a Windows line ending in its first line: the system would look for the interpreter `{}\\r`",
                interpreter
            ),
        }
    }
}

/// Finds the program the way `execvp` would.
pub(super) fn find_program(program: &Path) -> Result<PathBuf, ProgramError> {
    if program.as_os_str().is_empty() {
        return Err(ProgramError::EmptyName);
    }
    if program.as_os_str().as_bytes().contains(&b'/') {
        return match runnable(program) {
            Ok(()) => Ok(program.to_owned()),
            Err(why) => Err(ProgramError::Refused {
                program: program.to_owned(),
                why,
            }),
        };
    }
    // Like a shell, skip a match that cannot run and look further; name it
    // if nothing better turns up.
    let mut refused = None;
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        match runnable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(Refusal::Missing) => {}
            Err(why) => {
                refused.get_or_insert((candidate, why));
            }
        }
    }
    Err(match refused {
        Some((found, why)) => ProgramError::RefusedInPath {
            program: program.to_owned(),
            found,
            why,
        },
        None => ProgramError::NotInPath {
            program: program.to_owned(),
        },
    })
}

/// A file the kernel can run: the program itself and, for a script, its
/// interpreter.
fn runnable(path: &Path) -> Result<(), Refusal> {
    runnable_file(path)?;
    check_interpreter(path)
}

fn runnable_file(path: &Path) -> Result<(), Refusal> {
    let metadata = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Refusal::Missing,
        _ => Refusal::Unreadable(e),
    })?;
    if metadata.is_dir() {
        return Err(Refusal::Directory);
    }
    if !metadata.is_file() {
        return Err(Refusal::NotAFile);
    }
    // The kernel's own answer for this user (root included), rather than
    // reading the mode bits.
    rustix::fs::access(path, rustix::fs::Access::EXEC_OK).map_err(|_| Refusal::NotExecutable)
}

/// A script starting with `#!` runs only if the interpreter it names does:
/// otherwise every message would fail with a bare "No such file or
/// directory".
fn check_interpreter(path: &Path) -> Result<(), Refusal> {
    use std::io::Read;
    // What the kernel reads of a `#!` line.
    let mut head = [0u8; 256];
    let Ok(read) = std::fs::File::open(path).and_then(|mut file| file.read(&mut head)) else {
        // Executable but not readable: a binary, not a script.
        return Ok(());
    };
    let Some(line) = head[..read].strip_prefix(b"#!") else {
        return Ok(());
    };
    let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let line = line.trim_start_matches([' ', '\t']);
    let interpreter = line.split([' ', '\t']).next().unwrap_or_default();
    if let Some(stripped) = interpreter.strip_suffix('\r') {
        return Err(Refusal::WindowsLineEnding(stripped.to_owned()));
    }
    // A relative interpreter is looked up from wherever the program runs.
    if !interpreter.starts_with('/') {
        return Ok(());
    }
    match runnable_file(Path::new(interpreter)) {
        Ok(()) => Ok(()),
        Err(why) => Err(Refusal::Interpreter(interpreter.to_owned(), Box::new(why))),
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::time::Duration;

    use super::*;
    use crate::ExecHandler;
    use crate::Output;

    #[test]
    fn a_missing_program_is_found_out_at_once() {
        let output = Output::new(io::sink(), io::sink());
        let err = ExecHandler::new(
            Path::new("no-such-program-here"),
            vec![],
            Duration::ZERO,
            output.clone(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not found"), "{err}");
        let err = ExecHandler::new(Path::new("./no/such/file"), vec![], Duration::ZERO, output)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found"), "{err}");
    }

    #[test]
    fn a_directory_or_a_file_without_execute_permission_is_refused() {
        use std::os::unix::fs::PermissionsExt;

        let dir = std::env::temp_dir().join(format!("fifo-handler-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("script.sh");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let output = Output::new(io::sink(), io::sink());
        let new = |program: &Path| {
            ExecHandler::new(program, vec![], Duration::ZERO, output.clone()).map(|_| ())
        };

        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
        let not_executable = new(&script);
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let executable = new(&script);
        let directory = new(&dir);
        std::fs::remove_dir_all(&dir).unwrap();

        let err = not_executable.unwrap_err().to_string();
        assert!(err.contains("is not executable"), "{err}");
        executable.unwrap();
        let err = directory.unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
    }

    #[test]
    fn a_script_whose_interpreter_cannot_run_is_refused() {
        use std::os::unix::fs::PermissionsExt;

        let dir = std::env::temp_dir().join(format!("fifo-shebang-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let output = Output::new(io::sink(), io::sink());
        let script = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            ExecHandler::new(&path, vec![], Duration::ZERO, output.clone()).map(|_| ())
        };
        let missing = script("missing.sh", "#!/bin/nonexistent-shell\necho hi\n");
        let windows = script("windows.sh", "#!/bin/sh\r\necho hi\r\n");
        let with_args = script("args.sh", "#! /bin/sh -e\necho hi\n");
        let env = script("env.sh", "#!/usr/bin/env sh\necho hi\n");
        let plain = script("plain.sh", "echo hi\n");
        std::fs::remove_dir_all(&dir).unwrap();

        let err = missing.unwrap_err().to_string();
        assert!(
            err.ends_with(
                "names an interpreter that cannot run: `/bin/nonexistent-shell` not found"
            ),
            "{err}"
        );
        let err = windows.unwrap_err().to_string();
        assert!(err.contains("has a Windows line ending"), "{err}");
        with_args.unwrap();
        env.unwrap();
        plain.unwrap();
    }
}
