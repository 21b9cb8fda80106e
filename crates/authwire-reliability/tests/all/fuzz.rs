//! Fuzz targets for every parser that reads untrusted input. cargo-fuzz needs a nightly
//! toolchain, which CI does not have, so the targets run under proptest: random bytes, and
//! mutations of the corpus in `corpus/<target>/`. A regression run replays the corpus itself.
//! Cases per target: 1,000 by default, `PROPTEST_CASES=N` for more (docs/RELIABILITY.md has the
//! long runs).

use authwire::challenge;
use proptest::prelude::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_900_000_000)
}

fn base64_url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// RFC 6749 section 5.1 / 5.2 answers, and `Retry-After`.
fn token_response(data: &[u8]) {
    for status in [200, 201, 302, 400, 401, 429, 500, 503] {
        let _ = authwire_oauth2::parse_token_response(status, Some(&text(data)), data, now());
    }
}

fn oauth_error(data: &[u8]) {
    for status in [400, 401, 403, 429, 503] {
        let e = authwire_oauth2::parse_error(status, Some(&text(data)), data, now());
        let _ = (e.to_string(), e.is_transient(), e.retry_after());
    }
    let _ = authwire_oauth2::parse_retry_after(&text(data), now());
}

fn www_authenticate(data: &[u8]) {
    for c in challenge::parse(&text(data)) {
        let _ = (c.says_invalid_token(), c.param("error"));
    }
}

/// Store deserialisation; what decodes must encode and decode to the same token.
fn stored_token(data: &[u8]) {
    if let Ok(token) = authwire::store::decode(data) {
        let again = authwire::store::decode(&authwire::store::encode(&token)).expect("re-decodes");
        assert!(
            authwire_testkit::conformance::same_token(&token, &again),
            "round trip changed the token"
        );
    }
}

fn jwt(data: &[u8]) {
    if let Ok(c) = authwire_jwt::inspect(&text(data)) {
        let _ = (c.expires_at(), c.audience(), c.scopes(), c.client_id());
    }
}

/// An expiry a server's numbers produced: never past `now + MAX_LIFETIME` (issue 24, item 2:
/// a huge `expires_on`, `expires_in` or `exp` overflowed `SystemTime` and panicked).
fn bounded(token: &authwire::Token) {
    if let Some(at) = token.expires_at() {
        assert!(at <= now() + authwire::MAX_LIFETIME, "an expiry beyond the cap");
    }
}

/// Azure's managed identity answers (IMDS, App Service): `expires_on`, `expires_in`.
fn managed_identity(data: &[u8]) {
    for status in [200, 201] {
        if let Ok(token) = authwire_azure::parse_managed_identity_answer(status, data, now()) {
            bounded(&token);
        }
    }
}

/// The GCE metadata server's ID token answer (a JWT whose `exp` is the expiry).
fn metadata_id_token(data: &[u8]) {
    if let Ok(token) = authwire_gcp::parse_metadata_id_token(200, data, now()) {
        bounded(&token);
    }
    // Its access token answers are RFC 6749 ones, capped the same way.
    if let Ok(token) = authwire_oauth2::parse_token_response(200, None, data, now()) {
        bounded(&token);
    }
}

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 7] = [
    ("token_response", token_response),
    ("oauth_error", oauth_error),
    ("www_authenticate", www_authenticate),
    ("stored_token", stored_token),
    ("jwt", jwt),
    ("managed_identity", managed_identity),
    ("metadata_id_token", metadata_id_token),
];

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = authwire_reliability::corpus_dir().join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.into_iter().map(|f| std::fs::read(f).unwrap()).collect()
}

#[test]
fn corpus_regression_run() {
    for (name, target) in TARGETS {
        let inputs = corpus(name);
        assert!(inputs.len() >= 4, "{name}: the corpus is there");
        for input in inputs {
            target(&input);
        }
    }
}

/// A corpus entry with a few bytes changed, inserted or removed.
fn mutated(target: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let inputs = corpus(target);
    (
        0..inputs.len(),
        prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8),
    )
        .prop_map(move |(i, edits)| {
            let mut data = inputs[i].clone();
            for (at, byte, op) in edits {
                let at = if data.is_empty() { 0 } else { at % (data.len() + 1) };
                match op {
                    0 if at < data.len() => data[at] = byte,
                    1 => data.insert(at, byte),
                    _ if at < data.len() => {
                        data.remove(at);
                    }
                    _ => data.push(byte),
                }
            }
            data
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn token_response_random(data in prop::collection::vec(any::<u8>(), 0..512)) { token_response(&data) }
    #[test]
    fn token_response_mutated(data in mutated("token_response")) { token_response(&data) }
    #[test]
    fn oauth_error_random(data in prop::collection::vec(any::<u8>(), 0..512)) { oauth_error(&data) }
    #[test]
    fn oauth_error_mutated(data in mutated("oauth_error")) { oauth_error(&data) }
    #[test]
    fn www_authenticate_random(s in "[ -~]{0,200}") { www_authenticate(s.as_bytes()) }
    #[test]
    fn www_authenticate_mutated(data in mutated("www_authenticate")) { www_authenticate(&data) }
    #[test]
    fn stored_token_random(data in prop::collection::vec(any::<u8>(), 0..512)) { stored_token(&data) }
    #[test]
    fn stored_token_mutated(data in mutated("stored_token")) { stored_token(&data) }
    #[test]
    fn jwt_mutated(data in mutated("jwt")) { jwt(&data) }
    #[test]
    fn managed_identity_random(data in prop::collection::vec(any::<u8>(), 0..512)) { managed_identity(&data) }
    #[test]
    fn managed_identity_mutated(data in mutated("managed_identity")) { managed_identity(&data) }
    #[test]
    fn managed_identity_numbers(on in any::<u64>(), inn in any::<u64>(), as_string in any::<bool>()) {
        let n = |v: u64| if as_string { format!("\"{v}\"") } else { v.to_string() };
        managed_identity(format!(r#"{{"access_token":"t","expires_on":{}}}"#, n(on)).as_bytes());
        managed_identity(format!(r#"{{"access_token":"t","expires_in":{}}}"#, n(inn)).as_bytes());
    }
    #[test]
    fn metadata_id_token_mutated(data in mutated("metadata_id_token")) { metadata_id_token(&data) }
    #[test]
    fn metadata_id_token_exp(exp in any::<u64>()) {
        let claims = base64_url(&format!(r#"{{"aud":"a","exp":{exp}}}"#));
        metadata_id_token(format!("eyJhbGciOiJSUzI1NiJ9.{claims}.c2ln").as_bytes());
        metadata_id_token(format!(r#"{{"access_token":"t","expires_in":{exp}}}"#).as_bytes());
    }
}
