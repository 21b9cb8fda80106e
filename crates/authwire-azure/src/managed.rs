//! Managed identity: the Azure Instance Metadata Service (IMDS), or the identity endpoint of
//! App Service, Functions and Container Apps, as Microsoft documents them.
//!
//! - IMDS: `GET {IMDS}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=R`, header
//!   `Metadata: true`; `expires_on` and `expires_in` are strings of seconds.
//! - App Service (2019-08-01): `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=R`,
//!   header `X-IDENTITY-HEADER: {IDENTITY_HEADER}`; `expires_on` is a string of epoch seconds.

use crate::{Env, process_env, scope_to_resource};
use authwire::http;
use authwire::{CacheKey, Clock, IdentityProvider, ProviderError, Token, async_trait};
use authwire_oauth2::transport::{self, HttpClient, Reply};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::OnceCell;

/// The IMDS address, when `AZURE_POD_IDENTITY_AUTHORITY_HOST` does not say otherwise.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254";
/// How long the first request of a chain waits for IMDS to be there at all.
pub const IMDS_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long one token request to IMDS or App Service may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const USER_AGENT: &str = concat!("authwire-azure/", env!("CARGO_PKG_VERSION"));

#[derive(Clone)]
enum Endpoint {
    Imds { base: String },
    AppService { url: String, header: SecretString },
}

/// A managed identity (system-assigned, or user-assigned with [`client_id`](Self::client_id)).
///
/// ```no_run
/// let provider = authwire_azure::ManagedIdentity::new().scope("https://storage.azure.com/.default");
/// ```
#[derive(Clone)]
pub struct ManagedIdentity {
    endpoint: Endpoint,
    client_id: Option<UserAssigned>,
    scope: Option<String>,
    client: HttpClient,
    clock: Arc<dyn Clock>,
    /// Probe IMDS (quickly) before the first token request: set in a chain, where a laptop must
    /// not wait for a token request to time out.
    probe: Option<Arc<OnceCell<()>>>,
    /// In the default chain: when IMDS does not answer its probe, a developer's `az`, then
    /// `azd` (the programs found on `PATH`), as `DefaultAzureCredential` orders them.
    developer: Vec<DeveloperTool>,
}

/// Which user-assigned identity, and by which of its ids.
#[derive(Clone, Debug)]
enum UserAssigned {
    Client(String),
    Object(String),
    Resource(String),
}

impl UserAssigned {
    /// `&name=value` for the query: IMDS calls the resource id `msi_res_id`, App Service
    /// `mi_res_id`; both take `client_id` and `object_id`.
    fn query(&self, app_service: bool) -> String {
        let (name, value) = match self {
            Self::Client(v) => ("client_id", v),
            Self::Object(v) => ("object_id", v),
            Self::Resource(v) if app_service => ("mi_res_id", v),
            Self::Resource(v) => ("msi_res_id", v),
        };
        format!("&{name}={}", encode(value))
    }

    fn shown(&self) -> String {
        match self {
            Self::Client(v) => format!("with client id {v}"),
            Self::Object(v) => format!("with object id {v}"),
            Self::Resource(v) => format!("with resource id {v}"),
        }
    }

    fn key(&self) -> String {
        match self {
            Self::Client(v) => v.clone(),
            Self::Object(v) => format!("object:{v}"),
            Self::Resource(v) => format!("resource:{v}"),
        }
    }
}

/// A developer tool the default chain falls back to.
#[derive(Clone, Debug)]
pub(crate) enum DeveloperTool {
    Az(std::path::PathBuf),
    Azd(std::path::PathBuf),
}

impl Default for ManagedIdentity {
    fn default() -> Self {
        Self::new()
    }
}

impl ManagedIdentity {
    /// App Service's endpoint when `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set, otherwise
    /// IMDS (at `AZURE_POD_IDENTITY_AUTHORITY_HOST`, or 169.254.169.254).
    pub fn new() -> Self {
        Self::from_env_in(&process_env)
    }

    /// [`new`](Self::new) with the environment read through `env`.
    pub fn from_env_in(env: Env<'_>) -> Self {
        let var = |n: &str| env(n).filter(|v| !v.is_empty());
        let endpoint = match (var("IDENTITY_ENDPOINT"), var("IDENTITY_HEADER")) {
            (Some(url), Some(header)) => Endpoint::AppService {
                url,
                header: SecretString::from(header),
            },
            _ => Endpoint::Imds {
                base: var("AZURE_POD_IDENTITY_AUTHORITY_HOST")
                    .unwrap_or_else(|| IMDS_ENDPOINT.to_owned())
                    .trim_end_matches('/')
                    .to_owned(),
            },
        };
        Self {
            endpoint,
            client_id: None,
            scope: None,
            client: HttpClient::metadata(USER_AGENT, &authwire_oauth2::Transport::new()),
            clock: Arc::new(authwire::SystemClock),
            probe: None,
            developer: Vec::new(),
        }
    }

