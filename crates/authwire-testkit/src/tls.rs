//! TLS for the test servers: a throwaway CA and a certificate for 127.0.0.1 (made with the
//! `openssl` tool), served through `axum::serve`.

use std::net::SocketAddr;
use std::sync::Arc;

/// Serve `router` on `listener`, over TLS when an acceptor is given.
pub(crate) fn spawn(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> tokio::task::JoinHandle<()> {
    match tls {
        None => tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        }),
        Some(acceptor) => tokio::spawn(async move {
            let _ = axum::serve(TlsListener { listener, acceptor }, router).await;
        }),
    }
}

/// Make a CA and a server certificate in a fresh folder; the acceptor and the CA (PEM).
pub(crate) fn throwaway() -> (tokio_rustls::TlsAcceptor, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!(
        "authwire-testkit-tls-{}-{}",
        std::process::id(),
        authwire::random::hex(6)
    ));
    std::fs::create_dir_all(&dir).expect("a folder for the certificates");
    let ca = crate::redis::make_certificates(&dir);
    let tls = acceptor(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    (tls, ca)
}

/// A TLS server configuration from `server.pem` and `server.key` in `dir`.
pub(crate) fn acceptor(dir: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("read the server certificate")
        .collect::<Result<_, _>>()
        .expect("a PEM certificate");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("read the server key");
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("a usable certificate and key");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Accepts TCP connections and completes their TLS handshakes, for `axum::serve`.
pub(crate) struct TlsListener {
    pub(crate) listener: tokio::net::TcpListener,
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.listener.accept().await else {
                continue;
            };
            let handshake = self.acceptor.accept(tcp);
            if let Ok(Ok(tls)) = tokio::time::timeout(std::time::Duration::from_secs(5), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}
