//! `external_account` files: workload identity federation. A subject token from elsewhere (a
//! file, such as a Kubernetes projected token, or a URL) is exchanged at Google's STS
//! (RFC 8693 token exchange), and optionally for a service account's token
//! (`generateAccessToken`), as Google's workload identity federation documentation describes.

use crate::GcpError;
use crate::http::Http;
use authwire::{CacheKey, Clock, IdentityProvider, ProviderError, Token, async_trait};
use secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TOKEN_TYPE_ACCESS: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The largest subject token read.
const MAX_SUBJECT_TOKEN: u64 = 64 * 1024;

/// Workload identity federation from an `external_account` file.
///
/// ```no_run
/// # fn run() -> Result<(), authwire_gcp::GcpError> {
/// let provider = authwire_gcp::ExternalAccount::from_file("/etc/gcp/wif.json")?
///     .scope("https://www.googleapis.com/auth/cloud-platform");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ExternalAccount {
    audience: String,
    subject_token_type: String,
    token_url: String,
    impersonation_url: Option<String>,
    lifetime: Duration,
    source: SubjectSource,
    client: Option<(String, SecretString)>,
    workforce_user_project: Option<String>,
    scopes: Vec<String>,
    /// Whether an `executable` source may run (`GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1`
    /// when the file was read, or [`ExternalAccount::allow_executables`]).
    allow_executables: bool,
    quota_project: crate::QuotaProject,
    http: Http,
    /// For a subject token served by a metadata endpoint on a link-local address (Azure IMDS,
    /// AWS): never through a proxy.
    metadata_http: Http,
}

#[derive(Clone)]
enum SubjectSource {
    File {
        path: String,
        format: Format,
    },
    Url {
        url: String,
        headers: BTreeMap<String, String>,
        format: Format,
    },
    /// A program Google's format lets a file name (`credential_source.executable`), run only
    /// when executables are allowed.
    Executable {
        command: Vec<String>,
        timeout: Duration,
        output_file: Option<String>,
    },
    /// AWS (`"environment_id": "aws1"`): a signed GetCallerIdentity request.
    Aws(crate::aws::AwsSource),
}

/// An executable's answer, as Google documents it: `{"version": 1, "success": true,
/// "token_type": "urn:ietf:params:oauth:token-type:jwt" (or `id_token`, with `id_token`; or
/// `saml2`, with `saml_response`), "expiration_time": EPOCH}`, or `{"version": 1, "success":
/// false, "code", "message"}`. `expiration_time` is required when an output file is used.
pub(crate) fn parse_executable_answer(
    out: &[u8],
    now: std::time::SystemTime,
    expiration_required: bool,
) -> Result<SecretString, ProviderError> {
    let bad = |why: &str| ProviderError::permanent(format!("the executable's answer {why}"));
    let doc: serde_json::Value = serde_json::from_slice(out).map_err(|_| bad("is not JSON"))?;
    if doc.get("version").and_then(serde_json::Value::as_u64) != Some(1) {
        return Err(bad("is not version 1"));
    }
    match doc.get("success").and_then(serde_json::Value::as_bool) {
        Some(true) => {}
        Some(false) => {
            let field = |name: &str| {
                doc.get(name)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect::<String>()
            };
            return Err(ProviderError::permanent(format!(
                "the executable failed: {} {}",
                field("code"),
                field("message")
            )));
        }
        None => return Err(bad("has no success field")),
    }
    let field = match doc.get("token_type").and_then(|t| t.as_str()) {
        Some("urn:ietf:params:oauth:token-type:jwt" | "urn:ietf:params:oauth:token-type:id_token") => {
            "id_token"
        }
        Some("urn:ietf:params:oauth:token-type:saml2") => "saml_response",
        _ => return Err(bad("has no known token_type")),
    };
    match doc.get("expiration_time").and_then(serde_json::Value::as_u64) {
        Some(exp) if authwire::expiry_at_unix(now, exp) <= now => return Err(bad("has expired")),
        Some(_) => {}
        None if expiration_required => {
            return Err(bad("has no expiration_time (required with an output_file)"));
        }
        None => {}
    }
    doc.get(field)
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .map(|t| SecretString::from(t.to_owned()))
        .ok_or_else(|| bad(&format!("has no {field}")))
}

