//! An OAuth 2.0 / OpenID Connect [`IdentityProvider`] for authwire.
//!
//! Grants: client credentials (the default), refresh token (automatic whenever the current token
//! carries one; rotation kept), JWT bearer (RFC 7523), token exchange (RFC 8693) and device
//! authorization (RFC 8628). Client authentication: `client_secret_basic`,
//! `client_secret_post`, `private_key_jwt`, `none`. Endpoints come from the configuration or
//! from discovery.
//!
//! # Client credentials
//!
//! ```no_run
//! use authwire::Authorizer;
//! use authwire_oauth2::{ClientAuthMethod, OAuth2Provider};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = OAuth2Provider::builder()
//!     .issuer("https://idp.example")          // or .token_url("https://idp.example/oauth2/token")
//!     .client_id("my-client")
//!     .client_secret(std::env::var("CLIENT_SECRET").map_err(|_| "set CLIENT_SECRET to the client's secret")?)
//!     .auth_method(ClientAuthMethod::ClientSecretBasic)
//!     .scope("api:read")
//!     .audience("https://api.example")
//!     .build()?;
//! let authorizer = Authorizer::new(provider);
//! let header = authorizer.authorization_header().await?;
//! # Ok(()) }
//! ```
//!
//! # Behaviour
//!
//! - **Errors** keep the server's RFC 6749 `error`, `error_description` and `error_uri` and the
//!   HTTP status. `invalid_client`, `invalid_grant`, `unauthorized_client`, `invalid_scope` are
//!   permanent; 5xx, 429, timeouts and network errors are transient, with `Retry-After` (seconds
//!   or HTTP date) honoured. A success status without a usable token is `InvalidResponse`.
//! - **Refresh tokens**: when the current token has one, it is used first; a rotated one replaces
//!   it, and when the server sends none the old one is kept. If the server rejects it
//!   (`invalid_grant`), the configured grant runs instead, except for a person's login (a token
//!   a browser or device login marked) under a grant that needs no person: its refusal is
//!   returned, and the client's own token never replaces it.
//! - **Security**: credentials go only over https, or plain http to a loopback address, unless
//!   [`allow_insecure_http`](OAuth2ProviderBuilder::allow_insecure_http) is called; redirects
//!   are not followed; bodies are read up to [`MAX_RESPONSE_BYTES`] and never logged; the client
//!   secret and keys never appear in `Debug` or errors.
//!
//! # Where things are
//!
//! One module per concern, as oauth2-rs keeps one per flow: [`OAuth2Provider`] and its
//! [`IdentityProvider`] implementation in `provider`; the builder in `config`; discovery in
//! `discovery`; the grants, refresh and assertion sources in `grants` (the device flow in
//! `grants::device`); client authentication and assertion signing in `client_auth`; one
//! request to an endpoint (client authentication, DPoP, scrubbed errors) in `exchange`; the
//! secret-carrying form in `form`; browser login in `browser`; DPoP in [`dpop`]; HTTP in
//! [`transport`], which provider crates built on this one share.

#[cfg(doc)]
use authwire::IdentityProvider;

mod browser;
mod client_auth;
mod config;
mod discovery;
pub mod dpop;
mod exchange;
mod form;
mod grants;
mod oidc;
pub mod process;
mod provider;
mod response;
pub mod transport;

pub use browser::{BrowserLogin, DEFAULT_LOGIN_TIMEOUT, DEFAULT_REUSE_WINDOW};
pub use client_auth::{AssertionAudience, ClientAuthMethod, PrivateKey};
pub use config::{BuildError, DEFAULT_REQUEST_TIMEOUT, MAX_RESPONSE_BYTES, OAuth2ProviderBuilder};
pub use dpop::{DpopError, DpopKey, DpopProof};
pub use grants::device::{MAX_DEVICE_CODE_LIFETIME, MAX_DEVICE_POLL_INTERVAL};
pub use grants::{
    AssertionSource, AsyncAssertionFn, DevicePrompt, DevicePromptFn, Grant, SubjectFn, SubjectTokenSource,
    TokenExchange,
};
pub use provider::OAuth2Provider;
pub use transport::{Transport, TransportError};

// Public for the fuzz targets of authwire-reliability only; not part of the API.
#[doc(hidden)]
pub use response::{parse_error, parse_retry_after, parse_token_response};

/// docs/providers.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/providers.md")]
pub struct ProvidersGuide;

/// docs/enterprise.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/enterprise.md")]
pub struct EnterpriseGuide;

/// docs/dpop.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/dpop.md")]
pub struct DpopGuide;
