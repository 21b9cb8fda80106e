//! Reading token endpoint answers: RFC 6749 section 5.1 (success) and 5.2 (error), and the
//! `Retry-After` header (RFC 9110 section 10.2.3). Pure functions of status, headers, body and
//! the current time, so they are tested and fuzzed without a server.
//!
//! Nothing here logs or quotes a body that may hold a token: an excerpt is taken only from a
//! body that is not JSON (an HTML error page, say), and a JSON body is described by its keys.

use authwire::{ProviderError, Token, TokenType};
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime};

/// Longest `expires_in` taken literally ([`authwire::MAX_LIFETIME`]); longer values are capped
/// before they become a `Duration` (`Duration::from_secs_f64` panics past its range).
const MAX_EXPIRES_IN: f64 = authwire::MAX_LIFETIME.as_secs() as f64;

/// Parse a token endpoint answer into a token, or the error it describes.
///
/// `retry_after` is the raw `Retry-After` header value, if any; `now` turns `expires_in` into
/// `expires_at` and an HTTP-date `Retry-After` into a delay.
pub fn parse_token_response(
    status: u16,
    retry_after: Option<&str>,
    body: &[u8],
    now: SystemTime,
) -> Result<Token, ProviderError> {
    match status {
        200..=299 => parse_success(status, body, now),
        300..=399 => Err(ProviderError::invalid_response(
            Some(status),
            "the token endpoint answered with a redirect, which is not followed (credentials must not be replayed to another URL)",
        )),
        _ => Err(parse_error(status, retry_after, body, now)),
    }
}

fn parse_success(status: u16, body: &[u8], now: SystemTime) -> Result<Token, ProviderError> {
    let object = json_object(body).map_err(|why| {
        let mut e =
            ProviderError::invalid_response(Some(status), format!("expected a JSON token response, {why}"));
        if let Some(x) = excerpt(body) {
            e = e.with_excerpt(x);
        }
        e
    })?;
    // A refresh token that came with an answer we refuse is handed back with the error: the
    // server may have rotated it, and redeeming the old one again would revoke the login.
    parse_token_object(status, &object, now).map_err(|e| match object.get("refresh_token") {
        Some(Value::String(r)) if !r.is_empty() => e.with_refresh_token(r.clone().into()),
        _ => e,
    })
}

fn parse_token_object(
    status: u16,
    object: &Map<String, Value>,
    now: SystemTime,
) -> Result<Token, ProviderError> {
    let access_token = match object.get("access_token") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        Some(Value::String(_)) => {
            return Err(ProviderError::invalid_response(
                Some(status),
                "access_token is empty",
            ));
        }
        Some(_) => {
            return Err(ProviderError::invalid_response(
                Some(status),
                "access_token is not a string",
            ));
        }
        None => {
            return Err(ProviderError::invalid_response(
                Some(status),
                format!("JSON without access_token (keys: {})", keys(object)),
            ));
        }
    };
    let mut token = Token::new(access_token);
    match object.get("token_type") {
        Some(Value::String(t)) => token = token.with_token_type(TokenType::from(t.as_str())),
        None | Some(Value::Null) => {} // required by RFC 6749, but often omitted: Bearer
        Some(_) => {
            return Err(ProviderError::invalid_response(
                Some(status),
                "token_type is not a string",
            ));
        }
    }
    if let Some(secs) = seconds_field(object, "expires_in", status)? {
        token = token.with_expires_at(authwire::expiry_after(now, secs));
    }
    if let Some(secs) = seconds_field(object, "refresh_in", status)? {
        token = token.with_refresh_at(authwire::expiry_after(now, secs));
    }
    match object.get("refresh_token") {
        Some(Value::String(r)) if !r.is_empty() => token = token.with_refresh_token(r.clone()),
        Some(Value::String(_) | Value::Null) | None => {}
        Some(_) => {
            return Err(ProviderError::invalid_response(
                Some(status),
                "refresh_token is not a string",
            ));
        }
    }
    // Other fields are kept (bounded), for `Token::extra`: `issued_token_type` (RFC 8693), a
    // vendor's additions. Fields that hold secrets by name are not.
    const KNOWN: &[&str] = &[
        "access_token",
        "token_type",
        "expires_in",
        "refresh_in",
        "refresh_token",
        "id_token",
        "scope",
        // Ours (a person's login), never the server's to set.
        crate::provider::PERSON_LOGIN,
    ];
    for (name, value) in object
        .iter()
        .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
        .take(32)
    {
        let secretish = ["token", "secret", "password", "assertion", "key"]
            .iter()
            .any(|w| name.to_ascii_lowercase().contains(w))
            && name != "issued_token_type";
        if !secretish && value.to_string().len() <= 4096 {
            token = token.with_extra(name.clone(), value.clone());
        }
    }
    // OpenID Connect Core 3.1.3.3: `id_token` beside the access token.
    match object.get("id_token") {
        Some(Value::String(t)) if !t.is_empty() => token = token.with_id_token(t.clone()),
        Some(Value::String(_) | Value::Null) | None => {}
        Some(_) => {
            return Err(ProviderError::invalid_response(
                Some(status),
                "id_token is not a string",
            ));
        }
    }
    match object.get("scope") {
        Some(Value::String(s)) => token = token.with_scope(s.clone()),
        Some(Value::Array(list)) => {
            // Not RFC 6749, but seen in the wild: a list of scopes.
            let joined: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
            token = token.with_scope(joined.join(" "));
        }
        _ => {}
    }
    Ok(token)
}