/// Whether `url`'s host is a link-local address, where clouds serve their metadata (IPv4
/// 169.254.0.0/16, IPv6 fe80::/10, and AWS's fd00:ec2::254).
fn is_link_local(url: &str) -> bool {
    match url::Url::parse(url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Ipv4(ip)) => ip.is_link_local(),
        Some(url::Host::Ipv6(ip)) => (ip.segments()[0] & 0xffc0) == 0xfe80 || ip == crate::aws::METADATA_IPV6,
        _ => false,
    }
}

/// The headers' names only: their values (an `Authorization` for the metadata endpoint, say)
/// are credentials.
impl fmt::Debug for SubjectSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { path, format } => f
                .debug_struct("File")
                .field("path", path)
                .field("format", format)
                .finish(),
            Self::Url { url, headers, format } => f
                .debug_struct("Url")
                .field("url", url)
                .field("headers", &headers.keys().collect::<Vec<_>>())
                .field("format", format)
                .finish(),
            Self::Executable {
                command,
                timeout,
                output_file,
            } => f
                .debug_struct("Executable")
                .field("program", &command.first())
                .field("timeout", timeout)
                .field("output_file", output_file)
                .finish(),
            Self::Aws(aws) => aws.fmt(f),
        }
    }
}

#[derive(Clone, Debug)]
enum Format {
    Text,
    Json { field: String },
}

#[derive(serde::Deserialize)]
struct ExternalFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    audience: Option<String>,
    subject_token_type: Option<String>,
    token_url: Option<String>,
    service_account_impersonation_url: Option<String>,
    service_account_impersonation: Option<ImpersonationOptions>,
    credential_source: Option<serde_json::Value>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    workforce_pool_user_project: Option<String>,
    universe_domain: Option<String>,
    quota_project_id: Option<String>,
}

/// Google's universe unless a file names another (Trusted Partner Cloud).
const DEFAULT_UNIVERSE: &str = "googleapis.com";

#[derive(serde::Deserialize)]
struct ImpersonationOptions {
    token_lifetime_seconds: Option<u64>,
}

impl ExternalAccount {
    /// Read an `external_account` file. Its `token_url` and `service_account_impersonation_url`
    /// must be Google's (https, a host within the file's `universe_domain`, `googleapis.com` by
    /// default): a file from an untrusted source must not be able to send the subject token, a
    /// local file's contents or a metadata token anywhere else. See docs/cloud.md, "What a
    /// credentials file is trusted to do".
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, GcpError> {
        let (bytes, shown) = crate::read_file(path.as_ref())?;
        Self::from_json(&bytes, &shown)
    }

    /// Parse an `external_account` file's content; `source` names it in errors. Google's
    /// endpoints only, as [`from_file`](Self::from_file).
    pub fn from_json(bytes: &[u8], source: &str) -> Result<Self, GcpError> {
        Self::parse(bytes, source, false)
    }

    /// [`from_file`](Self::from_file) for a file you wrote or checked yourself, whose endpoints
    /// may be anywhere (an emulator, a private STS): the file decides where the subject token
    /// goes. https is still required, except to a loopback address.
    pub fn from_file_allowing_any_endpoint(path: impl AsRef<std::path::Path>) -> Result<Self, GcpError> {
        let (bytes, shown) = crate::read_file(path.as_ref())?;
        Self::parse(&bytes, &shown, true)
    }

