//! Credentials that ask Entra ID's token endpoint
//! (`{authority}/{tenant}/oauth2/v2.0/token`, the client credentials grant) with a federated
//! assertion, a secret or a certificate. Built on authwire-oauth2's provider.

use crate::{AzureError, DEFAULT_AUTHORITY_HOST, Env, process_env};
use authwire::{CacheKey, IdentityProvider, ProviderError, Token, async_trait};
use authwire_oauth2::{AssertionSource, ClientAuthMethod, OAuth2Provider, PrivateKey};
use base64::Engine as _;
use std::fmt;
use std::path::PathBuf;

/// Where a credential's token endpoint is.
#[derive(Clone, Debug)]
struct Tenant {
    authority: String,
    tenant: String,
    client_id: String,
    transport: authwire_oauth2::Transport,
}

impl Tenant {
    fn from_env(var: &dyn Fn(&str) -> Option<String>) -> Result<Self, AzureError> {
        let tenant = var("AZURE_TENANT_ID").ok_or(AzureError::Missing("AZURE_TENANT_ID"))?;
        let client_id = var("AZURE_CLIENT_ID").ok_or(AzureError::Missing("AZURE_CLIENT_ID"))?;
        let authority = var("AZURE_AUTHORITY_HOST").unwrap_or_else(|| DEFAULT_AUTHORITY_HOST.to_owned());
        Self::new(&authority, &tenant, &client_id)
    }

    fn new(authority: &str, tenant: &str, client_id: &str) -> Result<Self, AzureError> {
        if tenant.is_empty()
            || !tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(AzureError::Invalid {
                setting: "AZURE_TENANT_ID",
                reason: "a tenant is a GUID or a domain name".into(),
            });
        }
        if client_id.is_empty() {
            return Err(AzureError::Missing("AZURE_CLIENT_ID"));
        }
        let authority = if authority.ends_with('/') {
            authority.to_owned()
        } else {
            format!("{authority}/")
        };
        Ok(Self {
            authority,
            tenant: tenant.to_owned(),
            client_id: client_id.to_owned(),
            transport: authwire_oauth2::Transport::new(),
        })
    }

    /// The same tenant and client at another authority host (its transport kept).
    fn at(&self, authority: &str) -> Result<Self, AzureError> {
        Ok(Self {
            transport: self.transport.clone(),
            ..Self::new(authority, &self.tenant, &self.client_id)?
        })
    }

    fn token_url(&self) -> String {
        format!("{}{}/oauth2/v2.0/token", self.authority, self.tenant)
    }

    fn provider(
        &self,
        auth: ClientAuthMethod,
        secret: Option<&str>,
        scope: Option<&str>,
    ) -> Result<OAuth2Provider, AzureError> {
        let mut b = OAuth2Provider::builder()
            .token_url(self.token_url())
            .client_id(&self.client_id)
            .auth_method(auth)
            .transport(self.transport.clone());
        if let Some(s) = secret {
            b = b.client_secret(s);
        }
        if let Some(s) = scope {
            b = b.scope(s);
        }
        b.build().map_err(|e| AzureError::Invalid {
            setting: "AZURE_AUTHORITY_HOST",
            reason: e.to_string(),
        })
    }
}

fn vars(env: Env<'_>) -> impl Fn(&str) -> Option<String> + '_ {
    move |n: &str| env(n).filter(|v| !v.is_empty())
}

/// Workload identity: a Kubernetes service account federated with an Entra app. The projected
/// token in `AZURE_FEDERATED_TOKEN_FILE` is the client assertion, read again for every token
/// request (the kubelet rotates it).
///
/// ```no_run
/// # fn run() -> Result<(), authwire_azure::AzureError> {
/// let provider = authwire_azure::WorkloadIdentity::from_env()?.scope("https://vault.azure.net/.default");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct WorkloadIdentity {
    tenant: Tenant,
    file: PathBuf,
    scope: Option<String>,
    provider: OAuth2Provider,
}

impl WorkloadIdentity {
    /// From `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE` and
    /// `AZURE_AUTHORITY_HOST` (what the workload identity webhook injects).
    pub fn from_env() -> Result<Self, AzureError> {
        Self::from_env_in(&process_env)
    }

    /// [`from_env`](Self::from_env) with the environment read through `env`.
    pub fn from_env_in(env: Env<'_>) -> Result<Self, AzureError> {
        let var = vars(env);
        let file =
            var("AZURE_FEDERATED_TOKEN_FILE").ok_or(AzureError::Missing("AZURE_FEDERATED_TOKEN_FILE"))?;
        let tenant = Tenant::from_env(&var)?;
        let file = PathBuf::from(file);
        let provider = tenant.provider(
            ClientAuthMethod::ClientAssertion(AssertionSource::file(&file)),
            None,
            None,
        )?;
        Ok(Self {
            tenant,
            file,
            scope: None,
            provider,
        })
    }

