//! `grpc-lb serve`: helloworld Greeter servers whose replies name the backend
//! that answered, with `grpc.health.v1` served beside them.
//!
//! Once every address is bound it prints one line to stdout,
//! `listening on ADDR[,ADDR...]` with the bound addresses (port 0 picks a free
//! one), so scripts and tests can wait for it and pass the list on as an
//! `ipv4:` target. It serves until SIGINT or SIGTERM, then stops gracefully.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use grpc_lb_helloworld::proto::{Greeter, GreeterServer, HelloReply, HelloRequest};
use grpc_lb_helloworld::{NamedGreeter, BACKEND_METADATA_KEY};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;
use tonic::metadata::MetadataValue;
use tonic_health::ServingStatus;

use crate::{CliError, CliResult};

/// How long in-flight calls may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Addresses to listen on, comma-separated (`IP:PORT`; port 0 picks one).
    #[arg(
        long,
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ',',
        default_value = "127.0.0.1:50051"
    )]
    listen: Vec<SocketAddr>,

    /// Backend name put in replies; with several addresses, `NAME-1`,
    /// `NAME-2`, ... Default: each server's bound address.
    #[arg(long)]
    name: Option<String>,

    /// Delay before each reply, in ms.
    #[arg(long, value_name = "D", default_value_t = 0)]
    delay_ms: u64,

    /// Fraction of calls (0 to 1) answered with --error-code instead.
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = probability)]
    error_rate: f64,

    /// The status code of the injected errors.
    #[arg(long, value_name = "CODE", default_value = "UNAVAILABLE", value_parser = code)]
    error_code: tonic::Code,

    /// What grpc.health.v1 reports, for the server ("") and helloworld.Greeter.
    #[arg(long, value_enum, default_value = "serving")]
    health: Health,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Health {
    Serving,
    NotServing,
}

fn probability(value: &str) -> Result<f64, String> {
    let p: f64 = value
        .parse()
        .map_err(|_| format!("not a number: {value}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not between 0 and 1"))
    }
}

/// A status code by its gRPC name (`UNAVAILABLE`) or number (`14`).
fn code(value: &str) -> Result<tonic::Code, String> {
    if let Ok(number) = value.parse::<i32>() {
        return match tonic::Code::from_i32(number) {
            code if code as i32 == number => Ok(code),
            _ => Err(format!("no status code {number}")),
        };
    }
    (0..=16)
        .map(tonic::Code::from_i32)
        .find(|code| crate::load::code_name(*code) == value.to_ascii_uppercase())
        .ok_or_else(|| format!("unknown status code {value:?} (e.g. UNAVAILABLE, INTERNAL, 14)"))
}

/// The Greeter a `serve` backend runs: a [`NamedGreeter`] with an optional
/// delay and injected errors.
#[derive(Debug, Clone)]
struct ServeGreeter {
    inner: NamedGreeter,
    delay: Duration,
    error_rate: f64,
    error_code: tonic::Code,
    random: Arc<SplitMix>,
}

#[tonic::async_trait]
impl Greeter for ServeGreeter {
    async fn say_hello(
        &self,
        request: tonic::Request<HelloRequest>,
    ) -> Result<tonic::Response<HelloReply>, tonic::Status> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.error_rate > 0.0 && self.random.next_f64() < self.error_rate {
            let backend = self.inner.backend();
            let mut status = tonic::Status::new(
                self.error_code,
                format!("injected error from {backend} (--error-rate)"),
            );
            if let Ok(value) = MetadataValue::try_from(backend) {
                status.metadata_mut().insert(BACKEND_METADATA_KEY, value);
            }
            return Err(status);
        }
        self.inner.say_hello(request).await
    }
}

/// A lock-free pseudo-random source (SplitMix64 over an atomic counter); good
/// enough to decide which calls fail.
#[derive(Debug)]
struct SplitMix(AtomicU64);

