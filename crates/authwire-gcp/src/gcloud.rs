//! [`GcloudCli`]: the token of the person logged in with `gcloud auth login`, from
//! `gcloud config config-helper --format=json`, as gcp_auth's `GCloudAuthorizedUser` reads it.

use authwire::{CacheKey, Clock, IdentityProvider, ProviderError, Token, async_trait};
use secrecy::SecretString;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

/// How long `gcloud` may take by default.
pub const GCLOUD_TIMEOUT: Duration = Duration::from_secs(10);

/// The access token of `gcloud`'s active account (`gcloud auth login`), read from
/// `gcloud config config-helper --format=json`: for a developer's machine. The program runs
/// once per token (the `Authorizer` caches it until its `token_expiry`), never per request.
///
/// ```no_run
/// let authorizer = authwire::Authorizer::new(authwire_gcp::GcloudCli::new());
/// ```
#[derive(Clone)]
pub struct GcloudCli {
    program: OsString,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    quota_project: crate::QuotaProject,
}

impl Default for GcloudCli {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for GcloudCli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcloudCli")
            .field("program", &self.program)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl GcloudCli {
    /// `gcloud` from `PATH` (`gcloud.cmd` on Windows), with a 10 s timeout.
    pub fn new() -> Self {
        Self {
            program: OsString::from(authwire_oauth2::process::tool_name("gcloud")),
            timeout: GCLOUD_TIMEOUT,
            clock: Arc::new(authwire::SystemClock),
            quota_project: crate::QuotaProject::default(),
        }
    }

    /// Run this program instead (a full path).
    pub fn program(mut self, program: impl Into<OsString>) -> Self {
        self.program = program.into();
        self
    }

    /// Allow `gcloud` this long.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bill and rate-limit requests to this Google Cloud project: sent as `x-goog-user-project`
    /// on every authorized request (a credential file's `quota_project_id`, or
    /// `GOOGLE_CLOUD_QUOTA_PROJECT` through [`default_credentials`](crate::default_credentials)).
    pub fn quota_project(mut self, project: impl Into<String>) -> Self {
        self.quota_project = crate::QuotaProject::new(project);
        self
    }

    /// Read time from `clock` (tests; the default is the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

#[async_trait]
impl IdentityProvider for GcloudCli {
    fn request_headers(&self) -> Vec<(authwire::http::HeaderName, authwire::http::HeaderValue)> {
        self.quota_project.headers()
    }

    async fn fetch_token(&self, _current: Option<&Token>) -> Result<Token, ProviderError> {
        let out = authwire_oauth2::process::run_credential_program(
            &self.program,
            &["config", "config-helper", "--format=json"],
            self.timeout,
            "gcloud",
            "run `gcloud auth login` (or set GOOGLE_APPLICATION_CREDENTIALS)",
        )
        .await?;
        parse_config_helper(&out, self.clock.now())
    }

    fn cache_key(&self) -> CacheKey {
        CacheKey::new(format!("gcp-gcloud-cli|{}", self.program.to_string_lossy()))
    }
}

/// The token in `gcloud config config-helper --format=json`'s output:
/// `{"credential": {"access_token": "...", "token_expiry": "2024-01-01T00:00:00Z"}, ...}`.
pub(crate) fn parse_config_helper(out: &[u8], now: std::time::SystemTime) -> Result<Token, ProviderError> {
    #[derive(serde::Deserialize)]
    struct Helper {
        credential: Option<Credential>,
    }
    #[derive(serde::Deserialize)]
    struct Credential {
        access_token: Option<SecretString>,
        token_expiry: Option<String>,
    }
    let bad =
        |why: &str| ProviderError::invalid_response(None, format!("gcloud config config-helper: {why}"));
    let helper: Helper =
        serde_json::from_slice(out).map_err(|_| bad("the output is not the JSON expected"))?;
    let credential = helper
        .credential
        .ok_or_else(|| bad("no credential: run `gcloud auth login`"))?;
    let token = credential
        .access_token
        .ok_or_else(|| bad("no access_token: run `gcloud auth login`"))?;
    let expiry = credential
        .token_expiry
        .as_deref()
        .and_then(authwire_oauth2::transport::parse_rfc3339)
        .ok_or_else(|| bad("no RFC 3339 token_expiry"))?;
    if expiry <= now {
        return Err(bad(
            "the token it gave has already expired: run `gcloud auth login`",
        ));
    }
    use secrecy::ExposeSecret as _;
    Ok(Token::new(token.expose_secret()).with_expires_at(expiry))
}
