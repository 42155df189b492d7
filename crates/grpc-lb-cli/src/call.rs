//! `grpc-lb call`: drives `SayHello` (or any METHOD, [`crate::rpc`])
//! through a [`grpc_lb::Channel`] on a load schedule ([`crate::schedule`]) and reports the calls per backend, the
//! count of each status code, latency percentiles, the rate achieved in each
//! window of the schedule and the connectivity-state timelines, as a summary,
//! JSON, CSV or an HTML page ([`crate::report`], [`crate::html`]). Given a
//! METHOD (or `-d`) and no load flag, it makes that one call instead
//! ([`crate::invoke`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::time::Instant;

use crate::in_force;
use crate::invoke::{self, Invocation, Lookup};
use crate::load::{self, Live, Plan};
use crate::options::{BuiltClient, ChannelArgs};
use crate::progress::Progress;
use crate::report::Report;
use crate::request::{self, HeaderArgs};
use crate::rpc::{CallSettings, Rpc};
use crate::schedule::{Schedule, ScheduleFlags};
use crate::schema::SchemaArgs;
use crate::stack::call_stack;
use crate::timeline::{Seen, Timeline};
use crate::{CliError, CliResult};

/// Calls made when neither --requests nor --duration is given.
const DEFAULT_REQUESTS: u64 = 100;

/// What the load prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// The report for people.
    Summary,
    /// One JSON object (the `--json` schema of docs/cli.md).
    Json,
    /// A header, then one row per call.
    Csv,
    /// The HTML report (a page with its charts).
    Html,
}

#[derive(Debug, Args)]
// `--timeout-ms -1` is a bad value, not an unknown flag; `--load-step -5`
// a step down.
#[command(allow_negative_numbers = true)]
pub(crate) struct CallArgs {
    /// The target: `ipv4:IP:PORT[,...]`, `dns:///host:port`, `host:port`, ...
    target: String,

    /// Call this method (`package.Service/Method`, its schema from server
    /// reflection, --proto or --protoset) instead of SayHello: once, its
    /// responses printed as JSON, one line each; or as the load, when a load
    /// flag (--requests, --duration, --concurrency, --rps, --load-*,
    /// --skip-first, --format, --html) is given.
    #[arg(value_name = "METHOD")]
    method: Option<String>,

    /// The request body (default method: SayHello): JSON, `@FILE`, or `@-`
    /// for stdin; a client-streaming method takes several messages,
    /// concatenated or one per line. A load sends it with every call.
    #[arg(short = 'd', long = "data", value_name = "JSON")]
    data: Option<String>,

    #[command(flatten)]
    headers: HeaderArgs,

    #[command(flatten)]
    schema: SchemaArgs,

    #[command(flatten)]
    channel: ChannelArgs,

    /// Calls to make, skipped ones included (default 100 when --duration is
    /// not given).
    #[arg(long, value_name = "N", conflicts_with = "duration",
          value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,

    /// Make calls for this long instead, in seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    duration: Option<f64>,

    /// Calls in flight at once (default 1).
    #[arg(long, value_name = "C",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: Option<u32>,

    /// The const schedule's rate: calls started per second, open loop (on
    /// time whether or not earlier calls ended, up to --concurrency in
    /// flight); default: each of the C callers starts its next call when its
    /// last one ends.
    #[arg(long, value_name = "R", alias = "rate", value_parser = positive_rate)]
    rps: Option<f64>,

