//! DPoP (RFC 9449): a key pair that binds tokens to this client, and the proofs that show
//! possession of it.
//!
//! A [`DpopKey`] is an ES256 (P-256) key pair. [`DpopKey::proof`] signs a DPoP proof JWT for one
//! HTTP request (RFC 9449 section 4.2): header `typ: dpop+jwt`, `alg: ES256` and the public
//! `jwk`; claims `jti` (unique), `htm`, `htu` (the URI without query and fragment, normalised),
//! `iat`, and for requests to a resource server `ath` (the access token's SHA-256), and `nonce`
//! when the server gave one.
//!
//! ```
//! use authwire_oauth2::{DpopKey, DpopProof};
//! use std::time::SystemTime;
//!
//! let key = DpopKey::generate_es256()?;
//! let proof = key.proof(&DpopProof {
//!     method: "GET",
//!     uri: "https://api.example/v1/things?page=2",
//!     access_token: Some("the-access-token"),
//!     nonce: None,
//!     issued_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_900_000_000),
//! })?;
//! assert_eq!(proof.split('.').count(), 3);
//! assert_eq!(key.thumbprint().len(), 43); // base64url of a SHA-256
//! # Ok::<(), authwire_oauth2::DpopError>(())
//! ```
//!
//! The private key is kept as a zeroized secret: `Debug` shows only the thumbprint, and
//! [`DpopKey::to_pkcs8_pem`] is the one way out (to persist it with the tokens it binds).
//!
//! The signatures come from aws-lc-rs, chosen by measurement (docs/PERFORMANCE.md): on the
//! reference machine an ES256 signature takes about 16 µs with aws-lc-rs, 17 µs with ring and
//! 86 µs with RustCrypto's p256, and aws-lc-rs is already built for rustls.

use authwire::secrecy::SecretString;
use authwire::secrecy::zeroize::Zeroizing;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A DPoP key pair (ES256, P-256). Cheap to clone; clones share the key.
#[derive(Clone)]
pub struct DpopKey {
    inner: Arc<Inner>,
}

struct Inner {
    /// The key pair (AWS-LC cleanses it when freed).
    pair: EcdsaKeyPair,
    /// The PKCS#8 document, for persisting; wiped when dropped.
    pkcs8: Zeroizing<Vec<u8>>,
    rng: SystemRandom,
    /// `base64url(header JSON) + "."`: the same for every proof of this key, built once.
    header_prefix: String,
    thumbprint: String,
}

/// What one proof is for (see [`DpopKey::proof`]).
#[derive(Clone, Copy, Debug)]
pub struct DpopProof<'a> {
    /// The HTTP method (`htm`), as sent.
    pub method: &'a str,
    /// The request URI; `htu` is made from it (query and fragment removed, scheme and host
    /// lowercased, default port removed).
    pub uri: &'a str,
    /// The access token sent with the request (its SHA-256 becomes `ath`); `None` for token
    /// requests.
    pub access_token: Option<&'a str>,
    /// The server's `DPoP-Nonce`, if it gave one.
    pub nonce: Option<&'a str>,
    /// `iat`: now, by the caller's clock.
    pub issued_at: SystemTime,
}

/// Why a DPoP key could not be made or loaded, or a proof signed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DpopError {
    /// The PEM is not a PKCS#8 P-256 private key.
    InvalidKey(String),
    /// The operating system's random generator failed.
    Random(String),
    /// The request URI is not an absolute http(s) URI.
    InvalidUri(String),
}

impl fmt::Display for DpopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DpopError::InvalidKey(why) => write!(f, "not a PKCS#8 P-256 private key: {why}"),
            DpopError::Random(why) => write!(f, "no randomness for a DPoP key: {why}"),
            DpopError::InvalidUri(uri) => {
                write!(f, "{uri:?} is not an absolute http(s) URI for a DPoP proof")
            }
        }
    }
}

impl std::error::Error for DpopError {}

