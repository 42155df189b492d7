//! tonic's `tls` and `tls_client_auth` clients on a grpc-lb `Channel`: the
//! server's certificate checked against a CA of our own, then a server that
//! also wants a certificate from the client (mutual TLS).
//!
//! tonic's `ClientTlsConfig` becomes `grpc_lb::TlsConfig` (rustls), given to
//! `Builder::tls`: `ca_certificate` is `with_root_certificates_pem`,
//! `identity` is `with_client_identity_pem`, `domain_name` is
//! `with_server_name`. Every endpoint the channel connects to is checked
//! against that one name. A refused handshake fails that connection attempt
//! like any connection failure: the call fails with `UNAVAILABLE`, naming the
//! cause. The certificates are made at run time with rcgen.
//!
//! ```text
//! cargo run -p examples --example tls
//! ```

use std::sync::Arc;

use grpc_lb::connect::tls::rustls;
use grpc_lb::{Channel, TlsConfig};
use grpc_lb_helloworld::proto::{GreeterClient, GreeterServer, HelloRequest};
use grpc_lb_helloworld::NamedGreeter;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tonic::Code;
use tower::Service as _;

type Error = Box<dyn std::error::Error + Send + Sync>;
type GrpcChannel = Channel<grpc_lb::connect::Http2Connection<tonic::body::Body>>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    run().await.map(drop)
}

/// Calls a TLS server, then a mutual-TLS server without and with a client
/// certificate; returns how each call ended.
async fn run() -> Result<Vec<Result<String, Code>>, Error> {
    let certs = Certificates::new()?;
    let tls = TlsConfig::new()
        .with_root_certificates_pem(certs.ca.pem().as_bytes())?
        .with_server_name("localhost")?;
    let mut outcomes = Vec::new();

    println!("TLS:");
    let server = serve_tls(certs.server_config(false)?).await?;
    let channel = Channel::builder(format!("ipv4:{server}"))
        .tls(tls.clone())
        .build()?;
    outcomes.push(say_hello(channel).await);

    println!("mutual TLS, without a client certificate:");
    let server = serve_tls(certs.server_config(true)?).await?;
    let channel = Channel::builder(format!("ipv4:{server}"))
        .tls(tls.clone())
        .build()?;
    outcomes.push(say_hello(channel).await);

    println!("mutual TLS, with a client certificate:");
    let tls = tls.with_client_identity_pem(certs.client.0.as_bytes(), certs.client.1.as_bytes())?;
    let channel = Channel::builder(format!("ipv4:{server}"))
        .tls(tls)
        .build()?;
    outcomes.push(say_hello(channel).await);
    Ok(outcomes)
}

async fn say_hello(channel: GrpcChannel) -> Result<String, Code> {
    let request = tonic::Request::new(HelloRequest {
        name: "Tonic".into(),
    });
    match GreeterClient::new(channel).say_hello(request).await {
        Ok(response) => {
            println!("\tRESPONSE={:?}", response.get_ref());
            Ok(response.into_inner().message)
        }
        Err(status) => {
            println!("\tERROR={:?}: {}", status.code(), status.message());
            Err(status.code())
        }
    }
}

/// A CA, a server certificate for `localhost` and a client certificate, both
/// issued by that CA.
struct Certificates {
    ca: CertifiedIssuer<'static, KeyPair>,
    server: (rcgen::Certificate, KeyPair),
    /// The client's certificate and key, in PEM.
    client: (String, String),
}

impl Certificates {
    fn new() -> Result<Self, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;

        let issue = |name: &str, usage| -> Result<_, rcgen::Error> {
            let mut params = CertificateParams::new(vec![name.to_owned()])?;
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate()?;
            Ok((params.signed_by(&key, &ca)?, key))
        };
        let server = issue("localhost", ExtendedKeyUsagePurpose::ServerAuth)?;
        let (client, client_key) = issue("client", ExtendedKeyUsagePurpose::ClientAuth)?;
        let client = (client.pem(), client_key.serialize_pem());
        Ok(Self { ca, server, client })
    }

    /// The server's TLS config; with `client_auth`, it requires a client
    /// certificate issued by the CA.
    fn server_config(&self, client_auth: bool) -> Result<ServerConfig, Error> {
        let builder = ServerConfig::builder();
        let builder = if client_auth {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca.der().clone())?;
            builder.with_client_cert_verifier(WebPkiClientVerifier::builder(roots.into()).build()?)
        } else {
            builder.with_no_client_auth()
        };
        let (cert, key) = &self.server;
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// A Greeter behind TLS on loopback (hyper over tokio-rustls); returns its
/// address.
async fn serve_tls(config: ServerConfig) -> Result<std::net::SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let greeter = GreeterServer::new(NamedGreeter::new("tls-greeter"));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, greeter) = (acceptor.clone(), greeter.clone());
            tokio::spawn(async move {
                // A handshake the server refuses ends here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |request| greeter.clone().call(request));
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn checks_certificates_both_ways() {
    let outcomes = run().await.unwrap();
    let hello = Ok("Hello Tonic from tls-greeter".to_owned());
    assert_eq!(outcomes, [hello.clone(), Err(Code::Unavailable), hello]);
}
