//! TLS for the test servers: a throwaway CA and a certificate for 127.0.0.1 (made with the
//! `openssl` tool), served through `axum::serve`; client certificates from the same CA for
//! mutual TLS.

use std::net::SocketAddr;
use std::sync::Arc;

/// Serve `router` on `listener`, over TLS when an acceptor is given.
pub(crate) fn spawn(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> tokio::task::JoinHandle<()> {
    let service = router.into_make_service_with_connect_info::<PeerCertificate>();
    match tls {
        None => tokio::spawn(async move {
            let _ = axum::serve(listener, service).await;
        }),
        Some(acceptor) => tokio::spawn(async move {
            let _ = axum::serve(TlsListener { listener, acceptor }, service).await;
        }),
    }
}

/// The client certificate (DER) the connection presented in its TLS handshake, if any: what
/// handlers read through `ConnectInfo<PeerCertificate>` for mutual TLS (RFC 8705).
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerCertificate(pub(crate) Option<Vec<u8>>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for PeerCertificate
{
    fn connect_info(_: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(None)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for PeerCertificate
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        let (_, session) = stream.io().get_ref();
        Self(
            session
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec()),
        )
    }
}

/// Asks every client for a certificate and takes any that proves possession of its key
/// (self-signed ones too), without requiring one: which certificate is acceptable is decided
/// per client after the handshake, as RFC 8705 servers do.
#[derive(Debug)]
struct AnyClientCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::server::danger::ClientCertVerifier for AnyClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Whether `der` is a client certificate `ca_pem` issued (chain, validity, client-auth usage).
pub(crate) fn issued_by(ca_pem: &[u8], der: &[u8]) -> bool {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, UnixTime};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem).flatten() {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let Ok(verifier) =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()
    else {
        return false;
    };
    verifier
        .verify_client_cert(&CertificateDer::from(der.to_vec()), &[], UnixTime::now())
        .is_ok()
}

/// The subject DN of a certificate, as RFC 4514 text (`CN=laptop`).
pub(crate) fn subject_dn(der: &[u8]) -> Option<String> {
    x509_parser::parse_x509_certificate(der)
        .ok()
        .map(|(_, c)| c.subject().to_string())
}

/// `base64url(SHA-256(der))`: a certificate's `x5t#S256` (RFC 8705 section 3.1).
pub(crate) fn x5t_s256(der: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(der))
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

/// A private CA made for one test (with the `openssl` tool): a server certificate for
/// `127.0.0.1` and, on request, client certificates, all signed by it. Nothing on the machine
/// trusts it unless a test says so. The files are removed when it is dropped.
///
/// ```no_run
/// let ca = authwire_testkit::TestCa::new();
/// let (cert_pem, key_pem) = ca.client_identity("workload-1");
/// assert!(String::from_utf8_lossy(&cert_pem).contains("BEGIN CERTIFICATE"));
/// # let _ = key_pem;
/// ```
pub struct TestCa {
    dir: std::path::PathBuf,
    ca_pem: Vec<u8>,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    /// A new CA and a server certificate for `127.0.0.1`.
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "authwire-testkit-ca-{}-{}",
            std::process::id(),
            authwire::random::hex(6)
        ));
        std::fs::create_dir_all(&dir).expect("a folder for the certificates");
        let ca_pem = crate::redis::make_certificates(&dir);
        Self { dir, ca_pem }
    }

    /// The CA certificate (PEM): what a client must trust.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca_pem
    }

    /// A client certificate for `name` (PEM) and its P-256 private key (PKCS#8 PEM), signed by
    /// this CA, for `clientAuth`.
    pub fn client_identity(&self, name: &str) -> (Vec<u8>, Vec<u8>) {
        let stem = format!("client-{}", authwire::random::hex(4));
        crate::redis::make_client_certificate(&self.dir, &stem, name);
        let read = |ext: &str| {
            std::fs::read(self.dir.join(format!("{stem}.{ext}"))).expect("read the client certificate")
        };
        (read("pem"), read("key"))
    }

    /// A self-signed client certificate for `name` (for `self_signed_tls_client_auth`): its
    /// PEM certificate and PEM key.
    pub fn self_signed_identity(&self, name: &str) -> (Vec<u8>, Vec<u8>) {
        let stem = format!("self-{}", authwire::random::hex(4));
        let (key, pem) = (format!("{stem}.key"), format!("{stem}.pem"));
        let subject = format!("/CN={name}");
        crate::redis::openssl(
            &self.dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &pem,
                "-days",
                "2",
                "-subj",
                &subject,
                "-addext",
                "extendedKeyUsage=clientAuth",
            ],
        );
        let read = |f: &str| std::fs::read(self.dir.join(f)).expect("read the self-signed certificate");
        (read(&pem), read(&key))
    }

    /// A TLS acceptor for `127.0.0.1` that asks for a client certificate and takes any (the
    /// server decides per client, after the handshake: mutual TLS as RFC 8705 does it).
    pub fn acceptor_any_client_certificate(&self) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(self.dir.join("server.pem"))
            .expect("read the server certificate")
            .collect::<Result<_, _>>()
            .expect("a PEM certificate");
        let key = PrivateKeyDer::from_pem_file(self.dir.join("server.key")).expect("read the server key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_client_cert_verifier(Arc::new(AnyClientCertificate(provider)))
            .with_single_cert(certs, key)
            .expect("a usable certificate and key");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }

    /// A TLS server configuration with this CA's server certificate; with
    /// `require_client_certificate`, a client must present a certificate this CA signed.
    pub fn acceptor(&self, require_client_certificate: bool) -> tokio_rustls::TlsAcceptor {
        acceptor_with(
            &self.dir,
            require_client_certificate.then_some(self.ca_pem.as_slice()),
        )
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS server configuration from `server.pem` and `server.key` in `dir`.
pub(crate) fn acceptor(dir: &std::path::Path) -> tokio_rustls::TlsAcceptor {
    acceptor_with(dir, None)
}

/// [`acceptor`], requiring a client certificate signed by `client_ca` when given.
fn acceptor_with(dir: &std::path::Path, client_ca: Option<&[u8]>) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("read the server certificate")
        .collect::<Result<_, _>>()
        .expect("a PEM certificate");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("read the server key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                roots.add(cert.expect("a PEM CA")).expect("a usable CA");
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .expect("a client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
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
