//! The identity provider's authorization endpoint (RFC 6749 section 4.1, with PKCE as RFC 7636
//! and OAuth 2.1 require, redirect URIs as RFC 8252 section 7.3 allows for native apps) and its
//! revocation endpoint (RFC 7009). There is no login page: [`crate::Settings::authorization`]
//! answers for the user.

use super::config::Approval;
use super::state::IdpState;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::Digest as _;
use std::collections::HashMap;
use std::sync::Arc;

/// BASE64URL(SHA256(verifier)), the S256 code challenge.
pub(crate) fn s256(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// RFC 8252 section 7.3: a loopback redirect is `http` to 127.0.0.1 or [::1], any port.
/// (`localhost` is NOT RECOMMENDED there; it is refused here so that clients are tested on it.)
fn loopback_redirect(uri: &str) -> bool {
    url_parts(uri).is_some_and(|(scheme, host)| scheme == "http" && (host == "127.0.0.1" || host == "[::1]"))
}

fn url_parts(uri: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = uri.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.contains('@') {
        return None;
    }
    let host = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    };
    Some((scheme, host))
}

fn page(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text.to_owned(),
    )
        .into_response()
}

/// `GET /authorize`: validate the request; answer with a redirect carrying a code (or an error)
/// and `state`, and `iss` (RFC 9207) unless turned off.
pub(crate) async fn authorize(State(s): State<Arc<IdpState>>, RawQuery(query): RawQuery) -> Response {
    s.count_authorization_request();
    let params: HashMap<String, String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let get = |name: &str| params.get(name).map(String::as_str);
    // Without a known client and a valid redirect URI, nothing may be redirected (section 4.1.2.1).
    let Some(client) = get("client_id").and_then(|id| s.client(id)) else {
        return page(StatusCode::BAD_REQUEST, "unknown client_id");
    };
    let Some(redirect_uri) = get("redirect_uri").filter(|u| loopback_redirect(u)) else {
        return page(
            StatusCode::BAD_REQUEST,
            "redirect_uri must be http://127.0.0.1:PORT/... or http://[::1]:PORT/... (RFC 8252)",
        );
    };
    let settings = s.settings();
    let redirect = |pairs: &[(&str, &str)]| {
        let (base, mut q) = url_with_query(redirect_uri);
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
        if let Some(state) = get("state") {
            q.append_pair("state", state);
        }
        if settings.authorization_response_iss {
            q.append_pair("iss", s.issuer());
        }
        let location = format!("{base}{}", q.finish());
        (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
    };
    if get("response_type") != Some("code") {
        return redirect(&[("error", "unsupported_response_type")]);
    }
    let challenge = get("code_challenge").unwrap_or_default();
    if get("code_challenge_method") != Some("S256") || challenge.len() < 43 || challenge.len() > 128 {
        return redirect(&[
            ("error", "invalid_request"),
            (
                "error_description",
                "PKCE with code_challenge_method=S256 is required",
            ),
        ]);
    }
    if settings.authorization == Approval::Deny {
        return redirect(&[
            ("error", "access_denied"),
            ("error_description", "The user denied the request"),
        ]);
    }
    let code = s.new_code(
        &client.id,
        redirect_uri,
        challenge,
        get("scope").map(str::to_owned),
    );
    redirect(&[("code", &code)])
}

/// The redirect URI split for appending parameters: the part before the query, and a
/// serializer that already holds its query parameters.
fn url_with_query(uri: &str) -> (String, form_urlencoded::Serializer<'static, String>) {
    let uri = uri.split('#').next().unwrap_or_default();
    let (base, query) = uri.split_once('?').unwrap_or((uri, ""));
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        q.append_pair(&k, &v);
    }
    (format!("{base}?"), q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_are_loopback_ip_literals_on_any_port() {
        assert!(loopback_redirect("http://127.0.0.1:49152/callback"));
        assert!(loopback_redirect("http://[::1]:8080/"));
        assert!(!loopback_redirect("http://localhost:8080/"));
        assert!(!loopback_redirect("https://127.0.0.1.evil.example/"));
        assert!(!loopback_redirect("http://127.0.0.1@evil.example/"));
        assert!(!loopback_redirect("http://evil.example/?127.0.0.1"));
    }

    #[test]
    fn the_s256_challenge_is_the_rfc_7636_example() {
        // RFC 7636 appendix B.
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
