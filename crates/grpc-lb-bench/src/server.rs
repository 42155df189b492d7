//! The benchmark server: a helloworld Greeter with an optional delay, run in a
//! process of its own (see [`crate::proc`]) so that its CPU time is not the
//! client's. It is `grpc-lb serve` reduced to what the runs need: the CLI is a
//! binary crate, so it cannot be linked, and `cargo run -p grpc-lb-bench` would
//! not build it.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use grpc_lb_helloworld::proto::{Greeter, GreeterServer, HelloReply, HelloRequest};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;

use crate::Error;

/// The line the server prints once every address is bound, before the
/// comma-separated addresses.
pub const LISTENING: &str = "listening on ";

/// A Greeter that answers after `delay`.
#[derive(Debug, Clone)]
pub struct DelayGreeter {
    delay: Duration,
}

#[tonic::async_trait]
impl Greeter for DelayGreeter {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let name = request.into_inner().name;
        Ok(tonic::Response::new(HelloReply {
            message: format!("Hello {name}"),
        }))
    }
}

/// Serves on every address in `listen` until SIGTERM, SIGINT or the end of
/// stdin (the harness dying closes it), then drains in-flight calls, as a
/// rolling restart's server would.
pub async fn run(listen: &[SocketAddr], delay: Duration) -> Result<(), Error> {
    let mut listeners = Vec::new();
    for addr in listen {
        listeners.push(TcpListener::bind(addr).await?);
    }
    let bound: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<_, _>>()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{LISTENING}{}", bound.join(","))?;
        out.flush()?;
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = Vec::new();
    for listener in listeners {
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            conn.inspect(|s| {
                let _ = s.set_nodelay(true);
            })
        });
        let mut stop = stop_rx.clone();
        let greeter = DelayGreeter { delay };
        servers.push(tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(GreeterServer::new(greeter))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|s| *s).await;
                }),
        ));
    }
    stop_signal().await?;
    let _ = stop_tx.send(true);
    for server in servers {
        server.await??;
    }
    Ok(())
}

async fn stop_signal() -> Result<(), Error> {
    use tokio::io::AsyncReadExt as _;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    let stdin_closed = async {
        // Anything but the end of input is ignored.
        while !matches!(stdin.read(&mut buf).await, Ok(0) | Err(_)) {}
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = stdin_closed => {}
    }
    Ok(())
}
