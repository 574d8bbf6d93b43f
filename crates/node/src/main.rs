//! `perdure-node`: a Perdure node with the sample app (`dev`, `run`). Build your own binary with
//! your own functions through [`perdure_node::cli::main`].

// mimalloc: the engine allocates many small, short-lived buffers per transaction; measured,
// it cuts CPU per store commit by 15-20 % against the system allocator (docs/benchmarks.md).
// Built with its `no_thp` feature (workspace Cargo.toml): on transparent huge pages, every
// page mimalloc purged and touched again cost the kernel a 2 MiB zeroing; without them,
// accepted starts per second rose from 8.6-11.4 k to 11.2-12.3 k (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    perdure_node::cli::main(perdure_node::sample::sample_registry())
}