impl DpopKey {
    /// A new P-256 key pair from the operating system's random generator.
    pub fn generate_es256() -> Result<Self, DpopError> {
        let rng = SystemRandom::new();
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| DpopError::Random("could not generate a P-256 key".into()))?;
        Self::from_pkcs8_der(Zeroizing::new(document.as_ref().to_vec()))
    }

    /// A key persisted with [`to_pkcs8_pem`](Self::to_pkcs8_pem) (PKCS#8 PEM, P-256).
    pub fn from_pkcs8_pem(pem: &[u8]) -> Result<Self, DpopError> {
        let key = authwire_http::pem::private_key(pem).map_err(|e| DpopError::InvalidKey(e.to_string()))?;
        if !key.is_pkcs8() {
            return Err(DpopError::InvalidKey(format!(
                "a {} block, not PRIVATE KEY",
                key.label()
            )));
        }
        Self::from_pkcs8_der(Zeroizing::new(key.der().to_vec()))
    }

    /// The private key as PKCS#8 PEM, to store beside the tokens it binds.
    pub fn to_pkcs8_pem(&self) -> SecretString {
        let pem = authwire_http::pem::encode("PRIVATE KEY", &self.inner.pkcs8[..]);
        SecretString::from(pem.as_str())
    }

    /// The RFC 7638 JWK SHA-256 thumbprint, base64url: what `cnf.jkt` of a bound token holds.
    pub fn thumbprint(&self) -> String {
        self.inner.thumbprint.clone()
    }

    /// The public key as a JWK (`kty`, `crv`, `x`, `y`).
    pub fn public_jwk(&self) -> serde_json::Value {
        public_jwk(&self.inner.pair)
    }

    /// Sign a DPoP proof for one request.
    pub fn proof(&self, p: &DpopProof<'_>) -> Result<String, DpopError> {
        let htu = htu(p.uri)?;
        let iat = p.issued_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut claims = serde_json::json!({
            "jti": authwire::random::hex(16),
            "htm": p.method,
            "htu": htu,
            "iat": iat,
        });
        if let Some(token) = p.access_token {
            claims["ath"] = B64.encode(Sha256::digest(token.as_bytes())).into();
        }
        if let Some(nonce) = p.nonce {
            claims["nonce"] = nonce.into();
        }
        let mut jws = String::with_capacity(self.inner.header_prefix.len() + 256);
        jws.push_str(&self.inner.header_prefix);
        jws.push_str(&B64.encode(claims.to_string()));
        let signature = self
            .inner
            .pair
            .sign(&self.inner.rng, jws.as_bytes())
            .map_err(|_| DpopError::Random("the signature failed".into()))?;
        jws.push('.');
        jws.push_str(&B64.encode(signature.as_ref()));
        Ok(jws)
    }

    fn from_pkcs8_der(pkcs8: Zeroizing<Vec<u8>>) -> Result<Self, DpopError> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
            .map_err(|e| DpopError::InvalidKey(e.to_string()))?;
        let jwk = public_jwk(&pair);
        let header = serde_json::json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk});
        let mut header_prefix = B64.encode(header.to_string());
        header_prefix.push('.');
        // RFC 7638 section 3.2: the required members, in lexicographic order, no whitespace.
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap_or_default(),
            jwk["y"].as_str().unwrap_or_default()
        );
        let thumbprint = B64.encode(Sha256::digest(canonical.as_bytes()));
        Ok(Self {
            inner: Arc::new(Inner {
                pair,
                pkcs8,
                rng: SystemRandom::new(),
                header_prefix,
                thumbprint,
            }),
        })
    }
}

/// The public point of a P-256 key pair (SEC1 uncompressed: `04 || x || y`) as a JWK.
fn public_jwk(pair: &EcdsaKeyPair) -> serde_json::Value {
    let point = pair.public_key().as_ref();
    let (x, y) = point
        .get(1..)
        .map_or((&[][..], &[][..]), |xy| xy.split_at(xy.len() / 2));
    serde_json::json!({
        "kty": "EC",
        "crv": "P-256",
        "x": B64.encode(x),
        "y": B64.encode(y),
    })
}

