//! Discovery (OpenID Connect Discovery 1.0 and RFC 8414) and the JWKS.

use super::state::{IdpState, lock};
use super::wire::{
    GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_DEVICE_CODE, GRANT_JWT_BEARER,
    GRANT_REFRESH_TOKEN, GRANT_TOKEN_EXCHANGE, KEY_ID,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::Algorithm;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub(super) async fn openid_discovery(state: State<Arc<IdpState>>) -> Response {
    if !lock(&state.settings).openid_discovery {
        return StatusCode::NOT_FOUND.into_response();
    }
    discovery(state).await
}

pub(super) async fn discovery(State(s): State<Arc<IdpState>>) -> Response {
    s.discovery_requests.fetch_add(1, Ordering::SeqCst);
    let i = &s.issuer;
    let mut doc = json!({
        "issuer": i,
        "token_endpoint": format!("{i}/token"),
        "jwks_uri": format!("{i}/jwks"),
        "device_authorization_endpoint": format!("{i}/device_authorization"),
        "authorization_endpoint": format!("{i}/authorize"),
        "revocation_endpoint": format!("{i}/revoke"),
        "pushed_authorization_request_endpoint": format!("{i}/par"),
        "require_pushed_authorization_requests": lock(&s.settings).require_par,
        "claims_parameter_supported": true,
        "acr_values_supported": ["basic", "silver", "gold"],
        "dpop_signing_alg_values_supported": ["ES256"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": lock(&s.settings).authorization_response_iss,
        "grant_types_supported": [GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN, GRANT_JWT_BEARER, GRANT_TOKEN_EXCHANGE, GRANT_DEVICE_CODE],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
    });
    if s.client_ca.is_some() {
        doc["mtls_endpoint_aliases"] = json!({
            "token_endpoint": format!("{i}/mtls/token"),
            "pushed_authorization_request_endpoint": format!("{i}/mtls/par"),
        });
        doc["tls_client_certificate_bound_access_tokens"] = json!(true);
        doc["token_endpoint_auth_methods_supported"] = json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none",
            "tls_client_auth",
            "self_signed_tls_client_auth"
        ]);
    }
    axum::Json(doc).into_response()
}

pub(super) async fn jwks(State(s): State<Arc<IdpState>>) -> Response {
    s.jwks_requests.fetch_add(1, Ordering::SeqCst);
    let (delay, status) = {
        let settings = lock(&s.settings);
        (settings.jwks_delay, settings.jwks_status)
    };
    tokio::time::sleep(delay).await;
    if let Some(status) = status {
        return StatusCode::from_u16(status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            .into_response();
    }
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&s.signing_key, Algorithm::RS256)
        .expect("jwk from the test key");
    jwk.common.key_id = Some(KEY_ID.into());
    axum::Json(json!({ "keys": [jwk] })).into_response()
}
