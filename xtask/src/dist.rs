//! `cargo xtask dist`: the release archive users download. A release build
//! of `fifo`, packed with its man pages, shell completions, README and
//! licences into `target/dist/fifo-VERSION-TARGET.tar.gz`, a `.sha256`
//! beside it, and a CycloneDX SBOM of its dependencies; then the archive is
//! checked as a user would use it. `cargo xtask test` packs and checks its
//! own build the same way.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;
use crate::project::{
    cargo, cargo_command, install_tool, project_root, run, target_dir, tool_version,
};

/// The cargo-cyclonedx that makes the SBOM, installed into `.tools/` when
/// missing, as nextest is.
const CYCLONEDX_VERSION: &str = "0.5.9";

/// The runtime image of the Dockerfile, and its glibc: the newest glibc
/// the binary may ask for (the README says so).
const RUNTIME_IMAGE: &str = "debian:bookworm-slim";
const RUNTIME_GLIBC: (u32, u32) = (2, 36);

/// The files beside the binary in the archive, from the project root.
const DOCUMENTS: [&str; 3] = ["README.md", "LICENSE-MIT", "LICENSE-APACHE"];

/// A packed archive and where its parts are.
pub(crate) struct Archive {
    pub(crate) path: PathBuf,
    /// `fifo-VERSION-TARGET`: the archive's one top directory.
    pub(crate) name: String,
    /// The target the binary was built for (`x86_64-unknown-linux-gnu`).
    target: String,
}

impl Archive {
    fn checksum(&self) -> PathBuf {
        self.path.with_extension("gz.sha256")
    }
}

/// `cargo xtask dist`.
pub(crate) fn dist() -> Result<()> {
    cargo(&["build", "--release", "--locked", "--package", "fifo"])?;
    let binary = target_dir().join("release/fifo");
    let archive = package(&binary, &target_dir().join("dist"))?;
    let sbom = sbom(&archive)?;
    check(&archive)?;
    println!("{}", archive.path.display());
    println!("{}", archive.checksum().display());
    println!("{}", sbom.display());
    Ok(())
}

/// Packs `binary` (its debug info stripped) with its man pages,
/// completions and documents into `OUT/fifo-VERSION-TARGET.tar.gz`, and
/// writes its SHA-256 beside it.
pub(crate) fn package(binary: &Path, out: &Path) -> Result<Archive> {
    let version = output(Command::new(binary).arg("--version"))?;
    let version = version
        .trim()
        .strip_prefix("fifo ")
        .ok_or_else(|| format!("`fifo --version` answered {version:?}"))?;
    let target = host_target()?;
    let name = format!("fifo-{version}-{target}");
    let stage = out.join(&name);
    // A stage or archive left by an earlier run is ours to replace.
    let _ = std::fs::remove_dir_all(&stage);
    let made = |e: std::io::Error| format!("cannot make {}: {e}", stage.display());
    std::fs::create_dir_all(stage.join("completions")).map_err(made)?;
    std::fs::copy(binary, stage.join("fifo")).map_err(made)?;
    // Without its debug info (four fifths of it); its symbols stay, for
    // backtraces.
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg(stage.join("fifo")))
    .map_err(|e| format!("{e}\nhint: strip comes with binutils"))?;
    for document in DOCUMENTS {
        std::fs::copy(project_root().join(document), stage.join(document)).map_err(made)?;
    }
    run(Command::new(binary)
        .args(["man", "--dir"])
        .arg(stage.join("man/man1")))?;
    for (shell, file) in [
        ("bash", "fifo.bash"),
        ("zsh", "_fifo"),
        ("fish", "fifo.fish"),
    ] {
        let script = output(Command::new(binary).args(["completions", shell]))?;
        std::fs::write(stage.join("completions").join(file), script).map_err(made)?;
    }
    let path = out.join(format!("{name}.tar.gz"));
    run(Command::new("tar")
        .arg("-czf")
        .arg(&path)
        .arg("-C")
        .arg(out)
        .arg(&name))?;
    let _ = std::fs::remove_dir_all(&stage);
    let archive = Archive { path, name, target };
    let sum = output(
        Command::new("sha256sum")
            .arg(format!("{}.tar.gz", archive.name))
            .current_dir(out),
    )?;
    std::fs::write(archive.checksum(), sum).map_err(made)?;
    Ok(archive)
}

