//! `grpc-lb call TARGET METHOD`, `list` and `describe`, run as a user runs
//! them: against a tonic server of tests/protos (server reflection v1,
//! v1alpha or none), a grpcio server with grpcio-reflection
//! (tests/python/reflection_server.py) and `grpc-lb serve`, with schemas
//! from reflection, `.proto` files and a protoset.

#[path = "support/numbers.rs"]
mod numbers;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use numbers::{NumbersServer, Reflection};
use serde_json::{json, Value};
use support::*;

/// Every stdout line, each a JSON document.
fn lines_of(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "each line is JSON ({e}): {line:?}\nstderr: {}",
                    stderr_of(output)
                )
            })
        })
        .collect()
}

/// Asserts a successful run with nothing on stderr; returns its lines.
fn ok_lines(output: &Output) -> Vec<Value> {
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(output));
    assert_eq!(stderr_of(output), "");
    lines_of(output)
}

/// Asserts exit `code` with one line on stderr containing `want`, nothing
/// on stdout.
fn one_line_error(output: &Output, code: i32, want: &str) {
    let stderr = stderr_of(output);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.contains(want), "{want:?} in {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
}

/// Runs `grpc-lb ARGS` with `input` on its stdin.
fn grpc_lb_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start grpc-lb");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().expect("grpc-lb ran")
}

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("call_any-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_reflection_v1_call_of_a_tonic_server_fetches_imports_and_sends_metadata() {
    let server = NumbersServer::start(Reflection::V1);
    let output = grpc_lb(&[
        "call",
        &server.target(),
        "grpclb.test.Numbers/Describe",
        "-d",
        r#"{"value": 42}"#,
        "-H",
        "x-tenant: blue",
        "-H",
        "X-Trace: 7",
    ]);
    let lines = ok_lines(&output);
    // The proto3 JSON mapping: int64 as strings, enums by name, the
    // StringValue wrapper (from an imported file) as a plain string.
    assert_eq!(
        lines,
        [json!({
            "parity": "EVEN",
            "divisors": ["1", "2", "3", "6", "7", "14", "21", "42"],
            "metadata": {"x-tenant": "blue", "x-trace": "7"},
            "note": "the answer",
        })]
    );
    // The same method named with a dot, as grpcurl allows.
    let output = grpc_lb(&[
        "call",
        &server.target(),
        "grpclb.test.Numbers.Describe",
        "-d",
        r#"{"value": 3}"#,
    ]);
    assert_eq!(
        ok_lines(&output),
        [json!({"parity": "ODD", "divisors": ["1", "3"]})]
    );
}

