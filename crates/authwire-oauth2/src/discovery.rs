//! Where the endpoints are: configured, or found by discovery (OpenID Connect Discovery 1.0,
//! then RFC 8414), cached after the first success. A discovered endpoint obeys the same
//! transport rule as a configured one, and the document must name the configured issuer.

use crate::config::check_transport;
use crate::provider::Inner;
use crate::transport::Reply;
use authwire::ProviderError;
use authwire::http;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::OnceCell;
use tracing::debug;
use url::Url;

pub(crate) enum Endpoints {
    Fixed {
        token: Url,
        device: Option<Url>,
    },
    Discovered {
        issuer: Url,
        device_override: Option<Url>,
        metadata: OnceCell<Arc<Metadata>>,
    },
}

/// What discovery found.
pub(crate) struct Metadata {
    /// The issuer identifier, as the document names it (RFC 9207 compares `iss` with it).
    pub(crate) issuer: String,
    pub(crate) token_endpoint: Url,
    pub(crate) device_authorization_endpoint: Option<Url>,
    pub(crate) authorization_endpoint: Option<Url>,
    pub(crate) revocation_endpoint: Option<Url>,
    /// `authorization_response_iss_parameter_supported` (RFC 9207 section 3).
    pub(crate) iss_parameter_supported: bool,
    /// Where the ID tokens' keys are (OpenID Connect Discovery `jwks_uri`).
    pub(crate) jwks_uri: Option<Url>,
    /// RFC 9126 section 5.
    pub(crate) par_endpoint: Option<Url>,
    pub(crate) require_par: bool,
    /// RFC 8705 section 5: where a client that presents a certificate sends its requests.
    pub(crate) mtls_aliases: MtlsAliases,
}

/// `mtls_endpoint_aliases` (RFC 8705 section 5).
#[derive(Default)]
pub(crate) struct MtlsAliases {
    pub(crate) token_endpoint: Option<Url>,
    pub(crate) device_authorization_endpoint: Option<Url>,
    pub(crate) revocation_endpoint: Option<Url>,
    pub(crate) pushed_authorization_request_endpoint: Option<Url>,
}

impl Inner {
    pub(crate) async fn token_endpoint(&self) -> Result<Url, ProviderError> {
        match &self.endpoints {
            Endpoints::Fixed { token, .. } => Ok(token.clone()),
            Endpoints::Discovered { .. } => {
                let m = self.metadata().await?;
                Ok(self
                    .mtls_alias(m, |a| a.token_endpoint.as_ref())
                    .unwrap_or(&m.token_endpoint)
                    .clone())
            }
        }
    }

