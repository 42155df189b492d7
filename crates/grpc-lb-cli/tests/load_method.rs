//! A load of any method: `call TARGET METHOD` with a load flag repeats the
//! method, its request from `-d`, its schema from reflection or `--proto`,
//! against the streaming test service (tonic, in-process, on loopback):
//! unary, server-streaming and client-streaming, OK and failing.

#[path = "support/numbers.rs"]
mod numbers;
mod support;

use numbers::{numbers_proto, proto_dir, NumbersServer, Reflection};
use serde_json::Value;
use support::*;

fn load(args: &[&str], code: i32) -> Value {
    let mut all = vec!["call"];
    all.extend_from_slice(args);
    all.push("--json");
    let output = grpc_lb(&all);
    assert_eq!(output.status.code(), Some(code), "{}", stderr_of(&output));
    assert_eq!(stderr_of(&output), "");
    json_of(&output)
}

#[test]
fn a_unary_method_from_a_proto_file_is_the_load() {
    let server = NumbersServer::start(Reflection::None);
    let proto = numbers_proto();
    let imports = proto_dir();
    let report = load(
        &[
            &server.target(),
            "grpclb.test.Numbers/Describe",
            "-d",
            r#"{"value": 12}"#,
            "--proto",
            proto.to_str().unwrap(),
            "--import-path",
            imports.to_str().unwrap(),
            "--requests",
            "30",
            "--concurrency",
            "3",
        ],
        0,
    );
    assert_eq!(report["method"], "grpclb.test.Numbers/Describe");
    assert_eq!(report["requests"], 30, "{report}");
    assert_eq!(report["codes"], serde_json::json!({"OK": 30}));
    assert_eq!(report["backends"][server.addr.to_string()], 30);

    // A body the server refuses fails every call, each counted.
    let report = load(
        &[
            &server.target(),
            "grpclb.test.Numbers/Describe",
            "-d",
            r#"{"value": 0}"#,
            "--proto",
            proto.to_str().unwrap(),
            "--import-path",
            imports.to_str().unwrap(),
            "--requests",
            "10",
        ],
        1,
    );
    assert_eq!(report["codes"], serde_json::json!({"INVALID_ARGUMENT": 10}));
    assert_eq!(
        report["errors"][0]["message"],
        "value 0 is not in 1..=10000"
    );
}

#[test]
fn streaming_methods_by_reflection_are_the_load() {
    let server = NumbersServer::start(Reflection::V1);
    // Server streaming: each call reads its three numbers to the end.
    let report = load(
        &[
            &server.target(),
            "grpclb.test.Numbers/Count",
            "-d",
            r#"{"to": 3}"#,
            "--duration",
            "0.5",
            "--rps",
            "40",
        ],
        0,
    );
    assert_eq!(report["method"], "grpclb.test.Numbers/Count");
    let requests = report["requests"].as_u64().unwrap();
    assert!((3..=21).contains(&requests), "{report}");
    assert_eq!(report["ok"], requests);
    // Client streaming: every call sends both messages of -d.
    let report = load(
        &[
            &server.target(),
            "grpclb.test.Numbers/Sum",
            "-d",
            r#"{"value": 1} {"value": 2}"#,
            "--requests",
            "5",
            "--concurrency",
            "2",
        ],
        0,
    );
    assert_eq!(report["method"], "grpclb.test.Numbers/Sum");
    assert_eq!(report["codes"], serde_json::json!({"OK": 5}), "{report}");
}
