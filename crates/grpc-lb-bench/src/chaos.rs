//! Failures under load, with counts: a rolling restart of four backends, one
//! backend 50 ms slower than the rest, and a thousand channels reconnecting
//! to one restarted server.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use grpc_lb::service_config::ServiceConfig;
use grpc_lb::ConnectivityState;
use grpc_lb_helloworld::proto::GreeterClient;
use grpc_lb_retry::RetryLayer;
use tower::Layer as _;

use crate::load::{window, Sample};
use crate::proc::{Pinning, ServerProcess};
use crate::report::{bar_chart, markdown_table, median, BarGroup};
use crate::systems::{grpc_lb_channel, tonic_balance_list, Policy, System};
use crate::Error;

/// Retry `UNAVAILABLE` up to 5 attempts, 10 ms first backoff: what a service
/// owner would configure for a fleet that restarts.
const RETRY_CONFIG: &str = r#"{"methodConfig": [{
    "name": [{"service": "helloworld.Greeter"}],
    "retryPolicy": {
        "maxAttempts": 5, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]
    }
}]}"#;

/// How long and how hard.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Callers in flight during the restart and slow-backend runs.
    pub inflight: usize,
    /// Time between one backend's restart and the next one's.
    pub restart_every: Duration,
    /// Measured time per slow-backend run.
    pub measure: Duration,
    /// Rounds of the slow-backend runs (medians).
    pub rounds: usize,
    /// Channels in the reconnect storm.
    pub channels: usize,
    /// How long the storm's server stays down.
    pub down_for: Duration,
    /// How long the storm is watched after the kill.
    pub watch_for: Duration,
}

/// Runs every scenario; writes `reconnect-storm.svg` into `dir` and returns
/// the Markdown.
pub async fn run(plan: &Plan, pinning: Pinning, dir: &Path) -> Result<String, Error> {
    let mut md = String::new();
    md.push_str(&rolling_restart(plan, pinning).await?);
    md.push('\n');
    md.push_str(&slow_backend(plan, pinning).await?);
    md.push('\n');
    md.push_str(&reconnect_storm(plan, pinning, dir).await?);
    Ok(md)
}

#[derive(Debug, Clone, Copy)]
enum Client {
    TonicBalanceList,
    GrpcLb(Policy, bool),
}

impl Client {
    fn name(self) -> String {
        match self {
            Client::TonicBalanceList => "tonic balance_list".into(),
            Client::GrpcLb(policy, false) => format!("grpc-lb {}", policy.name()),
            Client::GrpcLb(policy, true) => format!("grpc-lb {} + retries", policy.name()),
        }
    }

    async fn window(
        self,
        endpoints: &[SocketAddr],
        inflight: usize,
        length: Duration,
    ) -> Result<Sample, Error> {
        Ok(match self {
            Client::TonicBalanceList => {
                let client = GreeterClient::new(tonic_balance_list(endpoints)?);
                window(&client, inflight, length, None).await
            }
            Client::GrpcLb(policy, false) => {
                let client = GreeterClient::new(grpc_lb_channel(policy, endpoints)?);
                window(&client, inflight, length, None).await
            }
            Client::GrpcLb(policy, true) => {
                let config: ServiceConfig = RETRY_CONFIG.parse()?;
                let channel = grpc_lb_channel(policy, endpoints)?;
                let client = GreeterClient::new(RetryLayer::new(config).layer(channel));
                window(&client, inflight, length, None).await
            }
        })
    }
}

