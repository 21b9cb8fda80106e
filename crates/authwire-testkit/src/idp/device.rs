//! Device authorization (RFC 8628): the authorization endpoint and the device code grant.

use super::client_auth::authenticate;
use super::state::{DeviceRecord, IdpState, lock, random_hex};
use super::wire::{ok_json, parse_form};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::json;
use std::sync::Arc;

pub(super) async fn device_authorization(
    State(s): State<Arc<IdpState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = parse_form(&body);
    let (client, _) = match authenticate(&s, &headers, &form, &super::client_auth::Peer::default()) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let settings = lock(&s.settings).clone();
    let n = s.next_serial();
    let device_code = format!("dc-{n}-{}", random_hex());
    let user_code = format!("WXYZ-{:04}", n % 10_000);
    lock(&s.devices).insert(
        device_code.clone(),
        DeviceRecord {
            client_id: client.id.clone(),
            user_code: user_code.clone(),
            scope: form.get("scope").cloned(),
            approved: settings.auto_approve_devices,
            denied: false,
            polls: 0,
        },
    );
    let verification_uri = format!("{}/device", s.issuer);
    ok_json(json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": verification_uri,
        "verification_uri_complete": format!("{verification_uri}?user_code={user_code}"),
        "expires_in": settings.device_expires_in_secs,
        "interval": settings.device_interval_secs,
    }))
}
