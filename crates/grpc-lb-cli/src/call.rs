//! `grpc-lb call`: drives `SayHello` through a [`grpc_lb::Channel`] and
//! reports the calls per backend, the count of each status code, latency
//! percentiles and the channel's connectivity-state timeline, for people or
//! (with `--json`) for scripts. Given a METHOD (or `-d`), it makes that one
//! call instead ([`crate::invoke`]).

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use grpc_lb::{ChannelEvent, ConnectivityState};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::channel::GrpcChannel;
use crate::in_force;
use crate::invoke::{self, Invocation};
use crate::load::{self, Live, Plan, Tally};
use crate::options::{Built, ChannelArgs};
use crate::request::HeaderArgs;
use crate::schema::SchemaArgs;
use crate::{CliError, CliResult};

/// Calls made when neither --requests nor --duration is given.
const DEFAULT_REQUESTS: u64 = 100;

/// The flags of the SayHello load, which a single call of a METHOD refuses.
const LOAD_FLAGS: [&str; 5] = ["requests", "duration", "concurrency", "rate", "name"];

#[derive(Debug, Args)]
// `--timeout-ms -1` is a bad value, not an unknown flag.
#[command(allow_negative_numbers = true)]
pub(crate) struct CallArgs {
    /// The target: `ipv4:IP:PORT[,...]`, `dns:///host:port`, `host:port`, ...
    target: String,

    /// Call this method once instead of the SayHello load:
    /// `package.Service/Method`, its schema from server reflection, --proto
    /// or --protoset. Responses print as JSON, one line each.
    #[arg(value_name = "METHOD", conflicts_with_all = LOAD_FLAGS)]
    method: Option<String>,

    /// The request body of the one call (default method: SayHello): JSON,
    /// `@FILE`, or `@-` for stdin; a client-streaming method takes several
    /// messages, concatenated or one per line.
    #[arg(short = 'd', long = "data", value_name = "JSON", conflicts_with_all = LOAD_FLAGS)]
    data: Option<String>,

    #[command(flatten)]
    headers: HeaderArgs,

    #[command(flatten)]
    schema: SchemaArgs,

    #[command(flatten)]
    channel: ChannelArgs,

    /// Calls to make (default 100 when --duration is not given).
    #[arg(long, value_name = "N", conflicts_with = "duration",
          value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,

    /// Make calls for this long instead, in seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    duration: Option<f64>,

    /// Calls in flight at once.
    #[arg(long, value_name = "C", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,

    /// Calls started per second, over all of them (default: as fast as they
    /// complete).
    #[arg(long, value_name = "R", value_parser = positive_rate)]
    rate: Option<f64>,

    /// Calls wait for a ready connection instead of failing fast in
    /// TRANSIENT_FAILURE.
    #[arg(long)]
    wait_for_ready: bool,

    /// Each call's deadline in ms, sent as grpc-timeout; 0 for none.
    #[arg(long, value_name = "T", default_value_t = 5000)]
    timeout_ms: u64,

    /// The name sent in each HelloRequest.
    #[arg(long, default_value = "grpc-lb")]
    name: String,

    /// Print one JSON object (schema in docs/cli.md) instead of the report.
    #[arg(long)]
    json: bool,
}

pub(crate) fn positive_secs(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e9 => Ok(secs),
        _ => Err(format!("{value:?} is not a positive number of seconds")),
    }
}

fn positive_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{value:?} is not a positive rate")),
    }
}

/// One entry of the state timeline.
#[derive(Debug, Clone, Copy)]
struct StateAt {
    t: Duration,
    state: ConnectivityState,
}

/// What the channel's events told while traffic flowed.
#[derive(Debug, Default)]
struct Seen {
    states: Vec<StateAt>,
    /// The policy of the last `ServiceConfig` event: the one in use.
    policy: Option<String>,
}

impl Seen {
    fn record(&mut self, event: ChannelEvent, t: Duration) {
        match event {
            ChannelEvent::State { to, .. } => push(&mut self.states, t, to),
            ChannelEvent::ServiceConfig { policy, .. } => self.policy = Some(policy),
            _ => {}
        }
    }
}

/// Records the channel's state changes, from `start`, until finished.
struct Timeline {
    flush: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Seen>,
}

