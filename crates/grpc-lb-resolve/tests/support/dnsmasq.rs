//! A real `dnsmasq` on loopback, serving names from a hosts file the test
//! controls: the DNS server the `dns` resolver's tests talk to.
//!
//! Each [`Dnsmasq`] is a child process on its own port, with its own hosts file
//! in its own temporary directory; dropping it kills the process and removes the
//! directory. Names under `.test` are answered only from that file (`NXDOMAIN`
//! otherwise); the cache is off and every TTL is 0.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The message a test fails with when `dnsmasq` is missing.
pub const NOT_FOUND: &str = "dnsmasq not found: install it with: apt-get install -y dnsmasq-base";

/// How long dnsmasq may take to start or to pick up a new hosts file.
const DEADLINE: Duration = Duration::from_secs(10);

/// A running dnsmasq.
pub struct Dnsmasq {
    child: Child,
    program: PathBuf,
    port: u16,
    dir: PathBuf,
    hosts: PathBuf,
    /// Its stderr, line by line, and a signal for each new line.
    log: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Dnsmasq {
    /// Starts dnsmasq serving `hosts` (hosts-file syntax), with `extra` flags,
    /// and returns once it answers queries.
    ///
    /// Panics with [`NOT_FOUND`] when dnsmasq is not installed.
    pub fn start(hosts: &str, extra: &[&str]) -> Dnsmasq {
        let program = find_dnsmasq().unwrap_or_else(|| panic!("{NOT_FOUND}"));
        let dir = temp_dir();
        let hosts_path = dir.join("hosts");
        write_atomically(&hosts_path, hosts);

        // The port is free when we look; someone may take it before dnsmasq
        // binds it, so try a few.
        let mut failures = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            let mut dnsmasq = spawn(&program, port, &dir, &hosts_path, extra);
            match dnsmasq.wait_until_answering() {
                Ok(()) => return dnsmasq,
                Err(why) => {
                    failures.push(format!("port {port}: {why}; log: {:?}", dnsmasq.log()));
                    // Keep the directory for the next attempt.
                    let _ = dnsmasq.child.kill();
                    let _ = dnsmasq.child.wait();
                    dnsmasq.dir = PathBuf::new();
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("dnsmasq did not start: {failures:#?}");
    }

    /// Stops dnsmasq and starts it again on the same port and hosts file,
    /// with these `extra` flags instead (for records only flags can set, such
    /// as `--txt-record`, which a SIGHUP does not re-read). Returns once it
    /// answers queries; its log starts over.
    pub fn restart(&mut self, extra: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::take(&mut self.dir);
        let mut fresh = spawn(&self.program, self.port, &dir, &self.hosts, extra);
        if let Err(why) = fresh.wait_until_answering() {
            panic!(
                "dnsmasq did not restart on port {}: {why}; log: {:?}",
                self.port,
                fresh.log()
            );
        }
        // The old value, now without a directory, drops quietly.
        let _old = std::mem::replace(self, fresh);
    }

    /// The UDP and TCP port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`, for `dns://{authority}/name` targets.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it has logged so far (queries included).
    pub fn log(&self) -> Vec<String> {
        self.log.0.lock().unwrap().clone()
    }

    /// How many `A` queries for `name` it has logged.
    pub fn a_queries(&self, name: &str) -> usize {
        let needle = format!("query[A] {name} ");
        self.log()
            .iter()
            .filter(|line| line.contains(&needle))
            .count()
    }

    /// Replaces the hosts file, makes dnsmasq re-read it (SIGHUP), and waits
    /// until it has (it logs `read <file>` once done).
    pub fn set_hosts(&self, hosts: &str) {
        let needle = format!("read {} ", self.hosts.display());
        let reads = |log: &[String]| log.iter().filter(|line| line.contains(&needle)).count();
        let before = reads(&self.log());
        write_atomically(&self.hosts, hosts);
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.pid().to_string())
            .status()
            .expect("cannot run kill -HUP");
        assert!(
            status.success(),
            "kill -HUP {} failed: {status}",
            self.pid()
        );
        if !self.wait_for_log(|log| reads(log) > before) {
            panic!(
                "dnsmasq did not re-read its hosts file within {DEADLINE:?}; log: {:#?}",
                self.log()
            );
        }
    }

    /// Waits (at most [`DEADLINE`]) until the log satisfies `done`, which
    /// sees the log as it is and must not call back into `self` (the log is
    /// locked meanwhile).
    pub fn wait_for_log(&self, mut done: impl FnMut(&[String]) -> bool) -> bool {
        let deadline = Instant::now() + DEADLINE;
        let (lines, logged) = &*self.log;
        let mut lines = lines.lock().unwrap();
        while !done(&lines) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            lines = logged.wait_timeout(lines, deadline - now).unwrap().0;
        }
        true
    }

    fn wait_until_answering(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("exited with {status}"));
            }
            match query_a(self.port, "ready.test") {
                Ok(_) => return Ok(()),
                Err(error) if Instant::now() >= deadline => {
                    return Err(format!("no answer within {DEADLINE:?}: {error}"))
                }
                Err(_) => thread::yield_now(),
            }
        }
    }
}

