//! Support for the whole-stack integration tests: real server processes on
//! loopback that a test can kill and restart.
//!
//! Two servers answer the helloworld Greeter the same way ("Hello {name} from
//! {backend}", with `x-backend` metadata), both run as a [`GreeterProcess`]:
//! our tonic server ([`GreeterProcess::start`]), and grpcio's C-core driven
//! from Python ([`GreeterProcess::start_python`],
//! `tests/python/greeter_server.py`), to check the channel against a gRPC
//! implementation that is not ours.
#![deny(missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use rustix::process::{kill_process, waitpid, Pid, Signal, WaitOptions};

/// The `ipv4:` target that lists `servers` in order.
pub fn ipv4_target(servers: &[GreeterProcess]) -> String {
    let addrs: Vec<String> = servers.iter().map(|s| s.addr().to_string()).collect();
    format!("ipv4:{}", addrs.join(","))
}

/// The command printed when Python or grpcio is missing: `scripts/test` makes
/// the tests' own virtual environment and installs grpcio into it.
const PYTHON_INSTALL: &str =
    "./scripts/test (it creates target/test-venv with tests/python/requirements.txt)";

/// The Python interpreter that runs the grpcio servers: `GRPC_LB_TEST_PYTHON`
/// (set by `scripts/test`), else the tests' own virtual environment at
/// `target/test-venv` when it exists, else `python3` on PATH. The system
/// interpreter is never installed into.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("GRPC_LB_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}
/// The exit code of greeter_server.py when `import grpc` fails.
const PYTHON_NO_GRPC: i32 = 3;

/// How to start one kind of server.
#[derive(Debug, Clone)]
enum Launcher {
    /// Our tonic server: `BINARY --listen ADDR --name NAME`.
    Rust(PathBuf),
    /// `python3 greeter_server.py --host HOST --port PORT --name NAME`, with
    /// one `--option KEY=VALUE` per server option.
    Python(Vec<(String, i64)>),
}

impl Launcher {
    fn command(&self, listen: &str, name: &str) -> Command {
        match self {
            Launcher::Rust(binary) => {
                let mut command = Command::new(binary);
                command.args(["--listen", listen, "--name", name]);
                command
            }
            Launcher::Python(options) => {
                let listen: SocketAddr = listen
                    .parse()
                    .unwrap_or_else(|e| panic!("listen address {listen:?}: {e}"));
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/greeter_server.py");
                let mut command = Command::new(python());
                command
                    .arg(script)
                    .args(["--host", &listen.ip().to_string()])
                    .args(["--port", &listen.port().to_string()])
                    .args(["--name", name]);
                for (key, value) in options {
                    command.arg("--option").arg(format!("{key}={value}"));
                }
                command
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            Launcher::Rust(binary) => binary.display().to_string(),
            Launcher::Python(_) => format!("{} tests/python/greeter_server.py", python().display()),
        }
    }

    /// What to tell the reader when the server cannot start at all.
    fn hint(&self, exit: Option<ExitStatus>) -> String {
        match (self, exit.and_then(|s| s.code())) {
            (Launcher::Python(_), Some(PYTHON_NO_GRPC)) => {
                format!(
                    "grpcio is not installed for {}; install it with: {PYTHON_INSTALL}",
                    python().display()
                )
            }
            (Launcher::Python(_), _) => {
                format!("The grpcio tests need python3 with grpcio ({PYTHON_INSTALL})")
            }
            (Launcher::Rust(_), _) => String::new(),
        }
    }
}

/// A helloworld Greeter server running as a child process, and what it takes
/// to restart it.
///
/// Killing it is a real `SIGKILL`: the process dies, the kernel closes its
/// sockets, and the client sees exactly what it would see in production.
#[derive(Debug)]
pub struct GreeterProcess {
    launcher: Launcher,
    name: String,
    addr: SocketAddr,
    child: Option<Child>,
}

impl GreeterProcess {
    /// Starts our tonic server named `name` on `listen` (port 0 picks a free
    /// port) and waits until it reports that it is listening.
    ///
    /// `binary` is the server executable; tests pass
    /// `env!("CARGO_BIN_EXE_test-greeter-server")`.
    pub fn start(binary: impl Into<PathBuf>, listen: &str, name: &str) -> GreeterProcess {
        Self::launch(Launcher::Rust(binary.into()), listen, name)
    }

