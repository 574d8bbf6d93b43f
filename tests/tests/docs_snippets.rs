//! Code shown in README.md stays the code that compiles: the custom node binary there is
//! `crates/node/examples/custom_node.rs` from its `use` line on.

use std::path::PathBuf;

fn read(rel: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The body of the fenced code block that follows `marker` in `text`.
fn block_after<'a>(text: &'a str, marker: &str) -> &'a str {
    let at = text.find(marker).unwrap_or_else(|| panic!("no {marker:?}"));
    let rest = &text[at..];
    let open = rest
        .find("```rust\n")
        .expect("no ```rust block after the marker")
        + 8;
    let len = rest[open..].find("```").expect("unclosed code block");
    &rest[open..open + len]
}

#[test]
fn the_readme_custom_node_is_the_compiled_example() {
    let readme = read("README.md");
    let example = read("crates/node/examples/custom_node.rs");
    let shown = block_after(&readme, "`crates/node/examples/custom_node.rs`");
    let code = &example[example.find("\nuse ").expect("no use line") + 1..];
    assert_eq!(
        shown, code,
        "README.md's custom node differs from the example"
    );
}
