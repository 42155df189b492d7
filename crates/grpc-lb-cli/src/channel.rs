//! The channel flags shared by `call` and `watch`, building a
//! [`grpc_lb::Channel`] from them, and a wrapper that records which backend
//! answered each call.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Args;
use grpc_lb::backoff::BackoffConfig;
use grpc_lb::balance::PolicyRegistry;
use grpc_lb::service_config::ServiceConfig;
use grpc_lb::{BuildError, Channel, Peer, TlsConfig, TlsError};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::CliError;

/// The channel type every subcommand uses: tonic bodies over HTTP/2.
pub(crate) type GrpcChannel = Channel<grpc_lb::connect::Http2Connection<tonic::body::Body>>;

/// The policies a user can name (the default registry's).
pub(crate) const POLICIES: [&str; 4] = ["pick_first", "round_robin", "p2c", "least_request"];

/// How to build the channel: policy, service config, backoff, TLS.
#[derive(Debug, Clone, Args)]
pub(crate) struct ChannelArgs {
    /// Load-balancing policy.
    #[arg(long, default_value = "pick_first", value_parser = POLICIES)]
    pub(crate) policy: String,

    /// A gRPC service config (JSON): its `loadBalancingConfig` (first supported
    /// policy) or `loadBalancingPolicy` overrides --policy, and each method's
    /// `timeout` and `waitForReady` apply to its calls.
    #[arg(long, value_name = "JSON")]
    pub(crate) service_config: Option<String>,

    /// Connection backoff: the delay after the first failure, in ms.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub(crate) backoff_base_ms: u64,

    /// Connection backoff: the factor by which the delay grows.
    #[arg(long, value_name = "M", default_value_t = 1.6)]
    pub(crate) backoff_multiplier: f64,

    /// Connection backoff: the relative random spread of each delay (0 to 1).
    #[arg(long, value_name = "J", default_value_t = 0.2)]
    pub(crate) backoff_jitter: f64,

    /// Connection backoff: the cap on the delay, in ms.
    #[arg(long, value_name = "MS", default_value_t = 120_000)]
    pub(crate) backoff_max_ms: u64,

    /// The least time one connection attempt is given, in ms.
    #[arg(long, value_name = "MS", default_value_t = 20_000)]
    pub(crate) min_connect_timeout_ms: u64,

    /// Connect with TLS (rustls); servers are verified against --ca-cert, or
    /// the system's root certificates without it.
    #[arg(long)]
    pub(crate) tls: bool,

    /// CA certificate (PEM) to verify servers with (needs --tls).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,

    /// Client certificate chain (PEM) for mutual TLS (with --client-key).
    #[arg(long, value_name = "FILE")]
    pub(crate) client_cert: Option<PathBuf>,

    /// Client private key (PEM) for mutual TLS (with --client-cert).
    #[arg(long, value_name = "FILE")]
    pub(crate) client_key: Option<PathBuf>,

    /// The authority (TLS server name, `:authority`) to use instead of the
    /// target's.
    #[arg(long, value_name = "NAME")]
    pub(crate) authority: Option<String>,
}

impl ChannelArgs {
    /// The service config from `--service-config`, validated by the same
    /// parser the library uses.
    fn service_config(&self) -> Result<Option<ServiceConfig>, CliError> {
        let Some(json) = &self.service_config else {
            return Ok(None);
        };
        let config = ServiceConfig::from_json(json)
            .map_err(|error| CliError::usage(format!("--service-config: {error}")))?;
        Ok(Some(config))
    }

    /// The policy the channel uses: the service config's, else --policy.
    pub(crate) fn effective_policy(&self) -> Result<String, CliError> {
        let Some(config) = self.service_config()? else {
            return Ok(self.policy.clone());
        };
        let registry = PolicyRegistry::with_defaults();
        match config.choose_policy(|name| registry.contains(name)) {
            Ok(Some(policy)) => Ok(policy.name().to_owned()),
            Ok(None) => Ok(self.policy.clone()),
            Err(error) => Err(CliError::usage(format!("--service-config: {error}"))),
        }
    }

    /// The backoff from the flags, validated.
    pub(crate) fn backoff(&self) -> Result<BackoffConfig, CliError> {
        BackoffConfig::try_new(
            Duration::from_millis(self.backoff_base_ms),
            self.backoff_multiplier,
            self.backoff_jitter,
            Duration::from_millis(self.backoff_max_ms),
            Duration::from_millis(self.min_connect_timeout_ms),
        )
        .map_err(|error| CliError::usage(format!("bad backoff flags: {error}")))
    }

