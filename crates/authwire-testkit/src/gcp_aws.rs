//! The AWS half of Google's AWS workload identity federation, on the GCP emulator's port: an
//! EC2 instance metadata service (IMDSv2: a session token from `PUT /latest/api/token`, required
//! on every metadata `GET`) serving a region and a role's credentials, and the check Google's
//! STS makes of an AWS subject token (a SigV4-signed GetCallerIdentity request for the
//! audience), the signature recomputed with the secret key the metadata service handed out.

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Mutex;

/// The access key id the emulator's metadata service (and the tests' environment) use.
pub const AWS_ACCESS_KEY_ID: &str = "ASIAEMULATOREXAMPLE1";
/// Its secret key.
pub const AWS_SECRET_ACCESS_KEY: &str = "emulator/Secret+Key/wJalrXUtnFEMIK7MDENGbPxRfiCY";
/// Its session token.
pub const AWS_SESSION_TOKEN: &str = "emulator-session-token-FwoGZXIvYXdzEJr";
/// The role the metadata service names.
pub const AWS_ROLE: &str = "authwire-federation-role";
/// The availability zone it answers (region `us-east-2`).
pub const AWS_ZONE: &str = "us-east-2b";

/// What the emulator saw of the metadata service.
#[derive(Default)]
pub(crate) struct Imds {
    sessions: Mutex<Vec<String>>,
    /// Metadata requests that came without a valid session token (refused, as IMDSv2 does when
    /// it is required).
    pub(crate) refused: std::sync::atomic::AtomicUsize,
}

/// `PUT /latest/api/token`, `GET /latest/meta-data/...`.
pub(crate) fn metadata(imds: &Imds, method: &Method, path: &str, headers: &HeaderMap) -> Response {
    if path == "/latest/api/token" {
        if method != Method::PUT || !headers.contains_key("x-aws-ec2-metadata-token-ttl-seconds") {
            return StatusCode::BAD_REQUEST.into_response();
        }
        let mut sessions = imds.sessions.lock().unwrap();
        let token = format!("imdsv2-session-{}", sessions.len() + 1);
        sessions.push(token.clone());
        return token.into_response();
    }
    let session = headers
        .get("x-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok());
    if !session.is_some_and(|s| imds.sessions.lock().unwrap().iter().any(|t| t == s)) {
        imds.refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let credentials = format!("/latest/meta-data/iam/security-credentials/{AWS_ROLE}");
    match path {
        "/latest/meta-data/placement/availability-zone" => AWS_ZONE.into_response(),
        "/latest/meta-data/iam/security-credentials" | "/latest/meta-data/iam/security-credentials/" => {
            AWS_ROLE.into_response()
        }
        p if p == credentials => axum::Json(serde_json::json!({
            "Code": "Success",
            "Type": "AWS-HMAC",
            "AccessKeyId": AWS_ACCESS_KEY_ID,
            "SecretAccessKey": AWS_SECRET_ACCESS_KEY,
            "Token": AWS_SESSION_TOKEN,
            "Expiration": "2099-01-01T00:00:00Z"
        }))
        .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Whether `subject` (URL-encoded JSON) is a GetCallerIdentity request for `audience`, signed
/// by the emulator's credentials: `Err` says what is wrong, as Google's STS would refuse it.
pub(crate) fn check_subject_token(subject: &str, audience: &str) -> Result<(), String> {
    let decoded = percent_decode(subject).ok_or("the subject token is not URL-encoded")?;
    let doc: serde_json::Value =
        serde_json::from_str(&decoded).map_err(|_| "the subject token is not JSON")?;
    let url = doc["url"].as_str().ok_or("no url")?;
    if doc["method"] != "POST" {
        return Err("the method is not POST".into());
    }
    let parsed = url::Url::parse(url).map_err(|_| "the url is not a URL")?;
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let region = host
        .strip_prefix("sts.")
        .and_then(|h| h.strip_suffix(".amazonaws.com"))
        .ok_or("the url is not AWS STS")?
        .to_owned();
    let query: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    if !query.contains(&("Action".into(), "GetCallerIdentity".into())) {
        return Err("not GetCallerIdentity".into());
    }
    let headers: std::collections::HashMap<String, String> = doc["headers"]
        .as_array()
        .ok_or("no headers")?
        .iter()
        .filter_map(|h| Some((h["key"].as_str()?.to_owned(), h["value"].as_str()?.to_owned())))
        .collect();
    let get = |k: &str| headers.get(k).map(String::as_str);
    if get("x-goog-cloud-target-resource") != Some(audience) {
        return Err("x-goog-cloud-target-resource is not the audience".into());
    }
    if get("host") != Some(host.as_str()) {
        return Err("the host header is not the url's".into());
    }
    if get("x-amz-security-token") != Some(AWS_SESSION_TOKEN) {
        return Err("not the emulator's session token".into());
    }
    let date = get("x-amz-date").ok_or("no x-amz-date")?;
    let at = parse_amz_date(date).ok_or("x-amz-date is not a date")?;
    // Google's STS takes the target-resource header signed (Google's documented recipe, and
    // authwire) or added after signing (google-auth 2.x): recompute over what the request says
    // it signed.
    let authorization = get("Authorization").ok_or("no Authorization")?;
    let signs_target = authorization
        .split("SignedHeaders=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .is_some_and(|list| list.split(';').any(|h| h == "x-goog-cloud-target-resource"));
    let expected = sign(url, &region, signs_target.then_some(audience), &host, at)?;
    if authorization != expected {
        return Err("the signature does not match".into());
    }
    Ok(())
}

/// The `Authorization` the emulator's credentials give the request at `at`.
fn sign(
    url: &str,
    region: &str,
    audience: Option<&str>,
    host: &str,
    at: std::time::SystemTime,
) -> Result<String, String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity = aws_credential_types::Credentials::new(
        AWS_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY,
        Some(AWS_SESSION_TOKEN.to_owned()),
        None,
        "emulator",
    )
    .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("sts")
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let mut headers = vec![("host", host)];
    if let Some(audience) = audience {
        headers.push(("x-goog-cloud-target-resource", audience));
    }
    let signable = SignableRequest::new("POST", url, headers.iter().copied(), SignableBody::Bytes(&[]))
        .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params).map_err(|e| e.to_string())?.into_parts();
    instructions
        .headers()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.to_owned())
        .ok_or_else(|| "no signature".into())
}

/// `20231114T221320Z`.
fn parse_amz_date(date: &str) -> Option<std::time::SystemTime> {
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        date.get(0..4)?,
        date.get(4..6)?,
        date.get(6..8)?,
        date.get(9..11)?,
        date.get(11..13)?,
        date.get(13..15)?
    );
    authwire_oauth2::transport::parse_rfc3339(&rfc3339)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
