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

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use grpc_lb::core::SharedError;
use grpc_lb::resolve::Address;
use grpc_lb::{ChannelEvent, ConnectivityState};
use tokio::sync::broadcast::error::RecvError;

use crate::channel::GrpcChannel;
use crate::options::ChannelArgs;
use crate::time::now_rfc3339;
use crate::CliResult;

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// The target: `ipv4:IP:PORT[,...]`, `dns:///host:port`, `host:port`, ...
    target: String,

    #[command(flatten)]
    channel: ChannelArgs,

    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long, value_name = "SECS", value_parser = crate::call::positive_secs)]
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
        ChannelEvent::ServiceConfig { policy, error, .. } => match error {
            Some(error) => format!("service config: unusable, every call fails ({error})"),
            None => format!("service config: applied, policy {policy}"),
        },
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

/// What has been printed, to skip an event that the starting snapshot
/// already showed (subscribing and reading the snapshot race).
#[derive(Debug)]
struct Shown {
    channel: ConnectivityState,
    subchannels: HashMap<Address, ConnectivityState>,
}

impl Shown {
    /// Whether `event` adds nothing to what was printed; records it if not.
    fn seen(&mut self, event: &ChannelEvent) -> bool {
        match event {
            ChannelEvent::State { to, .. } => std::mem::replace(&mut self.channel, *to) == *to,
            ChannelEvent::SubchannelAdded { address, state, .. } => {
                self.subchannels.insert(address.clone(), *state).is_some()
            }
            ChannelEvent::SubchannelState { address, to, .. } => {
                self.subchannels.insert(address.clone(), *to) == Some(*to)
            }
            ChannelEvent::SubchannelRemoved { address, .. } => {
                self.subchannels.remove(address).is_none()
            }
            _ => false,
        }
    }

    /// Prints the channel's state and its subchannels' as they are now.
    fn snapshot(&mut self, channel: &GrpcChannel) {
        let now = now_rfc3339();
        println!("{now} channel: {}", channel.state());
        self.channel = channel.state();
        self.subchannels.clear();
        for sub in channel.subchannels() {
            println!("{now} subchannel {}: {}", sub.address, sub.state);
            self.subchannels.insert(sub.address, sub.state);
        }
    }
}

pub(crate) async fn run(args: WatchArgs) -> CliResult {
    let built = args.channel.build(&args.target, false)?;
    let channel = built.channel;
    let policy = crate::in_force::policy(built.default_config.as_ref(), &args.channel.policy);
    let mut events = channel.events();
    // The worker may have started before the subscription: what it did is in
    // the channel's history (every change) and the subchannels' states.
    let now = now_rfc3339();
    println!(
        "{now} channel: IDLE (target {}, policy {policy})",
        args.target
    );
    let mut shown = Shown {
        channel: ConnectivityState::Idle,
        subchannels: HashMap::new(),
    };
    for state in channel.state_history() {
        if state != shown.channel {
            println!("{now} channel: {} -> {state}", shown.channel);
            shown.channel = state;
        }
    }
    for sub in channel.subchannels() {
        println!("{now} subchannel {}: {}", sub.address, sub.state);
        shown.subchannels.insert(sub.address, sub.state);
    }
    channel.connect();
    let until = async {
        match args.duration {
            Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs)).await,
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
                Ok(event) => {
                    if !shown.seen(&event) {
                        println!("{} {}", now_rfc3339(), describe(&event));
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    println!("{} ({missed} changes missed; now:)", now_rfc3339());
                    shown.snapshot(&channel);
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
    Ok(ExitCode::SUCCESS)
}
