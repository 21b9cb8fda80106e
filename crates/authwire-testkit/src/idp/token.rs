//! The token endpoint: every grant (client credentials, refresh with rotation, JWT bearer,
//! token exchange, device code, authorization code with PKCE), faults, and DPoP binding.

use super::authorize::s256;
use super::client_auth::{Peer, authenticate, verify_assertion};
use super::config::Client;
use super::state::{AuthContext, IdpState, lock};
use super::wire::{
    ERROR_CODE_HEADER, Form, GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_DEVICE_CODE,
    GRANT_JWT_BEARER, GRANT_REFRESH_TOKEN, GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_ACCESS, oauth_error, ok_json,
    parse_form,
};
use crate::CLIENT_PUBLIC_KEY_PEM;
use authwire::Clock;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::DecodingKey;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// `POST /token`, and with `AT_MTLS_ALIAS`, `POST /mtls/token`: the token endpoint at its
/// `mtls_endpoint_aliases` address (RFC 8705 section 5), where a client's certificate
/// authenticates it and binds its tokens.
pub(super) async fn token<const AT_MTLS_ALIAS: bool>(
    State(s): State<Arc<IdpState>>,
    ConnectInfo(peer): ConnectInfo<crate::tls::PeerCertificate>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let peer = Peer {
        certificate: peer.0,
        at_mtls_alias: AT_MTLS_ALIAS,
    };
    counted(&s, token_inner(s.clone(), headers, body, peer).await)
}

/// Count the error code of an answer.
fn counted(s: &IdpState, response: Response) -> Response {
    if let Some(code) = response
        .headers()
        .get(ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
    {
        *lock(&s.errors).entry(code.to_owned()).or_default() += 1;
    }
    response
}

pub(super) async fn token_inner(s: Arc<IdpState>, headers: HeaderMap, body: Bytes, peer: Peer) -> Response {
    s.token_requests.fetch_add(1, Ordering::SeqCst);
    let delay = lock(&s.settings).token_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let fault = {
        let mut faults = lock(&s.faults);
        let fault = faults.front_mut().map(|f| {
            f.count -= 1;
            f.clone()
        });
        if faults.front().is_some_and(|f| f.count == 0) {
            faults.pop_front();
        }
        fault
    };
    if let Some(f) = fault {
        tokio::time::sleep(f.delay).await;
        let body = if f.echo_request {
            let form = String::from_utf8_lossy(&body);
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let decoded: String = form_urlencoded::parse(form.as_bytes())
                .map(|(k, v)| format!("{k}={v}\r\n"))
                .collect();
            if f.content_type == "application/json" {
                json!({"error": "invalid_request",
                       "error_description": format!("bad request\u{1b}[31m: {form} decoded {decoded} auth {auth}")})
                .to_string()
                .into_bytes()
            } else {
                format!("<html>bad request: {form} {auth}</html>").into_bytes()
            }
        } else {
            f.body
        };
        let mut r = (
            StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(f.content_type));
        if let Some(ra) = f.retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
            r.headers_mut().insert(header::RETRY_AFTER, ra);
        }
        for (name, value) in f.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                r.headers_mut().insert(name, v);
            }
        }
        return r;
    }

    let form = parse_form(&body);
    {
        let redacted = form
            .iter()
            .map(|(k, v)| {
                let secret = [
                    "client_secret",
                    "client_assertion",
                    "assertion",
                    "refresh_token",
                    "subject_token",
                    "device_code",
                    "code",
                    "code_verifier",
                ];
                (
                    k.clone(),
                    if secret.contains(&k.as_str()) {
                        "<present>".to_owned()
                    } else {
                        v.clone()
                    },
                )
            })
            .collect();
        *lock(&s.last_form) = redacted;
    }
    if let Some(a) = form.get("assertion") {
        *lock(&s.last_assertion) = Some(a.clone());
    }
    let grant = form.get("grant_type").cloned().unwrap_or_default();
    *lock(&s.grants).entry(grant.clone()).or_default() += 1;

    let (client, method) = match authenticate(&s, &headers, &form, &peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    lock(&s.auth_methods).push(method.to_owned());
    let scope = form.get("scope").cloned();
    let audience = form.get("audience").map(String::as_str);

    // DPoP (RFC 9449): a proof binds the tokens issued to its key.
    let jkt = match headers.get("dpop").and_then(|v| v.to_str().ok()) {
        None => None,
        Some(proof) => {
            let nonce = lock(&s.settings).dpop_nonce.clone();
            let htu = format!("{}/token", s.issuer);
            let expect = crate::dpop::Expect {
                method: "POST",
                htu: &htu,
                access_token: None,
                nonce: nonce.as_deref(),
                now_secs: s.now_secs(),
            };
            match crate::dpop::check(proof, &expect, &s.dpop_seen) {
                Ok(jkt) => {
                    s.dpop_proofs.fetch_add(1, Ordering::SeqCst);
                    Some(jkt)
                }
                Err(crate::dpop::Refused::UseNonce) => {
                    let mut r = oauth_error(
                        StatusCode::BAD_REQUEST,
                        "use_dpop_nonce",
                        "Authorization server requires nonce in DPoP proof",
                    );
                    if let Some(v) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
                        r.headers_mut().insert("dpop-nonce", v);
                    }
                    return r;
                }
                Err(crate::dpop::Refused::Invalid(why)) => {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", why);
                }
            }
        }
    };
    // A refresh token bound to a key is redeemed only with a proof of that key.
    if grant == "refresh_token" {
        let bound = form
            .get("refresh_token")
            .and_then(|rt| lock(&s.refresh_tokens).get(rt).and_then(|r| r.jkt.clone()));
        if bound.is_some() && bound != jkt {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the refresh token is bound to another DPoP key",
            );
        }
    }
    // A code whose authorization request was bound to a DPoP key (`dpop_jkt`) is redeemed only
    // with a proof of that key (RFC 9449 section 10).
    if grant == GRANT_AUTHORIZATION_CODE {
        let bound = form
            .get("code")
            .and_then(|c| lock(&s.codes).get(c).and_then(|r| r.dpop_jkt.clone()));
        if bound.is_some() && bound != jkt {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "the authorization request was bound to another DPoP key (dpop_jkt)",
            );
        }
    }
    let response = grant_response(&s, &grant, &client, method, &form, scope, audience);
    let response = match jkt {
        Some(jkt) => bind_response(&s, response, &jkt).await,
        None => response,
    };
    // RFC 8705 section 3: tokens issued at the mtls alias are bound to the connection's
    // certificate.
    match peer.certificate.as_deref().filter(|_| peer.at_mtls_alias) {
        Some(der) => bind_certificate_response(&s, response, &crate::tls::x5t_s256(der)).await,
        None => response,
    }
}

