//! The identity provider's authorization endpoint (RFC 6749 section 4.1, with PKCE as RFC 7636
//! and OAuth 2.1 require, redirect URIs as RFC 8252 section 7.3 allows for native apps) and its
//! revocation endpoint (RFC 7009). There is no login page: [`crate::Settings::authorization`]
//! answers for the user.

use super::config::Approval;
use super::state::{AuthContext, IdpState, lock};
use authwire::Clock;
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
    let mut params: HashMap<String, String> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    // RFC 9126 section 4: a pushed request is named by its `request_uri`, used once, by the
    // client that pushed it, before it expires; its parameters replace the query's.
    let pushed = params.get("request_uri").cloned();
    if let Some(uri) = &pushed {
        let found = lock(&s.pushed).remove(uri);
        match found {
            Some((client_id, pushed_params, expires))
                if params.get("client_id") == Some(&client_id) && s.clock.now() < expires =>
            {
                params = pushed_params;
            }
            _ => return page(StatusCode::BAD_REQUEST, "unknown, used or expired request_uri"),
        }
    }
    *lock(&s.last_authorization) = params.clone();
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
    if settings.require_par && pushed.is_none() {
        return redirect(&[
            ("error", "invalid_request"),
            (
                "error_description",
                "pushed authorization requests are required (RFC 9126)",
            ),
        ]);
    }
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
    // The person authenticates as asked: at the first `acr_values` class, now.
    let context = AuthContext {
        acr: get("acr_values")
            .and_then(|v| v.split(' ').next())
            .map(str::to_owned),
        auth_time: Some(s.now_secs()),
        nonce: get("nonce").map(str::to_owned),
        claims: None,
    };
    let code = s.new_code(
        &client.id,
        redirect_uri,
        challenge,
        get("scope").map(str::to_owned),
        context,
        get("dpop_jkt").map(str::to_owned),
    );
    redirect(&[("code", &code)])
}

/// `POST /par` (RFC 9126 section 2), and `POST /mtls/par` at the `mtls_endpoint_aliases`
/// with `AT_MTLS_ALIAS`: an authenticated client pushes its authorization request
/// and gets a one-time `request_uri` for the browser, valid 60 seconds. A DPoP proof binds the
/// request (its key's thumbprint becomes `dpop_jkt`, RFC 9449 section 10.1).
pub(crate) async fn par<const AT_MTLS_ALIAS: bool>(
    State(s): State<Arc<IdpState>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<crate::tls::PeerCertificate>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let peer = super::client_auth::Peer {
        certificate: peer.0,
        at_mtls_alias: AT_MTLS_ALIAS,
    };
    par_inner(s, headers, body, peer).await
}

async fn par_inner(
    s: Arc<IdpState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
    peer: super::client_auth::Peer,
) -> Response {
    use std::sync::atomic::Ordering;
    s.par_requests.fetch_add(1, Ordering::SeqCst);
    let form = super::wire::parse_form(&body);
    let (client, _method) = match super::client_auth::authenticate(&s, &headers, &form, &peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    // The pushed request is an authorization request: it names its client (RFC 6749 4.1.1),
    // the one that authenticated (RFC 9126 section 2.1).
    if form.get("client_id") != Some(&client.id) {
        return super::wire::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id missing from the pushed request, or not the authenticated client",
        );
    }
    if form.contains_key("request_uri") {
        return super::wire::oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "request_uri is not allowed in a pushed request",
        );
    }
    let mut params: HashMap<String, String> = form
        .iter()
        .filter(|(k, _)| !k.starts_with("client_assertion") && k.as_str() != "client_secret")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params.insert("client_id".into(), client.id.clone());
    if let Some(proof) = headers.get("dpop").and_then(|v| v.to_str().ok()) {
        let path = if peer.at_mtls_alias { "/mtls/par" } else { "/par" };
        let htu = format!("{}{path}", s.issuer());
        let expect = crate::dpop::Expect {
            method: "POST",
            htu: &htu,
            access_token: None,
            nonce: None,
            now_secs: s.now_secs(),
        };
        match crate::dpop::check(proof, &expect, &s.dpop_seen) {
            Ok(jkt) => {
                if params.get("dpop_jkt").is_some_and(|j| *j != jkt) {
                    return super::wire::oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "dpop_jkt differs from the proof's key",
                    );
                }
                params.insert("dpop_jkt".into(), jkt);
            }
            Err(_) => {
                return super::wire::oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_dpop_proof",
                    "bad DPoP proof at the PAR endpoint",
                );
            }
        }
    }
    let request_uri = format!("urn:ietf:params:oauth:request_uri:{}", super::state::random_hex());
    let expires = s.clock.now() + std::time::Duration::from_secs(60);
    lock(&s.pushed).insert(request_uri.clone(), (client.id, params, expires));
    (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"request_uri": request_uri, "expires_in": 60})),
    )
        .into_response()
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
