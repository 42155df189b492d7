//! End-to-end checks of the helloworld Greeter over real TCP connections.

use std::error::Error;
use std::time::Duration;

use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use grpc_lb_helloworld::{serve, NamedGreeter, BACKEND_METADATA_KEY, FILE_DESCRIPTOR_SET};
use tokio::net::TcpListener;
use tonic::transport::Endpoint;

type TestResult = Result<(), Box<dyn Error + Send + Sync>>;

const TIMEOUT: Duration = Duration::from_secs(10);

async fn say_hello(
    addr: &str,
    name: &str,
) -> Result<(String, String), Box<dyn Error + Send + Sync>> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(TIMEOUT)
        .connect()
        .await?;
    let mut client = GreeterClient::new(channel);
    let reply = tokio::time::timeout(
        TIMEOUT,
        client.say_hello(HelloRequest {
            name: name.to_owned(),
        }),
    )
    .await??;
    let backend = reply
        .metadata()
        .get(BACKEND_METADATA_KEY)
        .ok_or("missing x-backend metadata")?
        .to_str()?
        .to_owned();
    Ok((reply.into_inner().message, backend))
}

#[tokio::test]
async fn say_hello_in_process() -> TestResult {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let greeter = NamedGreeter::new("backend-a");
    assert_eq!(greeter.backend(), "backend-a");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, greeter, async {
        let _ = stopped.await;
    }));

    let (message, backend) = say_hello(&addr.to_string(), "world").await?;
    assert_eq!(message, "Hello world from backend-a");
    assert_eq!(backend, "backend-a");

    // The client (and its connection) is gone: graceful shutdown completes.
    let _ = stop.send(());
    tokio::time::timeout(TIMEOUT, server).await???;
    Ok(())
}

#[test]
fn file_descriptor_set_is_present() {
    assert!(!FILE_DESCRIPTOR_SET.is_empty());
    // The descriptor names the proto file and the service.
    let contains = |needle: &[u8]| {
        FILE_DESCRIPTOR_SET
            .windows(needle.len())
            .any(|w| w == needle)
    };
    assert!(contains(b"helloworld.proto"));
    assert!(contains(b"Greeter"));
    assert!(contains(b"SayHello"));
}

/// Runs the `greeter-server` binary on port 0, waits for its `listening on`
/// line, calls it, then stops it with SIGTERM and expects exit status 0.
#[cfg(unix)]
#[tokio::test]
async fn greeter_server_binary() -> TestResult {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_greeter-server"))
        .args(["--listen", "127.0.0.1:0", "--name", "bin-backend"])
        .stdout(Stdio::piped())
        .spawn()?;
    let result = async {
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        // Blocking read is fine: the server is another process.
        reader.read_line(&mut line)?;
        let addr = line
            .trim_end()
            .strip_prefix("listening on ")
            .ok_or_else(|| format!("unexpected first line {line:?}"))?
            .to_owned();
        assert!(!addr.ends_with(":0"), "real port expected, got {addr}");

        let (message, backend) = say_hello(&addr, "bin").await?;
        assert_eq!(message, "Hello bin from bin-backend");
        assert_eq!(backend, "bin-backend");

        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()?;
        assert!(status.success(), "kill -TERM failed: {status}");

        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                assert!(status.success(), "greeter-server exited with {status}");
                // Nothing else is printed to stdout.
                let mut rest = String::new();
                std::io::Read::read_to_string(&mut reader, &mut rest)?;
                assert_eq!(rest, "");
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err("greeter-server did not exit after SIGTERM".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    .await;
    if result.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}
