//! TLS over any transport, with rustls (feature `tls`).
//!
//! [`TlsConnector`] wraps a transport connector ([`TcpConnector`](crate::TcpConnector),
//! [`UnixConnector`](crate::UnixConnector), [`BoxConnector`](crate::BoxConnector),
//! yours) and runs a TLS handshake over each stream it returns. It is a
//! transport itself, so [`Http2Connector`](crate::Http2Connector) runs HTTP/2
//! over it, and the reconnect layer above backs off from a failed handshake
//! like from any failed connection.
//!
//! **The server name.** The certificate is checked against one name for every
//! address the connector is asked to reach: the name set with
//! [`TlsConfig::with_server_name`], which a channel sets from its target's host
//! (`greeter.example` for `dns:///greeter.example:443`) or from an authority
//! override. That is what grpc-go does, and it is the point of the exercise:
//! balancing over resolved IPs must not check certificates against the IPs.
//! Only when no name is set does the connector fall back to the target itself,
//! an IP address for a `SocketAddr`, which then has to be in the certificate's
//! IP SANs.
//!
//! **ALPN.** `h2` is offered, and a server that does not select it is refused
//! ([`TlsErrorKind::AlpnMismatch`]), as grpc-go does since 1.67.
//!
//! **Failures** are [`TlsError`]s whose [`kind`](TlsError::kind) says what went
//! wrong and whose message says it in words: the certificate names someone else,
//! was issued by no root you trust, has expired, the server is not speaking TLS,
//! the server wants (or refused) a client certificate.
//!
//! # Examples
//!
//! ```no_run
//! # async fn run() -> Result<(), grpc_lb_core::BoxError> {
//! use grpc_lb_connect::tls::{TlsConfig, TlsConnector};
//! use grpc_lb_connect::{Http2Connector, TcpConnector};
//! use tower_service::Service;
//!
//! let config = TlsConfig::new()
//!     .with_root_certificates_pem(&std::fs::read("ca.pem")?)?
//!     .with_client_identity_pem(&std::fs::read("client.pem")?, &std::fs::read("client.key")?)?
//!     .with_server_name("greeter.example")?;
//! let mut connector = Http2Connector::<http_body_util::Empty<bytes::Bytes>>::new()
//!     .with_transport(TlsConnector::new(config, TcpConnector::new()))
//!     .with_scheme(http::uri::Scheme::HTTPS)
//!     .with_authority("greeter.example:443".parse()?);
//! let connection = connector.call("192.0.2.10:443".parse()?).await?;
//! # drop(connection);
//! # Ok(())
//! # }
//! ```

use std::error::Error;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use grpc_lb_core::BoxError;
use rustls::client::{ClientConfig, ResolvesClientCert};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, CertificateError, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower_service::Service;

use crate::io::{Io, IoFuture};

pub use rustls;
pub use tokio_rustls::client::TlsStream;

/// The ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// The ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// What a [`TlsConnector`] trusts, presents and checks.
///
/// Starts empty: with no root certificate nothing is trusted, and every
/// handshake fails with [`TlsErrorKind::UnknownIssuer`]. Add your own roots
/// ([`with_root_certificates_pem`](Self::with_root_certificates_pem),
/// [`with_root_store`](Self::with_root_store)), the operating system's
/// (`with_native_roots`, feature `tls-native-roots`) or Mozilla's
/// (`with_webpki_roots`, feature `tls-webpki-roots`). Offers ALPN `h2`.
///
/// # Examples
///
/// ```
/// use grpc_lb_connect::tls::TlsConfig;
///
/// # fn run(ca_pem: &[u8]) -> Result<(), grpc_lb_connect::tls::TlsError> {
/// let config = TlsConfig::new()
///     .with_root_certificates_pem(ca_pem)?
///     .with_server_name("greeter.example")?;
/// assert_eq!(config.server_name().map(|n| n.to_str().into_owned()), Some("greeter.example".into()));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    source: Source,
    server_name: Option<ServerName<'static>>,
    alpn: Vec<Vec<u8>>,
}

