//! A real single-member etcd on loopback, one per test, for the etcd resolver's
//! tests. Needs the `etcd` binary (Debian: `apt-get install -y etcd-server`);
//! without it the test fails, it is never skipped.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{Client, DeleteOptions};

/// How long etcd may take to answer after it is started.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// An etcd server child process, SIGKILLed and its data dir removed on drop.
#[derive(Debug)]
pub(crate) struct EtcdServer {
    child: Option<Child>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
}

impl EtcdServer {
    /// Starts etcd on two free loopback ports and waits until it answers.
    pub(crate) async fn start() -> EtcdServer {
        let binary = etcd_binary();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "grpc-lb-etcd-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // Another process may take a port between our probe and etcd's bind:
        // try fresh ports a few times.
        let mut last_failure = String::new();
        for _ in 0..3 {
            fs::create_dir_all(&dir).expect("create the etcd test dir");
            let (client_port, peer_port) = free_ports();
            let mut server = EtcdServer {
                child: None,
                dir: dir.clone(),
                client_port,
                peer_port,
            };
            server.spawn(&binary);
            match server.wait_ready().await {
                Ok(()) => return server,
                // Dropping `server` kills etcd and removes the dir.
                Err(failure) => last_failure = failure,
            }
        }
        panic!("etcd did not start: {last_failure}");
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.authority())
    }

    /// The client address, `127.0.0.1:<port>`, as a target's authority.
    pub(crate) fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// SIGKILLs etcd and waits for it to exit.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports with the same data, and waits until
    /// it answers.
    pub(crate) async fn restart(&mut self) {
        self.kill();
        self.spawn(&etcd_binary());
        if let Err(failure) = self.wait_ready().await {
            panic!("etcd did not restart: {failure}");
        }
    }

    /// A client of this server.
    pub(crate) async fn client(&self) -> Client {
        Client::connect([self.endpoint()], None)
            .await
            .expect("connect to the test etcd")
    }

    /// Puts one key.
    pub(crate) async fn put(&self, key: &str, value: impl Into<Vec<u8>>) {
        self.client()
            .await
            .put(key, value, None)
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    /// Deletes one key.
    pub(crate) async fn delete(&self, key: &str) {
        self.client()
            .await
            .delete(key, None::<DeleteOptions>)
            .await
            .unwrap_or_else(|e| panic!("delete {key}: {e}"));
    }

    fn spawn(&mut self, binary: &Path) {
        let name = "grpc-lb-test";
        let client_url = format!("http://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the etcd log");
        let child = Command::new(binary)
            .arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("{name}={peer_url}"))
            .arg("--initial-cluster-state")
            .arg("new")
            // A lone member elects itself sooner.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        self.child = Some(child);
    }

    /// Polls with a client until a request succeeds, within [`READY_DEADLINE`].
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        let endpoint = self.endpoint();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "etcd exited with {status}; log:\n{}",
                        self.log_tail()
                    ));
                }
            }
            let probe = async {
                let mut client = Client::connect([endpoint.as_str()], None).await.ok()?;
                client.get("grpc-lb-test-probe", None).await.ok()
            };
            if let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(1), probe).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd did not answer at {endpoint} within {READY_DEADLINE:?}; log:\n{}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The etcd binary: `$ETCD_BIN`, else `etcd` on `PATH`. Panics if there is none.
fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ETCD_BIN") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("etcd"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("etcd not found: install it with: apt-get install -y etcd-server")
        })
}

/// Two distinct free loopback ports.
fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    (
        a.local_addr().expect("local addr").port(),
        b.local_addr().expect("local addr").port(),
    )
}