    /// How the rate changes: const (--rps), step (by --load-step every
    /// --load-step-duration) or line (by --load-step per second), from
    /// --load-start to --load-end.
    #[arg(long, value_name = "SCHEDULE", default_value = "const",
          value_parser = ["const", "step", "line"])]
    load_schedule: String,

    /// The starting rate of a step or line schedule, calls per second.
    #[arg(long, value_name = "R", value_parser = positive_rate)]
    load_start: Option<f64>,

    /// What a step or line schedule adds to the rate per step (or per
    /// second); negative goes down.
    #[arg(long, value_name = "R", value_parser = finite_number)]
    load_step: Option<f64>,

    /// The rate a step or line schedule stops changing at (default: it
    /// keeps rising).
    #[arg(long, value_name = "R", value_parser = positive_rate)]
    load_end: Option<f64>,

    /// How long each step of a step schedule lasts, in seconds.
    #[arg(long, value_name = "SECS", value_parser = positive_secs)]
    load_step_duration: Option<f64>,

    /// Make the first N calls but leave them out of the report (warm-up).
    #[arg(long, value_name = "N", default_value_t = 0)]
    skip_first: u64,

    /// Calls wait for a ready connection instead of failing fast in
    /// TRANSIENT_FAILURE.
    #[arg(long)]
    wait_for_ready: bool,

    /// Each call's deadline in ms, sent as grpc-timeout; 0 for none.
    #[arg(long, value_name = "T", default_value_t = 5000)]
    timeout_ms: u64,

    /// The name sent in each HelloRequest of a SayHello load (a METHOD's
    /// body is -d).
    #[arg(long, default_value = "grpc-lb", conflicts_with_all = ["method", "data"])]
    name: String,

    /// What to print: summary, json (as --json), csv (one row per call) or
    /// html (the page --html writes).
    #[arg(long, value_enum, value_name = "FORMAT", conflicts_with = "json")]
    format: Option<Format>,

    /// Print one JSON object (schema in docs/cli.md) instead of the report.
    #[arg(long)]
    json: bool,

    /// Also write the HTML report (latency histogram, calls per second,
    /// backends' shares over time, state timelines) to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

pub(crate) fn positive_secs(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e9 => Ok(secs),
        _ => Err(format!("{value:?} is not a positive number of seconds")),
    }
}

fn positive_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 1e9 => Ok(rate),
        _ => Err(format!("{value:?} is not a positive rate")),
    }
}

fn finite_number(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(number) if number.is_finite() && number.abs() <= 1e9 => Ok(number),
        _ => Err(format!("{value:?} is not a number")),
    }
}

impl CallArgs {
    /// Whether a flag that only a load has was given: with a METHOD (or
    /// `-d`), the method is then the load's call instead of a single call.
    fn load_flags_given(&self) -> bool {
        self.requests.is_some()
            || self.duration.is_some()
            || self.concurrency.is_some()
            || self.rps.is_some()
            || self.load_schedule != "const"
            || self.load_start.is_some()
            || self.load_step.is_some()
            || self.load_end.is_some()
            || self.load_step_duration.is_some()
            || self.skip_first > 0
            || self.format.is_some()
            || self.html.is_some()
    }
}

