//! Azure credentials for authwire.
//!
//! | source | what it is | configured by |
//! | --- | --- | --- |
//! | [`ManagedIdentity`] | the VM's, container's or app's identity | IMDS, or `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` (App Service, Functions, Container Apps) |
//! | [`WorkloadIdentity`] | a Kubernetes service account federated with Entra ID | `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_AUTHORITY_HOST` |
//! | [`EnvironmentCredential`] | an app registration's secret or certificate | `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` or `AZURE_CLIENT_CERTIFICATE_PATH` |
//!
//! [`default_credential`] picks the first that is configured, in the order of Azure's SDKs'
//! `DefaultAzureCredential`: environment, workload identity, managed identity.
//!
//! ```no_run
//! # fn run() -> Result<(), authwire_azure::AzureError> {
//! let credential = authwire_azure::default_credential()?.scope("https://management.azure.com/.default");
//! let authorizer = authwire::Authorizer::new(credential);
//! # Ok(()) }
//! ```
//!
//! Scopes are Entra ID's: one resource with `/.default` (`https://vault.azure.net/.default`).
//! Managed identity endpoints take a resource instead; the suffix is removed for them, as Azure's
//! SDKs do. Every endpoint can be pointed elsewhere (`AZURE_AUTHORITY_HOST`,
//! `AZURE_POD_IDENTITY_AUTHORITY_HOST` for IMDS, [`ManagedIdentity::imds_endpoint`]), which is
//! how the tests run against emulators on 127.0.0.1.

mod chain;
mod developer;
mod entra;
mod managed;

pub use chain::{AzureCredential, default_credential, default_credential_in};
pub use developer::{AzureCli, AzureDeveloperCli, DEVELOPER_CLI_TIMEOUT};
pub use entra::{ClientCertificate, EnvironmentCredential, WorkloadIdentity};
pub use managed::{IMDS_ENDPOINT, IMDS_PROBE_TIMEOUT, ManagedIdentity};

// Public for the fuzz targets of authwire-reliability only; not part of the API.
#[doc(hidden)]
pub use managed::parse_token_answer as parse_managed_identity_answer;

use std::fmt;

/// Entra ID's public cloud authority, when `AZURE_AUTHORITY_HOST` is not set.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com/";

/// Why a credential could not be set up. Says what to set; never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AzureError {
    /// Environment variables the credential needs are not set.
    Missing(&'static str),
    /// A setting is unusable.
    Invalid {
        /// Which setting.
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// No credential of the chain is configured here.
    NotFound,
}

impl fmt::Display for AzureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AzureError::Missing(what) => write!(f, "not configured: {what}"),
            AzureError::Invalid { setting, reason } => write!(f, "{setting} is not usable: {reason}"),
            AzureError::NotFound => f.write_str(
                "no Azure credential configured: set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or AZURE_CLIENT_CERTIFICATE_PATH, or AZURE_FEDERATED_TOKEN_FILE), or run with a managed identity",
            ),
        }
    }
}

impl std::error::Error for AzureError {}

/// The resource a managed identity endpoint wants for an Entra scope: the scope without
/// `/.default`.
pub(crate) fn scope_to_resource(scope: &str) -> &str {
    scope.strip_suffix("/.default").unwrap_or(scope)
}

/// A lookup of environment variables: the process's, or a test's.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// docs/cloud.md, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/cloud.md")]
pub struct CloudGuide;

#[cfg(test)]
mod tests {
    #[test]
    fn resources_are_scopes_without_dot_default() {
        assert_eq!(
            super::scope_to_resource("https://management.azure.com/.default"),
            "https://management.azure.com"
        );
        assert_eq!(
            super::scope_to_resource("https://vault.azure.net"),
            "https://vault.azure.net"
        );
    }
}