/// A duration in seconds given as a JSON number or a numeric string. Negative values count as
/// zero (the token is expired on arrival); absurdly large ones are capped.
fn seconds_field(
    object: &Map<String, Value>,
    name: &str,
    status: u16,
) -> Result<Option<Duration>, ProviderError> {
    let value = match object.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match value {
        Some(v) if v.is_finite() => Ok(Some(Duration::from_secs_f64(v.clamp(0.0, MAX_EXPIRES_IN)))),
        _ => Err(ProviderError::invalid_response(
            Some(status),
            format!("{name} is not a number of seconds"),
        )),
    }
}

/// RFC 6749 section 5.2, or a classification by status when the body is not an OAuth error.
pub fn parse_error(status: u16, retry_after: Option<&str>, body: &[u8], now: SystemTime) -> ProviderError {
    let retry_after = retry_after.and_then(|v| parse_retry_after(v, now));
    let with_retry = |e: ProviderError| match retry_after {
        Some(d) => e.with_retry_after(d),
        None => e,
    };
    if let Ok(object) = json_object(body)
        && let Some(Value::String(code)) = object.get("error")
    {
        let description = object
            .get("error_description")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut e = ProviderError::rejected(Some(status), code.clone(), description);
        if let Some(uri) = object.get("error_uri").and_then(Value::as_str) {
            e = e.with_error_uri(uri);
        }
        return with_retry(e);
    }
    if authwire::is_transient_status(status) {
        return with_retry(ProviderError::unavailable(
            Some(status),
            format!("the token endpoint answered HTTP {status}"),
        ));
    }
    let mut e = ProviderError::invalid_response(Some(status), "an error status without an OAuth error body");
    if let Some(x) = excerpt(body) {
        e = e.with_excerpt(x);
    }
    e
}

