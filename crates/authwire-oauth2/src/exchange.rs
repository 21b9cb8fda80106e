//! One request to an authorization server endpoint (token, device authorization, revocation,
//! and later pushed authorization): the form, client authentication, a DPoP proof with the
//! server's latest nonce at the token endpoint, the answer read and parsed, and every error
//! scrubbed of what the request carried.

use crate::dpop::{self, DpopKey, DpopProof};
use crate::form::Form;
use crate::provider::Inner;
use crate::response;
use crate::transport::Reply;
use authwire::http::{self, HeaderMap, header};
use authwire::{ProviderError, Token};
use base64::Engine as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;
use sha2::Digest as _;
use std::sync::Arc;
use tracing::debug;
use url::Url;

impl Inner {
    /// A success answer's JSON document, or the error the answer describes.
    pub(crate) fn json_answer(
        &self,
        status: u16,
        retry_after: Option<&str>,
        body: &[u8],
        what: impl FnOnce() -> String,
    ) -> Result<Value, ProviderError> {
        if !(200..300).contains(&status) {
            return Err(response::parse_error(status, retry_after, body, self.clock.now()));
        }
        serde_json::from_slice(body)
            .map_err(|_| ProviderError::invalid_response(Some(status), format!("{} is not JSON", what())))
    }

    /// POST a form to the token endpoint with client authentication, and read the answer.
    pub(crate) async fn token_request(&self, form: Form) -> Result<Token, ProviderError> {
        let endpoint = self.token_endpoint().await?;
        let token = self
            .post(&endpoint, form, true, |status, retry_after, body| {
                response::parse_token_response(status, retry_after, body, self.clock.now())
            })
            .await?;
        let token = self.check_certificate_binding(token)?;
        self.bind(token)
    }

    /// RFC 8705 section 3: a JWT access token bound to a certificate (`cnf.x5t#S256`) is known
    /// as such (the extra `x5t#S256`), and refused when it is not bound to the certificate this
    /// client presents: no request of ours could use it. Opaque tokens cannot be read; a client
    /// that presents a certificate sends them through the same transport anyway.
    fn check_certificate_binding(&self, token: Token) -> Result<Token, ProviderError> {
        let bound = authwire_jwt::inspect(token.access_token().expose_secret())
            .ok()
            .and_then(|c| c.all().get("cnf")?.get("x5t#S256")?.as_str().map(str::to_owned));
        let Some(bound) = bound else {
            return Ok(token);
        };
        let ours = self
            .transport
            .client_certificate_der()
            .map(|der| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(der)));
        if ours.as_deref() == Some(bound.as_str()) {
            return Ok(token.with_extra("x5t#S256", bound));
        }
        let e = ProviderError::invalid_response(
            Some(200),
            "the access token is bound to a client certificate (cnf.x5t#S256, RFC 8705) that this client does not present: set the same certificate on the transport",
        );
        Err(match token.refresh_token() {
            Some(rt) => e.with_refresh_token(rt.clone()),
            None => e,
        })
    }

    /// With DPoP, a token must come back bound (`token_type: DPoP`); it then carries its
    /// proof of possession. RFC 9449 section 5: a client that asked for a bound token must not
    /// use a bearer one as if it were bound.
    fn bind(&self, token: Token) -> Result<Token, ProviderError> {
        let Some(key) = &self.dpop else {
            return Ok(token);
        };
        match token.token_type() {
            authwire::TokenType::DPoP => {
                Ok(token.with_proof(Arc::new(dpop::DpopSigner::new(key.clone(), self.clock.clone()))))
            }
            authwire::TokenType::Bearer if self.dpop_bearer_fallback => Ok(token),
            other => {
                let shown: String = other
                    .scheme()
                    .chars()
                    .filter(char::is_ascii_graphic)
                    .take(16)
                    .collect();
                let e = ProviderError::invalid_response(
                    Some(200),
                    format!(
                        "asked for a DPoP-bound token (RFC 9449) but the server issued token type {shown:?}, usable by anyone who holds it; allow that with dpop_bearer_fallback(true)"
                    ),
                );
                Err(match token.refresh_token() {
                    Some(rt) => e.with_refresh_token(rt.clone()),
                    None => e,
                })
            }
        }
    }

    /// POST `form` with client authentication and `parse` the answer. Every error, whatever
    /// the server put in it, is scrubbed of what this request carried
    /// ([`ProviderError::redact_sent`]).
    pub(crate) async fn post<T>(
        &self,
        endpoint: &Url,
        form: Form,
        token_endpoint: bool,
        parse: impl FnOnce(u16, Option<&str>, &[u8]) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let mut sent = form.secrets();
        let answer = self
            .send_form_dpop(endpoint, form, token_endpoint, &mut sent)
            .await;
        answer
            .and_then(|reply| parse(reply.status, reply.retry_after.as_deref(), &reply.body))
            .map_err(|e| e.redact_sent(&sent))
    }

    /// Send a form; with DPoP and to the token endpoint, with a proof, answering
    /// `use_dpop_nonce` (400 + `DPoP-Nonce`) with one retry carrying the server's nonce.
    async fn send_form_dpop(
        &self,
        endpoint: &Url,
        form: Form,
        token_endpoint: bool,
        sent: &mut Vec<SecretString>,
    ) -> Result<Reply, ProviderError> {
        let key = self.dpop.as_ref().filter(|_| token_endpoint);
        for attempt in 0..2 {
            let proof = match key {
                Some(key) => Some(self.token_endpoint_proof(key, endpoint)?),
                None => None,
            };
            let reply = self.send_form(endpoint, form.clone(), proof, sent).await?;
            if key.is_none() {
                return Ok(reply);
            }
            if let Some(nonce) = &reply.dpop_nonce {
                *self
                    .dpop_nonce
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(nonce.clone());
            }
            let asked_for_nonce = reply.status == 400
                && reply.dpop_nonce.is_some()
                && response::error_code(&reply.body).as_deref() == Some("use_dpop_nonce");
            if !(asked_for_nonce && attempt == 0) {
                return Ok(reply);
            }
            debug!("the token endpoint asked for a DPoP nonce; retrying once with it");
        }
        unreachable!("the loop returns on its second pass")
    }

    fn token_endpoint_proof(&self, key: &DpopKey, endpoint: &Url) -> Result<String, ProviderError> {
        let nonce = self
            .dpop_nonce
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        key.proof(&DpopProof {
            method: "POST",
            uri: endpoint.as_str(),
            access_token: None,
            nonce: nonce.as_deref(),
            issued_at: self.clock.now(),
        })
        .map_err(|e| ProviderError::permanent(e.to_string()))
    }

    /// Send one form, authenticated, with `dpop_proof` when given.
    async fn send_form(
        &self,
        endpoint: &Url,
        mut form: Form,
        dpop_proof: Option<String>,
        sent: &mut Vec<SecretString>,
    ) -> Result<Reply, ProviderError> {
        let mut headers = HeaderMap::new();
        if let Some(proof) = dpop_proof {
            let value = crate::transport::secret_header(&proof)
                .map_err(|_| ProviderError::permanent("the DPoP proof is not a header value"))?;
            headers.insert("dpop", value);
        }
        self.authenticate(endpoint, &mut headers, &mut form, sent).await?;
        let mut request = http::Request::post(endpoint.as_str())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json");
        if let Some(h) = request.headers_mut() {
            h.extend(headers);
        }
        self.http.send(request, form.finish(), self.request_timeout).await
    }
}
