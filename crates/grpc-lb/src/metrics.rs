//! Channel and subchannel metrics for a Prometheus / OpenMetrics registry
//! (feature `prometheus`, on the `prometheus-client` crate).
//!
//! A [`ChannelCollector`] reads, at each scrape, what
//! [`Channel::stats`], [`Channel::state`] and [`Channel::subchannels`] read:
//! nothing is counted twice and the call path does no extra work. It holds
//! its channels weakly, so a registry does not keep a dropped channel (and its
//! worker and connections) alive; a dropped channel's series disappear.
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `grpc_lb_channel_calls_started` | counter | `channel` | channelz `CallsStarted` |
//! | `grpc_lb_channel_calls_succeeded` | counter | `channel` | channelz `CallsSucceeded` |
//! | `grpc_lb_channel_calls_failed` | counter | `channel` | channelz `CallsFailed` |
//! | `grpc_lb_channel_state` | gauge | `channel`, `state` | 1 for the current state, 0 for the four others |
//! | `grpc_lb_subchannel_state` | gauge | `channel`, `address`, `state` | 1, for each subchannel's current state |
//! | `grpc_lb_subchannel_connect_attempts` | counter | `channel`, `address` | connection attempts started |
//!
//! Calls are classified as [`ChannelStats`](crate::ChannelStats) says.
//!
//! ```
//! use grpc_lb::metrics::ChannelCollector;
//! use grpc_lb::Channel;
//! use prometheus_client::registry::Registry;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let channel = Channel::builder("ipv4:127.0.0.1:50051").build()?;
//!
//! let collector = ChannelCollector::new();
//! collector.add("greeter", &channel);
//! let mut registry = Registry::default();
//! registry.register_collector(Box::new(collector.clone()));
//!
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry)?;
//! assert!(text.contains(r#"grpc_lb_channel_calls_started_total{channel="greeter"} 0"#));
//! assert!(text.contains(r#"grpc_lb_channel_state{channel="greeter",state="IDLE"} 1"#));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use grpc_lb_core::ConnectivityState;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::observe::{ChannelStats, SubchannelInfo};
use crate::snapshot::Shared;
use crate::Channel;

/// A call counter's metric name, help text and field of [`ChannelStats`].
type CallCounter = (&'static str, &'static str, fn(&ChannelStats) -> u64);

const STATES: [ConnectivityState; 5] = [
    ConnectivityState::Idle,
    ConnectivityState::Connecting,
    ConnectivityState::Ready,
    ConnectivityState::TransientFailure,
    ConnectivityState::Shutdown,
];

/// Collects the metrics of any number of channels into one set of metric
/// families, labelled by the name each channel was added under. See the
/// [module docs](self).
///
/// Cheap to clone (clones share the channel list): register one clone and
/// keep another to add channels later.
///
/// ```
/// use grpc_lb::metrics::ChannelCollector;
/// use grpc_lb::Channel;
/// use prometheus_client::registry::Registry;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let collector = ChannelCollector::new();
/// let mut registry = Registry::default();
/// registry.register_collector(Box::new(collector.clone()));
///
/// let users = Channel::builder("ipv4:127.0.0.1:50051").build()?;
/// let orders = Channel::builder("ipv4:127.0.0.1:50052").build()?;
/// collector.add("users", &users);
/// collector.add("orders", &orders);
/// assert_eq!(collector.len(), 2);
///
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry)?;
/// assert!(text.contains(r#"grpc_lb_channel_calls_failed_total{channel="users"} 0"#));
/// assert!(text.contains(r#"grpc_lb_channel_calls_failed_total{channel="orders"} 0"#));
/// // Once `orders` and its worker are gone, its series leave the scrape.
/// # drop((users, orders));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct ChannelCollector {
    // Locked when a channel is added and once per scrape; never on a call.
    channels: Arc<Mutex<Vec<Entry>>>,
}

struct Entry {
    name: String,
    channel: Box<dyn Observed>,
}

/// What a scrape reads of one channel, whatever its connection type.
trait Observed: Send + Sync {
    /// `None` once the channel has been dropped.
    fn read(&self) -> Option<Reading>;
}

struct Reading {
    stats: ChannelStats,
    state: ConnectivityState,
    subchannels: Vec<SubchannelInfo>,
}

impl<S: Send + Sync + 'static> Observed for Weak<Shared<S>> {
    fn read(&self) -> Option<Reading> {
        let shared = self.upgrade()?;
        let state = shared.connectivity.borrow().state;
        Some(Reading {
            stats: shared.calls.stats(),
            state,
            subchannels: shared.subchannel_infos(),
        })
    }
}

impl ChannelCollector {
    /// A collector with no channels yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `channel`, labelled `channel="<name>"`. The collector does not keep
    /// the channel alive.
    pub fn add<S: Send + Sync + 'static>(&self, name: impl Into<String>, channel: &Channel<S>) {
        let entry = Entry {
            name: name.into(),
            channel: Box::new(channel.downgrade_shared()),
        };
        self.lock().push(entry);
    }

    /// How many channels are being collected (dropped ones included until the
    /// next scrape forgets them).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no channel has been added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        // A scrape that panicked left the list as it was.
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for ChannelCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.lock().iter().map(|e| e.name.clone()).collect();
        f.debug_struct("ChannelCollector")
            .field("channels", &names)
            .finish()
    }
}

