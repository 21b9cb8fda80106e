//! The token model: [`Token`], [`TokenType`] and [`CacheKey`].

use secrecy::{ExposeSecret, SecretString};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

/// An access token and what is known about it, as an identity provider issued it.
///
/// The access token and the refresh token are [`SecretString`]s: they are wiped from memory when
/// dropped and never printed. `Debug` shows every other field and `[redacted]` in their place;
/// there is no `Display`.
///
/// ```
/// use authwire::{Token, TokenType};
/// use secrecy::ExposeSecret;
/// use std::time::{Duration, SystemTime};
///
/// let token = Token::new("eyJhbGciOi...")
///     .with_expires_at(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000))
///     .with_refresh_token("rt-1")
///     .with_scope("api:read api:write");
/// assert_eq!(token.token_type(), &TokenType::Bearer);
/// assert_eq!(token.access_token().expose_secret(), "eyJhbGciOi...");
/// assert!(!format!("{token:?}").contains("eyJhbGciOi"));
/// ```
#[derive(Clone)]
pub struct Token {
    access_token: SecretString,
    token_type: TokenType,
    expires_at: Option<SystemTime>,
    refresh_token: Option<SecretString>,
    /// The OpenID Connect ID token that came with the access token, if any.
    id_token: Option<SecretString>,
    /// Other fields of the token response (`issued_token_type`, a vendor's extras).
    extra: Option<std::sync::Arc<serde_json::Map<String, serde_json::Value>>>,
    scope: Option<String>,
    refresh_at: Option<SystemTime>,
    issued_at: Option<SystemTime>,
    proof: Option<std::sync::Arc<dyn ProofOfPossession>>,
    /// The key of a bound token read back from a store, until its provider restores the proof.
    stored_proof_key: Option<ProofKey>,
}

/// The key a bound token's proofs are made with, as stores keep it beside the token (a bound
/// refresh token is useless without it): a `kind` its provider understands (`dpop+es256`) and
/// the secret key material (PKCS#8 PEM). `Debug` shows only the kind.
#[derive(Clone)]
pub struct ProofKey {
    /// What the key is, for [`IdentityProvider::restore_proof`](crate::IdentityProvider::restore_proof).
    pub kind: String,
    /// The private key.
    pub material: SecretString,
}

impl fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProofKey")
            .field("kind", &self.kind)
            .field("material", &Redacted)
            .finish()
    }
}

/// Proves possession of the key a token is bound to, once per request: what makes a DPoP-bound
/// token (RFC 9449) usable. A provider that obtains bound tokens attaches one with
/// [`Token::with_proof`]; step 5 ([`Authorizer::authorize_target`](crate::Authorizer::authorize_target))
/// then adds its header to every request, and a bound token never leaves without it.
pub trait ProofOfPossession: Send + Sync + 'static {
    /// The header proving possession for a request to `target` that carries `access_token`
    /// (DPoP: `DPoP: <proof JWT>` with `htm`, `htu` and `ath`), with the server's `nonce` if it
    /// gave one.
    fn proof(
        &self,
        target: &crate::request::Target<'_>,
        access_token: &SecretString,
        nonce: Option<&str>,
    ) -> Result<(http::HeaderName, http::HeaderValue), crate::error::ProviderError>;

    /// The key, for stores to keep beside the token (so that a restarted process or another
    /// replica can use it). `None` (the default): the token is not stored with its key, and a
    /// process that loads it refreshes instead.
    fn key(&self) -> Option<ProofKey> {
        None
    }
}

impl Token {
    /// A bearer token with no known expiry, no refresh token and no scope.
    pub fn new(access_token: impl Into<String>) -> Self {
        Self {
            access_token: SecretString::from(access_token.into()),
            token_type: TokenType::Bearer,
            expires_at: None,
            refresh_token: None,
            id_token: None,
            extra: None,
            scope: None,
            refresh_at: None,
            issued_at: None,
            proof: None,
            stored_proof_key: None,
        }
    }

    /// The proof key a store kept with this token, when it has not been restored into a
    /// [`ProofOfPossession`] yet (see [`IdentityProvider::restore_proof`](crate::IdentityProvider::restore_proof)).
    pub fn stored_proof_key(&self) -> Option<&ProofKey> {
        self.stored_proof_key.as_ref()
    }

