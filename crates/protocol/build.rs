//! Generates the gRPC worker API (`proto/worker.proto`) and the KServe V2 gRPC front door
//! (`proto/grpc_predict_v2.proto`): messages, clients and servers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc, so that building needs no system package; an explicit PROTOC wins.
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    println!("cargo:rerun-if-changed=../../proto/worker.proto");
    println!("cargo:rerun-if-changed=../../proto/grpc_predict_v2.proto");
    tonic_prost_build::configure()
        // The client is built on a channel by the worker crate; no `connect` helper needed.
        .build_transport(false)
        .compile_protos(
            &[
                "../../proto/worker.proto",
                "../../proto/grpc_predict_v2.proto",
            ],
            &["../../proto"],
        )?;
    Ok(())
}
