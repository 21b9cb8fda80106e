//! Reading a compact JWS without verifying it: header and claims, with a precise error for each
//! way a token can fail to be a JWT.

use base64::Engine as _;
use serde_json::{Map, Value};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest token inspected; longer input is refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// The latest date accepted in a numeric date claim: 9999-12-31T23:59:59Z.
const MAX_NUMERIC_DATE: f64 = 253_402_300_799.0;

/// Why a string could not be inspected as a JWT. Never contains the token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtError {
    /// Not `header.payload.signature`.
    NotAJwt {
        /// How many dot-separated segments there were.
        segments: usize,
    },
    /// A five-segment JWE: encrypted, so its claims cannot be read.
    Encrypted,
    /// A segment is not base64url.
    Base64 {
        /// `header` or `payload`.
        part: &'static str,
    },
    /// A segment is not a JSON object.
    NotJson {
        /// `header` or `payload`.
        part: &'static str,
    },
    /// A claim has the wrong type or an absurd value.
    InvalidClaim {
        /// The claim.
        claim: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The token is longer than [`MAX_TOKEN_BYTES`].
    TooLarge {
        /// Its length.
        size: usize,
    },
    /// Signature verification failed (feature `verify`).
    Verification {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for JwtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtError::NotAJwt { segments } => {
                write!(
                    f,
                    "not a JWT: expected 3 dot-separated segments, found {segments}"
                )
            }
            JwtError::Encrypted => f.write_str("an encrypted JWT (JWE): its claims cannot be read"),
            JwtError::Base64 { part } => write!(f, "the JWT {part} is not base64url"),
            JwtError::NotJson { part } => write!(f, "the JWT {part} is not a JSON object"),
            JwtError::InvalidClaim { claim, reason } => write!(f, "the JWT claim {claim} {reason}"),
            JwtError::TooLarge { size } => {
                write!(
                    f,
                    "the token is {size} bytes long; tokens over {MAX_TOKEN_BYTES} bytes are not inspected"
                )
            }
            JwtError::Verification { reason } => write!(f, "the JWT failed verification: {reason}"),
        }
    }
}

impl std::error::Error for JwtError {}

/// The header and claims of a JWT, with typed accessors for the registered claims.
///
/// Unverified unless it came from a `Verifier` (feature `verify`): use it to schedule refreshes
/// and to show a token to a person, never to make an access decision.
#[derive(Clone, Debug)]
pub struct Claims {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    expires_at: Option<SystemTime>,
    not_before: Option<SystemTime>,
    issued_at: Option<SystemTime>,
}

impl Claims {
    /// `exp`: when the token expires.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// `nbf`: when the token starts being valid.
    pub fn not_before(&self) -> Option<SystemTime> {
        self.not_before
    }

    /// `iat`: when the token was issued.
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.issued_at
    }

    /// `iss`.
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }

    /// `sub`.
    pub fn subject(&self) -> Option<&str> {
        self.claims.get("sub").and_then(Value::as_str)
    }

    /// `aud`: a string or a list of strings, as a list.
    pub fn audience(&self) -> Vec<&str> {
        match self.claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// The granted scopes, from `scope` (space-delimited, RFC 8693) or `scp` (a list or a
    /// string, as some issuers write it).
    pub fn scopes(&self) -> Vec<&str> {
        match self.claims.get("scope").or_else(|| self.claims.get("scp")) {
            Some(Value::String(s)) => s.split_whitespace().collect(),
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// `client_id` (RFC 9068), or `azp` as some issuers name it.
    pub fn client_id(&self) -> Option<&str> {
        self.claims
            .get("client_id")
            .or_else(|| self.claims.get("azp"))
            .and_then(Value::as_str)
    }

    /// The header's `alg`.
    pub fn algorithm(&self) -> Option<&str> {
        self.header.get("alg").and_then(Value::as_str)
    }

    /// The header's `kid`.
    pub fn key_id(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str)
    }

    /// The whole header.
    pub fn header(&self) -> &Map<String, Value> {
        &self.header
    }

    /// Every claim, registered or not.
    pub fn all(&self) -> &Map<String, Value> {
        &self.claims
    }

    pub(crate) fn from_parts(
        header: Map<String, Value>,
        claims: Map<String, Value>,
    ) -> Result<Self, JwtError> {
        Ok(Self {
            expires_at: numeric_date(&claims, "exp")?,
            not_before: numeric_date(&claims, "nbf")?,
            issued_at: numeric_date(&claims, "iat")?,
            header,
            claims,
        })
    }
}

/// Read a JWT's header and claims without verifying its signature.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// // The example token of RFC 7519 section 3.1.
/// let token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
/// let claims = authwire_jwt::inspect(token)?;
/// assert_eq!(claims.issuer(), Some("joe"));
/// assert_eq!(claims.expires_at(), Some(UNIX_EPOCH + Duration::from_secs(1_300_819_380)));
/// # Ok::<(), authwire_jwt::JwtError>(())
/// ```
pub fn inspect(token: &str) -> Result<Claims, JwtError> {
    let token = token.trim();
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge { size: token.len() });
    }
    let segments: Vec<&str> = token.split('.').collect();
    match segments.len() {
        3 => {}
        5 => return Err(JwtError::Encrypted),
        n => return Err(JwtError::NotAJwt { segments: n }),
    }
    let header = json_object(segments[0], "header")?;
    let claims = json_object(segments[1], "payload")?;
    Claims::from_parts(header, claims)
}

