//! The transport every outgoing request of an authwire credential goes through: token,
//! discovery, device, revocation and PAR requests of `authwire-oauth2`, the Google Cloud and
//! Azure credentials' STS, IAM and metadata requests, `authwire-jwt`'s JWKS fetches.
//!
//! - [`Transport`] is the one place a network is described: the proxy (from the environment,
//!   as curl reads it, or explicit, with credentials that are never shown), extra or exclusive
//!   roots of trust, a client certificate (mutual TLS), a timeout. Each provider's builder
//!   takes one (`.transport(t)`).
//! - [`HttpClient`] sends one request by the rules, whoever configured it: redirects are never
//!   followed (a redirect answer is refused unread), bodies are read up to
//!   [`MAX_RESPONSE_BYTES`], network errors are transient, and errors name the URL without its
//!   query, never a header, a body or a proxy's password. A failed TLS handshake says what was
//!   wrong with the certificate ([`CertificateError`]); a proxy's refusal names the proxy and
//!   its status ([`ProxyRefused`]). Metadata endpoints get [`HttpClient::metadata`], which
//!   never uses a proxy.
//! - [`pem`] reads certificates and keys (RSA and EC; PKCS#1, PKCS#8, SEC1) for every authwire
//!   crate, and says so when a key is encrypted.
//!
//! Requests and answers are the `http` crate's types, which the core re-exports: no reqwest
//! type crosses this crate's surface, so a reqwest major version is not a breaking change of
//! ours.
//!
//! ```no_run
//! use authwire::http;
//! use authwire_http::{HttpClient, Transport};
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let transport = Transport::new().proxy("http://proxy.corp.example:3128")?;
//! let client = HttpClient::with_transport("my-provider/1.0", &transport);
//! let request = http::Request::get("https://idp.example/.well-known/openid-configuration")
//!     .header(http::header::ACCEPT, "application/json");
//! let reply = client.send(request, Vec::new(), Duration::from_secs(10)).await?;
//! assert!(reply.body.len() <= authwire_http::MAX_RESPONSE_BYTES);
//! # Ok(()) }
//! ```

mod client;
mod file;
pub mod pem;
mod transport;

pub use client::{CertificateError, CertificateProblem, HttpClient, MAX_RESPONSE_BYTES, ProxyRefused, Reply};
pub use file::{read_credential_file, secret_header};
pub use transport::{Transport, TransportError};

/// docs/transport.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/transport.md")]
pub struct TransportGuide;
