//! The pipeline's steps, each a named function:
//!
//! 1. [`check_expiry`]: where the cached token stands now (fresh, refresh due, expired);
//! 2. refresh: the shared flight in [`crate::authorizer`] (`Authorizer::refresh`);
//! 3. [`retrieve_access_token`]: the access token out of the token data;
//! 4. [`prepare_header`]: `<scheme> <token>` as a sensitive [`HeaderValue`], once per token;
//! 5. [`update_headers`]: put it on the request.
//!
//! Steps 3 and 4 run once per token, when a new token arrives, and produce an [`Entry`]; the hot
//! path then only runs step 1 and clones the prepared header.

use crate::error::ProviderError;
use crate::policy::{Freshness, Schedule};
use crate::token::Token;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;
use zeroize::Zeroize;

/// A token as the hot path needs it: its schedule and its prepared header.
pub(crate) struct Entry {
    /// Unique in the process, never 0 nor `u64::MAX` (see the authorizer's per-thread slots).
    pub(crate) serial: u64,
    pub(crate) token: Arc<Token>,
    pub(crate) schedule: Schedule,
    /// The proof of possession of a bound (DPoP) token: step 5 adds its header to each request.
    pub(crate) proof: Option<Arc<dyn crate::token::ProofOfPossession>>,
    /// The header value as the first thread to use it gets it.
    header: HeaderValue,
    /// The first thread's stripe index (`usize::MAX` until one uses the entry).
    owner: AtomicUsize,
    /// Once a second thread uses the entry: the same header once per stripe (see
    /// [`stripe_index`]), so that threads never write one reference count. Most authorizers in
    /// a multi-tenant process are used by one thread at a time and never pay for stripes.
    stripes: OnceLock<Box<[HeaderValue]>>,
    prepared: PreparedHeader,
    /// The credential's headers beside `Authorization`, for step 5.
    pub(crate) extra: Option<ExtraHeaders>,
}

impl Entry {
    /// Steps 3 and 4 for a new token. Fails if the token cannot be an HTTP header value.
    pub(crate) fn prepare(token: Arc<Token>, schedule: Schedule) -> Result<Self, ProviderError> {
        let access_token = retrieve_access_token(&token);
        let proof = token.proof().cloned();
        let prepared = prepare_header(token.token_type().scheme(), access_token, proof.is_some())?;
        static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1);
        Ok(Self {
            serial: NEXT_SERIAL.fetch_add(1, Ordering::Relaxed),
            token,
            schedule,
            proof,
            header: prepared.stripe(),
            owner: AtomicUsize::new(usize::MAX),
            stripes: OnceLock::new(),
            prepared,
            extra: None,
        })
    }

    /// The credential's headers beside `Authorization` (see [`ExtraHeaders`]).
    pub(crate) fn with_extra(mut self, extra: Option<ExtraHeaders>) -> Self {
        self.extra = extra;
        self
    }

    /// Whether the token itself has not expired yet (its `expires_at`, without the margin).
    /// While refreshing fails, a token is served until then: the margin is spent rather than a
    /// request failed.
    pub(crate) fn not_yet_expired(&self, now: SystemTime) -> bool {
        self.token.expires_at().is_none_or(|exp| now < exp)
    }

    /// The prepared header: for an entry one thread uses, its one value; once a second thread
    /// uses it, a clone of this thread's stripe, so that threads on different stripes never
    /// write to the same cache line.
    #[inline(always)]
    pub(crate) fn header(&self) -> HeaderValue {
        let me = stripe_index();
        if let Some(stripes) = self.stripes.get() {
            return stripes[me & (stripes.len() - 1)].clone();
        }
        let owner = self.owner.load(Ordering::Relaxed);
        if owner == me
            || (owner == usize::MAX
                && self
                    .owner
                    .compare_exchange(usize::MAX, me, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok())
        {
            return self.header.clone();
        }
        self.striped(me)
    }

    /// A second thread uses this entry: stripe it from now on.
    #[cold]
    fn striped(&self, me: usize) -> HeaderValue {
        let stripes = self
            .stripes
            .get_or_init(|| (0..stripe_count()).map(|_| self.prepared.stripe()).collect());
        stripes[me & (stripes.len() - 1)].clone()
    }

    /// Step 5's inputs: the header, and for a bound token its proof and token.
    #[inline(always)]
    pub(crate) fn step5(&self) -> Step5 {
        Step5 {
            header: self.header(),
            bound: self.proof.as_ref().map(|p| (p.clone(), self.token.clone())),
            extra: self.extra.clone(),
        }
    }

    /// Whether this entry's token is bound to a key (DPoP): each request needs a proof.
    #[inline(always)]
    pub(crate) fn is_bound(&self) -> bool {
        self.proof.is_some()
    }

    /// Whether `value` is the header this entry hands out.
    pub(crate) fn issued(&self, value: &HeaderValue) -> bool {
        crate::token::constant_time_eq(self.header.as_bytes(), value.as_bytes())
    }
}