    /// Workload identity built in code: the app's `tenant` and `client_id`, and the file the
    /// platform writes the federated token to (read for every token request).
    pub fn new(
        tenant: impl AsRef<str>,
        client_id: impl AsRef<str>,
        token_file: impl Into<PathBuf>,
    ) -> Result<Self, AzureError> {
        let tenant = Tenant::new(DEFAULT_AUTHORITY_HOST, tenant.as_ref(), client_id.as_ref())?;
        let file = token_file.into();
        let provider = tenant.provider(
            ClientAuthMethod::ClientAssertion(AssertionSource::file(&file)),
            None,
            None,
        )?;
        Ok(Self {
            tenant,
            file,
            scope: None,
            provider,
        })
    }

    /// Ask this authority (`https://login.microsoftonline.us/`, a sovereign cloud) instead of
    /// the public one.
    pub fn authority_host(mut self, authority: &str) -> Result<Self, AzureError> {
        self.tenant = self.tenant.at(authority)?;
        Ok(self.rebuild())
    }

    /// The scope (`https://RESOURCE/.default`).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self.rebuild()
    }

    /// Reach Entra ID through `transport` (proxy, roots of trust, client certificate,
    /// timeout); see [`authwire_oauth2::Transport`].
    pub fn transport(mut self, transport: authwire_oauth2::Transport) -> Self {
        self.tenant.transport = transport;
        self.rebuild()
    }

    fn rebuild(mut self) -> Self {
        if let Ok(p) = self.tenant.provider(
            ClientAuthMethod::ClientAssertion(AssertionSource::file(&self.file)),
            None,
            self.scope.as_deref(),
        ) {
            self.provider = p;
        }
        self
    }
}

impl fmt::Debug for WorkloadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadIdentity")
            .field("tenant", &self.tenant)
            .field("token_file", &self.file)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IdentityProvider for WorkloadIdentity {
    async fn fetch_token(&self, current: Option<&Token>) -> Result<Token, ProviderError> {
        self.provider.fetch_token(current).await
    }

    fn cache_key(&self) -> CacheKey {
        self.provider.cache_key()
    }
}

/// An app registration's secret (`AZURE_CLIENT_SECRET`, sent in the body as Azure's SDKs do)
/// or certificate (`AZURE_CLIENT_CERTIFICATE_PATH`: a PEM file with the certificate and its
/// private key; the assertion is PS256 with the certificate's `x5t#S256`, as MSAL sends it).
#[derive(Clone)]
pub struct EnvironmentCredential {
    tenant: Tenant,
    secret: Option<secrecy::SecretString>,
    key: Option<PrivateKey>,
    scope: Option<String>,
    provider: OAuth2Provider,
}

impl EnvironmentCredential {
    /// From `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET` or
    /// `AZURE_CLIENT_CERTIFICATE_PATH` (and `AZURE_AUTHORITY_HOST`).
    pub fn from_env() -> Result<Self, AzureError> {
        Self::from_env_in(&process_env)
    }

    /// [`from_env`](Self::from_env) with the environment read through `env`.
    pub fn from_env_in(env: Env<'_>) -> Result<Self, AzureError> {
        use secrecy::ExposeSecret;
        let var = vars(env);
        let secret = var("AZURE_CLIENT_SECRET").map(secrecy::SecretString::from);
        let certificate = var("AZURE_CLIENT_CERTIFICATE_PATH");
        if secret.is_none() && certificate.is_none() {
            return Err(AzureError::Missing(
                "AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH",
            ));
        }
        let tenant = Tenant::from_env(&var)?;
        let key = match (&secret, certificate) {
            (None, Some(path)) => Some(certificate_key(&path)?),
            _ => None,
        };
        let secret_text = secret.as_ref().map(|s| s.expose_secret().to_owned());
        let provider = tenant.provider(auth_for(&key, secret.is_some()), secret_text.as_deref(), None)?;
        Ok(Self {
            tenant,
            secret,
            key,
            scope: None,
            provider,
        })
    }