impl Timeline {
    /// Call right after building the channel: its worker may already have
    /// moved, and the changes it made before the subscription are taken from
    /// the channel's history, timed at the subscription.
    fn start(channel: &GrpcChannel, start: Instant) -> Self {
        let mut events = channel.events();
        let now = start.elapsed();
        let mut states = vec![StateAt {
            t: Duration::ZERO,
            state: ConnectivityState::Idle,
        }];
        for state in channel.state_history() {
            push(&mut states, now, state);
        }
        let (flush, mut flushed) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut seen = Seen {
                states,
                policy: None,
            };
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Ok(event) => seen.record(event, start.elapsed()),
                        Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => return seen,
                    },
                    _ = &mut flushed => break,
                }
            }
            // What the worker sent before the traffic ended is in the queue.
            loop {
                match events.try_recv() {
                    Ok(event) => seen.record(event, start.elapsed()),
                    Err(TryRecvError::Lagged(_)) => {}
                    Err(_) => return seen,
                }
            }
        });
        Timeline { flush, task }
    }

    async fn finish(self) -> Seen {
        let _ = self.flush.send(());
        self.task.await.unwrap_or_default()
    }
}

/// Appends a state, skipping a repeat (subscribing and reading the history
/// race, so one change can be seen twice).
fn push(states: &mut Vec<StateAt>, t: Duration, state: ConnectivityState) {
    if states.last().map(|s| s.state) != Some(state) {
        states.push(StateAt { t, state });
    }
}

