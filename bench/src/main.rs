//! perdure-bench: runs a benchmark scenario by name and prints one JSON summary line last,
//! carrying the commit the binary was built from and the run's wall time (`measure::emit`).

// The same allocator as the `perdure-node` binary, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cluster;
mod counting;
mod http;
mod http_noop;
mod load;
mod measure;
mod replay;
mod runtime;
mod store;

fn main() -> anyhow::Result<()> {
    measure::start_clock();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = args.first().cloned().unwrap_or_default();
    let rest = args.get(1..).unwrap_or_default();
    match scenario.as_str() {
        "http-starts" => http::starts(rest),
        "http-status" => http::status(rest),
        "load" => load::run(rest),
        "store" => store::run(rest),
        "replay" => replay::run(rest),
        "hello3" => runtime::hello3(rest),
        "fanout" => runtime::fanout(rest),
        "entity" => runtime::entity(rest),
        "waiting" => runtime::waiting(rest),
        "forward-latency" => cluster::latency(rest),
        "forward-peer" => cluster::peer(rest),
        _ => anyhow::bail!(
            "unknown scenario {scenario:?} (scenarios: load, http-starts, http-status, store, replay, hello3, fanout, entity, waiting, forward-latency)"
        ),
    }
}