/// A client certificate chain, leaf first, and its private key.
type Identity = Arc<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>;

#[derive(Clone)]
enum Source {
    Parts {
        roots: Arc<RootCertStore>,
        identity: Option<Identity>,
    },
    Custom(Arc<ClientConfig>),
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("TlsConfig");
        match &self.source {
            Source::Parts { roots, identity } => s
                .field("roots", &roots.len())
                .field("client_identity", &identity.is_some()),
            Source::Custom(_) => s.field("client_config", &"custom"),
        };
        s.field("server_name", &self.server_name)
            .field(
                "alpn",
                &self
                    .alpn
                    .iter()
                    .map(|p| String::from_utf8_lossy(p))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig::new()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsConfig {
    /// No roots, no client certificate, no server name, ALPN `h2`.
    pub fn new() -> Self {
        TlsConfig {
            source: Source::Parts {
                roots: Arc::new(RootCertStore::empty()),
                identity: None,
            },
            server_name: None,
            alpn: vec![ALPN_H2.to_vec()],
        }
    }

    /// Uses a rustls `ClientConfig` of your own (its roots, verifier, client
    /// certificate, protocol versions). Its ALPN protocols are replaced by this
    /// config's (`h2`, or [`with_alpn_protocols`](Self::with_alpn_protocols)).
    pub fn from_client_config(config: ClientConfig) -> Self {
        TlsConfig {
            source: Source::Custom(Arc::new(config)),
            ..TlsConfig::new()
        }
    }

    fn parts_mut(&mut self) -> Result<(&mut Arc<RootCertStore>, &mut Option<Identity>), TlsError> {
        match &mut self.source {
            Source::Parts { roots, identity } => Ok((roots, identity)),
            Source::Custom(_) => Err(TlsError::config(
                "this TlsConfig wraps a rustls ClientConfig: set roots and client certificates on it",
            )),
        }
    }

    /// Trusts these root certificates, in addition to any already added.
    pub fn with_root_store(mut self, store: RootCertStore) -> Self {
        if let Ok((roots, _)) = self.parts_mut() {
            Arc::make_mut(roots).roots.extend(store.roots);
        }
        self
    }

    /// Trusts one root certificate (DER).
    pub fn add_root_certificate(mut self, cert: CertificateDer<'_>) -> Result<Self, TlsError> {
        let (roots, _) = self.parts_mut()?;
        Arc::make_mut(roots).add(cert).map_err(|e| {
            TlsError::config_with("the root certificate cannot be used as a trust anchor", e)
        })?;
        Ok(self)
    }

    /// Trusts every certificate in this PEM text (`-----BEGIN CERTIFICATE-----`
    /// blocks). Fails if there is none, or one does not parse.
    pub fn with_root_certificates_pem(mut self, pem: &[u8]) -> Result<Self, TlsError> {
        let certs = parse_certificates(pem, "root certificates")?;
        for cert in certs {
            self = self.add_root_certificate(cert)?;
        }
        Ok(self)
    }

    /// Trusts the operating system's root certificates (feature
    /// `tls-native-roots`). Fails if none could be loaded.
    #[cfg(feature = "tls-native-roots")]
    pub fn with_native_roots(mut self) -> Result<Self, TlsError> {
        let loaded = rustls_native_certs::load_native_certs();
        let (roots, _) = self.parts_mut()?;
        let (added, _ignored) = Arc::make_mut(roots).add_parsable_certificates(loaded.certs);
        if added == 0 {
            let why = loaded
                .errors
                .first()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            return Err(TlsError::config(format!(
                "no usable root certificate found in the operating system's store{why}"
            )));
        }
        Ok(self)
    }

    /// Trusts Mozilla's root certificates, compiled in (feature
    /// `tls-webpki-roots`).
    #[cfg(feature = "tls-webpki-roots")]
    pub fn with_webpki_roots(mut self) -> Self {
        if let Ok((roots, _)) = self.parts_mut() {
            Arc::make_mut(roots)
                .roots
                .extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        self
    }

    /// Presents this certificate chain (leaf first) and private key to servers
    /// that ask for one: mutual TLS. Fails if the key cannot be used or does not
    /// match the certificate.
    pub fn with_client_identity(
        mut self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        if chain.is_empty() {
            return Err(TlsError::config("the client certificate chain is empty"));
        }
        CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider()).map_err(|e| {
            TlsError::config_with("the client certificate and key cannot be used", e)
        })?;
        let (_, identity) = self.parts_mut()?;
        *identity = Some(Arc::new((chain, key)));
        Ok(self)
    }

    /// [`with_client_identity`](Self::with_client_identity) from PEM: the
    /// certificate chain, leaf first, and the private key (PKCS#8, PKCS#1 or
    /// SEC1).
    pub fn with_client_identity_pem(self, chain: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let chain = parse_certificates(chain, "client certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| TlsError::config_with("no private key in the client key PEM", e))?;
        self.with_client_identity(chain, key)
    }

    /// Checks server certificates against this name (a DNS name or an IP
    /// address), and sends it as SNI, whatever address is connected to.
    pub fn with_server_name(mut self, name: impl AsRef<str>) -> Result<Self, TlsError> {
        self.server_name = Some(parse_server_name(name.as_ref())?);
        Ok(self)
    }

    /// The name set with [`with_server_name`](Self::with_server_name).
    pub fn server_name(&self) -> Option<&ServerName<'static>> {
        self.server_name.as_ref()
    }

    /// Offers these ALPN protocols instead of `h2` (e.g. [`ALPN_HTTP11`] for an
    /// HTTP/1.1 transport), and refuses a server that selects none of them. An
    /// empty list offers none and checks nothing.
    pub fn with_alpn_protocols(mut self, protocols: Vec<Vec<u8>>) -> Self {
        self.alpn = protocols;
        self
    }

    /// The rustls client configuration this describes.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let mut config = match &self.source {
            Source::Custom(config) => ClientConfig::clone(config),
            Source::Parts { roots, identity } => {
                let builder = ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| TlsError::config_with("no usable TLS protocol version", e))?
                    .with_root_certificates(roots.clone());
                match identity {
                    Some(identity) => builder
                        .with_client_auth_cert(identity.0.clone(), identity.1.clone_key())
                        .map_err(|e| {
                            TlsError::config_with(
                                "the client certificate and key cannot be used",
                                e,
                            )
                        })?,
                    None => builder.with_no_client_auth(),
                }
            }
        };
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }
}

