//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so building
//! Weft never needs `protoc` installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/weft/identity/v1/identity.proto",
        "proto/weft/destination/v1/destination.proto",
        "proto/weft/policy/v1/policy.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
