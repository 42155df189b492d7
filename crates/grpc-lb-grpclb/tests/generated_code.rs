//! The checked-in `src/generated/` is what `proto/` generates: the
//! `regenerate` binary, run with `--check`, fails on any difference. Only
//! built with the `codegen` feature (normal builds need no protobuf
//! compiler):
//!
//! ```text
//! cargo test -p grpc-lb-grpclb --features codegen --test generated_code
//! ```
#![cfg(feature = "codegen")]

#[test]
fn the_checked_in_code_is_what_the_protos_generate() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_regenerate"))
        .arg("--check")
        .output()
        .expect("run the regenerate binary");
    assert!(
        output.status.success(),
        "src/generated/ is stale; run `cargo run -p grpc-lb-grpclb --features codegen --bin regenerate`\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
