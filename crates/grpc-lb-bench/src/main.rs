//! `grpc-lb-bench`: the benchmark and chaos suite. `all` runs everything and
//! writes the results under `docs/benchmarks/results/`; docs/benchmarks.md
//! explains the method.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::task::{Context, Waker};
use std::time::Duration;

use clap::{Parser, Subcommand};
use grpc_lb_bench::inmem::{
    call_once, call_once_grpc, endpoints, grpc_request, mem_channel, wait_until,
};
use grpc_lb_bench::load::Length;
use grpc_lb_bench::proc::Pinning;
use grpc_lb_bench::{chaos, scale, server, throughput, Error};

/// Counts live heap bytes for the scale run's memory per endpoint. It adds
/// one uncontended atomic add per allocation, paid alike by every system the
/// throughput run compares.
#[global_allocator]
static GLOBAL: grpc_lb_bench::heap::Counting = grpc_lb_bench::heap::Counting;

#[derive(Debug, Parser)]
#[command(
    name = "grpc-lb-bench",
    about = "grpc-lb's benchmark and chaos suite (docs/benchmarks.md)"
)]
struct Cli {
    /// Where results are written.
    #[arg(long, default_value = "docs/benchmarks/results", global = true)]
    out: PathBuf,
    /// Short runs, to check the suite works; figures are not meaningful.
    #[arg(long, global = true)]
    quick: bool,
    /// Do not pin client and server to separate cores.
    #[arg(long, global = true)]
    no_pin: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Throughput, latency and client CPU of every system, interleaved.
    Throughput {
        /// Rounds (each figure is the median).
        #[arg(long)]
        rounds: Option<usize>,
        /// Measured seconds per run.
        #[arg(long)]
        seconds: Option<f64>,
    },
    /// 10,000 endpoints: memory, Reset time, pick cost, churn.
    Scale {
        /// Endpoints in the big Reset.
        #[arg(long, default_value_t = 10_000)]
        endpoints: usize,
    },
    /// Worker CPU per subchannel state change, at each endpoint count.
    StateChanges {
        /// Endpoint counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [10, 10_000])]
        endpoints: Vec<usize>,
        /// Connections killed (and regained) per measurement.
        #[arg(long, default_value_t = 200)]
        kills: usize,
        /// Policies, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = ["pick_first".to_owned(), "round_robin".to_owned()])]
        policies: Vec<String>,
    },
    /// Rolling restart, slow backend, reconnect storm.
    Chaos,
    /// Everything, then one summary.
    All,
    /// The benchmark server (started by the other commands).
    #[command(hide = true)]
    Server {
        /// Addresses to listen on, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        listen: Vec<SocketAddr>,
        /// Delay before each reply, in ms.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// One system, one case, one window, for `valgrind --tool=callgrind`:
    /// prints the OK calls, so instructions per RPC can be worked out.
    #[command(hide = true)]
    One {
        /// The system, by its position in the throughput table (0 = floor).
        #[arg(long)]
        system: usize,
        /// Endpoints.
        #[arg(long, default_value_t = 4)]
        endpoints: usize,
        /// Callers in flight.
        #[arg(long, default_value_t = 64)]
        inflight: usize,
        /// Measured seconds.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Give each call this deadline (`grpc-timeout`).
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Make this many calls instead of measuring for `--seconds`, after
        /// as many warm-up calls (the same work whatever the load: what
        /// instruction counts need).
        #[arg(long)]
        calls: Option<u64>,
    },
    /// An idle pick_first channel with N endpoints, for `valgrind --tool=massif`.
    #[command(hide = true)]
    Idle {
        /// Endpoints.
        #[arg(long, default_value_t = 2000)]
        endpoints: usize,
    },
    /// Calls through an in-memory channel, for `valgrind --tool=callgrind`.
    Pick {
        /// Ready endpoints.
        #[arg(long, default_value_t = 10)]
        endpoints: usize,
        /// Calls to make.
        #[arg(long, default_value_t = 100_000)]
        calls: u64,
        /// Policy.
        #[arg(long, default_value = "round_robin")]
        policy: String,
        /// Send requests shaped as tonic's (gRPC headers, method extension,
        /// a tonic body) instead of empty ones.
        #[arg(long)]
        grpc: bool,
        /// With `--grpc`, give each call this deadline (`grpc-timeout`).
        #[arg(long)]
        timeout_ms: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "grpc_lb_bench=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("grpc-lb-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    let pinning = if cli.no_pin || matches!(cli.command, Command::Server { .. }) {
        Pinning {
            client: None,
            server: None,
        }
    } else {
        Pinning::detect()
    };
    pinning.pin_self()?;
    // One thread: the client's CPU time is this thread's, and every system is
    // driven the same way.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Server { listen, delay_ms } => {
                server::run(&listen, Duration::from_millis(delay_ms)).await
            }
            Command::Pick {
                endpoints: n,
                calls,
                policy,
                grpc,
                timeout_ms,
            } => {
                let grpc = grpc.then(|| timeout_ms.map(Duration::from_millis));
                pick(n, calls, &policy, grpc).await
            }
            Command::One {
                system,
                endpoints,
                inflight,
                seconds,
                timeout_ms,
                calls,
            } => {
                let system = *grpc_lb_bench::systems::System::ALL
                    .get(system)
                    .ok_or("no such system")?;
                let listen = vec!["127.0.0.1:0".parse()?; endpoints];
                let server =
                    grpc_lb_bench::proc::ServerProcess::start(&listen, Duration::ZERO, pinning)
                        .await?;
                let (warmup, measure) = match calls {
                    Some(calls) => (Length::Calls(calls), Length::Calls(calls)),
                    None => (
                        Length::For(Duration::from_millis(200)),
                        Length::For(Duration::from_secs_f64(seconds)),
                    ),
                };
                let sample = system
                    .run(
                        &server.addrs,
                        inflight,
                        warmup,
                        measure,
                        timeout_ms.map(Duration::from_millis),
                    )
                    .await?;
                println!(
                    "{} ok {} failed {}",
                    system.name(),
                    sample.ok,
                    sample.failed_total()
                );
                server.stop_gracefully().await
            }
            Command::Idle { endpoints: n } => {
                let (channel, handle, live) = scale::live_pick_first().await?;
                let mut set = vec![grpc_lb::resolve::Endpoint::new(live)];
                set.extend(endpoints(n - 1));
                handle.reset(set);
                wait_until(&channel, |c| c.subchannels().len() == n).await?;
                println!(
                    "{n} endpoints, live heap {} B",
                    grpc_lb_bench::heap::live_bytes()
                );
                Ok(())
            }
            Command::Throughput { rounds, seconds } => {
                let md = run_throughput(&cli.out, cli.quick, pinning, rounds, seconds).await?;
                println!("{md}");
                Ok(())
            }
            Command::Scale { endpoints } => {
                let md = scale::run(&scale_plan(cli.quick, endpoints)).await?;
                write(&cli.out, "scale.md", &md)
            }
            Command::StateChanges {
                endpoints,
                kills,
                policies,
            } => {
                let md = grpc_lb_bench::state_changes::run(&endpoints, kills, &policies)?;
                println!("{md}");
                Ok(())
            }
            Command::Chaos => {
                std::fs::create_dir_all(&cli.out)?;
                let md = chaos::run(&chaos_plan(cli.quick), pinning, &cli.out).await?;
                write(
                    &cli.out,
                    "chaos.md",
                    &format!("# Chaos\n\n{}\n\n{md}", machine(pinning)),
                )
            }
            Command::All => {
                run_throughput(&cli.out, cli.quick, pinning, None, None).await?;
                let md = scale::run(&scale_plan(cli.quick, 10_000)).await?;
                write(&cli.out, "scale.md", &md)?;
                let md = chaos::run(&chaos_plan(cli.quick), pinning, &cli.out).await?;
                write(
                    &cli.out,
                    "chaos.md",
                    &format!("# Chaos\n\n{}\n\n{md}", machine(pinning)),
                )
            }
        }
    })
}