#[test]
fn reflection_falls_back_from_v1_to_v1alpha() {
    let server = NumbersServer::start(Reflection::V1Alpha);
    let output = grpc_lb(&[
        "call",
        &server.target(),
        "grpclb.test.Numbers/Count",
        "-d",
        r#"{"to": 2}"#,
    ]);
    assert_eq!(
        ok_lines(&output),
        [json!({"value": "1"}), json!({"value": "2"})]
    );
    let output = grpc_lb(&["list", &server.target()]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "grpc.reflection.v1alpha.ServerReflection\ngrpclb.test.Numbers\n",
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn a_server_streaming_call_prints_each_message_on_its_line() {
    let server = NumbersServer::start(Reflection::Both);
    let output = grpc_lb(&[
        "call",
        &server.target(),
        "grpclb.test.Numbers/Count",
        "-d",
        r#"{"to": 5}"#,
    ]);
    let values: Vec<Value> = (1..=5).map(|v| json!({"value": v.to_string()})).collect();
    assert_eq!(ok_lines(&output), values);
    // --json: one object, the responses in it, and who answered.
    let output = grpc_lb(&[
        "call",
        &server.target(),
        "grpclb.test.Numbers/Count",
        "-d",
        r#"{"to": 3}"#,
        "--json",
    ]);
    let report = json_of(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert_eq!(report["method"], "grpclb.test.Numbers/Count");
    assert_eq!(report["code"], "OK");
    assert_eq!(report["responses"].as_array().unwrap().len(), 3);
    assert_eq!(report["backend"], server.addr.to_string());
    assert_eq!(report["target"], server.target());
    assert_eq!(report["policy"], "pick_first");
    // Bidi streaming: the reflection service itself, two questions, two
    // answers, in order.
    let output = grpc_lb(&[
        "call",
        &server.target(),
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "-d",
        r#"{"listServices": ""} {"fileContainingSymbol": "grpclb.test.Nothing"}"#,
    ]);
    let stderr = stderr_of(&output);
    let answers = lines_of(&output);
    assert_eq!(answers.len(), 1, "{answers:?} {stderr}");
    let mut services: Vec<&str> = answers[0]["listServicesResponse"]["service"]
        .as_array()
        .unwrap()
        .iter()
        .map(|service| service["name"].as_str().unwrap())
        .collect();
    services.sort();
    assert_eq!(
        services,
        ["grpc.reflection.v1.ServerReflection", "grpclb.test.Numbers"]
    );
    // tonic-reflection ends the stream on an unknown symbol.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("NOT_FOUND: symbol 'grpclb.test.Nothing' not found"),
        "{stderr}"
    );
    // An empty stream is a success with no lines.
    let output = grpc_lb(&[
        "call",
        &server.target(),
        "grpclb.test.Numbers/Count",
        "-d",
        r#"{"to": 0}"#,
    ]);
    assert!(ok_lines(&output).is_empty());
}

#[test]
fn a_client_streaming_call_reads_every_message_of_d_from_text_a_file_or_stdin() {
    let server = NumbersServer::start(Reflection::V1);
    let target = server.target();
    let method = "grpclb.test.Numbers/Sum";
    // Concatenated and newline separated, as grpcurl reads them.
    let body = "{\"value\": 1}{\"value\": 2}\n{\"value\": 3}\n\n  {\"value\": \"4\"}\n";
    let want = [json!({"sum": "10", "count": 4})];
    assert_eq!(
        ok_lines(&grpc_lb(&["call", &target, method, "-d", body])),
        want
    );
    let file = temp_file("sum.json", body.as_bytes());
    let at_file = format!("@{}", path_str(&file));
    assert_eq!(
        ok_lines(&grpc_lb(&["call", &target, method, "-d", &at_file])),
        want
    );
    assert_eq!(
        ok_lines(&grpc_lb_stdin(&["call", &target, method, "-d", "@-"], body)),
        want
    );
    // No message at all: the server sums nothing.
    assert_eq!(
        ok_lines(&grpc_lb(&["call", &target, method, "-d", ""])),
        [json!({})]
    );
}

#[test]
fn a_proto_call_compiles_the_files_in_process_without_reflection() {
    let server = NumbersServer::start(Reflection::None);
    let target = server.target();
    let import_path = numbers::proto_dir();
    let proto = numbers::numbers_proto();
    let output = grpc_lb(&[
        "call",
        &target,
        "grpclb.test.Numbers/Describe",
        "-d",
        r#"{"value": 4}"#,
        "--proto",
        path_str(&proto),
        "--import-path",
        path_str(&import_path),
    ]);
    assert_eq!(
        ok_lines(&output),
        [json!({"parity": "EVEN", "divisors": ["1", "2", "4"]})]
    );
    // Without reflection nor files, one line says what to give.
    let output = grpc_lb(&["call", &target, "grpclb.test.Numbers/Describe"]);
    one_line_error(&output, 1, "does not serve reflection");
    assert!(stderr_of(&output).contains("--proto or --protoset"));
    // Without --import-path the import cannot be found: a usage error that
    // names it.
    let output = grpc_lb(&[
        "call",
        &target,
        "grpclb.test.Numbers/Describe",
        "--proto",
        path_str(&proto),
    ]);
    one_line_error(&output, 2, "grpclb/test/common.proto");
    // A file that is not there, and one that is not a .proto.
    let output = grpc_lb(&["call", &target, "a.B/C", "--proto", "/nonexistent/x.proto"]);
    one_line_error(&output, 2, "--proto /nonexistent/x.proto");
    let garbage = temp_file("garbage.proto", b"syntax = \"proto3\"; message {");
    let output = grpc_lb(&["call", &target, "a.B/C", "--proto", path_str(&garbage)]);
    one_line_error(&output, 2, "--proto: ");
}

#[test]
fn a_protoset_call_reads_an_encoded_file_descriptor_set() {
    let server = NumbersServer::start(Reflection::None);
    let protoset = temp_file("numbers.protoset", &numbers::protoset());
    let output = grpc_lb(&[
        "call",
        &server.target(),
        "grpclb.test.Numbers/Sum",
        "-d",
        r#"{"value": 40} {"value": 2}"#,
        "--protoset",
        path_str(&protoset),
    ]);
    assert_eq!(ok_lines(&output), [json!({"sum": "42", "count": 2})]);
    // list from the protoset: its services, no server asked.
    let output = grpc_lb(&[
        "list",
        &ipv4(&[dead_port()]),
        "--protoset",
        path_str(&protoset),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "grpclb.test.Numbers\n",
        "{}",
        stderr_of(&output)
    );
    let not_a_set = temp_file("bad.protoset", b"\xff\xff\xff");
    let output = grpc_lb(&[
        "call",
        &server.target(),
        "grpclb.test.Numbers/Sum",
        "--protoset",
        path_str(&not_a_set),
    ]);
    one_line_error(&output, 2, "--protoset ");
}

#[test]
fn list_and_describe_show_services_methods_and_messages() {
    let server = NumbersServer::start(Reflection::V1);
    let target = server.target();
    let stdout = |output: Output| {
        assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(
        stdout(grpc_lb(&["list", &target])),
        "grpc.reflection.v1.ServerReflection\ngrpclb.test.Numbers\n"
    );
    assert_eq!(
        stdout(grpc_lb(&["list", &target, "grpclb.test.Numbers"])),
        "grpclb.test.Numbers.Describe\ngrpclb.test.Numbers.Count\ngrpclb.test.Numbers.Sum\n"
    );
    let service = stdout(grpc_lb(&["describe", &target, "grpclb.test.Numbers"]));
    assert_eq!(
        service,
        "grpclb.test.Numbers is a service:\nservice Numbers {\n  \
         rpc Describe ( .grpclb.test.Number ) returns ( .grpclb.test.Description );\n  \
         rpc Count ( .grpclb.test.CountRequest ) returns ( stream .grpclb.test.Number );\n  \
         rpc Sum ( stream .grpclb.test.Number ) returns ( .grpclb.test.Total );\n}\n"
    );
    let message = stdout(grpc_lb(&["describe", &target, "grpclb.test.Description"]));
    assert_eq!(
        message,
        "grpclb.test.Description is a message:\nmessage Description {\n  \
         .grpclb.test.Parity parity = 1;\n  repeated int64 divisors = 2;\n  \
         map<string, string> metadata = 3;\n  .google.protobuf.StringValue note = 4;\n}\n"
    );
    let enumeration = stdout(grpc_lb(&["describe", &target, ".grpclb.test.Parity"]));
    assert!(
        enumeration.starts_with(
            "grpclb.test.Parity is an enum:\nenum Parity {\n  PARITY_UNSPECIFIED = 0;"
        ),
        "{enumeration}"
    );
    let method = stdout(grpc_lb(&["describe", &target, "grpclb.test.Numbers.Count"]));
    assert_eq!(
        method,
        "grpclb.test.Numbers.Count is a method:\n\
         rpc Count ( .grpclb.test.CountRequest ) returns ( stream .grpclb.test.Number );\n"
    );
    // The same from the .proto files, with no server behind the target.
    let dead = ipv4(&[dead_port()]);
    let from_files = stdout(grpc_lb(&[
        "describe",
        &dead,
        "grpclb.test.Numbers",
        "--proto",
        path_str(&numbers::numbers_proto()),
        "--import-path",
        path_str(&numbers::proto_dir()),
    ]));
    assert_eq!(from_files, service);
    let output = grpc_lb(&["describe", &target, "grpclb.test.Nothing"]);
    one_line_error(
        &output,
        2,
        "symbol \"grpclb.test.Nothing\" not found in server reflection at",
    );
    let output = grpc_lb(&["list", &target, "grpclb.test.Nothing"]);
    one_line_error(&output, 2, "service \"grpclb.test.Nothing\" not found");
}

#[test]
fn mistakes_are_one_line_with_the_right_exit_code() {
    let server = NumbersServer::start(Reflection::V1);
    let target = server.target();
    let describe = "grpclb.test.Numbers/Describe";
    let usage: &[(&[&str], &str)] = &[
        (
            &["call", &target, "grpclb.test.Numbers/Divide"],
            "service grpclb.test.Numbers has no method \"Divide\" (it has: Describe, Count, Sum)",
        ),
        (
            &["call", &target, "grpclb.test.Letters/Count"],
            "service \"grpclb.test.Letters\" not found in server reflection at",
        ),
        (&["call", &target, "Describe"], "bad method \"Describe\""),
        (
            &["call", &target, describe, "-d", r#"{"value": 1"#],
            "-d: message 1: EOF while parsing an object at line 1 column 11",
        ),
        (
            &["call", &target, describe, "-d", r#"{"valu": 1}"#],
            "unrecognized field name 'valu'",
        ),
        (
            &["call", &target, describe, "-d", r#"{"value": "one"}"#],
            "-d: message 1: ",
        ),
        (
            &[
                "call",
                &target,
                describe,
                "-d",
                r#"{"value": 1} {"value": 2}"#,
            ],
            "-d holds 2 messages, but grpclb.test.Numbers.Describe takes one",
        ),
        (
            &["call", &target, describe, "-d", "@/nonexistent/body.json"],
            "-d @/nonexistent/body.json: ",
        ),
        (
            &["call", &target, describe, "-H", "novalue"],
            "-H \"novalue\"",
        ),
        (
            &["call", &target, describe, "--name", "x"],
            "the argument '[METHOD]' cannot be used with '--name <NAME>'",
        ),
        (
            &["call", &target, "--proto", "x.proto"],
            "--proto and --protoset need a METHOD or -d",
        ),
    ];
    for (args, want) in usage {
        one_line_error(&grpc_lb(args), 2, want);
    }
    // A call that fails at the server: exit 1, its status on one line.
    let output = grpc_lb(&["call", &target, describe, "-d", r#"{"value": 0}"#]);
    one_line_error(
        &output,
        1,
        "grpclb.test.Numbers/Describe: INVALID_ARGUMENT: value 0 is not in 1..=10000",
    );
    // No server: reflection cannot be asked, and says why.
    let dead = ipv4(&[dead_port()]);
    let output = grpc_lb(&["call", &dead, describe, "--backoff-base-ms", "100"]);
    one_line_error(&output, 1, "server reflection at");
    assert!(
        stderr_of(&output).contains("UNAVAILABLE"),
        "{}",
        stderr_of(&output)
    );
}

#[test]
fn serve_answers_reflection_and_say_hello_stays_the_default() {
    let serve = Serve::start(1, &[]);
    let target = serve.target();
    let hello = format!("Hello you from {}", serve.addrs[0]);
    // -d alone calls SayHello once, from its built-in schema.
    let output = grpc_lb(&["call", &target, "-d", r#"{"name": "you"}"#]);
    assert_eq!(ok_lines(&output), [json!({"message": hello})]);
    // Named, its schema comes from serve's reflection service.
    let output = grpc_lb(&[
        "call",
        &target,
        "helloworld.Greeter/SayHello",
        "-d",
        r#"{"name": "you"}"#,
    ]);
    assert_eq!(ok_lines(&output), [json!({"message": hello})]);
    let output = grpc_lb(&["list", &target]);
    let services = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(services.contains("helloworld.Greeter\n"), "{services}");
    assert!(services.contains("grpc.health.v1.Health\n"), "{services}");
    // Without a method, the SayHello load and its report, as before.
    let report = json_of(&grpc_lb(&["call", &target, "--requests", "5", "--json"]));
    assert_eq!(report["ok"], 5, "{report}");
}

/// A Greeter that answers only calls carrying `x-key: open` (and `-bin`
/// metadata `x-raw-bin` of bytes 0, 1, 2).
struct Guarded;

#[tonic::async_trait]
impl grpc_lb_helloworld::proto::Greeter for Guarded {
    async fn say_hello(
        &self,
        request: tonic::Request<grpc_lb_helloworld::proto::HelloRequest>,
    ) -> Result<tonic::Response<grpc_lb_helloworld::proto::HelloReply>, tonic::Status> {
        let metadata = request.metadata();
        let key = metadata.get("x-key").and_then(|v| v.to_str().ok());
        let raw = metadata
            .get_bin("x-raw-bin")
            .and_then(|v| v.to_bytes().ok());
        if key != Some("open") || raw.as_deref() != Some(&[0u8, 1, 2][..]) {
            return Err(tonic::Status::permission_denied(format!(
                "x-key {key:?}, x-raw-bin {raw:?}"
            )));
        }
        Ok(tonic::Response::new(
            grpc_lb_helloworld::proto::HelloReply {
                message: format!("Hello {}", request.get_ref().name),
            },
        ))
    }
}

#[test]
fn h_metadata_reaches_the_server_in_the_load_and_in_one_call() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(grpc_lb_helloworld::proto::GreeterServer::new(Guarded))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let target = ipv4(&[addr]);
    let headers = ["-H", "X-Key: open", "-H", "x-raw-bin: AAEC"];
    let mut load = vec!["call", &target, "--requests", "4", "--json"];
    load.extend(headers);
    let report = json_of(&grpc_lb(&load));
    assert_eq!(report["codes"], json!({"OK": 4}), "{report}");
    let mut one = vec!["call", &target, "-d", r#"{"name": "h"}"#];
    one.extend(headers);
    assert_eq!(ok_lines(&grpc_lb(&one)), [json!({"message": "Hello h"})]);
    // Without them, the server refuses: exit 1, its status on one line.
    let output = grpc_lb(&["call", &target, "-d", "{}"]);
    one_line_error(
        &output,
        1,
        "helloworld.Greeter/SayHello: PERMISSION_DENIED: x-key None",
    );
}

/// tests/python/reflection_server.py: grpcio with grpcio-reflection.
struct PythonReflectionServer {
    child: Child,
    addr: String,
}

impl PythonReflectionServer {
    fn start() -> PythonReflectionServer {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("GRPC_LB_TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.join("../../target/test-venv/bin/python"));
        let script = manifest.join("../../tests/python/reflection_server.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e}; ./scripts/test creates target/test-venv \
                     with tests/python/requirements.txt",
                    python.display()
                )
            });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let status = child.wait();
            panic!(
                "reflection_server.py did not start ({status:?}); ./scripts/test installs \
                 grpcio-reflection into target/test-venv"
            );
        };
        PythonReflectionServer {
            addr: addr.to_owned(),
            child,
        }
    }
}

impl Drop for PythonReflectionServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_grpcio_server_with_grpcio_reflection_is_called_listed_and_described() {
    let server = PythonReflectionServer::start();
    let target = format!("ipv4:{}", server.addr);
    // grpcio-reflection serves v1alpha only: the fallback is taken, and
    // the wrappers.proto import is fetched by name.
    let output = grpc_lb(&[
        "call",
        &target,
        "grpclb.pytest.Echo/Say",
        "-d",
        r#"{"text": "hi"}"#,
        "-H",
        "x-greeting: hello",
    ]);
    assert_eq!(
        ok_lines(&output),
        [json!({"text": "hi", "greeting": "hello"})]
    );
    let output = grpc_lb(&[
        "call",
        &target,
        "grpclb.pytest.Echo/Repeat",
        "-d",
        r#"{"text": "again", "times": 3}"#,
    ]);
    assert_eq!(
        ok_lines(&output),
        [
            json!({"text": "again"}),
            json!({"text": "again", "index": 1}),
            json!({"text": "again", "index": 2}),
        ]
    );
    let output = grpc_lb(&["list", &target]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "grpc.reflection.v1alpha.ServerReflection\ngrpclb.pytest.Echo\n",
        "{}",
        stderr_of(&output)
    );
    let output = grpc_lb(&["describe", &target, "grpclb.pytest.EchoRequest"]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "grpclb.pytest.EchoRequest is a message:\nmessage EchoRequest {\n  \
         string text = 1;\n  .google.protobuf.Int32Value times = 2;\n}\n"
    );
    let output = grpc_lb(&["call", &target, "grpclb.pytest.Echo/Shout"]);
    one_line_error(
        &output,
        2,
        "service grpclb.pytest.Echo has no method \"Shout\"",
    );
    let output = grpc_lb(&["call", &target, "grpclb.pytest.Nobody/Say"]);
    one_line_error(&output, 2, "service \"grpclb.pytest.Nobody\" not found");
}

/// A Greeter that answers UNAVAILABLE to every other call, the first
/// included, and says which call of its life answered.
struct EveryOtherFails(std::sync::atomic::AtomicU64);

#[tonic::async_trait]
impl grpc_lb_helloworld::proto::Greeter for EveryOtherFails {
    async fn say_hello(
        &self,
        request: tonic::Request<grpc_lb_helloworld::proto::HelloRequest>,
    ) -> Result<tonic::Response<grpc_lb_helloworld::proto::HelloReply>, tonic::Status> {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if n % 2 == 1 {
            return Err(tonic::Status::unavailable(format!("call {n} fails")));
        }
        Ok(tonic::Response::new(
            grpc_lb_helloworld::proto::HelloReply {
                message: format!("Hello {} at call {n}", request.get_ref().name),
            },
        ))
    }
}

#[test]
fn a_method_call_is_retried_by_the_service_config_in_force() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(grpc_lb_helloworld::proto::GreeterServer::new(
                EveryOtherFails(Default::default()),
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let target = ipv4(&[addr]);
    let retry = r#"{"methodConfig":[{"name":[{"service":"helloworld.Greeter"}],
        "retryPolicy":{"maxAttempts":2,"initialBackoff":"0.01s","maxBackoff":"0.01s",
        "backoffMultiplier":1,"retryableStatusCodes":["UNAVAILABLE"]}}]}"#;
    // Call 1 fails, the channel's retry policy makes call 2, which answers.
    let output = grpc_lb(&[
        "call",
        &target,
        "-d",
        r#"{"name": "r"}"#,
        "--service-config",
        retry,
        "--json",
    ]);
    let report = json_of(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert_eq!(
        report["responses"],
        json!([{"message": "Hello r at call 2"}])
    );
    assert_eq!(report["service_config_source"], "--service-config");
    assert_eq!(
        report["service_config"]["methodConfig"][0]["retryPolicy"]["maxAttempts"],
        2
    );
    // Without the policy, call 3 fails and so does the command.
    let output = grpc_lb(&["call", &target, "-d", r#"{"name": "r"}"#]);
    one_line_error(
        &output,
        1,
        "helloworld.Greeter/SayHello: UNAVAILABLE: call 3 fails",
    );
}
