//! The perdure CLI.
fn main() {}
