//! Workload identity federation from AWS (an `external_account` file whose `credential_source`
//! has `"environment_id": "aws1"`), as Google documents it and google-auth implements it:
//!
//! 1. the region from `AWS_REGION` or `AWS_DEFAULT_REGION`, else the metadata server's
//!    availability zone less its last letter;
//! 2. credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`),
//!    else the metadata server's role credentials;
//! 3. an IMDSv2 session token first (`PUT`, then sent on each metadata request) when the file
//!    names `imdsv2_session_token_url` and something comes from the metadata server;
//! 4. the subject token: a SigV4-signed `POST` to STS `GetCallerIdentity` (with the
//!    `x-goog-cloud-target-resource` header naming the audience), never sent to AWS: Google's
//!    STS sends it, which proves to Google who this workload is on AWS.

use authwire::ProviderError;
use authwire::secrecy::{ExposeSecret, SecretString};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::GcpError;
use crate::http::Http;

/// The AWS metadata service's addresses, the only non-loopback hosts a file's metadata URLs may
/// name.
pub(crate) const METADATA_IPV4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 169, 254);
pub(crate) const METADATA_IPV6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

/// The `subject_token_type` of an AWS subject token.
pub const AWS_SUBJECT_TOKEN_TYPE: &str = "urn:ietf:params:aws:token-type:aws4_request";

/// How an AWS source reads `AWS_*` variables (the process environment, or a test's).
pub(crate) type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Where an AWS source reads its region and credentials.
#[derive(Clone)]
pub(crate) struct AwsSource {
    region_url: Option<String>,
    credentials_url: Option<String>,
    verification_url: String,
    imdsv2_url: Option<String>,
    env: Env,
}

impl std::fmt::Debug for AwsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSource")
            .field("region_url", &self.region_url)
            .field("credentials_url", &self.credentials_url)
            .field("verification_url", &self.verification_url)
            .field("imdsv2_url", &self.imdsv2_url)
            .finish_non_exhaustive()
    }
}

/// AWS credentials (from the environment or the metadata server).
struct Credentials {
    access_key_id: String,
    secret_access_key: SecretString,
    session_token: Option<SecretString>,
}

impl AwsSource {
    /// Read `credential_source` (`environment_id` `aws1`; `region_url`, `url`,
    /// `regional_cred_verification_url`, `imdsv2_session_token_url`). Metadata URLs must be the
    /// AWS metadata server's (169.254.169.254 or fd00:ec2::254) or loopback (an emulator): a
    /// file from an untrusted source cannot send this process's requests elsewhere.
    pub(crate) fn from_json(cs: &serde_json::Value, shown: &str) -> Result<Self, GcpError> {
        let format = |reason: String| GcpError::Format {
            source: shown.to_owned(),
            reason,
        };
        let id = cs
            .get("environment_id")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if !id.starts_with("aws") {
            return Err(format(format!("environment_id {id:?} is not aws1")));
        }
        if id != "aws1" {
            return Err(GcpError::Unsupported {
                kind: format!("external_account with an AWS source of version {:?}", &id[3..]),
            });
        }
        let field = |name: &str| cs.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let (region_url, credentials_url, imdsv2_url) = (
            field("region_url"),
            field("url"),
            field("imdsv2_session_token_url"),
        );
        for (name, url) in [
            ("region_url", &region_url),
            ("url", &credentials_url),
            ("imdsv2_session_token_url", &imdsv2_url),
        ] {
            if let Some(url) = url {
                metadata_url_allowed(name, url)?;
            }
        }
        let verification_url = field("regional_cred_verification_url")
            .ok_or_else(|| format("credential_source has no regional_cred_verification_url".into()))?;
        Ok(Self {
            region_url,
            credentials_url,
            verification_url,
            imdsv2_url,
            env: Arc::new(|name| std::env::var(name).ok()),
        })
    }

