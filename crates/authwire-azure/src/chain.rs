//! The default chain, in the order of Azure's SDKs' `DefaultAzureCredential`.

use crate::{AzureError, Env, EnvironmentCredential, ManagedIdentity, WorkloadIdentity, process_env};
use authwire::{CacheKey, IdentityProvider, ProviderError, Token, async_trait};

/// Whichever credential [`default_credential`] chose.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum AzureCredential {
    /// A secret or certificate from the environment.
    Environment(EnvironmentCredential),
    /// Workload identity.
    Workload(WorkloadIdentity),
    /// A managed identity.
    Managed(ManagedIdentity),
}

impl AzureCredential {
    /// The scope (`https://RESOURCE/.default`), whatever the source.
    pub fn scope(self, scope: impl Into<String>) -> Self {
        match self {
            Self::Environment(c) => Self::Environment(c.scope(scope)),
            Self::Workload(c) => Self::Workload(c.scope(scope)),
            Self::Managed(c) => Self::Managed(c.scope(scope)),
        }
    }

    /// Send every request through `transport` (proxy, roots of trust, client certificate,
    /// timeout), whatever the source; managed identity endpoints are always reached directly.
    pub fn transport(self, transport: authwire_oauth2::Transport) -> Self {
        match self {
            Self::Environment(c) => Self::Environment(c.transport(transport)),
            Self::Workload(c) => Self::Workload(c.transport(transport)),
            Self::Managed(c) => Self::Managed(c.transport(transport)),
        }
    }

    /// Which source this is: `environment`, `workload_identity`, `managed_identity`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Environment(_) => "environment",
            Self::Workload(_) => "workload_identity",
            Self::Managed(_) => "managed_identity",
        }
    }

    fn inner(&self) -> &dyn IdentityProvider {
        match self {
            Self::Environment(c) => c,
            Self::Workload(c) => c,
            Self::Managed(c) => c,
        }
    }
}

#[async_trait]
impl IdentityProvider for AzureCredential {
    async fn fetch_token(&self, current: Option<&Token>) -> Result<Token, ProviderError> {
        self.inner().fetch_token(current).await
    }

    fn cache_key(&self) -> CacheKey {
        self.inner().cache_key()
    }
}

/// The default chain, from the process environment: see [`default_credential_in`].
pub fn default_credential() -> Result<AzureCredential, AzureError> {
    default_credential_in(&process_env)
}

/// The first credential configured in `env`, in `DefaultAzureCredential`'s order:
///
/// 1. environment: `AZURE_TENANT_ID` + `AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET` or
///    `AZURE_CLIENT_CERTIFICATE_PATH`;
/// 2. workload identity: `AZURE_FEDERATED_TOKEN_FILE` (with the tenant and client id);
/// 3. managed identity: App Service's endpoint when `IDENTITY_ENDPOINT` is set, otherwise IMDS,
///    user-assigned when `AZURE_CLIENT_ID` is set. Its first token request probes IMDS for at
///    most [`crate::IMDS_PROBE_TIMEOUT`], so that a machine off Azure fails fast;
/// 4. when IMDS does not answer: the Azure CLI ([`crate::AzureCli`], `az login`), then the Azure
///    Developer CLI ([`crate::AzureDeveloperCli`], `azd auth login`), each if it is on `PATH`.
///
/// A credential whose variables are half set (a secret without a tenant) is an error rather
/// than a reason to try the next: that is a mistake to report.
pub fn default_credential_in(env: Env<'_>) -> Result<AzureCredential, AzureError> {
    let var = |n: &str| env(n).filter(|v| !v.is_empty());
    if var("AZURE_CLIENT_SECRET").is_some() || var("AZURE_CLIENT_CERTIFICATE_PATH").is_some() {
        return EnvironmentCredential::from_env_in(env).map(AzureCredential::Environment);
    }
    if var("AZURE_FEDERATED_TOKEN_FILE").is_some() {
        return WorkloadIdentity::from_env_in(env).map(AzureCredential::Workload);
    }
    let mut managed = ManagedIdentity::from_env_in(env);
    if let Some(id) = var("AZURE_CLIENT_ID") {
        managed = managed.client_id(id);
    }
    if !managed.is_app_service() {
        let tools = [("az", true), ("azd", false)]
            .into_iter()
            .filter_map(|(name, az)| {
                let found = authwire_oauth2::process::find_on_path(&var("PATH")?, name)?;
                Some(if az {
                    crate::managed::DeveloperTool::Az(found)
                } else {
                    crate::managed::DeveloperTool::Azd(found)
                })
            })
            .collect();
        managed = managed.probing().with_developer_tools(tools);
    }
    Ok(AzureCredential::Managed(managed))
}
