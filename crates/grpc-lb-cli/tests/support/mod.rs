//! What the binary's tests share: running `grpc-lb`, `grpc-lb serve`
//! processes, reading the JSON.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_grpc-lb");
/// No run of the binary in these tests should take longer.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A `grpc-lb serve` process; killed when dropped.
pub struct Serve {
    pub child: Child,
    pub addrs: Vec<SocketAddr>,
}

impl Serve {
    /// Starts `grpc-lb serve` on `count` free ports with `extra` flags, and
    /// waits for its `listening on` line.
    pub fn start(count: usize, extra: &[&str]) -> Serve {
        let listen = vec!["127.0.0.1:0"; count].join(",");
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", &listen])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start grpc-lb serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the first line");
        let addrs = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .split(',')
            .map(|a| a.parse().expect("a socket address"))
            .collect::<Vec<SocketAddr>>();
        assert_eq!(addrs.len(), count, "{line}");
        Serve { child, addrs }
    }

    pub fn target(&self) -> String {
        ipv4(&self.addrs)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ipv4(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    format!("ipv4:{}", list.join(","))
}

/// Runs `grpc-lb ARGS` to completion (at most [`LIMIT`]).
pub fn grpc_lb(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start grpc-lb");
    let id = child.id();
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match result.recv_timeout(LIMIT) {
        Ok(output) => output.expect("grpc-lb ran"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
            panic!("grpc-lb {args:?} ran longer than {LIMIT:?}");
        }
    }
}

pub fn json_of(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "--json output is one JSON object ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn dead_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}
