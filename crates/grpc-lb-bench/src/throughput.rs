//! Throughput, latency and client CPU per RPC of every system, interleaved:
//! each round runs every (endpoints, in flight) case for every system in turn,
//! starting one system later each round so no system always runs first, and
//! each figure is the median over the rounds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::proc::{Pinning, ServerProcess};
use crate::report::{bar_chart, fmt_ratio, markdown_table, median, ratio, BarGroup};
use crate::systems::System;
use crate::Error;

/// How long and how often.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Rounds; each figure is the median over them.
    pub rounds: usize,
    /// Unmeasured time per run, after connecting.
    pub warmup: Duration,
    /// Measured time per run.
    pub measure: Duration,
    /// Endpoint counts.
    pub endpoints: Vec<usize>,
    /// Callers in flight.
    pub inflight: Vec<usize>,
}

/// One case: how many endpoints and callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Case {
    /// Endpoints given to the balancing systems.
    pub endpoints: usize,
    /// Concurrent callers.
    pub inflight: usize,
}

/// The medians of one system in one case.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// RPCs per second.
    pub throughput: f64,
    /// Latency percentiles, µs.
    pub p50: f64,
    /// p99, µs.
    pub p99: f64,
    /// p99.9, µs.
    pub p999: f64,
    /// Client CPU per RPC, µs.
    pub cpu_per_rpc: f64,
    /// Failed RPCs over all rounds.
    pub failed: u64,
}

/// Every run's figures, by case and system, one entry per round.
pub type Runs = BTreeMap<(Case, System), Vec<Figures>>;

/// Runs the plan against a server process with `max(endpoints)` listeners.
pub async fn run(plan: &Plan, pinning: Pinning) -> Result<Runs, Error> {
    let most = plan.endpoints.iter().copied().max().unwrap_or(1);
    let listen = vec!["127.0.0.1:0".parse()?; most];
    let server = ServerProcess::start(&listen, Duration::ZERO, pinning).await?;
    let mut runs = Runs::new();
    let systems = System::ALL;
    for round in 0..plan.rounds {
        for &endpoints in &plan.endpoints {
            for &inflight in &plan.inflight {
                let case = Case {
                    endpoints,
                    inflight,
                };
                for i in 0..systems.len() {
                    let system = systems[(i + round) % systems.len()];
                    let sample = system
                        .run(
                            &server.addrs[..endpoints],
                            inflight,
                            plan.warmup,
                            plan.measure,
                            None,
                        )
                        .await?;
                    let figures = Figures {
                        throughput: sample.throughput(),
                        p50: sample.latency_us(50.0),
                        p99: sample.latency_us(99.0),
                        p999: sample.latency_us(99.9),
                        cpu_per_rpc: sample.cpu_per_rpc_us(),
                        failed: sample.failed_total(),
                    };
                    tracing::info!(
                        round,
                        endpoints,
                        inflight,
                        system = system.name(),
                        rps = figures.throughput as u64,
                        p99_us = figures.p99 as u64,
                        cpu_us = format!("{:.2}", figures.cpu_per_rpc),
                        failed = figures.failed,
                        "run"
                    );
                    runs.entry((case, system)).or_default().push(figures);
                }
            }
        }
    }
    server.stop_gracefully().await?;
    Ok(runs)
}

