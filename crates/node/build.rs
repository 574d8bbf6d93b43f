//! Generates the Durable Task gRPC types and service from `proto/orchestrator_service.proto`
//! with protox, a proto compiler in Rust, so that building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/orchestrator_service.proto";
    println!("cargo:rerun-if-changed={proto}");
    // protox ships the well-known types (google/protobuf/*.proto) itself.
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
