//! The traffic engine behind `call` and `demo`: workers sending `SayHello`
//! through a channel, paced by a [`Schedule`] and bounded by the
//! concurrency, each keeping its own tally (no lock per call), merged at the
//! end.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::channel::{Client, PeerSlot};
use crate::options::StackSettings;
use crate::rpc::{CallSettings, Caller, Rpc};
use crate::schedule::Schedule;
use crate::stack::call_stack;

/// The width of the time series' buckets (backends over time, in the HTML
/// report); the report merges them into wider ones for long runs.
pub(crate) const BUCKET: Duration = Duration::from_millis(100);

/// The key under which calls that no backend answered are counted per backend
/// (no connection, a broken transport, a deadline while waiting).
pub(crate) const NO_BACKEND: &str = "(none)";

/// What traffic to send.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Stop after this many calls.
    pub(crate) requests: Option<u64>,
    /// Stop starting calls at this instant.
    pub(crate) until: Option<Instant>,
    /// Calls in flight at once.
    pub(crate) concurrency: usize,
    /// When each call starts (open loop), or unpaced.
    pub(crate) schedule: Schedule,
    /// The first calls (by the order they start) that are made but left out
    /// of the tally (`--skip-first`).
    pub(crate) skip_first: u64,
    /// Whether to keep a record of every call (for `--format csv`).
    pub(crate) record_calls: bool,
    /// Each call's metadata, deadline and wait-for-ready.
    pub(crate) settings: CallSettings,
    /// What each call sends.
    pub(crate) rpc: Rpc,
    /// Retries and message sizes around the channel.
    pub(crate) stack: StackSettings,
}

/// Counters that other tasks read while traffic flows.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Calls finished.
    pub(crate) done: AtomicU64,
    /// Calls finished with OK.
    pub(crate) ok: AtomicU64,
    /// Set to stop starting calls.
    pub(crate) stop: AtomicBool,
    /// Per backend address: (OK, errors), when asked for (`demo`).
    pub(crate) per_backend: Option<Mutex<HashMap<String, (u64, u64)>>>,
}

impl Live {
    pub(crate) fn with_per_backend() -> Self {
        Live {
            per_backend: Some(Mutex::new(HashMap::new())),
            ..Live::default()
        }
    }
}

/// One call, as `--format csv` prints it.
#[derive(Debug, Clone)]
pub(crate) struct CallRecord {
    /// When it started, from the start of the load.
    pub(crate) start: Duration,
    pub(crate) latency: Duration,
    pub(crate) code: &'static str,
    pub(crate) backend: Option<String>,
    /// The status message of a failed call.
    pub(crate) error: String,
}

/// What happened to the calls.
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) calls: u64,
    pub(crate) ok: u64,
    /// Calls made but not tallied (`--skip-first`).
    pub(crate) skipped: u64,
    /// Window of the schedule (by start time) to the calls started in it,
    /// skipped ones included: the load the servers saw.
    pub(crate) windows: HashMap<u64, u64>,
    /// (bucket of [`BUCKET`] by end time, backend or [`NO_BACKEND`]) to
    /// tallied calls.
    pub(crate) series: HashMap<(u64, String), u64>,
    /// Every tallied call, when the plan asks for them.
    pub(crate) records: Vec<CallRecord>,
    /// Latency of every call (OK or not), in microseconds.
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) codes: BTreeMap<&'static str, u64>,
    /// Backend address to calls it answered (any status).
    pub(crate) backends: BTreeMap<String, u64>,
    /// (code, message) of failed calls, to count.
    pub(crate) errors: HashMap<(&'static str, String), u64>,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Tally {
            calls: 0,
            ok: 0,
            skipped: 0,
            windows: HashMap::new(),
            series: HashMap::new(),
            records: Vec::new(),
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("valid histogram bounds"),
            codes: BTreeMap::new(),
            backends: BTreeMap::new(),
            errors: HashMap::new(),
        }
    }

    fn record(&mut self, latency: Duration, code: tonic::Code, message: &str, peer: Option<&str>) {
        self.calls += 1;
        let name = code_name(code);
        *self.codes.entry(name).or_default() += 1;
        if code == tonic::Code::Ok {
            self.ok += 1;
        } else {
            *self.errors.entry((name, message.to_owned())).or_default() += 1;
        }
        if let Some(peer) = peer {
            *self.backends.entry(peer.to_owned()).or_default() += 1;
        }
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency_us.saturating_record(micros);
    }

    /// Puts a tallied call in the time series (by when it ended).
    fn record_at(&mut self, ended: Duration, peer: Option<&str>) {
        let bucket = (ended.as_micros() / BUCKET.as_micros()) as u64;
        let backend = peer.unwrap_or(NO_BACKEND).to_owned();
        *self.series.entry((bucket, backend)).or_default() += 1;
    }

    pub(crate) fn merge(&mut self, other: Tally) {
        self.calls += other.calls;
        self.ok += other.ok;
        self.skipped += other.skipped;
        for (k, v) in other.windows {
            *self.windows.entry(k).or_default() += v;
        }
        for (k, v) in other.series {
            *self.series.entry(k).or_default() += v;
        }
        self.records.extend(other.records);
        let _ = self.latency_us.add(&other.latency_us);
        for (k, v) in other.codes {
            *self.codes.entry(k).or_default() += v;
        }
        for (k, v) in other.backends {
            *self.backends.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    /// A latency quantile in milliseconds (0 with no calls).
    pub(crate) fn latency_ms(&self, quantile: f64) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub(crate) fn max_latency_ms(&self) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.max() as f64 / 1000.0
    }

    /// The most frequent errors, most frequent first.
    pub(crate) fn top_errors(&self, n: usize) -> Vec<(&'static str, &str, u64)> {
        let mut errors: Vec<_> = self
            .errors
            .iter()
            .map(|((code, message), count)| (*code, message.as_str(), *count))
            .collect();
        errors.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.1.cmp(b.1)));
        errors.truncate(n);
        errors
    }
}

