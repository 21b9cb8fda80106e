//! Test support for authwire (not published).
//!
//! - [`IdentityServer`]: an OAuth 2.0 / OpenID Connect identity provider on a loopback port, with
//!   discovery, JWKS, a token endpoint for every grant and client-authentication method the
//!   OAuth2 provider speaks, refresh-token rotation with reuse detection, the device
//!   authorization grant, fault injection and request counters.
//! - [`ResourceServer`]: a protected API on its own loopback port that checks bearer tokens and
//!   answers 401 with `WWW-Authenticate: Bearer error="invalid_token"` when they are expired or
//!   wrong.
//!
//! - [`GcpEmulator`], [`AzureEmulator`]: the cloud credential endpoints (metadata servers, token
//!   endpoints, STS), from the vendors' published documentation.
//!
//! - [`ForwardProxy`] (a real `tinyproxy`) and [`TestCa`] (a private CA with server and client
//!   certificates; [`IdentityServerBuilder::tls`] serves https with it, mutual TLS on request).
//!
//! - [`conformance::store_conformance`]: the behaviour every `TokenStore` must have.
//!
//! The servers read time through an [`authwire::Clock`], so tests can drive them with a
//! [`authwire::ManualClock`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let idp = authwire_testkit::IdentityServer::start().await;
//! assert!(idp.issuer().starts_with("http://127.0.0.1:"));
//! assert_eq!(idp.token_url(), format!("{}/token", idp.issuer()));
//! # }
//! ```

mod azure;
mod browser;
pub mod conformance;
mod doubles;
mod dpop;
mod gcp;
mod gcp_aws;
mod grpc;
mod idp;
mod ledger;
mod proxy;
mod raw;
mod redis;
mod redis_ha;
mod resource;
mod scratch;
mod tls;

pub use azure::{
    AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_IDENTITY_HEADER, AZURE_TENANT_ID,
    AZURE_USER_ASSIGNED_CLIENT_ID, AZURE_USER_ASSIGNED_OBJECT_ID, AZURE_USER_ASSIGNED_RESOURCE_ID,
    AzureEmulator,
};
pub use browser::{Page, ScriptedBrowser, with_param};
pub use doubles::SequenceProvider;
pub use gcp::{
    GCP_KEY_ID, GCP_SERVICE_ACCOUNT, GCP_USER_CLIENT_ID, GCP_USER_CLIENT_SECRET, GCP_USER_REFRESH_TOKEN,
    GCP_WIF_AUDIENCE, GcpEmulator,
};
pub use gcp_aws::{AWS_ACCESS_KEY_ID, AWS_ROLE, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ZONE};
pub use grpc::{GrpcEcho, RawCodec};
pub use idp::{
    Approval, Client, Fault, IdTokenTamper, IdentityServer, IdentityServerBuilder, Settings, TlsClientAuth,
};
pub use proxy::ForwardProxy;
pub use raw::{Misbehavior, RawServer};
pub use redis::RedisServer;
pub use redis_ha::{RedisCluster, RedisSentinel};
pub use resource::ResourceServer;
#[cfg(unix)]
pub use scratch::fake_program;
pub use scratch::{TempDir, wait_until};
pub use tls::TestCa;

/// An OAuth2 provider for the default confidential client ([`Client::CONFIDENTIAL_ID`] and its
/// secret) at `token_url`; finish it with whatever the test needs, then `build()`.
pub fn confidential_client(token_url: impl Into<String>) -> authwire_oauth2::OAuth2ProviderBuilder {
    authwire_oauth2::OAuth2Provider::builder()
        .token_url(token_url)
        .client_id(Client::CONFIDENTIAL_ID)
        .client_secret(Client::CONFIDENTIAL_SECRET)
}

/// The identity server's RSA signing key (PKCS#8 PEM). A test key: never use it elsewhere.
pub const IDP_PRIVATE_KEY_PEM: &str = include_str!("keys/idp.key.pem");
/// The identity server's public key (SPKI PEM), also published at its JWKS endpoint.
pub const IDP_PUBLIC_KEY_PEM: &str = include_str!("keys/idp.pub.pem");
/// The private key of the test client registered for `private_key_jwt` and JWT bearer
/// assertions ([`Client::PRIVATE_KEY_JWT_ID`]). A test key: never use it elsewhere.
pub const CLIENT_PRIVATE_KEY_PEM: &str = include_str!("keys/client.key.pem");
/// The public key of that client, registered with the identity server.
pub const CLIENT_PUBLIC_KEY_PEM: &str = include_str!("keys/client.pub.pem");
