//! `grpc-lb demo`: the main job of the workspace in twenty seconds or less.
//!
//! It starts three Greeter servers in this process, a round_robin
//! [`grpc_lb::Channel`] over them fed by a manual resolver, and steady
//! traffic; then kills a backend (its runtime is dropped: listener and
//! connections close at once, as if the process died), restarts it on the
//! same port, and adds a fourth backend through the resolver. A live table
//! shows each backend's calls, state and errors (redrawn on a terminal, one
//! plain line a second otherwise), and a summary ends the run. It exits 0 when
//! every backend served calls.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use grpc_lb::backoff::BackoffConfig;
use grpc_lb::resolve::{Address, Endpoint, ManualHandle, ManualResolver, Registry};
use grpc_lb::{Channel, ChannelEvent, ConnectivityState};
use grpc_lb_helloworld::{serve, NamedGreeter};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::channel::GrpcChannel;
use crate::load::{self, Live, Plan, NO_BACKEND};
use crate::watch::describe;
use crate::{CliError, CliResult};

/// How long each act of the demo lets traffic flow.
const ACT: Duration = Duration::from_millis(2500);
/// The longest the demo waits for a backend to change state.
const WAIT_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Calls per second of steady traffic.
    #[arg(long, value_name = "R", default_value_t = 200.0)]
    rate: f64,

    /// Print plain lines even on a terminal (no redrawn table).
    #[arg(long)]
    plain: bool,
}