/// Step 1: check expiry: where a token with this schedule stands at `now`. The schedule was
/// planned once per token ([`crate::policy::schedule`]: the margin, the refresh window, jitter);
/// this is the only per-call work of step 1, two comparisons.
#[inline(always)]
pub(crate) fn check_expiry(schedule: &Schedule, now: SystemTime) -> Freshness {
    if let Some(until) = schedule.usable_until
        && now >= until
    {
        return Freshness::Expired;
    }
    match schedule.refresh_at {
        Some(at) if now >= at => Freshness::RefreshDue,
        _ => Freshness::Fresh,
    }
}

/// Whether a prepared header is a bound token's. Step 4 prepares only `Bearer <token>` and, for
/// a token with a proof of possession, `DPoP <token>`: the first byte tells them apart, so the
/// calls that cannot sign a proof refuse bound tokens at the cost of one byte compare on the hot
/// path.
#[inline(always)]
pub(crate) fn is_bound_header(value: &HeaderValue) -> bool {
    value.as_bytes().first() == Some(&b'D')
}

/// Headers a credential adds beside `Authorization` (Google's `x-goog-user-project`), shared
/// by every request.
#[derive(Clone)]
pub(crate) struct ExtraHeaders(Arc<[(http::HeaderName, HeaderValue)]>);

impl ExtraHeaders {
    pub(crate) fn new(headers: Vec<(http::HeaderName, HeaderValue)>) -> Self {
        Self(headers.into())
    }

    pub(crate) fn as_slice(&self) -> &[(http::HeaderName, HeaderValue)] {
        &self.0
    }

