//! `grpc-lb call -d`: arbitrary text parsed as a request body (JSON messages,
//! concatenated or one per line) against message types covering every
//! field kind, the well-known types with their own JSON forms (Any,
//! Timestamp, Duration, Struct, Value, FieldMask, wrappers), maps, oneofs,
//! enums and recursion. The body parser is the CLI's own file, included as
//! it is.
//!
//! Checks: nothing panics; every error names a message from 1; and every
//! message that parses prints as JSON that parses back to the same JSON
//! (what `call` prints is what it would send again).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use prost_reflect::{DescriptorPool, MessageDescriptor};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

#[allow(dead_code)]
#[path = "../../crates/grpc-lb-cli/src/body.rs"]
mod body;

const SCHEMA: &str = r#"
syntax = "proto3";
package fuzz;
import "google/protobuf/any.proto";
import "google/protobuf/duration.proto";
import "google/protobuf/field_mask.proto";
import "google/protobuf/struct.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
import "google/protobuf/empty.proto";

enum Color { COLOR_UNSPECIFIED = 0; RED = 1; GREEN = 2; }

message Scalars {
  double d = 1; float f = 2; int32 i32 = 3; int64 i64 = 4; uint32 u32 = 5;
  uint64 u64 = 6; sint32 s32 = 7; sint64 s64 = 8; fixed32 x32 = 9;
  fixed64 x64 = 10; sfixed32 sx32 = 11; sfixed64 sx64 = 12; bool b = 13;
  string s = 14; bytes by = 15; Color color = 16; optional int32 maybe = 17;
}

message Everything {
  Scalars scalars = 1;
  repeated Scalars list = 2;
  map<string, Scalars> by_name = 3;
  map<int64, Color> colors = 4;
  map<bool, bytes> flags = 5;
  oneof choice { string text = 6; Everything nested = 7; Color pick = 8; }
  google.protobuf.Any any = 9;
  google.protobuf.Timestamp at = 10;
  google.protobuf.Duration took = 11;
  google.protobuf.Struct object = 12;
  google.protobuf.Value value = 13;
  google.protobuf.ListValue values = 14;
  google.protobuf.FieldMask mask = 15;
  google.protobuf.Int64Value wrapped_int = 16;
  google.protobuf.BytesValue wrapped_bytes = 17;
  google.protobuf.DoubleValue wrapped_double = 18;
  google.protobuf.Empty empty = 19;
  repeated google.protobuf.Any anys = 20;
}
"#;

/// The message types the first input byte chooses among.
const TYPES: &[&str] = &[
    "fuzz.Everything",
    "fuzz.Scalars",
    "google.protobuf.Any",
    "google.protobuf.Value",
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    "google.protobuf.Int64Value",
];

struct Schema;

impl FileResolver for Schema {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == "fuzz.proto" {
            File::from_source(name, SCHEMA)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

fn types() -> &'static [MessageDescriptor] {
    static TYPES_OF_POOL: OnceLock<Vec<MessageDescriptor>> = OnceLock::new();
    TYPES_OF_POOL.get_or_init(|| {
        let mut resolver = ChainFileResolver::new();
        resolver.add(Schema);
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_imports(true);
        compiler
            .open_file("fuzz.proto")
            .expect("the fuzz schema compiles");
        let pool: DescriptorPool = compiler.descriptor_pool();
        TYPES
            .iter()
            .map(|name| {
                pool.get_message_by_name(name)
                    .expect("a type of the schema")
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let types = types();
    let descriptor = &types[choice as usize % types.len()];
    match body::parse_messages(descriptor, text) {
        Ok(messages) => {
            for message in &messages {
                let printed = body::to_json(message).expect("a parsed message prints");
                let again = body::parse_messages(descriptor, &printed.to_string())
                    .expect("what was printed parses");
                assert_eq!(again.len(), 1, "{printed}");
                let reprinted = body::to_json(&again[0]).expect("it prints again");
                assert_eq!(printed, reprinted);
            }
        }
        Err(error) => {
            assert!(error.message >= 1);
            assert!(error
                .to_string()
                .starts_with(&format!("message {}: ", error.message)));
        }
    }
});