    /// [`from_json`](Self::from_json) with the endpoints of
    /// [`from_file_allowing_any_endpoint`](Self::from_file_allowing_any_endpoint).
    pub fn from_json_allowing_any_endpoint(bytes: &[u8], source: &str) -> Result<Self, GcpError> {
        Self::parse(bytes, source, true)
    }

    fn parse(bytes: &[u8], source: &str, any_endpoint: bool) -> Result<Self, GcpError> {
        let format_error = |reason: String| GcpError::Format {
            source: source.to_owned(),
            reason,
        };
        let file: ExternalFile =
            serde_json::from_slice(bytes).map_err(|e| format_error(format!("not JSON ({e})")))?;
        if file.kind.as_deref() != Some("external_account") {
            return Err(format_error("\"type\" is not \"external_account\"".into()));
        }
        let audience = file.audience.ok_or_else(|| format_error("no audience".into()))?;
        let subject_token_type = file
            .subject_token_type
            .ok_or_else(|| format_error("no subject_token_type".into()))?;
        let universe = file
            .universe_domain
            .clone()
            .unwrap_or_else(|| DEFAULT_UNIVERSE.to_owned());
        if universe.is_empty()
            || !universe
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(format_error(format!(
                "universe_domain {universe:?} is not a domain name"
            )));
        }
        let token_url = file
            .token_url
            .unwrap_or_else(|| format!("https://sts.{universe}/v1/token"));
        for (name, url) in [
            ("token_url", Some(&token_url)),
            (
                "service_account_impersonation_url",
                file.service_account_impersonation_url.as_ref(),
            ),
        ] {
            if let Some(url) = url {
                let parsed = authwire_oauth2::transport::check_url(url, name, false)
                    .map_err(|e| GcpError::Url(e.to_string()))?;
                if !any_endpoint {
                    google_endpoint(
                        &parsed,
                        name,
                        &universe,
                        "ExternalAccount::from_file_allowing_any_endpoint",
                    )?;
                }
            }
        }
        let cs = file
            .credential_source
            .ok_or_else(|| format_error("no credential_source".into()))?;
        let format = match cs.get("format") {
            None => Format::Text,
            Some(f) => match f.get("type").and_then(|t| t.as_str()) {
                None | Some("text") => Format::Text,
                Some("json") => Format::Json {
                    field: f
                        .get("subject_token_field_name")
                        .and_then(|n| n.as_str())
                        .ok_or_else(|| format_error("format json needs subject_token_field_name".into()))?
                        .to_owned(),
                },
                Some(other) => {
                    return Err(format_error(format!(
                        "unknown credential_source format {other:?}"
                    )));
                }
            },
        };
        // An AWS source names a `url` too (its credentials'): `environment_id` decides first.
        let source = if cs.get("environment_id").is_some() {
            SubjectSource::Aws(crate::aws::AwsSource::from_json(&cs, source)?)
        } else if let Some(path) = cs.get("file").and_then(|p| p.as_str()) {
            SubjectSource::File {
                path: path.to_owned(),
                format,
            }
        } else if let Some(url) = cs.get("url").and_then(|u| u.as_str()) {
            subject_url_allowed(url)?;
            let headers = cs
                .get("headers")
                .and_then(|h| h.as_object())
                .map(|h| {
                    h.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            SubjectSource::Url {
                url: url.to_owned(),
                headers,
                format,
            }
        } else if let Some(exe) = cs.get("executable") {
            let command: Vec<String> = exe
                .get("command")
                .and_then(|c| c.as_str())
                .map(|c| c.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default();
            if command.is_empty() {
                return Err(format_error("credential_source.executable has no command".into()));
            }
            // Google's documented bounds: 5 s to 120 s, 30 s by default.
            let millis = exe
                .get("timeout_millis")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(30_000);
            if !(5_000..=120_000).contains(&millis) {
                return Err(format_error(
                    "credential_source.executable.timeout_millis must be between 5000 and 120000".into(),
                ));
            }
            SubjectSource::Executable {
                command,
                timeout: Duration::from_millis(millis),
                output_file: exe.get("output_file").and_then(|o| o.as_str()).map(str::to_owned),
            }
        } else {
            return Err(format_error("credential_source has neither file nor url".into()));
        };
        let allow_executables =
            std::env::var("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES").is_ok_and(|v| v == "1");
        let client = match (file.client_id, file.client_secret) {
            (Some(id), Some(secret)) => Some((id, secret)),
            _ => None,
        };
        Ok(Self {
            audience,
            subject_token_type,
            token_url,
            impersonation_url: file.service_account_impersonation_url,
            lifetime: Duration::from_secs(
                file.service_account_impersonation
                    .and_then(|o| o.token_lifetime_seconds)
                    .unwrap_or(3600),
            ),
            source,
            client,
            workforce_user_project: file.workforce_pool_user_project,
            scopes: Vec::new(),
            allow_executables,
            quota_project: crate::QuotaProject::from_file(file.quota_project_id),
            http: Http::new(),
            metadata_http: Http::metadata(),
        })
    }

    /// Ask for this scope (repeatable; default: cloud-platform).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scopes.push(scope.into());
        self
    }

    /// Let an `executable` credential source run its program (`true`), as
    /// `GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1` does; `false` refuses it. A credentials
    /// file naming a program is code to run: allow it only for files you trust.
    pub fn allow_executables(mut self, on: bool) -> Self {
        self.allow_executables = on;
        self
    }

    /// Send every request through `transport` (proxy, roots of trust, client certificate,
    /// timeout); see [`authwire_oauth2::Transport`].
    /// A subject token served on a link-local address (a cloud's metadata endpoint) is
    /// fetched directly, never through the proxy.
    pub fn transport(mut self, transport: authwire_oauth2::Transport) -> Self {
        self.http = self.http.transport(&transport);
        self.metadata_http = self.metadata_http.transport(&transport);
        self
    }

    /// Bill and rate-limit requests to this Google Cloud project: sent as `x-goog-user-project`
    /// on every authorized request (a credential file's `quota_project_id`, or
    /// `GOOGLE_CLOUD_QUOTA_PROJECT` through [`default_credentials`](crate::default_credentials)).
    pub fn quota_project(mut self, project: impl Into<String>) -> Self {
        self.quota_project = crate::QuotaProject::new(project);
        self
    }

    /// Read an AWS source's `AWS_REGION`, `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` from `vars` instead of the process
    /// environment (tests, sandboxes). No effect on other sources.
    pub fn aws_environment<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        if let SubjectSource::Aws(aws) = self.source {
            let vars: std::collections::HashMap<String, String> =
                vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
            self.source = SubjectSource::Aws(aws.with_env(Arc::new(move |name| vars.get(name).cloned())));
        }
        self
    }

