//! The load generator: `inflight` callers, each sending its next unary
//! SayHello as soon as the last one is answered, all polled from one task so
//! that every system is driven the same way and no system's futures need to
//! be `Send`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::rc::Rc;
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

/// How long a window lasts: for a time, or for a number of calls (what an
/// instruction count needs: the same calls whatever the machine's load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// Callers start calls until this much time has passed.
    For(Duration),
    /// Callers start this many calls in all.
    Calls(u64),
}

impl From<Duration> for Length {
    fn from(length: Duration) -> Self {
        Length::For(length)
    }
}

impl Length {
    fn is_zero(self) -> bool {
        matches!(self, Length::For(d) if d.is_zero()) || self == Length::Calls(0)
    }
}

/// Drives `client` with `inflight` concurrent callers: `warmup` unmeasured,
/// then `measure` measured; each call with `deadline` when given (tonic's
/// `set_timeout`, sent as `grpc-timeout`).
pub async fn drive<T>(
    client: GreeterClient<T>,
    inflight: usize,
    warmup: impl Into<Length>,
    measure: impl Into<Length>,
    deadline: Option<Duration>,
) -> Sample
where
    T: tonic::client::GrpcService<tonic::body::Body> + Clone,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    let warmup = warmup.into();
    if !warmup.is_zero() {
        window(&client, inflight, warmup, deadline).await;
    }
    window(&client, inflight, measure, deadline).await
}

/// One window: callers start calls (each with `deadline` when given) until
/// `length` has passed or its calls are all started; the window ends when the
/// last call is answered.
pub async fn window<T>(
    client: &GreeterClient<T>,
    inflight: usize,
    length: impl Into<Length>,
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
    let (end, budget) = match length.into() {
        Length::For(length) => (Some(start + length), None),
        Length::Calls(calls) => (None, Some(Rc::new(Cell::new(calls)))),
    };
    let more = move |budget: &Option<Rc<Cell<u64>>>| match budget {
        Some(left) if left.get() == 0 => false,
        Some(left) => {
            left.set(left.get() - 1);
            true
        }
        None => end.is_some_and(|end| Instant::now() < end),
    };
    let mut callers: FuturesUnordered<_> = (0..inflight)
        .map(|i| {
            let mut client = client.clone();
            let budget = budget.clone();
            async move {
                let mut latencies = Vec::new();
                let mut failed: BTreeMap<String, u64> = BTreeMap::new();
                let name = format!("caller {i}");
                while more(&budget) {
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
