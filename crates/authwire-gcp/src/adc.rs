//! Application Default Credentials: the order Google's client libraries look in.

use crate::metadata::{METADATA_IP, PROBE_TIMEOUT, probe};
use crate::{
    AuthorizedUser, ExternalAccount, GcloudCli, GcpError, Impersonated, MetadataServer, ServiceAccountKey,
};
use authwire::{CacheKey, IdentityProvider, ProofKey, ProofOfPossession, ProviderError, Token, async_trait};
use std::path::PathBuf;
use std::sync::Arc;

/// Whichever credentials [`default_credentials`] found.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum GcpCredentials {
    /// A service account key file.
    ServiceAccount(ServiceAccountKey),
    /// gcloud's application-default login.
    AuthorizedUser(AuthorizedUser),
    /// Workload identity federation.
    ExternalAccount(ExternalAccount),
    /// The metadata server.
    Metadata(MetadataServer),
    /// `gcloud`'s logged-in account (last in the chain).
    Gcloud(GcloudCli),
    /// An `impersonated_service_account` file.
    Impersonated(Impersonated),
}

impl GcpCredentials {
    /// Read a credentials file of any supported `type`.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, GcpError> {
        let (bytes, shown) = crate::read_file(path.as_ref())?;
        #[derive(serde::Deserialize)]
        struct Kind {
            #[serde(rename = "type")]
            kind: Option<String>,
        }
        let kind: Kind = serde_json::from_slice(&bytes).map_err(|e| GcpError::Format {
            source: shown.clone(),
            reason: format!("not JSON ({e})"),
        })?;
        match kind.kind.as_deref() {
            Some("service_account") => ServiceAccountKey::from_json(&bytes, &shown).map(Self::ServiceAccount),
            Some("authorized_user") => AuthorizedUser::from_json(&bytes, &shown).map(Self::AuthorizedUser),
            Some("external_account") => ExternalAccount::from_json(&bytes, &shown).map(Self::ExternalAccount),
            Some("impersonated_service_account") => {
                Impersonated::from_json(&bytes, &shown).map(Self::Impersonated)
            }
            Some(other) => Err(GcpError::Unsupported {
                kind: other.to_owned(),
            }),
            None => Err(GcpError::Format {
                source: shown,
                reason: "no \"type\" field".into(),
            }),
        }
    }

    /// Ask for this scope (repeatable), whatever the source.
    pub fn scope(self, scope: impl Into<String>) -> Self {
        match self {
            Self::ServiceAccount(p) => Self::ServiceAccount(p.scope(scope)),
            Self::AuthorizedUser(p) => Self::AuthorizedUser(p.scope(scope)),
            Self::ExternalAccount(p) => Self::ExternalAccount(p.scope(scope)),
            Self::Metadata(p) => Self::Metadata(p.scope(scope)),
            // gcloud's token has gcloud's scopes (cloud-platform and its own).
            Self::Gcloud(p) => Self::Gcloud(p),
            Self::Impersonated(p) => Self::Impersonated(p.scope(scope)),
        }
    }

    /// Send every request through `transport` (proxy, roots of trust, client certificate,
    /// timeout), whatever the source; the metadata server is always reached directly.
    pub fn transport(self, transport: authwire_oauth2::Transport) -> Self {
        match self {
            Self::ServiceAccount(p) => Self::ServiceAccount(p.transport(transport)),
            Self::AuthorizedUser(p) => Self::AuthorizedUser(p.transport(transport)),
            Self::ExternalAccount(p) => Self::ExternalAccount(p.transport(transport)),
            Self::Metadata(p) => Self::Metadata(p.transport(transport)),
            // gcloud makes its own requests, with its own proxy settings.
            Self::Gcloud(p) => Self::Gcloud(p),
            Self::Impersonated(p) => Self::Impersonated(p.transport(transport)),
        }
    }

    /// Bill and rate-limit requests to this project (`x-goog-user-project`), whatever the
    /// source.
    pub fn quota_project(self, project: impl Into<String>) -> Self {
        match self {
            Self::ServiceAccount(p) => Self::ServiceAccount(p.quota_project(project)),
            Self::AuthorizedUser(p) => Self::AuthorizedUser(p.quota_project(project)),
            Self::ExternalAccount(p) => Self::ExternalAccount(p.quota_project(project)),
            Self::Metadata(p) => Self::Metadata(p.quota_project(project)),
            Self::Gcloud(p) => Self::Gcloud(p.quota_project(project)),
            Self::Impersonated(p) => Self::Impersonated(p.quota_project(project)),
        }
    }

    /// Which source this is, for messages: `service_account`, `authorized_user`,
    /// `external_account`, `metadata_server`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ServiceAccount(_) => "service_account",
            Self::AuthorizedUser(_) => "authorized_user",
            Self::ExternalAccount(_) => "external_account",
            Self::Metadata(_) => "metadata_server",
            Self::Gcloud(_) => "gcloud_cli",
            Self::Impersonated(_) => "impersonated_service_account",
        }
    }

    fn inner(&self) -> &dyn IdentityProvider {
        match self {
            Self::ServiceAccount(p) => p,
            Self::AuthorizedUser(p) => p,
            Self::ExternalAccount(p) => p,
            Self::Metadata(p) => p,
            Self::Gcloud(p) => p,
            Self::Impersonated(p) => p,
        }
    }
}

