//! HTTP for credential-bearing requests: the OAuth2 provider's, and that of provider crates
//! built on this one (`authwire-gcp`, `authwire-azure`). Not needed to use the OAuth2 provider
//! itself. The client and [`Transport`] come from `authwire-http` (re-exported here), which
//! `authwire-jwt` shares; what is OAuth2's (error and token parsing, URL checks, the credential
//! fingerprint) is defined in this crate.
//!
//! The rules hold whoever built the client: redirects are never followed (an answer that is a
//! redirect is refused unread), bodies are read up to [`MAX_RESPONSE_BYTES`], network errors
//! are transient, and errors name the URL without its query, never a header or a body.
//!
//! Requests and answers are the `http` crate's types, which the core
//! re-exports: no reqwest type crosses this module's surface, so a reqwest major version is not
//! a breaking change of ours.
//!
//! ```no_run
//! use authwire::http;
//! use authwire_oauth2::transport::HttpClient;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), authwire::ProviderError> {
//! let client = HttpClient::new("my-provider/1.0");
//! let request = http::Request::get("https://idp.example/.well-known/openid-configuration")
//!     .header(http::header::ACCEPT, "application/json");
//! let reply = client.send(request, Vec::new(), Duration::from_secs(10)).await?;
//! assert!(reply.body.len() <= authwire_oauth2::MAX_RESPONSE_BYTES);
//! # Ok(()) }
//! ```

pub use crate::client_auth::credential_fingerprint;
pub use crate::config::parse_url as check_url;
pub use crate::response::{parse_error, parse_retry_after, parse_rfc3339, parse_token_response};
pub use authwire_http::{
    CertificateError, CertificateProblem, HttpClient, MAX_RESPONSE_BYTES, ProxyRefused, Reply, Transport,
    TransportError, pem, read_credential_file, secret_header,
};
