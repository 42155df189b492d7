//! Server processes and CPU pinning, and the process's own CPU time and memory
//! as Linux reports them in `/proc` (the workspace forbids `unsafe`, so no
//! `getrusage` FFI: `/proc/self/task/*/schedstat` gives the same per-thread
//! run time in nanoseconds).

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::server::LISTENING;
use crate::Error;

/// Where the client and the server run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinning {
    /// The client's core, when pinned.
    pub client: Option<usize>,
    /// The servers' core, when pinned.
    pub server: Option<usize>,
}

impl Pinning {
    /// Client on core 0 and servers on core 1 when there are two cores or
    /// more and `taskset` exists; otherwise nothing is pinned.
    pub fn detect() -> Pinning {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let taskset = std::process::Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if cores >= 2 && taskset {
            Pinning {
                client: Some(0),
                server: Some(1),
            }
        } else {
            Pinning {
                client: None,
                server: None,
            }
        }
    }

    /// Pins this process (all its threads, and those it starts later) to the
    /// client core. Called before the runtime starts so its threads inherit it.
    pub fn pin_self(&self) -> Result<(), Error> {
        let Some(core) = self.client else {
            return Ok(());
        };
        let status = std::process::Command::new("taskset")
            .args([
                "-a",
                "-cp",
                &core.to_string(),
                &std::process::id().to_string(),
            ])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(format!("taskset could not pin the client to core {core}").into());
        }
        Ok(())
    }
}

/// A running benchmark server process.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// The bound addresses, in the order asked for.
    pub addrs: Vec<SocketAddr>,
}

impl ServerProcess {
    /// Starts `grpc-lb-bench server` (this executable) on `listen`, pinned as
    /// `pinning` says, and waits for its "listening on" line.
    pub async fn start(
        listen: &[SocketAddr],
        delay: Duration,
        pinning: Pinning,
    ) -> Result<ServerProcess, Error> {
        let exe = std::env::current_exe()?;
        let list: Vec<String> = listen.iter().map(|a| a.to_string()).collect();
        let mut command = match pinning.server {
            Some(core) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &core.to_string()]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        command
            .arg("server")
            .arg("--listen")
            .arg(list.join(","))
            .arg("--delay-ms")
            .arg(delay.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().ok_or("server has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await? {
            if let Some(addrs) = line.strip_prefix(LISTENING) {
                let addrs = addrs
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<Vec<SocketAddr>, _>>()?;
                return Ok(ServerProcess { child, addrs });
            }
        }
        Err("server exited before listening".into())
    }

    /// SIGTERM, then waits for the process to have drained and exited.
    pub async fn stop_gracefully(mut self) -> Result<(), Error> {
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
        }
        self.child.wait().await?;
        Ok(())
    }

    /// SIGKILL: connections reset, no drain.
    pub async fn kill(mut self) -> Result<(), Error> {
        self.child.kill().await?;
        Ok(())
    }
}

/// CPU time of this process so far: every thread's run time, from
/// `/proc/self/task/*/schedstat` (nanoseconds, first field). Threads that
/// already exited are not counted, so read it around a run whose threads live
/// throughout (the harness's runtime is single-threaded).
///
/// The kernel adds a running thread's time to its figure only when it is
/// scheduled (a switch or a tick): a thread that never waits (an in-memory
/// run) would read up to a tick behind, and short runs as taking no time.
/// Yielding first brings the caller's own figure up to date.
pub fn process_cpu() -> Duration {
    std::thread::yield_now();
    let mut total = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
                total += text
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(total)
}

/// Resident set size of this process, in bytes (`/proc/self/statm`).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