pub(crate) async fn run(args: CallArgs) -> CliResult {
    let timeout = (args.timeout_ms > 0).then(|| Duration::from_millis(args.timeout_ms));
    let any_method = args.method.is_some() || args.data.is_some();
    if any_method && !args.load_flags_given() {
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
    if !any_method && (!args.schema.protos.is_empty() || !args.schema.protosets.is_empty()) {
        return Err(CliError::usage(
            "--proto and --protoset need a METHOD or -d (the SayHello load has its schema built in)",
        ));
    }
    let schedule = Schedule::from_flags(ScheduleFlags {
        schedule: &args.load_schedule,
        rps: args.rps,
        start: args.load_start,
        step: args.load_step,
        end: args.load_end,
        step_duration: args.load_step_duration,
    })
    .map_err(CliError::usage)?;
    let requests = match args.duration {
        Some(_) => None,
        None => Some(args.requests.unwrap_or(DEFAULT_REQUESTS)),
    };
    if let Some(n) = requests.filter(|n| args.skip_first >= *n) {
        return Err(CliError::usage(format!(
            "--skip-first {} leaves none of the {n} calls to report",
            args.skip_first
        )));
    }
    let format = match (args.format, args.json) {
        (Some(format), _) => format,
        (None, true) => Format::Json,
        (None, false) => Format::Summary,
    };
    let metadata = args.headers.metadata()?;
    let body = args.data.as_deref().map(request::body_text).transpose()?;
    // An unwritable --html FILE is found before any call is made.
    let html_file = args
        .html
        .as_ref()
        .map(|path| {
            std::fs::File::create(path)
                .map_err(|error| CliError::usage(format!("--html {}: {error}", path.display())))
        })
        .transpose()?;
    let start = Instant::now();
    let BuiltClient {
        client: channel,
        default_config,
        options,
        stack,
    } = args
        .channel
        .build_client(&args.target, args.wait_for_ready)
        .await?;
    // A grpclb stack has no channel events: its timeline stays empty.
    let timeline = channel.channel().map(|c| Timeline::start(c, start));
    let rpc = if any_method {
        // The schema as a single call finds it, through the same stack.
        let lookup = Lookup {
            target: &args.target,
            method: args.method.as_deref(),
            schema: &args.schema,
            timeout,
        };
        let method = invoke::resolve(&lookup, &call_stack(&channel, stack), &metadata).await?;
        let messages = invoke::request_messages(&method, body.as_deref())?;
        Rpc::method(&method, &messages)?
    } else {
        Rpc::SayHello {
            name: args.name.clone(),
        }
    };

    let plan = Plan {
        requests,
        until: args
            .duration
            .map(|secs| start + Duration::from_secs_f64(secs)),
        concurrency: args.concurrency.unwrap_or(1) as usize,
        schedule,
        skip_first: args.skip_first,
        record_calls: format == Format::Csv,
        settings: CallSettings {
            metadata,
            timeout,
            wait_for_ready: args.wait_for_ready,
        },
        rpc,
        stack,
    };
    let live = Arc::new(Live::default());
    let progress = Progress::start(&plan, args.duration, &live, start);
    let traffic_start = Instant::now();
    let tally = load::run(&channel, &plan, &live, traffic_start).await;
    let elapsed = traffic_start.elapsed();
    progress.finish();
    let seen = match timeline {
        Some(timeline) => timeline.finish().await,
        None => Seen::default(),
    };
    // What is in force now, the resolver's config included.
    let config = channel.service_config();
    let policy = match (channel.grpclb(), channel.tree()) {
        (Some(_), _) => crate::grpclb::GRPCLB.to_owned(),
        (_, Some(tree)) => tree.policy.name().to_owned(),
        (None, None) => seen
            .policy
            .clone()
            .unwrap_or_else(|| in_force::policy(config.as_deref(), &args.channel.policy)),
    };
    let config_json = config.as_deref().map(in_force::config_json);
    let source = in_force::source(config.as_deref(), default_config.as_ref());
    let load_offset = traffic_start - start;
    // Calls were started until --duration ran out (counted from the command's
    // start), or until the last one.
    let span = match plan.until {
        Some(until) => (until.saturating_duration_since(traffic_start)).min(elapsed),
        None => elapsed,
    };

    let report = Report {
        target: &args.target,
        method: plan.rpc.name(),
        policy: &policy,
        elapsed,
        tally: &tally,
        seen: &seen,
        channel: channel.channel(),
        grpclb: channel.grpclb().map(|grpclb| grpclb.json(Some(&tally))),
        tree: channel.tree().map(crate::tree_stack::TreeClient::json),
        service_config: config_json,
        service_config_source: source,
        options,
        schedule,
        span,
        load_offset,
    };
    if let (Some(mut file), Some(path)) = (html_file, &args.html) {
        use std::io::Write as _;
        file.write_all(crate::html::render(&report).as_bytes())
            .map_err(|error| {
                CliError::failed(format!("cannot write --html {}: {error}", path.display()))
            })?;
    }
    match format {
        Format::Summary => print!("{}", report.text()),
        Format::Json => println!("{}", report.json()),
        Format::Csv => print!("{}", report.csv()),
        Format::Html => print!("{}", crate::html::render(&report)),
    }
    if tally.calls > 0 && tally.ok == tally.calls {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}
