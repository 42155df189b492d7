//! Regenerates the checked-in code in `src/generated/` from `proto/` with
//! protox and tonic-prost-build (no system `protoc`; see `grpc-lb-codegen`).
//! Only built with the `codegen` feature:
//!
//! ```text
//! cargo run -p grpc-lb-grpclb --features codegen --bin regenerate            # rewrite src/generated/
//! cargo run -p grpc-lb-grpclb --features codegen --bin regenerate -- --check # fail if stale
//! ```

fn main() -> std::process::ExitCode {
    grpc_lb_codegen::Protos {
        crate_name: "grpc-lb-grpclb",
        manifest_dir: env!("CARGO_MANIFEST_DIR"),
        // Duration and Timestamp are generated here, not taken from prost-types.
        protos: &[
            "google/protobuf/duration.proto",
            "google/protobuf/timestamp.proto",
            "grpc/lb/v1/load_balancer.proto",
        ],
        outputs: &["google.protobuf.rs", "grpc.lb.v1.rs"],
    }
    .main()
}