/// The RFC 6749 `error` code of an error answer's JSON body, if it has one.
pub(crate) fn error_code(body: &[u8]) -> Option<String> {
    match json_object(body).ok()?.get("error") {
        Some(Value::String(code)) => Some(code.clone()),
        _ => None,
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date (a date in the past means "now").
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn json_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("got JSON {}", json_kind(&other))),
        Err(_) if body.is_empty() => Err("got an empty body".into()),
        Err(_) if std::str::from_utf8(body).is_err() => Err("got a body that is not UTF-8".into()),
        Err(_) => Err("got a body that is not JSON".into()),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn keys(object: &Map<String, Value>) -> String {
    let mut keys: Vec<&str> = object.keys().map(String::as_str).take(10).collect();
    keys.sort_unstable();
    if keys.is_empty() {
        "none".into()
    } else {
        keys.join(", ")
    }
}

/// The start of a body that is not JSON, for diagnosis; `None` for JSON-looking bodies or bodies
/// that mention a token, which could carry secrets.
fn excerpt(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&body[..body.len().min(400)]);
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        return json_message(body);
    }
    if trimmed.is_empty() || trimmed.starts_with('[') || trimmed.to_ascii_lowercase().contains("token") {
        return None;
    }
    Some(
        trimmed
            .chars()
            .filter(|c| !c.is_control() || *c == ' ')
            .take(200)
            .collect(),
    )
}

/// The human-readable message of a JSON error that is not an OAuth one: Azure's managed
/// identity endpoints answer `{"statusCode":400,"message":"..."}`, Google APIs
/// `{"error":{"code":403,"message":"..."}}`, others `detail` or `title` (RFC 9457). Only those
/// fields are read, never one that could hold a token, and not a value that mentions one.
fn json_message(body: &[u8]) -> Option<String> {
    let object = json_object(body).ok()?;
    let nested = object.get("error").and_then(Value::as_object);
    let message = ["message", "Message", "error_description", "detail", "title"]
        .iter()
        .find_map(|k| object.get(*k).and_then(Value::as_str).map(|v| (*k, v)))
        .or_else(|| nested?.get("message")?.as_str().map(|v| ("message", v)))?;
    let (field, value) = message;
    if value.trim().is_empty() || value.to_ascii_lowercase().contains("token") {
        return None;
    }
    Some(format!("{field}: {}", value.trim()))
}