    /// The `mtls_endpoint_aliases` entry for an endpoint, when this client presents a
    /// certificate (RFC 8705 section 5: for client authentication or certificate-bound tokens).
    pub(crate) fn mtls_alias<'m>(
        &self,
        m: &'m Metadata,
        pick: impl FnOnce(&'m MtlsAliases) -> Option<&'m Url>,
    ) -> Option<&'m Url> {
        self.presents_certificate()
            .then(|| pick(&m.mtls_aliases))
            .flatten()
    }

    /// Whether requests carry a client certificate (the transport has an identity).
    pub(crate) fn presents_certificate(&self) -> bool {
        self.transport.client_certificate_der().is_some()
    }

    pub(crate) async fn device_endpoint(&self) -> Result<Url, ProviderError> {
        let configured = match &self.endpoints {
            Endpoints::Fixed { device, .. } => device.as_ref(),
            Endpoints::Discovered { device_override, .. } => device_override.as_ref(),
        };
        self.optional_endpoint(
            configured,
            |m| m.device_authorization_endpoint.as_ref(),
            "no device authorization endpoint: set device_authorization_url or use an issuer that publishes one",
        )
        .await
    }

    /// The authorization endpoint: configured, or discovered.
    pub(crate) async fn authorization_endpoint(&self) -> Result<Url, ProviderError> {
        self.optional_endpoint(
            self.authorization_override.as_ref(),
            |m| m.authorization_endpoint.as_ref(),
            "no authorization endpoint: set authorization_url or use an issuer that publishes one",
        )
        .await
    }

    /// The revocation endpoint (RFC 7009): configured, or discovered.
    pub(crate) async fn revocation_endpoint(&self) -> Result<Url, ProviderError> {
        self.optional_endpoint(
            self.revocation_override.as_ref(),
            |m| m.revocation_endpoint.as_ref(),
            "no revocation endpoint: set revocation_url or use an issuer that publishes one (RFC 7009)",
        )
        .await
    }

    /// An endpoint a server may not have: the configured one, else the discovered one, else
    /// an error that names the setting.
    async fn optional_endpoint(
        &self,
        configured: Option<&Url>,
        discovered: fn(&Metadata) -> Option<&Url>,
        missing: &'static str,
    ) -> Result<Url, ProviderError> {
        if let Some(url) = configured {
            return Ok(url.clone());
        }
        let found = match &self.endpoints {
            Endpoints::Fixed { .. } => None,
            Endpoints::Discovered { .. } => {
                let m = self.metadata().await?;
                let alias = self.mtls_alias(m, |a| {
                    // The alias of the same endpoint, found by comparing with the plain one.
                    let plain = discovered(m)?;
                    [
                        (&m.device_authorization_endpoint, &a.device_authorization_endpoint),
                        (&m.revocation_endpoint, &a.revocation_endpoint),
                    ]
                    .into_iter()
                    .find(|(p, _)| p.as_ref() == Some(plain))
                    .and_then(|(_, a)| a.as_ref())
                });
                alias.or_else(|| discovered(m)).cloned()
            }
        };
        found.ok_or_else(|| ProviderError::permanent(missing))
    }

    /// Discovery, cached after the first success (failures are not cached).
    pub(crate) async fn metadata(&self) -> Result<&Arc<Metadata>, ProviderError> {
        let Endpoints::Discovered { issuer, metadata, .. } = &self.endpoints else {
            unreachable!("metadata() is only called for discovered endpoints")
        };
        metadata.get_or_try_init(|| self.discover(issuer)).await
    }

    async fn discover(&self, issuer: &Url) -> Result<Arc<Metadata>, ProviderError> {
        let base = issuer.as_str().trim_end_matches('/');
        let oidc = format!("{base}/.well-known/openid-configuration");
        // RFC 8414 section 3.1: the well-known segment goes between host and path.
        let path = issuer.path().trim_end_matches('/');
        let mut rfc8414 = issuer.clone();
        rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
        let mut last_error = None;
        for url in [oidc, rfc8414.to_string()] {
            match self.fetch_metadata(&url, base).await {
                Ok(m) => return Ok(Arc::new(m)),
                Err(e) => {
                    debug!(url = %url, error = %authwire::error_chain(&e), "discovery document not usable");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| ProviderError::permanent("discovery failed")))
    }

    async fn fetch_metadata(&self, url: &str, expected_issuer: &str) -> Result<Metadata, ProviderError> {
        let request = http::Request::get(url).header(http::header::ACCEPT, "application/json");
        let Reply {
            status,
            retry_after,
            body,
            ..
        } = self.http.send(request, Vec::new(), self.request_timeout).await?;
        let doc = self.json_answer(status, retry_after.as_deref(), &body, || {
            format!("discovery document at {url}")
        })?;
        let field = |name: &str| doc.get(name).and_then(Value::as_str);
        let issuer = field("issuer").unwrap_or_default();
        if issuer.trim_end_matches('/') != expected_issuer {
            return Err(ProviderError::invalid_response(
                Some(status),
                format!(
                    "discovery document names issuer {issuer:?}, expected {expected_issuer:?} (RFC 8414 section 3.3)"
                ),
            ));
        }
        // A discovered URL: parsed, and held to the transport rule (https, or http to loopback).
        let url = |name: &'static str, value: Option<&str>| -> Result<Option<Url>, ProviderError> {
            value
                .map(|u| {
                    let url = Url::parse(u).map_err(|e| {
                        ProviderError::invalid_response(
                            Some(status),
                            format!("discovered {name} is not a URL: {e}"),
                        )
                    })?;
                    check_transport(&url, name, self.allow_insecure_http)
                        .map_err(|e| ProviderError::invalid_response(Some(status), e.to_string()))?;
                    Ok(url)
                })
                .transpose()
        };
        let endpoint = |name: &'static str| url(name, field(name));
        let token_endpoint = endpoint("token_endpoint")?.ok_or_else(|| {
            ProviderError::invalid_response(Some(status), "discovery document has no token_endpoint")
        })?;
        Ok(Metadata {
            issuer: issuer.to_owned(),
            token_endpoint,
            device_authorization_endpoint: endpoint("device_authorization_endpoint")?,
            authorization_endpoint: endpoint("authorization_endpoint")?,
            revocation_endpoint: endpoint("revocation_endpoint")?,
            iss_parameter_supported: doc
                .get("authorization_response_iss_parameter_supported")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            mtls_aliases: {
                let aliases = doc.get("mtls_endpoint_aliases").and_then(Value::as_object);
                let alias = |key: &str, label: &'static str| {
                    url(label, aliases.and_then(|a| a.get(key)).and_then(Value::as_str))
                };
                MtlsAliases {
                    token_endpoint: alias("token_endpoint", "mtls_endpoint_aliases.token_endpoint")?,
                    device_authorization_endpoint: alias(
                        "device_authorization_endpoint",
                        "mtls_endpoint_aliases.device_authorization_endpoint",
                    )?,
                    revocation_endpoint: alias(
                        "revocation_endpoint",
                        "mtls_endpoint_aliases.revocation_endpoint",
                    )?,
                    pushed_authorization_request_endpoint: alias(
                        "pushed_authorization_request_endpoint",
                        "mtls_endpoint_aliases.pushed_authorization_request_endpoint",
                    )?,
                }
            },
            jwks_uri: endpoint("jwks_uri")?,
            par_endpoint: endpoint("pushed_authorization_request_endpoint")?,
            require_par: doc
                .get("require_pushed_authorization_requests")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}