    /// Starts the grpcio (Python) server instead.
    ///
    /// It needs `python3` with the packages of `tests/python/requirements.txt`
    /// (`scripts/test` installs them); without them it panics and says what to
    /// install, so no test skips silently.
    pub fn start_python(listen: &str, name: &str) -> GreeterProcess {
        Self::launch(Launcher::Python(Vec::new()), listen, name)
    }

    /// Starts the grpcio (Python) server with these `grpc.server` channel
    /// arguments, such as `("grpc.http2.max_ping_strikes", 1)`; they are kept
    /// across [`restart`](Self::restart)s.
    pub fn start_python_with_options(
        listen: &str,
        name: &str,
        options: &[(&str, i64)],
    ) -> GreeterProcess {
        let options = options
            .iter()
            .map(|(key, value)| ((*key).to_owned(), *value))
            .collect();
        Self::launch(Launcher::Python(options), listen, name)
    }

    fn launch(launcher: Launcher, listen: &str, name: &str) -> GreeterProcess {
        let (child, addr) = spawn(&launcher, listen, name);
        GreeterProcess {
            launcher,
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

    /// Stops the process with SIGTERM (a graceful shutdown) and waits until it
    /// has exited.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        kill_process(Pid::from_child(&child), Signal::TERM).expect("send SIGTERM");
        Some(child.wait().expect("wait for the server to exit"))
    }

    /// Freezes the process with SIGSTOP: its sockets stay open but nothing is
    /// read or answered, as with a hung host or a partitioned network.
    /// Returns once the process has stopped (a signal is delivered
    /// asynchronously: a thread still running could answer one more call).
    pub fn pause(&mut self) {
        if let Some(child) = &self.child {
            let pid = Pid::from_child(child);
            kill_process(pid, Signal::STOP).expect("send SIGSTOP");
            waitpid(Some(pid), WaitOptions::UNTRACED).expect("wait for the server to stop");
        }
    }

    /// Lets a [`pause`](Self::pause)d process run again (SIGCONT).
    pub fn resume(&mut self) {
        if let Some(child) = &self.child {
            kill_process(Pid::from_child(child), Signal::CONT).expect("send SIGCONT");
        }
    }

    /// Starts the server again on the same address (killing it first if it
    /// still runs).
    pub fn restart(&mut self) {
        self.kill();
        let (child, addr) = spawn(&self.launcher, &self.addr.to_string(), &self.name);
        assert_eq!(addr, self.addr, "restarted on the same address");
        self.child = Some(child);
    }
}

impl Drop for GreeterProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl GreeterProcess {
    /// Sets the grpcio server's `grpc.health.v1` status (for the whole
    /// server and helloworld.Greeter): SERVING or NOT_SERVING, by SIGUSR2 or
    /// SIGUSR1. Only servers from [`start_python`](Self::start_python) serve
    /// the health service; it panics for the others.
    pub fn set_serving(&self, serving: bool) {
        assert!(
            matches!(self.launcher, Launcher::Python(_)),
            "only the grpcio server flips its health status"
        );
        let child = self.child.as_ref().expect("the server is running");
        let signal = if serving { Signal::USR2 } else { Signal::USR1 };
        kill_process(Pid::from_child(child), signal).expect("signal the server");
    }
}

/// Starts the server and waits for its one line, `listening on ADDR`.
fn spawn(launcher: &Launcher, listen: &str, name: &str) -> (Child, SocketAddr) {
    let what = launcher.describe();
    let mut child = launcher
        .command(listen, name)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}. {}", launcher.hint(None)));
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    let read = BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("read the first line of {what}: {e}"));
    if read == 0 {
        let status = child.wait().ok();
        let exit = status.map_or("with an unknown status".to_owned(), |s| s.to_string());
        panic!(
            "{what} exited ({exit}) before listening on {listen}. {}",
            launcher.hint(status)
        );
    }
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from {what}: {line:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{what} printed {line:?}, not a socket address: {e}"));
    (child, addr)
}