fn parse_certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::config_with(format!("the {what} PEM does not parse"), e))?;
    if certs.is_empty() {
        return Err(TlsError::config(format!(
            "no CERTIFICATE block in the {what} PEM"
        )));
    }
    Ok(certs)
}

fn parse_server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    let host = name.strip_prefix('[').and_then(|n| n.strip_suffix(']'));
    let name = host.unwrap_or(name);
    ServerName::try_from(name.to_owned()).map_err(|e| TlsError {
        kind: TlsErrorKind::InvalidServerName,
        server_name: Some(name.to_owned()),
        detail: format!("{name:?} is neither a DNS name nor an IP address"),
        source: Some(Box::new(e)),
    })
}

/// The name to check when none is configured: the host of the target as
/// written (an IP for a socket address).
fn server_name_of(target: &str) -> Result<ServerName<'static>, TlsError> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(ServerName::IpAddress(addr.ip().into()));
    }
    if let Ok(ip) = target.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    let host = match target.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => target,
    };
    parse_server_name(host)
}

// ===== impl TlsConnector =====

/// Runs a TLS client handshake over each stream of an inner transport
/// connector. See the [module docs](self).
///
/// Its response is a [`TlsStream`] over the inner stream; its errors are the
/// inner connector's, or a [`TlsError`].
///
/// ```
/// use grpc_lb_connect::tls::{TlsConfig, TlsConnector, TlsError, TlsErrorKind};
/// use grpc_lb_connect::TcpConnector;
/// use tokio::io::AsyncWriteExt;
/// use tower_service::Service;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), grpc_lb_core::BoxError> {
/// // A plaintext server where a TLS one was expected.
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let addr = listener.local_addr()?;
/// tokio::spawn(async move {
///     let (mut socket, _) = listener.accept().await?;
///     socket.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await
/// });
///
/// let config = TlsConfig::new().with_server_name("greeter.example")?;
/// let mut connector = TlsConnector::new(config, TcpConnector::new());
/// let error = connector.call(addr).await.unwrap_err();
/// let tls = TlsError::find(&*error).unwrap();
/// assert_eq!(tls.kind(), TlsErrorKind::NotTls);
/// assert_eq!(tls.server_name(), Some("greeter.example"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct TlsConnector<C> {
    inner: C,
    config: Result<Arc<ClientConfig>, Arc<TlsError>>,
    server_name: Option<ServerName<'static>>,
    alpn: Arc<[Vec<u8>]>,
}

