//! perdure-bench: runs a benchmark scenario by name and prints one JSON summary line last.

fn main() -> anyhow::Result<()> {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    anyhow::bail!("unknown scenario {scenario:?}")
}