/// Starts dnsmasq on `port`, serving `hosts`, with `extra` flags.
fn spawn(program: &Path, port: u16, dir: &Path, hosts_path: &Path, extra: &[&str]) -> Dnsmasq {
    let mut child = Command::new(program)
        .arg("--keep-in-foreground")
        .arg("--conf-file=/dev/null")
        .arg(format!("--port={port}"))
        .arg("--listen-address=127.0.0.1")
        .arg("--bind-interfaces")
        .arg("--no-resolv")
        .arg("--no-hosts")
        .arg(format!("--addn-hosts={}", hosts_path.display()))
        .arg("--local=/test/")
        .arg("--cache-size=0")
        .arg("--local-ttl=0")
        .arg("--pid-file=")
        .arg("--user=root")
        .arg("--log-facility=-")
        .arg("--log-queries")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()));

    let log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
    let stderr = child.stderr.take().expect("piped stderr");
    let sink = log.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.0.lock().unwrap().push(line);
            sink.1.notify_all();
        }
    });
    Dnsmasq {
        child,
        program: program.to_path_buf(),
        port,
        dir: dir.to_path_buf(),
        hosts: hosts_path.to_path_buf(),
        log,
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// How many `A` queries for `name` a dnsmasq log shows.
pub fn count_a_queries(log: &[String], name: &str) -> usize {
    let needle = format!("query[A] {name} ");
    log.iter().filter(|line| line.contains(&needle)).count()
}

/// A DNS answer to an `A` query.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The response code (0 NOERROR, 3 NXDOMAIN, ...).
    pub rcode: u8,
    /// The `A` records of the answer section.
    pub addresses: Vec<Ipv4Addr>,
}

/// Asks 127.0.0.1:`port` for the `A` records of `name`, over UDP, waiting at
/// most 200 ms for the answer.
pub fn query_a(port: u16, name: &str) -> Result<Answer, String> {
    static NEXT_ID: AtomicUsize = AtomicUsize::new(1);
    let id = (NEXT_ID.fetch_add(1, Ordering::Relaxed) & 0xffff) as u16;

    let mut query = Vec::with_capacity(64);
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00]); // recursion desired
    query.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.trim_end_matches('.').split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN

    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let server = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    socket.send_to(&query, server).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1500];
    loop {
        let (len, from) = socket.recv_from(&mut buf).map_err(|e| e.to_string())?;
        if from == server && len >= 12 && buf[..2] == id.to_be_bytes() {
            return parse_answer(&buf[..len]).ok_or_else(|| "malformed answer".to_owned());
        }
    }
}

fn parse_answer(msg: &[u8]) -> Option<Answer> {
    let u16_at =
        |at: usize| -> Option<u16> { Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?])) };
    let rcode = msg.get(3)? & 0x0f;
    let questions = u16_at(4)?;
    let answers = u16_at(6)?;
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let kind = u16_at(at)?;
        let len = usize::from(u16_at(at + 8)?);
        let data = msg.get(at + 10..at + 10 + len)?;
        if kind == 1 && len == 4 {
            addresses.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    Some(Answer { rcode, addresses })
}

/// The offset just past the (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        if len == 0 {
            return Some(at + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Some(at + 2);
        }
        at += 1 + usize::from(len);
    }
}

/// dnsmasq on `PATH`, or in the sbin directories a non-root `PATH` may lack.
fn find_dnsmasq() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("dnsmasq"))
        .find(|candidate| candidate.is_file())
}

/// A port that is free for both UDP and TCP on 127.0.0.1 right now.
fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        let port = udp.local_addr().expect("local address").port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn temp_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "grpc-lb-dnsmasq-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    dir
}

/// Writes `contents` so that a reader sees the old file or the new one, never
/// half of it.
fn write_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write the hosts file");
    std::fs::rename(&tmp, path).expect("replace the hosts file");
}
