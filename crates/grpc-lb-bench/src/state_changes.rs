//! Worker CPU per subchannel state change, at a few endpoint counts: an
//! in-memory channel whose connections can be killed one at a time; each kill
//! makes the channel's worker handle the loss and the reconnection (a handful
//! of state changes, all counted from the channel's events). The figure is
//! the process CPU over the state changes, on a runtime of one thread of its
//! own, so that it is the worker's cost plus a constant per kill.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use grpc_lb::balance::PolicyRegistry;
use grpc_lb::core::ResolveNow;
use grpc_lb::reconnect::{Reconnect, ReconnectConfig};
use grpc_lb::resolve::{Address, Endpoint, ManualHandle, ManualResolver, ResolverDiscover};
use grpc_lb::{Channel, ChannelEvent, ChannelOptions, ConnectivityState};
use tokio::sync::broadcast;
use tower_service::Service;

use crate::inmem::{endpoints, wait_until};
use crate::proc::process_cpu;
use crate::report::markdown_table;
use crate::Error;

/// One in-memory connection's fate, shared with the bench.
#[derive(Debug, Default)]
struct Fate {
    dead: AtomicBool,
    waker: AtomicWaker,
}

/// A connection that answers at once until it is killed; then its
/// `poll_ready` fails, as a closed HTTP/2 connection's does.
#[derive(Clone, Debug)]
pub struct KillableConnection {
    fate: Arc<Fate>,
}

impl<B> Service<http::Request<B>> for KillableConnection {
    type Response = http::Response<()>;
    type Error = std::io::Error;
    type Future = Ready<Result<http::Response<()>, std::io::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        self.fate.waker.register(cx.waker());
        if self.fate.dead.load(Ordering::Acquire) {
            return Poll::Ready(Err(std::io::Error::other("killed")));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: http::Request<B>) -> Self::Future {
        ready(Ok(http::Response::new(())))
    }
}

/// Connects to any address at once, keeping each connection's fate.
#[derive(Clone, Debug, Default)]
struct KillableConnector {
    fates: Arc<Mutex<HashMap<Address, Arc<Fate>>>>,
}

impl KillableConnector {
    fn kill(&self, address: &Address) {
        let fates = self.fates.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fate) = fates.get(address) {
            fate.dead.store(true, Ordering::Release);
            fate.waker.wake();
        }
    }
}

impl Service<Address> for KillableConnector {
    type Response = KillableConnection;
    type Error = Infallible;
    type Future = Ready<Result<KillableConnection, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, address: Address) -> Self::Future {
        let fate = Arc::new(Fate::default());
        self.fates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(address, fate.clone());
        ready(Ok(KillableConnection { fate }))
    }
}

/// What one measurement found.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// State changes seen (the channel's and its subchannels').
    pub changes: u64,
    /// Process CPU per state change.
    pub per_change: Duration,
}

fn channel(
    policy: &str,
    connector: KillableConnector,
) -> Result<
    (
        Channel<KillableConnection>,
        ManualHandle,
        impl std::future::Future<Output = ()> + Send + 'static,
    ),
    Error,
> {
    let (resolver, handle) = ManualResolver::new("kill");
    let discover =
        ResolverDiscover::new(resolver.stream(ResolveNow::new()), move |e: &Endpoint| {
            Reconnect::with_config(
                connector.clone(),
                e.address.clone(),
                ReconnectConfig::default(),
            )
        });
    let policy = PolicyRegistry::with_defaults().build(policy)?;
    let (channel, worker) =
        Channel::pair::<_, _, _, _, http::Request<()>>(discover, policy, ChannelOptions::default());
    Ok((channel, handle, worker))
}

/// Counts state-change events until `done` accepts one.
async fn count_until(
    events: &mut broadcast::Receiver<ChannelEvent>,
    mut done: impl FnMut(&ChannelEvent) -> bool,
) -> Result<u64, Error> {
    let mut changes = 0;
    loop {
        let event = events.recv().await?;
        let change = matches!(
            event,
            ChannelEvent::State { .. } | ChannelEvent::SubchannelState { .. }
        );
        changes += u64::from(change);
        if done(&event) {
            return Ok(changes);
        }
    }
}

/// `kills` kills under `policy` with `n` endpoints, each waited for until the
/// channel has a READY connection again.
async fn measure(policy: &str, n: usize, kills: usize) -> Result<Cost, Error> {
    let connector = KillableConnector::default();
    let (channel, handle, worker) = channel(policy, connector.clone())?;
    tokio::spawn(worker);
    let set = endpoints(n);
    let first = set[0].address.clone();
    handle.reset(set);
    channel.connect();
    let ready = match policy {
        "pick_first" => 1,
        _ => n,
    };
    wait_until(&channel, |c| {
        c.state() == ConnectivityState::Ready && c.ready_addresses().len() == ready
    })
    .await?;
    let mut events = channel.events();
    let started = process_cpu();
    let mut changes = 0;
    for i in 0..kills {
        // pick_first: its one connection; round_robin: each in turn.
        let victim = match policy {
            "pick_first" => first.clone(),
            _ => endpoints(n)[i % n].address.clone(),
        };
        connector.kill(&victim);
        if policy == "pick_first" {
            // Losing its connection makes pick_first IDLE; a request (here
            // `connect`) starts it again.
            changes += count_until(&mut events, |e| {
                matches!(
                    e,
                    ChannelEvent::State {
                        to: ConnectivityState::Idle,
                        ..
                    }
                )
            })
            .await?;
            channel.connect();
        }
        changes += count_until(&mut events, |e| {
            matches!(e, ChannelEvent::SubchannelState { address, to: ConnectivityState::Ready, .. } if *address == victim)
        })
        .await?;
    }
    let cpu = process_cpu().saturating_sub(started);
    Ok(Cost {
        changes,
        per_change: cpu / changes.max(1) as u32,
    })
}

/// Measures `policy` at each endpoint count, on a one-thread runtime of its
/// own.
pub fn cost(policy: &str, sizes: &[usize], kills: usize) -> Result<Vec<Cost>, Error> {
    let sizes = sizes.to_vec();
    let policy = policy.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let mut costs = Vec::new();
            for n in sizes {
                costs.push(measure(&policy, n, kills).await?);
            }
            Ok::<_, Error>(costs)
        })
    })
    .join()
    .map_err(|_| "the state-change run panicked")?
}

/// The Markdown table of the state-change costs at `sizes` endpoints.
pub fn run(sizes: &[usize], kills: usize, policies: &[String]) -> Result<String, Error> {
    let mut rows = Vec::new();
    for policy in policies {
        for (n, cost) in sizes.iter().zip(cost(policy, sizes, kills)?) {
            rows.push(vec![
                format!("worker CPU per state change ({policy}, {n} endpoints, {kills} connections lost and regained)"),
                format!("{:.1} µs", cost.per_change.as_secs_f64() * 1e6),
                cost.changes.to_string(),
            ]);
        }
    }
    let mut md = String::from("## Worker CPU per state change\n\n");
    md.push_str(&markdown_table(
        &["measurement", "result", "state changes counted"],
        &rows,
    ));
    Ok(md)
}