    /// Read the `AWS_*` variables through `env` instead of the process environment.
    pub(crate) fn with_env(mut self, env: Env) -> Self {
        self.env = env;
        self
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|v| !v.is_empty())
    }

    /// The subject token for `audience`: the signed GetCallerIdentity request, as Google's STS
    /// reads it (URL-encoded JSON).
    pub(crate) async fn subject_token(
        &self,
        metadata: &Http,
        audience: &str,
    ) -> Result<SecretString, ProviderError> {
        let env_region = self.var("AWS_REGION").or_else(|| self.var("AWS_DEFAULT_REGION"));
        let env_credentials = match (self.var("AWS_ACCESS_KEY_ID"), self.var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Some(Credentials {
                access_key_id: id,
                secret_access_key: SecretString::from(secret),
                session_token: self.var("AWS_SESSION_TOKEN").map(SecretString::from),
            }),
            _ => None,
        };
        // IMDSv2: a session token first, only when the metadata server is needed at all.
        let session = match &self.imdsv2_url {
            Some(url) if env_region.is_none() || env_credentials.is_none() => {
                Some(imdsv2_session(metadata, url).await?)
            }
            _ => None,
        };
        let session = session.as_ref();
        let region = match env_region {
            Some(region) => region,
            None => {
                let url = self.region_url.as_deref().ok_or_else(|| {
                    ProviderError::permanent(
                        "no AWS region: set AWS_REGION, or name region_url in the credentials file",
                    )
                })?;
                let zone = metadata_text(metadata, url, session, "the availability zone").await?;
                let zone = zone.expose_secret().trim();
                // us-east-1b -> us-east-1
                let mut region = zone.to_owned();
                region.pop();
                if region.is_empty() || !region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(ProviderError::invalid_response(
                        None,
                        "the metadata server's availability zone is not one",
                    ));
                }
                region
            }
        };
        let credentials = match env_credentials {
            Some(c) => c,
            None => {
                let url = self.credentials_url.as_deref().ok_or_else(|| {
                    ProviderError::permanent(
                        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name url in the credentials file",
                    )
                })?;
                role_credentials(metadata, url, session).await?
            }
        };
        let url = self.verification_url.replace("{region}", &region);
        signed_caller_identity(&url, &region, audience, &credentials, metadata.now())
    }
}

/// Only the AWS metadata server's addresses (or loopback, for an emulator), over http.
fn metadata_url_allowed(name: &str, url: &str) -> Result<(), GcpError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| GcpError::Url(format!("credential_source.{name} is not a URL: {e}")))?;
    let allowed = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip == METADATA_IPV4 || ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip == METADATA_IPV6 || ip.is_loopback(),
        Some(url::Host::Domain(d)) => authwire::is_loopback_host(d),
        None => false,
    };
    if allowed && matches!(parsed.scheme(), "http" | "https") {
        Ok(())
    } else {
        Err(GcpError::Url(format!(
            "credential_source.{name} is {}: only the AWS metadata server (169.254.169.254, [fd00:ec2::254]) or loopback",
            parsed.host_str().unwrap_or_default()
        )))
    }
}

/// `PUT` to the IMDSv2 token URL: a session token for the metadata requests (five minutes).
async fn imdsv2_session(metadata: &Http, url: &str) -> Result<SecretString, ProviderError> {
    let request = authwire::http::Request::put(url).header("x-aws-ec2-metadata-token-ttl-seconds", "300");
    let reply = metadata.send(request, Vec::new()).await?;
    if !(200..300).contains(&reply.status) {
        return Err(metadata.error_answer(&reply, &[]));
    }
    let token = String::from_utf8(reply.body).map_err(|_| {
        ProviderError::invalid_response(Some(reply.status), "the IMDSv2 session token is not text")
    })?;
    Ok(SecretString::from(token.trim().to_owned()))
}

/// A metadata GET, with the IMDSv2 session token when there is one; the answer is treated as a
/// secret (role credentials are), so no error echoes it.
async fn metadata_text(
    metadata: &Http,
    url: &str,
    session: Option<&SecretString>,
    what: &str,
) -> Result<SecretString, ProviderError> {
    let mut request = authwire::http::Request::get(url);
    if let Some(session) = session {
        request = request.header("x-aws-ec2-metadata-token", session.expose_secret());
    }
    let secrets: Vec<&str> = session.map(|s| s.expose_secret()).into_iter().collect();
    let reply = metadata
        .send(request, Vec::new())
        .await
        .map_err(|e| crate::http::redact(e, &secrets))?;
    if !(200..300).contains(&reply.status) {
        let why = format!("the AWS metadata server answered {} for {what}", reply.status);
        return Err(if authwire::is_transient_status(reply.status) {
            ProviderError::unavailable(Some(reply.status), why)
        } else {
            ProviderError::permanent(why)
        });
    }
    String::from_utf8(reply.body)
        .map(SecretString::from)
        .map_err(|_| ProviderError::invalid_response(Some(reply.status), format!("{what} is not text")))
}

/// The role's credentials: `GET url` names the role, `GET url/ROLE` answers
/// `{"AccessKeyId", "SecretAccessKey", "Token", ...}`.
async fn role_credentials(
    metadata: &Http,
    url: &str,
    session: Option<&SecretString>,
) -> Result<Credentials, ProviderError> {
    let role = metadata_text(metadata, url, session, "the role name").await?;
    let role = role
        .expose_secret()
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    if role.is_empty()
        || !role
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
    {
        return Err(ProviderError::invalid_response(
            None,
            "the metadata server names no IAM role",
        ));
    }
    let doc = metadata_text(
        metadata,
        &format!("{}/{role}", url.trim_end_matches('/')),
        session,
        "the role's credentials",
    )
    .await?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        access_key_id: Option<String>,
        secret_access_key: Option<SecretString>,
        token: Option<SecretString>,
    }
    let answer: Answer = serde_json::from_str(doc.expose_secret())
        .map_err(|_| ProviderError::invalid_response(None, "the role's credentials are not JSON"))?;
    match (answer.access_key_id, answer.secret_access_key) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(Credentials {
            access_key_id,
            secret_access_key,
            session_token: answer.token,
        }),
        _ => Err(ProviderError::invalid_response(
            None,
            "the role's credentials lack AccessKeyId or SecretAccessKey",
        )),
    }
}