/// The medians over rounds of one system in one case.
pub fn medians(runs: &[Figures]) -> Figures {
    let m = |f: fn(&Figures) -> f64| {
        median(&runs.iter().map(f).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    };
    Figures {
        throughput: m(|f| f.throughput),
        p50: m(|f| f.p50),
        p99: m(|f| f.p99),
        p999: m(|f| f.p999),
        cpu_per_rpc: m(|f| f.cpu_per_rpc),
        failed: runs.iter().map(|f| f.failed).sum(),
    }
}

/// The Markdown results (medians, and every figure as a ratio to the floor of
/// its case) and two SVG charts, written into `dir`. Returns the Markdown.
pub fn write_results(runs: &Runs, dir: &Path, header: &str) -> Result<String, Error> {
    std::fs::create_dir_all(dir)?;
    let mut cases: Vec<Case> = runs.keys().map(|(c, _)| *c).collect();
    cases.dedup();
    let mut rows = Vec::new();
    let mut throughput_groups = Vec::new();
    let mut cpu_groups = Vec::new();
    for case in &cases {
        let Some(floor) = runs.get(&(*case, System::Floor)).map(|r| medians(r)) else {
            continue;
        };
        let mut tp = BarGroup {
            label: format!("{} ep, {} in flight", case.endpoints, case.inflight),
            bars: Vec::new(),
        };
        let mut cpu = tp.clone();
        for system in System::ALL {
            let Some(rounds) = runs.get(&(*case, system)) else {
                continue;
            };
            let f = medians(rounds);
            rows.push(vec![
                case.endpoints.to_string(),
                case.inflight.to_string(),
                system.name().to_owned(),
                format!("{:.0}", f.throughput),
                fmt_ratio(ratio(f.throughput, floor.throughput)),
                format!("{:.0} ({})", f.p50, fmt_ratio(ratio(f.p50, floor.p50))),
                format!("{:.0} ({})", f.p99, fmt_ratio(ratio(f.p99, floor.p99))),
                format!("{:.0} ({})", f.p999, fmt_ratio(ratio(f.p999, floor.p999))),
                format!("{:.2}", f.cpu_per_rpc),
                fmt_ratio(ratio(f.cpu_per_rpc, floor.cpu_per_rpc)),
                f.failed.to_string(),
            ]);
            tp.bars.push((
                system.name().to_owned(),
                ratio(f.throughput, floor.throughput),
            ));
            cpu.bars.push((
                system.name().to_owned(),
                ratio(f.cpu_per_rpc, floor.cpu_per_rpc),
            ));
        }
        throughput_groups.push(tp);
        cpu_groups.push(cpu);
    }
    let table = markdown_table(
        &[
            "endpoints",
            "in flight",
            "system",
            "RPC/s",
            "× floor",
            "p50 µs (× floor)",
            "p99 µs (× floor)",
            "p99.9 µs (× floor)",
            "CPU µs/RPC",
            "CPU × floor",
            "failed",
        ],
        &rows,
    );
    let mut md = String::new();
    let _ = writeln!(md, "# Throughput, latency and client CPU\n\n{header}\n");
    md.push_str(&table);
    let _ = writeln!(
        md,
        "\n![throughput](throughput.svg)\n\n![client CPU per RPC](cpu.svg)\n\n\
         Raw per-round figures: [throughput-rounds.csv](throughput-rounds.csv)."
    );
    std::fs::write(dir.join("throughput.md"), &md)?;
    std::fs::write(
        dir.join("throughput.svg"),
        bar_chart(
            "Throughput as a ratio to one bare hyper HTTP/2 connection (median of rounds)",
            "× floor",
            &throughput_groups,
            Some(1.0),
        ),
    )?;
    std::fs::write(
        dir.join("cpu.svg"),
        bar_chart(
            "Client CPU per RPC as a ratio to the floor (lower is better)",
            "× floor",
            &cpu_groups,
            Some(1.0),
        ),
    )?;
    let mut csv = String::from(
        "endpoints,inflight,system,round,rps,p50_us,p99_us,p999_us,cpu_us_per_rpc,failed\n",
    );
    for ((case, system), rounds) in runs {
        for (i, f) in rounds.iter().enumerate() {
            let _ = writeln!(
                csv,
                "{},{},{},{i},{:.0},{:.1},{:.1},{:.1},{:.3},{}",
                case.endpoints,
                case.inflight,
                system.name(),
                f.throughput,
                f.p50,
                f.p99,
                f.p999,
                f.cpu_per_rpc,
                f.failed
            );
        }
    }
    std::fs::write(dir.join("throughput-rounds.csv"), csv)?;
    Ok(md)
}