/// RFC 9449 section 4.3: the request URI without query and fragment, with scheme and host
/// lowercased and a default port removed (RFC 3986 section 6.2.3 normalisation), and without
/// user information: a proof is a signed, logged artefact, and a password in a URL must not
/// end up in one (the server compares scheme, host, port and path only).
pub fn htu(uri: &str) -> Result<String, DpopError> {
    let mut url = url::Url::parse(uri).map_err(|_| DpopError::InvalidUri(uri.to_owned()))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(DpopError::InvalidUri(uri.to_owned()));
    }
    url.set_query(None);
    url.set_fragment(None);
    // Cannot fail for an http(s) URL with a host.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok(url.to_string())
}

/// The proof of possession that DPoP-bound tokens carry (see
/// [`authwire::ProofOfPossession`]): a fresh proof for each request, with `ath`.
pub(crate) struct DpopSigner {
    key: DpopKey,
    clock: Arc<dyn authwire::Clock>,
}

impl DpopSigner {
    pub(crate) fn new(key: DpopKey, clock: Arc<dyn authwire::Clock>) -> Self {
        Self { key, clock }
    }
}

impl authwire::ProofOfPossession for DpopSigner {
    fn proof(
        &self,
        target: &authwire::Target<'_>,
        access_token: &SecretString,
        nonce: Option<&str>,
    ) -> Result<(http::HeaderName, http::HeaderValue), authwire::ProviderError> {
        use authwire::secrecy::ExposeSecret;
        let port = target.port.map(|p| format!(":{p}")).unwrap_or_default();
        let uri = format!("{}://{}{port}{}", target.scheme, target.host, target.path);
        let proof = self
            .key
            .proof(&DpopProof {
                method: target.method.as_str(),
                uri: &uri,
                access_token: Some(access_token.expose_secret()),
                nonce,
                issued_at: self.clock.now(),
            })
            .map_err(|e| authwire::ProviderError::permanent(e.to_string()))?;
        let mut value = http::HeaderValue::from_str(&proof)
            .map_err(|_| authwire::ProviderError::permanent("a DPoP proof is not a header value"))?;
        value.set_sensitive(true);
        Ok((http::HeaderName::from_static("dpop"), value))
    }

    fn key(&self) -> Option<authwire::ProofKey> {
        Some(authwire::ProofKey {
            kind: KEY_KIND.into(),
            material: self.key.to_pkcs8_pem(),
        })
    }
}