/// The SBOM of the `fifo` binary's dependencies (build and dev ones left
/// out), in CycloneDX 1.5 JSON, as `fifo-VERSION-TARGET.cdx.json` beside
/// the archive.
pub(crate) fn sbom(archive: &Archive) -> Result<PathBuf> {
    ensure_cyclonedx()?;
    let mut command = cargo_command();
    command
        .args(["cyclonedx", "--format", "json", "--describe", "binaries"])
        .args(["--spec-version", "1.5", "--no-build-deps", "--quiet"])
        .args(["--target", &archive.target])
        .current_dir(project_root());
    run(&mut command)?;
    // cargo-cyclonedx writes one SBOM beside the manifest of each member of
    // the workspace with a binary (`crates/fifo/fifo_bin.cdx.json` for
    // ours): ours is moved, the others removed.
    let ours = project_root().join("crates/fifo/fifo_bin.cdx.json");
    let sbom = archive
        .path
        .with_file_name(format!("{}.cdx.json", archive.name));
    let moved = std::fs::rename(&ours, &sbom)
        .map_err(|e| format!("cannot move {} to {}: {e}", ours.display(), sbom.display()));
    for member in ["crates", "xtask"] {
        remove_sboms(&project_root().join(member));
    }
    moved?;
    let text = std::fs::read_to_string(&sbom)
        .map_err(|e| format!("cannot read {}: {e}", sbom.display()))?;
    for expected in [
        r#""bomFormat": "CycloneDX""#,
        r#""name": "fifo""#,
        r#""name": "aws-sdk-sqs""#,
    ] {
        if !text.contains(expected) {
            return Err(format!("{} lacks {expected}", sbom.display()));
        }
    }
    Ok(sbom)
}

/// Removes the `*.cdx.json` files cargo-cyclonedx left in `dir` and the
/// directories just below it.
fn remove_sboms(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(|entry| Some(entry.ok()?.path())) {
        if path.is_dir() && path.parent() == Some(&project_root().join("crates")) {
            remove_sboms(&path);
        } else if path.to_string_lossy().ends_with(".cdx.json") {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Checks the archive as a user would use it: its checksum, then unpacked,
/// `fifo --version`, every man page rendered by `man` without a warning,
/// the completions and documents there, and a binary that runs on the
/// runtime image's glibc.
pub(crate) fn check(archive: &Archive) -> Result<()> {
    let out = archive
        .path
        .parent()
        .expect("the archive is in a directory");
    run(Command::new("sha256sum")
        .args(["--check", "--quiet"])
        .arg(archive.checksum())
        .current_dir(out))?;
    let unpacked = out.join("unpacked");
    let _ = std::fs::remove_dir_all(&unpacked);
    std::fs::create_dir_all(&unpacked)
        .map_err(|e| format!("cannot make {}: {e}", unpacked.display()))?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(&archive.path)
        .arg("-C")
        .arg(&unpacked))?;
    let root = unpacked.join(&archive.name);
    let version = output(Command::new(root.join("fifo")).arg("--version"))?;
    if !version.starts_with("fifo ") {
        return Err(format!(
            "the archive's `fifo --version` answered {version:?}"
        ));
    }
    let pages = man_pages(&root.join("man/man1"))?;
    for page in &pages {
        render(page)?;
    }
    for file in [
        "completions/fifo.bash",
        "completions/_fifo",
        "completions/fifo.fish",
    ]
    .into_iter()
    .chain(DOCUMENTS)
    {
        let size = std::fs::metadata(root.join(file)).map_or(0, |m| m.len());
        if size == 0 {
            return Err(format!("the archive has no {file}, or it is empty"));
        }
    }
    check_glibc(&root.join("fifo"))?;
    let _ = std::fs::remove_dir_all(&unpacked);
    println!(
        "checked {}: checksum, {}, {} man pages rendered, completions, documents, glibc ≤ {}.{}",
        archive.path.display(),
        version.trim(),
        pages.len(),
        RUNTIME_GLIBC.0,
        RUNTIME_GLIBC.1
    );
    Ok(())
}

/// The man pages in `dir`: one per command at least.
fn man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("the archive has no {}: {e}", dir.display()))?;
    let mut pages: Vec<PathBuf> = entries
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "1"))
        .collect();
    pages.sort();
    for expected in ["fifo.1", "fifo-run.1", "fifo-send.1", "fifo-dlq-peek.1"] {
        if !pages.iter().any(|p| p.ends_with(expected)) {
            return Err(format!("the archive has no man page {expected}"));
        }
    }
    Ok(pages)
}

/// Renders a man page with `man -l` for a terminal without UTF-8; any
/// warning is a failure.
fn render(page: &Path) -> Result<()> {
    let rendered = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANWIDTH", "80")
        .env("MAN_KEEP_FORMATTING", "0")
        // The plainest terminal: a character it cannot show is a warning.
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("cannot run man (install man-db): {e}"))?;
    let warnings = String::from_utf8_lossy(&rendered.stderr);
    if !rendered.status.success() || !warnings.trim().is_empty() || rendered.stdout.is_empty() {
        return Err(format!(
            "man -l {} failed ({}): {warnings}",
            page.display(),
            rendered.status
        ));
    }
    Ok(())
}

