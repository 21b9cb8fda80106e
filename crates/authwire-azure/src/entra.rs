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
/// private key, or a PFX file opened with `AZURE_CLIENT_CERTIFICATE_PASSWORD`; the assertion
/// is PS256 with the certificate's `x5t#S256`, as MSAL sends it, and carries the chain in `x5c`
/// when `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN` is `true`). See [`ClientCertificate`].
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
            (None, Some(path)) => {
                let password = var("AZURE_CLIENT_CERTIFICATE_PASSWORD");
                let chain = var("AZURE_CLIENT_SEND_CERTIFICATE_CHAIN")
                    .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
                Some(
                    ClientCertificate::from_path(&path, password.as_deref())?
                        .send_certificate_chain(chain)
                        .private_key(),
                )
            }
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
        Self::certificate(tenant, client_id, ClientCertificate::from_pem_file(path)?)
    }

    /// An app registration's certificate, built in code from a [`ClientCertificate`] (PEM or
    /// PFX, with or without its chain in `x5c`).
    pub fn certificate(
        tenant: impl AsRef<str>,
        client_id: impl AsRef<str>,
        certificate: ClientCertificate,
    ) -> Result<Self, AzureError> {
        let tenant = Tenant::new(DEFAULT_AUTHORITY_HOST, tenant.as_ref(), client_id.as_ref())?;
        Self::from_parts(tenant, None, Some(certificate.private_key()))
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

/// An app registration's certificate and its private key, for Entra ID's certificate
/// credentials: from PEM (the certificate, its chain if any, and the key) or PFX (PKCS#12, with
/// its password), as azure-identity reads them. Assertions are PS256 with the certificate's
/// `x5t#S256`, as MSAL sends them; with [`send_certificate_chain`](Self::send_certificate_chain)
/// they carry the chain in `x5c` too (subject name and issuer authentication).
///
/// ```no_run
/// # fn run() -> Result<(), authwire_azure::AzureError> {
/// use authwire_azure::{ClientCertificate, EnvironmentCredential};
/// let certificate = ClientCertificate::from_pkcs12_file("/run/secrets/app.pfx", "pfx-password")?
///     .send_certificate_chain(true);
/// let credential = EnvironmentCredential::certificate("contoso.onmicrosoft.com", "00000000-0000-0000-0000-000000000001", certificate)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientCertificate {
    key: PrivateKey,
    chain: Vec<Vec<u8>>,
    send_chain: bool,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("certificates", &self.chain.len())
            .field("send_certificate_chain", &self.send_chain)
            .finish_non_exhaustive()
    }
}

impl ClientCertificate {
    /// A PEM file with the certificate (first), any chain, and the RSA private key.
    pub fn from_pem_file(path: impl AsRef<std::path::Path>) -> Result<Self, AzureError> {
        let shown = path.as_ref().display().to_string();
        let pem = std::fs::read(path.as_ref())
            .map_err(|e| certificate_error(format!("cannot read {shown}: {e}")))?;
        Self::from_pem(&pem, &shown)
    }

    /// A PEM document's content; `source` names it in errors.
    pub fn from_pem(pem: &[u8], source: &str) -> Result<Self, AzureError> {
        let certs = authwire_oauth2::transport::pem::certificates(pem).map_err(|e| {
            certificate_error(format!(
                "{source}: {e} (a PFX file? read it with ClientCertificate::from_pkcs12_file)"
            ))
        })?;
        let key =
            PrivateKey::rsa_pem(pem).map_err(|e| certificate_error(format!("the key in {source}: {e}")))?;
        Ok(Self::new(
            key,
            certs.iter().map(|c| c.as_ref().to_vec()).collect(),
        ))
    }

    /// A PFX (PKCS#12) file and its password (`""` for none): the private key and the
    /// certificate chain it holds, leaf first.
    pub fn from_pkcs12_file(path: impl AsRef<std::path::Path>, password: &str) -> Result<Self, AzureError> {
        let shown = path.as_ref().display().to_string();
        let der = std::fs::read(path.as_ref())
            .map_err(|e| certificate_error(format!("cannot read {shown}: {e}")))?;
        Self::from_pkcs12(&der, password, &shown)
    }