async fn run_throughput(
    out: &std::path::Path,
    quick: bool,
    pinning: Pinning,
    rounds: Option<usize>,
    seconds: Option<f64>,
) -> Result<String, Error> {
    let plan = throughput::Plan {
        rounds: rounds.unwrap_or(if quick { 1 } else { 5 }),
        warmup: Duration::from_millis(if quick { 100 } else { 300 }),
        measure: Duration::from_secs_f64(seconds.unwrap_or(if quick { 0.3 } else { 2.0 })),
        endpoints: vec![1, 4],
        inflight: vec![1, 64],
    };
    let before = machine(pinning);
    let runs = throughput::run(&plan, pinning).await?;
    let header = format!(
        "{before}\n\n{} rounds; per run {:.1} s warm-up then {:.1} s measured; figures are medians over rounds. \
         Load average at the end: {}.",
        plan.rounds,
        plan.warmup.as_secs_f64(),
        plan.measure.as_secs_f64(),
        load_average()
    );
    throughput::write_results(&runs, out, &header)
}

fn scale_plan(quick: bool, endpoints: usize) -> scale::Plan {
    scale::Plan {
        endpoints: if quick {
            endpoints.min(1000)
        } else {
            endpoints
        },
        calls: if quick { 100_000 } else { 2_000_000 },
        cycles: if quick { 1000 } else { 10_000 },
    }
}

