//! Any `tower::discover::Discover` keyed by address, used where a resolver goes.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use grpc_lb_core::BoxError;
use tower::discover::{Change, Discover};

use crate::resolver::UpdateStream;
use crate::update::{Address, Endpoint, Update};

/// Turns an existing `Discover` into an update stream, so that the stack builds
/// its own reconnecting subchannel for each discovered key.
///
/// Only the keys are used: `Insert(key, _)` adds the endpoint at `key`,
/// `Remove(key)` removes it. The discovered services themselves are dropped;
/// plug a `Discover` into the balancer directly if its services are what you
/// want to balance over. A `Discover` error is a resolution error: the stream
/// goes on and the last good set stays.
///
/// # Examples
///
/// ```
/// use std::net::SocketAddr;
/// use grpc_lb_resolve::discover_updates;
///
/// // Any Discover whose keys convert into addresses; here a plain stream of changes.
/// let addrs: Vec<SocketAddr> = vec!["127.0.0.1:50051".parse().unwrap()];
/// let discover = futures::stream::iter(addrs.into_iter().map(|a| {
///     Ok::<_, std::io::Error>(tower::discover::Change::Insert(a, ()))
/// }));
/// let updates = discover_updates(discover);
/// # drop(updates);
/// ```
pub fn discover_updates<D>(discover: D) -> UpdateStream
where
    D: Discover + Send + 'static,
    D::Key: Into<Address>,
    D::Error: Into<BoxError>,
{
    KeysOf {
        discover: Box::pin(discover),
    }
    .boxed()
}

struct KeysOf<D> {
    discover: Pin<Box<D>>,
}

impl<D> Stream for KeysOf<D>
where
    D: Discover,
    D::Key: Into<Address>,
    D::Error: Into<BoxError>,
{
    type Item = Result<Update, BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let change = match self.discover.as_mut().poll_discover(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(change)) => change,
        };
        Poll::Ready(Some(match change {
            Ok(Change::Insert(key, _service)) => Ok(Update::Add(vec![Endpoint::new(key.into())])),
            Ok(Change::Remove(key)) => Ok(Update::Remove(vec![key.into()])),
            Err(error) => Err(error.into()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[tokio::test]
    async fn inserts_and_removes_become_adds_and_removes() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let changes = vec![
            Ok::<_, std::io::Error>(Change::Insert(a, "svc")),
            Err(std::io::Error::other("registry down")),
            Ok(Change::Remove(a)),
        ];
        let mut updates = discover_updates(futures::stream::iter(changes));
        assert_eq!(
            updates.next().await.unwrap().unwrap(),
            Update::Add(vec![Endpoint::new(a)])
        );
        assert_eq!(
            updates.next().await.unwrap().unwrap_err().to_string(),
            "registry down"
        );
        assert_eq!(
            updates.next().await.unwrap().unwrap(),
            Update::Remove(vec![Address::Socket(a)])
        );
        assert!(updates.next().await.is_none());
    }
}