/// gRPC's name of a status code, as in `UNAVAILABLE`.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Sends the planned calls through `channel` and returns the merged tally;
/// the schedule's time 0 is `start`.
pub(crate) async fn run(channel: &Client, plan: &Plan, live: &Arc<Live>, start: Instant) -> Tally {
    let issued = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    let stack = call_stack(channel, plan.stack);
    for _ in 0..plan.concurrency.max(1) {
        let client = plan.rpc.caller(stack.clone());
        let plan = plan.clone();
        let live = live.clone();
        let issued = issued.clone();
        workers.spawn(worker(client, plan, live, issued, start));
    }
    let mut tally = Tally::new();
    while let Some(result) = workers.join_next().await {
        if let Ok(part) = result {
            tally.merge(part);
        }
    }
    tally.records.sort_by_key(|r| r.start);
    tally
}

async fn worker(
    mut client: Caller,
    plan: Plan,
    live: Arc<Live>,
    issued: Arc<AtomicU64>,
    start: Instant,
) -> Tally {
    let mut tally = Tally::new();
    loop {
        if live.stop.load(Ordering::Relaxed) {
            break;
        }
        let n = issued.fetch_add(1, Ordering::Relaxed);
        if plan.requests.is_some_and(|max| n >= max) {
            break;
        }
        if let Some(at) = plan.schedule.start_of(n) {
            // Open loop: on schedule, or at once when the call is late (every
            // worker was busy at its time); never past the end of the run.
            let at = start + at;
            if plan.until.is_some_and(|until| at >= until) {
                break;
            }
            tokio::time::sleep_until(at).await;
        }
        if plan.until.is_some_and(|until| Instant::now() >= until)
            || live.stop.load(Ordering::Relaxed)
        {
            break;
        }
        let slot = PeerSlot::default();
        let began = Instant::now();
        let offset = began - start;
        let window = (offset.as_micros() / plan.schedule.window().as_micros().max(1)) as u64;
        *tally.windows.entry(window).or_default() += 1;
        let result = client.call(&plan.settings, &slot).await;
        let latency = began.elapsed();
        let (code, message) = match &result {
            Ok(_) => (tonic::Code::Ok, String::new()),
            Err(status) => (status.code(), status.message().to_owned()),
        };
        let peer = slot.get().map(ToString::to_string);
        if n < plan.skip_first {
            tally.skipped += 1;
        } else {
            tally.record(latency, code, &message, peer.as_deref());
            tally.record_at(offset + latency, peer.as_deref());
            if plan.record_calls {
                tally.records.push(CallRecord {
                    start: offset,
                    latency,
                    code: code_name(code),
                    backend: peer.clone(),
                    error: message,
                });
            }
        }
        live.done.fetch_add(1, Ordering::Relaxed);
        if code == tonic::Code::Ok {
            live.ok.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(per_backend) = &live.per_backend {
            let key = peer.unwrap_or_else(|| NO_BACKEND.to_owned());
            let mut map = per_backend.lock().unwrap_or_else(|p| p.into_inner());
            let entry = map.entry(key).or_default();
            if code == tonic::Code::Ok {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_merge_and_answer_quantiles() {
        let mut a = Tally::new();
        a.record(Duration::from_millis(1), tonic::Code::Ok, "", Some("x"));
        a.record(
            Duration::from_millis(3),
            tonic::Code::Unavailable,
            "down",
            None,
        );
        let mut b = Tally::new();
        b.record(Duration::from_millis(2), tonic::Code::Ok, "", Some("y"));
        b.record(
            Duration::from_millis(9),
            tonic::Code::Unavailable,
            "down",
            Some("y"),
        );
        a.merge(b);
        assert_eq!((a.calls, a.ok), (4, 2));
        assert_eq!(a.codes["OK"], 2);
        assert_eq!(a.codes["UNAVAILABLE"], 2);
        assert_eq!(a.backends["x"], 1);
        assert_eq!(a.backends["y"], 2);
        assert_eq!(a.top_errors(5), vec![("UNAVAILABLE", "down", 2)]);
        assert!(
            (a.latency_ms(0.5) - 2.0).abs() < 0.01,
            "{}",
            a.latency_ms(0.5)
        );
        assert!((a.max_latency_ms() - 9.0).abs() < 0.01);
    }

    #[test]
    fn every_code_has_its_grpc_name() {
        let names: Vec<&str> = (0..=16)
            .map(|i| code_name(tonic::Code::from_i32(i)))
            .collect();
        assert_eq!(names[0], "OK");
        assert_eq!(names[4], "DEADLINE_EXCEEDED");
        assert_eq!(names[14], "UNAVAILABLE");
        assert_eq!(names[16], "UNAUTHENTICATED");
    }
}