/// Bind an answer's access token to a certificate thumbprint (`cnf.x5t#S256`).
async fn bind_certificate_response(s: &IdpState, response: Response, x5t: &str) -> Response {
    rewrite_answer(response, |body| {
        let access = body["access_token"].as_str().unwrap_or_default().to_owned();
        body["access_token"] = json!(s.bind_to_certificate(&access, x5t));
    })
    .await
}

/// A successful answer with its JSON body changed by `change` (other answers as they are).
async fn rewrite_answer(response: Response, change: impl FnOnce(&mut Value)) -> Response {
    if response.status() != StatusCode::OK {
        return response;
    }
    let unreadable = || {
        oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "unreadable answer",
        )
    };
    let Ok(bytes) = axum::body::to_bytes(response.into_body(), 1 << 20).await else {
        return unreadable();
    };
    let Ok(mut body) = serde_json::from_slice::<Value>(&bytes) else {
        return unreadable();
    };
    change(&mut body);
    ok_json(body)
}

/// Issue a DPoP-bound answer: `token_type: DPoP`, `cnf.jkt` in the access token, the refresh
/// token bound to the key.
pub(super) async fn bind_response(s: &IdpState, response: Response, jkt: &str) -> Response {
    rewrite_answer(response, |body| {
        let access = body["access_token"].as_str().unwrap_or_default().to_owned();
        body["access_token"] = json!(s.bind_access_token(&access, jkt));
        body["token_type"] = json!("DPoP");
        if let Some(rt) = body["refresh_token"].as_str()
            && let Some(record) = lock(&s.refresh_tokens).get_mut(rt)
        {
            record.jkt = Some(jkt.to_owned());
        }
    })
    .await
}

pub(super) fn grant_response(
    s: &Arc<IdpState>,
    grant: &str,
    client: &Client,
    method: &str,
    form: &Form,
    scope: Option<String>,
    audience: Option<&str>,
) -> Response {
    let s = s.clone();
    let (client, form) = (client.clone(), form.clone());
    match grant {
        GRANT_CLIENT_CREDENTIALS => {
            if method == "none" {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unauthorized_client",
                    "public clients cannot use client credentials",
                );
            }
            // Read the flag first: the settings lock must not be held while issuing.
            let with_refresh = lock(&s.settings).refresh_token_for_client_credentials;
            let context = AuthContext {
                claims: form.get("claims").cloned(),
                ..AuthContext::default()
            };
            let refresh = with_refresh.then(|| {
                s.new_refresh_token_in(&client.id, &client.id, scope.clone(), None, context.clone())
            });
            ok_json(s.issue_in(&client.id, &client.id, scope, audience, refresh, &context))
        }
        GRANT_REFRESH_TOKEN => refresh_grant(&s, &client, &form),
        GRANT_JWT_BEARER => {
            let Some(assertion) = form.get("assertion") else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "assertion missing");
            };
            let key = DecodingKey::from_rsa_pem(CLIENT_PUBLIC_KEY_PEM.as_bytes()).expect("test key");
            match verify_assertion(
                &s,
                assertion,
                &key,
                &[s.issuer.clone(), format!("{}/token", s.issuer)],
            ) {
                Ok(claims) => {
                    let sub = claims["sub"].as_str().unwrap_or_default().to_owned();
                    ok_json(s.issue(&client.id, &sub, scope, audience, None))
                }
                Err(why) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why),
            }
        }
        GRANT_TOKEN_EXCHANGE => {
            let (Some(subject), Some(subject_type)) =
                (form.get("subject_token"), form.get("subject_token_type"))
            else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "subject_token and subject_token_type are required",
                );
            };
            if subject_type != TOKEN_TYPE_ACCESS {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "unsupported subject_token_type",
                );
            }
            match s.check_access_token(subject) {
                Ok(sub) => {
                    let mut body = s.issue(&client.id, &sub, scope, audience, None);
                    body["issued_token_type"] = json!(TOKEN_TYPE_ACCESS);
                    ok_json(body)
                }
                Err(why) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why),
            }
        }
        GRANT_DEVICE_CODE => device_grant(&s, &client, &form),
        GRANT_AUTHORIZATION_CODE => code_grant(&s, &client, &form),
        "" => oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type missing"),
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "this grant type is not supported",
        ),
    }
}

