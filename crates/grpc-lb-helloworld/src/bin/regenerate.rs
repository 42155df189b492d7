//! Regenerates the checked-in code in `src/generated/` from `proto/`.
//!
//! Uses `protox` (a pure-Rust protobuf compiler) to build the
//! `FileDescriptorSet` and `tonic-prost-build` to emit the Rust code, so no
//! system `protoc` is needed. Only built with the `codegen` feature:
//!
//! ```text
//! cargo run -p grpc-lb-helloworld --features codegen --bin regenerate            # rewrite src/generated/
//! cargo run -p grpc-lb-helloworld --features codegen --bin regenerate -- --check # fail if stale
//! cargo run -p grpc-lb-helloworld --features codegen --bin regenerate -- --out-dir DIR
//! ```

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use prost::Message as _;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// The protos compiled, each with the code file prost-build writes for it
/// (named after the proto package) and, if wanted, the file its encoded
/// `FileDescriptorSet` (without source info, for reflection) is written to.
const PROTOS: &[(&str, &str, Option<&str>)] = &[
    ("helloworld.proto", "helloworld.rs", Some("helloworld.bin")),
    ("echo.proto", "grpc.examples.echo.rs", None),
];

const USAGE: &str = "usage: regenerate [--check] [--out-dir DIR]";

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
    let mut out_dir = Path::new(MANIFEST_DIR).join("src").join("generated");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--out-dir" => {
                out_dir = PathBuf::from(args.next().ok_or("--out-dir needs a value")?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}").into()),
        }
    }

    let generated = generate()?;

    if check {
        let mut stale = false;
        for (name, contents) in &generated {
            let path = out_dir.join(name);
            if fs::read(&path).ok().as_deref() != Some(contents.as_slice()) {
                eprintln!("stale: {}", path.display());
                stale = true;
            }
        }
        if stale {
            eprintln!("generated code is out of date; run without --check to update it");
            return Ok(ExitCode::FAILURE);
        }
        println!("generated code is up to date");
        return Ok(ExitCode::SUCCESS);
    }

    fs::create_dir_all(&out_dir)?;
    for (name, contents) in &generated {
        let path = out_dir.join(name);
        if fs::read(&path).ok().as_deref() == Some(contents.as_slice()) {
            println!("unchanged: {}", path.display());
        } else {
            fs::write(&path, contents)?;
            println!("wrote: {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A generated file: its name in the output directory and its contents.
type Generated = (&'static str, Vec<u8>);

/// Runs the code generator for every proto and returns the files it produced.
fn generate() -> Result<Vec<Generated>, Box<dyn Error>> {
    let mut generated = Vec::new();
    for &(proto, code_file, descriptor_file) in PROTOS {
        generated.extend(generate_one(proto, code_file, descriptor_file)?);
    }
    Ok(generated)
}

/// Runs the code generator on one proto into a scratch directory and returns
/// the files it produced.
fn generate_one(
    proto: &str,
    code_file: &'static str,
    descriptor_file: Option<&'static str>,
) -> Result<Vec<Generated>, Box<dyn Error>> {
    let proto_dir = Path::new(MANIFEST_DIR).join("proto");
    let mut compiler = protox::Compiler::new([&proto_dir])?;
    // Source info carries the proto comments into the generated docs.
    compiler.include_source_info(true);
    compiler.open_file(proto)?;
    let fds = compiler.file_descriptor_set();

    let mut descriptor = fds.clone();
    for file in &mut descriptor.file {
        file.source_code_info = None;
    }
    let descriptor = descriptor.encode_to_vec();

    let scratch = Scratch::new()?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // No `connect()` on the client: it is used over custom tower services.
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .out_dir(&scratch.0)
        .compile_fds(fds)?;
    let code = fs::read(scratch.0.join(code_file))?;

    let mut generated = vec![(code_file, code)];
    if let Some(descriptor_file) = descriptor_file {
        generated.push((descriptor_file, descriptor));
    }
    Ok(generated)
}

/// A temporary directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "grpc-lb-helloworld-regenerate-{}",
            std::process::id()
        ));
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
