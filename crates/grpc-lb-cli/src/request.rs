//! What `-H` and `-d` give a call: request metadata, and the text of the
//! request body (inline, from a file, or from stdin).

use std::io::Read as _;

use base64::Engine as _;
use clap::Args;
use tonic::metadata::{AsciiMetadataKey, BinaryMetadataKey, MetadataMap, MetadataValue};

use crate::CliError;

/// `-H`, shared by `call`, `list` and `describe` (reflection calls carry
/// the metadata too, as grpcurl's do).
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct HeaderArgs {
    /// Request metadata, `key: value` (repeatable). Keys ending in `-bin`
    /// take base64 values.
    #[arg(short = 'H', long = "header", value_name = "KEY: VALUE")]
    pub(crate) headers: Vec<String>,
}

impl HeaderArgs {
    /// The metadata, checked as gRPC checks it: a usage error names the
    /// header that is wrong.
    pub(crate) fn metadata(&self) -> Result<MetadataMap, CliError> {
        let mut metadata = MetadataMap::new();
        for header in &self.headers {
            let bad = |why: &str| CliError::usage(format!("-H {header:?}: {why}"));
            let (key, value) = header
                .split_once(':')
                .ok_or_else(|| bad("expected `key: value`"))?;
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim_start();
            if key.is_empty() {
                return Err(bad("the key is empty"));
            }
            if key.starts_with("grpc-") {
                return Err(bad("grpc- keys are reserved for gRPC itself"));
            }
            if key.ends_with("-bin") {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(value))
                    .map_err(|_| bad("a -bin value must be base64"))?;
                let key = BinaryMetadataKey::from_bytes(key.as_bytes())
                    .map_err(|_| bad("not a valid metadata key"))?;
                metadata.append_bin(key, MetadataValue::from_bytes(&bytes));
            } else {
                let key = AsciiMetadataKey::from_bytes(key.as_bytes())
                    .map_err(|_| bad("not a valid metadata key"))?;
                // gRPC's ASCII values are printable ASCII; HTTP would take
                // more, which other gRPC implementations refuse.
                let printable = value.bytes().all(|b| (0x20..=0x7e).contains(&b));
                let value = MetadataValue::try_from(value)
                    .ok()
                    .filter(|_| printable)
                    .ok_or_else(|| bad("the value must be printable ASCII"))?;
                metadata.append(key, value);
            }
        }
        Ok(metadata)
    }
}

/// The text of `-d`: the argument itself, or `@FILE`'s contents, or stdin's
/// for `@-`.
pub(crate) fn body_text(data: &str) -> Result<String, CliError> {
    match data.strip_prefix('@') {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|error| CliError::usage(format!("-d @-: reading stdin: {error}")))?;
            Ok(text)
        }
        Some(path) => std::fs::read_to_string(path)
            .map_err(|error| CliError::usage(format!("-d @{path}: {error}"))),
        None => Ok(data.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(headers: &[&str]) -> Result<MetadataMap, CliError> {
        HeaderArgs {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
        }
        .metadata()
    }

    #[test]
    fn headers_become_metadata() {
        let metadata =
            parse(&["Authorization: Bearer x", "k: a", "k:b", "trace-bin: AAEC"]).unwrap();
        assert_eq!(metadata.get("authorization").unwrap(), "Bearer x");
        let all: Vec<_> = metadata.get_all("k").iter().collect();
        assert_eq!(all, ["a", "b"]);
        let bin = metadata.get_bin("trace-bin").unwrap().to_bytes().unwrap();
        assert_eq!(bin.as_ref(), [0, 1, 2]);
    }

    #[test]
    fn bad_headers_are_usage_errors_that_name_them() {
        for (header, why) in [
            ("novalue", "expected `key: value`"),
            (": v", "the key is empty"),
            ("grpc-timeout: 1S", "reserved"),
            ("x-bin: !!", "base64"),
            ("bad key: v", "not a valid metadata key"),
            ("k: caf\u{e9}", "printable ASCII"),
        ] {
            match parse(&[header]) {
                Err(CliError::Usage(message)) => {
                    assert!(
                        message.contains(why) && message.contains(header),
                        "{message}"
                    )
                }
                other => panic!("{header:?}: {other:?}"),
            }
        }
    }
}