impl SplitMix {
    fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        SplitMix(AtomicU64::new(nanos ^ u64::from(std::process::id()) << 32))
    }

    fn next_f64(&self) -> f64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub(crate) async fn run(args: ServeArgs) -> CliResult {
    let mut listeners = Vec::with_capacity(args.listen.len());
    for addr in &args.listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| CliError::failed(format!("cannot listen on {addr}: {error}")))?;
        listeners.push(listener);
    }
    let bound: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()
        .map_err(|error| CliError::failed(format!("cannot read a bound address: {error}")))?;

    let (reporter, health) = tonic_health::server::health_reporter();
    let status = match args.health {
        Health::Serving => ServingStatus::Serving,
        Health::NotServing => ServingStatus::NotServing,
    };
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(grpc_lb_helloworld::proto::SERVICE_NAME, status)
        .await;

    // Server reflection (v1 and v1alpha) of everything served, so that
    // `grpc-lb call`, `list` and `describe` (and grpcurl) need no schema.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(grpc_lb_helloworld::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|error| CliError::failed(format!("the reflection service: {error}")))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|error| CliError::failed(format!("the reflection service: {error}")))?;

    // Signal handlers first, so a signal sent right after the line is not lost.
    let signal = shutdown_signal()
        .map_err(|error| CliError::failed(format!("cannot install signal handlers: {error}")))?;
    let list: Vec<String> = bound.iter().map(ToString::to_string).collect();
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening on {}", list.join(","));
        let _ = stdout.flush();
    }

    let random = Arc::new(SplitMix::seeded());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let several = listeners.len() > 1;
    for (index, (listener, addr)) in listeners.into_iter().zip(&bound).enumerate() {
        let name = match &args.name {
            Some(name) if several => format!("{name}-{}", index + 1),
            Some(name) => name.clone(),
            None => addr.to_string(),
        };
        let greeter = ServeGreeter {
            inner: NamedGreeter::new(name),
            delay: Duration::from_millis(args.delay_ms),
            error_rate: args.error_rate,
            error_code: args.error_code,
            random: random.clone(),
        };
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            conn.inspect(|stream| {
                let _ = stream.set_nodelay(true);
            })
        });
        let mut stopped = stopped.clone();
        let server = tonic::transport::Server::builder()
            .add_service(health.clone())
            .add_service(GreeterServer::new(greeter))
            .add_service(reflection_v1.clone())
            .add_service(reflection_v1alpha.clone())
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            });
        let addr = *addr;
        servers.spawn(async move { server.await.map_err(|e| format!("server {addr}: {e}")) });
    }

    tokio::select! {
        result = servers.join_next() => {
            let message = match result {
                Some(Ok(Err(error))) => error,
                other => format!("a server stopped unexpectedly: {other:?}"),
            };
            return Err(CliError::failed(message));
        }
        _ = signal => {}
    }
    let _ = stop.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        eprintln!("grpc-lb serve: connections still open after {SHUTDOWN_GRACE:?}; exiting");
    }
    Ok(ExitCode::SUCCESS)
}

/// Registers SIGINT/SIGTERM handlers now; the future resolves on the first.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_by_name_or_number() {
        assert_eq!(code("UNAVAILABLE"), Ok(tonic::Code::Unavailable));
        assert_eq!(code("internal"), Ok(tonic::Code::Internal));
        assert_eq!(code("4"), Ok(tonic::Code::DeadlineExceeded));
        assert!(code("17").is_err());
        assert!(code("NOPE").is_err());
    }

    #[test]
    fn probabilities_are_between_0_and_1() {
        assert_eq!(probability("0.25"), Ok(0.25));
        assert!(probability("1.5").is_err());
        assert!(probability("-0.1").is_err());
        assert!(probability("x").is_err());
    }

    #[test]
    fn splitmix_is_uniform_enough() {
        let random = SplitMix::seeded();
        let below = (0..10_000).filter(|_| random.next_f64() < 0.3).count();
        assert!((2_700..3_300).contains(&below), "{below}");
    }
}
