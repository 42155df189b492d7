//! The out-of-band client: one `StreamCoreMetrics` stream per connection, at
//! the smallest interval any subscriber asked for (gRFC A51; grpc-go
//! `orca/producer.go`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use grpc_lb_backoff::BackoffConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::body::Body;
use tonic::client::GrpcService;

use crate::{BoxError, OrcaLoadReport};

mod stream;
#[cfg(test)]
mod tests;

/// The latest report of a connection, shared by every subscriber; `None`
/// until the first one arrives.
pub type LatestReport = Option<Arc<OrcaLoadReport>>;

/// Where a connection's out-of-band reporting stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OobStreamState {
    /// Nobody subscribes: no stream is open.
    Idle,
    /// A stream asking for a report every `interval` is being opened or is open.
    Streaming {
        /// The interval requested from the server.
        interval: Duration,
    },
    /// The last stream failed before any report; the next starts after `delay`.
    BackingOff {
        /// How long this backoff lasts.
        delay: Duration,
    },
    /// The server does not implement `OpenRcaService`: no stream is tried
    /// again on this connection (gRFC A51).
    Unimplemented,
    /// The connection's `poll_ready` failed, which in tower means it is gone:
    /// no stream is tried again on it.
    ConnectionClosed,
}

impl OobStreamState {
    fn is_final(self) -> bool {
        matches!(
            self,
            OobStreamState::Unimplemented | OobStreamState::ConnectionClosed
        )
    }
}

/// Out-of-band load reports of one connection (one subchannel): subscribers
/// register the interval they want, and one `StreamCoreMetrics` stream runs,
/// at the smallest of them, while at least one subscription lives.
///
/// - A report resets the backoff, so the stream that follows it starts at
///   once; a stream that fails before any report is retried after the next
///   backoff delay ([`BackoffConfig`], gRPC's connection backoff by default).
/// - `UNIMPLEMENTED` ends reporting on this connection for good, logged once at
///   ERROR (gRFC A51). So does a failed `poll_ready` (the connection is gone).
/// - Changing the smallest interval cancels the open stream and opens one
///   with the new interval; during a backoff the new interval waits for it.
/// - Dropping this handle (the subchannel shuts down, or its connection got a
///   GOAWAY) cancels the stream and ends the task; subscriptions then see
///   [`OobSubscription::changed`] return `None`.
///
/// ```
/// use std::time::Duration;
/// use grpc_lb_orca::{OobLoadReports, OrcaService, ServerMetricsRecorder};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// // A tonic server whose OpenRcaService sends reports every 10 ms.
/// let recorder = ServerMetricsRecorder::new();
/// recorder.set_cpu_utilization(0.25)?;
/// let orca = OrcaService::new(recorder.clone()).min_reporting_interval(Duration::from_millis(10));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// tokio::spawn(
///     tonic::transport::Server::builder()
///         .add_service(orca.into_server())
///         .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
/// );
///
/// // The client side: one connection, one subscriber.
/// let connection = grpc_lb_connect::Http2Connector::<tonic::body::Body>::new().oneshot(addr).await?;
/// let reports = OobLoadReports::new(connection);
/// let mut subscription = reports.subscribe(Duration::from_millis(10));
/// let report = subscription.changed().await.expect("a report");
/// assert_eq!(report.cpu_utilization, 0.25);
///
/// recorder.set_cpu_utilization(0.75)?;
/// let mut latest = subscription.receiver();
/// latest.wait_for(|r| r.as_ref().is_some_and(|r| r.cpu_utilization == 0.75)).await?;
/// # Ok(())
/// # }
/// ```
pub struct OobLoadReports {
    shared: Arc<Shared>,
}

