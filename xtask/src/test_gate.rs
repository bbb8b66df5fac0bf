//! `cargo xtask test`, the gate a change passes: fmt, clippy, the examples,
//! the engine without the AWS SDK, `cargo install` as users run it and the
//! release archive made of that build, then every test on nextest
//! (installed into the project when missing).

use std::process::Command;

use crate::Result;
use crate::dist;
use crate::project::{
    cargo, cargo_command, install_tool, project_root, run, target_dir, tool_version, tools_dir,
};

/// The cargo-nextest `cargo xtask test` installs when none is found.
const NEXTEST_VERSION: &str = "0.9.143";

pub(crate) fn test(nextest_args: &[String]) -> Result<()> {
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The README's library example is one of them.
    cargo(&["build", "--workspace", "--examples"])?;
    // The engine builds without the AWS SDK (the workspace turns `sqs` on).
    cargo(&["check", "--package", "fifo-worker-pool", "--all-targets"])?;
    install_check()?;
    let mut args = vec!["nextest", "run", "--workspace"];
    if std::env::var_os("CI").is_some() {
        args.extend(["--profile", "ci"]);
    }
    args.extend(nextest_args.iter().map(String::as_str));
    cargo(&args)
}

/// `cargo install --path crates/fifo --locked`, as the README tells users,
/// into a new root under the target directory; the installed `fifo
/// --version` must answer. It builds the dev profile (`--debug`) into a
/// target directory of its own: the release build users get would double
/// the test's build time, and the shared one would be rebuilt with other
/// features under the tests' feet. That binary is then packed and checked
/// as `cargo xtask dist` packs and checks the release build.
fn install_check() -> Result<()> {
    let dir = target_dir().join("install-check");
    let root = dir.join("root");
    // A root left by an interrupted run is ours to remove.
    let _ = std::fs::remove_dir_all(&root);
    let mut install = cargo_command();
    install
        .args([
            "install",
            "--path",
            "crates/fifo",
            "--locked",
            "--debug",
            "--quiet",
        ])
        .arg("--root")
        .arg(&root)
        .arg("--target-dir")
        .arg(dir.join("target"))
        .current_dir(project_root());
    let installed = run(&mut install).and_then(|()| {
        let output = Command::new(root.join("bin/fifo"))
            .arg("--version")
            .output()
            .map_err(|e| format!("the installed fifo does not run: {e}"))?;
        let version = String::from_utf8_lossy(&output.stdout);
        if output.status.success() && version.starts_with("fifo ") {
            println!("installed and ran {}", version.trim());
            let archive = dist::package(&root.join("bin/fifo"), &dir.join("dist"))?;
            dist::sbom(&archive)?;
            dist::check(&archive)
        } else {
            Err(format!(
                "the installed `fifo --version` answered {version:?}"
            ))
        }
    });
    let _ = std::fs::remove_dir_all(&root);
    installed
}

/// Installs cargo-nextest into the project when cargo cannot find one, or
/// when the one installed there is not the pinned version any more.
pub(crate) fn ensure_nextest() -> Result<()> {
    let found = tool_version("nextest");
    let ours = tools_dir().join("bin").join("cargo-nextest").exists();
    match found {
        Some(version) if !ours || version.contains(NEXTEST_VERSION) => return Ok(()),
        Some(_) => println!(
            "the cargo-nextest in .tools/ is not {NEXTEST_VERSION}: installing that version (about ten minutes on two cores)"
        ),
        None => println!(
            "cargo-nextest not found: installing cargo-nextest {NEXTEST_VERSION} into .tools/ (once, about ten minutes on two cores)"
        ),
    }
    install_tool(
        "cargo-nextest",
        NEXTEST_VERSION,
        "it needs crates.io; or install any cargo-nextest yourself (https://nexte.st), cargo finds it on PATH",
    )
}