    /// The TLS settings from the flags: `--ca-cert` or the system's roots,
    /// and a client identity when both `--client-cert` and `--client-key` are
    /// given.
    fn tls_config(&self) -> Result<Option<TlsConfig>, CliError> {
        let needs_tls =
            self.ca_cert.is_some() || self.client_cert.is_some() || self.client_key.is_some();
        if !self.tls {
            if needs_tls {
                return Err(CliError::usage(
                    "--ca-cert, --client-cert and --client-key need --tls",
                ));
            }
            return Ok(None);
        }
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path)
                .map_err(|error| CliError::usage(format!("{flag} {}: {error}", path.display())))
        };
        let tls_error = |flag: &str, error: TlsError| CliError::usage(format!("{flag}: {error}"));
        let mut config = TlsConfig::new();
        config = match &self.ca_cert {
            Some(path) => config
                .with_root_certificates_pem(&read("--ca-cert", path)?)
                .map_err(|e| tls_error("--ca-cert", e))?,
            None => config
                .with_native_roots()
                .map_err(|e| tls_error("--tls (system root certificates)", e))?,
        };
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                config = config
                    .with_client_identity_pem(
                        &read("--client-cert", cert)?,
                        &read("--client-key", key)?,
                    )
                    .map_err(|e| tls_error("--client-cert/--client-key", e))?;
            }
            (None, None) => {}
            _ => {
                return Err(CliError::usage(
                    "--client-cert and --client-key go together",
                ))
            }
        }
        Ok(Some(config))
    }

    /// Builds the channel to `target` (inside the runtime, which runs its
    /// worker). Every problem with the flags or the target is a usage error.
    pub(crate) fn build(
        &self,
        target: &str,
        wait_for_ready: bool,
    ) -> Result<(GrpcChannel, String), CliError> {
        let policy = self.effective_policy()?;
        let backoff = self.backoff()?;
        let mut builder = Channel::builder(target)
            .policy(policy.clone())
            .backoff(backoff)
            .wait_for_ready(wait_for_ready);
        if let Some(config) = self.service_config()? {
            builder = builder.service_config(config);
        }
        if let Some(authority) = &self.authority {
            builder = builder.authority(authority.clone());
        }
        if let Some(tls) = self.tls_config()? {
            builder = builder.tls(tls);
        }
        let channel = builder.build().map_err(|error| match error.build_error() {
            Some(BuildError::Target(cause)) => {
                CliError::usage(format!("bad target {target:?}: {cause}"))
            }
            _ => CliError::usage(error.to_string()),
        })?;
        Ok((channel, policy))
    }
}

/// Where [`RecordPeer`] puts the address that answered one call. Put a fresh
/// one in each request's extensions.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerSlot(Arc<OnceLock<Peer>>);

impl PeerSlot {
    /// The backend that answered, if a response came back.
    pub(crate) fn get(&self) -> Option<&Peer> {
        self.0.get()
    }
}

/// Copies the channel's [`Peer`] response extension into the request's
/// [`PeerSlot`], so that the caller learns which backend answered even when
/// the answer is an error status (a `tonic::Status` carries no extensions).
#[derive(Clone, Debug)]
pub(crate) struct RecordPeer<S> {
    inner: S,
}

impl<S> RecordPeer<S> {
    pub(crate) fn new(inner: S) -> Self {
        RecordPeer { inner }
    }
}

impl<S, B, R> Service<http::Request<B>> for RecordPeer<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RecordPeerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let slot = request.extensions().get::<PeerSlot>().cloned();
        RecordPeerFuture {
            inner: self.inner.call(request),
            slot,
        }
    }
}

pin_project! {
    /// The response future of [`RecordPeer`].
    pub(crate) struct RecordPeerFuture<F> {
        #[pin]
        inner: F,
        slot: Option<PeerSlot>,
    }
}

impl<F> fmt::Debug for RecordPeerFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordPeerFuture").finish_non_exhaustive()
    }
}

impl<F, R, E> Future for RecordPeerFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(slot)) = (&result, this.slot.take()) {
            if let Some(peer) = response.extensions().get::<Peer>() {
                let _ = slot.0.set(peer.clone());
            }
        }
        Poll::Ready(result)
    }
}
