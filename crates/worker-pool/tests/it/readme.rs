//! The README's library example is `examples/embed.rs`, built with the
//! tests: every line of it must appear there, so it cannot drift.

#[test]
fn the_readme_library_example_is_the_embed_example() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let example =
        std::fs::read_to_string(format!("{root}/crates/worker-pool/examples/embed.rs")).unwrap();
    let section = readme
        .split("### As a library")
        .nth(1)
        .expect("README.md has a section \"As a library\"");
    let code = section
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the section has a rust code block");
    let example_lines: Vec<&str> = example.lines().map(str::trim).collect();
    for line in code.lines().map(str::trim).filter(|l| !l.is_empty()) {
        assert!(
            example_lines.contains(&line),
            "README.md's library example has `{line}`, which examples/embed.rs lacks: keep them the same"
        );
    }
}
