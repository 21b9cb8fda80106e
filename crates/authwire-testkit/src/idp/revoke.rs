//! Token revocation (RFC 7009).

use super::state::IdpState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// `POST /revoke` (RFC 7009): the client authenticates; the answer is 200 whether or not the
/// token was known (section 2.2).
pub(crate) async fn revoke(State(s): State<Arc<IdpState>>, headers: HeaderMap, body: Bytes) -> Response {
    let (client, form) = match s.authenticate_client(&headers, &body) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(token) = form.get("token") else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": "invalid_request", "error_description": "token missing"})),
        )
            .into_response();
    };
    s.revoke(&client.id, token);
    StatusCode::OK.into_response()
}
