//! TLS through the Channel against real TLS servers on loopback: certificates
//! made here with rcgen for `greeter.test`, a name the test's manual resolver
//! resolves to several 127.0.0.x addresses. Every endpoint is verified against
//! that name, never against its IP; each way a handshake can be wrong is
//! refused with its own error, on its endpoint only.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::fast_backoff;

use grpc_lb::connect::tls::rustls;
use grpc_lb::resolve::{Endpoint, ManualHandle, ManualResolver, Registry};
use grpc_lb::{Channel, ConnectivityState, TlsConfig, TlsError, TlsErrorKind};
use grpc_lb_helloworld::proto::{GreeterClient, GreeterServer, HelloRequest};
use grpc_lb_helloworld::NamedGreeter;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tower::Service;

type GrpcChannel = Channel<grpc_lb::connect::Http2Connection<tonic::body::Body>>;

const LIMIT: Duration = Duration::from_secs(20);
const NAME: &str = "greeter.test";

// ===== certificates =====

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate chain (leaf first) and its key.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }

    /// A server certificate for `names`.
    fn server(&self, names: &[&str]) -> Identity {
        self.issue(names, ExtendedKeyUsagePurpose::ServerAuth, false)
    }

    /// A client certificate.
    fn client(&self, name: &str) -> Identity {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth, false)
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose, expired: bool) -> Identity {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        identity(cert, key)
    }
}

