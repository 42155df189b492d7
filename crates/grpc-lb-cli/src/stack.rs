//! The call path around the channel, applying the parts of the service config
//! in force that the channel leaves to layers: message sizes
//! ([`grpc_lb::message_size`]) and retries ([`grpc_lb::retry`]), both read
//! from `channel.service_config()` so that a config from the resolver is
//! followed as it changes.

use std::sync::Arc;
use std::task::{Context, Poll};

use grpc_lb::core::BoxError;
use grpc_lb::message_size::{LimitedBody, MessageSizeLayer, ResponseFuture};
use grpc_lb::retry::{Retry, RetryLayer};
use grpc_lb::service_config::ServiceConfig;
use tower_layer::Layer;
use tower_service::Service;

use crate::channel::{Client, ClientService, RecordPeer};
use crate::options::StackSettings;

/// What each worker's client calls: peer recording, message sizes, retries,
/// the channel (or a grpclb target's stack).
pub(crate) type CallStack = RecordPeer<MessageSizeFollowing<Retry<ClientService>>>;

/// Builds the call path over `channel`; every worker gets a clone.
pub(crate) fn call_stack(channel: &Client, settings: StackSettings) -> CallStack {
    let retry = if settings.disable_retry {
        // No policy, ever: only the transparent retries grpc-go keeps too.
        RetryLayer::following(|| None)
    } else {
        let followed = channel.clone();
        RetryLayer::following(move || followed.service_config())
    };
    RecordPeer::new(MessageSizeFollowing::new(
        retry.layer(channel.service()),
        channel.clone(),
        settings,
    ))
}

/// [`grpc_lb::message_size::MessageSize`] under the channel's config in
/// force: the limits layer is rebuilt when that config changes (an `Arc`
/// comparison per call otherwise), and applies `--max-send-message-size` and
/// `--max-receive-message-size` as the channel's own limits.
#[derive(Clone, Debug)]
pub(crate) struct MessageSizeFollowing<S> {
    inner: S,
    channel: Client,
    settings: StackSettings,
    /// The config the layer was built from (`None`: none in force).
    built_from: Option<Arc<ServiceConfig>>,
    layer: MessageSizeLayer,
}

impl<S> MessageSizeFollowing<S> {
    fn new(inner: S, channel: Client, settings: StackSettings) -> Self {
        MessageSizeFollowing {
            inner,
            channel,
            settings,
            built_from: None,
            layer: limits(ServiceConfig::default(), settings),
        }
    }

    fn refresh(&mut self) {
        let current = self.channel.service_config();
        let same = match (&current, &self.built_from) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            let config = current.as_deref().cloned().unwrap_or_default();
            self.layer = limits(config, self.settings);
            self.built_from = current;
        }
    }
}

fn limits(config: ServiceConfig, settings: StackSettings) -> MessageSizeLayer {
    let mut layer = MessageSizeLayer::new(config);
    if let Some(bytes) = settings.max_send {
        layer = layer.max_send_message_size(bytes);
    }
    if let Some(bytes) = settings.max_receive {
        layer = layer.max_receive_message_size(bytes);
    }
    layer
}

impl<S, B, ResBody> Service<http::Request<B>> for MessageSizeFollowing<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResBody: http_body::Body<Data = bytes::Bytes>,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<LimitedBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.refresh();
        // The layer wraps the ready service by reference: no clone per call.
        self.layer.layer(&mut self.inner).call(request)
    }
}