/// The SigV4-signed `POST url` (GetCallerIdentity, empty body) as Google's STS takes it: JSON
/// `{"headers": [{"key", "value"}...], "method": "POST", "url"}`, keys sorted, URL-encoded.
fn signed_caller_identity(
    url: &str,
    region: &str,
    audience: &str,
    credentials: &Credentials,
    now: std::time::SystemTime,
) -> Result<SecretString, ProviderError> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let parsed = url::Url::parse(url)
        .map_err(|_| ProviderError::permanent("regional_cred_verification_url is not a URL"))?;
    if parsed.scheme() != "https" {
        return Err(ProviderError::permanent(
            "regional_cred_verification_url is not https",
        ));
    }
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let identity = aws_credential_types::Credentials::new(
        &credentials.access_key_id,
        credentials.secret_access_key.expose_secret(),
        credentials
            .session_token
            .as_ref()
            .map(|t| t.expose_secret().to_owned()),
        None,
        "authwire",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| ProviderError::permanent(format!("cannot sign the AWS request: {e}")))?
        .into();
    let headers = [
        ("host", host.as_str()),
        ("x-goog-cloud-target-resource", audience),
    ];
    let signable = SignableRequest::new("POST", url, headers.iter().copied(), SignableBody::Bytes(&[]))
        .map_err(|e| ProviderError::permanent(format!("cannot sign the AWS request: {e}")))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| ProviderError::permanent(format!("cannot sign the AWS request: {e}")))?
        .into_parts();
    // Header names as google-auth writes them, sorted as it sorts them (byte order).
    let mut all: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for (name, value) in instructions.headers() {
        let name = if name.eq_ignore_ascii_case("authorization") {
            "Authorization".to_owned()
        } else {
            name.to_ascii_lowercase()
        };
        all.insert(name, value.to_owned());
    }
    let listed: Vec<serde_json::Value> = all
        .into_iter()
        .map(|(key, value)| serde_json::json!({"key": key, "value": value}))
        .collect();
    let doc = format!(
        "{{\"headers\":{},\"method\":\"POST\",\"url\":{}}}",
        serde_json::Value::Array(listed),
        serde_json::Value::String(url.to_owned())
    );
    Ok(SecretString::from(percent_encode(&doc)))
}

/// Percent-encoding as Python's `urllib.parse.quote` does it (unreserved characters and `/`
/// kept), which is what Google's STS decodes.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls_are_the_aws_metadata_servers_or_loopback() {
        // Parsed only: nothing is sent anywhere.
        assert!(
            metadata_url_allowed(
                "url",
                &format!("http://{METADATA_IPV4}/latest/meta-data/iam/security-credentials")
            )
            .is_ok()
        );
        assert!(metadata_url_allowed("url", &format!("http://[{METADATA_IPV6}]/latest/api/token")).is_ok());
        assert!(metadata_url_allowed("url", "http://127.0.0.1:8080/x").is_ok());
        for hostile in [
            "http://attacker.example/creds",
            "http://10.0.0.1/x",
            "file:///etc/passwd",
        ] {
            assert!(metadata_url_allowed("url", hostile).is_err(), "{hostile}");
        }
    }

    #[test]
    fn the_subject_token_is_a_signed_get_caller_identity_google_can_read() {
        let credentials = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: Some(SecretString::from("session-token")),
        };
        let url = "https://sts.us-east-2.amazonaws.com?Action=GetCallerIdentity&Version=2011-06-15";
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let token =
            signed_caller_identity(url, "us-east-2", "//iam.googleapis.com/x", &credentials, at).unwrap();
        let decoded = form_urlencoded::parse(format!("t={}", token.expose_secret()).as_bytes())
            .next()
            .unwrap()
            .1
            .into_owned();
        let doc: serde_json::Value = serde_json::from_str(&decoded).unwrap();
        assert_eq!(doc["method"], "POST");
        assert_eq!(doc["url"], url);
        let keys: Vec<&str> = doc["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["key"].as_str().unwrap())
            .collect();
        assert_eq!(
            keys,
            [
                "Authorization",
                "host",
                "x-amz-date",
                "x-amz-security-token",
                "x-goog-cloud-target-resource"
            ]
        );
        let value = |k: &str| {
            doc["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["key"] == k)
                .unwrap()["value"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(value("x-amz-date"), "20231114T221320Z");
        assert_eq!(value("host"), "sts.us-east-2.amazonaws.com");
        let auth = value("Authorization");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20231114/us-east-2/sts/aws4_request"),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=host;x-amz-date;x-amz-security-token;x-goog-cloud-target-resource"),
            "{auth}"
        );
        assert!(
            !token.expose_secret().contains("wJalrXUtnFEMI"),
            "the secret key is never in the token"
        );
    }
}