    /// Read time from `clock` (tests; the default is the system clock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.http.clock = Arc::new(clock);
        self.metadata_http.clock = self.http.clock.clone();
        self
    }

    fn scopes(&self) -> Vec<String> {
        crate::scopes_or_cloud_platform(&self.scopes)
    }

    /// The subject token, read now (files are rotated in place).
    async fn subject_token(&self) -> Result<SecretString, ProviderError> {
        let (raw, format, origin) = match &self.source {
            SubjectSource::File { path, format } => {
                let text = authwire_oauth2::transport::read_credential_file(
                    std::path::Path::new(path),
                    "the subject token file",
                    MAX_SUBJECT_TOKEN,
                )
                .await?;
                (text.expose_secret().to_owned(), format, path.clone())
            }
            SubjectSource::Url { url, headers, format } => {
                let mut request = authwire::http::Request::get(url);
                for (k, v) in headers {
                    request = request.header(k, v);
                }
                // The file's header values can be credentials (a metadata `Authorization`): an
                // error that echoes one is scrubbed. Short values (`Metadata: True`) hold none.
                let sent: Vec<&str> = headers
                    .values()
                    .map(String::as_str)
                    .filter(|v| v.len() >= 8)
                    .collect();
                let http = if is_link_local(url) {
                    &self.metadata_http
                } else {
                    &self.http
                };
                let reply = http
                    .send(request, Vec::new())
                    .await
                    .map_err(|e| crate::http::redact(e, &sent))?;
                if !(200..300).contains(&reply.status) {
                    return Err(self.http.error_answer(&reply, &sent));
                }
                let text = String::from_utf8(reply.body).map_err(|_| {
                    ProviderError::invalid_response(Some(reply.status), "the subject token is not text")
                })?;
                (text, format, url.clone())
            }
            SubjectSource::Executable {
                command,
                timeout,
                output_file,
            } => {
                return self
                    .executable_token(command, *timeout, output_file.as_deref())
                    .await;
            }
            SubjectSource::Aws(aws) => return aws.subject_token(&self.metadata_http, &self.audience).await,
        };
        let token = match format {
            Format::Text => raw.trim().to_owned(),
            Format::Json { field } => serde_json::from_str::<serde_json::Value>(&raw)
                .ok()
                .and_then(|v| v.get(field)?.as_str().map(str::to_owned))
                .ok_or_else(|| {
                    ProviderError::permanent(format!(
                        "the subject token from {origin} is not JSON with a string field {field:?}"
                    ))
                })?,
        };
        if token.is_empty() {
            return Err(ProviderError::transient(format!(
                "the subject token from {origin} is empty"
            )));
        }
        Ok(SecretString::from(token))
    }

    /// The subject token of an `executable` source: from its output file while that holds an
    /// unexpired answer, else by running the program (Google's documented environment in, its
    /// documented JSON answer out).
    async fn executable_token(
        &self,
        command: &[String],
        timeout: Duration,
        output_file: Option<&str>,
    ) -> Result<SecretString, ProviderError> {
        if !self.allow_executables {
            return Err(ProviderError::permanent(format!(
                "this credentials file runs {}: executables are off; set GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1 if you trust it",
                command[0]
            )));
        }
        let now = self.http.now();
        if let Some(path) = output_file
            && let Ok(cached) = authwire_oauth2::transport::read_credential_file(
                std::path::Path::new(path),
                "the executable's output file",
                MAX_SUBJECT_TOKEN,
            )
            .await
            && let Ok(token) = parse_executable_answer(cached.expose_secret().as_bytes(), now, true)
        {
            return Ok(token);
        }
        let email = self
            .impersonation_url
            .as_deref()
            .and_then(|u| u.rsplit('/').next())
            .and_then(|last| last.strip_suffix(":generateAccessToken"))
            .unwrap_or_default()
            .to_owned();
        let mut env = vec![
            ("GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE", self.audience.as_str()),
            (
                "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE",
                self.subject_token_type.as_str(),
            ),
            ("GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE", "0"),
        ];
        if !email.is_empty() {
            env.push(("GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL", email.as_str()));
        }
        if let Some(path) = output_file {
            env.push(("GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE", path));
        }
        let args: Vec<&str> = command[1..].iter().map(String::as_str).collect();
        let out = authwire_oauth2::process::run_credential_program_with_env(
            std::ffi::OsStr::new(&command[0]),
            &args,
            &env,
            timeout,
            &command[0],
            "check the credentials file's executable",
        )
        .await?;
        parse_executable_answer(&out, now, output_file.is_some())
    }

    /// RFC 8693 at Google's STS.
    async fn exchange(&self, subject: &str, scope: &str) -> Result<Token, ProviderError> {
        let options = self
            .workforce_user_project
            .as_ref()
            .filter(|_| self.client.is_none())
            .map(|p| serde_json::json!({ "userProject": p }).to_string());
        let mut fields = vec![
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("audience", self.audience.as_str()),
            ("scope", scope),
            ("requested_token_type", TOKEN_TYPE_ACCESS),
            ("subject_token", subject),
            ("subject_token_type", self.subject_token_type.as_str()),
        ];
        if let Some(o) = &options {
            fields.push(("options", o));
        }
        let basic = self
            .client
            .as_ref()
            .map(|(id, secret)| (id.as_str(), secret.expose_secret()));
        let secrets: Vec<&str> = [Some(subject), basic.map(|(_, s)| s)]
            .into_iter()
            .flatten()
            .collect();
        let reply = self
            .http
            .post_form(&self.token_url, &fields, &secrets, basic)
            .await?;
        self.http.token_answer(&reply, &secrets)
    }

    /// IAM Credentials `generateAccessToken`, authorized by the federated token.
    async fn impersonate(&self, url: &str, federated: &Token) -> Result<Token, ProviderError> {
        crate::impersonated::generate_access_token(
            &self.http,
            url,
            federated,
            &self.scopes(),
            self.lifetime,
            &[],
        )
        .await
    }
}

