//! Client authentication (RFC 6749 section 2.3, RFC 7523 section 2.2): how the client proves
//! its identity to the token, device, revocation endpoints, and the JWTs it signs for that and
//! for the JWT bearer grant.

use crate::config::{BuildError, expose};
use crate::form::{Form, encodings, form_encode};
use crate::grants::AssertionSource;
use crate::provider::Inner;
use authwire::ProviderError;
use authwire::http::{HeaderMap, header};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use secrecy::SecretString;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use url::Url;

/// `client_assertion_type` of a JWT client assertion (RFC 7523 section 2.2).
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the client proves its identity to the token endpoint (RFC 6749 section 2.3, RFC 7523).
#[derive(Clone)]
#[non_exhaustive]
pub enum ClientAuthMethod {
    /// `client_secret_basic`: HTTP Basic with the id and secret form-urlencoded (the default
    /// when a secret is configured).
    ClientSecretBasic,
    /// `client_secret_post`: id and secret in the request body.
    ClientSecretPost,
    /// `private_key_jwt`: a JWT signed with the client's private key (RFC 7523 section 2.2).
    PrivateKeyJwt {
        /// The signing key.
        key: PrivateKey,
    },
    /// `none`: a public client, identified by `client_id` only (the default without a secret).
    None,
    /// A client assertion made elsewhere (RFC 7521 section 4.2, `client_assertion_type`
    /// jwt-bearer): a Kubernetes projected service-account token for Azure workload identity,
    /// or any federated token. Read again for every token request.
    ClientAssertion(AssertionSource),
    /// `tls_client_auth` (RFC 8705 section 2.1): the client certificate the transport presents
    /// ([`Transport::identity_pem`](crate::Transport::identity_pem)), issued by a CA the server
    /// trusts, authenticates the client; only `client_id` goes in the form. Requests go to the
    /// server's `mtls_endpoint_aliases`, and its tokens are bound to the certificate.
    TlsClientAuth,
    /// `self_signed_tls_client_auth` (RFC 8705 section 2.2): as [`TlsClientAuth`](Self::TlsClientAuth),
    /// with a self-signed certificate registered with the server (its JWKS `x5c`).
    SelfSignedTlsClientAuth,
}

impl ClientAuthMethod {
    /// The registered name of the method (RFC 7591).
    pub fn name(&self) -> &'static str {
        match self {
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
            ClientAuthMethod::PrivateKeyJwt { .. } => "private_key_jwt",
            ClientAuthMethod::None => "none",
            ClientAuthMethod::ClientAssertion(_) => "client_assertion",
            ClientAuthMethod::TlsClientAuth => "tls_client_auth",
            ClientAuthMethod::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
        }
    }

    /// Whether the TLS connection's client certificate authenticates the client (RFC 8705).
    pub fn is_mutual_tls(&self) -> bool {
        matches!(
            self,
            ClientAuthMethod::TlsClientAuth | ClientAuthMethod::SelfSignedTlsClientAuth
        )
    }
}

/// The `aud` of the assertions `private_key_jwt` signs (see
/// [`OAuth2ProviderBuilder::assertion_audience`](crate::OAuth2ProviderBuilder::assertion_audience)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AssertionAudience {
    /// The issuer identifier when the server requires pushed authorization requests (FAPI 2.0
    /// servers do, and FAPI 2.0 section 5.3.2.1 requires the issuer as the only `aud`);
    /// otherwise the URL of the endpoint the assertion is sent to (RFC 7523 section 3).
    #[default]
    Auto,
    /// Always the issuer identifier found by discovery (the OpenID Foundation's 2025 advice
    /// against audience injection); the endpoint when the provider has a fixed token URL.
    Issuer,
    /// Always the URL of the endpoint the assertion is sent to (token, PAR, revocation).
    Endpoint,
}

impl fmt::Debug for ClientAuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A private key that signs client assertions; its `Debug` shows only the algorithm and key id.
#[derive(Clone)]
pub struct PrivateKey {
    pub(crate) key: Arc<EncodingKey>,
    pub(crate) algorithm: Algorithm,
    pub(crate) key_id: Option<String>,
    /// The `x5t` header (base64url SHA-1 of the certificate).
    pub(crate) x5t: Option<String>,
    /// The `x5t#S256` header (base64url SHA-256 of the certificate), for Microsoft Entra.
    pub(crate) x5t_s256: Option<String>,
    /// The `x5c` header (the certificate chain, standard base64 DER, leaf first; RFC 7515
    /// section 4.1.6), for Entra ID's subject name and issuer authentication.
    pub(crate) x5c: Option<Vec<String>>,
    /// [`credential_fingerprint`] of the PEM, for the cache key.
    pub(crate) fingerprint: Arc<str>,
}