/// The newest glibc symbol version the binary asks for must be the
/// runtime image's or older.
fn check_glibc(binary: &Path) -> Result<()> {
    let bytes =
        std::fs::read(binary).map_err(|e| format!("cannot read {}: {e}", binary.display()))?;
    let newest = glibc_versions(&bytes).max().unwrap_or((0, 0));
    if newest > RUNTIME_GLIBC {
        return Err(format!(
            "{} needs glibc {}.{}, newer than {RUNTIME_IMAGE}'s {}.{}",
            binary.display(),
            newest.0,
            newest.1,
            RUNTIME_GLIBC.0,
            RUNTIME_GLIBC.1
        ));
    }
    Ok(())
}

/// Every `GLIBC_MAJOR.MINOR` symbol version named in an ELF binary (the
/// names of the versions it needs are strings in it).
fn glibc_versions(bytes: &[u8]) -> impl Iterator<Item = (u32, u32)> + '_ {
    const MARK: &[u8] = b"GLIBC_";
    bytes
        .windows(MARK.len())
        .enumerate()
        .filter_map(|(at, window)| {
            if window != MARK {
                return None;
            }
            let rest = &bytes[at + MARK.len()..];
            let end = rest
                .iter()
                .position(|b| !(b.is_ascii_digit() || *b == b'.'))
                .unwrap_or(rest.len());
            let text = std::str::from_utf8(&rest[..end]).ok()?;
            let mut parts = text.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next()?.parse().ok()?;
            Some((major, minor))
        })
}

/// The target cargo builds for here (`x86_64-unknown-linux-gnu`).
fn host_target() -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let about = output(Command::new(rustc).arg("-vV"))?;
    about
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .ok_or_else(|| "`rustc -vV` names no host".to_owned())
}

/// What `command` prints on stdout; its failure is an error.
fn output(command: &mut Command) -> Result<String> {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Installs cargo-cyclonedx into the project when cargo cannot find the
/// pinned version.
fn ensure_cyclonedx() -> Result<()> {
    if tool_version("cyclonedx").is_some_and(|version| version.contains(CYCLONEDX_VERSION)) {
        return Ok(());
    }
    println!(
        "installing cargo-cyclonedx {CYCLONEDX_VERSION} into .tools/ for the SBOM (once, a few minutes on two cores)"
    );
    install_tool("cargo-cyclonedx", CYCLONEDX_VERSION, "it needs crates.io")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The archive's binary is checked against the runtime image's glibc;
    /// the Dockerfile must run on that image, as a user, with fifo as its
    /// entrypoint and without LocalStack; the README must name the glibc.
    #[test]
    fn the_dockerfile_runs_fifo_as_a_user_on_the_image_whose_glibc_is_checked() {
        let dockerfile = std::fs::read_to_string(project_root().join("Dockerfile")).unwrap();
        let stages: Vec<&str> = dockerfile
            .lines()
            .filter(|line| line.starts_with("FROM "))
            .collect();
        assert_eq!(
            stages.len(),
            2,
            "a build stage and a runtime stage: {stages:?}"
        );
        assert_eq!(stages[1], format!("FROM {RUNTIME_IMAGE}"));
        let runtime = &dockerfile[dockerfile.rfind("FROM ").unwrap()..];
        assert!(runtime.contains("\nUSER fifo\n"), "{runtime}");
        assert!(runtime.contains("ENTRYPOINT [\"fifo\"]"), "{runtime}");
        assert!(
            !dockerfile.to_lowercase().contains("localstack/"),
            "{dockerfile}"
        );
        let readme = std::fs::read_to_string(project_root().join("README.md")).unwrap();
        let glibc = format!("glibc {}.{}", RUNTIME_GLIBC.0, RUNTIME_GLIBC.1);
        assert!(readme.contains(&glibc), "README.md names {glibc}");
        assert!(
            readme.contains(RUNTIME_IMAGE),
            "README.md names {RUNTIME_IMAGE}"
        );
    }

    #[test]
    fn glibc_versions_are_read_from_the_binarys_strings() {
        let bytes = b"\0GLIBC_2.2.5\0GLIBC_2.34\0GLIBC_PRIVATE\0GLIBC_2.17\0";
        let versions: Vec<_> = glibc_versions(bytes).collect();
        assert_eq!(versions, [(2, 2), (2, 34), (2, 17)]);
        assert_eq!(versions.into_iter().max(), Some((2, 34)));
    }
}
