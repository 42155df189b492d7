//! `grpc-lb watch`: the live connectivity state of a channel and of each of
//! its subchannels, one timestamped line per change:
//!
//! ```text
//! 2026-11-21T11:52:03.120Z channel: IDLE -> CONNECTING
//! 2026-11-21T11:52:03.121Z subchannel 127.0.0.1:50051: added (IDLE)
//! 2026-11-21T11:52:03.121Z subchannel 127.0.0.1:50051: IDLE -> CONNECTING
//! 2026-11-21T11:52:03.124Z subchannel 127.0.0.1:50051: CONNECTING -> READY
//! 2026-11-21T11:52:03.124Z channel: CONNECTING -> READY
//! ```
//!
//! The channel is asked to connect at once (grpc-go's `Connect`); no calls are
//! made. It runs until interrupted, or for `--duration` seconds.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use grpc_lb::core::SharedError;
use grpc_lb::ChannelEvent;
use tokio::sync::broadcast::error::RecvError;

use crate::channel::ChannelArgs;
use crate::time::now_rfc3339;
use crate::CliResult;

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// The target: `ipv4:IP:PORT[,...]`, `dns:///host:port`, `host:port`, ...
    target: String,

    #[command(flatten)]
    channel: ChannelArgs,

    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
}

/// One printed line for an event, without its timestamp.
pub(crate) fn describe(event: &ChannelEvent) -> String {
    let mut line = match event {
        ChannelEvent::State { from, to, .. } => format!("channel: {from} -> {to}"),
        ChannelEvent::SubchannelAdded { address, state, .. } => {
            format!("subchannel {address}: added ({state})")
        }
        ChannelEvent::SubchannelState {
            address, from, to, ..
        } => format!("subchannel {address}: {from} -> {to}"),
        ChannelEvent::SubchannelRemoved { address, .. } => {
            format!("subchannel {address}: removed")
        }
        other => format!("{other:?}"),
    };
    if let Some(error) = failure_cause(event) {
        let _ = write!(line, " ({error})");
    }
    line
}

/// The cause to print: only on entering TRANSIENT_FAILURE.
fn failure_cause(event: &ChannelEvent) -> Option<&SharedError> {
    use grpc_lb::ConnectivityState::TransientFailure;
    match event {
        ChannelEvent::State {
            to: TransientFailure,
            last_error,
            ..
        }
        | ChannelEvent::SubchannelState {
            to: TransientFailure,
            last_error,
            ..
        } => last_error.as_ref(),
        _ => None,
    }
}

pub(crate) async fn run(args: WatchArgs) -> CliResult {
    let (channel, policy) = args.channel.build(&args.target, false)?;
    let mut events = channel.events();
    println!(
        "{} channel: {} (target {}, policy {policy})",
        now_rfc3339(),
        channel.state(),
        args.target
    );
    for sub in channel.subchannels() {
        println!(
            "{} subchannel {}: {}",
            now_rfc3339(),
            sub.address,
            sub.state
        );
    }
    channel.connect();
    let until = async {
        match args.duration {
            Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(until);
    loop {
        tokio::select! {
            _ = &mut until => break,
            event = events.recv() => match event {
                Ok(event) => println!("{} {}", now_rfc3339(), describe(&event)),
                Err(RecvError::Lagged(missed)) => {
                    println!("{} ({missed} changes missed; now:)", now_rfc3339());
                    println!("{} channel: {}", now_rfc3339(), channel.state());
                    for sub in channel.subchannels() {
                        println!("{} subchannel {}: {}", now_rfc3339(), sub.address, sub.state);
                    }
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
    Ok(ExitCode::SUCCESS)
}