    /// Use IMDS at this base URL (`http://127.0.0.1:8080`), whatever the environment says.
    pub fn imds_endpoint(mut self, base: impl Into<String>) -> Self {
        self.endpoint = Endpoint::Imds {
            base: base.into().trim_end_matches('/').to_owned(),
        };
        self
    }

    /// A user-assigned identity, by its client id.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(UserAssigned::Client(client_id.into()));
        self
    }

    /// A user-assigned identity, by its object (principal) id.
    pub fn object_id(mut self, object_id: impl Into<String>) -> Self {
        self.client_id = Some(UserAssigned::Object(object_id.into()));
        self
    }

    /// A user-assigned identity, by its Azure resource id
    /// (`/subscriptions/.../userAssignedIdentities/NAME`).
    pub fn resource_id(mut self, resource_id: impl Into<String>) -> Self {
        self.client_id = Some(UserAssigned::Resource(resource_id.into()));
        self
    }

    /// The scope (`https://management.azure.com/.default`); the endpoint gets its resource.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Use `transport`'s roots of trust and timeout. Never its proxy: IMDS and App Service's
    /// endpoint are reached directly, as Azure's SDKs reach them.
    pub fn transport(mut self, transport: authwire_oauth2::Transport) -> Self {
        self.client = HttpClient::metadata(USER_AGENT, &transport);
        self
    }

    /// Read time from `clock` (tests; the default is the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The transport's timeout, else [`REQUEST_TIMEOUT`].
    fn request_timeout(&self) -> Duration {
        self.client.configured_timeout().unwrap_or(REQUEST_TIMEOUT)
    }

    /// Fall back to these developer tools when IMDS does not answer (the default chain).
    pub(crate) fn with_developer_tools(mut self, tools: Vec<DeveloperTool>) -> Self {
        self.developer = tools;
        self
    }

    /// IMDS did not answer: a developer's own login, in order; the first that gives a token.
    async fn developer_token(&self, scope: &str, no_imds: ProviderError) -> Result<Token, ProviderError> {
        if self.developer.is_empty() {
            return Err(no_imds);
        }
        let mut said = vec![authwire::error_chain(&no_imds)];
        for tool in &self.developer {
            let attempt = match tool {
                DeveloperTool::Az(program) => {
                    crate::AzureCli::new()
                        .program(program)
                        .scope(scope)
                        .clock(self.clock.clone())
                        .fetch_token(None)
                        .await
                }
                DeveloperTool::Azd(program) => {
                    crate::AzureDeveloperCli::new()
                        .program(program)
                        .scope(scope)
                        .clock(self.clock.clone())
                        .fetch_token(None)
                        .await
                }
            };
            match attempt {
                Ok(token) => return Ok(token),
                Err(e) => said.push(authwire::error_chain(&e)),
            }
        }
        Err(ProviderError::permanent(said.join("; then ")))
    }

    pub(crate) fn probing(mut self) -> Self {
        self.probe = Some(Arc::new(OnceCell::new()));
        self
    }

    /// Whether this is App Service's endpoint (rather than IMDS).
    pub fn is_app_service(&self) -> bool {
        matches!(self.endpoint, Endpoint::AppService { .. })
    }

    /// One short request without the `Metadata` header: any HTTP answer (IMDS says 400) means
    /// IMDS is there; a refused or silent connection means it is not.
    async fn probe_imds(&self, base: &str) -> Result<(), ProviderError> {
        let request = http::Request::get(format!("{base}/metadata/identity/oauth2/token"));
        let probe = self.client.send(request, Vec::new(), IMDS_PROBE_TIMEOUT);
        match tokio::time::timeout(IMDS_PROBE_TIMEOUT, probe).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ProviderError::permanent(format!(
                "no managed identity endpoint answered at {base} within {}s: not on Azure? set AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_CLIENT_SECRET, or AZURE_FEDERATED_TOKEN_FILE",
                IMDS_PROBE_TIMEOUT.as_secs()
            ))),
        }
    }

    fn answer(&self, reply: &Reply, secrets: &[&str]) -> Result<Token, ProviderError> {
        let now = self.clock.now();
        if !(200..300).contains(&reply.status) {
            let sent: Vec<SecretString> = secrets
                .iter()
                .map(|s| SecretString::from(s.to_string()))
                .collect();
            let e = transport::parse_error(reply.status, reply.retry_after.as_deref(), &reply.body, now)
                .redact_sent(&sent);
            // IMDS answers 400 "Identity not found" for a user-assigned id that is not assigned.
            if reply.status == 400 && authwire::error_chain(&e).contains("Identity not found") {
                return Err(ProviderError::permanent(format!(
                    "no managed identity {} is assigned to this resource: check the id",
                    self.client_id
                        .as_ref()
                        .map_or("(system-assigned)".into(), UserAssigned::shown)
                )));
            }
            return Err(e);
        }
        parse_token_answer(reply.status, &reply.body, now)
    }
}