impl<C: fmt::Debug> fmt::Debug for TlsConnector<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("inner", &self.inner)
            .field("server_name", &self.server_name)
            .field("config_error", &self.config.as_ref().err())
            .finish()
    }
}

impl<C> TlsConnector<C> {
    /// TLS with `config` over the streams of `inner`.
    ///
    /// A config that cannot be turned into a rustls config (which the
    /// fallible setters of [`TlsConfig`] rule out) makes every connection
    /// attempt fail with that error, rather than panicking here.
    pub fn new(config: TlsConfig, inner: C) -> Self {
        TlsConnector {
            inner,
            config: config.client_config().map_err(Arc::new),
            server_name: config.server_name.clone(),
            alpn: config.alpn.into(),
        }
    }

    /// The inner transport connector.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }

    /// The inner transport connector, mutably.
    pub fn get_mut(&mut self) -> &mut C {
        &mut self.inner
    }

    /// The inner transport connector, consuming this one.
    pub fn into_inner(self) -> C {
        self.inner
    }
}

impl<C, T> Service<T> for TlsConnector<C>
where
    C: Service<T>,
    C::Response: Io,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
    T: fmt::Display,
{
    type Response = TlsIo<C::Response>;
    type Error = BoxError;
    type Future = IoFuture<TlsIo<C::Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, target: T) -> Self::Future {
        let name = match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => server_name_of(&target.to_string()),
        };
        let stream = self.inner.call(target);
        let config = self.config.clone();
        let alpn = self.alpn.clone();
        IoFuture::new(async move {
            let config = config.map_err(|e| TlsError::clone_of(&e))?;
            let name = name?;
            let io = stream.await.map_err(Into::into)?;
            let display = name.to_str().into_owned();
            // Each connection notes whether the server asked for a client
            // certificate, to explain a connection it then drops.
            let client_auth = Arc::new(AtomicU8::new(NOT_ASKED));
            let mut config = ClientConfig::clone(&config);
            config.client_auth_cert_resolver = Arc::new(RecordingResolver {
                inner: config.client_auth_cert_resolver.clone(),
                outcome: client_auth.clone(),
            });
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, io)
                .await
                .map_err(|e| TlsError::from_handshake(e, &display))?;
            if !alpn.is_empty() {
                let chosen = stream.get_ref().1.alpn_protocol();
                if !chosen.is_some_and(|p| alpn.iter().any(|a| a == p)) {
                    return Err(TlsError::alpn(&display, &alpn, chosen).into());
                }
            }
            Ok(TlsIo {
                stream,
                client_auth: client_auth.load(Ordering::Acquire),
                heard: false,
            })
        })
    }
}