fn identity(cert: rcgen::Certificate, key: KeyPair) -> Identity {
    Identity {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A self-signed server certificate for `name`, issued by no CA.
fn self_signed(name: &str) -> Identity {
    let params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    identity(cert, key)
}

// ===== servers =====

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server config: this identity, client certificates from `client_ca`
/// required if given, ALPN `h2` unless `alpn` is false.
fn server_config(identity: &Identity, client_ca: Option<&Ca>, alpn: bool) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider())
                .build()
                .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .unwrap();
    if alpn {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    Arc::new(config)
}

/// A Greeter behind TLS, served by hyper over tokio-rustls; it records the
/// SNI of every handshake attempt (failed ones too) and the `:authority` of
/// every request. Stopped (with all its connections) when dropped.
struct TlsServer {
    addr: SocketAddr,
    names: watch::Sender<Vec<Option<String>>>,
    authorities: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_tls(ip: &str, backend: &str, config: Arc<ServerConfig>) -> TlsServer {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let names = watch::Sender::new(Vec::new());
    let authorities = Arc::new(Mutex::new(Vec::new()));
    let greeter = GreeterServer::new(NamedGreeter::new(backend));
    let (seen_names, seen_authorities) = (names.clone(), authorities.clone());
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let config = config.clone();
            let greeter = greeter.clone();
            let names = seen_names.clone();
            let authorities = seen_authorities.clone();
            connections.spawn(async move {
                let acceptor = rustls::server::Acceptor::default();
                let Ok(start) = tokio_rustls::LazyConfigAcceptor::new(acceptor, tcp).await else {
                    return;
                };
                let sni = start.client_hello().server_name().map(str::to_owned);
                names.send_modify(|names| names.push(sni));
                let Ok(tls) = start.into_stream(config).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request| {
                    let authority = request.uri().authority().map(|a| a.to_string());
                    authorities
                        .lock()
                        .unwrap()
                        .push(authority.unwrap_or_default());
                    greeter.clone().call(request)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TlsServer {
        addr,
        names,
        authorities,
        task,
    }
}

// ===== channels =====

/// A round_robin TLS channel to `greeter.test:443`, which the returned handle
/// resolves.
fn tls_channel(tls: TlsConfig) -> (GrpcChannel, ManualHandle) {
    let (resolver, handle) = ManualResolver::new("test");
    let mut registry = Registry::with_defaults();
    registry.register(resolver);
    let channel = Channel::builder(format!("test:///{NAME}:443"))
        .resolver_registry(registry)
        .policy("round_robin")
        .backoff(fast_backoff())
        .tls(tls)
        .build()
        .unwrap();
    (channel, handle)
}

fn trusting(ca: &Ca) -> TlsConfig {
    TlsConfig::new()
        .with_root_certificates_pem(ca.pem().as_bytes())
        .unwrap()
}

async fn hello(channel: &GrpcChannel) -> Result<String, tonic::Status> {
    let mut client = GreeterClient::new(channel.clone());
    let request = tonic::Request::new(HelloRequest { name: "t".into() });
    let reply = timeout(LIMIT, client.say_hello(request))
        .await
        .expect("the call ends");
    reply.map(|r| r.into_inner().message)
}

fn backend(message: &str) -> String {
    message.rsplit(' ').next().unwrap_or_default().to_owned()
}

/// Waits until `count` endpoints are ready to pick.
async fn wait_ready(channel: &GrpcChannel, count: usize) {
    let mut picker = channel.watch_picker();
    timeout(LIMIT, async {
        while channel.ready_addresses().len() != count {
            picker.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{count} endpoints ready, have {:?}",
            channel.ready_addresses()
        )
    });
}

/// Waits for TRANSIENT_FAILURE and returns the TLS error that caused it, as
/// its kind and the whole message.
async fn tls_failure(channel: &GrpcChannel) -> (TlsErrorKind, String) {
    channel.connect();
    let mut state = channel.watch_state();
    let failed = timeout(
        LIMIT,
        state.wait_for(|c| c.state == ConnectivityState::TransientFailure),
    )
    .await
    .expect("the channel fails")
    .unwrap()
    .clone();
    let error = failed.last_error.expect("a cause");
    let tls = TlsError::find(&*error).unwrap_or_else(|| panic!("not a TLS error: {error}"));
    (tls.kind(), error.to_string())
}

// ===== tests =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_is_verified_against_the_target_host() {
    let ca = Ca::new("test CA");
    let config = server_config(&ca.server(&[NAME]), None, true);
    let mut servers = Vec::new();
    for (ip, name) in [("127.0.0.1", "a"), ("127.0.0.2", "b"), ("127.0.0.3", "c")] {
        servers.push(serve_tls(ip, name, config.clone()).await);
    }
    let (channel, resolver) = tls_channel(trusting(&ca));
    resolver.reset(servers.iter().map(|s| Endpoint::new(s.addr)));
    wait_ready(&channel, 3).await;

    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..6 {
        seen.insert(backend(&hello(&channel).await.unwrap()));
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["a", "b", "c"]);
    for server in &servers {
        let names = server.names.borrow().clone();
        assert_eq!(names, vec![Some(NAME.to_owned())], "SNI at {}", server.addr);
        let authorities = server.authorities.lock().unwrap().clone();
        assert!(!authorities.is_empty());
        assert!(
            authorities.iter().all(|a| a == "greeter.test:443"),
            "{authorities:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_name_certificate_is_refused_on_its_endpoint_while_the_others_serve() {
    let ca = Ca::new("test CA");
    let good = server_config(&ca.server(&[NAME]), None, true);
    let wrong = server_config(&ca.server(&["wrong.test"]), None, true);
    let impostor = serve_tls("127.0.0.3", "impostor", wrong).await;
    let (channel, resolver) = tls_channel(trusting(&ca));

    // Alone, the impostor fails the channel with a name mismatch.
    resolver.reset([Endpoint::new(impostor.addr)]);
    let (kind, message) = tls_failure(&channel).await;
    assert_eq!(kind, TlsErrorKind::NameMismatch, "{message}");
    assert!(
        message.contains(&format!("connect to {} failed", impostor.addr))
            && message.contains("not valid for \"greeter.test\"")
            && message.contains("wrong.test"),
        "{message}"
    );

    // With two honest servers beside it, they serve and it is never picked.
    let a = serve_tls("127.0.0.1", "a", good.clone()).await;
    let b = serve_tls("127.0.0.2", "b", good).await;
    resolver.add([Endpoint::new(a.addr), Endpoint::new(b.addr)]);
    wait_ready(&channel, 2).await;
    assert_eq!(channel.state(), ConnectivityState::Ready);
    for _ in 0..10 {
        let reply = hello(&channel).await.unwrap();
        assert!(["a", "b"].contains(&backend(&reply).as_str()), "{reply}");
    }
    assert!(!channel
        .ready_addresses()
        .contains(&grpc_lb::resolve::Address::Socket(impostor.addr)));
    // It backs off and tries again, asking for greeter.test each time, and is
    // refused each time.
    let mut attempts = impostor.names.subscribe();
    let attempts = timeout(LIMIT, attempts.wait_for(|names| names.len() >= 2))
        .await
        .expect("the impostor is tried again")
        .unwrap()
        .clone();
    assert!(
        attempts.iter().all(|n| n.as_deref() == Some(NAME)),
        "{attempts:?}"
    );
    assert!(hello(&channel).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_targets_check_the_authority_override_not_the_ips() {
    let ca = Ca::new("test CA");
    let config = server_config(&ca.server(&[NAME]), None, true);
    let a = serve_tls("127.0.0.2", "a", config.clone()).await;
    let b = serve_tls("127.0.0.3", "b", config).await;
    let target = format!("ipv4:{},{}", a.addr, b.addr);

    // The target's authority is the first IP, which the certificate does not name.
    let by_ip = Channel::builder(target.clone())
        .tls(trusting(&ca))
        .backoff(fast_backoff())
        .build()
        .unwrap();
    let (kind, message) = tls_failure(&by_ip).await;
    assert_eq!(kind, TlsErrorKind::NameMismatch, "{message}");

    let by_name = Channel::builder(target)
        .authority(NAME)
        .tls(trusting(&ca))
        .policy("round_robin")
        .backoff(fast_backoff())
        .build()
        .unwrap();
    wait_ready(&by_name, 2).await;
    assert!(hello(&by_name).await.is_ok());
    assert!(a.authorities.lock().unwrap().iter().all(|x| x == NAME));
    assert!(b.names.borrow().contains(&Some(NAME.to_owned())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_accepts_a_client_certificate_from_the_trusted_ca() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let config = server_config(&ca.server(&[NAME]), Some(&clients), true);
    let server = serve_tls("127.0.0.2", "mtls", config).await;

    let client = clients.client("client.test");
    let tls = trusting(&ca)
        .with_client_identity_pem(client.cert_pem.as_bytes(), client.key_pem.as_bytes())
        .unwrap();
    let (channel, resolver) = tls_channel(tls);
    resolver.reset([Endpoint::new(server.addr)]);
    assert_eq!(hello(&channel).await.unwrap(), "Hello t from mtls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_missing_or_untrusted_client_certificate() {
    let ca = Ca::new("server CA");
    let clients = Ca::new("client CA");
    let config = server_config(&ca.server(&[NAME]), Some(&clients), true);
    let server = serve_tls("127.0.0.2", "mtls", config).await;

    let (without, resolver) = tls_channel(trusting(&ca));
    resolver.reset([Endpoint::new(server.addr)]);
    let (kind, message) = tls_failure(&without).await;
    assert_eq!(kind, TlsErrorKind::ClientCertificateRequired, "{message}");
    assert!(message.contains("client certificate"), "{message}");

    let stranger = Ca::new("someone else's CA").client("client.test");
    let tls = trusting(&ca)
        .with_client_identity(stranger.chain, stranger.key)
        .unwrap();
    let (untrusted, resolver) = tls_channel(tls);
    resolver.reset([Endpoint::new(server.addr)]);
    let (kind, message) = tls_failure(&untrusted).await;
    assert_eq!(kind, TlsErrorKind::ClientCertificateRejected, "{message}");
    let status = hello(&untrusted).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("client certificate"),
        "{status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_server_behind_a_tls_channel_is_refused() {
    let listener = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(grpc_lb_helloworld::serve(
        listener,
        NamedGreeter::new("plain"),
        async {
            let _ = stopped.await;
        },
    ));
    let (channel, resolver) = tls_channel(trusting(&Ca::new("test CA")));
    resolver.reset([Endpoint::new(addr)]);
    let (kind, message) = tls_failure(&channel).await;
    assert_eq!(kind, TlsErrorKind::NotTls, "{message}");
    assert!(message.contains("plaintext"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificate_is_refused() {
    let ca = Ca::new("test CA");
    let expired = ca.issue(&[NAME], ExtendedKeyUsagePurpose::ServerAuth, true);
    let server = serve_tls("127.0.0.2", "old", server_config(&expired, None, true)).await;
    let (channel, resolver) = tls_channel(trusting(&ca));
    resolver.reset([Endpoint::new(server.addr)]);
    let (kind, message) = tls_failure(&channel).await;
    assert_eq!(kind, TlsErrorKind::Expired, "{message}");
    assert!(message.contains("expired"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_certificate_without_a_configured_root_is_refused() {
    let server = serve_tls(
        "127.0.0.2",
        "self",
        server_config(&self_signed(NAME), None, true),
    )
    .await;
    let (channel, resolver) = tls_channel(trusting(&Ca::new("test CA")));
    resolver.reset([Endpoint::new(server.addr)]);
    let (kind, message) = tls_failure(&channel).await;
    assert_eq!(kind, TlsErrorKind::UnknownIssuer, "{message}");
    assert!(
        message.contains("not signed by a trusted root"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_that_does_not_select_h2_is_refused() {
    let ca = Ca::new("test CA");
    let server = serve_tls(
        "127.0.0.2",
        "no-alpn",
        server_config(&ca.server(&[NAME]), None, false),
    )
    .await;
    let (channel, resolver) = tls_channel(trusting(&ca));
    resolver.reset([Endpoint::new(server.addr)]);
    let (kind, message) = tls_failure(&channel).await;
    assert_eq!(kind, TlsErrorKind::AlpnMismatch, "{message}");
    assert!(message.contains("\"h2\" is required"), "{message}");
}