/// A keyed fingerprint of a credential (client secret, private key): 16 hex digits of
/// HMAC-SHA256 keyed with the credential itself over a fixed label.
///
/// It goes into cache keys so that two configurations that differ only in their credential
/// never share stored tokens (a wrong secret must not be handed the right one's token from a
/// shared store), and it is the same in every process and after every restart. It is keyed
/// and cut to 64 bits so that it is not a hash of the secret to look up; a guessable secret
/// stays guessable, as it is against the token endpoint.
pub fn credential_fingerprint(credential: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, credential);
    let mac = hmac::sign(&key, b"authwire credential fingerprint v1");
    mac.as_ref().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl PrivateKey {
    /// An RSA key in PEM (PKCS#1 or PKCS#8), signing with RS256. The PEM may hold
    /// certificates too; an encrypted key is refused with an error that says so.
    pub fn rsa_pem(pem: &[u8]) -> Result<Self, BuildError> {
        let parsed = authwire_http::pem::private_key(pem).map_err(|e| BuildError::Key(e.to_string()))?;
        let key = EncodingKey::from_rsa_pem(parsed.to_pem().as_bytes())
            .map_err(|e| BuildError::Key(e.to_string()))?;
        Ok(Self {
            key: Arc::new(key),
            algorithm: Algorithm::RS256,
            key_id: None,
            x5t: None,
            x5t_s256: None,
            x5c: None,
            fingerprint: credential_fingerprint(pem).into(),
        })
    }

    /// An EC P-256 key in PEM (PKCS#8, or SEC1's `EC PRIVATE KEY`), signing with ES256. An
    /// encrypted key is refused with an error that says so.
    pub fn ec_pem(pem: &[u8]) -> Result<Self, BuildError> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let parsed = authwire_http::pem::private_key(pem).map_err(|e| BuildError::Key(e.to_string()))?;
        // Checked as a P-256 key by aws-lc, and handed to jsonwebtoken as PKCS#8, which is all
        // it reads (a SEC1 key is converted in memory).
        let pkcs8 = authwire::secrecy::zeroize::Zeroizing::new(
            EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, parsed.der())
                .map_err(|e| BuildError::Key(format!("not a P-256 key: {e}")))?
                .to_pkcs8v1()
                .map_err(|_| BuildError::Key("the key cannot be converted to PKCS#8".into()))?
                .as_ref()
                .to_vec(),
        );
        let key = EncodingKey::from_ec_der(&pkcs8);
        Ok(Self {
            key: Arc::new(key),
            algorithm: Algorithm::ES256,
            key_id: None,
            x5t: None,
            x5t_s256: None,
            x5c: None,
            fingerprint: credential_fingerprint(pem).into(),
        })
    }

    /// Sign with another algorithm of the key's family (for example PS256 for an RSA key).
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// Name the key in the JWT header (`kid`), as servers with several registered keys need.
    pub fn with_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    /// Put `x5t` (the base64url SHA-1 thumbprint of the key's certificate) in the header of the
    /// assertions: how Microsoft Entra finds a certificate credential.
    pub fn with_x5t(mut self, thumbprint: impl Into<String>) -> Self {
        self.x5t = Some(thumbprint.into());
        self
    }

    /// Put `x5t#S256` (the base64url SHA-256 thumbprint of the key's certificate, RFC 7515
    /// section 4.1.8) in the header: what Microsoft's MSAL sends with PS256 certificate
    /// assertions.
    pub fn with_x5t_s256(mut self, thumbprint: impl Into<String>) -> Self {
        self.x5t_s256 = Some(thumbprint.into());
        self
    }

    /// Put `x5c` (the certificate chain, each certificate's DER, leaf first) in the header of
    /// the assertions this key signs (RFC 7515 section 4.1.6): Entra ID's subject name and issuer
    /// authentication reads it.
    pub fn with_x5c<I, D>(mut self, chain: I) -> Self
    where
        I: IntoIterator<Item = D>,
        D: AsRef<[u8]>,
    {
        use base64::Engine as _;
        self.x5c = Some(
            chain
                .into_iter()
                .map(|der| base64::engine::general_purpose::STANDARD.encode(der.as_ref()))
                .collect(),
        );
        self
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Authenticate the client on a request to `endpoint`: a `Basic` header, or fields of the
    /// form. Every secret that goes out is added to `sent`, for scrubbing errors.
    pub(crate) async fn authenticate(
        &self,
        endpoint: &Url,
        headers: &mut HeaderMap,
        form: &mut Form,
        sent: &mut Vec<SecretString>,
    ) -> Result<(), ProviderError> {
        match &self.auth_method {
            ClientAuthMethod::ClientSecretBasic => {
                let secret = self.client_secret.as_ref().map(expose).unwrap_or_default();
                // RFC 6749 section 2.3.1: form-urlencode id and secret, then base64.
                let pair = format!("{}:{}", form_encode(&self.client_id), form_encode(secret));
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                sent.extend(encodings(secret));
                sent.push(SecretString::from(encoded.clone()));
                let value = crate::transport::secret_header(&format!("Basic {encoded}"))
                    .map_err(|_| ProviderError::permanent("client credentials cannot form a Basic header"))?;
                headers.insert(header::AUTHORIZATION, value);
            }
            ClientAuthMethod::ClientSecretPost => {
                form.push_once("client_id", &self.client_id);
                if let Some(s) = &self.client_secret {
                    sent.extend(encodings(expose(s)));
                    form.push_secret("client_secret", s.clone());
                }
            }
            ClientAuthMethod::PrivateKeyJwt { key } => {
                let audience = self.assertion_audience_for(endpoint).await?;
                let assertion = self.sign_jwt(
                    key,
                    &self.client_id,
                    &self.client_id,
                    &audience,
                    Duration::from_secs(60),
                )?;
                push_assertion(form, &self.client_id, assertion, sent);
            }
            // RFC 8705 section 2: the certificate was presented in the TLS handshake.
            ClientAuthMethod::None
            | ClientAuthMethod::TlsClientAuth
            | ClientAuthMethod::SelfSignedTlsClientAuth => {
                form.push_once("client_id", &self.client_id);
            }
            ClientAuthMethod::ClientAssertion(source) => {
                let assertion = self.assertion(source).await?;
                push_assertion(form, &self.client_id, assertion, sent);
            }
        }
        Ok(())
    }

    /// The `aud` of a `private_key_jwt` assertion sent to `endpoint` (see [`AssertionAudience`]).
    async fn assertion_audience_for(&self, endpoint: &Url) -> Result<String, ProviderError> {
        let issuer = match &self.endpoints {
            crate::discovery::Endpoints::Discovered { .. } => Some(self.metadata().await?),
            crate::discovery::Endpoints::Fixed { .. } => None,
        };
        Ok(match (self.assertion_audience, issuer) {
            (AssertionAudience::Issuer, Some(m)) => m.issuer.clone(),
            (AssertionAudience::Auto, Some(m)) if m.require_par => m.issuer.clone(),
            _ => endpoint.to_string(),
        })
    }

    pub(crate) fn sign_jwt(
        &self,
        key: &PrivateKey,
        iss: &str,
        sub: &str,
        aud: &str,
        life: Duration,
    ) -> Result<SecretString, ProviderError> {
        self.sign_jwt_with(key, iss, sub, aud, life, &serde_json::Map::new())
    }

    pub(crate) fn sign_jwt_with(
        &self,
        key: &PrivateKey,
        iss: &str,
        sub: &str,
        aud: &str,
        life: Duration,
        extra: &serde_json::Map<String, Value>,
    ) -> Result<SecretString, ProviderError> {
        let now = self
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut header = jsonwebtoken::Header::new(key.algorithm);
        header.kid = key.key_id.clone();
        let mut claims = extra.clone();
        for (name, value) in [
            ("iss", Value::from(iss)),
            ("aud", Value::from(aud)),
            ("iat", Value::from(now)),
            ("exp", Value::from(now + life.as_secs())),
            ("jti", Value::from(random_id())),
        ] {
            claims.insert(name.into(), value);
        }
        if sub.is_empty() {
            claims.remove("sub");
        } else {
            claims.insert("sub".into(), Value::from(sub));
        }
        if let Some(x5t) = &key.x5t {
            header.x5t = Some(x5t.clone());
        }
        if let Some(x5t) = &key.x5t_s256 {
            header.x5t_s256 = Some(x5t.clone());
        }
        if let Some(x5c) = &key.x5c {
            header.x5c = Some(x5c.clone());
        }
        jsonwebtoken::encode(&header, &claims, &key.key)
            .map(SecretString::from)
            .map_err(|e| ProviderError::permanent(format!("could not sign the assertion: {e}")))
    }
}

/// A JWT client assertion in the form.
fn push_assertion(form: &mut Form, client_id: &str, assertion: SecretString, sent: &mut Vec<SecretString>) {
    form.push_once("client_id", client_id);
    form.push("client_assertion_type", CLIENT_ASSERTION_TYPE);
    sent.extend(encodings(expose(&assertion)));
    form.push_secret("client_assertion", assertion);
}

fn random_id() -> String {
    authwire::random::hex(16)
}
