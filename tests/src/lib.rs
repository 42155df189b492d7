//! Support for the whole-stack integration tests: real server processes on
//! loopback that a test can kill and restart.
#![deny(missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A helloworld Greeter server running as a child process.
///
/// Killing it is a real `SIGKILL`: the process dies, the kernel closes its
/// sockets, and the client sees exactly what it would see in production.
#[derive(Debug)]
pub struct GreeterProcess {
    binary: PathBuf,
    name: String,
    addr: SocketAddr,
    child: Option<Child>,
}

impl GreeterProcess {
    /// Starts a server named `name` on `listen` (port 0 picks a free port) and
    /// waits until it reports that it is listening.
    ///
    /// `binary` is the server executable; tests pass
    /// `env!("CARGO_BIN_EXE_test-greeter-server")`.
    pub fn start(binary: impl Into<PathBuf>, listen: &str, name: &str) -> GreeterProcess {
        let binary = binary.into();
        let (child, addr) = spawn(&binary, listen, name);
        GreeterProcess {
            binary,
            name: name.to_owned(),
            addr,
            child: Some(child),
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The backend name the server puts in its replies.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kills the process with SIGKILL and waits until it has exited.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same address.
    pub fn restart(&mut self) {
        self.kill();
        let (child, addr) = spawn(&self.binary, &self.addr.to_string(), &self.name);
        assert_eq!(addr, self.addr, "restarted on the same address");
        self.child = Some(child);
    }
}

impl Drop for GreeterProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(binary: &PathBuf, listen: &str, name: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(binary)
        .args(["--listen", listen, "--name", name])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the server's first line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"))
        .parse()
        .expect("the server prints a socket address");
    (child, addr)
}