impl fmt::Debug for ExternalAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalAccount")
            .field("audience", &self.audience)
            .field("token_url", &self.token_url)
            .field("impersonation_url", &self.impersonation_url)
            .field("source", &self.source)
            .field("client_id", &self.client.as_ref().map(|(id, _)| id))
            .finish_non_exhaustive()
    }
}

/// Whether `url` (already https) is one of Google's endpoints: a host within `universe`, the
/// default port, no user name or password.
pub(crate) fn google_endpoint(
    url: &url::Url,
    setting: &str,
    universe: &str,
    opt_in: &str,
) -> Result<(), GcpError> {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let within = host == universe || host.ends_with(&format!(".{universe}"));
    if url.scheme() == "https"
        && within
        && url.port().is_none()
        && url.username().is_empty()
        && url.password().is_none()
    {
        return Ok(());
    }
    Err(GcpError::Url(format!(
        "{setting} {}://{host}{} is not a Google endpoint of the universe {universe}: a credentials file from an untrusted source could send its subject token anywhere; for an emulator or a file you checked yourself, read it with {opt_in}",
        url.scheme(),
        url.path()
    )))
}

/// Where a URL-sourced subject token may come from: https anywhere; plain http only from a
/// loopback or link-local address (the metadata endpoints of Azure, AWS and the GKE metadata
/// server are plain http there), never across a network.
fn subject_url_allowed(url: &str) -> Result<(), GcpError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| GcpError::Url(format!("credential_source.url is not a URL: {e}")))?;
    let local = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_link_local(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback() || (ip.segments()[0] & 0xffc0) == 0xfe80,
        Some(url::Host::Domain(d)) => authwire::is_loopback_host(d),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if local => Ok(()),
        scheme => Err(GcpError::Url(format!(
            "credential_source.url uses {scheme} to {}: only https, or plain http to a loopback or link-local metadata address, may supply a subject token",
            parsed.host_str().unwrap_or_default()
        ))),
    }
}

