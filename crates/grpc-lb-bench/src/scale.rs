//! 10,000 endpoints from the manual resolver: memory per idle endpoint, the
//! time to apply a 10,000-address Reset, the time to apply one more update at
//! that size, the pick cost through the channel, and endpoint churn (add and
//! remove cycles) with memory and task count read before and after.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use grpc_lb::resolve::{Endpoint, ManualHandle, ManualResolver, Registry};
use grpc_lb::ConnectivityState;
use grpc_lb_helloworld::NamedGreeter;

use crate::heap::live_bytes;
use crate::inmem::{call_once, endpoints, mem_channel, nth_addr, wait_until};
use crate::proc::{process_cpu, rss_bytes};
use crate::report::markdown_table;
use crate::Error;

type LiveChannel = grpc_lb::Channel<grpc_lb::connect::Http2Connection<tonic::body::Body>>;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Endpoints in the big Reset.
    pub endpoints: usize,
    /// Calls timed through the in-memory channel.
    pub calls: u64,
    /// Add/remove cycles.
    pub cycles: usize,
}

fn tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// A pick_first channel on a manual resolver whose first address is a live
/// in-process server, so it is READY and every other endpoint stays IDLE.
pub async fn live_pick_first() -> Result<(LiveChannel, ManualHandle, SocketAddr), Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let live = listener.local_addr()?;
    tokio::spawn(grpc_lb_helloworld::serve(
        listener,
        NamedGreeter::new("live"),
        std::future::pending(),
    ));
    let (resolver, handle) = ManualResolver::new("scale");
    let mut registry = Registry::with_defaults();
    registry.register(resolver);
    let channel = grpc_lb::Channel::builder("scale:///bench")
        .resolver_registry(registry)
        .policy("pick_first")
        .build()?;
    handle.reset([Endpoint::new(live)]);
    channel.connect();
    let mut state = channel.watch_state();
    state
        .wait_for(|c| c.state == ConnectivityState::Ready)
        .await?;
    Ok((channel, handle, live))
}

/// A wall-clock time and the process CPU time within it: on a machine
/// shared with other work the first stretches with the load, the second
/// much less (the harness and the channel share one thread).
fn elapsed_and_cpu(elapsed: Duration, cpu: Duration) -> String {
    format!(
        "{:.1} ms (CPU {:.1} ms)",
        elapsed.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e3
    )
}