    /// An app registration's secret, built in code (sent in the body, as Azure's SDKs do).
    pub fn client_secret(
        tenant: impl AsRef<str>,
        client_id: impl AsRef<str>,
        secret: impl Into<String>,
    ) -> Result<Self, AzureError> {
        let tenant = Tenant::new(DEFAULT_AUTHORITY_HOST, tenant.as_ref(), client_id.as_ref())?;
        Self::from_parts(tenant, Some(secrecy::SecretString::from(secret.into())), None)
    }

    /// An app registration's certificate, built in code: a PEM file with the certificate and
    /// its private key (the assertion is PS256 with the certificate's `x5t#S256`).
    pub fn certificate_pem_file(
        tenant: impl AsRef<str>,
        client_id: impl AsRef<str>,
        path: impl AsRef<std::path::Path>,
    ) -> Result<Self, AzureError> {
        let tenant = Tenant::new(DEFAULT_AUTHORITY_HOST, tenant.as_ref(), client_id.as_ref())?;
        let key = certificate_key(&path.as_ref().display().to_string())?;
        Self::from_parts(tenant, None, Some(key))
    }

    fn from_parts(
        tenant: Tenant,
        secret: Option<secrecy::SecretString>,
        key: Option<PrivateKey>,
    ) -> Result<Self, AzureError> {
        use secrecy::ExposeSecret;
        let secret_text = secret.as_ref().map(|s| s.expose_secret().to_owned());
        let provider = tenant.provider(auth_for(&key, secret.is_some()), secret_text.as_deref(), None)?;
        Ok(Self {
            tenant,
            secret,
            key,
            scope: None,
            provider,
        })
    }

    /// Ask this authority (`https://login.microsoftonline.us/`, a sovereign cloud) instead of
    /// the public one.
    pub fn authority_host(mut self, authority: &str) -> Result<Self, AzureError> {
        self.tenant = self.tenant.at(authority)?;
        Ok(self.rebuild())
    }

    /// The scope (`https://RESOURCE/.default`).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self.rebuild()
    }

    /// Reach Entra ID through `transport` (proxy, roots of trust, client certificate,
    /// timeout); see [`authwire_oauth2::Transport`].
    pub fn transport(mut self, transport: authwire_oauth2::Transport) -> Self {
        self.tenant.transport = transport;
        self.rebuild()
    }

    fn rebuild(mut self) -> Self {
        use secrecy::ExposeSecret;
        let secret = self.secret.as_ref().map(|s| s.expose_secret().to_owned());
        if let Ok(p) = self.tenant.provider(
            auth_for(&self.key, self.secret.is_some()),
            secret.as_deref(),
            self.scope.as_deref(),
        ) {
            self.provider = p;
        }
        self
    }
}

fn auth_for(key: &Option<PrivateKey>, secret: bool) -> ClientAuthMethod {
    match (key, secret) {
        (_, true) => ClientAuthMethod::ClientSecretPost,
        (Some(k), false) => ClientAuthMethod::PrivateKeyJwt { key: k.clone() },
        (None, false) => ClientAuthMethod::None,
    }
}

/// The private key of a PEM file that holds a certificate and its key, signing PS256 with the
/// certificate's `x5t#S256` (base64url SHA-256 of its DER), as Microsoft's MSAL does for Entra
/// ID.
fn certificate_key(path: &str) -> Result<PrivateKey, AzureError> {
    let invalid = |reason: String| AzureError::Invalid {
        setting: "AZURE_CLIENT_CERTIFICATE_PATH",
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| invalid(format!("cannot read {path}: {e}")))?;
    let certs = authwire_oauth2::transport::pem::certificates(&pem).map_err(|e| {
        invalid(format!(
            "{path}: {e} (PFX files are not supported; convert to PEM: openssl pkcs12 -in cert.pfx -out cert.pem -nodes)"
        ))
    })?;
    let thumbprint = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, certs[0].as_ref());
    let x5t_s256 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(thumbprint.as_ref());
    let key = PrivateKey::rsa_pem(&pem).map_err(|e| invalid(format!("the key in {path}: {e}")))?;
    Ok(key
        .with_algorithm(jsonwebtoken::Algorithm::PS256)
        .with_x5t_s256(x5t_s256))
}

impl fmt::Debug for EnvironmentCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnvironmentCredential")
            .field("tenant", &self.tenant)
            .field(
                "kind",
                &if self.secret.is_some() {
                    "client secret (redacted)"
                } else {
                    "certificate"
                },
            )
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl IdentityProvider for EnvironmentCredential {
    async fn fetch_token(&self, current: Option<&Token>) -> Result<Token, ProviderError> {
        self.provider.fetch_token(current).await
    }

    fn cache_key(&self) -> CacheKey {
        self.provider.cache_key()
    }
}