pub(crate) async fn run(args: CallArgs) -> CliResult {
    let timeout = (args.timeout_ms > 0).then(|| Duration::from_millis(args.timeout_ms));
    if args.method.is_some() || args.data.is_some() {
        return invoke::run(Invocation {
            target: &args.target,
            method: args.method.as_deref(),
            data: args.data.as_deref(),
            headers: &args.headers,
            schema: &args.schema,
            channel: &args.channel,
            wait_for_ready: args.wait_for_ready,
            timeout,
            json: args.json,
        })
        .await;
    }
    if !args.schema.protos.is_empty() || !args.schema.protosets.is_empty() {
        return Err(CliError::usage(
            "--proto and --protoset need a METHOD or -d (the SayHello load has its schema built in)",
        ));
    }
    let metadata = args.headers.metadata()?;
    let start = Instant::now();
    let Built {
        channel,
        default_config,
        options,
        stack,
    } = args.channel.build(&args.target, args.wait_for_ready)?;
    let timeline = Timeline::start(&channel, start);

    let requests = match args.duration {
        Some(_) => None,
        None => Some(args.requests.unwrap_or(DEFAULT_REQUESTS)),
    };
    let plan = Plan {
        requests,
        until: args
            .duration
            .map(|secs| start + Duration::from_secs_f64(secs)),
        concurrency: args.concurrency as usize,
        rate: args.rate,
        timeout,
        wait_for_ready: args.wait_for_ready,
        name: args.name.clone(),
        metadata,
        stack,
    };
    let live = Arc::new(Live::default());
    let progress = Progress::start(&plan, args.duration, &live, start);
    let traffic_start = Instant::now();
    let tally = load::run(&channel, &plan, &live).await;
    let elapsed = traffic_start.elapsed();
    progress.finish();
    let seen = timeline.finish().await;
    // What is in force now, the resolver's config included.
    let config = channel.service_config();
    let policy = seen
        .policy
        .unwrap_or_else(|| in_force::policy(config.as_deref(), &args.channel.policy));
    let config_json = config.as_deref().map(in_force::config_json);
    let source = in_force::source(config.as_deref(), default_config.as_ref());

    let report = Report {
        target: &args.target,
        policy: &policy,
        elapsed,
        tally: &tally,
        states: &seen.states,
        channel: &channel,
        service_config: config_json,
        service_config_source: source,
        options,
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if tally.calls > 0 && tally.ok == tally.calls {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

/// The progress bar: on stderr, only when stdout and stderr are terminals.
struct Progress {
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(plan: &Plan, duration: Option<f64>, live: &Arc<Live>, start: Instant) -> Self {
        let visible = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        if !visible {
            return Progress {
                bar: ProgressBar::hidden(),
                ticker: None,
            };
        }
        // By calls, or by milliseconds of a --duration run.
        let (length, by_time) = match (plan.requests, duration) {
            (Some(n), _) => (n, false),
            (None, Some(secs)) => ((secs * 1000.0) as u64, true),
            (None, None) => (0, false),
        };
        let bar = ProgressBar::new(length);
        let template = if by_time {
            "{bar:40} {elapsed_precise} {msg}"
        } else {
            "{bar:40} {pos}/{len} calls {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        let ticker_bar = bar.clone();
        let live = live.clone();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let done = live.done.load(Ordering::Relaxed);
                let ok = live.ok.load(Ordering::Relaxed);
                if by_time {
                    ticker_bar.set_position(start.elapsed().as_millis() as u64);
                } else {
                    ticker_bar.set_position(done);
                }
                let failed = done - ok;
                ticker_bar.set_message(match duration {
                    Some(secs) if by_time => format!("of {secs}s: {done} calls, {failed} failed"),
                    _ => format!("({failed} failed)"),
                });
            }
        });
        Progress {
            bar,
            ticker: Some(ticker),
        }
    }

    fn finish(self) {
        if let Some(ticker) = self.ticker {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}

struct Report<'a> {
    target: &'a str,
    policy: &'a str,
    elapsed: Duration,
    tally: &'a Tally,
    states: &'a [StateAt],
    channel: &'a GrpcChannel,
    /// The service config in force at the end, as parsed.
    service_config: Option<Value>,
    service_config_source: &'static str,
    /// The channel settings the flags gave.
    options: Value,
}

/// Milliseconds with three decimals, as a JSON number.
fn ms(value: f64) -> Value {
    json!((value * 1000.0).round() / 1000.0)
}

impl Report<'_> {
    fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.tally.calls as f64 / secs
        } else {
            0.0
        }
    }

    /// The `--json` object; its schema is documented in docs/cli.md and kept
    /// stable: fields are only ever added.
    fn json(&self) -> Value {
        let t = self.tally;
        let codes: Map<String, Value> = t
            .codes
            .iter()
            .map(|(code, n)| ((*code).to_owned(), json!(n)))
            .collect();
        let backends: Map<String, Value> = t
            .backends
            .iter()
            .map(|(addr, n)| (addr.clone(), json!(n)))
            .collect();
        let states: Vec<Value> = self
            .states
            .iter()
            .map(|s| json!({"t_ms": ms(s.t.as_secs_f64() * 1000.0), "state": s.state.as_str()}))
            .collect();
        let errors: Vec<Value> = t
            .top_errors(10)
            .into_iter()
            .map(|(code, message, count)| json!({"code": code, "message": message, "count": count}))
            .collect();
        let subchannels: Vec<Value> = self
            .channel
            .subchannels()
            .into_iter()
            .map(|s| {
                json!({
                    "address": s.address.to_string(),
                    "state": s.state.as_str(),
                    "connect_attempts": s.connect_attempts,
                })
            })
            .collect();
        json!({
            "target": self.target,
            "policy": self.policy,
            "requests": t.calls,
            "ok": t.ok,
            "failed": t.calls - t.ok,
            "duration_ms": ms(self.elapsed.as_secs_f64() * 1000.0),
            "rps": ms(self.rate()),
            "codes": codes,
            "backends": backends,
            "latency_ms": {
                "p50": ms(t.latency_ms(0.5)),
                "p90": ms(t.latency_ms(0.9)),
                "p99": ms(t.latency_ms(0.99)),
                "p999": ms(t.latency_ms(0.999)),
                "max": ms(t.max_latency_ms()),
            },
            "states": states,
            "errors": errors,
            "subchannels": subchannels,
            "service_config": self.service_config,
            "service_config_source": self.service_config_source,
            "options": self.options,
        })
    }

    fn text(&self) -> String {
        use std::fmt::Write as _;
        let t = self.tally;
        let mut out = String::new();
        let _ = writeln!(out, "target     {} ({})", self.target, self.policy);
        if let Some(config) = &self.service_config {
            let _ = writeln!(
                out,
                "config     {config} (from {})",
                self.service_config_source
            );
        }
        let _ = writeln!(
            out,
            "requests   {} in {:.2} s ({:.1}/s): {} OK, {} failed",
            t.calls,
            self.elapsed.as_secs_f64(),
            self.rate(),
            t.ok,
            t.calls - t.ok
        );
        let codes: Vec<String> = t.codes.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let _ = writeln!(out, "codes      {}", codes.join(", "));
        let mut label = "backends";
        if t.backends.is_empty() {
            let _ = writeln!(out, "backends   none answered");
        }
        for (addr, n) in &t.backends {
            let share = 100.0 * *n as f64 / t.calls.max(1) as f64;
            let _ = writeln!(out, "{label:<10} {addr:<24} {n:>8} ({share:.1}%)");
            label = "";
        }
        let _ = writeln!(
            out,
            "latency    p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            t.latency_ms(0.5),
            t.latency_ms(0.9),
            t.latency_ms(0.99),
            t.latency_ms(0.999),
            t.max_latency_ms()
        );
        let states: Vec<String> = self
            .states
            .iter()
            .map(|s| format!("{:.1} ms {}", s.t.as_secs_f64() * 1000.0, s.state))
            .collect();
        let _ = writeln!(out, "states     {}", states.join(" -> "));
        let mut label = "errors";
        for (code, message, count) in t.top_errors(5) {
            let _ = writeln!(out, "{label:<10} {count} x {code}: {message}");
            label = "";
        }
        out
    }
}

impl std::fmt::Debug for Report<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Report")
            .field("target", &self.target)
            .finish()
    }
}
