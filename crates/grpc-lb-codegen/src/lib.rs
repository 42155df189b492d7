//! Regenerates a crate's checked-in protobuf code, so that building the
//! crate needs no protobuf compiler.
//!
//! `protox` (a pure-Rust protobuf compiler that carries the well-known
//! types) builds the `FileDescriptorSet`, and `tonic-prost-build` writes the
//! Rust code into a scratch directory; the files named in [`Protos::outputs`]
//! are then compared with, or copied over, the crate's `src/generated/`.
//! A crate's `regenerate` binary is one call:
//!
//! ```no_run
//! use grpc_lb_codegen::Protos;
//!
//! fn main() -> std::process::ExitCode {
//!     Protos {
//!         crate_name: "grpc-lb-orca",
//!         manifest_dir: env!("CARGO_MANIFEST_DIR"),
//!         protos: &["google/protobuf/duration.proto", "xds/service/orca/v3/orca.proto"],
//!         outputs: &["google.protobuf.rs", "xds.service.orca.v3.rs"],
//!     }
//!     .main()
//! }
//! ```
//!
//! Run as `regenerate` to rewrite `src/generated/`, or `regenerate --check`
//! to fail (exit 1, naming each stale file) when it differs: a crate's
//! `generated_code` test runs the latter.
#![deny(missing_docs)]

use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: regenerate [--check]";

/// A generated file: its name in `src/generated/` and its contents.
type Generated = (&'static str, Vec<u8>);

/// What one crate generates: its protos (under `proto/`, compiled together)
/// and the files prost-build writes for them, one per proto package, kept
/// in `src/generated/`.
#[derive(Debug, Clone, Copy)]
pub struct Protos {
    /// The crate's name, for the scratch directory and messages.
    pub crate_name: &'static str,
    /// The crate's `CARGO_MANIFEST_DIR`.
    pub manifest_dir: &'static str,
    /// The proto files, relative to `proto/`; well-known types (such as
    /// `google/protobuf/duration.proto`) come from protox and are generated
    /// here too, rather than taken from prost-types.
    pub protos: &'static [&'static str],
    /// The generated files to keep, by name.
    pub outputs: &'static [&'static str],
}

impl Protos {
    /// Parses the command line (`--check`), regenerates and compares or
    /// writes; the exit code says whether everything was up to date (or
    /// written).
    pub fn main(self) -> ExitCode {
        match self.run(std::env::args().skip(1)) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("regenerate: {err}");
                ExitCode::FAILURE
            }
        }
    }

    fn run(self, args: impl Iterator<Item = String>) -> Result<ExitCode, Box<dyn Error>> {
        let mut check = false;
        for arg in args {
            match arg.as_str() {
                "--check" => check = true,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    return Ok(ExitCode::SUCCESS);
                }
                other => return Err(format!("unexpected argument {other:?}\n{USAGE}").into()),
            }
        }
        let out_dir = Path::new(self.manifest_dir).join("src").join("generated");
        let mut stale = false;
        for (name, contents) in self.generate()? {
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

    /// Runs the generator into a scratch directory and returns each output's
    /// name and contents.
    fn generate(self) -> Result<Vec<Generated>, Box<dyn Error>> {
        let proto_dir = Path::new(self.manifest_dir).join("proto");
        let mut compiler = protox::Compiler::new([&proto_dir])?;
        // Source info carries the proto comments into the generated docs.
        compiler.include_source_info(true);
        for proto in self.protos {
            compiler.open_file(proto)?;
        }
        let fds = compiler.file_descriptor_set();

        let scratch = Scratch::new(self.crate_name)?;
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            // No `connect()` on the client: it is used over custom tower services.
            .build_transport(false)
            .compile_well_known_types(true)
            .emit_rerun_if_changed(false)
            .out_dir(&scratch.0)
            .compile_fds(fds)?;
        self.outputs
            .iter()
            .map(|&name| Ok((name, fs::read(scratch.0.join(name))?)))
            .collect()
    }
}

/// A temporary directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(crate_name: &str) -> std::io::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("{crate_name}-regenerate-{}", std::process::id()));
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