fn json_object(segment: &str, part: &'static str) -> Result<Map<String, Value>, JwtError> {
    // Base64url without padding (RFC 7515); padded input is tolerated.
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| JwtError::Base64 { part })?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::NotJson { part }),
    }
}

/// RFC 7519 NumericDate: seconds since the epoch, integer or not.
fn numeric_date(claims: &Map<String, Value>, claim: &'static str) -> Result<Option<SystemTime>, JwtError> {
    let Some(value) = claims.get(claim) else {
        return Ok(None);
    };
    let secs = match value {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_f64().ok_or(JwtError::InvalidClaim {
            claim,
            reason: "is not a number",
        })?,
        _ => {
            return Err(JwtError::InvalidClaim {
                claim,
                reason: "is not a number",
            });
        }
    };
    if secs < 0.0 {
        return Err(JwtError::InvalidClaim {
            claim,
            reason: "is negative",
        });
    }
    if secs > MAX_NUMERIC_DATE {
        return Err(JwtError::InvalidClaim {
            claim,
            reason: "is beyond the year 9999",
        });
    }
    Ok(Some(UNIX_EPOCH + Duration::from_secs_f64(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn jwt(payload: &str) -> String {
        format!("{}.{}.sig", b64(r#"{"alg":"RS256","kid":"k1"}"#), b64(payload))
    }

    #[test]
    fn registered_claims_and_accessors() {
        let c = inspect(&jwt(
            r#"{"iss":"https://idp","sub":"svc","aud":["a","b"],"exp":1900000000,"nbf":1899990000.5,"iat":1899990000,"scope":"x y","client_id":"c1"}"#,
        ))
        .unwrap();
        assert_eq!(c.issuer(), Some("https://idp"));
        assert_eq!(c.subject(), Some("svc"));
        assert_eq!(c.audience(), ["a", "b"]);
        assert_eq!(c.scopes(), ["x", "y"]);
        assert_eq!(c.client_id(), Some("c1"));
        assert_eq!(c.algorithm(), Some("RS256"));
        assert_eq!(c.key_id(), Some("k1"));
        assert_eq!(
            c.expires_at(),
            Some(UNIX_EPOCH + Duration::from_secs(1_900_000_000))
        );
        assert_eq!(
            c.not_before(),
            Some(UNIX_EPOCH + Duration::from_millis(1_899_990_000_500))
        );
        let c = inspect(&jwt(r#"{"aud":"one","scp":["r","w"],"azp":"c2"}"#)).unwrap();
        assert_eq!(c.audience(), ["one"]);
        assert_eq!(c.scopes(), ["r", "w"]);
        assert_eq!(c.client_id(), Some("c2"));
        assert_eq!(c.expires_at(), None);
    }

    #[test]
    fn every_error_path_is_distinct_and_never_shows_the_token() {
        let h = b64(r#"{"alg":"none"}"#);
        let cases: Vec<(String, JwtError)> = vec![
            ("opaque-SECRET-token".into(), JwtError::NotAJwt { segments: 1 }),
            ("a.b".into(), JwtError::NotAJwt { segments: 2 }),
            ("a.b.c.d".into(), JwtError::NotAJwt { segments: 4 }),
            ("a.b.c.d.e".into(), JwtError::Encrypted),
            ("!!!.e30.sig".into(), JwtError::Base64 { part: "header" }),
            (format!("{h}.%%%.sig"), JwtError::Base64 { part: "payload" }),
            (
                format!("{}.e30.sig", b64("not json")),
                JwtError::NotJson { part: "header" },
            ),
            (
                format!("{h}.{}.sig", b64("[1,2]")),
                JwtError::NotJson { part: "payload" },
            ),
            (
                jwt(r#"{"exp":"tomorrow"}"#),
                JwtError::InvalidClaim {
                    claim: "exp",
                    reason: "is not a number",
                },
            ),
            (
                jwt(r#"{"exp":-1}"#),
                JwtError::InvalidClaim {
                    claim: "exp",
                    reason: "is negative",
                },
            ),
            (
                jwt(r#"{"exp":1e20}"#),
                JwtError::InvalidClaim {
                    claim: "exp",
                    reason: "is beyond the year 9999",
                },
            ),
            (
                jwt(r#"{"iat":true}"#),
                JwtError::InvalidClaim {
                    claim: "iat",
                    reason: "is not a number",
                },
            ),
            (
                "x".repeat(MAX_TOKEN_BYTES + 1),
                JwtError::TooLarge {
                    size: MAX_TOKEN_BYTES + 1,
                },
            ),
        ];
        for (token, expected) in cases {
            let e = inspect(&token).unwrap_err();
            assert_eq!(e, expected, "{token:.40}");
            assert!(!e.to_string().contains("SECRET"));
        }
    }

    #[test]
    fn float_dates_and_padding_are_tolerated() {
        let padded = format!(
            "{}=.{}==.sig",
            b64(r#"{"alg":"RS256"}"#),
            b64(r#"{"exp":1900000000.25}"#)
        );
        let c = inspect(&padded).unwrap();
        assert_eq!(
            c.expires_at(),
            Some(UNIX_EPOCH + Duration::from_millis(1_900_000_000_250))
        );
    }
}
