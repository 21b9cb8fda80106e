//! Step-up challenges (issue 28): `decide` reads them, `step_up` answers each once for all
//! callers that met it, and what cannot be answered is a typed error carrying the challenge,
//! with the current token still served.

use authwire::{
    Answer, AuthError, Authorizer, CacheKey, IdentityProvider, ManualClock, ProviderError, RejectionRules,
    RetryDecision, StaticTokenProvider, StepUp, StepUpReason, Target, Token, async_trait,
};
use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Issues `plain-N` on fetch and `stepped-N` on step-up (after a pause, so that callers pile
/// up), recording each step-up's challenge and the token it was given.
#[derive(Clone, Default)]
struct Stepping {
    fetches: Arc<Mutex<u32>>,
    steps: Arc<Mutex<Vec<Step>>>,
}

/// A step-up the provider was asked for, and the refresh token it saw.
type Step = (StepUp, Option<String>);

#[async_trait]
impl IdentityProvider for Stepping {
    async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> {
        let mut n = self.fetches.lock().unwrap();
        *n += 1;
        Ok(Token::new(format!("plain-{n}")).with_refresh_token("refresh-1"))
    }
    fn cache_key(&self) -> CacheKey {
        CacheKey::from_static("stepping")
    }
    async fn step_up(&self, current: Option<&Token>, step: &StepUp) -> Result<Token, ProviderError> {
        use authwire::secrecy::ExposeSecret;
        tokio::task::yield_now().await;
        let seen = current
            .and_then(|t| t.refresh_token())
            .map(|r| r.expose_secret().to_owned());
        let mut steps = self.steps.lock().unwrap();
        steps.push((step.clone(), seen));
        if step.reason == StepUpReason::Scope {
            return Err(ProviderError::permanent("scopes are configuration"));
        }
        Ok(Token::new(format!("stepped-{}", steps.len())))
    }
}

fn challenge(status: StatusCode, value: &'static str) -> (StatusCode, HeaderMap) {
    let mut h = HeaderMap::new();
    h.insert(WWW_AUTHENTICATE, HeaderValue::from_static(value));
    (status, h)
}

const ACR: &str = r#"Bearer error="insufficient_user_authentication", error_description="A different authentication level is required", acr_values="urn:mace:incommon:iap:silver", max_age="5""#;

async fn decide(
    auth: &Authorizer,
    sent: &HeaderValue,
    (status, headers): &(StatusCode, HeaderMap),
) -> RetryDecision {
    let answer = Answer::new(*status, headers).replayable(true);
    auth.decide(&answer, sent, RejectionRules::default()).await
}

#[tokio::test]
async fn a_step_up_challenge_is_answered_once_for_every_caller_that_met_it() {
    let provider = Stepping::default();
    let auth = Authorizer::builder(provider.clone())
        .clock(ManualClock::new(crate::support::t0()))
        .build();
    let sent = auth.authorization_header().await.unwrap();
    assert_eq!(sent, "Bearer plain-1");
    let answer = challenge(StatusCode::UNAUTHORIZED, ACR);

    // Eight requests met the challenge at once.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (auth, sent, answer) = (auth.clone(), sent.clone(), answer.clone());
        tasks.push(tokio::spawn(async move {
            let RetryDecision::StepUp(step) = decide(&auth, &sent, &answer).await else {
                panic!("not a step-up");
            };
            assert_eq!(step.reason, StepUpReason::Authentication);
            auth.step_up(&step, &sent).await.unwrap().header().clone()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), "Bearer stepped-1");
    }
    let steps = provider.steps.lock().unwrap().clone();
    assert_eq!(steps.len(), 1, "one step-up for all eight");
    assert_eq!(
        steps[0].0.acr_values.as_deref(),
        Some("urn:mace:incommon:iap:silver")
    );
    assert_eq!(steps[0].0.max_age, Some(5));
    assert_eq!(
        steps[0].1.as_deref(),
        Some("refresh-1"),
        "the provider saw the current token"
    );
    assert_eq!(auth.metrics().step_ups, 1);
    // The stepped-up token serves from now on, and kept the refresh token it did not replace.
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer stepped-1");
    use authwire::secrecy::ExposeSecret;
    assert_eq!(
        auth.token()
            .await
            .unwrap()
            .refresh_token()
            .map(|r| r.expose_secret().to_owned())
            .as_deref(),
        Some("refresh-1")
    );
    assert_eq!(
        *provider.fetches.lock().unwrap(),
        1,
        "no plain refresh was made for the challenge"
    );

    // The stepped-up token meets the same challenge again: the server is not satisfied by what
    // the provider gives, so the provider is not asked again (no token request per request).
    let stepped = auth.authorization_header().await.unwrap();
    let RetryDecision::StepUp(same) = decide(&auth, &stepped, &answer).await else {
        panic!("not a step-up");
    };
    let err = auth.step_up(&same, &stepped).await.unwrap_err();
    assert!(matches!(err, AuthError::StepUpRequired { .. }), "{err:?}");
    assert_eq!(provider.steps.lock().unwrap().len(), 1);

    // A second, different challenge later is answered again (not the first one's token).
    let again = auth.authorization_header().await.unwrap();
    let RetryDecision::StepUp(step) = decide(
        &auth,
        &again,
        &challenge(
            StatusCode::UNAUTHORIZED,
            r#"Bearer error="insufficient_user_authentication", acr_values="gold""#,
        ),
    )
    .await
    else {
        panic!("not a step-up");
    };
    assert_eq!(
        auth.step_up(&step, &again).await.unwrap().header(),
        "Bearer stepped-2"
    );
}

#[tokio::test]
async fn a_challenge_the_provider_cannot_answer_is_an_error_carrying_it_and_the_token_still_serves() {
    let provider = Stepping::default();
    let auth = Authorizer::new(provider.clone());
    let sent = auth.authorization_header().await.unwrap();
    let answer = challenge(
        StatusCode::FORBIDDEN,
        r#"Bearer error="insufficient_scope", scope="admin write""#,
    );
    let RetryDecision::StepUp(step) = decide(&auth, &sent, &answer).await else {
        panic!("not a step-up");
    };
    assert_eq!(step.scope.as_deref(), Some("admin write"));
    let err = auth.step_up(&step, &sent).await.unwrap_err();
    let AuthError::StepUpRequired {
        challenge: asked,
        cause,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(asked.reason, StepUpReason::Scope);
    assert!(cause.is_some());
    assert!(!err.is_transient());
    assert!(
        err.to_string()
            .contains(r#"insufficient_scope scope="admin write""#),
        "{err}"
    );
    assert_eq!(
        auth.authorization_header().await.unwrap(),
        sent,
        "the current token still serves"
    );
    assert_eq!(
        auth.metrics().invalidations,
        0,
        "a step-up is not a rejected token"
    );

    // The default provider method cannot answer anything.
    let fixed = Authorizer::new(StaticTokenProvider::new("fixed"));
    let sent = fixed.authorization_header().await.unwrap();
    let RetryDecision::StepUp(step) = decide(&fixed, &sent, &challenge(StatusCode::UNAUTHORIZED, ACR)).await
    else {
        panic!("not a step-up");
    };
    let err = fixed.step_up(&step, &sent).await.unwrap_err();
    assert_eq!(err.step_up_challenge(), Some(&step));
    assert!(
        authwire::error_chain(err.provider_error().unwrap()).contains("cannot answer"),
        "{err}"
    );
}

#[tokio::test]
async fn an_entra_claims_challenge_carries_its_decoded_claims() {
    // As Entra sends it (continuous access evaluation): base64 of the claims request.
    let claims = r#"{"access_token":{"nbf":{"essential":true,"value":"1726563200"}}}"#;
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(claims);
    let header = format!(
        r#"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000", error="insufficient_claims", claims="{encoded}""#
    );
    let mut h = HeaderMap::new();
    h.insert(WWW_AUTHENTICATE, HeaderValue::from_str(&header).unwrap());
    let step = Answer::new(StatusCode::UNAUTHORIZED, &h).step_up().unwrap();
    assert_eq!(step.reason, StepUpReason::Claims);
    assert_eq!(step.claims.as_deref(), Some(claims));

    let provider = Stepping::default();
    let auth = Authorizer::new(provider.clone());
    let sent = auth.authorization_header().await.unwrap();
    let RetryDecision::StepUp(seen) = decide(&auth, &sent, &(StatusCode::UNAUTHORIZED, h)).await else {
        panic!("not a step-up");
    };
    let retry = auth.step_up(&seen, &sent).await.unwrap();
    let uri: http::Uri = "https://graph.example/v1".parse().unwrap();
    let mut headers = HeaderMap::new();
    retry
        .apply(&Target::from_uri(&Method::GET, &uri), &mut headers)
        .unwrap();
    assert_eq!(headers["authorization"], "Bearer stepped-1");
    assert_eq!(
        provider.steps.lock().unwrap()[0].0.claims.as_deref(),
        Some(claims)
    );
}

#[tokio::test]
async fn what_is_not_a_step_up_challenge_is_not_read_as_one() {
    let auth = Authorizer::new(Stepping::default());
    let sent = auth.authorization_header().await.unwrap();
    for (status, value) in [
        // a claims challenge whose claims are not a JSON object
        (
            StatusCode::UNAUTHORIZED,
            r#"Bearer error="insufficient_claims", claims="bm90IGpzb24""#,
        ),
        // a claims challenge without claims
        (StatusCode::UNAUTHORIZED, r#"Bearer error="insufficient_claims""#),
        // another scheme
        (StatusCode::UNAUTHORIZED, r#"Basic error="insufficient_scope""#),
        // not a 401 or 403
        (
            StatusCode::BAD_REQUEST,
            r#"Bearer error="insufficient_scope", scope="x""#,
        ),
        // a server that echoes the token back in the challenge: never carried into an error
        (
            StatusCode::FORBIDDEN,
            r#"Bearer error="insufficient_scope", scope="plain-1""#,
        ),
    ] {
        let decision = decide(&auth, &sent, &challenge(status, value)).await;
        assert!(matches!(decision, RetryDecision::Done), "{value}: {decision:?}");
    }
    // invalid_token is still a rejection, answered by a refresh, not a step-up
    let decision = decide(
        &auth,
        &sent,
        &challenge(StatusCode::UNAUTHORIZED, r#"Bearer error="invalid_token""#),
    )
    .await;
    assert!(matches!(decision, RetryDecision::RetryWith(_)), "{decision:?}");
}

#[tokio::test]
async fn a_step_up_on_a_manual_clock_keeps_the_token_schedule() {
    // The stepped-up token's life is planned like a refreshed one's (expiry margin, refresh
    // window), on the authorizer's clock.
    #[derive(Clone)]
    struct Expiring(ManualClock);
    #[async_trait]
    impl IdentityProvider for Expiring {
        async fn fetch_token(&self, _: Option<&Token>) -> Result<Token, ProviderError> {
            Ok(Token::new("plain").with_lifetime(Duration::from_secs(3600), &self.0))
        }
        fn cache_key(&self) -> CacheKey {
            CacheKey::from_static("expiring")
        }
        async fn step_up(&self, _: Option<&Token>, _: &StepUp) -> Result<Token, ProviderError> {
            Ok(Token::new("stepped").with_lifetime(Duration::from_secs(600), &self.0))
        }
    }
    let clock = ManualClock::new(crate::support::t0());
    let auth = Authorizer::builder(Expiring(clock.clone()))
        .clock(clock.clone())
        .build();
    let sent = auth.authorization_header().await.unwrap();
    let step = StepUp::new(StepUpReason::Authentication).with_acr_values("gold");
    auth.step_up(&step, &sent).await.unwrap();
    assert_eq!(auth.authorization_header().await.unwrap(), "Bearer stepped");
    clock.advance(Duration::from_secs(601));
    assert_eq!(
        auth.authorization_header().await.unwrap(),
        "Bearer plain",
        "expired: refreshed as usual"
    );
}