pub(super) fn refresh_grant(s: &IdpState, client: &Client, form: &Form) -> Response {
    let Some(presented) = form.get("refresh_token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "refresh_token missing",
        );
    };
    let rotate = lock(&s.settings).rotate_refresh_tokens;
    let (subject, scope, family, mut context) = {
        let mut tokens = lock(&s.refresh_tokens);
        let Some(record) = tokens.get_mut(presented) else {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown refresh token");
        };
        if record.client_id != client.id {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "refresh token was issued to another client",
            );
        }
        if lock(&s.revoked_families).contains(&record.family) {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "refresh token revoked");
        }
        if record.used {
            // Reuse of a rotated refresh token: revoke the whole family (OAuth 2.0 Security BCP).
            lock(&s.revoked_families).insert(record.family);
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "refresh token reuse detected; the token family is revoked",
            );
        }
        if rotate {
            record.used = true;
        }
        (
            record.subject.clone(),
            record.scope.clone(),
            record.family,
            record.context.clone(),
        )
    };
    let scope = form.get("scope").cloned().or(scope);
    // A claims challenge is answered by a refresh asking for the claims (as Entra does).
    if let Some(claims) = form.get("claims") {
        context.claims = Some(claims.clone());
    }
    let new_refresh = rotate
        .then(|| s.new_refresh_token_in(&client.id, &subject, scope.clone(), Some(family), context.clone()));
    ok_json(s.issue_in(
        &client.id,
        &subject,
        scope,
        form.get("audience").map(String::as_str),
        new_refresh,
        &context,
    ))
}

/// RFC 6749 section 4.1.3 with RFC 7636 section 4.6: the code, once, by the client it was issued
/// to, with the same redirect URI and the verifier whose S256 hash is the challenge.
pub(super) fn code_grant(s: &IdpState, client: &Client, form: &Form) -> Response {
    let (Some(code), Some(verifier)) = (form.get("code"), form.get("code_verifier")) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code and code_verifier are required (PKCE is mandatory here)",
        );
    };
    // A code is redeemed at most once, whatever the outcome.
    let Some(record) = lock(&s.codes).remove(code) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown, used or expired authorization code",
        );
    };
    if record.client_id != client.id || record.expires <= s.clock.now() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "the code was issued to another client, or expired",
        );
    }
    if form.get("redirect_uri") != Some(&record.redirect_uri) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri differs from the authorization request's",
        );
    }
    if s256(verifier) != record.code_challenge {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "PKCE verification failed: the code_verifier does not match the code_challenge",
        );
    }
    let subject = format!("user-of-{}", client.id);
    let refresh = s.new_refresh_token_in(
        &client.id,
        &subject,
        record.scope.clone(),
        None,
        record.context.clone(),
    );
    ok_json(s.issue_in(
        &client.id,
        &subject,
        record.scope,
        None,
        Some(refresh),
        &record.context,
    ))
}

pub(super) fn device_grant(s: &IdpState, client: &Client, form: &Form) -> Response {
    let Some(code) = form.get("device_code") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "device_code missing");
    };
    let slow_down_once = lock(&s.settings).device_slow_down_once;
    let scope = {
        let mut devices = lock(&s.devices);
        let Some(d) = devices.get_mut(code) else {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "expired_token",
                "unknown or expired device code",
            );
        };
        if d.client_id != client.id {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "device code was issued to another client",
            );
        }
        d.polls += 1;
        if slow_down_once && d.polls == 1 {
            return oauth_error(StatusCode::BAD_REQUEST, "slow_down", "polling too fast");
        }
        if d.denied {
            devices.remove(code);
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "access_denied",
                "the user denied the request",
            );
        }
        if !d.approved {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "authorization_pending",
                "waiting for the user",
            );
        }
        let scope = d.scope.clone();
        devices.remove(code);
        scope
    };
    let subject = format!("user-of-{}", client.id);
    let refresh = s.new_refresh_token(&client.id, &subject, scope.clone(), None);
    ok_json(s.issue(&client.id, &subject, scope, None, Some(refresh)))
}
