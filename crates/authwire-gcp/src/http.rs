//! The HTTP all sources share: authwire-oauth2's transport (no redirects, bounded bodies,
//! transient network errors), a client built on first use, and a per-request timeout.

use authwire::ProviderError;
use authwire::http::{self as h, header};
use authwire_oauth2::transport::{self, HttpClient, Reply, Transport};
use std::sync::Arc;
use std::time::Duration;

/// How long one request may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub(crate) struct Http {
    client: HttpClient,
    /// A metadata server's client: never through a proxy.
    metadata: bool,
    /// The timeout when the transport sets none.
    pub(crate) timeout: Duration,
    /// Turns `expires_in` into `expires_at`: the Authorizer's clock, for tests on `ManualClock`.
    pub(crate) clock: Arc<dyn authwire::Clock>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

const USER_AGENT: &str = concat!("authwire-gcp/", env!("CARGO_PKG_VERSION"));

impl Http {
    pub(crate) fn new() -> Self {
        Self {
            client: HttpClient::new(USER_AGENT),
            metadata: false,
            timeout: REQUEST_TIMEOUT,
            clock: Arc::new(authwire::SystemClock),
        }
    }

    /// For the metadata server: direct connections only, whatever the environment says.
    pub(crate) fn metadata() -> Self {
        Self {
            client: HttpClient::metadata(USER_AGENT, &Transport::new()),
            metadata: true,
            ..Self::new()
        }
    }

    /// Send through `transport` (a metadata client still ignores its proxy).
    pub(crate) fn transport(mut self, transport: &Transport) -> Self {
        self.client = if self.metadata {
            HttpClient::metadata(USER_AGENT, transport)
        } else {
            HttpClient::with_transport(USER_AGENT, transport)
        };
        self
    }

    pub(crate) fn now(&self) -> std::time::SystemTime {
        self.clock.now()
    }

    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Send `request` with `body` within this source's timeout.
    pub(crate) async fn send(
        &self,
        request: h::request::Builder,
        body: Vec<u8>,
    ) -> Result<Reply, ProviderError> {
        let timeout = self.client.configured_timeout().unwrap_or(self.timeout);
        self.client.send(request, body, timeout).await
    }

    /// POST a form; every value listed in `secrets` is scrubbed from any error.
    pub(crate) async fn post_form(
        &self,
        url: &str,
        fields: &[(&str, &str)],
        secrets: &[&str],
        basic: Option<(&str, &str)>,
    ) -> Result<Reply, ProviderError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut request = h::Request::post(url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json");
        if let Some((user, password)) = basic {
            // RFC 6749 section 2.3.1: form-urlencode id and secret, then base64.
            use base64::Engine as _;
            let pair = format!("{}:{}", form_encode(user), form_encode(password));
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            let value = transport::secret_header(&format!("Basic {encoded}"))?;
            request = request.header(header::AUTHORIZATION, value);
        }
        self.send(request, body.into_bytes())
            .await
            .map_err(|e| redact(e, secrets))
    }
}

fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Scrub what a request carried from an error (a server may echo it back).
pub(crate) fn redact(e: ProviderError, secrets: &[&str]) -> ProviderError {
    let sent: Vec<secrecy::SecretString> = secrets
        .iter()
        .filter(|s| !s.is_empty())
        .flat_map(|s| [s.to_string(), form_encode(s)])
        .map(secrecy::SecretString::from)
        .collect();
    e.redact_sent(&sent)
}

impl Http {
    /// A token from a token endpoint's answer (RFC 6749 section 5), scrubbed of what was sent.
    pub(crate) fn token_answer(
        &self,
        reply: &Reply,
        secrets: &[&str],
    ) -> Result<authwire::Token, ProviderError> {
        transport::parse_token_response(
            reply.status,
            reply.retry_after.as_deref(),
            &reply.body,
            self.now(),
        )
        .map_err(|e| redact(e, secrets))
    }

    /// The error an answer that is not a success describes.
    /// A token endpoint's answer that carries an `id_token` (a `target_audience` assertion, a
    /// user's refresh): the ID token as the token, expiring at its `exp`.
    pub(crate) fn id_token_answer(
        &self,
        reply: &Reply,
        secrets: &[&str],
        missing: &str,
    ) -> Result<authwire::Token, ProviderError> {
        if !(200..300).contains(&reply.status) {
            return Err(self.error_answer(reply, secrets));
        }
        let doc: serde_json::Value = serde_json::from_slice(&reply.body)
            .map_err(|_| ProviderError::invalid_response(Some(reply.status), "the answer is not JSON"))?;
        let jwt = doc
            .get("id_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ProviderError::invalid_response(Some(reply.status), missing))?;
        let exp = crate::metadata::jwt_exp(jwt).ok_or_else(|| {
            ProviderError::invalid_response(Some(reply.status), "the id_token has no `exp`")
        })?;
        Ok(authwire::Token::new(jwt).with_expires_at(authwire::expiry_at_unix(self.now(), exp)))
    }

    pub(crate) fn error_answer(&self, reply: &Reply, secrets: &[&str]) -> ProviderError {
        redact(
            transport::parse_error(
                reply.status,
                reply.retry_after.as_deref(),
                &reply.body,
                self.now(),
            ),
            secrets,
        )
    }
}

/// The keyed fingerprint of a credential, for cache keys.
pub(crate) fn fingerprint(secret: &str) -> String {
    transport::credential_fingerprint(secret.as_bytes())
}
