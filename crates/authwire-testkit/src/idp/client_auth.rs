//! Client authentication at the token, device and revocation endpoints: `client_secret_basic`,
//! `client_secret_post`, `private_key_jwt`, and public clients.

use super::config::Client;
use super::state::{IdpState, lock};
use super::wire::{ASSERTION_TYPE_JWT, Form, form_decode, oauth_error, parse_form};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// RFC 6749 section 2.3: which client is this, and did it prove it?
#[allow(clippy::result_large_err)] // a test server: the error is the finished HTTP answer
pub(super) fn authenticate(
    s: &IdpState,
    headers: &HeaderMap,
    form: &Form,
    peer: &Peer,
) -> Result<(Client, &'static str), Response> {
    let invalid = |why: &str| {
        let mut r = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"testkit\""),
        );
        r
    };
    let clients = lock(&s.clients);
    if let Some(auth) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let encoded = auth
            .strip_prefix("Basic ")
            .ok_or_else(|| invalid("unsupported Authorization scheme"))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| invalid("Basic credentials are not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid("Basic credentials are not UTF-8"))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| invalid("Basic credentials without ':'"))?;
        // RFC 6749 section 2.3.1: both parts are form-urlencoded before base64.
        let (id, secret) = (form_decode(id), form_decode(secret));
        let client = clients.get(&id).ok_or_else(|| invalid("unknown client"))?;
        if client.secret.as_deref() != Some(secret.as_str()) {
            return Err(invalid("client authentication failed"));
        }
        return Ok((client.clone(), "client_secret_basic"));
    }
    if form.get("client_assertion_type").map(String::as_str) == Some(ASSERTION_TYPE_JWT) {
        let assertion = form
            .get("client_assertion")
            .ok_or_else(|| invalid("client_assertion missing"))?;
        let unverified = jsonwebtoken::dangerous::insecure_decode::<Value>(assertion)
            .map_err(|_| invalid("client_assertion is not a JWT"))?;
        let iss = unverified.claims["iss"].as_str().unwrap_or_default().to_owned();
        let client = clients.get(&iss).ok_or_else(|| invalid("unknown client"))?;
        let pem = client
            .public_key_pem
            .as_ref()
            .ok_or_else(|| invalid("client has no registered key"))?;
        let key = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| invalid("bad registered key"))?;
        let claims = verify_assertion(
            s,
            assertion,
            &key,
            &[s.issuer.clone(), format!("{}/token", s.issuer)],
        )
        .map_err(invalid)?;
        lock(&s.client_assertion_audiences).push(claims["aud"].to_string());
        if claims["sub"].as_str() != Some(client.id.as_str()) {
            return Err(invalid("client_assertion sub must be the client_id"));
        }
        if form.get("client_id").is_some_and(|id| id != &client.id) {
            return Err(invalid("client_id does not match the assertion"));
        }
        return Ok((client.clone(), "private_key_jwt"));
    }
    let id = form
        .get("client_id")
        .ok_or_else(|| invalid("no client authentication"))?;
    let client = clients.get(id).ok_or_else(|| invalid("unknown client"))?;
    if let Some(tls) = &client.tls {
        return authenticate_tls(s, client, tls, peer).map_err(invalid);
    }
    match (&client.secret, form.get("client_secret")) {
        (Some(expected), Some(given)) if expected == given => Ok((client.clone(), "client_secret_post")),
        (Some(_), _) => Err(invalid("client authentication failed")),
        (None, Some(_)) => Err(invalid("public clients have no secret")),
        (None, None) if client.public_key_pem.is_some() => {
            Err(invalid("this client must use private_key_jwt"))
        }
        (None, None) => Ok((client.clone(), "none")),
    }
}

/// Where a request came from, for mutual TLS (RFC 8705): the certificate of its connection,
/// and whether it came to an `mtls_endpoint_aliases` endpoint.
#[derive(Clone, Debug, Default)]
pub(crate) struct Peer {
    pub(crate) certificate: Option<Vec<u8>>,
    pub(crate) at_mtls_alias: bool,
}

/// RFC 8705 section 2: the connection's certificate authenticates the client: one the CA
/// issued with the registered subject DN, or exactly the registered self-signed one.
fn authenticate_tls(
    s: &IdpState,
    client: &Client,
    tls: &super::config::TlsClientAuth,
    peer: &Peer,
) -> Result<(Client, &'static str), &'static str> {
    use super::config::TlsClientAuth;
    if !peer.at_mtls_alias {
        return Err("mutual TLS client authentication is accepted at the mtls_endpoint_aliases only");
    }
    let der = peer
        .certificate
        .as_deref()
        .ok_or("no client certificate was presented in the TLS handshake")?;
    match tls {
        TlsClientAuth::SubjectDn(dn) => {
            let ca = s.client_ca.as_deref().ok_or("this server trusts no client CA")?;
            if !crate::tls::issued_by(ca, der) {
                return Err("the client certificate was not issued by a trusted CA");
            }
            if crate::tls::subject_dn(der).as_deref() != Some(dn.as_str()) {
                return Err(
                    "the client certificate's subject is not the registered tls_client_auth_subject_dn",
                );
            }
            Ok((client.clone(), "tls_client_auth"))
        }
        TlsClientAuth::SelfSigned(registered) if registered == der => {
            Ok((client.clone(), "self_signed_tls_client_auth"))
        }
        TlsClientAuth::SelfSigned(_) => Err("the client certificate is not the registered one"),
    }
}

/// Verify a JWT assertion signed by `key`: audience, expiry, single use of `jti`.
pub(super) fn verify_assertion(
    s: &IdpState,
    jwt: &str,
    key: &DecodingKey,
    audiences: &[String],
) -> Result<Value, &'static str> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.algorithms = vec![
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
    ];
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let data = jsonwebtoken::decode::<Value>(jwt, key, &validation)
        .map_err(|_| "assertion signature or format is invalid")?;
    let c = data.claims;
    let aud_ok = match &c["aud"] {
        Value::String(a) => audiences.contains(a),
        Value::Array(list) => list
            .iter()
            .any(|a| a.as_str().is_some_and(|a| audiences.iter().any(|x| x == a))),
        _ => false,
    };
    if !aud_ok {
        return Err("assertion audience is not this server");
    }
    if c["exp"].as_u64().is_none_or(|exp| exp <= s.now_secs()) {
        return Err("assertion expired");
    }
    if let Some(jti) = c["jti"].as_str()
        && !lock(&s.seen_jti).insert(jti.to_owned())
    {
        return Err("assertion jti was used before");
    }
    Ok(c)
}

impl IdpState {
    #[allow(clippy::result_large_err)] // as `authenticate`: the error is the answer to send
    pub(crate) fn authenticate_client(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(Client, Form), Response> {
        let form = parse_form(body);
        authenticate(self, headers, &form, &Peer::default()).map(|(c, _)| (c, form))
    }
}
