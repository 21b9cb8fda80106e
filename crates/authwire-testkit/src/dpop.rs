//! A strict DPoP (RFC 9449) proof checker, shared by the identity server (token requests) and the
//! protected API (resource requests).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::Mutex;

/// How far `iat` may be from the server's time, in seconds.
const IAT_WINDOW: u64 = 300;

/// What a proof must match.
pub(crate) struct Expect<'a> {
    pub(crate) method: &'a str,
    pub(crate) htu: &'a str,
    pub(crate) access_token: Option<&'a str>,
    pub(crate) nonce: Option<&'a str>,
    pub(crate) now_secs: u64,
}

/// Why a proof was refused; `UseNonce` asks the client to retry with the server's nonce.
#[derive(Debug)]
pub(crate) enum Refused {
    Invalid(&'static str),
    UseNonce,
}

/// Check `proof` (RFC 9449 section 4.3) and return the RFC 7638 thumbprint of its key.
/// `seen` holds the `jti`s already used: a replayed proof is refused.
pub(crate) fn check(
    proof: &str,
    expect: &Expect<'_>,
    seen: &Mutex<HashSet<String>>,
) -> Result<String, Refused> {
    use Refused::Invalid;
    let header_b64 = proof.split('.').next().ok_or(Invalid("not a JWT"))?;
    let header: Value = B64
        .decode(header_b64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Invalid("the proof header is not base64url JSON"))?;
    if header["typ"] != "dpop+jwt" {
        return Err(Invalid("typ is not dpop+jwt"));
    }
    if header["alg"] != "ES256" {
        return Err(Invalid("alg is not ES256"));
    }
    let jwk = &header["jwk"];
    if jwk.get("d").is_some() {
        return Err(Invalid("the jwk holds a private key"));
    }
    let (Some(x), Some(y)) = (jwk["x"].as_str(), jwk["y"].as_str()) else {
        return Err(Invalid("the jwk is not an EC public key"));
    };
    if jwk["kty"] != "EC" || jwk["crv"] != "P-256" {
        return Err(Invalid("the jwk is not a P-256 key"));
    }
    let key: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(jwk.clone()).map_err(|_| Invalid("the jwk is not a JWK"))?;
    let decoding = DecodingKey::from_jwk(&key).map_err(|_| Invalid("the jwk is unusable"))?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_required_spec_claims::<&str>(&[]);
    validation.validate_exp = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(proof, &decoding, &validation)
        .map_err(|_| Invalid("the proof's signature does not verify"))?
        .claims;
    if claims["htm"] != expect.method {
        return Err(Invalid("htm is not the request's method"));
    }
    if claims["htu"] != expect.htu {
        return Err(Invalid("htu is not the request's URI"));
    }
    let iat = claims["iat"].as_u64().ok_or(Invalid("no iat"))?;
    if iat.abs_diff(expect.now_secs) > IAT_WINDOW {
        return Err(Invalid("iat is too far from now"));
    }
    match expect.access_token {
        Some(token) => {
            let ath = B64.encode(Sha256::digest(token.as_bytes()));
            if claims["ath"] != ath.as_str() {
                return Err(Invalid("ath is not the access token's hash"));
            }
        }
        None if claims.get("ath").is_some() => return Err(Invalid("ath on a token request")),
        None => {}
    }
    if let Some(nonce) = expect.nonce
        && claims["nonce"] != nonce
    {
        return Err(Refused::UseNonce);
    }
    let jti = claims["jti"]
        .as_str()
        .filter(|j| !j.is_empty())
        .ok_or(Invalid("no jti"))?;
    if !seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(jti.to_owned())
    {
        return Err(Invalid("the proof was replayed (jti seen before)"));
    }
    Ok(B64.encode(Sha256::digest(
        format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#).as_bytes(),
    )))
}
