//! Compiles `proto/` (the benchmark's gRPC service) with protox, a pure-Rust protobuf
//! compiler, so building loadgen never needs `protoc` installed (as mesh-api does).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/weft/bench/v1/bench.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Payloads as `Bytes`: a run sends the same buffer every call without copying it.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
