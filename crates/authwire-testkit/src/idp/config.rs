//! What a test configures: the clients the server knows, its behaviour ([`Settings`]), how a
//! person answers a login ([`Approval`]), and the faults it can inject ([`Fault`]).

use serde_json::json;
use std::time::Duration;

/// A registered client.
#[derive(Clone, Debug)]
pub struct Client {
    /// The `client_id`.
    pub id: String,
    /// The secret, for `client_secret_basic` / `client_secret_post`; `None` for public clients
    /// and `private_key_jwt` clients.
    pub secret: Option<String>,
    /// The public key (SPKI PEM) for `private_key_jwt`.
    pub public_key_pem: Option<String>,
    /// Mutual TLS client authentication (RFC 8705), when the client uses it.
    pub tls: Option<TlsClientAuth>,
}

/// How a client authenticates with its TLS certificate (RFC 8705 section 2).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum TlsClientAuth {
    /// `tls_client_auth`: a certificate the server's CA issued, with this subject DN
    /// (`tls_client_auth_subject_dn`, RFC 4514 text such as `CN=laptop`).
    SubjectDn(String),
    /// `self_signed_tls_client_auth`: exactly this certificate (DER), registered beforehand.
    SelfSigned(Vec<u8>),
}

impl Client {
    /// The confidential client registered by default.
    pub const CONFIDENTIAL_ID: &'static str = "client-1";
    /// Its secret. It contains characters that `client_secret_basic` must form-encode.
    pub const CONFIDENTIAL_SECRET: &'static str = "s3cret:with%special+chars";
    /// The public client (no authentication) registered by default.
    pub const PUBLIC_ID: &'static str = "public-1";
    /// The `private_key_jwt` client registered by default, with [`crate::CLIENT_PUBLIC_KEY_PEM`].
    pub const PRIVATE_KEY_JWT_ID: &'static str = "jwt-client-1";

    /// A client that authenticates with a secret.
    pub fn confidential(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: Some(secret.into()),
            public_key_pem: None,
            tls: None,
        }
    }

    /// A public client.
    pub fn public(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: None,
            public_key_pem: None,
            tls: None,
        }
    }

    /// A client that authenticates with a JWT signed by the private half of `public_key_pem`.
    pub fn private_key_jwt(id: impl Into<String>, public_key_pem: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: None,
            public_key_pem: Some(public_key_pem.into()),
            tls: None,
        }
    }

    /// A client that authenticates with a certificate the server's CA issued for
    /// `subject_dn` (`tls_client_auth`), at the `mtls_endpoint_aliases`.
    pub fn tls_client_auth(id: impl Into<String>, subject_dn: impl Into<String>) -> Self {
        Self {
            tls: Some(TlsClientAuth::SubjectDn(subject_dn.into())),
            ..Self::public(id)
        }
    }

    /// A client that authenticates with the self-signed certificate `cert_pem`
    /// (`self_signed_tls_client_auth`).
    pub fn self_signed_tls_client_auth(id: impl Into<String>, cert_pem: &[u8]) -> Self {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let der = CertificateDer::from_pem_slice(cert_pem).expect("a PEM certificate");
        Self {
            tls: Some(TlsClientAuth::SelfSigned(der.to_vec())),
            ..Self::public(id)
        }
    }
}