fn chaos_plan(quick: bool) -> chaos::Plan {
    chaos::Plan {
        inflight: 64,
        restart_every: Duration::from_millis(if quick { 500 } else { 1000 }),
        measure: Duration::from_secs_f64(if quick { 0.5 } else { 3.0 }),
        rounds: if quick { 1 } else { 3 },
        channels: if quick { 100 } else { 1000 },
        down_for: Duration::from_secs(3),
        watch_for: Duration::from_secs(if quick { 6 } else { 10 }),
    }
}

/// The calls of [`call_once`] in a loop: run it under callgrind to count the
/// instructions of one call at a given endpoint count.
async fn pick(
    n: usize,
    calls: u64,
    policy: &str,
    grpc: Option<Option<Duration>>,
) -> Result<(), Error> {
    let (mut channel, handle, worker) = mem_channel(policy)?;
    tokio::spawn(worker);
    handle.reset(endpoints(n));
    let want = if policy == "pick_first" { 1 } else { n };
    wait_until(&channel, |c| c.ready_addresses().len() == want).await?;
    let mut cx = Context::from_waker(Waker::noop());
    let started = std::time::Instant::now();
    let answered = match grpc {
        None => (0..calls)
            .filter(|_| call_once(&mut channel, &mut cx))
            .count(),
        Some(timeout) => (0..calls)
            .filter(|_| call_once_grpc(&mut channel, &mut cx, grpc_request(timeout)))
            .count(),
    };
    println!(
        "{answered} of {calls} calls answered, {:.0} ns each (wall clock)",
        started.elapsed().as_nanos() as f64 / calls.max(1) as f64
    );
    Ok(())
}

fn write(dir: &std::path::Path, name: &str, md: &str) -> Result<(), Error> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), md)?;
    println!("{md}");
    Ok(())
}

/// The machine, the pinning and the load average, for the head of each result.
fn machine(pinning: Pinning) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Counted from cpuinfo: after pinning, available_parallelism says 1.
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let mut s = String::new();
    let _ = write!(
        s,
        "Machine: {cores} × {cpu}. Pinning: {}. Load average at the start: {}.",
        match (pinning.client, pinning.server) {
            (Some(c), Some(sv)) =>
                format!("client on core {c}, server processes on core {sv} (taskset)"),
            _ => "none".to_owned(),
        },
        load_average()
    );
    s
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