impl fmt::Debug for ManagedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoint = match &self.endpoint {
            Endpoint::Imds { base } => format!("IMDS at {base}"),
            Endpoint::AppService { url, .. } => format!("App Service at {url} (header redacted)"),
        };
        f.debug_struct("ManagedIdentity")
            .field("endpoint", &endpoint)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[async_trait]
impl IdentityProvider for ManagedIdentity {
    async fn fetch_token(&self, _current: Option<&Token>) -> Result<Token, ProviderError> {
        let scope = self.scope.as_deref().ok_or_else(|| {
            ProviderError::permanent("no scope: call .scope(\"https://RESOURCE/.default\")")
        })?;
        let resource = encode(scope_to_resource(scope));
        let app_service = matches!(self.endpoint, Endpoint::AppService { .. });
        let client_id = self
            .client_id
            .as_ref()
            .map(|c| c.query(app_service))
            .unwrap_or_default();
        match &self.endpoint {
            Endpoint::Imds { base } => {
                if let Some(probe) = &self.probe
                    && let Err(no_imds) = probe.get_or_try_init(|| self.probe_imds(base)).await
                {
                    return self.developer_token(scope, no_imds).await;
                }
                let url = format!(
                    "{base}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}{client_id}"
                );
                let request = http::Request::get(url).header("Metadata", "true");
                let reply = self
                    .client
                    .send(request, Vec::new(), self.request_timeout())
                    .await
                    .map_err(|e| {
                        if e.status().is_none() && e.is_transient() {
                            ProviderError::transient(format!(
                                "no managed identity endpoint answered at {base}: not on Azure? ({})",
                                authwire::error_chain(&e)
                            ))
                        } else {
                            e
                        }
                    })?;
                self.answer(&reply, &[])
            }
            Endpoint::AppService { url, header } => {
                let url = format!("{url}?api-version=2019-08-01&resource={resource}{client_id}");
                let request = http::Request::get(url).header(
                    "X-IDENTITY-HEADER",
                    transport::secret_header(header.expose_secret())?,
                );
                let reply = self
                    .client
                    .send(request, Vec::new(), self.request_timeout())
                    .await?;
                self.answer(&reply, &[header.expose_secret()])
            }
        }
    }

    fn cache_key(&self) -> CacheKey {
        let endpoint = match &self.endpoint {
            Endpoint::Imds { base } => base.clone(),
            Endpoint::AppService { url, .. } => url.clone(),
        };
        CacheKey::new(format!(
            "azure-managed-identity|{endpoint}|{}|scope={}",
            self.client_id.as_ref().map_or("system".into(), UserAssigned::key),
            self.scope.as_deref().unwrap_or("")
        ))
    }
}

/// A managed identity endpoint's success answer (IMDS or App Service): `access_token`, and
/// `expires_on` (absolute) or `expires_in`, as strings or numbers. Every number goes through
/// the core's capped conversions: a hostile endpoint gets an error or a capped expiry, never a
/// panic. Public for the fuzz targets of authwire-reliability only.
#[doc(hidden)]
pub fn parse_token_answer(status: u16, body: &[u8], now: SystemTime) -> Result<Token, ProviderError> {
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
        ProviderError::invalid_response(Some(status), "the managed identity answer is not JSON")
    })?;
    let access = doc
        .get("access_token")
        .and_then(|v| v.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ProviderError::invalid_response(Some(status), "no access_token in the answer"))?;
    // Seconds as strings (both services) or numbers (some hosts): `expires_on` is absolute.
    let seconds = |name: &str| -> Option<u64> {
        match doc.get(name)? {
            serde_json::Value::String(s) => s.trim().parse().ok(),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        }
    };
    let expires_at = match (seconds("expires_on"), seconds("expires_in")) {
        (Some(on), _) => authwire::expiry_at_unix(now, on),
        (None, Some(inn)) => authwire::expiry_after(now, Duration::from_secs(inn)),
        (None, None) => {
            return Err(ProviderError::invalid_response(
                Some(status),
                "the managed identity answer has neither expires_on nor expires_in",
            ));
        }
    };
    Ok(Token::new(access).with_expires_at(expires_at))
}