/// Behaviour switches of the identity server; change them at run time with
/// [`IdentityServer::update`](crate::IdentityServer::update).
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long issued access tokens live.
    pub token_lifetime: Duration,
    /// Issue JWT access tokens (RS256) rather than opaque ones.
    pub jwt_access_tokens: bool,
    /// Send `expires_in` in token responses.
    pub send_expires_in: bool,
    /// Issue a refresh token with client-credentials grants too (most servers do not).
    pub refresh_token_for_client_credentials: bool,
    /// Rotate refresh tokens: each use returns a new one and a reused one revokes the family.
    pub rotate_refresh_tokens: bool,
    /// The `interval` of device authorizations, in seconds.
    pub device_interval_secs: u64,
    /// The `expires_in` of device authorizations, in seconds (default 600).
    pub device_expires_in_secs: u64,
    /// Approve device authorizations as soon as they are made.
    pub auto_approve_devices: bool,
    /// Answer the first device-code poll of each authorization with `slow_down`.
    pub device_slow_down_once: bool,
    /// How long a token request takes before it is answered.
    pub token_delay: Duration,
    /// How long a JWKS request takes before it is answered.
    pub jwks_delay: Duration,
    /// Require this nonce in DPoP proofs of token requests (RFC 9449 section 8): a proof
    /// without it is answered `400 use_dpop_nonce` with a `DPoP-Nonce` header.
    pub dpop_nonce: Option<String>,
    /// Answer JWKS requests with this status and no keys (an outage), when set.
    pub jwks_status: Option<u16>,
    /// Serve `/.well-known/openid-configuration` (otherwise only the RFC 8414 document).
    pub openid_discovery: bool,
    /// Put this marker in every opaque access token and refresh token issued, so that a test can
    /// search logs and errors for secrets.
    pub secret_marker: Option<String>,
    /// What the "user" answers at the authorization endpoint: tests approve or deny
    /// automatically, with no login page.
    pub authorization: Approval,
    /// Put `iss` in authorization responses (RFC 9207) and say so in discovery.
    pub authorization_response_iss: bool,
    /// Refuse authorization requests that were not pushed first (RFC 9126 section 5), and say
    /// so in the metadata (`require_pushed_authorization_requests`). Default: off.
    pub require_par: bool,
    /// Spoil one claim (or the signature) of every ID token, for clients' negative tests.
    pub id_token_tamper: Option<IdTokenTamper>,
}

/// What [`Settings::id_token_tamper`] spoils in ID tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdTokenTamper {
    /// A `nonce` other than the one the login sent.
    Nonce,
    /// An `aud` naming another client.
    Audience,
    /// An `iss` other than this server.
    Issuer,
    /// `exp` an hour ago.
    Expired,
    /// Signed by a key that is not in this server's JWKS.
    Signature,
}

/// The automatic answer of the authorization endpoint (see [`Settings::authorization`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approval {
    /// Approve: redirect back with a code.
    Approve,
    /// Deny: redirect back with `error=access_denied`.
    Deny,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            token_lifetime: Duration::from_secs(3600),
            jwt_access_tokens: true,
            send_expires_in: true,
            refresh_token_for_client_credentials: false,
            rotate_refresh_tokens: true,
            device_interval_secs: 0,
            device_expires_in_secs: 600,
            auto_approve_devices: false,
            device_slow_down_once: false,
            token_delay: Duration::ZERO,
            jwks_delay: Duration::ZERO,
            dpop_nonce: None,
            jwks_status: None,
            openid_discovery: true,
            secret_marker: None,
            authorization: Approval::Approve,
            authorization_response_iss: true,
            require_par: false,
            id_token_tamper: None,
        }
    }
}

/// A canned failure for the next token requests (see [`IdentityServer::inject`](crate::IdentityServer::inject)).
#[derive(Clone, Debug)]
pub struct Fault {
    /// HTTP status to answer with.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// A `Retry-After` header value.
    pub retry_after: Option<String>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// How many requests get this answer.
    pub count: usize,
    /// More headers.
    pub headers: Vec<(&'static str, String)>,
    /// Put the request (its form body and `Authorization` header) into the answer, as a
    /// careless or hostile server does: in `error_description` for JSON, verbatim otherwise.
    pub echo_request: bool,
}

impl Fault {
    /// An answer with this status and body, once.
    pub fn status(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            body: body.into(),
            content_type: "application/json",
            retry_after: None,
            delay: Duration::ZERO,
            count: 1,
            headers: Vec::new(),
            echo_request: false,
        }
    }

    /// An RFC 6749 error whose `error_description` repeats the request it answers (form body
    /// and `Authorization` header), with a control character or two, once.
    pub fn echo_request(status: u16) -> Self {
        let mut f = Self::status(status, Vec::new());
        f.echo_request = true;
        f
    }

    /// An RFC 6749 section 5.2 error answer, once.
    pub fn oauth_error(status: u16, error: &str, description: &str) -> Self {
        Self::status(
            status,
            json!({"error": error, "error_description": description}).to_string(),
        )
    }

    /// Set the `Content-Type`.
    pub fn content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = content_type;
        self
    }

    /// Add a `Retry-After` header.
    pub fn retry_after(mut self, value: impl Into<String>) -> Self {
        self.retry_after = Some(value.into());
        self
    }

    /// Add a header to the answer.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Wait before answering.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Answer this many requests with it.
    pub fn times(mut self, count: usize) -> Self {
        self.count = count;
        self
    }
}