impl Collector for ChannelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let readings: Vec<(String, Reading)> = {
            let mut channels = self.lock();
            let mut readings = Vec::with_capacity(channels.len());
            channels.retain(|entry| match entry.channel.read() {
                Some(reading) => {
                    readings.push((entry.name.clone(), reading));
                    true
                }
                None => false,
            });
            readings
        };

        let calls: [CallCounter; 3] = [
            (
                "grpc_lb_channel_calls_started",
                "Calls handed to the channel.",
                |s| s.calls_started,
            ),
            (
                "grpc_lb_channel_calls_succeeded",
                "Calls answered with a successful response.",
                |s| s.calls_succeeded,
            ),
            (
                "grpc_lb_channel_calls_failed",
                "Calls that failed or were cancelled.",
                |s| s.calls_failed,
            ),
        ];
        for (name, help, value) in calls {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (channel, reading) in &readings {
                let labels = [("channel", channel.as_str())];
                ConstCounter::new(value(&reading.stats)).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "grpc_lb_channel_state",
            "The channel's connectivity state: 1 for the current one.",
            None,
            MetricType::Gauge,
        )?;
        for (channel, reading) in &readings {
            for state in STATES {
                let labels = [("channel", channel.as_str()), ("state", state.as_str())];
                let current = i64::from(state == reading.state);
                ConstGauge::new(current).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "grpc_lb_subchannel_state",
            "Each subchannel's current connectivity state.",
            None,
            MetricType::Gauge,
        )?;
        for (channel, reading) in &readings {
            for subchannel in &reading.subchannels {
                let address = subchannel.address.to_string();
                let labels = [
                    ("channel", channel.as_str()),
                    ("address", address.as_str()),
                    ("state", subchannel.state.as_str()),
                ];
                ConstGauge::new(1i64).encode(family.encode_family(&labels)?)?;
            }
        }

        let mut family = encoder.encode_descriptor(
            "grpc_lb_subchannel_connect_attempts",
            "Connection attempts each subchannel has started.",
            None,
            MetricType::Counter,
        )?;
        for (channel, reading) in &readings {
            for subchannel in &reading.subchannels {
                let address = subchannel.address.to_string();
                let labels = [("channel", channel.as_str()), ("address", address.as_str())];
                ConstCounter::new(subchannel.connect_attempts)
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grpc_lb_helloworld::proto::{GreeterClient, GreeterServer, HelloRequest};
    use grpc_lb_helloworld::NamedGreeter;
    use prometheus_client::registry::Registry;

    async fn greeter() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(GreeterServer::new(NamedGreeter::new("a")))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    fn scrape(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[tokio::test]
    async fn counts_calls_and_states_of_a_live_channel() {
        let addr = greeter().await;
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let channel = Channel::builder(format!("ipv4:{addr},{dead}"))
            .policy("round_robin")
            .build()
            .unwrap();
        let collector = ChannelCollector::new();
        collector.add("greeter", &channel);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(collector.clone()));

        let mut client = GreeterClient::new(channel.clone());
        for _ in 0..3 {
            client.say_hello(HelloRequest::default()).await.unwrap();
        }
        let text = scrape(&registry);
        for line in [
            r#"grpc_lb_channel_calls_started_total{channel="greeter"} 3"#,
            r#"grpc_lb_channel_calls_succeeded_total{channel="greeter"} 3"#,
            r#"grpc_lb_channel_calls_failed_total{channel="greeter"} 0"#,
            r#"grpc_lb_channel_state{channel="greeter",state="READY"} 1"#,
            r#"grpc_lb_channel_state{channel="greeter",state="IDLE"} 0"#,
            &format!(
                r#"grpc_lb_subchannel_state{{channel="greeter",address="{addr}",state="READY"}} 1"#
            ),
            &format!(
                r#"grpc_lb_subchannel_connect_attempts_total{{channel="greeter",address="{addr}"}} 1"#
            ),
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // Each family once, however many channels: valid exposition.
        assert_eq!(text.matches("# TYPE grpc_lb_channel_state ").count(), 1);
    }

    #[tokio::test]
    async fn a_dropped_channel_leaves_the_scrape() {
        let collector = ChannelCollector::new();
        let kept = Channel::builder("ipv4:127.0.0.1:1").build().unwrap();
        let dropped = Channel::builder("ipv4:127.0.0.1:2").build().unwrap();
        collector.add("kept", &kept);
        collector.add("dropped", &dropped);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(collector.clone()));

        drop(dropped);
        // The worker holds the shared state until it notices the last clone is
        // gone; wait for that rather than for a time.
        while collector.lock()[1].channel.read().is_some() {
            tokio::task::yield_now().await;
        }
        let text = scrape(&registry);
        assert!(text.contains(r#"channel="kept""#));
        assert!(!text.contains(r#"channel="dropped""#));
        assert_eq!(collector.len(), 1);
    }
}