    /// Step 5, the credential's own headers (before `Authorization`, which they never replace).
    #[inline]
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in self.0.iter() {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Step 5, the credential's own headers, if it has any.
#[inline(always)]
pub(crate) fn add_extra_headers(extra: Option<&ExtraHeaders>, headers: &mut HeaderMap) {
    if let Some(extra) = extra {
        extra.apply(headers);
    }
}

/// What step 5 puts on a request: the prepared header, and for a bound token the proof to sign.
#[derive(Clone)]
pub(crate) struct Step5 {
    pub(crate) header: HeaderValue,
    pub(crate) bound: Option<(Arc<dyn crate::token::ProofOfPossession>, Arc<Token>)>,
    pub(crate) extra: Option<ExtraHeaders>,
}

impl Step5 {
    /// Step 5: put the header (and, for a bound token, a fresh proof for `target`) on `headers`.
    pub(crate) fn apply(
        self,
        target: &crate::request::Target<'_>,
        nonce: Option<&str>,
        headers: &mut HeaderMap,
    ) -> Result<HeaderValue, crate::error::AuthError> {
        if let Some((proof, token)) = &self.bound {
            let (name, value) = proof
                .proof(target, token.access_token(), nonce)
                .map_err(crate::error::AuthError::Refresh)?;
            headers.insert(name, value);
        }
        add_extra_headers(self.extra.as_ref(), headers);
        update_headers(headers, self.header.clone());
        Ok(self.header)
    }
}

/// Step 3: retrieve the access token from the token data.
pub(crate) fn retrieve_access_token(token: &Token) -> &SecretString {
    token.access_token()
}

/// The bytes of a prepared header, wiped when the last stripe drops them.
pub(crate) struct PreparedHeader {
    bytes: Arc<WipeOnDrop>,
}

struct WipeOnDrop(Box<[u8]>);

impl Drop for WipeOnDrop {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The owner of one stripe's bytes. Its alignment puts the reference count that `Bytes`
/// allocates in front of it on a cache line of its own.
#[repr(align(128))]
struct StripeOwner(Arc<WipeOnDrop>);

impl AsRef<[u8]> for StripeOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0.0
    }
}

impl PreparedHeader {
    fn stripe(&self) -> HeaderValue {
        let bytes = Bytes::from_owner(StripeOwner(self.bytes.clone()));
        // Validated in prepare_header; from_maybe_shared checks again and cannot fail here.
        let mut value =
            HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        value.set_sensitive(true);
        value
    }
}

/// Step 4: prepare the `Authorization` header value `<scheme> <token>`, marked sensitive so that
/// HTTP libraries leave it out of their logs and HPACK tables.
///
/// The scheme must be an RFC 9110 token and the access token visible ASCII (RFC 6750 `b64token`
/// is a subset): a token with a space, CR, LF or any control or non-ASCII character is refused
/// here, so it can never split or smuggle a header.
pub(crate) fn prepare_header(
    scheme: &str,
    access_token: &SecretString,
    bound: bool,
) -> Result<PreparedHeader, ProviderError> {
    let token = access_token.expose_secret();
    let dpop = scheme.eq_ignore_ascii_case("dpop");
    let usable = scheme.eq_ignore_ascii_case("bearer") || (dpop && bound);
    if !usable {
        // RFC 6749 section 7.1: a client must not use a token whose type it does not
        // understand. A DPoP-bound token without a proof is refused by every resource server.
        let why = if scheme.eq_ignore_ascii_case("dpop") {
            "is bound to a DPoP key and needs a proof with every request, which this client does not make; ask the identity provider for Bearer tokens"
        } else {
            "is not one this client can use (RFC 6749 section 7.1); ask the identity provider for Bearer tokens"
        };
        let shown: String = scheme.chars().filter(|c| c.is_ascii_graphic()).take(32).collect();
        return Err(ProviderError::invalid_response(
            None,
            format!("token type {shown:?} {why}"),
        ));
    }
    if scheme.is_empty() || !scheme.bytes().all(is_tchar) {
        return Err(ProviderError::invalid_response(
            None,
            format!("token type {scheme:?} is not a valid Authorization scheme"),
        ));
    }
    if token.is_empty() {
        return Err(ProviderError::invalid_response(None, "access token is empty"));
    }
    if let Some(pos) = token.bytes().position(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(ProviderError::invalid_response(
            None,
            format!(
                "access token has a character that cannot go into an Authorization header (byte {pos} of {})",
                token.len()
            ),
        ));
    }
    // The types allowed above, spelled as RFC 6750 and RFC 9449 do.
    let scheme = if dpop { "DPoP" } else { "Bearer" };
    let mut buf = Vec::with_capacity(scheme.len() + 1 + token.len());
    buf.extend_from_slice(scheme.as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(token.as_bytes());
    Ok(PreparedHeader {
        bytes: Arc::new(WipeOnDrop(buf.into_boxed_slice())),
    })
}

/// RFC 9110 section 5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Step 5: update the request's headers, replacing any `Authorization` already there.
#[inline]
pub(crate) fn update_headers(headers: &mut HeaderMap, value: HeaderValue) {
    headers.insert(AUTHORIZATION, value);
}

/// How many copies of each header an entry keeps: twice the cores, a power of two, at most 64.
pub(crate) fn stripe_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores * 2).next_power_of_two().clamp(1, 64)
    })
}