/// `2014-10-02T15:01:23Z` or `2014-10-02T15:01:23.045123456Z` (UTC only, as Google sends).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    use std::time::UNIX_EPOCH;
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Howard Hinnant's days_from_civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()?;
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32)
    };
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn a_json_error_that_is_not_oauth_keeps_its_message() {
        // Issue 31: Azure's App Service endpoint, reported as "an error status without an OAuth
        // error body" with nothing to go on.
        let azure = parse_error(
            400,
            None,
            br#"{"statusCode":400,"message":"No X-IDENTITY-HEADER"}"#,
            now(),
        );
        assert_eq!(
            authwire::error_chain(&azure),
            "identity provider sent an unusable response (HTTP 400): an error status without an OAuth error body (body starts: \"message: No X-IDENTITY-HEADER\")"
        );
        let google = parse_error(
            403,
            None,
            br#"{"error":{"code":403,"message":"Permission denied on resource"}}"#,
            now(),
        );
        assert!(
            authwire::error_chain(&google).contains("message: Permission denied on resource"),
            "{google}"
        );
        // A field that could carry a token is never quoted.
        for body in [
            r#"{"message":"token abc.def.ghi is invalid"}"#,
            r#"{"access_token":"SECRET","message":""}"#,
            r#"{"statusCode":400}"#,
        ] {
            let e = parse_error(400, None, body.as_bytes(), now());
            assert!(!authwire::error_chain(&e).contains("message:"), "{body}: {e}");
            assert!(!authwire::error_chain(&e).contains("SECRET"));
        }
    }
    use std::time::UNIX_EPOCH;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_900_000_000)
    }

    fn ok(body: &str) -> Result<Token, ProviderError> {
        parse_token_response(200, None, body.as_bytes(), now())
    }

    #[test]
    fn full_rfc_6749_response() {
        let t = ok(
            r#"{"access_token":"2YotnFZFEjr1zCsicMWpAA","token_type":"example","expires_in":3600,
            "refresh_token":"tGzv3JOkF0XG5Qx2TlKWIA","example_parameter":"example_value","scope":"a b"}"#,
        )
        .unwrap();
        assert_eq!(t.access_token().expose_secret(), "2YotnFZFEjr1zCsicMWpAA");
        assert_eq!(t.token_type(), &TokenType::Other("example".into()));
        assert_eq!(t.expires_at(), Some(now() + Duration::from_secs(3600)));
        assert_eq!(
            t.refresh_token().unwrap().expose_secret(),
            "tGzv3JOkF0XG5Qx2TlKWIA"
        );
        assert_eq!(t.scope(), Some("a b"));
        // RFC 6749 section 5.1's `example_parameter` is kept for `Token::extra`.
        assert_eq!(
            t.extra("example_parameter").and_then(|v| v.as_str()),
            Some("example_value")
        );
    }

    #[test]
    fn extra_fields_are_kept_but_not_secret_looking_ones() {
        let t = ok(
            r#"{"access_token":"a","issued_token_type":"urn:ietf:params:oauth:token-type:access_token",
            "mfa_token":"SECRET","client_secret":"SECRET","tenant":"t1"}"#,
        )
        .unwrap();
        assert!(t.extra("issued_token_type").is_some());
        assert_eq!(t.extra("tenant").and_then(|v| v.as_str()), Some("t1"));
        assert!(t.extra("mfa_token").is_none() && t.extra("client_secret").is_none());
        assert!(!format!("{t:?}").contains("SECRET"));
        // A server cannot mark its answer as a person's login.
        let t = ok(r#"{"access_token":"a","authwire_person_login":"authorization_code"}"#).unwrap();
        assert!(t.extra(crate::provider::PERSON_LOGIN).is_none());
    }

    #[test]
    fn token_type_is_case_insensitive_and_optional() {
        assert_eq!(
            ok(r#"{"access_token":"x","token_type":"bearer"}"#)
                .unwrap()
                .token_type(),
            &TokenType::Bearer
        );
        assert_eq!(
            ok(r#"{"access_token":"x","token_type":"DPoP"}"#)
                .unwrap()
                .token_type(),
            &TokenType::DPoP
        );
        assert_eq!(
            ok(r#"{"access_token":"x"}"#).unwrap().token_type(),
            &TokenType::Bearer
        );
    }

    #[test]
    fn a_refused_success_answer_hands_back_its_refresh_token() {
        // Issue 12, item 7: the rotated refresh token beside an unusable expires_in was lost.
        for body in [
            r#"{"access_token":"x","expires_in":"soon","refresh_token":"rt-rotated"}"#,
            r#"{"access_token":42,"refresh_token":"rt-rotated"}"#,
            r#"{"refresh_token":"rt-rotated"}"#,
        ] {
            let e = ok(body).unwrap_err();
            assert_eq!(
                e.received_refresh_token().map(|r| r.expose_secret()),
                Some("rt-rotated"),
                "{body}"
            );
            assert!(!format!("{e} {e:?}").contains("rt-rotated"));
        }
        assert!(
            ok(r#"{"access_token":"x","expires_in":"soon"}"#)
                .unwrap_err()
                .received_refresh_token()
                .is_none()
        );
    }

    #[test]
    fn expires_in_as_number_string_float_negative_zero_and_huge() {
        let at = |body: &str| ok(body).unwrap().expires_at();
        assert_eq!(
            at(r#"{"access_token":"x","expires_in":"60"}"#),
            Some(now() + Duration::from_secs(60))
        );
        assert_eq!(
            at(r#"{"access_token":"x","expires_in":59.5}"#),
            Some(now() + Duration::from_millis(59_500))
        );
        assert_eq!(at(r#"{"access_token":"x","expires_in":-5}"#), Some(now()));
        assert_eq!(at(r#"{"access_token":"x","expires_in":0}"#), Some(now()));
        assert!(
            at(r#"{"access_token":"x","expires_in":1e300}"#).unwrap()
                < now() + Duration::from_secs(101 * 365 * 86400)
        );
        assert_eq!(at(r#"{"access_token":"x"}"#), None);
        assert_eq!(at(r#"{"access_token":"x","expires_in":null}"#), None);
        for bad in [r#""soon""#, "true", "[]", "{}"] {
            let e = ok(&format!(r#"{{"access_token":"x","expires_in":{bad}}}"#)).unwrap_err();
            assert!(e.to_string().contains("expires_in is not a number"), "{e}");
        }
    }

    #[test]
    fn success_status_with_unusable_bodies() {
        let html = parse_token_response(200, None, b"<html><body>Login</body></html>", now()).unwrap_err();
        assert!(matches!(
            html,
            ProviderError::InvalidResponse {
                status: Some(200),
                ..
            }
        ));
        assert!(
            html.to_string().contains("not JSON") && html.to_string().contains("<html>"),
            "{html}"
        );
        let missing = ok(r#"{"token":"SECRET-X","expires_in":5}"#).unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("without access_token (keys: expires_in, token)"),
            "{missing}"
        );
        assert!(!missing.to_string().contains("SECRET-X"));
        assert!(ok("[1,2]").unwrap_err().to_string().contains("an array"));
        assert!(ok("").unwrap_err().to_string().contains("empty body"));
        assert!(
            parse_token_response(200, None, b"\xff\xfe\x00", now())
                .unwrap_err()
                .to_string()
                .contains("not UTF-8")
        );
        assert!(ok(r#"{"access_token":""}"#).is_err());
        assert!(ok(r#"{"access_token":42}"#).is_err());
    }

    #[test]
    fn rfc_6749_errors_keep_their_fields_and_classification() {
        let body =
            br#"{"error":"invalid_client","error_description":"bad secret","error_uri":"https://idp/e"}"#;
        let e = parse_token_response(401, None, body, now()).unwrap_err();
        let ProviderError::Rejected {
            code,
            description,
            uri,
            status,
            transient,
            ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(
            (
                code.as_str(),
                description.as_deref(),
                uri.as_deref(),
                *status,
                *transient
            ),
            (
                "invalid_client",
                Some("bad secret"),
                Some("https://idp/e"),
                Some(401),
                false
            )
        );
        for code in ["invalid_grant", "unauthorized_client", "invalid_scope"] {
            let body = format!(r#"{{"error":"{code}"}}"#);
            assert!(
                !parse_token_response(400, None, body.as_bytes(), now())
                    .unwrap_err()
                    .is_transient()
            );
        }
        let e = parse_token_response(503, Some("7"), br#"{"error":"temporarily_unavailable"}"#, now())
            .unwrap_err();
        assert!(e.is_transient());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
    }

    #[test]
    fn status_classification_without_an_oauth_body() {
        for status in [500, 502, 503, 504, 429, 408] {
            let e = parse_token_response(status, None, b"<h1>oops</h1>", now()).unwrap_err();
            assert!(e.is_transient(), "{status}");
            assert_eq!(e.status(), Some(status));
        }
        let e = parse_token_response(404, None, b"not here", now()).unwrap_err();
        assert!(!e.is_transient());
        assert!(e.to_string().contains("not here"));
        let e = parse_token_response(302, None, b"", now()).unwrap_err();
        assert!(e.to_string().contains("redirect"));
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        assert_eq!(parse_retry_after("120", now()), Some(Duration::from_secs(120)));
        let date = httpdate::fmt_http_date(now() + Duration::from_secs(90));
        assert_eq!(parse_retry_after(&date, now()), Some(Duration::from_secs(90)));
        let past = httpdate::fmt_http_date(now() - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&past, now()), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now()), None);
        let e = parse_token_response(429, Some(&date), b"", now()).unwrap_err();
        assert_eq!(e.retry_after(), Some(Duration::from_secs(90)));
    }

    #[test]
    fn refresh_in_becomes_a_refresh_hint() {
        let t = ok(r#"{"access_token":"x","expires_in":7200,"refresh_in":3600}"#).unwrap();
        assert_eq!(t.refresh_at(), Some(now() + Duration::from_secs(3600)));
    }
}