/// One subscriber's registration; dropping it withdraws its interval.
///
/// ```no_run
/// # async fn run(reports: grpc_lb_orca::OobLoadReports) {
/// use std::time::Duration;
///
/// let mut subscription = reports.subscribe(Duration::from_secs(10));
/// while let Some(report) = subscription.changed().await {
///     println!("utilization now {}", report.application_utilization);
/// }
/// // None: reporting has ended on this connection.
/// # }
/// ```
pub struct OobSubscription {
    shared: Arc<Shared>,
    interval: Duration,
    reports: watch::Receiver<LatestReport>,
}

type Spawn = dyn FnMut(Duration, watch::Sender<LatestReport>, u64) -> Running + Send;

struct Shared {
    registry: Mutex<Registry>,
    state: watch::Sender<OobStreamState>,
}

struct Registry {
    /// Requested intervals, with how many subscriptions asked for each.
    intervals: BTreeMap<Duration, usize>,
    /// `None` once reporting has ended for good, which closes every receiver.
    reports: Option<watch::Sender<LatestReport>>,
    running: Option<Running>,
    /// Starts a task over a clone of the connection; `None` once the
    /// [`OobLoadReports`] is dropped, which releases the connection.
    spawn: Option<Box<Spawn>>,
    /// Tells a task apart from the ones before it, whose late state updates
    /// must be ignored.
    generation: u64,
}

struct Running {
    interval: watch::Sender<Duration>,
    task: JoinHandle<()>,
}

// ===== impl OobLoadReports =====

impl OobLoadReports {
    /// Reports over `connection` (cloned for each stream), with gRPC's
    /// default connection backoff between failed streams.
    pub fn new<S>(connection: S) -> Self
    where
        S: GrpcService<Body> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        <S::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
    {
        Self::with_backoff(connection, BackoffConfig::default())
    }

    /// Reports over `connection`, with `backoff` between failed streams.
    pub fn with_backoff<S>(connection: S, backoff: BackoffConfig) -> Self
    where
        S: GrpcService<Body> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        <S::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
    {
        let shared = Arc::new_cyclic(|weak: &std::sync::Weak<Shared>| {
            let weak = weak.clone();
            let spawn = move |interval, reports, generation| {
                let connection = connection.clone();
                let (interval_tx, interval_rx) = watch::channel(interval);
                let task = tokio::spawn(stream::run(
                    connection,
                    backoff,
                    interval_rx,
                    reports,
                    weak.clone(),
                    generation,
                ));
                Running {
                    interval: interval_tx,
                    task,
                }
            };
            Shared {
                registry: Mutex::new(Registry {
                    intervals: BTreeMap::new(),
                    reports: Some(watch::channel(None).0),
                    running: None,
                    spawn: Some(Box::new(spawn)),
                    generation: 0,
                }),
                state: watch::channel(OobStreamState::Idle).0,
            }
        });
        OobLoadReports { shared }
    }

    /// Registers a subscriber that wants a report every `interval` (the
    /// server may send them less often: grpc-go's and this crate's servers
    /// enforce 30 s by default). Starts the stream if none runs.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, when it has to start the stream.
    pub fn subscribe(&self, interval: Duration) -> OobSubscription {
        let mut registry = lock(&self.shared.registry);
        *registry.intervals.entry(interval).or_default() += 1;
        let reports = match &registry.reports {
            Some(reports) => reports.subscribe(),
            // Reporting has ended: a receiver that is closed already.
            None => watch::channel(None).1,
        };
        self.shared.reconcile(&mut registry);
        drop(registry);
        OobSubscription {
            shared: self.shared.clone(),
            interval,
            reports,
        }
    }

    /// Where reporting stands.
    pub fn state(&self) -> OobStreamState {
        *self.shared.state.borrow()
    }

    /// A receiver that sees every change of [`state`](Self::state).
    pub fn state_changes(&self) -> watch::Receiver<OobStreamState> {
        self.shared.state.subscribe()
    }

    /// The interval the stream asks for: the smallest subscribed one, `None`
    /// without subscribers.
    pub fn requested_interval(&self) -> Option<Duration> {
        lock(&self.shared.registry).intervals.keys().next().copied()
    }
}