/// This thread's stripe: threads are numbered in the order they first authorize.
#[inline]
pub(crate) fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|i| *i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Timing, schedule};
    use crate::token::TokenType;
    use std::time::UNIX_EPOCH;

    fn entry(token: Token) -> Result<Entry, ProviderError> {
        let s = schedule(&token, UNIX_EPOCH, &Timing::default(), 0.0);
        Entry::prepare(Arc::new(token), s)
    }

    #[test]
    fn header_is_scheme_space_token_and_sensitive() {
        let e = entry(Token::new("abc.DEF-_~+/=")).unwrap();
        let h = e.header();
        assert_eq!(h.to_str().unwrap(), "Bearer abc.DEF-_~+/=");
        assert!(h.is_sensitive());
        assert!(e.issued(&HeaderValue::from_static("Bearer abc.DEF-_~+/=")));
        assert!(!e.issued(&HeaderValue::from_static("Bearer abc")));
    }

    #[test]
    fn token_types_this_client_cannot_use_are_refused_not_sent() {
        // Issue 12, item 15: a DPoP token went out as `DPoP <token>` without a proof, and any
        // other type as its own scheme.
        for t in [
            TokenType::DPoP,
            TokenType::Other("MAC".into()),
            TokenType::Other("N_A".into()),
        ] {
            let e = entry(Token::new("SECRET").with_token_type(t.clone()))
                .err()
                .unwrap_or_else(|| panic!("{t:?} accepted"));
            let msg = e.to_string();
            assert!(msg.contains("Bearer"), "{msg}");
            assert!(!msg.contains("SECRET"), "{msg}");
            assert!(!e.is_transient());
        }
        let e = entry(Token::new("t").with_token_type(TokenType::Other("bearer".into()))).unwrap();
        assert_eq!(
            e.header().to_str().unwrap(),
            "Bearer t",
            "the scheme is case-insensitive"
        );
        // A DPoP token is usable only when bound to a key (it then gets a proof per request).
        struct Nothing;
        impl crate::token::ProofOfPossession for Nothing {
            fn proof(
                &self,
                _: &crate::request::Target<'_>,
                _: &SecretString,
                _: Option<&str>,
            ) -> Result<(http::HeaderName, HeaderValue), ProviderError> {
                Ok((
                    http::HeaderName::from_static("dpop"),
                    HeaderValue::from_static("proof"),
                ))
            }
        }
        let bound = Token::new("t")
            .with_token_type(TokenType::DPoP)
            .with_proof(Arc::new(Nothing));
        let e = entry(bound).unwrap();
        assert_eq!(e.header().to_str().unwrap(), "DPoP t");
        assert!(
            is_bound_header(&e.header()),
            "a bound token's header is told apart by its scheme"
        );
        assert!(!is_bound_header(&HeaderValue::from_static("Bearer t")));
        let e = entry(Token::new("t").with_token_type(TokenType::Other("bearer".into()))).unwrap();
        assert_eq!(
            e.header().to_str().unwrap(),
            "Bearer t",
            "the scheme is case-insensitive"
        );
    }

    #[test]
    fn header_unsafe_tokens_are_errors_that_do_not_show_the_token() {
        for bad in [
            "SECRET\r\nX-Evil: 1",
            "SECRET\n",
            "SECRET with space",
            "SECRET\u{7f}",
            "SECRETé",
            "SECRET\0",
            "",
        ] {
            let e = entry(Token::new(bad))
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            let msg = e.to_string();
            assert!(!msg.contains("SECRET"), "{msg}");
            assert!(matches!(e, ProviderError::InvalidResponse { .. }));
        }
        let e = entry(Token::new("ok").with_token_type(TokenType::Other("Bad Scheme".into())));
        assert!(e.is_err());
    }

    #[test]
    fn update_headers_replaces_an_existing_authorization() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic old"));
        h.append(AUTHORIZATION, HeaderValue::from_static("Basic older"));
        update_headers(&mut h, HeaderValue::from_static("Bearer new"));
        let all: Vec<_> = h.get_all(AUTHORIZATION).iter().collect();
        assert_eq!(all, [HeaderValue::from_static("Bearer new")]);
    }

    #[test]
    fn stripes_appear_when_a_second_thread_uses_the_entry_and_carry_the_same_value() {
        let e = Arc::new(entry(Token::new("same")).unwrap());
        assert_eq!(e.header(), "Bearer same");
        assert_eq!(e.header(), "Bearer same");
        assert!(e.stripes.get().is_none(), "one thread: no stripes");
        let other = e.clone();
        let from_there = std::thread::spawn(move || other.header()).join().unwrap();
        assert_eq!(from_there, "Bearer same");
        let stripes = e.stripes.get().expect("a second thread: stripes");
        assert!(stripes.len().is_power_of_two());
        assert!(stripes.iter().all(|h| h == "Bearer same" && h.is_sensitive()));
        assert_eq!(e.header(), "Bearer same");
        assert!(e.issued(&HeaderValue::from_static("Bearer same")));
    }
}