/// A Greeter server on its own thread and runtime, so that it can be killed
/// outright: dropping the runtime drops the listener and every connection.
struct Backend {
    name: String,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    async fn start(name: &str, addr: SocketAddr) -> Result<Backend, String> {
        let (ready_tx, ready_rx) = oneshot::channel::<Result<SocketAddr, String>>();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let greeter = NamedGreeter::new(name);
        let thread = std::thread::Builder::new()
            .name(format!("demo-{name}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(error.to_string()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let listener = match bind(addr).await {
                        Ok(listener) => listener,
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    let bound = listener.local_addr().map_err(|e| e.to_string());
                    let _ = ready_tx.send(bound);
                    tokio::select! {
                        _ = serve(listener, greeter, std::future::pending()) => {}
                        _ = stop_rx => {}
                    }
                });
                // The runtime is dropped here, and with it every connection.
            })
            .map_err(|e| e.to_string())?;
        let addr = ready_rx
            .await
            .map_err(|_| format!("{name} did not start"))??;
        Ok(Backend {
            name: name.to_owned(),
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops the server at once: no graceful shutdown, connections just close.
    async fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    async fn restart(&mut self) -> Result<(), String> {
        self.kill().await;
        let again = Backend::start(&self.name, self.addr).await?;
        *self = again;
        Ok(())
    }
}

/// Binds, retrying briefly: the port of a backend just killed can take a
/// moment to be free again.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    let mut last = String::new();
    for _ in 0..20 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(error) => last = format!("cannot listen on {addr}: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}

/// What the screen shows, and the lines printed above it.
struct Screen {
    start: Instant,
    terminal: bool,
    channel: GrpcChannel,
    names: Arc<Mutex<BTreeMap<String, String>>>,
    live: Arc<Live>,
    /// How many lines the table took when last drawn (terminal only).
    drawn: usize,
}

impl Screen {
    fn name_of(&self, address: &str) -> String {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        names.get(address).cloned().unwrap_or_default()
    }

    fn per_backend(&self) -> HashMap<String, (u64, u64)> {
        match &self.live.per_backend {
            Some(map) => map.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            None => HashMap::new(),
        }
    }

    fn table(&self) -> Vec<String> {
        let done = self.live.done.load(Ordering::Relaxed);
        let ok = self.live.ok.load(Ordering::Relaxed);
        let per_backend = self.per_backend();
        let mut lines = vec![
            format!(
                "t={:>5.1}s  channel {:<17}  calls {done:>6}  ok {ok:>6}  failed {:>4}",
                self.start.elapsed().as_secs_f64(),
                self.channel.state().as_str(),
                done - ok
            ),
            format!(
                "  {:<10} {:<21} {:<17} {:>7} {:>6} {:>8}  last error",
                "backend", "address", "state", "calls", "errors", "attempts"
            ),
        ];
        for sub in self.channel.subchannels() {
            let address = sub.address.to_string();
            let (calls, errors) = per_backend.get(&address).copied().unwrap_or_default();
            let mut error = sub
                .last_error
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default();
            error.truncate(48);
            lines.push(format!(
                "  {:<10} {:<21} {:<17} {calls:>7} {errors:>6} {:>8}  {error}",
                self.name_of(&address),
                address,
                sub.state.as_str(),
                sub.connect_attempts,
            ));
        }
        if let Some((_, errors)) = per_backend.get(NO_BACKEND) {
            lines.push(format!(
                "  {:<10} {:<21} {:<17} {:>7} {errors:>6}",
                "(none)", "no backend answered", "", ""
            ));
        }
        lines
    }

    /// One plain line: the time, the channel and each backend.
    fn plain_line(&self) -> String {
        let done = self.live.done.load(Ordering::Relaxed);
        let ok = self.live.ok.load(Ordering::Relaxed);
        let per_backend = self.per_backend();
        let mut line = format!(
            "[{:>5.1}s] channel {} | calls {done} ok {ok}",
            self.start.elapsed().as_secs_f64(),
            self.channel.state()
        );
        for sub in self.channel.subchannels() {
            let address = sub.address.to_string();
            let (calls, _) = per_backend.get(&address).copied().unwrap_or_default();
            let _ = write!(line, " | {} {} {calls}", self.name_of(&address), sub.state);
        }
        line
    }

    fn erase(&mut self, out: &mut impl std::io::Write) {
        if self.terminal && self.drawn > 0 {
            let _ = write!(out, "\x1b[{}A\x1b[J", self.drawn);
            self.drawn = 0;
        }
    }

    fn draw(&mut self, out: &mut impl std::io::Write) {
        if self.terminal {
            let table = self.table();
            for line in &table {
                let _ = writeln!(out, "{line}");
            }
            self.drawn = table.len();
        } else {
            let _ = writeln!(out, "{}", self.plain_line());
        }
        let _ = out.flush();
    }

    fn event(&mut self, out: &mut impl std::io::Write, line: &str) {
        self.erase(out);
        let _ = writeln!(out, "[{:>5.1}s] {line}", self.start.elapsed().as_secs_f64());
        if self.terminal {
            self.draw(out);
        }
        let _ = out.flush();
    }
}

/// Lines for the screen: the demo's own acts and the channel's events.
enum Show {
    Line(String),
    Done,
}

/// The demo's acts, kept for the summary.
#[derive(Default)]
struct Story {
    acts: Vec<(Duration, String)>,
}

pub(crate) async fn run(args: DemoArgs) -> CliResult {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err(CliError::usage("--rate must be a positive number"));
    }
    let start = Instant::now();
    let localhost: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut backends = Vec::new();
    for i in 1..=3 {
        let backend = Backend::start(&format!("backend-{i}"), localhost)
            .await
            .map_err(CliError::failed)?;
        backends.push(backend);
    }
    let names: Arc<Mutex<BTreeMap<String, String>>> = Arc::new(Mutex::new(
        backends
            .iter()
            .map(|b| (b.addr.to_string(), b.name.clone()))
            .collect(),
    ));

    let (channel, resolver) = demo_channel().map_err(CliError::failed)?;
    let mut events = channel.events();
    resolver.reset(backends.iter().map(|b| Endpoint::new(b.addr)));

    let live = Arc::new(Live::with_per_backend());
    let terminal = std::io::stdout().is_terminal() && !args.plain;
    let (show, mut shown) = mpsc::unbounded_channel::<Show>();
    let mut screen = Screen {
        start,
        terminal,
        channel: channel.clone(),
        names: names.clone(),
        live: live.clone(),
        drawn: 0,
    };
    println!(
        "grpc-lb demo: 3 Greeter servers, a round_robin channel, {} calls/s; \
         a backend is killed, restarted, and a fourth is added.",
        args.rate
    );
    let display = tokio::spawn(async move {
        let mut tick = tokio::time::interval(if terminal {
            Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        });
        tick.tick().await;
        let stdout = std::io::stdout();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let mut out = stdout.lock();
                    screen.erase(&mut out);
                    screen.draw(&mut out);
                }
                show = shown.recv() => match show {
                    Some(Show::Line(line)) => screen.event(&mut stdout.lock(), &line),
                    Some(Show::Done) | None => {
                        let mut out = stdout.lock();
                        screen.erase(&mut out);
                        break;
                    }
                },
            }
        }
    });
    // The channel's own events, named.
    let forward = {
        let show = show.clone();
        let names = names.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                let mut line = describe(&event);
                if let ChannelEvent::SubchannelState { address, .. }
                | ChannelEvent::SubchannelAdded { address, .. } = &event
                {
                    let names = names.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(name) = names.get(&address.to_string()) {
                        line = line.replacen(
                            &format!("subchannel {address}"),
                            &format!("subchannel {address} ({name})"),
                            1,
                        );
                    }
                }
                if show.send(Show::Line(line)).is_err() {
                    break;
                }
            }
        })
    };

    let story = Arc::new(Mutex::new(Story::default()));
    let act = |line: String| {
        let mut story = story.lock().unwrap_or_else(|p| p.into_inner());
        story.acts.push((start.elapsed(), line.clone()));
        let _ = show.send(Show::Line(format!(">>> {line}")));
    };

    let plan = Plan {
        requests: None,
        until: None,
        concurrency: 4,
        schedule: crate::schedule::Schedule::Const { rate: args.rate },
        skip_first: 0,
        record_calls: false,
        settings: crate::rpc::CallSettings {
            metadata: tonic::metadata::MetadataMap::new(),
            timeout: Some(Duration::from_secs(1)),
            wait_for_ready: false,
        },
        rpc: crate::rpc::Rpc::SayHello {
            name: "demo".into(),
        },
        stack: Default::default(),
    };
    let traffic = {
        let channel = crate::channel::Client::Channel(channel.clone());
        let live = live.clone();
        tokio::spawn(
            async move { load::run(&channel, &plan, &live, tokio::time::Instant::now()).await },
        )
    };

    let result = script(&channel, &resolver, &mut backends, &names, &live, &act).await;

    live.stop.store(true, Ordering::Relaxed);
    let tally = traffic.await.unwrap_or_else(|_| load::Tally::new());
    forward.abort();
    let _ = show.send(Show::Done);
    let _ = display.await;
    // Read before the servers stop, which the channel would see.
    let states: HashMap<String, (ConnectivityState, u64)> = channel
        .subchannels()
        .into_iter()
        .map(|s| (s.address.to_string(), (s.state, s.connect_attempts)))
        .collect();
    for backend in &mut backends {
        backend.kill().await;
    }

    // The summary.
    let per_backend = live
        .per_backend
        .as_ref()
        .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .unwrap_or_default();
    let codes: Vec<String> = tally
        .codes
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    println!();
    println!(
        "summary: {} calls in {:.1} s: {} OK, {} failed ({})",
        tally.calls,
        start.elapsed().as_secs_f64(),
        tally.ok,
        tally.calls - tally.ok,
        codes.join(", ")
    );
    println!(
        "  {:<10} {:<21} {:>7} {:>6}  {:<17} attempts",
        "backend", "address", "calls", "errors", "state"
    );
    let mut idle_backends = Vec::new();
    for backend in &backends {
        let address = backend.addr.to_string();
        let (calls, errors) = per_backend.get(&address).copied().unwrap_or_default();
        let (state, attempts) = states
            .get(&address)
            .copied()
            .unwrap_or((ConnectivityState::Shutdown, 0));
        println!(
            "  {:<10} {address:<21} {calls:>7} {errors:>6}  {:<17} {attempts}",
            backend.name,
            state.as_str()
        );
        if calls == 0 {
            idle_backends.push(backend.name.clone());
        }
    }
    if let Some((_, errors)) = per_backend.get(NO_BACKEND) {
        println!(
            "  {:<10} {:<21} {:>7} {errors:>6}",
            "(none)", "no backend answered", 0
        );
    }
    println!(
        "  latency: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        tally.latency_ms(0.5),
        tally.latency_ms(0.99),
        tally.max_latency_ms()
    );
    let mut failures: Vec<String> = Vec::new();
    for (code, message, count) in tally.top_errors(3) {
        failures.push(format!("{count} x {code}: {message}"));
    }
    if !failures.is_empty() {
        println!("  failed calls (while a backend died under them):");
        for failure in failures {
            println!("    {failure}");
        }
    }
    println!("  what happened:");
    let story = story.lock().unwrap_or_else(|p| p.into_inner());
    for (at, line) in &story.acts {
        println!("    [{:>5.1}s] {line}", at.as_secs_f64());
    }
    drop(story);
    result?;
    if !idle_backends.is_empty() {
        return Err(CliError::failed(format!(
            "demo: no traffic reached {}",
            idle_backends.join(", ")
        )));
    }
    Ok(ExitCode::SUCCESS)
}

