//! The project's places (its root, cargo's target directory, the tools
//! installed into it) and running programs there: cargo with those tools on
//! its PATH, any command with its failure named.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

/// Runs cargo (the one that started us, as `CARGO` says) in the project root.
pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    println!("$ cargo {}", args.join(" "));
    run(cargo_command().args(args).current_dir(project_root()))
}

/// `cargo`, finding the tools installed into the project too.
pub(crate) fn cargo_command() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    let tools = tools_dir().join("bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let paths = std::iter::once(tools).chain(std::env::split_paths(&path));
    if let Ok(path) = std::env::join_paths(paths) {
        command.env("PATH", path);
    }
    command
}

/// What `cargo SUBCOMMAND --version` prints, when cargo finds that tool.
pub(crate) fn tool_version(subcommand: &str) -> Option<String> {
    cargo_command()
        .args([subcommand, "--version"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `cargo install` of the crate `tool` at `version` (its lock file kept)
/// into [`tools_dir`]; `hint` is added to a failure.
pub(crate) fn install_tool(tool: &str, version: &str, hint: &str) -> Result<()> {
    let root = tools_dir();
    let root = root.to_str().ok_or("the project path is not UTF-8")?;
    cargo(&[
        "install",
        tool,
        "--version",
        version,
        "--locked",
        "--root",
        root,
    ])
    .map_err(|e| format!("{e}\nhint: {hint}"))
}

/// Where `cargo xtask` installs the tools it needs: inside the project, so
/// nothing outside it changes.
pub(crate) fn tools_dir() -> PathBuf {
    project_root().join(".tools")
}

/// Runs `command`; an error names it by its program and arguments (not
/// its environment, which holds the whole PATH for cargo).
pub(crate) fn run(command: &mut Command) -> Result<()> {
    let shown = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let status = command
        .status()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` when set (relative
/// to the project root if relative), else `target/` in the project.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => project_root().join(dir),
        None => project_root().join("target"),
    }
}

pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the project root")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::project_root;
    use std::path::{Path, PathBuf};

    /// Every Rust file of the project (not the build's), for the layout checks.
    fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable") {
            let path = entry.expect("readable").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() && !name.starts_with('.') && name != "target" {
                rust_files(&path, found);
            } else if name.ends_with(".rs") {
                found.push(path);
            }
        }
    }

    /// A newcomer opening any file reads its job first: every file starts
    /// with a `//!` line.
    #[test]
    fn every_rust_file_starts_by_saying_its_job() {
        let root = project_root();
        let mut files = Vec::new();
        for top in ["crates", "xtask"] {
            rust_files(&root.join(top), &mut files);
        }
        assert!(files.len() > 50, "found only {} files", files.len());
        let silent: Vec<String> = files
            .iter()
            .filter(|path| {
                let text = std::fs::read_to_string(path).expect("readable");
                !text.starts_with("//!")
            })
            .map(|path| {
                path.strip_prefix(&root)
                    .unwrap_or(path)
                    .display()
                    .to_string()
            })
            .collect();
        assert!(
            silent.is_empty(),
            "these files do not start with a `//!` line saying their job: {silent:?}"
        );
    }
}