const NOT_ASKED: u8 = 0;
const ASKED_NONE: u8 = 1;
const ASKED_PRESENTED: u8 = 2;

/// Passes the configured client certificate through, noting that the server
/// asked for it.
#[derive(Debug)]
struct RecordingResolver {
    inner: Arc<dyn ResolvesClientCert>,
    outcome: Arc<AtomicU8>,
}

impl ResolvesClientCert for RecordingResolver {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let resolved = self.inner.resolve(root_hint_subjects, sigschemes);
        let outcome = if resolved.is_some() {
            ASKED_PRESENTED
        } else {
            ASKED_NONE
        };
        self.outcome.store(outcome, Ordering::Release);
        resolved
    }

    fn only_raw_public_keys(&self) -> bool {
        self.inner.only_raw_public_keys()
    }

    fn has_certs(&self) -> bool {
        self.inner.has_certs()
    }
}

/// The stream of a [`TlsConnector`]: a rustls client stream that explains a
/// connection dropped right after a handshake in which the server asked for a
/// client certificate.
///
/// In TLS 1.3 a server checks the client's certificate after the client has
/// finished its handshake, and refuses it with an alert and a close. The
/// alert usually arrives (and becomes a [`TlsError`]), but when the client
/// has already written and the server closes with those bytes unread, the
/// kernel resets the connection and the alert is lost. A reset, broken pipe
/// or end of stream before the server's first byte is then reported as a
/// [`TlsError`] of kind `ClientCertificateRequired` (none was configured) or
/// `ClientCertificateRejected` (one was presented).
///
/// ```no_run
/// use grpc_lb_connect::tls::{TlsConfig, TlsConnector};
/// use grpc_lb_connect::TcpConnector;
/// use tower_service::Service;
///
/// # async fn run() -> Result<(), grpc_lb_core::BoxError> {
/// let config = TlsConfig::new()
///     .with_root_certificates_pem(&std::fs::read("ca.pem")?)?
///     .with_server_name("greeter.example")?;
/// let mut connector = TlsConnector::new(config, TcpConnector::new());
/// let io = connector.call("192.0.2.10:443".parse()?).await?;
///
/// // The rustls session: what was negotiated, and with whom.
/// let (_tcp, session) = io.get_ref().get_ref();
/// assert_eq!(session.alpn_protocol(), Some(&b"h2"[..]));
/// println!("{:?}, {} certificates", session.protocol_version(), session.peer_certificates().map_or(0, |c| c.len()));
/// # Ok(())
/// # }
/// ```
pub struct TlsIo<IO> {
    stream: TlsStream<IO>,
    client_auth: u8,
    heard: bool,
}

impl<IO> TlsIo<IO> {
    /// The rustls stream.
    pub fn get_ref(&self) -> &TlsStream<IO> {
        &self.stream
    }

    /// The rustls stream, mutably.
    pub fn get_mut(&mut self) -> &mut TlsStream<IO> {
        &mut self.stream
    }

    /// The rustls stream, consuming the wrapper.
    pub fn into_inner(self) -> TlsStream<IO> {
        self.stream
    }

    /// A failure before the server's first byte, after it asked for a client
    /// certificate: most likely its verdict on that certificate.
    fn explain(&self, error: Option<io::Error>) -> Option<io::Error> {
        if self.heard || self.client_auth == NOT_ASKED {
            return error;
        }
        if let Some(error) = &error {
            if error.get_ref().is_some_and(|e| e.is::<rustls::Error>()) {
                return None;
            }
        }
        let kind = error
            .as_ref()
            .map_or(io::ErrorKind::UnexpectedEof, io::Error::kind);
        Some(io::Error::new(
            kind,
            TlsError::client_auth_dropped(self.client_auth == ASKED_PRESENTED, error),
        ))
    }
}

