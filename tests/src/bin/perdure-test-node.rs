//! `perdure-test-node`: `perdure-node` serving the test app ([`perdure_tests::app`]), for the
//! end-to-end tests that need a failure a rewind cures.

fn main() -> std::process::ExitCode {
    perdure_node::cli::main(perdure_tests::app::test_registry())
}
