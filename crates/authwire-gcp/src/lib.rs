//! Google Cloud credentials for authwire.
//!
//! Each source is an [`authwire::IdentityProvider`]: give it to an [`authwire::Authorizer`] and every
//! caller shares one refresh, ahead of expiry, with backoff, through any store.
//!
//! | source | what it is | where it comes from |
//! | --- | --- | --- |
//! | [`ServiceAccountKey`] | a service account's JSON key | `GOOGLE_APPLICATION_CREDENTIALS`, a file |
//! | [`AuthorizedUser`] | a person's refresh token | `gcloud auth application-default login` |
//! | [`ExternalAccount`] | workload identity federation | a file naming a subject token source, Google's STS, optional impersonation |
//! | [`MetadataServer`] | the VM's, pod's or service's identity | GCE, GKE, Cloud Run, Cloud Functions |
//! | [`MetadataIdToken`] | an ID token for an audience | the metadata server (Cloud Run, IAP) |
//! | [`Impersonated`] | a service account, acted as by another credential | IAM Credentials `generateAccessToken` |
//! | [`GcloudCli`] | the person logged in with `gcloud auth login` | `gcloud config config-helper` |
//!
//! [`default_credentials`] picks one in Application Default Credentials order:
//! `GOOGLE_APPLICATION_CREDENTIALS`, then gcloud's well-known file, then the metadata server
//! (probed with a short, bounded timeout, so a laptop does not hang), then `gcloud` itself
//! when it is on `PATH` (as gcp_auth does).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let credentials = authwire_gcp::default_credentials()
//!     .await?
//!     .scope("https://www.googleapis.com/auth/cloud-platform");
//! let authorizer = authwire::Authorizer::new(credentials);
//! # Ok(()) }
//! ```
//!
//! Every endpoint can be pointed elsewhere (the key file's `token_uri`, the external account's
//! `token_url` and `service_account_impersonation_url`, `GCE_METADATA_HOST`,
//! [`MetadataServer::endpoint`]), which is how the tests run against emulators on 127.0.0.1.

mod adc;
mod aws;
mod external_account;
mod gcloud;
mod http;
mod impersonated;
mod metadata;
mod service_account;
mod user;

pub use adc::{
    GcpCredentials, credential_file_in, default_credentials, default_credentials_in, unprobed_sources_in,
};
pub use aws::AWS_SUBJECT_TOKEN_TYPE;
pub use external_account::ExternalAccount;
pub use gcloud::{GCLOUD_TIMEOUT, GcloudCli};
pub use impersonated::{IAM_CREDENTIALS_URL, Impersonated, ImpersonatedIdToken};
pub use metadata::{METADATA_HOST, METADATA_IP, MetadataIdToken, MetadataServer, PROBE_TIMEOUT};

// Public for the fuzz targets of authwire-reliability only; not part of the API.
#[doc(hidden)]
pub use metadata::parse_id_token as parse_metadata_id_token;
pub use service_account::{ServiceAccountIdToken, ServiceAccountKey};
pub use user::{AuthorizedUser, UserIdToken};

use std::fmt;

/// Google's OAuth 2.0 token endpoint, for `authorized_user` credentials without a `token_uri`.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// The scope most Google Cloud APIs accept.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The scopes asked for: those given, else cloud-platform (as Google's libraries default).
fn scopes_or_cloud_platform(scopes: &[String]) -> Vec<String> {
    if scopes.is_empty() {
        vec![CLOUD_PLATFORM_SCOPE.to_owned()]
    } else {
        scopes.to_vec()
    }
}

/// Why credentials could not be set up. Says what to fix; never contains a key or a token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GcpError {
    /// A credentials file could not be read.
    Read {
        /// The file.
        path: String,
        /// What the system said.
        reason: String,
    },
    /// A credentials file is not what Google's formats describe.
    Format {
        /// Where it came from.
        source: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A credentials file of a type this crate does not handle.
    Unsupported {
        /// The `type` field (or the credential source).
        kind: String,
    },
    /// No credentials anywhere Application Default Credentials look.
    NotFound,
    /// An endpoint URL is not usable (not https, and not http to loopback).
    Url(String),
}

impl fmt::Display for GcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GcpError::Read { path, reason } => write!(f, "cannot read the credentials file {path}: {reason}"),
            GcpError::Format { source, reason } => {
                write!(f, "{source} is not a usable Google credentials file: {reason}")
            }
            GcpError::Unsupported { kind } => write!(
                f,
                "credentials of type {kind:?} are not supported (service_account, authorized_user, impersonated_service_account and external_account with file, URL or executable sources are)"
            ),
            GcpError::NotFound => f.write_str(
                "no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a key file, run `gcloud auth application-default login` (or install gcloud and run `gcloud auth login`), or run on Google Cloud (no metadata server answered: not on GCE?)",
            ),
            GcpError::Url(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for GcpError {}

/// A credentials file's bytes and the name errors give it.
pub(crate) fn read_file(path: &std::path::Path) -> Result<(Vec<u8>, String), GcpError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| GcpError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    Ok((bytes, shown))
}

/// A credential's quota project: Google bills and rate-limits its requests to this project when
/// they carry `x-goog-user-project` (as Google's libraries send it).
#[derive(Clone, Debug, Default)]
pub(crate) struct QuotaProject(Option<authwire::http::HeaderValue>);

impl QuotaProject {
    /// The header's name.
    pub(crate) const HEADER: &'static str = "x-goog-user-project";

    pub(crate) fn new(project: impl Into<String>) -> Self {
        let project = project.into();
        match authwire::http::HeaderValue::from_str(&project) {
            Ok(value) if !project.is_empty() => Self(Some(value)),
            _ => {
                tracing::warn!("a quota project that cannot be a header value was ignored");
                Self(None)
            }
        }
    }

    /// A credential file's `quota_project_id`, if it has one.
    pub(crate) fn from_file(project: Option<String>) -> Self {
        project
            .filter(|p| !p.is_empty())
            .map(Self::new)
            .unwrap_or_default()
    }

    pub(crate) fn headers(&self) -> Vec<(authwire::http::HeaderName, authwire::http::HeaderValue)> {
        self.0
            .iter()
            .map(|v| (authwire::http::HeaderName::from_static(Self::HEADER), v.clone()))
            .collect()
    }
}
