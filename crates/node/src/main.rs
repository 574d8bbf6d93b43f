//! `perdure-node`: a Perdure node with the sample app (`dev`, `run`). Build your own binary with
//! your own functions through [`perdure_node::cli::main`].

fn main() -> std::process::ExitCode {
    perdure_node::cli::main(perdure_node::sample::sample_registry())
}
