//! Regenerates the checked-in code in `src/generated/` from `proto/`.
//!
//! Uses `protox` (a pure-Rust protobuf compiler, which also carries
//! `google/protobuf/duration.proto` and `timestamp.proto`) to build the `FileDescriptorSet` and
//! `tonic-prost-build` to emit the Rust code, so no system `protoc` is needed.
//! Only built with the `codegen` feature:
//!
//! ```text
//! cargo run -p grpc-lb-grpclb --features codegen --bin regenerate            # rewrite src/generated/
//! cargo run -p grpc-lb-grpclb --features codegen --bin regenerate -- --check # fail if stale
//! ```

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// The protos compiled together (the well-known Duration and Timestamp come from protox).
const PROTOS: &[&str] = &[
    "google/protobuf/duration.proto",
    "google/protobuf/timestamp.proto",
    "grpc/lb/v1/load_balancer.proto",
];
/// The files prost-build writes, one per proto package.
const OUTPUTS: &[&str] = &["google.protobuf.rs", "grpc.lb.v1.rs"];

const USAGE: &str = "usage: regenerate [--check]";

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("regenerate: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode, Box<dyn Error>> {
    let mut check = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}").into()),
        }
    }
    let out_dir = Path::new(MANIFEST_DIR).join("src").join("generated");
    let generated = generate()?;
    let mut stale = false;
    for (name, contents) in &generated {
        let path = out_dir.join(name);
        if fs::read(&path).ok().as_deref() == Some(contents.as_slice()) {
            println!("unchanged: {}", path.display());
        } else if check {
            eprintln!("stale: {}", path.display());
            stale = true;
        } else {
            fs::write(&path, contents)?;
            println!("wrote: {}", path.display());
        }
    }
    Ok(if stale {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// A generated file: its name in `src/generated/` and its contents.
type Generated = (&'static str, Vec<u8>);

/// Runs the code generator into a scratch directory and returns the files it
/// produced.
fn generate() -> Result<Vec<Generated>, Box<dyn Error>> {
    let proto_dir = Path::new(MANIFEST_DIR).join("proto");
    let mut compiler = protox::Compiler::new([&proto_dir])?;
    // Source info carries the proto comments into the generated docs.
    compiler.include_source_info(true);
    for proto in PROTOS {
        compiler.open_file(proto)?;
    }
    let fds = compiler.file_descriptor_set();

    let scratch = Scratch::new()?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // No `connect()` on the client: it is used over custom tower services.
        .build_transport(false)
        // Generate Duration and Timestamp here rather than depend on prost-types.
        .compile_well_known_types(true)
        .emit_rerun_if_changed(false)
        .out_dir(&scratch.0)
        .compile_fds(fds)?;
    OUTPUTS
        .iter()
        .map(|&name| Ok((name, fs::read(scratch.0.join(name))?)))
        .collect()
}

/// A temporary directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("grpc-lb-grpclb-regenerate-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