impl Drop for OobLoadReports {
    fn drop(&mut self) {
        let mut registry = lock(&self.shared.registry);
        registry.reports = None;
        registry.spawn = None;
        registry.generation += 1;
        if let Some(running) = registry.running.take() {
            running.task.abort();
        }
    }
}

impl fmt::Debug for OobLoadReports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OobLoadReports")
            .field("state", &self.state())
            .field("requested_interval", &self.requested_interval())
            .finish()
    }
}

// ===== impl OobSubscription =====

impl OobSubscription {
    /// The interval this subscriber asked for.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Asks for another interval; the stream restarts if that changes the
    /// smallest one (gRFC A51 lets a policy change it at any time).
    pub fn set_interval(&mut self, interval: Duration) {
        if interval == self.interval {
            return;
        }
        let mut registry = lock(&self.shared.registry);
        registry.withdraw(self.interval);
        *registry.intervals.entry(interval).or_default() += 1;
        self.interval = interval;
        self.shared.reconcile(&mut registry);
    }

    /// The latest report, if any arrived.
    pub fn latest(&self) -> LatestReport {
        self.reports.borrow().clone()
    }

    /// Waits for the next report and returns it; `None` once reporting has
    /// ended on this connection (the server does not implement it, the
    /// connection is gone, or the [`OobLoadReports`] was dropped).
    pub async fn changed(&mut self) -> LatestReport {
        self.reports.changed().await.ok()?;
        self.reports.borrow_and_update().clone()
    }

    /// A receiver of the latest report, e.g. to `wait_for` a condition.
    pub fn receiver(&self) -> watch::Receiver<LatestReport> {
        self.reports.clone()
    }
}

impl Drop for OobSubscription {
    fn drop(&mut self) {
        let mut registry = lock(&self.shared.registry);
        registry.withdraw(self.interval);
        self.shared.reconcile(&mut registry);
    }
}

impl fmt::Debug for OobSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OobSubscription")
            .field("interval", &self.interval)
            .field("latest", &*self.reports.borrow())
            .finish()
    }
}

// ===== impl Shared =====

impl Shared {
    /// Starts, restarts or stops the stream to match the subscriptions.
    fn reconcile(&self, registry: &mut Registry) {
        let Some(reports) = registry.reports.clone() else {
            return; // ended for good
        };
        match (registry.intervals.keys().next().copied(), &registry.running) {
            (None, Some(_)) => {
                if let Some(running) = registry.running.take() {
                    running.task.abort();
                }
                registry.generation += 1;
                self.state.send_replace(OobStreamState::Idle);
            }
            (None, None) => {}
            (Some(min), Some(running)) => {
                running.interval.send_if_modified(|current| {
                    let changed = *current != min;
                    *current = min;
                    changed
                });
            }
            (Some(min), None) => {
                registry.generation += 1;
                let generation = registry.generation;
                if let Some(spawn) = &mut registry.spawn {
                    registry.running = Some(spawn(min, reports, generation));
                }
            }
        }
    }

    /// Records a task's state, unless a newer task (or none) has replaced it.
    /// A final state ends reporting: every receiver closes.
    fn set_state(&self, generation: u64, state: OobStreamState) {
        let mut registry = lock(&self.registry);
        if registry.generation != generation || registry.reports.is_none() {
            return;
        }
        if state.is_final() {
            registry.reports = None;
            // Nothing will start again: let the connection go.
            registry.spawn = None;
            // The task is returning; its handle has nothing left to do.
            registry.running = None;
        }
        self.state.send_replace(state);
    }
}

impl Registry {
    fn withdraw(&mut self, interval: Duration) {
        if let Some(count) = self.intervals.get_mut(&interval) {
            *count -= 1;
            if *count == 0 {
                self.intervals.remove(&interval);
            }
        }
    }
}

/// Locks, ignoring poisoning: every critical section leaves the registry
/// consistent, so a panic elsewhere cannot have broken it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