    /// A PFX document's bytes and its password; `source` names it in errors (never the
    /// password).
    #[cfg(feature = "pkcs12")]
    pub fn from_pkcs12(der: &[u8], password: &str, source: &str) -> Result<Self, AzureError> {
        let store = p12_keystore::KeyStore::from_pkcs12(der, password, p12_keystore::Pkcs12ImportPolicy::Strict)
            .map_err(|e| {
                certificate_error(format!(
                    "{source} is not a PFX file this password opens ({}): check AZURE_CLIENT_CERTIFICATE_PASSWORD",
                    pkcs12_reason(&e)
                ))
            })?;
        let (_, chain) = store.private_key_chain().ok_or_else(|| {
            certificate_error(format!("{source} holds no private key with its certificate"))
        })?;
        if chain.certs().is_empty() {
            return Err(certificate_error(format!(
                "{source} holds a key without its certificate"
            )));
        }
        let pkcs8 = authwire::secrecy::zeroize::Zeroizing::new(chain.key().as_der().to_vec());
        let pem = authwire::secrecy::zeroize::Zeroizing::new(pem_block("PRIVATE KEY", &pkcs8));
        let key = PrivateKey::rsa_pem(pem.as_bytes()).map_err(|e| {
            certificate_error(format!(
                "the key in {source}: {e} (Entra ID certificates are RSA)"
            ))
        })?;
        Ok(Self::new(
            key,
            chain.certs().iter().map(|c| c.as_der().to_vec()).collect(),
        ))
    }

    /// Without the `pkcs12` feature: an error that says so.
    #[cfg(not(feature = "pkcs12"))]
    pub fn from_pkcs12(_der: &[u8], _password: &str, source: &str) -> Result<Self, AzureError> {
        Err(certificate_error(format!(
            "{source}: PFX support is off (authwire-azure built without its `pkcs12` feature); convert to PEM: openssl pkcs12 -in cert.pfx -out cert.pem -nodes"
        )))
    }

    fn new(key: PrivateKey, chain: Vec<Vec<u8>>) -> Self {
        let thumbprint = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &chain[0]);
        let x5t_s256 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(thumbprint.as_ref());
        Self {
            key: key
                .with_algorithm(jsonwebtoken::Algorithm::PS256)
                .with_x5t_s256(x5t_s256),
            chain,
            send_chain: false,
        }
    }

    /// Send the certificate chain in each assertion's `x5c` header, for Entra ID's subject name
    /// and issuer authentication (`AZURE_CLIENT_SEND_CERTIFICATE_CHAIN=true`; default off).
    pub fn send_certificate_chain(mut self, on: bool) -> Self {
        self.send_chain = on;
        self
    }

    /// The signing key, with `x5c` when the chain is sent.
    pub(crate) fn private_key(&self) -> PrivateKey {
        if self.send_chain {
            self.key.clone().with_x5c(&self.chain)
        } else {
            self.key.clone()
        }
    }

    /// What `AZURE_CLIENT_CERTIFICATE_PATH` names: PFX by its extension or its first byte (a
    /// DER SEQUENCE; PEM is text), else PEM.
    fn from_path(path: &str, password: Option<&str>) -> Result<Self, AzureError> {
        let bytes = std::fs::read(path).map_err(|e| certificate_error(format!("cannot read {path}: {e}")))?;
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".pfx") || lower.ends_with(".p12") || bytes.first() == Some(&0x30) {
            Self::from_pkcs12(&bytes, password.unwrap_or(""), path)
        } else {
            Self::from_pem(&bytes, path)
        }
    }
}

/// Why a PFX did not open, in words that never hold the password.
#[cfg(feature = "pkcs12")]
fn pkcs12_reason(e: &p12_keystore::error::Error) -> String {
    let text = e.to_string();
    if text.to_ascii_lowercase().contains("mac") {
        "wrong password, or a damaged file".into()
    } else {
        text
    }
}

#[cfg(feature = "pkcs12")]
fn pem_block(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn certificate_error(reason: String) -> AzureError {
    AzureError::Invalid {
        setting: "AZURE_CLIENT_CERTIFICATE_PATH",
        reason,
    }
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
