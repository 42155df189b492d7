//! More connections to one endpoint when its first is at the server's stream
//! limit (gRFC A105, `max_connections_per_subchannel`).
//!
//! The subchannel keeps following its first connection (it goes IDLE when
//! that one closes or drains); the extra ones only take the requests that
//! connection has no stream for. Following A105: at most one connect runs at
//! a time, a request goes to the oldest connection with a free stream, and a
//! connect starts only when every connection is full and fewer than the
//! maximum exist. A failed connect is not retried before a backoff (1 s,
//! doubling to 120 s, reset by a success), instead of A105's backoff shared
//! with the subchannel.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use tokio::time::Instant;

use crate::connection::Http2Connection;
use crate::error::ConnectError;
use crate::state::{ConnectionState, StreamSlot};

/// The most connections per endpoint (A105's cap).
pub(crate) const MAX_CONNECTIONS_CAP: usize = 10;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(120);

pub(crate) type OpenConnection<B> = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Http2Connection<B>, ConnectError>> + Send>>
        + Send
        + Sync,
>;

/// The extra connections of one subchannel's first connection.
pub(crate) struct Scaling<B> {
    /// Extra connections allowed: the maximum per subchannel, less the first.
    extra_max: usize,
    open: OpenConnection<B>,
    /// The first connection's state, whose waiters are woken when a
    /// connection is added.
    first: Arc<ConnectionState>,
    inner: Mutex<Inner<B>>,
}

struct Inner<B> {
    /// Oldest first.
    extras: Vec<Extra<B>>,
    connecting: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
}

struct Extra<B> {
    send: SendRequest<B>,
    state: Arc<ConnectionState>,
}

impl<B> fmt::Debug for Scaling<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Scaling")
            .field("extra_max", &self.extra_max)
            .field("extras", &inner.extras.len())
            .field("connecting", &inner.connecting)
            .finish()
    }
}

impl<B> Scaling<B> {
    pub(crate) fn new(
        max_connections: usize,
        open: OpenConnection<B>,
        first: Arc<ConnectionState>,
    ) -> Self {
        Scaling {
            extra_max: max_connections.clamp(1, MAX_CONNECTIONS_CAP) - 1,
            open,
            first,
            inner: Mutex::new(Inner {
                extras: Vec::new(),
                connecting: false,
                retry_at: None,
                backoff: FIRST_BACKOFF,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<B>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an extra connection has a free stream.
    pub(crate) fn has_slot(&self) -> bool {
        let mut inner = self.lock();
        inner.extras.retain(|e| !e.state.is_unusable());
        inner.extras.iter().any(|e| e.state.has_slot())
    }

    /// A free stream on the oldest extra connection that has one.
    pub(crate) fn try_acquire(&self) -> Option<(SendRequest<B>, StreamSlot)> {
        let mut inner = self.lock();
        inner.extras.retain(|e| !e.state.is_unusable());
        inner
            .extras
            .iter()
            .find_map(|e| Some((e.send.clone(), e.state.try_acquire()?)))
    }

    fn connected(&self, result: Result<Http2Connection<B>, ConnectError>) {
        let mut inner = self.lock();
        inner.connecting = false;
        match result {
            Ok(connection) => {
                let (send, state) = connection.into_parts();
                inner.extras.push(Extra { send, state });
                inner.retry_at = None;
                inner.backoff = FIRST_BACKOFF;
                tracing::debug!(
                    connections = inner.extras.len() + 1,
                    "endpoint at its stream limit: connection added"
                );
            }
            Err(error) => {
                tracing::debug!(%error, backoff = ?inner.backoff, "extra connection failed");
                inner.retry_at = Some(Instant::now() + inner.backoff);
                inner.backoff = (inner.backoff * 2).min(MAX_BACKOFF);
            }
        }
        drop(inner);
        self.first.notify();
    }

    /// How many extra connections are open now.
    pub(crate) fn extra_connections(&self) -> usize {
        let mut inner = self.lock();
        inner.extras.retain(|e| !e.state.is_unusable());
        inner.extras.len()
    }
}

impl<B: Send + 'static> Scaling<B> {
    /// Every connection is full: wakes `waker` when an extra one frees a
    /// stream or a new one is added, and opens one if allowed.
    pub(crate) fn wait(self: &Arc<Self>, waker: &Waker) {
        let mut inner = self.lock();
        for extra in &inner.extras {
            extra.state.wait(waker);
        }
        let backing_off = inner.retry_at.is_some_and(|at| Instant::now() < at);
        if inner.extras.len() >= self.extra_max || inner.connecting || backing_off {
            return;
        }
        inner.connecting = true;
        drop(inner);
        let connecting = (self.open)();
        let this = self.clone();
        tokio::spawn(async move {
            let result = connecting.await;
            this.connected(result);
        });
    }
}
