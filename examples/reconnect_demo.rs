//! The README's main job: a tonic client surviving a real server restart.
//!
//! It starts a helloworld server as a child process, sends a call every 200 ms
//! through `FailFast<Reconnect<Http2Connector>>`, kills the server with SIGKILL,
//! restarts it on the same port three seconds later, and prints what the client
//! saw: each call's outcome, every subchannel state change, and the gaps between
//! reconnect attempts (gRPC backoff: 1 s, ×1.6, ±20 %). It exits 0 once calls
//! succeed again on the same client, and 1 if they never do.
//!
//! ```text
//! cargo run -p examples --example reconnect_demo
//! ```

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use grpc_lb_connect::Http2Connector;
use grpc_lb_core::ConnectivityState;
use grpc_lb_failfast::FailFast;
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use grpc_lb_helloworld::NamedGreeter;
use grpc_lb_reconnect::{Reconnect, ReconnectConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

const CALL_EVERY: Duration = Duration::from_millis(200);
const UP_BEFORE_KILL: Duration = Duration::from_secs(2);
const DOWN_FOR: Duration = Duration::from_secs(3);
const GIVE_UP_AFTER: Duration = Duration::from_secs(20);

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<std::process::ExitCode, Error> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        return serve(&args[2]).await;
    }

    let mut server = start_server("127.0.0.1:0").await?;
    let addr = server.addr;
    println!(
        "server (pid {}) listening on {addr}\n",
        server.child.id().unwrap_or(0)
    );

    let subchannel = Reconnect::with_config(
        Http2Connector::<tonic::body::Body>::new(),
        addr,
        ReconnectConfig::default(),
    );
    let handle = subchannel.handle();
    let mut client = GreeterClient::new(FailFast::new(subchannel, handle.watch()));

    let start = Instant::now();
    let stamp = move || format!("{:>6.2}s", start.elapsed().as_secs_f64());
    let mut watch = handle.watch();
    let states = tokio::spawn(async move {
        let mut attempts = Vec::new();
        let mut previous = ConnectivityState::Idle;
        while watch.changed().await.is_ok() {
            let connectivity = watch.borrow_and_update().clone();
            let state = connectivity.state;
            if state == ConnectivityState::Connecting {
                attempts.push(Instant::now());
            }
            // The error is news only when it caused this change.
            let caused = state == ConnectivityState::TransientFailure
                || (state == ConnectivityState::Idle && previous == ConnectivityState::Ready);
            match connectivity.last_error {
                Some(error) if caused => println!("{}  state {state} ({error})", stamp()),
                _ => println!("{}  state {state}", stamp()),
            }
            previous = state;
            if state == ConnectivityState::Shutdown {
                break;
            }
        }
        attempts
    });

    let (mut ok, mut failed, mut killed_at, mut restarted, mut recovered) =
        (0, 0, None, false, false);
    let mut ticker = tokio::time::interval(CALL_EVERY);
    while start.elapsed() < GIVE_UP_AFTER {
        ticker.tick().await;
        let request = HelloRequest {
            name: "demo".into(),
        };
        match client.say_hello(request).await {
            Ok(reply) => {
                ok += 1;
                println!("{}  OK           {}", stamp(), reply.into_inner().message);
                if restarted {
                    recovered = true;
                    break;
                }
            }
            Err(status) => {
                failed += 1;
                println!("{}  {:<12?} {}", stamp(), status.code(), status.message());
            }
        }
        if killed_at.is_none() && start.elapsed() >= UP_BEFORE_KILL {
            server.child.kill().await?;
            killed_at = Some(Instant::now());
            println!("{}  --- server killed (SIGKILL) ---", stamp());
        }
        if let Some(at) = killed_at {
            if !restarted && at.elapsed() >= DOWN_FOR {
                server = start_server(&addr.to_string()).await?;
                restarted = true;
                println!("{}  --- server restarted on {addr} ---", stamp());
            }
        }
    }
    drop(client);
    let attempts = states.await?;
    let _ = server.child.kill().await;

    // The first attempt is the initial connection; the backoff spaces the rest.
    let reconnects = attempts.get(1..).unwrap_or_default();
    let gaps: Vec<String> = reconnects
        .windows(2)
        .map(|w| format!("{:.2}s", (w[1] - w[0]).as_secs_f64()))
        .collect();
    println!("\nsummary: {ok} calls OK, {failed} failed while the server was down");
    println!("connect attempts: {}", handle.connect_attempts());
    println!("gaps between reconnect attempts: {}", gaps.join(", "));
    println!(
        "(gRPC backoff 1s, x1.6, ±20%; an attempt is made on the first call after each backoff)"
    );
    if recovered {
        println!("recovered on the same client: yes");
        Ok(std::process::ExitCode::SUCCESS)
    } else {
        println!("recovered on the same client: NO");
        Ok(std::process::ExitCode::FAILURE)
    }
}

struct Server {
    child: Child,
    addr: SocketAddr,
}

/// Starts this same program in `--serve` mode, so the demo needs nothing else.
async fn start_server(listen: &str) -> Result<Server, Error> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["--serve", listen])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).await?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("unexpected server output {line:?}"))?
        .parse()?;
    Ok(Server { child, addr })
}

async fn serve(listen: &str) -> Result<std::process::ExitCode, Error> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    grpc_lb_helloworld::serve(
        listener,
        NamedGreeter::new(addr.to_string()),
        std::future::pending(),
    )
    .await?;
    Ok(std::process::ExitCode::SUCCESS)
}
