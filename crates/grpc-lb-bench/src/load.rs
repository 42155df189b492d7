//! The load generator: `inflight` callers, each sending its next unary
//! SayHello as soon as the last one is answered, all polled from one task so
//! that every system is driven the same way and no system's futures need to
//! be `Send`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt as _};
use grpc_lb_helloworld::proto::{GreeterClient, HelloRequest};
use http_body::Body;
use tonic::codegen::StdError;

use crate::proc::process_cpu;
use crate::report::percentile;

/// What one measured window produced.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Calls answered OK.
    pub ok: u64,
    /// Failed calls by gRPC status code name.
    pub failed: BTreeMap<String, u64>,
    /// Length of the window, up to the last answer.
    pub elapsed: Duration,
    /// The client process's CPU time in the window.
    pub cpu: Duration,
    /// Latencies of the OK calls in nanoseconds, sorted.
    pub latencies: Vec<u64>,
}

impl Sample {
    /// Calls answered OK per second.
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Failed calls of every code.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// The latency percentile `p`, in microseconds.
    pub fn latency_us(&self, p: f64) -> f64 {
        percentile(&self.latencies, p).map_or(f64::NAN, |ns| ns as f64 / 1e3)
    }

    /// Client CPU time per call, in microseconds (failed calls count too:
    /// they cost the client as well).
    pub fn cpu_per_rpc_us(&self) -> f64 {
        let calls = self.ok + self.failed_total();
        if calls == 0 {
            return f64::NAN;
        }
        self.cpu.as_secs_f64() * 1e6 / calls as f64
    }
}

/// Drives `client` with `inflight` concurrent callers: `warmup` unmeasured,
/// then `measure` measured; each call with `deadline` when given (tonic's
/// `set_timeout`, sent as `grpc-timeout`).
pub async fn drive<T>(
    client: GreeterClient<T>,
    inflight: usize,
    warmup: Duration,
    measure: Duration,
    deadline: Option<Duration>,
) -> Sample
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    if !warmup.is_zero() {
        window(&client, inflight, warmup, deadline).await;
    }
    window(&client, inflight, measure, deadline).await
}

/// One window: callers start calls (each with `deadline` when given) until
/// `length` has passed; the window ends when the last call is answered.
pub async fn window<T>(
    client: &GreeterClient<T>,
    inflight: usize,
    length: Duration,
    deadline: Option<Duration>,
) -> Sample
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    let cpu_before = process_cpu();
    let start = Instant::now();
    let end = start + length;
    let mut callers: FuturesUnordered<_> = (0..inflight)
        .map(|i| {
            let mut client = client.clone();
            async move {
                let mut latencies = Vec::new();
                let mut failed: BTreeMap<String, u64> = BTreeMap::new();
                let name = format!("caller {i}");
                while Instant::now() < end {
                    let sent = Instant::now();
                    let mut request = tonic::Request::new(HelloRequest { name: name.clone() });
                    if let Some(deadline) = deadline {
                        request.set_timeout(deadline);
                    }
                    match client.say_hello(request).await {
                        Ok(_) => latencies.push(sent.elapsed().as_nanos() as u64),
                        Err(status) => {
                            *failed.entry(format!("{:?}", status.code())).or_default() += 1;
                        }
                    }
                }
                (latencies, failed)
            }
        })
        .collect();
    let mut sample = Sample::default();
    while let Some((latencies, failed)) = callers.next().await {
        sample.ok += latencies.len() as u64;
        sample.latencies.extend(latencies);
        for (code, n) in failed {
            *sample.failed.entry(code).or_default() += n;
        }
    }
    sample.elapsed = start.elapsed();
    sample.cpu = process_cpu().saturating_sub(cpu_before);
    sample.latencies.sort_unstable();
    sample
}
