//! Regenerates the checked-in code in `src/generated/` from `proto/` with
//! protox and tonic-prost-build (no system `protoc`; see `grpc-lb-codegen`).
//! Only built with the `codegen` feature:
//!
//! ```text
//! cargo run -p grpc-lb-orca --features codegen --bin regenerate            # rewrite src/generated/
//! cargo run -p grpc-lb-orca --features codegen --bin regenerate -- --check # fail if stale
//! ```

fn main() -> std::process::ExitCode {
    grpc_lb_codegen::Protos {
        crate_name: "grpc-lb-orca",
        manifest_dir: env!("CARGO_MANIFEST_DIR"),
        // Duration is generated here, not taken from prost-types.
        protos: &[
            "google/protobuf/duration.proto",
            "xds/data/orca/v3/orca_load_report.proto",
            "xds/service/orca/v3/orca.proto",
        ],
        outputs: &[
            "google.protobuf.rs",
            "xds.data.orca.v3.rs",
            "xds.service.orca.v3.rs",
        ],
    }
    .main()
}