/// Runs the scale measurements and returns their Markdown.
pub async fn run(plan: &Plan) -> Result<String, Error> {
    let n = plan.endpoints.max(2);
    let mut rows = Vec::new();

    // Idle endpoints: memory and the Reset.
    let (channel, handle, live) = live_pick_first().await?;
    let (rss0, heap0, tasks0) = (rss_bytes(), live_bytes(), tasks());
    let mut set = vec![Endpoint::new(live)];
    set.extend(endpoints(n - 1));
    let (started, cpu0) = (Instant::now(), process_cpu());
    handle.reset(set);
    wait_until(&channel, |c| c.subchannels().len() == n).await?;
    let (reset, reset_cpu) = (started.elapsed(), process_cpu().saturating_sub(cpu0));
    let (rss1, heap1, tasks1) = (rss_bytes(), live_bytes(), tasks());
    let per_endpoint =
        |before: u64, after: u64| after.saturating_sub(before) as f64 / (n - 1) as f64;
    if heap1 > 0 {
        rows.push(vec![
            format!("heap per idle endpoint (pick_first, {n} endpoints, live bytes counted by the allocator)"),
            format!("{:.0} B", per_endpoint(heap0 as u64, heap1 as u64)),
            "≤ 2048 B".into(),
        ]);
    }
    rows.push(vec![
        format!("memory per idle endpoint (pick_first, {n} endpoints, RSS delta)"),
        format!("{:.0} B", per_endpoint(rss0, rss1)),
        "≤ 2048 B".into(),
    ]);
    rows.push(vec![
        format!("tasks added by {n} idle endpoints"),
        tasks1.saturating_sub(tasks0).to_string(),
        "—".into(),
    ]);
    rows.push(vec![
        format!("apply a {n}-address Reset (pick_first, until every subchannel exists)"),
        elapsed_and_cpu(reset, reset_cpu),
        "—".into(),
    ]);
    let started = Instant::now();
    handle.add([Endpoint::new(nth_addr(n + 1))]);
    wait_until(&channel, |c| c.subchannels().len() == n + 1).await?;
    rows.push(vec![
        format!("apply one Add at {n} endpoints"),
        format!("{:.2} ms", started.elapsed().as_secs_f64() * 1e3),
        "—".into(),
    ]);
    drop(channel);

    // Ready endpoints in memory: the Reset to all READY, one update, the pick.
    for size in [10, n] {
        let (mut channel, handle, worker) = mem_channel("round_robin")?;
        tokio::spawn(worker);
        let (started, cpu0) = (Instant::now(), process_cpu());
        handle.reset(endpoints(size));
        wait_until(&channel, |c| c.ready_addresses().len() == size).await?;
        let (reset, reset_cpu) = (started.elapsed(), process_cpu().saturating_sub(cpu0));
        let started = Instant::now();
        handle.add([Endpoint::new(nth_addr(size + 1))]);
        wait_until(&channel, |c| c.ready_addresses().len() == size + 1).await?;
        let one = started.elapsed();
        let mut cx = Context::from_waker(Waker::noop());
        let started = Instant::now();
        let mut answered = 0u64;
        for _ in 0..plan.calls {
            answered += u64::from(call_once(&mut channel, &mut cx));
        }
        let per_call = started.elapsed().as_nanos() as f64 / plan.calls.max(1) as f64;
        if answered != plan.calls {
            return Err(format!(
                "{} of {} in-memory calls unanswered",
                plan.calls - answered,
                plan.calls
            )
            .into());
        }
        rows.push(vec![
            format!("apply a {size}-address Reset (round_robin, in-memory, until all READY)"),
            elapsed_and_cpu(reset, reset_cpu),
            "—".into(),
        ]);
        rows.push(vec![
            format!("apply one Add at {size} READY endpoints (round_robin)"),
            format!("{:.2} ms", one.as_secs_f64() * 1e3),
            "—".into(),
        ]);
        rows.push(vec![
            format!(
                "one call through Channel::poll_ready+call, {} endpoints (wall clock)",
                size + 1
            ),
            format!("{per_call:.0} ns"),
            "≤ 200 ns, flat".into(),
        ]);
    }

    let mut md = String::from("## Scale\n\n");
    md.push_str(&markdown_table(&["measurement", "result", "target"], &rows));
    md.push('\n');
    md.push_str(&churn(plan.cycles).await?);
    Ok(md)
}

/// Add then remove one endpoint, `cycles` times, each change waited for;
/// memory and task count before, after a tenth, and after all.
pub async fn churn(cycles: usize) -> Result<String, Error> {
    let (channel, handle, _live) = live_pick_first().await?;
    let mut rows = Vec::new();
    let mut record = |label: String| {
        rows.push(vec![
            label,
            format!("{:.1} MiB", rss_bytes() as f64 / (1 << 20) as f64),
            format!("{:.0} KiB", live_bytes() as f64 / 1024.0),
            tasks().to_string(),
            channel.subchannels().len().to_string(),
        ]);
    };
    record("before".into());
    let started = Instant::now();
    for i in 0..cycles {
        let endpoint = Endpoint::new(nth_addr(i));
        let address = endpoint.address.clone();
        handle.add([endpoint]);
        wait_until(&channel, |c| c.subchannels().len() == 2).await?;
        handle.remove([address]);
        wait_until(&channel, |c| c.subchannels().len() == 1).await?;
        if i + 1 == cycles / 10 || i + 1 == cycles {
            record(format!("after {} cycles", i + 1));
        }
    }
    let elapsed: Duration = started.elapsed();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Endpoint churn: {cycles} add/remove cycles\n\n\
         One pick_first channel, READY on a live server; each cycle adds a new \
         address, waits until the channel has its subchannel, removes it and waits \
         until it is gone ({:.1} s in all, {:.0} µs per cycle).\n",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / cycles.max(1) as f64
    );
    md.push_str(&markdown_table(
        &[
            "when",
            "RSS",
            "live heap",
            "tokio tasks alive",
            "subchannels",
        ],
        &rows,
    ));
    Ok(md)
}