    /// Attach the proof key a store kept with the token (for store implementations that do not
    /// use [`store::decode`](crate::store::decode)).
    pub fn with_stored_proof_key(mut self, key: ProofKey) -> Self {
        self.stored_proof_key = Some(key);
        self
    }

    /// Bind the token to a key: every request that carries it also gets `proof`'s header.
    /// Only bound tokens may have the `DPoP` type; see [`ProofOfPossession`].
    pub fn with_proof(mut self, proof: std::sync::Arc<dyn ProofOfPossession>) -> Self {
        self.proof = Some(proof);
        self
    }

    /// The proof of possession of a bound token.
    pub fn proof(&self) -> Option<&std::sync::Arc<dyn ProofOfPossession>> {
        self.proof.as_ref()
    }

    /// Set the token type, which decides the `Authorization` scheme.
    pub fn with_token_type(mut self, token_type: TokenType) -> Self {
        self.token_type = token_type;
        self
    }

    /// Set when the token expires (providers compute it from `expires_in` with the core clock).
    pub fn with_expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Set the token to expire `lifetime` from now, as `clock` reads it: what an `expires_in` of
    /// RFC 6749 section 5.1 means. Lifetimes beyond [`MAX_LIFETIME`](crate::MAX_LIFETIME) are
    /// capped ([`expiry_after`](crate::expiry_after)), so no server value can overflow.
    ///
    /// ```
    /// use authwire::{SystemClock, Token};
    /// use std::time::Duration;
    /// let token = Token::new("t0k3n").with_lifetime(Duration::from_secs(3600), &SystemClock);
    /// assert!(token.expires_at().is_some());
    /// ```
    pub fn with_lifetime(self, lifetime: Duration, clock: &dyn crate::clock::Clock) -> Self {
        self.with_expires_at(crate::clock::expiry_after(clock.now(), lifetime))
    }

    /// Attach a refresh token that a provider can use to obtain the next access token.
    pub fn with_refresh_token(mut self, refresh_token: impl Into<String>) -> Self {
        self.refresh_token = Some(SecretString::from(refresh_token.into()));
        self
    }

    /// Attach the OpenID Connect ID token of the same response (Kubernetes' OIDC authenticator
    /// and Cloud Run/IAP take an ID token where others take the access token).
    pub fn with_id_token(mut self, id_token: impl Into<String>) -> Self {
        self.id_token = Some(SecretString::from(id_token.into()));
        self
    }

    /// Replace the ID token, or remove it with `None`.
    pub fn set_id_token(&mut self, id_token: Option<SecretString>) {
        self.id_token = id_token;
    }

    /// The OpenID Connect ID token that came with this token, if the issuer sent one.
    ///
    /// # Security warning
    /// As for [`access_token`](Self::access_token): never log the exposed value.
    pub fn id_token(&self) -> Option<&SecretString> {
        self.id_token.as_ref()
    }

    /// Keep another field of the token response (`issued_token_type`, a vendor's extra).
    /// Never put a secret here: extras are shown by name in `Debug` and stored as they are.
    pub fn with_extra(mut self, name: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        std::sync::Arc::make_mut(self.extra.get_or_insert_with(Default::default))
            .insert(name.into(), value.into());
        self
    }

    /// A field of the token response that has no accessor of its own (RFC 8693's
    /// `issued_token_type`, say), if the provider kept it.
    pub fn extra(&self, name: &str) -> Option<&serde_json::Value> {
        self.extra.as_ref()?.get(name)
    }