#[async_trait]
impl IdentityProvider for GcpCredentials {
    async fn fetch_token(&self, current: Option<&Token>) -> Result<Token, ProviderError> {
        self.inner().fetch_token(current).await
    }

    fn cache_key(&self) -> CacheKey {
        self.inner().cache_key()
    }

    fn restore_proof(&self, key: &ProofKey) -> Option<Arc<dyn ProofOfPossession>> {
        self.inner().restore_proof(key)
    }

    fn request_headers(&self) -> Vec<(authwire::http::HeaderName, authwire::http::HeaderValue)> {
        self.inner().request_headers()
    }
}

/// Application Default Credentials, from the process environment: see
/// [`default_credentials_in`].
pub async fn default_credentials() -> Result<GcpCredentials, GcpError> {
    default_credentials_in(|name| std::env::var(name).ok()).await
}

/// Application Default Credentials with the environment read through `env` (tests and
/// sandboxes pass their own). In order:
///
/// 1. `GOOGLE_APPLICATION_CREDENTIALS`: the file it names (an error if it cannot be used: a
///    set variable is never silently skipped);
/// 2. gcloud's well-known file, `$CLOUDSDK_CONFIG/application_default_credentials.json` or
///    `~/.config/gcloud/application_default_credentials.json` (`%APPDATA%\gcloud` on Windows);
/// 3. the metadata server, if it answers a probe within [`PROBE_TIMEOUT`] at
///    `GCE_METADATA_IP`, `GCE_METADATA_HOST` or 169.254.169.254 (skipped when
///    `NO_GCE_CHECK=true`);
/// 4. `gcloud` on `PATH` ([`GcloudCli`]), as gcp_auth does.
pub async fn default_credentials_in(
    env: impl Fn(&str) -> Option<String>,
) -> Result<GcpCredentials, GcpError> {
    let found = find_in(&env).await?;
    // GOOGLE_CLOUD_QUOTA_PROJECT wins over a file's quota_project_id, as in Google's libraries.
    Ok(
        match env("GOOGLE_CLOUD_QUOTA_PROJECT").filter(|p| !p.is_empty()) {
            Some(project) => found.quota_project(project),
            None => found,
        },
    )
}

async fn find_in(env: &impl Fn(&str) -> Option<String>) -> Result<GcpCredentials, GcpError> {
    if let Some(found) = credential_file_in(env)? {
        return Ok(found);
    }
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    for source in unprobed_sources_in(env) {
        if let GcpCredentials::Metadata(_) = source {
            let probe_host = var("GCE_METADATA_IP")
                .or_else(|| var("GCE_METADATA_HOST"))
                .unwrap_or_else(|| METADATA_IP.to_owned());
            if !probe(&format!("http://{probe_host}"), PROBE_TIMEOUT).await {
                continue;
            }
        }
        return Ok(source);
    }
    Err(GcpError::NotFound)
}

/// Steps 1 and 2 of [`default_credentials_in`]: the credential file that
/// `GOOGLE_APPLICATION_CREDENTIALS` or gcloud's well-known location names, if any. Reads files,
/// nothing on the network.
pub fn credential_file_in(env: impl Fn(&str) -> Option<String>) -> Result<Option<GcpCredentials>, GcpError> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(path) = var("GOOGLE_APPLICATION_CREDENTIALS") {
        return GcpCredentials::from_file(path).map(Some);
    }
    match well_known_file(&var).filter(|p| p.is_file()) {
        Some(path) => GcpCredentials::from_file(path).map(Some),
        None => Ok(None),
    }
}

/// Steps 3 and 4 of [`default_credentials_in`] without the metadata probe, in the chain's
/// order: the metadata server (unless `NO_GCE_CHECK=true`), then `gcloud` if it is on `PATH`.
///
/// For a caller that keeps tokens across processes (the CLI): a source whose token is still
/// in the cache can be used without waiting up to [`PROBE_TIMEOUT`] for a metadata server that
/// is not there, as on every developer machine.
pub fn unprobed_sources_in(env: impl Fn(&str) -> Option<String>) -> Vec<GcpCredentials> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let mut sources = Vec::new();
    if !var("NO_GCE_CHECK").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        sources.push(GcpCredentials::Metadata(MetadataServer::from_env(&var)));
    }
    if let Some(gcloud) = var("PATH").and_then(|path| authwire_oauth2::process::find_on_path(&path, "gcloud"))
    {
        sources.push(GcpCredentials::Gcloud(GcloudCli::new().program(gcloud)));
    }
    sources
}

fn well_known_file(var: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let dir = match var("CLOUDSDK_CONFIG") {
        Some(d) => PathBuf::from(d),
        None if cfg!(windows) => PathBuf::from(var("APPDATA")?).join("gcloud"),
        None => PathBuf::from(var("HOME")?).join(".config/gcloud"),
    };
    Some(dir.join("application_default_credentials.json"))
}