/// A round_robin channel fed by a manual resolver, with a short backoff so
/// that the restarted backend is back within the demo.
fn demo_channel() -> Result<(GrpcChannel, ManualHandle), String> {
    let (resolver, handle) = ManualResolver::new("demo");
    let mut registry = Registry::with_defaults();
    registry.register(resolver);
    let backoff = BackoffConfig::try_new(
        Duration::from_millis(200),
        1.6,
        0.2,
        Duration::from_secs(1),
        Duration::from_secs(2),
    )
    .map_err(|e| e.to_string())?;
    let channel = Channel::builder("demo:///greeter")
        .resolver_registry(registry)
        .policy("round_robin")
        .backoff(backoff)
        .build()
        .map_err(|e| e.to_string())?;
    Ok((channel, handle))
}

/// Waits until `address`'s subchannel is in a state that `wanted` accepts,
/// at most [`WAIT_LIMIT`]; says whether it got there.
async fn wait_for_subchannel(
    channel: &GrpcChannel,
    address: SocketAddr,
    wanted: impl Fn(ConnectivityState) -> bool,
) -> bool {
    let address = Address::from(address);
    let mut events = channel.events();
    let reached = || {
        channel
            .subchannels()
            .iter()
            .any(|s| s.address == address && wanted(s.state))
    };
    tokio::time::timeout(WAIT_LIMIT, async {
        while !reached() {
            if let Err(tokio::sync::broadcast::error::RecvError::Closed) = events.recv().await {
                return;
            }
        }
    })
    .await
    .is_ok()
}