/// Four single-listener server processes; each in turn is stopped (SIGTERM
/// and drained, or SIGKILLed) and started again on its port, under load.
async fn rolling_restart(plan: &Plan, pinning: Pinning) -> Result<String, Error> {
    let clients = [
        Client::TonicBalanceList,
        Client::GrpcLb(Policy::RoundRobin, false),
        Client::GrpcLb(Policy::RoundRobin, true),
        Client::GrpcLb(Policy::P2c, true),
    ];
    let mut rows = Vec::new();
    for kill in [false, true] {
        for client in clients {
            let mut servers = Vec::new();
            for _ in 0..4 {
                servers.push(
                    ServerProcess::start(&["127.0.0.1:0".parse()?], Duration::ZERO, pinning)
                        .await?,
                );
            }
            let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addrs[0]).collect();
            let length = plan.restart_every * 6;
            let restarts = async {
                let mut restarted = Vec::new();
                tokio::time::sleep(plan.restart_every).await;
                for server in servers {
                    let addr = server.addrs[0];
                    if kill {
                        server.kill().await?;
                    } else {
                        server.stop_gracefully().await?;
                    }
                    restarted.push(ServerProcess::start(&[addr], Duration::ZERO, pinning).await?);
                    tokio::time::sleep(plan.restart_every).await;
                }
                Ok::<_, Error>(restarted)
            };
            let (sample, restarted) =
                tokio::join!(client.window(&addrs, plan.inflight, length), restarts);
            let (sample, restarted) = (sample?, restarted?);
            for server in restarted {
                server.stop_gracefully().await?;
            }
            let failures = if sample.failed.is_empty() {
                "—".to_owned()
            } else {
                sample
                    .failed
                    .iter()
                    .map(|(code, n)| format!("{code} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            tracing::info!(
                client = client.name(),
                kill,
                ok = sample.ok,
                failed = sample.failed_total(),
                "rolling restart"
            );
            rows.push(vec![
                if kill { "SIGKILL" } else { "SIGTERM (drain)" }.to_owned(),
                client.name(),
                sample.ok.to_string(),
                sample.failed_total().to_string(),
                failures,
            ]);
        }
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Rolling restart of 4 backends under load\n\n\
         {} callers in flight for {:.0} s; every {:.1} s one backend process is stopped \
         and started again on the same port. Target: 0 failed RPCs with retries on.\n",
        plan.inflight,
        (plan.restart_every * 6).as_secs_f64(),
        plan.restart_every.as_secs_f64()
    );
    md.push_str(&markdown_table(
        &[
            "stop",
            "client",
            "OK RPCs",
            "failed RPCs",
            "failed by status",
        ],
        &rows,
    ));
    Ok(md)
}

/// Four endpoints, the first 50 ms slower, against four fast ones: the
/// latency each policy gives.
async fn slow_backend(plan: &Plan, pinning: Pinning) -> Result<String, Error> {
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let slow = ServerProcess::start(&[any], Duration::from_millis(50), pinning).await?;
    let fast = ServerProcess::start(&[any; 3], Duration::ZERO, pinning).await?;
    let all_fast = ServerProcess::start(&[any; 4], Duration::ZERO, pinning).await?;
    let mut with_slow = slow.addrs.clone();
    with_slow.extend(&fast.addrs);
    let systems = [
        System::GrpcLb(Policy::P2c),
        System::GrpcLb(Policy::RoundRobin),
        System::GrpcLb(Policy::PickFirst),
        System::TonicBalanceList,
        System::TowerP2cBuffer,
    ];
    // (RPC/s, p50, p99, p99.9) per run
    type Run = (f64, f64, f64, f64);
    let mut figures: BTreeMap<(System, bool), Vec<Run>> = BTreeMap::new();
    for _ in 0..plan.rounds {
        for system in systems {
            for slow_one in [false, true] {
                let endpoints = if slow_one {
                    &with_slow
                } else {
                    &all_fast.addrs
                };
                let s = system
                    .run(
                        endpoints,
                        plan.inflight,
                        plan.measure / 3,
                        plan.measure,
                        None,
                    )
                    .await?;
                figures.entry((system, slow_one)).or_default().push((
                    s.throughput(),
                    s.latency_us(50.0),
                    s.latency_us(99.0),
                    s.latency_us(99.9),
                ));
            }
        }
    }
    let med = |v: &[Run], f: fn(&Run) -> f64| {
        median(&v.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    };
    let mut rows = Vec::new();
    for system in systems {
        let fast_p99 = med(&figures[&(system, false)], |f| f.2);
        for slow_one in [false, true] {
            let v = &figures[&(system, slow_one)];
            let p99 = med(v, |f| f.2);
            rows.push(vec![
                system.name().to_owned(),
                if slow_one {
                    "1 of 4 +50 ms"
                } else {
                    "all fast"
                }
                .to_owned(),
                format!("{:.0}", med(v, |f| f.0)),
                format!("{:.2}", med(v, |f| f.1) / 1e3),
                format!("{:.2}", p99 / 1e3),
                format!("{:.2}", med(v, |f| f.3) / 1e3),
                format!("{:.2}×", p99 / fast_p99),
            ]);
        }
    }
    slow.stop_gracefully().await?;
    fast.stop_gracefully().await?;
    all_fast.stop_gracefully().await?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## One backend 50 ms slower\n\n\
         {} callers in flight, {:.1} s measured per run, median of {} rounds. The slow \
         backend is the first address (so pick_first uses it). Target: p99 under p2c \
         with the slow backend within 1.5× of its all-fast p99.\n",
        plan.inflight,
        plan.measure.as_secs_f64(),
        plan.rounds
    );
    md.push_str(&markdown_table(
        &[
            "client",
            "backends",
            "RPC/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "p99 × all-fast",
        ],
        &rows,
    ));
    Ok(md)
}

/// `channels` round_robin channels on one server; the server is SIGKILLed,
/// started again after `down_for`, and the channels' connection attempts are
/// counted in 100 ms buckets.
async fn reconnect_storm(plan: &Plan, pinning: Pinning, dir: &Path) -> Result<String, Error> {
    let server = ServerProcess::start(&["127.0.0.1:0".parse()?], Duration::ZERO, pinning).await?;
    let addr = server.addrs[0];
    let mut channels = Vec::with_capacity(plan.channels);
    for _ in 0..plan.channels {
        channels.push(grpc_lb_channel(Policy::RoundRobin, &[addr])?);
    }
    for channel in &channels {
        let mut state = channel.watch_state();
        state
            .wait_for(|c| c.state == ConnectivityState::Ready)
            .await?;
    }
    let attempts = |channels: &[grpc_lb::Channel<_>]| -> (u64, usize) {
        let mut total = 0;
        let mut ready = 0;
        for channel in channels {
            for sub in channel.subchannels() {
                total += sub.connect_attempts;
            }
            ready += usize::from(channel.state() == ConnectivityState::Ready);
        }
        (total, ready)
    };
    let (before, _) = attempts(&channels);
    let bucket = Duration::from_millis(100);
    let killed = Instant::now();
    server.kill().await?;
    let mut restarted: Option<ServerProcess> = None;
    let mut per_bucket: Vec<(u64, usize)> = Vec::new();
    let mut last = before;
    let mut all_ready_at = None;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + bucket, bucket);
    while killed.elapsed() < plan.watch_for {
        ticks.tick().await;
        if restarted.is_none() && killed.elapsed() >= plan.down_for {
            restarted = Some(ServerProcess::start(&[addr], Duration::ZERO, pinning).await?);
        }
        let (total, ready) = attempts(&channels);
        per_bucket.push((total - last, ready));
        last = total;
        if restarted.is_some() && ready == channels.len() && all_ready_at.is_none() {
            all_ready_at = Some(killed.elapsed());
        }
    }
    drop(channels);
    if let Some(server) = restarted {
        server.stop_gracefully().await?;
    }
    let groups: Vec<BarGroup> = per_bucket
        .iter()
        .enumerate()
        .map(|(i, (n, _))| BarGroup {
            label: if i % 10 == 9 {
                format!("{:.0} s", (i + 1) as f64 / 10.0)
            } else {
                String::new()
            },
            bars: vec![("connect attempts per 100 ms".to_owned(), *n as f64)],
        })
        .collect();
    std::fs::write(
        dir.join("reconnect-storm.svg"),
        bar_chart(
            &format!(
                "{} channels: connection attempts per 100 ms after the server is killed (back at {:.0} s)",
                plan.channels,
                plan.down_for.as_secs_f64()
            ),
            "attempts",
            &groups,
            None,
        ),
    )?;
    let total: u64 = per_bucket.iter().map(|b| b.0).sum();
    let busiest = per_bucket.iter().map(|b| b.0).max().unwrap_or(0);
    let busiest_after_first = per_bucket.iter().skip(2).map(|b| b.0).max().unwrap_or(0);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## {} channels reconnecting to one restarted server\n\n\
         {} round_robin channels, each READY on the same server process, which is \
         SIGKILLed and started again on its port {:.0} s later. Connection attempts \
         (channelz `connect_attempts`, summed over channels) per 100 ms bucket: \
         ![storm](reconnect-storm.svg)\n\n\
         - attempts in {:.0} s: {total} ({:.1} per channel)\n\
         - busiest bucket: {busiest} (the immediate reconnect of every channel when its \
         connection drops, which gRPC does without backoff); busiest bucket after the \
         first 200 ms: {busiest_after_first}\n\
         - every channel READY again {}\n\n\
         Buckets (attempts, channels READY): {}\n",
        plan.channels,
        plan.channels,
        plan.down_for.as_secs_f64(),
        plan.watch_for.as_secs_f64(),
        total as f64 / plan.channels as f64,
        match all_ready_at {
            Some(t) => format!("{:.2} s after the kill", t.as_secs_f64()),
            None => "— not within the watch".to_owned(),
        },
        per_bucket
            .iter()
            .map(|(n, r)| format!("{n}/{r}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_config_parses() {
        RETRY_CONFIG.parse::<ServiceConfig>().unwrap();
    }
}