    /// Every extra field.
    pub fn extras(&self) -> impl Iterator<Item = (&str, &serde_json::Value)> {
        self.extra
            .iter()
            .flat_map(|m| m.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// Set the granted scope: space-delimited, as in RFC 6749 section 3.3.
    pub fn with_scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// A hint from the issuer on when to refresh (for example a `refresh_in` response field).
    ///
    /// The authorizer refreshes at this point if it comes before its own refresh window.
    pub fn with_refresh_at(mut self, at: SystemTime) -> Self {
        self.refresh_at = Some(at);
        self
    }

    /// When the token was issued. The authorizer sets it to the time it received the token if
    /// the provider did not; its margins are fractions of the lifetime `expires_at - issued_at`.
    pub fn with_issued_at(mut self, at: SystemTime) -> Self {
        self.issued_at = Some(at);
        self
    }

    /// Replace the refresh token, or remove it with `None`.
    pub fn set_refresh_token(&mut self, refresh_token: Option<SecretString>) {
        self.refresh_token = refresh_token;
    }

    /// Remove and return the refresh token.
    pub fn take_refresh_token(&mut self) -> Option<SecretString> {
        self.refresh_token.take()
    }

    /// The access token.
    ///
    /// # Security warning
    /// Exposing the secret (`ExposeSecret::expose_secret`) gives a `&str` that is no longer
    /// protected: do not log it, print it or put it in an error message.
    pub fn access_token(&self) -> &SecretString {
        &self.access_token
    }

    /// The token type.
    pub fn token_type(&self) -> &TokenType {
        &self.token_type
    }

    /// When the token expires, if known.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// The refresh token, if the issuer sent one.
    ///
    /// # Security warning
    /// As for [`access_token`](Self::access_token): never log the exposed value.
    pub fn refresh_token(&self) -> Option<&SecretString> {
        self.refresh_token.as_ref()
    }

    /// The granted scope, space-delimited.
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// The issuer's refresh hint, if any.
    pub fn refresh_at(&self) -> Option<SystemTime> {
        self.refresh_at
    }

    /// When the token was issued, if known.
    pub fn issued_at(&self) -> Option<SystemTime> {
        self.issued_at
    }

    /// Whether two tokens carry the same access token (compared in constant time).
    pub fn same_access_token(&self, other: &Token) -> bool {
        constant_time_eq(
            self.access_token.expose_secret().as_bytes(),
            other.access_token.expose_secret().as_bytes(),
        )
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &Redacted)
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| Redacted))
            .field("id_token", &self.id_token.as_ref().map(|_| Redacted))
            .field(
                "extra",
                &self.extra.as_ref().map(|m| m.keys().collect::<Vec<_>>()),
            )
            .field("scope", &self.scope)
            .field("refresh_at", &self.refresh_at)
            .field("issued_at", &self.issued_at)
            .field("bound", &self.proof.is_some())
            .finish()
    }
}

/// Prints `[redacted]` in place of a secret.
pub(crate) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The kind of token, which decides the scheme of the `Authorization` header.
///
/// Parsed case-insensitively from an OAuth 2.0 `token_type` (RFC 6749 section 7.1):
///
/// ```
/// use authwire::TokenType;
/// assert_eq!("bearer".parse::<TokenType>().unwrap(), TokenType::Bearer);
/// assert_eq!("DPOP".parse::<TokenType>().unwrap(), TokenType::DPoP);
/// assert_eq!("MAC".parse::<TokenType>().unwrap().scheme(), "MAC");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum TokenType {
    /// `Bearer` (RFC 6750): whoever holds the token may use it.
    #[default]
    Bearer,
    /// `DPoP` (RFC 9449): the token is bound to a key and each request needs a proof.
    DPoP,
    /// Any other scheme, kept as the issuer spelled it.
    Other(String),
}

impl TokenType {
    /// The scheme written before the token in the `Authorization` header.
    pub fn scheme(&self) -> &str {
        match self {
            TokenType::Bearer => "Bearer",
            TokenType::DPoP => "DPoP",
            TokenType::Other(s) => s,
        }
    }
}

impl FromStr for TokenType {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(if s.eq_ignore_ascii_case("bearer") {
            TokenType::Bearer
        } else if s.eq_ignore_ascii_case("dpop") {
            TokenType::DPoP
        } else {
            TokenType::Other(s.to_owned())
        })
    }
}

impl From<&str> for TokenType {
    fn from(s: &str) -> Self {
        match s.parse() {
            Ok(t) => t,
            Err(never) => match never {},
        }
    }
}

/// What a provider's tokens are stored under: one key per distinct configuration (issuer,
/// client, grant, scopes, audience, ...), so that two configurations never share a token.
///
/// A key may carry fingerprints of the credentials that tell two configurations apart, in a
/// segment `cred=...` (up to the next `|`). `Display`, `Debug` and
/// [`readable_prefix`](Self::readable_prefix) never show that segment's value: a fingerprint
/// of a weak client secret in a log could be checked against guesses offline.
///
/// ```
/// use authwire::CacheKey;
/// let key = CacheKey::new("https://idp.example/token|my-client|api:read");
/// assert_eq!(key.as_str(), "https://idp.example/token|my-client|api:read");
/// assert_eq!(key.to_string(), key.as_str());
///
/// let with_secret = CacheKey::new("oauth2|https://idp.example/token|c|cred=1f2e3d4c5b6a7988|client_credentials");
/// assert_eq!(with_secret.to_string(), "oauth2|https://idp.example/token|c|cred=…|client_credentials");
/// assert!(!format!("{with_secret:?}").contains("1f2e3d"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(Cow<'static, str>);

