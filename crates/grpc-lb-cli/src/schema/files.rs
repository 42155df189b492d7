//! Schemas from files: `.proto` sources compiled in-process by protox (no
//! protoc), and protosets (encoded `FileDescriptorSet`s).

use std::path::{Path, PathBuf};

use prost_reflect::DescriptorPool;

use crate::CliError;

/// Compiles `protos`, their imports looked up in `import_paths` (default:
/// the directory of each file) and among protobuf's well-known types.
pub(crate) fn compile_protos(
    protos: &[PathBuf],
    import_paths: &[PathBuf],
) -> Result<DescriptorPool, CliError> {
    let includes: Vec<PathBuf> = if import_paths.is_empty() {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for proto in protos {
            let dir = match proto.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs
    } else {
        import_paths.to_vec()
    };
    for proto in protos {
        // protox's own message for a missing file names the include paths,
        // not the file; say plainly that the file cannot be read.
        if let Err(error) = std::fs::metadata(proto) {
            return Err(CliError::usage(format!(
                "--proto {}: {error}",
                proto.display()
            )));
        }
    }
    let mut compiler = protox::Compiler::new(&includes)
        .map_err(|error| CliError::usage(format!("--import-path: {error}")))?;
    compiler.include_imports(true).include_source_info(false);
    compiler
        .open_files(protos)
        .map_err(|error| CliError::usage(format!("--proto: {error}")))?;
    Ok(compiler.descriptor_pool())
}

/// Reads every protoset into one pool (files may repeat across them).
pub(crate) fn read_protosets(protosets: &[PathBuf]) -> Result<DescriptorPool, CliError> {
    let mut pool = DescriptorPool::new();
    for path in protosets {
        let bytes = std::fs::read(path).map_err(|error| bad_protoset(path, error))?;
        pool.decode_file_descriptor_set(bytes.as_slice())
            .map_err(|error| bad_protoset(path, error))?;
    }
    Ok(pool)
}

fn bad_protoset(path: &Path, error: impl std::fmt::Display) -> CliError {
    CliError::usage(format!("--protoset {}: {error}", path.display()))
}