/// Calls `address` has answered so far.
fn calls_of(live: &Live, address: SocketAddr) -> u64 {
    live.per_backend
        .as_ref()
        .and_then(|m| {
            let map = m.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&address.to_string()).map(|(ok, _)| *ok)
        })
        .unwrap_or(0)
}

/// The acts: steady traffic, kill, restart, add.
async fn script(
    channel: &GrpcChannel,
    resolver: &ManualHandle,
    backends: &mut Vec<Backend>,
    names: &Mutex<BTreeMap<String, String>>,
    live: &Live,
    act: &impl Fn(String),
) -> Result<(), CliError> {
    let ready = |s: ConnectivityState| s == ConnectivityState::Ready;
    for backend in backends.iter() {
        if !wait_for_subchannel(channel, backend.addr, ready).await {
            act(format!("{} did not become READY", backend.name));
        }
    }
    act("3 backends READY; traffic spreads round-robin".into());
    tokio::time::sleep(ACT).await;

    let victim = &mut backends[1];
    let before = calls_of(live, victim.addr);
    victim.kill().await;
    act(format!(
        "killed {} ({}) after {before} calls",
        victim.name, victim.addr
    ));
    if wait_for_subchannel(channel, victim.addr, |s| !ready(s)).await {
        act(format!(
            "the channel saw {} go; traffic goes to the others",
            victim.name
        ));
    }
    tokio::time::sleep(ACT).await;

    victim.restart().await.map_err(CliError::failed)?;
    let at_restart = calls_of(live, victim.addr);
    act(format!(
        "restarted {} on the same port {}",
        victim.name, victim.addr
    ));
    if wait_for_subchannel(channel, victim.addr, ready).await {
        act(format!(
            "{} is READY again (reconnected with backoff)",
            victim.name
        ));
    }
    tokio::time::sleep(ACT).await;
    let since = calls_of(live, victim.addr) - at_restart;
    act(format!(
        "{} served {since} calls since its restart",
        victim.name
    ));

    let localhost: SocketAddr = ([127, 0, 0, 1], 0).into();
    let fourth = Backend::start("backend-4", localhost)
        .await
        .map_err(CliError::failed)?;
    names
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(fourth.addr.to_string(), fourth.name.clone());
    resolver.add([Endpoint::new(fourth.addr)]);
    act(format!(
        "added {} ({}) through the manual resolver",
        fourth.name, fourth.addr
    ));
    let fourth_addr = fourth.addr;
    backends.push(fourth);
    if wait_for_subchannel(channel, fourth_addr, ready).await {
        act("backend-4 is READY; traffic spreads over 4".into());
    }
    tokio::time::sleep(ACT).await;
    act("traffic stopped".into());
    Ok(())
}
