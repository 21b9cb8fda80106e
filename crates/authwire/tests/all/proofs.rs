//! Tokens bound to a key (DPoP, RFC 9449) through the request-level seam: step 4 prepares
//! `DPoP <token>` once, step 5 adds a fresh proof for each request, and the calls that cannot
//! sign one refuse the token instead of sending it bare.

use authwire::secrecy::{ExposeSecret, SecretString};
use authwire::{
    Answer, AuthError, Authorizer, CacheKey, IdentityProvider, ProofOfPossession, ProviderError,
    RejectionRules, RetryDecision, Target, Token, TokenType, async_trait,
};
use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Signs "proofs" that name what they were made for, and records them.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl ProofOfPossession for Recorder {
    fn proof(
        &self,
        target: &Target<'_>,
        access_token: &SecretString,
        nonce: Option<&str>,
    ) -> Result<(HeaderName, HeaderValue), ProviderError> {
        let made = format!(
            "{} {}://{}{} ath={} nonce={nonce:?}",
            target.method,
            target.scheme,
            target.host,
            target.path,
            access_token.expose_secret()
        );
        self.0.lock().unwrap().push(made.clone());
        Ok((
            HeaderName::from_static("dpop"),
            HeaderValue::from_str(&made.replace(' ', "_")).unwrap(),
        ))
    }
}

struct Bound {
    proof: Arc<Recorder>,
    calls: AtomicU32,
}

#[async_trait]
impl IdentityProvider for Bound {
    async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Token::new(format!("bound-{n}"))
            .with_token_type(TokenType::DPoP)
            .with_proof(self.proof.clone()))
    }
    fn cache_key(&self) -> CacheKey {
        CacheKey::from_static("bound")
    }
}

fn setup() -> (Authorizer, Arc<Recorder>) {
    let proof = Arc::new(Recorder::default());
    let authorizer = Authorizer::new(Bound {
        proof: proof.clone(),
        calls: AtomicU32::new(0),
    });
    (authorizer, proof)
}

#[tokio::test]
async fn every_request_gets_its_own_proof_beside_the_dpop_header() {
    let (authorizer, proof) = setup();
    for (method, uri) in [
        ("GET", "https://api.example/v1/things?page=2"),
        ("POST", "https://api.example/v1/orders"),
    ] {
        let mut request = http::Request::builder().method(method).uri(uri).body(()).unwrap();
        authorizer.authorize_request(&mut request).await.unwrap();
        assert_eq!(request.headers()["authorization"], "DPoP bound-1");
        let dpop = request.headers()["dpop"].to_str().unwrap();
        assert!(
            dpop.starts_with(&format!("{method}_https://api.example/v1/")),
            "{dpop}"
        );
        assert!(dpop.contains("ath=bound-1"), "{dpop}");
    }
    assert_eq!(
        proof.0.lock().unwrap().len(),
        2,
        "one proof per request, none cached"
    );
}

#[tokio::test]
async fn a_bound_token_never_leaves_without_its_proof() {
    let (authorizer, proof) = setup();
    let mut headers = HeaderMap::new();
    let e = authorizer.authorize(&mut headers).await.unwrap_err();
    assert!(matches!(e, AuthError::ProofRequired), "{e:?}");
    assert!(e.to_string().contains("authorize_request"), "{e}");
    assert!(headers.is_empty(), "nothing was put on the request");
    assert!(matches!(
        authorizer.authorization_header().await,
        Err(AuthError::ProofRequired)
    ));
    assert_eq!(authorizer.cached_authorization_header(), None);
    assert!(proof.0.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_retry_of_a_rejected_request_gets_a_fresh_token_and_a_fresh_proof() {
    let (authorizer, proof) = setup();
    let uri: http::Uri = "https://api.example/v1/orders".parse().unwrap();
    let target = Target::from_uri(&Method::POST, &uri);
    let mut headers = HeaderMap::new();
    let sent = authorizer.authorize_target(&target, &mut headers).await.unwrap();
    let mut rejection = HeaderMap::new();
    rejection.insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"DPoP error="invalid_token""#),
    );
    let answer = Answer::new(StatusCode::UNAUTHORIZED, &rejection).replayable(true);
    let RetryDecision::RetryWith(retry) = authorizer.decide(&answer, &sent, RejectionRules::default()).await
    else {
        panic!("a rejected bound token is retried once")
    };
    let mut again = HeaderMap::new();
    retry.apply(&target, &mut again).unwrap();
    assert_eq!(again["authorization"], "DPoP bound-2");
    assert!(again["dpop"].to_str().unwrap().contains("ath=bound-2"));
    assert_eq!(proof.0.lock().unwrap().len(), 2);
}