impl<IO> fmt::Debug for TlsIo<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIo")
            .field("client_auth_requested", &(self.client_auth != NOT_ASKED))
            .finish_non_exhaustive()
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsIo<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = std::task::ready!(Pin::new(&mut self.stream).poll_read(cx, buf));
        if self.heard || self.client_auth == NOT_ASKED {
            return Poll::Ready(result);
        }
        match result {
            Ok(()) if buf.filled().len() > before || buf.remaining() == 0 => {
                self.heard = true;
                Poll::Ready(Ok(()))
            }
            Ok(()) => match self.explain(None) {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Ready(Ok(())),
            },
            Err(error) => {
                let rustls = error.get_ref().is_some_and(|e| e.is::<rustls::Error>());
                if rustls {
                    return Poll::Ready(Err(error));
                }
                Poll::Ready(Err(self.explain(Some(error)).expect("an error stays one")))
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsIo<IO> {
    fn explain_write<T>(&self, result: io::Result<T>) -> io::Result<T> {
        match result {
            Err(error) if !error.get_ref().is_some_and(|e| e.is::<rustls::Error>()) => {
                Err(self.explain(Some(error)).expect("an error stays one"))
            }
            other => other,
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsIo<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = std::task::ready!(Pin::new(&mut self.stream).poll_write(cx, buf));
        Poll::Ready(self.explain_write(result))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = std::task::ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, bufs));
        Poll::Ready(self.explain_write(result))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = std::task::ready!(Pin::new(&mut self.stream).poll_flush(cx));
        Poll::Ready(self.explain_write(result))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

// ===== impl TlsError =====

/// A TLS connection could not be set up. [`kind`](Self::kind) says why.
///
/// ```
/// use grpc_lb_connect::tls::{TlsConfig, TlsErrorKind};
///
/// let error = TlsConfig::new().with_server_name("greeter example").unwrap_err();
/// assert_eq!(error.kind(), TlsErrorKind::InvalidServerName);
/// println!("{error}");
///
/// let error = TlsConfig::new().with_root_certificates_pem(b"not a certificate").unwrap_err();
/// assert_eq!(error.kind(), TlsErrorKind::Config);
/// ```
#[derive(Debug)]
pub struct TlsError {
    kind: TlsErrorKind,
    server_name: Option<String>,
    detail: String,
    source: Option<BoxError>,
}

/// The kinds of [`TlsError`].
///
/// ```
/// use grpc_lb_connect::tls::TlsErrorKind;
///
/// /// Whether retrying the same server could ever help without a config change.
/// fn worth_retrying(kind: TlsErrorKind) -> bool {
///     matches!(kind, TlsErrorKind::Handshake | TlsErrorKind::Expired)
/// }
///
/// assert!(!worth_retrying(TlsErrorKind::NameMismatch));
/// assert!(worth_retrying(TlsErrorKind::Handshake));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// The server's certificate is not valid for the server name checked.
    NameMismatch,
    /// The server's certificate does not chain to a trusted root (a
    /// self-signed certificate, or a CA that was not configured).
    UnknownIssuer,
    /// The server's certificate has expired or is not valid yet.
    Expired,
    /// The server's certificate is unusable for another reason (bad
    /// signature, wrong purpose, malformed, revoked).
    BadCertificate,
    /// The server did not answer in TLS: most likely a plaintext server.
    NotTls,
    /// The server requires a client certificate and none is configured.
    ClientCertificateRequired,
    /// The server refused the client certificate presented.
    ClientCertificateRejected,
    /// The server did not select an offered ALPN protocol (`h2` for gRPC).
    AlpnMismatch,
    /// The name to check is neither a DNS name nor an IP address.
    InvalidServerName,
    /// The configuration is unusable (no certificate in a PEM, a bad key).
    Config,
    /// Any other handshake failure (no common protocol version or cipher
    /// suite, an unexpected alert, a broken connection).
    Handshake,
}

impl TlsError {
    /// Why the connection failed.
    pub fn kind(&self) -> TlsErrorKind {
        self.kind
    }

    /// The server name that was checked, when known.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The first `TlsError` in `error`'s chain of sources, itself included.
    pub fn find<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a TlsError> {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(tls) = error.downcast_ref::<TlsError>() {
                return Some(tls);
            }
            current = error.source();
        }
        None
    }

    fn config(detail: impl Into<String>) -> Self {
        TlsError {
            kind: TlsErrorKind::Config,
            server_name: None,
            detail: detail.into(),
            source: None,
        }
    }

    fn config_with(detail: impl Into<String>, source: impl Into<BoxError>) -> Self {
        TlsError {
            source: Some(source.into()),
            ..TlsError::config(detail)
        }
    }

    fn clone_of(error: &TlsError) -> Self {
        TlsError {
            kind: error.kind,
            server_name: error.server_name.clone(),
            detail: error.detail.clone(),
            source: error.source.as_ref().map(|s| s.to_string().into()),
        }
    }

    fn alpn(server_name: &str, offered: &[Vec<u8>], chosen: Option<&[u8]>) -> Self {
        let offered: Vec<_> = offered
            .iter()
            .map(|p| format!("{:?}", String::from_utf8_lossy(p)))
            .collect();
        let chosen = match chosen {
            Some(p) => format!("selected {:?}", String::from_utf8_lossy(p)),
            None => "selected no protocol".to_owned(),
        };
        TlsError {
            kind: TlsErrorKind::AlpnMismatch,
            server_name: Some(server_name.to_owned()),
            detail: format!(
                "the server {chosen} by ALPN, but {} is required",
                offered.join(" or ")
            ),
            source: None,
        }
    }

    fn client_auth_dropped(presented: bool, source: Option<io::Error>) -> Self {
        let (kind, detail) = if presented {
            (
                TlsErrorKind::ClientCertificateRejected,
                "the server dropped the connection after checking the client certificate: \
                 it most likely rejected it",
            )
        } else {
            (
                TlsErrorKind::ClientCertificateRequired,
                "the server asked for a client certificate, none is configured, and it \
                 dropped the connection",
            )
        };
        TlsError {
            kind,
            server_name: None,
            detail: detail.to_owned(),
            source: source.map(|e| Box::new(e) as BoxError),
        }
    }

    /// A failed client handshake, as tokio-rustls reports it.
    fn from_handshake(error: io::Error, server_name: &str) -> Self {
        if error.get_ref().is_some_and(|e| e.is::<rustls::Error>()) {
            let inner = error
                .into_inner()
                .and_then(|e| e.downcast::<rustls::Error>().ok());
            if let Some(inner) = inner {
                return TlsError::from_rustls(*inner, Some(server_name));
            }
            unreachable!("checked to be a rustls error")
        }
        let (kind, detail) = match error.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => (
                TlsErrorKind::NotTls,
                "the server closed the connection during the TLS handshake: is it serving TLS on this port?",
            ),
            _ => (
                TlsErrorKind::Handshake,
                "the TLS handshake failed",
            ),
        };
        TlsError {
            kind,
            server_name: Some(server_name.to_owned()),
            detail: detail.to_owned(),
            source: Some(Box::new(error)),
        }
    }

    /// An I/O error whose cause is a rustls error (a TLS alert read after the
    /// handshake, as a TLS 1.3 server rejecting a client certificate sends),
    /// as a `TlsError`; any other I/O error as it is.
    pub(crate) fn classify_io(error: io::Error) -> BoxError {
        if error.get_ref().is_some_and(|e| e.is::<TlsError>()) {
            if let Some(inner) = error
                .into_inner()
                .and_then(|e| e.downcast::<TlsError>().ok())
            {
                return inner;
            }
            unreachable!("checked to be a TlsError")
        }
        if error.get_ref().is_some_and(|e| e.is::<rustls::Error>()) {
            if let Some(inner) = error
                .into_inner()
                .and_then(|e| e.downcast::<rustls::Error>().ok())
            {
                return Box::new(TlsError::from_rustls(*inner, None));
            }
            unreachable!("checked to be a rustls error")
        }
        Box::new(error)
    }

    fn from_rustls(error: rustls::Error, server_name: Option<&str>) -> Self {
        use rustls::Error as E;
        let name = server_name.unwrap_or("the server name");
        let (kind, detail) = match &error {
            E::InvalidCertificate(cert) => match cert {
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => (
                    TlsErrorKind::NameMismatch,
                    format!("the server's certificate is not valid for {name:?}"),
                ),
                CertificateError::UnknownIssuer => (
                    TlsErrorKind::UnknownIssuer,
                    "the server's certificate is not signed by a trusted root \
                     (self-signed, or its CA is not configured)"
                        .to_owned(),
                ),
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                    TlsErrorKind::Expired,
                    "the server's certificate has expired".to_owned(),
                ),
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
                    TlsErrorKind::Expired,
                    "the server's certificate is not valid yet".to_owned(),
                ),
                _ => (
                    TlsErrorKind::BadCertificate,
                    "the server's certificate cannot be used".to_owned(),
                ),
            },
            E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::PeerSentOversizedRecord => (
                TlsErrorKind::NotTls,
                "the server did not answer in TLS: is it a plaintext server?".to_owned(),
            ),
            E::AlertReceived(AlertDescription::CertificateRequired) => (
                TlsErrorKind::ClientCertificateRequired,
                "the server requires a client certificate, and none is configured".to_owned(),
            ),
            E::AlertReceived(
                alert @ (AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA
                | AlertDescription::AccessDenied),
            ) => (
                TlsErrorKind::ClientCertificateRejected,
                format!("the server rejected the client certificate (alert {alert:?})"),
            ),
            E::NoApplicationProtocol => (
                TlsErrorKind::AlpnMismatch,
                "the server supports none of the offered ALPN protocols".to_owned(),
            ),
            _ => (
                TlsErrorKind::Handshake,
                "the TLS handshake failed".to_owned(),
            ),
        };
        TlsError {
            kind,
            server_name: server_name.map(str::to_owned),
            detail,
            source: Some(Box::new(error)),
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TLS: {}", self.detail)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl Error for TlsError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_name_falls_back_to_the_target_host() {
        assert_eq!(
            server_name_of("127.0.0.2:443").unwrap(),
            ServerName::IpAddress("127.0.0.2".parse::<IpAddr>().unwrap().into())
        );
        assert_eq!(
            server_name_of("[::1]:443").unwrap(),
            ServerName::IpAddress("::1".parse::<IpAddr>().unwrap().into())
        );
        assert_eq!(
            server_name_of("greeter.example:443").unwrap(),
            ServerName::try_from("greeter.example").unwrap()
        );
        let error = server_name_of("unix:/tmp/x.sock").unwrap_err();
        assert_eq!(error.kind(), TlsErrorKind::InvalidServerName, "{error}");
    }

    #[test]
    fn a_pem_without_certificates_is_a_config_error() {
        let error = TlsConfig::new()
            .with_root_certificates_pem(b"not pem")
            .unwrap_err();
        assert_eq!(error.kind(), TlsErrorKind::Config);
        assert!(error.to_string().contains("no CERTIFICATE"), "{error}");
    }

    #[test]
    fn certificate_errors_get_their_kind_and_a_message() {
        let mismatch = TlsError::from_rustls(
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("greeter.test").unwrap(),
                presented: vec!["DnsName(\"wrong.test\")".into()],
            }),
            Some("greeter.test"),
        );
        assert_eq!(mismatch.kind(), TlsErrorKind::NameMismatch);
        assert!(
            mismatch
                .to_string()
                .contains("not valid for \"greeter.test\""),
            "{mismatch}"
        );
        let alert = TlsError::classify_io(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
        ));
        let alert = TlsError::find(&*alert).unwrap();
        assert_eq!(alert.kind(), TlsErrorKind::ClientCertificateRequired);
    }
}
