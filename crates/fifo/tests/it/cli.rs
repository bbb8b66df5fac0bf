//! The command line itself, without a queue: the version and the shell
//! completion scripts.

use std::process::Command;

use fifo_test_support::binary::*;
use fifo_test_support::temp_dir;

#[test]
fn version_names_the_program_and_its_version() {
    let dir = temp_dir();
    let output = fifo_in(&dir, &["--version"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output).trim(),
        format!("fifo {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Each script parses in its shell where the shell is installed, and
/// completes every subcommand; bad settings in the environment do not stop
/// it (it needs none).
#[test]
fn completion_scripts_complete_every_subcommand() {
    let dir = temp_dir();
    for shell in ["bash", "zsh", "fish"] {
        let output = fifo_in(&dir, &["completions", shell], &[("MAX_WORKERS", "abc")]);
        assert!(output.status.success(), "{shell}: {}", stderr(&output));
        let script = stdout(&output);
        for subcommand in ["run", "send", "create-queue", "list-queues", "completions"] {
            assert!(script.contains(subcommand), "{shell} lacks {subcommand}");
        }
        let path = dir.path().join(format!("fifo.{shell}"));
        std::fs::write(&path, &script).unwrap();
        let check = match shell {
            "bash" => Command::new("bash").arg("-n").arg(&path).output(),
            "zsh" => Command::new("zsh").arg("-n").arg(&path).output(),
            _ => Command::new("fish").arg("--no-execute").arg(&path).output(),
        };
        // A shell that is not installed cannot check; bash always is.
        if let Ok(check) = check {
            assert!(
                check.status.success(),
                "{shell} refuses the script: {}",
                stderr(&check)
            );
        } else {
            assert_ne!(shell, "bash", "bash is needed to check its script");
        }
    }
    let output = fifo_in(&dir, &["completions", "tcsh"], &[]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("bash, zsh, fish"),
        "{}",
        stderr(&output)
    );
}
