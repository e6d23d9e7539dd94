//! Compiles every .proto under `ticketing/` (and the `google.api` schema they use) into Rust with
//! a vendored protoc, so nothing needs to be installed, and writes the encoded FileDescriptorSet
//! that server reflection and the REST gateway read. `google/api` and `google/rpc` hold copies of
//! Google's schema files (Apache-2.0) that the API uses.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;

    let mut protos = Vec::new();
    collect_protos(&root.join("ticketing"), &mut protos)?;
    // Error details travel as Any; with their schema in the set, reflection clients (grpcurl)
    // and the gateway can render them.
    protos.push(root.join("google/rpc/status.proto"));
    protos.push(root.join("google/rpc/error_details.proto"));
    protos.sort();
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    println!("cargo:rerun-if-changed={}", root.join("google").display());

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("ticketing_descriptor.bin"))
        .include_file("ticketing.rs")
        .compile_with_config(config, &protos, &[root.clone(), well_known])?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
