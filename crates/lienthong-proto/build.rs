//! Compiles `proto/` with protox (pure Rust), so no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files: Vec<PathBuf> = [
        "lienthong/types/v1/types.proto",
        "lienthong/globalconf/v1/globalconf.proto",
        "lienthong/exchange/v1/exchange.proto",
        "lienthong/msglog/v1/msglog.proto",
        "lienthong/registry/v1/registry.proto",
        "lienthong/audit/v1/audit.proto",
    ]
    .iter()
    .map(|f| root.join(f))
    .collect();
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        // Transport (hyper, sockets) belongs to the binaries that serve or call the API.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