/// The [`authwire::ProofKey::kind`] of DPoP ES256 keys.
pub(crate) const KEY_KIND: &str = "dpop+es256";

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DpopKey")
            .field("alg", &"ES256")
            .field("thumbprint", &self.inner.thumbprint)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use authwire::secrecy::ExposeSecret;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    fn proof_for(key: &DpopKey, token: Option<&str>, nonce: Option<&str>) -> String {
        key.proof(&DpopProof {
            method: "POST",
            uri: "HTTPS://API.Example:443/v1/orders?x=1#frag",
            access_token: token,
            nonce,
            issued_at: UNIX_EPOCH + std::time::Duration::from_secs(1_900_000_000),
        })
        .unwrap()
    }

    /// Verify a proof the way a resource server does: the key from the header's `jwk`.
    fn verify(proof: &str) -> (serde_json::Value, serde_json::Value) {
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(proof.split('.').next().unwrap()).unwrap()).unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(header["jwk"].clone()).unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_required_spec_claims::<&str>(&[]);
        validation.validate_exp = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(
            proof,
            &DecodingKey::from_jwk(&jwk).unwrap(),
            &validation,
        )
        .expect("a valid ES256 signature by the key in the header");
        (header, data.claims)
    }

    #[test]
    fn a_proof_has_the_rfc_9449_header_and_claims_and_a_valid_signature() {
        let key = DpopKey::generate_es256().unwrap();
        let proof = proof_for(&key, Some("the-access-token"), Some("server-nonce"));
        let (header, claims) = verify(&proof);
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["jwk"], key.public_jwk());
        assert!(header["jwk"].get("d").is_none(), "never the private part");
        assert_eq!(claims["htm"], "POST");
        assert_eq!(
            claims["htu"], "https://api.example/v1/orders",
            "no query, fragment or default port"
        );
        assert_eq!(claims["iat"], 1_900_000_000u64);
        assert_eq!(claims["nonce"], "server-nonce");
        assert_eq!(claims["ath"], B64.encode(Sha256::digest(b"the-access-token")));
        assert_eq!(claims["jti"].as_str().unwrap().len(), 32);
        let (_, again) = verify(&proof_for(&key, None, None));
        assert_ne!(again["jti"], claims["jti"], "a fresh jti for every proof");
        assert!(again.get("ath").is_none() && again.get("nonce").is_none());
    }

    #[test]
    fn the_thumbprint_is_rfc_7638_and_matches_rfc_9449s_example() {
        // RFC 9449 section 4.1's example key and section 6.1's `jkt` for it.
        let jwk = serde_json::json!({
            "kty": "EC",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
            "crv": "P-256"
        });
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        assert_eq!(
            B64.encode(Sha256::digest(canonical.as_bytes())),
            "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
        );
        let key = DpopKey::generate_es256().unwrap();
        let (header, _) = verify(&proof_for(&key, None, None));
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            header["jwk"]["x"].as_str().unwrap(),
            header["jwk"]["y"].as_str().unwrap()
        );
        assert_eq!(key.thumbprint(), B64.encode(Sha256::digest(canonical.as_bytes())));
    }

    #[test]
    fn a_key_survives_pkcs8_pem_and_never_shows_in_debug() {
        let key = DpopKey::generate_es256().unwrap();
        let pem = key.to_pkcs8_pem();
        assert!(pem.expose_secret().starts_with("-----BEGIN PRIVATE KEY-----"));
        let again = DpopKey::from_pkcs8_pem(pem.expose_secret().as_bytes()).unwrap();
        assert_eq!(again.thumbprint(), key.thumbprint());
        let shown = format!("{key:?}");
        let body: String = pem
            .expose_secret()
            .lines()
            .nth(1)
            .unwrap()
            .chars()
            .take(16)
            .collect();
        assert!(!shown.contains(&body), "{shown}");
        assert!(shown.contains(&key.thumbprint()));
        assert!(matches!(
            DpopKey::from_pkcs8_pem(b"not a key"),
            Err(DpopError::InvalidKey(_))
        ));
        assert_ne!(DpopKey::generate_es256().unwrap().thumbprint(), key.thumbprint());
    }

    #[test]
    fn htu_is_normalised_and_only_for_absolute_http_uris() {
        assert_eq!(
            htu("https://server.example.com/token").unwrap(),
            "https://server.example.com/token"
        );
        assert_eq!(
            htu("HTTPS://Server.Example.COM:443/a/b?c=d#e").unwrap(),
            "https://server.example.com/a/b"
        );
        assert_eq!(
            htu("http://127.0.0.1:8080/x?y").unwrap(),
            "http://127.0.0.1:8080/x"
        );
        for bad in ["/relative", "ftp://x/y", "not a uri"] {
            assert!(htu(bad).is_err(), "{bad}");
        }
        // Issue 24, item 10: user information never reaches the signed proof.
        assert_eq!(
            htu("https://ada:S3CRET-PASSWORD@api.example/v1?x=1").unwrap(),
            "https://api.example/v1"
        );
        assert_eq!(
            htu("https://ada@api.example/v1").unwrap(),
            "https://api.example/v1"
        );
    }
}