/// The segment of a key whose value is never shown.
const HIDDEN_SEGMENT: &str = "cred=";

impl CacheKey {
    /// A key from any string. Stores escape or hash it as their medium needs.
    pub fn new(key: impl Into<String>) -> Self {
        Self(Cow::Owned(key.into()))
    }

    /// A key from a static string, without allocating.
    pub const fn from_static(key: &'static str) -> Self {
        Self(Cow::Borrowed(key))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the key, as 64 hex digits: what stores name entries by, so that any key
    /// (with `/`, `..`, unicode, 1 KB long) maps to a safe, unique name.
    ///
    /// ```
    /// let key = authwire::CacheKey::new("https://idp/token|client");
    /// assert_eq!(key.sha256_hex().len(), 64);
    /// assert_ne!(key.sha256_hex(), authwire::CacheKey::new("https://idp/token|client2").sha256_hex());
    /// ```
    pub fn sha256_hex(&self) -> String {
        use sha2::Digest;
        sha2::Sha256::digest(self.as_str().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The first `max` characters of the key with everything but ASCII letters, digits, `-` and
    /// `_` replaced by `_`: a readable start for an entry name (always followed by
    /// [`sha256_hex`](Self::sha256_hex), which makes it unique).
    ///
    /// ```
    /// let key = authwire::CacheKey::new("https://idp/token|a/b");
    /// assert_eq!(key.readable_prefix(40), "https___idp_token_a_b");
    /// ```
    pub fn readable_prefix(&self, max: usize) -> String {
        self.shown()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(max)
            .collect()
    }
}

impl CacheKey {
    /// The key as it may be shown: every `cred=` segment's value replaced by `…`.
    fn shown(&self) -> Cow<'_, str> {
        if !self.0.contains(HIDDEN_SEGMENT) {
            return Cow::Borrowed(&self.0);
        }
        let mut out = String::with_capacity(self.0.len());
        let mut rest: &str = &self.0;
        while let Some(at) = rest.find(HIDDEN_SEGMENT) {
            let value = at + HIDDEN_SEGMENT.len();
            out.push_str(&rest[..value]);
            out.push('…');
            rest = &rest[value..];
            rest = &rest[rest.find('|').unwrap_or(rest.len())..];
        }
        out.push_str(rest);
        Cow::Owned(out)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CacheKey").field(&self.shown()).finish()
    }
}

impl From<&str> for CacheKey {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for CacheKey {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "tok-SECRET-MARKER-1";
    const REFRESH: &str = "rt-SECRET-MARKER-2";

    #[test]
    fn debug_redacts_access_and_refresh_tokens() {
        let t = Token::new(SECRET).with_refresh_token(REFRESH).with_scope("a b");
        let dbg = format!("{t:?} {t:#?}");
        assert!(!dbg.contains("SECRET-MARKER"), "{dbg}");
        assert!(dbg.contains("[redacted]"));
        assert!(dbg.contains("a b"), "non-secret fields stay visible: {dbg}");
    }

    #[test]
    fn token_type_parsing_is_case_insensitive_and_keeps_unknown_spelling() {
        assert_eq!(TokenType::from("BeArEr"), TokenType::Bearer);
        assert_eq!(TokenType::from("dPoP"), TokenType::DPoP);
        assert_eq!(TokenType::from("N_A"), TokenType::Other("N_A".into()));
        assert_eq!(TokenType::from("N_A").scheme(), "N_A");
    }

    #[test]
    fn same_access_token_compares_the_secret() {
        let a = Token::new("abc");
        assert!(a.same_access_token(&Token::new("abc").with_scope("x")));
        assert!(!a.same_access_token(&Token::new("abd")));
        assert!(!a.same_access_token(&Token::new("abcd")));
    }

    #[test]
    fn refresh_token_can_be_taken_and_replaced() {
        let mut t = Token::new("a").with_refresh_token("r1");
        let r = t.take_refresh_token().unwrap();
        assert_eq!(r.expose_secret(), "r1");
        assert!(t.refresh_token().is_none());
        t.set_refresh_token(Some(r));
        assert_eq!(t.refresh_token().unwrap().expose_secret(), "r1");
    }
}
