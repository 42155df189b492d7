//! The connection settings of tonic's `Endpoint` on the [`Builder`], with
//! tonic's names and defaults: TCP socket options, HTTP/2 settings, the
//! connect timeout, the user agent and the origin. They apply to every
//! subchannel's connections, over TCP, Unix sockets and TLS alike (the TCP
//! options to TCP only), without replacing the connector.

use std::net::IpAddr;
use std::time::Duration;

use grpc_lb_connect::{Http2Config, TcpConnector};
use http::{HeaderValue, Uri};

use tower_layer::Stack;

use crate::builder::Builder;

/// What the builder hands the connectors.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionSettings {
    pub(crate) tcp: TcpConnector,
    pub(crate) http2: Http2Config,
    pub(crate) connect_timeout: Option<Duration>,
    /// The user's part of `user-agent`; an invalid value fails the build.
    pub(crate) user_agent: Option<Result<HeaderValue, String>>,
    pub(crate) origin: Option<Uri>,
}

impl ConnectionSettings {
    pub(crate) const fn new() -> Self {
        ConnectionSettings {
            tcp: TcpConnector::new(),
            http2: Http2Config::new(),
            connect_timeout: None,
            user_agent: None,
            origin: None,
        }
    }
}

/// # Connection settings (tonic's `Endpoint` names)
///
/// Every one applies to each connection of every subchannel, through the
/// default transport, TLS (`tls`) and Unix sockets alike; the TCP options
/// (`tcp_nodelay`, `tcp_keepalive*`, `local_address`) apply to TCP
/// connections of the default transport only, not to Unix sockets nor to a
/// transport of your own ([`connector`](Builder::connector)), which sets its
/// own sockets up. The HTTP/2 settings, the connect timeout, the user agent
/// and the origin are those of gRPC channels ([`build`](Builder::build),
/// [`build_for_body`](Builder::build_for_body)); the HTTP/1.1 pools of
/// [`build_http1`](Builder::build_http1) take the TCP options only.
///
/// ```
/// use std::time::Duration;
/// use grpc_lb::Channel;
///
/// let builder = Channel::builder("dns:///greeter.example:50051")
///     .connect_timeout(Duration::from_secs(5))
///     .tcp_nodelay(true)                      // the default, as in tonic
///     .tcp_keepalive(Some(Duration::from_secs(60)))
///     .initial_stream_window_size(1 << 20)
///     .initial_connection_window_size(4 << 20)
///     .http2_keep_alive_interval(Duration::from_secs(30))
///     .keep_alive_timeout(Duration::from_secs(10))
///     .keep_alive_while_idle(true)
///     .user_agent("greeter-client/1.2");      // sent as "greeter-client/1.2 grpc-lb/0.1.0"
/// # drop(builder);
/// ```
impl<L> Builder<L> {
    /// Bounds each connection attempt, from the first TCP byte to the
    /// server's HTTP/2 SETTINGS (TLS included), as tonic's
    /// `Endpoint::connect_timeout`; default none. gRPC's own bound,
    /// [`BackoffConfig`](grpc_lb_backoff::BackoffConfig)'s
    /// `min_connect_timeout` (20 s, or the backoff delay when longer),
    /// applies as well: an attempt ends at the sooner. A timed-out attempt
    /// backs off like any failed one.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connection.connect_timeout = Some(timeout);
        self
    }

    /// `TCP_NODELAY` on every TCP connection (default: on, as in tonic and
    /// grpc-go).
    pub fn tcp_nodelay(mut self, enabled: bool) -> Self {
        self.connection.tcp = self.connection.tcp.clone().with_nodelay(enabled);
        self
    }

    /// TCP keepalive: probes after the connection has been idle this long;
    /// `None` (the default) leaves it off, as in tonic.
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.connection.tcp = self.connection.tcp.clone().with_keepalive(idle);
        self
    }

    /// The time between unanswered TCP keepalive probes (`None`: the
    /// system's). Used only with [`tcp_keepalive`](Self::tcp_keepalive).
    pub fn tcp_keepalive_interval(mut self, interval: Option<Duration>) -> Self {
        self.connection.tcp = self
            .connection
            .tcp
            .clone()
            .with_keepalive_interval(interval);
        self
    }

    /// How many unanswered TCP keepalive probes end the connection (`None`:
    /// the system's). Used only with [`tcp_keepalive`](Self::tcp_keepalive).
    pub fn tcp_keepalive_retries(mut self, retries: Option<u32>) -> Self {
        self.connection.tcp = self.connection.tcp.clone().with_keepalive_retries(retries);
        self
    }

    /// Connects from this local IP address when the endpoint's address is
    /// of the same family (`None`, the default: the system chooses).
    pub fn local_address(mut self, address: Option<IpAddr>) -> Self {
        self.connection.tcp = self.connection.tcp.clone().with_local_address(address);
        self
    }

    /// HTTP/2 `SETTINGS_INITIAL_WINDOW_SIZE`, the stream-level flow-control
    /// window (`None`: hyper's, 2 MiB; tonic documents 65,535 but passes
    /// `None` to hyper too).
    pub fn initial_stream_window_size(mut self, size: impl Into<Option<u32>>) -> Self {
        self.connection.http2 = self
            .connection
            .http2
            .clone()
            .initial_stream_window_size(size);
        self
    }

    /// The HTTP/2 connection-level flow-control window (`None`: hyper's,
    /// 5 MiB).
    pub fn initial_connection_window_size(mut self, size: impl Into<Option<u32>>) -> Self {
        self.connection.http2 = self
            .connection
            .http2
            .clone()
            .initial_connection_window_size(size);
        self
    }

    /// HTTP/2 adaptive flow control (BDP estimation), which overrides both
    /// window sizes (default: off).
    pub fn http2_adaptive_window(mut self, enabled: bool) -> Self {
        self.connection.http2 = self.connection.http2.clone().adaptive_window(enabled);
        self
    }

    /// HTTP/2 `SETTINGS_MAX_FRAME_SIZE`, the largest frame accepted (`None`:
    /// hyper's, 16 KiB).
    pub fn max_frame_size(mut self, size: impl Into<Option<u32>>) -> Self {
        self.connection.http2 = self.connection.http2.clone().max_frame_size(size);
        self
    }

    /// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`, the largest response header
    /// list accepted (hyper's default: 16 KiB).
    pub fn http2_max_header_list_size(mut self, size: u32) -> Self {
        self.connection.http2 = self.connection.http2.clone().max_header_list_size(size);
        self
    }

    /// HTTP/2 `SETTINGS_HEADER_TABLE_SIZE`, the HPACK table for responses
    /// (default 4,096).
    pub fn http2_header_table_size(mut self, size: u32) -> Self {
        self.connection.http2 = self.connection.http2.clone().header_table_size(size);
        self
    }

    /// How many locally reset HTTP/2 streams are remembered (hyper's
    /// default otherwise).
    pub fn http2_max_concurrent_reset_streams(mut self, max: usize) -> Self {
        self.connection.http2 = self
            .connection
            .http2
            .clone()
            .max_concurrent_reset_streams(max);
        self
    }

    /// How long a locally reset HTTP/2 stream is remembered (hyper's
    /// default otherwise).
    pub fn http2_reset_stream_duration(mut self, duration: Duration) -> Self {
        self.connection.http2 = self
            .connection
            .http2
            .clone()
            .reset_stream_duration(duration);
        self
    }

    /// How many local error resets close a connection with
    /// `GOAWAY(ENHANCE_YOUR_CALM)`; `None` removes the limit (hyper's
    /// default: 1024).
    pub fn http2_max_local_error_reset_streams(mut self, max: impl Into<Option<usize>>) -> Self {
        self.connection.http2 = self
            .connection
            .http2
            .clone()
            .max_local_error_reset_streams(max);
        self
    }

    /// HTTP/2 keepalive PINGs every `interval` (gRFC A8's keepalive time):
    /// sets [`KeepaliveConfig::time`](grpc_lb_connect::KeepaliveConfig::time)
    /// of [`keepalive`](Self::keepalive), so the 10 s minimum and the
    /// doubling after a `too_many_pings` GOAWAY apply. Off by default, as in
    /// tonic and grpc-go.
    pub fn http2_keep_alive_interval(mut self, interval: Duration) -> Self {
        self.keepalive = self.keepalive.time(interval);
        self
    }

    /// How long to wait for a keepalive PING's answer before closing the
    /// connection: [`KeepaliveConfig::timeout`](grpc_lb_connect::KeepaliveConfig::timeout)
    /// (default 20 s, as in grpc-go and hyper).
    pub fn keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.keepalive = self.keepalive.timeout(timeout);
        self
    }

    /// Sends keepalive PINGs on connections with no call open too:
    /// [`KeepaliveConfig::permit_without_calls`](grpc_lb_connect::KeepaliveConfig::permit_without_calls)
    /// (default: off).
    pub fn keep_alive_while_idle(mut self, enabled: bool) -> Self {
        self.keepalive = self.keepalive.permit_without_calls(enabled);
        self
    }

    /// Sends `user_agent` followed by
    /// [`DEFAULT_USER_AGENT`](grpc_lb_connect::DEFAULT_USER_AGENT) as
    /// `user-agent` (`"greeter/1.2 grpc-lb/0.1.0"`), as tonic appends
    /// `tonic/0.x` and grpc-go `grpc-go/1.x`. Without it the default alone
    /// is sent. A value that is no valid header value fails
    /// [`build`](Self::build) with [`BuildError::InvalidUserAgent`](crate::BuildError::InvalidUserAgent)
    /// (tonic's `user_agent` returns the error at once instead).
    pub fn user_agent<T>(mut self, user_agent: T) -> Self
    where
        T: TryInto<HeaderValue>,
    {
        let value = user_agent
            .try_into()
            .map_err(|_| "not a valid header value".to_owned());
        self.connection.user_agent = Some(value);
        self
    }

    /// Sends `origin`'s scheme and authority as `:scheme` and `:authority`
    /// on every request, as tonic's `Endpoint::origin` (for a proxy or a
    /// server that serves many names). Unlike [`authority`](Self::authority),
    /// it does not change the name TLS checks certificates against.
    pub fn origin(mut self, origin: Uri) -> Self {
        self.connection.origin = Some(origin);
        self
    }

    /// At most `limit` calls in flight through the channel (all its clones
    /// and endpoints together): a layer of `tower::limit::ConcurrencyLimit`,
    /// whose `poll_ready` waits for a call to end. tonic's
    /// `Endpoint::concurrency_limit` limits each endpoint's connection; with
    /// one endpoint the two are the same.
    ///
    /// ```
    /// let channel = grpc_lb::Channel::builder("ipv4:127.0.0.1:50051")
    ///     .concurrency_limit(256);
    /// # drop(channel);
    /// ```
    pub fn concurrency_limit(
        self,
        limit: usize,
    ) -> Builder<Stack<tower::limit::ConcurrencyLimitLayer, L>> {
        self.layer(tower::limit::ConcurrencyLimitLayer::new(limit))
    }

    /// At most `limit` calls per `period` through the channel (all its
    /// clones together): a [`RateLimitLayer`](crate::RateLimitLayer), whose
    /// `poll_ready` waits for the next period once this one's calls are
    /// spent, like tonic's `Endpoint::rate_limit` (tower's `RateLimit`,
    /// shared by tonic's channel clones behind its buffer).
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let channel = grpc_lb::Channel::builder("ipv4:127.0.0.1:50051")
    ///     .rate_limit(100, Duration::from_secs(1));
    /// # drop(channel);
    /// ```
    pub fn rate_limit(
        self,
        limit: u64,
        period: std::time::Duration,
    ) -> Builder<Stack<crate::RateLimitLayer, L>> {
        self.layer(crate::RateLimitLayer::new(limit, period))
    }

    /// tonic's `Endpoint::buffer_size`, the bound on requests queued for the
    /// channel: here [`max_waiting`](Self::max_waiting), the requests that
    /// may wait for a connection at once (default 1024, as tonic's buffer;
    /// `None` keeps it). Requests beyond it fail with `RESOURCE_EXHAUSTED`
    /// instead of waiting in `poll_ready`; requests that find a ready
    /// connection never queue.
    pub fn buffer_size(self, size: impl Into<Option<usize>>) -> Self {
        match size.into() {
            Some(size) => self.max_waiting(size),
            None => self,
        }
    }

    /// Whether `TCP_NODELAY` is set (tonic's `get_tcp_nodelay`).
    pub fn get_tcp_nodelay(&self) -> bool {
        self.connection.tcp.nodelay()
    }

    /// The connect timeout, if set (tonic's `get_connect_timeout`).
    pub fn get_connect_timeout(&self) -> Option<Duration> {
        self.connection.connect_timeout
    }

    /// The TCP keepalive idle time, if on (tonic's `get_tcp_keepalive`).
    pub fn get_tcp_keepalive(&self) -> Option<Duration> {
        self.connection.tcp.keepalive()
    }

    /// The TCP keepalive probe interval, if set (tonic's
    /// `get_tcp_keepalive_interval`).
    pub fn get_tcp_keepalive_interval(&self) -> Option<Duration> {
        self.connection.tcp.keepalive_interval()
    }

    /// The TCP keepalive probe count, if set (tonic's
    /// `get_tcp_keepalive_retries`).
    pub fn get_tcp_keepalive_retries(&self) -> Option<u32> {
        self.connection.tcp.keepalive_retries()
    }

    /// The target the channel resolves (tonic's `Endpoint::uri`).
    pub fn target(&self) -> &str {
        self.target_str()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower_service::Service;

    use crate::Channel;

    #[test]
    fn tonic_keepalive_settings_map_onto_the_keepalive_config() {
        let builder = Channel::builder("ipv4:127.0.0.1:1")
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(7))
            .keep_alive_while_idle(true);
        assert_eq!(builder.keepalive.get_time(), Some(Duration::from_secs(30)));
        assert_eq!(builder.keepalive.get_timeout(), Duration::from_secs(7));
        assert!(builder.keepalive.get_permit_without_calls());
        // A8's 10 s minimum holds for tonic's name too.
        let eager =
            Channel::builder("ipv4:127.0.0.1:1").http2_keep_alive_interval(Duration::from_secs(1));
        assert_eq!(eager.keepalive.get_time(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn defaults_are_tonics() {
        let builder = Channel::builder("ipv4:127.0.0.1:1");
        assert!(builder.get_tcp_nodelay());
        assert_eq!(builder.get_tcp_keepalive(), None);
        assert_eq!(builder.get_connect_timeout(), None);
        assert_eq!(builder.keepalive.get_time(), None, "no HTTP/2 keepalive");
        assert_eq!(
            builder.connection.http2,
            grpc_lb_connect::Http2Config::new()
        );
    }

    #[tokio::test]
    async fn tcp_settings_reach_the_sockets_of_the_default_transport() {
        let builder = Channel::builder("ipv4:127.0.0.1:1")
            .tcp_nodelay(false)
            .tcp_keepalive(Some(Duration::from_secs(41)))
            .tcp_keepalive_interval(Some(Duration::from_secs(9)))
            .tcp_keepalive_retries(Some(3));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut tcp = builder.connection.tcp.clone();
        let stream = tcp.call(listener.local_addr().unwrap()).await.unwrap();
        let socket = socket2::SockRef::from(&stream);
        assert!(!socket.tcp_nodelay().unwrap());
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(41)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(9)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
    }
}