#[async_trait]
impl IdentityProvider for ExternalAccount {
    fn request_headers(&self) -> Vec<(authwire::http::HeaderName, authwire::http::HeaderValue)> {
        self.quota_project.headers()
    }

    async fn fetch_token(&self, _current: Option<&Token>) -> Result<Token, ProviderError> {
        let subject = self.subject_token().await?;
        match &self.impersonation_url {
            None => {
                self.exchange(subject.expose_secret(), &self.scopes().join(" "))
                    .await
            }
            Some(url) => {
                // The federated token only needs to call IAM Credentials.
                let federated = self
                    .exchange(subject.expose_secret(), crate::CLOUD_PLATFORM_SCOPE)
                    .await?;
                self.impersonate(url, &federated).await
            }
        }
    }

    fn cache_key(&self) -> CacheKey {
        let mut scopes = self.scopes();
        scopes.sort();
        CacheKey::new(format!(
            "gcp-external-account|{}|{}|{}|scope={}",
            self.audience,
            self.token_url,
            self.impersonation_url.as_deref().unwrap_or(""),
            scopes.join(" ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn executable_answers_as_google_documents_them() {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let saml = br#"{"version": 1, "success": true, "token_type": "urn:ietf:params:oauth:token-type:saml2", "saml_response": "PHNhbWw+", "expiration_time": 2000000600}"#;
        assert_eq!(
            parse_executable_answer(saml, now, true).unwrap().expose_secret(),
            "PHNhbWw+"
        );
        let expired = br#"{"version": 1, "success": true, "token_type": "urn:ietf:params:oauth:token-type:jwt", "id_token": "x", "expiration_time": 1999999999}"#;
        assert!(parse_executable_answer(expired, now, false).is_err());
        let no_exp = br#"{"version": 1, "success": true, "token_type": "urn:ietf:params:oauth:token-type:id_token", "id_token": "x"}"#;
        assert!(parse_executable_answer(no_exp, now, false).is_ok());
        assert!(
            parse_executable_answer(no_exp, now, true).is_err(),
            "required with an output file"
        );
        assert!(parse_executable_answer(br#"{"version": 2, "success": true}"#, now, false).is_err());
        assert!(parse_executable_answer(b"not json", now, false).is_err());
    }

    #[test]
    fn rfc3339_times_as_google_writes_them() {
        assert_eq!(
            authwire_oauth2::transport::parse_rfc3339("2014-10-02T15:01:23Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_412_262_083))
        );
        assert_eq!(
            authwire_oauth2::transport::parse_rfc3339("2014-10-02T15:01:23.045123456Z"),
            Some(UNIX_EPOCH + Duration::new(1_412_262_083, 45_123_456))
        );
        assert_eq!(
            authwire_oauth2::transport::parse_rfc3339("2000-02-29T00:00:00Z"),
            Some(UNIX_EPOCH + Duration::from_secs(951_782_400))
        );
        assert_eq!(
            authwire_oauth2::transport::parse_rfc3339("2014-10-02T15:01:23+02:00"),
            None
        );
        assert_eq!(
            authwire_oauth2::transport::parse_rfc3339("2014-13-02T15:01:23Z"),
            None
        );
        assert_eq!(authwire_oauth2::transport::parse_rfc3339("soon"), None);
    }

    #[test]
    fn unsupported_sources_say_so() {
        let aws2 = br#"{"type":"external_account","audience":"a","subject_token_type":"t","credential_source":{"environment_id":"aws2","regional_cred_verification_url":"https://sts.{region}.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15"}}"#;
        assert!(matches!(
            ExternalAccount::from_json(aws2, "f"),
            Err(GcpError::Unsupported { .. })
        ));
        let hostile_aws = br#"{"type":"external_account","audience":"a","subject_token_type":"t","credential_source":{"environment_id":"aws1","url":"http://attacker.example/creds","regional_cred_verification_url":"https://sts.{region}.amazonaws.com"}}"#;
        assert!(matches!(
            ExternalAccount::from_json(hostile_aws, "f"),
            Err(GcpError::Url(_))
        ));
        // An executable is read (it runs only when allowed); its timeout has Google's bounds.
        let exec = br#"{"type":"external_account","audience":"a","subject_token_type":"t","credential_source":{"executable":{"command":"x","timeout_millis":1000}}}"#;
        assert!(matches!(
            ExternalAccount::from_json(exec, "f"),
            Err(GcpError::Format { .. })
        ));
        let insecure = br#"{"type":"external_account","audience":"a","subject_token_type":"t","token_url":"http://sts.example/v1/token","credential_source":{"file":"/x"}}"#;
        assert!(matches!(
            ExternalAccount::from_json(insecure, "f"),
            Err(GcpError::Url(_))
        ));
    }
}
